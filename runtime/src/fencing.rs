//! Fencing tokens: which leader term a call belongs to.
//!
//! A fenced endpoint (see [`Fencing`](crate::endpoint::Fencing)) accepts a call only when
//! it carries the endpoint's current token; a fenced gateway
//! ([`with_fencing_token`](crate::gateway::RawGateway::with_fencing_token)) attaches its
//! token to every call. A new leader term gets a new random token, so calls meant for an
//! old JobMaster or ResourceManager are rejected with
//! [`RpcError::Fencing`](crate::RpcError::Fencing) instead of acting on the wrong term.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The wire form of every fencing token: 128 random bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FencingToken(pub u128);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

macro_rules! fencing_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u128);

        impl $name {
            /// Generates a token for a new leader term.
            pub fn generate(rng: &mut impl rand::Rng) -> Self {
                $name(rng.gen())
            }
        }

        impl From<$name> for FencingToken {
            fn from(id: $name) -> FencingToken {
                FencingToken(id.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }
    };
}

fencing_id!(
    /// The leader term of a JobMaster.
    JobMasterId
);
fencing_id!(
    /// The leader term of a ResourceManager.
    ResourceManagerId
);
fencing_id!(
    /// The leader term of a Dispatcher.
    DispatcherId
);
