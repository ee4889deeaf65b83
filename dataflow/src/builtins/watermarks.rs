//! Timestamps and watermarks for event time: the `key,timestamp` line parser and the
//! bounded-out-of-orderness watermark generator (Flink's
//! `WatermarkStrategy.forBoundedOutOfOrderness`).
//!
//! The generator passes records through and tracks the largest timestamp seen; its
//! watermark is `max - max_out_of_orderness - 1` (Flink's formula: a record
//! `max_out_of_orderness` behind the largest timestamp is still on time). It emits the
//! watermark after every batch in which it advanced — Flink emits it every
//! `pipeline.auto-watermark-interval`; emitting per batch gives the same watermarks
//! sooner and needs no timer. Upstream watermarks stop at the generator; the final
//! watermark of a bounded input passes.

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{Collector, Operator};
use crate::value::Value;

/// Configuration of `rill.watermarks.bounded_out_of_orderness`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedOutOfOrdernessConfig {
    /// How far (ms) a record's timestamp may lag the largest one seen and still be on
    /// time.
    pub max_out_of_orderness_ms: i64,
}

/// The bounded-out-of-orderness watermark generator; see the module docs.
pub(crate) struct BoundedOutOfOrderness {
    delay: i64,
    max_timestamp: i64,
    emitted: i64,
}

impl BoundedOutOfOrderness {
    pub(crate) fn new(c: BoundedOutOfOrdernessConfig) -> Result<Self> {
        if c.max_out_of_orderness_ms < 0 {
            return Err(DataflowError::InvalidConfig {
                factory: super::BOUNDED_OUT_OF_ORDERNESS.into(),
                reason: format!(
                    "max_out_of_orderness_ms must be ≥ 0, got {}",
                    c.max_out_of_orderness_ms
                ),
            });
        }
        Ok(Self {
            delay: c.max_out_of_orderness_ms,
            // Flink's start value: the first watermark is i64::MIN.
            max_timestamp: i64::MIN + c.max_out_of_orderness_ms + 1,
            emitted: i64::MIN,
        })
    }

    fn current(&self) -> i64 {
        self.max_timestamp - self.delay - 1
    }
}

impl Operator for BoundedOutOfOrderness {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.iter() {
            if let Some(t) = r.timestamp {
                self.max_timestamp = self.max_timestamp.max(t);
            }
        }
        out.append(input);
        Ok(())
    }

    fn take_generated_watermark(&mut self) -> Option<i64> {
        let w = self.current();
        (w > self.emitted).then(|| {
            self.emitted = w;
            w
        })
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }
}

/// `rill.flat_map.key_timestamp`: a `key,timestamp` line → `(key, timestamp)` with
/// the timestamp (ms) as the record's event time; blank lines are skipped, anything
/// else is an error naming the line.
pub(crate) fn key_timestamp(v: Value, out: &mut Collector<'_>) -> Result<()> {
    let Value::Str(line) = v else {
        return Err(DataflowError::TypeMismatch {
            operator: super::KEY_TIMESTAMP.into(),
            expected: "str",
            actual: v.type_name(),
        });
    };
    let line = line.trim();
    if line.is_empty() {
        return Ok(());
    }
    let parsed = line
        .split_once(',')
        .and_then(|(k, t)| Some((k.trim(), t.trim().parse::<i64>().ok()?)))
        .filter(|(k, _)| !k.is_empty());
    let Some((key, ts)) = parsed else {
        return Err(DataflowError::Operator {
            operator: super::KEY_TIMESTAMP.into(),
            message: format!("malformed line {line:?}: expected `key,timestamp` (timestamp in ms)"),
        });
    };
    out.collect_with_timestamp(
        Value::Tuple(vec![Value::Str(key.to_owned()), Value::I64(ts)]),
        ts,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_trails_the_largest_timestamp_and_only_advances() {
        let mut g = BoundedOutOfOrderness::new(BoundedOutOfOrdernessConfig {
            max_out_of_orderness_ms: 10,
        })
        .unwrap();
        assert_eq!(g.take_generated_watermark(), None);
        let mut out = Vec::new();
        let mut batch = vec![
            StreamRecord::with_timestamp(1, 100),
            StreamRecord::with_timestamp(2, 50),
        ];
        g.process_batch(&mut batch, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(g.take_generated_watermark(), Some(89));
        assert_eq!(g.take_generated_watermark(), None);
        g.process_batch(&mut vec![StreamRecord::with_timestamp(3, 95)], &mut out)
            .unwrap();
        assert_eq!(g.take_generated_watermark(), None, "no advance");
        assert!(!g.forwards_watermarks());
    }

    #[test]
    fn key_timestamp_lines_parse_or_fail_naming_the_line() {
        let mut out = Vec::new();
        key_timestamp("k1, 1500".into(), &mut Collector::new(&mut out, None)).unwrap();
        key_timestamp("   ".into(), &mut Collector::new(&mut out, None)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timestamp, Some(1500));
        assert_eq!(out[0].value.to_string(), "(k1,1500)");
        let err = key_timestamp("k1;x".into(), &mut Collector::new(&mut out, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("k1;x"), "{err}");
    }
}
