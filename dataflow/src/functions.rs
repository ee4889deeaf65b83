//! Stateless function operators: map, filter and flat-map over closures.
//!
//! Each is generic over its function, so the per-record loop is monomorphized and the
//! closure call is inlined; the operator itself is boxed once per subtask. Timestamps are
//! carried through unchanged. Functions return `Result` so bad records fail the task
//! with a typed error instead of panicking.

use crate::element::StreamRecord;
use crate::error::Result;
use crate::operator::{Collector, Operator};
use crate::value::Value;

/// Applies `f` to every record.
pub struct MapOperator<F> {
    f: F,
}

impl<F> MapOperator<F>
where
    F: FnMut(Value) -> Result<Value> + Send,
{
    /// A map operator over `f`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> Operator for MapOperator<F>
where
    F: FnMut(Value) -> Result<Value> + Send,
{
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        out.reserve(input.len());
        for r in input.drain(..) {
            out.push(StreamRecord {
                value: (self.f)(r.value)?,
                timestamp: r.timestamp,
            });
        }
        Ok(())
    }
}

/// Keeps the records for which `f` returns true.
pub struct FilterOperator<F> {
    f: F,
}

impl<F> FilterOperator<F>
where
    F: FnMut(&Value) -> Result<bool> + Send,
{
    /// A filter operator over `f`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> Operator for FilterOperator<F>
where
    F: FnMut(&Value) -> Result<bool> + Send,
{
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            if (self.f)(&r.value)? {
                out.push(r);
            }
        }
        Ok(())
    }
}

/// Emits any number of values per record through a [`Collector`].
pub struct FlatMapOperator<F> {
    f: F,
}

impl<F> FlatMapOperator<F>
where
    F: FnMut(Value, &mut Collector<'_>) -> Result<()> + Send,
{
    /// A flat-map operator over `f`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> Operator for FlatMapOperator<F>
where
    F: FnMut(Value, &mut Collector<'_>) -> Result<()> + Send,
{
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            let mut c = Collector::new(out, r.timestamp);
            (self.f)(r.value, &mut c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DataflowError;

    fn run(op: &mut dyn Operator, input: Vec<i64>) -> Result<Vec<Value>> {
        let mut input: Vec<_> = input.into_iter().map(StreamRecord::new).collect();
        let mut out = Vec::new();
        op.process_batch(&mut input, &mut out)?;
        assert!(input.is_empty());
        Ok(out.into_iter().map(|r| r.value).collect())
    }

    #[test]
    fn map_filter_flat_map() {
        let mut double = MapOperator::new(|v: Value| Ok(Value::I64(v.as_i64().unwrap_or(0) * 2)));
        assert_eq!(
            run(&mut double, vec![1, 2]).unwrap(),
            vec![Value::I64(2), Value::I64(4)]
        );
        let mut even = FilterOperator::new(|v: &Value| Ok(v.as_i64() == Some(2)));
        assert_eq!(run(&mut even, vec![1, 2, 3]).unwrap(), vec![Value::I64(2)]);
        let mut twice = FlatMapOperator::new(|v: Value, c: &mut Collector<'_>| {
            c.collect(v.clone());
            c.collect(v);
            Ok(())
        });
        assert_eq!(run(&mut twice, vec![5]).unwrap().len(), 2);
        let mut failing = MapOperator::new(|_| {
            Err(DataflowError::Operator {
                operator: "f".into(),
                message: "boom".into(),
            })
        });
        assert!(run(&mut failing, vec![1]).is_err());
    }
}
