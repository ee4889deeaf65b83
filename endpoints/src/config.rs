//! The cluster's configuration: every section a JobManager or TaskManager process reads.
//!
//! [`RillConfig`] is one figment-loaded struct ([`rill_runtime::config::load`]) whose
//! sections follow Flink's key names where one exists:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `taskmanager.numberOfTaskSlots` | 1 | slots a TaskExecutor offers |
//! | `taskmanager.network.*` | see `rill_network::NetworkConfig` | data-plane memory, buffers, buffer timeout |
//! | `slot.request.timeout` | 30 s | how long a JobMaster waits for the slots its job needs |
//! | `jobmanager.execution.failover-strategy` | `region` | `region` or `full` restarts |
//! | `restart-strategy.type` | unset: see below | `none` (aliases `off`, `disable`), `fixed-delay`, `failure-rate`, `exponential-delay` (Flink's spellings without the dash too) |
//! | `restart-strategy.fixed-delay.{attempts,delay}` | 1, 1 s | |
//! | `restart-strategy.failure-rate.{max-failures-per-interval,failure-rate-interval,delay}` | 1, 1 min, 1 s | |
//! | `restart-strategy.exponential-delay.{initial-backoff,max-backoff,backoff-multiplier,reset-backoff-threshold,jitter-factor,attempts-before-reset-backoff}` | 1 s, 1 min, 1.5, 1 h, 0.1, unlimited | |
//! | `execution.checkpointing.interval` | unset | periodic checkpoints this often (needs `state.checkpoints.dir`); also selects the default restart strategy |
//! | `execution.checkpointing.timeout` | 10 min | a checkpoint not complete by then is aborted |
//! | `execution.checkpointing.min-pause` | 0 | from a checkpoint's completion to the next trigger |
//! | `execution.checkpointing.max-concurrent-checkpoints` | 1 | checkpoints in progress at once |
//! | `execution.checkpointing.tolerable-failed-checkpoints` | 0 | consecutive failed checkpoints tolerated before the job fails over |
//! | `execution.checkpointing.mode` | `exactly_once` | `exactly_once` (aligned barriers) or `at_least_once` |
//! | `execution.checkpointing.unaligned.enabled` | false | checkpoint barriers overtake in-flight data, which is stored with the checkpoint (exactly-once, at most one concurrent checkpoint); savepoints stay aligned |
//! | `execution.checkpointing.aligned-checkpoint-timeout` | 0 | with unaligned checkpoints: start aligned, turn unaligned where alignment takes longer (0: unaligned from the start) |
//! | `collect.max-bytes` | 8 MiB | collect-sink results a job may accumulate in its JobMaster; past it the job fails |
//! | `state.backend.type` | `heap` | keyed state backend: `heap` (alias `hashmap`) or `lsm` (alias `rocksdb`) |
//! | `state.backend.lsm.localdir` | OS temp dir | lsm working directories (alias `state.backend.rocksdb.localdir`) |
//! | `state.backend.lsm.cache-entries` | 65536 | decoded entries an lsm backend caches per subtask |
//! | `state.checkpoints.dir` | none | checkpoint storage, `file:///abs/path`; bounded jobs write a final snapshot there |
//! | `state.checkpoints.num-retained` | 1 | completed checkpoints kept |
//! | `state.savepoints.dir` | none | default target directory of savepoints |
//! | `execution.checkpointing.incremental` | true for lsm | incremental lsm checkpoints |
//! | `rest.address` | 127.0.0.1 | IP address the JobManager's REST API binds to; other than loopback only with `rest.auth.token` |
//! | `rest.port` | 8081 | its port; 0 lets the OS choose (the bound URL is printed at start-up) |
//! | `rest.auth.token` | none | bearer token every REST request must carry (`Authorization: Bearer <token>`) |
//! | `metrics.reporter.prom.port` | 0 | port of a TaskManager's Prometheus endpoint (`GET /metrics`); 0 lets the OS choose (the URL is logged and shown in `GET /taskmanagers`) |
//!
//! # REST API
//!
//! The JobManager always serves the REST API ([`crate::rest`]), as Flink's does; there is
//! no off switch. On a loopback `rest.address` the API is open, as Flink's is, unless
//! `rest.auth.token` is set. Any other address needs `rest.auth.token`: the API submits
//! and cancels jobs, so it is never exposed beyond the host without a token.
//!
//! # Metrics
//!
//! The JobManager serves Prometheus metrics at `/metrics` on the REST port; each
//! TaskManager serves its own on `metrics.reporter.prom.port` (Flink's key), bound to
//! the TaskManager's RPC address. Flink's reporter accepts a port range there; rill
//! takes one port, and 0 by default so several TaskManagers on one host never collide
//! ([`crate::rest::prometheus`]). The endpoint is read-only and, as Flink's, open.
//!
//! # Restart strategy selection
//!
//! As in Flink: a configured `restart-strategy.type` is used as it is. Unset, the job
//! gets `exponential-delay` when checkpointing is on (`execution.checkpointing.interval`
//! set: a restarted job resumes from its last checkpoint, so retrying is worth it) and
//! `none` when it is off — a job that fails without checkpoints would start from
//! scratch, and a failure that repeats (a missing input file, an unwritable output)
//! would restart forever. [`RillConfig::restart_strategy_type`] makes that choice.
//!
//! # Collect results
//!
//! Collect sinks send their values to the JobMaster, which keeps them until the job ends
//! and hands them to the Dispatcher in the job's result; an admin tool fetches that
//! result in one RPC answer. `collect.max-bytes` bounds what a job may collect, measured
//! as the values' RPC encoding, and must stay below `rpc.max-frame-size` so the result
//! fits one answer; a job that collects more fails with a cause naming the limit.
//!
//! plus the runtime's `rpc.*`, `heartbeat.*`, `cluster.*` and `security.*`
//! ([`rill_runtime::config`]). Flink's default slot-request timeout is 5 minutes; rill
//! fails faster because a user watching `rill run` wants to know soon that the cluster is
//! too small.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rill_dataflow::StateConfig;
use rill_network::NetworkConfig;
use rill_runtime::config::{
    duration, ClusterConfig, ConfigError, HeartbeatConfig, RpcConfig, RuntimeConfig,
    SecurityConfig, Validate,
};
use rill_state::BackendKind;
use serde::{Deserialize, Serialize};

/// Everything a rill cluster process reads (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RillConfig {
    /// `rpc.*`.
    pub rpc: RpcConfig,
    /// `heartbeat.*`.
    pub heartbeat: HeartbeatConfig,
    /// `cluster.*`.
    pub cluster: ClusterConfig,
    /// `security.*`.
    pub security: SecurityConfig,
    /// `taskmanager.*`.
    pub taskmanager: TaskManagerConfig,
    /// `slot.*`.
    pub slot: SlotConfig,
    /// `jobmanager.*`.
    pub jobmanager: JobManagerConfig,
    /// `restart-strategy.*`.
    pub restart_strategy: RestartStrategyConfig,
    /// `state.*`.
    pub state: StateSection,
    /// `execution.*`.
    pub execution: ExecutionSection,
    /// `collect.*`.
    pub collect: CollectConfig,
    /// `rest.*`.
    pub rest: RestConfig,
    /// `metrics.*`.
    pub metrics: MetricsConfig,
}

impl RillConfig {
    /// The runtime's sections.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            rpc: self.rpc.clone(),
            heartbeat: self.heartbeat.clone(),
            cluster: self.cluster.clone(),
            security: self.security.clone(),
        }
    }

    /// The state settings tasks get, from `state.*` and `execution.checkpointing.*`.
    pub fn state(&self) -> StateConfig {
        StateConfig {
            backend: self.state.backend.kind,
            incremental: self.execution.checkpointing.incremental,
            checkpoints_dir: self.state.checkpoints.dir.clone(),
            num_retained: self.state.checkpoints.num_retained,
            local_dir: self
                .state
                .backend
                .lsm
                .localdir
                .clone()
                .or_else(|| self.state.backend.rocksdb.localdir.clone()),
            lsm_cache_entries: self.state.backend.lsm.cache_entries,
        }
    }
}

impl RillConfig {
    /// Whether periodic checkpoints are configured (`execution.checkpointing.interval`).
    pub fn checkpointing_enabled(&self) -> bool {
        self.execution.checkpointing.interval.is_some()
    }

    /// The restart strategy jobs get (see the module docs): the configured one, else
    /// `exponential-delay` with checkpointing and `none` without.
    pub fn restart_strategy_type(&self) -> RestartStrategyType {
        self.restart_strategy
            .effective_kind(self.checkpointing_enabled())
    }
}

impl Validate for RillConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.runtime().validate()?;
        self.taskmanager.validate()?;
        self.slot.validate()?;
        self.restart_strategy.validate()?;
        self.execution.checkpointing.validate()?;
        if self.checkpointing_enabled() && self.state.checkpoints.dir.is_none() {
            return Err(ConfigError::validation(
                "execution.checkpointing.interval",
                "periodic checkpoints need a checkpoint storage: set state.checkpoints.dir (file:///abs/path) too",
            ));
        }
        self.collect.validate(self.rpc.max_frame_size)?;
        self.rest.validate()?;
        self.state().validate().map_err(|e| match e {
            rill_dataflow::DataflowError::State(rill_state::StateError::Config { key, reason }) => {
                ConfigError::validation(&key, reason)
            }
            other => ConfigError::validation("state", other.to_string()),
        })
    }
}

/// `state.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateSection {
    /// `state.backend.*`.
    pub backend: StateBackendSection,
    /// `state.checkpoints.*`.
    pub checkpoints: CheckpointsSection,
    /// `state.savepoints.*`.
    pub savepoints: SavepointsSection,
}

/// `state.savepoints.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SavepointsSection {
    /// `state.savepoints.dir`: default target directory of savepoints (`file:///abs`
    /// or an absolute path); a savepoint request may name its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// `state.backend.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateBackendSection {
    /// `state.backend.type`: `heap` (alias `hashmap`, the default) or `lsm` (alias
    /// `rocksdb`).
    #[serde(rename = "type", with = "backend_kind")]
    pub kind: BackendKind,
    /// `state.backend.lsm.*`.
    pub lsm: LsmSection,
    /// `state.backend.rocksdb.*`: Flink's spelling of the lsm backend's keys.
    pub rocksdb: RocksDbAliasSection,
}

/// `state.backend.lsm.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LsmSection {
    /// `state.backend.lsm.localdir`: working directories (the OS temp dir if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localdir: Option<PathBuf>,
    /// `state.backend.lsm.cache-entries`: decoded entries cached per subtask.
    pub cache_entries: usize,
}

impl Default for LsmSection {
    fn default() -> Self {
        LsmSection {
            localdir: None,
            cache_entries: rill_dataflow::state_config::DEFAULT_LSM_CACHE_ENTRIES,
        }
    }
}

/// `state.backend.rocksdb.*` (Flink's key names, accepted as aliases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RocksDbAliasSection {
    /// `state.backend.rocksdb.localdir`: same as `state.backend.lsm.localdir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localdir: Option<PathBuf>,
}

/// `state.checkpoints.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointsSection {
    /// `state.checkpoints.dir`: checkpoint storage URL (`file:///abs/path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// `state.checkpoints.num-retained`: completed checkpoints kept (1).
    pub num_retained: u32,
}

impl Default for CheckpointsSection {
    fn default() -> Self {
        CheckpointsSection {
            dir: None,
            num_retained: 1,
        }
    }
}

/// `execution.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecutionSection {
    /// `execution.checkpointing.*`.
    pub checkpointing: CheckpointingSection,
}

/// `execution.checkpointing.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointingSection {
    /// `execution.checkpointing.incremental`: unset means the backend's default (true
    /// for lsm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<bool>,
    /// `execution.checkpointing.interval`: enables periodic checkpoints this often;
    /// unset means checkpointing is off. It also selects the default restart strategy
    /// (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none", with = "optional_duration")]
    pub interval: Option<Duration>,
    /// `execution.checkpointing.timeout` (10 min): a checkpoint not completed by then
    /// is aborted.
    #[serde(with = "rill_runtime::config::duration")]
    pub timeout: Duration,
    /// `execution.checkpointing.min-pause` (0): from one checkpoint's completion to the
    /// next trigger.
    #[serde(with = "rill_runtime::config::duration")]
    pub min_pause: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints` (1).
    pub max_concurrent_checkpoints: usize,
    /// `execution.checkpointing.tolerable-failed-checkpoints` (0): consecutive failed
    /// checkpoints tolerated; one more fails the job over.
    pub tolerable_failed_checkpoints: u32,
    /// `execution.checkpointing.mode`: `exactly_once` (aligned barriers, default) or
    /// `at_least_once` (barriers only tracked).
    pub mode: CheckpointingModeSetting,
    /// `execution.checkpointing.unaligned.*`.
    pub unaligned: UnalignedSection,
    /// `execution.checkpointing.aligned-checkpoint-timeout` (0): with unaligned
    /// checkpoints enabled, a positive timeout starts every checkpoint aligned and turns
    /// it unaligned at a task whose alignment lasts longer; 0 makes them unaligned from
    /// the start.
    #[serde(with = "rill_runtime::config::duration")]
    pub aligned_checkpoint_timeout: Duration,
}

/// `execution.checkpointing.unaligned.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UnalignedSection {
    /// `execution.checkpointing.unaligned.enabled` (false): barriers overtake buffered
    /// data, which is stored with the checkpoint and replayed on recovery, so
    /// checkpoints take no longer under backpressure. Savepoints stay aligned.
    pub enabled: bool,
}

impl Default for CheckpointingSection {
    fn default() -> Self {
        CheckpointingSection {
            incremental: None,
            interval: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent_checkpoints: 1,
            tolerable_failed_checkpoints: 0,
            mode: CheckpointingModeSetting::ExactlyOnce,
            unaligned: UnalignedSection::default(),
            aligned_checkpoint_timeout: Duration::ZERO,
        }
    }
}

/// `execution.checkpointing.mode`, in Flink's spellings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointingModeSetting {
    /// Aligned barriers: state and transactional output reflect every record once.
    #[default]
    #[serde(
        rename = "exactly_once",
        alias = "EXACTLY_ONCE",
        alias = "exactly-once"
    )]
    ExactlyOnce,
    /// Barriers are only tracked: after a recovery some records are processed again.
    #[serde(
        rename = "at_least_once",
        alias = "AT_LEAST_ONCE",
        alias = "at-least-once"
    )]
    AtLeastOnce,
}

impl Validate for CheckpointingSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_some_and(|i| i.is_zero()) {
            return Err(ConfigError::validation(
                "execution.checkpointing.interval",
                "must be positive (leave it unset to disable checkpointing)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::validation(
                "execution.checkpointing.timeout",
                "must be positive",
            ));
        }
        if self.max_concurrent_checkpoints == 0 {
            return Err(ConfigError::validation(
                "execution.checkpointing.max-concurrent-checkpoints",
                "must be at least 1",
            ));
        }
        if self.unaligned.enabled && self.mode != CheckpointingModeSetting::ExactlyOnce {
            return Err(ConfigError::validation(
                "execution.checkpointing.unaligned.enabled",
                "unaligned checkpoints need execution.checkpointing.mode = exactly_once",
            ));
        }
        if self.unaligned.enabled && self.max_concurrent_checkpoints > 1 {
            return Err(ConfigError::validation(
                "execution.checkpointing.unaligned.enabled",
                "unaligned checkpoints need execution.checkpointing.max-concurrent-checkpoints = 1",
            ));
        }
        Ok(())
    }
}

/// The default `collect.max-bytes`: 8 MiB, below the default `rpc.max-frame-size`
/// (10 MiB) so that a job's result fits one RPC answer.
pub const DEFAULT_COLLECT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// `collect.*`: collect-sink results held by the JobMaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CollectConfig {
    /// `collect.max-bytes`: the most a job may collect, as the values' RPC encoding
    /// (8 MiB); a job that collects more fails.
    #[serde(with = "rill_runtime::config::bytes")]
    pub max_bytes: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            max_bytes: DEFAULT_COLLECT_MAX_BYTES,
        }
    }
}

impl CollectConfig {
    fn validate(&self, max_frame_size: usize) -> Result<(), ConfigError> {
        if self.max_bytes >= max_frame_size {
            return Err(ConfigError::validation(
                "collect.max-bytes",
                format!(
                    "must be smaller than rpc.max-frame-size ({max_frame_size} bytes), is {}: \
                     a job's collected results travel in one RPC answer",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Flink's default `rest.port`.
pub const DEFAULT_REST_PORT: u16 = 8081;

/// `rest.*`: where the JobManager serves the REST API (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestConfig {
    /// `rest.address`: the IP address to bind (127.0.0.1).
    pub address: IpAddr,
    /// `rest.port`: the port (8081); 0 lets the OS choose.
    pub port: u16,
    /// `rest.auth.*`.
    pub auth: RestAuthConfig,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_REST_PORT,
            auth: RestAuthConfig::default(),
        }
    }
}

/// `rest.auth.*`: who may use the REST API.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestAuthConfig {
    /// `rest.auth.token`: when set, every request must carry
    /// `Authorization: Bearer <token>`; unset, the API is open (loopback only).
    pub token: Option<String>,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for RestAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuthConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RestConfig {
    /// The socket to bind.
    pub fn bind(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

impl Validate for RestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.auth.token {
            if token.trim().is_empty() || token.chars().any(|c| c.is_whitespace()) {
                return Err(ConfigError::validation(
                    "rest.auth.token",
                    "must be a non-empty token without whitespace",
                ));
            }
        } else if !self.address.is_loopback() {
            return Err(ConfigError::validation(
                "rest.address",
                format!(
                    "is {}, not a loopback address: a REST API reachable from other hosts \
                     needs rest.auth.token (set rest.auth.token, or bind rest.address to \
                     127.0.0.1)",
                    self.address
                ),
            ));
        }
        Ok(())
    }
}

/// `metrics.*`: metrics reporters (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// `metrics.reporter.*`.
    pub reporter: MetricsReporterConfig,
}

/// `metrics.reporter.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsReporterConfig {
    /// `metrics.reporter.prom.*`: the TaskManagers' Prometheus endpoint.
    pub prom: PrometheusReporterConfig,
}

/// `metrics.reporter.prom.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrometheusReporterConfig {
    /// `metrics.reporter.prom.port`: the TaskManager's metrics port (0: the OS chooses).
    pub port: u16,
}

/// Serde for an optional [`Duration`] in the runtime's duration syntax.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => rill_runtime::config::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "rill_runtime::config::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}

/// `state.backend.type` by name, accepting Flink's aliases.
mod backend_kind {
    use rill_state::BackendKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(kind: &BackendKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BackendKind, D::Error> {
        let name = String::deserialize(d)?;
        BackendKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// `taskmanager.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskManagerConfig {
    /// `taskmanager.numberOfTaskSlots` (Flink's spelling): slots this TaskExecutor
    /// offers (1).
    #[serde(rename = "numberOfTaskSlots")]
    pub number_of_task_slots: u32,
    /// `taskmanager.network.*`: the data plane.
    pub network: NetworkConfig,
}

impl Default for TaskManagerConfig {
    fn default() -> Self {
        TaskManagerConfig {
            number_of_task_slots: 1,
            network: NetworkConfig::default(),
        }
    }
}

impl Validate for TaskManagerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.number_of_task_slots == 0 || self.number_of_task_slots > 1024 {
            return Err(ConfigError::validation(
                "taskmanager.numberOfTaskSlots",
                format!("must be in 1..=1024, is {}", self.number_of_task_slots),
            ));
        }
        self.network
            .validate()
            .map_err(|e| ConfigError::validation("taskmanager.network", e.to_string()))
    }
}

/// `slot.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlotConfig {
    /// `slot.request.*`.
    pub request: SlotRequestConfig,
}

impl Validate for SlotConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.request.timeout.is_zero() {
            return Err(ConfigError::validation(
                "slot.request.timeout",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// `slot.request.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlotRequestConfig {
    /// `slot.request.timeout`: how long a JobMaster waits for its slots (30 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for SlotRequestConfig {
    fn default() -> Self {
        SlotRequestConfig {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `jobmanager.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobManagerConfig {
    /// `jobmanager.execution.*`.
    pub execution: JobManagerExecutionConfig,
}

/// `jobmanager.execution.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobManagerExecutionConfig {
    /// `jobmanager.execution.failover-strategy`.
    pub failover_strategy: FailoverStrategy,
}

/// Which tasks restart after a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverStrategy {
    /// Only the pipelined region (connected component of the job graph) of the failed
    /// task.
    #[default]
    Region,
    /// Every task of the job.
    Full,
}

/// `restart-strategy.type`, by Flink's names (case-insensitive): `none`/`off`/`disable`,
/// `fixed-delay`/`fixeddelay`, `failure-rate`/`failurerate`,
/// `exponential-delay`/`exponentialdelay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartStrategyType {
    /// Never restart: the first failure fails the job.
    None,
    /// Restart up to `attempts` times, `delay` apart.
    FixedDelay,
    /// Restart unless more than `max-failures-per-interval` failures happened within
    /// `failure-rate-interval`.
    FailureRate,
    /// Restart with a delay growing from `initial-backoff` to `max-backoff`.
    ExponentialDelay,
}

impl RestartStrategyType {
    /// The canonical name, as `restart-strategy.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            RestartStrategyType::None => "none",
            RestartStrategyType::FixedDelay => "fixed-delay",
            RestartStrategyType::FailureRate => "failure-rate",
            RestartStrategyType::ExponentialDelay => "exponential-delay",
        }
    }

    /// Parses a name or one of Flink's aliases.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "disable" => Ok(RestartStrategyType::None),
            "fixed-delay" | "fixeddelay" => Ok(RestartStrategyType::FixedDelay),
            "failure-rate" | "failurerate" => Ok(RestartStrategyType::FailureRate),
            "exponential-delay" | "exponentialdelay" => Ok(RestartStrategyType::ExponentialDelay),
            _ => Err(format!(
                "unknown restart strategy {name:?}: expected none (off, disable), fixed-delay, \
                 failure-rate or exponential-delay"
            )),
        }
    }
}

impl std::fmt::Display for RestartStrategyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for RestartStrategyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RestartStrategyType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        RestartStrategyType::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// `restart-strategy.*`, with Flink's parameter names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartStrategyConfig {
    /// `restart-strategy.type`; unset means "by checkpointing" (see the module docs and
    /// [`RestartStrategyConfig::effective_kind`]).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<RestartStrategyType>,
    /// `restart-strategy.fixed-delay.*`.
    pub fixed_delay: FixedDelayConfig,
    /// `restart-strategy.failure-rate.*`.
    pub failure_rate: FailureRateConfig,
    /// `restart-strategy.exponential-delay.*`.
    pub exponential_delay: ExponentialDelayConfig,
}

impl RestartStrategyConfig {
    /// The strategy in force: the configured type, else `exponential-delay` when
    /// `checkpointing` is on and `none` when it is off (Flink's rule).
    pub fn effective_kind(&self, checkpointing: bool) -> RestartStrategyType {
        match self.kind {
            Some(kind) => kind,
            None if checkpointing => RestartStrategyType::ExponentialDelay,
            None => RestartStrategyType::None,
        }
    }
}

impl Validate for RestartStrategyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.exponential_delay;
        if e.backoff_multiplier < 1.0 || !e.backoff_multiplier.is_finite() {
            return Err(ConfigError::validation(
                "restart-strategy.exponential-delay.backoff-multiplier",
                format!("must be at least 1.0, is {}", e.backoff_multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&e.jitter_factor) {
            return Err(ConfigError::validation(
                "restart-strategy.exponential-delay.jitter-factor",
                format!("must be in 0.0..=1.0, is {}", e.jitter_factor),
            ));
        }
        if e.max_backoff < e.initial_backoff {
            return Err(ConfigError::validation(
                "restart-strategy.exponential-delay.max-backoff",
                "must not be smaller than initial-backoff",
            ));
        }
        if self.failure_rate.failure_rate_interval.is_zero() {
            return Err(ConfigError::validation(
                "restart-strategy.failure-rate.failure-rate-interval",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// `restart-strategy.fixed-delay.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FixedDelayConfig {
    /// Restarts allowed before the job fails (1).
    pub attempts: u32,
    /// Pause before each restart (1 s).
    #[serde(with = "duration")]
    pub delay: Duration,
}

impl Default for FixedDelayConfig {
    fn default() -> Self {
        FixedDelayConfig {
            attempts: 1,
            delay: Duration::from_secs(1),
        }
    }
}

/// `restart-strategy.failure-rate.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailureRateConfig {
    /// Failures allowed within one interval (1).
    pub max_failures_per_interval: u32,
    /// The interval (1 min).
    #[serde(with = "duration")]
    pub failure_rate_interval: Duration,
    /// Pause before each restart (1 s).
    #[serde(with = "duration")]
    pub delay: Duration,
}

impl Default for FailureRateConfig {
    fn default() -> Self {
        FailureRateConfig {
            max_failures_per_interval: 1,
            failure_rate_interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        }
    }
}

/// `restart-strategy.exponential-delay.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExponentialDelayConfig {
    /// First delay (1 s).
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Largest delay (1 min).
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Factor between consecutive delays (1.5).
    pub backoff_multiplier: f64,
    /// A job running this long without failure starts again from `initial-backoff` (1 h).
    #[serde(with = "duration")]
    pub reset_backoff_threshold: Duration,
    /// Random ± fraction applied to each delay (0.1).
    pub jitter_factor: f64,
    /// Restarts allowed before the job fails; none set means unlimited.
    pub attempts_before_reset_backoff: Option<u32>,
}

impl Default for ExponentialDelayConfig {
    fn default() -> Self {
        ExponentialDelayConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            backoff_multiplier: 1.5,
            reset_backoff_threshold: Duration::from_secs(3600),
            jitter_factor: 0.1,
            attempts_before_reset_backoff: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_runtime::config::{load, ConfigSources};

    fn with(overrides: &[&str]) -> Result<RillConfig, ConfigError> {
        load(&ConfigSources {
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            ..ConfigSources::isolated()
        })
    }

    #[test]
    fn rest_defaults_to_flinks_port_on_loopback_and_refuses_other_addresses() {
        let c = with(&[]).unwrap();
        assert_eq!(c.rest.bind(), "127.0.0.1:8081".parse().unwrap());
        let c = with(&["rest.port=0", "rest.address=::1"]).unwrap();
        assert_eq!(c.rest.bind(), "[::1]:0".parse().unwrap());
        let err = with(&["rest.address=0.0.0.0"]).unwrap_err().to_string();
        assert!(err.contains("rest.address"), "{err}");
        assert!(err.contains("rest.auth.token"), "{err}");
        assert!(with(&["rest.address=localhost"]).is_err());
    }

    #[test]
    fn prometheus_port_defaults_to_a_free_port_and_takes_flinks_key() {
        assert_eq!(with(&[]).unwrap().metrics.reporter.prom.port, 0);
        let c = with(&["metrics.reporter.prom.port=9249"]).unwrap();
        assert_eq!(c.metrics.reporter.prom.port, 9249);
        assert!(with(&["metrics.reporter.prom.port=99999"]).is_err());
    }

    #[test]
    fn rest_token_opens_other_addresses_and_stays_out_of_debug_output() {
        assert_eq!(with(&[]).unwrap().rest.auth.token, None);
        let c = with(&["rest.address=0.0.0.0", "rest.auth.token=s3cr3t-token"]).unwrap();
        assert_eq!(c.rest.bind(), "0.0.0.0:8081".parse().unwrap());
        assert_eq!(c.rest.auth.token.as_deref(), Some("s3cr3t-token"));
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
        let c = with(&["rest.auth.token=loopback-too"]).unwrap();
        assert_eq!(c.rest.auth.token.as_deref(), Some("loopback-too"));
        for bad in ["rest.auth.token=", "rest.auth.token=two words"] {
            let err = with(&[bad, "rest.address=0.0.0.0"])
                .unwrap_err()
                .to_string();
            assert!(err.contains("rest.auth.token"), "{bad}: {err}");
        }
    }

    #[test]
    fn flink_key_names_parse() {
        let c = with(&[
            "taskmanager.numberOfTaskSlots=4",
            "restart-strategy.type=fixed-delay",
            "restart-strategy.fixed-delay.attempts=3",
            "restart-strategy.fixed-delay.delay=200ms",
            "slot.request.timeout=2s",
            "jobmanager.execution.failover-strategy=full",
        ])
        .unwrap();
        assert_eq!(c.taskmanager.number_of_task_slots, 4);
        assert_eq!(
            c.restart_strategy.kind,
            Some(RestartStrategyType::FixedDelay)
        );
        assert_eq!(c.restart_strategy.fixed_delay.attempts, 3);
        assert_eq!(
            c.restart_strategy.fixed_delay.delay,
            Duration::from_millis(200)
        );
        assert_eq!(c.slot.request.timeout, Duration::from_secs(2));
        assert_eq!(
            c.jobmanager.execution.failover_strategy,
            FailoverStrategy::Full
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = with(&["taskmanager.numberOfTaskSlots=0"]).unwrap_err();
        assert_eq!(e.key(), Some("taskmanager.numberOfTaskSlots"));
        let e = with(&["restart-strategy.exponential-delay.backoff-multiplier=0.5"]).unwrap_err();
        assert_eq!(
            e.key(),
            Some("restart-strategy.exponential-delay.backoff-multiplier")
        );
        assert!(with(&["restart-strategy.type=sometimes"]).is_err());
        let e = with(&["execution.checkpointing.interval=0s"]).unwrap_err();
        assert_eq!(e.key(), Some("execution.checkpointing.interval"));
        let e = with(&["collect.max-bytes=10mb"]).unwrap_err();
        assert_eq!(e.key(), Some("collect.max-bytes"));
    }

    #[test]
    fn without_checkpointing_jobs_do_not_restart_unless_a_strategy_is_configured() {
        let c = with(&[]).unwrap();
        assert_eq!(c.restart_strategy.kind, None);
        assert!(!c.checkpointing_enabled());
        assert_eq!(c.restart_strategy_type(), RestartStrategyType::None);
        for (name, kind) in [
            ("fixed-delay", RestartStrategyType::FixedDelay),
            ("failure-rate", RestartStrategyType::FailureRate),
            ("exponential-delay", RestartStrategyType::ExponentialDelay),
        ] {
            let c = with(&[&format!("restart-strategy.type={name}")]).unwrap();
            assert_eq!(c.restart_strategy_type(), kind, "{name}");
        }
    }

    #[test]
    fn unaligned_checkpoints_take_flinks_keys_and_need_exactly_once() {
        let base = [
            "execution.checkpointing.interval=10s",
            "state.checkpoints.dir=file:///tmp/rill-checkpoints",
        ];
        let c = with(&base).unwrap();
        assert!(!c.execution.checkpointing.unaligned.enabled);
        assert_eq!(
            c.execution.checkpointing.aligned_checkpoint_timeout,
            Duration::ZERO
        );
        let c = with(&[
            base[0],
            base[1],
            "execution.checkpointing.unaligned.enabled=true",
            "execution.checkpointing.aligned-checkpoint-timeout=30s",
        ])
        .unwrap();
        assert!(c.execution.checkpointing.unaligned.enabled);
        assert_eq!(
            c.execution.checkpointing.aligned_checkpoint_timeout,
            Duration::from_secs(30)
        );
        for extra in [
            "execution.checkpointing.mode=at_least_once",
            "execution.checkpointing.max-concurrent-checkpoints=2",
        ] {
            let e = with(&[
                base[0],
                base[1],
                "execution.checkpointing.unaligned.enabled=true",
                extra,
            ])
            .unwrap_err();
            assert_eq!(
                e.key(),
                Some("execution.checkpointing.unaligned.enabled"),
                "{e}"
            );
        }
    }

    #[test]
    fn with_checkpointing_the_default_is_exponential_delay() {
        let e = with(&["execution.checkpointing.interval=10s"]).unwrap_err();
        assert_eq!(e.key(), Some("execution.checkpointing.interval"));
        assert!(e.to_string().contains("state.checkpoints.dir"), "{e}");
        let c = with(&[
            "execution.checkpointing.interval=10s",
            "state.checkpoints.dir=file:///tmp/rill-checkpoints",
        ])
        .unwrap();
        assert_eq!(c.execution.checkpointing.timeout, Duration::from_secs(600));
        assert_eq!(c.execution.checkpointing.max_concurrent_checkpoints, 1);
        assert_eq!(c.execution.checkpointing.tolerable_failed_checkpoints, 0);
        let c2 = with(&[
            "execution.checkpointing.interval=10s",
            "state.checkpoints.dir=file:///tmp/rill-checkpoints",
            "execution.checkpointing.mode=AT_LEAST_ONCE",
            "execution.checkpointing.tolerable-failed-checkpoints=3",
        ])
        .unwrap();
        assert_eq!(
            c2.execution.checkpointing.mode,
            CheckpointingModeSetting::AtLeastOnce
        );
        assert_eq!(c2.execution.checkpointing.tolerable_failed_checkpoints, 3);
        assert_eq!(
            c.execution.checkpointing.interval,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            c.restart_strategy_type(),
            RestartStrategyType::ExponentialDelay
        );
        // A configured strategy wins, `none` included.
        let c = with(&[
            "execution.checkpointing.interval=10s",
            "state.checkpoints.dir=file:///tmp/rill-checkpoints",
            "restart-strategy.type=none",
        ])
        .unwrap();
        assert_eq!(c.restart_strategy_type(), RestartStrategyType::None);
    }

    #[test]
    fn flink_spellings_of_the_strategy_type_parse() {
        for (name, kind) in [
            ("none", RestartStrategyType::None),
            ("off", RestartStrategyType::None),
            ("disable", RestartStrategyType::None),
            ("fixeddelay", RestartStrategyType::FixedDelay),
            ("Fixed-Delay", RestartStrategyType::FixedDelay),
            ("failurerate", RestartStrategyType::FailureRate),
            ("exponentialdelay", RestartStrategyType::ExponentialDelay),
        ] {
            let c = with(&[&format!("restart-strategy.type={name}")]).unwrap();
            assert_eq!(c.restart_strategy.kind, Some(kind), "{name}");
        }
    }

    #[test]
    fn flink_defaults_of_each_strategy() {
        let r = RestartStrategyConfig::default();
        assert_eq!(r.fixed_delay.attempts, 1);
        assert_eq!(r.fixed_delay.delay, Duration::from_secs(1));
        assert_eq!(r.failure_rate.max_failures_per_interval, 1);
        assert_eq!(
            r.failure_rate.failure_rate_interval,
            Duration::from_secs(60)
        );
        assert_eq!(r.failure_rate.delay, Duration::from_secs(1));
        let e = &r.exponential_delay;
        assert_eq!(e.initial_backoff, Duration::from_secs(1));
        assert_eq!(e.max_backoff, Duration::from_secs(60));
        assert_eq!(e.backoff_multiplier, 1.5);
        assert_eq!(e.reset_backoff_threshold, Duration::from_secs(3600));
        assert_eq!(e.jitter_factor, 0.1);
        assert_eq!(e.attempts_before_reset_backoff, None);
    }

    #[test]
    fn collect_max_bytes_parses_sizes() {
        assert_eq!(
            with(&[]).unwrap().collect.max_bytes,
            DEFAULT_COLLECT_MAX_BYTES
        );
        assert_eq!(
            with(&["collect.max-bytes=64kb"]).unwrap().collect.max_bytes,
            64 * 1024
        );
    }
}
