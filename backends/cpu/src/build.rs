//! Building generated kernels into one shared object with the system C
//! compiler.

use crate::prelude::prelude;
use crate::target::{Isa, Target};
use crate::{CodegenError, LoweredKernel};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The C compiler for `target`: `$CC` when set (for cross targets
/// `$CC_aarch64`), else the first of the usual names found on `PATH`.
pub fn find_c_compiler(target: &Target) -> Result<String, CodegenError> {
    let cross = !target.runs_on_host() && target.isa() == Isa::Neon && std::env::consts::ARCH != "aarch64";
    let (var, candidates): (&str, &[&str]) = if cross {
        (
            "CC_aarch64",
            &["aarch64-linux-gnu-gcc", "aarch64-linux-gnu-gcc-12", "clang"],
        )
    } else {
        ("CC", &["cc", "gcc", "clang"])
    };
    if let Ok(cc) = std::env::var(var) {
        if !cc.trim().is_empty() {
            return Ok(cc);
        }
    }
    for c in candidates {
        if on_path(c) {
            return Ok(c.to_string());
        }
    }
    Err(CodegenError::NoCompiler {
        tried: format!("${var}, {}", candidates.join(", ")),
    })
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// A fresh private directory for one build.
pub(crate) fn scratch_dir(tag: &str) -> Result<PathBuf, CodegenError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "carbide-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    Ok(dir)
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> CodegenError {
    CodegenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The C translation unit holding `kernels` (each entry once).
pub fn library_source(kernels: &[LoweredKernel], target: &Target) -> Result<String, CodegenError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut src = prelude(target);
    for k in kernels {
        match seen.get(k.call.entry.as_str()) {
            Some(prev) if *prev == k.source => continue,
            Some(_) => {
                return Err(CodegenError::BadGroup(format!(
                    "two different kernels share the entry name '{}'",
                    k.call.entry
                )))
            }
            None => {
                seen.insert(&k.call.entry, &k.source);
            }
        }
        src.push_str("\n/* ---- ");
        src.push_str(&k.call.entry);
        src.push_str(" ---- */\n");
        src.push_str(&k.source);
    }
    Ok(src)
}

/// Compiles C source to an object of `kind` ("shared" library or "exe").
pub(crate) fn compile(
    src: &str,
    target: &Target,
    extra: &[&str],
    out_name: &str,
) -> Result<(PathBuf, PathBuf), CodegenError> {
    let cc = find_c_compiler(target)?;
    let dir = scratch_dir("build")?;
    let c_path = dir.join("kernels.c");
    std::fs::write(&c_path, src).map_err(|e| io(&c_path, e))?;
    let out = dir.join(out_name);
    let mut cmd = Command::new(&cc);
    cmd.arg("-std=gnu11").arg("-O3").args(target.c_flags()).args(extra);
    cmd.arg("-o").arg(&out).arg(&c_path).arg("-lm");
    let output = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CodegenError::NoCompiler { tried: cc.clone() },
        _ => io(Path::new(&cc), e),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr: String = stderr.chars().take(4000).collect();
        return Err(CodegenError::CompileFailed {
            compiler: cc,
            target: target.name().to_string(),
            stderr,
        });
    }
    Ok((dir, out))
}

/// Compiles all kernels of a model into one shared object and returns its
/// bytes. Honours `$CC`; a clear error when no C compiler exists.
pub fn build_library(kernels: &[LoweredKernel], target: &Target) -> Result<Vec<u8>, CodegenError> {
    let src = library_source(kernels, target)?;
    let (dir, so) = compile(&src, target, &["-fPIC", "-shared"], "libkernels.so")?;
    let bytes = std::fs::read(&so).map_err(|e| io(&so, e));
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}
