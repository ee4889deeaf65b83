//! Consumer side: an [`InputGate`] reads one subpartition from each of its upstream
//! producers through one input channel each, and a [`RecordReader`] turns the gate's
//! buffers back into records.
//!
//! # Channels
//!
//! * **Local** (producer in the same process): the channel holds the producer's
//!   [`SubpartitionView`] and takes the very [`Bytes`] the writer queued — the segment is
//!   shared, no byte is copied, and it returns to the *producer's* pool once the reader
//!   drops it. Local channels need no credit: the producer's pool bounds them.
//! * **Remote**: a QUIC driver task ([`quic`](crate::quic)) fills the channel's inbox with
//!   buffers it received into the channel's exclusive buffers or the gate's floating
//!   buffers (see [`credit`](crate::credit)).
//!
//! # Availability queue
//!
//! Channels announce "I became readable" by pushing their index onto the gate's queue (at
//! most once: a flag per channel). The reader pops an index, takes one element, and
//! re-queues the channel at the back if it has more, so channels are served round-robin.
//! Blocking readers park on a condition variable, async ones on a [`Notify`].
//!
//! # End, blocking events, errors
//!
//! `EndOfPartition` is delivered as an event; once every channel delivered it the gate is
//! finished and `next` returns `None`. After a blocking event (aligned barrier) the channel
//! delivers nothing until [`InputGate::resume_consumption`]. A channel failure (protocol
//! violation, lost connection, producer error) is returned by the next read. Dropping the
//! gate cancels its channels: local views are released, remote drivers send
//! `CancelPartitionRequest` and return their buffers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::buffer_pool::LocalBufferPool;
use crate::deserializer::RecordDeserializer;
use crate::error::NetworkError;
use crate::event::Event;
use crate::metrics::{InPoolUsage, TaskIoMetrics};
use crate::partition::{Payload, ResultPartition, SubpartitionView};

/// One element read from a gate.
#[derive(Debug, Clone)]
pub enum GateItem {
    /// A buffer of length-prefixed records from `channel`.
    Buffer {
        /// Channel index within the gate.
        channel: u32,
        /// The buffer (shared with the producer's pool for local channels).
        data: Bytes,
    },
    /// An event from `channel`.
    Event {
        /// Channel index within the gate.
        channel: u32,
        /// The event.
        event: Event,
    },
}

#[derive(Default)]
struct GateState {
    available: VecDeque<u32>,
    queued: Vec<bool>,
    error: Option<NetworkError>,
}

/// The part of a gate that channels and drivers reach from other threads.
pub(crate) struct GateShared {
    state: Mutex<GateState>,
    cond: Condvar,
    notify: Notify,
}

impl GateShared {
    fn new() -> Arc<Self> {
        Arc::new(GateShared {
            state: Mutex::new(GateState::default()),
            cond: Condvar::new(),
            notify: Notify::new(),
        })
    }

    pub(crate) fn notify_channel(&self, index: u32) {
        {
            let mut st = self.state.lock();
            let Some(q) = st.queued.get_mut(index as usize) else {
                return;
            };
            if *q {
                return;
            }
            *q = true;
            st.available.push_back(index);
        }
        self.cond.notify_one();
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct InboxState {
    items: VecDeque<Payload>,
    error: Option<NetworkError>,
}

/// Control requests from the reader to a remote channel's driver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlRequests {
    pub(crate) resume: bool,
    pub(crate) cancel: bool,
}

/// The receiving end of a remote channel, shared between gate and driver task.
pub(crate) struct RemoteInbox {
    gate: Arc<GateShared>,
    index: u32,
    state: Mutex<InboxState>,
    control: Mutex<ControlRequests>,
    /// Wakes the driver for control requests.
    pub(crate) control_notify: Notify,
    /// The channel's exclusive buffers.
    pub(crate) exclusive_pool: Arc<LocalBufferPool>,
    /// The gate's floating buffers.
    pub(crate) floating_pool: Arc<LocalBufferPool>,
}

impl RemoteInbox {
    /// Hands a received element to the reader.
    pub(crate) fn push(&self, payload: Payload) {
        let was_empty = {
            let mut st = self.state.lock();
            st.items.push_back(payload);
            st.items.len() == 1
        };
        if was_empty {
            self.gate.notify_channel(self.index);
        }
    }

    /// Fails the channel; the reader sees the error at its next read.
    pub(crate) fn fail(&self, error: NetworkError) {
        self.state.lock().error.get_or_insert(error);
        self.gate.notify_channel(self.index);
    }

    pub(crate) fn take_control(&self) -> ControlRequests {
        std::mem::take(&mut *self.control.lock())
    }

    fn request(&self, f: impl FnOnce(&mut ControlRequests)) {
        f(&mut self.control.lock());
        self.control_notify.notify_one();
    }

    fn poll(&self) -> Result<Option<(Payload, bool)>, NetworkError> {
        let mut st = self.state.lock();
        match st.items.pop_front() {
            Some(p) => Ok(Some((p, !st.items.is_empty()))),
            None => match &st.error {
                Some(e) => Err(e.clone()),
                None => Ok(None),
            },
        }
    }
}

enum Channel {
    Local(SubpartitionView),
    Remote(Arc<RemoteInbox>),
}

/// Builds an [`InputGate`]; created by the network environment, which knows the pools and
/// the QUIC driver.
pub struct InputGateBuilder {
    shared: Arc<GateShared>,
    channels: Vec<Channel>,
    floating_pool: Arc<LocalBufferPool>,
    metrics: Arc<TaskIoMetrics>,
    max_record_size: usize,
}

impl InputGateBuilder {
    pub(crate) fn new(
        floating_pool: Arc<LocalBufferPool>,
        metrics: Arc<TaskIoMetrics>,
        max_record_size: usize,
    ) -> Self {
        InputGateBuilder {
            shared: GateShared::new(),
            channels: Vec::new(),
            floating_pool,
            metrics,
            max_record_size,
        }
    }

    fn next_index(&self) -> u32 {
        self.channels.len() as u32
    }

    fn register(&mut self, channel: Channel) -> u32 {
        let index = self.next_index();
        self.shared.state.lock().queued.push(false);
        self.channels.push(channel);
        index
    }

    /// Adds a local channel reading `subpartition` of an in-process partition; returns
    /// its channel index.
    pub fn add_local(
        &mut self,
        partition: &Arc<ResultPartition>,
        subpartition: u32,
    ) -> Result<u32, NetworkError> {
        let index = self.next_index();
        self.shared.state.lock().queued.push(false);
        let shared = self.shared.clone();
        let view = match partition
            .create_view(subpartition, Arc::new(move || shared.notify_channel(index)))
        {
            Ok(v) => v,
            Err(e) => {
                self.shared.state.lock().queued.pop();
                return Err(e);
            }
        };
        self.channels.push(Channel::Local(view));
        Ok(index)
    }

    /// Adds a remote channel's inbox; the caller starts the driver that fills it.
    pub(crate) fn add_remote(&mut self, exclusive_pool: Arc<LocalBufferPool>) -> Arc<RemoteInbox> {
        let inbox = Arc::new(RemoteInbox {
            gate: self.shared.clone(),
            index: self.next_index(),
            state: Mutex::new(InboxState::default()),
            control: Mutex::new(ControlRequests::default()),
            control_notify: Notify::new(),
            exclusive_pool,
            floating_pool: self.floating_pool.clone(),
        });
        self.register(Channel::Remote(inbox.clone()));
        inbox
    }

    /// Number of channels added so far.
    pub fn num_channels(&self) -> u32 {
        self.channels.len() as u32
    }

    /// Finishes the gate.
    pub fn build(self) -> InputGate {
        let n = self.channels.len();
        InputGate {
            shared: self.shared,
            channels: self.channels,
            finished: vec![false; n],
            num_finished: 0,
            floating_pool: self.floating_pool,
            metrics: self.metrics,
            max_record_size: self.max_record_size,
        }
    }
}

/// Reads the buffers and events of all channels of one consumer input.
pub struct InputGate {
    shared: Arc<GateShared>,
    channels: Vec<Channel>,
    finished: Vec<bool>,
    num_finished: usize,
    floating_pool: Arc<LocalBufferPool>,
    metrics: Arc<TaskIoMetrics>,
    max_record_size: usize,
}

impl std::fmt::Debug for InputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputGate")
            .field("channels", &self.channels.len())
            .field("finished", &self.num_finished)
            .finish()
    }
}

impl InputGate {
    /// Number of channels.
    pub fn num_channels(&self) -> u32 {
        self.channels.len() as u32
    }

    /// Whether every channel delivered end-of-partition.
    pub fn is_finished(&self) -> bool {
        self.num_finished == self.channels.len()
    }

    /// The task's I/O metrics this gate reports to.
    pub fn metrics(&self) -> &Arc<TaskIoMetrics> {
        &self.metrics
    }

    /// Largest record the gate's readers accept.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// Buffer usage (`inPoolUsage`, exclusive, floating).
    pub fn pool_usage(&self) -> InPoolUsage {
        let (mut used, mut size) = (0usize, 0usize);
        for c in &self.channels {
            if let Channel::Remote(inbox) = c {
                used += inbox.exclusive_pool.outstanding();
                size += inbox.exclusive_pool.size();
            }
        }
        let f_used = self.floating_pool.outstanding();
        let f_size = self.floating_pool.size();
        let ratio = |u: usize, s: usize| if s == 0 { 0.0 } else { u as f64 / s as f64 };
        InPoolUsage {
            exclusive: ratio(used, size),
            floating: ratio(f_used, f_size),
            total: ratio(used + f_used, size + f_size),
        }
    }

    /// Returns the next element if one is ready now; `Ok(None)` also when finished (see
    /// [`Self::is_finished`]).
    pub fn try_next(&mut self) -> Result<Option<GateItem>, NetworkError> {
        loop {
            let ch = {
                let mut st = self.shared.state.lock();
                if let Some(e) = &st.error {
                    return Err(e.clone());
                }
                match st.available.pop_front() {
                    Some(ch) => {
                        st.queued[ch as usize] = false;
                        ch
                    }
                    None => return Ok(None),
                }
            };
            let polled = match &self.channels[ch as usize] {
                Channel::Local(view) => {
                    view.poll_next(true)?.map(|p| (p.payload, p.more_available))
                }
                Channel::Remote(inbox) => inbox.poll()?,
            };
            let Some((payload, more)) = polled else {
                continue; // spurious notification
            };
            if more {
                self.shared.notify_channel(ch);
            }
            return Ok(Some(match payload {
                Payload::Data(data) => GateItem::Buffer { channel: ch, data },
                Payload::Event(event) => {
                    if event == Event::EndOfPartition && !self.finished[ch as usize] {
                        self.finished[ch as usize] = true;
                        self.num_finished += 1;
                    }
                    GateItem::Event { channel: ch, event }
                }
            }));
        }
    }

    /// Returns the next element, parking the thread until one arrives (counted as idle
    /// time); `None` once the gate is finished.
    pub fn next_blocking(&mut self) -> Result<Option<GateItem>, NetworkError> {
        self.next_timeout(None)
    }

    /// Like [`Self::next_blocking`] but gives up after `timeout` with `Ok(None)` while not
    /// finished.
    pub fn next_timeout(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<GateItem>, NetworkError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            if self.is_finished() {
                return Ok(None);
            }
            let start = Instant::now();
            {
                let mut st = self.shared.state.lock();
                if st.available.is_empty() && st.error.is_none() {
                    match deadline {
                        Some(d) => {
                            if self.shared.cond.wait_until(&mut st, d).timed_out() {
                                drop(st);
                                self.metrics.add_idle(start.elapsed());
                                return Ok(None);
                            }
                        }
                        None => self.shared.cond.wait(&mut st),
                    }
                }
            }
            self.metrics.add_idle(start.elapsed());
        }
    }

    /// Returns the next element, waiting asynchronously; `None` once finished.
    pub async fn next_async(&mut self) -> Result<Option<GateItem>, NetworkError> {
        let shared = self.shared.clone();
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            if self.is_finished() {
                return Ok(None);
            }
            let start = Instant::now();
            notified.await;
            self.metrics.add_idle(start.elapsed());
        }
    }

    /// Lets `channel` continue after it delivered a blocking event (aligned barrier).
    pub fn resume_consumption(&mut self, channel: u32) -> Result<(), NetworkError> {
        match self.channels.get(channel as usize) {
            Some(Channel::Local(view)) => view.resume_consumption(),
            Some(Channel::Remote(inbox)) => inbox.request(|c| c.resume = true),
            None => {
                return Err(NetworkError::SubpartitionOutOfRange {
                    index: channel,
                    count: self.num_channels(),
                })
            }
        }
        Ok(())
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        for c in &self.channels {
            if let Channel::Remote(inbox) = c {
                inbox.request(|c| c.cancel = true);
                inbox.state.lock().items.clear();
            }
        }
        // Local views release their subpartitions when dropped with `channels`.
    }
}

/// One record or event read by a [`RecordReader`].
#[derive(Debug)]
pub enum ReaderItem<'a> {
    /// A record's bytes (borrowed from the buffer, or from a reassembly buffer if it
    /// spanned buffers).
    Record {
        /// Channel index.
        channel: u32,
        /// The record.
        record: &'a [u8],
    },
    /// An event.
    Event {
        /// Channel index.
        channel: u32,
        /// The event.
        event: Event,
    },
}

/// Reads records from a gate, one deserializer per channel.
pub struct RecordReader {
    gate: InputGate,
    deserializers: Vec<RecordDeserializer>,
    current: Option<u32>,
    pending_records: u64,
    pending_bytes: u64,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("gate", &self.gate)
            .finish()
    }
}

impl RecordReader {
    /// Wraps a gate.
    pub fn new(gate: InputGate) -> Self {
        let max = gate.max_record_size();
        RecordReader {
            deserializers: (0..gate.num_channels())
                .map(|_| RecordDeserializer::new(max))
                .collect(),
            gate,
            current: None,
            pending_records: 0,
            pending_bytes: 0,
        }
    }

    /// The gate read from.
    pub fn gate_mut(&mut self) -> &mut InputGate {
        &mut self.gate
    }

    fn publish(&mut self) {
        if self.pending_records > 0 || self.pending_bytes > 0 {
            self.gate
                .metrics
                .add_in(self.pending_records, self.pending_bytes);
            self.pending_records = 0;
            self.pending_bytes = 0;
        }
    }

    /// Returns the next record or event, blocking; `None` once every channel ended.
    pub fn next_item(&mut self) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        self.next_inner(None)
    }

    /// Like [`Self::next_item`], but returns `Ok(None)` after `timeout` without input (check
    /// [`InputGate::is_finished`] to tell the two apart).
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        self.next_inner(Some(timeout))
    }

    fn next_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        loop {
            if let Some(ch) = self.current {
                if self.deserializers[ch as usize].next_record()? {
                    self.pending_records += 1;
                    return Ok(Some(ReaderItem::Record {
                        channel: ch,
                        record: self.deserializers[ch as usize].record(),
                    }));
                }
                self.current = None;
            }
            self.publish();
            match self.gate.next_timeout(timeout)? {
                None => return Ok(None),
                Some(GateItem::Buffer { channel, data }) => {
                    self.pending_bytes += data.len() as u64;
                    self.deserializers[channel as usize].push_buffer(data);
                    self.current = Some(channel);
                }
                Some(GateItem::Event { channel, event }) => {
                    if event == Event::EndOfPartition {
                        self.deserializers[channel as usize].finish()?;
                    }
                    return Ok(Some(ReaderItem::Event { channel, event }));
                }
            }
        }
    }
}
