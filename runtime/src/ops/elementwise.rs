//! Elementwise kernels: unary math and activations, numpy-broadcasting
//! binary and variadic ops, Clip, Where and the casts.
//!
//! Shared here: the broadcasting drivers `map1`/`zip2`/`zip3`. Each splits
//! into a tiny per-op block loop and a driver generic only over element types
//! (broadcast planning, rayon), which keeps compile time proportional to
//! dtypes rather than dtypes x ops.

use super::check_elems;
use super::{opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, CowArray, IxDyn};
use carbide_ir::ops::elementwise::ElementwiseOp;
use carbide_ir::{Tensor, Value};
use rayon::prelude::*;

mod binary;
mod cast;
mod unary;

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

/// Output elements per parallel task.
const BLOCK: usize = 1 << 14;

/// Runs `kernel(index, chunk)` over `out.chunks_mut(chunk_len)`, across
/// threads when `par`. Generic over the element type only (the kernel is a
/// trait object) so rayon is instantiated once per dtype, not once per op
/// closure: that multiplication made this crate slow to compile.
pub(crate) fn for_chunks<O: Send>(
    out: &mut [O],
    chunk_len: usize,
    par: bool,
    kernel: &(dyn Fn(usize, &mut [O]) + Sync),
) {
    let chunk_len = chunk_len.max(1);
    if par {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| kernel(i, chunk));
    } else {
        out.chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| kernel(i, chunk));
    }
}

/// Runs `kernel(start, block)` over consecutive blocks of `out` (`start` is
/// the block's first index), across threads when `out` is large.
pub(crate) fn for_blocks<O: Send>(out: &mut [O], kernel: &(dyn Fn(usize, &mut [O]) + Sync)) {
    if out.len() >= PAR_MIN {
        for_chunks(out, BLOCK, true, &|i, block| kernel(i * BLOCK, block));
    } else {
        kernel(0, out);
    }
}

/// How broadcast inputs line up with a row-major output: the output is
/// walked in rows of the innermost (coalesced) dimension, and each input
/// contributes either a contiguous run (`inner_full`) or one repeated value.
struct Broadcast {
    /// Length of one output row.
    row_len: usize,
    /// Output dims above the row, outermost first.
    outer: Vec<usize>,
    /// Per input: element stride for each outer dim (0 where broadcast).
    strides: Vec<Vec<usize>>,
    /// Per input: whether it varies along the row.
    inner_full: Vec<bool>,
}

impl Broadcast {
    /// Plans `inputs` (shapes that numpy-broadcast to `out`). Dims of size 1
    /// are dropped and neighbours broadcast the same way are merged, so a
    /// same-shape or scalar operand becomes a single long row.
    fn new(out: &[usize], inputs: &[&[usize]]) -> Self {
        let rank = out.len();
        // (length, per-input "varies along this dim") for each kept output dim.
        let mut dims: Vec<(usize, Vec<bool>)> = Vec::with_capacity(rank);
        for (d, &len) in out.iter().enumerate() {
            if len == 1 {
                continue;
            }
            let full: Vec<bool> = inputs
                .iter()
                .map(|s| d + s.len() >= rank && s[d + s.len() - rank] == len)
                .collect();
            match dims.last_mut() {
                Some((l, f)) if *f == full => *l *= len,
                _ => dims.push((len, full)),
            }
        }
        let (row_len, inner_full) = match dims.pop() {
            Some((l, f)) => (l, f),
            None => (1, vec![true; inputs.len()]),
        };
        let mut acc: Vec<usize> = inner_full.iter().map(|&f| if f { row_len } else { 1 }).collect();
        let mut strides = vec![vec![0; dims.len()]; inputs.len()];
        for (k, (len, full)) in dims.iter().enumerate().rev() {
            for (i, &f) in full.iter().enumerate() {
                if f {
                    strides[i][k] = acc[i];
                    acc[i] *= len;
                }
            }
        }
        Broadcast {
            row_len,
            outer: dims.into_iter().map(|(l, _)| l).collect(),
            strides,
            inner_full,
        }
    }

    /// Calls `seg(offsets, column, len, out_start)` for each row piece of the
    /// output range `[start, start + len)`; `offsets[i]` is input i's element
    /// offset of that row's first column.
    fn segments(&self, start: usize, len: usize, mut seg: impl FnMut(&[usize], usize, usize, usize)) {
        let mut offs = vec![0usize; self.strides.len()];
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let (row, col) = (pos / self.row_len, pos % self.row_len);
            let n = (self.row_len - col).min(end - pos);
            let mut rest = row;
            offs.iter_mut().for_each(|o| *o = 0);
            for (k, &d) in self.outer.iter().enumerate().rev() {
                let idx = rest % d;
                rest /= d;
                for (o, s) in offs.iter_mut().zip(&self.strides) {
                    *o += idx * s[k];
                }
            }
            seg(&offs, col, n, pos - start);
            pos += n;
        }
    }

    /// Input i's elements for a row piece: a run of `n`, or its one value.
    fn piece<'a, T>(&self, i: usize, data: &'a [T], off: usize, col: usize, n: usize) -> &'a [T] {
        if self.inner_full[i] {
            &data[off + col..off + col + n]
        } else {
            &data[off..off + 1]
        }
    }
}

fn slice_of<'a, T>(a: &'a CowArray<'_, T, IxDyn>) -> OpResult<&'a [T]> {
    a.as_slice()
        .ok_or_else(|| invalid("internal error: standard-layout array is not contiguous"))
}

fn from_vec<O>(shape: &[usize], v: Vec<O>) -> OpResult<ArrayD<O>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(format!("internal shape error: {e}")))
}

/// A block loop `out[i] = f(a[i])`, the only part of [`map1`] specific to `f`.
type Loop1<'f, A, O> = dyn Fn(&[A], &mut [O]) + Sync + 'f;
/// A block loop over two operands, each a run as long as `out` or one value.
type Loop2<'f, A, B, O> = dyn Fn(&[A], &[B], &mut [O]) + Sync + 'f;
/// A block loop over three operands, each a run as long as `out` or one value.
type Loop3<'f, A, B, C, O> = dyn Fn(&[A], &[B], &[C], &mut [O]) + Sync + 'f;

/// Applies `f` to every element (in parallel for large tensors).
pub(crate) fn map1<A: Sync + Clone, O: Send + Clone + Default>(a: &ArrayD<A>, f: impl Fn(&A) -> O + Sync) -> ArrayD<O> {
    let lp = move |x: &[A], out: &mut [O]| {
        for (o, p) in out.iter_mut().zip(x) {
            *o = f(p);
        }
    };
    map1_driver(a, &lp)
}

fn map1_driver<A: Sync + Clone, O: Send + Clone + Default>(a: &ArrayD<A>, lp: &Loop1<A, O>) -> ArrayD<O> {
    // One element through the block loop: the serial path for the cases below that cannot happen.
    let one = |p: &A| {
        let mut o = [O::default()];
        lp(std::slice::from_ref(p), &mut o);
        let [o] = o;
        o
    };
    let std = a.as_standard_layout();
    // A standard-layout array is always contiguous.
    let Some(x) = std.as_slice() else {
        return a.map(one);
    };
    let mut out = vec![O::default(); x.len()];
    for_blocks(&mut out, &|start, block| lp(&x[start..start + block.len()], block));
    // `out` has exactly `a.len()` elements, so this succeeds.
    ArrayD::from_shape_vec(a.raw_dim(), out).unwrap_or_else(|_| a.map(one))
}

/// `out[i] = f(x[i or 0], y[i or 0])`: operands are runs as long as `out` or one value.
fn loop2<A, B, O>(f: impl Fn(&A, &B) -> O + Sync) -> impl Fn(&[A], &[B], &mut [O]) + Sync {
    move |x, y, out| {
        let n = out.len();
        match (x, y) {
            (x, y) if x.len() == n && y.len() == n => {
                for ((o, p), q) in out.iter_mut().zip(x).zip(y) {
                    *o = f(p, q);
                }
            }
            (x, [q]) if x.len() == n => out.iter_mut().zip(x).for_each(|(o, p)| *o = f(p, q)),
            ([p], y) if y.len() == n => out.iter_mut().zip(y).for_each(|(o, q)| *o = f(p, q)),
            ([p], [q]) => out.iter_mut().for_each(|o| *o = f(p, q)),
            // Callers pass runs of `n` or single values; anything else is left at the default.
            _ => {}
        }
    }
}

/// Applies `f` to pairs of elements of `a` and `b` broadcast together.
pub(crate) fn zip2<A: Sync + Clone, B: Sync + Clone, O: Send + Clone + Default>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(&A, &B) -> O + Sync,
) -> OpResult<ArrayD<O>> {
    zip2_driver(a, b, &loop2(f))
}

fn zip2_driver<A: Sync + Clone, B: Sync + Clone, O: Send + Clone + Default>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    lp: &Loop2<A, B, O>,
) -> OpResult<ArrayD<O>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let n = check_elems(&shape)?;
    let mut out = vec![O::default(); n];
    if n > 0 {
        let plan = Broadcast::new(&shape, &[a.shape(), b.shape()]);
        let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
        let (xa, xb) = (slice_of(&a)?, slice_of(&b)?);
        for_blocks(&mut out, &|start, block| {
            plan.segments(start, block.len(), |offs, col, len, at| {
                lp(
                    plan.piece(0, xa, offs[0], col, len),
                    plan.piece(1, xb, offs[1], col, len),
                    &mut block[at..at + len],
                )
            })
        });
    }
    from_vec(&shape, out)
}

/// Applies `f` to triples of broadcast elements (Where).
pub(crate) fn zip3<A: Sync + Clone, B: Sync + Clone, C: Sync + Clone, O: Send + Clone + Default>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    c: &ArrayD<C>,
    f: impl Fn(&A, &B, &C) -> O + Sync,
) -> OpResult<ArrayD<O>> {
    let lp = move |x: &[A], y: &[B], z: &[C], out: &mut [O]| {
        let n = out.len();
        let pick = |s: usize, i: usize| if s == n { i } else { 0 };
        let (sx, sy, sz) = (x.len(), y.len(), z.len());
        for (i, o) in out.iter_mut().enumerate() {
            if let (Some(p), Some(q), Some(r)) = (x.get(pick(sx, i)), y.get(pick(sy, i)), z.get(pick(sz, i))) {
                *o = f(p, q, r);
            }
        }
    };
    zip3_driver(a, b, c, &lp)
}

fn zip3_driver<A: Sync + Clone, B: Sync + Clone, C: Sync + Clone, O: Send + Clone + Default>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    c: &ArrayD<C>,
    lp: &Loop3<A, B, C, O>,
) -> OpResult<ArrayD<O>> {
    let shape = broadcast_shape(&broadcast_shape(a.shape(), b.shape())?, c.shape())?;
    let n = check_elems(&shape)?;
    let mut out = vec![O::default(); n];
    if n > 0 {
        let plan = Broadcast::new(&shape, &[a.shape(), b.shape(), c.shape()]);
        let (a, b, c) = (a.as_standard_layout(), b.as_standard_layout(), c.as_standard_layout());
        let (xa, xb, xc) = (slice_of(&a)?, slice_of(&b)?, slice_of(&c)?);
        for_blocks(&mut out, &|start, block| {
            plan.segments(start, block.len(), |offs, col, len, at| {
                lp(
                    plan.piece(0, xa, offs[0], col, len),
                    plan.piece(1, xb, offs[1], col, len),
                    plan.piece(2, xc, offs[2], col, len),
                    &mut block[at..at + len],
                )
            })
        });
    }
    from_vec(&shape, out)
}

/// The error for an op applied to a dtype it does not take.
pub(crate) fn no_dtype(op: &str, t: &Tensor) -> crate::error::OpError {
    unsupported(format!("{op} on {} tensors", t.dtype()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::Zip;

    /// Distinct values so a wrong offset shows up.
    fn ramp(shape: &[usize], start: i64) -> ArrayD<i64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n as i64).map(|v| v * 7 + start).collect()).unwrap()
    }

    fn reference2(a: &ArrayD<i64>, b: &ArrayD<i64>) -> ArrayD<i64> {
        let shape = broadcast_shape(a.shape(), b.shape()).unwrap();
        let (av, bv) = (a.broadcast(IxDyn(&shape)).unwrap(), b.broadcast(IxDyn(&shape)).unwrap());
        Zip::from(&av).and(&bv).map_collect(|p, q| p * 1000 + q)
    }

    #[test]
    fn zip2_matches_ndarray_broadcasting() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3], &[2, 3]),
            (&[2, 3], &[3]),
            (&[2, 3], &[]),
            (&[], &[4]),
            (&[3, 1], &[1, 4]),
            (&[2, 1, 3], &[4, 1]),
            (&[2, 3, 1, 1], &[2, 3, 4, 5]),
            (&[1, 3, 1], &[2, 1, 5]),
            (&[0, 3], &[3]),
            (&[1], &[1]),
            // Large enough to run in parallel blocks, with broadcasting inside and across blocks.
            (&[3, 1, 300], &[1, 200, 300]),
            (&[70000], &[1]),
            (&[2, 40000, 1], &[2, 1, 3]),
        ];
        for (sa, sb) in cases {
            let (a, b) = (ramp(sa, 1), ramp(sb, -5));
            let got = zip2(&a, &b, |p, q| p * 1000 + q).unwrap();
            assert_eq!(got, reference2(&a, &b), "{sa:?} with {sb:?}");
            let got = zip2(&b, &a, |p, q| p * 1000 + q).unwrap();
            assert_eq!(got, reference2(&b, &a), "{sb:?} with {sa:?}");
        }
        assert!(zip2(&ramp(&[2, 3], 0), &ramp(&[2], 0), |p, q| p + q).is_err());
    }

    #[test]
    fn drivers_read_non_standard_layouts() {
        let a = ramp(&[4, 5, 6], 3);
        let t = a.clone().permuted_axes(IxDyn(&[2, 0, 1]));
        let b = ramp(&[4, 1], 9);
        let got = zip2(&t, &b, |p, q| p * 1000 + q).unwrap();
        assert_eq!(got, reference2(&t.as_standard_layout().to_owned(), &b));
        assert_eq!(map1(&t, |v| v * 2), t.mapv(|v| v * 2));
        let big = ramp(&[300, 400], 0).reversed_axes();
        assert_eq!(map1(&big, |v| v - 1), big.mapv(|v| v - 1));
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let empty = ramp(&[0, 5], 0);
        assert!(zip2(&empty, &ramp(&[3, 1], 0), |p, q| p + q).is_err());
        assert_eq!(zip2(&empty, &ramp(&[1], 0), |p, q| p + q).unwrap().shape(), &[0, 5]);
        assert_eq!(
            zip2(&ramp(&[], 2), &ramp(&[], 3), |p, q| p * q)
                .unwrap()
                .into_raw_vec_and_offset()
                .0,
            vec![6]
        );
        // A broadcast product far past the allocation limit is refused before allocating.
        let (tall, wide) = (ramp(&[1 << 17, 1], 0), ramp(&[1, 1 << 17], 0));
        assert!(zip2(&tall, &wide, |p, q| p + q).is_err());
        let c = ArrayD::from_elem(IxDyn(&[1, 1, 1 << 17]), true);
        assert!(zip3(&c, &tall, &ramp(&[1 << 17, 1, 1], 0), |_, u, v| u + v).is_err());
    }

    #[test]
    fn zip3_matches_ndarray_broadcasting() {
        let c = ArrayD::from_shape_fn(IxDyn(&[2, 1, 3]), |i| (i[0] + i[2]) % 2 == 0);
        for (sx, sy) in [
            (&[4usize, 1][..], &[1usize][..]),
            (&[2, 4, 3], &[3]),
            (&[1, 70000, 1], &[2, 1, 3]),
        ] {
            let (x, y) = (ramp(sx, 0), ramp(sy, 100));
            let got = zip3(&c, &x, &y, |k, u, v| if *k { *u } else { *v }).unwrap();
            let shape = broadcast_shape(&broadcast_shape(c.shape(), x.shape()).unwrap(), y.shape()).unwrap();
            let d = IxDyn(&shape);
            let want = Zip::from(&c.broadcast(d.clone()).unwrap())
                .and(&x.broadcast(d.clone()).unwrap())
                .and(&y.broadcast(d).unwrap())
                .map_collect(|k, u, v| if *k { *u } else { *v });
            assert_eq!(got, want, "{sx:?} {sy:?}");
        }
    }
}
