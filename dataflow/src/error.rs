//! The crate's one error type.
//!
//! Errors are split by who can fix them: *submission* errors (unknown operator names, bad
//! configuration, cycles, parallelism) are found by [`JobGraph::validate`] before any task
//! runs and mean the job must be changed; *runtime* errors (I/O, closed channels, user
//! function failures) end one task, and [`DataflowError::is_retryable`] says whether
//! restarting the task could help.
//!
//! [`JobGraph::validate`]: crate::job_graph::JobGraph::validate

use crate::spec::OperatorKind;

/// Everything that can go wrong while building, validating or running a dataflow.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A JobGraph names an operator factory that this binary's registry does not know.
    #[error("unknown operator `{name}`: no factory of that name is registered in this binary (register it with OperatorRegistry at start-up)")]
    UnknownOperator {
        /// The factory name that was looked up.
        name: String,
    },
    /// A JobGraph names a key selector that this binary's registry does not know.
    #[error(
        "unknown key selector `{name}`: no key selector of that name is registered in this binary"
    )]
    UnknownKeySelector {
        /// The key selector name that was looked up.
        name: String,
    },
    /// A factory was used in a position that does not match how it was registered
    /// (e.g. a sink factory passed to `map`).
    #[error("operator `{operator}` uses factory `{factory}`, registered as {registered:?} but used as {used:?}")]
    WrongOperatorKind {
        /// Display name of the operator.
        operator: String,
        /// Factory name.
        factory: String,
        /// Kind the factory was registered with.
        registered: OperatorKind,
        /// Kind the graph uses it as.
        used: OperatorKind,
    },
    /// An operator's serialized configuration could not be decoded or is invalid.
    #[error("invalid configuration for `{factory}`: {reason}")]
    InvalidConfig {
        /// Factory (or key selector) name.
        factory: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph has a cycle; dataflows must be acyclic.
    #[error("the job graph has a cycle through vertex `{vertex}`")]
    Cycle {
        /// Name of one vertex on the cycle.
        vertex: String,
    },
    /// A parallelism or max parallelism is out of range.
    #[error("invalid parallelism {parallelism} for `{vertex}`: {reason}")]
    InvalidParallelism {
        /// Vertex or operator name.
        vertex: String,
        /// The offending value.
        parallelism: u32,
        /// Why it is invalid.
        reason: String,
    },
    /// A forward edge connects vertices of different parallelism.
    #[error("forward edge from `{source_vertex}` (parallelism {source_parallelism}) to `{target_vertex}` (parallelism {target_parallelism}) needs equal parallelism; use rebalance() or rescale()")]
    ForwardParallelismMismatch {
        /// Upstream vertex name.
        source_vertex: String,
        /// Upstream parallelism.
        source_parallelism: u32,
        /// Downstream vertex name.
        target_vertex: String,
        /// Downstream parallelism.
        target_parallelism: u32,
    },
    /// The graph is structurally wrong in some other way (dangling ids, a source with
    /// inputs, a keyed operator without a key, …).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    /// A record did not have the shape an operator expects.
    #[error("type mismatch in `{operator}`: expected {expected}, got {actual}")]
    TypeMismatch {
        /// Operator (or key selector) that rejected the value.
        operator: String,
        /// Expected value type.
        expected: &'static str,
        /// Actual value type.
        actual: &'static str,
    },
    /// A user or built-in function failed.
    #[error("operator `{operator}` failed: {message}")]
    Operator {
        /// Operator name.
        operator: String,
        /// What happened.
        message: String,
    },
    /// An I/O operation failed (files, sockets).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoded record bytes were malformed (peer input: never a panic).
    #[error("malformed record encoding: {0}")]
    Codec(String),
    /// A channel to another task closed while data was still being exchanged.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// The data plane ([`rill_network`]) failed: creating partitions or gates, writing or
    /// reading. A released partition is reported as [`DataflowError::ChannelClosed`]
    /// instead, since it is the consequence of another task ending.
    #[error("network error while {context}: {source}")]
    Network {
        /// What was being done (names the partition or channel where known).
        context: String,
        /// The underlying network error.
        #[source]
        source: rill_network::NetworkError,
    },
    /// The input delivered something this task cannot handle yet (checkpoint barriers
    /// before checkpointing is implemented). Not retryable: the job needs a runtime that
    /// supports it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A name was registered twice in one operator registry.
    #[error("`{name}` is already registered in this operator registry")]
    DuplicateRegistration {
        /// The name registered twice.
        name: String,
    },
    /// Keyed or operator state failed: a backend, a snapshot, a restore or the state
    /// configuration ([`rill_state::StateError`] says which, naming files and keys).
    #[error("state: {0}")]
    State(#[from] rill_state::StateError),
    /// A line of an input file is not what the source reads (e.g. not a Nexmark event).
    /// Not retryable: the same line fails again.
    #[error("malformed input at {path}:{line}: {reason}")]
    MalformedInput {
        /// The file.
        path: String,
        /// The line number, counted from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A collect sink ran in a task environment without a collect hook.
    #[error("collect sink `{id}` has no collect hook in this task environment")]
    NoCollectHook {
        /// The collect sink's id.
        id: String,
    },
}

impl DataflowError {
    /// Whether running the same thing again may succeed (transient I/O and lost channels);
    /// `false` for errors in the job itself, which need a new job graph or new code.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } | Self::ChannelClosed(_) => true,
            Self::Network { source, .. } => source.is_retryable(),
            Self::State(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Shorthand for an [`DataflowError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a network error with context; a released partition becomes
    /// [`DataflowError::ChannelClosed`] (the producer or consumer task ended).
    pub fn network(context: impl Into<String>, source: rill_network::NetworkError) -> Self {
        match source {
            rill_network::NetworkError::PartitionReleased { partition } => {
                Self::ChannelClosed(format!(
                    "{}: result partition {partition} was released",
                    context.into()
                ))
            }
            source => Self::Network {
                context: context.into(),
                source,
            },
        }
    }
}

/// The crate's result type.
pub type Result<T, E = DataflowError> = std::result::Result<T, E>;
