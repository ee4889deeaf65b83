//! Built-in sources, sinks, transforms and their registration.
//!
//! Every built-in is a registered factory like any user operator (no special casing in
//! the runtime); the functions here build the [`FactoryRef`]s that name them, e.g.
//! `stream.flat_map(builtins::split_words())`. [`register_builtins`] is what
//! [`OperatorRegistry::new`] runs.
//!
//! | name | kind | does |
//! |---|---|---|
//! | `rill.source.datagen` | source | ids `0..rows` (or unbounded), strided over subtasks, optional rate |
//! | `rill.source.collection` | source | fixed values, split round-robin over subtasks |
//! | `rill.source.file_lines` | source | lines of a file (byte-range splits) or of a directory's files |
//! | `rill.source.socket` | source | TCP text lines (subtask 0 only, like Flink's socket source) |
//! | `rill.sink.print` | sink | `Display` per line to stdout/stderr, `n> ` prefix when parallel |
//! | `rill.sink.file` | sink | lines to a file (parallelism 1) or `part-N` files in a directory |
//! | `rill.sink.blackhole` | sink | discards (counts) |
//! | `rill.sink.collect` | sink | values to the runtime's [`CollectSink`](crate::collect::CollectSink) |
//! | `rill.flat_map.split_words` | flat-map | lowercase words of a line |
//! | `rill.process.count` | process | `(key, count)` per key |
//! | `rill.process.count_sum` | process | `(key, count, sum)` of i64 values per key |
//! | `rill.reduce.sum` | reduce | running sum of i64/f64 values |
//! | `rill.flat_map.key_timestamp` | flat-map | `key,timestamp` line → `(key, timestamp)` with that event time |
//! | `rill.watermarks.bounded_out_of_orderness` | map | passes records, emits `max timestamp - delay - 1` watermarks |
//! | `rill.window.count` | window aggregate | number of elements |
//! | `rill.window.sum` | window reduce | sum of i64/f64 values |
//! | `rill.window.keyed_result` | window process | `(key, window start, window end, element)` per element |
//! | `rill.source.nexmark` | source | generated Nexmark events (see [`nexmark`]) |
//! | `rill.source.nexmark_file` | source | Nexmark events of a JSON Lines file |
//! | `rill.flat_map.nexmark_query` | flat-map | the rows of Nexmark q0, q1 or q2 per event |
//! | `rill.map.json_row` | map | a row tuple as a JSON object with given column names |
//! | `rill.window.max_ties` | window aggregate | the elements with the largest i64 field, all ties |
//! | `rill.window.nexmark_rows` | window process | Nexmark q5 / q7 rows from `max_ties` |
//! | `rill.flat_map.nexmark_select` | flat-map | the persons, auctions or bids a join query reads |
//! | `rill.co_process.nexmark_q3` | keyed co-process | Nexmark q3's incremental join |
//! | `rill.co_process.nexmark_winning_bids` | keyed co-process | per-auction final price updates (q4, q6) |
//! | `rill.process.nexmark_q4_average` / `_q6_average` | process | q4's / q6's averages (upsert rows) |
//! | `rill.window_join.nexmark_q8` | window join | q8's distinct `(id, name, starttime)` |
//! | `rill.map.tag_input` | map | `v` → `(side, v)` (window joins, see [`window_join`](crate::window_join)) |

mod collection;
mod datagen;
mod file_sink;
mod file_source;
pub mod nexmark;
mod sinks;
mod socket_source;
#[cfg(test)]
mod source_tests;
pub mod transactional_file_sink;
mod transforms;
mod watermarks;

pub use collection::CollectionConfig;
pub use datagen::DatagenConfig;
pub use file_sink::{FileLayout, FileSinkConfig};
pub use file_source::FileLinesConfig;
pub use sinks::{CollectConfig, PrintConfig};
pub use socket_source::SocketConfig;
pub use transforms::{CountConfig, ThrottleConfig};
pub use watermarks::BoundedOutOfOrdernessConfig;

use crate::registry::{OperatorKind, OperatorRegistry};
use crate::spec::FactoryRef;
use crate::value::Value;

/// `rill.source.datagen`.
pub const DATAGEN: &str = "rill.source.datagen";
/// `rill.source.collection`.
pub const COLLECTION: &str = "rill.source.collection";
/// `rill.source.file_lines`.
pub const FILE_LINES: &str = "rill.source.file_lines";
/// `rill.source.socket`.
pub const SOCKET: &str = "rill.source.socket";
/// `rill.sink.print`.
pub const PRINT: &str = "rill.sink.print";
/// `rill.sink.file`.
pub const FILE_SINK: &str = "rill.sink.file";
/// `rill.sink.transactional-file`.
pub const TRANSACTIONAL_FILE_SINK: &str = "rill.sink.transactional-file";
/// `rill.sink.blackhole`.
pub const BLACKHOLE: &str = "rill.sink.blackhole";
/// `rill.sink.collect`.
pub const COLLECT: &str = "rill.sink.collect";
/// `rill.flat_map.split_words`.
pub const SPLIT_WORDS: &str = "rill.flat_map.split_words";
/// `rill.flat_map.first_field`.
pub const FIRST_FIELD: &str = "rill.flat_map.first_field";
/// `rill.map.csv`.
pub const CSV: &str = "rill.map.csv";
/// `rill.map.throttle`.
pub const THROTTLE: &str = "rill.map.throttle";
/// `rill.process.count`.
pub const COUNT: &str = "rill.process.count";
/// `rill.process.count_sum`.
pub const COUNT_SUM: &str = "rill.process.count_sum";
/// `rill.reduce.sum`.
pub const SUM: &str = "rill.reduce.sum";
/// `rill.flat_map.key_timestamp`.
pub const KEY_TIMESTAMP: &str = "rill.flat_map.key_timestamp";
/// `rill.watermarks.bounded_out_of_orderness`.
pub const BOUNDED_OUT_OF_ORDERNESS: &str = "rill.watermarks.bounded_out_of_orderness";
/// `rill.window.count`.
pub const WINDOW_COUNT: &str = "rill.window.count";
/// `rill.window.sum`.
pub const WINDOW_SUM: &str = "rill.window.sum";
/// `rill.window.keyed_result`.
pub const WINDOW_KEYED_RESULT: &str = "rill.window.keyed_result";

/// Registers every built-in in `r` (which must not already hold them).
pub(crate) fn register_builtins(r: &mut OperatorRegistry) {
    let results = [
        r.register_source(DATAGEN, datagen::DatagenSource::new),
        r.register_source(COLLECTION, collection::CollectionSource::new),
        r.register_source(FILE_LINES, file_source::FileLinesSource::new),
        r.register_source(SOCKET, socket_source::SocketSource::new),
        r.register_operator(PRINT, OperatorKind::Sink, sinks::PrintSink::new),
        r.register_operator(FILE_SINK, OperatorKind::Sink, file_sink::FileSink::new),
        r.register_operator(
            TRANSACTIONAL_FILE_SINK,
            OperatorKind::Sink,
            transactional_file_sink::operator,
        ),
        r.register_operator(BLACKHOLE, OperatorKind::Sink, sinks::BlackholeSink::new),
        r.register_map(THROTTLE, transforms::throttle),
        r.register_operator(COLLECT, OperatorKind::Sink, sinks::CollectSinkOperator::new),
        r.register_flat_map(SPLIT_WORDS, |()| Ok(transforms::split_words)),
        r.register_flat_map(FIRST_FIELD, |()| Ok(transforms::first_field)),
        r.register_map(CSV, |()| Ok(transforms::csv)),
        r.register_map(crate::window_join::TAG_INPUT, |side: i64| {
            if !(1..=2).contains(&side) {
                return Err(crate::error::DataflowError::InvalidConfig {
                    factory: crate::window_join::TAG_INPUT.into(),
                    reason: format!("side {side} is neither 1 nor 2"),
                });
            }
            Ok(move |v: Value| Ok(Value::Tuple(vec![Value::I64(side), v])))
        }),
        r.register_process(COUNT, |c: CountConfig| Ok(transforms::Count(c))),
        r.register_process(COUNT_SUM, |c: CountConfig| Ok(transforms::CountSum(c))),
        r.register_reduce(SUM, |()| Ok(transforms::sum)),
        r.register_flat_map(KEY_TIMESTAMP, |()| Ok(watermarks::key_timestamp)),
        r.register_operator(
            BOUNDED_OUT_OF_ORDERNESS,
            OperatorKind::Map,
            |c: BoundedOutOfOrdernessConfig, _: &crate::operator::OperatorContext| {
                watermarks::BoundedOutOfOrderness::new(c)
            },
        ),
        r.register_source(
            nexmark::NEXMARK_SOURCE,
            nexmark::NexmarkGeneratorSource::new,
        ),
        r.register_source(
            nexmark::NEXMARK_FILE_SOURCE,
            nexmark::NexmarkFileSource::new,
        ),
        r.register_flat_map(nexmark::NEXMARK_QUERY, |q: nexmark::StatelessQuery| {
            Ok(move |v, out: &mut crate::operator::Collector<'_>| q.apply(v, out))
        }),
        r.register_flat_map(nexmark::NEXMARK_SELECT, |s: nexmark::joins::Selection| {
            Ok(move |v: Value, out: &mut crate::operator::Collector<'_>| {
                if s.keeps(&v)? {
                    out.collect(v);
                }
                Ok(())
            })
        }),
        r.register_keyed_co_process(nexmark::NEXMARK_Q3, |()| Ok(nexmark::joins::Q3Join)),
        r.register_keyed_co_process(nexmark::NEXMARK_WINNING_BIDS, |()| {
            Ok(nexmark::joins::WinningBids)
        }),
        r.register_process(nexmark::NEXMARK_Q4_AVERAGE, |()| {
            Ok(nexmark::joins::CategoryAverage)
        }),
        r.register_process(nexmark::NEXMARK_Q6_AVERAGE, |()| {
            Ok(nexmark::joins::SellerAverage)
        }),
        r.register_window_join(nexmark::NEXMARK_Q8, |()| {
            Ok(nexmark::joins::Q8Join::default())
        }),
        r.register_map(nexmark::JSON_ROW, |c: nexmark::JsonRowConfig| {
            Ok(nexmark::queries::json_row(c))
        }),
        r.register_window_aggregate(nexmark::MAX_TIES, |c: nexmark::MaxTiesConfig| {
            Ok(nexmark::queries::MaxTies(c))
        }),
        r.register_window_process(nexmark::NEXMARK_ROWS, |q: nexmark::WindowedQuery| {
            Ok(nexmark::queries::NexmarkRows(q))
        }),
        r.register_window_aggregate(WINDOW_COUNT, |()| Ok(transforms::WindowCount)),
        r.register_window_reduce(WINDOW_SUM, |()| Ok(transforms::sum)),
        r.register_window_process(WINDOW_KEYED_RESULT, |()| Ok(transforms::KeyedResult)),
        r.register_key_selector(crate::key::CONSTANT_KEY, |()| Ok(crate::key::ConstantKey)),
        r.register_key_selector(crate::key::VALUE_KEY, |()| Ok(crate::key::ValueKey)),
        r.register_key_selector(crate::key::FIELD_KEY, |c: crate::key::FieldKey| Ok(c)),
        r.register_key_selector(crate::key::I64_MOD_KEY, |c: crate::key::I64ModKey| {
            if c.modulus < 1 {
                return Err(crate::error::DataflowError::InvalidConfig {
                    factory: crate::key::I64_MOD_KEY.into(),
                    reason: format!("modulus must be ≥ 1, got {}", c.modulus),
                });
            }
            Ok(c)
        }),
    ];
    for r in results {
        // Names above are distinct literals and `r` starts empty (only `new` calls this).
        r.expect("built-in names are unique");
    }
}

/// Source: ids `0..rows` (unbounded when `rows` is `None`), optionally rate-limited.
pub fn datagen(config: DatagenConfig) -> FactoryRef {
    FactoryRef::builtin(DATAGEN, &config)
}

/// Source: the given values.
pub fn collection(values: Vec<Value>) -> FactoryRef {
    FactoryRef::builtin(COLLECTION, &CollectionConfig { values })
}

/// Source: the lines of a file, or of every file in a directory.
pub fn file_lines(path: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(
        FILE_LINES,
        &FileLinesConfig {
            path: path.into(),
            rate: None,
        },
    )
}

/// Source: like [`file_lines`], at most `lines_per_second` lines per second over all
/// subtasks.
pub fn file_lines_rate(path: impl Into<String>, lines_per_second: f64) -> FactoryRef {
    FactoryRef::builtin(
        FILE_LINES,
        &FileLinesConfig {
            path: path.into(),
            rate: Some(lines_per_second),
        },
    )
}

/// Source: text lines read from a TCP server at `host:port`.
pub fn socket_lines(host: impl Into<String>, port: u16) -> FactoryRef {
    FactoryRef::builtin(
        SOCKET,
        &SocketConfig {
            host: host.into(),
            port,
        },
    )
}

/// Sink: prints every value to stdout.
pub fn print() -> FactoryRef {
    FactoryRef::builtin(PRINT, &PrintConfig::default())
}

/// Sink: writes one line per value to the file `path` (parallelism 1 only).
pub fn file_sink(path: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(
        FILE_SINK,
        &FileSinkConfig {
            path: path.into(),
            layout: FileLayout::File,
        },
    )
}

/// Sink: writes `part-N` files (one per subtask) into the directory `path`.
pub fn file_sink_dir(path: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(
        FILE_SINK,
        &FileSinkConfig {
            path: path.into(),
            layout: FileLayout::Directory,
        },
    )
}

/// Sink: exactly-once part files under the directory `dir`, committed when a checkpoint
/// completes or the input ends (see [`transactional_file_sink`]).
pub fn transactional_file_sink(dir: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(
        TRANSACTIONAL_FILE_SINK,
        &transactional_file_sink::TransactionalFileSinkConfig { dir: dir.into() },
    )
}

/// Flat-map: `key,timestamp` lines → `(key, timestamp)` records with that event time.
pub fn key_timestamp() -> FactoryRef {
    FactoryRef::unit(KEY_TIMESTAMP)
}

/// Watermark generator: watermarks `max_out_of_orderness_ms` (+1) behind the largest
/// timestamp seen; use with
/// [`DataStream::assign_timestamps_and_watermarks`](crate::DataStream::assign_timestamps_and_watermarks).
pub fn bounded_out_of_orderness(max_out_of_orderness_ms: i64) -> FactoryRef {
    FactoryRef::builtin(
        BOUNDED_OUT_OF_ORDERNESS,
        &BoundedOutOfOrdernessConfig {
            max_out_of_orderness_ms,
        },
    )
}

/// Window aggregate: the number of elements (i64).
pub fn window_count() -> FactoryRef {
    FactoryRef::unit(WINDOW_COUNT)
}

/// Window reduce: the sum of i64 (or f64) values.
pub fn window_sum() -> FactoryRef {
    FactoryRef::unit(WINDOW_SUM)
}

/// Process window function: `(key, window start, window end, element)` for every
/// element (with `aggregate_with`/`reduce_with`: for the one result).
pub fn window_keyed_result() -> FactoryRef {
    FactoryRef::unit(WINDOW_KEYED_RESULT)
}

/// Sink: discards everything.
pub fn blackhole() -> FactoryRef {
    FactoryRef::unit(BLACKHOLE)
}

/// Sink: hands values to the runtime's collect hook under `id`.
pub fn collect(id: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(COLLECT, &CollectConfig { id: id.into() })
}

/// Flat-map: splits a line into lowercase words.
pub fn split_words() -> FactoryRef {
    FactoryRef::unit(SPLIT_WORDS)
}

/// Flat map: the first whitespace-separated field of a `Str` line (nothing for a blank
/// line).
pub fn first_field() -> FactoryRef {
    FactoryRef::unit(FIRST_FIELD)
}

/// Map: a tuple as one comma-separated `Str` (`("a", 3)` → `a,3`); other values as their
/// text.
pub fn csv() -> FactoryRef {
    FactoryRef::unit(CSV)
}

/// Map: passes values through unchanged at no more than `rate` per second. Its task
/// sleeps when ahead, so its input backs up: backpressure for every task upstream (a
/// slow operator, as in checkpoint-under-backpressure benchmarks and tests).
pub fn throttle(rate: f64) -> FactoryRef {
    FactoryRef::builtin(THROTTLE, &transforms::ThrottleConfig { rate })
}

/// Keyed process: counts records per key; emits `(key, count)` after every record when
/// `emit_updates`, else once per key at end of input.
pub fn count_per_key(emit_updates: bool) -> FactoryRef {
    FactoryRef::builtin(COUNT, &CountConfig { emit_updates })
}

/// Keyed process: count and sum of i64 values per key, as `(key, count, sum)`.
pub fn count_sum_per_key(emit_updates: bool) -> FactoryRef {
    FactoryRef::builtin(COUNT_SUM, &CountConfig { emit_updates })
}

/// Keyed reduce: running sum.
pub fn sum() -> FactoryRef {
    FactoryRef::unit(SUM)
}
