//! Flags to a checked build plan: every value parsed and validated before
//! anything is compiled or written.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use imgpack_frontend::{GoOptions, Lang, RustOptions, SourceBuild};
use imgpack_image::{Format, ImageSettings};
use imgpack_layer::{CaCerts, Compression, Tzdata, CA_BUNDLE_PATH};
use imgpack_platform::{Binary, Platform};
use imgpack_registry::{ImageRef, RegistrySink, TransportOptions};
use imgpack_sign::Signer;

use crate::cli::{BuildArgs, FileOnly, PushFlags};
use crate::git::{expand_tag, GitInfo};
use crate::outputs::{parse_output, Output};
use crate::registry::registry_sink;
use crate::sign::PendingKey;
use crate::values::{check_env, check_port, check_user, check_workdir, key_values};

/// A checked request: every flag parsed and validated before any work starts.
pub(crate) struct BuildPlan {
    pub(super) inputs: Inputs,
    /// More projects whose binaries join the main one in the image (imgpack.toml `paths`).
    pub(super) more_paths: Vec<PathBuf>,
    /// Extra files (imgpack.toml `[[files]]`).
    pub(super) files: Vec<imgpack_layer::FileSpec>,
    pub(super) outputs: Vec<Output>,
    pub(super) push: Option<PushPlan>,
    pub(super) name: Option<String>,
    /// `--base`: the image imgpack's layers go on top of.
    pub(super) base: Option<String>,
    /// How to reach registries (for the base).
    pub(super) transport: TransportOptions,
    pub(super) ca_certs: CaCerts,
    pub(super) tzdata: Tzdata,
    pub(super) zones: Option<Vec<String>>,
    pub(super) compression: Compression,
    /// `--threads`: how many threads compress layers.
    pub(super) threads: NonZeroUsize,
    /// The layer cache's directory and size bound; `None` with `--no-cache`.
    pub(super) cache: Option<CachePlan>,
    pub(super) settings: ImageSettings,
    pub(super) tmpdir: Option<PathBuf>,
    pub(super) quiet: bool,
    /// SBOM and provenance (`--sbom`, `--provenance`).
    pub(super) attest: AttestPlan,
}

/// What is attached to each platform manifest of a push or an OCI layout output.
pub(crate) struct AttestPlan {
    pub(super) sbom: Option<imgpack_attest::SbomFormat>,
    pub(super) provenance: bool,
    /// Signs the provenance's DSSE envelope (`--sign-key`); `None` leaves it unsigned.
    pub(super) signer: Option<Box<dyn imgpack_attest::DsseSigner + Send + Sync>>,
    /// The flags and settings that shaped the build, for the provenance.
    pub(super) parameters: serde_json::Value,
    /// When the build started (RFC 3339): SOURCE_DATE_EPOCH when set, so the provenance is reproducible.
    pub(super) started_on: String,
}

pub(super) struct CachePlan {
    pub(super) dir: PathBuf,
    pub(super) max_size: u64,
}

/// Environment variable that sets `--threads`.
const THREADS_ENV: &str = "IMGPACK_THREADS";

/// `--threads`, else `IMGPACK_THREADS`, else the CPUs this process may use.
fn threads(flag: Option<u16>) -> Result<NonZeroUsize> {
    let given = match flag {
        Some(threads) => Some(usize::from(threads)),
        None => match std::env::var(THREADS_ENV) {
            Ok(text) if !text.is_empty() => Some(
                text.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .with_context(|| {
                        format!("{THREADS_ENV}={text} is not a thread count: use 1 to 256")
                    })?,
            ),
            _ => None,
        },
    };
    Ok(given
        .and_then(NonZeroUsize::new)
        .unwrap_or_else(imgpack_layer::available_threads))
}

/// The layer cache, unless `--no-cache`; a build without any cache directory
/// (no HOME) simply builds without it. One that cannot be used (a file, no
/// permission) is named before any work, with both ways out.
fn cache_plan(no_cache: bool) -> Result<Option<CachePlan>> {
    if no_cache {
        return Ok(None);
    }
    let max_size = crate::cache::max_size()?;
    let Some(dir) = imgpack_blob::cache_dir() else {
        return Ok(None);
    };
    // Before anything is compiled: a cache others can write is refused.
    if dir.exists() {
        imgpack_blob::check_private_cache(&dir, imgpack_blob::LAYER_CACHE_WAY_OUT)?;
    }
    if let Err(err) = imgpack_layer::LayerCache::open(&dir) {
        bail!(
            "the cache directory {} cannot be used ({err:#}): set IMGPACK_CACHE_DIR to a \
             directory you can write, or build with --no-cache",
            dir.display()
        );
    }
    Ok(Some(CachePlan { dir, max_size }))
}

/// Where `--push` goes: a reference given, or `$IMGPACK_REPO/NAME` once the
/// binary's name is known; tags already expanded from git.
pub(super) struct PushPlan {
    pub(super) reference: Option<String>,
    pub(super) repository: Option<String>,
    pub(super) tags: Vec<String>,
    pub(super) flags: PushFlags,
    /// Blobs uploaded at once (`--jobs`).
    pub(super) jobs: usize,
    /// Signs the pushed manifests (`--sign-key`): read when planning,
    /// unlocked once the compile has finished.
    pub(super) signer: Option<Arc<PendingKey>>,
}

impl PushPlan {
    /// The registry sink, now that the image's name is known.
    pub(super) fn sink(&self, app_name: &str, quiet: bool) -> Result<(RegistrySink, ImageRef)> {
        match (&self.reference, &self.repository) {
            (Some(reference), _) => registry_sink(
                reference,
                &self.tags,
                &self.flags,
                self.jobs,
                quiet,
                self.dyn_signer(),
            ),
            (None, Some(repository)) => {
                let (first, rest) = self
                    .tags
                    .split_first()
                    .map_or(("latest", &[][..]), |(f, r)| (f.as_str(), r));
                let target = format!("{}/{app_name}:{first}", repository.trim_end_matches('/'));
                registry_sink(
                    &target,
                    rest,
                    &self.flags,
                    self.jobs,
                    quiet,
                    self.dyn_signer(),
                )
            }
            (None, None) => unreachable!("checked when planning"),
        }
    }

    fn dyn_signer(&self) -> Option<Arc<dyn Signer>> {
        self.signer.clone().map(|key| key as Arc<dyn Signer>)
    }
}

/// Where the binaries come from.
pub(super) enum Inputs {
    /// `--binary PLATFORM=PATH`.
    Prebuilt(Vec<Binary>),
    /// A Go or Rust project compiled by a frontend (its `out_dir` is set at run time).
    Source(Box<SourceBuild>),
}

pub(super) fn plan(args: BuildArgs) -> Result<BuildPlan> {
    let inputs = inputs(&args)?;
    let mut attest = super::attest::attest_plan(&args, &inputs)?;
    let platforms: Vec<Platform> = match &inputs {
        Inputs::Prebuilt(binaries) => binaries.iter().map(|b| b.platform.clone()).collect(),
        Inputs::Source(request) => request.platforms.clone(),
    };
    let outputs = args
        .outputs
        .iter()
        .map(|spec| parse_output(spec))
        .collect::<Result<Vec<_>>>()?;
    for output in &outputs {
        // Before anything is compiled: a path that cannot be written fails now.
        output
            .sink
            .check()
            .with_context(|| format!("cannot write {}", output.sink.describe()))?;
    }
    if args.push.is_none() {
        check_push_flags_unused(&args.push_flags, args.base.is_some())?;
    }
    if let Some(base) = &args.base {
        // Checked now, so a typo fails before anything is compiled.
        imgpack_registry::parse_reference(base).with_context(|| {
            format!("bad --base '{base}': use REGISTRY/REPOSITORY[:TAG][@sha256:…]")
        })?;
    }
    let git = GitInfo::of(&project_dir(&inputs));
    let push = args
        .push
        .as_deref()
        .map(|reference| {
            let repository = args.from_file.repository.as_deref();
            push_plan(
                reference,
                repository,
                &args.from_file,
                &args.push_flags,
                args.parallelism.jobs(),
                git.as_ref(),
                args.quiet,
            )
        })
        .transpose()?;
    for output in &outputs {
        output
            .sink
            .check_platforms(&platforms)
            .with_context(|| format!("cannot write {}", output.sink.describe()))?;
    }
    if platforms.len() > 1 {
        if let Some(output) = outputs.iter().find(|o| o.single_platform) {
            let names: Vec<String> = platforms.iter().map(Platform::to_string).collect();
            bail!(
                "{} holds one platform but {} were given ({}): add --platform with one of them",
                output.sink.describe(),
                platforms.len(),
                names.join(", ")
            );
        }
    }
    let format = Format::parse(args.format.as_deref().unwrap_or("oci"))?;
    let compression = Compression::from_name(
        args.compression.as_deref().unwrap_or("gzip"),
        args.compression_level,
    )?;
    format.layer(compression)?;
    if format == Format::Docker && !args.annotation.is_empty() {
        bail!("--annotation needs --format oci: Docker manifests have no annotations");
    }
    // With a base image, the base provides users, certificates and zones unless asked for.
    let default_source = if args.base.is_some() {
        "none"
    } else {
        "embedded"
    };
    let ca_certs = CaCerts::parse(args.ca_certs.as_deref().unwrap_or(default_source));
    let mut default_env = vec![format!("PATH={}", imgpack_image::DEFAULT_PATH)];
    if ca_certs != CaCerts::None {
        default_env.push(format!("SSL_CERT_FILE={CA_BUNDLE_PATH}"));
    }
    if let Some(name) = &args.name {
        imgpack_layer::validate_app_name(name)?;
    }
    let settings = ImageSettings {
        format,
        entrypoint: check_entrypoint(args.entrypoint)?,
        cmd: args.cmd,
        default_env,
        env: args
            .env
            .iter()
            .map(|e| check_env(e))
            .collect::<Result<_>>()?,
        user: args
            .user
            .as_deref()
            .map(|user| {
                let users_elsewhere =
                    args.base.is_some() || super::users::files_write_etc(&args.from_file.files);
                check_user_in_rootfs(user, users_elsewhere)
            })
            .transpose()?,
        workdir: args.workdir.map(|w| check_workdir(&w)).transpose()?,
        exposed_ports: args
            .expose
            .iter()
            .map(|p| check_port(p))
            .collect::<Result<_>>()?,
        labels: key_values("--label", &args.label)?,
        annotations: annotations(&args.annotation, format, &inputs, git.as_ref())?,
        epoch: source_date_epoch()?,
    };
    // `--sign-key` signs the provenance's DSSE envelope too.
    attest.signer = push
        .as_ref()
        .and_then(PushPlan::dyn_signer)
        .map(crate::sign::dsse_signer);
    Ok(BuildPlan {
        more_paths: args.from_file.more_paths.clone(),
        files: args.from_file.files.clone(),
        inputs,
        name: args.name,
        outputs,
        push,
        ca_certs,
        tzdata: Tzdata::parse(args.tzdata.as_deref().unwrap_or(default_source)),
        base: args.base.clone(),
        transport: crate::registry::transport(
            &args.push_flags.registry,
            args.push_flags.retry,
            Some(&args.push_flags),
            args.quiet,
        ),
        zones: args.zones,
        compression,
        threads: threads(args.threads)?,
        cache: cache_plan(args.no_cache)?,
        settings,
        attest,
        tmpdir: args.tmpdir,
        quiet: args.quiet,
    })
}

/// The directory whose git repository describes the image: the project, else the current one.
fn project_dir(inputs: &Inputs) -> PathBuf {
    match inputs {
        Inputs::Source(request) => request.path.clone(),
        Inputs::Prebuilt(_) => PathBuf::from("."),
    }
}

fn push_plan(
    reference: &str,
    file_repository: Option<&str>,
    from_file: &FileOnly,
    flags: &PushFlags,
    jobs: usize,
    git: Option<&GitInfo>,
    quiet: bool,
) -> Result<PushPlan> {
    let tags = flags
        .tags
        .iter()
        .map(|tag| expand_tag(tag, git))
        .collect::<Result<Vec<_>>>()?;
    let signer = crate::sign::load_signer(flags, from_file)?;
    let plan = if reference.is_empty() {
        // Like a flag, the environment wins over the config file.
        let repository = std::env::var("IMGPACK_REPO")
            .ok()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| file_repository.map(str::to_owned))
            .ok_or(NoRepository)?;
        PushPlan {
            reference: None,
            repository: Some(repository),
            tags,
            flags: flags.clone(),
            jobs,
            signer: signer.clone(),
        }
    } else {
        let reference = expand_reference(reference, git)?;
        PushPlan {
            reference: Some(reference),
            repository: None,
            tags,
            flags: flags.clone(),
            jobs,
            signer: signer.clone(),
        }
    };
    // Parse now (with a stand-in for the name the build will give), so a bad
    // reference or tag fails before anything is compiled.
    plan.sink("name", quiet)?;
    Ok(plan)
}

/// `--push` without a reference and nowhere to push: its own type, so that
/// `imgpack resolve` (which has no `--push`) can say it its own way.
#[derive(Debug)]
pub(crate) struct NoRepository;

impl std::fmt::Display for NoRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "--push without a reference pushes to $IMGPACK_REPO/NAME: set IMGPACK_REPO (e.g. \
             registry.example.com/team), `repository` in imgpack.toml, or give --push REGISTRY/REPOSITORY:TAG",
        )
    }
}

impl std::error::Error for NoRepository {}

/// Expands tag placeholders in the tag part of a reference (`reg/app:{git_short_sha}`).
fn expand_reference(reference: &str, git: Option<&GitInfo>) -> Result<String> {
    match reference.rsplit_once(':') {
        Some((name, tag)) if tag.contains('{') => Ok(format!("{name}:{}", expand_tag(tag, git)?)),
        _ => Ok(reference.to_owned()),
    }
}

/// The user's annotations over the ones a source build gets from git
/// (source, revision, created). Docker manifests carry none.
fn annotations(
    given: &[String],
    format: Format,
    inputs: &Inputs,
    git: Option<&GitInfo>,
) -> Result<BTreeMap<String, String>> {
    let mut annotations = BTreeMap::new();
    if let (Format::Oci, Inputs::Source(_), Some(git)) = (format, inputs, git) {
        annotations.extend(git.annotations());
    }
    annotations.extend(key_values("--annotation", given)?);
    Ok(annotations)
}

/// Prebuilt binaries, or the project to compile for the requested platforms.
fn inputs(args: &BuildArgs) -> Result<Inputs> {
    if !args.binaries.is_empty() {
        if let Some(source) = &args.source {
            bail!(
                "give either a project to build ({}) or --binary, not both",
                source.display()
            );
        }
        check_source_flags_unused(args)?;
        return Ok(Inputs::Prebuilt(select_binaries(
            &args.binaries,
            &args.platforms,
        )?));
    }
    let mut platforms: Vec<Platform> = Vec::new();
    for text in &args.platforms {
        let platform: Platform = text.parse()?;
        if platforms.contains(&platform) {
            bail!("--platform gives {platform} twice: name each platform once");
        }
        platforms.push(platform);
    }
    if platforms.is_empty() {
        platforms.push(imgpack_frontend::host_platform());
    }
    let path = args.source.clone().unwrap_or_else(|| PathBuf::from("."));
    // Before git reads it for tags and annotations, whose errors would hide this one.
    imgpack_frontend::check_project_dir(&path)?;
    Ok(Inputs::Source(Box::new(SourceBuild {
        path,
        lang: args.lang.as_deref().map(Lang::parse).transpose()?,
        platforms,
        jobs: args.parallelism.jobs(),
        go: GoOptions {
            ldflags: args.ldflags.clone(),
            tags: args.go_tags.clone(),
            env: args.from_file.go_env.clone(),
        },
        rust: RustOptions {
            bin: args.bin.clone(),
            package: args.package.clone(),
            features: args.features.clone(),
            no_default_features: args.no_default_features,
            profile: args.profile.clone(),
        },
        out_dir: PathBuf::new(),
        quiet: args.quiet,
    })))
}

/// `--push` takes an optional value, so in `imgpack build --push fixtures/go-hello`
/// the project becomes the push reference and the current directory would be
/// compiled. A value that names a directory or looks like a path is refused,
/// with the order that does what was meant.
pub(super) fn check_push_is_not_a_path(args: &BuildArgs) -> Result<()> {
    let Some(value) = args.push.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    // A registry reference starts with a letter or digit; these start paths.
    let looks_like_a_path = value.starts_with(['.', '/', '~']) || Path::new(value).is_dir();
    if !looks_like_a_path {
        return Ok(());
    }
    if args.source.is_none() && args.binaries.is_empty() {
        bail!(
            "--push {value} names a directory, not a registry reference: the project comes first, \
             as in `imgpack build {value} --push` (to $IMGPACK_REPO/NAME) or \
             `imgpack build {value} --push REGISTRY/REPOSITORY:TAG`"
        );
    }
    bail!(
        "--push {value} is a path, not a registry reference: give --push REGISTRY/REPOSITORY:TAG, \
         or --output oci:{value} to write the image to a directory"
    );
}

/// Compiler flags with prebuilt binaries would silently do nothing: refuse them.
fn check_source_flags_unused(args: &BuildArgs) -> Result<()> {
    let given = [
        ("--lang", args.lang.is_some()),
        ("--ldflags", args.ldflags.is_some()),
        ("--tags", !args.go_tags.is_empty()),
        ("--bin", args.bin.is_some()),
        ("--package", args.package.is_some()),
        ("--features", !args.features.is_empty()),
        ("--no-default-features", args.no_default_features),
        ("--profile", args.profile.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
        bail!("{flag} applies when imgpack compiles a project, not to prebuilt --binary files");
    }
    Ok(())
}

/// Registry flags without `--push` would silently do nothing: refuse them.
fn check_push_flags_unused(flags: &PushFlags, pulls_base: bool) -> Result<()> {
    let given = [
        ("--tag", !flags.tags.is_empty()),
        ("--image-refs", flags.image_refs.is_some()),
        ("--sign-key", flags.sign_key.is_some()),
        ("--sign-password-file", flags.sign_password_file.is_some()),
        // A base image is pulled from a registry too.
        (
            "--insecure-registry",
            !pulls_base && !flags.registry.insecure_registries.is_empty(),
        ),
        (
            "--registry-ca",
            !pulls_base && !flags.registry.registry_ca.is_empty(),
        ),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
        bail!("{flag} applies to a push: add --push REGISTRY/REPOSITORY:TAG");
    }
    Ok(())
}

/// Parses `--binary PLATFORM=PATH` and keeps those named by `--platform` (all if none).
fn select_binaries(given: &[String], wanted: &[String]) -> Result<Vec<Binary>> {
    let mut binaries: Vec<Binary> = Vec::new();
    for spec in given {
        let Some((platform, path)) = spec.split_once('=') else {
            bail!("bad --binary '{spec}': write it as PLATFORM=PATH, e.g. linux/amd64=./out/api");
        };
        let platform: Platform = platform.parse()?;
        if path.is_empty() {
            bail!("bad --binary '{spec}': the path after '=' is empty");
        }
        if binaries.iter().any(|b| b.platform == platform) {
            bail!("--binary gives {platform} twice: give one binary per platform");
        }
        check_regular_file(Path::new(path))?;
        binaries.push(Binary::new(platform, path));
    }
    if wanted.is_empty() {
        return Ok(binaries);
    }
    let mut selected = Vec::new();
    for platform in wanted {
        let platform: Platform = platform.parse()?;
        let Some(binary) = binaries.iter().find(|b| b.platform == platform) else {
            let have: Vec<String> = binaries.iter().map(|b| b.platform.to_string()).collect();
            bail!(
                "--platform {platform}: no --binary for it (binaries given for {})",
                have.join(", ")
            );
        };
        if selected.contains(binary) {
            bail!("--platform gives {platform} twice: name each platform once");
        }
        selected.push(binary.clone());
    }
    Ok(selected)
}

/// `--user NAME[:GROUP]` on imgpack's own root file system must name a user
/// (and group) its /etc/passwd has; on a base, the base's files are read once
/// it is pulled (`users::check_user_in_base`); `[[files]]` under /etc may bring their own.
fn check_user_in_rootfs(user: &str, users_elsewhere: bool) -> Result<String> {
    let user = check_user(user)?;
    if users_elsewhere {
        return Ok(user);
    }
    let (name, group) = user
        .split_once(':')
        .map_or((user.as_str(), None), |(u, g)| (u, Some(g)));
    let numeric = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if !numeric(name) && !imgpack_layer::rootfs_has_name(name, false) {
        bail!("--user {user}: the image's /etc/passwd has no user '{name}' (it has root, nonroot and nobody): use one of them, a UID, or --base with an image that has the user");
    }
    if let Some(group) = group.filter(|g| !numeric(g) && !imgpack_layer::rootfs_has_name(g, true)) {
        bail!("--user {user}: the image's /etc/group has no group '{group}' (it has root, nonroot and nobody): use one of them or a GID");
    }
    Ok(user)
}

/// `--entrypoint` arguments, the first of them a program: `--entrypoint ''`
/// would give an image that cannot start.
fn check_entrypoint(entrypoint: Vec<String>) -> Result<Option<Vec<String>>> {
    match entrypoint.first() {
        None => Ok(None),
        Some(program) if program.trim().is_empty() => bail!(
            "--entrypoint '{program}' names no program, so the image could not start: give the program \
             (e.g. --entrypoint /app/api), or leave --entrypoint out for the default"
        ),
        Some(_) => Ok(Some(entrypoint)),
    }
}

/// A `--binary` that exists must be a regular file: a FIFO would hang the
/// build and a pipe (`<(…)`) cannot be read twice. A missing one is reported
/// where it is read.
fn check_regular_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => bail!(
            "--binary {} is not a regular file (a directory, pipe or FIFO): give the path of the binary itself",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// SOURCE_DATE_EPOCH, the reproducible-builds convention, else 0 (1970-01-01).
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.trim().is_empty() => value.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH='{value}' is not a number of seconds: set it to e.g. $(git log -1 --format=%ct)")
        }),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn binaries_are_parsed_and_filtered_by_platform() {
        let given = strings(&["linux/amd64=a", "linux/arm64=b"]);
        assert_eq!(select_binaries(&given, &[]).unwrap().len(), 2);
        let only_arm = select_binaries(&given, &strings(&["linux/arm64"])).unwrap();
        assert_eq!(
            only_arm,
            vec![Binary::new("linux/arm64".parse().unwrap(), "b")]
        );
        let err = select_binaries(&given, &strings(&["linux/s390x"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no --binary for it"), "{err}");
        assert!(select_binaries(&strings(&["linux/amd64"]), &[]).is_err());
        assert!(select_binaries(&strings(&["linux/amd64=a", "linux/x86_64=b"]), &[]).is_err());
    }
}
