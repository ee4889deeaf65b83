//! Built-in transforms used by the example jobs (wordcount, keyed-sum).

use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::keyed::{KeyedProcessFunction, ProcessContext};
use crate::operator::Collector;
use crate::value::Value;
use crate::window::{AggregateFunction, ProcessWindowFunction, WindowContext};

/// Splits a `Str` line into lowercase words at every non-alphanumeric character
/// (Flink's WordCount tokenizer, `\W+`).
pub(crate) fn split_words(v: Value, out: &mut Collector<'_>) -> Result<()> {
    let Value::Str(line) = v else {
        return Err(DataflowError::TypeMismatch {
            operator: super::SPLIT_WORDS.into(),
            expected: "str",
            actual: v.type_name(),
        });
    };
    for w in line
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.collect(Value::Str(w.to_lowercase()));
    }
    Ok(())
}

/// The first whitespace-separated field of a `Str` line; nothing for a blank line.
pub(crate) fn first_field(v: Value, out: &mut Collector<'_>) -> Result<()> {
    let Value::Str(line) = v else {
        return Err(DataflowError::TypeMismatch {
            operator: super::FIRST_FIELD.into(),
            expected: "str",
            actual: v.type_name(),
        });
    };
    if let Some(field) = line.split_whitespace().next() {
        out.collect(Value::Str(field.to_string()));
    }
    Ok(())
}

/// A tuple's fields joined by commas; any other value as its text.
pub(crate) fn csv(v: Value) -> Result<Value> {
    Ok(Value::Str(match v {
        Value::Tuple(fields) => fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }))
}

/// Configuration of `rill.process.count` and `rill.process.count_sum`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct CountConfig {
    /// Emit the updated result after every record (streaming) instead of once per key at
    /// end of input (bounded jobs).
    #[serde(default)]
    pub emit_updates: bool,
}

/// `(key, count)` per key.
pub(crate) struct Count(pub(crate) CountConfig);

impl KeyedProcessFunction for Count {
    type State = i64;

    fn process(
        &mut self,
        key: &Value,
        n: &mut i64,
        _: &Value,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        *n += 1;
        if self.0.emit_updates {
            out.collect(Value::Tuple(vec![key.clone(), Value::I64(*n)]));
        }
        Ok(())
    }

    fn on_end_of_input(&mut self, key: &Value, n: &mut i64, out: &mut Collector<'_>) -> Result<()> {
        if !self.0.emit_updates {
            out.collect(Value::Tuple(vec![key.clone(), Value::I64(*n)]));
        }
        Ok(())
    }
}

/// `(key, count, sum)` of i64 values per key (wrapping sum).
pub(crate) struct CountSum(pub(crate) CountConfig);

impl KeyedProcessFunction for CountSum {
    type State = (i64, i64);

    #[inline]
    fn process(
        &mut self,
        key: &Value,
        s: &mut (i64, i64),
        v: &Value,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        let Value::I64(x) = v else {
            return Err(DataflowError::TypeMismatch {
                operator: super::COUNT_SUM.into(),
                expected: "i64",
                actual: v.type_name(),
            });
        };
        s.0 += 1;
        s.1 = s.1.wrapping_add(*x);
        if self.0.emit_updates {
            out.collect(Value::Tuple(vec![
                key.clone(),
                Value::I64(s.0),
                Value::I64(s.1),
            ]));
        }
        Ok(())
    }

    fn on_end_of_input(
        &mut self,
        key: &Value,
        s: &mut (i64, i64),
        out: &mut Collector<'_>,
    ) -> Result<()> {
        if !self.0.emit_updates {
            out.collect(Value::Tuple(vec![
                key.clone(),
                Value::I64(s.0),
                Value::I64(s.1),
            ]));
        }
        Ok(())
    }
}

/// Running sum of i64 or f64 values.
pub(crate) fn sum(acc: &mut Value, v: Value) -> Result<()> {
    match (acc, v) {
        (Value::I64(a), Value::I64(b)) => *a = a.wrapping_add(b),
        (Value::F64(a), Value::F64(b)) => *a += b,
        (a, b) => {
            return Err(DataflowError::TypeMismatch {
                operator: super::SUM.into(),
                expected: "matching i64 or f64 values",
                actual: if matches!(a, Value::I64(_) | Value::F64(_)) {
                    b.type_name()
                } else {
                    a.type_name()
                },
            })
        }
    }
    Ok(())
}

/// `rill.window.count`: counts a window's elements.
pub(crate) struct WindowCount;

impl AggregateFunction for WindowCount {
    fn create_accumulator(&mut self) -> Value {
        Value::I64(0)
    }

    fn add(&mut self, _: Value, acc: &mut Value) -> Result<()> {
        if let Value::I64(n) = acc {
            *n += 1;
        }
        Ok(())
    }

    fn get_result(&mut self, acc: &Value) -> Result<Value> {
        Ok(acc.clone())
    }

    fn merge(&mut self, acc: &mut Value, other: Value) -> Result<()> {
        if let (Value::I64(a), Value::I64(b)) = (acc, other) {
            *a += b;
        }
        Ok(())
    }
}

/// `rill.window.keyed_result`: `(key, start, end, element)` per element.
pub(crate) struct KeyedResult;

impl ProcessWindowFunction for KeyedResult {
    fn process(
        &mut self,
        key: &Value,
        ctx: &WindowContext,
        elements: &[Value],
        out: &mut Collector<'_>,
    ) -> Result<()> {
        for e in elements {
            out.collect(Value::Tuple(vec![
                key.clone(),
                Value::I64(ctx.window.start()),
                Value::I64(ctx.window.end()),
                e.clone(),
            ]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_lowercases_and_drops_punctuation() {
        let mut out = Vec::new();
        split_words(
            "To be, or NOT to-be!".into(),
            &mut Collector::new(&mut out, None),
        )
        .unwrap();
        let words: Vec<String> = out.into_iter().map(|r| r.value.to_string()).collect();
        assert_eq!(words, ["to", "be", "or", "not", "to", "be"]);
        assert!(split_words(Value::I64(1), &mut Collector::new(&mut Vec::new(), None)).is_err());
    }
}

/// Configuration of `rill.map.throttle`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ThrottleConfig {
    /// Records per second at most (> 0).
    pub rate: f64,
}

/// The throttle map: the identity, sleeping on the task thread to stay at `rate`.
pub(crate) fn throttle(
    c: ThrottleConfig,
) -> Result<impl FnMut(Value) -> Result<Value> + Send + 'static> {
    if !(c.rate.is_finite() && c.rate > 0.0) {
        return Err(DataflowError::InvalidConfig {
            factory: super::THROTTLE.into(),
            reason: format!(
                "rate must be a positive number of records per second, got {}",
                c.rate
            ),
        });
    }
    let mut limiter = crate::rate_limiter::RateLimiter::new(c.rate);
    Ok(move |v: Value| {
        while let Err(wait) = limiter.acquire(1, std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        Ok(v)
    })
}
