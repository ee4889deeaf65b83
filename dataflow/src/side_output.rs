//! Side outputs: records an operator emits next to its main output, under an
//! [`OutputTag`] (Flink's `OutputTag` / `getSideOutput`).
//!
//! An operator collects side-output records in a [`SideOutputs`] buffer and hands them
//! out when the chain asks ([`Operator::drain_side_outputs`]
//! (crate::operator::Operator::drain_side_outputs)), after every batch, watermark and
//! timer callback. The chain sends each tag's records to the output edges that consume
//! that tag ([`DataStream::side_output`](crate::environment::DataStream::side_output));
//! records of a tag nobody consumes are dropped, as in Flink. Side-output edges are
//! never chained, so a side output always leaves the task through an output edge.
//!
//! Users: the window operator's late records
//! ([`WindowedStream::side_output_late_data`](crate::window::WindowedStream::side_output_late_data))
//! and keyed process functions ([`ProcessContext::output`](crate::keyed::ProcessContext::output)).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;

/// Names a side output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputTag {
    /// The tag's id; side outputs with equal ids are the same output.
    pub id: String,
}

impl OutputTag {
    /// A tag with id `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

/// Side-output records of one operator, by tag, waiting for the chain to take them.
#[derive(Debug, Default)]
pub struct SideOutputs {
    by_tag: BTreeMap<String, Vec<StreamRecord>>,
}

impl SideOutputs {
    /// Adds `record` to the side output `tag`.
    pub fn push(&mut self, tag: &OutputTag, record: StreamRecord) {
        match self.by_tag.get_mut(&tag.id) {
            Some(v) => v.push(record),
            None => {
                self.by_tag.insert(tag.id.clone(), vec![record]);
            }
        }
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_tag.values().all(Vec::is_empty)
    }

    /// Hands every tag's records to `sink` (which drains them), tags in order.
    pub fn drain(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        for (tag, records) in &mut self.by_tag {
            if !records.is_empty() {
                sink(tag, records)?;
                records.clear();
            }
        }
        Ok(())
    }
}
