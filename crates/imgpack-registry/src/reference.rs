//! Push targets: image references parsed the way docker does.

use anyhow::{bail, Context, Result};
use oci_spec::distribution::{ParseError, Reference};

/// A push target: registry, repository and tag, parsed the way docker does
/// (`app` and `user/app` are Docker Hub, `library/` is added to one-part names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    reference: Reference,
    tag: String,
}

impl ImageRef {
    /// Parses a reference to push to; a digest reference cannot be a push target.
    pub fn parse_push_target(text: &str) -> Result<Self> {
        diagnose(text)?;
        let shown = text.escape_debug();
        let reference = parse_reference(text).with_context(|| {
            format!("bad image reference '{shown}': use REGISTRY/REPOSITORY:TAG, e.g. registry.example.com/team/api:v1")
        })?;
        if reference.digest().is_some() {
            bail!(
                "'{shown}' names a digest, which cannot be pushed to: use a tag, e.g. {}/{}:latest",
                reference.registry(),
                reference.repository()
            );
        }
        let tag = reference.tag().unwrap_or("latest").to_owned();
        imgpack_image::validate_tag(&tag)?;
        Ok(Self { reference, tag })
    }

    /// The registry as written, normalised (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The host serving the API (`index.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        self.reference.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `registry/repository`, the part before `@sha256:…` in what a push prints.
    pub fn repository_ref(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The keys under which docker and podman store this registry's credentials.
    pub fn credential_keys(&self) -> Vec<String> {
        crate::hub::credential_keys(self.registry())
    }
}

/// Parses `text` as oci-spec's `Reference::from_str` does (docker's reference
/// grammar and normalisation), without its regular expression: compiling that
/// costs about as much as the rest of a small push's start. The grammar is
/// docker's `reference/regexp.go`, with `\w` as in Go (ASCII).
pub fn parse_reference(text: &str) -> Result<Reference, ParseError> {
    if text.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
        None => (text, None),
    };
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].split_once(':') {
        Some((_, tag)) => {
            let name = &name_and_tag[..name_and_tag.len() - tag.len() - 1];
            (name, Some(check_tag(tag)?))
        }
        None => (name_and_tag, None),
    };
    check_name(name)?;
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    let tag = tag.map(str::to_owned);
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag, digest.to_owned())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_owned()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest".into())),
    })
}

/// The longest repository name (oci-spec's and docker's limit).
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<&str, ParseError> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let valid = match tag.as_bytes() {
        [first, rest @ ..] => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|&c| word(c) || c == b'.' || c == b'-')
        }
        [] => false,
    };
    valid
        .then_some(tag)
        .ok_or(ParseError::ReferenceInvalidFormat)
}

/// `algorithm:hex`, algorithm `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*`, at least 32
/// hex digits; then the lengths oci-spec checks for the algorithms it knows.
fn check_digest(digest: &str) -> Result<&str, ParseError> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or(ParseError::ReferenceInvalidFormat)?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|c| c.is_ascii_alphabetic())
            && bytes.all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let wanted = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    match hex.len() == wanted {
        true => Ok(digest),
        false => Err(ParseError::DigestInvalidLength),
    }
}

/// `[domain/]component(/component)*`.
fn check_name(name: &str) -> Result<(), ParseError> {
    let components: Vec<&str> = name.split('/').collect();
    let paths = match components.as_slice() {
        [domain, rest @ ..] if !rest.is_empty() && is_domain(domain) => rest,
        all => all,
    };
    match paths.iter().all(|c| is_path_component(c)) {
        true => Ok(()),
        false => Err(ParseError::ReferenceInvalidFormat),
    }
}

/// `label(.label)*(:[0-9]+)?`, a label being alphanumerics with inner hyphens.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    host.split('.').all(label) && port_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|c| c == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

/// Docker's normalisation: no domain means Docker Hub, whose one-part names are under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => (left, right),
        _ => ("docker.io", name),
    };
    let domain = match domain {
        "index.docker.io" => "docker.io",
        other => other,
    };
    let remainder = match domain == "docker.io" && !remainder.contains('/') {
        true => format!("library/{remainder}"),
        false => remainder.to_owned(),
    };
    (domain.to_owned(), remainder)
}

/// Names what is wrong with a reference the parser would only call "invalid
/// reference format": spaces or control characters, a port that is not a
/// number, capitals in the repository.
fn diagnose(text: &str) -> Result<()> {
    let shown = text.escape_debug();
    if text.is_empty() {
        bail!("the image reference is empty: use REGISTRY/REPOSITORY:TAG, e.g. registry.example.com/team/api:v1");
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("bad image reference '{shown}': it holds a space or a control character");
    }
    let name = text.split('@').next().unwrap_or(text);
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_host = first.contains(['.', ':']) || first == "localhost";
    if is_host {
        if let Some((host, port)) = first.rsplit_once(':') {
            let bracketed_v6 = first.starts_with('[') && !host.ends_with(']');
            if !bracketed_v6 && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())) {
                bail!(
                    "bad image reference '{shown}': the port '{}' of registry {} is not a number",
                    port.escape_debug(),
                    host.escape_debug()
                );
            }
        }
    }
    let repository = if is_host { rest } else { name };
    let repository = repository.rsplit_once(':').map_or(repository, |(r, _)| r);
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        bail!(
            "bad repository '{}' in '{shown}': repository names are lowercase (use {})",
            repository.escape_debug(),
            repository.to_ascii_lowercase().escape_debug()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (String, String, String) {
        let r = ImageRef::parse_push_target(text).unwrap();
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().to_owned(),
        )
    }

    #[test]
    fn references_parse_like_docker() {
        assert_eq!(
            parse("app"),
            ("docker.io".into(), "library/app".into(), "latest".into())
        );
        assert_eq!(
            parse("user/app:v1"),
            ("docker.io".into(), "user/app".into(), "v1".into())
        );
        assert_eq!(
            parse("localhost:5000/api:v1"),
            ("localhost:5000".into(), "api".into(), "v1".into())
        );
        assert_eq!(
            parse("127.0.0.1:5000/team/api"),
            ("127.0.0.1:5000".into(), "team/api".into(), "latest".into())
        );
        assert_eq!(
            parse("registry.example.com/team/api:3f2c1e9"),
            (
                "registry.example.com".into(),
                "team/api".into(),
                "3f2c1e9".into()
            )
        );
        assert_eq!(
            ImageRef::parse_push_target("app").unwrap().api_host(),
            "index.docker.io"
        );
    }

    #[test]
    fn references_parse_exactly_as_oci_spec_parses_them() {
        let hex = "0123456789abcdef".repeat(4);
        let long = "a".repeat(256);
        let cases = [
            "busybox".to_owned(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            format!("test:5000/repo@sha256:{hex}"),
            format!("test:5000/repo:tag@sha256:{hex}"),
            "lowercase:Uppercase".into(),
            "Uppercase:tag".into(),
            "foo_bar.com:8080".into(),
            "foo/foo_bar.com:8080".into(),
            "index.docker.io/app".into(),
            "docker.io/library/app:v1".into(),
            "localhost/app".into(),
            "localhost:5000/a/b/c:v1".into(),
            "127.0.0.1:5000/team/api".into(),
            "a.b-c.d/e__f/g.h/i-j--k".into(),
            "host-/app".into(),
            "-host/app".into(),
            "a/b_/c".into(),
            "a/b___c".into(),
            "a/b.-c".into(),
            "a//b".into(),
            "a/".into(),
            "/a".into(),
            ":tag".into(),
            "app:".into(),
            "app@".into(),
            "app@sha256:abc".into(),
            format!("app@sha256:{hex}0"),
            format!("app@md5:{hex}"),
            format!("app@sha512:{hex}"),
            format!("app@sha256:{}", hex.to_uppercase()),
            format!("app:{}", "t".repeat(128)),
            format!("app:{}", "t".repeat(129)),
            "app:-tag".into(),
            "app:tag.-_".into(),
            format!("reg.io/{long}"),
            "reg.io:/app".into(),
            "reg.io:50a/app".into(),
            "app:v1:v2".into(),
            "reg.io:5000/app:v1@".into(),
        ];
        for case in &cases {
            let theirs = case.parse::<Reference>();
            let ours = parse_reference(case);
            assert_eq!(ours, theirs, "{case}");
        }
    }

    #[test]
    fn digests_and_garbage_are_refused() {
        let digest = format!("localhost:5000/api@sha256:{}", "a".repeat(64));
        let err = ImageRef::parse_push_target(&digest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names a digest"), "{err}");
        assert!(ImageRef::parse_push_target("UPPER/case").is_err());
        assert!(ImageRef::parse_push_target("").is_err());
    }

    fn error(text: &str) -> String {
        format!("{:#}", ImageRef::parse_push_target(text).unwrap_err())
    }

    #[test]
    fn bad_references_name_the_actual_problem() {
        let err = error("registry.example.com/Team/App:v1");
        assert!(err.contains("lowercase (use team/app)"), "{err}");
        let err = error("registry.example.com:abc/team/app:v1");
        assert!(
            err.contains("port 'abc'") && err.contains("not a number"),
            "{err}"
        );
        let err = error("localhost:/app");
        assert!(err.contains("not a number"), "{err}");
        assert!(error("team/app:v1 extra").contains("space"));
        // Found by tests/tests/fuzz.rs: a newline in the input made a two-line error.
        let err = error("\napp");
        assert!(
            !err.contains('\n') && err.contains("control character"),
            "{err}"
        );
        let err = error("app:\u{1b}[2J");
        assert!(!err.contains('\u{1b}'), "{err}");
    }
}
