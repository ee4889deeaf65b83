//! The per-process network environment (Flink's `NettyShuffleEnvironment`): the one
//! [`NetworkBufferPool`], the registry of partitions produced here, and the QUIC
//! transport. A TaskExecutor owns exactly one.
//!
//! # Wiring a producer to a remote consumer
//!
//! ```text
//! TaskExecutor A (producer)                     TaskExecutor B (consumer)
//!   env_a.start_transport(bind, secret)           env_b.start_transport(bind, secret)
//!   let p = env_a.create_partition(id, n)?        let mut b = env_b.input_gate_builder(metrics)?
//!   let w = RecordWriter::new(p, selector, …)?    env_b.add_remote_channel(&mut b, addr_a, id, i)?
//!   w.emit(bytes)?; … w.finish()?                 let mut r = RecordReader::new(b.build())
//!                                                 while let Some(item) = r.next_item()? { … }
//! ```
//!
//! For a producer in the same process use
//! [`InputGateBuilder::add_local`](crate::input_gate::InputGateBuilder::add_local) (or
//! [`NetworkEnvironment::add_local_channel`]) instead: same gate, no copy, no credit.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rill_runtime::config::AuthConfig;
use rill_runtime::security::admission::PendingBudget;
use rill_runtime::security::ClusterSecret;

use crate::buffer_pool::NetworkBufferPool;
use crate::config::NetworkConfig;
use crate::error::NetworkError;
use crate::input_gate::InputGateBuilder;
use crate::metrics::TaskIoMetrics;
use crate::partition::{PartitionId, PartitionManager, ResultPartition};
use crate::quic::QuicTransport;

/// Buffers, partitions and transport of one process.
pub struct NetworkEnvironment {
    config: NetworkConfig,
    buffers: NetworkBufferPool,
    partitions: PartitionManager,
    transport: OnceLock<Arc<QuicTransport>>,
}

impl std::fmt::Debug for NetworkEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkEnvironment")
            .field("buffers", &self.buffers)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl NetworkEnvironment {
    /// Validates the configuration and sets up the buffer pool (no memory is touched yet).
    pub fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        config.validate()?;
        Ok(NetworkEnvironment {
            buffers: NetworkBufferPool::new(config.total_segments(), config.segment_size as usize),
            partitions: PartitionManager::default(),
            transport: OnceLock::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The process's network memory.
    pub fn buffer_pool(&self) -> &NetworkBufferPool {
        &self.buffers
    }

    /// Partitions produced in this process.
    pub fn partitions(&self) -> &PartitionManager {
        &self.partitions
    }

    /// Binds the QUIC endpoint (call once, inside a tokio runtime) and returns its address.
    /// Peers get the default `security.auth.*` limits before they authenticate.
    pub fn start_transport(
        &self,
        bind: SocketAddr,
        secret: ClusterSecret,
    ) -> Result<SocketAddr, NetworkError> {
        self.start_transport_with(bind, secret, &AuthConfig::default(), None)
    }

    /// Like [`start_transport`](Self::start_transport), with the pre-authentication
    /// limits `auth` (`security.auth.*`), counted against `budget` when the process's
    /// other QUIC servers share it (see `PendingBudget`).
    pub fn start_transport_with(
        &self,
        bind: SocketAddr,
        secret: ClusterSecret,
        auth: &AuthConfig,
        budget: Option<PendingBudget>,
    ) -> Result<SocketAddr, NetworkError> {
        if let Some(t) = self.transport.get() {
            return t.local_addr();
        }
        let t = QuicTransport::bind(
            bind,
            secret,
            auth,
            budget,
            self.config.clone(),
            self.partitions.clone(),
        )?;
        let addr = t.local_addr()?;
        self.transport
            .set(t)
            .map_err(|_| NetworkError::config("transport started twice concurrently"))?;
        Ok(addr)
    }

    /// The transport, once started.
    pub fn transport(&self) -> Option<&Arc<QuicTransport>> {
        self.transport.get()
    }

    /// Creates and registers a result partition with `num_subpartitions` channels.
    ///
    /// Its pool needs `num_subpartitions + 1` buffers (one being written per channel plus
    /// one in flight) and may grow to `num_subpartitions * max-buffers-per-channel +
    /// floating-buffers-per-gate`, as in Flink.
    pub fn create_partition(
        &self,
        id: PartitionId,
        num_subpartitions: u32,
    ) -> Result<Arc<ResultPartition>, NetworkError> {
        let n = num_subpartitions as usize;
        let min = n + 1;
        let max = n * self.config.max_buffers_per_channel as usize
            + self.config.floating_buffers_per_gate as usize;
        let pool = self.buffers.create_pool(min, max)?;
        let partition = ResultPartition::new(
            id,
            num_subpartitions,
            pool,
            self.config.max_buffers_per_channel,
        );
        self.partitions.register(partition.clone())?;
        Ok(partition)
    }

    /// Unregisters and releases a partition (its consumers see it end with an error).
    pub fn release_partition(&self, id: PartitionId) {
        self.partitions.release(id);
    }

    /// Starts building an input gate whose floating pool holds up to
    /// `floating-buffers-per-gate` buffers.
    pub fn input_gate_builder(
        &self,
        metrics: Arc<TaskIoMetrics>,
    ) -> Result<InputGateBuilder, NetworkError> {
        let floating = self
            .buffers
            .create_pool(1, self.config.floating_buffers_per_gate.max(1) as usize)?;
        Ok(InputGateBuilder::new(
            floating,
            metrics,
            self.config.max_record_size as usize,
        ))
    }

    /// Adds a local channel reading a partition registered in this process.
    pub fn add_local_channel(
        &self,
        builder: &mut InputGateBuilder,
        partition: PartitionId,
        subpartition: u32,
    ) -> Result<u32, NetworkError> {
        let p = self.partitions.get(partition)?;
        builder.add_local(&p, subpartition)
    }

    /// Adds a remote channel reading `subpartition` of `partition` from the TaskExecutor
    /// whose data plane listens on `producer`, and starts its driver. The channel reserves
    /// `exclusive-buffers-per-channel` buffers (failing now if the memory cannot cover
    /// them) and retries a partition that is not registered yet with backoff.
    pub fn add_remote_channel(
        &self,
        builder: &mut InputGateBuilder,
        producer: SocketAddr,
        partition: PartitionId,
        subpartition: u32,
    ) -> Result<u32, NetworkError> {
        let transport = self.transport.get().ok_or(NetworkError::Closed {
            what: "data-plane transport (not started)",
        })?;
        let exclusive = self.config.exclusive_buffers_per_channel as usize;
        let pool = self.buffers.create_pool(exclusive, exclusive)?;
        let inbox = builder.add_remote(pool);
        let index = builder.num_channels() - 1;
        transport.start_remote_channel(producer, partition, subpartition, inbox);
        Ok(index)
    }

    /// Stops the transport; partitions are released.
    pub fn shutdown(&self) {
        if let Some(t) = self.transport.get() {
            t.shutdown();
        }
    }
}

impl Drop for NetworkEnvironment {
    fn drop(&mut self) {
        self.shutdown();
    }
}
