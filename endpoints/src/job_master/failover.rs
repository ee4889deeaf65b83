//! Failover: what a failure restarts, whether the job restarts at all, and what the job
//! reports as its failures.
//!
//! # Causes
//!
//! A failure arrives as a typed [`FailureCause`]: a task that failed (with what its
//! TaskExecutor or the JobMaster said, [`TaskError`]), a lost TaskExecutor (heartbeat
//! timeout, death-watch, or the TaskExecutor saying so), or too many failed checkpoints.
//! Its `Display` is the text users see in the job's failure and history.
//!
//! A *knock-on* failure ([`TaskError::KnockOn`]) is only the consequence of another one:
//! a consumer whose producer's result partition was released, or is not registered any
//! more, because the producer failed or was canceled. The TaskExecutor says so with the
//! failure ([`crate::messages::TaskExecutionStateUpdate::knock_on`]). The root cause,
//! when it arrives, replaces a knock-on cause as the job's reported failure and in the
//! history's newest entry.
//!
//! # Decisions
//!
//! [`Failover::on_failure`] decides, given the job's status and the vertices already
//! waiting to be redeployed:
//!
//! - the job is being cancelled, or failing: nothing restarts (a root cause replaces a
//!   knock-on cause of a failing job, with "not restarted" and the strategy);
//! - the failure restarts the pipelined region of each failed vertex — a connected
//!   component of the job graph (`jobmanager.execution.failover-strategy: region`) — or
//!   every vertex (`full`); checkpoint failures restart every vertex either way;
//! - while restarting, a failure within the vertices already waiting to be redeployed is
//!   part of the same restart (typically the canceled tasks of the region): it is not
//!   recorded and does not count against the restart strategy;
//! - otherwise the restart strategy ([`crate::restart`]), asked with the injected `now`,
//!   grants a delay (restart) or not (the job fails with the cause, "not restarted" and
//!   the strategy).
//!
//! Every decided failure enters a short history ([`JobFailure`], at most
//! [`MAX_FAILURE_HISTORY`]) with what followed it, so that a client following the job
//! (`rill run`) can say why each restart happened as it happens.
//!
//! Failover is a plain value: no RPC, no clock (`now` and timestamps are passed in).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rill_dataflow::{DataflowError, JobGraph, VertexId};
use rill_network::NetworkError;
use rill_runtime::ResourceId;

use crate::config::FailoverStrategy;
use crate::messages::{FailureOutcome, JobFailure, JobStatus, MAX_FAILURE_HISTORY};
use crate::restart::RestartStrategy;

/// A subtask as users see it: `'name' (k/parallelism)`, `k` from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TaskName {
    /// Its vertex.
    pub(super) vertex: VertexId,
    /// Its subtask index (from 0).
    pub(super) subtask: u32,
    /// The vertex's name (`?` for a vertex the job does not have).
    pub(super) name: String,
    /// The vertex's parallelism.
    pub(super) parallelism: u32,
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, k, p) = (&self.name, self.subtask + 1, self.parallelism);
        write!(f, "'{name}' ({k}/{p})")
    }
}

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TaskError {
    /// The task's own error, as its TaskExecutor reported it.
    Failed(String),
    /// The task's error is the consequence of another failure: a producer's partition
    /// it reads was released or is gone (see the module docs). The text is the task's
    /// error or, for a deployment, `deployment failed: …`.
    KnockOn(String),
    /// The TaskExecutor reported the task canceled, but nobody canceled it.
    CanceledUnexpectedly,
    /// The TaskExecutor refused the deployment, or could not be asked.
    DeploymentFailed(String),
    /// The JobMaster could not build the deployment (a producer or TaskExecutor missing).
    CannotDeploy(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(e) | TaskError::KnockOn(e) => f.write_str(e),
            TaskError::CanceledUnexpectedly => f.write_str("canceled unexpectedly"),
            TaskError::DeploymentFailed(e) => write!(f, "deployment failed: {e}"),
            TaskError::CannotDeploy(e) => write!(f, "cannot deploy: {e}"),
        }
    }
}

/// Why the job failed over (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FailureCause {
    /// One task failed.
    Task {
        /// The task.
        task: TaskName,
        /// Why.
        error: TaskError,
    },
    /// A TaskExecutor was lost with the tasks of `vertices` on it.
    TaskExecutorLost {
        /// The TaskExecutor.
        task_executor: ResourceId,
        /// Its host, for the message.
        host: String,
        /// How it was lost (heartbeat timeout, death-watch, disconnect).
        reason: String,
        /// Vertices of the executions that failed with it.
        vertices: Vec<VertexId>,
    },
    /// More consecutive checkpoints failed than `tolerable-failed-checkpoints` allows.
    CheckpointToleranceExceeded {
        /// The checkpoint coordinator's text.
        reason: String,
    },
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Task { task, error } => write!(f, "task {task} failed: {error}"),
            FailureCause::TaskExecutorLost {
                task_executor,
                host,
                reason,
                ..
            } => write!(f, "TaskExecutor {task_executor} ({host}) lost: {reason}"),
            FailureCause::CheckpointToleranceExceeded { reason } => f.write_str(reason),
        }
    }
}

impl FailureCause {
    /// Whether the cause is only the consequence of another failure.
    pub(super) fn is_knock_on(&self) -> bool {
        matches!(
            self,
            FailureCause::Task {
                error: TaskError::KnockOn(_),
                ..
            }
        )
    }

    /// The vertices that failed; `None` for the whole job.
    fn failed_vertices(&self) -> Option<Vec<VertexId>> {
        match self {
            FailureCause::Task { task, .. } => Some(vec![task.vertex]),
            FailureCause::TaskExecutorLost { vertices, .. } => Some(vertices.clone()),
            FailureCause::CheckpointToleranceExceeded { .. } => None,
        }
    }
}

/// Whether a task's error is a knock-on failure: reading a producer's partition that
/// was released or is not registered (any more).
///
/// Two of the cases arrive as text only: the dataflow crate turns a released partition
/// into [`DataflowError::ChannelClosed`] with the network error's text, and a remote
/// producer's error reaches the consumer as [`NetworkError::Remote`] with the producer's
/// error kind and text in one message.
pub(crate) fn is_knock_on_error(e: &DataflowError) -> bool {
    match e {
        DataflowError::Network { source, .. } => match source {
            NetworkError::PartitionNotFound { .. } | NetworkError::PartitionReleased { .. } => true,
            NetworkError::Remote { message } => is_partition_gone(message),
            _ => false,
        },
        DataflowError::ChannelClosed(message) => message.ends_with("was released"),
        _ => false,
    }
}

/// Whether a task's deployment failed as a knock-on: the TaskExecutor refused it because
/// setting up a local input channel found its producer's partition released or gone.
/// The refusal arrives as text ([`crate::messages::ClusterError::Rejected`]).
pub(super) fn is_knock_on_refusal(message: &str) -> bool {
    is_partition_gone(message)
}

/// The texts of [`NetworkError::PartitionReleased`] and
/// [`NetworkError::PartitionNotFound`] within a message.
fn is_partition_gone(message: &str) -> bool {
    message.contains("was released")
        || (message.contains("result partition") && message.contains("not found"))
}

/// What to do about a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// The job is terminal already: nothing.
    Ignore,
    /// Nothing restarts anew; the JobMaster checks whether the job completes (or can
    /// be scheduled, when restarting).
    CheckCompletion,
    /// Cancel `vertices` and deploy them again after `delay`.
    Restart {
        /// The vertices to restart.
        vertices: BTreeSet<VertexId>,
        /// The restart strategy's delay.
        delay: Duration,
    },
    /// Fail the job ([`Failover::failure`] says why).
    Fail,
}

/// The job's failure, as reported.
struct ReportedFailure {
    text: String,
    knock_on: bool,
}

/// Failover decisions and the failure history of one job (see the module docs).
pub(super) struct Failover {
    strategy: FailoverStrategy,
    /// The pipelined region of each vertex.
    region_of: BTreeMap<VertexId, usize>,
    restart: RestartStrategy,
    /// Restarts so far.
    restarts: u32,
    failure: Option<ReportedFailure>,
    /// The last failures, oldest first, at most [`MAX_FAILURE_HISTORY`].
    history: VecDeque<JobFailure>,
    /// Whether the newest history entry's cause is a knock-on.
    newest_knock_on: bool,
    /// Failures recorded so far (numbers the history entries).
    count: u32,
}

impl Failover {
    /// Failover for `job` with `strategy` and the restart strategy `restart`.
    pub(super) fn new(
        job: &JobGraph,
        strategy: FailoverStrategy,
        restart: RestartStrategy,
    ) -> Self {
        Failover {
            strategy,
            region_of: regions(job),
            restart,
            restarts: 0,
            failure: None,
            history: VecDeque::new(),
            newest_knock_on: false,
            count: 0,
        }
    }

    /// Restarts so far.
    pub(super) fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The job's failure: the cause of the last restart, or why the job fails.
    pub(super) fn failure(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.text.as_str())
    }

    /// The history, oldest first.
    pub(super) fn history(&self) -> impl Iterator<Item = &JobFailure> {
        self.history.iter()
    }

    /// The vertices a failure of `cause` restarts.
    pub(super) fn affected(&self, cause: &FailureCause) -> BTreeSet<VertexId> {
        let failed = match (self.strategy, cause.failed_vertices()) {
            (FailoverStrategy::Full, _) | (_, None) => {
                return self.region_of.keys().copied().collect()
            }
            (FailoverStrategy::Region, Some(failed)) => failed,
        };
        let regions: BTreeSet<usize> = failed
            .iter()
            .filter_map(|v| self.region_of.get(v))
            .copied()
            .collect();
        self.region_of
            .iter()
            .filter(|(_, r)| regions.contains(r))
            .map(|(v, _)| *v)
            .collect()
    }

    /// Decides about `cause` (see the module docs); `restarting` are the vertices
    /// waiting to be redeployed, `now` is for the restart strategy, `timestamp_ms`
    /// (since the Unix epoch) for the history.
    pub(super) fn on_failure(
        &mut self,
        cause: &FailureCause,
        status: JobStatus,
        restarting: &BTreeSet<VertexId>,
        now: Instant,
        timestamp_ms: u64,
    ) -> Decision {
        match status {
            JobStatus::Cancelling => return Decision::CheckCompletion,
            JobStatus::Failing => {
                let text = format!("{cause}; not restarted: {}", self.restart.describe());
                self.replace_knock_on(cause, text);
                return Decision::CheckCompletion;
            }
            s if s.is_terminal() => return Decision::Ignore,
            _ => {}
        }
        let affected = self.affected(cause);
        if status == JobStatus::Restarting && affected.is_subset(restarting) {
            self.replace_knock_on(cause, cause.to_string());
            return Decision::CheckCompletion;
        }
        match self.restart.on_failure(now) {
            None => {
                let strategy = self.restart.describe();
                let text = format!("{cause}; not restarted: {strategy}");
                self.record(cause, FailureOutcome::NoRestart { strategy }, timestamp_ms);
                self.failure = Some(ReportedFailure {
                    text,
                    knock_on: cause.is_knock_on(),
                });
                Decision::Fail
            }
            Some(delay) => {
                let outcome = FailureOutcome::Restarting {
                    restart: self.restarts + 1,
                    delay_ms: delay.as_millis() as u64,
                };
                self.record(cause, outcome, timestamp_ms);
                self.failure = Some(ReportedFailure {
                    text: cause.to_string(),
                    knock_on: cause.is_knock_on(),
                });
                self.restarts += 1;
                Decision::Restart {
                    vertices: affected,
                    delay,
                }
            }
        }
    }

    /// Fails the job with `cause` without asking the restart strategy (the cluster
    /// cannot run it: too few slots, collect results over `collect.max-bytes`, …).
    pub(super) fn fail(&mut self, cause: String, timestamp_ms: u64) {
        self.push(
            cause.clone(),
            false,
            FailureOutcome::JobFailed,
            timestamp_ms,
        );
        self.failure = Some(ReportedFailure {
            text: cause,
            knock_on: false,
        });
    }

    fn record(&mut self, cause: &FailureCause, outcome: FailureOutcome, timestamp_ms: u64) {
        self.push(
            cause.to_string(),
            cause.is_knock_on(),
            outcome,
            timestamp_ms,
        );
    }

    /// Adds a failure to the history, dropping the oldest beyond [`MAX_FAILURE_HISTORY`].
    fn push(&mut self, cause: String, knock_on: bool, outcome: FailureOutcome, timestamp_ms: u64) {
        self.count += 1;
        if self.history.len() == MAX_FAILURE_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(JobFailure {
            number: self.count,
            timestamp_ms,
            cause,
            outcome,
        });
        self.newest_knock_on = knock_on;
    }

    /// A root cause `cause` arrived after a knock-on failure was reported: the job's
    /// failure becomes `failure`, and the history's newest entry says the root cause
    /// (if it is the knock-on one).
    fn replace_knock_on(&mut self, cause: &FailureCause, failure: String) {
        let reported_knock_on = self.failure.as_ref().is_some_and(|f| f.knock_on);
        if !reported_knock_on || cause.is_knock_on() {
            return;
        }
        if self.newest_knock_on {
            if let Some(newest) = self.history.back_mut() {
                newest.cause = cause.to_string();
                self.newest_knock_on = false;
            }
        }
        self.failure = Some(ReportedFailure {
            text: failure,
            knock_on: false,
        });
    }
}

/// The connected components of the job graph, as a region index per vertex.
fn regions(job: &JobGraph) -> BTreeMap<VertexId, usize> {
    let n = job.vertices.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for e in &job.edges {
        let (a, b) = (e.source.0 as usize, e.target.0 as usize);
        // `JobMaster::new` rejects edges naming missing vertices; skip them regardless.
        if a >= n || b >= n {
            continue;
        }
        let (a, b) = (find(&mut parent, a), find(&mut parent, b));
        parent[a] = b;
    }
    job.vertices
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id, find(&mut parent, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        FailureRateConfig, FixedDelayConfig, RestartStrategyConfig, RestartStrategyType,
    };
    use rill_network::PartitionId;

    /// Two regions: source 0 → sink 1, source 2 → sink 3.
    fn two_regions() -> JobGraph {
        super::super::test_job(2, 2)
    }

    fn fixed_delay(attempts: u32) -> RestartStrategy {
        let c = RestartStrategyConfig {
            kind: Some(RestartStrategyType::FixedDelay),
            fixed_delay: FixedDelayConfig {
                attempts,
                delay: Duration::from_secs(1),
            },
            ..RestartStrategyConfig::default()
        };
        RestartStrategy::new(&c, false, 1)
    }

    fn task(job: &JobGraph, vertex: usize, error: TaskError) -> FailureCause {
        let v = &job.vertices[vertex];
        FailureCause::Task {
            task: TaskName {
                vertex: v.id,
                subtask: 0,
                name: v.name.clone(),
                parallelism: v.parallelism,
            },
            error,
        }
    }

    fn ids(job: &JobGraph, indices: &[usize]) -> BTreeSet<VertexId> {
        indices.iter().map(|i| job.vertices[*i].id).collect()
    }

    #[test]
    fn regions_are_connected_components() {
        let job = two_regions();
        let r = regions(&job);
        let distinct: BTreeSet<usize> = r.values().copied().collect();
        assert_eq!(distinct.len(), 2, "{r:?}");
    }

    #[test]
    fn region_failover_restarts_the_failed_region_and_full_everything() {
        let job = two_regions();
        let (src, sink) = (&job.vertices[0], &job.vertices[1]);
        let (src_id, sink_id) = (src.id, sink.id);
        let region = Failover::new(&job, FailoverStrategy::Region, fixed_delay(1));
        let full = Failover::new(&job, FailoverStrategy::Full, fixed_delay(1));
        let failed = task(&job, 1, TaskError::Failed("boom".into()));
        assert_eq!(region.affected(&failed), [src_id, sink_id].into());
        assert_eq!(full.affected(&failed), ids(&job, &[0, 1, 2, 3]));
        let lost = FailureCause::TaskExecutorLost {
            task_executor: ResourceId::new("te"),
            host: "h".into(),
            reason: "gone".into(),
            vertices: vec![sink_id, job.vertices[2].id],
        };
        assert_eq!(region.affected(&lost), ids(&job, &[0, 1, 2, 3]));
        let checkpoints = FailureCause::CheckpointToleranceExceeded {
            reason: "too many".into(),
        };
        assert_eq!(region.affected(&checkpoints), ids(&job, &[0, 1, 2, 3]));
    }

    #[test]
    fn causes_print_the_texts_users_see() {
        let job = two_regions();
        let name = &job.vertices[1].name;
        let cases = [
            (
                TaskError::Failed("no such file".into()),
                "no such file".to_owned(),
            ),
            (
                TaskError::CanceledUnexpectedly,
                "canceled unexpectedly".into(),
            ),
            (
                TaskError::DeploymentFailed("x".into()),
                "deployment failed: x".into(),
            ),
            (
                TaskError::CannotDeploy("y".into()),
                "cannot deploy: y".into(),
            ),
        ];
        for (error, text) in cases {
            let cause = task(&job, 1, error);
            assert_eq!(
                cause.to_string(),
                format!("task '{name}' (1/2) failed: {text}")
            );
        }
        let lost = FailureCause::TaskExecutorLost {
            task_executor: ResourceId::new("te-1"),
            host: "127.0.0.1".into(),
            reason: "heartbeat timeout".into(),
            vertices: Vec::new(),
        };
        assert_eq!(
            lost.to_string(),
            "TaskExecutor te-1 (127.0.0.1) lost: heartbeat timeout"
        );
    }

    #[test]
    fn knock_on_errors_are_classified_by_kind() {
        let p = PartitionId(7);
        let network = |source| DataflowError::Network {
            context: "reading the input gate".into(),
            source,
        };
        let remote = |message: &str| NetworkError::Remote {
            message: message.into(),
        };
        let knock_on = [
            network(NetworkError::PartitionNotFound { partition: p }),
            network(NetworkError::PartitionReleased { partition: p }),
            DataflowError::network("reading", NetworkError::PartitionReleased { partition: p }),
            network(remote(&format!(
                "PartitionFailed: result partition {p} was released"
            ))),
        ];
        for e in &knock_on {
            assert!(is_knock_on_error(e), "{e}");
        }
        let root = [
            DataflowError::Operator {
                operator: "map".into(),
                message: "boom".into(),
            },
            DataflowError::ChannelClosed("input gate finished while a task was reading it".into()),
            network(NetworkError::Closed { what: "gate" }),
            network(remote("ProtocolViolation: credit violation: zero credit")),
        ];
        for e in &root {
            assert!(!is_knock_on_error(e), "{e}");
        }
        assert!(is_knock_on_refusal(&format!(
            "cannot set up the task's I/O: network error while adding input channel 0: result partition {p} not found"
        )));
        assert!(!is_knock_on_refusal(
            "cannot create the task: unknown operator `x`"
        ));
    }

    #[test]
    fn restarts_until_the_strategy_says_no() {
        let job = two_regions();
        let mut f = Failover::new(&job, FailoverStrategy::Region, fixed_delay(1));
        let t0 = Instant::now();
        let cause = task(&job, 0, TaskError::Failed("boom".into()));
        let none = BTreeSet::new();
        let d = f.on_failure(&cause, JobStatus::Running, &none, t0, 1);
        let vertices = ids(&job, &[0, 1]);
        let restart = Decision::Restart {
            vertices: vertices.clone(),
            delay: Duration::from_secs(1),
        };
        assert_eq!(d, restart);
        assert_eq!(
            (f.restarts(), f.failure()),
            (1, Some(cause.to_string().as_str()))
        );
        // The region's own canceled tasks while restarting: part of the same restart.
        let canceled = task(&job, 1, TaskError::CanceledUnexpectedly);
        let d = f.on_failure(&canceled, JobStatus::Restarting, &vertices, t0, 2);
        assert_eq!(d, Decision::CheckCompletion);
        assert_eq!(f.history().count(), 1);
        // The other region fails while restarting: the strategy is asked (and refuses).
        let other = task(&job, 2, TaskError::Failed("again".into()));
        let d = f.on_failure(&other, JobStatus::Restarting, &vertices, t0, 3);
        assert_eq!(d, Decision::Fail);
        let expected =
            format!("{other}; not restarted: restart-strategy fixed-delay (attempts=1, delay=1s)");
        assert_eq!(f.failure(), Some(expected.as_str()));
        let outcomes: Vec<_> = f.history().map(|h| (h.number, h.timestamp_ms)).collect();
        assert_eq!(outcomes, vec![(1, 1), (2, 3)]);
        assert!(matches!(
            f.history().last().map(|h| &h.outcome),
            Some(FailureOutcome::NoRestart { .. })
        ));
        // Failing, cancelling, terminal: no new decision.
        let later = task(&job, 0, TaskError::Failed("late".into()));
        assert_eq!(
            f.on_failure(&later, JobStatus::Failing, &none, t0, 4),
            Decision::CheckCompletion
        );
        assert_eq!(
            f.on_failure(&later, JobStatus::Cancelling, &none, t0, 4),
            Decision::CheckCompletion
        );
        assert_eq!(
            f.on_failure(&later, JobStatus::Failed, &none, t0, 4),
            Decision::Ignore
        );
        assert_eq!(f.history().count(), 2);
    }

    #[test]
    fn failure_rate_restarts_depend_on_the_injected_time() {
        let job = two_regions();
        let c = RestartStrategyConfig {
            kind: Some(RestartStrategyType::FailureRate),
            failure_rate: FailureRateConfig {
                max_failures_per_interval: 1,
                failure_rate_interval: Duration::from_secs(60),
                ..FailureRateConfig::default()
            },
            ..RestartStrategyConfig::default()
        };
        let strategy = RestartStrategy::new(&c, false, 1);
        let mut f = Failover::new(&job, FailoverStrategy::Full, strategy);
        let cause = task(&job, 0, TaskError::Failed("boom".into()));
        let t0 = Instant::now();
        let none = BTreeSet::new();
        let mut at = |t| f.on_failure(&cause, JobStatus::Running, &none, t, 0);
        assert!(matches!(at(t0), Decision::Restart { .. }));
        // A minute later the first failure is out of the window.
        let t1 = t0 + Duration::from_secs(60);
        assert!(matches!(at(t1), Decision::Restart { .. }));
        assert_eq!(at(t1 + Duration::from_secs(1)), Decision::Fail);
    }

    #[test]
    fn the_history_keeps_the_last_failures_with_root_causes() {
        let job = two_regions();
        let mut f = Failover::new(&job, FailoverStrategy::Region, fixed_delay(100));
        let t0 = Instant::now();
        let none = BTreeSet::new();
        for i in 1..=20 {
            let cause = task(&job, 0, TaskError::Failed(format!("cause {i}")));
            f.on_failure(&cause, JobStatus::Running, &none, t0, 0);
        }
        let numbers: Vec<u32> = f.history().map(|h| h.number).collect();
        assert_eq!(numbers, (5..=20).collect::<Vec<_>>());
        // A knock-on cause recorded first is replaced by the root cause; others stay.
        let knock_on = task(
            &job,
            1,
            TaskError::KnockOn("result partition 7 was released".into()),
        );
        let d = f.on_failure(&knock_on, JobStatus::Running, &none, t0, 0);
        let Decision::Restart { vertices, .. } = d else {
            panic!("not restarted: {d:?}")
        };
        let root = task(&job, 0, TaskError::Failed("no such file".into()));
        f.on_failure(&root, JobStatus::Restarting, &vertices, t0, 0);
        let later = task(&job, 0, TaskError::Failed("later".into()));
        f.on_failure(&later, JobStatus::Restarting, &vertices, t0, 0);
        let newest = f.history().last().cloned().unwrap();
        assert_eq!(newest.number, 21);
        assert_eq!(newest.cause, root.to_string());
        assert_eq!(f.failure(), Some(root.to_string().as_str()));
        // A failing job's knock-on failure is replaced with "not restarted".
        let mut f = Failover::new(&job, FailoverStrategy::Region, fixed_delay(0));
        assert_eq!(
            f.on_failure(&knock_on, JobStatus::Running, &none, t0, 0),
            Decision::Fail
        );
        f.on_failure(&root, JobStatus::Failing, &none, t0, 0);
        let expected =
            format!("{root}; not restarted: restart-strategy fixed-delay (attempts=0, delay=1s)");
        assert_eq!(f.failure(), Some(expected.as_str()));
        assert_eq!(
            f.history().last().map(|h| h.cause.clone()),
            Some(root.to_string())
        );
        // A job failed without restart keeps its cause.
        let mut f = Failover::new(&job, FailoverStrategy::Region, fixed_delay(0));
        f.fail("too few slots".into(), 5);
        f.on_failure(&root, JobStatus::Failing, &none, t0, 0);
        assert_eq!(f.failure(), Some("too few slots"));
        assert_eq!(
            f.history().last().map(|h| h.outcome.clone()),
            Some(FailureOutcome::JobFailed)
        );
    }
}
