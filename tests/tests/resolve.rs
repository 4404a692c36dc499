//! imgpack resolve: imgpack://PATH references in Kubernetes YAML are built,
//! pushed once each, and replaced by REPOSITORY@sha256:…, everything else unchanged.

use std::io::Write;
use std::process::{Command, Stdio};

use imgpack_e2e::http::refusing_host;
use imgpack_e2e::proxy::Proxy;
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;

const DEPLOYMENT: &str = "# The API, built from source by imgpack resolve.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - name: hello
          image: imgpack://services/hello   # resolved
          args: [\"--port\", \"8080\"]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: probe}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - {name: probe, image: \"imgpack://tools/probe\"}
";

const SIDECAR: &str = "apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  containers:
    - name: hello
      image: 'imgpack://services/hello'
    - name: nginx
      image: nginx:1.27
";

#[test]
fn references_in_several_documents_are_built_once_and_replaced() {
    if !have_tool("skopeo") || probe_binary(Arch::Amd64).is_none() {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_project(
        &workspace_root().join("fixtures/rust-hello"),
        &root.join("services/hello"),
    );
    copy_project(
        &workspace_root().join("fixtures/probe"),
        &root.join("tools/probe"),
    );
    std::fs::create_dir_all(root.join("k8s/extra")).unwrap();
    std::fs::write(root.join("k8s/deploy.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(root.join("k8s/extra/sidecar.yml"), SIDECAR).unwrap();
    // Through a proxy that counts what reaches the registry.
    let proxy = Proxy::start(&registry.host());
    let repo = format!("{}/team", proxy.host());
    let resolve = |args: &[&str], stdin: Option<&str>| {
        let mut child = imgpack()
            .current_dir(root)
            .args(["resolve", "--platform", "linux/amd64,linux/arm64"])
            .args(args)
            .env("IMGPACK_REPO", &repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (
            String::from_utf8(output.stdout.clone()).unwrap(),
            stderr(&output),
        )
    };

    let refs_file = root.join("out/image-refs.txt");
    let (yaml, _) = resolve(
        &[
            "-R",
            "-f",
            "k8s",
            "--image-refs",
            refs_file.to_str().unwrap(),
        ],
        None,
    );
    // Each distinct path is pushed once, although services/hello appears twice: the registry
    // got one tag and one index for each.
    for name in ["rust-hello", "probe"] {
        let manifests = format!("/v2/team/{name}/manifests/");
        assert_eq!(
            proxy.count("PUT", &format!("{manifests}latest")),
            1,
            "{:?}",
            proxy.requests()
        );
        // Two platform manifests and the index by digest, then the tag; besides them an SBOM
        // and a provenance per platform manifest (by digest) and its referrers tag.
        assert_eq!(
            proxy.count("PUT", &manifests),
            4 + 2 * 3,
            "{name}: {:?}",
            proxy.requests()
        );
        assert_eq!(
            proxy.count("PUT", &format!("{manifests}sha256-")),
            2,
            "{name}: {:?}",
            proxy.requests()
        );
    }
    let hello = reference(&yaml, &format!("{repo}/rust-hello@sha256:"));
    let probe = reference(&yaml, &format!("{repo}/probe@sha256:"));
    let expected = format!(
        "{}---\n{}",
        DEPLOYMENT
            .replace("imgpack://services/hello", &hello)
            .replace("imgpack://tools/probe", &probe),
        SIDECAR.replace("imgpack://services/hello", &hello)
    );
    assert_eq!(yaml, expected, "only the references changed");
    // --image-refs: every pushed image once, in the order of the paths.
    assert_eq!(
        std::fs::read_to_string(&refs_file).unwrap(),
        format!("{hello}\n{probe}\n")
    );
    for reference in [&hello, &probe] {
        let inspect = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ])
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{reference} is not in the registry"
        );
    }

    // In a pipe: the same YAML from standard input; the rebuilt image has the same digest.
    let (piped, _) = resolve(&["-q", "-f", "-"], Some(SIDECAR));
    assert_eq!(piped, SIDECAR.replace("imgpack://services/hello", &hello));
}

/// The `REPOSITORY@sha256:<64 hex>` starting with `prefix` in `yaml`.
fn reference(yaml: &str, prefix: &str) -> String {
    let at = yaml
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in:\n{yaml}"));
    yaml[at..at + prefix.len() + 64].to_owned()
}

#[test]
fn resolve_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_expect(
        imgpack()
            .current_dir(dir.path())
            .args(["resolve", "-f", "missing.yaml"]),
        false,
    );
    assert!(
        stderr(&output).contains("cannot read missing.yaml"),
        "{}",
        stderr(&output)
    );
    let resolve_fails = |yaml: &str| {
        std::fs::write(dir.path().join("app.yaml"), yaml).unwrap();
        let output = run_expect(
            imgpack()
                .current_dir(dir.path())
                .args(["resolve", "-f", "app.yaml"])
                .env("IMGPACK_REPO", format!("{}/team", refusing_host())),
            false,
        );
        stderr(&output)
    };
    let err = resolve_fails("image: imgpack://nowhere\n");
    assert!(
        err.contains("imgpack://nowhere") && err.contains("not a directory"),
        "{err}"
    );
    // Also when the imgpack.toml found instead (the current directory's, not
    // in git) has tag templates: the path is what is wrong, not git.
    std::fs::write(
        dir.path().join("imgpack.toml"),
        "tags = [\"{git_short_sha}\"]\n",
    )
    .unwrap();
    let err = resolve_fails("image: imgpack://./nope\n");
    assert!(
        err.contains("error: imgpack://./nope: ./nope is not a directory"),
        "{err}"
    );
}

/// An `[[image]]` entry with `paths`: `imgpack://./cmd/worker` (its first
/// path) builds that entry's two-binary image, the one `imgpack build --push`
/// pushes under the same tag, not a one-binary image over it.
#[test]
fn a_reference_to_an_entrys_first_path_builds_the_entrys_image() {
    if !have_tool("go") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("go.mod"), "module example.com/team\n\ngo 1.19\n").unwrap();
    for package in ["cmd/worker", "cmd/migrate"] {
        std::fs::create_dir_all(root.join(package)).unwrap();
        std::fs::copy(
            workspace_root().join("fixtures/go-hello/main.go"),
            root.join(package).join("main.go"),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("imgpack.toml"),
        "platforms = [\"linux/amd64\"]\n[[image]]\nname = \"worker\"\npaths = [\"cmd/worker\", \"cmd/migrate\"]\n",
    )
    .unwrap();
    let repo = format!("{}/team", registry.host());
    let go_env = |command: &mut Command| {
        command
            .current_dir(root)
            .env("IMGPACK_REPO", &repo)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local");
    };
    let mut build = imgpack();
    go_env(&mut build);
    let pushed = run_expect(build.args(["build", "-q", "--push"]), true);
    let pushed = String::from_utf8(pushed.stdout).unwrap().trim().to_owned();
    assert!(
        pushed.starts_with(&format!("{repo}/worker@sha256:")),
        "{pushed}"
    );

    let mut resolve = imgpack();
    go_env(&mut resolve);
    let mut child = resolve
        .args(["resolve", "-q", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"image: imgpack://./cmd/worker\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("image: {pushed}\n"),
        "resolve built the entry's two-binary image, the digest build --push gave"
    );
}
