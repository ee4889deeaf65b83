//! The sequence / datagen source.
//!
//! Subtask `i` of `p` emits ids `start + i, start + i + p, …` — strided rather than
//! contiguous ranges, so every subtask covers the whole id range at the same pace
//! (Flink's contiguous split skews event time). The union over subtasks is exactly
//! `start..start + rows` with no overlap. Unbounded when `rows` is `None`. A `rate`
//! (records/s for the whole source) is split evenly over the subtasks.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::rate_limiter::RateLimiter;
use crate::value::Value;

/// Configuration of `rill.source.datagen`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatagenConfig {
    /// Number of ids to emit in total; `None` = unbounded.
    #[serde(default)]
    pub rows: Option<u64>,
    /// Total records per second over all subtasks; `None` = as fast as possible.
    #[serde(default)]
    pub rate: Option<f64>,
    /// First id.
    #[serde(default)]
    pub start: i64,
    /// Records per poll.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    1024
}

impl Default for DatagenConfig {
    fn default() -> Self {
        Self {
            rows: None,
            rate: None,
            start: 0,
            batch_size: default_batch(),
        }
    }
}

impl DatagenConfig {
    /// `rows` ids as fast as possible.
    pub fn bounded(rows: u64) -> Self {
        Self {
            rows: Some(rows),
            ..Self::default()
        }
    }
}

pub(crate) struct DatagenSource {
    /// Offset (from `start`) of the next id this subtask emits.
    next: u64,
    /// Distance between this subtask's ids (the parallelism).
    step: u64,
    rows: Option<u64>,
    start: i64,
    batch: usize,
    limiter: Option<RateLimiter>,
}

impl DatagenSource {
    pub(crate) fn new(c: DatagenConfig, ctx: &OperatorContext) -> Result<Self> {
        let p = ctx.parallelism.max(1);
        Ok(Self {
            next: u64::from(ctx.subtask_index),
            step: u64::from(p),
            rows: c.rows,
            start: c.start,
            batch: c.batch_size.max(1),
            limiter: c.rate.map(|r| RateLimiter::new(r / f64::from(p))),
        })
    }
}

impl SourceOperator for DatagenSource {
    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus> {
        let remaining = match self.rows {
            Some(rows) if self.next >= rows => return Ok(SourceStatus::Finished),
            Some(rows) => (rows - self.next).div_ceil(self.step),
            None => u64::MAX,
        };
        let mut n = remaining.min(self.batch as u64) as usize;
        if let Some(l) = &mut self.limiter {
            match l.acquire(n, now) {
                Ok(allowed) => n = allowed,
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            }
        }
        out.reserve(n);
        for _ in 0..n {
            out.push(StreamRecord {
                value: Value::I64(self.start.wrapping_add(self.next as i64)),
                timestamp: None,
            });
            self.next += self.step;
        }
        Ok(SourceStatus::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;

    fn ctx(i: u32, p: u32) -> OperatorContext {
        OperatorContext {
            job_id: JobId([0; 16]),
            operator_name: "datagen".into(),
            operator_uid: "datagen".into(),
            subtask_index: i,
            parallelism: p,
            max_parallelism: 128,
            key_selector: None,
            collect: None,
            state: crate::state::StateContext::default(),
        }
    }

    #[test]
    fn subtasks_split_rows_without_overlap() {
        let p = 3;
        let mut all = Vec::new();
        for i in 0..p {
            let mut s = DatagenSource::new(
                DatagenConfig {
                    rows: Some(10),
                    batch_size: 2,
                    ..Default::default()
                },
                &ctx(i, p),
            )
            .unwrap();
            let mut out = Vec::new();
            while s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::More {}
            all.extend(out.into_iter().map(|r| r.value.as_i64().unwrap()));
        }
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn rate_limited_source_goes_idle() {
        let mut s = DatagenSource::new(
            DatagenConfig {
                rate: Some(10.0),
                ..Default::default()
            },
            &ctx(0, 1),
        )
        .unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        assert_eq!(s.poll_next(&mut out, t).unwrap(), SourceStatus::More);
        assert!(matches!(
            s.poll_next(&mut out, t).unwrap(),
            SourceStatus::Idle(_)
        ));
        assert_eq!(out.len(), 1);
    }
}
