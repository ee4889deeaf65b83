//! The broadcast state pattern (Flink's `BroadcastStream`,
//! `BroadcastProcessFunction`, `KeyedBroadcastProcessFunction`).
//!
//! `rules.broadcast_with(&descriptor)` sends every record of `rules` to every subtask of
//! the operator it is connected to; `events.connect_broadcast(&rules)` (or a keyed
//! stream's) then runs a function with two entry points:
//!
//! * `process_broadcast_element` for every broadcast record, with **read-write** access
//!   to the broadcast state (a `Value → Value` map). Every subtask sees the same
//!   broadcast records in the same order per upstream channel, so functions that update
//!   the state deterministically keep all copies equal (Flink's contract);
//! * `process_element` for every record of the other input, with **read-only** access
//!   to it (and, in the keyed variant, the key's state, timers and side outputs through
//!   [`ProcessContext`], as in [`KeyedProcessFunction`]).
//!
//! The broadcast state is operator state of kind broadcast
//! ([`rill_state`]'s `BroadcastState`, named by the descriptor): each subtask
//! snapshots its copy, and on restore — at any parallelism — every subtask gets a copy.
//! The keyed variant runs on a [`KeyedProcessOperator`] (one keyed backend, one value
//! state per key, one timer service); broadcast records bypass its key selector.

use std::collections::BTreeMap;

use rill_state::OperatorStateBackend;
use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;
use crate::keyed::{KeyedProcessFunction, KeyedProcessOperator, ProcessContext};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::two_input::TwoInputOperator;
use crate::value::Value;

/// Names the broadcast state (Flink's `MapStateDescriptor` of a broadcast stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastStateDescriptor {
    /// The state's name in snapshots.
    pub name: String,
}

impl BroadcastStateDescriptor {
    /// A descriptor named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// The broadcast state: one map per subtask, equal on every subtask.
pub type BroadcastMap = BTreeMap<Value, Value>;

/// A non-keyed stream connected with a broadcast stream.
pub trait BroadcastProcessFunction: Send + 'static {
    /// One record of the non-broadcast input; the broadcast state is read-only.
    fn process_element(
        &mut self,
        value: &Value,
        broadcast: &BroadcastMap,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// One broadcast record; the broadcast state may change.
    fn process_broadcast_element(
        &mut self,
        value: &Value,
        broadcast: &mut BroadcastMap,
        out: &mut Collector<'_>,
    ) -> Result<()>;
}

/// A keyed stream connected with a broadcast stream.
pub trait KeyedBroadcastProcessFunction: Send + 'static {
    /// The state kept for each key of the keyed input.
    type State: rill_state::StateData + Default;

    /// One record of the keyed input of `key`.
    fn process_element(
        &mut self,
        key: &Value,
        state: &mut Self::State,
        value: &Value,
        broadcast: &BroadcastMap,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// One broadcast record (no key); the broadcast state may change.
    fn process_broadcast_element(
        &mut self,
        value: &Value,
        broadcast: &mut BroadcastMap,
        out: &mut Collector<'_>,
    ) -> Result<()>;

    /// A timer of `key` fired.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _key: &Value,
        _state: &mut Self::State,
        _broadcast: &BroadcastMap,
        _ctx: &mut ProcessContext<'_>,
        _out: &mut Collector<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// The broadcast map of one subtask and its operator-state backend.
struct BroadcastStore {
    ctx: OperatorContext,
    name: String,
    backend: OperatorStateBackend,
    map: BroadcastMap,
}

impl BroadcastStore {
    fn new(ctx: &OperatorContext, d: &BroadcastStateDescriptor) -> Self {
        Self {
            ctx: ctx.clone(),
            name: d.name.clone(),
            backend: ctx.create_operator_state_backend(),
            map: BroadcastMap::new(),
        }
    }

    fn initialize(&mut self, init: &StateInitContext) -> Result<()> {
        self.backend = init.operator_state_backend(&self.ctx)?;
        let state = self.backend.broadcast_state::<Value, Value>(&self.name)?;
        self.map = state.entries(&self.backend)?.into_iter().collect();
        Ok(())
    }

    fn snapshot(
        &mut self,
        ctx: &SnapshotContext,
    ) -> Result<Option<rill_state::snapshot::OperatorStateHandle>> {
        let state = self.backend.broadcast_state::<Value, Value>(&self.name)?;
        state.clear(&mut self.backend)?;
        for (k, v) in &self.map {
            state.put(&mut self.backend, k, v)?;
        }
        Ok(self
            .backend
            .snapshot(&ctx.target, &self.ctx.operator_uid, self.ctx.subtask_index)?)
    }

    fn apply(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
        mut f: impl FnMut(&Value, &mut BroadcastMap, &mut Collector<'_>) -> Result<()>,
    ) -> Result<()> {
        for r in input.drain(..) {
            f(
                &r.value,
                &mut self.map,
                &mut Collector::new(out, r.timestamp),
            )?;
        }
        Ok(())
    }
}

/// Runs a [`BroadcastProcessFunction`]: input 1 the non-broadcast stream, input 2 the
/// broadcast one.
pub struct BroadcastProcessOperator<F> {
    f: F,
    store: BroadcastStore,
}

impl<F: BroadcastProcessFunction> BroadcastProcessOperator<F> {
    /// An operator over `f` keeping the broadcast state `d`.
    pub fn new(f: F, d: &BroadcastStateDescriptor, ctx: &OperatorContext) -> Self {
        Self {
            f,
            store: BroadcastStore::new(ctx, d),
        }
    }
}

impl<F: BroadcastProcessFunction> TwoInputOperator for BroadcastProcessOperator<F> {
    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.store.initialize(ctx)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot {
            keyed: None,
            operator: self.store.snapshot(ctx)?,
        })
    }

    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let f = &mut self.f;
        self.store
            .apply(input, out, |v, map, c| f.process_element(v, map, c))
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let f = &mut self.f;
        self.store.apply(input, out, |v, map, c| {
            f.process_broadcast_element(v, map, c)
        })
    }
}

/// A [`KeyedBroadcastProcessFunction`] as the keyed process function of its
/// [`KeyedProcessOperator`], holding the broadcast map it reads.
pub(crate) struct WithBroadcast<P> {
    f: P,
    map: BroadcastMap,
}

impl<P: KeyedBroadcastProcessFunction> KeyedProcessFunction for WithBroadcast<P> {
    type State = P::State;

    fn process(
        &mut self,
        key: &Value,
        state: &mut P::State,
        value: &Value,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        self.f
            .process_element(key, state, value, &self.map, ctx, out)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        key: &Value,
        state: &mut P::State,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_>,
    ) -> Result<()> {
        self.f.on_timer(timestamp, key, state, &self.map, ctx, out)
    }
}

/// Runs a [`KeyedBroadcastProcessFunction`]: input 1 the keyed stream, input 2 the
/// broadcast one.
pub struct KeyedBroadcastProcessOperator<P: KeyedBroadcastProcessFunction> {
    inner: KeyedProcessOperator<WithBroadcast<P>>,
    store: BroadcastStore,
}

impl<P: KeyedBroadcastProcessFunction> KeyedBroadcastProcessOperator<P> {
    /// An operator over `f` keeping the broadcast state `d`, keyed by the context's key
    /// selector (of input 1).
    pub fn new(f: P, d: &BroadcastStateDescriptor, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            inner: KeyedProcessOperator::new(
                WithBroadcast {
                    f,
                    map: BroadcastMap::new(),
                },
                ctx,
            )?,
            store: BroadcastStore::new(ctx, d),
        })
    }
}

impl<P: KeyedBroadcastProcessFunction> TwoInputOperator for KeyedBroadcastProcessOperator<P> {
    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.inner.initialize_state(ctx)?;
        self.store.initialize(ctx)?;
        self.inner.function_mut().map = std::mem::take(&mut self.store.map);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        let mut snap = self.inner.snapshot_state(ctx)?;
        // The map lives in the function between snapshots.
        std::mem::swap(&mut self.store.map, &mut self.inner.function_mut().map);
        let handle = self.store.snapshot(ctx);
        std::mem::swap(&mut self.store.map, &mut self.inner.function_mut().map);
        snap.operator = handle?;
        Ok(snap)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.inner.notify_checkpoint_complete(checkpoint_id)
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.inner.notify_checkpoint_aborted(checkpoint_id)
    }

    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.inner.process_batch(input, out)
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let WithBroadcast { f, map } = self.inner.function_mut();
        for r in input.drain(..) {
            f.process_broadcast_element(&r.value, map, &mut Collector::new(out, r.timestamp))?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.process_watermark(watermark, out)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.inner.next_processing_timer()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.on_processing_time(now_ms, out)
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.inner.drain_side_outputs(sink)
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.inner.end_input(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::StreamExecutionEnvironment;
    use crate::key_group::operator_index_for_key;
    use crate::registry::OperatorRegistry;
    use crate::spec::{FactoryRef, OperatorSpec};
    use crate::{builtins, key};
    use rill_state::snapshot::{OperatorSnapshot, SnapshotKind};
    use rill_state::storage::CheckpointLayout;
    use rill_state::{CheckpointStorage, FsCheckpointStorage};

    /// Rules `(word, min)` are broadcast; events `(word, n)` count per word and pass
    /// (as `(word, n, count)`) when `n ≥` the word's rule; words without a rule pass
    /// nothing.
    struct Threshold;
    impl KeyedBroadcastProcessFunction for Threshold {
        type State = i64;
        fn process_element(
            &mut self,
            key: &Value,
            count: &mut i64,
            value: &Value,
            broadcast: &BroadcastMap,
            _: &mut ProcessContext<'_>,
            out: &mut Collector<'_>,
        ) -> Result<()> {
            *count += 1;
            let n = value
                .as_tuple()
                .and_then(|t| t.get(1))
                .and_then(Value::as_i64);
            let min = broadcast.get(key).and_then(Value::as_i64);
            if let (Some(n), Some(min)) = (n, min) {
                if n >= min {
                    out.collect(Value::Tuple(vec![key.clone(), n.into(), (*count).into()]));
                }
            }
            Ok(())
        }
        fn process_broadcast_element(
            &mut self,
            value: &Value,
            broadcast: &mut BroadcastMap,
            _: &mut Collector<'_>,
        ) -> Result<()> {
            if let Some([k, v]) = value.as_tuple() {
                broadcast.insert(k.clone(), v.clone());
            }
            Ok(())
        }
    }

    fn pair(k: &str, n: i64) -> StreamRecord {
        StreamRecord::new(Value::Tuple(vec![k.into(), n.into()]))
    }

    fn spec_and_registry() -> (OperatorSpec, OperatorRegistry) {
        let mut registry = OperatorRegistry::new();
        registry
            .register_keyed_broadcast_process("t.threshold", |()| Ok(Threshold))
            .unwrap();
        let env = StreamExecutionEnvironment::new();
        let events = env.add_source(builtins::collection(vec![]));
        let rules = env.add_source(builtins::collection(vec![]));
        events
            .key_by(key::by_field(0))
            .connect_broadcast(&rules.broadcast_with(&BroadcastStateDescriptor::new("rules")))
            .process(FactoryRef::unit("t.threshold"))
            .sink(builtins::blackhole());
        let job = env.job_graph("b").unwrap();
        job.validate(&registry).unwrap();
        let head = job
            .vertices
            .iter()
            .find(|v| v.operators[0].spec.kind.is_two_input())
            .unwrap();
        assert!(job
            .input_edges(head.id)
            .any(|(_, e)| e.partitioning == crate::Partitioning::Broadcast));
        (head.operators[0].spec.clone(), registry)
    }

    fn build(
        spec: &OperatorSpec,
        registry: &OperatorRegistry,
        subtask: u32,
        parallelism: u32,
        from: Option<(&std::path::Path, &OperatorSnapshot)>,
        storage: &Arc<dyn CheckpointStorage>,
    ) -> Box<dyn Operator> {
        let ctx = OperatorContext {
            job_id: crate::ids::JobId([0; 16]),
            operator_name: "b".into(),
            operator_uid: "b".into(),
            subtask_index: subtask,
            parallelism,
            max_parallelism: 128,
            key_selector: spec.key.as_ref().map(|k| registry.key_selector(k).unwrap()),
            key_selector2: None,
            collect: None,
            state: crate::state::StateContext::default(),
        };
        let mut op = registry.create_operator(spec, &ctx).unwrap();
        let mut init = match from {
            Some((dir, snap)) => {
                StateInitContext::restoring(dir.to_path_buf(), snap.clone(), storage.clone())
            }
            None => StateInitContext::empty(),
        };
        op.initialize_state(&mut init).unwrap();
        op
    }

    use std::sync::Arc;

    fn owner(word: &str, p: u32) -> usize {
        operator_index_for_key(Value::from(word).stable_hash(), p, 128) as usize
    }

    /// Rules reach every subtask; events see the rules in force when they arrive; after a
    /// snapshot at parallelism 2 and a restore at 3, every new subtask has the rules and
    /// the per-word counts moved with their key groups.
    #[test]
    fn keyed_broadcast_state_is_copied_on_restore_and_rescale() {
        let (spec, registry) = spec_and_registry();
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
        let mut ops: Vec<_> = (0..2)
            .map(|i| build(&spec, &registry, i, 2, None, &storage))
            .collect();
        let mut out = Vec::new();
        let words = ["ant", "bee", "cat", "dog", "eel"];
        // "ant" arrives before its rule: counted, not passed.
        ops[owner("ant", 2)]
            .process_batch(&mut vec![pair("ant", 9)], &mut out)
            .unwrap();
        for op in &mut ops {
            op.process_batch2(&mut vec![pair("ant", 5), pair("bee", 1)], &mut out)
                .unwrap();
        }
        for (w, n) in [("ant", 4), ("ant", 6), ("bee", 1), ("cat", 100)] {
            ops[owner(w, 2)]
                .process_batch(&mut vec![pair(w, n)], &mut out)
                .unwrap();
        }
        let mut got: Vec<String> = out.drain(..).map(|r| r.value.to_string()).collect();
        got.sort();
        assert_eq!(got, ["(ant,6,3)", "(bee,1,1)"]);

        let layout = CheckpointLayout::new(dir.path(), "job");
        let target = layout.target(storage.clone(), 1, SnapshotKind::Checkpoint);
        let ctx = SnapshotContext {
            checkpoint_id: 1,
            target: target.clone(),
        };
        let subtasks = ops
            .iter_mut()
            .enumerate()
            .map(|(i, op)| op.snapshot_state(&ctx).unwrap().run(i as u32).unwrap())
            .collect();
        let snap = OperatorSnapshot {
            uid: "b".into(),
            name: "b".into(),
            parallelism: 2,
            max_parallelism: 128,
            subtasks,
        };
        let mut ops: Vec<_> = (0..3)
            .map(|i| {
                build(
                    &spec,
                    &registry,
                    i,
                    3,
                    Some((&target.exclusive_dir, &snap)),
                    &storage,
                )
            })
            .collect();
        for w in words {
            ops[owner(w, 3)]
                .process_batch(&mut vec![pair(w, 5)], &mut out)
                .unwrap();
        }
        let mut got: Vec<String> = out.drain(..).map(|r| r.value.to_string()).collect();
        got.sort();
        // ant: 4th record, passes its rule 5; bee: 2nd; cat, dog, eel have no rule.
        assert_eq!(got, ["(ant,5,4)", "(bee,5,2)"]);
        // A rule broadcast after the restore reaches every new subtask.
        for op in &mut ops {
            op.process_batch2(&mut vec![pair("eel", 0)], &mut out)
                .unwrap();
        }
        ops[owner("eel", 3)]
            .process_batch(&mut vec![pair("eel", 0)], &mut out)
            .unwrap();
        assert_eq!(
            out.pop().map(|r| r.value.to_string()).as_deref(),
            Some("(eel,0,2)")
        );
    }
}
