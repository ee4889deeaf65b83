//! Checkpoint barrier handling at a task's input: alignment and tracking.
//!
//! A pure state machine (Flink's `SingleCheckpointBarrierHandler` in aligned mode and
//! `CheckpointBarrierTracker` in at-least-once mode). The task feeds it the barriers,
//! cancel markers and end-of-partition events its input gate delivers, with `now`; it
//! answers with [`BarrierAction`]s: take the snapshot, abort a checkpoint, or resume
//! channels.
//!
//! * **Aligned** (exactly-once): an aligned barrier is *blocking* — after handing it out,
//!   the gate delivers nothing more from that channel until it is resumed. When barrier
//!   `n` has arrived on every live channel, the task snapshots (everything before the
//!   barriers is in the state, nothing after) and the blocked channels resume. A newer
//!   barrier while aligning abandons the older checkpoint; a cancel marker aborts it.
//!   Barriers of checkpoints already completed, aborted or abandoned here are stale: their
//!   channel is resumed at once and nothing else happens.
//! * **At-least-once**: barriers do not block; the handler counts them per checkpoint and
//!   triggers when the last live channel delivered one. Records behind an early barrier
//!   are processed before the snapshot, so they may be replayed after a recovery.
//!
//! A channel that ended (end of partition) takes part in no later alignment: it can
//! deliver no barrier, and the records it sent are all before any barrier still to come.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How barriers are handled (from `execution.checkpointing.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierMode {
    /// Exactly-once: align.
    Aligned,
    /// At-least-once: track only.
    AtLeastOnce,
}

/// What the task must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarrierAction {
    /// Snapshot now for checkpoint `id` and forward its barrier downstream.
    Trigger {
        /// Checkpoint id.
        id: u64,
        /// Time from the first barrier of `id` at this task to the last.
        alignment: Duration,
    },
    /// Checkpoint `id` will not be taken here: tell the JobMaster (decline) and forward
    /// a cancel marker downstream.
    Abort {
        /// Checkpoint id.
        id: u64,
        /// Why.
        reason: AbortCause,
    },
    /// Resume consumption of these channels (they delivered a blocking barrier).
    Resume(Vec<usize>),
}

/// Why a checkpoint is aborted at a task's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// A barrier of a newer checkpoint arrived before this one was aligned.
    Subsumed {
        /// The newer checkpoint.
        by: u64,
    },
    /// A cancel marker for it arrived.
    Cancelled,
}

/// The barrier handler of one task input with `num_channels` channels.
#[derive(Debug)]
pub struct BarrierHandler {
    mode: BarrierMode,
    ended: Vec<bool>,
    /// Highest checkpoint id triggered, aborted or abandoned here: barriers up to it are
    /// stale.
    done_up_to: u64,
    /// Aligned: the checkpoint being aligned, the channels it arrived on, and when the
    /// first came. At-least-once: every checkpoint seen but not yet complete.
    pending: BTreeMap<u64, Progress>,
}

#[derive(Debug)]
struct Progress {
    arrived: Vec<bool>,
    first: Instant,
}

impl BarrierHandler {
    /// A handler for an input of `num_channels` channels.
    pub fn new(mode: BarrierMode, num_channels: usize) -> Self {
        BarrierHandler {
            mode,
            ended: vec![false; num_channels],
            done_up_to: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The checkpoint currently being aligned (aligned mode), if any.
    pub fn aligning(&self) -> Option<u64> {
        match self.mode {
            BarrierMode::Aligned => self.pending.keys().next().copied(),
            BarrierMode::AtLeastOnce => None,
        }
    }

    /// Channels blocked by the current alignment.
    pub fn blocked(&self) -> Vec<usize> {
        match (self.mode, self.pending.values().next()) {
            (BarrierMode::Aligned, Some(p)) => channels(&p.arrived),
            _ => Vec::new(),
        }
    }

    /// Barrier `id` arrived on `channel`.
    pub fn on_barrier(&mut self, channel: usize, id: u64, now: Instant) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if channel >= self.ended.len() || self.ended[channel] {
            return actions;
        }
        let blocking = self.mode == BarrierMode::Aligned;
        if id <= self.done_up_to {
            if blocking {
                actions.push(BarrierAction::Resume(vec![channel]));
            }
            return actions;
        }
        if blocking {
            // Only one alignment at a time: a newer barrier abandons the older one.
            if let Some((&old, _)) = self.pending.iter().next() {
                if old < id {
                    let p = self.pending.remove(&old).expect("present");
                    self.done_up_to = self.done_up_to.max(old);
                    actions.push(BarrierAction::Abort {
                        id: old,
                        reason: AbortCause::Subsumed { by: id },
                    });
                    let blocked = channels(&p.arrived);
                    if !blocked.is_empty() {
                        actions.push(BarrierAction::Resume(blocked));
                    }
                }
            }
        }
        let n = self.ended.len();
        let p = self.pending.entry(id).or_insert_with(|| Progress {
            arrived: vec![false; n],
            first: now,
        });
        p.arrived[channel] = true;
        self.complete_ready(now, &mut actions);
        actions
    }

    /// A cancel marker for checkpoint `id` arrived on some channel.
    pub fn on_cancel(&mut self, id: u64) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if id <= self.done_up_to {
            return actions;
        }
        // Everything up to `id` is over here; in at-least-once mode older checkpoints
        // still pending can no longer complete in order either.
        let over: Vec<u64> = self.pending.range(..=id).map(|(k, _)| *k).collect();
        let mut resumed = Vec::new();
        for k in over {
            let p = self.pending.remove(&k).expect("present");
            if self.mode == BarrierMode::Aligned {
                resumed.extend(channels(&p.arrived));
            }
            if k != id {
                actions.push(BarrierAction::Abort {
                    id: k,
                    reason: AbortCause::Subsumed { by: id },
                });
            }
        }
        actions.push(BarrierAction::Abort {
            id,
            reason: AbortCause::Cancelled,
        });
        if !resumed.is_empty() {
            actions.push(BarrierAction::Resume(resumed));
        }
        self.done_up_to = id;
        actions
    }

    /// `channel` ended: it takes part in no later alignment.
    pub fn on_end_of_partition(&mut self, channel: usize, now: Instant) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if channel < self.ended.len() && !self.ended[channel] {
            self.ended[channel] = true;
            self.complete_ready(now, &mut actions);
        }
        actions
    }

    /// Triggers the oldest pending checkpoints whose barriers arrived on every live
    /// channel (aligned mode has at most one pending).
    fn complete_ready(&mut self, now: Instant, actions: &mut Vec<BarrierAction>) {
        let ready = self.pending.iter().rev().find_map(|(id, p)| {
            let all = p
                .arrived
                .iter()
                .zip(&self.ended)
                .all(|(arrived, ended)| *arrived || *ended);
            all.then_some(*id)
        });
        let Some(id) = ready else { return };
        // The newest complete one triggers; older incomplete ones (at-least-once) are
        // subsumed by it.
        let older: Vec<u64> = self.pending.range(..id).map(|(k, _)| *k).collect();
        for k in older {
            self.pending.remove(&k);
            actions.push(BarrierAction::Abort {
                id: k,
                reason: AbortCause::Subsumed { by: id },
            });
        }
        let p = self.pending.remove(&id).expect("present");
        actions.push(BarrierAction::Trigger {
            id,
            alignment: now.duration_since(p.first),
        });
        if self.mode == BarrierMode::Aligned {
            let blocked = channels(&p.arrived);
            if !blocked.is_empty() {
                actions.push(BarrierAction::Resume(blocked));
            }
        }
        self.done_up_to = id;
    }
}

fn channels(flags: &[bool]) -> Vec<usize> {
    flags
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.then_some(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn trigger(id: u64, ms: u64) -> BarrierAction {
        BarrierAction::Trigger {
            id,
            alignment: Duration::from_millis(ms),
        }
    }

    #[test]
    fn aligned_blocks_until_every_channel_delivered_then_triggers_and_resumes() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        assert!(h.on_barrier(1, 5, t0).is_empty());
        assert_eq!(h.aligning(), Some(5));
        assert_eq!(h.blocked(), vec![1]);
        assert!(h.on_barrier(0, 5, at(t0, 3)).is_empty());
        assert_eq!(
            h.on_barrier(2, 5, at(t0, 7)),
            vec![trigger(5, 7), BarrierAction::Resume(vec![0, 1, 2])]
        );
        assert_eq!(h.aligning(), None);
        // A late duplicate of barrier 5 is stale: resumed, nothing else.
        assert_eq!(
            h.on_barrier(1, 5, at(t0, 8)),
            vec![BarrierAction::Resume(vec![1])]
        );
    }

    #[test]
    fn a_single_channel_triggers_at_once() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 1);
        assert_eq!(
            h.on_barrier(0, 1, t0),
            vec![trigger(1, 0), BarrierAction::Resume(vec![0])]
        );
    }

    #[test]
    fn a_newer_barrier_abandons_the_alignment_in_progress() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 2);
        h.on_barrier(0, 1, t0);
        assert_eq!(
            h.on_barrier(1, 2, at(t0, 1)),
            vec![
                BarrierAction::Abort {
                    id: 1,
                    reason: AbortCause::Subsumed { by: 2 }
                },
                BarrierAction::Resume(vec![0]),
            ]
        );
        assert_eq!(h.blocked(), vec![1]);
        // The old barrier arriving on channel 1's peer is stale now.
        assert_eq!(
            h.on_barrier(0, 1, at(t0, 2)),
            vec![BarrierAction::Resume(vec![0])]
        );
        assert_eq!(
            h.on_barrier(0, 2, at(t0, 4)),
            vec![trigger(2, 3), BarrierAction::Resume(vec![0, 1])]
        );
    }

    #[test]
    fn a_cancel_marker_aborts_and_resumes_and_later_barriers_of_it_are_stale() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 2);
        h.on_barrier(0, 3, t0);
        assert_eq!(
            h.on_cancel(3),
            vec![
                BarrierAction::Abort {
                    id: 3,
                    reason: AbortCause::Cancelled
                },
                BarrierAction::Resume(vec![0]),
            ]
        );
        assert_eq!(h.on_barrier(1, 3, t0), vec![BarrierAction::Resume(vec![1])]);
        // A cancel for a checkpoint never seen here aborts it too.
        assert_eq!(
            h.on_cancel(4),
            vec![BarrierAction::Abort {
                id: 4,
                reason: AbortCause::Cancelled
            }]
        );
        assert!(h.on_cancel(4).is_empty(), "twice is once");
    }

    #[test]
    fn an_ended_channel_no_longer_holds_back_alignment() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        h.on_barrier(0, 1, t0);
        h.on_barrier(1, 1, t0);
        assert_eq!(
            h.on_end_of_partition(2, at(t0, 5)),
            vec![trigger(1, 5), BarrierAction::Resume(vec![0, 1])]
        );
        // The next checkpoint needs channels 0 and 1 only.
        h.on_barrier(1, 2, at(t0, 10));
        assert_eq!(
            h.on_barrier(0, 2, at(t0, 11)),
            vec![trigger(2, 1), BarrierAction::Resume(vec![0, 1])]
        );
        assert!(
            h.on_barrier(2, 3, t0).is_empty(),
            "an ended channel is ignored"
        );
    }

    #[test]
    fn at_least_once_never_blocks_and_triggers_when_the_last_channel_delivered() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::AtLeastOnce, 2);
        assert!(h.on_barrier(0, 1, t0).is_empty());
        assert!(h.blocked().is_empty());
        // Checkpoint 2 overtakes on channel 0 (no blocking): both are tracked.
        assert!(h.on_barrier(0, 2, at(t0, 1)).is_empty());
        assert_eq!(h.on_barrier(1, 1, at(t0, 2)), vec![trigger(1, 2)]);
        assert_eq!(h.on_barrier(1, 2, at(t0, 4)), vec![trigger(2, 3)]);
    }

    #[test]
    fn at_least_once_a_complete_newer_checkpoint_subsumes_older_incomplete_ones() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::AtLeastOnce, 2);
        h.on_barrier(0, 1, t0);
        h.on_barrier(0, 2, t0);
        h.on_barrier(1, 2, t0); // channel 1 never delivered 1 (e.g. lost to a failover)
        assert_eq!(h.aligning(), None);
        // 2 completed, and in doing so 1 was subsumed: it is stale from now on.
        assert!(h.on_barrier(1, 1, t0).is_empty());
    }

    #[test]
    fn at_least_once_subsumption_is_reported() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::AtLeastOnce, 2);
        h.on_barrier(0, 1, t0);
        h.on_barrier(0, 2, t0);
        assert_eq!(
            h.on_barrier(1, 2, t0),
            vec![
                BarrierAction::Abort {
                    id: 1,
                    reason: AbortCause::Subsumed { by: 2 }
                },
                trigger(2, 0),
            ]
        );
    }
}
