//! Whole jobs over the real data plane: every subtask's I/O from `create_task_io`, on one
//! network environment (local channels) or on two (QUIC loopback between them), results
//! compared with the exact expected output.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rill_dataflow::builtins::{self, DatagenConfig};
use rill_dataflow::collect::CollectSink;
use rill_dataflow::jobs;
use rill_dataflow::*;
use rill_network::{NetworkConfig, NetworkEnvironment, PartitionId};
use rill_runtime::security::ClusterSecret;

/// Longest any test waits for tasks to end.
const WAIT: Duration = Duration::from_secs(60);

fn net_config() -> NetworkConfig {
    NetworkConfig {
        // Small segments and memory: records span buffers and writers hit backpressure.
        memory: 512 * 4096,
        segment_size: 4096,
        request_backoff_initial: Duration::from_millis(5),
        ..NetworkConfig::default()
    }
}

/// One "TaskExecutor": its network environment and, if started, its transport address.
struct Node {
    net: NetworkEnvironment,
    addr: Option<SocketAddr>,
}

fn local_node() -> Node {
    Node {
        net: NetworkEnvironment::new(net_config()).unwrap(),
        addr: None,
    }
}

fn remote_nodes(rt: &tokio::runtime::Runtime, n: usize) -> Vec<Node> {
    let _guard = rt.enter();
    let secret = ClusterSecret::generate();
    (0..n)
        .map(|_| {
            let net = NetworkEnvironment::new(net_config()).unwrap();
            let addr = net
                .start_transport("127.0.0.1:0".parse().unwrap(), secret.clone())
                .unwrap();
            Node {
                net,
                addr: Some(addr),
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The partition subtask `subtask` creates for edge `edge` (unique per job).
fn pid(edge: usize, subtask: u32) -> PartitionId {
    PartitionId(((edge as u128 + 1) << 32) | u128::from(subtask))
}

fn registry() -> Arc<OperatorRegistry> {
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
    Arc::new(r)
}

/// Deploys every subtask of `job` as a TaskExecutor would: in topological order, each
/// on `nodes[place(vertex, subtask)]`, channels local within a node and remote across.
/// Returns the tasks (not started) and the partitions per node.
fn deploy(
    job: &Arc<JobGraph>,
    nodes: &[Node],
    place: &dyn Fn(VertexId, u32) -> usize,
    collect: Arc<dyn CollectSink>,
    config: TaskConfig,
) -> (Vec<StreamTask>, Vec<Vec<PartitionId>>) {
    let registry = registry();
    job.validate(&registry).unwrap();
    let env = TaskEnvironment {
        registry,
        collect: Some(collect),
        config,
    };
    let mut tasks = Vec::new();
    let mut partitions = vec![Vec::new(); nodes.len()];
    for v in job.topological_order().unwrap() {
        let parallelism = job.vertex(v).unwrap().parallelism;
        for s in 0..parallelism {
            let node = place(v, s);
            let outputs: Vec<OutputSpec> = job
                .output_edges(v)
                .map(|(e, _)| OutputSpec {
                    partition: pid(e, s),
                })
                .collect();
            let inputs = input_channel_specs(job, v, s, |edge, upstream| {
                let producer = place(job.edges[edge].source, upstream);
                let location = if producer == node {
                    ChannelLocation::Local
                } else {
                    ChannelLocation::Remote(nodes[producer].addr.expect("transport started"))
                };
                Ok((pid(edge, upstream), location))
            })
            .unwrap();
            let io =
                create_task_io(&nodes[node].net, job, v, s, &outputs, inputs, &env.config).unwrap();
            partitions[node].extend(io.partitions);
            tasks.push(
                StreamTask::new(job.clone(), v, s, env.clone(), io.input, io.outputs).unwrap(),
            );
        }
    }
    (tasks, partitions)
}

/// Joins every handle within [`WAIT`], panicking with a message otherwise.
fn join_all(handles: Vec<TaskHandle>) -> Vec<TaskOutcome> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcomes: Vec<TaskOutcome> = handles.into_iter().map(TaskHandle::join).collect();
        let _ = tx.send(outcomes);
    });
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("tasks did not end within {WAIT:?}"))
}

/// Runs `job` to the end on `nodes` and returns what its collect sinks produced.
fn run(
    job: &JobGraph,
    nodes: &[Node],
    place: &dyn Fn(VertexId, u32) -> usize,
) -> BTreeMap<String, Vec<Value>> {
    let job = Arc::new(job.clone());
    let collect = Arc::new(CollectBuffer::new());
    let (tasks, partitions) = deploy(&job, nodes, place, collect.clone(), TaskConfig::default());
    let handles: Vec<TaskHandle> = tasks
        .into_iter()
        .map(|t| t.spawn(|_| {}).unwrap())
        .collect();
    for outcome in join_all(handles) {
        assert!(matches!(outcome, TaskOutcome::Finished(_)), "{outcome:?}");
    }
    // Every task ended, so every consumer is done: release (DESIGN: at job end).
    for (node, ids) in nodes.iter().zip(partitions) {
        for id in ids {
            node.net.release_partition(id);
        }
    }
    collect.take()
}

/// Subtask 0 on node 0, subtask 1 on node 1, subtask 2 on node 0, ...
fn by_subtask(_: VertexId, subtask: u32) -> usize {
    subtask as usize % 2
}

fn check_keyed_sum(nodes: &[Node], place: &dyn Fn(VertexId, u32) -> usize) {
    let (rows, keys) = (100_000, 100);
    let job = jobs::keyed_sum(Some(rows), keys, None, 2).unwrap();
    let collected = run(&job, nodes, place);
    let out = collected
        .get(jobs::KEYED_SUM_COLLECT_ID)
        .map_or(&[][..], Vec::as_slice);
    assert_eq!(out.len(), keys as usize);
    let expected = jobs::expected_keyed_sum_checksum(rows, keys);
    assert_eq!(jobs::keyed_sum_checksum(out).unwrap(), expected);
}

fn check_wordcount(nodes: &[Node], place: &dyn Fn(VertexId, u32) -> usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut text = String::new();
    for i in 0..2000 {
        let line = format!(
            "The quick fox {} jumps over the lazy DOG w{}",
            i % 7,
            i % 101
        );
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
    let out = dir.path().join("net.txt");
    let job = jobs::wordcount(input.to_str().unwrap(), out.to_str().unwrap(), 2).unwrap();
    run(&job, nodes, place);
    // The sink sees both count subtasks interleaved: compare as sets of lines.
    let mut got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|(w, n)| format!("({w},{n})")).collect();
    want.sort();
    assert!(got.contains(&"(the,4000)".to_owned()), "{got:?}");
    assert_eq!(got, want);
}

/// Union of two sources, filter+map, then rebalance, rescale and broadcast sinks: every
/// partitioning and an input gate fed by two edges.
fn check_all_partitionings(nodes: &[Node], place: &dyn Fn(VertexId, u32) -> usize) {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(3);
    let a = env.add_source(builtins::datagen(DatagenConfig::bounded(5000)));
    let b = env
        .add_source(builtins::collection(
            (100_000..100_010).map(Value::I64).collect(),
        ))
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
        .rescale()
        .sink(builtins::collect("rescaled"))
        .parallelism(4);
    merged
        .broadcast()
        .sink(builtins::collect("bcast"))
        .parallelism(3);
    let job = env.job_graph("partitionings").unwrap();
    let net = run(&job, nodes, place);
    let sorted = |v: &[Value]| {
        let mut v: Vec<i64> = v.iter().filter_map(Value::as_i64).collect();
        v.sort_unstable();
        v
    };
    let expected: Vec<i64> = (0..5000)
        .chain(100_000..100_010)
        .filter(|x| x % 2 == 0)
        .map(|x| x * 10)
        .collect();
    let mut thrice: Vec<i64> = expected.iter().flat_map(|x| [*x; 3]).collect();
    thrice.sort_unstable();
    for (id, want) in [
        ("all", &expected),
        ("rescaled", &expected),
        ("bcast", &thrice),
    ] {
        let got = sorted(net.get(id).map_or(&[][..], Vec::as_slice));
        assert_eq!(&got, want, "{id}");
    }
}

#[test]
fn keyed_sum_on_one_environment_is_exact() {
    let node = local_node();
    check_keyed_sum(std::slice::from_ref(&node), &|_, _| 0);
    // Every pool went home: writers, gates and released partitions returned their
    // segments.
    assert_eq!(node.net.buffer_pool().segments_in_use(), 0);
}

#[test]
fn wordcount_on_one_environment_is_exact() {
    check_wordcount(&[local_node()], &|_, _| 0);
}

#[test]
fn all_partitionings_on_one_environment_are_exact() {
    check_all_partitionings(&[local_node()], &|_, _| 0);
}

#[test]
fn keyed_sum_across_two_environments_is_exact() {
    let rt = runtime();
    let nodes = remote_nodes(&rt, 2);
    check_keyed_sum(&nodes, &by_subtask);
    // The hash edge crossed the environments over QUIC.
    for node in &nodes {
        assert!(node.net.transport().unwrap().num_connections() > 0);
    }
}

#[test]
fn wordcount_and_all_partitionings_across_two_environments() {
    let rt = runtime();
    let nodes = remote_nodes(&rt, 2);
    check_wordcount(&nodes, &by_subtask);
    check_all_partitionings(&nodes, &by_subtask);
}

/// A CollectSink that forwards values with their subtask to a channel, so a test can
/// wait for them.
struct Forward(crossbeam_channel::Sender<(u32, Value)>);

impl CollectSink for Forward {
    fn collect(&self, _id: &str, subtask: u32, values: Vec<Value>) -> Result<()> {
        for v in values {
            let _ = self.0.send((subtask, v));
        }
        Ok(())
    }
}

/// A slow unbounded source: its records reach the sink through the buffer timeout (no
/// buffer ever fills), and cancel reaches the sink blocked on its network input.
#[test]
fn slow_source_records_arrive_and_cancel_wakes_blocked_tasks() {
    let rt = runtime();
    let nodes = remote_nodes(&rt, 2);
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig {
        rate: Some(200.0),
        ..DatagenConfig::default()
    }))
    .rebalance()
    .sink(builtins::collect("slow"))
    .parallelism(2);
    let job = Arc::new(env.job_graph("slow").unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = TaskConfig {
        buffer_timeout: Duration::from_millis(20),
        ..TaskConfig::default()
    };
    let (tasks, partitions) = deploy(&job, &nodes, &by_subtask, Arc::new(Forward(tx)), config);
    let mut handles: Vec<TaskHandle> = tasks
        .into_iter()
        .map(|t| t.spawn(|_| {}).unwrap())
        .collect();
    // Both sink subtasks (one local to the source, one remote) receive records.
    let mut seen = [0usize; 2];
    while seen.iter().any(|n| *n < 10) {
        let (subtask, _) = rx
            .recv_timeout(WAIT)
            .expect("records of a slow source must arrive within the buffer timeout");
        seen[subtask as usize] += 1;
    }
    // Deployment order: the source first, then the two sinks. Cancel consumers first,
    // so that they see their cancel mail rather than the released partition.
    let source = handles.remove(0);
    for h in &handles {
        assert!(h.cancel());
    }
    for outcome in join_all(handles) {
        assert!(matches!(outcome, TaskOutcome::Canceled), "{outcome:?}");
    }
    assert!(source.cancel());
    for outcome in join_all(vec![source]) {
        assert!(matches!(outcome, TaskOutcome::Canceled), "{outcome:?}");
    }
    for (node, ids) in nodes.iter().zip(partitions) {
        for id in ids {
            node.net.release_partition(id);
        }
    }
}

#[test]
fn wrong_number_of_specs_is_an_error() {
    let node = local_node();
    let job = jobs::keyed_sum(Some(10), 2, None, 2).unwrap();
    let config = TaskConfig::default();
    let sink = VertexId(1);
    assert_eq!(job.wiring(sink, 0).unwrap().inputs.len(), 2);
    let one = vec![InputChannelSpec {
        partition: pid(0, 0),
        subpartition: 0,
        location: ChannelLocation::Local,
    }];
    let err = create_task_io(&node.net, &job, sink, 0, &[], one, &config).unwrap_err();
    assert!(matches!(err, DataflowError::InvalidGraph(_)), "{err}");
    assert!(err.to_string().contains("2 input channels"), "{err}");
    // The source has one output edge; no output spec is an error too.
    let err = create_task_io(&node.net, &job, VertexId(0), 0, &[], vec![], &config).unwrap_err();
    assert!(err.to_string().contains("1 output edges"), "{err}");
    assert_eq!(node.net.partitions().len(), 0);
}

#[test]
fn local_channel_to_unregistered_partition_names_it_and_cleans_up() {
    let node = local_node();
    // datagen (2) -rebalance-> map (1) -rebalance-> blackhole (1): the map has inputs
    // and an output.
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(10)))
        .parallelism(2)
        .rebalance()
        .map(FactoryRef::unit("t.times10"))
        .rebalance()
        .sink(builtins::blackhole());
    let job = env.job_graph("t").unwrap();
    assert_eq!(job.vertices.len(), 3);
    let (source, map) = (VertexId(0), VertexId(1));
    let config = TaskConfig::default();
    // Only source subtask 0 is deployed; the map's channel 1 reads subtask 1's partition.
    // (Kept alive: an output dropped before end of input releases its partition.)
    let _producer = create_task_io(
        &node.net,
        &job,
        source,
        0,
        &[OutputSpec {
            partition: pid(0, 0),
        }],
        vec![],
        &config,
    )
    .unwrap();
    let inputs = input_channel_specs(&job, map, 0, |edge, up| {
        Ok((pid(edge, up), ChannelLocation::Local))
    })
    .unwrap();
    let outputs = [OutputSpec {
        partition: pid(1, 0),
    }];
    let err = create_task_io(&node.net, &job, map, 0, &outputs, inputs, &config).unwrap_err();
    assert!(matches!(err, DataflowError::Network { .. }), "{err}");
    let message = err.to_string();
    let missing = pid(0, 1);
    assert!(message.contains(&missing.to_string()), "{message}");
    assert!(message.contains("not found"), "{message}");
    // The map's own partition, created before the failure, is unregistered again.
    assert!(node.net.partitions().get(pid(1, 0)).is_err());
    assert_eq!(node.net.partitions().len(), 1);
}

#[test]
fn input_channel_specs_follow_the_graphs_channel_order() {
    let env = StreamExecutionEnvironment::new();
    let a = env
        .add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .parallelism(3);
    let b = env
        .add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .parallelism(4);
    a.union(&[&b.rescale()])
        .rescale()
        .sink(builtins::blackhole())
        .parallelism(2);
    let job = env.job_graph("t").unwrap();
    let sink = VertexId(job.vertices.len() as u32 - 1);
    for s in 0..2 {
        let mut producers = Vec::new();
        let specs = input_channel_specs(&job, sink, s, |edge, up| {
            producers.push((edge, up));
            Ok((pid(edge, up), ChannelLocation::Local))
        })
        .unwrap();
        let wiring = job.wiring(sink, s).unwrap();
        assert_eq!(specs.len(), wiring.inputs.len());
        for (((edge, up), spec), channel) in producers.iter().zip(&specs).zip(&wiring.inputs) {
            assert_eq!((*edge, *up), (channel.edge, channel.upstream));
            assert_eq!(spec.partition, pid(*edge, *up));
            assert_eq!(spec.subpartition, channel.subpartition);
            // The producer's partition for that edge has that subpartition for `s`.
            let producer = job.wiring(job.edges[*edge].source, *up).unwrap();
            let consumers = producer.outputs[channel.output].consumers.clone();
            assert_eq!(consumers.start + spec.subpartition, s);
        }
    }
}
