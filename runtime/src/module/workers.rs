//! The threads that run a kernel's parts.
//!
//! A kernel call fans out to `parts` concurrent calls of its entry point.
//! rayon's `scope`/`spawn` boxes every spawned closure and its injector
//! allocates queue blocks, so a steady-state run would allocate; these
//! persistent workers take a call through a mutex-guarded slot and claim
//! parts from an atomic counter, which allocates nothing. Between calls a
//! worker spins briefly before sleeping (as rayon's do), since a run's
//! kernels follow each other within microseconds and a futex wake-up per
//! kernel costs more than a small kernel.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker watches for the next call before sleeping.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);

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
// SAFETY: the pointers stay valid while the job is posted: `WorkerPool::call`
// only returns after every worker has left the job.
unsafe impl Send for Job {}

struct Slot {
    /// Bumped for every posted job, so a worker runs each job at most once.
    generation: u64,
    job: Option<Job>,
    shutdown: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// `Slot::generation`, readable without the lock (for spinning workers).
    posted: AtomicU64,
    /// Workers asleep on `wake`: the poster only notifies when there are some.
    sleepers: AtomicUsize,
    /// The next part to claim, the parts finished, and the workers inside the current job.
    next: AtomicUsize,
    done: AtomicUsize,
    active: AtomicUsize,
}

/// `threads - 1` worker threads; the calling thread is the last participant.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    /// One call at a time: concurrent runs of a module take turns per kernel.
    dispatch: Mutex<()>,
    threads: usize,
    handles: Vec<JoinHandle<()>>,
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
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
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
    /// there are workers) and returns when all parts have finished.
    ///
    /// # Safety
    /// `buffers` and `params` must satisfy the kernel's call contract for
    /// every part.
    pub(crate) unsafe fn call(&self, entry: KernelFn, buffers: &[*mut c_void], params: &[i64], parts: usize) {
        let parts = parts.max(1);
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
        {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            s.next.store(0, Ordering::SeqCst);
            s.done.store(0, Ordering::SeqCst);
            slot.generation += 1;
            slot.job = Some(job);
            s.posted.store(slot.generation, Ordering::Release);
        }
        // A worker increments `sleepers` under the lock before it waits, so
        // one that missed the new generation is counted here.
        if s.sleepers.load(Ordering::Acquire) > 0 {
            s.wake.notify_all();
        }
        run_parts(s, job);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < parts {
            backoff(&mut spins);
        }
        // Withdraw the job; a worker that has not picked it up yet never will,
        // and the ones inside it finish claiming (finding nothing) first.
        let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.job = None;
        drop(slot);
        while s.active.load(Ordering::Acquire) > 0 {
            backoff(&mut spins);
        }
    }
}

fn backoff(spins: &mut u32) {
    if *spins < 2000 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Claims and runs parts of `job` until none are left.
fn run_parts(s: &Shared, job: Job) {
    loop {
        let part = s.next.fetch_add(1, Ordering::AcqRel);
        if part >= job.parts {
            return;
        }
        // SAFETY: the poster guaranteed the call contract (`WorkerPool::call`).
        unsafe { (job.entry)(job.buffers, job.params, part as i64, job.parts as i64) };
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let spin_start = Instant::now();
        let mut spins = 0u32;
        while s.posted.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && spin_start.elapsed() > SPIN_BEFORE_SLEEP {
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
                    if let Some(job) = slot.job {
                        // Under the lock, so the poster cannot withdraw the job unseen.
                        s.active.fetch_add(1, Ordering::AcqRel);
                        break Some(job);
                    }
                    // Missed a job the others finished: watch for the next one.
                    break None;
                }
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                slot = s.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
            }
        };
        let Some(job) = job else { continue };
        run_parts(s, job);
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.slot.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        // Spinning workers see the bump and then the shutdown flag.
        self.shared.posted.fetch_add(1, Ordering::AcqRel);
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
}
