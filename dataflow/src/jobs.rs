//! The built-in example jobs, as JobGraph builders.
//!
//! * [`wordcount`]: file lines → split words → `key_by(word)` → count → one output file
//!   of `(word,count)` lines, written once per word at end of input.
//! * [`keyed_sum`]: datagen ids → `key_by(id mod keys)` → count and sum per key. Bounded
//!   (`rows`): final `(key,count,sum)` rows go to a collect sink
//!   ([`KEYED_SUM_COLLECT_ID`]) and [`keyed_sum_checksum`] folds them into the checksum
//!   the CLI prints; [`expected_keyed_sum_checksum`] computes the same number directly.
//!   Unbounded: the aggregate feeds a blackhole sink.
//!
//! * [`window_count`]: `key,timestamp` lines → bounded-out-of-orderness watermarks →
//!   tumbling event-time windows per key → `key,window_start,window_end,count` per
//!   window → exactly-once part files.
//!
//! * [`nexmark`]: Nexmark events (generated, or from a JSON Lines file) → event-time
//!   watermarks 4 s behind → one of the Nexmark queries → one JSON object per result
//!   row → a file (or the rows to a blackhole, for throughput runs).
//!
//! The aggregate keeps per-key state and emits at end of input only (like Flink's
//! mini-batch aggregation, minus intermediate flushes), so the hot path allocates nothing
//! per record.

use crate::builtins::nexmark::joins::{self, Selection};
use crate::builtins::nexmark::{self, GeneratorConfig, StatelessQuery, WindowedQuery};
use crate::builtins::{self, DatagenConfig};
use crate::environment::StreamExecutionEnvironment;
use crate::error::{DataflowError, Result};
use crate::job_graph::JobGraph;
use crate::key;
use crate::spec::FactoryRef;
use crate::value::Value;
use crate::window::WindowAssigner;

/// Collect id of keyed-sum's final rows.
pub const KEYED_SUM_COLLECT_ID: &str = "keyed-sum";

/// wordcount: reads `input` (a file or directory), writes `(word,count)` lines to the
/// file `output`; `parallelism` applies to reading, splitting and counting (the sink
/// writes one file, with parallelism 1).
pub fn wordcount(input: &str, output: &str, parallelism: u32) -> Result<JobGraph> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    env.add_source(builtins::file_lines(input))
        .name("Source: lines")
        .flat_map(builtins::split_words())
        .name("split words")
        .key_by(key::by_value())
        .process(builtins::count_per_key(false))
        .name("count")
        .uid("wordcount-count")
        .sink(builtins::file_sink(output))
        .name("Sink: file")
        .parallelism(1);
    env.job_graph("wordcount")
}

/// The file-lines source of `job`, at most `rate` lines per second if set.
fn lines_source(job: &str, input: &str, rate: Option<f64>) -> Result<crate::spec::FactoryRef> {
    match rate {
        Some(r) if r.is_finite() && r > 0.0 => Ok(builtins::file_lines_rate(input, r)),
        Some(r) => Err(DataflowError::InvalidConfig {
            factory: job.into(),
            reason: format!("rate must be a positive number of lines per second, got {r}"),
        }),
        None => Ok(builtins::file_lines(input)),
    }
}

/// running-count: text lines of `input` (at most `rate` lines/s if set) → key = the
/// line's first whitespace-separated field → running count per key, one `key,count` line
/// per record (at most `throttle` per second and subtask if set: a slow stage whose
/// backpressure reaches the source) → exactly-once part files under `output` (committed when a checkpoint
/// completes, and at the end of the input). For every key that occurs `n` times the
/// committed output holds exactly `key,1` … `key,n`.
pub fn running_count(
    input: &str,
    output: &str,
    rate: Option<f64>,
    throttle: Option<f64>,
    parallelism: u32,
) -> Result<JobGraph> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let source = lines_source("running-count", input, rate)?;
    if let Some(t) = throttle.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(DataflowError::InvalidConfig {
            factory: "running-count".into(),
            reason: format!("throttle must be a positive number of records per second, got {t}"),
        });
    }
    let mut counts = env
        .add_source(source)
        .name("Source: lines")
        .uid("running-count-source")
        .flat_map(builtins::first_field())
        .name("first field")
        .key_by(key::by_value())
        .process(builtins::count_per_key(true))
        .name("running count")
        .uid("running-count-count")
        .map(builtins::csv())
        .name("csv");
    if let Some(t) = throttle {
        counts = counts.map(builtins::throttle(t)).name("throttle");
    }
    counts
        .sink(builtins::transactional_file_sink(output))
        .name("Sink: transactional files")
        .uid("running-count-sink");
    env.job_graph("running-count")
}

/// window-count: lines `key,timestamp` (ms) of `input` (at most `rate` lines/s if set)
/// → watermarks `max_out_of_orderness_ms` behind the largest timestamp of each source
/// subtask → tumbling event-time windows of `size_ms` per key (aligned to the epoch) →
/// one `key,window_start,window_end,count` line per key and window → exactly-once part
/// files under `output`. Records behind the watermark when they arrive are late and
/// dropped (no allowed lateness); the end of the input fires every window.
pub fn window_count(
    input: &str,
    output: &str,
    size_ms: i64,
    max_out_of_orderness_ms: i64,
    rate: Option<f64>,
    parallelism: u32,
) -> Result<JobGraph> {
    if size_ms <= 0 || max_out_of_orderness_ms < 0 {
        return Err(DataflowError::InvalidConfig {
            factory: "window-count".into(),
            reason: format!(
                "the window size must be > 0 and the out-of-orderness ≥ 0 (ms), got {size_ms} and {max_out_of_orderness_ms}"
            ),
        });
    }
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let source = lines_source("window-count", input, rate)?;
    env.add_source(source)
        .name("Source: lines")
        .uid("window-count-source")
        .flat_map(builtins::key_timestamp())
        .name("parse key,timestamp")
        .assign_timestamps_and_watermarks(builtins::bounded_out_of_orderness(
            max_out_of_orderness_ms,
        ))
        .name("watermarks")
        .key_by(key::by_field(0))
        .window(WindowAssigner::tumbling_event_time(size_ms))
        .aggregate_with(builtins::window_count(), builtins::window_keyed_result())
        .name("tumbling window count")
        .uid("window-count-window")
        .map(builtins::csv())
        .name("csv")
        .sink(builtins::transactional_file_sink(output))
        .name("Sink: transactional files")
        .uid("window-count-sink");
    env.job_graph("window-count")
}

/// Where a Nexmark job's events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NexmarkInput {
    /// `events` events of the generator (unbounded if `None`).
    Generator {
        /// Number of events.
        events: Option<u64>,
        /// The generator's seed and rate.
        config: GeneratorConfig,
    },
    /// The events of a JSON Lines file.
    File(String),
}

/// The watermark delay of the Nexmark jobs: event time minus 4 s (the Flink baseline's
/// `--watermark-delay-ms` default).
pub const NEXMARK_WATERMARK_DELAY_MS: i64 = 4000;

/// nexmark: the events of `input` → watermarks [`NEXMARK_WATERMARK_DELAY_MS`] behind
/// each source subtask's largest event time → query `query` (`q0` to `q8`, see
/// [`nexmark::queries`] and [`nexmark::joins`]; q4 and q6 write an upsert log whose last
/// row per key is the result) → with `output`, one JSON object per result row
/// (Flink's column names) → that file (written by one sink subtask, in arrival order);
/// without, the row tuples → a blackhole sink. A bounded input ends with the final
/// watermark, so every window fires.
pub fn nexmark(
    query: &str,
    input: &NexmarkInput,
    output: Option<&str>,
    parallelism: u32,
) -> Result<JobGraph> {
    let stateless = match query {
        "q0" => Some(StatelessQuery::Q0),
        "q1" => Some(StatelessQuery::Q1),
        "q2" => Some(StatelessQuery::Q2),
        "q3" | "q4" | "q5" | "q6" | "q7" | "q8" => None,
        other => {
            return Err(DataflowError::InvalidConfig {
                factory: "nexmark".into(),
                reason: format!("unknown query {other:?}: expected one of q0 to q8"),
            })
        }
    };
    let source = match input {
        NexmarkInput::Generator { events, config } => {
            config
                .validate()
                .map_err(|reason| DataflowError::InvalidConfig {
                    factory: "nexmark".into(),
                    reason,
                })?;
            nexmark::generator_source(*events, *config)
        }
        NexmarkInput::File(path) => nexmark::file_source(path.clone()),
    };
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let events = env
        .add_source(source)
        .name("Source: nexmark")
        .uid("nexmark-source")
        .assign_timestamps_and_watermarks(builtins::bounded_out_of_orderness(
            NEXMARK_WATERMARK_DELAY_MS,
        ))
        .name("watermarks");
    let rows = match (stateless, query) {
        (Some(q), _) => events.flat_map(nexmark::stateless_query(q)).name(query),
        (None, "q5") => events
            .flat_map(nexmark::stateless_query(StatelessQuery::Q5Auctions))
            .name("q5: bid auctions")
            .key_by(key::by_value())
            .window(WindowAssigner::sliding_event_time(10_000, 2_000))
            .aggregate_with(builtins::window_count(), builtins::window_keyed_result())
            .name("q5: bids per auction, 10 s every 2 s")
            .uid("nexmark-q5-count")
            // (auction, start, end, count): keyed by start, one sliding window per key
            // and per 2 s tumbling window (its results carry time end - 1).
            .key_by(key::by_field(1))
            .window(WindowAssigner::tumbling_event_time(2_000))
            .aggregate_with(
                nexmark::max_ties(3),
                nexmark::windowed_rows(WindowedQuery::Q5),
            )
            .name("q5: hottest auctions per window")
            .uid("nexmark-q5-max"),
        (None, "q3") => {
            let persons = events
                .flat_map(nexmark::select(Selection::Q3Persons))
                .name("q3: persons in OR, ID, CA");
            let auctions = events
                .flat_map(nexmark::select(Selection::Q3Auctions))
                .name("q3: auctions of category 10");
            persons
                .key_by(key::by_field(joins::PERSON_ID_FIELD))
                .connect(&auctions.key_by(key::by_field(joins::AUCTION_SELLER_FIELD)))
                .process(FactoryRef::unit(nexmark::NEXMARK_Q3))
                .name("q3: join on seller")
                .uid("nexmark-q3-join")
        }
        (None, "q4" | "q6") => {
            let auctions = events
                .flat_map(nexmark::select(Selection::Auctions))
                .name("auctions");
            let bids = events
                .flat_map(nexmark::select(Selection::Bids))
                .name("bids");
            let winning = auctions
                .key_by(key::by_field(joins::AUCTION_ID_FIELD))
                .connect(&bids.key_by(key::by_field(joins::BID_AUCTION_FIELD)))
                .process(FactoryRef::unit(nexmark::NEXMARK_WINNING_BIDS))
                .name("winning bids")
                .uid("nexmark-winning-bids");
            if query == "q4" {
                winning
                    .key_by(key::by_field(joins::UPDATE_CATEGORY_FIELD))
                    .process(FactoryRef::unit(nexmark::NEXMARK_Q4_AVERAGE))
                    .name("q4: average per category")
                    .uid("nexmark-q4-average")
            } else {
                winning
                    .key_by(key::by_field(joins::UPDATE_SELLER_FIELD))
                    .process(FactoryRef::unit(nexmark::NEXMARK_Q6_AVERAGE))
                    .name("q6: average of the last 10 per seller")
                    .uid("nexmark-q6-average")
            }
        }
        (None, "q8") => {
            let persons = events
                .flat_map(nexmark::select(Selection::Persons))
                .name("persons");
            let auctions = events
                .flat_map(nexmark::select(Selection::Auctions))
                .name("auctions");
            persons
                .join(&auctions)
                .where_key(key::by_field(joins::PERSON_ID_FIELD))
                .equal_to(key::by_field(joins::AUCTION_SELLER_FIELD))
                .window(WindowAssigner::tumbling_event_time(10_000))
                .process(FactoryRef::unit(nexmark::NEXMARK_Q8))
                .name("q8: persons with auctions per 10 s")
                .uid("nexmark-q8-join")
        }
        (None, _) => events
            .flat_map(nexmark::stateless_query(StatelessQuery::Q7Bids))
            .name("q7: bids")
            .window_all(WindowAssigner::tumbling_event_time(10_000))
            .aggregate_with(
                nexmark::max_ties(1),
                nexmark::windowed_rows(WindowedQuery::Q7),
            )
            .name("q7: highest bids per 10 s")
            .uid("nexmark-q7-max"),
    };
    let columns = match (stateless, query) {
        (Some(q), _) => q.columns(),
        (None, "q5") => WindowedQuery::Q5.columns(),
        (None, "q7") => WindowedQuery::Q7.columns(),
        (None, q) => joins::columns(q).unwrap_or_default(),
    };
    // Rows are rendered as JSON only for a file: a throughput run's blackhole gets the
    // row tuples, as Flink's blackhole sink gets its rows unserialized.
    match output {
        Some(path) => rows
            .map(nexmark::json_row(columns))
            .name("json")
            .sink(builtins::file_sink(path))
            .name("Sink: file")
            .parallelism(1),
        None => rows.sink(builtins::blackhole()).name("Sink: blackhole"),
    };
    env.job_graph(&format!("nexmark-{query}"))
}

/// keyed-sum: `rows` ids (unbounded if `None`) at `rate` records/s (unlimited if
/// `None`), keyed by `id mod keys`, count and sum per key.
pub fn keyed_sum(
    rows: Option<u64>,
    keys: u64,
    rate: Option<f64>,
    parallelism: u32,
) -> Result<JobGraph> {
    let modulus = i64::try_from(keys)
        .ok()
        .filter(|k| *k >= 1)
        .ok_or_else(|| DataflowError::InvalidConfig {
            factory: "keyed-sum".into(),
            reason: format!("keys must be in 1..=i64::MAX, got {keys}"),
        })?;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let sums = env
        .add_source(builtins::datagen(DatagenConfig {
            rows,
            rate,
            ..DatagenConfig::default()
        }))
        .name("Source: datagen")
        .key_by(key::by_i64_mod(modulus))
        .process(builtins::count_sum_per_key(false))
        .name("count+sum")
        .uid("keyed-sum-agg");
    if rows.is_some() {
        sums.sink(builtins::collect(KEYED_SUM_COLLECT_ID))
            .name("Sink: collect");
    } else {
        sums.sink(builtins::blackhole()).name("Sink: blackhole");
    }
    env.job_graph("keyed-sum")
}

fn mix(key: i64, count: i64, sum: i64) -> u64 {
    let mut h = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ count as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h ^ sum as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Order-independent checksum of keyed-sum's `(key,count,sum)` rows.
pub fn keyed_sum_checksum(rows: &[Value]) -> Result<u64> {
    let mut total = 0u64;
    for row in rows {
        match row.as_tuple() {
            Some([Value::I64(k), Value::I64(c), Value::I64(s)]) => {
                total = total.wrapping_add(mix(*k, *c, *s))
            }
            _ => {
                return Err(DataflowError::TypeMismatch {
                    operator: "keyed-sum checksum".into(),
                    expected: "(i64,i64,i64)",
                    actual: row.type_name(),
                })
            }
        }
    }
    Ok(total)
}

/// The checksum keyed-sum must produce for `rows` ids over `keys` keys, computed
/// directly in O(keys) memory.
pub fn expected_keyed_sum_checksum(rows: u64, keys: u64) -> u64 {
    let keys = keys.max(1);
    let mut total = 0u64;
    for k in 0..keys.min(rows) {
        // Ids ≡ k (mod keys) in 0..rows: k, k+keys, …; n of them.
        let n = (rows - k).div_ceil(keys);
        // Sum of k + i·keys for i in 0..n, in wrapping i64 arithmetic like the operator.
        let tri = (n as u128 * (n as u128).saturating_sub(1) / 2) as u64;
        let sum = (k.wrapping_mul(n)).wrapping_add(keys.wrapping_mul(tri)) as i64;
        total = total.wrapping_add(mix(k as i64, n as i64, sum));
    }
    total
}
