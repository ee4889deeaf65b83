//! The record model: one small dynamic [`Value`] type for every operator.
//!
//! Why dynamic and not generic: a JobGraph is plain data shipped to other processes, and
//! operators are instantiated there by registered name, so the runtime can't know static
//! record types when it wires tasks together. A closed enum keeps the wire format, the
//! network serializer and key hashing in one place, while `I64`, `F64`, `Bool` and `Null`
//! carry no heap allocation — an i64 pipeline moves 32-byte values and never allocates
//! per record. Strings and byte strings own their buffers; tuples are `Vec<Value>`.
//!
//! Equality, hashing and ordering are *total*: `F64` compares by its IEEE bit pattern
//! ordered with `f64::total_cmp`, so `Value` can be a `HashMap`/`BTreeMap` key (keyed
//! state) and `NaN == NaN`. Values of different variants order by variant.
//!
//! [`Value::stable_hash`] is a hash that is identical in every process and on every
//! platform; it feeds key-group assignment (see `key_group`). `std`'s `RandomState`
//! could not be used there: two processes would route one key to different subtasks.
//!
//! Deserializing (serde, as RPC messages such as `collect` carry values) refuses tuples
//! nested deeper than [`MAX_DEPTH`](crate::codec::MAX_DEPTH), as the data-plane codec
//! does: the derived decoder recurses once per level, and a peer could otherwise send a
//! nesting that exhausts the decoding thread's stack and aborts the process.

use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize};

use crate::codec::MAX_DEPTH;

/// A record's payload.
#[derive(Clone, Debug, Default, Serialize)]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    I64(i64),
    /// A 64-bit float (compared and hashed by bit pattern).
    F64(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A tuple / row of values.
    Tuple(Vec<Value>),
}

impl Value {
    /// The variant's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
        }
    }

    /// The integer, if this is an `I64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::I64(v) => Some(*v),
            _ => None,
        }
    }

    /// The float, if this is an `F64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The fields, if this is a `Tuple`.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }

    fn variant_index(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::I64(_) => 2,
            Value::F64(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
            Value::Tuple(_) => 6,
        }
    }

    /// A hash of the value that is the same in every process, build and platform.
    ///
    /// It is FxHash-style word mixing over a canonical encoding (variant tag, then
    /// little-endian words / length-prefixed bytes); `I64` keys cost two multiplies.
    /// Key-group assignment applies a murmur finalizer on top, so the weak avalanche of
    /// this function does not matter for spread.
    #[inline]
    pub fn stable_hash(&self) -> u64 {
        // The common key type, without the out-of-line walk over the value.
        if let Value::I64(v) = self {
            return Self::stable_hash_i64(*v);
        }
        let mut h = StableHasher::default();
        h.write_value(self);
        h.finish()
    }

    /// `Value::I64(v).stable_hash()`, without building the value.
    #[inline]
    pub fn stable_hash_i64(v: i64) -> u64 {
        let mut h = StableHasher::default();
        h.add(2);
        h.add(v as u64);
        h.finish()
    }
}

/// The derived decoder of [`Value`], whose recursion goes back through the guarded
/// `Value::deserialize`. Same name and variants: the same wire format.
#[derive(Deserialize)]
#[serde(rename = "Value")]
enum ValueRepr {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
}

thread_local! {
    /// `Value`s being deserialized on this thread, outermost included.
    static DECODE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One level of `Value` nesting being deserialized; leaving it (also by error) pops it.
struct DepthGuard;

impl DepthGuard {
    fn enter() -> Option<DepthGuard> {
        DECODE_DEPTH.with(|d| {
            // MAX_DEPTH nested tuples plus the innermost value, as the codec accepts.
            (d.get() <= MAX_DEPTH).then(|| {
                d.set(d.get() + 1);
                DepthGuard
            })
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DECODE_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _level = DepthGuard::enter().ok_or_else(|| {
            serde::de::Error::custom(format!("values nested deeper than {MAX_DEPTH} tuples"))
        })?;
        Ok(match ValueRepr::deserialize(deserializer)? {
            ValueRepr::Null => Value::Null,
            ValueRepr::Bool(b) => Value::Bool(b),
            ValueRepr::I64(i) => Value::I64(i),
            ValueRepr::F64(f) => Value::F64(f),
            ValueRepr::Str(s) => Value::Str(s),
            ValueRepr::Bytes(b) => Value::Bytes(b),
            ValueRepr::Tuple(t) => Value::Tuple(t),
        })
    }
}

impl rill_state::StateKey for Value {
    /// [`Value::stable_hash`]: the same hash that routes the record to its subtask.
    #[inline]
    fn stable_hash(&self) -> u64 {
        Value::stable_hash(self)
    }
}

/// FxHash-style hasher with a fixed seed and explicit little-endian input: stable across
/// processes, unlike `std`'s `RandomState`.
#[derive(Default)]
struct StableHasher {
    hash: u64,
}

impl StableHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }

    fn add_bytes(&mut self, bytes: &[u8]) {
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_value(&mut self, v: &Value) {
        self.add(u64::from(v.variant_index()));
        match v {
            Value::Null => {}
            Value::Bool(b) => self.add(u64::from(*b)),
            Value::I64(i) => self.add(*i as u64),
            Value::F64(f) => self.add(f.to_bits()),
            Value::Str(s) => self.add_bytes(s.as_bytes()),
            Value::Bytes(b) => self.add_bytes(b),
            Value::Tuple(t) => {
                self.add(t.len() as u64);
                for f in t {
                    self.write_value(f);
                }
            }
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for Value {
    /// Scalars compare inline (state lookups compare keys on every record); strings,
    /// bytes and tuples out of line, since tuples recurse.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            _ => self.eq_composite(other),
        }
    }
}

impl Value {
    #[inline(never)]
    fn eq_composite(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Tuple(a), Value::Tuple(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => state.write_u8(1 + u8::from(*b) * 8),
            Value::I64(i) => state.write_i64(*i),
            Value::F64(f) => {
                state.write_u8(3);
                state.write_u64(f.to_bits());
            }
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => {
                state.write_u8(5);
                b.hash(state);
            }
            Value::Tuple(t) => t.hash(state),
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::I64(a), Value::I64(b)) => a.cmp(b),
            (Value::F64(a), Value::F64(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Tuple(a), Value::Tuple(b)) => a.cmp(b),
            _ => self.variant_index().cmp(&other.variant_index()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Formats like Flink's `toString`s: scalars plainly, tuples as `(a,b)`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(i) => write!(f, "{i}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => {
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::Tuple(t) => {
                f.write_str("(")?;
                for (i, v) in t.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Tuple(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_I64_42: u64 = 8_719_703_253_492_514_390;
    const PINNED_STR_HELLO: u64 = 9_824_221_367_217_747_447;

    #[test]
    fn stable_hash_is_fixed_across_builds() {
        // Pinned values: changing them reroutes keys and breaks savepoint compatibility.
        assert_eq!(Value::I64(0).stable_hash(), Value::I64(0).stable_hash());
        assert_ne!(Value::I64(1).stable_hash(), Value::I64(2).stable_hash());
        assert_ne!(
            Value::I64(1).stable_hash(),
            Value::Str("1".into()).stable_hash()
        );
        assert_eq!(Value::I64(42).stable_hash(), PINNED_I64_42);
        assert_eq!(Value::stable_hash_i64(42), PINNED_I64_42);
        assert_eq!(Value::from("hello").stable_hash(), PINNED_STR_HELLO);
    }

    #[test]
    fn floats_have_total_equality_and_order() {
        let nan = Value::F64(f64::NAN);
        assert_eq!(nan, nan.clone());
        assert!(Value::F64(-1.0) < Value::F64(1.0));
        assert!(Value::Null < Value::I64(i64::MIN));
    }

    #[test]
    fn display_matches_flink_tuples() {
        let v = Value::Tuple(vec!["word".into(), 3.into()]);
        assert_eq!(v.to_string(), "(word,3)");
    }

    fn nested(tuples: usize) -> Value {
        (0..tuples).fold(Value::I64(7), |v, _| Value::Tuple(vec![v, Value::Null]))
    }

    #[test]
    fn serde_accepts_the_codec_depth_and_refuses_deeper() {
        let ok = nested(MAX_DEPTH);
        let mut wire = Vec::new();
        crate::codec::encode_value(&ok, &mut wire);
        for bytes in [
            rmp_serde::to_vec(&ok).unwrap(),
            rmp_serde::to_vec_named(&ok).unwrap(),
        ] {
            assert_eq!(rmp_serde::from_slice::<Value>(&bytes).unwrap(), ok);
        }
        let deep = rmp_serde::to_vec(&nested(MAX_DEPTH + 1)).unwrap();
        let err = rmp_serde::from_slice::<Value>(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // The failed decode left no depth behind.
        let again = rmp_serde::to_vec(&ok).unwrap();
        assert_eq!(rmp_serde::from_slice::<Value>(&again).unwrap(), ok);
        let all = Value::Tuple(vec![
            Value::Null,
            Value::Bool(true),
            Value::I64(-3),
            Value::F64(f64::NAN),
            Value::Str("s".into()),
            Value::Bytes(vec![1, 2]),
        ]);
        let bytes = rmp_serde::to_vec(&all).unwrap();
        assert_eq!(rmp_serde::from_slice::<Value>(&bytes).unwrap(), all);
    }
}
