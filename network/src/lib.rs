//! rill-network: the data plane (DESIGN.md §4).
//!
//! Records travel from a producer task's [`RecordWriter`](record_writer::RecordWriter)
//! into the subpartitions of its [`ResultPartition`](partition::ResultPartition), and from
//! there to consumer tasks' [`InputGate`](input_gate::InputGate)s: in-process through
//! local channels that hand over buffers without copying, across processes through one
//! QUIC stream per channel governed by credit.
//!
//! * [`buffer_pool`]: bounded network memory, local pools, recycled buffers;
//! * [`serializer`], [`deserializer`]: length-prefixed records spanning buffers;
//! * [`channel_selector`]: where a record goes (by channel index; keys and key groups
//!   are rill-state's, DESIGN §6);
//! * [`partition`], [`record_writer`], [`flusher`]: the producer side;
//! * [`input_gate`], [`event`]: the consumer side and in-band events;
//! * [`protocol`], [`credit`]: the wire format and the sans-IO credit state machines;
//! * [`quic`], [`environment`]: the quinn driver and the per-process network environment;
//! * [`metrics`], [`config`], [`error`].
//!
//! Records are opaque bytes here: the network knows nothing of operators or jobs.

pub mod buffer_pool;
pub mod channel_selector;
pub mod config;
pub mod credit;
pub mod deserializer;
pub mod environment;
pub mod error;
pub mod event;
pub mod flusher;
pub mod input_gate;
pub mod metrics;
pub mod partition;
pub mod protocol;
pub mod quic;
pub mod record_writer;
pub mod serializer;

pub use channel_selector::ChannelSelector;
pub use config::{BufferTimeout, NetworkConfig};
pub use environment::NetworkEnvironment;
pub use error::NetworkError;
pub use event::{Alignment, CheckpointKind, CheckpointOptions, Event};
pub use input_gate::{GateItem, GateWaker, InputGate, InputGateBuilder, ReaderItem, RecordReader};
pub use metrics::{BackPressureLevel, TaskIoMetrics};
pub use partition::{PartitionId, QueuedBarrier, ResultPartition};
pub use record_writer::RecordWriter;
