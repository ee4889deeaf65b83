//! Process functions over two connected streams: [`CoProcessFunction`] (`connect` →
//! `process`) and [`KeyedCoProcessFunction`] (keyed `connect` → `process`), Flink's
//! functions of the same names.
//!
//! A keyed co-process function gets the state of the current key, its timers and side
//! outputs through the same [`ProcessContext`] as a [`KeyedProcessFunction`]: the
//! operator *is* a [`KeyedProcessOperator`] (one keyed backend, one value state per key,
//! one timer service), whose function and key selector switch with the input of the
//! batch. So state, timers, end of input, snapshots and rescaling behave exactly as for
//! keyed `process`, and records of both inputs with equal keys share one state.

use std::sync::Arc;

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::keyed::{KeyedProcessFunction, KeyedProcessOperator, ProcessContext};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::side_output::{OutputTag, SideOutputs};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::two_input::{InputSide, TwoInputOperator};
use crate::value::Value;

/// What a [`CoProcessFunction`] sees besides the record.
pub struct CoProcessContext<'a> {
    timestamp: Option<i64>,
    watermark: i64,
    side: &'a mut SideOutputs,
}

impl CoProcessContext<'_> {
    /// The timestamp of the record being processed.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The operator's combined input watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
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

/// Processes the records of two connected, non-keyed streams, one call per record of
/// either input (Flink's `CoProcessFunction`). Keeps whatever it likes in `self`; that
/// is not checkpointed (use the keyed variant for state).
pub trait CoProcessFunction: Send + 'static {
    /// One record of input 1.
    fn process1(
        &mut self,
        value: Value,
        ctx: &mut CoProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// One record of input 2.
    fn process2(
        &mut self,
        value: Value,
        ctx: &mut CoProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// Both inputs ended.
    fn on_end_of_input(&mut self, _out: &mut Collector<'_>) -> Result<()> {
        Ok(())
    }
}

/// Runs a [`CoProcessFunction`].
pub struct CoProcessOperator<F> {
    f: F,
    watermark: i64,
    side: SideOutputs,
}

impl<F: CoProcessFunction> CoProcessOperator<F> {
    /// An operator over `f`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            watermark: i64::MIN,
            side: SideOutputs::default(),
        }
    }

    fn run(
        &mut self,
        side: InputSide,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            let mut ctx = CoProcessContext {
                timestamp: r.timestamp,
                watermark: self.watermark,
                side: &mut self.side,
            };
            let mut c = Collector::new(out, r.timestamp);
            match side {
                InputSide::First => self.f.process1(r.value, &mut ctx, &mut c)?,
                InputSide::Second => self.f.process2(r.value, &mut ctx, &mut c)?,
            }
        }
        Ok(())
    }
}

impl<F: CoProcessFunction> TwoInputOperator for CoProcessOperator<F> {
    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.run(InputSide::First, input, out)
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.run(InputSide::Second, input, out)
    }

    fn process_watermark(&mut self, watermark: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        Ok(())
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.side.drain(sink)
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.f.on_end_of_input(&mut Collector::new(out, None))
    }
}

/// Per-key processing of two connected keyed streams with one typed state per key,
/// timers and side outputs (Flink's `KeyedCoProcessFunction`). Records of input 1 and
/// input 2 whose keys (by their own key selectors) are equal see the same state.
pub trait KeyedCoProcessFunction: Send + 'static {
    /// The state kept for each key; starts as `Default`.
    type State: rill_state::StateData + Default;

    /// One record of input 1 of `key`.
    fn process1(
        &mut self,
        key: &Value,
        state: &mut Self::State,
        value: &Value,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// One record of input 2 of `key`.
    fn process2(
        &mut self,
        key: &Value,
        state: &mut Self::State,
        value: &Value,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// A timer of `key` fired (as [`KeyedProcessFunction::on_timer`]).
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

    /// Once per key with state, in key order, after both inputs ended.
    fn on_end_of_input(
        &mut self,
        _key: &Value,
        _state: &mut Self::State,
        _out: &mut Collector<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// A [`KeyedCoProcessFunction`] seen as a one-input [`KeyedProcessFunction`] whose
/// input side is switched between batches.
pub(crate) struct Sided<P> {
    f: P,
    side: InputSide,
}

impl<P: KeyedCoProcessFunction> KeyedProcessFunction for Sided<P> {
    type State = P::State;

    #[inline]
    fn process(
        &mut self,
        key: &Value,
        state: &mut P::State,
        value: &Value,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        match self.side {
            InputSide::First => self.f.process1(key, state, value, ctx, out),
            InputSide::Second => self.f.process2(key, state, value, ctx, out),
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        key: &Value,
        state: &mut P::State,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        self.f.on_timer(timestamp, key, state, ctx, out)
    }

    fn on_end_of_input(
        &mut self,
        key: &Value,
        state: &mut P::State,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        self.f.on_end_of_input(key, state, out)
    }
}

/// Runs a [`KeyedCoProcessFunction`] (see the module docs).
pub struct KeyedCoProcessOperator<P: KeyedCoProcessFunction> {
    inner: KeyedProcessOperator<Sided<P>>,
    keys: [Arc<dyn KeySelector>; 2],
}

impl<P: KeyedCoProcessFunction> KeyedCoProcessOperator<P> {
    /// An operator over `f`, keyed by the context's two key selectors.
    pub fn new(f: P, ctx: &OperatorContext) -> Result<Self> {
        let missing = || {
            DataflowError::InvalidGraph(format!(
                "keyed two-input operator `{}` needs a key selector per input",
                ctx.operator_name
            ))
        };
        let k1 = ctx.key_selector.clone().ok_or_else(missing)?;
        let k2 = ctx.key_selector2.clone().ok_or_else(missing)?;
        let inner = KeyedProcessOperator::new(
            Sided {
                f,
                side: InputSide::First,
            },
            ctx,
        )?;
        Ok(Self {
            inner,
            keys: [k1, k2],
        })
    }

    fn select(&mut self, side: InputSide) {
        if self.inner.function_mut().side != side {
            self.inner.function_mut().side = side;
            let k = match side {
                InputSide::First => self.keys[0].clone(),
                InputSide::Second => self.keys[1].clone(),
            };
            self.inner.set_key_selector(k);
        }
    }
}

impl<P: KeyedCoProcessFunction> TwoInputOperator for KeyedCoProcessOperator<P> {
    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.inner.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        self.inner.snapshot_state(ctx)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.inner.notify_checkpoint_complete(checkpoint_id)
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.inner.notify_checkpoint_aborted(checkpoint_id)
    }

    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.select(InputSide::First);
        self.inner.process_batch(input, out)
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.select(InputSide::Second);
        self.inner.process_batch(input, out)
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.process_watermark(watermark, out)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.inner.next_processing_timer()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.on_processing_time(now_ms, out)
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.inner.drain_side_outputs(sink)
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.end_input(out)
    }
}
