//! Wire format of the data plane: the messages of the credit protocol and their framing.
//!
//! Each remote input channel is one bidirectional QUIC stream. The consumer opens it and
//! writes [`ConsumerMessage`]s; the producer answers with buffer responses (a fixed
//! header followed by `size` payload bytes) and at most one error response, after which
//! it finishes the stream. All integers are little endian.
//!
//! ```text
//! consumer → producer
//!   0x01 PartitionRequest   partition: u128, subpartition: u32, initial_credit: u32
//!   0x02 AddCredit          credit: u32 (> 0)
//!   0x03 ResumeConsumption
//!   0x04 CancelPartitionRequest
//!   0x05 CloseRequest
//! producer → consumer
//!   0x10 BufferResponse     seq: u32, backlog: u32, data_type: u8, size: u32, payload
//!   0x11 ErrorResponse      kind: u8, len: u16, message: [u8; len]
//! ```
//!
//! Decoders are incremental and pure: they take whatever chunks QUIC delivered (chunk
//! boundaries mean nothing) and yield messages. Anything that does not parse, a payload
//! larger than a segment, an event larger than [`MAX_EVENT_SIZE`], or an unknown tag is a
//! [`NetworkError::MalformedFrame`]; the driver then closes the stream.

use bytes::{Buf, Bytes};

use crate::error::NetworkError;
use crate::event::MAX_EVENT_SIZE;
use crate::partition::PartitionId;

/// Messages from the consumer of a channel to its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerMessage {
    /// Opens the channel: read `subpartition` of `partition`, holding `initial_credit`
    /// buffers (the channel's exclusive buffers) for it. Must be the first message.
    PartitionRequest {
        /// Partition to read.
        partition: PartitionId,
        /// Subpartition index.
        subpartition: u32,
        /// Buffers already reserved for data.
        initial_credit: u32,
    },
    /// `n` (> 0) more buffers are reserved for data.
    AddCredit(u32),
    /// Unblocks the channel after a blocking event (aligned barrier).
    ResumeConsumption,
    /// The consumer gives up on the channel (cancellation); the producer releases it.
    CancelPartitionRequest,
    /// The consumer finished reading (after end-of-partition).
    CloseRequest,
}

/// Kind of payload of a buffer response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Length-prefixed records; needs one credit.
    Data,
    /// An encoded [`Event`](crate::event::Event); needs no credit.
    Event,
}

/// Header of a buffer response; `size` payload bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferHeader {
    /// Sequence number, starting at 0 and increasing by one per response.
    pub seq: u32,
    /// Data buffers queued behind this one at the producer.
    pub backlog: u32,
    /// Data or event.
    pub data_type: DataType,
    /// Payload bytes.
    pub size: u32,
}

/// Why the producer refused or ended a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The partition is not (yet) registered: the consumer retries with backoff.
    PartitionNotFound,
    /// The consumer broke the protocol.
    ProtocolViolation,
    /// The partition was released or failed.
    PartitionFailed,
}

const TAG_REQUEST: u8 = 0x01;
const TAG_ADD_CREDIT: u8 = 0x02;
const TAG_RESUME: u8 = 0x03;
const TAG_CANCEL: u8 = 0x04;
const TAG_CLOSE: u8 = 0x05;
const TAG_BUFFER: u8 = 0x10;
const TAG_ERROR: u8 = 0x11;

/// Encoded size of a buffer-response header.
pub const BUFFER_HEADER_LEN: usize = 14;
const MAX_ERROR_MESSAGE: usize = 1024;

/// Appends the encoding of a consumer message.
pub fn encode_consumer(msg: &ConsumerMessage, out: &mut Vec<u8>) {
    match *msg {
        ConsumerMessage::PartitionRequest {
            partition,
            subpartition,
            initial_credit,
        } => {
            out.push(TAG_REQUEST);
            out.extend_from_slice(&partition.0.to_le_bytes());
            out.extend_from_slice(&subpartition.to_le_bytes());
            out.extend_from_slice(&initial_credit.to_le_bytes());
        }
        ConsumerMessage::AddCredit(n) => {
            out.push(TAG_ADD_CREDIT);
            out.extend_from_slice(&n.to_le_bytes());
        }
        ConsumerMessage::ResumeConsumption => out.push(TAG_RESUME),
        ConsumerMessage::CancelPartitionRequest => out.push(TAG_CANCEL),
        ConsumerMessage::CloseRequest => out.push(TAG_CLOSE),
    }
}

/// Encodes a buffer-response header.
pub fn encode_buffer_header(h: &BufferHeader) -> [u8; BUFFER_HEADER_LEN] {
    let mut out = [0u8; BUFFER_HEADER_LEN];
    out[0] = TAG_BUFFER;
    out[1..5].copy_from_slice(&h.seq.to_le_bytes());
    out[5..9].copy_from_slice(&h.backlog.to_le_bytes());
    out[9] = match h.data_type {
        DataType::Data => 0,
        DataType::Event => 1,
    };
    out[10..14].copy_from_slice(&h.size.to_le_bytes());
    out
}

/// Appends an error response (the message is truncated to 1 KiB).
pub fn encode_error(kind: ErrorKind, message: &str, out: &mut Vec<u8>) {
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.push(TAG_ERROR);
    out.push(match kind {
        ErrorKind::PartitionNotFound => 0,
        ErrorKind::ProtocolViolation => 1,
        ErrorKind::PartitionFailed => 2,
    });
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&message.as_bytes()[..end]);
}

/// Incremental decoder of consumer messages (producer side).
#[derive(Debug, Default)]
pub struct ConsumerDecoder {
    buf: Vec<u8>,
}

impl ConsumerDecoder {
    /// Consumes `input` and appends every complete message to `out`.
    pub fn decode(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<ConsumerMessage>,
    ) -> Result<(), NetworkError> {
        while !input.is_empty() {
            let tag = *self.buf.first().unwrap_or(&input[0]);
            let need = match tag {
                TAG_REQUEST => 25,
                TAG_ADD_CREDIT => 5,
                TAG_RESUME | TAG_CANCEL | TAG_CLOSE => 1,
                t => {
                    return Err(NetworkError::malformed(format!(
                        "unknown consumer message tag {t:#04x}"
                    )))
                }
            };
            let take = (need - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < need {
                break;
            }
            let b = &self.buf;
            let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            out.push(match tag {
                TAG_REQUEST => {
                    let mut p = [0u8; 16];
                    p.copy_from_slice(&b[1..17]);
                    ConsumerMessage::PartitionRequest {
                        partition: PartitionId(u128::from_le_bytes(p)),
                        subpartition: u32_at(17),
                        initial_credit: u32_at(21),
                    }
                }
                TAG_ADD_CREDIT => ConsumerMessage::AddCredit(u32_at(1)),
                TAG_RESUME => ConsumerMessage::ResumeConsumption,
                TAG_CANCEL => ConsumerMessage::CancelPartitionRequest,
                _ => ConsumerMessage::CloseRequest,
            });
            self.buf.clear();
        }
        Ok(())
    }
}

/// What the producer-frame decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerFrame {
    /// A buffer response begins; `size` payload bytes follow as [`ProducerFrame::Payload`].
    Header(BufferHeader),
    /// Part of the current payload; `last` marks its final part.
    Payload {
        /// The bytes (a slice of what QUIC delivered, not a copy).
        chunk: Bytes,
        /// Whether the payload is complete.
        last: bool,
    },
    /// An error response.
    Error {
        /// Its kind.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
}

#[derive(Debug)]
enum PState {
    Tag,
    Header {
        buf: [u8; BUFFER_HEADER_LEN],
        have: usize,
    },
    Payload {
        remaining: usize,
    },
    ErrorHead {
        buf: [u8; 3],
        have: usize,
    },
    ErrorBody {
        kind: ErrorKind,
        len: usize,
        msg: Vec<u8>,
    },
}

/// Incremental decoder of producer frames (consumer side).
#[derive(Debug)]
pub struct ProducerDecoder {
    state: PState,
    max_payload: usize,
}

impl ProducerDecoder {
    /// Creates a decoder rejecting data payloads above `max_payload` (the segment size).
    pub fn new(max_payload: usize) -> Self {
        ProducerDecoder {
            state: PState::Tag,
            max_payload,
        }
    }

    /// Whether the decoder is between frames (a stream may end only there).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, PState::Tag)
    }

    /// Takes bytes from the front of `input` and returns the next item, or `None` once
    /// `input` is used up without completing one.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<ProducerFrame>, NetworkError> {
        loop {
            if input.is_empty() {
                // A zero-size payload completes without input.
                if let PState::Payload { remaining: 0 } = self.state {
                    self.state = PState::Tag;
                    return Ok(Some(ProducerFrame::Payload {
                        chunk: Bytes::new(),
                        last: true,
                    }));
                }
                return Ok(None);
            }
            match &mut self.state {
                PState::Tag => {
                    self.state = match input[0] {
                        TAG_BUFFER => PState::Header {
                            buf: [0; BUFFER_HEADER_LEN],
                            have: 0,
                        },
                        TAG_ERROR => {
                            input.advance(1);
                            PState::ErrorHead {
                                buf: [0; 3],
                                have: 0,
                            }
                        }
                        t => {
                            return Err(NetworkError::malformed(format!(
                                "unknown producer frame tag {t:#04x}"
                            )))
                        }
                    };
                }
                PState::Header { buf, have } => {
                    let take = (BUFFER_HEADER_LEN - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    input.advance(take);
                    *have += take;
                    if *have < BUFFER_HEADER_LEN {
                        return Ok(None);
                    }
                    let b = *buf;
                    let u32_at =
                        |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                    let data_type = match b[9] {
                        0 => DataType::Data,
                        1 => DataType::Event,
                        t => return Err(NetworkError::malformed(format!("bad data type {t}"))),
                    };
                    let header = BufferHeader {
                        seq: u32_at(1),
                        backlog: u32_at(5),
                        data_type,
                        size: u32_at(10),
                    };
                    let limit = match data_type {
                        DataType::Data => self.max_payload,
                        DataType::Event => MAX_EVENT_SIZE,
                    };
                    if header.size as usize > limit
                        || (data_type == DataType::Data && header.size == 0)
                    {
                        return Err(NetworkError::malformed(format!(
                            "payload of {} bytes (limit {limit})",
                            header.size
                        )));
                    }
                    self.state = PState::Payload {
                        remaining: header.size as usize,
                    };
                    return Ok(Some(ProducerFrame::Header(header)));
                }
                PState::Payload { remaining } => {
                    let take = (*remaining).min(input.len());
                    let chunk = input.split_to(take);
                    *remaining -= take;
                    let last = *remaining == 0;
                    if last {
                        self.state = PState::Tag;
                    }
                    return Ok(Some(ProducerFrame::Payload { chunk, last }));
                }
                PState::ErrorHead { buf, have } => {
                    let take = (3 - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    input.advance(take);
                    *have += take;
                    if *have < 3 {
                        return Ok(None);
                    }
                    let kind = match buf[0] {
                        0 => ErrorKind::PartitionNotFound,
                        1 => ErrorKind::ProtocolViolation,
                        2 => ErrorKind::PartitionFailed,
                        k => return Err(NetworkError::malformed(format!("bad error kind {k}"))),
                    };
                    let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
                    if len > MAX_ERROR_MESSAGE {
                        return Err(NetworkError::malformed("error message too long"));
                    }
                    self.state = PState::ErrorBody {
                        kind,
                        len,
                        msg: Vec::with_capacity(len),
                    };
                    if len == 0 {
                        self.state = PState::Tag;
                        return Ok(Some(ProducerFrame::Error {
                            kind,
                            message: String::new(),
                        }));
                    }
                }
                PState::ErrorBody { kind, len, msg } => {
                    let take = (*len - msg.len()).min(input.len());
                    msg.extend_from_slice(&input[..take]);
                    input.advance(take);
                    if msg.len() < *len {
                        return Ok(None);
                    }
                    let frame = ProducerFrame::Error {
                        kind: *kind,
                        message: String::from_utf8_lossy(msg).into_owned(),
                    };
                    self.state = PState::Tag;
                    return Ok(Some(frame));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(
        bytes: &[u8],
        split: usize,
        max: usize,
    ) -> Result<Vec<ProducerFrame>, NetworkError> {
        let mut d = ProducerDecoder::new(max);
        let mut out = Vec::new();
        for part in bytes.chunks(split.max(1)) {
            let mut input = Bytes::copy_from_slice(part);
            while let Some(f) = d.decode(&mut input)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn producer_frames_survive_any_chunking() {
        let mut wire = Vec::new();
        let h = BufferHeader {
            seq: 0,
            backlog: 3,
            data_type: DataType::Data,
            size: 5,
        };
        wire.extend_from_slice(&encode_buffer_header(&h));
        wire.extend_from_slice(b"hello");
        encode_error(ErrorKind::PartitionNotFound, "nope", &mut wire);
        for split in 1..wire.len() + 1 {
            let frames = decode_all(&wire, split, 100).unwrap();
            assert_eq!(frames[0], ProducerFrame::Header(h));
            let payload: Vec<u8> = frames
                .iter()
                .filter_map(|f| match f {
                    ProducerFrame::Payload { chunk, .. } => Some(chunk.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(payload, b"hello");
            assert_eq!(
                frames.last().unwrap(),
                &ProducerFrame::Error {
                    kind: ErrorKind::PartitionNotFound,
                    message: "nope".into()
                }
            );
        }
    }

    #[test]
    fn oversized_payload_and_unknown_tags_are_malformed() {
        let h = BufferHeader {
            seq: 0,
            backlog: 0,
            data_type: DataType::Data,
            size: 101,
        };
        assert!(decode_all(&encode_buffer_header(&h), 3, 100).is_err());
        assert!(decode_all(&[0x99, 1, 2], 1, 100).is_err());
        let mut d = ConsumerDecoder::default();
        assert!(d.decode(&[0x42], &mut Vec::new()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(5), ..ProptestConfig::default() })]
        #[test]
        fn consumer_messages_round_trip(
            credits in proptest::collection::vec(1u32..1000, 0..10),
            partition in any::<u128>(),
            split in 1usize..30,
        ) {
            let mut msgs = vec![ConsumerMessage::PartitionRequest { partition: PartitionId(partition), subpartition: 7, initial_credit: 2 }];
            msgs.extend(credits.iter().map(|&c| ConsumerMessage::AddCredit(c)));
            msgs.extend([ConsumerMessage::ResumeConsumption, ConsumerMessage::CancelPartitionRequest, ConsumerMessage::CloseRequest]);
            let mut wire = Vec::new();
            for m in &msgs { encode_consumer(m, &mut wire); }
            let mut d = ConsumerDecoder::default();
            let mut out = Vec::new();
            for part in wire.chunks(split) { d.decode(part, &mut out).unwrap(); }
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), split in 1usize..20) {
            let _ = decode_all(&bytes, split, 64);
            let mut d = ConsumerDecoder::default();
            let mut out = Vec::new();
            for part in bytes.chunks(split) { if d.decode(part, &mut out).is_err() { break; } }
        }
    }
}
