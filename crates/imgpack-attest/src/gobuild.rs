//! The build information every Go ≥ 1.18 binary carries in its
//! `.go.buildinfo` section: the Go version, the main module, each dependency
//! module with version, `h1:` sum and replacement, and the build settings.
//! What `go version -m BIN` prints, read without running Go.

use goblin::elf::Elf;

use crate::printable;

/// The magic that starts the build information blob.
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// The blob header is 32 bytes; inline strings follow it.
const HEADER_LEN: usize = 32;
/// Flag bit: version and module strings are inline, varint-length-prefixed (Go ≥ 1.18).
const FLAG_INLINE: u8 = 0x2;
/// Module info is framed by 16-byte sentinels.
const SENTINEL_LEN: usize = 16;
/// Bounds on what is read from a binary (a module list is a few KiB).
const MAX_STRING: u64 = 16 << 20;

/// One module as the Go linker recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoModule {
    pub path: String,
    pub version: String,
    /// `h1:` sum, empty for the main module and filesystem replacements.
    pub sum: String,
    /// The module that replaced this one (`=>` line), if any.
    pub replace: Option<Box<GoModule>>,
}

/// The build information of one Go binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// e.g. `go1.19.8`.
    pub go_version: String,
    /// The main package's import path (`path` line).
    pub path: String,
    pub main: Option<GoModule>,
    pub deps: Vec<GoModule>,
    /// `build` lines: `-trimpath=true`, `GOARCH=arm64`, `vcs.revision=…`.
    pub settings: Vec<(String, String)>,
}

/// Reads the build information of the ELF binary `bytes`; `Ok(None)` when it
/// is not a Go binary, an error when it is one whose information is unreadable.
pub fn read_go_buildinfo(bytes: &[u8]) -> Result<Option<GoBuildInfo>, String> {
    match buildinfo_blob(bytes) {
        Some(blob) => parse_buildinfo_section(blob).map(Some),
        None => Ok(None),
    }
}

/// Parses the contents of a `.go.buildinfo` section.
pub fn parse_buildinfo_section(blob: &[u8]) -> Result<GoBuildInfo, String> {
    if blob.len() < HEADER_LEN || &blob[..MAGIC.len()] != MAGIC {
        return Err("its .go.buildinfo section does not start with Go's magic".into());
    }
    if blob[15] & FLAG_INLINE == 0 {
        return Err(
            "it was built by Go older than 1.18, whose build information imgpack does not read: \
             rebuild it with Go 1.18 or newer"
                .into(),
        );
    }
    let mut rest = &blob[HEADER_LEN..];
    let version = read_varint_string(&mut rest)?;
    let modinfo = read_varint_string(&mut rest)?;
    let modinfo = strip_sentinels(modinfo);
    let mut info = parse_modinfo(&String::from_utf8_lossy(modinfo))?;
    info.go_version = String::from_utf8_lossy(version).into_owned();
    Ok(info)
}

/// The `.go.buildinfo` section, else (section headers stripped) the data from
/// the magic on, which the Go linker aligns to 16 bytes.
fn buildinfo_blob(bytes: &[u8]) -> Option<&[u8]> {
    if let Ok(elf) = Elf::parse(bytes) {
        for section in &elf.section_headers {
            if elf.shdr_strtab.get_at(section.sh_name) == Some(".go.buildinfo") {
                let start = usize::try_from(section.sh_offset).ok()?;
                let len = usize::try_from(section.sh_size).ok()?;
                return bytes.get(start..start.checked_add(len)?);
            }
        }
    }
    (0..bytes.len().saturating_sub(HEADER_LEN))
        .step_by(16)
        .find(|&offset| bytes[offset..].starts_with(MAGIC))
        .map(|offset| &bytes[offset..])
}

fn read_varint_string<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let Some((&byte, tail)) = rest.split_first() else {
            return Err("its build information is cut off".into());
        };
        *rest = tail;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err("its build information has a bad length".into());
        }
    }
    if len > MAX_STRING || len as usize > rest.len() {
        return Err("its build information has a bad length".into());
    }
    let (string, tail) = rest.split_at(len as usize);
    *rest = tail;
    Ok(string)
}

/// Go frames the module text with 16 bytes on each side (runtime/debug's `modinfo`).
fn strip_sentinels(modinfo: &[u8]) -> &[u8] {
    let len = modinfo.len();
    if len > 2 * SENTINEL_LEN && modinfo[len - SENTINEL_LEN - 1] == b'\n' {
        &modinfo[SENTINEL_LEN..len - SENTINEL_LEN]
    } else {
        modinfo
    }
}

/// Parses the module text (runtime/debug.ParseBuildInfo's format): tab-separated
/// `path`, `mod`, `dep`, `=>` and `build` lines.
pub fn parse_modinfo(text: &str) -> Result<GoBuildInfo, String> {
    let mut info = GoBuildInfo::default();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["go", version] => info.go_version = (*version).to_owned(),
            ["path", path] => info.path = (*path).to_owned(),
            ["mod", module @ ..] => info.main = Some(module_of(module, line)?),
            ["dep", module @ ..] => info.deps.push(module_of(module, line)?),
            ["=>", module @ ..] => {
                let replacement = module_of(module, line)?;
                let last = info.deps.last_mut().or(info.main.as_mut()).ok_or_else(|| {
                    format!("replacement before any module: '{}'", printable(line))
                })?;
                last.replace = Some(Box::new(replacement));
            }
            ["build", setting] => {
                let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
                info.settings.push((key.to_owned(), value.to_owned()));
            }
            _ => {
                return Err(format!(
                    "unexpected build information line '{}'",
                    printable(line)
                ))
            }
        }
    }
    Ok(info)
}

fn module_of(fields: &[&str], line: &str) -> Result<GoModule, String> {
    let field = |index: usize| fields.get(index).copied().unwrap_or("").to_owned();
    if field(0).is_empty() {
        return Err(format!("module line without a path: '{}'", printable(line)));
    }
    Ok(GoModule {
        path: field(0),
        version: field(1),
        sum: field(2),
        replace: None,
    })
}

impl GoBuildInfo {
    /// A build setting's value (`vcs.revision`, `GOARCH`…).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODINFO: &str = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
        dep\texample.com/lib\tv0.0.0-00010101000000-000000000000\t\n=>\t../lib\t\t\n\
        dep\tgolang.org/x/text\tv0.3.7\th1:olpwvP2KacW1ZWvsR7uQhoyTYvKAupfQrRGBFM352Gk=\n\
        build\t-trimpath=true\nbuild\tCGO_ENABLED=0\nbuild\tGOARCH=arm64\n";

    /// A binary-like blob: some bytes, then the buildinfo header at a 16-byte boundary.
    fn fake_binary(modinfo: &str) -> Vec<u8> {
        let mut bytes = vec![0u8; 48];
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&[8, FLAG_INLINE]);
        bytes.resize(48 + HEADER_LEN, 0);
        let version = b"go1.19.8";
        bytes.push(version.len() as u8);
        bytes.extend_from_slice(version);
        let framed = [&[0x30u8; 16][..], modinfo.as_bytes(), &[0xf9; 16]].concat();
        let mut len = framed.len();
        while len >= 0x80 {
            bytes.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        bytes.push(len as u8);
        bytes.extend_from_slice(&framed);
        bytes
    }

    #[test]
    fn modules_replacements_and_settings_are_read() {
        let info = read_go_buildinfo(&fake_binary(MODINFO)).unwrap().unwrap();
        assert_eq!(info.go_version, "go1.19.8");
        assert_eq!(info.path, "example.com/app");
        assert_eq!(info.main.as_ref().unwrap().version, "(devel)");
        assert_eq!(info.deps.len(), 2);
        let lib = &info.deps[0];
        assert_eq!(lib.path, "example.com/lib");
        assert_eq!(lib.replace.as_ref().unwrap().path, "../lib");
        assert_eq!(
            info.deps[1].sum,
            "h1:olpwvP2KacW1ZWvsR7uQhoyTYvKAupfQrRGBFM352Gk="
        );
        assert_eq!(info.setting("GOARCH"), Some("arm64"));
    }

    #[test]
    fn non_go_and_old_go_binaries_are_told_apart() {
        assert_eq!(read_go_buildinfo(b"\x7fELF not go at all").unwrap(), None);
        let mut old = fake_binary(MODINFO);
        old[48 + 15] = 0;
        let err = read_go_buildinfo(&old).unwrap_err();
        assert!(err.contains("older than 1.18"), "{err}");
        let mut cut = fake_binary(MODINFO);
        cut.truncate(48 + HEADER_LEN + 5);
        assert!(read_go_buildinfo(&cut).is_err());
    }

    #[test]
    fn a_bad_line_is_refused() {
        assert!(parse_modinfo("dep\n").is_err());
        assert!(parse_modinfo("=>\tx\tv1\t\n").is_err());
        assert!(parse_modinfo("what\tis\tthis\n").is_err());
    }

    #[test]
    fn a_bad_line_is_quoted_without_control_characters() {
        let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J\tgo\r";
        for text in [
            format!("{evil}\n"),
            format!("dep\t\t{evil}\n"),
            format!("=>\t{evil}\n"),
        ] {
            let err = parse_modinfo(&text).unwrap_err();
            assert!(!err.chars().any(char::is_control), "{err:?}");
            assert!(err.contains("\\u{1b}]0;owned"), "{err}");
        }
        let err = read_go_buildinfo(&fake_binary(&format!("path\tx\n{evil}\n"))).unwrap_err();
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
}
