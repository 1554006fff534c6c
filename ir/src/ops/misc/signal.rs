//! DFT, STFT, the window generators and MelWeightMatrix.

use super::{dtype_attr, MiscOp};
use crate::error::{IrError, IrResult};
use crate::ops::{InferCtx, ParseCtx};
use crate::types::{Dim, TensorType, ValueType};
use crate::DType;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DftAttrs {
    pub inverse: bool,
    pub onesided: bool,
    /// Opset 17-19 take the axis as an attribute (default 1); from opset 20
    /// it is input 2 (default -2) and this is `None`.
    pub axis_attr: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

impl WindowKind {
    pub fn op_type(self) -> &'static str {
        match self {
            WindowKind::Hann => "HannWindow",
            WindowKind::Hamming => "HammingWindow",
            WindowKind::Blackman => "BlackmanWindow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowAttrs {
    pub kind: WindowKind,
    pub periodic: bool,
    pub output_datatype: DType,
}

fn float_out(cx: &ParseCtx, name: &str, d: DType) -> IrResult<DType> {
    if d.is_float() && !d.is_small_float() || d.is_int() && !d.is_small() {
        Ok(d)
    } else {
        Err(IrError::bad_attr(
            cx.op_type,
            name,
            format!("unsupported output dtype {d}"),
        ))
    }
}

pub(super) fn parse(cx: &mut ParseCtx) -> IrResult<Option<MiscOp>> {
    let op = match cx.op_type {
        "DFT" => {
            let inverse = cx.attrs.int_or("inverse", 0)? != 0;
            let onesided = cx.attrs.int_or("onesided", 0)? != 0;
            let axis_attr = if cx.opset < 20 {
                Some(cx.attrs.int_or("axis", 1)?)
            } else {
                None
            };
            MiscOp::Dft(DftAttrs {
                inverse,
                onesided,
                axis_attr,
            })
        }
        "STFT" => MiscOp::Stft {
            onesided: cx.attrs.int_or("onesided", 1)? != 0,
        },
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => {
            let kind = match cx.op_type {
                "HannWindow" => WindowKind::Hann,
                "HammingWindow" => WindowKind::Hamming,
                _ => WindowKind::Blackman,
            };
            let periodic = cx.attrs.int_or("periodic", 1)? != 0;
            let d = dtype_attr(cx, "output_datatype")?.unwrap_or(DType::F32);
            let output_datatype = float_out(cx, "output_datatype", d)?;
            MiscOp::Window(WindowAttrs {
                kind,
                periodic,
                output_datatype,
            })
        }
        "MelWeightMatrix" => {
            let d = dtype_attr(cx, "output_datatype")?.unwrap_or(DType::F32);
            MiscOp::MelWeightMatrix {
                output_datatype: float_out(cx, "output_datatype", d)?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(op))
}

/// A scalar integer input that is a known constant.
fn const_scalar(cx: &InferCtx, i: usize) -> Option<i64> {
    match cx.const_i64s(i)?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

fn known_nonneg(v: Option<i64>) -> Dim {
    match v {
        Some(v) if v >= 0 => Dim::Known(v as usize),
        _ => Dim::Unknown,
    }
}

pub(super) fn infer(op: &MiscOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    let out = match op {
        MiscOp::Dft(a) => {
            let x = cx.tensor(0)?;
            let shape = match &x.shape {
                None => None,
                Some(s) => {
                    let r = s.len();
                    if r < 2 {
                        return Err(cx.err(format!("input must have rank >= 2, got {r}")));
                    }
                    let axis = match a.axis_attr {
                        Some(ax) => Some(ax),
                        None if cx.has_input(2) => const_scalar(cx, 2),
                        None => Some(-2),
                    };
                    let mut out = s.clone();
                    out[r - 1] = Dim::Known(if a.inverse && a.onesided { 1 } else { 2 });
                    match axis {
                        Some(ax) => {
                            let ax = if ax < 0 { ax + r as i64 } else { ax };
                            if ax < 0 || ax >= r as i64 - 1 {
                                return Err(cx.err(format!("axis {ax} out of range for rank {r}")));
                            }
                            let ax = ax as usize;
                            let len = if cx.has_input(1) {
                                known_nonneg(const_scalar(cx, 1))
                            } else if a.inverse && a.onesided {
                                match &s[ax] {
                                    Dim::Known(m) if *m >= 1 => Dim::Known(2 * (m - 1)),
                                    _ => Dim::Unknown,
                                }
                            } else {
                                s[ax].clone()
                            };
                            out[ax] = match (len, !a.inverse && a.onesided) {
                                (Dim::Known(n), true) => Dim::Known(n / 2 + 1),
                                (_, true) => Dim::Unknown,
                                (d, false) => d,
                            };
                        }
                        None => {
                            for d in out.iter_mut().take(r - 1) {
                                *d = Dim::Unknown;
                            }
                        }
                    }
                    Some(out)
                }
            };
            TensorType { dtype: x.dtype, shape }
        }
        MiscOp::Stft { onesided } => {
            let x = cx.tensor(0)?;
            let s = x.shape.clone();
            if let Some(s) = &s {
                if s.len() != 3 {
                    return Err(cx.err(format!("signal must have rank 3, got {}", s.len())));
                }
            }
            let step = const_scalar(cx, 1);
            let frame_len = if cx.has_input(3) {
                const_scalar(cx, 3)
            } else if let Some(w) = cx.opt_tensor(2)? {
                w.concrete_shape().and_then(|v| v.first().map(|&n| n as i64))
            } else {
                None
            };
            let sig_len = s.as_ref().and_then(|s| s[1].known());
            let frames = match (sig_len, frame_len, step) {
                (Some(n), Some(f), Some(st)) if st > 0 && f > 0 && n as i64 >= f => {
                    Dim::Known(1 + ((n as i64 - f) / st) as usize)
                }
                _ => Dim::Unknown,
            };
            let bins = match frame_len {
                Some(f) if f > 0 => Dim::Known(if *onesided { f as usize / 2 + 1 } else { f as usize }),
                _ => Dim::Unknown,
            };
            let batch = s.as_ref().map(|s| s[0].clone()).unwrap_or(Dim::Unknown);
            TensorType {
                dtype: x.dtype,
                shape: Some(vec![batch, frames, bins, Dim::Known(2)]),
            }
        }
        MiscOp::Window(w) => TensorType {
            dtype: Some(w.output_datatype),
            shape: Some(vec![known_nonneg(const_scalar(cx, 0))]),
        },
        MiscOp::MelWeightMatrix { output_datatype } => {
            let bins = known_nonneg(const_scalar(cx, 1).map(|n| n / 2 + 1));
            TensorType {
                dtype: Some(*output_datatype),
                shape: Some(vec![bins, known_nonneg(const_scalar(cx, 0))]),
            }
        }
        _ => return Err(cx.err("not a signal op")),
    };
    Ok(vec![ValueType::Tensor(out)])
}
