//! Keyed operators with per-key state in a keyed state backend: `reduce` and keyed
//! `process`.
//!
//! Each operator subtask owns a [`KeyedStateBackend<Value>`] for the key groups of its
//! subtask (heap or lsm, as `state.backend.type` says) with one value state in the
//! default namespace `()`: the accumulator of `reduce` ([`REDUCE_STATE`]), the
//! function's `State` of `process` ([`PROCESS_STATE`]). The per-record path is one
//! [`value_modify`](KeyedStateBackend::value_modify) with the record's key passed
//! explicitly: a single lookup, and the key is cloned only when the backend stores it
//! for the first time (key selectors return borrowed keys where they can).
//!
//! State survives the operator instance: [`Operator::snapshot_state`] takes the
//! backend's synchronous snapshot and hands back its asynchronous part, and
//! [`Operator::initialize_state`] rebuilds the backend from a snapshot, at any
//! parallelism (the backend reads the key groups it owns from every old subtask). See
//! [`state`](crate::state) for the lifecycle.
//!
//! At end of input, per-key callbacks run in key order ([`KeyedStateBackend::keys`]),
//! so bounded jobs produce deterministic output.

use std::sync::Arc;

use rill_state::{KeyedStateBackend, StateData, ValueState, ValueStateDescriptor};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::side_output::{OutputTag, SideOutputs};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::timer::{
    apply_timer_ops, InternalTimerService, TimeDomain, Timer, TimerOp, TimerService,
};
use crate::value::Value;

/// Name of the value state holding `reduce`'s accumulator per key.
pub const REDUCE_STATE: &str = "reduce";
/// Name of the value state holding a keyed process function's state per key.
pub const PROCESS_STATE: &str = "process";

fn required_key(ctx: &OperatorContext) -> Result<Arc<dyn KeySelector>> {
    ctx.key_selector.clone().ok_or_else(|| {
        DataflowError::InvalidGraph(format!(
            "keyed operator `{}` has no key selector (it must follow key_by)",
            ctx.operator_name
        ))
    })
}

/// The keyed backend of one operator subtask with its one value state.
struct KeyedValueState<T> {
    ctx: OperatorContext,
    name: &'static str,
    backend: KeyedStateBackend<Value>,
    state: ValueState<(), T>,
}

impl<T: StateData> KeyedValueState<T> {
    fn new(ctx: &OperatorContext, name: &'static str) -> Result<Self> {
        let mut backend = ctx.create_keyed_backend::<Value>()?;
        let state = backend.value_state(&ValueStateDescriptor::new(name))?;
        Ok(Self {
            ctx: ctx.clone(),
            name,
            backend,
            state,
        })
    }

    /// Replaces the backend with one restored from `init` (if it holds state).
    fn initialize(&mut self, init: &StateInitContext) -> Result<()> {
        if init.is_restored() {
            let mut backend = init.keyed_backend::<Value>(&self.ctx)?;
            self.state = backend.value_state(&ValueStateDescriptor::new(self.name))?;
            self.backend = backend;
        }
        Ok(())
    }

    fn snapshot(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot {
            keyed: Some(self.backend.snapshot(ctx.target.clone())?),
            operator: None,
        })
    }

    /// Every key with state, in key order.
    fn keys(&mut self) -> Result<Vec<Value>> {
        Ok(self.backend.keys(self.state.id(), &())?)
    }
}

/// Folds the values of each key with `f(accumulator, value)` and emits the updated
/// accumulator after every record (Flink's `reduce`). The first value of a key becomes
/// its accumulator.
pub struct ReduceOperator<F> {
    f: F,
    key: Arc<dyn KeySelector>,
    state: KeyedValueState<Value>,
}

impl<F> ReduceOperator<F>
where
    F: FnMut(&mut Value, Value) -> Result<()> + Send,
{
    /// A reduce operator over `f`, keyed by the context's key selector, with an empty
    /// keyed backend of the context's state configuration.
    pub fn new(f: F, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            f,
            key: required_key(ctx)?,
            state: KeyedValueState::new(ctx, REDUCE_STATE)?,
        })
    }

    /// The keyed state backend (tests, tools).
    pub fn backend_mut(&mut self) -> &mut KeyedStateBackend<Value> {
        &mut self.state.backend
    }
}

impl<F> Operator for ReduceOperator<F>
where
    F: FnMut(&mut Value, Value) -> Result<()> + Send,
{
    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.state.initialize(ctx)
    }

    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let KeyedValueState { backend, state, .. } = &mut self.state;
        let mut access = backend.value_access(state)?;
        let f = &mut self.f;
        for r in input.drain(..) {
            // The value moves into the accumulator, so the key cannot borrow from it.
            let key = self.key.key(&r.value)?.into_owned();
            let value = r.value;
            let updated = access.modify(&key, &(), |acc| -> Result<Value> {
                match acc {
                    Some(acc) => {
                        f(acc, value)?;
                        Ok(acc.clone())
                    }
                    None => {
                        *acc = Some(value.clone());
                        Ok(value)
                    }
                }
            })??;
            out.push(StreamRecord {
                value: updated,
                timestamp: r.timestamp,
            });
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        self.state.snapshot(ctx)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.state.backend.notify_checkpoint_complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.state.backend.notify_checkpoint_aborted(checkpoint_id);
        Ok(())
    }
}

/// What a [`KeyedProcessFunction`] sees besides the record: its timestamp, the key's
/// timers, the time, and side outputs (Flink's `KeyedProcessFunction.Context` and
/// `OnTimerContext`).
pub struct ProcessContext<'a> {
    timestamp: Option<i64>,
    domain: Option<TimeDomain>,
    timers: TimerService<'a>,
    side: &'a mut SideOutputs,
}

impl<'a> ProcessContext<'a> {
    /// The timestamp of the record being processed, or of the firing timer.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The key being processed.
    pub fn current_key(&self) -> &Value {
        self.timers.key
    }

    /// The timers of the current key.
    pub fn timer_service(&mut self) -> &mut TimerService<'a> {
        &mut self.timers
    }

    /// In [`KeyedProcessFunction::on_timer`]: the domain of the firing timer.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }

    /// Emits `value` to the side output `tag`, with the current timestamp.
    pub fn output(&mut self, tag: &OutputTag, value: impl Into<Value>) {
        self.side.push(
            tag,
            StreamRecord {
                value: value.into(),
                timestamp: self.timestamp,
            },
        );
    }
}

/// Per-key processing logic with typed per-key state and timers (the keyed `process`
/// of the API, Flink's `KeyedProcessFunction`).
///
/// The state lives in the operator's keyed state backend, so it must be serializable
/// ([`StateData`]): it is written to snapshots and read back on restore. So do the
/// timers registered through [`ProcessContext::timer_service`] (see [`timer`]
/// (crate::timer)).
pub trait KeyedProcessFunction: Send + 'static {
    /// The state kept for each key; starts as `Default`.
    type State: StateData + Default;

    /// Processes one record of `key`.
    fn process(
        &mut self,
        key: &Value,
        state: &mut Self::State,
        value: &Value,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// A timer of `key` registered for `timestamp` fired
    /// ([`ProcessContext::time_domain`] says which kind). Records emitted carry the
    /// timer's timestamp for event-time timers and none for processing-time timers.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _key: &Value,
        _state: &mut Self::State,
        _ctx: &mut ProcessContext<'_>,
        _out: &mut Collector<'_>,
    ) -> Result<()> {
        Ok(())
    }

    /// Called once per key, in key order, when the input has ended (after the final
    /// watermark fired every event-time timer).
    fn on_end_of_input(
        &mut self,
        _key: &Value,
        _state: &mut Self::State,
        _out: &mut Collector<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Name of the keyed process operator's timer service.
pub const PROCESS_TIMERS: &str = "process";

/// Runs a [`KeyedProcessFunction`] with its per-key state and timers in a keyed state
/// backend.
pub struct KeyedProcessOperator<P: KeyedProcessFunction> {
    f: P,
    key: Arc<dyn KeySelector>,
    state: KeyedValueState<P::State>,
    timers: InternalTimerService<()>,
    /// Timer changes of the batch being processed, applied after it.
    timer_ops: Vec<(Value, TimerOp)>,
    side: SideOutputs,
}

impl<P: KeyedProcessFunction> KeyedProcessOperator<P> {
    /// A keyed process operator over `f`, keyed by the context's key selector, with an
    /// empty keyed backend of the context's state configuration.
    pub fn new(f: P, ctx: &OperatorContext) -> Result<Self> {
        let mut state = KeyedValueState::new(ctx, PROCESS_STATE)?;
        let timers =
            InternalTimerService::new(&mut state.backend, PROCESS_TIMERS, ctx.state.clock.clone())?;
        Ok(Self {
            f,
            key: required_key(ctx)?,
            state,
            timers,
            timer_ops: Vec::new(),
            side: SideOutputs::default(),
        })
    }

    /// Number of keys with state (for tests and metrics).
    pub fn num_keys(&mut self) -> Result<usize> {
        Ok(self.state.keys()?.len())
    }

    /// The keyed state backend (tests, tools).
    pub fn backend_mut(&mut self) -> &mut KeyedStateBackend<Value> {
        &mut self.state.backend
    }

    /// The operator's timers (tests, tools).
    pub fn timers(&self) -> &InternalTimerService<()> {
        &self.timers
    }

    /// The function (two-input operators switch its input side between batches).
    pub(crate) fn function_mut(&mut self) -> &mut P {
        &mut self.f
    }

    /// Replaces the key selector (a keyed two-input operator's inputs have one each).
    pub(crate) fn set_key_selector(&mut self, key: Arc<dyn KeySelector>) {
        self.key = key;
    }

    /// Fires one timer: the function's `on_timer` on the key's state.
    fn fire(
        &mut self,
        timer: Timer<()>,
        domain: TimeDomain,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let KeyedValueState { backend, state, .. } = &mut self.state;
        let (f, ops, side) = (&mut self.f, &mut self.timer_ops, &mut self.side);
        let watermark = self.timers.current_watermark();
        let clock = self.timers.clock().clone();
        let timestamp = (domain == TimeDomain::EventTime).then_some(timer.timestamp);
        backend.value_modify(state, &timer.key, &(), |s| {
            let mut ctx = ProcessContext {
                timestamp,
                domain: Some(domain),
                timers: TimerService {
                    ops,
                    key: &timer.key,
                    watermark,
                    clock: clock.as_ref(),
                },
                side,
            };
            f.on_timer(
                timer.timestamp,
                &timer.key,
                s.get_or_insert_with(P::State::default),
                &mut ctx,
                &mut Collector::new(out, timestamp),
            )
        })??;
        apply_timer_ops(&mut self.timers, backend, &mut self.timer_ops)
    }
}

impl<P: KeyedProcessFunction> Operator for KeyedProcessOperator<P> {
    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.state.initialize(ctx)?;
        self.timers = self.timers.reopen(&mut self.state.backend)?;
        Ok(())
    }

    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let KeyedValueState { backend, state, .. } = &mut self.state;
        let mut access = backend.value_access(state)?;
        let f = &mut self.f;
        let (ops, side) = (&mut self.timer_ops, &mut self.side);
        let watermark = self.timers.current_watermark();
        let clock = self.timers.clock().as_ref();
        // The closure reports a function error through `failed` rather than its return
        // value: nesting `Result`s of two large error types costs copies per record.
        let mut failed = None;
        for r in input.drain(..) {
            let key = self.key.key(&r.value)?;
            let mut c = Collector::new(out, r.timestamp);
            access.modify(&key, &(), |s| {
                let mut ctx = ProcessContext {
                    timestamp: r.timestamp,
                    domain: None,
                    timers: TimerService {
                        ops: &mut *ops,
                        key: &key,
                        watermark,
                        clock,
                    },
                    side: &mut *side,
                };
                if let Err(e) = f.process(
                    &key,
                    s.get_or_insert_with(P::State::default),
                    &r.value,
                    &mut ctx,
                    &mut c,
                ) {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed.take() {
                return Err(e);
            }
        }
        if !self.timer_ops.is_empty() {
            apply_timer_ops(&mut self.timers, backend, &mut self.timer_ops)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.timers.advance_watermark(watermark);
        while let Some(timer) = self.timers.pop_event_timer(&mut self.state.backend)? {
            self.fire(timer, TimeDomain::EventTime, out)?;
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        while let Some(timer) = self
            .timers
            .pop_processing_timer(&mut self.state.backend, now_ms)?
        {
            self.fire(timer, TimeDomain::ProcessingTime, out)?;
        }
        Ok(())
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.side.drain(sink)
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        let keys = self.state.keys()?;
        let KeyedValueState { backend, state, .. } = &mut self.state;
        let f = &mut self.f;
        for key in keys {
            backend.value_modify(state, &key, &(), |s| match s {
                Some(s) => f.on_end_of_input(&key, s, &mut Collector::new(out, None)),
                None => Ok(()),
            })??;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        self.state.snapshot(ctx)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.state.backend.notify_checkpoint_complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.state.backend.notify_checkpoint_aborted(checkpoint_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::key::{FieldKey, I64ModKey, ValueKey};

    fn ctx(key: Arc<dyn KeySelector>) -> OperatorContext {
        OperatorContext {
            job_id: JobId([0; 16]),
            operator_name: "t".into(),
            operator_uid: "t".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: Some(key),
            key_selector2: None,
            collect: None,
            state: crate::state::StateContext::default(),
        }
    }

    #[test]
    fn reduce_emits_running_accumulator_per_key() {
        let mut op = ReduceOperator::new(
            |acc: &mut Value, v: Value| {
                let (Value::Tuple(a), Value::Tuple(b)) = (acc, v) else {
                    unreachable!("test input is tuples")
                };
                a[1] = Value::I64(a[1].as_i64().unwrap_or(0) + b[1].as_i64().unwrap_or(0));
                Ok(())
            },
            &ctx(Arc::new(FieldKey { index: 0 })),
        )
        .unwrap();
        let t = |k: &str, n: i64| StreamRecord::new(Value::Tuple(vec![k.into(), n.into()]));
        let mut input = vec![t("a", 1), t("b", 5), t("a", 2)];
        let mut out = Vec::new();
        op.process_batch(&mut input, &mut out).unwrap();
        let got: Vec<String> = out.iter().map(|r| r.value.to_string()).collect();
        assert_eq!(got, ["(a,1)", "(b,5)", "(a,3)"]);
    }

    struct Count;
    impl KeyedProcessFunction for Count {
        type State = i64;
        fn process(
            &mut self,
            _: &Value,
            s: &mut i64,
            _: &Value,
            _: &mut ProcessContext<'_>,
            _: &mut Collector<'_>,
        ) -> Result<()> {
            *s += 1;
            Ok(())
        }
        fn on_end_of_input(
            &mut self,
            k: &Value,
            s: &mut i64,
            out: &mut Collector<'_>,
        ) -> Result<()> {
            out.collect(Value::Tuple(vec![k.clone(), Value::I64(*s)]));
            Ok(())
        }
    }

    #[test]
    fn process_keeps_state_per_key_and_flushes_in_key_order() {
        let mut op =
            KeyedProcessOperator::new(Count, &ctx(Arc::new(I64ModKey { modulus: 3 }))).unwrap();
        let mut input: Vec<_> = (0..10).map(StreamRecord::new).collect();
        let mut out = Vec::new();
        op.process_batch(&mut input, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(op.num_keys().unwrap(), 3);
        op.end_input(&mut out).unwrap();
        let got: Vec<String> = out.iter().map(|r| r.value.to_string()).collect();
        assert_eq!(got, ["(0,4)", "(1,3)", "(2,3)"]);
    }

    #[test]
    fn keyed_operator_without_key_is_an_error() {
        let mut c = ctx(Arc::new(FieldKey { index: 0 }));
        c.key_selector = None;
        assert!(KeyedProcessOperator::new(Count, &c).is_err());
    }

    /// Counts per key; every record (re)arms an event-time timer 10 after it (the
    /// previous one is deleted: a timeout per key) and a processing-time timer 100 ms
    /// after the current time; timers emit (key, count, kind) and send late records
    /// (behind the watermark) to a side output.
    struct Timeout;
    impl KeyedProcessFunction for Timeout {
        type State = (i64, i64);
        fn process(
            &mut self,
            _: &Value,
            s: &mut (i64, i64),
            v: &Value,
            ctx: &mut ProcessContext<'_>,
            _: &mut Collector<'_>,
        ) -> Result<()> {
            let ts = ctx.timestamp().unwrap_or(0);
            if ts <= ctx.timer_service().current_watermark() {
                ctx.output(&OutputTag::new("late"), v.clone());
                return Ok(());
            }
            s.0 += 1;
            if s.1 != 0 {
                ctx.timer_service().delete_event_time_timer(s.1);
            }
            s.1 = ts + 10;
            ctx.timer_service().register_event_time_timer(ts + 10);
            let now = ctx.timer_service().current_processing_time();
            ctx.timer_service()
                .register_processing_time_timer(now + 100);
            Ok(())
        }
        fn on_timer(
            &mut self,
            t: i64,
            key: &Value,
            s: &mut (i64, i64),
            ctx: &mut ProcessContext<'_>,
            out: &mut Collector<'_>,
        ) -> Result<()> {
            let kind = match ctx.time_domain() {
                Some(TimeDomain::EventTime) => "event",
                _ => "processing",
            };
            out.collect(Value::Tuple(vec![
                key.clone(),
                Value::I64(s.0),
                kind.into(),
                Value::I64(t),
            ]));
            Ok(())
        }
    }

    fn strings(out: &mut Vec<StreamRecord>) -> Vec<String> {
        out.drain(..).map(|r| r.value.to_string()).collect()
    }

    fn timeout_ctx(clock: Arc<crate::timer::ManualClock>) -> OperatorContext {
        let mut c = ctx(Arc::new(FieldKey { index: 0 }));
        c.state.clock = clock;
        c
    }

    #[test]
    fn process_function_timers_fire_on_watermark_and_processing_time() {
        let clock = crate::timer::ManualClock::new(1_000);
        let mut op = KeyedProcessOperator::new(Timeout, &timeout_ctx(clock.clone())).unwrap();
        let t = |k: &str, ts: i64| StreamRecord::with_timestamp(Value::Tuple(vec![k.into()]), ts);
        let mut out = Vec::new();
        op.process_batch(&mut vec![t("a", 5), t("b", 7), t("a", 8)], &mut out)
            .unwrap();
        // a's timer at 15 was replaced by 18; processing timers deduplicated at 1100.
        assert_eq!(op.timers().len(TimeDomain::EventTime), 2);
        assert_eq!(op.timers().len(TimeDomain::ProcessingTime), 2);
        assert_eq!(op.next_processing_timer(), Some(1_100));
        op.process_watermark(16, &mut out).unwrap();
        assert!(
            out.is_empty(),
            "nothing fires before 17: {:?}",
            strings(&mut out)
        );
        op.process_watermark(17, &mut out).unwrap();
        let got = strings(&mut out);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with(",1,event,17)"), "{got:?}");
        // A late record goes to the side output.
        op.process_batch(&mut vec![t("c", 3)], &mut out).unwrap();
        assert!(out.is_empty());
        let mut late = Vec::new();
        op.drain_side_outputs(&mut |tag, r| {
            late.push((tag.to_owned(), r.len()));
            r.clear();
            Ok(())
        })
        .unwrap();
        assert_eq!(late, [("late".to_owned(), 1)]);
        // Processing time: nothing before 1100, both keys at 1100.
        clock.set(1_099);
        op.on_processing_time(1_099, &mut out).unwrap();
        assert!(out.is_empty());
        op.on_processing_time(1_100, &mut out).unwrap();
        let got = strings(&mut out);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got.iter().all(|g| g.contains(",processing,1100)")),
            "{got:?}"
        );
        assert_eq!(op.next_processing_timer(), None);
        op.process_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(strings(&mut out).len(), 1);
    }

    #[test]
    fn process_function_timers_survive_snapshot_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::timer::ManualClock::new(1_000);
        let c = timeout_ctx(clock.clone());
        let mut op = KeyedProcessOperator::new(Timeout, &c).unwrap();
        let t = |k: &str, ts: i64| StreamRecord::with_timestamp(Value::Tuple(vec![k.into()]), ts);
        let mut out = Vec::new();
        op.process_batch(&mut vec![t("a", 5), t("b", 7)], &mut out)
            .unwrap();
        let target = target(dir.path(), 3);
        let handle = op
            .snapshot_state(&SnapshotContext {
                checkpoint_id: 3,
                target: target.clone(),
            })
            .unwrap()
            .run(0)
            .unwrap();
        let snapshot = OperatorSnapshot {
            uid: "t".into(),
            name: "t".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![handle],
        };
        let mut restored = KeyedProcessOperator::new(Timeout, &c).unwrap();
        restored
            .initialize_state(&mut StateInitContext::restoring(
                target.exclusive_dir.clone(),
                snapshot,
                target.storage.clone(),
            ))
            .unwrap();
        assert_eq!(restored.timers().len(TimeDomain::EventTime), 2);
        assert_eq!(restored.next_processing_timer(), Some(1_100));
        restored.process_watermark(15, &mut out).unwrap();
        let got = strings(&mut out);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got, ["(a,1,event,15)"]);
    }

    #[test]
    fn timers_rescale_with_their_key_groups() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::timer::ManualClock::new(0);
        let sub = |i: u32, p: u32| {
            let mut c = timeout_ctx(clock.clone());
            c.operator_uid = "timeout".into();
            c.subtask_index = i;
            c.parallelism = p;
            c
        };
        let keys: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();
        // The key is field 0 of the record, the string itself.
        let owner =
            |k: &str, p: u32| operator_index_for_key(Value::from(k).stable_hash(), p, 128) as usize;
        let mut two: Vec<_> = (0..2)
            .map(|i| KeyedProcessOperator::new(Timeout, &sub(i, 2)).unwrap())
            .collect();
        let mut out = Vec::new();
        for (n, k) in keys.iter().enumerate() {
            let r = StreamRecord::with_timestamp(Value::Tuple(vec![k.as_str().into()]), n as i64);
            two[owner(k, 2)]
                .process_batch(&mut vec![r], &mut out)
                .unwrap();
        }
        let target = target(dir.path(), 9);
        let sctx = SnapshotContext {
            checkpoint_id: 9,
            target: target.clone(),
        };
        let snapshot = OperatorSnapshot {
            uid: "timeout".into(),
            name: "t".into(),
            parallelism: 2,
            max_parallelism: 128,
            subtasks: two
                .iter_mut()
                .enumerate()
                .map(|(i, op)| op.snapshot_state(&sctx).unwrap().run(i as u32).unwrap())
                .collect(),
        };
        let mut fired = Vec::new();
        for i in 0..3u32 {
            let mut op = KeyedProcessOperator::new(Timeout, &sub(i, 3)).unwrap();
            op.initialize_state(&mut StateInitContext::restoring(
                target.exclusive_dir.clone(),
                snapshot.clone(),
                target.storage.clone(),
            ))
            .unwrap();
            op.process_watermark(i64::MAX, &mut out).unwrap();
            for r in out.drain(..) {
                let k = r.value.as_tuple().unwrap()[0].to_string();
                // Each restored subtask fires only the timers of keys it owns.
                assert_eq!(owner(&k, 3), i as usize, "{k}");
                fired.push(k);
            }
        }
        fired.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(
            fired, want,
            "every key's event-time timer fires exactly once"
        );
    }

    // ---- state survives operator instances (snapshot → restore, rescale) ----

    use crate::key_group::operator_index_for_key;
    use crate::state::{SnapshotContext, StateInitContext};
    use rill_state::snapshot::{OperatorSnapshot, SnapshotKind};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage, SnapshotTarget};

    const MOD: i64 = 10;

    fn sub_ctx(subtask: u32, parallelism: u32) -> OperatorContext {
        let mut c = ctx(Arc::new(I64ModKey { modulus: MOD }));
        c.operator_uid = "count".into();
        c.subtask_index = subtask;
        c.parallelism = parallelism;
        c
    }

    fn target(dir: &std::path::Path, id: u64) -> SnapshotTarget {
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir));
        CheckpointLayout::new(dir, "job").target(storage, id, SnapshotKind::Checkpoint)
    }

    /// Snapshots every instance (subtask `i` = `ops[i]`) into checkpoint `id`.
    fn snapshot_all(
        ops: &mut [KeyedProcessOperator<Count>],
        dir: &std::path::Path,
        id: u64,
    ) -> (SnapshotTarget, OperatorSnapshot) {
        let target = target(dir, id);
        let ctx = SnapshotContext {
            checkpoint_id: id,
            target: target.clone(),
        };
        let subtasks = ops
            .iter_mut()
            .enumerate()
            .map(|(i, op)| op.snapshot_state(&ctx).unwrap().run(i as u32).unwrap())
            .collect();
        let snapshot = OperatorSnapshot {
            uid: "count".into(),
            name: "t".into(),
            parallelism: ops.len() as u32,
            max_parallelism: 128,
            subtasks,
        };
        (target, snapshot)
    }

    /// `parallelism` instances restored from `from` (or empty).
    fn instances(
        parallelism: u32,
        from: Option<&(SnapshotTarget, OperatorSnapshot)>,
    ) -> Vec<KeyedProcessOperator<Count>> {
        (0..parallelism)
            .map(|i| {
                let c = sub_ctx(i, parallelism);
                let mut op = KeyedProcessOperator::new(Count, &c).unwrap();
                let mut init = match from {
                    Some((t, snap)) => StateInitContext::restoring(
                        t.exclusive_dir.clone(),
                        snap.clone(),
                        t.storage.clone(),
                    ),
                    None => StateInitContext::empty(),
                };
                op.initialize_state(&mut init).unwrap();
                op
            })
            .collect()
    }

    /// Feeds `values` to the instance owning each key, as a hash edge would.
    fn route(ops: &mut [KeyedProcessOperator<Count>], values: std::ops::Range<i64>) {
        let p = ops.len() as u32;
        for v in values {
            let key = Value::I64(v.rem_euclid(MOD));
            let owner = operator_index_for_key(key.stable_hash(), p, 128) as usize;
            let mut out = Vec::new();
            ops[owner]
                .process_batch(&mut vec![StreamRecord::new(v)], &mut out)
                .unwrap();
        }
    }

    fn finish(ops: &mut [KeyedProcessOperator<Count>]) -> Vec<String> {
        let mut got: Vec<String> = ops
            .iter_mut()
            .flat_map(|op| {
                let mut out = Vec::new();
                op.end_input(&mut out).unwrap();
                out
            })
            .map(|r| r.value.to_string())
            .collect();
        got.sort();
        got
    }

    fn expected(counts: i64) -> Vec<String> {
        let mut e: Vec<String> = (0..MOD).map(|k| format!("({k},{counts})")).collect();
        e.sort();
        e
    }

    #[test]
    fn counts_continue_after_snapshot_and_restore_into_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let mut ops = instances(1, None);
        route(&mut ops, 0..100);
        let snap = snapshot_all(&mut ops, dir.path(), 1);
        // Changes after the snapshot are not in it.
        route(&mut ops, 0..1000);
        let mut restored = instances(1, Some(&snap));
        assert_eq!(restored[0].num_keys().unwrap(), MOD as usize);
        route(&mut restored, 0..50);
        assert_eq!(finish(&mut restored), expected(15));
        // A never-snapshotted instance fed the same records agrees.
        let mut reference = instances(1, None);
        route(&mut reference, 0..100);
        route(&mut reference, 0..50);
        assert_eq!(finish(&mut reference), expected(15));
    }

    #[test]
    fn rescale_two_to_three_keeps_every_key_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut two = instances(2, None);
        route(&mut two, 0..200);
        let snap = snapshot_all(&mut two, dir.path(), 1);
        assert_eq!(snap.1.subtasks.len(), 2);
        let mut three = instances(3, Some(&snap));
        // Each new subtask holds only keys it owns, and together all keys.
        let mut total = 0;
        for (i, op) in three.iter_mut().enumerate() {
            let keys = op.state.keys().unwrap();
            for k in &keys {
                assert_eq!(operator_index_for_key(k.stable_hash(), 3, 128), i as u32);
            }
            total += keys.len();
        }
        assert_eq!(total, MOD as usize);
        route(&mut three, 0..100);
        assert_eq!(finish(&mut three), expected(30));
    }

    #[test]
    fn reduce_accumulators_survive_restore() {
        let dir = tempfile::tempdir().unwrap();
        let sum = |acc: &mut Value, v: Value| {
            *acc = Value::I64(acc.as_i64().unwrap_or(0) + v.as_i64().unwrap_or(0));
            Ok(())
        };
        let c = ctx(Arc::new(ValueKey));
        let mut op = ReduceOperator::new(sum, &c).unwrap();
        let mut out = Vec::new();
        op.process_batch(
            &mut vec![StreamRecord::new(3), StreamRecord::new(4)],
            &mut out,
        )
        .unwrap();
        let target = target(dir.path(), 7);
        let handle = op
            .snapshot_state(&SnapshotContext {
                checkpoint_id: 7,
                target: target.clone(),
            })
            .unwrap()
            .run(0)
            .unwrap();
        let snapshot = OperatorSnapshot {
            uid: "t".into(),
            name: "t".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![handle],
        };
        let mut restored = ReduceOperator::new(sum, &c).unwrap();
        restored
            .initialize_state(&mut StateInitContext::restoring(
                target.exclusive_dir.clone(),
                snapshot,
                target.storage.clone(),
            ))
            .unwrap();
        let mut out = Vec::new();
        restored
            .process_batch(&mut vec![StreamRecord::new(3)], &mut out)
            .unwrap();
        // Key 3 (the whole value) had accumulator 3; key 4 is untouched.
        assert_eq!(out[0].value, Value::I64(6));
    }
}
