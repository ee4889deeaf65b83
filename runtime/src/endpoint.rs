//! RPC endpoints: actors with a lifecycle and a mailbox.
//!
//! An [`RpcEndpoint`] is plain state plus handlers. The runtime wraps it in an
//! [`EndpointActor`] (an actix actor) that runs on its own [`actix_rt::Arbiter`] — one OS
//! thread with a single-threaded runtime, the endpoint's "main thread". Every handler,
//! every [`EndpointHandle::run_async`] closure and the `on_start`/`on_stop` hooks run
//! there, one at a time, so endpoint state needs no locks.
//!
//! # Lifecycle
//!
//! ```text
//! Stopped --start--> Started --stop--> Terminating --(on_stop done)--> Terminated
//!    \________________________stop_____________________________________^
//! ```
//!
//! * **Stopped**: registered and reachable, but calls are answered with
//!   [`RpcError::EndpointNotStarted`]; `run_async` closures are queued and run only once
//!   the endpoint is started. [`EndpointHandle::start`] runs `on_start` and moves to
//!   Started.
//! * **Started**: calls are dispatched.
//! * **Terminating**: `on_stop` runs; calls are answered with `EndpointNotStarted`.
//! * **Terminated**: the actor is gone. Asks still queued in the mailbox, and asks whose
//!   asynchronous reply was still pending, fail with [`RpcError::EndpointTerminated`]
//!   (they may have been processed). [`EndpointHandle::terminated`] resolves.
//!
//! # Panics
//!
//! Every piece of endpoint code runs inside a panic guard, so a panic can never kill the
//! actor silently (which would leave an endpoint that is gone but still `Started`, whose
//! death-watch pings would keep answering "alive"):
//!
//! * A **handler** that panics fails its own call with [`RpcError::Remote`]; the endpoint
//!   lives on (its state is whatever the handler left, as with any early return).
//! * A **mail** — a [`EndpointHandle::run_async`] / [`EndpointContext::run_later`] closure,
//!   or a future given to [`EndpointContext::spawn`] — is contained the same way: the panic
//!   is logged at ERROR with the endpoint's name and the endpoint lives on. A closure sent
//!   with [`EndpointHandle::call`] also fails that call with [`RpcError::Remote`].
//! * A panic in **`on_start`** terminates the endpoint: it never became usable, so it runs
//!   `on_stop` (guarded too) and stops; its death-watchers get `Terminated`. A panic in
//!   `on_stop` is logged and the endpoint terminates all the same.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use crate::error::RpcError;
use crate::fencing::FencingToken;
use crate::gateway::{Dispatch, Protocol};

/// Where an endpoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Registered, not yet started: calls are refused.
    Stopped,
    /// Serving calls.
    Started,
    /// Running `on_stop`: calls are refused.
    Terminating,
    /// Gone.
    Terminated,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Whether an endpoint checks fencing tokens, and against which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// Accepts every call.
    Unfenced,
    /// Accepts only calls carrying this token; `None` (no leader term yet) refuses all.
    Fenced(Option<FencingToken>),
}

/// An actor-style RPC endpoint: state plus the handlers of one gateway protocol.
///
/// Implement the protocol's generated `Handler` trait (see [`gateway!`](crate::gateway!))
/// for the handlers, and this trait for the lifecycle hooks.
pub trait RpcEndpoint: Sized + Send + Unpin + 'static {
    /// The gateway protocol this endpoint serves.
    type Protocol: Protocol + Dispatch<Self>;

    /// Runs on the endpoint's thread when it is started, before any call is dispatched.
    fn on_start(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let _ = ctx;
    }

    /// Runs on the endpoint's thread when it is stopped; no call is dispatched after it.
    fn on_stop(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let _ = ctx;
    }

    /// The fencing this endpoint applies to incoming calls; unfenced by default.
    fn fencing(&self) -> Fencing {
        Fencing::Unfenced
    }
}

/// The answer of a handler: ready now, failed, or computed later by a future.
///
/// A later reply's future runs on the endpoint's thread but does not borrow the endpoint;
/// to touch endpoint state after an await, go through [`EndpointHandle::call`] or
/// [`EndpointHandle::run_async`]. The mailbox keeps serving other calls meanwhile.
pub struct Reply<T>(ReplyInner<T>);

enum ReplyInner<T> {
    Ready(Result<T, String>),
    Later(LocalBoxFuture<'static, Result<T, String>>),
}

impl<T: 'static> Reply<T> {
    /// A reply available now.
    pub fn ready(value: T) -> Self {
        Reply(ReplyInner::Ready(Ok(value)))
    }

    /// A failed call: the caller gets [`RpcError::Remote`] with this message.
    pub fn fail(message: impl Into<String>) -> Self {
        Reply(ReplyInner::Ready(Err(message.into())))
    }

    /// A reply computed by a future that runs on the endpoint's thread.
    pub fn later(future: impl Future<Output = T> + 'static) -> Self {
        Reply(ReplyInner::Later(future.map(Ok).boxed_local()))
    }

    /// A reply computed by a future that may fail the call.
    pub fn try_later(future: impl Future<Output = Result<T, String>> + 'static) -> Self {
        Reply(ReplyInner::Later(future.boxed_local()))
    }

    /// Transforms the value once it is available.
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + 'static) -> Reply<U> {
        match self.0 {
            ReplyInner::Ready(r) => Reply(ReplyInner::Ready(r.map(f))),
            ReplyInner::Later(fut) => Reply(ReplyInner::Later(fut.map(|r| r.map(f)).boxed_local())),
        }
    }
}

impl<T: 'static> From<Result<T, String>> for Reply<T> {
    fn from(result: Result<T, String>) -> Self {
        Reply(ReplyInner::Ready(result))
    }
}

/// The handler's view of its endpoint: name, handle, timers and owned futures.
pub struct EndpointContext<'a, E: RpcEndpoint> {
    ctx: &'a mut Context<EndpointActor<E>>,
    name: &'a Arc<str>,
    state: &'a watch::Sender<Lifecycle>,
}

impl<E: RpcEndpoint> EndpointContext<'_, E> {
    /// The endpoint's registered name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// A handle for reaching this endpoint's mailbox from elsewhere (other threads, futures).
    pub fn handle(&self) -> EndpointHandle<E> {
        EndpointHandle {
            addr: self.ctx.address(),
            name: self.name.clone(),
            state: self.state.subscribe(),
        }
    }

    /// Runs `f` on the mailbox after `delay` (Flink's `scheduleRunAsync`). Dropped if the
    /// endpoint stops first.
    pub fn run_later(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>) + 'static,
    ) {
        self.ctx.run_later(delay, move |actor, ctx| {
            actor.run_guarded(ctx, "run_later", f);
        });
    }

    /// Runs a future on the endpoint's thread; it is dropped when the endpoint stops. A
    /// panic in it is logged and ends only that future (see the module docs).
    pub fn spawn(&mut self, future: impl Future<Output = ()> + 'static) {
        let name = self.name.clone();
        let guarded = AssertUnwindSafe(future).catch_unwind().map(move |r| {
            if let Err(panic) = r {
                log_mail_panic(&name, "spawned future", &panic);
            }
        });
        self.ctx.spawn(actix::fut::wrap_future(guarded));
    }

    /// Stops this endpoint after the current handler returns.
    pub fn stop(&mut self) {
        let handle = self.handle();
        handle.stop();
    }
}

type Mail<E> = Box<dyn for<'a> FnOnce(&mut E, &mut EndpointContext<'a, E>) + Send>;

/// The actix actor that hosts an [`RpcEndpoint`].
pub struct EndpointActor<E: RpcEndpoint> {
    endpoint: E,
    name: Arc<str>,
    state: Lifecycle,
    state_tx: watch::Sender<Lifecycle>,
    /// `run_async` mails that arrived before start; run right after `on_start`.
    deferred: Vec<Mail<E>>,
    on_terminated: Option<Box<dyn FnOnce() + Send>>,
}

impl<E: RpcEndpoint> EndpointActor<E> {
    fn run<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>) -> R,
    ) -> R {
        let mut ectx = EndpointContext {
            ctx,
            name: &self.name,
            state: &self.state_tx,
        };
        f(&mut self.endpoint, &mut ectx)
    }

    /// Runs `f` like [`Self::run`], containing a panic: it is logged and `false` returned.
    fn run_guarded(
        &mut self,
        ctx: &mut Context<Self>,
        what: &'static str,
        f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>),
    ) -> bool {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.run(ctx, f))) {
            Ok(()) => true,
            Err(panic) => {
                log_mail_panic(&self.name, what, &panic);
                false
            }
        }
    }

    /// Terminating → `on_stop` → Terminated (once the actor has stopped).
    fn shut_down(&mut self, ctx: &mut Context<Self>) {
        self.set_state(Lifecycle::Terminating);
        self.run_guarded(ctx, "on_stop", |e, ectx| e.on_stop(ectx));
        ctx.stop();
    }

    fn set_state(&mut self, state: Lifecycle) {
        self.state = state;
        self.state_tx.send_replace(state);
    }

    fn check_started(&self) -> Result<(), RpcError> {
        if self.state == Lifecycle::Started {
            Ok(())
        } else {
            Err(RpcError::EndpointNotStarted {
                endpoint: self.name.to_string(),
                state: self.state.to_string(),
            })
        }
    }

    fn check_fencing(&self, token: Option<FencingToken>) -> Result<(), RpcError> {
        match self.endpoint.fencing() {
            Fencing::Unfenced => Ok(()),
            Fencing::Fenced(expected) if expected.is_some() && expected == token => Ok(()),
            Fencing::Fenced(expected) => Err(RpcError::Fencing {
                endpoint: self.name.to_string(),
                expected: display_token(expected),
                received: display_token(token),
            }),
        }
    }
}

fn display_token(token: Option<FencingToken>) -> String {
    token.map_or_else(|| "none".to_string(), |t| t.to_string())
}

impl<E: RpcEndpoint> Actor for EndpointActor<E> {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.set_state(Lifecycle::Terminated);
        tracing::debug!(endpoint = %self.name, "endpoint terminated");
        if let Some(f) = self.on_terminated.take() {
            f();
        }
        // One arbiter (thread) per endpoint: release it with the endpoint.
        actix_rt::Arbiter::current().stop();
    }
}

/// A call of the endpoint's protocol; the reply is the protocol's response.
pub(crate) struct Call<P: Protocol> {
    pub(crate) request: P::Request,
    pub(crate) token: Option<FencingToken>,
}

impl<P: Protocol> Message for Call<P> {
    type Result = Result<P::Response, RpcError>;
}

impl<E: RpcEndpoint> Handler<Call<E::Protocol>> for EndpointActor<E> {
    type Result = actix::Response<Result<<E::Protocol as Protocol>::Response, RpcError>>;

    fn handle(&mut self, call: Call<E::Protocol>, ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self
            .check_started()
            .and_then(|()| self.check_fencing(call.token))
        {
            return actix::Response::reply(Err(e));
        }
        let method = <E::Protocol as Protocol>::method_name(&call.request);
        let endpoint = self.name.clone();
        let remote_error = move |message: String| RpcError::Remote {
            endpoint: endpoint.to_string(),
            method: method.to_string(),
            message,
        };
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.run(ctx, |e, ectx| {
                <E::Protocol as Dispatch<E>>::dispatch(e, ectx, call.request)
            })
        }));
        match dispatched {
            Err(panic) => {
                let message = panic_message(&panic);
                tracing::warn!(endpoint = %self.name, method, %message, "handler panicked");
                actix::Response::reply(Err(remote_error(format!("handler panicked: {message}"))))
            }
            Ok(Reply(ReplyInner::Ready(r))) => actix::Response::reply(r.map_err(remote_error)),
            Ok(Reply(ReplyInner::Later(fut))) => {
                let fut = AssertUnwindSafe(fut).catch_unwind().map(move |r| match r {
                    Ok(r) => r.map_err(remote_error),
                    Err(panic) => Err(remote_error(format!(
                        "handler panicked: {}",
                        panic_message(&panic)
                    ))),
                });
                actix::Response::fut(fut)
            }
        }
    }
}

/// Reports a contained panic of endpoint code that has no caller to fail. ERROR, not
/// WARN: a panic is a broken invariant, and this line is the only trace of it.
fn log_mail_panic(endpoint: &str, what: &'static str, panic: &Box<dyn std::any::Any + Send>) {
    let message = panic_message(panic);
    tracing::error!(endpoint, what, %message, "endpoint code panicked; panic contained");
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

struct RunAsync<E: RpcEndpoint>(Mail<E>);

impl<E: RpcEndpoint> Message for RunAsync<E> {
    type Result = ();
}

impl<E: RpcEndpoint> Handler<RunAsync<E>> for EndpointActor<E> {
    type Result = ();

    fn handle(&mut self, mail: RunAsync<E>, ctx: &mut Self::Context) {
        match self.state {
            Lifecycle::Stopped => self.deferred.push(mail.0),
            Lifecycle::Started | Lifecycle::Terminating => {
                self.run_guarded(ctx, "run_async", mail.0);
            }
            Lifecycle::Terminated => {}
        }
    }
}

enum Control {
    Start,
    Stop,
}

impl Message for Control {
    type Result = ();
}

impl<E: RpcEndpoint> Handler<Control> for EndpointActor<E> {
    type Result = ();

    fn handle(&mut self, control: Control, ctx: &mut Self::Context) {
        match (control, self.state) {
            (Control::Start, Lifecycle::Stopped) => {
                self.set_state(Lifecycle::Started);
                tracing::debug!(endpoint = %self.name, "endpoint started");
                if !self.run_guarded(ctx, "on_start", |e, ectx| e.on_start(ectx)) {
                    // Half started is not usable: stop, so that watchers learn of it.
                    self.deferred.clear();
                    self.shut_down(ctx);
                    return;
                }
                for mail in std::mem::take(&mut self.deferred) {
                    self.run_guarded(ctx, "run_async", mail);
                }
            }
            (Control::Stop, Lifecycle::Stopped | Lifecycle::Started) => self.shut_down(ctx),
            // Starting twice, or stopping while already stopping, changes nothing.
            _ => {}
        }
    }
}

/// Spawns `endpoint` on a new arbiter thread, in state [`Lifecycle::Stopped`].
///
/// `on_terminated` runs on the endpoint's thread once it has terminated.
pub(crate) fn spawn_endpoint<E: RpcEndpoint>(
    name: &str,
    endpoint: E,
    on_terminated: Box<dyn FnOnce() + Send>,
) -> EndpointHandle<E> {
    let name: Arc<str> = Arc::from(name);
    let (state_tx, state_rx) = watch::channel(Lifecycle::Stopped);
    let arbiter = crate::actors::new_arbiter();
    let actor_name = name.clone();
    let addr = EndpointActor::start_in_arbiter(&arbiter, move |_| EndpointActor {
        endpoint,
        name: actor_name,
        state: Lifecycle::Stopped,
        state_tx,
        deferred: Vec::new(),
        on_terminated: Some(on_terminated),
    });
    EndpointHandle {
        addr,
        name,
        state: state_rx,
    }
}

/// A cloneable, thread-safe handle to an endpoint's mailbox.
pub struct EndpointHandle<E: RpcEndpoint> {
    addr: actix::Addr<EndpointActor<E>>,
    name: Arc<str>,
    state: watch::Receiver<Lifecycle>,
}

impl<E: RpcEndpoint> Clone for EndpointHandle<E> {
    fn clone(&self) -> Self {
        EndpointHandle {
            addr: self.addr.clone(),
            name: self.name.clone(),
            state: self.state.clone(),
        }
    }
}

impl<E: RpcEndpoint> EndpointHandle<E> {
    /// The endpoint's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the endpoint: runs `on_start`, then serves calls.
    pub fn start(&self) {
        self.addr.do_send(Control::Start);
    }

    /// Stops the endpoint gracefully (see the module docs); returns at once.
    pub fn stop(&self) {
        self.addr.do_send(Control::Stop);
    }

    /// Runs `f` on the endpoint's thread (Flink's `runAsync`). Closures sent before the
    /// endpoint starts run right after `on_start`; after termination they are dropped.
    pub fn run_async(&self, f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>) + Send + 'static) {
        self.addr.do_send(RunAsync(Box::new(f)));
    }

    /// Runs `f` on the endpoint's thread after `delay`.
    pub fn schedule_run_async(
        &self,
        delay: Duration,
        f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>) + Send + 'static,
    ) {
        self.run_async(move |_, ctx| ctx.run_later(delay, f));
    }

    /// Runs `f` on the endpoint's thread and returns its result; a panic in `f` fails
    /// the call with [`RpcError::Remote`] (method `call`) and the endpoint lives on.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut E, &mut EndpointContext<'_, E>) -> R + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = Result<R, RpcError>> + Send>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run_async(move |e, ctx| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(e, ctx)));
            let _ = tx.send(result.map_err(|panic| {
                let message = panic_message(&panic);
                tracing::warn!(endpoint = %ctx.name(), %message, "call closure panicked");
                RpcError::Remote {
                    endpoint: ctx.name().to_string(),
                    method: "call".to_string(),
                    message: format!("closure panicked: {message}"),
                }
            }));
        });
        let name = self.name.clone();
        Box::pin(async move {
            rx.await.map_err(|_| RpcError::EndpointTerminated {
                endpoint: name.to_string(),
            })?
        })
    }

    /// The current lifecycle state.
    pub fn state(&self) -> Lifecycle {
        *self.state.borrow()
    }

    /// Resolves once the endpoint has terminated.
    pub async fn terminated(&self) {
        let mut rx = self.state.clone();
        // An error means the sender is gone, which happens only after termination.
        let _ = rx.wait_for(|s| *s == Lifecycle::Terminated).await;
    }

    /// A receiver of lifecycle changes.
    pub fn lifecycle(&self) -> watch::Receiver<Lifecycle> {
        self.state.clone()
    }

    pub(crate) fn recipient(&self) -> actix::Recipient<Call<E::Protocol>> {
        self.addr.clone().recipient()
    }
}
