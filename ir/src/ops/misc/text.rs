//! String ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch
//! and TfIdfVectorizer (n-gram counting over int or string tokens).

use super::MiscOp;
use crate::error::{IrError, IrResult};
use crate::ops::{broadcast_types, InferCtx, ParseCtx};
use crate::types::{Dim, TensorType, ValueType};
use crate::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CaseChange {
    Lower,
    Upper,
    None,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StringNormalizerAttrs {
    pub case_change: CaseChange,
    pub case_sensitive: bool,
    /// Kept for completeness; case mapping is Unicode's, locale-independent.
    pub locale: Option<String>,
    pub stopwords: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TfIdfMode {
    Tf,
    Idf,
    TfIdf,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TfIdfPool {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl TfIdfPool {
    pub fn len(&self) -> usize {
        match self {
            TfIdfPool::Ints(v) => v.len(),
            TfIdfPool::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TfIdfAttrs {
    pub max_gram_length: usize,
    pub min_gram_length: usize,
    pub max_skip_count: usize,
    pub mode: TfIdfMode,
    /// Start offset in the pool of the n-grams of each size (1, 2, ...).
    pub ngram_counts: Vec<usize>,
    /// Output column of each n-gram, in pool order.
    pub ngram_indexes: Vec<usize>,
    pub pool: TfIdfPool,
    pub weights: Option<Vec<f32>>,
}

impl TfIdfAttrs {
    pub fn output_size(&self) -> usize {
        self.ngram_indexes.iter().max().map(|m| m + 1).unwrap_or(0)
    }
}

fn nonneg(op: &str, name: &str, v: i64) -> IrResult<usize> {
    usize::try_from(v).map_err(|_| IrError::bad_attr(op, name, format!("must be non-negative, got {v}")))
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let op = cx.op_type;
    let out = match op {
        "StringNormalizer" => {
            let case_change = match cx.attrs.string_or("case_change_action", "NONE")?.as_str() {
                "LOWER" => CaseChange::Lower,
                "UPPER" => CaseChange::Upper,
                "NONE" => CaseChange::None,
                s => {
                    return Err(IrError::bad_attr(
                        op,
                        "case_change_action",
                        format!("unknown action '{s}'"),
                    ))
                }
            };
            MiscOp::StringNormalizer(Box::new(StringNormalizerAttrs {
                case_change,
                case_sensitive: cx.attrs.int_or("is_case_sensitive", 0)? != 0,
                locale: cx.attrs.string("locale")?,
                stopwords: cx.attrs.strings("stopwords")?.unwrap_or_default(),
            }))
        }
        "StringConcat" => MiscOp::StringConcat,
        "StringSplit" => {
            let maxsplit = cx.attrs.int("maxsplit")?;
            if let Some(m) = maxsplit {
                if m < 0 {
                    return Err(IrError::bad_attr(
                        op,
                        "maxsplit",
                        format!("must be non-negative, got {m}"),
                    ));
                }
            }
            MiscOp::StringSplit {
                delimiter: cx.attrs.string("delimiter")?,
                maxsplit,
            }
        }
        "RegexFullMatch" => MiscOp::RegexFullMatch {
            pattern: cx.attrs.req_string("pattern")?,
        },
        "TfIdfVectorizer" => {
            let max_gram_length = nonneg(op, "max_gram_length", cx.attrs.req_int("max_gram_length")?)?;
            let min_gram_length = nonneg(op, "min_gram_length", cx.attrs.req_int("min_gram_length")?)?;
            let max_skip_count = nonneg(op, "max_skip_count", cx.attrs.req_int("max_skip_count")?)?;
            if min_gram_length == 0 || min_gram_length > max_gram_length {
                return Err(IrError::bad_attr(
                    op,
                    "min_gram_length",
                    format!("need 1 <= min_gram_length ({min_gram_length}) <= max_gram_length ({max_gram_length})"),
                ));
            }
            let mode = match cx.attrs.req_string("mode")?.as_str() {
                "TF" => TfIdfMode::Tf,
                "IDF" => TfIdfMode::Idf,
                "TFIDF" => TfIdfMode::TfIdf,
                m => return Err(IrError::bad_attr(op, "mode", format!("unknown mode '{m}'"))),
            };
            let ngram_counts = cx
                .attrs
                .req_ints("ngram_counts")?
                .into_iter()
                .map(|v| nonneg(op, "ngram_counts", v))
                .collect::<IrResult<Vec<_>>>()?;
            let ngram_indexes = cx
                .attrs
                .req_ints("ngram_indexes")?
                .into_iter()
                .map(|v| nonneg(op, "ngram_indexes", v))
                .collect::<IrResult<Vec<_>>>()?;
            let pool = match (cx.attrs.ints("pool_int64s")?, cx.attrs.strings("pool_strings")?) {
                (Some(i), None) => TfIdfPool::Ints(i),
                (None, Some(s)) => TfIdfPool::Strings(s),
                _ => {
                    return Err(IrError::bad_attr(
                        op,
                        "pool_int64s",
                        "exactly one of pool_int64s and pool_strings is required",
                    ))
                }
            };
            if ngram_counts.windows(2).any(|w| w[0] > w[1]) || ngram_counts.iter().any(|&c| c > pool.len()) {
                return Err(IrError::bad_attr(
                    op,
                    "ngram_counts",
                    "offsets must be ascending and within the pool",
                ));
            }
            let weights = cx.attrs.floats("weights")?;
            if let Some(w) = &weights {
                let n = ngram_indexes.iter().max().map(|m| m + 1).unwrap_or(0);
                if w.len() < n {
                    return Err(IrError::bad_attr(
                        op,
                        "weights",
                        format!("need {n} weights, got {}", w.len()),
                    ));
                }
            }
            MiscOp::TfIdfVectorizer(Box::new(TfIdfAttrs {
                max_gram_length,
                min_gram_length,
                max_skip_count,
                mode,
                ngram_counts,
                ngram_indexes,
                pool,
                weights,
            }))
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

fn want_string(cx: &InferCtx, t: &TensorType, i: usize) -> IrResult<()> {
    match t.dtype {
        Some(d) if d != DType::String => Err(cx.err(format!("input {i} must be string, got {d}"))),
        _ => Ok(()),
    }
}

pub(super) fn infer(op: &MiscOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let x = cx.tensor(0)?;
    let outs = match op {
        MiscOp::StringNormalizer(_) => {
            want_string(cx, &x, 0)?;
            let shape = match &x.shape {
                Some(s) if s.len() == 1 => Some(vec![Dim::Unknown]),
                Some(s) if s.len() == 2 => Some(vec![s[0].clone(), Dim::Unknown]),
                Some(s) => return Err(cx.err(format!("input must have rank 1 or 2, got {}", s.len()))),
                None => None,
            };
            vec![TensorType {
                dtype: Some(DType::String),
                shape,
            }]
        }
        MiscOp::StringConcat => {
            let y = cx.tensor(1)?;
            want_string(cx, &x, 0)?;
            want_string(cx, &y, 1)?;
            vec![broadcast_types(cx.op, &[x, y], Some(DType::String))?]
        }
        MiscOp::StringSplit { .. } => {
            want_string(cx, &x, 0)?;
            let sub = x.shape.as_ref().map(|s| {
                let mut s = s.clone();
                s.push(Dim::Unknown);
                s
            });
            vec![
                TensorType {
                    dtype: Some(DType::String),
                    shape: sub,
                },
                TensorType {
                    dtype: Some(DType::I64),
                    shape: x.shape.clone(),
                },
            ]
        }
        MiscOp::RegexFullMatch { .. } => {
            want_string(cx, &x, 0)?;
            vec![TensorType {
                dtype: Some(DType::Bool),
                shape: x.shape.clone(),
            }]
        }
        MiscOp::TfIdfVectorizer(a) => {
            let n = Dim::Known(a.output_size());
            let shape = match &x.shape {
                Some(s) if s.len() <= 1 => Some(vec![n]),
                Some(s) if s.len() == 2 => Some(vec![s[0].clone(), n]),
                Some(s) => return Err(cx.err(format!("input must have rank 1 or 2, got {}", s.len()))),
                None => None,
            };
            vec![TensorType {
                dtype: Some(DType::F32),
                shape,
            }]
        }
        _ => return Err(cx.err("not a string op")),
    };
    Ok(outs.into_iter().map(ValueType::Tensor).collect())
}
