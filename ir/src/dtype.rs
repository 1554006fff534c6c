//! Element types. Numbering follows ONNX `TensorProto.DataType` so the
//! frontend and the artifact format can share it.

use std::fmt;

/// An element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    String,
    Bool,
    F16,
    F64,
    U32,
    U64,
    Complex64,
    Complex128,
    BF16,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    U4,
    I4,
    F4E2M1,
    F8E8M0,
    U2,
    I2,
}

impl DType {
    /// Every dtype, in ONNX code order.
    pub const ALL: [DType; 26] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::String,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
        DType::Complex64,
        DType::Complex128,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::U4,
        DType::I4,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::U2,
        DType::I2,
    ];

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        DType::ALL
            .iter()
            .position(|d| *d == self)
            .map(|p| p as i32 + 1)
            .unwrap_or(0)
    }

    /// Parses an ONNX `TensorProto.DataType` code; `None` for UNDEFINED or unknown codes.
    pub fn from_onnx_code(code: i32) -> Option<DType> {
        if code < 1 {
            return None;
        }
        DType::ALL.get(code as usize - 1).copied()
    }

    /// The name ONNX uses in type strings such as `tensor(float)`.
    pub fn onnx_name(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::String => "string",
            DType::Bool => "bool",
            DType::F16 => "float16",
            DType::F64 => "double",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Complex64 => "complex64",
            DType::Complex128 => "complex128",
            DType::BF16 => "bfloat16",
            DType::F8E4M3FN => "float8e4m3fn",
            DType::F8E4M3FNUZ => "float8e4m3fnuz",
            DType::F8E5M2 => "float8e5m2",
            DType::F8E5M2FNUZ => "float8e5m2fnuz",
            DType::U4 => "uint4",
            DType::I4 => "int4",
            DType::F4E2M1 => "float4e2m1",
            DType::F8E8M0 => "float8e8m0",
            DType::U2 => "uint2",
            DType::I2 => "int2",
        }
    }

    /// Size of one element in bits as stored packed (4 for int4, 2 for int2).
    pub fn bit_width(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 8,
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0 => 8,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 16,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 | DType::Complex64 => 64,
            DType::Complex128 => 128,
            DType::U4 | DType::I4 | DType::F4E2M1 => 4,
            DType::U2 | DType::I2 => 2,
            DType::String => 0,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16) || self.is_small_float()
    }

    /// Float formats narrower than 16 bits (stored one element per byte in a [`crate::Tensor`]).
    pub fn is_small_float(self) -> bool {
        matches!(
            self,
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0 | DType::F4E2M1
        )
    }

    /// Dtypes held as [`crate::Tensor::Small`]: float8, float4, int4, int2 and their unsigned kin.
    pub fn is_small(self) -> bool {
        self.is_small_float() || matches!(self, DType::U4 | DType::I4 | DType::U2 | DType::I2)
    }

    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 | DType::I64 | DType::U32 | DType::U64
        ) || matches!(self, DType::U4 | DType::I4 | DType::U2 | DType::I2)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::I4 | DType::I2
        )
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.onnx_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_codes_round_trip() {
        assert_eq!(DType::F32.onnx_code(), 1);
        assert_eq!(DType::BF16.onnx_code(), 16);
        assert_eq!(DType::I2.onnx_code(), 26);
        for d in DType::ALL {
            assert_eq!(DType::from_onnx_code(d.onnx_code()), Some(d));
        }
        assert_eq!(DType::from_onnx_code(0), None);
        assert_eq!(DType::from_onnx_code(99), None);
    }
}
