//! Checks for the values of image settings, shared by the flags
//! (build/plan.rs) and imgpack.toml (config.rs), so both refuse the same
//! values with the same message.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// `KEY=VALUE` for `--env`: a non-empty key without whitespace.
pub fn check_env(entry: &str) -> Result<String> {
    match entry.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok(entry.to_owned())
        }
        _ => bail!("bad --env '{entry}': write it as KEY=VALUE"),
    }
}

/// A key of imgpack.toml's `env` table: usable as a variable name.
pub fn check_env_name(key: &str) -> Result<()> {
    if key.is_empty() || key.contains(['=', ' ']) {
        bail!("'{key}' is not an environment variable name");
    }
    Ok(())
}

/// `KEY=VALUE` entries (`--label`, `--annotation`) as a map; `flag` names them in errors.
pub fn key_values(flag: &str, entries: &[String]) -> Result<BTreeMap<String, String>> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, _)) if key.chars().any(|c| c.is_control() || c.is_whitespace()) => bail!(
                "bad {flag} key '{}': keys hold no spaces, newlines or other control characters",
                key.escape_debug()
            ),
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!(
                "bad {flag} '{}': write it as KEY=VALUE",
                entry.escape_debug()
            ),
        })
        .collect()
}

/// `UID[:GID]` or `NAME[:GROUP]`.
pub fn check_user(user: &str) -> Result<String> {
    let parts: Vec<&str> = user.split(':').collect();
    let valid = matches!(parts.len(), 1 | 2)
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
    if !valid {
        bail!("bad --user '{user}': use UID[:GID] or NAME[:GROUP], e.g. 65532:65532");
    }
    Ok(user.to_owned())
}

pub fn check_workdir(dir: &str) -> Result<String> {
    if !dir.starts_with('/') {
        bail!("bad --workdir '{dir}': it must be an absolute path such as /app");
    }
    Ok(dir.to_owned())
}

/// `8080` → `8080/tcp`, as `docker run --expose` does.
pub fn check_port(spec: &str) -> Result<String> {
    let (port, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok || !matches!(protocol, "tcp" | "udp" | "sctp") {
        bail!("bad --expose '{spec}': use PORT[/tcp|udp|sctp] with a port from 1 to 65535");
    }
    Ok(format!("{port}/{protocol}"))
}

/// A file mode written in octal (`"0644"`, `"0o644"`); `key` names it in errors.
pub fn octal_mode(text: &str, key: &str) -> Result<u32> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .with_context(|| format!("{key} '{text}' is not an octal mode such as \"0644\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_knobs_are_validated() {
        assert_eq!(check_port("8080").unwrap(), "8080/tcp");
        assert_eq!(check_port("53/udp").unwrap(), "53/udp");
        assert!(check_port("0").is_err());
        assert!(check_port("80/http").is_err());
        assert!(check_env("=x").is_err());
        assert_eq!(check_env("A=").unwrap(), "A=");
        assert!(check_env_name("A B").is_err());
        assert!(check_user("a:b:c").is_err());
        assert!(check_workdir("app").is_err());
        assert!(key_values("--label", &["novalue".to_owned()]).is_err());
        assert_eq!(octal_mode("0o755", "mode").unwrap(), 0o755);
        assert!(octal_mode("644x", "mode").is_err());
    }
}
