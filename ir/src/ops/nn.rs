//! The nn family: convolutions, pooling, normalizations, dropout, Col2Im.
//!
//! Window geometry (output extents and resolved pads from `auto_pad`,
//! strides, dilations, `ceil_mode`) lives in [`geom`] and is shared with the
//! runtime kernels so inference and evaluation can never disagree.

use super::{normalize_axis, InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::types::{Dim, Shape, TensorType, ValueType};
use crate::DType;

pub mod geom;

pub use geom::{AutoPad, Window};

/// Window attributes shared by the convolution ops.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvAttrs {
    pub auto_pad: AutoPad,
    pub dilations: Option<Vec<i64>>,
    pub group: i64,
    /// `None`: taken from the weight's shape.
    pub kernel_shape: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
}

/// ONNX's defaults: no padding, unit strides and dilations, one group.
impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: None,
            group: 1,
            kernel_shape: None,
            pads: None,
            strides: None,
        }
    }
}

/// ConvTranspose: conv attributes plus the output-size controls.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvTransposeAttrs {
    pub conv: ConvAttrs,
    pub output_padding: Option<Vec<i64>>,
    pub output_shape: Option<Vec<i64>>,
}

/// MaxPool / AveragePool / LpPool attributes (fields unused by an op keep
/// their defaults).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolAttrs {
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
    pub dilations: Option<Vec<i64>>,
    pub kernel_shape: Vec<i64>,
    pub pads: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
    /// MaxPool: 0 row-major, 1 column-major Indices.
    pub storage_order: i64,
    /// AveragePool.
    pub count_include_pad: bool,
    /// LpPool.
    pub p: f32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NnOp {
    Conv(ConvAttrs),
    ConvTranspose(ConvTransposeAttrs),
    ConvInteger(ConvAttrs),
    QLinearConv(ConvAttrs),
    DeformConv {
        conv: ConvAttrs,
        offset_group: i64,
    },
    CausalConvWithState {
        silu: bool,
    },
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    LpPool(PoolAttrs),
    GlobalAveragePool,
    GlobalMaxPool,
    GlobalLpPool {
        p: f32,
    },
    MaxUnpool {
        kernel_shape: Vec<i64>,
        pads: Option<Vec<i64>>,
        strides: Option<Vec<i64>>,
    },
    /// `training`: compute batch statistics (opset 14+ `training_mode`, or an
    /// opset < 7 node with `is_test` = 0 that names the extra outputs).
    /// `spatial` = false (opset < 9): statistics per element of C x D1 x ...
    /// `legacy_outputs`: opset < 14 output list (mean, var, saved_mean, saved_var).
    BatchNormalization {
        epsilon: f32,
        momentum: f32,
        training: bool,
        spatial: bool,
        legacy_outputs: bool,
    },
    InstanceNormalization {
        epsilon: f32,
    },
    LayerNormalization {
        axis: i64,
        epsilon: f32,
        stash_type: i64,
    },
    /// `per_channel_affine`: opset 21 scale/bias have C entries; opset 18 has num_groups.
    GroupNormalization {
        epsilon: f32,
        num_groups: i64,
        stash_type: i64,
        per_channel_affine: bool,
    },
    RMSNormalization {
        axis: i64,
        epsilon: f32,
        stash_type: i64,
    },
    Lrn {
        alpha: f32,
        beta: f32,
        bias: f32,
        size: i64,
    },
    MeanVarianceNormalization {
        axes: Vec<i64>,
    },
    LpNormalization {
        axis: i64,
        p: i64,
    },
    /// `ratio`: the attribute of opset < 12 (the input wins when given).
    /// `legacy_mask`: opset < 10 mask has the data dtype instead of bool.
    Dropout {
        ratio: f32,
        seed: Option<i64>,
        is_test: bool,
        legacy_mask: bool,
    },
    Col2Im {
        dilations: Option<Vec<i64>>,
        pads: Option<Vec<i64>>,
        strides: Option<Vec<i64>>,
    },
}

fn positive(op: &str, name: &str, v: &Option<Vec<i64>>) -> IrResult<()> {
    if let Some(v) = v {
        if v.iter().any(|&x| x < 1) {
            return Err(IrError::bad_attr(op, name, format!("values must be >= 1, got {v:?}")));
        }
    }
    Ok(())
}

fn non_negative(op: &str, name: &str, v: &Option<Vec<i64>>) -> IrResult<()> {
    if let Some(v) = v {
        if v.iter().any(|&x| x < 0) {
            return Err(IrError::bad_attr(op, name, format!("values must be >= 0, got {v:?}")));
        }
    }
    Ok(())
}

/// Checks that the window attributes agree in length (when known).
fn check_lengths(
    op: &str,
    kernel: Option<usize>,
    pads: &Option<Vec<i64>>,
    strides: &Option<Vec<i64>>,
    dilations: &Option<Vec<i64>>,
) -> IrResult<()> {
    let mut n = kernel;
    for (name, v, mul) in [("strides", strides, 1), ("dilations", dilations, 1), ("pads", pads, 2)] {
        if let Some(v) = v {
            if v.len() % mul != 0 {
                return Err(IrError::bad_attr(
                    op,
                    name,
                    format!("length {} must be a multiple of {mul}", v.len()),
                ));
            }
            let k = v.len() / mul;
            match n {
                Some(m) if m != k => {
                    return Err(IrError::bad_attr(
                        op,
                        name,
                        format!("has {} entries for {m} spatial dims", v.len()),
                    ))
                }
                _ => n = Some(k),
            }
        }
    }
    Ok(())
}

fn parse_auto_pad(cx: &mut ParseCtx) -> IrResult<AutoPad> {
    let s = cx.attrs.string_or("auto_pad", "NOTSET")?;
    AutoPad::parse(&s).ok_or_else(|| IrError::bad_attr(cx.op_type, "auto_pad", format!("unknown mode '{s}'")))
}

pub(crate) fn parse_conv(cx: &mut ParseCtx, with_auto_pad: bool) -> IrResult<ConvAttrs> {
    let op = cx.op_type.to_string();
    let auto_pad = if with_auto_pad {
        parse_auto_pad(cx)?
    } else {
        AutoPad::NotSet
    };
    let dilations = cx.attrs.ints("dilations")?;
    let group = cx.attrs.int_or("group", 1)?;
    let kernel_shape = cx.attrs.ints("kernel_shape")?;
    let pads = cx.attrs.ints("pads")?;
    let strides = cx.attrs.ints("strides")?;
    if group < 1 {
        return Err(IrError::bad_attr(&op, "group", format!("must be >= 1, got {group}")));
    }
    positive(&op, "dilations", &dilations)?;
    positive(&op, "kernel_shape", &kernel_shape)?;
    positive(&op, "strides", &strides)?;
    non_negative(&op, "pads", &pads)?;
    check_lengths(&op, kernel_shape.as_ref().map(|k| k.len()), &pads, &strides, &dilations)?;
    Ok(ConvAttrs {
        auto_pad,
        dilations,
        group,
        kernel_shape,
        pads,
        strides,
    })
}

fn parse_pool(cx: &mut ParseCtx) -> IrResult<PoolAttrs> {
    let op = cx.op_type.to_string();
    let auto_pad = parse_auto_pad(cx)?;
    let ceil_mode = cx.attrs.int_or("ceil_mode", 0)? != 0;
    let dilations = cx.attrs.ints("dilations")?;
    let kernel_shape = cx.attrs.req_ints("kernel_shape")?;
    let pads = cx.attrs.ints("pads")?;
    let strides = cx.attrs.ints("strides")?;
    let (mut storage_order, mut count_include_pad, mut p) = (0, false, 2.0);
    match cx.op_type {
        "MaxPool" => {
            storage_order = cx.attrs.int_or("storage_order", 0)?;
            if !(0..=1).contains(&storage_order) {
                return Err(IrError::bad_attr(
                    &op,
                    "storage_order",
                    format!("must be 0 or 1, got {storage_order}"),
                ));
            }
        }
        "AveragePool" => count_include_pad = cx.attrs.int_or("count_include_pad", 0)? != 0,
        _ => {
            p = cx.attrs.float_or("p", 2.0)?;
            if p <= 0.0 || p.is_nan() {
                return Err(IrError::bad_attr(&op, "p", format!("must be > 0, got {p}")));
            }
        }
    }
    if kernel_shape.is_empty() {
        return Err(IrError::bad_attr(&op, "kernel_shape", "must not be empty"));
    }
    positive(&op, "kernel_shape", &Some(kernel_shape.clone()))?;
    positive(&op, "dilations", &dilations)?;
    positive(&op, "strides", &strides)?;
    non_negative(&op, "pads", &pads)?;
    check_lengths(&op, Some(kernel_shape.len()), &pads, &strides, &dilations)?;
    Ok(PoolAttrs {
        auto_pad,
        ceil_mode,
        dilations,
        kernel_shape,
        pads,
        strides,
        storage_order,
        count_include_pad,
        p,
    })
}

fn check_stash(op: &str, stash_type: i64) -> IrResult<()> {
    // Computation happens in f32 or f64 anyway; accept the float codes.
    match DType::from_onnx_code(stash_type as i32) {
        Some(d) if d.is_float() => Ok(()),
        _ => Err(IrError::bad_attr(
            op,
            "stash_type",
            format!("{stash_type} is not a float dtype code"),
        )),
    }
}

impl NnOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !cx.domain.is_empty() {
            return Ok(None);
        }
        let op_name = cx.op_type.to_string();
        let op = op_name.as_str();
        let parsed = match op {
            "Conv" => NnOp::Conv(parse_conv(cx, true)?),
            "ConvInteger" => NnOp::ConvInteger(parse_conv(cx, true)?),
            "QLinearConv" => NnOp::QLinearConv(parse_conv(cx, true)?),
            "ConvTranspose" => {
                let conv = parse_conv(cx, true)?;
                let output_padding = cx.attrs.ints("output_padding")?;
                let output_shape = cx.attrs.ints("output_shape")?;
                non_negative(op, "output_padding", &output_padding)?;
                non_negative(op, "output_shape", &output_shape)?;
                if let (Some(op_), Some(s)) = (&output_padding, &conv.strides) {
                    if op_.len() != s.len() {
                        return Err(IrError::bad_attr(op, "output_padding", "length differs from strides"));
                    }
                }
                NnOp::ConvTranspose(ConvTransposeAttrs {
                    conv,
                    output_padding,
                    output_shape,
                })
            }
            "DeformConv" => {
                let conv = parse_conv(cx, false)?;
                let offset_group = cx.attrs.int_or("offset_group", 1)?;
                if offset_group < 1 {
                    return Err(IrError::bad_attr(
                        op,
                        "offset_group",
                        format!("must be >= 1, got {offset_group}"),
                    ));
                }
                NnOp::DeformConv { conv, offset_group }
            }
            "CausalConvWithState" => {
                let a = cx.attrs.string_or("activation", "none")?;
                let silu = match a.as_str() {
                    "none" => false,
                    "silu" | "swish" => true,
                    _ => return Err(IrError::bad_attr(op, "activation", format!("unknown activation '{a}'"))),
                };
                NnOp::CausalConvWithState { silu }
            }
            "MaxPool" => NnOp::MaxPool(parse_pool(cx)?),
            "AveragePool" => NnOp::AveragePool(parse_pool(cx)?),
            "LpPool" => NnOp::LpPool(parse_pool(cx)?),
            "GlobalAveragePool" => NnOp::GlobalAveragePool,
            "GlobalMaxPool" => NnOp::GlobalMaxPool,
            "GlobalLpPool" => {
                let p = cx.attrs.float_or("p", 2.0)?;
                if p <= 0.0 || p.is_nan() {
                    return Err(IrError::bad_attr(op, "p", format!("must be > 0, got {p}")));
                }
                NnOp::GlobalLpPool { p }
            }
            "MaxUnpool" => {
                let kernel_shape = cx.attrs.req_ints("kernel_shape")?;
                let pads = cx.attrs.ints("pads")?;
                let strides = cx.attrs.ints("strides")?;
                positive(op, "kernel_shape", &Some(kernel_shape.clone()))?;
                positive(op, "strides", &strides)?;
                non_negative(op, "pads", &pads)?;
                check_lengths(op, Some(kernel_shape.len()), &pads, &strides, &None)?;
                NnOp::MaxUnpool {
                    kernel_shape,
                    pads,
                    strides,
                }
            }
            "BatchNormalization" => {
                let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
                let momentum = cx.attrs.float_or("momentum", 0.9)?;
                let training_mode = cx.attrs.int_or("training_mode", 0)? != 0;
                let spatial = cx.attrs.int_or("spatial", 1)? != 0;
                let is_test = cx.attrs.int_or("is_test", 0)? != 0;
                cx.attrs.ints("consumed_inputs")?;
                // Before opset 7 is_test = 0 meant training, but exporters left
                // it unset on inference graphs: only honour it when the node
                // asks for the training outputs.
                let training = training_mode || (cx.opset < 7 && !is_test && cx.num_outputs > 1);
                NnOp::BatchNormalization {
                    epsilon,
                    momentum,
                    training,
                    spatial,
                    legacy_outputs: cx.opset < 14,
                }
            }
            "InstanceNormalization" => {
                let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
                cx.attrs.ints("consumed_inputs")?;
                NnOp::InstanceNormalization { epsilon }
            }
            "LayerNormalization" | "RMSNormalization" => {
                let axis = cx.attrs.int_or("axis", -1)?;
                let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
                let stash_type = cx.attrs.int_or("stash_type", 1)?;
                check_stash(op, stash_type)?;
                if op == "LayerNormalization" {
                    NnOp::LayerNormalization {
                        axis,
                        epsilon,
                        stash_type,
                    }
                } else {
                    NnOp::RMSNormalization {
                        axis,
                        epsilon,
                        stash_type,
                    }
                }
            }
            "GroupNormalization" => {
                let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
                let num_groups = cx.attrs.req_int("num_groups")?;
                let stash_type = cx.attrs.int_or("stash_type", 1)?;
                check_stash(op, stash_type)?;
                if num_groups < 1 {
                    return Err(IrError::bad_attr(
                        op,
                        "num_groups",
                        format!("must be >= 1, got {num_groups}"),
                    ));
                }
                NnOp::GroupNormalization {
                    epsilon,
                    num_groups,
                    stash_type,
                    per_channel_affine: cx.opset >= 21,
                }
            }
            "LRN" => {
                let alpha = cx.attrs.float_or("alpha", 1e-4)?;
                let beta = cx.attrs.float_or("beta", 0.75)?;
                let bias = cx.attrs.float_or("bias", 1.0)?;
                let size = cx.attrs.req_int("size")?;
                if size < 1 {
                    return Err(IrError::bad_attr(op, "size", format!("must be >= 1, got {size}")));
                }
                NnOp::Lrn {
                    alpha,
                    beta,
                    bias,
                    size,
                }
            }
            "MeanVarianceNormalization" => {
                let axes = cx.attrs.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
                NnOp::MeanVarianceNormalization { axes }
            }
            "LpNormalization" => {
                let axis = cx.attrs.int_or("axis", -1)?;
                let p = cx.attrs.int_or("p", 2)?;
                if p != 1 && p != 2 {
                    return Err(IrError::bad_attr(op, "p", format!("must be 1 or 2, got {p}")));
                }
                NnOp::LpNormalization { axis, p }
            }
            "Dropout" => {
                let ratio = cx.attrs.float_or("ratio", 0.5)?;
                let is_test = cx.attrs.int_or("is_test", 0)? != 0;
                cx.attrs.ints("consumed_inputs")?;
                let seed = cx.attrs.int("seed")?;
                if !(0.0..1.0).contains(&ratio) {
                    return Err(IrError::bad_attr(
                        op,
                        "ratio",
                        format!("must be in [0, 1), got {ratio}"),
                    ));
                }
                NnOp::Dropout {
                    ratio,
                    seed,
                    is_test,
                    legacy_mask: cx.opset < 10,
                }
            }
            "Col2Im" => {
                let dilations = cx.attrs.ints("dilations")?;
                let pads = cx.attrs.ints("pads")?;
                let strides = cx.attrs.ints("strides")?;
                positive(op, "dilations", &dilations)?;
                positive(op, "strides", &strides)?;
                non_negative(op, "pads", &pads)?;
                check_lengths(op, None, &pads, &strides, &dilations)?;
                NnOp::Col2Im {
                    dilations,
                    pads,
                    strides,
                }
            }
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(parsed))
    }
}

/// Output dims of a windowed op over `x`'s spatial dims, as far as known.
fn window_out_dims(cx: &InferCtx, spatial: &[Dim], kernel: Option<Vec<usize>>, w: Window) -> IrResult<Vec<Dim>> {
    let Some(kernel) = kernel else {
        return Ok(vec![Dim::Unknown; spatial.len()]);
    };
    let mut out = Vec::with_capacity(spatial.len());
    for (i, d) in spatial.iter().enumerate() {
        match d.known() {
            Some(n) => {
                let r = w.dim(i, n, kernel[i]).map_err(|e| cx.err(e))?;
                out.push(Dim::Known(r.out));
            }
            None => out.push(Dim::Unknown),
        }
    }
    Ok(out)
}

fn usizes(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x.max(0) as usize).collect()
}

fn tensor_out(dtype: Option<DType>, shape: Option<Shape>) -> ValueType {
    ValueType::Tensor(TensorType { dtype, shape })
}

impl NnOp {
    /// Conv-like inference: X [N, C, D...], W [M, C/group, k...] -> [N, M, out...].
    fn infer_conv(&self, cx: &InferCtx, a: &ConvAttrs, w_idx: usize, dtype: Option<DType>) -> IrResult<ValueType> {
        let x = cx.tensor(0)?;
        let w = cx.tensor(w_idx)?;
        let Some(xs) = x.shape else {
            return Ok(tensor_out(dtype, None));
        };
        if xs.len() < 3 {
            return Err(cx.err(format!("input must have rank >= 3, got {}", xs.len())));
        }
        let nsp = xs.len() - 2;
        if let Some(k) = &a.kernel_shape {
            if k.len() != nsp {
                return Err(cx.err(format!("kernel_shape has {} dims for {nsp} spatial dims", k.len())));
            }
        }
        let mut kernel = a.kernel_shape.as_deref().map(usizes);
        let mut m = Dim::Unknown;
        if let Some(ws) = &w.shape {
            if ws.len() != xs.len() {
                return Err(cx.err(format!("weight rank {} differs from input rank {}", ws.len(), xs.len())));
            }
            m = ws[0].clone();
            if kernel.is_none() {
                kernel = ws[2..].iter().map(Dim::known).collect();
            }
            if let (Some(c), Some(cg)) = (xs[1].known(), ws[1].known()) {
                if c != cg * a.group as usize {
                    return Err(cx.err(format!(
                        "input has {c} channels, weight expects {cg} x group {}",
                        a.group
                    )));
                }
            }
        }
        let win = Window::new(nsp, a.auto_pad, &a.pads, &a.strides, &a.dilations, false).map_err(|e| cx.err(e))?;
        let mut shape = vec![xs[0].clone(), m];
        shape.extend(window_out_dims(cx, &xs[2..], kernel, win)?);
        Ok(tensor_out(dtype, Some(shape)))
    }

    fn infer_pool(&self, cx: &InferCtx, a: &PoolAttrs) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        let Some(xs) = x.shape else {
            return Ok(vec![tensor_out(x.dtype, None), tensor_out(Some(DType::I64), None)]);
        };
        let nsp = a.kernel_shape.len();
        if xs.len() != nsp + 2 {
            return Err(cx.err(format!(
                "input rank {} does not match kernel_shape {:?}",
                xs.len(),
                a.kernel_shape
            )));
        }
        let win =
            Window::new(nsp, a.auto_pad, &a.pads, &a.strides, &a.dilations, a.ceil_mode).map_err(|e| cx.err(e))?;
        let mut shape = xs[..2].to_vec();
        shape.extend(window_out_dims(cx, &xs[2..], Some(usizes(&a.kernel_shape)), win)?);
        Ok(vec![
            tensor_out(x.dtype, Some(shape.clone())),
            tensor_out(Some(DType::I64), Some(shape)),
        ])
    }
}

/// `shape[..axis] + [1; rank-axis]`: the shape of per-row statistics.
fn stat_shape(shape: &Option<Shape>, axis: i64, op: &str) -> IrResult<Option<Shape>> {
    let Some(s) = shape else { return Ok(None) };
    let a = normalize_axis(op, axis, s.len())?;
    let mut out = s[..a].to_vec();
    out.extend(std::iter::repeat_n(Dim::Known(1), s.len() - a));
    Ok(Some(out))
}

fn channel_dim(shape: &Option<Shape>) -> Dim {
    shape.as_ref().and_then(|s| s.get(1).cloned()).unwrap_or(Dim::Unknown)
}

impl OpKind for NnOp {
    fn op_type(&self) -> &'static str {
        match self {
            NnOp::Conv(_) => "Conv",
            NnOp::ConvTranspose(_) => "ConvTranspose",
            NnOp::ConvInteger(_) => "ConvInteger",
            NnOp::QLinearConv(_) => "QLinearConv",
            NnOp::DeformConv { .. } => "DeformConv",
            NnOp::CausalConvWithState { .. } => "CausalConvWithState",
            NnOp::MaxPool(_) => "MaxPool",
            NnOp::AveragePool(_) => "AveragePool",
            NnOp::LpPool(_) => "LpPool",
            NnOp::GlobalAveragePool => "GlobalAveragePool",
            NnOp::GlobalMaxPool => "GlobalMaxPool",
            NnOp::GlobalLpPool { .. } => "GlobalLpPool",
            NnOp::MaxUnpool { .. } => "MaxUnpool",
            NnOp::BatchNormalization { .. } => "BatchNormalization",
            NnOp::InstanceNormalization { .. } => "InstanceNormalization",
            NnOp::LayerNormalization { .. } => "LayerNormalization",
            NnOp::GroupNormalization { .. } => "GroupNormalization",
            NnOp::RMSNormalization { .. } => "RMSNormalization",
            NnOp::Lrn { .. } => "LRN",
            NnOp::MeanVarianceNormalization { .. } => "MeanVarianceNormalization",
            NnOp::LpNormalization { .. } => "LpNormalization",
            NnOp::Dropout { .. } => "Dropout",
            NnOp::Col2Im { .. } => "Col2Im",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        match self {
            NnOp::Conv(a) => Ok(vec![self.infer_conv(cx, a, 1, x.dtype)?]),
            NnOp::ConvInteger(a) => Ok(vec![self.infer_conv(cx, a, 1, Some(DType::I32))?]),
            NnOp::QLinearConv(a) => {
                let dt = cx.opt_tensor(7)?.and_then(|t| t.dtype).or(x.dtype);
                Ok(vec![self.infer_conv(cx, a, 3, dt)?])
            }
            NnOp::DeformConv { conv, .. } => Ok(vec![self.infer_conv(cx, conv, 1, x.dtype)?]),
            NnOp::ConvTranspose(a) => {
                let w = cx.tensor(1)?;
                let Some(xs) = x.shape else {
                    return Ok(vec![tensor_out(x.dtype, None)]);
                };
                if xs.len() < 3 {
                    return Err(cx.err(format!("input must have rank >= 3, got {}", xs.len())));
                }
                let nsp = xs.len() - 2;
                let mut kernel = a.conv.kernel_shape.as_deref().map(usizes);
                let mut m = Dim::Unknown;
                if let Some(ws) = &w.shape {
                    if ws.len() != xs.len() {
                        return Err(cx.err(format!("weight rank {} differs from input rank {}", ws.len(), xs.len())));
                    }
                    if let Some(mg) = ws[1].known() {
                        m = Dim::Known(mg * a.conv.group as usize);
                    }
                    if kernel.is_none() {
                        kernel = ws[2..].iter().map(Dim::known).collect();
                    }
                }
                let mut shape = vec![xs[0].clone(), m];
                for i in 0..nsp {
                    let d = match (xs[2 + i].known(), &kernel) {
                        (Some(n), Some(k)) => geom::conv_transpose_dim(a, nsp, i, n, k[i])
                            .map(|r| Dim::Known(r.out))
                            .map_err(|e| cx.err(e))?,
                        _ => match &a.output_shape {
                            Some(os) if os.len() == nsp => Dim::Known(os[i] as usize),
                            _ => Dim::Unknown,
                        },
                    };
                    shape.push(d);
                }
                Ok(vec![tensor_out(x.dtype, Some(shape))])
            }
            NnOp::CausalConvWithState { .. } => {
                let w = cx.tensor(1)?;
                let k = w.shape.as_ref().and_then(|s| s.get(2)).and_then(Dim::known);
                let state = x.shape.as_ref().map(|s| {
                    let mut v = s.clone();
                    if v.len() == 3 {
                        v[2] = k.map_or(Dim::Unknown, |k| Dim::Known(k.saturating_sub(1)));
                    }
                    v
                });
                if let Some(s) = &x.shape {
                    if s.len() != 3 {
                        return Err(cx.err(format!("input must have rank 3, got {}", s.len())));
                    }
                }
                Ok(vec![ValueType::Tensor(x.clone()), tensor_out(x.dtype, state)])
            }
            NnOp::MaxPool(a) | NnOp::AveragePool(a) | NnOp::LpPool(a) => self.infer_pool(cx, a),
            NnOp::GlobalAveragePool | NnOp::GlobalMaxPool | NnOp::GlobalLpPool { .. } => {
                let shape = match x.shape {
                    Some(s) if s.len() < 2 => return Err(cx.err(format!("input must have rank >= 2, got {}", s.len()))),
                    Some(s) => {
                        let mut v = s[..2].to_vec();
                        v.extend(std::iter::repeat_n(Dim::Known(1), s.len() - 2));
                        Some(v)
                    }
                    None => None,
                };
                Ok(vec![tensor_out(x.dtype, shape)])
            }
            NnOp::MaxUnpool {
                kernel_shape,
                pads,
                strides,
            } => {
                let Some(xs) = x.shape else {
                    return Ok(vec![tensor_out(x.dtype, None)]);
                };
                let nsp = kernel_shape.len();
                if xs.len() != nsp + 2 {
                    return Err(cx.err(format!(
                        "input rank {} does not match kernel_shape {kernel_shape:?}",
                        xs.len()
                    )));
                }
                if cx.has_input(2) {
                    let shape = cx
                        .const_i64s(2)
                        .map(|v| v.iter().map(|&d| Dim::Known(d.max(0) as usize)).collect());
                    let shape = shape.unwrap_or_else(|| vec![Dim::Unknown; xs.len()]);
                    return Ok(vec![tensor_out(x.dtype, Some(shape))]);
                }
                let mut shape = xs[..2].to_vec();
                for i in 0..nsp {
                    shape.push(match xs[2 + i].known() {
                        Some(n) => {
                            Dim::Known(geom::unpool_dim(kernel_shape, pads, strides, i, n).map_err(|e| cx.err(e))?)
                        }
                        None => Dim::Unknown,
                    });
                }
                Ok(vec![tensor_out(x.dtype, Some(shape))])
            }
            NnOp::BatchNormalization {
                legacy_outputs,
                spatial,
                ..
            } => {
                let stat_shape = match (&x.shape, spatial) {
                    (Some(s), false) if s.len() >= 2 => Some(s[1..].to_vec()),
                    (_, false) => None,
                    (s, true) => Some(vec![channel_dim(s)]),
                };
                let stat = tensor_out(x.dtype, stat_shape);
                let mut out = vec![ValueType::Tensor(x.clone())];
                let extra = if *legacy_outputs { 4 } else { 2 };
                out.extend(std::iter::repeat_n(stat, extra.min(cx.num_outputs.saturating_sub(1))));
                Ok(out)
            }
            NnOp::LayerNormalization { axis, stash_type, .. } => {
                let st = stat_shape(&x.shape, *axis, cx.op)?;
                let sd = DType::from_onnx_code(*stash_type as i32);
                Ok(vec![
                    ValueType::Tensor(x.clone()),
                    tensor_out(sd, st.clone()),
                    tensor_out(sd, st),
                ])
            }
            NnOp::RMSNormalization { axis, .. } => {
                stat_shape(&x.shape, *axis, cx.op)?;
                Ok(vec![ValueType::Tensor(x)])
            }
            NnOp::LpNormalization { axis, .. } => {
                if let Some(r) = x.rank() {
                    normalize_axis(cx.op, *axis, r)?;
                }
                Ok(vec![ValueType::Tensor(x)])
            }
            NnOp::InstanceNormalization { .. }
            | NnOp::GroupNormalization { .. }
            | NnOp::Lrn { .. }
            | NnOp::MeanVarianceNormalization { .. } => Ok(vec![ValueType::Tensor(x)]),
            NnOp::Dropout { legacy_mask, .. } => {
                let md = if *legacy_mask { x.dtype } else { Some(DType::Bool) };
                Ok(vec![ValueType::Tensor(x.clone()), tensor_out(md, x.shape.clone())])
            }
            NnOp::Col2Im { .. } => {
                let img = cx.const_i64s(1);
                let block = cx.const_i64s(2);
                let rank = img.as_ref().map(|v| v.len()).or_else(|| {
                    cx.opt_tensor(1)
                        .ok()
                        .flatten()
                        .and_then(|t| t.shape)
                        .and_then(|s| s.first().and_then(Dim::known))
                });
                let Some(rank) = rank else {
                    return Ok(vec![tensor_out(x.dtype, None)]);
                };
                let (n, cb) = match &x.shape {
                    Some(s) if s.len() == 3 => (s[0].clone(), s[1].known()),
                    Some(s) => return Err(cx.err(format!("input must have rank 3, got {}", s.len()))),
                    None => (Dim::Unknown, None),
                };
                let c = match (cb, &block) {
                    (Some(cb), Some(b)) => {
                        let p: i64 = b.iter().product();
                        if p > 0 && cb % p as usize == 0 {
                            Dim::Known(cb / p as usize)
                        } else {
                            Dim::Unknown
                        }
                    }
                    _ => Dim::Unknown,
                };
                let mut shape = vec![n, c];
                match img {
                    Some(v) => shape.extend(v.iter().map(|&d| Dim::Known(d.max(0) as usize))),
                    None => shape.extend(std::iter::repeat_n(Dim::Unknown, rank)),
                }
                Ok(vec![tensor_out(x.dtype, Some(shape))])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::types::shape_of;

    fn parse(op: &str, opset: i64, attrs: Vec<(&str, Attr)>) -> IrResult<Option<NnOp>> {
        let items = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut cx = ParseCtx {
            domain: "",
            op_type: op,
            opset,
            attrs: Attrs::new(op, items),
            num_inputs: 3,
            num_outputs: 1,
        };
        NnOp::parse(&mut cx)
    }

    fn infer(op: &NnOp, inputs: Vec<Option<ValueType>>) -> IrResult<Vec<ValueType>> {
        let consts = vec![None; inputs.len()];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 1,
            op: op.op_type(),
        };
        op.infer(&cx)
    }

    #[test]
    fn conv_infers_strided_padded_shape() {
        let op = parse(
            "Conv",
            11,
            vec![
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ],
        )
        .unwrap()
        .unwrap();
        let x = ValueType::Tensor(TensorType::new(
            DType::F32,
            vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(7), Dim::Known(5)],
        ));
        let w = ValueType::tensor(DType::F32, shape_of(&[2, 3, 3, 3]));
        let out = infer(&op, vec![Some(x), Some(w)]).unwrap();
        assert_eq!(
            out[0],
            ValueType::Tensor(TensorType::new(
                DType::F32,
                vec![Dim::Sym("N".into()), Dim::Known(2), Dim::Known(4), Dim::Known(3)]
            ))
        );
    }

    #[test]
    fn rejects_bad_attributes() {
        assert!(parse("Conv", 11, vec![("auto_pad", Attr::String(b"SAME".to_vec()))]).is_err());
        assert!(parse("Conv", 11, vec![("strides", Attr::Ints(vec![0]))]).is_err());
        assert!(parse(
            "Conv",
            11,
            vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("pads", Attr::Ints(vec![1]))]
        )
        .is_err());
        assert!(parse("Conv", 11, vec![("bogus", Attr::Int(1))]).is_err());
        assert!(parse("MaxPool", 11, vec![]).is_err());
        assert!(parse("LpNormalization", 11, vec![("p", Attr::Int(3))]).is_err());
        assert!(parse("Relu", 11, vec![]).unwrap().is_none());
    }

    #[test]
    fn maxpool_ceil_mode_shape() {
        let op = parse(
            "MaxPool",
            12,
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("ceil_mode", Attr::Int(1)),
            ],
        )
        .unwrap()
        .unwrap();
        let x = ValueType::tensor(DType::F32, shape_of(&[1, 1, 4, 4]));
        let out = infer(&op, vec![Some(x)]).unwrap();
        assert_eq!(out[0], ValueType::tensor(DType::F32, shape_of(&[1, 1, 2, 2])));
    }
}
