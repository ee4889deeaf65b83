//! Key selectors: which part of a record is its key.
//!
//! A `key_by` names a registered key selector (a [`FactoryRef`](crate::spec::FactoryRef));
//! the same selector runs twice — on the producer side to hash records to key groups
//! (`Partitioning::Hash`) and in the keyed operator to find the record's state. Keys are
//! returned as `Cow` so selecting a field or the whole value never clones a string.
//!
//! Built-ins (registered by default): `rill.key.value` (the whole value),
//! `rill.key.field` (tuple field `index`), `rill.key.i64_mod` (`value mod modulus` of an
//! i64, Euclidean so keys are never negative), `rill.key.constant` (`null` for every
//! record: `window_all`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::spec::FactoryRef;
use crate::value::Value;

/// Extracts a record's key.
pub trait KeySelector: Send + Sync {
    /// The key of `value`; an error if the value has the wrong shape.
    fn key<'a>(&self, value: &'a Value) -> Result<Cow<'a, Value>>;

    /// The stable hash of `value`'s key (feeds key-group assignment).
    fn key_hash(&self, value: &Value) -> Result<u64> {
        Ok(self.key(value)?.stable_hash())
    }
}

/// Name of the whole-value key selector.
pub const VALUE_KEY: &str = "rill.key.value";
/// Name of the tuple-field key selector.
pub const FIELD_KEY: &str = "rill.key.field";
/// Name of the i64-modulo key selector.
pub const I64_MOD_KEY: &str = "rill.key.i64_mod";
/// Name of the constant key selector.
pub const CONSTANT_KEY: &str = "rill.key.constant";

/// Every record has the key `null` (one key: non-keyed windows).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConstantKey;

impl KeySelector for ConstantKey {
    fn key<'a>(&self, _: &'a Value) -> Result<Cow<'a, Value>> {
        Ok(Cow::Owned(Value::Null))
    }
}

/// The whole value is the key.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValueKey;

impl KeySelector for ValueKey {
    fn key<'a>(&self, value: &'a Value) -> Result<Cow<'a, Value>> {
        Ok(Cow::Borrowed(value))
    }
}

/// Configuration of [`FieldKey`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FieldKey {
    /// Zero-based tuple field index.
    pub index: usize,
}

impl KeySelector for FieldKey {
    fn key<'a>(&self, value: &'a Value) -> Result<Cow<'a, Value>> {
        match value {
            Value::Tuple(fields) => fields.get(self.index).map(Cow::Borrowed).ok_or_else(|| {
                DataflowError::TypeMismatch {
                    operator: FIELD_KEY.into(),
                    expected: "a tuple with enough fields",
                    actual: "a shorter tuple",
                }
            }),
            other => Err(DataflowError::TypeMismatch {
                operator: FIELD_KEY.into(),
                expected: "tuple",
                actual: other.type_name(),
            }),
        }
    }
}

/// Configuration of [`I64ModKey`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct I64ModKey {
    /// The modulus (≥ 1).
    pub modulus: i64,
}

impl KeySelector for I64ModKey {
    #[inline]
    fn key<'a>(&self, value: &'a Value) -> Result<Cow<'a, Value>> {
        match value {
            Value::I64(v) => Ok(Cow::Owned(Value::I64(v.rem_euclid(self.modulus)))),
            other => Err(mod_mismatch(other)),
        }
    }

    #[inline]
    fn key_hash(&self, value: &Value) -> Result<u64> {
        match value {
            Value::I64(v) => Ok(Value::stable_hash_i64(v.rem_euclid(self.modulus))),
            other => Err(mod_mismatch(other)),
        }
    }
}

fn mod_mismatch(other: &Value) -> DataflowError {
    DataflowError::TypeMismatch {
        operator: I64_MOD_KEY.into(),
        expected: "i64",
        actual: other.type_name(),
    }
}

/// Key selector spec: the whole value.
pub fn by_value() -> FactoryRef {
    FactoryRef::unit(VALUE_KEY)
}

/// Key selector spec: tuple field `index`.
pub fn by_field(index: usize) -> FactoryRef {
    FactoryRef::builtin(FIELD_KEY, &FieldKey { index })
}

/// Key selector spec: `null` for every record.
pub fn constant() -> FactoryRef {
    FactoryRef::unit(CONSTANT_KEY)
}

/// Key selector spec: `value mod modulus` of an i64 value.
pub fn by_i64_mod(modulus: i64) -> FactoryRef {
    FactoryRef::builtin(I64_MOD_KEY, &I64ModKey { modulus })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_selectors() {
        let t = Value::Tuple(vec!["a".into(), 7.into()]);
        assert_eq!(
            FieldKey { index: 1 }.key(&t).unwrap().as_ref(),
            &Value::I64(7)
        );
        assert!(FieldKey { index: 2 }.key(&t).is_err());
        assert!(FieldKey { index: 0 }.key(&Value::I64(1)).is_err());
        assert_eq!(
            I64ModKey { modulus: 10 }
                .key(&Value::I64(-3))
                .unwrap()
                .as_ref(),
            &Value::I64(7)
        );
        assert!(matches!(ValueKey.key(&t).unwrap(), Cow::Borrowed(_)));
    }
}
