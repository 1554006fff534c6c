//! Convolution micro-benchmark: the generated conv kernel (bias + ReLU
//! epilogue) on the distinct convolution shapes of the zoo's CNNs, at 1 and
//! 2 threads, printed as GFLOP/s and as a share of the FMA peak measured in
//! the same run; per model, the conv time the shapes add up to (shape time
//! x how often the model has it), i.e. what the model's convs cost. Times
//! are the best of many runs (the machine is shared: the fastest run is the
//! one that had its cores to itself).
//!
//! `CARBIDE_CONV_BENCH=substring` keeps only the cases whose label contains
//! it (e.g. `resnet50`, `7x7`); `CARBIDE_DUMP_SOURCE=DIR` writes each
//! kernel's C source there. `CARBIDE_CONV_WINOGRAD=1` adds, under each 3x3
//! stride-1 conv, the fastest Winograd point of its schedule space per
//! tile size (effective GFLOP/s: the direct conv's FLOPs / time).
//! `CARBIDE_CONV_SPAWN=1` runs the second part on a thread spawned per call
//! instead of a persistent worker.

#[allow(dead_code)] // the shared harness serves several benchmarks
mod common;

use carbide_backend_cpu::{lower, GroupValue, KernelGroup, Target};
use carbide_ir::kernel::WeightLayout;
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::elementwise::{ElementwiseOp, Unary};
use carbide_ir::ops::nn::{AutoPad, ConvAttrs, NnOp};
use carbide_ir::{DType, Node, Op, Tensor, TensorType};
use common::{best_secs, bind, load, median_secs, print_fma_peaks, run, Helper};
use std::collections::BTreeMap;
use std::ffi::c_void;

/// One convolution shape of a model: input NCHW, output channels, square
/// kernel, stride, symmetric pad, and how many times the model has it.
struct Case {
    model: &'static str,
    x: [usize; 4],
    m: usize,
    k: usize,
    stride: usize,
    pad: usize,
    count: usize,
}

const fn case(model: &'static str, x: [usize; 4], m: usize, k: usize, stride: usize, count: usize) -> Case {
    Case {
        model,
        x,
        m,
        k,
        stride,
        pad: k / 2,
        count,
    }
}

/// Every distinct resnet50 conv (with its count), resnet18's and
/// squeezenet's heaviest, and mobilenet_v2's small-pixel pointwise ones.
const CASES: &[Case] = &[
    case("resnet50", [1, 3, 224, 224], 64, 7, 2, 1),
    case("resnet50", [1, 64, 56, 56], 64, 1, 1, 1),
    case("resnet50", [1, 64, 56, 56], 64, 3, 1, 3),
    case("resnet50", [1, 64, 56, 56], 256, 1, 1, 4),
    case("resnet50", [1, 256, 56, 56], 64, 1, 1, 2),
    case("resnet50", [1, 256, 56, 56], 128, 1, 1, 1),
    case("resnet50", [1, 128, 56, 56], 128, 3, 2, 1),
    case("resnet50", [1, 256, 56, 56], 512, 1, 2, 1),
    case("resnet50", [1, 128, 28, 28], 128, 3, 1, 3),
    case("resnet50", [1, 128, 28, 28], 512, 1, 1, 4),
    case("resnet50", [1, 512, 28, 28], 128, 1, 1, 3),
    case("resnet50", [1, 512, 28, 28], 256, 1, 1, 1),
    case("resnet50", [1, 256, 28, 28], 256, 3, 2, 1),
    case("resnet50", [1, 512, 28, 28], 1024, 1, 2, 1),
    case("resnet50", [1, 256, 14, 14], 256, 3, 1, 5),
    case("resnet50", [1, 256, 14, 14], 1024, 1, 1, 6),
    case("resnet50", [1, 1024, 14, 14], 256, 1, 1, 5),
    case("resnet50", [1, 1024, 14, 14], 512, 1, 1, 1),
    case("resnet50", [1, 512, 14, 14], 512, 3, 2, 1),
    case("resnet50", [1, 1024, 14, 14], 2048, 1, 2, 1),
    case("resnet50", [1, 512, 7, 7], 512, 3, 1, 2),
    case("resnet50", [1, 512, 7, 7], 2048, 1, 1, 3),
    case("resnet50", [1, 2048, 7, 7], 512, 1, 1, 2),
    case("resnet18", [1, 64, 56, 56], 64, 3, 1, 4),
    case("resnet18", [1, 128, 28, 28], 128, 3, 1, 3),
    case("resnet18", [1, 256, 14, 14], 256, 3, 1, 3),
    case("resnet18", [1, 512, 7, 7], 512, 3, 1, 3),
    case("squeezenet1_1", [1, 512, 13, 13], 1000, 1, 1, 1),
    case("squeezenet1_1", [1, 16, 55, 55], 64, 3, 1, 2),
    case("squeezenet1_1", [1, 64, 13, 13], 256, 3, 1, 2),
    case("mobilenet_v2", [1, 3, 224, 224], 32, 3, 2, 1),
    case("mobilenet_v2", [1, 32, 112, 112], 16, 1, 1, 1),
    case("mobilenet_v2", [1, 16, 112, 112], 96, 1, 1, 1),
    case("mobilenet_v2", [1, 96, 56, 56], 24, 1, 1, 1),
    case("mobilenet_v2", [1, 24, 56, 56], 144, 1, 1, 2),
    case("mobilenet_v2", [1, 144, 56, 56], 24, 1, 1, 1),
    case("mobilenet_v2", [1, 144, 28, 28], 32, 1, 1, 1),
    case("mobilenet_v2", [1, 32, 28, 28], 192, 1, 1, 3),
    case("mobilenet_v2", [1, 192, 28, 28], 32, 1, 1, 2),
    case("mobilenet_v2", [1, 192, 14, 14], 64, 1, 1, 1),
    case("mobilenet_v2", [1, 64, 14, 14], 384, 1, 1, 4),
    case("mobilenet_v2", [1, 384, 14, 14], 64, 1, 1, 3),
    case("mobilenet_v2", [1, 96, 14, 14], 576, 1, 1, 3),
    case("mobilenet_v2", [1, 160, 7, 7], 960, 1, 1, 3),
];

impl Case {
    fn out(&self) -> [usize; 4] {
        let o = |i: usize| (self.x[i] + 2 * self.pad - self.k) / self.stride + 1;
        [self.x[0], self.m, o(2), o(3)]
    }

    fn flops(&self) -> f64 {
        let y = self.out();
        2.0 * (y[1] * y[2] * y[3] * self.x[1] * self.k * self.k) as f64
    }

    fn label(&self) -> String {
        format!(
            "{} {}x{}x{} -> {} {}x{}/{}",
            self.model, self.x[1], self.x[2], self.x[3], self.m, self.k, self.k, self.stride
        )
    }

    /// The conv + bias + ReLU group and its input data (x, w, b).
    fn group(&self) -> (KernelGroup, Vec<Vec<f32>>) {
        let wshape = [self.m, self.x[1], self.k, self.k];
        let data = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i + seed) * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let w = data(wshape.iter().product(), 1);
        let b = data(self.m, 2);
        let tensor =
            |shape: &[usize], v: &[f32]| Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap());
        let ty = |shape: &[usize]| TensorType::new(DType::F32, carbide_ir::types::shape_of(shape));
        let value = |name: &str, shape: &[usize], c: Option<Tensor>| GroupValue {
            name: name.into(),
            ty: ty(shape),
            constant: c,
        };
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: None,
            group: 1,
            kernel_shape: None,
            pads: Some(vec![self.pad as i64; 4]),
            strides: Some(vec![self.stride as i64; 2]),
        };
        let node = |name: &str, op: Op, inputs: &[&str], output: &str| Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
        };
        let g = KernelGroup {
            nodes: vec![
                node("conv", Op::Nn(NnOp::Conv(attrs)), &["x", "w", "b"], "y"),
                node(
                    "relu",
                    Op::Elementwise(ElementwiseOp::Unary(Unary::Relu)),
                    &["y"],
                    "out",
                ),
            ],
            inputs: vec![
                value("x", &self.x, None),
                value("w", &wshape, Some(tensor(&wshape, &w))),
                value("b", &[self.m], Some(tensor(&[self.m], &b))),
            ],
            outputs: vec![value("out", &self.out(), None)],
        };
        (g, vec![data(self.x.iter().product(), 0), w, b])
    }
}

/// The best of about 0.3 s (1 thread) and 1 s (2 threads) of runs, at least 7, in ms.
/// The second part runs on the persistent `helper` (the runtime's workers
/// are persistent too: a thread spawned per call costs tens of microseconds,
/// a third of a 14x14 pointwise conv), or with `spawn` on a fresh thread.
fn time_kernel(
    k: &carbide_backend_cpu::LoweredKernel,
    target: &Target,
    c: &Case,
    inputs: &mut [Vec<f32>],
    in_shapes: &[&[usize]; 3],
    helper: Option<&Helper>,
) -> [f64; 2] {
    let l = load(k, target);
    let out_shape = c.out();
    let mut out = vec![0f32; out_shape.iter().product()];
    let mut ms = [0.0f64; 2];
    for (ti, parts) in [1i64, 2].into_iter().enumerate() {
        let b = bind(k, inputs, in_shapes, &mut out, &out_shape, parts);
        let ptrs: Vec<*mut c_void> = b.ptrs.iter().map(|&p| p as *mut c_void).collect();
        let call = || match helper {
            Some(h) => h.run(&l, &ptrs, &b, parts),
            None => run(&l, &b, parts),
        };
        call();
        let once = median_secs(3, call);
        // Two threads need both cores free at once: a longer try on a shared machine.
        let budget = if parts == 1 { 0.3 } else { 1.0 };
        let runs = ((budget / once) as usize).clamp(7, 5000);
        ms[ti] = best_secs(runs, call) * 1e3;
    }
    ms
}

fn main() {
    let target = Target::host().expect("host target");
    let filter = std::env::var("CARBIDE_CONV_BENCH").unwrap_or_default();
    let wino = std::env::var("CARBIDE_CONV_WINOGRAD").is_ok_and(|v| v != "0");
    let spawn = std::env::var("CARBIDE_CONV_SPAWN").is_ok_and(|v| v != "0");
    let helper = (!spawn).then(Helper::new);
    let peaks = print_fma_peaks(&target);
    println!(
        "{:<42} {:>3} {:>8} {:>7} {:>5} {:>8} {:>7} {:>5}",
        "conv (Cin HxW -> Cout kxk/stride)", "n", "ms@1", "GF/s", "%pk", "ms@2", "GF/s", "%pk"
    );
    // Per model: (flops, ms at 1 thread, ms at 2 threads), weighted by count.
    let mut totals: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for c in CASES.iter().filter(|c| c.label().contains(&filter)) {
        let (g, mut inputs) = c.group();
        let k = lower(&g, &target, None)
            .expect("lower")
            .expect("a generated conv kernel");
        if let Some(dir) = std::env::var_os("CARBIDE_DUMP_SOURCE") {
            let name = c.label().replace([' ', '>', '/'], "_");
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.c")), &k.source).unwrap();
        }
        let wshape = [c.m, c.x[1], c.k, c.k];
        let in_shapes: [&[usize]; 3] = [&c.x, &wshape, &[c.m]];
        let ms = time_kernel(&k, &target, c, &mut inputs, &in_shapes, helper.as_ref());
        let gf = |ms: f64| c.flops() / ms / 1e6;
        let row = |label: &str, ms: [f64; 2]| {
            println!(
                "{:<42} {:>3} {:>8.3} {:>7.1} {:>4.0}% {:>8.3} {:>7.1} {:>4.0}%",
                label,
                c.count,
                ms[0],
                gf(ms[0]),
                100.0 * gf(ms[0]) / peaks[0],
                ms[1],
                gf(ms[1]),
                100.0 * gf(ms[1]) / peaks[1]
            )
        };
        row(&c.label(), ms);
        // Pointwise convs in the pixel-vector form: also with packed B
        // panels when B read in place (`b_pack` 0) is the default, or the
        // other way round.
        let mut other = k.schedule.clone();
        if other.tiles.remove("b_pack").is_none() {
            other.tiles.insert("b_pack".into(), 0);
        }
        if let Ok(Some(ko)) = lower(&g, &target, Some(&other)) {
            let label = if other.tiles.contains_key("b_pack") {
                "  B read in place"
            } else {
                "  B packed"
            };
            row(
                label,
                time_kernel(&ko, &target, c, &mut inputs, &in_shapes, helper.as_ref()),
            );
        }
        // Winograd (3x3 stride 1): the fastest of the schedule space's
        // points per tile size m, in effective GFLOP/s (direct FLOPs / time).
        if wino {
            let space = carbide_backend_cpu::schedule_space(&g, &target).expect("space");
            let mut best: BTreeMap<usize, [f64; 2]> = BTreeMap::new();
            for s in &space {
                let WeightLayout::Winograd { m } = s.weight_layout else {
                    continue;
                };
                let k = lower(&g, &target, Some(s)).expect("lower").expect("a Winograd kernel");
                let t = time_kernel(&k, &target, c, &mut inputs, &in_shapes, helper.as_ref());
                let b = best.entry(m).or_insert([f64::INFINITY; 2]);
                b[0] = b[0].min(t[0]);
                b[1] = b[1].min(t[1]);
            }
            for (m, t) in best {
                row(&format!("  winograd F({m}x{m},3x3), best point"), t);
            }
        }
        let t = totals.entry(c.model).or_default();
        t.0 += c.flops() * c.count as f64;
        t.1 += ms[0] * c.count as f64;
        t.2 += ms[1] * c.count as f64;
    }
    println!("per model, the listed convs x their counts:");
    for (model, (flops, ms1, ms2)) in totals {
        let (g1, g2) = (flops / ms1 / 1e6, flops / ms2 / 1e6);
        println!(
            "  {model:<14} {:.2} GFLOP: {ms1:.2} ms @1 ({g1:.1} GF/s, {:.0}% of peak), {ms2:.2} ms @2 ({g2:.1} GF/s, {:.0}% of peak)",
            flops / 1e9,
            100.0 * g1 / peaks[0],
            100.0 * g2 / peaks[1]
        );
    }
}
