//! A small W3C WebDriver client over plain HTTP (`ureq`), enough to drive a headless
//! Chromium through `chromedriver`: start the driver on a free loopback port, open a
//! session, navigate, find elements by CSS selector, read text and attributes, type,
//! click and run scripts. Every call is bounded by the HTTP client's timeout and every
//! wait by its own limit.
//!
//! [`ChromeDriver`] runs `chromedriver` in its own process group and kills the whole group
//! (driver and the browsers it started) when dropped, also when a test panics; a
//! [`Session`] ends its browser on drop first.
//!
//! Shared by the dashboard test and `rest_bench` (which includes this file by path).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian's `chromium-driver` installs the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Debian's `chromium` installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error answer (`{"value":{"error":…,"message":…}}`) or a transport error.
#[derive(Debug, Clone)]
pub struct WdError {
    /// The HTTP status (0 for a transport error).
    pub status: u16,
    /// WebDriver's error code, e.g. `no such element`, `stale element reference`.
    pub error: String,
    /// Its message.
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error, self.status, self.message)
    }
}

impl std::error::Error for WdError {}

type WdResult<T> = Result<T, WdError>;

/// A running `chromedriver`, killed with its process group on drop.
pub struct ChromeDriver {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    agent: ureq::Agent,
}

impl ChromeDriver {
    /// Whether the driver and the browser are installed.
    pub fn installed() -> bool {
        Path::new(CHROMEDRIVER).is_file() && Path::new(CHROMIUM).is_file()
    }

    /// Starts `chromedriver` on a free 127.0.0.1 port and waits (at most `timeout`) until
    /// it answers `/status` as ready.
    pub fn start(timeout: Duration) -> Result<ChromeDriver, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so that drop can kill the browsers it starts too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            while let Ok(line) = lines.try_recv() {
                seen.push(line);
            }
            if let Ok(v) = driver.call("GET", "/status", None) {
                if v["ready"] == true {
                    return Ok(driver);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver did not become ready on port {port} within {timeout:?}; it printed {seen:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; answers its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> WdResult<Value> {
        call(&self.agent, &self.url, method, path, body)
    }

    /// Opens a headless Chromium session (`--headless=new --no-sandbox --disable-gpu`).
    pub fn session(&self) -> WdResult<Session> {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--window-size=1280,900",
                        ],
                    },
                },
            },
        });
        let v = self.call("POST", "/session", Some(caps))?;
        let id = v["sessionId"].as_str().ok_or_else(|| WdError {
            status: 200,
            error: "bad answer".into(),
            message: format!("no sessionId in {v}"),
        })?;
        let s = Session {
            agent: self.agent.clone(),
            base: format!("{}/session/{id}", self.url),
        };
        s.call(
            "POST",
            "/timeouts",
            Some(json!({"pageLoad": 30_000, "script": 10_000, "implicit": 0})),
        )?;
        Ok(s)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The negative pid names the process group: the driver and every browser process.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the driver binds it right after).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn call(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> WdResult<Value> {
    let url = format!("{base}{path}");
    let transport = |e: ureq::Error| WdError {
        status: 0,
        error: "transport".into(),
        message: format!("{method} {url}: {e}"),
    };
    let answer = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        (_, body) => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or_else(|| json!({})).to_string()),
    };
    let mut r = answer.map_err(transport)?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().map_err(transport)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| WdError {
        status,
        error: "bad answer".into(),
        message: format!("{method} {url}: not JSON ({e}): {text:?}"),
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 {
        return Err(WdError {
            status,
            error: value["error"].as_str().unwrap_or("unknown error").into(),
            message: value["message"].as_str().unwrap_or("").into(),
        });
    }
    Ok(value)
}

/// One browser session, ended on drop.
pub struct Session {
    agent: ureq::Agent,
    base: String,
}

/// An element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> WdResult<Value> {
        call(&self.agent, &self.base, method, path, body)
    }

    /// Loads `url` and waits for its `load` event.
    pub fn navigate(&self, url: &str) -> WdResult<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The first element matching the CSS `selector`, if any.
    pub fn find(&self, selector: &str) -> WdResult<Option<Element>> {
        let body = json!({"using": "css selector", "value": selector});
        match self.call("POST", "/element", Some(body)) {
            Ok(v) => Ok(v[ELEMENT].as_str().map(|id| Element(id.to_string()))),
            Err(e) if e.error == "no such element" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The element's rendered text.
    pub fn text(&self, e: &Element) -> WdResult<String> {
        let v = self.call("GET", &format!("/element/{}/text", e.0), None)?;
        Ok(v.as_str().unwrap_or("").to_string())
    }

    /// The element's attribute `name`, if set.
    pub fn attribute(&self, e: &Element, name: &str) -> WdResult<Option<String>> {
        let v = self.call("GET", &format!("/element/{}/attribute/{name}", e.0), None)?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Clicks the element.
    pub fn click(&self, e: &Element) -> WdResult<()> {
        self.call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .map(drop)
    }

    /// Types `text` into the element.
    pub fn type_text(&self, e: &Element, text: &str) -> WdResult<()> {
        let body = json!({ "text": text });
        self.call("POST", &format!("/element/{}/value", e.0), Some(body))
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers its result.
    pub fn execute(&self, script: &str, args: Value) -> WdResult<Value> {
        let body = json!({ "script": script, "args": args });
        self.call("POST", "/execute/sync", Some(body))
    }

    /// Runs `script` asynchronously: it ends by calling its last argument (after `args`)
    /// with the result, within the session's script timeout (10 s).
    pub fn execute_async(&self, script: &str, args: Value) -> WdResult<Value> {
        let body = json!({ "script": script, "args": args });
        self.call("POST", "/execute/async", Some(body))
    }

    /// Polls `f` every 50 ms until it answers `Some`, at most `timeout`; a WebDriver
    /// error inside (a stale element while the page re-renders, say) counts as not yet.
    /// Panics with `what` and the last error on timeout.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Session) -> WdResult<Option<T>>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match f(self) {
                Ok(Some(v)) => return v,
                Ok(None) => last = "not yet".into(),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {timeout:?} (last: {last})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the element matching `selector`, if there is one.
    pub fn text_of(&self, selector: &str) -> WdResult<Option<String>> {
        match self.find(selector)? {
            Some(e) => self.text(&e).map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Ends the browser; the driver's drop kills whatever is left.
        let _ = self.call("DELETE", "", None);
    }
}
