//! Network buffers: one bounded [`NetworkBufferPool`] per process, [`LocalBufferPool`]s
//! per result partition, input gate and remote channel, and reference-counted
//! [`Buffer`]s that find their way home when dropped.
//!
//! # Memory bound
//!
//! The global pool holds `taskmanager.network.memory / segment-size` segments. Segments are
//! allocated lazily (a TaskExecutor that moves little data touches little memory) but never
//! more than that number, and once allocated they are recycled, never freed, until the
//! global pool itself is dropped. Every byte the data plane buffers therefore lives in a
//! segment, and the sum of segments is bounded by configuration.
//!
//! # Local pools and redistribution
//!
//! A local pool has a `min` (it cannot work with less: a partition needs one buffer per
//! subpartition plus one, a remote channel its exclusive buffers) and a `max`. Creating a
//! pool fails with [`NetworkError::InsufficientBuffers`] if the minimums of all pools would
//! exceed the total. The segments above the sum of minimums are shared out evenly, capped
//! by each pool's `max`, every time a pool comes or goes (Flink's redistribution). A pool
//! may hold more than its new share for a while: the surplus goes back to the global pool
//! as its buffers are recycled.
//!
//! # Waiting is backpressure
//!
//! [`LocalBufferPool::request_blocking`] parks the calling thread (the task thread of a
//! writer) and [`LocalBufferPool::request`] parks an async task (a QUIC channel driver)
//! until a buffer is recycled. Lock order is always local pool, then global pool; the
//! global pool wakes waiting local pools after releasing its own lock.
//!
//! # Buffers
//!
//! A [`Buffer`] is a writable, uniquely owned segment with a fill level. Freezing it
//! ([`Buffer::freeze`]) yields [`bytes::Bytes`] that share the segment without copying;
//! when the last clone (or slice) is dropped the segment returns to its local pool. This is
//! how local channels hand buffers from producer to consumer without copying bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::error::NetworkError;

/// The process-wide, bounded set of network memory segments.
#[derive(Clone)]
pub struct NetworkBufferPool {
    inner: Arc<Global>,
}

impl std::fmt::Debug for NetworkBufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("NetworkBufferPool")
            .field("segment_size", &self.inner.segment_size)
            .field("total", &self.inner.total)
            .field("allocated", &st.allocated)
            .field("free", &st.free.len())
            .finish()
    }
}

struct Global {
    segment_size: usize,
    total: usize,
    state: Mutex<GlobalState>,
}

struct PoolEntry {
    min: usize,
    max: usize,
    pool: Weak<Local>,
}

#[derive(Default)]
struct GlobalState {
    /// Allocated segments not owned by any local pool.
    free: Vec<Box<[u8]>>,
    /// Segments that exist (free, held by pools, or in use).
    allocated: usize,
    peak_allocated: usize,
    /// Sum of the minimums of all pools.
    required: usize,
    next_id: u64,
    live_pools: usize,
    /// Pools that can grow (`max > min`), by id.
    pools: BTreeMap<u64, PoolEntry>,
    /// Pools that found the global pool empty and want a wake-up.
    waiters: Vec<Weak<Local>>,
}

impl Global {
    fn take_segment(&self) -> Option<Box<[u8]>> {
        let mut st = self.state.lock();
        if let Some(seg) = st.free.pop() {
            return Some(seg);
        }
        if st.allocated < self.total {
            st.allocated += 1;
            st.peak_allocated = st.peak_allocated.max(st.allocated);
            drop(st);
            return Some(vec![0u8; self.segment_size].into_boxed_slice());
        }
        None
    }

    fn register_waiter(&self, pool: &Arc<Local>) {
        if !pool.waiting_global.swap(true, Ordering::AcqRel) {
            self.state.lock().waiters.push(Arc::downgrade(pool));
        }
    }

    fn return_segments(&self, segs: Vec<Box<[u8]>>) {
        if segs.is_empty() {
            return;
        }
        let waiters = {
            let mut st = self.state.lock();
            st.free.extend(segs);
            std::mem::take(&mut st.waiters)
        };
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.waiting_global.store(false, Ordering::Release);
            w.wake_all();
        }
    }
}

impl NetworkBufferPool {
    /// Creates a pool of `total_segments` segments of `segment_size` bytes each.
    pub fn new(total_segments: usize, segment_size: usize) -> Self {
        NetworkBufferPool {
            inner: Arc::new(Global {
                segment_size,
                total: total_segments,
                state: Mutex::new(GlobalState::default()),
            }),
        }
    }

    /// Bytes per segment.
    pub fn segment_size(&self) -> usize {
        self.inner.segment_size
    }

    /// Number of segments the configured memory holds.
    pub fn total_segments(&self) -> usize {
        self.inner.total
    }

    /// Segments owned by local pools (in use or cached there).
    pub fn segments_in_use(&self) -> usize {
        let st = self.inner.state.lock();
        st.allocated - st.free.len()
    }

    /// Most segments that ever existed at once; times the segment size, this is the peak
    /// network memory, and never exceeds the configured total.
    pub fn peak_allocated_segments(&self) -> usize {
        self.inner.state.lock().peak_allocated
    }

    /// Sum of the minimum sizes of all live local pools.
    pub fn required_segments(&self) -> usize {
        self.inner.state.lock().required
    }

    /// Number of live local pools.
    pub fn num_pools(&self) -> usize {
        self.inner.state.lock().live_pools
    }

    /// Creates a local pool that is guaranteed `min` segments and may grow to `max`.
    ///
    /// Fails with [`NetworkError::InsufficientBuffers`] if the minimums of all pools would
    /// exceed the configured memory.
    pub fn create_pool(
        &self,
        min: usize,
        max: usize,
    ) -> Result<Arc<LocalBufferPool>, NetworkError> {
        let max = max.max(min);
        let local = {
            let mut st = self.inner.state.lock();
            if st.required + min > self.inner.total {
                return Err(NetworkError::InsufficientBuffers {
                    required: st.required + min,
                    total: self.inner.total,
                });
            }
            st.required += min;
            let id = st.next_id;
            st.next_id += 1;
            let local = Arc::new(Local {
                id,
                min,
                max,
                global: self.inner.clone(),
                state: Mutex::new(LocalState {
                    available: Vec::new(),
                    outstanding: 0,
                    size: min,
                    destroyed: false,
                }),
                cond: Condvar::new(),
                notify: Notify::new(),
                waiting_global: AtomicBool::new(false),
            });
            st.live_pools += 1;
            // Fixed-size pools never take part in redistribution: not worth tracking.
            if max > min {
                st.pools.insert(
                    id,
                    PoolEntry {
                        min,
                        max,
                        pool: Arc::downgrade(&local),
                    },
                );
            }
            local
        };
        // A fixed-size pool changes nobody else's share only by its minimum, which the
        // others see as less excess; redistribution handles both cases the same way.
        redistribute(&self.inner);
        Ok(Arc::new(LocalBufferPool { inner: local }))
    }
}

/// Shares the segments above the sum of minimums evenly among pools, capped by `max`.
///
/// Fixed-size pools (`min == max`, e.g. a remote channel's exclusive buffers) never change
/// size and are skipped, so creating thousands of channels stays linear.
fn redistribute(global: &Arc<Global>) {
    let targets: Vec<(Arc<Local>, usize)> = {
        let st = global.state.lock();
        let mut excess = global.total.saturating_sub(st.required);
        let mut sizes: Vec<(u64, usize, usize)> = st
            .pools
            .iter()
            .map(|(id, e)| (*id, e.min, e.max - e.min))
            .collect();
        loop {
            let open = sizes.iter().filter(|(_, _, cap)| *cap > 0).count();
            if open == 0 || excess == 0 {
                break;
            }
            let share = (excess / open).max(1);
            for (_, size, cap) in sizes.iter_mut().filter(|(_, _, cap)| *cap > 0) {
                let give = share.min(*cap).min(excess);
                *size += give;
                *cap -= give;
                excess -= give;
                if excess == 0 {
                    break;
                }
            }
        }
        sizes
            .into_iter()
            .filter_map(|(id, size, _)| st.pools[&id].pool.upgrade().map(|p| (p, size)))
            .collect()
    };
    for (pool, size) in targets {
        pool.set_size(size);
    }
}

struct LocalState {
    /// Segments held by the pool, ready to hand out.
    available: Vec<Box<[u8]>>,
    /// Buffers handed out and not yet recycled.
    outstanding: usize,
    /// Current entitlement (from redistribution).
    size: usize,
    destroyed: bool,
}

struct Local {
    id: u64,
    min: usize,
    max: usize,
    global: Arc<Global>,
    state: Mutex<LocalState>,
    cond: Condvar,
    notify: Notify,
    waiting_global: AtomicBool,
}

impl Local {
    fn wake_all(&self) {
        // Taking the lock orders this wake-up after any waiter's "check, then wait".
        drop(self.state.lock());
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    fn set_size(self: &Arc<Self>, size: usize) {
        let (surplus, grew) = {
            let mut st = self.state.lock();
            let grew = size > st.size;
            st.size = size;
            let mut surplus = Vec::new();
            while st.outstanding + st.available.len() > size {
                match st.available.pop() {
                    Some(seg) => surplus.push(seg),
                    None => break,
                }
            }
            (surplus, grew)
        };
        self.global.return_segments(surplus);
        if grew {
            self.cond.notify_all();
            self.notify.notify_waiters();
        }
    }

    /// One attempt under the caller's lock; registers for a global wake-up on failure.
    fn try_take(self: &Arc<Self>, st: &mut LocalState) -> Result<Option<Buffer>, NetworkError> {
        if st.destroyed {
            return Err(NetworkError::PoolDestroyed);
        }
        if let Some(seg) = st.available.pop() {
            st.outstanding += 1;
            return Ok(Some(Buffer::new(seg, self.clone())));
        }
        if st.outstanding < st.size {
            if let Some(seg) = self.global.take_segment() {
                st.outstanding += 1;
                return Ok(Some(Buffer::new(seg, self.clone())));
            }
            self.global.register_waiter(self);
        }
        Ok(None)
    }

    fn recycle(&self, seg: Box<[u8]>) {
        let mut st = self.state.lock();
        st.outstanding -= 1;
        if st.destroyed || st.outstanding + st.available.len() >= st.size {
            drop(st);
            self.global.return_segments(vec![seg]);
        } else {
            st.available.push(seg);
            drop(st);
            self.cond.notify_one();
            self.notify.notify_waiters();
        }
    }
}

/// A pool of buffers for one partition, gate or channel, drawing on the global pool.
///
/// Dropping it destroys the pool: cached segments go back to the global pool at once,
/// outstanding buffers when they are dropped, and waiting requests fail with
/// [`NetworkError::PoolDestroyed`].
pub struct LocalBufferPool {
    inner: Arc<Local>,
}

impl std::fmt::Debug for LocalBufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("LocalBufferPool")
            .field("min", &self.inner.min)
            .field("max", &self.inner.max)
            .field("size", &st.size)
            .field("outstanding", &st.outstanding)
            .field("available", &st.available.len())
            .finish()
    }
}

impl LocalBufferPool {
    /// Returns a buffer if one is free now, `Ok(None)` if the pool is exhausted.
    pub fn try_request(&self) -> Result<Option<Buffer>, NetworkError> {
        let mut st = self.inner.state.lock();
        self.inner.try_take(&mut st)
    }

    /// Returns a buffer, parking the calling thread until one is recycled.
    ///
    /// For task threads; async code uses [`LocalBufferPool::request`].
    pub fn request_blocking(&self) -> Result<Buffer, NetworkError> {
        let mut st = self.inner.state.lock();
        loop {
            if let Some(b) = self.inner.try_take(&mut st)? {
                return Ok(b);
            }
            self.inner.cond.wait(&mut st);
        }
    }

    /// Returns a buffer, waiting asynchronously until one is recycled. Cancel-safe.
    pub async fn request(&self) -> Result<Buffer, NetworkError> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = self.try_request()? {
                return Ok(b);
            }
            notified.await;
        }
    }

    /// Whether a buffer can probably be had without waiting (a recycled one is free, or
    /// the entitlement is not used up); a hint, as another requester may be first.
    pub fn is_available(&self) -> bool {
        let st = self.inner.state.lock();
        !st.available.is_empty() || st.outstanding < st.size
    }

    /// Guaranteed minimum number of segments.
    pub fn min_size(&self) -> usize {
        self.inner.min
    }

    /// Maximum number of segments.
    pub fn max_size(&self) -> usize {
        self.inner.max
    }

    /// Current entitlement after redistribution (between min and max).
    pub fn size(&self) -> usize {
        self.inner.state.lock().size
    }

    /// Buffers handed out and not yet dropped.
    pub fn outstanding(&self) -> usize {
        self.inner.state.lock().outstanding
    }

    /// Buffers outstanding and the current entitlement, read together.
    pub fn occupancy(&self) -> (usize, usize) {
        let st = self.inner.state.lock();
        (st.outstanding, st.size)
    }

    /// Fraction of the entitlement in use (`outstanding / size`), as Flink's
    /// `outPoolUsage`/`inPoolUsage`.
    pub fn usage(&self) -> f64 {
        let st = self.inner.state.lock();
        if st.size == 0 {
            0.0
        } else {
            (st.outstanding as f64 / st.size as f64).min(1.0)
        }
    }

    /// Bytes per buffer.
    pub fn segment_size(&self) -> usize {
        self.inner.global.segment_size
    }

    fn destroy(&self) {
        let cached = {
            let mut st = self.inner.state.lock();
            st.destroyed = true;
            std::mem::take(&mut st.available)
        };
        self.inner.cond.notify_all();
        self.inner.notify.notify_waiters();
        {
            let mut gst = self.inner.global.state.lock();
            gst.pools.remove(&self.inner.id);
            gst.required -= self.inner.min;
            gst.live_pools -= 1;
        }
        self.inner.global.return_segments(cached);
        redistribute(&self.inner.global);
    }
}

impl Drop for LocalBufferPool {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// A writable network buffer: one segment and its fill level.
///
/// Dropping it (or the last [`Bytes`] made from it by [`Buffer::freeze`]) returns the
/// segment to its pool.
pub struct Buffer {
    seg: Box<[u8]>,
    len: usize,
    pool: Arc<Local>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .field("capacity", &self.seg.len())
            .finish()
    }
}

impl Buffer {
    fn new(seg: Box<[u8]>, pool: Arc<Local>) -> Self {
        Buffer { seg, len: 0, pool }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Segment size.
    pub fn capacity(&self) -> usize {
        self.seg.len()
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        self.seg.len() - self.len
    }

    /// Whether the buffer is full.
    pub fn is_full(&self) -> bool {
        self.len == self.seg.len()
    }

    /// Appends as much of `data` as fits and returns how many bytes were copied.
    #[inline]
    pub fn append(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        self.seg[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Appends `prefix` and `record` if both fit with at least one byte to spare, and
    /// returns whether they did. The writer's per-record fast path: no call for the
    /// common small record (see [`copy_small`]).
    #[inline]
    pub(crate) fn try_append_prefixed(&mut self, prefix: [u8; 4], record: &[u8]) -> bool {
        let start = self.len;
        let end = start + 4 + record.len();
        if end >= self.seg.len() {
            return false;
        }
        let dst = &mut self.seg[start..end];
        dst[..4].copy_from_slice(&prefix);
        copy_small(&mut dst[4..], record);
        self.len = end;
        if (start ^ end) & !(CACHE_LINE - 1) != 0 {
            // Entered a new cache line: ask for the one after next. A writer feeds many
            // channels in turn, so the hardware prefetcher loses track of each buffer's
            // sequential stream, and every new line of a recycled segment (last held by
            // the consumer's core) was a stall (measured: ≈ 20 % of the CPU per record).
            prefetch_write(self.seg.as_ptr().wrapping_add(end + PREFETCH_AHEAD));
        }
        true
    }

    /// Forgets the written bytes so the segment can be filled again (after they were
    /// copied elsewhere, see the record writer's flush compaction).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The written bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.seg[..self.len]
    }

    /// Turns the buffer into shared, immutable bytes without copying; the segment returns
    /// to its pool when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

const CACHE_LINE: usize = 64;
const PREFETCH_AHEAD: usize = 2 * CACHE_LINE;

/// Hints the CPU to fetch the cache line at `p` for writing. The one `unsafe` of the
/// data plane: stable Rust has no safe prefetch, and the intrinsic is `unsafe` only
/// because of its target-feature attribute.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and never reads or writes memory as
    // far as the program can observe, whatever the address (here possibly past the
    // segment's end); SSE, which the intrinsic needs, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Copies `src` into `dst` (same length). Sizes up to 32 bytes use two fixed-size,
/// possibly overlapping, copies that compile to plain loads and stores instead of a
/// `memcpy` call, which for an 8-byte record costs more than the copy.
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    debug_assert_eq!(dst.len(), n);
    if (8..=16).contains(&n) {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..n].copy_from_slice(&src[n - 8..n]);
    } else if (16..=32).contains(&n) {
        dst[..16].copy_from_slice(&src[..16]);
        dst[n - 16..n].copy_from_slice(&src[n - 16..n]);
    } else if (4..8).contains(&n) {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..n]);
    } else {
        dst.copy_from_slice(src);
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.recycle(std::mem::take(&mut self.seg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buffers_return_on_drop_and_through_bytes() {
        let global = NetworkBufferPool::new(4, 1024);
        let pool = global.create_pool(1, 4).unwrap();
        let mut b = pool.try_request().unwrap().unwrap();
        assert_eq!(b.append(&[7u8; 2000]), 1024);
        assert!(b.is_full());
        let bytes = b.freeze();
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.outstanding(), 1);
        drop(slice);
        assert_eq!(pool.outstanding(), 0);
        drop(pool);
        assert_eq!(global.segments_in_use(), 0);
    }

    #[test]
    fn prefixed_append_copies_every_small_size_and_keeps_a_byte_spare() {
        let global = NetworkBufferPool::new(1, 1024);
        let pool = global.create_pool(1, 1).unwrap();
        let mut b = pool.try_request().unwrap().unwrap();
        let mut want = Vec::new();
        for n in 0..=40usize {
            let record: Vec<u8> = (0..n).map(|i| (n * 7 + i) as u8).collect();
            assert!(b.try_append_prefixed((n as u32).to_le_bytes(), &record));
            want.extend_from_slice(&(n as u32).to_le_bytes());
            want.extend_from_slice(&record);
        }
        assert_eq!(b.as_slice(), &want[..]);
        // Exactly filling the buffer is left to the spanning path.
        let rest = b.remaining() - 4;
        assert!(!b.try_append_prefixed([0; 4], &vec![1u8; rest]));
        assert!(b.try_append_prefixed([0; 4], &vec![1u8; rest - 1]));
        assert_eq!(b.remaining(), 1);
    }

    #[test]
    fn minimums_cannot_exceed_total() {
        let global = NetworkBufferPool::new(4, 1024);
        let _a = global.create_pool(3, 3).unwrap();
        assert!(matches!(
            global.create_pool(2, 2),
            Err(NetworkError::InsufficientBuffers {
                required: 5,
                total: 4
            })
        ));
    }

    #[test]
    fn excess_is_redistributed_when_pools_come_and_go() {
        let global = NetworkBufferPool::new(10, 1024);
        let a = global.create_pool(2, 100).unwrap();
        assert_eq!(a.size(), 10);
        let b = global.create_pool(2, 100).unwrap();
        assert_eq!(a.size() + b.size(), 10);
        assert_eq!(a.size(), 5);
        // a holds 10 buffers (its old share): b can only get its share as a recycles.
        let held: Vec<_> = (0..5).map(|_| a.try_request().unwrap().unwrap()).collect();
        let b_bufs: Vec<_> = (0..5).map(|_| b.try_request().unwrap().unwrap()).collect();
        assert!(b.try_request().unwrap().is_none());
        drop(held);
        drop(b_bufs);
        drop(b);
        assert_eq!(a.size(), 10);
        drop(a);
        assert_eq!(global.segments_in_use(), 0);
        assert_eq!(global.required_segments(), 0);
    }

    #[test]
    fn blocked_request_resumes_when_buffer_recycled() {
        let global = NetworkBufferPool::new(1, 1024);
        let pool = global.create_pool(1, 1).unwrap();
        let b = pool.request_blocking().unwrap();
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || p2.request_blocking().map(|b| b.capacity()));
        drop(b);
        assert_eq!(waiter.join().unwrap().unwrap(), 1024);
    }

    #[test]
    fn async_request_is_woken_by_recycle_and_by_destroy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let global = NetworkBufferPool::new(1, 1024);
            let pool = global.create_pool(1, 1).unwrap();
            let b = pool.request().await.unwrap();
            let p2 = pool.clone();
            let task = tokio::spawn(async move { p2.request().await.map(|b| b.len()) });
            tokio::task::yield_now().await;
            drop(b);
            assert_eq!(task.await.unwrap().unwrap(), 0);
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(usize, usize),
        Destroy(usize),
        Request(usize),
        DropBuffer(usize),
        Freeze(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..4, 0usize..8).prop_map(|(min, extra)| Op::Create(min, min + extra)),
            any::<usize>().prop_map(Op::Destroy),
            any::<usize>().prop_map(Op::Request),
            any::<usize>().prop_map(Op::DropBuffer),
            any::<usize>().prop_map(Op::Freeze),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]
        /// Every buffer returns to its pool, pools never exceed their entitlement by more
        /// than their old share, and memory never exceeds the total.
        #[test]
        fn every_buffer_returns_and_memory_is_bounded(ops in proptest::collection::vec(op(), 1..120)) {
            let total = 16;
            let global = NetworkBufferPool::new(total, 64);
            let mut pools: Vec<Arc<LocalBufferPool>> = Vec::new();
            let mut bufs: Vec<Buffer> = Vec::new();
            let mut frozen: Vec<Bytes> = Vec::new();
            for op in ops {
                match op {
                    Op::Create(min, max) => {
                        let before = global.required_segments();
                        match global.create_pool(min, max) {
                            Ok(p) => pools.push(p),
                            Err(NetworkError::InsufficientBuffers { .. }) => prop_assert!(before + min > total),
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Destroy(i) if !pools.is_empty() => { pools.remove(i % pools.len()); }
                    Op::Request(i) if !pools.is_empty() => {
                        if let Some(b) = pools[i % pools.len()].try_request().unwrap() { bufs.push(b); }
                    }
                    Op::DropBuffer(i) if !bufs.is_empty() => { bufs.swap_remove(i % bufs.len()); }
                    Op::Freeze(i) if !bufs.is_empty() => {
                        let b = bufs.swap_remove(i % bufs.len());
                        let bytes = b.freeze();
                        frozen.push(bytes.clone());
                        frozen.push(bytes);
                    }
                    _ => {}
                }
                prop_assert!(global.peak_allocated_segments() <= total);
                let sizes: usize = pools.iter().map(|p| p.size()).sum();
                prop_assert!(sizes <= total);
                for p in &pools { prop_assert!(p.size() >= p.min_size() && p.size() <= p.max_size()); }
            }
            // A pool whose minimum is free gets a buffer now.
            for p in &pools {
                if p.outstanding() == 0 && global.segments_in_use() < total {
                    // Someone may still hold more than their share; only check the pool is alive.
                    let _ = p.try_request().unwrap();
                }
            }
            drop(bufs);
            drop(frozen);
            for p in &pools { prop_assert_eq!(p.outstanding(), 0); }
            drop(pools);
            prop_assert_eq!(global.segments_in_use(), 0);
            prop_assert_eq!(global.num_pools(), 0);
        }
    }
}
