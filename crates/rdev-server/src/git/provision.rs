//! Provisioning: creating a project's new bare repository (`POST /projects` without a
//! `repo_url`), exclusively, so a repository rdev records as its own is always one it made.
//! It does not fetch, clone or check out ([`super::workspaces`]) and never removes a
//! repository it did not just create.

use std::path::{Path, PathBuf};

use rdev_core::ProjectName;

use super::{command::Repo, GitEnv, GitError, GitWorkspaces};

impl GitWorkspaces {
    /// Creates a new bare repository `root/<project>.git` on `branch` and returns its
    /// absolute path (used as the project's `repo_url` and `created_repo`). Its directory
    /// is created exclusively: if anything exists there already, nothing is touched and the
    /// answer is [`GitError::RepositoryExists`], so a repository rdev records as its own
    /// (and removes with the project) is always one it created, never one it adopted.
    pub async fn create_bare_repo(
        &self,
        root: &Path,
        project: &ProjectName,
        branch: &str,
    ) -> Result<PathBuf, GitError> {
        let path = root.join(format!("{project}.git"));
        let path = std::path::absolute(&path).map_err(GitError::io("resolve", &path))?;
        tokio::fs::create_dir_all(root)
            .await
            .map_err(GitError::io("create", root))?;
        match tokio::fs::create_dir(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(GitError::RepositoryExists(path));
            }
            Err(e) => return Err(GitError::io("create", &path)(e)),
        }
        let initial = format!("--initial-branch={branch}");
        let init = self
            .git(Repo::None, &GitEnv::default())
            .run(&[
                "init",
                "--bare",
                "--quiet",
                "--template=",
                &initial,
                "--",
                &path.to_string_lossy(),
            ])
            .await;
        if let Err(e) = init {
            // The directory is ours (created above): leave nothing half-made behind.
            let _ = tokio::fs::remove_dir_all(&path).await;
            return Err(e);
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use rdev_core::ErrorCode;

    use super::*;

    #[tokio::test]
    async fn a_relative_root_is_made_absolute_and_new_repositories_get_no_hooks() {
        let tmp = tempfile::tempdir().unwrap();
        let ws_root = GitWorkspaces::new("relative/git");
        assert!(ws_root.root.is_absolute());
        assert!(ws_root.root.starts_with(std::env::current_dir().unwrap()));
        let repos = tmp.path().join("repos");
        let project = ProjectName::parse("site").unwrap();
        let bare = ws_root
            .create_bare_repo(&repos, &project, "trunk")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(bare.join("HEAD")).unwrap(),
            "ref: refs/heads/trunk\n"
        );
        assert!(!bare.join("hooks").exists(), "no template hooks");
    }

    #[tokio::test]
    async fn a_new_repository_is_never_made_over_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let repos = tmp.path().join("repos");
        let project = ProjectName::parse("site").unwrap();
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let bare = ws_root
            .create_bare_repo(&repos, &project, "main")
            .await
            .unwrap();
        assert!(bare.is_absolute());
        std::fs::write(bare.join("marker"), "theirs").unwrap();
        let err = ws_root
            .create_bare_repo(&repos, &project, "main")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "repository_exists");
        assert!(err.to_string().contains("site.git"), "{err}");
        assert_eq!(
            std::fs::read_to_string(bare.join("marker")).unwrap(),
            "theirs"
        );
    }

    #[tokio::test]
    async fn a_filesystem_failure_is_an_io_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        // The repositories' root cannot be made: a file stands where its parent should be.
        let blocker = tmp.path().join("blocker");
        std::fs::write(&blocker, "not a directory").unwrap();
        let repos = blocker.join("repos");
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let project = ProjectName::parse("site").unwrap();
        let err = ws_root
            .create_bare_repo(&repos, &project, "main")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GitError::Io { op: "create", path, .. } if path == &repos),
            "{err:?}"
        );
        assert_eq!(err.code(), "git_io_error");
        assert!(err.to_string().contains("blocker/repos"), "{err}");
    }
}
