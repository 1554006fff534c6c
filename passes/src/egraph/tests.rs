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

fn parallel_projections(tokens: usize, dim: usize) -> G {
    let mut t = G::new();
    t.input("x", &[2, tokens, dim])
        .init("wq", ramp(&[dim, dim], 0.1))
        .init("wk", ramp(&[dim, dim + 2], 0.2))
        .init("wv", ramp(&[dim, dim], 0.3))
        .node(matmul(), &["x", "wq"], &["q"])
        .node(matmul(), &["x", "wk"], &["k"])
        .node(matmul(), &["x", "wv"], &["v"])
        .node(unary(Unary::Relu), &["q"], &["yq"])
        .node(unary(Unary::Tanh), &["k"], &["yk"])
        .node(unary(Unary::Sigmoid), &["v"], &["yv"])
        .output("yq")
        .output("yk")
        .output("yv");
    t
}

#[test]
fn parallel_matmuls_merge_when_launches_dominate() {
    let t = parallel_projections(4, 8);
    let s = stats_of(&t, CostModel::gpu());
    assert!(fired(&s, "merge-parallel-matmul"), "{s:?}");
    let g = t.check_pass(gpu_pass);
    let mut ops = op_types(&g);
    ops.sort();
    assert_eq!(ops, ["MatMul", "Relu", "Sigmoid", "Split", "Tanh"]);
    let merged = g.nodes.iter().find(|n| n.op.op_type() == "MatMul").expect("one MatMul");
    assert_eq!(g.initializers[&merged.inputs[1]].shape(), [8, 26]);
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
