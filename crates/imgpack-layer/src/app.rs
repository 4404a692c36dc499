//! Everything about `/app/NAME`: the directory the binaries live in, the name
//! a binary gets there (derived from its file name, or `--name`), the path the
//! default entrypoint runs, and the app layer that puts them there.

use std::path::Path;

use anyhow::{bail, Context, Result};
use imgpack_platform::{Arch, Binary, Platform};

use crate::{Contents, DescribedContents, LayerContents};

/// Where the application binaries live in the image (also on the image's PATH).
pub const APP_DIR: &str = "/app";

/// `/app/NAME`: where a binary named `name` lives, and what the default entrypoint runs.
pub fn app_path(name: &str) -> String {
    format!("{APP_DIR}/{name}")
}

/// The binary's name becomes a file name under /app: one plain path component.
pub fn validate_app_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.chars().any(char::is_control);
    if !plain {
        bail!("bad binary name '{name}': use a plain file name such as 'api' (--name)");
    }
    Ok(())
}

/// The name a binary gets under /app: its file name, minus a platform suffix
/// (`api-amd64`, `api_linux_arm64`, `api.x86_64`) so that every platform of a
/// multi-platform image runs the same `/app/api`.
pub fn derived_app_name(binary: &Binary) -> Result<String> {
    let file_name = binary
        .path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| {
            format!(
                "{}: the binary needs a UTF-8 file name, or pass --name",
                binary.path.display()
            )
        })?;
    let stem = platform_suffixes(&binary.platform)
        .iter()
        .filter_map(|suffix| file_name.strip_suffix(suffix.as_str()))
        .filter(|stem| !stem.is_empty())
        .min_by_key(|stem| stem.len())
        .unwrap_or(file_name);
    Ok(stem.to_owned())
}

/// The name of an extra binary (imgpack.toml `paths` beyond the first): its
/// file name as it is, `/app/<file name>`.
pub fn extra_app_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|name| name.to_str())
        .context("a binary has no usable file name")
}

fn platform_suffixes(platform: &Platform) -> Vec<String> {
    let arch = platform.arch;
    let mut arch_names = vec![arch.name().to_owned()];
    match arch {
        Arch::Amd64 => arch_names.push("x86_64".into()),
        Arch::Arm64 => arch_names.push("aarch64".into()),
        Arch::I386 => arch_names.extend(["i386".into(), "i686".into()]),
        _ => {}
    }
    if let Some(variant) = platform.variant {
        let with_variant: Vec<String> = arch_names
            .iter()
            .flat_map(|name| {
                [
                    format!("{name}{variant}"),
                    format!("{name}-{variant}"),
                    format!("{name}_{variant}"),
                ]
            })
            .collect();
        arch_names.extend(with_variant);
    }
    let mut suffixes = Vec::new();
    for separator in ["-", "_", "."] {
        for name in &arch_names {
            suffixes.push(format!("{separator}{name}"));
            suffixes.push(format!("{separator}linux{separator}{name}"));
        }
    }
    suffixes
}

/// One name for the whole image: `explicit` (`--name`), or the name every
/// binary derives to.
pub fn common_app_name(explicit: Option<&str>, binaries: &[Binary]) -> Result<String> {
    if let Some(name) = explicit {
        validate_app_name(name)?;
        return Ok(name.to_owned());
    }
    let mut names = binaries
        .iter()
        .map(derived_app_name)
        .collect::<Result<Vec<_>>>()?;
    names.dedup();
    match names.as_slice() {
        [name] => {
            validate_app_name(name)?;
            Ok(name.clone())
        }
        _ => bail!(
            "the binaries have different names ({}), so /app/NAME would differ by platform: pass --name",
            names.join(", ")
        ),
    }
}

/// Layer 4: the binaries at /app/<name>, mode 0755, owned by root.
pub fn app_layer(binaries: &[(&Path, &str)]) -> Result<DescribedContents> {
    let mut contents = LayerContents::new();
    contents.add_dir(APP_DIR, 0o755, 0, 0)?;
    let mut targets = Vec::new();
    for (binary, name) in binaries {
        validate_app_name(name)?;
        let target = app_path(name);
        contents.add_file(&target, Contents::File(binary.to_path_buf()), 0o755)?;
        targets.push(target);
    }
    Ok(DescribedContents {
        contents,
        description: format!("imgpack app: {}", targets.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(file: &str, platform: &str) -> String {
        derived_app_name(&Binary::new(platform.parse().unwrap(), file)).unwrap()
    }

    #[test]
    fn platform_suffixes_are_dropped() {
        assert_eq!(name("out/api-amd64", "linux/amd64"), "api");
        assert_eq!(name("out/api_linux_arm64", "linux/arm64"), "api");
        assert_eq!(name("api.x86_64", "linux/amd64"), "api");
        assert_eq!(name("api-armv7", "linux/arm/v7"), "api");
        assert_eq!(name("api", "linux/amd64"), "api");
        // Only the binary's own platform is a suffix; a name is never emptied.
        assert_eq!(name("api-arm64", "linux/amd64"), "api-arm64");
        assert_eq!(name("amd64", "linux/amd64"), "amd64");
    }

    #[test]
    fn differing_names_need_name() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let same = [
            Binary::new(amd.clone(), "a/api-amd64"),
            Binary::new(arm.clone(), "b/api-arm64"),
        ];
        assert_eq!(common_app_name(None, &same).unwrap(), "api");
        let differ = [Binary::new(amd, "api"), Binary::new(arm, "server")];
        let err = common_app_name(None, &differ).unwrap_err().to_string();
        assert!(err.contains("pass --name"), "{err}");
        assert_eq!(common_app_name(Some("svc"), &differ).unwrap(), "svc");
        assert!(common_app_name(Some("a/b"), &differ).is_err());
    }

    #[test]
    fn the_entrypoint_path_is_under_the_app_dir() {
        assert_eq!(app_path("api"), "/app/api");
    }
}
