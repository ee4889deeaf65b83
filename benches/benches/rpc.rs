//! RPC layer figures, each next to its baseline measured in the same run:
//!
//! * local gateway ask round-trip vs raw actix `send().await` to an actor on another
//!   arbiter (p50, p99);
//! * remote gateway ask round-trip over loopback QUIC vs a raw quinn request/response on
//!   one bidirectional stream (p50, p99);
//! * remote asks/s with 64 concurrent callers on one connection;
//! * remote tells/s on one connection.
//!
//! Run: `cargo bench -p rill-benches --bench rpc` (add `-- --quick` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use rill_runtime::security::{
    authenticate_client, authenticate_server, quic_client_config, quic_endpoint,
    quic_server_config, ClusterSecret, RPC_ALPN, SERVER_NAME,
};
use rill_runtime::{EndpointContext, Reply, RpcEndpoint, RpcService, RpcServiceConfig};

rill_runtime::gateway! {
    /// The benchmark gateway.
    pub mod bench("bench") {
        /// Returns `n + 1`.
        fn inc(n: u64) -> u64;
        /// Counts.
        fn count(n: u64);
        /// Returns the count.
        fn total() -> u64;
    }
}

#[derive(Default)]
struct Bench {
    total: u64,
}

impl RpcEndpoint for Bench {
    type Protocol = bench::Protocol;
}

impl bench::Handler for Bench {
    fn inc(&mut self, _: &mut EndpointContext<'_, Self>, n: u64) -> Reply<u64> {
        Reply::ready(n + 1)
    }
    fn count(&mut self, _: &mut EndpointContext<'_, Self>, n: u64) {
        self.total += n;
    }
    fn total(&mut self, _: &mut EndpointContext<'_, Self>) -> Reply<u64> {
        Reply::ready(self.total)
    }
}

struct RawActor;
impl Actor for RawActor {
    type Context = Context<Self>;
}
struct Inc(u64);
impl Message for Inc {
    type Result = u64;
}
impl Handler<Inc> for RawActor {
    type Result = u64;
    fn handle(&mut self, msg: Inc, _: &mut Context<Self>) -> u64 {
        msg.0 + 1
    }
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>8.2} µs  p99 {:>8.2} µs",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6
        )
    }
}

async fn measure<F, Fut>(iterations: usize, mut f: F) -> Latency
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    for i in 0..(iterations / 10).max(100) {
        std::hint::black_box(f(i as u64).await);
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        std::hint::black_box(f(i as u64).await);
        samples.push(start.elapsed());
    }
    samples.sort();
    Latency {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iterations = if quick { 2_000 } else { 20_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(iterations, quick));
}

async fn run(iterations: usize, quick: bool) {
    let secret = ClusterSecret::generate();
    let server = RpcService::start(RpcServiceConfig::local(secret.clone())).unwrap();
    server
        .start_endpoint("bench", Bench::default())
        .unwrap()
        .start();
    let mut client_config = RpcServiceConfig::local(secret.clone());
    client_config.local_calls = rill_runtime::LocalCalls::Never;
    let client = RpcService::start(client_config).unwrap();
    let address = server.address_of("bench");
    let local: bench::Gateway = server.connect(&address).await.unwrap();
    let remote: bench::Gateway = client.connect(&address).await.unwrap();

    println!("rill RPC benchmark ({iterations} round-trips per case, 2 tokio workers)");

    // Raw actix: an actor on its own arbiter, like an endpoint, asked from a tokio task.
    let raw_addr = {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let _ = tx.send(RawActor.start());
            });
            system.run().unwrap();
        });
        rx.recv().unwrap()
    };
    let raw_actix = measure(iterations, |i| {
        let addr = raw_addr.clone();
        async move { addr.send(Inc(i)).await.unwrap() }
    })
    .await;
    let local_ask = measure(iterations, |i| {
        let gw = local.clone();
        async move { gw.inc(i).await.unwrap() }
    })
    .await;
    println!(
        "local ask       {local_ask}   (raw actix send {raw_actix}; ratio {:.2}x)",
        ratio(local_ask.p50, raw_actix.p50)
    );

    // Raw quinn: one authenticated connection, one bi-stream, 8-byte request/response.
    let raw_quinn = raw_quinn_round_trip(&secret, iterations).await;
    let remote_ask = measure(iterations, |i| {
        let gw = remote.clone();
        async move { gw.inc(i).await.unwrap() }
    })
    .await;
    println!(
        "remote ask      {remote_ask}   (raw quinn r/r   {raw_quinn}; ratio {:.2}x)",
        ratio(remote_ask.p50, raw_quinn.p50)
    );

    // Concurrent asks on one connection.
    let callers = 64;
    let per_caller = if quick { 200 } else { 2_000 };
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let gw = remote.clone();
            tokio::spawn(async move {
                for i in 0..per_caller {
                    gw.inc(i).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let asks_per_sec = (callers * per_caller) as f64 / start.elapsed().as_secs_f64();
    println!(
        "remote asks/s   {asks_per_sec:>10.0}   ({callers} concurrent callers, one connection)"
    );

    // Tells on one connection; one ask at the end proves all were handled.
    let tells: u64 = if quick { 100_000 } else { 1_000_000 };
    let before = remote.total().await.unwrap();
    let start = Instant::now();
    for _ in 0..tells {
        remote.count(1).unwrap();
    }
    let total = remote
        .with_timeout(Duration::from_secs(120))
        .total()
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(total - before, tells);
    println!(
        "remote tells/s  {:>10.0}   ({tells} tells, one connection, all handled)",
        tells as f64 / elapsed.as_secs_f64()
    );

    println!(
        "targets: local p50 ≤ 5 µs and ≤ 1.5x raw actix; remote p50 ≤ 100 µs and ≤ 1.5x raw quinn; \
         ≥ 50k asks/s; ≥ 300k tells/s"
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn raw_quinn_round_trip(secret: &ClusterSecret, iterations: usize) -> Latency {
    let transport = Arc::new(quinn::TransportConfig::default());
    let server_config = quic_server_config(RPC_ALPN, transport.clone()).unwrap();
    let server = quic_endpoint(Some(server_config), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let server_secret = secret.clone();
    let echo = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        authenticate_server(&conn, &server_secret).await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = [0u8; 8];
        while recv.read_exact(&mut buf).await.is_ok() {
            let n = u64::from_le_bytes(buf) + 1;
            if send.write_all(&n.to_le_bytes()).await.is_err() {
                break;
            }
        }
        drop(server);
    });
    let mut client = quic_endpoint(None, "127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quic_client_config(RPC_ALPN, transport).unwrap());
    let conn = client.connect(addr, SERVER_NAME).unwrap().await.unwrap();
    authenticate_client(&conn, secret).await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let stream = Arc::new(tokio::sync::Mutex::new((send, recv)));
    let latency = measure(iterations, |i| {
        let stream = stream.clone();
        async move {
            let mut guard = stream.lock().await;
            let (send, recv) = &mut *guard;
            send.write_all(&i.to_le_bytes()).await.unwrap();
            let mut buf = [0u8; 8];
            recv.read_exact(&mut buf).await.unwrap();
            u64::from_le_bytes(buf)
        }
    })
    .await;
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), echo).await;
    latency
}
