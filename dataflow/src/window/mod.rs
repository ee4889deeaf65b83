//! Windows on keyed streams (Flink's `WindowedStream`, `window_all`, count windows).
//!
//! ```
//! use rill_dataflow::{builtins, key, StreamExecutionEnvironment};
//! use rill_dataflow::side_output::OutputTag;
//! use rill_dataflow::window::WindowAssigner;
//! let env = StreamExecutionEnvironment::new();
//! let late = OutputTag::new("late");
//! let counts = env
//!     .add_source(builtins::collection(vec![]))
//!     .key_by(key::by_field(0))
//!     .window(WindowAssigner::tumbling_event_time(5_000))
//!     .allowed_lateness(1_000)
//!     .side_output_late_data(&late)
//!     .aggregate(builtins::window_count());
//! counts.side_output(&late).sink(builtins::print());
//! counts.sink(builtins::print());
//! env.job_graph("windows").unwrap();
//! ```
//!
//! A window stage is one operator of kind [`OperatorKind::Window`]
//! (crate::registry::OperatorKind::Window) whose config is a [`WindowOperatorConfig`]:
//! the [`WindowSpec`] (assigner, trigger, evictor, allowed lateness, late-data tag) and
//! a [`WindowFunctionRef`] naming window functions registered with
//! [`OperatorRegistry::register_window_reduce`](crate::OperatorRegistry::register_window_reduce),
//! [`register_window_aggregate`](crate::OperatorRegistry::register_window_aggregate) and
//! [`register_window_process`](crate::OperatorRegistry::register_window_process).
//!
//! * [`assigner`]: windows, alignment (`start = t - (t - offset + size) % size`),
//!   sessions and merging;
//! * [`trigger`], [`evictor`]: when windows fire and what they keep;
//! * [`function`]: reduce, aggregate, process and their combinations;
//! * [`operator`]: Flink's window operator, all state in keyed state (see there for
//!   lateness, cleanup and merging).
//!
//! Count windows are global windows with a count trigger: `count_window(n)` purges every
//! `n` elements, `count_window_sliding(n, slide)` fires every `slide` elements over the
//! last `n` (a count evictor), as in Flink. `window_all` keys every record by `null` and
//! runs the window at parallelism 1.

pub mod assigner;
pub mod evictor;
pub mod function;
mod merging;
pub mod operator;
#[cfg(test)]
mod tests;
pub mod trigger;

use serde::{Deserialize, Serialize};

pub use assigner::{window_start_with_offset, Window, WindowAssigner};
pub use evictor::Evictor;
pub use function::{AggregateFunction, ProcessWindowFunction, ReduceFunction, WindowContext};
pub use trigger::Trigger;

use crate::environment::{DataStream, KeyedStream};
use crate::error::{DataflowError, Result};
use crate::side_output::OutputTag;
use crate::spec::FactoryRef;

/// Factory name of the window operator.
pub const WINDOW_OPERATOR: &str = "rill.window";

/// How records are windowed, apart from the function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Which windows a record belongs to.
    pub assigner: WindowAssigner,
    /// When windows fire; `None`: the assigner's default.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// What to remove from a firing window, if anything.
    #[serde(default)]
    pub evictor: Option<Evictor>,
    /// How long after a window's end (event time, ms) it still accepts late elements.
    #[serde(default)]
    pub allowed_lateness: i64,
    /// Where late elements go; `None`: dropped.
    #[serde(default)]
    pub late_data: Option<OutputTag>,
}

impl WindowSpec {
    /// Windows of `assigner` with its default trigger, no evictor, no lateness.
    pub fn new(assigner: WindowAssigner) -> Self {
        Self {
            assigner,
            trigger: None,
            evictor: None,
            allowed_lateness: 0,
            late_data: None,
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        self.assigner.validate()?;
        if let Some(t) = &self.trigger {
            t.validate()?;
        }
        if let Some(e) = &self.evictor {
            e.validate()?;
        }
        if self.allowed_lateness < 0 {
            return Err(DataflowError::InvalidConfig {
                factory: WINDOW_OPERATOR.into(),
                reason: format!(
                    "allowed lateness must be ≥ 0, got {}",
                    self.allowed_lateness
                ),
            });
        }
        Ok(())
    }
}

/// The window function(s) of a window operator, by registered name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowFunctionRef {
    /// An incremental reduce.
    Reduce(FactoryRef),
    /// An incremental aggregate.
    Aggregate(FactoryRef),
    /// A process function over all elements.
    Process(FactoryRef),
    /// Reduce, then process the result with the window's metadata.
    ReduceProcess {
        /// The reduce function.
        reduce: FactoryRef,
        /// The process function.
        process: FactoryRef,
    },
    /// Aggregate, then process the result with the window's metadata.
    AggregateProcess {
        /// The aggregate function.
        aggregate: FactoryRef,
        /// The process function.
        process: FactoryRef,
    },
}

/// The config of [`WINDOW_OPERATOR`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowOperatorConfig {
    /// Windows, trigger, evictor, lateness.
    pub window: WindowSpec,
    /// The function.
    pub function: WindowFunctionRef,
}

/// A keyed stream with windows being configured; a window function ends it.
#[derive(Clone)]
pub struct WindowedStream {
    keyed: KeyedStream,
    spec: WindowSpec,
    /// `window_all`: the window runs at parallelism 1.
    all: bool,
}

impl WindowedStream {
    pub(crate) fn new(keyed: KeyedStream, assigner: WindowAssigner, all: bool) -> Self {
        Self {
            keyed,
            spec: WindowSpec::new(assigner),
            all,
        }
    }

    /// Replaces the assigner's default trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.spec.trigger = Some(trigger);
        self
    }

    /// Removes elements from firing windows (windows then keep all their elements).
    pub fn evictor(mut self, evictor: Evictor) -> Self {
        self.spec.evictor = Some(evictor);
        self
    }

    /// Accepts elements up to `ms` after a window's end (event time); each fires the
    /// window again.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        self.spec.allowed_lateness = ms;
        self
    }

    /// Sends late elements to the side output `tag` instead of dropping them.
    pub fn side_output_late_data(mut self, tag: &OutputTag) -> Self {
        self.spec.late_data = Some(tag.clone());
        self
    }

    fn apply(self, function: WindowFunctionRef) -> DataStream {
        let config = WindowOperatorConfig {
            window: self.spec,
            function,
        };
        let name = match &config.function {
            WindowFunctionRef::Reduce(f)
            | WindowFunctionRef::Aggregate(f)
            | WindowFunctionRef::Process(f)
            | WindowFunctionRef::ReduceProcess { process: f, .. }
            | WindowFunctionRef::AggregateProcess { process: f, .. } => f.name.clone(),
        };
        let stream = self
            .keyed
            .window_operator(FactoryRef::builtin(WINDOW_OPERATOR, &config))
            .name(&format!("window({name})"));
        if self.all {
            stream.parallelism(1)
        } else {
            stream
        }
    }

    /// Folds each window incrementally with a registered window reduce function.
    pub fn reduce(self, reduce: FactoryRef) -> DataStream {
        self.apply(WindowFunctionRef::Reduce(reduce))
    }

    /// Aggregates each window incrementally with a registered aggregate function.
    pub fn aggregate(self, aggregate: FactoryRef) -> DataStream {
        self.apply(WindowFunctionRef::Aggregate(aggregate))
    }

    /// Runs a registered process window function on all elements of each window.
    pub fn process(self, process: FactoryRef) -> DataStream {
        self.apply(WindowFunctionRef::Process(process))
    }

    /// Reduces incrementally, then passes the result with the window to `process`.
    pub fn reduce_with(self, reduce: FactoryRef, process: FactoryRef) -> DataStream {
        self.apply(WindowFunctionRef::ReduceProcess { reduce, process })
    }

    /// Aggregates incrementally, then passes the result with the window to `process`.
    pub fn aggregate_with(self, aggregate: FactoryRef, process: FactoryRef) -> DataStream {
        self.apply(WindowFunctionRef::AggregateProcess { aggregate, process })
    }
}

impl KeyedStream {
    /// Windows of `assigner` per key.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream {
        WindowedStream::new(self.clone(), assigner, false)
    }

    /// Tumbling count windows: fires and purges every `size` elements of a key.
    pub fn count_window(&self, size: u64) -> WindowedStream {
        self.window(WindowAssigner::Global)
            .trigger(Trigger::Purging(Box::new(Trigger::Count { max: size })))
    }

    /// Sliding count windows: every `slide` elements of a key, the last `size` of them.
    pub fn count_window_sliding(&self, size: u64, slide: u64) -> WindowedStream {
        self.window(WindowAssigner::Global)
            .trigger(Trigger::Count { max: slide })
            .evictor(Evictor::count(size as usize))
    }
}

impl DataStream {
    /// Windows over the whole stream (parallelism 1).
    pub fn window_all(&self, assigner: WindowAssigner) -> WindowedStream {
        WindowedStream::new(self.key_by(crate::key::constant()), assigner, true)
    }

    /// Tumbling count windows over the whole stream (parallelism 1).
    pub fn count_window_all(&self, size: u64) -> WindowedStream {
        self.window_all(WindowAssigner::Global)
            .trigger(Trigger::Purging(Box::new(Trigger::Count { max: size })))
    }
}
