//! Each project's callback signing secret lives in the credential store (scope
//! `project:<name>`, name [`WEBHOOK_SECRET_NAME`]), encrypted like every other secret and
//! audited on every read. It is created with the project and shown once. The name is
//! reserved: `/secrets` and `rdev secret` neither list, set nor delete it and no secret plan
//! may inject it, so this module (`POST /projects` and `POST /projects/{name}/webhook-secret`)
//! is the only writer, and the dispatcher (to sign) and push protection (to make sure no
//! commit carries it, [`read_signing_secret`]) the only readers.

use async_trait::async_trait;
pub use rdev_core::credentials::WEBHOOK_SECRET_NAME;
use rdev_core::{
    credentials::{SecretName, SecretScope},
    ProjectName, SecretString,
};

use super::{dispatcher::SigningKeys, signing::generate_secret};
use crate::secrets::{SecretError, SecretService};

/// Creates (or replaces) `project`'s signing secret and returns it, to be shown once.
pub async fn rotate_signing_secret(
    secrets: &SecretService,
    project: &ProjectName,
    actor: &str,
) -> Result<SecretString, SecretError> {
    let secret = generate_secret();
    secrets
        .set_reserved(
            &SecretScope::Project(project.clone()),
            &SecretName::webhook_secret(),
            &secret,
            actor,
        )
        .await?;
    Ok(secret)
}

/// `project`'s signing secret, if it has one, read (and audited) as `actor` for `purpose`.
pub async fn read_signing_secret(
    secrets: &SecretService,
    project: &ProjectName,
    actor: &str,
    purpose: &str,
) -> Result<Option<SecretString>, SecretError> {
    match secrets
        .read(
            &SecretScope::Project(project.clone()),
            &SecretName::webhook_secret(),
            actor,
            purpose,
        )
        .await
    {
        Ok((_, value)) => Ok(Some(value)),
        Err(SecretError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl SigningKeys for SecretService {
    async fn signing_secret(&self, project: &ProjectName) -> Result<Option<SecretString>, String> {
        read_signing_secret(self, project, "callback-dispatcher", "callback")
            .await
            .map_err(|e| e.to_string())
    }
}
