//! Record framing on the producer side: length-prefixed records that may span buffers.
//!
//! Each record is written as `len: u32 (little endian)` followed by `len` bytes. Both the
//! prefix and the body may be split across buffer boundaries, so buffers are always
//! filled completely and a record may be larger than many buffers. The
//! [`RecordDeserializer`](crate::deserializer::RecordDeserializer) reverses this.
//!
//! The serializer does not allocate: it copies into the current buffer of the target
//! subpartition, and asks its [`BufferSink`] for a fresh buffer when that one is full
//! (which may block: that wait is backpressure).

use crate::buffer_pool::Buffer;
use crate::error::NetworkError;

/// Bytes of the length prefix in front of every record.
pub const LENGTH_PREFIX: usize = 4;

/// Where the serializer gets empty buffers and puts full ones.
pub trait BufferSink {
    /// Returns an empty buffer, waiting if none is free.
    fn request(&mut self) -> Result<Buffer, NetworkError>;
    /// Takes a full (or flushed) buffer for sending.
    fn finish(&mut self, buffer: Buffer) -> Result<(), NetworkError>;
}

/// Writes one length-prefixed record into `current`, spanning into as many new buffers as
/// needed; a buffer that becomes full is handed to `sink.finish` at once.
#[inline]
pub fn serialize_record<S: BufferSink>(
    current: &mut Option<Buffer>,
    record: &[u8],
    sink: &mut S,
) -> Result<(), NetworkError> {
    let len = u32::try_from(record.len()).map_err(|_| NetworkError::RecordTooLarge {
        size: record.len(),
        limit: u32::MAX as usize,
    })?;
    let header = len.to_le_bytes();
    if let Some(buf) = current {
        if buf.remaining() > LENGTH_PREFIX + record.len() {
            // Fast path: fits with room to spare, no rotation needed.
            buf.append(&header);
            buf.append(record);
            return Ok(());
        }
    }
    copy_spanning(current, &header, sink)?;
    copy_spanning(current, record, sink)?;
    if current.as_ref().is_some_and(Buffer::is_full) {
        if let Some(full) = current.take() {
            sink.finish(full)?;
        }
    }
    Ok(())
}

fn copy_spanning<S: BufferSink>(
    current: &mut Option<Buffer>,
    mut data: &[u8],
    sink: &mut S,
) -> Result<(), NetworkError> {
    while !data.is_empty() {
        let buf = match current {
            Some(b) if !b.is_full() => b,
            _ => {
                if let Some(full) = current.take() {
                    sink.finish(full)?;
                }
                current.insert(sink.request()?)
            }
        };
        let n = buf.append(data);
        data = &data[n..];
    }
    Ok(())
}
