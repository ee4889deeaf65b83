//! Configuration: one serde struct per subsystem, layered by figment.
//!
//! # Layers
//!
//! [`load`] builds any configuration type `T` from four layers, each overriding the one
//! before it:
//!
//! 1. built-in defaults (`T::default()`);
//! 2. a TOML file — [`ConfigSources::file`] if given (it must exist), otherwise
//!    [`ConfigSources::default_file`] (`rill.toml`) if it exists;
//! 3. environment variables starting with [`ConfigSources::env_prefix`] (`RILL_`);
//! 4. command-line overrides `key=value` (Flink's `-D heartbeat.interval=2s`).
//!
//! and then calls [`Validate::validate`]. The result is a plain value that is passed to
//! whoever needs it; nothing here is global.
//!
//! # Keys
//!
//! Keys are dotted paths of kebab-case names and follow Flink where Flink has the
//! option: `heartbeat.interval`, `heartbeat.rpc-failure-threshold`,
//! `cluster.registration.initial-timeout`, `rpc.ask-timeout`, … Every section denies
//! unknown keys, so a typo is an error that names the key rather than a silently ignored
//! setting.
//!
//! An environment variable names a key by separating sections with `__` and words with
//! `_`: `RILL_HEARTBEAT__RPC_FAILURE_THRESHOLD=3` sets `heartbeat.rpc-failure-threshold`.
//! The match against the keys `T` knows ignores case, `-` and `_`, so camelCase keys
//! (Flink's `taskmanager.numberOfTaskSlots`) are reachable too. A variable whose first
//! section is not a section of `T` (say `RILL_LOG`) is not configuration and is
//! ignored; within a known section an unknown key is an error.
//!
//! Values from the environment and from overrides are parsed like TOML values (`3`,
//! `true`, `"text"`, `[1, 2]`) and fall back to a plain string (`2s`, `10mb`). A string
//! option that looks like a number must therefore be quoted: `'"12345"'`.
//!
//! # Units
//!
//! Durations are written as humans write them (`1s`, `100ms`, `5 s`, `1min 30s`); a
//! bare integer means milliseconds, as in Flink. Sizes take `b`, `kb`/`kib`/`k`,
//! `mb`/`mib`/`m`, `gb`/`gib`/`g` (all powers of 1024, as in Flink) or a bare number of
//! bytes. Use [`duration`] and [`bytes`] with `#[serde(with = …)]` in other sections.
//!
//! # Errors
//!
//! A [`ConfigError`] names the key and the layer it came from (`TOML file …`,
//! `environment variable RILL_…`, `override of …`) and says what was wrong. Secrets are
//! never part of an error or of `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named configuration file does not exist.
    #[error("configuration file {} does not exist", path.display())]
    FileNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// A configuration file exists but cannot be read.
    #[error("cannot read configuration file {}: {reason}", path.display())]
    FileUnreadable {
        /// The path of the file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A command-line override is not of the form `key=value`.
    #[error("malformed override {arg:?}: expected key=value with a dotted key")]
    MalformedOverride {
        /// The override as given.
        arg: String,
    },
    /// A key that no configuration section knows.
    #[error("unknown configuration key `{key}` (from {origin})")]
    UnknownKey {
        /// The full dotted key.
        key: String,
        /// The layer that set it.
        origin: String,
    },
    /// A key has a value of the wrong type or format (e.g. a malformed duration).
    #[error("invalid value for `{key}` (from {origin}): {reason}")]
    InvalidValue {
        /// The full dotted key.
        key: String,
        /// The layer that set it.
        origin: String,
        /// What was wrong.
        reason: String,
    },
    /// A layer could not be parsed at all (e.g. a TOML syntax error).
    #[error("malformed configuration in {origin}: {reason}")]
    Malformed {
        /// The layer.
        origin: String,
        /// The parser's message.
        reason: String,
    },
    /// The values parse but break a rule of their section.
    #[error("invalid configuration `{key}`: {reason}")]
    Validation {
        /// The full dotted key at fault.
        key: String,
        /// The rule that was broken.
        reason: String,
    },
}

impl ConfigError {
    /// Creates a [`ConfigError::Validation`] for `key`.
    pub fn validation(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Validation {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Returns the configuration key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::InvalidValue { key, .. }
            | ConfigError::Validation { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A configuration section that checks its own rules after loading.
pub trait Validate {
    /// Returns an error naming the first key that breaks a rule.
    fn validate(&self) -> Result<(), ConfigError>;
}

fn require_positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::validation(key, "must be greater than zero"));
    }
    Ok(())
}

/// `heartbeat.*`: liveness detection between components (see [`crate::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeartbeatConfig {
    /// `heartbeat.interval`: how often the sender side requests a heartbeat (1 s).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// `heartbeat.timeout`: silence after which a peer is declared lost (5 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// `heartbeat.rpc-failure-threshold`: consecutive failed heartbeat RPCs after which a
    /// peer is declared unreachable before its timeout (2); zero or negative disables it.
    pub rpc_failure_threshold: i32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            rpc_failure_threshold: 2,
        }
    }
}

impl Validate for HeartbeatConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_positive("heartbeat.interval", self.interval)?;
        if self.timeout <= self.interval {
            return Err(ConfigError::validation(
                "heartbeat.timeout",
                format!(
                    "must be greater than heartbeat.interval ({:?}), is {:?}",
                    self.interval, self.timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `cluster.registration.*`: backoff when registering at a leader (see
/// [`crate::registration`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistrationConfig {
    /// `cluster.registration.initial-timeout`: timeout of the first attempt (100 ms).
    #[serde(with = "duration")]
    pub initial_timeout: Duration,
    /// `cluster.registration.max-timeout`: cap of the doubling attempt timeout (30 s).
    #[serde(with = "duration")]
    pub max_timeout: Duration,
    /// `cluster.registration.error-delay`: pause after a failed attempt (10 s).
    #[serde(with = "duration")]
    pub error_delay: Duration,
    /// `cluster.registration.refused-registration-delay`: pause after a refusal (30 s).
    #[serde(with = "duration")]
    pub refused_registration_delay: Duration,
    /// `cluster.registration.max-unreachable-delay`: cap of the pause after an attempt
    /// that could not reach the leader at all (1 s). The pause starts at
    /// `initial-timeout` and doubles, so a leader that comes back is found within about
    /// this long (no Flink equivalent: Flink waits `error-delay`).
    #[serde(with = "duration")]
    pub max_unreachable_delay: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            initial_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_secs(30),
            error_delay: Duration::from_secs(10),
            refused_registration_delay: Duration::from_secs(30),
            max_unreachable_delay: Duration::from_secs(1),
        }
    }
}

impl Validate for RegistrationConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_positive("cluster.registration.initial-timeout", self.initial_timeout)?;
        require_positive("cluster.registration.max-timeout", self.max_timeout)?;
        require_positive("cluster.registration.error-delay", self.error_delay)?;
        require_positive(
            "cluster.registration.refused-registration-delay",
            self.refused_registration_delay,
        )?;
        require_positive(
            "cluster.registration.max-unreachable-delay",
            self.max_unreachable_delay,
        )?;
        if self.initial_timeout > self.max_timeout {
            return Err(ConfigError::validation(
                "cluster.registration.initial-timeout",
                format!(
                    "must not exceed cluster.registration.max-timeout ({:?}), is {:?}",
                    self.max_timeout, self.initial_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `cluster.*`: cluster-wide coordination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// `cluster.registration.*`.
    pub registration: RegistrationConfig,
}

impl Validate for ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.registration.validate()
    }
}

/// The smallest accepted `rpc.max-frame-size`.
pub const MIN_FRAME_SIZE: usize = 1024;

/// `rpc.*`: the control-plane transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RpcConfig {
    /// `rpc.ask-timeout`: default timeout of an ask (10 s); calls may override it.
    #[serde(with = "duration")]
    pub ask_timeout: Duration,
    /// `rpc.max-frame-size`: largest encoded message in bytes (10 MiB).
    #[serde(with = "bytes")]
    pub max_frame_size: usize,
    /// `rpc.connect-timeout`: time allowed to establish a connection and handshake (5 s).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// `rpc.idle-timeout`: QUIC idle timeout; a silent connection is closed (30 s).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// `rpc.keep-alive-interval`: QUIC keep-alive pings on idle connections (1 s).
    #[serde(with = "duration")]
    pub keep_alive_interval: Duration,
    /// `rpc.max-pending-tells`: tells one gateway session may queue for a peer that has
    /// not taken them yet (10,000); a tell beyond that fails with
    /// [`RpcError::QueueFull`](crate::RpcError::QueueFull) instead of growing the queue.
    pub max_pending_tells: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            ask_timeout: Duration::from_secs(10),
            max_frame_size: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(1),
            max_pending_tells: 10_000,
        }
    }
}

impl Validate for RpcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_positive("rpc.ask-timeout", self.ask_timeout)?;
        if self.max_frame_size < MIN_FRAME_SIZE {
            return Err(ConfigError::validation(
                "rpc.max-frame-size",
                format!(
                    "must be at least {MIN_FRAME_SIZE} bytes, is {}",
                    self.max_frame_size
                ),
            ));
        }
        require_positive("rpc.connect-timeout", self.connect_timeout)?;
        require_positive("rpc.idle-timeout", self.idle_timeout)?;
        require_positive("rpc.keep-alive-interval", self.keep_alive_interval)?;
        if self.max_pending_tells == 0 {
            return Err(ConfigError::validation(
                "rpc.max-pending-tells",
                "must be at least 1",
            ));
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(ConfigError::validation(
                "rpc.keep-alive-interval",
                format!(
                    "must be less than rpc.idle-timeout ({:?}) or idle connections close",
                    self.idle_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `security.*`: how processes prove cluster membership (consumed by
/// [`crate::security`]). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecurityConfig {
    /// `security.cluster-secret`: the shared cluster secret itself.
    #[serde(deserialize_with = "secret")]
    pub cluster_secret: Option<String>,
    /// `security.cluster-secret-file`: a file holding the shared cluster secret.
    pub cluster_secret_file: Option<PathBuf>,
    /// `security.auto-generate`: generate development credentials when none are
    /// configured (true).
    pub auto_generate: bool,
    /// `security.auth.*`: limits on connections that have not authenticated yet.
    pub auth: AuthConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            cluster_secret: None,
            cluster_secret_file: None,
            auto_generate: true,
            auth: AuthConfig::default(),
        }
    }
}

/// `security.auth.*`: what a QUIC server (the RPC service, the data plane) grants a peer
/// before it has proved cluster membership (see [`crate::security::admission`]).
///
/// The limits hold per QUIC endpoint: a JobManager has one, a TaskManager two (RPC and
/// data plane).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// `security.auth.timeout`: time a new connection has for the QUIC handshake and the
    /// authentication exchange together before it is closed (5 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// `security.auth.max-pending-connections`: connections that have not authenticated
    /// yet, at most, at once (256). More are refused; above half of it, a peer must first
    /// prove it owns its source address (a QUIC retry) before it is let in.
    pub max_pending_connections: usize,
    /// `security.auth.max-pending-per-address`: the same per source IP address (32).
    pub max_pending_per_address: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            timeout: Duration::from_secs(5),
            max_pending_connections: 256,
            max_pending_per_address: 32,
        }
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_positive("security.auth.timeout", self.timeout)?;
        if self.max_pending_connections == 0 {
            return Err(ConfigError::validation(
                "security.auth.max-pending-connections",
                "must be at least 1",
            ));
        }
        if self.max_pending_per_address == 0 {
            return Err(ConfigError::validation(
                "security.auth.max-pending-per-address",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfig")
            .field(
                "cluster_secret",
                &self.cluster_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("auto_generate", &self.auto_generate)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Validate for SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(_), Some(_)) => Err(ConfigError::validation(
                "security.cluster-secret",
                "set either security.cluster-secret or security.cluster-secret-file, not both",
            )),
            (Some(secret), None) if secret.is_empty() => Err(ConfigError::validation(
                "security.cluster-secret",
                "must not be empty",
            )),
            _ => self.auth.validate(),
        }
    }
}

/// Reads an optional secret string. A value that parsed as something else (an unquoted
/// `0123` from the environment) is rejected without echoing it, and not converted,
/// which could change it (`0123` → `123`).
fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    use serde::de::{Error, Visitor};

    struct SecretVisitor;

    impl SecretVisitor {
        fn not_a_string<E: Error>(self) -> Result<Option<String>, E> {
            Err(E::custom(
                "expected a string; quote a secret that looks like a number or boolean",
            ))
        }
    }

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
            self.not_a_string()
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<Self::Value, E> {
            self.not_a_string()
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<Self::Value, E> {
            self.not_a_string()
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<Self::Value, E> {
            self.not_a_string()
        }
    }

    deserializer.deserialize_option(SecretVisitor)
}

/// Everything `rill-runtime` reads: `rpc.*`, `heartbeat.*`, `cluster.*`, `security.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeConfig {
    /// `rpc.*`.
    pub rpc: RpcConfig,
    /// `heartbeat.*`.
    pub heartbeat: HeartbeatConfig,
    /// `cluster.*`.
    pub cluster: ClusterConfig,
    /// `security.*`.
    pub security: SecurityConfig,
}

impl Validate for RuntimeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.rpc.validate()?;
        self.heartbeat.validate()?;
        self.cluster.validate()?;
        self.security.validate()
    }
}

/// Where [`load`] reads configuration from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// A TOML file that must exist (`--config PATH`).
    pub file: Option<PathBuf>,
    /// A TOML file read only if it exists and `file` is `None` (`rill.toml`).
    pub default_file: Option<PathBuf>,
    /// Prefix of the environment variables that carry configuration (`RILL_`).
    pub env_prefix: String,
    /// The environment to read; `None` reads the process environment. Tests pass a map
    /// so they do not race on process-global state.
    pub env: Option<BTreeMap<String, String>>,
    /// `key=value` overrides, applied last, in order.
    pub overrides: Vec<String>,
}

impl Default for ConfigSources {
    /// `rill.toml` if present, the process environment with prefix `RILL_`, no overrides.
    fn default() -> Self {
        ConfigSources {
            file: None,
            default_file: Some(PathBuf::from("rill.toml")),
            env_prefix: "RILL_".to_string(),
            env: None,
            overrides: Vec::new(),
        }
    }
}

impl ConfigSources {
    /// No file, an empty environment, no overrides: only the defaults (for tests).
    pub fn isolated() -> Self {
        ConfigSources {
            default_file: None,
            env: Some(BTreeMap::new()),
            ..ConfigSources::default()
        }
    }
}

/// Loads and validates `T` from the layers in `sources` (see the module docs).
pub fn load<T>(sources: &ConfigSources) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let defaults = T::default();
    let mut figment = Figment::from(Serialized::defaults(&defaults));

    if let Some(path) = &sources.file {
        match std::fs::metadata(path) {
            Ok(_) => figment = figment.merge(Toml::file_exact(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::FileNotFound { path: path.clone() })
            }
            Err(e) => {
                return Err(ConfigError::FileUnreadable {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            }
        }
    } else if let Some(path) = sources.default_file.as_ref().filter(|p| p.exists()) {
        figment = figment.merge(Toml::file_exact(path));
    }

    let known = known_keys(&defaults)?;
    let env: Vec<(String, String)> = match &sources.env {
        Some(env) => env.clone().into_iter().collect(),
        None => {
            // Non-UTF-8 variables cannot be configuration; skip them rather than panic.
            let mut vars: Vec<_> = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect();
            vars.sort();
            vars
        }
    };
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(&sources.env_prefix) else {
            continue;
        };
        match env_key(&known, rest) {
            Some(key) => {
                figment = figment.merge(Layer {
                    origin: format!("environment variable {name}"),
                    key,
                    value: parse_value(&value),
                })
            }
            None => tracing::debug!(variable = %name, "not a configuration key; ignored"),
        }
    }

    for arg in &sources.overrides {
        let (key, value) = arg
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| k.split('.').all(|s| !s.is_empty()))
            .ok_or_else(|| ConfigError::MalformedOverride { arg: arg.clone() })?;
        figment = figment.merge(Layer {
            // Names the key only: the value may be a secret.
            origin: format!("override of {key}"),
            key: key.to_string(),
            value: parse_value(value),
        });
    }

    let config: T = figment.extract().map_err(from_figment)?;
    config.validate()?;
    Ok(config)
}

/// One key set by the environment or an override, as a figment provider.
struct Layer {
    origin: String,
    key: String,
    value: Value,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // `key` has no empty segment (checked by the callers), so nesting yields a dict.
        let dict = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .ok_or_else(|| figment::Error::from(format!("malformed key {:?}", self.key)))?;
        Ok(Profile::Default.collect(dict))
    }
}

/// Parses like a TOML value; anything else is a plain string.
fn parse_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Folds case, `-` and `_` out of a key path so spellings can be compared.
fn normalize(path: &str) -> String {
    path.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Maps every normalized key path (sections included) of `defaults` to its spelling.
fn known_keys<T: Serialize>(defaults: &T) -> Result<BTreeMap<String, String>, ConfigError> {
    fn walk(dict: &Dict, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (name, value) in dict {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if let Value::Dict(_, inner) = value {
                walk(inner, &path, out);
            }
            out.insert(normalize(&path), path);
        }
    }
    let mut keys = BTreeMap::new();
    if let Some(dict) = Value::serialize(defaults)
        .map_err(from_figment)?
        .into_dict()
    {
        walk(&dict, "", &mut keys);
    }
    Ok(keys)
}

/// Returns the key an environment variable (prefix stripped) sets, or `None` if it is
/// not configuration.
fn env_key(known: &BTreeMap<String, String>, var: &str) -> Option<String> {
    let segments: Vec<&str> = var.split("__").collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let normalized: Vec<String> = segments.iter().map(|s| normalize(s)).collect();
    if let Some(key) = known.get(&normalized.join(".")) {
        return Some(key.clone());
    }
    // Unknown key in a known section: keep it, so that extraction reports the typo.
    known.contains_key(&normalized[0]).then(|| {
        segments
            .iter()
            .map(|s| s.to_lowercase().replace('_', "-"))
            .collect::<Vec<_>>()
            .join(".")
    })
}

fn from_figment(error: figment::Error) -> ConfigError {
    let origin = error.metadata.as_ref().map_or_else(
        || "configuration".to_string(),
        |m| match &m.source {
            Some(source) => format!("{} {source}", m.name),
            None => m.name.to_string(),
        },
    );
    let path = error.path.join(".");
    match error.kind {
        // figment's path of an unknown field already ends with the field.
        Kind::UnknownField(field, _) => ConfigError::UnknownKey {
            key: if path.is_empty() { field } else { path },
            origin,
        },
        kind if path.is_empty() => ConfigError::Malformed {
            origin,
            reason: kind.to_string(),
        },
        kind => ConfigError::InvalidValue {
            key: path,
            origin,
            reason: kind.to_string(),
        },
    }
}

/// Serde for [`Duration`]s written as humans write them (`1s`, `100ms`, `1min 30s`) or as
/// a bare integer of milliseconds (Flink's convention). Serializes as text.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `value` as text, e.g. `1s 500ms`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime_serde::re::humantime::format_duration(*value))
    }

    /// Reads a duration from text or from an integer of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"1s\", \"100ms\" or an integer of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("a duration cannot be negative ({millis})")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime_serde::re::humantime::parse_duration(text.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {text:?} ({e}); write e.g. \"1s\", \"100ms\""
                ))
            })
        }
    }
}

/// Serde for sizes in bytes: a bare integer or a number with a unit (`b`, `kb`, `mb`,
/// `gb`, also `k`/`kib`, …; all powers of 1024, as in Flink). Serializes as an integer.
pub mod bytes {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `value` as an integer of bytes.
    pub fn serialize<S: Serializer>(value: &usize, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value as u64)
    }

    /// Reads a size from an integer or from text such as `10mb`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }

    /// Parses `10mb`, `64 KiB`, `512`, … into bytes.
    pub fn parse(text: &str) -> Result<usize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected a number of bytes"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" | "bytes" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            other => return Err(format!("invalid size {text:?}: unknown unit {other:?}")),
        };
        number
            .checked_mul(1 << shift)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("size {text:?} is too large"))
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as 1048576, \"64kb\" or \"10mb\"")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<usize, E> {
            usize::try_from(value).map_err(|_| E::custom(format!("size {value} is too large")))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<usize, E> {
            usize::try_from(value)
                .map_err(|_| E::custom(format!("a size cannot be negative ({value})")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<usize, E> {
            parse(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write temp file");
        file
    }

    #[test]
    fn defaults_load_and_validate() {
        let config: RuntimeConfig = load(&ConfigSources::isolated()).expect("defaults load");
        assert_eq!(config, RuntimeConfig::default());
        assert_eq!(config.heartbeat.interval, Duration::from_secs(1));
        assert_eq!(config.heartbeat.timeout, Duration::from_secs(5));
        assert_eq!(config.heartbeat.rpc_failure_threshold, 2);
        assert_eq!(
            config.cluster.registration.initial_timeout,
            Duration::from_millis(100)
        );
        assert_eq!(config.rpc.max_frame_size, 10 * 1024 * 1024);
        assert!(config.security.auto_generate);
        assert_eq!(config.security.auth.timeout, Duration::from_secs(5));
        assert_eq!(config.security.auth.max_pending_connections, 256);
        assert_eq!(config.security.auth.max_pending_per_address, 32);
    }

    #[test]
    fn auth_limits_load_and_validate() {
        let config: RuntimeConfig = load(&ConfigSources {
            env: env(&[("RILL_SECURITY__AUTH__MAX_PENDING_CONNECTIONS", "64")]),
            overrides: vec![
                "security.auth.timeout=2s".into(),
                "security.auth.max-pending-per-address=8".into(),
            ],
            ..ConfigSources::isolated()
        })
        .expect("auth limits load");
        assert_eq!(config.security.auth.timeout, Duration::from_secs(2));
        assert_eq!(config.security.auth.max_pending_connections, 64);
        assert_eq!(config.security.auth.max_pending_per_address, 8);
        for (key, value) in [
            ("security.auth.timeout", "0s"),
            ("security.auth.max-pending-connections", "0"),
            ("security.auth.max-pending-per-address", "0"),
        ] {
            let err = load::<RuntimeConfig>(&ConfigSources {
                overrides: vec![format!("{key}={value}")],
                ..ConfigSources::isolated()
            })
            .expect_err(key);
            assert_eq!(err.key(), Some(key), "{err}");
        }
    }

    #[test]
    fn layers_override_in_order_file_env_flags() {
        let file = toml_file(
            r#"
            [heartbeat]
            interval = "2s"
            timeout = "20s"
            rpc-failure-threshold = 7

            [cluster.registration]
            max-timeout = "1min"

            [rpc]
            max-frame-size = "64kb"
            "#,
        );
        let sources = ConfigSources {
            file: Some(file.path().to_path_buf()),
            env: env(&[
                ("RILL_HEARTBEAT__TIMEOUT", "30s"),
                ("RILL_HEARTBEAT__RPC_FAILURE_THRESHOLD", "3"),
                ("RILL_CLUSTER__REGISTRATION__ERROR_DELAY", "250ms"),
                ("RILL_LOG", "debug"),
                ("OTHER_HEARTBEAT__TIMEOUT", "oops"),
            ]),
            overrides: vec![
                "heartbeat.rpc-failure-threshold=-1".into(),
                "security.auto-generate = false".into(),
            ],
            ..ConfigSources::isolated()
        };
        let config: RuntimeConfig = load(&sources).expect("layers load");
        // file over defaults
        assert_eq!(config.heartbeat.interval, Duration::from_secs(2));
        assert_eq!(
            config.cluster.registration.max_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(config.rpc.max_frame_size, 64 * 1024);
        // env over file
        assert_eq!(config.heartbeat.timeout, Duration::from_secs(30));
        assert_eq!(
            config.cluster.registration.error_delay,
            Duration::from_millis(250)
        );
        // flags over env
        assert_eq!(config.heartbeat.rpc_failure_threshold, -1);
        assert!(!config.security.auto_generate);
        // untouched
        assert_eq!(config.rpc.ask_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_origin() {
        let file = toml_file("[heartbeat]\nintervall = \"1s\"\n");
        let err = load::<RuntimeConfig>(&ConfigSources {
            file: Some(file.path().to_path_buf()),
            ..ConfigSources::isolated()
        })
        .expect_err("typo in file");
        assert_eq!(err.key(), Some("heartbeat.intervall"), "{err}");
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");

        let err = load::<RuntimeConfig>(&ConfigSources {
            env: env(&[("RILL_HEARTBEAT__INTERVALL", "1s")]),
            ..ConfigSources::isolated()
        })
        .expect_err("typo in env");
        assert_eq!(err.key(), Some("heartbeat.intervall"), "{err}");
        assert!(
            err.to_string().contains("RILL_HEARTBEAT__INTERVALL"),
            "{err}"
        );

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["nosuch.key=1".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("unknown section in flags");
        assert_eq!(err.key(), Some("nosuch"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["heartbeat.interval=soon".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("bad duration");
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
        assert_eq!(err.key(), Some("heartbeat.interval"), "{err}");
        assert!(err.to_string().contains("override of heartbeat.interval"));

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["rpc.max-frame-size=10 parsecs".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("bad size");
        assert_eq!(err.key(), Some("rpc.max-frame-size"), "{err}");

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["heartbeat.interval".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("no value");
        assert!(
            matches!(err, ConfigError::MalformedOverride { .. }),
            "{err}"
        );
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["heartbeat.timeout=500ms".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("timeout below interval");
        assert!(matches!(err, ConfigError::Validation { .. }), "{err}");
        assert_eq!(err.key(), Some("heartbeat.timeout"));

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["cluster.registration.initial-timeout=1min".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("initial above max");
        assert_eq!(err.key(), Some("cluster.registration.initial-timeout"));

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec!["rpc.max-frame-size=100".into()],
            ..ConfigSources::isolated()
        })
        .expect_err("tiny frames");
        assert_eq!(err.key(), Some("rpc.max-frame-size"));
    }

    #[test]
    fn missing_files_explicit_is_error_default_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("rill.toml");
        let err = load::<RuntimeConfig>(&ConfigSources {
            file: Some(missing.clone()),
            ..ConfigSources::isolated()
        })
        .expect_err("explicit file missing");
        assert_eq!(
            err,
            ConfigError::FileNotFound {
                path: missing.clone()
            }
        );

        let config: RuntimeConfig = load(&ConfigSources {
            default_file: Some(missing),
            ..ConfigSources::isolated()
        })
        .expect("missing default file is fine");
        assert_eq!(config, RuntimeConfig::default());
    }

    #[test]
    fn toml_syntax_error_is_malformed() {
        let file = toml_file("[heartbeat\n");
        let err = load::<RuntimeConfig>(&ConfigSources {
            file: Some(file.path().to_path_buf()),
            ..ConfigSources::isolated()
        })
        .expect_err("syntax error");
        assert!(matches!(err, ConfigError::Malformed { .. }), "{err}");
    }

    #[test]
    fn durations_and_sizes_parse_as_written() {
        for (text, expected) in [
            ("1s", Duration::from_secs(1)),
            ("100ms", Duration::from_millis(100)),
            ("5 s", Duration::from_secs(5)),
            ("1min 30s", Duration::from_secs(90)),
            ("2500", Duration::from_millis(2500)),
        ] {
            let config: RuntimeConfig = load(&ConfigSources {
                overrides: vec![
                    "heartbeat.timeout=1h".into(),
                    format!("heartbeat.interval={text}"),
                ],
                ..ConfigSources::isolated()
            })
            .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(config.heartbeat.interval, expected, "{text}");
        }
        assert_eq!(bytes::parse("10mb"), Ok(10 << 20));
        assert_eq!(bytes::parse("64 KiB"), Ok(64 << 10));
        assert_eq!(bytes::parse("1g"), Ok(1 << 30));
        assert_eq!(bytes::parse("512"), Ok(512));
        assert!(bytes::parse("mb").is_err());
        assert!(bytes::parse("3 furlongs").is_err());
    }

    #[test]
    fn env_matches_camel_case_keys() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct TaskManager {
            #[serde(rename = "numberOfTaskSlots")]
            slots: u32,
        }
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Cli {
            taskmanager: TaskManager,
        }
        impl Validate for Cli {
            fn validate(&self) -> Result<(), ConfigError> {
                Ok(())
            }
        }
        let cli: Cli = load(&ConfigSources {
            env: env(&[("RILL_TASKMANAGER__NUMBER_OF_TASK_SLOTS", "4")]),
            ..ConfigSources::isolated()
        })
        .expect("camelCase via env");
        assert_eq!(cli.taskmanager.slots, 4);
    }

    #[test]
    fn secrets_are_redacted_and_exclusive() {
        let config: RuntimeConfig = load(&ConfigSources {
            env: env(&[("RILL_SECURITY__CLUSTER_SECRET", "hunter2-s3cret")]),
            ..ConfigSources::isolated()
        })
        .expect("secret from env");
        assert_eq!(
            config.security.cluster_secret.as_deref(),
            Some("hunter2-s3cret")
        );
        assert!(!format!("{config:?}").contains("hunter2"));

        let err = load::<RuntimeConfig>(&ConfigSources {
            overrides: vec![
                "security.cluster-secret=hunter2-s3cret".into(),
                "security.cluster-secret-file=/etc/rill/secret".into(),
            ],
            ..ConfigSources::isolated()
        })
        .expect_err("both set");
        assert_eq!(err.key(), Some("security.cluster-secret"));
        assert!(!err.to_string().contains("hunter2"));

        let err = load::<RuntimeConfig>(&ConfigSources {
            env: env(&[("RILL_SECURITY__CLUSTER_SECRET", "0123")]),
            ..ConfigSources::isolated()
        })
        .expect_err("unquoted numeric secret");
        assert_eq!(err.key(), Some("security.cluster-secret"));
        assert!(!err.to_string().contains("123"), "{err}");
        let config: RuntimeConfig = load(&ConfigSources {
            env: env(&[("RILL_SECURITY__CLUSTER_SECRET", "\"0123\"")]),
            ..ConfigSources::isolated()
        })
        .expect("quoted numeric secret");
        assert_eq!(config.security.cluster_secret.as_deref(), Some("0123"));
    }
}
