//! Projects (`/ui/projects`): the list, one project (settings and recent builds, rotate its
//! webhook secret), and creating one from a template with the template's variables as a
//! form. Creating and rotating go through the API as the viewer (`POST /projects`,
//! `POST /projects/{name}/webhook-secret`); the new secret is shown once, on the answer
//! page, and never stored by the UI.
//!
//! It must not show a project the viewer's token is not limited to, nor offer what its
//! scope does not allow.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Form, Router,
};
use maud::{html, Markup};
use rdev_core::{Action, Project, ProjectName, StoreError, TaskFilter};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    api_client,
    builds::{store_error, table},
    forms::{self, text_field, variables_of, Errors, Kind},
    layout::{self, Section},
    session::Viewer,
    UiState,
};

/// The project routes.
pub fn router() -> Router<UiState> {
    Router::new()
        .route("/ui/projects", get(list))
        .route("/ui/projects/new", get(new_page).post(create))
        .route("/ui/projects/{name}", get(show))
        .route("/ui/projects/{name}/webhook-secret", post(rotate))
}

/// API error codes and the field each is about.
const FIELDS: &[(&str, &str)] = &[
    ("invalid_project_name", "name"),
    ("conflict", "name"),
    ("unknown_template", "template"),
    ("invalid_provider", "provider"),
];
/// Fields an `invalid_field` refusal may name on this form.
const NAMED: &[&str] = &[
    "repo_url",
    "deploy_url_pattern",
    "woodpecker_repo_id",
    "default_branch",
];

/// Projects the viewer may read, by name.
async fn readable(ui: &UiState, viewer: &Viewer) -> Result<Vec<Project>, StoreError> {
    Ok(ui
        .services
        .store
        .list_projects()
        .await?
        .into_iter()
        .filter(|p| viewer.can(Action::Read, Some(&p.name)))
        .collect())
}

async fn list(State(ui): State<UiState>, viewer: Viewer) -> Response {
    let projects = match readable(&ui, &viewer).await {
        Ok(p) => p,
        Err(e) => return store_error(&viewer, &e),
    };
    let body = html! {
        h1 { "Projects" }
        @if viewer.can(Action::Admin, None) {
            p { a.button href="/ui/projects/new" { "New project" } }
        }
        @if projects.is_empty() {
            p.muted { "No projects you can see." }
        } @else {
            table.rows {
                thead { tr { th { "Name" } th { "Template" } th { "Repository" } th { "Provider" } } }
                tbody { @for p in &projects { tr {
                    td data-label="Name" { a href=(format!("/ui/projects/{}", p.name)) { (p.name) } }
                    td data-label="Template" { (p.template.as_deref().unwrap_or("–")) }
                    td data-label="Repository" { code.wrap { (p.repo_url.as_str()) } }
                    td data-label="Provider" { (p.provider.as_ref().map_or("default".to_owned(), ToString::to_string)) }
                } } }
            }
        }
    };
    layout::page("Projects", Some(&viewer), Some(Section::Projects), body).into_response()
}

async fn load(ui: &UiState, viewer: &Viewer, name: &str) -> Result<Project, Response> {
    let missing = || {
        (
            StatusCode::NOT_FOUND,
            layout::error_page(
                Some(viewer),
                "Not found",
                &format!("No project {name} here."),
            ),
        )
            .into_response()
    };
    let Ok(name) = ProjectName::parse(name) else {
        return Err(missing());
    };
    if !viewer.can(Action::Read, Some(&name)) {
        return Err(missing());
    }
    match ui.services.store.get_project(&name).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound { .. }) => Err(missing()),
        Err(e) => Err(store_error(viewer, &e)),
    }
}

async fn show(State(ui): State<UiState>, viewer: Viewer, Path(name): Path<String>) -> Response {
    let project = match load(&ui, &viewer, &name).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let recent = TaskFilter {
        project: Some(project.name.clone()),
        limit: 20,
        ..TaskFilter::default()
    };
    let tasks = match ui.services.store.list(&recent).await {
        Ok(t) => t,
        Err(e) => return store_error(&viewer, &e),
    };
    let body = html! {
        h1 { "Project " (project.name) }
        @if viewer.can(Action::Build, Some(&project.name)) {
            p { a.button href=(format!("/ui/builds/new?project={}", project.name)) { "New build" } }
        }
        h2 { "Settings" }
        (settings(&project))
        @if viewer.can(Action::Admin, Some(&project.name)) {
            h2 { "Webhook secret" }
            p { "Callbacks are signed with the project's secret (Standard Webhooks). Rotating it shows the new one once; receivers must be given it." }
            form method="post" action=(format!("/ui/projects/{}/webhook-secret", project.name)) {
                button.secondary #rotate-secret type="submit" { "Rotate webhook secret" }
            }
        }
        h2 { "Recent builds" }
        @if tasks.is_empty() { p.muted { "No builds yet." } } @else { (table(&tasks)) }
    };
    layout::page("Project", Some(&viewer), Some(Section::Projects), body).into_response()
}

fn settings(p: &Project) -> Markup {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".to_owned());
    html! {
        dl.facts.card {
            dt { "Repository" } dd { code.wrap { (p.repo_url.as_str()) } }
            dt { "Branch" } dd { (p.default_branch.as_str()) }
            dt { "Template" } dd { (opt(p.template.clone())) }
            dt { "Provider" } dd { (p.provider.as_ref().map_or("default".to_owned(), ToString::to_string)) }
            dt { "Deploy URL pattern" } dd { code.wrap { (opt(p.deploy_url_pattern.clone())) } }
            dt { "Woodpecker repository" } dd { (opt(p.woodpecker_repo_id.map(|i| i.to_string()))) }
            dt { "Push protection" } dd { (json!(p.push_protection).as_str().unwrap_or("")) }
            dt { "Builds at once" } dd { (p.max_parallel_builds) }
            dt { "Network allow-list" } dd { @if p.network_allow.is_empty() { "none" } @else { (p.network_allow.join(", ")) } }
            dt { "Budget" } dd {
                (p.max_cost_usd.map_or("no cost limit".to_owned(), layout::usd)) " · "
                (p.max_tokens.map_or("no token limit".to_owned(), |t| format!("{} tokens", layout::count(t))))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct NewQuery {
    template: Option<String>,
}

async fn new_page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<NewQuery>,
) -> Response {
    let Some(template) = q.template else {
        return choose_template(&ui, &viewer);
    };
    let mut values = BTreeMap::new();
    values.insert("template".to_owned(), template);
    project_form(&ui, &viewer, &values, &Errors::default(), StatusCode::OK)
}

fn choose_template(ui: &UiState, viewer: &Viewer) -> Response {
    let body = html! {
        h1 { "New project" }
        p { "A project is a repository rdev builds in. Start from a template (its first commit is rendered from your answers) or from nothing." }
        h2 { "Choose a template" }
        ul.stack {
            @for t in ui.services.templates.list() {
                li.card {
                    h3 { (t.name()) }
                    p { (t.description()) }
                    a.button href=(format!("/ui/projects/new?template={}", t.name())) { "Use " (t.name()) }
                }
            }
            li.card {
                h3 { "No template" }
                p { "An empty repository, or one you already have." }
                a.button.secondary href="/ui/projects/new?template=" { "Start empty" }
            }
        }
    };
    layout::page("New project", Some(viewer), Some(Section::Projects), body).into_response()
}

fn project_form(
    ui: &UiState,
    viewer: &Viewer,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let v = |k: &str| values.get(k).map_or("", String::as_str);
    let template = ui
        .services
        .templates
        .get(v("template"))
        .ok()
        .map(|t| t.info());
    let vars: BTreeMap<String, String> = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(forms::VAR_PREFIX)?.to_owned(), v.clone())))
        .collect();
    let providers: Vec<(String, String)> = ui
        .services
        .registry
        .list()
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
    let shown = [
        "name",
        "template",
        "repo_url",
        "provider",
        "deploy_url_pattern",
        "woodpecker_repo_id",
    ];
    let title = match &template {
        Some(t) => format!("New project from {}", t.name),
        None => "New project".to_owned(),
    };
    let body = html! {
        h1 { (title) }
        form #new-project .stack method="post" action="/ui/projects/new" {
            (errors.summary(&shown))
            input type="hidden" name="template" value=(v("template"));
            @if let Some(e) = errors.get("template") { p.field-error { (e) } }
            (text_field("name", "Project name", v("name"), Some("Lowercase letters, digits and dashes."), Kind::Text, true, errors))
            @if let Some(t) = &template { (forms::variable_fields(t, &vars, errors)) }
            details open[!errors.is_empty() && shown[2..].iter().any(|f| errors.get(f).is_some())] {
                summary { "More settings" }
                div.stack {
                    (text_field("repo_url", "Repository URL", v("repo_url"), Some("Leave empty for a new repository kept by rdev."), Kind::Text, false, errors))
                    (forms::select_field("provider", "Agent provider", &providers, v("provider"), Some("Server default"), errors))
                    (text_field("deploy_url_pattern", "Deploy URL pattern", v("deploy_url_pattern"), Some("e.g. https://{project}.example.com"), Kind::Text, false, errors))
                    (text_field("woodpecker_repo_id", "Woodpecker repository id", v("woodpecker_repo_id"), None, Kind::Number, false, errors))
                }
            }
            div { button #create-project type="submit" { "Create project" } }
        }
    };
    (
        status,
        layout::page("New project", Some(viewer), Some(Section::Projects), body),
    )
        .into_response()
}

async fn create(
    State(ui): State<UiState>,
    viewer: Viewer,
    Form(values): Form<BTreeMap<String, String>>,
) -> Response {
    let mut errors = Errors::default();
    let name = forms::value(&values, "name").unwrap_or("");
    if let Err(e) = ProjectName::parse(name) {
        errors.add("name", e.to_string());
    }
    let template = forms::value(&values, "template");
    let variables = variables_of(&values);
    if let Some(t) = template {
        if let Err(e) = ui.services.templates.validate_variables(t, &variables) {
            errors.template(&e);
        }
    }
    let woodpecker = forms::value(&values, "woodpecker_repo_id").map(str::parse::<i64>);
    if let Some(Err(_)) = woodpecker {
        errors.add("woodpecker_repo_id", "must be a whole number");
    }
    if !errors.is_empty() {
        return project_form(
            &ui,
            &viewer,
            &values,
            &errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(name));
    if let Some(t) = template {
        body.insert("template".into(), json!(t));
        body.insert("variables".into(), json!(variables));
    }
    for key in ["repo_url", "provider", "deploy_url_pattern"] {
        if let Some(v) = forms::value(&values, key) {
            body.insert(key.into(), json!(v));
        }
    }
    if let Some(Ok(id)) = woodpecker {
        body.insert("woodpecker_repo_id".into(), json!(id));
    }
    match api_client::call(
        &ui,
        &viewer,
        Method::POST,
        "/projects",
        Some(&Value::Object(body)),
    )
    .await
    {
        Ok((_, created)) => secret_page(
            &viewer,
            name,
            "Project created",
            created["webhook_secret"].as_str().unwrap_or(""),
        ),
        Err(e) => {
            errors.api(&e, FIELDS, NAMED);
            project_form(
                &ui,
                &viewer,
                &values,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

async fn rotate(State(ui): State<UiState>, viewer: Viewer, Path(name): Path<String>) -> Response {
    let project = match load(&ui, &viewer, &name).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let path = format!("/projects/{}/webhook-secret", project.name);
    match api_client::call(&ui, &viewer, Method::POST, &path, None).await {
        Ok((_, answer)) => secret_page(
            &viewer,
            project.name.as_str(),
            "Webhook secret rotated",
            answer["webhook_secret"].as_str().unwrap_or(""),
        ),
        Err(e) => (
            StatusCode::FORBIDDEN,
            layout::error_page(Some(&viewer), "Could not rotate the secret", &e.message),
        )
            .into_response(),
    }
}

/// The one page that shows a webhook secret; nothing else ever shows it again.
fn secret_page(viewer: &Viewer, project: &str, title: &str, secret: &str) -> Response {
    let body = html! {
        h1 { (title) }
        (layout::notice("Copy the webhook secret now: it is shown only this once.", false))
        div.field {
            label for="webhook-secret" { "Webhook secret of " (project) }
            input #webhook-secret .secret.mono type="text" readonly value=(secret);
        }
        div.actions {
            a.button href=(format!("/ui/projects/{project}")) { "Go to the project" }
            a.button.secondary href=(format!("/ui/builds/new?project={project}")) { "Start a build" }
        }
    };
    let mut resp = layout::page(title, Some(viewer), Some(Section::Projects), body).into_response();
    // The secret must not be kept by the browser's cache or history.
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}
