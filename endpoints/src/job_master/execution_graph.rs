//! The execution graph: one current execution attempt per subtask `(vertex, index)`, the
//! index from attempt ids to subtasks, and the execution state machine.
//!
//! # Attempts
//!
//! A deployment creates a new attempt for each subtask it deploys
//! ([`ExecutionGraph::new_attempt`]): a fresh [`ExecutionAttemptId`], the attempt number
//! one above the previous attempt's (0 for the first), one result partition per output
//! edge. The new attempt supersedes the old one: the old id leaves the index, so messages
//! a TaskExecutor still sends about it name nothing and are ignored.
//!
//! # States
//!
//! Every state change goes through [`transition`], one `match` over (state, event):
//!
//! ```text
//! CREATED --Schedule--> SCHEDULED --Deploy--> DEPLOYING --Initializing--> INITIALIZING
//!    DEPLOYING | INITIALIZING --Running--> RUNNING
//!    DEPLOYING | INITIALIZING | RUNNING --Finished--> FINISHED
//!    any non-terminal --Fail | reported Failed--> FAILED                       (failover)
//!    DEPLOYING | INITIALIZING | RUNNING --reported Canceled--> FAILED  (canceled unexpectedly)
//!    CREATED | SCHEDULED --Cancel--> CANCELED
//!    any other non-terminal --Cancel--> CANCELING (send cancel_task), or CANCELED when
//!                                        its TaskExecutor is gone
//!    CANCELING --reported Canceled | CancelTimedOut--> CANCELED
//!    CANCELING --reported Running--> CANCELING (cancel again: the cancel overtook the
//!                                               deployment and found no task)
//!    CANCELING --reported Finished--> FINISHED
//! ```
//!
//! Anything else — an event for a terminal execution, a state a TaskExecutor never
//! reports (`CREATED`, `SCHEDULED`, `DEPLOYING`, `CANCELING`), a state reported twice or
//! out of order — is an [`IllegalTransition`]: the JobMaster logs it and ignores it.
//!
//! The graph is a plain value: no RPC, no clock; ids and partitions of new attempts are
//! passed in.

use std::collections::BTreeMap;

use rill_dataflow::VertexId;
use rill_network::PartitionId;
use rill_runtime::ResourceId;

use crate::messages::{AllocationId, ExecutionAttemptId, ExecutionState, TaskIoCounters};

/// A subtask: its vertex and subtask index.
pub(super) type Subtask = (VertexId, u32);

/// One execution attempt of a subtask.
pub(super) struct Execution {
    /// The attempt's id.
    pub(super) id: ExecutionAttemptId,
    /// 0 for the first attempt, one more for each restart.
    pub(super) attempt: u32,
    /// Changed only by [`transition`].
    state: ExecutionState,
    /// The slot it runs in.
    pub(super) allocation: Option<AllocationId>,
    /// The TaskExecutor it runs on.
    pub(super) task_executor: Option<ResourceId>,
    /// Its result partitions, one per output edge.
    pub(super) partitions: Vec<PartitionId>,
    /// Its counters, as last reported.
    pub(super) counters: TaskIoCounters,
}

impl Execution {
    /// The attempt's current state.
    pub(super) fn state(&self) -> ExecutionState {
        self.state
    }
}

/// What happens to an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExecutionEvent {
    /// A slot was assigned to it.
    Schedule,
    /// Its deployment descriptor is sent.
    Deploy,
    /// Its TaskExecutor reported this state.
    Reported(ExecutionState),
    /// The JobMaster cancels it; `reachable`: its TaskExecutor is registered, so a
    /// `cancel_task` can be sent.
    Cancel {
        /// Whether a `cancel_task` can be sent.
        reachable: bool,
    },
    /// Its cancellation was not confirmed within the ask timeout.
    CancelTimedOut,
    /// It failed on the JobMaster's side (lost TaskExecutor, failed deployment).
    Fail,
}

/// What the JobMaster owes after a transition, beside the state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExecutionEffect {
    /// Nothing beyond the state change.
    None,
    /// Send `cancel_task` to its TaskExecutor.
    SendCancel,
    /// It failed: the failover part decides what follows.
    Failover {
        /// The TaskExecutor reported `CANCELED` for a task nobody canceled.
        unexpected_cancel: bool,
    },
}

/// A legal transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// The state after it (may equal the state before).
    pub(super) to: ExecutionState,
    /// What the JobMaster owes.
    pub(super) effect: ExecutionEffect,
}

/// An event that the execution state machine rejects (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal execution state transition: {event:?} in state {from}")]
pub(super) struct IllegalTransition {
    /// The state the execution was in.
    pub(super) from: ExecutionState,
    /// The rejected event.
    pub(super) event: ExecutionEvent,
}

/// Why an event for an attempt was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ExecutionError {
    /// The id names no current attempt (typically one a restart superseded).
    #[error("execution attempt {0} is unknown or superseded")]
    Unknown(ExecutionAttemptId),
    /// The subtask has no execution (it was never deployed).
    #[error("subtask {1} of vertex {0} has no execution")]
    NoExecution(VertexId, u32),
    /// The state machine rejects the event.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
}

/// The execution state machine: every legal `(from, event)` pair and its outcome.
pub(super) fn transition(
    from: ExecutionState,
    event: ExecutionEvent,
) -> Result<Step, IllegalTransition> {
    use ExecutionEffect as X;
    use ExecutionEvent as E;
    use ExecutionState as S;
    let step = |to, effect| Ok(Step { to, effect });
    let failover = |unexpected_cancel| X::Failover { unexpected_cancel };
    match (from, event) {
        (S::Finished | S::Canceled | S::Failed, _) => Err(IllegalTransition { from, event }),
        (S::Created, E::Schedule) => step(S::Scheduled, X::None),
        (S::Scheduled, E::Deploy) => step(S::Deploying, X::None),
        (S::Deploying, E::Reported(S::Initializing)) => step(S::Initializing, X::None),
        (S::Deploying | S::Initializing, E::Reported(S::Running)) => step(S::Running, X::None),
        (S::Deploying | S::Initializing | S::Running | S::Canceling, E::Reported(S::Finished)) => {
            step(S::Finished, X::None)
        }
        (_, E::Reported(S::Failed) | E::Fail) => step(S::Failed, failover(false)),
        (S::Canceling, E::Reported(S::Canceled) | E::CancelTimedOut) => step(S::Canceled, X::None),
        (S::Deploying | S::Initializing | S::Running, E::Reported(S::Canceled)) => {
            step(S::Failed, failover(true))
        }
        (S::Canceling, E::Reported(S::Running)) => step(S::Canceling, X::SendCancel),
        (S::Created | S::Scheduled, E::Cancel { .. }) => step(S::Canceled, X::None),
        (_, E::Cancel { reachable: false }) => step(S::Canceled, X::None),
        (_, E::Cancel { reachable: true }) => step(S::Canceling, X::SendCancel),
        _ => Err(IllegalTransition { from, event }),
    }
}

/// The job's executions (see the module docs).
pub(super) struct ExecutionGraph {
    executions: BTreeMap<Subtask, Execution>,
    /// The current attempt of each subtask by id.
    by_id: BTreeMap<ExecutionAttemptId, Subtask>,
    /// Subtasks of the job, over all vertices.
    total_subtasks: u64,
}

impl ExecutionGraph {
    /// An empty graph for a job of `total_subtasks` subtasks.
    pub(super) fn new(total_subtasks: u64) -> Self {
        ExecutionGraph {
            executions: BTreeMap::new(),
            by_id: BTreeMap::new(),
            total_subtasks,
        }
    }

    /// Subtasks of the job, over all vertices.
    pub(super) fn total_subtasks(&self) -> u64 {
        self.total_subtasks
    }

    /// Every current execution, in subtask order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Subtask, &Execution)> {
        self.executions.iter()
    }

    /// The current execution of `subtask`.
    pub(super) fn get(&self, subtask: Subtask) -> Option<&Execution> {
        self.executions.get(&subtask)
    }

    /// The subtask whose current attempt is `id`.
    pub(super) fn subtask_of(&self, id: ExecutionAttemptId) -> Option<Subtask> {
        self.by_id.get(&id).copied()
    }

    /// The current execution of attempt `id`, with its subtask.
    pub(super) fn current(&self, id: ExecutionAttemptId) -> Option<(Subtask, &Execution)> {
        let key = self.subtask_of(id)?;
        self.executions.get(&key).map(|e| (key, e))
    }

    /// Whether `subtask` had an attempt before.
    pub(super) fn has_attempt(&self, subtask: Subtask) -> bool {
        self.executions.contains_key(&subtask)
    }

    /// Creates the next attempt of `subtask` with id `id`, scheduled into `allocation` on
    /// `te` and deploying; returns the id of the attempt it supersedes.
    pub(super) fn new_attempt(
        &mut self,
        subtask: Subtask,
        id: ExecutionAttemptId,
        allocation: AllocationId,
        te: ResourceId,
        partitions: Vec<PartitionId>,
    ) -> Option<ExecutionAttemptId> {
        let old = self.executions.get(&subtask);
        let attempt = old.map_or(0, |e| e.attempt + 1);
        let superseded = old.map(|e| e.id);
        if let Some(old) = superseded {
            self.by_id.remove(&old);
        }
        let mut e = Execution {
            id,
            attempt,
            state: ExecutionState::Created,
            allocation: Some(allocation),
            task_executor: Some(te),
            partitions,
            counters: TaskIoCounters::default(),
        };
        for event in [ExecutionEvent::Schedule, ExecutionEvent::Deploy] {
            // Created → Scheduled → Deploying: both legal by the table.
            if let Ok(step) = transition(e.state, event) {
                e.state = step.to;
            }
        }
        self.by_id.insert(id, subtask);
        self.executions.insert(subtask, e);
        superseded
    }

    /// Applies `event` to the current execution of `subtask`.
    pub(super) fn apply(
        &mut self,
        subtask: Subtask,
        event: ExecutionEvent,
    ) -> Result<Step, ExecutionError> {
        let e = self
            .executions
            .get_mut(&subtask)
            .ok_or(ExecutionError::NoExecution(subtask.0, subtask.1))?;
        let step = transition(e.state, event)?;
        e.state = step.to;
        Ok(step)
    }

    /// Applies `event` to the current attempt `id`.
    pub(super) fn apply_to(
        &mut self,
        id: ExecutionAttemptId,
        event: ExecutionEvent,
    ) -> Result<(Subtask, Step), ExecutionError> {
        let subtask = self.subtask_of(id).ok_or(ExecutionError::Unknown(id))?;
        self.apply(subtask, event).map(|step| (subtask, step))
    }

    /// Records the counters of attempt `id`; `false` if it is not current.
    pub(super) fn set_counters(
        &mut self,
        id: ExecutionAttemptId,
        counters: TaskIoCounters,
    ) -> bool {
        let Some(subtask) = self.subtask_of(id) else {
            return false;
        };
        match self.executions.get_mut(&subtask) {
            Some(e) => {
                e.counters = counters;
                true
            }
            None => false,
        }
    }

    /// The non-terminal executions matching `filter`, in subtask order.
    pub(super) fn active(
        &self,
        mut filter: impl FnMut(Subtask, &Execution) -> bool,
    ) -> Vec<Subtask> {
        self.executions
            .iter()
            .filter(|(k, e)| !e.state.is_terminal() && filter(**k, e))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether an execution of `vertex` is underway (neither terminal nor created).
    pub(super) fn is_busy(&self, vertex: VertexId) -> bool {
        self.executions
            .range((vertex, 0)..=(vertex, u32::MAX))
            .any(|(_, e)| !e.state.is_terminal() && e.state != ExecutionState::Created)
    }

    /// Whether every execution is terminal (vacuously true before the first deployment).
    pub(super) fn all_terminal(&self) -> bool {
        self.executions.values().all(|e| e.state.is_terminal())
    }

    /// Whether every subtask of the job has an execution in `state`.
    fn all_in(&self, state: ExecutionState) -> bool {
        self.executions.len() as u64 == self.total_subtasks
            && self.executions.values().all(|e| e.state == state)
    }

    /// Whether every subtask of the job has finished.
    pub(super) fn all_finished(&self) -> bool {
        self.all_in(ExecutionState::Finished)
    }

    /// Whether every subtask of the job is running.
    pub(super) fn all_running(&self) -> bool {
        self.all_in(ExecutionState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExecutionEffect as X;
    use ExecutionEvent as E;
    use ExecutionState as S;

    const ALL: [ExecutionState; 9] = [
        S::Created,
        S::Scheduled,
        S::Deploying,
        S::Initializing,
        S::Running,
        S::Finished,
        S::Canceling,
        S::Canceled,
        S::Failed,
    ];

    fn ok(to: ExecutionState, effect: ExecutionEffect) -> Result<Step, IllegalTransition> {
        Ok(Step { to, effect })
    }

    #[test]
    fn every_legal_transition() {
        let failover = X::Failover {
            unexpected_cancel: false,
        };
        let unexpected = X::Failover {
            unexpected_cancel: true,
        };
        let (r, cancel) = (E::Reported, |reachable| E::Cancel { reachable });
        let cases = [
            (S::Created, E::Schedule, S::Scheduled, X::None),
            (S::Scheduled, E::Deploy, S::Deploying, X::None),
            (S::Deploying, r(S::Initializing), S::Initializing, X::None),
            (S::Deploying, r(S::Running), S::Running, X::None),
            (S::Initializing, r(S::Running), S::Running, X::None),
            (S::Deploying, r(S::Finished), S::Finished, X::None),
            (S::Initializing, r(S::Finished), S::Finished, X::None),
            (S::Running, r(S::Finished), S::Finished, X::None),
            (S::Canceling, r(S::Finished), S::Finished, X::None),
            (S::Canceling, r(S::Canceled), S::Canceled, X::None),
            (S::Canceling, E::CancelTimedOut, S::Canceled, X::None),
            (S::Canceling, r(S::Running), S::Canceling, X::SendCancel),
            (S::Running, r(S::Canceled), S::Failed, unexpected),
            (S::Created, cancel(true), S::Canceled, X::None),
            (S::Scheduled, cancel(true), S::Canceled, X::None),
            (S::Running, cancel(false), S::Canceled, X::None),
            (S::Running, cancel(true), S::Canceling, X::SendCancel),
            (S::Canceling, cancel(true), S::Canceling, X::SendCancel),
        ];
        for (from, event, to, effect) in cases {
            assert_eq!(
                transition(from, event),
                ok(to, effect),
                "{event:?} in {from}"
            );
        }
        for from in ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert_eq!(transition(from, E::Fail), ok(S::Failed, failover), "{from}");
            let reported = transition(from, E::Reported(S::Failed));
            assert_eq!(reported, ok(S::Failed, failover), "{from}");
        }
    }

    #[test]
    fn terminal_executions_accept_nothing() {
        let events = [
            E::Schedule,
            E::Deploy,
            E::Reported(S::Running),
            E::Reported(S::Failed),
            E::Reported(S::Canceled),
            E::Cancel { reachable: true },
            E::CancelTimedOut,
            E::Fail,
        ];
        for from in [S::Finished, S::Canceled, S::Failed] {
            for event in events {
                assert_eq!(
                    transition(from, event),
                    Err(IllegalTransition { from, event }),
                    "{event:?} in {from}"
                );
            }
        }
    }

    #[test]
    fn states_a_task_executor_never_reports_and_reordered_reports_are_illegal() {
        for from in ALL.into_iter().filter(|s| !s.is_terminal()) {
            for reported in [S::Created, S::Scheduled, S::Deploying, S::Canceling] {
                assert!(
                    transition(from, E::Reported(reported)).is_err(),
                    "{reported} in {from}"
                );
            }
        }
        assert!(transition(S::Running, E::Reported(S::Initializing)).is_err());
        assert!(transition(S::Running, E::Reported(S::Running)).is_err());
        assert!(transition(S::Created, E::Reported(S::Running)).is_err());
        assert!(transition(S::Canceling, E::Reported(S::Initializing)).is_err());
        assert!(transition(S::Running, E::CancelTimedOut).is_err());
        assert!(transition(S::Created, E::Deploy).is_err());
        assert!(transition(S::Deploying, E::Schedule).is_err());
    }

    fn graph() -> (ExecutionGraph, Subtask, Subtask) {
        (ExecutionGraph::new(2), (VertexId(0), 0), (VertexId(1), 0))
    }

    fn deploy(g: &mut ExecutionGraph, subtask: Subtask, id: u128) -> Option<ExecutionAttemptId> {
        let te = ResourceId::new("te-1");
        let p = vec![PartitionId(id)];
        g.new_attempt(subtask, ExecutionAttemptId(id), AllocationId(1), te, p)
    }

    #[test]
    fn a_new_attempt_supersedes_the_old_one() {
        let (mut g, a, _) = graph();
        assert_eq!(deploy(&mut g, a, 1), None);
        let first = g.get(a).map(|e| (e.id, e.attempt, e.state()));
        assert_eq!(first, Some((ExecutionAttemptId(1), 0, S::Deploying)));
        g.apply_to(ExecutionAttemptId(1), E::Fail).unwrap();
        assert_eq!(deploy(&mut g, a, 2), Some(ExecutionAttemptId(1)));
        let second = g.get(a).map(|e| (e.id, e.attempt, e.state()));
        assert_eq!(second, Some((ExecutionAttemptId(2), 1, S::Deploying)));
        assert_eq!(g.subtask_of(ExecutionAttemptId(1)), None);
        assert_eq!(
            g.apply_to(ExecutionAttemptId(1), E::Reported(S::Running)),
            Err(ExecutionError::Unknown(ExecutionAttemptId(1)))
        );
        assert!(!g.set_counters(ExecutionAttemptId(1), TaskIoCounters::default()));
        assert!(g.set_counters(ExecutionAttemptId(2), TaskIoCounters::default()));
    }

    #[test]
    fn queries_over_all_subtasks() {
        let (mut g, a, b) = graph();
        assert!(g.all_terminal() && !g.all_running() && !g.all_finished());
        deploy(&mut g, a, 1);
        g.apply(a, E::Reported(S::Running)).unwrap();
        assert!(g.is_busy(a.0) && !g.is_busy(b.0));
        assert!(!g.all_running(), "one subtask has no execution yet");
        deploy(&mut g, b, 2);
        g.apply(b, E::Reported(S::Running)).unwrap();
        assert!(g.all_running() && !g.all_terminal());
        assert_eq!(g.active(|_, _| true), vec![a, b]);
        g.apply(a, E::Reported(S::Finished)).unwrap();
        assert_eq!(g.active(|_, _| true), vec![b]);
        g.apply(b, E::Reported(S::Finished)).unwrap();
        assert!(g.all_finished() && g.all_terminal() && !g.all_running());
    }
}
