//! Cross-target artifacts: compiling for a CPU other than this one writes a
//! complete artifact without ever loading its kernels, loading it here is
//! the clear wrong-CPU error, and (with Debian's aarch64 cross gcc and
//! qemu-user) a whole aarch64-neon artifact runs under qemu and matches the
//! reference runtime.
//!
//! The qemu run covers models whose steps are all generated kernels or
//! shape-only aliases (zoo `mlp`, the example `tiny_cnn`, zoo
//! `mobilenet_v2`; zoo resnet18/50 qualify too but take a minute or more under
//! qemu): a full aarch64 Carbide runtime would need a Rust aarch64
//! toolchain, so a small C driver (below) plays the runtime's part, calling
//! each kernel of the artifact's library in step order with the buffers,
//! parameters and part counts the Rust side lays out from the manifest.

mod common;

use carbide::compile::{compile_artifact, CompileOptions};
use carbide::ir::kernel::{BufferArg, ParamExpr};
use carbide::ir::{Dim, Tensor, TensorType, Value};
use carbide::runtime::artifact::{self, ArtifactError};
use carbide::runtime::Step;
use carbide::Module;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn tiny_cnn() -> carbide::ir::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example/tiny_cnn.onnx");
    carbide::load_model(&path).expect("tiny_cnn loads")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Whether the aarch64 cross tools are here; without them a test is
/// skipped, unless CARBIDE_REQUIRE_DATA=1 (scripts/test.sh), where it fails.
fn have_cross_tools(need_qemu: bool) -> bool {
    let ok = on_path("aarch64-linux-gnu-gcc") && (!need_qemu || on_path("qemu-aarch64"));
    if !ok {
        let why = "aarch64-linux-gnu-gcc or qemu-aarch64 missing (scripts/setup.sh installs them)";
        if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
    }
    ok
}

fn neon() -> CompileOptions {
    CompileOptions {
        target: "aarch64-neon".into(),
        ..Default::default()
    }
}

#[test]
fn aarch64_artifact_is_written_on_any_host_and_refused_by_another_cpu() {
    if !have_cross_tools(false) {
        return;
    }
    let (bytes, report) = compile_artifact(&tiny_cnn(), &neon()).expect("cross-compiles");
    assert_eq!(report.target, "aarch64-neon");
    assert!(report.kernels > 0, "{report:?}");
    let sections = artifact::decode(&bytes).expect("a well-formed artifact");
    assert_eq!(sections.manifest.target.arch, "aarch64");
    // The library is an aarch64 ELF shared object (e_machine 183 = EM_AARCH64).
    assert_eq!(&sections.library[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([sections.library[18], sections.library[19]]), 183);
    if std::env::consts::ARCH != "aarch64" {
        match Module::from_bytes(&bytes) {
            Err(e @ ArtifactError::WrongCpu { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("aarch64") && msg.contains("recompile"), "{msg}");
            }
            Err(e) => panic!("expected the wrong-CPU error, got: {e}"),
            Ok(_) => panic!("an aarch64 artifact loaded on {}", std::env::consts::ARCH),
        }
    }
}

#[test]
fn native_artifact_bytes_load_and_match_the_compiled_module() {
    let model = tiny_cnn();
    let opts = CompileOptions::default();
    let (bytes, report) = compile_artifact(&model, &opts).expect("compiles");
    let loaded = Module::from_bytes(&bytes).expect("loads");
    assert_eq!(loaded.target().name, report.target);
    // The loaded module writes the same bytes back: one writer for both paths.
    assert_eq!(loaded.to_bytes().expect("re-encodes"), bytes);
    let direct = carbide::compile(&model, &opts).expect("compiles");
    let image = Tensor::from_f32s((0..2 * 3 * 32 * 32).map(|i| ((i % 97) as f32) / 97.0).collect())
        .reshaped(&[2, 3, 32, 32])
        .unwrap();
    let feeds = || vec![("image".to_string(), Value::Tensor(image.clone()))];
    assert_eq!(loaded.run(feeds()).unwrap(), direct.run(feeds()).unwrap());
}

/// The kernel driver run under qemu. It reads a plan file (little-endian
/// i64 words): the buffers (size, whether initial bytes follow, the bytes
/// padded to 8), the calls (entry name, buffer ids, parameters, parts) and
/// the buffers to write out; it dlopens the library and makes the calls.
const DRIVER_C: &str = r#"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void (*kernel_fn)(void *const *, const int64_t *, int64_t, int64_t);
static const int64_t *p;
static int64_t next(void) { return *p++; }
int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: driver LIB PLAN OUT\n"); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
  FILE *f = fopen(argv[2], "rb");
  if (!f) { perror("plan"); return 1; }
  fseek(f, 0, SEEK_END); long len = ftell(f); fseek(f, 0, SEEK_SET);
  int64_t *plan = malloc(len);
  if (fread(plan, 1, len, f) != (size_t)len) { perror("plan"); return 1; }
  fclose(f);
  p = plan;
  int64_t nbufs = next();
  void **bufs = calloc(nbufs, sizeof(void *));
  int64_t *sizes = calloc(nbufs, sizeof(int64_t));
  for (int64_t i = 0; i < nbufs; i++) {
    sizes[i] = next();
    int64_t init = next();
    bufs[i] = aligned_alloc(64, (sizes[i] + 63) / 64 * 64 + 64);
    memset(bufs[i], 0, (sizes[i] + 63) / 64 * 64 + 64);
    if (init) { memcpy(bufs[i], p, sizes[i]); p += (sizes[i] + 7) / 8; }
  }
  int64_t ncalls = next();
  for (int64_t c = 0; c < ncalls; c++) {
    int64_t name_len = next();
    char name[256] = {0};
    memcpy(name, p, name_len < 255 ? name_len : 255); p += (name_len + 7) / 8;
    kernel_fn fn = (kernel_fn)dlsym(lib, name);
    if (!fn) { fprintf(stderr, "dlsym %s: %s\n", name, dlerror()); return 1; }
    int64_t nargs = next();
    void *args[64];
    for (int64_t a = 0; a < nargs; a++) args[a] = bufs[next()];
    int64_t nparams = next();
    const int64_t *params = p; p += nparams;
    int64_t parts = next();
    for (int64_t part = 0; part < parts; part++) fn(args, params, part, parts);
  }
  FILE *out = fopen(argv[3], "wb");
  int64_t nout = next();
  for (int64_t o = 0; o < nout; o++) { int64_t b = next(); fwrite(bufs[b], 1, sizes[b], out); }
  fclose(out);
  return 0;
}
"#;

/// Lays out the buffers and calls of an all-kernel artifact for the driver.
struct Plan {
    words: Vec<i64>,
    calls: Vec<i64>,
    buffers: usize,
    /// Per value name: its buffer and shape.
    values: HashMap<String, (usize, Vec<usize>)>,
}

impl Plan {
    fn buffer(&mut self, bytes: usize, init: Option<&[u8]>) -> usize {
        self.words.push(bytes as i64);
        self.words.push(init.is_some() as i64);
        if let Some(b) = init {
            for chunk in b.chunks(8) {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                self.words.push(i64::from_le_bytes(w));
            }
        }
        self.buffers += 1;
        self.buffers - 1
    }

    fn tensor(&mut self, name: &str, t: &Tensor) {
        let bytes = t.to_le_bytes().expect("numeric tensor");
        let id = self.buffer(bytes.len(), Some(&bytes));
        self.values.insert(name.to_string(), (id, t.shape().to_vec()));
    }
}

fn bind(ty: &TensorType, shape: &[usize], syms: &mut HashMap<String, usize>) {
    for (d, &n) in ty.shape.iter().flatten().zip(shape) {
        if let Dim::Sym(s) = d {
            syms.insert(s.clone(), n);
        }
    }
}

fn resolve(ty: &TensorType, syms: &HashMap<String, usize>) -> Vec<usize> {
    ty.shape
        .iter()
        .flatten()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Sym(s) => syms[s],
            Dim::Unknown => panic!("a kernel output dim is unknown"),
        })
        .collect()
}

/// Runs an aarch64 artifact's kernels under qemu; returns the graph outputs
/// as f32 vectors, or an error naming what the driver does not cover.
/// `tag` names the scratch folder (tests run in parallel threads).
fn run_under_qemu(
    tag: &str,
    bytes: &[u8],
    feeds: &[(String, Tensor)],
    parts_cap: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let sections = artifact::decode(bytes).map_err(|e| e.to_string())?;
    let m = &sections.manifest;
    let graph = &m.model.graph;
    let mut plan = Plan {
        words: Vec::new(),
        calls: Vec::new(),
        buffers: 0,
        values: HashMap::new(),
    };
    let mut syms = HashMap::new();
    for (name, t) in feeds {
        if let Some(ty) = graph
            .inputs
            .iter()
            .find(|i| &i.name == name)
            .and_then(|i| i.ty.as_tensor())
        {
            bind(ty, t.shape(), &mut syms);
        }
        plan.tensor(name, t);
    }
    for w in &m.weights {
        let raw = artifact::blob(sections.data, &w.blob, &w.name).map_err(|e| e.to_string())?;
        let t = Tensor::from_le_bytes(w.dtype, &w.shape, raw).map_err(|e| e.to_string())?;
        plan.tensor(&w.name, &t);
    }
    let mut packed = m.packed.iter();
    let mut n_calls = 0;
    for (i, step) in m.steps.iter().enumerate() {
        match step {
            Step::Host { node } => {
                return Err(format!(
                    "step {i} runs node '{}' ({}) on the host, which the qemu driver does not cover",
                    graph.nodes[*node].name,
                    graph.nodes[*node].op.op_type()
                ))
            }
            Step::Alias { node } => {
                // The output shares the input's bytes under the node's output shape.
                let n = &graph.nodes[*node];
                let (id, shape) = plan.values[&n.inputs[0]].clone();
                let zeros = Tensor::zeros(carbide::ir::DType::F32, &shape).unwrap();
                let mut ins: Vec<Option<Value>> = vec![Some(Value::Tensor(zeros))];
                for extra in &n.inputs[1..] {
                    let w = m
                        .weights
                        .iter()
                        .find(|w| &w.name == extra)
                        .ok_or("alias shape input is not a weight")?;
                    let raw = artifact::blob(sections.data, &w.blob, &w.name).map_err(|e| e.to_string())?;
                    ins.push(Some(Value::Tensor(
                        Tensor::from_le_bytes(w.dtype, &w.shape, raw).unwrap(),
                    )));
                }
                let refs: Vec<Option<&Value>> = ins.iter().map(Option::as_ref).collect();
                let cx = carbide::runtime::ops::EvalCtx {
                    num_outputs: 1,
                    runner: &NoSubgraphs,
                    seed: 0,
                };
                let out = carbide::runtime::ops::eval(&n.op, &refs, &cx).map_err(|e| e.to_string())?;
                let out_shape = out[0]
                    .as_tensor()
                    .ok_or("alias output is not a tensor")?
                    .shape()
                    .to_vec();
                plan.values.insert(n.outputs[0].clone(), (id, out_shape));
            }
            Step::Kernel(k) => {
                let blobs = packed.next().ok_or("missing packed table")?;
                let mut in_shapes = Vec::new();
                for (name, ty) in k.inputs.iter().zip(&k.input_types) {
                    match plan.values.get(name) {
                        Some((_, shape)) => {
                            bind(ty, shape, &mut syms);
                            in_shapes.push(shape.clone());
                        }
                        None => in_shapes.push(resolve(ty, &syms)),
                    }
                }
                let out_shapes: Vec<Vec<usize>> = k.output_types.iter().map(|t| resolve(t, &syms)).collect();
                let ins: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
                let outs: Vec<&[usize]> = out_shapes.iter().map(Vec::as_slice).collect();
                let eval = |e: &ParamExpr| e.eval(&ins, &outs).ok_or(format!("cannot evaluate {e:?}"));
                let max_parts = k.call.max_parts.as_ref().map(&eval).transpose()?;
                let parts = max_parts.map_or(parts_cap, |m| (m.max(1) as usize).min(parts_cap));
                let mut out_ids = Vec::new();
                for (name, shape) in k.outputs.iter().zip(&out_shapes) {
                    let id = plan.buffer(shape.iter().product::<usize>() * 4, None);
                    plan.values.insert(name.clone(), (id, shape.clone()));
                    out_ids.push(id);
                }
                let mut args = Vec::new();
                for b in &k.call.buffers {
                    args.push(match b {
                        BufferArg::Input(j) => plan.values[&k.inputs[*j]].0,
                        BufferArg::Output(j) => out_ids[*j],
                        BufferArg::Packed(j) => {
                            let raw = artifact::blob(sections.data, &blobs[*j], "packed").map_err(|e| e.to_string())?;
                            plan.buffer(raw.len(), Some(raw))
                        }
                        BufferArg::Scratch { bytes, per_part } => {
                            let n = eval(bytes)? as usize;
                            plan.buffer(if *per_part { n * parts } else { n }, None)
                        }
                    });
                }
                let name = k.call.entry.as_bytes();
                plan.calls.push(name.len() as i64);
                for chunk in name.chunks(8) {
                    let mut w = [0u8; 8];
                    w[..chunk.len()].copy_from_slice(chunk);
                    plan.calls.push(i64::from_le_bytes(w));
                }
                plan.calls.push(args.len() as i64);
                plan.calls.extend(args.iter().map(|&a| a as i64));
                let params: Vec<i64> = k.call.params.iter().map(&eval).collect::<Result<_, _>>()?;
                plan.calls.push(params.len() as i64);
                plan.calls.extend(params);
                plan.calls.push(parts as i64);
                n_calls += 1;
            }
        }
    }
    let mut words = vec![plan.buffers as i64];
    words.extend(&plan.words);
    words.push(n_calls);
    words.extend(&plan.calls);
    let outputs: Vec<(usize, usize)> = graph
        .outputs
        .iter()
        .map(|o| {
            let (id, shape) = &plan.values[&o.name];
            (*id, shape.iter().product())
        })
        .collect();
    words.push(outputs.len() as i64);
    words.extend(outputs.iter().map(|(id, _)| *id as i64));

    let dir = std::env::temp_dir().join(format!("carbide-qemu-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("kernels.so");
    std::fs::write(&lib, sections.library).unwrap();
    let plan_path = dir.join("plan.bin");
    std::fs::write(
        &plan_path,
        words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(dir.join("driver.c"), DRIVER_C).unwrap();
    let exe = dir.join("driver");
    let cc = Command::new("aarch64-linux-gnu-gcc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(dir.join("driver.c"))
        .arg("-ldl")
        .output()
        .map_err(|e| e.to_string())?;
    if !cc.status.success() {
        return Err(format!("building the driver: {}", String::from_utf8_lossy(&cc.stderr)));
    }
    let out_path = dir.join("out.bin");
    let run = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(&exe)
        .arg(&lib)
        .arg(&plan_path)
        .arg(&out_path)
        .output()
        .map_err(|e| e.to_string())?;
    if !run.status.success() {
        return Err(format!("qemu run failed: {}", String::from_utf8_lossy(&run.stderr)));
    }
    let raw = std::fs::read(&out_path).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut at = 0;
    Ok(outputs
        .iter()
        .map(|(_, n)| {
            let v = floats[at..at + n].to_vec();
            at += n;
            v
        })
        .collect())
}

struct NoSubgraphs;

impl carbide::runtime::ops::SubgraphRunner for NoSubgraphs {
    fn run_subgraph(&self, graph: &carbide::ir::Graph, _: Vec<Value>) -> Result<Vec<Value>, carbide::runtime::OpError> {
        Err(carbide::runtime::OpError::Unsupported(format!(
            "subgraph '{}' in an alias step",
            graph.name
        )))
    }
}

/// Compiles `model` for aarch64-neon, runs it under qemu on `feeds` and
/// checks it against the reference runtime and `expected` (onnxruntime).
fn check_under_qemu(name: &str, model: &carbide::ir::Model, feeds: &[(String, Value)], expected: &[(String, Tensor)]) {
    let (bytes, report) = compile_artifact(model, &neon()).expect("cross-compiles");
    assert_eq!(report.host_steps, 0, "{report:?}");
    let tensors: Vec<(String, Tensor)> = feeds
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().unwrap().clone()))
        .collect();
    let reference: Vec<(String, Tensor)> = carbide::Session::new(model.clone())
        .run(feeds.to_vec())
        .expect("reference run")
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().expect("tensor output").clone()))
        .collect();
    // Two parts per call, so the kernels' work splitting is exercised too.
    let got = run_under_qemu(name, &bytes, &tensors, 2).expect("runs under qemu");
    assert_eq!(got.len(), reference.len());
    let outputs: Vec<(String, Value)> = got
        .into_iter()
        .zip(&reference)
        .map(|(v, (name, want))| {
            let t = Tensor::from_f32s(v)
                .reshaped(want.shape())
                .expect("output size matches");
            (name.clone(), Value::Tensor(t))
        })
        .collect();
    common::assert_matches_ort(
        &format!("{name} (aarch64-neon under qemu vs reference)"),
        &outputs,
        &reference,
    );
    common::assert_matches_ort(
        &format!("{name} (aarch64-neon under qemu vs onnxruntime)"),
        &outputs,
        expected,
    );
}

#[test]
fn mlp_compiled_for_aarch64_runs_under_qemu_and_matches_the_reference() {
    if !have_cross_tools(true) {
        return;
    }
    let Some(case) = common::zoo_case("mlp") else {
        return;
    };
    check_under_qemu("mlp", &case.model, &case.feeds, &case.expected);
}

#[test]
fn tiny_cnn_compiled_for_aarch64_runs_under_qemu_and_matches_the_reference() {
    if !have_cross_tools(true) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example");
    let feeds: Vec<(String, Value)> = carbide::npy::read_npz(&dir.join("tiny_cnn.inputs.npz"))
        .expect("inputs")
        .into_iter()
        .map(|(n, t)| (n, Value::Tensor(t)))
        .collect();
    let expected = carbide::npy::read_npz(&dir.join("tiny_cnn.ort.npz")).expect("ort outputs");
    check_under_qemu("tiny_cnn", &tiny_cnn(), &feeds, &expected);
}

/// Depthwise and pointwise convolutions, residual adds, global pooling and
/// Gemm: the NEON paths of a real mobile network (about 20 s under qemu).
#[test]
fn mobilenet_v2_compiled_for_aarch64_runs_under_qemu_and_matches_the_reference() {
    if !have_cross_tools(true) {
        return;
    }
    let Some(case) = common::zoo_case("mobilenet_v2") else {
        return;
    };
    check_under_qemu("mobilenet_v2", &case.model, &case.feeds, &case.expected);
}
