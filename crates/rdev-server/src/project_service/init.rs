//! A new repository's first commit: [`initialise_repository`] renders a template into an
//! empty default branch, scans the commit like a build's and pushes it;
//! [`render_initial_commit`] is the rendering step alone, which the worker also uses for a
//! build on a still-empty project. It must never render over a branch with history.

use std::{collections::BTreeMap, sync::Arc};

use rdev_core::{ErrorCode, Project, PushProtection, TaskId};

use crate::{
    git::{Author, GitEnv, GitError, GitWorkspaces, Workspace},
    scan::{scan_push, ScanLimits, Scanner, SECRET_IN_COMMIT},
    templates::{TemplateError, TemplateRegistry},
};

/// Why a repository could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// Push protection found secrets in the rendered first commit (the project blocks).
    #[error(
        "secret_in_commit: push protection found secrets in the first commit, so nothing was \
         pushed: {0}"
    )]
    SecretInCommit(String),
}

impl ErrorCode for InitError {
    fn code(&self) -> &'static str {
        match self {
            Self::Template(e) => e.code(),
            Self::Git(e) => e.code(),
            Self::SecretInCommit(_) => SECRET_IN_COMMIT,
        }
    }
}

/// Renders `template` with `vars` into the (empty) workspace and commits it; returns the
/// commit's SHA. The caller pushes.
pub async fn render_initial_commit(
    ws: &Workspace,
    templates: &Arc<TemplateRegistry>,
    template: &str,
    vars: &BTreeMap<String, String>,
    author: &Author,
    task: Option<TaskId>,
) -> Result<Option<String>, InitError> {
    let dir = ws.dir.clone();
    let templates = Arc::clone(templates);
    let (name, vars_owned) = (template.to_owned(), vars.clone());
    tokio::task::spawn_blocking(move || templates.render_into(&name, &vars_owned, &dir))
        .await
        .map_err(|e| GitError::Spawn(format!("render task failed: {e}")))??;
    let message = format!("Initialise from template {template}");
    Ok(ws.commit_all(&message, task, author).await?)
}

/// Gives `project`'s repository its first commit from `template` when its default branch
/// has no commit yet. Returns the pushed SHA, or `None` when the branch already had
/// history (nothing is rendered over existing work). The commit is scanned by `scanner`
/// before it is pushed, as a build's are: a finding stops it unless the project warns.
#[allow(clippy::too_many_arguments)]
pub async fn initialise_repository(
    git: &GitWorkspaces,
    templates: &Arc<TemplateRegistry>,
    project: &Project,
    template: &str,
    vars: &BTreeMap<String, String>,
    author: &Author,
    env: &GitEnv,
    scanner: Arc<Scanner>,
) -> Result<Option<String>, InitError> {
    let ws = git
        .prepare(
            &project.name,
            project.repo_url.as_str(),
            project.default_branch.as_str(),
            TaskId::new(),
            env,
        )
        .await?;
    let result = async {
        if !ws.is_empty {
            return Ok(None);
        }
        let sha = render_initial_commit(&ws, templates, template, vars, author, None).await?;
        if sha.is_some() {
            let report = scan_push(&ws, scanner, &ScanLimits::default()).await?;
            if !report.is_clean() {
                if project.push_protection == PushProtection::Block {
                    return Err(InitError::SecretInCommit(report.summary()));
                }
                tracing::warn!(project = %project.name, findings = %report.summary(), "push protection (warn): pushing the first commit with findings");
            }
            ws.push().await?;
        }
        Ok(sha)
    }
    .await;
    git.remove(ws);
    result
}

#[cfg(test)]
mod tests {
    use rdev_core::{BranchName, ProjectName, RepoUrl};

    use super::*;

    #[tokio::test]
    async fn new_repository_gets_a_rendered_first_commit_once() {
        let tmp = tempfile::tempdir().unwrap();
        let name = ProjectName::parse("landing").unwrap();
        let repo = GitWorkspaces::new(tmp.path().join("git"))
            .create_bare_repo(&tmp.path().join("repos"), &name, "main")
            .await
            .unwrap();
        let project = Project {
            name,
            repo_url: RepoUrl::parse(&repo.to_string_lossy()).unwrap(),
            default_branch: BranchName::default(),
            template: Some("static-site".into()),
            woodpecker_repo_id: None,
            woodpecker_repo: None,
            deploy_url_pattern: None,
            provider: None,
            secrets: Default::default(),
            created_repo: Some(repo.to_string_lossy().into_owned()),
            push_protection: Default::default(),
            push_protection_allow: Vec::new(),
            network_allow: Vec::new(),
            max_cost_usd: None,
            max_tokens: None,
            max_parallel_builds: Project::DEFAULT_MAX_PARALLEL_BUILDS,
        };
        let git = GitWorkspaces::new(tmp.path().join("git"));
        let templates = Arc::new(TemplateRegistry::builtin().unwrap());
        let info = templates.get("static-site").unwrap().info();
        let mut vars = BTreeMap::new();
        for (name, _) in info.variables.iter().filter(|(_, v)| v.required) {
            vars.insert(name.clone(), "Hello Test".to_owned());
        }
        let sha = initialise_repository(
            &git,
            &templates,
            &project,
            "static-site",
            &vars,
            &Author::default(),
            &GitEnv::default(),
            Arc::new(Scanner::new([], Vec::new())),
        )
        .await
        .unwrap()
        .expect("an empty repository gets a commit");
        let out = std::process::Command::new("git")
            .args([
                "--git-dir",
                project.repo_url.as_str(),
                "rev-parse",
                "refs/heads/main",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sha);
        let tree = std::process::Command::new("git")
            .args([
                "--git-dir",
                project.repo_url.as_str(),
                "ls-tree",
                "-r",
                "--name-only",
                "main",
            ])
            .output()
            .unwrap();
        let files = String::from_utf8_lossy(&tree.stdout);
        assert!(files.lines().any(|f| f == ".woodpecker.yaml"), "{files}");

        // A second call finds history and renders nothing.
        let again = initialise_repository(
            &git,
            &templates,
            &project,
            "static-site",
            &vars,
            &Author::default(),
            &GitEnv::default(),
            Arc::new(Scanner::new([], Vec::new())),
        )
        .await
        .unwrap();
        assert_eq!(again, None);
    }
}
