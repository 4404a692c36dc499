//! Supply-chain attestations attached to images: SBOMs (SPDX 2.3 or
//! CycloneDX 1.6, from what the binaries really link), SLSA provenance, and
//! the DSSE envelopes that carry (and may sign) in-toto statements.
//!
//! Everything here turns inputs into bytes; attaching the bytes to an image
//! as OCI 1.1 referrers is imgpack-image's, pushing them the sinks'.

pub mod cargo;
pub mod dsse;
pub mod gobuild;
pub mod provenance;
pub mod sbom;
pub mod sections;

pub use cargo::{cargo_graph, read_auditable, CargoSelection, Crate, CrateGraph};
pub use dsse::{envelope, pae, DsseSigner, Envelope, EnvelopeSignature};
pub use gobuild::{read_go_buildinfo, GoBuildInfo, GoModule};
pub use provenance::{
    provenance_statement, ProvenanceInput, ResolvedDependency, DSSE_MEDIA_TYPE, IN_TOTO_MEDIA_TYPE,
    PREDICATE_TYPE_ANNOTATION, SLSA_PREDICATE_TYPE,
};
pub use sbom::{sbom, BinaryPart, ImagePart, Linked, PartKind, SbomFormat, SbomInput};

/// What a binary links, read from the file: Go build information, else a
/// cargo-auditable list, else nothing known.
pub fn linked_of_binary(bytes: &[u8]) -> Result<Linked, String> {
    if let Some(info) = read_go_buildinfo(bytes)? {
        return Ok(Linked::Go(info));
    }
    if let Some(graph) = read_auditable(bytes)? {
        return Ok(Linked::Rust(graph));
    }
    Ok(Linked::Unknown)
}

/// What the binary at `path` links, reading only its `.go.buildinfo` and
/// `.dep-v0` sections (a binary of any size costs a few KiB of memory).
pub fn linked_of_file(path: &std::path::Path) -> Result<Linked, String> {
    const GO: &str = ".go.buildinfo";
    const AUDITABLE: &str = ".dep-v0";
    let Some(sections) = sections::read_sections(path, &[GO, AUDITABLE])? else {
        return Ok(Linked::Unknown);
    };
    if let Some(blob) = sections.get(GO) {
        return gobuild::parse_buildinfo_section(blob).map(Linked::Go);
    }
    if let Some(compressed) = sections.get(AUDITABLE) {
        return cargo::parse_auditable_section(compressed).map(Linked::Rust);
    }
    Ok(Linked::Unknown)
}

/// Longest text from a binary that an error message quotes.
const QUOTE_LIMIT: usize = 200;

/// Text read from a binary, made safe to print in one error line: control
/// characters (terminal escapes, newlines) are escaped as `\u{1b}`, `\n`,
/// and it is cut at [`QUOTE_LIMIT`] characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(QUOTE_LIMIT) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > QUOTE_LIMIT {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_from_a_binary_cannot_drive_the_terminal() {
        let shown = super::printable("x\u{1b}]0;owned\u{7}\nnext\tline\r");
        assert_eq!(shown, "x\\u{1b}]0;owned\\u{7}\\nnext\\tline\\r");
        assert!(!shown.chars().any(char::is_control));
        let long = "a".repeat(1000);
        assert_eq!(
            super::printable(&long).chars().count(),
            super::QUOTE_LIMIT + 1
        );
    }
}
