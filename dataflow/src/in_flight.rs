//! A task's side of unaligned checkpoints: collecting its in-flight data while the
//! barriers pass, storing it with the checkpoint, and replaying it on restore.
//!
//! When the [`BarrierHandler`](crate::barrier_handler) triggers an unaligned snapshot,
//! the task (see [`StreamTask`](crate::stream_task::StreamTask)):
//!
//! 1. snapshots its operators, then sends the barrier *ahead* of the data queued in its
//!    outputs, which hands back the bytes it overtook (the **output** part);
//! 2. starts an [`InFlightCollector`]: every input channel's bytes delivered but not yet
//!    handed to the task (a record begun in an earlier buffer, records read ahead) start
//!    that channel's **input** part, and every channel whose barrier is still to come is
//!    recorded — its data is processed as usual and copied — until its barrier arrives;
//! 3. starts the asynchronous part, which uploads the operators' state and then waits
//!    for the collector: when every channel delivered the barrier, the collector hands
//!    the data to it ([`InFlightCollector::complete`]); it writes one file per task
//!    ([`rill_state::in_flight`]) next to the state files and acknowledges, with the
//!    file's handle on the task's first operator. A checkpoint aborted meanwhile drops
//!    the collector (recordings stop) and the asynchronous part ends without an
//!    acknowledgement (the task declined already).
//!
//! A task restored from such a checkpoint ([`restore_in_flight`]) writes the output part
//! to its subpartitions before it emits anything and queues the input part before
//! anything its channels deliver: each channel's byte stream continues where the
//! checkpoint cut it, so every record crosses the cut exactly once. The data belongs to
//! one subtask of one job graph, so such a checkpoint restores at the same parallelism
//! only (Flink can rescale it; rill refuses with a clear error).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;

use rill_state::in_flight::{InFlightData, InFlightHandle};
use rill_state::snapshot::StateFileRef;
use rill_state::SnapshotTarget;

use crate::error::{DataflowError, Result};
use crate::state::TaskRestore;
use crate::task_io::TaskInput;

/// The in-flight data of one unaligned checkpoint, while its barriers pass the task.
pub(crate) struct InFlightCollector {
    id: u64,
    input: BTreeMap<usize, Vec<u8>>,
    output: Vec<(u32, u32, Vec<u8>)>,
    recording: BTreeSet<usize>,
    deliver: mpsc::Sender<InFlightData>,
}

impl InFlightCollector {
    /// Starts collecting for checkpoint `id`: `output` is what the barrier overtook;
    /// every channel's unconsumed bytes are taken now, and `record` are the channels to
    /// record until their barriers.
    pub(crate) fn start(
        id: u64,
        input: Option<&mut (dyn TaskInput + '_)>,
        record: &[usize],
        output: Vec<(u32, u32, Vec<u8>)>,
        deliver: mpsc::Sender<InFlightData>,
    ) -> Result<Self> {
        let mut collector = InFlightCollector {
            id,
            input: BTreeMap::new(),
            output,
            recording: BTreeSet::new(),
            deliver,
        };
        if let Some(input) = input {
            for channel in 0..input.num_channels() {
                let bytes = input.unconsumed(channel)?;
                if !bytes.is_empty() {
                    collector.input.insert(channel, bytes);
                }
            }
            for &channel in record {
                input.start_recording(channel)?;
                collector.recording.insert(channel);
            }
        }
        Ok(collector)
    }

    /// The checkpoint collected for.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The channels still recorded.
    pub(crate) fn recording(&self) -> Vec<usize> {
        self.recording.iter().copied().collect()
    }

    /// Appends `bytes` to `channel`'s input part (what follows everything recorded).
    pub(crate) fn add_input(&mut self, channel: usize, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.input.entry(channel).or_default().extend(bytes);
        }
    }

    /// `channel` delivered the barrier: its recording is part of the data.
    pub(crate) fn stop_recording(
        &mut self,
        input: &mut dyn TaskInput,
        channel: usize,
    ) -> Result<()> {
        if self.recording.remove(&channel) {
            let bytes = input.stop_recording(channel)?;
            if !bytes.is_empty() {
                self.input.entry(channel).or_default().extend(bytes);
            }
        }
        Ok(())
    }

    /// Every barrier arrived: hands the data to the checkpoint's asynchronous part.
    pub(crate) fn complete(mut self, input: Option<&mut (dyn TaskInput + '_)>) -> Result<()> {
        if let Some(input) = input {
            // Channels still recorded ended without a barrier: what they sent is data too.
            for channel in std::mem::take(&mut self.recording) {
                let bytes = input.stop_recording(channel)?;
                if !bytes.is_empty() {
                    self.input.entry(channel).or_default().extend(bytes);
                }
            }
        }
        let data = InFlightData {
            input: self.input.into_iter().map(|(c, b)| (c as u32, b)).collect(),
            output: self.output,
        };
        // The asynchronous part may have failed and ended already: then it declined.
        let _ = self.deliver.send(data);
        Ok(())
    }

    /// The checkpoint was aborted: stop recording, drop the data.
    pub(crate) fn discard(self, input: Option<&mut (dyn TaskInput + '_)>) -> Result<()> {
        if let Some(input) = input {
            for &channel in &self.recording {
                input.stop_recording(channel)?;
            }
        }
        Ok(())
    }
}

/// The file name of a task's in-flight data.
fn file_name(head_uid: &str, subtask: u32) -> String {
    format!("{head_uid}-{subtask}-in-flight")
}

/// Writes a task's in-flight data next to the checkpoint's state files; `None` if there
/// is none.
pub(crate) fn write_in_flight(
    target: &SnapshotTarget,
    head_uid: &str,
    subtask: u32,
    data: &InFlightData,
) -> Result<Option<InFlightHandle>> {
    if data.is_empty() {
        return Ok(None);
    }
    let bytes = data.encode()?;
    let name = file_name(head_uid, subtask);
    target
        .storage
        .write_file(&target.exclusive_dir.join(&name), &bytes)?;
    Ok(Some(InFlightHandle {
        file: StateFileRef {
            path: name,
            size: bytes.len() as u64,
            shared: false,
        },
        input_bytes: data.input_bytes(),
        output_bytes: data.output_bytes(),
    }))
}

/// The in-flight data a task restores, if the snapshot holds some for it: stored on the
/// task's first operator (`head_uid`), for subtask `subtask` of `parallelism`.
pub(crate) fn restore_in_flight(
    restore: &TaskRestore,
    head_uid: &str,
    subtask: u32,
    parallelism: u32,
) -> Result<Option<InFlightData>> {
    let Some(op) = restore.operators.iter().find(|o| o.uid == head_uid) else {
        return Ok(None);
    };
    if !op.subtasks.iter().any(|s| s.in_flight.is_some()) {
        return Ok(None);
    }
    if op.parallelism != parallelism {
        return Err(DataflowError::Unsupported(format!(
            "the snapshot in {} is an unaligned checkpoint with in-flight data for operator `{}` \
             at parallelism {}; it restores at that parallelism only (the job runs it at {parallelism}) — \
             rescale from a savepoint or an aligned checkpoint",
            restore.snapshot_dir.display(),
            op.uid,
            op.parallelism
        )));
    }
    let Some(handle) = op
        .subtasks
        .iter()
        .find(|s| s.subtask_index == subtask)
        .and_then(|s| s.in_flight.as_ref())
    else {
        return Ok(None);
    };
    let path = handle.file.resolve(&restore.snapshot_dir);
    let bytes = restore.storage.read_file(&path)?;
    let data = InFlightData::decode(Path::new(&path), &bytes)?;
    tracing::info!(
        input_bytes = data.input_bytes(),
        output_bytes = data.output_bytes(),
        "restoring in-flight data of an unaligned checkpoint"
    );
    Ok(Some(data))
}
