//! `/projects`: create, list, show, change and delete projects. Names are validated slugs;
//! every bad field is a 422 naming the field. Handlers parse (names by
//! `rdev_core::ProjectName`, the other fields by [`validate`] below), call the store or
//! [`crate::project_service`] (which creates and deletes, uniqueness decided by the store),
//! and map the result; errors become responses in `super::error`.

use std::collections::BTreeMap;

use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    Json,
};
use rdev_core::{
    api_schema, credentials::InjectionPlan, project_model::validate_network_allow,
    validate_ci_repo, AgentProvider, AllowPattern, BranchName, Budget, Project, ProjectName,
    PushProtection, RepoUrl, ValidationError, WoodpeckerRepo,
};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::ErrorBody,
    extract::Path,
    project_schema::{Created, ProjectChange, ProjectList, WebhookSecret},
    ApiError, AppState,
};
use crate::{
    callbacks::keys::rotate_signing_secret,
    project_service::{create_project, delete_project, DeleteReport, NewProject},
};

/// Project routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(rotate_webhook_secret))
}

/// The body of `POST /projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[schema(value_type = ProjectName)]
    name: String,
    /// Absent: a new bare repository is created under the configured git root.
    #[serde(default)]
    #[schema(value_type = Option<RepoUrl>)]
    repo_url: Option<String>,
    /// Template variables; with `template`, an empty repository gets its first commit.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// The branch builds push to (default `main`).
    #[serde(default)]
    #[schema(value_type = Option<BranchName>)]
    default_branch: Option<String>,
    /// The template a new repository is created from (422 unknown_template).
    #[serde(default)]
    template: Option<String>,
    /// The repository's id in Woodpecker, when CI is followed.
    #[serde(default, deserialize_with = "rdev_core::json_int::opt")]
    #[schema(minimum = 1)]
    woodpecker_repo_id: Option<i64>,
    /// The Woodpecker repository's full name (`owner/name`), instead of its id.
    #[serde(default)]
    #[schema(value_type = Option<WoodpeckerRepo>)]
    woodpecker_repo: Option<String>,
    /// How to derive the deploy URL: an http(s) URL with the placeholders `{project}`,
    /// `{number}`, `{commit}` and `{short_commit}` only (422 invalid_field).
    #[serde(default)]
    #[schema(schema_with = api_schema::deploy_url_pattern_field)]
    deploy_url_pattern: Option<String>,
    /// The agent provider builds use when the request names none.
    #[serde(default)]
    #[schema(value_type = Option<AgentProvider>)]
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
    #[schema(schema_with = api_schema::push_protection_allow)]
    push_protection_allow: Vec<String>,
    /// `host:port` the project's agents may reach through the egress proxy.
    #[serde(default)]
    #[schema(schema_with = api_schema::network_allow)]
    network_allow: Vec<String>,
    /// The default budget of the project's builds.
    #[serde(default)]
    #[schema(schema_with = api_schema::max_cost_usd_field)]
    max_cost_usd: Option<f64>,
    #[serde(default, deserialize_with = "rdev_core::json_int::opt")]
    #[schema(schema_with = api_schema::max_tokens_field)]
    max_tokens: Option<u64>,
    /// How many builds of the project run at once (default 1: one after another, in
    /// submission order).
    #[serde(default, deserialize_with = "rdev_core::json_int::opt")]
    #[schema(minimum = 1, maximum = 64, default = 1)]
    max_parallel_builds: Option<u32>,
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
    woodpecker_repo: Option<&'a str>,
    max_parallel_builds: u32,
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
            woodpecker_repo: p.woodpecker_repo.as_ref().map(|r| r.as_str()),
            max_parallel_builds: p.max_parallel_builds,
        }
    }
}

/// Field rules beyond the name, in the order their errors are reported: a secret plan that
/// sets no fenced variable and names no reserved secret (`InjectionPlan::validate`), a
/// push protection allow-list of supported patterns (`rdev_core::AllowPattern`), a valid
/// budget and network allow-list, a usable repository URL ([`RepoUrl`]), a safe branch
/// name ([`BranchName`]), a deploy URL pattern with known placeholders, a positive
/// Woodpecker id or a Woodpecker repository name, not both, and `max_parallel_builds`
/// from 1 to 64. Returns the repository URL, branch and Woodpecker name parsed (when
/// given).
fn validate(f: Fields<'_>) -> Result<Parsed, ApiError> {
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
    let woodpecker_repo =
        validate_ci_repo(f.woodpecker_repo_id, f.woodpecker_repo).map_err(|e| invalid(&e))?;
    Project::validate_max_parallel_builds(f.max_parallel_builds).map_err(|e| invalid(&e))?;
    Ok((repo_url, branch, woodpecker_repo))
}

/// What [`validate`] parsed: the repository URL, branch and Woodpecker repository name.
type Parsed = (Option<RepoUrl>, Option<BranchName>, Option<WoodpeckerRepo>);

/// Parses the body of `POST /projects`; a 422 names the first bad field.
fn parse_new(body: CreateBody) -> Result<NewProject, ApiError> {
    let name = parse_name(&body.name)?;
    let provider = body
        .provider
        .map(|p| p.parse().map_err(|e: ValidationError| invalid(&e)))
        .transpose()?;
    let max_parallel_builds = body
        .max_parallel_builds
        .unwrap_or(Project::DEFAULT_MAX_PARALLEL_BUILDS);
    let (repo_url, default_branch, woodpecker_repo) = validate(Fields {
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
        woodpecker_repo: body.woodpecker_repo.as_deref(),
        max_parallel_builds,
    })?;
    Ok(NewProject {
        name,
        repo_url,
        default_branch: default_branch.unwrap_or_default(),
        template: body.template,
        variables: body.variables,
        woodpecker_repo_id: body.woodpecker_repo_id,
        woodpecker_repo,
        deploy_url_pattern: body.deploy_url_pattern,
        provider,
        secrets: body.secrets,
        push_protection: body.push_protection,
        push_protection_allow: body.push_protection_allow,
        network_allow: body.network_allow,
        max_cost_usd: body.max_cost_usd,
        max_tokens: body.max_tokens,
        max_parallel_builds,
    })
}

fn to_json(p: &Project) -> Value {
    json!(p)
}

/// Creates a project: its row, then the repository (a new bare one unless `repo_url` is
/// given), the template's first commit and the callback signing secret, all undone if a
/// step fails. The signing secret is shown once.
#[utoipa::path(post, path = "/projects", operation_id = "create_project", tag = "projects",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created.", body = Created, links(
            ("build" = (operation_id = "build", parameters(("name" = "$response.body#/name")))),
            ("project" = (operation_id = "get_project", parameters(("name" = "$response.body#/name")))),
        )),
        (status = 409, description = "codes: conflict, repository_exists", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name, invalid_provider, \
            invalid_field, reserved_env_name, reserved_secret_name, unknown_template, \
            unknown_variable, missing_variable, invalid_variable, secret_in_commit", body = ErrorBody),
        (status = 502, description = "codes: git_failed, git_timeout, git_unavailable, \
            git_io_error, git_parse_error, git_not_fast_forward, template_escape, undeclared_placeholder, \
            invalid_template, template_io", body = ErrorBody),
        (status = 503, description = "codes: master_key_mismatch, master_key_invalid, \
            master_key_file_insecure, master_key_file_error", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let Json(body) = body?;
    let created = create_project(&state, parse_new(body)?, "api").await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            project: created.project,
            initial_commit: created.initial_commit,
            // Shown once: callbacks are signed with it (Standard Webhooks).
            webhook_secret: created.webhook_secret.expose().to_owned(),
        }),
    ))
}

/// Replaces the project's callback signing secret and shows the new one once.
#[utoipa::path(post, path = "/projects/{name}/webhook-secret", operation_id = "rotate_webhook_secret",
    tag = "projects", params(("name" = ProjectName, Path, description = "The project.")),
    responses(
        (status = 200, description = "The new signing secret, shown once.", body = WebhookSecret),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name", body = ErrorBody),
        (status = 503, description = "codes: master_key_mismatch, master_key_invalid, \
            master_key_file_insecure, master_key_file_error", body = ErrorBody),
    ))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let name = parse_name(&name)?;
    state.store.get_project(&name).await?;
    let secret = rotate_signing_secret(&state.secrets, &name, "api")
        .await
        .map_err(|e| ApiError::from_code(StatusCode::SERVICE_UNAVAILABLE, &e))?;
    Ok(Json(WebhookSecret {
        project: name,
        webhook_secret: secret.expose().to_owned(),
    }))
}

/// Every project.
#[utoipa::path(get, path = "/projects", operation_id = "list_projects", tag = "projects",
    responses((status = 200, description = "The projects.", body = ProjectList)))]
async fn list(State(state): State<AppState>) -> Result<Json<ProjectList>, ApiError> {
    let projects = state.store.list_projects().await?;
    Ok(Json(ProjectList { projects }))
}

/// One project.
#[utoipa::path(get, path = "/projects/{name}", operation_id = "get_project", tag = "projects",
    params(("name" = ProjectName, Path, description = "The project.")),
    responses(
        (status = 200, description = "The project.", body = Project),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Project>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(state.store.get_project(&name).await?))
}

/// `PATCH` is a JSON merge patch (RFC 7396) of the project's fields; `name` cannot change.
#[utoipa::path(patch, path = "/projects/{name}", operation_id = "update_project", tag = "projects",
    params(("name" = ProjectName, Path, description = "The project.")),
    request_body(content = ProjectChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed project.", body = Project),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: conflict", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name, unknown_field, \
            invalid_field, invalid_provider, reserved_env_name, reserved_secret_name, \
            unknown_template", body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Project>, ApiError> {
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
    let (repo_url, branch, woodpecker_repo) = validate(Fields::of(&updated))?;
    updated.repo_url = repo_url.unwrap_or(updated.repo_url);
    updated.default_branch = branch.unwrap_or(updated.default_branch);
    updated.woodpecker_repo = woodpecker_repo;
    super::check_template(&state, updated.template.as_deref())?;
    state.store.update_project(&updated).await?;
    Ok(Json(updated))
}

/// Deletes the project completely (see [`delete_project`]) and answers with what was done,
/// including a repository that could not be removed.
#[utoipa::path(delete, path = "/projects/{name}", operation_id = "delete_project", tag = "projects",
    params(("name" = ProjectName, Path, description = "The project.")),
    responses(
        (status = 200, description = "What was deleted.", body = DeleteReport),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: conflict", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeleteReport>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(delete_project(&state, &name, "api").await?))
}
