//! Frontends: turn a project into one static Linux binary per platform.
//!
//! Go packages are built with the user's `go` (CGO off, -trimpath, stripped,
//! no build ID); Rust projects with the user's `cargo` for the
//! `*-unknown-linux-musl` targets, linked with rustc's bundled `rust-lld`
//! when cross-compiling. Every binary still goes through the static and
//! architecture check before it is packed.

mod advice;
mod command;
mod detect;
mod go;
mod rust;

use std::path::PathBuf;

use anyhow::Result;
use imgpack_platform::{Arch, Binary, Platform};

pub use advice::SourceError;
pub use detect::{check_project_dir, detect_lang, Lang};
pub use rust::musl_target;

#[derive(Clone, Debug, Default)]
pub struct GoOptions {
    /// Extra `-ldflags`, merged after imgpack's `-s -w -buildid=`.
    pub ldflags: Option<String>,
    /// Build tags (`-tags`).
    pub tags: Vec<String>,
    /// Variables set for `go build` (imgpack.toml's `[go] env`).
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct RustOptions {
    pub bin: Option<String>,
    pub package: Option<String>,
    pub features: Vec<String>,
    pub no_default_features: bool,
    /// Cargo profile; `release` when not set.
    pub profile: Option<String>,
}

/// What to compile, for which platforms, and where the frontend may write.
#[derive(Clone, Debug)]
pub struct SourceBuild {
    /// A Go package directory or a Cargo project directory.
    pub path: PathBuf,
    /// `None`: detected from the project.
    pub lang: Option<Lang>,
    pub platforms: Vec<Platform>,
    /// Platforms compiled at once.
    pub jobs: usize,
    pub go: GoOptions,
    pub rust: RustOptions,
    /// Scratch space for outputs (the Go binaries).
    pub out_dir: PathBuf,
    /// No compiler output on stderr (errors are still shown).
    pub quiet: bool,
}

/// Compiles the project for every requested platform.
pub fn build(request: &SourceBuild) -> Result<Vec<Binary>> {
    let lang = match request.lang {
        Some(lang) => lang,
        None => detect_lang(&request.path)?,
    };
    match lang {
        Lang::Go => go::build(request),
        Lang::Rust => rust::build(request),
    }
}

/// The platform of the machine imgpack runs on: the default `--platform`.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "aarch64" => Arch::Arm64,
        "arm" => Arch::Arm,
        "x86" => Arch::I386,
        "powerpc64" => Arch::Ppc64le,
        "s390x" => Arch::S390x,
        "riscv64" => Arch::Riscv64,
        "loongarch64" => Arch::Loong64,
        _ => Arch::Amd64,
    };
    Platform::new(arch)
}

/// `linux/arm/v7` → `linux-arm-v7`: a platform as one path component.
pub(crate) fn slug(platform: &Platform) -> String {
    platform.to_string().replace('/', "-")
}
