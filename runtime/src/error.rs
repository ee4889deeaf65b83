//! The error type of the RPC layer.
//!
//! Every failed call says whether its message may have reached the endpoint
//! ([`RpcError::may_have_been_delivered`]) so callers can decide whether a retry is safe,
//! and whether trying again later can help ([`RpcError::is_retryable`]).

use std::time::Duration;

use crate::address::ResolveError;

/// Why a handshake with a remote [`RpcService`](crate::service::RpcService) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum HandshakeError {
    /// The peer speaks another version of the RPC protocol.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our protocol version.
        ours: u32,
        /// The peer's protocol version.
        theirs: u32,
    },
    /// The endpoint exists but serves another gateway than the one asked for.
    #[error("gateway mismatch at endpoint {endpoint}: expected {expected}, it serves {actual}")]
    GatewayMismatch {
        /// Endpoint name in the address.
        endpoint: String,
        /// Gateway the caller asked for.
        expected: String,
        /// Gateway the endpoint serves.
        actual: String,
    },
    /// No endpoint of that name is registered at the peer.
    #[error("no endpoint named {endpoint} at the peer")]
    UnknownEndpoint {
        /// Endpoint name in the address.
        endpoint: String,
    },
    /// The peer could not prove cluster membership, or refused ours.
    #[error("authentication failed: {reason}")]
    Authentication {
        /// What went wrong.
        reason: String,
    },
    /// The two sides hold different cluster secrets: the peer refused our proof of
    /// membership, or its own proof was made with another secret. Retrying cannot help
    /// until one side's `security.cluster-secret` changes.
    #[error("the cluster secret does not match: {reason}")]
    SecretMismatch {
        /// Which side found out.
        reason: String,
    },
    /// The peer answered the handshake with something that is not a handshake.
    #[error("malformed handshake: {reason}")]
    Malformed {
        /// What went wrong.
        reason: String,
    },
}

/// The error of an RPC call or of setting up a gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RpcError {
    /// No answer arrived within the ask timeout. The message may have been processed.
    #[error("call {method} to {address} timed out after {timeout:?}")]
    Timeout {
        /// Called gateway method.
        method: String,
        /// Address of the endpoint.
        address: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The peer could not be reached; the message was not sent.
    #[error("{address} is unreachable: {reason}")]
    Unreachable {
        /// Address of the endpoint.
        address: String,
        /// Transport-level reason.
        reason: String,
    },
    /// The connection broke while the call was in flight; it may have been processed.
    #[error("connection to {address} lost during call: {reason}")]
    ConnectionLost {
        /// Address of the endpoint.
        address: String,
        /// Transport-level reason.
        reason: String,
    },
    /// The endpoint exists but is not in the `Started` state; the message was not handled.
    #[error("endpoint {endpoint} is not started (state {state})")]
    EndpointNotStarted {
        /// Endpoint name.
        endpoint: String,
        /// The lifecycle state it is in.
        state: String,
    },
    /// The endpoint stopped before it answered; the message may have been processed.
    #[error("endpoint {endpoint} terminated before answering")]
    EndpointTerminated {
        /// Endpoint name.
        endpoint: String,
    },
    /// The call carried a fencing token other than the endpoint's current one.
    #[error("fencing token mismatch at {endpoint}: expected {expected}, got {received}")]
    Fencing {
        /// Endpoint name.
        endpoint: String,
        /// The endpoint's current token (`none` when it has none).
        expected: String,
        /// The token the call carried (`none` when it carried none).
        received: String,
    },
    /// The gateway could not be set up.
    #[error("handshake with {address} failed: {source}")]
    Handshake {
        /// Address of the endpoint.
        address: String,
        /// What failed.
        #[source]
        source: HandshakeError,
    },
    /// The encoded message (or its answer) exceeds the maximum frame size; nothing was sent.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// Configured maximum (`rpc.max-frame-size`).
        max: usize,
    },
    /// A message or answer could not be encoded or decoded.
    #[error("cannot encode or decode {what}: {reason}")]
    Codec {
        /// What was being encoded or decoded.
        what: String,
        /// The serializer's message.
        reason: String,
    },
    /// The handler at the endpoint failed (it panicked or reported an error).
    #[error("handler {method} at {endpoint} failed: {message}")]
    Remote {
        /// Endpoint name.
        endpoint: String,
        /// Gateway method.
        method: String,
        /// The failure.
        message: String,
    },
    /// The local RPC service is shut down.
    #[error("the RPC service is shut down")]
    ServiceStopped,
    /// The peer's host name did not resolve; nothing was sent. Retrying may help.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The session's outbound queue already holds `rpc.max-pending-tells` tells the peer
    /// has not taken (it is slow or unreachable); this one was not queued. Retrying after
    /// a while may help.
    #[error(
        "{address} is not keeping up: {capacity} tells are already queued (rpc.max-pending-tells)"
    )]
    QueueFull {
        /// Address of the endpoint.
        address: String,
        /// The configured bound.
        capacity: usize,
    },
}

impl RpcError {
    /// Returns whether the endpoint may have processed the message.
    ///
    /// `false` means the message certainly was not handled, so sending it again cannot
    /// duplicate its effect.
    pub fn may_have_been_delivered(&self) -> bool {
        match self {
            RpcError::Timeout { .. }
            | RpcError::ConnectionLost { .. }
            | RpcError::EndpointTerminated { .. }
            | RpcError::Remote { .. } => true,
            // A decode failure of the answer happens after delivery; of the request, at
            // the receiver before dispatch. The caller cannot tell which: assume delivery.
            RpcError::Codec { .. } => true,
            RpcError::Unreachable { .. }
            | RpcError::EndpointNotStarted { .. }
            | RpcError::Fencing { .. }
            | RpcError::Handshake { .. }
            | RpcError::FrameTooLarge { .. }
            | RpcError::ServiceStopped
            | RpcError::Resolve(_)
            | RpcError::QueueFull { .. } => false,
        }
    }

    /// Returns whether the same call may succeed later without any change by the caller.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout { .. }
                | RpcError::Unreachable { .. }
                | RpcError::ConnectionLost { .. }
                | RpcError::EndpointNotStarted { .. }
                | RpcError::Resolve(_)
                | RpcError::QueueFull { .. }
        )
    }
}
