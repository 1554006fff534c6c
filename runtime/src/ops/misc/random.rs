//! Random generators. A node's `seed` attribute makes its draws
//! reproducible; otherwise the session seed is used.

use super::{check_elems, f64s, from_f64s};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, tensor_in, tensors_out, EvalCtx};
use carbide_ir::ops::misc::RandomKind;
use carbide_ir::ops::MiscOp;
use carbide_ir::{DType, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rng(seed: Option<f32>, cx: &EvalCtx) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(u64::from(s.to_bits())),
        None => StdRng::seed_from_u64(cx.seed),
    }
}

/// A standard normal draw (Box-Muller).
fn normal(r: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - r.gen::<f64>();
    let u2: f64 = r.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub(super) fn eval(op: &MiscOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let t = match op {
        MiscOp::Random(a) => {
            let (shape, dtype) = match &a.shape {
                Some(s) => (s.clone(), a.dtype.unwrap_or(DType::F32)),
                None => {
                    let x = tensor_in(inputs, 0)?;
                    (x.shape().to_vec(), a.dtype.unwrap_or(x.dtype()))
                }
            };
            if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                return Err(invalid(format!(
                    "{} output must be a float dtype, got {dtype}",
                    a.kind.op_type()
                )));
            }
            let n = check_elems(&shape)?;
            let mut r = rng(a.seed, cx);
            let (p, q) = (a.a as f64, a.b as f64);
            let v: Vec<f64> = match a.kind {
                RandomKind::Normal | RandomKind::NormalLike => (0..n).map(|_| p + q * normal(&mut r)).collect(),
                RandomKind::Uniform | RandomKind::UniformLike => (0..n).map(|_| p + (q - p) * r.gen::<f64>()).collect(),
            };
            from_f64s(dtype, &shape, v)?
        }
        MiscOp::Multinomial {
            dtype,
            sample_size,
            seed,
        } => {
            let x = tensor_in(inputs, 0)?;
            let logits = f64s(x).ok_or_else(|| dtype_unsupported("Multinomial", x))?;
            let [batch, classes] = x.shape() else {
                return Err(invalid(format!(
                    "Multinomial input must be [batch, classes], got {:?}",
                    x.shape()
                )));
            };
            let (batch, classes) = (*batch, *classes);
            let s = *sample_size as usize;
            let n = check_elems(&[batch, s])?;
            let mut r = rng(*seed, cx);
            let mut out = Vec::with_capacity(n);
            let mut cdf = vec![0.0; classes];
            for b in 0..batch {
                let row = &logits[b * classes..(b + 1) * classes];
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut acc = 0.0;
                for (c, &l) in cdf.iter_mut().zip(row) {
                    acc += (l - mx).exp();
                    *c = acc;
                }
                for _ in 0..s {
                    let u = r.gen::<f64>() * acc;
                    let k = cdf.iter().position(|&c| u < c).unwrap_or(classes.saturating_sub(1));
                    out.push(k as f64);
                }
            }
            from_f64s(*dtype, &[batch, s], out)?
        }
        MiscOp::Bernoulli { dtype, seed } => {
            let x = tensor_in(inputs, 0)?;
            let p = f64s(x).ok_or_else(|| dtype_unsupported("Bernoulli", x))?;
            let mut r = rng(*seed, cx);
            let v: Vec<f64> = p.iter().map(|&p| if r.gen::<f64>() < p { 1.0 } else { 0.0 }).collect();
            from_f64s(dtype.unwrap_or(x.dtype()), x.shape(), v)?
        }
        _ => return Err(invalid("not a random op")),
    };
    Ok(tensors_out(vec![t]))
}
