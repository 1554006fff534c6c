//! The typed op set. Each ONNX op family lives in its own module with its own
//! enum of ops (typed attributes, validated by `parse`) and shape/type
//! inference; [`Op`] wraps the families. [`Op::parse`] is the one place that
//! lists which families exist; each family's `parse` lists its ops.

use crate::attr::Attrs;
use crate::error::{IrError, IrResult};
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::types::{Dim, Shape, TensorType, ValueType};
use crate::DType;

pub mod control;
pub mod elementwise;
pub mod fused;
pub mod image;
pub mod linalg;
pub mod misc;
pub mod nn;
pub mod reduce;
pub mod tensor;

pub use control::ControlOp;
pub use elementwise::ElementwiseOp;
pub use fused::FusedOp;
pub use image::ImageOp;
pub use linalg::LinalgOp;
pub use misc::MiscOp;
pub use nn::NnOp;
pub use reduce::ReduceOp;
pub use tensor::TensorOp;

/// What an op parser sees of an ONNX node.
pub struct ParseCtx<'a> {
    /// "" for the default ONNX domain (also used for "ai.onnx").
    pub domain: &'a str,
    pub op_type: &'a str,
    /// The opset version imported for the node's domain.
    pub opset: i64,
    /// Parsers take what they know; [`Attrs::finish`] reports leftovers.
    pub attrs: Attrs,
    /// Number of input slots written in the node (absent ones included).
    pub num_inputs: usize,
    pub num_outputs: usize,
}

/// What shape/type inference sees of a node's inputs.
pub struct InferCtx<'a> {
    /// `None` for an absent optional input.
    pub inputs: &'a [Option<ValueType>],
    /// The value of each input when it is a known constant.
    pub consts: &'a [Option<&'a Tensor>],
    pub num_outputs: usize,
    pub op: &'static str,
}

impl InferCtx<'_> {
    pub fn err(&self, reason: impl Into<String>) -> IrError {
        IrError::invalid(self.op, reason)
    }

    /// The tensor type of input `i` (an error if absent or not a tensor).
    pub fn tensor(&self, i: usize) -> IrResult<TensorType> {
        match self.inputs.get(i) {
            Some(Some(ValueType::Tensor(t))) => Ok(t.clone()),
            Some(Some(ValueType::Unknown)) => Ok(TensorType::default()),
            Some(Some(other)) => Err(self.err(format!("input {i} must be a tensor, got {other}"))),
            _ => Err(self.err(format!("input {i} is required"))),
        }
    }

    /// The tensor type of an optional input.
    pub fn opt_tensor(&self, i: usize) -> IrResult<Option<TensorType>> {
        match self.inputs.get(i) {
            Some(Some(_)) => self.tensor(i).map(Some),
            _ => Ok(None),
        }
    }

    pub fn has_input(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    pub fn const_value(&self, i: usize) -> Option<&Tensor> {
        self.consts.get(i).copied().flatten()
    }

    /// A constant integer input read as i64s, if known.
    pub fn const_i64s(&self, i: usize) -> Option<Vec<i64>> {
        self.const_value(i)?.to_i64_vec()
    }
}

/// Behaviour shared by every op family.
pub trait OpKind {
    /// The ONNX op type, e.g. "Conv".
    fn op_type(&self) -> &'static str;

    /// Output types from input types. Dims that cannot be determined are
    /// `Dim::Unknown`; a contradiction (rank or dtype mismatch) is an error.
    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>>;

    /// Subgraphs held in attributes (If branches, Loop/Scan bodies).
    fn subgraphs(&self) -> Vec<&Graph> {
        Vec::new()
    }

    /// The same subgraphs, mutably (for inference and graph passes).
    fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        Vec::new()
    }
}

/// A typed op: one variant per family.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Elementwise(ElementwiseOp),
    Tensor(TensorOp),
    Nn(NnOp),
    Linalg(LinalgOp),
    Reduce(ReduceOp),
    Control(ControlOp),
    Misc(MiscOp),
    Image(ImageOp),
    /// Carbide's fused ops (domain `com.carbide`), produced by the optimizer.
    Fused(FusedOp),
}

macro_rules! each_family {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            Op::Elementwise($f) => $body,
            Op::Tensor($f) => $body,
            Op::Nn($f) => $body,
            Op::Linalg($f) => $body,
            Op::Reduce($f) => $body,
            Op::Control($f) => $body,
            Op::Misc($f) => $body,
            Op::Image($f) => $body,
            Op::Fused($f) => $body,
        }
    };
}

impl Op {
    /// Turns an ONNX node into a typed op, validating its attributes.
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Op> {
        if let Some(op) = ElementwiseOp::parse(cx)? {
            return Ok(Op::Elementwise(op));
        }
        if let Some(op) = TensorOp::parse(cx)? {
            return Ok(Op::Tensor(op));
        }
        if let Some(op) = NnOp::parse(cx)? {
            return Ok(Op::Nn(op));
        }
        if let Some(op) = LinalgOp::parse(cx)? {
            return Ok(Op::Linalg(op));
        }
        if let Some(op) = ReduceOp::parse(cx)? {
            return Ok(Op::Reduce(op));
        }
        if let Some(op) = ControlOp::parse(cx)? {
            return Ok(Op::Control(op));
        }
        if let Some(op) = MiscOp::parse(cx)? {
            return Ok(Op::Misc(op));
        }
        if let Some(op) = ImageOp::parse(cx)? {
            return Ok(Op::Image(op));
        }
        if let Some(op) = FusedOp::parse(cx)? {
            return Ok(Op::Fused(op));
        }
        Err(IrError::UnsupportedOp {
            domain: cx.domain.to_string(),
            op_type: cx.op_type.to_string(),
            opset: cx.opset,
        })
    }

    pub fn op_type(&self) -> &'static str {
        each_family!(self, f => f.op_type())
    }

    pub fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        each_family!(self, f => f.infer(cx))
    }

    pub fn subgraphs(&self) -> Vec<&Graph> {
        each_family!(self, f => f.subgraphs())
    }
}

/// Numpy-style multidirectional broadcasting of static shapes.
pub fn broadcast_shapes(op: &str, shapes: &[&Shape]) -> IrResult<Shape> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![Dim::Known(1); rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            *o = match (&*o, d) {
                (Dim::Known(1), d) => d.clone(),
                (o, Dim::Known(1)) => o.clone(),
                (Dim::Known(a), Dim::Known(b)) if a == b => Dim::Known(*a),
                (Dim::Known(a), Dim::Known(b)) => {
                    return Err(IrError::invalid(op, format!("cannot broadcast dims {a} and {b}")))
                }
                (Dim::Sym(a), Dim::Sym(b)) if a == b => Dim::Sym(a.clone()),
                (Dim::Known(a), _) | (_, Dim::Known(a)) => Dim::Known(*a),
                _ => Dim::Unknown,
            };
        }
    }
    Ok(out)
}

/// Broadcasts tensor types: shape is broadcast when all ranks are known, the
/// dtype is `dtype` if given, else the first input's dtype.
pub fn broadcast_types(op: &str, types: &[TensorType], dtype: Option<DType>) -> IrResult<TensorType> {
    let shape = if types.iter().all(|t| t.shape.is_some()) {
        let shapes: Vec<&Shape> = types.iter().filter_map(|t| t.shape.as_ref()).collect();
        Some(broadcast_shapes(op, &shapes)?)
    } else {
        None
    };
    Ok(TensorType {
        dtype: dtype.or_else(|| types.first().and_then(|t| t.dtype)),
        shape,
    })
}

/// Normalizes a possibly negative axis against `rank`.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> IrResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(IrError::invalid(
            op,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Mutable access to an op's subgraphs.
pub fn subgraphs_mut(op: &mut Op) -> Vec<&mut Graph> {
    each_family!(op, f => f.subgraphs_mut())
}
