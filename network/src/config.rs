//! Data-plane configuration: the `taskmanager.network` section plus
//! `execution.buffer-timeout`.
//!
//! Passed in as a value (never read from a global). Keys follow Flink's where one exists;
//! every field has a default and [`NetworkConfig::validate`] rejects inconsistent values
//! before any memory is reserved.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::NetworkError;

/// When partly filled buffers are handed to the consumer (`execution.buffer-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferTimeout {
    /// Flush after every record (`0`): lowest latency, one buffer per record.
    EveryRecord,
    /// Flush at most this long after a record was written (default 100 ms).
    Interval(Duration),
    /// Only full buffers are sent (`none`): highest throughput, unbounded latency.
    Never,
}

impl Default for BufferTimeout {
    fn default() -> Self {
        BufferTimeout::Interval(Duration::from_millis(100))
    }
}

impl BufferTimeout {
    /// Builds the mode from a duration; zero means [`BufferTimeout::EveryRecord`].
    pub fn from_duration(d: Duration) -> Self {
        if d.is_zero() {
            BufferTimeout::EveryRecord
        } else {
            BufferTimeout::Interval(d)
        }
    }

    /// Parses `"none"`, `"0"` or a humantime duration such as `"100ms"`.
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s == "-1" {
            return Ok(BufferTimeout::Never);
        }
        if s == "0" {
            return Ok(BufferTimeout::EveryRecord);
        }
        humantime_serde::re::humantime::parse_duration(s)
            .map(BufferTimeout::from_duration)
            .map_err(|e| NetworkError::config(format!("execution.buffer-timeout {s:?}: {e}")))
    }
}

impl fmt::Display for BufferTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BufferTimeout::EveryRecord => f.write_str("0"),
            BufferTimeout::Interval(d) => {
                write!(f, "{}", humantime_serde::re::humantime::format_duration(*d))
            }
            BufferTimeout::Never => f.write_str("none"),
        }
    }
}

impl Serialize for BufferTimeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BufferTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) if ms < 0 => Ok(BufferTimeout::Never),
            Raw::Millis(ms) => Ok(BufferTimeout::from_duration(Duration::from_millis(
                ms.unsigned_abs(),
            ))),
            Raw::Text(t) => BufferTimeout::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// The data plane's configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Total bytes of network buffers (`taskmanager.network.memory`), default 64 MiB.
    /// Every buffer of every pool comes out of this; memory never grows past it.
    pub memory: u64,
    /// Bytes per buffer segment (`taskmanager.memory.segment-size`), default 32 KiB.
    pub segment_size: u32,
    /// Exclusive buffers per remote input channel, also its initial credit (default 2).
    pub exclusive_buffers_per_channel: u32,
    /// Floating buffers per input gate, shared by its channels on demand (default 8).
    pub floating_buffers_per_gate: u32,
    /// Finished buffers one subpartition may queue before its writer waits (default 10),
    /// so that one slow channel cannot take the whole partition pool.
    pub max_buffers_per_channel: u32,
    /// `execution.buffer-timeout`: 100 ms by default, `0` = every record, `none` = full
    /// buffers only.
    pub buffer_timeout: BufferTimeout,
    /// First delay before re-requesting a partition the producer does not know yet.
    #[serde(with = "humantime_serde")]
    pub request_backoff_initial: Duration,
    /// Largest delay between partition re-requests; after it the request fails.
    #[serde(with = "humantime_serde")]
    pub request_backoff_max: Duration,
    /// Largest record a deserializer accepts (default 128 MiB); a larger length prefix is
    /// treated as corruption.
    pub max_record_size: u32,
    /// Largest number of concurrent QUIC streams (= remote channels) per connection.
    pub max_streams_per_connection: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            memory: 64 * 1024 * 1024,
            segment_size: 32 * 1024,
            exclusive_buffers_per_channel: 2,
            floating_buffers_per_gate: 8,
            max_buffers_per_channel: 10,
            buffer_timeout: BufferTimeout::default(),
            request_backoff_initial: Duration::from_millis(100),
            request_backoff_max: Duration::from_secs(10),
            max_record_size: 128 * 1024 * 1024,
            max_streams_per_connection: 65_536,
        }
    }
}

impl NetworkConfig {
    /// Number of segments the configured memory holds.
    pub fn total_segments(&self) -> usize {
        (self.memory / u64::from(self.segment_size.max(1))) as usize
    }

    /// Checks the values for consistency.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if !(1024..=16 * 1024 * 1024).contains(&self.segment_size) {
            return Err(NetworkError::config(format!(
                "segment-size {} must be between 1 KiB and 16 MiB",
                self.segment_size
            )));
        }
        if self.total_segments() < 2 {
            return Err(NetworkError::config(format!(
                "memory {} holds fewer than two segments of {} bytes",
                self.memory, self.segment_size
            )));
        }
        if self.exclusive_buffers_per_channel == 0 {
            return Err(NetworkError::config(
                "exclusive-buffers-per-channel must be at least 1 (it is the initial credit)",
            ));
        }
        if self.max_buffers_per_channel == 0 {
            return Err(NetworkError::config(
                "max-buffers-per-channel must be at least 1",
            ));
        }
        if self.request_backoff_initial.is_zero()
            || self.request_backoff_initial > self.request_backoff_max
        {
            return Err(NetworkError::config(
                "request-backoff-initial must be positive and not above request-backoff-max",
            ));
        }
        if self.max_record_size == 0 {
            return Err(NetworkError::config("max-record-size must be positive"));
        }
        if self.max_streams_per_connection == 0 {
            return Err(NetworkError::config(
                "max-streams-per-connection must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_flink_like() {
        let c = NetworkConfig::default();
        c.validate().unwrap();
        assert_eq!(c.total_segments(), 2048);
        assert_eq!(
            c.buffer_timeout,
            BufferTimeout::Interval(Duration::from_millis(100))
        );
    }

    #[test]
    fn buffer_timeout_parses_flink_spellings() {
        assert_eq!(BufferTimeout::parse("none").unwrap(), BufferTimeout::Never);
        assert_eq!(
            BufferTimeout::parse("0").unwrap(),
            BufferTimeout::EveryRecord
        );
        assert_eq!(
            BufferTimeout::parse("5ms").unwrap(),
            BufferTimeout::Interval(Duration::from_millis(5))
        );
        assert!(BufferTimeout::parse("soon").is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let c = NetworkConfig {
            exclusive_buffers_per_channel: 0,
            ..NetworkConfig::default()
        };
        assert!(c.validate().is_err());
        let c = NetworkConfig {
            memory: 1024,
            ..NetworkConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
