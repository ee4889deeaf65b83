//! Byte layout of the lsm backend's keys and values in fjall.
//!
//! ```text
//! key   = key_group u16 BE | len(key) u32 BE | MessagePack key | MessagePack namespace
//! value = timestamp i64 BE | MessagePack value
//! ```
//!
//! The big-endian key-group prefix makes one key group one contiguous key range (and the
//! whole backend's range one contiguous range), the key length makes a (key group, key)
//! prefix unambiguous whatever the namespace encoding. The timestamp is the TTL stamp
//! (ms of the last write; 0 for states without TTL). Key and namespace bytes are exactly
//! the encodings that state files carry, so restore and snapshots copy bytes without
//! knowing the types.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StateError};
use crate::format;

/// Bytes before the MessagePack key: key group and key length.
pub(super) const KEY_PREFIX_LEN: usize = 6;
/// Bytes before the MessagePack value: the timestamp.
pub(super) const VALUE_PREFIX_LEN: usize = 8;

/// The 2-byte prefix of every key of `key_group`.
pub(super) fn key_group_prefix(key_group: u32) -> [u8; 2] {
    // Key groups are below UPPER_BOUND_MAX_PARALLELISM (2^15), so they fit in a u16.
    (key_group as u16).to_be_bytes()
}

/// Encodes (key group, key, namespace) as a fjall key.
pub(super) fn encode_key<K: Serialize, N: Serialize>(
    name: &str,
    key_group: u32,
    key: &K,
    namespace: &N,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(&key_group_prefix(key_group));
    buf.extend_from_slice(&[0; 4]);
    format::encode_into(name, key, &mut buf)?;
    let key_len = u32::try_from(buf.len() - KEY_PREFIX_LEN).map_err(|_| StateError::Serialize {
        name: name.to_owned(),
        reason: "key encoding above 4 GiB".into(),
    })?;
    buf[2..KEY_PREFIX_LEN].copy_from_slice(&key_len.to_be_bytes());
    format::encode_into(name, namespace, &mut buf)?;
    Ok(buf)
}

/// Builds a fjall key from already encoded key and namespace bytes (restore).
pub(super) fn raw_key(name: &str, key_group: u32, key: &[u8], namespace: &[u8]) -> Result<Vec<u8>> {
    let key_len = u32::try_from(key.len()).map_err(|_| StateError::Serialize {
        name: name.to_owned(),
        reason: "key encoding above 4 GiB".into(),
    })?;
    let mut buf = Vec::with_capacity(KEY_PREFIX_LEN + key.len() + namespace.len());
    buf.extend_from_slice(&key_group_prefix(key_group));
    buf.extend_from_slice(&key_len.to_be_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(namespace);
    Ok(buf)
}

/// A fjall key split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyParts<'a> {
    pub(super) key_group: u32,
    pub(super) key: &'a [u8],
    pub(super) namespace: &'a [u8],
}

/// Splits a fjall key; a malformed key (local store corruption) is a
/// [`StateError::Deserialize`] naming the state.
pub(super) fn split_key<'a>(name: &str, bytes: &'a [u8]) -> Result<KeyParts<'a>> {
    let bad = || StateError::Deserialize {
        name: name.to_owned(),
        reason: format!("malformed lsm key of {} bytes", bytes.len()),
    };
    let kg = bytes.get(0..2).ok_or_else(bad)?;
    let len = bytes.get(2..KEY_PREFIX_LEN).ok_or_else(bad)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let end = KEY_PREFIX_LEN.checked_add(len).ok_or_else(bad)?;
    let key = bytes.get(KEY_PREFIX_LEN..end).ok_or_else(bad)?;
    Ok(KeyParts {
        key_group: u32::from(u16::from_be_bytes([kg[0], kg[1]])),
        key,
        namespace: &bytes[end..],
    })
}

/// Encodes a stored value with its timestamp.
pub(super) fn encode_value<S: Serialize>(name: &str, timestamp: i64, value: &S) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(&timestamp.to_be_bytes());
    format::encode_into(name, value, &mut buf)?;
    Ok(buf)
}

/// Builds a stored value from a timestamp and already encoded value bytes (restore).
pub(super) fn raw_value(timestamp: i64, value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(VALUE_PREFIX_LEN + value.len());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(value);
    buf
}

/// Splits a stored value into timestamp and MessagePack bytes.
pub(super) fn split_value<'a>(name: &str, bytes: &'a [u8]) -> Result<(i64, &'a [u8])> {
    let ts = bytes
        .get(0..VALUE_PREFIX_LEN)
        .ok_or_else(|| StateError::Deserialize {
            name: name.to_owned(),
            reason: format!("stored value of {} bytes has no timestamp", bytes.len()),
        })?;
    let mut ts_bytes = [0u8; VALUE_PREFIX_LEN];
    ts_bytes.copy_from_slice(ts);
    Ok((i64::from_be_bytes(ts_bytes), &bytes[VALUE_PREFIX_LEN..]))
}

/// Decodes a stored value: timestamp and typed value.
pub(super) fn decode_value<S: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<(i64, S)> {
    let (ts, v) = split_value(name, bytes)?;
    Ok((ts, format::decode(name, v)?))
}

/// Whether an entry stamped `timestamp` is expired at `now` under `ttl_ms`.
#[inline]
pub(super) fn is_expired(ttl_ms: Option<i64>, timestamp: i64, now: i64) -> bool {
    ttl_ms.is_some_and(|ttl| timestamp.saturating_add(ttl) <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_groups_are_prefixes() {
        let k = encode_key("s", 300, &"abc".to_string(), &7u32).unwrap();
        assert_eq!(&k[0..2], &key_group_prefix(300));
        let parts = split_key("s", &k).unwrap();
        assert_eq!(parts.key_group, 300);
        assert_eq!(format::decode::<String>("s", parts.key).unwrap(), "abc");
        assert_eq!(format::decode::<u32>("s", parts.namespace).unwrap(), 7);
        let raw = raw_key("s", 300, parts.key, parts.namespace).unwrap();
        assert_eq!(raw, k);
    }

    #[test]
    fn malformed_bytes_are_errors() {
        assert!(split_key("s", &[0, 1, 0, 0, 0, 9, 1]).is_err());
        assert!(split_key("s", &[0]).is_err());
        assert!(split_value("s", &[1, 2, 3]).is_err());
        let v = encode_value("s", -5, &vec![1u8, 2]).unwrap();
        let (ts, back): (i64, Vec<u8>) = decode_value("s", &v).unwrap();
        assert_eq!((ts, back), (-5, vec![1, 2]));
        assert!(decode_value::<String>("s", &v).is_err());
    }

    #[test]
    fn expiry_is_inclusive_and_saturating() {
        assert!(!is_expired(None, 0, i64::MAX));
        assert!(is_expired(Some(10), 0, 10));
        assert!(!is_expired(Some(10), 0, 9));
        assert!(!is_expired(Some(i64::MAX), 5, i64::MAX - 1));
    }
}
