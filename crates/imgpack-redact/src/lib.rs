//! The one place that takes credentials out of URLs: `scheme://user:password@host/…`
//! loses its `user:password@` before a URL is printed, logged or written into an
//! image, an SBOM or a provenance document. No dependencies, so every imgpack
//! crate can use it without breaking the one-way order of crates.

use std::borrow::Cow;

/// `https://user:token@host/x.git` → `https://host/x.git`; also for scheme
/// prefixes such as `git+https://` (cargo's source ids, imgpack's git sources).
/// A scp-like `git@host:x.git` is left alone: it names a user, never a secret.
pub fn strip_userinfo(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + 3;
    match userinfo_end(&url[authority_start..]) {
        Some(at) => Cow::Owned(format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        )),
        None => Cow::Borrowed(url),
    }
}

/// Every URL in `text` (a message, a log line) without its userinfo: each
/// `://` is followed by an authority whose `…@` is removed.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        if let Some(at) = userinfo_end(rest) {
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The offset of the `@` that ends the userinfo of an authority that starts
/// `text`: the last `@` before the path, query, fragment or the end of a word
/// (a password with a `/` must be percent-encoded, as RFC 3986 asks).
fn userinfo_end(text: &str) -> Option<usize> {
    let authority_end = text
        .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | '`') || c.is_whitespace())
        .unwrap_or(text.len());
    text[..authority_end].rfind('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_urls() {
        for (url, expected) in [
            (
                "https://ci:ghp_secret@github.example/x/y.git",
                "https://github.example/x/y.git",
            ),
            (
                "git+https://alice:p%40ss@host:8443/x.git?rev=v1#0123",
                "git+https://host:8443/x.git?rev=v1#0123",
            ),
            ("https://alice:p@ss@host/x", "https://host/x"),
            ("https://token@host", "https://host"),
            ("ssh://git@host:22/x@y.git", "ssh://host:22/x@y.git"),
            (
                "https://github.example/x/y.git",
                "https://github.example/x/y.git",
            ),
            ("git@github.example:x/y.git", "git@github.example:x/y.git"),
            (
                "registry+https://github.com/rust-lang/crates.io-index",
                "registry+https://github.com/rust-lang/crates.io-index",
            ),
        ] {
            assert_eq!(strip_userinfo(url), expected, "{url}");
        }
    }

    #[test]
    fn every_url_in_a_message_loses_its_userinfo() {
        assert_eq!(
            redact_urls(
                "imgpack://git+http://alice:PASSWORD@127.0.0.1:1/x.git@v1: cannot reach \
                 'https://bob:S3CRET@h/y' (see https://docs.example/a@b)"
            ),
            "imgpack://git+http://127.0.0.1:1/x.git@v1: cannot reach 'https://h/y' \
             (see https://docs.example/a@b)"
        );
        assert_eq!(redact_urls("no url: user@host"), "no url: user@host");
        assert_eq!(redact_urls("ends in https://a:b@"), "ends in https://");
    }
}
