//! numpy arrays <-> Carbide values.
//!
//! Inputs are copied into owned tensors (whatever their strides or byte
//! order), so a run never reads memory Python may change or free; outputs
//! are handed to numpy without a copy and owned by the array.
//!
//! bfloat16 and the float8 formats have no numpy dtype of their own; they
//! map to the `ml_dtypes` types (which onnx depends on), reinterpreting the
//! bit patterns that Carbide holds.

use crate::errors::Failure;
use carbide_ir::{DType, Dim, Tensor, TensorType, Value, ValueType};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use numpy::{
    Element, IntoPyArray, PyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// Dtypes held by numpy only through `ml_dtypes`: Carbide dtype, ml_dtypes
/// name, and the unsigned integer numpy type of the same width.
const ML_DTYPES: [(DType, &str, &str); 5] = [
    (DType::BF16, "bfloat16", "uint16"),
    (DType::F8E4M3FN, "float8_e4m3fn", "uint8"),
    (DType::F8E4M3FNUZ, "float8_e4m3fnuz", "uint8"),
    (DType::F8E5M2, "float8_e5m2", "uint8"),
    (DType::F8E5M2FNUZ, "float8_e5m2fnuz", "uint8"),
];

/// The ONNX type string of a static type, as onnxruntime prints it: `tensor(float)`,
/// `seq(tensor(int64))`, `optional(tensor(float))`, `map(int64,tensor(float))`.
pub fn type_string(ty: &ValueType) -> String {
    fn dtype_name(d: Option<DType>) -> &'static str {
        d.map_or("undefined", DType::onnx_name)
    }
    match ty {
        ValueType::Tensor(t) => format!("tensor({})", dtype_name(t.dtype)),
        ValueType::Sequence(e) => format!("seq({})", type_string(e)),
        ValueType::Optional(e) => format!("optional({})", type_string(e)),
        ValueType::Map(k, v) => format!("map({},{})", k.onnx_name(), type_string(v)),
        ValueType::Unknown => "unknown".to_string(),
    }
}

/// A shape as onnxruntime reports it: ints, symbolic names as str, None for unknown dims.
pub fn shape_object<'py>(py: Python<'py>, ty: &ValueType) -> PyResult<Bound<'py, PyList>> {
    let dims: Vec<Bound<'py, PyAny>> = match ty {
        ValueType::Tensor(TensorType { shape: Some(s), .. }) => s
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Ok((*n).into_pyobject(py)?.into_any()),
                Dim::Sym(s) => Ok(PyString::new(py, s).into_any()),
                Dim::Unknown => Ok(py.None().into_bound(py)),
            })
            .collect::<PyResult<_>>()?,
        _ => Vec::new(),
    };
    PyList::new(py, dims)
}

/// Human-readable static type for error messages: `tensor(float) [batch,3,224,224]`.
pub fn describe_type(ty: &ValueType) -> String {
    match ty {
        ValueType::Tensor(TensorType { shape: Some(s), .. }) => {
            let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("{} [{}]", type_string(ty), dims.join(","))
        }
        _ => type_string(ty),
    }
}

fn describe_tensor(t: &Tensor) -> String {
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    format!("tensor({}) [{}]", t.dtype().onnx_name(), dims.join(","))
}

/// Converts a fed Python object for input `name` declared as `declared`, and
/// checks it against the declared dtype, rank and fixed dims.
pub fn input_value(name: &str, obj: &Bound<'_, PyAny>, declared: &ValueType) -> Result<Value, PyErr> {
    match declared {
        ValueType::Sequence(elem) => {
            let items = if let Ok(list) = obj.cast::<PyList>() {
                list.iter().collect::<Vec<_>>()
            } else if let Ok(tuple) = obj.cast::<PyTuple>() {
                tuple.iter().collect()
            } else {
                return Err(Failure::bad_input(
                    name,
                    format!(
                        "input '{name}': expected a list of arrays ({}), got {}",
                        type_string(declared),
                        type_name(obj)
                    ),
                )
                .into());
            };
            let values = items
                .iter()
                .map(|item| input_value(name, item, elem))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(Value::Sequence(values))
        }
        ValueType::Optional(inner) => {
            if obj.is_none() {
                Ok(Value::Optional(None))
            } else {
                Ok(Value::Optional(Some(Box::new(input_value(name, obj, inner)?))))
            }
        }
        ValueType::Map(..) => {
            Err(Failure::bad_input(name, format!("input '{name}': map inputs are not supported")).into())
        }
        ValueType::Tensor(tt) => {
            let tensor = tensor_from_py(name, obj)?;
            check_tensor(name, tt, declared, &tensor)?;
            Ok(Value::Tensor(tensor))
        }
        ValueType::Unknown => Ok(Value::Tensor(tensor_from_py(name, obj)?)),
    }
}

fn check_tensor(name: &str, tt: &TensorType, declared: &ValueType, t: &Tensor) -> Result<(), Failure> {
    let mismatch = || {
        Failure::bad_input(
            name,
            format!(
                "input '{name}': expected {}, got {}",
                describe_type(declared),
                describe_tensor(t)
            ),
        )
    };
    if tt.dtype.is_some_and(|d| d != t.dtype()) {
        return Err(mismatch());
    }
    if let Some(shape) = &tt.shape {
        if shape.len() != t.rank() {
            return Err(mismatch());
        }
        if shape
            .iter()
            .zip(t.shape())
            .any(|(d, &n)| d.known().is_some_and(|k| k != n))
        {
            return Err(mismatch());
        }
    }
    Ok(())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Reads any array-like (numpy array of any layout and byte order, list,
/// scalar) into an owned tensor.
pub fn tensor_from_py(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let array = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => np
            .call_method1("asarray", (obj,))
            .and_then(|a| Ok(a.cast_into::<PyUntypedArray>()?))
            .map_err(|e| {
                Failure::bad_input(
                    name,
                    format!(
                        "input '{name}': cannot convert {} to a numpy array: {e}",
                        type_name(obj)
                    ),
                )
            })?,
    };
    let descr = array.dtype();
    // Foreign byte order: numpy converts to native first, so the typed reads below apply.
    let array = if descr.is_native_byteorder() == Some(false) {
        let native = descr.call_method1("newbyteorder", ("=",))?;
        array.call_method1("astype", (native,))?.cast_into::<PyUntypedArray>()?
    } else {
        array
    };
    let descr = array.dtype();
    let shape = array.shape().to_vec();

    macro_rules! plain {
        ($($t:ty => $variant:ident),* $(,)?) => {
            $(
                if descr.is_equiv_to(&numpy::dtype::<$t>(py)) {
                    return Ok(Tensor::$variant(read_array::<$t>(&array)?));
                }
            )*
        };
    }
    plain!(
        f32 => F32, f64 => F64, f16 => F16,
        i8 => I8, i16 => I16, i32 => I32, i64 => I64,
        u8 => U8, u16 => U16, u32 => U32, u64 => U64,
        bool => Bool,
    );

    match descr.kind() {
        b'U' | b'S' | b'O' => return Ok(Tensor::String(read_strings(name, &array, &shape)?)),
        _ => {}
    }
    let dtype_name: String = descr.getattr("name")?.extract()?;
    if let Some(&(dtype, _, bits)) = ML_DTYPES.iter().find(|(_, n, _)| *n == dtype_name) {
        let raw = array
            .call_method1("view", (np.getattr(bits)?,))?
            .cast_into::<PyUntypedArray>()?;
        return Ok(match dtype {
            DType::BF16 => Tensor::BF16(read_array::<u16>(&raw)?.mapv(bf16::from_bits)),
            d => Tensor::Small(d, read_array::<u8>(&raw)?),
        });
    }
    Err(Failure::bad_input(
        name,
        format!("input '{name}': numpy dtype {dtype_name} has no Carbide equivalent"),
    )
    .into())
}

/// Copies a typed array (any strides) into a standard-layout owned array.
fn read_array<T: Element + Clone>(array: &Bound<'_, PyUntypedArray>) -> PyResult<ArrayD<T>> {
    let typed = array.cast::<PyArrayDyn<T>>()?;
    let view = typed.try_readonly()?;
    Ok(view.as_array().to_owned())
}

fn read_strings(name: &str, array: &Bound<'_, PyUntypedArray>, shape: &[usize]) -> PyResult<ArrayD<String>> {
    let flat = array.call_method1("reshape", (-1,))?.call_method0("tolist")?;
    let items = flat.cast::<PyList>()?;
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        if let Ok(s) = item.cast::<PyString>() {
            out.push(s.extract::<String>()?);
        } else if let Ok(b) = item.cast::<PyBytes>() {
            let s = std::str::from_utf8(b.as_bytes())
                .map_err(|_| Failure::bad_input(name, format!("input '{name}': a bytes element is not valid UTF-8")))?;
            out.push(s.to_string());
        } else {
            return Err(Failure::bad_input(
                name,
                format!(
                    "input '{name}': an object array must hold str (or bytes), found {}",
                    type_name(&item)
                ),
            )
            .into());
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out)
        .map_err(|e| Failure::bad_input(name, format!("input '{name}': {e}")).into())
}

/// Converts an output value: tensors become numpy arrays (owning their data),
/// sequences lists, optionals None or their value.
pub fn value_to_py<'py>(py: Python<'py>, name: &str, value: Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Tensor(t) => tensor_to_py(py, name, t),
        Value::Sequence(items) => {
            let converted = items
                .into_iter()
                .map(|v| value_to_py(py, name, v))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, converted)?.into_any())
        }
        Value::Optional(None) => Ok(py.None().into_bound(py)),
        Value::Optional(Some(v)) => value_to_py(py, name, *v),
    }
}

fn tensor_to_py<'py>(py: Python<'py>, name: &str, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    Ok(match t {
        Tensor::F32(a) => a.into_pyarray(py).into_any(),
        Tensor::F64(a) => a.into_pyarray(py).into_any(),
        Tensor::F16(a) => a.into_pyarray(py).into_any(),
        Tensor::I8(a) => a.into_pyarray(py).into_any(),
        Tensor::I16(a) => a.into_pyarray(py).into_any(),
        Tensor::I32(a) => a.into_pyarray(py).into_any(),
        Tensor::I64(a) => a.into_pyarray(py).into_any(),
        Tensor::U8(a) => a.into_pyarray(py).into_any(),
        Tensor::U16(a) => a.into_pyarray(py).into_any(),
        Tensor::U32(a) => a.into_pyarray(py).into_any(),
        Tensor::U64(a) => a.into_pyarray(py).into_any(),
        Tensor::Bool(a) => a.into_pyarray(py).into_any(),
        Tensor::String(a) => {
            let objects = a.map(|s| PyString::new(py, s).unbind());
            PyArray::from_owned_object_array(py, objects).into_any()
        }
        Tensor::BF16(a) => ml_dtypes_view(py, name, DType::BF16, a.mapv(bf16::to_bits).into_pyarray(py).into_any())?,
        Tensor::Small(d, a) => ml_dtypes_view(py, name, d, a.into_pyarray(py).into_any())?,
    })
}

/// Reinterprets an unsigned-integer array of bit patterns as the ml_dtypes type of `dtype`.
fn ml_dtypes_view<'py>(
    py: Python<'py>,
    name: &str,
    dtype: DType,
    bits: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(&(_, ml_name, _)) = ML_DTYPES.iter().find(|(d, _, _)| *d == dtype) else {
        return Err(Failure::new(
            crate::errors::Kind::UnsupportedOp,
            format!(
                "output '{name}': dtype {} has no numpy representation",
                dtype.onnx_name()
            ),
        )
        .into());
    };
    let ml = py.import("ml_dtypes").map_err(|_| {
        Failure::new(
            crate::errors::Kind::UnsupportedOp,
            format!(
                "output '{name}': dtype {} needs the ml_dtypes package (pip install ml_dtypes)",
                dtype.onnx_name()
            ),
        )
    })?;
    bits.call_method1("view", (ml.getattr(ml_name)?,))
}
