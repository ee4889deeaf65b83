//! The write-back cache of decoded entries, one typed map per state.
//!
//! A [`TypedCache<K, N, S>`] maps (key, namespace) to a [`Slot`] holding the decoded
//! stored value (or `None`: known absent, a negative entry), its TTL timestamp, the
//! access tick of its last use, whether it differs from fjall (`dirty`) and its encoded
//! fjall key (computed once, on the miss that loaded it, and reused for write-back).
//! Lookups borrow the caller's key and namespace ([`Lookup`] hashes exactly like the
//! `(K, N)` tuple), so a hit clones nothing and encodes nothing.
//!
//! The backend sees caches only through [`ErasedCache`] (states have different types) and
//! downcasts to the typed map on the access path; a failed downcast means the caller used
//! other types than the state was registered with.
//!
//! Eviction is approximate LRU in batches: every access stamps a global, strictly
//! increasing tick; when the backend holds more entries than its capacity it collects all
//! ticks, selects the k-th smallest (`select_nth_unstable`, O(n)) and evicts every entry
//! at or below it from every state, writing dirty ones back in one fjall batch. With
//! k ≥ capacity / 8 the amortized cost is a handful of tick copies per miss.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxBuildHasher;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use crate::error::Result;

/// One cached entry.
#[derive(Debug)]
pub(super) struct Slot<S> {
    /// The stored value; `None` is a known-absent entry (or a pending delete if dirty).
    pub(super) value: Option<S>,
    /// TTL timestamp of `value` (ms of its last write; 0 without TTL).
    pub(super) ts: i64,
    /// Global access tick of the last use (for eviction).
    pub(super) tick: u64,
    /// Whether the slot differs from what fjall holds.
    pub(super) dirty: bool,
    /// The fjall key of this entry.
    pub(super) enc: Box<[u8]>,
}

/// A borrowed (key, namespace) that finds a `(K, N)` entry without cloning.
pub(super) struct Lookup<'a, K, N>(pub(super) &'a K, pub(super) &'a N);

impl<K: Hash, N: Hash> Hash for Lookup<'_, K, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Identical to `<(K, N) as Hash>::hash`: the fields in order, no length prefix.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<K: Eq, N: Eq> hashbrown::Equivalent<(K, N)> for Lookup<'_, K, N> {
    fn equivalent(&self, key: &(K, N)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// The typed cache of one state.
pub(super) struct TypedCache<K, N, S> {
    /// The state's name (for error messages).
    pub(super) name: Arc<str>,
    /// TTL in ms, if the state has one.
    pub(super) ttl_ms: Option<i64>,
    /// The entries.
    pub(super) map: hashbrown::HashMap<(K, N), Slot<S>, FxBuildHasher>,
}

impl<K, N, S> TypedCache<K, N, S> {
    /// An empty cache for state `name`.
    pub(super) fn new(name: Arc<str>, ttl_ms: Option<i64>) -> Self {
        Self {
            name,
            ttl_ms,
            map: hashbrown::HashMap::with_hasher(FxBuildHasher),
        }
    }
}

/// One pending fjall write: state index, key, value (`None` deletes).
pub(super) type PendingWrite = (usize, Box<[u8]>, Option<Vec<u8>>);

/// Pending fjall writes collected from caches.
#[derive(Default)]
pub(super) struct WriteBack {
    /// The writes.
    pub(super) writes: Vec<PendingWrite>,
    /// Dirty live entries found expired and written as deletes.
    pub(super) expired: usize,
}

/// A state's cache with its types erased.
pub(super) trait ErasedCache: Send {
    /// The typed cache, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Number of cached entries.
    fn len(&self) -> usize;
    /// Appends every entry's access tick.
    fn collect_ticks(&self, out: &mut Vec<u64>);
    /// Encodes every dirty entry with `tick <= max_tick` into `out` (tagged `state`);
    /// dirty live entries expired at `now` become deletes. Does not change the cache.
    fn write_back(&self, state: usize, max_tick: u64, now: i64, out: &mut WriteBack) -> Result<()>;
    /// After a successful write-back with the same arguments: evicts (`evict`) or marks
    /// clean the entries with `tick <= max_tick`. Returns how many were evicted.
    fn settle(&mut self, max_tick: u64, now: i64, evict: bool) -> usize;
    /// Marks the cached entry of (`key`, `namespace`) removed (a pending delete).
    /// Returns `Some(true)` if it was cached, `Some(false)` if not (the caller deletes
    /// in fjall), `None` if the key or namespace type is not this cache's.
    fn mark_removed(&mut self, key: &dyn Any, namespace: &dyn Any, tick: u64) -> Option<bool>;
    /// Drops everything without writing back (restore overwrote fjall).
    fn clear(&mut self);
}

impl<K, N, S> ErasedCache for TypedCache<K, N, S>
where
    K: Hash + Eq + Send + 'static,
    N: Hash + Eq + Send + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn collect_ticks(&self, out: &mut Vec<u64>) {
        out.extend(self.map.values().map(|s| s.tick));
    }

    fn write_back(&self, state: usize, max_tick: u64, now: i64, out: &mut WriteBack) -> Result<()> {
        for slot in self.map.values() {
            if !slot.dirty || slot.tick > max_tick {
                continue;
            }
            let value = match &slot.value {
                Some(_) if codec::is_expired(self.ttl_ms, slot.ts, now) => {
                    out.expired += 1;
                    None
                }
                Some(v) => Some(codec::encode_value(&self.name, slot.ts, v)?),
                None => None,
            };
            out.writes.push((state, slot.enc.clone(), value));
        }
        Ok(())
    }

    fn settle(&mut self, max_tick: u64, now: i64, evict: bool) -> usize {
        if evict {
            let before = self.map.len();
            self.map.retain(|_, s| s.tick > max_tick);
            return before - self.map.len();
        }
        let ttl = self.ttl_ms;
        for slot in self.map.values_mut() {
            if slot.dirty && slot.tick <= max_tick {
                slot.dirty = false;
                if slot.value.is_some() && codec::is_expired(ttl, slot.ts, now) {
                    slot.value = None;
                }
            }
        }
        0
    }

    fn mark_removed(&mut self, key: &dyn Any, namespace: &dyn Any, tick: u64) -> Option<bool> {
        let key = key.downcast_ref::<K>()?;
        let namespace = namespace.downcast_ref::<N>()?;
        Some(match self.map.get_mut(&Lookup(key, namespace)) {
            Some(slot) => {
                slot.value = None;
                slot.dirty = true;
                slot.tick = tick;
                true
            }
            None => false,
        })
    }

    fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn lookup_hashes_like_the_tuple() {
        let h = FxBuildHasher;
        let t = ("k".to_string(), 3u64);
        assert_eq!(h.hash_one(&t), h.hash_one(Lookup(&t.0, &t.1)));
        let mut c: TypedCache<String, u64, i32> = TypedCache::new("s".into(), None);
        c.map.insert(
            t.clone(),
            Slot {
                value: Some(1),
                ts: 0,
                tick: 1,
                dirty: true,
                enc: Box::new([]),
            },
        );
        assert!(c.map.get(&Lookup(&t.0, &t.1)).is_some());
        assert!(c.map.get(&Lookup(&t.0, &4)).is_none());
    }

    #[test]
    fn write_back_then_settle() {
        let mut c: TypedCache<u32, (), i32> = TypedCache::new("s".into(), Some(10));
        for (k, ts, tick, dirty) in [(1, 0, 1, true), (2, 100, 2, true), (3, 100, 3, false)] {
            let enc = vec![k as u8].into_boxed_slice();
            c.map.insert(
                (k, ()),
                Slot {
                    value: Some(k as i32),
                    ts,
                    tick,
                    dirty,
                    enc,
                },
            );
        }
        let mut wb = WriteBack::default();
        c.write_back(0, 2, 50, &mut wb).unwrap();
        assert_eq!(wb.writes.len(), 2);
        assert_eq!(wb.expired, 1);
        assert!(wb.writes.iter().any(|w| *w.1 == [1] && w.2.is_none()));
        assert_eq!(c.settle(2, 50, false), 0);
        assert!(c.map.values().all(|s| !s.dirty));
        assert_eq!(c.settle(2, 50, true), 2);
        assert_eq!(c.len(), 1);
    }
}
