//! Assigning a snapshot's state to the subtasks of a (possibly rescaled) job.
//!
//! Pure functions over [`CheckpointMetadata`] and handles; the only I/O is reading
//! operator-state files, which are small.
//!
//! * **Keyed state** moves in whole key groups: a new subtask owns
//!   [`KeyGroupRange::of_subtask`] and restores from every old handle whose range
//!   overlaps it ([`keyed_handles_for`]); the backend reads only the key groups it owns.
//!   This requires the max parallelism (number of key groups) to be unchanged, which
//!   [`check_restorable`] enforces.
//! * **Operator list state** (Flink's even-split redistribution): the elements of all
//!   old subtasks, concatenated in old subtask order, are cut into `new_parallelism`
//!   contiguous chunks whose sizes differ by at most one; subtask `i` gets chunk `i`.
//! * **Union list state**: every new subtask gets all elements of all old subtasks.
//! * **Broadcast state**: every old subtask holds the same map, so every new subtask
//!   gets a copy of the first old subtask's.
//!
//! [`check_restorable`] runs before any of this, on the JobManager: it refuses a
//! snapshot whose stateful operators are missing from the new job (unless
//! `allow_non_restored`, Flink's `--allowNonRestoredState`) or whose max parallelism
//! changed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::descriptor::{StateKind, StateMeta};
use crate::error::{Result, StateError};
use crate::format::StateFileReader;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{CheckpointMetadata, FileKind, KeyedStateHandle, OperatorSnapshot};
use crate::storage::CheckpointStorage;

/// Encoded elements of one state.
type Encoded = Vec<Vec<u8>>;

/// One operator state as restored for one subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredState {
    /// The state's metadata as written.
    pub meta: StateMeta,
    /// Its encoded elements for this subtask (broadcast: encoded `(key, value)` pairs).
    pub elements: Vec<Vec<u8>>,
}

/// The operator state one new subtask restores, in the order the states were first
/// seen in the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoredOperatorState {
    /// Per state.
    pub states: Vec<RestoredState>,
}

impl RestoredOperatorState {
    /// Whether there is nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// The keyed state handles a subtask owning `range` restores from: those whose key
/// groups overlap it, in old subtask order.
pub fn keyed_handles_for(op: &OperatorSnapshot, range: KeyGroupRange) -> Vec<KeyedStateHandle> {
    op.subtasks
        .iter()
        .filter_map(|s| s.keyed.as_ref())
        .filter(|h| !h.key_group_range.intersect(&range).is_empty())
        .cloned()
        .collect()
}

/// The `[start, end)` of chunk `index` when `len` elements are split into `parts`
/// contiguous chunks whose sizes differ by at most one (the first `len % parts` chunks
/// get one more).
pub fn even_split(len: usize, parts: usize, index: usize) -> (usize, usize) {
    let parts = parts.max(1);
    let (base, rem) = (len / parts, len % parts);
    let start = index * base + index.min(rem);
    let size = if index < rem { base + 1 } else { base };
    let start = start.min(len);
    (start, (start + size).min(len))
}

/// The operator state subtask `subtask` of `new_parallelism` restores from `op`, reading
/// the operator files (relative to `snapshot_dir`) from `storage`. See the module doc
/// for how each kind is redistributed.
pub fn operator_state_for(
    op: &OperatorSnapshot,
    snapshot_dir: &Path,
    storage: &dyn CheckpointStorage,
    new_parallelism: u32,
    subtask: u32,
) -> Result<RestoredOperatorState> {
    if new_parallelism == 0 || subtask >= new_parallelism {
        return Err(StateError::Restore {
            reason: format!(
                "subtask {subtask} of operator `{}` does not exist at parallelism {new_parallelism}",
                op.uid
            ),
        });
    }
    // Per state name (in first-seen order): its meta and, per old subtask, its elements.
    let mut order: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, (StateMeta, Vec<Encoded>)> = BTreeMap::new();
    let mut old: Vec<_> = op.subtasks.iter().collect();
    old.sort_by_key(|s| s.subtask_index);
    for s in old {
        let Some(handle) = &s.operator else { continue };
        let path = handle.file.resolve(snapshot_dir);
        let reader = StateFileReader::open(storage, &path)?;
        if reader.header().kind != FileKind::Operator {
            return Err(StateError::corrupt(
                &path,
                0,
                format!(
                    "expected an operator state file, found {:?}",
                    reader.header().kind
                ),
            ));
        }
        for (state, elements) in reader.operator_states()? {
            // `parse` checked every block's state index against the header.
            let Some(meta) = reader.header().states.get(state as usize) else {
                continue;
            };
            let entry = by_name.entry(meta.name.clone()).or_insert_with(|| {
                order.push(meta.name.clone());
                (meta.clone(), Vec::new())
            });
            if entry.0.kind != meta.kind {
                return Err(StateError::Restore {
                    reason: format!(
                        "operator `{}`: state `{}` is {} in one subtask and {} in another",
                        op.uid,
                        meta.name,
                        entry.0.kind.name(),
                        meta.kind.name()
                    ),
                });
            }
            entry.1.push(elements);
        }
    }
    let mut out = RestoredOperatorState::default();
    for name in order {
        let Some((meta, per_subtask)) = by_name.remove(&name) else {
            continue;
        };
        let elements = match meta.kind {
            StateKind::UnionList => per_subtask.into_iter().flatten().collect(),
            StateKind::Broadcast => per_subtask.into_iter().next().unwrap_or_default(),
            _ => {
                let all: Vec<Vec<u8>> = per_subtask.into_iter().flatten().collect();
                let (start, end) =
                    even_split(all.len(), new_parallelism as usize, subtask as usize);
                all.into_iter().skip(start).take(end - start).collect()
            }
        };
        out.states.push(RestoredState { meta, elements });
    }
    Ok(out)
}

/// Whether an operator snapshot holds any state.
fn has_state(op: &OperatorSnapshot) -> bool {
    op.subtasks
        .iter()
        .any(|s| s.keyed.is_some() || s.operator.is_some() || s.in_flight.is_some())
}

/// Checks that a job whose operators are `job_operators` (`(uid, max parallelism)`)
/// can restore `meta`: every operator with state in the snapshot must be in the job
/// (unless `allow_non_restored`, which drops its state), with the same max parallelism.
/// Operators of the job that are not in the snapshot simply start empty.
pub fn check_restorable<S: AsRef<str>>(
    meta: &CheckpointMetadata,
    job_operators: &[(S, u32)],
    allow_non_restored: bool,
) -> Result<()> {
    for op in meta.operators.iter().filter(|op| has_state(op)) {
        match job_operators.iter().find(|(uid, _)| uid.as_ref() == op.uid) {
            None if allow_non_restored => {
                tracing::warn!(uid = %op.uid, name = %op.name, "dropping state of an operator that is not in the job (allow non-restored state)");
            }
            None => {
                return Err(StateError::Restore {
                    reason: format!(
                        "the snapshot holds state of operator uid `{}` ({}), which is not in the job; \
                         restore with allow-non-restored-state to drop it",
                        op.uid, op.name
                    ),
                })
            }
            Some((_, max)) if *max != op.max_parallelism => {
                return Err(StateError::Restore {
                    reason: format!(
                        "operator uid `{}` ({}) was snapshotted with max parallelism {} but the job has {}; \
                         the max parallelism of a stateful operator cannot change",
                        op.uid, op.name, op.max_parallelism, max
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_tiles_and_balances() {
        for len in 0..20 {
            for parts in 1..6 {
                let mut next = 0;
                for i in 0..parts {
                    let (s, e) = even_split(len, parts, i);
                    assert_eq!(s, next);
                    let size = e - s;
                    assert!(size == len / parts || size == len / parts + 1);
                    next = e;
                }
                assert_eq!(next, len);
            }
        }
    }
}
