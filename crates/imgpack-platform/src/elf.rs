//! The ELF check: a binary is an executable for its platform's architecture
//! and static (no interpreter, no needed libraries), or says why not.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use goblin::container::Ctx;
use goblin::elf::dynamic::Dynamic;
use goblin::elf::header::{self, Header};
use goblin::elf::program_header::{ProgramHeader, PT_INTERP};
use goblin::strtab::Strtab;

use crate::{Arch, Platform};

/// What the check needs to know of an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub is_64: bool,
    pub little_endian: bool,
    pub executable: bool,
    /// The dynamic loader named by `PT_INTERP`.
    pub interpreter: Option<String>,
    /// Shared libraries named by `DT_NEEDED`.
    pub needed: Vec<String>,
}

impl ElfInfo {
    pub fn arch(&self) -> Option<Arch> {
        Arch::from_elf(self.machine, self.is_64, self.little_endian)
    }

    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    fn describe_arch(&self) -> String {
        match self.arch() {
            Some(arch) => arch.name().to_owned(),
            None => format!(
                "an architecture imgpack does not know (ELF machine {}, {}-bit)",
                self.machine,
                if self.is_64 { 64 } else { 32 }
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// `error` is printed here and so is not a `source` (which would print it twice).
    #[error("binary {path}: cannot read it ({error}): {}", read_hint(.error))]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("binary {path} is not an ELF executable ({reason}): pass a binary built for Linux")]
    NotElf { path: PathBuf, reason: String },
    #[error("binary {path} is a shared library or object file, not an executable: pass the program itself")]
    NotExecutable { path: PathBuf },
    #[error(
        "binary {path} is dynamically linked ({details}), so it cannot run in an image without a libc: \
         build it statically (Go: CGO_ENABLED=0 go build; Rust: a *-unknown-linux-musl target)"
    )]
    Dynamic { path: PathBuf, details: String },
    #[error(
        "binary {path} is built for {actual} but was given for {platform}: \
         pass it as linux/{actual}=… or rebuild it for {wanted}"
    )]
    WrongArch {
        path: PathBuf,
        actual: String,
        platform: Platform,
        wanted: Arch,
    },
}

/// What to do about a binary that cannot be read: only a missing one is a wrong path.
fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "check the path",
        io::ErrorKind::PermissionDenied => {
            "make it readable by this user (chmod a+r) or run as its owner"
        }
        io::ErrorKind::IsADirectory => "give the path of the binary itself",
        _ => "check that the file is intact and readable",
    }
}

/// Reads the ELF header, program headers and dynamic section of `path`.
///
/// The file is memory-mapped and only those structures are touched, so the
/// check costs the same for a 5 MB and a 5 GB binary.
pub fn inspect_elf(path: &Path) -> Result<ElfInfo, BinaryError> {
    let unreadable = |error| BinaryError::Unreadable {
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(unreadable)?;
    if file.metadata().map_err(unreadable)?.is_dir() {
        return Err(unreadable(io::ErrorKind::IsADirectory.into()));
    }
    // SAFETY: the mapping is read-only and only parsed; a concurrent writer
    // could change what we read, which the later digest of the layer records.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(unreadable)?;
    parse_elf(&map).map_err(|reason| BinaryError::NotElf {
        path: path.to_owned(),
        reason,
    })
}

fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    if bytes.len() < 4 || &bytes[..4] != header::ELFMAG {
        return Err("no ELF magic number at its start".into());
    }
    let header: Header =
        goblin::elf::Elf::parse_header(bytes).map_err(|err| format!("bad ELF header: {err}"))?;
    let container = header.container().map_err(|err| err.to_string())?;
    let endian = header.endianness().map_err(|err| err.to_string())?;
    let ctx = Ctx::new(container, endian);
    let program_headers =
        ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
            .map_err(|err| format!("bad program headers: {err}"))?;

    let interpreter = program_headers
        .iter()
        .find(|ph| ph.p_type == PT_INTERP)
        .map(|ph| read_c_string(bytes, ph.p_offset as usize, ph.p_filesz as usize));

    let mut needed = Vec::new();
    let dynamic = Dynamic::parse(bytes, &program_headers, ctx)
        .map_err(|err| format!("bad dynamic section: {err}"))?;
    if let Some(dynamic) = dynamic {
        let strtab = Strtab::parse(bytes, dynamic.info.strtab, dynamic.info.strsz, 0)
            .map_err(|err| format!("bad dynamic string table: {err}"))?;
        needed = dynamic
            .get_libraries(&strtab)
            .into_iter()
            .map(str::to_owned)
            .collect();
    }

    Ok(ElfInfo {
        machine: header.e_machine,
        is_64: header.e_ident[header::EI_CLASS] == header::ELFCLASS64,
        little_endian: header.e_ident[header::EI_DATA] == header::ELFDATA2LSB,
        executable: matches!(header.e_type, header::ET_EXEC | header::ET_DYN),
        interpreter,
        needed,
    })
}

fn read_c_string(bytes: &[u8], offset: usize, len: usize) -> String {
    let end = offset.saturating_add(len).min(bytes.len());
    let raw = bytes.get(offset..end).unwrap_or_default();
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(raw).into_owned()
}

/// Proves that `path` is a static executable for `platform`'s architecture.
pub fn check_binary(path: &Path, platform: &Platform) -> Result<ElfInfo, BinaryError> {
    let info = inspect_elf(path)?;
    if !info.executable {
        return Err(BinaryError::NotExecutable {
            path: path.to_owned(),
        });
    }
    if info.arch() != Some(platform.arch) {
        return Err(BinaryError::WrongArch {
            path: path.to_owned(),
            actual: info.describe_arch(),
            platform: platform.clone(),
            wanted: platform.arch,
        });
    }
    if !info.is_static() {
        let mut details = Vec::new();
        if let Some(interpreter) = &info.interpreter {
            details.push(format!("interpreter {interpreter}"));
        }
        if !info.needed.is_empty() {
            details.push(format!("needs {}", info.needed.join(", ")));
        }
        return Err(BinaryError::Dynamic {
            path: path.to_owned(),
            details: details.join("; "),
        });
    }
    Ok(info)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::test_elf::ElfBuilder;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn static_binary_of_the_right_arch_passes() {
        let dir = tempfile::tempdir().unwrap();
        for arch in Arch::ALL {
            let path = write(dir.path(), arch.name(), &ElfBuilder::new(arch).build());
            let info = check_binary(&path, &Platform::new(arch)).unwrap();
            assert_eq!(info.arch(), Some(arch));
        }
    }

    #[test]
    fn static_pie_with_a_dynamic_section_but_no_needed_passes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = ElfBuilder::new(Arch::Amd64).pie().dynamic(&[]).build();
        let path = write(dir.path(), "static-pie", &bytes);
        check_binary(&path, &Platform::new(Arch::Amd64)).unwrap();
    }

    #[test]
    fn dynamic_binary_is_refused_naming_its_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = ElfBuilder::new(Arch::Amd64)
            .interpreter("/lib64/ld-linux-x86-64.so.2")
            .dynamic(&["libc.so.6", "libssl.so.3"])
            .build();
        let path = write(dir.path(), "api", &bytes);
        let err = check_binary(&path, &Platform::new(Arch::Amd64)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, BinaryError::Dynamic { .. }), "{message}");
        for part in [
            "/lib64/ld-linux-x86-64.so.2",
            "libc.so.6, libssl.so.3",
            "CGO_ENABLED=0",
            "musl",
            "api",
        ] {
            assert!(message.contains(part), "'{part}' missing from: {message}");
        }
    }

    #[test]
    fn wrong_architecture_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "api", &ElfBuilder::new(Arch::Arm64).build());
        let message = check_binary(&path, &Platform::new(Arch::Amd64))
            .unwrap_err()
            .to_string();
        assert!(message.contains("built for arm64"), "{message}");
        assert!(message.contains("given for linux/amd64"), "{message}");
    }

    #[test]
    fn non_elf_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(dir.path(), "run.sh", b"#!/bin/sh\necho hi\n");
        let err = check_binary(&script, &Platform::new(Arch::Amd64)).unwrap_err();
        assert!(matches!(err, BinaryError::NotElf { .. }), "{err}");
        let truncated = write(
            dir.path(),
            "cut",
            &ElfBuilder::new(Arch::Amd64).build()[..20],
        );
        let err = check_binary(&truncated, &Platform::new(Arch::Amd64)).unwrap_err();
        assert!(matches!(err, BinaryError::NotElf { .. }), "{err}");
        let missing = dir.path().join("missing");
        let err = check_binary(&missing, &Platform::new(Arch::Amd64)).unwrap_err();
        assert!(err.to_string().contains("missing: cannot read it"), "{err}");
        let err = check_binary(dir.path(), &Platform::new(Arch::Amd64)).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn shared_object_is_not_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "lib.o",
            &ElfBuilder::new(Arch::Amd64).relocatable().build(),
        );
        let err = check_binary(&path, &Platform::new(Arch::Amd64)).unwrap_err();
        assert!(matches!(err, BinaryError::NotExecutable { .. }), "{err}");
    }

    #[test]
    fn host_system_binary_is_dynamic() {
        // Debian's own programs link glibc: a real-world dynamic binary.
        let path = Path::new("/bin/sh");
        let info = inspect_elf(path).unwrap();
        assert!(!info.is_static());
        assert!(info.interpreter.is_some());
    }
}
