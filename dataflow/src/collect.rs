//! The collect hook: how a collect sink's results reach the job's client.
//!
//! A collect sink (`rill.sink.collect`, configured with an `id`) does not know where its
//! client is. The runtime that runs the task puts a [`CollectSink`] into every
//! [`OperatorContext`](crate::operator::OperatorContext); the sink hands it batches of
//! values and, at end of input, calls `finish`. A TaskExecutor forwards them to the
//! JobMaster and on to the client; [`CollectBuffer`] keeps them in memory (local
//! executor, tests). Values of one subtask arrive in order; subtasks interleave.
//!
//! Collected values are held in memory until the job ends, so whoever holds them bounds
//! them: the JobMaster fails a job whose results pass `collect.max-bytes`, measured with
//! [`encoded_size`] (the size of the values in an RPC message, which is how they reach
//! the JobMaster and the client).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::Result;
use crate::value::Value;

/// Bytes `values` take in an RPC message (their rmp-serde encoding, as the RPC layer
/// writes it), counted without building the encoding.
pub fn encoded_size(values: &[Value]) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and `Value` always serializes; were it ever to
    // fail, the bytes counted so far are still a lower bound.
    let _ = rmp_serde::encode::write(&mut counter, values);
    counter.0
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_size_is_the_rmp_serde_length() {
        let values = vec![
            Value::I64(7),
            Value::Str("a longer string value".into()),
            Value::Tuple(vec![Value::I64(1), Value::F64(2.5), Value::Null]),
        ];
        assert_eq!(
            encoded_size(&values),
            rmp_serde::to_vec(&values).unwrap().len()
        );
        assert!(encoded_size(&[Value::Bytes(vec![0; 1000])]) > 1000);
    }
}
