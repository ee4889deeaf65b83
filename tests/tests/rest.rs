//! The JobManager's Flink-compatible REST API against a real `rill jobmanager` and
//! `rill taskmanager` on 127.0.0.1: every route with Flink's field names and types, the
//! error bodies, and cancelling a job through `PATCH /jobs/:jobid`.

use std::time::{Duration, Instant};

use serde_json::Value;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// A plain HTTP client; every request is bounded, and 4xx/5xx are answers, not errors.
struct Http {
    agent: ureq::Agent,
    base: String,
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
        }
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
        Self::answer(&format!("GET {path}"), self.agent.get(&url).call())
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
            .agent
            .patch(&url)
            .header("Content-Type", "application/json");
        Self::answer(&format!("PATCH {path}"), req.send(body))
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        Self::answer(&format!("DELETE {path}"), self.agent.delete(&url).call())
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

#[test]
fn flinks_rest_api_reports_and_cancels_a_job() {
    let (mut jm, addr) = jobmanager(&[]);
    let line = jm.wait_for_line("rill: REST endpoint ", Duration::from_secs(20));
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let http = Http::new(&url);
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
        http.get(&format!("/jobs/{job}/checkpoints")),
        404,
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
