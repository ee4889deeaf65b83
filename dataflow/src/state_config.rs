//! State configuration (`state.*`, Flink's keys): which keyed state backend operators
//! use, where checkpoints go and how the lsm backend works locally.
//!
//! A serde struct with defaults and [`StateConfig::validate`], passed by value in
//! [`TaskConfig`](crate::stream_task::TaskConfig) and embeddable in an endpoint's
//! configuration. Field names are Flink's configuration keys, so a Flink-style flat
//! key/value configuration deserializes directly:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `state.backend.type` | `heap` | `heap` (alias `hashmap`) or `lsm` (alias `rocksdb`) |
//! | `execution.checkpointing.incremental` | `true` for lsm | incremental lsm checkpoints (the heap backend always writes full snapshots) |
//! | `state.checkpoints.dir` | none | checkpoint storage URL, `file:///abs/path` |
//! | `state.checkpoints.num-retained` | `1` | completed checkpoints kept |
//! | `state.backend.lsm.localdir` (alias `state.backend.rocksdb.localdir`) | OS temp dir | lsm working directories |
//! | `state.backend.lsm.cache-entries` | `65536` | decoded entries the lsm backend caches per subtask |

use std::path::PathBuf;
use std::sync::Arc;

use rill_state::{BackendKind, CheckpointStorage, FsCheckpointStorage, StateError};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Key of [`StateConfig::backend`].
pub const BACKEND_TYPE_KEY: &str = "state.backend.type";
/// Key of [`StateConfig::incremental`].
pub const INCREMENTAL_KEY: &str = "execution.checkpointing.incremental";
/// Key of [`StateConfig::num_retained`].
pub const NUM_RETAINED_KEY: &str = "state.checkpoints.num-retained";
/// Key of [`StateConfig::local_dir`].
pub const LOCAL_DIR_KEY: &str = "state.backend.lsm.localdir";
/// Key of [`StateConfig::lsm_cache_entries`].
pub const LSM_CACHE_ENTRIES_KEY: &str = "state.backend.lsm.cache-entries";

/// Default of [`StateConfig::lsm_cache_entries`].
pub const DEFAULT_LSM_CACHE_ENTRIES: usize = 65_536;

/// The `state.*` settings of a task (see the module docs for keys and defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateConfig {
    /// The keyed state backend (`state.backend.type`).
    #[serde(rename = "state.backend.type", with = "backend_type")]
    pub backend: BackendKind,
    /// Incremental checkpoints (`execution.checkpointing.incremental`); `None` means the
    /// backend's default (true for lsm). See [`StateConfig::is_incremental`].
    #[serde(rename = "execution.checkpointing.incremental")]
    pub incremental: Option<bool>,
    /// Checkpoint storage URL (`state.checkpoints.dir`, `file:///abs/path`); without it
    /// nothing is snapshotted.
    #[serde(rename = "state.checkpoints.dir")]
    pub checkpoints_dir: Option<String>,
    /// Completed checkpoints to retain (`state.checkpoints.num-retained`, ≥ 1).
    #[serde(rename = "state.checkpoints.num-retained")]
    pub num_retained: u32,
    /// Where lsm backends keep their working files (`state.backend.lsm.localdir`,
    /// Flink's `state.backend.rocksdb.localdir`); `None` is the OS temp dir.
    #[serde(
        rename = "state.backend.lsm.localdir",
        alias = "state.backend.rocksdb.localdir"
    )]
    pub local_dir: Option<PathBuf>,
    /// Decoded entries an lsm backend caches per subtask (`state.backend.lsm.cache-entries`).
    #[serde(rename = "state.backend.lsm.cache-entries")]
    pub lsm_cache_entries: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Heap,
            incremental: None,
            checkpoints_dir: None,
            num_retained: 1,
            local_dir: None,
            lsm_cache_entries: DEFAULT_LSM_CACHE_ENTRIES,
        }
    }
}

impl StateConfig {
    /// Whether checkpoints are incremental: the explicit setting, else true for lsm.
    pub fn is_incremental(&self) -> bool {
        self.incremental.unwrap_or(self.backend == BackendKind::Lsm)
    }

    /// The lsm working directory: the configured one or the OS temp dir.
    pub fn local_dir(&self) -> PathBuf {
        self.local_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// The checkpoint storage of `state.checkpoints.dir`, if configured.
    pub fn checkpoint_storage(&self) -> Result<Option<Arc<dyn CheckpointStorage>>> {
        match &self.checkpoints_dir {
            None => Ok(None),
            Some(url) => Ok(Some(Arc::new(FsCheckpointStorage::from_url(url)?))),
        }
    }

    /// Checks every value; the error names the key
    /// ([`DataflowError::State`](crate::DataflowError::State) with
    /// [`StateError::Config`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: String| {
            Err(StateError::Config {
                key: key.into(),
                reason,
            }
            .into())
        };
        if self.num_retained == 0 {
            return bad(NUM_RETAINED_KEY, "must be at least 1".into());
        }
        if self.lsm_cache_entries == 0 {
            return bad(LSM_CACHE_ENTRIES_KEY, "must be at least 1".into());
        }
        if let Some(url) = &self.checkpoints_dir {
            FsCheckpointStorage::from_url(url)?;
        }
        if let Some(dir) = &self.local_dir {
            if !dir.is_absolute() {
                return bad(
                    LOCAL_DIR_KEY,
                    format!("`{}` is not an absolute path", dir.display()),
                );
            }
        }
        Ok(())
    }
}

/// `state.backend.type` as its canonical name, accepting Flink's aliases.
mod backend_type {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rill_state::storage::CHECKPOINTS_DIR_KEY;

    #[test]
    fn defaults_and_flink_aliases() {
        let c = StateConfig::default();
        assert_eq!(c.backend, BackendKind::Heap);
        assert!(!c.is_incremental());
        assert!(c.validate().is_ok());
        let c: StateConfig = serde_json::from_str(
            r#"{"state.backend.type": "rocksdb", "state.backend.rocksdb.localdir": "/var/tmp",
                "state.checkpoints.dir": "file:///tmp/chk"}"#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Lsm);
        assert!(c.is_incremental());
        assert_eq!(c.local_dir(), PathBuf::from("/var/tmp"));
        assert_eq!(c.num_retained, 1);
        assert!(c.validate().is_ok());
        assert!(c.checkpoint_storage().unwrap().is_some());
        let c: StateConfig = serde_json::from_str(
            r#"{"state.backend.type": "hashmap", "execution.checkpointing.incremental": true}"#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Heap);
        assert!(c.is_incremental());
        let back: StateConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn invalid_values_name_their_key() {
        assert!(serde_json::from_str::<StateConfig>(r#"{"state.backend.type": "mem"}"#).is_err());
        for (c, key) in [
            (
                StateConfig {
                    num_retained: 0,
                    ..StateConfig::default()
                },
                NUM_RETAINED_KEY,
            ),
            (
                StateConfig {
                    checkpoints_dir: Some("s3://bucket/x".into()),
                    ..StateConfig::default()
                },
                CHECKPOINTS_DIR_KEY,
            ),
            (
                StateConfig {
                    local_dir: Some("rel/dir".into()),
                    ..StateConfig::default()
                },
                LOCAL_DIR_KEY,
            ),
        ] {
            match c.validate() {
                Err(crate::DataflowError::State(StateError::Config { key: k, .. })) => {
                    assert_eq!(k, key)
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
