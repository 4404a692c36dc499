//! Docker Hub's several names, in one place: which host serves its API and
//! under which keys docker, podman and credential helpers store its credentials.

/// Every name users and tools give Docker Hub.
const HUB_NAMES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
];

/// The key `docker login` stores Docker Hub's credentials under.
const HUB_LOGIN_KEY: &str = "https://index.docker.io/v1/";

/// Whether `registry` (as written, or normalised to `docker.io`) is Docker Hub.
pub fn is_docker_hub(registry: &str) -> bool {
    HUB_NAMES.contains(&registry)
}

/// The host serving the distribution API for `registry`.
pub fn api_host(registry: &str) -> &str {
    if is_docker_hub(registry) {
        "index.docker.io"
    } else {
        registry
    }
}

/// The keys under which docker and podman may have stored credentials for
/// `registry`, the most common first: docker's config.json uses
/// `https://index.docker.io/v1/` for Docker Hub, podman's auth.json `docker.io`.
pub fn credential_keys(registry: &str) -> Vec<String> {
    if is_docker_hub(registry) {
        let mut keys = vec![HUB_LOGIN_KEY.to_owned()];
        keys.extend(
            HUB_NAMES
                .iter()
                .filter(|name| **name != HUB_LOGIN_KEY)
                .map(|name| (*name).to_owned()),
        );
        keys
    } else {
        vec![registry.to_owned()]
    }
}

/// The key a login to `registry` is stored under, as `docker login` does.
pub fn login_key(registry: &str) -> &str {
    if is_docker_hub(registry) {
        HUB_LOGIN_KEY
    } else {
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_docker_hub_finds_the_same_credentials() {
        let keys = credential_keys("docker.io");
        for name in HUB_NAMES {
            assert_eq!(credential_keys(name), keys, "{name}");
            assert_eq!(api_host(name), "index.docker.io");
            assert_eq!(login_key(name), HUB_LOGIN_KEY);
            assert!(keys.contains(&name.to_owned()));
        }
        assert_eq!(keys[0], HUB_LOGIN_KEY);
        assert_eq!(credential_keys("ghcr.io"), ["ghcr.io"]);
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(login_key("ghcr.io"), "ghcr.io");
    }
}
