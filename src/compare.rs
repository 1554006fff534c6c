//! Numerical comparison of runtime values against expected ones, with the
//! tolerances of the ONNX backend tests: floats within `atol + rtol * |expected|`
//! (NaN equals NaN), integers, bools and strings exactly, shapes and dtypes
//! exactly.

use carbide_ir::{Tensor, Value};

/// Float tolerance for a comparison.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { rtol: 1e-3, atol: 1e-5 }
    }
}

/// `Ok` when `actual` matches `expected`; otherwise a message saying where
/// and by how much they differ.
pub fn compare_values(expected: &Value, actual: &Value, tol: Tolerance) -> Result<(), String> {
    match (expected, actual) {
        (Value::Tensor(e), Value::Tensor(a)) => compare_tensors(e, a, tol),
        (Value::Sequence(e), Value::Sequence(a)) => {
            if e.len() != a.len() {
                return Err(format!("sequence length {} expected, got {}", e.len(), a.len()));
            }
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                compare_values(x, y, tol).map_err(|m| format!("sequence element {i}: {m}"))?;
            }
            Ok(())
        }
        (Value::Optional(e), Value::Optional(a)) => match (e, a) {
            (None, None) => Ok(()),
            (Some(x), Some(y)) => compare_values(x, y, tol),
            (None, Some(_)) => Err("expected an empty optional, got a value".into()),
            (Some(_), None) => Err("expected a value, got an empty optional".into()),
        },
        // An optional holding a value may be compared with the bare value.
        (Value::Optional(Some(e)), a) => compare_values(e, a, tol),
        (e, Value::Optional(Some(a))) => compare_values(e, a, tol),
        (e, a) => Err(format!("expected a {}, got a {}", kind(e), kind(a))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Tensor(_) => "tensor",
        Value::Sequence(_) => "sequence",
        Value::Optional(_) => "optional",
    }
}

pub fn compare_tensors(e: &Tensor, a: &Tensor, tol: Tolerance) -> Result<(), String> {
    if e.dtype() != a.dtype() {
        return Err(format!("expected dtype {}, got {}", e.dtype(), a.dtype()));
    }
    if e.shape() != a.shape() {
        return Err(format!("expected shape {:?}, got {:?}", e.shape(), a.shape()));
    }
    match (e, a) {
        (Tensor::String(x), Tensor::String(y)) => {
            if let Some((i, (p, q))) = x.iter().zip(y.iter()).enumerate().find(|(_, (p, q))| p != q) {
                return Err(format!("element {i}: expected {p:?}, got {q:?}"));
            }
            Ok(())
        }
        (Tensor::Small(d, x), Tensor::Small(_, y)) => {
            if d.is_small_float() {
                let f = |b: &u8| carbide_ir::small_float::to_f64(*d, *b);
                return compare_floats(
                    &x.iter().map(f).collect::<Vec<_>>(),
                    &y.iter().map(f).collect::<Vec<_>>(),
                    tol,
                );
            }
            if let Some((i, (p, q))) = x.iter().zip(y.iter()).enumerate().find(|(_, (p, q))| p != q) {
                return Err(format!("element {i}: expected bits {p:#x}, got {q:#x}"));
            }
            Ok(())
        }
        _ if e.dtype().is_float() => {
            let (x, y) = (e.to_f64_vec().unwrap_or_default(), a.to_f64_vec().unwrap_or_default());
            compare_floats(&x, &y, tol)
        }
        _ => {
            let (x, y) = (e.to_i64_vec().unwrap_or_default(), a.to_i64_vec().unwrap_or_default());
            if let Some((i, (p, q))) = x.iter().zip(&y).enumerate().find(|(_, (p, q))| p != q) {
                return Err(format!("element {i}: expected {p}, got {q}"));
            }
            Ok(())
        }
    }
}

fn compare_floats(x: &[f64], y: &[f64], tol: Tolerance) -> Result<(), String> {
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut bad = 0usize;
    for (i, (&p, &q)) in x.iter().zip(y).enumerate() {
        let ok = (p.is_nan() && q.is_nan()) || p == q || (p - q).abs() <= tol.atol + tol.rtol * p.abs();
        if !ok {
            bad += 1;
            let d = if q.is_nan() || p.is_nan() {
                f64::INFINITY
            } else {
                (p - q).abs()
            };
            if worst.is_none_or(|(_, wp, wq)| d > (wp - wq).abs() || wq.is_nan()) {
                worst = Some((i, p, q));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, p, q)) => Err(format!(
            "{bad} of {} elements differ; worst at {i}: expected {p}, got {q} (rtol {}, atol {})",
            x.len(),
            tol.rtol,
            tol.atol
        )),
    }
}
