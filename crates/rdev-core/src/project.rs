//! Projects: a named repository rdev builds into. [`ProjectName`] is the validated slug used
//! in URLs, paths and secret scopes; it is parsed once at the edge and trusted inside.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{secrets::InjectionPlan, AgentProvider, ValidationError};

/// A project name: 1..=63 characters of `[a-z0-9-]`, not starting or ending with `-`.
/// Safe as a path segment, a DNS label and a secret scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

impl ProjectName {
    /// The longest name accepted (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// Parses and validates a name.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let bad = |reason| ValidationError::InvalidProjectName {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("must not be empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(bad("must be at most 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "only lowercase letters a-z, digits 0-9 and '-' are allowed",
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(bad("must not start or end with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProjectName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ProjectName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ProjectName> for String {
    fn from(p: ProjectName) -> Self {
        p.0
    }
}

/// A repository rdev builds into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: ProjectName,
    /// Where the repository lives (a URL or a local path to a bare repository).
    pub repo_url: String,
    /// The branch builds push to.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// The template a new repository is created from.
    #[serde(default)]
    pub template: Option<String>,
    /// The repository's id in Woodpecker, when CI is followed.
    #[serde(default)]
    pub woodpecker_repo_id: Option<i64>,
    /// How to derive the deploy URL, e.g. `https://{project}.example.com`.
    #[serde(default)]
    pub deploy_url_pattern: Option<String>,
    /// The agent provider builds use when the request names none.
    #[serde(default)]
    pub provider: Option<AgentProvider>,
    /// The secrets builds of this project receive (agent environment, git token).
    #[serde(default)]
    pub secrets: InjectionPlan,
    /// The bare repository rdev created for this project (an absolute path), which is
    /// removed with it; `None` when the repository was given as `repo_url`, which rdev
    /// never removes. Set at creation only: no change to the project can set it.
    #[serde(default)]
    pub created_repo: Option<String>,
}

fn default_branch() -> String {
    "main".to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn good_names_parse() {
        for n in ["a", "my-site", "x1", &"a".repeat(63)] {
            assert!(ProjectName::parse(n).is_ok(), "{n:?}");
        }
    }

    #[test]
    fn bad_names_say_why() {
        for n in [
            "",
            "My-Site",
            "../etc",
            "a/b",
            "a b",
            "-a",
            "a-",
            "a.b",
            &"a".repeat(64),
            "é",
        ] {
            let err = ProjectName::parse(n).unwrap_err();
            assert!(
                matches!(err, ValidationError::InvalidProjectName { .. }),
                "{n:?}"
            );
        }
    }

    #[test]
    fn project_json_defaults_branch_to_main() {
        let p: Project =
            serde_json::from_str(r#"{"name":"site","repo_url":"/srv/git/site.git"}"#).unwrap();
        assert_eq!(p.default_branch, "main");
        assert!(serde_json::from_str::<Project>(r#"{"name":"Bad","repo_url":"x"}"#).is_err());
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_slugs(name in "[a-zA-Z0-9./ _-]{0,70}") {
            let ok = !name.is_empty() && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-') && !name.ends_with('-');
            prop_assert_eq!(ProjectName::parse(&name).is_ok(), ok);
        }
    }
}
