//! Creating a project ([`create_project`]). The row is inserted first, so the store's unique
//! key alone decides who gets a name (a second creation is `conflict` before it touches
//! anything); then the project is provisioned: the bare repository rdev owns is created,
//! the template's first commit is rendered, scanned and pushed, and the callback signing
//! secret is made. If any step after the insert fails, what this call did is undone (the
//! repository it created, the mirror, the row) before the error is returned.
//!
//! It must not check a request's fields (the caller parses them into a [`NewProject`]) nor
//! know about HTTP; it must never remove a repository it did not create in this call, nor
//! a secret or token that was there before it.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use rdev_core::{
    credentials::InjectionPlan, AgentProvider, BranchName, ErrorCode, Project, ProjectName,
    PushProtection, RepoUrl, SecretString, StoreError, ValidationError, WoodpeckerRepo,
};

use super::init::{initialise_repository, InitError};
use crate::{
    callbacks::keys::rotate_signing_secret,
    git::{GitEnv, GitError},
    scan::{rdev_secrets, Scanner},
    secrets::SecretError,
    services::Services,
    templates::TemplateError,
};

/// A project to create, its fields parsed.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: ProjectName,
    /// Where the repository is; `None`: rdev creates a bare repository under the git root
    /// (and removes it with the project).
    pub repo_url: Option<RepoUrl>,
    pub default_branch: BranchName,
    pub template: Option<String>,
    /// Template variables: with `template`, the repository rdev creates, or a given one
    /// when variables are given, gets its first commit (if its branch has none yet).
    pub variables: BTreeMap<String, String>,
    pub woodpecker_repo_id: Option<i64>,
    pub woodpecker_repo: Option<WoodpeckerRepo>,
    pub deploy_url_pattern: Option<String>,
    pub provider: Option<AgentProvider>,
    pub secrets: InjectionPlan,
    pub push_protection: PushProtection,
    pub push_protection_allow: Vec<String>,
    pub network_allow: Vec<String>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_parallel_builds: u32,
}

/// A created project and what is shown about its creation once.
#[derive(Debug)]
pub struct CreatedProject {
    pub project: Project,
    /// The first commit rdev rendered and pushed, if it made one.
    pub initial_commit: Option<String>,
    /// The callback signing secret (callbacks are signed with it), shown once.
    pub webhook_secret: SecretString,
}

/// Why a project could not be created. After the insert, nothing of the attempt is left.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// A value breaks a rule: the path of the repository rdev would create, variables
    /// without a template, a push protection allow-list.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An unknown template, or variables it does not take.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The store refused the insert (`conflict`: the name is taken) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Where the repository would go could not be worked out.
    #[error("could not work out where the repository goes: {0}")]
    RepositoryPath(#[source] std::io::Error),
    /// The bare repository could not be created (`repository_exists`: something is
    /// already where rdev would create it).
    #[error(transparent)]
    Repository(GitError),
    /// The repository's first commit could not be made, scanned or pushed.
    #[error("could not initialise the repository: {0}")]
    Initialise(#[source] InitError),
    /// The callback signing secret could not be stored.
    #[error(transparent)]
    WebhookSecret(SecretError),
}

impl ErrorCode for ProjectError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Template(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::RepositoryPath(_) => "repository_path",
            Self::Repository(e) => e.code(),
            Self::Initialise(e) => e.code(),
            Self::WebhookSecret(e) => e.code(),
        }
    }
}

/// What [`create_project`] must undo if a later step fails.
struct Undo<'a> {
    services: &'a Services,
    name: &'a ProjectName,
    /// The repository this call created.
    repo: Option<PathBuf>,
}

impl Undo<'_> {
    /// Removes the mirror and the repository this call created, then the row: everything
    /// happens while the row still holds the name, so no other creation can meet a
    /// half-removed project. Failures are logged; the caller answers the first error.
    async fn run(self) {
        let s = self.services;
        s.git.forget(self.name).await;
        if let Some(repo) = &self.repo {
            // Created exclusively by this call (`create_bare_repo`): nobody else has it.
            if let Err(e) = tokio::fs::remove_dir_all(repo).await {
                tracing::warn!(project = %self.name, path = %repo.display(), error = %e, "could not remove the repository of a failed project creation");
            }
        }
        match s.store.discard_project(self.name).await {
            Ok(discarded) => {
                for id in discarded.cancelled {
                    s.running.cancel(id);
                }
            }
            Err(e) => {
                tracing::error!(project = %self.name, error = %e, "could not remove the row of a failed project creation");
            }
        }
    }
}

/// Creates `new`: checks its template and variables, inserts the row, then provisions the
/// repository and the signing secret, undoing all of it if a step after the insert fails.
/// `actor` is who the secret's audit row names.
pub async fn create_project(
    services: &Services,
    new: NewProject,
    actor: &str,
) -> Result<CreatedProject, ProjectError> {
    let NewProject {
        name,
        repo_url,
        default_branch,
        template,
        variables,
        woodpecker_repo_id,
        woodpecker_repo,
        deploy_url_pattern,
        provider,
        secrets,
        push_protection,
        push_protection_allow,
        network_allow,
        max_cost_usd,
        max_tokens,
        max_parallel_builds,
    } = new;
    // Only a repository rdev creates now, or one given with variables, is initialised from
    // the template; an existing repository with history is never rendered over.
    let render = repo_url.is_none() || !variables.is_empty();
    // Where the repository rdev creates will be (absolute, so the recorded fact does not
    // depend on the working directory of a later process).
    let (repo_url, planned) = match repo_url {
        Some(url) => (url, None),
        None => {
            let path = std::path::absolute(services.config.git_root().join(format!("{name}.git")))
                .map_err(ProjectError::RepositoryPath)?
                .to_string_lossy()
                .into_owned();
            (RepoUrl::parse(&path)?, Some(path))
        }
    };
    let project = Project {
        name,
        repo_url,
        default_branch,
        template,
        woodpecker_repo_id,
        woodpecker_repo,
        deploy_url_pattern,
        provider,
        secrets,
        created_repo: planned,
        push_protection,
        push_protection_allow,
        network_allow,
        max_cost_usd,
        max_tokens,
        max_parallel_builds,
    };
    if let Some(t) = &project.template {
        services.templates.get(t)?;
    }
    let vars = match &project.template {
        Some(t) if render => Some(services.templates.validate_variables(t, &variables)?),
        None if !variables.is_empty() => {
            return Err(ValidationError::InvalidField {
                field: "variables",
                reason: "variables need a template".to_owned(),
            }
            .into())
        }
        _ => None,
    };
    let scanner = push_scanner(services, &project)?;

    // The unique key decides a taken name; nothing was touched yet.
    services.store.create_project(&project).await?;
    let mut undo = Undo {
        services,
        name: &project.name,
        repo: None,
    };
    let provisioned = async {
        if project.created_repo.is_some() {
            let root = services.config.git_root();
            let repo = services
                .git
                .create_bare_repo(&root, &project.name, project.default_branch.as_str())
                .await
                .map_err(ProjectError::Repository)?;
            undo.repo = Some(repo);
        }
        let initial_commit = match (&project.template, &vars) {
            (Some(t), Some(vars)) => initialise_repository(
                &services.git,
                &services.templates,
                &project,
                t,
                vars,
                &services.config.author(),
                &GitEnv::default(),
                scanner,
            )
            .await
            .map_err(|e| match e {
                // A local path the request named that git cannot clone (nothing there, or
                // no repository): the request's fault, not an upstream's. A push the
                // repository refuses stays a 502, as from a remote.
                InitError::Git(git)
                    if project.created_repo.is_none()
                        && crate::git::is_local_remote(project.repo_url.as_str())
                        && matches!(&git, GitError::Failed { args, .. } if args.starts_with("clone ")) =>
                {
                    ProjectError::Invalid(ValidationError::InvalidField {
                        field: "repo_url",
                        reason: format!("no repository git can clone at this path: {git}"),
                    })
                }
                e => ProjectError::Initialise(e),
            })?,
            _ => None,
        };
        let webhook_secret = rotate_signing_secret(&services.secrets, &project.name, actor)
            .await
            .map_err(ProjectError::WebhookSecret)?;
        Ok::<_, ProjectError>((initial_commit, webhook_secret))
    }
    .await;
    match provisioned {
        Ok((initial_commit, webhook_secret)) => Ok(CreatedProject {
            project,
            initial_commit,
            webhook_secret,
        }),
        Err(e) => {
            tracing::info!(project = %project.name, code = e.code(), error = %e, "project creation failed; undoing it");
            undo.run().await;
            Err(e)
        }
    }
}

/// The scanner for the first commit of a new project: rdev's own secrets and the rule
/// set, with the project's allow-list (no build has handed out anything yet).
fn push_scanner(services: &Services, p: &Project) -> Result<Arc<Scanner>, ProjectError> {
    let allow = p.push_protection_allow()?;
    let own = rdev_secrets(&services.config);
    let known = own.iter().map(|(k, v)| (k.as_str(), v.expose()));
    Ok(Arc::new(Scanner::new(known, allow)))
}
