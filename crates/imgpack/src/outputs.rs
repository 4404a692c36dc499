//! `--output` specs (`oci:`, `oci-archive:`, `docker-archive:`) to the sinks
//! that write them.

use anyhow::{bail, Result};
use imgpack_docker_archive::DockerArchiveSink;
use imgpack_image::Sink;
use imgpack_layout::{OciArchiveSink, OciLayoutSink};

/// A parsed `--output`, whether it can hold only one platform, and whether
/// it can hold referrers (SBOM, provenance) beside the image.
pub struct Output {
    pub sink: Box<dyn Sink>,
    pub single_platform: bool,
    pub holds_referrers: bool,
}

pub fn parse_output(spec: &str) -> Result<Output> {
    let Some((transport, rest)) = spec.split_once(':') else {
        bail!("bad --output '{spec}': use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME[:TAG]]");
    };
    let (sink, single_platform): (Box<dyn Sink>, bool) = match transport {
        "oci" => (Box::new(OciLayoutSink::parse(rest)?), false),
        "oci-archive" => (Box::new(OciArchiveSink::parse(rest)?), false),
        "docker-archive" => (Box::new(DockerArchiveSink::parse(rest)?), true),
        other => bail!(
            "unknown output type '{other}' in --output '{spec}': use oci:, oci-archive: or docker-archive: \
             (use --push REF for a registry)"
        ),
    };
    Ok(Output {
        sink,
        single_platform,
        // An OCI layout lists them in its index; docker's archive format has no place for them.
        holds_referrers: !single_platform,
    })
}
