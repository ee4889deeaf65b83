//! Identifiers shared by the control plane.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one process-level resource: a TaskExecutor, a JobManager, a heartbeat peer.
///
/// Stable for the life of the process; a restarted process gets a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceId(pub String);

impl ResourceId {
    /// Creates a resource id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        ResourceId(id.into())
    }

    /// Generates a fresh random id with the given prefix, e.g. `taskexecutor-3f2a…`.
    pub fn generate(prefix: &str, rng: &mut impl rand::Rng) -> Self {
        ResourceId(format!("{prefix}-{:016x}", rng.gen::<u64>()))
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
