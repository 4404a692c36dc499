//! The SBOM validators the end-to-end tests run on imgpack's SBOMs: PyPI
//! `cyclonedx-python-lib` (the published CycloneDX 1.6 JSON schema, checked
//! with jsonschema) and `spdx-tools` (parses and validates SPDX 2.3 JSON), in
//! a venv under target/ that tests/tests/attest.rs finds.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::dist::target_dir;
use crate::run;

/// Pinned, so a validator release cannot change what CI accepts.
const PACKAGES: [&str; 3] = [
    "cyclonedx-python-lib[json-validation]==11.12.0",
    "spdx-tools==0.8.5",
    "jsonschema==4.26.0",
];

/// `target/sbom-venv`, created with the pinned packages when missing.
pub fn sbom_validators() -> Result<PathBuf> {
    let venv = target_dir().join("sbom-venv");
    let stamp = venv.join("installed.txt");
    let wanted = format!("{}\n", PACKAGES.join(" "));
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(venv);
    }
    if !crate::on_path("python3") {
        bail!("the SBOM tests need python3 for their validators: apt-get install python3-venv");
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("cannot create the SBOM validators' venv: apt-get install python3-venv")?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES))?;
    fs::write(&stamp, wanted)?;
    Ok(venv)
}
