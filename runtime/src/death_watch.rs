//! Death-watch: learn exactly once that a watched endpoint is gone.
//!
//! [`RpcService::watch`] returns a [`Watch`] that resolves with one [`Terminated`] when
//!
//! * the endpoint **stopped cleanly** (or is not registered at its address any more);
//! * its **heartbeats time out**: the watcher pings the peer's built-in `rill-system`
//!   endpoint every `heartbeat.interval`; no answer for `heartbeat.timeout`, or
//!   `heartbeat.rpc-failure-threshold` pings in a row failing, means the process is gone
//!   (a SIGKILLed process answers nothing);
//! * its **connection is lost** (the peer closed it, or QUIC gave up on it).
//!
//! When the heartbeats time out, the watcher also closes its connection to the peer's
//! process, so the next connect there dials afresh (a process restarted at the same
//! address cannot answer on the dead process's connection).
//!
//! The liveness bookkeeping is [`HeartbeatManagerCore`] — the same pure state machine
//! every heartbeat relation uses — driven by one task per watch on `tokio::time`, so
//! paused time drives it in tests. Dropping the [`Watch`] (or [`Watch::unwatch`]) stops
//! watching. For an endpoint in this process the watch follows its lifecycle directly.

use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::address::RpcAddress;
use crate::config::HeartbeatConfig;
use crate::endpoint::{EndpointContext, Lifecycle, Reply, RpcEndpoint};
use crate::error::RpcError;
use crate::heartbeat::{HeartbeatEvent, HeartbeatManagerCore, HeartbeatRole};
use crate::ids::ResourceId;
use crate::service::RpcService;
use crate::tasks::TaskSet;

/// Name of the built-in endpoint every [`RpcService`] registers.
pub const SYSTEM_ENDPOINT: &str = "rill-system";

/// Whether an endpoint is alive, as its own service sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    /// Registered and not stopped.
    Alive,
    /// Stopping or stopped.
    Stopped,
    /// No endpoint of that name.
    Unknown,
}

crate::gateway! {
    /// The built-in system gateway of every RPC service.
    pub mod system("rill-system") {
        /// Reports whether the named endpoint is alive.
        fn ping(endpoint: String) -> Liveness;
    }
}

/// The built-in endpoint answering liveness pings.
pub(crate) struct SystemEndpoint {
    pub(crate) service: std::sync::Weak<dyn LivenessSource>,
}

/// What the system endpoint asks about local endpoints.
pub(crate) trait LivenessSource: Send + Sync {
    fn liveness(&self, endpoint: &str) -> Liveness;
}

impl RpcEndpoint for SystemEndpoint {
    type Protocol = system::Protocol;
}

impl system::Handler for SystemEndpoint {
    fn ping(&mut self, _ctx: &mut EndpointContext<'_, Self>, endpoint: String) -> Reply<Liveness> {
        Reply::ready(
            self.service
                .upgrade()
                .map_or(Liveness::Stopped, |s| s.liveness(&endpoint)),
        )
    }
}

pub(crate) fn liveness_of(lifecycle: Option<Lifecycle>) -> Liveness {
    match lifecycle {
        None => Liveness::Unknown,
        Some(Lifecycle::Stopped | Lifecycle::Started) => Liveness::Alive,
        Some(Lifecycle::Terminating | Lifecycle::Terminated) => Liveness::Stopped,
    }
}

/// Why a watched endpoint is considered gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminationReason {
    /// It stopped cleanly.
    Stopped,
    /// No endpoint of that name is registered at the address.
    NotFound,
    /// No heartbeat for `heartbeat.timeout`.
    HeartbeatTimeout,
    /// `heartbeat.rpc-failure-threshold` heartbeat pings in a row failed.
    Unreachable,
    /// The connection to its process was lost or could not be made.
    ConnectionLost(String),
}

/// The one notification a [`Watch`] delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    /// The watched endpoint.
    pub address: RpcAddress,
    /// Why it is considered gone.
    pub reason: TerminationReason,
}

/// A death-watch on one endpoint; see the module docs. Dropping it unwatches.
pub struct Watch {
    address: RpcAddress,
    rx: oneshot::Receiver<Terminated>,
    _task: TaskSet,
}

impl Watch {
    /// The watched address.
    pub fn address(&self) -> &RpcAddress {
        &self.address
    }

    /// Resolves once, when the endpoint is gone.
    pub async fn terminated(self) -> Terminated {
        let address = self.address.clone();
        self.rx.await.unwrap_or(Terminated {
            address,
            reason: TerminationReason::ConnectionLost("the RPC service shut down".into()),
        })
    }

    /// Stops watching.
    pub fn unwatch(self) {}
}

impl RpcService {
    /// Watches the endpoint at `address` (see the module docs).
    pub fn watch(&self, address: &RpcAddress) -> Watch {
        let (tx, rx) = oneshot::channel();
        let task = TaskSet::new(self.runtime().clone());
        let address = address.clone();
        if let Some(lifecycle) = self.local_lifecycle(&address) {
            let watched = address.clone();
            task.spawn("death-watch-local", async move {
                let reason = match lifecycle {
                    None => TerminationReason::NotFound,
                    Some(mut rx) => {
                        let _ = rx.wait_for(|s| *s == Lifecycle::Terminated).await;
                        TerminationReason::Stopped
                    }
                };
                let _ = tx.send(Terminated {
                    address: watched,
                    reason,
                });
            });
        } else {
            let service = self.clone();
            let watched = address.clone();
            let heartbeat = self.heartbeat_config().clone();
            task.spawn("death-watch", async move {
                let reason = watch_remote(&service, &watched, &heartbeat).await;
                tracing::info!(address = %watched, ?reason, "watched endpoint terminated");
                let _ = tx.send(Terminated {
                    address: watched,
                    reason,
                });
            });
        }
        Watch {
            address,
            rx,
            _task: task,
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn watch_remote(
    service: &RpcService,
    address: &RpcAddress,
    heartbeat: &HeartbeatConfig,
) -> TerminationReason {
    let system_address = RpcAddress::new(address.host.clone(), SYSTEM_ENDPOINT);
    let gateway = match service.connect::<system::Gateway>(&system_address).await {
        // A ping unanswered within one interval counts as a failed heartbeat RPC, so a
        // killed peer is declared unreachable after `rpc-failure-threshold` intervals,
        // before `heartbeat.timeout` when the threshold is small.
        Ok(gw) => gw.with_timeout(heartbeat.interval),
        Err(e) => return TerminationReason::ConnectionLost(e.to_string()),
    };
    let peer = ResourceId::new(address.to_string());
    let mut core = HeartbeatManagerCore::new(HeartbeatRole::Sender, heartbeat, now());
    core.monitor_target(peer.clone(), now());
    let mut pings = FuturesUnordered::new();
    // An endpoint that was alive and is now unknown has stopped and been deregistered.
    let mut seen_alive = false;
    loop {
        if !core.poll_requests(now()).is_empty() {
            let gw = gateway.clone();
            let name = address.endpoint.clone();
            pings.push(async move { gw.ping(name).await });
        }
        if let Some(event) = core.poll_timeouts(now()).into_iter().next() {
            let reason = match event {
                HeartbeatEvent::Timeout(_) => TerminationReason::HeartbeatTimeout,
                HeartbeatEvent::TargetUnreachable(_) => TerminationReason::Unreachable,
            };
            // The peer is declared dead: its connection would look open until the idle
            // timeout, and whoever restarts at the address could not answer on it.
            gateway.close_connection("the peer stopped answering death-watch pings");
            return reason;
        }
        let Some(deadline) = core.next_deadline() else {
            return TerminationReason::HeartbeatTimeout;
        };
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            () = sleep => {}
            Some(result) = pings.next(), if !pings.is_empty() => match result {
                Ok(Liveness::Alive) => {
                    seen_alive = true;
                    core.receive_heartbeat(&peer, now());
                    core.report_rpc_success(&peer);
                }
                Ok(Liveness::Stopped) => return TerminationReason::Stopped,
                Ok(Liveness::Unknown) if seen_alive => return TerminationReason::Stopped,
                Ok(Liveness::Unknown) => return TerminationReason::NotFound,
                Err(e @ (RpcError::ConnectionLost { .. } | RpcError::Unreachable { .. })) => {
                    return TerminationReason::ConnectionLost(e.to_string());
                }
                Err(_) => core.report_rpc_failure(&peer, now()),
            },
        }
    }
}
