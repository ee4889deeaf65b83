//! Nexmark end to end through the real `rill` binary: `rill nexmark generate` writes an
//! events file, `rill run nexmark --query qN` runs q0 to q8 on a real cluster (a
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

/// The joining queries' rows for the events, computed here: q3 and q8 as sorted row
/// texts; q4 and q6 as the final value per key (their output is an upsert log).
fn expected_join(events: &[Value], query: &str) -> (Vec<String>, BTreeMap<i64, f64>) {
    let persons: Vec<&Value> = events.iter().filter_map(|e| e.get("person")).collect();
    let auctions: Vec<&Value> = events.iter().filter_map(|e| e.get("auction")).collect();
    let bids: Vec<&Value> = events.iter().filter_map(|e| e.get("bid")).collect();
    let int = |v: &Value, f: &str| v[f].as_i64().unwrap();
    // Final price per auction id: the highest bid within [dateTime, expires].
    let finals = || {
        let mut f = BTreeMap::<i64, i64>::new();
        for a in &auctions {
            for b in bids.iter().filter(|b| int(b, "auction") == int(a, "id")) {
                let t = int(b, "dateTime");
                if t >= int(a, "dateTime") && t <= int(a, "expires") {
                    let e = f.entry(int(a, "id")).or_insert(i64::MIN);
                    *e = (*e).max(int(b, "price"));
                }
            }
        }
        f
    };
    match query {
        "q3" => {
            let mut rows = Vec::new();
            for a in auctions.iter().filter(|a| int(a, "category") == 10) {
                for p in persons.iter().filter(|p| {
                    int(p, "id") == int(a, "seller")
                        && ["OR", "ID", "CA"].contains(&p["state"].as_str().unwrap())
                }) {
                    rows.push(json!({"name": p["name"], "city": p["city"],
                        "state": p["state"], "id": a["id"]}));
                }
            }
            (sorted(&rows), BTreeMap::new())
        }
        "q8" => {
            let start = |t: i64| t - t.rem_euclid(WINDOW_Q7);
            let mut rows = std::collections::BTreeSet::new();
            for p in &persons {
                let w = start(int(p, "dateTime"));
                if auctions
                    .iter()
                    .any(|a| int(a, "seller") == int(p, "id") && start(int(a, "dateTime")) == w)
                {
                    rows.insert(
                        json!({"id": p["id"], "name": p["name"], "starttime": w}).to_string(),
                    );
                }
            }
            (rows.into_iter().collect(), BTreeMap::new())
        }
        "q4" | "q6" => {
            let finals = finals();
            let mut groups = BTreeMap::<i64, Vec<((i64, i64), i64)>>::new();
            for a in auctions
                .iter()
                .filter(|a| finals.contains_key(&int(a, "id")))
            {
                let key = int(a, if query == "q4" { "category" } else { "seller" });
                groups
                    .entry(key)
                    .or_default()
                    .push(((int(a, "expires"), int(a, "id")), finals[&int(a, "id")]));
            }
            let avg = groups
                .into_iter()
                .map(|(k, mut v)| {
                    v.sort();
                    if query == "q6" && v.len() > 10 {
                        v.drain(..v.len() - 10);
                    }
                    let sum: i64 = v.iter().map(|(_, f)| f).sum();
                    (k, sum as f64 / v.len() as f64)
                })
                .collect();
            (Vec::new(), avg)
        }
        q => panic!("no expectation for {q}"),
    }
}

/// The last `avg` per key of an upsert log of `{<key>, avg}` rows.
fn last_per_key(rows: &[Value], key: &str) -> BTreeMap<i64, f64> {
    rows.iter()
        .map(|r| (r[key].as_i64().unwrap(), r["avg"].as_f64().unwrap()))
        .collect()
}

fn assert_averages(got: &BTreeMap<i64, f64>, want: &BTreeMap<i64, f64>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: keys"
    );
    for (k, w) in want {
        let g = got[k];
        assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{what}: key {k} is {g}, expected {w}"
        );
    }
}

/// Persons, auctions and bids in either order: an auction before its seller (q3), a bid
/// before its auction and one after the auction expired (q4/q6), tied bids, auctions
/// without bids, a bid on an unknown auction, and persons whose auction falls in
/// another window (q8).
fn hand_made_join_events() -> Vec<Value> {
    let person = |id: i64, name: &str, state: &str, t: i64| {
        json!({"person": {"id": id, "name": name, "emailAddress": "x@y.com",
            "creditCard": "1 2 3 4", "city": format!("{name}ville"), "state": state,
            "dateTime": BASE + t, "extra": ""}})
    };
    let auction = |id: i64, seller: i64, category: i64, t: i64, expires: i64| {
        json!({"auction": {"id": id, "itemName": "i", "description": "d", "initialBid": 1,
            "reserve": 2, "dateTime": BASE + t, "expires": BASE + expires, "seller": seller,
            "category": category, "extra": ""}})
    };
    let bid = |auction: i64, price: i64, t: i64| {
        json!({"bid": {"auction": auction, "bidder": 1, "price": price, "channel": "c",
            "url": "u", "dateTime": BASE + t, "extra": ""}})
    };
    vec![
        person(1001, "Ann", "CA", 500),
        auction(5, 1000, 10, 1000, 8000),
        bid(9, 30, 2500),
        auction(9, 1001, 11, 2000, 20_000),
        bid(5, 40, 3000),
        bid(5, 40, 4000),
        person(1000, "Kate", "OR", 5000),
        auction(8, 1000, 11, 7000, 30_000),
        bid(8, 70, 7500),
        bid(5, 1000, 9000),
        bid(99, 5, 9500),
        person(1002, "Wes", "WA", 10_500),
        auction(6, 1001, 10, 11_000, 40_000),
        auction(7, 1002, 10, 12_000, 50_000),
        bid(7, 10, 13_000),
        bid(7, 10, 14_000),
    ]
}

#[test]
fn join_queries_match_rows_computed_from_the_events_file() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    generate(&events_file, EVENTS, 11);
    let small = dir.path().join("small.jsonl");
    let small_events = hand_made_join_events();
    let lines: String = small_events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&small, lines).unwrap();
    // The hand-made expectations, by hand.
    assert_eq!(
        expected_join(&small_events, "q3").0,
        [
            r#"{"city":"Annville","id":6,"name":"Ann","state":"CA"}"#,
            r#"{"city":"Kateville","id":5,"name":"Kate","state":"OR"}"#
        ]
    );
    assert_eq!(
        expected_join(&small_events, "q4").1,
        BTreeMap::from([(10, 25.0), (11, 50.0)])
    );
    assert_eq!(
        expected_join(&small_events, "q6").1,
        BTreeMap::from([(1000, 55.0), (1001, 30.0), (1002, 10.0)])
    );
    assert_eq!(expected_join(&small_events, "q8").0.len(), 3);

    let events = read_rows(&events_file);
    for (name, evs, path) in [
        ("generated", &events, &events_file),
        ("hand-made", &small_events, &small),
    ] {
        for (query, p) in [
            ("q3", 2),
            ("q4", 2),
            ("q6", 1),
            ("q6", 2),
            ("q8", 2),
            ("q8", 1),
        ] {
            let (rows, averages) = expected_join(evs, query);
            assert!(!rows.is_empty() || !averages.is_empty(), "{query} has rows");
            let out = dir.path().join(format!("{name}-{query}-{p}.jsonl"));
            run_query(
                addr,
                p,
                query,
                &["--events-file", path.to_str().unwrap()],
                &out,
            );
            let got = read_rows(&out);
            let what = format!("{query} over the {name} events at p={p}");
            match query {
                "q4" => assert_averages(&last_per_key(&got, "category"), &averages, &what),
                "q6" => assert_averages(&last_per_key(&got, "seller"), &averages, &what),
                _ => assert_rows(&sorted(&got), &rows, &what),
            }
        }
    }
    // The generated file exercises every join: many matches, many keys.
    assert!(expected_join(&events, "q3").0.len() >= 10);
    assert!(expected_join(&events, "q8").0.len() >= 10);
    assert!(expected_join(&events, "q6").1.len() >= 10);
}
