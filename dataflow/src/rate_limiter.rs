//! A pure records-per-second rate limiter for sources.
//!
//! Time is passed in (`now`), so the limiter is tested without sleeping. It allows
//! `floor(elapsed × rate) + 1` records in total since the first call, i.e. no burst
//! beyond one record, and tells the caller how long to wait when the budget is spent.

use std::time::{Duration, Instant};

/// Limits emission to `rate` records per second on average.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate: f64,
    start: Option<Instant>,
    emitted: u64,
}

impl RateLimiter {
    /// A limiter for `rate` records per second (> 0).
    pub fn new(rate: f64) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            start: None,
            emitted: 0,
        }
    }

    /// How many of `want` records may be emitted at `now` (≥ 1), or how long to wait
    /// before at least one may. The caller must emit exactly the returned number.
    pub fn acquire(&mut self, want: usize, now: Instant) -> Result<usize, Duration> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        let budget = (elapsed * self.rate) as u64 + 1;
        let available = budget.saturating_sub(self.emitted);
        if available == 0 {
            let next_at = self.emitted as f64 / self.rate;
            return Err(Duration::from_secs_f64((next_at - elapsed).max(0.0))
                .max(Duration::from_micros(100)));
        }
        let n = available.min(want as u64);
        self.emitted += n;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_to_rate_with_virtual_time() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1000.0);
        assert_eq!(r.acquire(100, t0), Ok(1));
        let wait = r.acquire(100, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(1));
        assert_eq!(r.acquire(1000, t0 + Duration::from_millis(500)), Ok(500));
        assert_eq!(r.acquire(10_000, t0 + Duration::from_secs(2)), Ok(1500));
        let mut total = 2001;
        let mut t = t0 + Duration::from_secs(2);
        while t < t0 + Duration::from_secs(3) {
            match r.acquire(64, t) {
                Ok(n) => total += n,
                Err(wait) => t += wait,
            }
        }
        assert!((2990..=3010).contains(&total), "{total}");
    }
}
