//! Length-prefixed frames: `u32` big-endian payload length, then the payload.
//!
//! [`FrameDecoder`] is sans-IO: feed it whatever bytes arrive ([`FrameDecoder::push`]) and
//! take out complete frames ([`FrameDecoder::next_frame`]). A length above the configured
//! maximum is a protocol error for the whole stream (the peer is not speaking our protocol,
//! or is hostile): the decoder reports it and the caller drops that stream. Senders check
//! sizes before writing ([`encode_frame`]) so an oversize message fails only its own call.
//!
//! A frame's payload is rmp-serde; [`decode_payload`] decodes it with nesting bounded by
//! [`MAX_PAYLOAD_DEPTH`], so that no payload can recurse the decoder off its stack.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;

/// Default `rpc.max-frame-size`: 10 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 10 * 1024 * 1024;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Most the decoder reserves ahead of received bytes for a frame's announced length.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Deepest msgpack nesting [`decode_payload`] accepts. rmp-serde's default (1024) lets a
/// skipped unknown field or a deep value recurse past a 2 MiB stack in a debug build (a
/// stack overflow aborts the process); real messages nest a few levels, a
/// tower of values nested as deep as the data-plane codec allows (64 tuples) about 130.
pub const MAX_PAYLOAD_DEPTH: usize = 256;

/// Decodes one frame's rmp-serde payload, refusing nesting deeper than
/// [`MAX_PAYLOAD_DEPTH`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    T::deserialize(&mut de)
}

/// A framing violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame is longer than the maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced or encoded payload size.
        size: usize,
        /// Maximum payload size.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left over.
        buffered: usize,
    },
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], max: usize, out: &mut BytesMut) -> Result<(), FrameError> {
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            size: payload.len(),
            max,
        });
    }
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    Ok(())
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: BytesMut,
}

impl FrameDecoder {
    /// Creates a decoder that accepts payloads up to `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            buf: BytesMut::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame, if one is buffered.
    ///
    /// After an error the decoder must be discarded: the stream is out of sync.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge {
                size: len,
                max: self.max,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Room for the rest of the frame, but never more than `RESERVE_AHEAD` beyond
            // what arrived: four bytes claiming 10 MiB must not allocate 10 MiB. Longer
            // frames grow the buffer as their bytes come in.
            let missing = HEADER_LEN + len - self.buf.len();
            self.buf.reserve(missing.min(RESERVE_AHEAD));
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        encode_frame(b"hello", 100, &mut wire).unwrap();
        encode_frame(b"", 100, &mut wire).unwrap();
        encode_frame(&[7u8; 99], 100, &mut wire).unwrap();
        let mut dec = FrameDecoder::new(100);
        let mut frames = Vec::new();
        for chunk in wire.chunks(3) {
            dec.push(chunk);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        dec.finish().unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hello");
        assert!(frames[1].is_empty());
        assert_eq!(frames[2].len(), 99);
    }

    #[test]
    fn oversize_is_rejected_on_both_sides() {
        let mut wire = BytesMut::new();
        assert_eq!(
            encode_frame(&[0u8; 11], 10, &mut wire),
            Err(FrameError::TooLarge { size: 11, max: 10 })
        );
        assert!(wire.is_empty(), "nothing is written for a rejected frame");
        let mut dec = FrameDecoder::new(10);
        dec.push(&11u32.to_be_bytes());
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge { size: 11, max: 10 })
        );
    }

    #[test]
    fn a_header_alone_does_not_reserve_the_announced_length() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        dec.push(&(DEFAULT_MAX_FRAME_SIZE as u32).to_be_bytes());
        assert_eq!(dec.next_frame(), Ok(None));
        assert!(
            dec.buf.capacity() <= HEADER_LEN + RESERVE_AHEAD,
            "{}",
            dec.buf.capacity()
        );
        // The frame still arrives whole once its bytes do.
        let body = vec![3u8; DEFAULT_MAX_FRAME_SIZE];
        for chunk in body.chunks(1 << 16) {
            dec.push(chunk);
        }
        assert_eq!(
            dec.next_frame().unwrap().map(|f| f.len()),
            Some(DEFAULT_MAX_FRAME_SIZE)
        );
        dec.finish().unwrap();
    }

    #[test]
    fn payload_nesting_is_bounded_on_a_small_stack() {
        // A map whose one key holds 5000 nested arrays: skipping it recurses per level.
        let mut payload = vec![0x81, 0xa1, b'x'];
        payload.extend(std::iter::repeat_n(0x91, 5_000));
        payload.push(0xc0);
        let refused = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                #[derive(Debug, serde::Deserialize)]
                struct Empty {}
                decode_payload::<Empty>(&payload).is_err()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
        let nested: Vec<Vec<u32>> = decode_payload(&[0x91, 0x91, 0x07]).unwrap();
        assert_eq!(nested, vec![vec![7]]);
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut dec = FrameDecoder::new(10);
        dec.push(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.finish(), Err(FrameError::Truncated { buffered: 6 }));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder, never yield a frame above the maximum,
        /// and the frames it yields account for exactly the bytes it consumed.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                    split in 1usize..64) {
            let max = 256;
            let mut dec = FrameDecoder::new(max);
            let mut consumed = 0usize;
            'outer: for chunk in data.chunks(split) {
                dec.push(chunk);
                loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => {
                            prop_assert!(f.len() <= max);
                            consumed += HEADER_LEN + f.len();
                        }
                        Ok(None) => break,
                        Err(FrameError::TooLarge { size, .. }) => {
                            prop_assert!(size > max);
                            break 'outer;
                        }
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
            }
            prop_assert!(consumed <= data.len());
        }

        /// Valid frames survive any split of the stream.
        #[test]
        fn frames_survive_any_split(payloads in proptest::collection::vec(
                                        proptest::collection::vec(any::<u8>(), 0..300), 0..20),
                                    split in 1usize..100) {
            let mut wire = BytesMut::new();
            for p in &payloads {
                encode_frame(p, 300, &mut wire).unwrap();
            }
            let mut dec = FrameDecoder::new(300);
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                dec.push(chunk);
                while let Some(f) = dec.next_frame().unwrap() {
                    out.push(f.to_vec());
                }
            }
            prop_assert!(dec.finish().is_ok());
            prop_assert_eq!(out, payloads);
        }
    }
}
