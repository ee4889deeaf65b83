//! Endpoint addresses: `rill://host:port/endpoint-name`.
//!
//! The `host:port` part is a [`HostPort`]: an IP socket address, or a DNS name and a port.
//! A name is kept as written and resolved each time a connection is dialled
//! ([`HostPort::resolve_from`]), so a peer that comes back under the same name at another
//! IP address is found on the next reconnect. An IP address never goes to the resolver.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a process's RPC service (or any UDP service) listens: an IP socket address or a
/// host name and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostPort {
    /// An IP address and port; used as is.
    Socket(SocketAddr),
    /// A DNS name (or `localhost`) and port, resolved at connect time.
    Name {
        /// The host name, as written (boxed: no spare capacity, so a `HostPort` is no
        /// larger than a `SocketAddr`).
        host: Box<str>,
        /// The UDP port.
        port: u16,
    },
}

/// A string that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (expected host:port, e.g. 127.0.0.1:6123 or jobmanager.example:6123)")]
pub struct HostPortParseError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A host name that could not be resolved to a usable address. Retrying may help (DNS
/// entries of restarting peers come and go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("cannot resolve host {host:?}: {reason}")]
pub struct ResolveError {
    /// The host name.
    pub host: String,
    /// The resolver's answer.
    pub reason: String,
}

impl HostPort {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            HostPort::Socket(s) => s.port(),
            HostPort::Name { port, .. } => *port,
        }
    }

    /// The IP socket address, when this is one (no name to resolve).
    pub fn as_socket(&self) -> Option<SocketAddr> {
        match self {
            HostPort::Socket(s) => Some(*s),
            HostPort::Name { .. } => None,
        }
    }

    /// Whether this names the local machine: a loopback IP, or `localhost` and its
    /// subdomains (which always resolve to loopback, RFC 6761). Other names are not
    /// resolved to find out and count as not loopback.
    pub fn is_loopback(&self) -> bool {
        match self {
            HostPort::Socket(s) => s.ip().is_loopback(),
            HostPort::Name { host, .. } => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            }
        }
    }

    /// Resolves to the one address a socket bound to `local` should dial: for an IP
    /// address, itself without a resolver call; for a name, the first resolved address
    /// of `local`'s family (an IPv4 socket cannot reach `::1`, which `localhost` often
    /// resolves to first), else the first resolved address.
    pub async fn resolve_from(&self, local: SocketAddr) -> Result<SocketAddr, ResolveError> {
        match self {
            HostPort::Socket(s) => Ok(*s),
            HostPort::Name { host, port } => {
                let found = tokio::net::lookup_host((&**host, *port))
                    .await
                    .map_err(|e| self.resolve_error(e.to_string()))?;
                choose(found, Some(local)).ok_or_else(|| self.resolve_error("no address".into()))
            }
        }
    }

    /// Resolves (blocking) to the address to bind a socket to: for a name, its first IPv4
    /// address, else its first address.
    pub fn resolve_for_bind(&self) -> Result<SocketAddr, ResolveError> {
        match self {
            HostPort::Socket(s) => Ok(*s),
            HostPort::Name { host, port } => {
                let found = (&**host, *port)
                    .to_socket_addrs()
                    .map_err(|e| self.resolve_error(e.to_string()))?;
                choose(found, None).ok_or_else(|| self.resolve_error("no address".into()))
            }
        }
    }

    fn resolve_error(&self, reason: String) -> ResolveError {
        let host = match self {
            HostPort::Socket(s) => s.ip().to_string(),
            HostPort::Name { host, .. } => host.to_string(),
        };
        ResolveError { host, reason }
    }
}

/// Picks from resolved addresses: the first of `local`'s family (IPv4 first when there is
/// no `local`), else the first.
fn choose(
    found: impl Iterator<Item = SocketAddr>,
    local: Option<SocketAddr>,
) -> Option<SocketAddr> {
    let want_v4 = local.is_none_or(|l| l.is_ipv4());
    let mut first = None;
    for addr in found {
        if addr.is_ipv4() == want_v4 {
            return Some(addr);
        }
        first.get_or_insert(addr);
    }
    first
}

impl From<SocketAddr> for HostPort {
    fn from(socket: SocketAddr) -> Self {
        HostPort::Socket(socket)
    }
}

impl From<(IpAddr, u16)> for HostPort {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        HostPort::Socket(SocketAddr::new(ip, port))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Socket(s) => write!(f, "{s}"),
            HostPort::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for HostPort {
    type Err = HostPortParseError;

    /// Parses `ip:port`, `[ipv6]:port` or `name:port`. Nothing is resolved here.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if let Ok(socket) = input.parse::<SocketAddr>() {
            return Ok(HostPort::Socket(socket));
        }
        let err = |reason: &str| HostPortParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (host, port) = input.rsplit_once(':').ok_or_else(|| err("missing :port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| err("the port must be a number from 0 to 65535"))?;
        if host.is_empty() {
            return Err(err("missing host"));
        }
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            // `::1:6123` (an IPv6 address needs brackets) or a malformed bracketed one.
            return Err(err("an IPv6 address must be written as [address]:port"));
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        if host.len() > 253 || !name.split('.').all(valid_label) {
            return Err(err("not a valid host name"));
        }
        Ok(HostPort::Name {
            host: host.into(),
            port,
        })
    }
}

/// Where an endpoint lives: the host and port of its process's RPC service and its name
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RpcAddress {
    /// Where the remote [`RpcService`](crate::service::RpcService) listens.
    pub host: HostPort,
    /// The endpoint's registered name.
    pub endpoint: String,
}

/// A string that is not a valid `rill://host:port/name` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (expected rill://host:port/endpoint)")]
pub struct AddressParseError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RpcAddress {
    /// Creates an address.
    pub fn new(host: impl Into<HostPort>, endpoint: impl Into<String>) -> Self {
        RpcAddress {
            host: host.into(),
            endpoint: endpoint.into(),
        }
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rill://{}/{}", self.host, self.endpoint)
    }
}

impl FromStr for RpcAddress {
    type Err = AddressParseError;

    /// Parses `rill://host:port/name`; a host name is kept, to be resolved when connecting.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| AddressParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let rest = input
            .strip_prefix("rill://")
            .ok_or_else(|| err("missing rill:// scheme"))?;
        let (host, endpoint) = rest
            .split_once('/')
            .ok_or_else(|| err("missing /endpoint"))?;
        if endpoint.is_empty() || endpoint.contains('/') {
            return Err(err("the endpoint name must be one non-empty path segment"));
        }
        let host = host.parse::<HostPort>().map_err(|e| err(&e.reason))?;
        Ok(RpcAddress::new(host, endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: RpcAddress = "rill://127.0.0.1:6123/dispatcher".parse().unwrap();
        assert_eq!(a.host, HostPort::Socket("127.0.0.1:6123".parse().unwrap()));
        assert_eq!(a.endpoint, "dispatcher");
        assert_eq!(a.to_string(), "rill://127.0.0.1:6123/dispatcher");
        let b: RpcAddress = "rill://localhost:1/x".parse().unwrap();
        assert_eq!(
            b.host,
            HostPort::Name {
                host: "localhost".into(),
                port: 1
            }
        );
        assert_eq!(b.to_string(), "rill://localhost:1/x");
        let c: RpcAddress = "rill://[::1]:7/y".parse().unwrap();
        assert_eq!(c.to_string(), "rill://[::1]:7/y");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://a:1/x",
            "rill://127.0.0.1:1",
            "rill://127.0.0.1:1/",
            "rill://nope/x",
            "rill://nope:99999/x",
        ] {
            assert!(bad.parse::<RpcAddress>().is_err(), "{bad}");
        }
        for bad in [
            "",
            "6123",
            "host",
            ":6123",
            "host:",
            "host:port",
            "::1:6123",
            "[::1:6123",
            "bad host:1",
            "-x.example:1",
            "a..b:1",
            "under/score:1",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?}");
        }
        for good in [
            "jobmanager:6123",
            "jm-0.rill.svc.cluster.local:6123",
            "LOCALHOST.:1",
        ] {
            assert!(
                matches!(good.parse::<HostPort>(), Ok(HostPort::Name { .. })),
                "{good}"
            );
        }
    }

    #[test]
    fn loopback_names_are_recognised_without_resolving() {
        let lb = |s: &str| s.parse::<HostPort>().unwrap().is_loopback();
        assert!(lb("127.0.0.1:1") && lb("[::1]:1") && lb("localhost:1") && lb("a.localhost:1"));
        assert!(!lb("10.0.0.1:1") && !lb("jobmanager:1") && !lb("localhost.example:1"));
    }

    #[test]
    fn resolution_prefers_the_family_of_the_local_socket() {
        let v4: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        let both = [v6, v4];
        assert_eq!(choose(both.into_iter(), Some(v4)), Some(v4));
        assert_eq!(choose(both.into_iter(), Some(v6)), Some(v6));
        assert_eq!(choose(both.into_iter(), None), Some(v4));
        assert_eq!(choose([v6].into_iter(), Some(v4)), Some(v6));
        assert_eq!(choose(std::iter::empty(), Some(v4)), None);
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_of_the_right_family() {
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let host: HostPort = "localhost:6123".parse().unwrap();
        let socket = host.resolve_from(local).await.unwrap();
        assert_eq!(socket, "127.0.0.1:6123".parse().unwrap());
        assert_eq!(host.resolve_for_bind().unwrap(), socket);
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_is() {
        let host: HostPort = "[::1]:9".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            host.resolve_from(local).await.unwrap(),
            "[::1]:9".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_host_gives_an_error_naming_it() {
        let host: HostPort = "nosuch.invalid:6123".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let err = host.resolve_from(local).await.unwrap_err();
        assert_eq!(err.host, "nosuch.invalid");
        assert!(
            err.to_string()
                .starts_with("cannot resolve host \"nosuch.invalid\": "),
            "{err}"
        );
        let err = host.resolve_for_bind().unwrap_err();
        assert_eq!(err.host, "nosuch.invalid");
    }
}
