//! The lsm backend: keyed state in an embedded LSM store ([fjall]) on local disk, with a
//! write-back cache in front and incremental checkpoints.
//!
//! # Storage layout
//!
//! Each backend opens one fjall keyspace in a fresh subdirectory of
//! [`KeyedBackendParams::local_dir`] (`lsm-<uid>-<subtask>-<nonce>`), removed when the
//! backend is dropped: local state is a cache of the last checkpoint plus what happened
//! since, never the source of truth, so the journal is not fsynced. Dropping the backend
//! waits for fjall's background threads to stop (up to ~250 ms: its monitor thread
//! polls at that interval). Every state
//! (registered or restored) gets its own partition `s<index>`, so a state is one key
//! space and per-state scans need no state prefix. Keys and values are laid out as in
//! `codec`: `[key group u16 BE][len(key) u32 BE][key][namespace]` →
//! `[timestamp i64 BE][value]`, all MessagePack (`rmp_serde::to_vec_named`), so a key group
//! is one contiguous range and a (key group, key) prefix scan works.
//!
//! # The write-back cache (the per-record path)
//!
//! Decoding MessagePack and going through the LSM on every record would cost a few
//! microseconds; a keyed aggregation touches a small hot set of keys again and again. So
//! the backend keeps up to [`KeyedBackendParams::lsm_cache_entries`] *decoded* entries in
//! typed hash maps (`cache`), looked up by borrowed key and namespace without encoding
//! or cloning. A hit is a hash lookup plus the closure: memory speed. A miss encodes the
//! key once, reads fjall, decodes the value and caches it (absent entries are cached as
//! negative entries too). Modified entries are *dirty* and reach fjall only when evicted
//! (approximate LRU in batches of at least 1/8 of the capacity, one fjall batch per
//! eviction round), before a snapshot, or before a scan. This plays the role of RocksDB's
//! block cache (reads) and Flink SQL's mini-batch (writes folded in memory) at once.
//! State larger than the cache simply lives in fjall.
//!
//! # The miss path and its tuning
//!
//! When the working set exceeds the cache, every access is a miss: one fjall point read
//! (memtable skiplist, then bloom-filtered segments), and once per eviction round a batch
//! that writes the evicted dirty entries back (a memtable insert each) and records their
//! keys for the next incremental checkpoint. Measured on 1M integer keys in random order,
//! a read-modify-write per op, 65,536 cache entries (no hits at all), 2-core machine:
//!
//! * the first 3M ops: 8.4 µs/op before; 7.1 with the tracker's change set a hash set
//!   (a `BTreeSet` of byte strings cost ~1.3 µs per recorded key); ~6 with a 1 MiB
//!   memtable and 8 KiB data blocks (see `partition_options`);
//! * `state_bench --only ops` (20M ops): still 0.09 M ops/s (≈11 µs/op). That is fjall's
//!   own cost of reading keys that exist: a standalone fjall 2.11 program with the same
//!   pattern (1M 12-byte keys, point read + batched write-back, no rill code) takes
//!   2.5–4 µs/op while keys are new and ~10 µs/op once all exist — memtable skiplists,
//!   whole-block decoding on block-cache misses, compaction. fjall 3.1 took ~15 µs/op in
//!   the same program, and a 256 MiB block cache helped only the first million ops.
//!
//! A larger block cache, a smaller write buffer and different bloom settings changed
//! nothing measurable. The hot-key case (1000 keys, all cached: ≈65 M ops/s) never
//! reaches fjall.
//!
//! # Types
//!
//! States are registered with their [`StateMeta`] (type names, recorded in snapshots) and
//! the [`TypeId`] of `(namespace, stored type)`. An access with other types fails the
//! downcast of the typed cache and returns [`StateError::IncompatibleState`]; bytes that
//! do not decode with the registered type return [`StateError::Deserialize`] naming the
//! state. Restored states are held as bytes until registered and are typed then.
//!
//! # TTL
//!
//! One timestamp per (key, namespace), from [`KeyedBackendParams::clock`] and only read
//! when the state has a TTL. An expired entry is never returned: a cached one is turned
//! into a pending delete on access, a dirty expired one is written back as a delete, full
//! snapshots leave expired entries out and deltas write them as tombstones.
//! [`cleanup_expired`](KeyedStore::cleanup_expired) first writes back dirty entries, then
//! scans each TTL state's partition from a per-state cursor, deleting expired entries
//! until `budget` deletions (examining at most 16× the budget, at least 4096 entries, per
//! call), and resumes there on the next call. Clean cached copies of entries it deletes
//! are expired themselves and are dropped on their next access.
//!
//! # Snapshots
//!
//! The synchronous part writes back every dirty entry, takes an fjall read snapshot
//! (MVCC: a sequence number, no copy) of every partition and — for an incremental
//! checkpoint — plans the file with `checkpoint::ChainTracker`. Writes happen only on
//! the task thread through `&mut self`, so the partitions' snapshots, taken one after the
//! other, are one consistent view. The asynchronous part writes one file:
//!
//! * savepoints and non-incremental checkpoints: a [`FileKind::KeyedFull`] file in
//!   `target.exclusive_dir`, not shared;
//! * incremental checkpoints: a full file into `target.shared_dir` if there is no
//!   completed base (or the base chain's deltas reached the base's size: compaction), else
//!   a [`FileKind::KeyedDelta`] file of the changed keys' current values and tombstones;
//!   the handle lists the whole chain (base first, all `shared`, paths relative to
//!   `exclusive_dir`: `../shared/<name>`) and `incremental_bytes` is the new file's size.
//!
//! File names are `<uid>-<subtask>-<nonce>-<checkpoint>-<seq>.{full,delta}`: the nonce
//! (process id, wall-clock nanoseconds and a counter, mixed; used for naming only) keeps
//! backends of different attempts from overwriting each other's shared files.
//!
//! # Restore
//!
//! Every handle's files are applied in order, only the key groups of this backend's range
//! ([`StateFileReader::entries_in`]), tombstones deleting, straight into fjall as bytes.
//! A restored backend does not know which files the coordinator still retains, so the
//! first checkpoint after a restore is a full file (the tracker is reset).

mod cache;
mod checkpoint;
mod codec;

use std::any::TypeId;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cache::{ErasedCache, Lookup, PendingWrite, Slot, TypedCache, WriteBack};
use checkpoint::{ChainTracker, FileJob, Plan, SnapState};

use crate::descriptor::{StateMeta, TtlUpdateType};
use crate::error::{Result, StateError};
use crate::format::{self, StateFileReader};
use crate::key_group::{murmur_fmix, KeyGroupRange};
use crate::keyed::{
    AsyncSnapshot, BackendKind, KeyedBackendParams, KeyedStore, Namespace, StateData, StateId,
    StateKey, TtlClock,
};
use crate::snapshot::{
    FileHeader, FileKind, KeyedStateHandle, SnapshotKind, SnapshotTarget, StateFileRef,
};
use crate::storage::CheckpointStorage;

/// Counters of the lsm backend's cache and store traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmStats {
    /// Accesses answered by the cache.
    pub cache_hits: u64,
    /// Accesses that read fjall.
    pub cache_misses: u64,
    /// Entries evicted from the cache.
    pub evicted: u64,
    /// Entries written (or deleted) in fjall by write-back, cleanup and restore.
    pub store_writes: u64,
}

/// One registered or restored state.
struct StateSlot {
    meta: StateMeta,
    name: Arc<str>,
    /// `TypeId` of `(N, S)` once registered; `None` while only restored.
    types: Option<TypeId>,
    /// `TypeId` of `N` once registered (checked by whole-state calls).
    ns_type: Option<TypeId>,
    ttl_ms: Option<i64>,
    refresh_on_read: bool,
    partition: fjall::PartitionHandle,
    cache: Option<Box<dyn ErasedCache>>,
    /// Where incremental TTL cleanup resumes.
    cleanup_cursor: Option<Box<[u8]>>,
}

impl StateSlot {
    fn describe(&self) -> String {
        describe(&self.meta)
    }
}

fn describe(m: &StateMeta) -> String {
    let uk = if m.user_key_type.is_empty() {
        String::new()
    } else {
        format!("{} → ", m.user_key_type)
    };
    format!(
        "{} of {uk}{} (key {}, namespace {})",
        m.kind.name(),
        m.value_type,
        m.key_type,
        m.namespace_type
    )
}

/// Keyed state in an embedded LSM store (fjall). See the module docs.
pub struct LsmKeyedStateBackend<K: StateKey> {
    // Hot fields first, inline; the rest behind `cold`.
    states: Vec<StateSlot>,
    /// Global access counter (eviction order).
    tick: u64,
    /// Entries in all caches.
    cached: usize,
    capacity: usize,
    clock: Arc<dyn TtlClock>,
    range: KeyGroupRange,
    incremental: bool,
    stats: LsmStats,
    cold: Box<Cold>,
    _k: PhantomData<fn() -> K>,
}

/// The parts of the backend that the per-record path does not touch.
struct Cold {
    operator_uid: String,
    subtask_index: u32,
    max_parallelism: u32,
    dir: PathBuf,
    keyspace: fjall::Keyspace,
    by_name: BTreeMap<String, usize>,
    tick_buf: Vec<u64>,
    tracker: ChainTracker,
    nonce: String,
    file_seq: u64,
    /// State index where the next TTL cleanup starts.
    cleanup_state: usize,
}

impl<K: StateKey> std::fmt::Debug for LsmKeyedStateBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmKeyedStateBackend")
            .field("operator_uid", &self.cold.operator_uid)
            .field("subtask_index", &self.cold.subtask_index)
            .field("range", &self.range)
            .field("dir", &self.cold.dir)
            .field("states", &self.states.len())
            .field("cached", &self.cached)
            .finish()
    }
}

fn instance_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", murmur_fmix(nanos ^ murmur_fmix(seed)))
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if out.is_empty() {
        out.push_str("op");
    }
    out
}

/// The path of shared file `name` relative to `exclusive_dir` (`../shared/<name>` in the
/// standard layout; absolute if the two directories are not siblings).
fn shared_ref_path(exclusive_dir: &Path, shared_dir: &Path, name: &str) -> String {
    match (
        exclusive_dir.parent(),
        shared_dir.parent(),
        shared_dir.file_name(),
    ) {
        (Some(a), Some(b), Some(dir_name)) if a == b => {
            format!("../{}/{name}", dir_name.to_string_lossy())
        }
        _ => shared_dir.join(name).to_string_lossy().into_owned(),
    }
}

impl<K: StateKey> LsmKeyedStateBackend<K> {
    /// Opens a new, empty backend in a fresh subdirectory of `params.local_dir`.
    pub fn new(params: KeyedBackendParams) -> Result<Self> {
        let nonce = instance_nonce();
        let dir = params.local_dir.join(format!(
            "lsm-{}-{}-{nonce}",
            sanitize(&params.operator_uid),
            params.subtask_index
        ));
        let keyspace = fjall::Config::new(&dir)
            .temporary(true)
            .manual_journal_persist(true)
            .flush_workers(1)
            .compaction_workers(1)
            .open()
            .map_err(|e| StateError::Lsm {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            states: Vec::new(),
            tick: 0,
            cached: 0,
            capacity: params.lsm_cache_entries,
            clock: params.clock,
            range: params.key_group_range,
            incremental: params.incremental,
            stats: LsmStats::default(),
            cold: Box::new(Cold {
                operator_uid: params.operator_uid,
                subtask_index: params.subtask_index,
                max_parallelism: params.max_parallelism,
                dir,
                keyspace,
                by_name: BTreeMap::new(),
                tick_buf: Vec::new(),
                tracker: ChainTracker::default(),
                nonce,
                file_seq: 0,
                cleanup_state: 0,
            }),
            _k: PhantomData,
        })
    }

    /// The local working directory (removed on drop).
    pub fn local_dir(&self) -> &Path {
        &self.cold.dir
    }

    /// Cache and store counters.
    pub fn stats(&self) -> LsmStats {
        self.stats
    }

    /// Entries currently held in the cache.
    pub fn cached_entries(&self) -> usize {
        self.cached
    }

    /// Writes every dirty cached entry to fjall (entries stay cached, clean).
    pub fn flush(&mut self) -> Result<()> {
        let now = self.clock.now_ms();
        self.write_back(u64::MAX, now, false, None).map(|_| ())
    }

    fn lsm_err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Lsm {
            path: self.cold.dir.clone(),
            reason: e.to_string(),
        }
    }

    fn slot_index(&self, id: StateId) -> Result<usize> {
        let i = id.0 as usize;
        if i < self.states.len() {
            Ok(i)
        } else {
            Err(StateError::IncompatibleState {
                name: format!("#{}", id.0),
                existing: "no state".into(),
                requested: format!("state #{}", id.0),
            })
        }
    }

    /// Adds a state slot with a new partition.
    fn add_state(&mut self, meta: StateMeta) -> Result<usize> {
        let index = self.states.len();
        let partition = self
            .cold
            .keyspace
            .open_partition(&format!("s{index}"), partition_options())
            .map_err(|e| self.lsm_err(e))?;
        let (ttl_ms, refresh_on_read) = ttl_of(&meta);
        self.cold.by_name.insert(meta.name.clone(), index);
        self.states.push(StateSlot {
            name: meta.name.as_str().into(),
            meta,
            types: None,
            ns_type: None,
            ttl_ms,
            refresh_on_read,
            partition,
            cache: None,
            cleanup_cursor: None,
        });
        Ok(index)
    }

    /// Collects dirty entries (of state `only`, or all) with `tick <= max_tick`, writes
    /// them to fjall in one batch, then evicts or marks them clean. Returns how many dirty
    /// live entries were expired (written as deletes).
    fn write_back(
        &mut self,
        max_tick: u64,
        now: i64,
        evict: bool,
        only: Option<usize>,
    ) -> Result<usize> {
        let mut wb = WriteBack::default();
        for (i, s) in self.states.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            if let Some(c) = &s.cache {
                c.write_back(i, max_tick, now, &mut wb)?;
            }
        }
        self.commit(wb.writes)?;
        for (i, s) in self.states.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            if let Some(c) = &mut s.cache {
                let n = c.settle(max_tick, now, evict);
                self.cached -= n;
                self.stats.evicted += n as u64;
            }
        }
        Ok(wb.expired)
    }

    /// Applies writes to fjall atomically and records them for the next delta.
    fn commit(&mut self, writes: Vec<PendingWrite>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = self.cold.keyspace.batch();
        for (i, key, value) in &writes {
            let p = &self.states[*i].partition;
            match value {
                Some(v) => batch.insert(p, &**key, v.as_slice()),
                None => batch.remove(p, &**key),
            }
        }
        batch.commit().map_err(|e| self.lsm_err(e))?;
        self.stats.store_writes += writes.len() as u64;
        if self.incremental {
            for (i, key, _) in writes {
                self.cold.tracker.record(i, key);
            }
        }
        Ok(())
    }

    /// Evicts a batch of least recently used entries if the cache is over capacity.
    fn maybe_evict(&mut self) -> Result<()> {
        if self.cached <= self.capacity {
            return Ok(());
        }
        self.cold.tick_buf.clear();
        for s in &self.states {
            if let Some(c) = &s.cache {
                c.collect_ticks(&mut self.cold.tick_buf);
            }
        }
        if self.cold.tick_buf.is_empty() {
            self.cached = 0;
            return Ok(());
        }
        let k = (self.cached - self.capacity)
            .max(self.capacity / 8)
            .clamp(1, self.cold.tick_buf.len());
        let (_, threshold, _) = self.cold.tick_buf.select_nth_unstable(k - 1);
        let threshold = *threshold;
        let now = self.clock.now_ms();
        self.write_back(threshold, now, true, None)?;
        Ok(())
    }

    /// The shared access path of `get` (`write = false`) and `modify`.
    fn access<N: Namespace, S: StateData, R>(
        &mut self,
        id: StateId,
        key_group: u32,
        key: &K,
        namespace: &N,
        write: bool,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        let i = self.slot_index(id)?;
        self.tick += 1;
        let tick = self.tick;
        let st = &mut self.states[i];
        let ttl = st.ttl_ms;
        let now = if ttl.is_some() {
            self.clock.now_ms()
        } else {
            0
        };
        let refresh = st.refresh_on_read;
        let cache = match st
            .cache
            .as_mut()
            .and_then(|c| c.as_any_mut().downcast_mut::<TypedCache<K, N, S>>())
        {
            Some(c) => c,
            None => return Err(incompatible::<K, N, S>(st)),
        };
        if let Some(slot) = cache.map.get_mut(&Lookup(key, namespace)) {
            self.stats.cache_hits += 1;
            return Ok(apply(slot, ttl, now, tick, write, refresh, f));
        }
        self.stats.cache_misses += 1;
        let enc = codec::encode_key(&cache.name, key_group, key, namespace)?;
        let stored = st.partition.get(&enc).map_err(|e| StateError::Lsm {
            path: self.cold.dir.clone(),
            reason: e.to_string(),
        })?;
        let (value, ts) = match stored {
            Some(bytes) => {
                let (ts, v) = codec::decode_value::<S>(&cache.name, &bytes)?;
                (Some(v), ts)
            }
            None => (None, 0),
        };
        let mut slot = Slot {
            value,
            ts,
            tick,
            dirty: false,
            enc: enc.into_boxed_slice(),
        };
        let r = apply(&mut slot, ttl, now, tick, write, refresh, f);
        cache.map.insert((key.clone(), namespace.clone()), slot);
        self.cached += 1;
        self.maybe_evict()?;
        Ok(r)
    }

    /// Maps the states of a file header to local state indexes, creating restored ones.
    fn map_states(&mut self, header: &FileHeader) -> Result<Vec<usize>> {
        let mut map = Vec::with_capacity(header.states.len());
        for meta in &header.states {
            let i = match self.cold.by_name.get(&meta.name) {
                Some(&i) => {
                    let existing = &self.states[i].meta;
                    if existing.kind != meta.kind {
                        return Err(StateError::IncompatibleState {
                            name: meta.name.clone(),
                            existing: describe(existing),
                            requested: describe(meta),
                        });
                    }
                    i
                }
                None => {
                    if !meta.kind.is_keyed() {
                        return Err(StateError::Restore {
                            reason: format!(
                                "state `{}` in a keyed state file is of kind {}",
                                meta.name,
                                meta.kind.name()
                            ),
                        });
                    }
                    self.add_state(meta.clone())?
                }
            };
            map.push(i);
        }
        Ok(map)
    }

    fn restore_file(&mut self, path: &Path, storage: &dyn CheckpointStorage) -> Result<()> {
        let reader = StateFileReader::open(storage, path)?;
        let header = reader.header();
        if header.max_parallelism != self.cold.max_parallelism {
            return Err(StateError::Restore {
                reason: format!(
                    "{} was written with max parallelism {}, this job has {}",
                    path.display(),
                    header.max_parallelism,
                    self.cold.max_parallelism
                ),
            });
        }
        if !matches!(header.kind, FileKind::KeyedFull | FileKind::KeyedDelta) {
            return Err(StateError::Restore {
                reason: format!("{} is not a keyed state file", path.display()),
            });
        }
        let map = self.map_states(header)?;
        let entries = reader.entries_in(self.range)?;
        let mut writes = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(&i) = map.get(e.state as usize) else {
                return Err(StateError::corrupt(
                    path,
                    0,
                    format!("entry of unknown state index {}", e.state),
                ));
            };
            let key = codec::raw_key(&self.states[i].name, e.key_group, &e.key, &e.namespace)?;
            let value = e.value.map(|v| codec::raw_value(e.timestamp, &v));
            writes.push((i, key.into_boxed_slice(), value));
        }
        self.commit(writes)
    }

    fn next_file_name(&mut self, checkpoint_id: u64, kind: FileKind) -> String {
        self.cold.file_seq += 1;
        let ext = if kind == FileKind::KeyedDelta {
            "delta"
        } else {
            "full"
        };
        format!(
            "{}-{}-{}-{checkpoint_id}-{}.{ext}",
            sanitize(&self.cold.operator_uid),
            self.cold.subtask_index,
            self.cold.nonce,
            self.cold.file_seq
        )
    }
}

/// Partition options, measured on the miss path (1M keys in random order, 64 Ki cache
/// entries, so every access reads fjall and writes one evicted entry back):
///
/// * a 1 MiB memtable (fjall's default is 16 MiB): every point read and every write-back
///   walks the memtable's skiplist first, and a small one stays in the CPU caches
///   (16 MiB: 9.2 µs/op, 4 MiB: 8.5, 1 MiB: 7.6 with 4 KiB blocks);
/// * 8 KiB data blocks (default 4 KiB): fewer index entries and block-cache lookups per
///   read (1 KiB: 7.6 µs/op, 4 KiB: 6.4, 8 KiB: 5.8, 32 KiB: 6.4, 64 KiB: 7.1).
///
/// fjall's 32 MiB block cache is kept: 64–128 MiB per backend bought ≤ 3 %, because
/// compaction keeps rewriting segments and cached blocks of replaced segments are dead.
/// Bloom filters are fjall's default (10 bits per key).
fn partition_options() -> fjall::PartitionCreateOptions {
    fjall::PartitionCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .block_size(DATA_BLOCK_BYTES)
}

const MEMTABLE_BYTES: u32 = 1 << 20;
const DATA_BLOCK_BYTES: u32 = 8 << 10;

fn ttl_of(meta: &StateMeta) -> (Option<i64>, bool) {
    match meta.ttl {
        Some(t) => (
            Some(t.ttl_ms()),
            t.update_type == TtlUpdateType::OnReadAndWrite,
        ),
        None => (None, false),
    }
}

fn incompatible<K, N, S>(st: &StateSlot) -> StateError {
    StateError::IncompatibleState {
        name: st.meta.name.clone(),
        existing: if st.types.is_some() {
            st.describe()
        } else {
            format!("{} (restored, not registered yet)", st.describe())
        },
        requested: format!(
            "stored type {} (key {}, namespace {})",
            std::any::type_name::<S>(),
            std::any::type_name::<K>(),
            std::any::type_name::<N>()
        ),
    }
}

/// Runs `f` on a cached slot, applying TTL expiry and stamping.
#[inline]
fn apply<S, R>(
    slot: &mut Slot<S>,
    ttl: Option<i64>,
    now: i64,
    tick: u64,
    write: bool,
    refresh_on_read: bool,
    f: impl FnOnce(&mut Option<S>) -> R,
) -> R {
    slot.tick = tick;
    if slot.value.is_some() && codec::is_expired(ttl, slot.ts, now) {
        slot.value = None;
        slot.dirty = true;
    }
    let had = slot.value.is_some();
    let r = f(&mut slot.value);
    if write {
        slot.dirty = true;
        if slot.value.is_some() && ttl.is_some() {
            slot.ts = now;
        }
    } else if had && refresh_on_read && ttl.is_some() {
        slot.ts = now;
        slot.dirty = true;
    }
    r
}

impl<K: StateKey> KeyedStore<K> for LsmKeyedStateBackend<K> {
    fn register<N: Namespace, S: StateData>(&mut self, meta: StateMeta) -> Result<StateId> {
        let types = TypeId::of::<(N, S)>();
        let i = match self.cold.by_name.get(&meta.name) {
            Some(&i) => {
                let st = &self.states[i];
                let same_kind = st.meta.kind == meta.kind;
                match st.types {
                    Some(t) if t == types && same_kind => return Ok(StateId(i as u32)),
                    None if same_kind => i,
                    _ => {
                        return Err(StateError::IncompatibleState {
                            name: meta.name.clone(),
                            existing: st.describe(),
                            requested: describe(&meta),
                        })
                    }
                }
            }
            None => self.add_state(meta.clone())?,
        };
        let (ttl_ms, refresh_on_read) = ttl_of(&meta);
        let st = &mut self.states[i];
        st.name = meta.name.as_str().into();
        st.meta = meta;
        st.ttl_ms = ttl_ms;
        st.refresh_on_read = refresh_on_read;
        st.types = Some(types);
        st.ns_type = Some(TypeId::of::<N>());
        st.cache = Some(Box::new(TypedCache::<K, N, S>::new(
            st.name.clone(),
            ttl_ms,
        )));
        Ok(StateId(i as u32))
    }

    fn get<N: Namespace, S: StateData>(
        &mut self,
        id: StateId,
        key_group: u32,
        _key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<Option<S>> {
        self.access::<N, S, _>(id, key_group, key, namespace, false, |v| v.clone())
    }

    fn modify<N: Namespace, S: StateData, R>(
        &mut self,
        id: StateId,
        key_group: u32,
        _key_hash: u64,
        key: &K,
        namespace: &N,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        self.access::<N, S, R>(id, key_group, key, namespace, true, f)
    }

    fn remove<N: Namespace>(
        &mut self,
        id: StateId,
        key_group: u32,
        _key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<()> {
        let i = self.slot_index(id)?;
        self.tick += 1;
        let tick = self.tick;
        let st = &mut self.states[i];
        if let Some(c) = &mut st.cache {
            match c.mark_removed(key, namespace, tick) {
                Some(true) => return Ok(()),
                Some(false) => {}
                None => return Err(incompatible::<K, N, ()>(st)),
            }
        }
        let enc = codec::encode_key(&st.name, key_group, key, namespace)?;
        self.commit(vec![(i, enc.into_boxed_slice(), None)])
    }

    fn entries_keys<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>> {
        let i = self.slot_index(id)?;
        let st = &self.states[i];
        if st.ns_type.is_some_and(|t| t != TypeId::of::<N>()) {
            return Err(incompatible::<K, N, ()>(st));
        }
        let now = self.clock.now_ms();
        self.write_back(u64::MAX, now, false, Some(i))?;
        let st = &self.states[i];
        let mut out = Vec::new();
        for kv in st.partition.iter() {
            let (k, v) = kv.map_err(|e| self.lsm_err(e))?;
            let (ts, _) = codec::split_value(&st.name, &v)?;
            if codec::is_expired(st.ttl_ms, ts, now) {
                continue;
            }
            let parts = codec::split_key(&st.name, &k)?;
            let key: K = format::decode(&st.name, parts.key)?;
            let ns: N = format::decode(&st.name, parts.namespace)?;
            out.push((key, ns));
        }
        out.sort();
        Ok(out)
    }

    fn entry_counts(&mut self, id: StateId) -> Result<Vec<(u32, u64)>> {
        let i = self.slot_index(id)?;
        let now = self.clock.now_ms();
        self.write_back(u64::MAX, now, false, Some(i))?;
        let st = &self.states[i];
        let mut out = Vec::new();
        for kg in self.range.iter() {
            let mut n = 0u64;
            for kv in st.partition.prefix(codec::key_group_prefix(kg)) {
                let (_, v) = kv.map_err(|e| self.lsm_err(e))?;
                let (ts, _) = codec::split_value(&st.name, &v)?;
                if !codec::is_expired(st.ttl_ms, ts, now) {
                    n += 1;
                }
            }
            if n > 0 {
                out.push((kg, n));
            }
        }
        Ok(out)
    }

    fn cleanup_expired(&mut self, budget: usize) -> Result<usize> {
        if budget == 0 || self.states.iter().all(|s| s.ttl_ms.is_none()) {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let mut removed = 0usize;
        for i in 0..self.states.len() {
            if self.states[i].ttl_ms.is_some() {
                removed += self.write_back(u64::MAX, now, false, Some(i))?;
            }
        }
        let max_examined = budget.saturating_mul(16).max(4096);
        let mut examined = 0usize;
        let n = self.states.len();
        for step in 0..n {
            if removed >= budget || examined >= max_examined {
                break;
            }
            let i = (self.cold.cleanup_state + step) % n;
            let st = &self.states[i];
            let Some(ttl) = st.ttl_ms else { continue };
            let start = match &st.cleanup_cursor {
                Some(c) => Bound::Excluded(c.to_vec()),
                None => Bound::Unbounded,
            };
            let mut deletes = Vec::new();
            let mut cursor = None;
            let mut finished = true;
            for kv in st.partition.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
                if removed + deletes.len() >= budget || examined >= max_examined {
                    finished = false;
                    break;
                }
                let (k, v) = kv.map_err(|e| StateError::Lsm {
                    path: self.cold.dir.clone(),
                    reason: e.to_string(),
                })?;
                examined += 1;
                let (ts, _) = codec::split_value(&st.name, &v)?;
                if codec::is_expired(Some(ttl), ts, now) {
                    deletes.push((i, Box::<[u8]>::from(&*k), None));
                }
                cursor = Some(Box::<[u8]>::from(&*k));
            }
            removed += deletes.len();
            self.commit(deletes)?;
            let st = &mut self.states[i];
            if finished {
                st.cleanup_cursor = None;
                self.cold.cleanup_state = (i + 1) % n;
            } else {
                st.cleanup_cursor = cursor.or(st.cleanup_cursor.take());
                self.cold.cleanup_state = i;
            }
        }
        Ok(removed)
    }

    fn snapshot(&mut self, target: SnapshotTarget) -> Result<AsyncSnapshot> {
        let now = self.clock.now_ms();
        self.write_back(u64::MAX, now, false, None)?;
        let states: Vec<SnapState> = self
            .states
            .iter()
            .map(|s| SnapState {
                name: s.name.clone(),
                ttl_ms: s.ttl_ms,
                snapshot: s.partition.snapshot(),
            })
            .collect();
        let metas = self.states();
        let incremental = self.incremental && target.kind == SnapshotKind::Checkpoint;
        let checkpoint_id = target.checkpoint_id;
        let plan = if incremental {
            self.cold.tracker.begin(checkpoint_id)
        } else {
            Plan::Full
        };
        let kind = match plan {
            Plan::Full => FileKind::KeyedFull,
            Plan::Delta { .. } => FileKind::KeyedDelta,
        };
        let name = self.next_file_name(checkpoint_id, kind);
        let (path, rel) = if incremental {
            (
                target.shared_dir.join(&name),
                shared_ref_path(&target.exclusive_dir, &target.shared_dir, &name),
            )
        } else {
            (target.exclusive_dir.join(&name), name)
        };
        let job = FileJob {
            header: FileHeader {
                kind,
                operator_uid: self.cold.operator_uid.clone(),
                subtask_index: self.cold.subtask_index,
                backend: BackendKind::Lsm,
                max_parallelism: self.cold.max_parallelism,
                key_group_range: self.range,
                checkpoint_id,
                states: metas.clone(),
            },
            states,
            now,
            range: self.range,
            local_dir: self.cold.dir.clone(),
        };
        let results = self.cold.tracker.results();
        let range = self.range;
        Ok(AsyncSnapshot::new(move || {
            let (bytes, base) = match plan {
                Plan::Full => (job.write_full()?, Vec::new()),
                Plan::Delta { base, changes } => (job.write_delta(&changes)?, base),
            };
            let size = bytes.len() as u64;
            target.storage.write_file(&path, &bytes)?;
            let mut files = base;
            files.push(StateFileRef {
                path: rel,
                size,
                shared: incremental,
            });
            if incremental {
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(checkpoint_id, files.clone());
            }
            Ok(KeyedStateHandle {
                backend: BackendKind::Lsm,
                key_group_range: range,
                files,
                states: metas,
                incremental_bytes: size,
            })
        }))
    }

    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        snapshot_dir: &Path,
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        for s in &mut self.states {
            if let Some(c) = &mut s.cache {
                self.cached -= c.len();
                c.clear();
            }
        }
        for h in handles {
            if h.key_group_range.intersect(&self.range).is_empty() {
                continue;
            }
            for f in &h.files {
                self.restore_file(&f.resolve(snapshot_dir), storage)?;
            }
        }
        self.cold.tracker.reset();
        Ok(())
    }

    fn states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        self.cold.tracker.complete(checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.cold.tracker.abort(checkpoint_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_paths_are_relative_to_the_checkpoint_dir() {
        assert_eq!(
            shared_ref_path(Path::new("/c/job/chk-3"), Path::new("/c/job/shared"), "f"),
            "../shared/f"
        );
        assert_eq!(
            shared_ref_path(Path::new("/x/sp"), Path::new("/c/job/shared"), "f"),
            "/c/job/shared/f"
        );
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(""), "op");
        assert_ne!(instance_nonce(), instance_nonce());
    }
}
