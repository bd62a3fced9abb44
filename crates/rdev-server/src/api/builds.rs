//! `POST /project/{name}/build`: validate everything that can be checked before work starts
//! (project, template and variables, prompt and timeout, provider and its model
//! credentials, callback URL, body size), then insert the task and its queue row in one
//! transaction and answer `202 {"task_id","status":"queued"}` at once. `Idempotency-Key`
//! returns the same task for the same request, and refuses (422 `idempotency_key_reused`) a
//! different request under a key already used: requests are compared by
//! [`BuildSpec::fingerprint`] of the validated spec, so layout, key order and explicit
//! defaults do not count as differences.

use axum::{
    extract::{rejection::JsonRejection, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use rdev_core::{BuildSpec, NewTask, ProjectName, TaskId, TaskStatus};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::ErrorBody, extract::Path, project_routes::parse_name, ApiError, AppState};
use crate::{callbacks::url_policy::check_url, doctor::credentials::check_configured};

/// Build routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(build))
}

/// A queued build: the task to follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub task_id: TaskId,
    pub status: TaskStatus,
    /// `false` when an earlier request with the same Idempotency-Key created the task.
    pub created: bool,
}

/// The longest Idempotency-Key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Queues a build of the project and answers at once; follow the task with
/// `GET /tasks/{id}` or `/events`, or wait for the callback.
#[utoipa::path(post, path = "/project/{name}/build", operation_id = "build", tag = "builds",
    params(
        ("name" = ProjectName, Path, description = "The project."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 200,
            pattern = "^[\\t -~]*$",
            description = "Repeating a request with the same key answers 200 with the \
                original task; a different request under a used key answers 422 \
                idempotency_key_reused."),
    ),
    request_body = BuildSpec,
    responses(
        (status = 202, description = "Queued.", body = Queued, links(
            ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
            ("events" = (operation_id = "task_events", parameters(("id" = "$response.body#/task_id")))),
            ("cancel" = (operation_id = "cancel_task", parameters(("id" = "$response.body#/task_id")))),
        )),
        (status = 200, description = "The task an earlier request with the same \
            Idempotency-Key and body created.", body = Queued, links(
            ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
            ("events" = (operation_id = "task_events", parameters(("id" = "$response.body#/task_id")))),
            ("cancel" = (operation_id = "cancel_task", parameters(("id" = "$response.body#/task_id")))),
        )),
        (status = 400, description = "codes: invalid_idempotency_key", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: conflict", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name, prompt_required, \
            prompt_too_large, invalid_timeout, invalid_model, invalid_session_id, \
            invalid_field, unknown_template, unknown_variable, missing_variable, \
            invalid_variable, invalid_callback_url, invalid_callback_url_scheme, \
            callback_url_has_credentials, private_callback_url, unknown_provider, \
            agent_not_configured, unknown_session, idempotency_key_reused", body = ErrorBody),
    ))]
async fn build(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<BuildSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let name = parse_name(&name)?;
    let project = state.store.get_project(&name).await?;
    let Json(spec) = body?;
    let spec = validate_spec(&state, &project, spec)?;
    crate::sessions::check_resumable_spec(&state, &project, &spec).await?;
    let unique_key = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 200 visible ASCII characters",
                    )
                })?;
            Some(key.to_owned())
        }
        None => None,
    };
    let mut task = NewTask::new(name, spec);
    task.unique_key = unique_key;
    let enqueued = state.store.create(task).await?;
    let t = &enqueued.task;
    if enqueued.key_reused {
        return Err(unprocessable(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key was already used for task {} with a different request; \
                 send that request again to get the task, or use a new key",
                t.id
            ),
        ));
    }
    tracing::info!(task_id = %t.id, project = %t.project, created = enqueued.created, "build accepted");
    let status = if enqueued.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Queued {
            task_id: t.id,
            status: t.status,
            created: enqueued.created,
        }),
    ))
}

/// Everything about a spec that can be known before queueing. Returns the spec with the
/// template's variable defaults filled in.
fn validate_spec(
    state: &AppState,
    project: &rdev_core::Project,
    mut spec: BuildSpec,
) -> Result<BuildSpec, ApiError> {
    spec.validate(&state.config.limits())
        .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    // A template named by the request is always checked; the project's own template only
    // when the request gives variables (later builds on an existing repository need none).
    let template = match spec.template.as_deref() {
        Some(t) => Some(t),
        None if !spec.variables.is_empty() => project.template.as_deref(),
        None => None,
    };
    if let Some(template) = template {
        spec.variables = state
            .templates
            .validate_variables(template, &spec.variables)
            .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    } else if !spec.variables.is_empty() {
        return Err(unprocessable(
            "invalid_field",
            "invalid variables: variables need a template (in the request or the project)",
        ));
    }
    if let Some(url) = &spec.callback_url {
        check_url(url, state.config.allow_private_callbacks)
            .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    }
    let provider = spec.provider.as_ref().or(project.provider.as_ref());
    if let Some(p) = provider {
        let available = state.registry.list();
        if !available.iter().any(|a| a == p) {
            return Err(unprocessable(
                "unknown_provider",
                format!(
                    "unknown provider {p}; available: {}",
                    available
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    // The provider the worker will use: the request's, the project's, else the default.
    let resolved = match provider {
        Some(p) => Some(p.to_string()),
        None => state.registry.list().first().map(ToString::to_string),
    };
    if let Some(id) = resolved {
        check_configured(&state.config, &id)
            .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    }
    Ok(spec)
}
