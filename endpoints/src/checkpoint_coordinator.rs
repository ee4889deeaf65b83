//! The CheckpointCoordinator: when checkpoints start, when they complete, which are kept.
//!
//! A pure state machine owned by the JobMaster (Flink's `CheckpointCoordinator` together
//! with its `CheckpointFailureManager` and `CompletedCheckpointStore`). It never reads a
//! clock, touches a file or sends a message: every input carries `now`, and every output
//! is an [`Action`] that the JobMaster carries out — trigger the sources, write
//! `_metadata` (the one step with I/O, reported back through
//! [`CheckpointCoordinator::finalized`]), notify tasks, discard retained checkpoints, or
//! fail the job. That makes timeouts, declines, tolerable failures, subsumption and
//! refused concurrent triggers testable by hand on virtual time (see the tests below).
//!
//! # Protocol
//!
//! 1. [`trigger`](CheckpointCoordinator::trigger) (periodic through
//!    [`tick`](CheckpointCoordinator::tick), or a user's savepoint) allocates the next id
//!    and returns [`Action::TriggerSources`]; the checkpoint is *pending* and expects an
//!    acknowledgement from every task in [`CheckpointCoordinator::new`]'s set.
//! 2. [`acknowledge`](CheckpointCoordinator::acknowledge) records a task's state handles;
//!    after the last one the checkpoint is *finalizing* and [`Action::Finalize`] hands all
//!    acknowledgements over to be written as `_metadata`.
//! 3. [`finalized`](CheckpointCoordinator::finalized) with the written path completes it:
//!    it joins the retained checkpoints (the oldest beyond `num_retained` are discarded),
//!    older pending checkpoints are subsumed (aborted), and the tasks are notified
//!    ([`Action::NotifyComplete`], which is when two-phase-commit sinks commit).
//! 4. [`decline`](CheckpointCoordinator::decline), a failed `_metadata` write, or the
//!    timeout aborts a checkpoint ([`Action::NotifyAborted`]) and counts as a failure;
//!    more than `tolerable_failed_checkpoints` consecutive failures fail the job
//!    ([`Action::FailJob`]). A completed checkpoint resets the count. Aborts caused by
//!    the job itself (failover, cancel: [`abort_all`](CheckpointCoordinator::abort_all))
//!    and subsumption do not count, as in Flink.
//!
//! # Savepoints
//!
//! A savepoint is triggered regardless of `max_concurrent` and `min_pause` (Flink forces
//! them too), is never subsumed by a checkpoint and never retained or discarded here: it
//! belongs to the user. An intermediate savepoint does not notify completion, so sinks do
//! not commit a transaction that a later recovery from an older checkpoint would repeat
//! (Flink ≥ 1.15); a stop-with-savepoint (`terminate`) does, because nothing follows it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// `execution.checkpointing.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointingMode {
    /// Barriers are aligned: state reflects every record exactly once.
    #[default]
    ExactlyOnce,
    /// Barriers are only tracked: after recovery some records may be processed twice.
    AtLeastOnce,
}

/// The coordinator's settings, under Flink's keys and with Flink's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `execution.checkpointing.interval`: periodic checkpoints, off when `None`.
    pub interval: Option<Duration>,
    /// `execution.checkpointing.timeout` (10 min): a pending checkpoint older than this
    /// is aborted as expired.
    pub timeout: Duration,
    /// `execution.checkpointing.min-pause` (0): time from one checkpoint's completion to
    /// the next trigger.
    pub min_pause: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints` (1).
    pub max_concurrent: usize,
    /// `execution.checkpointing.tolerable-failed-checkpoints` (0): consecutive failures
    /// tolerated before the job fails.
    pub tolerable_failed: u32,
    /// `execution.checkpointing.mode` (exactly_once).
    pub mode: CheckpointingMode,
    /// `state.checkpoints.num-retained` (1).
    pub num_retained: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            interval: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failed: 0,
            mode: CheckpointingMode::ExactlyOnce,
            num_retained: 1,
        }
    }
}

/// What is being taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotRequest {
    /// A checkpoint (periodic or explicitly triggered).
    Checkpoint,
    /// A savepoint into `target_dir`; `terminate` for stop-with-savepoint.
    Savepoint {
        /// The savepoint's directory.
        target_dir: String,
        /// Whether the job stops after it (sources end, tasks finish).
        terminate: bool,
    },
}

impl SnapshotRequest {
    fn is_savepoint(&self) -> bool {
        matches!(self, SnapshotRequest::Savepoint { .. })
    }

    fn notifies_completion(&self) -> bool {
        match self {
            SnapshotRequest::Checkpoint => true,
            SnapshotRequest::Savepoint { terminate, .. } => *terminate,
        }
    }
}

/// Why a trigger was refused (nothing was started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerError {
    /// `max_concurrent` checkpoints are already pending.
    TooManyConcurrent {
        /// How many are pending.
        pending: usize,
    },
    /// The last checkpoint completed less than `min_pause` ago.
    MinPauseNotElapsed {
        /// Time still to wait.
        remaining: Duration,
    },
    /// The coordinator was shut down (the job reached a terminal state).
    Shutdown,
}

impl fmt::Display for TriggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerError::TooManyConcurrent { pending } => write!(
                f,
                "{pending} checkpoint(s) already in progress (execution.checkpointing.max-concurrent-checkpoints)"
            ),
            TriggerError::MinPauseNotElapsed { remaining } => write!(
                f,
                "the minimum pause between checkpoints has {} ms left (execution.checkpointing.min-pause)",
                remaining.as_millis()
            ),
            TriggerError::Shutdown => write!(f, "the checkpoint coordinator is shut down"),
        }
    }
}

impl std::error::Error for TriggerError {}

/// Why a checkpoint was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Not acknowledged by every task within the timeout.
    Expired,
    /// A task declined it.
    Declined {
        /// The task, as the JobMaster names it.
        task: String,
        /// The task's reason.
        reason: String,
    },
    /// Writing `_metadata` failed.
    FinalizeFailed(String),
    /// A later checkpoint completed first.
    Subsumed {
        /// The completed checkpoint.
        by: u64,
    },
    /// The job failed over, was cancelled or finished.
    JobAbort(String),
    /// A completed checkpoint that could not be read back when a recovery needed it.
    Unreadable(String),
}

impl AbortReason {
    /// Whether the failure manager counts it towards `tolerable_failed`.
    fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            AbortReason::Expired | AbortReason::Declined { .. } | AbortReason::FinalizeFailed(_)
        )
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::Expired => write!(f, "expired before every task acknowledged it"),
            AbortReason::Declined { task, reason } => write!(f, "declined by {task}: {reason}"),
            AbortReason::FinalizeFailed(e) => write!(f, "cannot write _metadata: {e}"),
            AbortReason::Subsumed { by } => write!(f, "subsumed by checkpoint {by}"),
            AbortReason::JobAbort(why) => write!(f, "aborted: {why}"),
            AbortReason::Unreadable(why) => write!(f, "unreadable on recovery: {why}"),
        }
    }
}

/// Per-task figures an acknowledgement carries (for `rill checkpoints` and REST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckStats {
    /// Bytes the task wrote for this checkpoint.
    pub bytes: u64,
    /// Bytes of in-flight data persisted (unaligned checkpoints).
    pub in_flight_bytes: u64,
    /// Synchronous part, ms.
    pub sync_ms: u64,
    /// Asynchronous part, ms.
    pub async_ms: u64,
    /// Time from the first barrier to the last, ms.
    pub alignment_ms: u64,
}

/// Something the JobMaster must do.
#[derive(Debug, PartialEq)]
pub enum Action<A> {
    /// Inject barrier `id` at the sources.
    TriggerSources {
        /// Checkpoint id.
        id: u64,
        /// Trigger time (ms since the epoch) the barrier carries.
        timestamp_ms: i64,
        /// What is taken.
        request: SnapshotRequest,
    },
    /// Every task acknowledged: write `_metadata` from these acknowledgements (in task
    /// order), then call [`CheckpointCoordinator::finalized`].
    Finalize {
        /// Checkpoint id.
        id: u64,
        /// Trigger time, ms since the epoch.
        timestamp_ms: i64,
        /// What was taken.
        request: SnapshotRequest,
        /// The tasks' acknowledgements.
        acks: Vec<A>,
    },
    /// Checkpoint `id` is complete: tell every task (sinks commit).
    NotifyComplete {
        /// Checkpoint id.
        id: u64,
    },
    /// Checkpoint `id` was aborted: tell every task (sinks abort its transaction).
    NotifyAborted {
        /// Checkpoint id.
        id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// A retained checkpoint fell out of `num_retained`: delete it (its shared files
    /// only once no retained checkpoint references them).
    Discard {
        /// The checkpoint.
        checkpoint: CompletedCheckpoint,
    },
    /// Too many consecutive failures: fail the job with this cause.
    FailJob {
        /// The cause.
        reason: String,
    },
}

/// A checkpoint whose `_metadata` is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    /// Checkpoint id.
    pub id: u64,
    /// Trigger time, ms since the epoch.
    pub timestamp_ms: i64,
    /// The `chk-<id>` (or savepoint) directory.
    pub path: String,
    /// Whether it is a savepoint.
    pub savepoint: bool,
}

/// The status of a checkpoint in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Waiting for acknowledgements or for `_metadata`.
    InProgress,
    /// `_metadata` written.
    Completed {
        /// Its directory.
        path: String,
    },
    /// Aborted.
    Failed {
        /// Why.
        reason: AbortReason,
    },
}

/// One entry of the checkpoint history (`rill checkpoints`, REST `/checkpoints`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Checkpoint id.
    pub id: u64,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// Trigger time, ms since the epoch.
    pub trigger_timestamp_ms: i64,
    /// Status.
    pub status: CheckpointStatus,
    /// Trigger to completion or abort.
    pub duration: Option<Duration>,
    /// Tasks that acknowledged, of how many.
    pub acknowledged: usize,
    /// Tasks expected to acknowledge.
    pub expected: usize,
    /// Sum of the acknowledged tasks' figures (bytes summed, times maxed).
    pub stats: AckStats,
}

/// How many entries the history keeps (Flink's `web.checkpoints.history`, 10).
pub const HISTORY_SIZE: usize = 10;

struct Pending<T, A> {
    timestamp_ms: i64,
    triggered: Instant,
    request: SnapshotRequest,
    waiting: BTreeSet<T>,
    acks: BTreeMap<T, A>,
    finalizing: bool,
}

/// The coordinator of one job. `T` names a task (e.g. an execution vertex id), `A` is
/// what a task acknowledges with (its state handles).
pub struct CheckpointCoordinator<T, A> {
    config: CoordinatorConfig,
    tasks: BTreeSet<T>,
    next_id: u64,
    pending: BTreeMap<u64, Pending<T, A>>,
    retained: VecDeque<CompletedCheckpoint>,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    consecutive_failures: u32,
    history: VecDeque<CheckpointRecord>,
    shut_down: bool,
}

impl<T: Ord + Clone + fmt::Display, A> CheckpointCoordinator<T, A> {
    /// A coordinator that expects an acknowledgement from each of `tasks` and numbers
    /// checkpoints from `next_id` (one past the latest completed one when restored).
    pub fn new(
        config: CoordinatorConfig,
        tasks: impl IntoIterator<Item = T>,
        next_id: u64,
    ) -> Self {
        CheckpointCoordinator {
            config,
            tasks: tasks.into_iter().collect(),
            next_id: next_id.max(1),
            pending: BTreeMap::new(),
            retained: VecDeque::new(),
            last_trigger: None,
            last_completion: None,
            consecutive_failures: 0,
            history: VecDeque::new(),
            shut_down: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Adopts checkpoints restored from storage (oldest first) as the retained ones, so
    /// that retention and recovery continue from them.
    pub fn restore_retained(&mut self, checkpoints: impl IntoIterator<Item = CompletedCheckpoint>) {
        for c in checkpoints {
            self.next_id = self.next_id.max(c.id + 1);
            self.retained.push_back(c);
        }
        while self.retained.len() > self.config.num_retained.max(1) {
            self.retained.pop_front();
        }
    }

    /// Retained checkpoint `id` cannot be read back (corrupt or missing files): it is
    /// dropped, so that [`latest_completed`](Self::latest_completed) falls back to the
    /// previous one, and its history entry says why. Its files are left for inspection.
    pub fn drop_unreadable(&mut self, id: u64, why: String) {
        self.retained.retain(|c| c.id != id);
        if let Some(r) = self.history.iter_mut().rev().find(|r| r.id == id) {
            r.status = CheckpointStatus::Failed {
                reason: AbortReason::Unreadable(why),
            };
        }
    }

    /// The newest completed checkpoint (not savepoint): what recovery restores.
    pub fn latest_completed(&self) -> Option<&CompletedCheckpoint> {
        self.retained.back()
    }

    /// The retained checkpoints, oldest first.
    pub fn retained(&self) -> impl Iterator<Item = &CompletedCheckpoint> {
        self.retained.iter()
    }

    /// Ids of the pending checkpoints, ascending.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// The most recent checkpoints, newest last.
    pub fn history(&self) -> impl Iterator<Item = &CheckpointRecord> {
        self.history.iter()
    }

    /// The pending checkpoints still waiting for `task`'s acknowledgement, with their
    /// trigger times and requests (to trigger a task directly, e.g. one whose input
    /// ended after the barriers were injected).
    pub fn awaiting(&self, task: &T) -> Vec<(u64, i64, SnapshotRequest)> {
        self.pending
            .iter()
            .filter(|(_, p)| !p.finalizing && p.waiting.contains(task))
            .map(|(id, p)| (*id, p.timestamp_ms, p.request.clone()))
            .collect()
    }

    /// Consecutive failures counted so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When the next periodic checkpoint is due (`None`: periodic checkpoints are off or
    /// the coordinator is shut down). With checkpoints pending at the concurrency limit
    /// it is still reported; [`tick`](Self::tick) then waits for them.
    pub fn next_periodic(&self, now: Instant) -> Option<Instant> {
        let interval = self.config.interval?;
        if self.shut_down {
            return None;
        }
        let by_interval = self.last_trigger.map_or(now + interval, |t| t + interval);
        let by_pause = self
            .last_completion
            .map_or(by_interval, |c| c + self.config.min_pause);
        Some(by_interval.max(by_pause))
    }

    /// Advances time: expires timed-out checkpoints and triggers a due periodic one.
    /// `wall_ms` is the wall-clock time barriers carry.
    pub fn tick(&mut self, now: Instant, wall_ms: i64) -> Vec<Action<A>> {
        let mut actions = Vec::new();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                !p.finalizing && now.duration_since(p.triggered) >= self.config.timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.abort(id, AbortReason::Expired, now, &mut actions);
        }
        if self.config.interval.is_some() && self.last_trigger.is_none() {
            // The first periodic checkpoint is one interval after the job started.
            self.last_trigger = Some(now);
        }
        if let Some(due) = self.next_periodic(now) {
            // At the concurrency limit the trigger is refused and retried on a later tick.
            if now >= due {
                if let Ok(a) = self.trigger(SnapshotRequest::Checkpoint, now, wall_ms) {
                    actions.push(a);
                }
            }
        }
        actions
    }

    /// Starts a checkpoint or savepoint now; the action injects its barriers.
    pub fn trigger(
        &mut self,
        request: SnapshotRequest,
        now: Instant,
        wall_ms: i64,
    ) -> Result<Action<A>, TriggerError> {
        if self.shut_down {
            return Err(TriggerError::Shutdown);
        }
        if !request.is_savepoint() {
            let checkpoints = self
                .pending
                .values()
                .filter(|p| !p.request.is_savepoint())
                .count();
            if checkpoints >= self.config.max_concurrent.max(1) {
                return Err(TriggerError::TooManyConcurrent {
                    pending: checkpoints,
                });
            }
            if let Some(done) = self.last_completion {
                let earliest = done + self.config.min_pause;
                if now < earliest {
                    return Err(TriggerError::MinPauseNotElapsed {
                        remaining: earliest - now,
                    });
                }
            }
            self.last_trigger = Some(now);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                timestamp_ms: wall_ms,
                triggered: now,
                request: request.clone(),
                waiting: self.tasks.clone(),
                acks: BTreeMap::new(),
                finalizing: false,
            },
        );
        self.record(CheckpointRecord {
            id,
            savepoint: request.is_savepoint(),
            trigger_timestamp_ms: wall_ms,
            status: CheckpointStatus::InProgress,
            duration: None,
            acknowledged: 0,
            expected: self.tasks.len(),
            stats: AckStats::default(),
        });
        Ok(Action::TriggerSources {
            id,
            timestamp_ms: wall_ms,
            request,
        })
    }

    /// A task acknowledged checkpoint `id`. Unknown or no longer pending checkpoints and
    /// tasks that are not expected (or acknowledge twice) are ignored: they are late
    /// messages of an aborted checkpoint or of a previous execution attempt.
    pub fn acknowledge(&mut self, id: u64, task: &T, ack: A, stats: AckStats) -> Vec<Action<A>> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Vec::new();
        };
        if p.finalizing || !p.waiting.remove(task) {
            return Vec::new();
        }
        p.acks.insert(task.clone(), ack);
        let acknowledged = p.acks.len();
        let done = p.waiting.is_empty();
        if let Some(r) = self.history.iter_mut().rev().find(|r| r.id == id) {
            r.acknowledged = acknowledged;
            r.stats.bytes += stats.bytes;
            r.stats.in_flight_bytes += stats.in_flight_bytes;
            r.stats.sync_ms = r.stats.sync_ms.max(stats.sync_ms);
            r.stats.async_ms = r.stats.async_ms.max(stats.async_ms);
            r.stats.alignment_ms = r.stats.alignment_ms.max(stats.alignment_ms);
        }
        if !done {
            return Vec::new();
        }
        let p = self.pending.get_mut(&id).expect("looked up above");
        p.finalizing = true;
        vec![Action::Finalize {
            id,
            timestamp_ms: p.timestamp_ms,
            request: p.request.clone(),
            acks: std::mem::take(&mut p.acks).into_values().collect(),
        }]
    }

    /// The outcome of writing `_metadata` for checkpoint `id` (after
    /// [`Action::Finalize`]): its directory, or why it failed.
    pub fn finalized(
        &mut self,
        id: u64,
        result: Result<String, String>,
        now: Instant,
    ) -> Vec<Action<A>> {
        let mut actions = Vec::new();
        match self.pending.get(&id) {
            Some(p) if p.finalizing => {}
            _ => return actions,
        }
        let path = match result {
            Ok(path) => path,
            Err(e) => {
                self.abort(id, AbortReason::FinalizeFailed(e), now, &mut actions);
                return actions;
            }
        };
        let p = self.pending.remove(&id).expect("checked above");
        let savepoint = p.request.is_savepoint();
        self.set_status(
            id,
            CheckpointStatus::Completed { path: path.clone() },
            Some(now.duration_since(p.triggered)),
        );
        self.consecutive_failures = 0;
        if !savepoint {
            self.last_completion = Some(now);
            // Older pending checkpoints can only complete into something older: subsume.
            let older: Vec<u64> = self
                .pending
                .iter()
                .filter(|(pid, q)| **pid < id && !q.request.is_savepoint())
                .map(|(pid, _)| *pid)
                .collect();
            for old in older {
                self.abort(old, AbortReason::Subsumed { by: id }, now, &mut actions);
            }
            self.retained.push_back(CompletedCheckpoint {
                id,
                timestamp_ms: p.timestamp_ms,
                path,
                savepoint,
            });
            while self.retained.len() > self.config.num_retained.max(1) {
                let checkpoint = self.retained.pop_front().expect("non-empty");
                actions.push(Action::Discard { checkpoint });
            }
        }
        if p.request.notifies_completion() {
            actions.push(Action::NotifyComplete { id });
        }
        actions
    }

    /// A task declined checkpoint `id` (it cannot take it).
    pub fn decline(&mut self, id: u64, task: &T, reason: String, now: Instant) -> Vec<Action<A>> {
        let mut actions = Vec::new();
        if self.pending.contains_key(&id) {
            let reason = AbortReason::Declined {
                task: task.to_string(),
                reason,
            };
            self.abort(id, reason, now, &mut actions);
        }
        actions
    }

    /// Aborts every pending checkpoint because of the job itself (failover, cancel,
    /// finish); not counted as checkpoint failures.
    pub fn abort_all(&mut self, why: &str, now: Instant) -> Vec<Action<A>> {
        let mut actions = Vec::new();
        for id in self.pending_ids() {
            self.abort(id, AbortReason::JobAbort(why.into()), now, &mut actions);
        }
        actions
    }

    /// Aborts everything and refuses further triggers (terminal job state).
    pub fn shutdown(&mut self, why: &str, now: Instant) -> Vec<Action<A>> {
        let actions = self.abort_all(why, now);
        self.shut_down = true;
        actions
    }

    fn abort(&mut self, id: u64, reason: AbortReason, now: Instant, actions: &mut Vec<Action<A>>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        self.set_status(
            id,
            CheckpointStatus::Failed {
                reason: reason.clone(),
            },
            Some(now.duration_since(p.triggered)),
        );
        let counts = reason.counts_as_failure() && !p.request.is_savepoint();
        actions.push(Action::NotifyAborted {
            id,
            reason: reason.clone(),
        });
        if counts {
            self.consecutive_failures += 1;
            if self.consecutive_failures > self.config.tolerable_failed {
                actions.push(Action::FailJob {
                    reason: format!(
                        "exceeded checkpoint tolerable failure threshold ({} consecutive failures, execution.checkpointing.tolerable-failed-checkpoints = {}); last: checkpoint {id} {reason}",
                        self.consecutive_failures, self.config.tolerable_failed
                    ),
                });
            }
        }
    }

    fn record(&mut self, r: CheckpointRecord) {
        self.history.push_back(r);
        while self.history.len() > HISTORY_SIZE {
            self.history.pop_front();
        }
    }

    fn set_status(&mut self, id: u64, status: CheckpointStatus, duration: Option<Duration>) {
        if let Some(r) = self.history.iter_mut().rev().find(|r| r.id == id) {
            r.status = status;
            r.duration = duration;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Coord = CheckpointCoordinator<u32, &'static str>;

    fn config() -> CoordinatorConfig {
        CoordinatorConfig {
            interval: Some(Duration::from_millis(100)),
            timeout: Duration::from_secs(1),
            ..CoordinatorConfig::default()
        }
    }

    #[test]
    fn an_unreadable_checkpoint_is_dropped_and_recovery_falls_back() {
        let t0 = Instant::now();
        let mut c = Coord::new(
            CoordinatorConfig {
                num_retained: 3,
                ..config()
            },
            [0, 1],
            1,
        );
        assert!(
            c.tick(t0, 0).is_empty(),
            "the first checkpoint waits one interval"
        );
        for k in 1..=3u64 {
            let id = triggered(&mut c, ms(t0, 100 * k));
            complete(&mut c, id, ms(t0, 100 * k + 10));
        }
        assert_eq!(c.latest_completed().map(|c| c.id), Some(3));
        c.drop_unreadable(3, "bad magic".into());
        assert_eq!(c.latest_completed().map(|c| c.id), Some(2));
        let r = c.history().find(|r| r.id == 3).unwrap();
        assert!(
            matches!(&r.status, CheckpointStatus::Failed { reason: AbortReason::Unreadable(w) } if w == "bad magic")
        );
        c.drop_unreadable(2, "gone".into());
        c.drop_unreadable(1, "gone".into());
        assert_eq!(c.latest_completed(), None);
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Triggers through `tick` at `at` and returns the id.
    fn triggered(c: &mut Coord, at: Instant) -> u64 {
        let actions = c.tick(at, 0);
        match actions.as_slice() {
            [Action::TriggerSources { id, .. }] => *id,
            other => panic!("expected one trigger, got {other:?}"),
        }
    }

    fn ack_all(c: &mut Coord, id: u64) -> Vec<Action<&'static str>> {
        let mut out = c.acknowledge(id, &0, "a0", AckStats::default());
        assert!(out.is_empty(), "finalized before the last ack");
        out.extend(c.acknowledge(
            id,
            &1,
            "a1",
            AckStats {
                bytes: 10,
                ..AckStats::default()
            },
        ));
        out
    }

    fn complete(c: &mut Coord, id: u64, at: Instant) -> Vec<Action<&'static str>> {
        let fin = ack_all(c, id);
        assert!(
            matches!(fin.as_slice(), [Action::Finalize { id: f, acks, .. }] if *f == id && acks == &["a0", "a1"])
        );
        c.finalized(id, Ok(format!("/chk/chk-{id}")), at)
    }

    #[test]
    fn periodic_checkpoints_follow_the_interval_and_complete_after_every_ack_and_metadata() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        assert!(
            c.tick(t0, 0).is_empty(),
            "the first checkpoint waits one interval"
        );
        assert!(c.tick(ms(t0, 99), 0).is_empty());
        let id = triggered(&mut c, ms(t0, 100));
        assert_eq!(id, 1);
        assert!(c.latest_completed().is_none());
        let done = complete(&mut c, id, ms(t0, 120));
        assert_eq!(done, vec![Action::NotifyComplete { id: 1 }]);
        assert_eq!(c.latest_completed().unwrap().path, "/chk/chk-1");
        // Next one interval after the previous trigger.
        assert!(c.tick(ms(t0, 199), 0).is_empty());
        assert_eq!(triggered(&mut c, ms(t0, 200)), 2);
        let h: Vec<_> = c
            .history()
            .map(|r| (r.id, r.status.clone(), r.stats.bytes))
            .collect();
        assert_eq!(
            h[0],
            (
                1,
                CheckpointStatus::Completed {
                    path: "/chk/chk-1".into()
                },
                10
            )
        );
        assert_eq!(h[1].1, CheckpointStatus::InProgress);
    }

    #[test]
    fn a_concurrent_trigger_is_refused_and_min_pause_is_kept() {
        let t0 = Instant::now();
        let mut c = Coord::new(
            CoordinatorConfig {
                min_pause: Duration::from_millis(500),
                ..config()
            },
            [0, 1],
            1,
        );
        c.tick(t0, 0);
        let id = triggered(&mut c, ms(t0, 100));
        assert_eq!(
            c.trigger(SnapshotRequest::Checkpoint, ms(t0, 150), 0),
            Err(TriggerError::TooManyConcurrent { pending: 1 })
        );
        // A periodic tick while one is pending does nothing.
        assert!(c.tick(ms(t0, 250), 0).is_empty());
        complete(&mut c, id, ms(t0, 300));
        assert_eq!(
            c.trigger(SnapshotRequest::Checkpoint, ms(t0, 400), 0),
            Err(TriggerError::MinPauseNotElapsed {
                remaining: Duration::from_millis(400)
            })
        );
        assert!(c.tick(ms(t0, 799), 0).is_empty());
        assert_eq!(c.next_periodic(ms(t0, 799)), Some(ms(t0, 800)));
        assert_eq!(triggered(&mut c, ms(t0, 800)), 2);
    }

    #[test]
    fn a_savepoint_is_forced_and_does_not_subsume_or_commit_unless_it_terminates() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        c.tick(t0, 0);
        let chk = triggered(&mut c, ms(t0, 100));
        let sp = SnapshotRequest::Savepoint {
            target_dir: "/sp".into(),
            terminate: false,
        };
        let Ok(Action::TriggerSources { id: sp_id, .. }) = c.trigger(sp, ms(t0, 110), 0) else {
            panic!("savepoint refused")
        };
        assert_eq!(sp_id, 2);
        // The savepoint completes first: the pending checkpoint is not subsumed, nothing
        // is notified, nothing is retained.
        let done = complete(&mut c, sp_id, ms(t0, 120));
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(c.pending_ids(), vec![chk]);
        assert!(c.latest_completed().is_none());
        assert_eq!(
            complete(&mut c, chk, ms(t0, 130)),
            vec![Action::NotifyComplete { id: chk }]
        );

        let stop = SnapshotRequest::Savepoint {
            target_dir: "/sp".into(),
            terminate: true,
        };
        let Ok(Action::TriggerSources { id: stop_id, .. }) = c.trigger(stop, ms(t0, 140), 0) else {
            panic!("stop-with-savepoint refused")
        };
        assert_eq!(
            complete(&mut c, stop_id, ms(t0, 150)),
            vec![Action::NotifyComplete { id: stop_id }]
        );
    }

    #[test]
    fn a_completed_checkpoint_subsumes_older_pending_ones_and_retention_discards_the_oldest() {
        let t0 = Instant::now();
        let mut c = Coord::new(
            CoordinatorConfig {
                max_concurrent: 2,
                num_retained: 2,
                ..config()
            },
            [0, 1],
            1,
        );
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        let b = triggered(&mut c, ms(t0, 200));
        let done = complete(&mut c, b, ms(t0, 210));
        assert_eq!(
            done,
            vec![
                Action::NotifyAborted {
                    id: a,
                    reason: AbortReason::Subsumed { by: b }
                },
                Action::NotifyComplete { id: b }
            ]
        );
        assert_eq!(c.consecutive_failures(), 0, "subsumption is not a failure");
        // A late ack of the subsumed checkpoint is ignored.
        assert!(c.acknowledge(a, &0, "late", AckStats::default()).is_empty());
        let d = triggered(&mut c, ms(t0, 300));
        complete(&mut c, d, ms(t0, 310));
        let e = triggered(&mut c, ms(t0, 400));
        let done = complete(&mut c, e, ms(t0, 410));
        let discarded: Vec<u64> = done
            .iter()
            .filter_map(|x| match x {
                Action::Discard { checkpoint } => Some(checkpoint.id),
                _ => None,
            })
            .collect();
        assert_eq!(discarded, vec![b]);
        let kept: Vec<u64> = c.retained().map(|c| c.id).collect();
        assert_eq!(kept, vec![d, e]);
    }

    #[test]
    fn declines_timeouts_and_metadata_failures_count_up_to_the_tolerable_number() {
        let t0 = Instant::now();
        let mut c = Coord::new(
            CoordinatorConfig {
                tolerable_failed: 2,
                ..config()
            },
            [0, 1],
            1,
        );
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        let out = c.decline(a, &1, "disk full".into(), ms(t0, 110));
        assert_eq!(
            out,
            vec![Action::NotifyAborted {
                id: a,
                reason: AbortReason::Declined {
                    task: "1".into(),
                    reason: "disk full".into()
                }
            }]
        );
        // Expired: one timeout after its trigger.
        let b = triggered(&mut c, ms(t0, 200));
        c.acknowledge(b, &0, "a0", AckStats::default());
        assert!(c.tick(ms(t0, 1199), 0).is_empty());
        let out = c.tick(ms(t0, 1200), 0);
        assert!(
            matches!(&out[0], Action::NotifyAborted { id, reason: AbortReason::Expired } if *id == b),
            "{out:?}"
        );
        assert_eq!(c.consecutive_failures(), 2);
        // A third, from writing _metadata, exceeds the threshold.
        let d = match &out[1..] {
            [Action::TriggerSources { id, .. }] => *id,
            other => panic!("expected the next trigger, got {other:?}"),
        };
        ack_all(&mut c, d);
        let out = c.finalized(d, Err("No space left on device".into()), ms(t0, 1300));
        assert!(matches!(
            &out[0],
            Action::NotifyAborted {
                reason: AbortReason::FinalizeFailed(_),
                ..
            }
        ));
        let Action::FailJob { reason } = &out[1] else {
            panic!("job not failed: {out:?}")
        };
        assert!(reason.contains("3 consecutive failures"), "{reason}");
        assert!(reason.contains("No space left on device"), "{reason}");
        let h = c.history().find(|r| r.id == d).unwrap();
        assert!(matches!(
            &h.status,
            CheckpointStatus::Failed {
                reason: AbortReason::FinalizeFailed(_)
            }
        ));
    }

    #[test]
    fn a_completed_checkpoint_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        // tolerable 0: the first failure fails the job.
        let out = c.decline(a, &0, "x".into(), ms(t0, 110));
        assert!(matches!(out.last(), Some(Action::FailJob { .. })));
        let mut c = Coord::new(
            CoordinatorConfig {
                tolerable_failed: 1,
                ..config()
            },
            [0, 1],
            1,
        );
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        c.decline(a, &0, "x".into(), ms(t0, 110));
        let b = triggered(&mut c, ms(t0, 200));
        complete(&mut c, b, ms(t0, 210));
        assert_eq!(c.consecutive_failures(), 0);
        let d = triggered(&mut c, ms(t0, 300));
        let out = c.decline(d, &0, "x".into(), ms(t0, 310));
        assert_eq!(
            out.len(),
            1,
            "one failure after a success is tolerated: {out:?}"
        );
    }

    #[test]
    fn failover_aborts_without_counting_and_shutdown_refuses_triggers() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        let out = c.abort_all("task 1 failed", ms(t0, 150));
        assert_eq!(
            out,
            vec![Action::NotifyAborted {
                id: a,
                reason: AbortReason::JobAbort("task 1 failed".into())
            }]
        );
        assert_eq!(c.consecutive_failures(), 0);
        assert!(c.acknowledge(a, &0, "late", AckStats::default()).is_empty());
        c.shutdown("job finished", ms(t0, 160));
        assert_eq!(
            c.trigger(SnapshotRequest::Checkpoint, ms(t0, 170), 0),
            Err(TriggerError::Shutdown)
        );
        assert!(c.tick(ms(t0, 10_000), 0).is_empty());
    }

    #[test]
    fn restored_checkpoints_continue_ids_and_retention() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        c.restore_retained([CompletedCheckpoint {
            id: 41,
            timestamp_ms: 5,
            path: "/chk/chk-41".into(),
            savepoint: false,
        }]);
        assert_eq!(c.latest_completed().unwrap().id, 41);
        c.tick(t0, 0);
        let id = triggered(&mut c, ms(t0, 100));
        assert_eq!(id, 42);
        let done = complete(&mut c, id, ms(t0, 110));
        assert!(done
            .iter()
            .any(|a| matches!(a, Action::Discard { checkpoint } if checkpoint.id == 41)));
    }

    #[test]
    fn duplicate_and_unexpected_acks_are_ignored() {
        let t0 = Instant::now();
        let mut c = Coord::new(config(), [0, 1], 1);
        c.tick(t0, 0);
        let a = triggered(&mut c, ms(t0, 100));
        assert!(c.acknowledge(a, &0, "a0", AckStats::default()).is_empty());
        assert!(c
            .acknowledge(a, &0, "again", AckStats::default())
            .is_empty());
        assert!(c
            .acknowledge(a, &7, "stranger", AckStats::default())
            .is_empty());
        assert!(c
            .acknowledge(99, &1, "unknown id", AckStats::default())
            .is_empty());
        assert!(
            c.finalized(a, Ok("/x".into()), ms(t0, 120)).is_empty(),
            "not all acked yet"
        );
        let out = c.acknowledge(a, &1, "a1", AckStats::default());
        assert!(matches!(out.as_slice(), [Action::Finalize { acks, .. }] if acks == &["a0", "a1"]));
    }
}
