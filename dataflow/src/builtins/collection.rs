//! The collection source: a fixed list of values carried in the job graph itself.
//!
//! Value `k` goes to subtask `k mod p`, so the subtasks split the list without overlap.
//! Meant for tests and small examples; the values travel inside the JobGraph.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::value::Value;

/// Configuration of `rill.source.collection`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// The values, in order.
    pub values: Vec<Value>,
}

pub(crate) struct CollectionSource {
    values: std::vec::IntoIter<Value>,
}

impl CollectionSource {
    pub(crate) fn new(c: CollectionConfig, ctx: &OperatorContext) -> Result<Self> {
        let (i, p) = (ctx.subtask_index as usize, ctx.parallelism.max(1) as usize);
        let mine: Vec<Value> = c.values.into_iter().skip(i).step_by(p).collect();
        Ok(Self {
            values: mine.into_iter(),
        })
    }
}

impl SourceOperator for CollectionSource {
    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, _now: Instant) -> Result<SourceStatus> {
        out.extend(self.values.by_ref().take(1024).map(StreamRecord::new));
        Ok(if self.values.len() == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }
}
