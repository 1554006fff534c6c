//! RNN, GRU and LSTM: one attribute set; the kind picks the gate layout.

use super::MiscOp;
use crate::error::{IrError, IrResult};
use crate::ops::{InferCtx, ParseCtx};
use crate::types::{Dim, ValueType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RnnKind {
    Rnn,
    Gru,
    Lstm,
}

impl RnnKind {
    pub fn op_type(self) -> &'static str {
        match self {
            RnnKind::Rnn => "RNN",
            RnnKind::Gru => "GRU",
            RnnKind::Lstm => "LSTM",
        }
    }

    /// Number of gates stacked in W and R.
    pub fn gates(self) -> usize {
        match self {
            RnnKind::Rnn => 1,
            RnnKind::Gru => 3,
            RnnKind::Lstm => 4,
        }
    }

    /// Number of activation functions one direction uses.
    pub fn num_activations(self) -> usize {
        match self {
            RnnKind::Rnn => 1,
            RnnKind::Gru => 2,
            RnnKind::Lstm => 3,
        }
    }

    fn default_activations(self) -> &'static [&'static str] {
        match self {
            RnnKind::Rnn => &["Tanh"],
            RnnKind::Gru => &["Sigmoid", "Tanh"],
            RnnKind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RnnDirection {
    Forward,
    Reverse,
    Bidirectional,
}

impl RnnDirection {
    pub fn num_directions(self) -> usize {
        if self == RnnDirection::Bidirectional {
            2
        } else {
            1
        }
    }
}

/// An activation function of a recurrent cell, with its parameters resolved.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
}

impl Activation {
    /// Builds an activation by (case-insensitive) name, taking alpha/beta from
    /// the iterators when the function has such a parameter (ONNX lists them
    /// in order for the functions that use them).
    fn from_name(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> Option<Activation> {
        let mut a = |d: f32| alphas.next().unwrap_or(d);
        Some(match name.to_ascii_lowercase().as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "affine" => Activation::Affine {
                alpha: a(1.0),
                beta: betas.next().unwrap_or(0.0),
            },
            "leakyrelu" => Activation::LeakyRelu { alpha: a(0.01) },
            "thresholdedrelu" => Activation::ThresholdedRelu { alpha: a(1.0) },
            "scaledtanh" => Activation::ScaledTanh {
                alpha: a(1.0),
                beta: betas.next().unwrap_or(1.0),
            },
            "hardsigmoid" => Activation::HardSigmoid {
                alpha: a(0.2),
                beta: betas.next().unwrap_or(0.5),
            },
            "elu" => Activation::Elu { alpha: a(1.0) },
            "softsign" => Activation::Softsign,
            "softplus" => Activation::Softplus,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RnnAttrs {
    pub kind: RnnKind,
    /// `None` when the attribute is absent: the kernel reads it off R.
    pub hidden_size: Option<usize>,
    pub direction: RnnDirection,
    /// `num_activations()` functions per direction, forward direction first.
    pub activations: Vec<Activation>,
    pub clip: Option<f32>,
    /// 0: [seq, batch, ...]; 1: [batch, seq, ...] (opset 14+).
    pub layout: i64,
    /// GRU only.
    pub linear_before_reset: bool,
    /// LSTM only: couple the input and forget gates.
    pub input_forget: bool,
    /// Opset 1 only; outputs are driven by the node's output slots anyway.
    pub output_sequence: bool,
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let kind = match cx.op_type {
        "RNN" => RnnKind::Rnn,
        "GRU" => RnnKind::Gru,
        "LSTM" => RnnKind::Lstm,
        _ => return Ok(None),
    };
    let op = cx.op_type;
    let hidden_size = match cx.attrs.int("hidden_size")? {
        None => None,
        Some(h) if h > 0 => Some(h as usize),
        Some(h) => {
            return Err(IrError::bad_attr(
                op,
                "hidden_size",
                format!("must be positive, got {h}"),
            ))
        }
    };
    let direction = match cx.attrs.string_or("direction", "forward")?.as_str() {
        "forward" => RnnDirection::Forward,
        "reverse" => RnnDirection::Reverse,
        "bidirectional" => RnnDirection::Bidirectional,
        d => return Err(IrError::bad_attr(op, "direction", format!("unknown direction '{d}'"))),
    };
    let alphas = cx.attrs.floats("activation_alpha")?.unwrap_or_default();
    let betas = cx.attrs.floats("activation_beta")?.unwrap_or_default();
    let names = cx.attrs.strings("activations")?;
    let per_dir = kind.num_activations();
    let dirs = direction.num_directions();
    let names: Vec<String> = match names {
        None => {
            let d: Vec<String> = kind.default_activations().iter().map(|s| s.to_string()).collect();
            d.iter().cycle().take(per_dir * dirs).cloned().collect()
        }
        // A bidirectional node listing one direction's functions uses them for both.
        Some(n) if n.len() == per_dir && dirs == 2 => n.iter().cycle().take(per_dir * 2).cloned().collect(),
        Some(n) if n.len() == per_dir * dirs => n,
        Some(n) => {
            return Err(IrError::bad_attr(
                op,
                "activations",
                format!("expected {} functions, got {}", per_dir * dirs, n.len()),
            ))
        }
    };
    let mut ai = alphas.into_iter();
    let mut bi = betas.into_iter();
    let activations = names
        .iter()
        .map(|n| {
            Activation::from_name(n, &mut ai, &mut bi)
                .ok_or_else(|| IrError::bad_attr(op, "activations", format!("unknown activation '{n}'")))
        })
        .collect::<IrResult<Vec<_>>>()?;
    let clip = cx.attrs.float("clip")?;
    if let Some(c) = clip {
        if c.is_nan() || c <= 0.0 {
            return Err(IrError::bad_attr(op, "clip", format!("must be positive, got {c}")));
        }
    }
    let layout = cx.attrs.int_or("layout", 0)?;
    if layout != 0 && layout != 1 {
        return Err(IrError::bad_attr(op, "layout", format!("must be 0 or 1, got {layout}")));
    }
    let linear_before_reset = if kind == RnnKind::Gru {
        cx.attrs.int_or("linear_before_reset", 0)? != 0
    } else {
        false
    };
    let input_forget = if kind == RnnKind::Lstm {
        cx.attrs.int_or("input_forget", 0)? != 0
    } else {
        false
    };
    let output_sequence = if cx.opset < 7 {
        cx.attrs.int_or("output_sequence", 0)? != 0
    } else {
        false
    };
    Ok(Some(MiscOp::Rnn(Box::new(RnnAttrs {
        kind,
        hidden_size,
        direction,
        activations,
        clip,
        layout,
        linear_before_reset,
        input_forget,
        output_sequence,
    }))))
}

pub(super) fn infer(a: &RnnAttrs, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let x = cx.tensor(0)?;
    let w = cx.tensor(1)?;
    let r = cx.tensor(2)?;
    for (i, t) in [(1, &w), (2, &r)] {
        if t.dtype.is_some() && x.dtype.is_some() && t.dtype != x.dtype {
            return Err(cx.err(format!("input {i} dtype differs from X")));
        }
        if let Some(rk) = t.rank() {
            if rk != 3 {
                return Err(cx.err(format!("input {i} must have rank 3, got {rk}")));
            }
        }
    }
    if let Some(rk) = x.rank() {
        if rk != 3 {
            return Err(cx.err(format!("X must have rank 3, got {rk}")));
        }
    }
    let dirs = Dim::Known(a.direction.num_directions());
    let hidden = match a.hidden_size {
        Some(h) => Dim::Known(h),
        None => r.shape.as_ref().map(|s| s[2].clone()).unwrap_or(Dim::Unknown),
    };
    let (seq, batch) = match &x.shape {
        Some(s) if a.layout == 0 => (s[0].clone(), s[1].clone()),
        Some(s) => (s[1].clone(), s[0].clone()),
        None => (Dim::Unknown, Dim::Unknown),
    };
    let (y, yh) = if a.layout == 0 {
        (
            vec![seq, dirs.clone(), batch.clone(), hidden.clone()],
            vec![dirs, batch, hidden],
        )
    } else {
        (
            vec![batch.clone(), seq, dirs.clone(), hidden.clone()],
            vec![batch, dirs, hidden],
        )
    };
    let dtype = x.dtype.or(w.dtype);
    let mk = |s: Vec<Dim>| ValueType::Tensor(crate::types::TensorType { dtype, shape: Some(s) });
    let mut outs = vec![mk(y), mk(yh.clone())];
    if a.kind == RnnKind::Lstm {
        outs.push(mk(yh));
    }
    if cx.num_outputs > outs.len() {
        return Err(cx.err(format!("at most {} outputs, got {}", outs.len(), cx.num_outputs)));
    }
    Ok(outs)
}
