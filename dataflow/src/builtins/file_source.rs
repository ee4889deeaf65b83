//! The file-lines source.
//!
//! * **A file** is split into `p` byte ranges; subtask `i` owns the lines that *start* in
//!   `[i·len/p, (i+1)·len/p)`. A subtask whose range starts mid-line skips to the next
//!   line start (the previous subtask reads that line to its end), so every line is read
//!   exactly once whatever the parallelism.
//! * **A directory**: its regular files, sorted by name, are dealt out whole — file `k`
//!   to subtask `k mod p`.
//!
//! Lines are emitted as `Str` without the trailing `\n` / `\r\n`; invalid UTF-8 is
//! replaced (U+FFFD), like Flink's text input format. The path is inspected when the
//! source is built, so a missing file fails the task at start with an I/O error naming it.
//!
//! # Checkpoints
//!
//! A subtask's remaining work is its list of [`Split`]s, kept in operator **list state**
//! [`SPLITS_STATE`]: first the split being read, with its offset advanced to the next
//! unread line (a snapshot is taken between polls, when the reader always stands at a
//! line start), then every split not opened yet, in reading order. A finished subtask
//! snapshots an empty list. Alongside it, list state [`SNAPSHOTTED_STATE`] holds the
//! subtask index, so that every subtask writes a state file even when all have finished:
//! otherwise the source would be absent from the snapshot and a restore would read the
//! input again from the start.
//!
//! On restore the splits from the snapshot **replace** the assignment computed from the
//! configuration (a changed `path` is ignored: the checkpointed files are read). The
//! list is split evenly over the new subtasks, so after a rescale a subtask may read
//! splits of several old subtasks — in the order the backend hands them over — and a
//! subtask added by scaling up may get none and finish at once; every remaining line is
//! still read exactly once. A split reopened from state starts exactly at its offset
//! (`at_line_start`), and the byte before that offset must still be `\n`: a file that
//! changed under a checkpoint fails the restore with a [`StateError::Restore`] rather
//! than emitting a partial line. The rate limit is that of the new parallelism.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rill_state::{OperatorListState, OperatorStateBackend, StateError};
use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::rate_limiter::RateLimiter;
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::value::Value;

/// Name of the list state holding a subtask's remaining [`Split`]s.
pub(crate) const SPLITS_STATE: &str = "file-splits";
/// Name of the list state holding the index of each subtask that took a snapshot.
pub(crate) const SNAPSHOTTED_STATE: &str = "file-splits-snapshotted";
/// Lines per poll at most.
const BATCH_LINES: usize = 1024;

/// Configuration of `rill.source.file_lines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileLinesConfig {
    /// A file or a directory of files.
    pub path: String,
    /// Lines per second over all subtasks (unlimited if `None`), e.g. so that a test can
    /// kill processes while a job is still reading.
    #[serde(default)]
    pub rate: Option<f64>,
}

/// The not yet read part of one byte range of one file: the lines that start in
/// `[offset, end)`. Also the element of [`SPLITS_STATE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Split {
    path: PathBuf,
    /// Offset of the next byte to read.
    offset: u64,
    /// End of the range: a line that starts before it is read to its end.
    end: u64,
    /// Whether `offset` is a line start: true for a split starting at 0 and for one that
    /// was already being read; otherwise the tail of the line containing byte
    /// `offset - 1` belongs to the previous range and is skipped.
    at_line_start: bool,
}

struct OpenSplit {
    reader: BufReader<File>,
    /// Offset of the next unread byte; at a line start between polls.
    pos: u64,
    end: u64,
    path: PathBuf,
}

impl OpenSplit {
    /// What is left of this split, as a split to reopen; `None` when it is done.
    fn remaining(&self) -> Option<Split> {
        (self.pos < self.end).then(|| Split {
            path: self.path.clone(),
            offset: self.pos,
            end: self.end,
            at_line_start: true,
        })
    }
}

/// The state handles, registered by `initialize_state`.
#[derive(Clone, Copy)]
struct Handles {
    splits: OperatorListState<Split>,
    snapshotted: OperatorListState<u32>,
}

pub(crate) struct FileLinesSource {
    ctx: OperatorContext,
    pending: VecDeque<Split>,
    current: Option<OpenSplit>,
    line: Vec<u8>,
    /// Lines per poll at most (tests lower it to snapshot mid-split).
    batch: usize,
    limiter: Option<RateLimiter>,
    backend: OperatorStateBackend,
    state: Option<Handles>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> DataflowError {
    DataflowError::io(format!("{what} {}", path.display()), e)
}

impl FileLinesSource {
    pub(crate) fn new(c: FileLinesConfig, ctx: &OperatorContext) -> Result<Self> {
        let path = PathBuf::from(&c.path);
        let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, "reading", e))?;
        let (i, p) = (
            u64::from(ctx.subtask_index),
            u64::from(ctx.parallelism.max(1)),
        );
        let mut splits = VecDeque::new();
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(|e| io_err(&path, "listing", e))? {
                let entry = entry.map_err(|e| io_err(&path, "listing", e))?;
                let m = entry
                    .metadata()
                    .map_err(|e| io_err(&entry.path(), "reading", e))?;
                if m.is_file() {
                    files.push((entry.path(), m.len()));
                }
            }
            files.sort();
            for (k, (f, len)) in files.into_iter().enumerate() {
                if k as u64 % p == i {
                    splits.push_back(Split {
                        path: f,
                        offset: 0,
                        end: len,
                        at_line_start: true,
                    });
                }
            }
        } else {
            let len = meta.len();
            let start = len * i / p;
            splits.push_back(Split {
                path,
                offset: start,
                end: len * (i + 1) / p,
                at_line_start: start == 0,
            });
        }
        Ok(Self {
            ctx: ctx.clone(),
            pending: splits,
            current: None,
            line: Vec::new(),
            batch: BATCH_LINES,
            limiter: c.rate.map(|r| RateLimiter::new(r / p as f64)),
            backend: ctx.create_operator_state_backend(),
            state: None,
        })
    }

    fn open_split(s: Split) -> Result<OpenSplit> {
        let file = File::open(&s.path).map_err(|e| io_err(&s.path, "opening", e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut pos = s.offset;
        if s.offset > 0 {
            // Read from the byte before `offset`: a `\n` there means `offset` is a line
            // start, and a line starting exactly at `offset` is kept.
            reader
                .seek(SeekFrom::Start(s.offset - 1))
                .map_err(|e| io_err(&s.path, "seeking", e))?;
            if s.at_line_start {
                let mut before = [0u8; 1];
                let n = reader
                    .read(&mut before)
                    .map_err(|e| io_err(&s.path, "reading", e))?;
                if n != 1 || before[0] != b'\n' {
                    return Err(StateError::Restore {
                        reason: format!(
                            "file source: checkpointed offset {} of {} is no longer a line \
                             start (the file changed since the checkpoint)",
                            s.offset,
                            s.path.display()
                        ),
                    }
                    .into());
                }
            } else {
                // Skip the tail of a line that started before our range.
                let mut skipped = Vec::new();
                let n = reader
                    .read_until(b'\n', &mut skipped)
                    .map_err(|e| io_err(&s.path, "reading", e))?;
                pos = s.offset - 1 + n as u64;
            }
        }
        Ok(OpenSplit {
            reader,
            pos,
            end: s.end,
            path: s.path,
        })
    }
}

impl SourceOperator for FileLinesSource {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        self.backend = init.operator_state_backend(&self.ctx)?;
        let handles = Handles {
            splits: self.backend.list_state::<Split>(SPLITS_STATE)?,
            snapshotted: self.backend.list_state::<u32>(SNAPSHOTTED_STATE)?,
        };
        if init.is_restored() {
            self.pending = handles.splits.get(&self.backend)?.into();
            self.current = None;
        }
        self.state = Some(handles);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        let handles = self.state.ok_or_else(|| {
            DataflowError::InvalidGraph(format!(
                "source `{}` snapshotted before initialize_state",
                self.ctx.operator_uid
            ))
        })?;
        let remaining: Vec<Split> = self
            .current
            .as_ref()
            .and_then(OpenSplit::remaining)
            .into_iter()
            .chain(self.pending.iter().cloned())
            .collect();
        handles.splits.update(&mut self.backend, &remaining)?;
        handles
            .snapshotted
            .update(&mut self.backend, &[self.ctx.subtask_index])?;
        let handle =
            self.backend
                .snapshot(&ctx.target, &self.ctx.operator_uid, self.ctx.subtask_index)?;
        Ok(OperatorStateSnapshot {
            keyed: None,
            operator: handle,
        })
    }

    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus> {
        let budget = match &mut self.limiter {
            Some(l) => match l.acquire(self.batch, now) {
                Ok(n) => n,
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            },
            None => self.batch,
        };
        let split = match &mut self.current {
            Some(s) => s,
            None => match self.pending.pop_front() {
                Some(s) => self.current.insert(Self::open_split(s)?),
                None => return Ok(SourceStatus::Finished),
            },
        };
        for _ in 0..budget {
            if split.pos >= split.end {
                self.current = None;
                return Ok(SourceStatus::More);
            }
            self.line.clear();
            let n = split
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| io_err(&split.path, "reading", e))?;
            if n == 0 {
                // The file shrank below its recorded length.
                self.current = None;
                return Ok(SourceStatus::More);
            }
            split.pos += n as u64;
            let mut bytes = &self.line[..];
            if let Some(b) = bytes.strip_suffix(b"\n") {
                bytes = b.strip_suffix(b"\r").unwrap_or(b);
            }
            out.push(StreamRecord::new(Value::Str(
                String::from_utf8_lossy(bytes).into_owned(),
            )));
        }
        Ok(SourceStatus::More)
    }
}

#[cfg(test)]
mod tests {

    use rill_state::snapshot::OperatorSnapshot;
    use rill_state::SnapshotTarget;

    use super::*;
    use crate::builtins::source_tests;

    fn ctx(i: u32, p: u32) -> OperatorContext {
        source_tests::ctx("f", i, p)
    }

    fn config(path: &Path) -> FileLinesConfig {
        FileLinesConfig {
            rate: None,
            path: path.to_string_lossy().into(),
        }
    }

    fn drain(s: &mut FileLinesSource) -> Vec<String> {
        let mut out = Vec::new();
        while s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::More {}
        out.into_iter().map(|r| r.value.to_string()).collect()
    }

    fn read_all(path: &Path, p: u32) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..p {
            let mut s = FileLinesSource::new(config(path), &ctx(i, p)).unwrap();
            lines.extend(drain(&mut s));
        }
        lines.sort();
        lines
    }

    #[test]
    fn every_line_read_once_at_any_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        let expected: Vec<String> = (0..50)
            .map(|i| "x".repeat(i % 7) + &i.to_string())
            .collect();
        std::fs::write(&f, expected.join("\r\n") + "\n").unwrap();
        let mut sorted = expected.clone();
        sorted.sort();
        for p in [1, 2, 3, 7, 64] {
            assert_eq!(read_all(&f, p), sorted, "parallelism {p}");
        }
        std::fs::write(dir.path().join("b.txt"), "tail\n").unwrap();
        let mut with_b = sorted.clone();
        with_b.push("tail".into());
        with_b.sort();
        assert_eq!(read_all(dir.path(), 2), with_b);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let r = FileLinesSource::new(config(Path::new("/nonexistent/rill")), &ctx(0, 1));
        assert!(matches!(r, Err(DataflowError::Io { .. })));
    }

    // ---- checkpoints: snapshot → restore (same or other parallelism) ----

    fn snapshot_all(
        sources: &mut [FileLinesSource],
        dir: &Path,
        id: u64,
    ) -> (SnapshotTarget, OperatorSnapshot) {
        source_tests::snapshot_all(sources, "f", dir, id)
    }

    /// `p` initialized subtasks reading `path`, `batch` lines per poll, restored from
    /// `from` (or fresh).
    fn subtasks(
        path: &Path,
        p: u32,
        batch: usize,
        from: Option<&(SnapshotTarget, OperatorSnapshot)>,
    ) -> Vec<FileLinesSource> {
        (0..p)
            .map(|i| {
                let mut s = FileLinesSource::new(config(path), &ctx(i, p)).unwrap();
                s.batch = batch;
                s.initialize_state(&mut source_tests::init_from(from))
                    .unwrap();
                s
            })
            .collect()
    }

    fn poll_times(s: &mut FileLinesSource, polls: usize, out: &mut Vec<String>) {
        let mut records = Vec::new();
        for _ in 0..polls {
            if s.poll_next(&mut records, Instant::now()).unwrap() == SourceStatus::Finished {
                break;
            }
        }
        out.extend(records.into_iter().map(|r| r.value.to_string()));
    }

    /// Lines of varied length (so split boundaries fall mid-line), `\n` and `\r\n`
    /// endings, the last without a newline.
    fn write_lines(path: &Path, from: usize, n: usize) -> Vec<String> {
        let lines: Vec<String> = (from..from + n)
            .map(|i| format!("{i}:{}", "y".repeat(i * 7 % 13)))
            .collect();
        let mut text = String::new();
        for (k, l) in lines.iter().enumerate() {
            text.push_str(l);
            if k + 1 < n {
                text.push_str(if k % 3 == 0 { "\r\n" } else { "\n" });
            }
        }
        std::fs::write(path, text).unwrap();
        lines
    }

    /// For every rescale `p_old → p_new` and snapshot point (polls per old subtask, a
    /// different number for each), lines emitted before the snapshot plus lines emitted
    /// by the restored subtasks are exactly the input, each once.
    fn check_resume(input: &Path, mut expected: Vec<String>, batch: usize) {
        expected.sort();
        let chk = tempfile::tempdir().unwrap();
        let mut id = 0;
        for (p_old, p_new) in [(1, 1), (2, 2), (3, 2), (2, 3), (1, 3), (3, 1)] {
            for polls in [0, 1, 2, 3, 5, 8, 13, 100] {
                id += 1;
                let mut old = subtasks(input, p_old, batch, None);
                let mut seen = Vec::new();
                for (i, s) in old.iter_mut().enumerate() {
                    // Different progress per subtask, so some are mid-split, some
                    // between splits and some finished.
                    poll_times(s, polls + i * 2, &mut seen);
                }
                let snap = snapshot_all(&mut old, chk.path(), id);
                // Progress after the snapshot is not in it.
                for s in &mut old {
                    poll_times(s, 3, &mut Vec::new());
                }
                let before = seen.len();
                for s in &mut subtasks(input, p_new, batch, Some(&snap)) {
                    seen.extend(drain(s));
                }
                seen.sort();
                assert_eq!(
                    seen, expected,
                    "{p_old} → {p_new} after {polls} polls ({before} lines before)"
                );
            }
        }
    }

    #[test]
    fn restore_resumes_a_file_exactly_where_the_snapshot_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        let lines = write_lines(&f, 0, 120);
        check_resume(&f, lines, 7);
    }

    #[test]
    fn restore_resumes_a_directory_exactly_where_the_snapshot_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        for k in 0..5 {
            lines.extend(write_lines(
                &dir.path().join(format!("{k}.txt")),
                k * 100,
                10 + k * 9,
            ));
        }
        std::fs::write(dir.path().join("empty.txt"), "").unwrap();
        check_resume(dir.path(), lines, 4);
    }

    #[test]
    fn snapshot_of_finished_subtasks_restores_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        write_lines(&f, 0, 30);
        let chk = tempfile::tempdir().unwrap();
        let mut old = subtasks(&f, 2, 1024, None);
        for s in &mut old {
            drain(s);
        }
        let snap = snapshot_all(&mut old, chk.path(), 1);
        // Each subtask still writes a state file, so the source is in the snapshot.
        assert!(snap.1.subtasks.iter().all(|s| s.operator.is_some()));
        for s in &mut subtasks(&f, 3, 1024, Some(&snap)) {
            assert_eq!(drain(s), Vec::<String>::new());
        }
    }

    #[test]
    fn restored_offset_that_is_no_longer_a_line_start_is_a_restore_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        write_lines(&f, 0, 30);
        let chk = tempfile::tempdir().unwrap();
        let mut old = subtasks(&f, 1, 5, None);
        poll_times(&mut old[0], 1, &mut Vec::new());
        let snap = snapshot_all(&mut old, chk.path(), 1);
        // The file changes under the checkpoint: offsets shift.
        std::fs::write(&f, "a much longer first line than before\nsecond\n").unwrap();
        let mut restored = subtasks(&f, 1, 5, Some(&snap));
        let r = restored[0].poll_next(&mut Vec::new(), Instant::now());
        assert!(
            matches!(r, Err(DataflowError::State(StateError::Restore { .. }))),
            "{r:?}"
        );
    }

    #[test]
    fn restored_subtask_keeps_its_rate_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        write_lines(&f, 0, 30);
        let chk = tempfile::tempdir().unwrap();
        let mut old = subtasks(&f, 1, 5, None);
        poll_times(&mut old[0], 1, &mut Vec::new());
        let snap = snapshot_all(&mut old, chk.path(), 1);
        let mut s = FileLinesSource::new(
            FileLinesConfig {
                rate: Some(10.0),
                path: f.to_string_lossy().into(),
            },
            &ctx(0, 1),
        )
        .unwrap();
        s.initialize_state(&mut source_tests::init_from(Some(&snap)))
            .unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        assert_eq!(s.poll_next(&mut out, t).unwrap(), SourceStatus::More);
        assert!(matches!(
            s.poll_next(&mut out, t).unwrap(),
            SourceStatus::Idle(_)
        ));
        // One line (the rate's first token), the one after the snapshot.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value.to_string(), format!("5:{}", "y".repeat(9)));
    }
}
