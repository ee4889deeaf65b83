//! Registering at a leader with backoff, modelled on Flink's `RetryingRegistration`.
//!
//! A TaskExecutor registers at the ResourceManager, a JobMaster at the ResourceManager,
//! and so on; the leader may not be up yet, may be overloaded, or may refuse. Each
//! attempt gets a timeout, and what happens next depends on how the attempt ended
//! (`cluster.registration.*`, see [`RegistrationConfig`]):
//!
//! | outcome     | next attempt starts                  | its timeout                      |
//! |-------------|--------------------------------------|----------------------------------|
//! | success     | never: the loop ends                 | —                                |
//! | timeout     | at once                              | doubled, capped at `max-timeout` |
//! | unreachable | after a pause (below)                | back to `initial-timeout`        |
//! | error       | after `error-delay`                  | back to `initial-timeout`        |
//! | refused     | after `refused-registration-delay`   | back to `initial-timeout`        |
//!
//! With the defaults the timeouts run 100 ms, 200 ms, 400 ms, … 25.6 s, 30 s, 30 s, …
//!
//! *Unreachable* means the leader could not be reached at all: the connection could not
//! be dialled or its host name did not resolve ([`RpcError::Unreachable`],
//! [`RpcError::Resolve`]), so nothing was sent. That is what a restarting leader looks
//! like, and waiting `error-delay` (Flink's reaction) would make a TaskManager rejoin up
//! to 10 s after the leader is back. Instead the pause starts at `initial-timeout` and
//! doubles with each consecutive unreachable attempt up to `max-unreachable-delay` (1 s);
//! any other outcome resets it. A dial to a silent address fails only after
//! `rpc.connect-timeout`, so these attempts cost one dial every few seconds.
//!
//! [`RegistrationBackoff`] is that table as a state machine with time passed in.
//! [`RetryingRegistration::run`] drives it on `tokio::time` (so paused time drives it in
//! tests): it calls the attempt closure with the attempt's timeout, enforces the
//! timeout itself too, sleeps between attempts, logs every retry, and returns the first
//! success. To cancel a registration, drop the future (select it against a shutdown
//! signal, or abort the task running it); an attempt in flight is dropped with it.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::clock::{Clock, TokioClock};
use crate::config::RegistrationConfig;
use crate::error::RpcError;

/// How one registration attempt ended, as returned by the attempt closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationAttempt<S, R> {
    /// The leader accepted the registration; `S` is what it answered.
    Success(S),
    /// The leader answered but declined; `R` says why.
    Refused(R),
    /// The attempt failed, e.g. the leader could not be reached.
    Error(RpcError),
    /// The attempt did not finish within its timeout.
    Timeout,
}

/// A failed attempt, as far as backoff is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No answer within the attempt's timeout.
    Timeout,
    /// The leader could not be reached; nothing was sent.
    Unreachable,
    /// The attempt failed.
    Error,
    /// The leader declined.
    Refused,
}

/// When and how to make the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// The pause before it.
    pub delay: Duration,
    /// When it starts (`now + delay`).
    pub start_at: Instant,
    /// Its timeout.
    pub timeout: Duration,
}

/// Flink's registration backoff, without I/O (see the module docs).
#[derive(Debug, Clone)]
pub struct RegistrationBackoff {
    config: RegistrationConfig,
    timeout: Duration,
    /// The pause after the next unreachable attempt.
    unreachable_delay: Duration,
    attempts: u32,
}

impl RegistrationBackoff {
    /// Creates the backoff for a new registration; the first attempt's timeout is
    /// `initial-timeout`.
    pub fn new(config: &RegistrationConfig) -> Self {
        RegistrationBackoff {
            config: config.clone(),
            timeout: config.initial_timeout,
            unreachable_delay: config.initial_timeout.min(config.max_unreachable_delay),
            attempts: 0,
        }
    }

    /// Returns the timeout of the next attempt.
    pub fn attempt_timeout(&self) -> Duration {
        self.timeout
    }

    /// Returns how many attempts have failed so far.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// Records that the last attempt failed at `now`; returns when and how to try again.
    pub fn on_failure(&mut self, failure: AttemptFailure, now: Instant) -> NextAttempt {
        self.attempts = self.attempts.saturating_add(1);
        let first_unreachable_delay = self
            .config
            .initial_timeout
            .min(self.config.max_unreachable_delay);
        if failure != AttemptFailure::Unreachable {
            self.unreachable_delay = first_unreachable_delay;
        }
        let delay = match failure {
            AttemptFailure::Timeout => {
                self.timeout = self.timeout.saturating_mul(2).min(self.config.max_timeout);
                Duration::ZERO
            }
            AttemptFailure::Unreachable => {
                self.timeout = self.config.initial_timeout;
                let delay = self.unreachable_delay;
                self.unreachable_delay = delay
                    .saturating_mul(2)
                    .min(self.config.max_unreachable_delay);
                delay
            }
            AttemptFailure::Error => {
                self.timeout = self.config.initial_timeout;
                self.config.error_delay
            }
            AttemptFailure::Refused => {
                self.timeout = self.config.initial_timeout;
                self.config.refused_registration_delay
            }
        };
        NextAttempt {
            delay,
            start_at: now + delay,
            timeout: self.timeout,
        }
    }
}

/// Registers at a leader, retrying with backoff until it succeeds.
#[derive(Debug, Clone)]
pub struct RetryingRegistration {
    target_name: String,
    config: RegistrationConfig,
}

impl RetryingRegistration {
    /// Creates a registration at `target_name` (used in logs, e.g. the leader's address).
    pub fn new(target_name: impl Into<String>, config: &RegistrationConfig) -> Self {
        RetryingRegistration {
            target_name: target_name.into(),
            config: config.clone(),
        }
    }

    /// Calls `attempt(timeout)` until an attempt succeeds and returns its success.
    ///
    /// An attempt still running after `timeout` is dropped and counts as timed out.
    /// Drop the returned future to cancel.
    pub async fn run<S, R, F, Fut>(&self, mut attempt: F) -> S
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = RegistrationAttempt<S, R>>,
        R: fmt::Debug,
    {
        let mut backoff = RegistrationBackoff::new(&self.config);
        loop {
            let timeout = backoff.attempt_timeout();
            let number = backoff.failed_attempts() + 1;
            let result = tokio::time::timeout(timeout, attempt(timeout))
                .await
                .unwrap_or(RegistrationAttempt::Timeout);
            let (failure, reason) = match result {
                RegistrationAttempt::Success(success) => {
                    tracing::info!(
                        registration_target = %self.target_name,
                        attempt = number,
                        "registration succeeded"
                    );
                    return success;
                }
                RegistrationAttempt::Timeout => (
                    AttemptFailure::Timeout,
                    format!("no answer within {timeout:?}"),
                ),
                RegistrationAttempt::Error(
                    error @ (RpcError::Unreachable { .. } | RpcError::Resolve(_)),
                ) => (AttemptFailure::Unreachable, error.to_string()),
                RegistrationAttempt::Error(error) => (AttemptFailure::Error, error.to_string()),
                RegistrationAttempt::Refused(reason) => {
                    (AttemptFailure::Refused, format!("{reason:?}"))
                }
            };
            let next = backoff.on_failure(failure, TokioClock.now());
            tracing::info!(
                registration_target = %self.target_name,
                attempt = number,
                outcome = ?failure,
                %reason,
                retry_in = ?next.delay,
                next_timeout = ?next.timeout,
                "registration attempt failed; retrying"
            );
            tokio::time::sleep_until(next.start_at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::{BoxFuture, FutureExt};
    use parking_lot::Mutex;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    type Attempt = RegistrationAttempt<&'static str, &'static str>;
    /// Start (since the test began) and timeout of each attempt.
    type AttemptLog = Arc<Mutex<Vec<(Duration, Duration)>>>;

    /// Runs a registration whose attempts follow `script` (then never answer), recording
    /// each attempt's virtual start time (relative to the start) and timeout.
    fn scripted(
        script: Vec<Attempt>,
    ) -> (
        impl FnMut(Duration) -> BoxFuture<'static, Attempt>,
        AttemptLog,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let mut script = script.into_iter();
        let seen = log.clone();
        let attempt = move |timeout| {
            seen.lock().push((start.elapsed(), timeout));
            match script.next() {
                Some(RegistrationAttempt::Timeout) | None => futures::future::pending().boxed(),
                Some(outcome) => futures::future::ready(outcome).boxed(),
            }
        };
        (attempt, log)
    }

    #[test]
    fn backoff_doubles_timeouts_up_to_the_cap_and_resets_after_errors() {
        let config = RegistrationConfig::default();
        let now = Instant::now();
        let mut backoff = RegistrationBackoff::new(&config);
        let mut timeouts = vec![backoff.attempt_timeout()];
        for _ in 0..11 {
            let next = backoff.on_failure(AttemptFailure::Timeout, now);
            assert_eq!((next.delay, next.start_at), (Duration::ZERO, now));
            timeouts.push(next.timeout);
        }
        let expected: Vec<Duration> = [
            100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000,
        ]
        .into_iter()
        .map(|ms| ms * MS)
        .collect();
        assert_eq!(timeouts, expected);

        let next = backoff.on_failure(AttemptFailure::Error, now);
        assert_eq!(next.delay, Duration::from_secs(10));
        assert_eq!(next.start_at, now + Duration::from_secs(10));
        assert_eq!(next.timeout, 100 * MS);
        backoff.on_failure(AttemptFailure::Timeout, now);
        let next = backoff.on_failure(AttemptFailure::Refused, now);
        assert_eq!(
            (next.delay, next.timeout),
            (Duration::from_secs(30), 100 * MS)
        );
        assert_eq!(backoff.failed_attempts(), 14);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_attempts_retry_at_once_with_doubling_timeouts() {
        let mut script: Vec<Attempt> = vec![RegistrationAttempt::Timeout; 11];
        script.push(RegistrationAttempt::Success("registered"));
        let (attempt, log) = scripted(script);
        let registration = RetryingRegistration::new("rm", &RegistrationConfig::default());
        assert_eq!(registration.run(attempt).await, "registered");

        let timeouts_ms = [
            100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000,
        ];
        let mut start = Duration::ZERO;
        let mut expected = Vec::new();
        for ms in timeouts_ms {
            expected.push((start, ms * MS));
            start += ms * MS;
        }
        assert_eq!(*log.lock(), expected);
    }

    #[test]
    fn unreachable_leaders_are_retried_after_a_short_doubling_pause() {
        let config = RegistrationConfig::default();
        let now = Instant::now();
        let mut backoff = RegistrationBackoff::new(&config);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let next = backoff.on_failure(AttemptFailure::Unreachable, now);
            assert_eq!(next.timeout, 100 * MS);
            pauses.push(next.delay);
        }
        let expected: Vec<Duration> = [100, 200, 400, 800, 1000, 1000]
            .into_iter()
            .map(|ms| ms * MS)
            .collect();
        assert_eq!(pauses, expected);
        // A timed-out attempt (the dial was dropped) restarts the pause from the bottom.
        assert_eq!(
            backoff.on_failure(AttemptFailure::Timeout, now).timeout,
            200 * MS
        );
        let next = backoff.on_failure(AttemptFailure::Unreachable, now);
        assert_eq!((next.delay, next.timeout), (100 * MS, 100 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_be_reached_is_retried_without_the_error_delay() {
        let unreachable = || {
            RegistrationAttempt::Error(RpcError::Unreachable {
                address: "rill://rm".into(),
                reason: "connect timed out".into(),
            })
        };
        let unresolvable =
            RegistrationAttempt::Error(RpcError::Resolve(crate::address::ResolveError {
                host: "jobmanager".into(),
                reason: "no such host".into(),
            }));
        let (attempt, log) = scripted(vec![
            unreachable(),
            unresolvable,
            unreachable(),
            RegistrationAttempt::Success("registered"),
        ]);
        let registration = RetryingRegistration::new("rm", &RegistrationConfig::default());
        assert_eq!(registration.run(attempt).await, "registered");
        assert_eq!(
            *log.lock(),
            vec![
                (Duration::ZERO, 100 * MS),
                (100 * MS, 100 * MS),
                (300 * MS, 100 * MS),
                (700 * MS, 100 * MS),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_refusals_wait_then_restart_from_the_initial_timeout() {
        let (attempt, log) = scripted(vec![
            RegistrationAttempt::Error(RpcError::Remote {
                endpoint: "rm".into(),
                method: "register".into(),
                message: "boom".into(),
            }),
            RegistrationAttempt::Timeout,
            RegistrationAttempt::Refused("unknown job"),
            RegistrationAttempt::Success("registered"),
            RegistrationAttempt::Success("not reached"),
        ]);
        let registration = RetryingRegistration::new("rm", &RegistrationConfig::default());
        assert_eq!(registration.run(attempt).await, "registered");
        let secs = Duration::from_secs;
        assert_eq!(
            *log.lock(),
            vec![
                (Duration::ZERO, 100 * MS),
                (secs(10), 100 * MS),            // 10 s after the error
                (secs(10) + 100 * MS, 200 * MS), // at once after the timeout
                (secs(40) + 100 * MS, 100 * MS), // 30 s after the refusal
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_future_cancels_the_registration() {
        let (attempt, log) = scripted(Vec::new());
        let registration = RetryingRegistration::new("rm", &RegistrationConfig::default());
        let cancelled = tokio::time::timeout(350 * MS, registration.run(attempt)).await;
        assert!(cancelled.is_err());
        let attempts = log.lock().len();
        assert_eq!(attempts, 3, "attempts at 0, 100 and 300 ms");
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(log.lock().len(), attempts, "no attempt after cancellation");
    }
}
