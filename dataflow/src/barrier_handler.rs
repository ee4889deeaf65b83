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
//! * **Unaligned** (exactly-once, `execution.checkpointing.unaligned.enabled`): the
//!   first barrier of a checkpoint triggers the snapshot at once — it overtook the data
//!   queued before it — and every other live channel is *recorded* from then until its
//!   own barrier arrives: that data is before the checkpoint on its channel but after the
//!   snapshot, so it is stored with the checkpoint (in-flight data) and still processed.
//!   When every channel delivered the barrier the in-flight data is complete.
//! * **Aligned with a timeout** (`execution.checkpointing.aligned-checkpoint-timeout`):
//!   an aligned checkpoint barrier starts an alignment as above, with what is left of
//!   the timeout (the task counts it from the checkpoint's trigger time,
//!   [`TaskCheckpointing::alignment_time_left`](crate::checkpoint::TaskCheckpointing::alignment_time_left));
//!   when that has passed ([`BarrierHandler::on_timeout`] at
//!   [`BarrierHandler::alignment_deadline`], or a barrier arriving later) it turns
//!   unaligned: snapshot now, resume the blocked channels, record the others until their
//!   barriers. An unaligned barrier arriving meanwhile (the checkpoint timed out in an
//!   upstream task's output queue) turns it unaligned at once. Savepoints never time
//!   out.
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

/// How one barrier is handled (from its options and the task's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierKind {
    /// Aligned; with a timeout, a slow alignment turns unaligned.
    Aligned {
        /// What is left of `execution.checkpointing.aligned-checkpoint-timeout` when the
        /// barrier arrives (checkpoints only).
        timeout: Option<Duration>,
    },
    /// Unaligned: the barrier overtook the data before it.
    Unaligned,
}

/// What the task must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarrierAction {
    /// Snapshot now for checkpoint `id` and forward its barrier downstream.
    Trigger {
        /// Checkpoint id.
        id: u64,
        /// Time from the first barrier of `id` at this task to the last (to the switch,
        /// for an alignment that timed out).
        alignment: Duration,
        /// Unaligned snapshot: the channels whose data must be recorded from now on
        /// until their barrier arrives ([`BarrierAction::StopRecording`]), and `Some`
        /// even if none is left. `None`: aligned, nothing in flight.
        record: Option<Vec<usize>>,
    },
    /// `channel` delivered the barrier of unaligned checkpoint `id`: stop recording it.
    StopRecording {
        /// Checkpoint id.
        id: u64,
        /// The channel.
        channel: usize,
    },
    /// Every channel delivered the barrier of unaligned checkpoint `id`: its in-flight
    /// data is complete.
    InFlightComplete {
        /// Checkpoint id.
        id: u64,
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
    /// Turn unaligned after this long (aligned checkpoints with a timeout).
    timeout: Option<Duration>,
    /// The snapshot was taken (unaligned): arrivals only end recordings now.
    snapshotted: bool,
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
            (BarrierMode::Aligned, Some(p)) if !p.snapshotted => channels(&p.arrived),
            _ => Vec::new(),
        }
    }

    /// When the alignment in progress turns unaligned, if it has a timeout.
    pub fn alignment_deadline(&self) -> Option<Instant> {
        let p = self.pending.values().next()?;
        if self.mode != BarrierMode::Aligned || p.snapshotted {
            return None;
        }
        p.timeout.map(|t| p.first + t)
    }

    /// Turns the alignment in progress unaligned if its timeout has passed at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if self.alignment_deadline().is_some_and(|d| d <= now) {
            let id = *self
                .pending
                .keys()
                .next()
                .expect("deadline implies pending");
            self.switch_to_unaligned(id, now, &mut actions);
        }
        actions
    }

    /// Snapshots the aligning checkpoint `id` now, resumes the channels it blocked and
    /// records the others.
    fn switch_to_unaligned(&mut self, id: u64, now: Instant, actions: &mut Vec<BarrierAction>) {
        let ended = &self.ended;
        let p = self.pending.get_mut(&id).expect("aligning");
        p.snapshotted = true;
        let record = (0..ended.len())
            .filter(|&c| !p.arrived[c] && !ended[c])
            .collect();
        let blocked = channels(&p.arrived);
        actions.push(BarrierAction::Trigger {
            id,
            alignment: now.duration_since(p.first),
            record: Some(record),
        });
        if !blocked.is_empty() {
            actions.push(BarrierAction::Resume(blocked));
        }
        self.done_up_to = self.done_up_to.max(id);
        self.complete_ready(now, actions);
    }

    /// Barrier `id` of `kind` arrived on `channel` (at-least-once mode tracks every
    /// kind alike).
    pub fn on_barrier_of(
        &mut self,
        channel: usize,
        id: u64,
        kind: BarrierKind,
        now: Instant,
    ) -> Vec<BarrierAction> {
        match (self.mode, kind) {
            (BarrierMode::Aligned, BarrierKind::Unaligned) => {
                self.on_unaligned_barrier(channel, id, now)
            }
            (BarrierMode::Aligned, BarrierKind::Aligned { timeout }) => {
                self.on_aligned_barrier(channel, id, timeout, now)
            }
            (BarrierMode::AtLeastOnce, _) => self.on_aligned_barrier(channel, id, None, now),
        }
    }

    /// An aligned barrier `id` (no timeout) arrived on `channel`.
    pub fn on_barrier(&mut self, channel: usize, id: u64, now: Instant) -> Vec<BarrierAction> {
        self.on_aligned_barrier(channel, id, None, now)
    }

    /// Drops the pending checkpoint older than `id` (only one is pending in
    /// exactly-once mode): abort it, resume what it blocked.
    fn subsume_older(&mut self, id: u64, actions: &mut Vec<BarrierAction>) {
        if let Some((&old, _)) = self.pending.iter().next() {
            if old < id {
                let p = self.pending.remove(&old).expect("present");
                self.done_up_to = self.done_up_to.max(old);
                actions.push(BarrierAction::Abort {
                    id: old,
                    reason: AbortCause::Subsumed { by: id },
                });
                let blocked = if p.snapshotted {
                    Vec::new()
                } else {
                    channels(&p.arrived)
                };
                if !blocked.is_empty() {
                    actions.push(BarrierAction::Resume(blocked));
                }
            }
        }
    }

    fn on_unaligned_barrier(
        &mut self,
        channel: usize,
        id: u64,
        now: Instant,
    ) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if channel >= self.ended.len() || self.ended[channel] {
            return actions;
        }
        if id <= self.done_up_to && !self.pending.contains_key(&id) {
            return actions; // stale; unaligned barriers block nothing
        }
        self.subsume_older(id, &mut actions);
        let n = self.ended.len();
        let p = self.pending.entry(id).or_insert_with(|| Progress {
            arrived: vec![false; n],
            first: now,
            timeout: None,
            snapshotted: false,
        });
        if p.arrived[channel] {
            return actions;
        }
        p.arrived[channel] = true;
        if p.snapshotted {
            actions.push(BarrierAction::StopRecording { id, channel });
        } else {
            // Any aligned arrivals of `id` so far blocked their channels.
            p.arrived[channel] = false;
            let was_blocked = channels(&p.arrived);
            p.arrived[channel] = true;
            p.snapshotted = true;
            let ended = &self.ended;
            let record = (0..n).filter(|&c| !p.arrived[c] && !ended[c]).collect();
            actions.push(BarrierAction::Trigger {
                id,
                alignment: now.duration_since(p.first),
                record: Some(record),
            });
            if !was_blocked.is_empty() {
                actions.push(BarrierAction::Resume(was_blocked));
            }
            self.done_up_to = self.done_up_to.max(id);
        }
        self.complete_ready(now, &mut actions);
        actions
    }

    fn on_aligned_barrier(
        &mut self,
        channel: usize,
        id: u64,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if channel >= self.ended.len() || self.ended[channel] {
            return actions;
        }
        let blocking = self.mode == BarrierMode::Aligned;
        if let Some(p) = self.pending.get_mut(&id).filter(|p| p.snapshotted) {
            // An alignment that timed out: the barrier only ends the channel's recording.
            if !p.arrived[channel] {
                p.arrived[channel] = true;
                actions.push(BarrierAction::StopRecording { id, channel });
            }
            actions.push(BarrierAction::Resume(vec![channel]));
            self.complete_ready(now, &mut actions);
            return actions;
        }
        if id <= self.done_up_to {
            if blocking {
                actions.push(BarrierAction::Resume(vec![channel]));
            }
            return actions;
        }
        if blocking {
            // Only one alignment at a time: a newer barrier abandons the older one.
            self.subsume_older(id, &mut actions);
        }
        let n = self.ended.len();
        let p = self.pending.entry(id).or_insert_with(|| Progress {
            arrived: vec![false; n],
            first: now,
            timeout: if blocking { timeout } else { None },
            snapshotted: false,
        });
        p.arrived[channel] = true;
        self.complete_ready(now, &mut actions);
        // A barrier arriving after the timeout turns the alignment unaligned too.
        if self.pending.contains_key(&id) {
            actions.extend(self.on_timeout(now));
        }
        actions
    }

    /// A cancel marker for checkpoint `id` arrived on some channel.
    pub fn on_cancel(&mut self, id: u64) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        // A snapshotted unaligned checkpoint is still pending: it can be cancelled.
        if id <= self.done_up_to && !self.pending.contains_key(&id) {
            return actions;
        }
        // Everything up to `id` is over here; in at-least-once mode older checkpoints
        // still pending can no longer complete in order either.
        let over: Vec<u64> = self.pending.range(..=id).map(|(k, _)| *k).collect();
        let mut resumed = Vec::new();
        for k in over {
            let p = self.pending.remove(&k).expect("present");
            if self.mode == BarrierMode::Aligned && !p.snapshotted {
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
        self.done_up_to = self.done_up_to.max(id);
        actions
    }

    /// `channel` ended: it takes part in no later alignment.
    pub fn on_end_of_partition(&mut self, channel: usize, now: Instant) -> Vec<BarrierAction> {
        let mut actions = Vec::new();
        if channel < self.ended.len() && !self.ended[channel] {
            self.ended[channel] = true;
            for (&id, p) in &self.pending {
                if p.snapshotted && !p.arrived[channel] {
                    actions.push(BarrierAction::StopRecording { id, channel });
                }
            }
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
        if self.pending[&id].snapshotted {
            self.pending.remove(&id);
            actions.push(BarrierAction::InFlightComplete { id });
            return;
        }
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
            record: None,
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
            record: None,
        }
    }

    fn unaligned(id: u64, ms: u64, record: Vec<usize>) -> BarrierAction {
        BarrierAction::Trigger {
            id,
            alignment: Duration::from_millis(ms),
            record: Some(record),
        }
    }

    fn stop(id: u64, channel: usize) -> BarrierAction {
        BarrierAction::StopRecording { id, channel }
    }

    const UNALIGNED: BarrierKind = BarrierKind::Unaligned;

    #[test]
    fn unaligned_triggers_on_the_first_barrier_and_records_the_others_until_theirs() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        assert_eq!(
            h.on_barrier_of(1, 4, UNALIGNED, t0),
            vec![unaligned(4, 0, vec![0, 2])]
        );
        assert!(h.blocked().is_empty(), "unaligned blocks nothing");
        assert_eq!(
            h.on_barrier_of(0, 4, UNALIGNED, at(t0, 2)),
            vec![stop(4, 0)]
        );
        assert!(
            h.on_barrier_of(0, 4, UNALIGNED, at(t0, 2)).is_empty(),
            "twice is once"
        );
        assert_eq!(
            h.on_barrier_of(2, 4, UNALIGNED, at(t0, 3)),
            vec![stop(4, 2), BarrierAction::InFlightComplete { id: 4 }]
        );
        // Done: a late duplicate is stale.
        assert!(h.on_barrier_of(2, 4, UNALIGNED, at(t0, 4)).is_empty());
        // One channel: trigger and complete at once.
        let mut one = BarrierHandler::new(BarrierMode::Aligned, 1);
        assert_eq!(
            one.on_barrier_of(0, 1, UNALIGNED, t0),
            vec![
                unaligned(1, 0, vec![]),
                BarrierAction::InFlightComplete { id: 1 }
            ]
        );
    }

    #[test]
    fn unaligned_recording_ends_with_a_channel_and_aborts_on_cancel_or_a_newer_barrier() {
        let t0 = Instant::now();
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        h.on_barrier_of(0, 1, UNALIGNED, t0);
        assert_eq!(h.on_end_of_partition(1, t0), vec![stop(1, 1)]);
        // A newer barrier subsumes 1 (no channel to resume: nothing was blocked).
        assert_eq!(
            h.on_barrier_of(2, 2, UNALIGNED, t0),
            vec![
                BarrierAction::Abort {
                    id: 1,
                    reason: AbortCause::Subsumed { by: 2 }
                },
                unaligned(2, 0, vec![0]),
            ]
        );
        assert!(
            h.on_barrier_of(2, 1, UNALIGNED, t0).is_empty(),
            "1 is stale"
        );
        assert_eq!(
            h.on_cancel(2),
            vec![BarrierAction::Abort {
                id: 2,
                reason: AbortCause::Cancelled
            }]
        );
        assert!(h.on_barrier_of(0, 2, UNALIGNED, t0).is_empty());
    }

    #[test]
    fn an_alignment_that_times_out_turns_unaligned() {
        let t0 = Instant::now();
        let kind = BarrierKind::Aligned {
            timeout: Some(Duration::from_millis(10)),
        };
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        assert!(h.on_barrier_of(0, 7, kind, t0).is_empty());
        assert_eq!(h.alignment_deadline(), Some(at(t0, 10)));
        assert!(h.on_timeout(at(t0, 9)).is_empty());
        assert_eq!(
            h.on_timeout(at(t0, 10)),
            vec![unaligned(7, 10, vec![1, 2]), BarrierAction::Resume(vec![0])]
        );
        assert_eq!(h.alignment_deadline(), None);
        assert!(h.blocked().is_empty());
        // The later aligned barriers block their channels: stop recording and resume.
        assert_eq!(
            h.on_barrier_of(1, 7, kind, at(t0, 12)),
            vec![stop(7, 1), BarrierAction::Resume(vec![1])]
        );
        assert_eq!(
            h.on_barrier_of(2, 7, kind, at(t0, 13)),
            vec![
                stop(7, 2),
                BarrierAction::Resume(vec![2]),
                BarrierAction::InFlightComplete { id: 7 }
            ]
        );
        // A barrier arriving after the deadline switches too; within it, it aligns.
        assert!(h.on_barrier_of(0, 8, kind, at(t0, 20)).is_empty());
        assert_eq!(
            h.on_barrier_of(1, 8, kind, at(t0, 31)),
            vec![unaligned(8, 11, vec![2]), BarrierAction::Resume(vec![0, 1])]
        );
        let mut fast = BarrierHandler::new(BarrierMode::Aligned, 2);
        fast.on_barrier_of(0, 1, kind, t0);
        assert_eq!(
            fast.on_barrier_of(1, 1, kind, at(t0, 5)),
            vec![trigger(1, 5), BarrierAction::Resume(vec![0, 1])]
        );
        // Without a timeout (savepoints) it never switches.
        let mut sp = BarrierHandler::new(BarrierMode::Aligned, 2);
        sp.on_barrier_of(0, 1, BarrierKind::Aligned { timeout: None }, t0);
        assert_eq!(sp.alignment_deadline(), None);
        assert!(sp.on_timeout(at(t0, 1_000_000)).is_empty());
    }

    #[test]
    fn an_unaligned_barrier_during_an_alignment_turns_it_unaligned_at_once() {
        // Checkpoint 3 timed out upstream of channel 1: its barrier arrives unaligned
        // while channel 0's aligned one blocks.
        let t0 = Instant::now();
        let kind = BarrierKind::Aligned {
            timeout: Some(Duration::from_secs(60)),
        };
        let mut h = BarrierHandler::new(BarrierMode::Aligned, 3);
        assert!(h.on_barrier_of(0, 3, kind, t0).is_empty());
        assert_eq!(h.blocked(), vec![0]);
        assert_eq!(
            h.on_barrier_of(1, 3, UNALIGNED, at(t0, 4)),
            vec![unaligned(3, 4, vec![2]), BarrierAction::Resume(vec![0])]
        );
        assert!(h.blocked().is_empty());
        assert_eq!(h.alignment_deadline(), None);
        assert_eq!(
            h.on_barrier_of(2, 3, kind, at(t0, 6)),
            vec![
                stop(3, 2),
                BarrierAction::Resume(vec![2]),
                BarrierAction::InFlightComplete { id: 3 }
            ]
        );
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
