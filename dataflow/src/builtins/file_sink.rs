//! The file sink: one line (`Display` of the value) per record.
//!
//! Two layouts: `File` writes exactly `path` and requires parallelism 1; `Directory`
//! creates `path` and writes `path/part-N` for subtask `N`, so parallel subtasks never
//! share a file. Files are truncated on open and flushed on close; they are not
//! transactional (exactly-once file sinks come with checkpoints, DESIGN §6).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{Operator, OperatorContext};

/// Where a file sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileLayout {
    /// Exactly the file `path` (parallelism 1).
    File,
    /// `path/part-N` per subtask.
    Directory,
}

/// Configuration of `rill.sink.file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSinkConfig {
    /// File or directory path.
    pub path: String,
    /// How `path` is used.
    pub layout: FileLayout,
}

pub(crate) struct FileSink {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl FileSink {
    pub(crate) fn new(c: FileSinkConfig, ctx: &OperatorContext) -> Result<Self> {
        let path = match c.layout {
            FileLayout::File if ctx.parallelism != 1 => {
                return Err(DataflowError::InvalidConfig {
                    factory: super::FILE_SINK.into(),
                    reason: format!(
                        "a single-file sink needs parallelism 1 (has {}); use a directory layout",
                        ctx.parallelism
                    ),
                })
            }
            FileLayout::File => PathBuf::from(&c.path),
            FileLayout::Directory => {
                let dir = PathBuf::from(&c.path);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| DataflowError::io(format!("creating {}", dir.display()), e))?;
                dir.join(format!("part-{}", ctx.subtask_index))
            }
        };
        let file = File::create(&path)
            .map_err(|e| DataflowError::io(format!("creating {}", path.display()), e))?;
        Ok(Self {
            writer: BufWriter::with_capacity(64 * 1024, file),
            path,
        })
    }
}

impl Operator for FileSink {
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        for r in input.drain(..) {
            writeln!(self.writer, "{}", r.value)
                .map_err(|e| DataflowError::io(format!("writing {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| DataflowError::io(format!("flushing {}", self.path.display()), e))
    }
}
