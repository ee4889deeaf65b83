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
}

impl StatelessQuery {
    /// The result's column names, in row order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Q0 | Self::Q1 => &["auction", "bidder", "price", "dateTime", "extra"],
            Self::Q2 => &["auction", "price"],
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
