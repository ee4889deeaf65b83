//! Helpers shared by rill-state's integration tests: a test key type, a manual TTL
//! clock, backend construction and snapshot/restore round trips.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rill_state::key_group::{key_group_for_hash, DEFAULT_MAX_PARALLELISM};
use rill_state::storage::FsCheckpointStorage;
use rill_state::{
    BackendKind, CheckpointStorage, KeyGroupRange, KeyedBackendParams, KeyedStateBackend,
    KeyedStateHandle, SnapshotKind, SnapshotTarget, StateKey, TtlClock,
};
use serde::{Deserialize, Serialize};

/// Number of key groups in every test.
pub const MAX_PARALLELISM: u32 = DEFAULT_MAX_PARALLELISM;

/// A record key with a stable hash (the integer itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub i64);

impl StateKey for Key {
    fn stable_hash(&self) -> u64 {
        self.0 as u64
    }
}

impl Key {
    /// The key group of this key.
    pub fn key_group(&self) -> u32 {
        key_group_for_hash(self.stable_hash(), MAX_PARALLELISM)
    }
}

/// Processing time that only moves when a test says so.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl TtlClock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a test needs to build backends of one kind and move state between them:
/// a temporary directory for local (lsm) state and checkpoint storage, and a clock.
pub struct Env {
    pub kind: BackendKind,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub storage: Arc<dyn CheckpointStorage>,
    next_checkpoint: std::cell::Cell<u64>,
}

impl Env {
    pub fn new(kind: BackendKind) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = storage_at(&dir.path().join("checkpoints"));
        Self {
            kind,
            dir,
            clock: ManualClock::at(1_000),
            storage,
            next_checkpoint: std::cell::Cell::new(1),
        }
    }

    /// The job directory of this test's checkpoints.
    pub fn job_dir(&self) -> PathBuf {
        self.dir.path().join("checkpoints").join("job")
    }

    /// A backend owning all key groups.
    pub fn backend(&self) -> KeyedStateBackend<Key> {
        self.subtask(0, 1)
    }

    /// The backend of subtask `index` of `parallelism`.
    pub fn subtask(&self, index: u32, parallelism: u32) -> KeyedStateBackend<Key> {
        let params = KeyedBackendParams {
            operator_uid: "conformance-op".into(),
            subtask_index: index,
            max_parallelism: MAX_PARALLELISM,
            key_group_range: KeyGroupRange::of_subtask(index, parallelism, MAX_PARALLELISM),
            clock: self.clock.clone(),
            local_dir: self.dir.path().join("local"),
            incremental: true,
            lsm_cache_entries: 64,
        };
        KeyedStateBackend::new(self.kind, params).expect("create backend")
    }

    /// A fresh checkpoint id with its target.
    pub fn target(&self) -> SnapshotTarget {
        let id = self.next_checkpoint.get();
        self.next_checkpoint.set(id + 1);
        self.target_for(id)
    }

    /// The target of checkpoint `id` (several subtasks write into the same one).
    pub fn target_for(&self, id: u64) -> SnapshotTarget {
        SnapshotTarget {
            storage: self.storage.clone(),
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            exclusive_dir: self.job_dir().join(format!("chk-{id}")),
            shared_dir: self.job_dir().join("shared"),
        }
    }

    /// Snapshots `backend` (sync and async part) into a new checkpoint.
    pub fn snapshot(&self, backend: &mut KeyedStateBackend<Key>) -> Snapshot {
        let target = self.target();
        let dir = target.exclusive_dir.clone();
        let handle = backend
            .snapshot(target)
            .expect("sync snapshot")
            .run()
            .expect("async snapshot");
        Snapshot {
            handles: vec![handle],
            dir,
        }
    }

    /// A new full-range backend restored from `snapshot`.
    pub fn restored(&self, snapshot: &Snapshot) -> KeyedStateBackend<Key> {
        let mut b = self.backend();
        b.restore(&snapshot.handles, &snapshot.dir, self.storage.as_ref())
            .expect("restore");
        b
    }
}

/// The handles of one checkpoint and the directory they are relative to.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub handles: Vec<KeyedStateHandle>,
    pub dir: PathBuf,
}

/// Checkpoint storage on the local file system under `root`.
pub fn storage_at(root: &Path) -> Arc<dyn CheckpointStorage> {
    Arc::new(FsCheckpointStorage::new(root))
}
