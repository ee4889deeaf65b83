//! Admission of connections that have not authenticated yet, and the reporting of
//! refused credentials.
//!
//! Anyone who can reach a UDP port can start QUIC handshakes; until the peer has proved
//! cluster membership ([`super::authenticate_server`]) everything a server holds for it
//! is paid for by an unknown party. A [`Gate`] bounds that, for every QUIC server rill runs
//! (the RPC service and the data plane), in three stages:
//!
//! 1. **Incoming.** quinn has seen the peer's first packet and allocated nothing for it
//!    yet (no TLS state, no connection). [`PendingConnections::admit`] decides at once, in
//!    this order:
//!    * while at least half of `security.auth.max-pending-connections` are pending and
//!      the peer has not proved that it owns its source address, it is sent a QUIC
//!      **retry** (a stateless token it must echo), so that spoofed addresses cost
//!      nothing and are never counted;
//!    * it is **refused** (`CONNECTION_REFUSED`, one stateless packet) when its source IP
//!      already has `security.auth.max-pending-per-address` connections pending, or the
//!      endpoint has `security.auth.max-pending-connections`;
//!    * otherwise it is **accepted** and counts as pending from now on.
//! 2. **Pending.** The TLS handshake and the authentication exchange together must end
//!    within `security.auth.timeout`. Meanwhile the connection has the transport limits
//!    of [`ConnectionLimits::PRE_AUTH`]: one bidirectional stream (the authentication
//!    stream), no unidirectional ones, and a 16 KiB connection receive window, so a peer
//!    can make the server buffer at most that much, and quinn allocates stream state for
//!    one stream instead of the thousands an authenticated peer may open.
//! 3. **Authenticated or refused.** An authenticated connection gets its plane's own
//!    limits ([`ConnectionLimits::apply`]) and stops counting as pending. A refused or
//!    timed-out one is closed with [`super::AUTH_FAILED_CODE`] and stops counting as well.
//!
//! quinn fixes a connection's per-stream receive window at the handshake (it has no
//! per-connection setter), so a pending connection keeps the plane's stream window; the
//! 16 KiB connection window bounds what any stream can receive before authentication.
//!
//! # Reporting
//!
//! Refusals are logged at WARN, at most once per peer and [`REPORT_INTERVAL`] (a
//! [`RateLimitedLog`] counts what it suppressed and says so in the next line): the
//! server names the peer's address and why (the cluster secret does not match, no
//! authentication within the timeout, a pending limit); the client side
//! ([`CredentialWarnings`]) names the server that refused its credentials. TLS
//! handshakes that never complete are logged at DEBUG only: their source addresses are
//! unproven and may be spoofed.
//!
//! The decisions ([`PendingConnections`], [`RateLimitedLog`]) are plain state machines
//! that take their inputs (and the time) as arguments; [`Gate`] and [`Admitted`] are the
//! thin quinn driver around them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quinn::VarInt;

use super::{server_exchange, ClusterSecret, AUTH_FAILED_CODE};
use crate::config::AuthConfig;
use crate::error::HandshakeError;

/// How often at most one peer's refusals are logged.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Peers a [`RateLimitedLog`] remembers; beyond that (within one interval) new peers'
/// refusals are suppressed, so a flood of addresses bounds both memory and log volume.
pub const REPORT_CAPACITY: usize = 1024;
/// Close reason sent with [`AUTH_FAILED_CODE`] when the peer's proof was made with
/// another secret.
pub(crate) const MISMATCH_REASON: &[u8] = b"cluster secret does not match";

/// What to do with an incoming connection (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Accept it; it now counts as pending until [`PendingConnections::release`].
    Accept,
    /// Ask the peer to prove its source address first (QUIC retry).
    Retry,
    /// Refuse it.
    Refuse(PendingLimit),
}

/// The limit that made [`PendingConnections::admit`] refuse a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PendingLimit {
    /// `security.auth.max-pending-per-address`.
    PerAddress,
    /// `security.auth.max-pending-connections`.
    Total,
}

/// Counts connections that have not authenticated yet, in total and per source IP.
#[derive(Debug, Clone)]
pub struct PendingConnections {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    by_address: BTreeMap<IpAddr, usize>,
}

impl PendingConnections {
    /// No connection pending, limits from `security.auth.*`.
    pub fn new(config: &AuthConfig) -> Self {
        PendingConnections {
            max_total: config.max_pending_connections.max(1),
            max_per_address: config.max_pending_per_address.max(1),
            total: 0,
            by_address: BTreeMap::new(),
        }
    }

    /// Decides on a new connection from `address`; `address_validated` tells whether the
    /// peer has already proved it owns that address (it echoed a retry token).
    pub fn admit(&mut self, address: IpAddr, address_validated: bool) -> Admission {
        let address = address.to_canonical();
        if !address_validated && self.total * 2 >= self.max_total {
            return Admission::Retry;
        }
        let from_address = self.by_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.max_per_address {
            return Admission::Refuse(PendingLimit::PerAddress);
        }
        if self.total >= self.max_total {
            return Admission::Refuse(PendingLimit::Total);
        }
        self.total += 1;
        *self.by_address.entry(address).or_insert(0) += 1;
        Admission::Accept
    }

    /// A connection from `address` admitted earlier has authenticated, failed or closed.
    pub fn release(&mut self, address: IpAddr) {
        let address = address.to_canonical();
        let Some(count) = self.by_address.get_mut(&address) else {
            debug_assert!(false, "release of {address} without an admitted connection");
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.by_address.remove(&address);
        }
        self.total -= 1;
    }

    /// Connections pending in total.
    pub fn pending(&self) -> usize {
        self.total
    }

    /// Connections pending from `address`.
    pub fn pending_from(&self, address: IpAddr) -> usize {
        self.by_address
            .get(&address.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Source addresses with a connection pending.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Reported {
    at: Instant,
    suppressed: u64,
}

/// Lets one event per key through every `interval` and counts the rest.
#[derive(Debug, Clone)]
pub struct RateLimitedLog<K> {
    interval: Duration,
    capacity: usize,
    keys: BTreeMap<K, Reported>,
}

impl<K: Ord + Clone> RateLimitedLog<K> {
    /// Remembers at most `capacity` keys.
    pub fn new(interval: Duration, capacity: usize) -> Self {
        RateLimitedLog {
            interval,
            capacity: capacity.max(1),
            keys: BTreeMap::new(),
        }
    }

    /// Records an event for `key` at `now`. Returns `Some(suppressed)` when it is to be
    /// logged, `suppressed` being the events of that key not logged since the last one.
    pub fn record(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some(r) = self.keys.get_mut(&key) {
            if now.saturating_duration_since(r.at) < self.interval {
                r.suppressed += 1;
                return None;
            }
            let suppressed = r.suppressed;
            *r = Reported {
                at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if self.keys.len() >= self.capacity {
            let interval = self.interval;
            self.keys
                .retain(|_, r| now.saturating_duration_since(r.at) < interval);
            if self.keys.len() >= self.capacity {
                return None;
            }
        }
        self.keys.insert(
            key,
            Reported {
                at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Stream and flow-control limits of a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Bidirectional streams the peer may have open at once.
    pub bidi_streams: VarInt,
    /// Unidirectional streams the peer may have open at once.
    pub uni_streams: VarInt,
    /// Bytes the peer may have in flight towards us over the whole connection.
    pub receive_window: VarInt,
}

impl ConnectionLimits {
    /// Until the peer has authenticated: the authentication stream only, 16 KiB in flight.
    pub const PRE_AUTH: ConnectionLimits = ConnectionLimits {
        bidi_streams: VarInt::from_u32(1),
        uni_streams: VarInt::from_u32(0),
        receive_window: VarInt::from_u32(16 * 1024),
    };

    /// Makes these the limits every connection starts with.
    pub fn set_initial(&self, transport: &mut quinn::TransportConfig) {
        transport
            .max_concurrent_bidi_streams(self.bidi_streams)
            .max_concurrent_uni_streams(self.uni_streams)
            .receive_window(self.receive_window);
    }

    /// Sets these limits on a live connection (the peer learns them at once).
    pub fn apply(&self, conn: &quinn::Connection) {
        conn.set_max_concurrent_bi_streams(self.bidi_streams);
        conn.set_max_concurrent_uni_streams(self.uni_streams);
        conn.set_receive_window(self.receive_window);
    }
}

/// Why the server closed or refused a peer, for the log (one rate limit per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    SecretMismatch,
    NotAuthenticated,
    Limit(PendingLimit),
}

/// The pending-connection limits of one process: a [`PendingConnections`] shared by every
/// QUIC server of the process (a TaskManager's RPC service and data plane), so that
/// `security.auth.max-pending-connections` and `max-pending-per-address` bound the
/// process, not each server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PendingBudget(Arc<Mutex<PendingConnections>>);

impl PendingBudget {
    /// A budget with the limits of `config`.
    pub fn new(config: &AuthConfig) -> Self {
        PendingBudget(Arc::new(Mutex::new(PendingConnections::new(config))))
    }

    /// Connections pending authentication now, over every server sharing the budget.
    pub fn pending(&self) -> usize {
        self.0.lock().pending()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, PendingConnections> {
        self.0.lock()
    }
}

/// Applies the stages of the module docs to every incoming connection of one QUIC
/// server. Shared (`Arc`) by its accept loop and the connections' tasks.
pub struct Gate {
    plane: &'static str,
    secret: ClusterSecret,
    config: AuthConfig,
    authenticated: ConnectionLimits,
    pending: PendingBudget,
    reports: Mutex<RateLimitedLog<(IpAddr, Refusal)>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("plane", &self.plane)
            .field("config", &self.config)
            .field("pending", &self.pending.lock().pending())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for the server of `plane` (`"rpc"`, `"data"`: named in logs), checking
    /// `secret`; authenticated connections get `authenticated`. Pending connections
    /// count against `budget` (shared with the process's other servers), or against a
    /// budget of this server alone.
    pub fn new(
        plane: &'static str,
        secret: ClusterSecret,
        config: &AuthConfig,
        authenticated: ConnectionLimits,
        budget: Option<PendingBudget>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            plane,
            secret,
            config: config.clone(),
            authenticated,
            pending: budget.unwrap_or_else(|| PendingBudget::new(config)),
            reports: Mutex::new(RateLimitedLog::new(REPORT_INTERVAL, REPORT_CAPACITY)),
        })
    }

    /// Sets what quinn itself may buffer for connection attempts not yet handed to the
    /// gate; call on the server configuration of the endpoint the gate serves.
    pub fn limit_server_config(config: &AuthConfig, server: &mut quinn::ServerConfig) {
        let max = config.max_pending_connections.max(1);
        server
            .max_incoming(max)
            .incoming_buffer_size(64 * 1024)
            .incoming_buffer_size_total((max as u64).saturating_mul(16 * 1024));
    }

    /// Connections pending authentication now.
    pub fn pending(&self) -> usize {
        self.pending.lock().pending()
    }

    /// Decides on `incoming` at once (call from the accept loop, without awaiting):
    /// refuses it, asks the peer to prove its address, or admits it. An admitted
    /// connection must then be driven by [`Admitted::authenticate`].
    pub fn admit(self: &Arc<Self>, incoming: quinn::Incoming) -> Option<Admitted> {
        let peer = incoming.remote_address();
        let address = peer.ip().to_canonical();
        let admission = self
            .pending
            .lock()
            .admit(address, incoming.remote_address_validated());
        match admission {
            Admission::Accept => Some(Admitted {
                incoming,
                permit: Permit {
                    gate: self.clone(),
                    address,
                },
            }),
            Admission::Retry => {
                tracing::debug!(plane = self.plane, %peer, "under load: asking the peer to validate its address");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                None
            }
            Admission::Refuse(limit) => {
                self.report(peer, Refusal::Limit(limit));
                incoming.refuse();
                None
            }
        }
    }

    fn report(&self, peer: SocketAddr, refusal: Refusal) {
        let address = peer.ip().to_canonical();
        let Some(suppressed) = self
            .reports
            .lock()
            .record((address, refusal), Instant::now())
        else {
            return;
        };
        let plane = self.plane;
        match refusal {
            Refusal::SecretMismatch => tracing::warn!(
                plane,
                %peer,
                suppressed,
                "refused a peer: the cluster secret does not match (its proof of membership \
                 was made with another secret)"
            ),
            Refusal::NotAuthenticated => tracing::warn!(
                plane,
                %peer,
                suppressed,
                timeout = ?self.config.timeout,
                "closed a connection that did not authenticate in time \
                 (security.auth.timeout)"
            ),
            Refusal::Limit(PendingLimit::PerAddress) => tracing::warn!(
                plane,
                %peer,
                suppressed,
                limit = self.config.max_pending_per_address,
                "refusing connections: too many from this address are waiting to \
                 authenticate (security.auth.max-pending-per-address)"
            ),
            Refusal::Limit(PendingLimit::Total) => tracing::warn!(
                plane,
                %peer,
                suppressed,
                limit = self.config.max_pending_connections,
                "refusing connections: too many are waiting to authenticate \
                 (security.auth.max-pending-connections)"
            ),
        }
    }
}

/// Releases a pending connection's place when dropped.
struct Permit {
    gate: Arc<Gate>,
    address: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.pending.lock().release(self.address);
    }
}

/// A connection admitted by [`Gate::admit`], pending authentication.
pub struct Admitted {
    incoming: quinn::Incoming,
    permit: Permit,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("peer", &self.incoming.remote_address())
            .finish_non_exhaustive()
    }
}

impl Admitted {
    /// Completes the TLS handshake and the authentication exchange within
    /// `security.auth.timeout`. Returns the connection with its plane's limits once the
    /// peer has proved membership; otherwise closes it, reports it, and returns `None`.
    pub async fn authenticate(self) -> Option<quinn::Connection> {
        let Admitted { incoming, permit } = self;
        let gate = permit.gate.clone();
        let peer = incoming.remote_address();
        let deadline = tokio::time::Instant::now() + gate.config.timeout;
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(plane = gate.plane, %peer, error = %e, "incoming connection failed");
                return None;
            }
        };
        // Dropping `connecting` on timeout closes the half-open connection.
        let conn = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(plane = gate.plane, %peer, error = %e, "QUIC handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(plane = gate.plane, %peer, "QUIC handshake timed out");
                return None;
            }
        };
        let result =
            match tokio::time::timeout_at(deadline, server_exchange(&conn, &gate.secret)).await {
                Ok(result) => result,
                Err(_) => Err(HandshakeError::Authentication {
                    reason: "authentication timed out".into(),
                }),
            };
        match result {
            Ok(()) => {
                gate.authenticated.apply(&conn);
                drop(permit);
                Some(conn)
            }
            Err(e) => {
                let (refusal, reason) = match &e {
                    HandshakeError::SecretMismatch { .. } => {
                        (Refusal::SecretMismatch, MISMATCH_REASON)
                    }
                    _ => (Refusal::NotAuthenticated, &b"authentication failed"[..]),
                };
                tracing::debug!(plane = gate.plane, %peer, error = %e, "authentication failed");
                gate.report(peer, refusal);
                conn.close(AUTH_FAILED_CODE.into(), reason);
                None
            }
        }
    }
}

/// Client side: reports, rate-limited, servers that refused this process's credentials.
#[derive(Debug)]
pub struct CredentialWarnings {
    plane: &'static str,
    log: Mutex<RateLimitedLog<SocketAddr>>,
}

impl CredentialWarnings {
    /// Warnings for the client side of `plane`.
    pub fn new(plane: &'static str) -> Self {
        CredentialWarnings {
            plane,
            log: Mutex::new(RateLimitedLog::new(REPORT_INTERVAL, REPORT_CAPACITY)),
        }
    }

    /// Logs at WARN (once per server and [`REPORT_INTERVAL`]) that `server` did not
    /// accept our credentials, when `error` says the secrets differ.
    pub fn report(&self, server: SocketAddr, error: &HandshakeError) {
        if !matches!(error, HandshakeError::SecretMismatch { .. }) {
            return;
        }
        let Some(suppressed) = self.log.lock().record(server, Instant::now()) else {
            return;
        };
        tracing::warn!(
            plane = self.plane,
            peer = %server,
            suppressed,
            "{server} refused our credentials: the cluster secret does not match \
             (check security.cluster-secret / security.cluster-secret-file)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits(total: usize, per_address: usize) -> PendingConnections {
        PendingConnections::new(&AuthConfig {
            max_pending_connections: total,
            max_pending_per_address: per_address,
            ..AuthConfig::default()
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn per_address_cap_refuses_one_address_not_others() {
        let mut p = limits(100, 3);
        for _ in 0..3 {
            assert_eq!(p.admit(ip(1), false), Admission::Accept);
        }
        assert_eq!(
            p.admit(ip(1), false),
            Admission::Refuse(PendingLimit::PerAddress)
        );
        assert_eq!(p.admit(ip(2), false), Admission::Accept);
        assert_eq!(p.pending(), 4);
        assert_eq!(p.pending_from(ip(1)), 3);
        p.release(ip(1));
        assert_eq!(p.admit(ip(1), false), Admission::Accept);
    }

    #[test]
    fn above_half_the_cap_unvalidated_peers_are_retried_and_the_cap_refuses() {
        let mut p = limits(4, 10);
        assert_eq!(p.admit(ip(1), false), Admission::Accept);
        assert_eq!(p.admit(ip(2), false), Admission::Accept);
        // Half the cap pending: prove your address first.
        assert_eq!(p.admit(ip(3), false), Admission::Retry);
        assert_eq!(p.pending(), 2, "a retry is not counted");
        assert_eq!(p.admit(ip(3), true), Admission::Accept);
        assert_eq!(p.admit(ip(4), true), Admission::Accept);
        assert_eq!(p.admit(ip(5), true), Admission::Refuse(PendingLimit::Total));
        assert_eq!(p.admit(ip(5), false), Admission::Retry);
        for a in 1..=4 {
            p.release(ip(a));
        }
        assert_eq!(p.pending(), 0);
        assert_eq!(p.addresses(), 0, "no address is remembered once released");
        assert_eq!(p.admit(ip(5), false), Admission::Accept);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_same_address() {
        let mut p = limits(100, 1);
        assert_eq!(p.admit(ip(7), false), Admission::Accept);
        let mapped = match ip(7) {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(
            p.admit(mapped, false),
            Admission::Refuse(PendingLimit::PerAddress)
        );
        p.release(mapped);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_flood_never_holds_more_than_the_cap() {
        let mut p = limits(256, 32);
        let mut accepted = 0;
        // 2,000 attempts from 100 addresses, every retried one coming back validated.
        for i in 0..2000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i % 100));
            match p.admit(a, false) {
                Admission::Accept => accepted += 1,
                Admission::Retry => {
                    if p.admit(a, true) == Admission::Accept {
                        accepted += 1;
                    }
                }
                Admission::Refuse(_) => {}
            }
            assert!(p.pending() <= 256);
            assert!(p.pending_from(a) <= 32);
        }
        assert_eq!(accepted, 256);
    }

    #[test]
    fn rate_limited_log_lets_one_event_per_key_and_interval_through() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut log = RateLimitedLog::new(Duration::from_secs(60), 8);
        assert_eq!(log.record("a", t0), Some(0));
        assert_eq!(log.record("a", t0 + s), None);
        assert_eq!(log.record("a", t0 + 59 * s), None);
        assert_eq!(
            log.record("b", t0 + 2 * s),
            Some(0),
            "other keys are independent"
        );
        assert_eq!(log.record("a", t0 + 60 * s), Some(2), "two were suppressed");
        assert_eq!(log.record("a", t0 + 61 * s), None);
        assert_eq!(log.record("a", t0 + 121 * s), Some(1));
    }

    #[test]
    fn rate_limited_log_is_bounded_and_forgets_old_keys() {
        let t0 = Instant::now();
        let mut log = RateLimitedLog::new(Duration::from_secs(60), 3);
        for k in 0..3 {
            assert_eq!(log.record(k, t0), Some(0));
        }
        // Full within the interval: new keys are suppressed, memory stays bounded.
        assert_eq!(log.record(3, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.len(), 3);
        // After the interval the old keys make room.
        assert_eq!(log.record(4, t0 + Duration::from_secs(61)), Some(0));
        assert_eq!(log.len(), 1);
    }
}
