//! Injected time.
//!
//! Protocol state machines (heartbeat monitors, registration backoff, …) never read the
//! wall clock themselves: they take `now: Instant` as an argument, and whoever drives them
//! reads it from a [`Clock`]. Production code uses [`SystemClock`]; tests use
//! [`ManualClock`], which moves only when told to, or [`TokioClock`], which follows tokio's
//! clock and therefore stands still under `tokio::time::pause()` and jumps with
//! `tokio::time::advance` (or tokio's auto-advance of paused time).
//!
//! All clocks are monotonic [`Instant`]s; nothing here deals in calendar time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A source of monotonic time.
pub trait Clock: Send + Sync {
    /// Returns the current instant.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// The operating system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// tokio's clock: the OS clock normally, virtual time when tokio's time is paused.
///
/// Use it where a state machine is driven by a tokio task that sleeps on `tokio::time`,
/// so that the instants it passes in and the timers it waits on agree.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when [`advance`](ManualClock::advance)d.
///
/// Clones share the same time, so a test can hold one handle and give another to the
/// code under test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// Creates a clock standing at `start`.
    pub fn starting_at(start: Instant) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Creates a clock standing at the current OS instant (an arbitrary origin).
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// Moves the clock forward by `by`, for every clone.
    pub fn advance(&self, by: Duration) {
        *self.now.lock() += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_millis(250));
        assert_eq!(clock.now() - start, Duration::from_millis(250));
        let shared: Arc<dyn Clock> = Arc::new(clock);
        assert_eq!(shared.now() - start, Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = TokioClock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(TokioClock.now() - start, Duration::from_secs(3));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now();
        assert!(SystemClock.now() >= a);
    }
}
