//! Kernels that move data: Transpose, Concat, Split, Slice, Pad,
//! CenterCropPad, DepthToSpace, SpaceToDepth, Trilu, ReverseSequence.

use super::util::{
    compose_maps, ints_in, norm_axes, norm_axis, opt_ints_in, reshape as reshape_t, same, scalar_of, take_map, NONE,
};
use crate::error::{invalid, OpResult};
use crate::ops::{opt_tensor_in, tensor_in};
use carbide_ir::ndarray::{concatenate, ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use carbide_ir::ops::tensor::{slice_range, PadMode};
use carbide_ir::{tensor_map, Tensor, Value};

fn out(t: Tensor) -> OpResult<Vec<Value>> {
    Ok(vec![Value::Tensor(t)])
}

/// Permutes axes and copies into row-major order.
fn permute(x: &Tensor, perm: &[usize]) -> OpResult<Tensor> {
    Ok(tensor_map!(x, a => permute_array(a, perm)))
}

/// Transposes into a new row-major array. When the last axis stays last
/// (e.g. [0, 2, 1, 3] in attention heads) whole rows are copied at once.
fn permute_array<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    let r = perm.len();
    let s = a.shape();
    if let (Some(src), true) = (a.as_slice(), r >= 2 && perm[r - 1] == r - 1 && s[r - 1] >= 4) {
        let st = super::util::strides(s);
        let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        let inner = s[r - 1];
        let outer: Vec<usize> = out_shape[..r - 1].to_vec();
        let ost: Vec<usize> = perm[..r - 1].iter().map(|&p| st[p]).collect();
        let mut out = Vec::with_capacity(a.len());
        let rows: usize = outer.iter().product();
        let mut c = vec![0usize; r - 1];
        let mut off = 0usize;
        for _ in 0..rows {
            out.extend_from_slice(&src[off..off + inner]);
            for ax in (0..r - 1).rev() {
                c[ax] += 1;
                off += ost[ax];
                if c[ax] < outer[ax] {
                    break;
                }
                off -= ost[ax] * c[ax];
                c[ax] = 0;
            }
        }
        if let Ok(o) = ArrayD::from_shape_vec(IxDyn(&out_shape), out) {
            return o;
        }
    }
    a.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned()
}

pub fn transpose(inputs: &[Option<&Value>], perm: Option<&[i64]>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => {
            if p.len() != r {
                return Err(invalid(format!("perm {p:?} has wrong length for rank {r}")));
            }
            norm_axes(p, r)?
        }
        None => (0..r).rev().collect(),
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return out(x.clone());
    }
    out(permute(x, &perm)?)
}

pub fn concat(inputs: &[Option<&Value>], axis: i64) -> OpResult<Vec<Value>> {
    let ts: Vec<&Tensor> = (0..inputs.len())
        .map(|i| tensor_in(inputs, i))
        .collect::<OpResult<_>>()?;
    let first = *ts.first().ok_or_else(|| invalid("Concat needs at least one input"))?;
    if let Some(t) = ts.iter().find(|t| t.dtype() != first.dtype()) {
        return Err(invalid(format!(
            "inputs mix dtypes {} and {}",
            first.dtype(),
            t.dtype()
        )));
    }
    let r = first.rank();
    let ax = norm_axis(axis, r)?;
    for t in &ts {
        let s = t.shape();
        if s.len() != r
            || s.iter()
                .zip(first.shape())
                .enumerate()
                .any(|(i, (a, b))| i != ax && a != b)
        {
            return Err(invalid(format!(
                "cannot concat shapes {:?} and {s:?} on axis {ax}",
                first.shape()
            )));
        }
    }
    let total: usize = ts.iter().map(|t| t.shape()[ax]).sum();
    let mut s = first.shape().to_vec();
    s[ax] = total;
    super::util::check_elems(&s)?;
    out(tensor_map!(first, a => {
        let views: Vec<ArrayViewD<_>> = ts.iter().map(|t| same(a, t).map(|x| x.view())).collect::<OpResult<_>>()?;
        concatenate(Axis(ax), &views).map_err(|e| invalid(format!("concat: {e}")))?
    }))
}

pub fn split(
    inputs: &[Option<&Value>],
    axis: i64,
    attr: Option<&[i64]>,
    num_outputs: Option<i64>,
    node_outputs: usize,
) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let ax = norm_axis(axis, x.rank())?;
    let d = x.shape()[ax];
    let given: Option<Vec<i64>> = match attr {
        Some(s) => Some(s.to_vec()),
        None => opt_ints_in(inputs, 1, "split")?,
    };
    let sizes: Vec<usize> = match given {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| invalid(format!("negative split size in {s:?}"))))
            .collect::<OpResult<_>>()?,
        None => {
            let n = node_outputs.max(1);
            if num_outputs.is_some_and(|k| k as usize != n) {
                return Err(invalid(format!(
                    "num_outputs {num_outputs:?} differs from the node's {n} outputs"
                )));
            }
            let chunk = d.div_ceil(n);
            (0..n).map(|i| d.saturating_sub(chunk * i).min(chunk)).collect()
        }
    };
    if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(d) {
        return Err(invalid(format!("split sizes {sizes:?} do not sum to dim {d}")));
    }
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for &n in &sizes {
        let (s, e) = (start as isize, (start + n) as isize);
        outs.push(Value::Tensor(
            tensor_map!(x, a => a.slice_axis(Axis(ax), Slice::from(s..e)).to_owned()),
        ));
        start += n;
    }
    Ok(outs)
}

pub fn slice(
    inputs: &[Option<&Value>],
    starts: Option<&[i64]>,
    ends: Option<&[i64]>,
    axes: Option<&[i64]>,
) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let (starts, ends, axes, steps) = match (starts, ends) {
        (Some(s), Some(e)) => (s.to_vec(), e.to_vec(), axes.map(|a| a.to_vec()), None),
        _ => (
            ints_in(inputs, 1, "starts")?,
            ints_in(inputs, 2, "ends")?,
            opt_ints_in(inputs, 3, "axes")?,
            opt_ints_in(inputs, 4, "steps")?,
        ),
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(invalid("starts, ends, axes and steps must have the same length"));
    }
    let axes = norm_axes(&axes, x.rank())?;
    let mut sl: Vec<Slice> = x.shape().iter().map(|&d| Slice::from(0..d as isize)).collect();
    for (i, &a) in axes.iter().enumerate() {
        let step = steps[i];
        if step == 0 {
            return Err(invalid("slice step must not be 0"));
        }
        let d = x.shape()[a];
        let (first, count) = slice_range(starts[i], ends[i], step, d);
        // A step longer than the dim selects at most one element either way.
        let lim = (d as i64).max(1);
        let step = step.clamp(-lim, lim);
        let st = step as isize;
        sl[a] = if count == 0 {
            Slice::from(0..0)
        } else if step > 0 {
            let last = first + (count as i64 - 1) * step;
            Slice::new(first as isize, Some(last as isize + 1), st)
        } else {
            let last = first + (count as i64 - 1) * step;
            Slice::new(last as isize, Some(first as isize + 1), st)
        };
    }
    out(tensor_map!(x, a => a.slice_each_axis(|ad| sl[ad.axis.index()]).to_owned()))
}

/// Source coordinate for output coordinate `i` of an axis padded by `pre`.
fn pad_source(i: usize, pre: i64, d: usize, mode: PadMode) -> usize {
    let j = (i as i64).saturating_sub(pre);
    let n = d as i64;
    if (0..n).contains(&j) {
        return j as usize;
    }
    if n == 0 {
        return NONE;
    }
    match mode {
        PadMode::Constant => NONE,
        PadMode::Edge => j.clamp(0, n - 1) as usize,
        PadMode::Wrap => j.rem_euclid(n) as usize,
        PadMode::Reflect => {
            if n == 1 {
                return 0;
            }
            let p = 2 * (n - 1);
            let m = j.rem_euclid(p);
            (if m >= n { p - m } else { m }) as usize
        }
    }
}

/// Pads (or, with negative pads, crops) through an index map; `fill` is a
/// scalar tensor of `x`'s dtype.
fn pad_with(x: &Tensor, pads: &[i64], axes: &[usize], mode: PadMode, fill: &Tensor) -> OpResult<Tensor> {
    let shape = x.shape();
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(invalid(format!(
            "pads {pads:?} must have 2 entries per padded axis ({k} axes)"
        )));
    }
    let mut maps = Vec::with_capacity(shape.len());
    for (ax, &d) in shape.iter().enumerate() {
        let (pre, post) = match axes.iter().position(|&a| a == ax) {
            Some(i) => (pads[i], pads[i + k]),
            None => (0, 0),
        };
        let o = (d as i64).checked_add(pre).and_then(|v| v.checked_add(post));
        let o = match o {
            Some(o) if o >= 0 => o as usize,
            _ => {
                return Err(invalid(format!(
                    "pads {pads:?} give a negative size for axis {ax} of extent {d}"
                )))
            }
        };
        if d == 0 && o > 0 && mode != PadMode::Constant {
            return Err(invalid(format!("cannot pad an empty axis {ax} in a non-constant mode")));
        }
        super::util::check_elems(&[o])?;
        maps.push((0..o).map(|i| pad_source(i, pre, d, mode)).collect::<Vec<_>>());
    }
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let idx = compose_maps(&maps, shape)?;
    Ok(tensor_map!(x, a => {
        let f = same(a, fill)?.iter().next().cloned().unwrap_or_default();
        take_map(a, &idx, &f, &out_shape)?
    }))
}

pub fn pad(inputs: &[Option<&Value>], mode: PadMode, attr: Option<&[i64]>, value: f32) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let r = x.rank();
    let (pads, fill) = match attr {
        Some(p) => (p.to_vec(), scalar_of(x.dtype(), value as f64)?),
        None => {
            let pads = ints_in(inputs, 1, "pads")?;
            let fill = match opt_tensor_in(inputs, 2)? {
                Some(v) if !v.is_empty() => {
                    if v.dtype() != x.dtype() {
                        return Err(invalid(format!(
                            "constant_value is {} but data is {}",
                            v.dtype(),
                            x.dtype()
                        )));
                    }
                    v.clone()
                }
                _ => scalar_of(x.dtype(), 0.0)?,
            };
            (pads, fill)
        }
    };
    let axes = match opt_ints_in(inputs, 3, "axes")? {
        Some(a) => norm_axes(&a, r)?,
        None => (0..r).collect(),
    };
    out(pad_with(x, &pads, &axes, mode, &fill)?)
}

pub fn center_crop_pad(inputs: &[Option<&Value>], axes: Option<&[i64]>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let target = ints_in(inputs, 1, "shape")?;
    let r = x.rank();
    let axes = match axes {
        Some(a) => norm_axes(a, r)?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        return Err(invalid(format!(
            "shape {target:?} has {} entries for {} axes",
            target.len(),
            axes.len()
        )));
    }
    let mut maps = Vec::with_capacity(r);
    for (ax, &d) in x.shape().iter().enumerate() {
        let t = match axes.iter().position(|&a| a == ax) {
            Some(i) => {
                usize::try_from(target[i]).map_err(|_| invalid(format!("negative target size {}", target[i])))?
            }
            None => d,
        };
        super::util::check_elems(&[t])?;
        let m: Vec<usize> = if t <= d {
            let start = (d - t) / 2;
            (start..start + t).collect()
        } else {
            let before = (t - d) / 2;
            (0..t)
                .map(|i| {
                    if i >= before && i - before < d {
                        i - before
                    } else {
                        NONE
                    }
                })
                .collect()
        };
        maps.push(m);
    }
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let idx = compose_maps(&maps, x.shape())?;
    out(tensor_map!(x, a => take_map(a, &idx, &Default::default(), &out_shape)?))
}

/// Reshape, permute, reshape: the common form of DepthToSpace/SpaceToDepth.
fn reshape_permute(x: &Tensor, s1: &[usize], perm: &[usize], s2: &[usize]) -> OpResult<Tensor> {
    let t = reshape_t(x, s1)?;
    let p = permute(&t, perm)?;
    reshape_t(&p, s2)
}

fn nchw(x: &Tensor, b: i64) -> OpResult<([usize; 4], usize)> {
    let s = x.shape();
    if s.len() != 4 {
        return Err(invalid(format!("input must have rank 4, got shape {s:?}")));
    }
    let b = usize::try_from(b)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| invalid("blocksize must be positive"))?;
    Ok(([s[0], s[1], s[2], s[3]], b))
}

pub fn depth_to_space(inputs: &[Option<&Value>], blocksize: i64, crd: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let ([n, c, h, w], b) = nchw(x, blocksize)?;
    let bb = b.checked_mul(b).ok_or_else(|| invalid("blocksize too large"))?;
    if c % bb != 0 {
        return Err(invalid(format!("channels {c} not divisible by blocksize^2 = {bb}")));
    }
    let c2 = c / bb;
    let s2 = [n, c2, h * b, w * b];
    out(if crd {
        reshape_permute(x, &[n, c2, b, b, h, w], &[0, 1, 4, 2, 5, 3], &s2)?
    } else {
        reshape_permute(x, &[n, b, b, c2, h, w], &[0, 3, 4, 1, 5, 2], &s2)?
    })
}

pub fn space_to_depth(inputs: &[Option<&Value>], blocksize: i64, crd: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let ([n, c, h, w], b) = nchw(x, blocksize)?;
    if h % b != 0 || w % b != 0 {
        return Err(invalid(format!("spatial dims {h}x{w} not divisible by blocksize {b}")));
    }
    let s2 = [n, c * b * b, h / b, w / b];
    let perm: &[usize] = if crd { &[0, 1, 3, 5, 2, 4] } else { &[0, 3, 5, 1, 2, 4] };
    out(reshape_permute(x, &[n, c, h / b, b, w / b, b], perm, &s2)?)
}

pub fn trilu(inputs: &[Option<&Value>], upper: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let k = match opt_ints_in(inputs, 1, "k")? {
        Some(v) if v.len() == 1 => v[0],
        Some(_) => return Err(invalid("k must be a scalar")),
        None => 0,
    };
    let s = x.shape();
    if s.len() < 2 {
        return Err(invalid(format!("input must have rank >= 2, got shape {s:?}")));
    }
    let (m, n) = (s[s.len() - 2], s[s.len() - 1]);
    out(tensor_map!(x, a => {
        let mut o: ArrayD<_> = a.as_standard_layout().into_owned();
        if let Some(sl) = o.as_slice_mut() {
            if m * n > 0 {
                for chunk in sl.chunks_mut(m * n) {
                    for i in 0..m {
                        for j in 0..n {
                            let diff = j as i64 - i as i64;
                            let keep = if upper { diff >= k } else { diff <= k };
                            if !keep {
                                chunk[i * n + j] = Default::default();
                            }
                        }
                    }
                }
            }
        }
        o
    }))
}

pub fn reverse_sequence(inputs: &[Option<&Value>], batch_axis: i64, time_axis: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let lens = ints_in(inputs, 1, "sequence_lens")?;
    let s = x.shape();
    if s.len() < 2 {
        return Err(invalid(format!("input must have rank >= 2, got shape {s:?}")));
    }
    let (ba, ta) = (batch_axis as usize, time_axis as usize);
    let (nb, nt) = (s[ba], s[ta]);
    if lens.len() != nb {
        return Err(invalid(format!(
            "sequence_lens has {} entries for batch size {nb}",
            lens.len()
        )));
    }
    let lens: Vec<usize> = lens
        .iter()
        .map(|&l| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l <= nt)
                .ok_or_else(|| invalid(format!("bad sequence length {l}")))
        })
        .collect::<OpResult<_>>()?;
    // After removing the batch axis, the time axis index shifts if it came later.
    let ta2 = if ta > ba { ta - 1 } else { ta };
    out(tensor_map!(x, a => {
        let mut o = a.to_owned();
        for (b, &len) in lens.iter().enumerate() {
            let src = a.index_axis(Axis(ba), b);
            let mut dst = o.index_axis_mut(Axis(ba), b);
            for t in 0..len {
                dst.index_axis_mut(Axis(ta2), t).assign(&src.index_axis(Axis(ta2), len - 1 - t));
            }
        }
        o
    }))
}
