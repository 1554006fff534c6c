//! Resize / Upsample: separable 1-D interpolation applied axis by axis from
//! the innermost axis outwards, with per-output-index tap lists computed the
//! way the ONNX reference does (`_interpolate_1d_with_x`), including its
//! edge-padded neighbour selection, antialiasing and tf_crop_and_resize
//! extrapolation (which, like the reference, is applied per axis pass).

use super::{check_elems, from_f64, to_f64};
use crate::error::{invalid, OpResult};
use crate::ops::{opt_tensor_in, tensor_in};
use carbide_ir::ops::image::{AspectPolicy, CoordMode, InterpMode, NearestMode, ResizeAttrs};
use carbide_ir::{Tensor, Value};
use rayon::prelude::*;

const OP: &str = "Resize";

/// One output position along an axis: input taps, or the extrapolation value.
#[derive(Debug, Clone, PartialEq)]
enum Taps {
    Extrapolate,
    Sum(Vec<(usize, f64)>),
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
        ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a) * ((1.0 - r) + 1.0) - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let f = |x: f64| {
        let x = x.abs();
        let x2 = x * x;
        let x3 = x * x2;
        if x <= 1.0 {
            (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
        } else if x < 2.0 {
            a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let i_start = (-2.0 / scale).floor() as i64 + 1;
    let i_end = 2 - i_start;
    let c: Vec<f64> = (i_start..i_end).map(|i| f(scale * (i as f64 - r))).collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let footprint = 2 - 2 * start;
    let c: Vec<f64> = (start..start + footprint)
        .map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0))
        .collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

fn nearest_coeffs(r: f64, mode: NearestMode) -> Vec<f64> {
    if r.fract() == 0.0 {
        return vec![0.0, 1.0];
    }
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match mode {
        NearestMode::RoundPreferFloor => vec![b(r <= 0.5), b(r > 0.5)],
        NearestMode::RoundPreferCeil => vec![b(r < 0.5), b(r >= 0.5)],
        NearestMode::Floor => vec![1.0, 0.0],
        NearestMode::Ceil => vec![0.0, 1.0],
    }
}

/// Taps for every output index of one axis.
fn axis_plan(r: &ResizeAttrs, in_len: usize, out_len: usize, scale: f64, roi: (f64, f64)) -> OpResult<Vec<Taps>> {
    let inw = in_len as f64;
    let output_width = scale * inw;
    // Antialias footprints grow as 1/scale; keep them bounded.
    if r.antialias && scale < 1e-4 {
        return Err(invalid(format!("Resize: antialias scale {scale} is too small")));
    }
    let mut plan = Vec::with_capacity(out_len);
    for xo in 0..out_len {
        let x = xo as f64;
        let x_ori = match r.coord {
            CoordMode::AlignCorners => {
                if output_width == 1.0 {
                    0.0
                } else {
                    x * (inw - 1.0) / (output_width - 1.0)
                }
            }
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfCropAndResize => {
                let mut v = if output_width == 1.0 {
                    (roi.1 - roi.0) * (inw - 1.0) / 2.0
                } else {
                    x * (roi.1 - roi.0) * (inw - 1.0) / (output_width - 1.0)
                };
                v += roi.0 * (inw - 1.0);
                if v < 0.0 || v > inw - 1.0 || v.is_nan() {
                    plan.push(Taps::Extrapolate);
                    continue;
                }
                v
            }
            CoordMode::PytorchHalfPixel => {
                if output_width == 1.0 {
                    -0.5
                } else {
                    (x + 0.5) / scale - 0.5
                }
            }
            CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::HalfPixelSymmetric => {
                let adjustment = out_len as f64 / output_width;
                let center = inw / 2.0;
                let offset = center * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
        };
        if !x_ori.is_finite() {
            return Err(invalid(format!("Resize: source coordinate {x_ori} is not finite")));
        }
        let is_int = x_ori.fract() == 0.0;
        let ratio = if is_int { 1.0 } else { x_ori - x_ori.floor() };
        let a = r.cubic_coeff_a as f64;
        let mut coeffs = match (r.mode, r.antialias) {
            (InterpMode::Nearest, _) => nearest_coeffs(ratio, r.nearest_mode),
            (InterpMode::Linear, false) => vec![1.0 - ratio, ratio],
            (InterpMode::Linear, true) => linear_coeffs_antialias(ratio, scale),
            (InterpMode::Cubic, false) => cubic_coeffs(ratio, a),
            (InterpMode::Cubic, true) => cubic_coeffs_antialias(ratio, scale, a),
        };
        let n = coeffs.len() as i64;
        let pad = (n + 1) / 2;
        let limit = in_len as i64 + 2 * pad;
        let xp = x_ori + pad as f64;
        // The n indices of the padded axis nearest to xp (ties to the smaller
        // index) form a window; clamp it into the padded axis.
        let s0 = if is_int {
            xp as i64 - n / 2
        } else {
            xp.floor() as i64 - n / 2 + 1
        };
        let s = s0.clamp(0, (limit - n).max(0));
        let idxs: Vec<i64> = (0..n).map(|k| s + k - pad).collect();
        if r.exclude_outside {
            for (c, &i) in coeffs.iter_mut().zip(&idxs) {
                if i < 0 || i >= in_len as i64 {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            coeffs.iter_mut().for_each(|c| *c /= sum);
        }
        let taps = idxs
            .iter()
            .zip(&coeffs)
            .filter(|(_, &c)| c != 0.0)
            .map(|(&i, &c)| (i.clamp(0, in_len as i64 - 1) as usize, c))
            .collect();
        plan.push(Taps::Sum(taps));
    }
    Ok(plan)
}

fn is_identity(plan: &[Taps], in_len: usize) -> bool {
    plan.len() == in_len
        && plan.iter().enumerate().all(|(j, t)| match t {
            Taps::Sum(v) => v.len() == 1 && v[0].0 == j && v[0].1 == 1.0,
            Taps::Extrapolate => false,
        })
}

/// Applies one axis's plan: `data` is [outer, in_len, inner].
fn apply_axis(data: &[f64], outer: usize, in_len: usize, inner: usize, plan: &[Taps], extrap: f64) -> Vec<f64> {
    let out_len = plan.len();
    let mut out = vec![0.0; outer * out_len * inner];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(out_len * inner).enumerate().for_each(|(o, dst)| {
        let src = &data[o * in_len * inner..(o + 1) * in_len * inner];
        for (j, taps) in plan.iter().enumerate() {
            let d = &mut dst[j * inner..(j + 1) * inner];
            match taps {
                Taps::Extrapolate => d.iter_mut().for_each(|v| *v = extrap),
                Taps::Sum(t) => {
                    for &(i, w) in t {
                        let s = &src[i * inner..(i + 1) * inner];
                        for (dv, sv) in d.iter_mut().zip(s) {
                            *dv += w * sv;
                        }
                    }
                }
            }
        }
    });
    out
}

fn non_empty(t: Option<&Tensor>) -> Option<&Tensor> {
    t.filter(|t| !t.is_empty())
}

pub(super) fn resize(r: &ResizeAttrs, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    let shape = x.shape().to_vec();
    let rank = shape.len();
    let axes: Vec<usize> = match &r.axes {
        Some(ax) => ax
            .iter()
            .map(|&a| {
                let v = if a < 0 { a + rank as i64 } else { a };
                if v < 0 || v >= rank as i64 {
                    Err(invalid(format!("Resize: axis {a} out of range for rank {rank}")))
                } else {
                    Ok(v as usize)
                }
            })
            .collect::<OpResult<_>>()?,
        None => (0..rank).collect(),
    };
    let roi_t = match r.roi_input {
        Some(i) => non_empty(opt_tensor_in(inputs, i)?),
        None => None,
    };
    let scales: Option<Vec<f64>> = match (&r.attr_scales, r.scales_input) {
        (Some(s), _) => Some(s.iter().map(|&v| v as f64).collect()),
        (None, Some(i)) => non_empty(opt_tensor_in(inputs, i)?)
            .map(|t| to_f64(OP, t))
            .transpose()?,
        _ => None,
    };
    let sizes: Option<Vec<i64>> = match r.sizes_input {
        Some(i) => non_empty(opt_tensor_in(inputs, i)?)
            .map(|t| t.to_i64_vec().ok_or_else(|| invalid("Resize: sizes must be int64")))
            .transpose()?,
        None => None,
    };
    let mut full_scale = vec![1.0f64; rank];
    let mut out_shape = shape.clone();
    match (&scales, &sizes) {
        (Some(_), Some(_)) => return Err(invalid("Resize: only one of scales and sizes may be given")),
        (None, None) => return Err(invalid("Resize: one of scales and sizes is required")),
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(invalid(format!("Resize: {} scales for {} axes", s.len(), axes.len())));
            }
            for (&a, &v) in axes.iter().zip(s) {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(invalid(format!("Resize: scale {v} must be positive")));
                }
                full_scale[a] = v;
                let o = (shape[a] as f64 * v).floor();
                if o > super::MAX_ELEMS as f64 {
                    return Err(invalid(format!("Resize: output dim {o} too large")));
                }
                out_shape[a] = o as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(invalid(format!("Resize: {} sizes for {} axes", sz.len(), axes.len())));
            }
            if let Some(&bad) = sz.iter().find(|&&v| v < 0 || v as u64 > super::MAX_ELEMS as u64) {
                return Err(invalid(format!("Resize: bad output size {bad}")));
            }
            match r.keep_aspect_ratio_policy {
                AspectPolicy::Stretch => {
                    for (&a, &v) in axes.iter().zip(sz) {
                        out_shape[a] = v as usize;
                        full_scale[a] = v as f64 / shape[a] as f64;
                    }
                }
                p => {
                    let ratios = axes.iter().zip(sz).map(|(&a, &v)| v as f64 / shape[a] as f64);
                    let s = if p == AspectPolicy::NotLarger {
                        ratios.fold(f64::INFINITY, f64::min)
                    } else {
                        ratios.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        full_scale[a] = s;
                        let o = (s * shape[a] as f64 + 0.5).floor();
                        if !(0.0..=super::MAX_ELEMS as f64).contains(&o) {
                            return Err(invalid(format!("Resize: output dim {o} out of range")));
                        }
                        out_shape[a] = o as usize;
                    }
                }
            }
        }
    }
    let mut roi = vec![(0.0f64, 1.0f64); rank];
    if r.coord == CoordMode::TfCropAndResize {
        if let Some(t) = roi_t {
            let v = to_f64(OP, t)?;
            if v.len() != 2 * axes.len() {
                return Err(invalid(format!(
                    "Resize: roi has {} values, expected {}",
                    v.len(),
                    2 * axes.len()
                )));
            }
            let k = axes.len();
            for (j, &a) in axes.iter().enumerate() {
                roi[a] = (v[j], v[j + k]);
            }
        }
    }
    check_elems(&out_shape)?;
    let mut data = to_f64(OP, x)?;
    let mut cur = shape.clone();
    for a in (0..rank).rev() {
        if full_scale[a] == 1.0 && out_shape[a] == cur[a] && roi[a] == (0.0, 1.0) {
            continue;
        }
        let in_len = cur[a];
        let out_len = out_shape[a];
        if in_len == 0 {
            if out_len == 0 {
                continue;
            }
            return Err(invalid("Resize: cannot resize an empty axis to a non-empty one"));
        }
        let plan = axis_plan(r, in_len, out_len, full_scale[a], roi[a])?;
        if is_identity(&plan, in_len) {
            continue;
        }
        let outer: usize = cur[..a].iter().product();
        let inner: usize = cur[a + 1..].iter().product();
        data = apply_axis(&data, outer, in_len, inner, &plan, r.extrapolation_value as f64);
        cur[a] = out_len;
    }
    from_f64(OP, x.dtype(), &cur, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ops::image::AspectPolicy;
    use ndarray::{ArrayD, IxDyn};

    fn attrs(mode: InterpMode, coord: CoordMode) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::Stretch,
            attr_scales: None,
            roi_input: Some(1),
            scales_input: Some(2),
            sizes_input: Some(3),
            upsample: false,
        }
    }

    fn run(r: &ResizeAttrs, x: Tensor, scales: Vec<f32>) -> Vec<f32> {
        let xv = Value::Tensor(x);
        let sv = Value::Tensor(Tensor::from_f32s(scales));
        let out = resize(r, &[Some(&xv), None, Some(&sv), None]).unwrap();
        match out {
            Tensor::F32(a) => a.iter().copied().collect(),
            _ => panic!(),
        }
    }

    #[test]
    fn linear_half_pixel_upsample() {
        // numpy reference: onnx test_resize_upsample_scales_linear
        let x = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1., 2., 3., 4.]).unwrap());
        let y = run(
            &attrs(InterpMode::Linear, CoordMode::HalfPixel),
            x,
            vec![1., 1., 2., 2.],
        );
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn nearest_asymmetric_floor() {
        let mut r = attrs(InterpMode::Nearest, CoordMode::Asymmetric);
        r.nearest_mode = NearestMode::Floor;
        let x = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 2]), vec![1., 2.]).unwrap());
        assert_eq!(run(&r, x, vec![1., 1., 1., 3.]), vec![1., 1., 1., 2., 2., 2.]);
    }

    #[test]
    fn rejects_both_or_neither() {
        let r = attrs(InterpMode::Nearest, CoordMode::Asymmetric);
        let xv = Value::Tensor(Tensor::from_f32s(vec![1.0]));
        assert!(resize(&r, &[Some(&xv)]).is_err());
    }
}
