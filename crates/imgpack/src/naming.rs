use std::path::Path;

use anyhow::{bail, Context, Result};
use imgpack_platform::{Arch, Platform};

/// The name a binary gets under /app: its file name, minus a platform suffix
/// (`api-amd64`, `api_linux_arm64`, `api.x86_64`) so that every platform of a
/// multi-platform image runs the same `/app/api`.
pub fn app_name(path: &Path, platform: &Platform) -> Result<String> {
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| {
            format!(
                "{}: the binary needs a UTF-8 file name, or pass --name",
                path.display()
            )
        })?;
    let stem = suffixes(platform)
        .iter()
        .filter_map(|suffix| file_name.strip_suffix(suffix.as_str()))
        .filter(|stem| !stem.is_empty())
        .min_by_key(|stem| stem.len())
        .unwrap_or(file_name);
    Ok(stem.to_owned())
}

fn suffixes(platform: &Platform) -> Vec<String> {
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

/// One name for the whole image: `--name`, or the common derived name.
pub fn common_app_name(explicit: Option<&str>, binaries: &[(Platform, &Path)]) -> Result<String> {
    if let Some(name) = explicit {
        imgpack_layer::validate_app_name(name)?;
        return Ok(name.to_owned());
    }
    let mut names = binaries
        .iter()
        .map(|(platform, path)| app_name(path, platform))
        .collect::<Result<Vec<_>>>()?;
    names.dedup();
    match names.as_slice() {
        [name] => {
            imgpack_layer::validate_app_name(name)?;
            Ok(name.clone())
        }
        _ => bail!(
            "the binaries have different names ({}), so /app/NAME would differ by platform: pass --name",
            names.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(file: &str, platform: &str) -> String {
        app_name(Path::new(file), &platform.parse().unwrap()).unwrap()
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
            (amd.clone(), Path::new("a/api-amd64")),
            (arm.clone(), Path::new("b/api-arm64")),
        ];
        assert_eq!(common_app_name(None, &same).unwrap(), "api");
        let differ = [(amd, Path::new("api")), (arm, Path::new("server"))];
        let err = common_app_name(None, &differ).unwrap_err().to_string();
        assert!(err.contains("pass --name"), "{err}");
        assert_eq!(common_app_name(Some("svc"), &differ).unwrap(), "svc");
        assert!(common_app_name(Some("a/b"), &differ).is_err());
    }
}
