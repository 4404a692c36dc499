//! Layer 1, the minimal root file system: passwd and group with `nonroot`
//! (65532), nsswitch.conf, /tmp and the home directories.

use anyhow::Result;

use crate::{Contents, DescribedContents, LayerContents};

pub const NONROOT_UID: u64 = 65532;
pub const NONROOT_GID: u64 = 65532;

// The same users distroless images have: code runs as nonroot (65532) by default.
const PASSWD: &str = "\
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
";
const GROUP: &str = "\
root:x:0:
nonroot:x:65532:
nobody:x:65534:
";
/// Whether imgpack's own /etc/passwd (or, for `group`, /etc/group) has `name`.
pub fn rootfs_has_name(name: &str, group: bool) -> bool {
    let file = if group { GROUP } else { PASSWD };
    file.lines()
        .any(|line| line.split(':').next() == Some(name))
}

// Go's and musl's resolvers read this to decide whether /etc/hosts is consulted.
const NSSWITCH: &str = "\
passwd: files
group: files
hosts: files dns
";

/// Layer 1: users, groups, name-service order, a world-writable /tmp and nonroot's home.
pub fn rootfs_layer() -> Result<DescribedContents> {
    let mut contents = LayerContents::new();
    contents.add_file(
        "etc/passwd",
        Contents::Bytes(PASSWD.as_bytes().into()),
        0o644,
    )?;
    contents.add_file("etc/group", Contents::Bytes(GROUP.as_bytes().into()), 0o644)?;
    contents.add_file(
        "etc/nsswitch.conf",
        Contents::Bytes(NSSWITCH.as_bytes().into()),
        0o644,
    )?;
    contents.add_dir("root", 0o700, 0, 0)?;
    contents.add_dir("home/nonroot", 0o700, NONROOT_UID, NONROOT_GID)?;
    contents.add_dir("tmp", 0o1777, 0, 0)?;
    Ok(DescribedContents {
        contents,
        description:
            "imgpack rootfs: /etc/passwd and /etc/group (root, nonroot 65532, nobody 65534), \
                      /etc/nsswitch.conf, /tmp, /home/nonroot"
                .to_owned(),
    })
}
