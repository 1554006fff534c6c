//! The misc op family: recurrent nets, signal processing, strings, random
//! generators, training optimizers (`ai.onnx.preview.training`) and the
//! classic-ML ops of `ai.onnx.ml`. Each group lives in its own submodule with
//! its typed attributes, parser and shape inference.

use super::{InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::types::ValueType;
use crate::DType;

pub mod ml;
pub mod random;
pub mod rnn;
pub mod signal;
pub mod text;
pub mod training;

pub use ml::{LabelEncoderAttrs, LabelKeys, TreeEnsembleAttrs, TreeMode};
pub use random::{RandomAttrs, RandomKind};
pub use rnn::{Activation, RnnAttrs, RnnDirection, RnnKind};
pub use signal::{DftAttrs, WindowAttrs, WindowKind};
pub use text::{CaseChange, StringNormalizerAttrs, TfIdfAttrs, TfIdfMode, TfIdfPool};
pub use training::{AdagradAttrs, AdamAttrs, MomentumAttrs};

/// The default-domain name, the ML domain and the training domain.
pub const ML_DOMAIN: &str = "ai.onnx.ml";
pub const TRAINING_DOMAIN: &str = "ai.onnx.preview.training";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MiscOp {
    /// RNN, GRU and LSTM share one attribute set (see [`RnnKind`]).
    Rnn(Box<RnnAttrs>),
    Dft(DftAttrs),
    /// STFT: `onesided`.
    Stft {
        onesided: bool,
    },
    Window(WindowAttrs),
    MelWeightMatrix {
        output_datatype: DType,
    },
    StringNormalizer(Box<StringNormalizerAttrs>),
    StringConcat,
    StringSplit {
        delimiter: Option<String>,
        maxsplit: Option<i64>,
    },
    RegexFullMatch {
        pattern: String,
    },
    TfIdfVectorizer(Box<TfIdfAttrs>),
    Random(RandomAttrs),
    Multinomial {
        dtype: DType,
        sample_size: i64,
        seed: Option<f32>,
    },
    Bernoulli {
        dtype: Option<DType>,
        seed: Option<f32>,
    },
    Adagrad(AdagradAttrs),
    Adam(Box<AdamAttrs>),
    Momentum(MomentumAttrs),
    ArrayFeatureExtractor,
    Binarizer {
        threshold: f32,
    },
    LabelEncoder(Box<LabelEncoderAttrs>),
    TreeEnsemble(Box<TreeEnsembleAttrs>),
}

/// Reads a dtype-code attribute (`dtype`, `output_datatype`).
pub(crate) fn dtype_attr(cx: &mut ParseCtx, name: &str) -> IrResult<Option<DType>> {
    match cx.attrs.int(name)? {
        None => Ok(None),
        Some(code) => i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx_code)
            .map(Some)
            .ok_or_else(|| IrError::bad_attr(cx.op_type, name, format!("unknown dtype code {code}"))),
    }
}

impl MiscOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        let op = match cx.domain {
            "" | "ai.onnx" => {
                if let Some(op) = rnn::parse(cx)? {
                    op
                } else if let Some(op) = signal::parse(cx)? {
                    op
                } else if let Some(op) = text::parse(cx)? {
                    op
                } else if let Some(op) = random::parse(cx)? {
                    op
                } else {
                    return Ok(None);
                }
            }
            TRAINING_DOMAIN => match training::parse(cx)? {
                Some(op) => op,
                None => return Ok(None),
            },
            ML_DOMAIN => match ml::parse(cx)? {
                Some(op) => op,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(op))
    }
}

impl OpKind for MiscOp {
    fn op_type(&self) -> &'static str {
        match self {
            MiscOp::Rnn(a) => a.kind.op_type(),
            MiscOp::Dft(_) => "DFT",
            MiscOp::Stft { .. } => "STFT",
            MiscOp::Window(w) => w.kind.op_type(),
            MiscOp::MelWeightMatrix { .. } => "MelWeightMatrix",
            MiscOp::StringNormalizer(_) => "StringNormalizer",
            MiscOp::StringConcat => "StringConcat",
            MiscOp::StringSplit { .. } => "StringSplit",
            MiscOp::RegexFullMatch { .. } => "RegexFullMatch",
            MiscOp::TfIdfVectorizer(_) => "TfIdfVectorizer",
            MiscOp::Random(r) => r.kind.op_type(),
            MiscOp::Multinomial { .. } => "Multinomial",
            MiscOp::Bernoulli { .. } => "Bernoulli",
            MiscOp::Adagrad(_) => "Adagrad",
            MiscOp::Adam(_) => "Adam",
            MiscOp::Momentum(_) => "Momentum",
            MiscOp::ArrayFeatureExtractor => "ArrayFeatureExtractor",
            MiscOp::Binarizer { .. } => "Binarizer",
            MiscOp::LabelEncoder(_) => "LabelEncoder",
            MiscOp::TreeEnsemble(_) => "TreeEnsemble",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        match self {
            MiscOp::Rnn(a) => rnn::infer(a, cx),
            MiscOp::Dft(_) | MiscOp::Stft { .. } | MiscOp::Window(_) | MiscOp::MelWeightMatrix { .. } => {
                signal::infer(self, cx)
            }
            MiscOp::StringNormalizer(_)
            | MiscOp::StringConcat
            | MiscOp::StringSplit { .. }
            | MiscOp::RegexFullMatch { .. }
            | MiscOp::TfIdfVectorizer(_) => text::infer(self, cx),
            MiscOp::Random(_) | MiscOp::Multinomial { .. } | MiscOp::Bernoulli { .. } => random::infer(self, cx),
            MiscOp::Adagrad(_) | MiscOp::Adam(_) | MiscOp::Momentum(_) => training::infer(self, cx),
            MiscOp::ArrayFeatureExtractor
            | MiscOp::Binarizer { .. }
            | MiscOp::LabelEncoder(_)
            | MiscOp::TreeEnsemble(_) => ml::infer(self, cx),
        }
    }
}
