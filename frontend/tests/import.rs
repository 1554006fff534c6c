//! Importer tests on models built from the prost structs: graph conversion,
//! Constant folding into initializers, function inlining, and every error
//! path a bad file can reach (each a clean error, never a panic).

use carbide_frontend::proto::*;
use carbide_frontend::{load_model, load_model_bytes, FrontendError};
use carbide_ir::{DType, Dim, IrError, Tensor, ValueType};
use prost::Message;

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

fn tensor_type(dtype: DType, dims: &[&str]) -> TypeProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => DimValue::DimValue(v),
                Err(_) if d.is_empty() => return Dimension::default(),
                Err(_) => DimValue::DimParam(d.to_string()),
            }),
            denotation: None,
        })
        .collect();
    TypeProto {
        value: Some(TypeValue::TensorType(TypeTensor {
            elem_type: Some(dtype.onnx_code()),
            shape: Some(TensorShapeProto { dim }),
        })),
        denotation: None,
    }
}

fn vi(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: s(name),
        r#type: Some(ty),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: s(op),
        name: s(name),
        input: inputs.iter().map(|x| x.to_string()).collect(),
        output: outputs.iter().map(|x| x.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: s(name),
        r#type: Some(attr_type::FLOAT),
        f: Some(f),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: s(name),
        r#type: Some(attr_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_ref(name: &str, r: &str, ty: i32) -> AttributeProto {
    AttributeProto {
        name: s(name),
        ref_attr_name: s(r),
        r#type: Some(ty),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: s(name),
        data_type: Some(1),
        dims: dims.to_vec(),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto {
            domain: s(""),
            version: Some(21),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn load(m: &ModelProto) -> Result<carbide_ir::Model, FrontendError> {
    load_model_bytes(&m.encode_to_vec(), None)
}

fn err_text(r: Result<carbide_ir::Model, FrontendError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn passthrough_graph_keeps_types_and_symbolic_dims() {
    let g = GraphProto {
        name: s("g"),
        input: vec![vi("x", tensor_type(DType::F16, &["batch", "3", ""]))],
        output: vec![vi("x", tensor_type(DType::F16, &["batch", "3", ""]))],
        ..Default::default()
    };
    let m = load(&model(g)).unwrap();
    assert_eq!(m.opsets.get(""), Some(&21));
    assert_eq!(
        m.graph.inputs[0].ty,
        ValueType::tensor(DType::F16, vec![Dim::Sym("batch".into()), Dim::Known(3), Dim::Unknown])
    );
}

#[test]
fn constant_nodes_become_initializers() {
    let g = GraphProto {
        node: vec![
            node("Constant", "", &[], &["a"], vec![attr_f("value_float", 2.5)]),
            node("Constant", "", &[], &["b"], vec![attr_ints("value_ints", &[1, 2, 3])]),
            node(
                "Constant",
                "c",
                &[],
                &["c"],
                vec![AttributeProto {
                    name: s("value"),
                    r#type: Some(attr_type::TENSOR),
                    t: Some(f32_tensor("", &[2], &[1.0, 2.0])),
                    ..Default::default()
                }],
            ),
        ],
        output: vec![
            vi("a", tensor_type(DType::F32, &[])),
            vi("b", tensor_type(DType::I64, &["3"])),
            vi("c", tensor_type(DType::F32, &["2"])),
        ],
        ..Default::default()
    };
    let m = load(&model(g)).unwrap();
    assert!(m.graph.nodes.is_empty());
    assert_eq!(m.graph.initializers["a"], Tensor::scalar_f32(2.5));
    assert_eq!(m.graph.initializers["b"], Tensor::from_i64s(vec![1, 2, 3]));
    assert_eq!(m.graph.initializers["c"], Tensor::from_f32s(vec![1.0, 2.0]));
}

#[test]
fn constant_with_wrong_attribute_type_names_node_and_attribute() {
    let g = GraphProto {
        node: vec![node("Constant", "k", &[], &["a"], vec![attr_f("value_int", 2.5)])],
        output: vec![vi("a", tensor_type(DType::I64, &[]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(
        e.contains("'k'") && e.contains("value_int") && e.contains("expected int"),
        "{e}"
    );
    let g = GraphProto {
        node: vec![node(
            "Constant",
            "k",
            &[],
            &["a"],
            vec![attr_f("value_float", 1.0), attr_f("bogus", 1.0)],
        )],
        output: vec![vi("a", tensor_type(DType::F32, &[]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn unknown_op_is_unsupported_op_naming_it() {
    let g = GraphProto {
        input: vec![vi("x", tensor_type(DType::F32, &["2"]))],
        node: vec![node("FrobnicateXYZ", "n1", &["x"], &["y"], vec![])],
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    match load(&model(g)) {
        Err(FrontendError::Ir(IrError::AtNode { node, cause, .. })) => {
            assert_eq!(node, "n1");
            assert!(
                matches!(*cause, IrError::UnsupportedOp { ref op_type, opset: 21, .. } if op_type == "FrobnicateXYZ")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unimported_domain_is_an_error_naming_it() {
    let mut n = node("Foo", "n1", &["x"], &["y"], vec![]);
    n.domain = s("com.example");
    let g = GraphProto {
        input: vec![vi("x", tensor_type(DType::F32, &["2"]))],
        node: vec![n],
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("com.example") && e.contains("n1"), "{e}");
}

#[test]
fn undefined_value_names_node_and_value() {
    let g = GraphProto {
        input: vec![vi("x", tensor_type(DType::F32, &["2"]))],
        node: vec![node("Relu", "r", &["nowhere"], &["y"], vec![])],
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("'r'") && e.contains("nowhere"), "{e}");
    let g = GraphProto {
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("'y'"), "{e}");
}

#[test]
fn cycle_is_an_error_naming_a_node_on_it() {
    let g = GraphProto {
        input: vec![vi("x", tensor_type(DType::F32, &["2"]))],
        node: vec![
            node("Add", "a", &["x", "d"], &["c"], vec![]),
            node("Relu", "b", &["c"], &["d"], vec![]),
        ],
        output: vec![vi("d", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("cycle") && (e.contains("'a'") || e.contains("'b'")), "{e}");
    let g = GraphProto {
        node: vec![node("Relu", "self", &["y"], &["y"], vec![])],
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("cycle") && e.contains("'self'"), "{e}");
}

#[test]
fn bad_initializers_are_errors() {
    let mut t = f32_tensor("w", &[3], &[1.0, 2.0]);
    let g = GraphProto {
        initializer: vec![t.clone()],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("'w'") && e.contains("raw_data has 8 bytes"), "{e}");
    t.dims = vec![1 << 20, 1 << 20];
    let g = GraphProto {
        initializer: vec![t.clone()],
        ..Default::default()
    };
    assert!(err_text(load(&model(g))).contains("2^32"));
    t.dims = vec![-2];
    let g = GraphProto {
        initializer: vec![t.clone()],
        ..Default::default()
    };
    assert!(err_text(load(&model(g))).contains("negative"));
    t.dims = vec![2];
    t.data_type = Some(14);
    let g = GraphProto {
        initializer: vec![t],
        ..Default::default()
    };
    assert!(matches!(load(&model(g)), Err(FrontendError::Unsupported(m)) if m.contains("complex")));
}

#[test]
fn bad_attribute_tensor_names_the_node() {
    let mut t = f32_tensor("", &[3], &[1.0]);
    t.dims = vec![3];
    let attr = AttributeProto {
        name: s("value"),
        r#type: Some(attr_type::TENSOR),
        t: Some(t),
        ..Default::default()
    };
    let g = GraphProto {
        node: vec![node("Constant", "kc", &[], &["a"], vec![attr])],
        output: vec![vi("a", tensor_type(DType::F32, &["3"]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("'kc'") && e.contains("raw_data"), "{e}");
}

#[test]
fn garbage_and_truncated_bytes_are_decode_errors() {
    let g = GraphProto {
        initializer: vec![f32_tensor("w", &[4], &[1.0, 2.0, 3.0, 4.0])],
        node: vec![node("Constant", "", &[], &["a"], vec![attr_f("value_float", 2.5)])],
        output: vec![vi("w", tensor_type(DType::F32, &["4"]))],
        ..Default::default()
    };
    let bytes = model(g).encode_to_vec();
    assert!(load_model_bytes(&bytes, None).is_ok());
    for cut in 1..bytes.len() {
        // Some prefixes are themselves valid messages; none may panic.
        let _ = load_model_bytes(&bytes[..cut], None);
    }
    let mut corrupt = bytes.clone();
    for i in (0..corrupt.len()).step_by(7) {
        corrupt[i] ^= 0x5a;
        let _ = load_model_bytes(&corrupt, None);
    }
    let mut state = 0x1234_5678_9abc_def0u64;
    for len in [1usize, 7, 64, 1000, 5000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = load_model_bytes(&junk, None);
        let _ = carbide_frontend::decode_tensor(&junk);
    }
    assert!(matches!(
        load_model_bytes(&[0xff, 0xff, 0xff], None),
        Err(FrontendError::Decode { .. })
    ));
}

#[test]
fn ref_attr_outside_function_is_an_error() {
    let g = GraphProto {
        node: vec![node(
            "Constant",
            "k",
            &[],
            &["a"],
            vec![attr_ref("value_float", "alpha", attr_type::FLOAT)],
        )],
        output: vec![vi("a", tensor_type(DType::F32, &[]))],
        ..Default::default()
    };
    let e = err_text(load(&model(g)));
    assert!(e.contains("alpha") && e.contains("outside"), "{e}");
}

fn function(name: &str, inputs: &[&str], outputs: &[&str], nodes: Vec<NodeProto>) -> FunctionProto {
    FunctionProto {
        name: s(name),
        domain: s("local"),
        input: inputs.iter().map(|x| x.to_string()).collect(),
        output: outputs.iter().map(|x| x.to_string()).collect(),
        node: nodes,
        opset_import: vec![OperatorSetIdProto {
            domain: s(""),
            version: Some(18),
        }],
        ..Default::default()
    }
}

fn call(f: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = node(f, name, inputs, outputs, attrs);
    n.domain = s("local");
    n
}

#[test]
fn functions_are_inlined_with_attribute_references_and_defaults() {
    // MakeC(alpha, beta = 7.0) -> (out1, out2): both outputs are Constants.
    let mut f = function(
        "MakeC",
        &[],
        &["out1", "out2"],
        vec![
            node(
                "Constant",
                "",
                &[],
                &["out1"],
                vec![attr_ref("value_float", "alpha", attr_type::FLOAT)],
            ),
            node(
                "Constant",
                "",
                &[],
                &["out2"],
                vec![attr_ref("value_float", "beta", attr_type::FLOAT)],
            ),
        ],
    );
    f.attribute_proto = vec![attr_f("beta", 7.0)];
    // Outer(alpha) calls MakeC, forwarding alpha: nested inlining.
    let mut outer = function(
        "Outer",
        &[],
        &["o"],
        vec![call(
            "MakeC",
            "",
            &[],
            &["o"],
            vec![attr_ref("alpha", "alpha", attr_type::FLOAT)],
        )],
    );
    outer.attribute = vec!["alpha".into()];
    let g = GraphProto {
        node: vec![
            call("MakeC", "c1", &[], &["x", "y"], vec![attr_f("alpha", 1.5)]),
            call(
                "MakeC",
                "c2",
                &[],
                &["z", "w"],
                vec![attr_f("alpha", 2.0), attr_f("beta", 3.0)],
            ),
            call("Outer", "", &[], &["v"], vec![attr_f("alpha", 4.0)]),
        ],
        output: vec![
            vi("x", tensor_type(DType::F32, &[])),
            vi("y", tensor_type(DType::F32, &[])),
            vi("z", tensor_type(DType::F32, &[])),
            vi("w", tensor_type(DType::F32, &[])),
            vi("v", tensor_type(DType::F32, &[])),
        ],
        ..Default::default()
    };
    let mut m = model(g);
    m.opset_import.push(OperatorSetIdProto {
        domain: s("local"),
        version: Some(1),
    });
    m.functions = vec![f, outer];
    let m = load(&m).unwrap();
    let init = &m.graph.initializers;
    assert_eq!(init["x"], Tensor::scalar_f32(1.5));
    assert_eq!(init["y"], Tensor::scalar_f32(7.0));
    assert_eq!(init["z"], Tensor::scalar_f32(2.0));
    assert_eq!(init["w"], Tensor::scalar_f32(3.0));
    assert_eq!(init["v"], Tensor::scalar_f32(4.0));
    // The unused second output of the nested call got a private name.
    assert!(
        init.keys().any(|k| k.starts_with("Outer_2/") && k.ends_with("out2")),
        "{:?}",
        init.keys()
    );
}

#[test]
fn recursive_functions_are_rejected() {
    let f = function("Loopy", &[], &["o"], vec![call("Loopy", "", &[], &["o"], vec![])]);
    let g = GraphProto {
        node: vec![call("Loopy", "c", &[], &["o"], vec![])],
        output: vec![vi("o", tensor_type(DType::F32, &[]))],
        ..Default::default()
    };
    let mut m = model(g);
    m.functions = vec![f];
    let e = err_text(load(&m));
    assert!(e.contains("Loopy") && e.contains("itself"), "{e}");
}

fn external_model(location: &str, offset: u64, length: u64) -> ModelProto {
    let t = TensorProto {
        name: s("w"),
        data_type: Some(1),
        dims: vec![2],
        data_location: Some(DATA_LOCATION_EXTERNAL),
        external_data: vec![
            StringStringEntryProto {
                key: s("location"),
                value: s(location),
            },
            StringStringEntryProto {
                key: s("offset"),
                value: Some(offset.to_string()),
            },
            StringStringEntryProto {
                key: s("length"),
                value: Some(length.to_string()),
            },
        ],
        ..Default::default()
    };
    model(GraphProto {
        initializer: vec![t],
        output: vec![vi("w", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    })
}

#[test]
fn external_data_is_read_inside_the_model_folder_only() {
    let root = std::env::temp_dir().join(format!("carbide-ext-{}", std::process::id()));
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut data = vec![0u8; 16];
    data[8..12].copy_from_slice(&1.5f32.to_le_bytes());
    data[12..16].copy_from_slice(&(-2.0f32).to_le_bytes());
    std::fs::write(dir.join("sub/w.bin"), &data).unwrap();
    std::fs::write(root.join("secret.bin"), &data).unwrap();
    let write = |m: &ModelProto| {
        let p = dir.join("model.onnx");
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        load_model(&p)
    };
    let m = write(&external_model("sub/w.bin", 8, 8)).unwrap();
    assert_eq!(m.graph.initializers["w"], Tensor::from_f32s(vec![1.5, -2.0]));
    for (loc, off, len, want) in [
        ("../secret.bin", 8, 8, "leaves"),
        ("sub/../../secret.bin", 8, 8, "leaves"),
        ("/etc/passwd", 0, 8, "relative"),
        ("sub/w.bin", 12, 8, "past the end"),
        ("sub/w.bin", 100, 8, "past the end"),
        ("sub/w.bin", 0, 12, "needs 8"),
        ("sub/missing.bin", 0, 8, "missing.bin"),
    ] {
        let e = err_text(write(&external_model(loc, off, len)));
        assert!(e.contains(want), "{loc}: {e}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("secret.bin"), dir.join("link.bin")).unwrap();
        let e = err_text(write(&external_model("link.bin", 8, 8)));
        assert!(e.contains("outside"), "{e}");
    }
    // Bytes without a folder cannot use external data.
    assert!(err_text(load(&external_model("sub/w.bin", 8, 8))).contains("folder"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn subgraph_free_variables_order_nodes() {
    // Nodes listed out of order: "n2" must run before "n1" which reads its
    // output; the check happens before op parsing (which fails on stubs).
    let g = GraphProto {
        input: vec![vi("x", tensor_type(DType::F32, &["2"]))],
        node: vec![
            node("Relu", "n1", &["t"], &["y"], vec![]),
            node("Constant", "", &[], &["t"], vec![attr_f("value_float", 1.0)]),
        ],
        output: vec![vi("y", tensor_type(DType::F32, &["2"]))],
        ..Default::default()
    };
    // Whatever Relu's status, the error (if any) is not about ordering.
    if let Err(e) = load(&model(g)) {
        let e = e.to_string();
        assert!(!e.contains("defined") && !e.contains("cycle"), "{e}");
    }
}

#[test]
fn exponential_function_expansion_is_rejected_up_front() {
    // F_k calls F_{k+1} twice: 2^40 nodes from a tiny file.
    let mut fs = Vec::new();
    for k in 0..40 {
        let next = format!("F{}", k + 1);
        fs.push(function(
            &format!("F{k}"),
            &[],
            &["o"],
            vec![
                call(&next, "", &[], &["a"], vec![]),
                call(&next, "", &[], &["o"], vec![]),
            ],
        ));
    }
    fs.push(function(
        "F40",
        &[],
        &["o"],
        vec![node("Constant", "", &[], &["o"], vec![attr_f("value_float", 1.0)])],
    ));
    let g = GraphProto {
        node: vec![call("F0", "c", &[], &["o"], vec![])],
        output: vec![vi("o", tensor_type(DType::F32, &[]))],
        ..Default::default()
    };
    let mut m = model(g);
    m.functions = fs;
    let e = err_text(load(&m));
    assert!(e.contains("expands to more than"), "{e}");
}
