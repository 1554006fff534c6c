//! Convolutions. Conv is im2col (skipped for pointwise kernels) + gemm,
//! parallel over (batch, group, output row tiles) and output-channel blocks;
//! depthwise 2-D convs run a direct kernel. ConvTranspose is gemm + col2im.

use super::{build, check_elems, fdata, Real};
use crate::error::{invalid, unsupported, OpError, OpResult};
use crate::ops::{opt_tensor_in, tensor_in};
use carbide_ir::ops::nn::geom::{conv_transpose_dim, DimGeom};
use carbide_ir::ops::nn::{AutoPad, ConvAttrs, ConvTransposeAttrs, Window};
use carbide_ir::{DType, Tensor, Value};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// The checked shape of a convolution.
pub(super) struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    pub geo: Vec<DimGeom>,
}

impl ConvShape {
    fn in_sp(&self) -> usize {
        self.geo.iter().map(|g| g.input).product()
    }
    fn out_sp(&self) -> usize {
        self.geo.iter().map(|g| g.out).product()
    }
    fn kk(&self) -> usize {
        self.geo.iter().map(|g| g.kernel).product()
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.n, self.m];
        s.extend(self.geo.iter().map(|g| g.out));
        s
    }
}

fn check_kernel_attr(a: &ConvAttrs, kernel: &[usize]) -> OpResult<()> {
    if let Some(k) = &a.kernel_shape {
        if k.len() != kernel.len() || k.iter().zip(kernel).any(|(&a, &b)| a as usize != b) {
            return Err(invalid(format!(
                "kernel_shape {k:?} does not match the weight's kernel {kernel:?}"
            )));
        }
    }
    Ok(())
}

/// Validates X [N, C, D...] against W [M, C/group, k...] and resolves the window.
pub(super) fn conv_shape(xs: &[usize], ws: &[usize], a: &ConvAttrs) -> OpResult<ConvShape> {
    if xs.len() < 3 {
        return Err(invalid(format!("input must have rank >= 3, got shape {xs:?}")));
    }
    if ws.len() != xs.len() {
        return Err(invalid(format!(
            "weight shape {ws:?} has a different rank than input {xs:?}"
        )));
    }
    let group = a.group as usize;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if ws[1] * group != c {
        return Err(invalid(format!(
            "input has {c} channels, weight {ws:?} expects {} x group {group}",
            ws[1]
        )));
    }
    if m % group != 0 {
        return Err(invalid(format!(
            "{m} output channels are not divisible by group {group}"
        )));
    }
    let kernel = &ws[2..];
    check_kernel_attr(a, kernel)?;
    let win = Window::new(kernel.len(), a.auto_pad, &a.pads, &a.strides, &a.dilations, false).map_err(invalid)?;
    let geo = win.resolve(&xs[2..], kernel).map_err(invalid)?;
    let s = ConvShape { n, c, m, group, geo };
    check_elems(&s.out_shape())?;
    Ok(s)
}

/// Splits a flat index into coordinates over `dims` (row-major).
pub(super) fn decompose(mut i: usize, dims: &[usize], out: &mut [usize]) {
    for d in (0..dims.len()).rev() {
        let n = dims[d].max(1);
        out[d] = i % n;
        i /= n;
    }
}

/// The range of `j` in `0..count` for which `j * s + k` lies in `0..input`.
fn valid_range(k: i64, s: usize, input: usize, count: usize) -> (usize, usize) {
    let s = s as i64;
    let lo = if k >= 0 { 0 } else { (-k + s - 1) / s };
    let last = input as i64 - 1 - k;
    let hi = if last < 0 { 0 } else { (last / s + 1).min(count as i64) };
    let lo = lo.min(hi);
    (lo as usize, hi as usize)
}

/// Flat offset, over the leading spatial dims in `geo`, of kernel tap `kc`
/// at window position `pos`; `None` when it lands in the padding. `extent`
/// picks the padded side's size (the input for im2col, the output for col2im).
fn window_offset(
    geo: &[DimGeom],
    pos: &[usize],
    kc: &[usize],
    strides: &[usize],
    extent: impl Fn(&DimGeom) -> usize,
) -> Option<usize> {
    let mut off = 0usize;
    for (((g, &o), &k), &st) in geo.iter().zip(pos).zip(kc).zip(strides) {
        let p = (o * g.stride + k * g.dilation) as i64 - g.pad_begin;
        if p < 0 || p >= extent(g) as i64 {
            return None;
        }
        off += p as usize * st;
    }
    Some(off)
}

/// Unfolds the windows of output rows `r0..r1` (rows: all spatial dims but
/// the last) of `cg` channels into a `(cg * kk) x cols` matrix.
fn im2col<T: Real>(xg: &[T], cg: usize, geo: &[DimGeom], r0: usize, r1: usize) -> Vec<T> {
    let nsp = geo.len();
    let last = nsp - 1;
    let inner = geo[last].out;
    let cols = (r1 - r0) * inner;
    let kk: usize = geo.iter().map(|g| g.kernel).product();
    let in_sp: usize = geo.iter().map(|g| g.input).product();
    let mut in_strides = vec![1usize; nsp];
    for d in (0..last).rev() {
        in_strides[d] = in_strides[d + 1] * geo[d + 1].input;
    }
    let mut col = vec![T::zero(); cg * kk * cols];
    let gl = &geo[last];
    let kdims: Vec<usize> = geo.iter().map(|g| g.kernel).collect();
    let odims: Vec<usize> = geo[..last].iter().map(|g| g.out).collect();
    let mut kc = vec![0usize; nsp];
    let mut oc = vec![0usize; nsp];
    for kidx in 0..kk {
        decompose(kidx, &kdims, &mut kc);
        let kl = (kc[last] * gl.dilation) as i64 - gl.pad_begin;
        let (jlo, jhi) = valid_range(kl, gl.stride, gl.input, inner);
        if jlo >= jhi {
            continue;
        }
        for (oi, o) in (r0..r1).enumerate() {
            decompose(o, &odims, &mut oc[..last]);
            let Some(off) = window_offset(&geo[..last], &oc[..last], &kc, &in_strides, |g| g.input) else {
                continue;
            };
            for ci in 0..cg {
                let row = &mut col[(ci * kk + kidx) * cols + oi * inner..][..inner];
                let src = &xg[ci * in_sp + off..][..gl.input];
                if gl.stride == 1 {
                    let a = (jlo as i64 + kl) as usize;
                    row[jlo..jhi].copy_from_slice(&src[a..a + (jhi - jlo)]);
                } else {
                    for (j, r) in row.iter_mut().enumerate().take(jhi).skip(jlo) {
                        *r = src[(j as i64 * gl.stride as i64 + kl) as usize];
                    }
                }
            }
        }
    }
    col
}

/// out (m x n) = a (m x k, row-major) * b (k x n, row stride rsb), parallel over row blocks.
fn gemm_rows<T: Real>(m: usize, k: usize, n: usize, a: &[T], b: &[T], rsb: usize, out: &mut [T]) -> OpResult<()> {
    const MC: usize = 64;
    if n == 0 {
        return Ok(());
    }
    out[..m * n]
        .par_chunks_mut(MC * n)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            let rows = chunk.len() / n;
            T::gemm(rows, k, n, &a[i * MC * k..], k, 1, b, rsb, 1, chunk, n, false)
        })
}

/// Direct 2-D convolution for one input channel per group (depthwise).
fn depthwise_2d<T: Real>(x: &[T], w: &[T], y: &mut [T], s: &ConvShape) {
    let (gh, gw) = (s.geo[0], s.geo[1]);
    let (in_sp, out_sp, kk) = (s.in_sp(), s.out_sp(), s.kk());
    let mg = s.m / s.group;
    y.par_chunks_mut(out_sp).enumerate().for_each(|(idx, plane)| {
        let (b, oc) = (idx / s.m, idx % s.m);
        let xp = &x[(b * s.c + oc / mg) * in_sp..][..in_sp];
        let wk = &w[oc * kk..][..kk];
        for kh in 0..gh.kernel {
            for kw in 0..gw.kernel {
                let wv = wk[kh * gw.kernel + kw];
                let kl = (kw * gw.dilation) as i64 - gw.pad_begin;
                let (jlo, jhi) = valid_range(kl, gw.stride, gw.input, gw.out);
                for oh in 0..gh.out {
                    let ih = (oh * gh.stride + kh * gh.dilation) as i64 - gh.pad_begin;
                    if ih < 0 || ih >= gh.input as i64 {
                        continue;
                    }
                    let src = &xp[ih as usize * gw.input..][..gw.input];
                    let dst = &mut plane[oh * gw.out..][..gw.out];
                    if gw.stride == 1 {
                        let a = (jlo as i64 + kl) as usize;
                        for (d, &v) in dst[jlo..jhi].iter_mut().zip(&src[a..a + (jhi - jlo)]) {
                            *d = *d + wv * v;
                        }
                    } else {
                        for (j, d) in dst.iter_mut().enumerate().take(jhi).skip(jlo) {
                            *d = *d + wv * src[(j as i64 * gw.stride as i64 + kl) as usize];
                        }
                    }
                }
            }
        }
    });
}

/// Adds `bias[channel]` to each output plane.
fn add_bias<T: Real>(y: &mut [T], bias: Option<&[T]>, m: usize, plane: usize) {
    if let Some(bias) = bias {
        if plane == 0 {
            return;
        }
        y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            let bv = bias[i % m];
            for v in p {
                *v = *v + bv;
            }
        });
    }
}

/// Y = conv(X, W) + B on row-major data already checked by [`conv_shape`].
pub(super) fn conv_core<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, s: &ConvShape) -> OpResult<Vec<T>> {
    let (g, cg, mg) = (s.group, s.c / s.group, s.m / s.group);
    let (in_sp, out_sp, kk) = (s.in_sp(), s.out_sp(), s.kk());
    let ckk = cg * kk;
    let mut y = vec![T::zero(); s.n * s.m * out_sp];
    if y.is_empty() {
        return Ok(y);
    }
    if cg == 1 && g > 1 && s.geo.len() == 2 {
        depthwise_2d(x, w, &mut y, s);
    } else {
        let inner = s.geo.last().map_or(1, |g| g.out);
        let outer = out_sp / inner;
        let rows = (512 / inner).clamp(1, outer);
        let ntiles = outer.div_ceil(rows);
        let pointwise = kk == 1
            && s.geo
                .iter()
                .all(|g| g.stride == 1 && g.pad_begin == 0 && g.out == g.input);
        let tasks: Vec<(usize, usize, usize)> = (0..s.n)
            .flat_map(|b| (0..g).flat_map(move |gi| (0..ntiles).map(move |t| (b, gi, t))))
            .collect();
        let results: Vec<Vec<T>> = tasks
            .par_iter()
            .map(|&(b, gi, t)| {
                let (r0, r1) = (t * rows, ((t + 1) * rows).min(outer));
                let (cols, p0) = ((r1 - r0) * inner, r0 * inner);
                let xg = &x[(b * s.c + gi * cg) * in_sp..][..cg * in_sp];
                let wg = &w[gi * mg * ckk..][..mg * ckk];
                let mut out = vec![T::zero(); mg * cols];
                if pointwise {
                    gemm_rows(mg, ckk, cols, wg, &xg[p0..], in_sp, &mut out)?;
                } else {
                    let col = im2col(xg, cg, &s.geo, r0, r1);
                    gemm_rows(mg, ckk, cols, wg, &col, cols, &mut out)?;
                }
                Ok(out)
            })
            .collect::<OpResult<_>>()?;
        for (&(b, gi, t), out) in tasks.iter().zip(results) {
            let (r0, r1) = (t * rows, ((t + 1) * rows).min(outer));
            let (cols, p0) = ((r1 - r0) * inner, r0 * inner);
            for mi in 0..mg {
                let dst = (b * s.m + gi * mg + mi) * out_sp + p0;
                y[dst..dst + cols].copy_from_slice(&out[mi * cols..(mi + 1) * cols]);
            }
        }
    }
    add_bias(&mut y, bias, s.m, out_sp);
    Ok(y)
}

fn bias_data<'a, T: Real>(b: Option<&'a Tensor>, m: usize) -> OpResult<Option<std::borrow::Cow<'a, [T]>>> {
    match b {
        None => Ok(None),
        Some(b) => {
            if b.len() != m {
                return Err(invalid(format!("bias has {} elements, expected {m}", b.len())));
            }
            Ok(Some(fdata::<T>(b, "bias")?))
        }
    }
}

pub(super) fn conv<T: Real>(inputs: &[Option<&Value>], a: &ConvAttrs) -> OpResult<Tensor> {
    let (x, w, b) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, opt_tensor_in(inputs, 2)?);
    if w.dtype() != x.dtype() {
        return Err(invalid(format!(
            "weight dtype {} differs from input dtype {}",
            w.dtype(),
            x.dtype()
        )));
    }
    let s = conv_shape(x.shape(), w.shape(), a)?;
    let (xd, wd) = (fdata::<T>(x, "X")?, fdata::<T>(w, "W")?);
    let bd = bias_data::<T>(b, s.m)?;
    let y = conv_core(&xd, &wd, bd.as_deref(), &s)?;
    build(y, &s.out_shape(), x.dtype())
}

/// Folds columns back into an image, summing overlaps: `col` is
/// `(channels * kk) x grid` where `geo[d].input` is the grid extent and
/// `geo[d].out` the image extent.
fn col2im<T: Real>(col: &[T], channels: usize, geo: &[DimGeom], y: &mut [T]) {
    let nsp = geo.len();
    let last = nsp - 1;
    let gl = &geo[last];
    let grid_inner = gl.input;
    let grid_sp: usize = geo.iter().map(|g| g.input).product();
    let grid_outer = grid_sp / grid_inner.max(1);
    let kk: usize = geo.iter().map(|g| g.kernel).product();
    let out_sp: usize = geo.iter().map(|g| g.out).product();
    let mut out_strides = vec![1usize; nsp];
    for d in (0..last).rev() {
        out_strides[d] = out_strides[d + 1] * geo[d + 1].out;
    }
    let kdims: Vec<usize> = geo.iter().map(|g| g.kernel).collect();
    let gdims: Vec<usize> = geo[..last].iter().map(|g| g.input).collect();
    let mut kc = vec![0usize; nsp];
    let mut gc = vec![0usize; nsp];
    for kidx in 0..kk {
        decompose(kidx, &kdims, &mut kc);
        let kl = (kc[last] * gl.dilation) as i64 - gl.pad_begin;
        let (jlo, jhi) = valid_range(kl, gl.stride, gl.out, grid_inner);
        if jlo >= jhi {
            continue;
        }
        for go in 0..grid_outer {
            decompose(go, &gdims, &mut gc[..last]);
            let Some(off) = window_offset(&geo[..last], &gc[..last], &kc, &out_strides, |g| g.out) else {
                continue;
            };
            for ch in 0..channels {
                let row = &col[(ch * kk + kidx) * grid_sp + go * grid_inner..][..grid_inner];
                let dst = &mut y[ch * out_sp + off..][..gl.out];
                for (j, &v) in row.iter().enumerate().take(jhi).skip(jlo) {
                    let p = (j as i64 * gl.stride as i64 + kl) as usize;
                    dst[p] = dst[p] + v;
                }
            }
        }
    }
}

pub(super) fn conv_transpose<T: Real>(inputs: &[Option<&Value>], a: &ConvTransposeAttrs) -> OpResult<Tensor> {
    let (x, w, b) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, opt_tensor_in(inputs, 2)?);
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(invalid(format!(
            "input {xs:?} and weight {ws:?} must have the same rank >= 3"
        )));
    }
    let g = a.conv.group as usize;
    let (n, c) = (xs[0], xs[1]);
    if ws[0] != c || c % g != 0 {
        return Err(invalid(format!(
            "weight {ws:?} does not match {c} input channels with group {g}"
        )));
    }
    let (cg, mg) = (c / g, ws[1]);
    let m = mg * g;
    let kernel = &ws[2..];
    check_kernel_attr(&a.conv, kernel)?;
    let nsp = kernel.len();
    let geo: Vec<DimGeom> = (0..nsp)
        .map(|i| conv_transpose_dim(a, nsp, i, xs[2 + i], kernel[i]))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let mut shape = vec![n, m];
    shape.extend(geo.iter().map(|g| g.out));
    check_elems(&shape)?;
    let kk: usize = kernel.iter().product();
    let in_sp: usize = xs[2..].iter().product();
    let out_sp: usize = geo.iter().map(|g| g.out).product();
    check_elems(&[mg, kk, in_sp])?;
    let (xd, wd) = (fdata::<T>(x, "X")?, fdata::<T>(w, "W")?);
    let bd = bias_data::<T>(b, m)?;
    let mut y = vec![T::zero(); n * m * out_sp];
    if !y.is_empty() {
        y.par_chunks_mut(mg * out_sp).enumerate().try_for_each(|(idx, yg)| {
            let (bi, gi) = (idx / g, idx % g);
            let xg = &xd[(bi * c + gi * cg) * in_sp..][..cg * in_sp];
            let wg = &wd[gi * cg * mg * kk..][..cg * mg * kk];
            let mut col = vec![T::zero(); mg * kk * in_sp];
            T::gemm(mg * kk, cg, in_sp, wg, 1, mg * kk, xg, in_sp, 1, &mut col, in_sp, false)?;
            col2im(&col, mg, &geo, yg);
            Ok::<_, OpError>(())
        })?;
    }
    add_bias(&mut y, bd.as_deref(), m, out_sp);
    build(y, &shape, x.dtype())
}

pub(super) fn col2im_op<T: Real>(
    inputs: &[Option<&Value>],
    dilations: &Option<Vec<i64>>,
    pads: &Option<Vec<i64>>,
    strides: &Option<Vec<i64>>,
) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    let ints = |i: usize, what: &str| -> OpResult<Vec<usize>> {
        let v = tensor_in(inputs, i)?
            .to_i64_vec()
            .ok_or_else(|| invalid(format!("{what} must be an integer tensor")))?;
        v.iter()
            .map(|&d| {
                if (1..=1 << 40).contains(&d) {
                    Ok(d as usize)
                } else {
                    Err(invalid(format!("{what} value {d} out of range")))
                }
            })
            .collect()
    };
    let (img, blk) = (ints(1, "image_shape")?, ints(2, "block_shape")?);
    let xs = x.shape();
    if xs.len() != 3 || img.len() != blk.len() || img.is_empty() {
        return Err(invalid(format!(
            "input {xs:?}, image_shape {img:?} and block_shape {blk:?} do not fit"
        )));
    }
    let nsp = img.len();
    let kk = check_elems(&blk)?;
    if xs[1] % kk != 0 {
        return Err(invalid(format!(
            "input dim 1 ({}) is not a multiple of the block size {kk}",
            xs[1]
        )));
    }
    let c = xs[1] / kk;
    let win = Window::new(nsp, AutoPad::NotSet, pads, strides, dilations, false).map_err(invalid)?;
    let mut geo = win.resolve(&img, &blk).map_err(invalid)?;
    for g in geo.iter_mut() {
        (g.input, g.out) = (g.out, g.input);
    }
    let grid: usize = geo.iter().map(|g| g.input).product();
    if grid != xs[2] {
        return Err(invalid(format!(
            "input has {} blocks, the image and block shapes give {grid}",
            xs[2]
        )));
    }
    let mut shape = vec![xs[0], c];
    shape.extend(&img);
    let out_sp = check_elems(&shape)? / (xs[0] * c).max(1);
    let xd = fdata::<T>(x, "input")?;
    let mut y = vec![T::zero(); xs[0] * c * out_sp];
    if !y.is_empty() {
        y.par_chunks_mut(c * out_sp).enumerate().for_each(|(b, yb)| {
            col2im(&xd[b * xs[1] * xs[2]..][..xs[1] * xs[2]], c, &geo, yb);
        });
    }
    build(y, &shape, x.dtype())
}

/// Integer tensor values as f64 (exact for the 8/16/32-bit types).
fn int_f64(t: &Tensor, what: &str) -> OpResult<Vec<f64>> {
    match t.dtype() {
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32 | DType::U32 => {}
        _ => return Err(unsupported(format!("{what} of dtype {}", t.dtype()))),
    }
    Ok(t.to_i64_vec()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v as f64)
        .collect())
}

/// A zero point or scale that is either a scalar or one value per output channel.
fn per_channel(v: Vec<f64>, m: usize, what: &str) -> OpResult<Vec<f64>> {
    match v.len() {
        1 => Ok(vec![v[0]; m]),
        n if n == m => Ok(v),
        n => Err(invalid(format!("{what} has {n} values, expected 1 or {m}"))),
    }
}

fn scalar(v: Vec<f64>, what: &str) -> OpResult<f64> {
    match v.as_slice() {
        [x] => Ok(*x),
        _ => Err(invalid(format!("{what} must hold a single value, got {}", v.len()))),
    }
}

/// The exact integer convolution of `(x - x_zp)` and `(w - w_zp[m])`, in f64.
fn int_conv(
    x: &Tensor,
    w: &Tensor,
    xzp: f64,
    wzp: &[f64],
    a: &ConvAttrs,
    bias: Option<&[f64]>,
) -> OpResult<(Vec<f64>, ConvShape)> {
    let s = conv_shape(x.shape(), w.shape(), a)?;
    let xd: Vec<f64> = int_f64(x, "x")?.into_iter().map(|v| v - xzp).collect();
    let per = w.len() / s.m.max(1);
    let wd: Vec<f64> = int_f64(w, "w")?
        .iter()
        .enumerate()
        .map(|(i, v)| v - wzp[i / per.max(1)])
        .collect();
    let y = conv_core(&xd, &wd, bias, &s)?;
    Ok((y, s))
}

pub(super) fn conv_integer(inputs: &[Option<&Value>], a: &ConvAttrs) -> OpResult<Tensor> {
    let (x, w) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?);
    let m = w.shape().first().copied().unwrap_or(0);
    let xzp = match opt_tensor_in(inputs, 2)? {
        Some(t) => scalar(int_f64(t, "x_zero_point")?, "x_zero_point")?,
        None => 0.0,
    };
    let wzp = match opt_tensor_in(inputs, 3)? {
        Some(t) => per_channel(int_f64(t, "w_zero_point")?, m, "w_zero_point")?,
        None => vec![0.0; m],
    };
    let (y, s) = int_conv(x, w, xzp, &wzp, a, None)?;
    let v: Vec<i32> = y.iter().map(|&v| v as i32).collect();
    Ok(Tensor::I32(
        ArrayD::from_shape_vec(IxDyn(&s.out_shape()), v).map_err(|e| invalid(e.to_string()))?,
    ))
}

fn float_vals(t: &Tensor, what: &str) -> OpResult<Vec<f64>> {
    if !t.dtype().is_float() || t.dtype().is_small() {
        return Err(invalid(format!("{what} must be a float tensor, got {}", t.dtype())));
    }
    t.to_f64_vec().ok_or_else(|| invalid(format!("{what} is not numeric")))
}

pub(super) fn qlinear_conv(inputs: &[Option<&Value>], a: &ConvAttrs) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    let w = tensor_in(inputs, 3)?;
    let m = w.shape().first().copied().unwrap_or(0);
    let xs = scalar(float_vals(tensor_in(inputs, 1)?, "x_scale")?, "x_scale")?;
    let xzp = scalar(int_f64(tensor_in(inputs, 2)?, "x_zero_point")?, "x_zero_point")?;
    let ws = per_channel(float_vals(tensor_in(inputs, 4)?, "w_scale")?, m, "w_scale")?;
    let wzp = per_channel(int_f64(tensor_in(inputs, 5)?, "w_zero_point")?, m, "w_zero_point")?;
    let ys = scalar(float_vals(tensor_in(inputs, 6)?, "y_scale")?, "y_scale")?;
    let yzp_t = opt_tensor_in(inputs, 7)?;
    let yzp = match yzp_t {
        Some(t) => scalar(int_f64(t, "y_zero_point")?, "y_zero_point")?,
        None => 0.0,
    };
    let bias = match opt_tensor_in(inputs, 8)? {
        Some(b) if b.len() == m => Some(int_f64(b, "B")?),
        Some(b) => return Err(invalid(format!("B has {} elements, expected {m}", b.len()))),
        None => None,
    };
    let (acc, s) = int_conv(x, w, xzp, &wzp, a, bias.as_deref())?;
    let out_dt = yzp_t.map_or(x.dtype(), |t| t.dtype());
    let plane = s.out_sp().max(1);
    let q = |i: usize, v: f64| -> f64 {
        let ch = (i / plane) % s.m.max(1);
        let r = v * (xs * ws[ch] / ys);
        r.round_ties_even() + yzp
    };
    let shape = IxDyn(&s.out_shape());
    let bad = |e: ndarray::ShapeError| invalid(e.to_string());
    Ok(match out_dt {
        DType::U8 => Tensor::U8(
            ArrayD::from_shape_vec(
                shape,
                acc.iter()
                    .enumerate()
                    .map(|(i, &v)| q(i, v).clamp(0.0, 255.0) as u8)
                    .collect(),
            )
            .map_err(bad)?,
        ),
        DType::I8 => Tensor::I8(
            ArrayD::from_shape_vec(
                shape,
                acc.iter()
                    .enumerate()
                    .map(|(i, &v)| q(i, v).clamp(-128.0, 127.0) as i8)
                    .collect(),
            )
            .map_err(bad)?,
        ),
        d => return Err(unsupported(format!("QLinearConv producing {d}"))),
    })
}

/// Bilinear sample of a `h x w` plane at (y, x), zero outside.
fn bilinear<T: Real>(p: &[T], h: usize, w: usize, y: T, x: T) -> T {
    let (hf, wf) = (T::c(h as f64), T::c(w as f64));
    if y <= -T::one() || y >= hf || x <= -T::one() || x >= wf {
        return T::zero();
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let (y0, x0) = (y0.f64v() as i64, x0.f64v() as i64);
    let at = |yy: i64, xx: i64| -> T {
        if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
            p[yy as usize * w + xx as usize]
        } else {
            T::zero()
        }
    };
    let one = T::one();
    at(y0, x0) * (one - ly) * (one - lx)
        + at(y0, x0 + 1) * (one - ly) * lx
        + at(y0 + 1, x0) * ly * (one - lx)
        + at(y0 + 1, x0 + 1) * ly * lx
}

pub(super) fn deform_conv<T: Real>(inputs: &[Option<&Value>], a: &ConvAttrs, offset_group: i64) -> OpResult<Tensor> {
    let (x, w, off) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, tensor_in(inputs, 2)?);
    let (b, mask) = (opt_tensor_in(inputs, 3)?, opt_tensor_in(inputs, 4)?);
    let s = conv_shape(x.shape(), w.shape(), a)?;
    if s.geo.len() != 2 {
        return Err(unsupported(format!(
            "DeformConv with {} spatial dims (only 2-D)",
            s.geo.len()
        )));
    }
    let og = offset_group as usize;
    if s.c % og != 0 {
        return Err(invalid(format!(
            "{} channels are not divisible by offset_group {og}",
            s.c
        )));
    }
    let (gh, gw) = (s.geo[0], s.geo[1]);
    let (kk, out_sp, in_sp) = (s.kk(), s.out_sp(), s.in_sp());
    let want_off = [s.n, og * kk * 2, gh.out, gw.out];
    if off.shape() != want_off {
        return Err(invalid(format!(
            "offset shape {:?}, expected {want_off:?}",
            off.shape()
        )));
    }
    let want_mask = [s.n, og * kk, gh.out, gw.out];
    if let Some(mk) = mask {
        if mk.shape() != want_mask {
            return Err(invalid(format!("mask shape {:?}, expected {want_mask:?}", mk.shape())));
        }
    }
    check_elems(&[s.c, kk, out_sp])?;
    let (xd, wd, od) = (fdata::<T>(x, "X")?, fdata::<T>(w, "W")?, fdata::<T>(off, "offset")?);
    let md = match mask {
        Some(mk) => Some(fdata::<T>(mk, "mask")?),
        None => None,
    };
    let bd = bias_data::<T>(b, s.m)?;
    let (g, cg, mg) = (s.group, s.c / s.group, s.m / s.group);
    let cpg = s.c / og;
    let mut y = vec![T::zero(); s.n * s.m * out_sp];
    for bi in 0..s.n {
        // Columns for all channels: (c * kk) x out_sp.
        let mut col = vec![T::zero(); s.c * kk * out_sp];
        col.par_chunks_mut(kk * out_sp).enumerate().for_each(|(ci, rows)| {
            let o = ci / cpg;
            let plane = &xd[(bi * s.c + ci) * in_sp..][..in_sp];
            for kidx in 0..kk {
                let (kh, kw) = (kidx / gw.kernel, kidx % gw.kernel);
                let oy = &od[((bi * og + o) * kk * 2 + kidx * 2) * out_sp..][..out_sp];
                let ox = &od[((bi * og + o) * kk * 2 + kidx * 2 + 1) * out_sp..][..out_sp];
                let mrow = md
                    .as_ref()
                    .map(|m| &m[((bi * og + o) * kk + kidx) * out_sp..][..out_sp]);
                for p in 0..out_sp {
                    let (oh, ow) = (p / gw.out, p % gw.out);
                    let py = T::c((oh * gh.stride + kh * gh.dilation) as f64 - gh.pad_begin as f64) + oy[p];
                    let px = T::c((ow * gw.stride + kw * gw.dilation) as f64 - gw.pad_begin as f64) + ox[p];
                    let mut v = bilinear(plane, gh.input, gw.input, py, px);
                    if let Some(mr) = mrow {
                        v = v * mr[p];
                    }
                    rows[kidx * out_sp + p] = v;
                }
            }
        });
        for gi in 0..g {
            let wg = &wd[gi * mg * cg * kk..][..mg * cg * kk];
            let colg = &col[gi * cg * kk * out_sp..][..cg * kk * out_sp];
            let yg = &mut y[(bi * s.m + gi * mg) * out_sp..][..mg * out_sp];
            gemm_rows(mg, cg * kk, out_sp, wg, colg, out_sp, yg)?;
        }
    }
    add_bias(&mut y, bd.as_deref(), s.m, out_sp);
    build(y, &s.out_shape(), x.dtype())
}

/// Stateful causal depthwise 1-D conv: the past state is prepended, the
/// last `k - 1` positions of the padded input become the new state.
pub(super) fn causal_conv<T: Real>(inputs: &[Option<&Value>], silu: bool) -> OpResult<Vec<Tensor>> {
    let (x, w) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?);
    let (b, past) = (opt_tensor_in(inputs, 2)?, opt_tensor_in(inputs, 3)?);
    let xs = x.shape();
    if xs.len() != 3 {
        return Err(invalid(format!("input must have rank 3, got {xs:?}")));
    }
    let (nb, c, l) = (xs[0], xs[1], xs[2]);
    let ws = w.shape();
    if ws.len() != 3 || ws[0] != c || ws[1] != 1 || ws[2] == 0 {
        return Err(invalid(format!("weight shape {ws:?} must be [{c}, 1, k] with k >= 1")));
    }
    let k = ws[2];
    let st = k - 1;
    if let Some(p) = past {
        if p.shape() != [nb, c, st] {
            return Err(invalid(format!(
                "past_state shape {:?}, expected {:?}",
                p.shape(),
                [nb, c, st]
            )));
        }
    }
    let len = check_elems(&[nb, c, st + l])?;
    let (xd, wd) = (fdata::<T>(x, "input")?, fdata::<T>(w, "weight")?);
    let bd = bias_data::<T>(b, c)?;
    let pd = match past {
        Some(p) => Some(fdata::<T>(p, "past_state")?),
        None => None,
    };
    let mut y = vec![T::zero(); nb * c * l];
    let mut state = vec![T::zero(); nb * c * st];
    let mut padded = vec![T::zero(); st + l];
    for bc in 0..len / (st + l).max(1) {
        let ch = bc % c;
        padded.fill(T::zero());
        if let Some(pd) = &pd {
            padded[..st].copy_from_slice(&pd[bc * st..][..st]);
        }
        padded[st..].copy_from_slice(&xd[bc * l..][..l]);
        let wk = &wd[ch * k..][..k];
        let bias = bd.as_ref().map_or(T::zero(), |b| b[ch]);
        for t in 0..l {
            let mut v = bias;
            for (j, &wv) in wk.iter().enumerate() {
                v = v + wv * padded[t + j];
            }
            if silu {
                v = v / (T::one() + (-v).exp());
            }
            y[bc * l + t] = v;
        }
        state[bc * st..][..st].copy_from_slice(&padded[l..]);
    }
    Ok(vec![build(y, xs, x.dtype())?, build(state, &[nb, c, st], x.dtype())?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Value {
        Value::Tensor(Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()))
    }

    fn attrs(pads: Option<Vec<i64>>, strides: Option<Vec<i64>>, group: i64) -> ConvAttrs {
        ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: None,
            group,
            kernel_shape: None,
            pads,
            strides,
        }
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }

    #[test]
    fn basic_conv_with_padding() {
        // onnx test_basic_conv_with_padding
        let x = t(&[1, 1, 5, 5], (0..25).map(|v| v as f32).collect());
        let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
        let y = conv::<f32>(&[Some(&x), Some(&w)], &attrs(Some(vec![1, 1, 1, 1]), None, 1)).unwrap();
        let want = [
            12., 21., 27., 33., 24., 33., 54., 63., 72., 51., 63., 99., 108., 117., 81., 93., 144., 153., 162., 111.,
            72., 111., 117., 123., 84.,
        ];
        assert_eq!(vals(&y), want);
        let y = conv::<f32>(
            &[Some(&x), Some(&w)],
            &attrs(Some(vec![1, 0, 1, 0]), Some(vec![2, 2]), 1),
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 2]);
        assert_eq!(vals(&y), [21., 33., 99., 117., 111., 123.]);
    }

    #[test]
    fn grouped_and_depthwise_match_reference() {
        // x: 1x2x3x3, w: 2x1x2x2, group 2, bias [1, -1]
        let x = t(&[1, 2, 3, 3], (0..18).map(|v| v as f32).collect());
        let w = t(&[2, 1, 2, 2], vec![1., 2., 3., 4., -1., 0., 0., 1.]);
        let b = t(&[2], vec![1., -1.]);
        let y = conv::<f32>(&[Some(&x), Some(&w), Some(&b)], &attrs(None, None, 2)).unwrap();
        // channel 0: [0 1;3 4]·[1 2;3 4] = 0+2+9+16 = 27 (+1)
        assert_eq!(vals(&y), [28., 38., 58., 68., 3., 3., 3., 3.]);
        // The same through the f64 (general) path.
        let y64 = conv::<f64>(&[Some(&x), Some(&w), Some(&b)], &attrs(None, None, 2)).unwrap();
        assert_eq!(vals(&y64), vals(&y));
    }

    #[test]
    fn conv_transpose_simple() {
        // x 1x1x2x2 = [1 2;3 4], w 1x1x2x2 ones, stride 1 -> 3x3
        let x = t(&[1, 1, 2, 2], vec![1., 2., 3., 4.]);
        let w = t(&[1, 1, 2, 2], vec![1.; 4]);
        let a = ConvTransposeAttrs {
            conv: attrs(None, None, 1),
            output_padding: None,
            output_shape: None,
        };
        let y = conv_transpose::<f32>(&[Some(&x), Some(&w)], &a).unwrap();
        assert_eq!(vals(&y), [1., 3., 2., 4., 10., 6., 3., 7., 4.]);
    }

    #[test]
    fn causal_conv_state() {
        let x = t(&[1, 1, 3], vec![1., 2., 3.]);
        let w = t(&[1, 1, 2], vec![1., 10.]);
        let past = t(&[1, 1, 1], vec![5.]);
        let out = causal_conv::<f32>(&[Some(&x), Some(&w), None, Some(&past)], false).unwrap();
        assert_eq!(vals(&out[0]), [15., 21., 32.]);
        assert_eq!(vals(&out[1]), [3.]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = t(&[1, 2, 3, 3], vec![0.; 18]);
        let w = t(&[1, 1, 5, 5], vec![0.; 25]);
        assert!(conv::<f32>(&[Some(&x), Some(&w)], &attrs(None, None, 1)).is_err());
        assert!(conv::<f32>(&[Some(&x), Some(&w)], &attrs(None, None, 2)).is_err());
    }
}
