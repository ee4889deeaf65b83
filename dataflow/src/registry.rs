//! The operator registry: stable names → factories that build operators from config bytes.
//!
//! This is how user code reaches TaskExecutors (DESIGN §5): every process running the
//! same binary builds the same registry at start-up — [`OperatorRegistry::new`] holds
//! the built-ins, and an application adds its own with the `register_*` methods before
//! it submits or executes anything. A [`JobGraph`](crate::job_graph::JobGraph) then names
//! factories, and [`check_operator`](OperatorRegistry::check_operator) rejects unknown
//! names, kind mismatches and undecodable configs at submission time, before any task
//! is deployed.
//!
//! Each entry records the [`OperatorKind`] it was registered as; using a map factory in
//! `filter` position is a [`DataflowError::WrongOperatorKind`]. Typed helpers take a
//! `make(config) -> function` closure: the config type `C` is decoded with rmp-serde,
//! which is also the validation run at submission.
//!
//! ```
//! use rill_dataflow::{OperatorRegistry, Value, DataflowError};
//! let mut registry = OperatorRegistry::new();
//! registry
//!     .register_map("myapp.add", |n: i64| {
//!         Ok(move |v: Value| match v {
//!             Value::I64(x) => Ok(Value::I64(x + n)),
//!             other => Err(DataflowError::TypeMismatch {
//!                 operator: "myapp.add".into(),
//!                 expected: "i64",
//!                 actual: other.type_name(),
//!             }),
//!         })
//!     })
//!     .unwrap();
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::broadcast::{
    BroadcastProcessFunction, BroadcastProcessOperator, BroadcastStateDescriptor,
    KeyedBroadcastProcessFunction, KeyedBroadcastProcessOperator,
};
use crate::co_process::{
    CoProcessFunction, CoProcessOperator, KeyedCoProcessFunction, KeyedCoProcessOperator,
};
use crate::error::{DataflowError, Result};
use crate::functions::{FilterOperator, FlatMapOperator, MapOperator};
use crate::interval_join::{IntervalBounds, IntervalJoinOperator, ProcessJoinFunction};
use crate::key::KeySelector;
use crate::keyed::{KeyedProcessFunction, KeyedProcessOperator, ReduceOperator};
use crate::operator::{Collector, Operator, OperatorContext, SourceOperator};
use crate::spec::WithParams;
use crate::spec::{decode_config, FactoryRef, OperatorSpec};
use crate::two_input::{TwoInputAdapter, TwoInputOperator};
use crate::value::Value;
use crate::window::function::{Fold, WindowFunction};
use crate::window::operator::WindowOperator;
use crate::window::{
    AggregateFunction, ProcessWindowFunction, ReduceFunction, WindowFunctionRef,
    WindowOperatorConfig, WINDOW_OPERATOR,
};
use crate::window_join::{CoGroup, JoinFunction, TaggedKey, TaggedKeyConfig, TAGGED_KEY};

pub use crate::spec::OperatorKind;

type ValidateFn = dyn Fn(&[u8]) -> Result<()> + Send + Sync;
type SourceFactoryFn =
    dyn Fn(&[u8], &OperatorContext) -> Result<Box<dyn SourceOperator>> + Send + Sync;
type OperatorFactoryFn = dyn Fn(&[u8], &OperatorContext) -> Result<Box<dyn Operator>> + Send + Sync;
type KeyFactoryFn = dyn Fn(&[u8]) -> Result<Arc<dyn KeySelector>> + Send + Sync;
type WindowReduceFn = dyn Fn(&[u8]) -> Result<ReduceFunction> + Send + Sync;
type WindowAggregateFn = dyn Fn(&[u8]) -> Result<Box<dyn AggregateFunction>> + Send + Sync;
type WindowProcessFn = dyn Fn(&[u8]) -> Result<Box<dyn ProcessWindowFunction>> + Send + Sync;

/// A registered window function factory, by kind.
enum WindowFunctionEntry {
    Reduce(Box<WindowReduceFn>),
    Aggregate(Box<WindowAggregateFn>),
    Process(Box<WindowProcessFn>),
}

impl WindowFunctionEntry {
    fn kind(&self) -> &'static str {
        match self {
            WindowFunctionEntry::Reduce(_) => "window reduce",
            WindowFunctionEntry::Aggregate(_) => "window aggregate",
            WindowFunctionEntry::Process(_) => "window process",
        }
    }
}

enum Build {
    Source(Box<SourceFactoryFn>),
    Operator(Box<OperatorFactoryFn>),
}

struct Entry {
    kind: OperatorKind,
    validate: Box<ValidateFn>,
    build: Build,
}

/// Names → operator and key-selector factories. Cheap to share behind an `Arc`.
pub struct OperatorRegistry {
    operators: BTreeMap<String, Entry>,
    keys: BTreeMap<String, Box<KeyFactoryFn>>,
    window_functions: BTreeMap<String, WindowFunctionEntry>,
}

impl Default for OperatorRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OperatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRegistry")
            .field("operators", &self.operators.keys().collect::<Vec<_>>())
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field(
                "window_functions",
                &self.window_functions.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn validator<C: DeserializeOwned>(name: &str) -> Box<ValidateFn> {
    let name = name.to_owned();
    Box::new(move |bytes| decode_config::<C>(&name, bytes).map(drop))
}

impl OperatorRegistry {
    /// A registry holding every built-in source, sink, transform and key selector.
    pub fn new() -> Self {
        let mut r = Self::empty();
        crate::builtins::register_builtins(&mut r);
        r
    }

    /// A registry with nothing registered.
    pub fn empty() -> Self {
        Self {
            operators: BTreeMap::new(),
            keys: BTreeMap::new(),
            window_functions: BTreeMap::new(),
        }
    }

    /// Names of all registered operator factories, sorted.
    pub fn operator_names(&self) -> impl Iterator<Item = &str> {
        self.operators.keys().map(String::as_str)
    }

    fn insert(&mut self, name: &str, entry: Entry) -> Result<()> {
        if self.operators.contains_key(name) {
            return Err(DataflowError::DuplicateRegistration { name: name.into() });
        }
        self.operators.insert(name.to_owned(), entry);
        Ok(())
    }

    /// Registers a source factory: `make(config, ctx)` builds one subtask's source.
    pub fn register_source<C, S, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        S: SourceOperator + 'static,
        M: Fn(C, &OperatorContext) -> Result<S> + Send + Sync + 'static,
    {
        let n = name.to_owned();
        self.insert(
            name,
            Entry {
                kind: OperatorKind::Source,
                validate: validator::<C>(name),
                build: Build::Source(Box::new(move |bytes, ctx| {
                    Ok(Box::new(make(decode_config(&n, bytes)?, ctx)?))
                })),
            },
        )
    }

    /// Registers a factory of hand-written [`Operator`]s of any non-source `kind`
    /// (sinks, custom transforms).
    pub fn register_operator<C, O, M>(
        &mut self,
        name: &str,
        kind: OperatorKind,
        make: M,
    ) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        O: Operator + 'static,
        M: Fn(C, &OperatorContext) -> Result<O> + Send + Sync + 'static,
    {
        if kind == OperatorKind::Source {
            return Err(DataflowError::InvalidConfig {
                factory: name.into(),
                reason: "sources are registered with register_source".into(),
            });
        }
        let n = name.to_owned();
        self.insert(
            name,
            Entry {
                kind,
                validate: validator::<C>(name),
                build: Build::Operator(Box::new(move |bytes, ctx| {
                    Ok(Box::new(make(decode_config(&n, bytes)?, ctx)?))
                })),
            },
        )
    }

    /// Registers a map function: `make(config)` returns the per-subtask function.
    pub fn register_map<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: FnMut(Value) -> Result<Value> + Send + 'static,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_operator(
            name,
            OperatorKind::Map,
            move |c: C, _ctx: &OperatorContext| Ok(MapOperator::new(make(c)?)),
        )
    }

    /// Registers a filter predicate.
    pub fn register_filter<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: FnMut(&Value) -> Result<bool> + Send + 'static,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_operator(
            name,
            OperatorKind::Filter,
            move |c: C, _ctx: &OperatorContext| Ok(FilterOperator::new(make(c)?)),
        )
    }

    /// Registers a flat-map function.
    pub fn register_flat_map<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: FnMut(Value, &mut Collector<'_>) -> Result<()> + Send + 'static,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_operator(
            name,
            OperatorKind::FlatMap,
            move |c: C, _ctx: &OperatorContext| Ok(FlatMapOperator::new(make(c)?)),
        )
    }

    /// Registers a keyed reduce function `f(accumulator, value)`.
    pub fn register_reduce<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: FnMut(&mut Value, Value) -> Result<()> + Send + 'static,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_operator(
            name,
            OperatorKind::Reduce,
            move |c: C, ctx: &OperatorContext| ReduceOperator::new(make(c)?, ctx),
        )
    }

    /// Registers a keyed process function.
    pub fn register_process<C, P, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        P: KeyedProcessFunction,
        M: Fn(C) -> Result<P> + Send + Sync + 'static,
    {
        self.register_operator(
            name,
            OperatorKind::Process,
            move |c: C, ctx: &OperatorContext| KeyedProcessOperator::new(make(c)?, ctx),
        )
    }

    /// Registers a factory of hand-written [`TwoInputOperator`]s of a two-input `kind`
    /// ([`OperatorKind::CoProcess`] or [`OperatorKind::KeyedCoProcess`]).
    pub fn register_two_input_operator<C, O, M>(
        &mut self,
        name: &str,
        kind: OperatorKind,
        make: M,
    ) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        O: TwoInputOperator + 'static,
        M: Fn(C, &OperatorContext) -> Result<O> + Send + Sync + 'static,
    {
        if !kind.is_two_input() {
            return Err(DataflowError::InvalidConfig {
                factory: name.into(),
                reason: format!("{kind:?} is not a two-input kind"),
            });
        }
        self.register_operator(name, kind, move |c: C, ctx: &OperatorContext| {
            Ok(TwoInputAdapter(make(c, ctx)?))
        })
    }

    /// Registers a co-process function over two connected streams.
    pub fn register_co_process<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: CoProcessFunction,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_two_input_operator(
            name,
            OperatorKind::CoProcess,
            move |c: C, _ctx: &OperatorContext| Ok(CoProcessOperator::new(make(c)?)),
        )
    }

    /// Registers a keyed co-process function over two connected keyed streams.
    pub fn register_keyed_co_process<C, P, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        P: KeyedCoProcessFunction,
        M: Fn(C) -> Result<P> + Send + Sync + 'static,
    {
        self.register_two_input_operator(
            name,
            OperatorKind::KeyedCoProcess,
            move |c: C, ctx: &OperatorContext| KeyedCoProcessOperator::new(make(c)?, ctx),
        )
    }

    /// Registers a join function for
    /// [`interval_join`](crate::environment::KeyedStream::interval_join): its factory's
    /// configuration is a [`WithParams`] of the bounds and `C`.
    pub fn register_process_join<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: ProcessJoinFunction,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_two_input_operator(
            name,
            OperatorKind::KeyedCoProcess,
            move |c: WithParams<IntervalBounds, C>, ctx: &OperatorContext| {
                IntervalJoinOperator::new(make(c.function)?, c.params, ctx)
            },
        )
    }

    /// Registers a [`BroadcastProcessFunction`] for a non-keyed stream connected with a
    /// broadcast stream; its factory's configuration is a [`WithParams`] of the
    /// broadcast state descriptor and `C`.
    pub fn register_broadcast_process<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: BroadcastProcessFunction,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        self.register_two_input_operator(
            name,
            OperatorKind::CoProcess,
            move |c: WithParams<BroadcastStateDescriptor, C>, ctx: &OperatorContext| {
                Ok(BroadcastProcessOperator::new(
                    make(c.function)?,
                    &c.params,
                    ctx,
                ))
            },
        )
    }

    /// Registers a [`KeyedBroadcastProcessFunction`] for a keyed stream connected with a
    /// broadcast stream (configuration as for
    /// [`register_broadcast_process`](Self::register_broadcast_process)).
    pub fn register_keyed_broadcast_process<C, P, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        P: KeyedBroadcastProcessFunction,
        M: Fn(C) -> Result<P> + Send + Sync + 'static,
    {
        self.register_two_input_operator(
            name,
            OperatorKind::KeyedBroadcast,
            move |c: WithParams<BroadcastStateDescriptor, C>, ctx: &OperatorContext| {
                KeyedBroadcastProcessOperator::new(make(c.function)?, &c.params, ctx)
            },
        )
    }

    fn insert_window_function(&mut self, name: &str, entry: WindowFunctionEntry) -> Result<()> {
        if self.window_functions.contains_key(name) {
            return Err(DataflowError::DuplicateRegistration { name: name.into() });
        }
        self.window_functions.insert(name.to_owned(), entry);
        Ok(())
    }

    /// Registers a window reduce function `f(accumulator, value)` for
    /// [`WindowedStream::reduce`](crate::window::WindowedStream::reduce).
    pub fn register_window_reduce<C, F, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        F: FnMut(&mut Value, Value) -> Result<()> + Send + 'static,
        M: Fn(C) -> Result<F> + Send + Sync + 'static,
    {
        let n = name.to_owned();
        self.insert_window_function(
            name,
            WindowFunctionEntry::Reduce(Box::new(move |bytes| {
                Ok(Box::new(make(decode_config(&n, bytes)?)?) as ReduceFunction)
            })),
        )
    }

    /// Registers a window aggregate function for
    /// [`WindowedStream::aggregate`](crate::window::WindowedStream::aggregate).
    pub fn register_window_aggregate<C, A, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        A: AggregateFunction,
        M: Fn(C) -> Result<A> + Send + Sync + 'static,
    {
        let n = name.to_owned();
        self.insert_window_function(
            name,
            WindowFunctionEntry::Aggregate(Box::new(move |bytes| {
                Ok(Box::new(make(decode_config(&n, bytes)?)?) as Box<dyn AggregateFunction>)
            })),
        )
    }

    /// Registers a process window function for
    /// [`WindowedStream::process`](crate::window::WindowedStream::process) and the
    /// combinations `reduce_with` / `aggregate_with`.
    pub fn register_window_process<C, P, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        P: ProcessWindowFunction,
        M: Fn(C) -> Result<P> + Send + Sync + 'static,
    {
        let n = name.to_owned();
        self.insert_window_function(
            name,
            WindowFunctionEntry::Process(Box::new(move |bytes| {
                Ok(Box::new(make(decode_config(&n, bytes)?)?) as Box<dyn ProcessWindowFunction>)
            })),
        )
    }

    fn window_entry(&self, f: &FactoryRef, expected: &'static str) -> Result<&WindowFunctionEntry> {
        let entry =
            self.window_functions
                .get(&f.name)
                .ok_or_else(|| DataflowError::UnknownOperator {
                    name: f.name.clone(),
                })?;
        if entry.kind() != expected {
            return Err(DataflowError::InvalidConfig {
                factory: f.name.clone(),
                reason: format!("registered as a {}, used as a {expected}", entry.kind()),
            });
        }
        Ok(entry)
    }

    fn window_reduce(&self, f: &FactoryRef) -> Result<Fold> {
        match self.window_entry(f, "window reduce")? {
            WindowFunctionEntry::Reduce(make) => Ok(Fold::Reduce(make(&f.config)?)),
            _ => unreachable!("window_entry checked the kind"),
        }
    }

    fn window_aggregate(&self, f: &FactoryRef) -> Result<Fold> {
        match self.window_entry(f, "window aggregate")? {
            WindowFunctionEntry::Aggregate(make) => Ok(Fold::Aggregate(make(&f.config)?)),
            _ => unreachable!("window_entry checked the kind"),
        }
    }

    fn window_process(&self, f: &FactoryRef) -> Result<Box<dyn ProcessWindowFunction>> {
        match self.window_entry(f, "window process")? {
            WindowFunctionEntry::Process(make) => make(&f.config),
            _ => unreachable!("window_entry checked the kind"),
        }
    }

    /// Builds the window operator `spec` describes (its functions come from the window
    /// function table, so this needs the registry, unlike other factories).
    fn create_window(
        &self,
        spec: &OperatorSpec,
        ctx: &OperatorContext,
    ) -> Result<Box<dyn Operator>> {
        let config: WindowOperatorConfig = spec.factory.decode()?;
        let (fold, process) = match &config.function {
            WindowFunctionRef::Reduce(r) => (Some(self.window_reduce(r)?), None),
            WindowFunctionRef::Aggregate(a) => (Some(self.window_aggregate(a)?), None),
            WindowFunctionRef::Process(p) => (None, Some(self.window_process(p)?)),
            WindowFunctionRef::ReduceProcess { reduce, process } => (
                Some(self.window_reduce(reduce)?),
                Some(self.window_process(process)?),
            ),
            WindowFunctionRef::AggregateProcess { aggregate, process } => (
                Some(self.window_aggregate(aggregate)?),
                Some(self.window_process(process)?),
            ),
        };
        let function = WindowFunction::new(fold, process, config.window.evictor.as_ref());
        Ok(Box::new(WindowOperator::new(config.window, function, ctx)?))
    }

    /// Registers a key selector factory.
    pub fn register_key_selector<C, K, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        K: KeySelector + 'static,
        M: Fn(C) -> Result<K> + Send + Sync + 'static,
    {
        if self.keys.contains_key(name) {
            return Err(DataflowError::DuplicateRegistration { name: name.into() });
        }
        let n = name.to_owned();
        self.keys.insert(
            name.to_owned(),
            Box::new(move |bytes| Ok(Arc::new(make(decode_config(&n, bytes)?)?))),
        );
        Ok(())
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.operators
            .get(name)
            .ok_or_else(|| DataflowError::UnknownOperator { name: name.into() })
    }

    /// Registers a join function for window joins
    /// ([`window_join`](crate::window_join)): a window process function co-grouping the
    /// two sides of each window.
    pub fn register_window_join<C, J, M>(&mut self, name: &str, make: M) -> Result<()>
    where
        C: DeserializeOwned + 'static,
        J: JoinFunction,
        M: Fn(C) -> Result<J> + Send + Sync + 'static,
    {
        self.register_window_process(name, move |c: C| Ok(CoGroup(make(c)?)))
    }

    /// Builds the key selector `key` names.
    pub fn key_selector(&self, key: &FactoryRef) -> Result<Arc<dyn KeySelector>> {
        if key.name == TAGGED_KEY {
            // A window join's key: built from the two key selectors it names.
            let c: TaggedKeyConfig = key.decode()?;
            return Ok(Arc::new(TaggedKey {
                first: self.key_selector(&c.first)?,
                second: self.key_selector(&c.second)?,
            }));
        }
        let make = self
            .keys
            .get(&key.name)
            .ok_or_else(|| DataflowError::UnknownKeySelector {
                name: key.name.clone(),
            })?;
        make(&key.config)
    }

    /// Checks, without building anything, that `spec` can be instantiated here: its
    /// factory exists with the same kind, its config decodes, and keyed operators have a
    /// known key selector.
    pub fn check_operator(&self, spec: &OperatorSpec) -> Result<()> {
        if spec.kind == OperatorKind::Window || spec.factory.name == WINDOW_OPERATOR {
            return self.check_window(spec);
        }
        let entry = self.entry(&spec.factory.name)?;
        if entry.kind != spec.kind {
            return Err(DataflowError::WrongOperatorKind {
                operator: spec.name.clone(),
                factory: spec.factory.name.clone(),
                registered: entry.kind,
                used: spec.kind,
            });
        }
        (entry.validate)(&spec.factory.config)?;
        match (&spec.key2, spec.kind == OperatorKind::KeyedCoProcess) {
            (Some(key), true) => self.key_selector(key).map(drop)?,
            (None, true) => {
                return Err(DataflowError::InvalidGraph(format!(
                    "keyed two-input operator `{}` has no key selector for input 2",
                    spec.name
                )))
            }
            (Some(_), false) => {
                return Err(DataflowError::InvalidGraph(format!(
                    "operator `{}` has a second key selector but is not keyed two-input",
                    spec.name
                )))
            }
            (None, false) => {}
        }
        match (&spec.key, spec.kind.is_keyed()) {
            (Some(key), _) => self.key_selector(key).map(drop),
            (None, true) => Err(DataflowError::InvalidGraph(format!(
                "keyed operator `{}` has no key selector (it must follow key_by)",
                spec.name
            ))),
            (None, false) => Ok(()),
        }
    }

    fn check_window(&self, spec: &OperatorSpec) -> Result<()> {
        if spec.kind != OperatorKind::Window || spec.factory.name != WINDOW_OPERATOR {
            return Err(DataflowError::InvalidGraph(format!(
                "operator `{}`: window operators are `{WINDOW_OPERATOR}` of kind Window (got `{}` as {:?})",
                spec.name, spec.factory.name, spec.kind
            )));
        }
        let config: WindowOperatorConfig = spec.factory.decode()?;
        config.window.validate()?;
        // Building the functions decodes their configs.
        match &config.function {
            WindowFunctionRef::Reduce(r) => self.window_reduce(r).map(drop)?,
            WindowFunctionRef::Aggregate(a) => self.window_aggregate(a).map(drop)?,
            WindowFunctionRef::Process(p) => self.window_process(p).map(drop)?,
            WindowFunctionRef::ReduceProcess { reduce, process } => {
                self.window_reduce(reduce)?;
                self.window_process(process)?;
            }
            WindowFunctionRef::AggregateProcess { aggregate, process } => {
                self.window_aggregate(aggregate)?;
                self.window_process(process)?;
            }
        }
        match &spec.key {
            Some(key) => self.key_selector(key).map(drop),
            None => Err(DataflowError::InvalidGraph(format!(
                "window operator `{}` has no key selector (it must follow key_by)",
                spec.name
            ))),
        }
    }

    /// Builds a source for one subtask.
    pub fn create_source(
        &self,
        spec: &OperatorSpec,
        ctx: &OperatorContext,
    ) -> Result<Box<dyn SourceOperator>> {
        match &self.entry(&spec.factory.name)?.build {
            Build::Source(make) => make(&spec.factory.config, ctx),
            Build::Operator(_) => Err(self.kind_error(spec, OperatorKind::Source)),
        }
    }

    /// Builds a non-source operator for one subtask.
    pub fn create_operator(
        &self,
        spec: &OperatorSpec,
        ctx: &OperatorContext,
    ) -> Result<Box<dyn Operator>> {
        if spec.kind == OperatorKind::Window && spec.factory.name == WINDOW_OPERATOR {
            return self.create_window(spec, ctx);
        }
        let entry = self.entry(&spec.factory.name)?;
        match &entry.build {
            Build::Operator(make) if entry.kind == spec.kind => make(&spec.factory.config, ctx),
            _ => Err(self.kind_error(spec, spec.kind)),
        }
    }

    fn kind_error(&self, spec: &OperatorSpec, used: OperatorKind) -> DataflowError {
        match self.entry(&spec.factory.name) {
            Ok(e) => DataflowError::WrongOperatorKind {
                operator: spec.name.clone(),
                factory: spec.factory.name.clone(),
                registered: e.kind,
                used,
            },
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FactoryRef;

    fn spec(kind: OperatorKind, factory: FactoryRef) -> OperatorSpec {
        OperatorSpec {
            name: "op".into(),
            uid: None,
            kind,
            factory,
            key: None,
            key2: None,
        }
    }

    #[test]
    fn unknown_wrong_kind_and_bad_config_are_rejected() {
        let mut r = OperatorRegistry::new();
        r.register_map("t.add", |n: i64| {
            Ok(move |v: Value| Ok(Value::I64(v.as_i64().unwrap_or(0) + n)))
        })
        .unwrap();
        let ok = spec(OperatorKind::Map, FactoryRef::new("t.add", &3i64).unwrap());
        r.check_operator(&ok).unwrap();
        assert!(matches!(
            r.check_operator(&spec(OperatorKind::Map, FactoryRef::unit("t.nope"))),
            Err(DataflowError::UnknownOperator { name }) if name == "t.nope"
        ));
        assert!(matches!(
            r.check_operator(&spec(
                OperatorKind::Filter,
                FactoryRef::new("t.add", &3i64).unwrap()
            )),
            Err(DataflowError::WrongOperatorKind { .. })
        ));
        assert!(matches!(
            r.check_operator(&spec(
                OperatorKind::Map,
                FactoryRef::new("t.add", &"x").unwrap()
            )),
            Err(DataflowError::InvalidConfig { .. })
        ));
        assert!(matches!(
            r.register_map("t.add", |_: ()| Ok(Ok::<Value, DataflowError>)),
            Err(DataflowError::DuplicateRegistration { .. })
        ));
    }

    #[test]
    fn keyed_operators_need_known_key_selectors() {
        let r = OperatorRegistry::new();
        let mut s = spec(OperatorKind::Process, crate::builtins::count_per_key(false));
        assert!(matches!(
            r.check_operator(&s),
            Err(DataflowError::InvalidGraph(_))
        ));
        s.key = Some(FactoryRef::unit("t.no_such_key"));
        assert!(matches!(
            r.check_operator(&s),
            Err(DataflowError::UnknownKeySelector { .. })
        ));
        s.key = Some(crate::key::by_value());
        r.check_operator(&s).unwrap();
    }
}
