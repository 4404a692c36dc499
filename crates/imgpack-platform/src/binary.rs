//! A binary file and the platform it is packed for: what a frontend produces
//! (or `--binary PLATFORM=PATH` names) and what the layers are built from.

use std::path::PathBuf;

use crate::Platform;

/// One executable for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    pub platform: Platform,
    pub path: PathBuf,
}

impl Binary {
    pub fn new(platform: Platform, path: impl Into<PathBuf>) -> Self {
        Self {
            platform,
            path: path.into(),
        }
    }
}
