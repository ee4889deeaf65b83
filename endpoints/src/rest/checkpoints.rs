//! Flink's REST API v1 for checkpoints and savepoints: request bodies, trigger ids and
//! response bodies, all pure (no I/O, no clock).
//!
//! # Trigger ids
//!
//! Flink names an asynchronous operation by a 32-hex-digit trigger id; the Dispatcher
//! names a user's checkpoint or savepoint by a `u64` request id, counted per job. A
//! trigger id rill hands out is the operation's kind in the upper 64 bits and the
//! request id in the lower 64 ([`trigger_id`]): `1` for a checkpoint, `2` for a
//! savepoint or stop-with-savepoint. Decoding it needs no table, survives a restart of
//! the REST server, and tells a checkpoint's trigger from a savepoint's, so polling one
//! through the other's route answers 404 as in Flink, whose operation caches are per
//! route.
//!
//! A client may choose its own trigger id (Flink's `triggerId` field, for idempotent
//! retries). [`ClientTriggers`] maps such ids to request ids, at most
//! [`MAX_CLIENT_TRIGGERS`] of them (the oldest are forgotten first); it lives as long as
//! the REST server. Ids whose upper 64 bits are a kind rill uses are refused as client
//! ids ([`BodyError`]), so a client id can never shadow one rill hands out.
//!
//! # Requests
//!
//! * a savepoint: `target-directory` (else `state.savepoints.dir`), `cancel-job` (a
//!   stop-with-savepoint without drain: the job ends FINISHED where Flink's deprecated
//!   cancel-with-savepoint ends it CANCELED), `formatType` (`CANONICAL` or `NATIVE`;
//!   rill has one savepoint format, self-contained and rescalable, and takes it for
//!   both), `triggerId`;
//! * a stop: `targetDirectory`, `drain`, `formatType`, `triggerId`;
//! * a checkpoint: `checkpointType` (only `CONFIGURED`: rill takes every checkpoint as
//!   `execution.checkpointing.incremental` says), `triggerId`.
//!
//! An empty body is `{}`, as in Flink; unknown fields are refused, as Flink's strict
//! request mapper does.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use rill_dataflow::JobId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{CheckpointingModeSetting, RillConfig};
use crate::messages::{CheckpointInfo, CheckpointsSummary, SavepointRequest, SnapshotStatus};

/// What a trigger id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TriggerKind {
    /// `POST /jobs/:jobid/checkpoints`, polled at `/jobs/:jobid/checkpoints/:triggerid`.
    Checkpoint,
    /// `POST /jobs/:jobid/savepoints` or `/stop`, polled at
    /// `/jobs/:jobid/savepoints/:triggerid`.
    Savepoint,
}

impl TriggerKind {
    /// The upper 64 bits of the trigger ids rill hands out for this kind.
    fn tag(self) -> u64 {
        match self {
            TriggerKind::Checkpoint => 1,
            TriggerKind::Savepoint => 2,
        }
    }

    /// `checkpoint` or `savepoint`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::Checkpoint => "checkpoint",
            TriggerKind::Savepoint => "savepoint",
        }
    }
}

/// A trigger id as Flink writes it: 32 lower-case hex digits.
pub fn format_trigger_id(id: u128) -> String {
    format!("{id:032x}")
}

/// The trigger id rill hands out for request `request` of `kind`.
pub fn trigger_id(kind: TriggerKind, request: u64) -> u128 {
    (u128::from(kind.tag()) << 64) | u128::from(request)
}

/// The request id a trigger id of rill's names, if it is one of `kind`.
pub fn rill_request(kind: TriggerKind, id: u128) -> Option<u64> {
    ((id >> 64) as u64 == kind.tag()).then_some(id as u64)
}

/// Whether `id` has the form of a trigger id rill hands out (of any kind).
fn is_rill_form(id: u128) -> bool {
    [TriggerKind::Checkpoint, TriggerKind::Savepoint]
        .iter()
        .any(|k| rill_request(*k, id).is_some())
}

/// Parses a trigger id: 32 hex digits (either case, as Flink accepts).
pub fn parse_trigger_id(s: &str) -> Result<u128, super::flink::BadId> {
    let bad = || super::flink::BadId {
        what: "trigger id",
        input: s.chars().take(64).collect(),
    };
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u128::from_str_radix(s, 16).map_err(|_| bad())
}

/// How many client-chosen trigger ids [`ClientTriggers`] remembers.
pub const MAX_CLIENT_TRIGGERS: usize = 1024;

/// Client-chosen trigger ids and the request each started (see the module docs).
#[derive(Debug, Default)]
pub struct ClientTriggers {
    requests: BTreeMap<(JobId, TriggerKind, u128), u64>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<(JobId, TriggerKind, u128)>,
}

impl ClientTriggers {
    /// The request a client's trigger id started, if remembered.
    pub fn get(&self, job: JobId, kind: TriggerKind, id: u128) -> Option<u64> {
        self.requests.get(&(job, kind, id)).copied()
    }

    /// Remembers that the client's trigger id `id` started `request`.
    pub fn insert(&mut self, job: JobId, kind: TriggerKind, id: u128, request: u64) {
        let key = (job, kind, id);
        if self.requests.insert(key, request).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_CLIENT_TRIGGERS {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    /// The request trigger id `id` names for `job`: a client's remembered id first,
    /// else one rill handed out.
    pub fn resolve(&self, job: JobId, kind: TriggerKind, id: u128) -> Option<u64> {
        self.get(job, kind, id).or_else(|| rill_request(kind, id))
    }
}

/// A request body that does not parse: 400 with Flink's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Request did not match expected format {body}: {detail}")]
pub struct BodyError {
    /// Flink's name of the body (`SavepointTriggerRequestBody`, …).
    pub body: &'static str,
    /// What is wrong.
    pub detail: String,
}

/// A parsed `POST /jobs/:jobid/savepoints` or `/stop` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointTrigger {
    /// What the Dispatcher is asked for.
    pub request: SavepointRequest,
    /// The client's own trigger id, if it sent one.
    pub trigger_id: Option<u128>,
}

/// A parsed `POST /jobs/:jobid/checkpoints` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointTrigger {
    /// The client's own trigger id, if it sent one.
    pub trigger_id: Option<u128>,
}

/// Flink's `SavepointFormatType`; rill writes its one format for both.
#[derive(Debug, Deserialize)]
enum SavepointFormatType {
    #[serde(rename = "CANONICAL")]
    Canonical,
    #[serde(rename = "NATIVE")]
    Native,
}

/// Flink's `CheckpointType` of a checkpoint trigger.
#[derive(Debug, Deserialize, PartialEq, Eq)]
enum CheckpointType {
    #[serde(rename = "CONFIGURED")]
    Configured,
    #[serde(rename = "FULL")]
    Full,
    #[serde(rename = "INCREMENTAL")]
    Incremental,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavepointTriggerRequestBody {
    #[serde(rename = "target-directory", default)]
    target_directory: Option<String>,
    #[serde(rename = "cancel-job", default)]
    cancel_job: Option<bool>,
    #[serde(rename = "formatType", default)]
    format_type: Option<SavepointFormatType>,
    #[serde(rename = "triggerId", default)]
    trigger_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopWithSavepointRequestBody {
    #[serde(rename = "targetDirectory", default)]
    target_directory: Option<String>,
    #[serde(default)]
    drain: Option<bool>,
    #[serde(rename = "formatType", default)]
    format_type: Option<SavepointFormatType>,
    #[serde(rename = "triggerId", default)]
    trigger_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointTriggerRequestBody {
    #[serde(rename = "checkpointType", default)]
    checkpoint_type: Option<CheckpointType>,
    #[serde(rename = "triggerId", default)]
    trigger_id: Option<String>,
}

/// Parses a JSON body, an empty (or all-whitespace) one being `{}`.
fn parse_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    name: &'static str,
) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |detail: String| BodyError { body: name, detail };
    // Through a `Value`: serde would also take a struct from a JSON array.
    match serde_json::from_slice::<Value>(body).map_err(|e| bad(e.to_string()))? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| bad(e.to_string())),
        _ => Err(bad("the body must be a JSON object".into())),
    }
}

/// A client's `triggerId`: 32 hex digits, not of the form rill hands out.
fn client_trigger_id(s: Option<String>, name: &'static str) -> Result<Option<u128>, BodyError> {
    let Some(s) = s else { return Ok(None) };
    let id = parse_trigger_id(&s).map_err(|e| BodyError {
        body: name,
        detail: e.to_string(),
    })?;
    if is_rill_form(id) {
        return Err(BodyError {
            body: name,
            detail: format!(
                "triggerId {s} has the form of the ids rill assigns (upper 64 bits 1 or 2); \
                 choose another or leave it out"
            ),
        });
    }
    Ok(Some(id))
}

/// A target directory: absent, or a non-empty string.
fn target_dir(dir: Option<String>, name: &'static str) -> Result<Option<String>, BodyError> {
    match dir {
        Some(d) if d.trim().is_empty() => Err(BodyError {
            body: name,
            detail: "the target directory must not be empty".into(),
        }),
        d => Ok(d),
    }
}

/// Parses `POST /jobs/:jobid/savepoints`; `cancel-job: true` is a stop without drain.
pub fn parse_savepoint_trigger(body: &[u8]) -> Result<SavepointTrigger, BodyError> {
    const NAME: &str = "SavepointTriggerRequestBody";
    let b: SavepointTriggerRequestBody = parse_body(body, NAME)?;
    let _format = b.format_type;
    let cancel = b.cancel_job.unwrap_or(false);
    Ok(SavepointTrigger {
        request: SavepointRequest {
            target_dir: target_dir(b.target_directory, NAME)?,
            terminate: cancel,
            drain: false,
        },
        trigger_id: client_trigger_id(b.trigger_id, NAME)?,
    })
}

/// Parses `POST /jobs/:jobid/stop`.
pub fn parse_stop(body: &[u8]) -> Result<SavepointTrigger, BodyError> {
    const NAME: &str = "StopWithSavepointRequestBody";
    let b: StopWithSavepointRequestBody = parse_body(body, NAME)?;
    let _format = b.format_type;
    Ok(SavepointTrigger {
        request: SavepointRequest {
            target_dir: target_dir(b.target_directory, NAME)?,
            terminate: true,
            drain: b.drain.unwrap_or(false),
        },
        trigger_id: client_trigger_id(b.trigger_id, NAME)?,
    })
}

/// Parses `POST /jobs/:jobid/checkpoints`.
pub fn parse_checkpoint_trigger(body: &[u8]) -> Result<CheckpointTrigger, BodyError> {
    const NAME: &str = "CheckpointTriggerRequestBody";
    let b: CheckpointTriggerRequestBody = parse_body(body, NAME)?;
    match b.checkpoint_type {
        None | Some(CheckpointType::Configured) => {}
        Some(other) => {
            return Err(BodyError {
                body: NAME,
                detail: format!(
                    "checkpointType {other:?} is not supported: rill takes every checkpoint as \
                     configured (execution.checkpointing.incremental); send CONFIGURED or \
                     leave it out"
                ),
            })
        }
    }
    Ok(CheckpointTrigger {
        trigger_id: client_trigger_id(b.trigger_id, NAME)?,
    })
}

/// Flink's `TriggerResponse`.
pub fn trigger_response(id: u128) -> Value {
    json!({ "request-id": format_trigger_id(id) })
}

/// Flink's `SerializedThrowable` of a failed operation; rill has no Java exception to
/// serialize.
fn failure_cause(reason: &str) -> Value {
    json!({
        "class": "rill.SnapshotFailure",
        "stack-trace": reason,
        "serialized-throwable": "",
    })
}

/// `GET /jobs/:jobid/checkpoints/:triggerid` (Flink's `AsynchronousOperationResult` of a
/// `CheckpointInfo`). `checkpoint_id` is the completed checkpoint's id (-1 if unknown).
pub fn checkpoint_status(status: &SnapshotStatus, checkpoint_id: Option<u64>) -> Value {
    match status {
        SnapshotStatus::InProgress => json!({"status": {"id": "IN_PROGRESS"}, "operation": null}),
        SnapshotStatus::Completed { .. } => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"checkpointId": checkpoint_id.map_or(-1, |id| id as i64)},
        }),
        SnapshotStatus::Failed { reason } => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failureCause": failure_cause(reason)},
        }),
    }
}

/// `GET /jobs/:jobid/savepoints/:triggerid` (Flink's `AsynchronousOperationResult` of a
/// `SavepointInfo`).
pub fn savepoint_status(status: &SnapshotStatus) -> Value {
    match status {
        SnapshotStatus::InProgress => json!({"status": {"id": "IN_PROGRESS"}, "operation": null}),
        SnapshotStatus::Completed { path } => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"location": path},
        }),
        SnapshotStatus::Failed { reason } => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failure-cause": failure_cause(reason)},
        }),
    }
}

/// The id of the completed checkpoint in directory `path`: from the history, else from
/// the directory's name (`chk-<id>`).
pub fn checkpoint_id_of(summary: &CheckpointsSummary, path: &str) -> Option<u64> {
    summary
        .history
        .iter()
        .find(|c| c.path.as_deref() == Some(path))
        .map(|c| c.id)
        .or_else(|| {
            Path::new(path)
                .file_name()?
                .to_str()?
                .strip_prefix("chk-")?
                .parse()
                .ok()
        })
}

/// Flink's `StatsSummaryDto` of `values`: min, max, integer mean and percentiles
/// (commons-math's default estimate, as Flink's histogram); all 0 without values.
fn stats_summary(values: &[u64]) -> Value {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    let quantile = |q: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let pos = q * (n as f64 + 1.0);
        if pos < 1.0 {
            return v[0] as f64;
        }
        if pos >= n as f64 {
            return v[n - 1] as f64;
        }
        let lower = v[pos.floor() as usize - 1] as f64;
        let upper = v[pos.floor() as usize] as f64;
        lower + (pos - pos.floor()) * (upper - lower)
    };
    let (min, max, avg) = match (v.first(), v.last()) {
        (Some(min), Some(max)) => (*min, *max, v.iter().sum::<u64>() / n as u64),
        _ => (0, 0, 0),
    };
    json!({
        "min": min,
        "max": max,
        "avg": avg,
        "p50": quantile(0.5),
        "p90": quantile(0.9),
        "p95": quantile(0.95),
        "p99": quantile(0.99),
        "p999": quantile(0.999),
    })
}

/// Flink's `className` discriminator of a checkpoint's statistics.
fn class_name(c: &CheckpointInfo) -> &'static str {
    match c.status.as_str() {
        "COMPLETED" => "completed",
        "FAILED" => "failed",
        _ => "in_progress",
    }
}

/// One checkpoint as Flink's `CheckpointStatistics` (without per-task statistics, as
/// in Flink's list). Flink's byte and record counters rill does not keep are 0; times
/// rill does not know are -1. `alignment_duration` is rill's own: the longest barrier
/// alignment of a task, ms (Flink reports it only per subtask).
fn checkpoint_statistics(c: &CheckpointInfo) -> Value {
    let ended_at = c
        .duration_ms
        .map_or(-1, |d| c.trigger_timestamp_ms + d as i64);
    let mut v = json!({
        "className": class_name(c),
        "id": c.id,
        "status": c.status,
        "is_savepoint": c.savepoint,
        "savepointFormat": if c.savepoint { json!("CANONICAL") } else { Value::Null },
        "trigger_timestamp": c.trigger_timestamp_ms,
        "latest_ack_timestamp": ended_at,
        "checkpointed_size": c.bytes,
        "state_size": c.bytes,
        "end_to_end_duration": c.duration_ms.map_or(-1, |d| d as i64),
        "alignment_buffered": 0,
        "alignment_duration": c.alignment_ms,
        "processed_data": 0,
        "persisted_data": c.in_flight_bytes,
        "num_subtasks": c.expected,
        "num_acknowledged_subtasks": c.acknowledged,
        "checkpoint_type": match (c.savepoint, c.unaligned) {
            (true, _) => "SAVEPOINT",
            (false, true) => "UNALIGNED_CHECKPOINT",
            (false, false) => "CHECKPOINT",
        },
        "tasks": {},
    });
    match c.status.as_str() {
        "COMPLETED" => {
            v["external_path"] = json!(c.path);
            v["discarded"] = json!(false);
        }
        "FAILED" => {
            v["failure_timestamp"] = json!(ended_at);
            v["failure_message"] = json!(c.failure);
        }
        _ => {}
    }
    v
}

/// `GET /jobs/:jobid/checkpoints` (Flink's `CheckpointingStatistics`). The history is
/// newest first, as Flink's; `summary` covers the completed checkpoints rill still keeps
/// in its history (Flink's covers all); `restored` counts 1 when the job's latest
/// (re)start restored a checkpoint or savepoint (rill keeps only that one).
pub fn checkpointing_statistics(s: &CheckpointsSummary) -> Value {
    let newest_first: Vec<&CheckpointInfo> = s.history.iter().rev().collect();
    let completed: Vec<&CheckpointInfo> = newest_first
        .iter()
        .copied()
        .filter(|c| c.status == "COMPLETED")
        .collect();
    let latest = |savepoint: bool| {
        completed
            .iter()
            .find(|c| c.savepoint == savepoint)
            .map_or(Value::Null, |c| checkpoint_statistics(c))
    };
    let failed = newest_first
        .iter()
        .find(|c| c.status == "FAILED")
        .map_or(Value::Null, |c| checkpoint_statistics(c));
    let restored = s.restored.as_ref().map_or(Value::Null, |(id, path)| {
        let savepoint = s
            .history
            .iter()
            .find(|c| c.id == *id && c.path.as_deref() == Some(path.as_str()))
            .map_or_else(
                || {
                    Path::new(path)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("savepoint-"))
                },
                |c| c.savepoint,
            );
        json!({
            "id": id,
            "restore_timestamp": -1,
            "is_savepoint": savepoint,
            "external_path": path,
        })
    });
    let in_progress = s
        .history
        .iter()
        .filter(|c| c.status == "IN_PROGRESS")
        .count() as u64;
    let sizes: Vec<u64> = completed.iter().map(|c| c.bytes).collect();
    let durations: Vec<u64> = completed.iter().filter_map(|c| c.duration_ms).collect();
    let zeros = vec![0; completed.len()];
    json!({
        "counts": {
            "restored": u64::from(s.restored.is_some()),
            "total": s.completed + s.failed + in_progress,
            "in_progress": in_progress,
            "completed": s.completed,
            "failed": s.failed,
        },
        "summary": {
            "checkpointed_size": stats_summary(&sizes),
            "state_size": stats_summary(&sizes),
            "end_to_end_duration": stats_summary(&durations),
            "alignment_buffered": stats_summary(&zeros),
            "processed_data": stats_summary(&zeros),
            "persisted_data": stats_summary(&zeros),
        },
        "latest": {
            "completed": latest(false),
            "savepoint": latest(true),
            "failed": failed,
            "restored": restored,
        },
        "history": newest_first.iter().map(|c| checkpoint_statistics(c)).collect::<Vec<_>>(),
    })
}

/// The cluster's checkpoint settings, as `GET /jobs/:jobid/checkpoints/config` reports
/// them (every job of a rill cluster checkpoints with the cluster's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// `execution.checkpointing.mode`.
    pub exactly_once: bool,
    /// `execution.checkpointing.interval`, ms.
    pub interval_ms: u64,
    /// `execution.checkpointing.timeout`, ms.
    pub timeout_ms: u64,
    /// `execution.checkpointing.min-pause`, ms.
    pub min_pause_ms: u64,
    /// `execution.checkpointing.max-concurrent-checkpoints`.
    pub max_concurrent: usize,
    /// `execution.checkpointing.tolerable-failed-checkpoints`.
    pub tolerable_failed: u32,
    /// `state.backend.type` (rill's name).
    pub state_backend: &'static str,
    /// `execution.checkpointing.unaligned.enabled`.
    pub unaligned: bool,
    /// `execution.checkpointing.aligned-checkpoint-timeout`, ms.
    pub aligned_timeout_ms: u64,
}

impl CheckpointSettings {
    /// The settings of `config`.
    pub fn from_config(config: &RillConfig) -> Self {
        let c = &config.execution.checkpointing;
        CheckpointSettings {
            exactly_once: c.mode == CheckpointingModeSetting::ExactlyOnce,
            interval_ms: c.interval.map_or(0, |d| d.as_millis() as u64),
            timeout_ms: c.timeout.as_millis() as u64,
            min_pause_ms: c.min_pause.as_millis() as u64,
            max_concurrent: c.max_concurrent_checkpoints,
            tolerable_failed: c.tolerable_failed_checkpoints,
            state_backend: config.state.backend.kind.name(),
            unaligned: c.unaligned.enabled,
            aligned_timeout_ms: c.aligned_checkpoint_timeout.as_millis() as u64,
        }
    }
}

/// `GET /jobs/:jobid/checkpoints/config` (Flink's `CheckpointConfigInfo`): `mode` in
/// Flink's lower case, times in ms. Completed checkpoints stay in
/// `state.checkpoints.dir` when a job is cancelled (Flink's retained externalized
/// checkpoints); rill has no changelog.
pub fn checkpoint_config(s: &CheckpointSettings) -> Value {
    json!({
        "mode": if s.exactly_once { "exactly_once" } else { "at_least_once" },
        "interval": s.interval_ms,
        "timeout": s.timeout_ms,
        "min_pause": s.min_pause_ms,
        "max_concurrent": s.max_concurrent,
        "externalization": {"enabled": true, "delete_on_cancellation": false},
        "state_backend": s.state_backend,
        "checkpoint_storage": "filesystem",
        "unaligned_checkpoints": s.unaligned,
        "tolerable_failed_checkpoints": s.tolerable_failed,
        "aligned_checkpoint_timeout": s.aligned_timeout_ms,
        "checkpoints_after_tasks_finish": true,
        "state_changelog_enabled": false,
        "changelog_periodic_materialization_interval": -1,
        "changelog_storage": "none",
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    fn job() -> JobId {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    fn info(id: u64, status: &str, savepoint: bool) -> CheckpointInfo {
        CheckpointInfo {
            id,
            savepoint,
            status: status.into(),
            trigger_timestamp_ms: 1_000 * id as i64,
            duration_ms: (status != "IN_PROGRESS").then_some(10 * id),
            acknowledged: 2,
            expected: 2,
            bytes: 100 * id,
            alignment_ms: 0,
            in_flight_bytes: 0,
            unaligned: false,
            path: (status == "COMPLETED").then(|| format!("/chk/job/chk-{id}")),
            failure: (status == "FAILED").then(|| "declined".into()),
        }
    }

    /// Flink's fields, and rill's `alignment_duration`.
    const BASE_FIELDS: [&str; 18] = [
        "className",
        "id",
        "status",
        "is_savepoint",
        "savepointFormat",
        "trigger_timestamp",
        "latest_ack_timestamp",
        "checkpointed_size",
        "state_size",
        "end_to_end_duration",
        "alignment_buffered",
        "alignment_duration",
        "processed_data",
        "persisted_data",
        "num_subtasks",
        "num_acknowledged_subtasks",
        "checkpoint_type",
        "tasks",
    ];

    #[test]
    fn trigger_ids_map_request_ids_both_ways_and_tell_kinds_apart() {
        let id = trigger_id(TriggerKind::Savepoint, 7);
        assert_eq!(format_trigger_id(id), "00000000000000020000000000000007");
        assert_eq!(rill_request(TriggerKind::Savepoint, id), Some(7));
        assert_eq!(rill_request(TriggerKind::Checkpoint, id), None);
        assert_eq!(parse_trigger_id(&format_trigger_id(id)), Ok(id));
        assert_eq!(
            parse_trigger_id("00000000000000020000000000000007".to_uppercase().as_str()),
            Ok(id)
        );
        assert!(parse_trigger_id("7").is_err());
        assert!(parse_trigger_id(&"g".repeat(32)).is_err());
        assert!(parse_trigger_id("+0000000000000020000000000000007").is_err());
    }

    #[test]
    fn client_trigger_ids_are_remembered_per_job_and_kind_and_bounded() {
        let mut t = ClientTriggers::default();
        let client = u128::MAX - 5;
        t.insert(job(), TriggerKind::Savepoint, client, 3);
        assert_eq!(t.resolve(job(), TriggerKind::Savepoint, client), Some(3));
        assert_eq!(t.resolve(job(), TriggerKind::Checkpoint, client), None);
        let ours = trigger_id(TriggerKind::Checkpoint, 9);
        assert_eq!(t.resolve(job(), TriggerKind::Checkpoint, ours), Some(9));
        for i in 0..MAX_CLIENT_TRIGGERS as u128 {
            t.insert(job(), TriggerKind::Checkpoint, u128::MAX - 1000 - i, 1);
        }
        assert_eq!(t.requests.len(), MAX_CLIENT_TRIGGERS);
        assert_eq!(
            t.get(job(), TriggerKind::Savepoint, client),
            None,
            "oldest forgotten"
        );
    }

    #[test]
    fn savepoint_bodies_parse_like_flinks() {
        let t = parse_savepoint_trigger(b"").unwrap();
        assert_eq!(t.request, SavepointRequest::default());
        assert_eq!(t.trigger_id, None);
        let t = parse_savepoint_trigger(
            br#"{"target-directory":"file:///sp","cancel-job":true,"formatType":"NATIVE","triggerId":"ffffffffffffffffffffffffffffffff"}"#,
        )
        .unwrap();
        assert_eq!(
            t.request,
            SavepointRequest {
                target_dir: Some("file:///sp".into()),
                terminate: true,
                drain: false,
            }
        );
        assert_eq!(t.trigger_id, Some(u128::MAX));
        let t = parse_savepoint_trigger(br#"{"target-directory":null,"cancel-job":null}"#).unwrap();
        assert_eq!(t.request, SavepointRequest::default());
        for bad in [
            &b"{not json"[..],
            br#"{"target-directory":"/sp","surprise":1}"#,
            br#"{"cancel-job":"yes"}"#,
            br#"{"formatType":"WEIRD"}"#,
            br#"{"triggerId":"nope"}"#,
            br#"{"triggerId":"00000000000000010000000000000001"}"#,
            br#"{"target-directory":""}"#,
            b"[]",
        ] {
            let e = parse_savepoint_trigger(bad).unwrap_err();
            assert_eq!(e.body, "SavepointTriggerRequestBody", "{bad:?}");
        }
    }

    #[test]
    fn stop_and_checkpoint_bodies_parse_like_flinks() {
        let t = parse_stop(br#"{"targetDirectory":"/sp","drain":true}"#).unwrap();
        assert_eq!(
            t.request,
            SavepointRequest {
                target_dir: Some("/sp".into()),
                terminate: true,
                drain: true,
            }
        );
        assert!(!parse_stop(b"{}").unwrap().request.drain);
        assert!(parse_stop(br#"{"target-directory":"/sp"}"#).is_err());
        assert_eq!(parse_checkpoint_trigger(b" ").unwrap().trigger_id, None);
        assert!(parse_checkpoint_trigger(br#"{"checkpointType":"CONFIGURED"}"#).is_ok());
        let e = parse_checkpoint_trigger(br#"{"checkpointType":"FULL"}"#).unwrap_err();
        assert!(e.detail.contains("CONFIGURED"), "{e}");
        assert!(parse_checkpoint_trigger(b"{").is_err());
    }

    #[test]
    fn operation_results_are_flinks() {
        assert_eq!(
            savepoint_status(&SnapshotStatus::InProgress),
            json!({"status": {"id": "IN_PROGRESS"}, "operation": null})
        );
        assert_eq!(
            savepoint_status(&SnapshotStatus::Completed {
                path: "/sp/x".into()
            }),
            json!({"status": {"id": "COMPLETED"}, "operation": {"location": "/sp/x"}})
        );
        let failed = savepoint_status(&SnapshotStatus::Failed {
            reason: "boom".into(),
        });
        assert_eq!(failed["status"]["id"], "COMPLETED");
        assert_eq!(
            keys(&failed["operation"]["failure-cause"]),
            set(&["class", "stack-trace", "serialized-throwable"])
        );
        let done = checkpoint_status(&SnapshotStatus::Completed { path: "/c".into() }, Some(4));
        assert_eq!(done["operation"], json!({"checkpointId": 4}));
        let failed = checkpoint_status(
            &SnapshotStatus::Failed {
                reason: "boom".into(),
            },
            None,
        );
        assert_eq!(failed["operation"]["failureCause"]["stack-trace"], "boom");
        assert_eq!(
            trigger_response(1),
            json!({"request-id": format!("{:032x}", 1)})
        );
    }

    #[test]
    fn checkpoint_ids_come_from_the_history_or_the_directory_name() {
        let s = CheckpointsSummary {
            history: vec![info(3, "COMPLETED", false)],
            ..Default::default()
        };
        assert_eq!(checkpoint_id_of(&s, "/chk/job/chk-3"), Some(3));
        assert_eq!(checkpoint_id_of(&s, "/elsewhere/chk-12"), Some(12));
        assert_eq!(checkpoint_id_of(&s, "/elsewhere/x"), None);
    }

    #[test]
    fn statistics_have_flinks_fields_newest_first() {
        let s = CheckpointsSummary {
            enabled: true,
            history: vec![
                info(1, "COMPLETED", false),
                info(2, "FAILED", false),
                info(3, "COMPLETED", true),
                info(4, "COMPLETED", false),
                info(5, "IN_PROGRESS", false),
            ],
            completed: 3,
            failed: 1,
            latest_completed: Some("/chk/job/chk-4".into()),
            restored: Some((9, "/sp/savepoint-abc-9".into())),
            requests: vec![],
        };
        let v = checkpointing_statistics(&s);
        assert_eq!(keys(&v), set(&["counts", "summary", "latest", "history"]));
        assert_eq!(
            v["counts"],
            json!({"restored": 1, "total": 5, "in_progress": 1, "completed": 3, "failed": 1})
        );
        assert_eq!(
            keys(&v["summary"]),
            set(&[
                "checkpointed_size",
                "state_size",
                "end_to_end_duration",
                "alignment_buffered",
                "processed_data",
                "persisted_data",
            ])
        );
        assert_eq!(
            keys(&v["summary"]["state_size"]),
            set(&["min", "max", "avg", "p50", "p90", "p95", "p99", "p999"])
        );
        assert_eq!(v["summary"]["state_size"]["min"], 100);
        assert_eq!(v["summary"]["state_size"]["max"], 400);
        assert_eq!(v["summary"]["state_size"]["avg"], 266);
        assert_eq!(v["summary"]["state_size"]["p50"], 300.0);
        let history = v["history"].as_array().unwrap();
        let ids: Vec<u64> = history.iter().map(|c| c["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [5, 4, 3, 2, 1]);
        let mut completed = set(&BASE_FIELDS);
        completed.extend(["external_path", "discarded"]);
        assert_eq!(keys(&history[1]), completed);
        assert_eq!(history[1]["className"], "completed");
        assert_eq!(history[1]["external_path"], "/chk/job/chk-4");
        let mut failed = set(&BASE_FIELDS);
        failed.extend(["failure_timestamp", "failure_message"]);
        assert_eq!(keys(&history[3]), failed);
        assert_eq!(keys(&history[0]), set(&BASE_FIELDS));
        assert_eq!(history[0]["className"], "in_progress");
        assert_eq!(history[0]["end_to_end_duration"], -1);
        let latest = &v["latest"];
        assert_eq!(latest["completed"]["id"], 4);
        assert_eq!(latest["savepoint"]["id"], 3);
        assert_eq!(latest["savepoint"]["checkpoint_type"], "SAVEPOINT");
        assert_eq!(latest["failed"]["id"], 2);
        assert_eq!(latest["failed"]["failure_message"], "declined");
        assert_eq!(
            latest["restored"],
            json!({"id": 9, "restore_timestamp": -1, "is_savepoint": true, "external_path": "/sp/savepoint-abc-9"})
        );
    }

    #[test]
    fn statistics_without_checkpoints_keep_every_field() {
        let v = checkpointing_statistics(&CheckpointsSummary::default());
        assert_eq!(v["counts"]["total"], 0);
        assert_eq!(v["summary"]["end_to_end_duration"]["p99"], 0.0);
        assert_eq!(
            v["latest"],
            json!({"completed": null, "savepoint": null, "failed": null, "restored": null})
        );
        assert_eq!(v["history"], json!([]));
    }

    #[test]
    fn config_reports_the_settings_in_flinks_spelling() {
        let mut config = RillConfig::default();
        config.execution.checkpointing.interval = Some(Duration::from_millis(200));
        config.execution.checkpointing.mode = CheckpointingModeSetting::AtLeastOnce;
        config.execution.checkpointing.tolerable_failed_checkpoints = 3;
        let v = checkpoint_config(&CheckpointSettings::from_config(&config));
        assert_eq!(
            keys(&v),
            set(&[
                "mode",
                "interval",
                "timeout",
                "min_pause",
                "max_concurrent",
                "externalization",
                "state_backend",
                "checkpoint_storage",
                "unaligned_checkpoints",
                "tolerable_failed_checkpoints",
                "aligned_checkpoint_timeout",
                "checkpoints_after_tasks_finish",
                "state_changelog_enabled",
                "changelog_periodic_materialization_interval",
                "changelog_storage",
            ])
        );
        assert_eq!(v["mode"], "at_least_once");
        assert_eq!(v["interval"], 200);
        assert_eq!(v["timeout"], 600_000);
        assert_eq!(v["min_pause"], 0);
        assert_eq!(v["max_concurrent"], 1);
        assert_eq!(v["tolerable_failed_checkpoints"], 3);
        assert_eq!(v["unaligned_checkpoints"], false);
        assert_eq!(
            keys(&v["externalization"]),
            set(&["enabled", "delete_on_cancellation"])
        );
    }
}
