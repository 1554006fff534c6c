//! The loop-nest form of a kernel: loops over named axes with extents that
//! may be runtime parameters, strided accesses into buffers, and a body that
//! computes one element as an expression tree. Elementwise kernels are
//! exactly one such nest; GEMM/convolution/pooling kernels are backend
//! templates whose fused epilogue is an [`Expr`] over the anchor's result.

use super::ParamExpr;
use serde::{Deserialize, Serialize};

/// Element functions of one argument (f32 semantics as ONNX defines them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UnaryFn {
    Neg,
    Abs,
    Reciprocal,
    Sqrt,
    Exp,
    Erf,
    Tanh,
    Sigmoid,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Clip {
        min: f32,
        max: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    /// `tanh`: the tanh approximation of GELU.
    Gelu {
        tanh: bool,
    },
    Swish {
        alpha: f32,
    },
    Floor,
    Ceil,
}

/// Element functions of two arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `x < 0 ? slope * x : x` (PRelu with `x` first).
    PRelu,
}

/// The computation of one output element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The value of the nest's operand `i` at the current point.
    Load(usize),
    Const(f32),
    /// The anchor's result (GEMM accumulator, pooled value...) in an epilogue.
    Acc,
    Unary(UnaryFn, Box<Expr>),
    Binary(BinaryFn, Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn unary(f: UnaryFn, a: Expr) -> Expr {
        Expr::Unary(f, Box::new(a))
    }

    pub fn binary(f: BinaryFn, a: Expr, b: Expr) -> Expr {
        Expr::Binary(f, Box::new(a), Box::new(b))
    }

    /// The operands the expression reads, in ascending order without repeats.
    pub fn loads(&self) -> Vec<usize> {
        fn walk(e: &Expr, out: &mut Vec<usize>) {
            match e {
                Expr::Load(i) => out.push(*i),
                Expr::Const(_) | Expr::Acc => {}
                Expr::Unary(_, a) => walk(a, out),
                Expr::Binary(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut v = Vec::new();
        walk(self, &mut v);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Short names of the functions applied, outermost last (for workload keys).
    pub fn describe(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Load(i) => out.push(format!("in{i}")),
                Expr::Const(c) => out.push(format!("{c:?}")),
                Expr::Acc => out.push("acc".into()),
                Expr::Unary(f, a) => {
                    walk(a, out);
                    out.push(format!("{f:?}"));
                }
                Expr::Binary(f, a, b) => {
                    walk(a, out);
                    walk(b, out);
                    out.push(format!("{f:?}"));
                }
            }
        }
        let mut v = Vec::new();
        walk(self, &mut v);
        v
    }
}

/// Whether a loop's iterations are independent or fold into one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoopKind {
    Spatial,
    Reduction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loop {
    pub name: String,
    pub extent: ParamExpr,
    pub kind: LoopKind,
}

/// A strided view of a kernel buffer: element index = Σ loop_var·stride.
/// A stride of 0 broadcasts the buffer along that loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Slot in the kernel's `buffers`.
    pub buffer: usize,
    /// One stride per loop of the nest, outer to inner.
    pub strides: Vec<ParamExpr>,
}

/// A perfect loop nest computing `output[point] = body(operands[point])`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopNest {
    pub loops: Vec<Loop>,
    pub operands: Vec<Access>,
    pub output: Access,
    pub body: Expr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expr_lists_loads_and_functions() {
        let e = Expr::unary(
            UnaryFn::Relu,
            Expr::binary(
                BinaryFn::Add,
                Expr::Load(1),
                Expr::binary(BinaryFn::Mul, Expr::Acc, Expr::Load(1)),
            ),
        );
        assert_eq!(e.loads(), vec![1]);
        assert_eq!(e.describe(), vec!["in1", "acc", "in1", "Mul", "Add", "Relu"]);
    }
}
