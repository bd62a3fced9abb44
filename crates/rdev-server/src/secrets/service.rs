//! [`SecretService`]: the only way in and out of the credential store. It seals values
//! before they reach the repository, checks the master key before the first operation,
//! writes an audit row for every read, write, delete and rotation, resolves the secrets a
//! build asks for into an [`Injection`], and rotates the master key in one transaction.
//! Reserved names (the callback signing secret) are kept out of `set`, `list`, `remove`
//! and `inject`; only rdev's own code writes them, through `set_reserved`. The `gateway`
//! scope (the model gateway's upstream keys) is never read by `inject`, which resolves a
//! plan's names in the project's scope and `global` only.
//! It must not log or format a value; values leave only inside [`Injection`] or
//! [`SecretService::read`], whose callers hand them straight to a child process.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use rdev_core::{
    AuditAction, AuditEntry, AuditFilter, Clock, InjectionPlan, KeyCheck, ProjectName,
    RotatedSecret, Rotation, SealedSecret, SecretMeta, SecretName, SecretRepository, SecretScope,
    SecretString, StoreError, SystemClock,
};
use rdev_store::{Db, SqlSecretRepository};

use super::{
    crypto::{secret_aad, Cipher},
    git_auth::{git_auth_header_value, git_env},
    injection::Injection,
    key::{KeySource, MasterKey},
    SecretError,
};
use crate::config::Config;

/// Largest secret value accepted, in bytes (tokens and keys, not files).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// How often `set` retries when a concurrent writer took the next version number.
const VERSION_RACE_RETRIES: usize = 5;

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Secret versions re-encrypted.
    pub rotated: usize,
}

/// The key in use, its cipher, and the key check ciphertext it opened (empty until the
/// first check), which guards every write against a key rotated away meanwhile.
#[derive(Clone)]
struct Keyed {
    key: MasterKey,
    cipher: Cipher,
    check: Vec<u8>,
}

/// Sets, lists, removes, reads and rotates secrets.
pub struct SecretService {
    repo: Arc<dyn SecretRepository>,
    keyed: RwLock<Keyed>,
    source: KeySource,
    clock: Arc<dyn Clock>,
    verified: tokio::sync::OnceCell<()>,
    /// Counts this service's writes and deletions in the `gateway` scope, so the gateway
    /// in this process re-reads an upstream key at once.
    gateway_changes: AtomicU64,
}

impl fmt::Debug for SecretService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretService")
            .field("repo", &self.repo)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SecretService {
    /// A service over `repo` with `key` (which came from `source`).
    pub fn new(repo: Arc<dyn SecretRepository>, key: MasterKey, source: KeySource) -> Self {
        Self::with_clock(repo, key, source, Arc::new(SystemClock))
    }

    /// [`SecretService::new`] with a controllable clock.
    pub fn with_clock(
        repo: Arc<dyn SecretRepository>,
        key: MasterKey,
        source: KeySource,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cipher = Cipher::new(&key);
        Self {
            repo,
            keyed: RwLock::new(Keyed {
                key,
                cipher,
                check: Vec::new(),
            }),
            source,
            clock,
            verified: tokio::sync::OnceCell::new(),
            gateway_changes: AtomicU64::new(0),
        }
    }

    /// How many times this service wrote or deleted a `gateway` secret (a change counter:
    /// the gateway's cached upstream keys are re-read when it moves).
    pub fn gateway_changes(&self) -> u64 {
        self.gateway_changes.load(Ordering::Acquire)
    }

    fn changed(&self, scope: &SecretScope) {
        if *scope == SecretScope::Gateway {
            self.gateway_changes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The service `rdev serve` and `rdev secret` use: the key from the environment or the
    /// key file under `config.data_dir`, the store on `db`. The key check runs on first use.
    pub fn from_config(config: &Config, db: Db) -> Result<Self, SecretError> {
        let (key, source) = MasterKey::load(config)?;
        Ok(Self::new(
            Arc::new(SqlSecretRepository::new(db)),
            key,
            source,
        ))
    }

    /// Where the current key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.source
    }

    fn keyed(&self) -> Keyed {
        self.keyed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks the key against the database's key check (storing one on first use). A key
    /// file rotation that crashed after the database switched is finished here.
    pub async fn verify_key(&self) -> Result<(), SecretError> {
        self.verified
            .get_or_try_init(|| self.check_key())
            .await
            .map(|_| ())
    }

    async fn check_key(&self) -> Result<(), SecretError> {
        let check = match self.repo.key_check().await? {
            Some(c) => c,
            None => {
                let (nonce, ciphertext) = self.keyed().cipher.seal_key_check();
                let check = KeyCheck {
                    nonce,
                    ciphertext,
                    created_at: self.clock.now(),
                };
                if !self.repo.init_key_check(&check).await? {
                    // Another process initialised it first: check against theirs.
                    return self.refresh_key().await.map(|_| ());
                }
                check
            }
        };
        self.adopt_key(&check).map(|_| ())
    }

    /// Re-reads the key check and adopts whichever key opens it; `true` if the key changed
    /// (another process rotated it and rewrote the shared key file).
    async fn refresh_key(&self) -> Result<bool, SecretError> {
        let check =
            self.repo.key_check().await?.ok_or_else(|| {
                StoreError::Unavailable("the master key check vanished".to_owned())
            })?;
        self.adopt_key(&check)
    }

    /// Uses the first key that opens `check`: the current one, the key file as it is now,
    /// or a staged key (finishing a rotation that crashed between commit and rename).
    fn adopt_key(&self, check: &KeyCheck) -> Result<bool, SecretError> {
        let opens = |c: &Cipher| c.opens_key_check(&check.nonce, &check.ciphertext);
        let mut keyed = self.keyed.write().unwrap_or_else(|e| e.into_inner());
        if opens(&keyed.cipher) {
            keyed.check.clone_from(&check.ciphertext);
            return Ok(false);
        }
        if let KeySource::File(path) = &self.source {
            for (candidate, staged) in [(path.clone(), false), (MasterKey::staged_path(path), true)]
            {
                let Ok(key) = MasterKey::read_file(&candidate) else {
                    continue;
                };
                let cipher = Cipher::new(&key);
                if !opens(&cipher) {
                    continue;
                }
                if staged {
                    MasterKey::promote_staged(path)?;
                    tracing::warn!(
                        path = %path.display(),
                        "finished an interrupted key rotation: the staged key is now the key file"
                    );
                } else {
                    tracing::info!(path = %path.display(), "reloaded the rotated master key");
                }
                *keyed = Keyed {
                    key,
                    cipher,
                    check: check.ciphertext.clone(),
                };
                return Ok(true);
            }
        }
        Err(SecretError::MasterKeyMismatch {
            source_name: self.source.to_string(),
        })
    }

    fn audit(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        version: Option<u32>,
        action: AuditAction,
        actor: &str,
        detail: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            at: self.clock.now(),
            scope: scope.clone(),
            name: name.clone(),
            version,
            action,
            actor: actor.to_owned(),
            detail,
        }
    }

    /// Stores `value` as the next version of `scope/name`; returns its metadata. A reserved
    /// name is refused (`reserved_secret_name`).
    pub async fn set(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        value: &SecretString,
        actor: &str,
    ) -> Result<SecretMeta, SecretError> {
        name.check_not_reserved()?;
        self.set_reserved(scope, name, value, actor).await
    }

    /// [`Self::set`] that also writes reserved names: for rdev's own secrets (the callback
    /// signing secret, `crate::callbacks::keys`), never for a name a client chose.
    pub(crate) async fn set_reserved(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        value: &SecretString,
        actor: &str,
    ) -> Result<SecretMeta, SecretError> {
        validate_value(value)?;
        self.verify_key().await?;
        let mut last_conflict = None;
        for _ in 0..VERSION_RACE_RETRIES {
            let keyed = self.keyed();
            let version = self.repo.latest_version(scope, name).await?.unwrap_or(0) + 1;
            let (nonce, ciphertext) = keyed
                .cipher
                .seal(&secret_aad(scope, name, version), value.expose().as_bytes());
            let sealed = SealedSecret {
                scope: scope.clone(),
                name: name.clone(),
                version,
                nonce,
                ciphertext,
                created_at: self.clock.now(),
            };
            let audit = self.audit(scope, name, Some(version), AuditAction::Write, actor, None);
            match self
                .repo
                .insert_version(&sealed, &audit, &keyed.check)
                .await
            {
                Ok(()) => {
                    self.changed(scope);
                    tracing::info!(%scope, %name, version, actor, "secret written");
                    return Ok(SecretMeta {
                        scope: scope.clone(),
                        name: name.clone(),
                        version,
                        created_at: sealed.created_at,
                        last_used_at: None,
                    });
                }
                Err(StoreError::Conflict(msg)) => {
                    // A version race, or a rotation elsewhere: pick up its key, if we can.
                    self.refresh_key().await?;
                    last_conflict = Some(msg);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(last_conflict.unwrap_or_default()).into())
    }

    /// Metadata of every secret (in `scope`, or all) except reserved ones: never values.
    pub async fn list(&self, scope: Option<&SecretScope>) -> Result<Vec<SecretMeta>, SecretError> {
        self.verify_key().await?;
        let mut metas = self.repo.list(scope).await?;
        metas.retain(|m| !m.name.is_reserved());
        Ok(metas)
    }

    /// Deletes every version of `scope/name`; returns how many versions went. A reserved
    /// name is refused (`reserved_secret_name`).
    pub async fn remove(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        actor: &str,
    ) -> Result<u64, SecretError> {
        name.check_not_reserved()?;
        self.verify_key().await?;
        let audit = self.audit(scope, name, None, AuditAction::Delete, actor, None);
        match self.repo.delete(scope, name, &audit).await {
            Ok(n) => {
                self.changed(scope);
                tracing::info!(%scope, %name, versions = n, actor, "secret deleted");
                Ok(n)
            }
            Err(StoreError::NotFound { .. }) => Err(not_found(scope, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Decrypts the latest version of `scope/name` (audited, marks it used). For handing
    /// to a build only: `purpose` goes into the audit row.
    pub async fn read(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        actor: &str,
        purpose: &str,
    ) -> Result<(u32, SecretString), SecretError> {
        self.verify_key().await?;
        let sealed = self
            .repo
            .get_latest(scope, name)
            .await?
            .ok_or_else(|| not_found(scope, name))?;
        let v = sealed.version;
        let aad = secret_aad(scope, name, v);
        let mut opened = self
            .keyed()
            .cipher
            .open(&aad, &sealed.nonce, &sealed.ciphertext);
        // Another process may have rotated the key: adopt it and try once more; if the key
        // is still right, the row itself is bad.
        if opened.is_err() && self.refresh_key().await? {
            opened = self
                .keyed()
                .cipher
                .open(&aad, &sealed.nonce, &sealed.ciphertext);
        }
        let detail = |outcome: &str| Some(format!("{purpose}: {outcome}"));
        let Ok(plain) = opened else {
            let audit = self.audit(
                scope,
                name,
                Some(v),
                AuditAction::Read,
                actor,
                detail("failed"),
            );
            self.repo.record_audit(&audit).await?;
            return Err(undecryptable(&sealed));
        };
        let value = String::from_utf8(plain.to_vec()).map_err(|_| undecryptable(&sealed))?;
        let audit = self.audit(scope, name, Some(v), AuditAction::Read, actor, detail("ok"));
        self.repo.record_audit(&audit).await?;
        self.repo
            .mark_used(scope, name, v, self.clock.now())
            .await?;
        Ok((v, SecretString::new(value)))
    }

    /// Reads `name` from the project's scope, falling back to `global`.
    async fn read_for_project(
        &self,
        project: &ProjectName,
        name: &SecretName,
        actor: &str,
    ) -> Result<SecretString, SecretError> {
        let own = SecretScope::Project(project.clone());
        match self.read(&own, name, actor, "build").await {
            Err(SecretError::NotFound { .. }) => {}
            other => return other.map(|(_, v)| v),
        }
        match self.read(&SecretScope::Global, name, actor, "build").await {
            Err(SecretError::NotFound { .. }) => Err(SecretError::NotFound {
                scope: format!("{own} or global"),
                name: name.to_string(),
            }),
            other => other.map(|(_, v)| v),
        }
    }

    /// Resolves a build's secrets: agent environment, git variables for `remote_url`, and
    /// the redactor covering every value handed out. The plan is checked again first
    /// ([`InjectionPlan::validate`]: fenced variables, reserved names), so a plan stored
    /// before a rule existed, or written around the API, fails before any secret is read.
    pub async fn inject(
        &self,
        project: &ProjectName,
        plan: &InjectionPlan,
        remote_url: &str,
        actor: &str,
    ) -> Result<Injection, SecretError> {
        plan.validate()?;
        let mut env = Vec::with_capacity(plan.env.len());
        let mut known: Vec<(String, SecretString)> = Vec::new();
        for (var, name) in &plan.env {
            let value = self.read_for_project(project, name, actor).await?;
            known.push((var.clone(), value.clone()));
            env.push((var.clone(), value));
        }
        let mut git = Vec::new();
        if let Some(name) = &plan.git_token {
            const GIT_TOKEN: &str = "git token";
            let token = self.read_for_project(project, name, actor).await?;
            git = git_env(&token, remote_url);
            let header = git_auth_header_value(&token);
            if let Some(b64) = header.expose().strip_prefix("Basic ") {
                known.push((GIT_TOKEN.to_owned(), SecretString::new(b64)));
            }
            known.push((GIT_TOKEN.to_owned(), header));
            known.push((GIT_TOKEN.to_owned(), token));
        }
        Ok(Injection::new(env, git, known))
    }

    /// Audit rows, newest first.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, SecretError> {
        Ok(self.repo.audit_log(filter).await?)
    }

    /// Re-encrypts every version under `new_key` in one transaction, then switches this
    /// service to it. With a key file, the new key is staged beside it first and moved
    /// over it after the commit; if anything fails before the commit, nothing changed and
    /// every secret still opens with the old key.
    pub async fn rotate_key(
        &self,
        new_key: MasterKey,
        actor: &str,
    ) -> Result<RotationReport, SecretError> {
        self.verify_key().await?;
        // Start from the key the database holds now, even if another process rotated it.
        self.refresh_key().await?;
        let old = self.keyed();
        if old.key == new_key {
            return Err(SecretError::SameKey);
        }
        let new_cipher = Cipher::new(&new_key);
        let old_check =
            self.repo.key_check().await?.ok_or_else(|| {
                StoreError::Unavailable("the master key check vanished".to_owned())
            })?;
        let rows = self.repo.load_all().await?;
        let now = self.clock.now();
        let mut rotated = Vec::with_capacity(rows.len());
        let mut audit = Vec::with_capacity(rows.len());
        for row in rows {
            let aad = secret_aad(&row.scope, &row.name, row.version);
            let plain = old
                .cipher
                .open(&aad, &row.nonce, &row.ciphertext)
                .map_err(|_| undecryptable(&row))?;
            let (nonce, ciphertext) = new_cipher.seal(&aad, &plain);
            audit.push(self.audit(
                &row.scope,
                &row.name,
                Some(row.version),
                AuditAction::Rotate,
                actor,
                None,
            ));
            rotated.push(RotatedSecret {
                scope: row.scope,
                name: row.name,
                version: row.version,
                old_ciphertext: row.ciphertext,
                nonce,
                ciphertext,
            });
        }
        let (nonce, ciphertext) = new_cipher.seal_key_check();
        let rotation = Rotation {
            old_check,
            new_check: KeyCheck {
                nonce,
                ciphertext,
                created_at: now,
            },
            rows: rotated,
            audit,
        };
        if let KeySource::File(path) = &self.source {
            new_key.stage_file(path)?;
        }
        self.repo.replace_all(&rotation).await?;
        if let KeySource::File(path) = &self.source {
            MasterKey::promote_staged(path)?;
        }
        *self.keyed.write().unwrap_or_else(|e| e.into_inner()) = Keyed {
            key: new_key,
            cipher: new_cipher,
            check: rotation.new_check.ciphertext.clone(),
        };
        tracing::info!(rotated = rotation.rows.len(), actor, "master key rotated");
        Ok(RotationReport {
            rotated: rotation.rows.len(),
        })
    }
}

fn not_found(scope: &SecretScope, name: &SecretName) -> SecretError {
    SecretError::NotFound {
        scope: scope.to_string(),
        name: name.to_string(),
    }
}

fn undecryptable(row: &SealedSecret) -> SecretError {
    SecretError::Undecryptable {
        scope: row.scope.to_string(),
        name: row.name.to_string(),
        version: row.version,
    }
}

fn validate_value(value: &SecretString) -> Result<(), SecretError> {
    let v = value.expose();
    if v.is_empty() {
        return Err(SecretError::InvalidValue("the value is empty".to_owned()));
    }
    if v.len() > MAX_SECRET_BYTES {
        return Err(SecretError::InvalidValue(format!(
            "the value is {} bytes; the limit is {MAX_SECRET_BYTES}",
            v.len()
        )));
    }
    if v.contains('\0') {
        return Err(SecretError::InvalidValue(
            "the value contains a NUL byte, which no environment variable can hold".to_owned(),
        ));
    }
    Ok(())
}
