//! A panic in endpoint code other than a handler: mails are contained like handler
//! panics (the endpoint keeps serving and can still stop cleanly); a panic in `on_start`
//! terminates the endpoint. Either way the death-watch tells the truth.

use std::time::Duration;

use rill_runtime::security::ClusterSecret;
use rill_runtime::{
    EndpointContext, Lifecycle, Reply, RpcEndpoint, RpcError, RpcService, RpcServiceConfig,
    TerminationReason,
};

rill_runtime::gateway! {
    /// A trivial gateway for the watched endpoint.
    pub mod probe("probe") {
        /// Answers with its argument.
        fn hello(n: u32) -> u32;
    }
}

struct Probe {
    panic_on_start: bool,
}

impl RpcEndpoint for Probe {
    type Protocol = probe::Protocol;

    fn on_start(&mut self, _ctx: &mut EndpointContext<'_, Self>) {
        assert!(!self.panic_on_start, "on_start fails on purpose");
    }
}

impl probe::Handler for Probe {
    fn hello(&mut self, _: &mut EndpointContext<'_, Self>, n: u32) -> Reply<u32> {
        Reply::ready(n)
    }
}

fn service(force_remote: bool) -> RpcService {
    let mut config = RpcServiceConfig::local(ClusterSecret::from_bytes(b"mail-panic").unwrap());
    config.local_calls = if force_remote {
        rill_runtime::LocalCalls::Never
    } else {
        rill_runtime::LocalCalls::OwnService
    };
    RpcService::start(config).unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_mail_is_contained_and_the_endpoint_still_stops_cleanly() {
    let server = service(false);
    let client = service(true);
    let handle = server
        .start_endpoint(
            "probe",
            Probe {
                panic_on_start: false,
            },
        )
        .unwrap();
    handle.start();
    let address = server.address_of("probe");
    let gateway: probe::Gateway = client.connect(&address).await.unwrap();
    let local_watch = server.watch(&address);
    let remote_watch = client.watch(&address);

    handle.run_async(|_, _| panic!("a run_async mail fails on purpose"));
    handle.run_async(|_, ctx| {
        ctx.run_later(Duration::ZERO, |_, _| {
            panic!("a run_later mail fails on purpose")
        });
        ctx.spawn(async { panic!("a spawned future fails on purpose") });
    });
    // The mailbox is served in order: this runs after the panics above.
    let answer = tokio::time::timeout(WAIT, handle.call(|_, _| 7u32))
        .await
        .unwrap();
    assert_eq!(answer, Ok(7), "the endpoint must survive a panicking mail");
    let failed = tokio::time::timeout(WAIT, handle.call(|_, _| -> u32 { panic!("call fails") }))
        .await
        .unwrap();
    assert!(
        matches!(&failed, Err(RpcError::Remote { message, .. }) if message.contains("call fails")),
        "{failed:?}"
    );
    assert_eq!(gateway.hello(5).await, Ok(5));
    assert_eq!(handle.state(), Lifecycle::Started);

    // A clean stop still reaches both watchers: the endpoint was alive all along, not a
    // dead actor stuck in `Started`.
    handle.stop();
    for watch in [local_watch, remote_watch] {
        let t = tokio::time::timeout(WAIT, watch.terminated())
            .await
            .unwrap();
        assert_eq!(t.reason, TerminationReason::Stopped);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_start_terminates_the_endpoint() {
    let server = service(false);
    let client = service(true);
    let handle = server
        .start_endpoint(
            "probe",
            Probe {
                panic_on_start: true,
            },
        )
        .unwrap();
    let address = server.address_of("probe");
    let local_watch = server.watch(&address);
    let remote_watch = client.watch(&address);
    handle.start();
    tokio::time::timeout(WAIT, handle.terminated())
        .await
        .expect("an endpoint whose on_start panicked terminates");
    for watch in [local_watch, remote_watch] {
        let t = tokio::time::timeout(WAIT, watch.terminated())
            .await
            .unwrap();
        assert!(
            matches!(
                t.reason,
                TerminationReason::Stopped | TerminationReason::NotFound
            ),
            "{t:?}"
        );
    }
}
