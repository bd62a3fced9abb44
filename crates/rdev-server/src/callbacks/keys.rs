//! Each project's callback signing secret lives in the credential store (scope
//! `project:<name>`, name [`WEBHOOK_SECRET_NAME`]), encrypted like every other secret and
//! audited on every read. It is created with the project and shown once.

use async_trait::async_trait;
use rdev_core::{
    secrets::{SecretName, SecretScope},
    ProjectName, SecretString,
};

use super::{dispatcher::SigningKeys, signing::generate_secret};
use crate::secrets::{SecretError, SecretService};

/// The secret name holding a project's `whsec_` signing secret.
pub const WEBHOOK_SECRET_NAME: &str = "RDEV_WEBHOOK_SECRET";

fn name() -> SecretName {
    SecretName::parse(WEBHOOK_SECRET_NAME).expect("a valid secret name")
}

/// Creates (or replaces) `project`'s signing secret and returns it, to be shown once.
pub async fn rotate_signing_secret(
    secrets: &SecretService,
    project: &ProjectName,
    actor: &str,
) -> Result<SecretString, SecretError> {
    let secret = generate_secret();
    secrets
        .set(
            &SecretScope::Project(project.clone()),
            &name(),
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
                &name(),
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
