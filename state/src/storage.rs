//! Checkpoint storage: where snapshot files and `_metadata` live.
//!
//! [`CheckpointStorage`] is the narrow interface every writer and reader goes through, so
//! faults can be injected in tests and object stores can be added later;
//! [`FsCheckpointStorage`] implements it on a local or mounted file system
//! (`state.checkpoints.dir = file:///…`). [`CheckpointLayout`] computes the directory
//! layout documented in [`crate::snapshot`].
//!
//! A checkpoint exists only once its `_metadata` was written atomically: temp file,
//! fsync, rename, fsync of the directory. Anything under `chk-<n>` without `_metadata`
//! is garbage that [`clean_incomplete`] removes.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::error::Result;

/// The file operations checkpointing needs. Paths are absolute locations in this
/// storage. Every error says which path failed and, for writes, whether the write
/// definitely failed ([`StateError::Write`](crate::StateError::Write)).
pub trait CheckpointStorage: Send + Sync + Debug {
    /// Writes a new immutable file (parent directories are created), durably (fsync).
    /// The file appears under its final name only when complete (temp + rename), so a
    /// crash never leaves a half-written file under that name.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()>;

    /// Writes `bytes` as `path` atomically and durably: temp file, fsync, rename, fsync
    /// of the directory (used for `_metadata`).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()>;

    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> Result<Vec<u8>>;

    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> Result<bool>;

    /// Entries of a directory (files and subdirectories), sorted; empty if it is missing.
    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>>;

    /// Deletes a file; a missing file is not an error.
    fn delete_file(&self, path: &Path) -> Result<()>;

    /// Deletes a directory and everything in it; a missing directory is not an error.
    fn delete_dir(&self, path: &Path) -> Result<()>;
}
