//! Identifiers of jobs and graph elements.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A job's id: 16 random bytes shown as 32 lowercase hex digits, like Flink's `JobID`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A fresh random id from the thread-local RNG.
    pub fn generate() -> Self {
        Self::from_rng(&mut rand::thread_rng())
    }

    /// A random id drawn from `rng` (seeded in tests).
    pub fn from_rng<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill(&mut b[..]);
        Self(b)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// A string that is not a [`JobId`]: says what was given and what a job id looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {input:?}: expected 32 hex digits")]
pub struct ParseJobIdError {
    /// The text that was given (at most 64 characters of it).
    pub input: String,
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    /// Parses 32 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseJobIdError {
            input: s.chars().take(64).collect(),
        };
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(b))
    }
}

/// Index of a vertex in its [`JobGraph`](crate::job_graph::JobGraph)'s `vertices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VertexId(pub u32);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn job_id_hex_round_trip() {
        let id = JobId::from_rng(&mut rand::rngs::SmallRng::seed_from_u64(7));
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<JobId>().unwrap(), id);
        let e = "xyz".parse::<JobId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid job id "xyz": expected 32 hex digits"#
        );
        assert!("zz".repeat(16).parse::<JobId>().is_err());
        assert_ne!(JobId::generate(), JobId::generate());
    }
}
