//! The state file format and `_metadata`: round trips, and every truncation, flipped byte
//! and version bump is a typed error, never a panic or silently wrong data.

use std::path::Path;

use rill_state::descriptor::{StateKind, StateMeta};
use rill_state::format::{
    decode, encode, metadata_bytes, parse_metadata, read_metadata, write_metadata, KeyedFileWriter,
    OperatorFileWriter, StateFileReader,
};
use rill_state::key_group::KeyGroupRange;
use rill_state::snapshot::{
    CheckpointMetadata, FileHeader, FileKind, RawEntry, SnapshotKind, FORMAT_VERSION,
};
use rill_state::{BackendKind, FsCheckpointStorage, StateError};

fn meta(name: &str, kind: StateKind) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        key_type: "alloc::string::String".into(),
        namespace_type: "()".into(),
        value_type: "i64".into(),
        user_key_type: String::new(),
        ttl: None,
    }
}

fn header(kind: FileKind) -> FileHeader {
    FileHeader {
        kind,
        operator_uid: "sum".into(),
        subtask_index: 1,
        backend: BackendKind::Heap,
        max_parallelism: 128,
        key_group_range: KeyGroupRange::new(10, 20),
        checkpoint_id: 7,
        states: vec![
            meta("count", StateKind::Value),
            meta("seen", StateKind::List),
        ],
    }
}

/// A small keyed file and the entries it holds, in file order.
fn small_file() -> (Vec<u8>, Vec<RawEntry>) {
    let mut w = KeyedFileWriter::new(header(FileKind::KeyedDelta));
    let mut expected = Vec::new();
    let rows: &[(u32, u32, &str, i64, Option<i64>)] = &[
        (10, 0, "a", 0, Some(1)),
        (10, 0, "b", 5, Some(-2)),
        (10, 1, "a", 0, Some(300)),
        (12, 0, "c", 1_700_000_000_000, None),
        (19, 1, "zz", 0, Some(i64::MAX)),
    ];
    for &(kg, state, key, ts, value) in rows {
        let k = encode("t", key).unwrap();
        let ns = encode("t", &()).unwrap();
        let v = value.map(|v| encode("t", &v).unwrap());
        w.push(state, kg, &k, &ns, ts, v.as_deref()).unwrap();
        expected.push(RawEntry {
            state,
            key_group: kg,
            key: k,
            namespace: ns,
            timestamp: ts,
            value: v,
        });
    }
    (w.finish(), expected)
}

/// Parses and reads every entry: what a restore or a dump does.
fn read_all(bytes: Vec<u8>) -> rill_state::Result<Vec<RawEntry>> {
    let r = StateFileReader::parse(Path::new("/x/f.state"), bytes)?;
    r.entries_in(KeyGroupRange::all(128))
}

#[test]
fn keyed_file_round_trips() {
    let (bytes, expected) = small_file();
    let r = StateFileReader::parse(Path::new("f"), bytes).unwrap();
    assert_eq!(r.header(), &header(FileKind::KeyedDelta));
    let blocks: Vec<(u32, u32, u64)> = r
        .blocks()
        .iter()
        .map(|b| (b.key_group, b.state, b.entries))
        .collect();
    assert_eq!(blocks, vec![(10, 0, 2), (10, 1, 1), (12, 0, 1), (19, 1, 1)]);
    assert_eq!(r.entries_in(KeyGroupRange::all(128)).unwrap(), expected);
    assert_eq!(
        r.entries_in(KeyGroupRange::new(11, 19)).unwrap(),
        expected[3..4].to_vec()
    );
    let first = r.entries(&r.blocks()[0]).unwrap();
    assert_eq!(decode::<String>("t", &first[1].key).unwrap(), "b");
    assert_eq!(
        decode::<i64>("t", first[1].value.as_ref().unwrap()).unwrap(),
        -2
    );
    assert_eq!(first[1].timestamp, 5);
}

#[test]
fn empty_keyed_file_round_trips() {
    let w = KeyedFileWriter::new(header(FileKind::KeyedFull));
    assert!(w.is_empty());
    let r = StateFileReader::parse(Path::new("f"), w.finish()).unwrap();
    assert!(r.blocks().is_empty());
    assert!(r.entries_in(KeyGroupRange::all(128)).unwrap().is_empty());
}

#[test]
fn writer_refuses_out_of_order_and_out_of_range_entries() {
    let mut w = KeyedFileWriter::new(header(FileKind::KeyedFull));
    w.push(1, 12, b"\xa1a", b"\xc0", 0, Some(b"\x01")).unwrap();
    assert!(matches!(
        w.push(0, 12, b"\xa1a", b"\xc0", 0, Some(b"\x01")),
        Err(StateError::Serialize { .. })
    ));
    assert!(matches!(
        w.push(0, 11, b"\xa1a", b"\xc0", 0, Some(b"\x01")),
        Err(StateError::Serialize { .. })
    ));
    assert!(matches!(
        w.push(0, 20, b"\xa1a", b"\xc0", 0, Some(b"\x01")),
        Err(StateError::KeyGroupOutOfRange { key_group: 20, .. })
    ));
    assert!(matches!(
        w.push(2, 13, b"\xa1a", b"\xc0", 0, Some(b"\x01")),
        Err(StateError::Serialize { .. })
    ));
    // Same block again and later blocks are fine.
    w.push(1, 12, b"\xa1b", b"\xc0", 0, None).unwrap();
    w.push(0, 13, b"\xa1b", b"\xc0", 0, None).unwrap();
    assert_eq!(read_all(w.finish()).unwrap().len(), 3);
}

#[test]
fn operator_file_round_trips() {
    let mut h = header(FileKind::Operator);
    h.states = vec![
        meta("offsets", StateKind::OperatorList),
        meta("rules", StateKind::Broadcast),
    ];
    let mut w = OperatorFileWriter::new(h.clone());
    let a: Vec<Vec<u8>> = (0..5i64).map(|i| encode("t", &i).unwrap()).collect();
    w.push_state(0, a.iter().map(Vec::as_slice)).unwrap();
    assert!(w.push_state(0, std::iter::empty()).is_err());
    w.push_state(1, std::iter::empty()).unwrap();
    let r = StateFileReader::parse(Path::new("f"), w.finish()).unwrap();
    assert_eq!(r.header(), &h);
    assert_eq!(r.operator_states().unwrap(), vec![(0, a), (1, vec![])]);
    assert!(matches!(
        r.entries(&r.blocks()[0]),
        Err(StateError::Corrupt { .. })
    ));
}

#[test]
fn every_truncation_is_corrupt() {
    let (bytes, _) = small_file();
    for len in 0..bytes.len() {
        match read_all(bytes[..len].to_vec()) {
            Err(StateError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, Path::new("/x/f.state"));
                assert!(offset <= bytes.len() as u64, "offset {offset} at len {len}");
            }
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
    assert!(read_all(bytes).is_ok());
}

#[test]
fn every_flipped_byte_is_an_error() {
    let (bytes, _) = small_file();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            match read_all(b) {
                Err(StateError::Corrupt { .. }) | Err(StateError::UnsupportedVersion { .. }) => {}
                other => panic!("byte {i} ^ {mask:#x}: {other:?}"),
            }
        }
    }
}

#[test]
fn newer_version_is_unsupported() {
    let (mut bytes, _) = small_file();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    match StateFileReader::parse(Path::new("f"), bytes) {
        Err(StateError::UnsupportedVersion {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
    let mut m = metadata_bytes(&metadata()).unwrap();
    m[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        parse_metadata(Path::new("_metadata"), &m),
        Err(StateError::UnsupportedVersion { .. })
    ));
}

fn metadata() -> CheckpointMetadata {
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "0123456789abcdef0123456789abcdef".into(),
        job_name: "keyed-sum".into(),
        checkpoint_id: 3,
        timestamp_ms: 1_700_000_000_000,
        kind: SnapshotKind::Savepoint,
        operators: vec![],
    }
}

#[test]
fn metadata_round_trips_by_dir_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::new(dir.path());
    let snap = dir.path().join("sp-1");
    let file = write_metadata(&storage, &snap, &metadata()).unwrap();
    assert_eq!(file, snap.join("_metadata"));
    let (d, m) = read_metadata(&storage, &snap).unwrap();
    assert_eq!((d, m), (snap.clone(), metadata()));
    let (d, m) = read_metadata(&storage, &file).unwrap();
    assert_eq!((d, m), (snap, metadata()));
}

#[test]
fn missing_metadata_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::new(dir.path());
    let chk = dir.path().join("chk-1");
    std::fs::create_dir_all(&chk).unwrap();
    std::fs::write(chk.join("some.state"), b"x").unwrap();
    for p in [chk.clone(), chk.join("_metadata"), dir.path().join("nope")] {
        match read_metadata(&storage, &p) {
            Err(StateError::NotACheckpoint { path }) => assert_eq!(path, p),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn corrupt_metadata_is_an_error() {
    let bytes = metadata_bytes(&metadata()).unwrap();
    for len in 0..bytes.len() {
        assert!(matches!(
            parse_metadata(Path::new("m"), &bytes[..len]),
            Err(StateError::Corrupt { .. })
        ));
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(parse_metadata(Path::new("m"), &b).is_err(), "byte {i}");
    }
    assert_eq!(parse_metadata(Path::new("m"), &bytes).unwrap(), metadata());
}
