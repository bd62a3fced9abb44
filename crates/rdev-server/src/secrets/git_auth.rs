//! Handing a git token to `git` without argv or `.git/config`: the token becomes an
//! `http.<origin>/.extraHeader` entry passed through `GIT_CONFIG_COUNT` /
//! `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n` (git >= 2.31), which git reads from its
//! environment for that one invocation and never writes anywhere. It must not run git.
//!
//! The header is `Authorization: Basic base64("x-access-token:" + token)`: GitHub, Gitea,
//! Forgejo and GitLab all accept a token as the password of HTTP basic auth, while bearer
//! tokens on git's smart-HTTP endpoints are not accepted everywhere. The header is scoped to
//! the remote's origin so a redirect to another host never receives it, and credential
//! helpers are switched off so none of them stores the token on disk.

use base64::{engine::general_purpose::STANDARD, Engine};
use rdev_core::SecretString;

/// The user name sent with the token (any non-empty name works on the forges above).
pub const GIT_TOKEN_USER: &str = "x-access-token";

/// The header value (`Basic ...`) for `token`.
pub fn git_auth_header_value(token: &SecretString) -> SecretString {
    let basic = STANDARD.encode(format!("{GIT_TOKEN_USER}:{}", token.expose()));
    SecretString::new(format!("Basic {basic}"))
}

/// The `scheme://host[:port]/` prefix git matches `http.<url>.*` settings against, or
/// `None` when the remote is not HTTP(S) (SSH and local remotes need no header).
pub fn http_origin(remote_url: &str) -> Option<String> {
    let url = url::Url::parse(remote_url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}/", url.scheme()),
        None => format!("{}://{host}/", url.scheme()),
    })
}

/// Environment variables that make every git invocation authenticate to `remote_url`'s
/// origin with `token`. Empty when the remote is not HTTP(S).
pub fn git_env(token: &SecretString, remote_url: &str) -> Vec<(String, String)> {
    let Some(origin) = http_origin(remote_url) else {
        return Vec::new();
    };
    let header = git_auth_header_value(token);
    let entries = [
        (
            format!("http.{origin}.extraHeader"),
            format!("Authorization: {}", header.expose()),
        ),
        // An empty value resets the helper list: nothing may cache the token.
        ("credential.helper".to_owned(), String::new()),
    ];
    let mut env = vec![("GIT_CONFIG_COUNT".to_owned(), entries.len().to_string())];
    for (i, (key, value)) in entries.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_scoped_to_the_origin_and_only_in_env_values() {
        let token = SecretString::new("tok-123");
        let env = git_env(&token, "https://user@git.example.com:8443/org/repo.git");
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("GIT_CONFIG_COUNT"), Some("2"));
        assert_eq!(
            get("GIT_CONFIG_KEY_0"),
            Some("http.https://git.example.com:8443/.extraHeader")
        );
        let expected = STANDARD.encode("x-access-token:tok-123");
        assert_eq!(
            get("GIT_CONFIG_VALUE_0"),
            Some(format!("Authorization: Basic {expected}").as_str())
        );
        assert_eq!(get("GIT_CONFIG_KEY_1"), Some("credential.helper"));
        assert_eq!(get("GIT_CONFIG_VALUE_1"), Some(""));
        // No key carries the token; nothing shaped like a `git -c` argument exists.
        assert!(env.iter().all(|(k, _)| !k.contains("tok-123")));
        assert!(env
            .iter()
            .all(|(k, v)| !k.starts_with('-') && !v.starts_with("-c")));
    }

    #[test]
    fn non_http_remotes_get_no_header() {
        let token = SecretString::new("tok");
        assert!(git_env(&token, "/srv/git/repo.git").is_empty());
        assert!(git_env(&token, "git@github.com:org/repo.git").is_empty());
        assert!(git_env(&token, "ssh://git@host/repo.git").is_empty());
        assert_eq!(
            http_origin("http://127.0.0.1/repo.git").as_deref(),
            Some("http://127.0.0.1/")
        );
    }
}
