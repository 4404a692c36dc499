//! Reads a few named ELF sections of a binary on disk without reading the
//! whole file: the header, the section table, the section names, then only
//! the sections asked for. A binary of hundreds of MiB costs a few KiB.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use goblin::container::Ctx;
use goblin::elf::{Elf, SectionHeader};
use goblin::strtab::Strtab;

/// The most read of any one part (a section table, the names, a section).
const MAX_PART: u64 = 16 << 20;
/// Enough for an ELF64 header.
const HEADER_LEN: usize = 64;

/// The contents of the sections named `wanted` that the ELF file at `path`
/// has; `Ok(None)` when it is not an ELF file imgpack can read.
pub fn read_sections(
    path: &Path,
    wanted: &[&str],
) -> Result<Option<HashMap<String, Vec<u8>>>, String> {
    let cannot = |err: std::io::Error| format!("cannot read {}: {err}", path.display());
    let mut file = File::open(path).map_err(cannot)?;
    let mut head = vec![0u8; HEADER_LEN];
    let read = file.read(&mut head).map_err(cannot)?;
    head.truncate(read);
    let Ok(header) = Elf::parse_header(&head) else {
        return Ok(None);
    };
    let (Ok(container), Ok(endian)) = (header.container(), header.endianness()) else {
        return Ok(None);
    };
    let ctx = Ctx::new(container, endian);
    let count = usize::from(header.e_shnum);
    if header.e_shoff == 0 || count == 0 {
        return Ok(None);
    }
    let table_len = count as u64 * u64::from(header.e_shentsize);
    let table = read_part(&mut file, header.e_shoff, table_len).map_err(cannot)?;
    // parse_from: the table was read on its own, so it starts at offset 0.
    let Ok(sections) = SectionHeader::parse_from(&table, 0, count, ctx) else {
        return Ok(None);
    };
    let Some(names_section) = sections.get(usize::from(header.e_shstrndx)) else {
        return Ok(None);
    };
    let names =
        read_part(&mut file, names_section.sh_offset, names_section.sh_size).map_err(cannot)?;
    let Ok(names) = Strtab::parse(&names, 0, names.len(), 0) else {
        return Ok(None);
    };
    let mut found = HashMap::new();
    for section in &sections {
        let Some(name) = names.get_at(section.sh_name) else {
            continue;
        };
        if wanted.contains(&name) {
            let bytes = read_part(&mut file, section.sh_offset, section.sh_size).map_err(cannot)?;
            found.insert(name.to_owned(), bytes);
        }
    }
    Ok(Some(found))
}

fn read_part(file: &mut File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    if len > MAX_PART {
        return Err(std::io::Error::other(format!(
            "an ELF part of {len} bytes is larger than imgpack reads"
        )));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(std::io::Error::other("the file ends inside an ELF section"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_found_by_name_and_other_files_are_not_elf() {
        let dir = std::env::temp_dir().join(format!("imgpack-sections-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // This test's own executable is an ELF file with a .text section.
        let me = std::env::current_exe().unwrap();
        let found = read_sections(&me, &[".text", ".no-such"]).unwrap().unwrap();
        assert!(found.contains_key(".text"));
        assert!(!found.contains_key(".no-such"));
        let text = dir.join("not-elf");
        std::fs::write(&text, b"just text").unwrap();
        assert_eq!(read_sections(&text, &[".text"]).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
