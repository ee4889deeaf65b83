//! The endpoints end to end in one process: a MiniCluster with forced-remote gateways
//! and data channels, driven through the Dispatcher gateway as an admin tool would.

use std::sync::Arc;
use std::time::Duration;

use rill_dataflow::{jobs, JobGraph, JobId, OperatorRegistry};
use rill_endpoints::dispatcher_gateway::Gateway as DispatcherGateway;
use rill_endpoints::{ClusterError, JobStatus, MiniCluster, MiniClusterOptions, RillConfig};
use rill_runtime::security::ClusterSecret;
use rill_runtime::{RpcService, RpcServiceConfig};

struct Fixture {
    cluster: MiniCluster,
    client: RpcService,
    dispatcher: DispatcherGateway,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RILL_LOG"))
        .with_test_writer()
        .try_init();
}

async fn start(
    task_managers: u32,
    slots: u32,
    force_remote: bool,
    tweak: impl FnOnce(&mut RillConfig),
) -> Fixture {
    init_logging();
    let mut config = RillConfig::default();
    config.taskmanager.number_of_task_slots = slots;
    config.taskmanager.network.memory = 16 << 20;
    tweak(&mut config);
    let secret = ClusterSecret::generate();
    let cluster = MiniCluster::start(
        &config,
        &MiniClusterOptions {
            task_managers,
            force_remote,
            ..MiniClusterOptions::default()
        },
        &secret,
        Arc::new(OperatorRegistry::new()),
    )
    .expect("mini-cluster starts");
    let mut client_config = RpcServiceConfig::local(secret);
    client_config.local_calls = rill_runtime::LocalCalls::Never;
    let client = RpcService::start(client_config).unwrap();
    let dispatcher: DispatcherGateway = client
        .connect(&cluster.jobmanager().dispatcher_address())
        .await
        .unwrap();
    // Wait until every slot is registered.
    let want = task_managers * slots;
    for _ in 0..200 {
        let tms = dispatcher.list_task_managers().await.unwrap().unwrap();
        if tms.iter().map(|t| t.slots_total).sum::<u32>() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Fixture {
        cluster,
        client,
        dispatcher,
    }
}

impl Fixture {
    async fn wait_for(&self, job: JobId, done: impl Fn(JobStatus) -> bool) -> JobStatus {
        for _ in 0..1200 {
            let s = self.dispatcher.job_status(job).await.unwrap().unwrap();
            if done(s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {job} did not reach the expected state within 30 s");
    }

    async fn stop(self) {
        self.client.shutdown().await;
        self.cluster.shutdown().await;
    }
}

async fn run_keyed_sum(f: &Fixture, job: JobGraph, rows: u64, keys: u64) {
    let id = f.dispatcher.submit_job(job).await.unwrap().unwrap();
    let status = f.wait_for(id, JobStatus::is_terminal).await;
    let result = f.dispatcher.request_job_result(id).await.unwrap().unwrap();
    assert_eq!(status, JobStatus::Finished, "failure: {:?}", result.failure);
    let checksum = jobs::keyed_sum_checksum(&result.collected[jobs::KEYED_SUM_COLLECT_ID]).unwrap();
    assert_eq!(checksum, jobs::expected_keyed_sum_checksum(rows, keys));
    // Exact counters: `rows` records out of the sources and into the aggregate (whose
    // collect sink is chained, so nothing leaves it over the network).
    let details = f.dispatcher.job_details(id).await.unwrap().unwrap();
    let counts: Vec<(u64, u64)> = details
        .vertices
        .iter()
        .map(|v| (v.records_in, v.records_out))
        .collect();
    assert_eq!(counts, [(0, rows), (rows, 0)], "{details:?}");
    let list = f.dispatcher.list_jobs().await.unwrap();
    assert!(list
        .iter()
        .any(|j| j.job == id && j.status == JobStatus::Finished));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_sum_runs_across_task_executors_over_the_wire() {
    let f = start(2, 2, true, |_| {}).await;
    run_keyed_sum(
        &f,
        jobs::keyed_sum(Some(200_000), 100, None, 4).unwrap(),
        200_000,
        100,
    )
    .await;
    // Slots were freed: a second job gets them.
    run_keyed_sum(
        &f,
        jobs::keyed_sum(Some(50_000), 10, None, 4).unwrap(),
        50_000,
        10,
    )
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_sum_runs_with_local_gateways_and_channels() {
    let f = start(1, 2, false, |_| {}).await;
    run_keyed_sum(
        &f,
        jobs::keyed_sum(Some(100_000), 50, None, 2).unwrap(),
        100_000,
        50,
    )
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_frees_the_slots_for_the_next_job() {
    let f = start(1, 2, true, |_| {}).await;
    let id = f
        .dispatcher
        .submit_job(jobs::keyed_sum(None, 100, Some(10_000.0), 2).unwrap())
        .await
        .unwrap()
        .unwrap();
    f.wait_for(id, |s| s == JobStatus::Running).await;
    f.dispatcher.cancel_job(id).await.unwrap().unwrap();
    assert_eq!(
        f.wait_for(id, JobStatus::is_terminal).await,
        JobStatus::Canceled
    );
    assert!(matches!(
        f.dispatcher.cancel_job(id).await.unwrap(),
        Err(ClusterError::JobTerminal { .. })
    ));
    run_keyed_sum(
        &f,
        jobs::keyed_sum(Some(10_000), 10, None, 2).unwrap(),
        10_000,
        10,
    )
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_get_clear_errors() {
    let f = start(1, 1, false, |c| {
        c.slot.request.timeout = Duration::from_millis(500)
    })
    .await;
    // Duplicate id.
    let job = jobs::keyed_sum(Some(10), 1, None, 1).unwrap();
    let id = f.dispatcher.submit_job(job.clone()).await.unwrap().unwrap();
    assert_eq!(
        f.dispatcher.submit_job(job).await.unwrap(),
        Err(ClusterError::DuplicateJob(id))
    );
    f.wait_for(id, JobStatus::is_terminal).await;
    // Unknown job.
    let unknown = JobId([7; 16]);
    assert_eq!(
        f.dispatcher.job_status(unknown).await.unwrap(),
        Err(ClusterError::JobNotFound(unknown))
    );
    assert_eq!(
        f.dispatcher.cancel_job(unknown).await.unwrap(),
        Err(ClusterError::JobNotFound(unknown))
    );
    // Unknown operator.
    let mut bad = jobs::keyed_sum(Some(10), 1, None, 1).unwrap();
    bad.vertices[0].operators[0].spec.factory.name = "no.such.operator".into();
    match f.dispatcher.submit_job(bad).await.unwrap() {
        Err(ClusterError::InvalidJob(m)) => assert!(m.contains("no.such.operator"), "{m}"),
        other => panic!("{other:?}"),
    }
    // More parallelism than slots: fails after the slot request timeout.
    let id = f
        .dispatcher
        .submit_job(jobs::keyed_sum(Some(10), 1, None, 3).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.wait_for(id, JobStatus::is_terminal).await,
        JobStatus::Failed
    );
    let result = f.dispatcher.request_job_result(id).await.unwrap().unwrap();
    let failure = result.failure.unwrap();
    assert!(
        failure.contains("needs 3 slot(s)") && failure.contains("1 slots in total"),
        "{failure}"
    );
    // The cluster is still healthy.
    run_keyed_sum(
        &f,
        jobs::keyed_sum(Some(1000), 10, None, 1).unwrap(),
        1000,
        10,
    )
    .await;
    f.stop().await;
}

/// Two disconnected pipelines: one fails on every attempt (its input file is missing),
/// the other runs until the job ends.
fn two_pipelines() -> JobGraph {
    use rill_dataflow::builtins;
    let env = rill_dataflow::StreamExecutionEnvironment::new();
    env.set_parallelism(1);
    env.add_source(builtins::file_lines("/nonexistent/rill-test-input"))
        .name("Source: missing file")
        .rebalance()
        .sink(builtins::blackhole())
        .name("Sink: a");
    env.add_source(builtins::datagen(rill_dataflow::builtins::DatagenConfig {
        rows: None,
        rate: Some(1000.0),
        ..Default::default()
    }))
    .name("Source: healthy")
    .rebalance()
    .sink(builtins::blackhole())
    .name("Sink: b");
    env.job_graph("two pipelines").unwrap()
}

async fn attempts_after_restarts(failover: &str) -> (Vec<u32>, Vec<u32>) {
    let failover = failover.to_string();
    let f = start(1, 2, false, move |c| {
        c.restart_strategy.kind = Some(rill_endpoints::config::RestartStrategyType::FixedDelay);
        c.restart_strategy.fixed_delay.attempts = 2;
        c.restart_strategy.fixed_delay.delay = Duration::from_millis(50);
        c.jobmanager.execution.failover_strategy = if failover == "full" {
            rill_endpoints::config::FailoverStrategy::Full
        } else {
            rill_endpoints::config::FailoverStrategy::Region
        };
    })
    .await;
    let id = f
        .dispatcher
        .submit_job(two_pipelines())
        .await
        .unwrap()
        .unwrap();
    f.wait_for(id, JobStatus::is_terminal).await;
    let details = f.dispatcher.job_details(id).await.unwrap().unwrap();
    assert_eq!(details.overview.status, JobStatus::Failed);
    assert_eq!(details.restarts, 2);
    // The root cause, not the knock-on failure of the sink whose producer went away.
    let failure = details.failure.clone().unwrap();
    assert!(failure.contains("rill-test-input"), "{failure}");
    let of = |prefix: &str| -> Vec<u32> {
        details
            .vertices
            .iter()
            .filter(|v| v.name.contains(prefix))
            .flat_map(|v| v.attempts.clone())
            .collect()
    };
    let result = (of("missing file"), of("healthy"));
    f.stop().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_failover_restarts_only_the_failed_pipeline() {
    let (failing, healthy) = attempts_after_restarts("region").await;
    assert_eq!(failing, [2], "the failing region ran three attempts");
    assert_eq!(healthy, [0], "the healthy region was never restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_failover_restarts_every_task() {
    let (failing, healthy) = attempts_after_restarts("full").await;
    assert_eq!(failing, [2]);
    assert_eq!(healthy, [2]);
}
