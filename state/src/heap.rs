//! The heap backend: keyed state in memory, one hash table per (state, key group), with
//! copy-on-write snapshots at key-group granularity (Flink's `HashMapStateBackend` with
//! its `CopyOnWriteStateMap`, simplified to whole key groups).
//!
//! # Layout
//!
//! Each registered state is a typed `HeapTable<K, N, S>` stored type-erased behind
//! `ErasedTable`; the typed accessors downcast it by [`StateId`], so a caller that asks
//! for the wrong namespace or value type gets [`StateError::IncompatibleState`], never a
//! panic. A table holds one `Group` per key group of the backend's range (index
//! `key_group - range.start`), each a `hashbrown` [`HashTable`] of entries
//! `(key, namespace, value, timestamp)` hashed with FxHash over `(key, namespace)`.
//! Lookups compare the borrowed `(&K, &N)` against stored entries, so the key is never
//! cloned to look it up; it is cloned exactly once, when a new entry is inserted.
//!
//! # The per-record path
//!
//! [`KeyedStore::modify`] is what keyed-sum runs per record, so it is one hash of
//! `(key, namespace)` and one probe: an occupied entry hands `f` a `&mut Option<S>` that
//! *is* the stored value (mutated in place, no move or clone), an absent one hands `f` a
//! local `None` and inserts into the probed slot (no re-hash) only if `f` left `Some`.
//! The clock is read only for states with a TTL.
//!
//! # Snapshots (copy-on-write)
//!
//! A group is either `Owned` (the task is its only user, written without any atomic
//! operation) or `Shared` (an `Arc` that a running snapshot also holds). The synchronous
//! part of [`snapshot`](KeyedStore::snapshot) turns every group into `Shared` and clones
//! the `Arc`s: O(states × key groups), no entry is touched. The first write to a shared
//! group afterwards takes it back: without copying if the snapshot has finished with it
//! (`Arc::try_unwrap`), else by copying that one key group's table (`Arc::make_mut`
//! semantics). The [`AsyncSnapshot`] then encodes the frozen groups on another thread
//! and writes one [`FileKind::KeyedFull`] file with the format of [`crate::format`]:
//! blocks in ascending key group then state order (states sorted by name), entries
//! within a block sorted by encoded key and namespace, so equal contents give equal
//! files. Entries expired at the time of the synchronous part are left out (Flink's
//! `cleanupFullSnapshot`).
//!
//! # TTL
//!
//! One timestamp per (key, namespace): the processing time of the last write (and of
//! the last read for [`TtlUpdateType::OnReadAndWrite`]), from the backend's
//! [`TtlClock`]. An entry is expired once `timestamp + ttl <= now`; `get` and `modify`
//! treat it as absent and remove it. [`cleanup_expired`](KeyedStore::cleanup_expired)
//! walks the tables bucket by bucket from a cursor kept between calls, inspecting at most
//! [`CLEANUP_CHECKS_PER_REMOVAL`] buckets per entry of budget.
//!
//! # Restore
//!
//! [`restore`](KeyedStore::restore) reads the files of every handle that overlaps this
//! backend's key groups, in order (later entries override earlier ones, tombstones
//! delete), keeping only the key groups of this backend's range. Entries stay encoded,
//! per state name, until [`register`](KeyedStore::register) gives them their types;
//! a state that is restored but never registered is written unchanged into the next
//! snapshots, so state of a temporarily unused descriptor survives.
//!
//! # Checkpoint notifications
//!
//! Every heap snapshot is full and self-contained: there is no base to advance on
//! completion and nothing to re-send after an abort, so both notifications are no-ops.

use std::any::{type_name, Any};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use serde::de::DeserializeOwned;

use crate::descriptor::{StateMeta, TtlUpdateType};
use crate::error::{Result, StateError};
use crate::format::{encode, KeyedFileWriter, StateFileReader};
use crate::key_group::{key_group_for_hash, table_hash, KeyGroupRange};
use crate::keyed::{
    AsyncSnapshot, BackendKind, KeyedBackendParams, KeyedStore, Namespace, StateData, StateId,
    StateKey, TtlClock,
};
use crate::snapshot::{
    FileHeader, FileKind, KeyedStateHandle, RawEntry, SnapshotTarget, StateFileRef,
};
use crate::storage::CheckpointStorage;

/// Buckets [`KeyedStore::cleanup_expired`] may inspect per entry of its budget, so one
/// call does bounded work even when little has expired.
pub const CLEANUP_CHECKS_PER_REMOVAL: usize = 16;

/// Keyed state in memory; see the module docs.
pub struct HeapKeyedStateBackend<K: StateKey> {
    operator_uid: String,
    subtask_index: u32,
    max_parallelism: u32,
    range: KeyGroupRange,
    clock: Arc<dyn TtlClock>,
    /// Registered states, indexed by [`StateId`].
    states: Vec<Registered<K>>,
    /// Restored entries of states not registered (yet), by name.
    restored: BTreeMap<String, RawState>,
    cleanup: CleanupCursor,
}

impl<K: StateKey> std::fmt::Debug for HeapKeyedStateBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapKeyedStateBackend")
            .field("operator_uid", &self.operator_uid)
            .field("subtask_index", &self.subtask_index)
            .field("key_group_range", &self.range)
            .field("states", &self.states.len())
            .field("restored", &self.restored.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A registered state: its metadata and its typed table.
struct Registered<K> {
    meta: StateMeta,
    table: Box<dyn ErasedTable<K>>,
}

/// Where incremental TTL cleanup resumes.
#[derive(Clone, Copy, Debug, Default)]
struct CleanupCursor {
    state: usize,
    group: usize,
    bucket: usize,
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// A new, empty backend for the key groups of `params.key_group_range`.
    pub fn new(params: KeyedBackendParams) -> Self {
        Self {
            operator_uid: params.operator_uid,
            subtask_index: params.subtask_index,
            max_parallelism: params.max_parallelism,
            range: params.key_group_range,
            clock: params.clock,
            states: Vec::new(),
            restored: BTreeMap::new(),
            cleanup: CleanupCursor::default(),
        }
    }

    /// The typed table of state `id`.
    #[inline]
    pub(crate) fn typed<N: Namespace, S: StateData>(
        &mut self,
        id: StateId,
    ) -> Result<&mut HeapTable<K, N, S>> {
        let Registered { meta, table } = self
            .states
            .get_mut(id.0 as usize)
            .ok_or_else(|| unknown_state(id))?;
        table
            .as_any_mut()
            .downcast_mut::<HeapTable<K, N, S>>()
            .ok_or_else(|| wrong_types::<N, S>(meta))
    }

    fn registered(&self, id: StateId) -> Result<&Registered<K>> {
        self.states
            .get(id.0 as usize)
            .ok_or_else(|| unknown_state(id))
    }

    /// Reads one state file and merges the entries of this backend's key groups into
    /// the raw restored states.
    fn restore_file(
        &mut self,
        path: &Path,
        overlap: KeyGroupRange,
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        let reader = StateFileReader::open(storage, path)?;
        let header = reader.header();
        if header.max_parallelism != self.max_parallelism {
            return Err(StateError::Restore {
                reason: format!(
                    "{} was written with max parallelism {}, this job has {}",
                    path.display(),
                    header.max_parallelism,
                    self.max_parallelism
                ),
            });
        }
        let groups = self.range.len() as usize;
        for entry in reader.entries_in(overlap)? {
            if !self.range.contains(entry.key_group) {
                continue;
            }
            let meta = header.states.get(entry.state as usize).ok_or_else(|| {
                StateError::corrupt(
                    path,
                    0,
                    format!(
                        "entry of key group {} refers to state #{}, the header lists {}",
                        entry.key_group,
                        entry.state,
                        header.states.len()
                    ),
                )
            })?;
            let raw = self
                .restored
                .entry(meta.name.clone())
                .or_insert_with(|| RawState::new(meta.clone(), groups));
            if raw.meta.kind != meta.kind {
                return Err(incompatible(&raw.meta, meta));
            }
            raw.meta = meta.clone();
            raw.apply((entry.key_group - self.range.start) as usize, entry);
        }
        Ok(())
    }
}

impl<K: StateKey> KeyedStore<K> for HeapKeyedStateBackend<K> {
    fn register<N: Namespace, S: StateData>(&mut self, meta: StateMeta) -> Result<StateId> {
        if let Some((i, existing)) = self
            .states
            .iter()
            .enumerate()
            .find(|(_, r)| r.meta.name == meta.name)
        {
            let same_types = existing.meta.kind == meta.kind
                && existing.meta.key_type == meta.key_type
                && existing.meta.namespace_type == meta.namespace_type
                && existing.meta.value_type == meta.value_type
                && existing.meta.user_key_type == meta.user_key_type;
            if same_types && existing.table.as_any().is::<HeapTable<K, N, S>>() {
                // Local invariant: ids are indices into `states`, which has < u32::MAX
                // entries (checked when pushing).
                return Ok(StateId(i as u32));
            }
            return Err(incompatible(&existing.meta, &meta));
        }
        let id = u32::try_from(self.states.len()).map_err(|_| StateError::Config {
            key: meta.name.clone(),
            reason: "too many states in one backend".into(),
        })?;
        let mut table =
            HeapTable::<K, N, S>::new(meta.clone(), self.range, Arc::clone(&self.clock));
        if let Some(raw) = self.restored.get(&meta.name) {
            if raw.meta.kind != meta.kind {
                return Err(incompatible(&raw.meta, &meta));
            }
            table.absorb(raw, self.max_parallelism)?;
            self.restored.remove(&meta.name);
        }
        self.states.push(Registered {
            meta,
            table: Box::new(table),
        });
        Ok(StateId(id))
    }

    #[inline]
    fn get<N: Namespace, S: StateData>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<Option<S>> {
        self.typed::<N, S>(id)?
            .get(key_group, key_hash, key, namespace)
    }

    #[inline]
    fn modify<N: Namespace, S: StateData, R>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        self.typed::<N, S>(id)?
            .modify(key_group, key_hash, key, namespace, f)
    }

    fn remove<N: Namespace>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<()> {
        let Registered { meta, table } = self
            .states
            .get_mut(id.0 as usize)
            .ok_or_else(|| unknown_state(id))?;
        table
            .remove_erased(key_group, key_hash, key, namespace)
            .unwrap_or_else(|| Err(wrong_namespace::<N>(meta)))
    }

    fn entries_keys<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>> {
        let now = self.clock.now_ms();
        let r = self.registered(id)?;
        r.table
            .keys_erased(now)
            .downcast::<Vec<(K, N)>>()
            .map(|keys| *keys)
            .map_err(|_| wrong_namespace::<N>(&r.meta))
    }

    fn entry_counts(&mut self, id: StateId) -> Result<Vec<(u32, u64)>> {
        let now = self.clock.now_ms();
        Ok(self.registered(id)?.table.counts(now))
    }

    fn cleanup_expired(&mut self, budget: usize) -> Result<usize> {
        let n = self.states.len();
        if n == 0 || budget == 0 {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let mut work = CleanupWork {
            budget,
            removed: 0,
            checks: budget.saturating_mul(CLEANUP_CHECKS_PER_REMOVAL),
            now,
        };
        let cursor = &mut self.cleanup;
        // One lap over all states at most; the state the cursor starts in is visited
        // again at the end to cover its groups before the cursor.
        for _ in 0..=n {
            cursor.state %= n;
            if !self.states[cursor.state].table.cleanup(
                &mut cursor.group,
                &mut cursor.bucket,
                &mut work,
            ) {
                return Ok(work.removed);
            }
            cursor.state = (cursor.state + 1) % n;
            cursor.group = 0;
            cursor.bucket = 0;
        }
        Ok(work.removed)
    }

    fn snapshot(&mut self, target: SnapshotTarget) -> Result<AsyncSnapshot> {
        let now = self.clock.now_ms();
        let mut parts: Vec<(StateMeta, Box<dyn SnapshotView>)> =
            Vec::with_capacity(self.states.len() + self.restored.len());
        for r in &mut self.states {
            parts.push((r.meta.clone(), r.table.snapshot_view()));
        }
        for raw in self.restored.values() {
            parts.push((raw.meta.clone(), Box::new(raw.view())));
        }
        parts.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let (metas, views): (Vec<StateMeta>, Vec<Box<dyn SnapshotView>>) =
            parts.into_iter().unzip();
        let header = FileHeader {
            kind: FileKind::KeyedFull,
            operator_uid: self.operator_uid.clone(),
            subtask_index: self.subtask_index,
            backend: BackendKind::Heap,
            max_parallelism: self.max_parallelism,
            key_group_range: self.range,
            checkpoint_id: target.checkpoint_id,
            states: metas,
        };
        let file_name =
            snapshot_file_name(&self.operator_uid, self.subtask_index, target.checkpoint_id);
        let range = self.range;
        Ok(AsyncSnapshot::new(move || {
            write_snapshot(header, &views, range, now, &target, file_name)
        }))
    }

    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        snapshot_dir: &Path,
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        for handle in handles {
            let overlap = handle.key_group_range.intersect(&self.range);
            if overlap.is_empty() {
                continue;
            }
            for file in &handle.files {
                self.restore_file(&file.resolve(snapshot_dir), overlap, storage)?;
            }
        }
        // States registered before the restore take their entries now.
        for r in &mut self.states {
            if let Some(raw) = self.restored.get(&r.meta.name) {
                if raw.meta.kind != r.meta.kind {
                    return Err(incompatible(&r.meta, &raw.meta));
                }
                r.table.absorb(raw, self.max_parallelism)?;
                self.restored.remove(&r.meta.name);
            }
        }
        Ok(())
    }

    fn states(&self) -> Vec<StateMeta> {
        self.states
            .iter()
            .map(|r| r.meta.clone())
            .chain(self.restored.values().map(|raw| raw.meta.clone()))
            .collect()
    }

    /// A no-op: heap snapshots are full, there is no incremental base to advance.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) {}

    /// A no-op: the next heap snapshot is full anyway.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) {}
}

/// `{uid}-{subtask}-{checkpoint}-keyed.heap`, with every character of the uid outside
/// `[A-Za-z0-9._-]` replaced by `_` so any uid gives one plain file name.
fn snapshot_file_name(uid: &str, subtask: u32, checkpoint_id: u64) -> String {
    let uid: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{uid}-{subtask}-{checkpoint_id}-keyed.heap")
}

/// The asynchronous part of a snapshot: encodes the frozen groups and writes the file.
fn write_snapshot(
    header: FileHeader,
    views: &[Box<dyn SnapshotView>],
    range: KeyGroupRange,
    now: i64,
    target: &SnapshotTarget,
    file_name: String,
) -> Result<KeyedStateHandle> {
    let states = header.states.clone();
    let mut writer = KeyedFileWriter::new(header);
    let mut block = Vec::new();
    for (index, key_group) in range.iter().enumerate() {
        for (state, view) in views.iter().enumerate() {
            block.clear();
            view.encode_group(index, now, &mut block)?;
            block.sort_unstable_by(|a: &EncodedEntry, b: &EncodedEntry| {
                (&a.key, &a.namespace).cmp(&(&b.key, &b.namespace))
            });
            for e in &block {
                // Local invariant: fewer states than u32::MAX (ids are u32).
                writer.push(
                    state as u32,
                    key_group,
                    &e.key,
                    &e.namespace,
                    e.timestamp,
                    Some(&e.value),
                )?;
            }
        }
    }
    let bytes = writer.finish();
    let path: PathBuf = target.exclusive_dir.join(&file_name);
    target.storage.write_file(&path, &bytes)?;
    let size = bytes.len() as u64;
    Ok(KeyedStateHandle {
        backend: BackendKind::Heap,
        key_group_range: range,
        files: vec![StateFileRef {
            path: file_name,
            size,
            shared: false,
        }],
        states,
        incremental_bytes: size,
    })
}

// ---------------------------------------------------------------------------------------
// Key groups: owned or shared with a snapshot.

/// One key group's table: owned by the task, or shared with a running snapshot.
enum Group<T> {
    Owned(HashTable<T>),
    Shared(Arc<HashTable<T>>),
}

impl<T: Clone> Group<T> {
    #[inline]
    fn table(&self) -> &HashTable<T> {
        match self {
            Group::Owned(t) => t,
            Group::Shared(t) => t,
        }
    }

    /// The table for writing; takes a shared group back first (copying it only if the
    /// snapshot still holds it).
    #[inline]
    fn table_mut(&mut self) -> &mut HashTable<T> {
        if let Group::Shared(_) = self {
            self.unshare();
        }
        match self {
            Group::Owned(t) => t,
            // Not reached after `unshare`, and correct anyway.
            Group::Shared(t) => Arc::make_mut(t),
        }
    }

    #[cold]
    #[inline(never)]
    fn unshare(&mut self) {
        if let Group::Shared(shared) = std::mem::replace(self, Group::Owned(HashTable::new())) {
            *self = Group::Owned(Arc::try_unwrap(shared).unwrap_or_else(|s| (*s).clone()));
        }
    }

    /// Freezes the group for a snapshot: from now on it is shared.
    fn share(&mut self) -> Arc<HashTable<T>> {
        let shared = match std::mem::replace(self, Group::Owned(HashTable::new())) {
            Group::Owned(t) => Arc::new(t),
            Group::Shared(s) => s,
        };
        *self = Group::Shared(Arc::clone(&shared));
        shared
    }

    /// Whether a snapshot shares this group (tests).
    #[cfg(test)]
    fn is_shared(&self) -> bool {
        matches!(self, Group::Shared(_))
    }
}

// ---------------------------------------------------------------------------------------
// Typed tables.

/// One entry: `value` is `Some` for every entry in a table (`None` only transiently,
/// while `modify`'s closure runs).
#[derive(Clone)]
struct Entry<K, N, S> {
    key: K,
    namespace: N,
    value: Option<S>,
    /// Processing time of the last refresh (ms); 0 for states without TTL.
    timestamp: i64,
}

/// A state's TTL, resolved once at registration.
#[derive(Clone, Copy, Debug)]
struct Ttl {
    ttl_ms: i64,
    refresh_on_read: bool,
}

impl Ttl {
    fn of(meta: &StateMeta) -> Option<Self> {
        meta.ttl.map(|t| Ttl {
            ttl_ms: t.ttl_ms(),
            refresh_on_read: t.update_type == TtlUpdateType::OnReadAndWrite,
        })
    }

    #[inline]
    fn expired(self, timestamp: i64, now: i64) -> bool {
        timestamp.saturating_add(self.ttl_ms) <= now
    }
}

/// Whether `timestamp` is expired under an optional TTL.
#[inline]
fn is_expired(ttl: Option<Ttl>, timestamp: i64, now: i64) -> bool {
    ttl.is_some_and(|t| t.expired(timestamp, now))
}

/// The table hash of an entry whose key has table hash `key_hash`
/// ([`table_hash`] of its stable hash, computed once per access together with the key
/// group): the namespace is folded in, and `()` (user state) leaves it unchanged.
#[inline]
fn entry_hash<N: Hash>(key_hash: u64, namespace: &N) -> u64 {
    let mut h = FxHasher::default();
    namespace.hash(&mut h);
    key_hash ^ h.finish()
}

/// [`entry_hash`] of an entry from its own key (rehashing, inserting restored entries).
#[inline]
fn hash_of<K: StateKey, N: Hash>(key: &K, namespace: &N) -> u64 {
    entry_hash(table_hash(key.stable_hash()), namespace)
}

/// The group of `key_group` in `groups` (which cover `range`).
#[inline]
fn group_of<T>(
    groups: &mut [Group<T>],
    range: KeyGroupRange,
    key_group: u32,
) -> Result<&mut Group<T>> {
    // A `match`, not `ok_or`: an eagerly built `StateError` is dropped (a call) on every
    // successful lookup of the per-record path.
    match groups.get_mut(key_group.wrapping_sub(range.start) as usize) {
        Some(group) => Ok(group),
        None => Err(StateError::KeyGroupOutOfRange { key_group, range }),
    }
}

/// A state's entries, per key group of the backend's range.
pub(crate) struct HeapTable<K, N, S> {
    name: String,
    ttl: Option<Ttl>,
    clock: Arc<dyn TtlClock>,
    range: KeyGroupRange,
    groups: Vec<Group<Entry<K, N, S>>>,
}

impl<K: StateKey, N: Namespace, S: StateData> HeapTable<K, N, S> {
    fn new(meta: StateMeta, range: KeyGroupRange, clock: Arc<dyn TtlClock>) -> Self {
        Self {
            ttl: Ttl::of(&meta),
            name: meta.name,
            clock,
            range,
            groups: (0..range.len())
                .map(|_| Group::Owned(HashTable::new()))
                .collect(),
        }
    }

    #[inline]
    fn group(&mut self, key_group: u32) -> Result<&mut Group<Entry<K, N, S>>> {
        group_of(&mut self.groups, self.range, key_group)
    }

    #[inline]
    fn get(&mut self, key_group: u32, key_hash: u64, key: &K, namespace: &N) -> Result<Option<S>> {
        let hash = entry_hash(key_hash, namespace);
        let eq = |e: &Entry<K, N, S>| e.key == *key && e.namespace == *namespace;
        let group = group_of(&mut self.groups, self.range, key_group)?;
        let Some(ttl) = self.ttl else {
            return Ok(group.table().find(hash, eq).and_then(|e| e.value.clone()));
        };
        let now = self.clock.now_ms();
        if ttl.refresh_on_read {
            return Ok(match group.table_mut().find_entry(hash, eq) {
                Ok(occupied) if ttl.expired(occupied.get().timestamp, now) => {
                    occupied.remove();
                    None
                }
                Ok(mut occupied) => {
                    let e = occupied.get_mut();
                    e.timestamp = now;
                    e.value.clone()
                }
                Err(_) => None,
            });
        }
        match group.table().find(hash, eq) {
            None => Ok(None),
            Some(e) if !ttl.expired(e.timestamp, now) => Ok(e.value.clone()),
            Some(_) => {
                if let Ok(occupied) = group.table_mut().find_entry(hash, eq) {
                    occupied.remove();
                }
                Ok(None)
            }
        }
    }

    #[inline]
    pub(crate) fn modify<R>(
        &mut self,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        let ttl = self.ttl;
        let now = match ttl {
            Some(_) => self.clock.now_ms(),
            None => 0,
        };
        let hash = entry_hash(key_hash, namespace);
        let table = self.group(key_group)?.table_mut();
        match table.find_entry(hash, |e| e.key == *key && e.namespace == *namespace) {
            Ok(mut occupied) => {
                let entry = occupied.get_mut();
                if is_expired(ttl, entry.timestamp, now) {
                    entry.value = None;
                }
                let r = f(&mut entry.value);
                if entry.value.is_none() {
                    occupied.remove();
                } else if ttl.is_some() {
                    entry.timestamp = now;
                }
                Ok(r)
            }
            Err(absent) => {
                let mut value = None;
                let r = f(&mut value);
                if value.is_some() {
                    absent.into_table().insert_unique(
                        hash,
                        Entry {
                            key: key.clone(),
                            namespace: namespace.clone(),
                            value,
                            timestamp: now,
                        },
                        |e| hash_of(&e.key, &e.namespace),
                    );
                }
                Ok(r)
            }
        }
    }

    fn remove(&mut self, key_group: u32, key_hash: u64, key: &K, namespace: &N) -> Result<()> {
        let hash = entry_hash(key_hash, namespace);
        let eq = |e: &Entry<K, N, S>| e.key == *key && e.namespace == *namespace;
        let group = self.group(key_group)?;
        // Look first so that removing an absent entry does not take a shared group back.
        if group.table().find(hash, eq).is_some() {
            if let Ok(occupied) = group.table_mut().find_entry(hash, eq) {
                occupied.remove();
            }
        }
        Ok(())
    }

    /// Stores an entry with a given timestamp, replacing any present one.
    fn insert(
        &mut self,
        key_group: u32,
        key: K,
        namespace: N,
        value: S,
        timestamp: i64,
    ) -> Result<()> {
        let hash = hash_of(&key, &namespace);
        let table = self.group(key_group)?.table_mut();
        match table.find_entry(hash, |e| e.key == key && e.namespace == namespace) {
            Ok(mut occupied) => {
                let e = occupied.get_mut();
                e.value = Some(value);
                e.timestamp = timestamp;
            }
            Err(absent) => {
                absent.into_table().insert_unique(
                    hash,
                    Entry {
                        key,
                        namespace,
                        value: Some(value),
                        timestamp,
                    },
                    |e| hash_of(&e.key, &e.namespace),
                );
            }
        }
        Ok(())
    }

    /// Decodes restored entries into the table (overriding present ones).
    fn absorb(&mut self, raw: &RawState, max_parallelism: u32) -> Result<()> {
        let now = self.clock.now_ms();
        let ttl = self.ttl;
        let start = self.range.start;
        for (index, entries) in raw.groups.iter().enumerate() {
            let key_group = start + index as u32;
            for ((key, namespace), (timestamp, value)) in entries {
                if is_expired(ttl, *timestamp, now) {
                    continue;
                }
                let key: K = decode(&self.name, "key", key)?;
                let namespace: N = decode(&self.name, "namespace", namespace)?;
                let value: S = decode(&self.name, "value", value)?;
                let actual = key_group_for_hash(key.stable_hash(), max_parallelism);
                if actual != key_group {
                    return Err(StateError::Restore {
                        reason: format!(
                            "state `{}`: key {key:?} was stored in key group {key_group} but \
                             hashes to {actual} (did the key type's stable hash change?)",
                            self.name
                        ),
                    });
                }
                let timestamp = if ttl.is_some() { *timestamp } else { 0 };
                self.insert(key_group, key, namespace, value, timestamp)?;
            }
        }
        Ok(())
    }
}

/// Shared work budget of one [`KeyedStore::cleanup_expired`] call.
struct CleanupWork {
    budget: usize,
    removed: usize,
    checks: usize,
    now: i64,
}

/// The operations on a table that do not depend on its value type, so the backend can
/// run them by [`StateId`] alone.
trait ErasedTable<K>: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Removes (key, namespace); `None` if `namespace` is not the table's `N`.
    fn remove_erased(
        &mut self,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &dyn Any,
    ) -> Option<Result<()>>;
    /// A `Box<Vec<(K, N)>>` of the live entries, sorted.
    fn keys_erased(&self, now: i64) -> Box<dyn Any>;
    /// Live entries per key group.
    fn counts(&self, now: i64) -> Vec<(u32, u64)>;
    /// Removes expired entries from (`group`, `bucket`) on; `false` when the budget ran
    /// out before the end of the table.
    fn cleanup(&mut self, group: &mut usize, bucket: &mut usize, work: &mut CleanupWork) -> bool;
    /// Freezes every group for a snapshot.
    fn snapshot_view(&mut self) -> Box<dyn SnapshotView>;
    /// Decodes restored entries into the table.
    fn absorb(&mut self, raw: &RawState, max_parallelism: u32) -> Result<()>;
}

impl<K: StateKey, N: Namespace, S: StateData> ErasedTable<K> for HeapTable<K, N, S> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    #[inline]
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn remove_erased(
        &mut self,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &dyn Any,
    ) -> Option<Result<()>> {
        let namespace = namespace.downcast_ref::<N>()?;
        Some(self.remove(key_group, key_hash, key, namespace))
    }

    fn keys_erased(&self, now: i64) -> Box<dyn Any> {
        let ttl = self.ttl;
        let mut keys: Vec<(K, N)> = self
            .groups
            .iter()
            .flat_map(|g| g.table().iter())
            .filter(|e| e.value.is_some() && !is_expired(ttl, e.timestamp, now))
            .map(|e| (e.key.clone(), e.namespace.clone()))
            .collect();
        keys.sort_unstable();
        Box::new(keys)
    }

    fn counts(&self, now: i64) -> Vec<(u32, u64)> {
        let ttl = self.ttl;
        self.range
            .iter()
            .zip(&self.groups)
            .map(|(kg, g)| {
                let live = match ttl {
                    // Every stored entry holds a value (`modify` removes `None`s).
                    None => g.table().len(),
                    Some(_) => g
                        .table()
                        .iter()
                        .filter(|e| e.value.is_some() && !is_expired(ttl, e.timestamp, now))
                        .count(),
                };
                (kg, live as u64)
            })
            .collect()
    }

    fn cleanup(&mut self, group: &mut usize, bucket: &mut usize, work: &mut CleanupWork) -> bool {
        let Some(ttl) = self.ttl else {
            return true;
        };
        while let Some(g) = self.groups.get_mut(*group) {
            let buckets = if g.table().is_empty() {
                0
            } else {
                g.table().num_buckets()
            };
            while *bucket < buckets {
                if work.removed >= work.budget || work.checks == 0 {
                    return false;
                }
                work.checks -= 1;
                let expired = g
                    .table()
                    .get_bucket(*bucket)
                    .is_some_and(|e| ttl.expired(e.timestamp, work.now));
                if expired {
                    if let Ok(occupied) = g.table_mut().get_bucket_entry(*bucket) {
                        occupied.remove();
                        work.removed += 1;
                    }
                }
                *bucket += 1;
            }
            *group += 1;
            *bucket = 0;
        }
        true
    }

    fn snapshot_view(&mut self) -> Box<dyn SnapshotView> {
        Box::new(TypedView {
            name: self.name.clone(),
            ttl: self.ttl,
            groups: self.groups.iter_mut().map(Group::share).collect(),
        })
    }

    fn absorb(&mut self, raw: &RawState, max_parallelism: u32) -> Result<()> {
        HeapTable::absorb(self, raw, max_parallelism)
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot views.

/// One entry of a snapshot block, encoded.
struct EncodedEntry {
    key: Vec<u8>,
    namespace: Vec<u8>,
    timestamp: i64,
    value: Vec<u8>,
}

/// A frozen state, encoded on the snapshot thread.
trait SnapshotView: Send {
    /// Appends the live entries of group `index` (unsorted).
    fn encode_group(&self, index: usize, now: i64, out: &mut Vec<EncodedEntry>) -> Result<()>;
}

struct TypedView<K, N, S> {
    name: String,
    ttl: Option<Ttl>,
    groups: Vec<Arc<HashTable<Entry<K, N, S>>>>,
}

impl<K: StateKey, N: Namespace, S: StateData> SnapshotView for TypedView<K, N, S> {
    fn encode_group(&self, index: usize, now: i64, out: &mut Vec<EncodedEntry>) -> Result<()> {
        let Some(group) = self.groups.get(index) else {
            return Ok(());
        };
        for e in group.iter() {
            let Some(value) = &e.value else { continue };
            if is_expired(self.ttl, e.timestamp, now) {
                continue;
            }
            out.push(EncodedEntry {
                key: encode(&self.name, &e.key)?,
                namespace: encode(&self.name, &e.namespace)?,
                timestamp: e.timestamp,
                value: encode(&self.name, value)?,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Restored, not yet typed.

/// Encoded (key, namespace) → (timestamp, encoded value) of one key group.
type RawGroup = BTreeMap<(Vec<u8>, Vec<u8>), (i64, Vec<u8>)>;

/// Restored entries of a state that has not been registered (yet).
struct RawState {
    meta: StateMeta,
    groups: Arc<Vec<RawGroup>>,
}

impl RawState {
    fn new(meta: StateMeta, groups: usize) -> Self {
        Self {
            meta,
            groups: Arc::new(vec![RawGroup::new(); groups]),
        }
    }

    /// Applies one file entry to group `index`: a value overrides, a tombstone deletes.
    fn apply(&mut self, index: usize, entry: RawEntry) {
        let groups = Arc::make_mut(&mut self.groups);
        let Some(group) = groups.get_mut(index) else {
            return;
        };
        let key = (entry.key, entry.namespace);
        match entry.value {
            Some(value) => {
                group.insert(key, (entry.timestamp, value));
            }
            None => {
                group.remove(&key);
            }
        }
    }

    fn view(&self) -> RawView {
        RawView {
            ttl: Ttl::of(&self.meta),
            groups: Arc::clone(&self.groups),
        }
    }
}

struct RawView {
    ttl: Option<Ttl>,
    groups: Arc<Vec<RawGroup>>,
}

impl SnapshotView for RawView {
    fn encode_group(&self, index: usize, now: i64, out: &mut Vec<EncodedEntry>) -> Result<()> {
        let Some(group) = self.groups.get(index) else {
            return Ok(());
        };
        for ((key, namespace), (timestamp, value)) in group {
            if is_expired(self.ttl, *timestamp, now) {
                continue;
            }
            out.push(EncodedEntry {
                key: key.clone(),
                namespace: namespace.clone(),
                timestamp: *timestamp,
                value: value.clone(),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Decoding and errors.

fn decode<T: DeserializeOwned>(state: &str, what: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StateError::Deserialize {
        name: state.to_owned(),
        reason: format!("{what} as {}: {e}", type_name::<T>()),
    })
}

fn describe(meta: &StateMeta) -> String {
    let mut s = format!(
        "{} of {} (key {}, namespace {}",
        meta.kind.name(),
        meta.value_type,
        meta.key_type,
        meta.namespace_type
    );
    if !meta.user_key_type.is_empty() {
        s.push_str(&format!(", user key {}", meta.user_key_type));
    }
    s.push(')');
    s
}

fn incompatible(existing: &StateMeta, requested: &StateMeta) -> StateError {
    StateError::IncompatibleState {
        name: requested.name.clone(),
        existing: describe(existing),
        requested: describe(requested),
    }
}

fn unknown_state(id: StateId) -> StateError {
    StateError::IncompatibleState {
        name: format!("#{}", id.0),
        existing: "not registered in this backend".into(),
        requested: "a registered state".into(),
    }
}

fn wrong_types<N, S>(meta: &StateMeta) -> StateError {
    StateError::IncompatibleState {
        name: meta.name.clone(),
        existing: describe(meta),
        requested: format!(
            "stored type {} in namespace {}",
            type_name::<S>(),
            type_name::<N>()
        ),
    }
}

fn wrong_namespace<N>(meta: &StateMeta) -> StateError {
    StateError::IncompatibleState {
        name: meta.name.clone(),
        existing: describe(meta),
        requested: format!("namespace {}", type_name::<N>()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::descriptor::{StateKind, TtlConfig};
    use crate::snapshot::SnapshotKind;

    #[derive(
        Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    )]
    struct K(u64);
    impl StateKey for K {
        fn stable_hash(&self) -> u64 {
            self.0
        }
    }

    #[derive(Debug, Default)]
    struct Clock(AtomicI64);
    impl TtlClock for Clock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[derive(Debug, Default)]
    struct MemStorage(Mutex<BTreeMap<PathBuf, Vec<u8>>>);
    impl CheckpointStorage for MemStorage {
        fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .insert(path.to_owned(), bytes.to_vec());
            Ok(())
        }
        fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
            self.write_file(path, bytes)
        }
        fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
            self.0
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| StateError::Read {
                    path: path.to_owned(),
                    source: std::io::ErrorKind::NotFound.into(),
                })
        }
        fn exists(&self, path: &Path) -> Result<bool> {
            Ok(self.0.lock().unwrap().contains_key(path))
        }
        fn list_dir(&self, _path: &Path) -> Result<Vec<PathBuf>> {
            Ok(self.0.lock().unwrap().keys().cloned().collect())
        }
        fn delete_file(&self, path: &Path) -> Result<()> {
            self.0.lock().unwrap().remove(path);
            Ok(())
        }
        fn delete_dir(&self, _path: &Path) -> Result<()> {
            Ok(())
        }
    }

    fn meta(name: &str, ttl: Option<TtlConfig>) -> StateMeta {
        StateMeta {
            name: name.into(),
            kind: StateKind::Value,
            key_type: type_name::<K>().into(),
            namespace_type: type_name::<()>().into(),
            value_type: type_name::<i64>().into(),
            user_key_type: String::new(),
            ttl,
        }
    }

    fn backend(clock: &Arc<Clock>) -> HeapKeyedStateBackend<K> {
        HeapKeyedStateBackend::new(KeyedBackendParams {
            operator_uid: "op/1".into(),
            subtask_index: 0,
            max_parallelism: 16,
            key_group_range: KeyGroupRange::all(16),
            clock: clock.clone(),
            local_dir: PathBuf::new(),
            incremental: false,
            lsm_cache_entries: 0,
        })
    }

    fn kg(k: u64) -> u32 {
        key_group_for_hash(k, 16)
    }

    fn th(k: u64) -> u64 {
        table_hash(K(k).stable_hash())
    }

    fn put(b: &mut HeapKeyedStateBackend<K>, id: StateId, k: u64, v: i64) {
        b.modify::<(), i64, ()>(id, kg(k), th(k), &K(k), &(), |x| *x = Some(v))
            .unwrap();
    }

    fn target(storage: &Arc<MemStorage>, id: u64) -> SnapshotTarget {
        SnapshotTarget {
            storage: storage.clone(),
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            exclusive_dir: PathBuf::from(format!("/job/chk-{id}")),
            shared_dir: PathBuf::from("/job/shared"),
        }
    }

    fn shared_groups(b: &mut HeapKeyedStateBackend<K>, id: StateId) -> usize {
        b.typed::<(), i64>(id)
            .unwrap()
            .groups
            .iter()
            .filter(|g| g.is_shared())
            .count()
    }

    #[test]
    fn snapshot_shares_groups_and_writes_take_them_back() {
        let clock = Arc::new(Clock::default());
        let storage = Arc::new(MemStorage::default());
        let mut b = backend(&clock);
        let id = b.register::<(), i64>(meta("v", None)).unwrap();
        for k in 0..100 {
            put(&mut b, id, k, 1);
        }
        let pending = b.snapshot(target(&storage, 1)).unwrap();
        assert_eq!(
            shared_groups(&mut b, id),
            16,
            "sync part shares every group"
        );
        // A write while the snapshot holds the group copies that group only.
        put(&mut b, id, 0, 2);
        assert_eq!(shared_groups(&mut b, id), 15);
        // Reads and removals of absent entries leave groups shared.
        b.get::<(), i64>(id, kg(1), th(1), &K(1), &()).unwrap();
        b.remove::<()>(id, kg(1000), th(1000), &K(1000), &())
            .unwrap();
        assert_eq!(shared_groups(&mut b, id), 15);
        let handle = pending.run().unwrap();
        assert_eq!(handle.files[0].path, "op_1-0-1-keyed.heap");
        // After the snapshot dropped its references, writes reclaim without copying.
        put(&mut b, id, 1, 2);
        assert_eq!(shared_groups(&mut b, id), 14);
    }

    #[test]
    fn files_are_deterministic_and_skip_expired_entries() {
        let clock = Arc::new(Clock::default());
        let ttl = Some(TtlConfig::new(Duration::from_millis(10)));
        let write = |order: &[u64]| {
            let storage = Arc::new(MemStorage::default());
            let mut b = backend(&clock);
            // Registration order differs too; files list states by name.
            let (t, v) = if order[0] == 0 {
                let t = b.register::<(), i64>(meta("t", ttl)).unwrap();
                (t, b.register::<(), i64>(meta("v", None)).unwrap())
            } else {
                let v = b.register::<(), i64>(meta("v", None)).unwrap();
                (b.register::<(), i64>(meta("t", ttl)).unwrap(), v)
            };
            clock.0.store(0, Ordering::SeqCst);
            for &k in order {
                put(&mut b, v, k, k as i64);
                put(&mut b, t, k, k as i64);
            }
            clock.0.store(5, Ordering::SeqCst);
            put(&mut b, t, 1000, 1);
            clock.0.store(10, Ordering::SeqCst);
            let handle = b.snapshot(target(&storage, 7)).unwrap().run().unwrap();
            let bytes = storage
                .read_file(&PathBuf::from("/job/chk-7").join(&handle.files[0].path))
                .unwrap();
            (bytes, handle, storage)
        };
        let forward: Vec<u64> = (0..50).collect();
        let backward: Vec<u64> = (0..50).rev().collect();
        let (a, handle, storage) = write(&forward);
        let (b, _, _) = write(&backward);
        assert!(a == b, "same contents, same bytes");

        // Expired entries were left out: even with the clock turned back they are gone.
        clock.0.store(0, Ordering::SeqCst);
        let mut r = backend(&clock);
        r.restore(&[handle], Path::new("/job/chk-7"), storage.as_ref())
            .unwrap();
        let t = r.register::<(), i64>(meta("t", ttl)).unwrap();
        let v = r.register::<(), i64>(meta("v", None)).unwrap();
        assert_eq!(r.entries_keys::<()>(t).unwrap(), vec![(K(1000), ())]);
        assert_eq!(r.entries_keys::<()>(v).unwrap().len(), 50);
        // The restored entry kept its write time: it expires at 5 + 10.
        clock.0.store(14, Ordering::SeqCst);
        assert_eq!(
            r.get::<(), i64>(t, kg(1000), th(1000), &K(1000), &())
                .unwrap(),
            Some(1)
        );
        clock.0.store(15, Ordering::SeqCst);
        assert_eq!(
            r.get::<(), i64>(t, kg(1000), th(1000), &K(1000), &())
                .unwrap(),
            None
        );
    }

    #[test]
    fn restored_entries_that_do_not_decode_name_the_state() {
        let clock = Arc::new(Clock::default());
        let storage = Arc::new(MemStorage::default());
        let mut b = backend(&clock);
        let id = b.register::<(), i64>(meta("v", None)).unwrap();
        put(&mut b, id, 3, -1);
        let handle = b.snapshot(target(&storage, 2)).unwrap().run().unwrap();

        let mut r = backend(&clock);
        r.restore(&[handle], Path::new("/job/chk-2"), storage.as_ref())
            .unwrap();
        let mut wrong = meta("v", None);
        wrong.value_type = type_name::<String>().into();
        let err = r.register::<(), String>(wrong).unwrap_err();
        assert!(
            matches!(err, StateError::Deserialize { ref name, .. } if name == "v"),
            "{err}"
        );
        // The raw entries are still there for a correct registration.
        let id = r.register::<(), i64>(meta("v", None)).unwrap();
        assert_eq!(
            r.get::<(), i64>(id, kg(3), th(3), &K(3), &()).unwrap(),
            Some(-1)
        );
    }

    #[test]
    fn restore_keeps_only_this_backends_key_groups() {
        let clock = Arc::new(Clock::default());
        let storage = Arc::new(MemStorage::default());
        let mut b = backend(&clock);
        let id = b.register::<(), i64>(meta("v", None)).unwrap();
        for k in 0..200 {
            put(&mut b, id, k, k as i64);
        }
        let handle = b.snapshot(target(&storage, 3)).unwrap().run().unwrap();
        let mut half = HeapKeyedStateBackend::<K>::new(KeyedBackendParams {
            key_group_range: KeyGroupRange::new(8, 16),
            ..b_params(&clock)
        });
        half.restore(&[handle], Path::new("/job/chk-3"), storage.as_ref())
            .unwrap();
        let id = half.register::<(), i64>(meta("v", None)).unwrap();
        let keys = half.entries_keys::<()>(id).unwrap();
        assert!(!keys.is_empty());
        assert!(keys.iter().all(|(k, _)| (8..16).contains(&kg(k.0))));
        assert_eq!(
            keys.len(),
            (0..200u64).filter(|k| (8..16).contains(&kg(*k))).count()
        );
        // Out-of-range access is an error, not a panic.
        assert!(matches!(
            half.get::<(), i64>(id, 0, th(0), &K(0), &()),
            Err(StateError::KeyGroupOutOfRange { .. })
        ));
    }

    fn b_params(clock: &Arc<Clock>) -> KeyedBackendParams {
        KeyedBackendParams {
            operator_uid: "op".into(),
            subtask_index: 1,
            max_parallelism: 16,
            key_group_range: KeyGroupRange::all(16),
            clock: clock.clone(),
            local_dir: PathBuf::new(),
            incremental: false,
            lsm_cache_entries: 0,
        }
    }
}
