//! rill-dataflow: the DataStream API, stream/job graphs with chaining, operators and the
//! stream task (DESIGN §5).
//!
//! # From program to running tasks
//!
//! 1. **Build** with [`StreamExecutionEnvironment`]: sources, transforms and sinks are
//!    [`FactoryRef`]s — names registered in an [`OperatorRegistry`] plus serialized
//!    config — so the result is plain data ([`environment`]).
//! 2. **Chain** the [`StreamGraph`](stream_graph::StreamGraph) into a [`JobGraph`]
//!    ([`chaining`]): operators joined by forward edges of equal parallelism in one slot
//!    sharing group run in one task by direct calls.
//! 3. **Submit**: the JobGraph travels as bytes ([`JobGraph::to_bytes`]); the receiver
//!    runs [`JobGraph::validate`] against its own registry, so unknown operator names,
//!    cycles and bad parallelism are submission errors.
//! 4. **Run** each vertex × subtask as a [`StreamTask`] on its own thread with a
//!    [`TaskInput`] and one [`TaskOutput`] per output edge ([`task_io`]), which a
//!    TaskExecutor creates over the data plane with [`create_task_io`] ([`network_io`])
//!    from the channel layout of [`JobGraph::wiring`] ([`wiring`]). There is one
//!    runtime: to run a job in one process, start a MiniCluster (rill-endpoints), whose
//!    TaskExecutors connect tasks of one process through the network's local channels.
//!
//! # Records
//!
//! Records are a dynamic [`Value`] ([`value`]) with an optional timestamp; the data plane
//! encodes them with [`codec`]. Keys go through a stable hash and key groups
//! ([`key_group`], rill-state's formula). Operators process batches ([`operator`]);
//! keyed operators keep per-key state in a rill-state keyed backend ([`keyed`]), created,
//! restored and snapshotted through the hooks described in [`state`] and configured by
//! [`StateConfig`] ([`state_config`]).
//!
//! # Running a vertex from an endpoint
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rill_dataflow::*;
//! # fn inputs() -> Option<Box<dyn TaskInput>> { None }
//! # fn outputs() -> Vec<Box<dyn TaskOutput>> { Vec::new() }
//! # fn demo(job: Arc<JobGraph>, vertex: VertexId, subtask: u32) -> Result<()> {
//! let env = TaskEnvironment {
//!     registry: Arc::new(OperatorRegistry::new()),
//!     collect: None,
//!     config: TaskConfig::default(),
//! };
//! // Input: job.wiring(vertex, subtask)?.inputs.len() channels (None for sources);
//! // outputs: one per job.wiring(vertex, subtask)?.outputs, in output-edge order.
//! let task = StreamTask::new(job, vertex, subtask, env, inputs(), outputs())?;
//! let handle = task.spawn(|outcome| println!("task ended: {outcome:?}"))?;
//! handle.cancel();
//! let _outcome: TaskOutcome = handle.join();
//! # Ok(()) }
//! ```

pub mod barrier_handler;
pub mod broadcast;
pub mod builtins;
mod chain;
pub mod chaining;
pub mod checkpoint;
pub mod co_process;
pub mod codec;
pub mod collect;
pub mod element;
pub mod environment;
pub mod error;
pub mod functions;
pub mod ids;
mod in_flight;
pub mod interval_join;
pub mod job_graph;
pub mod jobs;
pub mod key;
pub mod key_group;
pub mod keyed;
pub mod mailbox;
pub mod network_io;
pub mod operator;
pub mod partitioning;
pub mod rate_limiter;
pub mod registry;
pub mod side_output;
pub mod spec;
pub mod state;
pub mod state_config;
pub mod stream_graph;
pub mod stream_task;
pub mod task_io;
pub mod timer;
pub mod two_input;
pub mod two_phase_commit;
pub mod value;
pub mod watermark;
pub mod window;
pub mod window_join;
pub mod wiring;

pub use collect::{CollectBuffer, CollectSink};
pub use element::{StreamElement, StreamEvent, StreamRecord, WatermarkStatus};
pub use environment::{DataStream, KeyedStream, StreamExecutionEnvironment};
pub use error::{DataflowError, Result};
pub use ids::{JobId, ParseJobIdError, VertexId};
pub use job_graph::{ChainedOperator, JobEdge, JobGraph, JobVertex, SavepointRestoreSettings};
pub use keyed::{KeyedProcessFunction, ProcessContext};
pub use mailbox::{Mail, MailboxSender};
pub use network_io::{
    create_task_io, input_channel_specs, ChannelLocation, InputChannelSpec, NetworkInput,
    NetworkOutput, NetworkTaskIo, OutputSpec,
};
pub use operator::{Collector, Operator, OperatorContext, SourceOperator, SourceStatus};
pub use partitioning::Partitioning;
pub use registry::{OperatorKind, OperatorRegistry};
pub use spec::{FactoryRef, OperatorSpec};
pub use state::{
    OperatorStateSnapshot, OperatorSubtaskSnapshot, SnapshotContext, StateContext,
    StateInitContext, TaskRestore,
};
pub use state_config::StateConfig;
pub use stream_task::{StreamTask, TaskConfig, TaskEnvironment, TaskHandle, TaskOutcome};
pub use task_io::{InputEvent, TaskInput, TaskOutput};
pub use value::Value;
pub use wiring::{InputChannel, OutputPartition, SubtaskWiring};

#[cfg(test)]
mod tests;
