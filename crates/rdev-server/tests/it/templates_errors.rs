//! Every way a template or its variables can be wrong, each with its stable code and the
//! name of the variable or file at fault. Bad templates are built in temporary folders.

use std::{collections::BTreeMap, fs, path::Path};

use rdev_core::ErrorCode;
use rdev_server::templates::{TemplateError, TemplateRegistry, MAX_VALUE_BYTES};

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn builtin() -> TemplateRegistry {
    TemplateRegistry::builtin().unwrap()
}

/// Asserts the code and that the message names every `needle`.
fn assert_err(err: &TemplateError, code: &str, needles: &[&str]) {
    assert_eq!(err.code(), code, "{err}");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not name {n:?}");
    }
}

const GOOD_MANIFEST: &str = r#"
name = "mini"
description = "A minimal template."
[variables.title]
required = true
[variables.color]
default = "red"
pattern = "red|green"
[variables.note]
description = "optional, no default"
"#;

/// Writes a template folder `root/<name>` with a manifest and files.
fn write_template(root: &Path, name: &str, manifest: &str, files: &[(&str, &str)]) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("template.toml"), manifest).unwrap();
    for (path, body) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
}

fn load(root: &Path) -> Result<TemplateRegistry, TemplateError> {
    TemplateRegistry::from_roots(&[root.to_path_buf()])
}

#[test]
fn unknown_template_is_named() {
    let err = builtin().render("no-such-thing", &vars(&[])).unwrap_err();
    assert_err(&err, "unknown_template", &["no-such-thing"]);
    let err = builtin()
        .validate_variables("../etc", &vars(&[]))
        .unwrap_err();
    assert_err(&err, "unknown_template", &["../etc"]);
}

#[test]
fn unknown_variable_is_named() {
    let err = builtin()
        .validate_variables(
            "astro-landing",
            &vars(&[("title", "x"), ("colour", "#000000")]),
        )
        .unwrap_err();
    assert_err(&err, "unknown_variable", &["colour", "astro-landing"]);
}

#[test]
fn missing_required_variable_is_named() {
    let err = builtin()
        .render("astro-landing", &vars(&[("tagline", "hi")]))
        .unwrap_err();
    assert_err(&err, "missing_variable", &["title"]);
}

#[test]
fn value_failing_its_pattern_is_named_with_the_pattern() {
    for bad in [
        "red",
        "#12345",
        "#1234567",
        "#GGGGGG",
        " #123456",
        "#123456\n",
    ] {
        let err = builtin()
            .validate_variables(
                "astro-landing",
                &vars(&[("title", "T"), ("accent_color", bad)]),
            )
            .unwrap_err();
        assert_err(
            &err,
            "invalid_variable",
            &["accent_color", "^#[0-9a-fA-F]{6}$"],
        );
    }
    let ok = builtin()
        .validate_variables(
            "astro-landing",
            &vars(&[("title", "T"), ("accent_color", "#A0b1C2")]),
        )
        .unwrap();
    assert_eq!(ok["accent_color"], "#A0b1C2");
}

#[test]
fn patterns_must_match_the_whole_value() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "mini",
        GOOD_MANIFEST,
        &[("a.txt", "{{ color }}")],
    );
    let reg = load(root.path()).unwrap();
    for bad in ["reddish", "green!", "a red"] {
        let err = reg
            .validate_variables("mini", &vars(&[("title", "t"), ("color", bad)]))
            .unwrap_err();
        assert_err(&err, "invalid_variable", &["color"]);
    }
}

#[test]
fn title_that_would_break_the_typescript_string_is_refused() {
    for bad in [r#"Say "hi""#, r"back\slash", "two\nlines", ""] {
        let err = builtin()
            .validate_variables("astro-landing", &vars(&[("title", bad)]))
            .unwrap_err();
        assert_err(&err, "invalid_variable", &["title"]);
    }
}

#[test]
fn blank_required_and_oversized_values_are_invalid() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "mini",
        GOOD_MANIFEST,
        &[("a.txt", "{{title}}")],
    );
    let reg = load(root.path()).unwrap();
    let err = reg
        .validate_variables("mini", &vars(&[("title", "  ")]))
        .unwrap_err();
    assert_err(&err, "invalid_variable", &["title", "blank"]);
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    let err = reg
        .validate_variables("mini", &vars(&[("title", &big)]))
        .unwrap_err();
    assert_err(&err, "invalid_variable", &["title", "limit"]);
}

#[test]
fn defaults_fill_in_and_optional_variables_without_default_render_empty() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "mini",
        GOOD_MANIFEST,
        &[("a.txt", "[{{title}}|{{ color }}|{{note}}]")],
    );
    let reg = load(root.path()).unwrap();
    let tree = reg.render("mini", &vars(&[("title", "T")])).unwrap();
    assert_eq!(tree.file("a.txt").unwrap().contents(), b"[T|red|]");
    let resolved = reg
        .validate_variables("mini", &vars(&[("title", "T")]))
        .unwrap();
    assert_eq!(
        resolved,
        vars(&[("title", "T"), ("color", "red"), ("note", "")])
    );
}

#[test]
fn placeholder_naming_an_undeclared_variable_is_a_template_error() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "mini",
        GOOD_MANIFEST,
        &[("src/page.html", "<h1>{{ title }}</h1>{{ subtitle }}")],
    );
    let err = load(root.path()).unwrap_err();
    assert_err(
        &err,
        "undeclared_placeholder",
        &["subtitle", "src/page.html", "mini"],
    );
}

#[test]
fn non_placeholder_braces_are_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let body = "style={{color: c}} ${{ matrix.os }} {{ a.b }} {{}} {{title}}";
    write_template(root.path(), "mini", GOOD_MANIFEST, &[("x.astro", body)]);
    let tree = load(root.path())
        .unwrap()
        .render("mini", &vars(&[("title", "T")]))
        .unwrap();
    assert_eq!(
        tree.file("x.astro").unwrap().contents(),
        b"style={{color: c}} ${{ matrix.os }} {{ a.b }} {{}} T"
    );
}

#[test]
fn binary_files_are_copied_verbatim_even_with_brace_bytes() {
    let root = tempfile::tempdir().unwrap();
    write_template(root.path(), "mini", GOOD_MANIFEST, &[]);
    let bytes: &[u8] = b"\x00\xff{{ undeclared }}\x00";
    fs::write(root.path().join("mini/blob.bin"), bytes).unwrap();
    let tree = load(root.path())
        .unwrap()
        .render("mini", &vars(&[("title", "T")]))
        .unwrap();
    assert_eq!(tree.file("blob.bin").unwrap().contents(), bytes);
}

#[test]
fn malformed_manifests_are_invalid_templates_naming_the_problem() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("name = \"mini\"\n", "missing", &["description"]),
        ("name = \"other\"\ndescription = \"d\"\n", "differs", &["other", "mini"]),
        ("name = \"mini\"\ndescription = \"d\"\nauthor = \"me\"\n", "unknown field", &["author"]),
        ("name = \"mini\"\ndescription = \"  \"\n", "empty", &["description"]),
        ("name = \"mini\"\ndescription = \"d\"\n[variables.Title]\n", "variable name", &["Title"]),
        ("name = \"mini\"\ndescription = \"d\"\n[variables.x]\nrequired = true\ndefault = \"a\"\n", "required", &["\"x\""]),
        ("name = \"mini\"\ndescription = \"d\"\n[variables.x]\npattern = \"[a-z]+\"\ndefault = \"A\"\n", "does not match", &["\"x\""]),
        ("name = \"mini\"\ndescription = \"d\"\n[variables.x]\npattern = \"(unclosed\"\n", "bad pattern", &["\"x\""]),
        ("name = \"mini\"\ndescription = \"d\"\n[variables.x]\nrequired = \"yes\"\n", "template.toml", &["required"]),
        ("not toml at all", "template.toml", &[]),
    ];
    for (manifest, reason, names) in cases {
        let root = tempfile::tempdir().unwrap();
        write_template(root.path(), "mini", manifest, &[]);
        let err = load(root.path()).unwrap_err();
        let mut needles = vec![*reason];
        needles.extend_from_slice(names);
        assert_err(&err, "invalid_template", &needles);
    }
}

#[test]
fn bad_template_folder_names_are_refused() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "Bad_Name",
        "name = \"Bad_Name\"\ndescription = \"d\"\n",
        &[],
    );
    let err = load(root.path()).unwrap_err();
    assert_err(&err, "invalid_template", &["Bad_Name"]);
}

#[test]
fn folder_without_manifest_is_refused_and_hidden_folders_are_skipped() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join(".git/objects")).unwrap();
    fs::write(root.path().join("README.md"), "templates").unwrap();
    write_template(root.path(), "mini", GOOD_MANIFEST, &[]);
    assert_eq!(load(root.path()).unwrap().list().count(), 1);
    fs::create_dir(root.path().join("stray")).unwrap();
    let err = load(root.path()).unwrap_err();
    assert_err(&err, "invalid_template", &["stray", "no template.toml"]);
}

#[test]
fn a_template_defined_twice_is_refused() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "static-site",
        "name = \"static-site\"\ndescription = \"mine\"\n",
        &[],
    );
    let err = TemplateRegistry::load(&[root.path().to_path_buf()]).unwrap_err();
    assert_err(&err, "duplicate_template", &["static-site", "builtin"]);
}

#[test]
fn extra_folders_add_to_the_builtins() {
    let root = tempfile::tempdir().unwrap();
    write_template(
        root.path(),
        "mini",
        GOOD_MANIFEST,
        &[("a.txt", "{{title}}")],
    );
    let reg = TemplateRegistry::load(&[root.path().to_path_buf()]).unwrap();
    let names: Vec<_> = reg.list().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["astro-landing", "mini", "static-site"]);
    assert!(reg.get("mini").unwrap().origin().ends_with("mini"));
}

#[test]
fn missing_extra_folder_is_an_io_error_naming_it() {
    let err = TemplateRegistry::load(&["/nonexistent/rdev-templates".into()]).unwrap_err();
    assert_err(&err, "template_io", &["/nonexistent/rdev-templates"]);
}

#[cfg(unix)]
mod symlinks {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn symlink_to_a_file_outside_the_folder_is_an_escape() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
        write_template(root.path(), "mini", GOOD_MANIFEST, &[]);
        symlink(
            outside.path().join("secret.txt"),
            root.path().join("mini/leak.txt"),
        )
        .unwrap();
        let err = load(root.path()).unwrap_err();
        assert_err(&err, "template_escape", &["leak.txt", "mini"]);
    }

    #[test]
    fn relative_symlink_climbing_out_is_an_escape() {
        let root = tempfile::tempdir().unwrap();
        write_template(root.path(), "mini", GOOD_MANIFEST, &[]);
        fs::write(root.path().join("sibling.txt"), "not part of mini").unwrap();
        fs::create_dir(root.path().join("mini/sub")).unwrap();
        symlink("../../sibling.txt", root.path().join("mini/sub/up.txt")).unwrap();
        let err = load(root.path()).unwrap_err();
        assert_err(&err, "template_escape", &["sub/up.txt"]);
    }

    #[test]
    fn dangling_symlink_is_an_escape() {
        let root = tempfile::tempdir().unwrap();
        write_template(root.path(), "mini", GOOD_MANIFEST, &[]);
        symlink("/nonexistent/file", root.path().join("mini/gone.txt")).unwrap();
        let err = load(root.path()).unwrap_err();
        assert_err(&err, "template_escape", &["gone.txt"]);
    }

    #[test]
    fn symlinked_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        write_template(root.path(), "mini", GOOD_MANIFEST, &[("real/a.txt", "a")]);
        symlink("real", root.path().join("mini/alias")).unwrap();
        let err = load(root.path()).unwrap_err();
        assert_err(&err, "invalid_template", &["alias"]);
    }

    #[test]
    fn symlink_to_a_file_inside_is_copied_as_a_file() {
        let root = tempfile::tempdir().unwrap();
        write_template(
            root.path(),
            "mini",
            GOOD_MANIFEST,
            &[("real.txt", "hello {{title}}")],
        );
        symlink("real.txt", root.path().join("mini/alias.txt")).unwrap();
        let tree = load(root.path())
            .unwrap()
            .render("mini", &vars(&[("title", "T")]))
            .unwrap();
        assert_eq!(tree.file("alias.txt").unwrap().contents(), b"hello T");
    }

    #[test]
    fn symlinked_manifest_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("t.toml"), GOOD_MANIFEST).unwrap();
        fs::create_dir(root.path().join("mini")).unwrap();
        symlink(
            outside.path().join("t.toml"),
            root.path().join("mini/template.toml"),
        )
        .unwrap();
        let err = load(root.path()).unwrap_err();
        assert_err(&err, "invalid_template", &["template.toml"]);
    }
}
