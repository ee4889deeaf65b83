//! Key groups: how a key hash picks a downstream subtask (DESIGN.md §6).
//!
//! `key_group = murmur_fmix(key_hash) % max_parallelism`, then
//! `operator_index = key_group * parallelism / max_parallelism`. Keyed state is stored per
//! key group, so rescaling moves whole key groups; the network's key-group channel
//! selector, the dataflow's keyed operators and the state backends must all use these
//! functions so that a key's records and its state meet in the same subtask.
//!
//! The finaliser is MurmurHash3's 64-bit `fmix64`, which spreads poor user hashes (e.g.
//! small integers) over all key groups.

/// Flink's default maximum parallelism.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// MurmurHash3's 64-bit finaliser: a bijection that avalanches every input bit.
pub fn murmur_fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Returns the key group (in `0..max_parallelism`) of a key with this hash.
///
/// `max_parallelism` must be positive.
pub fn key_group_for_hash(key_hash: u64, max_parallelism: u32) -> u32 {
    debug_assert!(max_parallelism > 0);
    (murmur_fmix(key_hash) % u64::from(max_parallelism.max(1))) as u32
}

/// Returns the operator (subtask) index, in `0..parallelism`, that owns a key group.
///
/// Requires `key_group < max_parallelism` and `0 < parallelism <= max_parallelism`.
pub fn operator_index_for_key_group(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    debug_assert!(key_group < max_parallelism && parallelism <= max_parallelism);
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism.max(1))) as u32
}

/// Returns the inclusive range of key groups owned by `operator_index`: exactly the key
/// groups for which [`operator_index_for_key_group`] yields `operator_index`.
pub fn key_group_range(
    operator_index: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> std::ops::RangeInclusive<u32> {
    let (op, p, m) = (
        u64::from(operator_index),
        u64::from(parallelism),
        u64::from(max_parallelism),
    );
    let start = (op * m).div_ceil(p);
    let end = ((op + 1) * m).div_ceil(p) - 1;
    (start as u32)..=(end as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_hashes_spread_over_key_groups() {
        let groups: std::collections::BTreeSet<u32> = (0..1000u64)
            .map(|h| key_group_for_hash(h, DEFAULT_MAX_PARALLELISM))
            .collect();
        assert!(groups.len() > 120, "only {} key groups used", groups.len());
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
            prop_assert!(key_group_range(op, parallelism, max).contains(&kg));
        }
    }
}
