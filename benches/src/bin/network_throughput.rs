//! Data-plane throughput, shaped like Flink's `StreamNetworkThroughputBenchmark`.
//!
//! Four writer threads each own a result partition with `channels` subpartitions and emit
//! 8-byte records round-robin; one receiver thread reads a single input gate holding all
//! `4 × channels` channels and counts the records. As in Flink's benchmark, the threads and
//! channels live across rounds: set-up (partitions, gate, partition requests, a first
//! record over every channel) is timed once and printed on its own, then the warm-up rounds
//! and the measured rounds each send the records and flush. Cases: "100 channels, 100 ms flush"
//! and "1000 channels, 1 ms flush", each with **local** channels (one process, buffers
//! handed over without copying) and **remote** channels (two network environments in this
//! process, talking over loopback QUIC: one connection, one stream per channel).
//!
//! The same run measures raw quinn on the same loopback (4 streams, 32 KiB chunks, the
//! same transport configuration) as the baseline for the remote cases, and prints the
//! ratio of bytes/s on the remote data plane to raw quinn bytes/s. Peak memory is reported
//! as the network pools' peak allocation (bounded by the configured network memory) and
//! the process's peak RSS.
//!
//! Usage: `cargo run --release -p rill-benches --bin network_throughput -- [--records N] [--channels 100|1000] [--mode local|remote] [--warmup N] [--rounds N] [--no-baseline]`
//!
//! Every case runs `--warmup` unmeasured rounds (default 3; they also let the network pools
//! allocate the segments later rounds reuse, as in a long-running TaskManager) and
//! `--rounds` measured ones (default 5), and prints the median, with the range of
//! records/ms in brackets.
//!
//! Each case also prints the CPU time the whole process spent on it per record (user +
//! system, all threads): steadier than wall rates on a shared machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rill_network::input_gate::ReaderItem;
use rill_network::{
    BufferTimeout, ChannelSelector, NetworkConfig, NetworkEnvironment, PartitionId, RecordReader,
    RecordWriter, TaskIoMetrics,
};
use rill_runtime::security::{self, ClusterSecret};

const WRITERS: u32 = 4;
const SEGMENT: u32 = 32 * 1024;

struct Case {
    channels: u32,
    flush: Duration,
}

struct Outcome {
    records_per_ms: f64,
    cpu_ns_per_record: f64,
    bytes_per_s: f64,
    peak_network_bytes: u64,
    configured_bytes: u64,
}

fn config(channels: u32, flush: Duration) -> NetworkConfig {
    let total_channels = u64::from(WRITERS * channels);
    let base = NetworkConfig::default();
    // Sender: every partition needs channels + 1 buffers, and may use up to 10 per channel.
    // Receiver: 2 exclusive per channel + 8 floating. Size both generously, like Flink's
    // benchmark environment does, so the benchmark measures the data path.
    let segments = total_channels * 4 + 4096;
    NetworkConfig {
        memory: segments * u64::from(SEGMENT),
        segment_size: SEGMENT,
        buffer_timeout: BufferTimeout::from_duration(flush),
        ..base
    }
}

/// CPU time (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The network environments of one case: set up once (like Flink's benchmark `@Setup`),
/// then used by the warm-up and the measured rounds.
struct Setup {
    cfg: NetworkConfig,
    sender: NetworkEnvironment,
    receiver: Option<NetworkEnvironment>,
    sender_addr: Option<SocketAddr>,
}

fn setup(case: &Case, remote: bool, rt: &tokio::runtime::Runtime) -> Result<Setup> {
    let cfg = config(case.channels, case.flush);
    let _guard = rt.enter();
    let sender = NetworkEnvironment::new(cfg.clone())?;
    let (receiver, sender_addr) = if remote {
        let secret = ClusterSecret::generate();
        let receiver = NetworkEnvironment::new(cfg.clone())?;
        let a = sender.start_transport("127.0.0.1:0".parse()?, secret.clone())?;
        receiver.start_transport("127.0.0.1:0".parse()?, secret)?;
        (Some(receiver), Some(a))
    } else {
        (None, None)
    };
    Ok(Setup {
        cfg,
        sender,
        receiver,
        sender_addr,
    })
}

/// Bytes a record takes on the wire: 4-byte length prefix + 8-byte long.
const RECORD_WIRE_BYTES: u64 = 12;

enum Command {
    /// Emit this many records (0, 1, 2, …), then flush.
    Round(u64),
    /// Emit one record to every channel, then flush.
    Broadcast,
}

/// A writer thread and its command channel.
type WriterThread = (
    std::sync::mpsc::Sender<Command>,
    std::thread::JoinHandle<Result<()>>,
);

/// The reader thread: records to expect per round in, (count, checksum) per round out.
struct ReaderThread {
    go: std::sync::mpsc::Sender<u64>,
    done: std::sync::mpsc::Receiver<Result<(u64, u64)>>,
    handle: std::thread::JoinHandle<Result<()>>,
}

/// Writers, reader and channels of one case, kept alive across rounds like Flink's
/// benchmark keeps its writer threads and receiver: a round sends records over channels
/// that are already connected, so set-up is measured once, on its own.
struct Harness {
    writers: Vec<WriterThread>,
    reader: Option<ReaderThread>,
    partitions: Vec<PartitionId>,
    remote: bool,
}

impl Harness {
    /// Creates partitions, the input gate and the threads; returns once a record has
    /// crossed every channel, with the time that took (channel set-up).
    fn start(s: &Setup, case: &Case, rt: &tokio::runtime::Runtime) -> Result<(Self, Duration)> {
        let _guard = rt.enter();
        let started = Instant::now();
        let remote = s.receiver.is_some();
        let sender = &s.sender;
        let receiver = s.receiver.as_ref().unwrap_or(&s.sender);
        // One harness per set-up: partitions 1..=WRITERS.
        let first = 1;
        let partitions: Vec<_> = (0..WRITERS)
            .map(|w| sender.create_partition(PartitionId(first + u128::from(w)), case.channels))
            .collect::<Result<_, _>>()?;
        let mut builder = receiver.input_gate_builder(Arc::new(TaskIoMetrics::default()))?;
        for (w, partition) in partitions.iter().enumerate() {
            for c in 0..case.channels {
                match s.sender_addr {
                    Some(addr) => {
                        receiver.add_remote_channel(&mut builder, addr, partition.id(), c)?;
                    }
                    None => {
                        builder.add_local(&partitions[w], c)?;
                    }
                }
            }
        }
        let gate = builder.build();
        let ids = partitions.iter().map(|p| p.id()).collect();
        let timeout = s.cfg.buffer_timeout;
        let writers = partitions
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let (tx, rx) = std::sync::mpsc::channel::<Command>();
                let handle = std::thread::Builder::new()
                    .name(format!("writer-{i}"))
                    .spawn(move || -> Result<()> {
                        let mut w = RecordWriter::new(
                            p,
                            ChannelSelector::rebalance(i as u64),
                            timeout,
                            Arc::new(TaskIoMetrics::default()),
                            None,
                        )?;
                        while let Ok(cmd) = rx.recv() {
                            match cmd {
                                Command::Round(n) => {
                                    for v in 0..n {
                                        w.emit(&v.to_le_bytes())?;
                                    }
                                }
                                Command::Broadcast => w.broadcast_emit(&0u64.to_le_bytes())?,
                            }
                            w.flush_all()?;
                        }
                        w.finish()?;
                        Ok(())
                    })?;
                Ok((tx, handle))
            })
            .collect::<Result<Vec<_>>>()?;
        let (go_tx, go_rx) = std::sync::mpsc::channel::<u64>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let reader =
            std::thread::Builder::new()
                .name("receiver".into())
                .spawn(move || -> Result<()> {
                    let mut r = RecordReader::new(gate);
                    // Each round: count `expected` records and sum them.
                    while let Ok(expected) = go_rx.recv() {
                        let (mut n, mut sum) = (0u64, 0u64);
                        while n < expected {
                            match r.next_timeout(Duration::from_secs(60))? {
                                Some(ReaderItem::Record { record, .. }) => {
                                    n += 1;
                                    sum = sum.wrapping_add(u64::from_le_bytes(record.try_into()?));
                                }
                                Some(ReaderItem::Event { .. }) => {}
                                None => break,
                            }
                        }
                        if done_tx.send(Ok((n, sum))).is_err() {
                            return Ok(());
                        }
                    }
                    // Then drain to the end of every partition.
                    while r.next_timeout(Duration::from_secs(60))?.is_some() {}
                    if !r.gate_mut().is_finished() {
                        bail!("receiver timed out waiting for the end of the partitions");
                    }
                    Ok(())
                })?;
        let mut h = Harness {
            writers,
            reader: Some(ReaderThread {
                go: go_tx,
                done: done_rx,
                handle: reader,
            }),
            partitions: ids,
            remote,
        };
        let expected = u64::from(WRITERS * case.channels);
        let (n, _) = h.exchange(expected, || Command::Broadcast)?;
        if n != expected {
            bail!("set-up: received {n} of {expected} records");
        }
        Ok((h, started.elapsed()))
    }

    /// Sends one command to every writer and waits for the reader to count `expected`.
    fn exchange(&mut self, expected: u64, cmd: impl Fn() -> Command) -> Result<(u64, u64)> {
        let reader = self.reader.as_ref().context("harness finished")?;
        reader.go.send(expected).ok().context("receiver ended")?;
        for (tx, _) in &self.writers {
            tx.send(cmd()).ok().context("writer ended")?;
        }
        match reader.done.recv() {
            Ok(r) => r,
            Err(_) => {
                // The reader failed: report its error (or a writer's).
                self.finish()?;
                bail!("receiver ended early")
            }
        }
    }

    /// One measured round of `records` records.
    fn round(&mut self, s: &Setup, records: u64) -> Result<Outcome> {
        let per_writer = records / u64::from(WRITERS);
        let expected = per_writer * u64::from(WRITERS);
        let cpu_start = process_cpu();
        let start = Instant::now();
        let (n, sum) = self.exchange(expected, || Command::Round(per_writer))?;
        let elapsed = start.elapsed();
        let cpu = process_cpu().saturating_sub(cpu_start);
        if n != expected
            || sum != u64::from(WRITERS) * (per_writer * (per_writer.saturating_sub(1)) / 2)
        {
            bail!("received {n} records (checksum {sum}), expected {expected}");
        }
        let receiver = s.receiver.as_ref().unwrap_or(&s.sender);
        let peak_segments = s.sender.buffer_pool().peak_allocated_segments()
            + if self.remote {
                receiver.buffer_pool().peak_allocated_segments()
            } else {
                0
            };
        Ok(Outcome {
            records_per_ms: n as f64 / (elapsed.as_secs_f64() * 1000.0),
            cpu_ns_per_record: cpu.as_nanos() as f64 / n as f64,
            bytes_per_s: (n * RECORD_WIRE_BYTES) as f64 / elapsed.as_secs_f64(),
            peak_network_bytes: peak_segments as u64 * u64::from(SEGMENT),
            configured_bytes: s.cfg.memory * if self.remote { 2 } else { 1 },
        })
    }

    /// Ends the partitions, waits for every thread and releases the partitions.
    fn finish(&mut self) -> Result<()> {
        let mut result = Ok(());
        // The reader first goes on to drain, so no writer blocks on a full channel while
        // it ends its partition.
        let reader = self.reader.take().map(|r| {
            drop(r.go);
            r.handle
        });
        for (tx, handle) in self.writers.drain(..) {
            drop(tx);
            let r = handle
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))?;
            result = result.and(r);
        }
        if let Some(handle) = reader {
            let r = handle
                .join()
                .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
            result = result.and(r);
        }
        result
    }

    fn release(mut self, s: &Setup) -> Result<()> {
        let r = self.finish();
        for id in &self.partitions {
            s.sender.release_partition(*id);
        }
        r
    }
}

/// Raw quinn over loopback: `streams` streams writing `total` bytes in 32 KiB chunks.
/// Returns bytes/s and CPU nanoseconds per byte.
fn raw_quinn(rt: &tokio::runtime::Runtime, total: u64, streams: u32) -> Result<(f64, f64)> {
    rt.block_on(async {
        let cfg = config(100, Duration::from_millis(100));
        let transport = Arc::new(rill_network::quic::transport_config(&cfg));
        let server_cfg =
            security::quic_server_config(rill_network::quic::DATA_ALPN, transport.clone())?;
        let client_cfg = security::quic_client_config(rill_network::quic::DATA_ALPN, transport)?;
        let server = security::quic_endpoint(Some(server_cfg), "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;
        let mut client = security::quic_endpoint(None, "127.0.0.1:0".parse()?)?;
        client.set_default_client_config(client_cfg);
        let per_stream = total / u64::from(streams);
        let sink = tokio::spawn(async move {
            let conn = server.accept().await.context("no connection")?.await?;
            let mut readers = Vec::new();
            for _ in 0..streams {
                let (_send, mut recv) = conn.accept_bi().await?;
                readers.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while let Some(c) = recv.read_chunk(usize::MAX, true).await? {
                        n += c.bytes.len() as u64;
                    }
                    drop(_send);
                    anyhow::Ok(n)
                }));
            }
            let mut n = 0;
            for r in readers {
                n += r.await??;
            }
            anyhow::Ok((n, conn))
        });
        let conn = client.connect(addr, security::SERVER_NAME)?.await?;
        let chunk = Bytes::from(vec![7u8; SEGMENT as usize]);
        let cpu_start = process_cpu();
        let start = Instant::now();
        let mut writers = Vec::new();
        for _ in 0..streams {
            let (mut send, _recv) = conn.open_bi().await?;
            let chunk = chunk.clone();
            writers.push(tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < per_stream {
                    let mut bufs = [chunk.clone()];
                    send.write_all_chunks(&mut bufs).await?;
                    sent += chunk.len() as u64;
                }
                send.finish()?;
                anyhow::Ok(())
            }));
        }
        for w in writers {
            w.await??;
        }
        let (n, _server_conn) = sink.await??;
        let elapsed = start.elapsed();
        let cpu = process_cpu().saturating_sub(cpu_start);
        Ok((
            n as f64 / elapsed.as_secs_f64(),
            cpu.as_nanos() as f64 / n as f64,
        ))
    })
}

fn main() -> Result<()> {
    let mut records: u64 = 5_000_000;
    let mut only_channels: Option<u32> = None;
    let mut only_mode: Option<bool> = None;
    let mut baseline = true;
    let mut rounds: usize = 5;
    let mut warmup: usize = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .context("--records needs a value")?
                    .replace('_', "")
                    .parse()?
            }
            "--channels" => only_channels = Some(args.next().context("--channels needs a value")?.parse()?),
            "--mode" => {
                only_mode = Some(match args.next().as_deref() {
                    Some("local") => false,
                    Some("remote") => true,
                    _ => bail!("--mode local|remote"),
                })
            }
            "--no-baseline" => baseline = false,
            "--warmup" => warmup = args.next().context("--warmup needs a value")?.parse()?,
            "--rounds" => {
                rounds = args.next().context("--rounds needs a value")?.parse()?;
                if rounds == 0 {
                    bail!("--rounds must be at least 1");
                }
            }
            "--bench" => {}
            other => bail!("unknown argument {other}; usage: network_throughput [--records N] [--channels 100|1000] [--mode local|remote] [--warmup N] [--rounds N] [--no-baseline]"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cases = [
        (
            "100 channels, 100 ms flush",
            Case {
                channels: 100,
                flush: Duration::from_millis(100),
            },
        ),
        (
            "1000 channels, 1 ms flush",
            Case {
                channels: 1000,
                flush: Duration::from_millis(1),
            },
        ),
    ];
    println!(
        "rill data plane: {WRITERS} writers, {records} records of 8 bytes, {} KiB buffers",
        SEGMENT / 1024
    );
    // Raw quinn over the same loopback, same transport configuration, same payload volume
    // (each record is 12 bytes on the wire: 4-byte length + 8-byte long). Only the remote
    // cases compare against it, each measured round right after a raw round, so that both
    // see the same machine; the ratio is of the medians.
    let raw_bytes = (records * 12).max(64 << 20);
    for (name, case) in &cases {
        if only_channels.is_some_and(|c| c != case.channels) {
            continue;
        }
        // The local run's CPU per record: what serializing, handing over and deserializing
        // cost without a network (used for the remote case's ceiling below).
        let mut local_cpu: Option<f64> = None;
        for remote in [false, true] {
            if only_mode.is_some_and(|m| m != remote) {
                continue;
            }
            // Set-up (timed on its own), the warm-up rounds, then the measured rounds.
            let s = setup(case, remote, &rt)?;
            let (mut h, setup_time) = Harness::start(&s, case, &rt)?;
            for _ in 0..warmup {
                h.round(&s, records)?;
            }
            let mut outcomes = Vec::new();
            let mut raws = Vec::new();
            for _ in 0..rounds {
                if remote && baseline {
                    raws.push(raw_quinn(&rt, raw_bytes, WRITERS)?);
                }
                outcomes.push(h.round(&s, records)?);
            }
            h.release(&s)?;
            let rate = median(outcomes.iter().map(|o| o.records_per_ms));
            let bytes = median(outcomes.iter().map(|o| o.bytes_per_s));
            let cpu = median(outcomes.iter().map(|o| o.cpu_ns_per_record));
            let (lo, hi) = outcomes.iter().fold((f64::MAX, 0f64), |(lo, hi), o| {
                (lo.min(o.records_per_ms), hi.max(o.records_per_ms))
            });
            let peak = outcomes
                .iter()
                .map(|o| o.peak_network_bytes)
                .max()
                .unwrap_or(0);
            let configured = outcomes[0].configured_bytes;
            let mode = if remote { "remote" } else { "local " };
            print!(
                "{name:<28} {mode}: {rate:>9.0} records/ms ({lo:.0}–{hi:.0}), {:>7.1} MB/s, {cpu:>4.0} ns CPU/record",
                bytes / 1e6,
            );
            if !raws.is_empty() {
                let raw = median(raws.iter().map(|r| r.0));
                let raw_cpu = median(raws.iter().map(|r| r.1 * 12.0));
                print!(
                    "; raw quinn {:.1} MB/s, {raw_cpu:.0} ns CPU per 12 bytes → {:.1}% of raw quinn",
                    raw / 1e6,
                    100.0 * bytes / raw
                );
                // With every core busy, rates follow CPU per record: even a data plane
                // adding nothing to quinn but the record work measured locally would reach
                // only raw / (raw + local) of raw quinn's rate.
                if let Some(local) = local_cpu {
                    print!(
                        " (CPU-bound ceiling raw/(raw+local) = {:.0}%)",
                        100.0 * raw_cpu / (raw_cpu + local)
                    );
                }
            }
            if !remote {
                local_cpu = Some(cpu);
            }
            println!(
                "; set-up of {} channels {:.0} ms; peak network memory {:.1} of {:.1} MiB configured{}",
                WRITERS * case.channels,
                setup_time.as_secs_f64() * 1000.0,
                peak as f64 / 1048576.0,
                configured as f64 / 1048576.0,
                if peak <= configured {
                    ""
                } else {
                    " (EXCEEDED)"
                }
            );
        }
    }
    println!("process peak RSS: {:.1} MiB", peak_rss_mib());
    Ok(())
}
