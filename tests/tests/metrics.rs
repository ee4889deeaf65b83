//! Prometheus metrics against a real `rill jobmanager` and `rill taskmanager` on
//! 127.0.0.1: after a bounded `keyed-sum` job, the JobManager's `GET /metrics` parses as
//! Prometheus' text format and its record counters are the job's exact record counts
//! (as `rill status` shows them), its cluster and checkpoint figures are the cluster's;
//! the TaskManager's own endpoint, found through `GET /taskmanagers`, parses too and has
//! its process's figures; both carry every task's `inPoolUsage` / `outPoolUsage` in
//! [0, 1].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);
const ROWS: u64 = 10_000;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{name="value",…}` at the start of `s` (just after the `{`); returns the
/// labels and the rest after the `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &rest[end + 1..];
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} at {s:?}"));
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// A strict parser of Prometheus' text exposition format (0.0.4): `# HELP` and `# TYPE`
/// lines (at most one of each per family, before its samples), other comments, and
/// sample lines `name{labels} value [timestamp]` of declared families with no series
/// twice. The OpenMetrics `# EOF` is accepted only as the last line.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types = BTreeMap::<String, String>::new();
    let mut helps = BTreeSet::new();
    let mut with_samples = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for (n, line) in lines.iter().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !is_metric_name(name) || !helps.insert(name.to_string()) {
                return Err(err("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without a type".into()))?;
            if !is_metric_name(name)
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                || with_samples.contains(name)
                || types.insert(name.to_string(), kind.to_string()).is_some()
            {
                return Err(err("bad, late or repeated TYPE".into()));
            }
            continue;
        }
        if *line == "# EOF" {
            if n + 1 != lines.len() {
                return Err(err("# EOF before the end".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(r) => parse_labels(r).map_err(err)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| err(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        if !types.contains_key(name) {
            return Err(err(format!("{name} has no # TYPE")));
        }
        with_samples.insert(name.to_string());
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(err("series twice".into()));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_b Help.\n# TYPE a_b gauge\na_b{x=\"q\\\"\\\\\\n\",y=\"2\"} 3.5\n# TYPE c gauge\nc 1 1700000000000\n";
    let s = parse_exposition(good).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].labels["x"], "q\"\\\n");
    assert_eq!(s[1].value, 1.0);
    for bad in [
        "a 1\n",                                 // no TYPE
        "# TYPE a gauge\na{x=\"1\"} \n",         // no value
        "# TYPE a gauge\na{x=1} 2\n",            // unquoted
        "# TYPE a gauge\na 1\na 2\n",            // series twice
        "# TYPE a gauge\na 1\n# TYPE a gauge\n", // TYPE twice
        "# TYPE a gauge\na{x=\"\\q\"} 1\n",      // bad escape
        "# TYPE a gauge\na 1",                   // no final newline
        "# TYPE 1a gauge\n",                     // bad name
        "# EOF\n# TYPE a gauge\n",               // EOF not last
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// GET `url`: status, `Content-Type` and body.
fn get(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = r.status().as_u16();
    (status, content_type, r.body_mut().read_to_string().unwrap())
}

/// GET `url` and parse it as Prometheus text.
fn scrape(url: &str) -> Vec<Sample> {
    let (status, content_type, text) = get(url);
    assert_eq!(status, 200, "GET {url}: {text}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_exposition(&text).unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"))
}

fn values<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| s.name == name)
}

/// The value of the sample of `name` without labels, exactly one.
fn single(samples: &[Sample], name: &str) -> f64 {
    let v: Vec<_> = values(samples, name).collect();
    assert_eq!(v.len(), 1, "{name}: {v:?}");
    assert!(v[0].labels.is_empty(), "{name}: {v:?}");
    v[0].value
}

/// Per task name of job `job`: the sum over subtasks of `name`, and the subtask indices.
fn per_task(samples: &[Sample], name: &str, job: &str) -> BTreeMap<String, (f64, Vec<u32>)> {
    let mut out = BTreeMap::<String, (f64, Vec<u32>)>::new();
    for s in
        values(samples, name).filter(|s| s.labels.get("job_id").map(String::as_str) == Some(job))
    {
        let keys: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["job_id", "job_name", "task_name", "subtask_index", "tm_id"]),
            "{s:?}"
        );
        assert_eq!(s.labels["job_name"], "keyed-sum");
        let e = out.entry(s.labels["task_name"].clone()).or_default();
        e.0 += s.value;
        e.1.push(s.labels["subtask_index"].parse().unwrap());
    }
    for (_, (_, subtasks)) in out.iter_mut() {
        subtasks.sort();
    }
    out
}

/// `GET /taskmanagers` once one TaskManager has registered.
fn registered_task_managers(rest: &str) -> Value {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (_, _, body) = get(&format!("{rest}/taskmanagers"));
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["taskmanagers"].as_array().is_some_and(|a| a.len() == 1) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TaskManager registered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(records in, records out)` per vertex name of a `rill status` print.
fn status_counts(status: &str) -> BTreeMap<String, (u64, u64)> {
    status
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("vertex "))
        .map(|l| {
            let (head, counts) = l.split_once(" records in ").unwrap();
            let name = head
                .split_once(' ')
                .unwrap()
                .1
                .split(" parallelism ")
                .next()
                .unwrap()
                .trim()
                .to_string();
            let mut f = counts.split_whitespace();
            let records_in = f.next().unwrap().parse().unwrap();
            assert_eq!(f.next(), Some("out"));
            let records_out = f.next().unwrap().parse().unwrap();
            (name, (records_in, records_out))
        })
        .collect()
}

#[test]
fn metrics_endpoints_parse_and_count_a_bounded_jobs_records_exactly() {
    let (mut jm_proc, jm) = jobmanager(&["rest.port=0"]);
    let line = jm_proc.wait_for_line("rill: REST endpoint ", Duration::from_secs(20));
    let rest = line.trim().rsplit(' ').next().unwrap().to_string();
    let (_tm_proc, tm_id) = taskmanager(jm, 2, &[]);

    // Wait for the TaskManager's registration, then run the job to its end.
    let tms = registered_task_managers(&rest);
    let jm_arg = jm.to_string();
    let (ok, stdout, stderr) = rill_out(
        LONG,
        &[
            "run",
            "--jobmanager",
            &jm_arg,
            "-p",
            "2",
            "keyed-sum",
            "--rows",
            &ROWS.to_string(),
            "--keys",
            "10",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let job = job_id_of(&stdout);
    let (ok, status, stderr) = rill_out(LONG, &["status", &job, "--jobmanager", &jm_arg]);
    assert!(ok, "{status}\n{stderr}");
    let expected = status_counts(&status);
    assert_eq!(expected.len(), 2, "{status}");
    assert_eq!(expected["Source: datagen"].1, ROWS, "{status}");

    // The JobManager's endpoint, also under /v1.
    let jm_samples = scrape(&format!("{rest}/metrics"));
    assert_eq!(
        scrape(&format!("{rest}/v1/metrics")).len(),
        jm_samples.len()
    );
    let records_in = per_task(&jm_samples, "rill_taskmanager_job_task_numRecordsIn", &job);
    let records_out = per_task(&jm_samples, "rill_taskmanager_job_task_numRecordsOut", &job);
    assert_eq!(
        records_out.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, (want_in, want_out)) in &expected {
        assert_eq!(records_in[name], (*want_in as f64, vec![0, 1]), "{name}");
        assert_eq!(records_out[name], (*want_out as f64, vec![0, 1]), "{name}");
    }
    assert_eq!(records_out["Source: datagen"].0, ROWS as f64);
    // Every record the source emits reaches the keyed vertex.
    let (keyed, (keyed_in, _)) = expected
        .iter()
        .find(|(n, _)| n.as_str() != "Source: datagen")
        .unwrap();
    assert_eq!(*keyed_in, ROWS, "{keyed}");
    // The source has no input watermark; the keyed vertex saw the final one (the
    // bounded source's end of input).
    let watermarks: Vec<_> = values(
        &jm_samples,
        "rill_taskmanager_job_task_currentInputWatermark",
    )
    .filter(|s| s.labels.get("job_id") == Some(&job))
    .collect();
    assert_eq!(watermarks.len(), 4, "two vertices of two subtasks");
    for s in watermarks {
        let want = if s.labels["task_name"] == "Source: datagen" {
            i64::MIN
        } else {
            i64::MAX
        };
        assert_eq!(s.value, want as f64, "{s:?}");
    }
    for name in [
        "rill_taskmanager_job_task_numBytesIn",
        "rill_taskmanager_job_task_numBytesOut",
        "rill_taskmanager_job_task_busyTimeMsPerSecond",
        "rill_taskmanager_job_task_backPressuredTimeMsPerSecond",
        "rill_taskmanager_job_task_idleTimeMsPerSecond",
        "rill_taskmanager_job_task_inPoolUsage",
        "rill_taskmanager_job_task_outPoolUsage",
    ] {
        let tasks = per_task(&jm_samples, name, &job);
        assert_eq!(tasks.len(), 2, "{name}");
        for s in values(&jm_samples, name) {
            assert!(s.value >= 0.0, "{s:?}");
            if name.ends_with("PerSecond") {
                assert!(s.value <= 1000.0, "{s:?}");
            }
            if name.ends_with("PoolUsage") {
                assert!(s.value <= 1.0, "a share of buffers: {s:?}");
            }
            assert_eq!(s.labels["tm_id"], tm_id, "{s:?}");
        }
    }
    // Bytes cross the network between the two vertices.
    assert!(
        per_task(&jm_samples, "rill_taskmanager_job_task_numBytesOut", &job)["Source: datagen"].0
            > 0.0
    );

    assert_eq!(
        single(&jm_samples, "rill_jobmanager_numRegisteredTaskManagers"),
        1.0
    );
    assert_eq!(single(&jm_samples, "rill_jobmanager_taskSlotsTotal"), 2.0);
    let available = single(&jm_samples, "rill_jobmanager_taskSlotsAvailable");
    assert!((0.0..=2.0).contains(&available), "{available}");
    assert_eq!(single(&jm_samples, "rill_jobmanager_numRunningJobs"), 0.0);
    for (name, want) in [
        ("rill_jobmanager_job_lastCheckpointDuration", -1.0),
        ("rill_jobmanager_job_lastCheckpointSize", -1.0),
        ("rill_jobmanager_job_numberOfCompletedCheckpoints", 0.0),
        ("rill_jobmanager_job_numberOfFailedCheckpoints", 0.0),
    ] {
        let v: Vec<_> = values(&jm_samples, name).collect();
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        assert_eq!(v[0].labels["job_id"], job);
        assert_eq!(v[0].labels["job_name"], "keyed-sum");
        assert_eq!(v[0].value, want, "{name}");
    }
    assert!(single(&jm_samples, "rill_jobmanager_Status_Process_Memory_RSS") > 1e6);
    assert!(single(&jm_samples, "rill_jobmanager_Status_Process_CPU_Time") > 0.0);

    // The TaskManager's endpoint, as `GET /taskmanagers` names it.
    let tm = &tms["taskmanagers"][0];
    assert_eq!(tm["id"], tm_id.as_str());
    let url = tm["metricsUrl"].as_str().expect("metricsUrl is a string");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    let tm_samples = scrape(url);
    assert!(single(&tm_samples, "rill_taskmanager_Status_Process_Memory_RSS") > 1e6);
    assert!(single(&tm_samples, "rill_taskmanager_Status_Process_CPU_Time") > 0.0);
    // The job ended: no task runs there, and the JobManager's figures are not its.
    assert!(tm_samples
        .iter()
        .all(|s| !s.name.starts_with("rill_jobmanager")));
    assert!(tm_samples.iter().all(|s| !s.labels.contains_key("job_id")));
    let (status, _, _) = get(&url.replace("/metrics", "/nope"));
    assert_eq!(status, 404);
}

#[test]
fn a_task_managers_endpoint_shows_its_running_tasks() {
    let (mut jm_proc, jm) = jobmanager(&["rest.port=0"]);
    let line = jm_proc.wait_for_line("rill: REST endpoint ", Duration::from_secs(20));
    let rest = line.trim().rsplit(' ').next().unwrap().to_string();
    let (_tm_proc, tm_id) = taskmanager(jm, 1, &[]);
    let jm_arg = jm.to_string();
    let (ok, stdout, stderr) = rill_out(
        LONG,
        &[
            "run",
            "--jobmanager",
            &jm_arg,
            "--detached",
            "keyed-sum",
            "--rate",
            "2000",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let job = job_id_of(&stdout);
    let tms = registered_task_managers(&rest);
    let url = tms["taskmanagers"][0]["metricsUrl"]
        .as_str()
        .expect("metricsUrl")
        .to_string();
    // Polls until the source has emitted records and both tasks are deployed (the
    // source may run before the second task's deployment reached the TaskManager); the
    // counters only grow.
    let deadline = std::time::Instant::now() + LONG;
    let samples = loop {
        let samples = scrape(&url);
        let out = per_task(&samples, "rill_taskmanager_job_task_numRecordsOut", &job);
        if out.get("Source: datagen").is_some_and(|(n, _)| *n > 0.0) && out.len() == 2 {
            break samples;
        }
        assert!(std::time::Instant::now() < deadline, "no records counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in [
        "rill_taskmanager_job_task_numRecordsIn",
        "rill_taskmanager_job_task_numBytesOut",
        "rill_taskmanager_job_task_busyTimeMsPerSecond",
        "rill_taskmanager_job_task_backPressuredTimeMsPerSecond",
        "rill_taskmanager_job_task_idleTimeMsPerSecond",
        "rill_taskmanager_job_task_inPoolUsage",
        "rill_taskmanager_job_task_outPoolUsage",
    ] {
        let tasks = per_task(&samples, name, &job);
        assert_eq!(tasks.len(), 2, "{name}: {tasks:?}");
        for s in values(&samples, name) {
            assert_eq!(s.labels["tm_id"], tm_id, "{s:?}");
            assert_eq!(s.labels["subtask_index"], "0", "{s:?}");
            if name.ends_with("PerSecond") {
                assert!((0.0..=1000.0).contains(&s.value), "{s:?}");
            }
            if name.ends_with("PoolUsage") {
                assert!((0.0..=1.0).contains(&s.value), "{s:?}");
            }
        }
    }
    assert!(single(&samples, "rill_taskmanager_Status_Process_Memory_RSS") > 1e6);
    assert_eq!(
        single(
            &scrape(&format!("{rest}/metrics")),
            "rill_jobmanager_numRunningJobs"
        ),
        1.0
    );
    let (ok, stdout, stderr) = rill_out(LONG, &["cancel", &job, "--jobmanager", &jm_arg]);
    assert!(ok, "{stdout}\n{stderr}");
}
