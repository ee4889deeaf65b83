//! Restore and rescale of operator state (list split evenly, union to everyone,
//! broadcast copied) over 1 → 3 → 2 → 1, keyed handle assignment, and the checks that
//! refuse a snapshot a job cannot restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_state::format::{read_metadata, write_metadata};
use rill_state::key_group::KeyGroupRange;
use rill_state::restore::{check_restorable, keyed_handles_for, operator_state_for};
use rill_state::snapshot::{
    CheckpointMetadata, KeyedStateHandle, OperatorSnapshot, SnapshotKind, SubtaskSnapshot,
    FORMAT_VERSION,
};
use rill_state::storage::{CheckpointLayout, FsCheckpointStorage};
use rill_state::{BackendKind, CheckpointStorage, OperatorStateBackend, StateError};

const JOB: &str = "0123456789abcdef0123456789abcdef";
const UID: &str = "kafka-source";

struct Subtask {
    backend: OperatorStateBackend,
}

impl Subtask {
    fn new() -> Self {
        Self {
            backend: OperatorStateBackend::new(),
        }
    }
    fn list(&mut self) -> Vec<u64> {
        let s = self.backend.list_state::<u64>("offsets").unwrap();
        s.get(&self.backend).unwrap()
    }
    fn union(&mut self) -> Vec<String> {
        let s = self
            .backend
            .union_list_state::<String>("partitions")
            .unwrap();
        s.get(&self.backend).unwrap()
    }
    fn broadcast(&mut self) -> Vec<(String, i32)> {
        let s = self
            .backend
            .broadcast_state::<String, i32>("rules")
            .unwrap();
        s.entries(&self.backend).unwrap()
    }
}

/// Snapshots every subtask as checkpoint `id` and writes `_metadata`.
fn checkpoint(
    storage: &Arc<dyn CheckpointStorage>,
    layout: &CheckpointLayout,
    id: u64,
    subtasks: &[Subtask],
) -> PathBuf {
    let target = layout.target(storage.clone(), id, SnapshotKind::Checkpoint);
    let snaps = subtasks
        .iter()
        .enumerate()
        .map(|(i, s)| SubtaskSnapshot {
            subtask_index: i as u32,
            keyed: None,
            operator: s.backend.snapshot(&target, UID, i as u32).unwrap(),
            in_flight: None,
        })
        .collect();
    let meta = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: JOB.into(),
        job_name: "job".into(),
        checkpoint_id: id,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        operators: vec![OperatorSnapshot {
            uid: UID.into(),
            name: "Source: kafka".into(),
            parallelism: subtasks.len() as u32,
            max_parallelism: 128,
            subtasks: snaps,
        }],
    };
    write_metadata(storage.as_ref(), &target.exclusive_dir, &meta).unwrap();
    target.exclusive_dir
}

/// Restores checkpoint `dir` at parallelism `p`.
fn restore(storage: &Arc<dyn CheckpointStorage>, dir: &Path, p: u32) -> Vec<Subtask> {
    let (snapshot_dir, meta) = read_metadata(storage.as_ref(), dir).unwrap();
    check_restorable(&meta, &[(UID, 128)], false).unwrap();
    (0..p)
        .map(|i| {
            let mut s = Subtask::new();
            let parts =
                operator_state_for(&meta.operators[0], &snapshot_dir, storage.as_ref(), p, i)
                    .unwrap();
            s.backend.restore(parts);
            s
        })
        .collect()
}

fn rules() -> Vec<(String, i32)> {
    vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
}

#[test]
fn operator_state_rescales_1_3_2_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), JOB);
    const N: u64 = 10;
    let partitions: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();

    let mut one = Subtask::new();
    let b = &mut one.backend;
    let list = b.list_state::<u64>("offsets").unwrap();
    for i in 0..N {
        list.add(b, &i).unwrap();
    }
    let union = b.union_list_state::<String>("partitions").unwrap();
    union.update(b, &partitions).unwrap();
    let bc = b.broadcast_state::<String, i32>("rules").unwrap();
    for (k, v) in rules().into_iter().rev() {
        bc.put(b, &k, &v).unwrap();
    }
    bc.put(b, &"gone".to_string(), &9).unwrap();
    bc.remove(b, &"gone".to_string()).unwrap();
    assert!(bc.contains(b, &"a".to_string()).unwrap());
    assert_eq!(bc.get(b, &"b".to_string()).unwrap(), Some(2));
    let chk1 = checkpoint(&storage, &layout, 1, std::slice::from_ref(&one));

    // 1 → 3: list split into contiguous chunks 4, 3, 3; union whole; broadcast copied.
    let mut three = restore(&storage, &chk1, 3);
    let lists: Vec<Vec<u64>> = three.iter_mut().map(Subtask::list).collect();
    assert_eq!(lists, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
    for (i, s) in three.iter_mut().enumerate() {
        assert_eq!(s.union(), partitions);
        assert_eq!(s.broadcast(), rules());
        // Each subtask keeps only the partitions it reads (as a Kafka source does).
        let mine: Vec<String> = partitions
            .iter()
            .enumerate()
            .filter(|(j, _)| j % 3 == i)
            .map(|(_, p)| p.clone())
            .collect();
        let u = s.backend.union_list_state::<String>("partitions").unwrap();
        u.update(&mut s.backend, &mine).unwrap();
        // One more element per subtask in the list.
        let l = s.backend.list_state::<u64>("offsets").unwrap();
        l.add(&mut s.backend, &(100 + i as u64)).unwrap();
    }
    let chk2 = checkpoint(&storage, &layout, 2, &three);

    // 3 → 2: 13 elements in old subtask order, split 7 + 6; union is all partitions.
    let mut two = restore(&storage, &chk2, 2);
    let lists: Vec<Vec<u64>> = two.iter_mut().map(Subtask::list).collect();
    assert_eq!(
        lists,
        vec![vec![0, 1, 2, 3, 100, 4, 5], vec![6, 101, 7, 8, 9, 102]]
    );
    for s in &mut two {
        let mut u = s.union();
        u.sort();
        assert_eq!(u, partitions);
        assert_eq!(s.broadcast(), rules());
    }
    // Subtask 1 empties its list: its snapshot still carries union and broadcast.
    let l = two[1].backend.list_state::<u64>("offsets").unwrap();
    l.clear(&mut two[1].backend).unwrap();
    let chk3 = checkpoint(&storage, &layout, 3, &two);

    // 2 → 1: everything in one subtask, each element exactly once.
    let mut back = restore(&storage, &chk3, 1);
    assert_eq!(back[0].list(), vec![0, 1, 2, 3, 100, 4, 5]);
    let mut u = back[0].union();
    u.sort();
    // Both old subtasks held all partitions.
    let mut twice: Vec<String> = partitions.iter().chain(&partitions).cloned().collect();
    twice.sort();
    assert_eq!(u, twice);
    assert_eq!(back[0].broadcast(), rules());
}

#[test]
fn empty_operator_state_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), JOB);
    let mut b = OperatorStateBackend::new();
    b.list_state::<u64>("offsets").unwrap();
    let target = layout.target(storage.clone(), 1, SnapshotKind::Checkpoint);
    assert!(b.snapshot(&target, UID, 0).unwrap().is_none());
    assert!(storage
        .list_dir(&layout.checkpoint_dir(1))
        .unwrap()
        .is_empty());
}

#[test]
fn registration_checks_kind_and_types() {
    let mut b = OperatorStateBackend::new();
    let l = b.list_state::<u64>("s").unwrap();
    l.add(&mut b, &1).unwrap();
    assert!(b.list_state::<u64>("s").is_ok());
    for r in [
        b.list_state::<String>("s").map(|_| ()),
        b.union_list_state::<u64>("s").map(|_| ()),
        b.broadcast_state::<u64, u64>("s").map(|_| ()),
    ] {
        match r {
            Err(StateError::IncompatibleState { name, .. }) => assert_eq!(name, "s"),
            other => panic!("{other:?}"),
        }
    }

    // Restored elements are typed at registration: a wrong type is an error.
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), JOB);
    let chk = checkpoint(&storage, &layout, 1, &[Subtask { backend: b }]);
    let mut restored = restore(&storage, &chk, 1);
    assert!(matches!(
        restored[0].backend.list_state::<String>("s"),
        Err(StateError::Deserialize { .. })
    ));
    let mut restored = restore(&storage, &chk, 1);
    assert!(matches!(
        restored[0].backend.union_list_state::<u64>("s"),
        Err(StateError::IncompatibleState { .. })
    ));
}

fn keyed_handle(range: KeyGroupRange) -> KeyedStateHandle {
    KeyedStateHandle {
        backend: BackendKind::Heap,
        key_group_range: range,
        files: vec![],
        states: vec![],
        incremental_bytes: 0,
    }
}

fn keyed_op(uid: &str, parallelism: u32, max: u32) -> OperatorSnapshot {
    OperatorSnapshot {
        uid: uid.into(),
        name: format!("{uid} name"),
        parallelism,
        max_parallelism: max,
        subtasks: (0..parallelism)
            .map(|i| SubtaskSnapshot {
                subtask_index: i,
                keyed: Some(keyed_handle(KeyGroupRange::of_subtask(i, parallelism, max))),
                operator: None,
                in_flight: None,
            })
            .collect(),
    }
}

#[test]
fn keyed_handles_follow_key_group_overlap() {
    let op = keyed_op("sum", 3, 128);
    // Every new subtask at every parallelism gets exactly the overlapping old handles,
    // and together they cover its range.
    for p in 1..=5u32 {
        for i in 0..p {
            let range = KeyGroupRange::of_subtask(i, p, 128);
            let handles = keyed_handles_for(&op, range);
            assert!(!handles.is_empty());
            let covered: u32 = handles
                .iter()
                .map(|h| h.key_group_range.intersect(&range).len())
                .sum();
            assert_eq!(covered, range.len(), "p={p} i={i}");
            for (j, s) in op.subtasks.iter().enumerate() {
                let old = s.keyed.as_ref().unwrap();
                let overlaps = !old.key_group_range.intersect(&range).is_empty();
                assert_eq!(handles.contains(old), overlaps, "p={p} i={i} old={j}");
            }
        }
    }
    assert!(keyed_handles_for(&op, KeyGroupRange::new(5, 5)).is_empty());
}

#[test]
fn check_restorable_refuses_with_reasons() {
    let mut stateless = keyed_op("map", 2, 128);
    for s in &mut stateless.subtasks {
        s.keyed = None;
    }
    let meta = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: JOB.into(),
        job_name: "job".into(),
        checkpoint_id: 1,
        timestamp_ms: 0,
        kind: SnapshotKind::Savepoint,
        operators: vec![
            keyed_op("sum", 2, 128),
            keyed_op("dedup", 2, 128),
            stateless,
        ],
    };
    check_restorable(&meta, &[("sum", 128), ("dedup", 128)], false).unwrap();
    check_restorable(&meta, &[("sum", 128), ("dedup", 128), ("new", 64)], false).unwrap();

    let err = check_restorable(&meta, &[("sum", 128)], false).unwrap_err();
    assert!(matches!(err, StateError::Restore { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`dedup`") && msg.contains("not in the job"),
        "{msg}"
    );
    assert!(msg.contains("allow-non-restored-state"), "{msg}");
    check_restorable(&meta, &[("sum", 128)], true).unwrap();

    let err = check_restorable(&meta, &[("sum", 256), ("dedup", 128)], true).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`sum`") && msg.contains("max parallelism 128") && msg.contains("256"),
        "{msg}"
    );
}
