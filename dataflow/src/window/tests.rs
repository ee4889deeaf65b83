//! Window operators driven by hand: records, watermarks and processing time (a
//! [`ManualClock`]) go in, results come out; no task, no cluster. Expected outputs are
//! computed by hand from Flink's rules (see the operator module docs).

use std::sync::Arc;

use rill_state::snapshot::{OperatorSnapshot, SnapshotKind, SubtaskSnapshot};
use rill_state::storage::CheckpointLayout;
use rill_state::{BackendKind, CheckpointStorage, FsCheckpointStorage};

use super::*;
use crate::builtins;
use crate::element::StreamRecord;
use crate::ids::JobId;
use crate::key::FieldKey;
use crate::operator::{Operator, OperatorContext};
use crate::registry::{OperatorKind, OperatorRegistry};
use crate::spec::OperatorSpec;
use crate::state::{SnapshotContext, StateContext, StateInitContext};
use crate::state_config::StateConfig;
use crate::timer::ManualClock;
use crate::value::Value;

struct Harness {
    op: Box<dyn Operator>,
    clock: Arc<ManualClock>,
    ctx: OperatorContext,
    spec: OperatorSpec,
    registry: OperatorRegistry,
    out: Vec<StreamRecord>,
    _dir: tempfile::TempDir,
}

fn harness(spec: WindowSpec, function: WindowFunctionRef, backend: BackendKind) -> Harness {
    harness_with(OperatorRegistry::new(), spec, function, backend)
}

fn harness_with(
    registry: OperatorRegistry,
    spec: WindowSpec,
    function: WindowFunctionRef,
    backend: BackendKind,
) -> Harness {
    harness_at(registry, spec, function, backend, 0, 1)
}

/// Subtask `subtask` of `parallelism`.
fn harness_at(
    registry: OperatorRegistry,
    spec: WindowSpec,
    function: WindowFunctionRef,
    backend: BackendKind,
    subtask: u32,
    parallelism: u32,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let ctx = OperatorContext {
        job_id: JobId([0; 16]),
        operator_name: "window".into(),
        operator_uid: "window".into(),
        subtask_index: subtask,
        parallelism,
        max_parallelism: 128,
        key_selector: Some(Arc::new(FieldKey { index: 0 })),
        key_selector2: None,
        collect: None,
        state: StateContext {
            config: StateConfig {
                backend,
                local_dir: Some(dir.path().join("local")),
                ..StateConfig::default()
            },
            clock: clock.clone(),
            checkpointing: false,
        },
    };
    let spec = OperatorSpec {
        name: "window".into(),
        uid: None,
        kind: OperatorKind::Window,
        factory: FactoryRef::builtin(
            WINDOW_OPERATOR,
            &WindowOperatorConfig {
                window: spec,
                function,
            },
        ),
        key: Some(crate::key::by_field(0)),
        key2: None,
    };
    registry.check_operator(&spec).unwrap();
    let op = registry.create_operator(&spec, &ctx).unwrap();
    Harness {
        op,
        clock,
        ctx,
        spec,
        registry,
        out: Vec::new(),
        _dir: dir,
    }
}

/// `(key, value)` at `ts`.
fn rec(key: &str, value: i64, ts: i64) -> StreamRecord {
    StreamRecord::with_timestamp(Value::Tuple(vec![key.into(), Value::I64(value)]), ts)
}

impl Harness {
    fn push(&mut self, records: Vec<StreamRecord>) -> &mut Self {
        let mut input = records;
        self.op.process_batch(&mut input, &mut self.out).unwrap();
        self
    }

    fn watermark(&mut self, w: i64) -> &mut Self {
        self.op.process_watermark(w, &mut self.out).unwrap();
        self
    }

    fn processing_time(&mut self, now: i64) -> &mut Self {
        self.clock.set(now);
        self.op.on_processing_time(now, &mut self.out).unwrap();
        self
    }

    /// Results so far as text, with their timestamps.
    fn take(&mut self) -> Vec<String> {
        self.out
            .drain(..)
            .map(|r| format!("{}@{}", r.value, r.timestamp.unwrap_or(i64::MIN)))
            .collect()
    }

    fn take_values(&mut self) -> Vec<String> {
        self.out.drain(..).map(|r| r.value.to_string()).collect()
    }

    fn side(&mut self) -> Vec<(String, String)> {
        let mut got = Vec::new();
        self.op
            .drain_side_outputs(&mut |tag, records| {
                for r in records.drain(..) {
                    got.push((tag.to_owned(), r.value.to_string()));
                }
                Ok(())
            })
            .unwrap();
        got
    }

    /// Snapshots the operator and replaces it with a new instance restored from it.
    fn snapshot_and_restore(&mut self) {
        let dir = self._dir.path().join("chk");
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(&dir));
        let target =
            CheckpointLayout::new(&dir, "job").target(storage.clone(), 1, SnapshotKind::Checkpoint);
        let snap = self
            .op
            .snapshot_state(&SnapshotContext {
                checkpoint_id: 1,
                target: target.clone(),
            })
            .unwrap()
            .run(0)
            .unwrap();
        let op_snapshot = OperatorSnapshot {
            uid: "window".into(),
            name: "window".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![SubtaskSnapshot { ..snap }],
        };
        let mut restored = self
            .registry
            .create_operator(&self.spec, &self.ctx)
            .unwrap();
        restored
            .initialize_state(&mut StateInitContext::restoring(
                target.exclusive_dir.clone(),
                op_snapshot,
                storage,
            ))
            .unwrap();
        self.op = restored;
    }
}

fn count_with_window() -> WindowFunctionRef {
    WindowFunctionRef::AggregateProcess {
        aggregate: builtins::window_count(),
        process: builtins::window_keyed_result(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn tumbling_event_time_fires_when_the_watermark_reaches_end_minus_one() {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::tumbling_event_time(5)),
        count_with_window(),
        BackendKind::Heap,
    );
    // Out of order within the window; b in the same window; a again in the next.
    h.push(vec![
        rec("a", 0, 3),
        rec("b", 0, 2),
        rec("a", 0, 1),
        rec("a", 0, 6),
    ]);
    h.watermark(3);
    assert!(h.take().is_empty(), "[0,5) is open until watermark 4");
    h.watermark(4);
    // Timers in (time, key) order; results carry max_timestamp = end - 1.
    assert_eq!(h.take(), strings(&["(a,0,5,2)@4", "(b,0,5,1)@4"]));
    // Window [0,5) is gone: a record for it now is late and dropped.
    h.push(vec![rec("a", 0, 0)]);
    h.watermark(i64::MAX);
    assert_eq!(h.take(), strings(&["(a,5,10,1)@9"]));
    assert!(h.side().is_empty());
}

#[test]
fn allowed_lateness_refires_and_late_records_go_to_the_side_output() {
    let mut spec = WindowSpec::new(WindowAssigner::tumbling_event_time(5));
    spec.allowed_lateness = 2;
    spec.late_data = Some(OutputTag::new("late"));
    let mut h = harness(spec, count_with_window(), BackendKind::Heap);
    h.push(vec![rec("a", 0, 1)]).watermark(4);
    assert_eq!(h.take_values(), strings(&["(a,0,5,1)"]));
    // Behind the watermark but within lateness (cleanup at 4 + 2 = 6): fires again
    // at once with the updated count.
    h.push(vec![rec("a", 0, 2)]);
    assert_eq!(h.take_values(), strings(&["(a,0,5,2)"]));
    h.watermark(5);
    assert!(h.take().is_empty());
    // The cleanup timer at 6 removes the window without firing.
    h.watermark(6);
    assert!(h.take().is_empty());
    // Now the window is late: 3 + 2 ≤ 6, so the record is late too → side output.
    h.push(vec![rec("a", 7, 3)]);
    assert!(h.take().is_empty());
    assert_eq!(h.side(), [("late".to_owned(), "(a,7)".to_owned())]);
    // A record for an open window is not late.
    h.push(vec![rec("a", 0, 8)]).watermark(i64::MAX);
    assert_eq!(h.take_values(), strings(&["(a,5,10,1)"]));
    assert!(h.side().is_empty());
}

#[test]
fn sliding_windows_reduce_each_overlapping_window() {
    // Sums field 1 of (key, n) tuples.
    let mut registry = OperatorRegistry::new();
    registry
        .register_window_reduce("test.sum_field1", |()| {
            Ok(|acc: &mut Value, v: Value| {
                if let (Value::Tuple(a), Value::Tuple(b)) = (acc, v) {
                    a[1] = Value::I64(a[1].as_i64().unwrap_or(0) + b[1].as_i64().unwrap_or(0));
                }
                Ok(())
            })
        })
        .unwrap();
    let mut h = harness_with(
        registry,
        WindowSpec::new(WindowAssigner::sliding_event_time(10, 5)),
        WindowFunctionRef::ReduceProcess {
            reduce: FactoryRef::unit("test.sum_field1"),
            process: builtins::window_keyed_result(),
        },
        BackendKind::Heap,
    );
    // 3 is in [-5,5) and [0,10); 7 in [0,10) and [5,15); 12 in [5,15) and [10,20).
    h.push(vec![rec("k", 1, 3), rec("k", 10, 7), rec("k", 100, 12)]);
    h.watermark(9);
    assert_eq!(
        h.take(),
        strings(&["(k,-5,5,(k,1))@4", "(k,0,10,(k,11))@9"])
    );
    h.watermark(i64::MAX);
    assert_eq!(
        h.take(),
        strings(&["(k,5,15,(k,110))@14", "(k,10,20,(k,100))@19"])
    );
}

#[test]
fn session_windows_merge_and_survive_restore_heap() {
    session_windows_merge_and_survive_restore(BackendKind::Heap);
}

#[test]
fn session_windows_merge_and_survive_restore_lsm() {
    session_windows_merge_and_survive_restore(BackendKind::Lsm);
}

fn session_windows_merge_and_survive_restore(backend: BackendKind) {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::event_time_session(3)),
        count_with_window(),
        backend,
    );
    // a: [1,4) and [5,8) apart; b: [2,5).
    h.push(vec![rec("a", 0, 1), rec("a", 0, 5), rec("b", 0, 2)]);
    h.watermark(2);
    // Restore with three open sessions and their timers.
    h.snapshot_and_restore();
    // a@3 opens [3,6), which bridges [1,4) and [5,8) into [1,8).
    h.push(vec![rec("a", 0, 3)]);
    h.watermark(4);
    assert_eq!(h.take(), strings(&["(b,2,5,1)@4"]));
    h.watermark(6);
    assert!(
        h.take().is_empty(),
        "[1,4) and [5,8) merged: no firing at 3 or 7 - 1 < 7"
    );
    h.watermark(7);
    assert_eq!(h.take(), strings(&["(a,1,8,3)@7"]));
    // Everything cleaned up: a new record starts a fresh session.
    h.push(vec![rec("a", 0, 20)]).watermark(i64::MAX);
    assert_eq!(h.take(), strings(&["(a,20,23,1)@22"]));
}

#[test]
fn tumbling_windows_survive_restore_with_open_windows_and_timers_lsm() {
    let mut spec = WindowSpec::new(WindowAssigner::tumbling_event_time(10));
    spec.allowed_lateness = 5;
    let mut h = harness(spec, count_with_window(), BackendKind::Lsm);
    h.push(vec![rec("a", 0, 1), rec("b", 0, 12), rec("a", 0, 15)]);
    h.watermark(9);
    assert_eq!(h.take_values(), strings(&["(a,0,10,1)"]));
    h.snapshot_and_restore();
    // The watermark is not part of a snapshot (as in Flink): upstream sends it again.
    assert_eq!(h.op.next_processing_timer(), None);
    h.watermark(9);
    assert!(
        h.take().is_empty(),
        "the timer at 9 fired before the snapshot"
    );
    // Within lateness of [0,10) (cleanup at 14): refires with the restored count.
    h.push(vec![rec("a", 0, 2)]);
    assert_eq!(h.take_values(), strings(&["(a,0,10,2)"]));
    h.watermark(19);
    assert_eq!(h.take_values(), strings(&["(a,10,20,1)", "(b,10,20,1)"]));
}

#[test]
fn processing_time_windows_fire_on_the_clock() {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::tumbling_processing_time(100)),
        count_with_window(),
        BackendKind::Heap,
    );
    h.clock.set(1_050);
    h.push(vec![
        StreamRecord::new(Value::Tuple(vec!["a".into()])),
        StreamRecord::new(Value::Tuple(vec!["a".into()])),
    ]);
    h.clock.set(1_120);
    h.push(vec![StreamRecord::new(Value::Tuple(vec!["a".into()]))]);
    // Watermarks don't matter.
    h.watermark(i64::MAX);
    assert!(h.take().is_empty());
    assert_eq!(h.op.next_processing_timer(), Some(1_099));
    h.processing_time(1_098);
    assert!(h.take().is_empty());
    h.processing_time(1_099);
    assert_eq!(h.take(), strings(&["(a,1000,1100,2)@1099"]));
    h.processing_time(5_000);
    assert_eq!(h.take(), strings(&["(a,1100,1200,1)@1199"]));
    assert_eq!(h.op.next_processing_timer(), None);
}

#[test]
fn count_windows_tumbling_and_sliding() {
    let mut tumbling = WindowSpec::new(WindowAssigner::Global);
    tumbling.trigger = Some(Trigger::Purging(Box::new(Trigger::Count { max: 3 })));
    let mut h = harness(
        tumbling,
        WindowFunctionRef::Process(builtins::window_keyed_result()),
        BackendKind::Heap,
    );
    h.push((1..=7).map(|i| rec("a", i, i)).collect());
    h.watermark(i64::MAX);
    let g = i64::MIN;
    let m = i64::MAX;
    assert_eq!(
        h.take_values(),
        (1..=6)
            .map(|i| format!("(a,{g},{m},(a,{i}))"))
            .collect::<Vec<_>>()
    );
    // Sliding: every 2 elements, the last 3.
    let mut sliding = WindowSpec::new(WindowAssigner::Global);
    sliding.trigger = Some(Trigger::Count { max: 2 });
    sliding.evictor = Some(Evictor::count(3));
    let mut h = harness(
        sliding,
        WindowFunctionRef::Aggregate(builtins::window_count()),
        BackendKind::Heap,
    );
    h.push((1..=6).map(|i| rec("a", i, i)).collect());
    // Fires after 2 (2 kept), 4 (last 3 of 4), 6 (last 3 of 4 kept + 2).
    assert_eq!(h.take_values(), strings(&["2", "3", "3"]));
}

#[test]
fn continuous_event_time_trigger_fires_every_interval_and_at_the_end() {
    let mut spec = WindowSpec::new(WindowAssigner::tumbling_event_time(10));
    spec.trigger = Some(Trigger::ContinuousEventTime { interval: 3 });
    let mut h = harness(spec, count_with_window(), BackendKind::Heap);
    // First element at 1: first firing at 1 - 1 % 3 + 3 = 3.
    h.push(vec![rec("a", 0, 1), rec("a", 0, 2)]);
    h.watermark(2);
    assert!(h.take().is_empty());
    h.watermark(3);
    assert_eq!(h.take(), strings(&["(a,0,10,2)@9"]));
    h.push(vec![rec("a", 0, 5)]).watermark(6);
    assert_eq!(h.take_values(), strings(&["(a,0,10,3)"]));
    // The next firing (9) is the window's end: it fires once.
    h.watermark(i64::MAX);
    assert_eq!(h.take_values(), strings(&["(a,0,10,3)"]));
}

#[test]
fn evictors_trim_the_elements_a_window_function_sees() {
    let mut spec = WindowSpec::new(WindowAssigner::tumbling_event_time(100));
    spec.evictor = Some(Evictor::count(2));
    let mut h = harness(
        spec,
        WindowFunctionRef::Process(builtins::window_keyed_result()),
        BackendKind::Heap,
    );
    h.push(vec![rec("a", 1, 10), rec("a", 2, 30), rec("a", 3, 20)]);
    h.watermark(i64::MAX);
    assert_eq!(
        h.take_values(),
        strings(&["(a,0,100,(a,2))", "(a,0,100,(a,3))"])
    );
    let mut spec = WindowSpec::new(WindowAssigner::tumbling_event_time(100));
    spec.evictor = Some(Evictor::time(15));
    let mut h = harness(
        spec,
        WindowFunctionRef::AggregateProcess {
            aggregate: builtins::window_count(),
            process: builtins::window_keyed_result(),
        },
        BackendKind::Heap,
    );
    // Newest 40: keeps timestamps > 25 (30, 40).
    h.push(vec![
        rec("a", 1, 10),
        rec("a", 2, 30),
        rec("a", 3, 40),
        rec("a", 4, 20),
    ]);
    h.watermark(i64::MAX);
    assert_eq!(h.take_values(), strings(&["(a,0,100,2)"]));
}

#[test]
fn global_windows_without_a_trigger_never_fire() {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::Global),
        count_with_window(),
        BackendKind::Heap,
    );
    h.push(vec![rec("a", 0, 1)]).watermark(i64::MAX);
    assert!(h.take().is_empty());
}

#[test]
fn invalid_window_specs_are_submission_errors() {
    let registry = OperatorRegistry::new();
    let bad = |window: WindowSpec, function: WindowFunctionRef| {
        registry
            .check_operator(&OperatorSpec {
                name: "w".into(),
                uid: None,
                kind: OperatorKind::Window,
                factory: FactoryRef::builtin(
                    WINDOW_OPERATOR,
                    &WindowOperatorConfig { window, function },
                ),
                key: Some(crate::key::by_field(0)),
                key2: None,
            })
            .is_err()
    };
    let count = WindowFunctionRef::Aggregate(builtins::window_count());
    assert!(bad(
        WindowSpec::new(WindowAssigner::tumbling_event_time(0)),
        count.clone()
    ));
    let mut late = WindowSpec::new(WindowAssigner::tumbling_event_time(5));
    late.allowed_lateness = -1;
    assert!(bad(late, count.clone()));
    // A count function used as a reduce, an unknown function.
    assert!(bad(
        WindowSpec::new(WindowAssigner::tumbling_event_time(5)),
        WindowFunctionRef::Reduce(builtins::window_count())
    ));
    assert!(bad(
        WindowSpec::new(WindowAssigner::tumbling_event_time(5)),
        WindowFunctionRef::Process(FactoryRef::unit("nope"))
    ));
    assert!(!bad(
        WindowSpec::new(WindowAssigner::tumbling_event_time(5)),
        count
    ));
}

#[test]
fn window_api_builds_keyed_and_all_windows() {
    use crate::environment::StreamExecutionEnvironment;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(4);
    let late = OutputTag::new("late");
    let s = env.add_source(builtins::collection(vec![]));
    let keyed = s
        .key_by(crate::key::by_field(0))
        .window(WindowAssigner::sliding_event_time(10, 5))
        .allowed_lateness(3)
        .side_output_late_data(&late)
        .aggregate_with(builtins::window_count(), builtins::window_keyed_result());
    keyed.side_output(&late).sink(builtins::print());
    keyed.sink(builtins::print());
    s.window_all(WindowAssigner::tumbling_event_time(10))
        .reduce(builtins::window_sum())
        .sink(builtins::print());
    s.key_by(crate::key::by_field(0))
        .count_window_sliding(3, 1)
        .process(builtins::window_keyed_result())
        .sink(builtins::print());
    let job = env.job_graph("t").unwrap();
    job.validate(&OperatorRegistry::new()).unwrap();
    let windows: Vec<_> = job
        .vertices
        .iter()
        .filter(|v| v.operators[0].spec.kind == OperatorKind::Window)
        .collect();
    assert_eq!(windows.len(), 3);
    assert!(windows.iter().any(|v| v.parallelism == 1));
    // The late side output leaves by an edge of its own.
    assert_eq!(
        job.edges
            .iter()
            .filter(|e| e.side_output.as_deref() == Some("late"))
            .count(),
        1
    );
}

#[test]
fn processing_time_sessions_merge_and_sliding_windows_fire_on_the_clock() {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::processing_time_session(100)),
        count_with_window(),
        BackendKind::Heap,
    );
    let a = || StreamRecord::new(Value::Tuple(vec!["a".into()]));
    h.clock.set(1_000);
    h.push(vec![a()]);
    h.clock.set(1_050);
    h.push(vec![a()]);
    // [1000,1100) and [1050,1150) merged: one timer at 1149.
    assert_eq!(h.op.next_processing_timer(), Some(1_149));
    h.processing_time(1_148);
    assert!(h.take().is_empty());
    h.processing_time(1_149);
    assert_eq!(h.take(), strings(&["(a,1000,1150,2)@1149"]));

    let mut h = harness(
        WindowSpec::new(WindowAssigner::sliding_processing_time(100, 50)),
        count_with_window(),
        BackendKind::Heap,
    );
    h.clock.set(1_020);
    h.push(vec![a()]);
    h.processing_time(2_000);
    assert_eq!(
        h.take(),
        strings(&["(a,950,1050,1)@1049", "(a,1000,1100,1)@1099"])
    );
}

#[test]
fn dynamic_gap_sessions_take_the_gap_from_each_record() {
    let mut h = harness(
        WindowSpec::new(WindowAssigner::DynamicEventTimeSession { gap_field: 1 }),
        count_with_window(),
        BackendKind::Heap,
    );
    // a@0 with gap 10 → [0,10); a@12 with gap 2 → [12,14); a@9 with gap 3 → [9,12)
    // touches both: [0,14).
    h.push(vec![rec("a", 10, 0), rec("a", 2, 12)]);
    h.push(vec![rec("a", 3, 9)]);
    h.watermark(i64::MAX);
    assert_eq!(h.take(), strings(&["(a,0,14,3)@13"]));
}

/// Open windows (contents, trigger state, session sets, timers) move with their key
/// groups when two subtasks are restored as three.
#[test]
fn open_windows_rescale_from_two_to_three_subtasks() {
    use crate::key_group::operator_index_for_key;
    let spec = || WindowSpec::new(WindowAssigner::event_time_session(5));
    let make = |i, p| {
        harness_at(
            OperatorRegistry::new(),
            spec(),
            count_with_window(),
            BackendKind::Lsm,
            i,
            p,
        )
    };
    let owner = |k: &str, p: u32| operator_index_for_key(Value::from(k).stable_hash(), p, 128);
    let keys: Vec<String> = (0..30).map(|k| format!("k{k}")).collect();
    let mut two = [make(0, 2), make(1, 2)];
    for (n, k) in keys.iter().enumerate() {
        // Two records per key, 3 apart: one session [n, n + 8).
        let h = &mut two[owner(k, 2) as usize];
        h.push(vec![rec(k, 0, n as i64), rec(k, 0, n as i64 + 3)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let target = CheckpointLayout::new(dir.path(), "job").target(
        storage.clone(),
        1,
        SnapshotKind::Checkpoint,
    );
    let subtasks = two
        .iter_mut()
        .enumerate()
        .map(|(i, h)| {
            h.op.snapshot_state(&SnapshotContext {
                checkpoint_id: 1,
                target: target.clone(),
            })
            .unwrap()
            .run(i as u32)
            .unwrap()
        })
        .collect();
    let snapshot = OperatorSnapshot {
        uid: "window".into(),
        name: "window".into(),
        parallelism: 2,
        max_parallelism: 128,
        subtasks,
    };
    let mut got = Vec::new();
    for i in 0..3 {
        let mut h = make(i, 3);
        h.op.initialize_state(&mut StateInitContext::restoring(
            target.exclusive_dir.clone(),
            snapshot.clone(),
            storage.clone(),
        ))
        .unwrap();
        h.watermark(i64::MAX);
        for line in h.take_values() {
            let k = line
                .trim_start_matches('(')
                .split(',')
                .next()
                .unwrap()
                .to_owned();
            assert_eq!(owner(&k, 3), i, "{line} fired on subtask {i}");
            got.push(line);
        }
    }
    got.sort();
    let mut want: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| format!("({k},{n},{},2)", n + 8))
        .collect();
    want.sort();
    assert_eq!(got, want);
}
