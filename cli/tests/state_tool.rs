//! `rill state inspect` / `rill state dump` run as a user would, on a checkpoint
//! directory built with rill-state's writer APIs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rill_state::format::{encode, write_metadata, KeyedFileWriter, OperatorFileWriter};
use rill_state::key_group::KeyGroupRange;
use rill_state::snapshot::{
    CheckpointMetadata, FileHeader, FileKind, KeyedStateHandle, OperatorSnapshot,
    OperatorStateHandle, SnapshotKind, StateFileRef, SubtaskSnapshot, FORMAT_VERSION,
};
use rill_state::{BackendKind, CheckpointStorage, FsCheckpointStorage, StateKind, StateMeta};

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

fn run(args: &[&str], path: &Path) -> Output {
    let mut c = rill();
    c.args(["state", args[0]]).arg(path).args(&args[1..]);
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn count_meta() -> StateMeta {
    StateMeta {
        name: "count".into(),
        kind: StateKind::Value,
        key_type: "alloc::string::String".into(),
        namespace_type: "()".into(),
        value_type: "i64".into(),
        user_key_type: String::new(),
        ttl: None,
    }
}

fn offsets_meta() -> StateMeta {
    StateMeta {
        name: "offsets".into(),
        kind: StateKind::OperatorList,
        key_type: String::new(),
        namespace_type: String::new(),
        value_type: "u64".into(),
        user_key_type: String::new(),
        ttl: None,
    }
}

fn keyed_file(
    kind: FileKind,
    subtask: u32,
    range: KeyGroupRange,
    rows: &[(u32, &str, Option<i64>)],
) -> Vec<u8> {
    let mut w = KeyedFileWriter::new(FileHeader {
        kind,
        operator_uid: "sum".into(),
        subtask_index: subtask,
        backend: BackendKind::Lsm,
        max_parallelism: 128,
        key_group_range: range,
        checkpoint_id: 5,
        states: vec![count_meta()],
    });
    for &(kg, key, value) in rows {
        let v = value.map(|v| encode("count", &v).unwrap());
        w.push(
            0,
            kg,
            &encode("count", key).unwrap(),
            &encode("count", &()).unwrap(),
            0,
            v.as_deref(),
        )
        .unwrap();
    }
    w.finish()
}

/// chk-5 of job `sum` (keyed, p=2: subtask 0 one full file, subtask 1 a full file and a
/// delta that deletes `d` and updates `c`) and `source` (operator list state).
fn checkpoint(dir: &Path) -> PathBuf {
    let storage = FsCheckpointStorage::new(dir);
    let chk = dir.join("job").join("chk-5");
    let shared = dir.join("job").join("shared");
    let put = |path: PathBuf, bytes: Vec<u8>, shared: bool, rel: &str| {
        storage.write_file(&path, &bytes).unwrap();
        StateFileRef {
            path: rel.into(),
            size: bytes.len() as u64,
            shared,
        }
    };
    let r0 = KeyGroupRange::of_subtask(0, 2, 128);
    let r1 = KeyGroupRange::of_subtask(1, 2, 128);
    let f0 = put(
        chk.join("sum-0.state"),
        keyed_file(
            FileKind::KeyedFull,
            0,
            r0,
            &[(3, "a", Some(1)), (3, "b", Some(2))],
        ),
        false,
        "sum-0.state",
    );
    let f1 = put(
        shared.join("sum-1-a.state"),
        keyed_file(
            FileKind::KeyedFull,
            1,
            r1,
            &[(70, "c", Some(3)), (71, "d", Some(4))],
        ),
        true,
        "../shared/sum-1-a.state",
    );
    let f2 = put(
        chk.join("sum-1-b.state"),
        keyed_file(
            FileKind::KeyedDelta,
            1,
            r1,
            &[(70, "c", Some(30)), (71, "d", None)],
        ),
        false,
        "sum-1-b.state",
    );
    let mut w = OperatorFileWriter::new(FileHeader {
        kind: FileKind::Operator,
        operator_uid: "source".into(),
        subtask_index: 0,
        backend: BackendKind::Heap,
        max_parallelism: 0,
        key_group_range: KeyGroupRange::new(0, 0),
        checkpoint_id: 5,
        states: vec![offsets_meta()],
    });
    let elements: Vec<Vec<u8>> = [17u64, 42]
        .iter()
        .map(|e| encode("o", e).unwrap())
        .collect();
    w.push_state(0, elements.iter().map(Vec::as_slice)).unwrap();
    let fo = put(
        chk.join("source-0.state"),
        w.finish(),
        false,
        "source-0.state",
    );
    let keyed = |range, files: Vec<StateFileRef>| KeyedStateHandle {
        backend: BackendKind::Lsm,
        key_group_range: range,
        incremental_bytes: files.iter().map(|f| f.size).sum(),
        files,
        states: vec![count_meta()],
    };
    let meta = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "0123456789abcdef0123456789abcdef".into(),
        job_name: "keyed-sum".into(),
        checkpoint_id: 5,
        timestamp_ms: 1_700_000_000_000,
        kind: SnapshotKind::Checkpoint,
        operators: vec![
            OperatorSnapshot {
                uid: "source".into(),
                name: "Source: numbers".into(),
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskSnapshot {
                    subtask_index: 0,
                    keyed: None,
                    operator: Some(OperatorStateHandle {
                        file: fo,
                        states: vec![(offsets_meta(), 2)],
                    }),
                    in_flight: None,
                }],
            },
            OperatorSnapshot {
                uid: "sum".into(),
                name: "count+sum".into(),
                parallelism: 2,
                max_parallelism: 128,
                subtasks: vec![
                    SubtaskSnapshot {
                        subtask_index: 0,
                        keyed: Some(keyed(r0, vec![f0])),
                        operator: None,
                        in_flight: None,
                    },
                    SubtaskSnapshot {
                        subtask_index: 1,
                        keyed: Some(keyed(r1, vec![f1, f2])),
                        operator: None,
                        in_flight: None,
                    },
                ],
            },
        ],
    };
    write_metadata(&storage, &chk, &meta).unwrap();
    chk
}

#[test]
fn inspect_prints_operators_states_and_key_groups() {
    let dir = tempfile::tempdir().unwrap();
    let chk = checkpoint(dir.path());
    for path in [chk.clone(), chk.join("_metadata")] {
        let o = run(&["inspect"], &path);
        let out = stdout(&o);
        assert!(o.status.success(), "{out}\n{}", stderr(&o));
        for needle in [
            "0123456789abcdef0123456789abcdef (keyed-sum)",
            "checkpoint id   5",
            "Checkpoint",
            "format version  1",
            "operator sum (count+sum)",
            "parallelism 2, max parallelism 128",
            "operator source (Source: numbers)",
            "OPERATOR_LIST",
            "value=u64",
            "key=alloc::string::String",
            "ttl=none",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        // 3 live keys (d was deleted by the delta), 2 offsets.
        let count_line = out.lines().find(|l| l.contains("count ")).unwrap();
        assert!(count_line.ends_with(" 3 keys"), "{count_line}");
        let offsets_line = out.lines().find(|l| l.contains("offsets")).unwrap();
        assert!(offsets_line.ends_with(" 2 elements"), "{offsets_line}");
        // Key groups 3 (2 keys), 70 (1 key), 71 (0 keys left).
        assert!(out.contains("    3: 2/"), "{out}");
        assert!(out.contains("   70: 1/"), "{out}");
        assert!(out.contains("   71: 0/"), "{out}");
    }
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dump_prints_live_entries_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let chk = checkpoint(dir.path());
    let o = run(&["dump", "--operator", "sum", "--state", "count"], &chk);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_lines(&stdout(&o)),
        vec![
            serde_json::json!({"key_group": 3, "key": "a", "namespace": null, "value": 1}),
            serde_json::json!({"key_group": 3, "key": "b", "namespace": null, "value": 2}),
            serde_json::json!({"key_group": 70, "key": "c", "namespace": null, "value": 30}),
        ]
    );
    let o = run(
        &["dump", "--operator", "source", "--state", "offsets"],
        &chk,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_lines(&stdout(&o)),
        vec![
            serde_json::json!({"subtask": 0, "value": 17}),
            serde_json::json!({"subtask": 0, "value": 42}),
        ]
    );
}

#[test]
fn a_single_state_file_can_be_inspected_and_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let chk = checkpoint(dir.path());
    let delta = chk.join("sum-1-b.state");
    let o = run(&["inspect"], &delta);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("KeyedDelta") && out.contains("operator        sum"),
        "{out}"
    );
    let o = run(&["dump", "--operator", "sum", "--state", "count"], &delta);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_lines(&stdout(&o)),
        vec![
            serde_json::json!({"key_group": 70, "key": "c", "namespace": null, "value": 30}),
            serde_json::json!({"key_group": 71, "key": "d", "namespace": null, "value": null, "deleted": true}),
        ]
    );
}

#[test]
fn unknown_names_list_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let chk = checkpoint(dir.path());
    let o = run(&["dump", "--operator", "nope", "--state", "count"], &chk);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("operators: source, sum"),
        "{}",
        stderr(&o)
    );
    let o = run(&["dump", "--operator", "sum", "--state", "nope"], &chk);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("states: count"), "{}", stderr(&o));
}

#[test]
fn corrupt_and_incomplete_snapshots_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let chk = checkpoint(dir.path());
    let file = chk.join("sum-0.state");
    let mut bytes = std::fs::read(&file).unwrap();
    let last_block_byte = bytes.len() - 40;
    bytes[last_block_byte] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    for args in [
        &["inspect"][..],
        &["dump", "--operator", "sum", "--state", "count"][..],
    ] {
        let o = run(args, &chk);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("corrupt state file")
                && err.contains("sum-0.state")
                && err.contains("at byte"),
            "{err}"
        );
    }
    // Truncated to half.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["inspect"], &file);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("corrupt state file"), "{}", stderr(&o));

    std::fs::remove_file(chk.join("_metadata")).unwrap();
    let o = run(&["inspect"], &chk);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a completed checkpoint"),
        "{}",
        stderr(&o)
    );
}
