//! Per-task I/O metrics, named as in Flink: records/bytes in and out,
//! `backPressuredTimeMsPerSecond`, `idleTimeMsPerSecond`, `busyTimeMsPerSecond`, and the
//! pool usages (`outPoolUsage` = [`ResultPartition::pool`](crate::partition::ResultPartition::pool)
//! usage, `inPoolUsage`/exclusive/floating usage from
//! [`InputGate::pool_usage`](crate::input_gate::InputGate::pool_usage)).
//!
//! Counters are cumulative atomics. The writer and reader batch their updates (once per
//! buffer, not per record) so the hot path does no atomic read-modify-write per record.
//! Rates are computed from two [`IoSnapshot`]s, the time being passed in: the metric
//! reporter decides when to sample.
//!
//! The pool usages are read when sampled: the gate and the writers register their pools
//! with [`TaskIoMetrics::watch_input_pool`] / [`TaskIoMetrics::watch_output_pool`], weakly,
//! so the metrics never keep a pool alive after its owner drops it (a destroyed pool
//! counts no more).
//!
//! Busy time is what is neither idle (waiting for input) nor backpressured (waiting for an
//! output buffer), as in Flink. The backpressure level classifies the backpressured ratio:
//! `OK ≤ 0.10 < LOW ≤ 0.5 < HIGH`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::buffer_pool::LocalBufferPool;

/// Cumulative I/O counters of one task.
#[derive(Debug, Default)]
pub struct TaskIoMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    back_pressured_nanos: AtomicU64,
    idle_nanos: AtomicU64,
    /// `currentInputWatermark`: the watermark the task last derived from its inputs.
    input_watermark: AtomicI64,
    has_input_watermark: AtomicBool,
    /// The pools `inPoolUsage` and `outPoolUsage` are read from.
    pools: Mutex<WatchedPools>,
}

#[derive(Debug, Default)]
struct WatchedPools {
    input: Vec<Weak<LocalBufferPool>>,
    output: Vec<Weak<LocalBufferPool>>,
}

/// Buffers in use out of some pools' current sizes, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferUsage {
    /// Buffers handed out and not yet dropped.
    pub used: usize,
    /// The pools' entitlements.
    pub size: usize,
}

impl BufferUsage {
    fn of(pools: &[Weak<LocalBufferPool>]) -> BufferUsage {
        pools
            .iter()
            .filter_map(Weak::upgrade)
            .fold(BufferUsage::default(), |acc, p| {
                let (used, size) = p.occupancy();
                BufferUsage {
                    used: acc.used + used,
                    size: acc.size + size,
                }
            })
    }

    /// `used / size`, at most 1 (a pool shrunk below its outstanding buffers); 0 without
    /// pools.
    pub fn ratio(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            (self.used as f64 / self.size as f64).min(1.0)
        }
    }
}

impl TaskIoMetrics {
    /// Adds consumed records and bytes.
    pub fn add_in(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds produced records and bytes.
    pub fn add_out(&self, records: u64, bytes: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds time spent waiting for an output buffer.
    pub fn add_back_pressured(&self, d: Duration) {
        self.back_pressured_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds time spent waiting for input.
    pub fn add_idle(&self, d: Duration) {
        self.idle_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The task's input watermark advanced to `watermark` (Flink's
    /// `currentInputWatermark`: the minimum over its active input channels).
    pub fn set_input_watermark(&self, watermark: i64) {
        self.input_watermark.store(watermark, Ordering::Relaxed);
        self.has_input_watermark.store(true, Ordering::Release);
    }

    /// The task's input watermark, if one was set (sources and tasks before their first
    /// watermark have none).
    pub fn input_watermark(&self) -> Option<i64> {
        self.has_input_watermark
            .load(Ordering::Acquire)
            .then(|| self.input_watermark.load(Ordering::Relaxed))
    }

    /// Counts `pool` (the gate's floating pool or a remote channel's exclusive one) in
    /// [`Self::in_pool_usage`] while it lives.
    pub fn watch_input_pool(&self, pool: &Arc<LocalBufferPool>) {
        self.pools.lock().input.push(Arc::downgrade(pool));
    }

    /// Counts `pool` (an output partition's) in [`Self::out_pool_usage`] while it lives.
    pub fn watch_output_pool(&self, pool: &Arc<LocalBufferPool>) {
        self.pools.lock().output.push(Arc::downgrade(pool));
    }

    /// `inPoolUsage`: buffers of the input gate's pools in use now.
    pub fn in_pool_usage(&self) -> BufferUsage {
        BufferUsage::of(&self.pools.lock().input)
    }

    /// `outPoolUsage`: buffers of the output partitions' pools in use now.
    pub fn out_pool_usage(&self) -> BufferUsage {
        BufferUsage::of(&self.pools.lock().output)
    }

    /// Records consumed so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Records produced so far.
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Ordering::Relaxed)
    }

    /// Total time spent backpressured.
    pub fn back_pressured_time(&self) -> Duration {
        Duration::from_nanos(self.back_pressured_nanos.load(Ordering::Relaxed))
    }

    /// Reads all counters, tagging them with `at` (time since any fixed origin).
    pub fn snapshot(&self, at: Duration) -> IoSnapshot {
        IoSnapshot {
            at,
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            back_pressured_nanos: self.back_pressured_nanos.load(Ordering::Relaxed),
            idle_nanos: self.idle_nanos.load(Ordering::Relaxed),
        }
    }
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoSnapshot {
    /// When the snapshot was taken (time since a fixed origin).
    pub at: Duration,
    /// Records consumed.
    pub records_in: u64,
    /// Records produced.
    pub records_out: u64,
    /// Bytes consumed.
    pub bytes_in: u64,
    /// Bytes produced.
    pub bytes_out: u64,
    /// Nanoseconds waiting for output buffers.
    pub back_pressured_nanos: u64,
    /// Nanoseconds waiting for input.
    pub idle_nanos: u64,
}

/// Rates between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IoRates {
    /// Records consumed per second.
    pub records_in_per_second: f64,
    /// Records produced per second.
    pub records_out_per_second: f64,
    /// Bytes consumed per second.
    pub bytes_in_per_second: f64,
    /// Bytes produced per second.
    pub bytes_out_per_second: f64,
    /// `backPressuredTimeMsPerSecond`.
    pub back_pressured_time_ms_per_second: f64,
    /// `idleTimeMsPerSecond`.
    pub idle_time_ms_per_second: f64,
    /// `busyTimeMsPerSecond`: the rest.
    pub busy_time_ms_per_second: f64,
    /// Classification of the backpressured ratio.
    pub back_pressure_level: BackPressureLevel,
}

impl IoSnapshot {
    /// Rates over the interval from `earlier` to `self`; zero rates for an empty interval.
    pub fn rates_since(&self, earlier: &IoSnapshot) -> IoRates {
        let secs = self.at.saturating_sub(earlier.at).as_secs_f64();
        let per_s = |a: u64, b: u64| {
            if secs > 0.0 {
                a.saturating_sub(b) as f64 / secs
            } else {
                0.0
            }
        };
        let ms_per_s = |a: u64, b: u64| (per_s(a, b) / 1e6).min(1000.0);
        let bp = ms_per_s(self.back_pressured_nanos, earlier.back_pressured_nanos);
        let idle = ms_per_s(self.idle_nanos, earlier.idle_nanos);
        IoRates {
            records_in_per_second: per_s(self.records_in, earlier.records_in),
            records_out_per_second: per_s(self.records_out, earlier.records_out),
            bytes_in_per_second: per_s(self.bytes_in, earlier.bytes_in),
            bytes_out_per_second: per_s(self.bytes_out, earlier.bytes_out),
            back_pressured_time_ms_per_second: bp,
            idle_time_ms_per_second: idle,
            busy_time_ms_per_second: if secs > 0.0 {
                (1000.0 - bp - idle).max(0.0)
            } else {
                0.0
            },
            back_pressure_level: BackPressureLevel::from_ratio(bp / 1000.0),
        }
    }
}

/// Flink's backpressure classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackPressureLevel {
    /// Ratio ≤ 0.10.
    Ok,
    /// 0.10 < ratio ≤ 0.5.
    Low,
    /// Ratio > 0.5.
    High,
}

impl BackPressureLevel {
    /// Classifies a backpressured-time ratio in `0..=1`.
    pub fn from_ratio(ratio: f64) -> Self {
        if ratio <= 0.10 {
            BackPressureLevel::Ok
        } else if ratio <= 0.5 {
            BackPressureLevel::Low
        } else {
            BackPressureLevel::High
        }
    }
}

/// Buffer usage of an input gate, each in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InPoolUsage {
    /// Exclusive buffers of remote channels holding data.
    pub exclusive: f64,
    /// Floating buffers of the gate in use.
    pub floating: f64,
    /// Both together (`inPoolUsage`).
    pub total: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_flink_thresholds() {
        assert_eq!(BackPressureLevel::from_ratio(0.0), BackPressureLevel::Ok);
        assert_eq!(BackPressureLevel::from_ratio(0.10), BackPressureLevel::Ok);
        assert_eq!(BackPressureLevel::from_ratio(0.11), BackPressureLevel::Low);
        assert_eq!(BackPressureLevel::from_ratio(0.5), BackPressureLevel::Low);
        assert_eq!(BackPressureLevel::from_ratio(0.51), BackPressureLevel::High);
    }

    #[test]
    fn pool_usage_counts_watched_pools_while_they_live() {
        let global = crate::buffer_pool::NetworkBufferPool::new(16, 64);
        let m = TaskIoMetrics::default();
        assert_eq!(m.out_pool_usage().ratio(), 0.0, "no pool yet");
        let out = global.create_pool(4, 4).unwrap();
        m.watch_output_pool(&out);
        let held: Vec<_> = (0..3)
            .map(|_| out.try_request().unwrap().unwrap())
            .collect();
        assert_eq!(m.out_pool_usage(), BufferUsage { used: 3, size: 4 });
        assert_eq!(m.out_pool_usage().ratio(), 0.75);
        assert_eq!(m.in_pool_usage().ratio(), 0.0, "inputs are counted apart");
        drop(held);
        assert_eq!(m.out_pool_usage().used, 0);
        drop(out);
        assert_eq!(
            m.out_pool_usage(),
            BufferUsage::default(),
            "a dropped pool is gone"
        );
    }

    #[test]
    fn rates_use_the_passed_in_interval() {
        let m = TaskIoMetrics::default();
        let a = m.snapshot(Duration::from_secs(10));
        m.add_out(1000, 8000);
        m.add_back_pressured(Duration::from_millis(600));
        m.add_idle(Duration::from_millis(100));
        let r = m.snapshot(Duration::from_secs(11)).rates_since(&a);
        assert_eq!(r.records_out_per_second, 1000.0);
        assert_eq!(r.bytes_out_per_second, 8000.0);
        assert!((r.back_pressured_time_ms_per_second - 600.0).abs() < 1e-9);
        assert!((r.busy_time_ms_per_second - 300.0).abs() < 1e-9);
        assert_eq!(r.back_pressure_level, BackPressureLevel::High);
    }
}
