//! RNN, GRU and LSTM. The input projection X·Wᵀ of all time steps is one
//! matrix product; each step then does H·Rᵀ as one product over the batch.

use super::{f32s, f64s, from_f32s, from_f64s, Real};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use carbide_ir::ops::misc::{Activation, RnnAttrs, RnnDirection, RnnKind};
use carbide_ir::{DType, Tensor, Value};

/// Reading and writing tensors in the compute type.
trait Io: Real {
    fn read(t: &Tensor) -> Option<Vec<Self>>;
    fn write(dtype: DType, shape: &[usize], v: Vec<Self>) -> OpResult<Tensor>;
}

impl Io for f32 {
    fn read(t: &Tensor) -> Option<Vec<f32>> {
        f32s(t)
    }
    fn write(dtype: DType, shape: &[usize], v: Vec<f32>) -> OpResult<Tensor> {
        from_f32s(dtype, shape, v)
    }
}

impl Io for f64 {
    fn read(t: &Tensor) -> Option<Vec<f64>> {
        f64s(t)
    }
    fn write(dtype: DType, shape: &[usize], v: Vec<f64>) -> OpResult<Tensor> {
        from_f64s(dtype, shape, v)
    }
}

fn act<T: Real>(a: Activation, x: T) -> T {
    let c = |v: f32| T::from_f64c(v as f64);
    let one = T::one();
    let zero = T::zero();
    match a {
        Activation::Relu => x.max(zero),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => one / (one + (-x).exp()),
        Activation::Affine { alpha, beta } => c(alpha) * x + c(beta),
        Activation::LeakyRelu { alpha } => {
            if x >= zero {
                x
            } else {
                c(alpha) * x
            }
        }
        Activation::ThresholdedRelu { alpha } => {
            if x > c(alpha) {
                x
            } else {
                zero
            }
        }
        Activation::ScaledTanh { alpha, beta } => c(alpha) * (c(beta) * x).tanh(),
        Activation::HardSigmoid { alpha, beta } => (c(alpha) * x + c(beta)).max(zero).min(one),
        Activation::Elu { alpha } => {
            if x >= zero {
                x
            } else {
                c(alpha) * (x.exp() - one)
            }
        }
        Activation::Softsign => x / (one + x.abs()),
        Activation::Softplus => {
            if x > c(20.0) {
                x
            } else {
                x.exp().ln_1p()
            }
        }
    }
}

pub(super) fn eval(a: &RnnAttrs, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let outs = match x.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => run::<f32>(a, inputs, x.dtype())?,
        DType::F64 => run::<f64>(a, inputs, x.dtype())?,
        _ => return Err(dtype_unsupported(a.kind.op_type(), x)),
    };
    if cx.num_outputs > outs.len() {
        return Err(invalid(format!(
            "{} has at most {} outputs, node has {}",
            a.kind.op_type(),
            outs.len(),
            cx.num_outputs
        )));
    }
    Ok(tensors_out(outs.into_iter().take(cx.num_outputs.max(1)).collect()))
}

fn read<T: Io>(t: &Tensor, what: &str, dtype: DType) -> OpResult<Vec<T>> {
    if t.dtype() != dtype {
        return Err(invalid(format!("{what} is {}, X is {dtype}", t.dtype())));
    }
    T::read(t).ok_or_else(|| invalid(format!("{what} must be a float tensor")))
}

fn want_shape(t: &Tensor, what: &str, want: &[usize]) -> OpResult<()> {
    if t.shape() != want {
        return Err(invalid(format!("{what} has shape {:?}, expected {want:?}", t.shape())));
    }
    Ok(())
}

/// Reorders [a, b, h] to [b, a, h].
fn swap01<T: Copy>(v: &[T], a: usize, b: usize, h: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for j in 0..b {
        for i in 0..a {
            out.extend_from_slice(&v[(i * b + j) * h..(i * b + j + 1) * h]);
        }
    }
    out
}

fn run<T: Io>(a: &RnnAttrs, inputs: &[Option<&Value>], dtype: DType) -> OpResult<Vec<Tensor>> {
    let xt = tensor_in(inputs, 0)?;
    let wt = tensor_in(inputs, 1)?;
    let rt = tensor_in(inputs, 2)?;
    if xt.rank() != 3 || wt.rank() != 3 || rt.rank() != 3 {
        return Err(invalid("X, W and R must have rank 3"));
    }
    let xs = xt.shape();
    let (seq, batch, isz) = if a.layout == 0 {
        (xs[0], xs[1], xs[2])
    } else {
        (xs[1], xs[0], xs[2])
    };
    let dirs = a.direction.num_directions();
    let g = a.kind.gates();
    let h = a.hidden_size.unwrap_or(rt.shape()[2]);
    let gh = g * h;
    want_shape(wt, "W", &[dirs, gh, isz])?;
    want_shape(rt, "R", &[dirs, gh, h])?;
    let mut x: Vec<T> = read(xt, "X", dtype)?;
    if a.layout == 1 {
        x = swap01(&x, batch, seq, isz);
    }
    let w: Vec<T> = read(wt, "W", dtype)?;
    let r: Vec<T> = read(rt, "R", dtype)?;
    let bias: Vec<T> = match opt_tensor_in(inputs, 3)? {
        Some(t) => {
            want_shape(t, "B", &[dirs, 2 * gh])?;
            read(t, "B", dtype)?
        }
        None => vec![T::zero(); dirs * 2 * gh],
    };
    let lens: Vec<usize> = match opt_tensor_in(inputs, 4)? {
        Some(t) => {
            want_shape(t, "sequence_lens", &[batch])?;
            let v = t
                .to_i64_vec()
                .ok_or_else(|| invalid("sequence_lens must be an integer tensor"))?;
            v.into_iter()
                .map(|l| {
                    usize::try_from(l)
                        .ok()
                        .filter(|&l| l <= seq)
                        .ok_or_else(|| invalid(format!("sequence length {l} out of range 0..={seq}")))
                })
                .collect::<OpResult<_>>()?
        }
        None => vec![seq; batch],
    };
    let state_in = |i: usize, what: &str| -> OpResult<Vec<T>> {
        match opt_tensor_in(inputs, i)? {
            Some(t) => {
                if a.layout == 0 {
                    want_shape(t, what, &[dirs, batch, h])?;
                    read(t, what, dtype)
                } else {
                    want_shape(t, what, &[batch, dirs, h])?;
                    Ok(swap01(&read::<T>(t, what, dtype)?, batch, dirs, h))
                }
            }
            None => Ok(vec![T::zero(); dirs * batch * h]),
        }
    };
    let h0 = state_in(5, "initial_h")?;
    let is_lstm = a.kind == RnnKind::Lstm;
    let c0 = if is_lstm { state_in(6, "initial_c")? } else { Vec::new() };
    let peep: Vec<T> = match (is_lstm, opt_tensor_in(inputs, 7)?) {
        (true, Some(t)) => {
            want_shape(t, "P", &[dirs, 3 * h])?;
            read(t, "P", dtype)?
        }
        _ => vec![T::zero(); dirs * 3 * h],
    };
    super::check_elems(&[seq, dirs, batch, h])?;
    let clip = a.clip.map(|c| T::from_f64c(c as f64));
    let cl = |v: T| match clip {
        Some(c) => v.max(-c).min(c),
        None => v,
    };
    let k = a.kind.num_activations();
    let mut y = vec![T::zero(); seq * dirs * batch * h];
    let mut yh = vec![T::zero(); dirs * batch * h];
    let mut yc = vec![T::zero(); if is_lstm { dirs * batch * h } else { 0 }];
    for d in 0..dirs {
        let reverse = a.direction == RnnDirection::Reverse || d == 1;
        let acts = &a.activations[d * k..(d + 1) * k];
        let wd = &w[d * gh * isz..(d + 1) * gh * isz];
        let rd = &r[d * gh * h..(d + 1) * gh * h];
        let (wb, rb) = bias[d * 2 * gh..(d + 1) * 2 * gh].split_at(gh);
        let pd = &peep[d * 3 * h..(d + 1) * 3 * h];
        // X·Wᵀ + Wb for every step at once: [seq*batch, g*h].
        super::check_elems(&[seq, batch, gh])?;
        let mut xw = vec![T::zero(); seq * batch * gh];
        T::gemm_abt(seq * batch, isz, gh, &x, wd, T::zero(), &mut xw)?;
        for row in xw.chunks_mut(gh) {
            for (v, b) in row.iter_mut().zip(wb) {
                *v = *v + *b;
            }
        }
        let mut hs = h0[d * batch * h..(d + 1) * batch * h].to_vec();
        let mut cs = if is_lstm {
            c0[d * batch * h..(d + 1) * batch * h].to_vec()
        } else {
            Vec::new()
        };
        let mut hr = vec![T::zero(); batch * gh];
        let mut rh = vec![T::zero(); batch * h];
        let mut rhr = vec![T::zero(); batch * h];
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            T::gemm_abt(batch, h, gh, &hs, rd, T::zero(), &mut hr)?;
            for row in hr.chunks_mut(gh) {
                for (v, b) in row.iter_mut().zip(rb) {
                    *v = *v + *b;
                }
            }
            let active = |b: usize| t < lens[b];
            match a.kind {
                RnnKind::Rnn => {
                    for b in (0..batch).filter(|&b| active(b)) {
                        let xr = &xw[(t * batch + b) * gh..];
                        let hrr = &hr[b * gh..];
                        for j in 0..h {
                            hs[b * h + j] = act(acts[0], cl(xr[j] + hrr[j]));
                        }
                    }
                }
                RnnKind::Gru => {
                    // z and r gates first; r is needed for the candidate.
                    let mut z = vec![T::zero(); batch * h];
                    let mut rg = vec![T::zero(); batch * h];
                    for b in (0..batch).filter(|&b| active(b)) {
                        let xr = &xw[(t * batch + b) * gh..];
                        let hrr = &hr[b * gh..];
                        for j in 0..h {
                            z[b * h + j] = act(acts[0], cl(xr[j] + hrr[j]));
                            rg[b * h + j] = act(acts[0], cl(xr[h + j] + hrr[h + j]));
                        }
                    }
                    if !a.linear_before_reset {
                        for i in 0..batch * h {
                            rh[i] = rg[i] * hs[i];
                        }
                        T::gemm_abt(batch, h, h, &rh, &rd[2 * h * h..], T::zero(), &mut rhr)?;
                    }
                    for b in (0..batch).filter(|&b| active(b)) {
                        let xr = &xw[(t * batch + b) * gh..];
                        let hrr = &hr[b * gh..];
                        for j in 0..h {
                            let i = b * h + j;
                            let pre = if a.linear_before_reset {
                                xr[2 * h + j] + rg[i] * hrr[2 * h + j]
                            } else {
                                xr[2 * h + j] + rhr[i] + rb[2 * h + j]
                            };
                            let cand = act(acts[1], cl(pre));
                            hs[i] = (T::one() - z[i]) * cand + z[i] * hs[i];
                        }
                    }
                }
                RnnKind::Lstm => {
                    for b in (0..batch).filter(|&b| active(b)) {
                        let xr = &xw[(t * batch + b) * gh..];
                        let hrr = &hr[b * gh..];
                        for j in 0..h {
                            let i = b * h + j;
                            let c_prev = cs[i];
                            let pre = |gate: usize| xr[gate * h + j] + hrr[gate * h + j];
                            let ig = act(acts[0], cl(pre(0) + pd[j] * c_prev));
                            let fg = if a.input_forget {
                                T::one() - ig
                            } else {
                                act(acts[0], cl(pre(2) + pd[2 * h + j] * c_prev))
                            };
                            let cand = act(acts[1], cl(pre(3)));
                            let c_new = fg * c_prev + ig * cand;
                            let og = act(acts[0], cl(pre(1) + pd[h + j] * c_new));
                            cs[i] = c_new;
                            hs[i] = og * act(acts[2], c_new);
                        }
                    }
                }
            }
            for b in (0..batch).filter(|&b| active(b)) {
                let o = ((t * dirs + d) * batch + b) * h;
                y[o..o + h].copy_from_slice(&hs[b * h..(b + 1) * h]);
            }
        }
        yh[d * batch * h..(d + 1) * batch * h].copy_from_slice(&hs);
        if is_lstm {
            yc[d * batch * h..(d + 1) * batch * h].copy_from_slice(&cs);
        }
    }
    let mut outs = Vec::with_capacity(3);
    if a.layout == 0 {
        outs.push(T::write(dtype, &[seq, dirs, batch, h], y)?);
        outs.push(T::write(dtype, &[dirs, batch, h], yh)?);
        if is_lstm {
            outs.push(T::write(dtype, &[dirs, batch, h], yc)?);
        }
    } else {
        // [seq, dirs*batch*h] viewed as [seq, dirs, batch, h] -> [batch, seq, dirs, h].
        let mut yb = Vec::with_capacity(y.len());
        for b in 0..batch {
            for t in 0..seq {
                for d in 0..dirs {
                    let o = ((t * dirs + d) * batch + b) * h;
                    yb.extend_from_slice(&y[o..o + h]);
                }
            }
        }
        outs.push(T::write(dtype, &[batch, seq, dirs, h], yb)?);
        outs.push(T::write(dtype, &[batch, dirs, h], swap01(&yh, dirs, batch, h))?);
        if is_lstm {
            outs.push(T::write(dtype, &[batch, dirs, h], swap01(&yc, dirs, batch, h))?);
        }
    }
    Ok(outs)
}
