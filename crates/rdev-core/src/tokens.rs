//! API tokens: who may call the API and for what. A token has a [`TokenScope`] (`read`,
//! `build`, `admin`) and may be limited to some projects; a request presents it and gets a
//! [`Grant`]; the API names what each route does as an [`Action`] on a [`Resource`], and
//! [`Grant::permits`] is the one rule that decides. [`TokenStore`] is the port the stored
//! tokens live behind (only their hashes, see [`TokenHash`]).
//!
//! It must not generate, hash or compare tokens (that is `rdev-server`'s `tokens` module)
//! nor know about HTTP routes (`rdev-server`'s `api::auth` maps each route to an action).

use std::{fmt, str::FromStr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ProjectName, StoreError, ValidationError};

/// What a token may do. Scopes do not nest: `build` cannot read projects, `read` cannot
/// queue builds, `admin` can do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Every `GET` (projects, tasks and their events, secret metadata, metrics).
    Read,
    /// Queue builds, read and cancel tasks (of the token's projects).
    Build,
    /// Everything: projects, secrets, tokens.
    Admin,
}

impl TokenScope {
    /// Every scope, narrowest first.
    pub const ALL: [Self; 3] = [Self::Read, Self::Build, Self::Admin];

    /// `read`, `build` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Build => "build",
            Self::Admin => "admin",
        }
    }

    /// Whether this scope allows `action` (on any project; see [`Grant::permits`]).
    pub fn allows(self, action: Action) -> bool {
        use Action as A;
        match self {
            Self::Admin => true,
            Self::Read => matches!(action, A::Catalog | A::ReadTasks | A::Read),
            Self::Build => matches!(action, A::Catalog | A::ReadTasks | A::Build | A::Cancel),
        }
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenScope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ValidationError::InvalidField {
                field: "scope",
                reason: format!(
                    "{:?} is not a token scope; use read, build or admin",
                    s.chars().take(40).collect::<String>()
                ),
            })
    }
}

/// What a request does, as far as permissions go. Each API route is exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Describe the service: templates, agents, the OpenAPI document. No project data.
    Catalog,
    /// Read tasks, their attempts, callbacks and events.
    ReadTasks,
    /// Read everything else: projects, secret metadata (never values), metrics.
    Read,
    /// Queue a build.
    Build,
    /// Cancel a task.
    Cancel,
    /// Change projects or secrets, and anything not named above.
    Admin,
}

impl Action {
    /// What the action is, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Catalog => "reading templates and agents",
            Self::ReadTasks => "reading tasks",
            Self::Read => "reading projects, secret metadata and metrics",
            Self::Build => "queueing builds",
            Self::Cancel => "cancelling tasks",
            Self::Admin => "changing projects and secrets",
        }
    }
}

/// Which projects a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// No project's data (catalog routes), or a name the handler will reject anyway.
    NoProject,
    /// Data of every project at once (e.g. the project list, metrics, secrets).
    AllProjects,
    /// One project's data.
    Project(&'a ProjectName),
}

/// A token's name: 1..=64 characters of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses and validates a name.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let first_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if first_ok && rest_ok && name.len() <= Self::MAX_LEN {
            return Ok(Self(name.to_owned()));
        }
        Err(ValidationError::InvalidField {
            field: "token name",
            reason: format!(
                "{:?} must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting \
                 with a letter or digit",
                name.chars().take(80).collect::<String>()
            ),
        })
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TokenName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TokenName> for String {
    fn from(n: TokenName) -> Self {
        n.0
    }
}

/// A stored token's metadata: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub name: TokenName,
    pub scope: TokenScope,
    /// The projects it is limited to, sorted; empty means every project.
    pub projects: Vec<ProjectName>,
    pub created_at: DateTime<Utc>,
    /// When it was last presented (recorded at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// A new token's metadata. An `admin` token cannot be limited to projects (it could
    /// create tokens for any project); the project list is sorted and deduplicated.
    pub fn new(
        name: TokenName,
        scope: TokenScope,
        mut projects: Vec<ProjectName>,
        created_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if scope == TokenScope::Admin && !projects.is_empty() {
            return Err(ValidationError::InvalidField {
                field: "projects",
                reason: "an admin token cannot be limited to projects; use scope build or read"
                    .to_owned(),
            });
        }
        projects.sort();
        projects.dedup();
        Ok(Self {
            name,
            scope,
            projects,
            created_at,
            last_used_at: None,
        })
    }

    /// What presenting this token grants.
    pub fn grant(&self) -> Grant {
        Grant {
            token: self.name.to_string(),
            scope: self.scope,
            projects: self.projects.clone(),
        }
    }
}

/// The SHA-256 of a token: what the store keeps and looks tokens up by.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// What the caller of one request may do: the token's scope and project limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who: a token name, or a label for the configured admin token / an open API.
    pub token: String,
    pub scope: TokenScope,
    /// The projects it is limited to; empty means every project.
    pub projects: Vec<ProjectName>,
}

impl Grant {
    /// An unlimited admin grant labelled `token`.
    pub fn admin(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            scope: TokenScope::Admin,
            projects: Vec::new(),
        }
    }

    /// The projects this grant is limited to, or `None` when it reaches every project.
    pub fn project_limit(&self) -> Option<&[ProjectName]> {
        (!self.projects.is_empty()).then_some(self.projects.as_slice())
    }

    /// Whether this grant allows `action` on `resource`: the scope must allow the action,
    /// and a project-limited grant reaches only its own projects (never all at once).
    pub fn permits(&self, action: Action, resource: Resource<'_>) -> Result<(), Forbidden> {
        if !self.scope.allows(action) {
            return Err(Forbidden::Scope {
                token: self.token.clone(),
                scope: self.scope,
                action,
            });
        }
        let Some(allowed) = self.project_limit() else {
            return Ok(());
        };
        match resource {
            Resource::NoProject => Ok(()),
            Resource::Project(p) if allowed.contains(p) => Ok(()),
            Resource::Project(p) => Err(Forbidden::Project {
                token: self.token.clone(),
                allowed: self.allowed_list(),
                project: p.clone(),
            }),
            Resource::AllProjects => Err(Forbidden::AllProjects {
                token: self.token.clone(),
                allowed: self.allowed_list(),
            }),
        }
    }

    fn allowed_list(&self) -> String {
        self.projects
            .iter()
            .map(ProjectName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a grant does not allow a request. Code `forbidden` (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("token {token:?} has scope {scope}, which does not allow {}", action.describe())]
    Scope {
        token: String,
        scope: TokenScope,
        action: Action,
    },
    #[error("token {token:?} is limited to project(s) {allowed}, not {project}")]
    Project {
        token: String,
        allowed: String,
        project: ProjectName,
    },
    #[error(
        "token {token:?} is limited to project(s) {allowed} and cannot read every project's \
         data at once"
    )]
    AllProjects { token: String, allowed: String },
}

impl ErrorCode for Forbidden {
    fn code(&self) -> &'static str {
        "forbidden"
    }
}

/// Stored API tokens, by name and by hash. Revoking deletes the row.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Stores a new token; `Conflict` if the name is taken.
    async fn create_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), StoreError>;
    /// The token with this hash, if one exists.
    async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiToken>, StoreError>;
    /// Every token, by name.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Deletes a token; `NotFound` if there is none by that name.
    async fn revoke_token(&self, name: &TokenName) -> Result<(), StoreError>;
    /// Records a use at `at` (never moves `last_used_at` backwards).
    async fn mark_token_used(&self, name: &TokenName, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Whether any token exists.
    async fn has_tokens(&self) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> ProjectName {
        ProjectName::parse(name).unwrap()
    }

    fn grant(scope: TokenScope, projects: &[&str]) -> Grant {
        Grant {
            token: "bot".into(),
            scope,
            projects: projects.iter().map(|n| p(n)).collect(),
        }
    }

    #[test]
    fn scopes_allow_exactly_their_actions() {
        use Action as A;
        let all = [
            A::Catalog,
            A::ReadTasks,
            A::Read,
            A::Build,
            A::Cancel,
            A::Admin,
        ];
        let allowed = |scope: TokenScope| {
            all.into_iter()
                .filter(|a| scope.allows(*a))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            allowed(TokenScope::Read),
            [A::Catalog, A::ReadTasks, A::Read]
        );
        assert_eq!(
            allowed(TokenScope::Build),
            [A::Catalog, A::ReadTasks, A::Build, A::Cancel]
        );
        assert_eq!(allowed(TokenScope::Admin), all);
    }

    #[test]
    fn a_project_limited_grant_reaches_only_its_projects() {
        let g = grant(TokenScope::Build, &["acme", "blog"]);
        let (acme, other) = (p("acme"), p("other"));
        assert!(g.permits(Action::Build, Resource::Project(&acme)).is_ok());
        assert!(g.permits(Action::Catalog, Resource::NoProject).is_ok());
        let e = g
            .permits(Action::Build, Resource::Project(&other))
            .unwrap_err();
        assert_eq!(e.code(), "forbidden");
        assert!(e.to_string().contains("acme, blog"), "{e}");
        assert!(matches!(
            g.permits(Action::ReadTasks, Resource::AllProjects),
            Err(Forbidden::AllProjects { .. })
        ));
        let e = g.permits(Action::Admin, Resource::NoProject).unwrap_err();
        assert!(e.to_string().contains("scope build"), "{e}");
        let unlimited = grant(TokenScope::Read, &[]);
        assert!(unlimited
            .permits(Action::Read, Resource::AllProjects)
            .is_ok());
        assert!(unlimited
            .permits(Action::Build, Resource::Project(&acme))
            .is_err());
    }

    #[test]
    fn admin_tokens_cannot_be_limited_and_projects_are_normalised() {
        let now = Utc::now();
        let name = TokenName::parse("ops").unwrap();
        assert!(ApiToken::new(name.clone(), TokenScope::Admin, vec![p("a")], now).is_err());
        let t = ApiToken::new(name, TokenScope::Build, vec![p("b"), p("a"), p("b")], now).unwrap();
        assert_eq!(t.projects, [p("a"), p("b")]);
        assert_eq!(t.grant().project_limit(), Some(&[p("a"), p("b")][..]));
    }

    #[test]
    fn names_and_scopes_parse_strictly() {
        for ok in ["bot", "ci-bot.2", "a", "x_y"] {
            assert!(TokenName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-bot", "Bot", "a b", "a/b", &"a".repeat(65)] {
            assert!(TokenName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!("build".parse::<TokenScope>().unwrap(), TokenScope::Build);
        assert!("write".parse::<TokenScope>().is_err());
    }
}
