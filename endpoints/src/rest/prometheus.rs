//! Prometheus metrics in the text exposition format, named as Flink's Prometheus reporter
//! names them with `rill` for `flink`: `<prefix>_<scope>_<metric>`, the scope's dots as
//! underscores, the metric's own name kept (`rill_taskmanager_job_task_numRecordsIn`).
//!
//! Two endpoints serve them:
//!
//! - the JobManager's `GET /metrics` on the REST port ([`job_manager_metrics`]): the
//!   cluster's figures, each job's checkpoint figures, every subtask's I/O figures as
//!   of its last heartbeat to its JobMaster, and the JobManager process's own;
//! - each TaskManager's endpoint on `metrics.reporter.prom.port`
//!   ([`task_manager_metrics`], served from [`crate::cluster`]): its running tasks' I/O
//!   figures, read from the tasks' counters directly, and its process's own.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `rill_jobmanager_numRegisteredTaskManagers` | | TaskManagers registered at the ResourceManager |
//! | `rill_jobmanager_taskSlotsTotal` | | their slots |
//! | `rill_jobmanager_taskSlotsAvailable` | | their slots not allocated to a job |
//! | `rill_jobmanager_numRunningJobs` | | jobs in `RUNNING` |
//! | `rill_jobmanager_job_lastCheckpointDuration` | `job_id`, `job_name` | ms, of the newest completed checkpoint (-1: none yet) |
//! | `rill_jobmanager_job_lastCheckpointSize` | `job_id`, `job_name` | bytes, of the newest completed checkpoint (-1: none yet) |
//! | `rill_jobmanager_job_numberOfCompletedCheckpoints` | `job_id`, `job_name` | over the job's life |
//! | `rill_jobmanager_job_numberOfFailedCheckpoints` | `job_id`, `job_name` | over the job's life |
//! | `rill_taskmanager_job_task_numRecordsIn`, `…_numRecordsOut` | task labels | records (never watermarks, barriers or other events) since the attempt started |
//! | `rill_taskmanager_job_task_numBytesIn`, `…_numBytesOut` | task labels | bytes since the attempt started |
//! | `rill_taskmanager_job_task_busyTimeMsPerSecond`, `…_backPressuredTimeMsPerSecond`, `…_idleTimeMsPerSecond` | task labels | ms per second over the latest interval (see below) |
//! | `rill_taskmanager_job_task_currentInputWatermark` | task labels | the subtask's input watermark, ms (`Long.MIN_VALUE` before its first) |
//! | `rill_taskmanager_job_task_inPoolUsage`, `…_outPoolUsage` | task labels | share (0 to 1) of the input gate's / output partitions' buffers in use, as of the sample |
//! | `rill_jobmanager_Status_Process_Memory_RSS`, `rill_taskmanager_Status_Process_Memory_RSS` | | the process's resident set, bytes |
//! | `rill_jobmanager_Status_Process_CPU_Time`, `rill_taskmanager_Status_Process_CPU_Time` | | CPU time (user + system) the process used, seconds |
//!
//! The task labels are Flink's `job_id`, `job_name`, `task_name` (the vertex's name),
//! `subtask_index` and `tm_id` (the TaskManager's resource id; empty for a subtask not
//! deployed). Every metric is a gauge, as Flink's reporter exports counters as gauges:
//! a restarted attempt counts from 0 again.
//!
//! The JobManager shows every job the Dispatcher lists, a finished one with its final
//! counts; a TaskManager shows only the tasks running on it. Both show the same task
//! metric names, so a Prometheus server scraping both sees each subtask twice (tell them
//! apart by the scrape's `instance`).
//!
//! The `…TimeMsPerSecond` rates are the shares of an interval the task spent busy,
//! backpressured and idle, times 1000 ([`Ratios`]): on the JobManager the
//! interval between the last two distinct heartbeats seen
//! ([`Sampler`](super::metrics::Sampler)), on a
//! TaskManager the one since the previous scrape ([`TaskSampler`]); before there is one,
//! the attempt's whole running time.
//!
//! Process figures come from `/proc/self` ([`ProcessSample::read`]); where it cannot be
//! read (not Linux), those metrics are left out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use serde_json::Value;

use super::metrics::Ratios;
use crate::messages::{
    CheckpointsSummary, JobDetails, TaskIoCounters, TaskManagerInfo, VertexDetails,
};

/// The `Content-Type` of the answers: Prometheus' text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The prefix of every metric name.
pub const PREFIX: &str = "rill";

/// One subtask's figures and who it is.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSample {
    /// Its job's id (32 hex digits).
    pub job_id: String,
    /// Its job's name.
    pub job_name: String,
    /// Its vertex's name.
    pub task_name: String,
    /// Its subtask index.
    pub subtask_index: u32,
    /// The resource id of the TaskManager it runs on ("" if not deployed).
    pub tm_id: String,
    /// Its cumulative counters.
    pub counters: TaskIoCounters,
    /// Its shares of the latest interval.
    pub ratios: Ratios,
}

/// The cluster's figures, as the Dispatcher reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterSample {
    /// Registered TaskManagers.
    pub task_managers: u64,
    /// Their slots.
    pub slots_total: u64,
    /// Their free slots.
    pub slots_available: u64,
    /// Jobs in `RUNNING`.
    pub running_jobs: u64,
}

/// One job's checkpoint figures (Flink's `lastCheckpoint…` and `numberOf…Checkpoints`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSample {
    /// The job's id.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// Milliseconds the newest completed checkpoint took; -1 for none.
    pub last_duration_ms: i64,
    /// Bytes the newest completed checkpoint wrote; -1 for none.
    pub last_size_bytes: i64,
    /// Completed checkpoints.
    pub completed: u64,
    /// Failed checkpoints.
    pub failed: u64,
}

impl CheckpointSample {
    /// The figures of a job's `checkpoints`.
    pub fn of(job_id: String, job_name: String, checkpoints: &CheckpointsSummary) -> Self {
        let last = checkpoints
            .history
            .iter()
            .rev()
            .find(|c| c.status == "COMPLETED");
        CheckpointSample {
            job_id,
            job_name,
            last_duration_ms: last.and_then(|c| c.duration_ms).map_or(-1, to_i64),
            last_size_bytes: last.map_or(-1, |c| to_i64(c.bytes)),
            completed: checkpoints.completed,
            failed: checkpoints.failed,
        }
    }
}

/// A process's resource use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: Linux's `USER_HZ`, 100 on
/// every architecture's user-space ABI.
const USER_HZ: f64 = 100.0;

impl ProcessSample {
    /// This process's figures from `/proc/self/status` and `/proc/self/stat`; `None`
    /// where they cannot be read or parsed.
    pub fn read() -> Option<ProcessSample> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(ProcessSample {
            rss_bytes: rss_bytes(&status)?,
            cpu_seconds: cpu_seconds(&stat)?,
        })
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from after its last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (3), …, utime (14), stime (15).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    job_id: String,
    job_name: String,
    task_name: String,
    subtask_index: u32,
    tm_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_id: String,
    job_name: String,
}

/// A metric's name, its help text, and how its value is read from a `T`.
type Figure<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// One gauge family's series in the order given, so that a scrape's text follows the
/// order of the jobs, vertices and subtasks (prometheus-client's `Family` keeps a hash
/// map and would list them in no fixed order). Empty, it is left out of the text.
#[derive(Debug)]
struct Gauges<L, V>(Vec<(L, V)>);

impl<L, V> EncodeMetric for Gauges<L, V>
where
    L: EncodeLabelSet,
    V: EncodeGaugeValue,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.0 {
            encoder.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Registers a gauge without labels set to `value`.
fn int_gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn float_gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Registers the task metrics of `tasks` (see the module docs).
fn register_tasks(registry: &mut Registry, tasks: &[TaskSample]) {
    let counts: [Figure<TaskIoCounters, u64>; 4] = [
        (
            "numRecordsIn",
            "Records the subtask read since its attempt started",
            |c| c.records_in,
        ),
        (
            "numRecordsOut",
            "Records the subtask emitted since its attempt started",
            |c| c.records_out,
        ),
        (
            "numBytesIn",
            "Bytes the subtask read since its attempt started",
            |c| c.bytes_in,
        ),
        (
            "numBytesOut",
            "Bytes the subtask wrote to its output partitions since its attempt started",
            |c| c.bytes_out,
        ),
    ];
    let rates: [Figure<Ratios, f64>; 3] = [
        (
            "busyTimeMsPerSecond",
            "Milliseconds per second the subtask was busy, over the latest interval",
            |r| r.busy,
        ),
        (
            "backPressuredTimeMsPerSecond",
            "Milliseconds per second the subtask waited for an output buffer, over the latest interval",
            |r| r.back_pressured,
        ),
        (
            "idleTimeMsPerSecond",
            "Milliseconds per second the subtask waited for input, over the latest interval",
            |r| r.idle,
        ),
    ];
    let labels = |t: &TaskSample| TaskLabels {
        job_id: t.job_id.clone(),
        job_name: t.job_name.clone(),
        task_name: t.task_name.clone(),
        subtask_index: t.subtask_index,
        tm_id: t.tm_id.clone(),
    };
    let scope = registry.sub_registry_with_prefix("taskmanager_job_task");
    for (name, help, value) in counts {
        let series = tasks.iter().map(|t| (labels(t), value(&t.counters)));
        scope.register(name, help, Gauges(series.collect()));
    }
    for (name, help, share) in rates {
        let series = tasks.iter().map(|t| (labels(t), share(&t.ratios) * 1000.0));
        scope.register(name, help, Gauges(series.collect()));
    }
    let watermarks = tasks.iter().map(|t| {
        let w = t.counters.input_watermark.unwrap_or(i64::MIN);
        (labels(t), w as f64)
    });
    scope.register(
        "currentInputWatermark",
        "The subtask's input watermark, ms (Long.MIN_VALUE before its first watermark)",
        Gauges(watermarks.collect()),
    );
    let pools: [Figure<TaskIoCounters, f64>; 2] = [
        (
            "inPoolUsage",
            "Share of the subtask's input buffers in use (exclusive and floating), 0 to 1",
            |c| c.in_pool.ratio(),
        ),
        (
            "outPoolUsage",
            "Share of the subtask's output buffers in use, 0 to 1",
            |c| c.out_pool.ratio(),
        ),
    ];
    for (name, help, usage) in pools {
        let series = tasks.iter().map(|t| (labels(t), usage(&t.counters)));
        scope.register(name, help, Gauges(series.collect()));
    }
}

/// Registers `process`'s figures under `scope` (`jobmanager` or `taskmanager`).
fn register_process(registry: &mut Registry, scope: &str, process: Option<ProcessSample>) {
    let Some(p) = process else { return };
    let scope = registry.sub_registry_with_prefix(format!("{scope}_Status_Process"));
    int_gauge(
        scope,
        "Memory_RSS",
        "Resident set size of the process, bytes",
        to_i64(p.rss_bytes),
    );
    float_gauge(
        scope,
        "CPU_Time",
        "CPU time (user + system) the process used, seconds",
        p.cpu_seconds,
    );
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing gauges to a String does not fail; should it, the scrape is cut short.
    if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut text, registry) {
        tracing::warn!(error = %e, "cannot encode the Prometheus metrics");
    }
    text
}

/// The JobManager's `GET /metrics` body (see the module docs).
pub fn job_manager_metrics(
    cluster: &ClusterSample,
    checkpoints: &[CheckpointSample],
    tasks: &[TaskSample],
    process: Option<ProcessSample>,
) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    {
        let jm = registry.sub_registry_with_prefix("jobmanager");
        int_gauge(
            jm,
            "numRegisteredTaskManagers",
            "TaskManagers registered at the ResourceManager",
            to_i64(cluster.task_managers),
        );
        int_gauge(
            jm,
            "taskSlotsTotal",
            "Slots of the registered TaskManagers",
            to_i64(cluster.slots_total),
        );
        int_gauge(
            jm,
            "taskSlotsAvailable",
            "Slots of the registered TaskManagers not allocated to a job",
            to_i64(cluster.slots_available),
        );
        int_gauge(
            jm,
            "numRunningJobs",
            "Jobs in RUNNING",
            to_i64(cluster.running_jobs),
        );
        let job = jm.sub_registry_with_prefix("job");
        let figures: [Figure<CheckpointSample, i64>; 4] = [
            (
                "lastCheckpointDuration",
                "Milliseconds the newest completed checkpoint took (-1: none yet)",
                |c| c.last_duration_ms,
            ),
            (
                "lastCheckpointSize",
                "Bytes the newest completed checkpoint wrote (-1: none yet)",
                |c| c.last_size_bytes,
            ),
            (
                "numberOfCompletedCheckpoints",
                "Checkpoints completed over the job's life",
                |c| to_i64(c.completed),
            ),
            (
                "numberOfFailedCheckpoints",
                "Checkpoints failed over the job's life",
                |c| to_i64(c.failed),
            ),
        ];
        for (name, help, value) in figures {
            let series = checkpoints.iter().map(|c| {
                let labels = JobLabels {
                    job_id: c.job_id.clone(),
                    job_name: c.job_name.clone(),
                };
                (labels, value(c))
            });
            job.register(name, help, Gauges(series.collect()));
        }
    }
    register_tasks(&mut registry, tasks);
    register_process(&mut registry, "jobmanager", process);
    encode(&registry)
}

/// A TaskManager's metrics body (see the module docs).
pub fn task_manager_metrics(tasks: &[TaskSample], process: Option<ProcessSample>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    register_tasks(&mut registry, tasks);
    register_process(&mut registry, "taskmanager", process);
    encode(&registry)
}

/// The counters a TaskManager's previous scrape saw of each task attempt, for the
/// `…TimeMsPerSecond` rates over the interval since (see the module docs). Keyed by
/// whatever identifies an attempt; attempts not in a scrape are dropped.
#[derive(Debug)]
pub struct TaskSampler<K> {
    seen: BTreeMap<K, TaskIoCounters>,
}

impl<K> Default for TaskSampler<K> {
    fn default() -> Self {
        TaskSampler {
            seen: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> TaskSampler<K> {
    /// Each attempt's shares since the previous scrape, given its counters now (in the
    /// order given); an attempt seen for the first time, or without time accounted
    /// since, gets its shares since it started.
    pub fn observe(&mut self, now: &[(K, TaskIoCounters)]) -> Vec<Ratios> {
        let mut seen = BTreeMap::new();
        let ratios = now
            .iter()
            .map(|(k, c)| {
                let before = self.seen.get(k).copied().unwrap_or_default();
                let r = Ratios::between(&before, c);
                let r = if r == Ratios::default() {
                    Ratios::between(&TaskIoCounters::default(), c)
                } else {
                    r
                };
                seen.insert(k.clone(), *c);
                r
            })
            .collect();
        self.seen = seen;
        ratios
    }
}

/// The URL of a TaskManager's Prometheus endpoint listening on `address`.
pub fn metrics_url(address: SocketAddr) -> String {
    format!("http://{address}/metrics")
}

/// Adds rill's `metricsUrl` field to each TaskManager of a `GET /taskmanagers` body
/// (`taskmanagers[i]` of `tms[i]`): its Prometheus endpoint's URL, `null` for one that
/// did not say (a TaskManager that predates the field).
pub fn add_metrics_urls(body: &mut Value, tms: &[TaskManagerInfo]) {
    let Some(entries) = body["taskmanagers"].as_array_mut() else {
        return;
    };
    for (entry, tm) in entries.iter_mut().zip(tms) {
        if let Some(entry) = entry.as_object_mut() {
            let url = tm.location.metrics_address.map(metrics_url);
            entry.insert("metricsUrl".into(), url.into());
        }
    }
}

/// A job's checkpoint figures and its subtasks' task figures, with `ratios` giving each
/// vertex's subtasks' shares of their latest intervals.
pub fn job_samples(
    job: &JobDetails,
    mut ratios: impl FnMut(&VertexDetails) -> Vec<Ratios>,
) -> (CheckpointSample, Vec<TaskSample>) {
    let job_id = job.overview.job.to_string();
    let job_name = job.overview.name.clone();
    let mut tasks = Vec::new();
    for v in &job.vertices {
        let shares = ratios(v);
        for i in 0..v.parallelism as usize {
            tasks.push(TaskSample {
                job_id: job_id.clone(),
                job_name: job_name.clone(),
                task_name: v.name.clone(),
                subtask_index: i as u32,
                tm_id: v
                    .locations
                    .get(i)
                    .and_then(Option::as_ref)
                    .map_or_else(String::new, |r| r.as_str().to_string()),
                counters: v.subtasks.get(i).copied().unwrap_or_default(),
                ratios: shares.get(i).copied().unwrap_or_default(),
            });
        }
    }
    let checkpoints = CheckpointSample::of(job_id, job_name, &job.checkpoints);
    (checkpoints, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{CheckpointInfo, PoolUsage};

    /// Every sample line of `text` as `(name, labels, value)`, checking the text is
    /// well-formed: `# HELP`/`# TYPE` before a family's samples, samples of declared
    /// families only.
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let mut typed = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind, "gauge", "{line}");
                typed.insert(name.to_string());
                continue;
            }
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP "), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let labels = body
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap();
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            assert!(typed.contains(name), "{name} has no # TYPE");
            out.push((name.to_string(), labels, value.parse().unwrap()));
        }
        out
    }

    fn value(s: &[(String, BTreeMap<String, String>, f64)], name: &str) -> Vec<f64> {
        s.iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .collect()
    }

    fn task(subtask: u32, records_out: u64) -> TaskSample {
        TaskSample {
            job_id: "0123456789abcdef0123456789abcdef".into(),
            job_name: "keyed-sum".into(),
            task_name: "Source: numbers -> Map".into(),
            subtask_index: subtask,
            tm_id: "taskmanager-0".into(),
            counters: TaskIoCounters {
                records_in: 0,
                records_out,
                bytes_in: 0,
                bytes_out: 7 * records_out,
                back_pressured_ms: 100,
                idle_ms: 300,
                busy_ms: 600,
                input_watermark: (subtask == 1).then_some(42),
                in_pool: PoolUsage { used: 1, size: 4 },
                out_pool: PoolUsage {
                    used: subtask.into(),
                    size: 2,
                },
            },
            ratios: Ratios {
                back_pressured: 0.1,
                idle: 0.3,
                busy: 0.6,
            },
        }
    }

    #[test]
    fn job_manager_metrics_have_flinks_names_labels_and_values() {
        let cluster = ClusterSample {
            task_managers: 2,
            slots_total: 8,
            slots_available: 5,
            running_jobs: 1,
        };
        let cp = CheckpointSample {
            job_id: "0123456789abcdef0123456789abcdef".into(),
            job_name: "keyed-sum".into(),
            last_duration_ms: 42,
            last_size_bytes: 4096,
            completed: 3,
            failed: 1,
        };
        let text = job_manager_metrics(
            &cluster,
            &[cp],
            &[task(0, 5000), task(1, 5000)],
            Some(ProcessSample {
                rss_bytes: 1 << 20,
                cpu_seconds: 1.5,
            }),
        );
        let s = samples(&text);
        assert_eq!(
            value(&s, "rill_jobmanager_numRegisteredTaskManagers"),
            [2.0]
        );
        assert_eq!(value(&s, "rill_jobmanager_taskSlotsTotal"), [8.0]);
        assert_eq!(value(&s, "rill_jobmanager_taskSlotsAvailable"), [5.0]);
        assert_eq!(value(&s, "rill_jobmanager_numRunningJobs"), [1.0]);
        assert_eq!(
            value(&s, "rill_jobmanager_job_lastCheckpointDuration"),
            [42.0]
        );
        assert_eq!(
            value(&s, "rill_jobmanager_job_lastCheckpointSize"),
            [4096.0]
        );
        assert_eq!(
            value(&s, "rill_jobmanager_job_numberOfCompletedCheckpoints"),
            [3.0]
        );
        assert_eq!(
            value(&s, "rill_jobmanager_job_numberOfFailedCheckpoints"),
            [1.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_numRecordsOut"),
            [5000.0, 5000.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_numBytesOut"),
            [35000.0, 35000.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_busyTimeMsPerSecond"),
            [600.0, 600.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_backPressuredTimeMsPerSecond"),
            [100.0, 100.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_idleTimeMsPerSecond"),
            [300.0, 300.0]
        );
        assert_eq!(
            value(&s, "rill_jobmanager_Status_Process_Memory_RSS"),
            [1048576.0]
        );
        assert_eq!(value(&s, "rill_jobmanager_Status_Process_CPU_Time"), [1.5]);
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_currentInputWatermark"),
            [i64::MIN as f64, 42.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_inPoolUsage"),
            [0.25, 0.25]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_job_task_outPoolUsage"),
            [0.0, 0.5]
        );
        let (_, labels, _) = s
            .iter()
            .find(|(n, l, _)| {
                n == "rill_taskmanager_job_task_numRecordsIn" && l["subtask_index"] == "1"
            })
            .unwrap();
        let expected: BTreeMap<String, String> = [
            ("job_id", "0123456789abcdef0123456789abcdef"),
            ("job_name", "keyed-sum"),
            ("task_name", "Source: numbers -> Map"),
            ("subtask_index", "1"),
            ("tm_id", "taskmanager-0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, &expected);
        assert!(
            !text.contains("# EOF"),
            "Prometheus 0.0.4 text has no EOF marker"
        );
    }

    #[test]
    fn series_follow_the_order_given_and_help_texts_end_once() {
        let tasks: Vec<_> = [3, 0, 2, 1].into_iter().map(|i| task(i, 1)).collect();
        let text = task_manager_metrics(&tasks, None);
        let order: Vec<String> = samples(&text)
            .into_iter()
            .filter(|(n, _, _)| n == "rill_taskmanager_job_task_numRecordsOut")
            .map(|(_, l, _)| l["subtask_index"].clone())
            .collect();
        assert_eq!(order, ["3", "0", "2", "1"]);
        assert_eq!(text, task_manager_metrics(&tasks, None));
        assert!(!text.contains(".."), "{text}");
        assert!(
            task_manager_metrics(&[], None).is_empty(),
            "no task, no family"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut t = task(0, 1);
        t.task_name = "Map \"quoted\" \\ back\nslash".into();
        let text = task_manager_metrics(&[t], None);
        assert!(
            text.contains(r#"task_name="Map \"quoted\" \\ back\nslash""#),
            "{text}"
        );
        assert!(!text.contains("Status_Process"), "no process figures given");
    }

    #[test]
    fn task_manager_metrics_have_task_and_process_metrics_only() {
        let text = task_manager_metrics(
            &[task(0, 10)],
            Some(ProcessSample {
                rss_bytes: 4096,
                cpu_seconds: 0.25,
            }),
        );
        let s = samples(&text);
        assert_eq!(value(&s, "rill_taskmanager_job_task_numRecordsOut"), [10.0]);
        assert_eq!(
            value(&s, "rill_taskmanager_Status_Process_Memory_RSS"),
            [4096.0]
        );
        assert_eq!(
            value(&s, "rill_taskmanager_Status_Process_CPU_Time"),
            [0.25]
        );
        assert!(s.iter().all(|(n, _, _)| !n.starts_with("rill_jobmanager")));
    }

    #[test]
    fn checkpoint_figures_are_of_the_newest_completed_checkpoint() {
        let info = |id, status: &str, duration, bytes| CheckpointInfo {
            id,
            savepoint: false,
            status: status.into(),
            trigger_timestamp_ms: 0,
            duration_ms: duration,
            acknowledged: 1,
            expected: 1,
            bytes,
            alignment_ms: 0,
            in_flight_bytes: 0,
            unaligned: false,
            path: None,
            failure: None,
        };
        let mut summary = CheckpointsSummary {
            enabled: true,
            completed: 2,
            failed: 1,
            ..Default::default()
        };
        let none = CheckpointSample::of("j".into(), "n".into(), &summary);
        assert_eq!((none.last_duration_ms, none.last_size_bytes), (-1, -1));
        summary.history = vec![
            info(1, "COMPLETED", Some(10), 100),
            info(2, "COMPLETED", Some(20), 200),
            info(3, "FAILED", Some(30), 0),
            info(4, "IN_PROGRESS", None, 0),
        ];
        let s = CheckpointSample::of("j".into(), "n".into(), &summary);
        assert_eq!((s.last_duration_ms, s.last_size_bytes), (20, 200));
        assert_eq!((s.completed, s.failed), (2, 1));
    }

    #[test]
    fn process_figures_parse_from_proc_texts() {
        let status = "Name:\tcat\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(rss_bytes(status), Some(1234 * 1024));
        assert_eq!(rss_bytes("Name:\tcat\n"), None);
        assert_eq!(rss_bytes("VmRSS:\t12 MB\n"), None);
        // The command name holds a space and a parenthesis; utime 250, stime 50 ticks.
        let stat =
            "4242 (rill (tm) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("4242 (rill) S 1"), None);
        let me = ProcessSample::read().expect("/proc/self is readable on Linux");
        assert!(me.rss_bytes > 0);
    }

    #[test]
    fn task_sampler_rates_cover_the_interval_since_the_previous_scrape() {
        let c = |bp, idle, busy| TaskIoCounters {
            back_pressured_ms: bp,
            idle_ms: idle,
            busy_ms: busy,
            ..Default::default()
        };
        let mut s = TaskSampler::<u32>::default();
        // First scrape: the whole running time.
        let r = s.observe(&[(1, c(0, 500, 500))]);
        assert_eq!(r[0].busy, 0.5);
        // Since then: 1000 ms all busy.
        let r = s.observe(&[(1, c(0, 500, 1500))]);
        assert_eq!(r[0].busy, 1.0);
        // No time accounted since: the whole running time again.
        let r = s.observe(&[(1, c(0, 500, 1500))]);
        assert_eq!(r[0].busy, 0.75);
        // An attempt gone is forgotten.
        s.observe(&[]);
        let r = s.observe(&[(1, c(0, 500, 1500))]);
        assert_eq!(r[0].busy, 0.75);
    }
}
