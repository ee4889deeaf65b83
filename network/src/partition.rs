//! Producer side: a [`ResultPartition`] of pipelined, bounded [`Subpartition`]s, one per
//! consumer channel, and the [`SubpartitionView`] through which one consumer reads it.
//!
//! # Pipelined and bounded
//!
//! A subpartition is a queue of finished buffers and events, readable as soon as they are
//! added. It is bounded twice: every buffer comes from the partition's
//! [`LocalBufferPool`] (so the writer waits when the consumer is slow — backpressure), and
//! one subpartition may queue at most `max-buffers-per-channel` data buffers, so a single
//! slow channel cannot take the whole pool from the others.
//!
//! # Availability
//!
//! The reader registers a listener when it creates its view. The subpartition calls it,
//! outside its lock, whenever the queue goes from nothing-readable to readable: the first
//! element added to an empty queue, or a resume after a blocking event. The reader keeps
//! polling until the view reports no more; it then waits for the next notification. A
//! reader may see a spurious notification, never a lost one: the "was it empty" decision
//! and the reader's "is there more" answer are taken under the same lock.
//!
//! # Blocking events
//!
//! After handing out an aligned checkpoint barrier ([`Event::is_blocking`]) the view
//! yields nothing until [`SubpartitionView::resume_consumption`]. Local and remote readers
//! share this single implementation; the remote driver calls it when a
//! `ResumeConsumption` message arrives.
//!
//! # Priority events
//!
//! An unaligned checkpoint barrier does not wait behind the data queued before it: it
//! is inserted ahead of the data buffers at the end of the queue and ahead of a queued
//! end of partition (never ahead of another event, so earlier barriers and markers keep
//! their order; nothing is inserted once the consumer read the end), and the writer gets
//! a copy of the bytes it overtook, which the task stores with its checkpoint and sends
//! again first when it is restored from it. The overtaken buffers are still delivered
//! after the barrier.
//!
//! # Timeoutable barriers
//!
//! An aligned barrier of a checkpoint with `aligned-checkpoint-timeout` may wait behind
//! a backpressured queue longer than the timeout allows (Flink's timeoutable barrier).
//! [`ResultPartition::broadcast_timeoutable_barrier`] queues it like any event and hands
//! back a [`QueuedBarrier`]; [`QueuedBarrier::settle`] waits until every subpartition
//! handed the barrier out, and at its deadline turns the ones still queued into the
//! unaligned barrier, moved ahead of the data buffers before them as a priority event
//! would be, returning the bytes it overtook (the task stores them with its checkpoint,
//! as for an unaligned one). A subpartition that handed the barrier out before the
//! deadline overtook nothing: its consumer aligns, or times out, at its own input.
//!
//! # Release
//!
//! Releasing a partition (task cancelled or failed) or dropping a view discards queued
//! buffers (their segments go home), wakes a waiting writer, and makes later writes to
//! that subpartition no-ops: the consumer is gone, the data has nowhere to go.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::buffer_pool::LocalBufferPool;
use crate::error::NetworkError;
use crate::event::{Alignment, CheckpointKind, CheckpointOptions, Event};

/// Identifies a result partition across the cluster (the job graph assigns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId(pub u128);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One element of a subpartition: a buffer of serialized records or an event.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Length-prefixed records (see [`serializer`](crate::serializer)).
    Data(Bytes),
    /// An in-band event.
    Event(Event),
}

impl Payload {
    /// Whether this is a data buffer (which needs credit on a remote channel).
    pub fn is_data(&self) -> bool {
        matches!(self, Payload::Data(_))
    }
}

/// What a view poll returns.
#[derive(Debug)]
pub struct Polled {
    /// The element.
    pub payload: Payload,
    /// Data buffers still queued behind it (announced to remote consumers as backlog).
    pub backlog: u32,
    /// Whether another element can be polled right away (ignoring credit).
    pub more_available: bool,
}

/// Called when a subpartition becomes readable.
pub type AvailabilityListener = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct SubState {
    queue: VecDeque<Payload>,
    data_backlog: u32,
    blocked: bool,
    has_reader: bool,
    released: bool,
    /// End of partition was queued.
    ended: bool,
    listener: Option<AvailabilityListener>,
    /// Called when a priority event is queued (the reader takes it out of turn).
    priority_listener: Option<AvailabilityListener>,
    /// Buffers discarded because the subpartition was released.
    dropped: u64,
}

/// A pipelined, bounded queue for one consumer channel.
pub struct Subpartition {
    index: u32,
    state: Mutex<SubState>,
    space: Condvar,
    /// Notified when a blocking event (an aligned barrier) is handed out or the
    /// subpartition is released ([`QueuedBarrier::settle`] waits on it).
    barrier_out: Condvar,
    /// Copy of `data_backlog`, written under the lock and read without it by the writer's
    /// flush, which only needs an estimate.
    backlog_hint: AtomicU32,
}

impl Subpartition {
    fn add(&self, payload: Payload) -> bool {
        let listener = {
            let mut st = self.state.lock();
            if st.released {
                st.dropped += 1;
                return false;
            }
            if payload.is_data() {
                st.data_backlog += 1;
                self.backlog_hint.store(st.data_backlog, Ordering::Relaxed);
            }
            st.ended |= matches!(payload, Payload::Event(Event::EndOfPartition));
            st.queue.push_back(payload);
            if st.queue.len() == 1 && !st.blocked {
                st.listener.clone()
            } else {
                None
            }
        };
        if let Some(l) = listener {
            l();
        }
        true
    }

    /// Queues `event` ahead of the data buffers at the end of the queue (after the last
    /// queued event, so events keep their order) and returns a copy of the overtaken
    /// buffers' bytes, oldest first; empty if the subpartition was released.
    fn add_priority(&self, event: Event) -> Vec<u8> {
        let (overtaken, listeners) = {
            let mut st = self.state.lock();
            if st.released {
                return Vec::new();
            }
            let Some(at) = priority_position(&st.queue, st.ended) else {
                return Vec::new();
            };
            let end = st.queue.len();
            insert_priority(&mut st, at, end, event)
        };
        for l in listeners.into_iter().flatten() {
            l();
        }
        overtaken
    }

    /// Queues `event` last, or, once the end of partition was queued, just before it
    /// (nothing was written after it; the end stays last). Nothing if the consumer read
    /// the end already: it expects nothing more.
    fn add_before_end(&self, event: Event) {
        let listener = {
            let mut st = self.state.lock();
            if st.released {
                return;
            }
            let at = if st.ended {
                match st
                    .queue
                    .iter()
                    .position(|p| matches!(p, Payload::Event(Event::EndOfPartition)))
                {
                    Some(at) => at,
                    None => return,
                }
            } else {
                st.queue.len()
            };
            st.queue.insert(at, Payload::Event(event));
            if st.queue.len() == 1 && !st.blocked {
                st.listener.clone()
            } else {
                None
            }
        };
        if let Some(l) = listener {
            l();
        }
    }

    /// Waits until aligned barrier `id` is no longer queued (handed out, or the
    /// subpartition released) or `deadline` passes; returns whether it left.
    fn wait_barrier_out(&self, id: u64, deadline: Instant) -> bool {
        let mut st = self.state.lock();
        while !st.released && aligned_barrier_position(&st.queue, id).is_some() {
            if self.barrier_out.wait_until(&mut st, deadline).timed_out() {
                return st.released || aligned_barrier_position(&st.queue, id).is_none();
            }
        }
        true
    }

    /// Replaces aligned barrier `id`, if still queued, by `priority` moved ahead of the
    /// data buffers queued before it (after the last event before it); returns the bytes
    /// of the buffers overtaken, oldest first (empty if the barrier was not queued).
    fn convert_barrier(&self, id: u64, priority: Event) -> Vec<u8> {
        let (overtaken, listeners) = {
            let mut st = self.state.lock();
            if st.released {
                return Vec::new();
            }
            let Some(old) = aligned_barrier_position(&st.queue, id) else {
                return Vec::new();
            };
            let at = remove_for_priority(&mut st.queue, old);
            insert_priority(&mut st, at, old, priority)
        };
        for l in listeners.into_iter().flatten() {
            l();
        }
        overtaken
    }

    /// Data buffers queued.
    pub fn backlog(&self) -> u32 {
        self.state.lock().data_backlog
    }

    /// Data buffers queued, read without the lock: may be momentarily stale.
    pub(crate) fn backlog_hint(&self) -> u32 {
        self.backlog_hint.load(Ordering::Relaxed)
    }

    /// Parks the writer while `max` data buffers are queued; returns whether it waited.
    pub(crate) fn wait_for_capacity(&self, max: u32) -> bool {
        let mut st = self.state.lock();
        let mut waited = false;
        while st.data_backlog >= max && !st.released {
            waited = true;
            self.space.wait(&mut st);
        }
        waited
    }

    fn release(&self) {
        let dropped = {
            let mut st = self.state.lock();
            st.released = true;
            st.data_backlog = 0;
            self.backlog_hint.store(0, Ordering::Relaxed);
            st.listener = None;
            st.priority_listener = None;
            std::mem::take(&mut st.queue)
        };
        drop(dropped);
        self.space.notify_all();
        self.barrier_out.notify_all();
    }
}

/// Inserts priority `event` at `at` and copies the data buffers in `at..end` (which it
/// overtakes); returns the bytes and the listeners to call outside the lock.
fn insert_priority(
    st: &mut SubState,
    at: usize,
    end: usize,
    event: Event,
) -> (Vec<u8>, [Option<AvailabilityListener>; 2]) {
    let overtaken = data_bytes(&st.queue, at..end);
    st.queue.insert(at, Payload::Event(event));
    let listeners = if st.blocked {
        [None, None]
    } else {
        // At the front, the event is readable now even by a reader that waits for
        // credit (events need none): tell it.
        [
            st.priority_listener.clone(),
            (at == 0).then(|| st.listener.clone()).flatten(),
        ]
    };
    (overtaken, listeners)
}

/// Removes the element at `old` (an aligned barrier turning unaligned) and returns where
/// its priority twin goes: after the last event before it, ahead of the data buffers
/// between (`at..old` after the removal).
pub(crate) fn remove_for_priority(queue: &mut VecDeque<Payload>, old: usize) -> usize {
    queue.remove(old);
    queue
        .range(..old)
        .rposition(|p| !p.is_data())
        .map_or(0, |i| i + 1)
}

/// The bytes of the data buffers in `range` of `queue`, oldest first.
pub(crate) fn data_bytes(queue: &VecDeque<Payload>, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in queue.range(range) {
        if let Payload::Data(b) = p {
            out.extend_from_slice(b);
        }
    }
    out
}

/// Where aligned checkpoint barrier `id` is in `queue`, if queued.
fn aligned_barrier_position(queue: &VecDeque<Payload>, id: u64) -> Option<usize> {
    queue.iter().position(|p| {
        matches!(p, Payload::Event(e @ Event::CheckpointBarrier { id: b, .. }) if *b == id && e.is_blocking())
    })
}

/// Where a priority event goes in `queue`: after the last event other than end of
/// partition (a finished producer's data can still be overtaken: its consumer records
/// it, or the producer stores it), ahead of the data behind it. `None` once the end of
/// partition was read (`ended` and none queued): the consumer has seen the end and
/// expects nothing more.
pub(crate) fn priority_position(queue: &VecDeque<Payload>, ended: bool) -> Option<usize> {
    let is_end = |p: &Payload| matches!(p, Payload::Event(Event::EndOfPartition));
    if ended && !queue.iter().any(is_end) {
        return None;
    }
    Some(
        queue
            .iter()
            .rposition(|p| !p.is_data() && !is_end(p))
            .map_or(0, |i| i + 1),
    )
}

/// The output of one producer subtask: one subpartition per consumer channel.
pub struct ResultPartition {
    id: PartitionId,
    subpartitions: Box<[Subpartition]>,
    pool: Arc<LocalBufferPool>,
    max_buffers_per_channel: u32,
    released: AtomicBool,
}

impl fmt::Debug for ResultPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultPartition")
            .field("id", &self.id)
            .field("subpartitions", &self.subpartitions.len())
            .field("pool", &self.pool)
            .finish()
    }
}

impl ResultPartition {
    /// Creates a partition with `num_subpartitions` queues drawing buffers from `pool`.
    pub fn new(
        id: PartitionId,
        num_subpartitions: u32,
        pool: Arc<LocalBufferPool>,
        max_buffers_per_channel: u32,
    ) -> Arc<Self> {
        Arc::new(ResultPartition {
            id,
            subpartitions: (0..num_subpartitions)
                .map(|index| Subpartition {
                    index,
                    state: Mutex::new(SubState::default()),
                    space: Condvar::new(),
                    barrier_out: Condvar::new(),
                    backlog_hint: AtomicU32::new(0),
                })
                .collect(),
            pool,
            max_buffers_per_channel: max_buffers_per_channel.max(1),
            released: AtomicBool::new(false),
        })
    }

    /// The partition's id.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// Number of subpartitions (consumer channels).
    pub fn num_subpartitions(&self) -> u32 {
        self.subpartitions.len() as u32
    }

    /// The partition's buffer pool (`outPoolUsage` is its usage).
    pub fn pool(&self) -> &Arc<LocalBufferPool> {
        &self.pool
    }

    /// Limit of queued data buffers per subpartition.
    pub fn max_buffers_per_channel(&self) -> u32 {
        self.max_buffers_per_channel
    }

    /// Returns subpartition `index`.
    pub fn subpartition(&self, index: u32) -> Result<&Subpartition, NetworkError> {
        self.subpartitions
            .get(index as usize)
            .ok_or(NetworkError::SubpartitionOutOfRange {
                index,
                count: self.num_subpartitions(),
            })
    }

    /// Queues a finished data buffer; returns `false` if the subpartition was released
    /// (the buffer is dropped and its segment recycled).
    pub fn add_buffer(&self, index: u32, buffer: Bytes) -> Result<bool, NetworkError> {
        Ok(self.subpartition(index)?.add(Payload::Data(buffer)))
    }

    /// Queues an event on one subpartition.
    pub fn add_event(&self, index: u32, event: Event) -> Result<bool, NetworkError> {
        Ok(self.subpartition(index)?.add(Payload::Event(event)))
    }

    /// Queues an event on every subpartition. Flush the writer first so the event
    /// follows all records written before it.
    pub fn broadcast_event(&self, event: Event) {
        for s in self.subpartitions.iter() {
            s.add(Payload::Event(event));
        }
    }

    /// Queues a priority event on every subpartition ahead of its queued data buffers
    /// (an unaligned checkpoint barrier, see the module docs); returns, per
    /// subpartition, the bytes of the buffers it overtook (empty where none). Flush the
    /// writer first so that no record written before is left outside the queue.
    pub fn broadcast_priority_event(&self, event: Event) -> Vec<Vec<u8>> {
        self.subpartitions
            .iter()
            .map(|s| s.add_priority(event))
            .collect()
    }

    /// Queues the aligned barrier of checkpoint `id` on every subpartition, like
    /// [`Self::broadcast_event`] — also after the writer finished: then ahead of the end
    /// of partition where the consumer has not read it (it is behind the data, so the
    /// consumer could otherwise align only at the end) — and returns the handle that
    /// turns it unaligned where it is still queued at a deadline (see the module docs).
    /// Flush the writer first.
    pub fn broadcast_timeoutable_barrier(
        self: &Arc<Self>,
        id: u64,
        timestamp_ms: i64,
        kind: CheckpointKind,
    ) -> QueuedBarrier {
        let barrier = |alignment| Event::CheckpointBarrier {
            id,
            timestamp_ms,
            options: CheckpointOptions { kind, alignment },
        };
        for s in self.subpartitions.iter() {
            s.add_before_end(barrier(Alignment::Aligned));
        }
        QueuedBarrier {
            partition: self.clone(),
            id,
            unaligned: barrier(Alignment::Unaligned),
        }
    }

    /// Whether a writer can go on without waiting (Flink's output availability): the
    /// pool has a buffer and no subpartition is at `max-buffers-per-channel`. A hint
    /// (read without the subpartitions' locks) that a task checks before it emits, so
    /// that while backpressured it handles mail and unaligned barriers instead of
    /// parking inside a write.
    pub fn is_available(&self) -> bool {
        self.subpartitions
            .iter()
            .all(|s| s.backlog_hint() < self.max_buffers_per_channel)
            && self.pool.is_available()
    }

    /// Data buffers queued over all subpartitions.
    pub fn total_backlog(&self) -> u64 {
        self.subpartitions
            .iter()
            .map(|s| u64::from(s.backlog()))
            .sum()
    }

    /// Opens the reader view of subpartition `index`; `listener` is called whenever the
    /// subpartition becomes readable (see the module docs).
    pub fn create_view(
        self: &Arc<Self>,
        index: u32,
        listener: AvailabilityListener,
    ) -> Result<SubpartitionView, NetworkError> {
        self.create_view_with_priority(index, listener, None)
    }

    /// Like [`Self::create_view`]; `priority` is called when a priority event (unaligned
    /// barrier) is queued, so that the reader can take it out of turn
    /// ([`SubpartitionView::poll_priority`]).
    pub fn create_view_with_priority(
        self: &Arc<Self>,
        index: u32,
        listener: AvailabilityListener,
        priority: Option<AvailabilityListener>,
    ) -> Result<SubpartitionView, NetworkError> {
        let sub = self.subpartition(index)?;
        let notify_now = {
            let mut st = sub.state.lock();
            if st.released || self.released.load(Ordering::Acquire) {
                return Err(NetworkError::PartitionReleased { partition: self.id });
            }
            if st.has_reader {
                return Err(NetworkError::AlreadyConsumed {
                    partition: self.id,
                    index,
                });
            }
            st.has_reader = true;
            st.listener = Some(listener.clone());
            st.priority_listener = priority;
            !st.queue.is_empty() && !st.blocked
        };
        if notify_now {
            listener();
        }
        Ok(SubpartitionView {
            partition: self.clone(),
            index,
        })
    }

    /// Discards all queued data and makes further writes no-ops (cancel/failure).
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
        for s in self.subpartitions.iter() {
            s.release();
        }
    }

    /// Whether [`Self::release`] was called.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Buffers discarded because their subpartition had been released.
    pub fn dropped_buffers(&self) -> u64 {
        self.subpartitions
            .iter()
            .map(|s| s.state.lock().dropped)
            .sum()
    }
}

/// An aligned barrier queued on every subpartition of a partition that turns unaligned
/// where it is still queued at a deadline
/// ([`ResultPartition::broadcast_timeoutable_barrier`]).
pub struct QueuedBarrier {
    partition: Arc<ResultPartition>,
    id: u64,
    unaligned: Event,
}

impl fmt::Debug for QueuedBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedBarrier")
            .field("partition", &self.partition.id)
            .field("id", &self.id)
            .finish()
    }
}

impl QueuedBarrier {
    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits until every subpartition handed the barrier out or `deadline` passes, then
    /// converts the barriers still queued to the unaligned barrier ahead of the data
    /// before them. Returns, per subpartition, the bytes overtaken (empty where the
    /// barrier had left in time, or the subpartition was released).
    pub fn settle(&self, deadline: Instant) -> Vec<Vec<u8>> {
        self.partition
            .subpartitions
            .iter()
            .map(|s| {
                if s.wait_barrier_out(self.id, deadline) {
                    Vec::new()
                } else {
                    s.convert_barrier(self.id, self.unaligned)
                }
            })
            .collect()
    }
}

/// The single reader of one subpartition. Dropping it releases the subpartition.
pub struct SubpartitionView {
    partition: Arc<ResultPartition>,
    index: u32,
}

impl fmt::Debug for SubpartitionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubpartitionView")
            .field("partition", &self.partition.id)
            .field("index", &self.index)
            .finish()
    }
}

impl SubpartitionView {
    fn sub(&self) -> &Subpartition {
        &self.partition.subpartitions[self.index as usize]
    }

    /// The partition read.
    pub fn partition(&self) -> &Arc<ResultPartition> {
        &self.partition
    }

    /// Subpartition index.
    pub fn index(&self) -> u32 {
        self.sub().index
    }

    /// Takes the next element, if one is readable; with `allow_data == false` only an
    /// event is taken (a remote channel without credit may still send events).
    pub fn poll_next(&self, allow_data: bool) -> Result<Option<Polled>, NetworkError> {
        self.poll_if(|p| allow_data || !p.is_data())
    }

    /// Takes the next element if it is a priority event (an unaligned barrier at the
    /// front of the queue), out of the reader's turn.
    pub fn poll_priority(&self) -> Result<Option<Event>, NetworkError> {
        Ok(self
            .poll_if(|p| matches!(p, Payload::Event(e) if e.is_priority()))?
            .and_then(|polled| match polled.payload {
                Payload::Event(e) => Some(e),
                Payload::Data(_) => None,
            }))
    }

    /// Takes the front element if the view is readable and `take` accepts it.
    fn poll_if(&self, take: impl Fn(&Payload) -> bool) -> Result<Option<Polled>, NetworkError> {
        let sub = self.sub();
        let polled = {
            let mut st = sub.state.lock();
            if st.released {
                return Err(NetworkError::PartitionReleased {
                    partition: self.partition.id,
                });
            }
            if st.blocked {
                return Ok(None);
            }
            match st.queue.front() {
                Some(p) if take(p) => {}
                _ => return Ok(None),
            }
            let payload = st
                .queue
                .pop_front()
                .expect("front() was Some under the same lock");
            match &payload {
                Payload::Data(_) => {
                    st.data_backlog -= 1;
                    sub.backlog_hint.store(st.data_backlog, Ordering::Relaxed);
                }
                Payload::Event(e) if e.is_blocking() => st.blocked = true,
                Payload::Event(_) => {}
            }
            Polled {
                payload,
                backlog: st.data_backlog,
                more_available: !st.blocked && !st.queue.is_empty(),
            }
        };
        match &polled.payload {
            Payload::Data(_) => {
                sub.space.notify_one();
            }
            Payload::Event(e) if e.is_blocking() => {
                sub.barrier_out.notify_all();
            }
            Payload::Event(_) => {}
        }
        Ok(Some(polled))
    }

    /// Whether the next element is a data buffer that can be read now (for credit checks).
    pub fn next_is_data(&self) -> bool {
        let st = self.sub().state.lock();
        !st.blocked && st.queue.front().is_some_and(Payload::is_data)
    }

    /// Data buffers queued.
    pub fn backlog(&self) -> u32 {
        self.sub().backlog()
    }

    /// Unblocks the view after a blocking event (Flink's `ResumeConsumption`).
    pub fn resume_consumption(&self) {
        let listener = {
            let mut st = self.sub().state.lock();
            let was_blocked = std::mem::replace(&mut st.blocked, false);
            if was_blocked && !st.queue.is_empty() {
                st.listener.clone()
            } else {
                None
            }
        };
        if let Some(l) = listener {
            l();
        }
    }
}

impl Drop for SubpartitionView {
    fn drop(&mut self) {
        let sub = self.sub();
        sub.state.lock().has_reader = false;
        sub.release();
    }
}

/// Registry of the result partitions produced in this process, for remote and local
/// partition requests.
#[derive(Debug, Default, Clone)]
pub struct PartitionManager {
    partitions: Arc<DashMap<PartitionId, Arc<ResultPartition>>>,
}

impl PartitionManager {
    /// Registers a partition; fails if the id is taken.
    pub fn register(&self, partition: Arc<ResultPartition>) -> Result<(), NetworkError> {
        match self.partitions.entry(partition.id()) {
            dashmap::mapref::entry::Entry::Occupied(_) => Err(NetworkError::DuplicatePartition {
                partition: partition.id(),
            }),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(partition);
                Ok(())
            }
        }
    }

    /// Looks a partition up.
    pub fn get(&self, id: PartitionId) -> Result<Arc<ResultPartition>, NetworkError> {
        self.partitions
            .get(&id)
            .map(|p| p.clone())
            .ok_or(NetworkError::PartitionNotFound { partition: id })
    }

    /// Removes (and releases) a partition.
    pub fn release(&self, id: PartitionId) {
        if let Some((_, p)) = self.partitions.remove(&id) {
            p.release();
        }
    }

    /// Number of registered partitions.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Whether no partition is registered.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channel_selector::ChannelSelector;
    use crate::config::{BufferTimeout, NetworkConfig};
    use crate::environment::NetworkEnvironment;
    use crate::metrics::TaskIoMetrics;
    use crate::record_writer::RecordWriter;

    fn setup(id: u128) -> (NetworkEnvironment, Arc<ResultPartition>, RecordWriter) {
        let env = NetworkEnvironment::new(NetworkConfig {
            memory: 64 * 4096,
            segment_size: 4096,
            ..NetworkConfig::default()
        })
        .unwrap();
        let p = env.create_partition(PartitionId(id), 2).unwrap();
        let w = RecordWriter::new(
            p.clone(),
            ChannelSelector::Forward,
            BufferTimeout::Never,
            Arc::new(TaskIoMetrics::default()),
            None,
        )
        .unwrap();
        (env, p, w)
    }

    fn view(p: &Arc<ResultPartition>, index: u32) -> SubpartitionView {
        p.create_view_with_priority(index, Arc::new(|| {}), Some(Arc::new(|| {})))
            .unwrap()
    }

    fn next(v: &SubpartitionView) -> Payload {
        v.poll_next(true).unwrap().expect("readable").payload
    }

    fn barrier(id: u64, alignment: Alignment) -> Event {
        Event::CheckpointBarrier {
            id,
            timestamp_ms: 1,
            options: CheckpointOptions {
                kind: CheckpointKind::Checkpoint,
                alignment,
            },
        }
    }

    #[test]
    fn a_timeoutable_barrier_still_queued_at_its_deadline_overtakes_the_data_before_it() {
        let (_env, p, mut w) = setup(1);
        let (v0, v1) = (view(&p, 0), view(&p, 1));
        w.emit_to(0, b"a").unwrap();
        w.flush_all().unwrap();
        w.emit_to(0, b"b").unwrap();
        w.emit_to(1, b"c").unwrap();
        let queued = w
            .broadcast_timeoutable_barrier(5, 1, CheckpointKind::Checkpoint)
            .unwrap();
        w.emit_to(0, b"after").unwrap();
        w.flush_all().unwrap();
        // Channel 1 is read past its barrier (and blocks); channel 0 is backpressured.
        assert!(matches!(next(&v1), Payload::Data(_)));
        assert!(matches!(next(&v1), Payload::Event(e) if e == barrier(5, Alignment::Aligned)));
        let overtaken = queued.settle(Instant::now() + Duration::from_millis(5));
        assert_eq!(
            overtaken[1],
            Vec::<u8>::new(),
            "channel 1 sent its barrier in time"
        );
        // The bytes of "a" and "b" (two buffers), each length-prefixed.
        assert_eq!(
            overtaken[0],
            [&1u32.to_le_bytes()[..], b"a", &1u32.to_le_bytes(), b"b"].concat()
        );
        assert_eq!(
            v0.poll_priority().unwrap(),
            Some(barrier(5, Alignment::Unaligned)),
            "the unaligned barrier is first now"
        );
        let data: Vec<usize> = std::iter::from_fn(|| v0.poll_next(true).unwrap())
            .map(|p| match p.payload {
                Payload::Data(b) => b.len(),
                Payload::Event(e) => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            data,
            vec![5, 5, 9],
            "the overtaken buffers follow, then the rest"
        );
        assert_eq!(p.subpartition(0).unwrap().backlog(), 0);
    }

    #[test]
    fn settling_waits_for_the_barriers_to_leave_and_then_overtakes_nothing() {
        let (_env, p, mut w) = setup(2);
        let (v0, v1) = (view(&p, 0), view(&p, 1));
        w.emit_to(0, b"a").unwrap();
        let queued = w
            .broadcast_timeoutable_barrier(6, 1, CheckpointKind::Checkpoint)
            .unwrap();
        let settle = std::thread::spawn(move || {
            let started = Instant::now();
            let overtaken = queued.settle(Instant::now() + Duration::from_secs(30));
            (overtaken, started.elapsed())
        });
        assert!(matches!(next(&v0), Payload::Data(_)));
        assert!(matches!(next(&v0), Payload::Event(e) if e.is_blocking()));
        assert!(matches!(next(&v1), Payload::Event(e) if e.is_blocking()));
        let (overtaken, waited) = settle.join().unwrap();
        assert!(overtaken.iter().all(Vec::is_empty));
        assert!(
            waited < Duration::from_secs(30),
            "woken when the last barrier left"
        );
    }

    #[test]
    fn settling_a_released_partition_overtakes_nothing() {
        let (_env, p, mut w) = setup(3);
        w.emit_to(0, b"a").unwrap();
        let queued = w
            .broadcast_timeoutable_barrier(7, 1, CheckpointKind::Checkpoint)
            .unwrap();
        p.release();
        let overtaken = queued.settle(Instant::now() + Duration::from_secs(30));
        assert!(overtaken.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_converted_barrier_stays_behind_the_events_before_it() {
        let (_env, p, mut w) = setup(4);
        let v0 = view(&p, 0);
        w.emit_to(0, b"a").unwrap();
        w.broadcast_event(Event::CancelCheckpointMarker { id: 4 })
            .unwrap();
        w.emit_to(0, b"b").unwrap();
        let queued = w
            .broadcast_timeoutable_barrier(8, 1, CheckpointKind::Checkpoint)
            .unwrap();
        let overtaken = queued.settle(Instant::now());
        assert_eq!(overtaken[0], [&1u32.to_le_bytes()[..], b"b"].concat());
        assert!(matches!(next(&v0), Payload::Data(_)));
        assert!(matches!(
            next(&v0),
            Payload::Event(Event::CancelCheckpointMarker { id: 4 })
        ));
        assert!(matches!(next(&v0), Payload::Event(e) if e == barrier(8, Alignment::Unaligned)));
        assert!(matches!(next(&v0), Payload::Data(_)));
        assert!(v0.poll_next(true).unwrap().is_none());
    }
}
