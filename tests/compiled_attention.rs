//! A BERT-style self-attention layer with symbolic batch and sequence,
//! compiled once at -O2 (the optimizer fuses the attention into ONNX
//! `Attention`, the CPU backend generates its kernel and lowers the fused
//! MatMuls) and run at several sequence lengths, matches the reference
//! runtime on the unoptimized graph; so does -O0 (nothing fused).

use carbide::compare::{compare_values, Tolerance};
use carbide::ir::ndarray::{ArrayD, IxDyn};
use carbide::ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
use carbide::ir::ops::linalg::{LinalgOp, SoftmaxAttrs, SoftmaxKind};
use carbide::ir::ops::{Op, TensorOp};
use carbide::ir::{DType, Dim, Graph, Model, Node, Tensor, TensorType, Value, ValueInfo, ValueType};
use carbide::runtime::Step;
use carbide::CompileOptions;

const HIDDEN: usize = 12;
const HEADS: usize = 3;

fn values(shape: &[usize], seed: usize, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((((i + seed) * 7919) % 23) as f32 - 11.0) * scale)
        .collect();
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

fn sym_input(name: &str, dims: Vec<Dim>) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        ty: ValueType::Tensor(TensorType {
            dtype: Some(DType::F32),
            shape: Some(dims),
        }),
    }
}

fn bert_attention() -> Model {
    let (b, s) = (Dim::Sym("batch".into()), Dim::Sym("seq".into()));
    let mut g = Graph {
        name: "attention".into(),
        inputs: vec![
            sym_input("x", vec![b.clone(), s.clone(), Dim::Known(HIDDEN)]),
            sym_input("mask", vec![b, Dim::Known(1), Dim::Known(1), s]),
        ],
        outputs: vec![ValueInfo {
            name: "y".into(),
            ty: ValueType::Unknown,
        }],
        ..Default::default()
    };
    for (i, w) in ["wq", "wk", "wv", "wo"].iter().enumerate() {
        g.initializers
            .insert(w.to_string(), values(&[HIDDEN, HIDDEN], i + 1, 0.03));
        g.initializers.insert(format!("{w}_b"), values(&[HIDDEN], i + 5, 0.02));
    }
    let head = (HIDDEN / HEADS) as i64;
    g.initializers
        .insert("split".into(), Tensor::from_i64s(vec![0, 0, HEADS as i64, head]));
    g.initializers
        .insert("merge".into(), Tensor::from_i64s(vec![0, 0, HIDDEN as i64]));
    g.initializers
        .insert("scale".into(), Tensor::scalar_f32(1.0 / (head as f32).sqrt()));
    let bin = |op| Op::Elementwise(ElementwiseOp::Binary { op, legacy_axis: None });
    let tr = |p: &[i64]| Op::Tensor(TensorOp::Transpose { perm: Some(p.to_vec()) });
    let reshape = || {
        Op::Tensor(TensorOp::Reshape {
            allowzero: false,
            shape: None,
        })
    };
    let mm = || Op::Linalg(LinalgOp::MatMul);
    let nodes: Vec<(Op, &[&str], &str)> = vec![
        (mm(), &["x", "wq"], "q0"),
        (bin(Binary::Add), &["q0", "wq_b"], "q"),
        (mm(), &["x", "wk"], "k0"),
        (bin(Binary::Add), &["k0", "wk_b"], "k"),
        (mm(), &["x", "wv"], "v0"),
        (bin(Binary::Add), &["v0", "wv_b"], "v"),
        (reshape(), &["q", "split"], "q4"),
        (tr(&[0, 2, 1, 3]), &["q4"], "qt"),
        (reshape(), &["k", "split"], "k4"),
        (tr(&[0, 2, 3, 1]), &["k4"], "kt"),
        (reshape(), &["v", "split"], "v4"),
        (tr(&[0, 2, 1, 3]), &["v4"], "vt"),
        (mm(), &["qt", "kt"], "scores"),
        (bin(Binary::Mul), &["scores", "scale"], "scaled"),
        (bin(Binary::Add), &["scaled", "mask"], "masked"),
        (
            Op::Linalg(LinalgOp::Softmax(SoftmaxAttrs {
                kind: SoftmaxKind::Softmax,
                axis: -1,
                flatten: false,
            })),
            &["masked"],
            "probs",
        ),
        (mm(), &["probs", "vt"], "ctx4"),
        (tr(&[0, 2, 1, 3]), &["ctx4"], "ctxt"),
        (reshape(), &["ctxt", "merge"], "ctx"),
        (mm(), &["ctx", "wo"], "o0"),
        (bin(Binary::Add), &["o0", "wo_b"], "o1"),
        (bin(Binary::Add), &["o1", "x"], "o2"),
        (Op::Elementwise(ElementwiseOp::Unary(Unary::Relu)), &["o2"], "y"),
    ];
    for (i, (op, ins, out)) in nodes.into_iter().enumerate() {
        g.nodes.push(Node {
            name: format!("n{i}_{out}"),
            op,
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.to_string()],
        });
    }
    let mut m = Model {
        graph: g,
        opsets: [("".to_string(), 21)].into_iter().collect(),
        ir_version: 10,
        ..Default::default()
    };
    carbide::ir::infer::infer_graph(&mut m.graph, &Default::default()).expect("infers");
    m
}

fn feeds(batch: usize, seq: usize) -> Vec<(String, Value)> {
    // Mask: the last `batch` keys of each sequence are padding (-10000).
    let mut mask = vec![0.0f32; batch * seq];
    for b in 0..batch {
        for j in seq.saturating_sub(b + 1)..seq {
            mask[b * seq + j] = -10000.0;
        }
    }
    vec![
        ("x".into(), Value::Tensor(values(&[batch, seq, HIDDEN], seq, 0.1))),
        (
            "mask".into(),
            Value::Tensor(Tensor::F32(
                ArrayD::from_shape_vec(IxDyn(&[batch, 1, 1, seq]), mask).unwrap(),
            )),
        ),
    ]
}

#[test]
fn symbolic_attention_compiles_once_and_runs_at_any_sequence_length() {
    let model = bert_attention();
    for level in [2, 0] {
        let opts = CompileOptions {
            opt_level: level,
            ..Default::default()
        };
        let module = carbide::compile(&model, &opts).expect("compiles");
        let attention_kernels = module
            .steps()
            .iter()
            .filter(|s| matches!(s, Step::Kernel(k) if k.call.entry.starts_with("carbide_attention_")))
            .count();
        assert_eq!(attention_kernels, usize::from(level == 2), "-O{level}");
        for (batch, seq) in [(1, 1), (2, 5), (1, 17), (2, 40)] {
            let f = feeds(batch, seq);
            let want = carbide::Session::new(model.clone())
                .run(f.clone())
                .expect("reference runs");
            let got = module.run(f).expect("compiled runs");
            for ((name, w), (_, g)) in want.iter().zip(&got) {
                compare_values(w, g, Tolerance::default())
                    .unwrap_or_else(|e| panic!("-O{level} batch {batch} seq {seq}: output {name}: {e}"));
            }
        }
    }
}
