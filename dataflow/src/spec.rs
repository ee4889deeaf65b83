//! How a JobGraph names code: registered factory names plus serialized configuration.
//!
//! User functions can't travel over the wire, so a graph never contains closures. It
//! contains [`FactoryRef`]s — a name registered in every process's
//! [`OperatorRegistry`](crate::registry::OperatorRegistry) and that factory's
//! configuration, encoded with rmp-serde as a *named* map so configs can gain optional
//! fields without breaking old graphs. Any process running the same binary can turn a
//! [`OperatorSpec`] back into a running operator.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};

/// A registered factory's name and its serialized configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryRef {
    /// Registered factory name, e.g. `rill.source.datagen`.
    pub name: String,
    /// The factory's configuration, rmp-serde encoded (named fields).
    pub config: Vec<u8>,
}

impl FactoryRef {
    /// A reference to factory `name` with configuration `config`.
    pub fn new<C: Serialize>(name: impl Into<String>, config: &C) -> Result<Self> {
        let name = name.into();
        let config = rmp_serde::to_vec_named(config).map_err(|e| DataflowError::InvalidConfig {
            factory: name.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        Ok(Self { name, config })
    }

    /// A reference to factory `name` whose configuration is `()`.
    pub fn unit(name: impl Into<String>) -> Self {
        // rmp encodes `()` as nil.
        Self {
            name: name.into(),
            config: vec![0xc0],
        }
    }

    /// Encodes a built-in configuration, which consists only of plain fields.
    pub(crate) fn builtin<C: Serialize>(name: &str, config: &C) -> Self {
        // Built-in configs are structs of numbers, strings, options and vectors: encoding
        // them into a Vec cannot fail (rmp only fails on writer errors or maps with
        // non-string keys, neither of which occurs).
        Self::new(name, config).expect("built-in operator configs always encode")
    }

    /// Decodes the configuration as `C`.
    pub fn decode<C: DeserializeOwned>(&self) -> Result<C> {
        decode_config(&self.name, &self.config)
    }
}

/// Decodes `config` bytes for factory `factory`.
pub(crate) fn decode_config<C: DeserializeOwned>(factory: &str, config: &[u8]) -> Result<C> {
    rmp_serde::from_slice(config).map_err(|e| DataflowError::InvalidConfig {
        factory: factory.to_owned(),
        reason: e.to_string(),
    })
}

/// The configuration of a factory that wraps a user function with an operator's own
/// parameters (interval joins, broadcast state): the parameters `P` and the function's
/// configuration `C`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WithParams<P, C> {
    /// The operator's parameters (interval bounds, broadcast state name).
    pub params: P,
    /// The function's configuration.
    pub function: C,
}

/// `function`'s name, with its configuration wrapped in a [`WithParams`] with `params`.
pub(crate) fn with_params<P: Serialize>(params: &P, function: &FactoryRef) -> Result<FactoryRef> {
    // A named msgpack map {"params": …, "function": <the function's own bytes>}: the
    // function's config is spliced in as is, so user bytes need no decoding here.
    let mut config = vec![0x82];
    config.extend(encode("params", &function.name)?);
    config.extend(encode(params, &function.name)?);
    config.extend(encode("function", &function.name)?);
    config.extend_from_slice(&function.config);
    Ok(FactoryRef {
        name: function.name.clone(),
        config,
    })
}

fn encode<T: Serialize + ?Sized>(v: &T, factory: &str) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(|e| DataflowError::InvalidConfig {
        factory: factory.to_owned(),
        reason: format!("cannot encode: {e}"),
    })
}

/// The role of an operator; registry entries and graph positions must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperatorKind {
    /// Produces records; the head of a vertex without inputs.
    Source,
    /// One record in, one record out.
    Map,
    /// One record in, zero or one (the same) record out.
    Filter,
    /// One record in, any number out.
    FlatMap,
    /// Keyed: folds records of a key into an accumulator, emitting each update.
    Reduce,
    /// Keyed: arbitrary per-key processing with per-key state.
    Process,
    /// Keyed: windows ([`window`](crate::window)).
    Window,
    /// Consumes records, emits nothing.
    Sink,
    /// Two inputs, not keyed: `connect` → `process` ([`two_input`](crate::two_input)).
    CoProcess,
    /// Two keyed inputs with a key selector each: keyed `connect` → `process`, joins.
    KeyedCoProcess,
    /// A keyed input and a broadcast input ([`broadcast`](crate::broadcast)).
    KeyedBroadcast,
}

impl OperatorKind {
    /// Whether operators of this kind need a key selector (follow a `key_by`).
    pub fn is_keyed(self) -> bool {
        matches!(
            self,
            OperatorKind::Reduce
                | OperatorKind::Process
                | OperatorKind::Window
                | OperatorKind::KeyedCoProcess
                | OperatorKind::KeyedBroadcast
        )
    }

    /// Whether operators of this kind have two inputs.
    pub fn is_two_input(self) -> bool {
        matches!(
            self,
            OperatorKind::CoProcess | OperatorKind::KeyedCoProcess | OperatorKind::KeyedBroadcast
        )
    }
}

/// One operator of a job: which factory builds it and how it is identified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSpec {
    /// Display name (logs, vertex names).
    pub name: String,
    /// Stable user-assigned id for state (Flink's `uid`), if any.
    pub uid: Option<String>,
    /// The operator's role.
    pub kind: OperatorKind,
    /// Factory and configuration building the operator.
    pub factory: FactoryRef,
    /// Key selector for keyed operators (`Reduce`, `Process`; input 1 of
    /// `KeyedCoProcess`).
    pub key: Option<FactoryRef>,
    /// Key selector of input 2 of a `KeyedCoProcess` operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key2: Option<FactoryRef>,
}
