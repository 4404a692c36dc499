//! A soak test: many pushes of changing two-platform images through the fault proxy in front
//! of the real registry, with resets, stalls, 5xx and 429 mixed in (first contact included) and
//! some runs SIGKILLed midway and run again. At the default retry timeout no unkilled run may
//! fail, every tag in the registry must copy completely with skopeo (no broken tags), and a
//! run that exits 0 must have tagged exactly the digest it printed. A killed run pushes to a
//! tag of its own (`rN-killed`), is still running when it is killed, and leaves that tag
//! absent or complete. The faults come from a seeded generator, so a failure can be replayed
//! (IMGPACK_SOAK_SEED, IMGPACK_SOAK_RUNS).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::proxy::{Fault, Proxy};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;

/// xorshift64: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One fault, picked at random from the kinds a flaky registry or network produces.
fn random_fault(rng: &mut Rng) -> Fault {
    let status = |method, path_contains, status, retry_after| Fault::Status {
        method,
        path_contains,
        status,
        retry_after,
        times: Some(1),
    };
    match rng.below(10) {
        0 => Fault::ResetDuringBody {
            method: "GET",
            path_contains: "/v2/",
            after_bytes: 0,
            times: 1,
        },
        1 => status("GET", "/v2/", 502, None),
        2 => status("POST", "/blobs/uploads/", 503, None),
        3 => status("HEAD", "/blobs/", 429, Some(1)),
        4 => status("PUT", "/manifests/", 500, None),
        // Blob bodies go up in PATCHes (the closing PUT is empty).
        5 => Fault::ResetDuringBody {
            method: "PATCH",
            path_contains: "/blobs/uploads/",
            after_bytes: rng.below(4000),
            times: 1,
        },
        6 => Fault::Stall {
            method: "HEAD",
            path_contains: "/blobs/",
            seconds: 1.5,
            then_close: false,
            times: 1,
        },
        7 => Fault::Stall {
            method: "PUT",
            path_contains: "/blobs/uploads/",
            seconds: 1.0,
            then_close: true,
            times: 1,
        },
        8 => Fault::Stall {
            method: "PUT",
            path_contains: "/manifests/",
            seconds: 0.5,
            then_close: true,
            times: 1,
        },
        _ => status("POST", "/blobs/uploads/", 429, None),
    }
}

/// Two static binaries whose app layers carry `payload`.
fn write_binaries(dir: &Path, payload: &str) {
    write_static_elf(
        &dir.join("app-amd64"),
        Arch::Amd64,
        format!("amd64 {payload}").as_bytes(),
    );
    write_static_elf(
        &dir.join("app-arm64"),
        Arch::Arm64,
        format!("arm64 {payload}").as_bytes(),
    );
}

fn push_command(dir: &Path, target: &str) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("IMGPACK_CACHE_DIR", dir.join("cache"))
        .args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=app-amd64",
            "--binary",
            "linux/arm64=app-arm64",
            "--push",
            target,
        ]);
    command
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
}

/// The digest of the manifest the registry serves for `reference`, read straight from it.
fn tagged_digest(reference: &str) -> Option<String> {
    let output = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    output
        .status
        .success()
        .then(|| imgpack_blob::Digest::of_bytes(&output.stdout).to_string())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soak_pushes_through_faults_and_kills_never_break_a_tag() {
    if !have_tool("skopeo") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let runs = env_number("IMGPACK_SOAK_RUNS", 52);
    let mut rng = Rng(env_number("IMGPACK_SOAK_SEED", 0x1badb002) | 1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let (mut pushes, mut killed, mut failures) = (0u64, 0u64, Vec::new());
    let mut payload = String::from("start");
    // The quickest unkilled push so far: a kill lands inside a push's own time.
    let mut quickest = Duration::MAX;
    for run in 0..runs {
        // A quarter of the runs push the same image again (every blob exists).
        if rng.below(4) != 0 {
            payload = format!("run {run} {}", rng.next());
        }
        write_binaries(d, &payload);
        let target = format!("{}/team/soak:r{run}", proxy.host());
        proxy.clear_faults();
        for _ in 0..=rng.below(3) {
            proxy.add_fault(random_fault(&mut rng));
        }
        // Every sixth run is SIGKILLed at a random moment of its push (to a tag of its own, so
        // the rerun cannot cover what it left), then run again.
        if run % 6 == 5 {
            let killed_target = format!("{}/team/soak:r{run}-killed", proxy.host());
            let mut child = push_command(d, &killed_target)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let window = quickest.as_millis().clamp(100, 1500) as u64;
            std::thread::sleep(Duration::from_millis(
                window / 10 + rng.below(window * 8 / 10),
            ));
            assert_eq!(
                child.try_wait().unwrap(),
                None,
                "run {run}: the push ended before it was killed"
            );
            child.kill().unwrap();
            child.wait().unwrap();
            killed += 1;
        }
        pushes += 1;
        let started_push = Instant::now();
        let output = push_command(d, &target).output().unwrap();
        quickest = quickest.min(started_push.elapsed());
        if !output.status.success() {
            failures.push(format!("run {run}: {}", stderr(&output).trim()));
            continue;
        }
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let direct = format!("{}/team/soak:r{run}", registry.host());
        match tagged_digest(&direct) {
            Some(digest) if printed.ends_with(&format!("@{digest}")) => {}
            other => failures.push(format!("run {run}: printed {printed}, tag holds {other:?}")),
        }
    }
    // Every tag in the registry, killed runs' included, must copy completely.
    let mut broken = Vec::new();
    let (mut tags, mut killed_tags) = (0, 0);
    let killed_runs = (0..runs).filter(|run| run % 6 == 5);
    let names = (0..runs)
        .map(|run| (format!("r{run}"), false))
        .chain(killed_runs.map(|run| (format!("r{run}-killed"), true)));
    for (tag, of_killed_run) in names {
        let direct = format!("{}/team/soak:{tag}", registry.host());
        if tagged_digest(&direct).is_none() {
            continue;
        }
        match of_killed_run {
            true => killed_tags += 1,
            false => tags += 1,
        }
        let out = d.join(format!("copy-{tag}"));
        let copy = skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{direct}"),
            &format!("oci:{}:{tag}", out.display()),
        ]);
        if !copy.status.success() {
            broken.push(format!(
                "{tag}: {}",
                String::from_utf8_lossy(&copy.stderr).trim()
            ));
        } else {
            Layout::new(&out).verified_blobs();
        }
    }
    eprintln!(
        "soak: {pushes} pushes ({killed} SIGKILLed midway, {killed_tags} of them left a tag, and \
         rerun), {} faults injected, {} failures, {tags} tags read back, {} broken, {:.0}s",
        proxy.injected(),
        failures.len(),
        broken.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "unkilled runs failed:\n{}",
        failures.join("\n")
    );
    assert!(broken.is_empty(), "broken tags:\n{}", broken.join("\n"));
    assert_eq!(tags, runs, "every rerun tagged its image");
    assert!(
        proxy.injected() >= runs as usize,
        "too few faults were injected"
    );
}
