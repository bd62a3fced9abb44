//! What a request's `variables` must be, per template, as JSON Schema conditions on the
//! served document: the same rules `Template::resolve` applies (only declared names, each
//! value at most `MAX_VALUE_BYTES`, matching its pattern, a required one present and not
//! blank), and when `POST /projects` applies them (`project_service::create`: the
//! template is rendered, so its variables checked, when rdev creates the repository or
//! variables are given; variables without a template are refused).
//!
//! A build that names no template uses its project's, which the document cannot know: such
//! a build's variables are only described.

use rdev_core::api_schema::WHITE_SPACE;
use serde_json::{json, Value};

use crate::templates::{TemplateInfo, MAX_VALUE_BYTES};

/// `{"template": T}` is in the body.
fn names_template(name: &str) -> Value {
    json!({"properties": {"template": {"const": name}}, "required": ["template"]})
}

/// The `variables` object `template` accepts.
fn variables_of(template: &TemplateInfo) -> Value {
    let properties: serde_json::Map<String, Value> = template
        .variables
        .iter()
        .map(|(name, var)| {
            let mut schema = json!({
                "type": "string",
                "description": var.description,
                "maxLength": MAX_VALUE_BYTES,
            });
            if let Some(pattern) = &var.pattern {
                schema["pattern"] = json!(pattern);
            }
            if var.required {
                schema["not"] = json!({"pattern": format!("^[{WHITE_SPACE}]*$")});
            }
            (name.clone(), schema)
        })
        .collect();
    let required: Vec<&String> = template
        .variables
        .iter()
        .filter(|(_, v)| v.required)
        .map(|(n, _)| n)
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Whether `template` has a variable a render needs.
fn needs_variables(template: &TemplateInfo) -> bool {
    template.variables.values().any(|v| v.required)
}

/// `POST /projects`: without a template, no variables; with one, either an existing
/// repository (`repo_url`) and no variables (nothing is rendered), or variables the
/// template accepts.
pub fn create_body_conditions(templates: &[TemplateInfo]) -> Value {
    let mut all = vec![json!({
        "if": {"not": {"properties": {"template": {"type": "string"}}, "required": ["template"]}},
        "then": {"properties": {"variables": {"maxProperties": 0}}},
    })];
    for t in templates {
        let rendered = if needs_variables(t) {
            json!({"properties": {"variables": variables_of(t)}, "required": ["variables"]})
        } else {
            json!({"properties": {"variables": variables_of(t)}})
        };
        all.push(json!({
            "if": names_template(&t.name),
            "then": {"anyOf": [
                {"properties": {"repo_url": {"type": "string"}, "variables": {"maxProperties": 0}},
                 "required": ["repo_url"]},
                rendered,
            ]},
        }));
    }
    Value::Array(all)
}

/// `POST /project/{name}/build` naming a template: its variables, the required ones given.
pub fn build_spec_conditions(templates: &[TemplateInfo]) -> Value {
    templates
        .iter()
        .map(|t| {
            let mut then = json!({"properties": {"variables": variables_of(t)}});
            if needs_variables(t) {
                then["required"] = json!(["variables"]);
            }
            json!({"if": names_template(&t.name), "then": then})
        })
        .collect()
}
