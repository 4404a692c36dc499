//! Errors whose way out depends on the command: `imgpack build` can take
//! prebuilt binaries or a language flag, `imgpack resolve` builds from source
//! only and has neither flag, so each says what it can offer.

use std::fmt;

/// A project that cannot be built as given.
#[derive(Debug)]
pub struct SourceError {
    pub problem: String,
    /// The way out with `imgpack build`'s flags (`--binary`, `--lang`).
    pub advice: &'static str,
    /// The way out for a command without those flags.
    pub plain_advice: &'static str,
}

impl SourceError {
    /// The one line for a command that has no `--binary` or `--lang`.
    pub fn without_flags(&self) -> String {
        format!("{}: {}", self.problem, self.plain_advice)
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem, self.advice)
    }
}

impl std::error::Error for SourceError {}
