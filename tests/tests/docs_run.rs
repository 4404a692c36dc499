//! Runs every fenced ```sh block of README.md and docs/*.md, as a reader
//! following the pages would, so a command the docs give that no longer
//! works fails here.
//!
//! - **Which blocks.** All of them, except a block whose fence has
//!   `<!-- no-ci: REASON -->` on the line before it (external hosts such as
//!   registry.example.com, system installs, `cargo xtask ci` itself). The
//!   skipped blocks are counted and printed with their reasons; a block that
//!   names a host under `example.com` without the marker fails the test.
//! - **Where.** One world for all pages: a temporary directory holding copies
//!   of `fixtures/`, a Go module with its `main` package in `./cmd/api` and a
//!   Cargo project named `api` at the root (the project the docs' `./cmd/api`
//!   and `./target/…/release/api` stand for), committed to git, with `HOME`
//!   inside it. README.md runs first, then docs/*.md in name order, each block
//!   with `bash -euo pipefail` in that directory, the freshly built imgpack
//!   first on `PATH`. The block that starts the "Try it locally" registry
//!   runs before all others, as that section asks.
//! - **Substitutions**, the ones the docs themselves name: the registry on
//!   `localhost:5000` is that registry on a free port of 127.0.0.1, its
//!   `/tmp/registry` a directory of the world, and the service port 8080 on
//!   the host a free port. Containers (`--name X`) and images loaded into
//!   Docker (`docker:NAME:TAG`, `docker-archive:FILE:NAME:TAG`) get a suffix
//!   of this process, so parallel runs do not meet, and are removed at the end
//!   with every image pulled from the registry; background processes a block
//!   starts are killed with its process group.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::docker::docker_available;
use imgpack_e2e::http::free_port;
use imgpack_e2e::*;

/// The marker, on the line before a fence, of a block CI does not run.
const NO_CI: &str = "<!-- no-ci:";
/// Longest time one block may take (a cold two-platform Go build of Gin is the slowest).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(600);
/// The docs' local registry and service port.
const DOCS_REGISTRY: &str = "localhost:5000";
const DOCS_SERVICE_PORT: &str = "8080";

#[derive(Clone, Debug)]
struct Block {
    page: String,
    line: usize,
    code: String,
    /// The no-ci reason, if the block is not run.
    skip: Option<String>,
}

impl Block {
    fn place(&self) -> String {
        format!("{}:{}", self.page, self.line)
    }
}

/// README.md, then docs/*.md by name.
fn pages() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    std::iter::once("README.md".to_owned())
        .chain(docs)
        .collect()
}

/// The ```sh blocks of a page, each with the no-ci reason before its fence.
fn sh_blocks(page: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or_else(|| panic!("{page}:{}: unclosed ```sh block", i + 1));
        let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
        let skip = before
            .and_then(|l| l.trim().strip_prefix(NO_CI))
            .map(|rest| rest.trim_end_matches("-->").trim().to_owned());
        blocks.push(Block {
            page: page.to_owned(),
            line: i + 1,
            code: lines[i + 1..end].join("\n"),
            skip,
        });
        i = end + 1;
    }
    blocks
}

fn all_blocks() -> Vec<Block> {
    pages()
        .iter()
        .flat_map(|page| {
            let text = std::fs::read_to_string(workspace_root().join(page)).unwrap();
            sh_blocks(page, &text)
        })
        .collect()
}

#[test]
fn the_block_rule_reads_markers_and_fences() {
    let text = "x\n\n```sh\na\nb\n```\n\n<!-- no-ci: needs host.example.com -->\n\n```sh\nc\n```\n```text\nd\n```\n";
    let blocks = sh_blocks("p.md", text);
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].line, blocks[0].code.as_str()), (3, "a\nb"));
    assert_eq!(blocks[0].skip, None);
    assert_eq!(blocks[1].skip.as_deref(), Some("needs host.example.com"));
}

#[test]
fn every_block_that_names_an_external_host_is_marked_with_a_reason() {
    let problems: Vec<String> = all_blocks()
        .iter()
        .filter_map(|block| match &block.skip {
            Some(reason) if reason.is_empty() => Some(format!("{}: no-ci without a reason", block.place())),
            None if block.code.contains(".example.com") => Some(format!(
                "{}: names an example.com host: mark it <!-- no-ci: REASON --> or use localhost:5000",
                block.place()
            )),
            _ => None,
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What the blocks' names and ports become in this run.
struct Substitutions {
    registry_port: u16,
    service_port: u16,
    world: PathBuf,
    suffix: String,
    /// Names of containers and Docker images the blocks create.
    containers: BTreeSet<String>,
    images: BTreeSet<String>,
}

/// A character that continues a name or path: a name ends where none follows.
fn continues_name(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || "./:_-".contains(c))
}

/// Replaces `name` where it stands alone (not part of a longer name or path);
/// `before_ok` decides which character may come before it.
fn replace_word(
    text: &str,
    name: &str,
    with: &str,
    before_ok: impl Fn(Option<char>) -> bool,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let before = out.chars().last().or(None);
        let before = if at == 0 {
            before
        } else {
            rest[..at].chars().last()
        };
        let after = rest[at + name.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before_ok(before) && !continues_name(after) {
            out.push_str(with);
        } else {
            out.push_str(name);
        }
        rest = &rest[at + name.len()..];
    }
    out.push_str(rest);
    out
}

impl Substitutions {
    /// Collects the container and image names every runnable block creates.
    fn new(world: &Path, blocks: &[&Block]) -> Self {
        let mut containers = BTreeSet::new();
        let mut images = BTreeSet::new();
        for block in blocks {
            let words: Vec<&str> = block.code.split_whitespace().collect();
            for pair in words.windows(2) {
                if pair[0] == "--name" {
                    containers.insert(pair[1].to_owned());
                }
            }
            for word in &words {
                let spec = word
                    .strip_prefix("docker:")
                    .or_else(|| word.strip_prefix("docker-daemon:"))
                    .or_else(|| {
                        word.strip_prefix("docker-archive:")
                            .and_then(|rest| rest.split_once(".tar:").map(|(_, name)| name))
                    });
                if let Some(name) = spec.filter(|n| !n.is_empty()) {
                    images.insert(name.to_owned());
                }
            }
        }
        Substitutions {
            registry_port: free_port(),
            service_port: free_port(),
            world: world.to_owned(),
            suffix: format!("docs{}", std::process::id()),
            containers,
            images,
        }
    }

    fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.registry_port)
    }

    fn image_name(&self, image: &str) -> String {
        match image.rsplit_once(':') {
            Some((name, tag)) => format!("{name}-{}:{tag}", self.suffix),
            None => format!("{image}-{}", self.suffix),
        }
    }

    fn apply(&self, code: &str) -> String {
        let registry = self.registry();
        let service = format!("127.0.0.1:{}", self.service_port);
        let mut code = code
            .replace(DOCS_REGISTRY, &registry)
            .replace("127.0.0.1:5000", &registry)
            .replace(
                &format!("127.0.0.1:{DOCS_SERVICE_PORT}:{DOCS_SERVICE_PORT}"),
                &format!("{service}:{DOCS_SERVICE_PORT}"),
            )
            .replace(&format!("localhost:{DOCS_SERVICE_PORT}"), &service)
            .replace(
                "/tmp/registry",
                &self.world.join("registry").display().to_string(),
            );
        // Images first: a container may share a name with an image (`rust-hello`, `rust-hello:v1`).
        for image in &self.images {
            code = replace_word(&code, image, &self.image_name(image), |c| {
                c != Some('/') && !c.is_some_and(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            });
        }
        for container in &self.containers {
            let renamed = format!("{container}-{}", self.suffix);
            code = replace_word(&code, container, &renamed, |c| !continues_name(c));
        }
        code
    }

    /// Removes what the blocks left in Docker: containers, loaded and pulled images.
    fn clean_docker(&self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "--force", &format!("{container}-{}", self.suffix)])
                .output();
        }
        let Ok(listed) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        else {
            return;
        };
        let registry = format!("{}/", self.registry());
        for image in String::from_utf8_lossy(&listed.stdout).lines() {
            if image.contains(&self.suffix) || image.starts_with(&registry) {
                let _ = Command::new("docker")
                    .args(["image", "rm", "--force", image])
                    .output();
            }
        }
    }
}

/// Copies `fixtures/` and lays out the project the docs assume; a git repository.
fn make_world(world: &Path) {
    let root = workspace_root();
    for fixture in ["rust-hello", "go-hello", "gin-app"] {
        copy_project(
            &root.join("fixtures").join(fixture),
            &world.join("fixtures").join(fixture),
        );
    }
    // A Go module whose main package is ./cmd/api.
    std::fs::write(world.join("go.mod"), "module example.com/api\n\ngo 1.19\n").unwrap();
    std::fs::create_dir_all(world.join("cmd/api")).unwrap();
    std::fs::copy(
        root.join("fixtures/go-hello/main.go"),
        world.join("cmd/api/main.go"),
    )
    .unwrap();
    // A Cargo project whose binary is `api`.
    let manifest = std::fs::read_to_string(root.join("fixtures/rust-hello/Cargo.toml"))
        .unwrap()
        .replace("rust-hello", "api");
    std::fs::write(world.join("Cargo.toml"), manifest).unwrap();
    let lock = std::fs::read_to_string(root.join("fixtures/rust-hello/Cargo.lock"))
        .unwrap()
        .replace("rust-hello", "api");
    std::fs::write(world.join("Cargo.lock"), lock).unwrap();
    copy_project(&root.join("fixtures/rust-hello/src"), &world.join("src"));
    std::fs::write(
        world.join(".gitignore"),
        "/out/\n/target/\n/home/\n/registry/\n",
    )
    .unwrap();
    std::fs::create_dir_all(world.join("home")).unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "world"],
    ] {
        let status = Command::new("git")
            .current_dir(world)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
}

/// The environment of every block: imgpack first on PATH, HOME in the world,
/// the toolchains and their caches where they already are.
fn block_env(command: &mut Command, world: &Path) {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let keep =
        |name: &str, default: PathBuf| std::env::var_os(name).map(PathBuf::from).unwrap_or(default);
    let bin_dir = imgpack_bin().parent().unwrap().to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir];
    paths.extend(std::env::split_paths(&path));
    command
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("HOME", world.join("home"))
        .env("CARGO_HOME", keep("CARGO_HOME", home.join(".cargo")))
        .env("RUSTUP_HOME", keep("RUSTUP_HOME", home.join(".rustup")))
        .env("GOCACHE", keep("GOCACHE", home.join(".cache/go-build")))
        .env("GOPATH", keep("GOPATH", home.join("go")))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("IMGPACK_CACHE_DIR", test_cache_dir())
        .env_remove("GOFLAGS")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("IMGPACK_TMPDIR")
        .env_remove("IMGPACK_REPO")
        .env_remove("CARGO_TARGET_DIR");
}

/// Process groups of the blocks, killed at the end (a registry left running in the background).
#[derive(Default)]
struct Groups(Vec<u32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for group in &self.0 {
            // SAFETY: kill(2) on a process group this test created.
            unsafe { libc::kill(-(*group as i32), libc::SIGKILL) };
        }
    }
}

/// Runs one block; panics with its place, code and output if it fails.
fn run_block(block: &Block, code: &str, world: &Path, groups: &mut Groups) -> Duration {
    let log = world.join("home/.block.log");
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", code])
        .current_dir(world)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .process_group(0);
    block_env(&mut command, world);
    let started = Instant::now();
    let mut child = command.spawn().expect("bash runs");
    groups.0.push(child.id());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > BLOCK_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    match status {
        Some(status) if status.success() => started.elapsed(),
        Some(status) => panic!(
            "{} failed ({status}):\n{code}\n--- output (last 40 lines):\n{}",
            block.place(),
            tail.join("\n")
        ),
        None => panic!(
            "{} ran longer than {BLOCK_TIMEOUT:?}:\n{code}\n--- output:\n{}",
            block.place(),
            tail.join("\n")
        ),
    }
}

/// Every tool the runnable blocks call, so a missing one is said once, up front.
fn tools_ready() -> bool {
    let tools = [
        "go",
        "cargo",
        "rustup",
        "git",
        "skopeo",
        "umoci",
        "curl",
        "docker-registry",
        "man",
    ];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if !missing.is_empty() || !docker_available() {
        assert!(
            !tools_required(),
            "the docs' blocks need {missing:?} and a Docker daemon, and IMGPACK_E2E=1 requires them"
        );
        eprintln!("skipping: the docs' blocks need {missing:?} and a Docker daemon");
        return false;
    }
    true
}

#[test]
fn every_sh_block_of_the_readme_and_docs_runs() {
    if !tools_ready() {
        return;
    }
    let blocks = all_blocks();
    let (skipped, runnable): (Vec<&Block>, Vec<&Block>) =
        blocks.iter().partition(|b| b.skip.is_some());
    eprintln!(
        "{} sh blocks: {} run, {} skipped:",
        blocks.len(),
        runnable.len(),
        skipped.len()
    );
    for block in &skipped {
        eprintln!(
            "  skipped {}: {}",
            block.place(),
            block.skip.as_deref().unwrap()
        );
    }
    // The registry the docs push to is started first, as "Try it locally" asks.
    let (starts_registry, others): (Vec<&Block>, Vec<&Block>) = runnable
        .iter()
        .partition(|b| b.code.contains("docker-registry serve"));
    assert_eq!(
        starts_registry.len(),
        1,
        "one block starts the docs' registry (Try it locally)"
    );
    let work = tempfile::tempdir().unwrap();
    let world = work.path().join("checkout");
    std::fs::create_dir_all(&world).unwrap();
    make_world(&world);
    let substitutions = Substitutions::new(&world, &runnable);
    let mut groups = Groups::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for block in starts_registry.iter().chain(&others) {
            let code = substitutions.apply(&block.code);
            let took = run_block(block, &code, &world, &mut groups);
            eprintln!("  ran {} in {:.1} s", block.place(), took.as_secs_f64());
        }
    }));
    drop(groups);
    substitutions.clean_docker();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(runnable.len() >= 20, "only {} blocks ran", runnable.len());
}

#[test]
fn substitutions_rename_only_whole_names() {
    let world = Path::new("/w");
    let block = Block {
        page: "p".into(),
        line: 1,
        code: "imgpack build x --output docker:rust-hello:v1\ndocker run -d --name rust-hello -p 127.0.0.1:8080:8080 rust-hello:v1\ncurl localhost:8080/ping\ndocker rm -f rust-hello\nimgpack build fixtures/rust-hello --output oci:./out/rust-hello:v1 --push localhost:5000/rust-hello:v1\nimgpack build --output docker-archive:./out/api.tar:api:v1\ndocker run api:v1".into(),
        skip: None,
    };
    let s = Substitutions::new(world, &[&block]);
    let out = s.apply(&block.code);
    let sfx = &s.suffix;
    let reg = s.registry();
    let svc = s.service_port;
    let expected = format!(
        "imgpack build x --output docker:rust-hello-{sfx}:v1\ndocker run -d --name rust-hello-{sfx} -p 127.0.0.1:{svc}:8080 rust-hello-{sfx}:v1\ncurl 127.0.0.1:{svc}/ping\ndocker rm -f rust-hello-{sfx}\nimgpack build fixtures/rust-hello --output oci:./out/rust-hello:v1 --push {reg}/rust-hello:v1\nimgpack build --output docker-archive:./out/api.tar:api-{sfx}:v1\ndocker run api-{sfx}:v1"
    );
    assert_eq!(out, expected);
}
