//! The shapes `/projects` answers and the merge patch `PATCH /projects/{name}` takes, as
//! types with a schema (`utoipa::ToSchema`), so the OpenAPI document says what the
//! handlers in `super::project_routes` send. No handler, no validation.

use rdev_core::{Project, ProjectName};
use serde::Serialize;
use utoipa::{
    openapi::{
        schema::{AdditionalProperties, Schema},
        RefOr,
    },
    PartialSchema, ToSchema,
};

/// Every project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

/// A created project, with the first commit rdev made and its callback signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    pub project: Project,
    /// The first commit rdev rendered and pushed, if it made one.
    #[schema(required)]
    pub initial_commit: Option<String>,
    /// The callback signing secret (callbacks are signed with it, per Standard Webhooks),
    /// shown once.
    pub webhook_secret: String,
}

/// A new callback signing secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    pub project: ProjectName,
    pub webhook_secret: String,
}

/// The body of `PATCH /projects/{name}`: a JSON merge patch of [`Project`]'s fields, so
/// its schema is the project's with every field optional and no other field allowed (422
/// unknown_field). `name` and `created_repo` may only repeat their current values.
#[derive(Debug)]
pub struct ProjectChange;

impl PartialSchema for ProjectChange {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = Project::schema() else {
            unreachable!("a struct derives an object schema");
        };
        object.required.clear();
        // Neither can change: the name is in the path, and only rdev sets `created_repo`.
        object.properties.remove("name");
        object.properties.remove("created_repo");
        object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        object.description = Some(
            "A JSON merge patch (RFC 7396) of the project: the fields to change. `name` \
             and `created_repo` may only repeat their current values."
                .to_owned(),
        );
        object.into()
    }
}

impl ToSchema for ProjectChange {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Project::name().into_owned(), Project::schema()));
        Project::schemas(schemas);
    }
}
