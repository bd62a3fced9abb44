//! API tokens on the server: minting (`rdev_` and 40 random base62 characters), hashing
//! (SHA-256; only the hash is stored), turning a presented bearer token into a [`Grant`]
//! (the configured `RDEV_API_TOKEN` as admin, else a stored token found by its hash), and
//! [`check_exposure`], the rule that `rdev serve` never listens beyond loopback with no
//! credential at all unless told to. What a grant allows is `rdev_core::tokens`; which
//! route is which action is `api::auth`. Tokens are never logged.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use rand::{distr::Alphanumeric, Rng};
use rdev_core::{
    ApiToken, ErrorCode, Grant, ProjectName, SecretString, StoreError, TokenHash, TokenName,
    TokenScope, TokenStore, ValidationError,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// Every token rdev mints starts with this, so secret scanners can recognise one.
pub const TOKEN_PREFIX: &str = "rdev_";
/// Random base62 characters after the prefix: about 238 bits.
const TOKEN_CHARS: usize = 40;
/// A token's `last_used_at` is written at most this often, so authenticating stays a read.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);
/// Whom a grant names when the configured `RDEV_API_TOKEN` was presented.
pub const CONFIGURED_ADMIN: &str = "RDEV_API_TOKEN";
/// Whom a grant names on an API that has no credential at all.
pub const ANONYMOUS: &str = "anonymous";

/// A new random token. Shown once; only [`hash`] of it is kept.
pub fn generate() -> SecretString {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(TOKEN_CHARS)
        .map(char::from)
        .collect();
    SecretString::new(format!("{TOKEN_PREFIX}{random}"))
}

/// The SHA-256 of a token. A fast hash is enough: tokens are high-entropy random strings,
/// not passwords, so there is nothing to brute-force (what GitHub and svix do).
pub fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is neither the configured token nor a stored one (401).
    #[error(
        "a valid bearer token is required (Authorization: Bearer <token>; RDEV_API_TOKEN or \
         one made with `rdev token create`)"
    )]
    Unauthorized,
    /// The token store could not be read (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AuthError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Store(e) => e.code(),
        }
    }
}

/// Why a token cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for TokenError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }
}

/// `rdev serve` would listen beyond loopback with no credential: one line saying how to fix it.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve the API on {listen} without authentication: set RDEV_API_TOKEN (or \
     create a token with `rdev token create NAME --scope admin`), listen on a loopback \
     address, or set allow_unauthenticated = true (RDEV_ALLOW_UNAUTHENTICATED=true) to serve \
     an open API on purpose"
)]
pub struct ExposureError {
    pub listen: SocketAddr,
}

impl ErrorCode for ExposureError {
    fn code(&self) -> &'static str {
        "unauthenticated_listen"
    }
}

/// Whether `addr` is reachable from this machine only (`127.0.0.0/8`, `::1`, and
/// `::ffff:127.x.x.x`).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Refuses an API that anyone on the network could use: listening on a non-loopback
/// address with no `api_token`, no stored token (`has_stored_tokens`) and without
/// `allow_unauthenticated`. Loopback stays open for local development.
pub fn check_exposure(config: &Config, has_stored_tokens: bool) -> Result<(), ExposureError> {
    let open = config.api_token.is_none() && !has_stored_tokens;
    if open && !is_loopback(&config.listen) && !config.allow_unauthenticated {
        return Err(ExposureError {
            listen: config.listen,
        });
    }
    Ok(())
}

/// Minting, listing, revoking and checking API tokens.
#[derive(Debug, Clone)]
pub struct TokenService {
    store: Arc<dyn TokenStore>,
    admin: Option<SecretString>,
    /// Requests without a token pass (as admin) while no token exists at all; off whenever
    /// an admin token is configured or the API listens beyond loopback without
    /// `allow_unauthenticated`.
    open_without_tokens: bool,
    /// Set once this process has seen a stored token: revoking the last one must not open
    /// the API again (a leaked, revoked token would work again through a proxy).
    closed: Arc<AtomicBool>,
}

impl TokenService {
    /// A service over `store` that knows no configured token (what the CLI uses).
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self {
            store,
            admin: None,
            open_without_tokens: false,
            closed: Arc::default(),
        }
    }

    /// The server's service: `config.api_token` is an admin token, and the API is open
    /// only while no credential exists and it listens on loopback (or is allowed open).
    pub fn from_config(config: &Config, store: Arc<dyn TokenStore>) -> Self {
        Self {
            store,
            admin: config.api_token.clone(),
            open_without_tokens: config.api_token.is_none()
                && (is_loopback(&config.listen) || config.allow_unauthenticated),
            closed: Arc::default(),
        }
    }

    /// Whether requests without a token currently pass: never again in this process once
    /// a stored token has existed.
    pub async fn is_open(&self) -> Result<bool, StoreError> {
        if !self.open_without_tokens || self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if self.store.has_tokens().await? {
            self.closed.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// Creates a token and returns its metadata and the token itself, which is shown once.
    pub async fn create(
        &self,
        name: TokenName,
        scope: TokenScope,
        projects: Vec<ProjectName>,
    ) -> Result<(ApiToken, SecretString), TokenError> {
        let token = ApiToken::new(name, scope, projects, Utc::now())?;
        let secret = generate();
        self.store
            .create_token(&token, &hash(secret.expose()))
            .await?;
        Ok((token, secret))
    }

    /// Every token's metadata, by name.
    pub async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.store.list_tokens().await
    }

    /// Revokes (deletes) a token; `NotFound` if there is none by that name.
    pub async fn revoke(&self, name: &TokenName) -> Result<(), StoreError> {
        self.store.revoke_token(name).await
    }

    /// Whether any stored token exists.
    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        self.store.has_tokens().await
    }

    /// What the bearer token `presented` grants. The configured admin token is compared in
    /// constant time; other tokens are looked up by hash, which reveals nothing about a
    /// stored token through timing. A presented token is always checked; a request without
    /// one passes as an anonymous admin only while the API is open
    /// ([`TokenService::is_open`]).
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Grant, AuthError> {
        let Some(token) = presented else {
            if self.is_open().await? {
                return Ok(Grant::admin(ANONYMOUS));
            }
            return Err(AuthError::Unauthorized);
        };
        if let Some(admin) = &self.admin {
            if bool::from(token.as_bytes().ct_eq(admin.expose().as_bytes())) {
                return Ok(Grant::admin(CONFIGURED_ADMIN));
            }
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::Unauthorized);
        }
        let stored = self
            .store
            .token_by_hash(&hash(token))
            .await?
            .ok_or(AuthError::Unauthorized)?;
        let now = Utc::now();
        let stale = stored
            .last_used_at
            .is_none_or(|at| (now - at).to_std().unwrap_or_default() >= LAST_USED_GRANULARITY);
        if stale {
            // Bookkeeping only: a failed write must not fail the request.
            if let Err(e) = self.store.mark_token_used(&stored.name, now).await {
                tracing::warn!(token = %stored.name, error = %e, "could not record a token's use");
            }
        }
        Ok(stored.grant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, token: Option<&str>, allow: bool) -> Config {
        Config {
            listen: listen.parse().unwrap(),
            api_token: token.map(SecretString::new),
            allow_unauthenticated: allow,
            ..Config::default()
        }
    }

    #[test]
    fn an_open_api_is_refused_beyond_loopback_unless_allowed() {
        let err = check_exposure(&config("0.0.0.0:8080", None, false), false).unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("0.0.0.0:8080"), "{line}");
        assert!(line.contains("RDEV_API_TOKEN"), "{line}");
        assert!(line.contains("allow_unauthenticated"), "{line}");
        assert!(check_exposure(&config("[::]:8080", None, false), false).is_err());
        assert!(check_exposure(&config("192.168.1.5:80", None, false), false).is_err());

        for ok in [
            config("127.0.0.1:8080", None, false),
            config("[::1]:8080", None, false),
            config("[::ffff:127.0.0.1]:8080", None, false),
            config("0.0.0.0:8080", Some("admin-token"), false),
            config("0.0.0.0:8080", None, true),
        ] {
            assert!(check_exposure(&ok, false).is_ok(), "{:?}", ok.listen);
        }
        // A stored token is a credential too.
        assert!(check_exposure(&config("0.0.0.0:8080", None, false), true).is_ok());
    }

    #[test]
    fn tokens_are_prefixed_random_and_hashed_with_sha256() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose(), b.expose());
        let body = a.expose().strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(body.len(), TOKEN_CHARS);
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()), "{body}");
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash("abc").0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256 of the token"
        );
        assert_ne!(hash(a.expose()), hash(b.expose()));
    }
}
