//! State descriptors: how an operator declares a state (name, kind, types, TTL).
//!
//! As in Flink, a descriptor is a name plus a type; registering the same name twice with
//! the same kind and types returns the same state, with different ones an
//! [`IncompatibleState`](crate::StateError::IncompatibleState) error. The value type
//! travels into snapshots as its Rust type name ([`std::any::type_name`]) next to the
//! MessagePack encoding of every value, so a snapshot can be read (and dumped as JSON)
//! without the job that wrote it.
//!
//! TTL ([`TtlConfig`], Flink's `StateTtlConfig`) is on processing time from the
//! backend's injected [`TtlClock`](crate::TtlClock). There is one timestamp per key and
//! namespace, for every kind: a list or a map expires as a whole (Flink keeps one per list
//! element and per map entry; rill's lists and maps are stored as one value per key and
//! namespace, so one timestamp is what a lookup can check for free). Expired entries are never returned
//! (`NeverReturnExpired`); they are removed when accessed, when a full snapshot is taken
//! (`cleanupFullSnapshot`) and by [`KeyedStateBackend::cleanup_expired`]
//! (incremental cleanup, a bounded number of entries per call).
//!
//! [`KeyedStateBackend::cleanup_expired`]: crate::KeyedStateBackend::cleanup_expired

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of a state; fixed by the descriptor, recorded in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKind {
    /// Keyed: one value per key and namespace.
    Value,
    /// Keyed: a list per key and namespace.
    List,
    /// Keyed: a map per key and namespace.
    Map,
    /// Keyed: a value folded with a reduce function.
    Reducing,
    /// Keyed: an accumulator folded with an aggregate function.
    Aggregating,
    /// Operator: a list split evenly over subtasks on rescale.
    OperatorList,
    /// Operator: a list every subtask gets whole on restore.
    UnionList,
    /// Operator: a map copied to every subtask (broadcast state).
    Broadcast,
}

impl StateKind {
    /// Whether this is a keyed state kind.
    pub fn is_keyed(self) -> bool {
        matches!(
            self,
            StateKind::Value
                | StateKind::List
                | StateKind::Map
                | StateKind::Reducing
                | StateKind::Aggregating
        )
    }

    /// Flink's name of the kind (`VALUE`, `LIST`, …), used in tools' output.
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Value => "VALUE",
            StateKind::List => "LIST",
            StateKind::Map => "MAP",
            StateKind::Reducing => "REDUCING",
            StateKind::Aggregating => "AGGREGATING",
            StateKind::OperatorList => "OPERATOR_LIST",
            StateKind::UnionList => "UNION_LIST",
            StateKind::Broadcast => "BROADCAST",
        }
    }
}

/// When an entry's TTL timestamp is refreshed (Flink's `StateTtlConfig.UpdateType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtlUpdateType {
    /// On creation and every write (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// Also on every read.
    OnReadAndWrite,
}

/// Time-to-live of a state's entries, on processing time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TtlConfig {
    /// How long an entry lives after its last refresh.
    pub ttl: Duration,
    /// What refreshes it.
    pub update_type: TtlUpdateType,
}

impl TtlConfig {
    /// Entries expire `ttl` after creation or their last write.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            update_type: TtlUpdateType::OnCreateAndWrite,
        }
    }

    /// Reads refresh the timestamp too.
    pub fn refresh_on_read(mut self) -> Self {
        self.update_type = TtlUpdateType::OnReadAndWrite;
        self
    }

    /// The TTL in milliseconds (saturating).
    pub fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What a snapshot records about one state: enough to read it without the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state's name (unique within an operator).
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Rust type name of the key (keyed states) or `""`.
    pub key_type: String,
    /// Rust type name of the namespace (keyed states) or `""`.
    pub namespace_type: String,
    /// Rust type name of the stored value: the element type for lists, the accumulator
    /// for aggregating state, the user value for maps.
    pub value_type: String,
    /// Rust type name of a map's user key, or `""`.
    pub user_key_type: String,
    /// The TTL, if any.
    pub ttl: Option<TtlConfig>,
}

/// A reduce function for [`ReducingStateDescriptor`].
pub type ReduceFn<T> = Arc<dyn Fn(&T, T) -> T + Send + Sync>;

/// An aggregate function for [`AggregatingStateDescriptor`] (Flink's
/// `AggregateFunction`): accumulators are created, fed inputs and read out.
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Adds `value` to `acc`.
    fn add(&self, value: IN, acc: &mut ACC);
    /// The result for `acc`.
    fn get_result(&self, acc: &ACC) -> OUT;
}

/// Declares a keyed value state holding a `T`.
pub struct ValueStateDescriptor<T> {
    /// State name.
    pub name: String,
    /// TTL, if any.
    pub ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> T>,
}

/// Declares a keyed list state of `T` elements.
pub struct ListStateDescriptor<T> {
    /// State name.
    pub name: String,
    /// TTL, if any (the whole list per key and namespace).
    pub ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> T>,
}

/// Declares a keyed map state from `UK` to `UV`.
pub struct MapStateDescriptor<UK, UV> {
    /// State name.
    pub name: String,
    /// TTL, if any (the whole map per key and namespace).
    pub ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> (UK, UV)>,
}

/// Declares a keyed reducing state: `add` folds values with `reduce`.
pub struct ReducingStateDescriptor<T> {
    /// State name.
    pub name: String,
    /// TTL, if any.
    pub ttl: Option<TtlConfig>,
    /// The reduce function.
    pub reduce: ReduceFn<T>,
}

/// Declares a keyed aggregating state with accumulator `ACC`.
pub struct AggregatingStateDescriptor<IN, ACC, OUT> {
    /// State name.
    pub name: String,
    /// TTL, if any.
    pub ttl: Option<TtlConfig>,
    /// The aggregate function.
    pub aggregate: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
}

macro_rules! simple_descriptor {
    ($ty:ident < $($p:ident),+ >) => {
        impl<$($p),+> $ty<$($p),+> {
            /// A descriptor named `name`, without TTL.
            pub fn new(name: impl Into<String>) -> Self {
                Self { name: name.into(), ttl: None, _t: PhantomData }
            }
            /// The same descriptor with a TTL.
            pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }
        }
        impl<$($p),+> Clone for $ty<$($p),+> {
            fn clone(&self) -> Self {
                Self { name: self.name.clone(), ttl: self.ttl, _t: PhantomData }
            }
        }
    };
}
simple_descriptor!(ValueStateDescriptor<T>);
simple_descriptor!(ListStateDescriptor<T>);
simple_descriptor!(MapStateDescriptor<UK, UV>);

impl<T> ReducingStateDescriptor<T> {
    /// A descriptor named `name` folding with `reduce`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&T, T) -> T + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            reduce: Arc::new(reduce),
        }
    }
    /// The same descriptor with a TTL.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<IN, ACC, OUT> AggregatingStateDescriptor<IN, ACC, OUT> {
    /// A descriptor named `name` aggregating with `aggregate`.
    pub fn new(
        name: impl Into<String>,
        aggregate: impl AggregateFunction<IN, ACC, OUT> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            aggregate: Arc::new(aggregate),
        }
    }
    /// The same descriptor with a TTL.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}
