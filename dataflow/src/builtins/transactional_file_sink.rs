//! The transactional file sink: exactly-once files under a directory (Flink's `FileSink`).
//!
//! Subtask `i` writes transaction `n` into the hidden file `.part-i-n.inprogress`;
//! pre-commit flushes, fsyncs and renames it to `.part-i-n.pending`; commit renames that
//! to the visible `part-i-n` and fsyncs the directory. Commit is idempotent (a
//! transaction whose visible file exists and whose pending file does not is already
//! committed), abort removes the hidden files, and a transaction without records leaves
//! no file at all. Readers see only committed files: every hidden name starts with `.`.
//!
//! Runs under [`TwoPhaseCommitOperator`](crate::two_phase_commit::TwoPhaseCommitOperator):
//! commits happen when a checkpoint completes (or at the end of a bounded input).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::OperatorContext;
use crate::two_phase_commit::{TwoPhaseCommitOperator, TwoPhaseCommitSink};

/// Configuration of `rill.sink.transactional-file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransactionalFileSinkConfig {
    /// The output directory (created if missing).
    pub dir: String,
}

/// One transaction: a part file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTxn {
    /// The committed file's name, `part-<subtask>-<n>`.
    pub name: String,
    /// Records written.
    pub records: u64,
}

/// The sink (see the module docs).
pub struct TransactionalFileSink {
    dir: PathBuf,
    subtask: u32,
    next: u64,
    writer: Option<BufWriter<File>>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> DataflowError {
    move |e| DataflowError::io(what, e)
}

impl TransactionalFileSink {
    /// A sink for subtask `subtask` writing under `dir`.
    pub fn open(dir: impl Into<PathBuf>, subtask: u32) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        // Numbers continue after every part file of this subtask already present, so a
        // new transaction never reuses a committed (or hidden) name.
        let mut next = 0;
        for entry in fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))? {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            if let Some((s, n)) = parse_name(&entry.file_name().to_string_lossy()) {
                if s == subtask {
                    next = next.max(n + 1);
                }
            }
        }
        Ok(Self {
            dir,
            subtask,
            next,
            writer: None,
        })
    }

    fn in_progress(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.inprogress"))
    }

    fn pending(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.pending"))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing directory {}", self.dir.display())))
    }
}

/// `(subtask, n)` of `part-s-n`, `.part-s-n.inprogress` or `.part-s-n.pending`.
fn parse_name(file: &str) -> Option<(u32, u64)> {
    let base = file.strip_prefix('.').map_or(file, |hidden| {
        hidden
            .strip_suffix(".inprogress")
            .or_else(|| hidden.strip_suffix(".pending"))
            .unwrap_or("")
    });
    let rest = base.strip_prefix("part-")?;
    let (s, n) = rest.split_once('-')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataflowError::io(format!("removing {}", path.display()), e)),
    }
}

impl TwoPhaseCommitSink for TransactionalFileSink {
    type Txn = FileTxn;

    fn begin(&mut self) -> Result<FileTxn> {
        let name = format!("part-{}-{}", self.subtask, self.next);
        self.next += 1;
        let path = self.in_progress(&name);
        let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(FileTxn { name, records: 0 })
    }

    fn write(&mut self, txn: &mut FileTxn, records: &mut Vec<StreamRecord>) -> Result<()> {
        let path = self.in_progress(&txn.name);
        let writer = self.writer.as_mut().ok_or_else(|| {
            DataflowError::InvalidGraph(format!("{} is not open for writing", path.display()))
        })?;
        for r in records.drain(..) {
            writeln!(writer, "{}", r.value).map_err(io(format!("writing {}", path.display())))?;
            txn.records += 1;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut FileTxn) -> Result<()> {
        let path = self.in_progress(&txn.name);
        let writer = self.writer.take();
        if txn.records == 0 {
            drop(writer);
            return remove_if_present(&path);
        }
        let file = writer
            .ok_or_else(|| {
                DataflowError::InvalidGraph(format!("{} is not open for writing", path.display()))
            })?
            .into_inner()
            .map_err(|e| {
                DataflowError::io(format!("flushing {}", path.display()), e.into_error())
            })?;
        file.sync_all()
            .map_err(io(format!("syncing {}", path.display())))?;
        let pending = self.pending(&txn.name);
        fs::rename(&path, &pending).map_err(io(format!(
            "renaming {} to {}",
            path.display(),
            pending.display()
        )))?;
        self.sync_dir()
    }

    fn commit(&mut self, txn: &FileTxn) -> Result<()> {
        if txn.records == 0 {
            return Ok(());
        }
        let pending = self.pending(&txn.name);
        let visible = self.dir.join(&txn.name);
        match fs::rename(&pending, &visible) {
            Ok(()) => self.sync_dir(),
            // Committed before (this is a recovery repeating the commit).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && visible.exists() => Ok(()),
            Err(e) => Err(DataflowError::io(
                format!(
                    "committing {} (its pending file {} is missing or cannot be renamed)",
                    visible.display(),
                    pending.display()
                ),
                e,
            )),
        }
    }

    fn abort(&mut self, txn: &FileTxn) -> Result<()> {
        self.writer = None;
        remove_if_present(&self.in_progress(&txn.name))?;
        remove_if_present(&self.pending(&txn.name))
    }

    fn clean_up_after(&mut self, old_subtask: u32, keep: &[FileTxn]) -> Result<()> {
        let listing =
            fs::read_dir(&self.dir).map_err(io(format!("listing {}", self.dir.display())))?;
        for entry in listing {
            let entry = entry.map_err(io(format!("listing {}", self.dir.display())))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if !file.starts_with('.') {
                continue;
            }
            match parse_name(&file) {
                Some((s, n))
                    if s == old_subtask
                        && !keep.iter().any(|t| t.name == format!("part-{s}-{n}")) =>
                {
                    remove_if_present(&entry.path())?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The operator behind `rill.sink.transactional-file`.
pub(crate) fn operator(
    c: TransactionalFileSinkConfig,
    ctx: &OperatorContext,
) -> Result<TwoPhaseCommitOperator<TransactionalFileSink>> {
    let sink = TransactionalFileSink::open(&c.dir, ctx.subtask_index)?;
    Ok(TwoPhaseCommitOperator::new(sink, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Operator;
    use crate::state::{SnapshotContext, StateInitContext};
    use crate::value::Value;
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage, SnapshotKind};
    use std::sync::Arc;

    fn ctx(subtask: u32, parallelism: u32) -> OperatorContext {
        OperatorContext {
            job_id: crate::ids::JobId([0; 16]),
            operator_name: "sink".into(),
            operator_uid: "tx-sink".into(),
            subtask_index: subtask,
            parallelism,
            max_parallelism: 128,
            key_selector: None,
            key_selector2: None,
            collect: None,
            state: crate::state::StateContext::default(),
        }
    }

    fn records(xs: &[i64]) -> Vec<StreamRecord> {
        xs.iter()
            .map(|x| StreamRecord::new(Value::I64(*x)))
            .collect()
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            lines.extend(
                fs::read_to_string(dir.join(n))
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
        lines.sort();
        lines
    }

    fn hidden(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    }

    struct Checkpoints {
        storage: Arc<FsCheckpointStorage>,
        layout: CheckpointLayout,
        _root: tempfile::TempDir,
    }

    impl Checkpoints {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let storage = Arc::new(FsCheckpointStorage::new(root.path()));
            let layout = CheckpointLayout::new(root.path().to_path_buf(), "job");
            Checkpoints {
                storage,
                layout,
                _root: root,
            }
        }

        /// Snapshots `op` as checkpoint `id`; returns what a restore needs.
        fn take(
            &self,
            op: &mut TwoPhaseCommitOperator<TransactionalFileSink>,
            id: u64,
            subtask: u32,
        ) -> rill_state::snapshot::SubtaskSnapshot {
            let storage: Arc<dyn CheckpointStorage> = self.storage.clone();
            let target = self.layout.target(storage, id, SnapshotKind::Checkpoint);
            let snap = op
                .snapshot_state(&SnapshotContext {
                    checkpoint_id: id,
                    target,
                })
                .unwrap();
            snap.run(subtask).unwrap()
        }

        fn init(
            &self,
            id: u64,
            parallelism: u32,
            subtasks: Vec<rill_state::snapshot::SubtaskSnapshot>,
        ) -> StateInitContext {
            let op = rill_state::snapshot::OperatorSnapshot {
                uid: "tx-sink".into(),
                name: "sink".into(),
                parallelism,
                max_parallelism: 128,
                subtasks,
            };
            let storage: Arc<dyn CheckpointStorage> = self.storage.clone();
            StateInitContext::restoring(self.layout.checkpoint_dir(id), op, storage)
        }
    }

    fn sink_op(
        dir: &Path,
        subtask: u32,
        parallelism: u32,
    ) -> TwoPhaseCommitOperator<TransactionalFileSink> {
        operator(
            TransactionalFileSinkConfig {
                dir: dir.display().to_string(),
            },
            &ctx(subtask, parallelism),
        )
        .unwrap()
    }

    #[test]
    fn records_become_visible_only_when_their_checkpoint_completes() {
        let out = tempfile::tempdir().unwrap();
        let chk = Checkpoints::new();
        let mut op = sink_op(out.path(), 0, 1);
        op.initialize_state(&mut StateInitContext::empty()).unwrap();
        op.process_batch(&mut records(&[1, 2]), &mut Vec::new())
            .unwrap();
        assert!(visible(out.path()).is_empty());
        chk.take(&mut op, 1, 0);
        op.process_batch(&mut records(&[3]), &mut Vec::new())
            .unwrap();
        assert!(
            visible(out.path()).is_empty(),
            "pre-committed is not visible"
        );
        op.notify_checkpoint_complete(1).unwrap();
        assert_eq!(visible(out.path()), ["1", "2"]);
        // Checkpoint 2 is aborted: its transaction waits for checkpoint 3.
        chk.take(&mut op, 2, 0);
        op.notify_checkpoint_aborted(2).unwrap();
        op.process_batch(&mut records(&[4]), &mut Vec::new())
            .unwrap();
        chk.take(&mut op, 3, 0);
        assert_eq!(op.pending_checkpoints(), [2, 3]);
        op.notify_checkpoint_complete(3).unwrap();
        assert_eq!(visible(out.path()), ["1", "2", "3", "4"]);
        assert_eq!(hidden(out.path()), 0);
        // An idle checkpoint writes no file.
        chk.take(&mut op, 4, 0);
        op.notify_checkpoint_complete(4).unwrap();
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 3);
    }

    #[test]
    fn recovery_commits_the_restored_checkpoints_transactions_once_and_drops_later_ones() {
        let out = tempfile::tempdir().unwrap();
        let chk = Checkpoints::new();
        let mut op = sink_op(out.path(), 0, 1);
        op.initialize_state(&mut StateInitContext::empty()).unwrap();
        op.process_batch(&mut records(&[1, 2]), &mut Vec::new())
            .unwrap();
        let snap = chk.take(&mut op, 1, 0);
        // Records after the checkpoint, then a crash before notify-complete arrived.
        op.process_batch(&mut records(&[3]), &mut Vec::new())
            .unwrap();
        drop(op);
        assert!(visible(out.path()).is_empty());
        assert_eq!(hidden(out.path()), 2);

        let mut op = sink_op(out.path(), 0, 1);
        op.initialize_state(&mut chk.init(1, 1, vec![snap.clone()]))
            .unwrap();
        assert_eq!(
            visible(out.path()),
            ["1", "2"],
            "checkpoint 1's records committed"
        );
        assert_eq!(hidden(out.path()), 0, "the transaction after it is gone");
        // The replayed record 3 goes into a new file; recovering from the same
        // checkpoint again (a second crash) commits nothing twice.
        op.process_batch(&mut records(&[3]), &mut Vec::new())
            .unwrap();
        drop(op);
        let mut op = sink_op(out.path(), 0, 1);
        op.initialize_state(&mut chk.init(1, 1, vec![snap]))
            .unwrap();
        op.process_batch(&mut records(&[3]), &mut Vec::new())
            .unwrap();
        op.end_input(&mut Vec::new()).unwrap();
        op.close().unwrap();
        assert_eq!(visible(out.path()), ["1", "2", "3"]);
        assert_eq!(hidden(out.path()), 0);
    }

    #[test]
    fn rescaling_down_recovers_every_old_subtasks_transactions_exactly_once() {
        let out = tempfile::tempdir().unwrap();
        let chk = Checkpoints::new();
        let mut snaps = Vec::new();
        for s in 0..3u32 {
            let mut op = sink_op(out.path(), s, 3);
            op.initialize_state(&mut StateInitContext::empty()).unwrap();
            op.process_batch(&mut records(&[i64::from(s) * 10]), &mut Vec::new())
                .unwrap();
            snaps.push(chk.take(&mut op, 7, s));
            op.process_batch(&mut records(&[99]), &mut Vec::new())
                .unwrap(); // after the checkpoint
        }
        let mut ops: Vec<_> = (0..2u32).map(|s| sink_op(out.path(), s, 2)).collect();
        for op in &mut ops {
            op.initialize_state(&mut chk.init(7, 3, snaps.clone()))
                .unwrap();
        }
        assert_eq!(visible(out.path()), ["0", "10", "20"]);
        assert_eq!(hidden(out.path()), 0);
    }

    #[test]
    fn a_fresh_start_removes_hidden_leftovers_and_never_reuses_a_committed_name() {
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("part-0-4"), "old\n").unwrap();
        fs::write(out.path().join(".part-0-5.inprogress"), "torn").unwrap();
        fs::write(out.path().join(".part-1-0.inprogress"), "other subtask").unwrap();
        let mut op = sink_op(out.path(), 0, 2);
        op.initialize_state(&mut StateInitContext::empty()).unwrap();
        op.process_batch(&mut records(&[1]), &mut Vec::new())
            .unwrap();
        op.end_input(&mut Vec::new()).unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("part-0-6")).unwrap(),
            "1\n"
        );
        assert_eq!(
            fs::read_to_string(out.path().join("part-0-4")).unwrap(),
            "old\n"
        );
        assert!(!out.path().join(".part-0-5.inprogress").exists());
        assert!(
            out.path().join(".part-1-0.inprogress").exists(),
            "not ours to remove"
        );
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_name("part-3-17"), Some((3, 17)));
        assert_eq!(parse_name(".part-3-17.pending"), Some((3, 17)));
        assert_eq!(parse_name(".part-3-17.inprogress"), Some((3, 17)));
        assert_eq!(parse_name(".part-3-17"), None);
        assert_eq!(parse_name("part-x-1"), None);
        assert_eq!(parse_name("notes.txt"), None);
    }
}
