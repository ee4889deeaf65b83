//! The crate's one error type.
//!
//! Storage errors say whether a write *definitely failed* (nothing durable was created,
//! retrying is safe) or *may have happened* (e.g. the rename went through but the
//! directory fsync failed): a checkpoint coordinator must not treat the latter as absent.
//! Corruption errors name the file and the byte offset where decoding stopped.

use std::path::PathBuf;

/// Everything that can go wrong in rill-state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A state of this name was registered before with a different kind or types.
    #[error("state `{name}` is already registered as {existing}, not as {requested}")]
    IncompatibleState {
        /// State name.
        name: String,
        /// What it was registered as.
        existing: String,
        /// What the caller asked for.
        requested: String,
    },
    /// A keyed state was accessed with no current key set.
    #[error("keyed state `{name}` accessed without a current key")]
    NoCurrentKey {
        /// State name.
        name: String,
    },
    /// A key's key group is not in this backend's key-group range: the record was routed
    /// to the wrong subtask.
    #[error("key group {key_group} is outside this backend's key-group range {range}")]
    KeyGroupOutOfRange {
        /// The key's key group.
        key_group: u32,
        /// The backend's range.
        range: crate::key_group::KeyGroupRange,
    },
    /// A value could not be encoded.
    #[error("cannot serialize state `{name}`: {reason}")]
    Serialize {
        /// State name.
        name: String,
        /// Encoder message.
        reason: String,
    },
    /// A stored value could not be decoded with the state's type.
    #[error("cannot deserialize state `{name}`: {reason}")]
    Deserialize {
        /// State name.
        name: String,
        /// Decoder message.
        reason: String,
    },
    /// A snapshot file is truncated or corrupt.
    #[error("corrupt state file {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset where decoding failed.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A snapshot was written by an unknown (newer) format version.
    #[error("state file {path} has format version {found}; this build reads up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// A checkpoint directory has no `_metadata` file: it never completed.
    #[error("{path} is not a completed checkpoint or savepoint (no _metadata)")]
    NotACheckpoint {
        /// The directory or file that was opened.
        path: PathBuf,
    },
    /// A restore was asked for something the snapshot cannot give (max parallelism
    /// changed, unknown operator, …).
    #[error("cannot restore: {reason}")]
    Restore {
        /// What does not fit.
        reason: String,
    },
    /// Reading from checkpoint storage failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing to checkpoint storage failed.
    #[error("cannot write {path} ({}): {source}", if *.definitely_failed { "nothing was written" } else { "the write may have taken effect" })]
    Write {
        /// The file.
        path: PathBuf,
        /// `true` if nothing durable was created, so retrying is safe and the target
        /// does not exist; `false` if the outcome is unknown.
        definitely_failed: bool,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded LSM store failed.
    #[error("lsm state backend at {path}: {reason}")]
    Lsm {
        /// The store's local directory.
        path: PathBuf,
        /// The store's message.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid state configuration `{key}`: {reason}")]
    Config {
        /// Configuration key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    /// Whether retrying the same operation could succeed (transient I/O), as opposed to
    /// a bad snapshot, bad types or bad configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StateError::Read { .. } | StateError::Write { .. } | StateError::Lsm { .. }
        )
    }

    /// A `Corrupt` error for `path` at `offset`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        StateError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// rill-state's result type.
pub type Result<T, E = StateError> = std::result::Result<T, E>;
