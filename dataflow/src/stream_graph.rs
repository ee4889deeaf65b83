//! The StreamGraph: one node per operator as the user wrote it, before chaining.
//!
//! Built by [`StreamExecutionEnvironment`](crate::environment::StreamExecutionEnvironment)
//! and turned into a [`JobGraph`](crate::job_graph::JobGraph) by
//! [`chaining`](crate::chaining). Unset settings are `None` here and resolved during
//! chaining: parallelism falls back to the environment default, the slot sharing group is
//! inherited from the inputs when they agree (else `"default"`, as in Flink), and an edge
//! without explicit partitioning is `Forward` between equal parallelism, `Rebalance`
//! otherwise.

use serde::{Deserialize, Serialize};

use crate::partitioning::Partitioning;
use crate::spec::OperatorSpec;
use crate::two_input::InputSide;

/// Name of the slot sharing group operators belong to unless told otherwise.
pub const DEFAULT_SLOT_SHARING_GROUP: &str = "default";

/// One user-level operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamNode {
    /// Index of the node in [`StreamGraph::nodes`].
    pub id: u32,
    /// What to run.
    pub spec: OperatorSpec,
    /// Explicit parallelism, if set.
    pub parallelism: Option<u32>,
    /// Explicit max parallelism, if set.
    pub max_parallelism: Option<u32>,
    /// Explicit slot sharing group, if set.
    pub slot_sharing_group: Option<String>,
    /// `disable_chaining()` was called: never chained to its inputs or outputs.
    pub chaining_disabled: bool,
}

/// A data dependency between two nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEdge {
    /// Upstream node id.
    pub source: u32,
    /// Downstream node id.
    pub target: u32,
    /// Explicit partitioning, if any.
    pub partitioning: Option<Partitioning>,
    /// The side output of the upstream node this edge carries; `None`: its main
    /// output. Side-output edges are never chained.
    #[serde(default)]
    pub side_output: Option<String>,
    /// Which input of the target this edge feeds (input 2 only for two-input targets).
    #[serde(default, skip_serializing_if = "InputSide::is_first")]
    pub input: InputSide,
}

/// Operators and their connections, as built by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamGraph {
    /// Nodes, indexed by id.
    pub nodes: Vec<StreamNode>,
    /// Edges, in creation order (which is also output order).
    pub edges: Vec<StreamEdge>,
    /// Parallelism of nodes without an explicit one.
    pub default_parallelism: u32,
    /// Max parallelism of nodes without an explicit one.
    pub default_max_parallelism: u32,
}
