//! Shared by the kernel benchmarks: build one lowered kernel into a shared
//! object, bind its buffers, and call its parts.

use carbide_backend_cpu::{build_library, LoweredKernel, Target};
use carbide_ir::kernel::BufferArg;
use std::ffi::c_void;

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

/// Bound buffers of one kernel call (pointers kept as integers so a bound
/// call can be shared with worker threads).
pub struct Bound {
    pub ptrs: Vec<usize>,
    pub params: Vec<i64>,
    _keep: Vec<Vec<u64>>,
}

impl Bound {
    /// Binds an entry that only takes the buffers `ptrs` and `params`.
    pub fn raw(ptrs: Vec<usize>, params: Vec<i64>) -> Bound {
        Bound {
            ptrs,
            params,
            _keep: vec![],
        }
    }
}

/// Binds `k`'s buffers: inputs and the output from the caller, packed
/// weights copied to aligned memory, scratch sized for `parts` parts.
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

/// Calls every part of `b` on its own (freshly spawned) thread.
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
