//! Optimizer steps (Adagrad, Adam, Momentum) of `ai.onnx.preview.training`,
//! computed in f64 and written back in each tensor's dtype.

use super::{f64s, from_f64s, scalar_f64, scalar_i64};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, tensor_in, tensors_out, EvalCtx};
use carbide_ir::ops::MiscOp;
use carbide_ir::{Tensor, Value};

// Index loops: X, G and the state tensors are parallel lists.
#[allow(clippy::needless_range_loop)]
pub(super) fn eval(op: &MiscOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let (k, m) = op.training_groups().ok_or_else(|| invalid("not a training op"))?;
    let ni = inputs.len();
    if ni < 2 + k || !(ni - 2).is_multiple_of(k) {
        return Err(invalid(format!("expected 2 + {k}*n inputs, got {ni}")));
    }
    let n = (ni - 2) / k;
    if cx.num_outputs > m * n {
        return Err(invalid(format!(
            "expected at most {} outputs, got {}",
            m * n,
            cx.num_outputs
        )));
    }
    let r = scalar_f64(tensor_in(inputs, 0)?, "R")?;
    let t = scalar_i64(tensor_in(inputs, 1)?, "T")?;
    // groups[g][i]: the i-th tensor of input group g (X, G, then state).
    let mut groups: Vec<Vec<&Tensor>> = vec![Vec::with_capacity(n); k];
    for (g, grp) in groups.iter_mut().enumerate() {
        for i in 0..n {
            grp.push(tensor_in(inputs, 2 + g * n + i)?);
        }
    }
    let mut outs: Vec<Vec<Tensor>> = vec![Vec::with_capacity(n); m];
    for i in 0..n {
        let x = groups[0][i];
        let vals: Vec<Vec<f64>> = (0..k)
            .map(|g| {
                let tt = groups[g][i];
                if tt.shape() != x.shape() {
                    return Err(invalid(format!(
                        "input {} has shape {:?}, X has {:?}",
                        2 + g * n + i,
                        tt.shape(),
                        x.shape()
                    )));
                }
                f64s(tt).ok_or_else(|| dtype_unsupported(op_name(op), tt))
            })
            .collect::<OpResult<_>>()?;
        let (xv, gv) = (&vals[0], &vals[1]);
        let len = xv.len();
        let mut res: Vec<Vec<f64>> = vec![vec![0.0; len]; m];
        match op {
            MiscOp::Adagrad(a) => {
                let rr = r / (1.0 + t as f64 * a.decay_factor as f64);
                for j in 0..len {
                    let g = a.norm_coefficient as f64 * xv[j] + gv[j];
                    let h = vals[2][j] + g * g;
                    res[1][j] = h;
                    res[0][j] = xv[j] - rr * g / (h.sqrt() + a.epsilon as f64);
                }
            }
            MiscOp::Adam(a) => {
                let (al, be) = (a.alpha as f64, a.beta as f64);
                let rr = if t > 0 {
                    r * (1.0 - be.powf(t as f64)).sqrt() / (1.0 - al.powf(t as f64))
                } else {
                    r
                };
                for j in 0..len {
                    let g = a.norm_coefficient as f64 * xv[j] + gv[j];
                    let v = al * vals[2][j] + (1.0 - al) * g;
                    let h = be * vals[3][j] + (1.0 - be) * g * g;
                    let xn = xv[j] - rr * (v / (h.sqrt() + a.epsilon as f64));
                    res[0][j] = (1.0 - a.norm_coefficient_post as f64) * xn;
                    res[1][j] = v;
                    res[2][j] = h;
                }
            }
            MiscOp::Momentum(a) => {
                let be = if t > 0 { a.beta as f64 } else { 1.0 };
                let al = a.alpha as f64;
                for j in 0..len {
                    let g = a.norm_coefficient as f64 * xv[j] + gv[j];
                    let v = al * vals[2][j] + be * g;
                    res[1][j] = v;
                    res[0][j] = if a.nesterov {
                        xv[j] - r * (g + al * v)
                    } else {
                        xv[j] - r * v
                    };
                }
            }
            _ => return Err(invalid("not a training op")),
        }
        for (g, v) in res.into_iter().enumerate() {
            // The state outputs take the dtype of their state inputs.
            let like = if g == 0 { x } else { groups[g + 1][i] };
            outs[g].push(from_f64s(like.dtype(), x.shape(), v)?);
        }
    }
    Ok(tensors_out(outs.into_iter().flatten().collect()))
}

fn op_name(op: &MiscOp) -> &'static str {
    match op {
        MiscOp::Adagrad(_) => "Adagrad",
        MiscOp::Adam(_) => "Adam",
        _ => "Momentum",
    }
}
