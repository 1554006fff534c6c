//! SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss. Inputs are
//! `[N, C, d1..dk]` scores / log-probabilities and `[N, d1..dk]` class
//! targets; computed in f64 and rounded to the input dtype.

use super::{float_tensor, split_at_axis};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ops::reduce::{LossAttrs, LossReduction};
use carbide_ir::Tensor;

/// Log-softmax over axis 1 of data laid out `(n, c, d)`.
fn log_softmax(x: &[f64], n: usize, c: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for di in 0..d {
            let at = |ci: usize| (ni * c + ci) * d + di;
            let m = (0..c).map(|ci| x[at(ci)]).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..c).map(|ci| (x[at(ci)] - m).exp()).sum();
            let ls = s.ln();
            for ci in 0..c {
                out[at(ci)] = x[at(ci)] - m - ls;
            }
        }
    }
    out
}

pub(crate) fn loss(
    l: &LossAttrs,
    softmax: bool,
    x: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    want_log_prob: bool,
) -> OpResult<Vec<Tensor>> {
    let dtype = x.dtype();
    if !dtype.is_float() || dtype.is_small() {
        return Err(unsupported(format!("loss on {dtype} input")));
    }
    let shape = x.shape().to_vec();
    if shape.len() < 2 {
        return Err(invalid(format!("input must have rank >= 2, got shape {shape:?}")));
    }
    let mut t_shape = shape.clone();
    t_shape.remove(1);
    if target.shape() != t_shape.as_slice() {
        return Err(invalid(format!(
            "target shape {:?} must be {t_shape:?} for input shape {shape:?}",
            target.shape()
        )));
    }
    let (n, c, d) = split_at_axis(&shape, 1);
    let xs = x
        .to_f64_vec()
        .ok_or_else(|| unsupported(format!("loss on {dtype} input")))?;
    let ts = target
        .to_i64_vec()
        .ok_or_else(|| invalid(format!("target must be integers, got {}", target.dtype())))?;
    let ws = match weight {
        Some(w) => {
            if w.shape() != [c] {
                return Err(invalid(format!("weight shape {:?} must be [{c}]", w.shape())));
            }
            Some(
                w.to_f64_vec()
                    .ok_or_else(|| invalid(format!("weight must be floats, got {}", w.dtype())))?,
            )
        }
        None => None,
    };
    let logp = if softmax { log_softmax(&xs, n, c, d) } else { xs };
    let mut losses = Vec::with_capacity(n * d);
    let (mut sum, mut wsum) = (0.0f64, 0.0f64);
    for ni in 0..n {
        for di in 0..d {
            let t = ts[ni * d + di];
            if Some(t) == l.ignore_index {
                losses.push(0.0);
                continue;
            }
            if t < 0 || t as u64 >= c as u64 {
                return Err(invalid(format!("target {t} out of range for {c} classes")));
            }
            let t = t as usize;
            let w = ws.as_ref().map_or(1.0, |w| w[t]);
            let v = -logp[(ni * c + t) * d + di] * w;
            losses.push(v);
            sum += v;
            wsum += w;
        }
    }
    let out = match l.reduction {
        LossReduction::None => float_tensor(dtype, &t_shape, losses)?,
        LossReduction::Sum => float_tensor(dtype, &[], vec![sum])?,
        LossReduction::Mean => float_tensor(dtype, &[], vec![sum / wsum])?,
    };
    let mut outs = vec![out];
    if want_log_prob {
        outs.push(float_tensor(dtype, &shape, logp)?);
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::{ArrayD, IxDyn};

    fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    #[test]
    fn nll_mean_with_weights_and_ignore() {
        // input [2, 3] (log-probs), target [2]
        let x = f32t(&[2, 3], vec![-1., -2., -3., -4., -5., -6.]);
        let t = Tensor::from_i64s(vec![2, 0]);
        let w = Tensor::from_f32s(vec![0.5, 1.0, 2.0]);
        let at = LossAttrs {
            reduction: LossReduction::Mean,
            ignore_index: None,
        };
        let out = loss(&at, false, &x, &t, Some(&w), false).unwrap();
        // (3*2 + 4*0.5) / 2.5 = 3.2
        assert!((out[0].to_f64_vec().unwrap()[0] - 3.2).abs() < 1e-6);
        let at = LossAttrs {
            reduction: LossReduction::None,
            ignore_index: Some(0),
        };
        let out = loss(&at, false, &x, &t, None, false).unwrap();
        assert_eq!(out[0].to_f64_vec().unwrap(), vec![3.0, 0.0]);
        assert!(loss(&at, false, &x, &Tensor::from_i64s(vec![3, 1]), None, false).is_err());
    }

    #[test]
    fn sce_matches_log_softmax() {
        let x = f32t(&[1, 2], vec![0.0, 0.0]);
        let t = Tensor::from_i64s(vec![1]);
        let at = LossAttrs {
            reduction: LossReduction::Sum,
            ignore_index: None,
        };
        let out = loss(&at, true, &x, &t, None, true).unwrap();
        assert!((out[0].to_f64_vec().unwrap()[0] - std::f64::consts::LN_2).abs() < 1e-6);
        assert_eq!(out[1].shape(), &[1, 2]);
    }
}
