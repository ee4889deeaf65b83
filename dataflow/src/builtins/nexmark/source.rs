//! The two Nexmark sources: the generator and the JSON Lines file reader. Both emit
//! events as [`Value`] tuples (see [`model`](super::model)) with their `dateTime` as the
//! record timestamp, and both stripe the events over the subtasks — subtask `i` of `p`
//! emits events (lines) `i, i + p, i + 2p, …` — so every subtask's event time advances
//! at the pace of the whole stream, and a bounded-out-of-orderness watermark per
//! subtask stays close to the global one.
//!
//! # Generator (`rill.source.nexmark`)
//!
//! A [datagen source](super::super::datagen) of event numbers `0..events` mapped
//! through [`GeneratorConfig::event`]: an event is a pure function of its number, so
//! the datagen source's checkpointed state (its unfinished sequences, restored and
//! rescaled exactly once) is the whole state of this source.
//!
//! # File (`rill.source.nexmark_file`)
//!
//! Every subtask reads the whole file and parses only its own lines (finding line ends
//! is cheap next to parsing JSON), so each line's number is known exactly: a line that
//! is not a Nexmark event fails the task with [`DataflowError::MalformedInput`] naming
//! the file and the 1-based line number. Blank lines are skipped (they still count).
//!
//! Its state is a list of [`Cursor`]s in operator list state [`CURSORS_STATE`] — byte
//! offset and number of the next line to look at, plus which residue modulo which
//! stride it owns — one per subtask at first. On restore the cursors are split evenly
//! over the new subtasks; a subtask with several reads them round-robin, one event from
//! each in turn, so its event time still advances evenly. The byte before a restored
//! offset must be `\n`: a file changed under a checkpoint fails the restore
//! ([`StateError::Restore`]). A finished subtask snapshots no cursor, and every subtask
//! records its index in [`SNAPSHOTTED_STATE`] so that the source is in the snapshot even
//! when it has finished (and is not read again on restore).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rill_state::{OperatorListState, OperatorStateBackend, StateError};
use serde::{Deserialize, Serialize};

use super::generator::GeneratorConfig;
use super::model::Event;
use crate::builtins::datagen::DatagenSource;
use crate::builtins::DatagenConfig;
use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};

/// Name of the list state holding a file source subtask's [`Cursor`]s.
pub(crate) const CURSORS_STATE: &str = "nexmark-file-cursors";
/// Name of the list state holding the index of each subtask that took a snapshot.
pub(crate) const SNAPSHOTTED_STATE: &str = "nexmark-file-snapshotted";
/// Events per poll at most.
const BATCH: usize = 1024;

/// Configuration of `rill.source.nexmark`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexmarkGeneratorConfig {
    /// Number of events (unbounded if `None`).
    #[serde(default)]
    pub events: Option<u64>,
    /// The generator's parameters.
    #[serde(default)]
    pub generator: GeneratorConfig,
}

/// The generator source; see the module docs.
pub(crate) struct NexmarkGeneratorSource {
    numbers: DatagenSource,
    generator: GeneratorConfig,
}

impl NexmarkGeneratorSource {
    pub(crate) fn new(c: NexmarkGeneratorConfig, ctx: &OperatorContext) -> Result<Self> {
        c.generator
            .validate()
            .map_err(|reason| DataflowError::InvalidConfig {
                factory: super::NEXMARK_SOURCE.into(),
                reason,
            })?;
        let numbers = DatagenSource::new(
            DatagenConfig {
                rows: c.events,
                batch_size: BATCH,
                ..DatagenConfig::default()
            },
            ctx,
        )?;
        Ok(Self {
            numbers,
            generator: c.generator,
        })
    }
}

impl SourceOperator for NexmarkGeneratorSource {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        self.numbers.initialize_state(init)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        self.numbers.snapshot_state(ctx)
    }

    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus> {
        let from = out.len();
        let status = self.numbers.poll_next(out, now)?;
        for r in &mut out[from..] {
            // The datagen source emits i64 ids from 0 (start 0): event numbers.
            let n = r.value.as_i64().unwrap_or(0) as u64;
            let e = self.generator.event(n);
            r.timestamp = Some(e.date_time());
            r.value = e.into_value();
        }
        Ok(status)
    }
}

/// Configuration of `rill.source.nexmark_file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexmarkFileConfig {
    /// The JSON Lines file.
    pub path: String,
}

/// Where a file source subtask stands in the file. Also the element of
/// [`CURSORS_STATE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    path: PathBuf,
    /// Byte offset of line `line`.
    offset: u64,
    /// 0-based number of the next line to look at.
    line: u64,
    /// This cursor parses the lines with `line % stride == residue`; `stride` ≥ 1.
    residue: u64,
    stride: u64,
}

struct OpenCursor {
    cursor: Cursor,
    reader: BufReader<File>,
    done: bool,
}

/// The state handles, registered by `initialize_state`.
#[derive(Clone, Copy)]
struct Handles {
    cursors: OperatorListState<Cursor>,
    snapshotted: OperatorListState<u32>,
}

pub(crate) struct NexmarkFileSource {
    ctx: OperatorContext,
    /// Cursors to read, round-robin; opened on the first poll.
    cursors: Vec<Cursor>,
    open: Vec<OpenCursor>,
    /// Index into `open` of the cursor that emits the next event.
    turn: usize,
    line: Vec<u8>,
    backend: OperatorStateBackend,
    state: Option<Handles>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> DataflowError {
    DataflowError::io(format!("{what} {}", path.display()), e)
}

impl NexmarkFileSource {
    pub(crate) fn new(c: NexmarkFileConfig, ctx: &OperatorContext) -> Result<Self> {
        let path = PathBuf::from(&c.path);
        std::fs::metadata(&path).map_err(|e| io_err(&path, "reading", e))?;
        Ok(Self {
            ctx: ctx.clone(),
            cursors: vec![Cursor {
                path,
                offset: 0,
                line: 0,
                residue: u64::from(ctx.subtask_index),
                stride: u64::from(ctx.parallelism.max(1)),
            }],
            open: Vec::new(),
            turn: 0,
            line: Vec::new(),
            backend: ctx.create_operator_state_backend(),
            state: None,
        })
    }

    fn open_cursor(c: Cursor) -> Result<OpenCursor> {
        let file = File::open(&c.path).map_err(|e| io_err(&c.path, "opening", e))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        if c.offset > 0 {
            reader
                .seek(SeekFrom::Start(c.offset - 1))
                .map_err(|e| io_err(&c.path, "seeking", e))?;
            let mut before = [0u8; 1];
            let n = reader
                .read(&mut before)
                .map_err(|e| io_err(&c.path, "reading", e))?;
            if n != 1 || before[0] != b'\n' {
                return Err(StateError::Restore {
                    reason: format!(
                        "nexmark file source: checkpointed offset {} of {} is no longer a \
                         line start (the file changed since the checkpoint)",
                        c.offset,
                        c.path.display()
                    ),
                }
                .into());
            }
        }
        Ok(OpenCursor {
            cursor: c,
            reader,
            done: false,
        })
    }

    /// Reads `oc` up to and including its next own event; `None` at the end of the file.
    fn next_event(oc: &mut OpenCursor, line: &mut Vec<u8>) -> Result<Option<Event>> {
        loop {
            line.clear();
            let c = &mut oc.cursor;
            let n = oc
                .reader
                .read_until(b'\n', line)
                .map_err(|e| io_err(&c.path, "reading", e))?;
            if n == 0 {
                oc.done = true;
                return Ok(None);
            }
            let number = c.line;
            c.offset += n as u64;
            c.line += 1;
            if number % c.stride != c.residue {
                continue;
            }
            let mut bytes = &line[..];
            if let Some(b) = bytes.strip_suffix(b"\n") {
                bytes = b.strip_suffix(b"\r").unwrap_or(b);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let malformed = |reason: String| DataflowError::MalformedInput {
                path: c.path.display().to_string(),
                line: number + 1,
                reason,
            };
            let text =
                std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
            return Event::from_json(text).map(Some).map_err(|e| {
                // The line is one line of JSON: say the column, not serde's "line 1".
                let full = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                let what = full.strip_suffix(&position).unwrap_or(&full);
                malformed(format!(
                    "not a Nexmark event: {what} (column {})",
                    e.column()
                ))
            });
        }
    }
}

impl SourceOperator for NexmarkFileSource {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        self.backend = init.operator_state_backend(&self.ctx)?;
        let handles = Handles {
            cursors: self.backend.list_state::<Cursor>(CURSORS_STATE)?,
            snapshotted: self.backend.list_state::<u32>(SNAPSHOTTED_STATE)?,
        };
        if init.is_restored() {
            let restored = handles.cursors.get(&self.backend)?;
            if let Some(bad) = restored
                .iter()
                .find(|c| c.stride == 0 || c.residue >= c.stride)
            {
                return Err(StateError::Restore {
                    reason: format!(
                        "nexmark file source `{}`: restored cursor {bad:?} has no valid stride",
                        self.ctx.operator_uid
                    ),
                }
                .into());
            }
            self.cursors = restored;
            self.open.clear();
            self.turn = 0;
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
        // Starting at the turn keeps the round-robin order across a restore.
        let n = self.open.len();
        let remaining: Vec<Cursor> = (0..n)
            .map(|k| &self.open[(self.turn + k) % n])
            .filter(|oc| !oc.done)
            .map(|oc| oc.cursor.clone())
            .chain(self.cursors.iter().cloned())
            .collect();
        handles.cursors.update(&mut self.backend, &remaining)?;
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

    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, _now: Instant) -> Result<SourceStatus> {
        for c in std::mem::take(&mut self.cursors) {
            self.open.push(Self::open_cursor(c)?);
        }
        let mut emitted = 0;
        while emitted < BATCH && !self.open.is_empty() {
            let k = self.turn % self.open.len();
            match Self::next_event(&mut self.open[k], &mut self.line)? {
                Some(e) => {
                    out.push(StreamRecord {
                        timestamp: Some(e.date_time()),
                        value: e.into_value(),
                    });
                    emitted += 1;
                    self.turn = k + 1;
                }
                None => {
                    self.open.remove(k);
                    self.turn = k;
                }
            }
        }
        Ok(if self.open.is_empty() && emitted == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::builtins::source_tests;

    fn ctx(i: u32, p: u32) -> OperatorContext {
        source_tests::ctx("nexmark", i, p)
    }

    fn events_file(dir: &Path, n: u64) -> (PathBuf, Vec<Event>) {
        let g = GeneratorConfig::default();
        let events: Vec<Event> = (0..n).map(|k| g.event(k)).collect();
        let mut bytes = Vec::new();
        for e in &events {
            e.write_json(&mut bytes);
            bytes.push(b'\n');
        }
        let path = dir.join("events.jsonl");
        std::fs::write(&path, bytes).unwrap();
        (path, events)
    }

    fn file_source(path: &Path, i: u32, p: u32) -> NexmarkFileSource {
        let c = NexmarkFileConfig {
            path: path.to_string_lossy().into(),
        };
        NexmarkFileSource::new(c, &ctx(i, p)).unwrap()
    }

    fn poll<S: SourceOperator>(s: &mut S, polls: Option<usize>) -> Vec<Event> {
        let mut out = Vec::new();
        let mut k = 0;
        while polls.is_none_or(|p| k < p) {
            k += 1;
            if s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::Finished {
                break;
            }
        }
        out.into_iter()
            .map(|r| {
                let e = Event::from_value(&r.value).unwrap();
                assert_eq!(r.timestamp, Some(e.date_time()));
                e
            })
            .collect()
    }

    #[test]
    fn generator_source_stripes_the_generators_events() {
        let c = NexmarkGeneratorConfig {
            events: Some(3000),
            generator: GeneratorConfig::default(),
        };
        let mut all: Vec<(i64, Event)> = Vec::new();
        for i in 0..3 {
            let mut s = NexmarkGeneratorSource::new(c.clone(), &ctx(i, 3)).unwrap();
            s.initialize_state(&mut source_tests::init_from(None))
                .unwrap();
            let got = poll(&mut s, None);
            assert_eq!(got.len(), 1000);
            assert_eq!(got[0], c.generator.event(u64::from(i)));
            all.extend(got.into_iter().map(|e| (e.date_time(), e)));
        }
        let mut want: Vec<Event> = (0..3000).map(|n| c.generator.event(n)).collect();
        let mut got: Vec<Event> = all.into_iter().map(|(_, e)| e).collect();
        let key = |e: &Event| format!("{e:?}");
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want);
    }

    /// The generator's state is the datagen source's: a snapshot at 2 subtasks restored
    /// at 3 emits exactly the events not emitted before it.
    #[test]
    fn generator_source_restores_and_rescales_exactly_once() {
        let c = NexmarkGeneratorConfig {
            events: Some(5000),
            generator: GeneratorConfig {
                seed: 9,
                ..GeneratorConfig::default()
            },
        };
        let chk = tempfile::tempdir().unwrap();
        let mut old: Vec<NexmarkGeneratorSource> = (0..2)
            .map(|i| {
                let mut s = NexmarkGeneratorSource::new(c.clone(), &ctx(i, 2)).unwrap();
                s.initialize_state(&mut source_tests::init_from(None))
                    .unwrap();
                s
            })
            .collect();
        let mut seen = poll(&mut old[0], Some(1));
        seen.extend(poll(&mut old[1], Some(2)));
        let snap = source_tests::snapshot_all(&mut old, "nexmark", chk.path(), 1);
        for i in 0..3 {
            let mut s = NexmarkGeneratorSource::new(c.clone(), &ctx(i, 3)).unwrap();
            s.initialize_state(&mut source_tests::init_from(Some(&snap)))
                .unwrap();
            seen.extend(poll(&mut s, None));
        }
        let key = |e: &Event| (e.date_time(), format!("{e:?}"));
        seen.sort_by_key(key);
        let mut want: Vec<Event> = (0..5000).map(|n| c.generator.event(n)).collect();
        want.sort_by_key(key);
        assert_eq!(seen.len(), want.len());
        assert!(seen == want, "every event exactly once");
    }

    #[test]
    fn file_source_reads_every_line_once_at_any_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        let (path, events) = events_file(dir.path(), 2500);
        for p in [1, 2, 3] {
            let mut got: Vec<Event> = Vec::new();
            for i in 0..p {
                let mut s = file_source(&path, i, p);
                let mine = poll(&mut s, None);
                let want: Vec<Event> = events
                    .iter()
                    .skip(i as usize)
                    .step_by(p as usize)
                    .cloned()
                    .collect();
                assert_eq!(mine, want, "subtask {i} of {p}");
                got.extend(mine);
            }
            assert_eq!(got.len(), events.len());
        }
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = events_file(dir.path(), 5);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f).unwrap();
        writeln!(f, r#"{{"bid":{{"auction":1}}}}"#).unwrap();
        let mut s = file_source(&path, 0, 1);
        let mut out = Vec::new();
        let err = loop {
            match s.poll_next(&mut out, Instant::now()) {
                Ok(SourceStatus::Finished) => panic!("the malformed line was accepted"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        match &err {
            DataflowError::MalformedInput { path: p, line, .. } => {
                assert_eq!((p.as_str(), *line), (path.to_str().unwrap(), 7));
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("events.jsonl:7: not a Nexmark event"),
            "{text}"
        );
        assert!(
            text.contains("missing field `bidder` (column 20)"),
            "{text}"
        );
        assert!(!err.is_retryable());
    }

    /// For each rescale and snapshot point, events before the snapshot plus events
    /// after the restore are the file's events, each once.
    #[test]
    fn file_source_restores_exactly_where_the_snapshot_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let chk = tempfile::tempdir().unwrap();
        let (path, events) = events_file(dir.path(), 5000);
        let mut id = 0;
        for (p_old, p_new) in [(1, 1), (2, 2), (3, 2), (2, 3), (1, 2), (2, 1)] {
            for polls in [0, 1, 2, 3] {
                id += 1;
                let mut old: Vec<NexmarkFileSource> = (0..p_old)
                    .map(|i| {
                        let mut s = file_source(&path, i, p_old);
                        s.initialize_state(&mut source_tests::init_from(None))
                            .unwrap();
                        s
                    })
                    .collect();
                let mut seen = Vec::new();
                for (i, s) in old.iter_mut().enumerate() {
                    seen.extend(poll(s, Some(polls + i)));
                }
                let snap = source_tests::snapshot_all(&mut old, "nexmark", chk.path(), id);
                for s in &mut old {
                    poll(s, Some(1));
                }
                for i in 0..p_new {
                    let mut s = file_source(&path, i, p_new);
                    s.initialize_state(&mut source_tests::init_from(Some(&snap)))
                        .unwrap();
                    let got = poll(&mut s, None);
                    // Round-robin over several cursors keeps event time near order.
                    let late = got
                        .windows(2)
                        .filter(|w| w[1].date_time() + 1000 < w[0].date_time())
                        .count();
                    assert!(late <= 1, "{p_old} → {p_new}: {late} jumps back");
                    seen.extend(got);
                }
                let key = |e: &Event| (e.date_time(), format!("{e:?}"));
                seen.sort_by_key(key);
                let mut want = events.clone();
                want.sort_by_key(key);
                assert_eq!(seen.len(), want.len(), "{p_old} → {p_new} after {polls}");
                assert!(seen == want, "{p_old} → {p_new} after {polls} polls");
            }
        }
    }
}
