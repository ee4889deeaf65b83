//! The ResourceManager's SlotManager: a pure state machine matching jobs' declared slot
//! requirements to free TaskExecutor slots (no I/O; the ResourceManager sends the
//! resulting [`SlotRequest`]s and reports their outcome back).
//!
//! Every slot is `Free`, `Pending` (a `request_slot` is in flight) or `Allocated` to a job.
//! A job is short by `required − (pending + allocated)`; [`SlotManager::match_requirements`]
//! hands it free slots, taking each from the TaskExecutor with the most free slots so a
//! job spreads over the cluster (Flink's `cluster.evenly-spread-out-slots`).
//!
//! TaskExecutors' slot reports are the truth for `Free`/`Allocated`, except that a slot
//! with a request in flight stays `Pending` until the request answers.

use std::collections::BTreeMap;

use rill_dataflow::JobId;
use rill_runtime::{ResourceId, RpcAddress};

use crate::messages::{AllocationId, SlotReport, SlotRequest};

/// One slot's state as the ResourceManager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Not allocated.
    Free,
    /// A `request_slot` for `allocation` is in flight.
    Pending {
        /// The job.
        job: JobId,
        /// The allocation.
        allocation: AllocationId,
    },
    /// Allocated to `job`.
    Allocated {
        /// The job.
        job: JobId,
        /// The allocation.
        allocation: AllocationId,
    },
}

impl SlotState {
    fn job(&self) -> Option<JobId> {
        match self {
            SlotState::Free => None,
            SlotState::Pending { job, .. } | SlotState::Allocated { job, .. } => Some(*job),
        }
    }
}

/// A job's declared requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRequirement {
    /// Slots the job needs in total.
    pub slots: u32,
    /// Its JobMaster.
    pub job_master: RpcAddress,
    /// The JobMaster's fencing token.
    pub job_master_id: u128,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct SlotManager {
    task_executors: BTreeMap<ResourceId, Vec<SlotState>>,
    requirements: BTreeMap<JobId, JobRequirement>,
}

impl SlotManager {
    /// An empty slot manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a TaskExecutor with the slots of `report`.
    pub fn register_task_executor(&mut self, id: ResourceId, report: &SlotReport) {
        let slots = report
            .slots
            .iter()
            .map(|s| match s.allocation {
                None => SlotState::Free,
                Some((job, allocation)) => SlotState::Allocated { job, allocation },
            })
            .collect();
        self.task_executors.insert(id, slots);
    }

    /// Forgets a TaskExecutor and its slots; `true` if it was registered.
    pub fn unregister_task_executor(&mut self, id: &ResourceId) -> bool {
        self.task_executors.remove(id).is_some()
    }

    /// Whether `id` is registered.
    pub fn is_registered(&self, id: &ResourceId) -> bool {
        self.task_executors.contains_key(id)
    }

    /// Sets `job`'s requirement (0 slots keeps the job known but asks for nothing).
    pub fn set_requirement(&mut self, job: JobId, requirement: JobRequirement) {
        self.requirements.insert(job, requirement);
    }

    /// Forgets `job`'s requirement.
    pub fn remove_requirement(&mut self, job: &JobId) {
        self.requirements.remove(job);
    }

    /// Applies a TaskExecutor's slot report (see the module docs).
    pub fn apply_report(&mut self, id: &ResourceId, report: &SlotReport) {
        let Some(slots) = self.task_executors.get_mut(id) else {
            return;
        };
        for status in &report.slots {
            let Some(slot) = slots.get_mut(status.slot.index as usize) else {
                continue;
            };
            match (&*slot, status.allocation) {
                (SlotState::Pending { .. }, None) => {}
                (_, None) => *slot = SlotState::Free,
                (_, Some((job, allocation))) => *slot = SlotState::Allocated { job, allocation },
            }
        }
    }

    /// A TaskExecutor freed slot `index` (held by `allocation`).
    pub fn slot_freed(&mut self, id: &ResourceId, index: u32, allocation: AllocationId) {
        if let Some(slot) = self.slot_mut(id, index) {
            match slot {
                SlotState::Pending { allocation: a, .. }
                | SlotState::Allocated { allocation: a, .. }
                    if *a == allocation =>
                {
                    *slot = SlotState::Free
                }
                _ => {}
            }
        }
    }

    /// The request for `allocation` on slot `index` of `id` succeeded.
    pub fn request_succeeded(&mut self, id: &ResourceId, index: u32, allocation: AllocationId) {
        if let Some(slot) = self.slot_mut(id, index) {
            if let SlotState::Pending { job, allocation: a } = *slot {
                if a == allocation {
                    *slot = SlotState::Allocated { job, allocation };
                }
            }
        }
    }

    /// The request for `allocation` on slot `index` of `id` failed: the slot is free again.
    pub fn request_failed(&mut self, id: &ResourceId, index: u32, allocation: AllocationId) {
        if let Some(slot) = self.slot_mut(id, index) {
            if matches!(slot, SlotState::Pending { allocation: a, .. } if *a == allocation) {
                *slot = SlotState::Free;
            }
        }
    }

    fn slot_mut(&mut self, id: &ResourceId, index: u32) -> Option<&mut SlotState> {
        self.task_executors.get_mut(id)?.get_mut(index as usize)
    }

    /// Slots pending or allocated to `job`.
    pub fn slots_of(&self, job: &JobId) -> u32 {
        self.task_executors
            .values()
            .flatten()
            .filter(|s| s.job().as_ref() == Some(job))
            .count() as u32
    }

    /// Free slots in the cluster.
    pub fn free_slots(&self) -> u32 {
        self.task_executors
            .values()
            .flatten()
            .filter(|s| **s == SlotState::Free)
            .count() as u32
    }

    /// All slots in the cluster.
    pub fn total_slots(&self) -> u32 {
        self.task_executors.values().map(|s| s.len() as u32).sum()
    }

    /// `(total, free)` slots of one TaskExecutor.
    pub fn slots_of_task_executor(&self, id: &ResourceId) -> (u32, u32) {
        self.task_executors.get(id).map_or((0, 0), |s| {
            (
                s.len() as u32,
                s.iter().filter(|s| **s == SlotState::Free).count() as u32,
            )
        })
    }

    /// Marks free slots `Pending` for every job that is short and returns the requests to
    /// send, each with the TaskExecutor to send it to.
    pub fn match_requirements(&mut self) -> Vec<(ResourceId, SlotRequest)> {
        let mut out = Vec::new();
        let jobs: Vec<(JobId, JobRequirement)> = self
            .requirements
            .iter()
            .map(|(j, r)| (*j, r.clone()))
            .collect();
        for (job, req) in jobs {
            let mut have = self.slots_of(&job);
            while have < req.slots {
                let Some(te) = self
                    .task_executors
                    .iter()
                    .map(|(id, s)| (s.iter().filter(|s| **s == SlotState::Free).count(), id))
                    .filter(|(free, _)| *free > 0)
                    // Most free slots first; ties go to the smallest id (max_by_key keeps
                    // the last maximum, so compare reversed ids).
                    .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
                    .map(|(_, id)| id.clone())
                else {
                    break;
                };
                let slots = self.task_executors.get_mut(&te).expect("chosen above");
                let index = slots
                    .iter()
                    .position(|s| *s == SlotState::Free)
                    .expect("has a free slot");
                let allocation = AllocationId::generate();
                slots[index] = SlotState::Pending { job, allocation };
                out.push((
                    te,
                    SlotRequest {
                        slot_index: index as u32,
                        job,
                        allocation,
                        job_master: req.job_master.clone(),
                        job_master_id: req.job_master_id,
                    },
                ));
                have += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{SlotId, SlotStatus};

    fn report(te: &str, slots: u32) -> SlotReport {
        SlotReport {
            process_rss_bytes: None,
            slots: (0..slots)
                .map(|index| SlotStatus {
                    slot: SlotId {
                        task_executor: ResourceId::new(te),
                        index,
                    },
                    allocation: None,
                })
                .collect(),
        }
    }

    fn requirement(slots: u32) -> JobRequirement {
        JobRequirement {
            slots,
            job_master: RpcAddress::new(std::net::SocketAddr::from(([127, 0, 0, 1], 1)), "jm"),
            job_master_id: 7,
        }
    }

    fn job(n: u8) -> JobId {
        JobId([n; 16])
    }

    #[test]
    fn requirements_spread_over_task_executors_and_are_not_requested_twice() {
        let mut sm = SlotManager::new();
        sm.register_task_executor(ResourceId::new("a"), &report("a", 2));
        sm.register_task_executor(ResourceId::new("b"), &report("b", 2));
        sm.set_requirement(job(1), requirement(2));
        let requests = sm.match_requirements();
        let tes: Vec<_> = requests.iter().map(|(te, _)| te.as_str()).collect();
        assert_eq!(tes, ["a", "b"]);
        assert!(sm.match_requirements().is_empty(), "pending slots count");
        assert_eq!(sm.free_slots(), 2);
    }

    #[test]
    fn a_short_cluster_grants_what_it_has_and_the_rest_when_slots_appear() {
        let mut sm = SlotManager::new();
        sm.register_task_executor(ResourceId::new("a"), &report("a", 1));
        sm.set_requirement(job(1), requirement(3));
        assert_eq!(sm.match_requirements().len(), 1);
        sm.register_task_executor(ResourceId::new("b"), &report("b", 4));
        assert_eq!(sm.match_requirements().len(), 2);
        assert_eq!(sm.slots_of(&job(1)), 3);
    }

    #[test]
    fn failed_requests_and_freed_slots_return_to_the_pool() {
        let mut sm = SlotManager::new();
        let a = ResourceId::new("a");
        sm.register_task_executor(a.clone(), &report("a", 2));
        sm.set_requirement(job(1), requirement(2));
        let r = sm.match_requirements();
        sm.request_failed(&a, r[0].1.slot_index, r[0].1.allocation);
        sm.request_succeeded(&a, r[1].1.slot_index, r[1].1.allocation);
        assert_eq!(sm.slots_of(&job(1)), 1);
        // A stale report (taken before the allocation) does not free a pending slot, but
        // does free an allocated one.
        let again = sm.match_requirements();
        assert_eq!(again.len(), 1);
        sm.apply_report(&a, &report("a", 2));
        assert_eq!(
            sm.slots_of(&job(1)),
            1,
            "pending survives, allocated is freed"
        );
        sm.remove_requirement(&job(1));
        sm.slot_freed(&a, again[0].1.slot_index, again[0].1.allocation);
        assert_eq!(sm.free_slots(), 2);
    }

    #[test]
    fn losing_a_task_executor_makes_jobs_short_again() {
        let mut sm = SlotManager::new();
        let (a, b) = (ResourceId::new("a"), ResourceId::new("b"));
        sm.register_task_executor(a.clone(), &report("a", 2));
        sm.register_task_executor(b.clone(), &report("b", 2));
        sm.set_requirement(job(1), requirement(2));
        for (te, r) in sm.match_requirements() {
            sm.request_succeeded(&te, r.slot_index, r.allocation);
        }
        assert!(sm.unregister_task_executor(&a));
        let r = sm.match_requirements();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, b);
        assert_eq!(sm.total_slots(), 2);
    }
}
