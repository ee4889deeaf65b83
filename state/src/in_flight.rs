//! In-flight data of an unaligned checkpoint: the bytes that a task's channels carried
//! across the checkpoint, stored with the state and replayed first on recovery.
//!
//! An unaligned barrier overtakes data, so a checkpoint's consistent cut runs through the
//! channels. Each task stores its part of the cut:
//!
//! * **input**, per input channel: what the channel delivered before its barrier but the
//!   task had not processed when it took its snapshot (a record begun in an earlier
//!   buffer, then every buffer up to the channel's barrier);
//! * **output**, per output edge and subpartition: the buffers the barrier overtook in
//!   the output queue.
//!
//! Both are a channel's raw byte stream (length-prefixed records, cut anywhere): a
//! restored task feeds its input parts to the channels' deserializers before any new
//! input, and writes its output parts to the subpartitions before any new output, so
//! every record crosses the cut exactly once. The data is only meaningful for the same
//! job graph at the same parallelism.
//!
//! # File format
//!
//! `magic "RILLINF1"`, `version: u32`, `parts: u32`, then per part `kind: u8` (0 input,
//! 1 output), `a: u32` (input channel, or output edge), `b: u32` (0, or subpartition),
//! `len: u32`, `len` bytes; then the CRC-32 of everything before it. All integers little
//! endian. A truncated or corrupt file is a [`StateError::Corrupt`] naming file and offset.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::snapshot::StateFileRef;

const MAGIC: &[u8; 8] = b"RILLINF1";
const VERSION: u32 = 1;

/// One task's in-flight data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlightData {
    /// `(input channel, bytes)`, channels without data left out.
    pub input: Vec<(u32, Vec<u8>)>,
    /// `(output edge, subpartition, bytes)`, subpartitions without data left out.
    pub output: Vec<(u32, u32, Vec<u8>)>,
}

impl InFlightData {
    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }

    /// Bytes of input data.
    pub fn input_bytes(&self) -> u64 {
        self.input.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Bytes of output data.
    pub fn output_bytes(&self) -> u64 {
        self.output.iter().map(|(_, _, b)| b.len() as u64).sum()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let too_large = || StateError::Serialize {
            name: "in-flight data".into(),
            reason: "a channel's in-flight data would exceed 4 GiB".into(),
        };
        let mut out = Vec::with_capacity(
            24 + (self.input_bytes() + self.output_bytes()) as usize
                + 13 * (self.input.len() + self.output.len()),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let parts = u32::try_from(self.input.len() + self.output.len()).map_err(|_| too_large())?;
        out.extend_from_slice(&parts.to_le_bytes());
        let mut part = |kind: u8, a: u32, b: u32, bytes: &[u8]| -> Result<()> {
            out.push(kind);
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
            let len = u32::try_from(bytes.len()).map_err(|_| too_large())?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
            Ok(())
        };
        for (channel, bytes) in &self.input {
            part(0, *channel, 0, bytes)?;
        }
        for (edge, sub, bytes) in &self.output {
            part(1, *edge, *sub, bytes)?;
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a file's bytes (`path` names it in errors).
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        let corrupt =
            |offset: usize, reason: String| StateError::corrupt(path, offset as u64, reason);
        if bytes.len() < 20 {
            return Err(corrupt(
                bytes.len(),
                format!("in-flight data file is {} bytes, too short", bytes.len()),
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt(
                0,
                "not a rill in-flight data file (bad magic)".into(),
            ));
        }
        let body = &bytes[..bytes.len() - 4];
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(body) {
            return Err(corrupt(body.len(), "in-flight data CRC mismatch".into()));
        }
        let u32_at = |at: usize| -> Result<u32> {
            body.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or_else(|| corrupt(at, "truncated in-flight data".into()))
        };
        let version = u32_at(8)?;
        if version != VERSION {
            return Err(StateError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let parts = u32_at(12)?;
        let mut data = InFlightData::default();
        let mut at = 16;
        for _ in 0..parts {
            let kind = *body
                .get(at)
                .ok_or_else(|| corrupt(at, "truncated in-flight data".into()))?;
            let (a, b, len) = (u32_at(at + 1)?, u32_at(at + 5)?, u32_at(at + 9)? as usize);
            let start = at + 13;
            let part = body
                .get(start..start + len)
                .ok_or_else(|| {
                    corrupt(start, format!("in-flight part of {len} bytes is truncated"))
                })?
                .to_vec();
            match kind {
                0 => data.input.push((a, part)),
                1 => data.output.push((a, b, part)),
                k => return Err(corrupt(at, format!("unknown in-flight part kind {k}"))),
            }
            at = start + len;
        }
        if at != body.len() {
            return Err(corrupt(
                at,
                "trailing bytes after the in-flight parts".into(),
            ));
        }
        Ok(data)
    }
}

/// Where a task's in-flight data is, in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightHandle {
    /// The file.
    pub file: StateFileRef,
    /// Bytes of input data in it.
    pub input_bytes: u64,
    /// Bytes of output data in it.
    pub output_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InFlightData {
        InFlightData {
            input: vec![(0, b"abc".to_vec()), (3, vec![9; 5000])],
            output: vec![(1, 2, b"xyz".to_vec())],
        }
    }

    #[test]
    fn round_trips_and_counts_bytes() {
        let d = sample();
        let bytes = d.encode().unwrap();
        assert_eq!(InFlightData::decode(Path::new("f"), &bytes).unwrap(), d);
        assert_eq!((d.input_bytes(), d.output_bytes()), (5003, 3));
        let empty = InFlightData::default();
        assert!(empty.is_empty());
        assert_eq!(
            InFlightData::decode(Path::new("f"), &empty.encode().unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn every_truncation_and_flipped_byte_is_a_typed_error() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            let err = InFlightData::decode(Path::new("/x/in-flight"), &bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains("/x/in-flight"), "{err}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                InFlightData::decode(Path::new("f"), &b).is_err(),
                "flip at {i}"
            );
        }
    }
}
