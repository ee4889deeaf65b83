//! RPC layer behaviour, local and over loopback QUIC.

use std::time::Duration;

use rill_runtime::security::ClusterSecret;
use rill_runtime::{
    EndpointContext, Fencing, FencingToken, HandshakeError, JobMasterId, Lifecycle, Reply,
    RpcAddress, RpcEndpoint, RpcError, RpcService, RpcServiceConfig,
};

rill_runtime::gateway! {
    /// A test gateway.
    pub mod calc("calc") {
        /// Adds two numbers.
        fn add(a: u64, b: u64) -> u64;
        /// Echoes a blob.
        fn echo(blob: Vec<u8>) -> Vec<u8>;
        /// Answers after `millis`.
        fn slow(millis: u64) -> u64;
        /// Panics.
        fn explode() -> u64;
        /// Adds to the running total (a tell).
        fn accumulate(n: u64);
        /// Returns the running total.
        fn total() -> u64;
        /// Changes the fencing token.
        fn set_token(token: Option<u128>) -> ();
    }
}

rill_runtime::gateway! {
    /// Another gateway, to test mismatches.
    pub mod other("other") {
        /// Pings.
        fn ping() -> ();
    }
}

#[derive(Default)]
struct Calc {
    total: u64,
    fenced: bool,
    token: Option<u128>,
}

impl RpcEndpoint for Calc {
    type Protocol = calc::Protocol;

    fn fencing(&self) -> Fencing {
        if self.fenced {
            Fencing::Fenced(self.token.map(FencingToken))
        } else {
            Fencing::Unfenced
        }
    }
}

impl calc::Handler for Calc {
    fn add(&mut self, _: &mut EndpointContext<'_, Self>, a: u64, b: u64) -> Reply<u64> {
        Reply::ready(a + b)
    }
    fn echo(&mut self, _: &mut EndpointContext<'_, Self>, blob: Vec<u8>) -> Reply<Vec<u8>> {
        Reply::ready(blob)
    }
    fn slow(&mut self, _: &mut EndpointContext<'_, Self>, millis: u64) -> Reply<u64> {
        Reply::later(async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            millis
        })
    }
    fn explode(&mut self, _: &mut EndpointContext<'_, Self>) -> Reply<u64> {
        panic!("boom")
    }
    fn accumulate(&mut self, _: &mut EndpointContext<'_, Self>, n: u64) {
        self.total += n;
    }
    fn total(&mut self, _: &mut EndpointContext<'_, Self>) -> Reply<u64> {
        Reply::ready(self.total)
    }
    fn set_token(&mut self, _: &mut EndpointContext<'_, Self>, token: Option<u128>) -> Reply<()> {
        self.token = token;
        Reply::ready(())
    }
}

fn service(secret: &ClusterSecret, force_remote: bool) -> RpcService {
    let mut config = RpcServiceConfig::local(secret.clone());
    config.local_calls = if force_remote {
        rill_runtime::LocalCalls::Never
    } else {
        rill_runtime::LocalCalls::OwnService
    };
    config.rpc.max_frame_size = 64 * 1024;
    RpcService::start(config).unwrap()
}

/// A server with a started `calc` endpoint, and a client service in "another process"
/// (forced remote) plus gateways both ways.
struct Fixture {
    server: RpcService,
    _client: RpcService,
    address: RpcAddress,
    local: calc::Gateway,
    remote: calc::Gateway,
}

async fn fixture(endpoint: Calc) -> Fixture {
    let secret = ClusterSecret::generate();
    let server = service(&secret, false);
    let client = service(&secret, true);
    let handle = server.start_endpoint("calc", endpoint).unwrap();
    handle.start();
    let address = server.address_of("calc");
    let local: calc::Gateway = server.connect(&address).await.unwrap();
    let remote: calc::Gateway = client.connect(&address).await.unwrap();
    assert!(local.is_local());
    assert!(!remote.is_local());
    Fixture {
        server,
        _client: client,
        address,
        local,
        remote,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_gateways_agree() {
    let f = fixture(Calc::default()).await;
    for gw in [&f.local, &f.remote] {
        assert_eq!(gw.add(2, 3).await.unwrap(), 5);
        assert_eq!(gw.echo(vec![1, 2, 3]).await.unwrap(), vec![1, 2, 3]);
        gw.accumulate(10).unwrap();
    }
    // Tells from one gateway arrive in order and before a later ask on the same session.
    assert_eq!(f.remote.total().await.unwrap(), 20);
    assert_eq!(f.local.total().await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_asks_from_many_tasks_are_all_answered() {
    let f = fixture(Calc::default()).await;
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        for gw in [f.local.clone(), f.remote.clone()] {
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    assert_eq!(gw.add(t, i).await.unwrap(), t + i);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_tells_are_never_dropped() {
    let f = fixture(Calc::default()).await;
    // Far more than the actor mailbox capacity, sent without waiting.
    for _ in 0..5_000 {
        f.local.accumulate(1).unwrap();
        f.remote.accumulate(1).unwrap();
    }
    // Tells on the remote session are ordered before this ask on the same session.
    let total = f.remote.total().await.unwrap();
    assert!(total >= 5_000, "{total}");
    let mut total = total;
    for _ in 0..100 {
        if total == 10_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        total = f.local.total().await.unwrap();
    }
    assert_eq!(total, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fail_only_their_call() {
    let f = fixture(Calc::default()).await;
    for gw in [&f.local, &f.remote] {
        let err = gw
            .with_timeout(Duration::from_millis(50))
            .slow(2_000)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Timeout { ref method, .. } if method == "slow"),
            "{err:?}"
        );
        assert!(err.may_have_been_delivered());
        assert_eq!(gw.add(1, 1).await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_a_remote_error_and_the_endpoint_lives_on() {
    let f = fixture(Calc::default()).await;
    for gw in [&f.local, &f.remote] {
        let err = gw.explode().await.unwrap_err();
        assert!(
            matches!(err, RpcError::Remote { ref message, .. } if message.contains("boom")),
            "{err:?}"
        );
        assert_eq!(gw.add(2, 2).await.unwrap(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_start_and_after_stop_are_refused() {
    let secret = ClusterSecret::generate();
    let server = service(&secret, false);
    let client = service(&secret, true);
    let handle = server.start_endpoint("calc", Calc::default()).unwrap();
    let address = server.address_of("calc");
    let local: calc::Gateway = server.connect(&address).await.unwrap();
    let remote: calc::Gateway = client.connect(&address).await.unwrap();
    for gw in [&local, &remote] {
        let err = gw.add(1, 2).await.unwrap_err();
        assert!(
            matches!(err, RpcError::EndpointNotStarted { ref state, .. } if state == "Stopped"),
            "{err:?}"
        );
        assert!(!err.may_have_been_delivered());
    }
    // run_async before start is deferred until the endpoint is started.
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.run_async(move |calc: &mut Calc, _ctx| {
        calc.total = 7;
        let _ = tx.send(());
    });
    handle.start();
    rx.await.unwrap();
    assert_eq!(remote.total().await.unwrap(), 7);
    // A pending asynchronous reply is failed with a typed error when the endpoint stops.
    let pending = tokio::spawn({
        let gw = local.clone();
        async move { gw.slow(10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.stop();
    handle.terminated().await;
    assert_eq!(handle.state(), Lifecycle::Terminated);
    let err = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(err, RpcError::EndpointTerminated { .. }),
        "{err:?}"
    );
    // The name is free again and a new endpoint can take it.
    let again = server.start_endpoint("calc", Calc::default()).unwrap();
    again.start();
    let gw: calc::Gateway = client.connect(&address).await.unwrap();
    assert_eq!(gw.add(3, 4).await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_are_checked() {
    let f = fixture(Calc {
        fenced: true,
        token: Some(42),
        ..Calc::default()
    })
    .await;
    for gw in [&f.local, &f.remote] {
        let err = gw.add(1, 1).await.unwrap_err();
        assert!(
            matches!(err, RpcError::Fencing { ref received, .. } if received == "none"),
            "{err:?}"
        );
        let stale = gw.with_fencing_token(FencingToken(41));
        assert!(matches!(
            stale.add(1, 1).await,
            Err(RpcError::Fencing { .. })
        ));
        let current = gw.with_fencing_token(FencingToken(42));
        assert_eq!(current.add(1, 1).await.unwrap(), 2);
    }
    // A new leader term: the old token is rejected, the new one accepted.
    let new_term = JobMasterId(43);
    let old = f.remote.with_fencing_token(FencingToken(42));
    old.set_token(Some(new_term.0)).await.unwrap();
    let err = old.add(1, 1).await.unwrap_err();
    assert!(matches!(err, RpcError::Fencing { .. }), "{err:?}");
    assert!(!err.may_have_been_delivered());
    let fresh = f.remote.with_fencing_token(new_term);
    assert_eq!(fresh.add(2, 1).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_mismatches_are_specific_errors() {
    let f = fixture(Calc::default()).await;
    let client = service(&ClusterSecret::generate(), true);
    // Wrong secret: refused before anything is dispatched.
    let err = client
        .connect::<calc::Gateway>(&f.address)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Handshake {
                source: HandshakeError::SecretMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    for forced in [false, true] {
        let secret_client = if forced {
            f._client.clone()
        } else {
            f.server.clone()
        };
        let err = secret_client
            .connect::<other::Gateway>(&f.address)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RpcError::Handshake {
                    source: HandshakeError::GatewayMismatch { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let missing = RpcAddress::new(f.address.host.clone(), "nobody");
        let err = secret_client
            .connect::<calc::Gateway>(&missing)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RpcError::Handshake {
                    source: HandshakeError::UnknownEndpoint { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // The connection that saw the refusals still serves.
    assert_eq!(f.remote.add(20, 22).await.unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_fail_alone() {
    let f = fixture(Calc::default()).await;
    let err = f.remote.echo(vec![7; 100 * 1024]).await.unwrap_err();
    assert!(
        matches!(err, RpcError::FrameTooLarge { max, .. } if max == 64 * 1024),
        "{err:?}"
    );
    assert!(!err.may_have_been_delivered());
    f.remote.accumulate(1).unwrap();
    assert_eq!(f.remote.echo(vec![1; 1000]).await.unwrap().len(), 1000);
    assert_eq!(f.remote.total().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_is_a_typed_error() {
    let secret = ClusterSecret::generate();
    let client = {
        let mut config = RpcServiceConfig::local(secret);
        config.rpc.connect_timeout = Duration::from_millis(300);
        config.local_calls = rill_runtime::LocalCalls::Never;
        RpcService::start(config).unwrap()
    };
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = RpcAddress::new(silent.local_addr().unwrap(), "calc");
    let err = client.connect::<calc::Gateway>(&address).await.unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err:?}");
    assert!(!err.may_have_been_delivered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_queued_before_the_last_remote_gateway_drops_still_arrive() {
    let f = fixture(Calc::default()).await;
    // A fresh session, used for many tells and dropped at once: its writer must still
    // deliver all of them. As many as `rpc.max-pending-tells` allows queued at once, so
    // none is refused however slowly the writer drains.
    let n = rill_runtime::config::RpcConfig::default().max_pending_tells as u64;
    let remote: calc::Gateway = f._client.connect(&f.address).await.unwrap();
    drop(f.remote);
    for _ in 0..n {
        remote.accumulate(1).unwrap();
    }
    drop(remote);
    for _ in 0..500 {
        if f.local.total().await.unwrap() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tells were lost: total {}", f.local.total().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_of_one_process_talk_over_the_wire_unless_they_share_a_directory() {
    use rill_runtime::{LocalCalls, ServiceDirectory};
    // Different secrets: only a call over the wire checks them.
    let start = |secret: &[u8], local_calls: LocalCalls| {
        let mut config = RpcServiceConfig::local(ClusterSecret::from_bytes(secret).unwrap());
        config.local_calls = local_calls;
        RpcService::start(config).unwrap()
    };
    let server = start(b"server-secret", LocalCalls::OwnService);
    server
        .start_endpoint("calc", Calc::default())
        .unwrap()
        .start();
    let address = server.address_of("calc");
    let stranger = start(b"other-secret", LocalCalls::OwnService);
    let err = stranger
        .connect::<calc::Gateway>(&address)
        .await
        .expect_err("a service of the same process skipped authentication");
    assert!(
        matches!(
            err,
            RpcError::Handshake {
                source: HandshakeError::SecretMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // Services given one directory (a mini-cluster) call each other locally.
    let directory = ServiceDirectory::new();
    let a = start(b"a", LocalCalls::Directory(directory.clone()));
    a.start_endpoint("calc", Calc::default()).unwrap().start();
    let b = start(b"b", LocalCalls::Directory(directory.clone()));
    let gw: calc::Gateway = b.connect(&a.address_of("calc")).await.unwrap();
    assert!(gw.is_local());
    assert_eq!(gw.add(1, 2).await.unwrap(), 3);
    assert_eq!(directory.sockets().len(), 2);
    a.shutdown().await;
    assert_eq!(directory.sockets(), vec![b.local_addr()]);
}
