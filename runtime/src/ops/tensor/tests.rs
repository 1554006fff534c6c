//! Kernel tests for the tensor family; expected numbers follow numpy /
//! onnx.reference.

use super::eval;
use crate::error::{OpError, OpResult};
use crate::ops::{EvalCtx, SubgraphRunner};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::tensor::{PadMode, ScatterReduction};
use carbide_ir::ops::TensorOp;
use carbide_ir::{DType, Graph, Tensor, Value};

struct NoRunner;
impl SubgraphRunner for NoRunner {
    fn run_subgraph(&self, _: &Graph, _: Vec<Value>) -> OpResult<Vec<Value>> {
        unreachable!()
    }
}

fn run_n(op: TensorOp, inputs: &[Option<Tensor>], n: usize) -> OpResult<Vec<Tensor>> {
    let vals: Vec<Option<Value>> = inputs.iter().map(|t| t.clone().map(Value::Tensor)).collect();
    let refs: Vec<Option<&Value>> = vals.iter().map(|v| v.as_ref()).collect();
    let cx = EvalCtx {
        num_outputs: n,
        runner: &NoRunner,
        seed: 0,
    };
    Ok(eval(&op, &refs, &cx)?
        .into_iter()
        .map(|v| v.into_tensor().unwrap())
        .collect())
}

fn run(op: TensorOp, inputs: &[Option<Tensor>]) -> OpResult<Tensor> {
    Ok(run_n(op, inputs, 1)?.remove(0))
}

fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

fn i64t(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::I64(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

fn iota(shape: &[usize]) -> Tensor {
    let n = shape.iter().product::<usize>();
    f32t(shape, (0..n).map(|v| v as f32).collect())
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn ints(v: &[i64]) -> Option<Tensor> {
    Some(Tensor::from_i64s(v.to_vec()))
}

#[test]
fn reshape_zero_and_infer() {
    let op = TensorOp::Reshape {
        allowzero: false,
        shape: None,
    };
    let y = run(op.clone(), &[Some(iota(&[2, 3, 4])), ints(&[0, -1])]).unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    assert!(run(op, &[Some(iota(&[2, 3, 4])), ints(&[5, -1])]).is_err());
    let az = TensorOp::Reshape {
        allowzero: true,
        shape: None,
    };
    let y = run(az, &[Some(iota(&[0, 3, 4])), ints(&[3, 4, 0])]).unwrap();
    assert_eq!(y.shape(), &[3, 4, 0]);
}

#[test]
fn transpose_and_concat() {
    let y = run(TensorOp::Transpose { perm: Some(vec![1, 0]) }, &[Some(iota(&[2, 3]))]).unwrap();
    assert_eq!(vals(&y), vec![0., 3., 1., 4., 2., 5.]);
    let s = Tensor::String(ArrayD::from_shape_vec(IxDyn(&[2]), vec!["a".into(), "b".into()]).unwrap());
    let y = run(TensorOp::Concat { axis: 0 }, &[Some(s.clone()), Some(s)]).unwrap();
    assert_eq!(y.shape(), &[4]);
    let y = run(
        TensorOp::Concat { axis: -1 },
        &[Some(iota(&[2, 1])), Some(iota(&[2, 2]))],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![0., 0., 1., 1., 2., 3.]);
    assert!(run(
        TensorOp::Concat { axis: 0 },
        &[Some(iota(&[2])), Some(Tensor::from_i64s(vec![1]))]
    )
    .is_err());
}

#[test]
fn split_uneven_and_sizes() {
    let op = TensorOp::Split {
        axis: 0,
        split: None,
        num_outputs: Some(3),
    };
    let ys = run_n(op, &[Some(iota(&[7]))], 3).unwrap();
    assert_eq!(ys.iter().map(|y| y.len()).collect::<Vec<_>>(), vec![3, 3, 1]);
    let op = TensorOp::Split {
        axis: 1,
        split: None,
        num_outputs: None,
    };
    let ys = run_n(op, &[Some(iota(&[2, 4])), ints(&[1, 3])], 2).unwrap();
    assert_eq!(vals(&ys[1]), vec![1., 2., 3., 5., 6., 7.]);
}

#[test]
fn slice_negative_steps_and_clamping() {
    let op = TensorOp::Slice {
        starts: None,
        ends: None,
        axes: None,
    };
    // x[::-1] via start=-1, end=INT_MIN, step=-1
    let y = run(
        op.clone(),
        &[Some(iota(&[5])), ints(&[-1]), ints(&[i64::MIN]), None, ints(&[-2])],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![4., 2., 0.]);
    let y = run(
        op.clone(),
        &[
            Some(iota(&[3, 4])),
            ints(&[1, 10]),
            ints(&[1000, 0]),
            ints(&[0, 1]),
            ints(&[1, -3]),
        ],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 1]);
    assert_eq!(vals(&y), vec![7., 11.]);
    let old = TensorOp::Slice {
        starts: Some(vec![1]),
        ends: Some(vec![3]),
        axes: Some(vec![-1]),
    };
    let y = run(old, &[Some(iota(&[2, 4]))]).unwrap();
    assert_eq!(vals(&y), vec![1., 2., 5., 6.]);
    assert!(run(op, &[Some(iota(&[5])), ints(&[0]), ints(&[3]), None, ints(&[0])]).is_err());
}

#[test]
fn gather_family() {
    let y = run(
        TensorOp::Gather { axis: 1 },
        &[Some(iota(&[2, 3])), Some(i64t(&[2, 1], vec![-1, 0]))],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 2, 1]);
    assert_eq!(vals(&y), vec![2., 0., 5., 3.]);
    assert!(run(TensorOp::Gather { axis: 0 }, &[Some(iota(&[2])), ints(&[2])]).is_err());
    let y = run(
        TensorOp::Gather { axis: 0 },
        &[Some(iota(&[3, 2])), Some(Tensor::scalar_i64(1))],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2]);
    let y = run(
        TensorOp::GatherElements { axis: 1 },
        &[
            Some(f32t(&[2, 2], vec![1., 2., 3., 4.])),
            Some(i64t(&[2, 2], vec![0, 0, 1, 0])),
        ],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![1., 1., 4., 3.]);
    // batch_dims=1 example of the spec.
    let y = run(
        TensorOp::GatherND { batch_dims: 1 },
        &[Some(iota(&[2, 2, 2])), Some(i64t(&[2, 1], vec![1, 0]))],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![2., 3., 4., 5.]);
}

#[test]
fn scatter_family() {
    let op = TensorOp::ScatterElements {
        axis: 1,
        reduction: ScatterReduction::Add,
    };
    let y = run(
        op,
        &[
            Some(f32t(&[1, 5], vec![1., 2., 3., 4., 5.])),
            Some(i64t(&[1, 2], vec![1, 1])),
            Some(f32t(&[1, 2], vec![1.1, 2.1])),
        ],
    )
    .unwrap();
    let v = vals(&y);
    assert!((v[1] - 5.2).abs() < 1e-5 && v[0] == 1.0);
    let op = TensorOp::ScatterND {
        reduction: ScatterReduction::Mul,
    };
    let y = run(
        op,
        &[
            Some(iota(&[4])),
            Some(i64t(&[2, 1], vec![1, 3])),
            Some(f32t(&[2], vec![10., 2.])),
        ],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![0., 10., 2., 6.]);
    let op = TensorOp::ScatterND {
        reduction: ScatterReduction::Add,
    };
    let s = Tensor::String(ArrayD::from_shape_vec(IxDyn(&[1]), vec!["a".to_string()]).unwrap());
    assert!(matches!(
        run(op, &[Some(s.clone()), Some(i64t(&[1, 1], vec![0])), Some(s)]),
        Err(OpError::Unsupported(_))
    ));
}

#[test]
fn pad_modes() {
    let x = f32t(&[3], vec![1., 2., 3.]);
    let p = |mode, pads: &[i64]| {
        vals(
            &run(
                TensorOp::Pad {
                    mode,
                    pads: None,
                    value: 0.0,
                },
                &[Some(x.clone()), ints(pads)],
            )
            .unwrap(),
        )
    };
    assert_eq!(p(PadMode::Constant, &[2, 1]), vec![0., 0., 1., 2., 3., 0.]);
    assert_eq!(p(PadMode::Reflect, &[2, 2]), vec![3., 2., 1., 2., 3., 2., 1.]);
    assert_eq!(p(PadMode::Edge, &[2, 1]), vec![1., 1., 1., 2., 3., 3.]);
    assert_eq!(p(PadMode::Wrap, &[2, 1]), vec![2., 3., 1., 2., 3., 1.]);
    assert_eq!(p(PadMode::Constant, &[-1, 1]), vec![2., 3., 0.]);
    let old = TensorOp::Pad {
        mode: PadMode::Constant,
        pads: Some(vec![1, 0]),
        value: 9.0,
    };
    assert_eq!(vals(&run(old, &[Some(x.clone())]).unwrap()), vec![9., 1., 2., 3.]);
    let big = TensorOp::Pad {
        mode: PadMode::Constant,
        pads: None,
        value: 0.0,
    };
    assert!(run(big, &[Some(x), ints(&[1 << 40, 0])]).is_err());
}

#[test]
fn huge_shapes_are_errors() {
    let c = TensorOp::ConstantOfShape { value: None };
    assert!(run(c.clone(), &[ints(&[1 << 20, 1 << 20, 1 << 20])]).is_err());
    assert!(run(c, &[ints(&[-1])]).is_err());
    assert!(run(TensorOp::Expand, &[Some(iota(&[1])), ints(&[1 << 40])]).is_err());
    assert!(run(TensorOp::Tile { legacy: false }, &[Some(iota(&[2])), ints(&[1 << 40])]).is_err());
    let r = run(
        TensorOp::Range,
        &[
            Some(Tensor::scalar_i64(0)),
            Some(Tensor::scalar_i64(i64::MAX)),
            Some(Tensor::scalar_i64(1)),
        ],
    );
    assert!(r.is_err());
    let oh = TensorOp::OneHot { axis: -1 };
    assert!(run(
        oh,
        &[ints(&[1; 1000]), Some(Tensor::scalar_i64(1 << 40)), ints(&[0, 1])]
    )
    .is_err());
}

#[test]
fn shape_ops() {
    let y = run(TensorOp::Shape { start: -2, end: None }, &[Some(iota(&[2, 3, 4]))]).unwrap();
    assert_eq!(y.to_i64_vec().unwrap(), vec![3, 4]);
    let y = run(TensorOp::Unsqueeze { axes: None }, &[Some(iota(&[3])), ints(&[0, -1])]).unwrap();
    assert_eq!(y.shape(), &[1, 3, 1]);
    let y = run(TensorOp::Squeeze { axes: None }, &[Some(iota(&[1, 3, 1]))]).unwrap();
    assert_eq!(y.shape(), &[3]);
    assert!(run(TensorOp::Squeeze { axes: Some(vec![1]) }, &[Some(iota(&[1, 3, 1]))]).is_err());
    let y = run(TensorOp::Flatten { axis: 0 }, &[Some(iota(&[2, 3]))]).unwrap();
    assert_eq!(y.shape(), &[1, 6]);
    let y = run(TensorOp::Expand, &[Some(iota(&[3, 1])), ints(&[2, 1, 2])]).unwrap();
    assert_eq!(y.shape(), &[2, 3, 2]);
    let y = run(TensorOp::Tile { legacy: false }, &[Some(iota(&[2])), ints(&[2])]).unwrap();
    assert_eq!(vals(&y), vec![0., 1., 0., 1.]);
    let v = Tensor::I32(ArrayD::from_elem(IxDyn(&[1]), 7));
    let y = run(TensorOp::ConstantOfShape { value: Some(v) }, &[ints(&[2, 2])]).unwrap();
    assert_eq!(y.dtype(), DType::I32);
    assert_eq!(y.to_i64_vec().unwrap(), vec![7; 4]);
    let y = run(
        TensorOp::Range,
        &[
            Some(Tensor::scalar_f32(1.0)),
            Some(Tensor::scalar_f32(2.0)),
            Some(Tensor::scalar_f32(0.3)),
        ],
    )
    .unwrap();
    assert_eq!(y.len(), 4);
    let i32s = |v: i32| Some(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), v)));
    let y = run(TensorOp::Range, &[i32s(10), i32s(6), i32s(-3)]).unwrap();
    assert_eq!(y.to_i64_vec().unwrap(), vec![10, 7]);
}

#[test]
fn misc_ops() {
    let y = run(
        TensorOp::EyeLike {
            dtype: Some(DType::I32),
            k: 1,
        },
        &[Some(iota(&[2, 3]))],
    )
    .unwrap();
    assert_eq!(y.to_i64_vec().unwrap(), vec![0, 1, 0, 0, 0, 1]);
    let y = run(
        TensorOp::Trilu { upper: false },
        &[Some(iota(&[2, 3])), Some(Tensor::scalar_i64(-1))],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![0., 0., 0., 3., 0., 0.]);
    let y = run(
        TensorOp::OneHot { axis: 0 },
        &[ints(&[1, -1]), Some(Tensor::scalar_f32(3.0)), ints(&[0, 5])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(y.to_i64_vec().unwrap(), vec![0, 0, 5, 0, 0, 5]);
    let y = run(TensorOp::NonZero, &[Some(f32t(&[2, 2], vec![1., 0., 1., 1.]))]).unwrap();
    assert_eq!(y.to_i64_vec().unwrap(), vec![0, 1, 1, 0, 0, 1]);
    let cond = Some(Tensor::Bool(
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![false, true]).unwrap(),
    ));
    let y = run(TensorOp::Compress { axis: Some(1) }, &[Some(iota(&[2, 2])), cond]).unwrap();
    assert_eq!(vals(&y), vec![1., 3.]);
    let x = f32t(&[6], vec![2., 1., 1., 3., 4., 3.]);
    let ys = run_n(
        TensorOp::Unique {
            axis: None,
            sorted: false,
        },
        &[Some(x.clone())],
        4,
    )
    .unwrap();
    assert_eq!(vals(&ys[0]), vec![2., 1., 3., 4.]);
    assert_eq!(ys[1].to_i64_vec().unwrap(), vec![0, 1, 3, 4]);
    assert_eq!(ys[2].to_i64_vec().unwrap(), vec![0, 1, 1, 2, 3, 2]);
    assert_eq!(ys[3].to_i64_vec().unwrap(), vec![1, 2, 2, 1]);
    let ys = run_n(
        TensorOp::Unique {
            axis: None,
            sorted: true,
        },
        &[Some(x)],
        4,
    )
    .unwrap();
    assert_eq!(vals(&ys[0]), vec![1., 2., 3., 4.]);
    assert_eq!(ys[2].to_i64_vec().unwrap(), vec![1, 0, 0, 2, 3, 2]);
    let x = f32t(&[3, 2], vec![1., 0., 0., 1., 1., 0.]);
    let ys = run_n(
        TensorOp::Unique {
            axis: Some(0),
            sorted: true,
        },
        &[Some(x)],
        4,
    )
    .unwrap();
    assert_eq!(vals(&ys[0]), vec![0., 1., 1., 0.]);
    assert_eq!(ys[3].to_i64_vec().unwrap(), vec![1, 2]);
}

#[test]
fn space_depth_roundtrip_and_reverse_sequence() {
    let x = iota(&[1, 8, 2, 3]);
    let d = run(
        TensorOp::DepthToSpace {
            blocksize: 2,
            crd: false,
        },
        &[Some(x.clone())],
    )
    .unwrap();
    assert_eq!(d.shape(), &[1, 2, 4, 6]);
    let back = run(
        TensorOp::SpaceToDepth {
            blocksize: 2,
            crd: false,
        },
        &[Some(d)],
    )
    .unwrap();
    assert_eq!(back, x);
    let d = run(
        TensorOp::DepthToSpace {
            blocksize: 2,
            crd: true,
        },
        &[Some(x.clone())],
    )
    .unwrap();
    assert_eq!(
        run(
            TensorOp::SpaceToDepth {
                blocksize: 2,
                crd: true
            },
            &[Some(d)]
        )
        .unwrap(),
        x
    );
    let crd = run(
        TensorOp::DepthToSpace {
            blocksize: 2,
            crd: true,
        },
        &[Some(iota(&[1, 4, 1, 1]))],
    )
    .unwrap();
    assert_eq!(vals(&crd), vec![0., 1., 2., 3.]);
    let x = iota(&[3, 2]);
    let y = run(
        TensorOp::ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        },
        &[Some(x), ints(&[3, 1])],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![4., 1., 2., 3., 0., 5.]);
    let y = run(
        TensorOp::CenterCropPad { axes: None },
        &[Some(iota(&[3, 2])), ints(&[1, 4])],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![0., 2., 3., 0.]);
}

#[test]
fn tensor_scatter_circular() {
    let op = TensorOp::TensorScatter {
        axis: 1,
        circular: true,
    };
    let y = run(
        op,
        &[
            Some(f32t(&[1, 3], vec![0.; 3])),
            Some(f32t(&[1, 2], vec![1., 2.])),
            ints(&[2]),
        ],
    )
    .unwrap();
    assert_eq!(vals(&y), vec![2., 0., 1.]);
}

#[test]
fn transpose_row_copy_path_matches_generic() {
    let x = iota(&[2, 3, 4, 5]);
    let y = run(
        TensorOp::Transpose {
            perm: Some(vec![2, 0, 1, 3]),
        },
        &[Some(x.clone())],
    )
    .unwrap();
    let Tensor::F32(a) = &x else { unreachable!() };
    let want = a
        .view()
        .permuted_axes(IxDyn(&[2, 0, 1, 3]))
        .as_standard_layout()
        .into_owned();
    assert_eq!(y, Tensor::F32(want));
    let y = run(
        TensorOp::Transpose {
            perm: Some(vec![1, 0, 2, 3]),
        },
        &[Some(iota(&[0, 3, 2, 4]))],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3, 0, 2, 4]);
}
