//! Triggers: when a window's function runs and when its contents are purged (Flink's
//! `EventTimeTrigger`, `ProcessingTimeTrigger`, `CountTrigger`, `PurgingTrigger`,
//! `ContinuousEventTimeTrigger` and the global windows' `NeverTrigger`).
//!
//! A trigger reacts to elements, to timers it registered and to merges of session
//! windows. Its per-window state — one `i64` (the count, the next continuous firing) —
//! is keyed state under the window as namespace, so it is in every snapshot.

use rill_state::{KeyedStateBackend, ValueState};
use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::timer::{InternalTimerService, TimeDomain};
use crate::value::Value;
use crate::window::assigner::Window;

/// When a window fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// Fires once the watermark passes the window's end (and again for every late
    /// element within the allowed lateness).
    EventTime,
    /// Fires once processing time passes the window's end.
    ProcessingTime,
    /// Fires every `max` elements (the count restarts after each firing).
    Count {
        /// Elements per firing (≥ 1).
        max: u64,
    },
    /// Fires whenever `inner` fires, and purges the window's contents each time.
    Purging(Box<Trigger>),
    /// Fires every `interval` of event time while the window is open, and at its end.
    ContinuousEventTime {
        /// Event time between firings (ms, ≥ 1).
        interval: i64,
    },
    /// Never fires (global windows without a trigger).
    Never,
}

/// What a trigger decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerResult {
    /// Run the window function on the contents.
    pub fire: bool,
    /// Clear the contents afterwards.
    pub purge: bool,
}

impl TriggerResult {
    const CONTINUE: Self = Self {
        fire: false,
        purge: false,
    };
    const FIRE: Self = Self {
        fire: true,
        purge: false,
    };
}

/// What a trigger acts on: the current key and window, their timers and the trigger's
/// state.
pub(crate) struct TriggerContext<'a> {
    pub(crate) backend: &'a mut KeyedStateBackend<Value>,
    pub(crate) timers: &'a mut InternalTimerService<Window>,
    pub(crate) state: ValueState<Window, i64>,
    pub(crate) key: &'a Value,
    pub(crate) window: Window,
}

impl TriggerContext<'_> {
    fn register(&mut self, domain: TimeDomain, t: i64) -> Result<()> {
        self.timers
            .register(self.backend, domain, self.key, &self.window, t)
    }

    fn delete(&mut self, domain: TimeDomain, t: i64) -> Result<()> {
        self.timers
            .delete(self.backend, domain, self.key, &self.window, t)
    }

    fn get(&mut self, window: &Window) -> Result<Option<i64>> {
        Ok(self.backend.value_get(&self.state, self.key, window)?)
    }

    fn set(&mut self, v: Option<i64>) -> Result<()> {
        let w = self.window;
        self.backend
            .value_modify(&self.state, self.key, &w, |s| *s = v)?;
        Ok(())
    }
}

impl Trigger {
    /// Checks counts and intervals.
    pub fn validate(&self) -> Result<()> {
        match self {
            Trigger::Count { max: 0 } => Err(DataflowError::InvalidConfig {
                factory: "window trigger".into(),
                reason: "a count trigger needs max ≥ 1".into(),
            }),
            Trigger::ContinuousEventTime { interval } if *interval <= 0 => {
                Err(DataflowError::InvalidConfig {
                    factory: "window trigger".into(),
                    reason: format!("a continuous trigger needs interval ≥ 1, got {interval}"),
                })
            }
            Trigger::Purging(inner) => inner.validate(),
            _ => Ok(()),
        }
    }

    pub(crate) fn on_element(
        &self,
        timestamp: Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        let max_ts = ctx.window.max_timestamp();
        match self {
            Trigger::EventTime => {
                if max_ts <= ctx.timers.current_watermark() {
                    // A late element within the allowed lateness: fire right away.
                    return Ok(TriggerResult::FIRE);
                }
                ctx.register(TimeDomain::EventTime, max_ts)?;
                Ok(TriggerResult::CONTINUE)
            }
            Trigger::ProcessingTime => {
                ctx.register(TimeDomain::ProcessingTime, max_ts)?;
                Ok(TriggerResult::CONTINUE)
            }
            Trigger::Count { max } => {
                let w = ctx.window;
                let count = ctx.get(&w)?.unwrap_or(0) + 1;
                if count as u64 >= *max {
                    ctx.set(None)?;
                    Ok(TriggerResult::FIRE)
                } else {
                    ctx.set(Some(count))?;
                    Ok(TriggerResult::CONTINUE)
                }
            }
            Trigger::Purging(inner) => Ok(purging(inner.on_element(timestamp, ctx)?)),
            Trigger::ContinuousEventTime { interval } => {
                if max_ts <= ctx.timers.current_watermark() {
                    return Ok(TriggerResult::FIRE);
                }
                ctx.register(TimeDomain::EventTime, max_ts)?;
                let w = ctx.window;
                if let (None, Some(t)) = (ctx.get(&w)?, timestamp) {
                    // Java's `%`: the first firing is aligned to the interval.
                    register_next_fire(t - (t % interval), *interval, ctx)?;
                }
                Ok(TriggerResult::CONTINUE)
            }
            Trigger::Never => Ok(TriggerResult::CONTINUE),
        }
    }

    pub(crate) fn on_event_time(
        &self,
        time: i64,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        match self {
            Trigger::EventTime => Ok(if time == ctx.window.max_timestamp() {
                TriggerResult::FIRE
            } else {
                TriggerResult::CONTINUE
            }),
            Trigger::Purging(inner) => Ok(purging(inner.on_event_time(time, ctx)?)),
            Trigger::ContinuousEventTime { interval } => {
                if time == ctx.window.max_timestamp() {
                    return Ok(TriggerResult::FIRE);
                }
                let w = ctx.window;
                if ctx.get(&w)? == Some(time) {
                    ctx.set(None)?;
                    register_next_fire(time, *interval, ctx)?;
                    return Ok(TriggerResult::FIRE);
                }
                Ok(TriggerResult::CONTINUE)
            }
            Trigger::ProcessingTime | Trigger::Count { .. } | Trigger::Never => {
                Ok(TriggerResult::CONTINUE)
            }
        }
    }

    /// A processing-time timer fired (no built-in trigger needs its context here).
    pub(crate) fn on_processing_time(&self) -> TriggerResult {
        match self {
            Trigger::ProcessingTime => TriggerResult::FIRE,
            Trigger::Purging(inner) => purging(inner.on_processing_time()),
            Trigger::EventTime
            | Trigger::Count { .. }
            | Trigger::ContinuousEventTime { .. }
            | Trigger::Never => TriggerResult::CONTINUE,
        }
    }

    /// `ctx.window` is the merge result of `merged` (windows that existed before).
    pub(crate) fn on_merge(&self, merged: &[Window], ctx: &mut TriggerContext<'_>) -> Result<()> {
        let max_ts = ctx.window.max_timestamp();
        match self {
            Trigger::EventTime => {
                if max_ts > ctx.timers.current_watermark() {
                    ctx.register(TimeDomain::EventTime, max_ts)?;
                }
                Ok(())
            }
            Trigger::ProcessingTime => {
                if max_ts > ctx.timers.current_processing_time() {
                    ctx.register(TimeDomain::ProcessingTime, max_ts)?;
                }
                Ok(())
            }
            Trigger::Count { .. } => {
                let w = ctx.window;
                let mut sum = ctx.get(&w)?;
                for m in merged {
                    if let Some(c) = ctx.get(m)? {
                        sum = Some(sum.unwrap_or(0) + c);
                    }
                }
                ctx.set(sum)
            }
            Trigger::Purging(inner) => inner.on_merge(merged, ctx),
            Trigger::ContinuousEventTime { .. } => {
                let w = ctx.window;
                let mut next = ctx.get(&w)?;
                for m in merged {
                    if let Some(t) = ctx.get(m)? {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
                ctx.set(next)?;
                if let Some(t) = next {
                    ctx.register(TimeDomain::EventTime, t)?;
                }
                Ok(())
            }
            Trigger::Never => Ok(()),
        }
    }

    /// The window is gone (cleaned up, or merged into another): deletes the trigger's
    /// timers and state.
    pub(crate) fn clear(&self, ctx: &mut TriggerContext<'_>) -> Result<()> {
        let max_ts = ctx.window.max_timestamp();
        match self {
            Trigger::EventTime => ctx.delete(TimeDomain::EventTime, max_ts),
            Trigger::ProcessingTime => ctx.delete(TimeDomain::ProcessingTime, max_ts),
            Trigger::Count { .. } => ctx.set(None),
            Trigger::Purging(inner) => inner.clear(ctx),
            Trigger::ContinuousEventTime { .. } => {
                let w = ctx.window;
                if let Some(t) = ctx.get(&w)? {
                    ctx.delete(TimeDomain::EventTime, t)?;
                }
                ctx.set(None)
            }
            Trigger::Never => Ok(()),
        }
    }
}

fn purging(r: TriggerResult) -> TriggerResult {
    if r.fire {
        TriggerResult {
            fire: true,
            purge: true,
        }
    } else {
        r
    }
}

/// Flink's `registerNextFireTimestamp`: the next firing `interval` after `time`, never
/// after the window's end.
fn register_next_fire(time: i64, interval: i64, ctx: &mut TriggerContext<'_>) -> Result<()> {
    let next = time
        .saturating_add(interval)
        .min(ctx.window.max_timestamp());
    ctx.set(Some(next))?;
    ctx.register(TimeDomain::EventTime, next)
}
