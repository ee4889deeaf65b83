//! In-memory [`TaskInput`] / [`TaskOutput`]: crossbeam channels between task threads.
//!
//! Each downstream subtask owns **one bounded queue** that all its input channels feed;
//! every message names the input channel it belongs to, which keeps per-channel order
//! (one producer thread per channel) while the consumer blocks on a single queue. The
//! bound (in batches) is the backpressure: a producer whose consumer is slow blocks in
//! `send`. A consumer that ends drops its queue, so blocked producers get an error
//! instead of hanging.
//!
//! [`LocalOutput`] buffers records per target until `batch_size` and sends whole
//! `Vec`s; the receiver swaps them into the task's buffer, so records are moved, never
//! serialized or copied. The waker pushes a `Wake` message into the consumer's own queue
//! with `try_send`: if the queue is full, the consumer is not blocked and will see its
//! mail after the current message anyway.

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::element::{StreamEvent, StreamRecord};
use crate::error::{DataflowError, Result};
use crate::mailbox::InputWaker;
use crate::partitioning::{ChannelSelector, Selection};
use crate::task_io::{InputEvent, TaskInput, TaskOutput};

/// A message on a subtask's input queue.
#[derive(Debug)]
pub enum LocalMessage {
    /// A batch of records of one input channel.
    Records {
        /// The input channel.
        channel: u32,
        /// The records.
        records: Vec<StreamRecord>,
    },
    /// An event of one input channel.
    Event {
        /// The input channel.
        channel: u32,
        /// The event.
        event: StreamEvent,
    },
    /// Mail is pending for the consumer.
    Wake,
}

/// Creates one subtask's input queue holding up to `capacity` messages.
pub fn local_queue(capacity: usize) -> (Sender<LocalMessage>, Receiver<LocalMessage>) {
    crossbeam_channel::bounded(capacity.max(1))
}

/// The consuming end of a subtask's input queue.
pub struct LocalInput {
    rx: Receiver<LocalMessage>,
    wake: Sender<LocalMessage>,
    num_channels: usize,
}

impl LocalInput {
    /// An input with `num_channels` channels reading `rx`; `tx` is the queue's sender
    /// (used by the waker).
    pub fn new(rx: Receiver<LocalMessage>, tx: Sender<LocalMessage>, num_channels: usize) -> Self {
        Self {
            rx,
            wake: tx,
            num_channels,
        }
    }

    fn convert(msg: LocalMessage, records: &mut Vec<StreamRecord>) -> InputEvent {
        match msg {
            LocalMessage::Records {
                channel,
                records: mut batch,
            } => {
                if records.is_empty() {
                    std::mem::swap(records, &mut batch);
                } else {
                    records.append(&mut batch);
                }
                InputEvent::Records {
                    channel: channel as usize,
                }
            }
            LocalMessage::Event { channel, event } => InputEvent::Event {
                channel: channel as usize,
                event,
            },
            LocalMessage::Wake => InputEvent::MailboxWake,
        }
    }
}

impl TaskInput for LocalInput {
    fn num_channels(&self) -> usize {
        self.num_channels
    }

    fn waker(&self) -> InputWaker {
        let tx = self.wake.clone();
        std::sync::Arc::new(move || {
            // Full: the consumer is busy and checks its mailbox soon. Disconnected: the
            // consumer is gone. Neither needs a wake-up.
            let _ = tx.try_send(LocalMessage::Wake);
        })
    }

    fn try_poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<Option<InputEvent>> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(Self::convert(m, records))),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                Err(DataflowError::ChannelClosed("local input queue".into()))
            }
        }
    }

    fn poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<InputEvent> {
        self.rx
            .recv()
            .map(|m| Self::convert(m, records))
            .map_err(|_| DataflowError::ChannelClosed("local input queue".into()))
    }
}

/// One downstream subtask as seen by a producer.
pub struct LocalTarget {
    tx: Sender<LocalMessage>,
    channel: u32,
    buf: Vec<StreamRecord>,
}

impl LocalTarget {
    /// Sends to queue `tx`, tagging messages with the consumer's input channel `channel`.
    pub fn new(tx: Sender<LocalMessage>, channel: u32) -> Self {
        Self {
            tx,
            channel,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, msg: LocalMessage) -> Result<()> {
        self.tx.send(msg).map_err(|_| {
            DataflowError::ChannelClosed(format!("consumer of channel {} is gone", self.channel))
        })
    }

    fn flush(&mut self, batch_size: usize) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let records = std::mem::replace(&mut self.buf, Vec::with_capacity(batch_size));
        let channel = self.channel;
        self.send(LocalMessage::Records { channel, records })
    }
}

/// A [`TaskOutput`] over in-memory queues, one target per output channel.
pub struct LocalOutput {
    targets: Vec<LocalTarget>,
    selector: ChannelSelector,
    batch_size: usize,
}

impl LocalOutput {
    /// An output whose channel `k` is `targets[k]`, choosing channels with `selector`.
    pub fn new(targets: Vec<LocalTarget>, selector: ChannelSelector, batch_size: usize) -> Self {
        Self {
            targets,
            selector,
            batch_size: batch_size.max(1),
        }
    }

    fn push(&mut self, target: usize, record: StreamRecord) -> Result<()> {
        let t = &mut self.targets[target];
        if t.buf.capacity() == 0 {
            t.buf.reserve(self.batch_size);
        }
        t.buf.push(record);
        if t.buf.len() >= self.batch_size {
            t.flush(self.batch_size)?;
        }
        Ok(())
    }
}

impl TaskOutput for LocalOutput {
    fn emit(&mut self, records: &mut Vec<StreamRecord>, channels: &[u32]) -> Result<()> {
        let n = self.targets.len();
        if n == 0 {
            records.clear();
            return Ok(());
        }
        for (i, r) in records.drain(..).enumerate() {
            let channel = channels.get(i).copied().unwrap_or(0);
            match self.selector.select(channel) {
                // The selector was built for `n` channels, so `c < n`; `min` only guards
                // against a mismatched selector.
                Selection::One(c) => {
                    let c = (c as usize).min(n - 1);
                    // Re-borrow per record: `push` may flush.
                    let t = &mut self.targets[c];
                    if t.buf.capacity() == 0 {
                        t.buf.reserve(self.batch_size);
                    }
                    t.buf.push(r);
                    if t.buf.len() >= self.batch_size {
                        t.flush(self.batch_size)?;
                    }
                }
                Selection::All => {
                    for k in 1..n {
                        self.push(k, r.clone())?;
                    }
                    self.push(0, r)?;
                }
            }
        }
        Ok(())
    }

    fn emit_event(&mut self, event: StreamEvent) -> Result<()> {
        for t in &mut self.targets {
            t.flush(self.batch_size)?;
            let channel = t.channel;
            t.send(LocalMessage::Event { channel, event })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for t in &mut self.targets {
            t.flush(self.batch_size)?;
        }
        Ok(())
    }
}
