//! The RPC service: one per process (or per component in a mini-cluster).
//!
//! An [`RpcService`] owns
//!
//! * a registry of local endpoints by name ([`RpcService::start_endpoint`]);
//! * one QUIC endpoint (a UDP socket) serving remote callers: every incoming connection
//!   goes through an [`admission::Gate`] (limits on connections pending authentication,
//!   `security.auth.*`) and must pass the authentication exchange before any stream on it
//!   is read; each bidirectional stream is then one gateway session ([`crate::remote`]);
//! * outgoing connections, one per peer socket, reused by every gateway to that peer and
//!   re-dialled when closed. A server that refuses our credentials is logged at WARN
//!   (rate-limited) unless [`RpcServiceConfig::report_refused_credentials`] is off.
//!
//! [`RpcService::connect`] hands out gateways. Which addresses yield a **local** gateway
//! (an actix `Recipient`: no serialization, no sockets, no authentication) is explicit,
//! [`RpcServiceConfig::local_calls`]: by default only this service's own endpoints; the
//! services of one [`ServiceDirectory`] (a mini-cluster in one OS process) also reach each
//! other locally; [`LocalCalls::Never`] puts every call on the wire, which tests of
//! serialization and authentication use. There is no process-wide table: two services
//! that were not given the same directory always talk over QUIC.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::address::RpcAddress;
use crate::config::{AuthConfig, HeartbeatConfig, RpcConfig};
use crate::death_watch::{liveness_of, Liveness, LivenessSource, SystemEndpoint, SYSTEM_ENDPOINT};
use crate::endpoint::{spawn_endpoint, Call, EndpointHandle, Lifecycle, RpcEndpoint};
use crate::error::{HandshakeError, RpcError};
use crate::gateway::{GatewayClient, Protocol, RawGateway, Target};
use crate::remote::{
    decode, encode, serve_session, write_frames, ClientSession, FrameReader, Hello, HelloReply,
    PROTOCOL_VERSION,
};
use crate::security::admission::{self, ConnectionLimits, CredentialWarnings, Gate, PendingBudget};
use crate::security::{
    authenticate_client, quic_client_config, quic_server_config, ClusterSecret, SecurityError,
    RPC_ALPN, SERVER_NAME,
};
use crate::tasks::TaskSet;

/// QUIC application close code for a peer that broke the RPC protocol.
pub const PROTOCOL_ERROR_CODE: u32 = 0x5250;

/// Errors while building a service or registering endpoints.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the RPC service to {bind}: {source}")]
    Bind {
        /// Requested address.
        bind: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TLS or credentials could not be set up.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// An endpoint of that name is already registered.
    #[error("an endpoint named {0} is already registered")]
    DuplicateEndpoint(String),
    /// Must be called inside a tokio runtime.
    #[error("the RPC service must be started inside a tokio runtime")]
    NoRuntime,
}

/// How to build an [`RpcService`].
#[derive(Debug, Clone)]
pub struct RpcServiceConfig {
    /// UDP address to listen on (port 0 = chosen by the OS).
    pub bind: SocketAddr,
    /// Timeouts and frame limits.
    pub rpc: RpcConfig,
    /// Death-watch timing (`heartbeat.*`).
    pub heartbeat: HeartbeatConfig,
    /// The cluster secret every peer must prove.
    pub secret: ClusterSecret,
    /// What peers get before they have authenticated (`security.auth.*`).
    pub auth: AuthConfig,
    /// Log at WARN (once per server and minute) when a server refuses our credentials.
    /// A caller that reports the returned error itself (the CLI) turns it off, so that the
    /// refusal is said once.
    pub report_refused_credentials: bool,
    /// Which calls take the local short-cut instead of the wire.
    pub local_calls: LocalCalls,
    /// The process's pending-connection limits, shared with its other QUIC servers;
    /// `None`: this service's own, from `auth`.
    pub pending_budget: Option<PendingBudget>,
}

/// Which in-process calls skip serialization, QUIC and authentication.
#[derive(Clone, Debug, Default)]
pub enum LocalCalls {
    /// Calls to this service's own endpoints (one process, one service).
    #[default]
    OwnService,
    /// Also calls to the other services registered in the directory (the processes of a
    /// mini-cluster living in one OS process).
    Directory(ServiceDirectory),
    /// None: every call is serialized and sent over QUIC, even to this service's own
    /// endpoints.
    Never,
}

/// RPC services that call each other locally: see [`LocalCalls::Directory`].
#[derive(Clone, Default)]
pub struct ServiceDirectory {
    services: Arc<DashMap<SocketAddr, Weak<Inner>>>,
}

impl ServiceDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sockets of the live services in the directory.
    pub fn sockets(&self) -> Vec<SocketAddr> {
        self.services
            .iter()
            .filter(|e| e.value().strong_count() > 0)
            .map(|e| *e.key())
            .collect()
    }
}

impl std::fmt::Debug for ServiceDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDirectory")
            .field("services", &self.sockets())
            .finish()
    }
}

impl RpcServiceConfig {
    /// Loopback, OS-chosen port, default RPC settings.
    pub fn local(secret: ClusterSecret) -> Self {
        RpcServiceConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            rpc: RpcConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            secret,
            auth: AuthConfig::default(),
            report_refused_credentials: true,
            local_calls: LocalCalls::OwnService,
            pending_budget: None,
        }
    }
}

/// Type-erased server side of one protocol for one endpoint.
trait ServeRemote: Send + Sync {
    fn serve(
        &self,
        reader: FrameReader,
        writer: mpsc::UnboundedSender<bytes::BytesMut>,
        max_frame: usize,
    ) -> BoxFuture<'static, Result<(), String>>;
}

struct Server<P: Protocol> {
    recipient: actix::Recipient<Call<P>>,
    name: String,
}

impl<P: Protocol> ServeRemote for Server<P> {
    fn serve(
        &self,
        reader: FrameReader,
        writer: mpsc::UnboundedSender<bytes::BytesMut>,
        max_frame: usize,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(serve_session::<P>(
            reader,
            writer,
            self.recipient.clone(),
            self.name.clone(),
            max_frame,
        ))
    }
}

struct Registered {
    gateway: &'static str,
    /// An `actix::Recipient<Call<P>>` for the endpoint's protocol `P`.
    local: Box<dyn Any + Send + Sync>,
    serve: Arc<dyn ServeRemote>,
    lifecycle: watch::Receiver<Lifecycle>,
    stop: Box<dyn Fn() + Send + Sync>,
}

struct Inner {
    local_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    gate: Arc<Gate>,
    refusals: CredentialWarnings,
    registry: DashMap<String, Registered>,
    connections: DashMap<SocketAddr, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>,
    config: RpcServiceConfig,
    tasks: TaskSet,
}

/// The RPC service of a process: see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct RpcService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcService")
            .field("address", &self.inner.local_addr)
            .finish()
    }
}

/// What an authenticated peer may open towards this service: a gateway session is one
/// bidirectional stream; no unidirectional streams are used.
const AUTHENTICATED: ConnectionLimits = ConnectionLimits {
    bidi_streams: quinn::VarInt::from_u32(4096),
    uni_streams: quinn::VarInt::from_u32(0),
    receive_window: quinn::VarInt::MAX,
};

/// Transport parameters of the RPC plane: `limits` are what the peer may open towards us
/// (the client side uses [`AUTHENTICATED`], the server side starts with
/// [`ConnectionLimits::PRE_AUTH`]).
fn transport_config(rpc: &RpcConfig, limits: ConnectionLimits) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(rpc.keep_alive_interval));
    // Values beyond QUIC's 2^62 ms limit fall back to quinn's default.
    if let Ok(idle) = quinn::IdleTimeout::try_from(rpc.idle_timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    limits.set_initial(&mut transport);
    Arc::new(transport)
}

impl RpcService {
    /// Binds the QUIC endpoint and starts accepting authenticated peers.
    ///
    /// Must be called inside a tokio runtime (multi-threaded for production use); the
    /// service's I/O runs on it.
    pub fn start(config: RpcServiceConfig) -> Result<RpcService, ServiceError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServiceError::NoRuntime)?;
        let mut server = quic_server_config(
            RPC_ALPN,
            transport_config(&config.rpc, ConnectionLimits::PRE_AUTH),
        )?;
        Gate::limit_server_config(&config.auth, &mut server);
        let mut endpoint = {
            let _guard = runtime.enter();
            crate::security::quic_endpoint(Some(server), config.bind).map_err(|source| {
                ServiceError::Bind {
                    bind: config.bind,
                    source,
                }
            })?
        };
        endpoint.set_default_client_config(quic_client_config(
            RPC_ALPN,
            transport_config(&config.rpc, AUTHENTICATED),
        )?);
        let local_addr = endpoint.local_addr().map_err(|source| ServiceError::Bind {
            bind: config.bind,
            source,
        })?;
        let gate = Gate::new(
            "rpc",
            config.secret.clone(),
            &config.auth,
            AUTHENTICATED,
            config.pending_budget.clone(),
        );
        let inner = Arc::new(Inner {
            local_addr,
            endpoint,
            gate,
            refusals: CredentialWarnings::new("rpc"),
            registry: DashMap::new(),
            connections: DashMap::new(),
            config,
            tasks: TaskSet::new(runtime),
        });
        if let LocalCalls::Directory(d) = &inner.config.local_calls {
            d.services.insert(local_addr, Arc::downgrade(&inner));
        }
        inner
            .tasks
            .spawn("rpc-accept", accept_loop(Arc::downgrade(&inner)));
        let service = RpcService { inner };
        let source: Weak<dyn LivenessSource> = Arc::downgrade(&service.inner) as Weak<_>;
        service
            .start_endpoint(SYSTEM_ENDPOINT, SystemEndpoint { service: source })?
            .start();
        tracing::info!(address = %local_addr, "RPC service listening");
        Ok(service)
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.inner.tasks.runtime()
    }

    pub(crate) fn heartbeat_config(&self) -> &HeartbeatConfig {
        &self.inner.config.heartbeat
    }

    /// For an address served in this process (and remote calls not forced): the
    /// endpoint's lifecycle, `None` inside when no such endpoint is registered.
    pub(crate) fn local_lifecycle(
        &self,
        address: &RpcAddress,
    ) -> Option<Option<watch::Receiver<Lifecycle>>> {
        // A host name is never served locally here: resolving is async, and the
        // addresses endpoints hand out (`address_of`) are IP sockets.
        let target = self.inner.local_target(address.host.as_socket()?)?;
        let lifecycle = target
            .registry
            .get(&address.endpoint)
            .map(|r| r.lifecycle.clone());
        Some(lifecycle)
    }

    /// The socket remote peers reach this service at.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address of the endpoint called `name` on this service.
    pub fn address_of(&self, name: &str) -> RpcAddress {
        RpcAddress::new(self.inner.local_addr, name)
    }

    /// The RPC settings of this service.
    pub fn rpc_config(&self) -> &RpcConfig {
        &self.inner.config.rpc
    }

    /// Registers `endpoint` under `name` and spawns its actor, in state
    /// [`Lifecycle::Stopped`]: call [`EndpointHandle::start`] to serve calls.
    ///
    /// The name is freed when the endpoint terminates.
    pub fn start_endpoint<E: RpcEndpoint>(
        &self,
        name: &str,
        endpoint: E,
    ) -> Result<EndpointHandle<E>, ServiceError> {
        let entry = match self.inner.registry.entry(name.to_string()) {
            dashmap::Entry::Occupied(_) => {
                return Err(ServiceError::DuplicateEndpoint(name.to_string()))
            }
            dashmap::Entry::Vacant(v) => v,
        };
        let weak = Arc::downgrade(&self.inner);
        let key = name.to_string();
        let handle = spawn_endpoint(
            name,
            endpoint,
            Box::new(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.registry.remove(&key);
                }
            }),
        );
        let recipient = handle.recipient();
        let stopper = handle.clone();
        entry.insert(Registered {
            gateway: <E::Protocol as Protocol>::NAME,
            local: Box::new(recipient.clone()),
            serve: Arc::new(Server::<E::Protocol> {
                recipient,
                name: name.to_string(),
            }),
            lifecycle: handle.lifecycle(),
            stop: Box::new(move || stopper.stop()),
        });
        Ok(handle)
    }

    /// Returns a gateway to the endpoint at `address`: local when it lives in this process
    /// (and remote calls are not forced), otherwise over an authenticated QUIC session.
    pub async fn connect<G: GatewayClient>(&self, address: &RpcAddress) -> Result<G, RpcError> {
        let timeout = self.inner.config.rpc.ask_timeout;
        // Resolved on every connect, so a reconnect finds a peer that came back elsewhere.
        let socket = address.host.resolve_from(self.inner.local_addr).await?;
        if let Some(target) = self.inner.local_target(socket) {
            let recipient = target.local_recipient::<G::Protocol>(address)?;
            return Ok(G::from_raw(RawGateway::new(
                Target::Local(recipient),
                address.clone(),
                timeout,
            )));
        }
        let conn = self.connection(socket).await?;
        let session = ClientSession::<G::Protocol>::open(
            &conn,
            address.clone(),
            self.inner.config.rpc.max_frame_size,
            self.inner.config.rpc.connect_timeout,
            self.inner.config.rpc.max_pending_tells,
            self.inner.tasks.runtime().clone(),
        )
        .await
        .inspect_err(|e| {
            // No handshake answer on an open connection: the peer behind it is gone (a
            // killed process's connection stays "open" until its idle timeout). Drop it,
            // so the next connect dials whoever answers at the address now.
            if let RpcError::Unreachable { .. } = e {
                conn.close(
                    crate::remote::PEER_LOST_CODE.into(),
                    b"handshake unanswered",
                );
            }
        })?;
        Ok(G::from_raw(RawGateway::new(
            Target::Remote(Arc::new(session)),
            address.clone(),
            timeout,
        )))
    }

    /// The lifecycle of a local endpoint, if one is registered under `name`.
    pub fn lifecycle_of(&self, name: &str) -> Option<watch::Receiver<Lifecycle>> {
        self.inner.registry.get(name).map(|r| r.lifecycle.clone())
    }

    /// The authenticated connection to `socket`, dialled if there is none alive.
    pub(crate) async fn connection(
        &self,
        socket: SocketAddr,
    ) -> Result<quinn::Connection, RpcError> {
        let slot = self.inner.connections.entry(socket).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let unreachable = |reason: String| RpcError::Unreachable {
            address: format!("rill://{socket}"),
            reason,
        };
        let connecting = self
            .inner
            .endpoint
            .connect(socket, SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(self.inner.config.rpc.connect_timeout, connecting)
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        if let Err(source) = authenticate_client(&conn, &self.inner.config.secret).await {
            if self.inner.config.report_refused_credentials {
                self.inner.refusals.report(socket, &source);
            }
            return Err(RpcError::Handshake {
                address: format!("rill://{socket}"),
                source,
            });
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Stops every endpoint, closes all connections and the socket.
    pub async fn shutdown(&self) {
        let lifecycles: Vec<_> = self
            .inner
            .registry
            .iter()
            .map(|r| {
                (r.stop)();
                r.lifecycle.clone()
            })
            .collect();
        for mut lifecycle in lifecycles {
            let _ = lifecycle.wait_for(|s| *s == Lifecycle::Terminated).await;
        }
        self.close_transport();
    }

    fn close_transport(&self) {
        self.inner.leave_directory();
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        self.inner.tasks.shutdown();
    }
}

impl Inner {
    /// The service serving `socket` if a call to it takes the local short-cut.
    fn local_target(self: &Arc<Self>, socket: SocketAddr) -> Option<Arc<Inner>> {
        match &self.config.local_calls {
            LocalCalls::Never => None,
            _ if socket == self.local_addr => Some(self.clone()),
            LocalCalls::OwnService => None,
            LocalCalls::Directory(d) => d.services.get(&socket).and_then(|w| w.upgrade()),
        }
    }

    fn leave_directory(&self) {
        if let LocalCalls::Directory(d) = &self.config.local_calls {
            d.services.remove(&self.local_addr);
        }
    }

    fn local_recipient<P: Protocol>(
        &self,
        address: &RpcAddress,
    ) -> Result<actix::Recipient<Call<P>>, RpcError> {
        let handshake = |source| RpcError::Handshake {
            address: address.to_string(),
            source,
        };
        let entry = self.registry.get(&address.endpoint).ok_or_else(|| {
            handshake(HandshakeError::UnknownEndpoint {
                endpoint: address.endpoint.clone(),
            })
        })?;
        entry
            .local
            .downcast_ref::<actix::Recipient<Call<P>>>()
            .cloned()
            .ok_or_else(|| {
                handshake(HandshakeError::GatewayMismatch {
                    endpoint: address.endpoint.clone(),
                    expected: P::NAME.to_string(),
                    actual: entry.gateway.to_string(),
                })
            })
    }

    fn check_hello(&self, hello: &Hello) -> Result<Arc<dyn ServeRemote>, HandshakeError> {
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            });
        }
        let entry =
            self.registry
                .get(&hello.endpoint)
                .ok_or_else(|| HandshakeError::UnknownEndpoint {
                    endpoint: hello.endpoint.clone(),
                })?;
        if entry.gateway != hello.gateway {
            return Err(HandshakeError::GatewayMismatch {
                endpoint: hello.endpoint.clone(),
                expected: hello.gateway.clone(),
                actual: entry.gateway.to_string(),
            });
        }
        Ok(entry.serve.clone())
    }
}

impl LivenessSource for Inner {
    fn liveness(&self, endpoint: &str) -> Liveness {
        liveness_of(self.registry.get(endpoint).map(|r| *r.lifecycle.borrow()))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let LocalCalls::Directory(d) = &self.config.local_calls {
            d.services
                .remove_if(&self.local_addr, |_, w| w.strong_count() == 0);
        }
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

async fn accept_loop(weak: Weak<Inner>) {
    let endpoint = match weak.upgrade() {
        Some(inner) => inner.endpoint.clone(),
        None => return,
    };
    while let Some(incoming) = endpoint.accept().await {
        let Some(inner) = weak.upgrade() else { return };
        // Decided here, before anything is allocated for the peer (see `admission`).
        let Some(admitted) = inner.gate.admit(incoming) else {
            continue;
        };
        inner
            .tasks
            .spawn("rpc-connection", serve_connection(weak.clone(), admitted));
    }
}

async fn serve_connection(weak: Weak<Inner>, admitted: admission::Admitted) {
    // The gate closes and reports a connection that does not authenticate.
    let Some(conn) = admitted.authenticate().await else {
        return;
    };
    let peer = conn.remote_address();
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                return;
            }
        };
        let Some(inner) = weak.upgrade() else { return };
        inner.tasks.spawn(
            "rpc-session",
            serve_stream(weak.clone(), conn.clone(), send, recv),
        );
    }
}

async fn serve_stream(
    weak: Weak<Inner>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let peer = conn.remote_address();
    let Some((max, handshake_timeout)) = weak
        .upgrade()
        .map(|i| (i.config.rpc.max_frame_size, i.config.rpc.connect_timeout))
    else {
        return;
    };
    let mut reader = FrameReader::new(recv, max);
    let protocol_error = |reason: String| {
        tracing::warn!(%peer, %reason, "closing connection: RPC protocol violation");
        conn.close(PROTOCOL_ERROR_CODE.into(), b"protocol violation");
    };
    let hello = match tokio::time::timeout(handshake_timeout, reader.next()).await {
        Ok(Ok(Some(frame))) => match decode::<Hello>(&frame, "hello") {
            Ok(hello) => hello,
            Err(e) => return protocol_error(e.to_string()),
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return protocol_error(e.to_string()),
        Err(_) => return protocol_error("no hello within the handshake timeout".into()),
    };
    let Some(inner) = weak.upgrade() else { return };
    let checked = inner.check_hello(&hello);
    drop(inner);
    let reply = match &checked {
        Ok(_) => HelloReply::Accepted {
            max_frame: max as u64,
        },
        Err(e) => {
            tracing::info!(%peer, endpoint = %hello.endpoint, error = %e, "handshake refused");
            HelloReply::Rejected(e.clone())
        }
    };
    let frame = match encode(&reply, max, "hello reply") {
        Ok(frame) => frame,
        Err(e) => return protocol_error(e.to_string()),
    };
    if send.write_all(&frame).await.is_err() {
        return;
    }
    let serve = match checked {
        Ok(serve) => serve,
        Err(_) => {
            let _ = send.finish();
            return;
        }
    };
    let session_max = max.min(usize::try_from(hello.max_frame).unwrap_or(usize::MAX));
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = write_frames(send, rx);
    let served = serve.serve(reader, tx, session_max);
    let (result, ()) = tokio::join!(served, writer);
    if let Err(reason) = result {
        protocol_error(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Reply;
    use crate::EndpointContext;
    use std::time::Duration;

    crate::gateway! {
        /// Counts calls.
        pub mod counter("counter") {
            /// Increments and returns the count.
            fn bump() -> u64;
        }
    }

    #[derive(Default)]
    struct Counter(u64);

    impl RpcEndpoint for Counter {
        type Protocol = counter::Protocol;
    }

    impl counter::Handler for Counter {
        fn bump(&mut self, _: &mut EndpointContext<'_, Self>) -> Reply<u64> {
            self.0 += 1;
            Reply::ready(self.0)
        }
    }

    struct Setup {
        server: RpcService,
        client: RpcService,
        gw: counter::Gateway,
        secret: ClusterSecret,
    }

    async fn setup() -> Setup {
        let secret = ClusterSecret::generate();
        let server = RpcService::start(RpcServiceConfig::local(secret.clone())).unwrap();
        server
            .start_endpoint("counter", Counter::default())
            .unwrap()
            .start();
        let mut config = RpcServiceConfig::local(secret.clone());
        config.local_calls = LocalCalls::Never;
        let client = RpcService::start(config).unwrap();
        let gw: counter::Gateway = client.connect(&server.address_of("counter")).await.unwrap();
        assert_eq!(gw.bump().await.unwrap(), 1);
        Setup {
            server,
            client,
            gw,
            secret,
        }
    }

    /// A raw QUIC connection to the server, authenticated or not.
    async fn raw_connection(
        server: &RpcService,
        secret: Option<&ClusterSecret>,
    ) -> quinn::Connection {
        let transport = Arc::new(quinn::TransportConfig::default());
        let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        ep.set_default_client_config(quic_client_config(RPC_ALPN, transport).unwrap());
        let conn = ep
            .connect(server.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        if let Some(secret) = secret {
            authenticate_client(&conn, secret).await.unwrap();
        }
        conn
    }

    /// Opens a session stream on `conn` and sends a hello with `version`.
    async fn send_hello(conn: &quinn::Connection, version: u32) -> FrameReader {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let hello = Hello {
            version,
            endpoint: "counter".into(),
            gateway: "counter".into(),
            max_frame: 1 << 20,
        };
        send.write_all(&encode(&hello, 1 << 20, "hello").unwrap())
            .await
            .unwrap();
        // (A peer that sends less and waits is cut off by the authentication timeout.)
        let _ = send.finish();
        FrameReader::new(recv, 1 << 20)
    }

    async fn closed_by_server(conn: &quinn::Connection) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), conn.closed()).await,
            Ok(quinn::ConnectionError::ApplicationClosed(_))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_on_an_authenticated_stream_drops_only_that_connection() {
        let s = setup().await;
        let conn = raw_connection(&s.server, Some(&s.secret)).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .unwrap();
        let _ = send.finish();
        assert!(closed_by_server(&conn).await);
        assert_eq!(s.gw.bump().await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_and_truncated_frames_drop_the_connection() {
        let s = setup().await;
        // A well-framed hello whose payload is not a hello.
        let conn = raw_connection(&s.server, Some(&s.secret)).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
            .await
            .unwrap();
        assert!(closed_by_server(&conn).await);
        // A frame cut short by the end of the stream.
        let conn = raw_connection(&s.server, Some(&s.secret)).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
        let _ = send.finish();
        assert!(closed_by_server(&conn).await);
        // A frame longer than the maximum.
        let conn = raw_connection(&s.server, Some(&s.secret)).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(closed_by_server(&conn).await);
        assert_eq!(s.gw.bump().await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unauthenticated_peers_get_nothing_dispatched() {
        let s = setup().await;
        // Skips authentication and speaks the RPC protocol straight away.
        let conn = raw_connection(&s.server, None).await;
        let mut reader = send_hello(&conn, PROTOCOL_VERSION).await;
        assert!(closed_by_server(&conn).await);
        assert!(reader.next().await.is_err() || matches!(reader.next().await, Ok(None)));
        // Random UDP datagrams at the port are ignored.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..64u8 {
            udp.send_to(&[i; 200], s.server.local_addr()).unwrap();
        }
        // Nothing was dispatched: the count continues from the setup's single call.
        assert_eq!(s.gw.bump().await.unwrap(), 2);
        drop(s.client);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_connections_are_capped_per_address_and_get_one_stream() {
        let secret = ClusterSecret::generate();
        let mut config = RpcServiceConfig::local(secret.clone());
        config.auth.max_pending_per_address = 2;
        config.auth.timeout = Duration::from_secs(30);
        let server = RpcService::start(config).unwrap();
        server
            .start_endpoint("counter", Counter::default())
            .unwrap()
            .start();
        let first = raw_connection(&server, None).await;
        let _second = raw_connection(&server, None).await;
        // A third one from the same address is refused before TLS.
        let transport = Arc::new(quinn::TransportConfig::default());
        let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        ep.set_default_client_config(quic_client_config(RPC_ALPN, transport).unwrap());
        let refused = ep
            .connect(server.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(refused, quinn::ConnectionError::ConnectionClosed(_)),
            "{refused:?}"
        );
        // A pending connection may open the authentication stream and nothing more.
        let _auth_stream = first.open_bi().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), first.open_bi())
                .await
                .is_err(),
            "a second stream opened before authentication"
        );
        // Closing a pending connection frees its place; an authenticated one does not
        // count and may open many streams.
        first.close(0u32.into(), b"done");
        let mut member = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let conn = raw_connection(&server, None).await;
            if authenticate_client(&conn, &secret).await.is_ok() {
                member = Some(conn);
                break;
            }
        }
        let member = member.expect("a member gets in once a place is free");
        let mut streams = Vec::new();
        for _ in 0..8 {
            streams.push(member.open_bi().await.unwrap());
        }
        let mut config = RpcServiceConfig::local(secret);
        config.local_calls = LocalCalls::Never;
        let client = RpcService::start(config).unwrap();
        let gw: counter::Gateway = client.connect(&server.address_of("counter")).await.unwrap();
        assert_eq!(gw.bump().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_sharing_a_pending_budget_share_its_limits() {
        let secret = ClusterSecret::generate();
        let mut config = RpcServiceConfig::local(secret.clone());
        config.auth.max_pending_per_address = 2;
        config.auth.timeout = Duration::from_secs(30);
        let budget = PendingBudget::new(&config.auth);
        config.pending_budget = Some(budget.clone());
        let a = RpcService::start(config.clone()).unwrap();
        let b = RpcService::start(config).unwrap();
        // One pending connection at each server: the process's two places are taken.
        let _at_a = raw_connection(&a, None).await;
        let _at_b = raw_connection(&b, None).await;
        assert_eq!(budget.pending(), 2);
        let transport = Arc::new(quinn::TransportConfig::default());
        let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        ep.set_default_client_config(quic_client_config(RPC_ALPN, transport).unwrap());
        let refused = ep
            .connect(a.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(refused, quinn::ConnectionError::ConnectionClosed(_)),
            "a third pending connection of the process was let in: {refused:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_version_mismatch_is_refused_in_the_handshake() {
        let s = setup().await;
        let conn = raw_connection(&s.server, Some(&s.secret)).await;
        let mut reader = send_hello(&conn, PROTOCOL_VERSION + 98).await;
        let reply: HelloReply = decode(&reader.next().await.unwrap().unwrap(), "reply").unwrap();
        assert!(
            matches!(
                reply,
                HelloReply::Rejected(HandshakeError::VersionMismatch { theirs, .. })
                    if theirs == PROTOCOL_VERSION + 98
            ),
            "{reply:?}"
        );
        // The same connection still opens good sessions.
        let mut reader = send_hello(&conn, PROTOCOL_VERSION).await;
        let reply: HelloReply = decode(&reader.next().await.unwrap().unwrap(), "reply").unwrap();
        assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    }
}
