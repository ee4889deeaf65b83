//! The Nexmark event generator, following the rules of the Nexmark specification as
//! Beam's and Flink's (nexmark-flink) generators implement them.
//!
//! Event `n` (0-based) is a **pure function of `(config, n)`**: its random numbers come
//! from a generator seeded with the configured seed and `n`, so any subtask can produce
//! any event, a restored source regenerates exactly what it had not emitted, and the
//! same seed gives the same events.
//!
//! * **Mix**: in each group of 50 consecutive events, `n mod 50` = 0 is a person, 1–3
//!   are auctions, 4–49 are bids (1 : 3 : 46).
//! * **Ids**: persons and auctions are numbered in order from 1000
//!   (`FIRST_PERSON_ID`, `FIRST_AUCTION_ID`); the `k`-th person is person
//!   `1000 + k`, and the id of the last person/auction created at or before event `n`
//!   is known from `n` alone.
//! * **References**: a bid names a *hot* auction (the last auction id rounded down to a
//!   multiple of 100) with probability 1 − 1/2 (`hot_auction_ratio` 2), otherwise one of
//!   the last 100 in-flight auctions (or up to 10 not created yet, the "lead"); its
//!   bidder is a hot bidder (last person id rounded down to 100, plus 1) with probability
//!   3/4, else one of the last 1000 active persons (plus a lead of 10). An auction's
//!   seller is a hot seller (rounded to 100) with probability 3/4, else an active person.
//! * **Time**: event `n` happens at `base_time_ms + n · 1000 / events_per_second`
//!   (ms, integer division); an auction expires a uniformly drawn `1 ..= 2 · horizon` ms
//!   after it starts, where the horizon is the time until ~100 more auctions have been
//!   created.
//! * **Values**: prices `round(10^(6·u) · 100)` cents for uniform `u`; categories
//!   10..15; names, cities and states from small fixed lists; `extra` pads each event
//!   to about its average size (person 200, auction 500, bid 100 bytes ± 20 %).
//!
//! The random generator is SplitMix64, not Java's `Random`, so the events follow the
//! same rules and distributions as Beam's but are not byte-identical to them.

use serde::{Deserialize, Serialize};

use super::model::{Auction, Bid, Event, Person};

/// Events per group: 1 person, 3 auctions, 46 bids.
pub const PROPORTION_TOTAL: u64 = 50;
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
/// First person id.
pub const FIRST_PERSON_ID: i64 = 1000;
/// First auction id.
pub const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// Ids beyond the last created one that a reference may name (not created yet).
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// Hot ids are multiples of these.
const HOT_AUCTION_GROUP: u64 = 100;
const HOT_BIDDER_GROUP: u64 = 100;
const HOT_SELLER_GROUP: u64 = 100;
/// 1 in `ratio` references is *not* hot.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
const HOT_SELLERS_RATIO: u64 = 4;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
const MIN_STRING_LENGTH: u64 = 3;
/// Channels a bid may come through besides the hot ones.
const CHANNELS: u64 = 10_000;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The default `base_time_ms`: 2020-01-01T00:00:00Z.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_577_836_800_000;
/// The default `events_per_second` (Nexmark's default first event rate).
pub const DEFAULT_EVENTS_PER_SECOND: u64 = 10_000;

/// What the generator generates; every field has a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of every event's random numbers.
    #[serde(default)]
    pub seed: u64,
    /// Event-time rate: event `n` is at `base_time_ms + n · 1000 / events_per_second`.
    #[serde(default = "default_events_per_second")]
    pub events_per_second: u64,
    /// Event time of event 0, ms since the epoch.
    #[serde(default = "default_base_time")]
    pub base_time_ms: i64,
}

fn default_events_per_second() -> u64 {
    DEFAULT_EVENTS_PER_SECOND
}

fn default_base_time() -> i64 {
    DEFAULT_BASE_TIME_MS
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            base_time_ms: DEFAULT_BASE_TIME_MS,
        }
    }
}

impl GeneratorConfig {
    /// Checks the rate (≥ 1 event/s).
    pub fn validate(&self) -> Result<(), String> {
        if self.events_per_second == 0 {
            return Err("events_per_second must be ≥ 1".into());
        }
        Ok(())
    }

    /// The event time of event `n`, ms since the epoch.
    pub fn timestamp(&self, n: u64) -> i64 {
        let offset = u128::from(n) * 1000 / u128::from(self.events_per_second.max(1));
        self.base_time_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        let mut rng = Rng::new(self.seed, n);
        let ts = self.timestamp(n);
        match n % PROPORTION_TOTAL {
            r if r < PERSON_PROPORTION => Event::Person(self.person(n, ts, &mut rng)),
            r if r < PERSON_PROPORTION + AUCTION_PROPORTION => {
                Event::Auction(self.auction(n, ts, &mut rng))
            }
            _ => Event::Bid(self.bid(n, ts, &mut rng)),
        }
    }

    fn person(&self, n: u64, ts: i64, rng: &mut Rng) -> Person {
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize],
            LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]
        );
        let email_address = format!("{}@{}.com", rng.string(7), rng.string(5));
        let credit_card = (0..4)
            .map(|_| format!("{:04}", rng.below(10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize].to_owned();
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize].to_owned();
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len() + 8;
        let extra = rng.extra(size, AVG_PERSON_BYTES);
        Person {
            id: id(last_base0_person_id(n), FIRST_PERSON_ID),
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra,
        }
    }

    fn auction(&self, n: u64, ts: i64, rng: &mut Rng) -> Auction {
        let seller = if rng.below(HOT_SELLERS_RATIO) > 0 {
            last_base0_person_id(n) / HOT_SELLER_GROUP * HOT_SELLER_GROUP
        } else {
            next_base0_person_id(n, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let initial_bid = rng.price();
        // The time until ~NUM_IN_FLIGHT_AUCTIONS more auctions exist.
        let ahead = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_TOTAL / AUCTION_PROPORTION;
        let horizon = self.timestamp(n + ahead) - ts;
        let length = 1 + rng.below((horizon.max(0) as u64 * 2).max(1)) as i64;
        let item_name = rng.string(20);
        let description = rng.string(100);
        let reserve = initial_bid + rng.price();
        let size = 8 + item_name.len() + description.len() + 5 * 8;
        let extra = rng.extra(size, AVG_AUCTION_BYTES);
        Auction {
            id: id(last_base0_auction_id(n), FIRST_AUCTION_ID),
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires: ts.saturating_add(length),
            seller: id(seller, FIRST_PERSON_ID),
            category,
            extra,
        }
    }

    fn bid(&self, n: u64, ts: i64, rng: &mut Rng) -> Bid {
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            last_base0_auction_id(n) / HOT_AUCTION_GROUP * HOT_AUCTION_GROUP
        } else {
            next_base0_auction_id(n, rng)
        };
        let bidder = if rng.below(HOT_BIDDERS_RATIO) > 0 {
            last_base0_person_id(n) / HOT_BIDDER_GROUP * HOT_BIDDER_GROUP + 1
        } else {
            next_base0_person_id(n, rng)
        };
        let price = rng.price();
        let (channel, url) = if rng.below(2) > 0 {
            let k = rng.below(HOT_CHANNELS.len() as u64);
            (
                HOT_CHANNELS[k as usize].to_owned(),
                self.channel_url(k, false),
            )
        } else {
            let k = rng.below(CHANNELS);
            (format!("channel-{k}"), self.channel_url(k, true))
        };
        let extra = rng.extra(4 * 8, AVG_BID_BYTES);
        Bid {
            auction: id(auction, FIRST_AUCTION_ID),
            bidder: id(bidder, FIRST_PERSON_ID),
            price,
            channel,
            url,
            date_time: ts,
            extra,
        }
    }

    /// The fixed URL of hot channel `k`, or of numbered channel `k`: a function of the
    /// seed and the channel only, so a channel always has the same URL.
    fn channel_url(&self, k: u64, numbered: bool) -> String {
        let mut rng = Rng::new(
            self.seed ^ 0x6e65_786d_6172_6b00,
            k * 2 + u64::from(numbered),
        );
        let mut url = format!(
            "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
            rng.string_with(5, '_'),
            rng.string_with(5, '_'),
            rng.string_with(5, '_')
        );
        if numbered && rng.below(10) > 0 {
            url.push_str(&format!("&channel_id={}", (k as u32).reverse_bits()));
        }
        url
    }
}

fn id(base0: u64, first: i64) -> i64 {
    first.saturating_add(i64::try_from(base0).unwrap_or(i64::MAX))
}

/// The 0-based id of the last person created at or before event `n`.
pub fn last_base0_person_id(n: u64) -> u64 {
    let epoch = n / PROPORTION_TOTAL;
    // Past this group's persons: its last one.
    let offset = match n % PROPORTION_TOTAL {
        o if o < PERSON_PROPORTION => o,
        _ => PERSON_PROPORTION - 1,
    };
    epoch * PERSON_PROPORTION + offset
}

/// The 0-based id of the last auction created at or before event `n` (0 before the
/// first auction).
pub fn last_base0_auction_id(n: u64) -> u64 {
    let epoch = n / PROPORTION_TOTAL;
    let offset = n % PROPORTION_TOTAL;
    if offset < PERSON_PROPORTION {
        // Before this group's auctions: the last one of the previous group.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// An active person (one of the last `NUM_ACTIVE_PEOPLE`, or a few ahead).
fn next_base0_person_id(n: u64, rng: &mut Rng) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// An in-flight auction (one of the last `NUM_IN_FLIGHT_AUCTIONS`, or a few ahead).
fn next_base0_auction_id(n: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// SplitMix64, seeded per event.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, n: u64) -> Self {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mixed = r.next_u64() ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03);
        Rng(mixed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` ≥ 1; 0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `round(10^(6u) · 100)` cents: 1 $ to 1 M$, log-uniform.
    fn price(&mut self) -> i64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as i64
    }

    /// Lowercase letters with ~1/13 spaces, `MIN_STRING_LENGTH..max_len` long before
    /// trimming spaces at the ends.
    fn string(&mut self, max_len: u64) -> String {
        self.string_with(max_len, ' ')
    }

    fn string_with(&mut self, max_len: u64, special: char) -> String {
        let len = MIN_STRING_LENGTH + self.below(max_len - MIN_STRING_LENGTH);
        let s = self.exact_string(len as usize, special);
        s.trim().to_owned()
    }

    fn exact_string(&mut self, len: usize, special: char) -> String {
        (0..len)
            .map(|_| {
                if self.below(13) == 0 {
                    special
                } else {
                    char::from(b'a' + self.below(26) as u8)
                }
            })
            .collect()
    }

    /// Padding that brings an event of `size` bytes to `avg` ± 20 % on average.
    fn extra(&mut self, size: usize, avg: usize) -> String {
        if size > avg {
            return String::new();
        }
        let want = avg - size;
        let delta = (want as f64 * 0.2).round() as usize;
        let len = want - delta
            + if delta == 0 {
                0
            } else {
                self.below(2 * delta as u64) as usize
            };
        self.exact_string(len, ' ')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_ids_and_times_follow_the_spec() {
        let c = GeneratorConfig::default();
        let events: Vec<Event> = (0..5000).map(|n| c.event(n)).collect();
        let (mut persons, mut auctions) = (Vec::new(), Vec::new());
        let mut bids = 0;
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e.date_time(), c.timestamp(n as u64));
            match e {
                Event::Person(p) => persons.push(p.id),
                Event::Auction(a) => {
                    assert!(a.expires > a.date_time && a.reserve >= a.initial_bid);
                    assert!((10..15).contains(&a.category));
                    auctions.push(a.id);
                }
                Event::Bid(b) => {
                    assert!(b.price >= 100 && b.price <= 100_000_000, "{}", b.price);
                    bids += 1;
                }
            }
        }
        assert_eq!((persons.len(), auctions.len(), bids), (100, 300, 4600));
        assert_eq!(persons, (1000..1100).collect::<Vec<_>>());
        assert_eq!(auctions, (1000..1300).collect::<Vec<_>>());
        // 10_000 events/s: 0.1 ms apart.
        assert_eq!(c.timestamp(10_000) - c.timestamp(0), 1000);
        assert_eq!(c.timestamp(9) - c.timestamp(0), 0);
    }

    #[test]
    fn references_name_hot_or_recent_ids() {
        let c = GeneratorConfig::default();
        let mut hot_auction = 0;
        let mut bids = 0;
        for n in 0..50_000u64 {
            if let Event::Bid(b) = c.event(n) {
                bids += 1;
                let last = FIRST_AUCTION_ID + last_base0_auction_id(n) as i64;
                assert!(b.auction <= last + AUCTION_ID_LEAD as i64);
                assert!(b.auction >= FIRST_AUCTION_ID && b.auction >= last - 100 - 100);
                if (b.auction - FIRST_AUCTION_ID) % 100 == 0 {
                    hot_auction += 1;
                }
                let last_person = FIRST_PERSON_ID + last_base0_person_id(n) as i64;
                assert!(b.bidder <= last_person + PERSON_ID_LEAD as i64);
            }
        }
        // Half the bids go to a hot auction (plus the odd in-flight one that is a
        // multiple of 100).
        let share = f64::from(hot_auction) / f64::from(bids);
        assert!((0.48..0.56).contains(&share), "{share}");
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = GeneratorConfig::default();
        let b = GeneratorConfig { seed: 7, ..a };
        assert_eq!(a.event(123), a.event(123));
        assert_ne!(a.event(123), b.event(123));
        // Bids pad to about 100 bytes of JSON-less content.
        let Event::Bid(bid) = a.event(10) else {
            panic!("event 10 is a bid")
        };
        assert!(
            bid.extra.len() >= 50 && bid.extra.len() <= 90,
            "{}",
            bid.extra.len()
        );
    }

    #[test]
    fn last_ids_before_the_first_auction_are_zero() {
        assert_eq!(last_base0_auction_id(0), 0);
        assert_eq!(last_base0_auction_id(1), 0);
        assert_eq!(last_base0_auction_id(3), 2);
        assert_eq!(last_base0_auction_id(49), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
    }
}
