//! Typed gateways: one definition per endpoint, usable locally and across the network.
//!
//! [`gateway!`](crate::gateway!) turns a list of method signatures into a module with
//!
//! * `Request` / `Response`: serializable enums, one variant per method (rmp-serde on the
//!   wire);
//! * `Protocol`: the marker type tying them together ([`Protocol`]), with the server
//!   dispatch ([`Dispatch`]) for every endpoint that implements `Handler`;
//! * `Handler`: the trait an endpoint implements, one method per gateway method;
//! * `Gateway`: the client proxy, a cheap `Clone` that is the same type whether the
//!   endpoint is in this process (an actix `Recipient`, no serialization) or behind QUIC.
//!
//! Methods without a return type are **tells**: fire-and-forget, the proxy method returns
//! at once and only fails if the message certainly was not sent. Methods with a return
//! type are **asks**: the proxy awaits the answer for at most the gateway's timeout
//! (`rpc.ask-timeout`, default 10 s; [`RawGateway::with_timeout`] overrides it per
//! gateway value, so per call as `gw.with_timeout(d).method(..)`).
//!
//! ```ignore
//! rill_runtime::gateway! {
//!     /// Echoes text.
//!     pub mod echo("echo") {
//!         /// Returns `text` unchanged.
//!         fn echo(text: String) -> String;
//!         /// Counts a poke.
//!         fn poke(n: u64);
//!     }
//! }
//! impl echo::Handler for MyEcho {
//!     fn echo(&mut self, _ctx: &mut EndpointContext<'_, Self>, text: String) -> Reply<String> {
//!         Reply::ready(text)
//!     }
//!     fn poke(&mut self, _ctx: &mut EndpointContext<'_, Self>, n: u64) { self.pokes += n; }
//! }
//! impl RpcEndpoint for MyEcho { type Protocol = echo::Protocol; }
//! let gw: echo::Gateway = service.connect(&address).await?;
//! assert_eq!(gw.echo("hi".into()).await?, "hi");
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::address::RpcAddress;
use crate::endpoint::{Call, EndpointContext, Reply, RpcEndpoint};
use crate::error::RpcError;
use crate::fencing::FencingToken;
use crate::remote::ClientSession;

/// A gateway protocol: the request and response enums of one gateway.
pub trait Protocol: Send + 'static {
    /// Gateway name, checked in the handshake.
    const NAME: &'static str;
    /// One variant per method, carrying its arguments.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// One variant per method, carrying its result.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// The method a request calls (for errors and logs).
    fn method_name(request: &Self::Request) -> &'static str;
    /// Whether the method is a tell (no answer is sent).
    fn is_tell(request: &Self::Request) -> bool;
}

/// Server-side dispatch of a protocol onto an endpoint's handlers.
pub trait Dispatch<E: RpcEndpoint>: Protocol {
    /// Calls the handler for `request`.
    fn dispatch(
        endpoint: &mut E,
        ctx: &mut EndpointContext<'_, E>,
        request: Self::Request,
    ) -> Reply<Self::Response>;
}

/// A generated client proxy (`<module>::Gateway`).
pub trait GatewayClient: Clone + Send + Sync + 'static {
    /// Its protocol.
    type Protocol: Protocol;
    /// Wraps a raw gateway.
    fn from_raw(raw: RawGateway<Self::Protocol>) -> Self;
    /// The raw gateway inside.
    fn raw(&self) -> &RawGateway<Self::Protocol>;
}

pub(crate) enum Target<P: Protocol> {
    Local(actix::Recipient<Call<P>>),
    Remote(Arc<ClientSession<P>>),
}

impl<P: Protocol> Clone for Target<P> {
    fn clone(&self) -> Self {
        match self {
            Target::Local(r) => Target::Local(r.clone()),
            Target::Remote(s) => Target::Remote(s.clone()),
        }
    }
}

/// The untyped-method core of every gateway proxy: where to send, with which timeout and
/// fencing token.
pub struct RawGateway<P: Protocol> {
    target: Target<P>,
    address: Arc<RpcAddress>,
    timeout: Duration,
    token: Option<FencingToken>,
}

impl<P: Protocol> Clone for RawGateway<P> {
    fn clone(&self) -> Self {
        RawGateway {
            target: self.target.clone(),
            address: self.address.clone(),
            timeout: self.timeout,
            token: self.token,
        }
    }
}

impl<P: Protocol> std::fmt::Debug for RawGateway<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("protocol", &P::NAME)
            .field("address", &self.address.to_string())
            .field("local", &self.is_local())
            .finish()
    }
}

impl<P: Protocol> RawGateway<P> {
    pub(crate) fn new(target: Target<P>, address: RpcAddress, timeout: Duration) -> Self {
        RawGateway {
            target,
            address: Arc::new(address),
            timeout,
            token: None,
        }
    }

    /// The endpoint's address.
    pub fn address(&self) -> &RpcAddress {
        &self.address
    }

    /// Whether calls stay in this process (no serialization).
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// Closes the QUIC connection this gateway's calls travel on (shared with every other
    /// gateway to the same peer process), so that the next
    /// [`connect`](crate::RpcService::connect) dials afresh. Call it when the peer was
    /// declared lost (heartbeat timeout, `Terminated`): a killed process's connection
    /// looks open until its idle timeout, and a new process at the same address cannot
    /// answer on it. Calls in flight fail with [`RpcError::ConnectionLost`]. Does nothing
    /// for a local gateway.
    pub fn close_connection(&self, reason: &str) {
        if let Target::Remote(session) = &self.target {
            session.close_connection(reason);
        }
    }

    /// The ask timeout of this gateway value.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A copy whose asks time out after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RawGateway {
            timeout,
            ..self.clone()
        }
    }

    /// A copy that attaches `token` to every call (a fenced gateway).
    pub fn with_fencing_token(&self, token: impl Into<FencingToken>) -> Self {
        RawGateway {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// Sends a request and awaits its response.
    pub async fn ask(&self, request: P::Request) -> Result<P::Response, RpcError> {
        let method = P::method_name(&request);
        match &self.target {
            Target::Local(recipient) => {
                let call = Call {
                    request,
                    token: self.token,
                };
                match tokio::time::timeout(self.timeout, recipient.send(call)).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_mailbox_closed)) => Err(RpcError::EndpointTerminated {
                        endpoint: self.address.endpoint.clone(),
                    }),
                    Err(_) => Err(self.timeout_error(method)),
                }
            }
            Target::Remote(session) => {
                // Dropping the pending reply on timeout forgets its id; a late answer is
                // discarded by the session.
                let reply = session.ask(&request, self.token)?;
                match tokio::time::timeout(self.timeout, reply).await {
                    Ok(result) => result,
                    Err(_) => Err(self.timeout_error(method)),
                }
            }
        }
    }

    /// Sends a request without waiting for (or getting) an answer.
    pub fn tell(&self, request: P::Request) -> Result<(), RpcError> {
        match &self.target {
            // `do_send` ignores the mailbox capacity (a full mailbox must not drop tells);
            // a stopped endpoint is the only way the message can be refused.
            Target::Local(recipient) if recipient.connected() => {
                recipient.do_send(Call {
                    request,
                    token: self.token,
                });
                Ok(())
            }
            Target::Local(_) => Err(RpcError::EndpointTerminated {
                endpoint: self.address.endpoint.clone(),
            }),
            Target::Remote(session) => session.tell(&request, self.token),
        }
    }

    fn timeout_error(&self, method: &str) -> RpcError {
        RpcError::Timeout {
            method: method.to_string(),
            address: self.address.to_string(),
            timeout: self.timeout,
        }
    }
}

/// Decodes a response variant that does not match its request (a peer bug).
#[doc(hidden)]
pub fn unexpected_response(protocol: &str, method: &str) -> RpcError {
    RpcError::Codec {
        what: format!("{protocol}.{method} response"),
        reason: "the response variant does not match the request".into(),
    }
}

/// Defines a gateway: see the [module docs](crate::gateway).
#[macro_export]
macro_rules! gateway {
    (
        $(#[$gmeta:meta])*
        $vis:vis mod $module:ident ($gname:literal) {
            $(
                $(#[$mmeta:meta])*
                fn $method:ident ( $($arg:ident : $argty:ty),* $(,)? ) $(-> $ret:ty)? ;
            )*
        }
    ) => {
        $(#[$gmeta])*
        // Generated API: parts of it go unused, and the module may be private.
        #[allow(non_camel_case_types, unreachable_pub, dead_code)]
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;

            /// The gateway's requests, one variant per method.
            #[derive(Debug, ::serde::Serialize, ::serde::Deserialize)]
            #[allow(missing_docs)]
            pub enum Request {
                $( $(#[$mmeta])* $method { $($arg: $argty),* }, )*
            }

            /// The gateway's responses, one variant per method.
            #[derive(Debug, ::serde::Serialize, ::serde::Deserialize)]
            #[allow(missing_docs)]
            pub enum Response {
                $( $(#[$mmeta])* $method($crate::__gateway_ret!($($ret)?)), )*
            }

            /// Marker type of this gateway's protocol.
            #[derive(Debug, Clone, Copy)]
            pub struct Protocol;

            impl $crate::gateway::Protocol for Protocol {
                const NAME: &'static str = $gname;
                type Request = Request;
                type Response = Response;

                fn method_name(request: &Request) -> &'static str {
                    match request {
                        $( Request::$method { .. } => stringify!($method), )*
                    }
                }

                fn is_tell(request: &Request) -> bool {
                    match request {
                        $( Request::$method { .. } => $crate::__gateway_is_tell!($($ret)?), )*
                    }
                }
            }

            /// The handlers an endpoint serving this gateway implements.
            pub trait Handler: $crate::endpoint::RpcEndpoint {
                $(
                    $crate::__gateway_handler_method!(
                        [$(#[$mmeta])*] $method ($($arg : $argty),*) $(-> $ret)?
                    );
                )*
            }

            impl<E: Handler> $crate::gateway::Dispatch<E> for Protocol {
                fn dispatch(
                    endpoint: &mut E,
                    ctx: &mut $crate::endpoint::EndpointContext<'_, E>,
                    request: Request,
                ) -> $crate::endpoint::Reply<Response> {
                    match request {
                        $(
                            Request::$method { $($arg),* } => $crate::__gateway_dispatch_arm!(
                                endpoint, ctx, $method ($($arg),*) $(-> $ret)?
                            ),
                        )*
                    }
                }
            }

            /// The client proxy: the same type for local and remote endpoints.
            #[derive(Clone, Debug)]
            pub struct Gateway($crate::gateway::RawGateway<Protocol>);

            impl $crate::gateway::GatewayClient for Gateway {
                type Protocol = Protocol;
                fn from_raw(raw: $crate::gateway::RawGateway<Protocol>) -> Self {
                    Gateway(raw)
                }
                fn raw(&self) -> &$crate::gateway::RawGateway<Protocol> {
                    &self.0
                }
            }

            impl Gateway {
                /// The endpoint's address.
                pub fn address(&self) -> &$crate::address::RpcAddress {
                    self.0.address()
                }

                /// Whether calls stay in this process.
                pub fn is_local(&self) -> bool {
                    self.0.is_local()
                }

                /// Closes the connection to the peer process, for a peer declared lost
                /// (see `RawGateway::close_connection`).
                pub fn close_connection(&self, reason: &str) {
                    self.0.close_connection(reason)
                }

                /// A copy whose asks time out after `timeout`.
                pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                    Gateway(self.0.with_timeout(timeout))
                }

                /// A copy that attaches a fencing token to every call.
                pub fn with_fencing_token(
                    &self,
                    token: impl Into<$crate::fencing::FencingToken>,
                ) -> Self {
                    Gateway(self.0.with_fencing_token(token))
                }

                $(
                    $crate::__gateway_client_method!(
                        [$(#[$mmeta])*] $method ($($arg : $argty),*) $(-> $ret)?
                    );
                )*
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gateway_ret {
    () => {
        ()
    };
    ($ret:ty) => {
        $ret
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gateway_is_tell {
    () => {
        true
    };
    ($ret:ty) => {
        false
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gateway_handler_method {
    ([$(#[$mmeta:meta])*] $method:ident ($($arg:ident : $argty:ty),*)) => {
        $(#[$mmeta])*
        fn $method(&mut self, ctx: &mut $crate::endpoint::EndpointContext<'_, Self> $(, $arg: $argty)*);
    };
    ([$(#[$mmeta:meta])*] $method:ident ($($arg:ident : $argty:ty),*) -> $ret:ty) => {
        $(#[$mmeta])*
        fn $method(
            &mut self,
            ctx: &mut $crate::endpoint::EndpointContext<'_, Self>
            $(, $arg: $argty)*
        ) -> $crate::endpoint::Reply<$ret>;
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gateway_dispatch_arm {
    ($endpoint:ident, $ctx:ident, $method:ident ($($arg:ident),*)) => {{
        $endpoint.$method($ctx $(, $arg)*);
        $crate::endpoint::Reply::ready(Response::$method(()))
    }};
    ($endpoint:ident, $ctx:ident, $method:ident ($($arg:ident),*) -> $ret:ty) => {
        $endpoint.$method($ctx $(, $arg)*).map(Response::$method)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gateway_client_method {
    ([$(#[$mmeta:meta])*] $method:ident ($($arg:ident : $argty:ty),*)) => {
        $(#[$mmeta])*
        ///
        /// A tell: returns once the message is queued; fails only if it certainly was not sent.
        pub fn $method(&self $(, $arg: $argty)*) -> ::std::result::Result<(), $crate::RpcError> {
            self.0.tell(Request::$method { $($arg),* })
        }
    };
    ([$(#[$mmeta:meta])*] $method:ident ($($arg:ident : $argty:ty),*) -> $ret:ty) => {
        $(#[$mmeta])*
        pub async fn $method(&self $(, $arg: $argty)*) -> ::std::result::Result<$ret, $crate::RpcError> {
            match self.0.ask(Request::$method { $($arg),* }).await? {
                Response::$method(value) => Ok(value),
                #[allow(unreachable_patterns)]
                _ => Err($crate::gateway::unexpected_response(
                    <Protocol as $crate::gateway::Protocol>::NAME,
                    stringify!($method),
                )),
            }
        }
    };
}
