//! StreamTask: one subtask of one vertex, run by one OS thread in a mailbox loop.
//!
//! How the TaskExecutor runs a subtask:
//!
//! 1. build a [`TaskInput`] with the input channels of
//!    [`JobGraph::wiring`](crate::job_graph::JobGraph::wiring) (none for a source
//!    vertex) and one [`TaskOutput`] per output edge;
//! 2. [`StreamTask::new`] checks that they fit the vertex; keep
//!    [`StreamTask::mailbox`] to cancel it later;
//! 3. [`StreamTask::spawn`] (or call [`StreamTask::run`] on a thread of your own);
//!    the [`TaskOutcome`] says `Finished(final snapshots)`, `Canceled` or
//!    `Failed(error)`.
//!
//! The loop, on the task thread:
//!
//! * operators are instantiated from the registry, get `initialize_state` (with their
//!   part of [`TaskConfig::restore`], matched by uid) and are opened (tail first);
//! * **source vertex**: poll the source for a batch, push it through the chain, run
//!   mails, repeat; an idle source makes the task flush and wait on the mailbox (so a
//!   cancel interrupts the wait); a finished source emits the final watermark
//!   (`i64::MAX`) and end of input;
//! * **other vertices**: take the next input without blocking; if there is none, flush
//!   outputs and block (the mailbox waker interrupts the block). Records go through the
//!   chain; watermarks and statuses go through the [`WatermarkValve`]; when every
//!   channel has delivered `EndOfInput`, operators get `end_input` and outputs get
//!   `EndOfInput`;
//! * mails are checked after every batch (an atomic load); `Cancel` ends the loop;
//! * outputs are flushed at least every `buffer_timeout` while busy (checked after every
//!   batch and event, so a record waits at most the timeout plus one batch's
//!   processing); this is the whole buffer-timeout mechanism, the outputs need no
//!   flusher of their own (see [`network_io`](crate::network_io));
//! * **final snapshot**: when the input ended normally and the config has both
//!   `state.checkpoints.dir` and [`TaskConfig::final_snapshot`], every stateful
//!   operator is snapshotted after `end_input` into that target, the asynchronous parts
//!   run on the task thread, and `Finished` carries one
//!   [`OperatorSubtaskSnapshot`] per stateful operator (see [`state`](crate::state));
//!   a failing snapshot fails the task;
//! * operators are always closed; the mailbox is closed so later sends fail.
//!
//! A failure after a cancel request (e.g. a channel closed because the consumer was
//! canceled first) is reported as `Canceled`, not `Failed`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::barrier_handler::{AbortCause, BarrierAction, BarrierHandler};
use crate::chain::OperatorChain;
use crate::checkpoint::{
    millis, wall_clock_ms, Alignment, CheckpointBarrier, CheckpointEvent, DeclineReason,
    TaskCheckpointStats, TaskCheckpointing,
};
use crate::collect::CollectSink;
use crate::element::{StreamEvent, StreamRecord};
use crate::error::{DataflowError, Result};
use crate::ids::VertexId;
use crate::in_flight::{self, InFlightCollector};
use crate::job_graph::JobGraph;
use crate::mailbox::{Mail, Mailbox, MailboxSender};
use crate::operator::SourceStatus;
use crate::registry::{OperatorKind, OperatorRegistry};
use crate::state::{OperatorSubtaskSnapshot, StateContext, TaskRestore};
use crate::state_config::StateConfig;
use crate::task_io::{InputEvent, TaskInput, TaskOutput};
use crate::watermark::WatermarkValve;
use rill_network::QueuedBarrier;
use rill_state::in_flight::InFlightData;
use rill_state::{SnapshotTarget, SystemTtlClock, TtlClock};

/// Adapts the input batch size to the chain's speed: a batch that took longer than
/// [`BatchSizer::SLOW`] halves the limit, one under [`BatchSizer::FAST`] doubles it
/// (up to the configured batch size). Behind a slow operator (one that sleeps, or does
/// I/O per record) barriers, cancels and other mail then wait about one short batch
/// instead of a full one; fast chains keep full batches.
struct BatchSizer {
    limit: usize,
    max: usize,
}

impl BatchSizer {
    const SLOW: Duration = Duration::from_millis(10);
    const FAST: Duration = Duration::from_millis(2);

    fn new(max: usize) -> Self {
        let max = max.max(1);
        BatchSizer { limit: max, max }
    }

    /// A batch of `n` records took `took`: the input's new limit, if it changes.
    fn after(&mut self, n: usize, took: Duration) -> Option<usize> {
        let limit = if took > Self::SLOW {
            (n / 2).max(1)
        } else if took < Self::FAST && n >= self.limit {
            (self.limit * 2).min(self.max)
        } else {
            return None;
        };
        (limit != self.limit).then(|| {
            self.limit = limit;
            limit
        })
    }
}

#[cfg(test)]
mod batch_sizer_tests {
    use super::*;

    #[test]
    fn slow_batches_halve_the_limit_and_fast_full_ones_double_it_back() {
        let ms = Duration::from_millis;
        let mut b = BatchSizer::new(1024);
        assert_eq!(b.after(1024, ms(1)), None, "already at the maximum");
        assert_eq!(b.after(1024, ms(2500)), Some(512));
        assert_eq!(b.after(512, ms(1200)), Some(256));
        assert_eq!(
            b.after(3, ms(50)),
            Some(1),
            "a slow small batch: one record"
        );
        assert_eq!(b.after(1, ms(20)), None, "never below one");
        assert_eq!(b.after(1, ms(5)), None, "neither slow nor fast: kept");
        assert_eq!(b.after(1, ms(0)), Some(2));
        assert_eq!(
            b.after(1, ms(0)),
            None,
            "a batch below the limit says nothing"
        );
        for _ in 0..20 {
            let n = b.limit;
            b.after(n, ms(0));
        }
        assert_eq!(b.limit, 1024, "back to the maximum, not beyond");
    }
}

/// How a task ended.
#[derive(Debug)]
pub enum TaskOutcome {
    /// All input processed (bounded job). With a final snapshot configured
    /// ([`TaskConfig::final_snapshot`]), one entry per stateful operator of the chain
    /// (otherwise empty), or why the snapshot could not be written: the task's output is
    /// complete either way, so a failed final snapshot fails that snapshot, not the task.
    Finished(std::result::Result<Vec<OperatorSubtaskSnapshot>, DataflowError>),
    /// Stopped by a `Cancel` mail.
    Canceled,
    /// Stopped by an error.
    Failed(DataflowError),
}

/// Task settings.
#[derive(Clone)]
pub struct TaskConfig {
    /// Longest time emitted records may sit in output buffers while the task is busy
    /// (Flink's `execution.buffer-timeout`).
    pub buffer_timeout: Duration,
    /// Initial capacity of record batches.
    pub batch_size: usize,
    /// State backend and checkpoint settings (`state.*`), validated by
    /// [`StreamTask::new`].
    pub state: StateConfig,
    /// Processing time for state TTL.
    pub state_clock: Arc<dyn TtlClock>,
    /// Where a bounded task snapshots its operators when its input ends (set by whoever
    /// deploys the task, e.g. `chk-<n>` of the job's checkpoint layout); only used when
    /// `state.checkpoints_dir` is set.
    pub final_snapshot: Option<SnapshotTarget>,
    /// The snapshot the task's operators restore from, if any.
    pub restore: Option<TaskRestore>,
    /// Periodic checkpoints of the job (see [`checkpoint`](crate::checkpoint)); `None`:
    /// the job takes none, and a barrier reaching the task fails it.
    pub checkpointing: Option<TaskCheckpointing>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            buffer_timeout: Duration::from_millis(100),
            batch_size: 1024,
            state: StateConfig::default(),
            state_clock: Arc::new(SystemTtlClock),
            final_snapshot: None,
            restore: None,
            checkpointing: None,
        }
    }
}

impl std::fmt::Debug for TaskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskConfig")
            .field("buffer_timeout", &self.buffer_timeout)
            .field("batch_size", &self.batch_size)
            .field("state", &self.state)
            .field("final_snapshot", &self.final_snapshot)
            .field("restore", &self.restore)
            .field("checkpointing", &self.checkpointing)
            .finish_non_exhaustive()
    }
}

/// What a task needs from the process it runs in.
#[derive(Clone)]
pub struct TaskEnvironment {
    /// The process's operator registry.
    pub registry: Arc<OperatorRegistry>,
    /// Where collect sinks deliver, if anywhere.
    pub collect: Option<Arc<dyn CollectSink>>,
    /// Task settings.
    pub config: TaskConfig,
}

/// One subtask, ready to run.
pub struct StreamTask {
    job: Arc<JobGraph>,
    vertex: VertexId,
    subtask_index: u32,
    env: TaskEnvironment,
    input: Option<Box<dyn TaskInput>>,
    outputs: Vec<Box<dyn TaskOutput>>,
    mailbox: Mailbox,
    cancel_requested: bool,
    /// Highest checkpoint id snapshotted or declined here: triggers and barriers up to
    /// it are stale.
    last_checkpoint: u64,
    /// The input has ended (or the source finished) and the task waits for its final
    /// checkpoint; triggers by mail are accepted from then on (and by sources always).
    input_ended: bool,
    /// The job's final checkpoint completed: the waiting task finishes.
    final_checkpoint_done: bool,
    /// Asynchronous parts of checkpoints still running: they read the state backends,
    /// so the task waits for them before it closes its operators.
    uploads: Vec<JoinHandle<()>>,
    /// The unaligned checkpoint whose barriers are still passing this task's input.
    in_flight: Option<InFlightCollector>,
}

/// A running task's thread and mailbox.
pub struct TaskHandle {
    mailbox: MailboxSender,
    thread: JoinHandle<TaskOutcome>,
}

impl TaskHandle {
    /// Asks the task to stop; `false` if it has already ended.
    pub fn cancel(&self) -> bool {
        self.mailbox.send(Mail::Cancel).is_ok()
    }

    /// The task's mailbox.
    pub fn mailbox(&self) -> &MailboxSender {
        &self.mailbox
    }

    /// Waits for the task to end. A panic in operator code is reported as `Failed`.
    pub fn join(self) -> TaskOutcome {
        self.thread
            .join()
            .unwrap_or_else(|panic| TaskOutcome::Failed(panic_error(panic.as_ref())))
    }
}

fn panic_error(panic: &(dyn std::any::Any + Send)) -> DataflowError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    DataflowError::Operator {
        operator: "task thread".into(),
        message: format!("panicked: {message}"),
    }
}

enum Control {
    Continue,
    Cancel,
    /// A stop-with-savepoint reached this source.
    Stop {
        drain: bool,
    },
}

/// How `invoke` ended without error.
enum Ended {
    Finished(std::result::Result<Vec<OperatorSubtaskSnapshot>, DataflowError>),
    Canceled,
}

impl StreamTask {
    /// A task for subtask `subtask_index` of `vertex`. `input` must be `None` exactly for
    /// source vertices and have as many channels as the graph defines; `outputs[i]`
    /// serves the vertex's `i`-th output edge.
    pub fn new(
        job: Arc<JobGraph>,
        vertex: VertexId,
        subtask_index: u32,
        env: TaskEnvironment,
        input: Option<Box<dyn TaskInput>>,
        outputs: Vec<Box<dyn TaskOutput>>,
    ) -> Result<Self> {
        // Checks the vertex and the subtask index too.
        let channels = job.wiring(vertex, subtask_index)?.inputs.len();
        let v = job
            .vertex(vertex)
            .ok_or_else(|| DataflowError::InvalidGraph(format!("no vertex {vertex}")))?;
        let is_source = v.operators.first().map(|o| o.spec.kind) == Some(OperatorKind::Source);
        match (&input, is_source) {
            (None, true) => {}
            (Some(i), false) if i.num_channels() == channels => {}
            _ => {
                return Err(DataflowError::InvalidGraph(format!(
                    "`{}` subtask {subtask_index} needs {} (got {})",
                    v.name,
                    if is_source {
                        "no input".to_owned()
                    } else {
                        format!("{channels} input channels")
                    },
                    input.as_ref().map_or("no input".to_owned(), |i| format!(
                        "{} channels",
                        i.num_channels()
                    )),
                )))
            }
        }
        env.config.state.validate()?;
        let out_edges = job.output_edges(vertex).count();
        if outputs.len() != out_edges {
            return Err(DataflowError::InvalidGraph(format!(
                "`{}` has {out_edges} output edges but got {} outputs",
                v.name,
                outputs.len()
            )));
        }
        Ok(Self {
            job,
            vertex,
            subtask_index,
            env,
            input,
            outputs,
            mailbox: Mailbox::new(),
            cancel_requested: false,
            last_checkpoint: 0,
            input_ended: false,
            final_checkpoint_done: false,
            uploads: Vec::new(),
            in_flight: None,
        })
    }

    /// A sender to this task's mailbox.
    pub fn mailbox(&self) -> MailboxSender {
        self.mailbox.sender()
    }

    /// The thread name: `"vertex name (i/p)"`, Flink style (1-based).
    pub fn name(&self) -> String {
        let v = self.job.vertex(self.vertex);
        format!(
            "{} ({}/{})",
            v.map_or("?", |v| v.name.as_str()),
            self.subtask_index + 1,
            v.map_or(0, |v| v.parallelism)
        )
    }

    /// Runs the task on a new named thread; `on_exit` runs on that thread with the
    /// outcome before it ends (e.g. to notify a supervisor).
    pub fn spawn(self, on_exit: impl FnOnce(&TaskOutcome) + Send + 'static) -> Result<TaskHandle> {
        let mailbox = self.mailbox();
        let mut name = self.name();
        // Linux thread names are cut at 15 bytes anyway; keep the Rust-side name short.
        if name.len() > 64 {
            let mut cut = 61;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
            name.push_str("...");
        }
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // A panicking operator must still report an outcome, or a supervisor
                // waiting for `on_exit` would never cancel the job's other tasks.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()))
                    .unwrap_or_else(|panic| TaskOutcome::Failed(panic_error(panic.as_ref())));
                on_exit(&outcome);
                outcome
            })
            .map_err(|e| DataflowError::io("spawning a task thread", e))?;
        Ok(TaskHandle { mailbox, thread })
    }

    /// Runs the task to completion on the calling thread.
    pub fn run(mut self) -> TaskOutcome {
        let span = tracing::info_span!(
            "task",
            job_id = %self.job.job_id,
            vertex = %self.vertex,
            subtask = self.subtask_index
        );
        let _enter = span.enter();
        if let Some(input) = &self.input {
            self.mailbox.set_waker(input.waker());
        }
        let res = self.invoke();
        self.mailbox.close();
        let outcome = match res {
            Ok(Ended::Finished(snapshots)) => TaskOutcome::Finished(snapshots),
            Ok(Ended::Canceled) => TaskOutcome::Canceled,
            Err(_) if self.cancel_requested => TaskOutcome::Canceled,
            Err(e) => TaskOutcome::Failed(e),
        };
        match &outcome {
            TaskOutcome::Failed(e) => tracing::warn!(error = %e, "task failed"),
            other => tracing::debug!(outcome = ?other, "task ended"),
        }
        outcome
    }

    fn invoke(&mut self) -> Result<Ended> {
        let job = self.job.clone();
        let vertex = job
            .vertex(self.vertex)
            .ok_or_else(|| DataflowError::InvalidGraph(format!("no vertex {}", self.vertex)))?;
        let mut chain = OperatorChain::build(
            &job,
            vertex,
            self.subtask_index,
            &self.env.registry,
            self.env.collect.clone(),
            std::mem::take(&mut self.outputs),
            &StateContext {
                config: self.env.config.state.clone(),
                clock: self.env.config.state_clock.clone(),
                checkpointing: self.env.config.checkpointing.is_some(),
            },
        )?;
        let res = chain
            .initialize_state(self.env.config.restore.as_ref())
            .and_then(|()| self.restore_in_flight(&mut chain))
            .and_then(|()| chain.open())
            .and_then(|()| {
                let control = if chain.is_source() {
                    self.run_source(&mut chain)?
                } else {
                    self.run_input(&mut chain)?
                };
                match control {
                    Control::Continue | Control::Stop { .. } => {
                        self.await_final_checkpoint(&mut chain)
                    }
                    Control::Cancel => Ok(Control::Cancel),
                }
            })
            .map(|control| match control {
                Control::Continue | Control::Stop { .. } => {
                    Ended::Finished(self.final_snapshot(&mut chain))
                }
                Control::Cancel => Ended::Canceled,
            });
        // The snapshot threads read the backends that closing the chain drops; one
        // waiting for in-flight data that will not come ends without acknowledging.
        self.in_flight = None;
        for upload in std::mem::take(&mut self.uploads) {
            let _ = upload.join();
        }
        let closed = chain.close();
        let ended = res?;
        closed?;
        Ok(ended)
    }

    /// Replays the in-flight data of the unaligned checkpoint the task restores from, if
    /// any: the output part is queued before anything the operators emit, the input part
    /// before anything the channels deliver.
    fn restore_in_flight(&mut self, chain: &mut OperatorChain) -> Result<()> {
        let (Some(restore), Some(head)) = (&self.env.config.restore, chain.head_context()) else {
            return Ok(());
        };
        let Some(data) = in_flight::restore_in_flight(
            restore,
            &head.operator_uid,
            self.subtask_index,
            head.parallelism,
        )?
        else {
            return Ok(());
        };
        chain.restore_output_in_flight(&data.output)?;
        match &mut self.input {
            Some(input) => {
                for (channel, bytes) in data.input {
                    input.restore_in_flight(channel as usize, bytes)?;
                }
            }
            None if data.input.is_empty() => {}
            None => {
                return Err(DataflowError::InvalidGraph(
                    "restored in-flight input data for a task without input".into(),
                ))
            }
        }
        Ok(())
    }

    /// After a normal end of input: snapshots every stateful operator into
    /// [`TaskConfig::final_snapshot`] if a checkpoint directory is configured, running
    /// the asynchronous parts right here (the task has nothing else left to do).
    fn final_snapshot(&self, chain: &mut OperatorChain) -> Result<Vec<OperatorSubtaskSnapshot>> {
        let config = &self.env.config;
        let (Some(target), Some(_)) = (&config.final_snapshot, &config.state.checkpoints_dir)
        else {
            return Ok(Vec::new());
        };
        let parts = chain.snapshot(target.checkpoint_id, target)?;
        let mut out = Vec::with_capacity(parts.len());
        for (uid, snap) in parts {
            let Some(ctx) = chain.operator_context(&uid) else {
                return Err(DataflowError::InvalidGraph(format!(
                    "snapshot of unknown operator `{uid}`"
                )));
            };
            let (name, parallelism, max_parallelism) = (
                ctx.operator_name.clone(),
                ctx.parallelism,
                ctx.max_parallelism,
            );
            out.push(OperatorSubtaskSnapshot {
                uid,
                name,
                parallelism,
                max_parallelism,
                snapshot: snap.run(self.subtask_index)?,
            });
        }
        tracing::debug!(
            checkpoint_id = target.checkpoint_id,
            operators = out.len(),
            "final snapshot written"
        );
        Ok(out)
    }

    /// With checkpoints, after the input ended: report it and take the checkpoints the
    /// coordinator triggers until the job's final one completed (see
    /// [`checkpoint`](crate::checkpoint)). Without checkpoints the task ends at once.
    fn await_final_checkpoint(&mut self, chain: &mut OperatorChain) -> Result<Control> {
        let Some(c) = &self.env.config.checkpointing else {
            return Ok(Control::Continue);
        };
        self.input_ended = true;
        c.responder.input_ended();
        tracing::debug!("input ended; waiting for the final checkpoint");
        loop {
            // A stop request that comes after the input ended changes nothing.
            if let Control::Cancel = self.process_mails(chain)? {
                return Ok(Control::Cancel);
            }
            if self.final_checkpoint_done {
                return Ok(Control::Continue);
            }
            self.mailbox.wait(Duration::from_secs(1));
        }
    }

    /// Takes checkpoint `barrier.id`: the synchronous part here, then the barrier goes
    /// downstream, then the asynchronous part on a thread of its own, which
    /// acknowledges. A failing synchronous part declines the checkpoint and sends a
    /// cancel marker downstream instead; the task goes on.
    ///
    /// `record` makes it unaligned: the barrier overtakes the queued output, and the
    /// input channels listed are recorded until their barriers arrive (see
    /// [`in_flight`](crate::in_flight)); the acknowledgement waits for that.
    fn checkpoint(
        &mut self,
        chain: &mut OperatorChain,
        mut input: Option<&mut dyn TaskInput>,
        barrier: CheckpointBarrier,
        alignment: Duration,
        record: Option<Vec<usize>>,
    ) -> Result<()> {
        let Some(c) = self.env.config.checkpointing.clone() else {
            return Err(DataflowError::Unsupported(format!(
                "checkpoint barrier {} reached a task of a job without checkpoints",
                barrier.id
            )));
        };
        if barrier.id <= self.last_checkpoint {
            return Ok(());
        }
        self.last_checkpoint = barrier.id;
        let id = barrier.id;
        let started = Instant::now();
        let task = self.name();
        let decline = |chain: &mut OperatorChain, message: String| -> Result<()> {
            let reason = DeclineReason::SnapshotFailed {
                task: task.clone(),
                message,
            };
            tracing::warn!(checkpoint_id = id, %reason, "checkpoint declined");
            c.responder.decline(id, reason);
            chain.broadcast_checkpoint_event(CheckpointEvent::Cancel(id))
        };
        let parts = match chain.snapshot(id, &c.target(&barrier)) {
            Ok(parts) => parts,
            Err(e) => return decline(chain, e.to_string()),
        };
        let mut named = Vec::with_capacity(parts.len());
        for (uid, snap) in parts {
            let Some(ctx) = chain.operator_context(&uid) else {
                return decline(chain, format!("snapshot of unknown operator `{uid}`"));
            };
            let meta = (
                ctx.operator_name.clone(),
                ctx.parallelism,
                ctx.max_parallelism,
            );
            named.push((uid, meta, snap));
        }
        let head = |chain: &OperatorChain| {
            chain.head_context().map(|h| {
                (
                    h.operator_uid.clone(),
                    h.operator_name.clone(),
                    h.parallelism,
                    h.max_parallelism,
                )
            })
        };
        let in_flight = match record {
            None => match c.alignment_time_left(&barrier, wall_clock_ms()) {
                Some(remaining) => {
                    // The barrier may wait behind backpressured output longer than the
                    // timeout: it turns unaligned there, and what it overtakes is stored.
                    let deadline = Instant::now() + remaining;
                    let queued = chain.broadcast_timeoutable_barrier(barrier)?;
                    (!queued.is_empty()).then(|| {
                        (
                            InFlightSource::Output { queued, deadline },
                            head(chain),
                            c.target(&barrier),
                        )
                    })
                }
                None => {
                    chain.broadcast_checkpoint_event(CheckpointEvent::Barrier(barrier))?;
                    None
                }
            },
            Some(record) => {
                // Downstream, the checkpoint is unaligned too (also where this task's
                // alignment timed out).
                let output = chain.broadcast_priority_barrier(barrier.unaligned())?;
                if let Some(old) = self.in_flight.take() {
                    old.discard(input.as_deref_mut())?;
                }
                let (tx, rx) = std::sync::mpsc::channel();
                let no_input = input.is_none();
                let collector = InFlightCollector::start(id, input, &record, output, tx)?;
                if no_input {
                    // A source (or a task whose input ended): nothing more to wait for.
                    collector.complete(None)?;
                } else {
                    self.in_flight = Some(collector);
                }
                Some((
                    InFlightSource::Collector(rx),
                    head(chain),
                    c.target(&barrier),
                ))
            }
        };
        let sync_ms = millis(started.elapsed());
        let subtask = self.subtask_index;
        let responder = c.responder.clone();
        let upload = move || {
            let started = Instant::now();
            let mut out = Vec::with_capacity(named.len());
            let mut bytes = 0;
            for (uid, (name, parallelism, max_parallelism), snap) in named {
                match snap.run(subtask) {
                    Ok(snapshot) => {
                        bytes += snapshot.keyed.as_ref().map_or(0, |k| k.incremental_bytes)
                            + snapshot.operator.as_ref().map_or(0, |o| o.file.size);
                        out.push(OperatorSubtaskSnapshot {
                            uid,
                            name,
                            parallelism,
                            max_parallelism,
                            snapshot,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(checkpoint_id = id, error = %e, "asynchronous part of a checkpoint failed");
                        return responder.decline(
                            id,
                            DeclineReason::UploadFailed {
                                task,
                                operator: name,
                                message: e.to_string(),
                            },
                        );
                    }
                }
            }
            let mut in_flight_bytes = 0;
            if let Some((source, head, target)) = in_flight {
                let Some(data) = source.wait() else { return };
                in_flight_bytes = data.input_bytes() + data.output_bytes();
                let Some((uid, name, parallelism, max_parallelism)) = head else {
                    return responder.decline(
                        id,
                        DeclineReason::InFlightFailed {
                            task,
                            message: "a task without operators".into(),
                        },
                    );
                };
                match in_flight::write_in_flight(&target, &uid, subtask, &data) {
                    Ok(None) => {}
                    Ok(Some(handle)) => {
                        bytes += handle.file.size;
                        match out.iter_mut().find(|o| o.uid == uid) {
                            Some(o) => o.snapshot.in_flight = Some(handle),
                            None => out.push(OperatorSubtaskSnapshot {
                                uid,
                                name,
                                parallelism,
                                max_parallelism,
                                snapshot: rill_state::snapshot::SubtaskSnapshot {
                                    subtask_index: subtask,
                                    keyed: None,
                                    operator: None,
                                    in_flight: Some(handle),
                                },
                            }),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(checkpoint_id = id, error = %e, "writing in-flight data failed");
                        return responder.decline(
                            id,
                            DeclineReason::InFlightFailed {
                                task,
                                message: e.to_string(),
                            },
                        );
                    }
                }
            }
            let stats = TaskCheckpointStats {
                bytes,
                in_flight_bytes,
                sync_ms,
                async_ms: millis(started.elapsed()),
                alignment_ms: millis(alignment),
            };
            responder.acknowledge(id, out, stats);
        };
        let responder = c.responder.clone();
        let thread_task = self.name();
        let spawned = std::thread::Builder::new()
            .name(format!("checkpoint {id}"))
            .spawn(move || {
                // A panicking backend declines the checkpoint; it must not vanish.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(upload)) {
                    responder.decline(
                        id,
                        DeclineReason::TaskFailure {
                            task: thread_task,
                            message: panic_error(panic.as_ref()).to_string(),
                        },
                    );
                }
            });
        match spawned {
            Ok(handle) => {
                self.uploads.retain(|h| !h.is_finished());
                self.uploads.push(handle);
            }
            Err(e) => c.responder.decline(
                id,
                DeclineReason::TaskFailure {
                    task: self.name(),
                    message: format!("cannot start the snapshot thread: {e}"),
                },
            ),
        }
        Ok(())
    }

    /// Ends the recordings of channels whose producer has finished: they send no barrier
    /// (their end of partition is received, behind the data not read yet), so that data
    /// is in flight and the channel is done at once. Checked after every barrier and,
    /// while recording, before every read: the end may arrive after the snapshot.
    fn complete_ended_recordings(
        &mut self,
        chain: &mut OperatorChain,
        input: &mut dyn TaskInput,
        handler: &mut BarrierHandler,
        barriers: &mut BTreeMap<u64, CheckpointBarrier>,
    ) -> Result<()> {
        let ended: Vec<(usize, Vec<u8>)> = match &self.in_flight {
            Some(c) => c
                .recording()
                .into_iter()
                .filter_map(|ch| {
                    input
                        .end_received(ch)
                        .transpose()
                        .map(|r| r.map(|b| (ch, b)))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        for (ch, rest) in ended {
            let Some(c) = self.in_flight.as_mut() else {
                break;
            };
            let id = c.id();
            c.stop_recording(&mut *input, ch)?;
            c.add_input(ch, rest);
            let actions = handler.on_barrier_of(
                ch,
                id,
                crate::barrier_handler::BarrierKind::Unaligned,
                Instant::now(),
            );
            self.barrier_actions(chain, &mut *input, barriers, actions)?;
        }
        Ok(())
    }

    /// Carries out what the barrier handler decided.
    fn barrier_actions(
        &mut self,
        chain: &mut OperatorChain,
        input: &mut dyn TaskInput,
        barriers: &mut BTreeMap<u64, CheckpointBarrier>,
        actions: Vec<BarrierAction>,
    ) -> Result<()> {
        for action in actions {
            match action {
                BarrierAction::Trigger {
                    id,
                    alignment,
                    record,
                } => {
                    if let Some(barrier) = barriers.get(&id).copied() {
                        self.checkpoint(chain, Some(&mut *input), barrier, alignment, record)?;
                    }
                }
                BarrierAction::StopRecording { id, channel } => {
                    if let Some(c) = self.in_flight.as_mut().filter(|c| c.id() == id) {
                        c.stop_recording(&mut *input, channel)?;
                    }
                }
                BarrierAction::InFlightComplete { id } => {
                    if self.in_flight.as_ref().is_some_and(|c| c.id() == id) {
                        let c = self.in_flight.take().expect("checked");
                        c.complete(Some(&mut *input))?;
                    }
                }
                BarrierAction::Abort { id, reason } => {
                    if id > self.last_checkpoint {
                        self.last_checkpoint = id;
                    }
                    if self.in_flight.as_ref().is_some_and(|c| c.id() == id) {
                        let c = self.in_flight.take().expect("checked");
                        c.discard(Some(&mut *input))?;
                    }
                    let task = self.name();
                    let why = match reason {
                        AbortCause::Subsumed { by } => DeclineReason::Subsumed { task, by },
                        AbortCause::Cancelled => DeclineReason::CancelledUpstream { task },
                    };
                    if let Some(c) = &self.env.config.checkpointing {
                        c.responder.decline(id, why);
                    }
                    chain.broadcast_checkpoint_event(CheckpointEvent::Cancel(id))?;
                }
                BarrierAction::Resume(channels) => {
                    for channel in channels {
                        input.resume_consumption(channel)?;
                    }
                }
            }
        }
        let done = self.last_checkpoint;
        barriers.retain(|id, _| *id > done);
        Ok(())
    }

    fn process_mails(&mut self, chain: &mut OperatorChain) -> Result<Control> {
        let mut stop = None;
        while let Some(mail) = self.mailbox.try_take() {
            match mail {
                Mail::Cancel => {
                    self.cancel_requested = true;
                    return Ok(Control::Cancel);
                }
                Mail::StopSource { drain } => {
                    if chain.is_source() && !self.input_ended {
                        stop = Some(Control::Stop { drain });
                    }
                }
                Mail::FlushOutputs => chain.flush()?,
                Mail::TriggerCheckpoint(barrier) => {
                    if chain.is_source() || self.input_ended {
                        let record =
                            (barrier.options.alignment == Alignment::Unaligned).then(Vec::new);
                        self.checkpoint(chain, None, barrier, Duration::ZERO, record)?;
                    } else {
                        // Barriers reach this task through its input.
                        tracing::debug!(
                            checkpoint_id = barrier.id,
                            "trigger of a task with running input ignored"
                        );
                    }
                }
                Mail::CheckpointComplete { id, last } => {
                    chain.notify_checkpoint_complete(id)?;
                    // `last` is only sent once every task acknowledged a checkpoint
                    // taken after its input ended; a stop-with-savepoint's notification
                    // may overtake this task's end of input, so remember it.
                    if last {
                        self.final_checkpoint_done = true;
                    }
                }
                Mail::CheckpointAborted(id) => chain.notify_checkpoint_aborted(id)?,
            }
        }
        Ok(stop.unwrap_or(Control::Continue))
    }

    fn run_source(&mut self, chain: &mut OperatorChain) -> Result<Control> {
        let mut batch: Vec<StreamRecord> = Vec::with_capacity(self.env.config.batch_size);
        let mut last_flush = Instant::now();
        loop {
            if self.mailbox.has_mail() {
                match self.process_mails(chain)? {
                    Control::Cancel => return Ok(Control::Cancel),
                    Control::Stop { drain: true } => {
                        tracing::info!("source stopped with drain");
                        chain.watermark(i64::MAX)?;
                        chain.end_input()?;
                        chain.flush()?;
                        return Ok(Control::Stop { drain: true });
                    }
                    Control::Stop { drain: false } => {
                        tracing::info!("source stopped without drain");
                        chain.broadcast_checkpoint_event(CheckpointEvent::EndOfData {
                            drain: false,
                        })?;
                        chain.broadcast_event(StreamEvent::EndOfInput)?;
                        chain.flush()?;
                        return Ok(Control::Stop { drain: false });
                    }
                    Control::Continue => {}
                }
            }
            if !chain.output_available() {
                // Backpressured: a poll would park this thread inside a write, and mail
                // (checkpoint triggers) would wait behind it.
                chain.flush()?;
                last_flush = Instant::now();
                self.mailbox.wait(BACKPRESSURE_WAIT);
                continue;
            }
            let now = Instant::now();
            match chain.poll_source(&mut batch, now)? {
                SourceStatus::More => {
                    if now.duration_since(last_flush) >= self.env.config.buffer_timeout {
                        chain.flush()?;
                        last_flush = now;
                    }
                }
                SourceStatus::Idle(wait) => {
                    chain.flush()?;
                    last_flush = now;
                    self.mailbox.wait(wait);
                }
                SourceStatus::Finished => {
                    chain.watermark(i64::MAX)?;
                    chain.end_input()?;
                    chain.flush()?;
                    return Ok(Control::Continue);
                }
            }
        }
    }

    fn run_input(&mut self, chain: &mut OperatorChain) -> Result<Control> {
        let Some(mut input) = self.input.take() else {
            return Err(DataflowError::InvalidGraph(
                "non-source task without input".into(),
            ));
        };
        let channels = input.num_channels();
        let mut valve = WatermarkValve::new(channels);
        let mut ended = vec![false; channels];
        let mut remaining = channels;
        let mut records: Vec<StreamRecord> = Vec::with_capacity(self.env.config.batch_size);
        let mut last_flush = Instant::now();
        let mut handler = self
            .env
            .config
            .checkpointing
            .as_ref()
            .map(|c| BarrierHandler::new(c.mode, channels));
        let mut barriers: BTreeMap<u64, CheckpointBarrier> = BTreeMap::new();
        let mut batches = BatchSizer::new(self.env.config.batch_size);
        let checkpointing = self.env.config.checkpointing.clone();
        let timeouts = checkpointing
            .as_ref()
            .filter(|c| c.aligned_timeout.is_some());
        // A producer stopped for a stop-with-savepoint without drain.
        let mut stopped_without_drain = false;
        while remaining > 0 {
            if self.mailbox.has_mail() {
                if let Control::Cancel = self.process_mails(chain)? {
                    return Ok(Control::Cancel);
                }
            }
            let deadline = handler
                .as_ref()
                .and_then(BarrierHandler::alignment_deadline);
            if let (Some(h), Some(d)) = (&mut handler, deadline) {
                let now = Instant::now();
                if d <= now {
                    let actions = h.on_timeout(now);
                    self.barrier_actions(chain, &mut *input, &mut barriers, actions)?;
                    continue;
                }
            }
            if let (Some(h), true) = (&mut handler, self.in_flight.is_some()) {
                self.complete_ended_recordings(chain, &mut *input, h, &mut barriers)?;
            }
            if let Some(c) = timeouts {
                // An aligned barrier stuck behind data in a receive queue past its
                // timeout turns unaligned there and is polled next.
                let now_ms = wall_clock_ms();
                input.convert_late_barriers(&|b| {
                    c.alignment_time_left(b, now_ms) == Some(Duration::ZERO)
                });
            }
            let event = if !chain.output_available() {
                // Backpressured: processing would park this thread inside a write, with
                // mail and the unaligned barriers that overtake the queued input behind
                // it. Take only those until the output has room.
                match input.try_poll_priority()? {
                    Some(e) => e,
                    None => {
                        chain.flush()?;
                        last_flush = Instant::now();
                        self.mailbox.wait(BACKPRESSURE_WAIT);
                        continue;
                    }
                }
            } else {
                // Processing-time timers fire here, also while the input is idle: the
                // blocking poll returns by the earliest one (see `timer`).
                chain.fire_processing_timers()?;
                match input.try_poll(&mut records)? {
                    Some(e) => e,
                    None => {
                        chain.flush()?;
                        last_flush = Instant::now();
                        // Wait no longer than the next processing-time timer, nor past an
                        // alignment that may time out.
                        let alignment = deadline.map(|d| d.saturating_duration_since(last_flush));
                        let wait = match (chain.processing_timer_wait(), alignment) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        input.poll_timeout(&mut records, wait)?
                    }
                }
            };
            let channel = match event {
                InputEvent::Records { channel }
                | InputEvent::Event { channel, .. }
                | InputEvent::Barrier { channel, .. }
                | InputEvent::CancelMarker { channel, .. }
                | InputEvent::EndOfData { channel, .. } => channel,
                InputEvent::MailboxWake => continue,
            };
            if channel >= channels || ended[channel] {
                return Err(DataflowError::ChannelClosed(format!(
                    "input on channel {channel} of {channels} after its end or out of range"
                )));
            }
            match event {
                InputEvent::Records { .. } => {
                    let started = Instant::now();
                    let n = records.len();
                    chain.push_input(channel, &mut records)?;
                    records.clear();
                    if let Some(limit) = batches.after(n, started.elapsed()) {
                        input.set_batch_limit(limit);
                    }
                }
                InputEvent::Event { event, .. } => match event {
                    StreamEvent::Watermark(w) => {
                        if let Some(w) = valve.input_watermark(channel, w) {
                            input.set_input_watermark(w);
                            chain.watermark(w)?;
                        }
                    }
                    StreamEvent::WatermarkStatus(s) => {
                        let out = valve.input_status(channel, s);
                        if let Some(w) = out.watermark {
                            input.set_input_watermark(w);
                            chain.watermark(w)?;
                        }
                        if let Some(s) = out.status {
                            chain.broadcast_event(StreamEvent::WatermarkStatus(s))?;
                        }
                    }
                    StreamEvent::EndOfInput => {
                        ended[channel] = true;
                        remaining -= 1;
                        if let Some(w) = valve.input_ended(channel) {
                            input.set_input_watermark(w);
                            chain.watermark(w)?;
                        }
                        if let Some(h) = &mut handler {
                            let actions = h.on_end_of_partition(channel, Instant::now());
                            self.barrier_actions(chain, &mut *input, &mut barriers, actions)?;
                        }
                    }
                },
                InputEvent::Barrier { barrier, .. } => {
                    let Some(h) = &mut handler else {
                        return Err(DataflowError::Unsupported(format!(
                            "checkpoint barrier {} on input channel {channel} of a job without checkpoints",
                            barrier.id
                        )));
                    };
                    let kind = self.env.config.checkpointing.as_ref().map_or(
                        crate::barrier_handler::BarrierKind::Aligned { timeout: None },
                        |c| c.barrier_kind(&barrier, wall_clock_ms()),
                    );
                    let actions = h.on_barrier_of(channel, barrier.id, kind, Instant::now());
                    if barrier.id > self.last_checkpoint {
                        barriers.insert(barrier.id, barrier);
                    }
                    self.barrier_actions(chain, &mut *input, &mut barriers, actions)?;
                    self.complete_ended_recordings(chain, &mut *input, h, &mut barriers)?;
                }
                InputEvent::CancelMarker { id, .. } => {
                    let Some(h) = &mut handler else {
                        return Err(DataflowError::Unsupported(format!(
                            "cancel marker of checkpoint {id} on input channel {channel} of a job without checkpoints"
                        )));
                    };
                    let actions = h.on_cancel(id);
                    self.barrier_actions(chain, &mut *input, &mut barriers, actions)?;
                }
                InputEvent::EndOfData { drain, .. } => {
                    stopped_without_drain |= !drain;
                }
                InputEvent::MailboxWake => {}
            }
            // Watermarks may emit records too (timers, windows): check after every
            // element, not only after record batches.
            let now = Instant::now();
            if now.duration_since(last_flush) >= self.env.config.buffer_timeout {
                chain.flush()?;
                last_flush = now;
            }
        }
        if stopped_without_drain {
            // Stop-with-savepoint without drain: pass the stop on, flush nothing.
            chain.broadcast_checkpoint_event(CheckpointEvent::EndOfData { drain: false })?;
            chain.broadcast_event(StreamEvent::EndOfInput)?;
        } else {
            chain.end_input()?;
        }
        chain.flush()?;
        Ok(Control::Continue)
    }
}

/// How long a backpressured task waits for mail before it looks at its output again.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(1);

/// Where a task's in-flight data for a checkpoint comes from.
enum InFlightSource {
    /// Unaligned (from the start or since the alignment timed out here): the collector
    /// delivers input and output data once every barrier arrived.
    Collector(std::sync::mpsc::Receiver<InFlightData>),
    /// Aligned with a timeout: the barriers still queued in the outputs at `deadline`
    /// turn unaligned, and the data they overtake is the output part.
    Output {
        queued: Vec<(u32, QueuedBarrier)>,
        deadline: Instant,
    },
}

impl InFlightSource {
    /// Waits for the data; `None` if the checkpoint was aborted here (and declined).
    fn wait(self) -> Option<InFlightData> {
        match self {
            InFlightSource::Collector(rx) => rx.recv().ok(),
            InFlightSource::Output { queued, deadline } => {
                let mut output = Vec::new();
                for (edge, q) in queued {
                    for (sub, bytes) in (0u32..).zip(q.settle(deadline)) {
                        if !bytes.is_empty() {
                            output.push((edge, sub, bytes));
                        }
                    }
                }
                Some(InFlightData {
                    input: Vec::new(),
                    output,
                })
            }
        }
    }
}
