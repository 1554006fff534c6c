//! A tensor as raw little-endian bytes: how the artifact stores weights and
//! how serde (de)serializes a [`Tensor`] (dtype + shape + bytes, so a
//! serialized graph is compact and exact, bit for bit).

use crate::dtype::DType;
use crate::error::{IrError, IrResult};
use crate::tensor::Tensor;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes per element as a [`Tensor`] holds it in memory and in
/// [`Tensor::to_le_bytes`]; `None` for strings and complex numbers.
pub fn element_size(dtype: DType) -> Option<usize> {
    match dtype {
        DType::String | DType::Complex64 | DType::Complex128 => None,
        d if d.is_small() => Some(1),
        d => Some(d.bit_width() / 8),
    }
}

impl Tensor {
    /// The elements in row-major order as little-endian bytes (one byte per
    /// element for bool and the small formats). `None` for string tensors.
    pub fn to_le_bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len() * element_size(self.dtype()).unwrap_or(0));
        macro_rules! put {
            ($a:expr, $conv:expr) => {
                for v in $a.iter() {
                    out.extend_from_slice(&$conv(v));
                }
            };
        }
        match self {
            Tensor::F32(a) => put!(a, |v: &f32| v.to_le_bytes()),
            Tensor::F64(a) => put!(a, |v: &f64| v.to_le_bytes()),
            Tensor::F16(a) => put!(a, |v: &f16| v.to_bits().to_le_bytes()),
            Tensor::BF16(a) => put!(a, |v: &bf16| v.to_bits().to_le_bytes()),
            Tensor::I8(a) => put!(a, |v: &i8| v.to_le_bytes()),
            Tensor::I16(a) => put!(a, |v: &i16| v.to_le_bytes()),
            Tensor::I32(a) => put!(a, |v: &i32| v.to_le_bytes()),
            Tensor::I64(a) => put!(a, |v: &i64| v.to_le_bytes()),
            Tensor::U8(a) => put!(a, |v: &u8| [*v]),
            Tensor::U16(a) => put!(a, |v: &u16| v.to_le_bytes()),
            Tensor::U32(a) => put!(a, |v: &u32| v.to_le_bytes()),
            Tensor::U64(a) => put!(a, |v: &u64| v.to_le_bytes()),
            Tensor::Bool(a) => put!(a, |v: &bool| [*v as u8]),
            Tensor::Small(_, a) => put!(a, |v: &u8| [*v]),
            Tensor::String(_) => return None,
        }
        Some(out)
    }

    /// Rebuilds a tensor from [`Tensor::to_le_bytes`] output. Fails when the
    /// byte count does not match the shape or the dtype has no byte form.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> IrResult<Tensor> {
        let bad = |reason: String| IrError::Malformed(format!("tensor of {dtype}{shape:?}: {reason}"));
        let size = element_size(dtype).ok_or_else(|| bad("dtype has no byte encoding".into()))?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("element count overflows".into()))?;
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(bad(format!("expected {count}×{size} bytes, got {}", bytes.len())));
        }
        let s = IxDyn(shape);
        macro_rules! get {
            ($variant:ident, $n:literal, $conv:expr) => {
                Tensor::$variant(
                    ArrayD::from_shape_vec(
                        s,
                        bytes
                            .chunks_exact($n)
                            .map(|c| $conv(<[u8; $n]>::try_from(c).expect("chunk size")))
                            .collect(),
                    )
                    .expect("checked element count"),
                )
            };
        }
        Ok(match dtype {
            DType::F32 => get!(F32, 4, f32::from_le_bytes),
            DType::F64 => get!(F64, 8, f64::from_le_bytes),
            DType::F16 => get!(F16, 2, |b| f16::from_bits(u16::from_le_bytes(b))),
            DType::BF16 => get!(BF16, 2, |b| bf16::from_bits(u16::from_le_bytes(b))),
            DType::I8 => get!(I8, 1, i8::from_le_bytes),
            DType::I16 => get!(I16, 2, i16::from_le_bytes),
            DType::I32 => get!(I32, 4, i32::from_le_bytes),
            DType::I64 => get!(I64, 8, i64::from_le_bytes),
            DType::U8 => get!(U8, 1, u8::from_le_bytes),
            DType::U16 => get!(U16, 2, u16::from_le_bytes),
            DType::U32 => get!(U32, 4, u32::from_le_bytes),
            DType::U64 => get!(U64, 8, u64::from_le_bytes),
            DType::Bool => get!(Bool, 1, |b: [u8; 1]| b[0] != 0),
            d if d.is_small() => Tensor::Small(
                d,
                ArrayD::from_shape_vec(s, bytes.to_vec()).expect("checked element count"),
            ),
            _ => return Err(bad("dtype has no byte encoding".into())),
        })
    }
}

/// The serialized form of a tensor: numbers as raw bytes, strings as strings.
#[derive(Serialize, Deserialize)]
enum TensorRepr {
    Bytes {
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    },
    Strings {
        shape: Vec<usize>,
        strings: Vec<String>,
    },
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shape = self.shape().to_vec();
        let repr = match self {
            Tensor::String(a) => TensorRepr::Strings {
                shape,
                strings: a.iter().cloned().collect(),
            },
            t => TensorRepr::Bytes {
                dtype: t.dtype(),
                shape,
                bytes: t.to_le_bytes().expect("only strings lack a byte form"),
            },
        };
        repr.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tensor, D::Error> {
        match TensorRepr::deserialize(deserializer)? {
            TensorRepr::Bytes { dtype, shape, bytes } => {
                Tensor::from_le_bytes(dtype, &shape, &bytes).map_err(serde::de::Error::custom)
            }
            TensorRepr::Strings { shape, strings } => ArrayD::from_shape_vec(IxDyn(&shape), strings)
                .map(Tensor::String)
                .map_err(|e| serde::de::Error::custom(format!("string tensor of shape {shape:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &Tensor) -> Tensor {
        serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap()
    }

    #[test]
    fn every_byte_dtype_round_trips_bit_exactly() {
        for d in DType::ALL {
            let Some(t) = Tensor::zeros(d, &[2, 3]) else { continue };
            assert_eq!(round_trip(&t), t, "{d}");
        }
        let nan = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![f32::NAN, -0.0, 1.5]).unwrap());
        let back = round_trip(&nan).to_le_bytes().unwrap();
        assert_eq!(back, nan.to_le_bytes().unwrap());
        let h = Tensor::F16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![f16::from_f32(0.1), f16::MAX]).unwrap());
        assert_eq!(round_trip(&h), h);
        let s = Tensor::String(ArrayD::from_shape_vec(IxDyn(&[2]), vec!["a".into(), "bé".into()]).unwrap());
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn transposed_views_serialize_in_logical_order() {
        let t = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 2, 3, 4]).unwrap());
        let tt = crate::tensor_map!(&t, a => a.t().to_owned());
        assert_eq!(tt.to_le_bytes().unwrap()[..8], [1, 0, 0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn wrong_byte_counts_are_errors() {
        assert!(Tensor::from_le_bytes(DType::F32, &[2], &[0; 7]).is_err());
        assert!(Tensor::from_le_bytes(DType::F32, &[usize::MAX, 4], &[]).is_err());
        assert!(Tensor::from_le_bytes(DType::String, &[1], &[0]).is_err());
        let bad = r#"{"Bytes":{"dtype":"F32","shape":[3],"bytes":[0,0,0,0]}}"#;
        assert!(serde_json::from_str::<Tensor>(bad).is_err());
    }
}
