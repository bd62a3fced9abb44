//! Woodpecker CI REST client (bearer token): look a repository up by name, list its
//! pipelines, find the one a pushed commit started (filtered by branch and event, paging,
//! waiting for it to appear), follow it to a terminal status and report its steps, and name
//! its page in the web UI. Routes and JSON fields follow woodpecker-ci/woodpecker v3.17.0; see
//! `docs/woodpecker.md`.
//!
//! It must not leak the token: errors carry method, path (never the base URL, which may
//! hold credentials), status and a body snippet with the token redacted. Polling loops take
//! a cancellation token and a deadline; they tolerate a few consecutive transient failures
//! (5xx, 429, transport) and give up at once on 401/403/404. It does not decide what a
//! failed pipeline means for a task: the worker does.

mod deploy_url;
mod model;

use std::time::Duration;

use rdev_core::{CiRepo, ErrorCode, SecretString, WoodpeckerRepo};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use deploy_url::{
    deploy_url, validate_deploy_url_pattern, DeployUrlError, DEPLOY_URL_PLACEHOLDERS,
};
pub use model::{Pipeline, PipelineOutcome, PipelineStatus, Repo, Step, StepState, Workflow};

/// How many bytes of an error response body are kept in the error.
pub const BODY_SNIPPET_BYTES: usize = 512;
/// How many transient failures in a row a polling loop tolerates before giving up.
pub const MAX_CONSECUTIVE_POLL_ERRORS: u32 = 3;
/// Page size for listing pipelines (Woodpecker's maximum is 50).
pub const PIPELINES_PER_PAGE: u32 = 50;
/// The most pages one search for a commit's pipeline reads before waiting for the next
/// poll (1000 pipelines of the branch and event newer than the commit's).
pub const MAX_PIPELINE_PAGES: u32 = 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How builds follow CI: the client and the waits from `[woodpecker]`, shared by every
/// build of a node.
#[derive(Debug, Clone)]
pub struct CiFollow {
    pub client: WoodpeckerClient,
    /// How long to wait for the pipeline of a pushed commit to appear.
    pub appear_timeout: Duration,
    /// How long a pipeline may run.
    pub pipeline_timeout: Duration,
    /// How often the pipeline is polled.
    pub poll: Duration,
}

impl CiFollow {
    /// The client and waits `config` names.
    pub fn from_config(config: &crate::config::WoodpeckerConfig) -> Result<Self, WoodpeckerError> {
        Ok(Self {
            client: WoodpeckerClient::new(&config.url, config.token.clone())?,
            appear_timeout: Duration::from_secs(config.appear_timeout_secs),
            pipeline_timeout: Duration::from_secs(config.pipeline_timeout_secs),
            poll: Duration::from_millis(config.poll_ms),
        })
    }
}

/// Which pipeline [`WoodpeckerClient::find_pipeline_for_commit`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineQuery<'a> {
    /// 7 to 64 hex digits: a prefix of the pipeline's commit, in any case.
    pub commit: &'a str,
    /// Only pipelines of this branch (Woodpecker's `branch` filter).
    pub branch: Option<&'a str>,
    /// Only pipelines of this webhook event, e.g. `push` (Woodpecker's `event` filter).
    pub event: Option<&'a str>,
}

impl<'a> PipelineQuery<'a> {
    /// Any pipeline of `commit`, whatever its branch or event.
    pub fn commit(commit: &'a str) -> Self {
        Self {
            commit,
            branch: None,
            event: None,
        }
    }

    /// The pipeline a push of `commit` to `branch` started: not a manual run, a cron job or
    /// another branch's push of the same commit.
    pub fn push(commit: &'a str, branch: &'a str) -> Self {
        Self {
            commit,
            branch: Some(branch),
            event: Some("push"),
        }
    }

    /// Whether `p` is a pipeline this query looks for (`sha` is the commit, lower-cased).
    fn matches(&self, p: &Pipeline, sha: &str) -> bool {
        p.commit.to_ascii_lowercase().starts_with(sha)
            && self.branch.is_none_or(|b| p.branch == b)
            && self.event.is_none_or(|e| p.event == e)
    }
}

/// What went wrong talking to Woodpecker.
#[derive(Debug, thiserror::Error)]
pub enum WoodpeckerError {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid Woodpecker URL: {reason}")]
    InvalidBaseUrl { reason: String },
    /// A commit that is not 7 to 64 hex digits.
    #[error("invalid commit SHA {sha:?}")]
    InvalidCommit { sha: String },
    /// Woodpecker answered with a non-success status.
    #[error("{method} {path} returned {status}: {body}")]
    Http {
        method: Method,
        path: String,
        status: u16,
        body: String,
    },
    /// The request did not get an answer (connect, timeout, broken body).
    #[error("{method} {path} failed: {message}")]
    Transport {
        method: Method,
        path: String,
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("{method} {path} returned an unexpected body: {message}; body: {body}")]
    Decode {
        method: Method,
        path: String,
        message: String,
        body: String,
    },
    /// No pipeline for the commit appeared in time.
    #[error("no pipeline for commit {sha} in repository {repo_id} after {waited:?}")]
    PipelineNotFound {
        repo_id: i64,
        sha: String,
        waited: Duration,
    },
    /// The pipeline did not finish before the deadline.
    #[error("pipeline {number} of repository {repo_id} still {last_status} after {waited:?}")]
    Timeout {
        repo_id: i64,
        number: i64,
        last_status: PipelineStatus,
        waited: Duration,
    },
    /// The caller cancelled.
    #[error("cancelled while waiting for Woodpecker")]
    Cancelled,
}

impl WoodpeckerError {
    /// Whether a later identical request may succeed (5xx, 429, transport failures).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::Transport { .. } => true,
            _ => false,
        }
    }
}

impl ErrorCode for WoodpeckerError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidBaseUrl { .. } => "woodpecker_invalid_url",
            Self::InvalidCommit { .. } => "invalid_commit",
            Self::Http {
                status: 401 | 403, ..
            } => "woodpecker_unauthorized",
            Self::Http { status: 404, .. } => "woodpecker_not_found",
            Self::Http { .. } => "woodpecker_http",
            Self::Transport { .. } => "woodpecker_unreachable",
            Self::Decode { .. } => "woodpecker_bad_response",
            Self::PipelineNotFound { .. } => "pipeline_not_found",
            Self::Timeout { .. } => "pipeline_timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A Woodpecker API client bound to one server and token.
#[derive(Debug, Clone)]
pub struct WoodpeckerClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    /// Removes the token (and its encodings) from error snippets.
    redactor: rdev_core::Redactor,
}

impl WoodpeckerClient {
    /// A client for the server at `base_url` (e.g. `https://ci.example.com`; a path prefix
    /// is kept) authenticating with a personal access token.
    pub fn new(base_url: &str, token: SecretString) -> Result<Self, WoodpeckerError> {
        let url = Url::parse(base_url).map_err(|e| WoodpeckerError::InvalidBaseUrl {
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WoodpeckerError::InvalidBaseUrl {
                reason: "must be an absolute http or https URL".into(),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(WoodpeckerError::InvalidBaseUrl {
                reason: "must not have a query or fragment".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("rdev/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WoodpeckerError::InvalidBaseUrl {
                reason: e.without_url().to_string(),
            })?;
        Ok(Self {
            http,
            base: url.as_str().trim_end_matches('/').to_owned(),
            redactor: rdev_core::Redactor::new([token.expose()]),
            token,
        })
    }

    /// The login of the user the token belongs to (`GET /api/user`): a cheap call that
    /// proves the server answers and accepts the token (`rdev doctor`).
    pub async fn current_user(&self) -> Result<String, WoodpeckerError> {
        #[derive(serde::Deserialize)]
        struct User {
            login: String,
        }
        let user: User = self.get_json("/api/user").await?;
        Ok(user.login)
    }

    /// The newest pipelines of a repository (first page, newest first).
    pub async fn list_pipelines(&self, repo_id: i64) -> Result<Vec<Pipeline>, WoodpeckerError> {
        self.list_pipelines_page(repo_id, 1, PIPELINES_PER_PAGE)
            .await
    }

    /// One page of a repository's pipelines, newest first.
    pub async fn list_pipelines_page(
        &self,
        repo_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<Pipeline>, WoodpeckerError> {
        let path = format!("/api/repos/{repo_id}/pipelines?page={page}&perPage={per_page}");
        self.get_json(&path).await
    }

    /// One pipeline with its workflows and steps.
    pub async fn pipeline(&self, repo_id: i64, number: i64) -> Result<Pipeline, WoodpeckerError> {
        self.get_json(&format!("/api/repos/{repo_id}/pipelines/{number}"))
            .await
    }

    /// The repository named `full_name` (`GET /api/repos/lookup/{full_name}`; Woodpecker
    /// ignores case and follows renames). An unknown name, or one the token may not read,
    /// is 404.
    pub async fn lookup_repo(&self, full_name: &WoodpeckerRepo) -> Result<Repo, WoodpeckerError> {
        // The name's characters need no escaping (`WoodpeckerRepo` admits none that do).
        self.get_json(&format!("/api/repos/lookup/{full_name}"))
            .await
    }

    /// The numeric id of the repository a project names: the id itself, or the name
    /// looked up.
    pub async fn repo_id(&self, repo: CiRepo<'_>) -> Result<i64, WoodpeckerError> {
        match repo {
            CiRepo::Id(id) => Ok(id),
            CiRepo::Name(name) => Ok(self.lookup_repo(name).await?.id),
        }
    }

    /// The pipeline's page in Woodpecker's web UI, `{server}/repos/{repo_id}/pipeline/{number}`
    /// (the form Woodpecker links to from forge statuses and badges), with the server as
    /// this client reaches it.
    pub fn pipeline_url(&self, repo_id: i64, number: i64) -> String {
        format!("{}/repos/{repo_id}/pipeline/{number}", self.base)
    }

    /// The newest pipeline `query` looks for, polling every `poll` until it appears or
    /// `wait` has passed. Each poll reads pages of the (filtered) list, newest first, until
    /// the pipeline is found, the list ends, or [`MAX_PIPELINE_PAGES`] were read.
    pub async fn find_pipeline_for_commit(
        &self,
        repo_id: i64,
        query: PipelineQuery<'_>,
        wait: Duration,
        poll: Duration,
        cancel: &CancellationToken,
    ) -> Result<Pipeline, WoodpeckerError> {
        let sha = query.commit.trim().to_ascii_lowercase();
        if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WoodpeckerError::InvalidCommit {
                sha: sha.chars().take(80).collect(),
            });
        }
        let start = Instant::now();
        let mut failures = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(WoodpeckerError::Cancelled);
            }
            match self.search_pages(repo_id, &query, &sha).await {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => failures = 0,
                Err(e) => tolerate(e, &mut failures)?,
            }
            if start.elapsed() >= wait {
                return Err(WoodpeckerError::PipelineNotFound {
                    repo_id,
                    sha,
                    waited: start.elapsed(),
                });
            }
            sleep_or_cancel(poll, cancel).await?;
        }
    }

    /// One search through the pages of the list for `query`'s pipeline: the
    /// highest-numbered match on the first page that has one (so a re-run wins).
    async fn search_pages(
        &self,
        repo_id: i64,
        query: &PipelineQuery<'_>,
        sha: &str,
    ) -> Result<Option<Pipeline>, WoodpeckerError> {
        // Built before any await: the serializer is not `Send`.
        let filters = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in [("branch", query.branch), ("event", query.event)] {
                if let Some(value) = value {
                    q.append_pair(key, value);
                }
            }
            q.finish()
        };
        for page in 1..=MAX_PIPELINE_PAGES {
            let mut path =
                format!("/api/repos/{repo_id}/pipelines?page={page}&perPage={PIPELINES_PER_PAGE}");
            if !filters.is_empty() {
                path = format!("{path}&{filters}");
            }
            let list: Vec<Pipeline> = self.get_json(&path).await?;
            let full = list.len() >= PIPELINES_PER_PAGE as usize;
            // The server filters; checking again keeps a server that ignores a filter from
            // handing over another branch's pipeline.
            let found = list
                .into_iter()
                .filter(|p| query.matches(p, sha))
                .max_by_key(|p| p.number);
            if found.is_some() || !full {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Polls pipeline `number` every `poll` until it reaches a terminal status, `timeout`
    /// has passed, or `cancel` fires.
    pub async fn follow(
        &self,
        repo_id: i64,
        number: i64,
        poll: Duration,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<PipelineOutcome, WoodpeckerError> {
        let start = Instant::now();
        let mut failures = 0;
        let mut last_status = PipelineStatus::Pending;
        loop {
            if cancel.is_cancelled() {
                return Err(WoodpeckerError::Cancelled);
            }
            match self.pipeline(repo_id, number).await {
                Ok(p) if p.status.is_terminal() => return Ok(PipelineOutcome::from_pipeline(p)),
                Ok(p) => {
                    failures = 0;
                    last_status = p.status;
                }
                Err(e) => tolerate(e, &mut failures)?,
            }
            if start.elapsed() >= timeout {
                return Err(WoodpeckerError::Timeout {
                    repo_id,
                    number,
                    last_status,
                    waited: start.elapsed(),
                });
            }
            sleep_or_cancel(poll, cancel).await?;
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, WoodpeckerError> {
        let method = Method::GET;
        let transport = |e: reqwest::Error| WoodpeckerError::Transport {
            method: Method::GET,
            path: path.to_owned(),
            message: e.without_url().to_string(),
        };
        let resp = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(WoodpeckerError::Http {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                body: self.snippet(&bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| WoodpeckerError::Decode {
            method,
            path: path.to_owned(),
            message: e.to_string(),
            body: self.snippet(&bytes),
        })
    }

    /// The start of a body with the token removed, cut at a character boundary. Redacted
    /// before the cut, so a token straddling the cut cannot leave its first bytes behind.
    fn snippet(&self, bytes: &[u8]) -> String {
        let mut text = self.redactor.redact(&String::from_utf8_lossy(bytes));
        let mut end = text.len().min(BODY_SNIPPET_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text
    }
}

/// Lets a polling loop go on after a transient error, up to the limit.
fn tolerate(e: WoodpeckerError, failures: &mut u32) -> Result<(), WoodpeckerError> {
    *failures += 1;
    if e.is_transient() && *failures < MAX_CONSECUTIVE_POLL_ERRORS {
        tracing::warn!(error = %e, failures = *failures, "transient Woodpecker error; polling on");
        Ok(())
    } else {
        Err(e)
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> Result<(), WoodpeckerError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(WoodpeckerError::Cancelled),
        () = tokio::time::sleep(d) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_straddling_the_snippet_cut_leaves_no_prefix_behind() {
        let token = "wp_0123456789abcdefghijklmnopqrstuvwxyz";
        let client = WoodpeckerClient::new("http://127.0.0.1:1", SecretString::new(token)).unwrap();
        let body = format!("{}{token} and more", "x".repeat(BODY_SNIPPET_BYTES - 10));
        let snippet = client.snippet(body.as_bytes());
        assert!(snippet.len() <= BODY_SNIPPET_BYTES);
        assert!(!snippet.contains(&token[..10]), "{snippet}");
        assert!(snippet.ends_with("[redacted]"), "{snippet}");
    }
}
