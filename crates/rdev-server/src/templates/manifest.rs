//! `template.toml` and the validated [`Template`] built from it: variable declarations,
//! their patterns and defaults, and the check that every placeholder in every text file
//! names a declared variable. Must not touch the file system: `source` reads, this judges.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{
    render, RenderedTree, TemplateError, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_FILES, MAX_VALUE_BYTES,
};

/// The manifest as written in `template.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    description: String,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableDecl {
    #[serde(default)]
    description: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
}

/// One declared variable, as shown by `GET /templates` and `rdev template show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariableInfo {
    /// What the value is for.
    pub description: String,
    /// Whether a build must give it.
    pub required: bool,
    /// The value used when it is not given (`None` for required variables).
    pub default: Option<String>,
    /// A regular expression the whole value must match.
    pub pattern: Option<String>,
}

/// A template's public description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateInfo {
    /// The template's name (its folder name).
    pub name: String,
    /// One paragraph on what it creates.
    pub description: String,
    /// Declared variables by name.
    pub variables: BTreeMap<String, VariableInfo>,
    /// Where it was loaded from: `builtin` or a folder path.
    pub origin: String,
    /// The files it writes, relative and `/`-separated.
    pub files: Vec<String>,
}

#[derive(Debug, Clone)]
struct Variable {
    info: VariableInfo,
    /// The pattern anchored at both ends, so it must match the whole value.
    matcher: Option<Regex>,
}

/// One file of a template: a relative `/`-separated path and its bytes. Text files (valid
/// UTF-8 without NUL) are rendered; anything else is copied verbatim.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    pub(crate) path: String,
    pub(crate) contents: Vec<u8>,
    pub(crate) is_text: bool,
}

impl TemplateFile {
    /// The path inside the template, `/`-separated.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its bytes as stored in the template (before rendering).
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }

    /// Whether placeholders in it are rendered.
    pub fn is_text(&self) -> bool {
        self.is_text
    }
}

/// A loaded, validated template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    description: String,
    variables: BTreeMap<String, Variable>,
    files: Vec<TemplateFile>,
    origin: String,
}

/// Template and variable names: lowercase slugs safe in URLs, paths and TOML keys.
fn check_template_name(name: &str) -> Result<(), &'static str> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 || !ok_chars {
        return Err("a template name is 1 to 63 characters of a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("a template name must not start or end with '-'");
    }
    Ok(())
}

fn check_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Template {
    /// Validates a template read by `source`: `dir_name` is its folder's name, `origin`
    /// says where it came from, `files` excludes the manifest.
    pub(crate) fn new(
        dir_name: &str,
        origin: String,
        manifest_text: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, TemplateError> {
        let location = format!("{origin} ({dir_name})");
        let manifest: Manifest = toml::from_str(manifest_text)
            .map_err(|e| TemplateError::invalid(&location, format!("template.toml: {e}")))?;
        check_template_name(&manifest.name).map_err(|r| TemplateError::invalid(&location, r))?;
        if manifest.name != dir_name {
            return Err(TemplateError::invalid(
                &location,
                format!(
                    "name {:?} in template.toml differs from the folder name {dir_name:?}",
                    manifest.name
                ),
            ));
        }
        if manifest.description.trim().is_empty() {
            return Err(TemplateError::invalid(&location, "description is empty"));
        }
        if files.len() > MAX_TEMPLATE_FILES {
            return Err(TemplateError::invalid(
                &location,
                format!("more than {MAX_TEMPLATE_FILES} files"),
            ));
        }
        let total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
        if total > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::invalid(
                &location,
                format!("files hold {total} bytes; the limit is {MAX_TEMPLATE_BYTES}"),
            ));
        }

        let mut variables = BTreeMap::new();
        for (name, decl) in manifest.variables {
            let variable = Self::variable(&location, &name, decl)?;
            variables.insert(name, variable);
        }

        let mut checked = Vec::with_capacity(files.len());
        for (path, contents) in files {
            let is_text = !contents.contains(&0) && std::str::from_utf8(&contents).is_ok();
            if is_text {
                let text = std::str::from_utf8(&contents).unwrap_or_default();
                for used in render::placeholders(text) {
                    if !variables.contains_key(used) {
                        return Err(TemplateError::UndeclaredPlaceholder {
                            template: manifest.name.clone(),
                            path,
                            name: used.to_owned(),
                        });
                    }
                }
            }
            checked.push(TemplateFile {
                path,
                contents,
                is_text,
            });
        }
        checked.sort_by(|a, b| a.path.cmp(&b.path));

        Ok(Self {
            name: manifest.name,
            description: manifest.description,
            variables,
            files: checked,
            origin,
        })
    }

    fn variable(location: &str, name: &str, decl: VariableDecl) -> Result<Variable, TemplateError> {
        let bad = |reason: String| {
            TemplateError::invalid(location, format!("variable {name:?}: {reason}"))
        };
        if !check_variable_name(name) {
            return Err(bad(
                "a variable name starts with a-z and holds only a-z, 0-9 and '_' (at most 64)"
                    .into(),
            ));
        }
        if decl.required && decl.default.is_some() {
            return Err(bad("a required variable cannot have a default".into()));
        }
        let matcher = match &decl.pattern {
            Some(p) => Some(
                Regex::new(&format!("^(?:{p})$")).map_err(|e| bad(format!("bad pattern: {e}")))?,
            ),
            None => None,
        };
        if let (Some(m), Some(d)) = (&matcher, &decl.default) {
            if !m.is_match(d) {
                return Err(bad(format!("default {d:?} does not match its pattern")));
            }
        }
        Ok(Variable {
            info: VariableInfo {
                description: decl.description,
                required: decl.required,
                default: decl.default,
                pattern: decl.pattern,
            },
            matcher,
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One paragraph on what it creates.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// `builtin` or the folder it was read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Its files, ordered by path.
    pub fn files(&self) -> &[TemplateFile] {
        &self.files
    }

    /// Its public description.
    pub fn info(&self) -> TemplateInfo {
        TemplateInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            variables: self
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.info.clone()))
                .collect(),
            origin: self.origin.clone(),
            files: self.files.iter().map(|f| f.path.clone()).collect(),
        }
    }

    /// Checks `given` strictly and returns a value for every declared variable: the given
    /// one, else the default, else the empty string (optional variables only). Unknown
    /// names are reported first, then declared variables in name order.
    pub fn resolve(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        if let Some(unknown) = given.keys().find(|k| !self.variables.contains_key(*k)) {
            return Err(TemplateError::UnknownVariable {
                template: self.name.clone(),
                name: unknown.chars().take(100).collect(),
            });
        }
        let mut resolved = BTreeMap::new();
        for (name, var) in &self.variables {
            let invalid = |reason: String| TemplateError::InvalidVariable {
                template: self.name.clone(),
                name: name.clone(),
                reason,
            };
            let value = match given.get(name) {
                Some(v) => {
                    if v.len() > MAX_VALUE_BYTES {
                        return Err(invalid(format!(
                            "{} bytes; the limit is {MAX_VALUE_BYTES}",
                            v.len()
                        )));
                    }
                    if var.info.required && v.trim().is_empty() {
                        return Err(invalid("a required value must not be blank".into()));
                    }
                    if let Some(m) = &var.matcher {
                        if !m.is_match(v) {
                            return Err(invalid(format!(
                                "does not match pattern {}",
                                var.info.pattern.as_deref().unwrap_or_default()
                            )));
                        }
                    }
                    v.clone()
                }
                None if var.info.required => {
                    return Err(TemplateError::MissingVariable {
                        template: self.name.clone(),
                        name: name.clone(),
                    })
                }
                None => var.info.default.clone().unwrap_or_default(),
            };
            resolved.insert(name.clone(), value);
        }
        Ok(resolved)
    }

    /// Renders every file with `given` (checked by [`Template::resolve`]) in memory.
    pub fn render(&self, given: &BTreeMap<String, String>) -> Result<RenderedTree, TemplateError> {
        let values = self.resolve(given)?;
        Ok(render::render_files(&self.name, &self.files, &values))
    }
}
