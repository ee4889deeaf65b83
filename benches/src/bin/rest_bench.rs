//! The REST and dashboard figures of issue #12, printed as one table.
//!
//! A `rill jobmanager` process and one `rill taskmanager --slots 4` run on 127.0.0.1.
//! Then:
//!
//! * **cluster**: `--jobs` jobs (default 100) are submitted through `POST /jobs`: two
//!   unbounded, rate-limited (1000 rows/s) keyed-sums that keep running, and the rest
//!   bounded keyed-sums of 1000 rows, four at a time, each waited for until FINISHED.
//! * **latency**: `GET /jobs/overview` over one keep-alive connection, `--requests`
//!   times (default 2000) after 100 unmeasured ones; p50, p99 and the answer's size.
//!   Each answer is checked to list every job.
//! * **weight**: the dashboard's page weight: `/` and every `/web/…` asset it references,
//!   as served (bytes of the bodies, uncompressed: the server does not compress).
//! * **render**: headless Chromium through `chromedriver` (skipped with a notice when
//!   `/usr/bin/chromedriver` is missing) loads the dashboard `--loads` times (default 7)
//!   from `about:blank`; per load: first contentful paint from
//!   `performance.getEntriesByType('paint')`, the navigation's `loadEventEnd`, and the
//!   time until the overview's job table holds every job (a MutationObserver and a
//!   PerformanceObserver in the page, so WebDriver's polling adds nothing), all from the
//!   navigation's start; medians.
//! * **rss**: the JobManager's `VmRSS` from `/proc/<pid>/status` with the REST server
//!   idle: once right after the TaskManager registered (no jobs), once 2 s after the
//!   last request above (with the jobs' archives).
//!
//! Usage: `cargo build --release -p rill -p rill-benches && cargo run --release -p rill-benches --bin rest_bench -- [--jobs N] [--requests N] [--loads N] [--rill PATH]`

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rill_benches::{find_rill, print_table, Flags, ProcessCluster, Row};
use serde_json::{json, Value};

#[path = "../../../tests/tests/support/webdriver.rs"]
#[allow(dead_code, unreachable_pub)]
mod webdriver;

const USAGE: &str = "usage: rest_bench [--jobs N] [--requests N] [--loads N] [--rill PATH]";
const SECRET: &str = "rill-rest-bench";
/// Jobs that keep running; the rest finish.
const RUNNING_JOBS: usize = 2;
/// Bounded jobs in flight at once (the TaskManager's slots).
const SLOTS: u32 = 4;
const WAIT_LIMIT: Duration = Duration::from_secs(60);

struct Options {
    jobs: usize,
    requests: usize,
    loads: usize,
    rill: Option<std::path::PathBuf>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        jobs: 100,
        requests: 2000,
        loads: 7,
        rill: None,
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--jobs" => o.jobs = flags.number()?,
            "--requests" => o.requests = flags.number()?,
            "--loads" => o.loads = flags.number()?,
            "--rill" => o.rill = Some(flags.value()?.into()),
            _ => return Err(flags.unknown()),
        }
    }
    ensure!(o.jobs > RUNNING_JOBS, "--jobs must exceed {RUNNING_JOBS}");
    ensure!(o.requests > 0 && o.loads > 0, "{USAGE}");
    Ok(o)
}

/// A blocking HTTP client of the REST API.
struct Rest {
    agent: ureq::Agent,
    base: String,
}

impl Rest {
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .with_context(|| format!("GET {path}"))?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }

    fn json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path)?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    fn submit(&self, args: Value) -> Result<String> {
        let body = json!({ "job": "keyed-sum", "args": args });
        let mut r = self
            .agent
            .post(format!("{}/jobs", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string())?;
        let text = r.body_mut().read_to_string()?;
        ensure!(r.status() == 200, "POST /jobs: {} {text}", r.status());
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["jobid"].as_str().context("no jobid")?.to_string())
    }

    fn wait_status(&self, job: &str, want: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            let s = self.json(&format!("/jobs/{job}/status"))?;
            if s["status"] == want {
                return Ok(());
            }
            ensure!(
                t.elapsed() < WAIT_LIMIT,
                "job {job} is {} after {:?}, not {want}",
                s["status"],
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// Submits the jobs: [`RUNNING_JOBS`] that keep running, the rest bounded and finished.
fn populate(rest: &Rest, jobs: usize) -> Result<()> {
    let bounded = jobs - RUNNING_JOBS;
    let t = Instant::now();
    let mut done = 0;
    while done < bounded {
        let batch = (bounded - done).min(SLOTS as usize);
        let ids: Vec<String> = (0..batch)
            .map(|_| rest.submit(json!({ "rows": 1000, "keys": 10 })))
            .collect::<Result<_>>()?;
        for id in &ids {
            rest.wait_status(id, "FINISHED")?;
        }
        done += batch;
    }
    for _ in 0..RUNNING_JOBS {
        let id = rest.submit(json!({ "rate": 1000, "keys": 10 }))?;
        rest.wait_status(&id, "RUNNING")?;
    }
    println!(
        "cluster: {bounded} finished and {RUNNING_JOBS} running jobs submitted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn latency(rest: &Rest, jobs: usize, requests: usize) -> Result<Vec<Row>> {
    let mut size = 0;
    let mut once = |measure: bool| -> Result<Option<f64>> {
        let t = Instant::now();
        let (status, body) = rest.get("/jobs/overview")?;
        let took = t.elapsed().as_secs_f64() * 1e3;
        ensure!(status == 200, "GET /jobs/overview: {status}");
        size = body.len();
        Ok(measure.then_some(took))
    };
    for _ in 0..100 {
        once(false)?;
    }
    let mut ms: Vec<f64> = (0..requests)
        .map(|_| once(true).map(|m| m.unwrap_or_default()))
        .collect::<Result<_>>()?;
    let listed = rest.json("/jobs/overview")?["jobs"]
        .as_array()
        .map_or(0, Vec::len);
    ensure!(
        listed == jobs,
        "/jobs/overview lists {listed} of {jobs} jobs"
    );
    ms.sort_by(f64::total_cmp);
    let name = format!("GET /jobs/overview, {jobs} jobs");
    Ok(vec![
        Row::new(
            format!("{name}: p50 / p99"),
            format!("{:.2} / {:.2} ms", quantile(&ms, 0.5), quantile(&ms, 0.99)),
        ),
        Row::new(format!("{name}: answer size"), format!("{size} B")),
    ])
}

fn weight(rest: &Rest) -> Result<Vec<Row>> {
    let (status, page) = rest.get("/")?;
    ensure!(status == 200, "GET /: {status}");
    let mut total = page.len();
    let mut parts = vec![format!("index.html {}", page.len())];
    let mut seen = Vec::new();
    for part in page.split("\"/web/").skip(1) {
        let asset = part.split('"').next().unwrap_or_default();
        if seen.contains(&asset) {
            continue;
        }
        seen.push(asset);
        let (status, body) = rest.get(&format!("/web/{asset}"))?;
        ensure!(status == 200, "GET /web/{asset}: {status}");
        total += body.len();
        parts.push(format!("{asset} {}", body.len()));
    }
    println!("weight: {}", parts.join(", "));
    Ok(vec![Row::new(
        "dashboard page weight (HTML + assets)",
        format!("{total} B"),
    )])
}

/// Waits in the page until the overview's job table has `jobs` rows and the first
/// contentful paint is recorded (paint entries arrive asynchronously, possibly after
/// the data); answers the paint and navigation timings and the moment the table was
/// complete, ms since the navigation started.
const TIMINGS: &str = r#"
const [jobs, done] = [arguments[0], arguments[arguments.length - 1]];
let fcp = null, data = null;
const finish = () => {
  if (fcp === null || data === null) return;
  const nav = performance.getEntriesByType('navigation')[0];
  done({ fcp, load: nav ? nav.loadEventEnd : null, data });
};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.name === 'first-contentful-paint' && fcp === null) { fcp = e.startTime; finish(); }
  }
}).observe({ type: 'paint', buffered: true });
const check = () => {
  if (data === null && document.querySelectorAll('#jobs-table tbody tr').length >= jobs) {
    data = performance.now();
    finish();
  }
};
check();
if (data === null) {
  const seen = new MutationObserver(() => { check(); if (data !== null) seen.disconnect(); });
  seen.observe(document.body, { childList: true, subtree: true });
}
"#;

fn render(rest: &Rest, jobs: usize, loads: usize) -> Result<Vec<Row>> {
    if !webdriver::ChromeDriver::installed() {
        println!(
            "render: skipped: {} or {} is missing (apt-get install chromium chromium-driver)",
            webdriver::CHROMEDRIVER,
            webdriver::CHROMIUM
        );
        return Ok(vec![Row::new(
            "dashboard first render",
            "skipped: no chromedriver",
        )]);
    }
    let driver =
        webdriver::ChromeDriver::start(Duration::from_secs(20)).map_err(anyhow::Error::msg)?;
    let s = driver.session()?;
    let (mut fcp, mut load, mut data) = (Vec::new(), Vec::new(), Vec::new());
    // One unmeasured load first: the browser's own start-up is not the page's.
    for i in 0..=loads {
        s.navigate("about:blank")?;
        s.navigate(&format!("{}/", rest.base))?;
        let t = s.execute_async(TIMINGS, json!([jobs]))?;
        let (Some(f), Some(l), Some(d)) =
            (t["fcp"].as_f64(), t["load"].as_f64(), t["data"].as_f64())
        else {
            bail!("incomplete timings: {t}");
        };
        if i > 0 {
            fcp.push(f);
            load.push(l);
            data.push(d);
        }
    }
    println!("render: first contentful paint per load (ms): {fcp:.1?}");
    Ok(vec![
        Row::new(
            format!("dashboard first contentful paint, median of {loads}"),
            format!("{:.1} ms", median(fcp)),
        ),
        Row::new(
            "dashboard load event end, median",
            format!("{:.1} ms", median(load)),
        ),
        Row::new(
            format!("dashboard job table with all {jobs} jobs, median"),
            format!("{:.1} ms", median(data)),
        ),
    ])
}

fn main() -> Result<()> {
    let o = options()?;
    let rill = find_rill(o.rill.clone())?;
    println!("rill binary: {}", rill.display());
    let logs = std::env::temp_dir().join(format!("rill-rest_bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut cluster = rt.block_on(ProcessCluster::spawn(
        &rill,
        &logs,
        "rest",
        SECRET,
        "warn",
        &[],
        &[SLOTS],
    ))?;
    let line = rt.block_on(cluster.jobmanager.line_with("REST endpoint"))?;
    let base = line
        .rsplit(' ')
        .next()
        .context("no REST URL")?
        .trim()
        .to_string();
    let rest = Rest {
        agent: ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into(),
        base,
    };
    let t = Instant::now();
    while rest.json("/overview")?["slots-total"] != SLOTS {
        ensure!(t.elapsed() < WAIT_LIMIT, "the TaskManager did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = cluster.jobmanager.pid();
    std::thread::sleep(Duration::from_secs(2));
    let fresh = rss_kib(pid)?;

    let started = Instant::now();
    populate(&rest, o.jobs)?;
    let mut rows = latency(&rest, o.jobs, o.requests)?;
    rows.extend(weight(&rest)?);
    rows.extend(render(&rest, o.jobs, o.loads)?);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(pid)?;
    rows.push(Row::new(
        "JobManager RSS, REST idle, no jobs yet",
        mib(fresh),
    ));
    rows.push(Row::new(
        format!("JobManager RSS, REST idle, {} jobs", o.jobs),
        mib(idle),
    ));
    print_table(&rows);
    println!(
        "\ntotal {:.1} s; child process logs in {}",
        started.elapsed().as_secs_f64(),
        logs.display()
    );
    Ok(())
}
