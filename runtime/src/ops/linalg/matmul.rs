//! Matrix products: the strided GEMM primitive every linalg kernel shares
//! (sgemm/dgemm for floats, a plain loop for integers), numpy-style batched
//! MatMul, Gemm, MatMulInteger and QLinearMatMul.

use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::linalg::GemmAttrs;
use carbide_ir::{bf16, f16, Tensor};
use rayon::prelude::*;

/// Largest element count a kernel will allocate for one output.
pub use crate::ops::MAX_ELEMS;

/// Element types with a GEMM kernel.
pub trait MatElem: Copy + Send + Sync + Default + std::fmt::Debug + 'static {
    /// `c = alpha * a·b + beta * c` for an m×k `a` and k×n `b` given by
    /// row/column strides; `c` is m×n with row stride `rsc`, unit columns.
    /// Callers guarantee every addressed element is in bounds (checked by
    /// [`gemm`]).
    #[allow(clippy::too_many_arguments)]
    fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: &[Self],
        rsa: usize,
        csa: usize,
        b: &[Self],
        rsb: usize,
        csb: usize,
        beta: f64,
        c: &mut [Self],
        rsc: usize,
    );
}

impl MatElem for f32 {
    fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: &[f32],
        rsa: usize,
        csa: usize,
        b: &[f32],
        rsb: usize,
        csb: usize,
        beta: f64,
        c: &mut [f32],
        rsc: usize,
    ) {
        // SAFETY: `gemm` checked that the largest offset addressed in each
        // operand is inside its slice.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha as f32,
                a.as_ptr(),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                beta as f32,
                c.as_mut_ptr(),
                rsc as isize,
                1,
            )
        }
    }
}

impl MatElem for f64 {
    fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: &[f64],
        rsa: usize,
        csa: usize,
        b: &[f64],
        rsb: usize,
        csb: usize,
        beta: f64,
        c: &mut [f64],
        rsc: usize,
    ) {
        // SAFETY: as for f32.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                beta,
                c.as_mut_ptr(),
                rsc as isize,
                1,
            )
        }
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl MatElem for $t {
            fn gemm_raw(
                m: usize, k: usize, n: usize, alpha: f64,
                a: &[$t], rsa: usize, csa: usize,
                b: &[$t], rsb: usize, csb: usize,
                beta: f64, c: &mut [$t], rsc: usize,
            ) {
                // Integer products wrap like two's-complement hardware; the
                // float alpha/beta of Gemm only apply when not 1/0.
                let mut acc = vec![<$t>::default(); n];
                for i in 0..m {
                    acc.iter_mut().for_each(|v| *v = 0);
                    for p in 0..k {
                        let av = a[i * rsa + p * csa];
                        if av == 0 {
                            continue;
                        }
                        let brow = p * rsb;
                        for (j, acc) in acc.iter_mut().enumerate() {
                            *acc = acc.wrapping_add(av.wrapping_mul(b[brow + j * csb]));
                        }
                    }
                    let crow = &mut c[i * rsc..i * rsc + n];
                    for (cv, &s) in crow.iter_mut().zip(&acc) {
                        *cv = if alpha == 1.0 && beta == 0.0 {
                            s
                        } else if alpha == 1.0 && beta == 1.0 {
                            cv.wrapping_add(s)
                        } else {
                            (alpha * s as f64 + beta * *cv as f64) as $t
                        };
                    }
                }
            }
        }
    )*};
}
int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

fn max_offset(r: usize, c: usize, rs: usize, cs: usize) -> usize {
    if r == 0 || c == 0 {
        0
    } else {
        (r - 1) * rs + (c - 1) * cs
    }
}

/// Bounds-checked GEMM: `c = alpha * a·b + beta * c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: MatElem>(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: &[T],
    (rsa, csa): (usize, usize),
    b: &[T],
    (rsb, csb): (usize, usize),
    beta: f64,
    c: &mut [T],
    rsc: usize,
) -> OpResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bad = |what: &str| invalid(format!("gemm operand {what} is too small for its {m}x{k}x{n} product"));
    if k > 0 && (max_offset(m, k, rsa, csa) >= a.len() || max_offset(k, n, rsb, csb) >= b.len()) {
        return Err(bad("a or b"));
    }
    if max_offset(m, n, rsc, 1) >= c.len() {
        return Err(bad("c"));
    }
    if k == 0 {
        // The product is empty: scale c only (the GEMM kernels need k > 0).
        for i in 0..m {
            for v in &mut c[i * rsc..i * rsc + n] {
                *v = scale_only(*v, beta);
            }
        }
        return Ok(());
    }
    T::gemm_raw(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc);
    Ok(())
}

fn scale_only<T: MatElem>(v: T, beta: f64) -> T {
    // Generic zero/scale without extra trait bounds: a 1x0x1 product.
    let mut c = [v];
    if beta == 1.0 {
        return v;
    }
    let z: [T; 1] = [T::default()];
    T::gemm_raw(1, 1, 1, 0.0, &z, 1, 1, &z, 1, 1, beta, &mut c, 1);
    c[0]
}

/// Numpy broadcasting of two batch shapes; `None` if incompatible.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![1; r];
    for (i, o) in out.iter_mut().enumerate() {
        let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Element offsets of each batch of a row-major tensor whose batch dims are
/// `dims`, broadcast to `out` (a size-1 dim repeats), with `inner` elements
/// per batch.
pub fn batch_offsets(dims: &[usize], out: &[usize], inner: usize) -> Vec<usize> {
    let r = out.len();
    let mut strides = vec![0usize; r];
    let mut s = inner;
    for i in (0..dims.len()).rev() {
        let o = i + r - dims.len();
        strides[o] = if dims[i] == 1 { 0 } else { s };
        s *= dims[i];
    }
    let n: usize = out.iter().product();
    let mut offs = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offs
}

/// `nb` independent m×k · k×n products into a fresh row-major output,
/// parallel over batches and, for big matrices, over row blocks.
#[allow(clippy::too_many_arguments)]
pub fn batched_gemm<T: MatElem>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    a_offs: &[usize],
    a_strides: (usize, usize),
    b: &[T],
    b_offs: &[usize],
    b_strides: (usize, usize),
) -> OpResult<Vec<T>> {
    let nb = a_offs.len();
    let total = nb
        .checked_mul(m)
        .and_then(|x| x.checked_mul(n))
        .filter(|&t| t <= MAX_ELEMS);
    let total = total.ok_or_else(|| invalid(format!("matmul output of {nb}x{m}x{n} elements is too large")))?;
    let mut out = vec![T::default(); total];
    if total == 0 || k == 0 {
        return Ok(out);
    }
    let work = m * n * k;
    let threads = rayon::current_num_threads().max(1);
    // Rows per task: split one big product across threads when batches alone
    // do not give every thread work.
    let rows = if work >= 1 << 16 && nb < threads {
        m.div_ceil(threads).max(8)
    } else {
        m
    };
    let run = |(bi, ob): (usize, &mut [T])| -> OpResult<()> {
        let (ao, bo) = (a_offs[bi], b_offs[bi]);
        let sub = |r0: usize, oc: &mut [T]| {
            let mr = oc.len() / n;
            gemm(
                mr,
                k,
                n,
                1.0,
                &a[ao + r0 * a_strides.0..],
                a_strides,
                &b[bo..],
                b_strides,
                0.0,
                oc,
                n,
            )
        };
        if rows < m {
            ob.par_chunks_mut(rows * n)
                .enumerate()
                .try_for_each(|(ri, oc)| sub(ri * rows, oc))
        } else {
            sub(0, ob)
        }
    };
    if nb > 1 && work * nb >= 1 << 15 {
        out.par_chunks_mut(m * n).enumerate().try_for_each(run)?;
    } else {
        out.chunks_mut(m * n).enumerate().try_for_each(run)?;
    }
    Ok(out)
}

/// Numpy `matmul` of two arrays (1-D operands promoted, batch dims broadcast).
pub fn matmul_arrays<T: MatElem>(a: &ArrayD<T>, b: &ArrayD<T>) -> OpResult<ArrayD<T>> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.is_empty() || sb.is_empty() {
        return Err(invalid("MatMul operands must have rank >= 1"));
    }
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k) = if ra == 1 { (1, sa[0]) } else { (sa[ra - 2], sa[ra - 1]) };
    let (k2, n) = if rb == 1 { (sb[0], 1) } else { (sb[rb - 2], sb[rb - 1]) };
    if k != k2 {
        return Err(invalid(format!("MatMul inner dims differ: {sa:?} x {sb:?}")));
    }
    let ba = if ra > 2 { &sa[..ra - 2] } else { &[][..] };
    let bb = if rb > 2 { &sb[..rb - 2] } else { &[][..] };
    let batch = broadcast_dims(ba, bb)
        .ok_or_else(|| invalid(format!("MatMul batch dims do not broadcast: {sa:?} x {sb:?}")))?;
    let nb = batch
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&x| x <= MAX_ELEMS);
    let nb = nb.ok_or_else(|| invalid("MatMul batch is too large"))?;
    let mut shape = batch.clone();
    if ra > 1 {
        shape.push(m);
    }
    if rb > 1 {
        shape.push(n);
    }
    if nb == 0 || m == 0 || n == 0 {
        // Empty output: nothing to compute (and no per-batch offsets to build).
        return Ok(ArrayD::from_elem(IxDyn(&shape), T::default()));
    }
    let a_std = a.as_standard_layout();
    let b_std = b.as_standard_layout();
    let a_sl = a_std.as_slice().ok_or_else(|| invalid("non-contiguous operand"))?;
    let b_sl = b_std.as_slice().ok_or_else(|| invalid("non-contiguous operand"))?;
    let a_offs = batch_offsets(ba, &batch, m * k);
    let b_offs = batch_offsets(bb, &batch, k * n);
    let out = batched_gemm(m, k, n, a_sl, &a_offs, (k, 1), b_sl, &b_offs, (n, 1))?;
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid(e.to_string()))
}

/// f16/bf16 arrays computed in f32.
pub fn f16_to_f32(a: &ArrayD<f16>) -> ArrayD<f32> {
    a.mapv(|v| v.to_f32())
}
pub fn bf16_to_f32(a: &ArrayD<bf16>) -> ArrayD<f32> {
    a.mapv(|v| v.to_f32())
}

pub fn matmul(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(matmul_arrays(x, y)?),
        (Tensor::F64(x), Tensor::F64(y)) => Tensor::F64(matmul_arrays(x, y)?),
        (Tensor::F16(x), Tensor::F16(y)) => {
            Tensor::F16(matmul_arrays(&f16_to_f32(x), &f16_to_f32(y))?.mapv(f16::from_f32))
        }
        (Tensor::BF16(x), Tensor::BF16(y)) => {
            Tensor::BF16(matmul_arrays(&bf16_to_f32(x), &bf16_to_f32(y))?.mapv(bf16::from_f32))
        }
        (Tensor::I8(x), Tensor::I8(y)) => Tensor::I8(matmul_arrays(x, y)?),
        (Tensor::I16(x), Tensor::I16(y)) => Tensor::I16(matmul_arrays(x, y)?),
        (Tensor::I32(x), Tensor::I32(y)) => Tensor::I32(matmul_arrays(x, y)?),
        (Tensor::I64(x), Tensor::I64(y)) => Tensor::I64(matmul_arrays(x, y)?),
        (Tensor::U8(x), Tensor::U8(y)) => Tensor::U8(matmul_arrays(x, y)?),
        (Tensor::U16(x), Tensor::U16(y)) => Tensor::U16(matmul_arrays(x, y)?),
        (Tensor::U32(x), Tensor::U32(y)) => Tensor::U32(matmul_arrays(x, y)?),
        (Tensor::U64(x), Tensor::U64(y)) => Tensor::U64(matmul_arrays(x, y)?),
        _ if a.dtype() != b.dtype() => {
            return Err(invalid(format!(
                "MatMul operands differ in dtype: {} and {}",
                a.dtype(),
                b.dtype()
            )))
        }
        _ => return Err(unsupported(format!("MatMul on {} tensors", a.dtype()))),
    })
}

fn gemm_arrays<T: MatElem>(g: &GemmAttrs, a: &ArrayD<T>, b: &ArrayD<T>, c: Option<&ArrayD<T>>) -> OpResult<ArrayD<T>> {
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err(invalid(format!(
            "Gemm needs 2-D A and B, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (m, k) = if g.trans_a {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (k2, n) = if g.trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if k != k2 {
        return Err(invalid(format!(
            "Gemm inner dims differ: A {:?} B {:?}",
            a.shape(),
            b.shape()
        )));
    }
    if m.checked_mul(n).is_none_or(|t| t > MAX_ELEMS) {
        return Err(invalid("Gemm output is too large"));
    }
    let mut out: ArrayD<T> = ArrayD::from_elem(IxDyn(&[m, n]), T::default());
    let mut beta = 0.0;
    if let Some(c) = c {
        if g.beta != 0.0 {
            let cb = c
                .broadcast(IxDyn(&[m, n]))
                .ok_or_else(|| invalid(format!("Gemm C {:?} does not broadcast to [{m}, {n}]", c.shape())))?;
            out.assign(&cb);
            beta = g.beta as f64;
        }
    }
    let a_std = a.as_standard_layout();
    let b_std = b.as_standard_layout();
    let a_sl = a_std.as_slice().ok_or_else(|| invalid("non-contiguous A"))?;
    let b_sl = b_std.as_slice().ok_or_else(|| invalid("non-contiguous B"))?;
    let sa = if g.trans_a { (1, m) } else { (k, 1) };
    let sb = if g.trans_b { (1, k) } else { (n, 1) };
    let o = out.as_slice_mut().ok_or_else(|| invalid("non-contiguous output"))?;
    // Split rows over threads for big products.
    let threads = rayon::current_num_threads().max(1);
    let rows = if m * n * k >= 1 << 16 {
        m.div_ceil(threads).max(8)
    } else {
        m.max(1)
    };
    let alpha = g.alpha as f64;
    o.par_chunks_mut(rows * n.max(1)).enumerate().try_for_each(|(ri, oc)| {
        let r0 = ri * rows;
        let mr = oc.len() / n.max(1);
        gemm(mr, k, n, alpha, &a_sl[r0 * sa.0..], sa, b_sl, sb, beta, oc, n)
    })?;
    Ok(out)
}

pub fn gemm_op(g: &GemmAttrs, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> OpResult<Tensor> {
    macro_rules! go {
        ($v:ident, $x:expr, $y:expr) => {{
            let c = match c {
                None => None,
                Some(Tensor::$v(c)) => Some(c),
                Some(c) => return Err(invalid(format!("Gemm C has dtype {}, A has {}", c.dtype(), a.dtype()))),
            };
            Tensor::$v(gemm_arrays(g, $x, $y, c)?)
        }};
    }
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => go!(F32, x, y),
        (Tensor::F64(x), Tensor::F64(y)) => go!(F64, x, y),
        (Tensor::I32(x), Tensor::I32(y)) => go!(I32, x, y),
        (Tensor::I64(x), Tensor::I64(y)) => go!(I64, x, y),
        (Tensor::U32(x), Tensor::U32(y)) => go!(U32, x, y),
        (Tensor::U64(x), Tensor::U64(y)) => go!(U64, x, y),
        (Tensor::F16(_), Tensor::F16(_)) | (Tensor::BF16(_), Tensor::BF16(_)) => {
            let f = |t: &Tensor| -> ArrayD<f32> {
                match t {
                    Tensor::F16(x) => f16_to_f32(x),
                    Tensor::BF16(x) => bf16_to_f32(x),
                    _ => ArrayD::zeros(IxDyn(&[0])),
                }
            };
            let cf = match c {
                Some(ct) if ct.dtype() != a.dtype() => {
                    return Err(invalid(format!("Gemm C has dtype {}, A has {}", ct.dtype(), a.dtype())))
                }
                Some(ct) => Some(f(ct)),
                None => None,
            };
            let y = gemm_arrays(g, &f(a), &f(b), cf.as_ref())?;
            match a {
                Tensor::F16(_) => Tensor::F16(y.mapv(f16::from_f32)),
                _ => Tensor::BF16(y.mapv(bf16::from_f32)),
            }
        }
        _ if a.dtype() != b.dtype() => {
            return Err(invalid(format!(
                "Gemm operands differ in dtype: {} and {}",
                a.dtype(),
                b.dtype()
            )))
        }
        _ => return Err(unsupported(format!("Gemm on {} tensors", a.dtype()))),
    })
}

/// An int8/uint8 tensor widened to i32.
fn widen(t: &Tensor, what: &str) -> OpResult<ArrayD<i32>> {
    match t {
        Tensor::I8(a) => Ok(a.mapv(i32::from)),
        Tensor::U8(a) => Ok(a.mapv(i32::from)),
        _ => Err(unsupported(format!("{what} of dtype {} (int8/uint8 only)", t.dtype()))),
    }
}

/// Reshapes a per-row (`row = true`, for A) or per-column (for B) 1-D
/// quantization parameter so it broadcasts against the matrix dims;
/// scalars and N-D parameters are returned as they are.
fn qparam_shape<T: Clone>(p: ArrayD<T>, row: bool) -> OpResult<ArrayD<T>> {
    if p.ndim() == 1 && p.len() > 1 {
        let n = p.len();
        let shape = if row { vec![n, 1] } else { vec![1, n] };
        return p
            .into_shape_with_order(IxDyn(&shape))
            .map_err(|e| invalid(e.to_string()));
    }
    Ok(p)
}

/// `x - zp` with the zero point broadcast per tensor, row or column.
fn sub_zero_point(x: ArrayD<i32>, zp: Option<&Tensor>, row: bool, what: &str) -> OpResult<ArrayD<i32>> {
    let Some(zp) = zp else { return Ok(x) };
    let z = qparam_shape(widen(zp, what)?, row)?;
    if z.len() == 1 {
        let v = z.iter().next().copied().unwrap_or(0);
        return Ok(x.mapv(|e| e - v));
    }
    let zb = z.broadcast(x.raw_dim()).ok_or_else(|| {
        invalid(format!(
            "{what} of shape {:?} does not fit input {:?}",
            z.shape(),
            x.shape()
        ))
    })?;
    Ok(&x - &zb)
}

pub fn matmul_integer(a: &Tensor, b: &Tensor, azp: Option<&Tensor>, bzp: Option<&Tensor>) -> OpResult<Tensor> {
    let a32 = sub_zero_point(widen(a, "MatMulInteger A")?, azp, true, "a_zero_point")?;
    let b32 = sub_zero_point(widen(b, "MatMulInteger B")?, bzp, false, "b_zero_point")?;
    Ok(Tensor::I32(matmul_arrays(&a32, &b32)?))
}

/// A scale tensor as f32 values plus the rounding of its dtype (the
/// reference computes the combined multiplier in the scale dtype).
type Scales = (ArrayD<f32>, fn(f32) -> f32);

fn scale_f32(t: &Tensor, what: &str) -> OpResult<Scales> {
    Ok(match t {
        Tensor::F32(a) => (a.clone(), |v| v),
        Tensor::F16(a) => (f16_to_f32(a), |v| f16::from_f32(v).to_f32()),
        Tensor::BF16(a) => (bf16_to_f32(a), |v| bf16::from_f32(v).to_f32()),
        _ => return Err(unsupported(format!("{what} of dtype {}", t.dtype()))),
    })
}

#[allow(clippy::too_many_arguments)]
pub fn qlinear_matmul(
    a: &Tensor,
    a_scale: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_scale: &Tensor,
    b_zp: Option<&Tensor>,
    y_scale: &Tensor,
    y_zp: Option<&Tensor>,
) -> OpResult<Tensor> {
    let a32 = sub_zero_point(widen(a, "QLinearMatMul a")?, a_zp, true, "a_zero_point")?;
    let b32 = sub_zero_point(widen(b, "QLinearMatMul b")?, b_zp, false, "b_zero_point")?;
    let c = matmul_arrays(&a32, &b32)?;
    let (asc, r) = scale_f32(a_scale, "a_scale")?;
    let (bsc, _) = scale_f32(b_scale, "b_scale")?;
    let (ysc, _) = scale_f32(y_scale, "y_scale")?;
    let asc = qparam_shape(asc, true)?;
    let bsc = qparam_shape(bsc, false)?;
    let fit = |s: &ArrayD<f32>, what: &str| {
        s.broadcast(c.raw_dim()).map(|v| v.to_owned()).ok_or_else(|| {
            invalid(format!(
                "{what} of shape {:?} does not fit output {:?}",
                s.shape(),
                c.shape()
            ))
        })
    };
    let (asb, bsb, ysb) = (fit(&asc, "a_scale")?, fit(&bsc, "b_scale")?, fit(&ysc, "y_scale")?);
    let out_dtype = y_zp.map(|t| t.dtype()).unwrap_or(a.dtype());
    let yz: Vec<f64> = match y_zp {
        Some(t) => {
            let z = widen(t, "y_zero_point")?;
            let zb = z.broadcast(c.raw_dim()).ok_or_else(|| {
                invalid(format!(
                    "y_zero_point {:?} does not fit output {:?}",
                    z.shape(),
                    c.shape()
                ))
            })?;
            zb.iter().map(|&v| v as f64).collect()
        }
        None => vec![0.0; c.len()],
    };
    let vals: Vec<f64> = c
        .iter()
        .zip(asb.iter().zip(bsb.iter()).zip(ysb.iter()))
        .zip(&yz)
        .map(|((&cv, ((&sa, &sb), &sy)), &z)| {
            let mult = r(r(sa * sb) / sy);
            (cv as f64 * mult as f64 + z).round_ties_even()
        })
        .collect();
    let shape = c.raw_dim();
    Ok(match out_dtype {
        carbide_ir::DType::I8 => Tensor::I8(
            ArrayD::from_shape_vec(shape, vals.iter().map(|&v| v.clamp(-128.0, 127.0) as i8).collect())
                .map_err(|e| invalid(e.to_string()))?,
        ),
        carbide_ir::DType::U8 => Tensor::U8(
            ArrayD::from_shape_vec(shape, vals.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect())
                .map_err(|e| invalid(e.to_string()))?,
        ),
        d => return Err(unsupported(format!("QLinearMatMul output of dtype {d}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr<T: Clone>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    #[test]
    fn matmul_broadcast_and_vectors() {
        // [2,1,2,3] x [3,2] -> [2,1,2,2]
        let a = arr(&[2, 1, 2, 3], (0..12).map(|v| v as f32).collect());
        let b = arr(&[3, 2], vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let c = matmul_arrays(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 1, 2, 2]);
        assert_eq!(
            c.iter().copied().collect::<Vec<_>>(),
            vec![2., 3., 8., 9., 14., 15., 20., 21.]
        );
        let v = arr(&[3], vec![1i64, 2, 3]);
        let m = arr(&[2, 3, 1], vec![1i64, 1, 1, 2, 2, 2]);
        let r = matmul_arrays(&v, &m).unwrap();
        assert_eq!(r.shape(), &[2, 1]);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![6, 12]);
        let d = matmul_arrays(&v, &v).unwrap();
        assert_eq!(d.shape(), &[] as &[usize]);
        assert_eq!(d.iter().copied().collect::<Vec<_>>(), vec![14]);
        assert!(matmul_arrays(&arr(&[2, 3], vec![0f32; 6]), &arr(&[2, 3], vec![0f32; 6])).is_err());
    }

    #[test]
    fn big_matmul_matches_naive() {
        let (m, k, n) = (70, 50, 40);
        let a = arr(&[m, k], (0..m * k).map(|v| ((v * 7) % 13) as f32 - 6.0).collect());
        let b = arr(&[k, n], (0..k * n).map(|v| ((v * 5) % 11) as f32 - 5.0).collect());
        let c = matmul_arrays(&a, &b).unwrap();
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum();
                assert_eq!(c[[i, j]], s);
            }
        }
    }

    #[test]
    fn gemm_transposes_and_bias() {
        let g = GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: true,
            trans_b: true,
        };
        // A^T = [[1,2],[3,4]] ; B^T = I
        let a = Tensor::F32(arr(&[2, 2], vec![1., 3., 2., 4.]));
        let b = Tensor::F32(arr(&[2, 2], vec![1., 0., 0., 1.]));
        let c = Tensor::F32(arr(&[2], vec![1., 10.]));
        let y = gemm_op(&g, &a, &b, Some(&c)).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), vec![2.5, 21.0, 3.5, 22.0]);
        let g = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        };
        let y = gemm_op(
            &g,
            &Tensor::I32(arr(&[1, 2], vec![2, 3])),
            &Tensor::I32(arr(&[2, 1], vec![4, 5])),
            None,
        )
        .unwrap();
        assert_eq!(y.to_i64_vec().unwrap(), vec![23]);
    }

    #[test]
    fn qlinear_matches_reference() {
        // numpy reference: a=[[208,236],[0,238]] uint8 etc.
        let a = Tensor::U8(arr(&[2, 2], vec![208, 236, 0, 238]));
        let b = Tensor::U8(arr(&[2, 1], vec![152, 89]));
        let s = |v: f32| Tensor::F32(arr(&[1], vec![v]));
        let z = |v: u8| Tensor::U8(arr(&[1], vec![v]));
        let y = qlinear_matmul(
            &a,
            &s(0.0066),
            Some(&z(113)),
            &b,
            &s(0.00705),
            Some(&z(114)),
            &s(0.0107),
            Some(&z(118)),
        )
        .unwrap();
        // C = [[(95*38 + 123*-25)], [(-113*38 + 125*-25)]] = [535, -7419]
        // D = C * 0.0066*0.00705/0.0107 + 118 -> [120.33.., 85.73..] -> [120, 86]
        assert_eq!(y.to_i64_vec().unwrap(), vec![120, 86]);
        let y = matmul_integer(&a, &b, Some(&z(113)), Some(&z(114))).unwrap();
        assert_eq!(y.to_i64_vec().unwrap(), vec![535, -7419]);
    }
}
