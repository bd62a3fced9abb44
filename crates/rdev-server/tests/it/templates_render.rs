//! Built-in templates: what the registry lists, that the embedded copy equals the
//! repository's `templates/` folder, golden renders, and writing a tree to disk.
//! Set `RDEV_UPDATE_GOLDEN=1` to rewrite the golden files after an intended change.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use rdev_core::ErrorCode;
use rdev_server::templates::{RenderedTree, TemplateRegistry};

fn repo_templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

fn golden_dir(template: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(template)
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Compares a render with the golden folder: `PATHS` lists every file; each file whose
/// source has placeholders is stored in full; every other file must equal its source.
fn check_golden(tree: &RenderedTree, registry: &TemplateRegistry) {
    let dir = golden_dir(tree.template());
    let template = registry.get(tree.template()).unwrap();
    let paths: String = tree
        .files()
        .iter()
        .map(|f| format!("{}\n", f.path()))
        .collect();
    let templated: Vec<_> = template
        .files()
        .iter()
        .filter(|f| f.is_text())
        .filter(|f| {
            let rendered = tree.file(f.path()).unwrap().contents();
            rendered != fs::read(repo_templates().join(tree.template()).join(f.path())).unwrap()
        })
        .map(|f| f.path().to_owned())
        .collect();
    if std::env::var_os("RDEV_UPDATE_GOLDEN").is_some() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("PATHS"), &paths).unwrap();
        for p in &templated {
            let out = dir.join("files").join(p);
            fs::create_dir_all(out.parent().unwrap()).unwrap();
            fs::write(out, tree.file(p).unwrap().contents()).unwrap();
        }
    }
    assert_eq!(
        fs::read_to_string(dir.join("PATHS")).unwrap(),
        paths,
        "file list of {}",
        tree.template()
    );
    for f in tree.files() {
        let golden = dir.join("files").join(f.path());
        let expected = if golden.exists() {
            fs::read(&golden).unwrap()
        } else {
            fs::read(repo_templates().join(tree.template()).join(f.path())).unwrap()
        };
        assert!(
            f.contents() == expected.as_slice(),
            "{} differs from {}:\n{}",
            f.path(),
            golden.display(),
            String::from_utf8_lossy(f.contents())
        );
    }
    let stored = count_files(&dir.join("files"));
    assert_eq!(
        stored,
        templated.len(),
        "golden files of {} that no longer differ from their source",
        tree.template()
    );
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| {
        rd.map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
            .sum()
    })
}

#[test]
fn builtin_registry_lists_astro_landing_and_static_site() {
    let registry = TemplateRegistry::builtin().unwrap();
    let names: Vec<_> = registry.list().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["astro-landing", "static-site"]);
    let astro = registry.get("astro-landing").unwrap().info();
    assert_eq!(astro.origin, "builtin");
    assert!(astro.variables["title"].required);
    assert_eq!(
        astro.variables["accent_color"].default.as_deref(),
        Some("#4f46e5")
    );
    assert_eq!(
        astro.variables["accent_color"].pattern.as_deref(),
        Some("^#[0-9a-fA-F]{6}$")
    );
    for file in [
        "package.json",
        "package-lock.json",
        ".woodpecker.yaml",
        "src/pages/index.astro",
        ".gitignore",
    ] {
        assert!(
            astro.files.iter().any(|f| f == file),
            "{file} missing from {:?}",
            astro.files
        );
    }
    assert!(!astro.files.iter().any(|f| f == "template.toml"));
    let json = serde_json::to_value(&astro).unwrap();
    assert_eq!(json["variables"]["title"]["required"], true);
}

#[test]
fn embedded_builtins_equal_the_repository_folder() {
    let embedded = TemplateRegistry::builtin().unwrap();
    let on_disk = TemplateRegistry::from_roots(&[repo_templates()]).unwrap();
    let names = |r: &TemplateRegistry| r.list().map(|t| t.name().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&embedded), names(&on_disk));
    for t in embedded.list() {
        let d = on_disk.get(t.name()).unwrap();
        assert_eq!(t.info().variables, d.info().variables);
        let a: Vec<_> = t
            .files()
            .iter()
            .map(|f| (f.path(), f.is_text(), f.contents()))
            .collect();
        let b: Vec<_> = d
            .files()
            .iter()
            .map(|f| (f.path(), f.is_text(), f.contents()))
            .collect();
        assert!(
            a == b,
            "{} differs from templates/ (rebuild rdev-server after changing it)",
            t.name()
        );
    }
}

#[test]
fn astro_landing_renders_to_golden() {
    let registry = TemplateRegistry::builtin().unwrap();
    let tree = registry
        .render(
            "astro-landing",
            &vars(&[("title", "Acme Rockets"), ("accent_color", "#ff5500")]),
        )
        .unwrap();
    check_golden(&tree, &registry);
    let site = String::from_utf8(tree.file("src/site.ts").unwrap().contents().to_vec()).unwrap();
    assert!(site.contains(r#"title: "Acme Rockets""#));
    assert!(site.contains(r##"accentColor: "#ff5500""##));
    assert!(
        site.contains(r#"tagline: "Built and deployed by rdev.""#),
        "default used"
    );
}

#[test]
fn static_site_renders_to_golden() {
    let registry = TemplateRegistry::builtin().unwrap();
    let tree = registry
        .render(
            "static-site",
            &vars(&[
                ("title", "Field Notes"),
                ("description", "Notes from the field."),
                ("lang", "de-CH"),
            ]),
        )
        .unwrap();
    check_golden(&tree, &registry);
    let png = tree.file("assets/favicon.png").unwrap().contents();
    assert!(png.starts_with(b"\x89PNG"), "binary copied verbatim");
}

#[test]
fn render_into_writes_the_tree_and_never_overwrites() {
    let registry = TemplateRegistry::builtin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("site");
    let v = vars(&[("title", "Hello")]);
    let tree = registry.render_into("static-site", &v, &target).unwrap();
    for f in tree.files() {
        assert_eq!(
            fs::read(target.join(f.path())).unwrap(),
            f.contents(),
            "{}",
            f.path()
        );
    }
    assert!(fs::read_to_string(target.join("index.html"))
        .unwrap()
        .contains("<title>Hello</title>"));

    let err = registry
        .render_into("static-site", &v, &target)
        .unwrap_err();
    assert_eq!(err.code(), "target_exists");
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[cfg(unix)]
#[test]
fn render_into_does_not_follow_a_symlinked_folder_in_the_target() {
    let registry = TemplateRegistry::builtin().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("assets")).unwrap();
    let err = registry
        .render_into("static-site", &vars(&[("title", "Hello")]), dir.path())
        .unwrap_err();
    assert_eq!(err.code(), "template_escape");
    assert!(err.to_string().contains("assets/"), "{err}");
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn values_are_inserted_as_is_and_not_expanded_again() {
    let registry = TemplateRegistry::builtin().unwrap();
    let tree = registry
        .render(
            "static-site",
            &vars(&[("title", "{{ description }} and {{lang}}")]),
        )
        .unwrap();
    let html = String::from_utf8(tree.file("index.html").unwrap().contents().to_vec()).unwrap();
    assert!(
        html.contains("<title>{{ description }} and {{lang}}</title>"),
        "{html}"
    );
}
