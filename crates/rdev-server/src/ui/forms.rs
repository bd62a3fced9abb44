//! Form pieces shared by the project and build forms: labelled fields with their error
//! next to them ([`Errors`], [`text_field`]), a template's variables as fields, and the
//! mapping from a refusal (a template error of a variable, an API error code) to the field
//! it is about.
//!
//! It must not validate anything itself: errors come from the API or from the same
//! validators the API uses.

use std::collections::BTreeMap;

use maud::{html, Markup};

use super::api_client::ApiFailure;
use crate::templates::{TemplateError, TemplateInfo};

/// The prefix of a template variable's form field.
pub const VAR_PREFIX: &str = "var.";

/// Errors by form field; `""` is the form as a whole.
#[derive(Debug, Default)]
pub struct Errors(BTreeMap<String, String>);

impl Errors {
    /// Records `message` for `field` (the first error of a field wins).
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    /// The error of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Whether there is no error at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A variable's refusal, filed under its field.
    pub fn template(&mut self, e: &TemplateError) {
        match e {
            TemplateError::UnknownVariable { name, .. }
            | TemplateError::MissingVariable { name, .. }
            | TemplateError::InvalidVariable { name, .. } => {
                self.add(format!("{VAR_PREFIX}{name}"), e.to_string())
            }
            other => self.add("template", other.to_string()),
        }
    }

    /// An API refusal, filed under the field its code names (`codes`: code, field), or the
    /// field an `invalid_field` message names when it is one of `named`, else the form.
    pub fn api(&mut self, e: &ApiFailure, codes: &[(&str, &str)], named: &[&str]) {
        if let Some((_, field)) = codes.iter().find(|(code, _)| *code == e.code) {
            return self.add(*field, e.message.clone());
        }
        // `invalid_field` names its field in the message: "invalid <field>: <reason>".
        if e.code == "invalid_field" {
            if let Some(field) = e
                .message
                .strip_prefix("invalid ")
                .and_then(|rest| rest.split_once(':'))
                .map(|(f, _)| f)
                .filter(|f| named.contains(f))
            {
                return self.add(field.to_owned(), e.message.clone());
            }
        }
        self.add("", e.message.clone());
    }

    /// The form-level error box, if any error has no field of its own on this form.
    pub fn summary(&self, shown: &[&str]) -> Markup {
        let orphans: Vec<&str> = self
            .0
            .iter()
            .filter(|(field, _)| !shown.contains(&field.as_str()) && !field.starts_with(VAR_PREFIX))
            .map(|(_, m)| m.as_str())
            .collect();
        html! {
            @if !self.is_empty() {
                div.notice.bad role="alert" {
                    "Please correct the fields marked below."
                    @for m in orphans { br; (m) }
                }
            }
        }
    }
}

/// The id a field's element gets (`var.title` becomes `f-var-title`).
pub fn field_id(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("f-{cleaned}")
}

/// What kind of control a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Url,
    Number,
    Area,
}

/// A labelled text control with its hint and its error (linked by `aria-describedby`).
pub fn text_field(
    name: &str,
    label: &str,
    value: &str,
    hint: Option<&str>,
    kind: Kind,
    required: bool,
    errors: &Errors,
) -> Markup {
    let id = field_id(name);
    let hint_id = format!("{id}-hint");
    let err_id = format!("{id}-error");
    let error = errors.get(name);
    let described: Vec<&str> = [
        hint.map(|_| hint_id.as_str()),
        error.map(|_| err_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let described = (!described.is_empty()).then(|| described.join(" "));
    html! {
        div.field {
            label for=(id) { (label) @if required { " (required)" } }
            @match kind {
                Kind::Area => {
                    textarea id=(id) name=(name) required[required]
                        aria-invalid=[error.map(|_| "true")] aria-describedby=[described.as_deref()] { (value) }
                }
                _ => {
                    input id=(id) name=(name) value=(value) required[required]
                        type=(match kind { Kind::Url => "url", Kind::Number => "number", _ => "text" })
                        aria-invalid=[error.map(|_| "true")] aria-describedby=[described.as_deref()];
                }
            }
            @if let Some(h) = hint { small id=(hint_id) { (h) } }
            @if let Some(e) = error { span.field-error id=(err_id) { (e) } }
        }
    }
}

/// A labelled `<select>` of `options` (value, label) with an optional empty choice.
pub fn select_field(
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    empty: Option<&str>,
    errors: &Errors,
) -> Markup {
    let id = field_id(name);
    let err_id = format!("{id}-error");
    let error = errors.get(name);
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| err_id.as_str())] {
                @if let Some(e) = empty { option value="" selected[selected.is_empty()] { (e) } }
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
            @if let Some(e) = error { span.field-error id=(err_id) { (e) } }
        }
    }
}

/// One field per variable of `template`, filled from `values` (else the default as a
/// placeholder), each with its description and pattern as the hint.
pub fn variable_fields(
    template: &TemplateInfo,
    values: &BTreeMap<String, String>,
    errors: &Errors,
) -> Markup {
    html! {
        fieldset.stack {
            legend { "Variables of " code { (template.name) } }
            @for (name, var) in &template.variables {
                @let hint = match &var.default {
                    Some(d) if !d.is_empty() => format!("{} Default: {d}", var.description),
                    _ => var.description.clone(),
                };
                (text_field(&format!("{VAR_PREFIX}{name}"), name,
                    values.get(name).map_or("", String::as_str), Some(&hint), Kind::Text, var.required, errors))
            }
        }
    }
}

/// The `var.*` fields of a submitted form, without empty ones (empty means "the default").
pub fn variables_of(form: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(VAR_PREFIX)?;
            (!v.trim().is_empty()).then(|| (name.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// A form value, trimmed; `None` when blank.
pub fn value<'a>(form: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    form.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_land_on_their_field() {
        let mut e = Errors::default();
        let fields = [("invalid_project_name", "name")];
        e.api(
            &ApiFailure {
                code: "invalid_project_name".into(),
                message: "bad".into(),
            },
            &fields,
            &[],
        );
        assert_eq!(e.get("name"), Some("bad"));
        let mut e = Errors::default();
        e.api(
            &ApiFailure {
                code: "invalid_field".into(),
                message: "invalid deploy_url_pattern: unknown placeholder".into(),
            },
            &[],
            &["deploy_url_pattern"],
        );
        assert!(e.get("deploy_url_pattern").is_some());
        let mut e = Errors::default();
        e.api(
            &ApiFailure {
                code: "other".into(),
                message: "m".into(),
            },
            &fields,
            &[],
        );
        assert_eq!(e.get(""), Some("m"));
    }

    #[test]
    fn variables_come_from_prefixed_fields() {
        let form: BTreeMap<String, String> = [
            ("var.title".to_owned(), " Hi ".to_owned()),
            ("var.tagline".to_owned(), "".to_owned()),
            ("name".to_owned(), "x".to_owned()),
        ]
        .into();
        let vars = variables_of(&form);
        assert_eq!(vars.len(), 1);
        assert_eq!(vars["title"], "Hi");
        assert_eq!(field_id("var.title"), "f-var-title");
    }
}
