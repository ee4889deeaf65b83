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
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StateError};
use crate::snapshot::{SnapshotKind, SnapshotTarget, METADATA_FILE};

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

/// The configuration key naming the checkpoint directory.
pub const CHECKPOINTS_DIR_KEY: &str = "state.checkpoints.dir";

/// Prefix of checkpoint directories (`chk-<n>`).
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// Marker in the names of temporary files ([`FsCheckpointStorage`] writes
/// `.<name>.rill-tmp-<pid>-<n>` next to the target).
pub const TEMP_MARKER: &str = ".rill-tmp-";

/// [`CheckpointStorage`] on a local or mounted file system.
///
/// Paths given to the trait methods are normalized lexically (`chk-3/../shared/f` is
/// `shared/f`, as in an object store, so a handle's `../shared/…` path resolves even
/// when the checkpoint's own directory holds no file) and otherwise used as they are;
/// [`root`](Self::root) is the configured `state.checkpoints.dir`, for callers that lay
/// out directories under it.
#[derive(Debug)]
pub struct FsCheckpointStorage {
    root: PathBuf,
}

/// Distinguishes temp files of concurrent writes in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn write_err(path: &Path, definitely_failed: bool, source: std::io::Error) -> StateError {
    StateError::Write {
        path: path.to_path_buf(),
        definitely_failed,
        source,
    }
}

/// `path` with `.` and `..` components resolved lexically.
fn normalize(path: &Path) -> std::borrow::Cow<'_, Path> {
    use std::path::Component;
    if !path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl FsCheckpointStorage {
    /// Storage rooted at `root` (created lazily by the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Storage for a `state.checkpoints.dir` value: `file:///abs/path` or a plain
    /// absolute path. Other schemes and relative paths are a
    /// [`StateError::Config`] naming the key.
    pub fn from_url(url: &str) -> Result<Self> {
        let config = |reason: String| StateError::Config {
            key: CHECKPOINTS_DIR_KEY.into(),
            reason,
        };
        let path = if let Some(rest) = url.strip_prefix("file://") {
            // `file:///abs` → `/abs`; `file://host/…` is not supported.
            if !rest.starts_with('/') {
                return Err(config(format!(
                    "`{url}`: file URLs must be absolute (file:///path); remote hosts are not supported"
                )));
            }
            PathBuf::from(rest)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(config(format!(
                "`{url}`: unsupported scheme `{scheme}`; only file:///… (or an absolute path) is supported"
            )));
        } else {
            PathBuf::from(url)
        };
        if !path.is_absolute() {
            return Err(config(format!(
                "`{url}` is not an absolute path; use file:///abs/path"
            )));
        }
        Ok(Self::new(path))
    }

    /// The configured root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` to a fresh temp file next to `path`, fsyncs it and renames it to
    /// `path`. Every failure here leaves nothing under `path`: definitely failed.
    fn write_and_rename(path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let name = path.file_name().ok_or_else(|| {
            write_err(
                path,
                true,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?;
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(|e| write_err(path, true, e))?;
        }
        let tmp_name = format!(
            ".{}{TEMP_MARKER}{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = dir
            .map(|d| d.join(&tmp_name))
            .unwrap_or_else(|| PathBuf::from(&tmp_name));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(write_err(path, true, e));
        }
        Ok(())
    }
}

impl CheckpointStorage for FsCheckpointStorage {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        Self::write_and_rename(&normalize(path), bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let path = &*normalize(path);
        Self::write_and_rename(path, bytes)?;
        // The rename happened; only the directory entry's durability is in question now.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| write_err(path, false, e))
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        let path = &*normalize(path);
        fs::read(path).map_err(|source| StateError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        let path = &*normalize(path);
        path.try_exists().map_err(|source| StateError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let path = &*normalize(path);
        let read = |source| StateError::Read {
            path: path.to_path_buf(),
            source,
        };
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            out.push(entry.map_err(read)?.path());
        }
        out.sort();
        Ok(out)
    }

    fn delete_file(&self, path: &Path) -> Result<()> {
        let path = &*normalize(path);
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(write_err(path, true, e)),
            _ => Ok(()),
        }
    }

    fn delete_dir(&self, path: &Path) -> Result<()> {
        let path = &*normalize(path);
        match fs::remove_dir_all(path) {
            // remove_dir_all may have removed part of the tree before failing.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(write_err(path, false, e)),
            _ => Ok(()),
        }
    }
}

/// The directory layout of one job's checkpoints (see [`crate::snapshot`]):
/// `<base>/<job_id>/chk-<n>`, `<base>/<job_id>/shared`, `<base>/<job_id>/taskowned`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointLayout {
    /// `state.checkpoints.dir`.
    pub base: PathBuf,
    /// The job id (32 hex digits).
    pub job_id: String,
}

impl CheckpointLayout {
    /// The layout of job `job_id` under `base`.
    pub fn new(base: impl Into<PathBuf>, job_id: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            job_id: job_id.into(),
        }
    }

    /// `<base>/<job_id>`.
    pub fn job_dir(&self) -> PathBuf {
        self.base.join(&self.job_id)
    }

    /// `<base>/<job_id>/chk-<n>`.
    pub fn checkpoint_dir(&self, checkpoint_id: u64) -> PathBuf {
        self.job_dir()
            .join(format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}"))
    }

    /// `<base>/<job_id>/shared`.
    pub fn shared_dir(&self) -> PathBuf {
        self.job_dir().join("shared")
    }

    /// `<base>/<job_id>/taskowned`.
    pub fn taskowned_dir(&self) -> PathBuf {
        self.job_dir().join("taskowned")
    }

    /// Where checkpoint `checkpoint_id`'s files go: exclusive files in `chk-<n>`, shared
    /// files in `shared/`. (A savepoint's target is built directly, with its own
    /// directory as `exclusive_dir`.)
    pub fn target(
        &self,
        storage: Arc<dyn CheckpointStorage>,
        checkpoint_id: u64,
        kind: SnapshotKind,
    ) -> SnapshotTarget {
        SnapshotTarget {
            storage,
            checkpoint_id,
            kind,
            exclusive_dir: self.checkpoint_dir(checkpoint_id),
            shared_dir: self.shared_dir(),
        }
    }
}

/// The `chk-<n>` directories of a job: `(n, dir)`, ascending, complete or not.
fn checkpoint_dirs(
    storage: &dyn CheckpointStorage,
    layout: &CheckpointLayout,
) -> Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = storage
        .list_dir(&layout.job_dir())?
        .into_iter()
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix(CHECKPOINT_DIR_PREFIX)?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The completed checkpoints of a job (those with `_metadata`): `(id, dir)`, ascending.
pub fn completed_checkpoints(
    storage: &dyn CheckpointStorage,
    layout: &CheckpointLayout,
) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for (n, dir) in checkpoint_dirs(storage, layout)? {
        if storage.exists(&dir.join(METADATA_FILE))? {
            out.push((n, dir));
        }
    }
    Ok(out)
}

/// The newest completed checkpoint, if any.
pub fn latest_completed(
    storage: &dyn CheckpointStorage,
    layout: &CheckpointLayout,
) -> Result<Option<(u64, PathBuf)>> {
    Ok(completed_checkpoints(storage, layout)?.pop())
}

/// Removes every `chk-<n>` directory without `_metadata` (a checkpoint that never
/// completed), except those in `keep` (checkpoints still in progress). Returns the
/// removed ids.
pub fn clean_incomplete(
    storage: &dyn CheckpointStorage,
    layout: &CheckpointLayout,
    keep: &[u64],
) -> Result<Vec<u64>> {
    let mut removed = Vec::new();
    for (n, dir) in checkpoint_dirs(storage, layout)? {
        if keep.contains(&n) || storage.exists(&dir.join(METADATA_FILE))? {
            continue;
        }
        storage.delete_dir(&dir)?;
        tracing::debug!(checkpoint_id = n, dir = %dir.display(), "removed incomplete checkpoint");
        removed.push(n);
    }
    Ok(removed)
}

/// A path predicate for [`FaultyStorage`].
pub type PathPredicate = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

#[derive(Default)]
struct Faults {
    /// Writes to matching paths fail before anything is written.
    fail_matching: Option<PathPredicate>,
    /// Bytes that may still be written; a write that would exceed it fails.
    byte_budget: Option<u64>,
    /// `write_atomic` to matching paths performs the write, then reports an unknown
    /// outcome (as a failed directory fsync would).
    fail_after_commit: Option<PathPredicate>,
    failed: u64,
}

/// A fault-injection wrapper for tests: delegates to any [`CheckpointStorage`] and fails
/// writes on command — for paths matching a predicate, once a byte budget is used up, or
/// after the commit of an atomic write (outcome unknown). Injected failures are
/// [`StateError::Write`] errors whose source says "injected fault"; a write that fails
/// "before" writing leaves the inner storage untouched.
pub struct FaultyStorage {
    inner: Arc<dyn CheckpointStorage>,
    faults: Mutex<Faults>,
}

impl Debug for FaultyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("failed", &self.failed_writes())
            .finish()
    }
}

fn injected(path: &Path, definitely_failed: bool) -> StateError {
    write_err(
        path,
        definitely_failed,
        std::io::Error::other("injected fault"),
    )
}

impl FaultyStorage {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: Arc<dyn CheckpointStorage>) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // A poisoned lock only means a test thread panicked; the faults are still valid.
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails every later write (`write_file`, `write_atomic`) to a path for which `pred`
    /// holds, before anything is written.
    pub fn fail_writes_matching(&self, pred: impl Fn(&Path) -> bool + Send + Sync + 'static) {
        self.faults().fail_matching = Some(Arc::new(pred));
    }

    /// Fails every later write.
    pub fn fail_all_writes(&self) {
        self.fail_writes_matching(|_| true);
    }

    /// Lets `bytes` more bytes be written; the write that would exceed the budget (and
    /// every one after it) fails before writing.
    pub fn fail_after_bytes(&self, bytes: u64) {
        self.faults().byte_budget = Some(bytes);
    }

    /// Makes `write_atomic` to matching paths write the file and then fail with an
    /// unknown outcome (`definitely_failed: false`), as a failed directory fsync does.
    pub fn fail_after_commit(&self, pred: impl Fn(&Path) -> bool + Send + Sync + 'static) {
        self.faults().fail_after_commit = Some(Arc::new(pred));
    }

    /// Disarms every fault.
    pub fn heal(&self) {
        let mut f = self.faults();
        let failed = f.failed;
        *f = Faults {
            failed,
            ..Faults::default()
        };
    }

    /// How many writes failed by injection so far.
    pub fn failed_writes(&self) -> u64 {
        self.faults().failed
    }

    /// Whether a write of `len` bytes to `path` must fail before writing.
    fn check_before(&self, path: &Path, len: usize) -> Result<()> {
        let mut f = self.faults();
        let mut fail = f.fail_matching.as_ref().is_some_and(|p| p(path));
        if let Some(budget) = f.byte_budget.as_mut() {
            if len as u64 > *budget {
                *budget = 0;
                fail = true;
            } else if !fail {
                *budget -= len as u64;
            }
        }
        if fail {
            f.failed += 1;
            return Err(injected(path, true));
        }
        Ok(())
    }
}

impl CheckpointStorage for FaultyStorage {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check_before(path, bytes.len())?;
        self.inner.write_file(path, bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check_before(path, bytes.len())?;
        self.inner.write_atomic(path, bytes)?;
        let mut f = self.faults();
        if f.fail_after_commit.as_ref().is_some_and(|p| p(path)) {
            f.failed += 1;
            return Err(injected(path, false));
        }
        Ok(())
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        self.inner.read_file(path)
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        self.inner.exists(path)
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }

    fn delete_file(&self, path: &Path) -> Result<()> {
        self.inner.delete_file(path)
    }

    fn delete_dir(&self, path: &Path) -> Result<()> {
        self.inner.delete_dir(path)
    }
}
