//! The stateless Nexmark queries as per-event functions, and the JSON row encoder of
//! their results.
//!
//! | query | keeps | row (Flink's nexmark column names) |
//! |---|---|---|
//! | q0 | every bid | `{auction, bidder, price, dateTime, extra}` |
//! | q1 | every bid, price in euros: `0.908 × price` as a float | `{auction, bidder, price, dateTime, extra}` |
//! | q2 | bids with `auction % 123 == 0` | `{auction, price}` |
//!
//! Persons and auctions are dropped. Rows are tuples of the columns in order; the
//! [`JsonRowConfig`] map turns them into one JSON object per row.
//!
//! The windowed queries are built from these functions and windows (see
//! [`jobs::nexmark`](crate::jobs::nexmark)):
//!
//! * **q5** (hot items): bids → their auction ([`StatelessQuery::Q5Auctions`]) → per
//!   auction, sliding event-time windows of 10 s every 2 s counting bids →
//!   `(auction, start, end, count)` at the window's last millisecond → keyed by the
//!   window start, a 2 s tumbling window (which holds exactly one sliding window's
//!   counts) keeping the counts that equal the largest ([`MaxTies`]) → rows
//!   `{auction, num, window_start, window_end}`, every tie;
//! * **q7** (highest bid): bids → `(auction, price, bidder, dateTime, extra)`
//!   ([`StatelessQuery::Q7Bids`]) → one 10 s tumbling event-time window over all bids
//!   keeping the bids whose price equals the largest ([`MaxTies`]) → rows
//!   `{auction, price, bidder, dateTime, extra, window_start, window_end}`.
//!
//! Windows are aligned to the epoch and half-open, `[start, end)`, like the Flink
//! baseline's window TVFs.

use serde::{Deserialize, Serialize};

use super::model::{BID, BID_AUCTION, BID_BIDDER, BID_DATE_TIME, BID_EXTRA, BID_PRICE};
use crate::error::{DataflowError, Result};
use crate::operator::Collector;
use crate::value::Value;

/// Dollars to euros, as Flink's nexmark q1 (`0.908 * price`, a DOUBLE).
pub const EUROS_PER_DOLLAR: f64 = 0.908;

/// A stateless Nexmark query: configuration of `rill.flat_map.nexmark_query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatelessQuery {
    /// Pass-through of every bid.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// q5's first stage: the auction (`I64`) of every bid.
    Q5Auctions,
    /// q7's first stage: `(auction, price, bidder, dateTime, extra)` of every bid.
    Q7Bids,
}

impl StatelessQuery {
    /// The result's column names, in row order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Q0 | Self::Q1 => &["auction", "bidder", "price", "dateTime", "extra"],
            Self::Q2 => &["auction", "price"],
            Self::Q5Auctions => &["auction"],
            Self::Q7Bids => &["auction", "price", "bidder", "dateTime", "extra"],
        }
    }

    /// The query's rows for one event tuple.
    pub(crate) fn apply(self, v: Value, out: &mut Collector<'_>) -> Result<()> {
        let Value::Tuple(mut t) = v else {
            return Err(mismatch(&v));
        };
        if t.first() != Some(&Value::I64(BID)) {
            return Ok(());
        }
        if t.len() != 8 {
            return Err(mismatch(&Value::Tuple(t)));
        }
        let auction = &t[BID_AUCTION];
        match self {
            Self::Q5Auctions => out.collect(std::mem::take(&mut t[BID_AUCTION])),
            Self::Q7Bids => out.collect(Value::Tuple(vec![
                std::mem::take(&mut t[BID_AUCTION]),
                std::mem::take(&mut t[BID_PRICE]),
                std::mem::take(&mut t[BID_BIDDER]),
                std::mem::take(&mut t[BID_DATE_TIME]),
                std::mem::take(&mut t[BID_EXTRA]),
            ])),
            Self::Q0 | Self::Q1 => {
                let price = std::mem::take(&mut t[BID_PRICE]);
                let price = match (self, price) {
                    (Self::Q1, Value::I64(p)) => Value::F64(EUROS_PER_DOLLAR * p as f64),
                    (_, p) => p,
                };
                out.collect(Value::Tuple(vec![
                    std::mem::take(&mut t[BID_AUCTION]),
                    std::mem::take(&mut t[BID_BIDDER]),
                    price,
                    std::mem::take(&mut t[BID_DATE_TIME]),
                    std::mem::take(&mut t[BID_EXTRA]),
                ]));
            }
            Self::Q2 => {
                let Some(a) = auction.as_i64() else {
                    return Err(mismatch(&Value::Tuple(t)));
                };
                if a % 123 == 0 {
                    out.collect(Value::Tuple(vec![
                        Value::I64(a),
                        std::mem::take(&mut t[BID_PRICE]),
                    ]));
                }
            }
        }
        Ok(())
    }
}

/// Configuration of `rill.window.max_ties`: which tuple field is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxTiesConfig {
    /// Index of the compared field (an `I64`) in the element tuples.
    pub field: usize,
}

/// `rill.window.max_ties`: a window aggregate keeping the elements whose `field` is the
/// largest in the window, all ties, in arrival order. The accumulator is
/// `(max, (elements…))`, `(null, ())` when empty; the result is the tuple of elements.
pub(crate) struct MaxTies(pub(crate) MaxTiesConfig);

impl MaxTies {
    fn parts(acc: &mut Value) -> Option<(&mut Value, &mut Vec<Value>)> {
        match acc {
            Value::Tuple(t) => match t.as_mut_slice() {
                [max, Value::Tuple(elements)] => Some((max, elements)),
                _ => None,
            },
            _ => None,
        }
    }

    fn key(&self, v: &Value) -> Result<i64> {
        v.as_tuple()
            .and_then(|t| t.get(self.0.field))
            .and_then(Value::as_i64)
            .ok_or_else(|| DataflowError::TypeMismatch {
                operator: super::MAX_TIES.into(),
                expected: "a tuple with an i64 at the compared field",
                actual: v.type_name(),
            })
    }

    fn bad_acc() -> DataflowError {
        DataflowError::TypeMismatch {
            operator: super::MAX_TIES.into(),
            expected: "a (max, (elements…)) accumulator",
            actual: "another value",
        }
    }
}

impl crate::window::AggregateFunction for MaxTies {
    fn create_accumulator(&mut self) -> Value {
        Value::Tuple(vec![Value::Null, Value::Tuple(Vec::new())])
    }

    fn add(&mut self, value: Value, acc: &mut Value) -> Result<()> {
        let k = self.key(&value)?;
        let (max, elements) = Self::parts(acc).ok_or_else(Self::bad_acc)?;
        match max.as_i64() {
            Some(m) if k < m => {}
            Some(m) if k == m => elements.push(value),
            _ => {
                *max = Value::I64(k);
                elements.clear();
                elements.push(value);
            }
        }
        Ok(())
    }

    fn get_result(&mut self, acc: &Value) -> Result<Value> {
        match acc.as_tuple() {
            Some([_, elements @ Value::Tuple(_)]) => Ok(elements.clone()),
            _ => Err(Self::bad_acc()),
        }
    }

    fn merge(&mut self, acc: &mut Value, other: Value) -> Result<()> {
        let Value::Tuple(mut o) = other else {
            return Err(Self::bad_acc());
        };
        let Some(Value::Tuple(elements)) = o.pop() else {
            return Err(Self::bad_acc());
        };
        for e in elements {
            self.add(e, acc)?;
        }
        Ok(())
    }
}

/// Which windowed query's rows `rill.window.nexmark_rows` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowedQuery {
    /// Hot items.
    Q5,
    /// Highest bid.
    Q7,
}

impl WindowedQuery {
    /// The result's column names, in row order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Q5 => &["auction", "num", "window_start", "window_end"],
            Self::Q7 => &[
                "auction",
                "price",
                "bidder",
                "dateTime",
                "extra",
                "window_start",
                "window_end",
            ],
        }
    }
}

/// `rill.window.nexmark_rows`: the process half of [`MaxTies`] for q5 and q7; one row
/// per tied element (see the module docs).
pub(crate) struct NexmarkRows(pub(crate) WindowedQuery);

impl crate::window::ProcessWindowFunction for NexmarkRows {
    fn process(
        &mut self,
        _key: &Value,
        ctx: &crate::window::WindowContext,
        elements: &[Value],
        out: &mut Collector<'_>,
    ) -> Result<()> {
        for result in elements {
            let ties = result.as_tuple().ok_or_else(|| mismatch(result))?;
            for e in ties {
                let f = e.as_tuple().ok_or_else(|| mismatch(e))?;
                let row = match (self.0, f) {
                    // (auction, start, end, count) of a sliding window.
                    (WindowedQuery::Q5, [auction, start, end, count]) => {
                        vec![auction.clone(), count.clone(), start.clone(), end.clone()]
                    }
                    (WindowedQuery::Q7, [_, _, _, _, _]) => {
                        let mut row = f.to_vec();
                        row.push(Value::I64(ctx.window.start()));
                        row.push(Value::I64(ctx.window.end()));
                        row
                    }
                    _ => return Err(mismatch(e)),
                };
                out.collect(Value::Tuple(row));
            }
        }
        Ok(())
    }
}

fn mismatch(v: &Value) -> DataflowError {
    DataflowError::TypeMismatch {
        operator: super::NEXMARK_QUERY.into(),
        expected: "a Nexmark event tuple",
        actual: v.type_name(),
    }
}

/// Configuration of `rill.map.json_row`: the column names of the row tuples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRowConfig {
    /// Names of the tuple's fields, in order.
    pub columns: Vec<String>,
}

/// `rill.map.json_row`: a row tuple as one JSON object `{"col": value, …}` (a `Str`),
/// columns in order; integers and floats as JSON numbers, strings as strings, null as
/// null.
pub(crate) fn json_row(c: JsonRowConfig) -> impl FnMut(Value) -> Result<Value> {
    // Column names quoted once.
    let keys: Vec<String> = c
        .columns
        .iter()
        .map(|k| serde_json::Value::String(k.clone()).to_string())
        .collect();
    move |v: Value| {
        let fields = match v {
            Value::Tuple(t) if t.len() == keys.len() => t,
            ref other => {
                return Err(DataflowError::TypeMismatch {
                    operator: super::JSON_ROW.into(),
                    expected: "a tuple with one field per column",
                    actual: other.type_name(),
                })
            }
        };
        let mut s = String::with_capacity(128);
        s.push('{');
        for (i, (k, f)) in keys.iter().zip(&fields).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
            s.push(':');
            match f {
                Value::Null => s.push_str("null"),
                Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
                Value::I64(n) => s.push_str(&n.to_string()),
                Value::F64(x) if x.is_finite() => {
                    s.push_str(&serde_json::Value::from(*x).to_string())
                }
                Value::F64(_) => s.push_str("null"),
                Value::Str(text) => s.push_str(&serde_json::Value::from(text.as_str()).to_string()),
                other => s.push_str(&serde_json::Value::from(other.to_string()).to_string()),
            }
        }
        s.push('}');
        Ok(Value::Str(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins::nexmark::model::{Bid, Event};
    use crate::element::StreamRecord;

    fn bid(auction: i64, price: i64) -> Value {
        Event::Bid(Bid {
            auction,
            bidder: 7,
            price,
            channel: "c".into(),
            url: "u".into(),
            date_time: 99,
            extra: "e\"x".into(),
        })
        .into_value()
    }

    fn run(q: StatelessQuery, events: Vec<Value>) -> Vec<String> {
        let mut out = Vec::<StreamRecord>::new();
        let mut c = Collector::new(&mut out, None);
        for e in events {
            q.apply(e, &mut c).unwrap();
        }
        let mut j = json_row(JsonRowConfig {
            columns: q.columns().iter().map(|s| s.to_string()).collect(),
        });
        out.into_iter()
            .map(|r| j(r.value).unwrap().as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn max_ties_keeps_every_maximum_and_merges() {
        use crate::window::AggregateFunction;
        let mut m = MaxTies(MaxTiesConfig { field: 1 });
        let row = |a: i64, p: i64| Value::Tuple(vec![Value::I64(a), Value::I64(p)]);
        let mut acc = m.create_accumulator();
        assert_eq!(m.get_result(&acc).unwrap(), Value::Tuple(vec![]));
        for (a, p) in [(1, 5), (2, 9), (3, 2), (4, 9)] {
            m.add(row(a, p), &mut acc).unwrap();
        }
        assert_eq!(
            m.get_result(&acc).unwrap(),
            Value::Tuple(vec![row(2, 9), row(4, 9)])
        );
        let mut other = m.create_accumulator();
        m.add(row(5, 11), &mut other).unwrap();
        m.merge(&mut acc, other).unwrap();
        assert_eq!(m.get_result(&acc).unwrap(), Value::Tuple(vec![row(5, 11)]));
        assert!(m.add(Value::I64(3), &mut acc).is_err());
    }

    #[test]
    fn q0_q1_q2_rows() {
        let person = crate::builtins::nexmark::generator::GeneratorConfig::default()
            .event(0)
            .into_value();
        let events = vec![person, bid(246, 1000), bid(247, 3)];
        assert_eq!(
            run(StatelessQuery::Q0, events.clone()),
            [
                r#"{"auction":246,"bidder":7,"price":1000,"dateTime":99,"extra":"e\"x"}"#,
                r#"{"auction":247,"bidder":7,"price":3,"dateTime":99,"extra":"e\"x"}"#
            ]
        );
        assert_eq!(
            run(StatelessQuery::Q1, events.clone()),
            [
                r#"{"auction":246,"bidder":7,"price":908.0,"dateTime":99,"extra":"e\"x"}"#,
                r#"{"auction":247,"bidder":7,"price":2.724,"dateTime":99,"extra":"e\"x"}"#
            ]
        );
        assert_eq!(
            run(StatelessQuery::Q2, events),
            [r#"{"auction":246,"price":1000}"#]
        );
    }
}
