//! The Dispatcher (DESIGN §3): accepts jobs, starts one JobMaster per job, answers
//! admin calls, and keeps finished jobs' results and details.
//!
//! Submission validates the job graph against this process's operator registry (unknown
//! operator names, cycles and bad parallelism are [`ClusterError::InvalidJob`]) and
//! rejects duplicate job ids. Job status is cached from the JobMasters' reports, so
//! `list_jobs` and `job_status` never wait on a busy JobMaster; `job_details` asks the
//! JobMaster while it runs and the archive afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use rill_dataflow::{JobGraph, JobId, OperatorRegistry};
use rill_runtime::{
    EndpointContext, EndpointHandle, FencingToken, Reply, RpcAddress, RpcEndpoint, RpcService,
};

use crate::config::RillConfig;
use crate::gateways::{dispatcher, job_master, job_master_name, resource_manager};
use crate::job_master::{JobMaster, JobMasterServices};
use crate::messages::*;

struct JobEntry {
    name: String,
    start_time_ms: u64,
    end_time_ms: Option<u64>,
    status: JobStatus,
    gateway: Option<job_master::Gateway>,
    handle: Option<EndpointHandle<JobMaster>>,
    archived: Option<(JobResult, JobDetails)>,
}

/// The Dispatcher endpoint.
pub struct Dispatcher {
    rpc: RpcService,
    config: RillConfig,
    registry: Arc<OperatorRegistry>,
    resource_manager: RpcAddress,
    jobs: BTreeMap<JobId, JobEntry>,
    order: Vec<JobId>,
}

impl Dispatcher {
    /// A Dispatcher whose JobMasters run on `rpc` and use `resource_manager`.
    pub fn new(
        rpc: RpcService,
        config: RillConfig,
        registry: Arc<OperatorRegistry>,
        resource_manager: RpcAddress,
    ) -> Self {
        Dispatcher {
            rpc,
            config,
            registry,
            resource_manager,
            jobs: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    fn entry(&self, job: JobId) -> ClusterResult<&JobEntry> {
        self.jobs.get(&job).ok_or(ClusterError::JobNotFound(job))
    }

    fn overview(&self, job: JobId, e: &JobEntry) -> JobOverview {
        if let Some((_, details)) = &e.archived {
            return details.overview.clone();
        }
        JobOverview {
            job,
            name: e.name.clone(),
            status: e.status,
            start_time_ms: e.start_time_ms,
            duration_ms: e
                .end_time_ms
                .unwrap_or_else(now_ms)
                .saturating_sub(e.start_time_ms),
        }
    }

    fn start_job(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        job: JobGraph,
    ) -> ClusterResult<JobId> {
        let id = job.job_id;
        if self.jobs.contains_key(&id) {
            return Err(ClusterError::DuplicateJob(id));
        }
        job.validate(&self.registry)
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        if self.config.checkpointing_enabled() {
            let socket = job
                .vertices
                .iter()
                .flat_map(|v| &v.operators)
                .find(|o| o.spec.factory.name == rill_dataflow::builtins::SOCKET);
            if let Some(op) = socket {
                tracing::warn!(job = %job.job_id, operator = %op.spec.name, "the socket source cannot rewind: with checkpoints its records are processed at most once after a failure, not exactly once");
            }
        }
        let name = job.name.clone();
        let job_master_id: u128 = rand::random();
        let services = JobMasterServices {
            rpc: self.rpc.clone(),
            config: self.config.clone(),
            resource_manager: self.resource_manager.clone(),
            dispatcher: self.rpc.address_of(ctx.name()),
        };
        let jm = JobMaster::new(services, job, job_master_id)?;
        let endpoint = job_master_name(id);
        let handle = self
            .rpc
            .start_endpoint(&endpoint, jm)
            .map_err(|e| ClusterError::Unavailable(format!("cannot start the JobMaster: {e}")))?;
        handle.start();
        tracing::info!(job = %id, %name, "job submitted");
        self.jobs.insert(
            id,
            JobEntry {
                name,
                start_time_ms: now_ms(),
                end_time_ms: None,
                status: JobStatus::Initializing,
                gateway: None,
                handle: Some(handle),
                archived: None,
            },
        );
        self.order.push(id);
        let rpc = self.rpc.clone();
        let address = self.rpc.address_of(&endpoint);
        let me = ctx.handle();
        ctx.spawn(async move {
            match rpc.connect::<job_master::Gateway>(&address).await {
                Ok(gw) => me.run_async(move |d, _| {
                    if let Some(e) = d.jobs.get_mut(&id).filter(|e| e.archived.is_none()) {
                        e.gateway = Some(gw.with_fencing_token(FencingToken(job_master_id)));
                    }
                }),
                Err(e) => tracing::error!(job = %id, error = %e, "cannot reach the JobMaster"),
            }
        });
        Ok(id)
    }
}

impl RpcEndpoint for Dispatcher {
    type Protocol = dispatcher::Protocol;

    fn on_stop(&mut self, _ctx: &mut EndpointContext<'_, Self>) {
        for e in self.jobs.values() {
            if let Some(h) = &e.handle {
                h.stop();
            }
        }
    }
}

impl Dispatcher {
    /// The JobMaster gateway of a job that has not ended.
    fn running_gateway(&self, job: JobId) -> ClusterResult<job_master::Gateway> {
        let e = self.entry(job)?;
        if e.status.is_terminal() {
            return Err(ClusterError::JobTerminal {
                job,
                status: e.status,
            });
        }
        e.gateway.clone().ok_or_else(|| {
            ClusterError::Unavailable(format!(
                "the JobMaster of job {job} is still starting; try again"
            ))
        })
    }
}

impl dispatcher::Handler for Dispatcher {
    fn submit_job(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        job: JobGraph,
    ) -> Reply<ClusterResult<JobId>> {
        let result = self.start_job(ctx, job);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "job submission rejected");
        }
        Reply::ready(result)
    }

    fn list_jobs(&mut self, _ctx: &mut EndpointContext<'_, Self>) -> Reply<Vec<JobOverview>> {
        Reply::ready(
            self.order
                .iter()
                .filter_map(|id| self.jobs.get(id).map(|e| self.overview(*id, e)))
                .collect(),
        )
    }

    fn job_status(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
    ) -> Reply<ClusterResult<JobStatus>> {
        Reply::ready(self.entry(job).map(|e| e.status))
    }

    fn job_details(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
    ) -> Reply<ClusterResult<JobDetails>> {
        let e = match self.entry(job) {
            Ok(e) => e,
            Err(err) => return Reply::ready(Err(err)),
        };
        if let Some((_, details)) = &e.archived {
            return Reply::ready(Ok(details.clone()));
        }
        let fallback = JobDetails {
            overview: self.overview(job, e),
            restarts: 0,
            failure: None,
            vertices: Vec::new(),
            final_checkpoint: None,
            failures: Vec::new(),
            checkpoints: CheckpointsSummary::default(),
        };
        match e.gateway.clone() {
            None => Reply::ready(Ok(fallback)),
            Some(gw) => Reply::later(async move { Ok(gw.job_details().await.unwrap_or(fallback)) }),
        }
    }

    fn trigger_checkpoint(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
    ) -> Reply<ClusterResult<u64>> {
        match self.running_gateway(job) {
            Err(e) => Reply::ready(Err(e)),
            Ok(gw) => Reply::later(async move {
                gw.trigger_checkpoint()
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }),
        }
    }

    fn trigger_savepoint(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        request: SavepointRequest,
    ) -> Reply<ClusterResult<u64>> {
        match self.running_gateway(job) {
            Err(e) => Reply::ready(Err(e)),
            Ok(gw) => Reply::later(async move {
                gw.trigger_savepoint(request)
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }),
        }
    }

    fn snapshot_status(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        id: u64,
    ) -> Reply<ClusterResult<SnapshotStatus>> {
        let e = match self.entry(job) {
            Ok(e) => e,
            Err(err) => return Reply::ready(Err(err)),
        };
        if let Some((_, details)) = &e.archived {
            return Reply::ready(
                details
                    .checkpoints
                    .requests
                    .iter()
                    .find(|(r, _)| *r == id)
                    .map(|(_, s)| s.clone())
                    .ok_or(ClusterError::SnapshotNotFound { job, id }),
            );
        }
        match e.gateway.clone() {
            None => Reply::ready(Err(ClusterError::SnapshotNotFound { job, id })),
            Some(gw) => Reply::later(async move {
                gw.snapshot_status(id)
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }),
        }
    }

    fn cancel_job(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
    ) -> Reply<ClusterResult<()>> {
        let e = match self.entry(job) {
            Ok(e) => e,
            Err(err) => return Reply::ready(Err(err)),
        };
        if e.status.is_terminal() {
            return Reply::ready(Err(ClusterError::JobTerminal {
                job,
                status: e.status,
            }));
        }
        match e.gateway.clone() {
            None => Reply::ready(Err(ClusterError::Unavailable(format!(
                "the JobMaster of job {job} is still starting; try again"
            )))),
            Some(gw) => Reply::later(async move {
                gw.cancel()
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }),
        }
    }

    fn request_job_result(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
    ) -> Reply<ClusterResult<JobResult>> {
        Reply::ready(self.entry(job).and_then(|e| match &e.archived {
            Some((result, _)) => Ok(result.clone()),
            None => Err(ClusterError::JobNotTerminal {
                job,
                status: e.status,
            }),
        }))
    }

    fn list_task_managers(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
    ) -> Reply<ClusterResult<Vec<TaskManagerInfo>>> {
        let rpc = self.rpc.clone();
        let address = self.resource_manager.clone();
        Reply::later(async move {
            let gw: resource_manager::Gateway = rpc
                .connect(&address)
                .await
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            gw.list_task_managers()
                .await
                .map_err(|e| ClusterError::Unavailable(e.to_string()))
        })
    }

    fn job_status_changed(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        status: JobStatus,
    ) {
        // A terminal status becomes visible only with the archived result
        // (`job_reached_terminal_state`), so "FINISHED" always comes with its result.
        if status.is_terminal() {
            return;
        }
        if let Some(e) = self.jobs.get_mut(&job).filter(|e| e.archived.is_none()) {
            e.status = status;
        }
    }

    fn job_reached_terminal_state(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        result: JobResult,
        details: JobDetails,
    ) {
        let Some(e) = self.jobs.get_mut(&result.job) else {
            return;
        };
        tracing::info!(job = %result.job, status = %result.status, "job reached a terminal state");
        e.status = result.status;
        e.end_time_ms = Some(now_ms());
        e.gateway = None;
        e.handle = None;
        e.archived = Some((result, details));
    }
}
