//! Keyed operators with in-memory per-key state: `reduce` and keyed `process`.
//!
//! State lives in a hash map from key to state inside the operator, on the task's heap
//! (the state backends of DESIGN §6 replace this later; the operator API stays). The map
//! uses FxHash: keys come from our own records, and HashDoS is not a concern for an
//! engine that runs the user's own code anyway. A key is cloned only when it is first
//! seen, since key selectors return borrowed keys where they can.
//!
//! At end of input, per-key callbacks run in key order, so bounded jobs produce
//! deterministic output.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::value::Value;

fn required_key(ctx: &OperatorContext) -> Result<Arc<dyn KeySelector>> {
    ctx.key_selector.clone().ok_or_else(|| {
        DataflowError::InvalidGraph(format!(
            "keyed operator `{}` has no key selector (it must follow key_by)",
            ctx.operator_name
        ))
    })
}

/// Folds the values of each key with `f(accumulator, value)` and emits the updated
/// accumulator after every record (Flink's `reduce`). The first value of a key becomes
/// its accumulator.
pub struct ReduceOperator<F> {
    f: F,
    key: Arc<dyn KeySelector>,
    state: FxHashMap<Value, Value>,
}

impl<F> ReduceOperator<F>
where
    F: FnMut(&mut Value, Value) -> Result<()> + Send,
{
    /// A reduce operator over `f`, keyed by the context's key selector.
    pub fn new(f: F, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            f,
            key: required_key(ctx)?,
            state: FxHashMap::default(),
        })
    }
}

impl<F> Operator for ReduceOperator<F>
where
    F: FnMut(&mut Value, Value) -> Result<()> + Send,
{
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            let key = self.key.key(&r.value)?.into_owned();
            let updated = match self.state.get_mut(&key) {
                Some(acc) => {
                    (self.f)(acc, r.value)?;
                    acc.clone()
                }
                None => {
                    self.state.insert(key, r.value.clone());
                    r.value
                }
            };
            out.push(StreamRecord {
                value: updated,
                timestamp: r.timestamp,
            });
        }
        Ok(())
    }
}

/// Per-key processing logic with typed per-key state (the keyed `process` of the API).
pub trait KeyedProcessFunction: Send + 'static {
    /// The state kept for each key; starts as `Default`.
    type State: Default + Send;

    /// Processes one record of `key`.
    fn process(
        &mut self,
        key: &Value,
        state: &mut Self::State,
        value: &Value,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// Called once per key, in key order, when the input has ended.
    fn on_end_of_input(
        &mut self,
        _key: &Value,
        _state: &mut Self::State,
        _out: &mut Collector<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Runs a [`KeyedProcessFunction`] with in-memory per-key state.
pub struct KeyedProcessOperator<P: KeyedProcessFunction> {
    f: P,
    key: Arc<dyn KeySelector>,
    state: FxHashMap<Value, P::State>,
}

impl<P: KeyedProcessFunction> KeyedProcessOperator<P> {
    /// A keyed process operator over `f`, keyed by the context's key selector.
    pub fn new(f: P, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            f,
            key: required_key(ctx)?,
            state: FxHashMap::default(),
        })
    }

    /// Number of keys with state (for tests and metrics).
    pub fn num_keys(&self) -> usize {
        self.state.len()
    }
}

impl<P: KeyedProcessFunction> Operator for KeyedProcessOperator<P> {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            let key = self.key.key(&r.value)?;
            let mut c = Collector::new(out, r.timestamp);
            if let Some(s) = self.state.get_mut(key.as_ref()) {
                self.f.process(&key, s, &r.value, &mut c)?;
            } else {
                let key = key.into_owned();
                let mut s = P::State::default();
                self.f.process(&key, &mut s, &r.value, &mut c)?;
                self.state.insert(key, s);
            }
        }
        Ok(())
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        let mut entries: Vec<_> = self.state.iter_mut().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, state) in entries {
            self.f
                .on_end_of_input(key, state, &mut Collector::new(out, None))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::key::{FieldKey, I64ModKey};

    fn ctx(key: Arc<dyn KeySelector>) -> OperatorContext {
        OperatorContext {
            job_id: JobId([0; 16]),
            operator_name: "t".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: Some(key),
            collect: None,
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
        assert_eq!(op.num_keys(), 3);
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
}
