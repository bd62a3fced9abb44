//! The "new build" form (`/ui/builds/new`): project, prompt, template and its variables as
//! fields, auto deploy, provider and callback URL. Choosing a template re-renders the form
//! with that template's variables (htmx, or a plain GET without script). The build is
//! queued through `POST /project/{name}/build` as the viewer, so the API's checks decide;
//! its refusals and the template's variable errors are shown next to their fields.
//!
//! It must not queue a build any other way than through the API.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use maud::{html, Markup};
use rdev_core::{Action, ProjectName};
use serde_json::{json, Map, Value};

use super::{
    api_client,
    forms::{self, select_field, text_field, variables_of, Errors, Kind},
    layout::{self, Section},
    session::Viewer,
    UiState,
};

/// The form's routes.
pub fn router() -> Router<UiState> {
    Router::new().route("/ui/builds/new", get(form_page).post(submit))
}

/// API error codes and the field each is about.
const FIELDS: &[(&str, &str)] = &[
    ("prompt_required", "prompt"),
    ("prompt_too_large", "prompt"),
    ("not_found", "project"),
    ("invalid_project_name", "project"),
    ("unknown_template", "template"),
    ("unknown_provider", "provider"),
    ("invalid_provider", "provider"),
    ("agent_not_configured", "provider"),
    ("invalid_callback_url", "callback_url"),
    ("invalid_callback_url_scheme", "callback_url"),
    ("callback_url_has_credentials", "callback_url"),
    ("private_callback_url", "callback_url"),
];

async fn form_page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(values): Query<BTreeMap<String, String>>,
) -> Response {
    render(&ui, &viewer, &values, &Errors::default(), StatusCode::OK).await
}

async fn render(
    ui: &UiState,
    viewer: &Viewer,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let projects: Vec<(String, String)> = match ui.services.store.list_projects().await {
        Ok(ps) => ps
            .into_iter()
            .filter(|p| viewer.can(Action::Build, Some(&p.name)))
            .map(|p| (p.name.to_string(), p.name.to_string()))
            .collect(),
        Err(e) => return super::builds::store_error(viewer, &e),
    };
    let body = html! {
        h1 { "New build" }
        @if projects.is_empty() {
            (layout::notice("There is no project this token may build. Create one first.", true))
        } @else {
            (build_form(ui, &projects, values, errors))
        }
    };
    (
        status,
        layout::page("New build", Some(viewer), Some(Section::NewBuild), body),
    )
        .into_response()
}

fn build_form(
    ui: &UiState,
    projects: &[(String, String)],
    values: &BTreeMap<String, String>,
    errors: &Errors,
) -> Markup {
    let v = |k: &str| values.get(k).map_or("", String::as_str);
    let templates: Vec<(String, String)> = ui
        .services
        .templates
        .list()
        .map(|t| (t.name().to_owned(), t.name().to_owned()))
        .collect();
    let chosen = ui
        .services
        .templates
        .get(v("template"))
        .ok()
        .map(|t| t.info());
    let providers: Vec<(String, String)> = ui
        .services
        .registry
        .list()
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
    let auto_deploy = values.get("auto_deploy").is_some_and(|x| x == "on");
    let shown = ["project", "prompt", "template", "provider", "callback_url"];
    html! {
        form #new-build .stack method="post" action="/ui/builds/new" {
            (errors.summary(&shown))
            (select_field("project", "Project", projects, v("project"), None, errors))
            (text_field("prompt", "Prompt", v("prompt"), Some("What the agent is asked to do."), Kind::Area, true, errors))
            div hx-get="/ui/builds/new" hx-trigger="change" hx-include="closest form"
                hx-target="#new-build" hx-select="#new-build" hx-swap="outerHTML" {
                (select_field("template", "Template (for a new repository)", &templates, v("template"), Some("None"), errors))
            }
            button.secondary type="submit" formmethod="get" formaction="/ui/builds/new" { "Show the template's variables" }
            @if let Some(t) = &chosen {
                (forms::variable_fields(t, &prefixed(values), errors))
            }
            div.check {
                input #f-auto_deploy type="checkbox" name="auto_deploy" checked[auto_deploy];
                label for="f-auto_deploy" { "Auto deploy: commit, push and follow CI when the agent changed files" }
            }
            (select_field("provider", "Agent provider", &providers, v("provider"), Some("The project's default"), errors))
            (text_field("callback_url", "Callback URL", v("callback_url"), Some("Optional: where the signed result is POSTed."), Kind::Url, false, errors))
            div { button #start-build type="submit" { "Start build" } }
        }
    }
}

/// The `var.*` values by variable name, for re-filling the fields.
fn prefixed(values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(forms::VAR_PREFIX)?.to_owned(), v.clone())))
        .collect()
}

async fn submit(
    State(ui): State<UiState>,
    viewer: Viewer,
    Form(values): Form<BTreeMap<String, String>>,
) -> Response {
    let mut errors = Errors::default();
    let project = match ProjectName::parse(forms::value(&values, "project").unwrap_or("")) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.add("project", e.to_string());
            None
        }
    };
    let template = forms::value(&values, "template");
    let variables = variables_of(&values);
    if let Some(t) = template {
        if let Err(e) = ui.services.templates.validate_variables(t, &variables) {
            errors.template(&e);
        }
    }
    if let (Some(project), true) = (project, errors.is_empty()) {
        let mut body = Map::new();
        body.insert(
            "prompt".into(),
            json!(values.get("prompt").map_or("", |p| p.as_str())),
        );
        body.insert(
            "auto_deploy".into(),
            json!(values.get("auto_deploy").is_some_and(|x| x == "on")),
        );
        if let Some(t) = template {
            body.insert("template".into(), json!(t));
            body.insert("variables".into(), json!(variables));
        }
        for key in ["provider", "callback_url"] {
            if let Some(v) = forms::value(&values, key) {
                body.insert(key.into(), json!(v));
            }
        }
        let path = format!("/project/{project}/build");
        match api_client::call(
            &ui,
            &viewer,
            Method::POST,
            &path,
            Some(&Value::Object(body)),
        )
        .await
        {
            Ok((_, answer)) => {
                if let Some(id) = answer["task_id"].as_str() {
                    return Redirect::to(&format!("/ui/builds/{id}")).into_response();
                }
                errors.add("", "the API accepted the build but named no task");
            }
            Err(e) => errors.api(&e, FIELDS, &["callback_url"]),
        }
    }
    render(
        &ui,
        &viewer,
        &values,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}
