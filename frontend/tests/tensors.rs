//! Tensor and value encoding: every dtype round-trips through raw_data, each
//! typed-field encoding decodes to the same tensor as raw_data, and bad data
//! is a clean error.

use carbide_frontend::proto::TensorProto;
use carbide_frontend::{decode_tensor, decode_value, encode_tensor, encode_value, FrontendError};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{bf16, f16, DType, Tensor, TensorType, Value, ValueType};
use prost::Message;

fn arr<T: Clone>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// One sample tensor of every dtype Carbide holds (shape [2, 3]).
fn samples() -> Vec<Tensor> {
    let s = [2, 3];
    let mut v = vec![
        Tensor::F32(arr(&s, vec![0.0, -1.5, f32::INFINITY, f32::NAN, 1e-40, 3.25])),
        Tensor::F64(arr(&s, vec![0.0, -1.5, f64::NEG_INFINITY, 2.0, 1e-300, 7.0])),
        Tensor::F16(arr(
            &s,
            [0.0f32, -1.5, 65504.0, 0.25, 1.0, -0.0]
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect(),
        )),
        Tensor::BF16(arr(
            &s,
            [0.0f32, -1.5, 3e38, 0.25, 1.0, -0.0]
                .iter()
                .map(|&x| bf16::from_f32(x))
                .collect(),
        )),
        Tensor::I8(arr(&s, vec![-128, -1, 0, 1, 2, 127])),
        Tensor::I16(arr(&s, vec![i16::MIN, -1, 0, 1, 2, i16::MAX])),
        Tensor::I32(arr(&s, vec![i32::MIN, -1, 0, 1, 2, i32::MAX])),
        Tensor::I64(arr(&s, vec![i64::MIN, -1, 0, 1, 2, i64::MAX])),
        Tensor::U8(arr(&s, vec![0, 1, 2, 127, 128, 255])),
        Tensor::U16(arr(&s, vec![0, 1, 2, 127, 32768, u16::MAX])),
        Tensor::U32(arr(&s, vec![0, 1, 2, 127, 1 << 31, u32::MAX])),
        Tensor::U64(arr(&s, vec![0, 1, 2, 127, 1 << 63, u64::MAX])),
        Tensor::Bool(arr(&s, vec![true, false, false, true, true, false])),
        Tensor::String(arr(
            &s,
            ["", "a", "héllo", "x y", "\u{1F600}", "z"]
                .iter()
                .map(|x| x.to_string())
                .collect(),
        )),
    ];
    for d in DType::ALL.iter().copied().filter(|d| d.is_small()) {
        let mask = if d.bit_width() >= 8 {
            0xff
        } else {
            (1u8 << d.bit_width()) - 1
        };
        v.push(Tensor::Small(
            d,
            arr(&s, vec![0, 1 & mask, 2 & mask, 3 & mask, 0x7e & mask, mask]),
        ));
    }
    v
}

#[test]
fn every_dtype_round_trips_through_raw_data() {
    let all = samples();
    let held: std::collections::BTreeSet<DType> = all.iter().map(|t| t.dtype()).collect();
    for d in DType::ALL {
        assert!(
            held.contains(&d) || matches!(d, DType::Complex64 | DType::Complex128),
            "{d} not sampled"
        );
    }
    for t in all {
        let bytes = encode_tensor("t", &t).unwrap();
        let back = decode_tensor(&bytes).unwrap();
        // Compare bit patterns so NaN payloads count too.
        assert_eq!(format!("{back:?}"), format!("{t:?}"), "{}", t.dtype());
        // Odd element counts exercise the padding of packed sub-byte types.
        let odd = carbide_ir::tensor_map!(&t, a => a.slice(carbide_ir::ndarray::s![.., 0..1]).to_owned().into_dyn());
        let back = decode_tensor(&encode_tensor("t", &odd).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{odd:?}"), "{} odd", t.dtype());
        // Empty tensors too.
        let empty = Tensor::zeros(t.dtype(), &[0, 3]).unwrap();
        assert_eq!(decode_tensor(&encode_tensor("e", &empty).unwrap()).unwrap(), empty);
    }
}

fn typed(dtype: DType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some("t".into()),
        data_type: Some(dtype.onnx_code()),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

/// Decodes a typed-field tensor and checks it equals the raw encoding of `want`.
fn check_typed(tp: TensorProto, want: &Tensor) {
    let got = decode_tensor(&tp.encode_to_vec()).unwrap();
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{}", want.dtype());
}

#[test]
fn every_typed_field_encoding_decodes() {
    for t in samples() {
        let d = t.dtype();
        let mut tp = typed(d, &[2, 3]);
        match &t {
            Tensor::F32(a) => tp.float_data = a.iter().copied().collect(),
            Tensor::F64(a) => tp.double_data = a.iter().copied().collect(),
            Tensor::I64(a) => tp.int64_data = a.iter().copied().collect(),
            Tensor::U64(a) => tp.uint64_data = a.iter().copied().collect(),
            Tensor::U32(a) => tp.uint64_data = a.iter().map(|&v| v as u64).collect(),
            Tensor::String(a) => tp.string_data = a.iter().map(|s| s.as_bytes().to_vec()).collect(),
            Tensor::F16(a) => tp.int32_data = a.iter().map(|v| v.to_bits() as i32).collect(),
            Tensor::BF16(a) => tp.int32_data = a.iter().map(|v| v.to_bits() as i32).collect(),
            Tensor::Small(d, a) => {
                let v: Vec<u8> = a.iter().copied().collect();
                tp.int32_data = match d.bit_width() {
                    4 => v
                        .chunks(2)
                        .map(|c| (c[0] | c.get(1).unwrap_or(&0) << 4) as i32)
                        .collect(),
                    2 => v
                        .chunks(4)
                        .map(|c| c.iter().enumerate().fold(0, |acc, (k, &x)| acc | (x as i32) << (2 * k)))
                        .collect(),
                    _ => v.iter().map(|&x| x as i32).collect(),
                };
            }
            other => tp.int32_data = other.to_i64_vec().unwrap().into_iter().map(|v| v as i32).collect(),
        }
        check_typed(tp, &t);
    }
}

#[test]
fn data_length_must_match_the_shape() {
    for t in samples() {
        if t.dtype() == DType::String {
            continue;
        }
        let mut tp = TensorProto::decode(encode_tensor("t", &t).unwrap().as_slice()).unwrap();
        tp.dims = vec![3, 3];
        let e = decode_tensor(&tp.encode_to_vec()).unwrap_err();
        assert!(
            matches!(e, FrontendError::Invalid(ref m) if m.contains("raw_data")),
            "{}: {e}",
            t.dtype()
        );
    }
    let mut tp = typed(DType::F32, &[3]);
    tp.float_data = vec![1.0, 2.0];
    assert!(decode_tensor(&tp.encode_to_vec())
        .unwrap_err()
        .to_string()
        .contains("float_data"));
    let mut tp = typed(DType::I8, &[3]);
    tp.int32_data = vec![1; 4];
    assert!(decode_tensor(&tp.encode_to_vec())
        .unwrap_err()
        .to_string()
        .contains("int32_data"));
    let mut tp = typed(DType::U32, &[1]);
    tp.uint64_data = vec![1 << 40];
    assert!(decode_tensor(&tp.encode_to_vec()).is_err());
    let mut tp = typed(DType::String, &[1]);
    tp.raw_data = Some(vec![1]);
    assert!(decode_tensor(&tp.encode_to_vec()).is_err());
    let mut tp = typed(DType::String, &[1]);
    tp.string_data = vec![vec![0xff, 0xfe]];
    assert!(decode_tensor(&tp.encode_to_vec()).is_err());
    // No data at all for a non-empty shape.
    assert!(decode_tensor(&typed(DType::F32, &[2]).encode_to_vec()).is_err());
    // Unknown dtype codes.
    for code in [0, 27, 99, -1] {
        let mut tp = typed(DType::F32, &[1]);
        tp.data_type = Some(code);
        tp.raw_data = Some(vec![0; 4]);
        assert!(
            matches!(decode_tensor(&tp.encode_to_vec()), Err(FrontendError::Unsupported(_))),
            "{code}"
        );
    }
}

#[test]
fn sequences_and_optionals_round_trip() {
    let t1 = Tensor::from_f32s(vec![1.0, 2.0]);
    let t2 = Tensor::from_i64s(vec![3]);
    let tt = ValueType::Tensor(TensorType::default());
    let seq_ty = ValueType::Sequence(Box::new(tt.clone()));
    let cases = [
        (
            Value::Sequence(vec![t1.clone().into(), t1.clone().into()]),
            seq_ty.clone(),
        ),
        (Value::Sequence(vec![]), seq_ty.clone()),
        (Value::Optional(None), ValueType::Optional(Box::new(tt.clone()))),
        (
            Value::Optional(Some(Box::new(t2.clone().into()))),
            ValueType::Optional(Box::new(tt.clone())),
        ),
        (
            Value::Optional(Some(Box::new(Value::Sequence(vec![t2.clone().into()])))),
            ValueType::Optional(Box::new(seq_ty.clone())),
        ),
        (
            Value::Sequence(vec![Value::Sequence(vec![t1.clone().into()]), Value::Sequence(vec![])]),
            ValueType::Sequence(Box::new(seq_ty.clone())),
        ),
        (Value::Tensor(t2.clone()), tt.clone()),
    ];
    for (v, ty) in cases {
        let bytes = encode_value("v", &v).unwrap();
        assert_eq!(decode_value(&bytes, &ty).unwrap(), v, "{ty}");
    }
    assert!(decode_value(&[0xff, 0x01], &seq_ty).is_err());
    assert!(decode_value(&[], &ValueType::Map(DType::I64, Box::new(tt))).is_err());
}
