//! Static types of values: dtypes plus shapes whose dims may be symbolic.

use crate::dtype::DType;
use std::fmt;

/// One dimension of a static shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dim {
    Known(usize),
    /// A named dim such as `batch` or `seq`, bound when inputs arrive.
    Sym(String),
    /// Nothing is known about this dim.
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape whose rank is known; dims may be symbolic or unknown.
pub type Shape = Vec<Dim>;

/// Converts concrete extents to a static shape.
pub fn shape_of(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// The static type of a tensor value. `None` parts are unknown.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TensorType {
    pub dtype: Option<DType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> Self {
        TensorType {
            dtype: Some(dtype),
            shape: Some(shape),
        }
    }

    /// A type with a known dtype and unknown shape.
    pub fn of_dtype(dtype: DType) -> Self {
        TensorType {
            dtype: Some(dtype),
            shape: None,
        }
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }

    /// All dims as concrete numbers, if every one is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }
}

/// The static type of any value flowing along a graph edge.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ValueType {
    Tensor(TensorType),
    Sequence(Box<ValueType>),
    Optional(Box<ValueType>),
    Map(DType, Box<ValueType>),
    /// Nothing known (e.g. the output of an op whose inference is partial).
    Unknown,
}

impl ValueType {
    pub fn tensor(dtype: DType, shape: Shape) -> Self {
        ValueType::Tensor(TensorType::new(dtype, shape))
    }

    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => {
                f.write_str("[")?;
                for (i, d) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
            None => f.write_str("[..]"),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor(t) => write!(f, "{t}"),
            ValueType::Sequence(e) => write!(f, "seq<{e}>"),
            ValueType::Optional(e) => write!(f, "optional<{e}>"),
            ValueType::Map(k, v) => write!(f, "map<{k},{v}>"),
            ValueType::Unknown => f.write_str("?"),
        }
    }
}
