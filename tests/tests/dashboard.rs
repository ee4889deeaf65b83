//! The web dashboard against a real `rill jobmanager` and `rill taskmanager` on
//! 127.0.0.1: its page and assets as HTTP answers, and a real headless Chromium, driven
//! over WebDriver by `chromedriver`, that finds a running job's name, state and vertex
//! count on the page, sees its checkpoints, takes a savepoint and cancels the job with
//! the page's buttons (the job then reaches CANCELED, as REST reports), stops a second
//! job with a savepoint (FINISHED), and that works with a token pasted into the page.
//!
//! The browser tests need Debian's `chromium` and `chromium-driver`; without them they
//! print a notice and pass, unless `RILL_REQUIRE_BROWSER=1` (set by `.ci/run` once it
//! installed them), which makes a missing browser a failure.

use std::time::{Duration, Instant};

use serde_json::Value;
mod support;
use support::webdriver::{ChromeDriver, Session};
use support::*;

const LONG: Duration = Duration::from_secs(60);
/// How long the page may take to show what REST already reports (it refreshes every 2 s).
const PAGE: Duration = Duration::from_secs(30);

/// An HTTP answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn request(method: &str, url: &str, token: Option<&str>) -> Answer {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let r = match method {
        "GET" => {
            let mut r = a.get(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.call()
        }
        "POST" => a.post(url).send(""),
        _ => unreachable!("only GET and POST here"),
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: r.body_mut().read_to_string().unwrap(),
    }
}

fn json(a: &Answer, what: &str) -> Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", a.body))
}

/// Asserts Flink's error body `{"errors":["…"]}` with status `status`.
fn assert_error(what: &str, a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    let body = json(a, what);
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.as_str().is_some_and(|s| !s.is_empty())),
        "{what}: {body}"
    );
}

/// The REST base URL a JobManager printed.
fn rest_url(jm: &mut Proc) -> String {
    let line = jm.wait_for_line("rill: REST endpoint ", Duration::from_secs(20));
    line.trim().rsplit(' ').next().unwrap().to_string()
}

/// Polls `GET url` (with `token`) every 50 ms until `pred` holds for its JSON body.
fn poll(what: &str, url: &str, token: Option<&str>, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let a = request("GET", url, token);
        if a.status == 200 {
            let v = json(&a, what);
            if pred(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{what}: last answer {}", a.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A started driver, or `None` (with a notice) where the browser is not installed and
/// `RILL_REQUIRE_BROWSER` does not ask for it.
fn browser(test: &str) -> Option<ChromeDriver> {
    if !ChromeDriver::installed() {
        let required = std::env::var("RILL_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: RILL_REQUIRE_BROWSER=1 but {} or {} is missing (apt-get install chromium chromium-driver)",
            support::webdriver::CHROMEDRIVER,
            support::webdriver::CHROMIUM,
        );
        eprintln!(
            "NOTICE {test}: skipped: no headless browser ({} and {}); install Debian's chromium and chromium-driver, or set RILL_REQUIRE_BROWSER=1 to make this a failure",
            support::webdriver::CHROMEDRIVER,
            support::webdriver::CHROMIUM,
        );
        return None;
    }
    Some(ChromeDriver::start(Duration::from_secs(20)).unwrap_or_else(|e| panic!("{test}: {e}")))
}

/// `rill run --detached` of an unbounded keyed-sum at `jm`; returns the job id.
fn submit_keyed_sum(jm: std::net::SocketAddr) -> String {
    let (ok, stdout, stderr) = rill_out(
        LONG,
        &[
            "run",
            "--jobmanager",
            &jm.to_string(),
            "--detached",
            "-p",
            "2",
            "keyed-sum",
            "--rate",
            "2000",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    job_id_of(&stdout)
}

#[test]
fn the_dashboard_is_served_with_its_content_types_and_without_a_token() {
    const TOKEN: &str = "e2e-dashboard-token-51c9";
    let (mut jm, _) = jobmanager(&[&format!("rest.auth.token={TOKEN}")]);
    let rest = rest_url(&mut jm);

    // The page and its assets need no token: the page asks for it.
    let page = request("GET", &format!("{rest}/"), None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.body.starts_with("<!doctype html>"), "{}", page.body);
    for needle in [
        "/web/app.js",
        "/web/app.css",
        "id=\"token-input\"",
        "<title>rill</title>",
    ] {
        assert!(page.body.contains(needle), "{needle} in {}", page.body);
    }
    let index = request("GET", &format!("{rest}/index.html"), None);
    assert_eq!((index.status, &index.body), (200, &page.body));

    for (asset, content_type, needle) in [
        ("app.js", "text/javascript; charset=utf-8", "#cancel-job"),
        ("app.css", "text/css; charset=utf-8", ".badge"),
        ("favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let a = request("GET", &format!("{rest}/web/{asset}"), None);
        assert_eq!(a.status, 200, "{asset}: {}", a.body);
        assert_eq!(a.content_type, content_type, "{asset}");
        assert!(a.body.contains(needle), "{needle} in {asset}");
    }

    // An unknown asset is Flink's 404; wrong methods are 405; neither needs a token.
    for path in ["/web/nope.js", "/web/app.js/x", "/web/..%2Fapp.js"] {
        assert_error(path, &request("GET", &format!("{rest}{path}"), None), 404);
    }
    assert_error("POST /", &request("POST", &format!("{rest}/"), None), 405);
    // The API itself still needs the token.
    assert_error(
        "/overview without a token",
        &request("GET", &format!("{rest}/overview"), None),
        401,
    );
    let overview = request("GET", &format!("{rest}/overview"), Some(TOKEN));
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(json(&overview, "/overview")["taskmanagers"].is_u64());
}

/// Clicks the element matching `selector`, retrying while the page re-renders it.
fn click(s: &Session, selector: &str) {
    s.wait_for(&format!("click {selector}"), PAGE, |s| {
        match s.find(selector)? {
            Some(e) => s.click(&e).map(Some),
            None => Ok(None),
        }
    });
}

#[test]
fn a_headless_browser_shows_a_running_job_and_cancels_it_with_the_pages_button() {
    let Some(driver) = browser("dashboard cancel") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!(
        "state.checkpoints.dir=file://{}",
        dir.path().join("chk").display()
    );
    let (mut jm, addr) = jobmanager(&["execution.checkpointing.interval=500ms", &checkpoints]);
    let rest = rest_url(&mut jm);
    let (_tm, _) = taskmanager(addr, 2, &[]);
    let job = submit_keyed_sum(addr);
    let details = poll("the job runs", &format!("{rest}/jobs/{job}"), None, |d| {
        d["state"] == "RUNNING"
            && d["vertices"]
                .as_array()
                .is_some_and(|vs| vs.iter().all(|v| v["status"] == "RUNNING"))
    });
    let vertices = details["vertices"].as_array().unwrap().len();
    assert_eq!(vertices, 2, "keyed-sum: source and keyed sum: {details}");

    let s = driver.session().expect("a browser session");
    s.navigate(&format!("{rest}/")).expect("the page loads");
    // The overview lists the job; its link leads to the job's page.
    let link = format!("tr[data-job-id=\"{job}\"] a.job-link");
    let name = s.wait_for("the job in the list", PAGE, |s| s.text_of(&link));
    assert_eq!(name, "keyed-sum");
    let tms = s.wait_for("the TaskManager count", PAGE, |s| {
        Ok(s.text_of("#card-taskmanagers .value")?.filter(|t| t == "1"))
    });
    assert_eq!(tms, "1");
    click(&s, &link);

    let name = s.wait_for("the job's name", PAGE, |s| {
        Ok(s.text_of("#job-name")?.filter(|t| t != "…"))
    });
    assert_eq!(name, "keyed-sum");
    let state = s.wait_for("the job's state", PAGE, |s| {
        Ok(s.text_of("#job-state")?.filter(|t| t == "RUNNING"))
    });
    assert_eq!(state, "RUNNING");
    let count = s.wait_for("the graph's vertex count", PAGE, |s| {
        let Some(g) = s.find("#job-graph")? else {
            return Ok(None);
        };
        let count = s.attribute(&g, "data-vertex-count")?;
        let drawn = s.execute(
            "return document.querySelectorAll('#job-graph g.node').length",
            serde_json::json!([]),
        )?;
        let edges = s.execute(
            "return document.querySelectorAll('#job-graph g.edge').length",
            serde_json::json!([]),
        )?;
        Ok(Some((count, drawn, edges)))
    });
    assert_eq!(count.0.as_deref(), Some(vertices.to_string().as_str()));
    assert_eq!(count.1, vertices, "one node per vertex");
    assert_eq!(count.2, 1, "the source feeds the keyed vertex");
    // The vertex table has a row per vertex.
    let rows = s
        .execute(
            "return document.querySelectorAll('#vertex-table tbody tr').length",
            serde_json::json!([]),
        )
        .unwrap();
    assert_eq!(rows, vertices);

    // Periodic checkpoints show in the history.
    s.wait_for("a completed checkpoint on the page", PAGE, |s| {
        Ok(s.text_of("#checkpoint-table tbody tr")?
            .filter(|row| row.contains("COMPLETED")))
    });

    // A savepoint into the directory typed on the page; the page follows its trigger.
    let savepoints = dir.path().join("sp");
    let field = s
        .find("#savepoint-dir")
        .unwrap()
        .expect("a directory field");
    s.type_text(&field, &format!("file://{}", savepoints.display()))
        .unwrap();
    click(&s, "#trigger-savepoint");
    let done = s.wait_for("the savepoint completes", LONG, |s| {
        let Some(e) = s.find("#operation-status")? else {
            return Ok(None);
        };
        let status = s.attribute(&e, "data-status")?;
        let text = s.text(&e)?;
        assert!(
            !matches!(status.as_deref(), Some("ERROR" | "FAILED")),
            "the page says {text}"
        );
        Ok((status.as_deref() == Some("COMPLETED")).then_some(text))
    });
    let location = done
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_start_matches("file://");
    assert!(
        location.starts_with(&savepoints.display().to_string()),
        "{done}"
    );
    assert!(
        std::path::Path::new(location).join("_metadata").is_file(),
        "{done}"
    );

    click(&s, "#cancel-job");
    let accepted = s.wait_for("the cancel request's answer", PAGE, |s| {
        let Some(e) = s.find("#operation-status")? else {
            return Ok(None);
        };
        let status = s.attribute(&e, "data-status")?;
        let text = s.text(&e)?;
        assert_ne!(status.as_deref(), Some("ERROR"), "the page says {text}");
        Ok((status.as_deref() == Some("ACCEPTED")).then_some(text))
    });
    assert!(accepted.contains("202"), "{accepted}");

    // REST is the judge; then the page catches up on its own (auto-refresh).
    poll(
        "the job is canceled",
        &format!("{rest}/jobs/{job}/status"),
        None,
        |s| s["status"] == "CANCELED",
    );
    s.wait_for("the page shows CANCELED", PAGE, |s| {
        Ok(s.text_of("#job-state")?.filter(|t| t == "CANCELED"))
    });
    let disabled = s
        .execute(
            "return document.getElementById('cancel-job').disabled",
            serde_json::json!([]),
        )
        .unwrap();
    assert_eq!(disabled, true, "an ended job cannot be cancelled again");

    // Stop with savepoint, from a second job's page reached by its address.
    let second = submit_keyed_sum(addr);
    poll(
        "the second job runs",
        &format!("{rest}/jobs/{second}"),
        None,
        |d| {
            d["state"] == "RUNNING"
                && d["vertices"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().all(|v| v["status"] == "RUNNING"))
        },
    );
    s.navigate(&format!("{rest}/#/jobs/{second}")).unwrap();
    s.wait_for("the second job's page", PAGE, |s| {
        Ok(s.text_of("#job-state")?.filter(|t| t == "RUNNING"))
    });
    let field = s
        .find("#savepoint-dir")
        .unwrap()
        .expect("a directory field");
    s.type_text(&field, &format!("file://{}", savepoints.display()))
        .unwrap();
    click(&s, "#stop-job");
    let stopped = s.wait_for("the stop completes", LONG, |s| {
        let Some(e) = s.find("#operation-status")? else {
            return Ok(None);
        };
        let status = s.attribute(&e, "data-status")?;
        let text = s.text(&e)?;
        assert!(
            !matches!(status.as_deref(), Some("ERROR" | "FAILED")),
            "the page says {text}"
        );
        Ok((status.as_deref() == Some("COMPLETED")).then_some(text))
    });
    assert!(
        stopped.starts_with("Stop with savepoint completed"),
        "{stopped}"
    );
    poll(
        "the stopped job finishes",
        &format!("{rest}/jobs/{second}/status"),
        None,
        |s| s["status"] == "FINISHED",
    );
}

#[test]
fn a_headless_browser_uses_a_pasted_token() {
    const TOKEN: &str = "e2e-dashboard-token-9d02";
    let Some(driver) = browser("dashboard token") else {
        return;
    };
    let (mut jm, addr) = jobmanager(&[&format!("rest.auth.token={TOKEN}")]);
    let rest = rest_url(&mut jm);
    let (_tm, _) = taskmanager(addr, 1, &[]);
    poll(
        "the TaskManager registers",
        &format!("{rest}/overview"),
        Some(TOKEN),
        |o| o["taskmanagers"] == 1,
    );

    let s = driver.session().expect("a browser session");
    s.navigate(&format!("{rest}/")).expect("the page loads");
    let banner = s.wait_for("the page asks for the token", PAGE, |s| {
        let Some(b) = s.find("#banner")? else {
            return Ok(None);
        };
        let text = s.text(&b)?;
        Ok(text.contains("token").then_some(text))
    });
    assert!(banner.contains("rest.auth.token"), "{banner}");
    let input = s.find("#token-input").unwrap().expect("a token field");
    s.type_text(&input, TOKEN).unwrap();
    click(&s, "#token-save");
    let tms = s.wait_for("the overview with the token", PAGE, |s| {
        Ok(s.text_of("#card-taskmanagers .value")?.filter(|t| t == "1"))
    });
    assert_eq!(tms, "1");
    // The banner is gone, and the token stays with the tab only.
    let hidden = s
        .execute(
            "return [document.getElementById('banner').hidden, sessionStorage.getItem('rill.rest.token'), localStorage.length]",
            serde_json::json!([]),
        )
        .unwrap();
    assert_eq!(hidden, serde_json::json!([true, TOKEN, 0]));
}
