use std::path::Path;

use anyhow::{bail, Result};

use crate::{Contents, DescribedContents, LayerContents};

/// Where the application binary lives in the image.
pub const APP_DIR: &str = "/app";

/// The binary's name becomes a file name under /app: one plain path component.
pub fn validate_app_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.chars().any(char::is_control);
    if !plain {
        bail!("bad binary name '{name}': use a plain file name such as 'api' (--name)");
    }
    Ok(())
}

/// Layer 4: the binary at /app/<name>, mode 0755, owned by root.
pub fn app_layer(binary: &Path, name: &str) -> Result<DescribedContents> {
    validate_app_name(name)?;
    let mut contents = LayerContents::new();
    contents.add_dir(APP_DIR, 0o755, 0, 0)?;
    let target = format!("{APP_DIR}/{name}");
    contents.add_file(&target, Contents::File(binary.to_owned()), 0o755)?;
    Ok(DescribedContents {
        contents,
        description: format!("imgpack app: {target}"),
    })
}
