//! Host tensors: the data of initializers, constants and runtime values.
//!
//! Each dtype is held in an `ndarray::ArrayD` of its natural Rust type, so
//! kernels are ordinary generic ndarray code. Formats narrower than a byte or
//! without a Rust type (float8, float4, int4, int2) are held unpacked, one
//! element per byte, as the bit pattern ONNX defines, in [`Tensor::Small`].

use crate::dtype::DType;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

/// A dense host tensor of any ONNX dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    BF16(ArrayD<bf16>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
    String(ArrayD<String>),
    /// float8 / float4 / int4 / int2 and their unsigned kin: one element per
    /// byte, holding the element's bit pattern in the low bits.
    Small(DType, ArrayD<u8>),
}

/// Applies generic code to the array inside any [`Tensor`] and rebuilds a
/// tensor of the same dtype: `tensor_map!(t, a => a.t().to_owned())`.
#[macro_export]
macro_rules! tensor_map {
    ($t:expr, $a:ident => $body:expr) => {{
        use $crate::Tensor as __T;
        match $t {
            __T::F32($a) => __T::F32($body),
            __T::F64($a) => __T::F64($body),
            __T::F16($a) => __T::F16($body),
            __T::BF16($a) => __T::BF16($body),
            __T::I8($a) => __T::I8($body),
            __T::I16($a) => __T::I16($body),
            __T::I32($a) => __T::I32($body),
            __T::I64($a) => __T::I64($body),
            __T::U8($a) => __T::U8($body),
            __T::U16($a) => __T::U16($body),
            __T::U32($a) => __T::U32($body),
            __T::U64($a) => __T::U64($body),
            __T::Bool($a) => __T::Bool($body),
            __T::String($a) => __T::String($body),
            __T::Small(__d, $a) => __T::Small(*__d, $body),
        }
    }};
}

/// Like [`tensor_map!`] but the body's result is returned as is.
#[macro_export]
macro_rules! tensor_apply {
    ($t:expr, $a:ident => $body:expr) => {{
        use $crate::Tensor as __T;
        match $t {
            __T::F32($a) => $body,
            __T::F64($a) => $body,
            __T::F16($a) => $body,
            __T::BF16($a) => $body,
            __T::I8($a) => $body,
            __T::I16($a) => $body,
            __T::I32($a) => $body,
            __T::I64($a) => $body,
            __T::U8($a) => $body,
            __T::U16($a) => $body,
            __T::U32($a) => $body,
            __T::U64($a) => $body,
            __T::Bool($a) => $body,
            __T::String($a) => $body,
            __T::Small(_, $a) => $body,
        }
    }};
}

/// Applies generic code to two tensors of the same variant (e.g. the data
/// inputs of Concat or Where), rebuilding that variant. Evaluates to
/// `Option<Tensor>`: `None` when the variants (dtypes) differ.
#[macro_export]
macro_rules! tensor_zip_map {
    ($x:expr, $y:expr, ($a:ident, $b:ident) => $body:expr) => {{
        use $crate::Tensor as __T;
        match ($x, $y) {
            (__T::F32($a), __T::F32($b)) => Some(__T::F32($body)),
            (__T::F64($a), __T::F64($b)) => Some(__T::F64($body)),
            (__T::F16($a), __T::F16($b)) => Some(__T::F16($body)),
            (__T::BF16($a), __T::BF16($b)) => Some(__T::BF16($body)),
            (__T::I8($a), __T::I8($b)) => Some(__T::I8($body)),
            (__T::I16($a), __T::I16($b)) => Some(__T::I16($body)),
            (__T::I32($a), __T::I32($b)) => Some(__T::I32($body)),
            (__T::I64($a), __T::I64($b)) => Some(__T::I64($body)),
            (__T::U8($a), __T::U8($b)) => Some(__T::U8($body)),
            (__T::U16($a), __T::U16($b)) => Some(__T::U16($body)),
            (__T::U32($a), __T::U32($b)) => Some(__T::U32($body)),
            (__T::U64($a), __T::U64($b)) => Some(__T::U64($body)),
            (__T::Bool($a), __T::Bool($b)) => Some(__T::Bool($body)),
            (__T::String($a), __T::String($b)) => Some(__T::String($body)),
            (__T::Small(__d, $a), __T::Small(__e, $b)) if __d == __e => Some(__T::Small(*__d, $body)),
            _ => None,
        }
    }};
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::F16(_) => DType::F16,
            Tensor::BF16(_) => DType::BF16,
            Tensor::I8(_) => DType::I8,
            Tensor::I16(_) => DType::I16,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::U8(_) => DType::U8,
            Tensor::U16(_) => DType::U16,
            Tensor::U32(_) => DType::U32,
            Tensor::U64(_) => DType::U64,
            Tensor::Bool(_) => DType::Bool,
            Tensor::String(_) => DType::String,
            Tensor::Small(d, _) => *d,
        }
    }

    pub fn shape(&self) -> &[usize] {
        tensor_apply!(self, a => a.shape())
    }

    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        tensor_apply!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor of `shape` filled with the dtype's zero (empty string, false, +0.0).
    /// Fails only for dtypes that have no host representation (complex).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Option<Tensor> {
        let s = IxDyn(shape);
        Some(match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::F64 => Tensor::F64(ArrayD::zeros(s)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(s, f16::ZERO)),
            DType::BF16 => Tensor::BF16(ArrayD::from_elem(s, bf16::ZERO)),
            DType::I8 => Tensor::I8(ArrayD::zeros(s)),
            DType::I16 => Tensor::I16(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
            DType::U16 => Tensor::U16(ArrayD::zeros(s)),
            DType::U32 => Tensor::U32(ArrayD::zeros(s)),
            DType::U64 => Tensor::U64(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
            DType::String => Tensor::String(ArrayD::from_elem(s, String::new())),
            DType::Complex64 | DType::Complex128 => return None,
            d => Tensor::Small(d, ArrayD::zeros(s)),
        })
    }

    /// Reads an integer tensor (any int dtype or bool) as i64 values in
    /// row-major order. `None` for float, string and small dtypes.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            Tensor::I8(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I16(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I64(a) => a.iter().copied().collect(),
            Tensor::U8(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::U16(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::U32(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::U64(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| v as i64).collect(),
            _ => return None,
        })
    }

    /// Reads a numeric tensor (float, int or bool; not small or string) as f64
    /// values in row-major order.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        Some(match self {
            Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::F64(a) => a.iter().copied().collect(),
            Tensor::F16(a) => a.iter().map(|v| v.to_f64()).collect(),
            Tensor::BF16(a) => a.iter().map(|v| v.to_f64()).collect(),
            Tensor::U64(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
            t => t.to_i64_vec()?.into_iter().map(|v| v as f64).collect(),
        })
    }

    /// A rank-0 f32 tensor.
    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A rank-0 i64 tensor.
    pub fn scalar_i64(v: i64) -> Tensor {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A rank-1 i64 tensor.
    pub fn from_i64s(v: Vec<i64>) -> Tensor {
        let n = v.len();
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("length matches shape"))
    }

    /// A rank-1 f32 tensor.
    pub fn from_f32s(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("length matches shape"))
    }

    /// Same data, new shape (row-major); `None` if the element counts differ.
    pub fn reshaped(&self, shape: &[usize]) -> Option<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return None;
        }
        Some(tensor_map!(self, a => {
            let v: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("checked element count")
        }))
    }
}

macro_rules! impl_from_array {
    ($($t:ty => $v:ident),*) => {$(
        impl From<ArrayD<$t>> for Tensor {
            fn from(a: ArrayD<$t>) -> Tensor { Tensor::$v(a) }
        }
    )*};
}
impl_from_array!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i8 => I8, i16 => I16, i32 => I32,
    i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64, bool => Bool, String => String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_dtype_and_transposes() {
        let t = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).collect()).unwrap());
        let u = tensor_map!(&t, a => a.t().to_owned());
        assert_eq!(u.dtype(), DType::I32);
        assert_eq!(u.shape(), &[3, 2]);
        assert_eq!(u.to_i64_vec().unwrap(), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn zip_map_rejects_mixed_dtypes() {
        let a = Tensor::scalar_f32(1.0);
        let b = Tensor::scalar_i64(1);
        assert!(tensor_zip_map!(&a, &b, (x, y) => { let _ = y; x.clone() }).is_none());
        let c = tensor_zip_map!(&a, &a, (x, y) => { let _ = y; x.clone() });
        assert_eq!(c, Some(Tensor::scalar_f32(1.0)));
    }
}
