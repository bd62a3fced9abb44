//! Placeholder substitution and writing a rendered tree to disk. Owns the placeholder
//! syntax (`{{name}}`, optional blanks inside the braces) and the rule that writing never
//! leaves the target folder, never follows a symlink and never overwrites a file.
//! Must not decide which values are valid: `manifest` does that before anything renders.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    path::{Component, Path},
    sync::LazyLock,
};

use regex::Regex;

use super::{TemplateError, TemplateFile};

/// `{{ name }}`: an identifier between double braces, with optional spaces or tabs inside.
/// Anything else with braces (`{{`, `{{ a.b }}`, `${{ x }}`'s inner part aside) stays as it
/// is, so JSX objects like `style={{color: c}}` survive; `{{ x }}` with an undeclared `x`
/// is a template error rather than silent text.
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}").expect("placeholder regex")
});

/// The variable names the placeholders in `text` use, in order of appearance.
pub(crate) fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    PLACEHOLDER
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    path: String,
    contents: Vec<u8>,
}

impl RenderedFile {
    /// The relative, `/`-separated path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The rendered bytes.
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }
}

/// A rendered template: files ordered by path, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedTree {
    template: String,
    files: Vec<RenderedFile>,
}

/// Substitutes `values` (one per declared variable) into every text file.
pub(crate) fn render_files(
    template: &str,
    files: &[TemplateFile],
    values: &BTreeMap<String, String>,
) -> RenderedTree {
    let files = files
        .iter()
        .map(|f| {
            let contents = if f.is_text {
                let text = std::str::from_utf8(&f.contents).unwrap_or_default();
                PLACEHOLDER
                    .replace_all(text, |c: &regex::Captures<'_>| {
                        // Every placeholder was checked against the declarations at load
                        // time and `values` holds every declared variable.
                        values.get(&c[1]).cloned().unwrap_or_default()
                    })
                    .into_owned()
                    .into_bytes()
            } else {
                f.contents.clone()
            };
            RenderedFile {
                path: f.path.clone(),
                contents,
            }
        })
        .collect();
    RenderedTree {
        template: template.to_owned(),
        files,
    }
}

impl RenderedTree {
    /// The template this was rendered from.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The rendered files, ordered by path.
    pub fn files(&self) -> &[RenderedFile] {
        &self.files
    }

    /// The rendered file at `path`.
    pub fn file(&self, path: &str) -> Option<&RenderedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Writes every file under `dir` (created if missing). Refuses paths that are not plain
    /// relative paths, directories that are symlinks, and files that already exist.
    pub fn write_to(&self, dir: &Path) -> Result<(), TemplateError> {
        fs::create_dir_all(dir).map_err(|e| TemplateError::io(dir, e))?;
        for file in &self.files {
            let escape = || TemplateError::TemplateEscape {
                template: self.template.clone(),
                path: file.path.clone(),
            };
            let rel = Path::new(&file.path);
            let parts: Vec<_> = rel.components().collect();
            if parts.is_empty() || !parts.iter().all(|c| matches!(c, Component::Normal(_))) {
                return Err(escape());
            }
            let mut current = dir.to_path_buf();
            for part in &parts[..parts.len() - 1] {
                current.push(part);
                match fs::symlink_metadata(&current) {
                    Ok(m) if m.file_type().is_symlink() => return Err(escape()),
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(TemplateError::TargetExists { path: current }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&current).map_err(|e| TemplateError::io(&current, e))?;
                    }
                    Err(e) => return Err(TemplateError::io(&current, e)),
                }
            }
            let target = dir.join(rel);
            // create_new fails on an existing file and on a symlink in the final component.
            let mut out = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(TemplateError::TargetExists { path: target })
                }
                Err(e) => return Err(TemplateError::io(&target, e)),
            };
            out.write_all(&file.contents)
                .map_err(|e| TemplateError::io(&target, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_allow_blanks_but_not_expressions() {
        let text = "{{a}} {{ b }} {{\tc\t}} {{ d.e }} {{ 1x }} style={{color: x}} {{\nf\n}}";
        let found: Vec<_> = placeholders(text).collect();
        assert_eq!(found, ["a", "b", "c"]);
    }
}
