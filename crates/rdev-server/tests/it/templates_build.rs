//! Built-in templates build: each one is rendered through `TemplateRegistry` with its example
//! variables into a temporary folder, and the steps of its own `.woodpecker.yaml` that need no
//! secret (the build/check step; `deploy` needs secrets and a host) run there with `sh`, on this
//! machine's node/npm instead of the step's image. Then the output is checked for the rendered
//! values.
//!
//! It must not reach the network: npm is forced offline (`npm_config_offline`) onto the cache that
//! `scripts/setup-template-deps` fills under `target/npm-cache`, with a dead loopback proxy behind
//! it; a cache that is missing or was filled for another lockfile fails before npm starts, with a
//! message naming the script.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rdev_server::templates::TemplateRegistry;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The script that fills the npm cache (called by `scripts/setup-tools`).
const SETUP_SCRIPT: &str = "scripts/setup-template-deps";

/// A pipeline step's commands that run longer than this are killed (with their process group).
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// The variables each built-in template is built with: its required ones plus a non-default
/// value the output is checked for; every other variable keeps its default. A built-in missing
/// here fails `every_builtin_template_has_example_variables`.
pub(crate) fn example_vars(template: &str) -> Option<BTreeMap<String, String>> {
    let pairs: &[(&str, &str)] = match template {
        "astro-landing" => &[("title", "Acme Rockets"), ("accent_color", "#ff5500")],
        "static-site" => &[("title", "Field Notes"), ("lang", "de-CH")],
        _ => return None,
    };
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Renders `template` with its example variables into `dir` (which must not exist yet).
pub(crate) fn render_example(template: &str, dir: &Path) {
    let vars = example_vars(template).expect("example variables for every built-in");
    TemplateRegistry::builtin()
        .unwrap()
        .render_into(template, &vars, dir)
        .unwrap_or_else(|e| panic!("rendering {template}: {e}"));
}

/// `$CARGO_TARGET_DIR` (relative to the repository root when relative) or `<root>/target`, as
/// the setup script computes it.
fn target_dir() -> PathBuf {
    let root = rdev_testkit::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The npm cache for `rendered`'s lockfile, after checking the setup script's stamp says it
/// was proven for exactly this lockfile.
fn warm_npm_cache(template: &str, rendered: &Path) -> PathBuf {
    let lock = rendered.join("package-lock.json");
    let lock = fs::read(&lock).unwrap_or_else(|_| {
        panic!("{template} has a package.json without package-lock.json; CI runs `npm ci`")
    });
    let cache = target_dir().join("npm-cache");
    let stamp = cache.join("rdev-warmed").join(format!("{template}.sha256"));
    let want = format!("{:x}", Sha256::digest(&lock));
    let have = fs::read_to_string(&stamp).unwrap_or_default();
    assert!(
        have.trim() == want,
        "the npm cache for {template} is not warm ({} {}): run {SETUP_SCRIPT} \
         (scripts/setup-tools and scripts/test run it); tests never fetch from the npm registry",
        stamp.display(),
        if have.is_empty() {
            "is missing"
        } else {
            "names another package-lock.json"
        },
    );
    cache
}

/// One pipeline step that can run here: its name, commands and plain-string environment.
struct LocalStep {
    name: String,
    commands: Vec<String>,
    env: Vec<(String, String)>,
}

/// The steps of a rendered `.woodpecker.yaml` that use no secret, in order.
fn local_steps(rendered: &Path) -> Vec<LocalStep> {
    let yaml = fs::read_to_string(rendered.join(".woodpecker.yaml")).unwrap();
    let pipeline: Value = serde_norway::from_str(&yaml).unwrap();
    let steps = pipeline["steps"]
        .as_array()
        .expect("steps as a list (the form the built-ins use)");
    steps
        .iter()
        .filter(|s| {
            let env = s["environment"].as_object();
            !env.is_some_and(|env| env.values().any(|v| v.get("from_secret").is_some()))
        })
        .map(|s| LocalStep {
            name: s["name"].as_str().unwrap().to_owned(),
            commands: s["commands"]
                .as_array()
                .expect("a local step has commands")
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect(),
            env: s["environment"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Runs `step`'s commands as one `sh -e` script in `dir` (as Woodpecker does), npm offline on
/// `npm_cache` when given. Panics with the output's tail on failure or after `STEP_TIMEOUT`.
fn run_step(template: &str, step: &LocalStep, dir: &Path, npm_cache: Option<&Path>) -> Duration {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("output");
    let out = fs::File::create(&log).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-e")
        .arg("-c")
        .arg(step.commands.join("\n"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .env("CI", "true")
        .env("ASTRO_TELEMETRY_DISABLED", "1")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_update_notifier", "false");
    if let Some(cache) = npm_cache {
        // Offline: every package comes from the cache, a miss is ENOTCACHED. The dead proxy
        // makes any request npm still tried fail on loopback instead of leaving the machine.
        cmd.env("npm_config_cache", cache)
            .env("npm_config_offline", "true")
            .env("npm_config_proxy", "http://127.0.0.1:9")
            .env("npm_config_https_proxy", "http://127.0.0.1:9")
            .env("npm_config_noproxy", "");
    }
    cmd.envs(step.env.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting sh for {template}/{}: {e}", step.name));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > STEP_TIMEOUT {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let output = fs::read_to_string(&log).unwrap_or_default();
    let tail: String = {
        let lines: Vec<_> = output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let hint = if output.contains("ENOTCACHED") {
        format!(
            "\n(npm missed its offline cache: run {SETUP_SCRIPT}; if it says the cache is \
             warm, delete target/npm-cache first)"
        )
    } else {
        String::new()
    };
    match status {
        Some(s) if s.success() => elapsed,
        Some(s) => panic!(
            "step {} of {template} failed ({s}) after {elapsed:?}:\n{tail}{hint}",
            step.name
        ),
        None => panic!(
            "step {} of {template} did not finish within {STEP_TIMEOUT:?}:\n{tail}",
            step.name
        ),
    }
}

/// Renders `template` into a fresh temporary folder and runs its local pipeline steps there;
/// returns the folder (kept alive by the returned guard).
fn render_and_build(template: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(template);
    render_example(template, &dir);
    let npm_cache = dir
        .join("package.json")
        .exists()
        .then(|| warm_npm_cache(template, &dir));
    let steps = local_steps(&dir);
    assert!(!steps.is_empty(), "{template}'s pipeline has no build step");
    for step in &steps {
        let took = run_step(template, step, &dir, npm_cache.as_deref());
        eprintln!("{template}: step {} took {took:.1?}", step.name);
    }
    (tmp, dir)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_builtin_template_has_example_variables() {
    let registry = TemplateRegistry::builtin().unwrap();
    for t in registry.list() {
        let vars = example_vars(t.name())
            .unwrap_or_else(|| panic!("add example variables for {} here", t.name()));
        registry
            .validate_variables(t.name(), &vars)
            .unwrap_or_else(|e| panic!("example variables of {}: {e}", t.name()));
    }
}

#[test]
fn astro_landing_builds_offline_with_npm_ci_and_astro_build() {
    let (_tmp, dir) = render_and_build("astro-landing");
    let html = read(&dir.join("dist/index.html"));
    assert!(html.contains("<title>Acme Rockets</title>"), "{html}");
    assert!(html.contains("Acme Rockets</h1>"), "{html}");
    assert!(
        html.contains("Built and deployed by rdev."),
        "the default tagline: {html}"
    );
    let favicon = read(&dir.join("dist/favicon.svg"));
    assert!(favicon.contains("#ff5500"), "{favicon}");
}

#[test]
fn static_site_check_step_publishes_the_rendered_site() {
    let (_tmp, dir) = render_and_build("static-site");
    let public = dir.join("public");
    let html = read(&public.join("index.html"));
    assert!(html.contains("<title>Field Notes</title>"), "{html}");
    assert!(html.contains(r#"<html lang="de-CH">"#), "{html}");
    assert!(
        html.contains("A small static site deployed by rdev."),
        "the default description: {html}"
    );
    assert!(public.join("assets/style.css").is_file());
    let png = fs::read(public.join("assets/favicon.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "the favicon is copied verbatim"
    );
}
