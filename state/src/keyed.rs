//! The keyed state API that operators use, over either backend.
//!
//! # Model
//!
//! A [`KeyedStateBackend`] belongs to one subtask of one keyed operator and owns the
//! state of the key groups in its [`KeyGroupRange`]. Every entry is addressed by
//! *(state, key group, key, namespace)*: the key is the record's key, the namespace is
//! `()` for user state and a window for window contents. Operators either set a current
//! key ([`KeyedStateBackend::set_current_key`], Flink's style) and use the typed
//! accessors, or pass the key explicitly on the per-record hot path
//! ([`KeyedStateBackend::value_modify`]), which avoids cloning the key.
//!
//! Registering a descriptor returns a small `Copy` handle ([`ValueState`], [`ListState`],
//! …); handles hold no reference to the backend, so an operator can keep both as fields
//! and pass `&mut backend` to each access. Registering the same name again with the same
//! kind and types returns the same handle.
//!
//! # What a backend stores
//!
//! Each state kind maps onto one stored type `S` per (key, namespace): `T` for Value and
//! Reducing, `Vec<T>` for List, `BTreeMap<UK, UV>` for Map (ordered, so iteration is
//! deterministic), `ACC` for Aggregating. The backends implement only the
//! [`KeyedStore`] operations on stored values (get, modify, remove, iterate, snapshot,
//! restore); the kinds' semantics live once, here. Values are encoded with MessagePack
//! (rmp-serde, struct fields by name) wherever they leave the heap, so snapshots are
//! self-describing.
//!
//! # Snapshots
//!
//! [`KeyedStateBackend::snapshot`] is the synchronous part of a checkpoint: it takes a
//! consistent view (heap: copy-on-write at key-group granularity; lsm: an LSM read
//! snapshot plus the set of keys changed since the last checkpoint) and returns an
//! [`AsyncSnapshot`] whose [`run`](AsyncSnapshot::run) serializes and writes the files
//! off the task thread. Restoring ([`KeyedStateBackend::restore`]) reads the key groups
//! of this backend's range from any number of handles (rescaling) before states are
//! registered; raw restored entries are typed lazily when their state is registered.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateKind, StateMeta, TtlConfig, ValueStateDescriptor,
};
use crate::error::{Result, StateError};
use crate::heap::HeapKeyedStateBackend;
use crate::key_group::{key_group_and_table_hash, KeyGroupRange};
use crate::lsm::LsmKeyedStateBackend;
use crate::snapshot::{KeyedStateHandle, SnapshotTarget};
use crate::storage::CheckpointStorage;

/// A record key: hashable with a hash that is stable across processes.
pub trait StateKey:
    Clone + Eq + Hash + Ord + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// A hash identical in every process and build (feeds key-group assignment).
    fn stable_hash(&self) -> u64;
}

/// A value that can be kept in state.
pub trait StateData: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateData for T {}

/// A namespace (`()` for user state, a window for window contents).
pub trait Namespace: StateData + Eq + Hash + Ord + Debug {}
impl<T: StateData + Eq + Hash + Ord + Debug> Namespace for T {}

/// Processing time for TTL, in milliseconds since the epoch; injected so tests control it.
pub trait TtlClock: Send + Sync {
    /// The current processing time.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemTtlClock;

impl TtlClock for SystemTtlClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Index of a registered state within its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// Which backend implementation to use (`state.backend.type`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum BackendKind {
    /// In-memory maps per key group (Flink's `hashmap`).
    #[default]
    Heap,
    /// Embedded LSM store on local disk (Flink's `rocksdb`).
    Lsm,
}

impl BackendKind {
    /// Parses `heap` / `hashmap` / `lsm` / `rocksdb` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "heap" | "hashmap" => Ok(BackendKind::Heap),
            "lsm" | "rocksdb" => Ok(BackendKind::Lsm),
            other => Err(StateError::Config {
                key: "state.backend.type".into(),
                reason: format!("unknown backend `{other}`; expected heap (alias hashmap) or lsm (alias rocksdb)"),
            }),
        }
    }

    /// The canonical name (`heap`, `lsm`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::Lsm => "lsm",
        }
    }
}

/// Where and how a keyed backend is created.
#[derive(Clone)]
pub struct KeyedBackendParams {
    /// Stable id of the operator (its `uid`), recorded in snapshots.
    pub operator_uid: String,
    /// This subtask's index.
    pub subtask_index: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// The key groups this subtask owns.
    pub key_group_range: KeyGroupRange,
    /// Processing time for TTL.
    pub clock: Arc<dyn TtlClock>,
    /// Local working directory (lsm only): the backend creates a fresh subdirectory and
    /// removes it when dropped.
    pub local_dir: std::path::PathBuf,
    /// Whether lsm checkpoints are incremental (`execution.checkpointing.incremental`).
    pub incremental: bool,
    /// Entries the lsm backend keeps decoded in memory before writing back.
    pub lsm_cache_entries: usize,
}

/// The operations a backend implements on stored values. Kinds' semantics are built on
/// top of these by [`KeyedStateBackend`]; see the module docs.
///
/// `key_group` is always the key group of `key` and inside the backend's range (the
/// caller checks); `key_hash` is [`table_hash`](crate::key_group::table_hash) of the key's
/// stable hash, computed once with the key group, for backends' hash tables. TTL is the backend's business: `get`/`modify` never see an expired
/// entry, and `modify` stamps the entry with the current time when it leaves a value.
pub trait KeyedStore<K: StateKey> {
    /// Registers a state (or finds it by name). Fails if the name exists with another
    /// kind or other types. Restored raw entries of that name become typed here.
    fn register<N: Namespace, S: StateData>(&mut self, meta: StateMeta) -> Result<StateId>;

    /// The stored value of (key, namespace), if any (a clone).
    fn get<N: Namespace, S: StateData>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<Option<S>>;

    /// Runs `f` on the stored value (None if absent); afterwards `Some` is stored and
    /// `None` removes the entry.
    fn modify<N: Namespace, S: StateData, R>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R>;

    /// Removes the entry of (key, namespace) in state `id`, whatever its stored type.
    fn remove<N: Namespace>(
        &mut self,
        id: StateId,
        key_group: u32,
        key_hash: u64,
        key: &K,
        namespace: &N,
    ) -> Result<()>;

    /// Every (key, namespace) with a live entry in state `id`, sorted.
    fn entries_keys<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>>;

    /// Number of live entries of state `id` per key group of the backend's range.
    fn entry_counts(&mut self, id: StateId) -> Result<Vec<(u32, u64)>>;

    /// Removes up to `budget` expired entries; returns how many were removed.
    fn cleanup_expired(&mut self, budget: usize) -> Result<usize>;

    /// The synchronous part of a snapshot.
    fn snapshot(&mut self, target: SnapshotTarget) -> Result<AsyncSnapshot>;

    /// Loads the key groups of this backend's range from `handles` (before registering).
    /// The handles' file paths are relative to `snapshot_dir`, the directory that holds
    /// the snapshot's `_metadata` ([`StateFileRef::resolve`](crate::snapshot::StateFileRef::resolve)).
    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        snapshot_dir: &std::path::Path,
        storage: &dyn CheckpointStorage,
    ) -> Result<()>;

    /// Metadata of every registered (and restored, not yet registered) state.
    fn states(&self) -> Vec<StateMeta>;

    /// Checkpoint `checkpoint_id` completed: its files are the new base for incremental
    /// snapshots, and everything it subsumes can be forgotten.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64);

    /// Checkpoint `checkpoint_id` was aborted: the next incremental snapshot must still
    /// contain its changes.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
}

/// The asynchronous part of a snapshot: serialization and upload, run off the task thread.
pub struct AsyncSnapshot {
    job: Box<dyn FnOnce() -> Result<KeyedStateHandle> + Send>,
}

impl AsyncSnapshot {
    /// Wraps the work to run.
    pub fn new(job: impl FnOnce() -> Result<KeyedStateHandle> + Send + 'static) -> Self {
        Self { job: Box::new(job) }
    }

    /// Serializes and writes the snapshot; returns its handle.
    pub fn run(self) -> Result<KeyedStateHandle> {
        (self.job)()
    }
}

impl Debug for AsyncSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncSnapshot")
    }
}

/// Handle of a keyed value state.
pub struct ValueState<N, T> {
    id: StateId,
    _t: PhantomData<fn() -> (N, T)>,
}
/// Handle of a keyed list state.
pub struct ListState<N, T> {
    id: StateId,
    _t: PhantomData<fn() -> (N, T)>,
}
/// The types a map state handle stands for.
type MapTypes<N, UK, UV> = fn() -> (N, UK, UV);

/// Handle of a keyed map state.
pub struct MapState<N, UK, UV> {
    id: StateId,
    _t: PhantomData<MapTypes<N, UK, UV>>,
}
/// Handle of a keyed reducing state.
pub struct ReducingState<N, T> {
    id: StateId,
    reduce: ReduceFn<T>,
    _t: PhantomData<fn() -> N>,
}
/// Handle of a keyed aggregating state.
pub struct AggregatingState<N, IN, ACC, OUT> {
    id: StateId,
    aggregate: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    _t: PhantomData<fn() -> N>,
}

macro_rules! copy_handle {
    ($ty:ident < $($p:ident),+ >) => {
        impl<$($p),+> Clone for $ty<$($p),+> {
            fn clone(&self) -> Self { *self }
        }
        impl<$($p),+> Copy for $ty<$($p),+> {}
        impl<$($p),+> $ty<$($p),+> {
            /// The state's index in its backend.
            pub fn id(&self) -> StateId { self.id }
        }
    };
}
copy_handle!(ValueState<N, T>);
copy_handle!(ListState<N, T>);
copy_handle!(MapState<N, UK, UV>);

impl<N, T> ReducingState<N, T> {
    /// The state's index in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }
}
impl<N, IN, ACC, OUT> AggregatingState<N, IN, ACC, OUT> {
    /// The state's index in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }
}

impl<N, T> Clone for ReducingState<N, T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            reduce: self.reduce.clone(),
            _t: PhantomData,
        }
    }
}
impl<N, IN, ACC, OUT> Clone for AggregatingState<N, IN, ACC, OUT> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            aggregate: self.aggregate.clone(),
            _t: PhantomData,
        }
    }
}

fn meta<K, N, V>(name: &str, kind: StateKind, ttl: Option<TtlConfig>, user_key: &str) -> StateMeta {
    StateMeta {
        name: name.to_owned(),
        kind,
        key_type: std::any::type_name::<K>().to_owned(),
        namespace_type: std::any::type_name::<N>().to_owned(),
        value_type: std::any::type_name::<V>().to_owned(),
        user_key_type: user_key.to_owned(),
        ttl,
    }
}

/// One of the two backend implementations, chosen at run time by configuration.
pub enum Backend<K: StateKey> {
    /// In-memory.
    Heap(HeapKeyedStateBackend<K>),
    /// Embedded LSM store (boxed: it is much larger than the heap backend's handle).
    Lsm(Box<LsmKeyedStateBackend<K>>),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &mut $self.backend {
            Backend::Heap($b) => $e,
            Backend::Lsm($b) => $e,
        }
    };
}

/// The key group of `key` (checked against `range`) and its table hash.
#[inline]
fn locate<K: StateKey>(key: &K, max_parallelism: u32, range: KeyGroupRange) -> Result<(u32, u64)> {
    let (kg, hash) = key_group_and_table_hash(key.stable_hash(), max_parallelism);
    if range.contains(kg) {
        Ok((kg, hash))
    } else {
        Err(StateError::KeyGroupOutOfRange {
            key_group: kg,
            range,
        })
    }
}

/// Explicit-key access to one value state, from [`KeyedStateBackend::value_access`].
pub struct ValueAccess<'a, K: StateKey, N: Namespace, T: StateData> {
    inner: Access<'a, K, N, T>,
    range: KeyGroupRange,
    max_parallelism: u32,
}

enum Access<'a, K: StateKey, N: Namespace, T: StateData> {
    Heap(&'a mut crate::heap::HeapTable<K, N, T>),
    Lsm(&'a mut LsmKeyedStateBackend<K>, StateId),
}

impl<K: StateKey, N: Namespace, T: StateData> ValueAccess<'_, K, N, T> {
    /// [`KeyedStateBackend::value_modify`] through the resolved state.
    #[inline]
    pub fn modify<R>(&mut self, key: &K, ns: &N, f: impl FnOnce(&mut Option<T>) -> R) -> Result<R> {
        let (kg, hash) = locate(key, self.max_parallelism, self.range)?;
        match &mut self.inner {
            Access::Heap(t) => t.modify(kg, hash, key, ns, f),
            Access::Lsm(b, id) => b.modify::<N, T, R>(*id, kg, hash, key, ns, f),
        }
    }
}

/// The current key of a backend, with its key group.
struct CurrentKey<K> {
    key: K,
    key_group: u32,
    hash: u64,
}

/// A keyed state backend (heap or lsm) plus its current key: what a keyed operator
/// holds.
pub struct KeyedStateBackend<K: StateKey> {
    backend: Backend<K>,
    current: Option<CurrentKey<K>>,
    range: KeyGroupRange,
    max_parallelism: u32,
}

impl<K: StateKey> KeyedStateBackend<K> {
    /// Creates a backend of `kind`.
    pub fn new(kind: BackendKind, params: KeyedBackendParams) -> Result<Self> {
        let range = params.key_group_range;
        let max_parallelism = params.max_parallelism;
        let backend = match kind {
            BackendKind::Heap => Backend::Heap(HeapKeyedStateBackend::new(params)),
            BackendKind::Lsm => Backend::Lsm(Box::new(LsmKeyedStateBackend::new(params)?)),
        };
        Ok(Self {
            backend,
            current: None,
            range,
            max_parallelism,
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Heap(_) => BackendKind::Heap,
            Backend::Lsm(_) => BackendKind::Lsm,
        }
    }

    /// The key groups this backend owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The key group of `key`, checked against this backend's range.
    #[inline]
    pub fn key_group_of(&self, key: &K) -> Result<u32> {
        self.locate(key).map(|(kg, _)| kg)
    }

    /// The key group of `key` (checked against this backend's range) and its table hash.
    #[inline]
    fn locate(&self, key: &K) -> Result<(u32, u64)> {
        locate(key, self.max_parallelism, self.range)
    }

    /// Sets the key that the typed accessors act on.
    pub fn set_current_key(&mut self, key: K) -> Result<()> {
        let (key_group, hash) = self.locate(&key)?;
        self.current = Some(CurrentKey {
            key,
            key_group,
            hash,
        });
        Ok(())
    }

    /// The current key, if set.
    pub fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current(&self, name: &StateId) -> Result<(u32, u64, &K)> {
        self.current
            .as_ref()
            .map(|c| (c.key_group, c.hash, &c.key))
            .ok_or_else(|| StateError::NoCurrentKey {
                name: format!("#{}", name.0),
            })
    }

    // ---- registration ----

    /// Registers (or finds) a value state.
    pub fn value_state<N: Namespace, T: StateData>(
        &mut self,
        d: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<N, T>> {
        let m = meta::<K, N, T>(&d.name, StateKind::Value, d.ttl, "");
        let id = dispatch!(self, b => b.register::<N, T>(m))?;
        Ok(ValueState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers (or finds) a list state.
    pub fn list_state<N: Namespace, T: StateData>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<ListState<N, T>> {
        let m = meta::<K, N, T>(&d.name, StateKind::List, d.ttl, "");
        let id = dispatch!(self, b => b.register::<N, Vec<T>>(m))?;
        Ok(ListState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers (or finds) a map state.
    pub fn map_state<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        d: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<N, UK, UV>> {
        let m = meta::<K, N, UV>(&d.name, StateKind::Map, d.ttl, std::any::type_name::<UK>());
        let id = dispatch!(self, b => b.register::<N, BTreeMap<UK, UV>>(m))?;
        Ok(MapState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers (or finds) a reducing state.
    pub fn reducing_state<N: Namespace, T: StateData>(
        &mut self,
        d: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<N, T>> {
        let m = meta::<K, N, T>(&d.name, StateKind::Reducing, d.ttl, "");
        let id = dispatch!(self, b => b.register::<N, T>(m))?;
        Ok(ReducingState {
            id,
            reduce: d.reduce.clone(),
            _t: PhantomData,
        })
    }

    /// Registers (or finds) an aggregating state.
    pub fn aggregating_state<N: Namespace, IN, ACC: StateData, OUT>(
        &mut self,
        d: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>> {
        let m = meta::<K, N, ACC>(&d.name, StateKind::Aggregating, d.ttl, "");
        let id = dispatch!(self, b => b.register::<N, ACC>(m))?;
        Ok(AggregatingState {
            id,
            aggregate: d.aggregate.clone(),
            _t: PhantomData,
        })
    }

    // ---- explicit-key primitives (hot path) ----

    /// The stored value of `state` for (`key`, `ns`).
    #[inline]
    pub fn value_get<N: Namespace, T: StateData>(
        &mut self,
        state: &ValueState<N, T>,
        key: &K,
        ns: &N,
    ) -> Result<Option<T>> {
        let (kg, hash) = self.locate(key)?;
        dispatch!(self, b => b.get::<N, T>(state.id, kg, hash, key, ns))
    }

    /// Read-modify-write of `state` for (`key`, `ns`) in one lookup: `f` sees the
    /// current value (None if absent); `Some` afterwards is stored, `None` clears.
    #[inline]
    pub fn value_modify<N: Namespace, T: StateData, R>(
        &mut self,
        state: &ValueState<N, T>,
        key: &K,
        ns: &N,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        let (kg, hash) = self.locate(key)?;
        dispatch!(self, b => b.modify::<N, T, R>(state.id, kg, hash, key, ns, f))
    }

    /// Value state: one handle for many explicit-key accesses, e.g. a batch of records.
    ///
    /// It resolves the state's typed table once, so each [`ValueAccess::modify`] is a
    /// key-group lookup and a hash-table probe. Fails like [`value_modify`]
    /// (Self::value_modify) if the state's types do not match.
    #[inline]
    pub fn value_access<N: Namespace, T: StateData>(
        &mut self,
        state: &ValueState<N, T>,
    ) -> Result<ValueAccess<'_, K, N, T>> {
        let inner = match &mut self.backend {
            Backend::Heap(b) => Access::Heap(b.typed::<N, T>(state.id)?),
            Backend::Lsm(b) => Access::Lsm(b, state.id),
        };
        Ok(ValueAccess {
            inner,
            range: self.range,
            max_parallelism: self.max_parallelism,
        })
    }

    fn modify_current<N: Namespace, S: StateData, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        let cur = self
            .current
            .as_ref()
            .ok_or_else(|| StateError::NoCurrentKey {
                name: format!("#{}", id.0),
            })?;
        let (kg, key) = (cur.key_group, &cur.key);
        match &mut self.backend {
            Backend::Heap(b) => b.modify::<N, S, R>(id, kg, cur.hash, key, ns, f),
            Backend::Lsm(b) => b.modify::<N, S, R>(id, kg, cur.hash, key, ns, f),
        }
    }

    fn get_current<N: Namespace, S: StateData>(
        &mut self,
        id: StateId,
        ns: &N,
    ) -> Result<Option<S>> {
        let cur = self
            .current
            .as_ref()
            .ok_or_else(|| StateError::NoCurrentKey {
                name: format!("#{}", id.0),
            })?;
        let (kg, key) = (cur.key_group, &cur.key);
        match &mut self.backend {
            Backend::Heap(b) => b.get::<N, S>(id, kg, cur.hash, key, ns),
            Backend::Lsm(b) => b.get::<N, S>(id, kg, cur.hash, key, ns),
        }
    }

    // ---- current-key accessors, per kind ----

    /// Value state: the value for the current key in `ns`.
    pub fn value<N: Namespace, T: StateData>(
        &mut self,
        s: &ValueState<N, T>,
        ns: &N,
    ) -> Result<Option<T>> {
        self.get_current::<N, T>(s.id, ns)
    }

    /// Value state: replaces the value for the current key in `ns`.
    pub fn update<N: Namespace, T: StateData>(
        &mut self,
        s: &ValueState<N, T>,
        ns: &N,
        value: T,
    ) -> Result<()> {
        self.modify_current::<N, T, ()>(s.id, ns, |v| *v = Some(value))
    }

    /// Clears any state kind for the current key in `ns`.
    pub fn clear<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<()> {
        // The stored type is irrelevant for removal; the backend checks it by id.
        let cur = self.current(&id)?;
        let (kg, hash, key) = (cur.0, cur.1, cur.2.clone());
        dispatch!(self, b => b.remove::<N>(id, kg, hash, &key, ns))
    }

    /// List state: the elements for the current key (empty if none).
    pub fn list_get<N: Namespace, T: StateData>(
        &mut self,
        s: &ListState<N, T>,
        ns: &N,
    ) -> Result<Vec<T>> {
        Ok(self.get_current::<N, Vec<T>>(s.id, ns)?.unwrap_or_default())
    }

    /// List state: appends an element.
    pub fn list_add<N: Namespace, T: StateData>(
        &mut self,
        s: &ListState<N, T>,
        ns: &N,
        value: T,
    ) -> Result<()> {
        self.modify_current::<N, Vec<T>, ()>(s.id, ns, |v| {
            v.get_or_insert_with(Vec::new).push(value)
        })
    }

    /// List state: appends elements.
    pub fn list_add_all<N: Namespace, T: StateData>(
        &mut self,
        s: &ListState<N, T>,
        ns: &N,
        values: Vec<T>,
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.modify_current::<N, Vec<T>, ()>(s.id, ns, |v| {
            v.get_or_insert_with(Vec::new).extend(values)
        })
    }

    /// List state: replaces the elements (an empty list clears).
    pub fn list_update<N: Namespace, T: StateData>(
        &mut self,
        s: &ListState<N, T>,
        ns: &N,
        values: Vec<T>,
    ) -> Result<()> {
        self.modify_current::<N, Vec<T>, ()>(s.id, ns, |v| {
            *v = (!values.is_empty()).then_some(values)
        })
    }

    /// Map state: the value under `user_key`.
    pub fn map_get<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        s: &MapState<N, UK, UV>,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        self.modify_current::<N, BTreeMap<UK, UV>, _>(s.id, ns, |m| {
            m.as_ref().and_then(|m| m.get(user_key).cloned())
        })
    }

    /// Map state: whether `user_key` is present.
    pub fn map_contains<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        s: &MapState<N, UK, UV>,
        ns: &N,
        user_key: &UK,
    ) -> Result<bool> {
        self.modify_current::<N, BTreeMap<UK, UV>, _>(s.id, ns, |m| {
            m.as_ref().is_some_and(|m| m.contains_key(user_key))
        })
    }

    /// Map state: puts `user_key → value`.
    pub fn map_put<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        s: &MapState<N, UK, UV>,
        ns: &N,
        user_key: UK,
        value: UV,
    ) -> Result<()> {
        self.modify_current::<N, BTreeMap<UK, UV>, ()>(s.id, ns, |m| {
            m.get_or_insert_with(BTreeMap::new).insert(user_key, value);
        })
    }

    /// Map state: removes `user_key`; the map is cleared when it becomes empty.
    pub fn map_remove<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        s: &MapState<N, UK, UV>,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        self.modify_current::<N, BTreeMap<UK, UV>, _>(s.id, ns, |m| {
            let removed = m.as_mut().and_then(|map| map.remove(user_key));
            if m.as_ref().is_some_and(|map| map.is_empty()) {
                *m = None;
            }
            removed
        })
    }

    /// Map state: every entry, ordered by user key.
    pub fn map_entries<N: Namespace, UK: StateData + Ord, UV: StateData>(
        &mut self,
        s: &MapState<N, UK, UV>,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>> {
        Ok(self
            .get_current::<N, BTreeMap<UK, UV>>(s.id, ns)?
            .map(|m| m.into_iter().collect())
            .unwrap_or_default())
    }

    /// Reducing state: the reduced value.
    pub fn reducing_get<N: Namespace, T: StateData>(
        &mut self,
        s: &ReducingState<N, T>,
        ns: &N,
    ) -> Result<Option<T>> {
        self.get_current::<N, T>(s.id, ns)
    }

    /// Reducing state: folds `value` in.
    pub fn reducing_add<N: Namespace, T: StateData>(
        &mut self,
        s: &ReducingState<N, T>,
        ns: &N,
        value: T,
    ) -> Result<()> {
        let reduce = s.reduce.clone();
        self.modify_current::<N, T, ()>(s.id, ns, |v| {
            *v = Some(match v.take() {
                Some(acc) => reduce(&acc, value),
                None => value,
            })
        })
    }

    /// Aggregating state: the result, if anything was added.
    pub fn aggregating_get<N: Namespace, IN, ACC: StateData, OUT>(
        &mut self,
        s: &AggregatingState<N, IN, ACC, OUT>,
        ns: &N,
    ) -> Result<Option<OUT>> {
        Ok(self
            .get_current::<N, ACC>(s.id, ns)?
            .map(|acc| s.aggregate.get_result(&acc)))
    }

    /// Aggregating state: adds `value` to the accumulator.
    pub fn aggregating_add<N: Namespace, IN, ACC: StateData, OUT>(
        &mut self,
        s: &AggregatingState<N, IN, ACC, OUT>,
        ns: &N,
        value: IN,
    ) -> Result<()> {
        let agg = s.aggregate.clone();
        self.modify_current::<N, ACC, ()>(s.id, ns, |v| {
            let acc = v.get_or_insert_with(|| agg.create_accumulator());
            agg.add(value, acc);
        })
    }

    // ---- whole-state operations ----

    /// Every key with an entry of state `id` in namespace `ns`, sorted (for timers,
    /// end-of-input callbacks and tools).
    pub fn keys<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<Vec<K>> {
        let all = dispatch!(self, b => b.entries_keys::<N>(id))?;
        Ok(all
            .into_iter()
            .filter(|(_, n)| n == ns)
            .map(|(k, _)| k)
            .collect())
    }

    /// Every (key, namespace) with an entry of state `id`, sorted.
    pub fn keys_and_namespaces<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>> {
        dispatch!(self, b => b.entries_keys::<N>(id))
    }

    /// Live entries of state `id` per key group.
    pub fn entry_counts(&mut self, id: StateId) -> Result<Vec<(u32, u64)>> {
        dispatch!(self, b => b.entry_counts(id))
    }

    /// Removes up to `budget` expired entries (incremental TTL cleanup).
    pub fn cleanup_expired(&mut self, budget: usize) -> Result<usize> {
        dispatch!(self, b => b.cleanup_expired(budget))
    }

    /// Takes the synchronous part of a snapshot; run the result off the task thread.
    pub fn snapshot(&mut self, target: SnapshotTarget) -> Result<AsyncSnapshot> {
        dispatch!(self, b => b.snapshot(target))
    }

    /// Restores this backend's key groups from `handles` (any number: rescaling), whose
    /// file paths are relative to `snapshot_dir` (the directory holding `_metadata`).
    pub fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        snapshot_dir: &std::path::Path,
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        dispatch!(self, b => b.restore(handles, snapshot_dir, storage))
    }

    /// Forwards checkpoint completion to the backend.
    pub fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        dispatch!(self, b => b.notify_checkpoint_complete(checkpoint_id))
    }

    /// Forwards a checkpoint abort to the backend.
    pub fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        dispatch!(self, b => b.notify_checkpoint_aborted(checkpoint_id))
    }

    /// Metadata of every state.
    pub fn states(&self) -> Vec<StateMeta> {
        match &self.backend {
            Backend::Heap(b) => b.states(),
            Backend::Lsm(b) => b.states(),
        }
    }

    /// The implementation, for backend-specific calls (tests, metrics).
    pub fn backend_mut(&mut self) -> &mut Backend<K> {
        &mut self.backend
    }
}
