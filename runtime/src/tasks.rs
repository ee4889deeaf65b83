//! Named tasks owned by something that stops them.
//!
//! Library code never spawns anonymous detached tasks: it spawns through a [`TaskSet`],
//! which names each task (a tracing span) and aborts whatever is still running when the
//! set is shut down or dropped.

use std::future::Future;

use parking_lot::Mutex;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// A group of tasks that live and die with their owner.
#[derive(Debug)]
pub struct TaskSet {
    runtime: tokio::runtime::Handle,
    handles: Mutex<Vec<AbortHandle>>,
}

impl TaskSet {
    /// Creates a set that spawns on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        TaskSet {
            runtime,
            handles: Mutex::new(Vec::new()),
        }
    }

    /// Spawns `future` as a task named `name`.
    pub fn spawn(&self, name: &'static str, future: impl Future<Output = ()> + Send + 'static) {
        let span = tracing::debug_span!("task", name);
        let handle = self.runtime.spawn(future.instrument(span));
        let mut handles = self.handles.lock();
        handles.retain(|h| !h.is_finished());
        handles.push(handle.abort_handle());
    }

    /// The runtime tasks are spawned on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Aborts every task still running.
    pub fn shutdown(&self) {
        for handle in self.handles.lock().drain(..) {
            handle.abort();
        }
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
