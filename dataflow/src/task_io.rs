//! The task's view of the data plane: [`TaskInput`] and [`TaskOutput`].
//!
//! A [`StreamTask`](crate::stream_task::StreamTask) does not know how its channels are
//! implemented; the runtime that deploys the task provides these two traits. Both move
//! records in batches (`Vec<StreamRecord>`), so dynamic dispatch happens once per batch.
//!
//! **Input contract.** Channels are numbered `0..num_channels()` as
//! [`JobGraph::wiring`](crate::job_graph::JobGraph::wiring) defines. Each channel delivers records and events in order and ends with
//! `EndOfInput`. `poll` blocks until something arrives *or* the waker returned by
//! [`TaskInput::waker`] is called, in which case it returns
//! [`InputEvent::MailboxWake`] (spurious wake-ups are allowed).
//!
//! **Output contract.** One `TaskOutput` per output edge of the vertex, in
//! [`JobGraph::output_edges`](crate::job_graph::JobGraph::output_edges) order. It owns
//! the edge's channel selection (see
//! [`network_io::channel_selector`](crate::network_io::channel_selector));
//! for hash-partitioned edges the task supplies each record's target channel (the
//! downstream subtask owning the record's key group, computed by the operator chain). Events are
//! broadcast to every channel after everything emitted before them. Implementations may
//! buffer; `flush` makes everything emitted so far visible downstream, and the task
//! calls it before blocking on input, when a source idles, every buffer timeout, and at
//! the end.
//!
//! The implementation is [`network_io`](crate::network_io): rill-network's
//! `RecordWriter`s and `InputGate`, records encoded with [`codec`](crate::codec), over
//! local channels between tasks of one process and QUIC between processes. It is the
//! only one, so that barriers, alignment and recovery exist once (DESIGN §3).

use crate::checkpoint::{CheckpointBarrier, CheckpointEvent};
use crate::element::{StreamEvent, StreamRecord};
use crate::error::Result;
use crate::mailbox::InputWaker;
use rill_network::QueuedBarrier;

/// What one input poll produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Records from `channel` were appended to the caller's buffer.
    Records {
        /// The input channel.
        channel: usize,
    },
    /// An event arrived on `channel`.
    Event {
        /// The input channel.
        channel: usize,
        /// The event.
        event: StreamEvent,
    },
    /// Checkpoint barrier on `channel`. An aligned barrier blocks its channel: nothing
    /// more arrives on it until [`TaskInput::resume_consumption`].
    Barrier {
        /// The input channel.
        channel: usize,
        /// The barrier.
        barrier: CheckpointBarrier,
    },
    /// Checkpoint `id` was aborted upstream of `channel`.
    CancelMarker {
        /// The input channel.
        channel: usize,
        /// Checkpoint id.
        id: u64,
    },
    /// The producer of `channel` stopped for a stop-with-savepoint (end of input
    /// follows); without `drain` this task must not flush its operators.
    EndOfData {
        /// The input channel.
        channel: usize,
        /// Whether the stop drains the pipeline.
        drain: bool,
    },
    /// The waker was called: mail may be pending.
    MailboxWake,
}

/// A task's merged input channels.
pub trait TaskInput: Send {
    /// Number of input channels.
    fn num_channels(&self) -> usize;

    /// A function that makes a blocked [`poll`](Self::poll) return `MailboxWake`; called
    /// from other threads.
    fn waker(&self) -> InputWaker;

    /// Returns the next input without blocking (`None` if nothing is available).
    fn try_poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<Option<InputEvent>>;

    /// Returns an unaligned checkpoint barrier that overtook the queued input, if one is
    /// pending, without reading anything else; for a backpressured task, which reads no
    /// records until its output has room but must not hold such a barrier back.
    fn try_poll_priority(&mut self) -> Result<Option<InputEvent>>;

    /// Turns the aligned checkpoint barriers still queued behind data in this input's
    /// receive queues for which `late` holds (their aligned-checkpoint timeout passed)
    /// into unaligned barriers that overtake that data; they are polled next. Returns how
    /// many were converted.
    fn convert_late_barriers(&mut self, late: &dyn Fn(&CheckpointBarrier) -> bool) -> usize;

    /// Returns the next input, blocking until there is some or the waker is called.
    fn poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<InputEvent>;

    /// Like [`poll`](Self::poll), but returns `MailboxWake` once `timeout` passed
    /// without input (`None`: no limit). The task waits this way until its next
    /// processing-time timer.
    fn poll_timeout(
        &mut self,
        records: &mut Vec<StreamRecord>,
        timeout: Option<std::time::Duration>,
    ) -> Result<InputEvent>;

    /// Lets `channel` deliver again after an aligned barrier blocked it.
    fn resume_consumption(&mut self, channel: usize) -> Result<()>;

    /// Limits how many records one poll returns, within `1..=` the limit the input was
    /// built with (the task shrinks batches behind slow operators, so that barriers and
    /// mail wait at most about one short batch).
    fn set_batch_limit(&mut self, _records: usize) {}

    /// The task's input watermark (the minimum over its active channels) advanced to
    /// `watermark`: reported as the task's `currentInputWatermark`.
    fn set_input_watermark(&mut self, _watermark: i64) {}

    /// What `channel` delivered that the task has not been handed yet, as the channel's
    /// raw byte stream (a record begun in an earlier buffer, records read ahead): the
    /// start of the channel's in-flight data when an unaligned checkpoint is taken now.
    fn unconsumed(&self, channel: usize) -> Result<Vec<u8>>;

    /// If `channel`'s producer has finished and its end has arrived but not been read
    /// (so no barrier can come on it any more): the raw bytes still queued before the
    /// end. An unaligned checkpoint takes them as the channel's in-flight data at once
    /// instead of waiting until the task has read up to the end.
    fn end_received(&self, channel: usize) -> Result<Option<Vec<u8>>>;

    /// Starts recording the raw bytes `channel` delivers (until its barrier arrives).
    fn start_recording(&mut self, channel: usize) -> Result<()>;

    /// Stops recording `channel`; returns the bytes recorded.
    fn stop_recording(&mut self, channel: usize) -> Result<Vec<u8>>;

    /// Queues `channel`'s in-flight data restored from an unaligned checkpoint: it is
    /// read before anything new from the channel. Call it before the first poll.
    fn restore_in_flight(&mut self, channel: usize, bytes: Vec<u8>) -> Result<()>;
}

/// One output edge of a task.
pub trait TaskOutput: Send {
    /// Emits and drains `records`. `channels` holds each record's target channel for
    /// hash-partitioned edges (the downstream subtask that owns the record's key, see
    /// [`key_group::operator_index_for_key`](crate::key_group::operator_index_for_key))
    /// and is empty otherwise.
    fn emit(&mut self, records: &mut Vec<StreamRecord>, channels: &[u32]) -> Result<()>;

    /// Broadcasts `event` to every channel, after all records emitted before it.
    fn emit_event(&mut self, event: StreamEvent) -> Result<()>;

    /// Broadcasts a checkpoint barrier or cancel marker to every channel, after
    /// everything emitted before it (it overtakes nothing and needs no credit). A no-op
    /// once the output has ended.
    fn emit_checkpoint_event(&mut self, event: CheckpointEvent) -> Result<()>;

    /// Sends an unaligned checkpoint barrier to every channel ahead of the data still
    /// queued there (it overtakes it; the data is still sent, after the barrier) and
    /// returns, per channel, the bytes overtaken. Also after the output ended: ahead of
    /// an end of partition its consumer has not read yet (nothing where it has).
    fn emit_priority_barrier(&mut self, barrier: CheckpointBarrier) -> Result<Vec<Vec<u8>>>;

    /// Broadcasts the aligned barrier of a checkpoint with an aligned-checkpoint timeout
    /// like [`Self::emit_checkpoint_event`], and returns the handle that turns it
    /// unaligned where it is still queued at the deadline
    /// ([`QueuedBarrier::settle`]). Also after the output ended: ahead of an end of
    /// partition its consumer has not read yet (nothing where it has).
    fn emit_timeoutable_barrier(&mut self, barrier: CheckpointBarrier) -> Result<QueuedBarrier>;

    /// Writes `channel`'s in-flight data restored from an unaligned checkpoint (the raw
    /// byte stream the barrier overtook) before anything emitted afterwards.
    fn restore_in_flight(&mut self, channel: u32, bytes: &[u8]) -> Result<()>;

    /// Makes everything emitted so far visible downstream.
    fn flush(&mut self) -> Result<()>;

    /// Whether emitting can go on without waiting for the consumers (backpressure); a
    /// hint the task checks before it produces more.
    fn is_available(&self) -> bool;
}
