//! Whole jobs on the in-process executor, the MiniCluster: built-in jobs at several
//! parallelisms, every partitioning, keyed reduce, failing and panicking user code,
//! cancel, submission errors, file and socket I/O. Results are compared with the exact
//! expected output.
//!
//! Most tests run with local gateways and local data channels (the normal in-process
//! path); the keyed-sum at p = 4 runs across two TaskManagers with everything forced
//! over the wire. Small network buffers make records span buffers and writers hit
//! backpressure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rill_dataflow::builtins::{self, DatagenConfig};
use rill_dataflow::{
    jobs, key, DataflowError, FactoryRef, JobGraph, JobId, OperatorRegistry,
    StreamExecutionEnvironment, Value,
};
use rill_endpoints::dispatcher_gateway::Gateway as DispatcherGateway;
use rill_endpoints::{
    ClusterError, JobResult, JobStatus, MiniCluster, MiniClusterOptions, RillConfig,
};
use rill_runtime::security::ClusterSecret;
use rill_runtime::{RpcService, RpcServiceConfig};

/// Longest a test waits for a job to reach a state.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// The test operators, on top of the built-ins.
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
    r.register_process("t.odd_to_side", |()| Ok(OddToSide))
        .unwrap();
    Arc::new(r)
}

/// Emits even values, sends odd ones to the side output `odd`.
struct OddToSide;

impl rill_dataflow::KeyedProcessFunction for OddToSide {
    type State = ();
    fn process(
        &mut self,
        _: &Value,
        _: &mut (),
        v: &Value,
        ctx: &mut rill_dataflow::ProcessContext<'_>,
        out: &mut rill_dataflow::Collector<'_>,
    ) -> rill_dataflow::Result<()> {
        if v.as_i64().is_some_and(|x| x % 2 != 0) {
            ctx.output(
                &rill_dataflow::side_output::OutputTag::new("odd"),
                v.clone(),
            );
        } else {
            out.collect(v.clone());
        }
        Ok(())
    }
}

struct Cluster {
    cluster: MiniCluster,
    client: RpcService,
    dispatcher: DispatcherGateway,
}

/// A MiniCluster of `task_managers` × `slots`, every slot registered.
async fn start(task_managers: u32, slots: u32, force_remote: bool) -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RILL_LOG"))
        .with_test_writer()
        .try_init();
    let mut config = RillConfig::default();
    config.taskmanager.number_of_task_slots = slots;
    config.taskmanager.network.segment_size = 4096;
    config.taskmanager.network.memory = 1024 * 4096;
    let secret = ClusterSecret::generate();
    let cluster = MiniCluster::start(
        &config,
        &MiniClusterOptions {
            task_managers,
            force_remote,
            ..MiniClusterOptions::default()
        },
        &secret,
        registry(),
    )
    .expect("mini-cluster starts");
    // The client is another process, as an admin tool would be.
    let mut client_config = RpcServiceConfig::local(secret);
    client_config.local_calls = rill_runtime::LocalCalls::Never;
    let client = RpcService::start(client_config).unwrap();
    let dispatcher: DispatcherGateway = client
        .connect(&cluster.jobmanager().dispatcher_address())
        .await
        .unwrap();
    let want = task_managers * slots;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tms = dispatcher.list_task_managers().await.unwrap().unwrap();
        if tms.iter().map(|t| t.slots_total).sum::<u32>() == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots not registered"
        );
        tokio::time::sleep(POLL).await;
    }
    Cluster {
        cluster,
        client,
        dispatcher,
    }
}

impl Cluster {
    async fn submit(&self, job: JobGraph) -> JobId {
        self.dispatcher.submit_job(job).await.unwrap().unwrap()
    }

    async fn wait_for(&self, job: JobId, done: impl Fn(JobStatus) -> bool) -> JobStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.dispatcher.job_status(job).await.unwrap().unwrap();
            if done(s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job} still {s:?} after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `job` to a terminal state and returns its result.
    async fn run(&self, job: JobGraph) -> JobResult {
        let id = self.submit(job).await;
        self.wait_for(id, JobStatus::is_terminal).await;
        self.dispatcher
            .request_job_result(id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Runs `job` and checks that it finished.
    async fn run_finished(&self, job: JobGraph) -> JobResult {
        let result = self.run(job).await;
        assert_eq!(
            result.status,
            JobStatus::Finished,
            "failure: {:?}",
            result.failure
        );
        result
    }

    async fn stop(self) {
        self.client.shutdown().await;
        self.cluster.shutdown().await;
    }
}

fn collected<'a>(result: &'a JobResult, id: &str) -> &'a [Value] {
    result.collected.get(id).map_or(&[], Vec::as_slice)
}

fn sorted_i64(values: &[Value]) -> Vec<i64> {
    let mut v: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
    v.sort_unstable();
    v
}

async fn wordcount_at(c: &Cluster, parallelism: u32) {
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
    c.run_finished(job).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_at_parallelism_1_and_4() {
    let c = start(1, 4, false).await;
    wordcount_at(&c, 1).await;
    wordcount_at(&c, 4).await;
    c.stop().await;
}

async fn keyed_sum_at(c: &Cluster, parallelism: u32) {
    let (rows, keys) = (100_003, 97);
    let result = c
        .run_finished(jobs::keyed_sum(Some(rows), keys, None, parallelism).unwrap())
        .await;
    let out = collected(&result, jobs::KEYED_SUM_COLLECT_ID);
    assert_eq!(out.len(), keys as usize);
    assert_eq!(
        jobs::keyed_sum_checksum(out).unwrap(),
        jobs::expected_keyed_sum_checksum(rows, keys)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_sum_at_parallelism_1_and_4() {
    let c = start(1, 4, false).await;
    keyed_sum_at(&c, 1).await;
    keyed_sum_at(&c, 4).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_sum_at_parallelism_4_across_task_managers_over_the_wire() {
    let c = start(2, 2, true).await;
    keyed_sum_at(&c, 4).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_filter_union_rebalance_broadcast() {
    let c = start(1, 4, false).await;
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
    let result = c.run_finished(env.job_graph("t").unwrap()).await;
    let expected: Vec<i64> = (0..50)
        .chain(100..110)
        .filter(|x| x % 2 == 0)
        .map(|x| x * 10)
        .collect();
    assert_eq!(sorted_i64(collected(&result, "all")), expected);
    let mut thrice: Vec<i64> = expected.iter().flat_map(|x| [*x; 3]).collect();
    thrice.sort_unstable();
    assert_eq!(sorted_i64(collected(&result, "bcast")), thrice);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_emits_running_sums_per_key() {
    let c = start(1, 2, false).await;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.add_source(builtins::collection((1..=6).map(Value::I64).collect()))
        .key_by(key::by_i64_mod(2))
        .reduce(builtins::sum())
        .sink(builtins::collect("sums"));
    let result = c.run_finished(env.job_graph("t").unwrap()).await;
    // Odd key: 1, 4, 9; even key: 2, 6, 12 — whatever the interleaving, each partial sum once.
    assert_eq!(
        sorted_i64(collected(&result, "sums")),
        vec![1, 2, 4, 6, 9, 12]
    );
    c.stop().await;
}

/// Runs an unbounded job whose user code fails and checks that the job fails (no
/// restart strategy without checkpointing) with that failure as its cause, and that
/// every other task was stopped: the slots are free for the next job.
async fn fails_with(c: &Cluster, job: JobGraph, cause: &str) {
    let result = c.run(job).await;
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.unwrap_or_default();
    assert!(failure.contains(cause), "{failure}");
    keyed_sum_at(c, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_failure_fails_the_job_and_cancels_the_rest() {
    let c = start(1, 2, false).await;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.add_source(builtins::datagen(DatagenConfig::default())) // unbounded
        .map(FactoryRef::new("t.fail_at", &5_000i64).unwrap())
        .rebalance()
        .sink(builtins::blackhole());
    fails_with(&c, env.job_graph("t").unwrap(), "saw 5000").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_panic_fails_the_job_and_cancels_the_rest() {
    let c = start(1, 2, false).await;
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::default())) // unbounded
        .rebalance()
        .map(FactoryRef::new("t.panic_at", &100i64).unwrap())
        .sink(builtins::blackhole());
    fails_with(&c, env.job_graph("t").unwrap(), "user code panicked").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_directory_gets_one_part_per_subtask() {
    let c = start(1, 3, false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(3);
    env.add_source(builtins::datagen(DatagenConfig::bounded(30)))
        .sink(builtins::file_sink_dir(out.to_str().unwrap()));
    c.run_finished(env.job_graph("t").unwrap()).await;
    let mut all = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(out.join(format!("part-{i}"))).unwrap();
        all.extend(text.lines().map(|l| l.parse::<i64>().unwrap()));
    }
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_job_is_canceled() {
    let c = start(1, 2, false).await;
    let id = c
        .submit(jobs::keyed_sum(None, 10, Some(1_000.0), 2).unwrap())
        .await;
    c.wait_for(id, |s| s == JobStatus::Running).await;
    c.dispatcher.cancel_job(id).await.unwrap().unwrap();
    assert_eq!(
        c.wait_for(id, JobStatus::is_terminal).await,
        JobStatus::Canceled
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_operator_rejected_before_start() {
    let c = start(1, 1, false).await;
    let env = StreamExecutionEnvironment::new();
    env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
        .map(FactoryRef::unit("nobody.registered.this"))
        .sink(builtins::blackhole());
    match c
        .dispatcher
        .submit_job(env.job_graph("t").unwrap())
        .await
        .unwrap()
    {
        Err(ClusterError::InvalidJob(m)) => assert!(m.contains("nobody.registered.this"), "{m}"),
        other => panic!("expected an invalid-job error, got {other:?}"),
    }
    assert!(c.dispatcher.list_jobs().await.unwrap().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_source_reads_lines_until_close() {
    let c = start(1, 1, false).await;
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
    let result = c.run_finished(env.job_graph("t").unwrap()).await;
    server.join().unwrap();
    let lines: Vec<String> = collected(&result, "lines")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(lines, ["hello world", "hello again", "last"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_outputs_reach_their_own_sink_and_end_with_the_job() {
    let c = start(1, 4, false).await;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let odd = rill_dataflow::side_output::OutputTag::new("odd");
    let main = env
        .add_source(builtins::collection((0..20).map(Value::I64).collect()))
        .key_by(key::by_i64_mod(5))
        .process(FactoryRef::unit("t.odd_to_side"));
    main.sink(builtins::collect("even"));
    main.side_output(&odd).sink(builtins::collect("odd"));
    // The job only finishes if end of input travels the side-output edge too.
    let result = c.run_finished(env.job_graph("t").unwrap()).await;
    assert_eq!(
        sorted_i64(collected(&result, "even")),
        (0..20).step_by(2).collect::<Vec<_>>()
    );
    assert_eq!(
        sorted_i64(collected(&result, "odd")),
        (1..20).step_by(2).collect::<Vec<_>>()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_event_time_windows_and_count_windows_all() {
    use rill_dataflow::window::WindowAssigner;
    let c = start(1, 4, false).await;
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let lines = ["a,1", "b,2", "a,9", "a,10", "b,25", "a,19"];
    env.add_source(builtins::collection(
        lines.iter().map(|l| Value::from(*l)).collect(),
    ))
    .flat_map(builtins::key_timestamp())
    .assign_timestamps_and_watermarks(builtins::bounded_out_of_orderness(100))
    .key_by(key::by_field(0))
    .window(WindowAssigner::tumbling_event_time(10))
    .aggregate_with(builtins::window_count(), builtins::window_keyed_result())
    .sink(builtins::collect("windows"));
    // Non-keyed count windows at parallelism 1 over both source subtasks: every 3
    // elements; the last, incomplete window never fires.
    env.add_source(builtins::collection((0..7).map(Value::I64).collect()))
        .count_window_all(3)
        .aggregate(builtins::window_count())
        .sink(builtins::collect("all"));
    let result = c.run_finished(env.job_graph("t").unwrap()).await;
    assert_eq!(sorted_i64(collected(&result, "all")), [3, 3]);
    let mut got: Vec<String> = collected(&result, "windows")
        .iter()
        .map(ToString::to_string)
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["(a,0,10,2)", "(a,10,20,2)", "(b,0,10,1)", "(b,20,30,1)"]
    );
    c.stop().await;
}
