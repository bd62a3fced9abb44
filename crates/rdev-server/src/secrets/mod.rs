//! The credential store's application side (SPEC 5): the master key ([`key`]), sealing with
//! XChaCha20-Poly1305 ([`crypto`]), the [`SecretService`] that sets, lists, removes, reads
//! for builds and rotates (auditing each), what a build receives ([`Injection`]), and the
//! git token hand-off ([`git_auth`]).
//! Storage is the `SecretRepository` port (`rdev-store` adapts it); redaction is
//! `rdev_core::Redactor`. Nothing here may log, print or return a plaintext value except
//! through [`Injection`], which exists to hand values to a build.

pub mod crypto;
pub mod git_auth;
mod injection;
pub mod key;
mod service;

use std::path::PathBuf;

use rdev_core::{ErrorCode, StoreError, ValidationError};

pub use self::{
    git_auth::{git_auth_header_value, git_env},
    injection::Injection,
    key::{KeySource, MasterKey},
    service::{RotationReport, SecretService, MAX_SECRET_BYTES},
};

/// What can go wrong with secrets. Messages name secrets and files, never values or keys.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A scope, name or other input broke a rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The value is empty, too large or not UTF-8.
    #[error("invalid secret value: {0}")]
    InvalidValue(String),
    /// `RDEV_MASTER_KEY` or the key file does not hold a 32-byte base64 key.
    #[error("the master key from {origin} is invalid: {reason}")]
    MasterKeyInvalid { origin: String, reason: String },
    /// The key file may be read or changed by group or others.
    #[error(
        "refusing master key file {path}: its mode is {mode:04o} and must allow no access to \
         group or others (run: chmod 600 {path})",
        path = .path.display()
    )]
    MasterKeyFileInsecure { path: PathBuf, mode: u32 },
    /// The key file could not be read or written.
    #[error("master key file {path}: {reason}", path = .path.display())]
    MasterKeyFile {
        path: PathBuf,
        reason: String,
        /// The file does not exist.
        missing: bool,
        /// The file exists (while creating it).
        exists: bool,
    },
    /// The key does not open the database's key check: it is not the key the secrets
    /// were encrypted with.
    #[error(
        "the master key from {source_name} is not the key this database's secrets were \
         encrypted with (wrong RDEV_MASTER_KEY or key file, or the key was rotated by \
         another process: restart with the current key)"
    )]
    MasterKeyMismatch { source_name: String },
    /// A stored version failed authentication: its bytes were altered or it was moved to
    /// another scope, name or version.
    #[error(
        "secret {scope}/{name} version {version} could not be decrypted: the stored row \
         was altered or does not belong to this secret"
    )]
    Undecryptable {
        scope: String,
        name: String,
        version: u32,
    },
    /// No such secret (in the scope, or for a build in the project's scope nor `global`).
    #[error("secret {name} not found in {scope}")]
    NotFound { scope: String, name: String },
    /// The new key equals the current one.
    #[error("the new master key is the same as the current one")]
    SameKey,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for SecretError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::InvalidValue(_) => "invalid_secret_value",
            Self::MasterKeyInvalid { .. } => "master_key_invalid",
            Self::MasterKeyFileInsecure { .. } => "master_key_file_insecure",
            Self::MasterKeyFile { .. } => "master_key_file_error",
            Self::MasterKeyMismatch { .. } => "master_key_mismatch",
            Self::Undecryptable { .. } => "secret_undecryptable",
            Self::NotFound { .. } => "secret_not_found",
            Self::SameKey => "master_key_unchanged",
            Self::Store(e) => e.code(),
        }
    }
}
