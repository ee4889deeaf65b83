//! The Nexmark event model: [`Person`], [`Auction`], [`Bid`] and the [`Event`] that is
//! one of them, with their two encodings.
//!
//! * **JSON Lines** (the interchange format `rill nexmark generate` writes and Flink's
//!   `nexmark.sh` reads): one event per line, an object with exactly one key —
//!   `{"person": {id, name, emailAddress, creditCard, city, state, dateTime, extra}}`,
//!   `{"auction": {id, itemName, description, initialBid, reserve, dateTime, expires,
//!   seller, category, extra}}` or `{"bid": {auction, bidder, price, channel, url,
//!   dateTime, extra}}`; times are integer milliseconds since the epoch. Fields are
//!   written in that order, so equal events give equal bytes. Reading refuses unknown,
//!   missing and ill-typed fields and objects with more than one key.
//! * **[`Value`]** (what flows between operators): a tuple whose first field is the
//!   kind tag ([`PERSON`], [`AUCTION`], [`BID`]) followed by the fields in the order
//!   above, e.g. a bid is `(2, auction, bidder, price, channel, url, dateTime, extra)`.
//!   The `*_FIELD` constants index into it.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Kind tag (field 0) of a person tuple.
pub const PERSON: i64 = 0;
/// Kind tag (field 0) of an auction tuple.
pub const AUCTION: i64 = 1;
/// Kind tag (field 0) of a bid tuple.
pub const BID: i64 = 2;

/// Index of `auction` in a bid tuple.
pub const BID_AUCTION: usize = 1;
/// Index of `bidder` in a bid tuple.
pub const BID_BIDDER: usize = 2;
/// Index of `price` in a bid tuple.
pub const BID_PRICE: usize = 3;
/// Index of `dateTime` in a bid tuple.
pub const BID_DATE_TIME: usize = 6;
/// Index of `extra` in a bid tuple.
pub const BID_EXTRA: usize = 7;

/// A person joining the auction site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Person {
    /// Person id (≥ 1000).
    pub id: i64,
    /// First and last name.
    pub name: String,
    /// E-mail address.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// City.
    pub city: String,
    /// US state (two letters).
    pub state: String,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auction {
    /// Auction id (≥ 1000).
    pub id: i64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Initial bid, in cents.
    pub initial_bid: i64,
    /// Reserve price, in cents (≥ the initial bid).
    pub reserve: i64,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// When the auction closes, ms since the epoch (> `date_time`).
    pub expires: i64,
    /// Person id of the seller.
    pub seller: i64,
    /// Category id (10..15).
    pub category: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bid {
    /// Auction id.
    pub auction: i64,
    /// Person id of the bidder.
    pub bidder: i64,
    /// Price, in cents.
    pub price: i64,
    /// Channel the bid came through.
    pub channel: String,
    /// URL of the bid.
    pub url: String,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event time, ms since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// Parses one JSON Lines line (without its line break).
    pub fn from_json(line: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// Appends the event's JSON Lines line (without a line break) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Serializing plain structs of strings and integers into memory cannot fail.
        serde_json::to_writer(out, self).expect("a Nexmark event serializes to JSON");
    }

    /// The event as a [`Value`] tuple (see the module docs).
    pub fn into_value(self) -> Value {
        use Value::{Str, I64};
        Value::Tuple(match self {
            Event::Person(p) => vec![
                I64(PERSON),
                I64(p.id),
                Str(p.name),
                Str(p.email_address),
                Str(p.credit_card),
                Str(p.city),
                Str(p.state),
                I64(p.date_time),
                Str(p.extra),
            ],
            Event::Auction(a) => vec![
                I64(AUCTION),
                I64(a.id),
                Str(a.item_name),
                Str(a.description),
                I64(a.initial_bid),
                I64(a.reserve),
                I64(a.date_time),
                I64(a.expires),
                I64(a.seller),
                I64(a.category),
                Str(a.extra),
            ],
            Event::Bid(b) => vec![
                I64(BID),
                I64(b.auction),
                I64(b.bidder),
                I64(b.price),
                Str(b.channel),
                Str(b.url),
                I64(b.date_time),
                Str(b.extra),
            ],
        })
    }

    /// The event a [`Value`] tuple encodes; `None` if it encodes none.
    pub fn from_value(v: &Value) -> Option<Event> {
        let t = v.as_tuple()?;
        let i = |k: usize| t.get(k).and_then(Value::as_i64);
        let s = |k: usize| t.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(match (i(0)?, t.len()) {
            (PERSON, 9) => Event::Person(Person {
                id: i(1)?,
                name: s(2)?,
                email_address: s(3)?,
                credit_card: s(4)?,
                city: s(5)?,
                state: s(6)?,
                date_time: i(7)?,
                extra: s(8)?,
            }),
            (AUCTION, 11) => Event::Auction(Auction {
                id: i(1)?,
                item_name: s(2)?,
                description: s(3)?,
                initial_bid: i(4)?,
                reserve: i(5)?,
                date_time: i(6)?,
                expires: i(7)?,
                seller: i(8)?,
                category: i(9)?,
                extra: s(10)?,
            }),
            (BID, 8) => Event::Bid(Bid {
                auction: i(1)?,
                bidder: i(2)?,
                price: i(3)?,
                channel: s(4)?,
                url: s(5)?,
                date_time: i(6)?,
                extra: s(7)?,
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid() -> Event {
        Event::Bid(Bid {
            auction: 1007,
            bidder: 2001,
            price: 1234,
            channel: "Google".into(),
            url: "https://www.nexmark.com/a/b/c/item.htm?query=1".into(),
            date_time: 1_577_836_800_123,
            extra: "x".into(),
        })
    }

    #[test]
    fn json_has_the_interchange_field_names_in_order() {
        let mut out = Vec::new();
        bid().write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"bid":{"auction":1007,"bidder":2001,"price":1234,"channel":"Google","url":"https://www.nexmark.com/a/b/c/item.htm?query=1","dateTime":1577836800123,"extra":"x"}}"#
        );
    }

    #[test]
    fn json_refuses_two_keys_unknown_and_missing_fields() {
        let ok = r#"{"person":{"id":1000,"name":"a","emailAddress":"e","creditCard":"c","city":"x","state":"OR","dateTime":5,"extra":""}}"#;
        assert!(matches!(Event::from_json(ok), Ok(Event::Person(_))));
        for bad in [
            r#"{"bid":{"auction":1,"bidder":2,"price":3,"channel":"c","url":"u","dateTime":4,"extra":""},"person":{}}"#,
            r#"{"bid":{"auction":1,"bidder":2,"price":3,"channel":"c","url":"u","dateTime":4,"extra":"","x":1}}"#,
            r#"{"bid":{"auction":1,"bidder":2,"price":3,"channel":"c","url":"u","extra":""}}"#,
            r#"{"bid":{"auction":"1","bidder":2,"price":3,"channel":"c","url":"u","dateTime":4,"extra":""}}"#,
            r#"{"car":{}}"#,
            r#"{}"#,
            "not json",
        ] {
            assert!(Event::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn value_round_trips() {
        let e = bid();
        let v = e.clone().into_value();
        assert_eq!(v.as_tuple().unwrap()[BID_PRICE], Value::I64(1234));
        assert_eq!(Event::from_value(&v), Some(e));
        assert_eq!(Event::from_value(&Value::I64(3)), None);
    }
}
