//! Heartbeats: detecting that a peer is gone, modelled on Flink's `HeartbeatManager`.
//!
//! # Protocol
//!
//! A heartbeat relation (ResourceManager→TaskExecutor, ResourceManager→JobMaster,
//! JobMaster→TaskExecutor) has a **sender** side and a **receiver** side, one
//! [`HeartbeatManager`] each:
//!
//! 1. Every `heartbeat.interval` the sender calls
//!    [`HeartbeatTarget::request_heartbeat`]`(own_id, payload)` on every monitored target,
//!    with the payload its [`HeartbeatListener::retrieve_payload`] gives for that target.
//! 2. The receiver, on [`HeartbeatManager::request_heartbeat`], counts the request as a
//!    heartbeat from the sender, hands the sender's payload to
//!    [`HeartbeatListener::report_payload`], and answers with
//!    [`HeartbeatTarget::receive_heartbeat`]`(own_id, its payload)`.
//! 3. The sender, on [`HeartbeatManager::receive_heartbeat`], counts the answer as a
//!    heartbeat and reports the payload.
//!
//! Both sides monitor each other: each monitored target has a deadline,
//! `heartbeat.timeout` after its last heartbeat (or after monitoring began). A target
//! whose deadline passes is reported once with
//! [`HeartbeatListener::notify_heartbeat_timeout`] and forgotten. Independently, every
//! heartbeat RPC this side makes reports success or failure; `heartbeat.rpc-failure-threshold`
//! consecutive failures (zero or negative: never) report the target with
//! [`HeartbeatListener::notify_target_unreachable`] without waiting for the timeout, and
//! forget it. Only heartbeats re-arm the deadline; a successful RPC only resets the
//! failure count. Heartbeats from targets that are not monitored (never, or no longer)
//! are ignored, payload included, so a peer declared dead cannot resurrect itself by
//! beating: the owner must monitor it again (typically after it registers again).
//!
//! # Structure
//!
//! [`HeartbeatManagerCore`] is the whole protocol as a state machine with time passed in:
//! no tokio, no payloads, no I/O. [`HeartbeatManager`] is its driver: one tokio task that
//! owns the core, the targets and the listener, and takes inputs over a channel, so no
//! lock is held anywhere and never across an await. The task sleeps on `tokio::time`
//! until [`HeartbeatManagerCore::next_deadline`], so paused tokio time drives it in
//! tests. It is spawned through a [`TaskSet`] the handle owns, so it lives exactly as
//! long as the handle: [`HeartbeatManager::stop`] or dropping the handle aborts it.
//!
//! The sender side ticks every interval from its start, requesting all targets at once;
//! a newly monitored target gets its first request at the next tick.
//!
//! A heartbeat RPC that does not complete within `heartbeat.timeout` counts as failed,
//! which bounds the RPCs in flight per target to about `timeout / interval`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::clock::{Clock, TokioClock};
use crate::config::HeartbeatConfig;
use crate::error::RpcError;
use crate::ids::ResourceId;
use crate::tasks::TaskSet;

/// The side of a heartbeat relation a manager is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatRole {
    /// Requests heartbeats from its targets every interval (Flink's
    /// `HeartbeatManagerSenderImpl`), e.g. the ResourceManager towards TaskExecutors.
    Sender,
    /// Only answers requests (Flink's `HeartbeatManagerImpl`).
    Receiver,
}

/// What became of a monitored target. Each target is reported at most once per
/// [`monitor_target`](HeartbeatManagerCore::monitor_target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// No heartbeat arrived within `heartbeat.timeout`.
    Timeout(ResourceId),
    /// `heartbeat.rpc-failure-threshold` heartbeat RPCs in a row failed.
    TargetUnreachable(ResourceId),
}

/// The liveness record of one monitored target (Flink's `HeartbeatMonitorImpl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatMonitor {
    last_heartbeat: Instant,
    deadline: Instant,
    consecutive_rpc_failures: u32,
    unreachable: bool,
}

impl HeartbeatMonitor {
    /// Returns when the last heartbeat arrived, or when monitoring began if none has.
    pub fn last_heartbeat(&self) -> Instant {
        self.last_heartbeat
    }

    /// Returns when the target times out unless a heartbeat arrives first.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Returns the number of heartbeat RPCs that failed since the last success.
    pub fn consecutive_rpc_failures(&self) -> u32 {
        self.consecutive_rpc_failures
    }
}

/// The heartbeat protocol of one side of a relation, without I/O (see the module docs).
///
/// Inputs take `now`; outputs are returned: targets to send a request to
/// ([`poll_requests`](Self::poll_requests)), lost targets
/// ([`poll_timeouts`](Self::poll_timeouts)) and when to poll next
/// ([`next_deadline`](Self::next_deadline)).
#[derive(Debug, Clone)]
pub struct HeartbeatManagerCore {
    role: HeartbeatRole,
    interval: Duration,
    timeout: Duration,
    /// `None` when failure detection is disabled.
    rpc_failure_threshold: Option<u32>,
    monitors: BTreeMap<ResourceId, HeartbeatMonitor>,
    /// When the sender side next requests heartbeats; unused on the receiver side.
    next_request: Instant,
}

impl HeartbeatManagerCore {
    /// Creates a core with no targets; a sender's first requests are due at `now`.
    pub fn new(role: HeartbeatRole, config: &HeartbeatConfig, now: Instant) -> Self {
        HeartbeatManagerCore {
            role,
            interval: config.interval,
            timeout: config.timeout,
            rpc_failure_threshold: u32::try_from(config.rpc_failure_threshold)
                .ok()
                .filter(|t| *t > 0),
            monitors: BTreeMap::new(),
            next_request: now,
        }
    }

    /// Returns the side of the relation this core is on.
    pub fn role(&self) -> HeartbeatRole {
        self.role
    }

    /// Starts monitoring `id`; its deadline is `now + timeout`. Monitoring a target again
    /// starts afresh.
    pub fn monitor_target(&mut self, id: ResourceId, now: Instant) {
        self.monitors.insert(
            id,
            HeartbeatMonitor {
                last_heartbeat: now,
                deadline: now + self.timeout,
                consecutive_rpc_failures: 0,
                unreachable: false,
            },
        );
    }

    /// Stops monitoring `id`; returns whether it was monitored.
    pub fn unmonitor_target(&mut self, id: &ResourceId) -> bool {
        self.monitors.remove(id).is_some()
    }

    /// Returns the monitor of `id`, if it is monitored.
    pub fn monitor(&self, id: &ResourceId) -> Option<&HeartbeatMonitor> {
        self.monitors.get(id)
    }

    /// Returns the monitored targets in order.
    pub fn targets(&self) -> impl Iterator<Item = &ResourceId> {
        self.monitors.keys()
    }

    /// Records a heartbeat from `from` and re-arms its deadline. Returns whether `from`
    /// is monitored: only then must the owner report the payload that came with it.
    pub fn receive_heartbeat(&mut self, from: &ResourceId, now: Instant) -> bool {
        match self.monitors.get_mut(from) {
            Some(monitor) if !monitor.unreachable => {
                monitor.last_heartbeat = now;
                monitor.deadline = now + self.timeout;
                true
            }
            _ => false,
        }
    }

    /// Records a heartbeat request from `from`, which counts as a heartbeat. Returns
    /// whether `from` is monitored: only then must the owner report the payload and
    /// answer with [`HeartbeatTarget::receive_heartbeat`].
    pub fn request_heartbeat(&mut self, from: &ResourceId, now: Instant) -> bool {
        self.receive_heartbeat(from, now)
    }

    /// Records that a heartbeat RPC to `id` failed. When this makes
    /// `rpc-failure-threshold` failures in a row, the next
    /// [`poll_timeouts`](Self::poll_timeouts) reports the target unreachable.
    pub fn report_rpc_failure(&mut self, id: &ResourceId, now: Instant) {
        let Some(monitor) = self.monitors.get_mut(id) else {
            return;
        };
        monitor.consecutive_rpc_failures = monitor.consecutive_rpc_failures.saturating_add(1);
        if self
            .rpc_failure_threshold
            .is_some_and(|t| monitor.consecutive_rpc_failures >= t)
        {
            monitor.unreachable = true;
            monitor.deadline = monitor.deadline.min(now);
        }
    }

    /// Records that a heartbeat RPC to `id` succeeded: the failure count starts over.
    pub fn report_rpc_success(&mut self, id: &ResourceId) {
        if let Some(monitor) = self.monitors.get_mut(id) {
            monitor.consecutive_rpc_failures = 0;
        }
    }

    /// Returns the targets to send a heartbeat request to now: on the sender side, every
    /// monitored target once per interval; on the receiver side, none.
    pub fn poll_requests(&mut self, now: Instant) -> Vec<ResourceId> {
        if self.role == HeartbeatRole::Receiver || now < self.next_request {
            return Vec::new();
        }
        self.next_request = now + self.interval;
        self.monitors
            .iter()
            .filter(|(_, m)| !m.unreachable)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Returns the targets lost by `now`, in order, and stops monitoring them.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<HeartbeatEvent> {
        let mut events = Vec::new();
        self.monitors.retain(|id, monitor| {
            if monitor.deadline > now {
                return true;
            }
            events.push(if monitor.unreachable {
                HeartbeatEvent::TargetUnreachable(id.clone())
            } else {
                HeartbeatEvent::Timeout(id.clone())
            });
            false
        });
        events
    }

    /// Returns the earliest instant at which polling may yield something, or `None` if
    /// nothing is monitored.
    pub fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.monitors.values().map(|m| m.deadline).min()?;
        Some(match self.role {
            HeartbeatRole::Sender => deadline.min(self.next_request),
            HeartbeatRole::Receiver => deadline,
        })
    }
}

/// A monitored peer as seen by a [`HeartbeatManager`]: usually a gateway proxy.
///
/// The returned futures resolve when the call has been delivered (or failed); an error
/// counts towards `heartbeat.rpc-failure-threshold`.
pub trait HeartbeatTarget<O>: Send + Sync {
    /// Asks the peer for a heartbeat, sending ours along (sender side to receiver side).
    fn request_heartbeat(
        &self,
        from: ResourceId,
        payload: O,
    ) -> BoxFuture<'static, Result<(), RpcError>>;

    /// Delivers our heartbeat to the peer (receiver side answering a request).
    fn receive_heartbeat(
        &self,
        from: ResourceId,
        payload: O,
    ) -> BoxFuture<'static, Result<(), RpcError>>;
}

/// The owner of a [`HeartbeatManager`]: supplies outgoing payloads `O`, consumes incoming
/// payloads `I`, and learns of lost targets.
///
/// Called from the manager's task: implementations must return quickly and not block
/// (an endpoint typically forwards to its mailbox).
pub trait HeartbeatListener<I, O>: Send + Sync {
    /// `target` sent no heartbeat within `heartbeat.timeout`; it is no longer monitored.
    fn notify_heartbeat_timeout(&self, target: ResourceId);
    /// Heartbeat RPCs to `target` failed `rpc-failure-threshold` times in a row; it is no
    /// longer monitored.
    fn notify_target_unreachable(&self, target: ResourceId);
    /// A monitored target's heartbeat carried `payload`.
    fn report_payload(&self, from: ResourceId, payload: I);
    /// Returns the payload to send to `target` with the next heartbeat.
    fn retrieve_payload(&self, target: &ResourceId) -> O;
}

enum Command<I, O> {
    Monitor(ResourceId, Arc<dyn HeartbeatTarget<O>>),
    Unmonitor(ResourceId),
    Receive(ResourceId, I),
    Request(ResourceId, I),
}

/// One side of a heartbeat relation, running as a tokio task (see the module docs).
///
/// The methods only enqueue work for the task and never block; they do nothing once the
/// manager is stopped. Dropping the manager stops it.
pub struct HeartbeatManager<I, O> {
    own_id: ResourceId,
    commands: mpsc::UnboundedSender<Command<I, O>>,
    /// Holds the driver task; aborts it when stopped or dropped.
    task: TaskSet,
}

impl<I: Send + 'static, O: Send + 'static> HeartbeatManager<I, O> {
    /// Starts a manager on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn start(
        own_id: ResourceId,
        role: HeartbeatRole,
        config: &HeartbeatConfig,
        listener: Arc<dyn HeartbeatListener<I, O>>,
    ) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let driver = Driver {
            own_id: own_id.clone(),
            core: HeartbeatManagerCore::new(role, config, TokioClock.now()),
            listener,
            targets: BTreeMap::new(),
            rpc_timeout: config.timeout,
            in_flight: FuturesUnordered::new(),
        };
        let span = tracing::debug_span!("heartbeat", own_id = %own_id, role = ?role);
        let task = TaskSet::new(tokio::runtime::Handle::current());
        task.spawn("heartbeat-manager", driver.run(inbox).instrument(span));
        HeartbeatManager {
            own_id,
            commands,
            task,
        }
    }

    /// Returns the resource id this manager sends as `from`.
    pub fn own_id(&self) -> &ResourceId {
        &self.own_id
    }

    /// Starts monitoring `id`, reached through `target`; monitoring again starts afresh.
    pub fn monitor_target(&self, id: ResourceId, target: Arc<dyn HeartbeatTarget<O>>) {
        self.send(Command::Monitor(id, target));
    }

    /// Stops monitoring `id`; no event for it follows.
    pub fn unmonitor_target(&self, id: ResourceId) {
        self.send(Command::Unmonitor(id));
    }

    /// Handles a heartbeat from `from` carrying `payload`.
    pub fn receive_heartbeat(&self, from: ResourceId, payload: I) {
        self.send(Command::Receive(from, payload));
    }

    /// Handles a heartbeat request from `from` carrying `payload`; answers it with our
    /// payload if `from` is monitored.
    pub fn request_heartbeat(&self, from: ResourceId, payload: I) {
        self.send(Command::Request(from, payload));
    }

    /// Stops the manager: no more requests, answers or events.
    pub fn stop(&self) {
        self.task.shutdown();
    }

    fn send(&self, command: Command<I, O>) {
        if self.commands.send(command).is_err() {
            tracing::debug!(own_id = %self.own_id, "heartbeat manager stopped; input dropped");
        }
    }
}

type RpcResult = (ResourceId, Result<(), RpcError>);

/// The task behind a [`HeartbeatManager`]; owns everything, so nothing is locked.
struct Driver<I, O> {
    own_id: ResourceId,
    core: HeartbeatManagerCore,
    listener: Arc<dyn HeartbeatListener<I, O>>,
    targets: BTreeMap<ResourceId, Arc<dyn HeartbeatTarget<O>>>,
    rpc_timeout: Duration,
    in_flight: FuturesUnordered<BoxFuture<'static, RpcResult>>,
}

impl<I, O> Driver<I, O> {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command<I, O>>) {
        loop {
            self.poll(TokioClock.now());
            let deadline = self.core.next_deadline();
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => self.handle(command, TokioClock.now()),
                    // The handle is gone (it also aborts us, but do not rely on timing).
                    None => return,
                },
                Some((id, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    match result {
                        Ok(()) => self.core.report_rpc_success(&id),
                        Err(error) => {
                            tracing::debug!(target_id = %id, %error, "heartbeat RPC failed");
                            self.core.report_rpc_failure(&id, TokioClock.now());
                        }
                    }
                }
                () = sleep_until(deadline) => {}
            }
        }
    }

    fn poll(&mut self, now: Instant) {
        for event in self.core.poll_timeouts(now) {
            match event {
                HeartbeatEvent::Timeout(id) => {
                    tracing::info!(target_id = %id, "heartbeat timed out");
                    self.targets.remove(&id);
                    self.listener.notify_heartbeat_timeout(id);
                }
                HeartbeatEvent::TargetUnreachable(id) => {
                    tracing::info!(target_id = %id, "heartbeat target unreachable");
                    self.targets.remove(&id);
                    self.listener.notify_target_unreachable(id);
                }
            }
        }
        for id in self.core.poll_requests(now) {
            if let Some(target) = self.targets.get(&id) {
                let payload = self.listener.retrieve_payload(&id);
                let rpc = target.request_heartbeat(self.own_id.clone(), payload);
                self.track(id, "request_heartbeat", rpc);
            }
        }
    }

    fn handle(&mut self, command: Command<I, O>, now: Instant) {
        match command {
            Command::Monitor(id, target) => {
                self.core.monitor_target(id.clone(), now);
                self.targets.insert(id, target);
            }
            Command::Unmonitor(id) => {
                self.core.unmonitor_target(&id);
                self.targets.remove(&id);
            }
            Command::Receive(from, payload) => {
                if self.core.receive_heartbeat(&from, now) {
                    self.listener.report_payload(from, payload);
                } else {
                    tracing::debug!(from = %from, "heartbeat from unmonitored target ignored");
                }
            }
            Command::Request(from, payload) => {
                if !self.core.request_heartbeat(&from, now) {
                    tracing::debug!(from = %from, "heartbeat request from unmonitored target ignored");
                    return;
                }
                self.listener.report_payload(from.clone(), payload);
                if let Some(target) = self.targets.get(&from) {
                    let answer = self.listener.retrieve_payload(&from);
                    let rpc = target.receive_heartbeat(self.own_id.clone(), answer);
                    self.track(from, "receive_heartbeat", rpc);
                }
            }
        }
    }

    /// Runs `rpc` alongside the loop and feeds its outcome back; a hung RPC fails after
    /// the heartbeat timeout.
    fn track(
        &mut self,
        id: ResourceId,
        method: &'static str,
        rpc: BoxFuture<'static, Result<(), RpcError>>,
    ) {
        let timeout = self.rpc_timeout;
        self.in_flight.push(Box::pin(async move {
            let result = tokio::time::timeout(timeout, rpc)
                .await
                .unwrap_or_else(|_| {
                    Err(RpcError::Timeout {
                        method: method.to_string(),
                        address: id.to_string(),
                        timeout,
                    })
                });
            (id, result)
        }));
    }
}

/// Sleeps until `deadline`, or forever if there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{OnceLock, Weak};

    use futures::FutureExt;
    use parking_lot::Mutex;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(threshold: i32) -> HeartbeatConfig {
        HeartbeatConfig {
            interval: SECOND,
            timeout: 5 * SECOND,
            rpc_failure_threshold: threshold,
        }
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::new(name)
    }

    #[test]
    fn timeout_fires_once_after_the_timeout_without_beats() {
        let t0 = Instant::now();
        let mut core = HeartbeatManagerCore::new(HeartbeatRole::Receiver, &config(2), t0);
        core.monitor_target(id("te"), t0);
        assert_eq!(core.next_deadline(), Some(t0 + 5 * SECOND));
        assert!(core
            .poll_timeouts(t0 + 5 * SECOND - Duration::from_nanos(1))
            .is_empty());
        assert_eq!(
            core.poll_timeouts(t0 + 5 * SECOND),
            vec![HeartbeatEvent::Timeout(id("te"))]
        );
        assert!(core.poll_timeouts(t0 + 60 * SECOND).is_empty());
        assert!(core.monitor(&id("te")).is_none());
        assert_eq!(core.next_deadline(), None);
        // A late beat does not resurrect it.
        assert!(!core.receive_heartbeat(&id("te"), t0 + 61 * SECOND));
    }

    #[test]
    fn each_beat_rearms_the_timeout() {
        let t0 = Instant::now();
        let mut core = HeartbeatManagerCore::new(HeartbeatRole::Receiver, &config(2), t0);
        core.monitor_target(id("te"), t0);
        assert!(core.receive_heartbeat(&id("te"), t0 + 4 * SECOND));
        assert!(core.request_heartbeat(&id("te"), t0 + 8 * SECOND));
        assert!(core.poll_timeouts(t0 + 12 * SECOND).is_empty());
        let monitor = core.monitor(&id("te")).expect("still monitored");
        assert_eq!(monitor.last_heartbeat(), t0 + 8 * SECOND);
        assert_eq!(monitor.deadline(), t0 + 13 * SECOND);
        assert_eq!(
            core.poll_timeouts(t0 + 13 * SECOND),
            vec![HeartbeatEvent::Timeout(id("te"))]
        );
        assert!(!core.receive_heartbeat(&id("stranger"), t0));
    }

    #[test]
    fn consecutive_rpc_failures_make_a_target_unreachable_before_its_timeout() {
        let t0 = Instant::now();
        let mut core = HeartbeatManagerCore::new(HeartbeatRole::Sender, &config(2), t0);
        core.monitor_target(id("te"), t0);
        core.report_rpc_failure(&id("te"), t0);
        core.report_rpc_success(&id("te"));
        core.report_rpc_failure(&id("te"), t0 + SECOND);
        assert!(
            core.poll_timeouts(t0 + SECOND).is_empty(),
            "success reset the count"
        );
        core.report_rpc_failure(&id("te"), t0 + 2 * SECOND);
        assert_eq!(
            core.monitor(&id("te")).map(|m| m.deadline()),
            Some(t0 + 2 * SECOND)
        );
        // Once unreachable, beats no longer count and no requests go out.
        assert!(!core.receive_heartbeat(&id("te"), t0 + 2 * SECOND));
        assert!(core.poll_requests(t0 + 2 * SECOND).is_empty());
        assert_eq!(
            core.poll_timeouts(t0 + 2 * SECOND),
            vec![HeartbeatEvent::TargetUnreachable(id("te"))]
        );
        assert!(core.poll_timeouts(t0 + 10 * SECOND).is_empty());
    }

    #[test]
    fn zero_or_negative_threshold_disables_failure_detection() {
        for threshold in [0, -1] {
            let t0 = Instant::now();
            let mut core = HeartbeatManagerCore::new(HeartbeatRole::Sender, &config(threshold), t0);
            core.monitor_target(id("te"), t0);
            for _ in 0..100 {
                core.report_rpc_failure(&id("te"), t0);
            }
            assert_eq!(
                core.monitor(&id("te"))
                    .map(|m| m.consecutive_rpc_failures()),
                Some(100)
            );
            assert!(core.poll_timeouts(t0 + 4 * SECOND).is_empty());
            assert_eq!(
                core.poll_timeouts(t0 + 5 * SECOND),
                vec![HeartbeatEvent::Timeout(id("te"))]
            );
        }
    }

    #[test]
    fn unmonitored_targets_produce_no_events() {
        let t0 = Instant::now();
        let mut core = HeartbeatManagerCore::new(HeartbeatRole::Sender, &config(2), t0);
        core.monitor_target(id("a"), t0);
        core.monitor_target(id("b"), t0);
        assert!(core.unmonitor_target(&id("a")));
        assert!(!core.unmonitor_target(&id("a")));
        core.report_rpc_failure(&id("a"), t0);
        core.report_rpc_failure(&id("a"), t0);
        assert_eq!(
            core.poll_timeouts(t0 + 10 * SECOND),
            vec![HeartbeatEvent::Timeout(id("b"))]
        );
    }

    #[test]
    fn sender_requests_every_interval_receiver_never() {
        let t0 = Instant::now();
        let mut sender = HeartbeatManagerCore::new(HeartbeatRole::Sender, &config(2), t0);
        let mut receiver = HeartbeatManagerCore::new(HeartbeatRole::Receiver, &config(2), t0);
        for core in [&mut sender, &mut receiver] {
            core.monitor_target(id("b"), t0);
            core.monitor_target(id("a"), t0);
        }
        assert_eq!(sender.poll_requests(t0), vec![id("a"), id("b")]);
        assert!(sender.poll_requests(t0 + SECOND / 2).is_empty());
        assert_eq!(sender.next_deadline(), Some(t0 + SECOND));
        assert_eq!(sender.poll_requests(t0 + SECOND), vec![id("a"), id("b")]);
        assert!(receiver.poll_requests(t0).is_empty());
        assert!(receiver.poll_requests(t0 + SECOND).is_empty());
        assert_eq!(receiver.next_deadline(), Some(t0 + 5 * SECOND));
    }

    // ---- driver -------------------------------------------------------------------

    #[derive(Debug, PartialEq, Eq)]
    enum Note {
        Timeout(ResourceId),
        Unreachable(ResourceId),
        Payload(ResourceId, String),
    }

    /// Records what the manager tells its owner, with the virtual time it happened.
    struct Recorder(mpsc::UnboundedSender<(tokio::time::Instant, Note)>);

    impl Recorder {
        fn new() -> (
            Arc<Self>,
            mpsc::UnboundedReceiver<(tokio::time::Instant, Note)>,
        ) {
            let (tx, rx) = mpsc::unbounded_channel();
            (Arc::new(Recorder(tx)), rx)
        }

        fn note(&self, note: Note) {
            // The test may have stopped listening; nothing to do then.
            let _ = self.0.send((tokio::time::Instant::now(), note));
        }
    }

    impl HeartbeatListener<String, String> for Recorder {
        fn notify_heartbeat_timeout(&self, target: ResourceId) {
            self.note(Note::Timeout(target));
        }
        fn notify_target_unreachable(&self, target: ResourceId) {
            self.note(Note::Unreachable(target));
        }
        fn report_payload(&self, from: ResourceId, payload: String) {
            self.note(Note::Payload(from, payload));
        }
        fn retrieve_payload(&self, target: &ResourceId) -> String {
            format!("payload for {target}")
        }
    }

    /// A peer that answers a number of requests through the manager, then goes silent,
    /// or fails every RPC.
    struct FakePeer {
        id: ResourceId,
        manager: OnceLock<Weak<HeartbeatManager<String, String>>>,
        answers_left: AtomicU32,
        failing: bool,
        received: Mutex<Vec<(ResourceId, String)>>,
    }

    impl FakePeer {
        fn new(name: &str, answers: u32, failing: bool) -> Arc<Self> {
            Arc::new(FakePeer {
                id: id(name),
                manager: OnceLock::new(),
                answers_left: AtomicU32::new(answers),
                failing,
                received: Mutex::new(Vec::new()),
            })
        }

        fn result(&self) -> BoxFuture<'static, Result<(), RpcError>> {
            let result = if self.failing {
                Err(RpcError::Unreachable {
                    address: self.id.to_string(),
                    reason: "test".into(),
                })
            } else {
                Ok(())
            };
            futures::future::ready(result).boxed()
        }
    }

    impl HeartbeatTarget<String> for FakePeer {
        fn request_heartbeat(
            &self,
            from: ResourceId,
            payload: String,
        ) -> BoxFuture<'static, Result<(), RpcError>> {
            self.received.lock().push((from, payload));
            let answering = self
                .answers_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if answering && !self.failing {
                if let Some(manager) = self.manager.get().and_then(Weak::upgrade) {
                    manager.receive_heartbeat(self.id.clone(), format!("report from {}", self.id));
                }
            }
            self.result()
        }

        fn receive_heartbeat(
            &self,
            from: ResourceId,
            payload: String,
        ) -> BoxFuture<'static, Result<(), RpcError>> {
            self.received.lock().push((from, payload));
            self.result()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn driver_times_out_a_target_that_stops_answering_and_payloads_flow() {
        let (listener, mut notes) = Recorder::new();
        let manager = Arc::new(HeartbeatManager::start(
            id("rm"),
            HeartbeatRole::Sender,
            &config(2),
            listener,
        ));
        let peer = FakePeer::new("te", 3, false);
        assert!(peer.manager.set(Arc::downgrade(&manager)).is_ok());
        let t0 = tokio::time::Instant::now();
        manager.monitor_target(id("te"), peer.clone());

        let mut last_beat = t0;
        let lost_at = loop {
            let (at, note) = notes.recv().await.expect("manager alive");
            match note {
                Note::Payload(from, payload) => {
                    assert_eq!((from, payload.as_str()), (id("te"), "report from te"));
                    last_beat = at;
                }
                Note::Timeout(target) => {
                    assert_eq!(target, id("te"));
                    break at;
                }
                Note::Unreachable(target) => panic!("{target} reported unreachable"),
            }
        };
        // The manager ticks from its start at 0 s, so the first request goes out at 1 s.
        // Three answered requests at 1 s, 2 s, 3 s; silent from 4 s; lost at 3 s + 5 s,
        // within interval + timeout of going silent.
        assert_eq!(last_beat - t0, 3 * SECOND);
        assert_eq!(lost_at - last_beat, 5 * SECOND);
        assert!(lost_at - (last_beat + SECOND) <= SECOND + 5 * SECOND);

        // Reported once, then no longer requested.
        let requests = peer.received.lock().len();
        assert!(
            tokio::time::timeout(30 * SECOND, notes.recv())
                .await
                .is_err(),
            "no further notes"
        );
        assert_eq!(peer.received.lock().len(), requests);
        assert_eq!(requests, 7, "requests at 1..=7 s");
        assert!(peer
            .received
            .lock()
            .iter()
            .all(|(from, payload)| from == &id("rm") && payload == "payload for te"));
    }

    #[tokio::test(start_paused = true)]
    async fn driver_reports_unreachable_after_consecutive_rpc_failures() {
        let (listener, mut notes) = Recorder::new();
        let manager =
            HeartbeatManager::start(id("rm"), HeartbeatRole::Sender, &config(2), listener);
        let t0 = tokio::time::Instant::now();
        manager.monitor_target(id("te"), FakePeer::new("te", 0, true));
        let (at, note) = notes.recv().await.expect("manager alive");
        assert_eq!(note, Note::Unreachable(id("te")));
        // Failures of the requests at 1 s and 2 s; well before the timeout at 5 s.
        assert_eq!(at - t0, 2 * SECOND);
        assert!(tokio::time::timeout(30 * SECOND, notes.recv())
            .await
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn receiver_answers_requests_with_its_payload_and_stops_cleanly() {
        let (listener, mut notes) = Recorder::new();
        let manager = HeartbeatManager::start(
            id("te"),
            HeartbeatRole::Receiver,
            &config(2),
            listener.clone(),
        );
        let jm = FakePeer::new("jm", 0, false);
        manager.monitor_target(id("jm"), jm.clone());
        manager.request_heartbeat(id("stranger"), "ignored".into());
        manager.request_heartbeat(id("jm"), "slot report please".into());

        let (_, note) = notes.recv().await.expect("manager alive");
        assert_eq!(note, Note::Payload(id("jm"), "slot report please".into()));
        tokio::task::yield_now().await;
        assert_eq!(
            *jm.received.lock(),
            vec![(id("te"), "payload for jm".to_string())]
        );

        // A request re-armed the deadline; stopping ends everything, timeout included.
        manager.stop();
        manager.request_heartbeat(id("jm"), "after stop".into());
        assert!(tokio::time::timeout(60 * SECOND, notes.recv())
            .await
            .is_err());
        assert_eq!(jm.received.lock().len(), 1);

        // The aborted task has released the listener: no orphan holds on.
        drop(manager);
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&listener), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_manager_stops_its_task() {
        let (listener, mut notes) = Recorder::new();
        let manager = HeartbeatManager::start(
            id("rm"),
            HeartbeatRole::Sender,
            &config(2),
            listener.clone(),
        );
        manager.monitor_target(id("te"), FakePeer::new("te", 0, false));
        tokio::task::yield_now().await;
        drop(manager);
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&listener), 1);
        assert!(tokio::time::timeout(60 * SECOND, notes.recv())
            .await
            .is_err());
    }
}
