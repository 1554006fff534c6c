//! Shared harness of the kernel benchmarks: build and load a lowered
//! kernel, bind its buffers, run its parts on threads, and measure the
//! machine's FMA peak the benchmarks report against.

use carbide_backend_cpu::{build_library, LoweredKernel, Target};
use carbide_ir::kernel::BufferArg;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub type Entry = unsafe extern "C" fn(*const *mut c_void, *const i64, i64, i64);

pub struct Loaded {
    _lib: libloading::Library,
    pub entry: Entry,
    _dir: std::path::PathBuf,
}

pub fn load(k: &LoweredKernel, target: &Target) -> Loaded {
    let so = build_library(std::slice::from_ref(k), target).expect("build");
    let dir = std::env::temp_dir().join(format!("carbide-bench-{}-{}", std::process::id(), k.call.entry));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.so");
    std::fs::write(&path, so).unwrap();
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let entry: Entry = *lib.get::<Entry>(k.call.entry.as_bytes()).unwrap();
        Loaded {
            _lib: lib,
            entry,
            _dir: dir,
        }
    }
}

/// Bound buffers of one kernel call; `run` calls every part on its own thread.
pub struct Bound {
    pub ptrs: Vec<usize>,
    pub params: Vec<i64>,
    _keep: Vec<Vec<u64>>,
}

pub fn bind(
    k: &LoweredKernel,
    inputs: &mut [Vec<f32>],
    in_shapes: &[&[usize]],
    out: &mut [f32],
    out_shape: &[usize],
    parts: i64,
) -> Bound {
    let mut keep: Vec<Vec<u64>> = Vec::new();
    let mut ptrs = Vec::new();
    for b in &k.call.buffers {
        let p = match b {
            BufferArg::Input(i) => inputs[*i].as_mut_ptr() as usize,
            BufferArg::Output(_) => out.as_mut_ptr() as usize,
            BufferArg::Packed(i) => {
                let bytes = &k.call.packed[*i];
                let mut v = vec![0u64; bytes.len().div_ceil(8)];
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len()) };
                keep.push(v);
                keep.last_mut().unwrap().as_mut_ptr() as usize
            }
            BufferArg::Scratch { bytes, per_part } => {
                let n =
                    bytes.eval(in_shapes, &[out_shape]).unwrap() as usize * if *per_part { parts as usize } else { 1 };
                keep.push(vec![0u64; n.div_ceil(8) + 8]);
                keep.last_mut().unwrap().as_mut_ptr() as usize
            }
        };
        ptrs.push(p);
    }
    let params = k
        .call
        .params
        .iter()
        .map(|e| e.eval(in_shapes, &[out_shape]).unwrap())
        .collect();
    Bound {
        ptrs,
        params,
        _keep: keep,
    }
}

pub fn run(l: &Loaded, b: &Bound, parts: i64) {
    let ptrs: Vec<*mut c_void> = b.ptrs.iter().map(|&p| p as *mut c_void).collect();
    let (pp, prm) = (ptrs.as_ptr() as usize, b.params.as_ptr() as usize);
    let f = l.entry;
    std::thread::scope(|s| {
        for part in 1..parts {
            s.spawn(move || unsafe { f(pp as *const *mut c_void, prm as *const i64, part, parts) });
        }
        unsafe { f(pp as *const *mut c_void, prm as *const i64, 0, parts) };
    });
}

/// One persistent worker for part 1 of 2, claimed like the runtime's
/// workers do: whoever claims a call's part 1 first runs it, the worker when
/// it sees the call or the caller once its part 0 is done, so a worker that
/// the shared machine has descheduled never stalls the caller.
pub struct Helper {
    shared: Arc<HelperShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct HelperShared {
    /// Bumped per call; part 1 of call `g` is claimed by moving `claimed`
    /// from `g - 1` to `g`.
    generation: AtomicUsize,
    claimed: AtomicUsize,
    done: AtomicUsize,
    /// Entry point, buffer pointers and parameters of the current call.
    job: [AtomicUsize; 3],
    stop: AtomicBool,
}

impl HelperShared {
    fn claim(&self, g: usize) -> bool {
        self.claimed
            .compare_exchange(g - 1, g, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Part 1 of the current call (claimed).
    fn run_part_one(&self) {
        let f: Entry = unsafe { std::mem::transmute::<usize, Entry>(self.job[0].load(Ordering::Acquire)) };
        let (pp, prm) = (self.job[1].load(Ordering::Acquire), self.job[2].load(Ordering::Acquire));
        unsafe { f(pp as *const *mut c_void, prm as *const i64, 1, 2) };
    }
}

impl Default for Helper {
    fn default() -> Helper {
        Helper::new()
    }
}

impl Helper {
    pub fn new() -> Helper {
        let shared = Arc::new(HelperShared::default());
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut idle) = (0, 0u32);
            while !sh.stop.load(Ordering::Acquire) {
                let now = sh.generation.load(Ordering::Acquire);
                if now == seen {
                    // Spin briefly, then let the other thread have the core.
                    idle = idle.saturating_add(1);
                    if idle < 2000 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                    continue;
                }
                (seen, idle) = (now, 0);
                if sh.claim(now) {
                    sh.run_part_one();
                    sh.done.store(now, Ordering::Release);
                }
            }
        });
        Helper {
            shared,
            thread: Some(thread),
        }
    }

    /// Runs the kernel with `parts` (1 or 2) parts.
    pub fn run(&self, l: &Loaded, ptrs: &[*mut c_void], b: &Bound, parts: i64) {
        let (pp, prm) = (ptrs.as_ptr(), b.params.as_ptr());
        if parts == 1 {
            unsafe { (l.entry)(pp, prm, 0, 1) };
            return;
        }
        let sh = &*self.shared;
        sh.job[0].store(l.entry as usize, Ordering::Release);
        sh.job[1].store(pp as usize, Ordering::Release);
        sh.job[2].store(prm as usize, Ordering::Release);
        let g = sh.generation.fetch_add(1, Ordering::AcqRel) + 1;
        unsafe { (l.entry)(pp, prm, 0, 2) };
        if sh.claim(g) {
            sh.run_part_one();
            return;
        }
        while sh.done.load(Ordering::Acquire) != g {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Measures the FMA peak in GFLOP/s with `parts` threads (the backend's
/// FMA loop kernel on every thread).
pub fn fma_peak(target: &Target, parts: i64) -> f64 {
    let k = carbide_backend_cpu::fma_peak_kernel(target);
    let l = load(&k, target);
    // Short runs, best of many: on a shared machine the fastest run is the
    // one that had its cores to itself.
    let iters: i64 = 200_000;
    let mut out = vec![0f32; 8];
    let b = Bound {
        ptrs: vec![out.as_mut_ptr() as usize],
        params: vec![iters],
        _keep: vec![],
    };
    run(&l, &b, parts);
    let secs = best_secs(50, || run(&l, &b, parts));
    std::hint::black_box(&out);
    iters as f64 * carbide_backend_cpu::fma_peak_flops_per_iteration(target) * parts as f64 / secs / 1e9
}

/// Wall times in seconds of `runs` calls of `f`, sorted.
fn sorted_secs(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times
}

/// Fastest wall time in seconds of `runs` calls of `f`.
pub fn best_secs(runs: usize, f: impl FnMut()) -> f64 {
    sorted_secs(runs, f)[0]
}

/// Median wall time in seconds of `runs` calls of `f`.
pub fn median_secs(runs: usize, f: impl FnMut()) -> f64 {
    sorted_secs(runs, f)[runs / 2]
}

/// Measures and prints the FMA peak on 1 and 2 threads.
pub fn print_fma_peaks(target: &Target) -> [f64; 2] {
    let peaks = [fma_peak(target, 1), fma_peak(target, 2)];
    println!(
        "measured FMA peak ({}): {:.1} GFLOP/s on 1 thread, {:.1} on 2",
        target.name(),
        peaks[0],
        peaks[1]
    );
    peaks
}
