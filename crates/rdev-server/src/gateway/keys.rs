//! The key each upstream is sent with. A key from rdev's environment (`api_key_env`, or
//! the default upstream's) was read with the settings; a key in the credential store
//! (`api_key_secret`, scope `gateway`, which no build can read) is read through the
//! [`SecretService`] when a call is forwarded, kept for at most [`KEY_REFRESH`], and read
//! again at once after this process wrote or deleted a `gateway` secret (the API, or a
//! rotation in this process). So `rdev secret set gateway NAME` takes effect without a
//! restart: at once in the process that wrote it, within [`KEY_REFRESH`] in the others.
//!
//! Every read is audited by the secret service (actor `gateway`). Values leave this module
//! only to the request that carries them upstream; errors name the secret, never its value.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdev_core::{ErrorCode, SecretName, SecretScope, SecretString};

use crate::{
    config::Upstream,
    secrets::{SecretError, SecretService},
};

/// How long a key read from the credential store is used before it is read again.
pub const KEY_REFRESH: Duration = Duration::from_secs(60);

/// Why an upstream's key could not be had; the call skips that upstream.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The process has no credential store (`rdev agent run` without a database).
    #[error("its key is the credential-store secret gateway/{name}, and this process has no credential store")]
    NoStore { name: SecretName },
    /// The secret service failed (not found, undecryptable, the store unavailable).
    #[error("its key, credential-store secret gateway/{name}, could not be read: {source}")]
    Read {
        name: SecretName,
        #[source]
        source: SecretError,
    },
}

impl ErrorCode for KeyError {
    fn code(&self) -> &'static str {
        match self {
            Self::NoStore { .. } => "secret_unavailable",
            Self::Read { source, .. } => source.code(),
        }
    }
}

/// A key read from the store, and when.
#[derive(Clone)]
struct Cached {
    value: SecretString,
    read_at: Instant,
    /// The secret service's change counter when it was read.
    changes: u64,
}

/// The upstreams' keys; one per gateway.
pub struct UpstreamKeys {
    secrets: Option<Arc<SecretService>>,
    cache: Mutex<HashMap<SecretName, Cached>>,
    /// One read at a time: calls arriving together after the key expired read it once.
    reading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for UpstreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKeys")
            .field("credential_store", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamKeys {
    /// Keys read through `secrets` (`None`: only keys from the environment work).
    pub fn new(secrets: Option<Arc<SecretService>>) -> Self {
        Self {
            secrets,
            cache: Mutex::default(),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self, name: &SecretName, changes: u64) -> Option<SecretString> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(name)
            .filter(|c| c.changes == changes && c.read_at.elapsed() < KEY_REFRESH)
            .map(|c| c.value.clone())
    }

    /// The key to send `upstream`'s calls with; `None`: it takes none.
    pub async fn key(&self, upstream: &Upstream) -> Result<Option<SecretString>, KeyError> {
        let Some(name) = &upstream.api_key_secret else {
            return Ok(upstream.api_key.clone());
        };
        let Some(secrets) = &self.secrets else {
            return Err(KeyError::NoStore { name: name.clone() });
        };
        if let Some(v) = self.fresh(name, secrets.gateway_changes()) {
            return Ok(Some(v));
        }
        let _reading = self.reading.lock().await;
        // Read by a call that held the lock before this one?
        let changes = secrets.gateway_changes();
        if let Some(v) = self.fresh(name, changes) {
            return Ok(Some(v));
        }
        let purpose = format!("upstream {}", upstream.name);
        let read = secrets
            .read(&SecretScope::Gateway, name, "gateway", &purpose)
            .await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok((_, value)) => {
                let cached = Cached {
                    value: value.clone(),
                    read_at: Instant::now(),
                    changes,
                };
                cache.insert(name.clone(), cached);
                Ok(Some(value))
            }
            // The store is down: the key read before stays in use until it is back.
            Err(SecretError::Store(e)) if cache.contains_key(name) => {
                tracing::warn!(upstream = %upstream.name, secret = %name, error = %e,
                    "could not re-read an upstream key; using the one read before");
                Ok(cache.get(name).map(|c| c.value.clone()))
            }
            Err(source) => {
                // Deleted or unreadable: never sent again.
                cache.remove(name);
                Err(KeyError::Read {
                    name: name.clone(),
                    source,
                })
            }
        }
    }
}
