//! The joining Nexmark queries' functions: q3, q4, q6 and q8 (see
//! [`jobs::nexmark`](crate::jobs::nexmark) for how they are wired).
//!
//! * **q3** (local item suggestion): persons in OR, ID or CA (input 1, keyed by id)
//!   ⋈ auctions of category 10 (input 2, keyed by seller), an incremental join in a
//!   [`KeyedCoProcessFunction`] ([`Q3Join`]): a person's `(name, city, state)` and the
//!   auctions that arrived before it wait in the key's state; each match emits
//!   `{name, city, state, id}` (id = auction id) once, whichever side came first.
//! * **q4 / q6** share their first stage, [`WinningBids`]: auctions (input 1, keyed by
//!   id) ⋈ bids (input 2, keyed by auction); per auction the highest price among bids
//!   with `auction.dateTime ≤ bid.dateTime ≤ auction.expires` (bids arriving before
//!   their auction wait in its state). Every time an auction's final rises it emits
//!   `(category, seller, auction, expires, previous final or null, final)`, an update
//!   that is exact whatever the arrival order. Then
//!   - q4 ([`CategoryAverage`], keyed by category): the sum and count of the finals of
//!     the category's auctions, updated by each change; emits `{category, avg}`;
//!   - q6 ([`SellerAverage`], keyed by seller): the finals of the seller's last 10
//!     auctions with a final by `(expires, auction id)`; emits `{seller, avg}`.
//!
//!   Both emit an upsert log: the last row per key is the result.
//! * **q8** (monitor new users): a window join ([`window_join`](crate::window_join))
//!   of persons (keyed by id) and auctions (keyed by seller) in 10 s tumbling
//!   event-time windows; [`Q8Join`] emits `{id, name, starttime}` once per person and
//!   window (the pairs of one window are co-grouped in one call sequence).

use serde::{Deserialize, Serialize};

use super::model::{AUCTION, BID, PERSON};
use crate::co_process::KeyedCoProcessFunction;
use crate::error::{DataflowError, Result};
use crate::keyed::{KeyedProcessFunction, ProcessContext};
use crate::operator::Collector;
use crate::value::Value;
use crate::window::Window;
use crate::window_join::JoinFunction;

/// Person tuple fields.
const PERSON_ID: usize = 1;
const PERSON_NAME: usize = 2;
const PERSON_CITY: usize = 5;
const PERSON_STATE: usize = 6;
/// Auction tuple fields.
const AUCTION_ID: usize = 1;
const AUCTION_DATE_TIME: usize = 6;
const AUCTION_EXPIRES: usize = 7;
const AUCTION_SELLER: usize = 8;
const AUCTION_CATEGORY: usize = 9;
/// Bid tuple fields.
const BID_PRICE: usize = 3;
const BID_DATE_TIME: usize = 6;

/// Index of the person id in a person tuple (q3's and q8's key of input 1).
pub const PERSON_ID_FIELD: usize = PERSON_ID;
/// Index of the auction id in an auction tuple.
pub const AUCTION_ID_FIELD: usize = AUCTION_ID;
/// Index of the seller in an auction tuple (q3's and q8's key of input 2).
pub const AUCTION_SELLER_FIELD: usize = AUCTION_SELLER;
/// Index of the auction in a bid tuple.
pub const BID_AUCTION_FIELD: usize = 1;

/// Which events `rill.flat_map.nexmark_select` keeps (whole event tuples).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Every person.
    Persons,
    /// Every auction.
    Auctions,
    /// Every bid.
    Bids,
    /// q3: persons in OR, ID or CA.
    Q3Persons,
    /// q3: auctions of category 10.
    Q3Auctions,
}

fn mismatch(operator: &str, v: &Value) -> DataflowError {
    DataflowError::TypeMismatch {
        operator: operator.into(),
        expected: "a Nexmark event tuple",
        actual: v.type_name(),
    }
}

fn field<'a>(operator: &str, v: &'a Value, i: usize) -> Result<&'a Value> {
    v.as_tuple()
        .and_then(|t| t.get(i))
        .ok_or_else(|| mismatch(operator, v))
}

fn int(operator: &str, v: &Value, i: usize) -> Result<i64> {
    field(operator, v, i)?
        .as_i64()
        .ok_or_else(|| mismatch(operator, v))
}

impl Selection {
    /// Whether `v` is kept.
    pub(crate) fn keeps(self, v: &Value) -> Result<bool> {
        const OP: &str = super::NEXMARK_SELECT;
        let kind = int(OP, v, 0)?;
        Ok(match self {
            Self::Persons => kind == PERSON,
            Self::Auctions => kind == AUCTION,
            Self::Bids => kind == BID,
            Self::Q3Persons => {
                kind == PERSON
                    && matches!(
                        field(OP, v, PERSON_STATE)?.as_str(),
                        Some("OR" | "ID" | "CA")
                    )
            }
            Self::Q3Auctions => kind == AUCTION && int(OP, v, AUCTION_CATEGORY)? == 10,
        })
    }
}

/// q3's per-seller state: the person, once known, and the ids of auctions waiting for
/// it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Q3State {
    /// `(name, city, state)` of the person.
    pub person: Option<(Value, Value, Value)>,
    /// Auctions that arrived before the person.
    pub pending: Vec<Value>,
}

/// `rill.co_process.nexmark_q3`: see the module docs.
pub struct Q3Join;

impl KeyedCoProcessFunction for Q3Join {
    type State = Q3State;

    fn process1(
        &mut self,
        _key: &Value,
        s: &mut Q3State,
        person: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        const OP: &str = super::NEXMARK_Q3;
        let p = (
            field(OP, person, PERSON_NAME)?.clone(),
            field(OP, person, PERSON_CITY)?.clone(),
            field(OP, person, PERSON_STATE)?.clone(),
        );
        for id in s.pending.drain(..) {
            out.collect(Value::Tuple(vec![
                p.0.clone(),
                p.1.clone(),
                p.2.clone(),
                id,
            ]));
        }
        s.person = Some(p);
        Ok(())
    }

    fn process2(
        &mut self,
        _key: &Value,
        s: &mut Q3State,
        auction: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        let id = field(super::NEXMARK_Q3, auction, AUCTION_ID)?.clone();
        match &s.person {
            Some((name, city, state)) => out.collect(Value::Tuple(vec![
                name.clone(),
                city.clone(),
                state.clone(),
                id,
            ])),
            None => s.pending.push(id),
        }
        Ok(())
    }
}

/// The per-auction state of [`WinningBids`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinningState {
    /// `(dateTime, expires, seller, category)` of the auction, once known.
    pub auction: Option<(i64, i64, i64, i64)>,
    /// The highest valid bid price so far.
    pub best: Option<i64>,
    /// `(dateTime, price)` of bids that arrived before their auction.
    pub pending: Vec<(i64, i64)>,
}

/// `rill.co_process.nexmark_winning_bids`: see the module docs.
pub struct WinningBids;

impl WinningBids {
    fn offer(
        s: &mut WinningState,
        auction: &Value,
        bid_time: i64,
        price: i64,
        out: &mut Collector<'_>,
    ) {
        let Some((start, expires, seller, category)) = s.auction else {
            s.pending.push((bid_time, price));
            return;
        };
        if bid_time < start || bid_time > expires || s.best.is_some_and(|b| b >= price) {
            return;
        }
        let previous = s.best.map_or(Value::Null, Value::I64);
        s.best = Some(price);
        out.collect(Value::Tuple(vec![
            category.into(),
            seller.into(),
            auction.clone(),
            expires.into(),
            previous,
            price.into(),
        ]));
    }
}

impl KeyedCoProcessFunction for WinningBids {
    type State = WinningState;

    fn process1(
        &mut self,
        key: &Value,
        s: &mut WinningState,
        auction: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        const OP: &str = super::NEXMARK_WINNING_BIDS;
        s.auction = Some((
            int(OP, auction, AUCTION_DATE_TIME)?,
            int(OP, auction, AUCTION_EXPIRES)?,
            int(OP, auction, AUCTION_SELLER)?,
            int(OP, auction, AUCTION_CATEGORY)?,
        ));
        // Only the best pending bid can be the final.
        let best = s
            .pending
            .drain(..)
            .filter(|(t, _)| {
                s.auction
                    .is_some_and(|(start, expires, _, _)| *t >= start && *t <= expires)
            })
            .max_by_key(|(_, p)| *p);
        if let Some((t, p)) = best {
            Self::offer(s, key, t, p, out);
        }
        Ok(())
    }

    fn process2(
        &mut self,
        key: &Value,
        s: &mut WinningState,
        bid: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        const OP: &str = super::NEXMARK_WINNING_BIDS;
        let (t, p) = (int(OP, bid, BID_DATE_TIME)?, int(OP, bid, BID_PRICE)?);
        Self::offer(s, key, t, p, out);
        Ok(())
    }
}

/// One update of [`WinningBids`]: `(category, seller, auction, expires, previous, final)`.
struct Update {
    category: i64,
    seller: i64,
    auction: i64,
    expires: i64,
    previous: Option<i64>,
    final_price: i64,
}

impl Update {
    fn parse(operator: &str, v: &Value) -> Result<Update> {
        let previous = match field(operator, v, 4)? {
            Value::Null => None,
            other => Some(other.as_i64().ok_or_else(|| mismatch(operator, v))?),
        };
        Ok(Update {
            category: int(operator, v, 0)?,
            seller: int(operator, v, 1)?,
            auction: int(operator, v, 2)?,
            expires: int(operator, v, 3)?,
            previous,
            final_price: int(operator, v, 5)?,
        })
    }
}

/// Index of the category in a winning-bid update (q4's key).
pub const UPDATE_CATEGORY_FIELD: usize = 0;
/// Index of the seller in a winning-bid update (q6's key).
pub const UPDATE_SELLER_FIELD: usize = 1;

/// `rill.process.nexmark_q4_average`: per category `(sum, count)` of the finals.
pub struct CategoryAverage;

impl KeyedProcessFunction for CategoryAverage {
    type State = (i64, i64);

    fn process(
        &mut self,
        _key: &Value,
        s: &mut (i64, i64),
        value: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        let u = Update::parse(super::NEXMARK_Q4_AVERAGE, value)?;
        match u.previous {
            Some(p) => s.0 += u.final_price - p,
            None => {
                s.0 += u.final_price;
                s.1 += 1;
            }
        }
        out.collect(Value::Tuple(vec![
            u.category.into(),
            Value::F64(s.0 as f64 / s.1 as f64),
        ]));
        Ok(())
    }
}

/// How many of a seller's auctions q6 averages.
pub const Q6_LAST_AUCTIONS: usize = 10;

/// `rill.process.nexmark_q6_average`: per seller the `(expires, auction, final)` of its
/// last [`Q6_LAST_AUCTIONS`] auctions with a final, ordered.
pub struct SellerAverage;

impl KeyedProcessFunction for SellerAverage {
    type State = Vec<(i64, i64, i64)>;

    fn process(
        &mut self,
        _key: &Value,
        s: &mut Vec<(i64, i64, i64)>,
        value: &Value,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        let u = Update::parse(super::NEXMARK_Q6_AVERAGE, value)?;
        let at = (u.expires, u.auction);
        match s.binary_search_by(|(e, a, _)| (*e, *a).cmp(&at)) {
            Ok(i) => s[i].2 = u.final_price,
            Err(i) => s.insert(i, (u.expires, u.auction, u.final_price)),
        }
        // An auction that fell out of the last 10 can never return (its position is
        // fixed): dropping it keeps the state bounded.
        if s.len() > Q6_LAST_AUCTIONS {
            s.drain(..s.len() - Q6_LAST_AUCTIONS);
        }
        let sum: i64 = s.iter().map(|(_, _, f)| f).sum();
        out.collect(Value::Tuple(vec![
            u.seller.into(),
            Value::F64(sum as f64 / s.len() as f64),
        ]));
        Ok(())
    }
}

/// `rill.window_join.nexmark_q8`: `(id, name, starttime)` once per person and window.
#[derive(Default)]
pub struct Q8Join {
    last: Option<(Value, i64)>,
}

impl JoinFunction for Q8Join {
    fn join(
        &mut self,
        person: &Value,
        _auction: &Value,
        window: &Window,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        const OP: &str = super::NEXMARK_Q8;
        let id = field(OP, person, PERSON_ID)?;
        let this = (id.clone(), window.start());
        if self.last.as_ref() == Some(&this) {
            return Ok(());
        }
        out.collect(Value::Tuple(vec![
            id.clone(),
            field(OP, person, PERSON_NAME)?.clone(),
            window.start().into(),
        ]));
        self.last = Some(this);
        Ok(())
    }
}

/// The column names of the joining queries' rows.
pub fn columns(query: &str) -> Option<&'static [&'static str]> {
    Some(match query {
        "q3" => &["name", "city", "state", "id"],
        "q4" => &["category", "avg"],
        "q6" => &["seller", "avg"],
        "q8" => &["id", "name", "starttime"],
        _ => return None,
    })
}
