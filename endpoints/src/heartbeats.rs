//! Glue between [`rill_runtime::heartbeat`] and the endpoints: targets that are gateway
//! tells, and listeners that forward events into an endpoint's mailbox.

use std::sync::Arc;

use futures::future::BoxFuture;
use rill_runtime::config::HeartbeatConfig;
use rill_runtime::heartbeat::{
    HeartbeatListener, HeartbeatManager, HeartbeatRole, HeartbeatTarget,
};
use rill_runtime::{EndpointContext, EndpointHandle, ResourceId, RpcEndpoint, RpcError};

type Send_<O> = Box<dyn Fn(ResourceId, O) -> Result<(), RpcError> + Send + Sync>;

/// A heartbeat target whose two directions are gateway tells.
pub(crate) struct TellTarget<O> {
    request: Send_<O>,
    receive: Send_<O>,
}

impl<O: Send + 'static> TellTarget<O> {
    /// A target of a sender side: only `request_heartbeat` is ever called.
    pub(crate) fn requester(
        request: impl Fn(ResourceId, O) -> Result<(), RpcError> + Send + Sync + 'static,
    ) -> Arc<dyn HeartbeatTarget<O>> {
        Arc::new(TellTarget {
            request: Box::new(request),
            receive: Box::new(|_, _| Ok(())),
        })
    }

    /// A target of a receiver side: only `receive_heartbeat` is ever called.
    pub(crate) fn answerer(
        receive: impl Fn(ResourceId, O) -> Result<(), RpcError> + Send + Sync + 'static,
    ) -> Arc<dyn HeartbeatTarget<O>> {
        Arc::new(TellTarget {
            request: Box::new(|_, _| Ok(())),
            receive: Box::new(receive),
        })
    }
}

impl<O: Send + 'static> HeartbeatTarget<O> for TellTarget<O> {
    fn request_heartbeat(
        &self,
        from: ResourceId,
        payload: O,
    ) -> BoxFuture<'static, Result<(), RpcError>> {
        let result = (self.request)(from, payload);
        Box::pin(async move { result })
    }

    fn receive_heartbeat(
        &self,
        from: ResourceId,
        payload: O,
    ) -> BoxFuture<'static, Result<(), RpcError>> {
        let result = (self.receive)(from, payload);
        Box::pin(async move { result })
    }
}

type OnLost<E> = fn(&mut E, &mut EndpointContext<'_, E>, ResourceId, String);
type OnPayload<E, I> = fn(&mut E, &mut EndpointContext<'_, E>, ResourceId, I);

/// A listener that runs the endpoint's handlers on its mailbox.
pub(crate) struct MailboxListener<E: RpcEndpoint, I, O> {
    handle: EndpointHandle<E>,
    /// What is monitored, for messages ("TaskExecutor", "JobMaster", …).
    what: &'static str,
    on_lost: OnLost<E>,
    on_payload: OnPayload<E, I>,
    payload: Box<dyn Fn(&ResourceId) -> O + Send + Sync>,
}

impl<E: RpcEndpoint, I: Send + 'static, O> MailboxListener<E, I, O> {
    pub(crate) fn new(
        handle: EndpointHandle<E>,
        what: &'static str,
        on_lost: OnLost<E>,
        on_payload: OnPayload<E, I>,
        payload: impl Fn(&ResourceId) -> O + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(MailboxListener {
            handle,
            what,
            on_lost,
            on_payload,
            payload: Box::new(payload),
        })
    }
}

impl<E: RpcEndpoint, I: Send + 'static, O> HeartbeatListener<I, O> for MailboxListener<E, I, O> {
    fn notify_heartbeat_timeout(&self, target: ResourceId) {
        let f = self.on_lost;
        let reason = format!("heartbeat of {} {target} timed out", self.what);
        self.handle
            .run_async(move |e, ctx| f(e, ctx, target, reason));
    }

    fn notify_target_unreachable(&self, target: ResourceId) {
        let f = self.on_lost;
        let reason = format!(
            "{} {target} is unreachable (heartbeat RPCs failed)",
            self.what
        );
        self.handle
            .run_async(move |e, ctx| f(e, ctx, target, reason));
    }

    fn report_payload(&self, from: ResourceId, payload: I) {
        let f = self.on_payload;
        self.handle
            .run_async(move |e, ctx| f(e, ctx, from, payload));
    }

    fn retrieve_payload(&self, target: &ResourceId) -> O {
        (self.payload)(target)
    }
}

/// Starts one side of a heartbeat relation whose events run on `ctx`'s endpoint:
/// `on_lost` for a timed-out or unreachable `what`, `on_payload` for its payloads, and
/// `payload` supplying ours.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_heartbeats<E: RpcEndpoint, I: Send + 'static, O: Send + 'static>(
    ctx: &EndpointContext<'_, E>,
    own_id: &ResourceId,
    role: HeartbeatRole,
    config: &HeartbeatConfig,
    what: &'static str,
    on_lost: OnLost<E>,
    on_payload: OnPayload<E, I>,
    payload: impl Fn(&ResourceId) -> O + Send + Sync + 'static,
) -> HeartbeatManager<I, O> {
    HeartbeatManager::start(
        own_id.clone(),
        role,
        config,
        MailboxListener::new(ctx.handle(), what, on_lost, on_payload, payload),
    )
}
