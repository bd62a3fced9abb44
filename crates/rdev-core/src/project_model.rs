//! Projects: a named repository rdev builds into. [`ProjectName`] is the validated slug used
//! in URLs, paths and secret scopes, [`RepoUrl`] where the repository lives and
//! [`BranchName`] the branch builds push to; each is parsed once at the edge and trusted
//! inside. This module holds rules only: it must not touch files, git or the network.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    ci_repo::{CiRepo, WoodpeckerRepo},
    credentials::InjectionPlan,
    push_protection::{AllowPattern, PushProtection},
    AgentProvider, ValidationError,
};

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

/// Where a project's repository lives: a git URL or a local path to a bare repository.
/// Parsed: surrounding blanks trimmed, then non-empty, at most [`RepoUrl::MAX_LEN`] bytes,
/// no whitespace, not starting with `-` (git must never read it as an option), and no
/// credential in it (a token belongs in a project secret). Serialised as the plain string;
/// deserialising does not check it (see [`Project`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoUrl(String);

impl RepoUrl {
    /// The longest URL accepted, in bytes.
    pub const MAX_LEN: usize = 2048;

    /// Parses and validates a repository URL or path.
    pub fn parse(url: &str) -> Result<Self, ValidationError> {
        let url = url.trim();
        if url.is_empty()
            || url.len() > Self::MAX_LEN
            || url.starts_with('-')
            || url.contains(char::is_whitespace)
        {
            return Err(repo_url_error(
                "must be a git URL or path, without spaces, not starting with '-'",
            ));
        }
        if has_credentials(url) {
            return Err(repo_url_error(
                "must not contain credentials; store the token as a project secret",
            ));
        }
        Ok(Self(url.to_owned()))
    }

    /// A value read back from storage, which was parsed when it was written. Not checked
    /// again, so that a row written under older rules stays readable (and deletable).
    pub fn from_stored(url: String) -> Self {
        Self(url)
    }

    /// The URL as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn repo_url_error(reason: &str) -> ValidationError {
    ValidationError::InvalidField {
        field: "repo_url",
        reason: reason.to_owned(),
    }
}

/// Whether a repository URL carries a credential: any user info on http(s) (a token
/// alone, `https://TOKEN@host/...`, is the common form), a password on other schemes
/// (`ssh://git@host/...` names a user, not a secret). scp-like `user@host:path` and local
/// paths have no password field.
fn has_credentials(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            !u.username().is_empty() || u.password().is_some()
        }
        Ok(u) => u.password().is_some(),
        Err(_) => false,
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RepoUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoUrl {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The branch builds push to: 1..=200 characters of `[A-Za-z0-9._/-]`, not starting with
/// `-` or `/`, not ending with `/` or `.lock`, without `..` or `//`. Safe as a git
/// argument and a ref name. Serialised as the plain string; deserialising does not check
/// it (see [`Project`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BranchName(String);

impl BranchName {
    /// The longest branch name accepted, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Parses and validates a branch name.
    pub fn parse(branch: &str) -> Result<Self, ValidationError> {
        let b = branch;
        let ok = !b.is_empty()
            && b.len() <= Self::MAX_LEN
            && !b.starts_with('-')
            && !b.starts_with('/')
            && !b.ends_with('/')
            && !b.ends_with(".lock")
            && !b.contains("..")
            && !b.contains("//")
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
        if !ok {
            return Err(ValidationError::InvalidField {
                field: "default_branch",
                reason: format!("{b:?} is not a valid branch name"),
            });
        }
        Ok(Self(b.to_owned()))
    }

    /// A value read back from storage, which was parsed when it was written. Not checked
    /// again, so that a row written under older rules stays readable (and deletable).
    pub fn from_stored(branch: String) -> Self {
        Self(branch)
    }

    /// The branch name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `main`, the branch a project builds into unless it names another.
impl Default for BranchName {
    fn default() -> Self {
        Self("main".to_owned())
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BranchName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for BranchName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A repository rdev builds into.
///
/// Deserialising a project checks its name but not `repo_url` nor `default_branch`: the
/// API checks a whole project (those two among its other fields, in a fixed order) after
/// merging a change into it, and rows are read back without being judged again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    pub name: ProjectName,
    /// Where the repository lives (a URL or a local path to a bare repository).
    pub repo_url: RepoUrl,
    /// The branch builds push to.
    #[serde(default)]
    pub default_branch: BranchName,
    /// The template a new repository is created from.
    #[serde(default)]
    pub template: Option<String>,
    /// The repository's id in Woodpecker, when CI is followed.
    #[serde(default, deserialize_with = "crate::json_int::opt")]
    #[schema(minimum = 1)]
    pub woodpecker_repo_id: Option<i64>,
    /// The repository's full name in Woodpecker (`owner/name`), looked up when a build
    /// follows CI: the other way to name it, never together with `woodpecker_repo_id`.
    #[serde(default)]
    pub woodpecker_repo: Option<WoodpeckerRepo>,
    /// How to derive the deploy URL, e.g. `https://{project}.example.com`.
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::deploy_url_pattern_field)]
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
    #[schema(read_only)]
    pub created_repo: Option<String>,
    /// What a secret found in the commits a build is about to push does: `block` (the
    /// default: nothing is pushed, the task fails with `secret_in_commit`) or `warn`.
    #[serde(default)]
    pub push_protection: PushProtection,
    /// Paths of known test fixtures ([`AllowPattern`]s) where credential-shaped strings
    /// are not findings. A value rdev handed to the build is a finding everywhere.
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::push_protection_allow)]
    pub push_protection_allow: Vec<String>,
    /// Hosts the project's agents may reach through the gateway's egress proxy, as
    /// `host:port` ([`parse_network_allow`]); empty: nothing but the model.
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::network_allow)]
    pub network_allow: Vec<String>,
    /// The default cost limit of the project's builds (a build may ask for less).
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::max_cost_usd_field)]
    pub max_cost_usd: Option<f64>,
    /// The default token limit of the project's builds (a build may ask for less).
    #[serde(default, deserialize_with = "crate::json_int::opt")]
    #[schema(schema_with = crate::api_schema::max_tokens_field)]
    pub max_tokens: Option<u64>,
    /// How many builds of the project run at once, across all nodes; the others wait
    /// their turn in submission order. Above 1, a build whose push is refused as not fast
    /// forward rebases its commit onto the new head (`push_conflict` if it cannot).
    #[serde(
        default = "Project::default_max_parallel_builds",
        deserialize_with = "crate::json_int::int"
    )]
    #[schema(minimum = 1, maximum = 64, default = 1)]
    pub max_parallel_builds: u32,
}

impl Project {
    /// `max_parallel_builds` unless a project says otherwise: one build at a time.
    pub const DEFAULT_MAX_PARALLEL_BUILDS: u32 = 1;
    /// The largest `max_parallel_builds` accepted (the migration checks it too).
    pub const MAX_PARALLEL_BUILDS: u32 = 64;

    fn default_max_parallel_builds() -> u32 {
        Self::DEFAULT_MAX_PARALLEL_BUILDS
    }

    /// Checks `max_parallel_builds` (1 to [`Self::MAX_PARALLEL_BUILDS`]).
    pub fn validate_max_parallel_builds(n: u32) -> Result<(), ValidationError> {
        if (1..=Self::MAX_PARALLEL_BUILDS).contains(&n) {
            return Ok(());
        }
        Err(ValidationError::InvalidField {
            field: "max_parallel_builds",
            reason: format!("must be from 1 to {}, not {n}", Self::MAX_PARALLEL_BUILDS),
        })
    }

    /// The project's default budget.
    pub fn budget(&self) -> crate::Budget {
        crate::Budget {
            max_cost_usd: self.max_cost_usd,
            max_tokens: self.max_tokens,
        }
    }

    /// Checks the gateway settings: a valid budget and `host:port` allow-list entries.
    pub fn validate_gateway(&self) -> Result<(), ValidationError> {
        self.budget().validate()?;
        validate_network_allow(&self.network_allow)
    }
}

/// Checks a whole `network_allow` list: at most 100 entries, each [`parse_network_allow`].
pub fn validate_network_allow(entries: &[String]) -> Result<(), ValidationError> {
    if entries.len() > 100 {
        return Err(ValidationError::InvalidField {
            field: "network_allow",
            reason: "at most 100 entries".to_owned(),
        });
    }
    entries
        .iter()
        .try_for_each(|e| parse_network_allow(e).map(|_| ()))
}

/// One `network_allow` entry, `host:port`: a DNS name (letters, digits, `-` and `.`, never
/// an IP address, so what it reaches is decided by resolving it outside the sandbox) and a
/// port. Returns the lower-cased host and the port.
pub fn parse_network_allow(entry: &str) -> Result<(String, u16), ValidationError> {
    let bad = |reason: &str| ValidationError::InvalidField {
        field: "network_allow",
        reason: format!(
            "{:?}: {reason}",
            entry.chars().take(300).collect::<String>()
        ),
    };
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| bad("must be host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !labels.iter().all(label_ok) {
        return Err(bad(
            "the host must be a DNS name (letters, digits, '-', '.')",
        ));
    }
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("the host must be a name, not an IP address"));
    }
    Ok((host, port))
}

impl Project {
    /// The Woodpecker repository the project's builds follow; `None`: CI is not followed.
    /// The API never stores both fields; were both set, the id would win.
    pub fn ci_repo(&self) -> Option<CiRepo<'_>> {
        match (self.woodpecker_repo_id, &self.woodpecker_repo) {
            (Some(id), _) => Some(CiRepo::Id(id)),
            (None, Some(name)) => Some(CiRepo::Name(name)),
            (None, None) => None,
        }
    }

    /// The parsed push protection allow-list; an error names the first bad pattern.
    pub fn push_protection_allow(&self) -> Result<Vec<AllowPattern>, ValidationError> {
        AllowPattern::parse_all(&self.push_protection_allow)
    }
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
    fn network_allow_takes_host_names_with_ports_only() {
        assert_eq!(
            parse_network_allow("Packages.Example.com:443").unwrap(),
            ("packages.example.com".to_owned(), 443)
        );
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:70000",
            "example.com:+443",
            "10.0.0.1:80",
            "[::1]:443",
            "::1:443",
            "-x.example.com:443",
            "a..b:443",
            "exa mple.com:443",
            "*.example.com:443",
            ":443",
        ] {
            assert!(parse_network_allow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_json_defaults_branch_to_main() {
        let p: Project =
            serde_json::from_str(r#"{"name":"site","repo_url":"/srv/git/site.git"}"#).unwrap();
        assert_eq!(p.default_branch.as_str(), "main");
        assert_eq!(p.max_parallel_builds, 1, "one build at a time by default");
        for (n, ok) in [(0, false), (1, true), (64, true), (65, false)] {
            assert_eq!(Project::validate_max_parallel_builds(n).is_ok(), ok, "{n}");
        }
        assert_eq!(
            p.push_protection,
            PushProtection::Block,
            "blocks by default"
        );
        assert!(p.push_protection_allow.is_empty());
        assert!(serde_json::from_str::<Project>(r#"{"name":"Bad","repo_url":"x"}"#).is_err());
    }

    #[test]
    fn repo_urls_without_credentials_parse() {
        for url in [
            "ssh://git@git.example/p.git",
            "git@git.example:org/p.git",
            "https://git.example/p.git",
            "/srv/git/p.git",
            "file:///srv/git/p.git",
        ] {
            assert_eq!(RepoUrl::parse(url).unwrap().as_str(), url);
        }
        assert_eq!(RepoUrl::parse("  /x.git ").unwrap().as_str(), "/x.git");
    }

    #[test]
    fn bad_repo_urls_name_the_field_and_never_echo_a_token() {
        for url in [
            "",
            "   ",
            "--upload-pack=evil",
            "/a b.git",
            &format!("/{}", "a".repeat(RepoUrl::MAX_LEN)),
            "https://tok@git.example/p.git",
            "http://u:tok@git.example/p.git",
            "ssh://git:tok@git.example/p.git",
        ] {
            let err = RepoUrl::parse(url).unwrap_err();
            assert!(
                matches!(
                    err,
                    ValidationError::InvalidField {
                        field: "repo_url",
                        ..
                    }
                ),
                "{url}"
            );
            assert!(!err.to_string().contains("tok@"), "{err}");
        }
    }

    #[test]
    fn branch_names_are_safe_ref_names() {
        for b in ["main", "release/1.2", "feature_x-y", &"b".repeat(200)] {
            assert_eq!(BranchName::parse(b).unwrap().as_str(), b);
        }
        for b in [
            "",
            "-x",
            "/x",
            "x/",
            "x.lock",
            "../x",
            "a//b",
            "a b",
            "a~1",
            &"b".repeat(201),
        ] {
            let err = BranchName::parse(b).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid default_branch: {b:?} is not a valid branch name")
            );
        }
        assert_eq!(BranchName::default().as_str(), "main");
    }

    #[test]
    fn repo_url_and_branch_are_plain_strings_in_json() {
        let p: Project = serde_json::from_str(
            r#"{"name":"site","repo_url":"/srv/git/site.git","default_branch":"trunk"}"#,
        )
        .unwrap();
        assert_eq!(p.repo_url.as_str(), "/srv/git/site.git");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["repo_url"], "/srv/git/site.git");
        assert_eq!(json["default_branch"], "trunk");
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
