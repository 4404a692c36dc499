//! Support for the end-to-end tests: the imgpack binary, the probe fixture
//! built for musl targets, the external tools, and checks on OCI layouts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;

use imgpack_blob::Digest;
use serde_json::Value;

pub use imgpack_platform::test_elf::ElfBuilder;
pub use imgpack_platform::Arch;

pub mod docker;
pub mod fake_registry;
pub mod fixtures;
pub mod git_server;
pub mod http;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod ssh_server;
pub mod token_server;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The imgpack binary: `IMGPACK_BIN`, or built once with cargo (fresh if the sources changed).
pub fn imgpack_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("IMGPACK_BIN") {
            return PathBuf::from(bin);
        }
        let status = cargo()
            .args(["build", "--quiet", "-p", "imgpack"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo");
        assert!(status.success(), "cargo build -p imgpack failed");
        target_dir().join("debug/imgpack")
    })
}

/// An imgpack command with a clean environment for reproducibility-sensitive variables and
/// the calling test's own cache ([`test_cache_dir`]).
pub fn imgpack() -> Command {
    let mut command = Command::new(imgpack_bin());
    command
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("IMGPACK_TMPDIR")
        .env("IMGPACK_CACHE_DIR", test_cache_dir());
    command
}

/// The cache directory (`IMGPACK_CACHE_DIR`: base images, blob locations) of the calling test:
/// its own, and empty when the test first asks for it in this run, so that nothing another
/// test, an earlier run or the user's home left there can satisfy what a test checks. Keyed
/// by the test binary and the test thread's name (libtest names each thread after its test).
///
/// Panics on a thread without a name (one a test spawned): every such thread would share one
/// key, and so one cache, with those of every other test. Build the command on the test's own
/// thread and move it into the other.
pub fn test_cache_dir() -> PathBuf {
    static EMPTIED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.file_stem()?.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let current = std::thread::current();
    let Some(name) = current.name() else {
        panic!(
            "test_cache_dir() (and imgpack()) called from a thread without a name: its cache \
             would be shared with other tests; build the command on the test's thread"
        );
    };
    let test = name.replace("::", "-");
    let key = format!("{binary}-{test}");
    let dir = target_dir().join("tmp/e2e-cache").join(&key);
    if EMPTIED.lock().unwrap().insert(key) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("cannot empty {}: {err}", dir.display()),
        }
    }
    dir
}

/// Runs and returns the output, panicking with both streams if the exit status is not `success`.
pub fn run_expect(command: &mut Command, success: bool) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    if output.status.success() != success {
        panic!(
            "{command:?} exited with {} (expected success={success})\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// The digest imgpack printed as the last line of stdout.
pub fn printed_digest(output: &Output) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        Digest::parse(&last).is_some(),
        "stdout does not end in a digest: {stdout:?}"
    );
    last
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs an imgpack command that must fail with one clear line, and returns that line (see
/// [`error_line`]). Give the command `-q`.
pub fn one_error_line(command: &mut Command) -> String {
    error_line(&run_expect(command, false))
}

/// The one error line of a failed imgpack run, after checking it is one: the exit status is 1,
/// nothing panicked, and stderr is exactly one `error: ` line after nothing but the compiler
/// output imgpack relays (lines starting `[os/arch]`). The run must have had `-q`, so that no
/// progress was printed.
pub fn error_line(output: &Output) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.ends_with('\n'), "stderr does not end a line: {err:?}");
    let lines: Vec<&str> = err.lines().collect();
    let (last, before) = lines.split_last().expect("a failure says why on stderr");
    assert!(
        last.starts_with("error: "),
        "the last line is no error:\n{err}"
    );
    for line in before {
        assert!(
            line.starts_with('[') && !line.contains("error: "),
            "more than one line of error:\n{err}"
        );
    }
    last.to_string()
}

/// The forms in which a credential could leak: the password itself, and base64 of
/// `user:password` (a basic `Authorization` header, docker's `auth` field) and of the password.
pub fn secret_forms(user: &str, password: &str) -> Vec<String> {
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    vec![
        password.to_owned(),
        base64(&format!("{user}:{password}")),
        base64(password),
    ]
}

/// Panics, naming the stream and line, when any of `secrets` appears anywhere in the stdout
/// or stderr of `output`.
pub fn assert_no_secrets(what: &str, output: &Output, secrets: &[String]) {
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for (number, line) in text.lines().enumerate() {
            for secret in secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "{what}: a secret ({secret:?}) is on {stream} line {}: {line}",
                    number + 1
                );
            }
        }
    }
}

/// `len` bytes that no compressor can shrink (xorshift64* from `seed`), so a layer is as big
/// compressed as the file it holds.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether the end-to-end run requires every external tool (CI sets IMGPACK_E2E=1).
pub fn tools_required() -> bool {
    std::env::var("IMGPACK_E2E").is_ok_and(|v| v == "1")
}

/// True when `tool` is on PATH. Missing: a failure under IMGPACK_E2E=1, else a skip notice.
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        assert!(
            !tools_required(),
            "{tool} is not installed and IMGPACK_E2E=1 requires it (cargo xtask ci installs it)"
        );
        eprintln!("skipping: {tool} is not installed (set IMGPACK_E2E=1 to make this a failure)");
    }
    found
}

/// The probe fixture built for `arch` (amd64 or arm64) as a static musl binary.
pub fn probe_binary(arch: Arch) -> Option<PathBuf> {
    static BUILT: Mutex<BTreeMap<Arch, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    if let Some(path) = built.get(&arch) {
        return Some(path.clone());
    }
    let triple = match arch {
        Arch::Amd64 => "x86_64-unknown-linux-musl",
        Arch::Arm64 => "aarch64-unknown-linux-musl",
        other => panic!("no probe build for {other}"),
    };
    if !musl_target_installed(triple) {
        assert!(
            !tools_required(),
            "rust target {triple} is missing (rustup target add {triple})"
        );
        eprintln!("skipping: rust target {triple} is not installed");
        return None;
    }
    let target_dir = target_dir().join("fixtures");
    let status = cargo()
        .args(["build", "--quiet", "--release", "--target", triple])
        .arg("--manifest-path")
        .arg(workspace_root().join("fixtures/probe/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // rustc's bundled lld links musl binaries for any architecture, no C cross toolchain needed.
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
        .status()
        .expect("cannot run cargo");
    assert!(
        status.success(),
        "building fixtures/probe for {triple} failed"
    );
    let path = target_dir.join(triple).join("release/probe");
    built.insert(arch, path.clone());
    Some(path)
}

fn musl_target_installed(triple: &str) -> bool {
    let Ok(output) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(triple)
        .is_dir()
}

/// Copies a project directory (a fixture) to `to`, leaving out build output (`target/`).
pub fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_project(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A synthetic static executable for `arch` with a payload, written to `path`.
pub fn write_static_elf(path: &Path, arch: Arch, payload: &[u8]) -> PathBuf {
    std::fs::write(
        path,
        ElfBuilder::new(arch).payload(payload.to_vec()).build(),
    )
    .unwrap();
    path.to_owned()
}

/// Waits for `child` with wait4 and returns its exit code (128 + the signal if one ended it) and
/// its resource use. Its CPU times are its own; its `ru_maxrss` is not (see [`PeakRss`]).
pub fn wait_with_usage(child: std::process::Child) -> (i32, libc::rusage) {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid; std's Child is not waited on afterwards.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let code = match libc::WIFSIGNALED(status) {
        true => 128 + libc::WTERMSIG(status),
        false => libc::WEXITSTATUS(status),
    };
    (code, usage)
}

/// User plus system CPU time of a [`wait_with_usage`] rusage.
pub fn cpu_time(usage: &libc::rusage) -> std::time::Duration {
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A command run under GNU time (`/usr/bin/time -f %M`), to read the peak RSS of that command
/// alone. wait4 on a child this process starts cannot: std spawns with vfork, and at exec
/// Linux carries the old address space's high-water mark (this test process's, fake registries'
/// blobs and all) into the child's `ru_maxrss`. GNU time forks its command from its own small
/// address space, so the figure it reports starts near zero.
pub struct PeakRss {
    command: Command,
    report: tempfile::NamedTempFile,
}

impl PeakRss {
    /// `command` (program, arguments, environment and directory; not its stdio) under GNU time.
    /// None (a skip) when GNU time is missing outside IMGPACK_E2E=1.
    pub fn new(command: &Command) -> Option<PeakRss> {
        if !have_tool("time") {
            return None;
        }
        let report = tempfile::NamedTempFile::new().unwrap();
        let mut wrapped = Command::new("time");
        wrapped
            .args(["-f", "%M", "-o"])
            .arg(report.path())
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        Some(PeakRss {
            command: wrapped,
            report,
        })
    }

    /// The wrapped command, to set its stdio and run it; its exit status is the command's.
    pub fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    /// The command's peak RSS in KiB, once it has ended (GNU time's last line; a line saying
    /// how a failed command ended may come before it).
    pub fn peak_kib(&self) -> u64 {
        let report = std::fs::read_to_string(self.report.path()).unwrap();
        let last = report.trim_end().lines().last().unwrap_or_default();
        last.trim()
            .parse()
            .unwrap_or_else(|_| panic!("GNU time reported no peak RSS: {report:?}"))
    }
}

/// The digest of a file, read a piece at a time (layers of hundreds of MiB are hashed this way
/// without holding them).
pub fn file_digest(path: &Path) -> Digest {
    let mut file = std::fs::File::open(path)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
    let mut hashed = imgpack_blob::DigestWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hashed)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    hashed.finish().1
}

/// A JSON array of strings (an image config's `Env`, say) as string slices.
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// Reads and checks an OCI layout: every blob under blobs/sha256 hashes to its name.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// The index.json entry tagged `tag`.
    pub fn entry(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.dir.display()))
            .clone()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(self.dir.join("blobs/sha256").join(hex)).unwrap()
    }

    pub fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }

    /// Names of every file in blobs/sha256, after checking each one's content against its name.
    pub fn verified_blobs(&self) -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue; // a temporary file of an interrupted write, never a blob name
            }
            assert_eq!(
                file_digest(&entry.path()).hex(),
                name,
                "blob {name} does not match its digest"
            );
            names.push(name);
        }
        names.sort();
        names
    }

    /// The manifests of an entry: itself for a manifest, its children for an index.
    pub fn manifests(&self, descriptor: &Value) -> Vec<Value> {
        let document = self.json(descriptor["digest"].as_str().unwrap());
        match document["manifests"].as_array() {
            Some(children) => children
                .iter()
                .map(|child| self.json(child["digest"].as_str().unwrap()))
                .collect(),
            None => vec![document],
        }
    }

    /// Paths, modes, owners and types of a gzip layer's tar entries.
    pub fn layer_entries(&self, digest: &str) -> Vec<(String, u32, u64, tar::EntryType)> {
        let tar_bytes = {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.blob(digest)[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    header.entry_type(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_threads_get_a_cache_dir() {
        let unnamed = std::thread::spawn(test_cache_dir).join();
        assert!(unnamed.is_err(), "a thread without a name got a cache dir");
        let named = std::thread::Builder::new()
            .name("some::test".into())
            .spawn(test_cache_dir)
            .unwrap()
            .join()
            .unwrap();
        let name = named.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("-some-test"), "{name}");
    }
}
