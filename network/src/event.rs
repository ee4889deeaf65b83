//! In-band events: typed control elements that travel in order with the data.
//!
//! Events need no credit (the consumer decodes them into a value instead of a buffer) and
//! are delivered by input gates as [`GateItem::Event`](crate::input_gate::GateItem).
//! The network defines the events other subsystems plug into: end of partition, checkpoint
//! barriers and cancellation markers.
//!
//! An aligned checkpoint barrier is *blocking*: after a subpartition hands one out, it
//! sends nothing more on that channel until the consumer calls
//! [`InputGate::resume_consumption`](crate::input_gate::InputGate::resume_consumption)
//! (Flink's `ResumeConsumption`), which is how exactly-once alignment holds back a channel
//! without holding back its buffers' memory.
//!
//! # Wire encoding
//!
//! `tag: u8` followed by the fields, little endian: `EndOfPartition` = tag 1; barrier =
//! tag 2, `id: u64`, `timestamp_ms: i64`, `kind: u8`, `alignment: u8`; cancel marker = tag
//! 3, `id: u64`; end of data = tag 4, `drain: u8` (0 or 1). Unknown tags and truncated events are malformed frames.

use crate::error::NetworkError;

/// What a checkpoint barrier asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A user-triggered savepoint.
    Savepoint,
}

/// How tasks with several inputs treat the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alignment {
    /// Exactly-once: block the channel that delivered the barrier until all have.
    Aligned,
    /// At-least-once: track barriers but never block.
    AtLeastOnce,
    /// Barrier overtakes in-flight data, which is stored with the state.
    Unaligned,
}

/// Options carried by a checkpoint barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointOptions {
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Alignment mode.
    pub alignment: Alignment,
}

impl CheckpointOptions {
    /// An aligned (exactly-once) checkpoint.
    pub fn aligned_checkpoint() -> Self {
        CheckpointOptions {
            kind: CheckpointKind::Checkpoint,
            alignment: Alignment::Aligned,
        }
    }
}

/// An event travelling in-band with the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The producer finished: nothing follows on this channel.
    EndOfPartition,
    /// Checkpoint barrier `id`, triggered at `timestamp_ms` (milliseconds since the epoch).
    CheckpointBarrier {
        /// Checkpoint id.
        id: u64,
        /// Trigger time, milliseconds since the Unix epoch.
        timestamp_ms: i64,
        /// Options.
        options: CheckpointOptions,
    },
    /// Checkpoint `id` was aborted: stop aligning for it.
    CancelCheckpointMarker {
        /// Checkpoint id.
        id: u64,
    },
    /// The producer stops for a stop-with-savepoint: no more data follows (end of
    /// partition comes next). `drain: false` means the consumer must not flush its
    /// operators' final results (the job resumes from the savepoint later).
    EndOfData {
        /// Whether the stop drains the pipeline.
        drain: bool,
    },
}

const TAG_END: u8 = 1;
const TAG_BARRIER: u8 = 2;
const TAG_CANCEL: u8 = 3;
const TAG_END_OF_DATA: u8 = 4;

/// Largest encoded event, in bytes.
pub const MAX_EVENT_SIZE: usize = 19;

impl Event {
    /// Whether the channel stops after delivering this event until resumed.
    pub fn is_blocking(&self) -> bool {
        matches!(
            self,
            Event::CheckpointBarrier {
                options: CheckpointOptions {
                    alignment: Alignment::Aligned,
                    ..
                },
                ..
            }
        )
    }

    /// Whether this event overtakes the data queued before it (an unaligned checkpoint
    /// barrier): producers and input channels queue it ahead of their data buffers.
    pub fn is_priority(&self) -> bool {
        matches!(
            self,
            Event::CheckpointBarrier {
                options: CheckpointOptions {
                    alignment: Alignment::Unaligned,
                    ..
                },
                ..
            }
        )
    }

    /// Appends the wire encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Event::EndOfPartition => out.push(TAG_END),
            Event::CheckpointBarrier {
                id,
                timestamp_ms,
                options,
            } => {
                out.push(TAG_BARRIER);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&timestamp_ms.to_le_bytes());
                out.push(match options.kind {
                    CheckpointKind::Checkpoint => 0,
                    CheckpointKind::Savepoint => 1,
                });
                out.push(match options.alignment {
                    Alignment::Aligned => 0,
                    Alignment::AtLeastOnce => 1,
                    Alignment::Unaligned => 2,
                });
            }
            Event::CancelCheckpointMarker { id } => {
                out.push(TAG_CANCEL);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Event::EndOfData { drain } => {
                out.push(TAG_END_OF_DATA);
                out.push(u8::from(drain));
            }
        }
    }

    /// Decodes an event; the whole slice must be one event.
    pub fn decode(bytes: &[u8]) -> Result<Event, NetworkError> {
        let u64_at = |at: usize| -> Result<u64, NetworkError> {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .ok_or_else(|| NetworkError::malformed("truncated event"))
        };
        let (event, len) = match bytes.first() {
            Some(&TAG_END) => (Event::EndOfPartition, 1),
            Some(&TAG_BARRIER) => {
                let id = u64_at(1)?;
                let timestamp_ms = u64_at(9)? as i64;
                let kind = match bytes.get(17) {
                    Some(0) => CheckpointKind::Checkpoint,
                    Some(1) => CheckpointKind::Savepoint,
                    _ => return Err(NetworkError::malformed("bad checkpoint kind")),
                };
                let alignment = match bytes.get(18) {
                    Some(0) => Alignment::Aligned,
                    Some(1) => Alignment::AtLeastOnce,
                    Some(2) => Alignment::Unaligned,
                    _ => return Err(NetworkError::malformed("bad barrier alignment")),
                };
                (
                    Event::CheckpointBarrier {
                        id,
                        timestamp_ms,
                        options: CheckpointOptions { kind, alignment },
                    },
                    19,
                )
            }
            Some(&TAG_CANCEL) => (Event::CancelCheckpointMarker { id: u64_at(1)? }, 9),
            Some(&TAG_END_OF_DATA) => match bytes.get(1) {
                Some(0) => (Event::EndOfData { drain: false }, 2),
                Some(1) => (Event::EndOfData { drain: true }, 2),
                _ => return Err(NetworkError::malformed("bad end-of-data mode")),
            },
            Some(t) => return Err(NetworkError::malformed(format!("unknown event tag {t}"))),
            None => return Err(NetworkError::malformed("empty event")),
        };
        if bytes.len() != len {
            return Err(NetworkError::malformed("trailing bytes after event"));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_rejected() {
        let events = [
            Event::EndOfPartition,
            Event::CheckpointBarrier {
                id: 42,
                timestamp_ms: -5,
                options: CheckpointOptions {
                    kind: CheckpointKind::Savepoint,
                    alignment: Alignment::Unaligned,
                },
            },
            Event::CancelCheckpointMarker { id: 7 },
            Event::EndOfData { drain: false },
            Event::EndOfData { drain: true },
        ];
        for e in events {
            let mut v = Vec::new();
            e.encode(&mut v);
            assert!(v.len() <= MAX_EVENT_SIZE);
            assert_eq!(Event::decode(&v).unwrap(), e);
            v.push(0);
            assert!(Event::decode(&v).is_err());
        }
        assert!(Event::decode(&[]).is_err());
        assert!(Event::decode(&[9]).is_err());
        assert!(Event::decode(&[2, 1, 2]).is_err());
        assert!(Event::CheckpointBarrier {
            id: 1,
            timestamp_ms: 0,
            options: CheckpointOptions::aligned_checkpoint()
        }
        .is_blocking());
    }
}
