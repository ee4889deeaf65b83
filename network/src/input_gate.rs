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
    /// A priority event (unaligned checkpoint barrier) from `channel`, possibly taken out
    /// of turn ([`InputGate::poll_priority`]), with the bytes of the data it overtook in
    /// the channel's receive queue (empty for local channels, where the producer's queue
    /// is read directly and the producer keeps what its barrier overtook). Those buffers
    /// are still delivered, after it.
    PriorityEvent {
        /// Channel index within the gate.
        channel: u32,
        /// The event.
        event: Event,
        /// The overtaken buffers' bytes, oldest first.
        overtaken: Vec<u8>,
    },
}

#[derive(Default)]
struct GateState {
    available: VecDeque<u32>,
    queued: Vec<bool>,
    error: Option<NetworkError>,
    /// A [`GateWaker`] was called and no blocking read has returned for it yet.
    woken: bool,
    /// Channels that queued a priority event, oldest first.
    priority: VecDeque<u32>,
}

/// The part of a gate that channels and drivers reach from other threads.
pub(crate) struct GateShared {
    state: Mutex<GateState>,
    cond: Condvar,
    notify: Notify,
    /// `!state.priority.is_empty()`, read without the lock once per batch.
    has_priority: std::sync::atomic::AtomicBool,
    /// Aligned barriers received into remote channels' queues and not read yet (they
    /// may turn unaligned there: [`InputGate::convert_queued_barriers`]).
    queued_barriers: std::sync::atomic::AtomicU32,
}

impl GateShared {
    fn new() -> Arc<Self> {
        Arc::new(GateShared {
            state: Mutex::new(GateState::default()),
            cond: Condvar::new(),
            notify: Notify::new(),
            has_priority: std::sync::atomic::AtomicBool::new(false),
            queued_barriers: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Channel `index` queued a priority event: the reader takes it out of turn.
    pub(crate) fn notify_priority(&self, index: u32) {
        {
            let mut st = self.state.lock();
            st.priority.push_back(index);
            self.has_priority
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.notify_channel(index);
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

/// Interrupts a reader blocked on its gate (the task's mailbox uses it: a mail for a
/// task parked on empty input must be seen at once). Cheap to clone, callable from any
/// thread; wake-ups before a read coalesce into one.
#[derive(Clone)]
pub struct GateWaker {
    shared: Arc<GateShared>,
}

impl std::fmt::Debug for GateWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateWaker").finish_non_exhaustive()
    }
}

impl GateWaker {
    /// Makes the current or next blocking read of the gate return `Ok(None)` (see
    /// [`InputGate::next_timeout`]), even while no channel has anything.
    pub fn wake(&self) {
        self.shared.state.lock().woken = true;
        self.shared.cond.notify_all();
        self.shared.notify.notify_one();
    }
}

/// A remote channel's next element, whether more follows, and what a priority event
/// overtook.
type Polled = (Payload, bool, Option<Vec<u8>>);

#[derive(Default)]
struct InboxState {
    items: VecDeque<Payload>,
    /// Per priority event in `items`, in the same order: the bytes it overtook.
    overtaken: VecDeque<Vec<u8>>,
    error: Option<NetworkError>,
}

impl InboxState {
    /// Pops the front; a priority event comes with what it overtook.
    fn pop(&mut self) -> Option<(Payload, Option<Vec<u8>>)> {
        let p = self.items.pop_front()?;
        let overtaken = match &p {
            Payload::Event(e) if e.is_priority() => {
                Some(self.overtaken.pop_front().unwrap_or_default())
            }
            _ => None,
        };
        Some((p, overtaken))
    }
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
    /// Hands a received element to the reader. A priority event (unaligned barrier)
    /// overtakes the data buffers queued at the end (never an event), whose bytes it
    /// carries along for the checkpoint, and is taken by the reader out of turn.
    pub(crate) fn push(&self, payload: Payload) {
        if let Payload::Event(e) = &payload {
            if e.is_priority() {
                {
                    let mut st = self.state.lock();
                    // Nothing after the end is read: `ended = false` keeps the
                    // position rule (ahead of a queued end of partition) and else
                    // goes last.
                    let at = crate::partition::priority_position(&st.items, false)
                        .unwrap_or(st.items.len());
                    let overtaken = crate::partition::data_bytes(&st.items, at..st.items.len());
                    st.items.insert(at, payload);
                    st.overtaken.push_back(overtaken);
                }
                self.gate.notify_priority(self.index);
                return;
            }
        }
        let was_empty = {
            let mut st = self.state.lock();
            if matches!(&payload, Payload::Event(e) if e.is_blocking()) {
                self.gate
                    .queued_barriers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
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

    /// Replaces the first queued aligned barrier for which `due` gives a replacement (its
    /// unaligned twin) by that, moved ahead of the data buffers before it (after the
    /// last event before it), as the producer does in its queue
    /// ([`QueuedBarrier::settle`](crate::partition::QueuedBarrier::settle)); the bytes
    /// it overtakes go with it. Returns whether one was converted.
    fn convert_barrier(&self, due: &dyn Fn(&Event) -> Option<Event>) -> bool {
        {
            let mut st = self.state.lock();
            let found = st.items.iter().enumerate().find_map(|(i, p)| match p {
                Payload::Event(e) if e.is_blocking() => due(e).map(|u| (i, u)),
                _ => None,
            });
            let Some((old, unaligned)) = found else {
                return false;
            };
            let at = crate::partition::remove_for_priority(&mut st.items, old);
            let overtaken = crate::partition::data_bytes(&st.items, at..old);
            // `overtaken` holds one entry per queued priority event, in queue order.
            let before = st
                .items
                .range(..at)
                .filter(|p| matches!(p, Payload::Event(e) if e.is_priority()))
                .count();
            st.items.insert(at, Payload::Event(unaligned));
            st.overtaken.insert(before, overtaken);
            self.gate
                .queued_barriers
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.gate.notify_priority(self.index);
        true
    }

    /// Counts an aligned barrier taken from the queue.
    fn barrier_taken(&self, payload: &Payload) {
        if matches!(payload, Payload::Event(e) if e.is_blocking()) {
            self.gate
                .queued_barriers
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The next element, whether more follows, and what a priority event overtook.
    fn poll(&self) -> Result<Option<Polled>, NetworkError> {
        let mut st = self.state.lock();
        let popped = st.pop();
        if let Some((p, _)) = &popped {
            self.barrier_taken(p);
        }
        match popped {
            // A failure behind the last item counts as "more": fail() did not re-queue
            // the channel if it was queued already, so this read must.
            Some((p, o)) => Ok(Some((p, !st.items.is_empty() || st.error.is_some(), o))),
            None => match &st.error {
                Some(e) => Err(e.clone()),
                None => Ok(None),
            },
        }
    }

    /// If the producer's end of partition was received but not read yet (and no
    /// priority event is queued before it): the bytes of the data before it.
    fn data_before_received_end(&self) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let end = st
            .items
            .iter()
            .position(|p| matches!(p, Payload::Event(Event::EndOfPartition)))?;
        let mut out = Vec::new();
        for p in st.items.range(..end) {
            match p {
                Payload::Data(b) => out.extend_from_slice(b),
                Payload::Event(e) if e.is_priority() => return None,
                Payload::Event(_) => {}
            }
        }
        Some(out)
    }

    /// Takes the front element if it is a priority event.
    fn poll_priority(&self) -> Option<(Event, Vec<u8>)> {
        let mut st = self.state.lock();
        match st.items.front() {
            Some(Payload::Event(e)) if e.is_priority() => {
                let (p, o) = st.pop().expect("front exists");
                let Payload::Event(e) = p else {
                    unreachable!("checked above")
                };
                Some((e, o.unwrap_or_default()))
            }
            _ => None,
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
        let priority = self.shared.clone();
        let view = match partition.create_view_with_priority(
            subpartition,
            Arc::new(move || shared.notify_channel(index)),
            Some(Arc::new(move || priority.notify_priority(index))),
        ) {
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

    /// Finishes the gate; its pools count in the metrics' `inPoolUsage` from now on.
    pub fn build(self) -> InputGate {
        let n = self.channels.len();
        self.metrics.watch_input_pool(&self.floating_pool);
        for c in &self.channels {
            if let Channel::Remote(inbox) = c {
                self.metrics.watch_input_pool(&inbox.exclusive_pool);
            }
        }
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

    /// A waker that interrupts blocking reads of this gate.
    pub fn waker(&self) -> GateWaker {
        GateWaker {
            shared: self.shared.clone(),
        }
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
                Channel::Local(view) => view
                    .poll_next(true)?
                    .map(|p| (p.payload, p.more_available, None)),
                Channel::Remote(inbox) => inbox.poll()?,
            };
            let Some((payload, more, overtaken)) = polled else {
                continue; // spurious notification
            };
            if more {
                self.shared.notify_channel(ch);
            }
            return Ok(Some(match payload {
                Payload::Data(data) => GateItem::Buffer { channel: ch, data },
                Payload::Event(event) if event.is_priority() => GateItem::PriorityEvent {
                    channel: ch,
                    event,
                    overtaken: overtaken.unwrap_or_default(),
                },
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

    /// For a remote channel whose producer's end of partition has been received but not
    /// read yet (its producer has finished and sends nothing more, not even a barrier),
    /// the bytes of the data still queued before that end. `None` otherwise (local
    /// channels: the producer's own queue is read, and its barriers overtake a queued
    /// end).
    pub fn received_end(&self, channel: u32) -> Option<Vec<u8>> {
        match self.channels.get(channel as usize)? {
            Channel::Remote(inbox) => inbox.data_before_received_end(),
            Channel::Local(_) => None,
        }
    }

    /// Whether a channel queued a priority event since the last [`Self::poll_priority`]
    /// (a cheap check, made once per batch).
    pub fn has_priority_event(&self) -> bool {
        self.shared
            .has_priority
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Turns aligned barriers still queued in remote channels' receive queues into
    /// priority events where `due` gives their replacement (the unaligned twin of a
    /// barrier whose aligned-checkpoint timeout passed): each moves ahead of the data
    /// buffers before it, carrying their bytes (see [`GateItem::PriorityEvent`]), and is
    /// taken out of turn next. Local channels' barriers wait in the producer's queue,
    /// where the producer converts them. Cheap when nothing is queued (one atomic load).
    /// Returns how many were converted.
    pub fn convert_queued_barriers(&self, due: &dyn Fn(&Event) -> Option<Event>) -> usize {
        if self
            .shared
            .queued_barriers
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return 0;
        }
        self.channels
            .iter()
            .filter(|c| matches!(c, Channel::Remote(inbox) if inbox.convert_barrier(due)))
            .count()
    }

    /// Takes a priority event out of turn: an unaligned barrier at the front of its
    /// channel, ahead of whatever other channels (and the reader's current buffer)
    /// hold. `None` if there is none (it may have been taken in turn already).
    pub fn poll_priority(&mut self) -> Result<Option<GateItem>, NetworkError> {
        loop {
            let ch = {
                let mut st = self.shared.state.lock();
                let ch = st.priority.pop_front();
                if st.priority.is_empty() {
                    self.shared
                        .has_priority
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                match ch {
                    Some(ch) => ch,
                    None => return Ok(None),
                }
            };
            let taken = match &self.channels[ch as usize] {
                Channel::Local(view) => view.poll_priority()?.map(|e| (e, Vec::new())),
                Channel::Remote(inbox) => inbox.poll_priority(),
            };
            if let Some((event, overtaken)) = taken {
                return Ok(Some(GateItem::PriorityEvent {
                    channel: ch,
                    event,
                    overtaken,
                }));
            }
        }
    }

    /// Returns the next element, parking the thread until one arrives (counted as idle
    /// time); `None` once the gate is finished.
    pub fn next_blocking(&mut self) -> Result<Option<GateItem>, NetworkError> {
        self.next_timeout(None)
    }

    /// Like [`Self::next_blocking`] but gives up after `timeout` with `Ok(None)` while not
    /// finished. Both also return `Ok(None)`, instead of parking (again), once a
    /// [`GateWaker`] of this gate was called: a reader that uses wakers tells the cases
    /// apart with [`Self::is_finished`] (and its own clock for timeouts).
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
                let must_wait = st.available.is_empty() && st.error.is_none();
                // A read that would park returns for a pending wake-up instead (and
                // consumes it); a poll that cannot wait leaves it for the next read.
                let can_wait = deadline.is_none_or(|d| d > Instant::now());
                if must_wait && can_wait && st.woken {
                    st.woken = false;
                    return Ok(None);
                }
                if must_wait {
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
    /// Per channel, the bytes of every buffer taken from it while it is recorded (an
    /// unaligned checkpoint's in-flight input).
    recording: Vec<Option<Vec<u8>>>,
    /// Restored in-flight input, read before anything of the gate.
    restored: VecDeque<(u32, Bytes)>,
    /// Per channel, what the priority event returned last overtook in the receive
    /// queue, until the channel delivers anything else: part of
    /// [`Self::unconsumed`].
    overtaken: Vec<Vec<u8>>,
    /// Some entry of `overtaken` is not empty.
    any_overtaken: bool,
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
            recording: vec![None; gate.num_channels() as usize],
            overtaken: vec![Vec::new(); gate.num_channels() as usize],
            any_overtaken: false,
            gate,
            current: None,
            pending_records: 0,
            pending_bytes: 0,
            restored: VecDeque::new(),
        }
    }

    fn check_channel(&self, channel: u32) -> Result<usize, NetworkError> {
        let count = self.gate.num_channels();
        if channel >= count {
            return Err(NetworkError::SubpartitionOutOfRange {
                index: channel,
                count,
            });
        }
        Ok(channel as usize)
    }

    /// What `channel` delivered but the reader has not returned yet (a record begun in
    /// an earlier buffer; see [`RecordDeserializer::unconsumed`]). Together with what
    /// [`Self::start_recording`] records afterwards, it is the channel's in-flight data
    /// for an unaligned checkpoint taken now.
    pub fn unconsumed(&self, channel: u32) -> Result<Vec<u8>, NetworkError> {
        let i = self.check_channel(channel)?;
        let mut out = self.deserializers[i].unconsumed();
        // Restored in-flight data not read yet comes next (it precedes all the gate
        // delivers), then what a priority event overtook in the receive queue.
        for (c, b) in &self.restored {
            if *c == channel {
                out.extend_from_slice(b);
            }
        }
        out.extend_from_slice(&self.overtaken[i]);
        Ok(out)
    }

    /// Forgets what priority events overtook: call it once the item after them is
    /// wanted (a checkpoint taken at the event has read it with [`Self::unconsumed`];
    /// the overtaken buffers themselves are delivered later, in turn).
    #[inline]
    pub fn forget_overtaken(&mut self) {
        if self.any_overtaken {
            self.any_overtaken = false;
            for o in &mut self.overtaken {
                o.clear();
            }
        }
    }

    /// See [`InputGate::received_end`].
    pub fn received_end(&self, channel: u32) -> Result<Option<Vec<u8>>, NetworkError> {
        let _ = self.check_channel(channel)?;
        Ok(self.gate.received_end(channel))
    }

    /// Whether a priority event waits to be taken out of turn ([`Self::next_priority`]).
    #[inline]
    pub fn has_priority_event(&self) -> bool {
        self.gate.has_priority_event()
    }

    /// Takes a priority event (unaligned barrier) out of turn, even while the current
    /// buffer still holds records: those stay for the next reads. What it overtook in
    /// its channel's receive queue is recorded if the channel is, and otherwise kept
    /// for [`Self::unconsumed`].
    pub fn next_priority(&mut self) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        match self.gate.poll_priority()? {
            Some(item) => Ok(self.priority_item(item)),
            None => Ok(None),
        }
    }

    fn priority_item(&mut self, item: GateItem) -> Option<ReaderItem<'_>> {
        let GateItem::PriorityEvent {
            channel,
            event,
            overtaken,
        } = item
        else {
            return None;
        };
        let i = channel as usize;
        match &mut self.recording[i] {
            Some(r) => {
                r.extend_from_slice(&overtaken);
                self.overtaken[i].clear();
            }
            None => {
                self.any_overtaken |= !overtaken.is_empty();
                self.overtaken[i] = overtaken;
            }
        }
        Some(ReaderItem::Event { channel, event })
    }

    /// Starts copying the bytes of every buffer taken from `channel` from now on.
    pub fn start_recording(&mut self, channel: u32) -> Result<(), NetworkError> {
        let i = self.check_channel(channel)?;
        self.recording[i].get_or_insert_with(Vec::new);
        Ok(())
    }

    /// Stops recording `channel` and returns what was recorded since
    /// [`Self::start_recording`] (empty if it was not recorded).
    pub fn stop_recording(&mut self, channel: u32) -> Result<Vec<u8>, NetworkError> {
        let i = self.check_channel(channel)?;
        Ok(self.recording[i].take().unwrap_or_default())
    }

    /// Queues in-flight input restored from an unaligned checkpoint: `bytes` continue
    /// `channel`'s byte stream where the checkpoint cut it, so they are read before
    /// anything the gate delivers (call it before the first read).
    pub fn restore_in_flight(&mut self, channel: u32, bytes: Vec<u8>) -> Result<(), NetworkError> {
        let _ = self.check_channel(channel)?;
        if !bytes.is_empty() {
            self.restored.push_back((channel, Bytes::from(bytes)));
        }
        Ok(())
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

    /// Says that the record returned last was an in-band control element (a watermark
    /// or watermark status framed as a record), not data: it leaves records in (its bytes
    /// still count). Call it at most once per returned record.
    pub fn uncount_last_record(&mut self) {
        // The last record was added to `pending_records`, which is published only when
        // the reader goes back to its gate, i.e. not before the next read: it is still
        // there to take back.
        self.pending_records = self.pending_records.saturating_sub(1);
    }

    /// Returns the next record or event, blocking; `None` once every channel ended, or
    /// when a [`GateWaker`] interrupted the wait (see [`InputGate::next_timeout`]).
    #[inline]
    pub fn next_item(&mut self) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        self.next_inner(None)
    }

    /// Like [`Self::next_item`], but returns `Ok(None)` after `timeout` without input (check
    /// [`InputGate::is_finished`] to tell the two apart).
    #[inline]
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        self.next_inner(Some(timeout))
    }

    /// Fast path: the next record of the current buffer; otherwise the gate is asked.
    #[inline(always)]
    fn next_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<ReaderItem<'_>>, NetworkError> {
        if let Some(ch) = self.current {
            let i = ch as usize;
            if self.deserializers[i].next_record()? {
                self.pending_records += 1;
                return Ok(Some(ReaderItem::Record {
                    channel: ch,
                    record: self.deserializers[i].record(),
                }));
            }
            self.current = None;
        }
        self.next_from_gate(timeout)
    }

    #[inline(never)]
    fn next_from_gate(
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
            if let Some((channel, data)) = self.restored.pop_front() {
                self.deserializers[channel as usize].push_buffer(data);
                self.current = Some(channel);
                continue;
            }
            match self.gate.next_timeout(timeout)? {
                None => return Ok(None),
                Some(item @ GateItem::PriorityEvent { .. }) => {
                    return Ok(self.priority_item(item));
                }
                Some(GateItem::Buffer { channel, data }) => {
                    self.overtaken[channel as usize].clear();
                    self.pending_bytes += data.len() as u64;
                    if let Some(r) = &mut self.recording[channel as usize] {
                        r.extend_from_slice(&data);
                    }
                    self.deserializers[channel as usize].push_buffer(data);
                    self.current = Some(channel);
                }
                Some(GateItem::Event { channel, event }) => {
                    self.overtaken[channel as usize].clear();
                    if event == Event::EndOfPartition {
                        self.deserializers[channel as usize].finish()?;
                    }
                    return Ok(Some(ReaderItem::Event { channel, event }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_selector::ChannelSelector;
    use crate::config::{BufferTimeout, NetworkConfig};
    use crate::environment::NetworkEnvironment;
    use crate::event::CheckpointOptions;
    use crate::partition::PartitionId;
    use crate::record_writer::RecordWriter;
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    fn env(memory_segments: u64) -> NetworkEnvironment {
        NetworkEnvironment::new(NetworkConfig {
            memory: memory_segments * 4096,
            segment_size: 4096,
            ..NetworkConfig::default()
        })
        .unwrap()
    }

    fn writer(p: &Arc<ResultPartition>, sel: ChannelSelector, t: BufferTimeout) -> RecordWriter {
        RecordWriter::new(p.clone(), sel, t, Arc::new(TaskIoMetrics::default()), None).unwrap()
    }

    fn local_gate(env: &NetworkEnvironment, p: &Arc<ResultPartition>) -> InputGate {
        let mut b = env
            .input_gate_builder(Arc::new(TaskIoMetrics::default()))
            .unwrap();
        for i in 0..p.num_subpartitions() {
            b.add_local(p, i).unwrap();
        }
        b.build()
    }

    #[test]
    fn local_channels_deliver_records_events_and_end() {
        let env = env(64);
        let p = env.create_partition(PartitionId(1), 3).unwrap();
        let mut w = writer(&p, ChannelSelector::rebalance(0), BufferTimeout::Never);
        let mut r = RecordReader::new(local_gate(&env, &p));
        let big = vec![9u8; 10_000]; // spans three 4 KiB buffers
        for i in 0..300u32 {
            w.emit(&i.to_le_bytes()).unwrap();
        }
        w.broadcast_emit(&big).unwrap();
        w.finish().unwrap();
        let (mut records, mut bigs, mut ends) = (Vec::new(), 0, 0);
        while let Some(item) = r.next_timeout(WAIT).unwrap() {
            match item {
                ReaderItem::Record { record, .. } if record.len() == 4 => {
                    records.push(u32::from_le_bytes(record.try_into().unwrap()))
                }
                ReaderItem::Record { record, .. } => {
                    assert_eq!(record, &big[..]);
                    bigs += 1;
                }
                ReaderItem::Event { event, .. } => {
                    assert_eq!(event, Event::EndOfPartition);
                    ends += 1;
                }
            }
        }
        assert!(r.gate_mut().is_finished());
        records.sort_unstable();
        assert_eq!(records, (0..300).collect::<Vec<_>>());
        assert_eq!((bigs, ends), (3, 3));
        assert_eq!(r.gate_mut().metrics().records_in(), 303);
        drop(r);
        drop(w);
        env.release_partition(PartitionId(1));
        drop(p);
        assert_eq!(
            env.buffer_pool().segments_in_use(),
            0,
            "pools return to full"
        );
    }

    /// A gate of one remote channel, and the inbox its (absent) driver would fill.
    fn remote_gate(env: &NetworkEnvironment) -> (Arc<RemoteInbox>, InputGate) {
        let mut b = env
            .input_gate_builder(Arc::new(TaskIoMetrics::default()))
            .unwrap();
        let inbox = b.add_remote(env.buffer_pool().create_pool(1, 1).unwrap());
        (inbox, b.build())
    }

    #[test]
    fn remote_channel_failure_behind_queued_buffers_is_reported() {
        let env = env(16);
        let (inbox, mut gate) = remote_gate(&env);
        // The driver queues two buffers, then fails while the channel is still queued.
        inbox.push(Payload::Data(Bytes::from_static(b"a")));
        inbox.push(Payload::Data(Bytes::from_static(b"b")));
        inbox.fail(NetworkError::credit("test"));
        assert!(gate.try_next().unwrap().is_some());
        assert!(gate.try_next().unwrap().is_some());
        assert!(matches!(
            gate.try_next(),
            Err(NetworkError::CreditViolation { .. })
        ));
    }

    fn unaligned_barrier(id: u64) -> Event {
        Event::CheckpointBarrier {
            id,
            timestamp_ms: 1,
            options: CheckpointOptions {
                kind: crate::event::CheckpointKind::Checkpoint,
                alignment: crate::event::Alignment::Unaligned,
            },
        }
    }

    #[test]
    fn a_priority_event_overtakes_the_receive_queue_and_carries_its_bytes() {
        let env = env(16);
        let (inbox, mut gate) = remote_gate(&env);
        inbox.push(Payload::Event(Event::CancelCheckpointMarker { id: 1 }));
        inbox.push(Payload::Data(Bytes::from_static(b"ab")));
        inbox.push(Payload::Data(Bytes::from_static(b"cd")));
        assert!(!gate.has_priority_event());
        inbox.push(Payload::Event(unaligned_barrier(2)));
        inbox.push(Payload::Data(Bytes::from_static(b"ef")));
        assert!(gate.has_priority_event());
        // Out of turn: behind the cancel marker (an event keeps its place), ahead of
        // the two buffers, which it carries.
        assert!(
            gate.poll_priority().unwrap().is_none(),
            "the marker is in front"
        );
        assert!(!gate.has_priority_event());
        assert!(matches!(
            gate.try_next().unwrap(),
            Some(GateItem::Event { .. })
        ));
        let Some(GateItem::PriorityEvent {
            channel: 0,
            event,
            overtaken,
        }) = gate.try_next().unwrap()
        else {
            panic!("the barrier comes next, in turn");
        };
        assert_eq!((event, overtaken), (unaligned_barrier(2), b"abcd".to_vec()));
        let mut rest = Vec::new();
        while let Some(GateItem::Buffer { data, .. }) = gate.try_next().unwrap() {
            rest.extend_from_slice(&data);
        }
        assert_eq!(rest, b"abcdef", "the overtaken buffers are still delivered");
        // Without anything in front it is taken out of turn at once.
        inbox.push(Payload::Data(Bytes::from_static(b"gh")));
        inbox.push(Payload::Event(unaligned_barrier(3)));
        assert!(matches!(
            gate.poll_priority().unwrap(),
            Some(GateItem::PriorityEvent { overtaken, .. }) if overtaken == b"gh"
        ));
    }

    #[test]
    fn a_late_aligned_barrier_in_the_receive_queue_turns_unaligned_and_overtakes() {
        let env = env(16);
        let (inbox, mut gate) = remote_gate(&env);
        let aligned = |id| Event::CheckpointBarrier {
            id,
            timestamp_ms: 1,
            options: CheckpointOptions::aligned_checkpoint(),
        };
        let due = |late: u64| {
            move |e: &Event| match *e {
                Event::CheckpointBarrier { id, .. } if id == late => Some(unaligned_barrier(id)),
                _ => None,
            }
        };
        assert_eq!(gate.convert_queued_barriers(&due(4)), 0, "nothing queued");
        inbox.push(Payload::Data(Bytes::from_static(b"ab")));
        inbox.push(Payload::Event(Event::CancelCheckpointMarker { id: 3 }));
        inbox.push(Payload::Data(Bytes::from_static(b"cd")));
        inbox.push(Payload::Data(Bytes::from_static(b"ef")));
        inbox.push(Payload::Event(aligned(4)));
        inbox.push(Payload::Data(Bytes::from_static(b"gh")));
        assert_eq!(gate.convert_queued_barriers(&due(5)), 0, "not due");
        assert!(!gate.has_priority_event());
        assert_eq!(gate.convert_queued_barriers(&due(4)), 1);
        assert!(gate.has_priority_event());
        assert_eq!(gate.convert_queued_barriers(&due(4)), 0, "converted once");
        // Behind the marker (events keep their order), ahead of the two buffers.
        let mut seen = Vec::new();
        while let Some(item) = gate.try_next().unwrap() {
            seen.push(match item {
                GateItem::Buffer { data, .. } => String::from_utf8(data.to_vec()).unwrap(),
                GateItem::Event { event, .. } => format!("{event:?}"),
                GateItem::PriorityEvent {
                    event, overtaken, ..
                } => {
                    assert_eq!(event, unaligned_barrier(4));
                    format!(
                        "unaligned overtaking {}",
                        String::from_utf8(overtaken).unwrap()
                    )
                }
            });
        }
        assert_eq!(
            seen,
            [
                "ab",
                "CancelCheckpointMarker { id: 3 }",
                "unaligned overtaking cdef",
                "cd",
                "ef",
                "gh"
            ]
        );
        assert_eq!(gate.convert_queued_barriers(&due(4)), 0);
    }

    #[test]
    fn a_reader_takes_a_priority_event_mid_buffer_and_keeps_the_rest_unconsumed() {
        let env = env(64);
        let p = env.create_partition(PartitionId(12), 2).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::Never);
        let mut r = RecordReader::new(local_gate(&env, &p));
        for i in 0..4u8 {
            w.emit_to(0, &[i; 10]).unwrap();
        }
        w.flush_all().unwrap();
        let Some(ReaderItem::Record { channel: 0, record }) = r.next_timeout(WAIT).unwrap() else {
            panic!("first record");
        };
        assert_eq!(record, &[0u8; 10]);
        let overtaken = w.broadcast_priority_event(unaligned_barrier(5)).unwrap();
        assert!(
            overtaken.iter().all(Vec::is_empty),
            "the buffer was taken already"
        );
        assert!(r.has_priority_event());
        assert!(matches!(
            r.next_priority().unwrap(),
            Some(ReaderItem::Event { channel: 0 | 1, event }) if event == unaligned_barrier(5)
        ));
        // Three records of the current buffer are unconsumed: a checkpoint now stores
        // them, and they are still read afterwards.
        let rest = r.unconsumed(0).unwrap();
        assert_eq!(rest.len(), 3 * 14);
        let mut after = 0;
        while let Some(item) = r.next_timeout(Duration::ZERO).unwrap() {
            if let ReaderItem::Record { channel: 0, .. } = item {
                after += 1;
            }
        }
        assert_eq!(after, 3);
    }

    #[test]
    fn local_channel_shares_the_producers_segment_without_copying() {
        let env = env(16);
        let p = env.create_partition(PartitionId(2), 1).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::EveryRecord);
        let mut gate = local_gate(&env, &p);
        w.emit(b"hello").unwrap();
        let Some(GateItem::Buffer { data, .. }) = gate.try_next().unwrap() else {
            panic!("flushed record must be readable at once");
        };
        // The consumer holds the producer's pool buffer itself: it returns on drop.
        assert_eq!(p.pool().outstanding(), 1);
        assert_eq!(&data[4..], b"hello");
        drop(data);
        assert_eq!(p.pool().outstanding(), 0);
    }

    #[test]
    fn aligned_barrier_blocks_channel_until_resumed() {
        let env = env(64);
        let p = env.create_partition(PartitionId(3), 2).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::Never);
        let mut gate = local_gate(&env, &p);
        let barrier = Event::CheckpointBarrier {
            id: 7,
            timestamp_ms: 1,
            options: CheckpointOptions::aligned_checkpoint(),
        };
        w.broadcast_event(barrier).unwrap();
        w.emit(b"after").unwrap();
        w.flush_all().unwrap();
        let mut seen = Vec::new();
        while let Some(item) = gate.try_next().unwrap() {
            seen.push(item);
        }
        // Both barriers, but channel 0's record waits behind its barrier.
        assert_eq!(seen.len(), 2);
        assert!(seen
            .iter()
            .all(|i| matches!(i, GateItem::Event { event, .. } if *event == barrier)));
        gate.resume_consumption(0).unwrap();
        assert!(matches!(
            gate.try_next().unwrap(),
            Some(GateItem::Buffer { channel: 0, .. })
        ));
    }

    #[test]
    fn unaligned_barrier_overtakes_queued_data_which_restores_byte_exactly() {
        let env = env(64);
        let p = env.create_partition(PartitionId(9), 1).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::Never);
        let mut r = RecordReader::new(local_gate(&env, &p));
        let end = Event::CancelCheckpointMarker { id: 1 };
        w.emit(b"before-event").unwrap();
        w.broadcast_event(end).unwrap();
        // Records spanning buffers: the barrier may cut the stream inside one.
        let big = vec![7u8; 9000];
        w.emit(&big).unwrap();
        w.emit(b"small").unwrap();
        let barrier = Event::CheckpointBarrier {
            id: 2,
            timestamp_ms: 1,
            options: CheckpointOptions {
                kind: crate::event::CheckpointKind::Checkpoint,
                alignment: crate::event::Alignment::Unaligned,
            },
        };
        // Read the first record and half of the big one's buffers.
        let Some(ReaderItem::Record { record, .. }) = r.next_timeout(WAIT).unwrap() else {
            panic!("first record");
        };
        assert_eq!(record, b"before-event");
        assert!(
            matches!(r.next_timeout(WAIT).unwrap(), Some(ReaderItem::Event { event, .. }) if event == end)
        );
        let first = r.gate_mut().try_next().unwrap().unwrap();
        let GateItem::Buffer { data: first, .. } = first else {
            panic!("a buffer of the big record");
        };
        let mut consumer = RecordDeserializer::new(1 << 20);
        consumer.push_buffer(first);
        assert!(!consumer.next_record().unwrap());
        let overtaken = w.broadcast_priority_event(barrier).unwrap();
        w.emit(b"after").unwrap();
        w.flush_all().unwrap();
        assert_eq!(overtaken.len(), 1);
        // The barrier comes next, then the overtaken buffers, then what followed.
        assert!(matches!(
            r.gate_mut().try_next().unwrap(),
            Some(GateItem::PriorityEvent { event, overtaken, .. }) if event == barrier && overtaken.is_empty()
        ));
        let mut live = Vec::new();
        while let Some(GateItem::Buffer { data, .. }) = r.gate_mut().try_next().unwrap() {
            live.extend_from_slice(&data);
        }
        assert!(live.starts_with(&overtaken[0]));
        // A consumer restored from the checkpoint: its unconsumed bytes, then the
        // producer's overtaken bytes, yield exactly the records after the cut.
        let mut restored = RecordDeserializer::new(1 << 20);
        let mut stream = consumer.unconsumed();
        stream.extend_from_slice(&overtaken[0]);
        restored.push_buffer(Bytes::from(stream));
        let mut got = Vec::new();
        while restored.next_record().unwrap() {
            got.push(restored.record().to_vec());
        }
        restored.finish().unwrap();
        assert_eq!(got, vec![big, b"small".to_vec()]);
    }

    #[test]
    fn recorded_and_restored_in_flight_input_round_trips_through_a_reader() {
        let env = env(64);
        let p = env.create_partition(PartitionId(10), 2).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::Never);
        let mut r = RecordReader::new(local_gate(&env, &p));
        r.start_recording(1).unwrap();
        for i in 0..3u8 {
            w.emit_to(1, &[i; 3000]).unwrap();
        }
        w.flush_all().unwrap();
        let mut seen = 0;
        while let Some(ReaderItem::Record { channel, .. }) = r.next_timeout(Duration::ZERO).unwrap()
        {
            assert_eq!(channel, 1);
            seen += 1;
        }
        assert_eq!(seen, 3);
        let recorded = r.stop_recording(1).unwrap();
        assert_eq!(r.stop_recording(0).unwrap(), Vec::<u8>::new());
        // A new reader restored with the recording returns the same records first.
        let p2 = env.create_partition(PartitionId(11), 2).unwrap();
        let mut r2 = RecordReader::new(local_gate(&env, &p2));
        r2.restore_in_flight(1, recorded.clone()).unwrap();
        // A checkpoint taken before the restored data is read stores it again.
        assert_eq!(r2.unconsumed(1).unwrap(), recorded);
        assert!(r2.unconsumed(0).unwrap().is_empty());
        for i in 0..3u8 {
            let Some(ReaderItem::Record { channel, record }) =
                r2.next_timeout(Duration::ZERO).unwrap()
            else {
                panic!("restored record {i}");
            };
            assert_eq!((channel, record), (1, &[i; 3000][..]));
        }
        assert!(r2.next_timeout(Duration::ZERO).unwrap().is_none());
        assert!(r2.restore_in_flight(2, vec![1]).is_err());
    }

    #[test]
    fn blocked_writer_resumes_when_consumer_drains_and_backpressure_is_measured() {
        let env = env(8);
        let p = env.create_partition(PartitionId(4), 1).unwrap();
        let metrics = Arc::new(TaskIoMetrics::default());
        let mut w = RecordWriter::new(
            p.clone(),
            ChannelSelector::Forward,
            BufferTimeout::Never,
            metrics.clone(),
            None,
        )
        .unwrap();
        let mut gate = local_gate(&env, &p);
        let (tx, rx) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            // 100 buffers through a pool of at most 8.
            for _ in 0..100 {
                w.emit(&[1u8; 4092]).unwrap();
            }
            w.finish().unwrap();
            tx.send(()).unwrap();
        });
        // Not done: the writer waits for buffers held in the subpartition.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        let mut buffers = 0;
        while let Some(item) = gate.next_timeout(Some(WAIT)).unwrap() {
            if let GateItem::Buffer { .. } = item {
                buffers += 1;
            }
        }
        rx.recv_timeout(WAIT).unwrap();
        producer.join().unwrap();
        assert_eq!(buffers, 100);
        assert!(metrics.back_pressured_time() > Duration::ZERO);
    }

    #[test]
    fn flush_modes_follow_buffer_timeout() {
        let env = env(64);
        // none: only explicit flushes.
        let p = env.create_partition(PartitionId(5), 1).unwrap();
        let mut w = writer(&p, ChannelSelector::Forward, BufferTimeout::Never);
        let mut gate = local_gate(&env, &p);
        w.emit(b"x").unwrap();
        assert!(gate.try_next().unwrap().is_none());
        w.flush_all().unwrap();
        assert!(gate.try_next().unwrap().is_some());

        // interval: the flusher wakes an idle task through its listener.
        let p = env.create_partition(PartitionId(6), 1).unwrap();
        let (tx, rx) = mpsc::sync_channel(1);
        let mut w = RecordWriter::new(
            p.clone(),
            ChannelSelector::Forward,
            BufferTimeout::Interval(Duration::from_millis(1)),
            Arc::new(TaskIoMetrics::default()),
            Some(Arc::new(move || {
                let _ = tx.try_send(());
            })),
        )
        .unwrap();
        assert!(w.has_flusher());
        let mut gate = local_gate(&env, &p);
        w.emit(b"y").unwrap();
        rx.recv_timeout(WAIT).unwrap();
        assert!(w.flush_if_requested().unwrap());
        assert!(gate.try_next().unwrap().is_some());
    }

    #[test]
    fn writes_after_consumer_left_are_dropped_and_pools_return_to_full() {
        let env = env(16);
        let p = env.create_partition(PartitionId(8), 2).unwrap();
        let mut w = writer(&p, ChannelSelector::Broadcast, BufferTimeout::Never);
        let gate = local_gate(&env, &p);
        w.emit(&[0u8; 5000]).unwrap();
        drop(gate); // cancels both channels
        for _ in 0..100 {
            w.emit(&[0u8; 5000]).unwrap();
        }
        w.finish().unwrap();
        assert!(p.dropped_buffers() > 0);
        drop(w);
        env.release_partition(PartitionId(8));
        drop(p);
        assert_eq!(env.buffer_pool().segments_in_use(), 0);
    }

    #[test]
    fn a_waker_interrupts_a_blocked_read_once_per_wake() {
        let env = env(64);
        let p = env.create_partition(PartitionId(7), 1).unwrap();
        let mut gate = local_gate(&env, &p);
        let waker = gate.waker();
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let first = gate.next_blocking().unwrap().is_none();
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            assert!(gate.next_timeout(Some(Duration::ZERO)).unwrap().is_none());
            // Two wakes before this read are one: it returns at once, the next times out.
            let second = gate.next_blocking().unwrap().is_none();
            let start = Instant::now();
            let third = gate.next_timeout(Some(Duration::from_millis(50))).unwrap();
            (
                first,
                second,
                third.is_none(),
                start.elapsed(),
                gate.is_finished(),
            )
        });
        std::thread::sleep(Duration::from_millis(30));
        waker.wake();
        rx.recv_timeout(WAIT)
            .expect("the wake ends the blocked read");
        waker.wake();
        waker.wake();
        // A zero-timeout poll does not consume the wake-up (the thread's next blocking
        // read must see it).
        go_tx.send(()).unwrap();
        let (first, second, third, waited, finished) = handle.join().unwrap();
        assert!(first && second && third);
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(!finished);
    }
}
