//! `/projects`: create, list, show, change and delete projects. Names are validated slugs;
//! every bad field is a 422 naming the field. Names are checked by `rdev_core::ProjectName`,
//! the other fields by [`validate`] below, uniqueness by the store.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};

use super::extract::Path;
use rdev_core::{
    credentials::InjectionPlan, ErrorCode, Project, ProjectName, PushProtection, ValidationError,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::{
    callbacks::keys::rotate_signing_secret,
    git::{GitEnv, GitError, GitWorkspaces},
    project_service::{delete_project, initialise_repository, InitError},
    scan::{rdev_secrets, Scanner},
};

/// Project routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{name}", get(show).patch(update).delete(remove))
        .route(
            "/projects/{name}/webhook-secret",
            post(rotate_webhook_secret),
        )
}

/// The body of `POST /projects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    /// Absent: a new bare repository is created under the configured git root.
    #[serde(default)]
    repo_url: Option<String>,
    /// Template variables; with `template`, an empty repository gets its first commit.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    woodpecker_repo_id: Option<i64>,
    #[serde(default)]
    deploy_url_pattern: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    /// Secrets builds receive: `{"env": [["VAR", "SECRET_NAME"]], "git_token": "NAME"}`;
    /// checked by [`validate`].
    #[serde(default)]
    secrets: InjectionPlan,
    /// `block` (default) or `warn`: what a secret found in a build's commits does.
    #[serde(default)]
    push_protection: PushProtection,
    /// Glob patterns of known test fixtures; checked by [`validate`].
    #[serde(default)]
    push_protection_allow: Vec<String>,
    /// `host:port` the project's agents may reach through the egress proxy.
    #[serde(default)]
    network_allow: Vec<String>,
    /// The default budget of the project's builds.
    #[serde(default)]
    max_cost_usd: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

fn invalid(e: &ValidationError) -> ApiError {
    ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, e)
}

fn field(field: &'static str, reason: impl Into<String>) -> ApiError {
    invalid(&ValidationError::InvalidField {
        field,
        reason: reason.into(),
    })
}

/// Parses a project name from a path or body, answering 422 with the reason.
pub fn parse_name(name: &str) -> Result<ProjectName, ApiError> {
    ProjectName::parse(name).map_err(|e| invalid(&e))
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

/// Field rules beyond the name: a usable repository URL, a safe branch name, a provider
/// id, a deploy URL pattern with known placeholders, a secret plan that sets no fenced
/// variable and names no reserved secret (`InjectionPlan::validate`), and a push
/// protection allow-list of supported patterns (`rdev_core::AllowPattern`).
fn validate(p: &Project) -> Result<(), ApiError> {
    p.secrets.validate().map_err(|e| invalid(&e))?;
    p.push_protection_allow().map_err(|e| invalid(&e))?;
    p.validate_gateway().map_err(|e| invalid(&e))?;
    let url = p.repo_url.trim();
    if url.is_empty()
        || url.len() > 2048
        || url.starts_with('-')
        || url.contains(char::is_whitespace)
    {
        return Err(field(
            "repo_url",
            "must be a git URL or path, without spaces, not starting with '-'",
        ));
    }
    if has_credentials(url) {
        return Err(field(
            "repo_url",
            "must not contain credentials; store the token as a project secret",
        ));
    }
    let b = &p.default_branch;
    let branch_ok = !b.is_empty()
        && b.len() <= 200
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    if !branch_ok {
        return Err(field(
            "default_branch",
            format!("{b:?} is not a valid branch name"),
        ));
    }
    if let Some(pattern) = &p.deploy_url_pattern {
        crate::woodpecker::validate_deploy_url_pattern(pattern)
            .map_err(|e| field("deploy_url_pattern", e.to_string()))?;
    }
    if let Some(id) = p.woodpecker_repo_id {
        if id <= 0 {
            return Err(field("woodpecker_repo_id", "must be a positive id"));
        }
    }
    Ok(())
}

/// The scanner for the first commit of a new project: rdev's own secrets and the rule
/// set, with the project's allow-list (no build has handed out anything yet).
fn push_scanner(state: &AppState, p: &Project) -> Result<Arc<Scanner>, ApiError> {
    let allow = p.push_protection_allow().map_err(|e| invalid(&e))?;
    let own = rdev_secrets(&state.config);
    let known = own.iter().map(|(k, v)| (k.as_str(), v.expose()));
    Ok(Arc::new(Scanner::new(known, allow)))
}

fn to_json(p: &Project) -> Value {
    json!(p)
}

async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let name = parse_name(&body.name)?;
    let new_repo = body.repo_url.is_none();
    // Where the repository rdev creates will be (absolute, so the recorded fact does not
    // depend on the working directory of a later process).
    let planned = new_repo
        .then(|| std::path::absolute(state.config.git_root().join(format!("{name}.git"))))
        .transpose()
        .map_err(ApiError::internal)?
        .map(|p| p.to_string_lossy().into_owned());
    let project = Project {
        repo_url: body
            .repo_url
            .or_else(|| planned.clone())
            .unwrap_or_default(),
        created_repo: planned,
        name,
        default_branch: body.default_branch.unwrap_or_else(|| "main".to_owned()),
        template: body.template,
        woodpecker_repo_id: body.woodpecker_repo_id,
        deploy_url_pattern: body.deploy_url_pattern,
        provider: body
            .provider
            .map(|p| p.parse().map_err(|e: ValidationError| invalid(&e)))
            .transpose()?,
        secrets: body.secrets,
        push_protection: body.push_protection,
        push_protection_allow: body.push_protection_allow,
        network_allow: body.network_allow,
        max_cost_usd: body.max_cost_usd,
        max_tokens: body.max_tokens,
    };
    validate(&project)?;
    state.check_template(project.template.as_deref())?;
    // Only a repository rdev creates now, or one given with variables, is initialised from
    // the template; an existing repository with history is never rendered over.
    let render = new_repo || !body.variables.is_empty();
    let vars = match &project.template {
        Some(t) if render => state
            .templates
            .validate_variables(t, &body.variables)
            .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?,
        None if !body.variables.is_empty() => {
            return Err(field("variables", "variables need a template"));
        }
        _ => BTreeMap::new(),
    };
    match state.store.get_project(&project.name).await {
        Ok(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("conflict: project {} already exists", project.name),
            ))
        }
        Err(rdev_core::StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if new_repo {
        GitWorkspaces::create_bare_repo(
            &state.config.git_root(),
            &project.name,
            &project.default_branch,
        )
        .await
        .map_err(|e| match e {
            GitError::RepositoryExists(_) => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            e => ApiError::internal(&e),
        })?;
    }
    let stored = async {
        let initial_commit = match &project.template {
            Some(t) if render => initialise_repository(
                &state.git,
                &state.templates,
                &project,
                t,
                &vars,
                &state.config.author(),
                &GitEnv::default(),
                push_scanner(&state, &project)?,
            )
            .await
            .map_err(|e| {
                // A secret in the variables is the request's fault, not the remote's.
                let status = match e {
                    InitError::SecretInCommit(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::BAD_GATEWAY,
                };
                ApiError::new(
                    status,
                    e.code(),
                    format!("could not initialise the repository: {e}"),
                )
            })?,
            _ => None,
        };
        state.store.create_project(&project).await?;
        Ok::<_, ApiError>(initial_commit)
    }
    .await;
    let initial_commit = match stored {
        Ok(sha) => sha,
        Err(e) => {
            // The repository was created exclusively by this request: nobody else has it.
            if let Some(created) = &project.created_repo {
                if let Err(rm) = tokio::fs::remove_dir_all(created).await {
                    tracing::warn!(path = %created, error = %rm, "could not remove the repository of a failed project creation");
                }
                state.git.forget(&project.name).await;
            }
            return Err(e);
        }
    };
    let secret = rotate_signing_secret(&state.secrets, &project.name, "api")
        .await
        .map_err(|e| ApiError::from_code(StatusCode::SERVICE_UNAVAILABLE, &e))?;
    let mut out = to_json(&project);
    out["initial_commit"] = json!(initial_commit);
    // Shown once: callbacks are signed with it (Standard Webhooks).
    out["webhook_secret"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(out)))
}

/// Replaces the project's callback signing secret and shows the new one once.
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    state.store.get_project(&name).await?;
    let secret = rotate_signing_secret(&state.secrets, &name, "api")
        .await
        .map_err(|e| ApiError::from_code(StatusCode::SERVICE_UNAVAILABLE, &e))?;
    Ok(Json(
        json!({"project": name, "webhook_secret": secret.expose()}),
    ))
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let projects = state.store.list_projects().await?;
    Ok(Json(json!({"projects": projects})))
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(to_json(&state.store.get_project(&name).await?)))
}

/// `PATCH` is a JSON merge patch (RFC 7396) of the project's fields; `name` cannot change.
async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(patch) = body?;
    let name = parse_name(&name)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "PATCH body must be a JSON object",
        ));
    };
    let current = state.store.get_project(&name).await?;
    let mut merged = to_json(&current);
    for (k, v) in patch {
        if k == "name" && v != json!(name.as_str()) {
            return Err(field("name", "a project cannot be renamed"));
        }
        if k == "created_repo" && v != merged[&k] {
            return Err(field(
                "created_repo",
                "is recorded by rdev when it creates the repository and cannot be changed",
            ));
        }
        if !merged.as_object().is_some_and(|o| o.contains_key(&k)) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_field",
                format!("unknown project field {k:?}"),
            ));
        }
        merged[&k] = v;
    }
    let updated: Project = serde_json::from_value(merged).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.to_string(),
        )
    })?;
    validate(&updated)?;
    state.check_template(updated.template.as_deref())?;
    state.store.update_project(&updated).await?;
    Ok(Json(to_json(&updated)))
}

/// Deletes the project completely (see [`delete_project`]) and answers with what was done,
/// including a repository that could not be removed.
async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    let report = delete_project(
        state.store.as_ref(),
        &state.git,
        &state.cancels,
        &state.config.git_root(),
        &name,
        "api",
    )
    .await?;
    Ok(Json(json!(report)))
}

impl From<rdev_core::StoreError> for ApiError {
    fn from(e: rdev_core::StoreError) -> Self {
        use rdev_core::StoreError as E;
        let status = match &e {
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Conflict(_) | E::LeaseLost { .. } | E::InvalidTransition(_) => StatusCode::CONFLICT,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Corrupt(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::has_credentials;

    #[test]
    fn user_names_that_are_not_secrets_are_allowed() {
        for url in [
            "ssh://git@git.example/p.git",
            "git@git.example:org/p.git",
            "https://git.example/p.git",
            "/srv/git/p.git",
            "file:///srv/git/p.git",
        ] {
            assert!(!has_credentials(url), "{url}");
        }
        for url in [
            "https://tok@git.example/p.git",
            "http://u:tok@git.example/p.git",
            "ssh://git:tok@git.example/p.git",
        ] {
            assert!(has_credentials(url), "{url}");
        }
    }
}
