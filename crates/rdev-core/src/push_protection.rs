//! A project's push protection settings: what a secret found in rdev's commits does
//! ([`PushProtection`]) and which files are known test fixtures whose credential-shaped
//! strings do not count ([`AllowPattern`]). Pure rules: the scan itself (git, rules,
//! matching) is `rdev-server`'s `scan` module.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What happens when push protection finds a secret in the commits rdev is about to push.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PushProtection {
    /// Nothing is pushed; the task fails with `secret_in_commit` (the default).
    #[default]
    Block,
    /// The push goes ahead; the findings are recorded on the task.
    Warn,
}

impl PushProtection {
    /// `block` or `warn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Warn => "warn",
        }
    }
}

impl std::str::FromStr for PushProtection {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(Self::Block),
            "warn" => Ok(Self::Warn),
            other => Err(ValidationError::InvalidField {
                field: "push_protection",
                reason: format!(
                    "{:?}: must be \"block\" or \"warn\"",
                    other.chars().take(40).collect::<String>()
                ),
            }),
        }
    }
}

impl fmt::Display for PushProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most allow-list patterns a project may have.
pub const MAX_ALLOW_PATTERNS: usize = 64;
/// The longest allow-list pattern.
pub const MAX_ALLOW_PATTERN_LEN: usize = 256;

/// A path pattern of the allow-list, matched against a file's path in the repository
/// (`/`-separated, no leading `/`):
///
/// - `*` matches any characters except `/`, `?` one character except `/`;
/// - `**` as a whole segment matches any number of segments (`fixtures/**`, `**/keys/*`);
/// - a pattern without `/` matches a file name in any directory (`*.pem`), as in
///   `.gitignore`; one with `/` is anchored at the repository's root, and a trailing `/`
///   means everything below that directory (`tests/fixtures/`).
///
/// Character classes and braces are refused rather than taken literally, so a pattern
/// never silently means something other than what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowPattern {
    segments: Vec<String>,
    anywhere: bool,
}

impl AllowPattern {
    /// Parses one pattern, saying what is wrong with a bad one.
    pub fn parse(pattern: &str) -> Result<Self, ValidationError> {
        let bad = |reason: &str| ValidationError::InvalidField {
            field: "push_protection_allow",
            reason: format!(
                "{:?}: {reason}",
                pattern.chars().take(80).collect::<String>()
            ),
        };
        if pattern.is_empty() {
            return Err(bad("a pattern must not be empty"));
        }
        // Characters, as the document's `maxLength` counts them.
        if pattern.chars().count() > MAX_ALLOW_PATTERN_LEN {
            return Err(bad("a pattern must be at most 256 characters"));
        }
        if pattern.starts_with('/') {
            return Err(bad(
                "patterns are relative to the repository's root; drop the leading '/'",
            ));
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_control() || "[]{}\\!".contains(*c))
        {
            return Err(bad(&format!(
                "{c:?} is not supported (only '*', '?' and '**' are wildcards)"
            )));
        }
        // A trailing `/` names a directory: everything below it.
        let (body, directory) = match pattern.strip_suffix('/') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        let mut segments: Vec<String> = body.split('/').map(str::to_owned).collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("empty, '.' and '..' path segments are not allowed"));
        }
        if directory {
            segments.push("**".to_owned());
        }
        Ok(Self {
            anywhere: segments.len() == 1 && segments[0] != "**",
            segments,
        })
    }

    /// Parses every pattern of an allow-list (at most [`MAX_ALLOW_PATTERNS`]).
    pub fn parse_all(patterns: &[String]) -> Result<Vec<Self>, ValidationError> {
        if patterns.len() > MAX_ALLOW_PATTERNS {
            return Err(ValidationError::InvalidField {
                field: "push_protection_allow",
                reason: format!("at most {MAX_ALLOW_PATTERNS} patterns"),
            });
        }
        patterns.iter().map(|p| Self::parse(p)).collect()
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        if self.anywhere {
            return parts
                .last()
                .is_some_and(|name| segment_matches(&self.segments[0], name));
        }
        let pattern: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        segments_match(&pattern, &parts)
    }
}

/// Whether `path` matches any pattern of `allow`.
pub fn is_allowed(allow: &[AllowPattern], path: &str) -> bool {
    allow.iter().any(|p| p.matches(path))
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments_match(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(p, tail)| segment_matches(first, p) && segments_match(rest, tail)),
    }
}

/// `*` and `?` within one segment (no `/` on either side), by the usual two-pointer walk
/// that backtracks to the last `*`.
fn segment_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(pattern: &str, path: &str) -> bool {
        AllowPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn patterns_match_like_gitignore_without_classes() {
        let yes = [
            ("*.pem", "key.pem"),
            ("*.pem", "tests/fixtures/key.pem"),
            ("tests/fixtures/**", "tests/fixtures/a/b/key.pem"),
            ("tests/fixtures/**", "tests/fixtures/key.pem"),
            ("tests/fixtures/", "tests/fixtures/a/key.pem"),
            ("fixtures/", "fixtures/key.pem"),
            ("**/fixtures/*.txt", "fixtures/a.txt"),
            ("**/fixtures/*.txt", "a/b/fixtures/a.txt"),
            ("src/*/test_?.rs", "src/x/test_1.rs"),
            ("**", "anything/at/all"),
            ("a*b*c", "abbbc"),
        ];
        for (p, path) in yes {
            assert!(allowed(p, path), "{p} should match {path}");
        }
        let no = [
            ("*.pem", "key.pem.txt"),
            ("tests/fixtures/*", "tests/fixtures/a/key.pem"),
            ("fixtures/*.txt", "a/fixtures/a.txt"),
            ("src/*/test_?.rs", "src/x/test_10.rs"),
            ("src/*.rs", "src/a/b.rs"),
            ("a*b*c", "abbbcd"),
        ];
        for (p, path) in no {
            assert!(!allowed(p, path), "{p} should not match {path}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for p in [
            "",
            "/abs/*.pem",
            "a/../b",
            "a//b",
            "./a",
            "[abc].pem",
            "{a,b}",
            "!negated",
            "back\\slash",
            "new\nline",
        ] {
            let err = AllowPattern::parse(p).unwrap_err();
            assert!(
                err.to_string().contains("push_protection_allow"),
                "{p:?}: {err}"
            );
        }
        assert!(AllowPattern::parse(&"a".repeat(257)).is_err());
        let many = vec!["*.pem".to_owned(); MAX_ALLOW_PATTERNS + 1];
        assert!(AllowPattern::parse_all(&many).is_err());
        assert_eq!(
            AllowPattern::parse_all(&many[..2]).unwrap().len(),
            2,
            "up to the limit is fine"
        );
    }

    #[test]
    fn mode_defaults_to_block_and_reads_lowercase() {
        assert_eq!(PushProtection::default(), PushProtection::Block);
        let warn: PushProtection = serde_json::from_str("\"warn\"").unwrap();
        assert_eq!(warn, PushProtection::Warn);
        assert!(serde_json::from_str::<PushProtection>("\"off\"").is_err());
        assert_eq!(
            serde_json::to_string(&PushProtection::Block).unwrap(),
            "\"block\""
        );
        for mode in [PushProtection::Block, PushProtection::Warn] {
            assert_eq!(mode.as_str().parse::<PushProtection>().unwrap(), mode);
        }
        assert!("Block".parse::<PushProtection>().is_err());
    }
}
