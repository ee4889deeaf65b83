//! The JobGraph: what a client submits and a JobMaster deploys.
//!
//! Plain serializable data (serde; [`JobGraph::to_bytes`] uses rmp-serde): vertices,
//! each a *chain* of operators that runs in one task per subtask, and edges between
//! vertices with their [`Partitioning`]. Nothing in it is code; operators are
//! [`OperatorSpec`]s naming registered factories (DESIGN §5).
//!
//! **Chains are trees.** `operators[0]` is the head (the only operator that receives the
//! vertex's input, or the source); every other operator has exactly one chained parent,
//! with a smaller index, listed in that parent's `chained_outputs`. An edge leaves from
//! any operator of the chain (`source_operator`) and always enters the head of its
//! target vertex.
//!
//! **Channels.** Which subpartition of which producer feeds each input channel of a
//! subtask, and how many subpartitions each output partition has, is computed in one
//! place, [`JobGraph::wiring`] ([`wiring`](crate::wiring)); the JobMaster, the
//! TaskExecutor's data-plane set-up and the task all use it.
//!
//! [`JobGraph::validate`] is the submission check: structure, parallelism, forward
//! edges, cycles, and every operator/key-selector name against a registry.

use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::ids::{JobId, VertexId};
use crate::partitioning::Partitioning;
use crate::registry::{OperatorKind, OperatorRegistry};
use crate::spec::OperatorSpec;
use crate::two_input::InputSide;

/// Largest accepted max parallelism (Flink's `UPPER_BOUND_MAX_PARALLELISM`, 2^15).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// Deepest msgpack nesting [`JobGraph::from_bytes`] accepts.
pub const MAX_DECODE_DEPTH: usize = 64;

/// A job: vertices and the edges between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobGraph {
    /// The job's id.
    pub job_id: JobId,
    /// Display name.
    pub name: String,
    /// Vertices; `vertices[i].id == VertexId(i)`.
    pub vertices: Vec<JobVertex>,
    /// Edges between vertices.
    pub edges: Vec<JobEdge>,
    /// Start from a savepoint's state instead of empty state.
    #[serde(default)]
    pub savepoint_restore: Option<SavepointRestoreSettings>,
}

/// Which savepoint (or retained checkpoint) a job starts from (Flink's
/// `SavepointRestoreSettings`). State is matched to operators by uid; key groups are
/// redistributed when the parallelism changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointRestoreSettings {
    /// The savepoint directory (holding `_metadata`), or the `_metadata` file.
    pub path: String,
    /// Start even if the savepoint has state for an operator uid the job lacks (that
    /// state is dropped); refused otherwise.
    pub allow_non_restored_state: bool,
}

/// A chain of operators run by `parallelism` parallel tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobVertex {
    /// The vertex's id (its index).
    pub id: VertexId,
    /// Display name, `"a -> b -> c"` for a chain.
    pub name: String,
    /// Number of parallel subtasks.
    pub parallelism: u32,
    /// Number of key groups of keyed operators in this vertex.
    pub max_parallelism: u32,
    /// Slot sharing group.
    pub slot_sharing_group: String,
    /// The chain; `operators[0]` is the head.
    pub operators: Vec<ChainedOperator>,
}

/// One operator of a chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainedOperator {
    /// What to run.
    pub spec: OperatorSpec,
    /// Indices (in the same vertex) of operators fed by direct calls.
    pub chained_outputs: Vec<usize>,
}

/// A data connection between two vertices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEdge {
    /// Producing vertex.
    pub source: VertexId,
    /// Index of the producing operator within the source vertex's chain.
    pub source_operator: usize,
    /// Consuming vertex (its head operator receives the records).
    pub target: VertexId,
    /// How records are distributed.
    pub partitioning: Partitioning,
    /// The side output of the producing operator this edge carries (see
    /// [`side_output`](crate::side_output)); `None`: its main output.
    #[serde(default)]
    pub side_output: Option<String>,
    /// Which input of the target's head this edge feeds (see
    /// [`two_input`](crate::two_input)).
    #[serde(default, skip_serializing_if = "InputSide::is_first")]
    pub input: InputSide,
}

impl JobGraph {
    /// The vertex with this id.
    pub fn vertex(&self, id: VertexId) -> Option<&JobVertex> {
        self.vertices.get(id.0 as usize)
    }

    /// Edges leaving `v`, with their indices, in output order.
    pub fn output_edges(&self, v: VertexId) -> impl Iterator<Item = (usize, &JobEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.source == v)
    }

    /// Edges entering `v`, with their indices, in input order.
    pub fn input_edges(&self, v: VertexId) -> impl Iterator<Item = (usize, &JobEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.target == v)
    }

    /// Serializes with rmp-serde (the RPC encoding).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self)
            .map_err(|e| DataflowError::InvalidGraph(format!("cannot encode job graph: {e}")))
    }

    /// Deserializes from [`to_bytes`](Self::to_bytes) output (peer input: errors, never
    /// panics). Call [`validate`](Self::validate) before using the result.
    ///
    /// Nesting is limited to [`MAX_DECODE_DEPTH`] containers: a graph needs about ten,
    /// and rmp-serde's own limit (1024) lets a peer's skipped unknown field recurse deep
    /// enough to overflow a 2 MiB thread stack in a debug build.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DECODE_DEPTH);
        Self::deserialize(&mut de)
            .map_err(|e| DataflowError::InvalidGraph(format!("cannot decode job graph: {e}")))
    }

    /// Vertex ids in an order where every edge goes forward; a [`DataflowError::Cycle`]
    /// if there is none.
    ///
    /// An edge naming a missing vertex is a [`DataflowError::InvalidGraph`] (the graph may
    /// come straight from [`from_bytes`](Self::from_bytes), before any validation).
    pub fn topological_order(&self) -> Result<Vec<VertexId>> {
        let n = self.vertices.len();
        let mut indegree = vec![0usize; n];
        for (i, e) in self.edges.iter().enumerate() {
            if e.source.0 as usize >= n || e.target.0 as usize >= n {
                return Err(DataflowError::InvalidGraph(format!(
                    "edge {i} ({} -> {}) names a missing vertex ({n} vertices)",
                    e.source, e.target
                )));
            }
            indegree[e.target.0 as usize] += 1;
        }
        let mut ready: Vec<usize> = (0..n).filter(|i| indegree[*i] == 0).rev().collect();
        let mut order = Vec::with_capacity(n);
        while let Some(v) = ready.pop() {
            order.push(VertexId(v as u32));
            for e in self.edges.iter().filter(|e| e.source.0 as usize == v) {
                let t = e.target.0 as usize;
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(t);
                }
            }
        }
        if order.len() < n {
            let stuck = (0..n).find(|i| indegree[*i] > 0).unwrap_or(0);
            return Err(DataflowError::Cycle {
                vertex: self.vertices[stuck].name.clone(),
            });
        }
        Ok(order)
    }

    /// Checks everything that can be checked before deployment; `registry` is the
    /// registry of the binary that will run the job.
    pub fn validate(&self, registry: &OperatorRegistry) -> Result<()> {
        self.validate_structure()?;
        self.topological_order()?;
        for v in &self.vertices {
            for op in &v.operators {
                registry.check_operator(&op.spec)?;
            }
        }
        for e in &self.edges {
            if let Partitioning::Hash { key } = &e.partitioning {
                registry.key_selector(key)?;
            }
        }
        Ok(())
    }

    fn validate_structure(&self) -> Result<()> {
        let invalid = |m: String| Err(DataflowError::InvalidGraph(m));
        if self.vertices.is_empty() {
            return invalid("the job has no operators".into());
        }
        for (i, v) in self.vertices.iter().enumerate() {
            if v.id.0 as usize != i {
                return invalid(format!("vertex `{}` has id {} at index {i}", v.name, v.id));
            }
            let bad = |reason: &str, p: u32| {
                Err(DataflowError::InvalidParallelism {
                    vertex: v.name.clone(),
                    parallelism: p,
                    reason: reason.into(),
                })
            };
            if v.parallelism == 0 {
                return bad("must be at least 1", 0);
            }
            if v.max_parallelism == 0 || v.max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
                return bad("max parallelism must be in 1..=32768", v.max_parallelism);
            }
            if v.parallelism > v.max_parallelism {
                return bad(
                    &format!("exceeds the max parallelism {}", v.max_parallelism),
                    v.parallelism,
                );
            }
            self.validate_chain(v)?;
        }
        for e in &self.edges {
            let (Some(s), Some(t)) = (self.vertex(e.source), self.vertex(e.target)) else {
                return invalid(format!(
                    "edge {} -> {} names a missing vertex",
                    e.source, e.target
                ));
            };
            if e.source_operator >= s.operators.len() {
                return invalid(format!(
                    "edge from `{}` leaves operator {} of a {}-operator chain",
                    s.name,
                    e.source_operator,
                    s.operators.len()
                ));
            }
            if e.partitioning == Partitioning::Forward && s.parallelism != t.parallelism {
                return Err(DataflowError::ForwardParallelismMismatch {
                    source_vertex: s.name.clone(),
                    source_parallelism: s.parallelism,
                    target_vertex: t.name.clone(),
                    target_parallelism: t.parallelism,
                });
            }
        }
        Ok(())
    }

    fn validate_chain(&self, v: &JobVertex) -> Result<()> {
        let invalid = |m: String| Err(DataflowError::InvalidGraph(m));
        let Some(head) = v.operators.first() else {
            return invalid(format!("vertex `{}` has no operators", v.name));
        };
        let has_inputs = self.edges.iter().any(|e| e.target == v.id);
        match (head.spec.kind == OperatorKind::Source, has_inputs) {
            (true, true) => return invalid(format!("source vertex `{}` has inputs", v.name)),
            (false, false) => {
                return invalid(format!(
                    "vertex `{}` has no inputs and is not a source",
                    v.name
                ))
            }
            _ => {}
        }
        let second = self
            .edges
            .iter()
            .any(|e| e.target == v.id && e.input == InputSide::Second);
        let first = self
            .edges
            .iter()
            .any(|e| e.target == v.id && e.input == InputSide::First);
        match (head.spec.kind.is_two_input(), first, second) {
            (true, true, true) | (false, _, false) => {}
            (true, _, _) => {
                return invalid(format!(
                    "two-input vertex `{}` needs edges into both of its inputs",
                    v.name
                ))
            }
            (false, _, true) => {
                return invalid(format!(
                    "vertex `{}` has one input but an edge into its input 2",
                    v.name
                ))
            }
        }
        let mut parents = vec![0usize; v.operators.len()];
        for (i, op) in v.operators.iter().enumerate() {
            if i > 0 && op.spec.kind.is_two_input() {
                return invalid(format!(
                    "two-input operator `{}` chained after another operator",
                    op.spec.name
                ));
            }
            if i > 0 && op.spec.kind == OperatorKind::Source {
                return invalid(format!(
                    "source `{}` chained after another operator",
                    op.spec.name
                ));
            }
            for &c in &op.chained_outputs {
                if c <= i || c >= v.operators.len() {
                    return invalid(format!(
                        "vertex `{}`: operator {i} chains to invalid index {c}",
                        v.name
                    ));
                }
                parents[c] += 1;
            }
        }
        if parents.iter().skip(1).any(|p| *p != 1) {
            return invalid(format!(
                "vertex `{}`: every chained operator needs exactly one chained input",
                v.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_naming_a_missing_vertex_is_an_error_before_validation() {
        let env = crate::StreamExecutionEnvironment::new();
        env.add_source(crate::builtins::collection(vec![crate::Value::I64(1)]))
            .rebalance()
            .sink(crate::builtins::blackhole());
        let mut job = env.job_graph("dangling").unwrap();
        job.edges[0].target = VertexId(9);
        let back = JobGraph::from_bytes(&job.to_bytes().unwrap()).unwrap();
        assert!(matches!(
            back.topological_order(),
            Err(DataflowError::InvalidGraph(m)) if m.contains("v9")
        ));
    }

    #[test]
    fn deep_nesting_is_refused_on_a_small_stack() {
        // A map whose one (unknown) key holds 5000 nested arrays: skipping it recurses.
        let mut bytes = vec![0x81, 0xa7];
        bytes.extend_from_slice(b"unknown");
        bytes.extend(std::iter::repeat_n(0x91, 5_000));
        bytes.push(0xc0);
        let refused = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || JobGraph::from_bytes(&bytes).is_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
    }
}
