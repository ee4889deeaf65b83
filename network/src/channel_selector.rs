//! Channel selectors: which subpartition(s) a record goes to.
//!
//! An enum rather than a trait object so the per-record `match` inlines into the writer's
//! hot loop. The network knows nothing of keys: callers pass a key hash for
//! [`ChannelSelector::KeyGroup`] and `0` otherwise.
//!
//! * `Forward`: always channel 0 — a forward edge connects one producer subtask to one
//!   consumer subtask.
//! * `Rebalance`: round-robin over all channels, starting at a seeded offset so that many
//!   writers do not all start on channel 0.
//! * `Rescale`: round-robin as well; the difference from rebalance lies in the wiring
//!   (pointwise: a producer's partition only has the channels of its local consumer
//!   subset), which the job graph decides, not the writer.
//! * `KeyGroup`: DESIGN.md §6 — `key_group = murmur_fmix(hash) % max_parallelism`,
//!   channel = `key_group * channels / max_parallelism`.
//! * `Broadcast`: every channel.

use crate::key_group::{key_group_for_hash, operator_index_for_key_group};

/// Chooses the target subpartition of each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSelector {
    /// Always channel 0.
    Forward,
    /// Round-robin over all channels.
    Rebalance {
        /// Next channel to use.
        next: u32,
    },
    /// Round-robin over the (pointwise-wired) channels.
    Rescale {
        /// Next channel to use.
        next: u32,
    },
    /// By key group of the record's key hash.
    KeyGroup {
        /// Maximum parallelism (number of key groups).
        max_parallelism: u32,
    },
    /// Every channel.
    Broadcast,
}

/// Where one record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// One channel.
    One(u32),
    /// All channels.
    All,
}

impl ChannelSelector {
    /// Rebalance starting at `seed % channels` (pass a seeded random number).
    pub fn rebalance(seed: u64) -> Self {
        ChannelSelector::Rebalance {
            next: (seed % u64::from(u32::MAX)) as u32,
        }
    }

    /// Rescale starting at `seed % channels`.
    pub fn rescale(seed: u64) -> Self {
        ChannelSelector::Rescale {
            next: (seed % u64::from(u32::MAX)) as u32,
        }
    }

    /// Key-group hash partitioning with the given maximum parallelism (must be positive).
    pub fn key_group(max_parallelism: u32) -> Self {
        ChannelSelector::KeyGroup {
            max_parallelism: max_parallelism.max(1),
        }
    }

    /// Whether every record goes to every channel.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, ChannelSelector::Broadcast)
    }

    /// Selects the channel(s) for a record among `channels` (positive); `key_hash` is only
    /// read by [`ChannelSelector::KeyGroup`].
    #[inline]
    pub fn select(&mut self, key_hash: u64, channels: u32) -> Selection {
        match self {
            ChannelSelector::Forward => Selection::One(0),
            ChannelSelector::Rebalance { next } | ChannelSelector::Rescale { next } => {
                let c = if *next >= channels {
                    *next % channels
                } else {
                    *next
                };
                *next = if c + 1 == channels { 0 } else { c + 1 };
                Selection::One(c)
            }
            ChannelSelector::KeyGroup { max_parallelism } => {
                let kg = key_group_for_hash(key_hash, *max_parallelism);
                // With more channels than key groups the extra channels stay empty, as in
                // Flink, where parallelism may not exceed max parallelism.
                let channels = channels.min(*max_parallelism);
                Selection::One(operator_index_for_key_group(kg, channels, *max_parallelism))
            }
            ChannelSelector::Broadcast => Selection::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalance_cycles_from_seed() {
        let mut s = ChannelSelector::rebalance(5);
        let got: Vec<_> = (0..5).map(|_| s.select(0, 3)).collect();
        assert_eq!(got, [2, 0, 1, 2, 0].map(Selection::One).to_vec());
    }

    #[test]
    fn key_group_is_stable_and_in_range() {
        let mut s = ChannelSelector::key_group(128);
        for h in 0..1000u64 {
            let a = s.select(h, 7);
            assert_eq!(a, s.select(h, 7));
            assert!(matches!(a, Selection::One(c) if c < 7));
        }
        assert_eq!(ChannelSelector::Forward.select(9, 4), Selection::One(0));
        assert_eq!(ChannelSelector::Broadcast.select(9, 4), Selection::All);
    }
}
