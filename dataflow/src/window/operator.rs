//! The window operator (Flink's `WindowOperator` and `EvictingWindowOperator` in one).
//!
//! # State, all in the operator's keyed backend
//!
//! | state | namespace | holds |
//! |---|---|---|
//! | `window-contents` | the (state) window | accumulator or elements ([`Contents`]) |
//! | `window-trigger` | the window | the trigger's `i64` (count, next continuous firing) |
//! | `window-merging` | `()` | session windows: window → state window ([`MergingWindowSet`]) |
//! | `_timer/window/*` | (time, window) | trigger and cleanup timers ([`timer`](crate::timer)) |
//!
//! so open windows, their triggers and timers are in every snapshot and rescale with
//! their key group.
//!
//! # Per element (Flink's `processElement`)
//!
//! The assigner gives the element's windows (sessions are first merged into the key's
//! [`MergingWindowSet`]: triggers `on_merge`, merged windows' triggers cleared and their
//! cleanup timers deleted, contents merged into the state window). For each window that
//! is not late — a window is late when its cleanup time `max_timestamp +
//! allowed_lateness` is at or before the watermark (event time only) — the element is
//! added to the contents, the trigger decides (fire, purge), and the cleanup timer is
//! registered (none for windows ending at `i64::MAX`). An element that went into no
//! window and is itself late (`timestamp + allowed_lateness ≤ watermark`) goes to the
//! late-data side output if one is set, and is dropped otherwise.
//!
//! # Per timer (Flink's `onEventTime` / `onProcessingTime`)
//!
//! The trigger decides for the timer's window if it has contents; at the window's
//! cleanup time (in the assigner's time domain) its contents, trigger state and merging
//! entry are removed. With the default event-time trigger and no lateness the firing
//! timer and the cleanup timer are the same timer (`end - 1`): the window fires when the
//! watermark reaches `end - 1` and is gone right after. With lateness `l`, every late
//! element until the watermark reaches `end - 1 + l` fires the window again.
//!
//! Results carry the window's `max_timestamp` as timestamp. At the end of a bounded
//! input the final watermark (`i64::MAX`) fires every event-time window; processing-time
//! windows still open are not fired (as in Flink).

use std::sync::Arc;

use rill_state::{KeyedStateBackend, ValueState, ValueStateDescriptor};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::side_output::SideOutputs;
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::timer::{InternalTimerService, TimeDomain, Timer};
use crate::value::Value;
use crate::window::assigner::Window;
use crate::window::function::{Contents, WindowContext, WindowFunction};
use crate::window::merging::MergingWindowSet;
use crate::window::trigger::{Trigger, TriggerContext, TriggerResult};
use crate::window::WindowSpec;

/// Name of the window contents state.
pub const CONTENTS_STATE: &str = "window-contents";
/// Name of the trigger state.
pub const TRIGGER_STATE: &str = "window-trigger";
/// Name of the session windows' merging state.
pub const MERGING_STATE: &str = "window-merging";
/// Name of the window operator's timer service.
pub const WINDOW_TIMERS: &str = "window";

struct States {
    contents: ValueState<Window, Contents>,
    trigger: ValueState<Window, i64>,
    merging: ValueState<(), Vec<(Window, Window)>>,
}

impl States {
    fn register(backend: &mut KeyedStateBackend<Value>) -> Result<Self> {
        Ok(Self {
            contents: backend.value_state(&ValueStateDescriptor::new(CONTENTS_STATE))?,
            trigger: backend.value_state(&ValueStateDescriptor::new(TRIGGER_STATE))?,
            merging: backend.value_state(&ValueStateDescriptor::new(MERGING_STATE))?,
        })
    }
}

/// Everything but the function: what the per-window steps borrow together.
struct Core {
    spec: WindowSpec,
    trigger: Trigger,
    is_event_time: bool,
    backend: KeyedStateBackend<Value>,
    states: States,
    timers: InternalTimerService<Window>,
}

impl Core {
    fn trigger_ctx<'a>(
        &'a mut self,
        key: &'a Value,
        window: Window,
    ) -> (&'a Trigger, TriggerContext<'a>) {
        (
            &self.trigger,
            TriggerContext {
                backend: &mut self.backend,
                timers: &mut self.timers,
                state: self.states.trigger,
                key,
                window,
            },
        )
    }

    fn on_element(
        &mut self,
        key: &Value,
        window: Window,
        ts: Option<i64>,
    ) -> Result<TriggerResult> {
        let (trigger, mut ctx) = self.trigger_ctx(key, window);
        trigger.on_element(ts, &mut ctx)
    }

    fn clear_trigger(&mut self, key: &Value, window: Window) -> Result<()> {
        let (trigger, mut ctx) = self.trigger_ctx(key, window);
        trigger.clear(&mut ctx)
    }

    /// `max_timestamp + allowed_lateness` for event time (saturating: `i64::MAX` means
    /// never), `max_timestamp` for processing time.
    fn cleanup_time(&self, w: &Window) -> i64 {
        if self.is_event_time {
            w.max_timestamp().saturating_add(self.spec.allowed_lateness)
        } else {
            w.max_timestamp()
        }
    }

    fn cleanup_domain(&self) -> TimeDomain {
        if self.is_event_time {
            TimeDomain::EventTime
        } else {
            TimeDomain::ProcessingTime
        }
    }

    fn register_cleanup_timer(&mut self, key: &Value, w: &Window) -> Result<()> {
        let t = self.cleanup_time(w);
        if t == i64::MAX {
            return Ok(());
        }
        let d = self.cleanup_domain();
        self.timers.register(&mut self.backend, d, key, w, t)
    }

    fn delete_cleanup_timer(&mut self, key: &Value, w: &Window) -> Result<()> {
        let t = self.cleanup_time(w);
        if t == i64::MAX {
            return Ok(());
        }
        let d = self.cleanup_domain();
        self.timers.delete(&mut self.backend, d, key, w, t)
    }

    fn is_window_late(&self, w: &Window) -> bool {
        self.is_event_time && self.cleanup_time(w) <= self.timers.current_watermark()
    }

    fn is_element_late(&self, ts: Option<i64>) -> bool {
        self.is_event_time
            && ts.is_some_and(|t| {
                t.saturating_add(self.spec.allowed_lateness) <= self.timers.current_watermark()
            })
    }

    fn contents(&mut self, key: &Value, state_window: &Window) -> Result<Option<Contents>> {
        Ok(self
            .backend
            .value_get(&self.states.contents, key, state_window)?)
    }

    fn set_contents(
        &mut self,
        key: &Value,
        state_window: &Window,
        c: Option<Contents>,
    ) -> Result<()> {
        self.backend
            .value_modify(&self.states.contents, key, state_window, |s| *s = c)?;
        Ok(())
    }

    fn merging_set(&mut self, key: &Value) -> Result<MergingWindowSet> {
        Ok(MergingWindowSet::from_pairs(
            self.backend
                .value_get(&self.states.merging, key, &())?
                .unwrap_or_default(),
        ))
    }

    fn persist_merging_set(&mut self, key: &Value, set: &MergingWindowSet) -> Result<()> {
        let pairs = set.to_pairs();
        self.backend
            .value_modify(&self.states.merging, key, &(), |s| {
                *s = (!pairs.is_empty()).then_some(pairs)
            })?;
        Ok(())
    }
}

/// A keyed window operator; see the module docs.
pub struct WindowOperator {
    ctx: OperatorContext,
    key: Arc<dyn KeySelector>,
    core: Core,
    function: WindowFunction,
    side: SideOutputs,
    /// Windows of the element being processed (reused).
    windows: Vec<Window>,
    /// Late elements dropped for want of a late-data side output.
    late_dropped: u64,
}

impl WindowOperator {
    /// A window operator running `function` on the windows `spec` describes, keyed by the
    /// context's key selector.
    pub(crate) fn new(
        spec: WindowSpec,
        function: WindowFunction,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        spec.validate()?;
        let key = ctx.key_selector.clone().ok_or_else(|| {
            DataflowError::InvalidGraph(format!(
                "window operator `{}` has no key selector (it must follow key_by)",
                ctx.operator_name
            ))
        })?;
        let mut backend = ctx.create_keyed_backend::<Value>()?;
        let states = States::register(&mut backend)?;
        let timers =
            InternalTimerService::new(&mut backend, WINDOW_TIMERS, ctx.state.clock.clone())?;
        let trigger = spec
            .trigger
            .clone()
            .unwrap_or_else(|| spec.assigner.default_trigger());
        Ok(Self {
            ctx: ctx.clone(),
            key,
            core: Core {
                is_event_time: spec.assigner.is_event_time(),
                spec,
                trigger,
                backend,
                states,
                timers,
            },
            function,
            side: SideOutputs::default(),
            windows: Vec::new(),
            late_dropped: 0,
        })
    }

    /// Late elements dropped because no late-data side output is set.
    pub fn late_records_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// The keyed state backend (tests, tools).
    pub fn backend_mut(&mut self) -> &mut KeyedStateBackend<Value> {
        &mut self.core.backend
    }

    /// The operator's timers (tests, tools).
    pub fn timers(&self) -> &InternalTimerService<Window> {
        &self.core.timers
    }

    fn window_context(&self, window: Window) -> WindowContext {
        WindowContext {
            window,
            current_watermark: self.core.timers.current_watermark(),
            current_processing_time: self.core.timers.current_processing_time(),
        }
    }

    /// Runs the function on `contents` of `window`; writes back what an evictor left
    /// unless the window is purged anyway.
    fn emit(
        &mut self,
        key: &Value,
        window: Window,
        state_window: &Window,
        mut contents: Contents,
        purge: bool,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let wctx = self.window_context(window);
        let evictor = self.core.spec.evictor.as_ref();
        self.function.emit(
            key,
            &wctx,
            &mut contents,
            evictor,
            &mut Collector::new(out, Some(window.max_timestamp())),
        )?;
        if evictor.is_some() && !purge {
            self.core.set_contents(key, state_window, Some(contents))?;
        }
        Ok(())
    }

    /// Adds the element to `state_window`'s contents, asks the trigger about `window`,
    /// and registers the cleanup timer (Flink's per-window steps of `processElement`).
    fn add_and_trigger(
        &mut self,
        key: &Value,
        window: Window,
        state_window: Window,
        record: &StreamRecord,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let state = self.core.states.contents;
        let f = &mut self.function;
        let (ts, value) = (record.timestamp, record.value.clone());
        self.core
            .backend
            .value_modify(&state, key, &state_window, |c| f.add(c, ts, value))??;
        let result = self.core.on_element(key, window, record.timestamp)?;
        if result.fire {
            let Some(contents) = self.core.contents(key, &state_window)? else {
                return Ok(());
            };
            self.emit(key, window, &state_window, contents, result.purge, out)?;
        }
        if result.purge {
            self.core.set_contents(key, &state_window, None)?;
        }
        self.core.register_cleanup_timer(key, &window)
    }

    fn process_element(&mut self, record: StreamRecord, out: &mut Vec<StreamRecord>) -> Result<()> {
        let key = self.key.key(&record.value)?.into_owned();
        let now = if self.core.is_event_time {
            0
        } else {
            self.core.timers.current_processing_time()
        };
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        let res = self
            .core
            .spec
            .assigner
            .assign(&record.value, record.timestamp, now, &mut windows)
            .and_then(|()| {
                if self.core.spec.assigner.is_merging() {
                    self.process_merging(&key, &windows, &record, out)
                } else {
                    self.process_plain(&key, &windows, &record, out)
                }
            });
        self.windows = windows;
        let skipped = res?;
        if skipped && self.core.is_element_late(record.timestamp) {
            match &self.core.spec.late_data {
                Some(tag) => self.side.push(tag, record),
                None => self.late_dropped += 1,
            }
        }
        Ok(())
    }

    /// Returns whether the element went into no window.
    fn process_plain(
        &mut self,
        key: &Value,
        windows: &[Window],
        record: &StreamRecord,
        out: &mut Vec<StreamRecord>,
    ) -> Result<bool> {
        let mut skipped = true;
        for &w in windows {
            if self.core.is_window_late(&w) {
                continue;
            }
            skipped = false;
            self.add_and_trigger(key, w, w, record, out)?;
        }
        Ok(skipped)
    }

    fn process_merging(
        &mut self,
        key: &Value,
        windows: &[Window],
        record: &StreamRecord,
        out: &mut Vec<StreamRecord>,
    ) -> Result<bool> {
        let mut set = self.core.merging_set(key)?;
        let mut skipped = true;
        for &w in windows {
            let (actual, merges) = set.add_window(w);
            for m in merges {
                self.merge(key, m)?;
            }
            if self.core.is_window_late(&actual) {
                set.retire(&actual);
                continue;
            }
            skipped = false;
            let Some(state_window) = set.state_window(&actual) else {
                return Err(DataflowError::Operator {
                    operator: self.ctx.operator_name.clone(),
                    message: format!("session window {actual:?} has no state window"),
                });
            };
            self.add_and_trigger(key, actual, state_window, record, out)?;
        }
        self.core.persist_merging_set(key, &set)?;
        Ok(skipped)
    }

    /// Flink's `MergeFunction.merge` of the window operator.
    fn merge(&mut self, key: &Value, m: crate::window::merging::Merge) -> Result<()> {
        let core = &mut self.core;
        let max_ts = m.result.max_timestamp();
        if core.is_event_time
            && max_ts.saturating_add(core.spec.allowed_lateness) <= core.timers.current_watermark()
        {
            return Err(DataflowError::Operator {
                operator: self.ctx.operator_name.clone(),
                message: format!(
                    "the end timestamp of an event-time window cannot become earlier than the current watermark by merging (watermark {}, window {:?})",
                    core.timers.current_watermark(),
                    m.result
                ),
            });
        }
        if !core.is_event_time && max_ts <= core.timers.current_processing_time() {
            return Err(DataflowError::Operator {
                operator: self.ctx.operator_name.clone(),
                message: format!(
                    "the end timestamp of a processing-time window cannot become earlier than the current processing time by merging (processing time {}, window {:?})",
                    core.timers.current_processing_time(),
                    m.result
                ),
            });
        }
        {
            let (trigger, mut ctx) = core.trigger_ctx(key, m.result);
            trigger.on_merge(&m.merged, &mut ctx)?;
        }
        for w in &m.merged {
            core.clear_trigger(key, *w)?;
            core.delete_cleanup_timer(key, w)?;
        }
        let mut target = core.contents(key, &m.state_window)?;
        for s in &m.merged_state_windows {
            if let Some(c) = core.contents(key, s)? {
                core.set_contents(key, s, None)?;
                self.function.merge(&mut target, c)?;
            }
        }
        self.core.set_contents(key, &m.state_window, target)
    }

    /// Flink's `onEventTime` / `onProcessingTime`.
    fn on_timer(
        &mut self,
        timer: Timer<Window>,
        domain: TimeDomain,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let key = timer.key;
        let window = timer.namespace;
        let mut set = None;
        let state_window = if self.core.spec.assigner.is_merging() {
            let s = self.core.merging_set(&key)?;
            let Some(sw) = s.state_window(&window) else {
                // A timer of a window merged away whose trigger did not delete it:
                // its state is gone already.
                return Ok(());
            };
            set = Some(s);
            sw
        } else {
            window
        };
        if let Some(contents) = self.core.contents(&key, &state_window)? {
            let result = {
                let (trigger, mut ctx) = self.core.trigger_ctx(&key, window);
                match domain {
                    TimeDomain::EventTime => trigger.on_event_time(timer.timestamp, &mut ctx)?,
                    TimeDomain::ProcessingTime => trigger.on_processing_time(),
                }
            };
            if result.fire {
                self.emit(&key, window, &state_window, contents, result.purge, out)?;
            }
            if result.purge {
                self.core.set_contents(&key, &state_window, None)?;
            }
        }
        let cleanup_domain_matches = self.core.is_event_time == (domain == TimeDomain::EventTime);
        if cleanup_domain_matches && timer.timestamp == self.core.cleanup_time(&window) {
            self.core.set_contents(&key, &state_window, None)?;
            self.core.clear_trigger(&key, window)?;
            if let Some(s) = &mut set {
                s.retire(&window);
            }
        }
        if let Some(s) = &set {
            self.core.persist_merging_set(&key, s)?;
        }
        Ok(())
    }
}

impl Operator for WindowOperator {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        if init.is_restored() {
            let mut backend = init.keyed_backend::<Value>(&self.ctx)?;
            self.core.states = States::register(&mut backend)?;
            self.core.timers = self.core.timers.reopen(&mut backend)?;
            self.core.backend = backend;
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            self.process_element(r, out)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.core.timers.advance_watermark(watermark);
        while let Some(t) = self.core.timers.pop_event_timer(&mut self.core.backend)? {
            self.on_timer(t, TimeDomain::EventTime, out)?;
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.core.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        while let Some(t) = self
            .core
            .timers
            .pop_processing_timer(&mut self.core.backend, now_ms)?
        {
            self.on_timer(t, TimeDomain::ProcessingTime, out)?;
        }
        Ok(())
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.side.drain(sink)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot {
            keyed: Some(self.core.backend.snapshot(ctx.target.clone())?),
            operator: None,
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.core.backend.notify_checkpoint_complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.core.backend.notify_checkpoint_aborted(checkpoint_id);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if self.late_dropped > 0 {
            tracing::info!(
                operator = %self.ctx.operator_name,
                dropped = self.late_dropped,
                "late records dropped (no late-data side output)"
            );
        }
        Ok(())
    }
}
