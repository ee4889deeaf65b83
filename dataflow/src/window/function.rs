//! Window functions: what a firing window emits.
//!
//! * **reduce** (`FnMut(&mut acc, value)`) and **aggregate** ([`AggregateFunction`])
//!   are incremental: each window holds one accumulator in keyed state, folded as
//!   elements arrive;
//! * **process** ([`ProcessWindowFunction`]) sees all of a window's elements and its
//!   metadata ([`WindowContext`]), so the window keeps every element;
//! * reduce or aggregate **combined with** process: incremental, and the process
//!   function gets the one result with the window's metadata.
//!
//! With an evictor the window keeps every element whatever the function, and reduce and
//! aggregate fold the elements left after eviction when the window fires (Flink's
//! `EvictingWindowOperator`). Results carry the window's largest timestamp
//! ([`Window::max_timestamp`]).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::operator::Collector;
use crate::value::Value;
use crate::window::assigner::Window;
use crate::window::evictor::Evictor;

/// An incremental aggregation with an accumulator (Flink's `AggregateFunction`).
/// Accumulators are [`Value`]s, so they are stored like records.
pub trait AggregateFunction: Send + 'static {
    /// A fresh accumulator.
    fn create_accumulator(&mut self) -> Value;
    /// Adds `value` to `acc`.
    fn add(&mut self, value: Value, acc: &mut Value) -> Result<()>;
    /// The result for `acc`.
    fn get_result(&mut self, acc: &Value) -> Result<Value>;
    /// Folds `other` into `acc` (session windows merging).
    fn merge(&mut self, acc: &mut Value, other: Value) -> Result<()>;
}

/// What a process window function knows about the firing window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowContext {
    /// The window (start, end, max timestamp).
    pub window: Window,
    /// The operator's current watermark.
    pub current_watermark: i64,
    /// The task clock's processing time.
    pub current_processing_time: i64,
}

/// Processes all elements of a firing window (Flink's `ProcessWindowFunction`).
pub trait ProcessWindowFunction: Send + 'static {
    /// `elements` of `key`'s window `ctx.window` (the one incremental result when
    /// combined with reduce or aggregate).
    fn process(
        &mut self,
        key: &Value,
        ctx: &WindowContext,
        elements: &[Value],
        out: &mut Collector<'_>,
    ) -> Result<()>;
}

/// A reduce function of a window: folds `value` into the accumulator.
pub type ReduceFunction = Box<dyn FnMut(&mut Value, Value) -> Result<()> + Send>;

/// The fold of an incremental window function.
pub(crate) enum Fold {
    Reduce(ReduceFunction),
    Aggregate(Box<dyn AggregateFunction>),
}

/// What one window keeps in keyed state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Contents {
    /// The accumulator of an incremental function.
    Acc(Value),
    /// Every element with its timestamp, in arrival order.
    Elements(Vec<(Option<i64>, Value)>),
}

/// A window operator's function: an optional fold, an optional process function (at
/// least one of the two), and whether contents are incremental.
pub(crate) struct WindowFunction {
    pub(crate) fold: Option<Fold>,
    pub(crate) process: Option<Box<dyn ProcessWindowFunction>>,
    /// Accumulate instead of keeping elements: a fold and no evictor.
    pub(crate) incremental: bool,
}

impl WindowFunction {
    pub(crate) fn new(
        fold: Option<Fold>,
        process: Option<Box<dyn ProcessWindowFunction>>,
        evictor: Option<&Evictor>,
    ) -> Self {
        let incremental = fold.is_some() && evictor.is_none();
        Self {
            fold,
            process,
            incremental,
        }
    }

    fn fold_into(fold: &mut Fold, acc: &mut Option<Value>, value: Value) -> Result<()> {
        match (fold, acc) {
            (Fold::Reduce(f), Some(a)) => f(a, value),
            (Fold::Reduce(_), acc @ None) => {
                *acc = Some(value);
                Ok(())
            }
            (Fold::Aggregate(a), acc) => {
                let acc = acc.get_or_insert_with(|| a.create_accumulator());
                a.add(value, acc)
            }
        }
    }

    /// Adds an element to a window's contents.
    pub(crate) fn add(
        &mut self,
        contents: &mut Option<Contents>,
        timestamp: Option<i64>,
        value: Value,
    ) -> Result<()> {
        match (self.incremental, &mut self.fold, contents) {
            (true, Some(fold), c) => {
                let mut acc = match c.take() {
                    Some(Contents::Acc(a)) => Some(a),
                    _ => None,
                };
                let res = Self::fold_into(fold, &mut acc, value);
                *c = acc.map(Contents::Acc);
                res
            }
            (_, _, Some(Contents::Elements(e))) => {
                e.push((timestamp, value));
                Ok(())
            }
            (_, _, c) => {
                *c = Some(Contents::Elements(vec![(timestamp, value)]));
                Ok(())
            }
        }
    }

    /// Merges `from` into `into` (session windows).
    pub(crate) fn merge(&mut self, into: &mut Option<Contents>, from: Contents) -> Result<()> {
        match (into.take(), from) {
            (None, from) => {
                *into = Some(from);
                Ok(())
            }
            (Some(Contents::Elements(mut a)), Contents::Elements(b)) => {
                a.extend(b);
                *into = Some(Contents::Elements(a));
                Ok(())
            }
            (Some(Contents::Acc(mut a)), Contents::Acc(b)) => {
                let res = match &mut self.fold {
                    Some(Fold::Reduce(f)) => f(&mut a, b),
                    Some(Fold::Aggregate(g)) => g.merge(&mut a, b),
                    None => Ok(()),
                };
                *into = Some(Contents::Acc(a));
                res
            }
            (Some(kept), _) => {
                // Both kinds in one operator cannot happen: `incremental` is fixed per
                // operator. Keep what is there rather than losing it.
                *into = Some(kept);
                Ok(())
            }
        }
    }

    /// Emits a firing window's result. With an evictor, evicts from `contents` before
    /// and/or after; the caller writes `contents` back.
    pub(crate) fn emit(
        &mut self,
        key: &Value,
        ctx: &WindowContext,
        contents: &mut Contents,
        evictor: Option<&Evictor>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        match contents {
            Contents::Acc(acc) => {
                let result = match &mut self.fold {
                    Some(Fold::Aggregate(a)) => a.get_result(acc)?,
                    _ => acc.clone(),
                };
                self.emit_results(key, ctx, vec![result], out)
            }
            Contents::Elements(elements) => {
                if let Some(e) = evictor {
                    e.evict_before(elements);
                }
                let values: Vec<Value> = elements.iter().map(|(_, v)| v.clone()).collect();
                let results = match &mut self.fold {
                    Some(fold @ Fold::Reduce(_)) => {
                        let mut acc = None;
                        for v in values {
                            Self::fold_into(fold, &mut acc, v)?;
                        }
                        acc.into_iter().collect()
                    }
                    Some(Fold::Aggregate(a)) => {
                        let mut acc = a.create_accumulator();
                        for v in values {
                            a.add(v, &mut acc)?;
                        }
                        vec![a.get_result(&acc)?]
                    }
                    None => values,
                };
                self.emit_results(key, ctx, results, out)?;
                if let Some(e) = evictor {
                    e.evict_after(elements);
                }
                Ok(())
            }
        }
    }

    fn emit_results(
        &mut self,
        key: &Value,
        ctx: &WindowContext,
        results: Vec<Value>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        match &mut self.process {
            Some(p) => p.process(key, ctx, &results, out),
            None => {
                for r in results {
                    out.collect(r);
                }
                Ok(())
            }
        }
    }
}
