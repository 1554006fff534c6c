//! Conversions between f32/f64 and the sub-16-bit formats that
//! [`crate::Tensor::Small`] holds one element per byte: float8 (e4m3fn,
//! e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4e2m1, int4/uint4 and int2/uint2.
//!
//! The rules follow what the ONNX test data expects (the `ml_dtypes` package
//! and `onnx.numpy_helper`): round-to-nearest-even, NaN and overflow encoded
//! per format, `saturate` clamping to the largest finite value, and integers
//! converted by truncation toward zero and wrapping to the bit width.

use crate::dtype::DType;

/// Rounding mode of a conversion to float8e8m0 (Cast's `round_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum E8M0Rounding {
    /// To the next power of two away from zero (ONNX's default).
    #[default]
    Up,
    /// Toward zero: drop the mantissa.
    Down,
    /// To the nearest power of two, ties up.
    Nearest,
}

impl E8M0Rounding {
    /// Parses Cast's `round_mode` attribute value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(E8M0Rounding::Up),
            "down" => Some(E8M0Rounding::Down),
            "nearest" => Some(E8M0Rounding::Nearest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            E8M0Rounding::Up => "up",
            E8M0Rounding::Down => "down",
            E8M0Rounding::Nearest => "nearest",
        }
    }
}

/// Layout of a small float format with an exponent and a mantissa.
#[derive(Clone, Copy)]
struct Fmt {
    ebits: u32,
    mbits: u32,
    bias: i32,
    /// Largest finite value.
    max: f64,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// IEEE-like: all-ones exponent is inf (mantissa 0) or NaN (e5m2).
    Ieee,
    /// Finite-only with one NaN pattern S.1111.111 (e4m3fn).
    Fn,
    /// Finite-only, no negative zero, 0x80 is the only NaN (fnuz formats).
    Fnuz,
    /// No NaN and no infinity (float4e2m1).
    Finite,
}

fn fmt_of(dtype: DType) -> Option<Fmt> {
    Some(match dtype {
        DType::F8E4M3FN => Fmt {
            ebits: 4,
            mbits: 3,
            bias: 7,
            max: 448.0,
            kind: Kind::Fn,
        },
        DType::F8E4M3FNUZ => Fmt {
            ebits: 4,
            mbits: 3,
            bias: 8,
            max: 240.0,
            kind: Kind::Fnuz,
        },
        DType::F8E5M2 => Fmt {
            ebits: 5,
            mbits: 2,
            bias: 15,
            max: 57344.0,
            kind: Kind::Ieee,
        },
        DType::F8E5M2FNUZ => Fmt {
            ebits: 5,
            mbits: 2,
            bias: 16,
            max: 57344.0,
            kind: Kind::Fnuz,
        },
        DType::F4E2M1 => Fmt {
            ebits: 2,
            mbits: 1,
            bias: 1,
            max: 6.0,
            kind: Kind::Finite,
        },
        _ => return None,
    })
}

/// Bit width of a small integer dtype and whether it is signed.
fn small_int(dtype: DType) -> Option<(u32, bool)> {
    match dtype {
        DType::I4 => Some((4, true)),
        DType::U4 => Some((4, false)),
        DType::I2 => Some((2, true)),
        DType::U2 => Some((2, false)),
        _ => None,
    }
}

/// Whether `dtype` is one of the formats this module converts.
pub fn is_supported(dtype: DType) -> bool {
    fmt_of(dtype).is_some() || small_int(dtype).is_some() || dtype == DType::F8E8M0
}

/// Decodes a small float or small int element to f64 (exact).
/// Unknown dtypes decode as NaN.
pub fn to_f64(dtype: DType, bits: u8) -> f64 {
    if let Some((w, signed)) = small_int(dtype) {
        return small_int_value(bits, w, signed) as f64;
    }
    if dtype == DType::F8E8M0 {
        return if bits == 0xFF {
            f64::NAN
        } else {
            (2.0f64).powi(bits as i32 - 127)
        };
    }
    let Some(f) = fmt_of(dtype) else {
        return f64::NAN;
    };
    let width = 1 + f.ebits + f.mbits;
    let bits = bits & ((1u16 << width) - 1) as u8;
    let sign_bit = 1u8 << (width - 1);
    let neg = bits & sign_bit != 0;
    let mag = bits & !sign_bit;
    let exp = (mag >> f.mbits) as i32;
    let man = (mag & ((1u8 << f.mbits) - 1)) as f64;
    let all_ones_exp = (1i32 << f.ebits) - 1;
    match f.kind {
        Kind::Fnuz if bits == 0x80 => return f64::NAN,
        Kind::Fn if mag == 0x7F => return f64::NAN,
        Kind::Ieee if exp == all_ones_exp => {
            return if man == 0.0 {
                if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                f64::NAN
            }
        }
        _ => {}
    }
    let scale = (1u32 << f.mbits) as f64;
    let v = if exp == 0 {
        man / scale * (2.0f64).powi(1 - f.bias)
    } else {
        (1.0 + man / scale) * (2.0f64).powi(exp - f.bias)
    };
    if neg {
        -v
    } else {
        v
    }
}

/// Decodes a small float or small int element to f32.
pub fn to_f32(dtype: DType, bits: u8) -> f32 {
    to_f64(dtype, bits) as f32
}

/// Whether the element is a NaN of its format.
pub fn is_nan(dtype: DType, bits: u8) -> bool {
    small_int(dtype).is_none() && to_f64(dtype, bits).is_nan()
}

fn small_int_value(bits: u8, width: u32, signed: bool) -> i64 {
    let mask = (1u16 << width) as u8 - 1;
    let v = bits & mask;
    if signed && v & (1 << (width - 1)) != 0 {
        v as i64 - (1i64 << width)
    } else {
        v as i64
    }
}

/// Decodes a small int element (int4/uint4/int2/uint2) to i64; small floats
/// are decoded and truncated toward zero (NaN gives 0).
pub fn to_i64(dtype: DType, bits: u8) -> i64 {
    match small_int(dtype) {
        Some((w, s)) => small_int_value(bits, w, s),
        None => to_f64(dtype, bits) as i64,
    }
}

/// Encodes an integer: small ints wrap to their bit width (as numpy /
/// ml_dtypes `astype` does); small floats round the value.
pub fn from_i64(dtype: DType, v: i64) -> u8 {
    match small_int(dtype) {
        Some((w, _)) => (v as u64 & ((1u64 << w) - 1)) as u8,
        None => from_f64(dtype, v as f64, true),
    }
}

/// Encodes an f32 value, rounding to nearest even. With `saturate`, values
/// beyond the largest finite value (infinities included) clamp to it;
/// without, they become infinity (e5m2) or NaN (formats without infinity).
/// float4e2m1 always saturates. float8e8m0 rounds up (ONNX's default
/// `round_mode`); small ints truncate toward zero and wrap.
pub fn from_f32(dtype: DType, v: f32, saturate: bool) -> u8 {
    if dtype == DType::F8E8M0 {
        return f32_to_e8m0(v, saturate, E8M0Rounding::Up);
    }
    from_f64(dtype, v as f64, saturate)
}

/// Like [`from_f32`] from an f64 value (rounded once, not through f32;
/// float8e8m0 goes through f32 as ONNX does).
pub fn from_f64(dtype: DType, v: f64, saturate: bool) -> u8 {
    if let Some((w, _)) = small_int(dtype) {
        // `as` truncates toward zero and maps NaN to 0, as astype does.
        return ((v as i64) as u64 & ((1u64 << w) - 1)) as u8;
    }
    if dtype == DType::F8E8M0 {
        return f32_to_e8m0(v as f32, saturate, E8M0Rounding::Up);
    }
    let Some(f) = fmt_of(dtype) else {
        return 0;
    };
    let width = 1 + f.ebits + f.mbits;
    let sign_bit = 1u8 << (width - 1);
    let neg = v.is_sign_negative();
    let sign = if neg { sign_bit } else { 0 };
    let max_bits = encode_finite(&f, f.max);
    let overflow = |sign: u8| -> u8 {
        match f.kind {
            Kind::Ieee => sign | (((1u8 << f.ebits) - 1) << f.mbits),
            Kind::Fn => sign | 0x7F,
            Kind::Fnuz => 0x80,
            Kind::Finite => sign | max_bits,
        }
    };
    if v.is_nan() {
        return match f.kind {
            // ml_dtypes' quiet NaN patterns.
            Kind::Ieee => sign | (((1u8 << f.ebits) - 1) << f.mbits) | (1 << (f.mbits - 1)),
            Kind::Fn => sign | 0x7F,
            Kind::Fnuz => 0x80,
            // float4 has no NaN; ml_dtypes yields a zero of flipped sign.
            Kind::Finite => sign ^ sign_bit,
        };
    }
    let a = v.abs();
    if a.is_infinite() {
        return if saturate { sign | max_bits } else { overflow(sign) };
    }
    let (rounded, bits) = round_finite(&f, a);
    if rounded > f.max {
        return if saturate { sign | max_bits } else { overflow(sign) };
    }
    if bits == 0 && f.kind == Kind::Fnuz {
        return 0;
    }
    sign | bits
}

/// Rounds a finite non-negative value to the format (nearest even) and
/// returns the rounded value and its magnitude bits (meaningless when the
/// value exceeds the format's maximum).
fn round_finite(f: &Fmt, a: f64) -> (f64, u8) {
    if a == 0.0 {
        return (0.0, 0);
    }
    let emin = 1 - f.bias;
    let e = ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023;
    let e_eff = e.max(emin);
    let q = (2.0f64).powi(e_eff - f.mbits as i32);
    let r = (a / q).round_ties_even();
    let rounded = r * q;
    let one = (1u64 << f.mbits) as f64;
    let bits = if e_eff == emin && r < one {
        r as u8
    } else {
        let (e2, m) = if r >= 2.0 * one {
            (e_eff + 1, 0.0)
        } else {
            (e_eff, r - one)
        };
        let field = e2 + f.bias;
        if field >= (1 << f.ebits) {
            0xFF
        } else {
            ((field as u8) << f.mbits) | m as u8
        }
    };
    (rounded, bits)
}

fn encode_finite(f: &Fmt, a: f64) -> u8 {
    round_finite(f, a).1
}

/// float8e8m0 encoding of an f32 (the exponent field, sign ignored), as
/// `onnx.numpy_helper.to_float8e8m0`: NaN and infinities become 0xFF;
/// with `saturate`, rounding never goes past 0xFE.
pub fn f32_to_e8m0(v: f32, saturate: bool, mode: E8M0Rounding) -> u8 {
    let b = v.to_bits();
    let exp = (b >> 23) & 0xFF;
    if exp == 0xFF {
        return 0xFF;
    }
    let round_up = match mode {
        E8M0Rounding::Down => false,
        E8M0Rounding::Up => b & 0x7F_FFFF != 0,
        E8M0Rounding::Nearest => {
            let g = b & 0x40_0000 != 0;
            let r = b & 0x20_0000 != 0;
            let s = b & 0x1F_FFFF != 0;
            g && (r || s || exp > 0)
        }
    };
    let e = if round_up && !(saturate && exp == 0xFE) {
        exp + 1
    } else {
        exp
    };
    e.min(0xFF) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3fn_matches_ml_dtypes() {
        let d = DType::F8E4M3FN;
        assert_eq!(from_f32(d, 0.25, true), 0x28);
        assert_eq!(from_f32(d, 0.75, true), 0x34);
        assert_eq!(from_f32(d, 2.5, true), 0x42);
        assert_eq!(from_f32(d, -0.0, true), 0x80);
        assert_eq!(from_f32(d, 1e-7, true), 0x00);
        assert_eq!(from_f32(d, f32::NAN, true), 0x7F);
        assert_eq!(from_f32(d, 1e6, true), 0x7E);
        assert_eq!(from_f32(d, -f32::INFINITY, true), 0xFE);
        assert_eq!(from_f32(d, 1e6, false), 0x7F);
        assert_eq!(from_f32(d, -1e6, false), 0xFF);
        assert_eq!(from_f32(d, 464.0, false), 0x7E);
        assert_eq!(from_f32(d, 0.478_925_47, true), 0x2F);
        assert_eq!(to_f32(d, 0x7E), 448.0);
        assert!(to_f32(d, 0xFF).is_nan());
        assert_eq!(to_f32(d, 0x01), 2f32.powi(-9));
    }

    #[test]
    fn fnuz_and_e5m2() {
        let d = DType::F8E4M3FNUZ;
        assert_eq!(from_f32(d, 0.25, true), 0x30);
        assert_eq!(from_f32(d, -0.0, true), 0x00);
        assert_eq!(from_f32(d, -1e-7, false), 0x00);
        assert_eq!(from_f32(d, f32::NAN, true), 0x80);
        assert_eq!(from_f32(d, 1e6, false), 0x80);
        assert_eq!(from_f32(d, 1e6, true), 0x7F);
        assert!(to_f32(d, 0x80).is_nan());
        let d = DType::F8E5M2;
        assert_eq!(from_f32(d, 0.25, true), 0x34);
        assert_eq!(from_f32(d, f32::NAN, true), 0x7E);
        assert_eq!(from_f32(d, 1e6, false), 0x7C);
        assert_eq!(from_f32(d, 1e6, true), 0x7B);
        assert_eq!(to_f32(d, 0xFC), f32::NEG_INFINITY);
        let d = DType::F8E5M2FNUZ;
        assert_eq!(from_f32(d, 0.25, true), 0x38);
        assert_eq!(from_f32(d, 2.5, true), 0x45);
        assert_eq!(to_f32(d, 0x45), 2.5);
    }

    #[test]
    fn float4_and_ints() {
        let d = DType::F4E2M1;
        let xs = [
            0.48f32,
            0.25,
            1.05,
            -3.5,
            -8.0,
            9.0,
            1e6,
            1e-7,
            f32::NAN,
            f32::INFINITY,
            -4.0,
            -0.0,
        ];
        let want = [0.5f32, 0.0, 1.0, -4.0, -6.0, 6.0, 6.0, 0.0, -0.0, 6.0, -4.0, -0.0];
        for (x, w) in xs.iter().zip(want) {
            let b = from_f32(d, *x, false);
            assert_eq!(to_f32(d, b), w, "{x}");
            assert_eq!(to_f32(d, b).is_sign_negative(), w.is_sign_negative(), "{x}");
        }
        assert_eq!(from_f32(DType::I4, -9.0, true), 7);
        assert_eq!(to_i64(DType::I4, from_f32(DType::I4, 8.0, true)), -8);
        assert_eq!(to_i64(DType::I4, from_f32(DType::I4, 100.3, true)), 4);
        assert_eq!(from_f32(DType::U2, -2.7, true), 2);
        assert_eq!(to_f32(DType::I2, 0b11), -1.0);
        assert_eq!(from_i64(DType::U4, 17), 1);
    }

    #[test]
    fn e8m0() {
        let d = DType::F8E8M0;
        let xs = [0.0f32, 0.124, 0.25, 0.5, 1.1, 2.0, 4.0, 8.0];
        let want = [2f32.powi(-127), 0.125, 0.25, 0.5, 2.0, 2.0, 4.0, 8.0];
        for (x, w) in xs.iter().zip(want) {
            assert_eq!(to_f32(d, from_f32(d, *x, true)), w);
        }
        assert_eq!(f32_to_e8m0(1.1, true, E8M0Rounding::Down), 127);
        assert_eq!(f32_to_e8m0(1.6, true, E8M0Rounding::Nearest), 128);
        assert_eq!(f32_to_e8m0(f32::MAX, true, E8M0Rounding::Up), 0xFE);
        assert_eq!(f32_to_e8m0(f32::MAX, false, E8M0Rounding::Up), 0xFF);
        assert!(to_f32(d, 0xFF).is_nan());
    }
}
