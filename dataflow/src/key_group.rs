//! Key groups: how a key's hash picks the subtask that owns it (DESIGN §6).
//!
//! `key_group = murmur_fmix(hash) % max_parallelism`, and
//! `operator_index = key_group * parallelism / max_parallelism`, as Flink's
//! `KeyGroupRangeAssignment`. Each subtask thus owns a contiguous key-group range, which
//! is what lets keyed state be redistributed on rescale.
//!
//! The formula is rill-state's ([`rill_state::key_group`]), re-exported: the dataflow
//! computes a keyed record's target channel with [`operator_index_for_key`] (the data
//! plane only routes by channel index), and the keyed state backends assign the same key
//! to the same key group, so a key's records and its state always meet in one subtask.

pub use rill_state::key_group::{
    key_group_for_hash, murmur_fmix, operator_index_for_key, operator_index_for_key_group,
    KeyGroupRange, DEFAULT_MAX_PARALLELISM, UPPER_BOUND_MAX_PARALLELISM,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn key_groups_spread_evenly() {
        let max = DEFAULT_MAX_PARALLELISM;
        let mut groups = vec![0u32; max as usize];
        for k in 0..100_000i64 {
            groups[key_group_for_hash(Value::I64(k).stable_hash(), max) as usize] += 1;
        }
        let expected = 100_000 / max;
        for (g, n) in groups.iter().enumerate() {
            assert!(
                n.abs_diff(expected) < expected / 5,
                "key group {g} got {n}, expected about {expected}"
            );
        }
    }

    #[test]
    fn formula_is_pinned() {
        // Same values as rill_state::key_group; a change reroutes every key.
        assert_eq!(murmur_fmix(0), 0);
        assert_eq!(key_group_for_hash(1, 128), (murmur_fmix(1) % 128) as u32);
        assert_eq!(operator_index_for_key_group(127, 4, 128), 3);
        assert_eq!(operator_index_for_key_group(31, 4, 128), 0);
        assert_eq!(operator_index_for_key_group(32, 4, 128), 1);
    }

    #[test]
    fn subtasks_own_contiguous_key_group_ranges() {
        for parallelism in [1, 3, 4, 7, 128] {
            let owners: Vec<u32> = (0..128)
                .map(|g| operator_index_for_key_group(g, parallelism, 128))
                .collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1));
            assert_eq!(owners[0], 0);
            assert_eq!(owners[127], parallelism - 1);
        }
    }

    #[test]
    fn string_keys_spread_over_four_subtasks() {
        let mut per = [0u32; 4];
        for k in 0..10_000 {
            per[operator_index_for_key(Value::Str(format!("w{k}")).stable_hash(), 4, 128)
                as usize] += 1;
        }
        assert!(per.iter().all(|n| (2_000..3_000).contains(n)), "{per:?}");
    }
}
