//! Measures keyed-sum on the local executor: `cargo run --release -p rill-dataflow
//! --example keyed_sum_bench -- [rows] [keys] [parallelism]` prints records/s and records
//! per CPU-second (utime + stime of the process, from `/proc/self/stat`).

use std::sync::Arc;
use std::time::Instant;

use rill_dataflow::{jobs, JobOutcome, LocalExecutor, OperatorRegistry};

/// User + system CPU seconds of this process (Linux), if readable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(20_000_000);
    let keys = args.get(1).copied().unwrap_or(1000);
    let parallelism = args.get(2).copied().unwrap_or(1) as u32;
    let job = match jobs::keyed_sum(Some(rows), keys, None, parallelism) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("cannot build job: {e}");
            std::process::exit(2);
        }
    };
    let executor = LocalExecutor::new(Arc::new(OperatorRegistry::new()));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let result = match executor.execute(&job) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("job rejected: {e}");
            std::process::exit(2);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    if !matches!(result.outcome, JobOutcome::Finished) {
        eprintln!("job did not finish: {:?}", result.outcome);
        std::process::exit(1);
    }
    let checksum = jobs::keyed_sum_checksum(result.collected(jobs::KEYED_SUM_COLLECT_ID));
    let ok = checksum.as_ref().ok() == Some(&jobs::expected_keyed_sum_checksum(rows, keys));
    println!(
        "keyed-sum rows={rows} keys={keys} p={parallelism}: {wall:.3} s wall, {:.2} M records/s, {} , checksum {}",
        rows as f64 / wall / 1e6,
        cpu.map_or("cpu n/a".to_owned(), |c| format!(
            "{c:.2} CPU-s, {:.2} M records per CPU-s",
            rows as f64 / c / 1e6
        )),
        if ok { "OK" } else { "MISMATCH" }
    );
    if !ok {
        std::process::exit(1);
    }
}
