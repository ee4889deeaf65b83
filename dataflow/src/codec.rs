//! Compact binary encoding of [`StreamElement`]s for the data plane.
//!
//! The network serializes each element length-prefixed into buffers (DESIGN §4); this
//! module defines the bytes between the prefixes. The format is hand-written instead of
//! rmp-serde because it runs once per record: one tag byte, then
//!
//! | element | bytes after the tag |
//! |---|---|
//! | record without timestamp (`0x00`) | value |
//! | record with timestamp (`0x01`) | zigzag varint timestamp, value |
//! | watermark (`0x02`) | zigzag varint |
//! | status (`0x03`) | `0` active / `1` idle |
//! | end of input (`0x04`) | — |
//!
//! and a value is a tag (`0` null, `1` false, `2` true, `3` i64 zigzag varint, `4` f64
//! little-endian, `5` str, `6` bytes — both varint length + bytes — `7` tuple: varint arity
//! + values). Small integers take 2 bytes.
//!
//! Decoding is peer input: it returns [`DataflowError::Codec`] on truncation, bad tags,
//! invalid UTF-8, absurd lengths or nesting deeper than [`MAX_DEPTH`], and never panics.

use crate::element::{StreamElement, StreamRecord, WatermarkStatus};
use crate::error::{DataflowError, Result};
use crate::value::Value;

/// Deepest tuple nesting accepted when decoding (guards the decoder's recursion).
pub const MAX_DEPTH: usize = 64;

/// Appends the encoding of `element` to `out`.
pub fn encode_element(element: &StreamElement, out: &mut Vec<u8>) {
    match element {
        StreamElement::Record(r) => encode_record(r, out),
        StreamElement::Watermark(w) => {
            out.push(0x02);
            put_varint(out, zigzag(*w));
        }
        StreamElement::WatermarkStatus(s) => {
            out.push(0x03);
            out.push(u8::from(*s == WatermarkStatus::Idle));
        }
        StreamElement::EndOfInput => out.push(0x04),
    }
}

/// Appends the encoding of a record (as a [`StreamElement::Record`]) to `out`.
pub fn encode_record(record: &StreamRecord, out: &mut Vec<u8>) {
    match record.timestamp {
        None => out.push(0x00),
        Some(ts) => {
            out.push(0x01);
            put_varint(out, zigzag(ts));
        }
    }
    encode_value(&record.value, out);
}

/// Appends the encoding of a value to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::I64(i) => {
            out.push(3);
            put_varint(out, zigzag(*i));
        }
        Value::F64(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(5);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(6);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Tuple(t) => {
            out.push(7);
            put_varint(out, t.len() as u64);
            for v in t {
                encode_value(v, out);
            }
        }
    }
}

/// Decodes exactly one element from `bytes` (one length-prefixed frame's content).
pub fn decode_element(bytes: &[u8]) -> Result<StreamElement> {
    let mut r = Reader { bytes, pos: 0 };
    let element = match r.byte()? {
        0x00 => StreamElement::Record(StreamRecord {
            value: r.value(0)?,
            timestamp: None,
        }),
        0x01 => {
            let ts = unzigzag(r.varint()?);
            StreamElement::Record(StreamRecord {
                value: r.value(0)?,
                timestamp: Some(ts),
            })
        }
        0x02 => StreamElement::Watermark(unzigzag(r.varint()?)),
        0x03 => match r.byte()? {
            0 => StreamElement::WatermarkStatus(WatermarkStatus::Active),
            1 => StreamElement::WatermarkStatus(WatermarkStatus::Idle),
            other => return Err(DataflowError::Codec(format!("bad status byte {other}"))),
        },
        0x04 => StreamElement::EndOfInput,
        other => return Err(DataflowError::Codec(format!("bad element tag {other:#x}"))),
    };
    if r.pos != bytes.len() {
        return Err(DataflowError::Codec(format!(
            "{} trailing bytes after element",
            bytes.len() - r.pos
        )));
    }
    Ok(element)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| DataflowError::Codec("truncated element".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DataflowError::Codec("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, len: u64) -> Result<&[u8]> {
        let remaining = self.bytes.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= remaining)
            .ok_or_else(|| {
                DataflowError::Codec(format!("length {len} exceeds {remaining} remaining bytes"))
            })?;
        let s = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::I64(unzigzag(self.varint()?)),
            4 => {
                let b = self.take(8)?;
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                Value::F64(f64::from_le_bytes(w))
            }
            5 => {
                let len = self.varint()?;
                let b = self.take(len)?;
                Value::Str(
                    std::str::from_utf8(b)
                        .map_err(|e| DataflowError::Codec(format!("string is not UTF-8: {e}")))?
                        .to_owned(),
                )
            }
            6 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            7 => {
                if depth >= MAX_DEPTH {
                    return Err(DataflowError::Codec(format!(
                        "tuples nested deeper than {MAX_DEPTH}"
                    )));
                }
                let arity = self.varint()?;
                // Every field takes at least one byte: bounds the allocation by the input.
                if arity > (self.bytes.len() - self.pos) as u64 {
                    return Err(DataflowError::Codec(format!(
                        "tuple arity {arity} too large"
                    )));
                }
                let mut fields = Vec::with_capacity(arity as usize);
                for _ in 0..arity {
                    fields.push(self.value(depth + 1)?);
                }
                Value::Tuple(fields)
            }
            other => return Err(DataflowError::Codec(format!("bad value tag {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: StreamElement) {
        let mut buf = Vec::new();
        encode_element(&e, &mut buf);
        assert_eq!(decode_element(&buf).unwrap(), e);
    }

    #[test]
    fn elements_round_trip() {
        round_trip(StreamElement::Record(StreamRecord::new(Value::I64(-5))));
        round_trip(StreamElement::Record(StreamRecord::with_timestamp(
            Value::Tuple(vec![
                Value::Str("wörd".into()),
                Value::I64(i64::MIN),
                Value::F64(1.5),
                Value::Bytes(vec![0, 255]),
                Value::Null,
                Value::Bool(true),
                Value::Tuple(vec![]),
            ]),
            i64::MAX,
        )));
        round_trip(StreamElement::Watermark(-1));
        round_trip(StreamElement::WatermarkStatus(WatermarkStatus::Idle));
        round_trip(StreamElement::EndOfInput);
    }

    #[test]
    fn small_ints_are_two_bytes() {
        let mut buf = Vec::new();
        encode_record(&StreamRecord::new(Value::I64(42)), &mut buf);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x09],
            &[0x00, 5, 10, b'a'],
            &[0x00, 5, 1, 0xff],
            &[
                0x00, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &[0x00, 7, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x04, 0x00],
        ] {
            assert!(
                matches!(decode_element(bad), Err(DataflowError::Codec(_))),
                "{bad:?}"
            );
        }
        let deep: Vec<u8> = std::iter::once(0x00)
            .chain(std::iter::repeat_n([7u8, 1], 100).flatten())
            .chain([0])
            .collect();
        assert!(decode_element(&deep).is_err());
    }
}
