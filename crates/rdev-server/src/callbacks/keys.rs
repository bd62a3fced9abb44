//! Each project's callback signing secret lives in the credential store (scope
//! `project:<name>`, name [`WEBHOOK_SECRET_NAME`]), encrypted like every other secret and
//! audited on every read. It is created with the project and shown once. The name is
//! reserved: `/secrets` and `rdev secret` neither list, set nor delete it and no secret plan
//! may inject it, so this module (`POST /projects` and `POST /projects/{name}/webhook-secret`)
//! is the only writer and the dispatcher the only reader.

use async_trait::async_trait;
pub use rdev_core::secrets::WEBHOOK_SECRET_NAME;
use rdev_core::{
    secrets::{SecretName, SecretScope},
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

#[async_trait]
impl SigningKeys for SecretService {
    async fn signing_secret(&self, project: &ProjectName) -> Result<Option<SecretString>, String> {
        match self
            .read(
                &SecretScope::Project(project.clone()),
                &SecretName::webhook_secret(),
                "callback-dispatcher",
                "callback",
            )
            .await
        {
            Ok((_, value)) => Ok(Some(value)),
            Err(SecretError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
