//! Nexmark throughput, rill next to Flink on the same events file in the same run
//! (issue #11 item 5; DESIGN §8 targets ≥ 2× Flink per core).
//!
//! 1. Writes `--events` generated events (seed 0, 10,000 events/s of event time) as a
//!    JSON Lines file — the format `nexmark.sh` reads — unless `--events-file` names one.
//! 2. **rill**: each query as the built-in `nexmark` job over that file, blackhole sink,
//!    at parallelism `-p` on an in-process MiniCluster (one TaskManager with P slots);
//!    `--runs` runs, medians of events/s over the job's own duration (the JobMaster's
//!    RUNNING → FINISHED, like Flink's net runtime) and of events per CPU-second of this
//!    process while the job ran (every thread: sources, JSON parsing, network, RPC).
//! 3. **Flink**: `nexmark.sh --events-file F --query qN --sink blackhole -p P -r R` (one
//!    local-mode JVM per run), its SUMMARY medians: events/s over the net runtime and
//!    events per CPU-second of the JVM. Skipped with `--no-flink`.
//! 4. Prints per query events/s per core (= events/s / P, as the Flink script reports)
//!    and per CPU-second for both, and the ratios rill / Flink.
//!
//! Usage: `cargo run --release -p rill-benches --bin nexmark_bench -- [--events N]
//! [--events-file PATH] [--queries q0,q1,…] [-p P] [--runs R] [--no-flink] [--flink PATH]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rill_benches::{block_on, print_table, process_cpu, start_mini_cluster, Flags, Row};
use rill_dataflow::builtins::nexmark::GeneratorConfig;
use rill_dataflow::{jobs, OperatorRegistry};
use rill_endpoints::{JobStatus, RillConfig};

const USAGE: &str = "usage: nexmark_bench [--events N] [--events-file PATH] [--queries q0,q1,…] [-p P] [--runs R] [--no-flink] [--flink PATH]";
const WAIT_LIMIT: Duration = Duration::from_secs(1800);

struct Options {
    events: u64,
    events_file: Option<PathBuf>,
    queries: Vec<String>,
    parallelism: u32,
    runs: usize,
    flink: Option<PathBuf>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        events: 2_000_000,
        events_file: None,
        queries: ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"]
            .map(String::from)
            .to_vec(),
        parallelism: 1,
        runs: 3,
        flink: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/baselines/flink/nexmark.sh"),
        ),
    };
    let mut f = Flags::from_env(USAGE);
    while let Some(flag) = f.next_flag() {
        match flag.as_str() {
            "--events" => o.events = f.number()?,
            "--events-file" => o.events_file = Some(f.value()?.into()),
            "--queries" => o.queries = f.value()?.split(',').map(String::from).collect(),
            "-p" => o.parallelism = f.number()?,
            "--runs" => o.runs = f.number()?,
            "--no-flink" => o.flink = None,
            "--flink" => o.flink = Some(f.value()?.into()),
            _ => return Err(f.unknown()),
        }
    }
    ensure!(o.runs >= 1 && o.parallelism >= 1, "{USAGE}");
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `events` generated events to `path`; returns the number of lines.
fn write_events(path: &Path, events: u64) -> Result<u64> {
    use std::io::Write;
    let g = GeneratorConfig::default();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = Vec::with_capacity(1024);
    for n in 0..events {
        line.clear();
        g.event(n).write_json(&mut line);
        line.push(b'\n');
        w.write_all(&line)?;
    }
    w.flush()?;
    Ok(events)
}

/// One rill run: (events/s over the job duration, events per CPU-second).
fn rill_once(
    registry: &Arc<OperatorRegistry>,
    query: &str,
    file: &Path,
    events: u64,
    p: u32,
) -> Result<(f64, f64)> {
    let job = jobs::nexmark(
        query,
        &jobs::NexmarkInput::File(file.to_string_lossy().into_owned()),
        None,
        p,
    )?;
    let registry = registry.clone();
    let mut figures = (0.0, 0.0);
    let out = &mut figures;
    block_on(async move {
        let mut config = RillConfig::default();
        config.taskmanager.number_of_task_slots = p;
        let (cluster, client) = start_mini_cluster(&config, registry, p).await?;
        let outcome = async {
            let cpu0 = process_cpu();
            let id = client.submit(job).await?;
            let deadline = Instant::now() + WAIT_LIMIT;
            let status = loop {
                let s = client.job_status(id).await?;
                if s.is_terminal() {
                    break s;
                }
                ensure!(Instant::now() < deadline, "{query} did not end");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let cpu = process_cpu().saturating_sub(cpu0).as_secs_f64().max(1e-3);
            let result = client.job_result(id).await?;
            ensure!(
                status == JobStatus::Finished,
                "{query}: {status}: {:?}",
                result.failure
            );
            let job_s = result.duration_ms.max(1) as f64 / 1e3;
            *out = (events as f64 / job_s, events as f64 / cpu);
            Ok(())
        }
        .await;
        client.close().await;
        cluster.shutdown().await;
        outcome
    })?;
    Ok(figures)
}

/// Flink's SUMMARY medians for `query`: (events/s net, events per CPU-second).
fn flink(script: &Path, query: &str, file: &Path, p: u32, runs: usize) -> Result<(f64, f64)> {
    let out = Command::new(script)
        .arg("--events-file")
        .arg(file)
        .args(["--query", query, "--sink", "blackhole"])
        .args(["-p", &p.to_string(), "-r", &runs.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with(&format!("SUMMARY {query} ")))
        .with_context(|| {
            format!(
                "no SUMMARY line from {}: {stdout}{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |name: &str| -> Result<f64> {
        let v = summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .with_context(|| format!("no {name} in {summary}"))?;
        Ok(v.parse()?)
    };
    Ok((
        field("events/s(net)=")?,
        field("events/cpu_s=").unwrap_or(f64::NAN),
    ))
}

fn main() -> Result<()> {
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let (file, events) = match &o.events_file {
        Some(f) => {
            let text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            (f.clone(), bytecount(&text))
        }
        None => {
            let f = dir.path().join("events.jsonl");
            let t = Instant::now();
            let n = write_events(&f, o.events)?;
            println!(
                "wrote {n} events ({:.0} MB) in {:.1} s",
                std::fs::metadata(&f)?.len() as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            (f, n)
        }
    };
    let p = o.parallelism;
    let pf = f64::from(p);
    println!(
        "== Nexmark over {events} events ({}), p={p}, {} runs each, blackhole sink",
        file.display(),
        o.runs
    );
    let registry = Arc::new(OperatorRegistry::new());
    let mut rows = Vec::new();
    let m = |x: f64| format!("{:.0} k", x / 1e3);
    for q in &o.queries {
        let mut eps = Vec::new();
        let mut epc = Vec::new();
        for run in 1..=o.runs {
            let (a, b) = rill_once(&registry, q, &file, events, p)?;
            println!(
                "  rill  {q} run {run}: {:.0} events/s (job), {:.0} events/CPU-s",
                a, b
            );
            eps.push(a);
            epc.push(b);
        }
        let (r_eps, r_epc) = (median(eps), median(epc));
        rows.push(Row::new(
            format!("{q} rill events/s per core (job)"),
            m(r_eps / pf),
        ));
        rows.push(Row::new(
            format!("{q} rill events per CPU-second"),
            m(r_epc),
        ));
        if let Some(script) = &o.flink {
            let (f_eps, f_epc) = flink(script, q, &file, p, o.runs)?;
            println!("  flink {q}: {f_eps:.0} events/s (net), {f_epc:.0} events/CPU-s");
            rows.push(Row::new(
                format!("{q} Flink events/s per core (net)"),
                m(f_eps / pf),
            ));
            rows.push(Row::new(
                format!("{q} Flink events per CPU-second"),
                m(f_epc),
            ));
            let ratio = r_eps / f_eps;
            rows.push(
                Row::new(format!("{q} rill / Flink per core"), format!("{ratio:.2}×"))
                    .target("≥ 2× (DESIGN §8), ≥ 3× (#11)", ratio >= 2.0),
            );
            rows.push(Row::new(
                format!("{q} rill / Flink per CPU-second"),
                format!("{:.2}×", r_epc / f_epc),
            ));
        }
    }
    print_table(&rows);
    Ok(())
}

/// Lines in `text` (a last line without `\n` counts).
fn bytecount(text: &[u8]) -> u64 {
    let n = text.iter().filter(|&&b| b == b'\n').count() as u64;
    n + u64::from(text.last().is_some_and(|&b| b != b'\n'))
}
