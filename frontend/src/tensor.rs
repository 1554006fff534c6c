//! `TensorProto` <-> [`Tensor`]: every dtype in every encoding (typed
//! fields, `raw_data`, external data), with the length of the data checked
//! against the shape before anything is allocated from it.

use crate::proto::{self, SparseTensorProto, TensorProto};
use crate::FrontendError;
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{bf16, f16, DType, Tensor};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Largest element count a tensor may declare (2^32).
pub const MAX_ELEMENTS: u64 = 1 << 32;

fn invalid(msg: String) -> FrontendError {
    FrontendError::Invalid(msg)
}

/// How a tensor is named in messages.
fn label(tp: &TensorProto) -> String {
    match tp.name.as_deref() {
        Some(n) if !n.is_empty() => format!("tensor '{n}'"),
        _ => "unnamed tensor".to_string(),
    }
}

/// Checks dims (non-negative, product at most [`MAX_ELEMENTS`]) and returns
/// them as `usize` with the element count.
pub fn checked_dims(what: &str, dims: &[i64]) -> Result<(Vec<usize>, usize), FrontendError> {
    let mut n: u64 = 1;
    let mut out = Vec::with_capacity(dims.len().min(64));
    for &d in dims {
        if d < 0 {
            return Err(invalid(format!("{what}: negative dimension {d} in shape {dims:?}")));
        }
        n = n
            .checked_mul(d as u64)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| invalid(format!("{what}: shape {dims:?} has more than 2^32 elements")))?;
        out.push(d as usize);
    }
    Ok((out, n as usize))
}

/// The dtype of a tensor, or an error naming it for unknown and complex types.
fn dtype_of(what: &str, code: i32) -> Result<DType, FrontendError> {
    match DType::from_onnx_code(code) {
        Some(DType::Complex64 | DType::Complex128) => Err(FrontendError::Unsupported(format!(
            "{what}: complex tensors are not supported"
        ))),
        Some(d) => Ok(d),
        None => Err(FrontendError::Unsupported(format!(
            "{what}: unsupported data type code {code}"
        ))),
    }
}

/// Bytes that `n` elements of `dtype` take in `raw_data`.
pub fn raw_len(dtype: DType, n: usize) -> usize {
    match dtype.bit_width() {
        4 => n.div_ceil(2),
        2 => n.div_ceil(4),
        0 => 0,
        w => n * (w / 8),
    }
}

/// Decodes a tensor; `base_dir` resolves external data (`None`: external data is an error).
pub fn decode(tp: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, FrontendError> {
    let what = label(tp);
    let dtype = dtype_of(&what, tp.data_type.unwrap_or(0))?;
    let (shape, n) = checked_dims(&what, &tp.dims)?;
    if tp.segment.is_some() {
        return Err(FrontendError::Unsupported(format!(
            "{what}: segmented tensors are not supported"
        )));
    }
    if tp.data_location == Some(proto::DATA_LOCATION_EXTERNAL) {
        if dtype == DType::String {
            return Err(invalid(format!("{what}: string tensors cannot use external data")));
        }
        let raw = read_external(tp, &what, raw_len(dtype, n), base_dir)?;
        return from_raw(&what, dtype, shape, n, &raw);
    }
    if let Some(raw) = &tp.raw_data {
        if dtype == DType::String {
            return Err(invalid(format!("{what}: string tensors cannot use raw_data")));
        }
        return from_raw(&what, dtype, shape, n, raw);
    }
    from_typed(tp, &what, dtype, shape, n)
}

fn len_err(what: &str, field: &str, got: usize, want: usize, shape: &[usize]) -> FrontendError {
    invalid(format!(
        "{what}: {field} holds {got} entries but shape {shape:?} needs {want}"
    ))
}

fn array<T>(what: &str, shape: Vec<usize>, v: Vec<T>) -> Result<ArrayD<T>, FrontendError> {
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| invalid(format!("{what}: {e}")))
}

/// Decodes little-endian `raw_data` bytes (also the contents of external data).
fn from_raw(what: &str, dtype: DType, shape: Vec<usize>, n: usize, raw: &[u8]) -> Result<Tensor, FrontendError> {
    let want = raw_len(dtype, n);
    if raw.len() != want {
        return Err(invalid(format!(
            "{what}: raw_data has {} bytes but {dtype} shape {shape:?} needs {want}",
            raw.len()
        )));
    }
    macro_rules! le {
        ($t:ty, $w:expr) => {
            raw.chunks_exact($w).map(|c| {
                let mut b = [0u8; $w];
                b.copy_from_slice(c);
                <$t>::from_le_bytes(b)
            })
        };
    }
    Ok(match dtype {
        DType::F32 => Tensor::F32(array(what, shape, le!(f32, 4).collect())?),
        DType::F64 => Tensor::F64(array(what, shape, le!(f64, 8).collect())?),
        DType::F16 => Tensor::F16(array(what, shape, le!(u16, 2).map(f16::from_bits).collect())?),
        DType::BF16 => Tensor::BF16(array(what, shape, le!(u16, 2).map(bf16::from_bits).collect())?),
        DType::I8 => Tensor::I8(array(what, shape, raw.iter().map(|&b| b as i8).collect())?),
        DType::U8 => Tensor::U8(array(what, shape, raw.to_vec())?),
        DType::I16 => Tensor::I16(array(what, shape, le!(i16, 2).collect())?),
        DType::U16 => Tensor::U16(array(what, shape, le!(u16, 2).collect())?),
        DType::I32 => Tensor::I32(array(what, shape, le!(i32, 4).collect())?),
        DType::U32 => Tensor::U32(array(what, shape, le!(u32, 4).collect())?),
        DType::I64 => Tensor::I64(array(what, shape, le!(i64, 8).collect())?),
        DType::U64 => Tensor::U64(array(what, shape, le!(u64, 8).collect())?),
        DType::Bool => Tensor::Bool(array(what, shape, raw.iter().map(|&b| b != 0).collect())?),
        d if d.is_small() => Tensor::Small(d, array(what, shape, unpack(d, raw.iter().copied(), n))?),
        d => {
            return Err(FrontendError::Unsupported(format!(
                "{what}: {d} has no raw_data decoding"
            )))
        }
    })
}

/// Unpacks sub-byte elements (two 4-bit or four 2-bit values per byte, low
/// bits first) into one byte each; 8-bit small types pass through.
fn unpack(dtype: DType, bytes: impl Iterator<Item = u8>, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    match dtype.bit_width() {
        4 => {
            for b in bytes {
                out.push(b & 0x0f);
                out.push(b >> 4);
            }
        }
        2 => {
            for b in bytes {
                for k in 0..4 {
                    out.push((b >> (2 * k)) & 0x03);
                }
            }
        }
        _ => out.extend(bytes),
    }
    out.truncate(n);
    out
}

/// Packs one-byte-per-element small values back into raw_data form.
fn pack(dtype: DType, vals: &[u8]) -> Vec<u8> {
    match dtype.bit_width() {
        4 => vals
            .chunks(2)
            .map(|c| (c[0] & 0x0f) | (c.get(1).copied().unwrap_or(0) & 0x0f) << 4)
            .collect(),
        2 => vals
            .chunks(4)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (k, &v)| acc | (v & 0x03) << (2 * k))
            })
            .collect(),
        _ => vals.to_vec(),
    }
}

/// Decodes the typed fields (`float_data`, `int32_data`, ...).
fn from_typed(
    tp: &TensorProto,
    what: &str,
    dtype: DType,
    shape: Vec<usize>,
    n: usize,
) -> Result<Tensor, FrontendError> {
    let i32s = |want: usize| -> Result<&[i32], FrontendError> {
        if tp.int32_data.len() != want {
            return Err(len_err(what, "int32_data", tp.int32_data.len(), want, &shape));
        }
        Ok(&tp.int32_data)
    };
    Ok(match dtype {
        DType::F32 => {
            if tp.float_data.len() != n {
                return Err(len_err(what, "float_data", tp.float_data.len(), n, &shape));
            }
            Tensor::F32(array(what, shape, tp.float_data.clone())?)
        }
        DType::F64 => {
            if tp.double_data.len() != n {
                return Err(len_err(what, "double_data", tp.double_data.len(), n, &shape));
            }
            Tensor::F64(array(what, shape, tp.double_data.clone())?)
        }
        DType::I64 => {
            if tp.int64_data.len() != n {
                return Err(len_err(what, "int64_data", tp.int64_data.len(), n, &shape));
            }
            Tensor::I64(array(what, shape, tp.int64_data.clone())?)
        }
        DType::U64 => {
            if tp.uint64_data.len() != n {
                return Err(len_err(what, "uint64_data", tp.uint64_data.len(), n, &shape));
            }
            Tensor::U64(array(what, shape, tp.uint64_data.clone())?)
        }
        DType::U32 => {
            if tp.uint64_data.len() != n {
                return Err(len_err(what, "uint64_data", tp.uint64_data.len(), n, &shape));
            }
            let v = tp
                .uint64_data
                .iter()
                .map(|&x| u32::try_from(x).map_err(|_| invalid(format!("{what}: uint32 value {x} out of range"))))
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::U32(array(what, shape, v)?)
        }
        DType::String => {
            if tp.string_data.len() != n {
                return Err(len_err(what, "string_data", tp.string_data.len(), n, &shape));
            }
            let v = tp
                .string_data
                .iter()
                .map(|s| String::from_utf8(s.clone()).map_err(|_| invalid(format!("{what}: string is not UTF-8"))))
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::String(array(what, shape, v)?)
        }
        DType::I32 => Tensor::I32(array(what, shape.clone(), i32s(n)?.to_vec())?),
        DType::I16 => Tensor::I16(array(
            what,
            shape.clone(),
            i32s(n)?.iter().map(|&v| v as i16).collect(),
        )?),
        DType::I8 => Tensor::I8(array(what, shape.clone(), i32s(n)?.iter().map(|&v| v as i8).collect())?),
        DType::U16 => Tensor::U16(array(
            what,
            shape.clone(),
            i32s(n)?.iter().map(|&v| v as u16).collect(),
        )?),
        DType::U8 => Tensor::U8(array(what, shape.clone(), i32s(n)?.iter().map(|&v| v as u8).collect())?),
        DType::Bool => Tensor::Bool(array(what, shape.clone(), i32s(n)?.iter().map(|&v| v != 0).collect())?),
        DType::F16 => Tensor::F16(array(
            what,
            shape.clone(),
            i32s(n)?.iter().map(|&v| f16::from_bits(v as u16)).collect(),
        )?),
        DType::BF16 => Tensor::BF16(array(
            what,
            shape.clone(),
            i32s(n)?.iter().map(|&v| bf16::from_bits(v as u16)).collect(),
        )?),
        d if d.is_small() => {
            let per = 8 / d.bit_width().clamp(1, 8);
            let packed = n.div_ceil(per);
            let got = tp.int32_data.len();
            // The spec packs 2 (4-bit) or 4 (2-bit) elements per entry; some
            // writers put one element per entry instead. Accept both.
            let vals = if got == packed {
                unpack(d, tp.int32_data.iter().map(|&v| v as u8), n)
            } else if got == n {
                let mask = ((1u16 << d.bit_width().min(8)) - 1) as u8;
                tp.int32_data.iter().map(|&v| v as u8 & mask).collect()
            } else {
                return Err(len_err(what, "int32_data", got, packed, &shape));
            };
            Tensor::Small(d, array(what, shape, vals)?)
        }
        d => {
            return Err(FrontendError::Unsupported(format!(
                "{what}: {d} tensors are not supported"
            )))
        }
    })
}

/// Reads the byte range of an external-data tensor, refusing paths that
/// leave the model's folder and ranges past the file's end.
fn read_external(tp: &TensorProto, what: &str, want: usize, base_dir: Option<&Path>) -> Result<Vec<u8>, FrontendError> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for e in &tp.external_data {
        let key = e.key.as_deref().unwrap_or("");
        let value = e.value.as_deref().unwrap_or("");
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("{what}: external data {key} '{v}' is not a number")))
        };
        match key {
            "location" => location = Some(value.to_string()),
            "offset" => offset = num(value)?,
            "length" => length = Some(num(value)?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| invalid(format!("{what}: external data has no location")))?;
    let base = base_dir.ok_or_else(|| {
        invalid(format!(
            "{what}: uses external data '{location}' but the model was not loaded from a folder"
        ))
    })?;
    let rel = Path::new(&location);
    if location.is_empty() || rel.is_absolute() || location.starts_with('/') || location.starts_with('\\') {
        return Err(invalid(format!(
            "{what}: external data location '{location}' must be a relative path"
        )));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(format!(
            "{what}: external data location '{location}' leaves the model's folder"
        )));
    }
    let io = |path: &Path, e: std::io::Error| FrontendError::Io {
        path: path.to_path_buf(),
        error: e,
    };
    let base_real = base.canonicalize().map_err(|e| io(base, e))?;
    let full = base.join(rel);
    let real = full.canonicalize().map_err(|e| io(&full, e))?;
    if !real.starts_with(&base_real) {
        return Err(invalid(format!(
            "{what}: external data location '{location}' resolves outside the model's folder"
        )));
    }
    let mut f = std::fs::File::open(&real).map_err(|e| io(&real, e))?;
    let size = f.metadata().map_err(|e| io(&real, e))?.len();
    if offset > size {
        return Err(invalid(format!(
            "{what}: external data offset {offset} is past the end of '{location}' ({size} bytes)"
        )));
    }
    let length = length.unwrap_or(size - offset);
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(invalid(format!(
            "{what}: external data range {offset}+{length} is past the end of '{location}' ({size} bytes)"
        )));
    }
    if length != want as u64 {
        return Err(invalid(format!(
            "{what}: external data has {length} bytes but the shape needs {want}"
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| io(&real, e))?;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf).map_err(|e| io(&real, e))?;
    Ok(buf)
}

/// Densifies a sparse tensor: `indices` are either linear positions `[NNZ]`
/// or coordinates `[NNZ, rank]`.
#[allow(clippy::clone_on_copy)] // generic over every dtype, strings included
pub fn decode_sparse(sp: &SparseTensorProto, base_dir: Option<&Path>) -> Result<Tensor, FrontendError> {
    let values_tp = sp
        .values
        .as_ref()
        .ok_or_else(|| invalid("sparse tensor without values".into()))?;
    let what = format!("sparse {}", label(values_tp));
    let values = decode(values_tp, base_dir)?;
    let (shape, n) = checked_dims(&what, &sp.dims)?;
    let nnz = values.len();
    if values.rank() != 1 {
        return Err(invalid(format!(
            "{what}: values must be 1-D, got shape {:?}",
            values.shape()
        )));
    }
    let idx: Vec<i64> = match &sp.indices {
        Some(t) => decode(t, base_dir)?
            .to_i64_vec()
            .ok_or_else(|| invalid(format!("{what}: indices must be integers")))?,
        None if nnz == 0 => Vec::new(),
        None => return Err(invalid(format!("{what}: has values but no indices"))),
    };
    let rank = shape.len();
    let linear: Vec<usize> = if idx.len() == nnz {
        idx.iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < n))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("{what}: index out of range for shape {shape:?}")))?
    } else if rank > 0 && idx.len() == nnz * rank {
        idx.chunks(rank)
            .map(|c| {
                c.iter().zip(&shape).try_fold(0usize, |acc, (&i, &d)| {
                    usize::try_from(i).ok().filter(|&i| i < d).map(|i| acc * d + i)
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("{what}: index out of range for shape {shape:?}")))?
    } else {
        return Err(invalid(format!(
            "{what}: {} indices do not match {nnz} values of rank {rank}",
            idx.len()
        )));
    };
    let dense = Tensor::zeros(values.dtype(), &[n])
        .ok_or_else(|| FrontendError::Unsupported(format!("{what}: dtype {}", values.dtype())))?;
    let filled = carbide_ir::tensor_zip_map!(&dense, &values, (d, v) => {
        let mut d = d.clone();
        for (k, &pos) in linear.iter().enumerate() {
            d[[pos]] = v[[k]].clone();
        }
        d
    })
    .ok_or_else(|| invalid(format!("{what}: dtype mismatch")))?;
    filled
        .reshaped(&shape)
        .ok_or_else(|| invalid(format!("{what}: cannot shape as {shape:?}")))
}

/// Encodes a tensor as a `TensorProto` (raw_data; string_data for strings).
pub fn encode(name: &str, t: &Tensor) -> Result<TensorProto, FrontendError> {
    let dtype = t.dtype();
    let mut tp = TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dtype.onnx_code()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        ..Default::default()
    };
    macro_rules! le {
        ($a:expr, $f:expr) => {
            $a.iter().flat_map(|v| $f(v)).collect::<Vec<u8>>()
        };
    }
    let raw = match t {
        Tensor::F32(a) => le!(a, |v: &f32| v.to_le_bytes()),
        Tensor::F64(a) => le!(a, |v: &f64| v.to_le_bytes()),
        Tensor::F16(a) => le!(a, |v: &f16| v.to_bits().to_le_bytes()),
        Tensor::BF16(a) => le!(a, |v: &bf16| v.to_bits().to_le_bytes()),
        Tensor::I8(a) => a.iter().map(|&v| v as u8).collect(),
        Tensor::U8(a) => a.iter().copied().collect(),
        Tensor::I16(a) => le!(a, |v: &i16| v.to_le_bytes()),
        Tensor::U16(a) => le!(a, |v: &u16| v.to_le_bytes()),
        Tensor::I32(a) => le!(a, |v: &i32| v.to_le_bytes()),
        Tensor::U32(a) => le!(a, |v: &u32| v.to_le_bytes()),
        Tensor::I64(a) => le!(a, |v: &i64| v.to_le_bytes()),
        Tensor::U64(a) => le!(a, |v: &u64| v.to_le_bytes()),
        Tensor::Bool(a) => a.iter().map(|&v| v as u8).collect(),
        Tensor::String(a) => {
            tp.string_data = a.iter().map(|s| s.as_bytes().to_vec()).collect();
            return Ok(tp);
        }
        Tensor::Small(d, a) => {
            let vals: Vec<u8> = a.iter().copied().collect();
            pack(*d, &vals)
        }
    };
    tp.raw_data = Some(raw);
    Ok(tp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(dtype: DType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            data_type: Some(dtype.onnx_code()),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn int4_raw_is_low_nibble_first() {
        let mut t = tp(DType::I4, &[3]);
        t.raw_data = Some(vec![0x21, 0x0f]);
        let d = decode(&t, None).unwrap();
        assert_eq!(
            d,
            Tensor::Small(DType::I4, ArrayD::from_shape_vec(IxDyn(&[3]), vec![1, 2, 15]).unwrap())
        );
        assert_eq!(encode("t", &d).unwrap().raw_data, Some(vec![0x21, 0x0f]));
    }

    #[test]
    fn uint2_int32_data_packs_four_per_entry() {
        let mut t = tp(DType::U2, &[5]);
        t.int32_data = vec![0b1110_0100, 0b11];
        let d = decode(&t, None).unwrap();
        assert_eq!(
            d,
            Tensor::Small(
                DType::U2,
                ArrayD::from_shape_vec(IxDyn(&[5]), vec![0, 1, 2, 3, 3]).unwrap()
            )
        );
    }

    #[test]
    fn f16_in_int32_data_is_bit_pattern() {
        let mut t = tp(DType::F16, &[2]);
        t.int32_data = vec![0x3c00, 0xc000];
        let d = decode(&t, None).unwrap();
        assert_eq!(d.to_f64_vec().unwrap(), vec![1.0, -2.0]);
    }

    #[test]
    fn huge_and_negative_shapes_are_rejected_before_allocating() {
        let mut t = tp(DType::F32, &[1 << 20, 1 << 20]);
        t.raw_data = Some(vec![0; 4]);
        assert!(matches!(decode(&t, None), Err(FrontendError::Invalid(m)) if m.contains("2^32")));
        let t = tp(DType::F32, &[2, -1]);
        assert!(matches!(decode(&t, None), Err(FrontendError::Invalid(m)) if m.contains("negative")));
        let t = tp(DType::F32, &[i64::MAX, i64::MAX]);
        assert!(decode(&t, None).is_err());
    }

    #[test]
    fn sparse_coordinates_and_linear_indices() {
        let mut values = tp(DType::F32, &[2]);
        values.float_data = vec![5.0, 7.0];
        let mut idx = tp(DType::I64, &[2, 2]);
        idx.int64_data = vec![0, 1, 1, 2];
        let sp = SparseTensorProto {
            values: Some(values.clone()),
            indices: Some(idx),
            dims: vec![2, 3],
        };
        let d = decode_sparse(&sp, None).unwrap();
        assert_eq!(d.to_f64_vec().unwrap(), vec![0.0, 5.0, 0.0, 0.0, 0.0, 7.0]);
        let mut lin = tp(DType::I64, &[2]);
        lin.int64_data = vec![1, 5];
        let sp = SparseTensorProto {
            values: Some(values.clone()),
            indices: Some(lin),
            dims: vec![2, 3],
        };
        assert_eq!(decode_sparse(&sp, None).unwrap(), d);
        let mut bad = tp(DType::I64, &[2]);
        bad.int64_data = vec![1, 6];
        let sp = SparseTensorProto {
            values: Some(values),
            indices: Some(bad),
            dims: vec![2, 3],
        };
        assert!(decode_sparse(&sp, None).is_err());
    }
}
