//! Runs a whole JobGraph inside this process: one thread per subtask, in-memory channels.
//!
//! For development, tests and fast local runs (Flink's local environment without the
//! cluster). The job is validated against the executor's registry first, so the same
//! submission errors appear as on a cluster. Wiring follows the JobGraph's channel
//! layout exactly (`input_channel_index`, `output_channels`), with one
//! [`local_queue`] per subtask and [`LocalOutput`]s honouring each edge's partitioning.
//!
//! Supervision: each task reports its outcome through a channel when it ends. The first
//! failure cancels every other task; the job's outcome is the first reported failure
//! that is not a closed channel (those are consequences of another task ending), else
//! `Canceled` if any task was canceled, else `Finished`. [`LocalJobHandle::cancel`]
//! cancels all tasks. Collect sinks deliver into a [`CollectBuffer`] returned in the
//! [`JobResult`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::collect::{CollectBuffer, CollectSink};
use crate::error::{DataflowError, Result};
use crate::ids::{JobId, VertexId};
use crate::job_graph::JobGraph;
use crate::local_channel::{local_queue, LocalInput, LocalOutput, LocalTarget};
use crate::mailbox::MailboxSender;
use crate::partitioning::ChannelSelector;
use crate::registry::OperatorRegistry;
use crate::stream_task::{StreamTask, TaskConfig, TaskEnvironment, TaskHandle, TaskOutcome};
use crate::task_io::{TaskInput, TaskOutput};
use crate::value::Value;

/// Settings of the local executor.
#[derive(Clone, Debug)]
pub struct LocalExecutorConfig {
    /// Capacity of each subtask's input queue, in messages (batches).
    pub queue_capacity: usize,
    /// Records per batch sent between tasks.
    pub batch_size: usize,
    /// Task settings.
    pub task: TaskConfig,
}

impl Default for LocalExecutorConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 32,
            batch_size: 1024,
            task: TaskConfig::default(),
        }
    }
}

/// Final state of a job.
#[derive(Debug)]
pub enum JobOutcome {
    /// Every task finished.
    Finished,
    /// The job was canceled.
    Canceled,
    /// A task failed (the first failure).
    Failed(DataflowError),
}

/// What a local job produced.
#[derive(Debug)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Values of collect sinks, by collect id (subtasks interleaved).
    pub collected: BTreeMap<String, Vec<Value>>,
    /// Wall time from start to the end of the last task.
    pub duration: Duration,
}

impl JobResult {
    /// Values collected under `id` (empty if none).
    pub fn collected(&self, id: &str) -> &[Value] {
        self.collected.get(id).map_or(&[], Vec::as_slice)
    }
}

/// Runs jobs in this process.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    registry: Arc<OperatorRegistry>,
    config: LocalExecutorConfig,
}

/// A job running on the local executor.
pub struct LocalJobHandle {
    job_id: JobId,
    tasks: Vec<(String, TaskHandle)>,
    mailboxes: Vec<MailboxSender>,
    done: Receiver<(usize, bool)>,
    collect: Arc<CollectBuffer>,
    started: Instant,
}

impl LocalExecutor {
    /// An executor instantiating operators from `registry`.
    pub fn new(registry: Arc<OperatorRegistry>) -> Self {
        Self::with_config(registry, LocalExecutorConfig::default())
    }

    /// An executor with explicit settings.
    pub fn with_config(registry: Arc<OperatorRegistry>, config: LocalExecutorConfig) -> Self {
        Self { registry, config }
    }

    /// Runs `job` to the end.
    pub fn execute(&self, job: &JobGraph) -> Result<JobResult> {
        Ok(self.start(job)?.wait())
    }

    /// Validates `job`, starts every subtask and returns without waiting.
    pub fn start(&self, job: &JobGraph) -> Result<LocalJobHandle> {
        job.validate(&self.registry)?;
        let job = Arc::new(job.clone());
        let collect = Arc::new(CollectBuffer::new());
        let env = TaskEnvironment {
            registry: self.registry.clone(),
            collect: Some(collect.clone() as Arc<dyn CollectSink>),
            config: self.config.task.clone(),
        };

        // One queue per (vertex, subtask).
        let mut queues = Vec::new();
        for v in &job.vertices {
            queues.push(
                (0..v.parallelism)
                    .map(|_| local_queue(self.config.queue_capacity))
                    .collect::<Vec<_>>(),
            );
        }

        let mut tasks = Vec::new();
        for v in &job.vertices {
            for i in 0..v.parallelism {
                let input: Option<Box<dyn TaskInput>> = if job.input_edges(v.id).next().is_some() {
                    let (tx, rx) = queues[v.id.0 as usize][i as usize].clone();
                    let n = job.num_input_channels(v.id, i)? as usize;
                    Some(Box::new(LocalInput::new(rx, tx, n)))
                } else {
                    None
                };
                let mut outputs: Vec<Box<dyn TaskOutput>> = Vec::new();
                for (edge_idx, e) in job.output_edges(v.id) {
                    let mut targets = Vec::new();
                    for j in job.output_channels(edge_idx, i)? {
                        let channel = job.input_channel_index(edge_idx, i, j).ok_or_else(|| {
                            DataflowError::InvalidGraph(format!(
                                "edge {edge_idx}: {i} -> {j} not connected"
                            ))
                        })?;
                        targets.push(LocalTarget::new(
                            queues[e.target.0 as usize][j as usize].0.clone(),
                            channel,
                        ));
                    }
                    let selector = ChannelSelector::new(&e.partitioning, targets.len() as u32, i);
                    outputs.push(Box::new(LocalOutput::new(
                        targets,
                        selector,
                        self.config.batch_size,
                    )));
                }
                tasks.push(StreamTask::new(
                    job.clone(),
                    VertexId(v.id.0),
                    i,
                    env.clone(),
                    input,
                    outputs,
                )?);
            }
        }
        // The executor keeps no queue ends: each queue now lives only in its tasks, so a
        // consumer that ends disconnects its producers.
        drop(queues);

        let (done_tx, done) = crossbeam_channel::unbounded();
        let mailboxes: Vec<MailboxSender> = tasks.iter().map(StreamTask::mailbox).collect();
        let mut handles = Vec::new();
        let started = Instant::now();
        for (idx, task) in tasks.into_iter().enumerate() {
            let name = task.name();
            let tx = done_tx.clone();
            let spawned = task.spawn(move |outcome| {
                // The receiver lives in the job handle; if it's gone nobody is waiting.
                let _ = tx.send((idx, matches!(outcome, TaskOutcome::Failed(_))));
            });
            match spawned {
                Ok(h) => handles.push((name, h)),
                Err(e) => {
                    for m in &mailboxes {
                        let _ = m.send(crate::mailbox::Mail::Cancel);
                    }
                    for (_, h) in handles {
                        h.join();
                    }
                    return Err(e);
                }
            }
        }
        tracing::info!(job_id = %job.job_id, tasks = handles.len(), "local job started");
        Ok(LocalJobHandle {
            job_id: job.job_id,
            tasks: handles,
            mailboxes,
            done,
            collect,
            started,
        })
    }
}

impl LocalJobHandle {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Asks every task to stop.
    pub fn cancel(&self) {
        for m in &self.mailboxes {
            // A closed mailbox means that task already ended.
            let _ = m.send(crate::mailbox::Mail::Cancel);
        }
    }

    /// Waits for every task; cancels the rest at the first failure.
    pub fn wait(self) -> JobResult {
        let mut remaining = self.tasks.len();
        let mut failed_order = Vec::new();
        while remaining > 0 {
            match self.done.recv() {
                Ok((idx, failed)) => {
                    remaining -= 1;
                    if failed {
                        if failed_order.is_empty() {
                            self.cancel();
                        }
                        failed_order.push(idx);
                    }
                }
                // Every task thread holds a sender until it ends; disconnection means all
                // have ended (some possibly by panic, which `join` reports).
                Err(_) => break,
            }
        }
        let mut failures = BTreeMap::new();
        let mut canceled = false;
        for (idx, (name, h)) in self.tasks.into_iter().enumerate() {
            match h.join() {
                TaskOutcome::Finished(_) => {}
                TaskOutcome::Canceled => canceled = true,
                TaskOutcome::Failed(e) => {
                    tracing::warn!(task = %name, error = %e, "task failed");
                    failures.insert(idx, e);
                }
            }
        }
        // Report the root cause: the first reported failure that is not a closed
        // channel. A task failing drops its input queue, so its producers may fail with
        // `ChannelClosed` (and report it) before the failing task reports its own error.
        let root = failed_order
            .iter()
            .find(|i| !matches!(failures.get(i), Some(DataflowError::ChannelClosed(_))))
            .or(failed_order.first())
            .copied();
        let failure = root
            .and_then(|i| failures.remove(&i))
            .or_else(|| failures.into_values().next());
        let outcome = match (failure, canceled) {
            (Some(e), _) => JobOutcome::Failed(e),
            (None, true) => JobOutcome::Canceled,
            (None, false) => JobOutcome::Finished,
        };
        JobResult {
            job_id: self.job_id,
            outcome,
            collected: self.collect.take(),
            duration: self.started.elapsed(),
        }
    }
}
