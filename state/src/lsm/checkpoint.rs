//! Incremental checkpoints of the lsm backend: which changes a checkpoint must write,
//! which chain of files it references, and writing full and delta files from an fjall
//! read snapshot.
//!
//! # Chains
//!
//! A checkpoint's keyed state is a *chain*: one [`FileKind::KeyedFull`] file, then zero or
//! more [`FileKind::KeyedDelta`] files whose entries (and tombstones) override earlier
//! ones. [`ChainTracker`] is a pure state machine over the checkpoint lifecycle:
//!
//! * Between snapshots, every key written to fjall is recorded in the *current* change
//!   set (by the backend's write-back path).
//! * [`ChainTracker::begin`] (sync part of checkpoint n) closes the current set as
//!   segment n and plans the file: a full file if there is no completed base, or if the
//!   base chain's deltas together have grown to the base's size (compaction into a fresh
//!   full file); otherwise a delta holding the union of *all* segments recorded since the
//!   base, i.e. every change relative to the last **completed** checkpoint. Checkpoint n's
//!   chain is the base chain plus the new delta.
//! * The asynchronous part records n's chain ([`ChainTracker::results`]) once its file is
//!   written.
//! * [`ChainTracker::complete`] (n): n's chain becomes the base; segments up to n are
//!   contained in it and dropped; chains of older pending checkpoints are dropped. A
//!   completion for an id that recorded no chain (a savepoint, a failed upload) changes
//!   nothing.
//! * [`ChainTracker::abort`] (n): n's chain is dropped, its segment stays, so its changes
//!   are in the next delta (the "merge back" of an aborted checkpoint's dirty set is
//!   implicit: segments are only ever dropped by a completion that contains them).
//!
//! Several checkpoints may be pending at once; each one's chain only references files of
//! the completed base and its own new file, so any of them can complete or abort in any
//! order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;

use super::codec;
use crate::error::{Result, StateError};
use crate::format::KeyedFileWriter;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{FileHeader, StateFileRef};

/// Encoded fjall keys changed, tagged with their state index.
///
/// A hash set: recording is on the write-back path of every evicted dirty entry, where a
/// `BTreeSet` of byte strings cost ~1.3 µs per key (memcmp down a deep tree) against
/// ~0.1 µs here. Order never leaks: [`FileJob::write_delta`] sorts the union of the sets,
/// and the hasher is fixed (Fx), so iteration is deterministic anyway.
pub(super) type ChangeSet = hashbrown::HashSet<(usize, Box<[u8]>), FxBuildHasher>;

/// Chains recorded by asynchronous parts, by checkpoint id.
pub(super) type ChainResults = Arc<Mutex<BTreeMap<u64, Vec<StateFileRef>>>>;

/// What the next checkpoint file must be.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// Every live entry; the chain is this file alone.
    Full,
    /// The changes since the base; the chain is `base` plus this file.
    Delta {
        /// The completed base chain.
        base: Vec<StateFileRef>,
        /// Change sets to include (their union).
        changes: Vec<Arc<ChangeSet>>,
    },
}

/// Tracks the completed base chain and the changes since it. See the module docs.
#[derive(Debug, Default)]
pub(super) struct ChainTracker {
    base: Option<Vec<StateFileRef>>,
    segments: Vec<(u64, Arc<ChangeSet>)>,
    current: ChangeSet,
    results: ChainResults,
}

impl ChainTracker {
    /// Records a key written to fjall since the last snapshot.
    pub(super) fn record(&mut self, state: usize, key: Box<[u8]>) {
        self.current.insert((state, key));
    }

    /// Where asynchronous parts record the chains they wrote.
    pub(super) fn results(&self) -> ChainResults {
        self.results.clone()
    }

    /// The sync part of checkpoint `checkpoint_id`: closes the current change set and
    /// plans the file.
    pub(super) fn begin(&mut self, checkpoint_id: u64) -> Plan {
        let segment = Arc::new(std::mem::take(&mut self.current));
        self.segments.push((checkpoint_id, segment));
        match &self.base {
            Some(base) if !needs_compaction(base) => Plan::Delta {
                base: base.clone(),
                changes: self.segments.iter().map(|(_, s)| s.clone()).collect(),
            },
            _ => Plan::Full,
        }
    }

    /// Checkpoint `checkpoint_id` completed.
    pub(super) fn complete(&mut self, checkpoint_id: u64) {
        let mut results = lock(&self.results);
        let Some(chain) = results.remove(&checkpoint_id) else {
            return;
        };
        results.retain(|id, _| *id > checkpoint_id);
        drop(results);
        self.base = Some(chain);
        self.segments.retain(|(id, _)| *id > checkpoint_id);
    }

    /// Checkpoint `checkpoint_id` was aborted.
    pub(super) fn abort(&mut self, checkpoint_id: u64) {
        lock(&self.results).remove(&checkpoint_id);
    }

    /// Forgets the base and every change (after a restore: the next checkpoint is full).
    pub(super) fn reset(&mut self) {
        self.base = None;
        self.segments.clear();
        self.current.clear();
        lock(&self.results).clear();
    }

    /// The completed base chain, if any.
    #[cfg(test)]
    pub(super) fn base(&self) -> Option<&[StateFileRef]> {
        self.base.as_deref()
    }
}

/// Whether a chain's deltas together reached the size of its full file.
fn needs_compaction(chain: &[StateFileRef]) -> bool {
    let Some((full, deltas)) = chain.split_first() else {
        return true;
    };
    deltas.iter().map(|f| f.size).sum::<u64>() >= full.size
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map half-updated (single
    // insert/remove calls), so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One state in a snapshot being written.
pub(super) struct SnapState {
    /// State name.
    pub(super) name: Arc<str>,
    /// TTL in ms, if any.
    pub(super) ttl_ms: Option<i64>,
    /// The fjall read snapshot of its partition.
    pub(super) snapshot: fjall::Snapshot,
}

/// Everything the asynchronous part needs to write one file.
pub(super) struct FileJob {
    /// The file's header (kind decides full or delta).
    pub(super) header: FileHeader,
    /// Per state index of the header.
    pub(super) states: Vec<SnapState>,
    /// Processing time at the sync part (expired entries are left out / tombstoned).
    pub(super) now: i64,
    /// Key groups of the backend.
    pub(super) range: KeyGroupRange,
    /// The backend's local directory (for error messages).
    pub(super) local_dir: PathBuf,
}

fn lsm_err(dir: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Lsm {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

impl FileJob {
    /// A full file: every live entry, by key group then state.
    pub(super) fn write_full(self) -> Result<Vec<u8>> {
        let mut w = KeyedFileWriter::new(self.header);
        for kg in self.range.iter() {
            let prefix = codec::key_group_prefix(kg);
            for (i, st) in self.states.iter().enumerate() {
                for kv in st.snapshot.prefix(prefix) {
                    let (k, v) = kv.map_err(|e| lsm_err(&self.local_dir, e))?;
                    let parts = codec::split_key(&st.name, &k)?;
                    let (ts, value) = codec::split_value(&st.name, &v)?;
                    if codec::is_expired(st.ttl_ms, ts, self.now) {
                        continue;
                    }
                    w.push(i as u32, kg, parts.key, parts.namespace, ts, Some(value))?;
                }
            }
        }
        Ok(w.finish())
    }

    /// A delta file: the current value (or a tombstone) of every changed key.
    pub(super) fn write_delta(self, changes: &[Arc<ChangeSet>]) -> Result<Vec<u8>> {
        let mut keys: Vec<(u32, usize, &[u8])> = Vec::new();
        for set in changes {
            for (state, key) in set.iter() {
                let kg = match key.get(0..2) {
                    Some(b) => u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => continue,
                };
                keys.push((kg, *state, key));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut w = KeyedFileWriter::new(self.header);
        for (kg, state, key) in keys {
            let Some(st) = self.states.get(state) else {
                continue;
            };
            if !self.range.contains(kg) {
                continue;
            }
            let parts = codec::split_key(&st.name, key)?;
            let stored = st
                .snapshot
                .get(key)
                .map_err(|e| lsm_err(&self.local_dir, e))?;
            match stored {
                Some(v) => {
                    let (ts, value) = codec::split_value(&st.name, &v)?;
                    let value = (!codec::is_expired(st.ttl_ms, ts, self.now)).then_some(value);
                    w.push(state as u32, kg, parts.key, parts.namespace, ts, value)?;
                }
                None => w.push(state as u32, kg, parts.key, parts.namespace, 0, None)?,
            }
        }
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn file(name: &str, size: u64) -> StateFileRef {
        StateFileRef {
            path: format!("../shared/{name}"),
            size,
            shared: true,
        }
    }

    fn key(b: u8) -> Box<[u8]> {
        vec![0, 0, b].into_boxed_slice()
    }

    fn changes(plan: &Plan) -> BTreeSet<(usize, Box<[u8]>)> {
        match plan {
            Plan::Full => BTreeSet::new(),
            Plan::Delta { changes, .. } => changes.iter().flat_map(|s| s.iter().cloned()).collect(),
        }
    }

    #[test]
    fn first_checkpoint_is_full_then_deltas_relative_to_completed() {
        let mut t = ChainTracker::default();
        t.record(0, key(1));
        assert!(matches!(t.begin(1), Plan::Full));
        lock(&t.results).insert(1, vec![file("full1", 1000)]);
        t.complete(1);
        assert_eq!(t.base().map(|b| b.len()), Some(1));

        t.record(0, key(2));
        let p2 = t.begin(2);
        assert_eq!(changes(&p2).len(), 1);
        lock(&t.results).insert(2, vec![file("full1", 1000), file("d2", 10)]);
        // 2 is aborted: its change must be in 3's delta.
        t.abort(2);
        t.record(0, key(3));
        let p3 = t.begin(3);
        assert_eq!(changes(&p3).len(), 2);
        match &p3 {
            Plan::Delta { base, .. } => assert_eq!(base, &vec![file("full1", 1000)]),
            Plan::Full => panic!("expected a delta"),
        }
        lock(&t.results).insert(3, vec![file("full1", 1000), file("d3", 20)]);
        t.complete(3);
        t.record(0, key(4));
        assert_eq!(changes(&t.begin(4)).len(), 1);
    }

    #[test]
    fn concurrent_pending_checkpoints_and_unknown_completions() {
        let mut t = ChainTracker::default();
        t.begin(1);
        lock(&t.results).insert(1, vec![file("f1", 100)]);
        t.complete(1);
        t.record(1, key(1));
        t.begin(2);
        lock(&t.results).insert(2, vec![file("f1", 100), file("d2", 5)]);
        t.record(1, key(2));
        t.begin(3);
        lock(&t.results).insert(3, vec![file("f1", 100), file("d3", 6)]);
        // A savepoint id completing changes nothing.
        t.complete(99);
        assert_eq!(t.base().map(|b| b.len()), Some(1));
        t.complete(3);
        assert_eq!(t.base().unwrap()[1].path, "../shared/d3");
        // 2 is subsumed by 3; completing it later is a no-op.
        t.complete(2);
        assert_eq!(t.base().unwrap()[1].path, "../shared/d3");
        assert!(changes(&t.begin(4)).is_empty());
    }

    #[test]
    fn compacts_when_deltas_reach_the_base_size() {
        let mut t = ChainTracker::default();
        t.begin(1);
        lock(&t.results).insert(1, vec![file("f1", 100), file("d", 60), file("e", 40)]);
        t.complete(1);
        assert!(matches!(t.begin(2), Plan::Full));
        t.reset();
        assert!(t.base().is_none());
        assert!(matches!(t.begin(3), Plan::Full));
    }
}
