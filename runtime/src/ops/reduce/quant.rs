//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.
//!
//! Scales and zero points apply per tensor (one element), per axis (1-D,
//! one per index of `axis`) or per block (same rank as x, `axis` divided
//! into blocks of `block_size`). Values are computed in f64; the division
//! x / scale is rounded to the precision the spec names first so that
//! round-half-to-even ties match the reference.

use super::{array_from, float_tensor, norm_axis};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ops::reduce::{is_quant_dtype, DequantizeAttrs, QuantizeAttrs};
use carbide_ir::{bf16, f16, DType, Tensor};

/// Maps an element index of x to the index of its scale / zero point.
enum ScaleMap {
    PerTensor,
    /// (len of axis, inner size)
    PerAxis(usize, usize),
    /// (len of axis, inner size, block size, blocks along axis)
    Blocked(usize, usize, usize, usize),
}

impl ScaleMap {
    fn new(x_shape: &[usize], scale_shape: &[usize], axis: i64, block_size: i64) -> OpResult<ScaleMap> {
        let n: usize = scale_shape.iter().product();
        if n == 1 && scale_shape.len() <= 1 {
            return Ok(ScaleMap::PerTensor);
        }
        let rank = x_shape.len();
        let ax = norm_axis(axis, rank)?;
        let len = x_shape[ax];
        let inner: usize = x_shape[ax + 1..].iter().product();
        if block_size <= 0 {
            if scale_shape.len() != 1 || scale_shape[0] != len {
                return Err(invalid(format!(
                    "per-axis scale shape {scale_shape:?} must be [{len}] (x shape {x_shape:?}, axis {axis})"
                )));
            }
            return Ok(ScaleMap::PerAxis(len, inner));
        }
        let bs = block_size as usize;
        let blocks = len.div_ceil(bs);
        let ok = scale_shape.len() == rank
            && scale_shape
                .iter()
                .zip(x_shape)
                .enumerate()
                .all(|(i, (&s, &d))| if i == ax { s == blocks } else { s == d });
        if !ok {
            return Err(invalid(format!(
                "blocked scale shape {scale_shape:?} does not fit x shape {x_shape:?} with block_size {bs} on axis {ax}"
            )));
        }
        Ok(ScaleMap::Blocked(len, inner, bs, blocks))
    }

    fn index(&self, e: usize) -> usize {
        match *self {
            ScaleMap::PerTensor => 0,
            ScaleMap::PerAxis(len, inner) => (e / inner) % len,
            ScaleMap::Blocked(len, inner, bs, blocks) => {
                let i = e % inner;
                let l = (e / inner) % len;
                let o = e / (inner * len);
                (o * blocks + l / bs) * inner + i
            }
        }
    }
}

/// The (min, max) of an integer quantized type.
fn int_range(d: DType) -> Option<(f64, f64)> {
    Some(match d {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U4 => (0.0, 15.0),
        DType::I4 => (-8.0, 7.0),
        DType::U2 => (0.0, 3.0),
        DType::I2 => (-2.0, 1.0),
        _ => return None,
    })
}

/// Decodes a sub-byte integer held in the low bits of a byte.
fn small_int(d: DType, b: u8) -> Option<i64> {
    let (bits, signed) = match d {
        DType::U4 => (4, false),
        DType::I4 => (4, true),
        DType::U2 => (2, false),
        DType::I2 => (2, true),
        _ => return None,
    };
    let v = (b & ((1u8 << bits) - 1)) as i64;
    Some(if signed && v >= 1 << (bits - 1) {
        v - (1 << bits)
    } else {
        v
    })
}

/// Numeric values of a quantized tensor (ints, sub-byte ints, float8/float4).
fn quant_values(t: &Tensor) -> OpResult<Vec<f64>> {
    match t {
        Tensor::Small(d, a) if d.is_small_float() => a
            .iter()
            .map(|&b| super::small::to_f32(*d, b).map(|v| v as f64))
            .collect(),
        Tensor::Small(d, a) => a
            .iter()
            .map(|&b| {
                small_int(*d, b)
                    .map(|v| v as f64)
                    .ok_or_else(|| unsupported(format!("dtype {d}")))
            })
            .collect(),
        t if t.dtype().is_int() => Ok(t.to_f64_vec().unwrap_or_default()),
        t => Err(invalid(format!(
            "expected a quantized (integer or float8/float4) tensor, got {}",
            t.dtype()
        ))),
    }
}

/// Rounds a quotient to the precision of `d`.
fn round_to(d: DType, v: f64) -> f64 {
    match d {
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Builds a tensor of quantized dtype `d` from values already rounded and
/// clamped (integer types) or scaled (float types).
fn quant_tensor(d: DType, shape: &[usize], v: Vec<f64>, saturate: bool) -> OpResult<Tensor> {
    Ok(match d {
        DType::U8 => Tensor::U8(array_from(shape, v.into_iter().map(|x| x as u8).collect())?),
        DType::I8 => Tensor::I8(array_from(shape, v.into_iter().map(|x| x as i8).collect())?),
        DType::U16 => Tensor::U16(array_from(shape, v.into_iter().map(|x| x as u16).collect())?),
        DType::I16 => Tensor::I16(array_from(shape, v.into_iter().map(|x| x as i16).collect())?),
        DType::U4 | DType::I4 | DType::U2 | DType::I2 => {
            let mask: i64 = if matches!(d, DType::U4 | DType::I4) { 0xF } else { 0x3 };
            Tensor::Small(
                d,
                array_from(shape, v.into_iter().map(|x| ((x as i64) & mask) as u8).collect())?,
            )
        }
        d if d.is_small_float() => {
            let bits = v
                .into_iter()
                .map(|x| super::small::from_f32(d, x as f32, saturate))
                .collect::<OpResult<_>>()?;
            Tensor::Small(d, array_from(shape, bits)?)
        }
        d => return Err(unsupported(format!("quantizing to {d}"))),
    })
}

pub(crate) fn quantize(q: &QuantizeAttrs, x: &Tensor, scale: &Tensor, zp: Option<&Tensor>) -> OpResult<Tensor> {
    let out_dtype = match zp {
        Some(z) => {
            if let Some(o) = q.output_dtype {
                if o != z.dtype() {
                    return Err(invalid(format!(
                        "output_dtype {o} differs from zero point dtype {}",
                        z.dtype()
                    )));
                }
            }
            z.dtype()
        }
        None => q.output_dtype.unwrap_or(DType::U8),
    };
    if !is_quant_dtype(out_dtype) {
        return Err(unsupported(format!("QuantizeLinear to {out_dtype}")));
    }
    if !(x.dtype().is_float() && !x.dtype().is_small() || x.dtype() == DType::I32) {
        return Err(unsupported(format!("QuantizeLinear of {} input", x.dtype())));
    }
    if !scale.dtype().is_float() || scale.dtype().is_small() {
        return Err(invalid(format!("scale must be a float tensor, got {}", scale.dtype())));
    }
    let map = ScaleMap::new(x.shape(), scale.shape(), q.axis, q.block_size)?;
    if let Some(z) = zp {
        if z.shape() != scale.shape() && !(z.len() == 1 && scale.len() == 1) {
            return Err(invalid(format!(
                "zero point shape {:?} differs from scale shape {:?}",
                z.shape(),
                scale.shape()
            )));
        }
    }
    let xs = x
        .to_f64_vec()
        .ok_or_else(|| unsupported(format!("QuantizeLinear of {}", x.dtype())))?;
    let ss = scale
        .to_f64_vec()
        .ok_or_else(|| unsupported(format!("scale of {}", scale.dtype())))?;
    let zs = match zp {
        Some(z) => quant_values(z)?,
        None => vec![0.0; ss.len()],
    };
    let prec = q.precision.unwrap_or(if x.dtype() == DType::I32 {
        DType::F64
    } else {
        scale.dtype()
    });
    let range = int_range(out_dtype);
    let float4 = out_dtype == DType::F4E2M1;
    let mut out = Vec::with_capacity(xs.len());
    for (e, &v) in xs.iter().enumerate() {
        let j = map.index(e);
        let (s, z) = match (ss.get(j), zs.get(j)) {
            (Some(&s), Some(&z)) => (s, z),
            _ => return Err(invalid("scale / zero point too small for the input")),
        };
        let y = round_to(prec, v / s);
        out.push(match range {
            Some((lo, hi)) => (y.round_ties_even() + z).clamp(lo, hi),
            // float8 ignores the (zero) zero point; float4 adds it.
            None if float4 => y + z,
            None => y,
        });
    }
    quant_tensor(out_dtype, x.shape(), out, q.saturate)
}

pub(crate) fn dequantize(d: &DequantizeAttrs, x: &Tensor, scale: &Tensor, zp: Option<&Tensor>) -> OpResult<Tensor> {
    if !scale.dtype().is_float() || scale.dtype().is_small() {
        return Err(invalid(format!("scale must be a float tensor, got {}", scale.dtype())));
    }
    let map = ScaleMap::new(x.shape(), scale.shape(), d.axis, d.block_size)?;
    let xs = quant_values(x)?;
    let ss = scale
        .to_f64_vec()
        .ok_or_else(|| unsupported(format!("scale of {}", scale.dtype())))?;
    let zs = match zp {
        Some(z) if !x.dtype().is_small_float() => {
            if z.dtype() != x.dtype() {
                return Err(invalid(format!(
                    "zero point dtype {} differs from input dtype {}",
                    z.dtype(),
                    x.dtype()
                )));
            }
            if z.shape() != scale.shape() && !(z.len() == 1 && scale.len() == 1) {
                return Err(invalid(format!(
                    "zero point shape {:?} differs from scale shape {:?}",
                    z.shape(),
                    scale.shape()
                )));
            }
            quant_values(z)?
        }
        _ => vec![0.0; ss.len()],
    };
    let mut out = Vec::with_capacity(xs.len());
    for (e, &v) in xs.iter().enumerate() {
        let j = map.index(e);
        match (ss.get(j), zs.get(j)) {
            (Some(&s), Some(&z)) => out.push((v - z) * s),
            _ => return Err(invalid("scale / zero point too small for the input")),
        }
    }
    float_tensor(d.output_dtype.unwrap_or(scale.dtype()), x.shape(), out)
}

/// uint8 quantization with scale and zero point computed from the data range
/// (which is widened to include 0).
pub(crate) fn dynamic_quantize(x: &Tensor) -> OpResult<Vec<Tensor>> {
    let Tensor::F32(a) = x else {
        return Err(unsupported(format!("DynamicQuantizeLinear of {} input", x.dtype())));
    };
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in a.iter() {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let scale = if hi == lo { 1.0f32 } else { (hi - lo) / 255.0 };
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
    let q: Vec<u8> = a
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    Ok(vec![
        Tensor::U8(array_from(x.shape(), q)?),
        Tensor::scalar_f32(scale),
        Tensor::U8(array_from(&[], vec![zp as u8])?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::{ArrayD, IxDyn};

    fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    fn qa(axis: i64, block_size: i64, output_dtype: Option<DType>) -> QuantizeAttrs {
        QuantizeAttrs {
            axis,
            saturate: true,
            block_size,
            output_dtype,
            precision: None,
        }
    }

    #[test]
    fn quantize_per_tensor_rounds_half_to_even() {
        // onnx test_quantizelinear: x / 2 + 128, clamped.
        let x = f32t(&[6], vec![0., 2., 3., 1000., -254., -1000.]);
        let s = Tensor::scalar_f32(2.0);
        let z = Tensor::U8(ArrayD::from_elem(IxDyn(&[]), 128));
        let y = quantize(&qa(1, 0, None), &x, &s, Some(&z)).unwrap();
        assert_eq!(y.dtype(), DType::U8);
        assert_eq!(y.to_i64_vec().unwrap(), vec![128, 129, 130, 255, 1, 0]);
    }

    #[test]
    fn quantize_int4_per_axis_and_blocked() {
        let x = f32t(&[2, 3], vec![1., 2., 3., 4., -20., 6.]);
        let s = f32t(&[3], vec![1., 2., 1.]);
        let y = quantize(&qa(1, 0, Some(DType::I4)), &x, &s, None).unwrap();
        assert_eq!(y.dtype(), DType::I4);
        let Tensor::Small(_, a) = &y else { panic!() };
        // [1, 1, 3, 4, -8, 6]: -8 is 0b1000
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1, 1, 3, 4, 8, 6]);
        let back = dequantize(
            &DequantizeAttrs {
                axis: 1,
                block_size: 0,
                output_dtype: None,
            },
            &y,
            &s,
            None,
        )
        .unwrap();
        assert_eq!(back.to_f64_vec().unwrap(), vec![1., 2., 3., 4., -16., 6.]);
        // Blocks of 2 along axis 1: scales [[1, 10], [2, 20]].
        let sb = f32t(&[2, 2], vec![1., 10., 2., 20.]);
        let y = quantize(&qa(1, 2, None), &x, &sb, None).unwrap();
        assert_eq!(y.to_i64_vec().unwrap(), vec![1, 2, 0, 2, 0, 0]);
        assert!(quantize(&qa(1, 1, None), &x, &sb, None).is_err());
    }

    #[test]
    fn dequantize_with_zero_point() {
        let x = Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-128, 0, 127]).unwrap());
        let z = Tensor::I8(ArrayD::from_elem(IxDyn(&[]), -1));
        let s = Tensor::scalar_f32(0.5);
        let at = DequantizeAttrs {
            axis: 1,
            block_size: 0,
            output_dtype: None,
        };
        let y = dequantize(&at, &x, &s, Some(&z)).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), vec![-63.5, 0.5, 64.0]);
    }

    #[test]
    fn dynamic_quantize_matches_reference() {
        // onnx test_dynamicquantizelinear: x = [0, 2, -3, -2.5, 1.34, 0.5]
        let x = f32t(&[6], vec![0., 2., -3., -2.5, 1.34, 0.5]);
        let out = dynamic_quantize(&x).unwrap();
        assert_eq!(out[0].to_i64_vec().unwrap(), vec![153, 255, 0, 26, 221, 179]);
        assert!((out[1].to_f64_vec().unwrap()[0] - 0.019_607_844).abs() < 1e-7);
        assert_eq!(out[2].to_i64_vec().unwrap(), vec![153]);
    }
}
