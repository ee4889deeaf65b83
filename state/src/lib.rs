//! rill-state: keyed and operator state, key groups, state backends, snapshots and
//! checkpoint storage (DESIGN §6).
//!
//! * [`key_group`]: the key-group formula and [`KeyGroupRange`]s; the one place that
//!   maps keys to subtasks.
//! * [`descriptor`]: how operators declare state (name, kind, types, TTL).
//! * [`keyed`]: the keyed state API ([`KeyedStateBackend`]) over two backends —
//!   [`heap`] (in memory, copy-on-write snapshots) and [`lsm`] (fjall on local disk,
//!   incremental checkpoints).
//! * [`operator_state`]: operator list, union list and broadcast state.
//! * [`snapshot`]: handles, `_metadata` and the self-describing state file format
//!   ([`format`] reads and writes it); [`restore`] assigns snapshot state to the subtasks of
//!   a (possibly rescaled) job.
//! * [`storage`]: [`CheckpointStorage`] and its file-system implementation, the
//!   checkpoint directory layout, retention and cleaning; [`shared`] reference-counts
//!   files shared by incremental checkpoints; [`in_flight`] stores the channel data of
//!   unaligned checkpoints.
//!
//! rill-state knows nothing of the network or of operators: dataflow holds a backend per
//! keyed operator subtask and calls it.

pub mod descriptor;
pub mod error;
pub mod format;
pub mod heap;
pub mod in_flight;
pub mod key_group;
pub mod keyed;
pub mod lsm;
pub mod operator_state;
pub mod restore;
pub mod shared;
pub mod snapshot;
pub mod storage;

pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateKind, StateMeta, TtlConfig, TtlUpdateType, ValueStateDescriptor,
};
pub use error::{Result, StateError};
pub use key_group::KeyGroupRange;
pub use keyed::{
    AggregatingState, AsyncSnapshot, Backend, BackendKind, KeyedBackendParams, KeyedStateBackend,
    KeyedStore, ListState, MapState, Namespace, ReducingState, StateData, StateId, StateKey,
    SystemTtlClock, TtlClock, ValueAccess, ValueState,
};
pub use operator_state::{BroadcastState, OperatorListState, OperatorStateBackend};
pub use restore::RestoredOperatorState;
pub use snapshot::{CheckpointMetadata, KeyedStateHandle, SnapshotKind, SnapshotTarget};
pub use storage::{CheckpointLayout, CheckpointStorage, FsCheckpointStorage};
