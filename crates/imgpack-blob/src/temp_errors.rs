//! Errors of temporary files without their temporary names: tempfile adds
//! `at path "DIR/.imgpack-XXXX"` to its errors, a name the user never chose and
//! that is gone by the time they read it. The caller names the real path.

use std::io;

/// `err` with tempfile's ` at path "…"` suffix dropped; kind and text otherwise kept.
pub fn without_temp_path(err: io::Error) -> io::Error {
    if err.get_ref().is_none() {
        return err;
    }
    let text = err.to_string();
    match text.rfind(" at path ") {
        Some(at) => io::Error::new(err.kind(), text[..at].to_owned()),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_name_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let err = tempfile::Builder::new()
            .prefix(".imgpack-")
            .tempfile_in(dir.path().join("missing"))
            .unwrap_err();
        assert!(err.to_string().contains(".imgpack-"), "{err}");
        let plain = without_temp_path(err);
        assert_eq!(plain.kind(), io::ErrorKind::NotFound);
        assert!(!plain.to_string().contains(".imgpack-"), "{plain}");
        assert!(plain.to_string().contains("os error 2"), "{plain}");
        let os = without_temp_path(io::Error::from_raw_os_error(13));
        assert_eq!(os.raw_os_error(), Some(13));
    }
}
