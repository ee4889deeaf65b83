//! Nexmark: the auction-site benchmark's events, their generator and sources, and the
//! queries rill runs as built-in jobs (see [`jobs::nexmark`](crate::jobs::nexmark)).
//!
//! * [`model`]: `Person`, `Auction`, `Bid`, their JSON Lines and [`Value`] encodings;
//! * [`generator`]: the deterministic generator (1 : 3 : 46 mix, hot ids, event time
//!   from the events-per-second rate);
//! * `source`: `rill.source.nexmark` (the generator) and `rill.source.nexmark_file`
//!   (a JSON Lines file), both checkpointable;
//! * [`joins`]: the functions of q3, q4, q6 and q8 (two-input operators and joins);
//! * [`queries`]: q0–q2 (and the first stages of q5 and q7) as
//!   `rill.flat_map.nexmark_query`; `rill.window.max_ties` and
//!   `rill.window.nexmark_rows`, the window functions of q5 and q7; and
//!   `rill.map.json_row`, which renders result rows as JSON objects.

pub mod generator;
pub mod joins;
pub mod model;
pub mod queries;
mod source;

pub use generator::GeneratorConfig;
pub use model::{Auction, Bid, Event, Person};
pub use queries::{JsonRowConfig, MaxTiesConfig, StatelessQuery, WindowedQuery};
pub use source::{NexmarkFileConfig, NexmarkGeneratorConfig};
pub(crate) use source::{NexmarkFileSource, NexmarkGeneratorSource};

use crate::spec::FactoryRef;

/// `rill.source.nexmark`.
pub const NEXMARK_SOURCE: &str = "rill.source.nexmark";
/// `rill.source.nexmark_file`.
pub const NEXMARK_FILE_SOURCE: &str = "rill.source.nexmark_file";
/// `rill.flat_map.nexmark_query`.
pub const NEXMARK_QUERY: &str = "rill.flat_map.nexmark_query";
/// `rill.map.json_row`.
pub const JSON_ROW: &str = "rill.map.json_row";
/// `rill.window.max_ties`.
pub const MAX_TIES: &str = "rill.window.max_ties";
/// `rill.window.nexmark_rows`.
pub const NEXMARK_ROWS: &str = "rill.window.nexmark_rows";

/// `rill.flat_map.nexmark_select`.
pub const NEXMARK_SELECT: &str = "rill.flat_map.nexmark_select";
/// `rill.co_process.nexmark_q3`.
pub const NEXMARK_Q3: &str = "rill.co_process.nexmark_q3";
/// `rill.co_process.nexmark_winning_bids`.
pub const NEXMARK_WINNING_BIDS: &str = "rill.co_process.nexmark_winning_bids";
/// `rill.process.nexmark_q4_average`.
pub const NEXMARK_Q4_AVERAGE: &str = "rill.process.nexmark_q4_average";
/// `rill.process.nexmark_q6_average`.
pub const NEXMARK_Q6_AVERAGE: &str = "rill.process.nexmark_q6_average";
/// `rill.window_join.nexmark_q8`.
pub const NEXMARK_Q8: &str = "rill.window_join.nexmark_q8";

/// Flat-map: the events `selection` keeps, unchanged.
pub fn select(selection: joins::Selection) -> FactoryRef {
    FactoryRef::builtin(NEXMARK_SELECT, &selection)
}

/// Window aggregate: the elements whose tuple field `field` (an i64) is the largest,
/// all ties.
pub fn max_ties(field: usize) -> FactoryRef {
    FactoryRef::builtin(MAX_TIES, &MaxTiesConfig { field })
}

/// Process window function: q5's or q7's rows from [`max_ties`]' result.
pub fn windowed_rows(q: WindowedQuery) -> FactoryRef {
    FactoryRef::builtin(NEXMARK_ROWS, &q)
}

/// Source: `events` generated Nexmark events (unbounded if `None`).
pub fn generator_source(events: Option<u64>, generator: GeneratorConfig) -> FactoryRef {
    FactoryRef::builtin(
        NEXMARK_SOURCE,
        &NexmarkGeneratorConfig { events, generator },
    )
}

/// Source: the Nexmark events of a JSON Lines file.
pub fn file_source(path: impl Into<String>) -> FactoryRef {
    FactoryRef::builtin(
        NEXMARK_FILE_SOURCE,
        &NexmarkFileConfig { path: path.into() },
    )
}

/// Flat-map: the rows of a stateless query (q0–q2) for each event.
pub fn stateless_query(q: StatelessQuery) -> FactoryRef {
    FactoryRef::builtin(NEXMARK_QUERY, &q)
}

/// Map: a row tuple as a JSON object with these column names.
pub fn json_row(columns: &[&str]) -> FactoryRef {
    FactoryRef::builtin(
        JSON_ROW,
        &JsonRowConfig {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        },
    )
}
