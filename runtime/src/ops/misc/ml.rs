//! Kernels of the `ai.onnx.ml` ops.

use super::{f64s, from_f64s};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, tensor_in, tensors_out};
use carbide_ir::ops::misc::{LabelEncoderAttrs, LabelKeys, TreeEnsembleAttrs, TreeMode};
use carbide_ir::ops::MiscOp;
use carbide_ir::{tensor_map, tensor_zip_map, DType, Tensor, Value};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// Gathers `idx` along the last axis of `a` (rank >= 1) into `oshape`.
fn gather_last<T: Clone>(a: &ArrayD<T>, idx: &[usize], oshape: &[usize]) -> OpResult<ArrayD<T>> {
    let a = a.as_standard_layout();
    let s = a.as_slice().ok_or_else(|| invalid("internal: non-contiguous array"))?;
    let f = a.shape().last().copied().unwrap_or(1).max(1);
    let mut out = Vec::with_capacity(s.len() / f * idx.len());
    for row in s.chunks(f) {
        out.extend(idx.iter().map(|&i| row[i].clone()));
    }
    ArrayD::from_shape_vec(IxDyn(oshape), out).map_err(|_| invalid("internal: shape mismatch"))
}

fn array_feature_extractor(x: &Tensor, y: &Tensor) -> OpResult<Tensor> {
    let idx = y
        .to_i64_vec()
        .ok_or_else(|| invalid(format!("indices must be integers, got {}", y.dtype())))?;
    let xs = x.shape();
    let f = xs.last().copied().unwrap_or(1);
    let idx = idx
        .into_iter()
        .map(|i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < f)
                .ok_or_else(|| invalid(format!("index {i} out of range for last dim {f}")))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let oshape: Vec<usize> = if xs.len() <= 1 {
        vec![1, idx.len()]
    } else {
        let mut o = xs[..xs.len() - 1].to_vec();
        o.push(idx.len());
        o
    };
    super::check_elems(&oshape)?;
    if x.is_empty() && !idx.is_empty() {
        return Err(invalid("cannot extract features from an empty tensor"));
    }
    Ok(tensor_map!(x, a => gather_last(a, &idx, &oshape)?))
}

fn binarizer(x: &Tensor, th: f32) -> OpResult<Tensor> {
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(a.mapv(|v| if v > th { 1.0 } else { 0.0 })),
        Tensor::F64(a) => Tensor::F64(a.mapv(|v| if v > th as f64 { 1.0 } else { 0.0 })),
        Tensor::I64(a) => Tensor::I64(a.mapv(|v| i64::from(v as f64 > th as f64))),
        Tensor::I32(a) => Tensor::I32(a.mapv(|v| i32::from(v as f64 > th as f64))),
        t => return Err(dtype_unsupported("Binarizer", t)),
    })
}

/// Float keys compare by value, with all NaNs equal and -0 == +0.
fn float_key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

fn pick<T: Clone>(vals: &ArrayD<T>, def: &ArrayD<T>, hits: &[Option<usize>], shape: &[usize]) -> OpResult<ArrayD<T>> {
    let d = def
        .iter()
        .next()
        .cloned()
        .ok_or_else(|| invalid("internal: empty default"))?;
    let v: Vec<T> = vals.iter().cloned().collect();
    let out: Vec<T> = hits
        .iter()
        .map(|h| h.and_then(|i| v.get(i).cloned()).unwrap_or_else(|| d.clone()))
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|_| invalid("internal: shape mismatch"))
}

fn label_encoder(a: &LabelEncoderAttrs, x: &Tensor) -> OpResult<Tensor> {
    // Opset 1's reverse direction: int64 index -> class name.
    if let (Some(ds), LabelKeys::Strings(classes), Tensor::I64(xa)) = (&a.legacy_default_string, &a.keys, x) {
        return Ok(Tensor::String(xa.map(|&i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| classes.get(i))
                .cloned()
                .unwrap_or_else(|| ds.clone())
        })));
    }
    let hits: Vec<Option<usize>> = match (&a.keys, x) {
        (LabelKeys::Strings(k), Tensor::String(xa)) => {
            let m: HashMap<&str, usize> = k.iter().enumerate().rev().map(|(i, s)| (s.as_str(), i)).collect();
            xa.iter().map(|s| m.get(s.as_str()).copied()).collect()
        }
        (LabelKeys::Ints(k), x) if x.dtype().is_int() && !x.dtype().is_small() => {
            let m: HashMap<i64, usize> = k.iter().enumerate().rev().map(|(i, &v)| (v, i)).collect();
            x.to_i64_vec()
                .unwrap_or_default()
                .iter()
                .map(|v| m.get(v).copied())
                .collect()
        }
        (LabelKeys::Floats(k), x) if matches!(x.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16) => {
            let m: HashMap<u64, usize> = k.iter().enumerate().rev().map(|(i, &v)| (float_key(v), i)).collect();
            f64s(x)
                .unwrap_or_default()
                .iter()
                .map(|&v| m.get(&float_key(v)).copied())
                .collect()
        }
        (_, x) => {
            return Err(invalid(format!(
                "LabelEncoder keys do not match input dtype {}",
                x.dtype()
            )))
        }
    };
    let shape = x.shape();
    tensor_zip_map!(&a.values, &a.default, (v, d) => pick(v, d, &hits, shape)?)
        .ok_or_else(|| invalid("LabelEncoder default has a different dtype from its values"))
}

/// Inverse error function (Giles' single-precision approximation).
fn erfinv(x: f64) -> f64 {
    let w = -((1.0 - x) * (1.0 + x)).ln();
    let p = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p
    };
    p * x
}

fn tree_ensemble(a: &TreeEnsembleAttrs, x: &Tensor) -> OpResult<Tensor> {
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(dtype_unsupported("TreeEnsemble", x));
    }
    let xv = f64s(x).ok_or_else(|| dtype_unsupported("TreeEnsemble", x))?;
    let (n, f) = match x.shape() {
        [n, f] => (*n, *f),
        [f] => (1, *f),
        s => return Err(invalid(format!("X must be [N, F], got {s:?}"))),
    };
    if let Some(&bad) = a.nodes_featureids.iter().find(|&&i| i >= f) {
        return Err(invalid(format!("feature id {bad} out of range for {f} features")));
    }
    let nt = a.n_targets;
    let nodes = a.nodes_modes.len();
    let ntrees = a.tree_roots.len();
    let big = if dtype == DType::F64 { f64::MAX } else { f32::MAX as f64 };
    let init = match a.aggregate_function {
        2 => big,
        3 => -big,
        _ => 0.0,
    };
    super::check_elems(&[n, nt])?;
    let mut out = vec![init; n * nt];
    for row in 0..n {
        let xr = &xv[row * f..(row + 1) * f];
        for &root in &a.tree_roots {
            let degenerate = a.nodes_trueleafs[root]
                && a.nodes_falseleafs[root]
                && a.nodes_truenodeids[root] == a.nodes_falsenodeids[root];
            let leaf = if degenerate {
                root
            } else {
                let mut node = root;
                let mut steps = 0;
                loop {
                    steps += 1;
                    if steps > nodes {
                        return Err(invalid("tree has a cycle"));
                    }
                    let v = xr[a.nodes_featureids[node]];
                    let s = a.nodes_splits[node];
                    let cond = match a.nodes_modes[node] {
                        TreeMode::Leq => v <= s,
                        TreeMode::Lt => v < s,
                        TreeMode::Gte => v >= s,
                        TreeMode::Gt => v > s,
                        TreeMode::Eq => v == s,
                        TreeMode::Neq => v != s,
                        TreeMode::Member => a.members[node].contains(&v),
                    } || (a.nodes_missing_value_tracks_true[node] && v.is_nan());
                    let (next, is_leaf) = if cond {
                        (a.nodes_truenodeids[node], a.nodes_trueleafs[node])
                    } else {
                        (a.nodes_falsenodeids[node], a.nodes_falseleafs[node])
                    };
                    if is_leaf {
                        break next;
                    }
                    node = next;
                }
            };
            let (Some(&w), Some(&t)) = (a.leaf_weights.get(leaf), a.leaf_targetids.get(leaf)) else {
                return Err(invalid(format!("leaf {leaf} out of range")));
            };
            let o = &mut out[row * nt + t];
            match a.aggregate_function {
                0 => *o += w / ntrees as f64,
                1 => *o += w,
                2 => *o = o.min(w),
                _ => *o = o.max(w),
            }
        }
    }
    match a.post_transform {
        1 | 3 => {
            for row in out.chunks_mut(nt.max(1)) {
                let zero = a.post_transform == 3;
                let mx = row
                    .iter()
                    .filter(|v| !zero || **v != 0.0)
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    if !(zero && *v == 0.0) {
                        *v = (*v - mx).exp();
                        sum += *v;
                    }
                }
                if sum > 0.0 {
                    for v in row.iter_mut() {
                        *v /= sum;
                    }
                }
            }
        }
        2 => out.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        4 => out
            .iter_mut()
            .for_each(|v| *v = std::f64::consts::SQRT_2 * erfinv(2.0 * *v - 1.0)),
        _ => {}
    }
    from_f64s(dtype, &[n, nt], out)
}

pub(super) fn eval(op: &MiscOp, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let t = match op {
        MiscOp::ArrayFeatureExtractor => array_feature_extractor(x, tensor_in(inputs, 1)?)?,
        MiscOp::Binarizer { threshold } => binarizer(x, *threshold)?,
        MiscOp::LabelEncoder(a) => label_encoder(a, x)?,
        MiscOp::TreeEnsemble(a) => tree_ensemble(a, x)?,
        _ => return Err(invalid("not an ai.onnx.ml op")),
    };
    Ok(tensors_out(vec![t]))
}
