//! rill-runtime: the actor RPC layer every rill component stands on.
//!
//! * [`endpoint`]: [`RpcEndpoint`](endpoint::RpcEndpoint), an actix actor with a lifecycle
//!   and a mailbox ("main thread");
//! * [`gateway`]: the [`gateway!`] macro — one definition per endpoint yields the
//!   serializable message enum, the client proxy and the server dispatch;
//! * [`service`]: [`RpcService`](service::RpcService), one per process: a registry of local
//!   endpoints and one QUIC endpoint for remote callers;
//! * [`frame`], [`security`]: length-prefixed frames and cluster authentication, shared
//!   with the data plane;
//! * [`fencing`], [`heartbeat`], [`death_watch`], [`registration`]: leader tokens,
//!   liveness, and connecting to a leader with backoff;
//! * [`clock`], [`config`]: injected time and figment configuration.
//!
//! See `../shared/DESIGN.md` §2 for the architecture.

mod actors;
pub mod address;
pub mod clock;
pub mod config;
pub mod death_watch;
pub mod endpoint;
pub mod error;
pub mod fencing;
pub mod frame;
pub mod gateway;
pub mod heartbeat;
pub mod ids;
pub mod registration;
mod remote;
pub mod security;
pub mod service;
pub mod tasks;

pub use address::RpcAddress;
pub use death_watch::{Terminated, TerminationReason, Watch};
pub use endpoint::{EndpointContext, EndpointHandle, Fencing, Lifecycle, Reply, RpcEndpoint};
pub use error::{HandshakeError, RpcError};
pub use fencing::{DispatcherId, FencingToken, JobMasterId, ResourceManagerId};
pub use gateway::GatewayClient;
pub use ids::ResourceId;
pub use service::{LocalCalls, RpcService, RpcServiceConfig, ServiceDirectory, ServiceError};
