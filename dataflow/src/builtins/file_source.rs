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

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::rate_limiter::RateLimiter;
use crate::value::Value;

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

/// One byte range of one file.
struct Split {
    path: PathBuf,
    start: u64,
    end: u64,
}

struct OpenSplit {
    reader: BufReader<File>,
    /// Offset of the next unread byte.
    pos: u64,
    end: u64,
    path: PathBuf,
}

pub(crate) struct FileLinesSource {
    pending: std::vec::IntoIter<Split>,
    current: Option<OpenSplit>,
    line: Vec<u8>,
    limiter: Option<RateLimiter>,
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
        let mut splits = Vec::new();
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
                    splits.push(Split {
                        path: f,
                        start: 0,
                        end: len,
                    });
                }
            }
        } else {
            let len = meta.len();
            splits.push(Split {
                path,
                start: len * i / p,
                end: len * (i + 1) / p,
            });
        }
        Ok(Self {
            pending: splits.into_iter(),
            current: None,
            line: Vec::new(),
            limiter: c.rate.map(|r| RateLimiter::new(r / p as f64)),
        })
    }

    fn open_split(s: Split) -> Result<OpenSplit> {
        let file = File::open(&s.path).map_err(|e| io_err(&s.path, "opening", e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut pos = s.start;
        if s.start > 0 {
            // Skip the tail of a line that started before our range: read from the byte
            // before `start`, so a line starting exactly at `start` is kept.
            reader
                .seek(SeekFrom::Start(s.start - 1))
                .map_err(|e| io_err(&s.path, "seeking", e))?;
            let mut skipped = Vec::new();
            let n = reader
                .read_until(b'\n', &mut skipped)
                .map_err(|e| io_err(&s.path, "reading", e))?;
            pos = s.start - 1 + n as u64;
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
    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus> {
        let budget = match &mut self.limiter {
            Some(l) => match l.acquire(1024, now) {
                Ok(n) => n,
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            },
            None => 1024,
        };
        let split = match &mut self.current {
            Some(s) => s,
            None => match self.pending.next() {
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
    use super::*;
    use crate::ids::JobId;

    fn read_all(path: &Path, p: u32) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..p {
            let ctx = OperatorContext {
                job_id: JobId([0; 16]),
                operator_name: "f".into(),
                operator_uid: "f".into(),
                subtask_index: i,
                parallelism: p,
                max_parallelism: 128,
                key_selector: None,
                collect: None,
                state: crate::state::StateContext::default(),
            };
            let mut s = FileLinesSource::new(
                FileLinesConfig {
                    rate: None,
                    path: path.to_string_lossy().into(),
                },
                &ctx,
            )
            .unwrap();
            let mut out = Vec::new();
            while s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::More {}
            lines.extend(out.into_iter().map(|r| r.value.to_string()));
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
        let ctx = OperatorContext {
            job_id: JobId([0; 16]),
            operator_name: "f".into(),
            operator_uid: "f".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: None,
            collect: None,
            state: crate::state::StateContext::default(),
        };
        let r = FileLinesSource::new(
            FileLinesConfig {
                rate: None,
                path: "/nonexistent/rill".into(),
            },
            &ctx,
        );
        assert!(matches!(r, Err(DataflowError::Io { .. })));
    }
}
