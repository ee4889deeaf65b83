//! The DataStream API: `StreamExecutionEnvironment`, `DataStream`, `KeyedStream`.
//!
//! A builder in Flink's style over [`FactoryRef`]s (registered names + config), so what it
//! builds is plain data:
//!
//! ```
//! use rill_dataflow::{builtins, key, StreamExecutionEnvironment};
//! let env = StreamExecutionEnvironment::new();
//! env.set_parallelism(4);
//! env.add_source(builtins::file_lines("/tmp/in.txt"))
//!     .flat_map(builtins::split_words())
//!     .key_by(key::by_value())
//!     .process(builtins::count_per_key(false))
//!     .name("count")
//!     .sink(builtins::print())
//!     .parallelism(1);
//! let job = env.job_graph("wordcount").unwrap();
//! assert_eq!(job.vertices.len(), 3);
//! ```
//!
//! Streams are cheap handles into the environment's graph (`Rc<RefCell<…>>`: building is
//! single-threaded). Mistakes that can't be types — `parallelism(0)`, setting a name on
//! a union — are recorded and returned by [`StreamExecutionEnvironment::job_graph`], so
//! builder calls chain without `?`. Whether the named factories exist is checked later,
//! against the registry of the process that runs the job
//! ([`JobGraph::validate`](crate::job_graph::JobGraph::validate)).

use std::cell::RefCell;
use std::rc::Rc;

use crate::broadcast::BroadcastStateDescriptor;
use crate::chaining::build_job_graph;
use crate::error::{DataflowError, Result};
use crate::ids::JobId;
use crate::interval_join::IntervalBounds;
use crate::job_graph::JobGraph;
use crate::key_group::DEFAULT_MAX_PARALLELISM;
use crate::partitioning::Partitioning;
use crate::registry::OperatorKind;
use crate::side_output::OutputTag;
use crate::spec::with_params;
use crate::spec::{FactoryRef, OperatorSpec};
use crate::stream_graph::{StreamEdge, StreamGraph, StreamNode};
use crate::two_input::InputSide;

struct Builder {
    graph: StreamGraph,
    errors: Vec<DataflowError>,
}

/// Entry point of the API: holds the graph being built and job-wide defaults.
pub struct StreamExecutionEnvironment {
    inner: Rc<RefCell<Builder>>,
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamExecutionEnvironment {
    /// An empty environment with parallelism 1 and max parallelism 128.
    pub fn new() -> Self {
        Self {
            inner: Rc::new(RefCell::new(Builder {
                graph: StreamGraph {
                    nodes: Vec::new(),
                    edges: Vec::new(),
                    default_parallelism: 1,
                    default_max_parallelism: DEFAULT_MAX_PARALLELISM,
                },
                errors: Vec::new(),
            })),
        }
    }

    /// Sets the parallelism of operators that don't set their own.
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        let mut b = self.inner.borrow_mut();
        if parallelism == 0 {
            b.errors.push(DataflowError::InvalidParallelism {
                vertex: "environment".into(),
                parallelism,
                reason: "must be at least 1".into(),
            });
        }
        b.graph.default_parallelism = parallelism;
        self
    }

    /// Sets the default max parallelism (number of key groups).
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> &Self {
        self.inner.borrow_mut().graph.default_max_parallelism = max_parallelism;
        self
    }

    /// Adds a source (a factory registered as [`OperatorKind::Source`]).
    pub fn add_source(&self, source: FactoryRef) -> DataStream {
        let node = add_node(&self.inner, OperatorKind::Source, source, None, &[]);
        DataStream::single(&self.inner, node)
    }

    /// A copy of the StreamGraph built so far, or the first builder error.
    pub fn stream_graph(&self) -> Result<StreamGraph> {
        let mut b = self.inner.borrow_mut();
        if !b.errors.is_empty() {
            return Err(b.errors.remove(0));
        }
        Ok(b.graph.clone())
    }

    /// Chains the graph into a JobGraph with a fresh [`JobId`].
    pub fn job_graph(&self, name: &str) -> Result<JobGraph> {
        self.job_graph_with_id(name, JobId::generate())
    }

    /// Chains the graph into a JobGraph with the given id.
    pub fn job_graph_with_id(&self, name: &str, job_id: JobId) -> Result<JobGraph> {
        build_job_graph(&self.stream_graph()?, name, job_id)
    }
}

/// One upstream node feeding the next operator, and how.
#[derive(Clone)]
struct Input {
    node: u32,
    partitioning: Option<Partitioning>,
    /// The node's side output to read instead of its main output.
    side_output: Option<String>,
    /// Which input of the next operator it feeds.
    side: InputSide,
}

fn add_node(
    b: &Rc<RefCell<Builder>>,
    kind: OperatorKind,
    factory: FactoryRef,
    key: Option<FactoryRef>,
    inputs: &[Input],
) -> u32 {
    let mut b = b.borrow_mut();
    let id = b.graph.nodes.len() as u32;
    b.graph.nodes.push(StreamNode {
        id,
        spec: OperatorSpec {
            name: factory.name.clone(),
            uid: None,
            kind,
            factory,
            key,
            key2: None,
        },
        parallelism: None,
        max_parallelism: None,
        slot_sharing_group: None,
        chaining_disabled: false,
    });
    for i in inputs {
        b.graph.edges.push(StreamEdge {
            source: i.node,
            target: id,
            partitioning: i.partitioning.clone(),
            side_output: i.side_output.clone(),
            input: i.side,
        });
    }
    id
}

/// Adds a two-input node fed by `first` (input 1) and `second` (input 2).
fn add_two_input_node(
    first: &DataStream,
    second: &DataStream,
    kind: OperatorKind,
    factory: FactoryRef,
    key: Option<FactoryRef>,
    key2: Option<FactoryRef>,
) -> DataStream {
    if !Rc::ptr_eq(&first.env, &second.env) {
        first.error("connect of streams from different environments".into());
    }
    let inputs: Vec<Input> = first
        .inputs
        .iter()
        .map(|i| Input {
            side: InputSide::First,
            ..i.clone()
        })
        .chain(second.inputs.iter().map(|i| Input {
            side: InputSide::Second,
            ..i.clone()
        }))
        .collect();
    let node = add_node(&first.env, kind, factory, key, &inputs);
    if let Some(n) = first.env.borrow_mut().graph.nodes.get_mut(node as usize) {
        n.spec.key2 = key2;
    }
    DataStream::single(&first.env, node)
}

/// Two streams connected for a two-input operator (Flink's `ConnectedStreams`); see
/// [`two_input`](crate::two_input).
#[derive(Clone)]
pub struct ConnectedStreams {
    first: DataStream,
    second: DataStream,
}

impl ConnectedStreams {
    /// Runs a registered [`CoProcessFunction`](crate::co_process::CoProcessFunction):
    /// records of the first stream go to `process1`, of the second to `process2`.
    pub fn process(&self, f: FactoryRef) -> DataStream {
        add_two_input_node(
            &self.first,
            &self.second,
            OperatorKind::CoProcess,
            f,
            None,
            None,
        )
    }
}

/// A stream broadcast to the operator it is connected with, with its state descriptor.
#[derive(Clone)]
pub struct BroadcastStream {
    stream: DataStream,
    descriptor: BroadcastStateDescriptor,
}

/// A (keyed or not) stream connected with a broadcast stream.
#[derive(Clone)]
pub struct BroadcastConnectedStream {
    main: DataStream,
    key: Option<FactoryRef>,
    broadcast: BroadcastStream,
}

impl BroadcastConnectedStream {
    /// Runs a function registered with
    /// [`register_broadcast_process`](crate::registry::OperatorRegistry::register_broadcast_process)
    /// (non-keyed) or
    /// [`register_keyed_broadcast_process`](crate::registry::OperatorRegistry::register_keyed_broadcast_process)
    /// (keyed).
    pub fn process(&self, f: FactoryRef) -> DataStream {
        let kind = match self.key {
            Some(_) => OperatorKind::KeyedBroadcast,
            None => OperatorKind::CoProcess,
        };
        let factory = match with_params(&self.broadcast.descriptor, &f) {
            Ok(factory) => factory,
            Err(e) => {
                self.main.env.borrow_mut().errors.push(e);
                f
            }
        };
        add_two_input_node(
            &self.main,
            &self.broadcast.stream,
            kind,
            factory,
            self.key.clone(),
            None,
        )
    }
}

/// An interval join waiting for its bounds.
#[derive(Clone)]
pub struct IntervalJoin {
    streams: KeyedConnectedStreams,
}

impl IntervalJoin {
    /// Pairs with `left.ts + lower ≤ right.ts ≤ left.ts + upper` (ms, inclusive).
    pub fn between(&self, lower: i64, upper: i64) -> IntervalJoined {
        IntervalJoined {
            streams: self.streams.clone(),
            bounds: IntervalBounds { lower, upper },
        }
    }
}

/// An interval join with bounds, waiting for its function.
#[derive(Clone)]
pub struct IntervalJoined {
    streams: KeyedConnectedStreams,
    bounds: IntervalBounds,
}

impl IntervalJoined {
    /// Runs a join function registered with
    /// [`register_process_join`](crate::registry::OperatorRegistry::register_process_join)
    /// on every joined pair.
    pub fn process(&self, f: FactoryRef) -> DataStream {
        let first = &self.streams.first.stream;
        if let Err(e) = self.bounds.validate() {
            first.env.borrow_mut().errors.push(e);
        }
        match with_params(&self.bounds, &f) {
            Ok(factory) => self.streams.two_input(factory),
            Err(e) => {
                first.env.borrow_mut().errors.push(e);
                self.streams.two_input(f)
            }
        }
    }
}

/// Two keyed streams connected for a keyed two-input operator: records of either with
/// equal keys meet in one subtask and share that key's state.
#[derive(Clone)]
pub struct KeyedConnectedStreams {
    first: KeyedStream,
    second: KeyedStream,
}

impl KeyedConnectedStreams {
    /// Runs a registered
    /// [`KeyedCoProcessFunction`](crate::co_process::KeyedCoProcessFunction).
    pub fn process(&self, f: FactoryRef) -> DataStream {
        self.two_input(f)
    }

    /// A keyed two-input operator of `factory` (joins build on this).
    pub(crate) fn two_input(&self, factory: FactoryRef) -> DataStream {
        add_two_input_node(
            &self.first.stream,
            &self.second.stream,
            OperatorKind::KeyedCoProcess,
            factory,
            Some(self.first.key.clone()),
            Some(self.second.key.clone()),
        )
    }
}

/// A stream of records: the output of one operator, possibly re-partitioned or unioned
/// with others. Per-operator settings (`name`, `parallelism`, …) apply to the operator
/// that produced the stream and are an error on unions and re-partitioned streams.
#[derive(Clone)]
pub struct DataStream {
    env: Rc<RefCell<Builder>>,
    inputs: Vec<Input>,
    /// The operator settings apply to; `None` after union / re-partitioning.
    node: Option<u32>,
}

impl DataStream {
    fn single(env: &Rc<RefCell<Builder>>, node: u32) -> Self {
        Self {
            env: env.clone(),
            inputs: vec![Input {
                node,
                partitioning: None,
                side_output: None,
                side: InputSide::First,
            }],
            node: Some(node),
        }
    }

    fn then(&self, kind: OperatorKind, f: FactoryRef, key: Option<FactoryRef>) -> DataStream {
        let node = add_node(&self.env, kind, f, key, &self.inputs);
        DataStream::single(&self.env, node)
    }

    fn repartitioned(&self, p: Partitioning) -> DataStream {
        DataStream {
            env: self.env.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|i| Input {
                    node: i.node,
                    partitioning: Some(p.clone()),
                    side_output: i.side_output.clone(),
                    side: i.side,
                })
                .collect(),
            node: None,
        }
    }

    /// One-to-one transformation (a factory registered with `register_map`).
    pub fn map(&self, f: FactoryRef) -> DataStream {
        self.then(OperatorKind::Map, f, None)
    }

    /// Runs a watermark generator (a registered one-to-one operator that emits
    /// watermarks, e.g. [`builtins::bounded_out_of_orderness`](crate::builtins::bounded_out_of_orderness))
    /// on records that carry event-time timestamps.
    pub fn assign_timestamps_and_watermarks(&self, generator: FactoryRef) -> DataStream {
        self.then(OperatorKind::Map, generator, None)
    }

    /// Keeps records matching a registered predicate.
    pub fn filter(&self, f: FactoryRef) -> DataStream {
        self.then(OperatorKind::Filter, f, None)
    }

    /// One-to-many transformation.
    pub fn flat_map(&self, f: FactoryRef) -> DataStream {
        self.then(OperatorKind::FlatMap, f, None)
    }

    /// Partitions by key (a registered key selector, see [`crate::key`]).
    pub fn key_by(&self, key: FactoryRef) -> KeyedStream {
        KeyedStream {
            stream: self.repartitioned(Partitioning::Hash { key: key.clone() }),
            key,
        }
    }

    /// Round-robin over all downstream subtasks.
    pub fn rebalance(&self) -> DataStream {
        self.repartitioned(Partitioning::Rebalance)
    }

    /// Round-robin over the pointwise-connected downstream subtasks.
    pub fn rescale(&self) -> DataStream {
        self.repartitioned(Partitioning::Rescale)
    }

    /// Every record to every downstream subtask.
    pub fn broadcast(&self) -> DataStream {
        self.repartitioned(Partitioning::Broadcast)
    }

    /// Subtask `i` to subtask `i` (requires equal parallelism).
    pub fn forward(&self) -> DataStream {
        self.repartitioned(Partitioning::Forward)
    }

    /// Merges this stream with `others` (same environment) into one stream.
    pub fn union(&self, others: &[&DataStream]) -> DataStream {
        let mut inputs = self.inputs.clone();
        for o in others {
            if !Rc::ptr_eq(&self.env, &o.env) {
                self.error("union of streams from different environments".into());
            }
            inputs.extend(o.inputs.iter().cloned());
        }
        DataStream {
            env: self.env.clone(),
            inputs,
            node: None,
        }
    }

    /// The records the operator that produced this stream emitted to the side output
    /// `tag` (Flink's `getSideOutput`), e.g. a window's late records.
    pub fn side_output(&self, tag: &OutputTag) -> DataStream {
        let Some(node) = self.node else {
            self.error(
                "side_output() applies to an operator, not to a union or re-partitioned stream"
                    .into(),
            );
            return self.clone();
        };
        DataStream {
            env: self.env.clone(),
            inputs: vec![Input {
                node,
                partitioning: None,
                side_output: Some(tag.id.clone()),
                side: InputSide::First,
            }],
            node: None,
        }
    }

    /// Connects this stream (input 1) with `other` (input 2) for a two-input operator.
    pub fn connect(&self, other: &DataStream) -> ConnectedStreams {
        ConnectedStreams {
            first: self.clone(),
            second: other.clone(),
        }
    }

    /// Every record to every subtask of the operator this is connected with, kept in
    /// the broadcast state `descriptor` there ([`broadcast`](crate::broadcast)).
    pub fn broadcast_with(&self, descriptor: &BroadcastStateDescriptor) -> BroadcastStream {
        BroadcastStream {
            stream: self.broadcast(),
            descriptor: descriptor.clone(),
        }
    }

    /// Connects this stream (input 1) with a broadcast stream (input 2).
    pub fn connect_broadcast(&self, broadcast: &BroadcastStream) -> BroadcastConnectedStream {
        BroadcastConnectedStream {
            main: self.clone(),
            key: None,
            broadcast: broadcast.clone(),
        }
    }

    /// Ends the stream in a sink.
    pub fn sink(&self, f: FactoryRef) -> DataStream {
        self.then(OperatorKind::Sink, f, None)
    }

    fn error(&self, message: String) {
        self.env
            .borrow_mut()
            .errors
            .push(DataflowError::InvalidGraph(message));
    }

    fn with_node(self, what: &str, f: impl FnOnce(&mut StreamNode)) -> Self {
        match self.node {
            Some(id) => {
                let mut b = self.env.borrow_mut();
                if let Some(n) = b.graph.nodes.get_mut(id as usize) {
                    f(n);
                }
            }
            None => self.error(format!(
                "{what}() applies to an operator, not to a union or re-partitioned stream"
            )),
        }
        self
    }

    /// Sets the operator's display name.
    pub fn name(self, name: &str) -> Self {
        self.with_node("name", |n| n.spec.name = name.to_owned())
    }

    /// Sets the operator's stable id (for state).
    pub fn uid(self, uid: &str) -> Self {
        self.with_node("uid", |n| n.spec.uid = Some(uid.to_owned()))
    }

    /// Sets the operator's parallelism (≥ 1).
    pub fn parallelism(self, parallelism: u32) -> Self {
        if parallelism == 0 {
            let name = self.node.map(|n| n.to_string()).unwrap_or_default();
            self.env
                .borrow_mut()
                .errors
                .push(DataflowError::InvalidParallelism {
                    vertex: format!("operator {name}"),
                    parallelism,
                    reason: "must be at least 1".into(),
                });
        }
        self.with_node("parallelism", |n| n.parallelism = Some(parallelism))
    }

    /// Sets the operator's max parallelism (number of key groups).
    pub fn max_parallelism(self, max_parallelism: u32) -> Self {
        self.with_node("max_parallelism", |n| {
            n.max_parallelism = Some(max_parallelism)
        })
    }

    /// Puts the operator into a slot sharing group.
    pub fn slot_sharing_group(self, group: &str) -> Self {
        self.with_node("slot_sharing_group", |n| {
            n.slot_sharing_group = Some(group.to_owned())
        })
    }

    /// Never chains this operator with its neighbours.
    pub fn disable_chaining(self) -> Self {
        self.with_node("disable_chaining", |n| n.chaining_disabled = true)
    }
}

/// A stream partitioned by key; keyed operators follow.
#[derive(Clone)]
pub struct KeyedStream {
    stream: DataStream,
    key: FactoryRef,
}

impl KeyedStream {
    /// A window operator (see [`window`](crate::window)) on this keyed stream.
    pub(crate) fn window_operator(&self, f: FactoryRef) -> DataStream {
        self.stream
            .then(OperatorKind::Window, f, Some(self.key.clone()))
    }

    /// Folds each key's values with a registered reduce function.
    pub fn reduce(&self, f: FactoryRef) -> DataStream {
        self.stream
            .then(OperatorKind::Reduce, f, Some(self.key.clone()))
    }

    /// Runs a registered keyed process function with per-key state.
    pub fn process(&self, f: FactoryRef) -> DataStream {
        self.stream
            .then(OperatorKind::Process, f, Some(self.key.clone()))
    }

    /// Connects this keyed stream (input 1) with `other` (input 2), each keyed by its own
    /// key selector.
    pub fn connect(&self, other: &KeyedStream) -> KeyedConnectedStreams {
        KeyedConnectedStreams {
            first: self.clone(),
            second: other.clone(),
        }
    }

    /// Connects this keyed stream (input 1) with a broadcast stream (input 2).
    pub fn connect_broadcast(&self, broadcast: &BroadcastStream) -> BroadcastConnectedStream {
        BroadcastConnectedStream {
            main: self.stream.clone(),
            key: Some(self.key.clone()),
            broadcast: broadcast.clone(),
        }
    }

    /// Joins this keyed stream (left) with `other` (right) on equal keys within a time
    /// interval ([`interval_join`](crate::interval_join)); `between` sets the bounds.
    pub fn interval_join(&self, other: &KeyedStream) -> IntervalJoin {
        IntervalJoin {
            streams: self.connect(other),
        }
    }

    /// Sends the keyed stream into a sink (records of one key reach one sink subtask).
    pub fn sink(&self, f: FactoryRef) -> DataStream {
        self.stream.sink(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins;

    #[test]
    fn settings_on_a_union_are_reported_at_build() {
        let env = StreamExecutionEnvironment::new();
        let a = env.add_source(builtins::collection(vec![]));
        let b = env.add_source(builtins::collection(vec![]));
        a.union(&[&b]).name("nope");
        assert!(matches!(
            env.job_graph("j"),
            Err(DataflowError::InvalidGraph(_))
        ));
    }

    #[test]
    fn zero_parallelism_is_reported() {
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::collection(vec![])).parallelism(0);
        assert!(matches!(
            env.job_graph("j"),
            Err(DataflowError::InvalidParallelism { .. })
        ));
    }
}
