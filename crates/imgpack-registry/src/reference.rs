//! Push targets: image references parsed the way docker does.

use anyhow::{bail, Context, Result};
use oci_spec::distribution::Reference;

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
        let reference: Reference = text.parse().with_context(|| {
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
