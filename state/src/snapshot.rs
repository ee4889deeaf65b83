//! Snapshot handles, checkpoint metadata and the state file format.
//!
//! # Layout of a checkpoint (see [`crate::storage`])
//!
//! ```text
//! <state.checkpoints.dir>/<job-id>/chk-<n>/_metadata      CheckpointMetadata (written last, atomically)
//! <state.checkpoints.dir>/<job-id>/chk-<n>/<files>         exclusive state files of checkpoint n
//! <state.checkpoints.dir>/<job-id>/shared/<files>          lsm files shared by incremental checkpoints
//! <state.checkpoints.dir>/<job-id>/taskowned/              files owned by tasks, never by a checkpoint
//! <savepoint-dir>/_metadata + <files>                      savepoints: self-contained, all files exclusive
//! ```
//!
//! Handles name files by paths *relative to the directory that holds `_metadata`*
//! (`../shared/…` for shared files), so a savepoint directory that is copied elsewhere
//! still restores.
//!
//! # State file format (version [`FORMAT_VERSION`])
//!
//! Every file is self-describing: a reader needs neither the job nor its types.
//!
//! ```text
//! "RILLSTAT" (8 bytes) | format version u32 LE | header length u32 LE | header (MessagePack FileHeader) | header CRC32 u32 LE
//! blocks …        each: block length u32 LE | block bytes | CRC32 of block bytes u32 LE
//! index           MessagePack Vec<BlockIndex>
//! index length u32 LE | index CRC32 u32 LE | "RILLEND." (8 bytes)
//! ```
//!
//! Keyed files hold one block per (key group, state) that has entries, in ascending key
//! group then state order; a block is a MessagePack sequence of [`RawEntry`] tuples
//! `(key, namespace, timestamp, value)` where key, namespace and value are themselves
//! MessagePack encodings of the typed values (value `nil` = tombstone, only in lsm delta
//! files). The index gives each block's key group, state, offset, length and entry
//! count, so a restoring subtask reads only the key groups it owns. Operator-state files
//! hold one block per state, a MessagePack list of encoded elements.
//!
//! Every decoding failure is a [`StateError::Corrupt`] naming the file and the byte
//! offset; a newer version is [`StateError::UnsupportedVersion`]. Nothing panics on a
//! bad file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::descriptor::StateMeta;
use crate::key_group::KeyGroupRange;
use crate::keyed::BackendKind;
use crate::storage::CheckpointStorage;

/// Current state file and metadata format version.
pub const FORMAT_VERSION: u32 = 1;

/// File name of a checkpoint's or savepoint's metadata.
pub const METADATA_FILE: &str = "_metadata";

/// Checkpoint or savepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Periodic, owned by the system, may reference shared files.
    Checkpoint,
    /// User-triggered, self-contained, in the canonical (full) format.
    Savepoint,
}

/// Where a snapshot's files go.
#[derive(Clone)]
pub struct SnapshotTarget {
    /// The storage to write to.
    pub storage: Arc<dyn CheckpointStorage>,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Directory of this snapshot's exclusive files (`chk-<n>` or the savepoint dir);
    /// also where `_metadata` will be.
    pub exclusive_dir: PathBuf,
    /// Directory for shared (incremental) files: `<job>/shared`.
    pub shared_dir: PathBuf,
}

impl std::fmt::Debug for SnapshotTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTarget")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("kind", &self.kind)
            .field("exclusive_dir", &self.exclusive_dir)
            .field("shared_dir", &self.shared_dir)
            .finish()
    }
}

/// A file that a handle references.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateFileRef {
    /// Path relative to the directory holding `_metadata` (`../shared/x` for shared files).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the file is shared between checkpoints (reference-counted) or belongs to
    /// one checkpoint only.
    pub shared: bool,
}

impl StateFileRef {
    /// The file's location given the directory that holds `_metadata`.
    pub fn resolve(&self, snapshot_dir: &Path) -> PathBuf {
        snapshot_dir.join(&self.path)
    }
}

/// One subtask's keyed state in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedStateHandle {
    /// The backend that wrote it.
    pub backend: BackendKind,
    /// Key groups covered.
    pub key_group_range: KeyGroupRange,
    /// Files, oldest first: a full file, then incremental delta files whose entries
    /// (including tombstones) override earlier ones.
    pub files: Vec<StateFileRef>,
    /// The states in these files.
    pub states: Vec<StateMeta>,
    /// Bytes written by this snapshot (new files only; incremental size).
    pub incremental_bytes: u64,
}

impl KeyedStateHandle {
    /// Total size of all referenced files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// One subtask's operator state in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    /// The file.
    pub file: StateFileRef,
    /// The states in it, with element counts.
    pub states: Vec<(StateMeta, u64)>,
}

/// One subtask of one operator in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    /// Subtask index when written.
    pub subtask_index: u32,
    /// Keyed state, if the operator is keyed and had state.
    pub keyed: Option<KeyedStateHandle>,
    /// Operator state, if any.
    pub operator: Option<OperatorStateHandle>,
    /// The in-flight channel data of an unaligned checkpoint (on the task's first
    /// operator, see [`in_flight`](crate::in_flight)), if any.
    #[serde(default)]
    pub in_flight: Option<crate::in_flight::InFlightHandle>,
}

impl SubtaskSnapshot {
    /// Every file the subtask's handles reference.
    pub fn files(&self) -> impl Iterator<Item = &StateFileRef> {
        self.keyed
            .iter()
            .flat_map(|k| k.files.iter())
            .chain(self.operator.iter().map(|o| &o.file))
            .chain(self.in_flight.iter().map(|f| &f.file))
    }

    /// Every file the subtask's handles reference, to rewrite them.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut StateFileRef> {
        self.keyed
            .iter_mut()
            .flat_map(|k| k.files.iter_mut())
            .chain(self.operator.iter_mut().map(|o| &mut o.file))
            .chain(self.in_flight.iter_mut().map(|f| &mut f.file))
    }
}

/// One operator in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's `uid`: what matches state to operators on restore.
    pub uid: String,
    /// Display name when written.
    pub name: String,
    /// Parallelism when written.
    pub parallelism: u32,
    /// Max parallelism (number of key groups); must not change across restores.
    pub max_parallelism: u32,
    /// Per subtask.
    pub subtasks: Vec<SubtaskSnapshot>,
}

/// The content of `_metadata`: the whole snapshot, self-describing and versioned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Job id (32 hex digits).
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// When triggered, ms since the epoch.
    pub timestamp_ms: i64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Per operator, in job order.
    pub operators: Vec<OperatorSnapshot>,
}

/// What a state file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Every live keyed entry of the covered key groups.
    KeyedFull,
    /// Keyed entries changed since the previous file of the chain (with tombstones).
    KeyedDelta,
    /// Operator state.
    Operator,
}

/// A state file's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileHeader {
    /// What the file holds.
    pub kind: FileKind,
    /// Operator uid.
    pub operator_uid: String,
    /// Writing subtask.
    pub subtask_index: u32,
    /// Writing backend.
    pub backend: BackendKind,
    /// Max parallelism.
    pub max_parallelism: u32,
    /// Key groups covered (keyed files).
    pub key_group_range: KeyGroupRange,
    /// Checkpoint id that wrote the file.
    pub checkpoint_id: u64,
    /// The states; blocks refer to them by index.
    pub states: Vec<StateMeta>,
}

/// One block in a file's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIndex {
    /// Key group (keyed files) or 0.
    pub key_group: u32,
    /// Index into [`FileHeader::states`].
    pub state: u32,
    /// Offset of the block's length prefix from the start of the file.
    pub offset: u64,
    /// Length of the block bytes (without prefix and CRC).
    pub len: u32,
    /// Entries (keyed) or elements (operator) in the block.
    pub entries: u64,
}

/// One decoded keyed entry, still in encoded (MessagePack) form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Index into [`FileHeader::states`].
    pub state: u32,
    /// Key group.
    pub key_group: u32,
    /// Encoded key.
    pub key: Vec<u8>,
    /// Encoded namespace.
    pub namespace: Vec<u8>,
    /// TTL timestamp (ms of last write), 0 without TTL.
    pub timestamp: i64,
    /// Encoded value; `None` is a tombstone (delta files).
    pub value: Option<Vec<u8>>,
}
