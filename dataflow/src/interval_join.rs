//! Interval join of two keyed streams (Flink's `KeyedStream.intervalJoin`):
//! `left.key_by(k1).interval_join(&right.key_by(k2)).between(lower, upper).process(f)`
//! calls `f(left, right)` for every pair of equal keys with
//! `left.ts + lower ≤ right.ts ≤ left.ts + upper` (both bounds inclusive, in ms); the
//! result carries the larger of the two timestamps.
//!
//! **State.** Each side's records wait in keyed map state by timestamp
//! (`interval_join/left`, `interval_join/right`: timestamp → records), so they are
//! checkpointed and rescaled with their key group. A record joins every buffered record
//! of the other side in range on arrival, then waits for later partners.
//!
//! **Cleanup.** A left record at `t` can meet no new right record once event time passed
//! `t + upper` (a later right record in range would be late), a right record at `t` none
//! after `t - lower`; an event-time cleanup timer at that time (namespace: the side and
//! `t`) removes it when the watermark reaches it. Records behind the watermark on arrival are
//! late and dropped, as in Flink. Records without a timestamp are an error.
//!
//! **Functions** are registered with
//! [`OperatorRegistry::register_process_join`](crate::registry::OperatorRegistry::register_process_join):
//! the registered factory's configuration is a [`WithParams`](crate::spec::WithParams) of
//! the bounds and the function's own configuration, built by the API from the user's
//! [`FactoryRef`].

use std::sync::Arc;

use rill_state::{KeyedStateBackend, MapState, MapStateDescriptor};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::spec::FactoryRef;

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::operator::{Collector, OperatorContext};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::timer::{InternalTimerService, TimeDomain};
use crate::two_input::TwoInputOperator;
use crate::value::Value;

/// The bounds of an interval join, in ms relative to the left record's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalBounds {
    /// Lower bound (inclusive).
    pub lower: i64,
    /// Upper bound (inclusive), `≥ lower`.
    pub upper: i64,
}

impl IntervalBounds {
    /// Checks `lower ≤ upper`.
    pub fn validate(&self) -> Result<()> {
        if self.lower > self.upper {
            return Err(DataflowError::InvalidConfig {
                factory: "interval_join".into(),
                reason: format!(
                    "lower bound {} is above upper bound {}",
                    self.lower, self.upper
                ),
            });
        }
        Ok(())
    }
}

/// What a join function knows about the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinContext {
    /// The left record's timestamp.
    pub left_timestamp: i64,
    /// The right record's timestamp.
    pub right_timestamp: i64,
}

impl JoinContext {
    /// The result's timestamp: the larger of the two.
    pub fn timestamp(&self) -> i64 {
        self.left_timestamp.max(self.right_timestamp)
    }
}

/// Called for every joined pair (Flink's `ProcessJoinFunction`).
pub trait ProcessJoinFunction: Send + 'static {
    /// One pair of records with equal keys within the bounds.
    fn process_element(
        &mut self,
        left: &Value,
        right: &Value,
        ctx: &JoinContext,
        out: &mut Collector<'_>,
    ) -> Result<()>;
}

/// Side namespaces of the cleanup timers.
const LEFT: u8 = 1;
const RIGHT: u8 = 2;

type Buffer = MapState<(), i64, Vec<Value>>;

/// Runs an interval join (see the module docs).
pub struct IntervalJoinOperator<F> {
    f: F,
    bounds: IntervalBounds,
    ctx: OperatorContext,
    keys: [Arc<dyn KeySelector>; 2],
    backend: KeyedStateBackend<Value>,
    left: Buffer,
    right: Buffer,
    timers: InternalTimerService<(u8, i64)>,
}

fn buffers(backend: &mut KeyedStateBackend<Value>) -> Result<(Buffer, Buffer)> {
    Ok((
        backend.map_state(&MapStateDescriptor::new("interval_join/left"))?,
        backend.map_state(&MapStateDescriptor::new("interval_join/right"))?,
    ))
}

impl<F: ProcessJoinFunction> IntervalJoinOperator<F> {
    /// A join of `f` within `bounds`, keyed by the context's two key selectors.
    pub fn new(f: F, bounds: IntervalBounds, ctx: &OperatorContext) -> Result<Self> {
        bounds.validate()?;
        let missing = || {
            DataflowError::InvalidGraph(format!(
                "interval join `{}` needs a key selector per input",
                ctx.operator_name
            ))
        };
        let keys = [
            ctx.key_selector.clone().ok_or_else(missing)?,
            ctx.key_selector2.clone().ok_or_else(missing)?,
        ];
        let mut backend = ctx.create_keyed_backend::<Value>()?;
        let (left, right) = buffers(&mut backend)?;
        let timers =
            InternalTimerService::new(&mut backend, "interval_join", ctx.state.clock.clone())?;
        Ok(Self {
            f,
            bounds,
            ctx: ctx.clone(),
            keys,
            backend,
            left,
            right,
            timers,
        })
    }

    /// Number of buffered records of (left, right), over all keys (tests, metrics).
    pub fn buffered(&mut self) -> Result<(usize, usize)> {
        let count = |s: &Buffer, backend: &mut KeyedStateBackend<Value>| -> Result<usize> {
            let mut n = 0;
            for k in backend.keys(s.id(), &())? {
                backend.set_current_key(k)?;
                n += backend
                    .map_entries(s, &())?
                    .iter()
                    .map(|(_, v)| v.len())
                    .sum::<usize>();
            }
            Ok(n)
        };
        let l = count(&self.left, &mut self.backend)?;
        let r = count(&self.right, &mut self.backend)?;
        Ok((l, r))
    }

    fn run(
        &mut self,
        side: u8,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let (IntervalBounds { lower, upper }, wm) = (self.bounds, self.timers.current_watermark());
        for r in input.drain(..) {
            let Some(t) = r.timestamp else {
                return Err(DataflowError::TypeMismatch {
                    operator: self.ctx.operator_name.clone(),
                    expected: "records with event-time timestamps",
                    actual: "a record without a timestamp",
                });
            };
            if t < wm {
                continue;
            }
            let key = self.keys[usize::from(side - 1)].key(&r.value)?.into_owned();
            self.backend.set_current_key(key.clone())?;
            // Saturating: timestamps come from the input and must not overflow.
            let (mine, other, range, cleanup) = if side == LEFT {
                (
                    &self.left,
                    &self.right,
                    (t.saturating_add(lower), t.saturating_add(upper)),
                    t.saturating_add(upper.max(0)),
                )
            } else {
                (
                    &self.right,
                    &self.left,
                    (t.saturating_sub(upper), t.saturating_sub(lower)),
                    t.saturating_sub(lower.min(0)),
                )
            };
            for (ot, values) in self.backend.map_entries(other, &())? {
                if ot < range.0 || ot > range.1 {
                    continue;
                }
                for v in &values {
                    let (l, rv, c) = if side == LEFT {
                        (
                            &r.value,
                            v,
                            JoinContext {
                                left_timestamp: t,
                                right_timestamp: ot,
                            },
                        )
                    } else {
                        (
                            v,
                            &r.value,
                            JoinContext {
                                left_timestamp: ot,
                                right_timestamp: t,
                            },
                        )
                    };
                    let mut c_out = Collector::new(out, Some(c.timestamp()));
                    self.f.process_element(l, rv, &c, &mut c_out)?;
                }
            }
            let mut bucket = self.backend.map_get(mine, &(), &t)?.unwrap_or_default();
            bucket.push(r.value);
            self.backend.map_put(mine, &(), t, bucket)?;
            self.timers.register(
                &mut self.backend,
                TimeDomain::EventTime,
                &key,
                &(side, t),
                cleanup,
            )?;
        }
        Ok(())
    }
}

impl<F: ProcessJoinFunction> TwoInputOperator for IntervalJoinOperator<F> {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        if init.is_restored() {
            let mut backend = init.keyed_backend::<Value>(&self.ctx)?;
            (self.left, self.right) = buffers(&mut backend)?;
            self.timers = self.timers.reopen(&mut backend)?;
            self.backend = backend;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot {
            keyed: Some(self.backend.snapshot(ctx.target.clone())?),
            operator: None,
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.backend.notify_checkpoint_complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.backend.notify_checkpoint_aborted(checkpoint_id);
        Ok(())
    }

    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.run(LEFT, input, out)
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.run(RIGHT, input, out)
    }

    fn process_watermark(&mut self, watermark: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        self.timers.advance_watermark(watermark);
        while let Some(timer) = self.timers.pop_event_timer(&mut self.backend)? {
            let (side, t) = timer.namespace;
            let buffer = if side == LEFT {
                &self.left
            } else {
                &self.right
            };
            self.backend.set_current_key(timer.key)?;
            self.backend.map_remove(buffer, &(), &t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::environment::StreamExecutionEnvironment;
    use crate::registry::OperatorRegistry;
    use crate::{builtins, key, Operator};

    /// Emits `(left field 1, right field 1)`.
    pub(crate) struct Pair;
    impl ProcessJoinFunction for Pair {
        fn process_element(
            &mut self,
            l: &Value,
            r: &Value,
            _: &JoinContext,
            out: &mut Collector<'_>,
        ) -> Result<()> {
            let f = |v: &Value| {
                v.as_tuple()
                    .and_then(|t| t.get(1).cloned())
                    .unwrap_or_default()
            };
            out.collect(Value::Tuple(vec![f(l), f(r)]));
            Ok(())
        }
    }

    pub(crate) fn rec(k: &str, t: i64) -> StreamRecord {
        StreamRecord::with_timestamp(Value::Tuple(vec![k.into(), t.into()]), t)
    }

    /// The head operator of the job's last vertex, built from the registry as a task
    /// builds it, with the context's key selectors.
    pub(crate) fn build_head(
        registry: &OperatorRegistry,
        env: &StreamExecutionEnvironment,
    ) -> Box<dyn Operator> {
        let job = env.job_graph("join").unwrap();
        job.validate(registry).unwrap();
        let v = job
            .vertices
            .iter()
            .find(|v| v.operators[0].spec.kind.is_two_input())
            .unwrap();
        let spec = &v.operators[0].spec;
        let ctx = OperatorContext {
            job_id: crate::ids::JobId([0; 16]),
            operator_name: "join".into(),
            operator_uid: "join".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: spec.key.as_ref().map(|k| registry.key_selector(k).unwrap()),
            key_selector2: spec
                .key2
                .as_ref()
                .map(|k| registry.key_selector(k).unwrap()),
            collect: None,
            state: crate::state::StateContext::default(),
        };
        registry.create_operator(spec, &ctx).unwrap()
    }

    fn rows(out: &mut Vec<StreamRecord>) -> Vec<String> {
        out.drain(..)
            .map(|r| format!("{}@{}", r.value, r.timestamp.unwrap_or(-1)))
            .collect()
    }

    /// Bounds [-2, 3] on small out-of-order inputs: pairs in range on arrival of either
    /// side, cleanup at the watermark (a cleaned record joins nothing later), late
    /// records dropped, results at the larger timestamp.
    #[test]
    fn interval_join_pairs_in_bounds_and_cleans_up_at_the_watermark() {
        let mut registry = OperatorRegistry::new();
        registry
            .register_process_join("t.pair", |()| Ok(Pair))
            .unwrap();
        let env = StreamExecutionEnvironment::new();
        let l = env.add_source(builtins::collection(vec![]));
        let r = env.add_source(builtins::collection(vec![]));
        l.key_by(key::by_field(0))
            .interval_join(&r.key_by(key::by_field(0)))
            .between(-2, 3)
            .process(FactoryRef::unit("t.pair"))
            .sink(builtins::blackhole());
        let mut op = build_head(&registry, &env);
        let mut out = Vec::new();
        op.process_batch(&mut vec![rec("a", 5), rec("a", 10)], &mut out)
            .unwrap();
        assert!(out.is_empty());
        op.process_batch2(&mut vec![rec("a", 8), rec("a", 3), rec("b", 9)], &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["(5,8)@8", "(10,8)@10", "(5,3)@5"]);
        // Cleans left 5 (at 8) and right 3 (at 5); right 8 waits until 10.
        op.process_watermark(9, &mut out).unwrap();
        op.process_batch2(&mut vec![rec("a", 14), rec("a", 12), rec("a", 7)], &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["(10,12)@12"]);
        op.process_batch(&mut vec![rec("a", 11), rec("b", 4)], &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["(11,12)@12", "(11,14)@14"]);
        // Bounds at the end of time saturate instead of overflowing.
        op.process_batch(&mut vec![rec("z", i64::MAX - 1)], &mut out)
            .unwrap();
        op.process_batch2(&mut vec![rec("z", i64::MAX)], &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            [format!("({},{})@{}", i64::MAX - 1, i64::MAX, i64::MAX)]
        );
        op.process_watermark(i64::MAX, &mut out).unwrap();
        assert!(out.is_empty());
        assert!(op
            .process_batch(
                &mut vec![StreamRecord::new(Value::Tuple(vec!["a".into()]))],
                &mut out
            )
            .is_err());
    }

    #[test]
    fn inverted_bounds_are_a_build_error() {
        let registry = {
            let mut r = OperatorRegistry::new();
            r.register_process_join("t.pair", |()| Ok(Pair)).unwrap();
            r
        };
        let env = StreamExecutionEnvironment::new();
        let l = env.add_source(builtins::collection(vec![]));
        l.key_by(key::by_field(0))
            .interval_join(&l.key_by(key::by_field(0)))
            .between(3, -2)
            .process(FactoryRef::unit("t.pair"));
        assert!(env.job_graph("j").is_err());
        drop(registry);
    }
}
