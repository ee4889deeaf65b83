//! `POST /jobs`: rill's own route to submit one of the built-in jobs by name (Flink's
//! `POST /jobs` takes a serialized Java `JobGraph`, which rill cannot run).
//!
//! The body names the job, its arguments (the flags of `rill run <job>`, kebab-case)
//! and optionally the default parallelism and a savepoint to start from:
//!
//! ```json
//! {"job": "keyed-sum", "args": {"rows": 1000, "keys": 10}, "parallelism": 2,
//!  "savepointPath": "file:///…", "allowNonRestoredState": false}
//! ```
//!
//! | job | args |
//! |---|---|
//! | `wordcount` | `input`, `output` (required) |
//! | `keyed-sum` | `rows` (unbounded if absent), `keys` (1000), `rate` (records/s) |
//! | `running-count` | `input`, `output` (required), `rate` (lines/s) |
//! | `window-count` | `input`, `output` (required), `size` (5000 ms), `out-of-orderness` (1000 ms), `rate` (lines/s) |
//! | `nexmark` | `query` (required: q0 to q8), `events` or `events-file` (exactly one), `seed` (0), `events-per-second` (10000), `base-time-ms`, `output` (rows are discarded without it) |
//!
//! Parsing and building are pure: an unknown job, an unknown or ill-typed argument, or
//! arguments the job builder refuses are a [`SubmitError`] (the handler's 400).

use rill_dataflow::builtins::nexmark::GeneratorConfig;
use rill_dataflow::{jobs, JobGraph, SavepointRestoreSettings};
use serde::Deserialize;
use serde_json::Value;

/// The largest parallelism accepted (Flink's upper bound of `maxParallelism`).
pub const MAX_PARALLELISM: u32 = 32_768;

/// Why a submission body cannot be turned into a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Not JSON, or not the request's shape.
    #[error("Bad request received: {0}")]
    Malformed(String),
    /// No built-in job of that name.
    #[error(
        "unknown job {0:?}: expected wordcount, keyed-sum, running-count, window-count or nexmark"
    )]
    UnknownJob(String),
    /// The job's arguments are missing, unknown or of the wrong type.
    #[error("invalid arguments for job {job}: {reason}")]
    BadArgs {
        /// The job.
        job: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `parallelism` outside `1..=MAX_PARALLELISM`.
    #[error("parallelism must be in 1..={MAX_PARALLELISM}, is {0}")]
    BadParallelism(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    job: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    parallelism: Option<u64>,
    #[serde(default)]
    savepoint_path: Option<String>,
    #[serde(default)]
    allow_non_restored_state: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FilesArgs {
    input: String,
    output: String,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    throttle: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyedSumArgs {
    #[serde(default)]
    rows: Option<u64>,
    #[serde(default = "default_keys")]
    keys: u64,
    #[serde(default)]
    rate: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WindowCountArgs {
    input: String,
    output: String,
    #[serde(default = "default_window_size")]
    size: i64,
    #[serde(default = "default_out_of_orderness")]
    out_of_orderness: i64,
    #[serde(default)]
    rate: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NexmarkArgs {
    query: String,
    #[serde(default)]
    events: Option<u64>,
    #[serde(default)]
    events_file: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    events_per_second: Option<u64>,
    #[serde(default)]
    base_time_ms: Option<i64>,
    #[serde(default)]
    output: Option<String>,
}

impl NexmarkArgs {
    fn input(&self) -> Result<jobs::NexmarkInput, SubmitError> {
        match (&self.events, &self.events_file) {
            (Some(_), Some(_)) | (None, None) => Err(SubmitError::BadArgs {
                job: "nexmark",
                reason: "exactly one of `events` and `events-file` is required".into(),
            }),
            (_, Some(f)) => Ok(jobs::NexmarkInput::File(f.clone())),
            (Some(n), None) => {
                let d = GeneratorConfig::default();
                Ok(jobs::NexmarkInput::Generator {
                    events: Some(*n),
                    config: GeneratorConfig {
                        seed: self.seed,
                        events_per_second: self.events_per_second.unwrap_or(d.events_per_second),
                        base_time_ms: self.base_time_ms.unwrap_or(d.base_time_ms),
                    },
                })
            }
        }
    }
}

/// `rill run window-count`'s default `--size` (ms).
fn default_window_size() -> i64 {
    5000
}

/// `rill run window-count`'s default `--out-of-orderness` (ms).
fn default_out_of_orderness() -> i64 {
    1000
}

/// `rill run keyed-sum`'s default `--keys`.
fn default_keys() -> u64 {
    1000
}

fn args<T: serde::de::DeserializeOwned>(
    job: &'static str,
    v: Option<Value>,
) -> Result<T, SubmitError> {
    let bad = |reason: String| SubmitError::BadArgs { job, reason };
    match v.unwrap_or_else(|| Value::Object(Default::default())) {
        // Serde would read a struct from a list too; `args` is an object.
        v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| bad(e.to_string())),
        other => Err(bad(format!("args must be an object, is {other}"))),
    }
}

/// Builds the job a `POST /jobs` body describes.
pub fn build(body: &[u8]) -> Result<JobGraph, SubmitError> {
    let r: Request =
        serde_json::from_slice(body).map_err(|e| SubmitError::Malformed(e.to_string()))?;
    let parallelism = r.parallelism.unwrap_or(1);
    let parallelism = u32::try_from(parallelism)
        .ok()
        .filter(|p| (1..=MAX_PARALLELISM).contains(p))
        .ok_or(SubmitError::BadParallelism(parallelism))?;
    let (name, built) = match r.job.as_str() {
        "wordcount" => {
            let a: FilesArgs = args("wordcount", r.args)?;
            if let Some(field) = [("rate", a.rate), ("throttle", a.throttle)]
                .into_iter()
                .find_map(|(f, v)| v.map(|_| f))
            {
                return Err(SubmitError::BadArgs {
                    job: "wordcount",
                    reason: format!("unknown field `{field}`"),
                });
            }
            (
                "wordcount",
                jobs::wordcount(&a.input, &a.output, parallelism),
            )
        }
        "keyed-sum" => {
            let a: KeyedSumArgs = args("keyed-sum", r.args)?;
            (
                "keyed-sum",
                jobs::keyed_sum(a.rows, a.keys, a.rate, parallelism),
            )
        }
        "running-count" => {
            let a: FilesArgs = args("running-count", r.args)?;
            (
                "running-count",
                jobs::running_count(&a.input, &a.output, a.rate, a.throttle, parallelism),
            )
        }
        "window-count" => {
            let a: WindowCountArgs = args("window-count", r.args)?;
            (
                "window-count",
                jobs::window_count(
                    &a.input,
                    &a.output,
                    a.size,
                    a.out_of_orderness,
                    a.rate,
                    parallelism,
                ),
            )
        }
        "nexmark" => {
            let a: NexmarkArgs = args("nexmark", r.args)?;
            (
                "nexmark",
                jobs::nexmark(&a.query, &a.input()?, a.output.as_deref(), parallelism),
            )
        }
        other => return Err(SubmitError::UnknownJob(other.chars().take(64).collect())),
    };
    let mut job = built.map_err(|e| SubmitError::BadArgs {
        job: name,
        reason: e.to_string(),
    })?;
    job.savepoint_restore = r.savepoint_path.map(|path| SavepointRestoreSettings {
        path,
        allow_non_restored_state: r.allow_non_restored_state,
    });
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_each_builtin_job_with_its_arguments() {
        let j = build(br#"{"job":"keyed-sum","args":{"rows":1000,"keys":10},"parallelism":2}"#)
            .unwrap();
        assert_eq!(j.name, "keyed-sum");
        assert!(j.vertices.iter().any(|v| v.parallelism == 2));
        assert!(j.savepoint_restore.is_none());
        let j = build(br#"{"job":"keyed-sum"}"#).unwrap();
        assert!(j.vertices.iter().all(|v| v.parallelism == 1));
        let j = build(br#"{"job":"wordcount","args":{"input":"/in","output":"/out"}}"#).unwrap();
        assert_eq!(j.name, "wordcount");
        let j = build(
            br#"{"job":"running-count","args":{"input":"/in","output":"/out","rate":5.0},
                 "savepointPath":"/sp","allowNonRestoredState":true}"#,
        )
        .unwrap();
        assert_eq!(j.name, "running-count");
        let restore = j.savepoint_restore.unwrap();
        assert_eq!(restore.path, "/sp");
        assert!(restore.allow_non_restored_state);
        let j = build(
            br#"{"job":"window-count","args":{"input":"/in","output":"/out","size":100,"out-of-orderness":5}}"#,
        )
        .unwrap();
        assert_eq!(j.name, "window-count");
        let j = build(
            br#"{"job":"nexmark","args":{"query":"q1","events":1000,"seed":4},"parallelism":2}"#,
        )
        .unwrap();
        assert_eq!(j.name, "nexmark-q1");
        let j =
            build(br#"{"job":"nexmark","args":{"query":"q2","events-file":"/ev","output":"/o"}}"#)
                .unwrap();
        assert_eq!(j.name, "nexmark-q2");
        for q in ["q0", "q3", "q4", "q5", "q6", "q7", "q8"] {
            let body = format!(r#"{{"job":"nexmark","args":{{"query":"{q}","events":10}}}}"#);
            assert_eq!(build(body.as_bytes()).unwrap().name, format!("nexmark-{q}"));
        }
        assert!(
            build(br#"{"job":"window-count","args":{"input":"/i","output":"/o","size":0}}"#)
                .is_err()
        );
    }

    #[test]
    fn refuses_unknown_jobs_bad_arguments_and_malformed_bodies() {
        let err = |b: &[u8]| build(b).unwrap_err();
        assert!(matches!(
            err(br#"{"job":"nope"}"#),
            SubmitError::UnknownJob(_)
        ));
        assert!(matches!(err(b"{not json"), SubmitError::Malformed(_)));
        assert!(matches!(err(br#"{"args":{}}"#), SubmitError::Malformed(_)));
        assert!(matches!(
            err(br#"{"job":"keyed-sum","extra":1}"#),
            SubmitError::Malformed(_)
        ));
        for bad in [
            r#"{"job":"keyed-sum","args":{"keys":0}}"#,
            r#"{"job":"keyed-sum","args":{"rows":"many"}}"#,
            r#"{"job":"keyed-sum","args":{"bogus":1}}"#,
            r#"{"job":"keyed-sum","args":[1]}"#,
            r#"{"job":"wordcount","args":{"input":"/in"}}"#,
            r#"{"job":"wordcount","args":{"input":"/in","output":"/o","rate":1}}"#,
            r#"{"job":"running-count","args":{"input":"/in","output":"/o","rate":-1}}"#,
            r#"{"job":"nexmark","args":{"query":"q9","events":10}}"#,
            r#"{"job":"nexmark","args":{"query":"q0"}}"#,
            r#"{"job":"nexmark","args":{"query":"q0","events":10,"events-file":"/ev"}}"#,
            r#"{"job":"nexmark","args":{"query":"q0","events":10,"events-per-second":0}}"#,
        ] {
            assert!(
                matches!(err(bad.as_bytes()), SubmitError::BadArgs { .. }),
                "{bad}"
            );
        }
        for p in ["0", "40000", "-1"] {
            let b = format!(r#"{{"job":"keyed-sum","parallelism":{p}}}"#);
            assert!(build(b.as_bytes()).is_err(), "{p}");
        }
    }
}
