//! Key groups: the unit in which keyed state is stored, snapshotted and redistributed
//! (DESIGN §6, Flink's `KeyGroupRangeAssignment`).
//!
//! `key_group = murmur_fmix(stable_hash(key)) % max_parallelism`, and
//! `operator_index = key_group * parallelism / max_parallelism`. Each subtask therefore
//! owns one contiguous [`KeyGroupRange`]; rescaling moves whole key groups, never single
//! keys. The data plane knows none of this: dataflow computes the target channel of a
//! keyed record with [`operator_index_for_key`] and hands the network a channel index.
//!
//! The finaliser is MurmurHash3's 64-bit `fmix64`, which spreads poor user hashes (small
//! integers) over all key groups. The formula is pinned by tests: changing it reroutes
//! every key and makes every existing snapshot unreadable for rescaling.

use serde::{Deserialize, Serialize};

/// Flink's default maximum parallelism (number of key groups).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// Largest supported maximum parallelism (Flink's upper bound, 2^15).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// MurmurHash3's 64-bit finaliser: a bijection that avalanches every input bit.
#[inline]
pub fn murmur_fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Returns the key group (in `0..max_parallelism`) of a key with stable hash `key_hash`.
///
/// `max_parallelism` must be positive.
#[inline]
pub fn key_group_for_hash(key_hash: u64, max_parallelism: u32) -> u32 {
    debug_assert!(max_parallelism > 0);
    let (h, m) = (murmur_fmix(key_hash), u64::from(max_parallelism.max(1)));
    // The same value as `h % m`. Max parallelism is usually a power of two (128 by
    // default), and a 64-bit division costs more than the rest of the per-record path
    // of a keyed state access.
    (if m.is_power_of_two() {
        h & (m - 1)
    } else {
        h % m
    }) as u32
}

/// Returns the operator (subtask) index, in `0..parallelism`, that owns a key group.
///
/// Requires `key_group < max_parallelism` and `0 < parallelism <= max_parallelism`.
#[inline]
pub fn operator_index_for_key_group(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    debug_assert!(key_group < max_parallelism && parallelism <= max_parallelism);
    let (x, m) = (
        u64::from(key_group) * u64::from(parallelism),
        u64::from(max_parallelism.max(1)),
    );
    // `x / m`, without a division for power-of-two max parallelism (see above).
    (if m.is_power_of_two() {
        x >> m.trailing_zeros()
    } else {
        x / m
    }) as u32
}

/// [`key_group_for_hash`] and [`table_hash`] of one key with a single murmur mix.
#[inline]
pub fn key_group_and_table_hash(key_hash: u64, max_parallelism: u32) -> (u32, u64) {
    let (h, m) = (murmur_fmix(key_hash), u64::from(max_parallelism.max(1)));
    let kg = if m.is_power_of_two() {
        h & (m - 1)
    } else {
        h % m
    };
    (kg as u32, h.rotate_left(32))
}

/// The hash a backend's hash tables use for a key with stable hash `key_hash`: the
/// same murmur-mixed value the key group comes from, rotated so that the bits that chose
/// the key group (the low ones) do not also pick the bucket inside that key group's table.
/// Computing it once serves both the key group and the table lookup.
#[inline]
pub fn table_hash(key_hash: u64) -> u64 {
    murmur_fmix(key_hash).rotate_left(32)
}

/// The subtask that owns a key with stable hash `key_hash`.
#[inline]
pub fn operator_index_for_key(key_hash: u64, parallelism: u32, max_parallelism: u32) -> u32 {
    operator_index_for_key_group(
        key_group_for_hash(key_hash, max_parallelism),
        parallelism,
        max_parallelism,
    )
}

/// An inclusive, possibly empty range of key groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyGroupRange {
    /// First key group.
    pub start: u32,
    /// One past the last key group (`start == end` is empty).
    pub end: u32,
}

impl KeyGroupRange {
    /// `start..end` (exclusive end).
    pub fn new(start: u32, end: u32) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// All key groups of a job with this maximum parallelism.
    pub fn all(max_parallelism: u32) -> Self {
        Self::new(0, max_parallelism)
    }

    /// The key groups owned by `operator_index`: exactly those for which
    /// [`operator_index_for_key_group`] yields `operator_index`.
    pub fn of_subtask(operator_index: u32, parallelism: u32, max_parallelism: u32) -> Self {
        let (op, p, m) = (
            u64::from(operator_index),
            u64::from(parallelism.max(1)),
            u64::from(max_parallelism),
        );
        let start = (op * m).div_ceil(p);
        let end = ((op + 1) * m).div_ceil(p);
        Self::new(start as u32, end as u32)
    }

    /// Number of key groups.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether `key_group` is in the range.
    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end
    }

    /// The key groups in both ranges.
    pub fn intersect(&self, other: &KeyGroupRange) -> KeyGroupRange {
        KeyGroupRange::new(self.start.max(other.start), self.end.min(other.end))
    }

    /// The key groups, in order.
    pub fn iter(&self) -> std::ops::Range<u32> {
        self.start..self.end
    }
}

impl std::fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            write!(f, "[]")
        } else {
            write!(f, "[{}..={}]", self.start, self.end - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formula_is_pinned() {
        assert_eq!(murmur_fmix(0), 0);
        assert_eq!(murmur_fmix(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(key_group_for_hash(1, 128), (murmur_fmix(1) % 128) as u32);
        assert_eq!(operator_index_for_key_group(127, 4, 128), 3);
        assert_eq!(operator_index_for_key_group(31, 4, 128), 0);
        assert_eq!(operator_index_for_key_group(32, 4, 128), 1);
    }

    #[test]
    fn power_of_two_fast_path_matches_the_formula() {
        for m in [1u32, 2, 128, 4096, 1 << 15] {
            for h in (0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                let kg = key_group_for_hash(h, m);
                assert_eq!(u64::from(kg), murmur_fmix(h) % u64::from(m));
                for p in [1u32, m.min(3), m.min(7), m] {
                    assert_eq!(
                        u64::from(operator_index_for_key_group(kg, p, m)),
                        u64::from(kg) * u64::from(p) / u64::from(m)
                    );
                }
            }
        }
    }

    #[test]
    fn one_mix_gives_the_key_group_and_the_table_hash() {
        for m in [1u32, 3, 128, 1000, 1 << 15] {
            for h in (0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                assert_eq!(
                    key_group_and_table_hash(h, m),
                    (key_group_for_hash(h, m), table_hash(h))
                );
            }
        }
    }

    #[test]
    fn small_hashes_spread_over_key_groups() {
        let groups: std::collections::BTreeSet<u32> = (0..1000u64)
            .map(|h| key_group_for_hash(h, DEFAULT_MAX_PARALLELISM))
            .collect();
        assert!(groups.len() > 120, "only {} key groups used", groups.len());
    }

    #[test]
    fn subtask_ranges_tile_all_key_groups() {
        for p in [1u32, 2, 3, 4, 7, 100, 128] {
            let mut next = 0;
            for i in 0..p {
                let r = KeyGroupRange::of_subtask(i, p, 128);
                assert_eq!(r.start, next, "p={p} i={i}");
                next = r.end;
            }
            assert_eq!(next, 128);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]
        #[test]
        fn key_group_and_range_agree(hash in any::<u64>(), max in 1u32..=4096, p_frac in 0.0f64..1.0) {
            let parallelism = ((f64::from(max) * p_frac) as u32).clamp(1, max);
            let kg = key_group_for_hash(hash, max);
            prop_assert!(kg < max);
            let op = operator_index_for_key_group(kg, parallelism, max);
            prop_assert!(op < parallelism);
            prop_assert!(KeyGroupRange::of_subtask(op, parallelism, max).contains(kg));
        }
    }
}
