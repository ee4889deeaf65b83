//! rill-endpoints: the Dispatcher, ResourceManager, JobMaster and TaskExecutor
//! (DESIGN §3), their gateways and messages, and the processes and [`MiniCluster`] that
//! host them.
//!
//! * [`gateways`]: the four typed gateways; [`messages`]: what they carry;
//! * [`dispatcher`], [`resource_manager`] (+ [`slot_manager`]), [`job_master`] (+
//!   [`restart`]), [`task_executor`]: the endpoints;
//! * [`cluster`]: [`JobManagerProcess`], [`TaskManagerProcess`], [`MiniCluster`];
//! * [`rest`]: the JobManager's Flink-compatible REST API;
//! * [`config`]: every configuration section a cluster process reads.
//!
//! Heartbeats run on three relations, each with a payload: ResourceManager → TaskExecutor
//! (slot reports), JobMaster → TaskExecutor (task I/O counters), ResourceManager →
//! JobMaster. JobMasters and the ResourceManager also death-watch TaskExecutors, so a
//! killed TaskManager is noticed after `heartbeat.rpc-failure-threshold` missed pings.

pub mod checkpoint_coordinator;
pub mod cluster;
pub mod config;
pub mod dispatcher;
pub mod final_snapshot;
pub mod gateways;
mod heartbeats;
pub mod job_master;
pub mod messages;
pub mod resource_manager;
pub mod rest;
pub mod restart;
pub mod slot_manager;
pub mod task_executor;

pub use cluster::{
    JobManagerProcess, MiniCluster, MiniClusterOptions, StartError, TaskManagerOptions,
    TaskManagerProcess,
};
pub use config::RillConfig;
pub use gateways::{dispatcher as dispatcher_gateway, job_master as job_master_gateway};
pub use messages::{ClusterError, JobDetails, JobOverview, JobResult, JobStatus, TaskManagerInfo};
