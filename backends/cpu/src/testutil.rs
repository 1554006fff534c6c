//! Test support: run a lowered kernel through a freshly built shared object
//! and compare it with the reference runtime on the same group.

use crate::{build_library, KernelGroup, LoweredKernel, Target};
use carbide_ir::kernel::BufferArg;
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{Node, Op, Tensor, TensorType, Value};
use rand::{Rng, SeedableRng};

pub fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

pub fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// Runs the group's nodes on the reference runtime.
pub fn reference(group: &KernelGroup, feeds: &[Tensor]) -> Tensor {
    let run_feeds: Vec<(String, Value)> = group
        .inputs
        .iter()
        .zip(feeds)
        .filter(|(gv, _)| gv.constant.is_none())
        .map(|(gv, t)| (gv.name.clone(), Value::Tensor(t.clone())))
        .collect();
    let out = carbide_runtime::Session::new(group.standalone_model())
        .run(run_feeds)
        .expect("reference run");
    match &out[0].1 {
        Value::Tensor(t) => t.clone(),
        other => panic!("reference produced {other:?}"),
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match t {
        Tensor::F32(a) => a.iter().copied().collect(),
        _ => panic!("not f32"),
    }
}

/// Builds `k` into a library, loads it and runs it over `feeds` with
/// `num_parts` parts (called one after another), returning the output.
pub fn run_native(
    k: &LoweredKernel,
    target: &Target,
    feeds: &[Tensor],
    out_shape: &[usize],
    num_parts: i64,
) -> Vec<f32> {
    let so = build_library(std::slice::from_ref(k), target).expect("build");
    let dir = crate::build::scratch_dir("test").unwrap();
    let path = dir.join("k.so");
    std::fs::write(&path, so).unwrap();
    let in_data: Vec<Vec<f32>> = feeds.iter().map(f32s).collect();
    let in_shapes: Vec<&[usize]> = feeds.iter().map(|t| t.shape()).collect();
    let mut out = vec![f32::NAN; out_shape.iter().product()];
    let mut keep: Vec<Vec<u64>> = Vec::new();
    let mut ptrs: Vec<*mut std::ffi::c_void> = Vec::new();
    for b in &k.call.buffers {
        let p: *mut std::ffi::c_void = match b {
            BufferArg::Input(i) => in_data[*i].as_ptr() as *mut _,
            BufferArg::Output(_) => out.as_mut_ptr() as *mut _,
            BufferArg::Packed(i) => {
                let bytes = &k.call.packed[*i];
                let mut v = vec![0u64; bytes.len().div_ceil(8)];
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len()) };
                keep.push(v);
                keep.last_mut().unwrap().as_mut_ptr() as *mut _
            }
            BufferArg::Scratch { bytes, per_part } => {
                let n = bytes.eval(&in_shapes, &[out_shape]).unwrap() as usize;
                let n = if *per_part { n * num_parts as usize } else { n };
                keep.push(vec![0u64; n.div_ceil(8) + 8]);
                keep.last_mut().unwrap().as_mut_ptr() as *mut _
            }
        };
        ptrs.push(p);
    }
    let params: Vec<i64> = k
        .call
        .params
        .iter()
        .map(|e| e.eval(&in_shapes, &[out_shape]).unwrap())
        .collect();
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        type Entry = unsafe extern "C" fn(*const *mut std::ffi::c_void, *const i64, i64, i64);
        let f: libloading::Symbol<Entry> = lib.get(k.call.entry.as_bytes()).unwrap();
        for part in 0..num_parts {
            f(ptrs.as_ptr(), params.as_ptr(), part, num_parts);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Lowers `group`, runs it natively and checks it against the reference:
/// |native - ref| <= tol * max(1, |ref|) element by element.
pub fn check(group: &KernelGroup, target: &Target, feeds: &[Tensor], tol: f32) -> crate::LoweredKernel {
    check_with(group, target, None, feeds, tol)
}

/// [`check`] with an explicit schedule (`None`: the default).
pub fn check_with(
    group: &KernelGroup,
    target: &Target,
    schedule: Option<&carbide_ir::kernel::Schedule>,
    feeds: &[Tensor],
    tol: f32,
) -> crate::LoweredKernel {
    let k = crate::lower(group, target, schedule)
        .expect("lower")
        .expect("group should be supported");
    let want = reference(group, feeds);
    for parts in [1, 3] {
        let got = run_native(&k, target, feeds, want.shape(), parts);
        let want = f32s(&want);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{}: element {i}: native {g} vs reference {w} ({} parts)",
                k.call.entry,
                parts
            );
        }
    }
    k
}

pub fn tt(shape: &[usize]) -> TensorType {
    TensorType::new(carbide_ir::DType::F32, carbide_ir::types::shape_of(shape))
}

fn c_floats(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 16);
    for x in v {
        s.push_str(&format!("{:e}f,", x));
    }
    if v.is_empty() {
        s.push('0');
    }
    s
}

/// Cross-compiles `k` (an aarch64-neon kernel) with a C driver that embeds
/// `feeds`, runs it under qemu-aarch64 and returns the output. `None` (with
/// the reason printed) when the cross tools are missing and
/// `CARBIDE_REQUIRE_DATA` is unset; a panic when it is set.
pub fn run_qemu(k: &LoweredKernel, feeds: &[Tensor], out_shape: &[usize], num_parts: i64) -> Option<Vec<f32>> {
    let target = Target::parse("aarch64-neon").unwrap();
    let have = |p: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
        let why = "aarch64-linux-gnu-gcc or qemu-aarch64 missing (scripts/setup.sh installs them)";
        if std::env::var_os("CARBIDE_REQUIRE_DATA").is_some() {
            panic!("{why}");
        }
        eprintln!("skipping the NEON run: {why}");
        return None;
    }
    let in_shapes: Vec<&[usize]> = feeds.iter().map(|t| t.shape()).collect();
    let mut src = crate::build::library_source(std::slice::from_ref(k), &target).unwrap();
    src.push_str("\n#include <stdio.h>\n#include <stdlib.h>\n");
    let mut binds = Vec::new();
    for (i, b) in k.call.buffers.iter().enumerate() {
        match b {
            BufferArg::Input(j) => {
                src.push_str(&format!(
                    "static float buf{i}[] = {{{}}};\n",
                    c_floats(&f32s(&feeds[*j]))
                ));
            }
            BufferArg::Output(_) => {
                src.push_str(&format!(
                    "static float buf{i}[{}];\n",
                    out_shape.iter().product::<usize>().max(1)
                ));
            }
            BufferArg::Packed(j) => {
                let bytes = &k.call.packed[*j];
                let v: Vec<f32> = bytes
                    .chunks(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                src.push_str(&format!(
                    "static float buf{i}[] __attribute__((aligned(64))) = {{{}}};\n",
                    c_floats(&v)
                ));
            }
            BufferArg::Scratch { bytes, per_part } => {
                let n = bytes.eval(&in_shapes, &[out_shape]).unwrap() as usize;
                let n = if *per_part { n * num_parts as usize } else { n };
                src.push_str(&format!(
                    "static float buf{i}[{}] __attribute__((aligned(64)));\n",
                    n.div_ceil(4) + 16
                ));
            }
        }
        binds.push(format!("buf{i}"));
    }
    let out_slot = k
        .call
        .buffers
        .iter()
        .position(|b| matches!(b, BufferArg::Output(0)))
        .unwrap();
    let params: Vec<String> = k
        .call
        .params
        .iter()
        .map(|e| e.eval(&in_shapes, &[out_shape]).unwrap().to_string())
        .collect();
    let n_out: usize = out_shape.iter().product();
    src.push_str(&format!(
        "int main(void) {{\n  void *bufs[] = {{{}}};\n  static const int64_t params[] = {{{}}};\n  for (int64_t part = 0; part < {num_parts}; part++) {}(bufs, params, part, {num_parts});\n  for (int i = 0; i < {n_out}; i++) printf(\"%.9g\\n\", buf{out_slot}[i]);\n  return 0;\n}}\n",
        binds.join(", "),
        if params.is_empty() { "0".to_string() } else { params.join(", ") },
        k.call.entry
    ));
    let (dir, exe) = crate::build::compile(&src, &target, &["-static"], "driver").expect("cross-compile");
    let out = std::process::Command::new("qemu-aarch64")
        .arg(&exe)
        .output()
        .expect("qemu-aarch64 runs");
    assert!(
        out.status.success(),
        "qemu run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse::<f32>().unwrap())
            .collect(),
    )
}

/// Lowers `group` for aarch64-neon and checks the qemu run against the reference.
pub fn check_neon(group: &KernelGroup, feeds: &[Tensor], tol: f32) {
    check_neon_with(group, None, feeds, tol)
}

/// [`check_neon`] with an explicit schedule (`None`: the default).
pub fn check_neon_with(
    group: &KernelGroup,
    schedule: Option<&carbide_ir::kernel::Schedule>,
    feeds: &[Tensor],
    tol: f32,
) {
    let target = Target::parse("aarch64-neon").unwrap();
    let k = crate::lower(group, &target, schedule)
        .expect("lower")
        .expect("supported");
    let want = reference(group, feeds);
    let Some(got) = run_qemu(&k, feeds, want.shape(), 2) else {
        return;
    };
    let want = f32s(&want);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "neon element {i}: {g} vs {w}");
    }
}
