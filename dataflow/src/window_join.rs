//! Window join (Flink's `DataStream.join(other).where(k1).equalTo(k2).window(w).apply(f)`):
//! the pairs of records with equal keys in the same window.
//!
//! Built as Flink builds it, by co-grouping in an ordinary window operator: each input is
//! tagged with its side (`rill.map.tag_input`: `v` → `(side, v)`, 1 or 2), the two are
//! unioned and keyed by [`TaggedKey`] (`rill.key.tagged`, input 1's key selector on side-1
//! records and input 2's on side-2 records), and a [`WindowedStream`] holds both sides'
//! elements per key and window. So every assigner works — tumbling, sliding and
//! **merging session** windows — with triggers, allowed lateness and late side outputs,
//! and window contents live in keyed state like any window's. When a window fires, the
//! join's window function ([`CoGroup`] over a registered [`JoinFunction`], see
//! [`OperatorRegistry::register_window_join`](crate::registry::OperatorRegistry::register_window_join))
//! calls the function for every (left, right) pair, in arrival order.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::environment::DataStream;
use crate::error::{DataflowError, Result};
use crate::key::KeySelector;
use crate::operator::Collector;
use crate::spec::FactoryRef;
use crate::value::Value;
use crate::window::{ProcessWindowFunction, Window, WindowAssigner, WindowContext, WindowedStream};

/// `rill.map.tag_input`.
pub const TAG_INPUT: &str = "rill.map.tag_input";
/// `rill.key.tagged`.
pub const TAGGED_KEY: &str = "rill.key.tagged";

/// Map: `v` → `(side, v)`.
pub fn tag_input(side: i64) -> FactoryRef {
    FactoryRef::builtin(TAG_INPUT, &side)
}

/// Configuration of `rill.key.tagged`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggedKeyConfig {
    /// Key selector of side-1 values.
    pub first: FactoryRef,
    /// Key selector of side-2 values.
    pub second: FactoryRef,
}

/// Key selector: `first`'s key of side-1 values `(1, v)`, `second`'s of side-2 values.
pub fn tagged(first: FactoryRef, second: FactoryRef) -> FactoryRef {
    FactoryRef::builtin(TAGGED_KEY, &TaggedKeyConfig { first, second })
}

/// The key of a tagged value (see the module docs).
pub struct TaggedKey {
    /// Side 1's key selector.
    pub first: Arc<dyn KeySelector>,
    /// Side 2's key selector.
    pub second: Arc<dyn KeySelector>,
}

/// Splits a tagged value into its side and value.
fn untag(v: &Value) -> Result<(i64, &Value)> {
    match v.as_tuple() {
        Some([Value::I64(side @ (1 | 2)), inner]) => Ok((*side, inner)),
        _ => Err(DataflowError::TypeMismatch {
            operator: TAGGED_KEY.into(),
            expected: "a (side, value) pair with side 1 or 2",
            actual: v.type_name(),
        }),
    }
}

impl KeySelector for TaggedKey {
    fn key<'a>(&self, value: &'a Value) -> Result<Cow<'a, Value>> {
        match untag(value)? {
            (1, v) => self.first.key(v),
            (_, v) => self.second.key(v),
        }
    }
}

/// Called for every pair of a window join (Flink's `JoinFunction`, with the window).
pub trait JoinFunction: Send + 'static {
    /// `left` (input 1) and `right` (input 2) have equal keys and share `window`.
    fn join(
        &mut self,
        left: &Value,
        right: &Value,
        window: &Window,
        out: &mut Collector<'_>,
    ) -> Result<()>;
}

/// The window function of a join: the cross product of a window's two sides.
pub struct CoGroup<J>(pub J);

impl<J: JoinFunction> ProcessWindowFunction for CoGroup<J> {
    fn process(
        &mut self,
        _key: &Value,
        ctx: &WindowContext,
        elements: &[Value],
        out: &mut Collector<'_>,
    ) -> Result<()> {
        let mut left = Vec::new();
        let mut right = Vec::new();
        for e in elements {
            match untag(e)? {
                (1, v) => left.push(v),
                (_, v) => right.push(v),
            }
        }
        for l in &left {
            for r in &right {
                self.0.join(l, r, &ctx.window, out)?;
            }
        }
        Ok(())
    }
}

/// `left.join(&right)`: the key selectors follow.
pub struct JoinedStreams {
    left: DataStream,
    right: DataStream,
}

/// A window join with its left key.
pub struct JoinWhere {
    join: JoinedStreams,
    left_key: FactoryRef,
}

/// A window join with both keys: a window assigner follows.
pub struct JoinWhereEqual {
    join: JoinedStreams,
    left_key: FactoryRef,
    right_key: FactoryRef,
}

impl DataStream {
    /// Joins this stream (left) with `right` in windows (see [`window_join`](crate::window_join)).
    pub fn join(&self, right: &DataStream) -> JoinedStreams {
        JoinedStreams {
            left: self.clone(),
            right: right.clone(),
        }
    }
}

impl JoinedStreams {
    /// The left stream's key selector.
    pub fn where_key(self, key: FactoryRef) -> JoinWhere {
        JoinWhere {
            join: self,
            left_key: key,
        }
    }
}

impl JoinWhere {
    /// The right stream's key selector.
    pub fn equal_to(self, key: FactoryRef) -> JoinWhereEqual {
        JoinWhereEqual {
            join: self.join,
            left_key: self.left_key,
            right_key: key,
        }
    }
}

impl JoinWhereEqual {
    /// Windows of `assigner` over both sides: end with
    /// [`WindowedStream::process`] and a function registered with `register_window_join`
    /// (triggers, lateness and late side outputs can be set in between).
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream {
        let JoinedStreams { left, right } = self.join;
        let l = left.map(tag_input(1)).name("join: tag left");
        let r = right.map(tag_input(2)).name("join: tag right");
        l.union(&[&r])
            .key_by(tagged(self.left_key, self.right_key))
            .window(assigner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::StreamRecord;
    use crate::environment::StreamExecutionEnvironment;
    use crate::registry::OperatorRegistry;
    use crate::{builtins, key, OperatorContext, OperatorKind};

    /// Emits `(key, left field 1, right field 1, window start)`.
    struct Pair;
    impl JoinFunction for Pair {
        fn join(
            &mut self,
            l: &Value,
            r: &Value,
            w: &Window,
            out: &mut Collector<'_>,
        ) -> Result<()> {
            let f = |v: &Value, i: usize| {
                v.as_tuple()
                    .and_then(|t| t.get(i).cloned())
                    .unwrap_or_default()
            };
            out.collect(Value::Tuple(vec![
                f(l, 0),
                f(l, 1),
                f(r, 1),
                w.start().into(),
            ]));
            Ok(())
        }
    }

    fn rec(k: &str, t: i64) -> StreamRecord {
        StreamRecord::with_timestamp(Value::Tuple(vec![k.into(), t.into()]), t)
    }

    /// Runs the join of `left` and `right` (each `(key, ts)` at ts, out of order) under
    /// `assigner` the way the graph does: the tag maps, the tagged key, the window
    /// operator built from the registry; rows sorted.
    fn run(
        assigner: WindowAssigner,
        left: Vec<StreamRecord>,
        right: Vec<StreamRecord>,
    ) -> Vec<String> {
        let mut registry = OperatorRegistry::new();
        registry
            .register_window_join("t.pair", |()| Ok(Pair))
            .unwrap();
        let env = StreamExecutionEnvironment::new();
        let a = env.add_source(builtins::collection(vec![]));
        let b = env.add_source(builtins::collection(vec![]));
        a.join(&b)
            .where_key(key::by_field(0))
            .equal_to(key::by_field(0))
            .window(assigner)
            .process(FactoryRef::unit("t.pair"))
            .sink(builtins::blackhole());
        let job = env.job_graph("j").unwrap();
        job.validate(&registry).unwrap();
        let ops: Vec<_> = job
            .vertices
            .iter()
            .flat_map(|v| &v.operators)
            .map(|o| &o.spec)
            .collect();
        let tag = |i: usize| {
            ops.iter()
                .filter(|s| s.factory.name == TAG_INPUT)
                .nth(i)
                .unwrap()
        };
        let window = ops.iter().find(|s| s.kind == OperatorKind::Window).unwrap();
        let ctx = OperatorContext {
            job_id: crate::ids::JobId([0; 16]),
            operator_name: "w".into(),
            operator_uid: "w".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_selector: window
                .key
                .as_ref()
                .map(|k| registry.key_selector(k).unwrap()),
            key_selector2: None,
            collect: None,
            state: crate::state::StateContext::default(),
        };
        let mut w = registry.create_operator(window, &ctx).unwrap();
        let mut tagged = Vec::new();
        for (i, batch) in [left, right].into_iter().enumerate() {
            let mut m = registry.create_operator(tag(i), &ctx).unwrap();
            let mut out = Vec::new();
            m.process_batch(&mut batch.clone(), &mut out).unwrap();
            tagged.push(out);
        }
        let mut out = Vec::new();
        // Interleave: right first, then left, then the final watermark.
        w.process_batch(&mut tagged[1], &mut out).unwrap();
        w.process_batch(&mut tagged[0], &mut out).unwrap();
        w.process_watermark(i64::MAX, &mut out).unwrap();
        let mut rows: Vec<String> = out.iter().map(|r| r.value.to_string()).collect();
        rows.sort();
        rows
    }

    #[test]
    fn tumbling_window_join_pairs_within_a_window() {
        let rows = run(
            WindowAssigner::tumbling_event_time(10),
            vec![rec("a", 12), rec("a", 3), rec("b", 5)],
            vec![rec("a", 7), rec("a", 15), rec("a", 25), rec("c", 5)],
        );
        assert_eq!(rows, ["(a,12,15,10)", "(a,3,7,0)"]);
    }

    #[test]
    fn sliding_window_join_pairs_in_every_shared_window() {
        // Size 10 every 5: 3 is in [-5,5) and [0,10), 7 in [0,10) and [5,15): they share
        // one window; 8 shares both of its windows with 6 and one with 12.
        let rows = run(
            WindowAssigner::sliding_event_time(10, 5),
            vec![rec("a", 3)],
            vec![rec("a", 7), rec("a", 12)],
        );
        assert_eq!(rows, ["(a,3,7,0)"]);
        let rows = run(
            WindowAssigner::sliding_event_time(10, 5),
            vec![rec("a", 8)],
            vec![rec("a", 6), rec("a", 12)],
        );
        assert_eq!(rows, ["(a,8,12,5)", "(a,8,6,0)", "(a,8,6,5)"]);
    }

    #[test]
    fn session_window_join_merges_both_sides() {
        // Gap 5: left 1, right 4, left 8 merge into one session [1, 13); right 20 alone.
        let rows = run(
            WindowAssigner::event_time_session(5),
            vec![rec("a", 8), rec("a", 1)],
            vec![rec("a", 20), rec("a", 4)],
        );
        assert_eq!(rows, ["(a,1,4,1)", "(a,8,4,1)"]);
    }

    #[test]
    fn untagged_values_are_typed_errors() {
        let k = TaggedKey {
            first: Arc::new(key::ValueKey),
            second: Arc::new(key::ValueKey),
        };
        assert!(k.key(&Value::I64(3)).is_err());
        assert!(k
            .key(&Value::Tuple(vec![Value::I64(3), Value::I64(1)]))
            .is_err());
        assert_eq!(
            k.key(&Value::Tuple(vec![Value::I64(2), Value::I64(1)]))
                .unwrap()
                .into_owned(),
            Value::I64(1)
        );
    }
}
