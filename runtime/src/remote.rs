//! The RPC wire protocol on one QUIC bidirectional stream per gateway session.
//!
//! A session is what one [`RpcService::connect`](crate::service::RpcService::connect)
//! opens on the (shared, authenticated) connection to a peer:
//!
//! 1. client → server: [`Hello`] `{version, endpoint, gateway, max_frame}`;
//! 2. server → client: [`HelloReply`]: accepted with the server's maximum frame size, or
//!    the [`HandshakeError`] (version, unknown endpoint, gateway mismatch) — then the
//!    stream is closed, the connection stays;
//! 3. then any number of [`WireRequest`] frames (asks carry an id; tells expect no answer)
//!    and, from the server, [`WireResponse`] frames with the ask's id, in completion order.
//!
//! Every message is one length-prefixed frame ([`crate::frame`]) holding rmp-serde. Each
//! side refuses frames above its own maximum; the sender checks against the smaller of the
//! two maxima before writing, so an oversize call fails alone with
//! [`RpcError::FrameTooLarge`] and the session keeps serving. A frame that does not decode
//! means the peer is broken or hostile: the server logs it and closes the connection.
//!
//! # Bounded tells
//!
//! A client session queues outgoing frames for one writer task, which writes them as fast
//! as QUIC flow control lets it. Asks are bounded by their callers awaiting them; tells
//! return at once, so a peer that is slow, stopped or gone would let them pile up without
//! end. At most `rpc.max-pending-tells` tells wait in a session's queue (counted from
//! when the tell is queued until the writer takes it); the next one fails with
//! [`RpcError::QueueFull`] and is not sent. The caller decides: drop it (heartbeats),
//! retry later, or treat the peer as lost.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::address::RpcAddress;
use crate::endpoint::Call;
use crate::error::{HandshakeError, RpcError};
use crate::fencing::FencingToken;
use crate::frame::{FrameDecoder, FrameError, HEADER_LEN};
use crate::gateway::Protocol;
use crate::tasks::TaskSet;

/// Version of the RPC wire protocol; peers must agree exactly. 2: addresses in messages
/// carry a [`HostPort`](crate::address::HostPort) (an IP socket or a host name).
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// Opens a session.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) version: u32,
    pub(crate) endpoint: String,
    pub(crate) gateway: String,
    pub(crate) max_frame: u64,
}

/// Answers a [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelloReply {
    Accepted { max_frame: u64 },
    Rejected(HandshakeError),
}

#[derive(Serialize)]
struct WireRequestRef<'a, R> {
    id: u64,
    tell: bool,
    token: Option<FencingToken>,
    body: &'a R,
}

/// A call on the wire.
#[derive(Deserialize)]
pub(crate) struct WireRequest<R> {
    id: u64,
    tell: bool,
    token: Option<FencingToken>,
    body: R,
}

/// The answer to an ask.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireResponse<T> {
    id: u64,
    result: Result<T, RpcError>,
}

/// Encodes `msg` as one frame (length prefix + rmp-serde), refusing payloads above `max`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    msg: &T,
    max: usize,
    what: &str,
) -> Result<BytesMut, RpcError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    let mut writer = buf.writer();
    rmp_serde::encode::write(&mut writer, msg).map_err(|e| RpcError::Codec {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let mut buf = writer.into_inner();
    let len = buf.len() - HEADER_LEN;
    if len > max {
        return Err(RpcError::FrameTooLarge { size: len, max });
    }
    buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes a message with the nesting limit of [`crate::frame::decode_payload`]: a peer's
/// deeply nested message is a codec error, not a stack overflow.
pub(crate) fn decode<T: DeserializeOwned>(frame: &[u8], what: &str) -> Result<T, RpcError> {
    crate::frame::decode_payload(frame).map_err(|e| RpcError::Codec {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Why a stream stopped yielding frames.
#[derive(Debug)]
pub(crate) enum ReadError {
    Frame(FrameError),
    Stream(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Frame(e) => write!(f, "{e}"),
            ReadError::Stream(e) => write!(f, "{e}"),
        }
    }
}

/// Reads frames from a QUIC receive stream.
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream, max: usize) -> Self {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(max),
        }
    }

    /// Returns the next frame, `None` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(ReadError::Frame)? {
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                Ok(None) => {
                    self.decoder.finish().map_err(ReadError::Frame)?;
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Stream(e.to_string())),
            }
        }
    }
}

/// Writes queued frames, coalescing whatever is queued into one write.
pub(crate) async fn write_frames<F: Into<BytesMut>>(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<F>,
) {
    const BATCH: usize = 256 * 1024;
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.unsplit(first.into());
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.unsplit(more.into()),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&batch).await {
            tracing::debug!(error = %e, "session stream closed while writing");
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}

/// Counts the tells queued in one session against `rpc.max-pending-tells`.
#[derive(Debug)]
pub(crate) struct TellBudget {
    queued: AtomicUsize,
    capacity: usize,
}

impl TellBudget {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(TellBudget {
            queued: AtomicUsize::new(0),
            capacity,
        })
    }

    /// Takes one place in the queue; `None` when all `capacity` places are taken.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<TellPermit> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()?;
        Some(TellPermit(self.clone()))
    }
}

/// One queued tell; gives its place back when dropped (taken by the writer, or dropped
/// with the queue).
#[derive(Debug)]
pub(crate) struct TellPermit(Arc<TellBudget>);

impl Drop for TellPermit {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A frame in a client session's queue; a tell carries its permit.
pub(crate) struct Outbound {
    frame: BytesMut,
    _permit: Option<TellPermit>,
}

impl From<Outbound> for BytesMut {
    fn from(outbound: Outbound) -> BytesMut {
        outbound.frame
    }
}

/// QUIC application close code for a connection given up on: its peer was declared lost
/// (heartbeat timeout, death-watch) or stopped answering handshakes.
pub(crate) const PEER_LOST_CODE: u32 = 0x524c;

type ReplySender<P> = oneshot::Sender<Result<<P as Protocol>::Response, RpcError>>;

struct SessionState<P: Protocol> {
    pending: HashMap<u64, ReplySender<P>>,
    /// Why the session ended; set once, after which nothing is sent.
    closed: Option<String>,
}

struct Shared<P: Protocol> {
    address: RpcAddress,
    writer: mpsc::UnboundedSender<Outbound>,
    tells: Arc<TellBudget>,
    state: Mutex<SessionState<P>>,
    next_id: AtomicU64,
    max_frame: usize,
}

impl<P: Protocol> Shared<P> {
    fn close(&self, reason: String) {
        let pending = {
            let mut state = self.state.lock();
            if state.closed.is_none() {
                state.closed = Some(reason.clone());
            }
            std::mem::take(&mut state.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Err(RpcError::ConnectionLost {
                address: self.address.to_string(),
                reason: reason.clone(),
            }));
        }
    }
}

/// The client side of a session: what a remote gateway sends through.
pub(crate) struct ClientSession<P: Protocol> {
    shared: Arc<Shared<P>>,
    /// The (shared) connection the session runs on.
    conn: quinn::Connection,
    _tasks: TaskSet,
}

impl<P: Protocol> ClientSession<P> {
    /// Performs the handshake on a fresh stream and starts the session's reader and writer;
    /// at most `max_pending_tells` tells wait in its queue.
    pub(crate) async fn open(
        conn: &quinn::Connection,
        address: RpcAddress,
        our_max: usize,
        handshake_timeout: Duration,
        max_pending_tells: usize,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, RpcError> {
        let unreachable = |reason: String| RpcError::Unreachable {
            address: address.to_string(),
            reason,
        };
        let handshake = async {
            let (mut send, recv) = conn
                .open_bi()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let hello = Hello {
                version: PROTOCOL_VERSION,
                endpoint: address.endpoint.clone(),
                gateway: P::NAME.to_string(),
                max_frame: our_max as u64,
            };
            let frame = encode(&hello, our_max, "hello")?;
            send.write_all(&frame)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut reader = FrameReader::new(recv, our_max);
            let reply = match reader.next().await {
                Ok(Some(frame)) => decode::<HelloReply>(&frame, "hello reply")?,
                Ok(None) => return Err(unreachable("the peer closed the session".into())),
                Err(e) => return Err(unreachable(e.to_string())),
            };
            match reply {
                HelloReply::Accepted { max_frame } => Ok((send, reader, max_frame)),
                HelloReply::Rejected(source) => Err(RpcError::Handshake {
                    address: address.to_string(),
                    source,
                }),
            }
        };
        let (send, reader, their_max) = tokio::time::timeout(handshake_timeout, handshake)
            .await
            .map_err(|_| unreachable("handshake timed out".into()))??;

        let (writer, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            address,
            writer,
            tells: TellBudget::new(max_pending_tells),
            state: Mutex::new(SessionState {
                pending: HashMap::new(),
                closed: None,
            }),
            next_id: AtomicU64::new(1),
            max_frame: our_max.min(usize::try_from(their_max).unwrap_or(usize::MAX)),
        });
        // The writer is not owned by the session: when the last gateway goes, the
        // reader is aborted, the queue's sender drops with `Shared`, and the writer
        // still sends every frame queued before (a tell followed by dropping the
        // gateway must arrive) and then finishes the stream.
        runtime.spawn(write_frames(send, rx));
        let tasks = TaskSet::new(runtime);
        tasks.spawn("rpc-session-reader", read_responses(reader, shared.clone()));
        Ok(ClientSession {
            shared,
            conn: conn.clone(),
            _tasks: tasks,
        })
    }

    /// Closes the QUIC connection under this session, and with it every session to the
    /// same peer socket; the next connect dials a new one. For a peer declared lost: a
    /// killed process's connection would otherwise look open until its idle timeout.
    pub(crate) fn close_connection(&self, reason: &str) {
        tracing::debug!(address = %self.shared.address, %reason, "closing the connection");
        self.conn.close(PEER_LOST_CODE.into(), reason.as_bytes());
    }

    fn encode_request(
        &self,
        id: u64,
        tell: bool,
        request: &P::Request,
        token: Option<FencingToken>,
    ) -> Result<BytesMut, RpcError> {
        let msg = WireRequestRef {
            id,
            tell,
            token,
            body: request,
        };
        encode(&msg, self.shared.max_frame, P::method_name(request))
    }

    /// Sends an ask; the returned future resolves with its answer.
    pub(crate) fn ask(
        &self,
        request: &P::Request,
        token: Option<FencingToken>,
    ) -> Result<PendingReply<P>, RpcError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode_request(id, false, request, token)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.state.lock();
            if let Some(reason) = &state.closed {
                return Err(self.unreachable(reason));
            }
            state.pending.insert(id, tx);
        }
        let outbound = Outbound {
            frame,
            _permit: None,
        };
        if self.shared.writer.send(outbound).is_err() {
            self.shared.state.lock().pending.remove(&id);
            return Err(self.unreachable("the session writer stopped"));
        }
        Ok(PendingReply {
            id,
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Queues a tell; fails with [`RpcError::QueueFull`] when `max_pending_tells` are
    /// already waiting (see the module docs).
    pub(crate) fn tell(
        &self,
        request: &P::Request,
        token: Option<FencingToken>,
    ) -> Result<(), RpcError> {
        let frame = self.encode_request(0, true, request, token)?;
        if let Some(reason) = &self.shared.state.lock().closed {
            return Err(self.unreachable(reason));
        }
        let permit = self
            .shared
            .tells
            .try_acquire()
            .ok_or_else(|| RpcError::QueueFull {
                address: self.shared.address.to_string(),
                capacity: self.shared.tells.capacity,
            })?;
        let outbound = Outbound {
            frame,
            _permit: Some(permit),
        };
        self.shared
            .writer
            .send(outbound)
            .map_err(|_| self.unreachable("the session writer stopped"))
    }

    fn unreachable(&self, reason: &str) -> RpcError {
        RpcError::Unreachable {
            address: self.shared.address.to_string(),
            reason: reason.to_string(),
        }
    }
}

async fn read_responses<P: Protocol>(mut reader: FrameReader, shared: Arc<Shared<P>>) {
    let reason = loop {
        match reader.next().await {
            Ok(Some(frame)) => match decode::<WireResponse<P::Response>>(&frame, "response") {
                Ok(response) => {
                    let tx = shared.state.lock().pending.remove(&response.id);
                    // No entry: the caller timed out and forgot the id.
                    if let Some(tx) = tx {
                        let _ = tx.send(response.result);
                    }
                }
                Err(e) => break format!("undecodable response: {e}"),
            },
            Ok(None) => break "the peer closed the session".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    tracing::debug!(address = %shared.address, %reason, "rpc session ended");
    shared.close(reason);
}

/// The answer to one ask; dropping it forgets the ask.
pub(crate) struct PendingReply<P: Protocol> {
    id: u64,
    rx: oneshot::Receiver<Result<P::Response, RpcError>>,
    shared: Arc<Shared<P>>,
}

impl<P: Protocol> Future for PendingReply<P> {
    type Output = Result<P::Response, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(RpcError::ConnectionLost {
                address: self.shared.address.to_string(),
                reason: "the session ended".into(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<P: Protocol> Drop for PendingReply<P> {
    fn drop(&mut self) {
        self.shared.state.lock().pending.remove(&self.id);
    }
}

/// Serves one accepted session for an endpoint of protocol `P`.
///
/// Returns `Err` when the peer violated the protocol (the caller closes the connection).
pub(crate) async fn serve_session<P: Protocol>(
    mut reader: FrameReader,
    writer: mpsc::UnboundedSender<BytesMut>,
    recipient: actix::Recipient<Call<P>>,
    endpoint: String,
    max_frame: usize,
) -> Result<(), String> {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            frame = reader.next() => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(ReadError::Stream(e)) => {
                        tracing::debug!(endpoint, error = %e, "rpc session stream ended");
                        break;
                    }
                    Err(ReadError::Frame(e)) => return Err(e.to_string()),
                };
                let request: WireRequest<P::Request> =
                    decode(&frame, "request").map_err(|e| e.to_string())?;
                let call = Call { request: request.body, token: request.token };
                if request.tell {
                    // `do_send` ignores the mailbox capacity: a burst of tells is queued,
                    // never dropped. Only a terminated endpoint loses them.
                    if recipient.connected() {
                        recipient.do_send(call);
                    } else {
                        tracing::debug!(endpoint, "tell dropped: endpoint terminated");
                    }
                    continue;
                }
                let id = request.id;
                let send = recipient.send(call);
                let endpoint = endpoint.clone();
                in_flight.push(async move {
                    let result = match send.await {
                        Ok(result) => result,
                        Err(_) => Err(RpcError::EndpointTerminated { endpoint }),
                    };
                    let frame = match encode(&WireResponse { id, result }, max_frame, "response") {
                        Ok(frame) => frame,
                        Err(e) => {
                            // The answer itself is too large or unencodable: tell the caller.
                            let err: Result<P::Response, RpcError> = Err(e);
                            match encode(&WireResponse { id, result: err }, max_frame, "response") {
                                Ok(frame) => frame,
                                Err(_) => return None,
                            }
                        }
                    };
                    Some(frame)
                });
            }
            Some(frame) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(frame) = frame {
                    if writer.send(frame).is_err() {
                        break;
                    }
                }
            }
        }
    }
    // Answer what is still in flight before closing our side.
    while let Some(frame) = in_flight.next().await {
        if let Some(frame) = frame {
            let _ = writer.send(frame);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::security::{
        quic_client_config, quic_endpoint, quic_server_config, RPC_ALPN, SERVER_NAME,
    };

    crate::gateway! {
        /// Takes tells and answers nothing.
        pub mod sink("sink") {
            /// Hands over some bytes.
            fn put(data: Vec<u8>);
        }
    }

    #[test]
    fn the_tell_budget_admits_capacity_tells_until_one_is_taken() {
        let budget = TellBudget::new(3);
        let mut permits: Vec<_> = (0..3).map(|_| budget.try_acquire().unwrap()).collect();
        assert!(
            budget.try_acquire().is_none(),
            "the 4th tell must not be queued"
        );
        permits.pop();
        let again = budget.try_acquire();
        assert!(again.is_some());
        assert!(budget.try_acquire().is_none());
    }

    /// A QUIC peer that accepts one session's handshake and then never reads from it.
    async fn never_reading_peer() -> (quinn::Endpoint, SocketAddr, oneshot::Sender<()>) {
        let transport = Arc::new(quinn::TransportConfig::default());
        let server = quic_server_config(RPC_ALPN, transport).unwrap();
        let endpoint = quic_endpoint(Some(server), SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let ep = endpoint.clone();
        tokio::spawn(async move {
            let conn = ep.accept().await.unwrap().await.unwrap();
            let (mut send, recv) = conn.accept_bi().await.unwrap();
            let mut reader = FrameReader::new(recv, 1 << 20);
            let hello: Hello = decode(&reader.next().await.unwrap().unwrap(), "hello").unwrap();
            assert_eq!(hello.gateway, "sink");
            let reply = HelloReply::Accepted { max_frame: 1 << 20 };
            send.write_all(&encode(&reply, 1 << 20, "reply").unwrap())
                .await
                .unwrap();
            // Holds the stream open, unread, until the test ends.
            let _ = stopped.await;
            drop((reader, send, conn));
        });
        (endpoint, addr, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tells_to_a_peer_that_never_reads_stop_at_the_bound_with_a_typed_error() {
        const CAP: usize = 64;
        let (_server, addr, stop) = never_reading_peer().await;
        let mut client = quic_endpoint(None, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        client.set_default_client_config(
            quic_client_config(RPC_ALPN, Arc::new(quinn::TransportConfig::default())).unwrap(),
        );
        let conn = client.connect(addr, SERVER_NAME).unwrap().await.unwrap();
        let session = ClientSession::<sink::Protocol>::open(
            &conn,
            RpcAddress::new(addr, "sink"),
            1 << 20,
            Duration::from_secs(5),
            CAP,
            tokio::runtime::Handle::current(),
        )
        .await
        .unwrap();

        // 16 KiB tells: QUIC flow control stops the writer after a few MiB at most, then
        // the queue fills. Without a bound every one of these would be queued.
        let request = sink::Request::put {
            data: vec![7; 16 * 1024],
        };
        let mut queued = 0usize;
        let error = loop {
            match session.tell(&request, None) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(queued < 5_000, "80 MB of tells queued without an error");
            tokio::task::yield_now().await;
        };
        assert_eq!(
            error,
            RpcError::QueueFull {
                address: format!("rill://{addr}/sink"),
                capacity: CAP,
            }
        );
        assert!(!error.may_have_been_delivered() && error.is_retryable());
        assert!(
            queued >= CAP,
            "only {queued} tells before the queue was full"
        );
        // The writer is stuck, so the queue stays full: the next tell fails at once too.
        assert!(matches!(
            session.tell(&request, None),
            Err(RpcError::QueueFull { .. })
        ));
        let _ = stop.send(());
    }
}
