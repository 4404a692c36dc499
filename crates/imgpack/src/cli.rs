use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "imgpack",
    version,
    about = "Build reproducible OCI images from static binaries, with no daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pack prebuilt static binaries into an image and write it out.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A prebuilt static binary for a platform, as PLATFORM=PATH (repeat for each platform),
    /// e.g. linux/amd64=./out/api-amd64.
    #[arg(long = "binary", value_name = "PLATFORM=PATH", required = true)]
    pub binaries: Vec<String>,

    /// Only build these platforms (comma-separated) out of the given binaries.
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Where to write the image (repeatable): oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME[:TAG]].
    #[arg(long = "output", short = 'o', value_name = "SPEC", required = true)]
    pub outputs: Vec<String>,

    /// File name of the binary in the image (/app/NAME); default: the binary's file name
    /// without a platform suffix such as -amd64.
    #[arg(long)]
    pub name: Option<String>,

    /// CA certificates at /etc/ssl/certs/ca-certificates.crt: embedded, host, none or a PEM file.
    #[arg(long, value_name = "SOURCE", default_value = "embedded")]
    pub ca_certs: String,

    /// Zone files under /usr/share/zoneinfo: embedded, host, none or a zoneinfo directory.
    #[arg(long, value_name = "SOURCE", default_value = "embedded")]
    pub tzdata: String,

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

    /// User to run as: UID[:GID] or a name from the image's /etc/passwd.
    #[arg(long, default_value = imgpack_image::DEFAULT_USER)]
    pub user: String,

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

    /// Media types: oci or docker (Docker image manifest v2 schema 2).
    #[arg(long, value_name = "FORMAT", default_value = "oci")]
    pub format: String,

    /// Layer compression: gzip or zstd.
    #[arg(long, value_name = "ALGORITHM", default_value = "gzip")]
    pub compression: String,

    /// Compression level: gzip 0-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,

    /// Directory for intermediate blobs (default: the system temporary directory).
    #[arg(long, value_name = "DIR", env = "IMGPACK_TMPDIR")]
    pub tmpdir: Option<PathBuf>,

    /// Print only the digest.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
