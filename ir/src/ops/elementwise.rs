//! Elementwise ops: unary math and activations, broadcasting binary
//! arithmetic/comparison/logic, variadic Max/Min/Sum/Mean, Clip, Where and
//! the casts (Cast, CastLike, BitCast).

use super::{broadcast_types, InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::small_float::E8M0Rounding;
use crate::types::{TensorType, ValueType};
use crate::DType;

/// Ops with one input and one output of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Unary {
    Abs,
    Neg,
    Reciprocal,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sqrt,
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Sign,
    IsNaN,
    IsInf {
        detect_positive: bool,
        detect_negative: bool,
    },
    Not,
    BitwiseNot,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Softplus,
    Softsign,
    Tanh,
    ThresholdedRelu {
        alpha: f32,
    },
    Shrink {
        bias: f32,
        lambd: f32,
    },
    Mish,
    /// `tanh`: the tanh approximation instead of the exact erf form.
    Gelu {
        tanh: bool,
    },
    Swish {
        alpha: f32,
    },
}

/// Ops with two broadcasting inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod`: C fmod (sign of the dividend) instead of Python's mod.
    Mod {
        fmod: bool,
    },
    BitShift {
        left: bool,
    },
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    And,
    Or,
    Xor,
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    /// Slope broadcast unidirectionally onto X.
    PRelu,
}

impl Binary {
    /// Comparisons and logic ops produce bool.
    pub fn yields_bool(self) -> bool {
        use Binary::*;
        matches!(
            self,
            And | Or | Xor | Equal | Greater | GreaterOrEqual | Less | LessOrEqual
        )
    }
}

/// Ops over any number of broadcasting inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variadic {
    Max,
    Min,
    Sum,
    Mean,
}

/// Cast's conversion options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CastAttrs {
    /// Clamp to the finite range when casting to float8 (opset 19+, default on).
    pub saturate: bool,
    /// Rounding when casting to float8e8m0 (opset 24+).
    pub round_mode: E8M0Rounding,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ElementwiseOp {
    Unary(Unary),
    /// `axis`: the legacy (opset < 7) broadcast of B into A starting at
    /// this axis, when the node sets `broadcast=1` and `axis`.
    Binary {
        op: Binary,
        legacy_axis: Option<i64>,
    },
    Variadic(Variadic),
    /// Bounds from attributes before opset 11; from inputs 1 and 2 after.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Where,
    Cast {
        to: DType,
        attrs: CastAttrs,
    },
    CastLike(CastAttrs),
    BitCast {
        to: DType,
    },
}

fn unary_name(u: &Unary) -> &'static str {
    use Unary::*;
    match u {
        Abs => "Abs",
        Neg => "Neg",
        Reciprocal => "Reciprocal",
        Floor => "Floor",
        Ceil => "Ceil",
        Round => "Round",
        Sqrt => "Sqrt",
        Exp => "Exp",
        Log => "Log",
        Sin => "Sin",
        Cos => "Cos",
        Tan => "Tan",
        Asin => "Asin",
        Acos => "Acos",
        Atan => "Atan",
        Sinh => "Sinh",
        Cosh => "Cosh",
        Asinh => "Asinh",
        Acosh => "Acosh",
        Atanh => "Atanh",
        Erf => "Erf",
        Sign => "Sign",
        IsNaN => "IsNaN",
        IsInf { .. } => "IsInf",
        Not => "Not",
        BitwiseNot => "BitwiseNot",
        Relu => "Relu",
        LeakyRelu { .. } => "LeakyRelu",
        Elu { .. } => "Elu",
        Selu { .. } => "Selu",
        Celu { .. } => "Celu",
        Sigmoid => "Sigmoid",
        HardSigmoid { .. } => "HardSigmoid",
        HardSwish => "HardSwish",
        Softplus => "Softplus",
        Softsign => "Softsign",
        Tanh => "Tanh",
        ThresholdedRelu { .. } => "ThresholdedRelu",
        Shrink { .. } => "Shrink",
        Mish => "Mish",
        Gelu { .. } => "Gelu",
        Swish { .. } => "Swish",
    }
}

fn binary_name(b: &Binary) -> &'static str {
    use Binary::*;
    match b {
        Add => "Add",
        Sub => "Sub",
        Mul => "Mul",
        Div => "Div",
        Pow => "Pow",
        Mod { .. } => "Mod",
        BitShift { .. } => "BitShift",
        BitwiseAnd => "BitwiseAnd",
        BitwiseOr => "BitwiseOr",
        BitwiseXor => "BitwiseXor",
        And => "And",
        Or => "Or",
        Xor => "Xor",
        Equal => "Equal",
        Greater => "Greater",
        GreaterOrEqual => "GreaterOrEqual",
        Less => "Less",
        LessOrEqual => "LessOrEqual",
        PRelu => "PRelu",
    }
}

/// Cast-1 named the target type with a string.
fn dtype_from_name(s: &str) -> Option<DType> {
    let s = s.to_ascii_uppercase();
    Some(match s.as_str() {
        "FLOAT" => DType::F32,
        "UINT8" => DType::U8,
        "INT8" => DType::I8,
        "UINT16" => DType::U16,
        "INT16" => DType::I16,
        "INT32" => DType::I32,
        "INT64" => DType::I64,
        "STRING" => DType::String,
        "BOOL" => DType::Bool,
        "FLOAT16" => DType::F16,
        "DOUBLE" => DType::F64,
        "UINT32" => DType::U32,
        "UINT64" => DType::U64,
        "BFLOAT16" => DType::BF16,
        _ => return None,
    })
}

/// Reads a `to` attribute: an ONNX dtype code (or a name before opset 6).
fn parse_to(cx: &mut ParseCtx) -> IrResult<DType> {
    let op = cx.op_type;
    let to = match cx.attrs.take("to") {
        None => return Err(IrError::bad_attr(op, "to", "required attribute is missing")),
        Some(crate::Attr::Int(code)) => DType::from_onnx_code(code as i32)
            .filter(|_| code <= i32::MAX as i64)
            .ok_or_else(|| IrError::bad_attr(op, "to", format!("unknown data type code {code}")))?,
        Some(crate::Attr::String(s)) => {
            let s = String::from_utf8_lossy(&s).to_string();
            dtype_from_name(&s).ok_or_else(|| IrError::bad_attr(op, "to", format!("unknown data type '{s}'")))?
        }
        Some(a) => return Err(IrError::bad_attr(op, "to", format!("expected int, got {}", a.kind()))),
    };
    if matches!(to, DType::Complex64 | DType::Complex128) {
        return Err(IrError::bad_attr(op, "to", format!("casting to {to} is not supported")));
    }
    Ok(to)
}

fn parse_cast_attrs(cx: &mut ParseCtx) -> IrResult<CastAttrs> {
    let saturate = cx.attrs.int_or("saturate", 1)? != 0;
    let mode = cx.attrs.string_or("round_mode", "up")?;
    let round_mode = E8M0Rounding::parse(&mode)
        .ok_or_else(|| IrError::bad_attr(cx.op_type, "round_mode", format!("unknown mode '{mode}'")))?;
    Ok(CastAttrs { saturate, round_mode })
}

fn parse_unary(cx: &mut ParseCtx) -> IrResult<Option<Unary>> {
    use Unary::*;
    let a = &mut cx.attrs;
    Ok(Some(match cx.op_type {
        "Abs" => Abs,
        "Neg" => Neg,
        "Reciprocal" => Reciprocal,
        "Floor" => Floor,
        "Ceil" => Ceil,
        "Round" => Round,
        "Sqrt" => Sqrt,
        "Exp" => Exp,
        "Log" => Log,
        "Sin" => Sin,
        "Cos" => Cos,
        "Tan" => Tan,
        "Asin" => Asin,
        "Acos" => Acos,
        "Atan" => Atan,
        "Sinh" => Sinh,
        "Cosh" => Cosh,
        "Asinh" => Asinh,
        "Acosh" => Acosh,
        "Atanh" => Atanh,
        "Erf" => Erf,
        "Sign" => Sign,
        "IsNaN" => IsNaN,
        "IsInf" => IsInf {
            detect_positive: a.int_or("detect_positive", 1)? != 0,
            detect_negative: a.int_or("detect_negative", 1)? != 0,
        },
        "Not" => Not,
        "BitwiseNot" => BitwiseNot,
        "Relu" => Relu,
        "LeakyRelu" => LeakyRelu {
            alpha: a.float_or("alpha", 0.01)?,
        },
        "Elu" => Elu {
            alpha: a.float_or("alpha", 1.0)?,
        },
        "Selu" => Selu {
            alpha: a.float_or("alpha", 1.673_263_2)?,
            gamma: a.float_or("gamma", 1.050_701)?,
        },
        "Celu" => Celu {
            alpha: a.float_or("alpha", 1.0)?,
        },
        "Sigmoid" => Sigmoid,
        "HardSigmoid" => HardSigmoid {
            alpha: a.float_or("alpha", 0.2)?,
            beta: a.float_or("beta", 0.5)?,
        },
        "HardSwish" => HardSwish,
        "Softplus" => Softplus,
        "Softsign" => Softsign,
        "Tanh" => Tanh,
        "ThresholdedRelu" => ThresholdedRelu {
            alpha: a.float_or("alpha", 1.0)?,
        },
        "Shrink" => Shrink {
            bias: a.float_or("bias", 0.0)?,
            lambd: a.float_or("lambd", 0.5)?,
        },
        "Mish" => Mish,
        "Gelu" => {
            let mode = a.string_or("approximate", "none")?;
            let tanh = match mode.as_str() {
                "none" => false,
                "tanh" => true,
                m => return Err(IrError::bad_attr("Gelu", "approximate", format!("unknown mode '{m}'"))),
            };
            Gelu { tanh }
        }
        "Swish" => Swish {
            alpha: a.float_or("alpha", 1.0)?,
        },
        _ => return Ok(None),
    }))
}

fn parse_binary(cx: &mut ParseCtx) -> IrResult<Option<Binary>> {
    use Binary::*;
    Ok(Some(match cx.op_type {
        "Add" => Add,
        "Sub" => Sub,
        "Mul" => Mul,
        "Div" => Div,
        "Pow" => Pow,
        "Mod" => Mod {
            fmod: cx.attrs.int_or("fmod", 0)? != 0,
        },
        "BitShift" => {
            let d = cx.attrs.req_string("direction")?;
            match d.as_str() {
                "LEFT" => BitShift { left: true },
                "RIGHT" => BitShift { left: false },
                _ => {
                    return Err(IrError::bad_attr(
                        "BitShift",
                        "direction",
                        format!("must be LEFT or RIGHT, got '{d}'"),
                    ))
                }
            }
        }
        "BitwiseAnd" => BitwiseAnd,
        "BitwiseOr" => BitwiseOr,
        "BitwiseXor" => BitwiseXor,
        "And" => And,
        "Or" => Or,
        "Xor" => Xor,
        "Equal" => Equal,
        "Greater" => Greater,
        "GreaterOrEqual" => GreaterOrEqual,
        "Less" => Less,
        "LessOrEqual" => LessOrEqual,
        "PRelu" => PRelu,
        _ => return Ok(None),
    }))
}

impl ElementwiseOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !(cx.domain.is_empty() || cx.domain == "ai.onnx") {
            return Ok(None);
        }
        // Opsets before 6 carried a memory-planning hint with no semantics.
        if cx.opset < 6 {
            cx.attrs.ints("consumed_inputs")?;
        }
        let op = if let Some(u) = parse_unary(cx)? {
            ElementwiseOp::Unary(u)
        } else if let Some(b) = parse_binary(cx)? {
            // Opsets before 7: broadcasting only when `broadcast=1`, with B
            // aligned to A at `axis` (default: trailing alignment).
            let broadcast = cx.attrs.int("broadcast")?;
            let axis = cx.attrs.int("axis")?;
            let legacy_axis = match (broadcast, axis) {
                (Some(1), Some(ax)) => Some(ax),
                _ => None,
            };
            ElementwiseOp::Binary { op: b, legacy_axis }
        } else {
            match cx.op_type {
                "Max" => ElementwiseOp::Variadic(Variadic::Max),
                "Min" => ElementwiseOp::Variadic(Variadic::Min),
                "Sum" => ElementwiseOp::Variadic(Variadic::Sum),
                "Mean" => ElementwiseOp::Variadic(Variadic::Mean),
                "Clip" => {
                    let (min, max) = if cx.opset < 11 {
                        (cx.attrs.float("min")?, cx.attrs.float("max")?)
                    } else {
                        (None, None)
                    };
                    ElementwiseOp::Clip { min, max }
                }
                "Where" => ElementwiseOp::Where,
                "Cast" => {
                    let to = parse_to(cx)?;
                    let attrs = parse_cast_attrs(cx)?;
                    ElementwiseOp::Cast { to, attrs }
                }
                "CastLike" => ElementwiseOp::CastLike(parse_cast_attrs(cx)?),
                "BitCast" => {
                    let to = parse_to(cx)?;
                    if to == DType::String || to.bit_width() < 8 {
                        return Err(IrError::bad_attr("BitCast", "to", format!("cannot bit-cast to {to}")));
                    }
                    ElementwiseOp::BitCast { to }
                }
                _ => return Ok(None),
            }
        };
        cx.attrs.finish()?;
        Ok(Some(op))
    }
}

/// Checks that the known dtypes of `types` agree.
fn same_dtype(cx: &InferCtx, types: &[&TensorType]) -> IrResult<()> {
    let mut seen: Option<DType> = None;
    for t in types {
        if let Some(d) = t.dtype {
            match seen {
                Some(s) if s != d => return Err(cx.err(format!("inputs have different dtypes {s} and {d}"))),
                _ => seen = Some(d),
            }
        }
    }
    Ok(())
}

impl OpKind for ElementwiseOp {
    fn op_type(&self) -> &'static str {
        match self {
            ElementwiseOp::Unary(u) => unary_name(u),
            ElementwiseOp::Binary { op, .. } => binary_name(op),
            ElementwiseOp::Variadic(Variadic::Max) => "Max",
            ElementwiseOp::Variadic(Variadic::Min) => "Min",
            ElementwiseOp::Variadic(Variadic::Sum) => "Sum",
            ElementwiseOp::Variadic(Variadic::Mean) => "Mean",
            ElementwiseOp::Clip { .. } => "Clip",
            ElementwiseOp::Where => "Where",
            ElementwiseOp::Cast { .. } => "Cast",
            ElementwiseOp::CastLike(_) => "CastLike",
            ElementwiseOp::BitCast { .. } => "BitCast",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let t = match self {
            ElementwiseOp::Unary(u) => {
                let x = cx.tensor(0)?;
                match u {
                    Unary::IsNaN | Unary::IsInf { .. } => TensorType {
                        dtype: Some(DType::Bool),
                        shape: x.shape,
                    },
                    _ => x,
                }
            }
            ElementwiseOp::Binary { op, legacy_axis } => {
                let a = cx.tensor(0)?;
                let b = cx.tensor(1)?;
                if !matches!(op, Binary::Pow) {
                    same_dtype(cx, &[&a, &b])?;
                }
                let dtype = if op.yields_bool() { Some(DType::Bool) } else { a.dtype };
                if legacy_axis.is_some() || matches!(op, Binary::PRelu) {
                    // Unidirectional: the output has A's shape.
                    TensorType { dtype, shape: a.shape }
                } else {
                    broadcast_types(cx.op, &[a, b], dtype)?
                }
            }
            ElementwiseOp::Variadic(_) => {
                if cx.inputs.is_empty() {
                    return Err(cx.err("needs at least one input"));
                }
                let ts = (0..cx.inputs.len())
                    .map(|i| cx.tensor(i))
                    .collect::<IrResult<Vec<_>>>()?;
                same_dtype(cx, &ts.iter().collect::<Vec<_>>())?;
                broadcast_types(cx.op, &ts, None)?
            }
            ElementwiseOp::Clip { .. } => {
                let x = cx.tensor(0)?;
                for i in 1..3 {
                    if let Some(b) = cx.opt_tensor(i)? {
                        same_dtype(cx, &[&x, &b])?;
                    }
                }
                x
            }
            ElementwiseOp::Where => {
                let c = cx.tensor(0)?;
                if c.dtype.is_some_and(|d| d != DType::Bool) {
                    return Err(cx.err("condition must be bool"));
                }
                let x = cx.tensor(1)?;
                let y = cx.tensor(2)?;
                same_dtype(cx, &[&x, &y])?;
                let dtype = x.dtype.or(y.dtype);
                broadcast_types(cx.op, &[c, x, y], dtype)?
            }
            ElementwiseOp::Cast { to, .. } => TensorType {
                dtype: Some(*to),
                shape: cx.tensor(0)?.shape,
            },
            ElementwiseOp::CastLike(_) => TensorType {
                dtype: cx.tensor(1)?.dtype,
                shape: cx.tensor(0)?.shape,
            },
            ElementwiseOp::BitCast { to } => {
                let x = cx.tensor(0)?;
                if let Some(d) = x.dtype {
                    if d.bit_width() != to.bit_width() || d == DType::String {
                        return Err(cx.err(format!("cannot bit-cast {d} to {to}: bit widths differ")));
                    }
                }
                TensorType {
                    dtype: Some(*to),
                    shape: x.shape,
                }
            }
        };
        Ok(vec![ValueType::Tensor(t)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::types::{Dim, Shape};

    fn parse(op: &str, opset: i64, attrs: Vec<(&str, Attr)>) -> IrResult<Option<ElementwiseOp>> {
        let items = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut cx = ParseCtx {
            domain: "",
            op_type: op,
            opset,
            attrs: Attrs::new(op, items),
            num_inputs: 2,
            num_outputs: 1,
        };
        ElementwiseOp::parse(&mut cx)
    }

    #[test]
    fn parses_attributes_and_rejects_bad_ones() {
        assert_eq!(
            parse("LeakyRelu", 16, vec![("alpha", Attr::Float(0.1))]).unwrap(),
            Some(ElementwiseOp::Unary(Unary::LeakyRelu { alpha: 0.1 }))
        );
        assert!(parse("Gelu", 20, vec![("approximate", Attr::String(b"fast".to_vec()))]).is_err());
        assert!(parse("Relu", 14, vec![("alpha", Attr::Float(0.1))]).is_err());
        assert!(parse("BitShift", 11, vec![]).is_err());
        assert_eq!(parse("Conv", 11, vec![]).unwrap(), None);
        assert_eq!(
            parse("Cast", 1, vec![("to", Attr::String(b"FLOAT".to_vec()))]).unwrap(),
            Some(ElementwiseOp::Cast {
                to: DType::F32,
                attrs: CastAttrs {
                    saturate: true,
                    round_mode: E8M0Rounding::Up
                }
            })
        );
        assert_eq!(
            parse("Clip", 6, vec![("min", Attr::Float(-1.0))]).unwrap(),
            Some(ElementwiseOp::Clip {
                min: Some(-1.0),
                max: None
            })
        );
        assert_eq!(
            parse(
                "Add",
                1,
                vec![("consumed_inputs", Attr::Ints(vec![0])), ("broadcast", Attr::Int(1))]
            )
            .unwrap(),
            Some(ElementwiseOp::Binary {
                op: Binary::Add,
                legacy_axis: None
            })
        );
    }

    #[test]
    fn infers_broadcast_and_bool_outputs() {
        let a = ValueType::tensor(DType::F32, vec![Dim::Sym("n".into()), Dim::Known(1), Dim::Known(4)]);
        let b = ValueType::tensor(DType::F32, vec![Dim::Known(3), Dim::Known(1)]);
        let inputs = [Some(a), Some(b)];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &[None, None],
            num_outputs: 1,
            op: "Less",
        };
        let op = ElementwiseOp::Binary {
            op: Binary::Less,
            legacy_axis: None,
        };
        let out = op.infer(&cx).unwrap();
        let want: Shape = vec![Dim::Sym("n".into()), Dim::Known(3), Dim::Known(4)];
        assert_eq!(out[0], ValueType::tensor(DType::Bool, want));
        let c = ValueType::tensor(DType::I64, vec![Dim::Known(3)]);
        let inputs = [inputs[0].clone(), Some(c)];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &[None, None],
            num_outputs: 1,
            op: "Add",
        };
        assert!(ElementwiseOp::Binary {
            op: Binary::Add,
            legacy_axis: None
        }
        .infer(&cx)
        .is_err());
    }
}
