//! The producer's entry point: [`RecordWriter`] serializes records into the subpartitions
//! of a [`ResultPartition`].
//!
//! Records are opaque bytes to the network. The writer keeps one current [`Buffer`] per
//! subpartition and appends length-prefixed records to it (see
//! [`serializer`](crate::serializer)); full buffers are queued at once, partly filled ones
//! when a flush is due:
//!
//! * [`BufferTimeout::EveryRecord`]: after every record, the target channel is flushed;
//! * [`BufferTimeout::Interval`]: an [`OutputFlusher`] raises a flag, honoured at the next
//!   record or by [`RecordWriter::flush_if_requested`] from an idle task;
//! * [`BufferTimeout::Never`]: only full buffers (and explicit flushes, events, finish).
//!
//! # Flush compaction
//!
//! A flush would otherwise hand the consumer a whole segment for a few bytes: with 1000
//! channels and a 1 ms timeout the pool fills with nearly empty buffers, and every
//! remote credit (counted in buffers) carries a few bytes. Flink avoids this by letting the
//! consumer read a buffer that is still being written; without `unsafe` a segment cannot be
//! shared while written, so [`RecordWriter::flush_all`] compacts instead: the bytes of each
//! current buffer filled at most to a quarter are copied, one after another, into a *pack*
//! segment taken from the same pool; the writer keeps its own segment and fills it again.
//! When the flush ends (or the pack is full) the pack is frozen once and every channel
//! gets its slice, queued as that channel's data buffer. A record never moves between
//! channels and every slice is queued before the channel is written again, so order is
//! kept. Memory stays bounded because packs are ordinary pool segments (a pack returns to
//! the pool when the last slice is consumed). Fuller buffers, channels whose queue is
//! already at `max-buffers-per-channel`, and flushes that find the pool empty fall back
//! to handing over the buffer itself, as before.
//!
//! # Timed flushes follow the consumer
//!
//! A flush requested by the output flusher skips a channel whose consumer has not yet
//! taken the data queued before: that consumer is behind, so one more small buffer would
//! not reach it sooner; the bytes stay in the writer's buffer until a later tick finds the
//! queue empty, or the buffer fills. Queued buffers per channel thus follow what the
//! consumer (or, for a remote channel, its credit) can take instead of one per tick —
//! Flink gets the same effect from a flush that adds nothing to a subpartition that
//! already has readable data. The cost is latency only while the consumer lags: at most
//! one more timeout after it caught up. Explicit flushes ([`RecordWriter::flush_all`],
//! events, [`RecordWriter::finish`]) never skip.
//!
//! When the partition's pool has no free buffer, or the target subpartition already
//! queues `max-buffers-per-channel` buffers, the writer's thread waits: that is
//! backpressure, and the waiting time is added to `backPressuredTimeMsPerSecond`.
//!
//! A writer belongs to one task thread (`&mut self` everywhere). Metrics are published
//! once per finished buffer and on flush, not per record. Records out count what the
//! task emitted: a broadcast record once (Flink's `numRecordsOut`), in-band control
//! elements ([`RecordWriter::broadcast_control`]) and events not at all; bytes out count
//! everything written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::buffer_pool::Buffer;
use crate::channel_selector::{ChannelSelector, Selection};
use crate::config::BufferTimeout;
use crate::error::NetworkError;
use crate::event::{CheckpointKind, Event};
use crate::flusher::{FlushListener, OutputFlusher};
use crate::metrics::TaskIoMetrics;
use crate::partition::{QueuedBarrier, ResultPartition};
use crate::serializer::{serialize_record, BufferSink, LENGTH_PREFIX};

/// Serializes records into a result partition.
pub struct RecordWriter {
    partition: Arc<ResultPartition>,
    selector: ChannelSelector,
    channels: u32,
    current: Vec<Option<Buffer>>,
    flush_every_record: bool,
    flush_requested: Arc<AtomicBool>,
    flusher: Option<OutputFlusher>,
    metrics: Arc<TaskIoMetrics>,
    scratch: Vec<u8>,
    /// Slices of the pack being filled by a flush: `(channel, start, end)`.
    pack_slices: Vec<(u32, u32, u32)>,
    pending_records: u64,
    pending_bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("partition", &self.partition.id())
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

struct Sink<'a> {
    partition: &'a ResultPartition,
    index: u32,
    metrics: &'a TaskIoMetrics,
}

impl BufferSink for Sink<'_> {
    fn request(&mut self) -> Result<Buffer, NetworkError> {
        let sub = self.partition.subpartition(self.index)?;
        let start = Instant::now();
        let mut waited = sub.wait_for_capacity(self.partition.max_buffers_per_channel());
        let pool = self.partition.pool();
        let buffer = match pool.try_request()? {
            Some(b) => b,
            None => {
                waited = true;
                pool.request_blocking()?
            }
        };
        if waited {
            self.metrics.add_back_pressured(start.elapsed());
        }
        Ok(buffer)
    }

    fn finish(&mut self, buffer: Buffer) -> Result<(), NetworkError> {
        self.partition.add_buffer(self.index, buffer.freeze())?;
        Ok(())
    }
}

/// Flushed buffers filled to at most `segment / COMPACT_DIVISOR` bytes are compacted.
///
/// A quarter keeps the copy cheap (at most 8 KiB of a 32 KiB segment) and a pack at least
/// three quarters full; fuller buffers are worth their segment as they are.
const COMPACT_DIVISOR: usize = 4;

/// Freezes a flush's pack and queues every channel's slice of it.
fn queue_pack(
    partition: &ResultPartition,
    pack: Option<Buffer>,
    slices: &mut Vec<(u32, u32, u32)>,
) -> Result<(), NetworkError> {
    let Some(pack) = pack else {
        return Ok(());
    };
    let bytes = pack.freeze();
    for (c, start, end) in slices.drain(..) {
        partition.add_buffer(c, bytes.slice(start as usize..end as usize))?;
    }
    Ok(())
}

impl RecordWriter {
    /// Creates a writer. With [`BufferTimeout::Interval`] it starts an output flusher
    /// thread named after the partition; `flush_listener` is called on each of its ticks.
    pub fn new(
        partition: Arc<ResultPartition>,
        selector: ChannelSelector,
        timeout: BufferTimeout,
        metrics: Arc<TaskIoMetrics>,
        flush_listener: Option<FlushListener>,
    ) -> Result<Self, NetworkError> {
        let channels = partition.num_subpartitions();
        if channels == 0 {
            return Err(NetworkError::config(
                "a record writer needs at least one channel",
            ));
        }
        metrics.watch_output_pool(partition.pool());
        let flush_requested = Arc::new(AtomicBool::new(false));
        let flusher = match timeout {
            BufferTimeout::Interval(interval) => Some(
                OutputFlusher::start(
                    format!("output-flusher-{}", partition.id()),
                    interval,
                    flush_requested.clone(),
                    flush_listener,
                )
                .map_err(|e| NetworkError::config(format!("cannot start output flusher: {e}")))?,
            ),
            _ => None,
        };
        Ok(RecordWriter {
            current: (0..channels).map(|_| None).collect(),
            partition,
            selector,
            channels,
            flush_every_record: timeout == BufferTimeout::EveryRecord,
            flush_requested,
            flusher,
            metrics,
            scratch: Vec::new(),
            pack_slices: Vec::new(),
            pending_records: 0,
            pending_bytes: 0,
            finished: false,
        })
    }

    /// The partition written to.
    pub fn partition(&self) -> &Arc<ResultPartition> {
        &self.partition
    }

    /// Whether an output flusher thread runs for this writer.
    pub fn has_flusher(&self) -> bool {
        self.flusher.is_some()
    }

    /// Emits a record to the channel(s) chosen by the selector (channel hint 0).
    #[inline]
    pub fn emit(&mut self, record: &[u8]) -> Result<(), NetworkError> {
        self.emit_keyed(record, 0)
    }

    /// Emits a record with a channel hint: on a keyed edge
    /// ([`ChannelSelector::Keyed`](crate::ChannelSelector::Keyed)) `channel` is the target
    /// channel the caller computed from the record's key; other selectors ignore it.
    /// A channel outside the partition is [`NetworkError::SubpartitionOutOfRange`].
    #[inline]
    pub fn emit_keyed(&mut self, record: &[u8], channel: u32) -> Result<(), NetworkError> {
        self.check_open()?;
        match self.selector.select(channel, self.channels) {
            Selection::One(c) => {
                if c >= self.channels {
                    return Err(NetworkError::SubpartitionOutOfRange {
                        index: c,
                        count: self.channels,
                    });
                }
                self.write_to(c, record)?
            }
            Selection::All => self.write_to_all(record)?,
        }
        self.pending_records += 1;
        self.after_record()
    }

    fn write_to_all(&mut self, record: &[u8]) -> Result<(), NetworkError> {
        for c in 0..self.channels {
            self.write_to(c, record)?;
        }
        Ok(())
    }

    /// Emits a record to one specific channel, bypassing the selector.
    pub fn emit_to(&mut self, channel: u32, record: &[u8]) -> Result<(), NetworkError> {
        if channel >= self.channels {
            return Err(NetworkError::SubpartitionOutOfRange {
                index: channel,
                count: self.channels,
            });
        }
        self.check_open()?;
        self.write_to(channel, record)?;
        self.pending_records += 1;
        self.after_record()
    }

    #[inline]
    fn check_open(&self) -> Result<(), NetworkError> {
        if self.finished {
            return Err(NetworkError::Closed {
                what: "record writer",
            });
        }
        Ok(())
    }

    /// Emits a record to every channel, whatever the selector. It counts as one record
    /// out, as in Flink's `numRecordsOut`.
    pub fn broadcast_emit(&mut self, record: &[u8]) -> Result<(), NetworkError> {
        self.check_open()?;
        self.write_to_all(record)?;
        self.pending_records += 1;
        self.after_record()
    }

    /// Emits an in-band control element (a watermark, a watermark status: framed like a
    /// record so it stays in order with the records) to every channel. Its bytes count
    /// as bytes out; it is not a record, so records out do not change.
    pub fn broadcast_control(&mut self, element: &[u8]) -> Result<(), NetworkError> {
        self.check_open()?;
        self.write_to_all(element)?;
        self.after_record()
    }

    /// Serializes a record with `serialize` into a reused scratch buffer, then emits it:
    /// no allocation per record once the scratch buffer has grown.
    /// `channel` is the channel hint of [`emit_keyed`](Self::emit_keyed).
    pub fn emit_with(
        &mut self,
        channel: u32,
        serialize: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), NetworkError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        serialize(&mut scratch);
        let result = self.emit_keyed(&scratch, channel);
        self.scratch = scratch;
        result
    }

    /// Fast path: the record fits the channel's current buffer with room to spare.
    #[inline(always)]
    fn write_to(&mut self, channel: u32, record: &[u8]) -> Result<(), NetworkError> {
        self.pending_bytes += (record.len() + LENGTH_PREFIX) as u64;
        if let Some(Some(buf)) = self.current.get_mut(channel as usize) {
            // The length fits in u32: it is below the segment size.
            if !self.flush_every_record
                && buf.try_append_prefixed((record.len() as u32).to_le_bytes(), record)
            {
                return Ok(());
            }
        }
        self.write_to_slow(channel, record)
    }

    /// Rotates buffers (possibly waiting: backpressure), spans records, flushes per record.
    #[inline(never)]
    fn write_to_slow(&mut self, channel: u32, record: &[u8]) -> Result<(), NetworkError> {
        let mut sink = Sink {
            partition: &self.partition,
            index: channel,
            metrics: &self.metrics,
        };
        serialize_record(&mut self.current[channel as usize], record, &mut sink)?;
        if self.flush_every_record {
            self.flush_channel(channel)?;
        }
        Ok(())
    }

    #[inline]
    fn after_record(&mut self) -> Result<(), NetworkError> {
        if self.flush_requested.load(Ordering::Relaxed) {
            self.flush(true)?;
        } else if self.pending_records >= 4096 {
            self.publish_metrics();
        }
        Ok(())
    }

    fn flush_channel(&mut self, channel: u32) -> Result<(), NetworkError> {
        if let Some(b) = self.current[channel as usize].take_if(|b| !b.is_empty()) {
            self.partition.add_buffer(channel, b.freeze())?;
        }
        Ok(())
    }

    /// Queues every partly filled buffer (compacting small ones, see the module docs) and
    /// publishes metrics.
    pub fn flush_all(&mut self) -> Result<(), NetworkError> {
        self.flush(false)
    }

    /// Flushes; a timed flush (`skip_queued`) leaves channels alone whose consumer has
    /// not taken the data queued before (see the module docs).
    fn flush(&mut self, skip_queued: bool) -> Result<(), NetworkError> {
        self.flush_requested.store(false, Ordering::Relaxed);
        let partition = &*self.partition;
        let limit = partition.pool().segment_size() / COMPACT_DIVISOR;
        let max_queued = partition.max_buffers_per_channel();
        let slices = &mut self.pack_slices;
        let mut pack: Option<Buffer> = None;
        for (c, current) in (0u32..).zip(self.current.iter_mut()) {
            let Some(buf) = current.as_mut().filter(|b| !b.is_empty()) else {
                continue;
            };
            let queued = partition.subpartition(c)?.backlog_hint();
            if queued > 0 && skip_queued {
                continue;
            }
            let len = buf.len();
            if len <= limit && queued < max_queued {
                if pack.as_ref().is_some_and(|p| p.remaining() < len) {
                    queue_pack(partition, pack.take(), slices)?;
                }
                if pack.is_none() {
                    pack = partition.pool().try_request()?;
                }
                if let Some(p) = pack.as_mut() {
                    let start = p.len() as u32;
                    p.append(buf.as_slice());
                    buf.clear();
                    slices.push((c, start, p.len() as u32));
                    continue;
                }
            }
            if let Some(b) = current.take() {
                partition.add_buffer(c, b.freeze())?;
            }
        }
        queue_pack(partition, pack, slices)?;
        self.publish_metrics();
        Ok(())
    }

    /// Flushes if the output flusher asked for it; an idle task calls this when woken by
    /// its flush listener. Returns whether it flushed.
    pub fn flush_if_requested(&mut self) -> Result<bool, NetworkError> {
        if self.flush_requested.load(Ordering::Relaxed) {
            self.flush(true)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn publish_metrics(&mut self) {
        if self.pending_records > 0 || self.pending_bytes > 0 {
            self.metrics
                .add_out(self.pending_records, self.pending_bytes);
            self.pending_records = 0;
            self.pending_bytes = 0;
        }
    }

    /// Flushes, then sends `event` on every channel, after all records written so far.
    pub fn broadcast_event(&mut self, event: Event) -> Result<(), NetworkError> {
        self.flush_all()?;
        self.partition.broadcast_event(event);
        Ok(())
    }

    /// Flushes, then sends `event` on every channel ahead of the data still queued there
    /// (an unaligned checkpoint barrier); returns per channel the bytes it overtook, a
    /// copy: the buffers themselves are still sent after the event.
    pub fn broadcast_priority_event(&mut self, event: Event) -> Result<Vec<Vec<u8>>, NetworkError> {
        self.flush_all()?;
        Ok(self.partition.broadcast_priority_event(event))
    }

    /// Whether writing can go on without waiting ([`ResultPartition::is_available`]).
    pub fn is_available(&self) -> bool {
        self.partition.is_available()
    }

    /// Flushes and queues the aligned barrier of checkpoint `id` on every channel as a
    /// timeoutable barrier: the returned handle turns it unaligned where it is still
    /// queued at a deadline ([`ResultPartition::broadcast_timeoutable_barrier`]).
    pub fn broadcast_timeoutable_barrier(
        &mut self,
        id: u64,
        timestamp_ms: i64,
        kind: CheckpointKind,
    ) -> Result<QueuedBarrier, NetworkError> {
        self.flush_all()?;
        Ok(self
            .partition
            .broadcast_timeoutable_barrier(id, timestamp_ms, kind))
    }

    /// Queues `bytes` on `channel` as they are, before anything written afterwards: the
    /// overtaken data of an unaligned checkpoint that this writer's task was restored
    /// from. The bytes are the channel's byte stream (length-prefixed records, possibly
    /// starting or ending inside a record), so they are cut into buffers anywhere. Call
    /// it before writing records; may wait for buffers (backpressure).
    pub fn write_raw(&mut self, channel: u32, mut bytes: &[u8]) -> Result<(), NetworkError> {
        self.flush_channel(channel)?;
        let mut sink = Sink {
            partition: &self.partition,
            index: channel,
            metrics: &self.metrics,
        };
        while !bytes.is_empty() {
            let mut buffer = sink.request()?;
            let n = buffer.append(bytes);
            bytes = &bytes[n..];
            sink.finish(buffer)?;
        }
        Ok(())
    }

    /// Flushes and sends end-of-partition on every channel; the writer accepts no more
    /// records afterwards.
    pub fn finish(&mut self) -> Result<(), NetworkError> {
        if !self.finished {
            self.broadcast_event(Event::EndOfPartition)?;
            self.finished = true;
            self.flusher = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkConfig;
    use crate::environment::NetworkEnvironment;
    use crate::input_gate::{InputGate, ReaderItem, RecordReader};
    use crate::partition::PartitionId;
    use proptest::prelude::*;
    use std::time::Duration;

    const SEGMENT: u64 = 4096;

    fn env(segments: u64) -> NetworkEnvironment {
        NetworkEnvironment::new(NetworkConfig {
            memory: segments * SEGMENT,
            segment_size: SEGMENT as u32,
            ..NetworkConfig::default()
        })
        .unwrap()
    }

    fn writer(p: &Arc<ResultPartition>) -> RecordWriter {
        RecordWriter::new(
            p.clone(),
            ChannelSelector::Forward,
            BufferTimeout::Never,
            Arc::new(TaskIoMetrics::default()),
            None,
        )
        .unwrap()
    }

    fn gate(env: &NetworkEnvironment, p: &Arc<ResultPartition>) -> InputGate {
        let mut b = env
            .input_gate_builder(Arc::new(TaskIoMetrics::default()))
            .unwrap();
        for i in 0..p.num_subpartitions() {
            b.add_local(p, i).unwrap();
        }
        b.build()
    }

    /// Reads everything readable now, per channel, in arrival order.
    fn read_all(r: &mut RecordReader, out: &mut [Vec<Vec<u8>>]) {
        while let Some(item) = r.next_timeout(Duration::ZERO).unwrap() {
            if let ReaderItem::Record { channel, record } = item {
                out[channel as usize].push(record.to_vec());
            }
        }
    }

    #[test]
    fn small_flushed_buffers_share_one_pack_and_writers_keep_their_segments() {
        let env = env(64);
        let p = env.create_partition(PartitionId(1), 8).unwrap();
        let mut w = writer(&p);
        for c in 0..8u32 {
            w.emit_to(c, &c.to_le_bytes()).unwrap();
        }
        w.flush_all().unwrap();
        // Eight current buffers stay with the writer; the eight flushes share one pack.
        assert_eq!(p.pool().outstanding(), 9);
        assert_eq!(p.total_backlog(), 8);
        let mut r = RecordReader::new(gate(&env, &p));
        let mut got = vec![Vec::new(); 8];
        read_all(&mut r, &mut got);
        for (c, records) in got.iter().enumerate() {
            assert_eq!(records, &[(c as u32).to_le_bytes().to_vec()]);
        }
        // Every slice consumed: the pack went home, the writer's segments did not move.
        assert_eq!(p.pool().outstanding(), 8);
        // The kept segments are written again from the start.
        w.emit_to(3, b"again").unwrap();
        w.flush_all().unwrap();
        read_all(&mut r, &mut got);
        assert_eq!(got[3].last().unwrap(), b"again");
    }

    #[test]
    fn full_enough_buffers_and_full_queues_are_handed_over_whole() {
        let env = env(64);
        let p = env.create_partition(PartitionId(2), 2).unwrap();
        let mut w = writer(&p);
        // Channel 0: more than a quarter of a segment, handed over as it is.
        w.emit_to(0, &[1u8; SEGMENT as usize / 2]).unwrap();
        w.flush_all().unwrap();
        assert_eq!(p.pool().outstanding(), 1, "no pack for a half-full buffer");
        // Channel 1: its queue at max-buffers-per-channel, so a flush may not add a pack
        // slice behind it (which would pin other channels' bytes).
        for _ in 0..p.max_buffers_per_channel() {
            w.emit_to(1, b"x").unwrap();
            w.flush_all().unwrap();
        }
        assert_eq!(
            p.subpartition(1).unwrap().backlog(),
            p.max_buffers_per_channel()
        );
        let before = p.pool().outstanding();
        w.emit_to(1, b"y").unwrap();
        w.flush_all().unwrap();
        assert_eq!(
            p.pool().outstanding(),
            before,
            "the buffer itself was queued"
        );
        assert!(w.current[1].is_none());
    }

    #[test]
    fn memory_stays_bounded_with_many_channels_and_tiny_flushes() {
        // 1000 channels, 8 flushes of one 8-byte record each, nothing consumed: without
        // compaction this queues 8,000 nearly empty segments.
        let channels = 1000u32;
        let rounds = 8u64;
        let env = env(4000);
        let p = env.create_partition(PartitionId(3), channels).unwrap();
        let mut w = writer(&p);
        let mut r = RecordReader::new(gate(&env, &p));
        for round in 0..rounds {
            for c in 0..channels {
                w.emit_to(c, &round.to_le_bytes()).unwrap();
            }
            w.flush_all().unwrap();
        }
        // current buffers + packs of 1000 × 12 bytes (three 4 KiB segments per flush).
        let packs = rounds as usize * (channels as usize * 12).div_ceil(SEGMENT as usize);
        assert!(
            p.pool().outstanding() <= channels as usize + packs,
            "{} segments in use",
            p.pool().outstanding()
        );
        assert!(env.buffer_pool().peak_allocated_segments() <= channels as usize + packs + 2);
        let mut got = vec![Vec::new(); channels as usize];
        read_all(&mut r, &mut got);
        for records in &got {
            let want: Vec<Vec<u8>> = (0..rounds).map(|i| i.to_le_bytes().to_vec()).collect();
            assert_eq!(records, &want);
        }
        w.finish().unwrap();
        drop((r, w));
        env.release_partition(PartitionId(3));
        drop(p);
        assert_eq!(env.buffer_pool().segments_in_use(), 0);
    }

    #[test]
    fn flush_with_an_empty_pool_hands_buffers_over_instead_of_waiting() {
        let env = env(16);
        let p = env.create_partition(PartitionId(4), 2).unwrap();
        let mut r = RecordReader::new(gate(&env, &p));
        let mut w = writer(&p);
        w.emit_to(0, b"a").unwrap();
        w.emit_to(1, b"b").unwrap();
        // Someone else holds every other segment: no pack is available.
        let mut spare = Vec::new();
        while let Some(b) = p.pool().try_request().unwrap() {
            spare.push(b);
        }
        w.flush_all().unwrap();
        assert_eq!(p.total_backlog(), 2);
        assert!(w.current.iter().all(Option::is_none));
        drop(spare);
        let mut got = vec![Vec::new(); 2];
        read_all(&mut r, &mut got);
        assert_eq!(got, [vec![b"a".to_vec()], vec![b"b".to_vec()]]);
    }

    #[test]
    fn timed_flush_skips_channels_whose_consumer_is_behind_explicit_flush_does_not() {
        let env = env(64);
        let p = env.create_partition(PartitionId(6), 2).unwrap();
        // A flusher that never fires on its own: the test raises its flag.
        let mut w = RecordWriter::new(
            p.clone(),
            ChannelSelector::Forward,
            BufferTimeout::Interval(Duration::from_secs(3600)),
            Arc::new(TaskIoMetrics::default()),
            None,
        )
        .unwrap();
        // One reader per channel, so each consumer's progress is under the test's control.
        let mut readers: Vec<RecordReader> = (0..2)
            .map(|c| {
                let mut b = env
                    .input_gate_builder(Arc::new(TaskIoMetrics::default()))
                    .unwrap();
                b.add_local(&p, c).unwrap();
                RecordReader::new(b.build())
            })
            .collect();
        let mut got = vec![Vec::new(); 2];
        let mut read = |c: usize, got: &mut Vec<Vec<Vec<u8>>>| {
            while let Some(item) = readers[c].next_timeout(Duration::ZERO).unwrap() {
                if let ReaderItem::Record { record, .. } = item {
                    got[c].push(record.to_vec());
                }
            }
        };
        let timed_flush = |w: &mut RecordWriter| {
            w.flush_requested.store(true, Ordering::Relaxed);
            assert!(w.flush_if_requested().unwrap());
        };
        w.emit_to(0, b"a1").unwrap();
        w.emit_to(1, b"b1").unwrap();
        timed_flush(&mut w);
        assert_eq!(p.total_backlog(), 2);
        // Channel 1's consumer read "b1", channel 0's did not read "a1" yet.
        read(1, &mut got);
        w.emit_to(0, b"a2").unwrap();
        w.emit_to(1, b"b2").unwrap();
        timed_flush(&mut w);
        assert_eq!(p.subpartition(0).unwrap().backlog(), 1, "a2 waits");
        assert_eq!(p.subpartition(1).unwrap().backlog(), 1, "b2 flushed");
        // Once the consumer caught up, the next tick delivers.
        read(0, &mut got);
        timed_flush(&mut w);
        assert_eq!(p.subpartition(0).unwrap().backlog(), 1, "a2 flushed");
        // An explicit flush never skips.
        w.emit_to(0, b"a3").unwrap();
        w.flush_all().unwrap();
        assert_eq!(p.subpartition(0).unwrap().backlog(), 2);
        read(0, &mut got);
        read(1, &mut got);
        assert_eq!(got[0], [b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]);
        assert_eq!(got[1], [b"b1".to_vec(), b"b2".to_vec()]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(5), ..ProptestConfig::default() })]
        /// Whatever the mix of record sizes (spanning buffers or not), flushes and partial
        /// reads, each channel delivers exactly its records in order, and every segment
        /// returns to the pool.
        #[test]
        fn compaction_keeps_order_and_bytes(
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => (0u32..5, 0usize..1500).prop_map(|(c, n)| (Some(c), n)),
                    1 => Just((None, 0usize)),
                    1 => Just((None, 1usize)),
                ],
                1..200,
            ),
        ) {
            let env = env(512);
            let p = env.create_partition(PartitionId(5), 5).unwrap();
            let mut w = writer(&p);
            let mut r = RecordReader::new(gate(&env, &p));
            let mut sent = vec![Vec::new(); 5];
            let mut got = vec![Vec::new(); 5];
            for (i, op) in ops.into_iter().enumerate() {
                // A single-threaded test must read before the writer would wait for space.
                let max = p.max_buffers_per_channel();
                if (0..5).any(|c| p.subpartition(c).unwrap().backlog() + 2 >= max) {
                    read_all(&mut r, &mut got);
                }
                match op {
                    (Some(c), n) => {
                        let record: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                        w.emit_to(c, &record).unwrap();
                        sent[c as usize].push(record);
                    }
                    (None, 0) => w.flush_all().unwrap(),
                    _ => read_all(&mut r, &mut got),
                }
            }
            w.finish().unwrap();
            read_all(&mut r, &mut got);
            prop_assert!(r.gate_mut().is_finished());
            prop_assert_eq!(got, sent);
            drop((r, w));
            env.release_partition(PartitionId(5));
            drop(p);
            prop_assert_eq!(env.buffer_pool().segments_in_use(), 0);
        }
    }

    #[test]
    fn records_out_count_emitted_records_not_channels_or_control_elements() {
        let env = env(64);
        let p = env.create_partition(PartitionId(7), 4).unwrap();
        let metrics = Arc::new(TaskIoMetrics::default());
        let mut w = RecordWriter::new(
            p.clone(),
            ChannelSelector::rebalance(0),
            BufferTimeout::Never,
            metrics.clone(),
            None,
        )
        .unwrap();
        let mut r = RecordReader::new(gate(&env, &p));
        for i in 0..10u32 {
            w.emit(&i.to_le_bytes()).unwrap();
        }
        w.broadcast_emit(b"broadcast").unwrap();
        w.emit_to(2, b"to two").unwrap();
        w.broadcast_control(b"watermark").unwrap();
        w.finish().unwrap();
        assert_eq!(metrics.records_out(), 12);
        let bytes_out = metrics.snapshot(Duration::ZERO).bytes_out;
        let prefixed = |n: usize| (n + LENGTH_PREFIX) as u64;
        assert_eq!(
            bytes_out,
            10 * prefixed(4) + 4 * prefixed(9) + prefixed(6) + 4 * prefixed(9)
        );
        // The reader counts what it was told is data: control elements are taken back.
        let mut data = 0;
        while let Some(item) = r.next_timeout(Duration::from_secs(10)).unwrap() {
            if let ReaderItem::Record { record, .. } = item {
                if record == b"watermark" {
                    r.uncount_last_record();
                } else {
                    data += 1;
                }
            }
        }
        assert_eq!(data, 15);
        assert_eq!(r.gate_mut().metrics().records_in(), 15);
    }
}
