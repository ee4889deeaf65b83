//! The crate's one error type.
//!
//! Variants carry the context needed to act on them and [`NetworkError::is_retryable`]
//! says whether trying again can help. Protocol violations (a peer sending data without
//! credit, a sequence gap, a malformed frame) are errors of the *stream* they arrived on:
//! the driver closes that stream or connection, logs, and the process lives on.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::partition::PartitionId;

/// Everything that can go wrong in the data plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetworkError {
    /// A pool could not be created: the network memory cannot cover every pool's minimum.
    #[error(
        "insufficient network buffers: {required} segments required, {total} configured \
         (raise taskmanager.network.memory)"
    )]
    InsufficientBuffers {
        /// Segments the pools would need as a minimum, including the new one.
        required: usize,
        /// Segments the configured network memory holds.
        total: usize,
    },
    /// The buffer pool was destroyed while a request was waiting.
    #[error("buffer pool destroyed")]
    PoolDestroyed,
    /// No partition with this id is registered (yet) at the producer.
    #[error("result partition {partition} not found")]
    PartitionNotFound {
        /// The requested partition.
        partition: PartitionId,
    },
    /// A partition id is registered twice.
    #[error("result partition {partition} is already registered")]
    DuplicatePartition {
        /// The duplicate id.
        partition: PartitionId,
    },
    /// The partition was released (cancelled or failed) while in use.
    #[error("result partition {partition} was released")]
    PartitionReleased {
        /// The released partition.
        partition: PartitionId,
    },
    /// A subpartition index outside `0..count` was requested.
    #[error("subpartition {index} out of range, partition has {count}")]
    SubpartitionOutOfRange {
        /// The requested index.
        index: u32,
        /// Number of subpartitions.
        count: u32,
    },
    /// The subpartition already has a reader.
    #[error("subpartition {index} of {partition} already has a reader")]
    AlreadyConsumed {
        /// The partition.
        partition: PartitionId,
        /// The subpartition.
        index: u32,
    },
    /// A buffer arrived out of order: the stream lost or duplicated data.
    #[error("sequence gap: expected buffer {expected}, received {received}")]
    SequenceGap {
        /// The sequence number the consumer expected.
        expected: u32,
        /// The sequence number that arrived.
        received: u32,
    },
    /// A peer broke the credit rules (data without credit, credit overflow, zero credit).
    #[error("credit violation: {reason}")]
    CreditViolation {
        /// What the peer did.
        reason: Arc<str>,
    },
    /// A frame could not be decoded or was not allowed in the current protocol state.
    #[error("malformed frame: {reason}")]
    MalformedFrame {
        /// What was wrong.
        reason: Arc<str>,
    },
    /// A record's length prefix exceeds the configured maximum.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// Announced record size.
        size: usize,
        /// Configured maximum.
        limit: usize,
    },
    /// A channel ended in the middle of a record.
    #[error("channel ended inside a record ({missing} bytes missing)")]
    TruncatedRecord {
        /// Bytes of the record that never arrived (or of its length prefix).
        missing: usize,
    },
    /// The producer reported an error for this channel.
    #[error("producer error: {message}")]
    Remote {
        /// The producer's message.
        message: Arc<str>,
    },
    /// QUIC or socket failure talking to a peer.
    #[error("transport error with {peer}: {reason}")]
    Transport {
        /// The peer's address.
        peer: SocketAddr,
        /// What failed.
        reason: Arc<str>,
    },
    /// The peer did not prove cluster membership, or we could not prove ours.
    #[error("authentication with {peer} failed: {reason}")]
    Authentication {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        reason: Arc<str>,
    },
    /// The configuration is inconsistent.
    #[error("invalid network configuration: {0}")]
    Config(Arc<str>),
    /// The component was shut down.
    #[error("{what} is closed")]
    Closed {
        /// Which component.
        what: &'static str,
    },
}

impl NetworkError {
    /// Returns whether the same operation may succeed if retried later.
    ///
    /// A missing partition may simply not be deployed yet, and transport failures may be
    /// transient; protocol violations, configuration and authentication errors are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NetworkError::PartitionNotFound { .. } | NetworkError::Transport { .. }
        )
    }

    pub(crate) fn malformed(reason: impl Into<Arc<str>>) -> Self {
        NetworkError::MalformedFrame {
            reason: reason.into(),
        }
    }

    pub(crate) fn credit(reason: impl Into<Arc<str>>) -> Self {
        NetworkError::CreditViolation {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<Arc<str>>) -> Self {
        NetworkError::Config(reason.into())
    }

    pub(crate) fn transport(peer: SocketAddr, reason: impl std::fmt::Display) -> Self {
        NetworkError::Transport {
            peer,
            reason: reason.to_string().into(),
        }
    }
}
