//! The lsm backend (placeholder while it is being written).
use crate::descriptor::StateMeta;
use crate::error::Result;
use crate::error::StateError;
use crate::keyed::{AsyncSnapshot, Namespace, StateData, StateId};
use crate::keyed::{KeyedBackendParams, StateKey};
use crate::snapshot::{KeyedStateHandle, SnapshotTarget};
use crate::storage::CheckpointStorage;

/// Keyed state in an embedded LSM store.
pub struct LsmKeyedStateBackend<K: StateKey> {
    _p: std::marker::PhantomData<K>,
}

impl<K: StateKey> LsmKeyedStateBackend<K> {
    /// A new, empty backend.
    pub fn new(_params: KeyedBackendParams) -> Result<Self> {
        Ok(Self {
            _p: std::marker::PhantomData,
        })
    }
}

impl<K: StateKey> crate::keyed::KeyedStore<K> for LsmKeyedStateBackend<K> {
    fn register<N: Namespace, S: StateData>(&mut self, _meta: StateMeta) -> Result<StateId> {
        Err(wip())
    }
    fn get<N: Namespace, S: StateData>(
        &mut self,
        _id: StateId,
        _kg: u32,
        _key: &K,
        _ns: &N,
    ) -> Result<Option<S>> {
        Err(wip())
    }
    fn modify<N: Namespace, S: StateData, R>(
        &mut self,
        _id: StateId,
        _kg: u32,
        _key: &K,
        _ns: &N,
        _f: impl FnOnce(&mut Option<S>) -> R,
    ) -> Result<R> {
        Err(wip())
    }
    fn remove<N: Namespace>(&mut self, _id: StateId, _kg: u32, _key: &K, _ns: &N) -> Result<()> {
        Err(wip())
    }
    fn entries_keys<N: Namespace>(&mut self, _id: StateId) -> Result<Vec<(K, N)>> {
        Err(wip())
    }
    fn entry_counts(&mut self, _id: StateId) -> Result<Vec<(u32, u64)>> {
        Err(wip())
    }
    fn cleanup_expired(&mut self, _budget: usize) -> Result<usize> {
        Err(wip())
    }
    fn snapshot(&mut self, _target: SnapshotTarget) -> Result<AsyncSnapshot> {
        Err(wip())
    }
    fn restore(
        &mut self,
        _handles: &[KeyedStateHandle],
        _storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        Err(wip())
    }
    fn states(&self) -> Vec<StateMeta> {
        Vec::new()
    }
    fn notify_checkpoint_complete(&mut self, _id: u64) {}
    fn notify_checkpoint_aborted(&mut self, _id: u64) {}
}

// Work-in-progress placeholder: replaced by the real implementation before it lands.
fn wip() -> StateError {
    StateError::Config {
        key: "state.backend.type".into(),
        reason: "backend under construction".into(),
    }
}
