//! File-system checkpoint storage: atomic writes, layout, completed/incomplete
//! checkpoints, URL parsing, and injected write failures.

use std::path::Path;
use std::sync::Arc;

use rill_state::format::{read_metadata, write_metadata};
use rill_state::snapshot::{CheckpointMetadata, SnapshotKind, FORMAT_VERSION};
use rill_state::storage::{
    clean_incomplete, completed_checkpoints, latest_completed, CheckpointLayout, FaultyStorage,
    FsCheckpointStorage, TEMP_MARKER,
};
use rill_state::{CheckpointStorage, StateError};

const JOB: &str = "0123456789abcdef0123456789abcdef";

fn metadata(id: u64) -> CheckpointMetadata {
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: JOB.into(),
        job_name: "job".into(),
        checkpoint_id: id,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        operators: vec![],
    }
}

fn names(storage: &dyn CheckpointStorage, dir: &Path) -> Vec<String> {
    storage
        .list_dir(dir)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn writes_read_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsCheckpointStorage::new(dir.path());
    let f = dir.path().join("a/b/c.state");
    s.write_file(&f, b"hello").unwrap();
    assert_eq!(s.read_file(&f).unwrap(), b"hello");
    assert!(s.exists(&f).unwrap());
    s.write_file(&dir.path().join("a/b/a.state"), b"x").unwrap();
    assert_eq!(names(&s, &dir.path().join("a/b")), ["a.state", "c.state"]);
    assert!(names(&s, &dir.path().join("missing")).is_empty());
    s.delete_file(&f).unwrap();
    s.delete_file(&f).unwrap();
    assert!(!s.exists(&f).unwrap());
    assert!(matches!(s.read_file(&f), Err(StateError::Read { .. })));
    s.delete_dir(&dir.path().join("a")).unwrap();
    s.delete_dir(&dir.path().join("a")).unwrap();
    assert!(!s.exists(&dir.path().join("a")).unwrap());
}

#[test]
fn atomic_writes_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsCheckpointStorage::new(dir.path());
    let m = dir.path().join("chk-1/_metadata");
    for i in 0..5u8 {
        s.write_atomic(&m, &[i; 100]).unwrap();
        s.write_file(&dir.path().join(format!("chk-1/f{i}")), &[i])
            .unwrap();
    }
    assert_eq!(s.read_file(&m).unwrap(), [4u8; 100]);
    let all = names(&s, &dir.path().join("chk-1"));
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.iter().all(|n| !n.contains(TEMP_MARKER)), "{all:?}");
}

#[test]
fn a_failed_real_write_definitely_failed() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsCheckpointStorage::new(dir.path());
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    // The parent "directory" is a file: nothing can be created.
    match s.write_atomic(&dir.path().join("file/_metadata"), b"m") {
        Err(
            e @ StateError::Write {
                definitely_failed: true,
                ..
            },
        ) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn urls() {
    assert_eq!(
        FsCheckpointStorage::from_url("file:///tmp/chk")
            .unwrap()
            .root(),
        Path::new("/tmp/chk")
    );
    assert_eq!(
        FsCheckpointStorage::from_url("/tmp/chk").unwrap().root(),
        Path::new("/tmp/chk")
    );
    for bad in [
        "s3://bucket/chk",
        "hdfs:///chk",
        "file://host/chk",
        "relative/chk",
    ] {
        match FsCheckpointStorage::from_url(bad) {
            Err(e @ StateError::Config { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("state.checkpoints.dir"), "{msg}");
                assert!(msg.contains(bad), "{msg}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn layout_and_completed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let layout = CheckpointLayout::new(dir.path(), JOB);
    assert_eq!(layout.checkpoint_dir(3), dir.path().join(JOB).join("chk-3"));
    assert_eq!(layout.shared_dir(), dir.path().join(JOB).join("shared"));
    assert_eq!(
        layout.taskowned_dir(),
        dir.path().join(JOB).join("taskowned")
    );
    let t = layout.target(storage.clone(), 3, SnapshotKind::Checkpoint);
    assert_eq!(t.exclusive_dir, layout.checkpoint_dir(3));
    assert_eq!(t.shared_dir, layout.shared_dir());

    assert!(latest_completed(storage.as_ref(), &layout)
        .unwrap()
        .is_none());
    for n in [1u64, 2, 10] {
        storage
            .write_file(&layout.checkpoint_dir(n).join("x.state"), b"x")
            .unwrap();
        write_metadata(storage.as_ref(), &layout.checkpoint_dir(n), &metadata(n)).unwrap();
    }
    // Incomplete: 3 (crashed), 11 (in progress).
    for n in [3u64, 11] {
        storage
            .write_file(&layout.checkpoint_dir(n).join("x.state"), b"x")
            .unwrap();
    }
    storage
        .write_file(&layout.shared_dir().join("s"), b"s")
        .unwrap();
    let done: Vec<u64> = completed_checkpoints(storage.as_ref(), &layout)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(done, [1, 2, 10]);
    assert_eq!(
        latest_completed(storage.as_ref(), &layout).unwrap(),
        Some((10, layout.checkpoint_dir(10)))
    );
    assert_eq!(
        clean_incomplete(storage.as_ref(), &layout, &[11]).unwrap(),
        [3]
    );
    assert!(!storage.exists(&layout.checkpoint_dir(3)).unwrap());
    assert!(storage.exists(&layout.checkpoint_dir(11)).unwrap());
    assert!(storage.exists(&layout.shared_dir().join("s")).unwrap());
    assert_eq!(
        clean_incomplete(storage.as_ref(), &layout, &[]).unwrap(),
        [11]
    );
}

#[test]
fn injected_write_failure_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir.path()));
    let faulty = FaultyStorage::new(fs);
    let layout = CheckpointLayout::new(dir.path(), JOB);
    faulty
        .write_file(&layout.checkpoint_dir(1).join("a.state"), b"one")
        .unwrap();
    write_metadata(&faulty, &layout.checkpoint_dir(1), &metadata(1)).unwrap();

    faulty.fail_writes_matching(|p| p.to_string_lossy().contains("chk-2"));
    let err = faulty
        .write_file(&layout.checkpoint_dir(2).join("a.state"), b"two")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Write {
                definitely_failed: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(write_metadata(&faulty, &layout.checkpoint_dir(2), &metadata(2)).is_err());
    assert_eq!(faulty.failed_writes(), 2);
    // chk-1 is untouched and still the latest; writes elsewhere still work.
    assert_eq!(latest_completed(&faulty, &layout).unwrap().unwrap().0, 1);
    assert_eq!(
        read_metadata(&faulty, &layout.checkpoint_dir(1)).unwrap().1,
        metadata(1)
    );
    assert_eq!(
        faulty
            .read_file(&layout.checkpoint_dir(1).join("a.state"))
            .unwrap(),
        b"one"
    );
    assert!(!faulty
        .exists(&layout.checkpoint_dir(2).join("a.state"))
        .unwrap());
    faulty
        .write_file(&layout.checkpoint_dir(3).join("a.state"), b"three")
        .unwrap();

    faulty.heal();
    faulty.fail_after_bytes(10);
    faulty
        .write_file(&dir.path().join("small"), &[0; 6])
        .unwrap();
    assert!(faulty.write_file(&dir.path().join("big"), &[0; 6]).is_err());
    assert!(!faulty.exists(&dir.path().join("big")).unwrap());

    faulty.heal();
    faulty.fail_after_commit(|p| p.ends_with("_metadata"));
    match write_metadata(&faulty, &layout.checkpoint_dir(4), &metadata(4)) {
        Err(StateError::Write {
            definitely_failed: false,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // "May have happened": here it did.
    assert_eq!(latest_completed(&faulty, &layout).unwrap().unwrap().0, 4);
}

#[test]
fn parent_components_resolve_without_the_checkpoint_dir() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsCheckpointStorage::new(dir.path());
    let layout = CheckpointLayout::new(dir.path(), JOB);
    s.write_file(&layout.shared_dir().join("f"), b"shared")
        .unwrap();
    // chk-1 does not exist (yet): `chk-1/../shared/f` still names the shared file.
    let via = layout.checkpoint_dir(1).join("../shared/f");
    assert!(s.exists(&via).unwrap());
    assert_eq!(s.read_file(&via).unwrap(), b"shared");
}
