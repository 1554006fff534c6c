//! Carbide's fused ops, composed from the host kernels of their parts so the
//! reference semantics are by construction those of the unfused chain:
//! `activation(core + bias + residual)`.

use super::{opt_tensor_in, EvalCtx};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
use carbide_ir::ops::fused::{Activation, FusedOp};
use carbide_ir::{Op, Value};

pub fn eval(op: &FusedOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let one = EvalCtx {
        num_outputs: 1,
        runner: cx.runner,
        seed: cx.seed,
    };
    let core_in: Vec<Option<&Value>> = (0..op.core_inputs())
        .map(|i| inputs.get(i).copied().flatten())
        .collect();
    let mut y = first(super::eval(&op.core_op(), &core_in, &one)?)?;
    let addends: &[usize] = match op {
        FusedOp::FusedMatMul { .. } => &[2, 3],
        _ => &[3],
    };
    let add = Op::Elementwise(ElementwiseOp::Binary {
        op: Binary::Add,
        legacy_axis: None,
    });
    for &i in addends {
        let Some(t) = opt_tensor_in(inputs, i)? else { continue };
        let shape = value_shape(&y)?;
        y = first(super::eval(&add, &[Some(&y), Some(&Value::Tensor(t.clone()))], &one)?)?;
        if value_shape(&y)? != shape {
            return Err(invalid(format!(
                "{}: input {i} of shape {:?} widens the result of shape {shape:?}",
                carbide_ir::ops::OpKind::op_type(op),
                t.shape()
            )));
        }
    }
    let act = match op.activation() {
        Activation::Identity => return Ok(vec![y]),
        Activation::Relu => ElementwiseOp::Unary(Unary::Relu),
        Activation::LeakyRelu { alpha } => ElementwiseOp::Unary(Unary::LeakyRelu { alpha }),
        Activation::Clip { min, max } => ElementwiseOp::Clip {
            min: Some(min),
            max: Some(max),
        },
        Activation::Sigmoid => ElementwiseOp::Unary(Unary::Sigmoid),
        Activation::Tanh => ElementwiseOp::Unary(Unary::Tanh),
        Activation::Gelu { tanh } => ElementwiseOp::Unary(Unary::Gelu { tanh }),
        Activation::HardSwish => ElementwiseOp::Unary(Unary::HardSwish),
        Activation::HardSigmoid { alpha, beta } => ElementwiseOp::Unary(Unary::HardSigmoid { alpha, beta }),
        Activation::Silu => ElementwiseOp::Unary(Unary::Swish { alpha: 1.0 }),
    };
    Ok(vec![first(super::eval(&Op::Elementwise(act), &[Some(&y)], &one)?)?])
}

fn first(mut out: Vec<Value>) -> OpResult<Value> {
    if out.is_empty() {
        return Err(invalid("a fused op's part produced no output"));
    }
    Ok(out.swap_remove(0))
}

fn value_shape(v: &Value) -> OpResult<Vec<usize>> {
    match v {
        Value::Tensor(t) => Ok(t.shape().to_vec()),
        _ => Err(invalid("a fused op's part produced a non-tensor")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;
    use carbide_ir::ndarray::ArrayD;
    use carbide_ir::ops::linalg::GemmAttrs;
    use carbide_ir::ops::nn::{AutoPad, ConvAttrs, NnOp};
    use carbide_ir::ops::LinalgOp;
    use carbide_ir::{Graph, Model, Node, Tensor, ValueInfo, ValueType};

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * scale).collect();
        Tensor::F32(ArrayD::from_shape_vec(shape.to_vec(), v).unwrap())
    }

    fn node(op: Op, ins: &[&str], out: &str) -> Node {
        Node {
            name: out.to_string(),
            op,
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.to_string()],
        }
    }

    /// Runs `nodes` with initializers `inits` and returns output `out`.
    fn run(nodes: Vec<Node>, inits: &[(&str, Tensor)], out: &str) -> Tensor {
        let graph = Graph {
            name: "g".into(),
            inputs: vec![],
            outputs: vec![ValueInfo {
                name: out.into(),
                ty: ValueType::Unknown,
            }],
            initializers: inits.iter().map(|(n, t)| (n.to_string(), t.clone())).collect(),
            nodes,
            value_info: Default::default(),
        };
        let model = Model {
            graph,
            opsets: [("".to_string(), 21)].into_iter().collect(),
            ..Default::default()
        };
        let mut outs = Session::new(model).run(vec![]).unwrap();
        match outs.remove(0).1 {
            Value::Tensor(t) => t,
            _ => panic!("not a tensor"),
        }
    }

    fn binary(op: Binary) -> Op {
        Op::Elementwise(ElementwiseOp::Binary { op, legacy_axis: None })
    }

    fn assert_close(a: &Tensor, b: &Tensor) {
        let (Tensor::F32(a), Tensor::F32(b)) = (a, b) else {
            panic!("f32 expected")
        };
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 + 1e-4 * y.abs(), "{x} vs {y}");
        }
    }

    #[test]
    fn fused_conv_matches_the_chain() {
        let conv = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: None,
            group: 1,
            kernel_shape: None,
            pads: Some(vec![1, 1, 1, 1]),
            strides: None,
        };
        let inits = [
            ("x", ramp(&[1, 2, 5, 5], 0.1)),
            ("w", ramp(&[3, 2, 3, 3], 0.05)),
            ("b", ramp(&[3], 0.2)),
            ("z", ramp(&[1, 3, 5, 5], 0.03)),
        ];
        let chain = vec![
            node(Op::Nn(NnOp::Conv(conv.clone())), &["x", "w", "b"], "c"),
            node(binary(Binary::Add), &["c", "z"], "s"),
            node(Op::Elementwise(ElementwiseOp::Unary(Unary::Relu)), &["s"], "y"),
        ];
        let fused = vec![node(
            Op::Fused(FusedOp::FusedConv {
                conv,
                activation: Activation::Relu,
            }),
            &["x", "w", "b", "z"],
            "y",
        )];
        assert_close(&run(fused, &inits, "y"), &run(chain, &inits, "y"));
    }

    #[test]
    fn fused_gemm_and_matmul_match_the_chain() {
        let gemm = GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
        };
        let inits = [
            ("a", ramp(&[4, 6], 0.1)),
            ("b", ramp(&[5, 6], 0.1)),
            ("c", ramp(&[5], 0.3)),
            ("z", ramp(&[4, 5], 0.2)),
        ];
        let chain = vec![
            node(Op::Linalg(LinalgOp::Gemm(gemm.clone())), &["a", "b", "c"], "g"),
            node(binary(Binary::Add), &["g", "z"], "s"),
            node(
                Op::Elementwise(ElementwiseOp::Unary(Unary::Gelu { tanh: true })),
                &["s"],
                "y",
            ),
        ];
        let fused = vec![node(
            Op::Fused(FusedOp::FusedGemm {
                gemm,
                activation: Activation::Gelu { tanh: true },
            }),
            &["a", "b", "c", "z"],
            "y",
        )];
        assert_close(&run(fused, &inits, "y"), &run(chain, &inits, "y"));

        let inits = [
            ("a", ramp(&[2, 4, 6], 0.1)),
            ("b", ramp(&[6, 5], 0.1)),
            ("c", ramp(&[5], 0.3)),
        ];
        let chain = vec![
            node(Op::Linalg(LinalgOp::MatMul), &["a", "b"], "m"),
            node(binary(Binary::Add), &["m", "c"], "s"),
            node(
                Op::Elementwise(ElementwiseOp::Clip {
                    min: Some(-0.1),
                    max: Some(0.2),
                }),
                &["s"],
                "y",
            ),
        ];
        let fused = vec![node(
            Op::Fused(FusedOp::FusedMatMul {
                activation: Activation::Clip { min: -0.1, max: 0.2 },
            }),
            &["a", "b", "c"],
            "y",
        )];
        assert_close(&run(fused, &inits, "y"), &run(chain, &inits, "y"));
    }

    #[test]
    fn a_widening_residual_is_an_error() {
        let inits = [
            ("a", ramp(&[4, 6], 0.1)),
            ("b", ramp(&[6, 5], 0.1)),
            ("z", ramp(&[3, 4, 5], 0.1)),
        ];
        let op = Op::Fused(FusedOp::FusedMatMul {
            activation: Activation::Identity,
        });
        let graph = Graph {
            outputs: vec![ValueInfo {
                name: "y".into(),
                ty: ValueType::Unknown,
            }],
            initializers: inits.iter().map(|(n, t)| (n.to_string(), t.clone())).collect(),
            nodes: vec![node(op, &["a", "b", "", "z"], "y")],
            ..Default::default()
        };
        let model = Model {
            graph,
            ..Default::default()
        };
        let err = Session::new(model).run(vec![]).unwrap_err().to_string();
        assert!(err.contains("widens"), "{err}");
    }
}
