//! Single tasks driven by hand over the network's local channels, as a TaskExecutor
//! wires them: every subtask's I/O comes from `create_task_io` on one environment, and a
//! test plays the producers by writing to their outputs. Whole jobs run on a MiniCluster
//! (rill-endpoints' `tests/jobs.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rill_network::{NetworkConfig, NetworkEnvironment, PartitionId};

use crate::builtins::{self, DatagenConfig};
use crate::jobs;
use crate::*;

fn net() -> NetworkEnvironment {
    NetworkEnvironment::new(NetworkConfig {
        memory: 256 * 4096,
        segment_size: 4096,
        ..NetworkConfig::default()
    })
    .unwrap()
}

/// The partition subtask `subtask` creates for edge `edge`.
fn pid(edge: usize, subtask: u32) -> PartitionId {
    PartitionId(((edge as u128 + 1) << 32) | u128::from(subtask))
}

/// The I/O of every subtask of `job` on `net`, all channels local, created in
/// topological order (producers before consumers).
fn wire(net: &NetworkEnvironment, job: &JobGraph) -> BTreeMap<(VertexId, u32), NetworkTaskIo> {
    let mut ios = BTreeMap::new();
    for v in job.topological_order().unwrap() {
        for s in 0..job.vertex(v).unwrap().parallelism {
            let outputs: Vec<OutputSpec> = job
                .output_edges(v)
                .map(|(e, _)| OutputSpec {
                    partition: pid(e, s),
                })
                .collect();
            let inputs = input_channel_specs(job, v, s, |edge, up| {
                Ok((pid(edge, up), ChannelLocation::Local))
            })
            .unwrap();
            let io =
                create_task_io(net, job, v, s, &outputs, inputs, &TaskConfig::default()).unwrap();
            ios.insert((v, s), io);
        }
    }
    ios
}

/// The single output of subtask `subtask` of `vertex`, to be driven by hand.
fn output(
    ios: &mut BTreeMap<(VertexId, u32), NetworkTaskIo>,
    vertex: u32,
    subtask: u32,
) -> Box<dyn TaskOutput> {
    let io = ios.get_mut(&(VertexId(vertex), subtask)).unwrap();
    assert_eq!(io.outputs.len(), 1);
    io.outputs.pop().unwrap()
}

/// The input of subtask `subtask` of `vertex`.
fn input(
    ios: &mut BTreeMap<(VertexId, u32), NetworkTaskIo>,
    vertex: u32,
    subtask: u32,
) -> Box<dyn TaskInput> {
    ios.get_mut(&(VertexId(vertex), subtask))
        .unwrap()
        .input
        .take()
        .unwrap()
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

/// Cancel reaches a task blocked on an empty input.
#[test]
fn cancel_wakes_a_task_blocked_on_input() {
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .rebalance()
        .sink(builtins::blackhole());
    let job = Arc::new(env.job_graph("t").unwrap());
    let net = net();
    let mut ios = wire(&net, &job);
    // Kept, never written to: only the mailbox waker can end the task. (Dropping it
    // before end of input would release its partition.)
    let producer = output(&mut ios, 0, 0);
    let task_env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: None,
        config: TaskConfig::default(),
    };
    let task = StreamTask::new(
        job,
        VertexId(1),
        0,
        task_env,
        Some(input(&mut ios, 1, 0)),
        vec![],
    )
    .unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let handle = task
        .spawn(move |o| {
            let _ = done_tx.send(matches!(o, TaskOutcome::Canceled));
        })
        .unwrap();
    assert!(
        done_rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "task ended early"
    );
    assert!(handle.cancel());
    assert!(matches!(handle.join(), TaskOutcome::Canceled));
    drop(producer);
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
    let net = net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let task_env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: Some(collect.clone()),
        config: TaskConfig::default(),
    };
    let task = StreamTask::new(
        job,
        VertexId(1),
        0,
        task_env,
        Some(input(&mut ios, 1, 0)),
        vec![],
    )
    .unwrap();
    // Input channel i reads source subtask i.
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    ch1.emit(&mut vec![StreamRecord::with_timestamp(7, 3)], &[])
        .unwrap();
    ch0.emit_event(StreamEvent::Watermark(10)).unwrap();
    ch1.emit_event(StreamEvent::WatermarkStatus(WatermarkStatus::Idle))
        .unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
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
    assert!(StreamTask::new(job.clone(), VertexId(1), 2, env.clone(), None, vec![]).is_err());
    // An input with one channel where the graph has two (the same job at parallelism 1).
    let net = net();
    let mut ios = wire(&net, &jobs::keyed_sum(Some(10), 2, None, 1).unwrap());
    let one = input(&mut ios, 1, 0);
    assert_eq!(one.num_channels(), 1);
    let err = StreamTask::new(job, VertexId(1), 0, env, Some(one), vec![])
        .err()
        .unwrap();
    assert!(err.to_string().contains("2 input channels"), "{err}");
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
        let net = net();
        let mut ios = wire(&net, &job);
        let collect = Arc::new(CollectBuffer::new());
        let env = TaskEnvironment {
            registry: Arc::new(OperatorRegistry::new()),
            collect: Some(collect.clone()),
            config,
        };
        let task = StreamTask::new(
            job.clone(),
            VertexId(1),
            0,
            env,
            Some(input(&mut ios, 1, 0)),
            vec![],
        )
        .unwrap();
        // The hash edge to the only aggregate subtask: every record to channel 0.
        let mut source = output(&mut ios, 0, 0);
        let mut records: Vec<StreamRecord> = (0..100).map(StreamRecord::new).collect();
        source.emit(&mut records, &[0; 100]).unwrap();
        source.emit_event(StreamEvent::EndOfInput).unwrap();
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

/// What a task reported through its [`CheckpointResponder`](crate::checkpoint::CheckpointResponder).
#[derive(Debug)]
enum Reported {
    Ack(u64, Vec<OperatorSubtaskSnapshot>),
    #[allow(dead_code)] // printed by a failing assertion
    Decline(u64, String),
    InputEnded,
}

struct Responder(crossbeam_channel::Sender<Reported>);

impl crate::checkpoint::CheckpointResponder for Responder {
    fn acknowledge(
        &self,
        id: u64,
        snapshots: Vec<OperatorSubtaskSnapshot>,
        _stats: crate::checkpoint::TaskCheckpointStats,
    ) {
        let _ = self.0.send(Reported::Ack(id, snapshots));
    }
    fn decline(&self, id: u64, reason: crate::checkpoint::DeclineReason) {
        let _ = self.0.send(Reported::Decline(id, reason.to_string()));
    }
    fn input_ended(&self) {
        let _ = self.0.send(Reported::InputEnded);
    }
}

/// keyed-sum with two source subtasks and one aggregate subtask (vertex 1), whose
/// channel `i` reads source `i`.
fn two_sources_one_agg() -> Arc<JobGraph> {
    let mut job = jobs::keyed_sum(Some(100), 5, None, 1).unwrap();
    job.vertices[0].parallelism = 2;
    Arc::new(job)
}

/// Records with these values.
fn records(ids: std::ops::Range<i64>) -> Vec<StreamRecord> {
    ids.map(StreamRecord::new).collect()
}

/// keyed-sum's collected `(key,count,sum)` rows, sorted.
fn keyed_sum_rows(c: &CollectBuffer) -> Vec<String> {
    let mut r: Vec<String> = c
        .take()
        .remove(jobs::KEYED_SUM_COLLECT_ID)
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    r.sort();
    r
}

/// The aggregate subtask of [`two_sources_one_agg`], collecting into `collect`.
fn agg_task(
    job: &Arc<JobGraph>,
    ios: &mut BTreeMap<(VertexId, u32), NetworkTaskIo>,
    config: TaskConfig,
    collect: &Arc<CollectBuffer>,
) -> StreamTask {
    let env = TaskEnvironment {
        registry: Arc::new(OperatorRegistry::new()),
        collect: Some(collect.clone()),
        config,
    };
    StreamTask::new(
        job.clone(),
        VertexId(1),
        0,
        env,
        Some(input(ios, 1, 0)),
        vec![],
    )
    .unwrap()
}

/// A task config restoring checkpoint `id` of `layout` from these acknowledged parts.
fn restore_config(
    layout: &rill_state::storage::CheckpointLayout,
    id: u64,
    storage: Arc<dyn rill_state::CheckpointStorage>,
    snapshots: Vec<OperatorSubtaskSnapshot>,
) -> TaskConfig {
    TaskConfig {
        restore: Some(TaskRestore {
            snapshot_dir: layout.checkpoint_dir(id),
            storage,
            operators: state::group_by_operator(snapshots),
        }),
        ..TaskConfig::default()
    }
}

/// Waits for checkpoint `id`'s acknowledgement and the task's end of input. The first
/// comes from the snapshot thread, the second from the task thread: either may be
/// first.
fn ack_and_input_end(
    rx: &crossbeam_channel::Receiver<Reported>,
    id: u64,
) -> Vec<OperatorSubtaskSnapshot> {
    let (mut snapshots, mut ended) = (None, false);
    while snapshots.is_none() || !ended {
        match rx.recv_timeout(Duration::from_secs(10)).expect("a report") {
            Reported::Ack(i, s) if i == id => snapshots = Some(s),
            Reported::InputEnded => ended = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    snapshots.expect("checkpoint acknowledged")
}

/// The final checkpoint, triggered by mail once the input ended: acknowledged, then
/// completed as the job's last, and the task finishes.
fn finish_with_final_checkpoint(
    handle: TaskHandle,
    rx: &crossbeam_channel::Receiver<Reported>,
    barrier: crate::checkpoint::CheckpointBarrier,
) {
    let id = barrier.id;
    handle
        .mailbox()
        .send(Mail::TriggerCheckpoint(barrier))
        .unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)).expect("a report"),
        Reported::Ack(i, _) if i == id
    ));
    handle
        .mailbox()
        .send(Mail::CheckpointComplete { id, last: true })
        .unwrap();
    assert!(matches!(handle.join(), TaskOutcome::Finished(_)));
}

/// A task config taking exactly-once checkpoints into `dir`, and where its reports go.
fn exactly_once_config(
    dir: &std::path::Path,
    storage: &Arc<dyn rill_state::CheckpointStorage>,
    layout: &rill_state::storage::CheckpointLayout,
) -> (TaskConfig, crossbeam_channel::Receiver<Reported>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut config = TaskConfig::default();
    config.state.checkpoints_dir = Some(format!("file://{}", dir.display()));
    config.checkpointing = Some(crate::checkpoint::TaskCheckpointing {
        mode: crate::barrier_handler::BarrierMode::Aligned,
        storage: storage.clone(),
        layout: layout.clone(),
        responder: Arc::new(Responder(tx)),
        aligned_timeout: None,
    });
    (config, rx)
}

/// Exactly-once alignment in a task with two input channels: records behind barrier 1
/// on the channel that delivered it first stay out of checkpoint 1 (they are processed
/// after the snapshot); a task restored from the checkpoint holds exactly the records
/// before the barriers. After its input ended the task waits for its final checkpoint,
/// triggered by mail, and finishes when that completes.
#[test]
fn aligned_barriers_keep_records_behind_a_barrier_out_of_the_checkpoint() {
    use crate::checkpoint::{CheckpointBarrier, CheckpointEvent, CheckpointOptions};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let job = two_sources_one_agg();
    let net = net();
    let mut ios = wire(&net, &job);
    let (config, rx) = exactly_once_config(dir.path(), &storage, &layout);
    let collect = Arc::new(CollectBuffer::new());
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    let barrier = |id| {
        CheckpointEvent::Barrier(CheckpointBarrier {
            id,
            timestamp_ms: 0,
            options: CheckpointOptions::aligned_checkpoint(),
        })
    };
    // Channel 0: 0..10, barrier 1, 100..110. Channel 1: 10..20, barrier 1.
    ch0.emit(&mut records(0..10), &[0; 10]).unwrap();
    ch0.emit_checkpoint_event(barrier(1)).unwrap();
    ch0.emit(&mut records(100..110), &[0; 10]).unwrap();
    ch0.flush().unwrap();
    let handle = task.spawn(|_| {}).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    ch1.emit(&mut records(10..20), &[0; 10]).unwrap();
    ch1.emit_checkpoint_event(barrier(1)).unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    let snapshots = ack_and_input_end(&rx, 1);
    finish_with_final_checkpoint(
        handle,
        &rx,
        CheckpointBarrier {
            id: 2,
            timestamp_ms: 0,
            options: CheckpointOptions::aligned_checkpoint(),
        },
    );
    // All 30 records were processed: key 0 is 0,5,10,15,100,105.
    assert_eq!(keyed_sum_rows(&collect)[0], "(0,6,235)");

    // Restored from checkpoint 1: only the 20 records before the barriers.
    let net = self::net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let config = restore_config(&layout, 1, storage, snapshots);
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    assert!(matches!(task.run(), TaskOutcome::Finished(_)));
    assert_eq!(
        keyed_sum_rows(&collect)[0],
        "(0,4,30)",
        "checkpoint 1 held records behind its barrier"
    );
}

/// Unaligned checkpoints in a task with two input channels, end to end at the task
/// boundary: the barrier overtakes what its producer queued (the producer keeps those
/// bytes), the task snapshots at the first barrier and records the other channel until
/// its barrier, and acknowledges only then, with the recording as in-flight data. A
/// task restored from the checkpoint, whose producers first resend what their barriers
/// overtook, processes every record exactly once: the same result as the run that was
/// never interrupted.
#[test]
fn unaligned_barriers_overtake_and_in_flight_data_restores_exactly_once() {
    use crate::checkpoint::{Alignment, CheckpointBarrier, CheckpointKind, CheckpointOptions};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let job = two_sources_one_agg();
    let unaligned = |id| CheckpointBarrier {
        id,
        timestamp_ms: 0,
        options: CheckpointOptions {
            kind: CheckpointKind::Checkpoint,
            alignment: Alignment::Unaligned,
        },
    };
    let net = net();
    let mut ios = wire(&net, &job);
    let (config, rx) = exactly_once_config(dir.path(), &storage, &layout);
    let collect = Arc::new(CollectBuffer::new());
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    // Channel 0: 0..10 queued, then the barrier overtakes them; 100..110 after it.
    ch0.emit(&mut records(0..10), &[0; 10]).unwrap();
    let overtaken0 = ch0.emit_priority_barrier(unaligned(1)).unwrap();
    assert_eq!(overtaken0.len(), 1);
    assert!(
        !overtaken0[0].is_empty(),
        "the queued records were overtaken"
    );
    ch0.emit(&mut records(100..110), &[0; 10]).unwrap();
    ch0.flush().unwrap();
    let handle = task.spawn(|_| {}).unwrap();
    // Channel 1: 10..20 reach the task after its snapshot (it is recording channel 1).
    std::thread::sleep(Duration::from_millis(50));
    ch1.emit(&mut records(10..20), &[0; 10]).unwrap();
    ch1.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "no acknowledgement before the last barrier"
    );
    let overtaken1 = ch1.emit_priority_barrier(unaligned(1)).unwrap();
    ch1.emit(&mut records(110..120), &[0; 10]).unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    let snapshots = ack_and_input_end(&rx, 1);
    let in_flight = snapshots
        .iter()
        .find_map(|s| s.snapshot.in_flight.clone())
        .expect("in-flight data on the first operator");
    // 10..20 are either in the task's recording or in what channel 1's barrier overtook.
    assert_eq!(
        overtaken1.iter().all(Vec::is_empty),
        in_flight.input_bytes > 0,
        "{in_flight:?} / overtaken {}",
        overtaken1.iter().map(Vec::len).sum::<usize>()
    );
    assert_eq!(in_flight.output_bytes, 0, "the task has no network output");
    finish_with_final_checkpoint(handle, &rx, unaligned(2));
    // All 40 records: key 0 is 0,5,10,15,100,105,110,115.
    let all = keyed_sum_rows(&collect);
    assert_eq!(all[0], "(0,8,460)");

    // Restored from checkpoint 1; the producers resend what their barriers overtook.
    let net = self::net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let config = restore_config(&layout, 1, storage.clone(), snapshots.clone());
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    for (out, overtaken) in [(&mut ch0, &overtaken0), (&mut ch1, &overtaken1)] {
        for (sub, bytes) in (0u32..).zip(overtaken.iter()) {
            out.restore_in_flight(sub, bytes).unwrap();
        }
    }
    ch0.emit(&mut records(100..110), &[0; 10]).unwrap();
    ch1.emit(&mut records(110..120), &[0; 10]).unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    assert!(matches!(task.run(), TaskOutcome::Finished(_)));
    assert_eq!(
        keyed_sum_rows(&collect),
        all,
        "every record exactly once after the restore"
    );

    // The same checkpoint cannot restore the task at another parallelism.
    let err = crate::in_flight::restore_in_flight(
        &TaskRestore {
            snapshot_dir: layout.checkpoint_dir(1),
            storage,
            operators: state::group_by_operator(snapshots),
        },
        "keyed-sum-agg",
        0,
        2,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("at that parallelism only"),
        "{err}"
    );
}

/// Processing-time timers fire while the task's input is idle: the task waits on its
/// input only until the earliest timer, on its injected clock.
#[test]
fn processing_time_timer_fires_while_input_is_idle() {
    use crate::timer::ManualClock;

    /// Emits (key, timer time) 100 ms (processing time) after each key's first record.
    struct Later;
    impl KeyedProcessFunction for Later {
        type State = bool;
        fn process(
            &mut self,
            _: &Value,
            armed: &mut bool,
            _: &Value,
            ctx: &mut ProcessContext<'_>,
            _: &mut operator::Collector<'_>,
        ) -> Result<()> {
            if !*armed {
                *armed = true;
                let now = ctx.timer_service().current_processing_time();
                ctx.timer_service()
                    .register_processing_time_timer(now + 100);
            }
            Ok(())
        }
        fn on_timer(
            &mut self,
            t: i64,
            key: &Value,
            _: &mut bool,
            _: &mut ProcessContext<'_>,
            out: &mut operator::Collector<'_>,
        ) -> Result<()> {
            out.collect(Value::Tuple(vec![key.clone(), Value::I64(t)]));
            Ok(())
        }
    }
    struct Channel(crossbeam_channel::Sender<Vec<Value>>);
    impl CollectSink for Channel {
        fn collect(&self, _: &str, _: u32, values: Vec<Value>) -> Result<()> {
            let _ = self.0.send(values);
            Ok(())
        }
    }

    let mut registry = OperatorRegistry::new();
    registry
        .register_process("test.later", |()| Ok(Later))
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::collection(vec![]))
        .key_by(key::by_value())
        .process(FactoryRef::unit("test.later"))
        .sink(builtins::collect("out"));
    let job = Arc::new(env.job_graph("t").unwrap());
    let net = net();
    let mut ios = wire(&net, &job);
    let clock = ManualClock::new(5_000);
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut config = TaskConfig {
        buffer_timeout: Duration::ZERO,
        ..TaskConfig::default()
    };
    config.state_clock = clock.clone();
    let task_env = TaskEnvironment {
        registry: Arc::new(registry),
        collect: Some(Arc::new(Channel(tx))),
        config,
    };
    let task = StreamTask::new(
        job,
        VertexId(1),
        0,
        task_env,
        Some(input(&mut ios, 1, 0)),
        vec![],
    )
    .unwrap();
    let mut source = output(&mut ios, 0, 0);
    let handle = task.spawn(|_| {}).unwrap();
    source
        .emit(&mut vec![StreamRecord::new("k")], &[0])
        .unwrap();
    source.flush().unwrap();
    // The timer is not due on the task's clock yet, however long the task waits.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    // The input stays idle (no record, no end of input): only the timer can emit.
    clock.advance(100);
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("timer fired");
    assert_eq!(got, [Value::Tuple(vec!["k".into(), Value::I64(5_100)])]);
    assert!(handle.cancel());
    assert!(matches!(handle.join(), TaskOutcome::Canceled));
    drop(source);
}

/// `execution.checkpointing.aligned-checkpoint-timeout` at a task: an aligned barrier
/// blocks channel 0 while channel 1 stays silent; after the timeout the task snapshots,
/// resumes channel 0 and records channel 1 until its (aligned) barrier, acknowledging
/// with that recording as in-flight data. Restored from the checkpoint, the task
/// processes every record exactly once.
#[test]
fn an_aligned_checkpoint_that_times_out_turns_unaligned_and_restores_exactly_once() {
    use crate::checkpoint::{CheckpointBarrier, CheckpointEvent, CheckpointOptions};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let job = two_sources_one_agg();
    let aligned = |id| {
        CheckpointEvent::Barrier(CheckpointBarrier {
            id,
            timestamp_ms: 0,
            options: CheckpointOptions::aligned_checkpoint(),
        })
    };
    let net = net();
    let mut ios = wire(&net, &job);
    let (mut config, rx) = exactly_once_config(dir.path(), &storage, &layout);
    if let Some(c) = &mut config.checkpointing {
        c.aligned_timeout = Some(Duration::from_millis(20));
    }
    let collect = Arc::new(CollectBuffer::new());
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    ch0.emit(&mut records(0..10), &[0; 10]).unwrap();
    ch0.emit_checkpoint_event(aligned(1)).unwrap();
    ch0.emit(&mut records(100..110), &[0; 10]).unwrap();
    ch0.flush().unwrap();
    let handle = task.spawn(|_| {}).unwrap();
    // Well past the 20 ms timeout: the task has turned checkpoint 1 unaligned and
    // records channel 1, which now delivers 10..20 before its barrier.
    std::thread::sleep(Duration::from_millis(150));
    ch1.emit(&mut records(10..20), &[0; 10]).unwrap();
    ch1.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    ch1.emit_checkpoint_event(aligned(1)).unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    let snapshots = ack_and_input_end(&rx, 1);
    let in_flight = snapshots
        .iter()
        .find_map(|s| s.snapshot.in_flight.clone())
        .expect("the timed-out checkpoint stored channel 1's records");
    assert!(
        in_flight.input_bytes > 0 && in_flight.output_bytes == 0,
        "{in_flight:?}"
    );
    finish_with_final_checkpoint(
        handle,
        &rx,
        CheckpointBarrier {
            id: 2,
            timestamp_ms: 0,
            options: CheckpointOptions::aligned_checkpoint(),
        },
    );
    let all = keyed_sum_rows(&collect);
    assert_eq!(all[0], "(0,6,235)");

    // Restored: the state holds 0..10, the in-flight data 10..20; channel 0 sends what
    // followed its barrier again.
    let net = self::net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let config = restore_config(&layout, 1, storage, snapshots);
    let task = agg_task(&job, &mut ios, config, &collect);
    let (mut ch0, mut ch1) = (output(&mut ios, 0, 0), output(&mut ios, 0, 1));
    ch0.emit(&mut records(100..110), &[0; 10]).unwrap();
    ch0.emit_event(StreamEvent::EndOfInput).unwrap();
    ch1.emit_event(StreamEvent::EndOfInput).unwrap();
    assert!(matches!(task.run(), TaskOutcome::Finished(_)));
    assert_eq!(
        keyed_sum_rows(&collect),
        all,
        "every record exactly once after the restore"
    );
}

/// An aligned checkpoint barrier queued behind a backpressured output for longer than
/// the aligned-checkpoint timeout turns unaligned *there*: it moves ahead of the queued
/// records, which the producer stores as its output in-flight data, and the consumer
/// (that has read nothing yet) snapshots when the unaligned barrier arrives. Restored
/// from that checkpoint, the producer replays the overtaken records before anything
/// else, and every record is counted exactly once.
#[test]
fn a_barrier_stuck_in_a_backpressured_output_turns_unaligned_and_restores_exactly_once() {
    use crate::checkpoint::{CheckpointBarrier, CheckpointOptions};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    const ROWS: i64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let job = {
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::datagen(DatagenConfig {
            rows: Some(ROWS as u64),
            rate: Some(10_000.0),
            batch_size: 100,
            ..DatagenConfig::default()
        }))
        .key_by(key::by_i64_mod(5))
        .process(builtins::count_sum_per_key(false))
        .uid("keyed-sum-agg")
        .sink(builtins::collect(jobs::KEYED_SUM_COLLECT_ID));
        Arc::new(env.job_graph("stuck-barrier").unwrap())
    };
    let barrier = |id| CheckpointBarrier {
        id,
        timestamp_ms: crate::checkpoint::wall_clock_ms(),
        options: CheckpointOptions::aligned_checkpoint(),
    };
    let source_task = |ios: &mut BTreeMap<(VertexId, u32), NetworkTaskIo>, config| {
        let outputs = std::mem::take(&mut ios.get_mut(&(VertexId(0), 0)).unwrap().outputs);
        let env = TaskEnvironment {
            registry: Arc::new(OperatorRegistry::new()),
            collect: None,
            config,
        };
        StreamTask::new(job.clone(), VertexId(0), 0, env, None, outputs).unwrap()
    };
    let with_timeout = |mut config: TaskConfig| {
        if let Some(c) = &mut config.checkpointing {
            c.aligned_timeout = Some(Duration::from_millis(50));
        }
        config
    };
    let net = net();
    let mut ios = wire(&net, &job);
    let (source_config, source_rx) = exactly_once_config(dir.path(), &storage, &layout);
    let (agg_config, agg_rx) = exactly_once_config(dir.path(), &storage, &layout);
    let source = source_task(&mut ios, with_timeout(source_config))
        .spawn(|_| {})
        .unwrap();
    // Nobody reads the source's output yet: after ~100 ms of records, checkpoint 1's
    // barrier queues behind them and times out there after 50 ms.
    std::thread::sleep(Duration::from_millis(100));
    source
        .mailbox()
        .send(Mail::TriggerCheckpoint(barrier(1)))
        .unwrap();
    let Reported::Ack(1, source_snapshots) = source_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the source acknowledges once its barrier turned unaligned")
    else {
        panic!("checkpoint 1 acknowledged")
    };
    let in_flight = source_snapshots
        .iter()
        .find_map(|s| s.snapshot.in_flight.clone())
        .expect("the overtaken records are stored with the source's checkpoint");
    assert!(
        in_flight.output_bytes > 0 && in_flight.input_bytes == 0,
        "{in_flight:?}"
    );
    // The consumer starts now: the unaligned barrier is the first thing it reads.
    let collect = Arc::new(CollectBuffer::new());
    let agg = agg_task(&job, &mut ios, with_timeout(agg_config), &collect)
        .spawn(|_| {})
        .unwrap();
    finish_with_final_checkpoint(source, &source_rx, barrier(2));
    // The aggregate takes checkpoint 1 (unaligned) and 2 (aligned), and its input ends.
    let (mut agg_snapshots, mut acked_2, mut ended) = (None, false, false);
    while agg_snapshots.is_none() || !acked_2 || !ended {
        match agg_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a report")
        {
            Reported::Ack(1, s) => agg_snapshots = Some(s),
            Reported::Ack(2, _) => acked_2 = true,
            Reported::InputEnded => ended = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let agg_snapshots = agg_snapshots.expect("checkpoint 1 acknowledged");
    agg.mailbox()
        .send(Mail::CheckpointComplete { id: 2, last: true })
        .unwrap();
    assert!(matches!(agg.join(), TaskOutcome::Finished(_)));
    let all = keyed_sum_rows(&collect);
    let expected: Vec<String> = {
        let mut rows: Vec<String> = (0..5)
            .map(|k| {
                let ids = (0..ROWS).filter(|i| i % 5 == k);
                format!("({k},{},{})", ids.clone().count(), ids.sum::<i64>())
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(all, expected);

    // Restored from checkpoint 1: the source replays the overtaken records, then
    // continues after its checkpointed position.
    let net = self::net();
    let mut ios = wire(&net, &job);
    let source_config = restore_config(&layout, 1, storage.clone(), source_snapshots);
    let agg_config = restore_config(&layout, 1, storage, agg_snapshots);
    let source = source_task(&mut ios, source_config);
    let collect = Arc::new(CollectBuffer::new());
    let agg = agg_task(&job, &mut ios, agg_config, &collect);
    let source = std::thread::spawn(move || source.run());
    assert!(matches!(agg.run(), TaskOutcome::Finished(_)));
    assert!(matches!(source.join().unwrap(), TaskOutcome::Finished(_)));
    assert_eq!(
        keyed_sum_rows(&collect),
        expected,
        "every record exactly once after the restore"
    );
}

/// Counts per key and input; every record arms an event-time timer at its timestamp,
/// which emits `(key, count of input 1, count of input 2, timer)`; at end of input each
/// key emits `(key, count 1, count 2, -1)`.
struct CountBoth;
impl co_process::KeyedCoProcessFunction for CountBoth {
    type State = (i64, i64);
    fn process1(
        &mut self,
        _: &Value,
        s: &mut (i64, i64),
        _: &Value,
        ctx: &mut ProcessContext<'_>,
        _: &mut operator::Collector<'_>,
    ) -> Result<()> {
        s.0 += 1;
        if let Some(t) = ctx.timestamp() {
            ctx.timer_service().register_event_time_timer(t);
        }
        Ok(())
    }
    fn process2(
        &mut self,
        _: &Value,
        s: &mut (i64, i64),
        _: &Value,
        ctx: &mut ProcessContext<'_>,
        _: &mut operator::Collector<'_>,
    ) -> Result<()> {
        s.1 += 1;
        if let Some(t) = ctx.timestamp() {
            ctx.timer_service().register_event_time_timer(t);
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        t: i64,
        key: &Value,
        s: &mut (i64, i64),
        _: &mut ProcessContext<'_>,
        out: &mut operator::Collector<'_>,
    ) -> Result<()> {
        out.collect(Value::Tuple(vec![
            key.clone(),
            s.0.into(),
            s.1.into(),
            t.into(),
        ]));
        Ok(())
    }
    fn on_end_of_input(
        &mut self,
        key: &Value,
        s: &mut (i64, i64),
        out: &mut operator::Collector<'_>,
    ) -> Result<()> {
        out.collect(Value::Tuple(vec![
            key.clone(),
            s.0.into(),
            s.1.into(),
            (-1).into(),
        ]));
        Ok(())
    }
}

/// Two sources (vertices 0 and 1), each keyed by field 0 into one `test.count_both`
/// subtask (vertex 2) collecting into `out`: its channel 0 is input 1, channel 1 input 2.
fn connected_job() -> (Arc<JobGraph>, Arc<OperatorRegistry>) {
    let mut registry = OperatorRegistry::new();
    registry
        .register_keyed_co_process("test.count_both", |()| Ok(CountBoth))
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    let a = env.add_source(builtins::collection(vec![]));
    let b = env.add_source(builtins::collection(vec![]));
    a.key_by(key::by_field(0))
        .connect(&b.key_by(key::by_field(0)))
        .process(FactoryRef::unit("test.count_both"))
        .sink(builtins::collect("out"));
    let job = env.job_graph("connected").unwrap();
    job.validate(&registry).unwrap();
    (Arc::new(job), Arc::new(registry))
}

fn pair(k: &str, t: i64) -> StreamRecord {
    StreamRecord::with_timestamp(Value::Tuple(vec![k.into(), t.into()]), t)
}

fn sorted_rows(c: &CollectBuffer) -> Vec<String> {
    let mut r: Vec<String> = c
        .take()
        .remove("out")
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    r.sort();
    r
}

/// A keyed two-input task: records of input 1 and input 2 with equal keys share state;
/// event time is the minimum of both inputs' watermarks (input 2's 50 holds back input
/// 1's 100), and end of input comes after both inputs ended.
#[test]
fn two_input_task_shares_keyed_state_and_combines_watermarks() {
    let (job, registry) = connected_job();
    let w = job.wiring(VertexId(2), 0).unwrap();
    assert_eq!(
        w.input_sides(&job),
        [two_input::InputSide::First, two_input::InputSide::Second]
    );
    let net = net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let env = TaskEnvironment {
        registry,
        collect: Some(collect.clone()),
        config: TaskConfig::default(),
    };
    let task = StreamTask::new(
        job,
        VertexId(2),
        0,
        env,
        Some(input(&mut ios, 2, 0)),
        vec![],
    )
    .unwrap();
    let (mut in1, mut in2) = (output(&mut ios, 0, 0), output(&mut ios, 1, 0));
    // Out of order on input 1: 40 after 90.
    in1.emit(
        &mut vec![pair("a", 90), pair("a", 40), pair("b", 60)],
        &[0; 3],
    )
    .unwrap();
    in2.emit(&mut vec![pair("a", 30), pair("b", 70)], &[0; 2])
        .unwrap();
    in1.emit_event(StreamEvent::Watermark(100)).unwrap();
    in2.emit_event(StreamEvent::Watermark(50)).unwrap();
    // Nothing past 50 has fired when input 1 ends (its end is not the final watermark
    // of the task while input 2 is open); input 2's end then fires the rest.
    in1.emit_event(StreamEvent::EndOfInput).unwrap();
    in1.flush().unwrap();
    in2.flush().unwrap();
    let handle = task.spawn(|_| {}).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut fired = Vec::new();
    while fired.len() < 2 && std::time::Instant::now() < deadline {
        fired.extend(sorted_rows(&collect));
        std::thread::yield_now();
    }
    fired.sort();
    // Timers at 30 and 40 of key a (both inputs' records counted by then).
    assert_eq!(fired, ["(a,2,1,30)", "(a,2,1,40)"]);
    in2.emit(&mut vec![pair("b", 80)], &[0]).unwrap();
    in2.emit_event(StreamEvent::EndOfInput).unwrap();
    assert!(matches!(handle.join(), TaskOutcome::Finished(_)));
    assert_eq!(
        sorted_rows(&collect),
        [
            "(a,2,1,-1)",
            "(a,2,1,90)",
            "(b,1,2,-1)",
            "(b,1,2,60)",
            "(b,1,2,70)",
            "(b,1,2,80)"
        ]
    );
}

/// Exactly-once alignment across both inputs of a two-input task: input 1's records
/// behind its barrier stay out of checkpoint 1 until input 2's barrier arrived; a task
/// restored from the checkpoint holds exactly the records of both inputs before the
/// barriers.
#[test]
fn two_input_task_aligns_barriers_across_both_inputs() {
    use crate::checkpoint::{CheckpointBarrier, CheckpointEvent, CheckpointOptions};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), "job");
    let (job, registry) = connected_job();
    let make = |config: TaskConfig, ios: &mut BTreeMap<_, _>, collect: &Arc<CollectBuffer>| {
        StreamTask::new(
            job.clone(),
            VertexId(2),
            0,
            TaskEnvironment {
                registry: registry.clone(),
                collect: Some(collect.clone()),
                config,
            },
            Some(input(ios, 2, 0)),
            vec![],
        )
        .unwrap()
    };
    let barrier = |id| CheckpointBarrier {
        id,
        timestamp_ms: 0,
        options: CheckpointOptions::aligned_checkpoint(),
    };
    let net = net();
    let mut ios = wire(&net, &job);
    let (config, rx) = exactly_once_config(dir.path(), &storage, &layout);
    let collect = Arc::new(CollectBuffer::new());
    let task = make(config, &mut ios, &collect);
    let (mut in1, mut in2) = (output(&mut ios, 0, 0), output(&mut ios, 1, 0));
    // Input 1: a, barrier 1, a a. Input 2: b b, barrier 1, b.
    in1.emit(&mut vec![pair("a", 1)], &[0]).unwrap();
    in1.emit_checkpoint_event(CheckpointEvent::Barrier(barrier(1)))
        .unwrap();
    in1.emit(&mut vec![pair("a", 2), pair("a", 3)], &[0; 2])
        .unwrap();
    in1.flush().unwrap();
    let handle = task.spawn(|_| {}).unwrap();
    in2.emit(&mut vec![pair("b", 1), pair("b", 2)], &[0; 2])
        .unwrap();
    in2.emit_checkpoint_event(CheckpointEvent::Barrier(barrier(1)))
        .unwrap();
    in2.emit(&mut vec![pair("b", 3)], &[0]).unwrap();
    in1.emit_event(StreamEvent::EndOfInput).unwrap();
    in2.emit_event(StreamEvent::EndOfInput).unwrap();
    let snapshots = ack_and_input_end(&rx, 1);
    finish_with_final_checkpoint(handle, &rx, barrier(2));
    let finals: Vec<String> = sorted_rows(&collect)
        .into_iter()
        .filter(|r| r.ends_with(",-1)"))
        .collect();
    assert_eq!(finals, ["(a,3,0,-1)", "(b,0,3,-1)"]);

    let net = self::net();
    let mut ios = wire(&net, &job);
    let collect = Arc::new(CollectBuffer::new());
    let task = make(
        restore_config(&layout, 1, storage, snapshots),
        &mut ios,
        &collect,
    );
    let (mut in1, mut in2) = (output(&mut ios, 0, 0), output(&mut ios, 1, 0));
    in1.emit_event(StreamEvent::EndOfInput).unwrap();
    in2.emit_event(StreamEvent::EndOfInput).unwrap();
    assert!(matches!(task.run(), TaskOutcome::Finished(_)));
    // Restored: a's one record before input 1's barrier, b's two before input 2's (and
    // their timers, restored with the state, fire at the final watermark).
    assert_eq!(
        sorted_rows(&collect),
        [
            "(a,1,0,-1)",
            "(a,1,0,1)",
            "(b,0,2,-1)",
            "(b,0,2,1)",
            "(b,0,2,2)"
        ]
    );
}

/// A graph whose two-input operator lacks an input, or whose one-input operator has an
/// input 2, is refused at submission.
#[test]
fn two_input_graphs_are_checked() {
    let (job, registry) = connected_job();
    let mut missing = (*job).clone();
    missing
        .edges
        .retain(|e| e.input == two_input::InputSide::First);
    missing.vertices.remove(1);
    assert!(missing.validate(&registry).is_err());
    let mut one = (*job).clone();
    one.vertices[2].operators[0].spec.kind = OperatorKind::Process;
    one.vertices[2].operators[0].spec.key2 = None;
    assert!(
        matches!(one.validate(&registry), Err(DataflowError::InvalidGraph(m)) if m.contains("input 2"))
    );
}
