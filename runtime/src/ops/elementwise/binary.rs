//! Broadcasting binary kernels (arithmetic, Pow, Mod, bitwise, logic,
//! comparisons, PRelu), the variadic Max/Min/Sum/Mean, Clip and Where.
//! Integer arithmetic wraps; integer division and Mod by zero give 0
//! (numpy's result) rather than trapping.

use super::{no_dtype, zip2, zip3};
use crate::error::{invalid, OpResult};
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::elementwise::{Binary, Variadic};
use carbide_ir::small_float;
use carbide_ir::{bf16, f16, tensor_zip_map, Tensor};
use num_traits::Float;

/// Integer arithmetic with numpy's wrapping and zero-division results.
pub(crate) trait Int: Copy + Send + Sync + PartialOrd + Ord + Default + 'static {
    fn add_(self, o: Self) -> Self;
    fn sub_(self, o: Self) -> Self;
    fn mul_(self, o: Self) -> Self;
    /// Truncating division (C); 0 on division by zero.
    fn div_(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C fmod).
    fn rem_(self, o: Self) -> Self;
    fn and_(self, o: Self) -> Self;
    fn or_(self, o: Self) -> Self;
    fn xor_(self, o: Self) -> Self;
    fn shl_(self, o: Self) -> Self;
    fn shr_(self, o: Self) -> Self;
    fn pow_(self, e: i64) -> Self;
    fn to_f64_(self) -> f64;
    fn from_f64_(v: f64) -> Self;
    fn is_neg(self) -> bool;
}

macro_rules! int_impl {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn add_(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub_(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul_(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div_(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn rem_(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            fn and_(self, o: Self) -> Self { self & o }
            fn or_(self, o: Self) -> Self { self | o }
            fn xor_(self, o: Self) -> Self { self ^ o }
            fn shl_(self, o: Self) -> Self {
                u32::try_from(o).ok().and_then(|s| self.checked_shl(s)).unwrap_or(0)
            }
            fn shr_(self, o: Self) -> Self {
                u32::try_from(o).ok().and_then(|s| self.checked_shr(s)).unwrap_or(0)
            }
            fn pow_(self, e: i64) -> Self {
                if e >= 0 {
                    self.wrapping_pow(e.min(u32::MAX as i64) as u32)
                } else {
                    (self as f64).powf(e as f64) as $t
                }
            }
            fn to_f64_(self) -> f64 { self as f64 }
            fn from_f64_(v: f64) -> Self { v as $t }
            #[allow(unused_comparisons)]
            fn is_neg(self) -> bool { self < 0 }
        }
    )*};
}
int_impl!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Python-style integer mod: the result has the divisor's sign.
fn py_mod<T: Int>(a: T, b: T) -> T {
    let r = a.rem_(b);
    if r != T::default() && (r.is_neg() != b.is_neg()) {
        r.add_(b)
    } else {
        r
    }
}

fn py_fmod<T: Float>(a: T, b: T) -> T {
    let r = a % b;
    if r != T::zero() && ((r < T::zero()) != (b < T::zero())) {
        r + b
    } else {
        r
    }
}

fn int_binary<T: Int>(op: Binary, a: &ArrayD<T>, b: &ArrayD<T>, x: &Tensor) -> OpResult<Tensor>
where
    Tensor: From<ArrayD<T>>,
{
    use Binary::*;
    let out = match op {
        Add => zip2(a, b, |p, q| p.add_(*q))?,
        Sub => zip2(a, b, |p, q| p.sub_(*q))?,
        Mul => zip2(a, b, |p, q| p.mul_(*q))?,
        Div => zip2(a, b, |p, q| p.div_(*q))?,
        Mod { fmod: true } => zip2(a, b, |p, q| p.rem_(*q))?,
        Mod { fmod: false } => zip2(a, b, |p, q| py_mod(*p, *q))?,
        BitwiseAnd => zip2(a, b, |p, q| p.and_(*q))?,
        BitwiseOr => zip2(a, b, |p, q| p.or_(*q))?,
        BitwiseXor => zip2(a, b, |p, q| p.xor_(*q))?,
        BitShift { left: true } => zip2(a, b, |p, q| p.shl_(*q))?,
        BitShift { left: false } => zip2(a, b, |p, q| p.shr_(*q))?,
        PRelu => zip2(a, b, |p, q| if p.is_neg() { p.mul_(*q) } else { *p })?,
        _ => return Err(no_dtype(op_name(op), x)),
    };
    Ok(out.into())
}

fn float_binary<T: Float + Default + Send + Sync>(
    op: Binary,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    x: &Tensor,
) -> OpResult<ArrayD<T>> {
    use Binary::*;
    Ok(match op {
        Add => zip2(a, b, |p, q| *p + *q)?,
        Sub => zip2(a, b, |p, q| *p - *q)?,
        Mul => zip2(a, b, |p, q| *p * *q)?,
        Div => zip2(a, b, |p, q| *p / *q)?,
        Mod { fmod: true } => zip2(a, b, |p, q| *p % *q)?,
        Mod { fmod: false } => zip2(a, b, |p, q| py_fmod(*p, *q))?,
        Pow => {
            if b.len() == 1 && b.iter().next().is_some_and(|e| *e == T::one() + T::one()) {
                super::map1(a, |p| *p * *p)
            } else {
                zip2(a, b, |p, q| p.powf(*q))?
            }
        }
        PRelu => zip2(a, b, |p, q| if *p < T::zero() { *p * *q } else { *p })?,
        _ => return Err(no_dtype(op_name(op), x)),
    })
}

fn op_name(op: Binary) -> &'static str {
    carbide_ir::ops::OpKind::op_type(&carbide_ir::ops::ElementwiseOp::Binary { op, legacy_axis: None })
}

/// Comparison of two same-typed tensors, small floats compared by value.
macro_rules! compare {
    ($a:expr, $b:expr, $name:expr, |$p:ident, $q:ident| $e:expr) => {{
        match ($a, $b) {
            (Tensor::F32(x), Tensor::F32(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::F64(x), Tensor::F64(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::F16(x), Tensor::F16(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::BF16(x), Tensor::BF16(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::I8(x), Tensor::I8(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::I16(x), Tensor::I16(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::I32(x), Tensor::I32(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::I64(x), Tensor::I64(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::U8(x), Tensor::U8(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::U16(x), Tensor::U16(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::U32(x), Tensor::U32(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::U64(x), Tensor::U64(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::Bool(x), Tensor::Bool(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::String(x), Tensor::String(y)) => zip2(x, y, |$p, $q| $e)?,
            (Tensor::Small(d, x), Tensor::Small(e, y)) if d == e => {
                let (d, e) = (*d, *e);
                let x = x.mapv(|v| small_float::to_f64(d, v));
                let y = y.mapv(|v| small_float::to_f64(e, v));
                zip2(&x, &y, |$p, $q| $e)?
            }
            (t, _) => return Err(no_dtype($name, t)),
        }
    }};
}

/// Reshapes B for the pre-opset-7 broadcast that aligns it with A at `axis`.
fn legacy_align(a: &Tensor, b: &Tensor, axis: i64) -> OpResult<Tensor> {
    let ra = a.rank() as i64;
    let rb = b.rank() as i64;
    let ax = if axis < 0 { axis + ra } else { axis };
    if ax < 0 || ax + rb > ra {
        return Err(invalid(format!(
            "axis {axis} cannot align a rank-{rb} B with a rank-{ra} A"
        )));
    }
    let mut shape = vec![1usize; ax as usize];
    shape.extend_from_slice(b.shape());
    shape.resize(ra as usize, 1);
    b.reshaped(&shape)
        .ok_or_else(|| invalid("legacy broadcast reshape failed"))
}

pub(super) fn eval(op: Binary, a: &Tensor, b: &Tensor, legacy_axis: Option<i64>) -> OpResult<Tensor> {
    let name = op_name(op);
    let aligned;
    let b = match legacy_axis {
        Some(ax) => {
            aligned = legacy_align(a, b, ax)?;
            &aligned
        }
        None => b,
    };
    if op == Binary::Pow {
        return pow(a, b);
    }
    if a.dtype() != b.dtype() {
        return Err(invalid(format!(
            "{name}: input dtypes differ ({} and {})",
            a.dtype(),
            b.dtype()
        )));
    }
    use Binary::*;
    let out = match op {
        Equal => Tensor::Bool(compare!(a, b, name, |p, q| p == q)),
        Less => Tensor::Bool(compare!(a, b, name, |p, q| p < q)),
        LessOrEqual => Tensor::Bool(compare!(a, b, name, |p, q| p <= q)),
        Greater => Tensor::Bool(compare!(a, b, name, |p, q| p > q)),
        GreaterOrEqual => Tensor::Bool(compare!(a, b, name, |p, q| p >= q)),
        And | Or | Xor => match (a, b) {
            (Tensor::Bool(x), Tensor::Bool(y)) => Tensor::Bool(match op {
                And => zip2(x, y, |p, q| *p && *q)?,
                Or => zip2(x, y, |p, q| *p || *q)?,
                _ => zip2(x, y, |p, q| *p ^ *q)?,
            }),
            (t, _) => return Err(no_dtype(name, t)),
        },
        _ => match (a, b) {
            (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(float_binary(op, x, y, a)?),
            (Tensor::F64(x), Tensor::F64(y)) => Tensor::F64(float_binary(op, x, y, a)?),
            (Tensor::F16(x), Tensor::F16(y)) => {
                let r = float_binary(op, &x.mapv(f16::to_f32), &y.mapv(f16::to_f32), a)?;
                Tensor::F16(r.mapv(f16::from_f32))
            }
            (Tensor::BF16(x), Tensor::BF16(y)) => {
                let r = float_binary(op, &x.mapv(bf16::to_f32), &y.mapv(bf16::to_f32), a)?;
                Tensor::BF16(r.mapv(bf16::from_f32))
            }
            (Tensor::I8(x), Tensor::I8(y)) => int_binary(op, x, y, a)?,
            (Tensor::I16(x), Tensor::I16(y)) => int_binary(op, x, y, a)?,
            (Tensor::I32(x), Tensor::I32(y)) => int_binary(op, x, y, a)?,
            (Tensor::I64(x), Tensor::I64(y)) => int_binary(op, x, y, a)?,
            (Tensor::U8(x), Tensor::U8(y)) => int_binary(op, x, y, a)?,
            (Tensor::U16(x), Tensor::U16(y)) => int_binary(op, x, y, a)?,
            (Tensor::U32(x), Tensor::U32(y)) => int_binary(op, x, y, a)?,
            (Tensor::U64(x), Tensor::U64(y)) => int_binary(op, x, y, a)?,
            (t, _) => return Err(no_dtype(name, t)),
        },
    };
    if op == PRelu && out.shape() != a.shape() {
        return Err(invalid(format!(
            "PRelu: slope shape {:?} does not broadcast to X shape {:?}",
            b.shape(),
            a.shape()
        )));
    }
    Ok(out)
}

/// A numeric tensor's values as f64 in its own shape.
fn as_f64_array(t: &Tensor) -> OpResult<ArrayD<f64>> {
    let v = match t {
        Tensor::Small(d, a) => a.iter().map(|&b| small_float::to_f64(*d, b)).collect(),
        t => t.to_f64_vec().ok_or_else(|| no_dtype("Pow", t))?,
    };
    ArrayD::from_shape_vec(t.shape(), v).map_err(|e| invalid(e.to_string()))
}

fn int_pow<T: Int>(a: &ArrayD<T>, e: &Tensor) -> OpResult<ArrayD<T>> {
    if e.dtype().is_int() && !e.dtype().is_small() {
        let v = e.to_i64_vec().ok_or_else(|| no_dtype("Pow", e))?;
        let ea = ArrayD::from_shape_vec(e.shape(), v).map_err(|er| invalid(er.to_string()))?;
        zip2(a, &ea, |p, q| p.pow_(*q))
    } else {
        let ea = as_f64_array(e)?;
        zip2(a, &ea, |p, q| T::from_f64_(p.to_f64_().powf(*q)))
    }
}

/// Pow with any numeric exponent dtype; the result has the base's dtype.
fn pow(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let op = Binary::Pow;
    Ok(match a {
        Tensor::F32(x) => match b {
            Tensor::F32(y) => Tensor::F32(float_binary(op, x, y, a)?),
            _ => Tensor::F32(float_binary(op, x, &as_f64_array(b)?.mapv(|v| v as f32), a)?),
        },
        Tensor::F64(x) => Tensor::F64(float_binary(op, x, &as_f64_array(b)?, a)?),
        Tensor::F16(x) => {
            let e = as_f64_array(b)?.mapv(|v| v as f32);
            Tensor::F16(float_binary(op, &x.mapv(f16::to_f32), &e, a)?.mapv(f16::from_f32))
        }
        Tensor::BF16(x) => {
            let e = as_f64_array(b)?.mapv(|v| v as f32);
            Tensor::BF16(float_binary(op, &x.mapv(bf16::to_f32), &e, a)?.mapv(bf16::from_f32))
        }
        Tensor::I8(x) => Tensor::I8(int_pow(x, b)?),
        Tensor::I16(x) => Tensor::I16(int_pow(x, b)?),
        Tensor::I32(x) => Tensor::I32(int_pow(x, b)?),
        Tensor::I64(x) => Tensor::I64(int_pow(x, b)?),
        Tensor::U8(x) => Tensor::U8(int_pow(x, b)?),
        Tensor::U16(x) => Tensor::U16(int_pow(x, b)?),
        Tensor::U32(x) => Tensor::U32(int_pow(x, b)?),
        Tensor::U64(x) => Tensor::U64(int_pow(x, b)?),
        t => return Err(no_dtype("Pow", t)),
    })
}

fn fmax<T: Float>(p: T, q: T) -> T {
    if p.is_nan() || p >= q {
        p
    } else {
        q
    }
}

fn fmin<T: Float>(p: T, q: T) -> T {
    if p.is_nan() || p <= q {
        p
    } else {
        q
    }
}

fn max_min(v: Variadic, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let mx = v == Variadic::Max;
    macro_rules! ints {
        ($x:expr, $y:expr) => {
            if mx {
                zip2($x, $y, |p, q| *p.max(q))?
            } else {
                zip2($x, $y, |p, q| *p.min(q))?
            }
        };
    }
    macro_rules! floats {
        ($x:expr, $y:expr) => {
            if mx {
                zip2($x, $y, |p, q| fmax(*p, *q))?
            } else {
                zip2($x, $y, |p, q| fmin(*p, *q))?
            }
        };
    }
    let name = if mx { "Max" } else { "Min" };
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(floats!(x, y)),
        (Tensor::F64(x), Tensor::F64(y)) => Tensor::F64(floats!(x, y)),
        (Tensor::F16(x), Tensor::F16(y)) => Tensor::F16(floats!(x, y)),
        (Tensor::BF16(x), Tensor::BF16(y)) => Tensor::BF16(floats!(x, y)),
        (Tensor::I8(x), Tensor::I8(y)) => Tensor::I8(ints!(x, y)),
        (Tensor::I16(x), Tensor::I16(y)) => Tensor::I16(ints!(x, y)),
        (Tensor::I32(x), Tensor::I32(y)) => Tensor::I32(ints!(x, y)),
        (Tensor::I64(x), Tensor::I64(y)) => Tensor::I64(ints!(x, y)),
        (Tensor::U8(x), Tensor::U8(y)) => Tensor::U8(ints!(x, y)),
        (Tensor::U16(x), Tensor::U16(y)) => Tensor::U16(ints!(x, y)),
        (Tensor::U32(x), Tensor::U32(y)) => Tensor::U32(ints!(x, y)),
        (Tensor::U64(x), Tensor::U64(y)) => Tensor::U64(ints!(x, y)),
        (t, _) => return Err(no_dtype(name, t)),
    })
}

pub(super) fn variadic(v: Variadic, ts: &[&Tensor]) -> OpResult<Tensor> {
    let (first, rest) = ts.split_first().ok_or_else(|| invalid("needs at least one input"))?;
    for t in rest {
        if t.dtype() != first.dtype() {
            return Err(invalid(format!(
                "input dtypes differ ({} and {})",
                first.dtype(),
                t.dtype()
            )));
        }
    }
    let mut acc = (*first).clone();
    for t in rest {
        acc = match v {
            Variadic::Max | Variadic::Min => max_min(v, &acc, t)?,
            Variadic::Sum | Variadic::Mean => eval(Binary::Add, &acc, t, None)?,
        };
    }
    if rest.is_empty() {
        // Check the dtype even when there is nothing to combine.
        match v {
            Variadic::Max | Variadic::Min => {
                max_min(v, &acc, &acc)?;
            }
            _ => {
                eval(Binary::Add, &acc, &acc, None)?;
            }
        }
    }
    if v == Variadic::Mean {
        let n = ts.len() as f64;
        acc = match &acc {
            Tensor::F32(a) => Tensor::F32(a.mapv(|x| x / n as f32)),
            Tensor::F64(a) => Tensor::F64(a.mapv(|x| x / n)),
            Tensor::F16(a) => Tensor::F16(a.mapv(|x| f16::from_f32(x.to_f32() / n as f32))),
            Tensor::BF16(a) => Tensor::BF16(a.mapv(|x| bf16::from_f32(x.to_f32() / n as f32))),
            t => return Err(no_dtype("Mean", t)),
        };
    }
    Ok(acc)
}

fn scalar_of<T: Clone>(a: &ArrayD<T>, what: &str) -> OpResult<T> {
    if a.len() != 1 {
        return Err(invalid(format!("{what} must be a scalar, got shape {:?}", a.shape())));
    }
    a.iter()
        .next()
        .cloned()
        .ok_or_else(|| invalid(format!("{what} is empty")))
}

fn clip_arr<T: PartialOrd + Copy + Default + Send + Sync>(a: &ArrayD<T>, lo: Option<T>, hi: Option<T>) -> ArrayD<T> {
    super::map1(a, move |v| {
        let mut v = *v;
        if let Some(l) = lo {
            if v < l {
                v = l;
            }
        }
        if let Some(h) = hi {
            if v > h {
                v = h;
            }
        }
        v
    })
}

/// Clip: bounds from inputs (opset 11+) or attributes (earlier opsets);
/// when min > max every value becomes max.
pub(super) fn clip(
    x: &Tensor,
    min_t: Option<&Tensor>,
    max_t: Option<&Tensor>,
    min_a: Option<f32>,
    max_a: Option<f32>,
) -> OpResult<Tensor> {
    for t in [min_t, max_t].into_iter().flatten() {
        if t.dtype() != x.dtype() {
            return Err(invalid(format!(
                "Clip: bound dtype {} differs from input dtype {}",
                t.dtype(),
                x.dtype()
            )));
        }
    }
    macro_rules! case {
        ($V:ident, $a:expr, $conv:expr) => {{
            let lo = match min_t {
                Some(Tensor::$V(m)) => Some(scalar_of(m, "min")?),
                _ => min_a.map($conv),
            };
            let hi = match max_t {
                Some(Tensor::$V(m)) => Some(scalar_of(m, "max")?),
                _ => max_a.map($conv),
            };
            Tensor::$V(clip_arr($a, lo, hi))
        }};
    }
    Ok(match x {
        Tensor::F32(a) => case!(F32, a, |v| v),
        Tensor::F64(a) => case!(F64, a, |v| v as f64),
        Tensor::F16(a) => case!(F16, a, f16::from_f32),
        Tensor::BF16(a) => case!(BF16, a, bf16::from_f32),
        Tensor::I8(a) => case!(I8, a, |v| v as i8),
        Tensor::I16(a) => case!(I16, a, |v| v as i16),
        Tensor::I32(a) => case!(I32, a, |v| v as i32),
        Tensor::I64(a) => case!(I64, a, |v| v as i64),
        Tensor::U8(a) => case!(U8, a, |v| v as u8),
        Tensor::U16(a) => case!(U16, a, |v| v as u16),
        Tensor::U32(a) => case!(U32, a, |v| v as u32),
        Tensor::U64(a) => case!(U64, a, |v| v as u64),
        t => return Err(no_dtype("Clip", t)),
    })
}

// The same closure serves String (needs clone) and Copy dtypes.
#[allow(clippy::clone_on_copy)]
pub(super) fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> OpResult<Tensor> {
    let Tensor::Bool(c) = c else {
        return Err(invalid(format!("Where: condition must be bool, got {}", c.dtype())));
    };
    let out = tensor_zip_map!(x, y, (p, q) => zip3(c, p, q, |k, u, v| if *k { u.clone() } else { v.clone() })?);
    out.ok_or_else(|| {
        invalid(format!(
            "Where: X and Y dtypes differ ({} and {})",
            x.dtype(),
            y.dtype()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::IxDyn;

    fn t<T: Clone>(shape: &[usize], v: &[T]) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn broadcasting_add_and_int_division() {
        let a = Tensor::F32(t(&[2, 3], &[1., 2., 3., 4., 5., 6.]));
        let b = Tensor::F32(t(&[3], &[10., 20., 30.]));
        let c = eval(Binary::Add, &a, &b, None).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_f64_vec().unwrap(), vec![11., 22., 33., 14., 25., 36.]);
        let col = Tensor::F32(t(&[2, 1], &[1., 2.]));
        let d = eval(Binary::Mul, &col, &b, None).unwrap();
        assert_eq!(d.to_f64_vec().unwrap(), vec![10., 20., 30., 20., 40., 60.]);
        let x = Tensor::I32(t(&[4], &[7, -7, 7, 1]));
        let y = Tensor::I32(t(&[4], &[2, 2, -2, 0]));
        assert_eq!(
            eval(Binary::Div, &x, &y, None).unwrap().to_i64_vec().unwrap(),
            vec![3, -3, -3, 0]
        );
        assert_eq!(
            eval(Binary::Mod { fmod: false }, &x, &y, None)
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![1, 1, -1, 0]
        );
        assert_eq!(
            eval(Binary::Mod { fmod: true }, &x, &y, None)
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![1, -1, 1, 0]
        );
        let bad = Tensor::F32(t(&[4], &[0.; 4]));
        assert!(eval(Binary::Add, &a, &bad, None).is_err());
        assert!(eval(Binary::Add, &a, &x, None).is_err());
    }

    #[test]
    fn legacy_axis_broadcast() {
        let a = Tensor::F32(t(&[2, 3, 2], &[0.; 12]));
        let b = Tensor::F32(t(&[3], &[1., 2., 3.]));
        let c = eval(Binary::Add, &a, &b, Some(1)).unwrap();
        assert_eq!(c.to_f64_vec().unwrap()[..6], [1., 1., 2., 2., 3., 3.]);
    }

    #[test]
    fn pow_mixed_and_variadic_and_clip_and_where() {
        let a = Tensor::F32(t(&[3], &[1., 2., 3.]));
        let e = Tensor::I64(t(&[1], &[3]));
        assert_eq!(pow(&a, &e).unwrap().to_f64_vec().unwrap(), vec![1., 8., 27.]);
        let ai = Tensor::I32(t(&[3], &[1, 2, 3]));
        let ef = Tensor::F32(t(&[3], &[2., 0.5, 2.]));
        assert_eq!(pow(&ai, &ef).unwrap().to_i64_vec().unwrap(), vec![1, 1, 9]);
        let b = Tensor::F32(t(&[1], &[f32::NAN]));
        let m = variadic(Variadic::Max, &[&a, &b]).unwrap();
        assert!(m.to_f64_vec().unwrap().iter().all(|v| v.is_nan()));
        let m = variadic(Variadic::Mean, &[&a, &a, &a]).unwrap();
        assert_eq!(m.to_f64_vec().unwrap(), vec![1., 2., 3.]);
        let lo = Tensor::F32(t(&[], &[1.5]));
        assert_eq!(
            clip(&a, Some(&lo), None, None, None).unwrap().to_f64_vec().unwrap(),
            vec![1.5, 2., 3.]
        );
        assert_eq!(
            clip(&a, None, None, Some(5.0), Some(0.0))
                .unwrap()
                .to_f64_vec()
                .unwrap(),
            vec![0., 0., 0.]
        );
        let c = Tensor::Bool(t(&[2, 1], &[true, false]));
        let w = where_(&c, &a, &Tensor::F32(t(&[], &[0.]))).unwrap();
        assert_eq!(w.to_f64_vec().unwrap(), vec![1., 2., 3., 0., 0., 0.]);
    }

    #[test]
    fn comparisons_and_shifts() {
        let a = Tensor::String(t(&[2], &["a".to_string(), "b".to_string()]));
        let b = Tensor::String(t(&[1], &["b".to_string()]));
        assert_eq!(
            eval(Binary::Equal, &a, &b, None).unwrap().to_i64_vec().unwrap(),
            vec![0, 1]
        );
        let x = Tensor::U8(t(&[3], &[1, 2, 255]));
        let s = Tensor::U8(t(&[3], &[1, 8, 1]));
        assert_eq!(
            eval(Binary::BitShift { left: true }, &x, &s, None)
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![2, 0, 254]
        );
    }
}
