//! Channel selectors: which subpartition(s) a record goes to.
//!
//! An enum rather than a trait object so the per-record `match` inlines into the writer's
//! hot loop. The network knows nothing of keys: for [`ChannelSelector::Keyed`] the caller
//! (dataflow, which owns the key-group formula through rill-state) computes the target
//! channel itself and passes it as the *channel hint*; other selectors ignore the hint
//! (pass `0`).
//!
//! * `Forward`: always channel 0 — a forward edge connects one producer subtask to one
//!   consumer subtask.
//! * `Rebalance`: round-robin over all channels, starting at a seeded offset so that many
//!   writers do not all start on channel 0.
//! * `Rescale`: round-robin as well; the difference from rebalance lies in the wiring
//!   (pointwise: a producer's partition only has the channels of its local consumer
//!   subset), which the job graph decides, not the writer.
//! * `Keyed`: the channel the caller chose (DESIGN.md §6: the data plane only routes by
//!   channel index; keys and key groups are rill-state's business). A hint outside
//!   `0..channels` is the caller's bug: the [`RecordWriter`](crate::RecordWriter)
//!   rejects it with [`NetworkError::SubpartitionOutOfRange`](crate::NetworkError).
//! * `Broadcast`: every channel.

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
    /// To the channel the caller passes with each record (keyed edges).
    Keyed,
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

    /// Whether every record goes to every channel.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, ChannelSelector::Broadcast)
    }

    /// Selects the channel(s) for a record among `channels` (positive). `channel_hint` is
    /// the target channel of a record on a keyed edge and is only read by
    /// [`ChannelSelector::Keyed`], which returns it unchanged (the caller guarantees
    /// `channel_hint < channels`; the record writer checks).
    #[inline]
    pub fn select(&mut self, channel_hint: u32, channels: u32) -> Selection {
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
            // The record writer rejects a hint outside `0..channels`.
            ChannelSelector::Keyed => Selection::One(channel_hint),
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
    fn keyed_returns_the_hint() {
        let mut s = ChannelSelector::Keyed;
        for c in 0..7u32 {
            assert_eq!(s.select(c, 7), Selection::One(c));
        }
        assert_eq!(ChannelSelector::Forward.select(9, 4), Selection::One(0));
        assert_eq!(ChannelSelector::Broadcast.select(9, 4), Selection::All);
    }
}
