//! Operator (non-keyed) state: list, union list and broadcast state (DESIGN §6).
//!
//! Operator state belongs to one subtask as a whole, not to keys: a source's offsets, a
//! sink's pending transactions, the rules of a broadcast stream. It is small, so an
//! [`OperatorStateBackend`] keeps every element MessagePack-encoded in memory
//! ([`crate::format::encode`]) and a snapshot writes one operator file
//! ([`FileKind::Operator`]) synchronously.
//!
//! The kinds differ only in how they are redistributed on restore
//! ([`crate::restore::operator_state_for`]):
//!
//! * [`OperatorStateBackend::list_state`] — split evenly over the new subtasks;
//! * [`OperatorStateBackend::union_list_state`] — every subtask gets all elements;
//! * [`OperatorStateBackend::broadcast_state`] — a map every subtask holds a copy of;
//!   in the file each element is the encoded `(key, value)` pair.
//!
//! Registration returns a `Copy` handle holding no reference to the backend (as for
//! keyed state); its accessors take the backend. Registering a name again with the same
//! kind and types returns the same handle, otherwise
//! [`StateError::IncompatibleState`]. Restored states are typed at registration: the
//! kind must match, and the elements must decode with the requested types (Rust type
//! names are recorded but not compared for restored state, since they change when code
//! moves between modules).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::descriptor::{StateKind, StateMeta};
use crate::error::{Result, StateError};
use crate::format::{decode, encode, OperatorFileWriter};
use crate::key_group::KeyGroupRange;
use crate::keyed::{BackendKind, StateData};
use crate::restore::RestoredOperatorState;
use crate::snapshot::{FileHeader, FileKind, OperatorStateHandle, SnapshotTarget, StateFileRef};

/// Encoded key → encoded value of a broadcast state.
type EncodedMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The stored elements of one state.
#[derive(Clone, Debug)]
enum Elements {
    /// List and union list: encoded elements in order.
    List(Vec<Vec<u8>>),
    /// Broadcast: encoded key → encoded value.
    Map(EncodedMap),
    /// Restored and not yet registered: encoded elements as in the file.
    Raw(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
struct OpState {
    meta: StateMeta,
    /// Whether registered in this run (types then fixed), as opposed to only restored.
    registered: bool,
    elements: Elements,
}

/// A handle to an operator list or union list state of `T` elements.
pub struct OperatorListState<T> {
    id: usize,
    _t: PhantomData<fn() -> T>,
}

/// A handle to a broadcast state mapping `K` to `V`.
pub struct BroadcastState<K, V> {
    id: usize,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<T> Clone for OperatorListState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OperatorListState<T> {}
impl<K, V> Clone for BroadcastState<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for BroadcastState<K, V> {}

impl<T> std::fmt::Debug for OperatorListState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorListState")
            .field("id", &self.id)
            .finish()
    }
}
impl<K, V> std::fmt::Debug for BroadcastState<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastState")
            .field("id", &self.id)
            .finish()
    }
}

/// The operator state of one operator subtask.
#[derive(Debug, Default)]
pub struct OperatorStateBackend {
    states: Vec<OpState>,
}

fn describe(meta: &StateMeta) -> String {
    if meta.user_key_type.is_empty() {
        format!("{}<{}>", meta.kind.name(), meta.value_type)
    } else {
        format!(
            "{}<{}, {}>",
            meta.kind.name(),
            meta.user_key_type,
            meta.value_type
        )
    }
}

fn op_meta(name: &str, kind: StateKind, user_key_type: &str, value_type: &str) -> StateMeta {
    StateMeta {
        name: name.to_string(),
        kind,
        key_type: String::new(),
        namespace_type: String::new(),
        value_type: value_type.to_string(),
        user_key_type: user_key_type.to_string(),
        ttl: None,
    }
}

/// File-name-safe form of an operator uid, made unique by a hash of the uid.
fn file_name(uid: &str, subtask: u32) -> String {
    let safe: String = uid
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "op-{safe}-{:08x}-{subtask}.state",
        crc32fast::hash(uid.as_bytes())
    )
}

impl OperatorStateBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Finds or creates state `meta.name`; types a restored state of that name.
    fn register(
        &mut self,
        meta: StateMeta,
        type_raw: impl FnOnce(&str, Vec<Vec<u8>>) -> Result<Elements>,
    ) -> Result<usize> {
        let Some(id) = self.states.iter().position(|s| s.meta.name == meta.name) else {
            let elements = match meta.kind {
                StateKind::Broadcast => Elements::Map(BTreeMap::new()),
                _ => Elements::List(Vec::new()),
            };
            self.states.push(OpState {
                meta,
                registered: true,
                elements,
            });
            return Ok(self.states.len() - 1);
        };
        let existing = &mut self.states[id];
        let compatible = if existing.registered {
            existing.meta == meta
        } else {
            existing.meta.kind == meta.kind
        };
        if !compatible {
            return Err(StateError::IncompatibleState {
                name: meta.name.clone(),
                existing: describe(&existing.meta),
                requested: describe(&meta),
            });
        }
        if !existing.registered {
            let raw = match std::mem::replace(&mut existing.elements, Elements::Raw(Vec::new())) {
                Elements::Raw(raw) | Elements::List(raw) => raw,
                Elements::Map(m) => m.into_values().collect(),
            };
            existing.elements = type_raw(&meta.name, raw)?;
            existing.meta = meta;
            existing.registered = true;
        }
        Ok(id)
    }

    fn list_kind<T: StateData>(
        &mut self,
        name: &str,
        kind: StateKind,
    ) -> Result<OperatorListState<T>> {
        let meta = op_meta(name, kind, "", std::any::type_name::<T>());
        let id = self.register(meta, |name, raw| {
            // Check that every restored element is a `T`.
            for e in &raw {
                decode::<T>(name, e)?;
            }
            Ok(Elements::List(raw))
        })?;
        Ok(OperatorListState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers (or finds) list state `name`, split evenly over subtasks on rescale.
    pub fn list_state<T: StateData>(&mut self, name: &str) -> Result<OperatorListState<T>> {
        self.list_kind(name, StateKind::OperatorList)
    }

    /// Registers (or finds) union list state `name`: on restore every subtask gets all
    /// elements of all subtasks.
    pub fn union_list_state<T: StateData>(&mut self, name: &str) -> Result<OperatorListState<T>> {
        self.list_kind(name, StateKind::UnionList)
    }

    /// Registers (or finds) broadcast state `name`, copied to every subtask.
    pub fn broadcast_state<K: StateData + Ord, V: StateData>(
        &mut self,
        name: &str,
    ) -> Result<BroadcastState<K, V>> {
        let meta = op_meta(
            name,
            StateKind::Broadcast,
            std::any::type_name::<K>(),
            std::any::type_name::<V>(),
        );
        let id = self.register(meta, |name, raw| {
            let mut map = BTreeMap::new();
            for e in &raw {
                let (k, v): (K, V) = decode(name, e)?;
                map.insert(encode(name, &k)?, encode(name, &v)?);
            }
            Ok(Elements::Map(map))
        })?;
        Ok(BroadcastState {
            id,
            _t: PhantomData,
        })
    }

    fn state(&self, id: usize) -> Result<&OpState> {
        self.states.get(id).ok_or_else(|| StateError::Restore {
            reason: format!("operator state handle #{id} does not belong to this backend"),
        })
    }

    fn list_mut(&mut self, id: usize) -> Result<(&str, &mut Vec<Vec<u8>>)> {
        let s = self.states.get_mut(id).ok_or_else(|| StateError::Restore {
            reason: format!("operator state handle #{id} does not belong to this backend"),
        })?;
        match &mut s.elements {
            Elements::List(l) => Ok((&s.meta.name, l)),
            _ => Err(StateError::IncompatibleState {
                name: s.meta.name.clone(),
                existing: describe(&s.meta),
                requested: "a list state".into(),
            }),
        }
    }

    fn map_mut(&mut self, id: usize) -> Result<(&str, &mut EncodedMap)> {
        let s = self.states.get_mut(id).ok_or_else(|| StateError::Restore {
            reason: format!("operator state handle #{id} does not belong to this backend"),
        })?;
        match &mut s.elements {
            Elements::Map(m) => Ok((&s.meta.name, m)),
            _ => Err(StateError::IncompatibleState {
                name: s.meta.name.clone(),
                existing: describe(&s.meta),
                requested: "a broadcast state".into(),
            }),
        }
    }

    /// Metadata of every state (registered or restored).
    pub fn states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    /// Whether no state holds any element.
    pub fn is_empty(&self) -> bool {
        self.states.iter().all(|s| match &s.elements {
            Elements::List(l) | Elements::Raw(l) => l.is_empty(),
            Elements::Map(m) => m.is_empty(),
        })
    }

    /// Writes every non-empty state to one operator file in `target.exclusive_dir` and
    /// returns its handle, or `None` if there is nothing to write.
    pub fn snapshot(
        &self,
        target: &SnapshotTarget,
        operator_uid: &str,
        subtask: u32,
    ) -> Result<Option<OperatorStateHandle>> {
        let written: Vec<(&OpState, Vec<Vec<u8>>)> = self
            .states
            .iter()
            .map(|s| {
                let elements = match &s.elements {
                    Elements::List(l) | Elements::Raw(l) => l.clone(),
                    Elements::Map(m) => m
                        .iter()
                        .map(|(k, v)| {
                            // A 2-element MessagePack array of the two encodings is the
                            // encoding of the `(K, V)` tuple.
                            let mut e = Vec::with_capacity(1 + k.len() + v.len());
                            e.push(0x92);
                            e.extend_from_slice(k);
                            e.extend_from_slice(v);
                            e
                        })
                        .collect(),
                };
                (s, elements)
            })
            .filter(|(_, e)| !e.is_empty())
            .collect();
        if written.is_empty() {
            return Ok(None);
        }
        let header = FileHeader {
            kind: FileKind::Operator,
            operator_uid: operator_uid.to_string(),
            subtask_index: subtask,
            backend: BackendKind::Heap,
            max_parallelism: 0,
            key_group_range: KeyGroupRange::new(0, 0),
            checkpoint_id: target.checkpoint_id,
            states: written.iter().map(|(s, _)| s.meta.clone()).collect(),
        };
        let mut writer = OperatorFileWriter::new(header);
        for (i, (_, elements)) in written.iter().enumerate() {
            writer.push_state(i as u32, elements.iter().map(Vec::as_slice))?;
        }
        let bytes = writer.finish();
        let name = file_name(operator_uid, subtask);
        target
            .storage
            .write_file(&target.exclusive_dir.join(&name), &bytes)?;
        Ok(Some(OperatorStateHandle {
            file: StateFileRef {
                path: name,
                size: bytes.len() as u64,
                shared: false,
            },
            states: written
                .iter()
                .map(|(s, e)| (s.meta.clone(), e.len() as u64))
                .collect(),
        }))
    }

    /// Loads restored state (from [`crate::restore::operator_state_for`]); states are
    /// typed when registered. Replaces any state of the same name.
    pub fn restore(&mut self, parts: RestoredOperatorState) {
        for part in parts.states {
            let state = OpState {
                meta: part.meta,
                registered: false,
                elements: Elements::Raw(part.elements),
            };
            match self
                .states
                .iter()
                .position(|s| s.meta.name == state.meta.name)
            {
                Some(i) => self.states[i] = state,
                None => self.states.push(state),
            }
        }
    }
}

impl<T: StateData> OperatorListState<T> {
    /// All elements, in order.
    pub fn get(&self, backend: &OperatorStateBackend) -> Result<Vec<T>> {
        let s = backend.state(self.id)?;
        match &s.elements {
            Elements::List(l) => l.iter().map(|e| decode(&s.meta.name, e)).collect(),
            _ => Err(StateError::IncompatibleState {
                name: s.meta.name.clone(),
                existing: describe(&s.meta),
                requested: "a list state".into(),
            }),
        }
    }

    /// Appends an element.
    pub fn add(&self, backend: &mut OperatorStateBackend, value: &T) -> Result<()> {
        let (name, l) = backend.list_mut(self.id)?;
        let e = encode(name, value)?;
        l.push(e);
        Ok(())
    }

    /// Replaces all elements.
    pub fn update(&self, backend: &mut OperatorStateBackend, values: &[T]) -> Result<()> {
        let (name, l) = backend.list_mut(self.id)?;
        let encoded = values
            .iter()
            .map(|v| encode(name, v))
            .collect::<Result<Vec<_>>>()?;
        *l = encoded;
        Ok(())
    }

    /// Removes all elements.
    pub fn clear(&self, backend: &mut OperatorStateBackend) -> Result<()> {
        backend.list_mut(self.id)?.1.clear();
        Ok(())
    }
}

impl<K: StateData + Ord, V: StateData> BroadcastState<K, V> {
    fn map<'b>(&self, backend: &'b OperatorStateBackend) -> Result<(&'b str, &'b EncodedMap)> {
        let s = backend.state(self.id)?;
        match &s.elements {
            Elements::Map(m) => Ok((&s.meta.name, m)),
            _ => Err(StateError::IncompatibleState {
                name: s.meta.name.clone(),
                existing: describe(&s.meta),
                requested: "a broadcast state".into(),
            }),
        }
    }

    /// The value of `key`, if any.
    pub fn get(&self, backend: &OperatorStateBackend, key: &K) -> Result<Option<V>> {
        let (name, m) = self.map(backend)?;
        m.get(&encode(name, key)?)
            .map(|v| decode(name, v))
            .transpose()
    }

    /// Whether `key` has a value.
    pub fn contains(&self, backend: &OperatorStateBackend, key: &K) -> Result<bool> {
        let (name, m) = self.map(backend)?;
        Ok(m.contains_key(&encode(name, key)?))
    }

    /// Sets the value of `key`.
    pub fn put(&self, backend: &mut OperatorStateBackend, key: &K, value: &V) -> Result<()> {
        let (name, m) = backend.map_mut(self.id)?;
        let (k, v) = (encode(name, key)?, encode(name, value)?);
        m.insert(k, v);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&self, backend: &mut OperatorStateBackend, key: &K) -> Result<()> {
        let (name, m) = backend.map_mut(self.id)?;
        let k = encode(name, key)?;
        m.remove(&k);
        Ok(())
    }

    /// Every entry, sorted by key.
    pub fn entries(&self, backend: &OperatorStateBackend) -> Result<Vec<(K, V)>> {
        let (name, m) = self.map(backend)?;
        let mut out = m
            .iter()
            .map(|(k, v)| Ok((decode(name, k)?, decode(name, v)?)))
            .collect::<Result<Vec<(K, V)>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes every entry.
    pub fn clear(&self, backend: &mut OperatorStateBackend) -> Result<()> {
        backend.map_mut(self.id)?.1.clear();
        Ok(())
    }
}
