//! The task mailbox: actions for a task's thread, run between batches.
//!
//! A task's state is touched only by its own thread; anyone else (the TaskExecutor,
//! later the checkpoint coordinator and timer service) *sends mail*. The
//! task checks [`Mailbox::has_mail`] — one atomic load — after every batch and runs all
//! pending mails then, so a mail waits at most one batch.
//!
//! A task can also be blocked where it can't check: waiting for input, or a source
//! waiting out a rate limit. For the first, the task installs its input's waker
//! ([`Mailbox::set_waker`]); [`MailboxSender::send`] calls it, and the input's blocking
//! poll returns `MailboxWake`. For the second, [`Mailbox::wait`] sleeps on the mailbox's
//! condition variable, which every send signals.
//!
//! Closing the mailbox (when the task ends) makes later sends fail with
//! [`MailboxClosed`], which gives the mail back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::checkpoint::CheckpointBarrier;

/// Something a task must do on its own thread.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mail {
    /// Stop processing as soon as possible; the task ends `Canceled`.
    Cancel,
    /// Flush every output now (for an external output flusher, Flink's
    /// `OutputFlusher`, driving `execution.buffer-timeout` from outside the task).
    FlushOutputs,
    /// Start checkpoint `barrier.id` here (a source, or a task whose input has ended):
    /// snapshot and forward the barrier.
    TriggerCheckpoint(CheckpointBarrier),
    /// Checkpoint `id` completed: operators get `notify_checkpoint_complete(id)` (their
    /// backends rebase incremental snapshots on it, sinks commit). `last`: it was taken
    /// after every task of the job had ended its input, so a task waiting for its final
    /// checkpoint finishes.
    CheckpointComplete {
        /// Checkpoint id.
        id: u64,
        /// The job's final checkpoint.
        last: bool,
    },
    /// Stop-with-savepoint at a source: stop reading; with `drain`, emit the final
    /// watermark and let every operator flush (`end_input`), without, end the stream
    /// without flushing (see [`CheckpointEvent::EndOfData`](crate::checkpoint::CheckpointEvent::EndOfData)).
    /// The task then waits for the savepoint like any task whose input ended.
    StopSource {
        /// Whether the stop drains the pipeline.
        drain: bool,
    },
    /// Checkpoint `n` was aborted: operators get `notify_checkpoint_aborted(n)`.
    CheckpointAborted(u64),
}

/// Wakes a task blocked on its input (see [`TaskInput::waker`](crate::task_io::TaskInput::waker)).
pub type InputWaker = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    mails: VecDeque<Mail>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    pending: AtomicBool,
    signal: Condvar,
    waker: Mutex<Option<InputWaker>>,
}

/// A send to a closed mailbox; carries the mail back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the task's mailbox is closed (the task has ended)")]
pub struct MailboxClosed(pub Mail);

/// The receiving side, owned by the task.
pub struct Mailbox {
    shared: Arc<Shared>,
}

/// The sending side; cheap to clone and share.
#[derive(Clone)]
pub struct MailboxSender {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks (push/pop/flag), so poison is harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    /// An empty, open mailbox.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                pending: AtomicBool::new(false),
                signal: Condvar::new(),
                waker: Mutex::new(None),
            }),
        }
    }

    /// A sender for this mailbox.
    pub fn sender(&self) -> MailboxSender {
        MailboxSender {
            shared: self.shared.clone(),
        }
    }

    /// Installs the function that wakes the task's blocked input on every send.
    pub fn set_waker(&self, waker: InputWaker) {
        *lock(&self.shared.waker) = Some(waker);
    }

    /// Whether mail is pending (one atomic load; for the hot loop).
    #[inline]
    pub fn has_mail(&self) -> bool {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Takes the oldest pending mail.
    pub fn try_take(&self) -> Option<Mail> {
        let mut s = lock(&self.shared.state);
        let m = s.mails.pop_front();
        if s.mails.is_empty() {
            self.shared.pending.store(false, Ordering::Release);
        }
        m
    }

    /// Blocks until mail is pending or `timeout` passed; returns whether mail is pending.
    pub fn wait(&self, timeout: Duration) -> bool {
        let s = lock(&self.shared.state);
        if !s.mails.is_empty() || timeout.is_zero() {
            return !s.mails.is_empty();
        }
        let (s, _) = self
            .shared
            .signal
            .wait_timeout_while(s, timeout, |s| s.mails.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        !s.mails.is_empty()
    }

    /// Rejects all later sends and drops pending mail.
    pub fn close(&self) {
        let mut s = lock(&self.shared.state);
        s.closed = true;
        s.mails.clear();
        self.shared.pending.store(false, Ordering::Release);
        *lock(&self.shared.waker) = None;
    }
}

impl MailboxSender {
    /// Queues `mail` and wakes the task; fails with the mail if the task has ended.
    pub fn send(&self, mail: Mail) -> Result<(), MailboxClosed> {
        {
            let mut s = lock(&self.shared.state);
            if s.closed {
                return Err(MailboxClosed(mail));
            }
            s.mails.push_back(mail);
            self.shared.pending.store(true, Ordering::Release);
        }
        self.shared.signal.notify_all();
        let waker = lock(&self.shared.waker).clone();
        if let Some(w) = waker {
            w();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn send_sets_flag_wakes_input_and_closed_returns_mail() {
        let mb = Mailbox::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        mb.set_waker(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(!mb.has_mail());
        mb.sender().send(Mail::Cancel).unwrap();
        assert!(mb.has_mail());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(mb.wait(Duration::from_secs(10)));
        assert_eq!(mb.try_take(), Some(Mail::Cancel));
        assert!(!mb.has_mail());
        mb.close();
        assert_eq!(
            mb.sender().send(Mail::Cancel),
            Err(MailboxClosed(Mail::Cancel))
        );
    }

    #[test]
    fn wait_returns_when_mail_arrives_from_another_thread() {
        let mb = Mailbox::new();
        let tx = mb.sender();
        let t = std::thread::spawn(move || tx.send(Mail::Cancel));
        // Without the send this would block for an hour; the test finishing is the check.
        assert!(mb.wait(Duration::from_secs(3600)));
        t.join().unwrap().unwrap();
    }
}
