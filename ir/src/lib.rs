//! Carbide's IR: element types, host tensors, static types with symbolic
//! dims, the Graph IR with its typed op set, shape/type inference, the
//! verifier and the text form.

pub mod attr;
pub mod cost;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod kernel;
pub mod ops;
pub mod print;
pub mod small_float;
pub mod tensor;
pub mod tensor_bytes;
pub mod types;
pub mod value;
pub mod verify;

pub use attr::{Attr, Attrs};
pub use dtype::DType;
pub use error::{IrError, IrResult};
pub use graph::{Graph, Model, Node, ValueInfo};
pub use ops::Op;
pub use tensor::Tensor;
pub use types::{Dim, Shape, TensorType, ValueType};
pub use value::Value;

pub use half::{bf16, f16};
pub use ndarray;
