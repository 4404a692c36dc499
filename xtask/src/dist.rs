//! `cargo xtask dist [--profile release|dev|…]`: imgpack's release files.
//! Static musl binaries for linux/amd64 and linux/arm64, the man pages and
//! the shell completions, each listed in SHA256SUMS, in target/dist/
//! (target/dist-PROFILE/ for another profile).
//!
//! imgpack's C dependencies (zstd-sys; ring under rustls) need a C
//! compiler for each musl target. Debian has no aarch64 musl cross compiler,
//! so both targets are compiled and linked by zig through cargo-zigbuild,
//! both pinned PyPI packages installed into a venv under target/ on first use:
//! one toolchain for both architectures, the same on every machine, no root.
//! Paths of the machine (CARGO_HOME, the checkout) are remapped so the bytes
//! of a release binary depend only on the sources, the lock file, rustc and zig.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use imgpack_platform::{Arch, Platform};
use sha2::{Digest, Sha256};

use crate::{run, workspace_root};

/// Pinned so the C parts of a release build the same everywhere.
const ZIGLANG: &str = "ziglang==0.17.0";
const CARGO_ZIGBUILD: &str = "cargo-zigbuild==0.24.0";

/// A platform imgpack ships for, and the Rust target that builds it.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub arch: Arch,
    pub triple: &'static str,
}

pub const TARGETS: [Target; 2] = [
    Target {
        arch: Arch::Amd64,
        triple: "x86_64-unknown-linux-musl",
    },
    Target {
        arch: Arch::Arm64,
        triple: "aarch64-unknown-linux-musl",
    },
];

impl Target {
    /// `linux/amd64`, as `imgpack build --binary` takes it.
    pub fn platform(&self) -> String {
        Platform::new(self.arch).to_string()
    }
}

/// One built binary of imgpack and the platform it runs on.
pub struct Built {
    pub target: Target,
    pub path: PathBuf,
}

pub fn run_dist(args: &[String]) -> Result<()> {
    let mut profile = "release".to_owned();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--profile" => profile = rest.next().context("--profile needs a value")?.clone(),
            other => bail!("unknown argument '{other}': cargo xtask dist [--profile PROFILE]"),
        }
    }
    let built = build_static(&profile)?;
    let dist = dist_dir(&profile);
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot empty {}", dist.display()))?;
    }
    fs::create_dir_all(&dist)?;
    for binary in &built {
        let name = format!("imgpack-linux-{}", binary.target.arch);
        fs::copy(&binary.path, dist.join(&name))
            .with_context(|| format!("cannot copy {}", binary.path.display()))?;
    }
    // The amd64 binary runs here: it writes its own man pages and completions.
    let native = dist.join("imgpack-linux-amd64");
    write_docs(&native, &dist)?;
    smoke_test_arm64(&native, &dist.join("imgpack-linux-arm64"))?;
    let sums = write_sha256sums(&dist)?;
    print!("{sums}");
    eprintln!("xtask: release files in {}", dist.display());
    Ok(())
}

/// target/dist for release builds, target/dist-PROFILE for others.
pub fn dist_dir(profile: &str) -> PathBuf {
    let name = if profile == "release" {
        "dist".to_owned()
    } else {
        format!("dist-{profile}")
    };
    target_dir().join(name)
}

/// Builds imgpack for every [`TARGETS`] entry with `profile`; each binary is
/// checked to be static and of its architecture.
pub fn build_static(profile: &str) -> Result<Vec<Built>> {
    let mut cargo = zigbuild(profile)?;
    run(&mut cargo)?;
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    TARGETS
        .iter()
        .map(|target| {
            let path = target_dir()
                .join(target.triple)
                .join(profile_dir)
                .join("imgpack");
            imgpack_platform::check_binary(&path, &Platform::new(target.arch))
                .with_context(|| format!("the {} build", target.platform()))?;
            Ok(Built {
                target: *target,
                path,
            })
        })
        .collect()
}

/// `cargo zigbuild -p imgpack --profile PROFILE --target …` for every target,
/// with zig's venv first on PATH and the machine's paths remapped.
fn zigbuild(profile: &str) -> Result<Command> {
    let tools = zig_toolchain()?;
    let path = std::env::join_paths(std::iter::once(tools).chain(
        std::env::var_os("PATH").map_or_else(Vec::new, |p| std::env::split_paths(&p).collect()),
    ))?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(workspace_root())
        .args([
            "zigbuild",
            "--locked",
            "-p",
            "imgpack",
            "--profile",
            profile,
        ])
        .env("PATH", path);
    let remaps = [(cargo_home()?, "/cargo"), (workspace_root(), "/imgpack")];
    let rustflags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    // The same for C sources: __FILE__ in assertions and error tables.
    let cflags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("-ffile-prefix-map={}={to}", from.display()))
        .collect();
    for target in TARGETS {
        cargo.args(["--target", target.triple]);
        let variable = target.triple.to_uppercase().replace('-', "_");
        cargo.env(
            format!("CARGO_TARGET_{variable}_RUSTFLAGS"),
            rustflags.join(" "),
        );
        cargo.env(
            format!("CFLAGS_{}", target.triple.replace('-', "_")),
            cflags.join(" "),
        );
    }
    Ok(cargo)
}

/// The directory holding `cargo-zigbuild` and a Python whose `-m ziglang` is
/// zig: a venv under target/, created with the pinned packages when missing.
pub fn zig_toolchain() -> Result<PathBuf> {
    let venv = target_dir().join("zig-venv");
    let bin = venv.join("bin");
    let stamp = venv.join("installed.txt");
    let wanted = format!("{ZIGLANG} {CARGO_ZIGBUILD}\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(bin);
    }
    if !crate::on_path("python3") {
        bail!("building imgpack for musl needs python3 for zig (PyPI ziglang): apt-get install python3-venv");
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("cannot create the zig venv: apt-get install python3-venv")?;
    run(Command::new(bin.join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        ZIGLANG,
        CARGO_ZIGBUILD,
    ]))?;
    fs::write(&stamp, wanted)?;
    Ok(bin)
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// CARGO_TARGET_DIR (relative to the workspace root) or target/.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// man/imgpack*.1 and completions/{imgpack.bash,_imgpack,imgpack.fish}, written by `imgpack`.
fn write_docs(imgpack: &Path, dist: &Path) -> Result<()> {
    run(Command::new(imgpack)
        .args(["man", "--dir"])
        .arg(dist.join("man")))?;
    let completions = dist.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "imgpack.bash"),
        ("zsh", "_imgpack"),
        ("fish", "imgpack.fish"),
    ] {
        let output = Command::new(imgpack)
            .args(["completion", shell])
            .output()
            .with_context(|| format!("cannot run {}", imgpack.display()))?;
        ensure!(
            output.status.success() && !output.stdout.is_empty(),
            "imgpack completion {shell} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        fs::write(completions.join(file), output.stdout)?;
    }
    Ok(())
}

/// Runs the arm64 binary under qemu-user when this machine has it: it must
/// report the same version as the amd64 one.
fn smoke_test_arm64(amd64: &Path, arm64: &Path) -> Result<()> {
    if !crate::on_path("qemu-aarch64-static") {
        eprintln!("xtask: no qemu-aarch64-static; the arm64 binary was not run");
        return Ok(());
    }
    let version = |command: &mut Command| -> Result<String> {
        let output = command.arg("--version").output()?;
        ensure!(output.status.success(), "{command:?} failed");
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let native = version(&mut Command::new(amd64))?;
    let emulated = version(Command::new("qemu-aarch64-static").arg(arm64))?;
    ensure!(
        native == emulated,
        "the arm64 binary says {emulated:?}, the amd64 one {native:?}"
    );
    Ok(())
}

/// SHA256SUMS over every file under `dist` (sorted, `sha256sum -c` format); returns its text.
fn write_sha256sums(dist: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(dist, dist, &mut files)?;
    files.sort();
    let mut sums = String::new();
    for relative in files {
        let digest = sha256_file(&dist.join(&relative))?;
        sums.push_str(&format!("{digest}  {relative}\n"));
    }
    fs::write(dist.join("SHA256SUMS"), &sums)?;
    Ok(sums)
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else {
            let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
            files.push(relative);
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
