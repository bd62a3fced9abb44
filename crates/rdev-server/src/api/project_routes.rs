//! `/projects`: create, list, show, change and delete projects. Names are validated slugs;
//! every bad field is a 422 naming the field. Handlers parse (names by
//! `rdev_core::ProjectName`, the other fields by [`validate`] below), call the store or
//! [`crate::project_service`] (which creates and deletes, uniqueness decided by the store),
//! and map the result; errors become responses in `super::error`.

use std::collections::BTreeMap;

use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};

use super::extract::Path;
use rdev_core::{
    credentials::InjectionPlan, project_model::validate_network_allow, AllowPattern, BranchName,
    Budget, Project, ProjectName, PushProtection, RepoUrl, ValidationError,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::{
    callbacks::keys::rotate_signing_secret,
    project_service::{create_project, delete_project, NewProject},
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

/// The fields of a project checked beyond its name, from a request or a merged change.
struct Fields<'a> {
    secrets: &'a InjectionPlan,
    push_protection_allow: &'a [String],
    budget: Budget,
    network_allow: &'a [String],
    repo_url: Option<&'a str>,
    default_branch: Option<&'a str>,
    deploy_url_pattern: Option<&'a str>,
    woodpecker_repo_id: Option<i64>,
}

impl<'a> Fields<'a> {
    fn of(p: &'a Project) -> Self {
        Self {
            secrets: &p.secrets,
            push_protection_allow: &p.push_protection_allow,
            budget: p.budget(),
            network_allow: &p.network_allow,
            repo_url: Some(p.repo_url.as_str()),
            default_branch: Some(p.default_branch.as_str()),
            deploy_url_pattern: p.deploy_url_pattern.as_deref(),
            woodpecker_repo_id: p.woodpecker_repo_id,
        }
    }
}

/// Field rules beyond the name, in the order their errors are reported: a secret plan that
/// sets no fenced variable and names no reserved secret (`InjectionPlan::validate`), a
/// push protection allow-list of supported patterns (`rdev_core::AllowPattern`), a valid
/// budget and network allow-list, a usable repository URL ([`RepoUrl`]), a safe branch
/// name ([`BranchName`]), a deploy URL pattern with known placeholders and a positive
/// Woodpecker id. Returns the repository URL and branch parsed (when given).
fn validate(f: Fields<'_>) -> Result<(Option<RepoUrl>, Option<BranchName>), ApiError> {
    f.secrets.validate().map_err(|e| invalid(&e))?;
    AllowPattern::parse_all(f.push_protection_allow).map_err(|e| invalid(&e))?;
    f.budget.validate().map_err(|e| invalid(&e))?;
    validate_network_allow(f.network_allow).map_err(|e| invalid(&e))?;
    let repo_url = f
        .repo_url
        .map(RepoUrl::parse)
        .transpose()
        .map_err(|e| invalid(&e))?;
    let branch = f
        .default_branch
        .map(BranchName::parse)
        .transpose()
        .map_err(|e| invalid(&e))?;
    if let Some(pattern) = f.deploy_url_pattern {
        crate::woodpecker::validate_deploy_url_pattern(pattern)
            .map_err(|e| field("deploy_url_pattern", e.to_string()))?;
    }
    if let Some(id) = f.woodpecker_repo_id {
        if id <= 0 {
            return Err(field("woodpecker_repo_id", "must be a positive id"));
        }
    }
    Ok((repo_url, branch))
}

/// Parses the body of `POST /projects`; a 422 names the first bad field.
fn parse_new(body: CreateBody) -> Result<NewProject, ApiError> {
    let name = parse_name(&body.name)?;
    let provider = body
        .provider
        .map(|p| p.parse().map_err(|e: ValidationError| invalid(&e)))
        .transpose()?;
    let (repo_url, default_branch) = validate(Fields {
        secrets: &body.secrets,
        push_protection_allow: &body.push_protection_allow,
        budget: Budget {
            max_cost_usd: body.max_cost_usd,
            max_tokens: body.max_tokens,
        },
        network_allow: &body.network_allow,
        repo_url: body.repo_url.as_deref(),
        default_branch: body.default_branch.as_deref(),
        deploy_url_pattern: body.deploy_url_pattern.as_deref(),
        woodpecker_repo_id: body.woodpecker_repo_id,
    })?;
    Ok(NewProject {
        name,
        repo_url,
        default_branch: default_branch.unwrap_or_default(),
        template: body.template,
        variables: body.variables,
        woodpecker_repo_id: body.woodpecker_repo_id,
        deploy_url_pattern: body.deploy_url_pattern,
        provider,
        secrets: body.secrets,
        push_protection: body.push_protection,
        push_protection_allow: body.push_protection_allow,
        network_allow: body.network_allow,
        max_cost_usd: body.max_cost_usd,
        max_tokens: body.max_tokens,
    })
}

fn to_json(p: &Project) -> Value {
    json!(p)
}

async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let created = create_project(&state, parse_new(body)?, "api").await?;
    let mut out = to_json(&created.project);
    out["initial_commit"] = json!(created.initial_commit);
    // Shown once: callbacks are signed with it (Standard Webhooks).
    out["webhook_secret"] = json!(created.webhook_secret.expose());
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
    let mut updated: Project = serde_json::from_value(merged).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.to_string(),
        )
    })?;
    let (repo_url, branch) = validate(Fields::of(&updated))?;
    updated.repo_url = repo_url.unwrap_or(updated.repo_url);
    updated.default_branch = branch.unwrap_or(updated.default_branch);
    super::check_template(&state, updated.template.as_deref())?;
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
    let report = delete_project(&state, &name, "api").await?;
    Ok(Json(json!(report)))
}
