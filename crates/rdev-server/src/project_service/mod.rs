//! Projects beyond their row, for the API and the worker: creating one
//! ([`create_project`]: the row first, then the repository, its first commit and the
//! signing secret, all undone if a step fails), giving an empty repository its first
//! commit from a template ([`initialise_repository`]; the worker uses
//! [`render_initial_commit`] for a build on a still-empty project) and deleting one
//! completely ([`delete_project`]).
//!
//! Callers parse and check the fields (the API builds a [`NewProject`]); this module does
//! the work and answers errors with stable codes, never HTTP statuses. It must never remove
//! a repository rdev did not create.

mod create;
mod delete;
mod init;

pub use create::{create_project, CreatedProject, NewProject, ProjectError};
pub use delete::{delete_project, DeleteReport, RepositoryOutcome};
pub use init::{initialise_repository, render_initial_commit, InitError};
