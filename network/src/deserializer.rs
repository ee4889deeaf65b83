//! Record framing on the consumer side: reassembles length-prefixed records from a
//! channel's sequence of buffers (see [`serializer`](crate::serializer)).
//!
//! A record that lies entirely inside one buffer is returned as a slice of that buffer: no
//! copy, no allocation. Only a record (or length prefix) that spans buffers is assembled
//! in a reusable scratch vector. A buffer is dropped, and its segment recycled (which
//! becomes credit for a remote channel), as soon as its last byte was read.
//!
//! Usage is a two-step lending iterator, which keeps the borrow checker simple for
//! callers that loop over several channels:
//!
//! ```
//! # use rill_network::deserializer::RecordDeserializer;
//! let mut d = RecordDeserializer::new(1 << 20);
//! d.push_buffer(bytes::Bytes::from_static(&[3, 0, 0, 0, b'a', b'b', b'c']));
//! while d.next_record().unwrap() {
//!     assert_eq!(d.record(), b"abc");
//! }
//! ```

use bytes::Bytes;

use crate::error::NetworkError;
use crate::serializer::LENGTH_PREFIX;

#[derive(Debug, Clone, Copy)]
enum Loc {
    None,
    /// `start..end` of the current buffer.
    InBuffer(usize, usize),
    /// The whole scratch vector.
    Scratch,
}

fn check_len(len: u32, max: usize) -> Result<usize, NetworkError> {
    let len = len as usize;
    if len > max {
        return Err(NetworkError::RecordTooLarge {
            size: len,
            limit: max,
        });
    }
    Ok(len)
}

fn begin_spanning(scratch: &mut Vec<u8>, spanning: &mut Option<usize>, len: usize) {
    scratch.clear();
    // Reserve at most 1 MiB up front: a corrupt prefix must not allocate gigabytes.
    scratch.reserve(len.min(1 << 20));
    *spanning = Some(len);
}

/// Reassembles records from one channel's buffers.
#[derive(Debug)]
pub struct RecordDeserializer {
    current: Option<Bytes>,
    pos: usize,
    /// Bytes of a spanning length prefix seen so far.
    len_buf: [u8; LENGTH_PREFIX],
    len_have: usize,
    /// Body length of the spanning record being assembled in `scratch`, if any.
    spanning: Option<usize>,
    scratch: Vec<u8>,
    record: Loc,
    max_record_size: usize,
}

impl RecordDeserializer {
    /// Creates a deserializer rejecting records above `max_record_size` bytes.
    pub fn new(max_record_size: usize) -> Self {
        RecordDeserializer {
            current: None,
            pos: 0,
            len_buf: [0; LENGTH_PREFIX],
            len_have: 0,
            spanning: None,
            scratch: Vec::new(),
            record: Loc::None,
            max_record_size,
        }
    }

    /// Whether the current buffer still holds unread bytes. Push the next buffer only
    /// when this is false (i.e. after [`Self::next_record`] returned `false`).
    pub fn has_buffered_data(&self) -> bool {
        self.current.as_ref().is_some_and(|b| self.pos < b.len())
    }

    /// Hands over the channel's next buffer.
    pub fn push_buffer(&mut self, buffer: Bytes) {
        debug_assert!(!self.has_buffered_data());
        self.record = Loc::None;
        self.current = Some(buffer);
        self.pos = 0;
    }

    /// Advances to the next complete record; `Ok(false)` means the current buffer is used
    /// up (and was released) and the next one is needed.
    #[inline]
    pub fn next_record(&mut self) -> Result<bool, NetworkError> {
        // Fast path: nothing half-read, and the next record lies wholly in this buffer.
        if self.len_have == 0 && self.spanning.is_none() && !matches!(self.record, Loc::Scratch) {
            if let Some(buf) = self.current.as_ref() {
                let data: &[u8] = buf;
                if let Some(prefix) = data.get(self.pos..self.pos + LENGTH_PREFIX) {
                    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                    let start = self.pos + LENGTH_PREFIX;
                    let end = start + len as usize;
                    if end <= data.len() && len as usize <= self.max_record_size {
                        self.pos = end;
                        self.record = Loc::InBuffer(start, end);
                        return Ok(true);
                    }
                }
            }
        }
        self.next_record_slow()
    }

    #[inline(never)]
    fn next_record_slow(&mut self) -> Result<bool, NetworkError> {
        if matches!(self.record, Loc::Scratch) {
            self.scratch.clear();
        }
        self.record = Loc::None;
        let Some(buf) = self.current.as_ref() else {
            return Ok(false);
        };
        let data: &[u8] = buf;
        loop {
            let avail = data.len() - self.pos;
            if let Some(need) = self.spanning {
                let take = (need - self.scratch.len()).min(avail);
                self.scratch
                    .extend_from_slice(&data[self.pos..self.pos + take]);
                self.pos += take;
                if self.scratch.len() == need {
                    self.spanning = None;
                    self.record = Loc::Scratch;
                    return Ok(true);
                }
                break;
            }
            if self.len_have == 0 && avail >= LENGTH_PREFIX {
                let mut len = [0u8; LENGTH_PREFIX];
                len.copy_from_slice(&data[self.pos..self.pos + LENGTH_PREFIX]);
                let len = check_len(u32::from_le_bytes(len), self.max_record_size)?;
                let start = self.pos + LENGTH_PREFIX;
                if data.len() - start >= len {
                    self.pos = start + len;
                    self.record = Loc::InBuffer(start, start + len);
                    return Ok(true);
                }
                self.pos = start;
                begin_spanning(&mut self.scratch, &mut self.spanning, len);
                continue;
            }
            if avail == 0 {
                break;
            }
            let take = (LENGTH_PREFIX - self.len_have).min(avail);
            self.len_buf[self.len_have..self.len_have + take]
                .copy_from_slice(&data[self.pos..self.pos + take]);
            self.len_have += take;
            self.pos += take;
            if self.len_have == LENGTH_PREFIX {
                self.len_have = 0;
                let len = check_len(u32::from_le_bytes(self.len_buf), self.max_record_size)?;
                begin_spanning(&mut self.scratch, &mut self.spanning, len);
                if len == 0 {
                    self.spanning = None;
                    self.record = Loc::Scratch;
                    return Ok(true);
                }
            }
        }
        // Buffer used up: release it now so its segment is recycled.
        self.current = None;
        self.pos = 0;
        Ok(false)
    }

    /// The record found by the last successful [`Self::next_record`].
    #[inline]
    pub fn record(&self) -> &[u8] {
        match self.record {
            Loc::None => &[],
            Loc::InBuffer(s, e) => self.current.as_ref().map_or(&[][..], |b| &b[s..e]),
            Loc::Scratch => &self.scratch,
        }
    }

    /// Checks that the channel did not end inside a record.
    pub fn finish(&self) -> Result<(), NetworkError> {
        if let Some(need) = self.spanning {
            return Err(NetworkError::TruncatedRecord {
                missing: need - self.scratch.len(),
            });
        }
        if self.len_have > 0 || self.has_buffered_data() {
            return Err(NetworkError::TruncatedRecord {
                missing: LENGTH_PREFIX - self.len_have,
            });
        }
        Ok(())
    }

    /// The bytes received but not yet returned as records, as the channel sent them: a
    /// record (or length prefix) begun in an earlier buffer, then the unread rest of the
    /// current buffer. An unaligned checkpoint stores them, and a deserializer restored
    /// by pushing them as a buffer continues exactly where this one is.
    pub fn unconsumed(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(len) = self.spanning {
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&self.scratch);
        } else {
            out.extend_from_slice(&self.len_buf[..self.len_have]);
        }
        if let Some(buf) = &self.current {
            out.extend_from_slice(&buf[self.pos.min(buf.len())..]);
        }
        out
    }

    /// Drops all buffered state (on cancellation).
    pub fn clear(&mut self) {
        self.current = None;
        self.pos = 0;
        self.len_have = 0;
        self.spanning = None;
        self.scratch.clear();
        self.record = Loc::None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer_pool::{Buffer, LocalBufferPool, NetworkBufferPool};
    use crate::serializer::{serialize_record, BufferSink};
    use proptest::prelude::*;
    use std::sync::Arc;

    struct VecSink {
        pool: Arc<LocalBufferPool>,
        out: Vec<Bytes>,
    }

    impl BufferSink for VecSink {
        fn request(&mut self) -> Result<Buffer, NetworkError> {
            self.pool.try_request()?.ok_or(NetworkError::PoolDestroyed)
        }
        fn finish(&mut self, buffer: Buffer) -> Result<(), NetworkError> {
            self.out.push(buffer.freeze());
            Ok(())
        }
    }

    fn round_trip(records: &[Vec<u8>], segment: usize) -> Vec<Vec<u8>> {
        let global = NetworkBufferPool::new(4096, segment);
        let mut sink = VecSink {
            pool: global.create_pool(1, 4096).unwrap(),
            out: Vec::new(),
        };
        let mut current = None;
        for r in records {
            serialize_record(&mut current, r, &mut sink).unwrap();
        }
        if let Some(b) = current.take() {
            sink.finish(b).unwrap();
        }
        let mut d = RecordDeserializer::new(1 << 24);
        let mut got = Vec::new();
        for b in sink.out.drain(..) {
            d.push_buffer(b);
            while d.next_record().unwrap() {
                got.push(d.record().to_vec());
            }
        }
        d.finish().unwrap();
        drop(d);
        assert_eq!(sink.pool.outstanding(), 0, "every buffer returned");
        got
    }

    #[test]
    fn record_larger_than_several_buffers_round_trips() {
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let records = vec![b"x".to_vec(), big, Vec::new(), b"tail".to_vec()];
        assert_eq!(round_trip(&records, 1024), records);
    }

    #[test]
    fn oversized_length_prefix_is_an_error_not_an_allocation() {
        let mut d = RecordDeserializer::new(100);
        d.push_buffer(Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f, 1, 2]));
        assert!(matches!(
            d.next_record(),
            Err(NetworkError::RecordTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_record_is_detected() {
        let mut d = RecordDeserializer::new(100);
        d.push_buffer(Bytes::from_static(&[5, 0, 0, 0, 1, 2]));
        assert!(!d.next_record().unwrap());
        assert!(matches!(
            d.finish(),
            Err(NetworkError::TruncatedRecord { missing: 3 })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(3), ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_records_round_trip(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..40),
            segment in prop_oneof![Just(1024usize), Just(1030usize), Just(4096usize)],
        ) {
            prop_assert_eq!(round_trip(&records, segment), records);
        }

        /// What an unaligned checkpoint relies on: a deserializer stopped after any
        /// buffer, or inside one, hands over what it has not returned, and a fresh one
        /// fed those bytes and then the remaining buffers returns exactly the rest.
        #[test]
        fn unconsumed_bytes_continue_in_a_new_deserializer(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..30),
            segment in prop_oneof![Just(1024usize), Just(1030usize)],
            cut in 0usize..200,
            within in 0usize..4,
        ) {
            let global = NetworkBufferPool::new(4096, segment);
            let mut sink = VecSink { pool: global.create_pool(1, 4096).unwrap(), out: Vec::new() };
            let mut current = None;
            for r in &records {
                serialize_record(&mut current, r, &mut sink).unwrap();
            }
            if let Some(b) = current.take() {
                sink.finish(b).unwrap();
            }
            let buffers = std::mem::take(&mut sink.out);
            let cut = cut % (buffers.len() + 1);
            let mut first = RecordDeserializer::new(1 << 24);
            let mut got = Vec::new();
            for b in &buffers[..cut] {
                first.push_buffer(b.clone());
                while first.next_record().unwrap() {
                    got.push(first.record().to_vec());
                }
            }
            // Stop `within` records into the next buffer, if there is one.
            let mut rest = &buffers[cut..];
            if let Some((b, tail)) = rest.split_first() {
                first.push_buffer(b.clone());
                for _ in 0..within {
                    if !first.next_record().unwrap() {
                        break;
                    }
                    got.push(first.record().to_vec());
                }
                rest = tail;
            }
            let mut second = RecordDeserializer::new(1 << 24);
            second.push_buffer(Bytes::from(first.unconsumed()));
            while second.next_record().unwrap() {
                got.push(second.record().to_vec());
            }
            for b in rest {
                second.push_buffer(b.clone());
                while second.next_record().unwrap() {
                    got.push(second.record().to_vec());
                }
            }
            second.finish().unwrap();
            prop_assert_eq!(got, records);
        }
    }
}
