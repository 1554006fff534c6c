//! Every model and every test-data file of the ONNX node test suite must
//! decode (tensors, types, sequences, optionals), without op parsing.
//! Skipped when the generated suite is absent (CI writes it separately).

use carbide_frontend::{check_model_bytes, decode_model_proto, decode_value, types::value_type};
use std::path::PathBuf;

fn cases_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnx-node-tests");
    dir.is_dir().then_some(dir)
}

#[test]
fn every_node_test_case_decodes() {
    let Some(dir) = cases_dir() else {
        eprintln!("skipped: .cache/onnx-node-tests is absent");
        return;
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut files = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for case in entries.into_iter().filter(|p| p.is_dir()) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(case.join("model.onnx")).unwrap();
        if let Err(e) = check_model_bytes(&bytes, Some(&case)) {
            failures.push(format!("{name}: model: {e}"));
            continue;
        }
        cases += 1;
        let mp = decode_model_proto(&bytes).unwrap();
        let g = mp.graph.unwrap_or_default();
        let mut sets: Vec<_> = std::fs::read_dir(&case)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        sets.sort();
        for set in sets.into_iter().filter(|p| p.is_dir()) {
            for (prefix, infos) in [("input", &g.input), ("output", &g.output)] {
                for (k, info) in infos.iter().enumerate() {
                    let f = set.join(format!("{prefix}_{k}.pb"));
                    let Ok(data) = std::fs::read(&f) else {
                        continue;
                    };
                    files += 1;
                    let ty = match value_type("v", info.r#type.as_ref()) {
                        Ok(t) => t,
                        Err(e) => {
                            failures.push(format!("{name}: {prefix}_{k} type: {e}"));
                            continue;
                        }
                    };
                    if let Err(e) = decode_value(&data, &ty) {
                        failures.push(format!("{name}: {}: {e}", f.display()));
                    }
                }
            }
        }
    }
    eprintln!(
        "{cases} models and {files} data files decoded; {} failures",
        failures.len()
    );
    for f in &failures {
        eprintln!("  {f}");
    }
    // Map-typed values are the one kind Carbide does not represent.
    let unexpected: Vec<_> = failures.iter().filter(|f| !f.contains("map")).collect();
    assert!(
        unexpected.is_empty(),
        "{} cases failed to decode: {unexpected:#?}",
        unexpected.len()
    );
}

/// Re-encodes every test-data value and every model initializer into
/// `$CARBIDE_REENCODE_DIR` so that `scripts`-side numpy can check that the
/// decoded values equal what onnx itself reads (run by hand).
#[test]
#[ignore]
fn reencode_for_numpy_check() {
    let (Some(dir), Ok(out)) = (cases_dir(), std::env::var("CARBIDE_REENCODE_DIR")) else {
        return;
    };
    let out = PathBuf::from(out);
    for case in std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(case.join("model.onnx")).unwrap();
        let mp = decode_model_proto(&bytes).unwrap();
        let g = mp.graph.unwrap_or_default();
        let od = out.join(&name);
        std::fs::create_dir_all(&od).unwrap();
        for (k, t) in g.initializer.iter().enumerate() {
            let v = carbide_frontend::tensor::decode(t, Some(&case)).unwrap();
            std::fs::write(
                od.join(format!("init_{k}.pb")),
                carbide_frontend::encode_tensor("", &v).unwrap(),
            )
            .unwrap();
        }
        for (j, n) in g.node.iter().enumerate() {
            for a in &n.attribute {
                if let Some(t) = &a.t {
                    let v = carbide_frontend::tensor::decode(t, Some(&case)).unwrap();
                    let f = od.join(format!("attr_{j}_{}.pb", a.name.clone().unwrap_or_default()));
                    std::fs::write(f, carbide_frontend::encode_tensor("", &v).unwrap()).unwrap();
                }
            }
        }
        for set in std::fs::read_dir(&case)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
        {
            let sd = od.join(set.file_name().unwrap());
            std::fs::create_dir_all(&sd).unwrap();
            for (prefix, infos) in [("input", &g.input), ("output", &g.output)] {
                for (k, info) in infos.iter().enumerate() {
                    let f = format!("{prefix}_{k}.pb");
                    let Ok(data) = std::fs::read(set.join(&f)) else {
                        continue;
                    };
                    let ty = value_type("v", info.r#type.as_ref()).unwrap();
                    let Ok(v) = decode_value(&data, &ty) else { continue };
                    std::fs::write(sd.join(&f), carbide_frontend::encode_value("", &v).unwrap()).unwrap();
                }
            }
        }
    }
}
