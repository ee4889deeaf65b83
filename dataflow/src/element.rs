//! What flows between operators: records and the control elements that travel with them.
//!
//! Order matters and is preserved per channel: a watermark `w` promises that no later
//! record on that channel has a timestamp `≤ w`; `EndOfInput` is the last element a
//! channel ever carries. Checkpoint barriers are network events, not stream elements
//! (DESIGN §5), so they are absent here.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// One data record: a value and its optional event-time timestamp (milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamRecord {
    /// The payload.
    pub value: Value,
    /// Event time in milliseconds since the epoch, if the record has one.
    pub timestamp: Option<i64>,
}

impl StreamRecord {
    /// A record without a timestamp.
    pub fn new(value: impl Into<Value>) -> Self {
        Self {
            value: value.into(),
            timestamp: None,
        }
    }

    /// A record with an event-time timestamp.
    pub fn with_timestamp(value: impl Into<Value>, timestamp: i64) -> Self {
        Self {
            value: value.into(),
            timestamp: Some(timestamp),
        }
    }
}

/// Whether a channel currently produces data (Flink's `WatermarkStatus`). Idle channels
/// do not hold back the watermark of the tasks they feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkStatus {
    /// The channel produces records and watermarks.
    Active,
    /// The channel has no data for now; its watermark is ignored downstream.
    Idle,
}

/// A control element: broadcast to every channel of an output, never partitioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// Event time has advanced to this value (milliseconds).
    Watermark(i64),
    /// The sending channel became idle or active.
    WatermarkStatus(WatermarkStatus),
    /// The sending channel will carry nothing more.
    EndOfInput,
}

/// Anything that flows on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamElement {
    /// A data record.
    Record(StreamRecord),
    /// Event time has advanced to this value.
    Watermark(i64),
    /// The channel became idle or active.
    WatermarkStatus(WatermarkStatus),
    /// The channel is finished.
    EndOfInput,
}

impl From<StreamEvent> for StreamElement {
    fn from(e: StreamEvent) -> Self {
        match e {
            StreamEvent::Watermark(w) => StreamElement::Watermark(w),
            StreamEvent::WatermarkStatus(s) => StreamElement::WatermarkStatus(s),
            StreamEvent::EndOfInput => StreamElement::EndOfInput,
        }
    }
}
