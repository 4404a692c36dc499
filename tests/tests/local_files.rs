//! Local files imgpack reads whole are bounded like a registry's answers
//! (issue 19, item 6): a FIFO where a key, a certificate bundle, a config,
//! an index.json or a cache entry should be ends the run at once with one
//! line instead of blocking it forever, and a 1 GiB (sparse) index.json or
//! imgpack.toml is refused without reading it into memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::*;

/// Long enough for a loaded CI machine, far shorter than "forever".
const HANG: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// Runs `command` (which must exit within [`HANG`]; it is killed otherwise
/// and the test fails) and returns its one error line.
fn refused_in_time(what: &str, command: &mut Command) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {HANG:?} (blocked on a FIFO?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    error_line(&output)
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, b"local files");
    dir
}

fn build_in(dir: &Path) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", "-q", "--binary", "linux/amd64=app"]);
    command
}

#[test]
fn a_fifo_where_a_file_is_read_ends_the_run_at_once_with_one_line() {
    let dir = project();
    let d = dir.path();
    mkfifo(&d.join("fifo"));
    let names_the_fifo = |line: &str| line.contains("fifo is a FIFO, not a regular file");

    let line = refused_in_time(
        "--ca-certs FIFO",
        build_in(d).args(["--ca-certs", "fifo", "-o", "oci:out"]),
    );
    assert!(line.contains("--ca-certs") && names_the_fifo(&line), "{line}");

    let line = refused_in_time(
        "--sign-key FIFO",
        build_in(d).args(["--push", "127.0.0.1:1/team/app:v1", "--sign-key", "fifo"]),
    );
    assert!(names_the_fifo(&line), "{line}");

    let line = refused_in_time(
        "verify --key FIFO",
        imgpack()
            .current_dir(d)
            .args(["verify", "-q", "127.0.0.1:1/team/app:v1", "--key", "fifo"]),
    );
    assert!(names_the_fifo(&line), "{line}");

    let line = refused_in_time(
        "--config FIFO",
        build_in(d).args(["--config", "fifo", "-o", "oci:out"]),
    );
    assert!(names_the_fifo(&line), "{line}");

    // A layout whose index.json is a FIFO, read by push and added to by build.
    std::fs::create_dir_all(d.join("layout")).unwrap();
    std::fs::write(d.join("layout/oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    mkfifo(&d.join("layout/index.json"));
    let line = refused_in_time(
        "push of a layout with a FIFO index.json",
        imgpack()
            .current_dir(d)
            .args(["push", "-q", "oci:layout:v1", "127.0.0.1:1/team/app:v1"]),
    );
    assert!(line.contains("index.json is a FIFO, not a regular file"), "{line}");
    let line = refused_in_time(
        "build into a layout with a FIFO index.json",
        build_in(d).args(["-o", "oci:layout:v2"]),
    );
    assert!(line.contains("index.json is a FIFO, not a regular file"), "{line}");
    assert!(!d.join("out").exists(), "an output was written");
}

#[test]
fn a_cache_entry_replaced_by_a_fifo_ends_the_build_at_once_with_one_line() {
    let dir = project();
    let d = dir.path();
    let cache = d.join("cache");
    run_expect(
        build_in(d)
            .env("IMGPACK_CACHE_DIR", &cache)
            .args(["-o", "oci:first"]),
        true,
    );
    let entries = cache.join("layers/entries");
    let entry = std::fs::read_dir(&entries).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(&entry).unwrap();
    mkfifo(&entry);
    let line = refused_in_time(
        "a FIFO in the layer cache",
        build_in(d)
            .env("IMGPACK_CACHE_DIR", &cache)
            .args(["-o", "oci:second"]),
    );
    assert!(
        line.contains(&format!("{} is a FIFO", entry.display())) && line.contains("--no-cache"),
        "{line}"
    );
}

/// A sparse file of 1 GiB: no disk, but a reader that trusts its size
/// allocates all of it.
fn sparse_gib(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(1 << 30).unwrap();
}

/// Runs `command` and returns its exit code, stderr and peak RSS in KiB.
fn run_measured(command: &mut Command) -> (i32, String, u64) {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let (code, peak_kib) = wait_with_peak_rss(child);
    (code, reader.join().unwrap(), peak_kib)
}

#[test]
fn a_gib_index_json_or_config_is_refused_in_bounded_memory() {
    let dir = project();
    let d = dir.path();
    std::fs::create_dir_all(d.join("layout")).unwrap();
    std::fs::write(d.join("layout/oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    sparse_gib(&d.join("layout/index.json"));
    sparse_gib(&d.join("big.toml"));
    let runs: [(&str, Command); 2] = [
        ("push of a layout with a 1 GiB index.json", {
            let mut command = imgpack();
            command
                .current_dir(d)
                .args(["push", "-q", "oci:layout:v1", "127.0.0.1:1/team/app:v1"]);
            command
        }),
        ("--config of 1 GiB", {
            let mut command = build_in(d);
            command.args(["--config", "big.toml", "-o", "oci:out"]);
            command
        }),
    ];
    for (what, mut command) in runs {
        let (code, err, peak_kib) = run_measured(&mut command);
        eprintln!("{what}: exit {code}, peak RSS {peak_kib} KiB");
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains("is 1073741824 bytes, more than the"),
            "{what}: {err}"
        );
        assert!(peak_kib < 64 * 1024, "{what}: peak RSS {peak_kib} KiB");
    }
    assert!(!d.join("out").exists(), "an output was written");
}
