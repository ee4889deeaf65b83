//! Timers of keyed operators: Flink's `InternalTimerService`.
//!
//! # Model
//!
//! A timer is *(timestamp, key, namespace)* in one of two time domains: **event time**
//! fires when the operator's watermark reaches the timestamp (`watermark ≥ timestamp`),
//! **processing time** when the task's clock does. Registering a timer that exists is a
//! no-op (deduplication); deleting one that does not exist is too. Keyed process
//! functions use the namespace `()`; window operators use the window.
//!
//! # Storage
//!
//! Each domain is kept twice:
//!
//! * in the operator's **keyed state backend**, as a value state named
//!   `_timer/<service>/<domain>` whose key is the timer's key and whose namespace is
//!   `(timestamp, namespace)`. Timers are therefore in every snapshot, stored per key
//!   group like all keyed state, and go with their key group when a job is rescaled;
//! * in memory, as an ordered set of [`Timer`]s (timestamp first, then key and
//!   namespace, so firing order is deterministic), rebuilt from the state by
//!   [`InternalTimerService::new`] after a restore.
//!
//! The backend entry is written only when the in-memory set did not hold the timer, so a
//! window operator that registers the same end-of-window timer for every element costs
//! one ordered-set probe per element.
//!
//! # Firing
//!
//! The operator advances time with [`InternalTimerService::advance_watermark`] and then
//! pops due timers one by one ([`InternalTimerService::pop_event_timer`],
//! [`InternalTimerService::pop_processing_timer`]), calling its callback for each. A
//! popped timer is already removed from the state. Timers registered by a callback that
//! are due as well are popped in the same loop, as in Flink.
//!
//! Processing time comes from the task's injected clock ([`StateContext::clock`]
//! (crate::state::StateContext)), so tests drive it by hand. The task asks the chain for
//! the earliest processing-time timer and waits on its input at most until then (see
//! [`Operator::next_processing_timer`](crate::operator::Operator::next_processing_timer)).

use std::collections::BTreeSet;
use std::sync::Arc;

use rill_state::{KeyedStateBackend, Namespace, TtlClock, ValueState, ValueStateDescriptor};

use crate::error::Result;
use crate::value::Value;

/// The time domain of a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timestamp.
    EventTime,
    /// Fires when the task's clock reaches the timestamp.
    ProcessingTime,
}

/// One registered timer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer<N> {
    /// When it fires (milliseconds; event time or processing time).
    pub timestamp: i64,
    /// The key it belongs to.
    pub key: Value,
    /// Its namespace (`()` or a window).
    pub namespace: N,
}

/// The timers of one domain.
struct TimerQueue<N: Namespace> {
    state: ValueState<(i64, N), u8>,
    queue: BTreeSet<Timer<N>>,
}

impl<N: Namespace> TimerQueue<N> {
    fn new(backend: &mut KeyedStateBackend<Value>, name: String) -> Result<Self> {
        let state = backend.value_state::<(i64, N), u8>(&ValueStateDescriptor::new(name))?;
        let queue = backend
            .keys_and_namespaces::<(i64, N)>(state.id())?
            .into_iter()
            .map(|(key, (timestamp, namespace))| Timer {
                timestamp,
                key,
                namespace,
            })
            .collect();
        Ok(Self { state, queue })
    }

    fn register(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        key: &Value,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let timer = Timer {
            timestamp,
            key: key.clone(),
            namespace: namespace.clone(),
        };
        if self.queue.insert(timer) {
            backend.value_modify(&self.state, key, &(timestamp, namespace.clone()), |v| {
                *v = Some(1)
            })?;
        }
        Ok(())
    }

    fn delete(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        key: &Value,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let timer = Timer {
            timestamp,
            key: key.clone(),
            namespace: namespace.clone(),
        };
        if self.queue.remove(&timer) {
            backend.value_modify(&self.state, key, &(timestamp, namespace.clone()), |v| {
                *v = None
            })?;
        }
        Ok(())
    }

    fn pop_until(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        time: i64,
    ) -> Result<Option<Timer<N>>> {
        if self.queue.first().is_none_or(|t| t.timestamp > time) {
            return Ok(None);
        }
        let Some(timer) = self.queue.pop_first() else {
            return Ok(None);
        };
        backend.value_modify(
            &self.state,
            &timer.key,
            &(timer.timestamp, timer.namespace.clone()),
            |v| *v = None,
        )?;
        Ok(Some(timer))
    }
}

/// Event-time and processing-time timers of one keyed operator subtask (see the module
/// docs). The operator owns it next to its keyed backend and passes the backend to
/// every call.
pub struct InternalTimerService<N: Namespace> {
    name: String,
    event: TimerQueue<N>,
    processing: TimerQueue<N>,
    watermark: i64,
    clock: Arc<dyn TtlClock>,
}

impl<N: Namespace> InternalTimerService<N> {
    /// The timer service `name` of an operator (an operator may have several, e.g. a
    /// user's and its own), stored in `backend`. Call it again after replacing the
    /// backend with a restored one: it reads the restored timers.
    pub fn new(
        backend: &mut KeyedStateBackend<Value>,
        name: &str,
        clock: Arc<dyn TtlClock>,
    ) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            event: TimerQueue::new(backend, format!("_timer/{name}/event"))?,
            processing: TimerQueue::new(backend, format!("_timer/{name}/processing"))?,
            watermark: i64::MIN,
            clock,
        })
    }

    /// The same service over a restored `backend`, keeping the current watermark.
    pub fn reopen(&self, backend: &mut KeyedStateBackend<Value>) -> Result<Self> {
        let mut s = Self::new(backend, &self.name, self.clock.clone())?;
        s.watermark = self.watermark;
        Ok(s)
    }

    /// Registers a timer of `domain` for (`key`, `namespace`) at `timestamp`.
    pub fn register(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        domain: TimeDomain,
        key: &Value,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.queue(domain)
            .register(backend, key, namespace, timestamp)
    }

    /// Deletes a timer of `domain`, if registered.
    pub fn delete(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        domain: TimeDomain,
        key: &Value,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.queue(domain)
            .delete(backend, key, namespace, timestamp)
    }

    fn queue(&mut self, domain: TimeDomain) -> &mut TimerQueue<N> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Event time moved to `watermark` (never backwards).
    pub fn advance_watermark(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// The operator's current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The task clock's processing time in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The clock processing time comes from.
    pub fn clock(&self) -> &Arc<dyn TtlClock> {
        &self.clock
    }

    /// Removes and returns the earliest event-time timer at or before the watermark.
    pub fn pop_event_timer(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
    ) -> Result<Option<Timer<N>>> {
        self.event.pop_until(backend, self.watermark)
    }

    /// Removes and returns the earliest processing-time timer at or before `now`.
    pub fn pop_processing_timer(
        &mut self,
        backend: &mut KeyedStateBackend<Value>,
        now: i64,
    ) -> Result<Option<Timer<N>>> {
        self.processing.pop_until(backend, now)
    }

    /// The earliest processing-time timer, if any.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing.queue.first().map(|t| t.timestamp)
    }

    /// The earliest event-time timer, if any.
    pub fn next_event_time(&self) -> Option<i64> {
        self.event.queue.first().map(|t| t.timestamp)
    }

    /// Number of registered timers of `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.queue.len(),
            TimeDomain::ProcessingTime => self.processing.queue.len(),
        }
    }

    /// Whether no timer of either domain is registered.
    pub fn is_empty(&self) -> bool {
        self.event.queue.is_empty() && self.processing.queue.is_empty()
    }
}

/// A pending change to a timer, recorded where the backend is borrowed elsewhere (the
/// keyed process operator's batch loop) and applied right after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimerOp {
    Register(TimeDomain, i64),
    Delete(TimeDomain, i64),
}

/// The timer service a user function sees for the key being processed (Flink's
/// `TimerService`): registrations and deletions apply to the current key.
pub struct TimerService<'a> {
    pub(crate) ops: &'a mut Vec<(Value, TimerOp)>,
    pub(crate) key: &'a Value,
    pub(crate) watermark: i64,
    pub(crate) clock: &'a dyn TtlClock,
}

impl TimerService<'_> {
    /// Registers an event-time timer at `timestamp` for the current key; it fires when
    /// the watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        self.ops.push((
            self.key.clone(),
            TimerOp::Register(TimeDomain::EventTime, timestamp),
        ));
    }

    /// Registers a processing-time timer at `timestamp` (ms since the epoch).
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        self.ops.push((
            self.key.clone(),
            TimerOp::Register(TimeDomain::ProcessingTime, timestamp),
        ));
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        self.ops.push((
            self.key.clone(),
            TimerOp::Delete(TimeDomain::EventTime, timestamp),
        ));
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        self.ops.push((
            self.key.clone(),
            TimerOp::Delete(TimeDomain::ProcessingTime, timestamp),
        ));
    }

    /// The operator's current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The task clock's processing time (ms since the epoch).
    pub fn current_processing_time(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Applies `ops` recorded by [`TimerService`]s to `timers`, in order.
pub(crate) fn apply_timer_ops(
    timers: &mut InternalTimerService<()>,
    backend: &mut KeyedStateBackend<Value>,
    ops: &mut Vec<(Value, TimerOp)>,
) -> Result<()> {
    for (key, op) in ops.drain(..) {
        match op {
            TimerOp::Register(domain, t) => timers.register(backend, domain, &key, &(), t)?,
            TimerOp::Delete(domain, t) => timers.delete(backend, domain, &key, &(), t)?,
        }
    }
    Ok(())
}

/// A clock set by hand, for tests and tools that drive processing time themselves.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now: std::sync::atomic::AtomicI64::new(now_ms),
        })
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TtlClock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::key::ValueKey;
    use crate::operator::OperatorContext;
    use crate::state::{StateContext, StateInitContext};
    use crate::state_config::StateConfig;
    use rill_state::snapshot::{OperatorSnapshot, SnapshotKind};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{BackendKind, CheckpointStorage, FsCheckpointStorage};

    fn ctx(kind: BackendKind, dir: &std::path::Path, clock: Arc<ManualClock>) -> OperatorContext {
        let config = StateConfig {
            backend: kind,
            local_dir: Some(dir.join("local")),
            ..StateConfig::default()
        };
        OperatorContext {
            job_id: JobId([0; 16]),
            operator_name: "t".into(),
            operator_uid: "t".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: Some(Arc::new(ValueKey)),
            key_selector2: None,
            collect: None,
            state: StateContext {
                config,
                clock,
                checkpointing: false,
            },
        }
    }

    fn drain_event(
        t: &mut InternalTimerService<i64>,
        b: &mut KeyedStateBackend<Value>,
    ) -> Vec<(i64, Value, i64)> {
        let mut out = Vec::new();
        while let Some(x) = t.pop_event_timer(b).unwrap() {
            out.push((x.timestamp, x.key, x.namespace));
        }
        out
    }

    fn fires_in_order_dedups_and_survives_restore(kind: BackendKind) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let c = ctx(kind, dir.path(), clock.clone());
        let mut b = c.create_keyed_backend::<Value>().unwrap();
        let mut t = InternalTimerService::<i64>::new(&mut b, "user", clock.clone()).unwrap();
        let ev = TimeDomain::EventTime;
        let pt = TimeDomain::ProcessingTime;
        let (a, z) = (Value::from("a"), Value::from("z"));
        t.register(&mut b, ev, &z, &1, 20).unwrap();
        t.register(&mut b, ev, &a, &1, 20).unwrap();
        t.register(&mut b, ev, &a, &1, 20).unwrap(); // duplicate
        t.register(&mut b, ev, &a, &2, 10).unwrap();
        t.register(&mut b, ev, &a, &3, 30).unwrap();
        t.register(&mut b, ev, &a, &4, 40).unwrap();
        t.delete(&mut b, ev, &a, &4, 40).unwrap();
        t.delete(&mut b, ev, &a, &9, 99).unwrap(); // absent
        t.register(&mut b, pt, &a, &0, 1_500).unwrap();
        t.register(&mut b, pt, &z, &0, 1_200).unwrap();
        assert_eq!(t.len(ev), 4);
        assert_eq!(t.next_processing_time(), Some(1_200));

        // Nothing fires before the watermark reaches a timestamp.
        t.advance_watermark(9);
        assert!(drain_event(&mut t, &mut b).is_empty());
        t.advance_watermark(20);
        assert_eq!(
            drain_event(&mut t, &mut b),
            [(10, a.clone(), 2), (20, a.clone(), 1), (20, z.clone(), 1)]
        );
        // A watermark going backwards changes nothing.
        t.advance_watermark(5);
        assert_eq!(t.current_watermark(), 20);

        // Snapshot with one event-time and two processing-time timers open.
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
        let target = CheckpointLayout::new(dir.path(), "job").target(
            storage.clone(),
            1,
            SnapshotKind::Checkpoint,
        );
        let handle = b.snapshot(target.clone()).unwrap().run().unwrap();
        // Changes after the snapshot are not in it.
        t.register(&mut b, ev, &a, &5, 50).unwrap();
        let op = OperatorSnapshot {
            uid: "t".into(),
            name: "t".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![rill_state::snapshot::SubtaskSnapshot {
                subtask_index: 0,
                keyed: Some(handle),
                operator: None,
                in_flight: None,
            }],
        };
        let init = StateInitContext::restoring(target.exclusive_dir.clone(), op, storage);
        let mut b2 = init.keyed_backend::<Value>(&c).unwrap();
        let mut t2 = InternalTimerService::<i64>::new(&mut b2, "user", clock.clone()).unwrap();
        assert_eq!(t2.len(ev), 1);
        assert_eq!(t2.len(pt), 2);
        t2.advance_watermark(i64::MAX);
        assert_eq!(drain_event(&mut t2, &mut b2), [(30, a.clone(), 3)]);
        // Processing time: due timers only, in order.
        clock.set(1_300);
        let now = t2.current_processing_time();
        let p = t2.pop_processing_timer(&mut b2, now).unwrap().unwrap();
        assert_eq!((p.timestamp, p.key), (1_200, z));
        assert!(t2.pop_processing_timer(&mut b2, now).unwrap().is_none());
        clock.advance(200);
        let now = t2.current_processing_time();
        assert_eq!(
            t2.pop_processing_timer(&mut b2, now).unwrap().unwrap().key,
            a
        );
        assert!(t2.is_empty());
        // Fired timers are gone from the state too.
        let t3 = InternalTimerService::<i64>::new(&mut b2, "user", clock).unwrap();
        assert!(t3.is_empty());
    }

    #[test]
    fn timers_fire_in_order_dedup_and_restore_heap() {
        fires_in_order_dedups_and_survives_restore(BackendKind::Heap);
    }

    #[test]
    fn timers_fire_in_order_dedup_and_restore_lsm() {
        fires_in_order_dedups_and_survives_restore(BackendKind::Lsm);
    }
}
