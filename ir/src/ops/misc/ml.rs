//! The `ai.onnx.ml` ops: ArrayFeatureExtractor, Binarizer, LabelEncoder and
//! TreeEnsemble (opset 5).

use super::MiscOp;
use crate::error::{IrError, IrResult};
use crate::ops::{InferCtx, ParseCtx};
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType, ValueType};
use crate::DType;
use ndarray::{ArrayD, IxDyn};

/// The keys of a LabelEncoder, by kind (ints of any width are widened).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LabelKeys {
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Strings(Vec<String>),
}

impl LabelKeys {
    pub fn len(&self) -> usize {
        match self {
            LabelKeys::Ints(v) => v.len(),
            LabelKeys::Floats(v) => v.len(),
            LabelKeys::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelEncoderAttrs {
    pub keys: LabelKeys,
    /// Rank-1, one value per key; its dtype is the output dtype.
    pub values: Tensor,
    /// Rank-0, same dtype as `values`: the output for an unknown key.
    pub default: Tensor,
    /// Opset 1 also maps int64 indices back to class names (string output)
    /// with this default.
    pub legacy_default_string: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TreeMode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TreeEnsembleAttrs {
    /// 0 AVERAGE, 1 SUM, 2 MIN, 3 MAX.
    pub aggregate_function: i64,
    /// 0 NONE, 1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO, 4 PROBIT.
    pub post_transform: i64,
    pub n_targets: usize,
    pub tree_roots: Vec<usize>,
    pub nodes_featureids: Vec<usize>,
    pub nodes_modes: Vec<TreeMode>,
    pub nodes_splits: Vec<f64>,
    pub nodes_truenodeids: Vec<usize>,
    pub nodes_falsenodeids: Vec<usize>,
    pub nodes_trueleafs: Vec<bool>,
    pub nodes_falseleafs: Vec<bool>,
    pub nodes_missing_value_tracks_true: Vec<bool>,
    /// The set of each BRANCH_MEMBER node (empty for other nodes).
    pub members: Vec<Vec<f64>>,
    pub nodes_hitrates: Option<Vec<f64>>,
    pub leaf_targetids: Vec<usize>,
    pub leaf_weights: Vec<f64>,
}

/// A rank-0 tensor of a numeric `dtype` holding `v` (cast), or a string.
fn scalar_of(dtype: DType, v: f64) -> Option<Tensor> {
    let s = IxDyn(&[]);
    Some(match dtype {
        DType::F32 => Tensor::F32(ArrayD::from_elem(s, v as f32)),
        DType::F64 => Tensor::F64(ArrayD::from_elem(s, v)),
        DType::F16 => Tensor::F16(ArrayD::from_elem(s, half::f16::from_f64(v))),
        DType::BF16 => Tensor::BF16(ArrayD::from_elem(s, half::bf16::from_f64(v))),
        DType::I8 => Tensor::I8(ArrayD::from_elem(s, v as i8)),
        DType::I16 => Tensor::I16(ArrayD::from_elem(s, v as i16)),
        DType::I32 => Tensor::I32(ArrayD::from_elem(s, v as i32)),
        DType::I64 => Tensor::I64(ArrayD::from_elem(s, v as i64)),
        DType::U8 => Tensor::U8(ArrayD::from_elem(s, v as u8)),
        DType::U16 => Tensor::U16(ArrayD::from_elem(s, v as u16)),
        DType::U32 => Tensor::U32(ArrayD::from_elem(s, v as u32)),
        DType::U64 => Tensor::U64(ArrayD::from_elem(s, v as u64)),
        _ => return None,
    })
}

fn strings_tensor(v: Vec<String>) -> Tensor {
    let n = v.len();
    Tensor::String(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("length matches shape"))
}

fn flat(t: Tensor) -> Tensor {
    let n = t.len();
    t.reshaped(&[n]).unwrap_or(t)
}

fn keys_from_tensor(op: &str, t: &Tensor) -> IrResult<LabelKeys> {
    Ok(match t {
        Tensor::String(a) => LabelKeys::Strings(a.iter().cloned().collect()),
        Tensor::F32(_) | Tensor::F64(_) | Tensor::F16(_) | Tensor::BF16(_) => {
            LabelKeys::Floats(t.to_f64_vec().unwrap_or_default())
        }
        t => match t.to_i64_vec() {
            Some(v) => LabelKeys::Ints(v),
            None => {
                return Err(IrError::bad_attr(
                    op,
                    "keys_tensor",
                    format!("unsupported dtype {}", t.dtype()),
                ))
            }
        },
    })
}

fn parse_label_encoder(cx: &mut ParseCtx) -> IrResult<LabelEncoderAttrs> {
    let op = cx.op_type;
    if cx.opset < 2 {
        let classes = cx.attrs.strings("classes_strings")?.unwrap_or_default();
        let default_int = cx.attrs.int_or("default_int64", -1)?;
        let default_string = cx.attrs.string_or("default_string", "_Unused")?;
        let n = classes.len() as i64;
        return Ok(LabelEncoderAttrs {
            keys: LabelKeys::Strings(classes),
            values: Tensor::from_i64s((0..n).collect()),
            default: Tensor::scalar_i64(default_int),
            legacy_default_string: Some(default_string),
        });
    }
    let kt = if cx.opset >= 4 {
        cx.attrs.tensor("keys_tensor")?
    } else {
        None
    };
    let kf = cx.attrs.floats("keys_floats")?;
    let ki = cx.attrs.ints("keys_int64s")?;
    let ks = cx.attrs.strings("keys_strings")?;
    let keys = match (kt, kf, ki, ks) {
        (Some(t), None, None, None) => keys_from_tensor(op, &t)?,
        (None, Some(f), None, None) => LabelKeys::Floats(f.into_iter().map(f64::from).collect()),
        (None, None, Some(i), None) => LabelKeys::Ints(i),
        (None, None, None, Some(s)) => LabelKeys::Strings(s),
        _ => {
            return Err(IrError::bad_attr(
                op,
                "keys_*",
                "exactly one keys attribute is required",
            ))
        }
    };
    let vt = if cx.opset >= 4 {
        cx.attrs.tensor("values_tensor")?
    } else {
        None
    };
    let vf = cx.attrs.floats("values_floats")?;
    let vi = cx.attrs.ints("values_int64s")?;
    let vs = cx.attrs.strings("values_strings")?;
    let values = match (vt, vf, vi, vs) {
        (Some(t), None, None, None) => flat(t),
        (None, Some(f), None, None) => Tensor::from_f32s(f),
        (None, None, Some(i), None) => Tensor::from_i64s(i),
        (None, None, None, Some(s)) => strings_tensor(s),
        _ => {
            return Err(IrError::bad_attr(
                op,
                "values_*",
                "exactly one values attribute is required",
            ))
        }
    };
    if values.len() != keys.len() {
        return Err(IrError::bad_attr(
            op,
            "values_*",
            format!("{} values for {} keys", values.len(), keys.len()),
        ));
    }
    let dt = if cx.opset >= 4 {
        cx.attrs.tensor("default_tensor")?
    } else {
        None
    };
    let df = cx.attrs.float_or("default_float", -0.0)?;
    let di = cx.attrs.int_or("default_int64", -1)?;
    let ds = cx.attrs.string_or("default_string", "_Unused")?;
    let vd = values.dtype();
    let default = match dt {
        Some(t) => {
            if t.len() != 1 || t.dtype() != vd {
                return Err(IrError::bad_attr(
                    op,
                    "default_tensor",
                    format!("must be one {vd} value"),
                ));
            }
            t.reshaped(&[]).unwrap_or(t)
        }
        None if vd == DType::String => Tensor::String(ArrayD::from_elem(IxDyn(&[]), ds)),
        None if vd.is_float() => scalar_of(vd, df as f64)
            .ok_or_else(|| IrError::bad_attr(op, "values_tensor", format!("unsupported dtype {vd}")))?,
        None => scalar_of(vd, di as f64)
            .ok_or_else(|| IrError::bad_attr(op, "values_tensor", format!("unsupported dtype {vd}")))?,
    };
    Ok(LabelEncoderAttrs {
        keys,
        values,
        default,
        legacy_default_string: None,
    })
}

fn tensor_f64s(op: &str, name: &str, t: Option<Tensor>) -> IrResult<Option<Vec<f64>>> {
    match t {
        None => Ok(None),
        Some(t) => t
            .to_f64_vec()
            .map(Some)
            .ok_or_else(|| IrError::bad_attr(op, name, format!("unsupported dtype {}", t.dtype()))),
    }
}

fn usizes(op: &str, name: &str, v: Vec<i64>) -> IrResult<Vec<usize>> {
    v.into_iter()
        .map(|x| usize::try_from(x).map_err(|_| IrError::bad_attr(op, name, format!("negative value {x}"))))
        .collect()
}

fn parse_tree_ensemble(cx: &mut ParseCtx) -> IrResult<TreeEnsembleAttrs> {
    let op = cx.op_type;
    let aggregate_function = cx.attrs.int_or("aggregate_function", 1)?;
    if !(0..=3).contains(&aggregate_function) {
        return Err(IrError::bad_attr(
            op,
            "aggregate_function",
            format!("unknown value {aggregate_function}"),
        ));
    }
    let post_transform = cx.attrs.int_or("post_transform", 0)?;
    if !(0..=4).contains(&post_transform) {
        return Err(IrError::bad_attr(
            op,
            "post_transform",
            format!("unknown value {post_transform}"),
        ));
    }
    let n_targets = usizes(op, "n_targets", vec![cx.attrs.req_int("n_targets")?])?[0];
    let tree_roots = usizes(op, "tree_roots", cx.attrs.req_ints("tree_roots")?)?;
    let nodes_featureids = usizes(op, "nodes_featureids", cx.attrs.req_ints("nodes_featureids")?)?;
    let modes_t = cx.attrs.req_tensor("nodes_modes")?;
    let nodes_modes = modes_t
        .to_i64_vec()
        .ok_or_else(|| IrError::bad_attr(op, "nodes_modes", "must be an integer tensor"))?
        .into_iter()
        .map(|m| {
            Ok(match m {
                0 => TreeMode::Leq,
                1 => TreeMode::Lt,
                2 => TreeMode::Gte,
                3 => TreeMode::Gt,
                4 => TreeMode::Eq,
                5 => TreeMode::Neq,
                6 => TreeMode::Member,
                m => return Err(IrError::bad_attr(op, "nodes_modes", format!("unknown mode {m}"))),
            })
        })
        .collect::<IrResult<Vec<_>>>()?;
    let nodes_splits = tensor_f64s(op, "nodes_splits", Some(cx.attrs.req_tensor("nodes_splits")?))?.unwrap_or_default();
    let nodes_truenodeids = usizes(op, "nodes_truenodeids", cx.attrs.req_ints("nodes_truenodeids")?)?;
    let nodes_falsenodeids = usizes(op, "nodes_falsenodeids", cx.attrs.req_ints("nodes_falsenodeids")?)?;
    let nodes_trueleafs: Vec<bool> = cx
        .attrs
        .req_ints("nodes_trueleafs")?
        .into_iter()
        .map(|v| v != 0)
        .collect();
    let nodes_falseleafs: Vec<bool> = cx
        .attrs
        .req_ints("nodes_falseleafs")?
        .into_iter()
        .map(|v| v != 0)
        .collect();
    let n = nodes_featureids.len();
    let nodes_missing_value_tracks_true: Vec<bool> = cx
        .attrs
        .ints("nodes_missing_value_tracks_true")?
        .map(|v| v.into_iter().map(|x| x != 0).collect())
        .unwrap_or_else(|| vec![false; n]);
    let nodes_hitrates = tensor_f64s(op, "nodes_hitrates", cx.attrs.tensor("nodes_hitrates")?)?;
    let membership = tensor_f64s(op, "membership_values", cx.attrs.tensor("membership_values")?)?;
    let leaf_targetids = usizes(op, "leaf_targetids", cx.attrs.req_ints("leaf_targetids")?)?;
    let leaf_weights = tensor_f64s(op, "leaf_weights", Some(cx.attrs.req_tensor("leaf_weights")?))?.unwrap_or_default();

    let lens = [
        ("nodes_modes", nodes_modes.len()),
        ("nodes_splits", nodes_splits.len()),
        ("nodes_truenodeids", nodes_truenodeids.len()),
        ("nodes_falsenodeids", nodes_falsenodeids.len()),
        ("nodes_trueleafs", nodes_trueleafs.len()),
        ("nodes_falseleafs", nodes_falseleafs.len()),
        ("nodes_missing_value_tracks_true", nodes_missing_value_tracks_true.len()),
    ];
    for (name, l) in lens {
        if l != n {
            return Err(IrError::bad_attr(
                op,
                name,
                format!("has {l} entries, nodes_featureids has {n}"),
            ));
        }
    }
    if leaf_targetids.len() != leaf_weights.len() {
        return Err(IrError::bad_attr(
            op,
            "leaf_weights",
            "must have one entry per leaf_targetids",
        ));
    }
    if let Some(&t) = leaf_targetids.iter().find(|&&t| t >= n_targets) {
        return Err(IrError::bad_attr(
            op,
            "leaf_targetids",
            format!("target {t} >= n_targets {n_targets}"),
        ));
    }
    let nl = leaf_weights.len();
    for i in 0..n {
        for (id, leaf, name) in [
            (nodes_truenodeids[i], nodes_trueleafs[i], "nodes_truenodeids"),
            (nodes_falsenodeids[i], nodes_falseleafs[i], "nodes_falsenodeids"),
        ] {
            let bound = if leaf { nl } else { n };
            if id >= bound {
                return Err(IrError::bad_attr(
                    op,
                    name,
                    format!("id {id} of node {i} is out of range"),
                ));
            }
        }
    }
    if let Some(&r) = tree_roots.iter().find(|&&r| r >= n) {
        return Err(IrError::bad_attr(op, "tree_roots", format!("root {r} is out of range")));
    }
    // Each BRANCH_MEMBER node, in node order, takes the next NaN-terminated set.
    let mut members = vec![Vec::new(); n];
    let mut it = membership.unwrap_or_default().into_iter();
    for (i, m) in nodes_modes.iter().enumerate() {
        if *m == TreeMode::Member {
            let mut found_end = false;
            for v in it.by_ref() {
                if v.is_nan() {
                    found_end = true;
                    break;
                }
                members[i].push(v);
            }
            if !found_end && members[i].is_empty() {
                return Err(IrError::bad_attr(
                    op,
                    "membership_values",
                    "missing a set for a BRANCH_MEMBER node",
                ));
            }
        }
    }
    Ok(TreeEnsembleAttrs {
        aggregate_function,
        post_transform,
        n_targets,
        tree_roots,
        nodes_featureids,
        nodes_modes,
        nodes_splits,
        nodes_truenodeids,
        nodes_falsenodeids,
        nodes_trueleafs,
        nodes_falseleafs,
        nodes_missing_value_tracks_true,
        members,
        nodes_hitrates,
        leaf_targetids,
        leaf_weights,
    })
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let op = match cx.op_type {
        "ArrayFeatureExtractor" => MiscOp::ArrayFeatureExtractor,
        "Binarizer" => MiscOp::Binarizer {
            threshold: cx.attrs.float_or("threshold", 0.0)?,
        },
        "LabelEncoder" => MiscOp::LabelEncoder(Box::new(parse_label_encoder(cx)?)),
        "TreeEnsemble" => MiscOp::TreeEnsemble(Box::new(parse_tree_ensemble(cx)?)),
        _ => return Ok(None),
    };
    Ok(Some(op))
}

pub(super) fn infer(op: &MiscOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let x = cx.tensor(0)?;
    let t = match op {
        MiscOp::ArrayFeatureExtractor => {
            let n = match cx.const_i64s(1) {
                Some(v) => Dim::Known(v.len()),
                None => match cx.tensor(1)?.concrete_shape() {
                    Some(s) => Dim::Known(s.iter().product()),
                    None => Dim::Unknown,
                },
            };
            let shape = x.shape.as_ref().map(|s| match s.len() {
                0 | 1 => vec![Dim::Known(1), n],
                r => {
                    let mut o = s[..r - 1].to_vec();
                    o.push(n);
                    o
                }
            });
            TensorType { dtype: x.dtype, shape }
        }
        MiscOp::Binarizer { .. } => x,
        MiscOp::LabelEncoder(a) => {
            let dtype = match (&a.legacy_default_string, x.dtype) {
                (Some(_), Some(DType::I64)) => DType::String,
                _ => a.values.dtype(),
            };
            TensorType {
                dtype: Some(dtype),
                shape: x.shape,
            }
        }
        MiscOp::TreeEnsemble(a) => {
            let n = match &x.shape {
                Some(s) if s.len() == 2 => s[0].clone(),
                Some(s) if s.len() == 1 => Dim::Known(1),
                _ => Dim::Unknown,
            };
            TensorType {
                dtype: x.dtype,
                shape: Some(vec![n, Dim::Known(a.n_targets)]),
            }
        }
        _ => return Err(cx.err("not an ai.onnx.ml op")),
    };
    Ok(vec![ValueType::Tensor(t)])
}
