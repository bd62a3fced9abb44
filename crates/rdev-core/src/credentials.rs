//! The credential store's domain: where a secret lives ([`SecretScope`]), what it is called
//! ([`SecretName`]), the metadata and audit records the store exchanges, the sealed
//! (encrypted) row, the [`SecretRepository`] port adapters implement, and the
//! [`Redactor`] that scrubs injected values out of text and JSON, and the fence around the
//! environment a project may set ([`env_fence`]).
//!
//! It must not encrypt, read keys or touch a database: sealing lives in `rdev-server`,
//! SQL in `rdev-store`. Nothing here ever holds a plaintext value except the redactor,
//! whose `Debug` shows only how many patterns it has.

pub mod env_fence;
mod redact;

use std::{fmt, str::FromStr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use self::redact::{Encoding, KnownMatch, Redactor, REDACTED};
use crate::{ProjectName, StoreError, ValidationError};

/// Where a secret lives: shared by every project, private to one, or rdev's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretScope {
    /// `global`: visible to every project's builds.
    Global,
    /// `project:<name>`: visible to that project's builds only.
    Project(ProjectName),
    /// `gateway`: the model gateway's upstream keys (`api_key_secret`). No build can read
    /// it: a project's secrets plan names secrets, and names resolve in the project's scope
    /// and `global` only.
    Gateway,
}

impl SecretScope {
    /// Parses `global`, `gateway` or `project:<name>`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "global" => return Ok(Self::Global),
            "gateway" => return Ok(Self::Gateway),
            _ => {}
        }
        match s.strip_prefix("project:") {
            Some(name) => Ok(Self::Project(ProjectName::parse(name)?)),
            None => Err(ValidationError::InvalidField {
                field: "scope",
                reason: format!(
                    "{:?} is not a scope; use \"global\", \"gateway\" or \"project:<name>\"",
                    s.chars().take(80).collect::<String>()
                ),
            }),
        }
    }
}

impl fmt::Display for SecretScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Project(p) => write!(f, "project:{p}"),
            Self::Gateway => f.write_str("gateway"),
        }
    }
}

impl FromStr for SecretScope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SecretScope {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SecretScope> for String {
    fn from(s: SecretScope) -> Self {
        s.to_string()
    }
}

/// The name each project's callback signing secret is stored under, in `project:<name>`.
/// It is reserved ([`SecretName::is_reserved`]): rdev alone writes and reads it.
pub const WEBHOOK_SECRET_NAME: &str = "RDEV_WEBHOOK_SECRET";

/// A secret's name: `[A-Za-z_][A-Za-z0-9_]{0,127}`, so it is usable as an environment
/// variable name as it stands and safe in URLs, paths and SQL parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl SecretName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 128;

    /// Parses and validates a name.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let bad = |reason: &str| ValidationError::InvalidField {
            field: "secret name",
            reason: format!("{:?} {reason}", name.chars().take(80).collect::<String>()),
        };
        let mut bytes = name.bytes();
        match bytes.next() {
            None => return Err(bad("is empty")),
            Some(b) if !(b.is_ascii_alphabetic() || b == b'_') => {
                return Err(bad("must start with a letter or '_'"))
            }
            Some(_) => {}
        }
        if name.len() > Self::MAX_LEN {
            return Err(bad("is longer than 128 characters"));
        }
        if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("may contain only letters, digits and '_'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the callback signing secret ([`WEBHOOK_SECRET_NAME`]).
    pub fn webhook_secret() -> Self {
        Self(WEBHOOK_SECRET_NAME.to_owned())
    }

    /// Whether rdev keeps this name for itself (the callback signing secret, in any scope):
    /// the secrets API and CLI do not list, set or delete it and no secret plan may name it.
    pub fn is_reserved(&self) -> bool {
        self.0 == WEBHOOK_SECRET_NAME
    }

    /// `Err(ReservedSecretName)` for a reserved name, see [`Self::is_reserved`].
    pub fn check_not_reserved(&self) -> Result<(), ValidationError> {
        if self.is_reserved() {
            return Err(ValidationError::ReservedSecretName {
                name: self.0.clone(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SecretName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SecretName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> Self {
        n.0
    }
}

/// What a listing shows about a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretMeta {
    pub scope: SecretScope,
    pub name: SecretName,
    /// The latest version (versions start at 1 and grow by one per `set`).
    pub version: u32,
    /// When the latest version was written.
    pub created_at: DateTime<Utc>,
    /// When the latest version was last read for a build, if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One encrypted version of a secret as stored: nonce and AEAD ciphertext (tag included).
/// The AAD is `scope|name|version`, so the row only opens where it was written.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub scope: SecretScope,
    pub name: SecretName,
    pub version: u32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The master-key check: a fixed plaintext sealed with the master key, so a wrong key is
/// refused before anything is decrypted or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// What happened to a secret, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A value was decrypted (for a build or a `get`).
    Read,
    /// A new version was written.
    Write,
    /// Every version was deleted.
    Delete,
    /// The version was re-encrypted under a new master key.
    Rotate,
}

impl AuditAction {
    /// The stored form: `read`, `write`, `delete`, `rotate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Rotate => "rotate",
        }
    }
}

impl FromStr for AuditAction {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "read" => Self::Read,
            "write" => Self::Write,
            "delete" => Self::Delete,
            "rotate" => Self::Rotate,
            other => {
                return Err(ValidationError::InvalidField {
                    field: "audit action",
                    reason: format!("unknown action {other:?}"),
                })
            }
        })
    }
}

/// One audit row: who did what to which secret, and when. Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub scope: SecretScope,
    pub name: SecretName,
    /// The version touched; `None` for a delete of every version.
    pub version: Option<u32>,
    pub action: AuditAction,
    /// Who: `cli:<user>`, `api`, `task:<id>`...
    pub actor: String,
    /// Free text without values, e.g. `2 versions` or `for build`.
    pub detail: Option<String>,
}

/// One secret re-encrypted by a key rotation. `old_ciphertext` is what the rotation read,
/// so a row changed meanwhile makes the whole rotation fail instead of being overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedSecret {
    pub scope: SecretScope,
    pub name: SecretName,
    pub version: u32,
    pub old_ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Everything a key rotation writes, applied in one transaction or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key check the rotation started from (compare-and-swap guard).
    pub old_check: KeyCheck,
    /// The key check under the new key.
    pub new_check: KeyCheck,
    /// Every stored version, re-encrypted; must cover all rows in the store.
    pub rows: Vec<RotatedSecret>,
    /// Audit rows written in the same transaction.
    pub audit: Vec<AuditEntry>,
}

/// Filters for [`SecretRepository::audit_log`]; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub scope: Option<SecretScope>,
    pub name: Option<SecretName>,
    /// At most this many; 0 means 100.
    pub limit: u32,
}

/// Storage of sealed secrets, the key check and the audit log. Implementations never see
/// a plaintext value and must apply each method atomically.
#[async_trait]
pub trait SecretRepository: Send + Sync + fmt::Debug {
    /// The stored key check, if the store has been initialised.
    async fn key_check(&self) -> Result<Option<KeyCheck>, StoreError>;
    /// Stores the key check unless one exists; returns whether this call stored it.
    async fn init_key_check(&self, check: &KeyCheck) -> Result<bool, StoreError>;
    /// The highest stored version of a secret.
    async fn latest_version(
        &self,
        scope: &SecretScope,
        name: &SecretName,
    ) -> Result<Option<u32>, StoreError>;
    /// Inserts a new version and its audit row in one transaction, provided the stored key
    /// check's ciphertext is still `key_check` (so a process holding a rotated-away key
    /// cannot write a row nobody can open). `Conflict` if that version exists (a concurrent
    /// writer won; retry with the next number) or the key check changed.
    async fn insert_version(
        &self,
        sealed: &SealedSecret,
        audit: &AuditEntry,
        key_check: &[u8],
    ) -> Result<(), StoreError>;
    /// The latest version of a secret.
    async fn get_latest(
        &self,
        scope: &SecretScope,
        name: &SecretName,
    ) -> Result<Option<SealedSecret>, StoreError>;
    /// Metadata of the latest version of every secret (in `scope`, or all), by scope and name.
    async fn list(&self, scope: Option<&SecretScope>) -> Result<Vec<SecretMeta>, StoreError>;
    /// Deletes every version and writes the audit row in one transaction; returns how many
    /// versions were removed (`NotFound` when none existed).
    async fn delete(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;
    /// Appends an audit row.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit rows matching `filter`, newest first.
    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    /// Records that a version was read for use at `at`.
    async fn mark_used(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Every stored version of every secret, for a rotation.
    async fn load_all(&self) -> Result<Vec<SealedSecret>, StoreError>;
    /// Applies a rotation in one transaction. `Conflict` (and nothing changed) if the key
    /// check or any row differs from what the rotation read, or rows were added meanwhile.
    async fn replace_all(&self, rotation: &Rotation) -> Result<(), StoreError>;
}

/// Which secrets a build receives: environment variables for the agent, and the token git
/// uses for the project's remote. Each name is looked up in the project's scope first,
/// then in `global`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectionPlan {
    /// `(environment variable, secret name)` pairs.
    #[serde(default)]
    pub env: Vec<(String, SecretName)>,
    /// The secret holding the git token, if the remote needs one.
    #[serde(default)]
    pub git_token: Option<SecretName>,
}

impl InjectionPlan {
    /// Checks the plan before it is stored and again before it is used: every variable
    /// passes the [`env_fence`], and no entry names a reserved secret (the callback signing
    /// secret must never reach an agent or a git remote).
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (var, secret) in &self.env {
            env_fence::check_env_name(var)?;
            secret.check_not_reserved()?;
        }
        self.git_token
            .as_ref()
            .map_or(Ok(()), SecretName::check_not_reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn scopes_parse_and_print_back() {
        assert_eq!(SecretScope::parse("global").unwrap(), SecretScope::Global);
        assert_eq!(SecretScope::parse("gateway").unwrap(), SecretScope::Gateway);
        assert_eq!(SecretScope::Gateway.to_string(), "gateway");
        let p = SecretScope::parse("project:site-1").unwrap();
        assert_eq!(p.to_string(), "project:site-1");
        for bad in [
            "",
            "Global",
            "project:",
            "project:Bad_Name",
            "team:x",
            "global ",
        ] {
            assert!(SecretScope::parse(bad).is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"project:site-1\"");
        assert!(serde_json::from_str::<SecretScope>("\"nope\"").is_err());
    }

    #[test]
    fn secret_names_are_env_var_names() {
        for ok in ["GITHUB_TOKEN", "_x", "a1", &"A".repeat(128)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            "1ABC",
            "A-B",
            "A B",
            "a.b",
            "ÄB",
            &"A".repeat(129),
            "x=y",
        ] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_the_webhook_secret_name_is_reserved() {
        let webhook = SecretName::webhook_secret();
        assert_eq!(webhook.as_str(), WEBHOOK_SECRET_NAME);
        assert!(webhook.is_reserved());
        assert_eq!(
            webhook.check_not_reserved().unwrap_err().code(),
            "reserved_secret_name"
        );
        for other in [
            "RDEV_WEBHOOK_SECRET_2",
            "rdev_webhook_secret",
            "DEPLOY_TOKEN",
        ] {
            assert!(!SecretName::parse(other).unwrap().is_reserved(), "{other}");
        }
    }

    #[test]
    fn a_plan_may_not_set_fenced_variables_nor_name_the_webhook_secret() {
        let plan = |env: &[(&str, &str)], git: Option<&str>| InjectionPlan {
            env: env
                .iter()
                .map(|(v, n)| ((*v).to_owned(), SecretName::parse(n).unwrap()))
                .collect(),
            git_token: git.map(|n| SecretName::parse(n).unwrap()),
        };
        let ok = plan(&[("DEPLOY_TOKEN", "DEPLOY_TOKEN")], Some("GIT_TOKEN"));
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(InjectionPlan::default().validate(), Ok(()));
        for (bad, code) in [
            (
                plan(&[("ANTHROPIC_API_KEY", "KEY")], None),
                "reserved_env_name",
            ),
            (
                plan(&[("OK", "A"), ("http_proxy", "P")], None),
                "reserved_env_name",
            ),
            (plan(&[("A-B", "A")], None), "invalid_field"),
            (
                plan(&[("HOOK", WEBHOOK_SECRET_NAME)], None),
                "reserved_secret_name",
            ),
            (plan(&[], Some(WEBHOOK_SECRET_NAME)), "reserved_secret_name"),
        ] {
            assert_eq!(bad.validate().unwrap_err().code(), code, "{bad:?}");
        }
    }

    #[test]
    fn sealed_debug_shows_no_bytes() {
        let s = SealedSecret {
            scope: SecretScope::Global,
            name: SecretName::parse("T").unwrap(),
            version: 1,
            nonce: vec![7; 24],
            ciphertext: vec![42, 43, 44],
            created_at: Utc::now(),
        };
        let dbg = format!("{s:?}");
        assert!(dbg.contains("ciphertext_len: 3"), "{dbg}");
        assert!(!dbg.contains("42"), "{dbg}");
    }

    #[test]
    fn audit_actions_round_trip() {
        for a in [
            AuditAction::Read,
            AuditAction::Write,
            AuditAction::Delete,
            AuditAction::Rotate,
        ] {
            assert_eq!(a.as_str().parse::<AuditAction>().unwrap(), a);
        }
        assert!("peek".parse::<AuditAction>().is_err());
    }
}
