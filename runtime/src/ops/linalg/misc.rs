//! RotaryEmbedding, SwiGLU and Det.

use super::floats::{array, from_f64, rounder, to_f64};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::linalg::RotaryAttrs;
use carbide_ir::Tensor;

pub fn rotary(ra: &RotaryAttrs, x: &Tensor, cos: &Tensor, sin: &Tensor, pos: Option<&Tensor>) -> OpResult<Tensor> {
    let dtype = x.dtype();
    let r = rounder(dtype)?;
    let xa = to_f64(x, "input")?.as_standard_layout().into_owned();
    let shape = xa.shape().to_vec();
    // (batch, seq, heads, head_size) and the strides of each in `xa`.
    let (b, s, h, d, st) = match *shape.as_slice() {
        [b, h, s, d] => (b, s, h, d, [h * s * d, d, s * d]),
        [b, s, hidden] => {
            let h = ra
                .num_heads
                .ok_or_else(|| invalid("3-D input needs the num_heads attribute"))?;
            if hidden % h != 0 {
                return Err(invalid(format!(
                    "hidden size {hidden} is not a multiple of num_heads {h}"
                )));
            }
            let d = hidden / h;
            (b, s, h, d, [s * hidden, hidden, d])
        }
        _ => return Err(invalid(format!("input must be 3-D or 4-D, got {shape:?}"))),
    };
    let rot = if ra.rotary_embedding_dim == 0 {
        d
    } else {
        ra.rotary_embedding_dim
    };
    if rot > d || rot % 2 != 0 {
        return Err(invalid(format!(
            "rotary_embedding_dim {rot} must be even and <= head size {d}"
        )));
    }
    let half = rot / 2;
    let (ca, sa) = (to_f64(cos, "cos_cache")?, to_f64(sin, "sin_cache")?);
    if ca.shape() != sa.shape() {
        return Err(invalid(format!(
            "cos_cache {:?} and sin_cache {:?} differ",
            ca.shape(),
            sa.shape()
        )));
    }
    let (cv, sv): (Vec<f64>, Vec<f64>) = (ca.iter().copied().collect(), sa.iter().copied().collect());
    let cs = ca.shape().to_vec();
    if cs.last() != Some(&half) {
        return Err(invalid(format!(
            "cache last dim must be rotary_dim/2 = {half}, got {cs:?}"
        )));
    }
    // Row of the caches for (batch, position).
    let positions: Option<Vec<i64>> = match pos {
        Some(p) => {
            let v = p.to_i64_vec().ok_or_else(|| invalid("position_ids must be integers"))?;
            if p.shape() != [b, s] || cs.len() != 2 {
                return Err(invalid(format!(
                    "position_ids {:?} must be [{b}, {s}] with a 2-D cache",
                    p.shape()
                )));
            }
            if let Some(bad) = v.iter().find(|&&i| i < 0 || i as usize >= cs[0]) {
                return Err(invalid(format!(
                    "position id {bad} out of range for a cache of {} rows",
                    cs[0]
                )));
            }
            Some(v)
        }
        None => {
            if cs != [b, s, half] {
                return Err(invalid(format!(
                    "without position_ids the caches must be [{b}, {s}, {half}], got {cs:?}"
                )));
            }
            None
        }
    };
    let mut out: Vec<f64> = xa.iter().copied().collect();
    let src: &[f64] = xa.as_slice().ok_or_else(|| invalid("non-contiguous input"))?;
    for bi in 0..b {
        for si in 0..s {
            let row = match &positions {
                Some(p) => p[bi * s + si] as usize,
                None => bi * s + si,
            };
            let (c, sn) = (&cv[row * half..(row + 1) * half], &sv[row * half..(row + 1) * half]);
            for hi in 0..h {
                let base = bi * st[0] + si * st[1] + hi * st[2];
                for i in 0..half {
                    let (i1, i2) = if ra.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (x1, x2) = (src[base + i1], src[base + i2]);
                    out[base + i1] = r(r(c[i] * x1) - r(sn[i] * x2));
                    out[base + i2] = r(r(sn[i] * x1) + r(c[i] * x2));
                }
            }
        }
    }
    from_f64(dtype, array(&shape, out)?)
}

pub fn swiglu(alpha: f32, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(invalid(format!(
            "A {} {:?} and B {} {:?} must have the same shape and dtype",
            a.dtype(),
            a.shape(),
            b.dtype(),
            b.shape()
        )));
    }
    let r = rounder(a.dtype())?;
    let (x, y) = (to_f64(a, "A")?, to_f64(b, "B")?);
    let na = r(-(alpha as f64));
    let vals: Vec<f64> = x
        .iter()
        .zip(y.iter())
        .map(|(&x, &y)| {
            let sig = r(1.0 / r(1.0 + r(r(na * x).exp())));
            r(r(x * sig) * y)
        })
        .collect();
    from_f64(a.dtype(), array(x.shape(), vals)?)
}

/// Determinant by LU decomposition with partial pivoting.
fn det(m: &mut [f64], n: usize) -> f64 {
    let mut d = 1.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap_or(c);
        if m[p * n + c] == 0.0 {
            return 0.0;
        }
        if p != c {
            for k in 0..n {
                m.swap(p * n + k, c * n + k);
            }
            d = -d;
        }
        let piv = m[c * n + c];
        d *= piv;
        for i in c + 1..n {
            let f = m[i * n + c] / piv;
            if f != 0.0 {
                for k in c..n {
                    m[i * n + k] -= f * m[c * n + k];
                }
            }
        }
    }
    d
}

pub fn det_op(x: &Tensor) -> OpResult<Tensor> {
    let a = to_f64(x, "Det input")?;
    let s = a.shape().to_vec();
    if s.len() < 2 || s[s.len() - 1] != s[s.len() - 2] {
        return Err(invalid(format!("Det needs [..., M, M] input, got {s:?}")));
    }
    let n = s[s.len() - 1];
    let r = rounder(x.dtype())?;
    let data: Vec<f64> = a.iter().copied().collect();
    let outs: Vec<f64> = if n == 0 {
        vec![1.0; s[..s.len() - 2].iter().product()]
    } else {
        data.chunks(n * n).map(|c| r(det(&mut c.to_vec(), n))).collect()
    };
    from_f64(x.dtype(), array(&s[..s.len() - 2], outs)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::{ArrayD, IxDyn};

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    #[test]
    fn det_and_swiglu() {
        let x = t(&[2, 2, 2], vec![1., 2., 3., 4., 0., 1., 1., 0.]);
        assert_eq!(det_op(&x).unwrap().to_f64_vec().unwrap(), vec![-2.0, -1.0]);
        let x = t(&[3, 3], vec![2., 0., 1., 1., 3., 2., 1., 1., 2.]);
        let d = det_op(&x).unwrap().to_f64_vec().unwrap()[0];
        assert!((d - 6.0).abs() < 1e-6);
        let y = swiglu(1.0, &t(&[2], vec![1.0, -2.0]), &t(&[2], vec![2.0, 3.0]))
            .unwrap()
            .to_f64_vec()
            .unwrap();
        // a * sigmoid(a) * b
        let e = [1.0 / (1.0 + (-1f64).exp()) * 2.0, -2.0 / (1.0 + 2f64.exp()) * 3.0];
        assert!((y[0] - e[0]).abs() < 1e-6 && (y[1] - e[1]).abs() < 1e-6);
    }

    #[test]
    fn rotary_half_split() {
        // One batch, one head, one position, head size 4: rotate by 90 deg.
        let x = t(&[1, 1, 1, 4], vec![1., 2., 3., 4.]);
        let cos = t(&[1, 2], vec![0., 1.]);
        let sin = t(&[1, 2], vec![1., 0.]);
        let pos = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[1, 1]), vec![0]).unwrap());
        let ra = RotaryAttrs {
            interleaved: false,
            num_heads: None,
            rotary_embedding_dim: 0,
        };
        let y = rotary(&ra, &x, &cos, &sin, Some(&pos)).unwrap().to_f64_vec().unwrap();
        // x1=[1,2], x2=[3,4]: real = cos*x1 - sin*x2 = [-3, 2]; imag = sin*x1 + cos*x2 = [1, 4]
        assert_eq!(y, vec![-3., 2., 1., 4.]);
        let ra = RotaryAttrs {
            interleaved: true,
            ..ra
        };
        let y = rotary(&ra, &x, &cos, &sin, Some(&pos)).unwrap().to_f64_vec().unwrap();
        // pairs (1,2),(3,4): first rotated by 90 deg -> (-2, 1), second unchanged
        assert_eq!(y, vec![-2., 1., 3., 4.]);
    }
}
