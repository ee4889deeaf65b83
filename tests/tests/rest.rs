//! The JobManager's Flink-compatible REST API against a real `rill jobmanager` and
//! `rill taskmanager` on 127.0.0.1: every route with Flink's field names and types, the
//! error bodies, cancelling a job through `PATCH /jobs/:jobid`, and checkpoints,
//! savepoints and stop-with-savepoint driven as a Flink client drives them (trigger,
//! then poll the trigger id).

use std::time::{Duration, Instant};

use serde_json::Value;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// A plain HTTP client; every request is bounded, and 4xx/5xx are answers, not errors.
struct Http {
    agent: ureq::Agent,
    base: String,
    /// Sent as `Authorization: Bearer <token>` with every request.
    token: Option<String>,
}

impl Http {
    fn new(base: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build();
        Http {
            agent: config.into(),
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// A client sending `token` with every request.
    fn with_token(base: &str, token: &str) -> Http {
        Http {
            token: Some(token.to_string()),
            ..Http::new(base)
        }
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// GET with exactly the `Authorization` header given (none for `None`); answers
    /// the status, the body and the `WWW-Authenticate` header.
    fn get_authorized(&self, path: &str, authorization: Option<&str>) -> (u16, Value, String) {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {text:?}"));
        (status, body, challenge)
    }

    fn answer(
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, Value) {
        let mut r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text:?}"));
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        Self::answer(
            &format!("GET {path}"),
            self.auth(self.agent.get(&url)).call(),
        )
    }

    /// GET that must answer 200, under both the unversioned and the `/v1` path.
    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        let (status_v1, _) = self.get(&format!("/v1{path}"));
        assert_eq!(status_v1, 200, "GET /v1{path}");
        body
    }

    fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.patch(&url))
            .header("Content-Type", "application/json");
        Self::answer(&format!("PATCH {path}"), req.send(body))
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.post(&url))
            .header("Content-Type", "application/json");
        Self::answer(&format!("POST {path}"), req.send(body))
    }

    /// POST that must answer 202 with Flink's `TriggerResponse`; returns the trigger id.
    fn trigger(&self, path: &str, body: &str) -> String {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 202, "POST {path} {body}: {answer}");
        assert!(is_hex32(&answer["request-id"]), "POST {path}: {answer}");
        answer["request-id"].as_str().unwrap().to_string()
    }

    /// Polls an asynchronous operation's status until `COMPLETED`; returns its
    /// `operation`.
    fn completed(&self, what: &str, path: &str) -> Value {
        let answer = self.poll(what, path, |b| {
            let id = &b["status"]["id"];
            assert!(id == "IN_PROGRESS" || id == "COMPLETED", "{what}: {b}");
            *id == "COMPLETED"
        });
        answer["operation"].clone()
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        Self::answer(
            &format!("DELETE {path}"),
            self.auth(self.agent.delete(&url)).call(),
        )
    }

    fn poll(&self, what: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LONG;
        loop {
            let (status, body) = self.get(path);
            if status == 200 && pred(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what}: last answer {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Asserts `body` is Flink's error body with a message, and `status` is `expected`.
fn assert_error(what: &str, (status, body): (u16, Value), expected: u16) {
    assert_eq!(status, expected, "{what}: {body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors list in {body}"));
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.as_str().is_some_and(|s| !s.is_empty())),
        "{what}: {body}"
    );
}

/// Asserts `v` has at least `fields`, each of the JSON type
/// `kind` ('i' integer, 's' string, 'b' bool, 'o' object, 'a' array, 'n' number).
fn assert_fields(what: &str, v: &Value, fields: &[(&str, char)]) {
    for (name, kind) in fields {
        let f = &v[*name];
        let ok = match kind {
            'i' => f.is_i64() || f.is_u64(),
            'n' => f.is_number(),
            's' => f.is_string(),
            'b' => f.is_boolean(),
            'o' => f.is_object(),
            'a' => f.is_array(),
            _ => unreachable!(),
        };
        assert!(ok, "{what}: field {name:?} should be {kind}: {v}");
    }
}

fn is_hex32(s: &Value) -> bool {
    s.as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The REST base URL a JobManager printed.
fn rest_url(jm: &mut Proc) -> String {
    let line = jm.wait_for_line("rill: REST endpoint ", Duration::from_secs(20));
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    url
}

/// `rill run --detached` at `jm`; returns the job id.
fn submit(jm: std::net::SocketAddr, args: &[&str]) -> String {
    let mut cmd = rill();
    cmd.args(["run", "--jobmanager", &jm.to_string(), "--detached"])
        .args(args);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .to_string()
}

/// Waits until `job` and every vertex of it are RUNNING.
fn wait_running(http: &Http, job: &str) {
    http.poll("the job runs", &format!("/jobs/{job}"), |d| {
        d["state"] == "RUNNING"
            && d["vertices"]
                .as_array()
                .is_some_and(|vs| vs.iter().all(|v| v["status"] == "RUNNING"))
    });
}

/// A savepoint's `location` as a directory, which must hold `_metadata`.
fn savepoint_dir(operation: &Value) -> std::path::PathBuf {
    let location = operation["location"]
        .as_str()
        .unwrap_or_else(|| panic!("no location in {operation}"));
    let dir = std::path::PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
    assert!(dir.join("_metadata").is_file(), "{}", dir.display());
    dir
}

/// Flink's `CheckpointStatistics` fields every history entry has.
const CHECKPOINT_FIELDS: [(&str, char); 16] = [
    ("className", 's'),
    ("id", 'i'),
    ("status", 's'),
    ("is_savepoint", 'b'),
    ("trigger_timestamp", 'i'),
    ("latest_ack_timestamp", 'i'),
    ("checkpointed_size", 'i'),
    ("state_size", 'i'),
    ("end_to_end_duration", 'i'),
    ("alignment_buffered", 'i'),
    ("processed_data", 'i'),
    ("persisted_data", 'i'),
    ("num_subtasks", 'i'),
    ("num_acknowledged_subtasks", 'i'),
    ("checkpoint_type", 's'),
    ("tasks", 'o'),
];

/// A running-count input of `n` lines over 37 keys.
fn running_count_input(dir: &std::path::Path, n: u64) -> String {
    let input = dir.join("in.txt");
    let text: String = (0..n)
        .map(|i| format!("k{} payload {i}\n", (i * 11) % 37))
        .collect();
    std::fs::write(&input, text).unwrap();
    input.display().to_string()
}

#[test]
fn flinks_rest_api_reports_and_cancels_a_job() {
    let (mut jm, addr) = jobmanager(&[]);
    let http = Http::new(&rest_url(&mut jm));
    let (_tm, tm_id) = taskmanager(addr, 2, &[]);

    // Schemas from Flink's REST API reference (rest_v1_dispatcher), not from rill.
    let config = http.ok("/config");
    assert_fields(
        "/config",
        &config,
        &[
            ("refresh-interval", 'i'),
            ("timezone-name", 's'),
            ("timezone-offset", 'i'),
            ("flink-version", 's'),
            ("flink-revision", 's'),
            ("features", 'o'),
        ],
    );
    let overview = http.poll("the TaskManager registers", "/overview", |o| {
        o["taskmanagers"] == 1 && o["slots-total"] == 2
    });
    assert_fields(
        "/overview",
        &overview,
        &[
            ("taskmanagers", 'i'),
            ("slots-total", 'i'),
            ("slots-available", 'i'),
            ("jobs-running", 'i'),
            ("jobs-finished", 'i'),
            ("jobs-cancelled", 'i'),
            ("jobs-failed", 'i'),
            ("flink-version", 's'),
            ("flink-commit", 's'),
        ],
    );

    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "--detached",
        "-p",
        "2",
        "keyed-sum",
        "--rate",
        "2000",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let job = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .to_string();

    let details = http.poll("the job runs", &format!("/jobs/{job}"), |d| {
        d["state"] == "RUNNING"
            && d["vertices"]
                .as_array()
                .is_some_and(|vs| vs.iter().all(|v| v["status"] == "RUNNING"))
    });
    assert_fields(
        "/jobs/:jobid",
        &details,
        &[
            ("jid", 's'),
            ("name", 's'),
            ("isStoppable", 'b'),
            ("state", 's'),
            ("start-time", 'i'),
            ("end-time", 'i'),
            ("duration", 'i'),
            ("maxParallelism", 'i'),
            ("now", 'i'),
            ("timestamps", 'o'),
            ("vertices", 'a'),
            ("status-counts", 'o'),
            ("plan", 'o'),
        ],
    );
    assert_eq!(details["jid"], job.as_str());
    assert_eq!(details["end-time"], -1, "a running job has no end time");
    let vertices = details["vertices"].as_array().unwrap();
    assert!(!vertices.is_empty());
    // The plan as Flink's JsonPlanGenerator writes it: one node per vertex; a source's
    // has no `inputs`, every other one names the vertices it reads.
    let nodes = details["plan"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), vertices.len(), "{details}");
    assert!(nodes[0].get("inputs").is_none(), "{}", nodes[0]);
    for n in &nodes[1..] {
        let inputs = n["inputs"].as_array().unwrap_or_else(|| panic!("{n}"));
        assert!(!inputs.is_empty(), "{n}");
        for i in inputs {
            assert_fields(
                "plan input",
                i,
                &[
                    ("num", 'i'),
                    ("id", 's'),
                    ("ship_strategy", 's'),
                    ("exchange", 's'),
                ],
            );
            assert!(vertices.iter().any(|v| v["id"] == i["id"]), "{i}");
        }
    }
    for v in vertices {
        assert!(is_hex32(&v["id"]), "vertex id {}", v["id"]);
        assert_fields(
            "vertex",
            v,
            &[
                ("id", 's'),
                ("name", 's'),
                ("maxParallelism", 'i'),
                ("parallelism", 'i'),
                ("status", 's'),
                ("start-time", 'i'),
                ("end-time", 'i'),
                ("duration", 'i'),
                ("tasks", 'o'),
                ("metrics", 'o'),
            ],
        );
        assert_fields(
            "vertex metrics",
            &v["metrics"],
            &[
                ("read-bytes", 'i'),
                ("read-bytes-complete", 'b'),
                ("write-bytes", 'i'),
                ("write-bytes-complete", 'b'),
                ("read-records", 'i'),
                ("read-records-complete", 'b'),
                ("write-records", 'i'),
                ("write-records-complete", 'b'),
            ],
        );
        assert_eq!(v["tasks"]["RUNNING"], v["parallelism"]);
    }
    http.ok(&format!("/jobs/{job}"));

    let jobs = http.ok("/jobs");
    assert_eq!(
        jobs,
        serde_json::json!({"jobs": [{"id": job, "status": "RUNNING"}]})
    );
    let overview = http.ok("/jobs/overview");
    let entry = &overview["jobs"][0];
    assert_fields(
        "/jobs/overview",
        entry,
        &[
            ("jid", 's'),
            ("name", 's'),
            ("state", 's'),
            ("start-time", 'i'),
            ("end-time", 'i'),
            ("duration", 'i'),
            ("last-modification", 'i'),
            ("tasks", 'o'),
        ],
    );
    let total: u64 = vertices
        .iter()
        .map(|v| v["parallelism"].as_u64().unwrap())
        .sum();
    assert_eq!(entry["tasks"]["total"], total);
    assert_eq!(entry["tasks"]["running"], total);
    assert_eq!(http.ok("/overview")["jobs-running"], 1);

    assert_eq!(
        http.ok(&format!("/jobs/{job}/status")),
        serde_json::json!({"status": "RUNNING"})
    );
    let exceptions = http.ok(&format!("/jobs/{job}/exceptions"));
    assert_fields(
        "exceptions",
        &exceptions["exceptionHistory"],
        &[("entries", 'a'), ("truncated", 'b')],
    );
    assert_eq!(
        http.ok(&format!("/jobs/{job}/execution-result")),
        serde_json::json!({"status": {"id": "IN_PROGRESS"}})
    );

    let vid = vertices[0]["id"].as_str().unwrap();
    let vertex = http.ok(&format!("/jobs/{job}/vertices/{vid}"));
    assert_fields(
        "vertex details",
        &vertex,
        &[
            ("id", 's'),
            ("name", 's'),
            ("parallelism", 'i'),
            ("maxParallelism", 'i'),
            ("now", 'i'),
            ("subtasks", 'a'),
        ],
    );
    let subtasks = vertex["subtasks"].as_array().unwrap();
    assert_eq!(
        subtasks.len() as u64,
        vertices[0]["parallelism"].as_u64().unwrap()
    );
    for s in subtasks {
        assert_fields(
            "subtask",
            s,
            &[
                ("subtask", 'i'),
                ("status", 's'),
                ("attempt", 'i'),
                ("endpoint", 's'),
                ("start-time", 'i'),
                ("end-time", 'i'),
                ("duration", 'i'),
                ("metrics", 'o'),
                ("taskmanager-id", 's'),
            ],
        );
        assert_eq!(s["status"], "RUNNING");
        assert_eq!(s["taskmanager-id"], tm_id.as_str());
    }

    let tms = http.ok("/taskmanagers");
    let tm = &tms["taskmanagers"][0];
    assert_fields(
        "taskmanager",
        tm,
        &[
            ("id", 's'),
            ("path", 's'),
            ("dataPort", 'i'),
            ("jmxPort", 'i'),
            ("timeSinceLastHeartbeat", 'i'),
            ("slotsNumber", 'i'),
            ("freeSlots", 'i'),
            ("totalResource", 'o'),
            ("freeResource", 'o'),
            ("hardware", 'o'),
            ("memoryConfiguration", 'o'),
        ],
    );
    assert_eq!(tm["id"], tm_id.as_str());
    assert_eq!(tm["slotsNumber"], 2);
    assert_eq!(tm["freeSlots"], 0, "both slots run the job");
    // rill's own: the TaskManager's resident memory from its heartbeats (1 s apart), and
    // the time since the last one.
    let tms = http.poll("the TaskManager reports its memory", "/taskmanagers", |t| {
        t["taskmanagers"][0]["processMemoryRss"]
            .as_i64()
            .is_some_and(|b| b > 1 << 20)
    });
    let since = tms["taskmanagers"][0]["timeSinceLastHeartbeat"].as_u64();
    assert!(since.is_some_and(|ms| ms < 60_000), "{tms}");
    let detail = http.ok(&format!("/taskmanagers/{tm_id}"));
    assert_fields(
        "taskmanager details",
        &detail,
        &[("id", 's'), ("allocatedSlots", 'a'), ("metrics", 'o')],
    );

    // Errors: Flink's body, a fitting 4xx, and the server answers on.
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_error("unknown job", http.get(&format!("/jobs/{unknown}")), 404);
    assert_error(
        "unknown job status",
        http.get(&format!("/v1/jobs/{unknown}/status")),
        404,
    );
    assert_error(
        "unknown job result",
        http.get(&format!("/jobs/{unknown}/execution-result")),
        404,
    );
    assert_error("malformed job id", http.get("/jobs/not-a-job-id"), 400);
    assert_error("job id not UTF-8", http.get("/jobs/%FF/status"), 400);
    assert_error(
        "unknown vertex",
        http.get(&format!("/jobs/{job}/vertices/{}", "f".repeat(32))),
        404,
    );
    assert_error(
        "malformed vertex id",
        http.get(&format!("/jobs/{job}/vertices/v0")),
        400,
    );
    assert_error("unknown TaskManager", http.get("/taskmanagers/nope"), 404);
    assert_error("unknown route", http.get("/no/such/route"), 404);
    assert_error(
        "a route not built yet",
        http.get(&format!("/jobs/{job}/accumulators")),
        404,
    );
    // Job metrics (Flink's JobMetricsHandler): the ids, then the values as strings.
    assert_eq!(
        http.ok(&format!("/jobs/{job}/metrics")),
        serde_json::json!([{"id": "numRestarts"}, {"id": "fullRestarts"}])
    );
    assert_eq!(
        http.ok(&format!("/jobs/{job}/metrics?get=numRestarts,noSuchMetric")),
        serde_json::json!([{"id": "numRestarts", "value": "0"}])
    );
    assert_error(
        "job metrics of an unknown job",
        http.get(&format!("/jobs/{}/metrics", "0".repeat(32))),
        404,
    );
    // A job without checkpointing: empty statistics, no configuration (404, as Flink),
    // and triggers refused (409).
    let stats = http.ok(&format!("/jobs/{job}/checkpoints"));
    assert_eq!(stats["counts"]["completed"], 0, "{stats}");
    assert_eq!(stats["history"], serde_json::json!([]));
    assert_error(
        "checkpoint config without checkpointing",
        http.get(&format!("/jobs/{job}/checkpoints/config")),
        404,
    );
    assert_error(
        "checkpoint without checkpointing",
        http.post(&format!("/jobs/{job}/checkpoints"), ""),
        409,
    );
    assert_error(
        "savepoint without checkpointing",
        http.post(&format!("/jobs/{job}/savepoints"), "{}"),
        409,
    );
    assert_error("wrong method", http.delete(&format!("/jobs/{job}")), 405);
    assert_error(
        "malformed JSON",
        http.patch(&format!("/jobs/{job}?mode=cancel"), "{not json"),
        400,
    );
    assert_error(
        "unsupported mode",
        http.patch(&format!("/jobs/{job}?mode=stop"), ""),
        400,
    );
    assert_error(
        "malformed maxExceptions",
        http.get(&format!("/jobs/{job}/exceptions?maxExceptions=-3")),
        400,
    );
    assert_error(
        "cancel an unknown job",
        http.patch(&format!("/jobs/{unknown}?mode=cancel"), ""),
        404,
    );
    assert_eq!(
        http.get(&format!("/jobs/{job}/status")).1["status"],
        "RUNNING"
    );

    // Cancel: 202 with `{}`, then CANCELED, its result, and 409 for a second cancel.
    let (status, body) = http.patch(&format!("/v1/jobs/{job}?mode=cancel"), "{}");
    assert_eq!((status, body), (202, serde_json::json!({})));
    http.poll("the job is canceled", &format!("/jobs/{job}/status"), |s| {
        s["status"] == "CANCELED"
    });
    let result = http.ok(&format!("/jobs/{job}/execution-result"));
    assert_eq!(result["status"]["id"], "COMPLETED");
    let r = &result["job-execution-result"];
    assert_fields(
        "job-execution-result",
        r,
        &[
            ("id", 's'),
            ("application-status", 's'),
            ("accumulator-results", 'o'),
            ("net-runtime", 'i'),
        ],
    );
    assert_eq!(r["id"], job.as_str());
    assert_eq!(r["application-status"], "CANCELED");
    let ended = http.ok(&format!("/jobs/{job}"));
    assert_eq!(ended["state"], "CANCELED");
    assert!(ended["end-time"].as_i64().unwrap() > 0, "{ended}");
    assert_error(
        "cancel an ended job",
        http.patch(&format!("/jobs/{job}?mode=cancel"), ""),
        409,
    );
    let overview = http.ok("/overview");
    assert_eq!(overview["jobs-cancelled"], 1);
    assert_eq!(overview["jobs-running"], 0);

    // A bounded job: FINISHED, SUCCEEDED, and its exact record counts.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b a\nc a b\n").unwrap();
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "wordcount",
        "--input",
    ])
    .arg(&input)
    .arg("--output")
    .arg(dir.path().join("out.txt"));
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let bounded = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .to_string();
    let result = http.ok(&format!("/jobs/{bounded}/execution-result"));
    assert_eq!(
        result["job-execution-result"]["application-status"],
        "SUCCEEDED"
    );
    let finished = http.ok(&format!("/jobs/{bounded}"));
    assert_eq!(finished["state"], "FINISHED");
    let source = &finished["vertices"][0];
    assert_eq!(source["status"], "FINISHED");
    assert_eq!(source["metrics"]["write-records"], 6, "{finished}");
    assert_eq!(source["metrics"]["write-records-complete"], true);
    let overview = http.ok("/overview");
    assert_eq!(overview["jobs-finished"], 1);
    let listed = http.ok("/jobs/overview");
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2);
}

#[test]
fn checkpoints_savepoints_and_stop_through_flinks_rest_api() {
    let dir = tempfile::tempdir().unwrap();
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!(
            "state.checkpoints.dir=file://{}",
            dir.path().join("chk").display()
        ),
        format!(
            "state.savepoints.dir=file://{}",
            dir.path().join("sp").display()
        ),
    ];
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (mut jm, addr) = jobmanager(&defines);
    let http = Http::new(&rest_url(&mut jm));
    let _tm = taskmanager(addr, 2, &[]);
    let input = running_count_input(dir.path(), 4000);
    let output = dir.path().join("out").display().to_string();
    let job = submit(
        addr,
        &[
            "-p",
            "1",
            "running-count",
            "--rate",
            "100",
            "--input",
            &input,
            "--output",
            &output,
        ],
    );
    wait_running(&http, &job);

    // Periodic checkpoints show in Flink's CheckpointingStatistics.
    let stats = http.poll(
        "a periodic checkpoint completes",
        &format!("/jobs/{job}/checkpoints"),
        |s| s["counts"]["completed"].as_u64().unwrap_or(0) >= 1,
    );
    http.ok(&format!("/jobs/{job}/checkpoints"));
    assert_fields(
        "checkpoints",
        &stats,
        &[
            ("counts", 'o'),
            ("summary", 'o'),
            ("latest", 'o'),
            ("history", 'a'),
        ],
    );
    assert_fields(
        "counts",
        &stats["counts"],
        &[
            ("restored", 'i'),
            ("total", 'i'),
            ("in_progress", 'i'),
            ("completed", 'i'),
            ("failed", 'i'),
        ],
    );
    for k in ["checkpointed_size", "state_size", "end_to_end_duration"] {
        assert_fields(
            k,
            &stats["summary"][k],
            &[
                ("min", 'i'),
                ("max", 'i'),
                ("avg", 'i'),
                ("p50", 'n'),
                ("p90", 'n'),
                ("p95", 'n'),
                ("p99", 'n'),
                ("p999", 'n'),
            ],
        );
    }
    let latest = &stats["latest"]["completed"];
    assert_fields("latest completed", latest, &CHECKPOINT_FIELDS);
    assert_fields(
        "latest completed",
        latest,
        &[("external_path", 's'), ("discarded", 'b')],
    );
    assert_eq!(latest["status"], "COMPLETED");
    assert_eq!(latest["className"], "completed");
    assert_eq!(latest["is_savepoint"], false);
    assert_eq!(latest["num_acknowledged_subtasks"], latest["num_subtasks"]);
    let history = stats["history"].as_array().unwrap();
    assert!(!history.is_empty());
    for c in history {
        assert_fields("history entry", c, &CHECKPOINT_FIELDS);
    }
    let ids: Vec<u64> = history.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // A checkpoint triggered over REST: its trigger id, then COMPLETED with its id.
    let trigger = http.trigger(&format!("/jobs/{job}/checkpoints"), "");
    let operation = http.completed(
        "the triggered checkpoint",
        &format!("/jobs/{job}/checkpoints/{trigger}"),
    );
    let checkpoint = operation["checkpointId"]
        .as_u64()
        .unwrap_or_else(|| panic!("no checkpointId in {operation}"));
    http.ok(&format!("/jobs/{job}/checkpoints/{trigger}"));
    let stats = http.ok(&format!("/jobs/{job}/checkpoints"));
    assert!(
        stats["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == checkpoint && c["status"] == "COMPLETED"),
        "checkpoint {checkpoint} not in {stats}"
    );
    // A checkpoint's trigger id is not a savepoint's.
    assert_error(
        "checkpoint trigger on the savepoint route",
        http.get(&format!("/jobs/{job}/savepoints/{trigger}")),
        404,
    );

    // A savepoint into a directory of the client's, polled to COMPLETED; the job runs on.
    let target = dir.path().join("rest-savepoints");
    let body = serde_json::json!({
        "target-directory": format!("file://{}", target.display()),
        "cancel-job": false,
        "formatType": "CANONICAL",
    });
    let trigger = http.trigger(&format!("/v1/jobs/{job}/savepoints"), &body.to_string());
    let operation = http.completed(
        "the savepoint",
        &format!("/jobs/{job}/savepoints/{trigger}"),
    );
    let sp = savepoint_dir(&operation);
    assert!(sp.starts_with(&target), "{}", sp.display());
    assert_error(
        "savepoint trigger on the checkpoint route",
        http.get(&format!("/jobs/{job}/checkpoints/{trigger}")),
        404,
    );
    assert_eq!(http.ok(&format!("/jobs/{job}/status"))["status"], "RUNNING");
    let stats = http.ok(&format!("/jobs/{job}/checkpoints"));
    let latest_sp = &stats["latest"]["savepoint"];
    assert_eq!(latest_sp["is_savepoint"], true, "{stats}");
    assert_eq!(latest_sp["checkpoint_type"], "SAVEPOINT");

    // The client's own trigger id is honoured, and a retry with it starts nothing new.
    let mine = "abcdef0123456789abcdef0123456789";
    let body = serde_json::json!({ "triggerId": mine }).to_string();
    assert_eq!(
        http.trigger(&format!("/jobs/{job}/savepoints"), &body),
        mine
    );
    assert_eq!(
        http.trigger(&format!("/jobs/{job}/savepoints"), &body),
        mine
    );
    let operation = http.completed(
        "the savepoint with the client's trigger id",
        &format!("/jobs/{job}/savepoints/{mine}"),
    );
    let sp = savepoint_dir(&operation);
    assert!(sp.starts_with(dir.path().join("sp")), "{}", sp.display());

    // Errors: Flink's body and a fitting 4xx, never a 500.
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_error(
        "savepoint of an unknown job",
        http.post(&format!("/jobs/{unknown}/savepoints"), "{}"),
        404,
    );
    assert_error(
        "checkpoint of an unknown job",
        http.post(&format!("/jobs/{unknown}/checkpoints"), ""),
        404,
    );
    assert_error(
        "trigger status of an unknown job",
        http.get(&format!("/jobs/{unknown}/savepoints/{trigger}")),
        404,
    );
    assert_error(
        "unknown trigger id",
        http.get(&format!("/jobs/{job}/savepoints/{}", "e".repeat(32))),
        404,
    );
    assert_error(
        "unknown request of rill's form",
        http.get(&format!(
            "/jobs/{job}/checkpoints/0000000000000001000000000000ffff"
        )),
        404,
    );
    assert_error(
        "malformed trigger id",
        http.get(&format!("/jobs/{job}/savepoints/not-a-trigger")),
        400,
    );
    assert_error(
        "malformed checkpoint trigger id",
        http.get(&format!("/jobs/{job}/checkpoints/123")),
        400,
    );
    for (what, path, body) in [
        ("malformed JSON", "savepoints", "{not json"),
        (
            "unknown field",
            "savepoints",
            r#"{"target-directory":"/x","bogus":1}"#,
        ),
        ("wrong type", "savepoints", r#"{"cancel-job":"yes"}"#),
        (
            "malformed triggerId",
            "savepoints",
            r#"{"triggerId":"xyz"}"#,
        ),
        ("not an object", "savepoints", "[]"),
        ("malformed stop body", "stop", "{\"drain\":"),
        (
            "Flink's other spelling",
            "stop",
            r#"{"target-directory":"/x"}"#,
        ),
        (
            "unsupported checkpoint type",
            "checkpoints",
            r#"{"checkpointType":"FULL"}"#,
        ),
        ("malformed checkpoint body", "checkpoints", "nope"),
    ] {
        assert_error(what, http.post(&format!("/jobs/{job}/{path}"), body), 400);
    }
    assert_error("GET /stop", http.get(&format!("/jobs/{job}/stop")), 405);
    assert_eq!(http.ok(&format!("/jobs/{job}/status"))["status"], "RUNNING");

    // Stop-with-savepoint over REST: polled through the savepoints route; the job ends
    // FINISHED, and the trigger still answers after the job ended.
    let stopped = dir.path().join("stopped");
    let body = serde_json::json!({
        "targetDirectory": format!("file://{}", stopped.display()),
        "drain": false,
    });
    let trigger = http.trigger(&format!("/jobs/{job}/stop"), &body.to_string());
    let operation = http.completed("the stop", &format!("/jobs/{job}/savepoints/{trigger}"));
    let sp = savepoint_dir(&operation);
    assert!(sp.starts_with(&stopped), "{}", sp.display());
    http.poll("the job finishes", &format!("/jobs/{job}/status"), |s| {
        s["status"] == "FINISHED"
    });
    let after = http.ok(&format!("/jobs/{job}/savepoints/{trigger}"));
    assert_eq!(after["operation"], operation, "{after}");
    assert_error(
        "savepoint of a finished job",
        http.post(&format!("/jobs/{job}/savepoints"), "{}"),
        409,
    );
    assert_error(
        "checkpoint of a finished job",
        http.post(&format!("/jobs/{job}/checkpoints"), ""),
        409,
    );
    let stats = http.ok(&format!("/jobs/{job}/checkpoints"));
    assert!(
        stats["counts"]["completed"].as_u64().unwrap() >= 3,
        "{stats}"
    );

    // `cancel-job: true`: a stop-with-savepoint without drain; rill ends the job
    // FINISHED (Flink's deprecated cancel-with-savepoint ends it CANCELED).
    let output = dir.path().join("out2").display().to_string();
    let second = submit(
        addr,
        &[
            "-p",
            "1",
            "running-count",
            "--rate",
            "100",
            "--input",
            &input,
            "--output",
            &output,
        ],
    );
    wait_running(&http, &second);
    let trigger = http.trigger(
        &format!("/jobs/{second}/savepoints"),
        r#"{"cancel-job": true}"#,
    );
    let operation = http.completed(
        "the cancel-job savepoint",
        &format!("/jobs/{second}/savepoints/{trigger}"),
    );
    savepoint_dir(&operation);
    http.poll("the job ends", &format!("/jobs/{second}/status"), |s| {
        s["status"] == "FINISHED"
    });
}

/// `GET /jobs/:jobid/checkpoints/config` reports the cluster's settings in Flink's
/// spelling.
#[test]
fn checkpoint_config_reports_the_clusters_settings() {
    let dir = tempfile::tempdir().unwrap();
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        "execution.checkpointing.timeout=30s".to_owned(),
        "execution.checkpointing.mode=at_least_once".to_owned(),
        "execution.checkpointing.tolerable-failed-checkpoints=2".to_owned(),
        format!(
            "state.checkpoints.dir=file://{}",
            dir.path().join("chk").display()
        ),
    ];
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (mut jm, addr) = jobmanager(&defines);
    let http = Http::new(&rest_url(&mut jm));
    let _tm = taskmanager(addr, 1, &[]);
    let input = running_count_input(dir.path(), 2000);
    let output = dir.path().join("out").display().to_string();
    let job = submit(
        addr,
        &[
            "running-count",
            "--rate",
            "100",
            "--input",
            &input,
            "--output",
            &output,
        ],
    );
    wait_running(&http, &job);
    let config = http.ok(&format!("/jobs/{job}/checkpoints/config"));
    assert_fields(
        "checkpoint config",
        &config,
        &[
            ("mode", 's'),
            ("interval", 'i'),
            ("timeout", 'i'),
            ("min_pause", 'i'),
            ("max_concurrent", 'i'),
            ("externalization", 'o'),
            ("state_backend", 's'),
            ("checkpoint_storage", 's'),
            ("unaligned_checkpoints", 'b'),
            ("tolerable_failed_checkpoints", 'i'),
        ],
    );
    assert_eq!(config["mode"], "at_least_once");
    assert_eq!(config["interval"], 200);
    assert_eq!(config["timeout"], 30_000);
    assert_eq!(config["tolerable_failed_checkpoints"], 2);
    assert_eq!(config["unaligned_checkpoints"], false);
}

#[test]
fn a_non_loopback_rest_address_needs_a_token() {
    let mut cmd = rill();
    cmd.args([
        "-D",
        "rest.address=0.0.0.0",
        "jobmanager",
        "--bind",
        "127.0.0.1:0",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("rest.address") && said.contains("rest.auth.token"),
        "the refusal names both keys: {said}"
    );
}

#[test]
fn a_rest_token_guards_every_route_and_the_server_stays_up() {
    const TOKEN: &str = "e2e-rest-token-7f3a";
    let (mut jm, addr) = jobmanager(&[&format!("rest.auth.token={TOKEN}")]);
    let url = rest_url(&mut jm);
    let (_tm, _) = taskmanager(addr, 1, &[]);
    let open = Http::new(&url);
    let bearer = format!("Bearer {TOKEN}");
    let refused: [(&str, Option<&str>); 6] = [
        ("/overview", None),
        ("/overview", Some("Bearer not-the-token")),
        ("/overview", Some(&bearer[..bearer.len() - 1])),
        ("/overview", Some(TOKEN)),
        ("/v1/jobs", Some("Basic ZTJlOmUyZQ==")),
        ("/no/such/route", None),
    ];
    for (path, authorization) in refused {
        let (status, body, challenge) = open.get_authorized(path, authorization);
        assert_error(
            &format!("GET {path} with {authorization:?}"),
            (status, body),
            401,
        );
        assert_eq!(challenge, "Bearer", "GET {path}");
    }
    // Other methods are refused before anything happens.
    assert_error(
        "POST /jobs without a token",
        open.post("/jobs", r#"{"job":"keyed-sum"}"#),
        401,
    );
    assert_error(
        "PATCH without a token",
        open.patch(&format!("/jobs/{}", "0".repeat(32)), "{}"),
        401,
    );
    // The server is still up, and the right token gets through.
    let http = Http::with_token(&url, TOKEN);
    let overview = http.poll("the TaskManager registers", "/overview", |o| {
        o["taskmanagers"] == 1
    });
    assert_fields("/overview", &overview, &[("taskmanagers", 'i')]);
    let (status, _, _) = open.get_authorized("/jobs", Some(&format!("bearer {TOKEN}")));
    assert_eq!(status, 200, "the scheme is case-insensitive");
    assert_error(
        "an unknown route, authorized",
        http.get("/no/such/route"),
        404,
    );
    assert_eq!(http.get("/jobs").0, 200);
}

/// Flink's `SubtaskBackPressureInfo` fields.
const SUBTASK_BACKPRESSURE_FIELDS: [(&str, char); 6] = [
    ("subtask", 'i'),
    ("attempt-number", 'i'),
    ("backpressureLevel", 's'),
    ("ratio", 'n'),
    ("idleRatio", 'n'),
    ("busyRatio", 'n'),
];

/// Flink's `AggregatedMetric` fields (`skew` since Flink 1.19).
const AGGREGATED_METRIC_FIELDS: [(&str, char); 6] = [
    ("id", 's'),
    ("min", 'n'),
    ("max", 'n'),
    ("avg", 'n'),
    ("sum", 'n'),
    ("skew", 'n'),
];

#[test]
fn vertex_metrics_backpressure_watermarks_and_job_submission() {
    let (mut jm, addr) = jobmanager(&[]);
    let http = Http::new(&rest_url(&mut jm));
    let (_tm, _) = taskmanager(addr, 2, &[]);

    // Submission by name, rill's own POST /jobs.
    let (status, answer) = http.post(
        "/jobs",
        r#"{"job":"keyed-sum","args":{"keys":10,"rate":2000},"parallelism":2}"#,
    );
    assert_eq!(status, 200, "POST /jobs: {answer}");
    assert!(is_hex32(&answer["jobid"]), "POST /jobs: {answer}");
    let job = answer["jobid"].as_str().unwrap().to_string();
    wait_running(&http, &job);
    let details = http.ok(&format!("/jobs/{job}"));
    assert_eq!(details["name"], "keyed-sum");
    let vertices: Vec<(String, u64)> = details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["parallelism"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(vertices.len(), 2, "{details}");

    for (vertex, parallelism) in &vertices {
        let base = format!("/jobs/{job}/vertices/{vertex}");

        // Backpressure (Flink's JobVertexBackPressureInfo): `deprecated` until the
        // subtasks' first figures arrive, then `ok`.
        let bp = http.poll(
            "backpressure figures",
            &format!("{base}/backpressure"),
            |b| {
                let s = b["status"].as_str().unwrap_or("");
                assert!(s == "ok" || s == "deprecated", "{b}");
                s == "ok"
            },
        );
        assert_fields(
            "backpressure",
            &bp,
            &[
                ("status", 's'),
                ("backpressureLevel", 's'),
                ("end-timestamp", 'i'),
                ("subtasks", 'a'),
            ],
        );
        let levels = ["ok", "low", "high"];
        assert!(
            levels.contains(&bp["backpressureLevel"].as_str().unwrap()),
            "{bp}"
        );
        let subtasks = bp["subtasks"].as_array().unwrap();
        assert_eq!(subtasks.len() as u64, *parallelism, "{bp}");
        for (i, s) in subtasks.iter().enumerate() {
            assert_fields("backpressure subtask", s, &SUBTASK_BACKPRESSURE_FIELDS);
            assert_eq!(s["subtask"], i);
            assert!(
                levels.contains(&s["backpressureLevel"].as_str().unwrap()),
                "{s}"
            );
            for r in ["ratio", "idleRatio", "busyRatio"] {
                let r = s[r].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&r), "{s}");
            }
        }

        // Aggregated subtask metrics: the ids without `get`, aggregates with it.
        let ids = http.ok(&format!("{base}/subtasks/metrics"));
        let ids: Vec<&str> = ids
            .as_array()
            .unwrap_or_else(|| panic!("a list of metrics: {ids}"))
            .iter()
            .map(|m| {
                assert_fields("metric id", m, &[("id", 's')]);
                m["id"].as_str().unwrap()
            })
            .collect();
        for id in [
            "numRecordsIn",
            "numRecordsOut",
            "numBytesIn",
            "numBytesOut",
            "inPoolUsage",
            "outPoolUsage",
        ] {
            assert!(ids.contains(&id), "{id} in {ids:?}");
        }
        let pools = http.ok(&format!(
            "{base}/subtasks/metrics?get=inPoolUsage,outPoolUsage"
        ));
        assert_eq!(pools.as_array().unwrap().len(), 2, "{pools}");
        for m in pools.as_array().unwrap() {
            for agg in ["min", "max", "avg"] {
                let share = m[agg].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&share), "a share of buffers: {m}");
            }
        }
        let get = format!("{base}/subtasks/metrics?get=numRecordsIn,numRecordsOut,noSuchMetric");
        let metrics = http.ok(&get);
        let metrics = metrics.as_array().unwrap();
        assert_eq!(metrics.len(), 2, "unknown ids are left out: {metrics:?}");
        for m in metrics {
            assert_fields("aggregated metric", m, &AGGREGATED_METRIC_FIELDS);
            let n = |k: &str| m[k].as_f64().unwrap();
            assert!(
                n("min") <= n("avg") && n("avg") <= n("max") && n("max") <= n("sum"),
                "{m}"
            );
        }
        let only = http.ok(&format!(
            "{base}/subtasks/metrics?get=numRecordsIn&agg=sum,max"
        ));
        assert_eq!(only.as_array().unwrap().len(), 1);
        let mut keys: Vec<&str> = only[0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(keys, ["id", "max", "sum"]);
        assert_error(
            "an unknown aggregation",
            http.get(&format!(
                "{base}/subtasks/metrics?get=numRecordsIn&agg=median"
            )),
            400,
        );

        // Watermarks: one `<subtask>.currentInputWatermark` per subtask, its value a
        // string holding a long (Flink's metric values are strings).
        let wm = http.ok(&format!("{base}/watermarks"));
        let wm = wm.as_array().unwrap_or_else(|| panic!("a list: {wm}"));
        assert_eq!(wm.len() as u64, *parallelism);
        for (i, w) in wm.iter().enumerate() {
            assert_fields("watermark", w, &[("id", 's'), ("value", 's')]);
            assert_eq!(w["id"], format!("{i}.currentInputWatermark"));
            let value: i64 = w["value"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                value,
                i64::MIN,
                "rill does not track watermarks per task yet"
            );
        }

        assert_error(
            "DELETE on backpressure",
            http.delete(&format!("{base}/backpressure")),
            405,
        );
    }

    // The source's records out reach the REST API once heartbeats carried them.
    let (source, _) = &vertices[0];
    let sum_path = format!("/jobs/{job}/vertices/{source}/subtasks/metrics?get=numRecordsOut");
    http.poll("the source's records are counted", &sum_path, |m| {
        m[0]["sum"].as_f64().is_some_and(|s| s > 0.0)
    });

    // Bad requests: documented error bodies, never 500.
    let unknown_job = "0".repeat(32);
    let (vertex, _) = &vertices[0];
    for route in ["backpressure", "subtasks/metrics", "watermarks"] {
        assert_error(
            route,
            http.get(&format!("/jobs/{unknown_job}/vertices/{vertex}/{route}")),
            404,
        );
        assert_error(
            route,
            http.get(&format!("/jobs/{job}/vertices/{}/{route}", "f".repeat(32))),
            404,
        );
        assert_error(
            route,
            http.get(&format!("/jobs/{job}/vertices/v1/{route}")),
            400,
        );
        assert_error(
            route,
            http.get(&format!("/jobs/nope/vertices/{vertex}/{route}")),
            400,
        );
    }
    assert_error(
        "bad subtasks",
        http.get(&format!(
            "/jobs/{job}/vertices/{vertex}/subtasks/metrics?get=numRecordsIn&subtasks=x"
        )),
        400,
    );
    for (what, body) in [
        ("malformed JSON", "{\"job\":"),
        ("not an object", "[1,2]"),
        ("no job name", r#"{"args":{}}"#),
        ("unknown job", r#"{"job":"no-such-job"}"#),
        (
            "unknown argument",
            r#"{"job":"keyed-sum","args":{"bogus":1}}"#,
        ),
        (
            "ill-typed argument",
            r#"{"job":"keyed-sum","args":{"rows":"many"}}"#,
        ),
        (
            "refused argument",
            r#"{"job":"keyed-sum","args":{"keys":0}}"#,
        ),
        (
            "missing argument",
            r#"{"job":"wordcount","args":{"input":"/tmp/x"}}"#,
        ),
        ("zero parallelism", r#"{"job":"keyed-sum","parallelism":0}"#),
    ] {
        assert_error(
            &format!("POST /jobs, {what}"),
            http.post("/jobs", body),
            400,
        );
    }
    assert_error("DELETE /jobs", http.delete("/jobs"), 405);

    // Still serving; the job cancels.
    let (status, _) = http.patch(&format!("/jobs/{job}?mode=cancel"), "");
    assert_eq!(status, 202);
    http.poll("the job is canceled", &format!("/jobs/{job}/status"), |s| {
        s["status"] == "CANCELED"
    });
    // An ended job's figures are final: still answered.
    let bp = http.ok(&format!("/jobs/{job}/vertices/{vertex}/backpressure"));
    assert!(bp["status"].is_string(), "{bp}");
}
