//! Shared helpers for rill benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

pub mod fuzz;

/// Linux's `USER_HZ`: the unit of utime/stime in `/proc/*/stat`.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system, all threads) this process has used so far; zero where
/// `/proc/self/stat` cannot be read.
pub fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th
            // and 15th fields overall, i.e. the 12th and 13th after it.
            let rest = s.get(s.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_S)
}

/// The `rill` binary: `explicit` (`--rill`), or next to this executable (both live in
/// `target/<profile>/`).
pub fn find_rill(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .join("rill"),
    };
    ensure!(
        path.is_file(),
        "no rill binary at {}: build it first (`cargo build --release -p rill`) or pass --rill PATH",
        path.display()
    );
    Ok(path)
}
