//! Each rule on a tiny graph: it fires, the extracted graph is the expected
//! one, and the reference runtime gives the same outputs before and after
//! (`G::check_pass` compares them).

use super::*;
use crate::testutil::{op_types, ramp, G};
use crate::util::{binary, unary};
use carbide_ir::ops::elementwise::{Binary, Unary};
use carbide_ir::ops::{LinalgOp, TensorOp};
use carbide_ir::{Op, Tensor};

fn transpose(perm: &[i64]) -> Op {
    Op::Tensor(TensorOp::Transpose {
        perm: Some(perm.to_vec()),
    })
}

fn reshape() -> Op {
    Op::Tensor(TensorOp::Reshape {
        allowzero: false,
        shape: None,
    })
}

fn matmul() -> Op {
    Op::Linalg(LinalgOp::MatMul)
}

fn split(axis: i64) -> Op {
    Op::Tensor(TensorOp::Split {
        axis,
        split: None,
        num_outputs: None,
    })
}

fn concat(axis: i64) -> Op {
    Op::Tensor(TensorOp::Concat { axis })
}

/// Runs the rewrite on the test graph (CPU cost model) and returns the stats.
fn stats_of(t: &G, model: CostModel) -> EGraphStats {
    let mut g = t.model().graph;
    rewrite(&mut g, model, Limits::default()).1
}

fn fired(s: &EGraphStats, rule: &str) -> bool {
    s.rules_applied.get(rule).is_some_and(|&n| n > 0)
}

fn gpu_pass(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let opts = crate::PassOptions {
        cost_target: "gpu".into(),
        ..Default::default()
    };
    egraph_rewrite(g, &PassCtx { opts: &opts, name: "t" })
}

#[test]
fn transposes_around_a_unary_op_cancel() {
    let mut t = G::new();
    t.input("x", &[2, 3, 4])
        .node(transpose(&[1, 2, 0]), &["x"], &["t1"])
        .node(unary(Unary::Relu), &["t1"], &["r"])
        .node(transpose(&[2, 0, 1]), &["r"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(
        fired(&s, "transpose-sink-unary") && fired(&s, "transpose-compose"),
        "{s:?}"
    );
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Relu"]);
    assert_eq!(g.outputs[0].name, "y");
}

#[test]
fn two_transposes_compose_into_one() {
    let mut t = G::new();
    t.input("x", &[2, 3, 4])
        .node(transpose(&[1, 0, 2]), &["x"], &["t1"])
        .node(transpose(&[0, 2, 1]), &["t1"], &["y"])
        .output("y");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Transpose"]);
}

#[test]
fn matmul_of_transposed_operands_becomes_gemm() {
    let mut t = G::new();
    t.input("a", &[4, 3])
        .input("b", &[5, 4])
        .node(transpose(&[1, 0]), &["a"], &["at"])
        .node(transpose(&[1, 0]), &["b"], &["bt"])
        .node(matmul(), &["at", "bt"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "matmul-transpose-to-gemm") && fired(&s, "gemm-absorb-transpose"));
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Gemm"]);
    let Op::Linalg(LinalgOp::Gemm(a)) = &g.nodes[0].op else {
        panic!("not a Gemm")
    };
    assert!(a.trans_a && a.trans_b);
}

#[test]
fn reshape_chains_collapse_and_identity_reshapes_vanish() {
    let mut t = G::new();
    t.input("x", &[2, 6])
        .init("s1", Tensor::from_i64s(vec![3, 4]))
        .init("s2", Tensor::from_i64s(vec![12]))
        .init("s3", Tensor::from_i64s(vec![2, 6]))
        .node(reshape(), &["x", "s1"], &["r1"])
        .node(reshape(), &["r1", "s2"], &["y"])
        .node(reshape(), &["r1", "s3"], &["r3"])
        .node(unary(Unary::Tanh), &["r3"], &["z"])
        .output("y")
        .output("z");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "reshape-compose"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    let mut ops = op_types(&g);
    ops.sort();
    assert_eq!(ops, ["Reshape", "Tanh"]);
}

#[test]
fn a_reshape_to_the_same_shape_vanishes() {
    let mut t = G::new();
    t.input("x", &[2, 6])
        .init("s", Tensor::from_i64s(vec![2, 6]))
        .node(reshape(), &["x", "s"], &["r"])
        .node(unary(Unary::Exp), &["r"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "reshape-identity"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Exp"]);
}

#[test]
fn split_then_concat_of_all_parts_cancels() {
    let mut t = G::new();
    t.input("x", &[4, 6])
        .init("sizes", Tensor::from_i64s(vec![2, 4]))
        .node(split(1), &["x", "sizes"], &["p", "q"])
        .node(concat(1), &["p", "q"], &["c"])
        .node(unary(Unary::Relu), &["c"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "concat-of-slices"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Relu"]);
}

#[test]
fn concat_then_split_into_the_same_parts_cancels() {
    let mut t = G::new();
    t.input("a", &[2, 3])
        .input("b", &[2, 5])
        .init("sizes", Tensor::from_i64s(vec![3, 5]))
        .node(concat(1), &["a", "b"], &["c"])
        .node(split(1), &["c", "sizes"], &["p", "q"])
        .node(unary(Unary::Relu), &["p"], &["y"])
        .node(unary(Unary::Sigmoid), &["q"], &["z"])
        .output("y")
        .output("z");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "slice-of-concat"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Relu", "Sigmoid"]);
}

#[test]
fn a_scalar_scale_after_matmul_folds_into_the_weight() {
    let mut t = G::new();
    t.input("x", &[2, 4])
        .init("w", ramp(&[4, 3], 0.1))
        .init("k", Tensor::scalar_f32(0.125))
        .node(matmul(), &["x", "w"], &["m"])
        .node(binary(Binary::Mul), &["m", "k"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "scale-into-matmul"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["MatMul"]);
    assert_eq!(g.nodes[0].outputs[0], "y");
}

#[test]
fn a_scale_on_the_input_moves_onto_the_weight() {
    let mut t = G::new();
    t.input("x", &[2, 4])
        .init("w", ramp(&[4, 3], 0.1))
        .init("k", Tensor::scalar_f32(3.0))
        .node(binary(Binary::Mul), &["k", "x"], &["xs"])
        .node(matmul(), &["xs", "w"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "scale-out-of-matmul"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["MatMul"]);
}

#[test]
fn matmul_chains_reassociate_to_the_cheaper_order() {
    // (a·b)·c costs 2·64·64·2 twice; a·(b·c) costs 2·2·64·2 twice.
    let mut t = G::new();
    t.input("a", &[64, 2])
        .input("b", &[2, 64])
        .input("c", &[64, 2])
        .node(matmul(), &["a", "b"], &["ab"])
        .node(matmul(), &["ab", "c"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "matmul-reassociate") && s.accepted, "{s:?}");
    assert!(s.cost_after < s.cost_before, "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["MatMul", "MatMul"]);
    // The first MatMul now multiplies b by c.
    assert_eq!(g.nodes[0].inputs, ["b", "c"]);
}

#[test]
fn two_weight_matmuls_in_a_row_fold_into_one() {
    let mut t = G::new();
    t.input("x", &[8, 16])
        .init("w1", ramp(&[16, 16], 0.05))
        .init("w2", ramp(&[16, 4], 0.05))
        .node(matmul(), &["x", "w1"], &["h"])
        .node(matmul(), &["h", "w2"], &["y"])
        .output("y");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["MatMul"]);
}

/// Three `op`s reading input `x` of shape `input`, with weight `weights[i]`
/// (and bias `biases[i]` when given), each followed by its own unary op:
/// the parallel projections the merge rules look for.
fn projections(input: &[usize], op: Op, weights: [Tensor; 3], biases: Option<[Tensor; 3]>) -> G {
    let mut t = G::new();
    t.input("x", input);
    let biases = biases.map(|b| b.map(Some)).unwrap_or_default();
    let finals = [Unary::Relu, Unary::Tanh, Unary::Sigmoid];
    for (i, ((w, b), u)) in weights.into_iter().zip(biases).zip(finals).enumerate() {
        let (w_name, b_name, p, y) = (format!("w{i}"), format!("b{i}"), format!("p{i}"), format!("y{i}"));
        t.init(&w_name, w);
        let mut ins = vec!["x", w_name.as_str()];
        if let Some(b) = b {
            t.init(&b_name, b);
            ins.push(b_name.as_str());
        }
        t.node(op.clone(), &ins, &[p.as_str()])
            .node(unary(u), &[p.as_str()], &[y.as_str()])
            .output(&y);
    }
    t
}

fn parallel_projections(tokens: usize, dim: usize) -> G {
    let weights = [
        ramp(&[dim, dim], 0.1),
        ramp(&[dim, dim + 2], 0.2),
        ramp(&[dim, dim], 0.3),
    ];
    projections(&[2, tokens, dim], matmul(), weights, None)
}

/// Runs the GPU-model rewrite on `projections`: `rule` merges the three
/// `op`s into one, split back for the three unary ops; returns the shapes
/// of the merged op's constant inputs (weight, and bias when present).
fn merged_projections(t: &G, rule: &str, op: &str) -> Vec<Vec<usize>> {
    let s = stats_of(t, CostModel::gpu());
    assert!(fired(&s, rule) && s.accepted, "{s:?}");
    let g = t.check_pass(gpu_pass);
    let mut ops = op_types(&g);
    ops.sort();
    let mut want = vec![op, "Relu", "Sigmoid", "Split", "Tanh"];
    want.sort();
    assert_eq!(ops, want);
    let merged = g.nodes.iter().find(|n| n.op.op_type() == op).expect("one merged op");
    merged.inputs[1..]
        .iter()
        .map(|i| g.initializers[i].shape().to_vec())
        .collect()
}

#[test]
fn parallel_matmuls_merge_when_launches_dominate() {
    let shapes = merged_projections(&parallel_projections(4, 8), "merge-parallel-matmul", "MatMul");
    assert_eq!(shapes, [[8, 26]]);
}

#[test]
fn parallel_matmuls_stay_apart_when_the_split_costs_more() {
    // With 256 tokens of width 64 on the CPU model the Split's copies
    // outweigh the saved launches and reads of x: the merge is found but
    // not extracted.
    let t = parallel_projections(256, 64);
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "merge-parallel-matmul"), "{s:?}");
    assert!(!s.accepted, "{s:?}");
}

#[test]
fn values_used_outside_the_region_keep_their_names() {
    // t1 feeds a Softmax (not in the language): it must survive by name.
    let mut t = G::new();
    t.input("x", &[3, 4])
        .node(transpose(&[1, 0]), &["x"], &["t1"])
        .node(transpose(&[1, 0]), &["t1"], &["t2"])
        .node(unary(Unary::Exp), &["t2"], &["y"])
        .node(
            Op::Linalg(LinalgOp::Softmax(carbide_ir::ops::linalg::SoftmaxAttrs {
                kind: carbide_ir::ops::linalg::SoftmaxKind::Softmax,
                axis: -1,
                flatten: false,
            })),
            &["t1"],
            &["z"],
        )
        .output("y")
        .output("z");
    let g = t.check_pass(egraph_rewrite);
    assert!(g.nodes.iter().any(|n| n.outputs == ["t1"]));
    assert_eq!(g.nodes.iter().filter(|n| n.op.op_type() == "Transpose").count(), 1);
}

#[test]
fn nothing_to_gain_leaves_the_graph_alone() {
    let mut t = G::new();
    t.input("x", &[2, 4])
        .node(unary(Unary::Relu), &["x"], &["y"])
        .output("y");
    let mut g = t.model().graph;
    let before = g.clone();
    let (changed, s) = rewrite(&mut g, CostModel::cpu(), Limits::default());
    assert!(!changed && !s.accepted);
    assert_eq!(g, before);
    assert_eq!(s.stop_reason, "saturated");
}

#[test]
fn the_bounds_stop_saturation_and_are_reported() {
    let t = parallel_projections(4, 8);
    let mut g = t.model().graph;
    let limits = Limits {
        iterations: 1,
        ..Limits::default()
    };
    let (_, s) = rewrite(&mut g, CostModel::gpu(), limits);
    assert_eq!(s.stop_reason, "iteration limit (1)");
    assert_eq!(s.iterations, 1);
}

#[test]
fn level_three_reports_the_egraph_run() {
    let mut t = G::new();
    t.input("x", &[2, 3, 4])
        .node(transpose(&[1, 2, 0]), &["x"], &["t1"])
        .node(unary(Unary::Relu), &["t1"], &["r"])
        .node(transpose(&[2, 0, 1]), &["r"], &["y"])
        .output("y");
    let before = t.model();
    let mut m = before.clone();
    let report = crate::optimize(
        &mut m,
        &crate::PassOptions {
            level: 3,
            verify_each: true,
            ..Default::default()
        },
    )
    .expect("optimizes");
    assert!(!report.egraph.is_empty());
    assert!(report.egraph[0].accepted && report.egraph[0].classes > 0);
    assert!(report.passes.iter().any(|p| p.egraph.is_some()));
    crate::testutil::assert_close(&t.run(&m), &t.run(&before));
    assert_eq!(op_types(&m.graph), ["Relu"]);
}

#[test]
fn a_slice_of_a_concat_that_picks_one_part_is_that_part() {
    // The ONNX Slice (constant starts/ends/axes) becomes a Slice e-node.
    let mut t = G::new();
    t.input("a", &[2, 3])
        .input("b", &[2, 5])
        .init("starts", Tensor::from_i64s(vec![3]))
        .init("ends", Tensor::from_i64s(vec![8]))
        .init("axes", Tensor::from_i64s(vec![-1]))
        .node(concat(1), &["a", "b"], &["c"])
        .node(
            Op::Tensor(TensorOp::Slice {
                starts: None,
                ends: None,
                axes: None,
            }),
            &["c", "starts", "ends", "axes"],
            &["s"],
        )
        .node(unary(Unary::Neg), &["s"], &["y"])
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "slice-of-concat"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Neg"]);
    assert_eq!(g.nodes[0].inputs, ["b"]);
}

#[test]
fn a_gemm_with_bias_absorbs_a_transposed_input() {
    let mut t = G::new();
    t.input("a", &[4, 3])
        .init("w", ramp(&[4, 5], 0.1))
        .init("bias", ramp(&[5], 0.2))
        .node(transpose(&[1, 0]), &["a"], &["at"])
        .node(
            Op::Linalg(LinalgOp::Gemm(carbide_ir::ops::linalg::GemmAttrs {
                alpha: 0.5,
                beta: 2.0,
                trans_a: false,
                trans_b: false,
            })),
            &["at", "w", "bias"],
            &["y"],
        )
        .output("y");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "gemm-absorb-transpose"), "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Gemm"]);
    let Op::Linalg(LinalgOp::Gemm(a)) = &g.nodes[0].op else {
        panic!("not a Gemm")
    };
    assert!(a.trans_a && !a.trans_b && a.alpha == 0.5 && a.beta == 2.0);
}

#[test]
fn an_unknown_cost_target_is_an_error() {
    let mut m = parallel_projections(4, 8).model();
    let opts = crate::PassOptions {
        cost_target: "tpu".into(),
        ..Default::default()
    };
    let err = crate::optimize(&mut m, &opts).unwrap_err();
    assert!(err.to_string().contains("unknown cost target 'tpu'"), "{err}");
}

fn conv_attrs(kernel: usize, pad: usize) -> carbide_ir::ops::nn::ConvAttrs {
    carbide_ir::ops::nn::ConvAttrs {
        auto_pad: carbide_ir::ops::nn::AutoPad::NotSet,
        dilations: None,
        group: 1,
        kernel_shape: Some(vec![kernel as i64; 2]),
        pads: Some(vec![pad as i64; 4]),
        strides: None,
    }
}

fn fused_conv(kernel: usize, pad: usize) -> Op {
    Op::Fused(carbide_ir::ops::FusedOp::FusedConv {
        conv: conv_attrs(kernel, pad),
        activation: carbide_ir::ops::fused::Activation::Relu,
    })
}

fn conv(kernel: usize, pad: usize) -> Op {
    Op::Nn(carbide_ir::ops::NnOp::Conv(conv_attrs(kernel, pad)))
}

/// A SqueezeNet fire module: a 1×1 squeeze conv from `input` channels to
/// `channels`, then a 1×1 and a 3×3 (pad 1) expand conv with ReLU reading
/// its output, their results concatenated.
fn fire_module(input: usize, channels: usize, side: usize, expand: usize) -> G {
    let mut t = G::new();
    t.input("x0", &[1, input, side, side])
        .init("ws", ramp(&[channels, input, 1, 1], 0.02))
        .init("w1", ramp(&[expand, channels, 1, 1], 0.1))
        .init("b1", ramp(&[expand], 0.2))
        .init("w3", ramp(&[expand + 2, channels, 3, 3], 0.05))
        .init("b3", ramp(&[expand + 2], 0.3))
        .node(fused_conv(1, 0), &["x0", "ws"], &["x"])
        .node(fused_conv(1, 0), &["x", "w1", "b1"], &["e1"])
        .node(fused_conv(3, 1), &["x", "w3", "b3"], &["e3"])
        .node(concat(1), &["e1", "e3"], &["y"])
        .output("y");
    t
}

#[test]
fn a_fire_module_becomes_one_conv_with_padded_weights() {
    // Tiny maps: the saved launches and Concat outweigh the zero taps even
    // on the CPU model. Merged conv + Split + Concat of the same parts
    // cancels to the merged conv alone.
    let t = fire_module(4, 8, 6, 4);
    let s = stats_of(&t, CostModel::cpu());
    assert!(
        fired(&s, "merge-parallel-conv") && fired(&s, "concat-of-slices"),
        "{s:?}"
    );
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["FusedConv", "FusedConv"]);
    let n = &g.nodes[1];
    assert_eq!(n.outputs, ["y"]);
    assert_eq!(g.initializers[&n.inputs[1]].shape(), [10, 8, 3, 3]);
    assert_eq!(g.initializers[&n.inputs[2]].shape(), [10]);
    let Op::Fused(carbide_ir::ops::FusedOp::FusedConv { conv, activation }) = &n.op else {
        panic!("not a FusedConv")
    };
    assert_eq!(conv.pads.as_deref(), Some(&[1, 1, 1, 1][..]));
    assert_eq!(*activation, carbide_ir::ops::fused::Activation::Relu);
}

#[test]
fn a_large_fire_module_stays_apart_on_the_cpu() {
    // SqueezeNet's fire3 sizes: the 1×1 conv padded to 3×3 would cost 8×
    // its FLOPs again, more than the Concat and launch it saves on a CPU.
    let t = fire_module(128, 16, 55, 64);
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "merge-parallel-conv"), "{s:?}");
    assert!(!s.accepted, "{s:?}");
    // A GPU pays far more per launch: there it merges.
    let s = stats_of(&t, CostModel::gpu());
    assert!(s.accepted && s.extracted_nodes == 2, "{s:?}");
}

#[test]
fn a_fire_module_that_does_not_pay_leaves_the_rest_of_the_region_free() {
    // A greedy tree cost counts the squeeze input once per expand conv in
    // the Concat form and once in the merged conv, so it would pick the
    // merged conv; extraction compares them relative to the shared input,
    // keeps the Concat, and the unrelated transposes still cancel.
    let mut t = fire_module(256, 16, 55, 64);
    t.input("z", &[3, 4])
        .node(transpose(&[1, 0]), &["z"], &["zt"])
        .node(transpose(&[1, 0]), &["zt"], &["zz"])
        .node(unary(Unary::Exp), &["zz"], &["w"])
        .output("w");
    let s = stats_of(&t, CostModel::cpu());
    assert!(fired(&s, "merge-parallel-conv") && s.accepted, "{s:?}");
    let g = t.check_pass(egraph_rewrite);
    let mut ops = op_types(&g);
    ops.sort();
    assert_eq!(ops, ["Concat", "Exp", "FusedConv", "FusedConv", "FusedConv"]);
}

#[test]
fn same_kernel_convs_merge_into_one_conv_and_a_split() {
    let weights = [
        ramp(&[3, 6, 1, 1], 0.1),
        ramp(&[5, 6, 1, 1], 0.2),
        ramp(&[4, 6, 1, 1], 0.3),
    ];
    let t = projections(&[2, 6, 5, 5], conv(1, 0), weights, None);
    assert_eq!(merged_projections(&t, "merge-parallel-conv", "Conv"), [[12, 6, 1, 1]]);
}

#[test]
fn convs_with_different_strides_or_activations_do_not_merge() {
    let mut t = G::new();
    let mut strided = conv_attrs(1, 0);
    strided.strides = Some(vec![2, 2]);
    t.input("x", &[1, 4, 6, 6])
        .init("wa", ramp(&[3, 4, 1, 1], 0.1))
        .init("wb", ramp(&[3, 4, 1, 1], 0.2))
        .init("wc", ramp(&[3, 4, 1, 1], 0.3))
        .node(conv(1, 0), &["x", "wa"], &["a"])
        .node(Op::Nn(carbide_ir::ops::NnOp::Conv(strided)), &["x", "wb"], &["b"])
        .node(fused_conv(1, 0), &["x", "wc"], &["c"])
        .output("a")
        .output("b")
        .output("c");
    let s = stats_of(&t, CostModel::gpu());
    assert!(!fired(&s, "merge-parallel-conv"), "{s:?}");
    assert!(!s.accepted, "{s:?}");
}

#[test]
fn a_same_padded_conv_merges_with_a_one_by_one() {
    // auto_pad SAME_UPPER resolves to explicit pads 1 for a 3×3 kernel at
    // stride 1, so the 1×1 conv widens to it.
    let mut same = conv_attrs(3, 0);
    same.pads = None;
    same.auto_pad = carbide_ir::ops::nn::AutoPad::SameUpper;
    let mut t = G::new();
    t.input("x", &[1, 3, 4, 4])
        .init("w1", ramp(&[2, 3, 1, 1], 0.1))
        .init("w3", ramp(&[2, 3, 3, 3], 0.1))
        .node(conv(1, 0), &["x", "w1"], &["a"])
        .node(Op::Nn(carbide_ir::ops::NnOp::Conv(same)), &["x", "w3"], &["b"])
        .node(concat(1), &["a", "b"], &["y"])
        .output("y");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["Conv"]);
}

fn gemm(trans_b: bool) -> Op {
    Op::Linalg(LinalgOp::Gemm(carbide_ir::ops::linalg::GemmAttrs {
        alpha: 0.5,
        beta: 2.0,
        trans_a: false,
        trans_b,
    }))
}

#[test]
fn parallel_gemms_merge_along_n_with_their_biases() {
    // Three Gemms: one launch and two reads of A saved outweigh the Split
    // (with two, the Split's launch cancels the one saved).
    for trans_b in [false, true] {
        let w = |n: usize, s: f32| if trans_b { ramp(&[n, 7], s) } else { ramp(&[7, n], s) };
        let biases = [ramp(&[5], 0.2), ramp(&[3], 0.4), ramp(&[2], 0.6)];
        let t = projections(&[4, 7], gemm(trans_b), [w(5, 0.1), w(3, 0.3), w(2, 0.5)], Some(biases));
        let weight = if trans_b { vec![10, 7] } else { vec![7, 10] };
        assert_eq!(
            merged_projections(&t, "merge-parallel-gemm", "Gemm"),
            [weight, vec![10]]
        );
    }
}

#[test]
fn fused_gemms_with_one_activation_merge() {
    let fused = || {
        Op::Fused(carbide_ir::ops::FusedOp::FusedGemm {
            gemm: carbide_ir::ops::linalg::GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            activation: carbide_ir::ops::fused::Activation::Gelu { tanh: false },
        })
    };
    let mut t = G::new();
    t.input("a", &[2, 6])
        .init("w1", ramp(&[4, 6], 0.1))
        .init("w2", ramp(&[4, 6], 0.2))
        .node(fused(), &["a", "w1"], &["p"])
        .node(fused(), &["a", "w2"], &["q"])
        .node(concat(1), &["p", "q"], &["y"])
        .output("y");
    let g = t.check_pass(egraph_rewrite);
    assert_eq!(op_types(&g), ["FusedGemm"]);
    assert_eq!(g.initializers[&g.nodes[0].inputs[1]].shape(), [8, 6]);
}

#[test]
fn fused_matmul_projections_with_biases_merge() {
    // A transformer's Q, K, V projections after fusion: FusedMatMul with a
    // bias each, reading the same normalized input.
    let op = Op::Fused(carbide_ir::ops::FusedOp::FusedMatMul {
        activation: carbide_ir::ops::fused::Activation::Identity,
    });
    let weights = [ramp(&[8, 8], 0.1), ramp(&[8, 6], 0.3), ramp(&[8, 8], 0.5)];
    let biases = [ramp(&[8], 0.2), ramp(&[6], 0.4), ramp(&[8], 0.6)];
    let t = projections(&[2, 4, 8], op, weights, Some(biases));
    let shapes = merged_projections(&t, "merge-parallel-matmul", "FusedMatMul");
    assert_eq!(shapes, [vec![8, 22], vec![22]]);
}
