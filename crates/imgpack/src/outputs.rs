//! `--output` specs (`oci:`, `oci-archive:`, `docker-archive:`, `docker:`) to
//! the sinks that write them.

use anyhow::{bail, Result};
use imgpack_docker_archive::{DockerArchiveSink, DockerDaemonSink};
use imgpack_image::Sink;
use imgpack_layout::{OciArchiveSink, OciLayoutSink};

/// A parsed `--output`, whether it can hold only one platform, and whether
/// it can hold referrers (SBOM, provenance) beside the image.
pub struct Output {
    pub sink: Box<dyn Sink>,
    pub single_platform: bool,
    pub holds_referrers: bool,
}

const USAGE: &str =
    "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME[:TAG]] or docker:NAME[:TAG]";

pub fn parse_output(spec: &str) -> Result<Output> {
    let Some((transport, rest)) = spec.split_once(':') else {
        bail!("bad --output '{spec}': use {USAGE}");
    };
    // An OCI layout lists referrers in its index; docker's formats have no place for them.
    let (sink, single_platform, holds_referrers): (Box<dyn Sink>, bool, bool) = match transport {
        "oci" => (Box::new(OciLayoutSink::parse(rest)?), false, true),
        "oci-archive" => (Box::new(OciArchiveSink::parse(rest)?), false, true),
        "docker-archive" => (Box::new(DockerArchiveSink::parse(rest)?), true, false),
        // Any number of platforms: the daemon loads its own (Sink::check_platforms).
        "docker" | "docker-daemon" => (Box::new(DockerDaemonSink::parse(rest)?), false, false),
        other => bail!(
            "unknown output type '{other}' in --output '{spec}': use {USAGE} \
             (use --push REF for a registry)"
        ),
    };
    Ok(Output {
        sink,
        single_platform,
        holds_referrers,
    })
}
