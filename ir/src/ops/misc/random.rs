//! Random generators: RandomNormal/Uniform(+Like), Multinomial, Bernoulli.

use super::{dtype_attr, MiscOp};
use crate::error::{IrError, IrResult};
use crate::ops::{InferCtx, ParseCtx};
use crate::types::{shape_of, Dim, TensorType, ValueType};
use crate::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RandomKind {
    Normal,
    Uniform,
    NormalLike,
    UniformLike,
}

impl RandomKind {
    pub fn op_type(self) -> &'static str {
        match self {
            RandomKind::Normal => "RandomNormal",
            RandomKind::Uniform => "RandomUniform",
            RandomKind::NormalLike => "RandomNormalLike",
            RandomKind::UniformLike => "RandomUniformLike",
        }
    }

    pub fn is_normal(self) -> bool {
        matches!(self, RandomKind::Normal | RandomKind::NormalLike)
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomAttrs {
    pub kind: RandomKind,
    /// `None` for the *Like ops without `dtype`: the input's dtype.
    pub dtype: Option<DType>,
    /// mean (normal) or low (uniform).
    pub a: f32,
    /// scale (normal) or high (uniform).
    pub b: f32,
    pub seed: Option<f32>,
    /// Output shape of RandomNormal/RandomUniform.
    pub shape: Option<Vec<usize>>,
}

fn float_dtype(op: &str, name: &str, d: Option<DType>) -> IrResult<Option<DType>> {
    match d {
        Some(d) if !matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16) => {
            Err(IrError::bad_attr(op, name, format!("must be a float dtype, got {d}")))
        }
        d => Ok(d),
    }
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let op = cx.op_type;
    let out = match op {
        "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike" => {
            let kind = match op {
                "RandomNormal" => RandomKind::Normal,
                "RandomUniform" => RandomKind::Uniform,
                "RandomNormalLike" => RandomKind::NormalLike,
                _ => RandomKind::UniformLike,
            };
            let dtype = float_dtype(op, "dtype", dtype_attr(cx, "dtype")?)?;
            let (a, b) = if kind.is_normal() {
                (cx.attrs.float_or("mean", 0.0)?, cx.attrs.float_or("scale", 1.0)?)
            } else {
                (cx.attrs.float_or("low", 0.0)?, cx.attrs.float_or("high", 1.0)?)
            };
            let seed = cx.attrs.float("seed")?;
            let shape = if matches!(kind, RandomKind::Normal | RandomKind::Uniform) {
                let s = cx.attrs.req_ints("shape")?;
                let s = s
                    .iter()
                    .map(|&d| {
                        usize::try_from(d).map_err(|_| IrError::bad_attr(op, "shape", format!("negative dim {d}")))
                    })
                    .collect::<IrResult<Vec<_>>>()?;
                Some(s)
            } else {
                None
            };
            MiscOp::Random(RandomAttrs {
                kind,
                dtype: if shape.is_some() {
                    Some(dtype.unwrap_or(DType::F32))
                } else {
                    dtype
                },
                a,
                b,
                seed,
                shape,
            })
        }
        "Multinomial" => {
            let dtype = dtype_attr(cx, "dtype")?.unwrap_or(DType::I32);
            if !matches!(dtype, DType::I32 | DType::I64) {
                return Err(IrError::bad_attr(
                    op,
                    "dtype",
                    format!("must be int32 or int64, got {dtype}"),
                ));
            }
            let sample_size = cx.attrs.int_or("sample_size", 1)?;
            if sample_size < 1 {
                return Err(IrError::bad_attr(
                    op,
                    "sample_size",
                    format!("must be positive, got {sample_size}"),
                ));
            }
            MiscOp::Multinomial {
                dtype,
                sample_size,
                seed: cx.attrs.float("seed")?,
            }
        }
        "Bernoulli" => {
            let dtype = dtype_attr(cx, "dtype")?;
            if let Some(d) = dtype {
                if d == DType::String || d.is_small() || matches!(d, DType::Complex64 | DType::Complex128) {
                    return Err(IrError::bad_attr(op, "dtype", format!("unsupported output dtype {d}")));
                }
            }
            MiscOp::Bernoulli {
                dtype,
                seed: cx.attrs.float("seed")?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

pub(super) fn infer(op: &MiscOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let t = match op {
        MiscOp::Random(a) => match &a.shape {
            Some(s) => TensorType::new(a.dtype.unwrap_or(DType::F32), shape_of(s)),
            None => {
                let x = cx.tensor(0)?;
                TensorType {
                    dtype: a.dtype.or(x.dtype),
                    shape: x.shape,
                }
            }
        },
        MiscOp::Multinomial { dtype, sample_size, .. } => {
            let x = cx.tensor(0)?;
            let batch = match &x.shape {
                Some(s) if s.len() == 2 => s[0].clone(),
                Some(s) => return Err(cx.err(format!("input must have rank 2, got {}", s.len()))),
                None => Dim::Unknown,
            };
            TensorType::new(*dtype, vec![batch, Dim::Known(*sample_size as usize)])
        }
        MiscOp::Bernoulli { dtype, .. } => {
            let x = cx.tensor(0)?;
            TensorType {
                dtype: dtype.or(x.dtype),
                shape: x.shape,
            }
        }
        _ => return Err(cx.err("not a random op")),
    };
    Ok(vec![ValueType::Tensor(t)])
}
