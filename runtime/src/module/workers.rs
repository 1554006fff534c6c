//! The threads that run a kernel's parts.
//!
//! A kernel call fans out to `parts` concurrent calls of its entry point.
//! rayon's `scope`/`spawn` boxes every spawned closure and its injector
//! allocates queue blocks, so a steady-state run would allocate; these
//! persistent workers take a call through a mutex-guarded slot and claim
//! parts from an atomic word, which allocates nothing.
//!
//! The machine may be shared (other processes on the cores), so the pool
//! never makes the caller wait for a worker that has not started: the caller
//! claims parts too, and a part nobody has claimed yet is done by whoever
//! gets to it first, so a call on a busy machine degrades to the calling
//! thread doing all the parts. Claims carry the call's generation, so a late
//! worker can never take a part of a later call and the caller never waits
//! for workers that merely looked at a job. Between calls a worker watches
//! for the next one, first spinning, then yielding its core to whatever
//! else is runnable (so an idle worker does not steal time from the caller
//! or other processes on a loaded machine), and finally sleeps.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker watches for the next call before sleeping: a
/// run's parallel steps follow each other within microseconds, but a single
/// threaded step or a host step between them can take a millisecond, and a
/// futex wake-up per kernel costs more than a small kernel.
const WATCH_BEFORE_SLEEP: Duration = Duration::from_millis(1);

/// Busy-wait iterations before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1000;

/// The C entry point of a generated kernel (see [`carbide_ir::kernel`]).
pub(crate) type KernelFn = unsafe extern "C" fn(*const *mut c_void, *const i64, i64, i64);

/// One kernel call, shared with the workers while it runs.
#[derive(Clone, Copy)]
struct Job {
    entry: KernelFn,
    buffers: *const *mut c_void,
    params: *const i64,
    parts: usize,
}
// SAFETY: the pointers are only dereferenced by a part claimed under the
// job's generation, and `WorkerPool::call` returns only after every claimed
// part has finished; once all parts are claimed no claim can succeed.
unsafe impl Send for Job {}

struct Slot {
    /// Bumped for every posted job (its low 32 bits tag the claims).
    generation: u64,
    job: Option<Job>,
    shutdown: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// `Slot::generation`, readable without the lock (for watching workers).
    posted: AtomicU64,
    /// Workers asleep on `wake`: the poster only notifies when there are some.
    sleepers: AtomicUsize,
    /// The claim word: the current job's generation (high 32 bits) and the
    /// next unclaimed part (low 32 bits).
    claim: AtomicU64,
    /// Parts of the current job finished.
    done: AtomicUsize,
}

/// `threads - 1` worker threads; the calling thread is the last participant.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    /// One call at a time: concurrent runs of a module take turns per kernel.
    dispatch: Mutex<()>,
    threads: usize,
    handles: Vec<JoinHandle<()>>,
}

fn claim_word(generation: u64, part: usize) -> u64 {
    (generation << 32) | part as u64
}

impl WorkerPool {
    pub(crate) fn new(threads: usize) -> std::io::Result<WorkerPool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                generation: 0,
                job: None,
                shutdown: false,
            }),
            wake: Condvar::new(),
            posted: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let for_worker = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("carbide-worker-{i}"))
                .spawn(move || worker(&for_worker));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop the ones already started before reporting.
                    drop(WorkerPool {
                        shared,
                        dispatch: Mutex::new(()),
                        threads: i,
                        handles,
                    });
                    return Err(e);
                }
            }
        }
        Ok(WorkerPool {
            shared,
            dispatch: Mutex::new(()),
            threads,
            handles,
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `entry` once for each part in `0..parts` (concurrently when
    /// there are workers) and returns when all parts have finished. One
    /// part runs on the calling thread with no handshake at all.
    ///
    /// # Safety
    /// `buffers` and `params` must satisfy the kernel's call contract for
    /// every part.
    pub(crate) unsafe fn call(&self, entry: KernelFn, buffers: &[*mut c_void], params: &[i64], parts: usize) {
        // The claim word keeps the part counter in 32 bits.
        let parts = parts.clamp(1, u32::MAX as usize);
        if parts == 1 || self.handles.is_empty() {
            for part in 0..parts {
                entry(buffers.as_ptr(), params.as_ptr(), part as i64, parts as i64);
            }
            return;
        }
        let _turn = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let job = Job {
            entry,
            buffers: buffers.as_ptr(),
            params: params.as_ptr(),
            parts,
        };
        let generation = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.generation += 1;
            let generation = slot.generation & u64::from(u32::MAX);
            // Every part of the previous job finished before its call returned,
            // so nobody adds to `done` until a part of this job is claimed.
            s.done.store(0, Ordering::SeqCst);
            s.claim.store(claim_word(generation, 0), Ordering::SeqCst);
            slot.job = Some(job);
            s.posted.store(slot.generation, Ordering::Release);
            generation
        };
        // A worker increments `sleepers` under the lock before it waits, so
        // one that missed the new generation is counted here.
        if s.sleepers.load(Ordering::Acquire) > 0 {
            s.wake.notify_all();
        }
        run_parts(s, generation, job);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < parts {
            backoff(&mut spins);
        }
    }
}

fn backoff(spins: &mut u32) {
    if *spins < SPINS_BEFORE_YIELD {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Claims and runs parts of `job` (posted as `generation`) until none are
/// left or a later job replaced it.
fn run_parts(s: &Shared, generation: u64, job: Job) {
    let mut word = s.claim.load(Ordering::Acquire);
    loop {
        if word >> 32 != generation {
            return;
        }
        let part = (word & u64::from(u32::MAX)) as usize;
        if part >= job.parts {
            return;
        }
        match s
            .claim
            .compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: the part was claimed under the job's generation, so the
                // poster is still waiting for it (`WorkerPool::call`).
                unsafe { (job.entry)(job.buffers, job.params, part as i64, job.parts as i64) };
                s.done.fetch_add(1, Ordering::AcqRel);
                word = s.claim.load(Ordering::Acquire);
            }
            Err(now) => word = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let watch_start = Instant::now();
        let mut spins = 0u32;
        while s.posted.load(Ordering::Acquire) == seen {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // Yield rather than spin: on a loaded machine the core goes to
            // whoever else is runnable, on an idle one this returns at once.
            std::thread::yield_now();
            if watch_start.elapsed() > WATCH_BEFORE_SLEEP {
                break;
            }
        }
        let job = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if slot.shutdown {
                    return;
                }
                if slot.generation != seen {
                    seen = slot.generation;
                    break slot.job.map(|job| (seen & u64::from(u32::MAX), job));
                }
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                slot = s.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
            }
        };
        if let Some((generation, job)) = job {
            run_parts(s, generation, job);
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        {
            let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.shutdown = true;
            slot.generation += 1;
            // Watching workers see the bump and then the shutdown flag.
            self.shared.posted.store(slot.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HITS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

    unsafe extern "C" fn count_part(_b: *const *mut c_void, p: *const i64, part: i64, parts: i64) {
        assert_eq!(*p, 7);
        assert!(part < parts);
        HITS[part as usize].fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn every_part_runs_exactly_once_per_call() {
        let pool = WorkerPool::new(3).unwrap();
        for _ in 0..200 {
            unsafe { pool.call(count_part, &[], &[7], 5) };
        }
        for (i, h) in HITS.iter().enumerate() {
            assert_eq!(h.load(Ordering::SeqCst), if i < 5 { 200 } else { 0 }, "part {i}");
        }
    }

    /// `params[0]` is the address of the call's `[AtomicU64; 16]` tally.
    unsafe extern "C" fn tally_part(_b: *const *mut c_void, p: *const i64, part: i64, parts: i64) {
        assert!(part < parts && parts <= 16);
        let tally = &*(*p as usize as *const [AtomicU64; 16]);
        tally[part as usize].fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn concurrent_callers_with_varying_part_counts_run_each_part_once() {
        let pool = WorkerPool::new(2).unwrap();
        std::thread::scope(|scope| {
            for caller in 0..2usize {
                let pool = &pool;
                scope.spawn(move || {
                    for round in 0..300usize {
                        let parts = 1 + (round * 7 + caller * 3) % 16;
                        let tally: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
                        let params = [&tally as *const _ as usize as i64];
                        unsafe { pool.call(tally_part, &[], &params, parts) };
                        for (i, t) in tally.iter().enumerate() {
                            assert_eq!(t.load(Ordering::SeqCst), u64::from(i < parts), "part {i} of {parts}");
                        }
                    }
                });
            }
        });
    }
}
