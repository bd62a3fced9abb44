//! Project templates: loading `template.toml` folders and rendering them strictly.
