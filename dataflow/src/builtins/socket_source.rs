//! The socket source: text lines from a TCP server (Flink's `socketTextStream`).
//!
//! Only subtask 0 connects (a socket is one ordered stream and can't be split); other
//! subtasks finish at once. The connection is made when the source is built, so an
//! unreachable server fails the task at start. Reads use a short timeout and report
//! `Idle` when nothing arrived, which keeps the task's mailbox (cancellation) responsive.
//! A partial line survives timeouts; the source finishes when the server closes the
//! connection, after emitting any unterminated last line.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::value::Value;

/// How long one read waits before the source reports `Idle`.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Configuration of `rill.source.socket`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SocketConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
}

pub(crate) struct SocketSource {
    reader: Option<BufReader<TcpStream>>,
    line: Vec<u8>,
    address: String,
}

impl SocketSource {
    pub(crate) fn new(c: SocketConfig, ctx: &OperatorContext) -> Result<Self> {
        let address = format!("{}:{}", c.host, c.port);
        if ctx.subtask_index != 0 {
            return Ok(Self {
                reader: None,
                line: Vec::new(),
                address,
            });
        }
        let stream = TcpStream::connect(&address)
            .map_err(|e| DataflowError::io(format!("connecting to {address}"), e))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| DataflowError::io(format!("configuring socket to {address}"), e))?;
        Ok(Self {
            reader: Some(BufReader::new(stream)),
            line: Vec::new(),
            address,
        })
    }
}

fn emit_line(line: &mut Vec<u8>, out: &mut Vec<StreamRecord>) {
    let mut bytes = &line[..];
    if let Some(b) = bytes.strip_suffix(b"\n") {
        bytes = b.strip_suffix(b"\r").unwrap_or(b);
    }
    out.push(StreamRecord::new(Value::Str(
        String::from_utf8_lossy(bytes).into_owned(),
    )));
    line.clear();
}

impl SourceOperator for SocketSource {
    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, _now: Instant) -> Result<SourceStatus> {
        let Some(reader) = &mut self.reader else {
            return Ok(SourceStatus::Finished);
        };
        for _ in 0..1024 {
            // `read_until` keeps bytes read before a timeout in `line`, so a line split
            // across reads is reassembled on the next poll.
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    if !self.line.is_empty() {
                        emit_line(&mut self.line, out);
                    }
                    self.reader = None;
                    return Ok(if out.is_empty() {
                        SourceStatus::Finished
                    } else {
                        SourceStatus::More
                    });
                }
                Ok(_) if self.line.ends_with(b"\n") => emit_line(&mut self.line, out),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(if out.is_empty() {
                        SourceStatus::Idle(Duration::ZERO)
                    } else {
                        SourceStatus::More
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(DataflowError::io(
                        format!("reading from {}", self.address),
                        e,
                    ));
                }
            }
        }
        Ok(SourceStatus::More)
    }
}
