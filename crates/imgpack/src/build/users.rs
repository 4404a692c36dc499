//! `--user NAME[:GROUP]` on a base image: the runtime looks the name up in the
//! base's own /etc/passwd (and the group in its /etc/group), so a name the base
//! lacks would give an image that cannot start. Numeric IDs need no lookup.

use anyhow::{bail, Context, Result};
use imgpack_blob::BlobStore;
use imgpack_image::BaseLayers;
use imgpack_layer::{LayerFile, LayerPaths};

/// Whether `[[files]]` write under /etc, where they may bring their own
/// passwd or group: then the image's users are theirs, and imgpack does not guess.
pub(super) fn files_write_etc(files: &[imgpack_layer::FileSpec]) -> bool {
    files.iter().any(|file| {
        let dst = file.dst.trim_end_matches('/');
        dst == "/etc" || dst.starts_with("/etc/")
    })
}

/// How many of the base's names an error lists.
const NAMES_LISTED: usize = 6;

/// Checks that the names in `user` are in the base's /etc/passwd and /etc/group.
pub(super) fn check_user_in_base(user: &str, base: &BaseLayers, store: &BlobStore) -> Result<()> {
    let (name, group) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let numeric = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    let mut lookups = Vec::new();
    if !numeric(name) {
        lookups.push(("etc/passwd", name, "user"));
    }
    if let Some(group) = group.filter(|g| !numeric(g)) {
        lookups.push(("etc/group", group, "group"));
    }
    if lookups.is_empty() {
        return Ok(());
    }
    let mut paths = LayerPaths::keeping(&["etc/passwd", "etc/group"]);
    for layer in &base.layers {
        paths
            .add_layer(store.open_blob(layer.digest())?, &layer.media_type)
            .with_context(|| format!("cannot read base layer {}", layer.digest()))?;
    }
    for (file, wanted, what) in lookups {
        let names = match paths.file(file) {
            LayerFile::Content(content) => names_in(content),
            LayerFile::Absent => bail!(
                "--user {user}: the base image {} has no /{file}, so the {what} '{wanted}' cannot \
                 be looked up: use a numeric ID (e.g. --user 65532:65532)",
                base.name
            ),
            // A link or an unusual file: the runtime resolves it, imgpack does not guess.
            LayerFile::Unreadable => continue,
        };
        if !names.iter().any(|n| n == wanted) {
            bail!(
                "--user {user}: the /{file} of the base image {} has no {what} '{wanted}' ({}): \
                 use one of its {what}s, a numeric ID, or a base that has the {what}",
                base.name,
                listing(&names)
            );
        }
    }
    Ok(())
}

/// The first field of each line of a passwd or group file.
fn names_in(content: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// "it has root, nonroot and nobody", at most [`NAMES_LISTED`] of them; names
/// with control characters (the base is untrusted) are not printed.
fn listing(names: &[String]) -> String {
    let printable: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.len() <= 32 && !n.chars().any(char::is_control))
        .collect();
    match printable.as_slice() {
        [] => "it lists none".to_owned(),
        [one] => format!("it has only {one}"),
        all if all.len() <= NAMES_LISTED => {
            let (last, rest) = all.split_last().expect("not empty");
            format!("it has {} and {last}", rest.join(", "))
        }
        all => format!(
            "it has {} and {} more",
            all[..NAMES_LISTED].join(", "),
            all.len() - NAMES_LISTED
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_briefly() {
        let names = names_in(b"root:x:0:0::/:\nnonroot:x:1:1::/:\n\n# comment\nnobody:x:2:2::/:\n");
        assert_eq!(names, ["root", "nonroot", "nobody"]);
        assert_eq!(listing(&names), "it has root, nonroot and nobody");
        let many: Vec<String> = (0..9).map(|i| format!("u{i}")).collect();
        assert_eq!(listing(&many), "it has u0, u1, u2, u3, u4, u5 and 3 more");
        assert_eq!(listing(&["a\u{1b}[2J".to_owned()]), "it lists none");
    }
}
