//! The tensor family: shape manipulation and data movement (Reshape,
//! Transpose, Concat, Slice, Gather/Scatter, Pad, ...). These ops are
//! dtype-generic. Their inference matters a lot: exporters build shapes with
//! Shape -> Gather -> Concat -> Reshape chains, so ops whose output shape
//! depends on an input's value read it with `cx.const_i64s` when constant.

use super::{normalize_axis, InferCtx, OpKind, ParseCtx};
use crate::dtype::DType;
use crate::error::{IrError, IrResult};
use crate::tensor::Tensor;
use crate::types::{Shape, TensorType, ValueType};
use ndarray::{ArrayD, IxDyn};

mod infer;
pub use infer::shape_bounds;

/// How ScatterElements / ScatterND combine an update with the existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

/// How Pad fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// The ops of the tensor family, with their typed attributes. Attributes
/// that later opsets turned into inputs are kept as `Option`s; the kernel
/// uses them when the corresponding input is absent.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TensorOp {
    /// Passes any value (tensor, sequence, optional) through.
    Identity,
    /// `shape` is the opset 1-4 attribute.
    Reshape {
        allowzero: bool,
        shape: Option<Vec<i64>>,
    },
    Flatten {
        axis: i64,
    },
    /// `axes` is the pre-opset-13 attribute.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    /// `split` is the pre-opset-13 attribute; `num_outputs` is opset 18+.
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        num_outputs: Option<i64>,
    },
    /// Pre-opset-10 attributes (`starts`/`ends` required there).
    Slice {
        starts: Option<Vec<i64>>,
        ends: Option<Vec<i64>>,
        axes: Option<Vec<i64>>,
    },
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    GatherND {
        batch_dims: i64,
    },
    /// Scatter (deprecated) is ScatterElements without reduction.
    ScatterElements {
        axis: i64,
        reduction: ScatterReduction,
    },
    ScatterND {
        reduction: ScatterReduction,
    },
    Expand,
    /// `legacy`: opset 1 Tile, whose inputs are (input, tiles, axis).
    Tile {
        legacy: bool,
    },
    /// `pads` and `value` are the pre-opset-11 attributes.
    Pad {
        mode: PadMode,
        pads: Option<Vec<i64>>,
        value: f32,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    Constant {
        value: Tensor,
    },
    /// `value` is a one-element tensor; absent means f32 zero.
    ConstantOfShape {
        value: Option<Tensor>,
    },
    Range,
    OneHot {
        axis: i64,
    },
    NonZero,
    Compress {
        axis: Option<i64>,
    },
    Unique {
        axis: Option<i64>,
        sorted: bool,
    },
    Trilu {
        upper: bool,
    },
    /// `crd`: the CRD column ordering instead of the default DCR.
    DepthToSpace {
        blocksize: i64,
        crd: bool,
    },
    /// `crd` (opset 28+): column-row-depth ordering instead of DCR.
    SpaceToDepth {
        blocksize: i64,
        crd: bool,
    },
    ReverseSequence {
        batch_axis: i64,
        time_axis: i64,
    },
    EyeLike {
        dtype: Option<DType>,
        k: i64,
    },
    CenterCropPad {
        axes: Option<Vec<i64>>,
    },
    TensorScatter {
        axis: i64,
        circular: bool,
    },
}

fn parse_reduction(cx: &mut ParseCtx) -> IrResult<ScatterReduction> {
    Ok(match cx.attrs.string_or("reduction", "none")?.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        m => {
            return Err(IrError::bad_attr(
                cx.op_type,
                "reduction",
                format!("unknown reduction '{m}'"),
            ))
        }
    })
}

/// DepthToSpace/SpaceToDepth `mode`: true for CRD, false for DCR.
fn parse_block_mode(cx: &mut ParseCtx) -> IrResult<bool> {
    match cx.attrs.string_or("mode", "DCR")?.as_str() {
        "DCR" => Ok(false),
        "CRD" => Ok(true),
        m => Err(IrError::bad_attr(cx.op_type, "mode", format!("unknown mode '{m}'"))),
    }
}

fn positive(cx: &ParseCtx, name: &str, v: i64) -> IrResult<i64> {
    if v <= 0 {
        return Err(IrError::bad_attr(
            cx.op_type,
            name,
            format!("must be positive, got {v}"),
        ));
    }
    Ok(v)
}

/// A constant from Constant's value_* attributes.
fn constant_value(cx: &mut ParseCtx) -> IrResult<Tensor> {
    let mut found: Vec<Tensor> = Vec::new();
    if let Some(t) = cx.attrs.tensor("value")? {
        found.push(t);
    }
    if let Some(v) = cx.attrs.float("value_float")? {
        found.push(Tensor::scalar_f32(v));
    }
    if let Some(v) = cx.attrs.floats("value_floats")? {
        found.push(Tensor::from_f32s(v));
    }
    if let Some(v) = cx.attrs.int("value_int")? {
        found.push(Tensor::scalar_i64(v));
    }
    if let Some(v) = cx.attrs.ints("value_ints")? {
        found.push(Tensor::from_i64s(v));
    }
    if let Some(v) = cx.attrs.string("value_string")? {
        found.push(Tensor::String(ArrayD::from_elem(IxDyn(&[]), v)));
    }
    if let Some(v) = cx.attrs.strings("value_strings")? {
        let n = v.len();
        let a = ArrayD::from_shape_vec(IxDyn(&[n]), v)
            .map_err(|_| IrError::bad_attr(cx.op_type, "value_strings", "bad length"))?;
        found.push(Tensor::String(a));
    }
    if cx.attrs.has("sparse_value") {
        return Err(IrError::bad_attr(
            cx.op_type,
            "sparse_value",
            "sparse constants are not supported",
        ));
    }
    if found.len() != 1 {
        return Err(IrError::bad_attr(
            cx.op_type,
            "value",
            format!("exactly one value attribute must be given, got {}", found.len()),
        ));
    }
    Ok(found.remove(0))
}

impl TensorOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !cx.domain.is_empty() && cx.domain != "ai.onnx" {
            return Ok(None);
        }
        let opset = cx.opset;
        let op = match cx.op_type {
            "Identity" => TensorOp::Identity,
            "Reshape" => {
                let shape = if opset < 5 {
                    let _ = cx.attrs.ints("consumed_inputs")?;
                    cx.attrs.ints("shape")?
                } else {
                    None
                };
                let allowzero = if opset >= 14 {
                    cx.attrs.int_or("allowzero", 0)? != 0
                } else {
                    false
                };
                TensorOp::Reshape { allowzero, shape }
            }
            "Flatten" => TensorOp::Flatten {
                axis: cx.attrs.int_or("axis", 1)?,
            },
            "Squeeze" => TensorOp::Squeeze {
                axes: if opset < 13 { cx.attrs.ints("axes")? } else { None },
            },
            "Unsqueeze" => {
                let axes = if opset < 13 {
                    Some(cx.attrs.req_ints("axes")?)
                } else {
                    None
                };
                TensorOp::Unsqueeze { axes }
            }
            "Transpose" => TensorOp::Transpose {
                perm: cx.attrs.ints("perm")?,
            },
            "Concat" => {
                let axis = if opset < 4 {
                    cx.attrs.int_or("axis", 1)?
                } else {
                    cx.attrs.req_int("axis")?
                };
                TensorOp::Concat { axis }
            }
            "Split" => {
                let axis = cx.attrs.int_or("axis", 0)?;
                let split = if opset < 13 { cx.attrs.ints("split")? } else { None };
                let num_outputs = if opset >= 18 {
                    cx.attrs.int("num_outputs")?
                } else {
                    None
                };
                if let Some(n) = num_outputs {
                    positive(cx, "num_outputs", n)?;
                }
                if let Some(s) = &split {
                    if s.iter().any(|&v| v < 0) {
                        return Err(IrError::bad_attr(cx.op_type, "split", "negative split length"));
                    }
                }
                TensorOp::Split {
                    axis,
                    split,
                    num_outputs,
                }
            }
            "Slice" => {
                if opset < 10 {
                    let starts = cx.attrs.req_ints("starts")?;
                    let ends = cx.attrs.req_ints("ends")?;
                    let axes = cx.attrs.ints("axes")?;
                    if starts.len() != ends.len() || axes.as_ref().is_some_and(|a| a.len() != starts.len()) {
                        return Err(IrError::bad_attr(
                            cx.op_type,
                            "ends",
                            "starts, ends and axes lengths differ",
                        ));
                    }
                    TensorOp::Slice {
                        starts: Some(starts),
                        ends: Some(ends),
                        axes,
                    }
                } else {
                    TensorOp::Slice {
                        starts: None,
                        ends: None,
                        axes: None,
                    }
                }
            }
            "Gather" => TensorOp::Gather {
                axis: cx.attrs.int_or("axis", 0)?,
            },
            "GatherElements" => TensorOp::GatherElements {
                axis: cx.attrs.int_or("axis", 0)?,
            },
            "GatherND" => TensorOp::GatherND {
                batch_dims: cx.attrs.int_or("batch_dims", 0)?,
            },
            "Scatter" => TensorOp::ScatterElements {
                axis: cx.attrs.int_or("axis", 0)?,
                reduction: ScatterReduction::None,
            },
            "ScatterElements" => {
                let axis = cx.attrs.int_or("axis", 0)?;
                let reduction = if opset >= 16 {
                    parse_reduction(cx)?
                } else {
                    ScatterReduction::None
                };
                TensorOp::ScatterElements { axis, reduction }
            }
            "ScatterND" => {
                let reduction = if opset >= 16 {
                    parse_reduction(cx)?
                } else {
                    ScatterReduction::None
                };
                TensorOp::ScatterND { reduction }
            }
            "Expand" => TensorOp::Expand,
            "Tile" => TensorOp::Tile {
                legacy: opset < 6 && cx.num_inputs == 3,
            },
            "Pad" => {
                let mode = match cx.attrs.string_or("mode", "constant")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    "wrap" if opset >= 19 => PadMode::Wrap,
                    m => return Err(IrError::bad_attr(cx.op_type, "mode", format!("unknown pad mode '{m}'"))),
                };
                let (pads, value) = if opset < 11 {
                    let pads = if opset < 2 {
                        cx.attrs.req_ints("paddings")?
                    } else {
                        cx.attrs.req_ints("pads")?
                    };
                    if pads.len() % 2 != 0 {
                        return Err(IrError::bad_attr(cx.op_type, "pads", "length must be even"));
                    }
                    (Some(pads), cx.attrs.float_or("value", 0.0)?)
                } else {
                    (None, 0.0)
                };
                TensorOp::Pad { mode, pads, value }
            }
            "Shape" => {
                let (start, end) = if opset >= 15 {
                    (cx.attrs.int_or("start", 0)?, cx.attrs.int("end")?)
                } else {
                    (0, None)
                };
                TensorOp::Shape { start, end }
            }
            "Size" => TensorOp::Size,
            "Constant" => TensorOp::Constant {
                value: constant_value(cx)?,
            },
            "ConstantOfShape" => {
                let value = cx.attrs.tensor("value")?;
                if let Some(v) = &value {
                    if v.len() != 1 {
                        return Err(IrError::bad_attr(cx.op_type, "value", "must hold exactly one element"));
                    }
                }
                TensorOp::ConstantOfShape { value }
            }
            "Range" => TensorOp::Range,
            "OneHot" => TensorOp::OneHot {
                axis: cx.attrs.int_or("axis", -1)?,
            },
            "NonZero" => TensorOp::NonZero,
            "Compress" => TensorOp::Compress {
                axis: cx.attrs.int("axis")?,
            },
            "Unique" => {
                let axis = cx.attrs.int("axis")?;
                let sorted = cx.attrs.int_or("sorted", 1)? != 0;
                TensorOp::Unique { axis, sorted }
            }
            "Trilu" => TensorOp::Trilu {
                upper: cx.attrs.int_or("upper", 1)? != 0,
            },
            "DepthToSpace" => {
                let blocksize = cx.attrs.req_int("blocksize")?;
                positive(cx, "blocksize", blocksize)?;
                let crd = if opset >= 11 { parse_block_mode(cx)? } else { false };
                TensorOp::DepthToSpace { blocksize, crd }
            }
            "SpaceToDepth" => {
                let blocksize = cx.attrs.req_int("blocksize")?;
                positive(cx, "blocksize", blocksize)?;
                let crd = if opset >= 28 { parse_block_mode(cx)? } else { false };
                TensorOp::SpaceToDepth { blocksize, crd }
            }
            "ReverseSequence" => {
                let batch_axis = cx.attrs.int_or("batch_axis", 1)?;
                let time_axis = cx.attrs.int_or("time_axis", 0)?;
                let ok = |a: i64| a == 0 || a == 1;
                if !ok(batch_axis) || !ok(time_axis) || batch_axis == time_axis {
                    return Err(IrError::bad_attr(
                        cx.op_type,
                        "batch_axis",
                        "batch_axis and time_axis must be 0 and 1",
                    ));
                }
                TensorOp::ReverseSequence { batch_axis, time_axis }
            }
            "EyeLike" => {
                let dtype =
                    match cx.attrs.int("dtype")? {
                        None => None,
                        Some(c) => Some(i32::try_from(c).ok().and_then(DType::from_onnx_code).ok_or_else(|| {
                            IrError::bad_attr(cx.op_type, "dtype", format!("unknown dtype code {c}"))
                        })?),
                    };
                TensorOp::EyeLike {
                    dtype,
                    k: cx.attrs.int_or("k", 0)?,
                }
            }
            "CenterCropPad" => TensorOp::CenterCropPad {
                axes: cx.attrs.ints("axes")?,
            },
            "TensorScatter" => {
                let axis = cx.attrs.int_or("axis", -2)?;
                let circular = match cx.attrs.string_or("mode", "linear")?.as_str() {
                    "linear" => false,
                    "circular" => true,
                    m => return Err(IrError::bad_attr(cx.op_type, "mode", format!("unknown mode '{m}'"))),
                };
                TensorOp::TensorScatter { axis, circular }
            }
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(op))
    }
}

impl OpKind for TensorOp {
    fn op_type(&self) -> &'static str {
        match self {
            TensorOp::Identity => "Identity",
            TensorOp::Reshape { .. } => "Reshape",
            TensorOp::Flatten { .. } => "Flatten",
            TensorOp::Squeeze { .. } => "Squeeze",
            TensorOp::Unsqueeze { .. } => "Unsqueeze",
            TensorOp::Transpose { .. } => "Transpose",
            TensorOp::Concat { .. } => "Concat",
            TensorOp::Split { .. } => "Split",
            TensorOp::Slice { .. } => "Slice",
            TensorOp::Gather { .. } => "Gather",
            TensorOp::GatherElements { .. } => "GatherElements",
            TensorOp::GatherND { .. } => "GatherND",
            TensorOp::ScatterElements { .. } => "ScatterElements",
            TensorOp::ScatterND { .. } => "ScatterND",
            TensorOp::Expand => "Expand",
            TensorOp::Tile { .. } => "Tile",
            TensorOp::Pad { .. } => "Pad",
            TensorOp::Shape { .. } => "Shape",
            TensorOp::Size => "Size",
            TensorOp::Constant { .. } => "Constant",
            TensorOp::ConstantOfShape { .. } => "ConstantOfShape",
            TensorOp::Range => "Range",
            TensorOp::OneHot { .. } => "OneHot",
            TensorOp::NonZero => "NonZero",
            TensorOp::Compress { .. } => "Compress",
            TensorOp::Unique { .. } => "Unique",
            TensorOp::Trilu { .. } => "Trilu",
            TensorOp::DepthToSpace { .. } => "DepthToSpace",
            TensorOp::SpaceToDepth { .. } => "SpaceToDepth",
            TensorOp::ReverseSequence { .. } => "ReverseSequence",
            TensorOp::EyeLike { .. } => "EyeLike",
            TensorOp::CenterCropPad { .. } => "CenterCropPad",
            TensorOp::TensorScatter { .. } => "TensorScatter",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        infer::infer(self, cx)
    }
}

/// Shared by inference and the kernels: resolves Slice's (start, end, step)
/// for a dim of extent `dim` the way ONNX does (negative values count from
/// the end, then clamping). Returns (first index, number of elements).
pub fn slice_range(start: i64, end: i64, step: i64, dim: usize) -> (i64, usize) {
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        let s = s.clamp(0, d);
        let e = e.clamp(0, d);
        let n = if e > s {
            ((e - s) as u64).div_ceil(step as u64) as usize
        } else {
            0
        };
        (s, n)
    } else {
        // min/max rather than clamp: d - 1 is below 0 for empty dims.
        let s = s.max(0).min(d - 1);
        let e = e.max(-1).min(d - 1);
        let st = step.unsigned_abs();
        let n = if s > e {
            ((s - e) as u64).div_ceil(st) as usize
        } else {
            0
        };
        (s, n)
    }
}

/// Helpers shared with the kernel crate.
pub fn tensor_type(dtype: Option<DType>, shape: Option<Shape>) -> ValueType {
    ValueType::Tensor(TensorType { dtype, shape })
}

/// Normalizes `axes` against `rank`, rejecting duplicates.
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

#[cfg(test)]
mod tests;
