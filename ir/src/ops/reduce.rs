//! Reductions and their kin: Reduce*, ArgMax/ArgMin, CumSum/CumProd, TopK,
//! the quantization ops and the two classification losses.
//!
//! Attributes that later opsets turned into inputs (Reduce* `axes`, TopK `k`)
//! are kept in the op when the node's opset still has them as attributes; the
//! kernel uses them when the input is absent.

use super::{normalize_axis, InferCtx, OpKind, ParseCtx};
use crate::dtype::DType;
use crate::error::{IrError, IrResult};
use crate::types::{Dim, Shape, TensorType, ValueType};

/// Which Reduce* op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl ReduceKind {
    fn from_op_type(op: &str) -> Option<ReduceKind> {
        Some(match op {
            "ReduceSum" => ReduceKind::Sum,
            "ReduceMean" => ReduceKind::Mean,
            "ReduceMax" => ReduceKind::Max,
            "ReduceMin" => ReduceKind::Min,
            "ReduceProd" => ReduceKind::Prod,
            "ReduceL1" => ReduceKind::L1,
            "ReduceL2" => ReduceKind::L2,
            "ReduceLogSum" => ReduceKind::LogSum,
            "ReduceLogSumExp" => ReduceKind::LogSumExp,
            "ReduceSumSquare" => ReduceKind::SumSquare,
            _ => return None,
        })
    }

    pub fn op_type(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }

    /// The opset from which `axes` is an input (and `noop_with_empty_axes` exists).
    fn axes_input_since(self) -> i64 {
        match self {
            ReduceKind::Sum => 13,
            _ => 18,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReduceAttrs {
    pub kind: ReduceKind,
    /// The `axes` attribute of older opsets (`None` when absent or when the
    /// opset takes axes as input 1).
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    /// With no axes: reduce nothing (true) or everything (false).
    pub noop_with_empty_axes: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArgAttrs {
    pub axis: i64,
    pub keepdims: bool,
    /// Ties pick the last index instead of the first.
    pub select_last_index: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CumAttrs {
    pub exclusive: bool,
    pub reverse: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopKAttrs {
    pub axis: i64,
    /// `k` as attribute (opset 1); later opsets take it as input 1.
    pub k: Option<i64>,
    pub largest: bool,
    pub sorted: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizeAttrs {
    pub axis: i64,
    /// Clamp float8 overflow to the largest finite value instead of inf/NaN.
    pub saturate: bool,
    /// 0: per-tensor or per-axis; >0: blocked along `axis`.
    pub block_size: i64,
    /// Output dtype when there is no zero point (`None`: from the zero point, else uint8).
    pub output_dtype: Option<DType>,
    /// Dtype of the division x / scale (`None`: the scale's dtype).
    pub precision: Option<DType>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DequantizeAttrs {
    pub axis: i64,
    pub block_size: i64,
    /// Output dtype (`None`: the scale's dtype).
    pub output_dtype: Option<DType>,
}

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossReduction {
    None,
    Sum,
    Mean,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossAttrs {
    pub reduction: LossReduction,
    /// Targets equal to this contribute nothing (and do not count for mean).
    pub ignore_index: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    Reduce(ReduceAttrs),
    ArgMax(ArgAttrs),
    ArgMin(ArgAttrs),
    CumSum(CumAttrs),
    CumProd(CumAttrs),
    TopK(TopKAttrs),
    QuantizeLinear(QuantizeAttrs),
    DequantizeLinear(DequantizeAttrs),
    DynamicQuantizeLinear,
    SoftmaxCrossEntropyLoss(LossAttrs),
    NegativeLogLikelihoodLoss(LossAttrs),
}

/// Dtypes QuantizeLinear can produce.
pub fn is_quant_dtype(d: DType) -> bool {
    matches!(
        d,
        DType::U8
            | DType::I8
            | DType::U16
            | DType::I16
            | DType::U4
            | DType::I4
            | DType::U2
            | DType::I2
            | DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::F4E2M1
    )
}

fn dtype_attr(op: &str, name: &str, code: i64, ok: impl Fn(DType) -> bool) -> IrResult<Option<DType>> {
    if code == 0 {
        return Ok(None);
    }
    let d = i32::try_from(code).ok().and_then(DType::from_onnx_code);
    match d {
        Some(d) if ok(d) => Ok(Some(d)),
        Some(d) => Err(IrError::bad_attr(op, name, format!("dtype {d} is not allowed here"))),
        None => Err(IrError::bad_attr(op, name, format!("unknown dtype code {code}"))),
    }
}

fn bool_attr(op: &str, name: &str, v: i64) -> IrResult<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(IrError::bad_attr(op, name, format!("must be 0 or 1, got {v}"))),
    }
}

impl ReduceOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !cx.domain.is_empty() && cx.domain != "ai.onnx" {
            return Ok(None);
        }
        let op = cx.op_type;
        let a = &mut cx.attrs;
        let parsed = if let Some(kind) = ReduceKind::from_op_type(op) {
            let keepdims = a.int_or("keepdims", 1)? != 0;
            let (axes, noop) = if cx.opset < kind.axes_input_since() {
                (a.ints("axes")?, false)
            } else {
                (
                    None,
                    bool_attr(op, "noop_with_empty_axes", a.int_or("noop_with_empty_axes", 0)?)?,
                )
            };
            if let Some(ax) = &axes {
                let mut s = ax.clone();
                s.sort_unstable();
                if s.windows(2).any(|w| w[0] == w[1]) {
                    return Err(IrError::bad_attr(op, "axes", "repeated axis"));
                }
            }
            ReduceOp::Reduce(ReduceAttrs {
                kind,
                axes,
                keepdims,
                noop_with_empty_axes: noop,
            })
        } else {
            match op {
                "ArgMax" | "ArgMin" => {
                    let axis = a.int_or("axis", 0)?;
                    let keepdims = a.int_or("keepdims", 1)? != 0;
                    let select_last_index = if cx.opset >= 12 {
                        bool_attr(op, "select_last_index", a.int_or("select_last_index", 0)?)?
                    } else {
                        false
                    };
                    let at = ArgAttrs {
                        axis,
                        keepdims,
                        select_last_index,
                    };
                    if op == "ArgMax" {
                        ReduceOp::ArgMax(at)
                    } else {
                        ReduceOp::ArgMin(at)
                    }
                }
                "CumSum" | "CumProd" => {
                    let exclusive = bool_attr(op, "exclusive", a.int_or("exclusive", 0)?)?;
                    let reverse = bool_attr(op, "reverse", a.int_or("reverse", 0)?)?;
                    let at = CumAttrs { exclusive, reverse };
                    if op == "CumSum" {
                        ReduceOp::CumSum(at)
                    } else {
                        ReduceOp::CumProd(at)
                    }
                }
                "TopK" => {
                    let axis = a.int_or("axis", -1)?;
                    let k = if cx.opset < 10 {
                        let k = a.req_int("k")?;
                        if k < 0 {
                            return Err(IrError::bad_attr(op, "k", format!("must be >= 0, got {k}")));
                        }
                        Some(k)
                    } else {
                        None
                    };
                    let (largest, sorted) = if cx.opset >= 11 {
                        (
                            bool_attr(op, "largest", a.int_or("largest", 1)?)?,
                            bool_attr(op, "sorted", a.int_or("sorted", 1)?)?,
                        )
                    } else {
                        (true, true)
                    };
                    ReduceOp::TopK(TopKAttrs {
                        axis,
                        k,
                        largest,
                        sorted,
                    })
                }
                "QuantizeLinear" => {
                    let axis = if cx.opset >= 13 { a.int_or("axis", 1)? } else { 1 };
                    let saturate = if cx.opset >= 19 {
                        bool_attr(op, "saturate", a.int_or("saturate", 1)?)?
                    } else {
                        true
                    };
                    let (block_size, output_dtype) = if cx.opset >= 21 {
                        let b = a.int_or("block_size", 0)?;
                        let d = dtype_attr(op, "output_dtype", a.int_or("output_dtype", 0)?, is_quant_dtype)?;
                        (b, d)
                    } else {
                        (0, None)
                    };
                    if block_size < 0 {
                        return Err(IrError::bad_attr(
                            op,
                            "block_size",
                            format!("must be >= 0, got {block_size}"),
                        ));
                    }
                    let precision = if cx.opset >= 23 {
                        dtype_attr(op, "precision", a.int_or("precision", 0)?, |d| {
                            matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
                        })?
                    } else {
                        None
                    };
                    ReduceOp::QuantizeLinear(QuantizeAttrs {
                        axis,
                        saturate,
                        block_size,
                        output_dtype,
                        precision,
                    })
                }
                "DequantizeLinear" => {
                    let axis = if cx.opset >= 13 { a.int_or("axis", 1)? } else { 1 };
                    let block_size = if cx.opset >= 21 { a.int_or("block_size", 0)? } else { 0 };
                    if block_size < 0 {
                        return Err(IrError::bad_attr(
                            op,
                            "block_size",
                            format!("must be >= 0, got {block_size}"),
                        ));
                    }
                    let output_dtype = if cx.opset >= 23 {
                        dtype_attr(op, "output_dtype", a.int_or("output_dtype", 0)?, |d| {
                            matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
                        })?
                    } else {
                        None
                    };
                    ReduceOp::DequantizeLinear(DequantizeAttrs {
                        axis,
                        block_size,
                        output_dtype,
                    })
                }
                "DynamicQuantizeLinear" => ReduceOp::DynamicQuantizeLinear,
                "SoftmaxCrossEntropyLoss" | "NegativeLogLikelihoodLoss" => {
                    let reduction = match a.string_or("reduction", "mean")?.as_str() {
                        "none" => LossReduction::None,
                        "sum" => LossReduction::Sum,
                        "mean" => LossReduction::Mean,
                        other => {
                            return Err(IrError::bad_attr(
                                op,
                                "reduction",
                                format!("must be none, sum or mean, got '{other}'"),
                            ))
                        }
                    };
                    let ignore_index = a.int("ignore_index")?;
                    let at = LossAttrs {
                        reduction,
                        ignore_index,
                    };
                    if op == "SoftmaxCrossEntropyLoss" {
                        ReduceOp::SoftmaxCrossEntropyLoss(at)
                    } else {
                        ReduceOp::NegativeLogLikelihoodLoss(at)
                    }
                }
                _ => return Ok(None),
            }
        };
        cx.attrs.finish()?;
        Ok(Some(parsed))
    }
}

/// Normalizes reduction axes against `rank`, rejecting repeats.
pub fn normalize_axes(op: &str, axes: &[i64], rank: usize) -> IrResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(op, a, rank)?;
        if out.contains(&n) {
            return Err(IrError::invalid(op, format!("axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

fn tensor_out(dtype: Option<DType>, shape: Option<Shape>) -> ValueType {
    ValueType::Tensor(TensorType { dtype, shape })
}

fn check_float(cx: &InferCtx, i: usize, t: &TensorType) -> IrResult<()> {
    match t.dtype {
        Some(d) if !d.is_float() => Err(cx.err(format!("input {i} must be a float tensor, got {d}"))),
        _ => Ok(()),
    }
}

fn check_int(cx: &InferCtx, i: usize, t: &TensorType) -> IrResult<()> {
    match t.dtype {
        Some(d) if !d.is_int() => Err(cx.err(format!("input {i} must be an integer tensor, got {d}"))),
        _ => Ok(()),
    }
}

impl ReduceOp {
    fn infer_reduce(&self, r: &ReduceAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        let axes: Option<Vec<i64>> = if r.axes.is_some() {
            r.axes.clone()
        } else if cx.has_input(1) {
            if let Some(t) = cx.opt_tensor(1)? {
                check_int(cx, 1, &t)?;
            }
            cx.const_i64s(1)
        } else {
            Some(Vec::new())
        };
        let Some(shape) = x.shape.clone() else {
            return Ok(vec![tensor_out(x.dtype, None)]);
        };
        let rank = shape.len();
        let Some(axes) = axes else {
            // Axes unknown: with keepdims the rank survives.
            let s = if r.keepdims {
                Some(vec![Dim::Unknown; rank])
            } else {
                None
            };
            return Ok(vec![tensor_out(x.dtype, s)]);
        };
        let reduced: Vec<usize> = if axes.is_empty() {
            if r.noop_with_empty_axes {
                Vec::new()
            } else {
                (0..rank).collect()
            }
        } else {
            normalize_axes(self.op_type(), &axes, rank)?
        };
        let mut out = Vec::with_capacity(rank);
        for (i, d) in shape.into_iter().enumerate() {
            if reduced.contains(&i) {
                if r.keepdims {
                    out.push(Dim::Known(1));
                }
            } else {
                out.push(d);
            }
        }
        Ok(vec![tensor_out(x.dtype, Some(out))])
    }

    fn infer_arg(&self, a: &ArgAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        let shape = match x.shape {
            None => None,
            Some(s) => {
                let ax = normalize_axis(self.op_type(), a.axis, s.len())?;
                let mut o = Vec::with_capacity(s.len());
                for (i, d) in s.into_iter().enumerate() {
                    if i == ax {
                        if a.keepdims {
                            o.push(Dim::Known(1));
                        }
                    } else {
                        o.push(d);
                    }
                }
                Some(o)
            }
        };
        Ok(vec![tensor_out(Some(DType::I64), shape)])
    }

    fn infer_topk(&self, a: &TopKAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        let k = match a.k {
            Some(k) => Some(k),
            None => {
                if let Some(t) = cx.opt_tensor(1)? {
                    check_int(cx, 1, &t)?;
                } else {
                    return Err(cx.err("input 1 (K) is required"));
                }
                cx.const_i64s(1)
                    .and_then(|v| if v.len() == 1 { Some(v[0]) } else { None })
            }
        };
        if let Some(k) = k {
            if k < 0 {
                return Err(cx.err(format!("k must be >= 0, got {k}")));
            }
        }
        let shape = match x.shape {
            None => None,
            Some(mut s) => {
                let ax = normalize_axis(self.op_type(), a.axis, s.len())?;
                if let (Some(k), Dim::Known(n)) = (k, &s[ax]) {
                    if k as u64 > *n as u64 {
                        return Err(cx.err(format!("k = {k} is larger than axis dim {n}")));
                    }
                }
                s[ax] = k.map_or(Dim::Unknown, |k| Dim::Known(k as usize));
                Some(s)
            }
        };
        Ok(vec![
            tensor_out(x.dtype, shape.clone()),
            tensor_out(Some(DType::I64), shape),
        ])
    }

    fn infer_loss(&self, a: &LossAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        check_float(cx, 0, &x)?;
        let t = cx.tensor(1)?;
        check_int(cx, 1, &t)?;
        if let Some(r) = x.rank() {
            if r < 2 {
                return Err(cx.err(format!("input 0 must have rank >= 2, got {r}")));
            }
            if let Some(tr) = t.rank() {
                if tr + 1 != r {
                    return Err(cx.err(format!("target rank {tr} must be input rank {r} minus 1")));
                }
            }
        }
        let loss_shape = match a.reduction {
            LossReduction::None => match (&t.shape, &x.shape) {
                (Some(ts), _) => Some(ts.clone()),
                (None, Some(xs)) => {
                    let mut s = xs.clone();
                    s.remove(1);
                    Some(s)
                }
                _ => None,
            },
            _ => Some(Vec::new()),
        };
        let mut out = vec![tensor_out(x.dtype, loss_shape)];
        if cx.num_outputs > 1 {
            out.push(ValueType::Tensor(x));
        }
        Ok(out)
    }
}

impl OpKind for ReduceOp {
    fn op_type(&self) -> &'static str {
        match self {
            ReduceOp::Reduce(r) => r.kind.op_type(),
            ReduceOp::ArgMax(_) => "ArgMax",
            ReduceOp::ArgMin(_) => "ArgMin",
            ReduceOp::CumSum(_) => "CumSum",
            ReduceOp::CumProd(_) => "CumProd",
            ReduceOp::TopK(_) => "TopK",
            ReduceOp::QuantizeLinear(_) => "QuantizeLinear",
            ReduceOp::DequantizeLinear(_) => "DequantizeLinear",
            ReduceOp::DynamicQuantizeLinear => "DynamicQuantizeLinear",
            ReduceOp::SoftmaxCrossEntropyLoss(_) => "SoftmaxCrossEntropyLoss",
            ReduceOp::NegativeLogLikelihoodLoss(_) => "NegativeLogLikelihoodLoss",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        match self {
            ReduceOp::Reduce(r) => self.infer_reduce(r, cx),
            ReduceOp::ArgMax(a) | ReduceOp::ArgMin(a) => self.infer_arg(a, cx),
            ReduceOp::CumSum(_) | ReduceOp::CumProd(_) => {
                let x = cx.tensor(0)?;
                if let Some(t) = cx.opt_tensor(1)? {
                    check_int(cx, 1, &t)?;
                } else {
                    return Err(cx.err("input 1 (axis) is required"));
                }
                Ok(vec![ValueType::Tensor(x)])
            }
            ReduceOp::TopK(a) => self.infer_topk(a, cx),
            ReduceOp::QuantizeLinear(q) => {
                let x = cx.tensor(0)?;
                cx.tensor(1)?;
                let zp = cx.opt_tensor(2)?;
                let dtype = match zp.and_then(|z| z.dtype) {
                    Some(d) => {
                        if !is_quant_dtype(d) {
                            return Err(cx.err(format!("zero point dtype {d} is not a quantized type")));
                        }
                        if let Some(o) = q.output_dtype {
                            if o != d {
                                return Err(cx.err(format!("output_dtype {o} differs from zero point dtype {d}")));
                            }
                        }
                        Some(d)
                    }
                    None if cx.has_input(2) => q.output_dtype,
                    None => Some(q.output_dtype.unwrap_or(DType::U8)),
                };
                Ok(vec![tensor_out(dtype, x.shape)])
            }
            ReduceOp::DequantizeLinear(d) => {
                let x = cx.tensor(0)?;
                let s = cx.tensor(1)?;
                check_float(cx, 1, &s)?;
                let dtype = d.output_dtype.or(s.dtype);
                Ok(vec![tensor_out(dtype, x.shape)])
            }
            ReduceOp::DynamicQuantizeLinear => {
                let x = cx.tensor(0)?;
                check_float(cx, 0, &x)?;
                Ok(vec![
                    tensor_out(Some(DType::U8), x.shape),
                    ValueType::tensor(DType::F32, Vec::new()),
                    ValueType::tensor(DType::U8, Vec::new()),
                ])
            }
            ReduceOp::SoftmaxCrossEntropyLoss(a) | ReduceOp::NegativeLogLikelihoodLoss(a) => self.infer_loss(a, cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::types::shape_of;

    fn parse(op: &str, opset: i64, attrs: Vec<(&str, Attr)>) -> IrResult<Option<ReduceOp>> {
        let items = attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
        let mut cx = ParseCtx {
            domain: "",
            op_type: op,
            opset,
            attrs: Attrs::new(op, items),
            num_inputs: 1,
            num_outputs: 1,
        };
        ReduceOp::parse(&mut cx)
    }

    fn infer(op: &ReduceOp, inputs: Vec<Option<ValueType>>, consts: Vec<Option<&crate::Tensor>>) -> Vec<ValueType> {
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 2,
            op: op.op_type(),
        };
        op.infer(&cx).unwrap()
    }

    #[test]
    fn reduce_axes_attribute_depends_on_opset() {
        let op = parse("ReduceMean", 13, vec![("axes", Attr::Ints(vec![1]))])
            .unwrap()
            .unwrap();
        assert!(matches!(&op, ReduceOp::Reduce(r) if r.axes == Some(vec![1]) && r.keepdims));
        assert!(parse("ReduceMean", 18, vec![("axes", Attr::Ints(vec![1]))]).is_err());
        assert!(parse("ReduceSum", 13, vec![("noop_with_empty_axes", Attr::Int(1))])
            .unwrap()
            .is_some());
        assert!(parse("ReduceSum", 11, vec![("noop_with_empty_axes", Attr::Int(1))]).is_err());
        assert!(parse("Relu", 13, vec![]).unwrap().is_none());
    }

    #[test]
    fn reduce_infers_shapes() {
        let op = parse(
            "ReduceSum",
            11,
            vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(0))],
        )
        .unwrap()
        .unwrap();
        let x = ValueType::Tensor(TensorType::new(DType::F32, vec![Dim::Sym("b".into()), Dim::Known(3)]));
        let out = infer(&op, vec![Some(x.clone())], vec![None]);
        assert_eq!(out[0], ValueType::tensor(DType::F32, vec![Dim::Sym("b".into())]));
        let op = parse("ReduceMax", 18, vec![]).unwrap().unwrap();
        let out = infer(&op, vec![Some(x)], vec![None]);
        assert_eq!(out[0], ValueType::tensor(DType::F32, shape_of(&[1, 1])));
    }

    #[test]
    fn topk_and_losses_infer() {
        let op = parse("TopK", 1, vec![("k", Attr::Int(2))]).unwrap().unwrap();
        let x = ValueType::tensor(DType::F32, shape_of(&[3, 4]));
        let out = infer(&op, vec![Some(x)], vec![None]);
        assert_eq!(out[1], ValueType::tensor(DType::I64, shape_of(&[3, 2])));
        assert!(parse(
            "SoftmaxCrossEntropyLoss",
            13,
            vec![("reduction", Attr::String(b"avg".to_vec()))]
        )
        .is_err());
        let op = parse(
            "NegativeLogLikelihoodLoss",
            13,
            vec![("reduction", Attr::String(b"none".to_vec()))],
        )
        .unwrap()
        .unwrap();
        let x = ValueType::tensor(DType::F32, shape_of(&[3, 5, 2]));
        let t = ValueType::tensor(DType::I64, shape_of(&[3, 2]));
        let out = infer(&op, vec![Some(x), Some(t)], vec![None, None]);
        assert_eq!(out[0], ValueType::tensor(DType::F32, shape_of(&[3, 2])));
    }

    #[test]
    fn quantize_output_dtype() {
        let op = parse(
            "QuantizeLinear",
            21,
            vec![("output_dtype", Attr::Int(DType::I4.onnx_code() as i64))],
        )
        .unwrap()
        .unwrap();
        let x = ValueType::tensor(DType::F32, shape_of(&[2]));
        let s = ValueType::tensor(DType::F32, vec![]);
        let out = infer(&op, vec![Some(x), Some(s)], vec![None, None]);
        assert_eq!(out[0], ValueType::tensor(DType::I4, shape_of(&[2])));
        assert!(parse("QuantizeLinear", 21, vec![("output_dtype", Attr::Int(1))]).is_err());
    }
}
