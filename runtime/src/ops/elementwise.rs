//! Elementwise kernels: unary math and activations, numpy-broadcasting
//! binary and variadic ops, Clip, Where and the casts.
//!
//! Shared here: broadcasting helpers that take the fast path on contiguous
//! same-shape or scalar operands (and rayon for large tensors), falling back
//! to ndarray's strided broadcast views otherwise.
// Zip closures forward `&T` arguments; clippy's suggested `&f` does not satisfy rayon's bounds.
#![allow(clippy::redundant_closure)]

use super::{opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, IxDyn, Zip};
use carbide_ir::ops::elementwise::ElementwiseOp;
use carbide_ir::{Tensor, Value};
use rayon::prelude::*;

mod binary;
mod cast;
mod unary;

/// Largest element count a kernel will allocate.
pub(crate) const MAX_ELEMS: usize = 1 << 31;
/// Element count from which kernels split work across threads.
const PAR_MIN: usize = 1 << 16;

pub fn eval(op: &ElementwiseOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let _ = cx;
    let out = match op {
        ElementwiseOp::Unary(u) => unary::eval(u, tensor_in(inputs, 0)?)?,
        ElementwiseOp::Binary { op, legacy_axis } => {
            binary::eval(*op, tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, *legacy_axis)?
        }
        ElementwiseOp::Variadic(v) => {
            let ts = (0..inputs.len())
                .map(|i| tensor_in(inputs, i))
                .collect::<OpResult<Vec<_>>>()?;
            binary::variadic(*v, &ts)?
        }
        ElementwiseOp::Clip { min, max } => binary::clip(
            tensor_in(inputs, 0)?,
            opt_tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            *min,
            *max,
        )?,
        ElementwiseOp::Where => binary::where_(tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, tensor_in(inputs, 2)?)?,
        ElementwiseOp::Cast { to, attrs } => cast::cast(tensor_in(inputs, 0)?, *to, *attrs)?,
        ElementwiseOp::CastLike(attrs) => {
            let target = tensor_in(inputs, 1)?.dtype();
            cast::cast(tensor_in(inputs, 0)?, target, *attrs)?
        }
        ElementwiseOp::BitCast { to } => cast::bitcast(tensor_in(inputs, 0)?, *to)?,
    };
    Ok(tensors_out(vec![out]))
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![1usize; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(invalid(format!("cannot broadcast shapes {a:?} and {b:?}")));
        };
    }
    Ok(out)
}

/// Errors if a shape has more elements than a kernel will allocate.
pub(crate) fn check_len(shape: &[usize]) -> OpResult<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMS)
            .ok_or_else(|| invalid(format!("output shape {shape:?} has more than {MAX_ELEMS} elements")))?;
    }
    Ok(n)
}

fn from_vec<O>(shape: &[usize], v: Vec<O>) -> OpResult<ArrayD<O>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(format!("internal shape error: {e}")))
}

/// Applies `f` to every element (in parallel for large tensors).
pub(crate) fn map1<A: Sync, O: Send>(a: &ArrayD<A>, f: impl Fn(&A) -> O + Sync + Send) -> ArrayD<O> {
    if a.len() >= PAR_MIN {
        if let Some(s) = a.as_slice() {
            let v: Vec<O> = s.par_iter().map(&f).collect();
            if let Ok(r) = ArrayD::from_shape_vec(a.raw_dim(), v) {
                return r;
            }
        }
        Zip::from(a).par_map_collect(|x| f(x))
    } else {
        a.map(f)
    }
}

/// Applies `f` to pairs of elements of `a` and `b` broadcast together.
pub(crate) fn zip2<A: Sync, B: Sync, O: Send>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(&A, &B) -> O + Sync + Send,
) -> OpResult<ArrayD<O>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let n = check_len(&shape)?;
    let par = n >= PAR_MIN;
    if a.shape() == shape.as_slice() {
        if let Some(x) = a.as_slice() {
            if b.shape() == shape.as_slice() {
                if let Some(y) = b.as_slice() {
                    let v: Vec<O> = if par {
                        x.par_iter().zip(y.par_iter()).map(|(p, q)| f(p, q)).collect()
                    } else {
                        x.iter().zip(y).map(|(p, q)| f(p, q)).collect()
                    };
                    return from_vec(&shape, v);
                }
            }
            if b.len() == 1 {
                if let Some(s) = b.iter().next() {
                    let v: Vec<O> = if par {
                        x.par_iter().map(|p| f(p, s)).collect()
                    } else {
                        x.iter().map(|p| f(p, s)).collect()
                    };
                    return from_vec(&shape, v);
                }
            }
        }
    }
    if b.shape() == shape.as_slice() && a.len() == 1 {
        if let (Some(y), Some(s)) = (b.as_slice(), a.iter().next()) {
            let v: Vec<O> = if par {
                y.par_iter().map(|q| f(s, q)).collect()
            } else {
                y.iter().map(|q| f(s, q)).collect()
            };
            return from_vec(&shape, v);
        }
    }
    let dim = IxDyn(&shape);
    let av = a.broadcast(dim.clone()).ok_or_else(|| invalid("broadcast failed"))?;
    let bv = b.broadcast(dim).ok_or_else(|| invalid("broadcast failed"))?;
    let z = Zip::from(&av).and(&bv);
    Ok(if par {
        z.par_map_collect(|p, q| f(p, q))
    } else {
        z.map_collect(|p, q| f(p, q))
    })
}

/// Applies `f` to triples of broadcast elements (Where).
pub(crate) fn zip3<A: Sync, B: Sync, C: Sync, O: Send>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    c: &ArrayD<C>,
    f: impl Fn(&A, &B, &C) -> O + Sync + Send,
) -> OpResult<ArrayD<O>> {
    let shape = broadcast_shape(&broadcast_shape(a.shape(), b.shape())?, c.shape())?;
    let n = check_len(&shape)?;
    let dim = IxDyn(&shape);
    let av = a.broadcast(dim.clone()).ok_or_else(|| invalid("broadcast failed"))?;
    let bv = b.broadcast(dim.clone()).ok_or_else(|| invalid("broadcast failed"))?;
    let cv = c.broadcast(dim).ok_or_else(|| invalid("broadcast failed"))?;
    let z = Zip::from(&av).and(&bv).and(&cv);
    Ok(if n >= PAR_MIN {
        z.par_map_collect(|p, q, r| f(p, q, r))
    } else {
        z.map_collect(|p, q, r| f(p, q, r))
    })
}

/// The error for an op applied to a dtype it does not take.
pub(crate) fn no_dtype(op: &str, t: &Tensor) -> crate::error::OpError {
    unsupported(format!("{op} on {} tensors", t.dtype()))
}
