//! Code generation targets: which SIMD instruction set the C uses and the
//! compiler flags that enable it.

use crate::CodegenError;

/// The instruction set family a target generates intrinsics for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx2,
    Avx512,
    Neon,
}

/// A CPU to generate code for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    isa: Isa,
    name: &'static str,
}

impl Target {
    /// `native` (the host), `x86-64-avx2`, `x86-64-avx512` or `aarch64-neon`.
    pub fn parse(s: &str) -> Result<Target, CodegenError> {
        match s {
            "native" => Target::host(),
            "x86-64-avx2" => Ok(Target::of(Isa::Avx2)),
            "x86-64-avx512" => Ok(Target::of(Isa::Avx512)),
            "aarch64-neon" => Ok(Target::of(Isa::Neon)),
            other => Err(CodegenError::UnknownTarget(other.to_string())),
        }
    }

    pub fn of(isa: Isa) -> Target {
        let name = match isa {
            Isa::Avx2 => "x86-64-avx2",
            Isa::Avx512 => "x86-64-avx512",
            Isa::Neon => "aarch64-neon",
        };
        Target { isa, name }
    }

    /// The best target the running CPU supports.
    pub fn host() -> Result<Target, CodegenError> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Ok(Target::of(Isa::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Ok(Target::of(Isa::Avx2));
            }
            Err(CodegenError::UnsupportedHost("x86-64 without AVX2+FMA".into()))
        }
        #[cfg(target_arch = "aarch64")]
        {
            Ok(Target::of(Isa::Neon))
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Err(CodegenError::UnsupportedHost(std::env::consts::ARCH.into()))
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn name(&self) -> &str {
        self.name
    }

    /// The architecture the generated code runs on (`x86_64` / `aarch64`).
    pub fn arch(&self) -> &'static str {
        match self.isa {
            Isa::Avx2 | Isa::Avx512 => "x86_64",
            Isa::Neon => "aarch64",
        }
    }

    /// CPU features (names as `is_x86_feature_detected!` spells them) a
    /// machine must have to run this target's code: checked when an
    /// artifact is loaded.
    pub fn required_cpu_features(&self) -> Vec<String> {
        let f: &[&str] = match self.isa {
            Isa::Avx2 => &["avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe"],
            Isa::Avx512 => &[
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
                "avx512cd",
                "avx512dq",
                "avx512vl",
                "avx512vnni",
                "avx512bf16",
            ],
            Isa::Neon => &["neon"],
        };
        f.iter().map(|s| s.to_string()).collect()
    }

    /// Flags for the C compiler (gcc 12 rejects `-march=znver4`, so these
    /// name feature levels both gcc and clang accept).
    pub fn c_flags(&self) -> Vec<String> {
        let f: &[&str] = match self.isa {
            Isa::Avx2 => &["-march=x86-64-v3"],
            Isa::Avx512 => &[
                "-march=x86-64-v4",
                "-mavx512vnni",
                "-mavx512bf16",
                "-mprefer-vector-width=512",
            ],
            Isa::Neon => &["-march=armv8-a"],
        };
        f.iter().map(|s| s.to_string()).collect()
    }

    /// SIMD lanes of f32.
    pub fn vector_width(&self) -> usize {
        match self.isa {
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        }
    }

    /// Whether code for this target runs on the machine running this process.
    pub fn runs_on_host(&self) -> bool {
        match Target::host() {
            Ok(h) => h.arch() == self.arch() && (h.isa == self.isa || (h.isa == Isa::Avx512 && self.isa == Isa::Avx2)),
            Err(_) => false,
        }
    }
}
