//! Optimizer steps of the `ai.onnx.preview.training` domain. Inputs are
//! R (learning rate), T (step count), then groups of n tensors each (X..., G...,
//! and the optimizer state); outputs are the new X... then the new state.

use super::MiscOp;
use crate::error::{IrError, IrResult};
use crate::ops::{InferCtx, ParseCtx};
use crate::types::ValueType;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdagradAttrs {
    pub decay_factor: f32,
    pub epsilon: f32,
    pub norm_coefficient: f32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub epsilon: f32,
    pub norm_coefficient: f32,
    pub norm_coefficient_post: f32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MomentumAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub nesterov: bool,
    pub norm_coefficient: f32,
}

impl MiscOp {
    /// For a training op: (input groups after R and T, output groups).
    pub fn training_groups(&self) -> Option<(usize, usize)> {
        match self {
            MiscOp::Adagrad(_) => Some((3, 2)),
            MiscOp::Adam(_) => Some((4, 3)),
            MiscOp::Momentum(_) => Some((3, 2)),
            _ => None,
        }
    }
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let op = match cx.op_type {
        "Adagrad" => MiscOp::Adagrad(AdagradAttrs {
            decay_factor: cx.attrs.float_or("decay_factor", 0.0)?,
            epsilon: cx.attrs.float_or("epsilon", 0.0)?,
            norm_coefficient: cx.attrs.float_or("norm_coefficient", 0.0)?,
        }),
        "Adam" => MiscOp::Adam(Box::new(AdamAttrs {
            alpha: cx.attrs.float_or("alpha", 0.9)?,
            beta: cx.attrs.float_or("beta", 0.999)?,
            epsilon: cx.attrs.float_or("epsilon", 1e-6)?,
            norm_coefficient: cx.attrs.float_or("norm_coefficient", 0.0)?,
            norm_coefficient_post: cx.attrs.float_or("norm_coefficient_post", 0.0)?,
        })),
        "Momentum" => {
            let nesterov = match cx.attrs.req_string("mode")?.as_str() {
                "standard" => false,
                "nesterov" => true,
                m => return Err(IrError::bad_attr(cx.op_type, "mode", format!("unknown mode '{m}'"))),
            };
            MiscOp::Momentum(MomentumAttrs {
                alpha: cx.attrs.req_float("alpha")?,
                beta: cx.attrs.req_float("beta")?,
                nesterov,
                norm_coefficient: cx.attrs.req_float("norm_coefficient")?,
            })
        }
        _ => return Ok(None),
    };
    let (k, _) = op.training_groups().unwrap_or((1, 1));
    if cx.num_inputs < 2 + k || !(cx.num_inputs - 2).is_multiple_of(k) {
        return Err(IrError::invalid(
            cx.op_type,
            format!("expected 2 + {k}*n inputs, got {}", cx.num_inputs),
        ));
    }
    Ok(Some(op))
}

pub(super) fn infer(op: &MiscOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let (k, m) = op.training_groups().ok_or_else(|| cx.err("not a training op"))?;
    let ni = cx.inputs.len();
    if ni < 2 + k || !(ni - 2).is_multiple_of(k) {
        return Err(cx.err(format!("expected 2 + {k}*n inputs, got {ni}")));
    }
    let n = (ni - 2) / k;
    if cx.num_outputs > m * n {
        return Err(cx.err(format!("expected at most {} outputs, got {}", m * n, cx.num_outputs)));
    }
    (0..m * n)
        .map(|j| cx.tensor(2 + j % n).map(ValueType::Tensor))
        .collect()
}
