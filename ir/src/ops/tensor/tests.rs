//! Parsing and inference tests for the tensor family.

use super::*;
use crate::attr::{Attr, Attrs};
use crate::types::Dim;

fn parse(op: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_inputs: usize) -> IrResult<Option<TensorOp>> {
    let items = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let mut cx = ParseCtx {
        domain: "",
        op_type: op,
        opset,
        attrs: Attrs::new(op, items),
        num_inputs,
        num_outputs: 1,
    };
    TensorOp::parse(&mut cx)
}

fn infer_one(
    op: &TensorOp,
    inputs: Vec<Option<ValueType>>,
    consts: Vec<Option<&Tensor>>,
    n_out: usize,
) -> Vec<ValueType> {
    let cx = InferCtx {
        inputs: &inputs,
        consts: &consts,
        num_outputs: n_out,
        op: op.op_type(),
    };
    op.infer(&cx).unwrap()
}

fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}

#[test]
fn parse_rejects_unknown_attrs_and_modes() {
    assert!(parse("Relu", 13, vec![], 1).unwrap().is_none());
    assert!(parse("Transpose", 13, vec![("bogus", Attr::Int(1))], 1).is_err());
    assert!(parse("Pad", 19, vec![("mode", Attr::String(b"mirror".to_vec()))], 2).is_err());
    assert!(parse("Pad", 18, vec![("mode", Attr::String(b"wrap".to_vec()))], 2).is_err());
    let p = parse(
        "Pad",
        2,
        vec![("pads", Attr::Ints(vec![1, 1])), ("value", Attr::Float(2.0))],
        1,
    )
    .unwrap();
    assert_eq!(
        p,
        Some(TensorOp::Pad {
            mode: PadMode::Constant,
            pads: Some(vec![1, 1]),
            value: 2.0
        })
    );
    let u = parse("Unsqueeze", 11, vec![("axes", Attr::Ints(vec![0]))], 1).unwrap();
    assert_eq!(u, Some(TensorOp::Unsqueeze { axes: Some(vec![0]) }));
    assert!(parse("Unsqueeze", 11, vec![], 1).is_err());
    let c = parse("Constant", 13, vec![("value_ints", Attr::Ints(vec![1, 2]))], 0).unwrap();
    assert_eq!(
        c,
        Some(TensorOp::Constant {
            value: Tensor::from_i64s(vec![1, 2])
        })
    );
}

#[test]
fn reshape_infers_from_constant_and_symbols() {
    let op = TensorOp::Reshape {
        allowzero: false,
        shape: None,
    };
    let x = ValueType::tensor(DType::F32, vec![sym("b"), sym("s"), Dim::Known(768)]);
    let target = Tensor::from_i64s(vec![0, 0, 12, -1]);
    let out = infer_one(
        &op,
        vec![Some(x.clone()), Some(ValueType::Unknown)],
        vec![None, Some(&target)],
        1,
    );
    assert_eq!(
        out[0],
        ValueType::tensor(DType::F32, vec![sym("b"), sym("s"), Dim::Known(12), Dim::Known(64)])
    );
    let target = Tensor::from_i64s(vec![-1, 768]);
    let x2 = ValueType::tensor(DType::F32, vec![sym("b"), Dim::Known(768)]);
    let out = infer_one(
        &op,
        vec![Some(x2), Some(ValueType::Unknown)],
        vec![None, Some(&target)],
        1,
    );
    assert_eq!(out[0], ValueType::tensor(DType::F32, vec![sym("b"), Dim::Known(768)]));
}

#[test]
fn slice_split_shape_infer() {
    let x = ValueType::tensor(DType::F32, vec![Dim::Known(20), Dim::Known(10), sym("n")]);
    let starts = Tensor::from_i64s(vec![0, 10]);
    let ends = Tensor::from_i64s(vec![3, -1]);
    let axes = Tensor::from_i64s(vec![0, 1]);
    let steps = Tensor::from_i64s(vec![1, -3]);
    let op = TensorOp::Slice {
        starts: None,
        ends: None,
        axes: None,
    };
    let u = Some(ValueType::Unknown);
    let out = infer_one(
        &op,
        vec![Some(x.clone()), u.clone(), u.clone(), u.clone(), u.clone()],
        vec![None, Some(&starts), Some(&ends), Some(&axes), Some(&steps)],
        1,
    );
    assert_eq!(
        out[0],
        ValueType::tensor(DType::F32, vec![Dim::Known(3), Dim::Known(0), sym("n")])
    );
    let op = TensorOp::Split {
        axis: 0,
        split: None,
        num_outputs: Some(3),
    };
    let out = infer_one(&op, vec![Some(x.clone())], vec![None], 3);
    let d0: Vec<_> = out
        .iter()
        .map(|t| t.as_tensor().unwrap().shape.as_ref().unwrap()[0].clone())
        .collect();
    assert_eq!(d0, vec![Dim::Known(7), Dim::Known(7), Dim::Known(6)]);
    let op = TensorOp::Shape { start: 1, end: None };
    let out = infer_one(&op, vec![Some(x)], vec![None], 1);
    assert_eq!(out[0], ValueType::tensor(DType::I64, vec![Dim::Known(2)]));
}

#[test]
fn slice_range_matches_numpy() {
    assert_eq!(slice_range(0, i64::MAX, 1, 5), (0, 5));
    assert_eq!(slice_range(-1, i64::MIN, -1, 5), (4, 5));
    assert_eq!(slice_range(20, 1, -2, 10), (9, 4));
    assert_eq!(slice_range(3, 1, 1, 10), (3, 0));
    assert_eq!(slice_range(0, -1, -1, 0), (-1, 0));
}
