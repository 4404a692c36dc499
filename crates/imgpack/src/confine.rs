//! Paths that must stay inside a directory (a git source's checkout): each is
//! resolved with every symlink followed, and one that leads out is refused,
//! naming the link that took it there.

use std::path::{Component, Path, PathBuf};

/// How a path left its root: through a symlink (`link -> target`, the link
/// shown relative to the root), or by naming a place outside (`/etc`, `..`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Escape {
    Link { link: PathBuf, target: PathBuf },
    Named,
}

impl Escape {
    /// `through the symlink evil -> /etc`, or `it names a place outside`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Escape::Link { link, target } => format!(
                "through the symlink {} -> {}",
                link.display(),
                target.display()
            ),
            Escape::Named => "it names a place outside".to_owned(),
        }
    }
}

/// Checks that `path` (absolute, or relative to the current directory)
/// resolves inside `root` with every symlink followed. A path that does not
/// exist yet passes when no symlink on its way leads out; its users report
/// it missing in their own terms.
pub(crate) fn check_inside(root: &Path, path: &Path) -> Result<(), Escape> {
    let Ok(real_root) = root.canonicalize() else {
        return Ok(());
    };
    match path.canonicalize() {
        Ok(real) if real.starts_with(&real_root) => Ok(()),
        Ok(_) => Err(leading_link(root, &real_root, path).unwrap_or(Escape::Named)),
        Err(_) => match leading_link(root, &real_root, path) {
            Some(escape) => Err(escape),
            None if lexically_inside(root, path) => Ok(()),
            None => Err(Escape::Named),
        },
    }
}

/// The first symlink on the way from `root` to `path` whose target resolves
/// outside `real_root`.
fn leading_link(root: &Path, real_root: &Path, path: &Path) -> Option<Escape> {
    // The root's own links (a /tmp that is one) are the builder's, not the source's.
    let (mut prefix, rest) = match path.strip_prefix(root) {
        Ok(rest) => (root.to_path_buf(), rest),
        Err(_) => (PathBuf::new(), path),
    };
    for component in rest.components() {
        prefix.push(component);
        let is_link = std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.is_symlink());
        if !is_link {
            continue;
        }
        let leaves = match prefix.canonicalize() {
            Ok(real) => !real.starts_with(real_root),
            // A dangling link: judge its target by its words.
            Err(_) => std::fs::read_link(&prefix).is_ok_and(|target| {
                let parent = prefix.parent().unwrap_or(Path::new("."));
                !lexically_inside(root, &parent.join(target))
            }),
        };
        if leaves {
            let target = std::fs::read_link(&prefix).unwrap_or_default();
            let link = prefix
                .strip_prefix(root)
                .map(Path::to_path_buf)
                .unwrap_or(prefix);
            return Some(Escape::Link { link, target });
        }
    }
    None
}

/// Whether `path`, its `..` taken literally, stays under `root`.
fn lexically_inside(root: &Path, path: &Path) -> bool {
    let normal = |path: &Path| {
        let mut out = PathBuf::new();
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    normal(path).starts_with(normal(root))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn links_that_leave_the_root_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkout");
        std::fs::create_dir_all(root.join("cmd/api")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("/etc", root.join("evil")).unwrap();
        symlink("../outside", root.join("up")).unwrap();
        symlink("cmd", root.join("inner")).unwrap();
        symlink("/nonexistent/x", root.join("dangling")).unwrap();

        assert_eq!(check_inside(&root, &root.join("cmd/api")), Ok(()));
        assert_eq!(check_inside(&root, &root.join("inner/api")), Ok(()));
        assert_eq!(check_inside(&root, &root.join("cmd/new")), Ok(()));
        assert_eq!(
            check_inside(&root, &root.join("evil/hostname")),
            Err(Escape::Link {
                link: "evil".into(),
                target: "/etc".into()
            })
        );
        assert_eq!(
            check_inside(&root, &root.join("up")),
            Err(Escape::Link {
                link: "up".into(),
                target: "../outside".into()
            })
        );
        assert_eq!(
            check_inside(&root, &root.join("dangling")),
            Err(Escape::Link {
                link: "dangling".into(),
                target: "/nonexistent/x".into()
            })
        );
        assert_eq!(check_inside(&root, Path::new("/etc")), Err(Escape::Named));
        assert_eq!(
            check_inside(&root, &root.join("cmd/../../outside")),
            Err(Escape::Named)
        );
        assert_eq!(
            check_inside(&root, &root.join("cmd/../../missing")),
            Err(Escape::Named)
        );
    }
}
