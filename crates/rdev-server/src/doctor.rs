//! `rdev doctor`: checks the set-up a build depends on and says, one line per check, what
//! is fine, what is worth a look and what will make builds fail, each non-ok line with its
//! fix. The checks: git, node, the agent CLIs against the pinned versions, the sandbox,
//! model credentials per enabled provider (the model gateway's upstream key for the agents
//! whose calls go through it; unless offline, one cheap authenticated call to the
//! endpoint), the database and its migrations, the data directory, the master key file,
//! the gateway's upstream keys in the credential store, Woodpecker and the API token
//! posture.
//!
//! It reports; it changes nothing (no file created, no migration run, no key written).
//! Provider readiness ([`readiness`]) and the credential lookup ([`credentials`]) live
//! here too, because the API, the worker and the start-up log ask the same questions.

pub mod credentials;
mod probe;
pub mod readiness;
mod system;
mod tools;

use serde::Serialize;

use crate::config::Config;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth a look (builds may still run).
    Warning,
    /// Builds will fail until it is fixed.
    Error,
}

impl Status {
    /// `ok`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    /// What was checked, e.g. `git` or `claude-code credentials`.
    pub check: String,
    /// What was found.
    pub detail: String,
    /// How to fix it (non-ok checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            check: check.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    /// A check worth a look, with its fix.
    pub fn warning(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status: Status::Warning,
            fix: Some(fix.into()),
            ..Self::ok(check, detail)
        }
    }

    /// A check that failed, with its fix.
    pub fn error(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status: Status::Error,
            fix: Some(fix.into()),
            ..Self::ok(check, detail)
        }
    }

    /// `ok       git: git version 2.47.3`, with `; fix: ...` when not ok. One line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<7}  {}: {}",
            self.status.as_str(),
            self.check,
            self.detail
        );
        if let Some(fix) = &self.fix {
            line.push_str("; fix: ");
            line.push_str(fix);
        }
        line.replace('\n', " ")
    }
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub errors: usize,
    pub warnings: usize,
    /// Whether network calls were skipped.
    pub offline: bool,
}

impl Report {
    fn new(checks: Vec<Check>, offline: bool) -> Self {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        Self {
            errors: count(Status::Error),
            warnings: count(Status::Warning),
            checks,
            offline,
        }
    }

    /// Whether nothing is an error (the exit status of `rdev doctor`).
    pub fn passed(&self) -> bool {
        self.errors == 0
    }

    /// One line per check, then a summary line.
    pub fn render(&self) -> String {
        let mut out: String = self.checks.iter().map(|c| c.line() + "\n").collect();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{}, {}{}\n",
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
            if self.offline {
                " (offline: model endpoints and Woodpecker were not called)"
            } else {
                ""
            }
        ));
        out
    }
}

/// What `rdev doctor` may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip calls to model endpoints and Woodpecker. The database is still opened: rdev
    /// cannot run without it.
    pub offline: bool,
}

/// Runs every check against `config` (and rdev's environment).
pub async fn run(config: &Config, options: Options) -> Report {
    let enabled = &config.agents.enabled;
    let mut checks = vec![tools::git().await, tools::node().await];
    for id in enabled {
        checks.push(tools::agent_cli(config, id).await);
    }
    checks.push(tools::sandbox(config).await);
    for id in enabled {
        let (found, check) = probe::credentials(config, id);
        checks.push(check);
        if let (Some(endpoint), false) = (found, options.offline) {
            checks.push(probe::model_endpoint(id, &endpoint).await);
        }
    }
    let (database, db) = system::database(config).await;
    checks.push(database);
    checks.push(system::data_dir(config));
    checks.push(system::master_key(config));
    checks.extend(system::gateway_keys(config, db.as_ref()).await);
    checks.push(probe::woodpecker(config, options.offline).await);
    checks.push(system::api_tokens(config, db.as_ref()).await);
    if let Some(db) = db {
        db.close().await;
    }
    Report::new(checks, options.offline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_check_with_the_fix_and_a_summary() {
        let report = Report::new(
            vec![
                Check::ok("git", "git version 2.47.3"),
                Check::warning("node", "not found", "install Node.js"),
                Check::error("database", "cannot connect\nat all", "start it"),
            ],
            true,
        );
        let text = report.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok       git: git version 2.47.3");
        assert_eq!(lines[1], "warning  node: not found; fix: install Node.js");
        assert_eq!(
            lines[2],
            "error    database: cannot connect at all; fix: start it"
        );
        assert!(
            lines[3].starts_with("1 error, 1 warning (offline"),
            "{text}"
        );
        assert!(!report.passed());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][0]["status"], "ok");
        assert!(json["checks"][0].get("fix").is_none());
        assert_eq!(json["checks"][2]["fix"], "start it");
        assert_eq!(json["errors"], 1);
    }
}
