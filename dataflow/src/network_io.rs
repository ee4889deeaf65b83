//! [`TaskInput`] / [`TaskOutput`] over the real data plane ([`rill_network`]).
//!
//! A TaskExecutor deploys a subtask in three steps:
//!
//! 1. compute the subtask's input channels, in [`JobGraph::wiring`] order, with
//!    [`input_channel_specs`]: for each (input edge, upstream subtask) the producer's
//!    [`PartitionId`], the subpartition this subtask reads, and where the producer runs
//!    ([`ChannelLocation`]) (a JobMaster does the same from [`JobGraph::wiring`] when it
//!    builds deployment descriptors);
//! 2. [`create_task_io`]: creates and registers one result partition per output edge
//!    (with the subpartitions [`JobGraph::wiring`] gives it) with a [`RecordWriter`]
//!    each, and one input gate whose channel `i` reads `inputs[i]`;
//! 3. hand [`NetworkTaskIo::input`] and [`NetworkTaskIo::outputs`] to
//!    [`StreamTask::new`](crate::stream_task::StreamTask::new).
//!
//! # Ordering the deployer must respect
//!
//! * A **local** channel attaches to the producer's partition when the gate is built, so
//!   the producer's [`create_task_io`] must have run first in the same
//!   [`NetworkEnvironment`]: deploy in [`JobGraph::topological_order`]. A missing
//!   partition is an error naming it.
//! * A **remote** channel only needs the consumer's transport to be started
//!   ([`NetworkEnvironment::start_transport`]); it requests the partition from the
//!   producer's TaskExecutor and retries with backoff (`request-backoff-*`) while the
//!   producer is not deployed yet.
//!
//! # Release
//!
//! [`NetworkTaskIo::partitions`] lists the partitions created; the deployer unregisters
//! each with [`NetworkEnvironment::release_partition`]:
//!
//! * after a normal end, once the *consumers* are done: releasing discards data still
//!   queued, so not merely when the producer task finishes (in practice: at job end, or
//!   when every consumer task has ended);
//! * on cancel or failure of the job: after canceling its tasks. Queued data is
//!   dropped, a writer blocked on backpressure wakes up (its writes become no-ops), and
//!   a consumer's next read fails with [`DataflowError::ChannelClosed`].
//!
//! A [`NetworkOutput`] dropped before end of input (its task failed or was canceled, or
//! the [`NetworkTaskIo`] was dropped undeployed) releases its partition itself, for the
//! same effect; unregistering it is still the deployer's job. A release does **not**
//! wake a consumer already blocked on an empty channel (the network notifies readers
//! only when something is queued), so when a task fails the deployer must cancel the
//! tasks that consume from it; every task should be canceled anyway.
//!
//! # Cancel
//!
//! Send [`Mail::Cancel`](crate::mailbox::Mail::Cancel) to the task's mailbox: the mail
//! wakes a task blocked on its input (see below). A task blocked on *output*
//! backpressure does not read mail; it wakes when its consumers end (dropping a gate
//! releases the subpartitions it read, locally or through the remote producer's
//! driver) or when the deployer releases its partitions. So: cancel every task of the
//! job, then release its partitions. A failed [`create_task_io`] unregisters what it
//! created, but it may already have attached to (and, on failure, released) local
//! producers' subpartitions: treat it as a failed deployment of the job.
//!
//! # Wire format
//!
//! Every record and in-band element is one network record encoded with [`codec`]:
//! records go to the channel the edge's selector picks, watermarks and watermark
//! statuses ([`StreamEvent::Watermark`], [`StreamEvent::WatermarkStatus`]) are
//! broadcast as encoded elements ([`RecordWriter::broadcast_control`]), so they stay in
//! order with the records. [`StreamEvent::EndOfInput`] is *not* encoded: it is
//! [`RecordWriter::finish`], i.e. [`Event::EndOfPartition`] on every channel, and the
//! reader turns `EndOfPartition` back into `EndOfInput`. An encoded end-of-input element
//! arriving in-band is therefore a protocol error. Checkpoint barriers and cancel
//! markers are network [`Event`]s ([`TaskOutput::emit_checkpoint_event`]), delivered as
//! [`InputEvent::Barrier`] / [`InputEvent::CancelMarker`]; an aligned barrier blocks its
//! channel in the network until [`TaskInput::resume_consumption`].
//!
//! Channel selection per edge ([`channel_selector`]): forward → `Forward`, rebalance and
//! rescale → round-robin starting at the subtask index, so parallel producers spread
//! their first records, hash →
//! [`ChannelSelector::Keyed`]: the operator chain computes each record's target channel
//! with [`key_group::operator_index_for_key`](crate::key_group::operator_index_for_key)
//! over the *target* vertex's parallelism and max parallelism (rill-state's formula) and
//! passes it with the record, so the network never sees a key; broadcast → every channel.
//!
//! # Buffer timeout
//!
//! The [`StreamTask`](crate::stream_task::StreamTask) already implements
//! `execution.buffer-timeout` on its own thread: it flushes its outputs before it blocks
//! on input, when its source idles, at least every `buffer_timeout` while busy, on
//! [`Mail::FlushOutputs`](crate::mailbox::Mail::FlushOutputs) and at the end.
//! Records only reach a writer from that same thread, so a writer never holds data
//! while its task sleeps. The network's output flusher can only raise a flag that this
//! same thread must notice between records, which the task's own timer already covers:
//! it would add one thread per writer without tightening the bound (a record waits at
//! most the timeout plus one batch's processing either way). Writers are therefore
//! created with [`BufferTimeout::Never`], or [`BufferTimeout::EveryRecord`] for a zero
//! timeout ([`writer_buffer_timeout`]), and without a flush listener.
//!
//! # Waking a blocked input
//!
//! The input gate parks the task thread on its own condition variable; the
//! [waker](TaskInput::waker) is the gate's [`GateWaker`], which makes the blocked (or
//! the next) read return at once, and the input answers [`InputEvent::MailboxWake`].
//! Wake-ups before a read coalesce; no polling loop runs.
//!
//! # Metrics
//!
//! One [`TaskIoMetrics`] per task is shared by its writers and its gate, so it holds the
//! network's counts: bytes in/out (everything, in-band elements included), backpressured
//! and idle time, and records in/out as Flink counts them — data records only. In-band
//! watermark and status elements are not records: the writer sends them with
//! [`RecordWriter::broadcast_control`], which leaves records out alone, and the reader
//! takes them back out of records in ([`RecordReader::uncount_last_record`]) once it has
//! decoded one. (Counting them made every vertex over-count by the watermarks each
//! upstream subtask broadcast — its final watermark alone adds parallelism² records.)
//! A record a broadcast edge sends to every channel counts once out, and once in at
//! each consumer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rill_network::partition::{QueuedBarrier, ResultPartition};
use rill_network::{
    BufferTimeout, ChannelSelector, Event, GateWaker, InputGateBuilder, NetworkEnvironment,
    NetworkError, PartitionId, ReaderItem, RecordReader, RecordWriter, TaskIoMetrics,
};

use crate::checkpoint::{CheckpointBarrier, CheckpointEvent};
use crate::codec;
use crate::element::{StreamElement, StreamEvent, StreamRecord};
use crate::error::{DataflowError, Result};
use crate::ids::VertexId;
use crate::job_graph::{JobGraph, JobVertex};
use crate::mailbox::InputWaker;
use crate::partitioning::Partitioning;
use crate::stream_task::TaskConfig;
use crate::task_io::{InputEvent, TaskInput, TaskOutput};

/// Where an input channel's producer runs, as the deployer decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelLocation {
    /// In this process: the channel reads the producer's partition from the same
    /// [`NetworkEnvironment`] without copying.
    Local,
    /// In the TaskExecutor whose data plane listens on this address (QUIC, credit-based).
    Remote(SocketAddr),
}

/// One input channel of a subtask: which subpartition of which partition it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputChannelSpec {
    /// The producer subtask's partition for this edge.
    pub partition: PartitionId,
    /// The subpartition of `partition` meant for this subtask
    /// ([`InputChannel::subpartition`](crate::wiring::InputChannel::subpartition)).
    pub subpartition: u32,
    /// Where the producer runs.
    pub location: ChannelLocation,
}

/// One output edge: the partition to create. Its number of subpartitions comes from
/// [`JobGraph::wiring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// The id the partition is registered under (unique in its environment; consumers
    /// name it in their [`InputChannelSpec`]s).
    pub partition: PartitionId,
}

/// A subtask's data-plane endpoints, ready for [`StreamTask::new`](crate::stream_task::StreamTask::new).
pub struct NetworkTaskIo {
    /// The input gate (`None` for a source vertex).
    pub input: Option<Box<dyn TaskInput>>,
    /// One output per output edge, in [`JobGraph::output_edges`] order.
    pub outputs: Vec<Box<dyn TaskOutput>>,
    /// The task's I/O metrics (records/bytes in and out, backpressured and idle time),
    /// shared by its writers and gate.
    pub metrics: Arc<TaskIoMetrics>,
    /// Partitions created and registered, one per output edge; the deployer releases
    /// them (see the module docs).
    pub partitions: Vec<PartitionId>,
}

impl std::fmt::Debug for NetworkTaskIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkTaskIo")
            .field(
                "input_channels",
                &self.input.as_ref().map(|i| i.num_channels()),
            )
            .field("outputs", &self.outputs.len())
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

fn vertex_of(job: &JobGraph, vertex: VertexId) -> Result<&JobVertex> {
    job.vertex(vertex)
        .ok_or_else(|| DataflowError::InvalidGraph(format!("no vertex {vertex}")))
}

/// The input channels of subtask `subtask` of `vertex`, in the task's input-channel order
/// ([`JobGraph::wiring`]), ready for [`create_task_io`].
///
/// `producer(edge, upstream_subtask)` says which partition that upstream subtask
/// created for input edge `edge` (an index into `job.edges`) and where it runs; the
/// subpartition is derived from the graph. Errors from `producer` are passed through.
pub fn input_channel_specs(
    job: &JobGraph,
    vertex: VertexId,
    subtask: u32,
    mut producer: impl FnMut(usize, u32) -> Result<(PartitionId, ChannelLocation)>,
) -> Result<Vec<InputChannelSpec>> {
    job.wiring(vertex, subtask)?
        .inputs
        .iter()
        .map(|c| {
            let (partition, location) = producer(c.edge, c.upstream)?;
            Ok(InputChannelSpec {
                partition,
                subpartition: c.subpartition,
                location,
            })
        })
        .collect()
}

/// The network channel selector for an edge with `partitioning`, for producer subtask
/// `subtask`. Hash edges route by the channel the chain computed per record.
pub fn channel_selector(partitioning: &Partitioning, subtask: u32) -> ChannelSelector {
    match partitioning {
        Partitioning::Forward => ChannelSelector::Forward,
        Partitioning::Rebalance => ChannelSelector::rebalance(u64::from(subtask)),
        Partitioning::Rescale => ChannelSelector::rescale(u64::from(subtask)),
        Partitioning::Hash { .. } => ChannelSelector::Keyed,
        Partitioning::Broadcast => ChannelSelector::Broadcast,
    }
}

/// The writers' flush mode for a task's `buffer_timeout`: every record for zero,
/// otherwise only full buffers and the task's own flushes (see the module docs).
pub fn writer_buffer_timeout(buffer_timeout: Duration) -> BufferTimeout {
    if buffer_timeout.is_zero() {
        BufferTimeout::EveryRecord
    } else {
        BufferTimeout::Never
    }
}

/// Creates the data-plane endpoints of subtask `subtask` of `vertex`.
///
/// * `outputs[i]` names the partition of the vertex's `i`-th output edge; it is created
///   with the subpartitions of [`JobGraph::wiring`]'s `outputs[i]` and registered in
///   `net`, and written by a [`NetworkOutput`] selecting channels by the edge's
///   partitioning ([`channel_selector`]).
/// * `inputs[i]` becomes input channel `i` of the gate; the vector must follow
///   [`JobGraph::wiring`] order (use [`input_channel_specs`]) and be empty
///   for a source vertex.
/// * `config.buffer_timeout` picks the writers' flush mode ([`writer_buffer_timeout`]),
///   `config.batch_size` the most records one input poll returns.
///
/// Errors: wrong number of outputs or inputs ([`DataflowError::InvalidGraph`]); a local
/// channel whose partition is not registered in `net`, a duplicate partition id, a
/// remote channel without a started transport, or too little network memory
/// ([`DataflowError::Network`], naming the partition or channel). On error, partitions
/// created so far are released and unregistered.
pub fn create_task_io(
    net: &NetworkEnvironment,
    job: &JobGraph,
    vertex: VertexId,
    subtask: u32,
    outputs: &[OutputSpec],
    inputs: Vec<InputChannelSpec>,
    config: &TaskConfig,
) -> Result<NetworkTaskIo> {
    let wiring = job.wiring(vertex, subtask)?;
    let v = vertex_of(job, vertex)?;
    let edges = wiring.outputs.len();
    if outputs.len() != edges {
        return Err(DataflowError::InvalidGraph(format!(
            "`{}` subtask {subtask} has {edges} output edges but got {} output specs",
            v.name,
            outputs.len()
        )));
    }
    let channels = wiring.inputs.len();
    if inputs.len() != channels {
        return Err(DataflowError::InvalidGraph(format!(
            "`{}` subtask {subtask} has {channels} input channels but got {} input channel specs",
            v.name,
            inputs.len()
        )));
    }
    let metrics = Arc::new(TaskIoMetrics::default());
    // Unregisters the partitions created so far if anything below fails.
    let mut created = Created {
        net,
        ids: Vec::with_capacity(outputs.len()),
    };
    let mut outs: Vec<Box<dyn TaskOutput>> = Vec::with_capacity(outputs.len());
    for ((out, (edge, e)), spec) in wiring
        .outputs
        .iter()
        .zip(job.output_edges(vertex))
        .zip(outputs)
    {
        let n = out.num_subpartitions();
        let partition = net.create_partition(spec.partition, n).map_err(|err| {
            DataflowError::network(
                format!(
                    "creating partition {} ({n} subpartitions) for output edge {edge} of `{}` subtask {subtask}",
                    spec.partition, v.name
                ),
                err,
            )
        })?;
        created.ids.push(spec.partition);
        let selector = channel_selector(&e.partitioning, subtask);
        let writer = RecordWriter::new(
            partition,
            selector,
            writer_buffer_timeout(config.buffer_timeout),
            metrics.clone(),
            None,
        )
        .map_err(|err| {
            DataflowError::network(
                format!("creating the record writer of partition {}", spec.partition),
                err,
            )
        })?;
        let hashed = matches!(e.partitioning, Partitioning::Hash { .. });
        outs.push(Box::new(NetworkOutput::new(writer, hashed)));
    }
    let input = if job.input_edges(vertex).next().is_some() {
        Some(build_input(net, v, subtask, &inputs, config, &metrics)?)
    } else {
        None
    };
    Ok(NetworkTaskIo {
        input,
        outputs: outs,
        metrics,
        partitions: std::mem::take(&mut created.ids),
    })
}

/// Partitions registered by a [`create_task_io`] call that has not succeeded (yet).
struct Created<'a> {
    net: &'a NetworkEnvironment,
    ids: Vec<PartitionId>,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            self.net.release_partition(id);
        }
    }
}

/// The input gate of `v`'s subtask `subtask`: channel `i` reads `inputs[i]`.
fn build_input(
    net: &NetworkEnvironment,
    v: &JobVertex,
    subtask: u32,
    inputs: &[InputChannelSpec],
    config: &TaskConfig,
    metrics: &Arc<TaskIoMetrics>,
) -> Result<Box<dyn TaskInput>> {
    let mut builder = net.input_gate_builder(metrics.clone()).map_err(|e| {
        DataflowError::network(format!("creating the input gate of `{}`", v.name), e)
    })?;
    for (i, spec) in inputs.iter().enumerate() {
        let added = match spec.location {
            ChannelLocation::Local => {
                net.add_local_channel(&mut builder, spec.partition, spec.subpartition)
            }
            ChannelLocation::Remote(addr) => {
                net.add_remote_channel(&mut builder, addr, spec.partition, spec.subpartition)
            }
        };
        let context = || {
            format!(
                "adding input channel {i} of `{}` subtask {subtask} ({:?}, partition {}, subpartition {}){}",
                v.name,
                spec.location,
                spec.partition,
                spec.subpartition,
                match spec.location {
                    ChannelLocation::Local =>
                        "; a local producer's partition must be created before its consumers",
                    ChannelLocation::Remote(_) => "",
                }
            )
        };
        match added {
            Ok(index) if index as usize == i => {}
            Ok(index) => {
                // Building and dropping the gate cancels remote channels already started.
                drop(builder.build());
                return Err(DataflowError::InvalidGraph(format!(
                    "{}: became gate channel {index}",
                    context()
                )));
            }
            Err(e) => {
                drop(builder.build());
                return Err(DataflowError::network(context(), e));
            }
        }
    }
    let input = NetworkInput::new(builder, inputs.len(), config.batch_size)?;
    Ok(Box::new(input))
}

/// A [`TaskOutput`] writing one output edge into a result partition.
///
/// Records are encoded with [`codec::encode_record`] into the writer's scratch buffer and
/// emitted to the channel the writer's selector picks (on hash-partitioned edges, the
/// channel the task computed from the record's key). Watermarks and statuses are broadcast in-band; end of input
/// finishes the writer. Dropped before end of input, it releases its partition.
pub struct NetworkOutput {
    writer: RecordWriter,
    keyed: bool,
    scratch: Vec<u8>,
    finished: bool,
}

impl std::fmt::Debug for NetworkOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkOutput")
            .field("writer", &self.writer)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl NetworkOutput {
    /// An output over `writer`; `hash_partitioned` says that the writer routes by the
    /// caller's channel ([`ChannelSelector::Keyed`]), so every emitted batch must come
    /// with one target channel per record.
    pub fn new(writer: RecordWriter, hash_partitioned: bool) -> Self {
        Self {
            keyed: hash_partitioned,
            writer,
            scratch: Vec::new(),
            finished: false,
        }
    }

    /// The partition written to.
    pub fn partition(&self) -> &Arc<ResultPartition> {
        self.writer.partition()
    }

    fn error(&self, e: NetworkError) -> DataflowError {
        DataflowError::network(
            format!("writing to partition {}", self.writer.partition().id()),
            e,
        )
    }
}

impl TaskOutput for NetworkOutput {
    fn emit(&mut self, records: &mut Vec<StreamRecord>, channels: &[u32]) -> Result<()> {
        if self.keyed || !channels.is_empty() {
            if channels.len() != records.len() {
                return Err(DataflowError::InvalidGraph(format!(
                    "{} records but {} target channels for partition {}",
                    records.len(),
                    channels.len(),
                    self.writer.partition().id()
                )));
            }
            for (r, channel) in records.iter().zip(channels) {
                if let Err(e) = self
                    .writer
                    .emit_with(*channel, |buf| codec::encode_record(r, buf))
                {
                    return Err(self.error(e));
                }
            }
        } else {
            for r in records.iter() {
                if let Err(e) = self.writer.emit_with(0, |buf| codec::encode_record(r, buf)) {
                    return Err(self.error(e));
                }
            }
        }
        records.clear();
        Ok(())
    }

    fn emit_event(&mut self, event: StreamEvent) -> Result<()> {
        let res = match event {
            StreamEvent::EndOfInput => {
                let res = self.writer.finish();
                self.finished = res.is_ok();
                res
            }
            StreamEvent::Watermark(_) | StreamEvent::WatermarkStatus(_) => {
                self.scratch.clear();
                codec::encode_element(&StreamElement::from(event), &mut self.scratch);
                self.writer.broadcast_control(&self.scratch)
            }
        };
        res.map_err(|e| self.error(e))
    }

    fn emit_checkpoint_event(&mut self, event: CheckpointEvent) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let event = match event {
            CheckpointEvent::Barrier(b) => b.to_event(),
            CheckpointEvent::Cancel(id) => Event::CancelCheckpointMarker { id },
            CheckpointEvent::EndOfData { drain } => Event::EndOfData { drain },
        };
        self.writer
            .broadcast_event(event)
            .map_err(|e| self.error(e))
    }

    fn emit_priority_barrier(&mut self, barrier: CheckpointBarrier) -> Result<Vec<Vec<u8>>> {
        // Also after the end of input: the barrier overtakes a queued end of partition
        // (and the data before it) that its consumer has not read yet.
        self.writer
            .broadcast_priority_event(barrier.to_event())
            .map_err(|e| self.error(e))
    }

    fn emit_timeoutable_barrier(&mut self, barrier: CheckpointBarrier) -> Result<QueuedBarrier> {
        let (id, ts, kind) = (barrier.id, barrier.timestamp_ms, barrier.options.kind);
        if self.finished {
            // Ahead of the queued end of partition, behind the data before it.
            return Ok(self
                .writer
                .partition()
                .broadcast_timeoutable_barrier(id, ts, kind));
        }
        self.writer
            .broadcast_timeoutable_barrier(id, ts, kind)
            .map_err(|e| self.error(e))
    }

    fn restore_in_flight(&mut self, channel: u32, bytes: &[u8]) -> Result<()> {
        let channels = self.writer.partition().num_subpartitions();
        if channel >= channels {
            return Err(DataflowError::InvalidGraph(format!(
                "restored in-flight data for output channel {channel} of {channels}"
            )));
        }
        self.writer
            .write_raw(channel, bytes)
            .map_err(|e| self.error(e))
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush_all().map_err(|e| self.error(e))
    }

    fn is_available(&self) -> bool {
        self.finished || self.writer.is_available()
    }
}

impl Drop for NetworkOutput {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(
                partition = %self.writer.partition().id(),
                "output dropped before end of input: releasing its partition"
            );
            self.writer.partition().release();
        }
    }
}

/// An item read from the gate but not returned yet (it ended the previous batch).
enum Stashed {
    Record {
        channel: usize,
        record: StreamRecord,
    },
    Event(InputEvent),
}

/// A [`TaskInput`] over an input gate: decodes records with [`codec::decode_element`],
/// up to `max_batch` records of one channel per poll.
pub struct NetworkInput {
    reader: RecordReader,
    num_channels: usize,
    waker: GateWaker,
    stash: Option<Stashed>,
    max_batch: usize,
    /// The current limit, `1..=max_batch` (see `TaskInput::set_batch_limit`).
    batch_limit: usize,
}

impl std::fmt::Debug for NetworkInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkInput")
            .field("reader", &self.reader)
            .field("num_channels", &self.num_channels)
            .finish_non_exhaustive()
    }
}

impl NetworkInput {
    /// An input over the `num_channels` channels already added to `builder` (in input
    /// channel order); builds the gate. One poll returns at most `max_batch` records.
    pub fn new(builder: InputGateBuilder, num_channels: usize, max_batch: usize) -> Result<Self> {
        if builder.num_channels() as usize != num_channels {
            let found = builder.num_channels();
            // Building and dropping the gate cancels remote channels already started.
            drop(builder.build());
            return Err(DataflowError::InvalidGraph(format!(
                "input gate has {found} channels, expected {num_channels}"
            )));
        }
        let gate = builder.build();
        Ok(Self {
            waker: gate.waker(),
            reader: RecordReader::new(gate),
            num_channels,
            stash: None,
            max_batch: max_batch.max(1),
            batch_limit: max_batch.max(1),
        })
    }

    fn read_error(e: NetworkError) -> DataflowError {
        DataflowError::network("reading the input gate", e)
    }

    fn check_channel(&self, channel: usize) -> Result<u32> {
        if channel >= self.num_channels {
            return Err(DataflowError::ChannelClosed(format!(
                "input channel {channel} of {}",
                self.num_channels
            )));
        }
        Ok(channel as u32)
    }

    /// Reads the next item; `Ok(None)` if nothing is ready within `wait` (`None`: block
    /// until something is, or the waker is called).
    /// Records are appended to `records` and returned as the channel they came from.
    fn read(&mut self, block: bool, records: &mut Vec<StreamRecord>) -> Result<Option<Read>> {
        self.read_within(if block { None } else { Some(Duration::ZERO) }, records)
    }

    /// [`read`](Self::read) waiting at most `timeout` (`None`: until input or a wake-up);
    /// a wait that timed out returns `MailboxWake`, a zero timeout `Ok(None)`.
    fn read_within(
        &mut self,
        timeout: Option<Duration>,
        records: &mut Vec<StreamRecord>,
    ) -> Result<Option<Read>> {
        let item = match timeout {
            None => self.reader.next_item(),
            Some(t) => self.reader.next_timeout(t),
        }
        .map_err(Self::read_error)?;
        let Some(item) = item else {
            if timeout == Some(Duration::ZERO) {
                return Ok(None);
            }
            if self.reader.gate_mut().is_finished() {
                // The task stops reading once every channel ended.
                return Err(DataflowError::ChannelClosed(
                    "input gate finished while a task was reading it".into(),
                ));
            }
            // A blocking read returns nothing only when the waker interrupted it or its
            // timeout passed.
            return Ok(Some(Read::Event(InputEvent::MailboxWake)));
        };
        let n = self.num_channels;
        Ok(Some(match item {
            ReaderItem::Record { channel, record } => {
                let channel = channel as usize;
                if channel >= n {
                    return Err(DataflowError::ChannelClosed(format!(
                        "record on input channel {channel} of {n}"
                    )));
                }
                let element = codec::decode_element(record)?;
                if !matches!(element, StreamElement::Record(_)) {
                    // Not data: see the module docs (metrics).
                    self.reader.uncount_last_record();
                }
                match element {
                    StreamElement::Record(r) => {
                        records.push(r);
                        Read::Record(channel)
                    }
                    StreamElement::Watermark(w) => Read::Event(InputEvent::Event {
                        channel,
                        event: StreamEvent::Watermark(w),
                    }),
                    StreamElement::WatermarkStatus(s) => Read::Event(InputEvent::Event {
                        channel,
                        event: StreamEvent::WatermarkStatus(s),
                    }),
                    StreamElement::EndOfInput => {
                        return Err(DataflowError::Codec(format!(
                            "in-band end of input on channel {channel} (end of input travels as end of partition)"
                        )))
                    }
                }
            }
            ReaderItem::Event { channel, event } => {
                Read::Event(input_event(channel as usize, event))
            }
        }))
    }

    /// Appends more records of `channel` without blocking, until the batch is full, the
    /// channel changes, an element that is not a record comes, or nothing is ready.
    /// `start` is the length of `records` before this poll appended to it.
    fn fill(
        &mut self,
        channel: usize,
        start: usize,
        records: &mut Vec<StreamRecord>,
    ) -> Result<InputEvent> {
        while records.len() - start < self.batch_limit {
            let before = records.len();
            match self.read(false, records)? {
                None => break,
                Some(Read::Record(c)) if c == channel => {}
                Some(Read::Record(c)) => {
                    // Appended by `read`: move it to the next batch.
                    if let Some(record) = records.pop() {
                        debug_assert_eq!(records.len(), before);
                        self.stash = Some(Stashed::Record { channel: c, record });
                    }
                    break;
                }
                Some(Read::Event(e)) => {
                    self.stash = Some(Stashed::Event(e));
                    break;
                }
            }
        }
        Ok(InputEvent::Records { channel })
    }

    fn next(&mut self, block: bool, records: &mut Vec<StreamRecord>) -> Result<Option<InputEvent>> {
        self.next_within(if block { None } else { Some(Duration::ZERO) }, records)
    }

    fn next_within(
        &mut self,
        timeout: Option<Duration>,
        records: &mut Vec<StreamRecord>,
    ) -> Result<Option<InputEvent>> {
        let start = records.len();
        if let Some(Stashed::Event(e)) = self.stash.take_if(|s| matches!(s, Stashed::Event(_))) {
            return Ok(Some(e));
        }
        // The event returned last was handled: what a priority event overtook is no
        // longer unconsumed (see `RecordReader::unconsumed`).
        self.reader.forget_overtaken();
        // An unaligned barrier goes first, ahead of the current buffer's records and of
        // a record read ahead (which stays stashed; `unconsumed` covers it).
        if self.reader.has_priority_event() {
            if let Some(ReaderItem::Event { channel, event }) =
                self.reader.next_priority().map_err(Self::read_error)?
            {
                return Ok(Some(input_event(channel as usize, event)));
            }
        }
        if let Some(Stashed::Record { channel, record }) = self.stash.take() {
            records.push(record);
            return self.fill(channel, start, records).map(Some);
        }
        match self.read_within(timeout, records)? {
            None => Ok(None),
            Some(Read::Record(channel)) => self.fill(channel, start, records).map(Some),
            Some(Read::Event(e)) => Ok(Some(e)),
        }
    }
}

/// The task's view of a network event on `channel`.
fn input_event(channel: usize, event: Event) -> InputEvent {
    match event {
        Event::EndOfPartition => InputEvent::Event {
            channel,
            event: StreamEvent::EndOfInput,
        },
        Event::CheckpointBarrier {
            id,
            timestamp_ms,
            options,
        } => InputEvent::Barrier {
            channel,
            barrier: CheckpointBarrier {
                id,
                timestamp_ms,
                options,
            },
        },
        Event::CancelCheckpointMarker { id } => InputEvent::CancelMarker { channel, id },
        Event::EndOfData { drain } => InputEvent::EndOfData { channel, drain },
    }
}

/// One item as [`NetworkInput::read`] classified it.
enum Read {
    /// A record of this channel was appended.
    Record(usize),
    /// An event (or a wake-up).
    Event(InputEvent),
}

impl TaskInput for NetworkInput {
    fn num_channels(&self) -> usize {
        self.num_channels
    }

    fn waker(&self) -> InputWaker {
        let waker = self.waker.clone();
        Arc::new(move || waker.wake())
    }

    fn try_poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<Option<InputEvent>> {
        self.next(false, records)
    }

    fn convert_late_barriers(&mut self, late: &dyn Fn(&CheckpointBarrier) -> bool) -> usize {
        self.reader
            .gate_mut()
            .convert_queued_barriers(&|event| match input_event(0, *event) {
                InputEvent::Barrier { barrier, .. } if late(&barrier) => {
                    Some(barrier.unaligned().to_event())
                }
                _ => None,
            })
    }

    fn try_poll_priority(&mut self) -> Result<Option<InputEvent>> {
        if !self.reader.has_priority_event() {
            return Ok(None);
        }
        // The event returned last was handled (as in `next_within`).
        self.reader.forget_overtaken();
        match self.reader.next_priority().map_err(Self::read_error)? {
            Some(ReaderItem::Event { channel, event }) => {
                Ok(Some(input_event(channel as usize, event)))
            }
            _ => Ok(None),
        }
    }

    fn unconsumed(&self, channel: usize) -> Result<Vec<u8>> {
        let ch = self.check_channel(channel)?;
        // A record read ahead (see `fill`) was taken from the channel's buffer but not
        // handed to the task: it comes first, framed as the writer frames records.
        let mut out = Vec::new();
        if let Some(Stashed::Record { channel: c, record }) = &self.stash {
            if *c == channel {
                let mut encoded = Vec::new();
                codec::encode_record(record, &mut encoded);
                out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                out.extend_from_slice(&encoded);
            }
        }
        out.extend(self.reader.unconsumed(ch).map_err(Self::read_error)?);
        Ok(out)
    }

    fn end_received(&self, channel: usize) -> Result<Option<Vec<u8>>> {
        let ch = self.check_channel(channel)?;
        self.reader.received_end(ch).map_err(Self::read_error)
    }

    fn start_recording(&mut self, channel: usize) -> Result<()> {
        let ch = self.check_channel(channel)?;
        self.reader.start_recording(ch).map_err(Self::read_error)
    }

    fn stop_recording(&mut self, channel: usize) -> Result<Vec<u8>> {
        let ch = self.check_channel(channel)?;
        self.reader.stop_recording(ch).map_err(Self::read_error)
    }

    fn restore_in_flight(&mut self, channel: usize, bytes: Vec<u8>) -> Result<()> {
        let ch = self.check_channel(channel)?;
        self.reader
            .restore_in_flight(ch, bytes)
            .map_err(Self::read_error)
    }

    fn set_batch_limit(&mut self, records: usize) {
        self.batch_limit = records.clamp(1, self.max_batch);
    }

    fn set_input_watermark(&mut self, watermark: i64) {
        self.reader
            .gate_mut()
            .metrics()
            .set_input_watermark(watermark);
    }

    fn resume_consumption(&mut self, channel: usize) -> Result<()> {
        if channel >= self.num_channels {
            return Err(DataflowError::ChannelClosed(format!(
                "resume of input channel {channel} of {}",
                self.num_channels
            )));
        }
        self.reader
            .gate_mut()
            .resume_consumption(channel as u32)
            .map_err(Self::read_error)
    }

    fn poll(&mut self, records: &mut Vec<StreamRecord>) -> Result<InputEvent> {
        self.poll_timeout(records, None)
    }

    fn poll_timeout(
        &mut self,
        records: &mut Vec<StreamRecord>,
        timeout: Option<Duration>,
    ) -> Result<InputEvent> {
        // A zero timeout would mean "don't block" to the gate: wait at least 1 ms.
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        match self.next_within(timeout, records)? {
            Some(e) => Ok(e),
            // A blocking read returns an item or an error.
            None => Err(DataflowError::ChannelClosed(
                "input gate returned nothing to a blocking read".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::WatermarkStatus;
    use crate::spec::FactoryRef;
    use crate::value::Value;
    use rill_network::NetworkConfig;

    const WAIT: Duration = Duration::from_secs(10);

    fn net() -> NetworkEnvironment {
        NetworkEnvironment::new(NetworkConfig {
            memory: 256 * 4096,
            segment_size: 4096,
            ..NetworkConfig::default()
        })
        .unwrap()
    }

    /// A writer on a new partition of `n` channels and an input reading all of them.
    fn pair(
        net: &NetworkEnvironment,
        id: u128,
        n: u32,
        selector: ChannelSelector,
        hashed: bool,
    ) -> (NetworkOutput, NetworkInput, Arc<TaskIoMetrics>) {
        let p = net.create_partition(PartitionId(id), n).unwrap();
        let metrics = Arc::new(TaskIoMetrics::default());
        let writer = RecordWriter::new(
            p,
            selector,
            BufferTimeout::Never,
            Arc::new(TaskIoMetrics::default()),
            None,
        )
        .unwrap();
        let mut b = net.input_gate_builder(metrics.clone()).unwrap();
        for i in 0..n {
            net.add_local_channel(&mut b, PartitionId(id), i).unwrap();
        }
        let input = NetworkInput::new(b, n as usize, 1024).unwrap();
        (NetworkOutput::new(writer, hashed), input, metrics)
    }

    #[test]
    fn records_come_in_batches_and_events_in_order() {
        let net = net();
        let (mut out, mut input, metrics) = pair(&net, 1, 1, ChannelSelector::Forward, false);
        let mut batch: Vec<StreamRecord> = (0..3000)
            .map(|i| StreamRecord::with_timestamp(Value::I64(i), i))
            .collect();
        out.emit(&mut batch, &[]).unwrap();
        assert!(batch.is_empty());
        out.emit_event(StreamEvent::Watermark(2999)).unwrap();
        out.emit_event(StreamEvent::WatermarkStatus(WatermarkStatus::Idle))
            .unwrap();
        out.emit_event(StreamEvent::EndOfInput).unwrap();

        let mut records = Vec::new();
        let mut polls = 0;
        let mut events = Vec::new();
        while events.last() != Some(&StreamEvent::EndOfInput) {
            match input.try_poll(&mut records).unwrap() {
                Some(InputEvent::Records { channel: 0 }) => polls += 1,
                Some(InputEvent::Event { channel: 0, event }) => events.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected: Vec<StreamRecord> = (0..3000)
            .map(|i| StreamRecord::with_timestamp(Value::I64(i), i))
            .collect();
        assert_eq!(records, expected);
        // 1024 records per poll at most, and many per buffer.
        assert!((3..10).contains(&polls), "{polls} polls");
        assert_eq!(
            events,
            [
                StreamEvent::Watermark(2999),
                StreamEvent::WatermarkStatus(WatermarkStatus::Idle),
                StreamEvent::EndOfInput
            ]
        );
        assert_eq!(input.try_poll(&mut records).unwrap(), None);
        // Data records only: the watermark and the status are not counted.
        assert_eq!(metrics.records_in(), 3000);
    }

    #[test]
    fn waker_interrupts_a_blocked_poll_once_per_wake() {
        let net = net();
        let (_out, mut input, _) = pair(&net, 2, 1, ChannelSelector::Forward, false);
        let waker = input.waker();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut records = Vec::new();
            let first = input.poll(&mut records);
            let _ = tx.send(());
            (first.map_err(|e| e.to_string()), input)
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "poll returned early"
        );
        waker();
        rx.recv_timeout(WAIT)
            .expect("the waker must end a blocked poll");
        let (first, mut input) = t.join().unwrap();
        assert_eq!(first, Ok(InputEvent::MailboxWake));
        // Two wakes before a blocking poll coalesce into one; a non-blocking poll does
        // not consume them.
        waker();
        waker();
        let mut records = Vec::new();
        assert_eq!(input.try_poll(&mut records).unwrap(), None);
        assert_eq!(input.poll(&mut records).unwrap(), InputEvent::MailboxWake);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let r = input.poll(&mut Vec::new()).map_err(|e| e.to_string());
            let _ = tx.send(());
            r
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "the second wake was not coalesced"
        );
        waker();
        rx.recv_timeout(WAIT).expect("woken again");
        assert_eq!(t.join().unwrap(), Ok(InputEvent::MailboxWake));
    }

    #[test]
    fn hash_edges_deliver_each_key_to_its_key_group_owner() {
        use crate::key_group::operator_index_for_key;
        let net = net();
        let hash = Partitioning::Hash {
            key: FactoryRef::unit("k"),
        };
        let (mut out, mut input, _) = pair(&net, 3, 4, channel_selector(&hash, 0), true);
        let hashes: Vec<u64> = (0..500u64).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        let channels: Vec<u32> = hashes
            .iter()
            .map(|h| operator_index_for_key(*h, 4, 128))
            .collect();
        let mut batch: Vec<StreamRecord> = (0..500).map(StreamRecord::new).collect();
        // Hash edges need one channel per record, and only existing channels.
        assert!(out.emit(&mut batch.clone(), &channels[1..]).is_err());
        assert!(out.emit(&mut vec![StreamRecord::new(0)], &[4]).is_err());
        out.emit(&mut batch, &channels).unwrap();
        out.emit_event(StreamEvent::EndOfInput).unwrap();
        let (mut ended, mut seen) = (0, 0);
        let mut records = Vec::new();
        while ended < 4 {
            match input.try_poll(&mut records).unwrap() {
                Some(InputEvent::Records { channel }) => {
                    for r in records.drain(..) {
                        let i = r.value.as_i64().unwrap() as usize;
                        assert_eq!(operator_index_for_key(hashes[i], 4, 128), channel as u32);
                        seen += 1;
                    }
                }
                Some(InputEvent::Event {
                    event: StreamEvent::EndOfInput,
                    ..
                }) => ended += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, 500);
    }

    #[test]
    fn barriers_block_until_resumed_and_bad_input_is_an_error() {
        let net = net();
        // Barriers and cancel markers arrive in order with the records; an aligned
        // barrier holds back its channel until it is resumed.
        let (mut out, mut input, _) = pair(&net, 4, 1, ChannelSelector::Forward, false);
        let barrier = CheckpointBarrier {
            id: 3,
            timestamp_ms: 7,
            options: rill_network::CheckpointOptions::aligned_checkpoint(),
        };
        out.emit(&mut vec![StreamRecord::new(1)], &[]).unwrap();
        out.emit_checkpoint_event(CheckpointEvent::Barrier(barrier))
            .unwrap();
        out.emit(&mut vec![StreamRecord::new(2)], &[]).unwrap();
        out.emit_checkpoint_event(CheckpointEvent::Cancel(4))
            .unwrap();
        out.flush().unwrap();
        let mut records = Vec::new();
        assert_eq!(
            input.try_poll(&mut records).unwrap(),
            Some(InputEvent::Records { channel: 0 })
        );
        assert_eq!(
            input.try_poll(&mut records).unwrap(),
            Some(InputEvent::Barrier {
                channel: 0,
                barrier
            })
        );
        assert_eq!(input.try_poll(&mut records).unwrap(), None, "blocked");
        input.resume_consumption(0).unwrap();
        assert_eq!(
            input.try_poll(&mut records).unwrap(),
            Some(InputEvent::Records { channel: 0 })
        );
        assert_eq!(
            input.try_poll(&mut records).unwrap(),
            Some(InputEvent::CancelMarker { channel: 0, id: 4 })
        );
        assert_eq!(records.len(), 2);
        assert!(input.resume_consumption(1).is_err());

        // End of input encoded in-band: only end-of-partition ends a channel.
        let (mut out, mut input, _) = pair(&net, 5, 1, ChannelSelector::Forward, false);
        let mut bytes = Vec::new();
        codec::encode_element(&StreamElement::EndOfInput, &mut bytes);
        out.writer.emit(&bytes).unwrap();
        out.flush().unwrap();
        let err = input.try_poll(&mut Vec::new()).unwrap_err();
        assert!(matches!(err, DataflowError::Codec(_)), "{err}");

        // A producer dropped before end of input releases its partition: queued data is
        // discarded and the consumer's next read fails.
        let (mut out, mut input, _) = pair(&net, 6, 1, ChannelSelector::Forward, false);
        out.emit(&mut vec![StreamRecord::new(1)], &[]).unwrap();
        out.flush().unwrap();
        drop(out);
        let err = input.try_poll(&mut Vec::new()).unwrap_err();
        assert!(matches!(err, DataflowError::ChannelClosed(_)), "{err}");
    }
}
