//! Cast, CastLike and BitCast. Numeric casts follow `as` (float to int
//! truncates toward zero); small formats go through [`small_float`];
//! strings are parsed and printed the way numpy's `astype` does.

use super::{map1, no_dtype};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::elementwise::CastAttrs;
use carbide_ir::small_float::{self, E8M0Rounding};
use carbide_ir::{bf16, f16, DType, Tensor};
use num_traits::AsPrimitive;

/// Casts a plain numeric array to any non-small, non-string, non-bool dtype.
fn cast_numeric<S>(a: &ArrayD<S>, to: DType) -> OpResult<Tensor>
where
    S: Copy
        + Send
        + Sync
        + 'static
        + AsPrimitive<f32>
        + AsPrimitive<f64>
        + AsPrimitive<f16>
        + AsPrimitive<bf16>
        + AsPrimitive<i8>
        + AsPrimitive<i16>
        + AsPrimitive<i32>
        + AsPrimitive<i64>
        + AsPrimitive<u8>
        + AsPrimitive<u16>
        + AsPrimitive<u32>
        + AsPrimitive<u64>,
{
    Ok(match to {
        DType::F32 => Tensor::F32(map1(a, |v| v.as_())),
        DType::F64 => Tensor::F64(map1(a, |v| v.as_())),
        DType::F16 => Tensor::F16(map1(a, |v| v.as_())),
        DType::BF16 => Tensor::BF16(map1(a, |v| v.as_())),
        DType::I8 => Tensor::I8(map1(a, |v| v.as_())),
        DType::I16 => Tensor::I16(map1(a, |v| v.as_())),
        DType::I32 => Tensor::I32(map1(a, |v| v.as_())),
        DType::I64 => Tensor::I64(map1(a, |v| v.as_())),
        DType::U8 => Tensor::U8(map1(a, |v| v.as_())),
        DType::U16 => Tensor::U16(map1(a, |v| v.as_())),
        DType::U32 => Tensor::U32(map1(a, |v| v.as_())),
        DType::U64 => Tensor::U64(map1(a, |v| v.as_())),
        d => return Err(unsupported(format!("Cast to {d}"))),
    })
}

/// Encodes floats into a small format.
fn to_small_from_float(a: &ArrayD<f64>, to: DType, attrs: CastAttrs) -> Tensor {
    let s = attrs.saturate;
    if to == DType::F8E8M0 {
        let m: E8M0Rounding = attrs.round_mode;
        Tensor::Small(to, map1(a, |v| small_float::f32_to_e8m0(*v as f32, s, m)))
    } else {
        Tensor::Small(to, map1(a, |v| small_float::from_f64(to, *v, s)))
    }
}

/// numpy's `str()` of a float: shortest round-trip digits, positional when
/// 1e-4 <= |x| < `sci_at`, else scientific with a two-digit exponent.
fn format_float(v: f64, digits: &str, exp: i32, sci_at: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let neg = v.is_sign_negative();
    let sign = if neg { "-" } else { "" };
    let a = v.abs();
    if a == 0.0 {
        return format!("{sign}0.0");
    }
    if (1e-4..sci_at).contains(&a) {
        let n = digits.len() as i32;
        let s = if exp >= 0 {
            if n > exp + 1 {
                format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
            } else {
                format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.to_string()
        };
        let es = if exp < 0 { "-" } else { "+" };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

/// Splits Rust's `{:e}` output ("-1.2345e-7") into digits and exponent.
fn sci_parts(s: &str) -> (String, i32) {
    let s = s.trim_start_matches('-');
    let (m, e) = s.split_once('e').unwrap_or((s, "0"));
    let digits: String = m.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() {
        "0".to_string()
    } else {
        digits.to_string()
    };
    (digits, e.parse().unwrap_or(0))
}

fn float_str_f64(v: f64) -> String {
    let (d, e) = sci_parts(&format!("{v:e}"));
    format_float(v, &d, e, 1e16)
}

fn float_str_f32(v: f32) -> String {
    let (d, e) = sci_parts(&format!("{v:e}"));
    format_float(v as f64, &d, e, 1e7)
}

/// Shortest digits that round-trip through a 16-bit float.
fn float_str_16(v: f32, back: impl Fn(f32) -> f32, sci_at: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format_float(v as f64, "0", 0, sci_at);
    }
    for p in 0..9 {
        let s = format!("{v:.p$e}");
        if let Ok(r) = s.parse::<f32>() {
            if back(r) == v {
                let (d, e) = sci_parts(&s);
                return format_float(v as f64, &d, e, sci_at);
            }
        }
    }
    float_str_f32(v)
}

fn to_strings(x: &Tensor) -> OpResult<ArrayD<String>> {
    Ok(match x {
        Tensor::F32(a) => a.map(|v| float_str_f32(*v)),
        Tensor::F64(a) => a.map(|v| float_str_f64(*v)),
        Tensor::F16(a) => a.map(|v| float_str_16(v.to_f32(), |r| f16::from_f32(r).to_f32(), 1e3)),
        Tensor::BF16(a) => a.map(|v| float_str_16(v.to_f32(), |r| bf16::from_f32(r).to_f32(), 1e3)),
        Tensor::Bool(a) => a.map(|v| if *v { "True".to_string() } else { "False".to_string() }),
        Tensor::String(a) => a.clone(),
        Tensor::Small(d, a) if d.is_small_float() => {
            let d = *d;
            a.map(|v| float_str_f32(small_float::to_f32(d, *v)))
        }
        t => {
            let v = t.to_i64_vec().ok_or_else(|| no_dtype("Cast", t))?;
            let strs: Vec<String> = match t {
                Tensor::U64(a) => a.iter().map(|x| x.to_string()).collect(),
                Tensor::Small(d, a) => a.iter().map(|b| small_float::to_i64(*d, *b).to_string()).collect(),
                _ => v.iter().map(|x| x.to_string()).collect(),
            };
            ArrayD::from_shape_vec(t.shape(), strs).map_err(|e| invalid(e.to_string()))?
        }
    })
}

fn parse_f64(s: &str) -> OpResult<f64> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| invalid(format!("Cast: cannot parse '{s}' as a number")))
}

/// Strings to numbers: floats parse as f64, ints as i64 (falling back to a
/// truncated float), bools are true when non-empty and not a zero number.
fn from_strings(a: &ArrayD<String>, to: DType, attrs: CastAttrs) -> OpResult<Tensor> {
    if to == DType::Bool {
        return Ok(Tensor::Bool(a.map(|s| match s.trim().parse::<f64>() {
            Ok(v) => v != 0.0,
            Err(_) => !s.is_empty(),
        })));
    }
    if to.is_int() {
        let mut v = Vec::with_capacity(a.len());
        for s in a.iter() {
            let t = s.trim();
            v.push(match t.parse::<i64>() {
                Ok(i) => i,
                Err(_) => match t.parse::<u64>() {
                    Ok(u) => u as i64,
                    Err(_) => parse_f64(t)? as i64,
                },
            });
        }
        let arr = ArrayD::from_shape_vec(a.shape(), v).map_err(|e| invalid(e.to_string()))?;
        return cast(&Tensor::I64(arr), to, attrs);
    }
    let mut v = Vec::with_capacity(a.len());
    for s in a.iter() {
        v.push(parse_f64(s)?);
    }
    let arr = ArrayD::from_shape_vec(a.shape(), v).map_err(|e| invalid(e.to_string()))?;
    cast(&Tensor::F64(arr), to, attrs)
}

/// Cast / CastLike.
pub(super) fn cast(x: &Tensor, to: DType, attrs: CastAttrs) -> OpResult<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    if to == DType::String {
        return Ok(Tensor::String(to_strings(x)?));
    }
    match x {
        Tensor::String(a) => return from_strings(a, to, attrs),
        Tensor::Small(d, a) => {
            let d = *d;
            // Small ints decode exactly to i64, small floats exactly to f32.
            let wide = if d.is_int() {
                Tensor::I64(a.mapv(|b| small_float::to_i64(d, b)))
            } else {
                Tensor::F32(a.mapv(|b| small_float::to_f32(d, b)))
            };
            return cast(&wide, to, attrs);
        }
        Tensor::Bool(a) => {
            if to.is_small() {
                return Ok(Tensor::Small(to, a.mapv(|b| small_float::from_i64(to, b as i64))));
            }
            return cast_numeric(&a.mapv(|b| b as u8), to);
        }
        _ => {}
    }
    if to == DType::Bool {
        return Ok(Tensor::Bool(match x {
            Tensor::F32(a) => map1(a, |v| *v != 0.0),
            Tensor::F64(a) => map1(a, |v| *v != 0.0),
            Tensor::F16(a) => map1(a, |v| v.to_f32() != 0.0),
            Tensor::BF16(a) => map1(a, |v| v.to_f32() != 0.0),
            Tensor::I8(a) => map1(a, |v| *v != 0),
            Tensor::I16(a) => map1(a, |v| *v != 0),
            Tensor::I32(a) => map1(a, |v| *v != 0),
            Tensor::I64(a) => map1(a, |v| *v != 0),
            Tensor::U8(a) => map1(a, |v| *v != 0),
            Tensor::U16(a) => map1(a, |v| *v != 0),
            Tensor::U32(a) => map1(a, |v| *v != 0),
            Tensor::U64(a) => map1(a, |v| *v != 0),
            t => return Err(no_dtype("Cast", t)),
        }));
    }
    if to.is_small() {
        if !small_float::is_supported(to) {
            return Err(unsupported(format!("Cast to {to}")));
        }
        return Ok(match x {
            Tensor::F32(a) => to_small_from_float(&a.mapv(|v| v as f64), to, attrs),
            Tensor::F64(a) => to_small_from_float(a, to, attrs),
            Tensor::F16(a) => to_small_from_float(&a.mapv(|v| v.to_f64()), to, attrs),
            Tensor::BF16(a) => to_small_from_float(&a.mapv(|v| v.to_f64()), to, attrs),
            Tensor::U64(a) if to.is_small_float() => to_small_from_float(&a.mapv(|v| v as f64), to, attrs),
            t => {
                let v = t.to_i64_vec().ok_or_else(|| no_dtype("Cast", t))?;
                let bits: Vec<u8> = if to.is_small_float() {
                    v.iter()
                        .map(|&i| small_float::from_f64(to, i as f64, attrs.saturate))
                        .collect()
                } else {
                    v.iter().map(|&i| small_float::from_i64(to, i)).collect()
                };
                Tensor::Small(
                    to,
                    ArrayD::from_shape_vec(t.shape(), bits).map_err(|e| invalid(e.to_string()))?,
                )
            }
        });
    }
    match x {
        Tensor::F32(a) => cast_numeric(a, to),
        Tensor::F64(a) => cast_numeric(a, to),
        Tensor::F16(a) => cast_numeric(a, to),
        Tensor::BF16(a) => cast_numeric(a, to),
        Tensor::I8(a) => cast_numeric(a, to),
        Tensor::I16(a) => cast_numeric(a, to),
        Tensor::I32(a) => cast_numeric(a, to),
        Tensor::I64(a) => cast_numeric(a, to),
        Tensor::U8(a) => cast_numeric(a, to),
        Tensor::U16(a) => cast_numeric(a, to),
        Tensor::U32(a) => cast_numeric(a, to),
        Tensor::U64(a) => cast_numeric(a, to),
        t => Err(no_dtype("Cast", t)),
    }
}

/// The raw bits of every element, in row-major order.
fn element_bits(t: &Tensor) -> OpResult<Vec<u64>> {
    Ok(match t {
        Tensor::F32(a) => a.iter().map(|v| v.to_bits() as u64).collect(),
        Tensor::F64(a) => a.iter().map(|v| v.to_bits()).collect(),
        Tensor::F16(a) => a.iter().map(|v| v.to_bits() as u64).collect(),
        Tensor::BF16(a) => a.iter().map(|v| v.to_bits() as u64).collect(),
        Tensor::I8(a) => a.iter().map(|&v| v as u8 as u64).collect(),
        Tensor::I16(a) => a.iter().map(|&v| v as u16 as u64).collect(),
        Tensor::I32(a) => a.iter().map(|&v| v as u32 as u64).collect(),
        Tensor::I64(a) => a.iter().map(|&v| v as u64).collect(),
        Tensor::U8(a) => a.iter().map(|&v| v as u64).collect(),
        Tensor::U16(a) => a.iter().map(|&v| v as u64).collect(),
        Tensor::U32(a) => a.iter().map(|&v| v as u64).collect(),
        Tensor::U64(a) => a.iter().copied().collect(),
        Tensor::Bool(a) => a.iter().map(|&v| v as u64).collect(),
        Tensor::Small(_, a) => a.iter().map(|&v| v as u64).collect(),
        t => return Err(no_dtype("BitCast", t)),
    })
}

/// BitCast: reinterprets each element's bits as `to` (same bit width).
pub(super) fn bitcast(x: &Tensor, to: DType) -> OpResult<Tensor> {
    let from = x.dtype();
    if from == DType::String || to == DType::String || from.bit_width() != to.bit_width() {
        return Err(invalid(format!(
            "BitCast: cannot reinterpret {from} as {to}: bit widths differ"
        )));
    }
    let bits = element_bits(x)?;
    let shape = x.shape();
    macro_rules! build {
        ($V:ident, |$b:ident| $e:expr) => {
            Tensor::$V(
                ArrayD::from_shape_vec(shape, bits.into_iter().map(|$b| $e).collect())
                    .map_err(|e| invalid(e.to_string()))?,
            )
        };
    }
    Ok(match to {
        DType::F32 => build!(F32, |b| f32::from_bits(b as u32)),
        DType::F64 => build!(F64, |b| f64::from_bits(b)),
        DType::F16 => build!(F16, |b| f16::from_bits(b as u16)),
        DType::BF16 => build!(BF16, |b| bf16::from_bits(b as u16)),
        DType::I8 => build!(I8, |b| b as u8 as i8),
        DType::I16 => build!(I16, |b| b as u16 as i16),
        DType::I32 => build!(I32, |b| b as u32 as i32),
        DType::I64 => build!(I64, |b| b as i64),
        DType::U8 => build!(U8, |b| b as u8),
        DType::U16 => build!(U16, |b| b as u16),
        DType::U32 => build!(U32, |b| b as u32),
        DType::U64 => build!(U64, |b| b),
        DType::Bool => build!(Bool, |b| b != 0),
        d if d.is_small() => Tensor::Small(
            d,
            ArrayD::from_shape_vec(shape, bits.into_iter().map(|b| b as u8).collect())
                .map_err(|e| invalid(e.to_string()))?,
        ),
        d => return Err(unsupported(format!("BitCast to {d}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::IxDyn;

    const ATTRS: CastAttrs = CastAttrs {
        saturate: true,
        round_mode: E8M0Rounding::Up,
    };

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
    }

    #[test]
    fn floats_print_like_numpy() {
        let x = f32s(&[
            123456789.0,
            1e16,
            1.5e-5,
            1e-4,
            1.0,
            -0.0,
            f32::NAN,
            f32::NEG_INFINITY,
            0.1,
            1e7,
            99.5,
        ]);
        let Tensor::String(s) = cast(&x, DType::String, ATTRS).unwrap() else {
            panic!()
        };
        let want = [
            "1.2345679e+08",
            "1e+16",
            "1.5e-05",
            "1e-04",
            "1.0",
            "-0.0",
            "nan",
            "-inf",
            "0.1",
            "1e+07",
            "99.5",
        ];
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), want);
        let h = Tensor::F16(
            ArrayD::from_shape_vec(
                IxDyn(&[3]),
                vec![f16::from_f32(0.1), f16::from_f32(1000.5), f16::from_f32(999.5)],
            )
            .unwrap(),
        );
        let Tensor::String(s) = cast(&h, DType::String, ATTRS).unwrap() else {
            panic!()
        };
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), ["0.1", "1.0005e+03", "999.5"]);
        let d = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![123456789.0]).unwrap());
        let Tensor::String(s) = cast(&d, DType::String, ATTRS).unwrap() else {
            panic!()
        };
        assert_eq!(s[[0]], "123456789.0");
    }

    #[test]
    fn strings_parse_and_numbers_convert() {
        let s = Tensor::String(
            ArrayD::from_shape_vec(
                IxDyn(&[4]),
                vec![" 1.5".into(), "-INF".into(), "NaN".into(), "+3".into()],
            )
            .unwrap(),
        );
        let f = cast(&s, DType::F32, ATTRS).unwrap().to_f64_vec().unwrap();
        assert_eq!(f[0], 1.5);
        assert_eq!(f[1], f64::NEG_INFINITY);
        assert!(f[2].is_nan());
        let i = cast(&f32s(&[-2.7, 2.7, 300.0]), DType::I32, ATTRS).unwrap();
        assert_eq!(i.to_i64_vec().unwrap(), vec![-2, 2, 300]);
        let b = cast(&f32s(&[0.0, f32::NAN, -1.0]), DType::Bool, ATTRS).unwrap();
        assert_eq!(b.to_i64_vec().unwrap(), vec![0, 1, 1]);
        let q = cast(&f32s(&[-9.0, 8.0, 0.25]), DType::I4, ATTRS).unwrap();
        let back = cast(&q, DType::I8, ATTRS).unwrap();
        assert_eq!(back.to_i64_vec().unwrap(), vec![7, -8, 0]);
        let e = cast(
            &f32s(&[1e6, 0.25]),
            DType::F8E4M3FN,
            CastAttrs {
                saturate: false,
                ..ATTRS
            },
        )
        .unwrap();
        let Tensor::Small(_, bits) = &e else { panic!() };
        assert_eq!(bits.iter().copied().collect::<Vec<_>>(), vec![0x7F, 0x28]);
    }

    #[test]
    fn bitcast_reinterprets() {
        let y = bitcast(&f32s(&[1.0]), DType::I32).unwrap();
        assert_eq!(y.to_i64_vec().unwrap(), vec![0x3F80_0000]);
        assert!(bitcast(&f32s(&[1.0]), DType::I64).is_err());
    }
}
