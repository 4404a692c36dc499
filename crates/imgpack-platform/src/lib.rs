//! Where a binary can run: target platforms, and the ELF check that proves a
//! binary is static and built for the platform it is packed for.

mod binary;
mod elf;
mod platform;
#[cfg(any(test, feature = "test-elf"))]
pub mod test_elf;

pub use binary::Binary;
pub use elf::{check_binary, inspect_elf, BinaryError, ElfInfo};
pub use platform::{Arch, Platform, PlatformError};
