//! The deploy URL reported with a build: from the project's `deploy_url_pattern`
//! (`https://{project}.example.com`) or else from the pipeline's `deploy_to` when that is a
//! URL. Must not contact anything: it only formats and checks.

use std::sync::LazyLock;

use rdev_core::{api_schema, ErrorCode, ProjectName};
use reqwest::Url;

use super::Pipeline;

/// A pattern that cannot produce a deploy URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployUrlError {
    /// The pattern names a placeholder that does not exist, or has an unclosed brace.
    #[error("deploy URL pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// The pattern needs a pipeline field but no pipeline is known.
    #[error("deploy URL pattern {pattern:?} uses {{{placeholder}}} but there is no pipeline")]
    NeedsPipeline {
        pattern: String,
        placeholder: &'static str,
    },
}

impl ErrorCode for DeployUrlError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidPattern { .. } => "invalid_deploy_url_pattern",
            Self::NeedsPipeline { .. } => "deploy_url_needs_pipeline",
        }
    }
}

/// The placeholders a pattern may use.
pub const DEPLOY_URL_PLACEHOLDERS: [&str; 4] = ["project", "number", "commit", "short_commit"];

/// The pattern's grammar, as the OpenAPI document states it.
static GRAMMAR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(api_schema::DEPLOY_URL_PATTERN_PATTERN).expect("the pattern compiles")
});

/// Checks a pattern when a project is created or changed: at most
/// [`api_schema::MAX_DEPLOY_URL_PATTERN`] characters of the grammar the OpenAPI document
/// states ([`api_schema::DEPLOY_URL_PATTERN_PATTERN`]: known placeholders only, a host that
/// is a name), and the result with sample values is an absolute http(s) URL.
pub fn validate_deploy_url_pattern(pattern: &str) -> Result<(), DeployUrlError> {
    if pattern.chars().count() > api_schema::MAX_DEPLOY_URL_PATTERN {
        return Err(DeployUrlError::InvalidPattern {
            pattern: pattern.chars().take(200).collect(),
            reason: format!(
                "longer than {} characters",
                api_schema::MAX_DEPLOY_URL_PATTERN
            ),
        });
    }
    if !GRAMMAR.is_match(pattern) {
        // Say what is wrong where the expansion can tell (a placeholder, a brace, not a
        // URL); otherwise the grammar's summary.
        expand(pattern, |_| Some("x".to_owned()))?;
        return Err(DeployUrlError::InvalidPattern {
            pattern: pattern.chars().take(200).collect(),
            reason: "not `http(s)://` and a host name (letters, digits, `-` and \
                     placeholders; the last label led by a letter or `{project}`), an \
                     optional port, then a path without spaces or other braces"
                .to_owned(),
        });
    }
    expand(pattern, |name| {
        Some(match name {
            "project" => "sample-project".to_owned(),
            "number" => "1".to_owned(),
            "commit" => "0123456789abcdef0123456789abcdef01234567".to_owned(),
            _ => "0123456".to_owned(),
        })
    })
    .map(|_| ())
}

/// The deploy URL for `project`: the pattern expanded when there is one, else the
/// pipeline's `deploy_to` if it is an http(s) URL, else `None`.
pub fn deploy_url(
    project: &ProjectName,
    pattern: Option<&str>,
    pipeline: Option<&Pipeline>,
) -> Result<Option<String>, DeployUrlError> {
    match pattern {
        Some(p) => {
            let mut missing = None;
            let out = expand(p, |name| match (name, pipeline) {
                ("project", _) => Some(project.as_str().to_owned()),
                ("number", Some(pl)) => Some(pl.number.to_string()),
                ("commit", Some(pl)) => Some(pl.commit.clone()),
                ("short_commit", Some(pl)) => Some(pl.commit.chars().take(7).collect()),
                (other, None) => {
                    missing = DEPLOY_URL_PLACEHOLDERS
                        .iter()
                        .find(|k| **k == other)
                        .copied();
                    None
                }
                _ => None,
            });
            match (out, missing) {
                (_, Some(placeholder)) => Err(DeployUrlError::NeedsPipeline {
                    pattern: p.to_owned(),
                    placeholder,
                }),
                (r, None) => r.map(Some),
            }
        }
        None => Ok(pipeline
            .map(|pl| pl.deploy_to.trim())
            .filter(|d| is_http_url(d))
            .map(str::to_owned)),
    }
}

fn is_http_url(s: &str) -> bool {
    Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Replaces `{name}` placeholders; `value` returns `None` for one it cannot fill.
fn expand(
    pattern: &str,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, DeployUrlError> {
    let bad = |reason: String| DeployUrlError::InvalidPattern {
        pattern: pattern.chars().take(200).collect(),
        reason,
    };
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return Err(bad("unmatched '}'".into()));
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| bad("unclosed '{'".into()))?;
        let name = &after[..close];
        if !DEPLOY_URL_PLACEHOLDERS.contains(&name) {
            return Err(bad(format!(
                "unknown placeholder {{{name}}}; known: {}",
                DEPLOY_URL_PLACEHOLDERS.join(", ")
            )));
        }
        match value(name) {
            Some(v) => out.push_str(&v),
            None => return Err(bad(format!("no value for {{{name}}}"))),
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(bad("unmatched '}'".into()));
    }
    out.push_str(rest);
    if !is_http_url(&out) {
        return Err(bad(format!("{out:?} is not an absolute http(s) URL")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_close_brace_before_placeholder_is_rejected() {
        assert!(validate_deploy_url_pattern("https://}{project}.example.com").is_err());
    }

    #[test]
    fn the_grammar_admits_usual_patterns_and_refuses_what_is_no_host_name() {
        for ok in [
            "https://{project}.example.com",
            "http://preview-{short_commit}.{project}.apps.example.com:8443/p/{number}?c={commit}#x",
            "https://example.com",
            "https://Example.COM/",
            "https://{project}",
        ] {
            assert_eq!(validate_deploy_url_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ftp://example.com",
            "https://",
            "https://10.0.0.1/",
            "https://example.{number}",
            "https://exa mple.com",
            "https://user@example.com",
            "https://example.com:65536",
            "https://example.com/{nope}",
            "https://example.com/}",
            "http:example.com",
            " https://example.com",
        ] {
            assert!(validate_deploy_url_pattern(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the document's pattern admits, the server accepts: the pattern states
        /// the whole check, but for punycode (an `xn--` label), which only the URL parser
        /// knows.
        #[test]
        fn whatever_the_pattern_admits_is_accepted(
            pattern in proptest::string::string_regex(
                // The generator takes no anchors; it makes whole strings anyway.
                api_schema::DEPLOY_URL_PATTERN_PATTERN
                    .trim_start_matches('^')
                    .trim_end_matches('$'),
            )
            .unwrap()
        ) {
            proptest::prop_assume!(pattern.chars().count() <= api_schema::MAX_DEPLOY_URL_PATTERN);
            proptest::prop_assume!(!pattern.to_ascii_lowercase().contains("xn--"));
            proptest::prop_assert_eq!(validate_deploy_url_pattern(&pattern), Ok(()));
        }
    }
}
