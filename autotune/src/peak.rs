//! The machine's FP32 FMA peak for the tuning report's "% of peak",
//! measured with the backend's FMA loop kernel ([`fma_peak_kernel`]).

use carbide_backend_cpu::{build_library, fma_peak_flops_per_iteration, fma_peak_kernel, Target};
use std::ffi::c_void;
use std::time::Instant;

type KernelFn = unsafe extern "C" fn(*const *mut c_void, *const i64, i64, i64);

/// Peak FP32 GFLOP/s of `threads` cores (the single-core peak times `threads`).
pub fn measure_fma_peak(target: &Target, threads: usize) -> Result<f64, String> {
    if !target.runs_on_host() {
        return Err(format!("target {} does not run on this machine", target.name()));
    }
    let kernel = fma_peak_kernel(target);
    let lib = build_library(std::slice::from_ref(&kernel), target).map_err(|e| e.to_string())?;
    let path = std::env::temp_dir().join(format!(
        "carbide-fma-peak-{}-{}.so",
        std::process::id(),
        crate::records::now_secs()
    ));
    std::fs::write(&path, &lib).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the library is the FMA loop generated above.
    let loaded = unsafe { libloading::Library::new(&path) };
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.map_err(|e| e.to_string())?;
    // SAFETY: the symbol has the kernel ABI's signature (see fma_peak_kernel).
    let f: KernelFn = unsafe {
        *loaded
            .get::<KernelFn>(kernel.call.entry.as_bytes())
            .map_err(|e| e.to_string())?
    };
    let run = |iters: i64| -> f64 {
        let mut out = vec![0f32; 1];
        let bufs = [out.as_mut_ptr() as *mut c_void];
        let params = [iters];
        let t = Instant::now();
        // SAFETY: bufs[0] holds a float for part 0, params[0] is the loop count.
        unsafe { f(bufs.as_ptr(), params.as_ptr(), 0, 1) };
        std::hint::black_box(&out);
        t.elapsed().as_secs_f64()
    };
    // Short runs (~2 ms, within one scheduler time slice), best of many:
    // on a shared machine most runs lose the core for a while, and the
    // fastest one is the undisturbed one. Long runs would all be disturbed
    // and understate the peak (the kernels are timed the same way).
    let mut iters: i64 = 1 << 10;
    while run(iters) < 0.0005 && iters < 1 << 34 {
        iters *= 2;
    }
    let iters = (iters as f64 * 0.002 / run(iters).max(1e-7)).max(1.0) as i64;
    let flops_per_run = iters as f64 * fma_peak_flops_per_iteration(target);
    // One core at a time: cores are alike.
    let best_secs = (0..200).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    let best = flops_per_run / best_secs / 1e9 * threads.max(1) as f64;
    Ok(best)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_backend_fma_loop_builds_and_runs() {
        let Some(t) = crate::tuner::tests::host_target() else {
            return;
        };
        let peak = super::measure_fma_peak(&t, 1).unwrap();
        assert!(peak.is_finite() && peak > 0.0, "{peak}");
    }
}
