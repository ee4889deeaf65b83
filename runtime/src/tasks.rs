//! Named tasks owned by something that stops them.
//!
//! Library code never spawns anonymous detached tasks: it spawns through a [`TaskSet`],
//! which names each task (a tracing span) and aborts whatever is still running when the
//! set is shut down or dropped.

use std::future::Future;

use parking_lot::Mutex;
use tokio::task::AbortHandle;
use tracing::Instrument;

const MIN_PRUNE: usize = 64;

/// A group of tasks that live and die with their owner.
#[derive(Debug)]
pub struct TaskSet {
    runtime: tokio::runtime::Handle,
    handles: Mutex<Handles>,
}

#[derive(Debug)]
struct Handles {
    live: Vec<AbortHandle>,
    /// Finished tasks are pruned when `live` reaches this length, which then becomes
    /// twice what survived: amortized O(1) per spawn, where pruning at every spawn cost
    /// O(n) (a data plane with 4,000 channels spawns 8,000 tasks).
    prune_at: usize,
}

impl TaskSet {
    /// Creates a set that spawns on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        TaskSet {
            runtime,
            handles: Mutex::new(Handles {
                live: Vec::new(),
                prune_at: MIN_PRUNE,
            }),
        }
    }

    /// Spawns `future` as a task named `name`.
    pub fn spawn(&self, name: &'static str, future: impl Future<Output = ()> + Send + 'static) {
        let span = tracing::debug_span!("task", name);
        let handle = self.runtime.spawn(future.instrument(span));
        let mut handles = self.handles.lock();
        if handles.live.len() >= handles.prune_at {
            handles.live.retain(|h| !h.is_finished());
            handles.prune_at = (2 * handles.live.len()).max(MIN_PRUNE);
        }
        handles.live.push(handle.abort_handle());
    }

    /// The runtime tasks are spawned on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Aborts every task still running.
    pub fn shutdown(&self) {
        for handle in self.handles.lock().live.drain(..) {
            handle.abort();
        }
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn finished_tasks_are_pruned_and_running_ones_aborted_on_shutdown() {
        let set = TaskSet::new(tokio::runtime::Handle::current());
        for _ in 0..1000 {
            set.spawn("short", async {});
            tokio::task::yield_now().await;
        }
        // Finished tasks do not pile up: pruning keeps the list within twice the survivors.
        assert!(
            set.handles.lock().live.len() <= MIN_PRUNE,
            "{}",
            set.handles.lock().live.len()
        );

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        set.spawn("forever", async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        set.shutdown();
        // The aborted task dropped its sender.
        assert!(rx.await.is_err());
    }
}
