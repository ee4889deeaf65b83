//! The collect hook: how a collect sink's results reach the job's client.
//!
//! A collect sink (`rill.sink.collect`, configured with an `id`) does not know where its
//! client is. The runtime that runs the task puts a [`CollectSink`] into every
//! [`OperatorContext`](crate::operator::OperatorContext); the sink hands it batches of
//! values and, at end of input, calls `finish`. A TaskExecutor forwards them to the
//! JobMaster and on to the client; [`CollectBuffer`] keeps them in memory (local
//! executor, tests). Values of one subtask arrive in order; subtasks interleave.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::Result;
use crate::value::Value;

/// Receives the output of collect sinks.
pub trait CollectSink: Send + Sync {
    /// Values produced by subtask `subtask_index` of collect sink `id`.
    fn collect(&self, id: &str, subtask_index: u32, values: Vec<Value>) -> Result<()>;

    /// Subtask `subtask_index` of collect sink `id` reached end of input.
    fn finish(&self, _id: &str, _subtask_index: u32) -> Result<()> {
        Ok(())
    }
}

/// A [`CollectSink`] that keeps everything in memory, per collect id.
#[derive(Debug, Default)]
pub struct CollectBuffer {
    values: Mutex<BTreeMap<String, Vec<Value>>>,
}

impl CollectBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes everything collected so far.
    pub fn take(&self) -> BTreeMap<String, Vec<Value>> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Value>>> {
        // A panic while holding this lock can only come from an allocation failure in
        // `extend`; the map is still consistent, so a poisoned lock is safe to reuse.
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CollectSink for CollectBuffer {
    fn collect(&self, id: &str, _subtask_index: u32, values: Vec<Value>) -> Result<()> {
        self.lock().entry(id.to_owned()).or_default().extend(values);
        Ok(())
    }
}
