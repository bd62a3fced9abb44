//! Project templates: a folder holding `template.toml` (name, description, variables) and
//! files with `{{var}}` placeholders, rendered strictly into a new repository's tree.
//!
//! This module owns loading (built-ins embedded in the binary, extra folders from
//! configuration), validation of templates and of variable values, and writing a rendered
//! tree into a folder. It must not run git, talk to the network or know about HTTP: creating
//! a repository from a rendered tree belongs to the project service, and the API maps
//! [`TemplateError`] codes to statuses.
//!
//! Rules, each with its own error code: an unknown template, an unknown variable, a missing
//! required variable and a value that fails the variable's pattern are errors naming it; a
//! placeholder naming an undeclared variable makes the template itself invalid; no file of a
//! template (symlinks included) may lie outside its folder, and rendering never writes
//! outside the target folder. Values are inserted as-is, with no escaping: a template
//! guards the syntax its values land in with `pattern`s.

mod manifest;
mod render;
mod source;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use rdev_core::ErrorCode;

pub use manifest::{Template, TemplateFile, TemplateInfo, VariableInfo};
pub use render::{RenderedFile, RenderedTree};

/// The manifest file every template folder holds.
pub const MANIFEST_FILE: &str = "template.toml";
/// The most bytes a template's files may hold together.
pub const MAX_TEMPLATE_BYTES: u64 = 32 * 1024 * 1024;
/// The most files a template may hold.
pub const MAX_TEMPLATE_FILES: usize = 5_000;
/// The longest variable value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 4_096;

/// Why a template could not be loaded or rendered. Every variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No template has this name.
    #[error("unknown template {name:?}")]
    UnknownTemplate { name: String },
    /// A variable the template does not declare.
    #[error("template {template:?} has no variable {name:?}")]
    UnknownVariable { template: String, name: String },
    /// A required variable that was not given.
    #[error("template {template:?} requires variable {name:?}")]
    MissingVariable { template: String, name: String },
    /// A value that breaks its variable's rules (pattern, length, emptiness).
    #[error("invalid value for variable {name:?} of template {template:?}: {reason}")]
    InvalidVariable {
        template: String,
        name: String,
        reason: String,
    },
    /// A file (or a symlink's target) outside the template folder, or a rendered path that
    /// would land outside the target folder.
    #[error("template {template:?}: {path:?} escapes its folder")]
    TemplateEscape { template: String, path: String },
    /// A placeholder naming a variable the template does not declare.
    #[error("template {template:?}: {path:?} uses undeclared variable {name:?}")]
    UndeclaredPlaceholder {
        template: String,
        path: String,
        name: String,
    },
    /// A template folder or manifest that breaks a rule.
    #[error("invalid template at {location}: {reason}")]
    InvalidTemplate { location: String, reason: String },
    /// Two template folders with the same name.
    #[error("template {name:?} is defined twice: {first} and {second}")]
    DuplicateTemplate {
        name: String,
        first: String,
        second: String,
    },
    /// Rendering would overwrite a file that already exists in the target folder.
    #[error("{path} already exists in the target folder")]
    TargetExists { path: PathBuf },
    /// Reading a template or writing a rendered file failed.
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TemplateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidTemplate {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

impl ErrorCode for TemplateError {
    fn code(&self) -> &'static str {
        match self {
            Self::UnknownTemplate { .. } => "unknown_template",
            Self::UnknownVariable { .. } => "unknown_variable",
            Self::MissingVariable { .. } => "missing_variable",
            Self::InvalidVariable { .. } => "invalid_variable",
            Self::TemplateEscape { .. } => "template_escape",
            Self::UndeclaredPlaceholder { .. } => "undeclared_placeholder",
            Self::InvalidTemplate { .. } => "invalid_template",
            Self::DuplicateTemplate { .. } => "duplicate_template",
            Self::TargetExists { .. } => "target_exists",
            Self::Io { .. } => "template_io",
        }
    }
}

/// Every template rdev knows: the built-ins embedded in the binary plus extra folders.
/// Loaded and validated once; immutable afterwards, so it can be shared behind an `Arc`.
#[derive(Debug, Clone)]
pub struct TemplateRegistry {
    templates: BTreeMap<String, Template>,
}

impl TemplateRegistry {
    /// Only the built-in templates (embedded from the repository's `templates/` folder).
    pub fn builtin() -> Result<Self, TemplateError> {
        Self::from_templates(source::builtin()?)
    }

    /// The built-ins plus every template folder found in `extra_roots`. Each root is a
    /// folder of template folders; every non-hidden subfolder must hold a `template.toml`.
    /// A name defined twice is an error, so an extra folder cannot silently shadow a
    /// built-in.
    pub fn load(extra_roots: &[PathBuf]) -> Result<Self, TemplateError> {
        let mut all = source::builtin()?;
        for root in extra_roots {
            all.extend(source::load_root(root)?);
        }
        Self::from_templates(all)
    }

    /// Templates read from these roots only, without the built-ins.
    pub fn from_roots(roots: &[PathBuf]) -> Result<Self, TemplateError> {
        let mut all = Vec::new();
        for root in roots {
            all.extend(source::load_root(root)?);
        }
        Self::from_templates(all)
    }

    fn from_templates(list: Vec<Template>) -> Result<Self, TemplateError> {
        let mut templates: BTreeMap<String, Template> = BTreeMap::new();
        for t in list {
            if let Some(first) = templates.get(t.name()) {
                return Err(TemplateError::DuplicateTemplate {
                    name: t.name().to_owned(),
                    first: first.origin().to_owned(),
                    second: t.origin().to_owned(),
                });
            }
            templates.insert(t.name().to_owned(), t);
        }
        Ok(Self { templates })
    }

    /// Every template, ordered by name.
    pub fn list(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// The template called `name`.
    pub fn get(&self, name: &str) -> Result<&Template, TemplateError> {
        self.templates
            .get(name)
            .ok_or_else(|| TemplateError::UnknownTemplate {
                name: name.chars().take(100).collect(),
            })
    }

    /// Checks `vars` against the template's declarations and returns every declared
    /// variable's value (defaults filled in). The API calls this before queueing a build.
    pub fn validate_variables(
        &self,
        name: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        self.get(name)?.resolve(vars)
    }

    /// Renders template `name` with `vars` in memory.
    pub fn render(
        &self,
        name: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<RenderedTree, TemplateError> {
        self.get(name)?.render(vars)
    }

    /// Renders template `name` with `vars` and writes it under `dir` (created if missing).
    /// Never overwrites a file and never follows a symlink out of `dir`.
    pub fn render_into(
        &self,
        name: &str,
        vars: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Result<RenderedTree, TemplateError> {
        let tree = self.render(name, vars)?;
        tree.write_to(dir)?;
        Ok(tree)
    }
}
