//! Every built-in template's `.woodpecker.yaml`, rendered with the template's example
//! variables, is a valid pipeline by Woodpecker's own JSON schema, and broken pipelines fail the
//! same check (so it can fail). The schema is vendored in `data/woodpecker-schema.json` (source
//! and version in `data/README.md`); the check mirrors Woodpecker's linter: YAML parsed, turned
//! into JSON, validated. It must not fetch anything: the schema's `$ref`s are all local.

use std::{path::Path, sync::LazyLock};

use jsonschema::Validator;
use rdev_server::templates::TemplateRegistry;
use serde_json::Value;

use crate::templates_build::example_vars;

static SCHEMA: LazyLock<Validator> = LazyLock::new(|| {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/data/woodpecker-schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::draft7::new(&schema).expect("the vendored Woodpecker schema compiles")
});

/// Every schema violation of a pipeline as `instance path: message`; empty when valid.
fn violations(pipeline: &Value) -> Vec<String> {
    SCHEMA
        .iter_errors(pipeline)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Parses a pipeline file as Woodpecker's linter does before validating (YAML to JSON).
fn parse(yaml: &str) -> Value {
    serde_norway::from_str(yaml).expect("a pipeline file is YAML")
}

/// `template`'s `.woodpecker.yaml` rendered with its example variables.
fn rendered_pipeline(registry: &TemplateRegistry, template: &str) -> String {
    let vars = example_vars(template).expect("example variables for every built-in");
    let tree = registry.render(template, &vars).unwrap();
    let file = tree
        .file(".woodpecker.yaml")
        .unwrap_or_else(|| panic!("{template} has no .woodpecker.yaml"));
    String::from_utf8(file.contents().to_vec()).unwrap()
}

#[test]
fn every_builtin_template_pipeline_is_valid_by_woodpeckers_schema() {
    let registry = TemplateRegistry::builtin().unwrap();
    for t in registry.list() {
        let pipeline = parse(&rendered_pipeline(&registry, t.name()));
        let errors = violations(&pipeline);
        assert!(
            errors.is_empty(),
            "{}/.woodpecker.yaml breaks Woodpecker's schema:\n{}",
            t.name(),
            errors.join("\n")
        );
    }
}

#[test]
fn a_template_pipeline_with_a_step_without_image_fails_the_schema_check() {
    let registry = TemplateRegistry::builtin().unwrap();
    for t in registry.list() {
        let mut pipeline = parse(&rendered_pipeline(&registry, t.name()));
        let step = &mut pipeline["steps"][0];
        assert!(step.as_object_mut().unwrap().remove("image").is_some());
        let errors = violations(&pipeline);
        assert!(
            errors.iter().any(|e| e.starts_with("/steps")),
            "{}: a step without image passed: {errors:?}",
            t.name()
        );
    }
}

#[test]
fn misspelled_keys_and_unknown_events_fail_the_schema_check() {
    let valid = "steps:\n  - name: build\n    image: alpine:3.22\n    commands: [echo hi]\n";
    assert_eq!(violations(&parse(valid)), Vec::<String>::new());
    for (broken, path) in [
        (valid.replace("steps:", "step:"), ""),
        (valid.replace("commands:", "command:"), "/steps"),
        (format!("when:\n  - event: [pushed]\n{valid}"), "/when"),
    ] {
        let errors = violations(&parse(&broken));
        assert!(
            !errors.is_empty() && errors.iter().all(|e| e.starts_with(path)),
            "{broken}\nexpected errors under {path:?}, got {errors:?}"
        );
    }
}
