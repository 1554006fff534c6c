//! Carbide's fused ops (`FusedConv`, `FusedGemm`, `FusedMatMul`): a group
//! anchored on one is rewritten into the equivalent unfused group — the core
//! Conv/Gemm/MatMul, then `+ bias`, `+ residual` and the activation as
//! elementwise nodes, then the group's own epilogue — so the conv and GEMM
//! templates apply them in their fused epilogue before the store. An
//! activation the epilogue cannot express makes the template decline
//! (`Ok(None)`), and the group falls back to the host: never a wrong answer.

use crate::KernelGroup;
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
use carbide_ir::ops::fused::{Activation, FusedOp};
use carbide_ir::{Node, Op};

/// The elementwise op computing `activation` on its one input.
fn activation_op(a: Activation) -> Option<Op> {
    let u = match a {
        Activation::Identity => return None,
        Activation::Relu => Unary::Relu,
        Activation::LeakyRelu { alpha } => Unary::LeakyRelu { alpha },
        Activation::Clip { min, max } => {
            return Some(Op::Elementwise(ElementwiseOp::Clip {
                min: Some(min),
                max: Some(max),
            }))
        }
        Activation::Sigmoid => Unary::Sigmoid,
        Activation::Tanh => Unary::Tanh,
        Activation::Gelu { tanh } => Unary::Gelu { tanh },
        Activation::HardSwish => Unary::HardSwish,
        Activation::HardSigmoid { alpha, beta } => Unary::HardSigmoid { alpha, beta },
        Activation::Silu => Unary::Swish { alpha: 1.0 },
    };
    Some(Op::Elementwise(ElementwiseOp::Unary(u)))
}

fn add() -> Op {
    Op::Elementwise(ElementwiseOp::Binary {
        op: Binary::Add,
        legacy_axis: None,
    })
}

/// The nodes computing fused node `n` unfused: core, bias Add (FusedMatMul),
/// residual Add, activation. Intermediate values get names derived from the
/// output's that no graph value has (`#` is not produced by importers or passes).
pub fn expand_node(n: &Node) -> Option<Vec<Node>> {
    let Op::Fused(f) = &n.op else { return None };
    let out = n.outputs.first()?;
    let core_n = f.core_inputs();
    let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty()).cloned();
    let mut addends = Vec::new();
    if matches!(f, FusedOp::FusedMatMul { .. }) {
        addends.extend(input(2));
    }
    addends.extend(input(3));
    let act = activation_op(f.activation());
    let steps = addends.len() + usize::from(act.is_some());
    let mut nodes = Vec::with_capacity(steps + 1);
    let mut k = 0;
    let mut fresh = |last: bool| {
        k += 1;
        if last {
            out.clone()
        } else {
            format!("{out}#fused{k}")
        }
    };
    let mut cur = fresh(steps == 0);
    let mut core_inputs: Vec<String> = n.inputs.iter().take(core_n).cloned().collect();
    while core_inputs.last().is_some_and(|s| s.is_empty()) {
        core_inputs.pop();
    }
    nodes.push(Node {
        name: n.name.clone(),
        op: f.core_op(),
        inputs: core_inputs,
        outputs: vec![cur.clone()],
    });
    let mut done = 0;
    for a in addends {
        done += 1;
        let next = fresh(done == steps);
        nodes.push(Node {
            name: format!("{}#add{done}", n.name),
            op: add(),
            inputs: vec![cur, a],
            outputs: vec![next.clone()],
        });
        cur = next;
    }
    if let Some(op) = act {
        nodes.push(Node {
            name: format!("{}#act", n.name),
            op,
            inputs: vec![cur],
            outputs: vec![out.clone()],
        });
    }
    Some(nodes)
}

/// `group` with its fused anchor expanded (same inputs and outputs, so the
/// kernel's buffer indices refer to the original group's); `None` when the
/// anchor is not a fused op.
pub fn expand(group: &KernelGroup) -> Option<KernelGroup> {
    let anchor = group.nodes.first()?;
    let mut nodes = expand_node(anchor)?;
    nodes.extend(group.nodes[1..].iter().cloned());
    Some(KernelGroup {
        nodes,
        inputs: group.inputs.clone(),
        outputs: group.outputs.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check, rand_tensor, tt};
    use crate::{GroupValue, Target};
    use carbide_ir::ops::linalg::GemmAttrs;
    use carbide_ir::ops::nn::{AutoPad, ConvAttrs};

    fn node(op: FusedOp, inputs: &[&str]) -> Node {
        Node {
            name: "f".into(),
            op: Op::Fused(op),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec!["y".into()],
        }
    }

    #[test]
    fn expansion_orders_bias_residual_activation() {
        let n = node(
            FusedOp::FusedMatMul {
                activation: Activation::Gelu { tanh: false },
            },
            &["a", "b", "bias", "z"],
        );
        let ns = expand_node(&n).unwrap();
        let types: Vec<_> = ns.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(types, ["MatMul", "Add", "Add", "Gelu"]);
        assert_eq!(ns[1].inputs[1], "bias");
        assert_eq!(ns[2].inputs[1], "z");
        assert_eq!(ns[3].outputs, ["y"]);
        // Identity activation, no addends: the core alone writes the output.
        let n = node(
            FusedOp::FusedGemm {
                gemm: GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: true,
                },
                activation: Activation::Identity,
            },
            &["a", "b", "c"],
        );
        let ns = expand_node(&n).unwrap();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].inputs, ["a", "b", "c"]);
        assert_eq!(ns[0].outputs, ["y"]);
    }

    #[test]
    fn fused_kernels_match_the_reference() {
        let conv = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: None,
            group: 1,
            kernel_shape: Some(vec![3, 3]),
            pads: Some(vec![1, 1, 1, 1]),
            strides: None,
        };
        let cases: Vec<(FusedOp, Vec<Vec<usize>>, Vec<bool>)> = vec![
            (
                FusedOp::FusedMatMul {
                    activation: Activation::Gelu { tanh: false },
                },
                vec![vec![7, 19], vec![19, 33], vec![33], vec![7, 33]],
                vec![false, true, true, false],
            ),
            (
                FusedOp::FusedMatMul {
                    activation: Activation::Identity,
                },
                vec![vec![13, 8], vec![8, 5], vec![5]],
                vec![false, true, true],
            ),
            (
                FusedOp::FusedGemm {
                    gemm: GemmAttrs {
                        alpha: 0.5,
                        beta: 2.0,
                        trans_a: false,
                        trans_b: true,
                    },
                    activation: Activation::Clip { min: -0.1, max: 0.2 },
                },
                vec![vec![9, 6], vec![11, 6], vec![11]],
                vec![false, true, true],
            ),
            (
                FusedOp::FusedConv {
                    conv,
                    activation: Activation::Relu,
                },
                vec![vec![1, 4, 7, 6], vec![4, 4, 3, 3], vec![4], vec![1, 4, 7, 6]],
                vec![false, true, true, false],
            ),
        ];
        let targets: Vec<Target> = ["x86-64-avx2", "x86-64-avx512"]
            .into_iter()
            .map(|t| Target::parse(t).unwrap())
            .filter(Target::runs_on_host)
            .collect();
        for (op, shapes, consts) in cases {
            let mut inputs = Vec::new();
            let mut feeds = Vec::new();
            for (i, (shape, c)) in shapes.iter().zip(&consts).enumerate() {
                let t = rand_tensor(shape, i as u64 + 1);
                inputs.push(GroupValue {
                    name: format!("i{i}"),
                    ty: tt(shape),
                    constant: c.then(|| t.clone()),
                });
                feeds.push(t);
            }
            let names: Vec<String> = inputs.iter().map(|v| v.name.clone()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let out_shape = match op {
                FusedOp::FusedGemm { .. } => vec![shapes[0][0], shapes[1][0]],
                FusedOp::FusedMatMul { .. } => vec![shapes[0][0], shapes[1][1]],
                FusedOp::FusedConv { .. } => shapes[0].clone(),
            };
            let g = KernelGroup {
                nodes: vec![node(op.clone(), &refs)],
                inputs,
                outputs: vec![GroupValue {
                    name: "y".into(),
                    ty: tt(&out_shape),
                    constant: None,
                }],
            };
            for t in &targets {
                check(&g, t, &feeds, 1e-4);
            }
        }
    }
}
