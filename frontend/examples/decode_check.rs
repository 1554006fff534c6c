//! Decodes every tensor of the given model files without parsing ops, and
//! reports the time taken: `cargo run --release -p carbide-frontend --example decode_check -- model.onnx...`

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let t0 = std::time::Instant::now();
        if let Ok(b) = std::fs::read(path) {
            let t1 = std::time::Instant::now();
            let r = carbide_frontend::decode_model_proto(&b).map(|_| ());
            println!(
                "  read {:.3} s, protobuf decode {:.3} s ({r:?})",
                (t1 - t0).as_secs_f64(),
                t1.elapsed().as_secs_f64()
            );
        }
        let t0 = std::time::Instant::now();
        let result = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| carbide_frontend::check_model_bytes(&b, path.parent()).map_err(|e| e.to_string()));
        match result {
            Ok(n) => println!("{arg}: {n} tensors in {:.3} s", t0.elapsed().as_secs_f64()),
            Err(e) => println!("{arg}: error: {e}"),
        }
        let t0 = std::time::Instant::now();
        match carbide_frontend::load_model(path) {
            Ok(m) => println!(
                "  load_model: {} nodes in {:.3} s",
                m.graph.nodes.len(),
                t0.elapsed().as_secs_f64()
            ),
            Err(e) => println!("  load_model: {e}"),
        }
    }
}
