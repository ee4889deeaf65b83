//! Endpoint addresses: `rill://host:port/endpoint-name`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an endpoint lives: the socket of its process's RPC service and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RpcAddress {
    /// UDP socket of the remote [`RpcService`](crate::service::RpcService).
    pub socket: SocketAddr,
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
    pub fn new(socket: SocketAddr, endpoint: impl Into<String>) -> Self {
        RpcAddress {
            socket,
            endpoint: endpoint.into(),
        }
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rill://{}/{}", self.socket, self.endpoint)
    }
}

impl FromStr for RpcAddress {
    type Err = AddressParseError;

    /// Parses `rill://host:port/name`; a host name is resolved (first address wins).
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
        let socket = match host.parse::<SocketAddr>() {
            Ok(s) => s,
            Err(_) => host
                .to_socket_addrs()
                .map_err(|e| err(&format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| err(&format!("{host} resolves to no address")))?,
        };
        Ok(RpcAddress::new(socket, endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: RpcAddress = "rill://127.0.0.1:6123/dispatcher".parse().unwrap();
        assert_eq!(a.socket, "127.0.0.1:6123".parse().unwrap());
        assert_eq!(a.endpoint, "dispatcher");
        assert_eq!(a.to_string(), "rill://127.0.0.1:6123/dispatcher");
        let b: RpcAddress = "rill://localhost:1/x".parse().unwrap();
        assert!(b.socket.ip().is_loopback());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://a:1/x",
            "rill://127.0.0.1:1",
            "rill://127.0.0.1:1/",
            "rill://nope/x",
        ] {
            assert!(bad.parse::<RpcAddress>().is_err(), "{bad}");
        }
    }
}
