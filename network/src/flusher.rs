//! The output flusher: makes partly filled buffers visible at most
//! `execution.buffer-timeout` after a record was written.
//!
//! # Why a flag and not a flush from the flusher thread
//!
//! Flink's flusher thread flushes the partition directly, which works because Flink's
//! consumer may read a buffer *while* the writer is still appending to it (a shared
//! memory segment with an atomic write position). Without `unsafe`, a buffer being written
//! cannot be shared, so the writer owns its current buffers and the flusher only raises a
//! flag. The writer checks the flag (one relaxed load) on every record and flushes all
//! channels when it is set. A writer that has gone idle — waiting for its own input —
//! does not see the flag, so the flusher also calls a wake-up listener that the task
//! registers; the task's mailbox loop answers with
//! [`RecordWriter::flush_if_requested`](crate::record_writer::RecordWriter::flush_if_requested).
//!
//! The flusher is one named OS thread per writer, stopped and joined when the writer is
//! dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Called on every flusher tick, e.g. to post a "flush" mail to an idle task.
pub type FlushListener = Arc<dyn Fn() + Send + Sync>;

/// Periodically requests a flush from one writer.
pub struct OutputFlusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OutputFlusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFlusher").finish_non_exhaustive()
    }
}

impl OutputFlusher {
    /// Starts a thread named `name` that sets `flag` every `interval` and then calls
    /// `listener`.
    pub fn start(
        name: String,
        interval: Duration,
        flag: Arc<AtomicBool>,
        listener: Option<FlushListener>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let (lock, cond) = &*stop2;
            let mut stopped = lock.lock();
            while !*stopped {
                if cond.wait_for(&mut stopped, interval).timed_out() {
                    flag.store(true, Ordering::Relaxed);
                    if let Some(l) = &listener {
                        l();
                    }
                }
            }
        })?;
        Ok(OutputFlusher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for OutputFlusher {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
