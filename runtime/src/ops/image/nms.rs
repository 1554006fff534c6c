//! NonMaxSuppression: greedy per (batch, class) selection by descending
//! score, suppressing boxes whose IoU with a kept box exceeds the threshold.

use crate::error::{invalid, OpResult};
use carbide_ir::Tensor;
use ndarray::{ArrayD, IxDyn};

fn corners(b: &[f64], center: bool) -> [f64; 4] {
    if center {
        let (xc, yc, w, h) = (b[0], b[1], b[2], b[3]);
        [yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0]
    } else {
        [b[0].min(b[2]), b[1].min(b[3]), b[0].max(b[2]), b[1].max(b[3])]
    }
}

fn suppress(a: &[f64; 4], b: &[f64; 4], thr: f64) -> bool {
    let ih = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iw = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ih * iw;
    if inter <= 0.0 {
        return false;
    }
    let aa = (a[2] - a[0]) * (a[3] - a[1]);
    let ab = (b[2] - b[0]) * (b[3] - b[1]);
    let uni = aa + ab - inter;
    if aa <= 0.0 || ab <= 0.0 || uni <= 0.0 {
        return false;
    }
    inter / uni > thr
}

fn scalar_f(t: Option<&Tensor>, what: &str) -> OpResult<Option<f64>> {
    match t {
        None => Ok(None),
        Some(t) => {
            let v = t
                .to_f64_vec()
                .ok_or_else(|| invalid(format!("NonMaxSuppression: {what} must be numeric")))?;
            match v.as_slice() {
                [] => Ok(None),
                [x] => Ok(Some(*x)),
                _ => Err(invalid(format!("NonMaxSuppression: {what} must be a scalar"))),
            }
        }
    }
}

pub(super) fn nms(
    center: bool,
    boxes: &Tensor,
    scores: &Tensor,
    max_out: Option<&Tensor>,
    iou: Option<&Tensor>,
    score_thr: Option<&Tensor>,
) -> OpResult<Tensor> {
    let bs = boxes.shape();
    let ss = scores.shape();
    if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        return Err(invalid(format!(
            "NonMaxSuppression: boxes {bs:?} and scores {ss:?} do not fit"
        )));
    }
    let (nb, ncls, nbox) = (ss[0], ss[1], ss[2]);
    let bd = boxes
        .to_f64_vec()
        .ok_or_else(|| invalid("NonMaxSuppression: boxes must be float"))?;
    let sd = scores
        .to_f64_vec()
        .ok_or_else(|| invalid("NonMaxSuppression: scores must be float"))?;
    let max_out = scalar_f(max_out, "max_output_boxes_per_class")?.unwrap_or(0.0);
    let max_out = if max_out <= 0.0 {
        0
    } else {
        max_out.min(nbox as f64) as usize
    };
    let thr = scalar_f(iou, "iou_threshold")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&thr) {
        return Err(invalid(format!(
            "NonMaxSuppression: iou_threshold {thr} must be in [0, 1]"
        )));
    }
    let sthr = scalar_f(score_thr, "score_threshold")?;
    let mut sel: Vec<i64> = Vec::new();
    if max_out > 0 {
        for b in 0..nb {
            let bx: Vec<[f64; 4]> = (0..nbox)
                .map(|i| corners(&bd[(b * nbox + i) * 4..(b * nbox + i) * 4 + 4], center))
                .collect();
            for cl in 0..ncls {
                let sc = &sd[(b * ncls + cl) * nbox..(b * ncls + cl + 1) * nbox];
                let mut cand: Vec<usize> = (0..nbox).filter(|&i| sthr.is_none_or(|t| sc[i] > t)).collect();
                // Highest score first; equal scores keep the lower index first.
                cand.sort_by(|&i, &j| {
                    sc[j]
                        .partial_cmp(&sc[i])
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(i.cmp(&j))
                });
                let mut kept: Vec<usize> = Vec::new();
                for i in cand {
                    if kept.len() >= max_out {
                        break;
                    }
                    if kept.iter().all(|&k| !suppress(&bx[k], &bx[i], thr)) {
                        kept.push(i);
                        sel.extend_from_slice(&[b as i64, cl as i64, i as i64]);
                    }
                }
            }
        }
    }
    let n = sel.len() / 3;
    Ok(Tensor::I64(
        ArrayD::from_shape_vec(IxDyn(&[n, 3]), sel).map_err(|e| invalid(e.to_string()))?,
    ))
}
