//! Image ops: resampling (Resize, Upsample), sampling grids (GridSample,
//! AffineGrid), region-of-interest pooling (RoiAlign, MaxRoiPool), detection
//! post-processing (NonMaxSuppression) and ImageDecoder.

use super::{InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::types::{Dim, Shape, ValueType};
use crate::DType;

/// Interpolation kind shared by Resize/Upsample and GridSample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InterpMode {
    Nearest,
    Linear,
    Cubic,
}

/// How Resize maps an output coordinate back to the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

/// Rounding of a fractional source coordinate in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where Resize/Upsample find roi, scales and sizes: the layout changed
/// across opsets (Upsample-7 took scales as an attribute, Resize-10 and
/// Upsample-9 take scales as input 1, Resize-11+ take roi, scales, sizes).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResizeAttrs {
    pub mode: InterpMode,
    pub coord: CoordMode,
    pub nearest_mode: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub keep_aspect_ratio_policy: AspectPolicy,
    /// Upsample-7 scales attribute.
    pub attr_scales: Option<Vec<f32>>,
    pub roi_input: Option<usize>,
    pub scales_input: Option<usize>,
    pub sizes_input: Option<usize>,
    pub upsample: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PaddingMode {
    Zeros,
    Border,
    Reflection,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridSampleAttrs {
    pub mode: InterpMode,
    pub padding_mode: PaddingMode,
    pub align_corners: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoiAlignAttrs {
    /// true: max pooling of the samples, false: average.
    pub max: bool,
    pub output_height: usize,
    pub output_width: usize,
    pub sampling_ratio: i64,
    pub spatial_scale: f32,
    /// true for half_pixel (opset 16 default), false for output_half_pixel.
    pub half_pixel: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Grayscale,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ImageOp {
    Resize(ResizeAttrs),
    GridSample(GridSampleAttrs),
    AffineGrid {
        align_corners: bool,
    },
    RoiAlign(RoiAlignAttrs),
    MaxRoiPool {
        pooled_shape: [usize; 2],
        spatial_scale: f32,
    },
    NonMaxSuppression {
        center_point_box: bool,
    },
    ImageDecoder {
        pixel_format: PixelFormat,
    },
}

fn interp_mode(op: &str, s: &str, old_names: bool) -> IrResult<InterpMode> {
    Ok(match s {
        "nearest" => InterpMode::Nearest,
        "linear" => InterpMode::Linear,
        "cubic" => InterpMode::Cubic,
        "bilinear" | "trilinear" if old_names => InterpMode::Linear,
        "bicubic" if old_names => InterpMode::Cubic,
        _ => return Err(IrError::bad_attr(op, "mode", format!("unknown mode {s:?}"))),
    })
}

fn parse_resize(cx: &mut ParseCtx, upsample: bool) -> IrResult<ResizeAttrs> {
    let op = cx.op_type;
    let opset = cx.opset;
    let a = &mut cx.attrs;
    let mode = a.string_or("mode", "nearest")?;
    let mode = interp_mode(op, &mode, upsample || opset < 11)?;
    if (upsample || opset < 11) && mode == InterpMode::Cubic {
        return Err(IrError::bad_attr(op, "mode", "cubic needs Resize-11 or later"));
    }
    let mut r = ResizeAttrs {
        mode,
        coord: CoordMode::Asymmetric,
        nearest_mode: NearestMode::Floor,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes: None,
        keep_aspect_ratio_policy: AspectPolicy::Stretch,
        attr_scales: None,
        roi_input: None,
        scales_input: None,
        sizes_input: None,
        upsample,
    };
    if upsample {
        if opset < 9 {
            r.attr_scales = Some(
                a.floats("scales")?
                    .ok_or_else(|| IrError::bad_attr(op, "scales", "is required"))?,
            );
        } else {
            r.scales_input = Some(1);
        }
    } else if opset < 11 {
        r.scales_input = Some(1);
    } else {
        r.roi_input = Some(1);
        r.scales_input = Some(2);
        r.sizes_input = Some(3);
        let coord = a.string_or("coordinate_transformation_mode", "half_pixel")?;
        r.coord = match coord.as_str() {
            "half_pixel" => CoordMode::HalfPixel,
            "half_pixel_symmetric" if opset >= 19 => CoordMode::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            "tf_crop_and_resize" => CoordMode::TfCropAndResize,
            // Resize-11 listed tf_half_pixel_for_nn; it equals half_pixel
            // for the nearest mode it was meant for.
            "tf_half_pixel_for_nn" if opset < 13 => CoordMode::HalfPixel,
            _ => {
                return Err(IrError::bad_attr(
                    op,
                    "coordinate_transformation_mode",
                    format!("unknown mode {coord:?}"),
                ))
            }
        };
        let nm = a.string_or("nearest_mode", "round_prefer_floor")?;
        r.nearest_mode = match nm.as_str() {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            _ => return Err(IrError::bad_attr(op, "nearest_mode", format!("unknown mode {nm:?}"))),
        };
        r.cubic_coeff_a = a.float_or("cubic_coeff_a", -0.75)?;
        r.exclude_outside = a.int_or("exclude_outside", 0)? != 0;
        r.extrapolation_value = a.float_or("extrapolation_value", 0.0)?;
        if opset >= 18 {
            r.antialias = a.int_or("antialias", 0)? != 0;
            r.axes = a.ints("axes")?;
            if let Some(axes) = &r.axes {
                let mut s = axes.clone();
                s.sort_unstable();
                s.dedup();
                if s.len() != axes.len() {
                    return Err(IrError::bad_attr(op, "axes", "repeated axis"));
                }
            }
            let p = a.string_or("keep_aspect_ratio_policy", "stretch")?;
            r.keep_aspect_ratio_policy = match p.as_str() {
                "stretch" => AspectPolicy::Stretch,
                "not_larger" => AspectPolicy::NotLarger,
                "not_smaller" => AspectPolicy::NotSmaller,
                _ => {
                    return Err(IrError::bad_attr(
                        op,
                        "keep_aspect_ratio_policy",
                        format!("unknown policy {p:?}"),
                    ))
                }
            };
        }
    }
    Ok(r)
}

impl ImageOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !(cx.domain.is_empty() || cx.domain == "ai.onnx") {
            return Ok(None);
        }
        let op_name = cx.op_type;
        let op = match cx.op_type {
            "Resize" => ImageOp::Resize(parse_resize(cx, false)?),
            "Upsample" => ImageOp::Resize(parse_resize(cx, true)?),
            "GridSample" => {
                let a = &mut cx.attrs;
                let mode = a.string_or("mode", if cx.opset >= 20 { "linear" } else { "bilinear" })?;
                let mode = interp_mode(op_name, &mode, true)?;
                let pm = a.string_or("padding_mode", "zeros")?;
                let padding_mode = match pm.as_str() {
                    "zeros" => PaddingMode::Zeros,
                    "border" => PaddingMode::Border,
                    "reflection" => PaddingMode::Reflection,
                    _ => {
                        return Err(IrError::bad_attr(
                            op_name,
                            "padding_mode",
                            format!("unknown mode {pm:?}"),
                        ))
                    }
                };
                let align_corners = a.int_or("align_corners", 0)? != 0;
                ImageOp::GridSample(GridSampleAttrs {
                    mode,
                    padding_mode,
                    align_corners,
                })
            }
            "AffineGrid" => ImageOp::AffineGrid {
                align_corners: cx.attrs.int_or("align_corners", 0)? != 0,
            },
            "RoiAlign" => {
                let a = &mut cx.attrs;
                let mode = a.string_or("mode", "avg")?;
                let max = match mode.as_str() {
                    "avg" => false,
                    "max" => true,
                    _ => return Err(IrError::bad_attr(op_name, "mode", format!("unknown mode {mode:?}"))),
                };
                let half_pixel = if cx.opset >= 16 {
                    let c = a.string_or("coordinate_transformation_mode", "half_pixel")?;
                    match c.as_str() {
                        "half_pixel" => true,
                        "output_half_pixel" => false,
                        _ => {
                            return Err(IrError::bad_attr(
                                op_name,
                                "coordinate_transformation_mode",
                                format!("unknown mode {c:?}"),
                            ))
                        }
                    }
                } else {
                    false
                };
                let oh = a.int_or("output_height", 1)?;
                let ow = a.int_or("output_width", 1)?;
                if !(1..=1 << 20).contains(&oh) {
                    return Err(IrError::bad_attr(op_name, "output_height", "must be in 1..=2^20"));
                }
                if !(1..=1 << 20).contains(&ow) {
                    return Err(IrError::bad_attr(op_name, "output_width", "must be in 1..=2^20"));
                }
                let sampling_ratio = a.int_or("sampling_ratio", 0)?;
                if !(0..=1 << 16).contains(&sampling_ratio) {
                    return Err(IrError::bad_attr(op_name, "sampling_ratio", "must be in 0..=65536"));
                }
                let spatial_scale = a.float_or("spatial_scale", 1.0)?;
                ImageOp::RoiAlign(RoiAlignAttrs {
                    max,
                    output_height: oh as usize,
                    output_width: ow as usize,
                    sampling_ratio,
                    spatial_scale,
                    half_pixel,
                })
            }
            "MaxRoiPool" => {
                let a = &mut cx.attrs;
                let ps = a.req_ints("pooled_shape")?;
                if ps.len() != 2 || ps.iter().any(|&v| !(1..=1 << 20).contains(&v)) {
                    return Err(IrError::bad_attr(
                        op_name,
                        "pooled_shape",
                        "must be two values in 1..=2^20",
                    ));
                }
                let spatial_scale = a.float_or("spatial_scale", 1.0)?;
                ImageOp::MaxRoiPool {
                    pooled_shape: [ps[0] as usize, ps[1] as usize],
                    spatial_scale,
                }
            }
            "NonMaxSuppression" => {
                let c = cx.attrs.int_or("center_point_box", 0)?;
                if c != 0 && c != 1 {
                    return Err(IrError::bad_attr(op_name, "center_point_box", "must be 0 or 1"));
                }
                ImageOp::NonMaxSuppression {
                    center_point_box: c == 1,
                }
            }
            "ImageDecoder" => {
                let p = cx.attrs.string_or("pixel_format", "RGB")?;
                let pixel_format = match p.as_str() {
                    "RGB" => PixelFormat::Rgb,
                    "BGR" => PixelFormat::Bgr,
                    "Grayscale" => PixelFormat::Grayscale,
                    _ => {
                        return Err(IrError::bad_attr(
                            op_name,
                            "pixel_format",
                            format!("unknown format {p:?}"),
                        ))
                    }
                };
                ImageOp::ImageDecoder { pixel_format }
            }
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(op))
    }
}

fn dim_of(s: &Option<Shape>, i: usize) -> Dim {
    s.as_ref().and_then(|s| s.get(i).cloned()).unwrap_or(Dim::Unknown)
}

impl ImageOp {
    fn infer_resize(&self, r: &ResizeAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let x = cx.tensor(0)?;
        let Some(shape) = x.shape.clone() else {
            return Ok(vec![ValueType::Tensor(x)]);
        };
        let rank = shape.len();
        let axes: Vec<usize> = match &r.axes {
            Some(ax) => ax
                .iter()
                .map(|&a| super::normalize_axis(cx.op, a, rank))
                .collect::<IrResult<Vec<_>>>()?,
            None => (0..rank).collect(),
        };
        let sizes = r.sizes_input.and_then(|i| cx.const_i64s(i)).filter(|v| !v.is_empty());
        let scales: Option<Vec<f64>> = match &r.attr_scales {
            Some(s) => Some(s.iter().map(|&v| v as f64).collect()),
            None => r
                .scales_input
                .and_then(|i| cx.const_value(i))
                .and_then(|t| t.to_f64_vec())
                .filter(|v| !v.is_empty()),
        };
        let mut out: Shape = shape.clone();
        if let (Some(sizes), AspectPolicy::Stretch) = (&sizes, r.keep_aspect_ratio_policy) {
            if sizes.len() != axes.len() {
                return Err(cx.err(format!("sizes has {} values for {} axes", sizes.len(), axes.len())));
            }
            for (&a, &s) in axes.iter().zip(sizes) {
                out[a] = if s >= 0 { Dim::Known(s as usize) } else { Dim::Unknown };
            }
        } else if sizes.is_none() && scales.is_some() {
            let scales = scales.unwrap_or_default();
            if scales.len() != axes.len() {
                return Err(cx.err(format!("scales has {} values for {} axes", scales.len(), axes.len())));
            }
            for (&a, &s) in axes.iter().zip(&scales) {
                out[a] = match &shape[a] {
                    Dim::Known(n) if s > 0.0 => Dim::Known((*n as f64 * s).floor() as usize),
                    d if s == 1.0 => d.clone(),
                    _ => Dim::Unknown,
                };
            }
        } else {
            for &a in &axes {
                out[a] = Dim::Unknown;
            }
        }
        Ok(vec![ValueType::Tensor(crate::types::TensorType {
            dtype: x.dtype,
            shape: Some(out),
        })])
    }
}

impl OpKind for ImageOp {
    fn op_type(&self) -> &'static str {
        match self {
            ImageOp::Resize(r) if r.upsample => "Upsample",
            ImageOp::Resize(_) => "Resize",
            ImageOp::GridSample(_) => "GridSample",
            ImageOp::AffineGrid { .. } => "AffineGrid",
            ImageOp::RoiAlign(_) => "RoiAlign",
            ImageOp::MaxRoiPool { .. } => "MaxRoiPool",
            ImageOp::NonMaxSuppression { .. } => "NonMaxSuppression",
            ImageOp::ImageDecoder { .. } => "ImageDecoder",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        use crate::types::TensorType;
        match self {
            ImageOp::Resize(r) => self.infer_resize(r, cx),
            ImageOp::GridSample(_) => {
                let x = cx.tensor(0)?;
                let g = cx.tensor(1)?;
                if let (Some(a), Some(b)) = (x.dtype, g.dtype) {
                    if a != b && !(a.is_float() && b.is_float()) {
                        return Err(cx.err(format!("X is {a} but grid is {b}")));
                    }
                }
                let shape = match (&x.shape, &g.shape) {
                    (_, Some(gs)) if gs.len() >= 2 => {
                        if let Some(xr) = x.rank() {
                            if xr != gs.len() {
                                return Err(cx.err(format!("X has rank {xr} but grid has rank {}", gs.len())));
                            }
                        }
                        let mut s = vec![dim_of(&g.shape, 0), dim_of(&x.shape, 1)];
                        s.extend(gs[1..gs.len() - 1].iter().cloned());
                        Some(s)
                    }
                    (Some(xs), _) => Some(vec![Dim::Unknown; xs.len()]),
                    _ => None,
                };
                Ok(vec![ValueType::Tensor(TensorType { dtype: x.dtype, shape })])
            }
            ImageOp::AffineGrid { .. } => {
                let theta = cx.tensor(0)?;
                let size = cx.const_i64s(1);
                let shape = if let Some(size) = size {
                    if size.len() != 4 && size.len() != 5 {
                        return Err(cx.err(format!("size has {} values, expected 4 or 5", size.len())));
                    }
                    let mut s: Shape = vec![Dim::Known(size[0].max(0) as usize)];
                    s.extend(size[2..].iter().map(|&v| Dim::Known(v.max(0) as usize)));
                    s.push(Dim::Known(size.len() - 2));
                    Some(s)
                } else {
                    match theta.shape.as_ref().and_then(|s| s.get(1)).and_then(Dim::known) {
                        Some(2) => Some(vec![dim_of(&theta.shape, 0), Dim::Unknown, Dim::Unknown, Dim::Known(2)]),
                        Some(3) => Some(vec![
                            dim_of(&theta.shape, 0),
                            Dim::Unknown,
                            Dim::Unknown,
                            Dim::Unknown,
                            Dim::Known(3),
                        ]),
                        _ => None,
                    }
                };
                Ok(vec![ValueType::Tensor(TensorType {
                    dtype: theta.dtype,
                    shape,
                })])
            }
            ImageOp::RoiAlign(r) => {
                let x = cx.tensor(0)?;
                let rois = cx.tensor(1)?;
                if let Some(xr) = x.rank() {
                    if xr != 4 {
                        return Err(cx.err(format!("X must have rank 4, got {xr}")));
                    }
                }
                let shape = vec![
                    dim_of(&rois.shape, 0),
                    dim_of(&x.shape, 1),
                    Dim::Known(r.output_height),
                    Dim::Known(r.output_width),
                ];
                Ok(vec![ValueType::Tensor(TensorType {
                    dtype: x.dtype,
                    shape: Some(shape),
                })])
            }
            ImageOp::MaxRoiPool { pooled_shape, .. } => {
                let x = cx.tensor(0)?;
                let rois = cx.tensor(1)?;
                let shape = vec![
                    dim_of(&rois.shape, 0),
                    dim_of(&x.shape, 1),
                    Dim::Known(pooled_shape[0]),
                    Dim::Known(pooled_shape[1]),
                ];
                Ok(vec![ValueType::Tensor(TensorType {
                    dtype: x.dtype,
                    shape: Some(shape),
                })])
            }
            ImageOp::NonMaxSuppression { .. } => {
                cx.tensor(0)?;
                cx.tensor(1)?;
                Ok(vec![ValueType::tensor(DType::I64, vec![Dim::Unknown, Dim::Known(3)])])
            }
            ImageOp::ImageDecoder { pixel_format } => {
                cx.tensor(0)?;
                let c = if *pixel_format == PixelFormat::Grayscale { 1 } else { 3 };
                Ok(vec![ValueType::tensor(
                    DType::U8,
                    vec![Dim::Unknown, Dim::Unknown, Dim::Known(c)],
                )])
            }
        }
    }
}
