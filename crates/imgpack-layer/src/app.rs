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

/// Layer 4: the binaries at /app/<name>, mode 0755, owned by root.
pub fn app_layer(binaries: &[(&Path, &str)]) -> Result<DescribedContents> {
    let mut contents = LayerContents::new();
    contents.add_dir(APP_DIR, 0o755, 0, 0)?;
    let mut targets = Vec::new();
    for (binary, name) in binaries {
        validate_app_name(name)?;
        let target = format!("{APP_DIR}/{name}");
        contents.add_file(&target, Contents::File(binary.to_path_buf()), 0o755)?;
        targets.push(target);
    }
    Ok(DescribedContents {
        contents,
        description: format!("imgpack app: {}", targets.join(", ")),
    })
}
