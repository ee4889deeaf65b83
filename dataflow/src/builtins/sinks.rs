//! The print, blackhole and collect sinks.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::collect::CollectSink;
use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{Operator, OperatorContext};
use crate::value::Value;

/// Configuration of `rill.sink.print`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrintConfig {
    /// Printed before each line (Flink's `print(sinkIdentifier)`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Print to stderr instead of stdout.
    #[serde(default)]
    pub stderr: bool,
}

/// Prints `Display` of each value, one per line, as Flink's `PrintSinkFunction`: with
/// parallelism > 1 each line starts with the 1-based subtask number, `"3> value"`.
pub(crate) struct PrintSink {
    prefix: String,
    stderr: bool,
    buf: Vec<u8>,
}

impl PrintSink {
    pub(crate) fn new(c: PrintConfig, ctx: &OperatorContext) -> Result<Self> {
        let prefix = match (c.prefix, ctx.parallelism > 1) {
            (Some(p), true) => format!("{p}:{}> ", ctx.subtask_index + 1),
            (Some(p), false) => format!("{p}> "),
            (None, true) => format!("{}> ", ctx.subtask_index + 1),
            (None, false) => String::new(),
        };
        Ok(Self {
            prefix,
            stderr: c.stderr,
            buf: Vec::new(),
        })
    }
}

impl Operator for PrintSink {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.buf.clear();
        for r in input.drain(..) {
            // Writing into a Vec cannot fail.
            let _ = writeln!(self.buf, "{}{}", self.prefix, r.value);
        }
        let res = if self.stderr {
            std::io::stderr().lock().write_all(&self.buf)
        } else {
            std::io::stdout().lock().write_all(&self.buf)
        };
        res.map_err(|e| DataflowError::io("printing records", e))
    }
}

/// Discards records, counting them.
pub(crate) struct BlackholeSink {
    count: u64,
}

impl BlackholeSink {
    pub(crate) fn new(_: (), _ctx: &OperatorContext) -> Result<Self> {
        Ok(Self { count: 0 })
    }
}

impl Operator for BlackholeSink {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.count += input.len() as u64;
        input.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        tracing::debug!(records = self.count, "blackhole sink closed");
        Ok(())
    }
}

/// Configuration of `rill.sink.collect`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectConfig {
    /// Names this sink's results for the client.
    pub id: String,
}

/// Hands values to the task environment's [`CollectSink`].
pub(crate) struct CollectSinkOperator {
    id: String,
    subtask: u32,
    hook: Arc<dyn CollectSink>,
}

impl CollectSinkOperator {
    pub(crate) fn new(c: CollectConfig, ctx: &OperatorContext) -> Result<Self> {
        let hook = ctx
            .collect
            .clone()
            .ok_or_else(|| DataflowError::NoCollectHook { id: c.id.clone() })?;
        Ok(Self {
            id: c.id,
            subtask: ctx.subtask_index,
            hook,
        })
    }
}

impl Operator for CollectSinkOperator {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        let values: Vec<Value> = input.drain(..).map(|r| r.value).collect();
        self.hook.collect(&self.id, self.subtask, values)
    }

    fn end_input(&mut self, _out: &mut Vec<StreamRecord>) -> Result<()> {
        self.hook.finish(&self.id, self.subtask)
    }
}
