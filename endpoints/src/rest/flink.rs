//! Flink's REST API v1 response bodies, built from what the Dispatcher answers.
//!
//! Every function here is pure: it takes the Dispatcher's messages and the current time
//! (`now_ms`, milliseconds since the Unix epoch) and returns the JSON body Flink's
//! handler of the same route sends, with Flink's field names. Where rill has no value,
//! the field still appears with Flink's neutral value: `-1` for an unknown time, port or
//! size, `0` for a counter rill does not keep, `false` for the `*-complete` flags of byte
//! counters rill does not measure, and empty maps or lists.
//!
//! Ids: job ids are rill's 32 hex digits already; a vertex id is its index in the job
//! graph as 32 hex digits ([`vertex_id`], [`parse_vertex_id`]), so the REST id of a
//! vertex is stable across restarts of the job; TaskManager ids are rill's resource ids
//! (Flink's are free-form strings too).

use std::collections::BTreeMap;

use rill_dataflow::{JobId, VertexId};
use rill_runtime::ResourceId;
use serde_json::{json, Map, Value};

use crate::messages::{
    ExecutionState, JobDetails, JobOverview, JobResult, JobStatus, TaskIoCounters, TaskManagerInfo,
    VertexDetails,
};

/// The version string sent as `flink-version`: rill's own, so nobody mistakes it for a
/// Flink release.
pub const VERSION: &str = concat!("rill-", env!("CARGO_PKG_VERSION"));

/// Every job status Flink has, in Flink's order (`timestamps` lists all of them).
/// `RECONCILING` is Flink's only status rill never enters.
const JOB_STATUS_NAMES: [&str; 11] = [
    "INITIALIZING",
    "CREATED",
    "RUNNING",
    "FAILING",
    "FAILED",
    "CANCELLING",
    "CANCELED",
    "FINISHED",
    "RESTARTING",
    "SUSPENDED",
    "RECONCILING",
];

/// Every execution state Flink has (keys of `tasks` and `status-counts`);
/// `RECONCILING` is never reached in rill.
const EXECUTION_STATES: [ExecutionState; 9] = [
    ExecutionState::Created,
    ExecutionState::Scheduled,
    ExecutionState::Deploying,
    ExecutionState::Initializing,
    ExecutionState::Running,
    ExecutionState::Finished,
    ExecutionState::Canceling,
    ExecutionState::Canceled,
    ExecutionState::Failed,
];

/// The states an attempt passes through before it ends (keys of `status-duration`).
const STATUS_DURATION_STATES: [&str; 5] = [
    "CREATED",
    "SCHEDULED",
    "DEPLOYING",
    "INITIALIZING",
    "RUNNING",
];

/// A vertex's REST id: its index as 32 hex digits.
pub fn vertex_id(v: VertexId) -> String {
    format!("{:032x}", v.0)
}

/// Why a path parameter is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected 32 hex digits")]
pub struct BadId {
    /// `job id`, `vertex id` or `trigger id`.
    pub what: &'static str,
    /// What was given (at most 64 characters).
    pub input: String,
}

/// Parses a vertex's REST id (see [`vertex_id`]); an id that is well-formed but beyond
/// `u32` is not an error here, it just names no vertex.
pub fn parse_vertex_id(s: &str) -> Result<Option<VertexId>, BadId> {
    let bad = || BadId {
        what: "vertex id",
        input: s.chars().take(64).collect(),
    };
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let n = u128::from_str_radix(s, 16).map_err(|_| bad())?;
    Ok(u32::try_from(n).ok().map(VertexId))
}

/// Parses a job id from a path.
pub fn parse_job_id(s: &str) -> Result<JobId, BadId> {
    s.parse().map_err(|_| BadId {
        what: "job id",
        input: s.chars().take(64).collect(),
    })
}

/// The end time Flink shows: when the job ended, or -1 while it runs.
fn end_time(o: &JobOverview) -> i64 {
    if o.status.is_terminal() {
        (o.start_time_ms + o.duration_ms) as i64
    } else {
        -1
    }
}

/// The aggregate state of a vertex from its subtasks' states (Flink's
/// `ExecutionJobVertex.getAggregateJobVertexState`).
pub fn vertex_state(v: &VertexDetails) -> ExecutionState {
    let n = |s| v.states.get(&s).copied().unwrap_or(0);
    use ExecutionState::*;
    for s in [Failed, Canceling, Canceled, Initializing, Running] {
        if n(s) > 0 {
            return s;
        }
    }
    if n(Finished) > 0 {
        return if n(Finished) == v.parallelism {
            Finished
        } else {
            Running
        };
    }
    for s in [Deploying, Scheduled] {
        if n(s) > 0 {
            return s;
        }
    }
    Created
}

/// Counts per execution state, keyed by Flink's upper-case names, every state present.
fn state_counts(counts: &BTreeMap<ExecutionState, u32>) -> Map<String, Value> {
    let mut m: Map<String, Value> = EXECUTION_STATES
        .iter()
        .map(|s| {
            (
                s.name().to_string(),
                json!(counts.get(s).copied().unwrap_or(0)),
            )
        })
        .collect();
    m.insert("RECONCILING".into(), json!(0));
    m
}

/// Flink's `IOMetricsInfo` of a vertex: its record totals, and its bytes summed over
/// its subtasks' last heartbeats; times are not summed (0).
fn io_metrics(v: &VertexDetails, complete: bool) -> Value {
    let (records_in, records_out) = (v.records_in, v.records_out);
    let bytes_in: u64 = v.subtasks.iter().map(|c| c.bytes_in).sum();
    let bytes_out: u64 = v.subtasks.iter().map(|c| c.bytes_out).sum();
    json!({
        "read-bytes": bytes_in,
        "read-bytes-complete": complete,
        "write-bytes": bytes_out,
        "write-bytes-complete": complete,
        "read-records": records_in,
        "read-records-complete": complete,
        "write-records": records_out,
        "write-records-complete": complete,
        "accumulated-backpressured-time": 0,
        "accumulated-idle-time": 0,
        "accumulated-busy-time": 0.0,
    })
}

/// `GET /config` (Flink's `DashboardConfiguration`).
pub fn dashboard_config() -> Value {
    json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": VERSION,
        "flink-revision": VERSION,
        "features": {
            "web-submit": false,
            "web-cancel": true,
            "web-rescale": false,
            "web-history": false,
        },
    })
}

/// `GET /overview` (Flink's `ClusterOverviewWithVersion`).
pub fn cluster_overview(jobs: &[JobOverview], task_managers: &[TaskManagerInfo]) -> Value {
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    json!({
        "taskmanagers": task_managers.len(),
        "taskmanagers-blocked": 0,
        "slots-total": task_managers.iter().map(|t| t.slots_total).sum::<u32>(),
        "slots-available": task_managers.iter().map(|t| t.slots_free).sum::<u32>(),
        "slots-free-and-blocked": 0,
        "jobs-running": jobs.iter().filter(|j| !j.status.is_terminal()).count(),
        "jobs-finished": count(JobStatus::Finished),
        "jobs-cancelled": count(JobStatus::Canceled),
        "jobs-failed": count(JobStatus::Failed),
        "flink-version": VERSION,
        "flink-commit": VERSION,
    })
}

/// `GET /jobs` (Flink's `JobIdsWithStatusOverview`).
pub fn job_ids_with_status(jobs: &[JobOverview]) -> Value {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|j| json!({ "id": j.job.to_string(), "status": j.status.name() }))
        .collect();
    json!({ "jobs": jobs })
}

/// One entry of `GET /jobs/overview` (Flink's `JobDetails`): subtask counts per state
/// under Flink's lower-case keys, plus `total`.
pub fn job_overview(d: &JobDetails) -> Value {
    let mut per_state: BTreeMap<ExecutionState, u32> = BTreeMap::new();
    for v in &d.vertices {
        for (s, n) in &v.states {
            *per_state.entry(*s).or_default() += n;
        }
    }
    let mut tasks: Map<String, Value> = EXECUTION_STATES
        .iter()
        .map(|s| {
            let n = per_state.get(s).copied().unwrap_or(0);
            (s.name().to_ascii_lowercase(), json!(n))
        })
        .collect();
    tasks.insert("reconciling".into(), json!(0));
    tasks.insert(
        "total".into(),
        json!(d.vertices.iter().map(|v| v.parallelism).sum::<u32>()),
    );
    let o = &d.overview;
    let end = end_time(o);
    json!({
        "jid": o.job.to_string(),
        "name": o.name,
        "state": o.status.name(),
        "start-time": o.start_time_ms,
        "end-time": end,
        "duration": o.duration_ms,
        "last-modification": if end >= 0 { end } else { o.start_time_ms as i64 },
        "tasks": tasks,
        "pending-operators": 0,
    })
}

/// `GET /jobs/overview` (Flink's `MultipleJobsDetails`).
pub fn jobs_overview(details: &[JobDetails]) -> Value {
    json!({ "jobs": details.iter().map(job_overview).collect::<Vec<_>>() })
}

/// `GET /jobs/:jobid` (Flink's `JobDetailsInfo`); the `plan`'s nodes name their inputs
/// (producing vertex, ship strategy) as Flink's JSON plan does.
pub fn job_details(d: &JobDetails, now_ms: u64) -> Value {
    let o = &d.overview;
    let end = end_time(o);
    let mut timestamps: Map<String, Value> = JOB_STATUS_NAMES
        .iter()
        .map(|s| (s.to_string(), json!(0)))
        .collect();
    timestamps.insert("INITIALIZING".into(), json!(o.start_time_ms));
    if end >= 0 {
        timestamps.insert(o.status.name().into(), json!(end));
    }
    let mut vertices_per_state: BTreeMap<ExecutionState, u32> = BTreeMap::new();
    let vertices: Vec<Value> = d
        .vertices
        .iter()
        .map(|v| {
            let state = vertex_state(v);
            *vertices_per_state.entry(state).or_default() += 1;
            json!({
                "id": vertex_id(v.vertex),
                "slotSharingGroupId": slot_sharing_group_id(o.job),
                "name": v.name,
                "maxParallelism": -1,
                "parallelism": v.parallelism,
                "status": state.name(),
                "start-time": -1,
                "end-time": -1,
                "duration": -1,
                "tasks": state_counts(&v.states),
                "metrics": io_metrics(v, state.is_terminal()),
            })
        })
        .collect();
    let nodes: Vec<Value> = d
        .vertices
        .iter()
        .map(|v| {
            let mut node = json!({
                "id": vertex_id(v.vertex),
                "parallelism": v.parallelism,
                "operator": "",
                "operator_strategy": "",
                "description": v.name,
                "optimizer_properties": {},
            });
            // Flink leaves `inputs` out of a source's node.
            if !v.inputs.is_empty() {
                let inputs: Vec<Value> = v
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(num, i)| {
                        json!({
                            "num": num,
                            "id": vertex_id(i.source),
                            "ship_strategy": i.ship_strategy,
                            "exchange": "pipelined_bounded",
                        })
                    })
                    .collect();
                node["inputs"] = Value::Array(inputs);
            }
            node
        })
        .collect();
    json!({
        "jid": o.job.to_string(),
        "name": o.name,
        "isStoppable": false,
        "state": o.status.name(),
        "job-type": "STREAMING",
        "start-time": o.start_time_ms,
        "end-time": end,
        "duration": o.duration_ms,
        "maxParallelism": -1,
        "now": now_ms,
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": state_counts(&vertices_per_state),
        "plan": {
            "jid": o.job.to_string(),
            "name": o.name,
            "type": "STREAMING",
            "nodes": nodes,
        },
        "pending-operators": 0,
    })
}

/// rill runs every vertex of a job in one slot sharing group; its id is the job's.
fn slot_sharing_group_id(job: JobId) -> String {
    job.to_string()
}

/// `GET /jobs/:jobid/status` (Flink's `JobStatusInfo`).
pub fn job_status(status: JobStatus) -> Value {
    json!({ "status": status.name() })
}

/// `GET /jobs/:jobid/exceptions` (Flink's `JobExceptionsInfoWithHistory`), newest
/// failure first, at most `max` entries. The pre-1.13 fields (`root-exception`,
/// `timestamp`, `all-exceptions`, `truncated`) are sent too, for older clients.
pub fn job_exceptions(d: &JobDetails, max: usize) -> Value {
    let entries: Vec<Value> = d
        .failures
        .iter()
        .rev()
        .take(max)
        .map(|f| {
            json!({
                "exceptionName": "rill.JobFailure",
                "stacktrace": format!("{}\n({})", f.cause, f.outcome),
                "timestamp": f.timestamp_ms,
                "taskName": null,
                "endpoint": null,
                "taskManagerId": null,
                "failureLabels": {},
                "concurrentExceptions": [],
            })
        })
        .collect();
    let handled = d.failures.last().map_or(0, |f| f.number as usize);
    let truncated = handled > entries.len();
    let root = d.failures.last();
    json!({
        "root-exception": d.failure.clone().or_else(|| root.map(|f| f.cause.clone())),
        "timestamp": root.map(|f| f.timestamp_ms),
        "all-exceptions": [],
        "truncated": truncated,
        "exceptionHistory": {
            "entries": entries,
            "truncated": truncated,
        },
    })
}

/// The job metrics `GET /jobs/:jobid/metrics` offers, by Flink's names.
pub const JOB_METRICS: [&str; 2] = ["numRestarts", "fullRestarts"];

/// `GET /jobs/:jobid/metrics[?get=…]` (Flink's `JobMetricsHandler`): without `get`, the
/// ids available; with it, `{id, value}` per known id asked for, the value a string as
/// Flink sends it. `fullRestarts` is Flink's older name of `numRestarts`.
pub fn job_metrics(d: &JobDetails, get: Option<&str>) -> Value {
    let Some(get) = get else {
        return Value::Array(JOB_METRICS.iter().map(|id| json!({ "id": id })).collect());
    };
    let answers = get
        .split(',')
        .map(str::trim)
        .filter(|id| JOB_METRICS.contains(id))
        .map(|id| json!({ "id": id, "value": d.restarts.to_string() }))
        .collect();
    Value::Array(answers)
}

/// Flink's `ApplicationStatus` of a job that ended in `status`.
fn application_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Finished => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
        JobStatus::Canceled => "CANCELED",
        _ => "UNKNOWN",
    }
}

/// `GET /jobs/:jobid/execution-result` of a job still running.
pub fn execution_result_in_progress() -> Value {
    json!({ "status": { "id": "IN_PROGRESS" } })
}

/// `GET /jobs/:jobid/execution-result` of an ended job (Flink's
/// `JobExecutionResultResponseBody`). rill has no accumulators (collect sinks' values stay
/// with rill's own client); a failure's `serialized-throwable` is empty, as rill has no
/// Java exception to serialize.
pub fn execution_result(r: &JobResult) -> Value {
    let mut result = json!({
        "id": r.job.to_string(),
        "application-status": application_status(r.status),
        "accumulator-results": {},
        "net-runtime": r.duration_ms,
    });
    if r.status == JobStatus::Failed {
        result["failure-cause"] = json!({
            "class": "rill.JobFailure",
            "stack-trace": r.failure.clone().unwrap_or_default(),
            "serialized-throwable": "",
        });
    }
    json!({ "status": { "id": "COMPLETED" }, "job-execution-result": result })
}

/// `host:port` of a TaskManager's data plane, or Flink's `(unassigned)`.
fn endpoint_of(tm: Option<&ResourceId>, task_managers: &[TaskManagerInfo]) -> String {
    tm.and_then(|id| task_managers.iter().find(|t| &t.location.resource_id == id))
        .map_or_else(
            || "(unassigned)".to_string(),
            |t| t.location.data_address.to_string(),
        )
}

/// Per-state durations Flink reports for an attempt; rill does not time them.
fn status_durations() -> Map<String, Value> {
    STATUS_DURATION_STATES
        .iter()
        .map(|s| (s.to_string(), json!(-1)))
        .collect()
}

/// Flink's `IOMetricsInfo` of one subtask from its last heartbeat's counters; `complete`
/// once the subtask ended (its counters are final).
fn subtask_io_metrics(c: &TaskIoCounters, complete: bool) -> Value {
    json!({
        "read-bytes": c.bytes_in,
        "read-bytes-complete": complete,
        "write-bytes": c.bytes_out,
        "write-bytes-complete": complete,
        "read-records": c.records_in,
        "read-records-complete": complete,
        "write-records": c.records_out,
        "write-records-complete": complete,
        "accumulated-backpressured-time": c.back_pressured_ms,
        "accumulated-idle-time": c.idle_ms,
        "accumulated-busy-time": c.busy_ms as f64,
    })
}

/// `GET /jobs/:jobid/vertices/:vertexid` (Flink's `JobVertexDetailsInfo`). Each
/// subtask's `metrics` are its counters as of its last heartbeat; the vertex's record
/// totals (`aggregated.metrics.*-records.sum`) are the JobMaster's per-vertex sums.
pub fn vertex_details(v: &VertexDetails, task_managers: &[TaskManagerInfo], now_ms: u64) -> Value {
    let counters = |i: usize| v.subtasks.get(i).copied().unwrap_or_default();
    let subtasks: Vec<Value> = (0..v.parallelism as usize)
        .map(|i| {
            let location = v.locations.get(i).and_then(Option::as_ref);
            let state = subtask_state(v, i);
            json!({
                "subtask": i,
                "status": state.name(),
                "attempt": v.attempts.get(i).copied().unwrap_or(0),
                "endpoint": endpoint_of(location, task_managers),
                "start-time": -1,
                "end-time": -1,
                "duration": -1,
                "metrics": subtask_io_metrics(&counters(i), state.is_terminal()),
                "taskmanager-id": location.map_or("(unassigned)", |r| r.as_str()),
                "status-duration": status_durations(),
            })
        })
        .collect();
    let agg = |sum: u64| {
        json!({
            "min": 0, "max": 0, "avg": 0, "sum": sum,
            "median": 0, "p25": 0, "p75": 0, "p95": 0,
        })
    };
    // Min, max, average and sum over the subtasks; the percentiles are not kept (0).
    let over_subtasks = |f: fn(&TaskIoCounters) -> u64, sum: Option<u64>| {
        let values: Vec<u64> = (0..v.parallelism as usize)
            .map(|i| f(&counters(i)))
            .collect();
        let total: u64 = values.iter().sum();
        let avg = if values.is_empty() {
            0
        } else {
            total / values.len() as u64
        };
        json!({
            "min": values.iter().min().copied().unwrap_or(0),
            "max": values.iter().max().copied().unwrap_or(0),
            "avg": avg,
            "sum": sum.unwrap_or(total),
            "median": 0, "p25": 0, "p75": 0, "p95": 0,
        })
    };
    json!({
        "id": vertex_id(v.vertex),
        "name": v.name,
        "maxParallelism": -1,
        "parallelism": v.parallelism,
        "now": now_ms,
        "subtasks": subtasks,
        "aggregated": {
            "metrics": {
                "read-bytes": over_subtasks(|c| c.bytes_in, None),
                "write-bytes": over_subtasks(|c| c.bytes_out, None),
                "read-records": over_subtasks(|c| c.records_in, Some(v.records_in)),
                "write-records": over_subtasks(|c| c.records_out, Some(v.records_out)),
                "accumulated-backpressured-time": over_subtasks(|c| c.back_pressured_ms, None),
                "accumulated-idle-time": over_subtasks(|c| c.idle_ms, None),
                "accumulated-busy-time": over_subtasks(|c| c.busy_ms, None),
            },
            "status-duration": STATUS_DURATION_STATES
                .iter()
                .map(|s| (s.to_string(), agg(0)))
                .collect::<Map<String, Value>>(),
        },
    })
}

/// The state of subtask `i`: rill reports counts per state, not per subtask, so the
/// subtasks are given the counted states in [`EXECUTION_STATES`] order (exact when all
/// subtasks share one state, the common case).
fn subtask_state(v: &VertexDetails, i: usize) -> ExecutionState {
    let mut seen = 0usize;
    for s in EXECUTION_STATES {
        seen += v.states.get(&s).copied().unwrap_or(0) as usize;
        if i < seen {
            return s;
        }
    }
    ExecutionState::Created
}

/// Flink's `ResourceProfileInfo` of a resource rill does not size.
fn unknown_resources() -> Value {
    json!({
        "cpuCores": 0.0,
        "taskHeapMemory": 0,
        "taskOffHeapMemory": 0,
        "managedMemory": 0,
        "networkMemory": 0,
        "extendedResources": {},
    })
}

/// One entry of `GET /taskmanagers` (Flink's `TaskManagerInfo`), with rill's
/// `processMemoryRss`: the TaskManager process's resident memory as of its last
/// heartbeat, bytes (-1 before the first).
pub fn task_manager(t: &TaskManagerInfo) -> Value {
    json!({
        "processMemoryRss": t.process_rss_bytes.map_or(-1, |b| b as i64),
        "id": t.location.resource_id.as_str(),
        "path": t.location.rpc_address.to_string(),
        "dataPort": t.location.data_address.port(),
        "jmxPort": -1,
        "timeSinceLastHeartbeat": t.since_heartbeat_ms,
        "slotsNumber": t.slots_total,
        "freeSlots": t.slots_free,
        "totalResource": unknown_resources(),
        "freeResource": unknown_resources(),
        "hardware": {
            "cpuCores": -1,
            "physicalMemory": -1,
            "freeMemory": -1,
            "managedMemory": -1,
        },
        "memoryConfiguration": {
            "frameworkHeap": -1,
            "taskHeap": -1,
            "frameworkOffHeap": -1,
            "taskOffHeap": -1,
            "networkMemory": -1,
            "managedMemory": -1,
            "jvmMetaspace": -1,
            "jvmOverhead": -1,
            "totalFlinkMemory": -1,
            "totalProcessMemory": -1,
        },
        "blocked": false,
    })
}

/// `GET /taskmanagers` (Flink's `TaskManagersInfo`).
pub fn task_managers(tms: &[TaskManagerInfo]) -> Value {
    json!({ "taskmanagers": tms.iter().map(task_manager).collect::<Vec<_>>() })
}

/// `GET /taskmanagers/:tmid` (Flink's `TaskManagerDetailsInfo`): [`task_manager`] plus
/// `allocatedSlots` (rill's slot report does not say which job holds a slot, so it is
/// empty) and JVM `metrics`, all -1: rill has no JVM.
pub fn task_manager_details(t: &TaskManagerInfo) -> Value {
    let mut v = task_manager(t);
    v["allocatedSlots"] = json!([]);
    let metrics: Map<String, Value> = [
        "heapUsed",
        "heapCommitted",
        "heapMax",
        "nonHeapUsed",
        "nonHeapCommitted",
        "nonHeapMax",
        "directCount",
        "directUsed",
        "directMax",
        "mappedCount",
        "mappedUsed",
        "mappedMax",
        "memorySegmentsAvailable",
        "memorySegmentsTotal",
        "nettyShuffleMemorySegmentsAvailable",
        "nettyShuffleMemorySegmentsUsed",
        "nettyShuffleMemorySegmentsTotal",
        "nettyShuffleMemoryAvailable",
        "nettyShuffleMemoryUsed",
        "nettyShuffleMemoryTotal",
    ]
    .iter()
    .map(|k| (k.to_string(), json!(-1)))
    .chain(std::iter::once((
        "garbageCollectors".to_string(),
        json!([]),
    )))
    .collect();
    v["metrics"] = Value::Object(metrics);
    v
}

/// Flink's error body: `{"errors":[message]}`.
pub fn errors(message: &str) -> Value {
    json!({ "errors": [message] })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::messages::{FailureOutcome, JobFailure, TaskManagerLocation, VertexInput};
    use rill_runtime::RpcAddress;

    const JOB: &str = "0123456789abcdef0123456789abcdef";

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

    fn overview(status: JobStatus) -> JobOverview {
        JobOverview {
            job: JOB.parse().unwrap(),
            name: "wordcount".into(),
            status,
            start_time_ms: 1_000,
            duration_ms: 500,
        }
    }

    fn details(status: JobStatus) -> JobDetails {
        let mut states = BTreeMap::new();
        states.insert(ExecutionState::Running, 1);
        states.insert(ExecutionState::Finished, 1);
        JobDetails {
            overview: overview(status),
            restarts: 1,
            failure: None,
            vertices: vec![VertexDetails {
                vertex: VertexId(1),
                name: "Source: words".into(),
                parallelism: 2,
                states,
                records_in: 0,
                records_out: 42,
                locations: vec![Some(ResourceId::new("taskmanager-0")), None],
                attempts: vec![1, 0],
                subtasks: Vec::new(),
                inputs: Vec::new(),
            }],
            final_checkpoint: None,
            checkpoints: Default::default(),
            failures: vec![JobFailure {
                number: 1,
                timestamp_ms: 1_200,
                cause: "map (1/2) failed: boom".into(),
                outcome: FailureOutcome::Restarting {
                    restart: 1,
                    delay_ms: 1000,
                },
            }],
        }
    }

    fn tm() -> TaskManagerInfo {
        TaskManagerInfo {
            location: TaskManagerLocation {
                resource_id: ResourceId::new("taskmanager-0"),
                rpc_address: RpcAddress::new(
                    "127.0.0.1:7000".parse::<std::net::SocketAddr>().unwrap(),
                    "taskexecutor",
                ),
                data_address: "127.0.0.1:7001".parse().unwrap(),
                metrics_address: None,
            },
            slots_total: 4,
            slots_free: 3,
            since_heartbeat_ms: 250,
            process_rss_bytes: Some(12 << 20),
        }
    }

    /// Flink's execution-state keys of `tasks` / `status-counts`.
    const STATE_KEYS: [&str; 10] = [
        "CREATED",
        "SCHEDULED",
        "DEPLOYING",
        "INITIALIZING",
        "RUNNING",
        "FINISHED",
        "CANCELING",
        "CANCELED",
        "FAILED",
        "RECONCILING",
    ];

    #[test]
    fn vertex_ids_are_32_hex_digits_and_parse_back() {
        let id = vertex_id(VertexId(10));
        assert_eq!(id, "0000000000000000000000000000000a");
        assert_eq!(parse_vertex_id(&id), Ok(Some(VertexId(10))));
        assert_eq!(parse_vertex_id(&"f".repeat(32)), Ok(None));
        assert!(parse_vertex_id("v1").is_err());
        assert!(parse_vertex_id(&"g".repeat(32)).is_err());
        assert!(parse_job_id("not-a-job").is_err());
    }

    #[test]
    fn overview_and_config_use_flinks_field_names() {
        let jobs = [
            overview(JobStatus::Running),
            overview(JobStatus::Finished),
            overview(JobStatus::Canceled),
            overview(JobStatus::Failed),
        ];
        let v = cluster_overview(&jobs, &[tm()]);
        assert_eq!(
            keys(&v),
            set(&[
                "taskmanagers",
                "taskmanagers-blocked",
                "slots-total",
                "slots-available",
                "slots-free-and-blocked",
                "jobs-running",
                "jobs-finished",
                "jobs-cancelled",
                "jobs-failed",
                "flink-version",
                "flink-commit",
            ])
        );
        assert_eq!(v["slots-total"], 4);
        assert_eq!(v["slots-available"], 3);
        for k in [
            "jobs-running",
            "jobs-finished",
            "jobs-cancelled",
            "jobs-failed",
        ] {
            assert_eq!(v[k], 1, "{k}");
        }
        let c = dashboard_config();
        assert_eq!(
            keys(&c),
            set(&[
                "refresh-interval",
                "timezone-name",
                "timezone-offset",
                "flink-version",
                "flink-revision",
                "features",
            ])
        );
        assert_eq!(
            keys(&c["features"]),
            set(&["web-submit", "web-cancel", "web-rescale", "web-history"])
        );
    }

    #[test]
    fn job_lists_carry_ids_states_and_lower_case_task_counts() {
        let v = job_ids_with_status(&[overview(JobStatus::Cancelling)]);
        assert_eq!(v, json!({"jobs": [{"id": JOB, "status": "CANCELLING"}]}));

        let v = jobs_overview(&[details(JobStatus::Running)]);
        let j = &v["jobs"][0];
        assert_eq!(
            keys(j),
            set(&[
                "jid",
                "name",
                "state",
                "start-time",
                "end-time",
                "duration",
                "last-modification",
                "tasks",
                "pending-operators",
            ])
        );
        assert_eq!(j["end-time"], -1, "running: no end time");
        let mut task_keys: Vec<String> = STATE_KEYS.iter().map(|k| k.to_lowercase()).collect();
        task_keys.push("total".into());
        assert_eq!(
            keys(&j["tasks"]),
            task_keys.iter().map(String::as_str).collect()
        );
        assert_eq!(j["tasks"]["total"], 2);
        assert_eq!(j["tasks"]["running"], 1);
        assert_eq!(j["tasks"]["finished"], 1);

        let ended = job_overview(&details(JobStatus::Finished));
        assert_eq!(ended["end-time"], 1_500);
    }

    #[test]
    fn job_details_have_flinks_fields_vertices_and_plan() {
        let v = job_details(&details(JobStatus::Running), 9_999);
        assert_eq!(
            keys(&v),
            set(&[
                "jid",
                "name",
                "isStoppable",
                "state",
                "job-type",
                "start-time",
                "end-time",
                "duration",
                "maxParallelism",
                "now",
                "timestamps",
                "vertices",
                "status-counts",
                "plan",
                "pending-operators",
            ])
        );
        assert_eq!(v["now"], 9_999);
        assert_eq!(v["state"], "RUNNING");
        assert_eq!(keys(&v["timestamps"]), set(&JOB_STATUS_NAMES));
        assert_eq!(keys(&v["status-counts"]), set(&STATE_KEYS));
        assert_eq!(v["status-counts"]["RUNNING"], 1, "one vertex, running");
        let vx = &v["vertices"][0];
        assert_eq!(
            keys(vx),
            set(&[
                "id",
                "slotSharingGroupId",
                "name",
                "maxParallelism",
                "parallelism",
                "status",
                "start-time",
                "end-time",
                "duration",
                "tasks",
                "metrics",
            ])
        );
        assert_eq!(vx["id"], vertex_id(VertexId(1)));
        assert_eq!(vx["status"], "RUNNING");
        assert_eq!(keys(&vx["tasks"]), set(&STATE_KEYS));
        assert_eq!(vx["metrics"]["write-records"], 42);
        assert_eq!(
            keys(&vx["metrics"]),
            set(&[
                "read-bytes",
                "read-bytes-complete",
                "write-bytes",
                "write-bytes-complete",
                "read-records",
                "read-records-complete",
                "write-records",
                "write-records-complete",
                "accumulated-backpressured-time",
                "accumulated-idle-time",
                "accumulated-busy-time",
            ])
        );
        assert_eq!(v["plan"]["nodes"][0]["id"], vx["id"]);
    }

    #[test]
    fn plan_nodes_name_their_inputs_as_flinks_json_plan() {
        let mut d = details(JobStatus::Running);
        let mut sink = d.vertices[0].clone();
        sink.vertex = VertexId(2);
        sink.name = "Sink: out".into();
        sink.inputs = vec![VertexInput {
            source: VertexId(1),
            ship_strategy: "HASH".into(),
        }];
        d.vertices.push(sink);
        let plan = &job_details(&d, 0)["plan"];
        let nodes = plan["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].get("inputs").is_none(), "a source has no inputs");
        assert_eq!(
            nodes[1]["inputs"],
            json!([{
                "num": 0,
                "id": vertex_id(VertexId(1)),
                "ship_strategy": "HASH",
                "exchange": "pipelined_bounded",
            }])
        );
    }

    #[test]
    fn job_metrics_list_and_answer_the_restart_count() {
        let d = details(JobStatus::Running);
        assert_eq!(
            job_metrics(&d, None),
            json!([{"id": "numRestarts"}, {"id": "fullRestarts"}])
        );
        assert_eq!(
            job_metrics(&d, Some("numRestarts,unknown")),
            json!([{"id": "numRestarts", "value": "1"}])
        );
    }

    #[test]
    fn vertex_states_aggregate_like_flinks() {
        let mut v = details(JobStatus::Running).vertices.remove(0);
        assert_eq!(vertex_state(&v), ExecutionState::Running);
        v.states = [(ExecutionState::Finished, 2)].into_iter().collect();
        assert_eq!(vertex_state(&v), ExecutionState::Finished);
        v.states.insert(ExecutionState::Failed, 1);
        assert_eq!(vertex_state(&v), ExecutionState::Failed);
        v.states = BTreeMap::new();
        assert_eq!(vertex_state(&v), ExecutionState::Created);
    }

    #[test]
    fn exceptions_list_the_failure_history_newest_first() {
        let mut d = details(JobStatus::Running);
        d.failures.push(JobFailure {
            number: 2,
            timestamp_ms: 1_300,
            cause: "second".into(),
            outcome: FailureOutcome::JobFailed,
        });
        let v = job_exceptions(&d, 20);
        assert_eq!(
            keys(&v),
            set(&[
                "root-exception",
                "timestamp",
                "all-exceptions",
                "truncated",
                "exceptionHistory"
            ])
        );
        let entries = v["exceptionHistory"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["timestamp"], 1_300);
        assert_eq!(
            keys(&entries[0]),
            set(&[
                "exceptionName",
                "stacktrace",
                "timestamp",
                "taskName",
                "endpoint",
                "taskManagerId",
                "failureLabels",
                "concurrentExceptions",
            ])
        );
        assert_eq!(v["exceptionHistory"]["truncated"], false);
        let one = job_exceptions(&d, 1);
        assert_eq!(
            one["exceptionHistory"]["entries"].as_array().unwrap().len(),
            1
        );
        assert_eq!(one["exceptionHistory"]["truncated"], true);
    }

    #[test]
    fn execution_results_map_statuses_to_application_statuses() {
        assert_eq!(
            execution_result_in_progress(),
            json!({"status": {"id": "IN_PROGRESS"}})
        );
        let mut r = JobResult {
            job: JOB.parse().unwrap(),
            status: JobStatus::Finished,
            failure: None,
            duration_ms: 77,
            collected: BTreeMap::new(),
        };
        let v = execution_result(&r);
        assert_eq!(v["status"]["id"], "COMPLETED");
        let res = &v["job-execution-result"];
        assert_eq!(
            keys(res),
            set(&[
                "id",
                "application-status",
                "accumulator-results",
                "net-runtime"
            ])
        );
        assert_eq!(res["application-status"], "SUCCEEDED");
        assert_eq!(res["net-runtime"], 77);
        r.status = JobStatus::Failed;
        r.failure = Some("boom".into());
        let v = execution_result(&r);
        let res = &v["job-execution-result"];
        assert_eq!(res["application-status"], "FAILED");
        assert_eq!(res["failure-cause"]["stack-trace"], "boom");
        r.status = JobStatus::Canceled;
        assert_eq!(
            execution_result(&r)["job-execution-result"]["application-status"],
            "CANCELED"
        );
    }

    #[test]
    fn vertex_details_list_subtasks_with_their_taskmanagers() {
        let d = details(JobStatus::Running);
        let v = vertex_details(&d.vertices[0], &[tm()], 5);
        assert_eq!(
            keys(&v),
            set(&[
                "id",
                "name",
                "maxParallelism",
                "parallelism",
                "now",
                "subtasks",
                "aggregated"
            ])
        );
        let subtasks = v["subtasks"].as_array().unwrap();
        assert_eq!(subtasks.len(), 2);
        assert_eq!(
            keys(&subtasks[0]),
            set(&[
                "subtask",
                "status",
                "attempt",
                "endpoint",
                "start-time",
                "end-time",
                "duration",
                "metrics",
                "taskmanager-id",
                "status-duration",
            ])
        );
        assert_eq!(subtasks[0]["endpoint"], "127.0.0.1:7001");
        assert_eq!(subtasks[0]["taskmanager-id"], "taskmanager-0");
        assert_eq!(subtasks[0]["attempt"], 1);
        assert_eq!(subtasks[1]["taskmanager-id"], "(unassigned)");
        let statuses: BTreeSet<_> = subtasks
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, set(&["RUNNING", "FINISHED"]));
        assert_eq!(v["aggregated"]["metrics"]["write-records"]["sum"], 42);

        let mut vx = d.vertices[0].clone();
        vx.subtasks = vec![
            TaskIoCounters {
                records_out: 40,
                bytes_out: 400,
                busy_ms: 7,
                ..Default::default()
            },
            TaskIoCounters {
                records_out: 2,
                bytes_out: 20,
                ..Default::default()
            },
        ];
        let v = vertex_details(&vx, &[tm()], 5);
        assert_eq!(v["subtasks"][0]["metrics"]["write-records"], 40);
        assert_eq!(v["subtasks"][0]["metrics"]["write-bytes"], 400);
        assert_eq!(v["subtasks"][0]["metrics"]["accumulated-busy-time"], 7.0);
        let bytes = &v["aggregated"]["metrics"]["write-bytes"];
        assert_eq!(
            (&bytes["min"], &bytes["max"], &bytes["sum"]),
            (&json!(20), &json!(400), &json!(420))
        );
    }

    #[test]
    fn task_managers_have_flinks_fields() {
        let v = task_managers(&[tm()]);
        let t = &v["taskmanagers"][0];
        let base = [
            "id",
            "path",
            "dataPort",
            "jmxPort",
            "timeSinceLastHeartbeat",
            "slotsNumber",
            "freeSlots",
            "totalResource",
            "freeResource",
            "hardware",
            "memoryConfiguration",
            "blocked",
            // rill's own
            "processMemoryRss",
        ];
        assert_eq!(keys(t), set(&base));
        assert_eq!(t["timeSinceLastHeartbeat"], 250);
        assert_eq!(t["processMemoryRss"], 12 << 20);
        assert_eq!(t["slotsNumber"], 4);
        assert_eq!(t["freeSlots"], 3);
        assert_eq!(t["dataPort"], 7001);
        assert_eq!(
            keys(&t["hardware"]),
            set(&["cpuCores", "physicalMemory", "freeMemory", "managedMemory"])
        );
        let d = task_manager_details(&tm());
        let mut detail_keys = set(&base);
        detail_keys.extend(["allocatedSlots", "metrics"]);
        assert_eq!(keys(&d), detail_keys);
        assert!(d["metrics"]["garbageCollectors"].is_array());
    }

    #[test]
    fn errors_are_flinks_error_body() {
        assert_eq!(errors("nope"), json!({"errors": ["nope"]}));
    }
}
