//! Cluster membership: TLS for QUIC and the authentication exchange shared by both planes.
//!
//! # Model
//!
//! Every process of a cluster holds the same **cluster secret** (32 bytes). QUIC gives
//! every connection TLS 1.3 encryption with a per-process self-signed certificate; the
//! certificate proves nothing about membership, so the client does not verify it against a
//! CA. Membership is proved instead by a mutual challenge–response right after the QUIC
//! handshake, on the connection's first bidirectional stream:
//!
//! 1. both sides export 32 bytes of TLS keying material (RFC 5705, label
//!    `rill-auth-v1`): unique to this TLS session, so a man in the middle, who
//!    necessarily runs two different sessions, sees different material on each side;
//! 2. the client sends `MAGIC | version | HMAC-SHA256(secret, "client" | material)`;
//! 3. the server checks it in constant time and answers `OK | HMAC(secret, "server" |
//!    material)`, or `REFUSED` and closes the connection with [`AUTH_FAILED_CODE`];
//! 4. the client checks the server's MAC.
//!
//! Nothing else is accepted on a connection before step 3 succeeds: the server side calls
//! [`authenticate_server`] before it accepts any other stream, the client side calls
//! [`authenticate_client`] before it opens one. The secret itself never crosses the wire.
//! When the secrets differ, both sides get [`HandshakeError::SecretMismatch`].
//!
//! # Before authentication
//!
//! A server grants an unauthenticated peer little, and for a bounded time: the
//! [`admission`] module caps connections pending authentication (in total and per source
//! address), validates source addresses under load, keeps pending connections' transport
//! limits small, and reports refusals at WARN, rate-limited, on both sides.
//!
//! # Where the secret comes from
//!
//! [`ClusterSecret::resolve`] reads `security.cluster-secret` (any passphrase, stretched
//! with SHA-256) or `security.cluster-secret-file`. For local development, with
//! `security.auto-generate = true` and nothing configured, a secret is generated once and
//! kept in a file that other processes on the same machine read, so that
//! `rill jobmanager` and `rill taskmanager` started by the same user find each other. An
//! auto-generated secret is refused for non-loopback bind addresses: nothing listens on
//! the network with credentials nobody chose.
//!
//! Both the RPC service (ALPN [`RPC_ALPN`]) and the data plane (`rill-data/1`) build their
//! QUIC configurations here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;

use crate::error::HandshakeError;

pub mod admission;

/// Server name used in every QUIC connect; certificates are self-signed for it.
pub const SERVER_NAME: &str = "rill";
/// ALPN of the RPC plane.
pub const RPC_ALPN: &[u8] = b"rill-rpc/1";
/// QUIC application close code sent to a peer that failed authentication.
pub const AUTH_FAILED_CODE: u32 = 0x5241;
/// Upper bound for the whole authentication exchange in [`authenticate_client`] and
/// [`authenticate_server`]: the default of `security.auth.timeout`, which servers that
/// use an [`admission::Gate`] apply instead.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Kernel send and receive buffer asked for every QUIC endpoint's UDP socket. Linux
/// defaults to about 208 KiB, which a burst of full congestion windows overflows on a fast
/// path (loopback, LAN): every datagram dropped there costs a retransmission and a
/// congestion-window cut. The kernel caps the request at `net.core.rmem_max` /
/// `net.core.wmem_max`.
pub const UDP_SOCKET_BUFFER: usize = 4 << 20;

const MAGIC: &[u8; 8] = b"RILLAUTH";
const AUTH_VERSION: u32 = 1;
const EXPORT_LABEL: &[u8] = b"rill-auth-v1";
const MAC_LEN: usize = 32;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// Errors while setting up credentials or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Reading or writing a secret file failed.
    #[error("cluster secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configured secret is unusable.
    #[error("invalid cluster secret: {0}")]
    InvalidSecret(String),
    /// No secret is configured and none may be generated.
    #[error(
        "no cluster secret configured for {bind}: set security.cluster-secret or \
         security.cluster-secret-file (auto-generated secrets are only used on loopback)"
    )]
    MissingSecret {
        /// The bind address that needs one.
        bind: String,
    },
    /// Generating a certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}

/// The shared secret that proves cluster membership. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// Generates a fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
        ClusterSecret(bytes)
    }

    /// Derives a secret from any passphrase or key material (SHA-256 of the bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecurityError> {
        if bytes.is_empty() {
            return Err(SecurityError::InvalidSecret("the secret is empty".into()));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Ok(ClusterSecret(out))
    }

    /// Reads a secret file (its whole content, surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Self, SecurityError> {
        let content = std::fs::read(path).map_err(|source| SecurityError::SecretFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(content.trim_ascii())
    }

    /// Reads the development secret at `path`, creating it (mode 0600) if it is missing.
    pub fn load_or_generate(path: &Path) -> Result<Self, SecurityError> {
        if path.exists() {
            return Self::from_file(path);
        }
        let io = |source| SecurityError::SecretFile {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Write to a temporary name and rename, so a concurrent reader never sees half a file
        // and two processes racing to create it end up agreeing on one.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(e));
            }
        }
        let _ = std::fs::remove_file(&tmp);
        Self::from_file(path)
    }

    /// Resolves the secret from configuration (see the module docs).
    ///
    /// `bind_is_loopback` tells whether the process listens on loopback only; only then is
    /// a secret generated when none is configured.
    pub fn resolve(
        config: &crate::config::SecurityConfig,
        bind_is_loopback: bool,
        bind: &str,
    ) -> Result<Self, SecurityError> {
        if let Some(secret) = &config.cluster_secret {
            return Self::from_bytes(secret.as_bytes());
        }
        if let Some(path) = &config.cluster_secret_file {
            return Self::from_file(path);
        }
        if config.auto_generate && bind_is_loopback {
            return Self::load_or_generate(&default_dev_secret_path());
        }
        Err(SecurityError::MissingSecret { bind: bind.into() })
    }

    fn mac(&self, role: &[u8], material: &[u8]) -> ring::hmac::Tag {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(role);
        ctx.update(material);
        ctx.sign()
    }

    fn verify(&self, role: &[u8], material: &[u8], tag: &[u8]) -> bool {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut msg = Vec::with_capacity(role.len() + material.len());
        msg.extend_from_slice(role);
        msg.extend_from_slice(material);
        ring::hmac::verify(&key, &msg, tag).is_ok()
    }
}

/// Where development secrets live: `$RILL_HOME/cluster.secret`, else
/// `$HOME/.rill/cluster.secret`, else the system temp directory.
pub fn default_dev_secret_path() -> PathBuf {
    if let Some(home) = std::env::var_os("RILL_HOME") {
        return PathBuf::from(home).join("cluster.secret");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".rill").join("cluster.secret");
    }
    std::env::temp_dir().join("rill-cluster.secret")
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Binds a QUIC endpoint on `bind` (serving with `server` if given) whose UDP socket asks
/// for [`UDP_SOCKET_BUFFER`] bytes of kernel buffer each way. Must be called inside a
/// tokio runtime.
pub fn quic_endpoint(
    server: Option<quinn::ServerConfig>,
    bind: std::net::SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer than asked only costs throughput.
    let _ = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_SOCKET_BUFFER);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime (tokio) for the QUIC endpoint"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// Builds a QUIC server configuration with a fresh self-signed certificate.
pub fn quic_server_config(
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, SecurityError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| SecurityError::Certificate(e.to_string()))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| SecurityError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| SecurityError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// Builds a QUIC client configuration. Membership is checked by the authentication
/// exchange, not by the certificate (see the module docs).
pub fn quic_client_config(
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, SecurityError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SessionOnlyVerifier(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| SecurityError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// Accepts any certificate but still checks the handshake signature, so the session key
/// belongs to whoever presented the certificate. Identity comes from the cluster secret.
#[derive(Debug)]
struct SessionOnlyVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for SessionOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is disabled in both configurations.
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn auth_error(reason: impl Into<String>) -> HandshakeError {
    HandshakeError::Authentication {
        reason: reason.into(),
    }
}

fn keying_material(conn: &quinn::Connection) -> Result<[u8; 32], HandshakeError> {
    let mut material = [0u8; 32];
    conn.export_keying_material(&mut material, EXPORT_LABEL, b"")
        .map_err(|_| auth_error("TLS keying material export failed"))?;
    Ok(material)
}

/// Proves our membership to the server and checks the server's; call right after connect.
pub async fn authenticate_client(
    conn: &quinn::Connection,
    secret: &ClusterSecret,
) -> Result<(), HandshakeError> {
    let exchange = async {
        let material = keying_material(conn)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| auth_error(format!("cannot open the authentication stream: {e}")))?;
        let mut hello = Vec::with_capacity(MAGIC.len() + 4 + MAC_LEN);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&AUTH_VERSION.to_be_bytes());
        hello.extend_from_slice(secret.mac(b"client", &material).as_ref());
        send.write_all(&hello)
            .await
            .map_err(|e| auth_error(format!("cannot send credentials: {e}")))?;
        let _ = send.finish();
        let status = match recv.read_u8().await {
            Ok(status) => status,
            Err(e) => return Err(closed_during_authentication(conn, e)),
        };
        if status != STATUS_OK {
            return Err(mismatch("the peer refused our credentials"));
        }
        let mut tag = [0u8; MAC_LEN];
        recv.read_exact(&mut tag)
            .await
            .map_err(|e| auth_error(format!("truncated server proof: {e}")))?;
        if !secret.verify(b"server", &material, &tag) {
            conn.close(AUTH_FAILED_CODE.into(), admission::MISMATCH_REASON);
            return Err(mismatch(
                "the peer's proof of membership was made with another secret",
            ));
        }
        Ok(())
    };
    match tokio::time::timeout(AUTH_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(auth_error("authentication timed out")),
    }
}

fn mismatch(reason: &str) -> HandshakeError {
    HandshakeError::SecretMismatch {
        reason: reason.into(),
    }
}

/// The error for an authentication stream that ended before the server's answer: a
/// refusal if the server closed the connection saying the secrets differ.
fn closed_during_authentication(
    conn: &quinn::Connection,
    error: impl fmt::Display,
) -> HandshakeError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == AUTH_FAILED_CODE.into()
                && close.reason.as_ref() == admission::MISMATCH_REASON =>
        {
            mismatch("the peer refused our credentials")
        }
        _ => auth_error(format!(
            "the connection ended during authentication: {error}"
        )),
    }
}

/// Checks the client's membership and proves ours, within [`AUTH_TIMEOUT`]; call right
/// after accepting a connection, before accepting any other stream. On failure the
/// connection is closed; reporting it is the caller's business (an [`admission::Gate`]
/// logs it, rate-limited).
pub async fn authenticate_server(
    conn: &quinn::Connection,
    secret: &ClusterSecret,
) -> Result<(), HandshakeError> {
    let result = match tokio::time::timeout(AUTH_TIMEOUT, server_exchange(conn, secret)).await {
        Ok(result) => result,
        Err(_) => Err(auth_error("authentication timed out")),
    };
    if let Err(e) = &result {
        let reason = match e {
            HandshakeError::SecretMismatch { .. } => admission::MISMATCH_REASON,
            _ => b"authentication failed",
        };
        conn.close(AUTH_FAILED_CODE.into(), reason);
    }
    result
}

/// The server's side of the exchange, without a time limit and without closing the
/// connection on failure.
async fn server_exchange(
    conn: &quinn::Connection,
    secret: &ClusterSecret,
) -> Result<(), HandshakeError> {
    let material = keying_material(conn)?;
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| auth_error(format!("no authentication stream: {e}")))?;
    let mut hello = [0u8; 8 + 4 + MAC_LEN];
    recv.read_exact(&mut hello)
        .await
        .map_err(|e| auth_error(format!("truncated credentials: {e}")))?;
    if &hello[..8] != MAGIC {
        return Err(auth_error(
            "the peer did not start with an authentication hello",
        ));
    }
    let version = u32::from_be_bytes([hello[8], hello[9], hello[10], hello[11]]);
    if version != AUTH_VERSION {
        return Err(auth_error(format!(
            "authentication version {version}, expected {AUTH_VERSION}"
        )));
    }
    if !secret.verify(b"client", &material, &hello[12..]) {
        let _ = send.write_all(&[STATUS_REFUSED]).await;
        let _ = send.finish();
        // Closing discards unsent stream data: let the refusal arrive first (the
        // caller bounds the wait). The close reason says it too, should it not.
        let _ = send.stopped().await;
        return Err(mismatch(
            "the peer's proof of membership was made with another secret",
        ));
    }
    let mut reply = Vec::with_capacity(1 + MAC_LEN);
    reply.push(STATUS_OK);
    reply.extend_from_slice(secret.mac(b"server", &material).as_ref());
    send.write_all(&reply)
        .await
        .map_err(|e| auth_error(format!("cannot send proof: {e}")))?;
    let _ = send.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn endpoint(alpn: &[u8]) -> quinn::Endpoint {
        let transport = Arc::new(quinn::TransportConfig::default());
        let server = quic_server_config(alpn, transport.clone()).unwrap();
        let mut ep =
            quinn::Endpoint::server(server, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        ep.set_default_client_config(quic_client_config(alpn, transport).unwrap());
        ep
    }

    async fn pair(
        client_secret: ClusterSecret,
        server_secret: ClusterSecret,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let server = endpoint(RPC_ALPN);
        let client = endpoint(RPC_ALPN);
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let res = authenticate_server(&conn, &server_secret).await;
            (res, server, conn)
        });
        let conn = client.connect(addr, SERVER_NAME).unwrap().await.unwrap();
        let client_res = authenticate_client(&conn, &client_secret).await;
        // The server side keeps its connection open until the client is done reading.
        let (server_res, _server, _conn) = accept.await.unwrap();
        (client_res, server_res)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let secret = ClusterSecret::generate();
        let (c, s) = pair(secret.clone(), secret).await;
        assert_eq!(c, Ok(()));
        assert_eq!(s, Ok(()));
    }

    #[tokio::test]
    async fn wrong_secret_is_a_secret_mismatch_on_both_sides() {
        let (c, s) = pair(ClusterSecret::generate(), ClusterSecret::generate()).await;
        assert!(
            matches!(c, Err(HandshakeError::SecretMismatch { .. })),
            "{c:?}"
        );
        assert!(
            matches!(s, Err(HandshakeError::SecretMismatch { .. })),
            "{s:?}"
        );
        let message = c.unwrap_err().to_string();
        assert!(
            message.contains("cluster secret does not match") && message.contains("refused"),
            "{message}"
        );
    }

    #[test]
    fn passphrase_derivation_is_stable_and_debug_is_redacted() {
        let a = ClusterSecret::from_bytes(b"hunter2").unwrap();
        let b = ClusterSecret::from_bytes(b"hunter2").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, ClusterSecret::from_bytes(b"hunter3").unwrap());
        assert!(ClusterSecret::from_bytes(b"").is_err());
        assert!(!format!("{a:?}").contains("hunter"));
    }

    #[test]
    fn dev_secret_file_is_created_once_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("cluster.secret");
        let first = ClusterSecret::load_or_generate(&path).unwrap();
        let second = ClusterSecret::load_or_generate(&path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
