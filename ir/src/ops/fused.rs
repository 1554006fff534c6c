//! Carbide's own fused ops (domain `com.carbide`): what ONNX has no single
//! op for, so that the optimizer can hand a backend one kernel instead of a
//! chain. Each is `activation(core + bias + residual)`:
//!
//! | op            | inputs                         | core                         |
//! |---------------|--------------------------------|------------------------------|
//! | `FusedConv`   | X, W, B?, Z?                   | `Conv(X, W, B)`              |
//! | `FusedGemm`   | A, B, C?, Z?                   | `Gemm(A, B, C)` (alpha/beta) |
//! | `FusedMatMul` | A, B, bias?, Z?                | `MatMul(A, B) + bias`        |
//!
//! `Z` is the residual (e.g. ResNet's skip connection), added before the
//! activation; it broadcasts onto the core's output but never widens it.
//! Absent optional inputs are empty names, as in ONNX. In ONNX form the
//! activation is the string attribute `activation` (see [`Activation::name`])
//! with its parameters in `activation_params`, so an optimized graph can be
//! written out and read back.

use super::linalg::{GemmAttrs, LinalgOp};
use super::nn::{AutoPad, ConvAttrs, NnOp};
use super::{broadcast_shapes, InferCtx, OpKind, ParseCtx};
use crate::attr::Attr;
use crate::error::{IrError, IrResult};
use crate::types::{Dim, TensorType, ValueType};

/// The ONNX domain of Carbide's fused ops.
pub const CARBIDE_DOMAIN: &str = "com.carbide";

/// The elementwise activation applied last by a fused op.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    Tanh,
    /// `tanh`: the tanh approximation instead of the exact erf form.
    Gelu {
        tanh: bool,
    },
    HardSwish,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * sigmoid(x) (Swish with alpha 1).
    Silu,
}

impl Activation {
    /// The `activation` attribute value.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Identity => "Identity",
            Activation::Relu => "Relu",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::Clip { .. } => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Gelu { tanh: false } => "Gelu",
            Activation::Gelu { tanh: true } => "GeluTanh",
            Activation::HardSwish => "HardSwish",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::Silu => "Silu",
        }
    }

    /// The `activation_params` attribute value.
    pub fn params(&self) -> Vec<f32> {
        match *self {
            Activation::LeakyRelu { alpha } => vec![alpha],
            Activation::Clip { min, max } => vec![min, max],
            Activation::HardSigmoid { alpha, beta } => vec![alpha, beta],
            _ => Vec::new(),
        }
    }

    /// Parses the `activation` / `activation_params` pair.
    pub fn from_attr(op: &str, name: &str, params: &[f32]) -> IrResult<Activation> {
        let want = |n: usize| -> IrResult<()> {
            if params.len() == n {
                Ok(())
            } else {
                Err(IrError::bad_attr(
                    op,
                    "activation_params",
                    format!("{name} takes {n} parameters, got {}", params.len()),
                ))
            }
        };
        let act = match name {
            "Identity" => Activation::Identity,
            "Relu" => Activation::Relu,
            "LeakyRelu" => {
                want(1)?;
                Activation::LeakyRelu { alpha: params[0] }
            }
            "Clip" => {
                want(2)?;
                Activation::Clip {
                    min: params[0],
                    max: params[1],
                }
            }
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            "Gelu" => Activation::Gelu { tanh: false },
            "GeluTanh" => Activation::Gelu { tanh: true },
            "HardSwish" => Activation::HardSwish,
            "HardSigmoid" => {
                want(2)?;
                Activation::HardSigmoid {
                    alpha: params[0],
                    beta: params[1],
                }
            }
            "Silu" => Activation::Silu,
            other => {
                return Err(IrError::bad_attr(
                    op,
                    "activation",
                    format!("unknown activation '{other}'"),
                ))
            }
        };
        if !matches!(
            act,
            Activation::LeakyRelu { .. } | Activation::Clip { .. } | Activation::HardSigmoid { .. }
        ) {
            want(0)?;
        }
        Ok(act)
    }

    /// The activation applied to one f32 value, for backends that evaluate
    /// it per element; the reference runtime composes its elementwise ops.
    pub fn apply_f32(&self, x: f32) -> f32 {
        match *self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + erf_f32(x / std::f32::consts::SQRT_2)),
            Activation::Gelu { tanh: true } => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// erf from the Numerical Recipes erfc Chebyshev fit (fractional error
/// below 1.2e-7), evaluated in f64: std has no erf.
fn erf_f32(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

/// Carbide's fused ops; see the module doc for their inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[allow(clippy::enum_variant_names)] // the op type names, as written in ONNX form
pub enum FusedOp {
    FusedConv { conv: ConvAttrs, activation: Activation },
    FusedGemm { gemm: GemmAttrs, activation: Activation },
    FusedMatMul { activation: Activation },
}

impl FusedOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if cx.domain != CARBIDE_DOMAIN {
            return Ok(None);
        }
        let op = cx.op_type.to_string();
        let activation = {
            let name = cx.attrs.string_or("activation", "Identity")?;
            let params = cx.attrs.floats("activation_params")?.unwrap_or_default();
            Activation::from_attr(&op, &name, &params)?
        };
        let parsed = match op.as_str() {
            "FusedConv" => FusedOp::FusedConv {
                conv: super::nn::parse_conv(cx, true)?,
                activation,
            },
            "FusedGemm" => {
                let a = &mut cx.attrs;
                let gemm = GemmAttrs {
                    alpha: a.float_or("alpha", 1.0)?,
                    beta: a.float_or("beta", 1.0)?,
                    trans_a: a.int_or("transA", 0)? != 0,
                    trans_b: a.int_or("transB", 0)? != 0,
                };
                FusedOp::FusedGemm { gemm, activation }
            }
            "FusedMatMul" => FusedOp::FusedMatMul { activation },
            _ => {
                return Err(IrError::UnsupportedOp {
                    domain: cx.domain.to_string(),
                    op_type: op,
                    opset: cx.opset,
                })
            }
        };
        if cx.num_inputs < 2 || cx.num_inputs > 4 {
            return Err(IrError::invalid(
                &op,
                format!("takes 2 to 4 inputs, got {}", cx.num_inputs),
            ));
        }
        cx.attrs.finish()?;
        Ok(Some(parsed))
    }

    pub fn activation(&self) -> Activation {
        match self {
            FusedOp::FusedConv { activation, .. }
            | FusedOp::FusedGemm { activation, .. }
            | FusedOp::FusedMatMul { activation } => *activation,
        }
    }

    /// The unfused op at the core of this one (bias included for Conv and
    /// Gemm, which take it as their third input).
    pub fn core_op(&self) -> super::Op {
        match self {
            FusedOp::FusedConv { conv, .. } => super::Op::Nn(NnOp::Conv(conv.clone())),
            FusedOp::FusedGemm { gemm, .. } => super::Op::Linalg(LinalgOp::Gemm(gemm.clone())),
            FusedOp::FusedMatMul { .. } => super::Op::Linalg(LinalgOp::MatMul),
        }
    }

    /// Number of leading inputs the core op takes.
    pub fn core_inputs(&self) -> usize {
        match self {
            FusedOp::FusedMatMul { .. } => 2,
            _ => 3,
        }
    }

    /// The ONNX attributes of this op (domain [`CARBIDE_DOMAIN`]); parsing
    /// them back gives the same op.
    pub fn to_attrs(&self) -> Vec<(String, Attr)> {
        let mut out = Vec::new();
        match self {
            FusedOp::FusedConv { conv, .. } => {
                let auto_pad = match conv.auto_pad {
                    AutoPad::NotSet => "NOTSET",
                    AutoPad::SameUpper => "SAME_UPPER",
                    AutoPad::SameLower => "SAME_LOWER",
                    AutoPad::Valid => "VALID",
                };
                out.push(("auto_pad".to_string(), Attr::String(auto_pad.as_bytes().to_vec())));
                let ints = [
                    ("dilations", &conv.dilations),
                    ("kernel_shape", &conv.kernel_shape),
                    ("pads", &conv.pads),
                    ("strides", &conv.strides),
                ];
                for (name, v) in ints {
                    if let Some(v) = v {
                        out.push((name.to_string(), Attr::Ints(v.clone())));
                    }
                }
                out.push(("group".to_string(), Attr::Int(conv.group)));
            }
            FusedOp::FusedGemm { gemm, .. } => {
                out.push(("alpha".to_string(), Attr::Float(gemm.alpha)));
                out.push(("beta".to_string(), Attr::Float(gemm.beta)));
                out.push(("transA".to_string(), Attr::Int(gemm.trans_a as i64)));
                out.push(("transB".to_string(), Attr::Int(gemm.trans_b as i64)));
            }
            FusedOp::FusedMatMul { .. } => {}
        }
        let act = self.activation();
        out.push(("activation".to_string(), Attr::String(act.name().as_bytes().to_vec())));
        let params = act.params();
        if !params.is_empty() {
            out.push(("activation_params".to_string(), Attr::Floats(params)));
        }
        out
    }
}

impl OpKind for FusedOp {
    fn op_type(&self) -> &'static str {
        match self {
            FusedOp::FusedConv { .. } => "FusedConv",
            FusedOp::FusedGemm { .. } => "FusedGemm",
            FusedOp::FusedMatMul { .. } => "FusedMatMul",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let n = self.core_inputs();
        let core_in: Vec<Option<ValueType>> = (0..n).map(|i| cx.inputs.get(i).cloned().flatten()).collect();
        let core_consts: Vec<_> = (0..n).map(|i| cx.consts.get(i).copied().flatten()).collect();
        let core_cx = InferCtx {
            inputs: &core_in,
            consts: &core_consts,
            num_outputs: 1,
            op: cx.op,
        };
        let out = self.core_op().infer(&core_cx)?;
        let ValueType::Tensor(mut y) = out.into_iter().next().unwrap_or(ValueType::Unknown) else {
            return Ok(vec![ValueType::Tensor(TensorType::default())]);
        };
        let addends: &[usize] = match self {
            FusedOp::FusedMatMul { .. } => &[2, 3],
            _ => &[3],
        };
        for &i in addends {
            if let Some(t) = cx.opt_tensor(i)? {
                y = add_onto(cx, &y, &t, i)?;
            }
        }
        Ok(vec![ValueType::Tensor(y)])
    }
}

/// The type of `y + t` where `t` must not widen `y`.
fn add_onto(cx: &InferCtx, y: &TensorType, t: &TensorType, input: usize) -> IrResult<TensorType> {
    if let (Some(a), Some(b)) = (y.dtype, t.dtype) {
        if a != b {
            return Err(cx.err(format!("input {input} has dtype {b}, the result has {a}")));
        }
    }
    let dtype = y.dtype.or(t.dtype);
    let shape = match (&y.shape, &t.shape) {
        (Some(ys), Some(ts)) => {
            if ts.len() > ys.len() {
                return Err(cx.err(format!(
                    "input {input} has rank {}, more than the result's {}",
                    ts.len(),
                    ys.len()
                )));
            }
            let b = broadcast_shapes(cx.op, &[ys, ts])?;
            for (k, (d, e)) in ys.iter().zip(&b).enumerate() {
                if let (Dim::Known(p), Dim::Known(q)) = (d, e) {
                    if p != q {
                        return Err(cx.err(format!(
                            "input {input} would widen dim {k} of the result from {p} to {q}"
                        )));
                    }
                }
            }
            Some(
                ys.iter()
                    .zip(b)
                    .map(|(d, e)| if d.known().is_some() { d.clone() } else { e })
                    .collect(),
            )
        }
        (s, _) => s.clone(),
    };
    Ok(TensorType { dtype, shape })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attrs;
    use crate::ops::Op;
    use crate::DType;

    fn parse(op_type: &str, items: Vec<(String, Attr)>, num_inputs: usize) -> IrResult<Op> {
        let mut cx = ParseCtx {
            domain: CARBIDE_DOMAIN,
            op_type,
            opset: 1,
            attrs: Attrs::new(op_type, items),
            num_inputs,
            num_outputs: 1,
        };
        Op::parse(&mut cx)
    }

    fn tt(dtype: DType, shape: &[usize]) -> Option<ValueType> {
        Some(ValueType::Tensor(TensorType {
            dtype: Some(dtype),
            shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
        }))
    }

    #[test]
    fn attrs_round_trip() {
        let ops = [
            FusedOp::FusedConv {
                conv: ConvAttrs {
                    auto_pad: AutoPad::NotSet,
                    dilations: Some(vec![1, 1]),
                    group: 2,
                    kernel_shape: Some(vec![3, 3]),
                    pads: Some(vec![1, 1, 1, 1]),
                    strides: Some(vec![2, 2]),
                },
                activation: Activation::Clip { min: 0.0, max: 6.0 },
            },
            FusedOp::FusedGemm {
                gemm: GemmAttrs {
                    alpha: 0.5,
                    beta: 2.0,
                    trans_a: false,
                    trans_b: true,
                },
                activation: Activation::Gelu { tanh: true },
            },
            FusedOp::FusedMatMul {
                activation: Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
            },
        ];
        for op in ops {
            let back = parse(op.op_type(), op.to_attrs(), 3).unwrap();
            assert_eq!(back, Op::Fused(op));
        }
    }

    #[test]
    fn bad_activation_is_an_error() {
        let items = vec![("activation".to_string(), Attr::String(b"Swoosh".to_vec()))];
        let err = parse("FusedMatMul", items, 2).unwrap_err().to_string();
        assert!(err.contains("Swoosh"), "{err}");
        let items = vec![("activation".to_string(), Attr::String(b"LeakyRelu".to_vec()))];
        assert!(parse("FusedMatMul", items, 2).is_err());
        assert!(parse("FusedNothing", vec![], 2).is_err());
    }

    #[test]
    fn infers_matmul_with_bias_and_residual() {
        let op = FusedOp::FusedMatMul {
            activation: Activation::Relu,
        };
        let inputs = [
            tt(DType::F32, &[2, 5, 4]),
            tt(DType::F32, &[4, 3]),
            tt(DType::F32, &[3]),
            tt(DType::F32, &[2, 5, 3]),
        ];
        let consts = [None; 4];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 1,
            op: "FusedMatMul",
        };
        assert_eq!(op.infer(&cx).unwrap(), vec![tt(DType::F32, &[2, 5, 3]).unwrap()]);
        // A residual that would widen the result is rejected.
        let inputs = [
            tt(DType::F32, &[5, 4]),
            tt(DType::F32, &[4, 3]),
            None,
            tt(DType::F32, &[2, 5, 3]),
        ];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 1,
            op: "FusedMatMul",
        };
        assert!(op.infer(&cx).is_err());
    }

    #[test]
    fn activation_values() {
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(close(Activation::Gelu { tanh: false }.apply_f32(1.0), 0.841_344_7));
        assert!(close(Activation::Gelu { tanh: true }.apply_f32(1.0), 0.841_192));
        assert!(close(Activation::Silu.apply_f32(2.0), 2.0 / (1.0 + (-2.0f32).exp())));
        assert!(close(Activation::HardSwish.apply_f32(1.0), 1.0 * (1.0 / 6.0 + 0.5)));
        assert!(close(Activation::Clip { min: 0.0, max: 6.0 }.apply_f32(7.0), 6.0));
    }
}
