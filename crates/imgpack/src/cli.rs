//! The command line: every command's flags (clap), and the settings only
//! imgpack.toml can give, which travel with the build flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use imgpack_layer::FileSpec;
use imgpack_registry::RetryPolicy;

/// Environment variable that sets `--tmpdir`.
pub const TMPDIR_ENV: &str = "IMGPACK_TMPDIR";
/// Environment variable that sets `--config`.
pub const CONFIG_ENV: &str = "IMGPACK_CONFIG";
/// `--jobs` when not given.
pub const DEFAULT_JOBS: u16 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "imgpack",
    version,
    about = "Build reproducible OCI images of static Go and Rust programs, with no daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compile a Go or Rust project (or take prebuilt binaries) into an image; write it out or push it.
    Build(Box<BuildArgs>),
    /// Push an image from an OCI layout (oci:DIR[:TAG]) to a registry.
    Push(PushArgs),
    /// Save credentials for a registry in docker's config.json, as `docker login` does.
    Login(LoginArgs),
    /// Build and push every imgpack://PATH in Kubernetes YAML; print the YAML with the
    /// pushed REPOSITORY@sha256:… references in their place.
    Resolve(ResolveArgs),
    /// Make a cosign key pair for --sign-key: PREFIX.key (encrypted with COSIGN_PASSWORD) and
    /// PREFIX.pub.
    Keygen(KeygenArgs),
    /// Check the cosign signatures of a pushed image, its index and every platform manifest,
    /// against a public key and the image's repository.
    Verify(VerifyArgs),
    /// Print a shell completion script: imgpack completion bash > /etc/bash_completion.d/imgpack
    Completion(crate::ship::CompletionArgs),
    /// Print the man page (roff): imgpack man | man -l -
    Man(crate::ship::ManArgs),
    /// Show the size of imgpack's cache (layers, base images); prune it.
    Cache(CacheArgs),
}

/// `imgpack cache`: shows the cache; `--prune` or `--clear` also shrink its layers.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Drop the least recently used layers until the layer cache fits in --max-size.
    #[arg(long, conflicts_with = "clear")]
    pub prune: bool,

    /// The size --prune prunes to, e.g. 2GiB or 500MB; default: IMGPACK_CACHE_MAX_SIZE,
    /// else 10GiB.
    #[arg(long, value_name = "SIZE", requires = "prune")]
    pub max_size: Option<String>,

    /// Drop every cached layer (base images stay).
    #[arg(long)]
    pub clear: bool,
}

#[derive(Args, Debug)]
pub struct ResolveArgs {
    /// YAML to read: a file, a directory of .yaml/.yml/.json files, or - for standard input
    /// (repeatable).
    #[arg(
        long = "filename",
        short = 'f',
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub filenames: Vec<PathBuf>,

    /// Also read the subdirectories of directories given with -f.
    #[arg(long, short = 'R')]
    pub recursive: bool,

    /// Platforms to build (comma-separated); default: `platforms` in the project's
    /// imgpack.toml, else this machine's.
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    #[command(flatten)]
    pub parallelism: Parallelism,

    #[command(flatten)]
    pub push: PushFlags,

    /// Trust the imgpack.toml of imgpack://git+… sources as a local one: let it set keys
    /// that reach outside the checkout or run programs (allow_outside_project, sign_key…).
    #[arg(long)]
    pub trust_source_config: bool,

    /// No progress output; only the YAML.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Flags shared by every command that talks to a registry.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Allow plain HTTP or unverified TLS for this registry (HOST[:PORT]; repeatable).
    /// localhost and 127.0.0.0/8 may use plain HTTP without it.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Trust the CA certificates in this PEM file for registries, besides the system's (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
}

/// `--jobs`: how much work runs at once. Every command that builds or pushes
/// takes it: it bounds the Go compilers run at once, the blobs uploaded at
/// once and, for `resolve`, the images built at once.
#[derive(Args, Debug, Clone, Copy)]
pub struct Parallelism {
    /// Work done at once (1-64): platforms compiled (Go), blobs uploaded and, for resolve,
    /// images built.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

impl Parallelism {
    pub fn jobs(self) -> usize {
        usize::from(self.jobs)
    }
}

impl Default for Parallelism {
    fn default() -> Self {
        Self { jobs: DEFAULT_JOBS }
    }
}

/// Flags of a push: extra tags, retries, where to record the result.
#[derive(Args, Debug, Clone)]
pub struct PushFlags {
    /// A tag to push (repeatable): an extra one when a reference is given; with `build
    /// --push` alone and for resolve, the first is the pushed tag (default latest). {git_sha},
    /// {git_short_sha}, {git_tag} and {date} expand from the project's git repository.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Also write the pushed REPOSITORY@sha256:… references to this file, one line per image.
    #[arg(long, value_name = "FILE")]
    pub image_refs: Option<PathBuf>,

    /// Upload large blobs in PATCH requests of this many MiB (0: one streamed request per blob).
    #[arg(long, value_name = "MIB", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_CHUNK_MIB))]
    pub chunk_size: u64,

    #[command(flatten)]
    pub retry: RetryArgs,

    /// Sign the pushed index and every platform manifest, as cosign does, with this P-256 key
    /// (cosign's encrypted .key, password in COSIGN_PASSWORD, or PKCS#8 PEM); also
    /// IMGPACK_SIGN_KEY or `sign_key` in imgpack.toml.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,

    /// Read the --sign-key password from this file (one line; wins over COSIGN_PASSWORD and
    /// IMGPACK_SIGN_PASSWORD); also `sign_password_file` in imgpack.toml.
    #[arg(long, value_name = "FILE")]
    pub sign_password_file: Option<PathBuf>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Environment variable that sets `--sign-key` for pushes.
pub const SIGN_KEY_ENV: &str = "IMGPACK_SIGN_KEY";

/// Largest `--chunk-size`: 4 GiB per PATCH.
const MAX_CHUNK_MIB: u64 = 4096;
/// Largest `--retry-timeout`: a day.
const MAX_RETRY_TIMEOUT: u64 = 86_400;

/// `--retry-timeout`, for every command that pushes to or reads from a registry.
#[derive(Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryArgs {
    /// Give up on a blob or manifest after retrying transient failures for this many seconds
    /// (default 120), and on reaching a registry at all after this many (default 30).
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_RETRY_TIMEOUT))]
    pub retry_timeout: Option<u64>,
}

impl RetryArgs {
    /// The registry client's retry policy: the defaults, or the one timeout given.
    pub fn policy(self) -> RetryPolicy {
        match self.retry_timeout {
            Some(seconds) => RetryPolicy::with_timeout(Duration::from_secs(seconds)),
            None => RetryPolicy::default(),
        }
    }
}

/// The values clap gives when no push flag is on the command line.
impl Default for PushFlags {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            image_refs: None,
            chunk_size: 0,
            retry: RetryArgs::default(),
            sign_key: None,
            sign_password_file: None,
            registry: RegistryArgs::default(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image to push: oci:DIR[:TAG].
    pub source: String,

    /// Where to push it: REGISTRY/REPOSITORY[:TAG].
    pub target: String,

    #[command(flatten)]
    pub parallelism: Parallelism,

    #[command(flatten)]
    pub push: PushFlags,

    /// Print only the pushed reference.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Write PREFIX.key and PREFIX.pub (neither may exist).
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_key_prefix: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The image: REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:….
    pub reference: String,

    /// The public key (PEM, e.g. cosign.pub) the signatures must verify with.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Also require an SBOM attached to every platform manifest.
    #[arg(long)]
    pub sbom: bool,

    /// Also require a provenance attestation on every platform manifest, its DSSE envelope
    /// signed with the key.
    #[arg(long)]
    pub provenance: bool,

    #[command(flatten)]
    pub retry: RetryArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Print nothing on success.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry, HOST[:PORT] (docker.io for Docker Hub).
    pub server: String,

    /// User name.
    #[arg(long, short = 'u')]
    pub username: String,

    /// Read the password (or token) from standard input.
    #[arg(long, required = true)]
    pub password_stdin: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// The Go package or Cargo project to compile (default: the current directory), or a
    /// git source: git+URL[@REV][#SUBDIR] (https://, ssh://, user@host:path or file://).
    #[arg(value_name = "PATH|git+URL")]
    pub source: Option<PathBuf>,

    /// A prebuilt static binary for a platform, as PLATFORM=PATH (repeat for each platform),
    /// e.g. linux/amd64=./out/api-amd64; instead of compiling PATH.
    #[arg(long = "binary", value_name = "PLATFORM=PATH")]
    pub binaries: Vec<String>,

    /// Platforms to build (comma-separated); default: `platforms` in imgpack.toml, else
    /// this machine's. With --binary, only these of the given binaries (default: all).
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// The project's language, go or rust (default: detected from PATH).
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,

    /// Go: extra -ldflags, added after -s -w -buildid=.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub ldflags: Option<String>,

    /// Go: build tags (comma-separated).
    #[arg(
        long = "tags",
        id = "go_tags",
        value_name = "TAGS",
        value_delimiter = ','
    )]
    pub go_tags: Vec<String>,

    /// Rust: the binary target to build (needed when the project has several).
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,

    /// Rust: the workspace package to build.
    #[arg(long, short = 'p', value_name = "NAME")]
    pub package: Option<String>,

    /// Rust: features to enable (comma-separated).
    #[arg(long, short = 'F', value_name = "FEATURES", value_delimiter = ',')]
    pub features: Vec<String>,

    /// Rust: do not enable the default features.
    #[arg(long)]
    pub no_default_features: bool,

    /// Rust: the cargo profile (default: release).
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Where to write the image (repeatable): oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME[:TAG]], or docker:NAME[:TAG] to load it into the local
    /// Docker Engine.
    #[arg(
        long = "output",
        short = 'o',
        value_name = "SPEC",
        required_unless_present = "push"
    )]
    pub outputs: Vec<String>,

    /// Push the image to a registry: REGISTRY/REPOSITORY[:TAG]. Without a value, to
    /// $IMGPACK_REPO/NAME with the --tag tags (default latest).
    #[arg(long, value_name = "REF", num_args = 0..=1, default_missing_value = "")]
    pub push: Option<String>,

    #[command(flatten)]
    pub parallelism: Parallelism,

    #[command(flatten)]
    pub push_flags: PushFlags,

    /// File name of the binary in the image (/app/NAME); default: the binary's file name
    /// without a platform suffix such as -amd64.
    #[arg(long)]
    pub name: Option<String>,

    /// Put the image on top of this base image (REGISTRY/REPOSITORY[:TAG][@DIGEST]) instead of
    /// imgpack's minimal root filesystem; its config (Env, User, WorkingDir…) is kept unless set.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,

    /// CA certificates at /etc/ssl/certs/ca-certificates.crt: embedded (default; none with
    /// --base), host, none or a PEM file.
    #[arg(long, value_name = "SOURCE")]
    pub ca_certs: Option<String>,

    /// Zone files under /usr/share/zoneinfo: embedded (default; none with --base), host, none
    /// or a zoneinfo directory.
    #[arg(long, value_name = "SOURCE")]
    pub tzdata: Option<String>,

    /// Keep only these zones (comma-separated), e.g. Europe/Berlin,UTC.
    #[arg(long, value_name = "ZONES", value_delimiter = ',')]
    pub zones: Option<Vec<String>>,

    /// Entrypoint argument (repeat for each); default: /app/NAME.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,

    /// Cmd argument passed after the entrypoint (repeat for each).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub cmd: Vec<String>,

    /// Environment variable KEY=VALUE (repeatable); replaces a default of the same key.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// User to run as: UID[:GID] or a name from the image's /etc/passwd (default 65532:65532).
    #[arg(long)]
    pub user: Option<String>,

    /// Working directory (absolute path).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// Port to declare, PORT[/tcp|udp|sctp] (repeatable).
    #[arg(long, value_name = "PORT[/PROTO]")]
    pub expose: Vec<String>,

    /// Config label KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Annotation KEY=VALUE on every manifest and the index (repeatable; OCI format only).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,

    /// Media types: oci (default) or docker (Docker image manifest v2 schema 2).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Layer compression: gzip (default) or zstd.
    #[arg(long, value_name = "ALGORITHM")]
    pub compression: Option<String>,

    /// Compression level: gzip 0-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,

    /// Threads that compress layers (1-256); the same bytes for any count (also
    /// IMGPACK_THREADS); default: the CPUs this process may use, cgroup limits included.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,

    /// Write every layer again instead of taking unchanged ones from the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// SBOM attached to each platform manifest of a push or an oci:/oci-archive: output: spdx
    /// (default, SPDX 2.3 JSON), cyclonedx (CycloneDX 1.6 JSON) or none.
    #[arg(long, value_name = "FORMAT")]
    pub sbom: Option<String>,

    /// SLSA provenance attached to each platform manifest of a push or an oci:/oci-archive:
    /// output: true (default) or false.
    #[arg(long, value_name = "BOOL")]
    pub provenance: Option<bool>,

    /// Directory for intermediate blobs (default: the system temporary directory).
    #[arg(long, value_name = "DIR", env = TMPDIR_ENV)]
    pub tmpdir: Option<PathBuf>,

    /// The project's settings file (default: imgpack.toml in the project or the current
    /// directory; also IMGPACK_CONFIG).
    #[arg(long, value_name = "FILE", env = CONFIG_ENV)]
    pub config: Option<PathBuf>,

    /// Trust the imgpack.toml of a git source as a local one: let it set keys that reach
    /// outside the checkout or run programs (allow_outside_project, sign_key, [go] env…).
    #[arg(long)]
    pub trust_source_config: bool,

    /// Settings only a config file can give (see config.rs).
    #[arg(skip)]
    pub from_file: FileOnly,

    /// For a git source, the checkout's root: it stands in for the current
    /// directory when imgpack.toml is looked for.
    #[arg(skip)]
    pub checkout_root: Option<PathBuf>,

    /// Where a git source's URL came from: the command line, or YAML read by
    /// `imgpack resolve` (whose hosts get IMGPACK_GIT_TOKEN only when listed).
    #[arg(skip)]
    pub url_origin: imgpack_git::UrlOrigin,

    /// Print only the digest (or, with --push, the pushed reference).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl BuildArgs {
    /// `imgpack build PATH --push`, to `$IMGPACK_REPO/NAME` (or the file's
    /// `repository`), with every other flag at its default and the
    /// environment read as clap reads it (`IMGPACK_TMPDIR`, `IMGPACK_CONFIG`;
    /// an empty one counts as unset).
    pub fn push_project(path: &str) -> Self {
        let from_env = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        Self {
            source: Some(PathBuf::from(path)),
            push: Some(String::new()),
            tmpdir: from_env(TMPDIR_ENV),
            config: from_env(CONFIG_ENV),
            ..Self::default()
        }
    }
}

/// Settings only a config file can give, carried next to the flags.
#[derive(Clone, Debug, Default)]
pub struct FileOnly {
    /// `repository`: where `--push` without a reference goes (`$IMGPACK_REPO` wins).
    pub repository: Option<String>,
    /// `[go] env`: variables for `go build`.
    pub go_env: Vec<(String, String)>,
    /// `[[files]]`: extra files, with paths resolved against the file's directory.
    pub files: Vec<FileSpec>,
    /// `paths` beyond the first: more binaries for the same image.
    pub more_paths: Vec<PathBuf>,
    /// `sign_key`, resolved against the file's directory (`--sign-key` and
    /// IMGPACK_SIGN_KEY win).
    pub sign_key: Option<PathBuf>,
    /// `sign_password_file`, resolved against the file's directory
    /// (`--sign-password-file` and the password variables win).
    pub sign_password_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn build_args(argv: &[&str]) -> BuildArgs {
        match Cli::parse_from(argv).command {
            Command::Build(args) => *args,
            other => panic!("not a build: {other:?}"),
        }
    }

    #[test]
    fn defaults_match_what_clap_gives() {
        let parsed = build_args(&["imgpack", "build", "cmd/api", "--push"]);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", BuildArgs::push_project("cmd/api"))
        );
    }
}
