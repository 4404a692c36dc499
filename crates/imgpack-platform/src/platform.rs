//! Platforms (`linux/ARCH[/VARIANT]`): parsing with the common aliases,
//! containerd's variant rules, and what each architecture's ELF looks like.

use std::fmt;
use std::str::FromStr;

/// A CPU architecture imgpack can pack binaries for, with what its ELF files look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
    Arm,
    I386,
    Ppc64le,
    S390x,
    Riscv64,
    Loong64,
    Mips64le,
}

impl Arch {
    pub const ALL: [Arch; 9] = [
        Arch::Amd64,
        Arch::Arm64,
        Arch::Arm,
        Arch::I386,
        Arch::Ppc64le,
        Arch::S390x,
        Arch::Riscv64,
        Arch::Loong64,
        Arch::Mips64le,
    ];

    /// The name used in image configs and platform strings (Go's GOARCH).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::I386 => "386",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Riscv64 => "riscv64",
            Arch::Loong64 => "loong64",
            Arch::Mips64le => "mips64le",
        }
    }

    /// ELF `e_machine`, 64-bit class and little-endianness of binaries for this architecture.
    pub fn elf_signature(self) -> (u16, bool, bool) {
        use goblin::elf::header::*;
        match self {
            Arch::Amd64 => (EM_X86_64, true, true),
            Arch::Arm64 => (EM_AARCH64, true, true),
            Arch::Arm => (EM_ARM, false, true),
            Arch::I386 => (EM_386, false, true),
            Arch::Ppc64le => (EM_PPC64, true, true),
            Arch::S390x => (EM_S390, true, false),
            Arch::Riscv64 => (EM_RISCV, true, true),
            Arch::Loong64 => (EM_LOONGARCH, true, true),
            Arch::Mips64le => (EM_MIPS, true, true),
        }
    }

    /// The architecture whose binaries have this ELF signature, if imgpack knows it.
    pub fn from_elf(machine: u16, is_64: bool, little_endian: bool) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|arch| arch.elf_signature() == (machine, is_64, little_endian))
    }

    fn parse(name: &str) -> Option<(Arch, Option<&'static str>)> {
        // Besides Go's names, accept the kernel's and Debian's common spellings.
        let parsed = match name {
            "amd64" | "x86_64" | "x86-64" => (Arch::Amd64, None),
            "arm64" | "aarch64" => (Arch::Arm64, None),
            "arm" => (Arch::Arm, None),
            "armhf" => (Arch::Arm, Some("v7")),
            "armel" => (Arch::Arm, Some("v6")),
            "386" | "i386" | "i686" => (Arch::I386, None),
            "ppc64le" => (Arch::Ppc64le, None),
            "s390x" => (Arch::S390x, None),
            "riscv64" => (Arch::Riscv64, None),
            "loong64" | "loongarch64" => (Arch::Loong64, None),
            "mips64le" => (Arch::Mips64le, None),
            _ => return None,
        };
        Some(parsed)
    }

    /// The variant recorded in the image for `variant` given by the user, as
    /// containerd normalises it (`arm` alone means v7, `arm64/v8` is plain arm64).
    /// The variants an architecture has, for errors: `v5, v6, v7` for arm.
    pub fn variants(self) -> &'static str {
        match self {
            Arch::Arm => "v5, v6, v7",
            Arch::Arm64 => "v8",
            Arch::Amd64 => "v1, v2, v3, v4",
            _ => "none",
        }
    }

    fn normalise_variant(self, variant: Option<&str>) -> Result<Option<&'static str>, ()> {
        let variant = variant.map(|v| v.strip_prefix('v').unwrap_or(v));
        match (self, variant) {
            (Arch::Arm, None) => Ok(Some("v7")),
            (Arch::Arm, Some("5")) => Ok(Some("v5")),
            (Arch::Arm, Some("6")) => Ok(Some("v6")),
            (Arch::Arm, Some("7")) => Ok(Some("v7")),
            (Arch::Arm64, Some("8")) => Ok(None),
            (Arch::Amd64, Some("1")) => Ok(None),
            (Arch::Amd64, Some("2")) => Ok(Some("v2")),
            (Arch::Amd64, Some("3")) => Ok(Some("v3")),
            (Arch::Amd64, Some("4")) => Ok(Some("v4")),
            (_, None) => Ok(None),
            (_, Some(_)) => Err(()),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An image platform: always `linux`, an architecture and maybe a variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub arch: Arch,
    pub variant: Option<&'static str>,
}

impl Platform {
    pub const fn new(arch: Arch) -> Self {
        Self {
            arch,
            variant: None,
        }
    }

    pub fn os(&self) -> &'static str {
        "linux"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux/{}", self.arch)?;
        if let Some(variant) = self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("bad platform '{0}': write it as linux/ARCH or linux/ARCH/VARIANT, for example linux/amd64 or linux/arm/v7")]
    Syntax(String),
    #[error(
        "platform '{0}': only linux images are supported (imgpack packs static Linux binaries)"
    )]
    NotLinux(String),
    #[error("platform '{given}': unknown architecture '{arch}' (known: {known})")]
    UnknownArch {
        given: String,
        arch: String,
        known: String,
    },
    #[error("platform '{given}': '{variant}' is not a variant of {arch} (its variants: {})", arch.variants())]
    BadVariant {
        given: String,
        arch: Arch,
        variant: String,
    },
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = given.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(PlatformError::Syntax(given.to_owned())),
        };
        if os.is_empty() || arch.is_empty() || variant == Some("") {
            return Err(PlatformError::Syntax(given.to_owned()));
        }
        if os != "linux" {
            return Err(PlatformError::NotLinux(given.to_owned()));
        }
        let (arch_value, implied_variant) =
            Arch::parse(arch).ok_or_else(|| PlatformError::UnknownArch {
                given: given.to_owned(),
                arch: arch.to_owned(),
                known: Arch::ALL.map(Arch::name).join(", "),
            })?;
        let variant = arch_value
            .normalise_variant(variant.or(implied_variant))
            .map_err(|()| PlatformError::BadVariant {
                given: given.to_owned(),
                arch: arch_value,
                variant: variant.unwrap_or_default().to_owned(),
            })?;
        Ok(Platform {
            arch: arch_value,
            variant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, PlatformError> {
        text.parse::<Platform>().map(|p| p.to_string())
    }

    #[test]
    fn parses_and_normalises_like_containerd() {
        assert_eq!(parse("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(parse("linux/x86_64").unwrap(), "linux/amd64");
        assert_eq!(parse("linux/aarch64").unwrap(), "linux/arm64");
        assert_eq!(parse("linux/arm64/v8").unwrap(), "linux/arm64");
        assert_eq!(parse("linux/arm").unwrap(), "linux/arm/v7");
        assert_eq!(parse("linux/arm/6").unwrap(), "linux/arm/v6");
        assert_eq!(parse("linux/amd64/v3").unwrap(), "linux/amd64/v3");
        assert_eq!(parse("linux/386").unwrap(), "linux/386");
    }

    #[test]
    fn rejects_bad_platforms_with_a_reason() {
        assert!(matches!(parse("amd64"), Err(PlatformError::Syntax(_))));
        assert!(matches!(parse("linux/"), Err(PlatformError::Syntax(_))));
        assert!(matches!(
            parse("linux/amd64/"),
            Err(PlatformError::Syntax(_))
        ));
        assert!(matches!(
            parse("windows/amd64"),
            Err(PlatformError::NotLinux(_))
        ));
        assert!(matches!(
            parse("linux/sparc"),
            Err(PlatformError::UnknownArch { .. })
        ));
        assert!(matches!(
            parse("linux/arm64/v7"),
            Err(PlatformError::BadVariant { .. })
        ));
        let message = parse("linux/arm/v9").unwrap_err().to_string();
        assert!(message.contains("its variants: v5, v6, v7"), "{message}");
        let message = parse("linux/sparc").unwrap_err().to_string();
        assert!(message.contains("known: amd64, arm64"), "{message}");
    }

    #[test]
    fn every_arch_round_trips_through_its_elf_signature() {
        for arch in Arch::ALL {
            let (machine, is_64, little) = arch.elf_signature();
            assert_eq!(Arch::from_elf(machine, is_64, little), Some(arch));
        }
    }
}
