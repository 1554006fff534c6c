//! Unary math and activation kernels. Floats compute in their own type
//! (f16/bf16 in f32, rounded back); integer kernels wrap on overflow.

use super::{map1, no_dtype};
use crate::error::OpResult;
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::elementwise::Unary;
use carbide_ir::small_float;
use carbide_ir::{bf16, f16, Tensor};
use num_traits::Float;

pub(super) fn eval(u: &Unary, x: &Tensor) -> OpResult<Tensor> {
    let name = carbide_ir::ops::OpKind::op_type(&carbide_ir::ops::ElementwiseOp::Unary(*u));
    match u {
        Unary::IsNaN => return is_class(x, name, |v| v.is_nan()),
        Unary::IsInf {
            detect_positive,
            detect_negative,
        } => {
            let (p, n) = (*detect_positive, *detect_negative);
            return is_class(x, name, move |v| v.is_infinite() && ((v > 0.0 && p) || (v < 0.0 && n)));
        }
        Unary::Not => {
            return match x {
                Tensor::Bool(a) => Ok(Tensor::Bool(map1(a, |v| !*v))),
                t => Err(no_dtype(name, t)),
            }
        }
        _ => {}
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(float_unary(u, a, name, x)?),
        Tensor::F64(a) => Tensor::F64(float_unary(u, a, name, x)?),
        Tensor::F16(a) => {
            let f = a.mapv(f16::to_f32);
            Tensor::F16(float_unary(u, &f, name, x)?.mapv(f16::from_f32))
        }
        Tensor::BF16(a) => {
            let f = a.mapv(bf16::to_f32);
            Tensor::BF16(float_unary(u, &f, name, x)?.mapv(bf16::from_f32))
        }
        Tensor::I8(a) => Tensor::I8(int_unary(u, a, name, x)?),
        Tensor::I16(a) => Tensor::I16(int_unary(u, a, name, x)?),
        Tensor::I32(a) => Tensor::I32(int_unary(u, a, name, x)?),
        Tensor::I64(a) => Tensor::I64(int_unary(u, a, name, x)?),
        Tensor::U8(a) => Tensor::U8(int_unary(u, a, name, x)?),
        Tensor::U16(a) => Tensor::U16(int_unary(u, a, name, x)?),
        Tensor::U32(a) => Tensor::U32(int_unary(u, a, name, x)?),
        Tensor::U64(a) => Tensor::U64(int_unary(u, a, name, x)?),
        t => return Err(no_dtype(name, t)),
    })
}

/// IsNaN / IsInf: a float-class predicate on any float dtype (false for ints).
fn is_class(x: &Tensor, name: &str, f: impl Fn(f64) -> bool + Sync + Send) -> OpResult<Tensor> {
    Ok(Tensor::Bool(match x {
        Tensor::F32(a) => map1(a, |v| f(*v as f64)),
        Tensor::F64(a) => map1(a, |v| f(*v)),
        Tensor::F16(a) => map1(a, |v| f(v.to_f64())),
        Tensor::BF16(a) => map1(a, |v| f(v.to_f64())),
        Tensor::Small(d, a) if d.is_small_float() => {
            let d = *d;
            map1(a, |v| f(small_float::to_f64(d, *v)))
        }
        t if t.dtype().is_int() => ArrayD::from_elem(t.shape(), false),
        t => return Err(no_dtype(name, t)),
    }))
}

/// Integer ops that wrap like numpy: Abs, Neg, Sign, Relu, BitwiseNot.
pub(crate) trait IntUnary: Copy + Send + Sync + PartialOrd + Default {
    fn wabs(self) -> Self;
    fn wneg(self) -> Self;
    fn sign(self) -> Self;
    fn bnot(self) -> Self;
}

macro_rules! int_unary_impl {
    (signed: $($t:ty),*) => {$(
        impl IntUnary for $t {
            fn wabs(self) -> Self { self.wrapping_abs() }
            fn wneg(self) -> Self { self.wrapping_neg() }
            fn sign(self) -> Self { self.signum() }
            fn bnot(self) -> Self { !self }
        }
    )*};
    (unsigned: $($t:ty),*) => {$(
        impl IntUnary for $t {
            fn wabs(self) -> Self { self }
            fn wneg(self) -> Self { self.wrapping_neg() }
            fn sign(self) -> Self { (self > 0) as $t }
            fn bnot(self) -> Self { !self }
        }
    )*};
}
int_unary_impl!(signed: i8, i16, i32, i64);
int_unary_impl!(unsigned: u8, u16, u32, u64);

fn int_unary<T: IntUnary>(u: &Unary, a: &ArrayD<T>, name: &str, x: &Tensor) -> OpResult<ArrayD<T>> {
    Ok(match u {
        Unary::Abs => map1(a, |v| v.wabs()),
        Unary::Neg => map1(a, |v| v.wneg()),
        Unary::Sign => map1(a, |v| v.sign()),
        Unary::Relu => map1(a, |v| if *v < T::default() { T::default() } else { *v }),
        Unary::BitwiseNot => map1(a, |v| v.bnot()),
        _ => return Err(no_dtype(name, x)),
    })
}

fn sigmoid<T: Float>(x: T) -> T {
    // Stable on both tails: exp never sees a large positive argument.
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

fn softplus<T: Float>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// Round half to even.
fn round_even<T: Float>(x: T) -> T {
    let r = x.round();
    let two = T::one() + T::one();
    if (r - x).abs() == T::one() / two {
        two * (x / two).round()
    } else {
        r
    }
}

fn float_unary<T: Float + Default + Send + Sync>(
    u: &Unary,
    a: &ArrayD<T>,
    name: &str,
    x: &Tensor,
) -> OpResult<ArrayD<T>> {
    use Unary::*;
    let c = |v: f64| T::from(v).unwrap_or_else(T::nan);
    let (zero, one) = (T::zero(), T::one());
    Ok(match *u {
        Abs => map1(a, |v| v.abs()),
        Neg => map1(a, |v| -*v),
        Reciprocal => map1(a, |v| v.recip()),
        Floor => map1(a, |v| v.floor()),
        Ceil => map1(a, |v| v.ceil()),
        Round => map1(a, |v| round_even(*v)),
        Sqrt => map1(a, |v| v.sqrt()),
        Exp => map1(a, |v| v.exp()),
        Log => map1(a, |v| v.ln()),
        Sin => map1(a, |v| v.sin()),
        Cos => map1(a, |v| v.cos()),
        Tan => map1(a, |v| v.tan()),
        Asin => map1(a, |v| v.asin()),
        Acos => map1(a, |v| v.acos()),
        Atan => map1(a, |v| v.atan()),
        Sinh => map1(a, |v| v.sinh()),
        Cosh => map1(a, |v| v.cosh()),
        Asinh => map1(a, |v| v.asinh()),
        Acosh => map1(a, |v| v.acosh()),
        Atanh => map1(a, |v| v.atanh()),
        Erf => map1(a, |v| c(erf(v.to_f64().unwrap_or(f64::NAN)))),
        Sign => map1(a, |v| {
            if *v > zero {
                one
            } else if *v < zero {
                -one
            } else {
                *v
            }
        }),
        Relu => map1(a, |v| if *v < zero { zero } else { *v }),
        LeakyRelu { alpha } => {
            let al = c(alpha as f64);
            map1(a, move |v| if *v < zero { *v * al } else { *v })
        }
        Elu { alpha } => {
            let al = c(alpha as f64);
            map1(a, move |v| if *v < zero { al * (v.exp() - one) } else { *v })
        }
        Selu { alpha, gamma } => {
            let (al, g) = (c(alpha as f64), c(gamma as f64));
            map1(a, move |v| if *v > zero { g * *v } else { g * (al * v.exp() - al) })
        }
        Celu { alpha } => {
            let al = c(alpha as f64);
            map1(a, move |v| v.max(zero) + zero.min(al * ((*v / al).exp() - one)))
        }
        Sigmoid => map1(a, |v| sigmoid(*v)),
        HardSigmoid { alpha, beta } => {
            let (al, b) = (c(alpha as f64), c(beta as f64));
            map1(a, move |v| (al * *v + b).min(one).max(zero))
        }
        HardSwish => {
            let (al, b) = (c(1.0 / 6.0), c(0.5));
            map1(a, move |v| *v * (al * *v + b).min(one).max(zero))
        }
        Softplus => map1(a, |v| softplus(*v)),
        Softsign => map1(a, |v| *v / (one + v.abs())),
        Tanh => map1(a, |v| v.tanh()),
        ThresholdedRelu { alpha } => {
            let al = c(alpha as f64);
            map1(a, move |v| if *v > al { *v } else { zero })
        }
        Shrink { bias, lambd } => {
            let (b, l) = (c(bias as f64), c(lambd as f64));
            map1(a, move |v| {
                if *v < -l {
                    *v + b
                } else if *v > l {
                    *v - b
                } else {
                    zero
                }
            })
        }
        Mish => map1(a, |v| *v * softplus(*v).tanh()),
        Gelu { tanh: false } => {
            let h = c(0.5);
            let r = c(std::f64::consts::FRAC_1_SQRT_2);
            map1(a, move |v| {
                h * *v * (one + c(erf((*v * r).to_f64().unwrap_or(f64::NAN))))
            })
        }
        Gelu { tanh: true } => {
            let h = c(0.5);
            let k = c((2.0 / std::f64::consts::PI).sqrt());
            let q = c(0.044715);
            map1(a, move |v| h * *v * (one + (k * (*v + q * *v * *v * *v)).tanh()))
        }
        Swish { alpha } => {
            let al = c(alpha as f64);
            map1(a, move |v| *v * sigmoid(al * *v))
        }
        IsNaN | IsInf { .. } | Not | BitwiseNot => return Err(no_dtype(name, x)),
    })
}

/// The error function to near double precision: a Taylor series for
/// |x| < 2.5 and a continued fraction for erfc beyond.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax > 6.0 {
        1.0
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + (k as f64 / 2.0) / f;
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::{ArrayD, IxDyn};

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }

    #[test]
    fn erf_matches_reference_values() {
        // math.erf from Python.
        let cases = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.6, 0.9997639655834707),
            (3.5, 0.9999992569016276),
            (-1.5, -0.9661051464753108),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} want {want}", erf(x));
        }
    }

    #[test]
    fn activations_match_numpy() {
        let x = f32s(&[-2.0, -0.5, 0.0, 0.5, 3.0]);
        let y = eval(&Unary::Gelu { tanh: false }, &x).unwrap();
        let want = [-0.04550026, -0.15426877, 0.0, 0.34573123, 2.9959502];
        for (a, b) in vals(&y).iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let y = eval(&Unary::Round, &f32s(&[0.5, 1.5, 2.5, -2.5, -0.4, 2.6])).unwrap();
        assert_eq!(vals(&y), vec![0.0, 2.0, 2.0, -2.0, -0.0, 3.0]);
        let y = eval(&Unary::Softplus, &f32s(&[-100.0, 0.0, 100.0])).unwrap();
        assert!((vals(&y)[1] - std::f64::consts::LN_2).abs() < 1e-6);
        assert_eq!(vals(&y)[2], 100.0);
        let y = eval(
            &Unary::IsInf {
                detect_positive: false,
                detect_negative: true,
            },
            &f32s(&[f32::INFINITY, f32::NEG_INFINITY]),
        )
        .unwrap();
        assert_eq!(y.to_i64_vec().unwrap(), vec![0, 1]);
    }

    #[test]
    fn int_and_half_paths() {
        let x = Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-128i8, -3, 5]).unwrap());
        assert_eq!(eval(&Unary::Abs, &x).unwrap().to_i64_vec().unwrap(), vec![-128, 3, 5]);
        assert_eq!(eval(&Unary::Sign, &x).unwrap().to_i64_vec().unwrap(), vec![-1, -1, 1]);
        assert!(eval(&Unary::Sqrt, &x).is_err());
        let h = Tensor::F16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![f16::from_f32(4.0), f16::from_f32(2.0)]).unwrap());
        let y = eval(&Unary::Sqrt, &h).unwrap();
        assert_eq!(y.dtype(), carbide_ir::DType::F16);
        assert!((vals(&y)[1] - 2f64.sqrt()).abs() < 1e-3);
    }
}
