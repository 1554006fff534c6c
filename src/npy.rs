//! Reading and writing numpy `.npy` files and `.npz` archives, so models can
//! be fed from and compared with numpy without Python in the loop.

use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{f16, DType, Tensor};
use std::io::{Read, Write};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NpyError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}: not a valid .npy file: {1}")]
    Format(String, String),
    #[error("{0}: dtype '{1}' is not supported")]
    DType(String, String),
    #[error("{0}: {1}")]
    Zip(String, String),
}

/// Elements above which a header's shape is refused rather than allocated.
const MAX_ELEMENTS: usize = 1 << 32;

fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        // numpy has no bfloat16: written as its raw 16-bit pattern.
        DType::BF16 => "<u2",
        _ => return None,
    })
}

/// Serializes a tensor as `.npy` bytes (version 1.0, C order).
pub fn to_npy_bytes(t: &Tensor) -> Result<Vec<u8>, NpyError> {
    let d = descr(t.dtype()).ok_or_else(|| NpyError::DType("<tensor>".into(), t.dtype().to_string()))?;
    let shape = t.shape();
    let shape_txt = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    // descr() already refused strings and the formats numpy lacks.
    let data = t
        .to_le_bytes()
        .ok_or_else(|| NpyError::DType("<tensor>".into(), t.dtype().to_string()))?;
    out.extend_from_slice(&data);
    Ok(out)
}

pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let bytes = to_npy_bytes(t)?;
    std::fs::write(path, bytes).map_err(|e| NpyError::Io {
        path: path.display().to_string(),
        error: e,
    })
}

/// Parses `.npy` bytes; `what` names the source in errors.
pub fn from_npy_bytes(bytes: &[u8], what: &str) -> Result<Tensor, NpyError> {
    let bad = |m: &str| NpyError::Format(what.to_string(), m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(&format!("unknown version {v}"))),
    };
    let header = bytes.get(start..start + hlen).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr_s = field("descr").ok_or_else(|| bad("no descr"))?;
    let descr_v = descr_s
        .strip_prefix('\'')
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad("bad descr"))?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad("fortran_order arrays are not supported"));
    }
    let shape_s = field("shape").ok_or_else(|| bad("no shape"))?;
    let shape_s = shape_s
        .strip_prefix('(')
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("bad shape"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    let n = n.ok_or_else(|| bad("shape too large"))?;
    let data = &bytes[start + hlen..];
    let little = !descr_v.starts_with('>');
    let code = descr_v.trim_start_matches(['<', '>', '|', '=']);
    macro_rules! read {
        ($t:ty, $w:expr, $variant:ident, $conv:expr) => {{
            if data.len() < n * $w {
                return Err(bad("data shorter than the shape says"));
            }
            let v: Vec<$t> = data[..n * $w]
                .chunks_exact($w)
                .map(|c| {
                    let mut b = [0u8; $w];
                    b.copy_from_slice(c);
                    if !little {
                        b.reverse();
                    }
                    $conv(b)
                })
                .collect();
            Tensor::$variant(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| bad(&e.to_string()))?)
        }};
    }
    Ok(match code {
        "f4" => read!(f32, 4, F32, f32::from_le_bytes),
        "f8" => read!(f64, 8, F64, f64::from_le_bytes),
        "f2" => read!(f16, 2, F16, |b| f16::from_bits(u16::from_le_bytes(b))),
        "i1" => read!(i8, 1, I8, i8::from_le_bytes),
        "i2" => read!(i16, 2, I16, i16::from_le_bytes),
        "i4" => read!(i32, 4, I32, i32::from_le_bytes),
        "i8" => read!(i64, 8, I64, i64::from_le_bytes),
        "u1" => read!(u8, 1, U8, u8::from_le_bytes),
        "u2" => read!(u16, 2, U16, u16::from_le_bytes),
        "u4" => read!(u32, 4, U32, u32::from_le_bytes),
        "u8" => read!(u64, 8, U64, u64::from_le_bytes),
        "b1" => read!(bool, 1, Bool, |b: [u8; 1]| b[0] != 0),
        other => return Err(NpyError::DType(what.to_string(), other.to_string())),
    })
}

pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|e| NpyError::Io {
        path: path.display().to_string(),
        error: e,
    })?;
    from_npy_bytes(&bytes, &path.display().to_string())
}

/// Reads every array of an `.npz` archive, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpyError> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| NpyError::Io {
        path: what.clone(),
        error: e,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| NpyError::Zip(what.clone(), e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| NpyError::Zip(what.clone(), e.to_string()))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| NpyError::Io {
            path: what.clone(),
            error: e,
        })?;
        out.push((name.clone(), from_npy_bytes(&bytes, &format!("{what}:{name}"))?));
    }
    Ok(out)
}

/// Writes tensors as an uncompressed `.npz` archive.
pub fn write_npz(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), NpyError> {
    let what = path.display().to_string();
    let file = std::fs::File::create(path).map_err(|e| NpyError::Io {
        path: what.clone(),
        error: e,
    })?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in tensors {
        zip.start_file(format!("{name}.npy"), opts)
            .map_err(|e| NpyError::Zip(what.clone(), e.to_string()))?;
        zip.write_all(&to_npy_bytes(t)?).map_err(|e| NpyError::Io {
            path: what.clone(),
            error: e,
        })?;
    }
    zip.finish().map_err(|e| NpyError::Zip(what, e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_keeps_dtype_shape_and_values() {
        let t = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.0, 3.5, 0.0, 7.0, 8.0]).unwrap());
        let back = from_npy_bytes(&to_npy_bytes(&t).unwrap(), "t").unwrap();
        assert_eq!(back, t);
        let s = Tensor::scalar_i64(-5);
        assert_eq!(from_npy_bytes(&to_npy_bytes(&s).unwrap(), "s").unwrap(), s);
        let b = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap());
        assert_eq!(from_npy_bytes(&to_npy_bytes(&b).unwrap(), "b").unwrap(), b);
    }

    #[test]
    fn npy_rejects_garbage_and_huge_shapes() {
        assert!(from_npy_bytes(b"hello", "x").is_err());
        let mut huge = to_npy_bytes(&Tensor::scalar_f32(1.0)).unwrap();
        let h = String::from_utf8_lossy(&huge[10..]).replace("()", "(99999999999,)");
        huge.truncate(10);
        huge.extend_from_slice(h.as_bytes());
        assert!(from_npy_bytes(&huge, "x").is_err());
    }

    #[test]
    fn npz_round_trip() {
        let dir = std::env::temp_dir().join(format!("carbide-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npz");
        let ts = vec![
            ("x".to_string(), Tensor::from_f32s(vec![1.0, 2.0])),
            ("y".into(), Tensor::from_i64s(vec![3])),
        ];
        write_npz(&p, &ts).unwrap();
        assert_eq!(read_npz(&p).unwrap(), ts);
    }
}
