//! `rill state inspect` and `rill state dump`: the offline state tool.
//!
//! Both read a snapshot without the job that wrote it: `_metadata` and every state file
//! are self-describing (see `rill_state::snapshot`). PATH is a checkpoint or savepoint
//! directory, its `_metadata` file, or a single state file.
//!
//! * `inspect` prints the snapshot's identity, then per operator its parallelism, max
//!   parallelism, states (kind, types, TTL), live key count per state, total bytes, and a
//!   compact table of keys and bytes per key group. Key counts of lsm chains (a full
//!   file plus deltas) apply the deltas, so deleted keys are not counted.
//! * `dump` prints one state's entries as JSON lines: keyed state as
//!   `{"key_group":…,"key":…,"namespace":…,"value":…}`, operator state as
//!   `{"subtask":…,"value":…}`. Values are decoded generically from MessagePack, so no
//!   Rust types are needed; deltas are applied one key group at a time, so memory stays
//!   bounded by the largest key group.
//!
//! A corrupt or truncated file is one error line naming the file and byte offset (exit
//! code 1); unknown operator or state names list the available ones.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rill_state::format::{parse_metadata, read_metadata, StateFileReader, METADATA_MAGIC};
use rill_state::snapshot::{CheckpointMetadata, FileKind, OperatorSnapshot};
use rill_state::{CheckpointStorage, FsCheckpointStorage, StateMeta};

/// `rill state …` arguments.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// The `rill state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print a snapshot's operators, states, key counts and bytes per key group.
    Inspect {
        /// A checkpoint/savepoint directory, its `_metadata`, or a state file.
        path: PathBuf,
    },
    /// Print one state's entries as JSON lines.
    Dump {
        /// A checkpoint/savepoint directory, its `_metadata`, or a state file.
        path: PathBuf,
        /// The operator's uid.
        #[arg(long)]
        operator: String,
        /// The state's name.
        #[arg(long)]
        state: String,
    },
}

/// What PATH names.
enum Source {
    /// A snapshot: the directory holding `_metadata`, and its content.
    Snapshot(PathBuf, CheckpointMetadata),
    /// One state file.
    File(StateFileReader),
}

fn open(storage: &dyn CheckpointStorage, path: &Path) -> Result<Source> {
    if path.is_dir() {
        let (dir, meta) = read_metadata(storage, path)?;
        return Ok(Source::Snapshot(dir, meta));
    }
    let bytes = storage.read_file(path)?;
    if bytes.starts_with(METADATA_MAGIC) {
        let meta = parse_metadata(path, &bytes)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(Source::Snapshot(dir, meta));
    }
    Ok(Source::File(StateFileReader::parse(path, bytes)?))
}

/// Runs `rill state …`, printing to stdout.
pub fn run(args: &StateArgs) -> Result<()> {
    let storage = FsCheckpointStorage::new("/");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match &args.command {
        StateCommand::Inspect { path } => match open(&storage, path)? {
            Source::Snapshot(dir, meta) => inspect_snapshot(&storage, &dir, &meta, &mut out)?,
            Source::File(reader) => inspect_file(&reader, &mut out)?,
        },
        StateCommand::Dump {
            path,
            operator,
            state,
        } => match open(&storage, path)? {
            Source::Snapshot(dir, meta) => {
                dump_snapshot(&storage, &dir, &meta, operator, state, &mut out)?
            }
            Source::File(reader) => dump_file(&reader, operator, state, &mut out)?,
        },
    }
    out.flush().context("cannot write to stdout")?;
    Ok(())
}

fn describe_state(m: &StateMeta) -> String {
    let mut s = format!("{:<24} {:<13}", m.name, m.kind.name());
    if m.kind.is_keyed() {
        s.push_str(&format!(
            " key={} namespace={}",
            m.key_type, m.namespace_type
        ));
    }
    if !m.user_key_type.is_empty() {
        s.push_str(&format!(" user_key={}", m.user_key_type));
    }
    s.push_str(&format!(" value={}", m.value_type));
    match &m.ttl {
        Some(t) => s.push_str(&format!(" ttl={:?} ({:?})", t.ttl, t.update_type)),
        None => s.push_str(" ttl=none"),
    }
    s
}

/// Per key group: live keys and bytes (block bytes including framing).
#[derive(Default)]
struct KeyGroupStats {
    keys: u64,
    bytes: u64,
}

/// Key counts per state name and stats per key group of one subtask's keyed chain.
fn keyed_stats(
    readers: &[StateFileReader],
    per_state: &mut BTreeMap<String, u64>,
    per_kg: &mut BTreeMap<u32, KeyGroupStats>,
) -> Result<()> {
    for r in readers {
        for b in r.blocks() {
            per_kg.entry(b.key_group).or_default().bytes += u64::from(b.len) + 8;
        }
    }
    if let [only] = readers {
        if only.header().kind == FileKind::KeyedFull {
            // A full file has no tombstones: the index counts are the key counts.
            for b in only.blocks() {
                let name = &only.header().states[b.state as usize].name;
                *per_state.entry(name.clone()).or_default() += b.entries;
                per_kg.entry(b.key_group).or_default().keys += b.entries;
            }
            return Ok(());
        }
    }
    // A chain: apply deltas key group by key group.
    let groups: BTreeSet<u32> = readers
        .iter()
        .flat_map(|r| r.blocks().iter().map(|b| b.key_group))
        .collect();
    for kg in groups {
        let mut live: BTreeMap<(String, Vec<u8>, Vec<u8>), bool> = BTreeMap::new();
        for r in readers {
            for b in r.blocks().iter().filter(|b| b.key_group == kg) {
                let name = &r.header().states[b.state as usize].name;
                for e in r.entries(b)? {
                    live.insert((name.clone(), e.key, e.namespace), e.value.is_some());
                }
            }
        }
        for ((name, _, _), alive) in live {
            if alive {
                *per_state.entry(name).or_default() += 1;
                per_kg.entry(kg).or_default().keys += 1;
            }
        }
    }
    Ok(())
}

fn keyed_readers(
    storage: &dyn CheckpointStorage,
    dir: &Path,
    handle: &rill_state::KeyedStateHandle,
) -> Result<Vec<StateFileReader>> {
    handle
        .files
        .iter()
        .map(|f| Ok(StateFileReader::open(storage, &f.resolve(dir))?))
        .collect()
}

/// Every state of an operator (keyed and operator), by name, first seen first.
fn operator_states(op: &OperatorSnapshot) -> Vec<StateMeta> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in &op.subtasks {
        let keyed = s.keyed.iter().flat_map(|h| h.states.iter());
        let operator = s
            .operator
            .iter()
            .flat_map(|h| h.states.iter().map(|(m, _)| m));
        for m in keyed.chain(operator) {
            if seen.insert(m.name.clone()) {
                out.push(m.clone());
            }
        }
    }
    out
}

fn kg_table(per_kg: &BTreeMap<u32, KeyGroupStats>, out: &mut impl Write) -> Result<()> {
    if per_kg.is_empty() {
        return Ok(());
    }
    writeln!(out, "    key groups (group: keys/bytes):")?;
    let cells: Vec<String> = per_kg
        .iter()
        .map(|(kg, s)| format!("{kg:>5}: {}/{}", s.keys, s.bytes))
        .collect();
    for row in cells.chunks(6) {
        let row: Vec<String> = row.iter().map(|c| format!("{c:<20}")).collect();
        writeln!(out, "     {}", row.join("").trim_end())?;
    }
    Ok(())
}

fn inspect_snapshot(
    storage: &dyn CheckpointStorage,
    dir: &Path,
    meta: &CheckpointMetadata,
    out: &mut impl Write,
) -> Result<()> {
    writeln!(out, "snapshot        {}", dir.display())?;
    writeln!(out, "job             {} ({})", meta.job_id, meta.job_name)?;
    writeln!(out, "checkpoint id   {}", meta.checkpoint_id)?;
    writeln!(out, "kind            {:?}", meta.kind)?;
    writeln!(out, "format version  {}", meta.format_version)?;
    writeln!(out, "timestamp       {} ms", meta.timestamp_ms)?;
    writeln!(out, "operators       {}", meta.operators.len())?;
    for op in &meta.operators {
        writeln!(out)?;
        writeln!(out, "operator {} ({})", op.uid, op.name)?;
        writeln!(
            out,
            "  parallelism {}, max parallelism {}",
            op.parallelism, op.max_parallelism
        )?;
        let in_flight: Vec<_> = op
            .subtasks
            .iter()
            .filter_map(|s| s.in_flight.as_ref())
            .collect();
        if !in_flight.is_empty() {
            let input: u64 = in_flight.iter().map(|h| h.input_bytes).sum();
            let output: u64 = in_flight.iter().map(|h| h.output_bytes).sum();
            writeln!(
                out,
                "  in-flight data (unaligned checkpoint): {input} bytes input, {output} bytes output, {} subtasks",
                in_flight.len()
            )?;
        }
        let states = operator_states(op);
        if states.is_empty() {
            writeln!(out, "  no state")?;
            continue;
        }
        let mut per_state: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_kg: BTreeMap<u32, KeyGroupStats> = BTreeMap::new();
        let mut total = 0u64;
        let mut backends = BTreeSet::new();
        for s in &op.subtasks {
            if let Some(h) = &s.keyed {
                total += h.total_bytes();
                backends.insert(h.backend.name());
                keyed_stats(
                    &keyed_readers(storage, dir, h)?,
                    &mut per_state,
                    &mut per_kg,
                )?;
            }
            if let Some(h) = &s.operator {
                total += h.file.size;
                for (m, n) in &h.states {
                    *per_state.entry(m.name.clone()).or_default() += n;
                }
            }
        }
        if !backends.is_empty() {
            let b: Vec<&str> = backends.into_iter().collect();
            writeln!(out, "  keyed backend {}", b.join(", "))?;
        }
        writeln!(out, "  total bytes {total}")?;
        writeln!(out, "  states:")?;
        for m in &states {
            let n = per_state.get(&m.name).copied().unwrap_or(0);
            let unit = if m.kind.is_keyed() {
                "keys"
            } else {
                "elements"
            };
            writeln!(out, "    {}  {n} {unit}", describe_state(m))?;
        }
        kg_table(&per_kg, out)?;
    }
    Ok(())
}

fn inspect_file(r: &StateFileReader, out: &mut impl Write) -> Result<()> {
    let h = r.header();
    writeln!(out, "state file      {}", r.path().display())?;
    writeln!(out, "kind            {:?}", h.kind)?;
    writeln!(out, "operator        {}", h.operator_uid)?;
    writeln!(out, "subtask         {}", h.subtask_index)?;
    writeln!(out, "checkpoint id   {}", h.checkpoint_id)?;
    writeln!(out, "backend         {}", h.backend.name())?;
    if h.kind != FileKind::Operator {
        writeln!(out, "max parallelism {}", h.max_parallelism)?;
        writeln!(out, "key groups      {}", h.key_group_range)?;
    }
    writeln!(out, "bytes           {}", r.file_len())?;
    let mut per_state: BTreeMap<u32, u64> = BTreeMap::new();
    let mut per_kg: BTreeMap<u32, KeyGroupStats> = BTreeMap::new();
    for b in r.blocks() {
        *per_state.entry(b.state).or_default() += b.entries;
        let kg = per_kg.entry(b.key_group).or_default();
        kg.keys += b.entries;
        kg.bytes += u64::from(b.len) + 8;
    }
    writeln!(out, "states:")?;
    let unit = match h.kind {
        FileKind::Operator => "elements",
        FileKind::KeyedFull => "keys",
        FileKind::KeyedDelta => "entries (incl. deletions)",
    };
    for (i, m) in h.states.iter().enumerate() {
        let n = per_state.get(&(i as u32)).copied().unwrap_or(0);
        writeln!(out, "    {}  {n} {unit}", describe_state(m))?;
    }
    if h.kind != FileKind::Operator {
        kg_table(&per_kg, out)?;
    }
    Ok(())
}

/// A MessagePack value as JSON: maps with string keys become objects, other maps arrays
/// of `[key, value]` pairs, binary an array of bytes, non-UTF-8 strings their bytes.
pub fn msgpack_to_json(v: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match v {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(*b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => J::from(n),
            (None, Some(n)) => J::from(n),
            _ => J::Null,
        },
        M::F32(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(J::Number)
            .unwrap_or_else(|| J::String(f.to_string())),
        M::F64(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or_else(|| J::String(f.to_string())),
        M::String(s) => match s.as_str() {
            Some(s) => J::String(s.to_string()),
            None => J::Array(s.as_bytes().iter().map(|b| J::from(*b)).collect()),
        },
        M::Binary(b) => J::Array(b.iter().map(|b| J::from(*b)).collect()),
        M::Array(a) => J::Array(a.iter().map(msgpack_to_json).collect()),
        M::Map(m) => {
            if m.iter().all(|(k, _)| k.as_str().is_some()) {
                J::Object(
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().unwrap_or_default().to_string(),
                                msgpack_to_json(v),
                            )
                        })
                        .collect(),
                )
            } else {
                J::Array(
                    m.iter()
                        .map(|(k, v)| J::Array(vec![msgpack_to_json(k), msgpack_to_json(v)]))
                        .collect(),
                )
            }
        }
        M::Ext(t, data) => serde_json::json!({
            "ext_type": t,
            "data": data,
        }),
    }
}

fn to_json(bytes: &[u8], what: &str, file: &Path) -> Result<serde_json::Value> {
    let mut slice = bytes;
    let v = rmpv::decode::read_value(&mut slice).with_context(|| {
        format!(
            "cannot decode a {what} in {} as MessagePack",
            file.display()
        )
    })?;
    Ok(msgpack_to_json(&v))
}

fn dump_snapshot(
    storage: &dyn CheckpointStorage,
    dir: &Path,
    meta: &CheckpointMetadata,
    uid: &str,
    state: &str,
    out: &mut impl Write,
) -> Result<()> {
    let Some(op) = meta.operators.iter().find(|o| o.uid == uid) else {
        let uids: Vec<&str> = meta.operators.iter().map(|o| o.uid.as_str()).collect();
        bail!(
            "no operator with uid `{uid}` in {}; operators: {}",
            dir.display(),
            list(&uids)
        );
    };
    let states = operator_states(op);
    let Some(m) = states.iter().find(|m| m.name == state) else {
        let names: Vec<&str> = states.iter().map(|m| m.name.as_str()).collect();
        bail!(
            "operator `{uid}` has no state `{state}`; states: {}",
            list(&names)
        );
    };
    let mut subtasks: Vec<_> = op.subtasks.iter().collect();
    subtasks.sort_by_key(|s| s.subtask_index);
    for s in subtasks {
        if m.kind.is_keyed() {
            let Some(h) = &s.keyed else { continue };
            dump_keyed_chain(&keyed_readers(storage, dir, h)?, state, false, out)?;
        } else {
            let Some(h) = &s.operator else { continue };
            let r = StateFileReader::open(storage, &h.file.resolve(dir))?;
            dump_operator_file(&r, state, s.subtask_index, out)?;
        }
    }
    Ok(())
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// Encoded (key, namespace).
type EntryKey = (Vec<u8>, Vec<u8>);

/// Prints the live entries of `state` in a chain of keyed files, applying later files
/// over earlier ones one key group at a time. With `show_deleted`, tombstones are printed
/// too (`"deleted":true`), for a single delta file.
fn dump_keyed_chain(
    readers: &[StateFileReader],
    state: &str,
    show_deleted: bool,
    out: &mut impl Write,
) -> Result<()> {
    let groups: BTreeSet<u32> = readers
        .iter()
        .flat_map(|r| r.blocks().iter().map(|b| b.key_group))
        .collect();
    for kg in groups {
        let mut entries: BTreeMap<EntryKey, (Option<Vec<u8>>, &Path)> = BTreeMap::new();
        for r in readers {
            let Some(idx) = r.header().states.iter().position(|m| m.name == state) else {
                continue;
            };
            for b in r
                .blocks()
                .iter()
                .filter(|b| b.key_group == kg && b.state as usize == idx)
            {
                for e in r.entries(b)? {
                    entries.insert((e.key, e.namespace), (e.value, r.path()));
                }
            }
        }
        for ((key, ns), (value, file)) in entries {
            let mut line = serde_json::Map::new();
            line.insert("key_group".into(), kg.into());
            line.insert("key".into(), to_json(&key, "key", file)?);
            line.insert("namespace".into(), to_json(&ns, "namespace", file)?);
            match value {
                Some(v) => {
                    line.insert("value".into(), to_json(&v, "value", file)?);
                }
                None if show_deleted => {
                    line.insert("value".into(), serde_json::Value::Null);
                    line.insert("deleted".into(), true.into());
                }
                None => continue,
            }
            writeln!(out, "{}", serde_json::Value::Object(line))?;
        }
    }
    Ok(())
}

fn dump_operator_file(
    r: &StateFileReader,
    state: &str,
    subtask: u32,
    out: &mut impl Write,
) -> Result<()> {
    let Some(idx) = r.header().states.iter().position(|m| m.name == state) else {
        return Ok(());
    };
    for b in r.blocks().iter().filter(|b| b.state as usize == idx) {
        for e in r.elements(b)? {
            let line = serde_json::json!({
                "subtask": subtask,
                "value": to_json(&e, "element", r.path())?,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn dump_file(r: &StateFileReader, uid: &str, state: &str, out: &mut impl Write) -> Result<()> {
    let h = r.header();
    if h.operator_uid != uid {
        bail!(
            "{} holds state of operator `{}`, not `{uid}`",
            r.path().display(),
            h.operator_uid
        );
    }
    if !h.states.iter().any(|m| m.name == state) {
        let names: Vec<&str> = h.states.iter().map(|m| m.name.as_str()).collect();
        bail!(
            "{} has no state `{state}`; states: {}",
            r.path().display(),
            list(&names)
        );
    }
    match h.kind {
        FileKind::Operator => dump_operator_file(r, state, h.subtask_index, out),
        FileKind::KeyedFull => dump_keyed_chain(std::slice::from_ref(r), state, false, out),
        FileKind::KeyedDelta => dump_keyed_chain(std::slice::from_ref(r), state, true, out),
    }
}
