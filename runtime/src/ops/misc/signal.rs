//! DFT, STFT, window generators and MelWeightMatrix. Transforms compute in
//! f64 with a precomputed twiddle table per length: a radix-2 FFT for
//! power-of-two lengths, the direct O(n²) sum otherwise.

use super::{check_elems, from_f64s, scalar_f64, scalar_i64};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, opt_tensor_in, tensor_in, tensors_out};
use carbide_ir::ops::misc::{DftAttrs, WindowAttrs, WindowKind};
use carbide_ir::ops::MiscOp;
use carbide_ir::{DType, Tensor, Value};
use std::f64::consts::PI;

/// Twiddle factors e^{sign·2πi·k/n} for k in 0..n.
fn twiddles(n: usize, sign: f64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|k| {
            let a = sign * 2.0 * PI * k as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .collect()
}

/// out[k] = Σ_j x[j]·e^{sign·2πi·jk/n} for k < out.len(); x has ≤ n entries
/// (the rest are zero). `tw` is [`twiddles`]`(n, sign)`. Power-of-two
/// lengths use an iterative radix-2 FFT; others the direct sum.
fn dft(x: &[(f64, f64)], n: usize, tw: &[(f64, f64)], out: &mut [(f64, f64)]) {
    if n.is_power_of_two() && n >= 8 {
        fft_pow2(x, n, tw, out);
        return;
    }
    for (k, o) in out.iter_mut().enumerate() {
        let (mut re, mut im) = (0.0, 0.0);
        for (j, &(xr, xi)) in x.iter().enumerate().take(n) {
            let (c, s) = tw[(j * k) % n];
            re += xr * c - xi * s;
            im += xr * s + xi * c;
        }
        *o = (re, im);
    }
}

/// Decimation-in-time radix-2 FFT (bit-reversed load, in-place butterflies).
fn fft_pow2(x: &[(f64, f64)], n: usize, tw: &[(f64, f64)], out: &mut [(f64, f64)]) {
    let bits = n.trailing_zeros();
    let mut buf = vec![(0.0, 0.0); n];
    for (j, &v) in x.iter().enumerate().take(n) {
        let r = j.reverse_bits() >> (usize::BITS - bits);
        buf[r] = v;
    }
    let mut size = 2;
    while size <= n {
        let half = size / 2;
        let step = n / size;
        for start in (0..n).step_by(size) {
            for k in 0..half {
                let (c, s) = tw[k * step];
                let (ar, ai) = buf[start + k];
                let (br, bi) = buf[start + k + half];
                let (tr, ti) = (br * c - bi * s, br * s + bi * c);
                buf[start + k] = (ar + tr, ai + ti);
                buf[start + k + half] = (ar - tr, ai - ti);
            }
        }
        size *= 2;
    }
    for (o, v) in out.iter_mut().zip(buf) {
        *o = v;
    }
}

fn float_in(t: &Tensor, op: &str) -> OpResult<Vec<f64>> {
    match t.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => t.to_f64_vec().ok_or_else(|| dtype_unsupported(op, t)),
        _ => Err(dtype_unsupported(op, t)),
    }
}

fn run_dft(a: &DftAttrs, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    let data = float_in(x, "DFT")?;
    let shape = x.shape().to_vec();
    let r = shape.len();
    if r < 2 {
        return Err(invalid(format!("DFT input must have rank >= 2, got {r}")));
    }
    let c = shape[r - 1];
    if c != 1 && c != 2 {
        return Err(invalid(format!("DFT input's last dim must be 1 or 2, got {c}")));
    }
    let axis = match (a.axis_attr, opt_tensor_in(inputs, 2)?) {
        (Some(ax), _) => ax,
        (None, Some(t)) => scalar_i64(t, "axis")?,
        (None, None) => -2,
    };
    let ax = if axis < 0 { axis + r as i64 } else { axis };
    if ax < 0 || ax > r as i64 - 2 {
        return Err(invalid(format!("axis {axis} out of range for rank {r}")));
    }
    let ax = ax as usize;
    let m = shape[ax];
    let irfft = a.inverse && a.onesided;
    let n = match opt_tensor_in(inputs, 1)? {
        Some(t) => {
            let v = scalar_i64(t, "dft_length")?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| invalid(format!("dft_length must be positive, got {v}")))?
        }
        None if irfft => {
            if m < 2 {
                return Err(invalid("inverse one-sided DFT needs at least 2 input bins"));
            }
            2 * (m - 1)
        }
        None => m,
    };
    if n == 0 {
        return Ok(Tensor::zeros(x.dtype(), &shape).unwrap_or_else(|| x.clone()));
    }
    let out_len = if irfft {
        n
    } else if a.onesided {
        n / 2 + 1
    } else {
        n
    };
    let out_c = if irfft { 1 } else { 2 };
    let mut oshape = shape.clone();
    oshape[ax] = out_len;
    oshape[r - 1] = out_c;
    let total = check_elems(&oshape)?;
    check_elems(&[n, n])?;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..r - 1].iter().product();
    let tw = twiddles(n, if a.inverse { 1.0 } else { -1.0 });
    let mut out = vec![0.0f64; total];
    let mut sig = Vec::with_capacity(n);
    let mut res = vec![(0.0, 0.0); out_len];
    let scale = if a.inverse { 1.0 / n as f64 } else { 1.0 };
    for o in 0..outer {
        for i in 0..inner {
            sig.clear();
            let at = |j: usize| ((o * m + j) * inner + i) * c;
            if irfft {
                // Rebuild the Hermitian-symmetric full spectrum from bins 0..=n/2.
                let half = n / 2 + 1;
                let bin = |j: usize| {
                    if j < m {
                        (data[at(j)], if c == 2 { data[at(j) + 1] } else { 0.0 })
                    } else {
                        (0.0, 0.0)
                    }
                };
                for j in 0..n {
                    sig.push(if j < half {
                        bin(j)
                    } else {
                        let (re, im) = bin(n - j);
                        (re, -im)
                    });
                }
            } else {
                for j in 0..m.min(n) {
                    sig.push((data[at(j)], if c == 2 { data[at(j) + 1] } else { 0.0 }));
                }
            }
            dft(&sig, n, &tw, &mut res);
            for (k, &(re, im)) in res.iter().enumerate() {
                let p = ((o * out_len + k) * inner + i) * out_c;
                out[p] = re * scale;
                if out_c == 2 {
                    out[p + 1] = im * scale;
                }
            }
        }
    }
    from_f64s(x.dtype(), &oshape, out)
}

fn run_stft(onesided: bool, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    let data = float_in(x, "STFT")?;
    let s = x.shape();
    if s.len() != 3 || !(s[2] == 1 || s[2] == 2) {
        return Err(invalid(format!("signal must be [batch, length, 1 or 2], got {s:?}")));
    }
    let (batch, len, c) = (s[0], s[1], s[2]);
    let step = scalar_i64(tensor_in(inputs, 1)?, "frame_step")?;
    let step = usize::try_from(step)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| invalid(format!("frame_step must be positive, got {step}")))?;
    let window = match opt_tensor_in(inputs, 2)? {
        Some(w) => {
            if w.rank() != 1 {
                return Err(invalid("window must have rank 1"));
            }
            Some(float_in(w, "STFT")?)
        }
        None => None,
    };
    let fl = match opt_tensor_in(inputs, 3)? {
        Some(t) => {
            let v = scalar_i64(t, "frame_length")?;
            let v = usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| invalid(format!("frame_length must be positive, got {v}")))?;
            if let Some(w) = &window {
                if w.len() != v {
                    return Err(invalid(format!(
                        "window length {} differs from frame_length {v}",
                        w.len()
                    )));
                }
            }
            v
        }
        None => window.as_ref().map(|w| w.len()).unwrap_or(len),
    };
    if fl == 0 || fl > len {
        return Err(invalid(format!("frame length {fl} must be in 1..={len}")));
    }
    let window = window.unwrap_or_else(|| vec![1.0; fl]);
    let frames = 1 + (len - fl) / step;
    let bins = if onesided { fl / 2 + 1 } else { fl };
    let oshape = [batch, frames, bins, 2];
    let total = check_elems(&oshape)?;
    check_elems(&[fl, fl])?;
    let tw = twiddles(fl, -1.0);
    let mut out = vec![0.0f64; total];
    let mut sig = Vec::with_capacity(fl);
    let mut res = vec![(0.0, 0.0); bins];
    for b in 0..batch {
        for f in 0..frames {
            sig.clear();
            for (j, w) in window.iter().enumerate() {
                let p = (b * len + f * step + j) * c;
                sig.push((data[p] * w, if c == 2 { data[p + 1] * w } else { 0.0 }));
            }
            dft(&sig, fl, &tw, &mut res);
            for (k, &(re, im)) in res.iter().enumerate() {
                let p = ((b * frames + f) * bins + k) * 2;
                out[p] = re;
                out[p + 1] = im;
            }
        }
    }
    from_f64s(x.dtype(), &oshape, out)
}

fn run_window(w: &WindowAttrs, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let size = scalar_i64(tensor_in(inputs, 0)?, "size")?;
    let size = usize::try_from(size).map_err(|_| invalid(format!("size must be non-negative, got {size}")))?;
    check_elems(&[size])?;
    let n = if w.periodic { size as f64 } else { size as f64 - 1.0 };
    let v: Vec<f64> = (0..size)
        .map(|i| {
            let x = i as f64;
            match w.kind {
                WindowKind::Hann => (x * PI / n).sin().powi(2),
                WindowKind::Hamming => {
                    let alpha = 25.0 / 46.0;
                    alpha - (1.0 - alpha) * (2.0 * PI * x / n).cos()
                }
                WindowKind::Blackman => 0.42 - 0.5 * (2.0 * PI * x / n).cos() + 0.08 * (4.0 * PI * x / n).cos(),
            }
        })
        .collect();
    from_f64s(w.output_datatype, &[size], v)
}

fn run_mel(dtype: DType, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let num_mel = scalar_i64(tensor_in(inputs, 0)?, "num_mel_bins")?;
    let dft_length = scalar_i64(tensor_in(inputs, 1)?, "dft_length")?;
    let sample_rate = scalar_i64(tensor_in(inputs, 2)?, "sample_rate")?;
    let low = scalar_f64(tensor_in(inputs, 3)?, "lower_edge_hertz")?;
    let high = scalar_f64(tensor_in(inputs, 4)?, "upper_edge_hertz")?;
    if num_mel <= 0 || dft_length <= 0 || sample_rate <= 0 {
        return Err(invalid("num_mel_bins, dft_length and sample_rate must be positive"));
    }
    let (num_mel, dft_length) = (num_mel as usize, dft_length as usize);
    let bins = dft_length / 2 + 1;
    let total = check_elems(&[bins, num_mel])?;
    let mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
    let (lo, hi) = (mel(low), mel(high));
    // The step divides by num_mel_bins + 2, as the ONNX reference does.
    let step = (hi - lo) / (num_mel + 2) as f64;
    let fb: Vec<i64> = (0..num_mel + 2)
        .map(|i| {
            let m = i as f64 * step + lo;
            let hz = 700.0 * (m / 2595.0 * 10f64.ln()).exp_m1();
            (((dft_length + 1) as f64 * hz) / sample_rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0.0f64; total];
    let mut set = |j: i64, i: usize, v: f64| -> OpResult<()> {
        let j = usize::try_from(j).ok().filter(|&j| j < bins).ok_or_else(|| {
            invalid(format!(
                "frequency bin {j} out of range for {bins} spectrogram bins (check the edge frequencies)"
            ))
        })?;
        out[j * num_mel + i] = v;
        Ok(())
    };
    for i in 0..num_mel {
        let (l, c, h) = (fb[i], fb[i + 1], fb[i + 2]);
        if c == l {
            set(c, i, 1.0)?;
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64)?;
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64)?;
            }
        }
    }
    from_f64s(dtype, &[bins, num_mel], out)
}

pub(super) fn eval(op: &MiscOp, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let t = match op {
        MiscOp::Dft(a) => run_dft(a, inputs)?,
        MiscOp::Stft { onesided } => run_stft(*onesided, inputs)?,
        MiscOp::Window(w) => run_window(w, inputs)?,
        MiscOp::MelWeightMatrix { output_datatype } => run_mel(*output_datatype, inputs)?,
        _ => return Err(invalid("not a signal op")),
    };
    Ok(tensors_out(vec![t]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_direct_sum() {
        for n in [8usize, 16, 64] {
            let x: Vec<(f64, f64)> = (0..n - 3)
                .map(|i| ((i as f64 * 0.7).sin(), (i as f64 * 0.3).cos()))
                .collect();
            for sign in [-1.0, 1.0] {
                let tw = twiddles(n, sign);
                let mut fast = vec![(0.0, 0.0); n / 2 + 1];
                dft(&x, n, &tw, &mut fast);
                for (k, &(re, im)) in fast.iter().enumerate() {
                    let (mut er, mut ei) = (0.0, 0.0);
                    for (j, &(xr, xi)) in x.iter().enumerate() {
                        let a = sign * 2.0 * PI * (j * k) as f64 / n as f64;
                        er += xr * a.cos() - xi * a.sin();
                        ei += xr * a.sin() + xi * a.cos();
                    }
                    assert!((re - er).abs() < 1e-9 && (im - ei).abs() < 1e-9, "n={n} k={k}");
                }
            }
        }
    }
}
