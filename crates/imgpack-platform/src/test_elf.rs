//! Minimal ELF files for tests and benchmarks: real headers, program headers
//! and a dynamic section, enough for the check and for any ELF reader, but no
//! code. Built with the `test-elf` feature.

use crate::Arch;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;

/// Builds an ELF executable for `arch`, static unless told otherwise.
#[derive(Clone, Debug)]
pub struct ElfBuilder {
    arch: Arch,
    e_type: u16,
    interpreter: Option<String>,
    needed: Option<Vec<String>>,
    payload: Vec<u8>,
    /// Named sections after the payload, with a section header table.
    sections: Vec<(String, Vec<u8>)>,
}

impl ElfBuilder {
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            e_type: 2, // ET_EXEC
            interpreter: None,
            needed: None,
            payload: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// A position-independent executable (ET_DYN), like a static-pie musl binary.
    pub fn pie(mut self) -> Self {
        self.e_type = 3;
        self
    }

    /// A relocatable object (ET_REL), which is not a program.
    pub fn relocatable(mut self) -> Self {
        self.e_type = 1;
        self
    }

    pub fn interpreter(mut self, path: &str) -> Self {
        self.interpreter = Some(path.to_owned());
        self
    }

    /// Adds a dynamic section naming `libraries` as DT_NEEDED (none for a static-pie).
    pub fn dynamic(mut self, libraries: &[&str]) -> Self {
        self.needed = Some(libraries.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Bytes appended after the headers, standing in for code and data.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// A section named `name` holding `bytes` (`.go.buildinfo`, `.dep-v0`), listed in a
    /// section header table after the payload.
    pub fn section(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.sections.push((name.to_owned(), bytes.into()));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = self.headers(self.payload.len() as u64);
        out.extend_from_slice(&self.payload);
        if !self.sections.is_empty() {
            self.append_sections(&mut out);
        }
        out
    }

    /// Appends the sections, a `.shstrtab` naming them and the section header table
    /// (a null entry first, as ELF requires), and points the file header at the table.
    fn append_sections(&self, out: &mut Vec<u8>) {
        let (_, is_64, little) = self.arch.elf_signature();
        let w = Words { is_64, little };
        let mut names = vec![0u8];
        let mut placed = Vec::new();
        for (name, bytes) in &self.sections {
            placed.push((
                names.len() as u32,
                1u32,
                out.len() as u64,
                bytes.len() as u64,
            ));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            out.extend_from_slice(bytes);
        }
        let shstrtab_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        placed.push((shstrtab_name, 3, out.len() as u64, names.len() as u64));
        out.extend_from_slice(&names);
        out.resize(out.len().next_multiple_of(8), 0);
        let table_at = out.len() as u64;
        let entry_size = if is_64 { 64 } else { 40 };
        out.resize(out.len() + entry_size, 0); // SHN_UNDEF
        for (name, kind, offset, size) in &placed {
            w.u32(out, *name);
            w.u32(out, *kind);
            w.addr(out, 0); // flags: not loaded
            w.addr(out, 0); // address
            w.addr(out, *offset);
            w.addr(out, *size);
            w.u32(out, 0);
            w.u32(out, 0);
            w.addr(out, 1);
            w.addr(out, 0);
        }
        let (shoff_at, shentsize_at) = if is_64 { (0x28, 0x3a) } else { (0x20, 0x2e) };
        let mut field = Vec::new();
        w.addr(&mut field, table_at);
        out[shoff_at..shoff_at + field.len()].copy_from_slice(&field);
        let mut counts = Vec::new();
        w.u16(&mut counts, entry_size as u16);
        w.u16(&mut counts, placed.len() as u16 + 1);
        w.u16(&mut counts, placed.len() as u16); // .shstrtab is the last
        out[shentsize_at..shentsize_at + 6].copy_from_slice(&counts);
    }

    /// Everything before a payload of `payload_len` bytes (the builder's own payload is
    /// ignored), for writers that stream a payload too large to hold in memory.
    pub fn headers(&self, payload_len: u64) -> Vec<u8> {
        let (machine, is_64, little) = self.arch.elf_signature();
        let w = Words { is_64, little };
        let ehdr_size = if is_64 { 64 } else { 52 };
        let phdr_size = if is_64 { 56 } else { 32 };
        let dyn_size = if is_64 { 16 } else { 8 };
        let base: u64 = if self.e_type == 2 { 0x40_0000 } else { 0 };

        let phnum = 1 + self.interpreter.is_some() as usize + self.needed.is_some() as usize;
        let mut offset = ehdr_size + phnum * phdr_size;

        let interp = self.interpreter.as_ref().map(|path| {
            let mut bytes = path.clone().into_bytes();
            bytes.push(0);
            let at = offset;
            offset += bytes.len();
            (at, bytes)
        });

        let dynamic = self.needed.as_ref().map(|libraries| {
            let mut strtab = vec![0u8];
            let mut entries = Vec::new();
            for library in libraries {
                entries.push((DT_NEEDED, strtab.len() as u64));
                strtab.extend_from_slice(library.as_bytes());
                strtab.push(0);
            }
            let strtab_at = offset;
            offset += strtab.len();
            offset = offset.next_multiple_of(8);
            entries.push((DT_STRTAB, base + strtab_at as u64));
            entries.push((DT_STRSZ, strtab.len() as u64));
            entries.push((DT_NULL, 0));
            let mut table = Vec::new();
            for (tag, value) in entries {
                w.addr(&mut table, tag);
                w.addr(&mut table, value);
            }
            let table_at = offset;
            offset += table.len();
            (strtab_at, strtab, table_at, table)
        });
        debug_assert!(dynamic.as_ref().is_none_or(|d| d.3.len() % dyn_size == 0));

        let payload_at = offset;
        let total = payload_at as u64 + payload_len;

        let mut out = Vec::with_capacity(payload_at);
        // e_ident
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F']);
        out.push(if is_64 { 2 } else { 1 });
        out.push(if little { 1 } else { 2 });
        out.push(1);
        out.extend_from_slice(&[0; 9]);
        w.u16(&mut out, self.e_type);
        w.u16(&mut out, machine);
        w.u32(&mut out, 1);
        w.addr(&mut out, base + payload_at as u64); // e_entry
        w.addr(&mut out, ehdr_size as u64); // e_phoff
        w.addr(&mut out, 0); // e_shoff: no section headers
        w.u32(&mut out, 0);
        w.u16(&mut out, ehdr_size as u16);
        w.u16(&mut out, phdr_size as u16);
        w.u16(&mut out, phnum as u16);
        w.u16(&mut out, 0);
        w.u16(&mut out, 0);
        w.u16(&mut out, 0);

        w.phdr(&mut out, PT_LOAD, 5, 0, base, total);
        if let Some((at, bytes)) = &interp {
            w.phdr(
                &mut out,
                PT_INTERP,
                4,
                *at as u64,
                base + *at as u64,
                bytes.len() as u64,
            );
        }
        if let Some((_, _, table_at, table)) = &dynamic {
            w.phdr(
                &mut out,
                PT_DYNAMIC,
                6,
                *table_at as u64,
                base + *table_at as u64,
                table.len() as u64,
            );
        }
        if let Some((_, bytes)) = interp {
            out.extend_from_slice(&bytes);
        }
        if let Some((strtab_at, strtab, table_at, table)) = dynamic {
            debug_assert_eq!(out.len(), strtab_at);
            out.extend_from_slice(&strtab);
            out.resize(table_at, 0);
            out.extend_from_slice(&table);
        }
        debug_assert_eq!(out.len(), payload_at);
        out
    }
}

struct Words {
    is_64: bool,
    little: bool,
}

impl Words {
    fn u16(&self, out: &mut Vec<u8>, value: u16) {
        out.extend_from_slice(&if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        });
    }

    fn u32(&self, out: &mut Vec<u8>, value: u32) {
        out.extend_from_slice(&if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        });
    }

    fn u64(&self, out: &mut Vec<u8>, value: u64) {
        out.extend_from_slice(&if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        });
    }

    /// An address, offset or size: 8 bytes in ELF64, 4 in ELF32.
    fn addr(&self, out: &mut Vec<u8>, value: u64) {
        if self.is_64 {
            self.u64(out, value);
        } else {
            self.u32(out, value as u32);
        }
    }

    fn phdr(&self, out: &mut Vec<u8>, kind: u32, flags: u32, offset: u64, vaddr: u64, size: u64) {
        self.u32(out, kind);
        if self.is_64 {
            self.u32(out, flags);
        }
        self.addr(out, offset);
        self.addr(out, vaddr);
        self.addr(out, vaddr);
        self.addr(out, size);
        self.addr(out, size);
        if !self.is_64 {
            self.u32(out, flags);
        }
        self.addr(out, if kind == PT_LOAD { 0x1000 } else { 1 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_listed_for_elf_readers() {
        for arch in [Arch::Amd64, Arch::Arm, Arch::S390x] {
            let bytes = ElfBuilder::new(arch)
                .payload(b"code".to_vec())
                .section(".dep-v0", b"audit".to_vec())
                .section(".go.buildinfo", b"info".to_vec())
                .build();
            let elf = goblin::elf::Elf::parse(&bytes).unwrap();
            let found: Vec<(&str, &[u8])> = elf
                .section_headers
                .iter()
                .filter_map(|s| {
                    let name = elf.shdr_strtab.get_at(s.sh_name)?;
                    let at = s.sh_offset as usize;
                    Some((name, &bytes[at..at + s.sh_size as usize]))
                })
                .collect();
            assert!(found.contains(&(".dep-v0", &b"audit"[..])), "{found:?}");
            assert!(
                found.contains(&(".go.buildinfo", &b"info"[..])),
                "{found:?}"
            );
        }
    }
}
