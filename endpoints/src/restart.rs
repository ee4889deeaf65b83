//! Restart strategies (Flink's `RestartBackoffTimeStrategy`), as pure state machines with
//! time passed in.
//!
//! After each failure the JobMaster calls [`RestartStrategy::on_failure`] with the current
//! time; the answer is either the delay before restarting or `None` (fail the job).
//!
//! Which strategy a job gets is decided once, at [`RestartStrategy::new`], by Flink's rule
//! ([`RestartStrategyConfig::effective_kind`]): the configured `restart-strategy.type`,
//! else `exponential-delay` with checkpointing and `none` without.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{RestartStrategyConfig, RestartStrategyType};

/// A restart strategy's state.
#[derive(Debug, Clone)]
pub struct RestartStrategy {
    config: RestartStrategyConfig,
    /// The strategy in force.
    kind: RestartStrategyType,
    /// Restarts granted (fixed-delay, exponential-delay).
    restarts: u32,
    /// Failure times within the current window (failure-rate).
    failures: VecDeque<Instant>,
    /// Exponential-delay: the delay granted last, and when the last failure happened.
    last_backoff: Option<Duration>,
    last_failure: Option<Instant>,
    /// Jitter source: a xorshift state seeded by the caller, so tests are deterministic.
    rng: u64,
}

impl RestartStrategy {
    /// A fresh strategy for a job with (`checkpointing`) or without periodic checkpoints;
    /// `seed` drives exponential-delay's jitter.
    pub fn new(config: &RestartStrategyConfig, checkpointing: bool, seed: u64) -> Self {
        RestartStrategy {
            kind: config.effective_kind(checkpointing),
            config: config.clone(),
            restarts: 0,
            failures: VecDeque::new(),
            last_backoff: None,
            last_failure: None,
            rng: seed | 1,
        }
    }

    /// The strategy in force.
    pub fn kind(&self) -> RestartStrategyType {
        self.kind
    }

    /// Short description for logs and failure messages.
    pub fn describe(&self) -> String {
        let c = &self.config;
        match self.kind {
            RestartStrategyType::None if c.kind.is_none() => {
                "restart-strategy none, the default without checkpointing \
                 (set restart-strategy.type to restart failed jobs)"
                    .into()
            }
            RestartStrategyType::None => "restart-strategy none".into(),
            RestartStrategyType::FixedDelay => format!(
                "restart-strategy fixed-delay (attempts={}, delay={:?})",
                c.fixed_delay.attempts, c.fixed_delay.delay
            ),
            RestartStrategyType::FailureRate => format!(
                "restart-strategy failure-rate (max-failures-per-interval={}, failure-rate-interval={:?})",
                c.failure_rate.max_failures_per_interval, c.failure_rate.failure_rate_interval
            ),
            RestartStrategyType::ExponentialDelay => format!(
                "restart-strategy exponential-delay (initial-backoff={:?}, max-backoff={:?})",
                c.exponential_delay.initial_backoff, c.exponential_delay.max_backoff
            ),
        }
    }

    /// Records a failure at `now`; returns the delay before restarting, or `None` when
    /// the job must fail.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let c = &self.config;
        match self.kind {
            RestartStrategyType::None => None,
            RestartStrategyType::FixedDelay => {
                if self.restarts >= c.fixed_delay.attempts {
                    return None;
                }
                self.restarts += 1;
                Some(c.fixed_delay.delay)
            }
            RestartStrategyType::FailureRate => {
                let window = c.failure_rate.failure_rate_interval;
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= window)
                {
                    self.failures.pop_front();
                }
                self.failures.push_back(now);
                if self.failures.len() as u64 > u64::from(c.failure_rate.max_failures_per_interval)
                {
                    return None;
                }
                Some(c.failure_rate.delay)
            }
            RestartStrategyType::ExponentialDelay => {
                let e = c.exponential_delay.clone();
                let reset = self
                    .last_failure
                    .is_some_and(|t| now.duration_since(t) >= e.reset_backoff_threshold);
                if reset {
                    self.last_backoff = None;
                    self.restarts = 0;
                }
                if e.attempts_before_reset_backoff
                    .is_some_and(|max| self.restarts >= max)
                {
                    return None;
                }
                self.last_failure = Some(now);
                self.restarts += 1;
                let base = match self.last_backoff {
                    None => e.initial_backoff,
                    Some(prev) => prev.mul_f64(e.backoff_multiplier).min(e.max_backoff),
                };
                self.last_backoff = Some(base);
                let jitter = base.as_secs_f64() * e.jitter_factor * (self.next_unit() * 2.0 - 1.0);
                let delay = (base.as_secs_f64() + jitter).max(0.0);
                Some(Duration::from_secs_f64(delay).min(e.max_backoff))
            }
        }
    }

    /// A uniform number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: RestartStrategyType) -> RestartStrategyConfig {
        RestartStrategyConfig {
            kind: Some(kind),
            ..RestartStrategyConfig::default()
        }
    }

    #[test]
    fn none_never_restarts() {
        let mut s = RestartStrategy::new(&config(RestartStrategyType::None), true, 1);
        assert_eq!(s.on_failure(Instant::now()), None);
    }

    #[test]
    fn unconfigured_strategy_follows_checkpointing() {
        let unset = RestartStrategyConfig::default();
        let mut off = RestartStrategy::new(&unset, false, 1);
        assert_eq!(off.kind(), RestartStrategyType::None);
        assert_eq!(off.on_failure(Instant::now()), None);
        assert!(
            off.describe().contains("default without checkpointing"),
            "{}",
            off.describe()
        );
        let mut on = RestartStrategy::new(&unset, true, 1);
        assert_eq!(on.kind(), RestartStrategyType::ExponentialDelay);
        assert!(on.on_failure(Instant::now()).is_some());
        // A configured strategy applies whether or not checkpointing is on.
        let fixed = config(RestartStrategyType::FixedDelay);
        for checkpointing in [false, true] {
            let mut s = RestartStrategy::new(&fixed, checkpointing, 1);
            assert_eq!(s.kind(), RestartStrategyType::FixedDelay);
            assert_eq!(s.on_failure(Instant::now()), Some(Duration::from_secs(1)));
            assert_eq!(
                s.on_failure(Instant::now()),
                None,
                "Flink's default: 1 attempt"
            );
        }
    }

    #[test]
    fn fixed_delay_grants_attempts_then_fails() {
        let mut c = config(RestartStrategyType::FixedDelay);
        c.fixed_delay.attempts = 2;
        c.fixed_delay.delay = Duration::from_millis(300);
        let mut s = RestartStrategy::new(&c, false, 1);
        let now = Instant::now();
        assert_eq!(s.on_failure(now), Some(Duration::from_millis(300)));
        assert_eq!(s.on_failure(now), Some(Duration::from_millis(300)));
        assert_eq!(s.on_failure(now), None);
    }

    #[test]
    fn failure_rate_counts_failures_within_the_window() {
        let mut c = config(RestartStrategyType::FailureRate);
        c.failure_rate.max_failures_per_interval = 2;
        c.failure_rate.failure_rate_interval = Duration::from_secs(10);
        let mut s = RestartStrategy::new(&c, false, 1);
        let t0 = Instant::now();
        assert!(s.on_failure(t0).is_some());
        assert!(s.on_failure(t0 + Duration::from_secs(1)).is_some());
        // Third failure within 10 s: too many.
        assert!(s.clone().on_failure(t0 + Duration::from_secs(2)).is_none());
        // After the first one left the window, a third is fine.
        assert!(s.on_failure(t0 + Duration::from_secs(10)).is_some());
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets() {
        let mut c = config(RestartStrategyType::ExponentialDelay);
        c.exponential_delay.jitter_factor = 0.0;
        c.exponential_delay.initial_backoff = Duration::from_secs(1);
        c.exponential_delay.max_backoff = Duration::from_secs(3);
        c.exponential_delay.backoff_multiplier = 2.0;
        c.exponential_delay.reset_backoff_threshold = Duration::from_secs(60);
        let mut s = RestartStrategy::new(&c, false, 1);
        let t0 = Instant::now();
        let d: Vec<_> = (0..4)
            .map(|i| s.on_failure(t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(
            d,
            [1, 2, 3, 3].map(|x| Some(Duration::from_secs(x))).to_vec()
        );
        assert_eq!(
            s.on_failure(t0 + Duration::from_secs(200)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn exponential_delay_jitter_stays_within_the_factor_and_attempts_are_bounded() {
        let mut c = config(RestartStrategyType::ExponentialDelay);
        c.exponential_delay.attempts_before_reset_backoff = Some(3);
        let mut s = RestartStrategy::new(&c, false, 42);
        let now = Instant::now();
        let first = s.on_failure(now).unwrap();
        assert!(first >= Duration::from_millis(900) && first <= Duration::from_millis(1100));
        assert!(s.on_failure(now).is_some());
        assert!(s.on_failure(now).is_some());
        assert_eq!(s.on_failure(now), None);
    }
}
