//! The JobMaster's slot pool: the slots TaskExecutors offered to the job, and which
//! subtasks each one hosts.
//!
//! The job needs one slot per subtask index per slot sharing group: subtask `k` of every
//! vertex of group `g` shares slot `(g, k)` (a [`SlotKey`]), so a group needs as many
//! slots as its largest parallelism, and the job the sum over its groups
//! ([`SlotPool::required`]). The pool accepts offers up to that total and keeps, per
//! allocation, the TaskExecutor that offered it and the key it was assigned.
//!
//! Keys are assigned when the pool covers every key of the vertices to deploy
//! ([`SlotPool::assign`]); an assignment lasts until the slot is lost, so a restarted
//! subtask goes back to the slot its previous attempt ran in. A lost TaskExecutor takes
//! its slots with it ([`SlotPool::task_executor_lost`]): their keys become missing again
//! and the pool accepts replacements. At the end of the job every slot is given back
//! ([`SlotPool::release_all`]).
//!
//! The pool is a plain value: no RPC, no clock.

use std::collections::{BTreeMap, BTreeSet};

use rill_dataflow::{JobGraph, VertexId};
use rill_runtime::ResourceId;

use crate::messages::AllocationId;

/// One slot of the job: `(slot sharing group, subtask index)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SlotKey {
    /// The slot sharing group.
    pub(super) group: String,
    /// The subtask index every vertex of the group runs in this slot.
    pub(super) index: u32,
}

struct PooledSlot {
    task_executor: ResourceId,
    /// The key it hosts.
    assigned: Option<SlotKey>,
}

/// The slots offered to one job (see the module docs).
pub(super) struct SlotPool {
    slots: BTreeMap<AllocationId, PooledSlot>,
    /// Slots the job needs in total; the pool never holds more.
    required: u32,
}

impl SlotPool {
    /// An empty pool for `job`.
    pub(super) fn new(job: &JobGraph) -> Self {
        let mut groups: BTreeMap<&str, u32> = BTreeMap::new();
        for v in &job.vertices {
            let g = groups.entry(v.slot_sharing_group.as_str()).or_default();
            *g = (*g).max(v.parallelism);
        }
        SlotPool {
            slots: BTreeMap::new(),
            required: groups.values().sum(),
        }
    }

    /// Slots the job needs: the largest parallelism of each sharing group, summed.
    pub(super) fn required(&self) -> u32 {
        self.required
    }

    /// Slots held.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Takes the offer of `allocation` by `from`; returns whether it is accepted. An
    /// allocation already held is accepted again (the TaskExecutor repeats its offers);
    /// a new one only while the pool holds fewer than [`Self::required`] slots.
    pub(super) fn offer(&mut self, from: &ResourceId, allocation: AllocationId) -> bool {
        if self.slots.contains_key(&allocation) {
            return true;
        }
        if (self.slots.len() as u32) >= self.required {
            return false;
        }
        self.slots.insert(
            allocation,
            PooledSlot {
                task_executor: from.clone(),
                assigned: None,
            },
        );
        true
    }

    /// The keys of `vertices` without a slot, in key order.
    pub(super) fn missing(&self, job: &JobGraph, vertices: &BTreeSet<VertexId>) -> Vec<SlotKey> {
        let assigned: BTreeSet<&SlotKey> = self
            .slots
            .values()
            .filter_map(|s| s.assigned.as_ref())
            .collect();
        let mut needed = BTreeSet::new();
        for vertex in vertices.iter().filter_map(|v| job.vertex(*v)) {
            for index in 0..vertex.parallelism {
                let key = SlotKey {
                    group: vertex.slot_sharing_group.clone(),
                    index,
                };
                if !assigned.contains(&key) {
                    needed.insert(key);
                }
            }
        }
        needed.into_iter().collect()
    }

    /// Allocations held but not assigned, in allocation order.
    fn free(&self) -> Vec<AllocationId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.assigned.is_none())
            .map(|(a, _)| *a)
            .collect()
    }

    /// Assigns a free slot to every key of `vertices` without one; returns `false` (and
    /// assigns nothing) when there are fewer free slots than missing keys.
    pub(super) fn assign(&mut self, job: &JobGraph, vertices: &BTreeSet<VertexId>) -> bool {
        let missing = self.missing(job, vertices);
        let free = self.free();
        if free.len() < missing.len() {
            return false;
        }
        for (key, allocation) in missing.into_iter().zip(free) {
            if let Some(slot) = self.slots.get_mut(&allocation) {
                slot.assigned = Some(key);
            }
        }
        true
    }

    /// The slot assigned to `key`, with the TaskExecutor that offered it.
    pub(super) fn slot_of(&self, key: &SlotKey) -> Option<(AllocationId, ResourceId)> {
        self.slots
            .iter()
            .find(|(_, s)| s.assigned.as_ref() == Some(key))
            .map(|(a, s)| (*a, s.task_executor.clone()))
    }

    /// Forgets the slots of a lost TaskExecutor; returns how many there were.
    pub(super) fn task_executor_lost(&mut self, te: &ResourceId) -> usize {
        let before = self.slots.len();
        self.slots.retain(|_, s| &s.task_executor != te);
        before - self.slots.len()
    }

    /// Empties the pool, returning every slot with its TaskExecutor, to be freed there.
    pub(super) fn release_all(&mut self) -> Vec<(AllocationId, ResourceId)> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|(a, s)| (a, s.task_executor))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source (parallelism 2) → sink (parallelism 1), one sharing group: two slots.
    fn job() -> JobGraph {
        super::super::test_job(1, 1)
    }

    fn key(index: u32) -> SlotKey {
        SlotKey {
            group: "default".into(),
            index,
        }
    }

    fn all(job: &JobGraph) -> BTreeSet<VertexId> {
        job.vertices.iter().map(|v| v.id).collect()
    }

    #[test]
    fn a_sharing_group_needs_its_largest_parallelism() {
        let job = job();
        let pool = SlotPool::new(&job);
        assert_eq!(pool.required(), 2);
        assert_eq!(pool.missing(&job, &all(&job)), vec![key(0), key(1)]);
    }

    #[test]
    fn offers_are_accepted_up_to_the_requirement_and_again_when_repeated() {
        let job = job();
        let mut pool = SlotPool::new(&job);
        let te = ResourceId::new("te-1");
        let (a, b, c) = (AllocationId(1), AllocationId(2), AllocationId(3));
        assert!(pool.offer(&te, a));
        assert!(pool.offer(&te, b));
        assert!(!pool.offer(&te, c), "more than the job needs");
        assert!(pool.offer(&te, a), "a repeated offer");
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn keys_are_assigned_only_when_every_missing_one_has_a_slot() {
        let job = job();
        let mut pool = SlotPool::new(&job);
        let te = ResourceId::new("te-1");
        pool.offer(&te, AllocationId(1));
        assert!(!pool.assign(&job, &all(&job)));
        assert_eq!(pool.slot_of(&key(0)), None, "nothing assigned");
        pool.offer(&te, AllocationId(2));
        assert!(pool.assign(&job, &all(&job)));
        assert_eq!(pool.slot_of(&key(0)), Some((AllocationId(1), te.clone())));
        assert_eq!(pool.slot_of(&key(1)), Some((AllocationId(2), te)));
        assert!(pool.missing(&job, &all(&job)).is_empty());
        // Assigned keys stay: assigning again changes nothing.
        assert!(pool.assign(&job, &all(&job)));
        assert_eq!(pool.slot_of(&key(0)).map(|s| s.0), Some(AllocationId(1)));
    }

    #[test]
    fn a_lost_task_executor_takes_its_slots_and_replacements_are_accepted() {
        let job = job();
        let mut pool = SlotPool::new(&job);
        let (te1, te2, te3) = (
            ResourceId::new("te-1"),
            ResourceId::new("te-2"),
            ResourceId::new("te-3"),
        );
        pool.offer(&te1, AllocationId(1));
        pool.offer(&te2, AllocationId(2));
        assert!(pool.assign(&job, &all(&job)));
        assert_eq!(pool.task_executor_lost(&te2), 1);
        assert_eq!(pool.task_executor_lost(&te2), 0);
        assert_eq!(pool.missing(&job, &all(&job)), vec![key(1)]);
        assert!(!pool.assign(&job, &all(&job)));
        assert!(pool.offer(&te3, AllocationId(3)));
        assert!(pool.assign(&job, &all(&job)));
        assert_eq!(pool.slot_of(&key(0)), Some((AllocationId(1), te1.clone())));
        assert_eq!(pool.slot_of(&key(1)), Some((AllocationId(3), te3.clone())));
        let mut released = pool.release_all();
        released.sort();
        assert_eq!(
            released,
            vec![(AllocationId(1), te1), (AllocationId(3), te3)]
        );
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn only_the_vertices_to_deploy_count_as_missing() {
        let job = job();
        let pool = SlotPool::new(&job);
        let sink: BTreeSet<VertexId> = [job.vertices[1].id].into();
        assert_eq!(pool.missing(&job, &sink), vec![key(0)]);
    }
}
