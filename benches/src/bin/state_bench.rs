//! State backend figures of issue #9, each next to its baseline from the same run.
//!
//! * **ops**: `ValueState` get + update (one `value_modify`, the keyed operators' hot
//!   path) over 1M keys in random order, per backend, single-threaded (so the rate is per
//!   core); baseline: the same loop over a plain `FxHashMap<Value, Value>`.
//! * **snapshot**: 1M keys × 100-byte values. Heap: a full snapshot, sync part (taking the
//!   copy-on-write view) and async part (serialize + write) timed separately. Lsm: a full
//!   first checkpoint, then 1 % of the keys changed and an incremental one (sync, async,
//!   bytes uploaded). Restore time for each into a fresh backend.
//! * **keyed-sum** (README main job) on a MiniCluster at p = 1 and 2 with its state in the
//!   heap and the lsm backend, against the same job with the pre-#9 private-map operator
//!   (`bench.count_sum_private_map`, registered here), alternated in one run.
//!
//! Usage: `cargo run --release -p rill-benches --bin state_bench -- [--only ops|snapshot|keyed-sum] [--keys N] [--rows N] [--rounds N]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rill::admin::AdminClient;
use rill_benches::process_cpu;
use rill_dataflow::builtins::{self, DatagenConfig};
use rill_dataflow::key::KeySelector;
use rill_dataflow::operator::{Collector, Operator, OperatorContext};
use rill_dataflow::registry::OperatorKind;
use rill_dataflow::spec::FactoryRef;
use rill_dataflow::{jobs, key, OperatorRegistry, StreamExecutionEnvironment, StreamRecord, Value};
use rill_endpoints::{MiniCluster, MiniClusterOptions, RillConfig};
use rill_runtime::security::ClusterSecret;
use rill_state::format::KeyedFileWriter;
use rill_state::key_group::KeyGroupRange;
use rill_state::storage::{CheckpointLayout, FsCheckpointStorage};
use rill_state::{
    BackendKind, CheckpointStorage, KeyedBackendParams, KeyedStateBackend, SnapshotKind,
    SystemTtlClock, ValueState, ValueStateDescriptor,
};
use rustc_hash::FxHashMap;

struct Args {
    only: Option<String>,
    keys: u64,
    rows: u64,
    rounds: usize,
    /// keyed-sum variants to run (`map`, `heap`, `lsm`); all when empty.
    variants: Vec<String>,
    /// keyed-sum parallelisms to run.
    parallelism: Vec<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        only: None,
        keys: 1_000_000,
        rows: 20_000_000,
        rounds: 3,
        variants: Vec::new(),
        parallelism: vec![1, 2],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--only" => args.only = Some(value()?),
            "--keys" => args.keys = value()?.parse()?,
            "--rows" => args.rows = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--variants" => args.variants = value()?.split(',').map(String::from).collect(),
            "--parallelism" => {
                args.parallelism = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!("usage: state_bench [--only ops|snapshot|keyed-sum] [--keys N] [--rows N] [--rounds N] [--variants map,heap,lsm] [--parallelism 1,2]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn backend(kind: BackendKind, dir: &Path, subtask_uid: &str) -> Result<KeyedStateBackend<Value>> {
    Ok(KeyedStateBackend::new(
        kind,
        KeyedBackendParams {
            operator_uid: subtask_uid.into(),
            subtask_index: 0,
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128),
            clock: Arc::new(SystemTtlClock),
            local_dir: dir.to_path_buf(),
            incremental: true,
            lsm_cache_entries: 65_536,
        },
    )?)
}

fn shuffled_keys(n: u64, seed: u64) -> Vec<i64> {
    let mut keys: Vec<i64> = (0..n as i64).collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.gen_range(0..=i));
    }
    keys
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

// ---------------------------------------------------------------------------------------
// ops

fn ops(args: &Args) -> Result<()> {
    let n = args.keys;
    let keys = shuffled_keys(n, 7);
    let ops_per_round = (2 * n as usize).max(20_000_000);
    println!("== ValueState get+update, {n} keys, {ops_per_round} ops per round, 1 thread (median of {} rounds)", args.rounds);
    let mut base = Vec::new();
    for _ in 0..args.rounds {
        let mut map: FxHashMap<Value, Value> = FxHashMap::default();
        let t = Instant::now();
        for i in 0..ops_per_round {
            let k = Value::I64(keys[i % keys.len()]);
            match map.get_mut(&k) {
                Some(Value::I64(c)) => *c += 1,
                Some(_) => unreachable!("only i64 values are stored"),
                None => {
                    map.insert(k, Value::I64(1));
                }
            }
        }
        base.push(ops_per_round as f64 / t.elapsed().as_secs_f64());
        std::hint::black_box(&map);
    }
    let base = median(base);
    println!(
        "  FxHashMap<Value, Value> (baseline): {:.2} M ops/s",
        base / 1e6
    );
    for kind in [BackendKind::Heap, BackendKind::Lsm] {
        let mut rates = Vec::new();
        for _ in 0..args.rounds {
            let dir = tempfile::tempdir()?;
            let mut b = backend(kind, dir.path(), "ops")?;
            let s: ValueState<(), Value> = b.value_state(&ValueStateDescriptor::new("count"))?;
            let t = Instant::now();
            for i in 0..ops_per_round {
                let k = Value::I64(keys[i % keys.len()]);
                b.value_modify(&s, &k, &(), |v| match v {
                    Some(Value::I64(c)) => *c += 1,
                    _ => *v = Some(Value::I64(1)),
                })?;
            }
            rates.push(ops_per_round as f64 / t.elapsed().as_secs_f64());
        }
        let r = median(rates);
        println!(
            "  {}: {:.2} M ops/s per core = {:.0} % of the baseline",
            kind.name(),
            r / 1e6,
            100.0 * r / base
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// snapshot

struct SnapFigures {
    sync: Duration,
    async_: Duration,
    bytes: u64,
}

fn take(
    b: &mut KeyedStateBackend<Value>,
    storage: &Arc<FsCheckpointStorage>,
    layout: &CheckpointLayout,
    id: u64,
) -> Result<(SnapFigures, rill_state::KeyedStateHandle)> {
    let storage_dyn: Arc<dyn CheckpointStorage> = storage.clone();
    let target = layout.target(storage_dyn, id, SnapshotKind::Checkpoint);
    let t = Instant::now();
    let pending = b.snapshot(target)?;
    let sync = t.elapsed();
    let t = Instant::now();
    let handle = std::thread::scope(|s| s.spawn(|| pending.run()).join())
        .map_err(|_| anyhow::anyhow!("snapshot thread panicked"))??;
    let async_ = t.elapsed();
    b.notify_checkpoint_complete(id);
    Ok((
        SnapFigures {
            sync,
            async_,
            bytes: handle.incremental_bytes,
        },
        handle,
    ))
}

fn restore_time(
    kind: BackendKind,
    handle: &rill_state::KeyedStateHandle,
    storage: &FsCheckpointStorage,
    snapshot_dir: &Path,
    n: u64,
) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut b = backend(kind, dir.path(), "snap")?;
    let t = Instant::now();
    b.restore(std::slice::from_ref(handle), snapshot_dir, storage)?;
    let s: ValueState<(), Value> = b.value_state(&ValueStateDescriptor::new("payload"))?;
    let elapsed = t.elapsed();
    // Spot-check: the restored backend holds every key.
    let got = b.keys(s.id(), &())?.len() as u64;
    if got != n {
        bail!("{} restore has {got} keys, expected {n}", kind.name());
    }
    Ok(elapsed)
}

fn snapshot(args: &Args) -> Result<()> {
    let n = args.keys;
    println!("== snapshots of {n} keys × 100-byte values");
    let payload = |i: i64, round: u8| {
        let mut v = vec![round; 100];
        v[..8].copy_from_slice(&i.to_le_bytes());
        Value::Bytes(v)
    };
    for kind in [BackendKind::Heap, BackendKind::Lsm] {
        let local = tempfile::tempdir()?;
        let chk = tempfile::tempdir()?;
        let storage = Arc::new(FsCheckpointStorage::new(chk.path()));
        let layout = CheckpointLayout::new(chk.path(), "00000000000000000000000000000bench");
        let mut b = backend(kind, local.path(), "snap")?;
        let s: ValueState<(), Value> = b.value_state(&ValueStateDescriptor::new("payload"))?;
        for i in 0..n as i64 {
            b.value_modify(&s, &Value::I64(i), &(), |v| *v = Some(payload(i, 1)))?;
        }
        let (full, h1) = take(&mut b, &storage, &layout, 1)?;
        let r1 = restore_time(kind, &h1, &storage, &layout.checkpoint_dir(1), n)?;
        println!(
            "  {} full: sync {:.1} ms, async {:.0} ms, {:.1} MiB; restore {:.0} ms",
            kind.name(),
            full.sync.as_secs_f64() * 1e3,
            full.async_.as_secs_f64() * 1e3,
            full.bytes as f64 / (1 << 20) as f64,
            r1.as_secs_f64() * 1e3
        );
        // 1 % of the keys change, then a second checkpoint.
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..n / 100 {
            let i = rng.gen_range(0..n as i64);
            b.value_modify(&s, &Value::I64(i), &(), |v| *v = Some(payload(i, 2)))?;
        }
        let (second, h2) = take(&mut b, &storage, &layout, 2)?;
        let r2 = restore_time(kind, &h2, &storage, &layout.checkpoint_dir(2), n)?;
        println!(
            "  {} after a 1 % change ({}): sync {:.1} ms, async {:.0} ms, {:.2} MiB uploaded ({} file(s) referenced, {:.1} MiB in all); restore {:.0} ms",
            kind.name(),
            if kind == BackendKind::Lsm { "incremental" } else { "full" },
            second.sync.as_secs_f64() * 1e3,
            second.async_.as_secs_f64() * 1e3,
            second.bytes as f64 / (1 << 20) as f64,
            h2.files.len(),
            h2.total_bytes() as f64 / (1 << 20) as f64,
            r2.as_secs_f64() * 1e3
        );
    }
    // Keeps the format module linked in for readers of this file: the snapshot sizes above
    // are KeyedFileWriter output.
    let _ = std::mem::size_of::<KeyedFileWriter>();
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let only = args.only.as_deref();
    if only.is_none() || only == Some("ops") {
        ops(&args)?;
    }
    if only.is_none() || only == Some("snapshot") {
        snapshot(&args)?;
    }
    if only.is_none() || only == Some("keyed-sum") {
        keyed_sum(&args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// keyed-sum on a MiniCluster

/// Factory name of the baseline operator: keyed-sum's count + sum with the state in a
/// private `FxHashMap`, as every keyed operator kept it before issue #9.
const PRIVATE_MAP: &str = "bench.count_sum_private_map";

/// The pre-#9 `KeyedProcessOperator` specialised to count + sum: one hash lookup per
/// record, the key cloned only when first seen, rows emitted in key order at end of input.
struct PrivateMapCountSum {
    key: Arc<dyn KeySelector>,
    state: FxHashMap<Value, (i64, i64)>,
    emit_updates: bool,
}

/// CountSum's per-record function as it was before #9.
#[inline]
fn count_sum(
    s: &mut (i64, i64),
    v: &Value,
    key: &Value,
    emit_updates: bool,
    out: &mut Collector<'_>,
) -> rill_dataflow::Result<()> {
    let Value::I64(x) = v else {
        return Err(rill_dataflow::DataflowError::TypeMismatch {
            operator: PRIVATE_MAP.into(),
            expected: "i64",
            actual: v.type_name(),
        });
    };
    s.0 += 1;
    s.1 = s.1.wrapping_add(*x);
    if emit_updates {
        out.collect(Value::Tuple(vec![
            key.clone(),
            Value::I64(s.0),
            Value::I64(s.1),
        ]));
    }
    Ok(())
}

impl Operator for PrivateMapCountSum {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> rill_dataflow::Result<()> {
        // The pre-#9 KeyedProcessOperator loop with CountSum's `process` inlined: one
        // lookup, the key cloned only when first seen, a collector per record.
        for r in input.drain(..) {
            let key = self.key.key(&r.value)?;
            let mut c = Collector::new(out, r.timestamp);
            if let Some(s) = self.state.get_mut(key.as_ref()) {
                count_sum(s, &r.value, &key, self.emit_updates, &mut c)?;
            } else {
                let key = key.into_owned();
                let mut s = (0, 0);
                count_sum(&mut s, &r.value, &key, self.emit_updates, &mut c)?;
                self.state.insert(key, s);
            }
        }
        Ok(())
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> rill_dataflow::Result<()> {
        let mut rows: Vec<_> = self.state.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, (c, s)) in rows {
            out.push(StreamRecord::new(Value::Tuple(vec![
                k.clone(),
                Value::I64(*c),
                Value::I64(*s),
            ])));
        }
        Ok(())
    }
}

fn registry() -> Result<Arc<OperatorRegistry>> {
    let mut r = OperatorRegistry::new();
    r.register_operator(
        PRIVATE_MAP,
        OperatorKind::Process,
        |(): (), ctx: &OperatorContext| {
            Ok(PrivateMapCountSum {
                key: ctx.key_selector.clone().ok_or_else(|| {
                    rill_dataflow::DataflowError::InvalidGraph("count+sum needs key_by".into())
                })?,
                state: FxHashMap::default(),
                emit_updates: false,
            })
        },
    )?;
    Ok(Arc::new(r))
}

/// keyed-sum's graph with its aggregate replaced by the private-map baseline.
fn private_map_job(rows: u64, keys: u64, parallelism: u32) -> Result<rill_dataflow::JobGraph> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    env.add_source(builtins::datagen(DatagenConfig {
        rows: Some(rows),
        ..DatagenConfig::default()
    }))
    .name("Source: datagen")
    .key_by(key::by_i64_mod(keys as i64))
    .process(FactoryRef::unit(PRIVATE_MAP))
    .name("count+sum")
    .uid("keyed-sum-agg")
    .sink(builtins::collect(jobs::KEYED_SUM_COLLECT_ID))
    .name("Sink: collect");
    Ok(env.job_graph("keyed-sum (private map)")?)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    PrivateMap,
    Backend(BackendKind),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::PrivateMap => "private map (pre-#9)".into(),
            Variant::Backend(k) => format!("{} backend", k.name()),
        }
    }
}

/// One keyed-sum run; returns events/s over the job's duration and per CPU-second.
async fn keyed_sum_once(
    registry: &Arc<OperatorRegistry>,
    variant: Variant,
    parallelism: u32,
    rows: u64,
    keys: u64,
) -> Result<(f64, f64)> {
    let mut config = RillConfig::default();
    config.taskmanager.number_of_task_slots = parallelism;
    let local = tempfile::tempdir()?;
    if let Variant::Backend(kind) = variant {
        config.state.backend.kind = kind;
        config.state.backend.lsm.localdir = Some(local.path().to_path_buf());
    }
    let cluster = MiniCluster::start(
        &config,
        &MiniClusterOptions::default(),
        &ClusterSecret::generate(),
        registry.clone(),
    )?;
    let client = AdminClient::with_service(
        cluster.jobmanager().rpc().clone(),
        cluster.jobmanager().address(),
    )
    .await?;
    let outcome = async {
        client
            .wait_for_slots(parallelism, Duration::from_secs(30))
            .await?;
        let job = match variant {
            Variant::PrivateMap => private_map_job(rows, keys, parallelism)?,
            Variant::Backend(_) => jobs::keyed_sum(Some(rows), keys, None, parallelism)?,
        };
        let cpu0 = process_cpu();
        let id = client.submit(job).await?;
        let result = client
            .wait_for_result(id, Duration::from_secs(600), |_| {})
            .await?;
        let cpu = process_cpu().saturating_sub(cpu0).as_secs_f64().max(1e-3);
        if result.status != rill_endpoints::JobStatus::Finished {
            bail!(
                "{} p={parallelism}: {} {:?}",
                variant.name(),
                result.status,
                result.failure
            );
        }
        let values = result
            .collected
            .get(jobs::KEYED_SUM_COLLECT_ID)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let checksum = jobs::keyed_sum_checksum(values)?;
        if checksum != jobs::expected_keyed_sum_checksum(rows, keys) {
            bail!("{} p={parallelism}: wrong checksum", variant.name());
        }
        let job_s = result.duration_ms.max(1) as f64 / 1e3;
        Ok((rows as f64 / job_s, rows as f64 / cpu))
    }
    .await;
    client.close().await;
    cluster.shutdown().await;
    outcome
}

fn keyed_sum(args: &Args) -> Result<()> {
    let (rows, keys) = (args.rows, 1000);
    println!(
        "== keyed-sum on a MiniCluster: {rows} rows, {keys} keys, collect sink; variants alternated, median of {} rounds",
        args.rounds
    );
    let registry = registry()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let variants: Vec<Variant> = [
        ("map", Variant::PrivateMap),
        ("heap", Variant::Backend(BackendKind::Heap)),
        ("lsm", Variant::Backend(BackendKind::Lsm)),
    ]
    .into_iter()
    .filter(|(n, _)| args.variants.is_empty() || args.variants.iter().any(|v| v == n))
    .map(|(_, v)| v)
    .collect();
    if variants.is_empty() {
        bail!("--variants: none of map, heap, lsm selected");
    }
    for &p in &args.parallelism {
        let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
        for _ in 0..args.rounds {
            for (i, v) in variants.iter().enumerate() {
                rates[i].push(rt.block_on(keyed_sum_once(&registry, *v, p, rows, keys))?);
            }
        }
        let med: Vec<(f64, f64)> = rates
            .iter()
            .map(|r| {
                (
                    median(r.iter().map(|x| x.0).collect()),
                    median(r.iter().map(|x| x.1).collect()),
                )
            })
            .collect();
        let rate_of = |v: Variant| {
            variants
                .iter()
                .position(|x| *x == v)
                .map_or(f64::NAN, |i| med[i].0)
        };
        let base = rate_of(Variant::PrivateMap);
        let heap = rate_of(Variant::Backend(BackendKind::Heap));
        for (v, (rate, per_cpu)) in variants.iter().zip(&med) {
            let range = |i: usize| {
                let xs: Vec<f64> = rates[i].iter().map(|x| x.0 / 1e6).collect();
                format!(
                    "{:.1}–{:.1}",
                    xs.iter().cloned().fold(f64::INFINITY, f64::min),
                    xs.iter().cloned().fold(0.0, f64::max)
                )
            };
            let i = variants.iter().position(|x| x == v).unwrap_or(0);
            println!(
                "  p={p} {:<22} {:>6.2} M ev/s (job; {} ), {:.2} M ev/s per CPU-second; {:.0} % of private map, {:.0} % of heap",
                v.name(),
                rate / 1e6,
                range(i),
                per_cpu / 1e6,
                100.0 * rate / base,
                100.0 * rate / heap
            );
        }
    }
    Ok(())
}
