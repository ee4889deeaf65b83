//! The QUIC driver: moves the credit protocol's messages over quinn.
//!
//! # Mapping
//!
//! * **One endpoint (UDP socket) per process**, acting as server for partitions produced
//!   here and as client for remote channels consumed here; ALPN `rill-data/1`, TLS and
//!   cluster authentication from [`rill_runtime::security`] (shared with the RPC plane).
//! * **One connection per TaskExecutor pair** (per direction), cached by peer address and
//!   authenticated before it is used: every incoming connection goes through an
//!   [`admission::Gate`] (pending-authentication limits of `security.auth.*`, small
//!   transport limits until the peer has authenticated), and the server accepts no
//!   channel stream before the peer has proved membership, so an unauthenticated peer is
//!   refused (and reported, rate-limited) before any partition request is read. A server
//!   that refuses our credentials is reported at WARN, rate-limited.
//! * **One bidirectional stream per input channel**: the consumer opens it and writes its
//!   messages, the producer answers on the same stream. A channel without credit simply
//!   has nothing in flight; its stream stalls, the others do not.
//! * **Windows sized so credit limits, not QUIC**: a stream's receive window holds every
//!   buffer the channel can ever have credit for (`exclusive + floating` buffers plus
//!   headers and event slack); the connection window holds the whole network memory. The
//!   producer therefore never blocks in QUIC flow control for data it has credit for.
//!
//! # Tasks
//!
//! Each producer stream and each remote channel is one named task in the transport's
//! [`TaskSet`]; dropping the transport aborts them. The tasks are thin: all decisions are
//! taken by [`ProducerCredit`] / [`ConsumerCredit`]. Peer input never panics: a malformed
//! frame or a credit violation ends that stream (the producer answers with an
//! `ErrorResponse` first, the consumer fails the channel), is logged, and releases the
//! buffers involved; other streams and connections carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use quinn::{RecvStream, SendStream, VarInt};
use rill_runtime::config::AuthConfig;
use rill_runtime::security::admission::{
    self, ConnectionLimits, CredentialWarnings, Gate, PendingBudget,
};
use rill_runtime::security::{self, ClusterSecret};
use rill_runtime::tasks::TaskSet;
use tokio::sync::{Notify, OnceCell};
use tracing::{debug, warn};

use crate::buffer_pool::Buffer;
use crate::config::NetworkConfig;
use crate::credit::{ConsumerCredit, ProducerAction, ProducerCredit, Received};
use crate::error::NetworkError;
use crate::event::{Event, MAX_EVENT_SIZE};
use crate::input_gate::RemoteInbox;
use crate::partition::{PartitionId, PartitionManager, Payload, SubpartitionView};
use crate::protocol::{
    encode_buffer_header, encode_consumer, encode_error, BufferHeader, ConsumerDecoder,
    ConsumerMessage, DataType, ErrorKind, ProducerDecoder, ProducerFrame, BUFFER_HEADER_LEN,
};

/// ALPN of the data plane.
pub const DATA_ALPN: &[u8] = b"rill-data/1";

/// QUIC error code for a stream closed because of a protocol violation.
const PROTOCOL_VIOLATION_CODE: u32 = 0x10;
/// QUIC error code for a stream closed because the consumer cancelled.
const CANCELLED_CODE: u32 = 0x11;
/// How long a producer waits for the partition request on a new stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffers gathered into one QUIC write.
const WRITE_BATCH: usize = 16;
/// QUIC frames taken from a stream in one read once it is readable.
const READ_BATCH: usize = 32;

/// What an authenticated peer may open and send towards us: a stream per channel, and
/// the connection window of [`transport_config`].
fn authenticated_limits(config: &NetworkConfig) -> ConnectionLimits {
    ConnectionLimits {
        bidi_streams: VarInt::from_u32(config.max_streams_per_connection),
        uni_streams: VarInt::from_u32(0),
        receive_window: VarInt::from_u64(connection_window(config)).unwrap_or(VarInt::MAX),
    }
}

fn stream_window(config: &NetworkConfig) -> u64 {
    let frame = u64::from(config.segment_size) + BUFFER_HEADER_LEN as u64;
    let per_channel =
        u64::from(config.exclusive_buffers_per_channel + config.floating_buffers_per_gate);
    // Events need no credit: leave room for a few hundred of them on top.
    per_channel * frame + 256 * (BUFFER_HEADER_LEN + MAX_EVENT_SIZE) as u64
}

fn connection_window(config: &NetworkConfig) -> u64 {
    config.memory + config.memory / 8 + stream_window(config)
}

/// Transport parameters sized so that credit, not QUIC flow control, limits a channel.
pub fn transport_config(config: &NetworkConfig) -> quinn::TransportConfig {
    let connection_window = connection_window(config);
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(VarInt::from_u64(stream_window(config)).unwrap_or(VarInt::MAX))
        .send_window(connection_window);
    authenticated_limits(config).set_initial(&mut t);
    t
        // Credit already bounds what each channel may have in flight, so round-robin
        // between streams buys no fairness; it only splits every buffer into frames
        // interleaved with other channels' frames, which costs the receiver a wake-up per
        // frame (measured: ≈ 25 % more CPU per record at 100 channels).
        .send_fairness(false)
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

/// The process's data-plane endpoint: serves local partitions to remote consumers and
/// drives this process's remote input channels.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    secret: ClusterSecret,
    gate: Arc<Gate>,
    refusals: CredentialWarnings,
    config: NetworkConfig,
    partitions: PartitionManager,
    connections: Mutex<HashMap<SocketAddr, Arc<OnceCell<quinn::Connection>>>>,
    tasks: TaskSet,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds the endpoint on `bind` and starts accepting connections, granting peers
    /// `auth` until they authenticate; pending connections count against `budget` (the
    /// process's, shared with its RPC service) or this endpoint's own. Must be called
    /// inside a tokio runtime, whose handle runs all data-plane tasks.
    pub fn bind(
        bind: SocketAddr,
        secret: ClusterSecret,
        auth: &AuthConfig,
        budget: Option<PendingBudget>,
        config: NetworkConfig,
        partitions: PartitionManager,
    ) -> Result<Arc<Self>, NetworkError> {
        let mut server_transport = transport_config(&config);
        ConnectionLimits::PRE_AUTH.set_initial(&mut server_transport);
        let mut server = security::quic_server_config(DATA_ALPN, Arc::new(server_transport))
            .map_err(|e| NetworkError::config(format!("data-plane TLS: {e}")))?;
        Gate::limit_server_config(auth, &mut server);
        let client = security::quic_client_config(DATA_ALPN, Arc::new(transport_config(&config)))
            .map_err(|e| NetworkError::config(format!("data-plane TLS: {e}")))?;
        let mut endpoint = security::quic_endpoint(Some(server), bind)
            .map_err(|e| NetworkError::transport(bind, format!("cannot bind: {e}")))?;
        endpoint.set_default_client_config(client);
        let gate = Gate::new(
            "data",
            secret.clone(),
            auth,
            authenticated_limits(&config),
            budget,
        );
        let this = Arc::new(QuicTransport {
            endpoint,
            secret,
            gate,
            refusals: CredentialWarnings::new("data"),
            config,
            partitions,
            connections: Mutex::new(HashMap::new()),
            tasks: TaskSet::new(tokio::runtime::Handle::current()),
        });
        let weak = Arc::downgrade(&this);
        let endpoint = this.endpoint.clone();
        this.tasks.spawn("data-plane-accept", async move {
            while let Some(incoming) = endpoint.accept().await {
                let Some(t) = weak.upgrade() else { break };
                // Decided here, before anything is allocated for the peer.
                let Some(admitted) = t.gate.admit(incoming) else {
                    continue;
                };
                let t2 = t.clone();
                t.tasks.spawn("data-plane-connection", async move {
                    t2.serve_connection(admitted).await;
                });
            }
        });
        Ok(this)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetworkError> {
        self.endpoint
            .local_addr()
            .map_err(|e| NetworkError::config(format!("no local address: {e}")))
    }

    /// Number of cached outgoing connections (one per peer TaskExecutor).
    pub fn num_connections(&self) -> usize {
        self.connections.lock().len()
    }

    /// Closes every connection and stops all tasks.
    pub fn shutdown(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"shutdown");
        self.tasks.shutdown();
    }

    async fn serve_connection(self: Arc<Self>, admitted: admission::Admitted) {
        // The gate reports and closes on failure; nothing is served before this.
        let Some(conn) = admitted.authenticate().await else {
            return;
        };
        let peer = conn.remote_address();
        debug!(%peer, "data-plane connection authenticated");
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let this = self.clone();
                    self.tasks.spawn("producer-channel", async move {
                        this.serve_stream(peer, send, recv).await;
                    });
                }
                Err(e) => {
                    debug!(%peer, error = %e, "data-plane connection ended");
                    return;
                }
            }
        }
    }

    async fn serve_stream(&self, peer: SocketAddr, mut send: SendStream, mut recv: RecvStream) {
        let mut producer = ProducerStream {
            credit: ProducerCredit::new(),
            decoder: ConsumerDecoder::default(),
            messages: Vec::new(),
            view: None,
            notify: Arc::new(Notify::new()),
        };
        match producer.run(&self.partitions, &mut send, &mut recv).await {
            Ok(()) => {}
            Err(e @ NetworkError::PartitionNotFound { .. }) => {
                debug!(%peer, error = %e, "partition requested before it was registered");
                let mut out = Vec::new();
                encode_error(ErrorKind::PartitionNotFound, &e.to_string(), &mut out);
                let _ = send.write_all(&out).await;
                let _ = send.finish();
            }
            Err(
                e @ (NetworkError::MalformedFrame { .. } | NetworkError::CreditViolation { .. }),
            ) => {
                warn!(%peer, error = %e, "closing data stream: consumer broke the protocol");
                let mut out = Vec::new();
                encode_error(ErrorKind::ProtocolViolation, &e.to_string(), &mut out);
                let _ = send.write_all(&out).await;
                let _ = send.finish();
                let _ = recv.stop(VarInt::from_u32(PROTOCOL_VIOLATION_CODE));
            }
            Err(e) => {
                debug!(%peer, error = %e, "data stream ended");
                let mut out = Vec::new();
                encode_error(ErrorKind::PartitionFailed, &e.to_string(), &mut out);
                let _ = send.write_all(&out).await;
                let _ = send.finish();
            }
        }
        // Dropping the view (inside `producer`) releases the subpartition and its buffers.
    }

    /// Returns the cached, authenticated connection to `peer`, connecting if needed.
    async fn connection(&self, peer: SocketAddr) -> Result<quinn::Connection, NetworkError> {
        for _ in 0..2 {
            let cell = self
                .connections
                .lock()
                .entry(peer)
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone();
            let conn = cell
                .get_or_try_init(|| async {
                    let connecting = self
                        .endpoint
                        .connect(peer, security::SERVER_NAME)
                        .map_err(|e| NetworkError::transport(peer, e))?;
                    let conn = connecting
                        .await
                        .map_err(|e| NetworkError::transport(peer, e))?;
                    if let Err(e) = security::authenticate_client(&conn, &self.secret).await {
                        self.refusals.report(peer, &e);
                        return Err(NetworkError::Authentication {
                            peer,
                            reason: e.to_string().into(),
                        });
                    }
                    Ok::<_, NetworkError>(conn)
                })
                .await;
            match conn {
                Ok(c) if c.close_reason().is_none() => return Ok(c.clone()),
                other => {
                    // Forget a failed or closed connection so the next attempt reconnects.
                    let mut map = self.connections.lock();
                    if map.get(&peer).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        map.remove(&peer);
                    }
                    other?;
                }
            }
        }
        Err(NetworkError::transport(
            peer,
            "connection closed while connecting",
        ))
    }

    /// Starts the driver of a remote channel reading `subpartition` of `partition` at
    /// `peer` into `inbox`.
    pub(crate) fn start_remote_channel(
        self: &Arc<Self>,
        peer: SocketAddr,
        partition: PartitionId,
        subpartition: u32,
        inbox: Arc<RemoteInbox>,
    ) {
        let this = self.clone();
        self.tasks.spawn("consumer-channel", async move {
            let mut channel = ConsumerStream {
                credit: ConsumerCredit::new(
                    partition,
                    subpartition,
                    this.config.exclusive_buffers_per_channel,
                    this.config.request_backoff_initial,
                    this.config.request_backoff_max,
                ),
                inbox: inbox.clone(),
                segment_size: this.config.segment_size as usize,
            };
            let result = channel.run(&this, peer).await;
            // Every buffer held for the channel goes back to its pool.
            drop(channel.credit.release());
            if let Err(e) = result {
                match &e {
                    NetworkError::MalformedFrame { .. }
                    | NetworkError::CreditViolation { .. }
                    | NetworkError::SequenceGap { .. } => {
                        warn!(%peer, %partition, subpartition, error = %e, "remote channel failed: producer broke the protocol")
                    }
                    _ => debug!(%peer, %partition, subpartition, error = %e, "remote channel failed"),
                }
                inbox.fail(e);
            }
        });
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct ProducerStream {
    credit: ProducerCredit,
    decoder: ConsumerDecoder,
    messages: Vec<ConsumerMessage>,
    view: Option<SubpartitionView>,
    notify: Arc<Notify>,
}

impl ProducerStream {
    /// Reads more consumer messages; `Ok(false)` when the consumer finished its side.
    async fn read_messages(&mut self, recv: &mut RecvStream) -> Result<bool, NetworkError> {
        match recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => {
                self.decoder.decode(&chunk.bytes, &mut self.messages)?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(NetworkError::Closed {
                what: if matches!(e, quinn::ReadError::Reset(_)) {
                    "data stream (reset by consumer)"
                } else {
                    "data stream"
                },
            }),
        }
    }

    /// Applies queued messages; returns `false` when the channel ended.
    fn apply_messages(&mut self, partitions: &PartitionManager) -> Result<bool, NetworkError> {
        let now = Instant::now();
        for msg in std::mem::take(&mut self.messages) {
            match self.credit.handle(msg, now)? {
                ProducerAction::None => {}
                ProducerAction::Open {
                    partition,
                    subpartition,
                } => {
                    let p = partitions.get(partition)?;
                    let notify = self.notify.clone();
                    self.view =
                        Some(p.create_view(subpartition, Arc::new(move || notify.notify_one()))?);
                }
                ProducerAction::Resume => {
                    if let Some(v) = &self.view {
                        v.resume_consumption();
                    }
                }
                ProducerAction::Cancel | ProducerAction::Close => return Ok(false),
            }
        }
        Ok(true)
    }

    async fn run(
        &mut self,
        partitions: &PartitionManager,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), NetworkError> {
        // Stage 1: the partition request.
        while self.view.is_none() {
            let more = tokio::time::timeout(REQUEST_TIMEOUT, self.read_messages(recv))
                .await
                .map_err(|_| NetworkError::malformed("no partition request"))??;
            if !self.apply_messages(partitions)? || !more {
                return Ok(());
            }
        }
        // Stage 2: send against credit, react to consumer messages.
        let mut batch: Vec<Bytes> = Vec::with_capacity(2 * WRITE_BATCH);
        let mut finished = false;
        loop {
            if !finished {
                let view = self.view.as_ref().expect("set in stage 1");
                while batch.len() < 2 * WRITE_BATCH {
                    let allow_data = self.credit.may_send(DataType::Data);
                    let Some(polled) = view.poll_next(allow_data)? else {
                        if !allow_data && view.next_is_data() {
                            self.credit.note_starved(Instant::now());
                        }
                        break;
                    };
                    let (data_type, payload) = match polled.payload {
                        Payload::Data(b) => (DataType::Data, b),
                        Payload::Event(e) => {
                            finished |= e == Event::EndOfPartition;
                            let mut v = Vec::with_capacity(MAX_EVENT_SIZE);
                            e.encode(&mut v);
                            (DataType::Event, Bytes::from(v))
                        }
                    };
                    let header =
                        self.credit
                            .on_send(data_type, payload.len() as u32, polled.backlog)?;
                    batch.push(Bytes::copy_from_slice(&encode_buffer_header(&header)));
                    batch.push(payload);
                    if finished {
                        break;
                    }
                }
                if !batch.is_empty() {
                    send.write_all_chunks(&mut batch)
                        .await
                        .map_err(|_| NetworkError::Closed {
                            what: "data stream",
                        })?;
                    batch.clear();
                    if finished {
                        let _ = send.finish();
                    }
                    continue;
                }
            }
            if !self.messages.is_empty() {
                if !self.apply_messages(partitions)? {
                    return Ok(());
                }
                continue;
            }
            let notify = self.notify.clone();
            tokio::select! {
                more = self.read_messages(recv) => {
                    if !more? {
                        return Ok(());
                    }
                }
                _ = notify.notified(), if !finished => {}
            }
        }
    }
}

enum InFlight {
    Data(Buffer),
    Event(Vec<u8>),
}

struct ConsumerStream {
    credit: ConsumerCredit<Buffer>,
    inbox: Arc<RemoteInbox>,
    segment_size: usize,
}

impl ConsumerStream {
    async fn run(
        &mut self,
        transport: &QuicTransport,
        peer: SocketAddr,
    ) -> Result<(), NetworkError> {
        // Reserve the exclusive buffers: they are the initial credit.
        while !self.credit.needs_stream() {
            tokio::select! {
                b = self.inbox.exclusive_pool.request() => self.credit.add_exclusive(b?),
                _ = self.inbox.control_notify.notified() => {
                    if self.inbox.take_control().cancel {
                        return Ok(());
                    }
                }
            }
        }
        loop {
            let conn = transport.connection(peer).await?;
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| NetworkError::transport(peer, e))?;
            let ended = self.run_stream(peer, &mut send, &mut recv).await;
            match ended {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // Partition not found yet: wait out the backoff, then request again.
                    let _ = send.finish();
                    let Some(at) = self.credit.poll_timeout() else {
                        return Ok(());
                    };
                    let deadline = tokio::time::Instant::from_std(at);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            _ = self.inbox.control_notify.notified() => {
                                if self.inbox.take_control().cancel {
                                    return Ok(());
                                }
                            }
                        }
                    }
                    self.credit.handle_timeout(Instant::now());
                }
                Err(e) => {
                    let code = if matches!(
                        e,
                        NetworkError::MalformedFrame { .. }
                            | NetworkError::CreditViolation { .. }
                            | NetworkError::SequenceGap { .. }
                    ) {
                        PROTOCOL_VIOLATION_CODE
                    } else {
                        CANCELLED_CODE
                    };
                    let _ = send.reset(VarInt::from_u32(code));
                    let _ = recv.stop(VarInt::from_u32(code));
                    return Err(e);
                }
            }
        }
    }

    /// Runs one stream; `Ok(true)` = channel done, `Ok(false)` = retry after backoff.
    async fn run_stream(
        &mut self,
        peer: SocketAddr,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<bool, NetworkError> {
        let mut decoder = ProducerDecoder::new(self.segment_size);
        let mut in_flight: Option<InFlight> = None;
        let mut out = Vec::new();
        let mut chunks: [Bytes; READ_BATCH] = Default::default();
        loop {
            let control = self.inbox.take_control();
            if control.cancel {
                self.credit.cancel();
            }
            if control.resume {
                self.credit.resume_consumption();
            }
            out.clear();
            while let Some(m) = self.credit.poll_transmit() {
                encode_consumer(&m, &mut out);
            }
            if !out.is_empty() {
                send.write_all(&out)
                    .await
                    .map_err(|e| NetworkError::transport(peer, e))?;
            }
            if self.credit.is_closed() {
                let _ = send.finish();
                return Ok(true);
            }
            if self.credit.poll_timeout().is_some() {
                return Ok(false);
            }
            let wants_floating = self.credit.floating_wanted() > 0;
            tokio::select! {
                chunk = recv.read_chunk(usize::MAX, true) => {
                    let chunk = chunk.map_err(|e| NetworkError::transport(peer, e))?;
                    let Some(chunk) = chunk else {
                        return Err(NetworkError::transport(peer, "producer ended the stream before end of partition"));
                    };
                    self.on_bytes(chunk.bytes, &mut decoder, &mut in_flight)?;
                    // Take whatever else has arrived without another trip through the
                    // select: a 32 KiB buffer arrives as a few dozen QUIC frames.
                    while !self.credit.is_closed() && self.credit.poll_timeout().is_none() {
                        let Some(more) = recv.read_chunks(&mut chunks).now_or_never() else {
                            break;
                        };
                        let n = more.map_err(|e| NetworkError::transport(peer, e))?.ok_or_else(|| {
                            NetworkError::transport(peer, "producer ended the stream before end of partition")
                        })?;
                        for bytes in &mut chunks[..n] {
                            self.on_bytes(std::mem::take(bytes), &mut decoder, &mut in_flight)?;
                        }
                        if n < chunks.len() {
                            break;
                        }
                    }
                }
                b = self.inbox.exclusive_pool.request() => self.credit.add_exclusive(b?),
                b = self.inbox.floating_pool.request(), if wants_floating => self.credit.add_floating(b?),
                _ = self.inbox.control_notify.notified() => {}
            }
        }
    }

    fn on_bytes(
        &mut self,
        mut bytes: Bytes,
        decoder: &mut ProducerDecoder,
        in_flight: &mut Option<InFlight>,
    ) -> Result<(), NetworkError> {
        while let Some(frame) = decoder.decode(&mut bytes)? {
            self.on_frame(frame, in_flight)?;
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        frame: ProducerFrame,
        in_flight: &mut Option<InFlight>,
    ) -> Result<(), NetworkError> {
        match frame {
            ProducerFrame::Header(h) => {
                *in_flight = Some(self.begin(&h)?);
            }
            ProducerFrame::Payload { chunk, last } => {
                match in_flight {
                    Some(InFlight::Data(buf)) => {
                        if buf.append(&chunk) < chunk.len() {
                            return Err(NetworkError::malformed("payload larger than a buffer"));
                        }
                    }
                    Some(InFlight::Event(v)) => v.extend_from_slice(&chunk),
                    None => return Err(NetworkError::malformed("payload without header")),
                }
                if last {
                    match in_flight.take() {
                        Some(InFlight::Data(buf)) => self.inbox.push(Payload::Data(buf.freeze())),
                        Some(InFlight::Event(v)) => {
                            let event = Event::decode(&v)?;
                            if event == Event::EndOfPartition {
                                self.credit.on_end_of_partition();
                            }
                            self.inbox.push(Payload::Event(event));
                        }
                        None => {}
                    }
                }
            }
            ProducerFrame::Error { kind, message } => {
                self.credit.on_error(kind, &message, Instant::now())?;
            }
        }
        Ok(())
    }

    fn begin(&mut self, h: &BufferHeader) -> Result<InFlight, NetworkError> {
        Ok(match self.credit.on_buffer(h)? {
            Received::Data(buf) => InFlight::Data(buf),
            Received::Event => InFlight::Event(Vec::with_capacity(h.size as usize)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_selector::ChannelSelector;
    use crate::config::BufferTimeout;
    use crate::environment::NetworkEnvironment;
    use crate::input_gate::{InputGate, ReaderItem, RecordReader};
    use crate::metrics::TaskIoMetrics;
    use crate::partition::ResultPartition;
    use crate::record_writer::RecordWriter;
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(20);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn config() -> NetworkConfig {
        NetworkConfig {
            memory: 256 * 4096,
            segment_size: 4096,
            request_backoff_initial: Duration::from_millis(5),
            ..NetworkConfig::default()
        }
    }

    fn node(
        rt: &tokio::runtime::Runtime,
        secret: &ClusterSecret,
    ) -> (NetworkEnvironment, SocketAddr) {
        let _guard = rt.enter();
        let env = NetworkEnvironment::new(config()).unwrap();
        let addr = env
            .start_transport("127.0.0.1:0".parse().unwrap(), secret.clone())
            .unwrap();
        (env, addr)
    }

    fn remote_gate(
        env: &NetworkEnvironment,
        producer: SocketAddr,
        partition: PartitionId,
        subs: u32,
    ) -> InputGate {
        let mut b = env
            .input_gate_builder(Arc::new(TaskIoMetrics::default()))
            .unwrap();
        for i in 0..subs {
            env.add_remote_channel(&mut b, producer, partition, i)
                .unwrap();
        }
        b.build()
    }

    fn spawn_writer(
        p: Arc<ResultPartition>,
        records: usize,
        size: usize,
    ) -> (std::thread::JoinHandle<()>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            let mut w = RecordWriter::new(
                p,
                ChannelSelector::rebalance(1),
                BufferTimeout::Never,
                Arc::new(TaskIoMetrics::default()),
                None,
            )
            .unwrap();
            let rec = vec![0xabu8; size];
            for _ in 0..records {
                w.emit(&rec).unwrap();
            }
            w.finish().unwrap();
            let _ = tx.send(());
        });
        (h, rx)
    }

    /// Reads until the gate ends; returns payload bytes of all records.
    fn drain(gate: InputGate) -> Result<u64, NetworkError> {
        let mut r = RecordReader::new(gate);
        let mut bytes = 0u64;
        loop {
            match r.next_timeout(WAIT)? {
                Some(ReaderItem::Record { record, .. }) => bytes += record.len() as u64,
                Some(ReaderItem::Event { .. }) => {}
                None => {
                    assert!(r.gate_mut().is_finished(), "timed out");
                    return Ok(bytes);
                }
            }
        }
    }

    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn records_round_trip_over_quic_and_pools_return_to_full() {
        let rt = runtime();
        let secret = ClusterSecret::generate();
        let (a, a_addr) = node(&rt, &secret);
        let (b, _) = node(&rt, &secret);
        let gate = remote_gate(&b, a_addr, PartitionId(10), 2);
        // The partition is registered after the request went out: exercises the retry.
        let p = a.create_partition(PartitionId(10), 2).unwrap();
        let (writer, _) = spawn_writer(p.clone(), 20_000, 8);
        let mut r = RecordReader::new(gate);
        let (mut records, mut ends) = (0, 0);
        while let Some(item) = r.next_timeout(WAIT).unwrap() {
            match item {
                ReaderItem::Record { record, .. } => {
                    assert_eq!(record, &[0xab; 8]);
                    records += 1;
                }
                ReaderItem::Event { event, .. } => {
                    assert_eq!(event, Event::EndOfPartition);
                    ends += 1;
                }
            }
        }
        writer.join().unwrap();
        assert_eq!((records, ends), (20_000, 2));
        assert_eq!(b.transport().unwrap().num_connections(), 1);
        drop(r);
        a.release_partition(PartitionId(10));
        drop(p);
        eventually("consumer pools to return", || {
            b.buffer_pool().segments_in_use() == 0
        });
        eventually("producer pools to return", || {
            a.buffer_pool().segments_in_use() == 0
        });
    }

    #[test]
    fn stalled_channel_does_not_stop_its_neighbour_on_the_same_connection() {
        let rt = runtime();
        let secret = ClusterSecret::generate();
        let (a, a_addr) = node(&rt, &secret);
        let (b, _) = node(&rt, &secret);
        let p1 = a.create_partition(PartitionId(21), 1).unwrap();
        let p2 = a.create_partition(PartitionId(22), 1).unwrap();
        let stalled = remote_gate(&b, a_addr, PartitionId(21), 1);
        let flowing = remote_gate(&b, a_addr, PartitionId(22), 1);
        // 2 MB each: far more than credit plus pools can hold for the stalled channel.
        let (w1, w1_done) = spawn_writer(p1.clone(), 512, 4092);
        let (w2, _) = spawn_writer(p2.clone(), 512, 4092);
        let flowed = drain(flowing).unwrap();
        assert_eq!(
            flowed,
            512 * 4092,
            "the flowing channel delivered everything"
        );
        w2.join().unwrap();
        // Meanwhile the stalled channel's producer is still blocked on its pool ...
        assert!(
            w1_done.try_recv().is_err(),
            "stalled producer cannot have finished"
        );
        assert_eq!(
            b.transport().unwrap().num_connections(),
            1,
            "both channels share one connection"
        );
        // ... holding only what credit allowed: both exclusive buffers are full.
        eventually("stalled channel to use its credit", || {
            stalled.pool_usage().exclusive == 1.0
        });
        // Draining the stalled consumer lets the blocked producer resume and finish.
        assert_eq!(drain(stalled).unwrap(), 512 * 4092);
        w1_done.recv_timeout(WAIT).unwrap();
        w1.join().unwrap();
        drop((p1, p2));
        a.release_partition(PartitionId(21));
        a.release_partition(PartitionId(22));
        eventually("consumer pools to return", || {
            b.buffer_pool().segments_in_use() == 0
        });
        eventually("producer pools to return", || {
            a.buffer_pool().segments_in_use() == 0
        });
    }

    /// A raw, authenticated client connection to `addr`, for sending bad frames.
    async fn raw_client(
        addr: SocketAddr,
        secret: &ClusterSecret,
    ) -> (quinn::Endpoint, quinn::Connection) {
        let client =
            security::quic_client_config(DATA_ALPN, Arc::new(transport_config(&config()))).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(client);
        let conn = ep
            .connect(addr, security::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        security::authenticate_client(&conn, secret).await.unwrap();
        (ep, conn)
    }

    async fn read_error_kind(recv: &mut RecvStream) -> Option<ErrorKind> {
        let bytes = tokio::time::timeout(WAIT, recv.read_to_end(4096))
            .await
            .ok()?
            .ok()?;
        let mut input = Bytes::from(bytes);
        match ProducerDecoder::new(4096).decode(&mut input) {
            Ok(Some(ProducerFrame::Error { kind, .. })) => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn garbage_and_credit_violations_close_the_stream_and_the_process_carries_on() {
        let rt = runtime();
        let secret = ClusterSecret::generate();
        let (a, a_addr) = node(&rt, &secret);
        let (b, _) = node(&rt, &secret);
        let p = a.create_partition(PartitionId(30), 2).unwrap();
        rt.block_on(async {
            let (_ep, conn) = raw_client(a_addr, &secret).await;
            // Garbage instead of a partition request.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&[0x99, 0xff, 0x00, 0x13]).await.unwrap();
            assert_eq!(
                read_error_kind(&mut recv).await,
                Some(ErrorKind::ProtocolViolation)
            );
            // A valid request followed by a credit violation (AddCredit(0)).
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let mut out = Vec::new();
            encode_consumer(
                &ConsumerMessage::PartitionRequest {
                    partition: PartitionId(30),
                    subpartition: 1,
                    initial_credit: 1,
                },
                &mut out,
            );
            encode_consumer(&ConsumerMessage::AddCredit(0), &mut out);
            send.write_all(&out).await.unwrap();
            assert_eq!(
                read_error_kind(&mut recv).await,
                Some(ErrorKind::ProtocolViolation)
            );
            // The connection itself still serves well-formed requests.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let mut out = Vec::new();
            encode_consumer(
                &ConsumerMessage::PartitionRequest {
                    partition: PartitionId(99),
                    subpartition: 0,
                    initial_credit: 1,
                },
                &mut out,
            );
            send.write_all(&out).await.unwrap();
            assert_eq!(
                read_error_kind(&mut recv).await,
                Some(ErrorKind::PartitionNotFound)
            );
        });
        // Subpartition 0 is untouched and still flows to a proper consumer; subpartition
        // 1 was released by the violation, so its writes are dropped.
        let mut builder = b
            .input_gate_builder(Arc::new(TaskIoMetrics::default()))
            .unwrap();
        b.add_remote_channel(&mut builder, a_addr, PartitionId(30), 0)
            .unwrap();
        let gate = builder.build();
        let (writer, _) = spawn_writer(p.clone(), 1000, 100);
        let got = drain(gate).unwrap();
        writer.join().unwrap();
        assert!(got > 0);
        assert!(
            p.dropped_buffers() > 0,
            "writes to the violated subpartition were dropped"
        );
        a.release_partition(PartitionId(30));
        drop(p);
        eventually("producer pools to return", || {
            a.buffer_pool().segments_in_use() == 0
        });
        eventually("consumer pools to return", || {
            b.buffer_pool().segments_in_use() == 0
        });
    }

    #[test]
    fn producer_sending_without_credit_fails_the_channel_and_buffers_return() {
        let rt = runtime();
        let secret = ClusterSecret::generate();
        let (b, _) = node(&rt, &secret);
        // A fake producer that ignores credit. The consumer may legitimately announce
        // floating buffers (backlog + initial credit) while data arrives, so only more
        // buffers than exclusive + all floating ones, none consumed, is a certain violation.
        let never_credited =
            config().exclusive_buffers_per_channel + config().floating_buffers_per_gate + 1;
        let server_cfg =
            security::quic_server_config(DATA_ALPN, Arc::new(transport_config(&config()))).unwrap();
        let fake = {
            let _g = rt.enter();
            quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
        };
        let fake_addr = fake.local_addr().unwrap();
        let secret2 = secret.clone();
        let server = rt.spawn(async move {
            let conn = fake.accept().await.unwrap().await.unwrap();
            security::authenticate_server(&conn, &secret2)
                .await
                .unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut msgs = Vec::new();
            let mut dec = ConsumerDecoder::default();
            while msgs.is_empty() {
                let chunk = recv.read_chunk(1024, true).await.unwrap().unwrap();
                dec.decode(&chunk.bytes, &mut msgs).unwrap();
            }
            assert!(matches!(
                msgs[0],
                ConsumerMessage::PartitionRequest {
                    initial_credit: 2,
                    ..
                }
            ));
            for seq in 0..never_credited {
                let h = BufferHeader {
                    seq,
                    backlog: 0,
                    data_type: DataType::Data,
                    size: 4,
                };
                send.write_all(&encode_buffer_header(&h)).await.unwrap();
                send.write_all(&[0, 0, 0, 0]).await.unwrap();
            }
            // Wait until the consumer gives up on the stream.
            let _ = tokio::time::timeout(WAIT, recv.read_to_end(1 << 16)).await;
            conn
        });
        let mut gate = remote_gate(&b, fake_addr, PartitionId(40), 1);
        // Held, not dropped: a consumed buffer would come back as fresh credit.
        let mut held = Vec::new();
        let err = loop {
            match gate.next_timeout(Some(WAIT)) {
                Ok(Some(item)) => held.push(item),
                Ok(None) => panic!("timed out"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, NetworkError::CreditViolation { .. }), "{err}");
        drop(held);
        drop(gate);
        let _conn = rt.block_on(server).unwrap();
        eventually("consumer pools to return", || {
            b.buffer_pool().segments_in_use() == 0
        });
    }

    #[test]
    fn unauthenticated_connections_are_capped_per_address_and_cut_after_the_timeout() {
        let rt = runtime();
        let secret = ClusterSecret::generate();
        let (a, a_addr) = {
            let _guard = rt.enter();
            let env = NetworkEnvironment::new(config()).unwrap();
            let auth = AuthConfig {
                timeout: Duration::from_millis(500),
                max_pending_per_address: 4,
                ..AuthConfig::default()
            };
            let addr = env
                .start_transport_with("127.0.0.1:0".parse().unwrap(), secret.clone(), &auth, None)
                .unwrap();
            (env, addr)
        };
        let (established, refused) = rt.block_on(async {
            let client = security::quic_client_config(
                DATA_ALPN,
                Arc::new(quinn::TransportConfig::default()),
            )
            .unwrap();
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client);
            let mut established = Vec::new();
            let mut refused = 0;
            for _ in 0..10 {
                match ep.connect(a_addr, security::SERVER_NAME).unwrap().await {
                    Ok(conn) => established.push(conn),
                    Err(_) => refused += 1,
                }
            }
            (established, refused)
        });
        assert_eq!((established.len(), refused), (4, 6));
        // None of them authenticates: the server closes each after the timeout.
        rt.block_on(async {
            for conn in &established {
                let reason = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
                assert!(
                    matches!(&reason, quinn::ConnectionError::ApplicationClosed(c)
                        if c.error_code == security::AUTH_FAILED_CODE.into()),
                    "{reason:?}"
                );
            }
        });
        // Members still get partitions served.
        let (b, _) = node(&rt, &secret);
        let p = a.create_partition(PartitionId(60), 1).unwrap();
        let (writer, _) = spawn_writer(p.clone(), 100, 8);
        let mut r = RecordReader::new(remote_gate(&b, a_addr, PartitionId(60), 1));
        let mut records = 0;
        while let Some(item) = r.next_timeout(WAIT).unwrap() {
            if let ReaderItem::Record { .. } = item {
                records += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(records, 100);
    }

    #[test]
    fn peer_with_wrong_secret_is_refused() {
        let rt = runtime();
        let (a, a_addr) = node(&rt, &ClusterSecret::generate());
        let (c, _) = node(&rt, &ClusterSecret::generate());
        let _p = a.create_partition(PartitionId(50), 1).unwrap();
        let mut gate = remote_gate(&c, a_addr, PartitionId(50), 1);
        let err = gate.next_timeout(Some(WAIT)).unwrap_err();
        assert!(matches!(err, NetworkError::Authentication { .. }), "{err}");
        drop(gate);
        eventually("consumer pools to return", || {
            c.buffer_pool().segments_in_use() == 0
        });
    }
}
