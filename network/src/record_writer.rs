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
//! When the partition's pool has no free buffer, or the target subpartition already
//! queues `max-buffers-per-channel` buffers, the writer's thread waits: that is
//! backpressure, and the waiting time is added to `backPressuredTimeMsPerSecond`.
//!
//! A writer belongs to one task thread (`&mut self` everywhere). Metrics are published
//! once per finished buffer and on flush, not per record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::buffer_pool::Buffer;
use crate::channel_selector::{ChannelSelector, Selection};
use crate::config::BufferTimeout;
use crate::error::NetworkError;
use crate::event::Event;
use crate::flusher::{FlushListener, OutputFlusher};
use crate::metrics::TaskIoMetrics;
use crate::partition::ResultPartition;
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

    /// Emits a record to the channel(s) chosen by the selector (key hash 0).
    #[inline]
    pub fn emit(&mut self, record: &[u8]) -> Result<(), NetworkError> {
        self.emit_keyed(record, 0)
    }

    /// Emits a record whose key hashes to `key_hash` (used by the key-group selector).
    #[inline]
    pub fn emit_keyed(&mut self, record: &[u8], key_hash: u64) -> Result<(), NetworkError> {
        self.check_open()?;
        match self.selector.select(key_hash, self.channels) {
            Selection::One(c) => self.write_to(c, record)?,
            Selection::All => {
                for c in 0..self.channels {
                    self.write_to(c, record)?;
                }
            }
        }
        self.after_record()
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

    /// Emits a record to every channel, whatever the selector.
    pub fn broadcast_emit(&mut self, record: &[u8]) -> Result<(), NetworkError> {
        self.check_open()?;
        for c in 0..self.channels {
            self.write_to(c, record)?;
        }
        self.after_record()
    }

    /// Serializes a record with `serialize` into a reused scratch buffer, then emits it:
    /// no allocation per record once the scratch buffer has grown.
    pub fn emit_with(
        &mut self,
        key_hash: u64,
        serialize: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), NetworkError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        serialize(&mut scratch);
        let result = self.emit_keyed(&scratch, key_hash);
        self.scratch = scratch;
        result
    }

    #[inline]
    fn write_to(&mut self, channel: u32, record: &[u8]) -> Result<(), NetworkError> {
        self.pending_records += 1;
        self.pending_bytes += (record.len() + LENGTH_PREFIX) as u64;
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
            self.flush_all()?;
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

    /// Queues every partly filled buffer and publishes metrics.
    pub fn flush_all(&mut self) -> Result<(), NetworkError> {
        self.flush_requested.store(false, Ordering::Relaxed);
        for c in 0..self.channels {
            self.flush_channel(c)?;
        }
        self.publish_metrics();
        Ok(())
    }

    /// Flushes if the output flusher asked for it; an idle task calls this when woken by
    /// its flush listener. Returns whether it flushed.
    pub fn flush_if_requested(&mut self) -> Result<bool, NetworkError> {
        if self.flush_requested.load(Ordering::Relaxed) {
            self.flush_all()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn publish_metrics(&mut self) {
        if self.pending_records > 0 {
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
