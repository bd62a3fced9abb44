//! Where templates come from: the built-ins embedded in the binary at compile time (from
//! the repository's `templates/` folder, so an installed `rdev` is self-contained) and
//! extra folders named in configuration, read from disk. Reading enforces the folder
//! boundary: a path or symlink that leaves the template folder is a `template_escape`.
//! Must not validate manifests or render: it hands raw files to `manifest`.

use std::{
    fs,
    path::{Component, Path, PathBuf},
};

use include_dir::{include_dir, Dir, DirEntry};

use super::{Template, TemplateError, MANIFEST_FILE, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_FILES};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");

/// The embedded built-in templates.
pub(crate) fn builtin() -> Result<Vec<Template>, TemplateError> {
    let mut out = Vec::new();
    for dir in BUILTIN.dirs() {
        let name = dir.path().to_string_lossy().into_owned();
        let manifest = dir
            .get_file(dir.path().join(MANIFEST_FILE))
            .and_then(|f| f.contents_utf8())
            .ok_or_else(|| {
                TemplateError::invalid(format!("builtin ({name})"), "no template.toml")
            })?;
        let mut files = Vec::new();
        collect_embedded(dir, dir.path(), &mut files);
        out.push(Template::new(&name, "builtin".into(), manifest, files)?);
    }
    Ok(out)
}

fn collect_embedded(dir: &Dir<'_>, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => collect_embedded(d, root, out),
            DirEntry::File(f) => {
                let rel = f.path().strip_prefix(root).unwrap_or(f.path());
                if rel != Path::new(MANIFEST_FILE) {
                    out.push((slash_path(rel), f.contents().to_vec()));
                }
            }
        }
    }
}

fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every template folder under `root` (a folder of template folders). Hidden entries
/// (`.git`, ...) and plain files at the top are skipped; every other folder must be a
/// template.
pub(crate) fn load_root(root: &Path) -> Result<Vec<Template>, TemplateError> {
    let entries = fs::read_dir(root).map_err(|e| TemplateError::io(root, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TemplateError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = fs::metadata(entry.path())
            .map_err(|e| TemplateError::io(entry.path(), e))?
            .is_dir();
        if !name.starts_with('.') && is_dir {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    dirs.iter().map(|d| load_dir(d)).collect()
}

/// The template in folder `dir`.
pub(crate) fn load_dir(dir: &Path) -> Result<Template, TemplateError> {
    let root = fs::canonicalize(dir).map_err(|e| TemplateError::io(dir, e))?;
    let dir_name = root
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            TemplateError::invalid(dir.display().to_string(), "folder name is not UTF-8")
        })?
        .to_owned();
    let origin = root.display().to_string();
    let manifest_path = root.join(MANIFEST_FILE);
    let manifest_meta = fs::symlink_metadata(&manifest_path)
        .map_err(|_| TemplateError::invalid(&origin, "no template.toml"))?;
    if !manifest_meta.is_file() {
        return Err(TemplateError::invalid(
            &origin,
            "template.toml is not a regular file",
        ));
    }
    let manifest =
        fs::read_to_string(&manifest_path).map_err(|e| TemplateError::io(&manifest_path, e))?;
    let mut walker = Walker {
        template: dir_name.clone(),
        root: root.clone(),
        files: Vec::new(),
        bytes: 0,
    };
    walker.walk(&root)?;
    Template::new(&dir_name, origin, &manifest, walker.files)
}

struct Walker {
    template: String,
    root: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    bytes: u64,
}

impl Walker {
    fn walk(&mut self, dir: &Path) -> Result<(), TemplateError> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| TemplateError::io(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| TemplateError::io(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
            if rel == Path::new(MANIFEST_FILE) {
                continue;
            }
            let rel_str = rel
                .to_str()
                .ok_or_else(|| self.invalid(format!("{} is not UTF-8", rel.display())))?
                .to_owned();
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(self.escape(&rel_str));
            }
            let meta = fs::symlink_metadata(&path).map_err(|e| TemplateError::io(&path, e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.walk(&path)?;
                continue;
            }
            let source = if ft.is_symlink() {
                // A symlink may point at another file of the same template, never outside.
                let target = fs::canonicalize(&path).map_err(|_| self.escape(&rel_str))?;
                if !target.starts_with(&self.root) {
                    return Err(self.escape(&rel_str));
                }
                if !fs::metadata(&target)
                    .map_err(|e| TemplateError::io(&target, e))?
                    .is_file()
                {
                    return Err(self.invalid(format!("{rel_str}: symlinks must point at a file")));
                }
                target
            } else if ft.is_file() {
                path.clone()
            } else {
                return Err(self.invalid(format!("{rel_str} is not a regular file")));
            };
            let contents = fs::read(&source).map_err(|e| TemplateError::io(&source, e))?;
            self.bytes += contents.len() as u64;
            if self.bytes > MAX_TEMPLATE_BYTES || self.files.len() >= MAX_TEMPLATE_FILES {
                return Err(self.invalid(format!(
                    "more than {MAX_TEMPLATE_FILES} files or {MAX_TEMPLATE_BYTES} bytes"
                )));
            }
            self.files.push((slash_path(&rel), contents));
        }
        Ok(())
    }

    fn escape(&self, path: &str) -> TemplateError {
        TemplateError::TemplateEscape {
            template: self.template.clone(),
            path: path.to_owned(),
        }
    }

    fn invalid(&self, reason: String) -> TemplateError {
        TemplateError::invalid(self.root.display().to_string(), reason)
    }
}
