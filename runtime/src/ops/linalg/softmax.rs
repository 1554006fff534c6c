//! Softmax, LogSoftmax and Hardmax over contiguous rows (or strided lanes
//! when the axis is not the last one).

use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::linalg::{SoftmaxAttrs, SoftmaxKind};
use carbide_ir::{bf16, f16, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// Normalizes one lane of `len` values `x[i * stride]` in place.
fn lane<F: Float>(kind: SoftmaxKind, x: &mut [F], len: usize, stride: usize) {
    let mut max = F::neg_infinity();
    let mut arg = 0;
    for i in 0..len {
        let v = x[i * stride];
        if v > max || (i == 0 && v.is_nan()) {
            max = v;
            arg = i;
        }
    }
    match kind {
        SoftmaxKind::Hardmax => {
            for i in 0..len {
                x[i * stride] = if i == arg { F::one() } else { F::zero() };
            }
        }
        SoftmaxKind::Softmax => {
            let mut sum = F::zero();
            for i in 0..len {
                let e = (x[i * stride] - max).exp();
                x[i * stride] = e;
                sum = sum + e;
            }
            for i in 0..len {
                x[i * stride] = x[i * stride] / sum;
            }
        }
        SoftmaxKind::LogSoftmax => {
            let mut sum = F::zero();
            for i in 0..len {
                sum = sum + (x[i * stride] - max).exp();
            }
            let lse = sum.ln();
            for i in 0..len {
                x[i * stride] = x[i * stride] - max - lse;
            }
        }
    }
}

/// Applies `kind` to a row-major buffer viewed as [outer, len, inner].
pub fn softmax_slice<F: Float + Send + Sync>(kind: SoftmaxKind, data: &mut [F], len: usize, inner: usize) {
    let block = len * inner;
    if block == 0 {
        return;
    }
    if inner == 1 {
        if data.len() >= 4096 {
            data.par_chunks_mut(len)
                .with_min_len(16)
                .for_each(|row| lane(kind, row, len, 1));
        } else {
            data.chunks_mut(len).for_each(|row| lane(kind, row, len, 1));
        }
    } else {
        let f = |blk: &mut [F]| {
            for j in 0..inner {
                lane(kind, &mut blk[j..], len, inner);
            }
        };
        if data.len() >= 4096 {
            data.par_chunks_mut(block).for_each(f);
        } else {
            data.chunks_mut(block).for_each(f);
        }
    }
}

fn run<F: Float + Send + Sync>(s: &SoftmaxAttrs, a: &ArrayD<F>) -> OpResult<ArrayD<F>> {
    let shape = a.shape().to_vec();
    let r = shape.len() as i64;
    let axis = if s.axis < 0 { s.axis + r } else { s.axis };
    // A scalar is a one-element lane (rank 0 takes axis 0 or -1).
    if r == 0 {
        if s.axis != 0 && s.axis != -1 {
            return Err(invalid(format!("axis {} out of range for rank 0", s.axis)));
        }
        let mut out = a.to_owned();
        if let Some(d) = out.as_slice_mut() {
            softmax_slice(s.kind, d, 1, 1);
        }
        return Ok(out);
    }
    if axis < 0 || axis >= r {
        return Err(invalid(format!("axis {} out of range for rank {r}", s.axis)));
    }
    let axis = axis as usize;
    let (len, inner) = if s.flatten {
        (shape[axis..].iter().product(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product())
    };
    let mut out = a.as_standard_layout().into_owned();
    let d = out.as_slice_mut().ok_or_else(|| invalid("non-contiguous buffer"))?;
    softmax_slice(s.kind, d, len, inner);
    Ok(out)
}

pub fn softmax(s: &SoftmaxAttrs, x: &Tensor) -> OpResult<Tensor> {
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(run(s, a)?),
        Tensor::F64(a) => Tensor::F64(run(s, a)?),
        Tensor::F16(a) => Tensor::F16(run(s, &a.mapv(|v| v.to_f32()))?.mapv(f16::from_f32)),
        Tensor::BF16(a) => Tensor::BF16(run(s, &a.mapv(|v| v.to_f32()))?.mapv(bf16::from_f32)),
        _ => return Err(unsupported(format!("{:?} on {} tensors", s.kind, x.dtype()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::IxDyn;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn softmax_axes_and_legacy_flatten() {
        let x = t(&[2, 2], vec![1., 2., 3., 5.]);
        let s = SoftmaxAttrs {
            kind: SoftmaxKind::Softmax,
            axis: 0,
            flatten: false,
        };
        // np: softmax over axis 0
        close(
            &softmax(&s, &x).unwrap().to_f64_vec().unwrap(),
            &[0.11920292, 0.04742587, 0.88079708, 0.95257413],
        );
        let s = SoftmaxAttrs {
            kind: SoftmaxKind::Softmax,
            axis: 0,
            flatten: true,
        };
        let e: Vec<f64> = [1f64, 2., 3., 5.].iter().map(|v| v.exp()).collect();
        let sum: f64 = e.iter().sum();
        close(
            &softmax(&s, &x).unwrap().to_f64_vec().unwrap(),
            &e.iter().map(|v| v / sum).collect::<Vec<_>>(),
        );
        let s = SoftmaxAttrs {
            kind: SoftmaxKind::LogSoftmax,
            axis: -1,
            flatten: false,
        };
        close(
            &softmax(&s, &x).unwrap().to_f64_vec().unwrap(),
            &[-1.31326169, -0.31326169, -2.12692801, -0.12692801],
        );
        let s = SoftmaxAttrs {
            kind: SoftmaxKind::Hardmax,
            axis: 1,
            flatten: false,
        };
        let x = t(&[2, 3], vec![3., 3., 1., 0., 2., 2.]);
        close(
            &softmax(&s, &x).unwrap().to_f64_vec().unwrap(),
            &[1., 0., 0., 0., 1., 0.],
        );
        let s = SoftmaxAttrs {
            kind: SoftmaxKind::Softmax,
            axis: 2,
            flatten: false,
        };
        assert!(softmax(&s, &x).is_err());
    }
}
