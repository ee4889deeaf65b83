//! Reading and writing the state file format and `_metadata` documented in
//! [`crate::snapshot`].
//!
//! # Writers
//!
//! [`KeyedFileWriter`] and [`OperatorFileWriter`] build a whole file in memory (snapshot
//! files are written once, by the asynchronous part of a snapshot, and uploaded with one
//! [`CheckpointStorage::write_file`]). Both share the framing of [`FileBuilder`]: the
//! header, then blocks each framed as `length | bytes | CRC32`, then the MessagePack
//! index of the blocks and the fixed-size footer. A block is opened lazily by the first
//! entry of its (key group, state) and closed by the first entry of the next one, so the
//! writer never buffers more than the file itself.
//!
//! # Reader
//!
//! [`StateFileReader::parse`] validates everything that can be validated without
//! decoding entries: magic, version, header CRC, footer, index CRC and the block layout.
//! The blocks must tile the region between the header and the index exactly (no gaps, no
//! overlaps, each length prefix equal to the index's length), so every byte of a valid
//! file is covered by a CRC or a structural check: a flipped byte is always an error,
//! never silently different data. Block contents are CRC-checked when read
//! ([`StateFileReader::entries`]), so a restoring subtask pays only for the key groups it
//! owns.
//!
//! The reader never panics and never allocates according to a length read from the file
//! before checking it against the file's size; every failure is a
//! [`StateError::Corrupt`] naming the file and the byte offset where decoding stopped,
//! except a newer format version, which is [`StateError::UnsupportedVersion`].
//!
//! # `_metadata`
//!
//! ```text
//! "RILLMETA" (8 bytes) | format version u32 LE | length u32 LE | MessagePack CheckpointMetadata | CRC32 of the MessagePack u32 LE
//! ```
//!
//! [`write_metadata`] writes it with [`CheckpointStorage::write_atomic`], which is what
//! makes a checkpoint exist; [`read_metadata`] accepts the snapshot directory or the
//! `_metadata` file itself.
//!
//! # Values
//!
//! [`encode`] / [`decode`] are the one MessagePack codec for typed values (struct fields
//! by name, so a dump shows field names), used by the backends and operator state.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StateError};
use crate::key_group::KeyGroupRange;
use crate::snapshot::{
    BlockIndex, CheckpointMetadata, FileHeader, FileKind, RawEntry, FORMAT_VERSION, METADATA_FILE,
};
use crate::storage::CheckpointStorage;

/// Magic bytes at the start of every state file.
pub const FILE_MAGIC: &[u8; 8] = b"RILLSTAT";
/// Magic bytes at the end of every state file.
pub const FILE_END_MAGIC: &[u8; 8] = b"RILLEND.";
/// Magic bytes at the start of `_metadata`.
pub const METADATA_MAGIC: &[u8; 8] = b"RILLMETA";

/// Bytes before the header: magic, version, header length.
const PREAMBLE_LEN: usize = 16;
/// Bytes of the footer: index length, index CRC, end magic.
const FOOTER_LEN: usize = 16;
/// Framing around a block's bytes: length prefix and CRC.
const BLOCK_FRAMING: usize = 8;

/// Encodes a value of state `name` as MessagePack (struct fields by name).
pub fn encode<T: Serialize + ?Sized>(name: &str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| StateError::Serialize {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Appends the MessagePack encoding of a value of state `name` to `buf` (for hot paths
/// that reuse a buffer). On error `buf` may hold a partial encoding.
pub fn encode_into<T: Serialize + ?Sized>(name: &str, value: &T, buf: &mut Vec<u8>) -> Result<()> {
    rmp_serde::encode::write_named(buf, value).map_err(|e| StateError::Serialize {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a MessagePack value of state `name`.
pub fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StateError::Deserialize {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// The framing shared by keyed and operator files: header, CRC-framed blocks, index,
/// footer.
#[derive(Debug)]
struct FileBuilder {
    buf: Vec<u8>,
    blocks: Vec<BlockIndex>,
    /// The open block: its index entry (offset set, `len` not yet).
    open: Option<BlockIndex>,
}

impl FileBuilder {
    fn new(header: &FileHeader) -> Self {
        // A FileHeader holds only strings, integers and enums: encoding cannot fail.
        let header_bytes = rmp_serde::to_vec_named(header).unwrap_or_default();
        let mut buf = Vec::with_capacity(PREAMBLE_LEN + header_bytes.len() + 4 + 4096);
        buf.extend_from_slice(FILE_MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header_bytes);
        buf.extend_from_slice(&crc32fast::hash(&header_bytes).to_le_bytes());
        Self {
            buf,
            blocks: Vec::new(),
            open: None,
        }
    }

    fn open_block(&mut self, key_group: u32, state: u32) {
        self.close_block();
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&[0; 4]);
        self.open = Some(BlockIndex {
            key_group,
            state,
            offset,
            len: 0,
            entries: 0,
        });
    }

    /// Bytes in the open block so far.
    fn open_len(&self) -> usize {
        self.open
            .map(|b| self.buf.len() - b.offset as usize - 4)
            .unwrap_or(0)
    }

    fn close_block(&mut self) {
        if let Some(mut block) = self.open.take() {
            let start = block.offset as usize + 4;
            // Callers keep blocks below u32::MAX bytes (checked before each append).
            let len = (self.buf.len() - start) as u32;
            block.len = len;
            self.buf[start - 4..start].copy_from_slice(&len.to_le_bytes());
            let crc = crc32fast::hash(&self.buf[start..]);
            self.buf.extend_from_slice(&crc.to_le_bytes());
            self.blocks.push(block);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_block();
        // Vec<BlockIndex> of plain integers: encoding cannot fail.
        let index = rmp_serde::to_vec_named(&self.blocks).unwrap_or_default();
        self.buf.extend_from_slice(&index);
        self.buf
            .extend_from_slice(&(index.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        self.buf.extend_from_slice(FILE_END_MAGIC);
        self.buf
    }
}

fn state_name(header: &FileHeader, state: u32) -> String {
    header
        .states
        .get(state as usize)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| format!("#{state}"))
}

fn too_large(header: &FileHeader, state: u32) -> StateError {
    StateError::Serialize {
        name: state_name(header, state),
        reason: "a state file block would exceed 4 GiB".into(),
    }
}

/// Writes a keyed state file ([`FileKind::KeyedFull`] or [`FileKind::KeyedDelta`]) in
/// memory.
#[derive(Debug)]
pub struct KeyedFileWriter {
    header: FileHeader,
    file: FileBuilder,
}

impl KeyedFileWriter {
    /// A writer for a file with this header.
    pub fn new(header: FileHeader) -> Self {
        let file = FileBuilder::new(&header);
        Self { header, file }
    }

    /// The header being written.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Appends one entry (already MessagePack-encoded key, namespace and value; `None` is
    /// a tombstone). Entries must arrive in ascending key group, then state order;
    /// within one (key group, state) any order is kept as is.
    ///
    /// Errors: a key group outside the header's range
    /// ([`StateError::KeyGroupOutOfRange`]), an unknown state index, an entry out of
    /// order or a block above 4 GiB ([`StateError::Serialize`]).
    pub fn push(
        &mut self,
        state: u32,
        key_group: u32,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
        value: Option<&[u8]>,
    ) -> Result<()> {
        if !self.header.key_group_range.contains(key_group) {
            return Err(StateError::KeyGroupOutOfRange {
                key_group,
                range: self.header.key_group_range,
            });
        }
        if state as usize >= self.header.states.len() {
            return Err(StateError::Serialize {
                name: format!("#{state}"),
                reason: format!(
                    "state index {state} is not in the file header ({} states)",
                    self.header.states.len()
                ),
            });
        }
        match self.file.open {
            Some(open) if (open.key_group, open.state) == (key_group, state) => {}
            Some(open) if (open.key_group, open.state) > (key_group, state) => {
                return Err(StateError::Serialize {
                    name: state_name(&self.header, state),
                    reason: format!(
                        "entry for key group {key_group}, state {state} after key group {}, state {}: \
                         entries must arrive in ascending key group, then state order",
                        open.key_group, open.state
                    ),
                });
            }
            _ => self.file.open_block(key_group, state),
        }
        let entry_len = 1 + 3 * 5 + 9 + key.len() + namespace.len() + value.map_or(1, |v| v.len());
        if self.file.open_len() + entry_len > u32::MAX as usize - 16 {
            return Err(too_large(&self.header, state));
        }
        let buf = &mut self.file.buf;
        // Writing into a Vec cannot fail.
        let _ = rmp::encode::write_array_len(buf, 4);
        let _ = rmp::encode::write_bin(buf, key);
        let _ = rmp::encode::write_bin(buf, namespace);
        let _ = rmp::encode::write_sint(buf, timestamp);
        match value {
            Some(v) => {
                let _ = rmp::encode::write_bin(buf, v);
            }
            None => {
                let _ = rmp::encode::write_nil(buf);
            }
        }
        if let Some(open) = self.file.open.as_mut() {
            open.entries += 1;
        }
        Ok(())
    }

    /// Bytes written so far (a lower bound of the final size).
    pub fn len(&self) -> usize {
        self.file.buf.len()
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.file.blocks.is_empty() && self.file.open.is_none()
    }

    /// The complete file.
    pub fn finish(self) -> Vec<u8> {
        self.file.finish()
    }
}

/// Writes an operator state file ([`FileKind::Operator`]) in memory: one block per
/// state, a MessagePack list of the encoded elements.
#[derive(Debug)]
pub struct OperatorFileWriter {
    header: FileHeader,
    file: FileBuilder,
    last_state: Option<u32>,
}

impl OperatorFileWriter {
    /// A writer for a file with this header (whose `kind` should be
    /// [`FileKind::Operator`]).
    pub fn new(header: FileHeader) -> Self {
        let file = FileBuilder::new(&header);
        Self {
            header,
            file,
            last_state: None,
        }
    }

    /// Appends the block of state `state` (index into the header's states) holding
    /// `elements`, each an encoded element. States must come in ascending order, each
    /// once.
    pub fn push_state<'a>(
        &mut self,
        state: u32,
        elements: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        if state as usize >= self.header.states.len() {
            return Err(StateError::Serialize {
                name: format!("#{state}"),
                reason: format!(
                    "state index {state} is not in the file header ({} states)",
                    self.header.states.len()
                ),
            });
        }
        if self.last_state.is_some_and(|last| last >= state) {
            return Err(StateError::Serialize {
                name: state_name(&self.header, state),
                reason: "operator states must be written once each, in ascending order".into(),
            });
        }
        self.last_state = Some(state);
        let elements: Vec<&[u8]> = elements.into_iter().collect();
        let total: usize = elements.iter().map(|e| e.len() + 5).sum::<usize>() + 5;
        if total > u32::MAX as usize - 16 || elements.len() > u32::MAX as usize {
            return Err(too_large(&self.header, state));
        }
        self.file.open_block(0, state);
        let buf = &mut self.file.buf;
        let _ = rmp::encode::write_array_len(buf, elements.len() as u32);
        for e in &elements {
            let _ = rmp::encode::write_bin(buf, e);
        }
        if let Some(open) = self.file.open.as_mut() {
            open.entries = elements.len() as u64;
        }
        self.file.close_block();
        Ok(())
    }

    /// The complete file.
    pub fn finish(self) -> Vec<u8> {
        self.file.finish()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A parsed, validated state file (keyed or operator) held in memory.
#[derive(Debug)]
pub struct StateFileReader {
    path: PathBuf,
    bytes: Vec<u8>,
    header: FileHeader,
    blocks: Vec<BlockIndex>,
}

impl StateFileReader {
    /// Reads and parses `path` from `storage`.
    pub fn open(storage: &dyn CheckpointStorage, path: &Path) -> Result<Self> {
        let bytes = storage.read_file(path)?;
        Self::parse(path, bytes)
    }

    /// Validates the framing of a file's `bytes` (read from `path`, which errors name):
    /// magic, version, header and index CRCs, footer, block layout. Block contents are
    /// checked when read.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let corrupt =
            |offset: usize, reason: String| StateError::corrupt(path, offset as u64, reason);
        let len = bytes.len();
        if len < PREAMBLE_LEN {
            return Err(corrupt(
                len,
                format!("file is {len} bytes, shorter than the {PREAMBLE_LEN}-byte preamble"),
            ));
        }
        if &bytes[..8] != FILE_MAGIC {
            return Err(corrupt(0, "not a rill state file (bad magic)".into()));
        }
        let version = read_u32(&bytes, 8).unwrap_or(0);
        if version > FORMAT_VERSION {
            return Err(StateError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(corrupt(8, "format version 0 is invalid".into()));
        }
        let header_len = read_u32(&bytes, 12).unwrap_or(0) as usize;
        let header_end = PREAMBLE_LEN + header_len;
        if header_end + 4 + FOOTER_LEN > len {
            return Err(corrupt(
                12,
                format!("header length {header_len} runs past the end of the {len}-byte file"),
            ));
        }
        let header_bytes = &bytes[PREAMBLE_LEN..header_end];
        let crc = read_u32(&bytes, header_end).unwrap_or(0);
        if crc32fast::hash(header_bytes) != crc {
            return Err(corrupt(header_end, "header CRC mismatch".into()));
        }
        let header: FileHeader = rmp_serde::from_slice(header_bytes)
            .map_err(|e| corrupt(PREAMBLE_LEN, format!("cannot decode header: {e}")))?;
        let blocks_start = header_end + 4;

        let footer = len - FOOTER_LEN;
        if &bytes[footer + 8..] != FILE_END_MAGIC {
            return Err(corrupt(
                footer + 8,
                "missing end marker (file truncated?)".into(),
            ));
        }
        let index_len = read_u32(&bytes, footer).unwrap_or(0) as usize;
        let index_crc = read_u32(&bytes, footer + 4).unwrap_or(0);
        if index_len > footer - blocks_start {
            return Err(corrupt(
                footer,
                format!("index length {index_len} does not fit in the file"),
            ));
        }
        let index_start = footer - index_len;
        let index_bytes = &bytes[index_start..footer];
        if crc32fast::hash(index_bytes) != index_crc {
            return Err(corrupt(index_start, "block index CRC mismatch".into()));
        }
        let blocks: Vec<BlockIndex> = rmp_serde::from_slice(index_bytes)
            .map_err(|e| corrupt(index_start, format!("cannot decode block index: {e}")))?;

        let keyed = header.kind != FileKind::Operator;
        let mut expected = blocks_start;
        let mut previous: Option<(u32, u32)> = None;
        for (i, b) in blocks.iter().enumerate() {
            let offset = usize::try_from(b.offset).unwrap_or(usize::MAX);
            if offset != expected {
                return Err(corrupt(
                    index_start,
                    format!("block {i} starts at {offset}, expected {expected}"),
                ));
            }
            let end = offset
                .checked_add(BLOCK_FRAMING)
                .and_then(|o| o.checked_add(b.len as usize));
            match end {
                Some(end) if end <= index_start => expected = end,
                _ => {
                    return Err(corrupt(
                        offset,
                        format!("block {i} of {} bytes runs past the block region", b.len),
                    ))
                }
            }
            if read_u32(&bytes, offset) != Some(b.len) {
                return Err(corrupt(
                    offset,
                    format!("block {i} length prefix disagrees with the index"),
                ));
            }
            if b.state as usize >= header.states.len() {
                return Err(corrupt(
                    index_start,
                    format!(
                        "block {i} refers to state {} of {}",
                        b.state,
                        header.states.len()
                    ),
                ));
            }
            if keyed && !header.key_group_range.contains(b.key_group) {
                return Err(corrupt(
                    index_start,
                    format!(
                        "block {i} has key group {} outside the file's range {}",
                        b.key_group, header.key_group_range
                    ),
                ));
            }
            let order = if keyed {
                (b.key_group, b.state)
            } else {
                (0, b.state)
            };
            if previous.is_some_and(|p| p >= order) {
                return Err(corrupt(index_start, format!("block {i} is out of order")));
            }
            previous = Some(order);
        }
        if expected != index_start {
            return Err(corrupt(
                expected,
                format!(
                    "{} unindexed bytes between the last block and the index",
                    index_start - expected
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            header,
            blocks,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// The file's blocks, in file order.
    pub fn blocks(&self) -> &[BlockIndex] {
        &self.blocks
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn corrupt(&self, offset: usize, reason: impl Into<String>) -> StateError {
        StateError::corrupt(&self.path, offset as u64, reason)
    }

    /// The CRC-checked bytes of `block` (which must be one of [`Self::blocks`]) and the
    /// file offset where they start.
    fn block_bytes(&self, block: &BlockIndex) -> Result<(&[u8], usize)> {
        if !self.blocks.contains(block) {
            return Err(self.corrupt(0, "block is not in this file's index"));
        }
        // Bounds were checked by `parse` for every indexed block.
        let start = block.offset as usize + 4;
        let end = start + block.len as usize;
        let data = &self.bytes[start..end];
        let crc = read_u32(&self.bytes, end).unwrap_or(0);
        if crc32fast::hash(data) != crc {
            return Err(self.corrupt(
                block.offset as usize,
                format!(
                    "CRC mismatch in block of key group {}, state {}",
                    block.key_group, block.state
                ),
            ));
        }
        Ok((data, start))
    }

    /// The entries of one block of a keyed file, CRC-checked.
    pub fn entries(&self, block: &BlockIndex) -> Result<Vec<RawEntry>> {
        if self.header.kind == FileKind::Operator {
            return Err(self.corrupt(0, "an operator state file has no keyed entries"));
        }
        let (data, base) = self.block_bytes(block)?;
        let mut cur = Cursor { data, pos: 0 };
        // Each entry takes at least 5 bytes: never trust the count for the allocation.
        let mut out = Vec::with_capacity((block.entries as usize).min(data.len() / 5));
        let at = |cur: &Cursor<'_>| base + cur.pos;
        while cur.pos < data.len() {
            let entry_at = at(&cur);
            let fail = |what: &str, off: usize| self.corrupt(off, format!("bad entry: {what}"));
            match cur.array_len() {
                Some(4) => {}
                _ => return Err(fail("expected a 4-element entry", entry_at)),
            }
            let key = cur.bin().ok_or_else(|| fail("bad key", at(&cur)))?.to_vec();
            let namespace = cur
                .bin()
                .ok_or_else(|| fail("bad namespace", at(&cur)))?
                .to_vec();
            let timestamp = cur.int().ok_or_else(|| fail("bad timestamp", at(&cur)))?;
            let value = if cur.peek() == Some(0xc0) {
                cur.pos += 1;
                None
            } else {
                Some(
                    cur.bin()
                        .ok_or_else(|| fail("bad value", at(&cur)))?
                        .to_vec(),
                )
            };
            out.push(RawEntry {
                state: block.state,
                key_group: block.key_group,
                key,
                namespace,
                timestamp,
                value,
            });
        }
        if out.len() as u64 != block.entries {
            return Err(self.corrupt(
                block.offset as usize,
                format!(
                    "block holds {} entries, the index says {}",
                    out.len(),
                    block.entries
                ),
            ));
        }
        Ok(out)
    }

    /// Every entry of the key groups in `range`, in file order.
    pub fn entries_in(&self, range: KeyGroupRange) -> Result<Vec<RawEntry>> {
        let mut out = Vec::new();
        for b in self.blocks.iter().filter(|b| range.contains(b.key_group)) {
            out.extend(self.entries(b)?);
        }
        Ok(out)
    }

    /// The encoded elements of one block of an operator file, CRC-checked.
    pub fn elements(&self, block: &BlockIndex) -> Result<Vec<Vec<u8>>> {
        if self.header.kind != FileKind::Operator {
            return Err(self.corrupt(0, "a keyed state file has no operator elements"));
        }
        let (data, base) = self.block_bytes(block)?;
        let mut cur = Cursor { data, pos: 0 };
        let n = cur
            .array_len()
            .ok_or_else(|| self.corrupt(base, "bad element list"))? as usize;
        let mut out = Vec::with_capacity(n.min(data.len()));
        for _ in 0..n {
            let at = base + cur.pos;
            out.push(
                cur.bin()
                    .ok_or_else(|| self.corrupt(at, "bad element"))?
                    .to_vec(),
            );
        }
        if cur.pos != data.len() || out.len() as u64 != block.entries {
            return Err(self.corrupt(
                base + cur.pos,
                format!(
                    "block holds {} elements in {} of {} bytes, the index says {}",
                    out.len(),
                    cur.pos,
                    data.len(),
                    block.entries
                ),
            ));
        }
        Ok(out)
    }

    /// The elements of every state of an operator file: `(state index, elements)`.
    pub fn operator_states(&self) -> Result<Vec<(u32, Vec<Vec<u8>>)>> {
        self.blocks
            .iter()
            .map(|b| Ok((b.state, self.elements(b)?)))
            .collect()
    }
}

/// A bounds-checked MessagePack reader over a block (the subset the writers produce).
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn uint_be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn array_len(&mut self) -> Option<u32> {
        let m = self.peek()?;
        self.pos += 1;
        match m {
            0x90..=0x9f => Some(u32::from(m & 0x0f)),
            0xdc => self.uint_be(2).map(|v| v as u32),
            0xdd => self.uint_be(4).map(|v| v as u32),
            _ => None,
        }
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let m = self.peek()?;
        self.pos += 1;
        let n = match m {
            0xc4 => self.uint_be(1)?,
            0xc5 => self.uint_be(2)?,
            0xc6 => self.uint_be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    fn int(&mut self) -> Option<i64> {
        let m = self.peek()?;
        self.pos += 1;
        match m {
            0x00..=0x7f => Some(i64::from(m)),
            0xe0..=0xff => Some(i64::from(m as i8)),
            0xcc => self.uint_be(1).map(|v| v as i64),
            0xcd => self.uint_be(2).map(|v| v as i64),
            0xce => self.uint_be(4).map(|v| v as i64),
            0xcf => self.uint_be(8).and_then(|v| i64::try_from(v).ok()),
            0xd0 => self.uint_be(1).map(|v| i64::from(v as u8 as i8)),
            0xd1 => self.uint_be(2).map(|v| i64::from(v as u16 as i16)),
            0xd2 => self.uint_be(4).map(|v| i64::from(v as u32 as i32)),
            0xd3 => self.uint_be(8).map(|v| v as i64),
            _ => None,
        }
    }
}

/// The `_metadata` file of a snapshot directory, or `path` itself when it names one.
fn metadata_location(path: &Path) -> (PathBuf, PathBuf) {
    if path.file_name().is_some_and(|n| n == METADATA_FILE) {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (dir, path.to_path_buf())
    } else {
        (path.to_path_buf(), path.join(METADATA_FILE))
    }
}

/// Reads the `_metadata` of a snapshot: `dir_or_file` is the snapshot directory or its
/// `_metadata` file. Returns the snapshot directory (which handles' paths are relative
/// to) and the metadata.
///
/// Errors: no `_metadata` ([`StateError::NotACheckpoint`]), a corrupt one
/// ([`StateError::Corrupt`]), a newer version ([`StateError::UnsupportedVersion`]).
pub fn read_metadata(
    storage: &dyn CheckpointStorage,
    dir_or_file: &Path,
) -> Result<(PathBuf, CheckpointMetadata)> {
    let (dir, file) = metadata_location(dir_or_file);
    if !storage.exists(&file)? {
        return Err(StateError::NotACheckpoint {
            path: dir_or_file.to_path_buf(),
        });
    }
    let bytes = storage.read_file(&file)?;
    let meta = parse_metadata(&file, &bytes)?;
    Ok((dir, meta))
}

/// Decodes the bytes of a `_metadata` file (`path` is for errors).
pub fn parse_metadata(path: &Path, bytes: &[u8]) -> Result<CheckpointMetadata> {
    let corrupt = |offset: usize, reason: String| StateError::corrupt(path, offset as u64, reason);
    if bytes.len() < PREAMBLE_LEN {
        return Err(corrupt(
            bytes.len(),
            format!("_metadata is {} bytes, too short", bytes.len()),
        ));
    }
    if &bytes[..8] != METADATA_MAGIC {
        return Err(corrupt(0, "not a rill _metadata file (bad magic)".into()));
    }
    let version = read_u32(bytes, 8).unwrap_or(0);
    if version > FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt(8, "format version 0 is invalid".into()));
    }
    let len = read_u32(bytes, 12).unwrap_or(0) as usize;
    if PREAMBLE_LEN + len + 4 != bytes.len() {
        return Err(corrupt(
            12,
            format!("length {len} does not match the {}-byte file", bytes.len()),
        ));
    }
    let body = &bytes[PREAMBLE_LEN..PREAMBLE_LEN + len];
    if read_u32(bytes, PREAMBLE_LEN + len) != Some(crc32fast::hash(body)) {
        return Err(corrupt(PREAMBLE_LEN + len, "_metadata CRC mismatch".into()));
    }
    let meta: CheckpointMetadata = rmp_serde::from_slice(body)
        .map_err(|e| corrupt(PREAMBLE_LEN, format!("cannot decode _metadata: {e}")))?;
    if meta.format_version > FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: meta.format_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(meta)
}

/// The bytes of a `_metadata` file.
pub fn metadata_bytes(meta: &CheckpointMetadata) -> Result<Vec<u8>> {
    let body = encode(METADATA_FILE, meta)?;
    let len = u32::try_from(body.len()).map_err(|_| StateError::Serialize {
        name: METADATA_FILE.into(),
        reason: "_metadata would exceed 4 GiB".into(),
    })?;
    let mut out = Vec::with_capacity(body.len() + PREAMBLE_LEN + 4);
    out.extend_from_slice(METADATA_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    Ok(out)
}

/// Writes `dir/_metadata` atomically ([`CheckpointStorage::write_atomic`]): once this
/// returns `Ok`, the snapshot in `dir` exists. Returns the file's path.
pub fn write_metadata(
    storage: &dyn CheckpointStorage,
    dir: &Path,
    meta: &CheckpointMetadata,
) -> Result<PathBuf> {
    let path = dir.join(METADATA_FILE);
    storage.write_atomic(&path, &metadata_bytes(meta)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_what_rmp_writes() {
        let mut buf = Vec::new();
        for v in [
            0i64,
            1,
            -1,
            127,
            -32,
            -33,
            128,
            70_000,
            -70_000,
            i64::MAX,
            i64::MIN,
        ] {
            rmp::encode::write_sint(&mut buf, v).unwrap();
        }
        let mut c = Cursor { data: &buf, pos: 0 };
        for v in [
            0i64,
            1,
            -1,
            127,
            -32,
            -33,
            128,
            70_000,
            -70_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(c.int(), Some(v));
        }
        assert_eq!(c.int(), None);
    }
}
