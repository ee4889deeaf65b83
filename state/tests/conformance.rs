//! One conformance suite for every keyed state backend.
//!
//! Each test is a function of the [`BackendKind`]; [`conformance!`] instantiates it once
//! per backend (`heap::name`, `lsm::name`), so both backends are held to the same
//! behaviour: every state kind, namespaces, clear, iteration, TTL on an injected clock,
//! incremental cleanup, snapshot → restore, copy-on-write snapshots, restored states that
//! are not registered, rescaling 1 → 3 → 2 → 1, and a property test of random operation
//! sequences (with snapshot + restore in the middle) against a `BTreeMap` model.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Env, Key, Snapshot, MAX_PARALLELISM};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use rill_state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, Backend, BackendKind,
    KeyGroupRange, KeyedStateBackend, KeyedStore, ListState, ListStateDescriptor, MapState,
    MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateError, TtlConfig, ValueState,
    ValueStateDescriptor,
};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod heap {
            $( #[test] fn $name() { super::$name(rill_state::BackendKind::Heap) } )*
        }
        mod lsm {
            $( #[test] fn $name() { super::$name(rill_state::BackendKind::Lsm) } )*
        }
    };
}

conformance!(
    value_state_get_update_clear,
    list_state_add_update_clear,
    map_state_put_get_remove,
    reducing_state_folds,
    aggregating_state_accumulates,
    namespaces_are_kept_apart,
    clear_removes_only_its_entry,
    iteration_is_sorted_and_counted,
    reregistering_and_wrong_types,
    ttl_expires_on_the_injected_clock,
    ttl_refresh_on_read,
    cleanup_expired_is_bounded_and_resumes,
    snapshot_restore_gives_identical_contents,
    snapshot_is_copy_on_write,
    unregistered_restored_state_is_carried_over,
    rescale_1_3_2_1,
    random_operations_match_model,
);

/// Window-like namespace.
type Ns = u32;

/// Average of i64 inputs; accumulator (sum, count).
struct Average;

impl AggregateFunction<i64, (i64, i64), f64> for Average {
    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, value: i64, acc: &mut (i64, i64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, i64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
}

/// One state of every kind, registered on one backend.
struct States {
    value: ValueState<Ns, i64>,
    list: ListState<Ns, String>,
    map: MapState<Ns, String, i64>,
    reducing: ReducingState<Ns, i64>,
    aggregating: AggregatingState<Ns, i64, (i64, i64), f64>,
}

fn register(b: &mut KeyedStateBackend<Key>) -> States {
    States {
        value: b
            .value_state(&ValueStateDescriptor::new("value"))
            .expect("value"),
        list: b
            .list_state(&ListStateDescriptor::new("list"))
            .expect("list"),
        map: b.map_state(&MapStateDescriptor::new("map")).expect("map"),
        reducing: b
            .reducing_state(&ReducingStateDescriptor::new("max", |a: &i64, b: i64| {
                (*a).max(b)
            }))
            .expect("reducing"),
        aggregating: b
            .aggregating_state(&AggregatingStateDescriptor::new("avg", Average))
            .expect("aggregating"),
    }
}

/// Everything in the five states, read through the public API.
#[derive(Debug, Default, PartialEq)]
struct Contents {
    value: BTreeMap<(Key, Ns), i64>,
    list: BTreeMap<(Key, Ns), Vec<String>>,
    map: BTreeMap<(Key, Ns), Vec<(String, i64)>>,
    reducing: BTreeMap<(Key, Ns), i64>,
    aggregating: BTreeMap<(Key, Ns), f64>,
}

fn contents(b: &mut KeyedStateBackend<Key>, s: &States) -> Contents {
    let mut c = Contents::default();
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.value.id()).expect("keys") {
        b.set_current_key(k.clone()).expect("key");
        let v = b
            .value(&s.value, &ns)
            .expect("get")
            .expect("listed => present");
        c.value.insert((k, ns), v);
    }
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.list.id()).expect("keys") {
        b.set_current_key(k.clone()).expect("key");
        c.list
            .insert((k, ns), b.list_get(&s.list, &ns).expect("get"));
    }
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.map.id()).expect("keys") {
        b.set_current_key(k.clone()).expect("key");
        c.map
            .insert((k, ns), b.map_entries(&s.map, &ns).expect("get"));
    }
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.reducing.id()).expect("keys") {
        b.set_current_key(k.clone()).expect("key");
        let v = b
            .reducing_get(&s.reducing, &ns)
            .expect("get")
            .expect("listed");
        c.reducing.insert((k, ns), v);
    }
    for (k, ns) in b
        .keys_and_namespaces::<Ns>(s.aggregating.id())
        .expect("keys")
    {
        b.set_current_key(k.clone()).expect("key");
        let v = b
            .aggregating_get(&s.aggregating, &ns)
            .expect("get")
            .expect("listed");
        c.aggregating.insert((k, ns), v);
    }
    c
}

/// Fills every state with a few hundred entries over several namespaces.
fn fill(b: &mut KeyedStateBackend<Key>, s: &States, keys: std::ops::Range<i64>) {
    for k in keys {
        b.set_current_key(Key(k)).expect("key");
        for ns in 0..(k.rem_euclid(3) + 1) as Ns {
            b.update(&s.value, &ns, k * 10 + i64::from(ns))
                .expect("update");
            b.list_add(&s.list, &ns, format!("{k}-{ns}")).expect("add");
            b.map_put(&s.map, &ns, format!("u{}", k % 5), k)
                .expect("put");
            b.reducing_add(&s.reducing, &ns, k).expect("reduce");
            b.aggregating_add(&s.aggregating, &ns, k)
                .expect("aggregate");
            b.aggregating_add(&s.aggregating, &ns, k + 2)
                .expect("aggregate");
        }
    }
}

// ---- state kinds ----

fn value_state_get_update_clear(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s: ValueState<(), i64> = b.value_state(&ValueStateDescriptor::new("count")).unwrap();
    b.set_current_key(Key(1)).unwrap();
    assert_eq!(b.value(&s, &()).unwrap(), None);
    b.update(&s, &(), 5).unwrap();
    assert_eq!(b.value(&s, &()).unwrap(), Some(5));
    b.update(&s, &(), 7).unwrap();
    assert_eq!(b.value(&s, &()).unwrap(), Some(7));

    // The explicit-key hot path sees the same entry.
    let k = Key(1);
    assert_eq!(b.value_get(&s, &k, &()).unwrap(), Some(7));
    let r = b
        .value_modify(&s, &k, &(), |v| {
            *v = Some(v.unwrap_or(0) + 1);
            "returned"
        })
        .unwrap();
    assert_eq!(r, "returned");
    assert_eq!(b.value(&s, &()).unwrap(), Some(8));
    // Modify of an absent key that leaves None stores nothing.
    b.value_modify(&s, &Key(2), &(), |v| assert!(v.is_none()))
        .unwrap();
    assert_eq!(b.keys(s.id(), &()).unwrap(), vec![Key(1)]);
    // Modify to None removes.
    b.value_modify(&s, &k, &(), |v| *v = None).unwrap();
    assert_eq!(b.value(&s, &()).unwrap(), None);

    b.update(&s, &(), 3).unwrap();
    b.clear(s.id(), &()).unwrap();
    assert_eq!(b.value(&s, &()).unwrap(), None);
    assert!(b.keys(s.id(), &()).unwrap().is_empty());
}

fn list_state_add_update_clear(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s: ListState<(), String> = b.list_state(&ListStateDescriptor::new("l")).unwrap();
    b.set_current_key(Key(9)).unwrap();
    assert!(b.list_get(&s, &()).unwrap().is_empty());
    b.list_add(&s, &(), "a".into()).unwrap();
    b.list_add_all(&s, &(), vec!["b".into(), "c".into()])
        .unwrap();
    b.list_add_all(&s, &(), vec![]).unwrap();
    assert_eq!(b.list_get(&s, &()).unwrap(), ["a", "b", "c"]);
    b.list_update(&s, &(), vec!["z".into()]).unwrap();
    assert_eq!(b.list_get(&s, &()).unwrap(), ["z"]);
    b.list_update(&s, &(), vec![]).unwrap();
    assert!(b.list_get(&s, &()).unwrap().is_empty());
    assert!(
        b.keys(s.id(), &()).unwrap().is_empty(),
        "empty list = no entry"
    );
    b.list_add(&s, &(), "x".into()).unwrap();
    b.clear(s.id(), &()).unwrap();
    assert!(b.list_get(&s, &()).unwrap().is_empty());
}

fn map_state_put_get_remove(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s: MapState<(), String, i64> = b.map_state(&MapStateDescriptor::new("m")).unwrap();
    b.set_current_key(Key(3)).unwrap();
    assert_eq!(b.map_get(&s, &(), &"a".into()).unwrap(), None);
    b.map_put(&s, &(), "b".into(), 2).unwrap();
    b.map_put(&s, &(), "a".into(), 1).unwrap();
    b.map_put(&s, &(), "b".into(), 20).unwrap();
    assert_eq!(b.map_get(&s, &(), &"b".into()).unwrap(), Some(20));
    assert!(b.map_contains(&s, &(), &"a".into()).unwrap());
    assert!(!b.map_contains(&s, &(), &"c".into()).unwrap());
    assert_eq!(
        b.map_entries(&s, &()).unwrap(),
        vec![("a".to_string(), 1), ("b".to_string(), 20)]
    );
    assert_eq!(b.map_remove(&s, &(), &"a".into()).unwrap(), Some(1));
    assert_eq!(b.map_remove(&s, &(), &"a".into()).unwrap(), None);
    assert_eq!(b.map_remove(&s, &(), &"b".into()).unwrap(), Some(20));
    assert!(b.map_entries(&s, &()).unwrap().is_empty());
    assert!(
        b.keys(s.id(), &()).unwrap().is_empty(),
        "empty map = no entry"
    );
    b.map_put(&s, &(), "q".into(), 1).unwrap();
    b.clear(s.id(), &()).unwrap();
    assert!(!b.map_contains(&s, &(), &"q".into()).unwrap());
}

fn reducing_state_folds(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = b
        .reducing_state::<(), i64>(&ReducingStateDescriptor::new("sum", |a: &i64, b| a + b))
        .unwrap();
    b.set_current_key(Key(4)).unwrap();
    assert_eq!(b.reducing_get(&s, &()).unwrap(), None);
    for v in 1..=10 {
        b.reducing_add(&s, &(), v).unwrap();
    }
    assert_eq!(b.reducing_get(&s, &()).unwrap(), Some(55));
    b.set_current_key(Key(5)).unwrap();
    b.reducing_add(&s, &(), 3).unwrap();
    assert_eq!(b.reducing_get(&s, &()).unwrap(), Some(3));
    b.clear(s.id(), &()).unwrap();
    assert_eq!(b.reducing_get(&s, &()).unwrap(), None);
    b.set_current_key(Key(4)).unwrap();
    assert_eq!(b.reducing_get(&s, &()).unwrap(), Some(55));
}

fn aggregating_state_accumulates(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = b
        .aggregating_state::<(), i64, (i64, i64), f64>(&AggregatingStateDescriptor::new(
            "avg", Average,
        ))
        .unwrap();
    b.set_current_key(Key(6)).unwrap();
    assert_eq!(b.aggregating_get(&s, &()).unwrap(), None);
    for v in [2, 4, 9] {
        b.aggregating_add(&s, &(), v).unwrap();
    }
    assert_eq!(b.aggregating_get(&s, &()).unwrap(), Some(5.0));
    b.clear(s.id(), &()).unwrap();
    assert_eq!(b.aggregating_get(&s, &()).unwrap(), None);
}

fn namespaces_are_kept_apart(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    b.set_current_key(Key(1)).unwrap();
    b.update(&s.value, &10, 100).unwrap();
    b.update(&s.value, &20, 200).unwrap();
    b.list_add(&s.list, &10, "ten".into()).unwrap();
    b.map_put(&s.map, &20, "k".into(), 2).unwrap();
    assert_eq!(b.value(&s.value, &10).unwrap(), Some(100));
    assert_eq!(b.value(&s.value, &20).unwrap(), Some(200));
    assert_eq!(b.value(&s.value, &30).unwrap(), None);
    assert_eq!(b.list_get(&s.list, &10).unwrap(), ["ten"]);
    assert!(b.list_get(&s.list, &20).unwrap().is_empty());
    assert!(b.map_entries(&s.map, &10).unwrap().is_empty());
    assert_eq!(b.keys(s.value.id(), &10u32).unwrap(), vec![Key(1)]);
    assert!(b.keys(s.value.id(), &30u32).unwrap().is_empty());
    b.clear(s.value.id(), &10u32).unwrap();
    assert_eq!(b.value(&s.value, &10).unwrap(), None);
    assert_eq!(b.value(&s.value, &20).unwrap(), Some(200));
    // States are kept apart too: the list of namespace 10 is untouched.
    assert_eq!(b.list_get(&s.list, &10).unwrap(), ["ten"]);
}

fn clear_removes_only_its_entry(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    fill(&mut b, &s, 0..50);
    let before = contents(&mut b, &s);
    b.set_current_key(Key(7)).unwrap();
    b.clear(s.list.id(), &0u32).unwrap();
    b.clear(s.list.id(), &0u32).unwrap(); // clearing twice is fine
    b.set_current_key(Key(1000)).unwrap();
    b.clear(s.value.id(), &0u32).unwrap(); // clearing an absent key too
    let mut expected = before;
    expected.list.remove(&(Key(7), 0));
    assert_eq!(contents(&mut b, &s), expected);
}

fn iteration_is_sorted_and_counted(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    for k in [42, -3, 7, 1000, 0, 9] {
        b.set_current_key(Key(k)).unwrap();
        b.update(&s.value, &(k.unsigned_abs() as u32 % 2), k)
            .unwrap();
    }
    let all = b.keys_and_namespaces::<Ns>(s.value.id()).unwrap();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 6);
    assert_eq!(
        b.keys(s.value.id(), &0u32).unwrap(),
        vec![Key(0), Key(42), Key(1000)]
    );
    assert_eq!(
        b.keys(s.value.id(), &1u32).unwrap(),
        vec![Key(-3), Key(7), Key(9)]
    );
    assert!(b.keys(s.list.id(), &0u32).unwrap().is_empty());

    let counts: BTreeMap<u32, u64> = b
        .entry_counts(s.value.id())
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut expected = BTreeMap::new();
    for (k, _) in &all {
        *expected.entry(k.key_group()).or_insert(0u64) += 1;
    }
    assert_eq!(counts, expected);
}

fn reregistering_and_wrong_types(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let a: ValueState<(), i64> = b.value_state(&ValueStateDescriptor::new("a")).unwrap();
    let again: ValueState<(), i64> = b.value_state(&ValueStateDescriptor::new("a")).unwrap();
    assert_eq!(a.id(), again.id());
    let other: ValueState<(), i64> = b.value_state(&ValueStateDescriptor::new("b")).unwrap();
    assert_ne!(a.id(), other.id());

    let err = b
        .value_state::<(), String>(&ValueStateDescriptor::new("a"))
        .err()
        .expect("other value type");
    assert!(
        matches!(err, StateError::IncompatibleState { ref name, .. } if name == "a"),
        "{err}"
    );
    let err = b
        .value_state::<u32, i64>(&ValueStateDescriptor::new("a"))
        .err()
        .expect("other namespace type");
    assert!(matches!(err, StateError::IncompatibleState { .. }), "{err}");
    let err = b
        .list_state::<(), i64>(&ListStateDescriptor::new("a"))
        .err()
        .expect("other kind");
    assert!(matches!(err, StateError::IncompatibleState { .. }), "{err}");

    // Whole-state calls with the wrong namespace type fail instead of panicking.
    b.set_current_key(Key(1)).unwrap();
    b.update(&a, &(), 1).unwrap();
    let err = b.keys::<String>(a.id(), &"x".into()).unwrap_err();
    assert!(matches!(err, StateError::IncompatibleState { .. }), "{err}");
    let err = b.clear::<u64>(a.id(), &3).unwrap_err();
    assert!(matches!(err, StateError::IncompatibleState { .. }), "{err}");

    // Typed store access with the wrong stored type, straight through the trait.
    let id = a.id();
    let kg = Key(1).key_group();
    let r = match b.backend_mut() {
        Backend::Heap(h) => wrong_stored_type(h, id, kg),
        Backend::Lsm(l) => wrong_stored_type(l.as_mut(), id, kg),
    };
    assert!(
        matches!(r, Err(StateError::IncompatibleState { .. })),
        "{r:?}"
    );
    assert_eq!(b.value(&a, &()).unwrap(), Some(1), "state unharmed");

    // Without a current key the typed accessors fail.
    let mut fresh = env.backend();
    let s: ValueState<(), i64> = fresh.value_state(&ValueStateDescriptor::new("a")).unwrap();
    assert!(matches!(
        fresh.value(&s, &()),
        Err(StateError::NoCurrentKey { .. })
    ));
}

fn wrong_stored_type(
    store: &mut impl KeyedStore<Key>,
    id: rill_state::StateId,
    kg: u32,
) -> rill_state::Result<Option<String>> {
    store.get::<(), String>(
        id,
        kg,
        rill_state::key_group::table_hash(rill_state::StateKey::stable_hash(&Key(1))),
        &Key(1),
        &(),
    )
}

// ---- TTL ----

fn ttl_expires_on_the_injected_clock(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let ttl = TtlConfig::new(Duration::from_millis(100));
    let v: ValueState<(), i64> = b
        .value_state(&ValueStateDescriptor::new("v").with_ttl(ttl))
        .unwrap();
    let l: ListState<(), i64> = b
        .list_state(&ListStateDescriptor::new("l").with_ttl(ttl))
        .unwrap();
    let plain: ValueState<(), i64> = b.value_state(&ValueStateDescriptor::new("p")).unwrap();
    env.clock.set(1_000);
    b.set_current_key(Key(1)).unwrap();
    b.update(&v, &(), 1).unwrap();
    b.list_add(&l, &(), 1).unwrap();
    b.update(&plain, &(), 1).unwrap();

    // A write refreshes: the list lives until 1_050 + 100.
    env.clock.set(1_050);
    b.list_add(&l, &(), 2).unwrap();
    env.clock.set(1_099);
    assert_eq!(b.value(&v, &()).unwrap(), Some(1));
    env.clock.set(1_100);
    assert_eq!(b.value(&v, &()).unwrap(), None, "expired at ts + ttl");
    assert!(b.keys(v.id(), &()).unwrap().is_empty());
    assert_eq!(b.list_get(&l, &()).unwrap(), [1, 2]);
    assert_eq!(b.keys(l.id(), &()).unwrap(), vec![Key(1)]);
    env.clock.set(1_150);
    assert!(b.list_get(&l, &()).unwrap().is_empty());
    // The whole list expired: an add starts a new one.
    b.list_add(&l, &(), 3).unwrap();
    assert_eq!(b.list_get(&l, &()).unwrap(), [3]);
    // Modify of an expired entry sees None.
    env.clock.set(2_000);
    b.value_modify(&v, &Key(1), &(), |x| assert_eq!(*x, None))
        .unwrap();
    // States without TTL never expire.
    env.clock.set(i64::MAX / 2);
    assert_eq!(b.value(&plain, &()).unwrap(), Some(1));
}

fn ttl_refresh_on_read(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let on_write: ValueState<(), i64> = b
        .value_state(
            &ValueStateDescriptor::new("w").with_ttl(TtlConfig::new(Duration::from_millis(100))),
        )
        .unwrap();
    let on_read: ValueState<(), i64> = b
        .value_state(
            &ValueStateDescriptor::new("r")
                .with_ttl(TtlConfig::new(Duration::from_millis(100)).refresh_on_read()),
        )
        .unwrap();
    env.clock.set(1_000);
    b.set_current_key(Key(2)).unwrap();
    b.update(&on_write, &(), 1).unwrap();
    b.update(&on_read, &(), 1).unwrap();
    env.clock.set(1_080);
    assert_eq!(b.value(&on_write, &()).unwrap(), Some(1));
    assert_eq!(b.value(&on_read, &()).unwrap(), Some(1));
    env.clock.set(1_150);
    assert_eq!(b.value(&on_write, &()).unwrap(), None);
    assert_eq!(
        b.value(&on_read, &()).unwrap(),
        Some(1),
        "read at 1080 refreshed"
    );
    env.clock.set(1_250);
    assert_eq!(b.value(&on_read, &()).unwrap(), None, "last read at 1150");
}

fn cleanup_expired_is_bounded_and_resumes(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let ttl: ValueState<Ns, i64> = b
        .value_state(
            &ValueStateDescriptor::new("t").with_ttl(TtlConfig::new(Duration::from_millis(10))),
        )
        .unwrap();
    let plain: ValueState<Ns, i64> = b.value_state(&ValueStateDescriptor::new("p")).unwrap();
    env.clock.set(1_000);
    for k in 0..10 {
        b.set_current_key(Key(k)).unwrap();
        b.update(&ttl, &0, k).unwrap();
        b.update(&plain, &0, k).unwrap();
    }
    assert_eq!(b.cleanup_expired(100).unwrap(), 0, "nothing expired yet");
    env.clock.set(1_010);
    // Keys written later do not expire.
    b.set_current_key(Key(100)).unwrap();
    b.update(&ttl, &0, 100).unwrap();

    let mut removed = 0;
    for _ in 0..1_000 {
        let n = b.cleanup_expired(3).unwrap();
        assert!(n <= 3, "budget exceeded: {n}");
        removed += n;
        if removed == 10 {
            break;
        }
    }
    assert_eq!(removed, 10);
    assert_eq!(b.cleanup_expired(1_000).unwrap(), 0);
    let live: u64 = b
        .entry_counts(ttl.id())
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(live, 1);
    assert_eq!(
        b.keys(plain.id(), &0u32).unwrap().len(),
        10,
        "no TTL, untouched"
    );
    assert_eq!(b.value(&ttl, &0).unwrap(), Some(100));
}

// ---- snapshots ----

fn snapshot_restore_gives_identical_contents(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    fill(&mut b, &s, -20..300);
    let expected = contents(&mut b, &s);
    assert!(expected.value.len() > 500);

    let snap = env.snapshot(&mut b);
    let handle = &snap.handles[0];
    assert_eq!(handle.backend, kind);
    assert_eq!(handle.key_group_range, KeyGroupRange::all(MAX_PARALLELISM));
    let names: BTreeSet<&str> = handle.states.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["value", "list", "map", "max", "avg"])
    );
    assert!(handle.total_bytes() > 0);

    let mut r = env.restored(&snap);
    let rs = register(&mut r);
    assert_eq!(contents(&mut r, &rs), expected);
    assert_eq!(
        r.entry_counts(rs.value.id()).unwrap(),
        b.entry_counts(s.value.id()).unwrap()
    );
    // The restored backend goes on working and snapshots again.
    fill(&mut r, &rs, 300..310);
    fill(&mut b, &s, 300..310);
    let again = env.snapshot(&mut r);
    let mut r2 = env.restored(&again);
    let rs2 = register(&mut r2);
    assert_eq!(contents(&mut r2, &rs2), contents(&mut b, &s));
}

fn snapshot_is_copy_on_write(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    fill(&mut b, &s, 0..100);
    let old = contents(&mut b, &s);

    let target = env.target();
    let dir = target.exclusive_dir.clone();
    let pending = b.snapshot(target).unwrap();
    // Writes after the synchronous part: updates, inserts, removals.
    for k in 0..100 {
        b.set_current_key(Key(k)).unwrap();
        b.update(&s.value, &0, -k).unwrap();
        if k % 2 == 0 {
            b.clear(s.list.id(), &0u32).unwrap();
        }
    }
    fill(&mut b, &s, 100..120);
    let new = contents(&mut b, &s);
    assert_ne!(old, new);

    // The asynchronous part runs on another thread, as in a task.
    let handle = std::thread::spawn(move || pending.run())
        .join()
        .expect("snapshot thread")
        .unwrap();
    let snap = Snapshot {
        handles: vec![handle],
        dir,
    };
    let mut r = env.restored(&snap);
    let rs = register(&mut r);
    assert_eq!(contents(&mut r, &rs), old, "snapshot holds the old values");
    assert_eq!(contents(&mut b, &s), new, "live backend holds the new ones");
}

fn unregistered_restored_state_is_carried_over(kind: BackendKind) {
    let env = Env::new(kind);
    let mut b = env.backend();
    let s = register(&mut b);
    fill(&mut b, &s, 0..40);
    let expected = contents(&mut b, &s);
    let first = env.snapshot(&mut b);

    // Restore and register only the value state; the others stay raw.
    let mut mid = env.restored(&first);
    let names: BTreeSet<String> = mid.states().into_iter().map(|m| m.name).collect();
    assert_eq!(
        names.len(),
        5,
        "restored states are listed before registering"
    );
    let v: ValueState<Ns, i64> = mid
        .value_state(&ValueStateDescriptor::new("value"))
        .unwrap();
    mid.set_current_key(Key(1)).unwrap();
    mid.update(&v, &0, 12_345).unwrap();
    let second = env.snapshot(&mut mid);
    let names: BTreeSet<&str> = second.handles[0]
        .states
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names.len(),
        5,
        "every state is in the next snapshot: {names:?}"
    );

    let mut last = env.restored(&second);
    let ls = register(&mut last);
    let mut want = expected;
    want.value.insert((Key(1), 0), 12_345);
    assert_eq!(contents(&mut last, &ls), want);
}

/// Every key of `0..n`, its expected value, checked across the subtasks of one
/// parallelism: present exactly once, in the subtask that owns its key group.
fn check_partitioned(
    backends: &mut [(KeyGroupRange, KeyedStateBackend<Key>, ValueState<(), i64>)],
    expected: &BTreeMap<i64, i64>,
) {
    let mut seen: BTreeMap<i64, i64> = BTreeMap::new();
    for (range, b, s) in backends.iter_mut() {
        for k in b.keys(s.id(), &()).unwrap() {
            assert!(range.contains(k.key_group()), "{k:?} outside {range}");
            b.set_current_key(k.clone()).unwrap();
            let v = b.value(s, &()).unwrap().expect("listed");
            assert!(seen.insert(k.0, v).is_none(), "{k:?} present twice");
        }
    }
    assert_eq!(&seen, expected);
}

fn rescale_1_3_2_1(kind: BackendKind) {
    let env = Env::new(kind);
    let desc = ValueStateDescriptor::<i64>::new("v");
    let mut expected: BTreeMap<i64, i64> = (0..600).map(|k| (k, k * 7)).collect();

    let mut one = env.backend();
    let s: ValueState<(), i64> = one.value_state(&desc).unwrap();
    for (k, v) in &expected {
        one.set_current_key(Key(*k)).unwrap();
        one.update(&s, &(), *v).unwrap();
    }
    let mut current = vec![(KeyGroupRange::all(MAX_PARALLELISM), one, s)];
    for (round, parallelism) in [3u32, 2, 1].into_iter().enumerate() {
        // Snapshot every subtask of the old parallelism into one checkpoint.
        let target = env.target();
        let dir = target.exclusive_dir.clone();
        let handles: Vec<_> = current
            .iter_mut()
            .map(|(_, b, _)| b.snapshot(target.clone()).unwrap().run().unwrap())
            .collect();
        drop(current);
        // Each new subtask restores from the handles that overlap its key groups.
        let mut next = Vec::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::of_subtask(i, parallelism, MAX_PARALLELISM);
            let overlapping: Vec<_> = handles
                .iter()
                .filter(|h| !h.key_group_range.intersect(&range).is_empty())
                .cloned()
                .collect();
            let mut b = env.subtask(i, parallelism);
            b.restore(&overlapping, &dir, env.storage.as_ref()).unwrap();
            let s: ValueState<(), i64> = b.value_state(&desc).unwrap();
            next.push((range, b, s));
        }
        check_partitioned(&mut next, &expected);
        // Change some values so the next round checks fresh data.
        for (k, v) in expected.iter_mut().filter(|(k, _)| *k % 5 == round as i64) {
            *v += 1;
            let (_, b, s) = next
                .iter_mut()
                .find(|(r, _, _)| r.contains(Key(*k).key_group()))
                .expect("some subtask owns every key group");
            b.set_current_key(Key(*k)).unwrap();
            b.update(s, &(), *v).unwrap();
        }
        check_partitioned(&mut next, &expected);
        current = next;
    }
    assert_eq!(current.len(), 1);
}

// ---- property test against a model ----

#[derive(Clone, Debug)]
enum Op {
    Update(i64, Ns, i64),
    Add(i64, Ns, i64),
    ClearValue(i64, Ns),
    ListAdd(i64, Ns, i64),
    ClearList(i64, Ns),
    MapPut(i64, Ns, u8, i64),
    MapRemove(i64, Ns, u8),
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0i64..24;
    let ns = 0u32..3;
    prop_oneof![
        4 => (k.clone(), ns.clone(), any::<i64>()).prop_map(|(k, n, v)| Op::Update(k, n, v)),
        4 => (k.clone(), ns.clone(), -3i64..4).prop_map(|(k, n, d)| Op::Add(k, n, d)),
        2 => (k.clone(), ns.clone()).prop_map(|(k, n)| Op::ClearValue(k, n)),
        3 => (k.clone(), ns.clone(), any::<i64>()).prop_map(|(k, n, v)| Op::ListAdd(k, n, v)),
        1 => (k.clone(), ns.clone()).prop_map(|(k, n)| Op::ClearList(k, n)),
        3 => (k.clone(), ns.clone(), 0u8..4, any::<i64>())
            .prop_map(|(k, n, u, v)| Op::MapPut(k, n, u, v)),
        2 => (k, ns, 0u8..4).prop_map(|(k, n, u)| Op::MapRemove(k, n, u)),
        1 => Just(Op::SnapshotRestore),
    ]
}

#[derive(Debug, Default, PartialEq)]
struct Model {
    value: BTreeMap<(Key, Ns), i64>,
    list: BTreeMap<(Key, Ns), Vec<i64>>,
    map: BTreeMap<(Key, Ns), BTreeMap<u8, i64>>,
}

struct ModelStates {
    value: ValueState<Ns, i64>,
    list: ListState<Ns, i64>,
    map: MapState<Ns, u8, i64>,
}

fn register_model(b: &mut KeyedStateBackend<Key>) -> ModelStates {
    ModelStates {
        value: b.value_state(&ValueStateDescriptor::new("value")).unwrap(),
        list: b.list_state(&ListStateDescriptor::new("list")).unwrap(),
        map: b.map_state(&MapStateDescriptor::new("map")).unwrap(),
    }
}

fn read_model(b: &mut KeyedStateBackend<Key>, s: &ModelStates) -> Model {
    let mut m = Model::default();
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.value.id()).unwrap() {
        let v = b.value_get(&s.value, &k, &ns).unwrap().expect("listed");
        m.value.insert((k, ns), v);
    }
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.list.id()).unwrap() {
        b.set_current_key(k.clone()).unwrap();
        m.list.insert((k, ns), b.list_get(&s.list, &ns).unwrap());
    }
    for (k, ns) in b.keys_and_namespaces::<Ns>(s.map.id()).unwrap() {
        b.set_current_key(k.clone()).unwrap();
        let entries = b.map_entries(&s.map, &ns).unwrap().into_iter().collect();
        m.map.insert((k, ns), entries);
    }
    m
}

fn apply(env: &Env, b: &mut KeyedStateBackend<Key>, s: &mut ModelStates, m: &mut Model, op: &Op) {
    match *op {
        Op::Update(k, ns, v) => {
            b.set_current_key(Key(k)).unwrap();
            b.update(&s.value, &ns, v).unwrap();
            m.value.insert((Key(k), ns), v);
        }
        Op::Add(k, ns, d) => {
            // Sum that clears at zero: exercises modify's insert, update and remove.
            b.value_modify(&s.value, &Key(k), &ns, |v| {
                let sum = v.unwrap_or(0).wrapping_add(d);
                *v = (sum != 0).then_some(sum);
            })
            .unwrap();
            let sum = m
                .value
                .get(&(Key(k), ns))
                .copied()
                .unwrap_or(0)
                .wrapping_add(d);
            if sum == 0 {
                m.value.remove(&(Key(k), ns));
            } else {
                m.value.insert((Key(k), ns), sum);
            }
        }
        Op::ClearValue(k, ns) => {
            b.set_current_key(Key(k)).unwrap();
            b.clear(s.value.id(), &ns).unwrap();
            m.value.remove(&(Key(k), ns));
        }
        Op::ListAdd(k, ns, v) => {
            b.set_current_key(Key(k)).unwrap();
            b.list_add(&s.list, &ns, v).unwrap();
            m.list.entry((Key(k), ns)).or_default().push(v);
        }
        Op::ClearList(k, ns) => {
            b.set_current_key(Key(k)).unwrap();
            b.clear(s.list.id(), &ns).unwrap();
            m.list.remove(&(Key(k), ns));
        }
        Op::MapPut(k, ns, u, v) => {
            b.set_current_key(Key(k)).unwrap();
            b.map_put(&s.map, &ns, u, v).unwrap();
            m.map.entry((Key(k), ns)).or_default().insert(u, v);
        }
        Op::MapRemove(k, ns, u) => {
            b.set_current_key(Key(k)).unwrap();
            let got = b.map_remove(&s.map, &ns, &u).unwrap();
            let entry = m.map.get_mut(&(Key(k), ns));
            let want = entry.and_then(|e| e.remove(&u));
            assert_eq!(got, want, "map_remove({k}, {ns}, {u})");
            if m.map.get(&(Key(k), ns)).is_some_and(|e| e.is_empty()) {
                m.map.remove(&(Key(k), ns));
            }
        }
        Op::SnapshotRestore => {
            let snap = env.snapshot(b);
            *b = env.restored(&snap);
            *s = register_model(b);
        }
    }
}

fn random_operations_match_model(kind: BackendKind) {
    let mut runner = TestRunner::new(Config {
        cases: 24,
        rng_seed: RngSeed::Fixed(0x5eed_0009),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..150), |ops| {
        let env = Env::new(kind);
        let mut b = env.backend();
        let mut s = register_model(&mut b);
        let mut model = Model::default();
        for op in &ops {
            apply(&env, &mut b, &mut s, &mut model, op);
        }
        prop_assert_eq!(&read_model(&mut b, &s), &model);
        // Per-key-group counts agree with the model too.
        let counts: BTreeMap<u32, u64> = b
            .entry_counts(s.value.id())
            .unwrap()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut want: BTreeMap<u32, u64> = BTreeMap::new();
        for (k, _) in model.value.keys() {
            *want.entry(k.key_group()).or_default() += 1;
        }
        prop_assert_eq!(counts, want);
        // And once more after a final round trip.
        let snap = env.snapshot(&mut b);
        let mut r = env.restored(&snap);
        let rs = register_model(&mut r);
        prop_assert_eq!(read_model(&mut r, &rs), read_model(&mut b, &s));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
