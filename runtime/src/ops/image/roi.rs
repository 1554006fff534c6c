//! RoiAlign (ORT/ONNX-reference bilinear sampling, avg or max) and
//! MaxRoiPool (Caffe-style max pooling over quantized ROI bins).

use super::{check_elems, from_f64, to_f64};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::image::RoiAlignAttrs;
use carbide_ir::Tensor;
use rayon::prelude::*;

fn nchw(op: &str, x: &Tensor) -> OpResult<[usize; 4]> {
    match x.shape() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        s => Err(invalid(format!("{op}: X must have rank 4, got shape {s:?}"))),
    }
}

/// Bilinear sample positions/weights of one sample point (ORT pre_calc).
fn sample(y: f64, x: f64, h: usize, w: usize) -> Option<[(usize, f64); 4]> {
    let (hf, wf) = (h as f64, w as f64);
    if y < -1.0 || y > hf || x < -1.0 || x > wf || h == 0 || w == 0 {
        return None;
    }
    let mut y = y.max(0.0);
    let mut x = x.max(0.0);
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= h - 1 {
        y_low = h - 1;
        y_high = h - 1;
        y = y_low as f64;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= w - 1 {
        x_low = w - 1;
        x_high = w - 1;
        x = x_low as f64;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f64;
    let lx = x - x_low as f64;
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some([
        (y_low * w + x_low, hy * hx),
        (y_low * w + x_high, hy * lx),
        (y_high * w + x_low, ly * hx),
        (y_high * w + x_high, ly * lx),
    ])
}

pub(super) fn roi_align(r: &RoiAlignAttrs, x: &Tensor, rois: &Tensor, bi: &Tensor) -> OpResult<Tensor> {
    let [n, c, h, w] = nchw("RoiAlign", x)?;
    let rs = rois.shape();
    if rs.len() != 2 || rs[1] != 4 {
        return Err(invalid(format!("RoiAlign: rois must be [num_rois, 4], got {rs:?}")));
    }
    let nr = rs[0];
    let bidx = bi
        .to_i64_vec()
        .ok_or_else(|| invalid("RoiAlign: batch_indices must be integers"))?;
    if bidx.len() != nr {
        return Err(invalid(format!("RoiAlign: {} batch indices for {nr} rois", bidx.len())));
    }
    if let Some(&b) = bidx.iter().find(|&&b| b < 0 || b as usize >= n) {
        return Err(invalid(format!("RoiAlign: batch index {b} out of range for batch {n}")));
    }
    let (oh, ow) = (r.output_height, r.output_width);
    let out_shape = [nr, c, oh, ow];
    check_elems(&out_shape)?;
    let xd = to_f64("RoiAlign", x)?;
    let rd = to_f64("RoiAlign", rois)?;
    let scale = r.spatial_scale as f64;
    let offset = if r.half_pixel { 0.5 } else { 0.0 };
    let mut out = vec![0.0f64; nr * c * oh * ow];
    let per_roi = c * oh * ow;
    if per_roi == 0 {
        return from_f64("RoiAlign", x.dtype(), &out_shape, out);
    }
    let res: OpResult<()> = out.par_chunks_mut(per_roi).enumerate().try_for_each(|(ri, o)| {
        let b = bidx[ri] as usize;
        let bx = &rd[ri * 4..ri * 4 + 4];
        let sw = bx[0] * scale - offset;
        let sh = bx[1] * scale - offset;
        let ew = bx[2] * scale - offset;
        let eh = bx[3] * scale - offset;
        let (mut rw, mut rh) = (ew - sw, eh - sh);
        if !r.half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let bin_h = rh / oh as f64;
        let bin_w = rw / ow as f64;
        let grid = |v: f64| -> OpResult<usize> {
            let g = v.ceil();
            if !(g.is_finite() && g <= 4096.0) {
                return Err(invalid(format!("RoiAlign: sampling grid {g} too large")));
            }
            Ok(g.max(0.0) as usize)
        };
        let gh = if r.sampling_ratio > 0 {
            r.sampling_ratio as usize
        } else {
            grid(rh / oh as f64)?
        };
        let gw = if r.sampling_ratio > 0 {
            r.sampling_ratio as usize
        } else {
            grid(rw / ow as f64)?
        };
        let count = (gh * gw).max(1) as f64;
        for ph in 0..oh {
            for pw in 0..ow {
                let mut samples = Vec::with_capacity(gh * gw);
                for iy in 0..gh {
                    let y = sh + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / gh as f64;
                    for ix in 0..gw {
                        let xx = sw + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / gw as f64;
                        samples.push(sample(y, xx, h, w));
                    }
                }
                for ch in 0..c {
                    let img = &xd[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                    let val = if r.max {
                        let mut m: Option<f64> = None;
                        for s in &samples {
                            let v = match s {
                                Some(t) => t.iter().map(|&(i, wt)| wt * img[i]).fold(f64::NEG_INFINITY, f64::max),
                                None => 0.0,
                            };
                            m = Some(m.map_or(v, |m| m.max(v)));
                        }
                        m.unwrap_or(0.0)
                    } else {
                        let mut acc = 0.0;
                        for t in samples.iter().flatten() {
                            acc += t.iter().map(|&(i, wt)| wt * img[i]).sum::<f64>();
                        }
                        acc / count
                    };
                    o[(ch * oh + ph) * ow + pw] = val;
                }
            }
        }
        Ok(())
    });
    res?;
    from_f64("RoiAlign", x.dtype(), &out_shape, out)
}

pub(super) fn max_roi_pool(pooled: [usize; 2], spatial_scale: f32, x: &Tensor, rois: &Tensor) -> OpResult<Tensor> {
    let [n, c, h, w] = nchw("MaxRoiPool", x)?;
    let rs = rois.shape();
    if rs.len() != 2 || rs[1] != 5 {
        return Err(invalid(format!("MaxRoiPool: rois must be [num_rois, 5], got {rs:?}")));
    }
    let nr = rs[0];
    let [ph_n, pw_n] = pooled;
    let out_shape = [nr, c, ph_n, pw_n];
    check_elems(&out_shape)?;
    let xd = to_f64("MaxRoiPool", x)?;
    let rd = to_f64("MaxRoiPool", rois)?;
    let scale = spatial_scale as f64;
    let mut out = vec![0.0f64; nr * c * ph_n * pw_n];
    for ri in 0..nr {
        let r = &rd[ri * 5..ri * 5 + 5];
        let b = r[0];
        if !(b >= 0.0 && (b as usize) < n) {
            return Err(invalid(format!(
                "MaxRoiPool: batch index {b} out of range for batch {n}"
            )));
        }
        let b = b as usize;
        let clampi = |v: f64| v.clamp(-(1i64 << 40) as f64, (1i64 << 40) as f64) as i64;
        let sw = clampi((r[1] * scale).round());
        let sh = clampi((r[2] * scale).round());
        let ew = clampi((r[3] * scale).round());
        let eh = clampi((r[4] * scale).round());
        let rh = (eh - sh + 1).max(1) as f64;
        let rw = (ew - sw + 1).max(1) as f64;
        let bh = rh / ph_n as f64;
        let bw = rw / pw_n as f64;
        for ch in 0..c {
            let img = &xd[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for ph in 0..ph_n {
                let hs = ((ph as f64 * bh).floor() as i64 + sh).clamp(0, h as i64) as usize;
                let he = (((ph + 1) as f64 * bh).ceil() as i64 + sh).clamp(0, h as i64) as usize;
                for pw in 0..pw_n {
                    let ws = ((pw as f64 * bw).floor() as i64 + sw).clamp(0, w as i64) as usize;
                    let we = (((pw + 1) as f64 * bw).ceil() as i64 + sw).clamp(0, w as i64) as usize;
                    let mut m = 0.0;
                    if he > hs && we > ws {
                        m = f64::NEG_INFINITY;
                        for yy in hs..he {
                            for v in &img[yy * w + ws..yy * w + we] {
                                m = m.max(*v);
                            }
                        }
                    }
                    out[((ri * c + ch) * ph_n + ph) * pw_n + pw] = m;
                }
            }
        }
    }
    from_f64("MaxRoiPool", x.dtype(), &out_shape, out)
}
