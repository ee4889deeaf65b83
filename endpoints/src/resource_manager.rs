//! The ResourceManager (DESIGN §3): TaskExecutor and JobMaster registration, heartbeats
//! towards both, and the [`SlotManager`] that matches declared requirements to slots.
//!
//! It watches every TaskExecutor twice: heartbeats (payload: the slot report) and
//! death-watch (a killed process is noticed after `heartbeat.rpc-failure-threshold`
//! missed pings rather than after the full heartbeat timeout). A lost TaskExecutor's
//! slots disappear, which leaves the jobs that held them short, so they get free slots
//! elsewhere as soon as there are any.
//!
//! A JobMaster that disconnects or stops answering heartbeats loses its requirements.
//! DESIGN §3 asks the ResourceManager to keep them for a reconnecting JobMaster; rill's
//! JobMasters live in the ResourceManager's own process and do not reconnect yet, so
//! keeping them would only pin slots.

use std::collections::BTreeMap;
use std::time::Duration;

use rill_dataflow::JobId;
use rill_runtime::heartbeat::{HeartbeatManager, HeartbeatRole};
use rill_runtime::{
    EndpointContext, FencingToken, Reply, ResourceId, RpcAddress, RpcEndpoint, RpcService,
};

use crate::config::RillConfig;
use crate::gateways::{job_master, resource_manager, task_executor};
use crate::heartbeats::{start_heartbeats, TellTarget};
use crate::messages::*;
use crate::slot_manager::{JobRequirement, SlotManager};

struct RegisteredTaskExecutor {
    gateway: task_executor::Gateway,
    location: TaskManagerLocation,
    /// Bumped on each registration, so a stale death-watch cannot remove a newer one.
    epoch: u64,
    /// When it last registered or sent a heartbeat (`timeSinceLastHeartbeat` in REST).
    last_heard: std::time::Instant,
    /// Its process's resident memory, from its last heartbeat.
    process_rss_bytes: Option<u64>,
}

struct RegisteredJobMaster {
    job_master_id: u128,
    address: RpcAddress,
    resource: ResourceId,
}

/// The ResourceManager endpoint.
pub struct ResourceManager {
    rpc: RpcService,
    config: RillConfig,
    resource_id: ResourceId,
    slots: SlotManager,
    task_executors: BTreeMap<ResourceId, RegisteredTaskExecutor>,
    job_masters: BTreeMap<JobId, RegisteredJobMaster>,
    heartbeat_te: Option<HeartbeatManager<SlotReport, ()>>,
    heartbeat_jm: Option<HeartbeatManager<(), ()>>,
    epoch: u64,
    rematch_scheduled: bool,
}

impl ResourceManager {
    /// A ResourceManager serving through `rpc`.
    pub fn new(rpc: RpcService, config: RillConfig) -> Self {
        ResourceManager {
            rpc,
            config,
            resource_id: ResourceId::generate("resourcemanager", &mut rand::thread_rng()),
            slots: SlotManager::new(),
            task_executors: BTreeMap::new(),
            job_masters: BTreeMap::new(),
            heartbeat_te: None,
            heartbeat_jm: None,
            epoch: 0,
            rematch_scheduled: false,
        }
    }

    fn add_task_executor(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        registration: TaskExecutorRegistration,
        gateway: task_executor::Gateway,
    ) {
        let id = registration.location.resource_id.clone();
        self.epoch += 1;
        let epoch = self.epoch;
        tracing::info!(task_executor = %id, address = %registration.location.rpc_address,
            slots = registration.slot_report.slots.len(), "TaskExecutor registered");
        self.slots
            .register_task_executor(id.clone(), &registration.slot_report);
        if let Some(hb) = &self.heartbeat_te {
            let g = gateway.clone();
            hb.monitor_target(
                id.clone(),
                TellTarget::requester(move |from, ()| {
                    g.request_heartbeat_from_resource_manager(from)
                }),
            );
        }
        let watch = self.rpc.watch(&registration.location.rpc_address);
        let handle = ctx.handle();
        let watched = id.clone();
        ctx.spawn(async move {
            let t = watch.terminated().await;
            handle.run_async(move |rm, ctx| {
                if rm
                    .task_executors
                    .get(&watched)
                    .is_some_and(|r| r.epoch == epoch)
                {
                    rm.remove_task_executor(ctx, watched, format!("death-watch: {:?}", t.reason));
                }
            });
        });
        self.task_executors.insert(
            id,
            RegisteredTaskExecutor {
                gateway,
                location: registration.location,
                epoch,
                last_heard: std::time::Instant::now(),
                process_rss_bytes: None,
            },
        );
        self.match_slots(ctx);
    }

    fn remove_task_executor(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        id: ResourceId,
        reason: String,
    ) {
        if self.task_executors.remove(&id).is_none() {
            return;
        }
        if reason.starts_with("disconnected") {
            tracing::info!(task_executor = %id, %reason, "TaskExecutor removed");
        } else {
            tracing::warn!(task_executor = %id, %reason, "TaskExecutor removed");
        }
        self.slots.unregister_task_executor(&id);
        if let Some(hb) = &self.heartbeat_te {
            hb.unmonitor_target(id);
        }
        self.match_slots(ctx);
    }

    fn remove_job_master(&mut self, job: JobId, reason: &str) {
        if let Some(jm) = self.job_masters.remove(&job) {
            tracing::info!(%job, reason, "JobMaster unregistered");
            self.slots.remove_requirement(&job);
            if let Some(hb) = &self.heartbeat_jm {
                hb.unmonitor_target(jm.resource);
            }
        }
    }

    fn job_master_lost(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        jm: ResourceId,
        reason: String,
    ) {
        let jobs: Vec<JobId> = self
            .job_masters
            .iter()
            .filter(|(_, r)| r.resource == jm)
            .map(|(j, _)| *j)
            .collect();
        for job in jobs {
            self.remove_job_master(job, &reason);
        }
    }

    fn on_slot_report(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
        report: SlotReport,
    ) {
        self.slots.apply_report(&from, &report);
        self.match_slots(ctx);
    }

    /// Sends slot requests for every short job.
    fn match_slots(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        for (te, request) in self.slots.match_requirements() {
            let Some(r) = self.task_executors.get(&te) else {
                continue;
            };
            let gw = r.gateway.clone();
            let handle = ctx.handle();
            tracing::debug!(task_executor = %te, slot = request.slot_index, job = %request.job, "requesting slot");
            ctx.spawn(async move {
                let (index, allocation) = (request.slot_index, request.allocation);
                let result = match gw.request_slot(request).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                handle.run_async(move |rm, ctx| match result {
                    Ok(()) => rm.slots.request_succeeded(&te, index, allocation),
                    Err(e) => {
                        tracing::warn!(task_executor = %te, slot = index, error = %e, "slot request failed");
                        rm.slots.request_failed(&te, index, allocation);
                        // Retry soon rather than in a hot loop against the same slot.
                        if !rm.rematch_scheduled {
                            rm.rematch_scheduled = true;
                            ctx.run_later(Duration::from_millis(200), |rm, ctx| {
                                rm.rematch_scheduled = false;
                                rm.match_slots(ctx);
                            });
                        }
                    }
                });
            });
        }
    }
}

impl RpcEndpoint for ResourceManager {
    type Protocol = resource_manager::Protocol;

    fn on_start(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let hb = self.config.heartbeat.clone();
        self.heartbeat_te = Some(start_heartbeats(
            ctx,
            &self.resource_id,
            HeartbeatRole::Sender,
            &hb,
            "TaskExecutor",
            Self::remove_task_executor,
            Self::on_slot_report,
            |_| (),
        ));
        self.heartbeat_jm = Some(start_heartbeats(
            ctx,
            &self.resource_id,
            HeartbeatRole::Sender,
            &hb,
            "JobMaster",
            Self::job_master_lost,
            |_, _, _, ()| {},
            |_| (),
        ));
    }

    fn on_stop(&mut self, _ctx: &mut EndpointContext<'_, Self>) {
        if let Some(hb) = self.heartbeat_te.take() {
            hb.stop();
        }
        if let Some(hb) = self.heartbeat_jm.take() {
            hb.stop();
        }
    }
}

impl resource_manager::Handler for ResourceManager {
    fn register_task_executor(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        registration: TaskExecutorRegistration,
    ) -> Reply<RegistrationResponse> {
        let rpc = self.rpc.clone();
        let handle = ctx.handle();
        let me = self.resource_id.clone();
        Reply::later(async move {
            let gw: task_executor::Gateway =
                match rpc.connect(&registration.location.rpc_address).await {
                    Ok(gw) => gw,
                    Err(e) => {
                        return RegistrationResponse::Refused(format!(
                            "the ResourceManager cannot reach {}: {e}",
                            registration.location.rpc_address
                        ))
                    }
                };
            match handle
                .call(move |rm, ctx| rm.add_task_executor(ctx, registration, gw))
                .await
            {
                Ok(()) => RegistrationResponse::Success {
                    resource_manager: me,
                },
                Err(e) => RegistrationResponse::Refused(e.to_string()),
            }
        })
    }

    fn disconnect_task_executor(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        task_executor: ResourceId,
        reason: String,
    ) {
        self.remove_task_executor(ctx, task_executor, format!("disconnected: {reason}"));
    }

    fn notify_slot_available(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        task_executor: ResourceId,
        slot_index: u32,
        allocation: AllocationId,
    ) {
        self.slots
            .slot_freed(&task_executor, slot_index, allocation);
        self.match_slots(ctx);
    }

    fn receive_heartbeat_from_task_executor(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
        report: SlotReport,
    ) {
        if let Some(r) = self.task_executors.get_mut(&from) {
            r.last_heard = std::time::Instant::now();
            r.process_rss_bytes = report.process_rss_bytes.or(r.process_rss_bytes);
        }
        if let Some(hb) = &self.heartbeat_te {
            hb.receive_heartbeat(from, report);
        }
    }

    fn register_job_master(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        job_master_id: u128,
        address: RpcAddress,
        resource: ResourceId,
    ) -> Reply<ClusterResult<ResourceId>> {
        let rpc = self.rpc.clone();
        let handle = ctx.handle();
        let me = self.resource_id.clone();
        Reply::later(async move {
            let gw: job_master::Gateway = rpc.connect(&address).await.map_err(|e| {
                ClusterError::Unavailable(format!(
                    "the ResourceManager cannot reach {address}: {e}"
                ))
            })?;
            let jm_address = address.clone();
            let gw = gw.with_fencing_token(FencingToken(job_master_id));
            handle
                .call(move |rm, _| {
                    if let Some(hb) = &rm.heartbeat_jm {
                        hb.monitor_target(
                            resource.clone(),
                            TellTarget::requester(move |from, ()| {
                                gw.request_heartbeat_from_resource_manager(from)
                            }),
                        );
                    }
                    rm.job_masters.insert(
                        job,
                        RegisteredJobMaster {
                            job_master_id,
                            address: jm_address,
                            resource,
                        },
                    );
                    tracing::info!(%job, "JobMaster registered");
                })
                .await
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            Ok(me)
        })
    }

    fn declare_required_resources(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        job_master_id: u128,
        slots: u32,
    ) {
        let Some(jm) = self
            .job_masters
            .get(&job)
            .filter(|j| j.job_master_id == job_master_id)
        else {
            tracing::warn!(%job, "requirements from an unregistered JobMaster ignored");
            return;
        };
        let address = jm.address.clone();
        tracing::info!(%job, slots, "job declared its slot requirement");
        self.slots.set_requirement(
            job,
            JobRequirement {
                slots,
                job_master: address,
                job_master_id,
            },
        );
        self.match_slots(ctx);
    }

    fn disconnect_job_master(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        job_master_id: u128,
        reason: String,
    ) {
        if self
            .job_masters
            .get(&job)
            .is_some_and(|j| j.job_master_id == job_master_id)
        {
            self.remove_job_master(job, &reason);
        }
    }

    fn receive_heartbeat_from_job_master(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
    ) {
        if let Some(hb) = &self.heartbeat_jm {
            hb.receive_heartbeat(from, ());
        }
    }

    fn list_task_managers(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
    ) -> Reply<Vec<TaskManagerInfo>> {
        Reply::ready(
            self.task_executors
                .iter()
                .map(|(id, r)| {
                    let (slots_total, slots_free) = self.slots.slots_of_task_executor(id);
                    TaskManagerInfo {
                        location: r.location.clone(),
                        slots_total,
                        slots_free,
                        since_heartbeat_ms: r.last_heard.elapsed().as_millis() as u64,
                        process_rss_bytes: r.process_rss_bytes,
                    }
                })
                .collect(),
        )
    }
}
