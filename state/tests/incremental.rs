//! Incremental checkpoints of the lsm backend: a 1 % change uploads one small delta file,
//! the chain restores exactly, shared files are reference-counted across retained
//! checkpoints, aborted checkpoints' changes reach the next one, and chains compact into a
//! fresh full file once their deltas outgrow the base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rill_state::format::StateFileReader;
use rill_state::shared::{self, CheckpointRetention, SharedStateRegistry};
use rill_state::snapshot::FileKind;
use rill_state::{
    Backend, BackendKind, CheckpointLayout, CheckpointStorage, FsCheckpointStorage, KeyGroupRange,
    KeyedBackendParams, KeyedStateBackend, KeyedStateHandle, SnapshotKind, StateKey,
    SystemTtlClock, ValueState, ValueStateDescriptor,
};

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct Key(u64);

impl StateKey for Key {
    fn stable_hash(&self) -> u64 {
        self.0
    }
}

/// File-system storage that records every file written.
#[derive(Debug)]
struct CountingStorage {
    inner: FsCheckpointStorage,
    writes: Mutex<Vec<(PathBuf, u64)>>,
}

impl CountingStorage {
    fn new(root: &Path) -> Arc<Self> {
        Arc::new(Self {
            inner: FsCheckpointStorage::new(root),
            writes: Mutex::new(Vec::new()),
        })
    }

    fn take_writes(&self) -> Vec<(PathBuf, u64)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl CheckpointStorage for CountingStorage {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> rill_state::Result<()> {
        self.writes
            .lock()
            .unwrap()
            .push((path.to_path_buf(), bytes.len() as u64));
        self.inner.write_file(path, bytes)
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> rill_state::Result<()> {
        self.writes
            .lock()
            .unwrap()
            .push((path.to_path_buf(), bytes.len() as u64));
        self.inner.write_atomic(path, bytes)
    }
    fn read_file(&self, path: &Path) -> rill_state::Result<Vec<u8>> {
        self.inner.read_file(path)
    }
    fn exists(&self, path: &Path) -> rill_state::Result<bool> {
        self.inner.exists(path)
    }
    fn list_dir(&self, path: &Path) -> rill_state::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn delete_file(&self, path: &Path) -> rill_state::Result<()> {
        self.inner.delete_file(path)
    }
    fn delete_dir(&self, path: &Path) -> rill_state::Result<()> {
        self.inner.delete_dir(path)
    }
}

struct Harness {
    _tmp: tempfile::TempDir,
    local: PathBuf,
    storage: Arc<CountingStorage>,
    layout: CheckpointLayout,
    registry: SharedStateRegistry,
    retention: CheckpointRetention,
}

impl Harness {
    fn new(num_retained: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("local");
        let storage = CountingStorage::new(tmp.path());
        let layout = CheckpointLayout::new(tmp.path().join("checkpoints"), "job");
        Self {
            local,
            storage,
            layout,
            registry: SharedStateRegistry::new(),
            retention: CheckpointRetention::new(num_retained),
            _tmp: tmp,
        }
    }

    fn backend(&self, incremental: bool, cache: usize) -> KeyedStateBackend<Key> {
        KeyedStateBackend::new(
            BackendKind::Lsm,
            KeyedBackendParams {
                operator_uid: "sum".into(),
                subtask_index: 0,
                max_parallelism: 128,
                key_group_range: KeyGroupRange::all(128),
                clock: Arc::new(SystemTtlClock),
                local_dir: self.local.clone(),
                incremental,
                lsm_cache_entries: cache,
            },
        )
        .unwrap()
    }

    /// Takes checkpoint `n` (sync + async), then creates its directory as the
    /// coordinator's `_metadata` write would.
    fn checkpoint(&self, b: &mut KeyedStateBackend<Key>, n: u64) -> KeyedStateHandle {
        let target = self
            .layout
            .target(self.storage.clone(), n, SnapshotKind::Checkpoint);
        let h = b.snapshot(target).unwrap().run().unwrap();
        std::fs::create_dir_all(self.layout.checkpoint_dir(n)).unwrap();
        h
    }

    /// The coordinator's side of completing checkpoint `n`: register its files, apply
    /// retention, delete what nobody references.
    fn complete(&mut self, b: &mut KeyedStateBackend<Key>, n: u64, h: &KeyedStateHandle) {
        b.notify_checkpoint_complete(n);
        let dir = self.layout.checkpoint_dir(n);
        let files: Vec<PathBuf> = h.files.iter().map(|f| f.resolve(&dir)).collect();
        self.registry.register(n, &files);
        for old in self.retention.add_completed(n) {
            for f in self.registry.release(old) {
                self.storage.delete_file(&f).unwrap();
            }
            self.storage
                .delete_dir(&self.layout.checkpoint_dir(old))
                .unwrap();
        }
    }

    fn path_of(&self, n: u64, h: &KeyedStateHandle, i: usize) -> PathBuf {
        h.files[i].resolve(&self.layout.checkpoint_dir(n))
    }
}

fn value(i: u64, version: u32) -> String {
    format!("value-{i:08}-{version}-{}", "x".repeat(60))
}

fn state(b: &mut KeyedStateBackend<Key>) -> ValueState<(), String> {
    b.value_state(&ValueStateDescriptor::new("v")).unwrap()
}

fn put(b: &mut KeyedStateBackend<Key>, s: &ValueState<(), String>, k: u64, v: Option<String>) {
    b.value_modify(s, &Key(k), &(), |slot| *slot = v).unwrap();
}

fn contents(b: &mut KeyedStateBackend<Key>, s: &ValueState<(), String>) -> BTreeMap<u64, String> {
    let keys = b.keys(s.id(), &()).unwrap();
    keys.into_iter()
        .map(|k| {
            let v = b.value_get(s, &k, &()).unwrap().unwrap();
            (k.0, v)
        })
        .collect()
}

fn restore(h: &Harness, n: u64, handle: &KeyedStateHandle) -> KeyedStateBackend<Key> {
    let mut b = h.backend(true, 1000);
    b.restore(
        std::slice::from_ref(handle),
        &h.layout.checkpoint_dir(n),
        h.storage.as_ref(),
    )
    .unwrap();
    b
}

fn file_kind(h: &Harness, path: &Path) -> FileKind {
    StateFileReader::open(h.storage.as_ref(), path)
        .unwrap()
        .header()
        .kind
}

#[test]
fn one_percent_change_uploads_one_small_delta_and_restores_exactly() {
    let mut h = Harness::new(1);
    // The cache holds a tenth of the keys: most state lives in fjall.
    let mut b = h.backend(true, 1000);
    let s = state(&mut b);
    let mut model = BTreeMap::new();
    for i in 0..10_000u64 {
        put(&mut b, &s, i, Some(value(i, 0)));
        model.insert(i, value(i, 0));
    }

    let h1 = h.checkpoint(&mut b, 1);
    let w1 = h.storage.take_writes();
    assert_eq!(w1.len(), 1, "checkpoint 1 writes one file: {w1:?}");
    assert_eq!(h1.files.len(), 1);
    assert!(h1.files[0].shared);
    assert!(h1.files[0].path.starts_with("../shared/"));
    assert_eq!(h1.incremental_bytes, w1[0].1);
    assert_eq!(file_kind(&h, &h.path_of(1, &h1, 0)), FileKind::KeyedFull);
    h.complete(&mut b, 1, &h1);

    // 1 %: 50 updates, 50 removals.
    for i in (0..10_000u64).step_by(100) {
        if i % 200 == 0 {
            put(&mut b, &s, i, Some(value(i, 1)));
            model.insert(i, value(i, 1));
        } else {
            put(&mut b, &s, i, None);
            model.remove(&i);
        }
    }
    let h2 = h.checkpoint(&mut b, 2);
    let w2 = h.storage.take_writes();
    assert_eq!(
        w2.len(),
        1,
        "checkpoint 2 uploads only one new file: {w2:?}"
    );
    assert_eq!(h2.files.len(), 2);
    assert_eq!(
        h2.files[0], h1.files[0],
        "the base is referenced, not copied"
    );
    assert_eq!(h2.incremental_bytes, w2[0].1);
    assert_eq!(h2.incremental_bytes, h2.files[1].size);
    assert!(
        h2.incremental_bytes * 20 < h1.incremental_bytes,
        "delta {} B vs base {} B",
        h2.incremental_bytes,
        h1.incremental_bytes
    );
    let delta = StateFileReader::open(h.storage.as_ref(), &h.path_of(2, &h2, 1)).unwrap();
    assert_eq!(delta.header().kind, FileKind::KeyedDelta);
    let entries = delta.entries_in(KeyGroupRange::all(128)).unwrap();
    assert_eq!(entries.len(), 100);
    assert_eq!(entries.iter().filter(|e| e.value.is_none()).count(), 50);

    // num-retained = 1: completing 2 discards 1, whose only file 2 still references.
    h.complete(&mut b, 2, &h2);
    assert!(!h.layout.checkpoint_dir(1).exists());
    assert!(h.path_of(2, &h2, 0).exists(), "the shared base survives");
    assert!(h.path_of(2, &h2, 1).exists());

    let mut r = restore(&h, 2, &h2);
    let rs = state(&mut r);
    assert_eq!(contents(&mut r, &rs), model);
    assert_eq!(contents(&mut b, &s), model);

    // The first checkpoint after a restore is a full file.
    let h3 = h.checkpoint(&mut r, 3);
    assert_eq!(h3.files.len(), 1);
    assert_eq!(file_kind(&h, &h.path_of(3, &h3, 0)), FileKind::KeyedFull);

    // The local working directory goes away with the backend.
    let local = match r.backend_mut() {
        Backend::Lsm(l) => l.local_dir().to_path_buf(),
        Backend::Heap(_) => unreachable!("an lsm backend"),
    };
    assert!(local.exists());
    drop(r);
    assert!(!local.exists(), "{} should be removed", local.display());
}

#[test]
fn releasing_a_checkpoint_deletes_only_unreferenced_files() {
    let mut h = Harness::new(1);
    let mut b = h.backend(true, 100);
    let s = state(&mut b);
    for i in 0..2_000u64 {
        put(&mut b, &s, i, Some(value(i, 0)));
    }
    let h1 = h.checkpoint(&mut b, 1);
    h.complete(&mut b, 1, &h1);
    put(&mut b, &s, 7, Some(value(7, 1)));
    let h2 = h.checkpoint(&mut b, 2);
    h.complete(&mut b, 2, &h2);
    put(&mut b, &s, 8, Some(value(8, 1)));
    let h3 = h.checkpoint(&mut b, 3);
    // Chain of 3 = base + delta of 2 + delta of 3.
    assert_eq!(h3.files.len(), 3);
    assert_eq!(&h3.files[..2], &h2.files[..]);
    h.complete(&mut b, 3, &h3);
    for i in 0..3 {
        assert!(h.path_of(3, &h3, i).exists());
    }
    // Rewrite everything until the deltas outgrow the base: a fresh full file; then
    // the old chain is unreferenced and deleted from disk.
    let old: Vec<PathBuf> = (0..3).map(|i| h.path_of(3, &h3, i)).collect();
    let mut n = 3;
    let last = loop {
        n += 1;
        for i in 0..2_000u64 {
            put(&mut b, &s, i, Some(value(i, n as u32)));
        }
        let hn = h.checkpoint(&mut b, n);
        h.complete(&mut b, n, &hn);
        if hn.files.len() == 1 {
            break hn;
        }
        assert!(n < 10, "never compacted");
    };
    assert_eq!(file_kind(&h, &h.path_of(n, &last, 0)), FileKind::KeyedFull);
    for f in &old {
        assert!(!f.exists(), "{} should be deleted", f.display());
    }
    let shared: Vec<PathBuf> = h.storage.list_dir(&h.layout.shared_dir()).unwrap();
    assert_eq!(shared, vec![shared::normalize(&h.path_of(n, &last, 0))]);
    let mut r = restore(&h, n, &last);
    let rs = state(&mut r);
    assert_eq!(contents(&mut r, &rs).len(), 2_000);
    assert_eq!(
        r.value_get(&rs, &Key(5), &()).unwrap(),
        Some(value(5, n as u32))
    );
}

#[test]
fn aborted_checkpoint_changes_appear_in_the_next_one() {
    let mut h = Harness::new(1);
    let mut b = h.backend(true, 100);
    let s = state(&mut b);
    for i in 0..500u64 {
        put(&mut b, &s, i, Some(value(i, 0)));
    }
    let h1 = h.checkpoint(&mut b, 1);
    h.complete(&mut b, 1, &h1);

    put(&mut b, &s, 1, Some(value(1, 2)));
    let h2 = h.checkpoint(&mut b, 2);
    assert_eq!(h2.files.len(), 2);
    b.notify_checkpoint_aborted(2);

    put(&mut b, &s, 2, None);
    let h3 = h.checkpoint(&mut b, 3);
    assert_eq!(
        h3.files.len(),
        2,
        "3 builds on completed 1, not on aborted 2"
    );
    assert_eq!(h3.files[0], h1.files[0]);
    assert_ne!(h3.files[1], h2.files[1]);
    let delta = StateFileReader::open(h.storage.as_ref(), &h.path_of(3, &h3, 1)).unwrap();
    assert_eq!(delta.entries_in(KeyGroupRange::all(128)).unwrap().len(), 2);
    h.complete(&mut b, 3, &h3);

    let mut r = restore(&h, 3, &h3);
    let rs = state(&mut r);
    assert_eq!(r.value_get(&rs, &Key(1), &()).unwrap(), Some(value(1, 2)));
    assert_eq!(r.value_get(&rs, &Key(2), &()).unwrap(), None);
    assert_eq!(contents(&mut r, &rs).len(), 499);
}

#[test]
fn pending_checkpoints_each_reference_only_the_completed_base() {
    let mut h = Harness::new(2);
    let mut b = h.backend(true, 100);
    let s = state(&mut b);
    for i in 0..300u64 {
        put(&mut b, &s, i, Some(value(i, 0)));
    }
    let h1 = h.checkpoint(&mut b, 1);
    h.complete(&mut b, 1, &h1);
    put(&mut b, &s, 1, Some(value(1, 1)));
    let h2 = h.checkpoint(&mut b, 2);
    put(&mut b, &s, 2, Some(value(2, 1)));
    let h3 = h.checkpoint(&mut b, 3);
    // 3 was taken while 2 was pending: its delta holds both changes.
    assert_eq!(h3.files.len(), 2);
    h.complete(&mut b, 3, &h3);
    b.notify_checkpoint_complete(2); // late and subsumed: ignored
    let _ = h2;
    put(&mut b, &s, 3, Some(value(3, 1)));
    let h4 = h.checkpoint(&mut b, 4);
    assert_eq!(&h4.files[..2], &h3.files[..]);
    let mut r = restore(&h, 4, &h4);
    let rs = state(&mut r);
    for k in 1..=3 {
        assert_eq!(r.value_get(&rs, &Key(k), &()).unwrap(), Some(value(k, 1)));
    }
}

#[test]
fn savepoints_and_non_incremental_checkpoints_are_full_and_exclusive() {
    let mut h = Harness::new(1);
    let mut b = h.backend(false, 100);
    let s = state(&mut b);
    for i in 0..300u64 {
        put(&mut b, &s, i, Some(value(i, 0)));
    }
    for n in 1..=2 {
        let hn = h.checkpoint(&mut b, n);
        assert_eq!(hn.files.len(), 1);
        assert!(!hn.files[0].shared);
        assert!(!hn.files[0].path.contains('/'));
        assert_eq!(file_kind(&h, &h.path_of(n, &hn, 0)), FileKind::KeyedFull);
        h.complete(&mut b, n, &hn);
    }

    let mut inc = h.backend(true, 100);
    let s2 = state(&mut inc);
    put(&mut inc, &s2, 1, Some(value(1, 0)));
    let c = h.checkpoint(&mut inc, 10);
    inc.notify_checkpoint_complete(10);
    put(&mut inc, &s2, 2, Some(value(2, 0)));
    let sp_dir = h.layout.job_dir().join("savepoint-1");
    let target = rill_state::SnapshotTarget {
        storage: h.storage.clone(),
        checkpoint_id: 11,
        kind: SnapshotKind::Savepoint,
        exclusive_dir: sp_dir.clone(),
        shared_dir: h.layout.shared_dir(),
    };
    let sp = inc.snapshot(target).unwrap().run().unwrap();
    assert_eq!(sp.files.len(), 1);
    assert!(!sp.files[0].shared);
    assert!(sp.files[0].resolve(&sp_dir).exists());
    // The savepoint does not become the base: the next checkpoint is a delta on 10 that
    // still contains key 2.
    let c12 = h.checkpoint(&mut inc, 12);
    assert_eq!(c12.files.len(), 2);
    assert_eq!(c12.files[0], c.files[0]);
    let _ = s;
}
