//! Per-subtask figures of a vertex, with Flink's JSON shapes: backpressure
//! (`JobVertexBackPressureInfo`), aggregated subtask metrics (`AggregatedMetric`s of
//! `SubtasksAllAccumulators`' sibling, `/subtasks/metrics`) and watermarks.
//!
//! The figures are the subtasks' [`TaskIoCounters`] as of their last heartbeat to the
//! JobMaster: cumulative records, bytes and backpressured / idle / busy milliseconds
//! since each attempt started. Flink's ratios and `…TimeMsPerSecond` rates are over a
//! recent interval; here that interval is the one between the last two distinct
//! heartbeats the REST server has seen of the attempt (the [`Sampler`] remembers
//! them), and before it has seen two, the attempt's whole running time. The length of
//! the interval is the time the task itself accounted (backpressured + idle + busy),
//! so no clock is read here.
//!
//! rill does not track watermarks per task yet: every subtask reports Flink's "no
//! watermark" value, `Long.MIN_VALUE`.

use std::collections::{BTreeMap, BTreeSet};

use rill_dataflow::{JobId, VertexId};
use serde_json::{json, Value};

use crate::messages::{TaskIoCounters, VertexDetails};

/// Flink's `Long.MIN_VALUE`: the watermark of a task that has seen none.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Flink's backpressure levels of a backpressured-time ratio: `ok` up to 0.10, `low` up
/// to 0.5, `high` above.
pub fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

/// Shares of an interval a subtask spent backpressured, idle and busy, each in `0..=1`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ratios {
    /// Backpressured (waiting for an output buffer).
    pub back_pressured: f64,
    /// Idle (waiting for input).
    pub idle: f64,
    /// Busy: the rest.
    pub busy: f64,
}

/// Milliseconds the task accounted in total.
fn accounted_ms(c: &TaskIoCounters) -> u64 {
    c.back_pressured_ms + c.idle_ms + c.busy_ms
}

impl Ratios {
    /// The shares of the interval from `earlier` to `later` (both cumulative); all 0 for
    /// an empty interval.
    pub fn between(earlier: &TaskIoCounters, later: &TaskIoCounters) -> Ratios {
        let total = accounted_ms(later).saturating_sub(accounted_ms(earlier));
        if total == 0 {
            return Ratios::default();
        }
        let share = |a: u64, b: u64| (a.saturating_sub(b) as f64 / total as f64).min(1.0);
        Ratios {
            back_pressured: share(later.back_pressured_ms, earlier.back_pressured_ms),
            idle: share(later.idle_ms, earlier.idle_ms),
            busy: share(later.busy_ms, earlier.busy_ms),
        }
    }
}

/// What the REST server has seen of one subtask's attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    attempt: u32,
    last: TaskIoCounters,
    before: Option<TaskIoCounters>,
}

/// The last two distinct heartbeats seen of each subtask (see the module docs). One
/// entry per subtask of every vertex asked about; entries of a job go when it is
/// [`forget`](Sampler::forget)-ten.
#[derive(Debug, Default)]
pub struct Sampler {
    seen: BTreeMap<(JobId, VertexId, usize), Seen>,
}

impl Sampler {
    /// Takes in the counters of `v`'s subtasks and returns each subtask's ratios over
    /// its latest interval.
    pub fn observe(&mut self, job: JobId, v: &VertexDetails) -> Vec<Ratios> {
        (0..v.parallelism as usize)
            .map(|i| {
                let current = v.subtasks.get(i).copied().unwrap_or_default();
                let attempt = v.attempts.get(i).copied().unwrap_or(0);
                let key = (job, v.vertex, i);
                let seen = match self.seen.get(&key) {
                    Some(s) if s.attempt == attempt && s.last == current => *s,
                    Some(s)
                        if s.attempt == attempt
                            && accounted_ms(&current) > accounted_ms(&s.last) =>
                    {
                        Seen {
                            attempt,
                            last: current,
                            before: Some(s.last),
                        }
                    }
                    _ => Seen {
                        attempt,
                        last: current,
                        before: None,
                    },
                };
                self.seen.insert(key, seen);
                Ratios::between(&seen.before.unwrap_or_default(), &seen.last)
            })
            .collect()
    }

    /// Drops what was seen of `job`.
    pub fn forget(&mut self, job: JobId) {
        self.seen.retain(|(j, _, _), _| *j != job);
    }
}

/// Whether any subtask of `v` has reported time yet.
fn reported(v: &VertexDetails) -> bool {
    v.subtasks.iter().any(|c| accounted_ms(c) > 0)
}

/// `GET /jobs/:jobid/vertices/:vertexid/backpressure` (Flink's
/// `JobVertexBackPressureInfo`): `deprecated` with no other field until a subtask has
/// reported, as Flink answers before its metrics arrive; then `ok` with each subtask's
/// ratios (`ratios[i]` of subtask `i`) and the vertex's level, its worst subtask's.
pub fn backpressure(v: &VertexDetails, ratios: &[Ratios], now_ms: u64) -> Value {
    if !reported(v) {
        return json!({ "status": "deprecated" });
    }
    let subtasks: Vec<Value> = ratios
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "subtask": i,
                "attempt-number": v.attempts.get(i).copied().unwrap_or(0),
                "backpressureLevel": backpressure_level(r.back_pressured),
                "ratio": r.back_pressured,
                "idleRatio": r.idle,
                "busyRatio": r.busy,
            })
        })
        .collect();
    let worst = ratios.iter().map(|r| r.back_pressured).fold(0.0, f64::max);
    json!({
        "status": "ok",
        "backpressureLevel": backpressure_level(worst),
        "end-timestamp": now_ms,
        "subtasks": subtasks,
    })
}

/// The task metrics `/subtasks/metrics` offers, by Flink's names.
pub const SUBTASK_METRICS: [&str; 12] = [
    "numRecordsIn",
    "numRecordsOut",
    "numBytesIn",
    "numBytesOut",
    "accumulatedBackPressuredTimeMs",
    "accumulatedIdleTimeMs",
    "accumulatedBusyTimeMs",
    "backPressuredTimeMsPerSecond",
    "idleTimeMsPerSecond",
    "busyTimeMsPerSecond",
    "inPoolUsage",
    "outPoolUsage",
];

/// The value of metric `id` of a subtask with counters `c` and latest ratios `r`.
fn metric(id: &str, c: &TaskIoCounters, r: &Ratios) -> Option<f64> {
    Some(match id {
        "numRecordsIn" => c.records_in as f64,
        "numRecordsOut" => c.records_out as f64,
        "numBytesIn" => c.bytes_in as f64,
        "numBytesOut" => c.bytes_out as f64,
        "accumulatedBackPressuredTimeMs" => c.back_pressured_ms as f64,
        "accumulatedIdleTimeMs" => c.idle_ms as f64,
        "accumulatedBusyTimeMs" => c.busy_ms as f64,
        "backPressuredTimeMsPerSecond" => r.back_pressured * 1000.0,
        "idleTimeMsPerSecond" => r.idle * 1000.0,
        "busyTimeMsPerSecond" => r.busy * 1000.0,
        "inPoolUsage" => c.in_pool.ratio(),
        "outPoolUsage" => c.out_pool.ratio(),
        _ => return None,
    })
}

/// The aggregations Flink's `agg` parameter names.
pub const AGGREGATIONS: [&str; 5] = ["min", "max", "avg", "sum", "skew"];

/// Why a metrics query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsQueryError {
    /// `agg` names an aggregation Flink does not have.
    #[error(
        "unknown aggregation {0:?}: expected a comma-separated list of min, max, avg, sum, skew"
    )]
    UnknownAggregation(String),
    /// `subtasks` is not a comma-separated list of indices and ranges (`0,2-3`).
    #[error("invalid subtasks {0:?}: expected a comma-separated list of subtask indices or ranges such as 0,2-3")]
    BadSubtasks(String),
}

/// A parsed `/subtasks/metrics` query (Flink's `get`, `agg` and `subtasks` parameters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsQuery {
    /// Metric ids asked for; `None` lists the available ones.
    pub get: Option<Vec<String>>,
    /// Aggregations to send (all when `agg` is absent).
    pub agg: Vec<&'static str>,
    /// Subtasks to aggregate over (all when `subtasks` is absent).
    pub subtasks: Option<BTreeSet<usize>>,
}

/// A comma-separated list with the empty items dropped.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl MetricsQuery {
    /// Parses the query parameters.
    pub fn parse(
        params: &std::collections::HashMap<String, String>,
    ) -> Result<Self, MetricsQueryError> {
        let get = params
            .get("get")
            .map(|g| items(g).map(str::to_owned).collect());
        let agg = match params.get("agg") {
            None => AGGREGATIONS.to_vec(),
            Some(a) => items(a)
                .map(|name| {
                    AGGREGATIONS
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(name))
                        .copied()
                        .ok_or_else(|| MetricsQueryError::UnknownAggregation(name.to_owned()))
                })
                .collect::<Result<_, _>>()?,
        };
        let subtasks = match params.get("subtasks") {
            None => None,
            Some(s) => {
                let bad = || MetricsQueryError::BadSubtasks(s.chars().take(64).collect());
                let mut set = BTreeSet::new();
                for item in items(s) {
                    let (a, b) = item.split_once('-').unwrap_or((item, item));
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if b < a || b - a > 1 << 16 {
                        return Err(bad());
                    }
                    set.extend(a..=b);
                }
                Some(set)
            }
        };
        Ok(MetricsQuery { get, agg, subtasks })
    }
}

/// `GET /jobs/:jobid/vertices/:vertexid/subtasks/metrics` (Flink's
/// `AggregatedSubtaskMetricsHandler`): without `get`, the ids available; with it, one
/// `{id, min, max, avg, sum, skew}` per known id asked for (unknown ids are left out, as
/// Flink leaves them out), aggregated over the chosen subtasks. `skew` is Flink's:
/// `(max - avg) / max * 100`, 0 when `max` is 0.
pub fn subtask_metrics(v: &VertexDetails, ratios: &[Ratios], q: &MetricsQuery) -> Value {
    let Some(get) = &q.get else {
        return Value::Array(
            SUBTASK_METRICS
                .iter()
                .map(|id| json!({ "id": id }))
                .collect(),
        );
    };
    let chosen: Vec<usize> = (0..v.parallelism as usize)
        .filter(|i| q.subtasks.as_ref().is_none_or(|s| s.contains(i)))
        .collect();
    let answers = get
        .iter()
        .filter(|id| SUBTASK_METRICS.contains(&id.as_str()))
        .map(|id| {
            let values: Vec<f64> = chosen
                .iter()
                .filter_map(|&i| {
                    let c = v.subtasks.get(i).copied().unwrap_or_default();
                    metric(id, &c, &ratios.get(i).copied().unwrap_or_default())
                })
                .collect();
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(id));
            if !values.is_empty() {
                let sum: f64 = values.iter().sum();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let avg = sum / values.len() as f64;
                let skew = if max > 0.0 {
                    (max - avg) / max * 100.0
                } else {
                    0.0
                };
                for a in &q.agg {
                    let value = match *a {
                        "min" => min,
                        "max" => max,
                        "avg" => avg,
                        "sum" => sum,
                        _ => skew,
                    };
                    m.insert((*a).into(), json!(value));
                }
            }
            Value::Object(m)
        })
        .collect();
    Value::Array(answers)
}

/// `GET /jobs/:jobid/vertices/:vertexid/watermarks` (Flink's `JobVertexWatermarksHandler`):
/// each subtask's `currentInputWatermark` as of its last heartbeat, a string as all Flink
/// metric values are; `Long.MIN_VALUE` before its first watermark (and for sources).
pub fn watermarks(v: &VertexDetails) -> Value {
    Value::Array(
        (0..v.parallelism)
            .map(|i| {
                let w = v
                    .subtasks
                    .get(i as usize)
                    .and_then(|c| c.input_watermark)
                    .unwrap_or(NO_WATERMARK);
                json!({
                    "id": format!("{i}.currentInputWatermark"),
                    "value": w.to_string(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn counters(bp: u64, idle: u64, busy: u64) -> TaskIoCounters {
        TaskIoCounters {
            records_in: 10,
            records_out: 20,
            back_pressured_ms: bp,
            idle_ms: idle,
            busy_ms: busy,
            ..Default::default()
        }
    }

    fn vertex(subtasks: Vec<TaskIoCounters>) -> VertexDetails {
        VertexDetails {
            vertex: VertexId(0),
            name: "map".into(),
            parallelism: subtasks.len() as u32,
            states: BTreeMap::new(),
            records_in: 0,
            records_out: 0,
            locations: vec![None; subtasks.len()],
            attempts: vec![0; subtasks.len()],
            subtasks,
            inputs: Vec::new(),
        }
    }

    fn job() -> JobId {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn levels_follow_flinks_thresholds() {
        assert_eq!(backpressure_level(0.0), "ok");
        assert_eq!(backpressure_level(0.10), "ok");
        assert_eq!(backpressure_level(0.2), "low");
        assert_eq!(backpressure_level(0.5), "low");
        assert_eq!(backpressure_level(0.51), "high");
    }

    #[test]
    fn ratios_cover_the_latest_interval_once_two_heartbeats_were_seen() {
        let mut s = Sampler::default();
        let mut v = vertex(vec![counters(100, 300, 600)]);
        let r = s.observe(job(), &v);
        assert_eq!(
            r[0],
            Ratios {
                back_pressured: 0.1,
                idle: 0.3,
                busy: 0.6
            }
        );
        // The same heartbeat again: the same answer.
        assert_eq!(s.observe(job(), &v), r);
        // The next one: 1000 ms more, all of it backpressured.
        v.subtasks[0] = counters(1100, 300, 600);
        let r = s.observe(job(), &v);
        assert_eq!(
            r[0],
            Ratios {
                back_pressured: 1.0,
                idle: 0.0,
                busy: 0.0
            }
        );
        assert_eq!(s.observe(job(), &v), r);
        // A new attempt starts over.
        v.attempts[0] = 1;
        v.subtasks[0] = counters(0, 50, 50);
        assert_eq!(
            s.observe(job(), &v)[0],
            Ratios {
                back_pressured: 0.0,
                idle: 0.5,
                busy: 0.5
            }
        );
        s.forget(job());
        assert!(s.seen.is_empty());
    }

    #[test]
    fn backpressure_is_deprecated_until_reported_then_has_flinks_fields() {
        let v = vertex(vec![TaskIoCounters::default()]);
        assert_eq!(
            backpressure(&v, &[Ratios::default()], 5),
            json!({"status": "deprecated"})
        );
        let v = vertex(vec![counters(0, 10, 0), counters(80, 0, 20)]);
        let r = Sampler::default().observe(job(), &v);
        let b = backpressure(&v, &r, 5);
        assert_eq!(b["status"], "ok");
        assert_eq!(b["backpressureLevel"], "high");
        assert_eq!(b["end-timestamp"], 5);
        assert_eq!(b["subtasks"][0]["backpressureLevel"], "ok");
        assert_eq!(b["subtasks"][1]["ratio"], 0.8);
        assert_eq!(b["subtasks"][1]["busyRatio"], 0.2);
        assert_eq!(b["subtasks"][0]["idleRatio"], 1.0);
    }

    #[test]
    fn subtask_metrics_list_ids_and_aggregate_the_asked_ones() {
        let mut v = vertex(vec![counters(0, 0, 10), counters(0, 0, 10)]);
        v.subtasks[1].records_in = 30;
        let r = Sampler::default().observe(job(), &v);
        let q = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            MetricsQuery::parse(&m)
        };
        let list = subtask_metrics(&v, &r, &q(&[]).unwrap());
        assert_eq!(list.as_array().unwrap().len(), SUBTASK_METRICS.len());
        assert_eq!(list[0], json!({"id": "numRecordsIn"}));
        let got = subtask_metrics(&v, &r, &q(&[("get", "numRecordsIn,nope")]).unwrap());
        assert_eq!(
            got,
            json!([{"id": "numRecordsIn", "min": 10.0, "max": 30.0, "avg": 20.0, "sum": 40.0,
                    "skew": (30.0 - 20.0) / 30.0 * 100.0}])
        );
        let one = q(&[
            ("get", "numRecordsIn"),
            ("agg", "sum,MAX"),
            ("subtasks", "1"),
        ])
        .unwrap();
        assert_eq!(
            subtask_metrics(&v, &r, &one),
            json!([{"id": "numRecordsIn", "sum": 30.0, "max": 30.0}])
        );
        assert!(q(&[("agg", "median")]).is_err());
        assert!(q(&[("subtasks", "x")]).is_err());
        assert!(q(&[("subtasks", "3-1")]).is_err());
    }

    #[test]
    fn watermarks_are_flinks_no_watermark_per_subtask() {
        let v = vertex(vec![TaskIoCounters::default(); 2]);
        assert_eq!(
            watermarks(&v),
            json!([
                {"id": "0.currentInputWatermark", "value": "-9223372036854775808"},
                {"id": "1.currentInputWatermark", "value": "-9223372036854775808"},
            ])
        );
    }
}
