//! End-to-end tests: whole jobs on the local executor, and single tasks driven by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::builtins::{self, DatagenConfig};
use crate::jobs;
use crate::key;
use crate::local_channel::{local_queue, LocalInput, LocalMessage};
use crate::*;

fn executor() -> LocalExecutor {
    let mut r = OperatorRegistry::new();
    r.register_map("t.times10", |()| {
        Ok(|v: Value| {
            v.as_i64()
                .map(|x| Value::I64(x * 10))
                .ok_or(DataflowError::TypeMismatch {
                    operator: "t.times10".into(),
                    expected: "i64",
                    actual: "other",
                })
        })
    })
    .unwrap();
    r.register_filter("t.even", |()| {
        Ok(|v: &Value| Ok(v.as_i64().is_some_and(|x| x % 2 == 0)))
    })
    .unwrap();
    r.register_map("t.fail_at", |at: i64| {
        Ok(move |v: Value| {
            if v.as_i64() == Some(at) {
                Err(DataflowError::Operator {
                    operator: "t.fail_at".into(),
                    message: format!("saw {at}"),
                })
            } else {
                Ok(v)
            }
        })
    })
    .unwrap();
    r.register_map("t.panic_at", |at: i64| {
        Ok(move |v: Value| {
            assert_ne!(v.as_i64(), Some(at), "user code panicked");
            Ok(v)
        })
    })
    .unwrap();
    LocalExecutor::with_config(
        Arc::new(r),
        LocalExecutorConfig {
            // Small batches and queues exercise batching boundaries and backpressure.
            batch_size: 7,
            queue_capacity: 2,
            ..Default::default()
        },
    )
}

fn finished(r: &JobResult) {
    assert!(matches!(r.outcome, JobOutcome::Finished), "{:?}", r.outcome);
}

fn sorted_i64(values: &[Value]) -> Vec<i64> {
    let mut v: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
    v.sort_unstable();
    v
}

fn wordcount_at(parallelism: u32) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let mut text = String::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..400 {
        let line = format!("The quick fox {} jumps, the DOG w{}!", i % 3, i % 17);
        for w in line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *expected.entry(w.to_lowercase()).or_default() += 1;
        }
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let job = jobs::wordcount(
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        parallelism,
    )
    .unwrap();
    finished(&executor().execute(&job).unwrap());
    let mut got = BTreeMap::new();
    for line in std::fs::read_to_string(&output).unwrap().lines() {
        let inner = line.trim_start_matches('(').trim_end_matches(')');
        let (w, n) = inner.rsplit_once(',').unwrap();
        assert!(
            got.insert(w.to_owned(), n.parse::<i64>().unwrap())
                .is_none(),
            "{w} twice"
        );
    }
    assert_eq!(got, expected);
}

#[test]
fn wordcount_parallelism_1() {
    wordcount_at(1);
}

#[test]
fn wordcount_parallelism_4() {
    wordcount_at(4);
}

fn keyed_sum_at(parallelism: u32) {
    let (rows, keys) = (100_003, 97);
    let job = jobs::keyed_sum(Some(rows), keys, None, parallelism).unwrap();
    let result = executor().execute(&job).unwrap();
    finished(&result);
    let out = result.collected(jobs::KEYED_SUM_COLLECT_ID);
    assert_eq!(out.len(), keys as usize);
    assert_eq!(
        jobs::keyed_sum_checksum(out).unwrap(),
        jobs::expected_keyed_sum_checksum(rows, keys)
    );
}

#[test]
fn keyed_sum_parallelism_1() {
    keyed_sum_at(1);
}

#[test]
fn keyed_sum_parallelism_4() {
    keyed_sum_at(4);
}

#[test]
fn expected_checksum_matches_brute_force() {
    let (rows, keys) = (1000u64, 7u64);
    let mut per = vec![(0i64, 0i64); keys as usize];
    for id in 0..rows {
        let e = &mut per[(id % keys) as usize];
        e.0 += 1;
        e.1 += id as i64;
    }
    let rows_v: Vec<Value> = per
        .iter()
        .enumerate()
        .map(|(k, (c, s))| Value::Tuple(vec![Value::I64(k as i64), Value::I64(*c), Value::I64(*s)]))
        .collect();
    assert_eq!(
        jobs::keyed_sum_checksum(&rows_v).unwrap(),
        jobs::expected_keyed_sum_checksum(rows, keys)
    );
}

#[test]
fn map_filter_union_rebalance_broadcast() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(3);
    let a = env.add_source(builtins::datagen(DatagenConfig::bounded(50)));
    let b = env
        .add_source(builtins::collection((100..110).map(Value::I64).collect()))
        .parallelism(2);
    let merged = a
        .union(&[&b.rebalance()])
        .filter(FactoryRef::unit("t.even"))
        .map(FactoryRef::unit("t.times10"))
        .parallelism(2);
    merged
        .rebalance()
        .sink(builtins::collect("all"))
        .parallelism(4);
    merged
        .broadcast()
        .sink(builtins::collect("bcast"))
        .parallelism(3);
    let result = executor().execute(&env.job_graph("t").unwrap()).unwrap();
    finished(&result);
    let expected: Vec<i64> = (0..50)
        .chain(100..110)
        .filter(|x| x % 2 == 0)
        .map(|x| x * 10)
        .collect();
    assert_eq!(sorted_i64(result.collected("all")), expected);
    let mut thrice: Vec<i64> = expected.iter().flat_map(|x| [*x; 3]).collect();
    thrice.sort_unstable();
    assert_eq!(sorted_i64(result.collected("bcast")), thrice);
}

#[test]
fn reduce_emits_running_sums_per_key() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.add_source(builtins::collection((1..=6).map(Value::I64).collect()))
        .key_by(key::by_i64_mod(2))
        .reduce(builtins::sum())
        .sink(builtins::collect("sums"));
    let result = executor().execute(&env.job_graph("t").unwrap()).unwrap();
    finished(&result);
    let got = sorted_i64(result.collected("sums"));
    // Odd key: 1, 4, 9; even key: 2, 6, 12 — whatever the interleaving, each partial sum once.
    assert_eq!(got, vec![1, 2, 4, 6, 9, 12]);
}

#[test]
fn operator_failure_fails_the_job_and_cancels_the_rest() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.add_source(builtins::datagen(DatagenConfig::default())) // unbounded
        .map(FactoryRef::new("t.fail_at", &5_000i64).unwrap())
        .rebalance()
        .sink(builtins::blackhole());
    let result = executor().execute(&env.job_graph("t").unwrap()).unwrap();
    match result.outcome {
        JobOutcome::Failed(DataflowError::Operator { message, .. }) => {
            assert_eq!(message, "saw 5000")
        }
        other => panic!("expected the map's failure, got {other:?}"),
    }
}

#[test]
fn operator_panic_fails_the_job_and_cancels_the_rest() {
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::default())) // unbounded
        .rebalance()
        .map(FactoryRef::new("t.panic_at", &100i64).unwrap())
        .sink(builtins::blackhole());
    let result = executor().execute(&env.job_graph("t").unwrap()).unwrap();
    assert!(
        matches!(&result.outcome, JobOutcome::Failed(DataflowError::Operator { message, .. }) if message.contains("user code panicked")),
        "{:?}",
        result.outcome
    );
}

#[test]
fn file_sink_directory_gets_one_part_per_subtask() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(3);
    env.add_source(builtins::datagen(DatagenConfig::bounded(30)))
        .sink(builtins::file_sink_dir(out.to_str().unwrap()));
    finished(&executor().execute(&env.job_graph("t").unwrap()).unwrap());
    let mut all = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(out.join(format!("part-{i}"))).unwrap();
        all.extend(text.lines().map(|l| l.parse::<i64>().unwrap()));
    }
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
}

#[test]
fn unbounded_job_is_canceled_through_mailboxes() {
    let job = jobs::keyed_sum(None, 10, Some(1_000.0), 2).unwrap();
    let handle = executor().start(&job).unwrap();
    handle.cancel();
    let result = handle.wait();
    assert!(
        matches!(result.outcome, JobOutcome::Canceled),
        "{:?}",
        result.outcome
    );
}

#[test]
fn unknown_operator_rejected_before_start() {
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .map(FactoryRef::unit("nobody.registered.this"))
        .sink(builtins::blackhole());
    let err = executor().start(&env.job_graph("t").unwrap()).err();
    assert!(
        matches!(err, Some(DataflowError::UnknownOperator { ref name }) if name == "nobody.registered.this")
    );
}

#[test]
fn socket_source_reads_lines_until_close() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello world\r\nhello").unwrap();
        s.flush().unwrap();
        s.write_all(b" again\nlast").unwrap();
    });
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::socket_lines("127.0.0.1", port))
        .sink(builtins::collect("lines"));
    let result = executor().execute(&env.job_graph("t").unwrap()).unwrap();
    server.join().unwrap();
    finished(&result);
    let lines: Vec<String> = result
        .collected("lines")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(lines, ["hello world", "hello again", "last"]);
}

/// A hand-driven task: cancel reaches a task blocked on an empty input.
#[test]
fn cancel_wakes_a_task_blocked_on_input() {
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .rebalance()
        .sink(builtins::blackhole());
    let job = Arc::new(env.job_graph("t").unwrap());
    let (tx, rx) = local_queue(4);
    let input = LocalInput::new(rx, tx.clone(), 1);
    let task_env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: None,
        config: TaskConfig::default(),
    };
    let task =
        StreamTask::new(job, VertexId(1), 0, task_env, Some(Box::new(input)), vec![]).unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let handle = task
        .spawn(move |o| {
            let _ = done_tx.send(matches!(o, TaskOutcome::Canceled));
        })
        .unwrap();
    // Nothing is ever sent on `tx`: only the mailbox waker can end the task.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "task ended early"
    );
    assert!(handle.cancel());
    assert!(matches!(handle.join(), TaskOutcome::Canceled));
    drop(tx);
}

/// A task's input: watermarks combine over channels and end of input finishes it.
#[test]
fn task_combines_watermarks_and_finishes_at_end_of_input() {
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .parallelism(2)
        .rebalance()
        .sink(builtins::collect("out"));
    let job = Arc::new(env.job_graph("t").unwrap());
    let (tx, rx) = local_queue(16);
    let collect = Arc::new(CollectBuffer::new());
    let task_env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: Some(collect.clone()),
        config: TaskConfig::default(),
    };
    let input = LocalInput::new(rx, tx.clone(), 2);
    let task =
        StreamTask::new(job, VertexId(1), 0, task_env, Some(Box::new(input)), vec![]).unwrap();
    let ev = |channel, event| LocalMessage::Event { channel, event };
    tx.send(LocalMessage::Records {
        channel: 1,
        records: vec![StreamRecord::with_timestamp(7, 3)],
    })
    .unwrap();
    tx.send(ev(0, StreamEvent::Watermark(10))).unwrap();
    tx.send(ev(1, StreamEvent::WatermarkStatus(WatermarkStatus::Idle)))
        .unwrap();
    tx.send(ev(0, StreamEvent::EndOfInput)).unwrap();
    tx.send(ev(1, StreamEvent::EndOfInput)).unwrap();
    assert!(matches!(task.run(), TaskOutcome::Finished(_)));
    assert_eq!(collect.take().get("out").map(Vec::len), Some(1));
}

#[test]
fn task_rejects_mismatched_wiring() {
    let job = Arc::new(jobs::keyed_sum(Some(10), 2, None, 2).unwrap());
    let env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: None,
        config: TaskConfig::default(),
    };
    // The source vertex has one output edge; give it none.
    assert!(StreamTask::new(job.clone(), VertexId(0), 0, env.clone(), None, vec![]).is_err());
    // Subtask index out of range.
    assert!(StreamTask::new(job, VertexId(1), 2, env, None, vec![]).is_err());
}

/// A bounded keyed task with a final snapshot reports its operator's state in
/// `Finished`, and a task restored from it continues the counts.
#[test]
fn bounded_task_final_snapshot_restores_into_a_new_task() {
    use rill_state::snapshot::SnapshotKind;
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let job = Arc::new(jobs::keyed_sum(Some(100), 5, None, 1).unwrap());
    let run = |config: TaskConfig| {
        let (tx, rx) = local_queue(16);
        let collect = Arc::new(CollectBuffer::new());
        let env = TaskEnvironment {
            registry: Arc::new(OperatorRegistry::new()),
            collect: Some(collect.clone()),
            config,
        };
        let input = LocalInput::new(rx, tx.clone(), 1);
        let task = StreamTask::new(
            job.clone(),
            VertexId(1),
            0,
            env,
            Some(Box::new(input)),
            vec![],
        )
        .unwrap();
        tx.send(LocalMessage::Records {
            channel: 0,
            records: (0..100).map(StreamRecord::new).collect(),
        })
        .unwrap();
        tx.send(LocalMessage::Event {
            channel: 0,
            event: StreamEvent::EndOfInput,
        })
        .unwrap();
        let TaskOutcome::Finished(Ok(snapshots)) = task.run() else {
            panic!("task did not finish")
        };
        let mut rows: Vec<String> = collect
            .take()
            .remove(jobs::KEYED_SUM_COLLECT_ID)
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        rows.sort();
        (snapshots, rows)
    };
    let mut config = TaskConfig::default();
    config.state.checkpoints_dir = Some(format!("file://{}", dir.path().display()));
    config.final_snapshot = Some(layout.target(storage.clone(), 1, SnapshotKind::Savepoint));
    let (snapshots, rows) = run(config.clone());
    assert_eq!(rows[0], "(0,20,950)");
    // Only the keyed operator has state; source-less sink and the rest are skipped.
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0].uid, "keyed-sum-agg");
    assert!(snapshots[0].snapshot.keyed.is_some());
    // The type travels as data (the deployer ships it to whoever writes `_metadata`).
    let bytes = rmp_serde::to_vec_named(&snapshots).unwrap();
    let snapshots: Vec<OperatorSubtaskSnapshot> = rmp_serde::from_slice(&bytes).unwrap();

    config.final_snapshot = None;
    config.restore = Some(TaskRestore {
        snapshot_dir: layout.checkpoint_dir(1),
        storage,
        operators: state::group_by_operator(snapshots),
    });
    let (after, rows) = run(config);
    assert!(after.is_empty());
    assert_eq!(rows[0], "(0,40,1900)");
    assert_eq!(rows.len(), 5);
}
