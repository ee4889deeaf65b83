//! How records of one job edge are distributed over the downstream subtasks.
//!
//! Two distribution patterns, as in Flink:
//!
//! * **all-to-all** (`Rebalance`, `Hash`, `Broadcast`): every upstream subtask has one
//!   output channel per downstream subtask, every downstream subtask one input channel per
//!   upstream subtask;
//! * **pointwise** (`Forward`, `Rescale`): upstream subtask `i` connects to a contiguous
//!   range of downstream subtasks (fan-out) or several upstream subtasks share one
//!   downstream subtask (fan-in). With equal parallelism it is `i → i`.
//!
//! `output_targets` and `input_sources` compute those ranges, for
//! [`JobGraph::wiring`](crate::job_graph::JobGraph::wiring) only, which turns them into
//! channels and subpartitions. Per record, the network's channel selectors pick the
//! channel ([`network_io::channel_selector`](crate::network_io::channel_selector)). On
//! hash edges the channel is the key's owner among the downstream subtasks,
//! [`operator_index_for_key`](crate::key_group::operator_index_for_key) over the
//! downstream parallelism and max parallelism, which the operator chain computes.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::spec::FactoryRef;

/// The partitioning of a job edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partitioning {
    /// Subtask `i` to subtask `i`; requires equal parallelism; chainable.
    Forward,
    /// Round-robin over all downstream subtasks.
    Rebalance,
    /// Round-robin over the pointwise-connected downstream subtasks.
    Rescale,
    /// By key group of the key that `key` extracts (DESIGN §6).
    Hash {
        /// Registered key selector.
        key: FactoryRef,
    },
    /// Every record to every downstream subtask.
    Broadcast,
}

impl Partitioning {
    /// Whether the edge connects subtasks pointwise rather than all-to-all.
    pub fn is_pointwise(&self) -> bool {
        matches!(self, Partitioning::Forward | Partitioning::Rescale)
    }

    /// Short name for display.
    pub fn name(&self) -> &'static str {
        match self {
            Partitioning::Forward => "FORWARD",
            Partitioning::Rebalance => "REBALANCE",
            Partitioning::Rescale => "RESCALE",
            Partitioning::Hash { .. } => "HASH",
            Partitioning::Broadcast => "BROADCAST",
        }
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Downstream subtasks that upstream subtask `index` sends to, in output-channel order.
pub(crate) fn output_targets(
    pointwise: bool,
    index: u32,
    upstream: u32,
    downstream: u32,
) -> Range<u32> {
    if !pointwise {
        return 0..downstream;
    }
    let (i, up, down) = (u64::from(index), u64::from(upstream), u64::from(downstream));
    if up >= down {
        let t = (i * down / up) as u32;
        t..t + 1
    } else {
        (div_ceil(i * down, up) as u32)..(div_ceil((i + 1) * down, up) as u32)
    }
}

/// Upstream subtasks that downstream subtask `index` receives from, in input-channel order.
pub(crate) fn input_sources(
    pointwise: bool,
    index: u32,
    upstream: u32,
    downstream: u32,
) -> Range<u32> {
    if !pointwise {
        return 0..upstream;
    }
    let (j, up, down) = (u64::from(index), u64::from(upstream), u64::from(downstream));
    if up >= down {
        (div_ceil(j * up, down) as u32)..(div_ceil((j + 1) * up, down) as u32)
    } else {
        let s = (j * up / down) as u32;
        s..s + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointwise_ranges_are_consistent_both_ways() {
        for up in 1..9 {
            for down in 1..9 {
                let mut covered = vec![0; down as usize];
                for i in 0..up {
                    let targets = output_targets(true, i, up, down);
                    assert!(!targets.is_empty(), "{up}->{down}: {i} has no target");
                    for j in targets {
                        covered[j as usize] += 1;
                        assert!(input_sources(true, j, up, down).contains(&i));
                    }
                }
                for j in 0..down {
                    for i in input_sources(true, j, up, down) {
                        assert!(output_targets(true, i, up, down).contains(&j));
                    }
                }
                assert!(covered.iter().all(|c| *c >= 1), "{up}->{down}: {covered:?}");
            }
        }
        assert_eq!(output_targets(true, 2, 4, 4), 2..3);
        assert_eq!(output_targets(false, 2, 4, 3), 0..3);
    }
}
