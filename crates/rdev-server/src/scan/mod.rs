//! Push protection: before rdev pushes, the commits it made are checked for secrets, and a
//! finding stops the push (docs/security.md, "Push protection"). A [`Scanner`] knows two
//! kinds of secret: values rdev knows (what it handed to the task, the project's callback
//! signing secret, its own API and CI tokens, the agents' keys), found in every encoding
//! the redactor knows by the redactor's own automaton; and credential formats
//! ([`rules`]). It scans what [`crate::git::Workspace::unpushed_changes`] read: the new
//! lines of changed files ([`lines`]), new files and binary files whole, symlink targets,
//! and the names of new files. A push too large to scan within the limits is a finding
//! (`scan_limit`), never clean.
//!
//! A finding names a file, a line and a rule, and for a known value its label and
//! encoding, never the value: a file name that itself holds a secret is shown with that
//! part as `[redacted]`. This module decides nothing about tasks: the worker turns a
//! report into a failed task or a warning.

mod lines;
pub mod rules;

use std::{
    collections::HashSet,
    fmt,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use rdev_core::{
    credentials::Encoding,
    push_protection::{is_allowed, AllowPattern},
    Redactor, SecretString, REDACTED,
};
use serde::Serialize;

use self::{
    lines::{is_binary, NewParts},
    rules::RuleSet,
};
use crate::{
    config::Config,
    git::{ChangeLimits, ChangedFile, GitError, Unpushed, Workspace},
};

/// The task error code of a push stopped by push protection.
pub const SECRET_IN_COMMIT: &str = "secret_in_commit";

/// The rule of a finding for a value rdev knows.
pub const KNOWN_VALUE: &str = "known_value";

/// The rule of a finding for a push that was too large or too slow to scan.
pub const SCAN_LIMIT: &str = "scan_limit";

/// Known values shorter than this are not looked for: a short value (a PIN, `true`, a
/// port) occurs in ordinary text by chance, and a push blocked by chance teaches people
/// to turn protection off. They are still redacted from everything rdev shows.
pub const MIN_KNOWN_VALUE_LEN: usize = 8;

/// Findings kept in a report (the count covers all of them).
const MAX_FINDINGS: usize = 100;

/// Findings named in a task's error; the event lists up to [`MAX_FINDINGS`].
const FINDINGS_IN_ERROR: usize = 10;

/// How much one push scan may read and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// What is read from git at most (see [`ChangeLimits`]).
    pub changes: ChangeLimits,
    /// How long reading and scanning may take together.
    pub timeout: Duration,
}

impl Default for ScanLimits {
    /// 64 MiB of contents, 20,000 changed files, 1,000 commits, 60 seconds.
    fn default() -> Self {
        Self {
            changes: ChangeLimits {
                max_bytes: 64 << 20,
                max_files: 20_000,
                max_commits: 1_000,
            },
            timeout: Duration::from_secs(60),
        }
    }
}

/// Where in a file a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// A line of a text file (`line` says which).
    Line,
    /// Somewhere in a binary file.
    Binary,
    /// The file's name.
    Name,
    /// The push as a whole (`scan_limit`).
    Push,
}

/// One secret found in what rdev was about to push. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Finding {
    /// `known_value`, `scan_limit` or the id of a rule in `rules.toml`.
    pub rule: String,
    /// The file (a secret in its own name replaced by `[redacted]`); empty for the push as
    /// a whole.
    pub path: String,
    /// The 1-based line in the file's new contents ([`Place::Line`] only).
    pub line: Option<u64>,
    pub place: Place,
    /// For `known_value`: which value, by the name it has in rdev (a variable name such
    /// as `DEPLOY_TOKEN`, `git token`, `RDEV_API_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// For `known_value`: how the value was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The commit that adds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What the rule finds, or why the push could not be scanned.
    pub description: String,
}

impl fmt::Display for Finding {
    /// `t.txt:3 known_value DEPLOY_TOKEN (base64)`, `id_rsa:1 private-key`,
    /// `app.bin (binary) github-pat`, `scan_limit: <why>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.place, self.line) {
            (Place::Push, _) => return write!(f, "{}: {}", self.rule, self.description),
            (Place::Line, Some(line)) => write!(f, "{}:{line}", self.path)?,
            (Place::Line, None) => write!(f, "{}", self.path)?,
            (Place::Binary, _) => write!(f, "{} (binary)", self.path)?,
            (Place::Name, _) => write!(f, "{} (file name)", self.path)?,
        }
        write!(f, " {}", self.rule)?;
        if let Some(secret) = &self.secret {
            write!(f, " {secret}")?;
        }
        if let Some(encoding) = self.encoding {
            write!(f, " ({encoding})")?;
        }
        Ok(())
    }
}

/// What one push scan found.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// Up to [`MAX_FINDINGS`] findings, in the order of the commits and files.
    pub findings: Vec<Finding>,
    /// All findings, including those not kept.
    pub total_findings: usize,
    pub commits: usize,
    pub files: usize,
    /// Bytes of contents read.
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl ScanReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.total_findings == 0
    }

    /// The findings for a task's error: the first few, then how many more.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .findings
            .iter()
            .take(FINDINGS_IN_ERROR)
            .map(Finding::to_string)
            .collect();
        let shown = parts.len();
        if self.total_findings > shown {
            parts.push(format!("and {} more", self.total_findings - shown));
        }
        parts.join("; ")
    }

    fn limit(why: String, started: Instant) -> Self {
        Self {
            findings: vec![Finding {
                rule: SCAN_LIMIT.to_owned(),
                path: String::new(),
                line: None,
                place: Place::Push,
                secret: None,
                encoding: None,
                commit: None,
                description: why,
            }],
            total_findings: 1,
            commits: 0,
            files: 0,
            bytes: 0,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// Finds known values and credential formats in changed files.
#[derive(Debug, Clone)]
pub struct Scanner {
    known: Redactor,
    rules: &'static RuleSet,
    allow: Vec<AllowPattern>,
}

impl Scanner {
    /// A scanner for the built-in rules and the `(label, value)` pairs in `known` (values
    /// shorter than [`MIN_KNOWN_VALUE_LEN`] are left out); `allow` lists the paths where
    /// rule findings do not count (known values count everywhere).
    pub fn new<'a>(
        known: impl IntoIterator<Item = (&'a str, &'a str)>,
        allow: Vec<AllowPattern>,
    ) -> Self {
        let known = known
            .into_iter()
            .filter(|(_, value)| value.len() >= MIN_KNOWN_VALUE_LEN);
        Self {
            known: Redactor::labelled(known),
            rules: RuleSet::builtin(),
            allow,
        }
    }

    /// The findings in `files` (the first [`MAX_FINDINGS`], and how many there are at
    /// least); `timed_out` when `deadline` passed before every file was scanned.
    pub fn scan_files(&self, files: &[ChangedFile], deadline: Instant) -> Found {
        let mut out = Found::default();
        for file in files {
            if Instant::now() > deadline {
                out.timed_out = true;
                break;
            }
            self.scan_file(file, &mut out);
        }
        out
    }

    /// The findings of one file: its name when it is new, then its new contents.
    fn scan_file(&self, file: &ChangedFile, out: &mut Found) {
        let real_path = file.path_lossy();
        let allowed = is_allowed(&self.allow, &real_path);
        let mut path = real_path.clone();
        if file.added {
            let hits = self.hits(&file.path, allowed);
            if !hits.is_empty() {
                path = mask(&file.path, &hits);
                for hit in hits {
                    out.add(hit.finding(file, &path, Place::Name, None));
                }
            }
        }
        let new = &file.new[..];
        let binary = is_binary(new);
        let parts = NewParts::of(file.old.as_deref(), new);
        for region in parts.regions(new.len()) {
            for mut hit in self.hits(&new[region.clone()], allowed) {
                hit.range = hit.range.start + region.start..hit.range.end + region.start;
                let Some(line) = parts.first_new_line(new, &hit.range) else {
                    continue;
                };
                let finding = if binary {
                    hit.finding(file, &path, Place::Binary, None)
                } else {
                    hit.finding(file, &path, Place::Line, Some(line))
                };
                out.add(finding);
            }
        }
    }

    /// Known values, then credential formats not inside a known value (one finding for
    /// one secret) and not in an allow-listed file.
    fn hits<'a>(&'a self, haystack: &'a [u8], allowed: bool) -> Vec<Hit<'a>> {
        let mut hits: Vec<Hit<'a>> = self
            .known
            .find_iter(haystack)
            .map(|m| Hit {
                range: m.range,
                rule: KNOWN_VALUE,
                description: "a value rdev handed to this build or holds itself",
                secret: m.label,
                encoding: Some(m.encoding),
            })
            .collect();
        if allowed {
            return hits;
        }
        let known = hits.len();
        for (rule, range) in self.rules.find_all(haystack) {
            let inside_known = hits[..known]
                .iter()
                .any(|k| k.range.start < range.end && range.start < k.range.end);
            if !inside_known {
                hits.push(Hit {
                    range,
                    rule: &rule.id,
                    description: &rule.description,
                    secret: None,
                    encoding: None,
                });
            }
        }
        hits.sort_by_key(|h| h.range.start);
        hits
    }
}

/// What [`Scanner::scan_files`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// The first [`MAX_FINDINGS`] distinct findings.
    pub findings: Vec<Finding>,
    /// How many findings there are (past the kept ones, repeats are counted too).
    pub total: usize,
    /// Whether the deadline passed first.
    pub timed_out: bool,
    seen: HashSet<Finding>,
}

impl Found {
    fn add(&mut self, finding: Finding) {
        if self.seen.contains(&finding) {
            return;
        }
        self.total += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.seen.insert(finding.clone());
            self.findings.push(finding);
        }
    }
}

/// One match, before it becomes a [`Finding`].
struct Hit<'a> {
    range: Range<usize>,
    rule: &'a str,
    description: &'a str,
    secret: Option<&'a str>,
    encoding: Option<Encoding>,
}

impl Hit<'_> {
    fn finding(&self, file: &ChangedFile, path: &str, place: Place, line: Option<u64>) -> Finding {
        Finding {
            rule: self.rule.to_owned(),
            path: path.to_owned(),
            line,
            place,
            secret: self.secret.map(str::to_owned),
            encoding: self.encoding,
            commit: Some(file.commit.clone()),
            description: self.description.to_owned(),
        }
    }
}

/// `path` with every hit replaced by [`REDACTED`].
fn mask(path: &[u8], hits: &[Hit<'_>]) -> String {
    let mut out = Vec::with_capacity(path.len());
    let mut at = 0;
    for hit in hits {
        if hit.range.start < at {
            continue;
        }
        out.extend_from_slice(&path[at..hit.range.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        at = hit.range.end;
    }
    out.extend_from_slice(&path[at..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Parts of a configured variable's name that say its value is a credential. Only those
/// are looked for: the agents' environment also holds URLs and switches
/// (`ANTHROPIC_BASE_URL`, `CLAUDE_CODE_MAX_RETRIES`) that a project may well write.
const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
];

/// The values rdev itself holds that no commit should carry, with their names: the
/// configured API token, the Woodpecker token, and the agents' configured credentials.
/// Named API tokens are stored only as hashes; the scan's `rdev-api-token` rule covers
/// them by their format.
pub fn rdev_secrets(config: &Config) -> Vec<(String, SecretString)> {
    let mut out = Vec::new();
    if let Some(token) = &config.api_token {
        out.push(("RDEV_API_TOKEN".to_owned(), token.clone()));
    }
    if let Some(wp) = &config.woodpecker {
        out.push(("woodpecker token".to_owned(), wp.token.clone()));
    }
    let agents = [
        ("agents.claude_code.env", &config.agents.claude_code.env),
        (
            "agents.opencode.server.env",
            &config.agents.opencode.server.env,
        ),
    ];
    for (table, env) in agents {
        for (name, value) in env {
            let upper = name.to_ascii_uppercase();
            if CREDENTIAL_NAME_PARTS.iter().any(|p| upper.contains(p)) {
                out.push((format!("{table}.{name}"), value.clone()));
            }
        }
    }
    out
}

/// Reads what a push of `ws` would send and scans it, within `limits`. A push larger than
/// the limits, or one whose scan does not finish in time, is reported as a `scan_limit`
/// finding. Errors are git failing to answer.
pub async fn scan_push(
    ws: &Workspace,
    scanner: Arc<Scanner>,
    limits: &ScanLimits,
) -> Result<ScanReport, GitError> {
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let too_slow = || {
        format!(
            "the scan did not finish within {} s; nothing was pushed unscanned",
            limits.timeout.as_secs()
        )
    };
    let read = tokio::time::timeout(limits.timeout, ws.unpushed_changes(&limits.changes)).await;
    let (commits, files, bytes) = match read {
        Err(_) => return Ok(ScanReport::limit(too_slow(), started)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Unpushed::TooLarge(why))) => return Ok(ScanReport::limit(why, started)),
        Ok(Ok(Unpushed::Changes {
            commits,
            files,
            bytes,
        })) => (commits, files, bytes),
    };
    let count = files.len();
    let found = tokio::task::spawn_blocking(move || scanner.scan_files(&files, deadline))
        .await
        .map_err(|e| GitError::Spawn(format!("the scan stopped: {e}")))?;
    let mut report = ScanReport {
        findings: found.findings,
        total_findings: found.total,
        commits,
        files: count,
        bytes,
        elapsed_ms: 0,
    };
    if found.timed_out {
        // What was found so far stays; the rest is a limit, not clean.
        let limit = ScanReport::limit(too_slow(), started);
        report.findings.extend(limit.findings);
        report.total_findings += 1;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests;
