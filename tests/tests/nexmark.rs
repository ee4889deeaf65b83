//! Nexmark end to end through the real `rill` binary: `rill nexmark generate` writes an
//! events file, `rill run nexmark --query qN` runs q0, q1, q2, q5 and q7 on a real cluster (a
//! JobManager and two TaskManagers on 127.0.0.1) over that file and over the generator
//! itself, and the result rows are compared with rows this test computes from the file
//! on its own (parsing the JSON with `serde_json`, not with rill's event model).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(120);
const EVENTS: u64 = 20_000;
/// 40 s of event time over `EVENTS`: several q7 windows, some twenty q5 windows.
const RATE: &str = "500";
const WINDOW_Q7: i64 = 10_000;
const SIZE_Q5: i64 = 10_000;
const SLIDE_Q5: i64 = 2_000;

fn generate(path: &Path, events: u64, seed: u64) {
    let (ok, stdout, stderr) = rill_out(
        LONG,
        &[
            "nexmark",
            "generate",
            "--events",
            &events.to_string(),
            "--seed",
            &seed.to_string(),
            "--events-per-second",
            RATE,
            "--output",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
}

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut row: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            // serde_json's float parsing may be off by an ulp; Rust's `f64::from_str` is
            // correctly rounded, so a float price is re-read from its text.
            if row.get("price").is_some_and(Value::is_f64) {
                let text = l.split("\"price\":").nth(1).unwrap();
                let end = text.find([',', '}']).unwrap();
                row["price"] = json!(text[..end].parse::<f64>().unwrap());
            }
            row
        })
        .collect()
}

/// Asserts that `got` equals `want`, naming the first difference.
fn assert_rows(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("{what}: row {i} is {}, expected {}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: rows");
}

/// Rows as sorted JSON texts (a multiset: parallel sources interleave).
fn sorted(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(Value::to_string).collect();
    v.sort();
    v
}

/// The rows of `query` for the events, computed here.
fn expected(events: &[Value], query: &str) -> Vec<Value> {
    let bids: Vec<&Value> = events.iter().filter_map(|e| e.get("bid")).collect();
    let int = |b: &Value, f: &str| b[f].as_i64().unwrap();
    match query {
        "q5" => {
            // Bids per (window start, auction) over every 10 s window containing the bid.
            let mut counts = BTreeMap::<(i64, i64), i64>::new();
            for b in &bids {
                let t = int(b, "dateTime");
                let last = t - t.rem_euclid(SLIDE_Q5);
                let mut start = last;
                while start > t - SIZE_Q5 {
                    *counts.entry((start, int(b, "auction"))).or_default() += 1;
                    start -= SLIDE_Q5;
                }
            }
            let mut max = BTreeMap::<i64, i64>::new();
            for ((start, _), n) in &counts {
                let m = max.entry(*start).or_default();
                *m = (*m).max(*n);
            }
            counts
                .iter()
                .filter(|((start, _), n)| max[start] == **n)
                .map(|((start, auction), n)| {
                    json!({"auction": auction, "num": n, "window_start": start,
                           "window_end": start + SIZE_Q5})
                })
                .collect()
        }
        "q7" => {
            let start = |b: &Value| int(b, "dateTime") - int(b, "dateTime").rem_euclid(WINDOW_Q7);
            let mut max = BTreeMap::<i64, i64>::new();
            for b in &bids {
                let m = max.entry(start(b)).or_insert(i64::MIN);
                *m = (*m).max(int(b, "price"));
            }
            bids.iter()
                .filter(|b| max[&start(b)] == int(b, "price"))
                .map(|b| {
                    json!({"auction": b["auction"], "price": b["price"], "bidder": b["bidder"],
                           "dateTime": b["dateTime"], "extra": b["extra"],
                           "window_start": start(b), "window_end": start(b) + WINDOW_Q7})
                })
                .collect()
        }
        _ => {
            bids.iter()
                .filter_map(|b| {
                    let auction = int(b, "auction");
                    let price = int(b, "price");
                    let row = |price: Value| {
                        json!({"auction": auction, "bidder": b["bidder"], "price": price,
                           "dateTime": b["dateTime"], "extra": b["extra"]})
                    };
                    match query {
                        "q0" => Some(row(json!(price))),
                        "q1" => Some(row(json!(0.908 * price as f64))),
                        "q2" => (auction % 123 == 0)
                            .then(|| json!({"auction": auction, "price": price})),
                        q => panic!("no expectation for {q}"),
                    }
                })
                .collect()
        }
    }
}

/// Event time of the hand-made events' first window (a multiple of 10 s).
const BASE: i64 = 1_577_836_800_000;

/// A person, an auction nobody bids on, and bids: in [0 s, 10 s) three bids tie for the
/// highest price (one arrives 500 ms behind a later bid, within the watermark delay)
/// and auctions 1 and 2 get three bids each; nothing in [10 s, 30 s); two bids tie in
/// [30 s, 40 s).
fn hand_made_events() -> Vec<Value> {
    let bid = |auction: i64, price: i64, t: i64| {
        json!({"bid": {"auction": auction, "bidder": 1000 + auction, "price": price,
            "channel": "Google", "url": "https://www.nexmark.com/a/b/c/item.htm?query=1",
            "dateTime": BASE + t, "extra": format!("bid at {t}")}})
    };
    vec![
        json!({"person": {"id": 1000, "name": "Kate Smith", "emailAddress": "k@s.com",
            "creditCard": "1 2 3 4", "city": "Bend", "state": "OR", "dateTime": BASE,
            "extra": ""}}),
        json!({"auction": {"id": 5, "itemName": "i", "description": "d", "initialBid": 1,
            "reserve": 2, "dateTime": BASE + 500, "expires": BASE + 90_000, "seller": 1000,
            "category": 10, "extra": ""}}),
        bid(1, 50, 1000),
        bid(2, 50, 2000),
        bid(1, 10, 3000),
        bid(2, 20, 4000),
        bid(1, 50, 3500),
        bid(2, 1, 3600),
        bid(3, 7, 35_000),
        bid(4, 7, 36_000),
    ]
}

fn run_query(addr: std::net::SocketAddr, p: u32, query: &str, input: &[&str], output: &Path) {
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        &p.to_string(),
        "nexmark",
        "--query",
        query,
    ]);
    cmd.args(input).arg("--output").arg(output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{query}: {stdout}\n{stderr}");
}

#[test]
fn generated_file_is_deterministic_parses_back_and_has_the_nexmark_mix() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    generate(&a, 5_000, 42);
    generate(&b, 5_000, 42);
    generate(&c, 5_000, 43);
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap(), "same seed, same bytes");
    assert_ne!(bytes, std::fs::read(&c).unwrap(), "another seed");

    let events = read_rows(&a);
    assert_eq!(events.len(), 5_000);
    let mut last_time = i64::MIN;
    for (group, chunk) in events.chunks(50).enumerate() {
        let mut kinds = BTreeMap::<String, usize>::new();
        for e in chunk {
            let obj = e.as_object().unwrap();
            assert_eq!(obj.len(), 1, "one key per line: {e}");
            let (kind, body) = obj.iter().next().unwrap();
            *kinds.entry(kind.clone()).or_default() += 1;
            let t = body["dateTime"].as_i64().unwrap();
            assert!(t >= last_time, "event time is in order");
            last_time = t;
            let fields: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            let mut want: Vec<&str> = match kind.as_str() {
                "person" => vec![
                    "id",
                    "name",
                    "emailAddress",
                    "creditCard",
                    "city",
                    "state",
                    "dateTime",
                    "extra",
                ],
                "auction" => vec![
                    "id",
                    "itemName",
                    "description",
                    "initialBid",
                    "reserve",
                    "dateTime",
                    "expires",
                    "seller",
                    "category",
                    "extra",
                ],
                "bid" => vec![
                    "auction", "bidder", "price", "channel", "url", "dateTime", "extra",
                ],
                k => panic!("unknown kind {k}"),
            };
            let mut got = fields.clone();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{kind} fields");
        }
        let mix = (kinds.get("person"), kinds.get("auction"), kinds.get("bid"));
        assert_eq!(mix, (Some(&1), Some(&3), Some(&46)), "group {group}");
        // Person `group` and auctions 3·group.. are numbered in order from 1000.
        assert_eq!(chunk[0]["person"]["id"], json!(1000 + group as i64));
        assert_eq!(chunk[1]["auction"]["id"], json!(1000 + 3 * group as i64));
    }
    // --events-per-second 500: event n at base + 2n ms.
    let t = |n: usize| {
        let o = events[n].as_object().unwrap().values().next().unwrap();
        o["dateTime"].as_i64().unwrap()
    };
    assert_eq!(t(4_000) - t(0), 8_000);
}

#[test]
fn queries_match_rows_computed_from_the_events_file() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    generate(&events_file, EVENTS, 7);
    let events = read_rows(&events_file);
    let file = events_file.to_str().unwrap();

    for (query, p) in [("q0", 2), ("q1", 1), ("q2", 2), ("q5", 2), ("q7", 2)] {
        let want = expected(&events, query);
        assert!(!want.is_empty(), "{query} has rows");
        // From the file.
        let out = dir.path().join(format!("{query}-file.jsonl"));
        run_query(addr, p, query, &["--events-file", file], &out);
        let got = read_rows(&out);
        if p == 1 {
            // One source subtask: rows in event order, exactly.
            let text = |rows: &[Value]| rows.iter().map(Value::to_string).collect::<Vec<_>>();
            assert_rows(
                &text(&got),
                &text(&want),
                &format!("{query} over the file, in order"),
            );
        }
        assert_rows(
            &sorted(&got),
            &sorted(&want),
            &format!("{query} over the file"),
        );
        // From the generator with the file's parameters: the same events.
        let out = dir.path().join(format!("{query}-gen.jsonl"));
        run_query(
            addr,
            p,
            query,
            &[
                "--events",
                &EVENTS.to_string(),
                "--seed",
                "7",
                "--events-per-second",
                RATE,
            ],
            &out,
        );
        assert_rows(
            &sorted(&read_rows(&out)),
            &sorted(&want),
            &format!("{query} over the generator"),
        );
    }
    // q2 selects something and drops most: the test above would catch a pass-through.
    assert!(expected(&events, "q2").len() * 50 < expected(&events, "q0").len());
    // The windowed queries cover several windows.
    let windows = |q: &str| {
        let rows = expected(&events, q);
        let starts: std::collections::BTreeSet<_> =
            rows.iter().map(|r| r["window_start"].as_i64()).collect();
        starts.len()
    };
    assert!(windows("q5") >= 20 && windows("q7") >= 4);

    // Ties, a late-but-on-time bid, empty windows and an auction without bids, by hand.
    let small = dir.path().join("small.jsonl");
    let small_events = hand_made_events();
    let lines: String = small_events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&small, lines).unwrap();
    let q5 = expected(&small_events, "q5");
    assert!(
        q5.iter()
            .filter(|r| r["window_start"] == json!(BASE))
            .count()
            == 2,
        "q5 ties: {q5:?}"
    );
    let q7 = expected(&small_events, "q7");
    assert_eq!(q7.len(), 5, "q7 ties: {q7:?}");
    for (query, p) in [("q5", 1), ("q7", 1), ("q5", 2), ("q7", 2)] {
        let out = dir.path().join(format!("{query}-small-{p}.jsonl"));
        run_query(
            addr,
            p,
            query,
            &["--events-file", small.to_str().unwrap()],
            &out,
        );
        let want = expected(&small_events, query);
        assert_rows(
            &sorted(&read_rows(&out)),
            &sorted(&want),
            &format!("{query} over the hand-made events at p={p}"),
        );
    }

    // A malformed line fails the job with the file and line number.
    let bad = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(&events_file).unwrap();
    let first_lines: String = good.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(
        &bad,
        format!("{first_lines}{{\"bid\": {{\"auction\": 1}}}}\n"),
    )
    .unwrap();
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "nexmark",
        "--query",
        "q0",
    ])
    .arg("--events-file")
    .arg(&bad)
    .arg("--output")
    .arg(dir.path().join("bad-out.jsonl"));
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("bad.jsonl:4"), "{all}");
}
