//! What a build produced ([`BuildResult`]: the agent's answer, the pushed commit, its branch
//! and deploy URL, what it cost, the agent run and CI pipeline behind it; a completed build
//! always has one, a failed build when it pushed before failing) and the callback body that
//! carries it to the client ([`CallbackPayload`], built by [`callback_payload`]).
//!
//! Both are wire contracts: the store keeps the result as JSON, `GET /tasks/{id}` shows it
//! and the callback sends it. Which keys are written as `null` when unset and which are
//! left out is part of the contract and pinned by the tests below. Reading is lenient so
//! that every result an earlier version stored still loads: missing keys take defaults and
//! keys this version does not know are kept in [`BuildResult::extra`] and written back.
//! Nothing here runs a build, reads a store or sends a request.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::{
    ProjectName, PushProtection, Redactor, TaskId, TaskStatus, TaskUsage, Usage, WorkTask,
};

/// The result of a completed build (or of a failed one that pushed), as stored on its task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildResult {
    /// The agent's final answer (with a note when it changed nothing).
    #[serde(default)]
    #[schema(required)]
    pub output: String,
    /// What the build pushed and where it is deployed.
    #[serde(default)]
    #[schema(required)]
    pub artifacts: Artifacts,
    /// What the task cost in dollars: the gateway's metered cost over every attempt, else
    /// the agent's own estimate; `null` when neither is known.
    #[serde(default)]
    #[schema(required)]
    pub cost_usd: Option<f64>,
    /// The gateway's metered usage over every attempt; `null` when nothing went through
    /// the gateway (results stored before the gateway have no key; they read as `None`).
    #[serde(default)]
    #[schema(required)]
    pub usage: Option<TaskUsage>,
    /// How long the completing attempt took, set when the result is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub duration_ms: Option<u64>,
    /// The agent run and the CI pipeline of the completing attempt.
    #[serde(default)]
    #[schema(required)]
    pub agent: AgentSummary,
    /// Push protection's findings when the project's mode is `warn` and the pushed
    /// commits held a secret; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub push_protection: Option<PushProtectionReport>,
    /// The CI pipeline of the pushed commit with its web page, when CI is followed (on
    /// success and when the pipeline failed); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pipeline: Option<PipelineReport>,
    /// Keys this version does not know (written by another version), kept so that
    /// reading and writing a result back never drops them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a build left behind; `commit_sha` and `deploy_url` are `null` when nothing was
/// pushed, `branch` is absent unless the work went to a branch of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifacts {
    /// The pushed commit.
    #[serde(default)]
    #[schema(required)]
    pub commit_sha: Option<String>,
    /// Where the pushed commit is deployed (the project's `deploy_url_pattern`).
    #[serde(default)]
    #[schema(required)]
    pub deploy_url: Option<String>,
    /// The branch the commit was pushed to when it is not the project's default branch
    /// (`rdev/<task id>` for a build without `auto_deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub branch: Option<String>,
}

/// The result's `agent` object: the agent run, and the CI pipeline of the pushed commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The run's fields, inline; `None` (no keys) when the attempt ran no agent because
    /// an earlier attempt had already pushed the task's commit.
    #[serde(flatten)]
    pub run: Option<AgentRun>,
    /// The Woodpecker pipeline that built the pushed commit, when CI is followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSummary>,
}

/// One agent run as the result reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// The provider id ([`crate::AgentProvider`]'s string; kept as text so that any
    /// stored result reads back).
    pub provider: String,
    /// The provider's session id; pass it back as `session_id` to resume.
    pub session_id: Option<String>,
    pub num_turns: u32,
    /// Tokens as the agent reported them.
    pub usage: Usage,
    /// The agent's own cost estimate, present (maybe `null`) only when the gateway
    /// metered the run and its metered cost became the result's `cost_usd`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reported_cost_usd: Option<Option<f64>>,
}

/// The CI pipeline of the pushed commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineSummary {
    /// Woodpecker's per-repository pipeline number.
    pub number: i64,
    /// How it ended (`success` for a completed build).
    pub status: String,
}

/// The CI pipeline of the pushed commit, as the result's top-level `pipeline` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineReport {
    /// Woodpecker's per-repository pipeline number.
    pub number: i64,
    /// Its last status seen (`success`, `failure`, ...; `running` when following it timed
    /// out).
    pub status: String,
    /// The pipeline's page in Woodpecker's web UI.
    pub url: String,
}

/// Push protection's findings on a push that went ahead (mode `warn`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PushProtectionReport {
    pub mode: PushProtection,
    /// All findings, including those not kept in `findings`.
    pub total_findings: usize,
    /// The first findings, each in the scanner's shape (`rule`, `path`, `line`, `place`,
    /// `description`, ...), which the scanner in `rdev-server` owns.
    pub findings: Vec<Value>,
}

/// A field whose key, when present, is kept even if its value is `null`: `Some(None)`.
/// With `#[serde(default)]` a missing key stays `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl BuildResult {
    /// This result with every known form of the redactor's values replaced, in every
    /// string it holds: what `Redactor::redact_json` does to the result's JSON.
    pub fn redacted(mut self, redactor: &Redactor) -> Self {
        if redactor.is_empty() {
            return self;
        }
        let text = |s: &mut String| {
            if let Cow::Owned(r) = redactor.redact_cow(s) {
                *s = r;
            }
        };
        text(&mut self.output);
        self.artifacts.commit_sha.iter_mut().for_each(text);
        self.artifacts.deploy_url.iter_mut().for_each(text);
        self.artifacts.branch.iter_mut().for_each(text);
        for row in self.usage.iter_mut().flat_map(|u| u.by_attempt.iter_mut()) {
            text(&mut row.provider);
            text(&mut row.model);
        }
        if let Some(run) = &mut self.agent.run {
            text(&mut run.provider);
            run.session_id.iter_mut().for_each(text);
        }
        self.agent
            .pipeline
            .iter_mut()
            .for_each(|p| text(&mut p.status));
        if let Some(p) = &mut self.pipeline {
            text(&mut p.status);
            text(&mut p.url);
        }
        for finding in self
            .push_protection
            .iter_mut()
            .flat_map(|p| p.findings.iter_mut())
        {
            redactor.redact_json(finding);
        }
        let mut extra = Value::Object(std::mem::take(&mut self.extra));
        redactor.redact_json(&mut extra);
        if let Value::Object(map) = extra {
            self.extra = map;
        }
        self
    }
}

/// The callback body for a finished task (SPEC 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallbackPayload {
    pub task_id: TaskId,
    pub project_id: ProjectName,
    /// How the task ended.
    #[schema(schema_with = crate::api_schema::terminal_status)]
    pub status: TaskStatus,
    /// The stored result: a completed task's, or what a failed one still produced (the
    /// commit it pushed before CI failed); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub result: Option<BuildResult>,
    /// The result's `cost_usd`, lifted: present (maybe `null`) whenever `result` is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cost_usd: Option<Option<f64>>,
    /// The result's `duration_ms`, lifted when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub duration_ms: Option<u64>,
    /// Why the task failed; absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// The callback body for `task`: its result as stored, with `cost_usd` and `duration_ms`
/// lifted from it, or its error.
pub fn callback_payload(task: &WorkTask) -> CallbackPayload {
    let result = task.result.as_ref();
    CallbackPayload {
        task_id: task.id,
        project_id: task.project.clone(),
        status: task.status,
        cost_usd: result.map(|r| r.cost_usd),
        duration_ms: result.and_then(|r| r.duration_ms),
        result: task.result.clone(),
        error: task.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::{AttemptUsage, BuildSpec, MeteredUsage};

    fn completed_task(result: BuildResult) -> WorkTask {
        let now = Utc::now();
        let mut t = WorkTask::new(
            ProjectName::parse("site").unwrap(),
            BuildSpec::new("x"),
            now,
        );
        t.transition_to(TaskStatus::Running, now).unwrap();
        t.transition_to(TaskStatus::Completed, now).unwrap();
        t.result = Some(result);
        t
    }

    fn metered() -> TaskUsage {
        let usage = MeteredUsage {
            input_tokens: 1200,
            output_tokens: 300,
            cache_read_input_tokens: 50,
            cache_creation_input_tokens: 20,
            cache_creation_1h_input_tokens: 0,
        };
        TaskUsage::of(vec![AttemptUsage {
            attempt: 1,
            provider: "claude-code".into(),
            model: "claude-sonnet-4-5".into(),
            usage,
            cost_usd: 0.25,
            calls: 3,
        }])
    }

    /// Every field set: what a pushed, CI-followed, metered, warned build writes.
    fn full_result() -> BuildResult {
        BuildResult {
            output: "Added the pricing page.".into(),
            artifacts: Artifacts {
                commit_sha: Some("3f9c1a2b".into()),
                deploy_url: Some("https://site.example.com".into()),
                branch: Some("rdev/task-1".into()),
            },
            cost_usd: Some(0.25),
            usage: Some(metered()),
            duration_ms: Some(48_200),
            agent: AgentSummary {
                run: Some(AgentRun {
                    provider: "claude-code".into(),
                    session_id: Some("sess-1".into()),
                    num_turns: 3,
                    usage: Usage {
                        input_tokens: 1000,
                        output_tokens: 250,
                        cache_read_input_tokens: 50,
                        cache_creation_input_tokens: 20,
                    },
                    reported_cost_usd: Some(Some(0.31)),
                }),
                pipeline: Some(PipelineSummary {
                    number: 42,
                    status: "success".into(),
                }),
            },
            push_protection: Some(PushProtectionReport {
                mode: PushProtection::Warn,
                total_findings: 1,
                findings: vec![json!({"rule": "known_value", "path": "a.txt", "line": 1})],
            }),
            pipeline: Some(PipelineReport {
                number: 42,
                status: "success".into(),
                url: "https://ci.example.com/repos/7/pipeline/42".into(),
            }),
            extra: Map::new(),
        }
    }

    #[test]
    fn callback_payload_serialises_to_the_wire_format() {
        let t = completed_task(full_result());
        let body = serde_json::to_value(callback_payload(&t)).unwrap();
        let usage = json!({
            "input_tokens": 1200, "output_tokens": 300, "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 20, "cache_creation_1h_input_tokens": 0,
            "cost_usd": 0.25, "calls": 3,
            "by_attempt": [{
                "attempt": 1, "provider": "claude-code", "model": "claude-sonnet-4-5",
                "input_tokens": 1200, "output_tokens": 300, "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 20, "cache_creation_1h_input_tokens": 0,
                "cost_usd": 0.25, "calls": 3,
            }],
        });
        let expected = json!({
            "task_id": t.id,
            "project_id": "site",
            "status": "completed",
            "cost_usd": 0.25,
            "duration_ms": 48_200,
            "result": {
                "output": "Added the pricing page.",
                "artifacts": {"commit_sha": "3f9c1a2b", "deploy_url": "https://site.example.com",
                              "branch": "rdev/task-1"},
                "cost_usd": 0.25,
                "usage": usage,
                "duration_ms": 48_200,
                "agent": {
                    "provider": "claude-code",
                    "session_id": "sess-1",
                    "num_turns": 3,
                    "usage": {
                        "input_tokens": 1000, "output_tokens": 250,
                        "cache_read_input_tokens": 50, "cache_creation_input_tokens": 20,
                    },
                    "reported_cost_usd": 0.31,
                    "pipeline": {"number": 42, "status": "success"},
                },
                "push_protection": {
                    "mode": "warn",
                    "total_findings": 1,
                    "findings": [{"rule": "known_value", "path": "a.txt", "line": 1}],
                },
                "pipeline": {"number": 42, "status": "success",
                             "url": "https://ci.example.com/repos/7/pipeline/42"},
            },
        });
        assert_eq!(body, expected);
        let back: CallbackPayload = serde_json::from_value(body).unwrap();
        assert_eq!(back, callback_payload(&t));
    }

    #[test]
    fn unset_fields_are_null_or_absent_as_before() {
        // Not metered, not pushed: cost, usage and artifacts are null; the agent's
        // estimate, pipeline, push protection and duration have no key.
        let r = BuildResult {
            output: "ok".into(),
            agent: AgentSummary {
                run: Some(AgentRun {
                    provider: "opencode".into(),
                    session_id: None,
                    num_turns: 1,
                    usage: Usage::default(),
                    reported_cost_usd: None,
                }),
                pipeline: None,
            },
            ..BuildResult::default()
        };
        let usage0 = json!({"input_tokens": 0, "output_tokens": 0,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0});
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({
                "output": "ok",
                "artifacts": {"commit_sha": null, "deploy_url": null},
                "cost_usd": null,
                "usage": null,
                "agent": {"provider": "opencode", "session_id": null, "num_turns": 1, "usage": usage0},
            })
        );
        // Metered, but the agent reported no cost of its own: the key stays, null.
        let mut metered_run = r.clone();
        if let Some(run) = &mut metered_run.agent.run {
            run.reported_cost_usd = Some(None);
        }
        let v = serde_json::to_value(&metered_run).unwrap();
        assert_eq!(v["agent"]["reported_cost_usd"], Value::Null);
        assert!(v["agent"]
            .as_object()
            .unwrap()
            .contains_key("reported_cost_usd"));
        // An attempt that found its commit already pushed ran no agent.
        let already = BuildResult {
            output: "already pushed".into(),
            ..BuildResult::default()
        };
        assert_eq!(serde_json::to_value(&already).unwrap()["agent"], json!({}));
        // A failed task's callback has no result, cost or duration.
        let mut t = completed_task(r);
        t.result = None;
        t.error = Some("boom".into());
        let body = serde_json::to_value(callback_payload(&t)).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error", "project_id", "status", "task_id"]);
    }

    #[test]
    fn callback_payload_lifts_cost_and_duration_from_the_result() {
        let t = completed_task(BuildResult {
            output: "ok".into(),
            cost_usd: Some(0.5),
            duration_ms: Some(7),
            ..BuildResult::default()
        });
        let body = serde_json::to_value(callback_payload(&t)).unwrap();
        assert_eq!(body["status"], "completed");
        assert_eq!(body["project_id"], "site");
        assert_eq!(body["cost_usd"], 0.5);
        assert_eq!(body["duration_ms"], 7);
        assert_eq!(body["result"]["output"], "ok");
        assert!(body.get("error").is_none());
    }

    #[test]
    fn a_failed_task_with_a_result_sends_it_beside_its_error() {
        // CI failed after the push: the commit and the pipeline stay in the result.
        let now = Utc::now();
        let mut t = WorkTask::new(
            ProjectName::parse("site").unwrap(),
            BuildSpec::new("x"),
            now,
        );
        t.transition_to(TaskStatus::Running, now).unwrap();
        t.transition_to(TaskStatus::Failed, now).unwrap();
        t.error = Some("CI pipeline #3 ended with status failure".into());
        t.result = Some(BuildResult {
            output: "done".into(),
            artifacts: Artifacts {
                commit_sha: Some("abc1234".into()),
                ..Artifacts::default()
            },
            cost_usd: Some(0.1),
            duration_ms: Some(9),
            pipeline: Some(PipelineReport {
                number: 3,
                status: "failure".into(),
                url: "http://ci/repos/1/pipeline/3".into(),
            }),
            ..BuildResult::default()
        });
        let body = serde_json::to_value(callback_payload(&t)).unwrap();
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"], "CI pipeline #3 ended with status failure");
        assert_eq!(body["cost_usd"], 0.1);
        assert_eq!(body["duration_ms"], 9);
        assert_eq!(
            body["result"]["artifacts"],
            json!({"commit_sha": "abc1234", "deploy_url": null})
        );
        assert_eq!(
            body["result"]["pipeline"],
            json!({"number": 3, "status": "failure", "url": "http://ci/repos/1/pipeline/3"})
        );
    }

    #[test]
    fn results_stored_by_earlier_versions_read_and_write_back_unchanged() {
        // Metered and pushed, no CI, no push protection, the agent's estimate null, and
        // a key this version does not know.
        let stored = json!({
            "output": "done",
            "artifacts": {"commit_sha": "abc", "deploy_url": null},
            "cost_usd": 0.01,
            "usage": {
                "input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0, "cache_creation_1h_input_tokens": 0,
                "cost_usd": 0.01, "calls": 1, "by_attempt": [],
            },
            "duration_ms": 1234,
            "agent": {
                "provider": "claude-code", "session_id": null, "num_turns": 2,
                "usage": {"input_tokens": 10, "output_tokens": 2,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
                "reported_cost_usd": null,
            },
            "from_a_newer_version": {"kept": [1, 2]},
        });
        let r: BuildResult = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(r.extra["from_a_newer_version"], json!({"kept": [1, 2]}));
        assert_eq!(r.agent.run.as_ref().unwrap().reported_cost_usd, Some(None));
        assert_eq!(serde_json::to_value(&r).unwrap(), stored);

        // An attempt that ran no agent, and a result with no duration.
        let stored = json!({
            "output": "already pushed",
            "artifacts": {"commit_sha": "abc", "deploy_url": "https://x.example"},
            "cost_usd": null, "usage": null,
            "agent": {"pipeline": {"number": 7, "status": "success"}},
        });
        let r: BuildResult = serde_json::from_value(stored.clone()).unwrap();
        assert!(r.agent.run.is_none());
        assert_eq!(serde_json::to_value(&r).unwrap(), stored);
    }

    #[test]
    fn results_from_before_the_gateway_read_with_no_usage() {
        let stored = json!({
            "output": "done",
            "artifacts": {"commit_sha": null, "deploy_url": null},
            "cost_usd": 0.2,
            "duration_ms": 5,
            "agent": {"provider": "claude-code", "session_id": "s", "num_turns": 1,
                      "usage": {"input_tokens": 1, "output_tokens": 1}},
        });
        let r: BuildResult = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(r.usage, None);
        let mut expected = stored;
        expected["usage"] = Value::Null;
        expected["agent"]["usage"]["cache_read_input_tokens"] = json!(0);
        expected["agent"]["usage"]["cache_creation_input_tokens"] = json!(0);
        assert_eq!(serde_json::to_value(&r).unwrap(), expected);
        // Even a bare object loads.
        let r: BuildResult = serde_json::from_value(json!({})).unwrap();
        assert_eq!(r, BuildResult::default());
    }

    #[test]
    fn redaction_reaches_every_string_as_redacting_the_json_did() {
        let secret = "s3cr3t-value-0123456789";
        let mut r = full_result();
        r.output = format!("printed {secret}");
        r.artifacts.deploy_url = Some(format!("https://{secret}.example"));
        r.artifacts.commit_sha = Some(secret.into());
        if let Some(u) = &mut r.usage {
            u.by_attempt[0].model = secret.into();
            u.by_attempt[0].provider = secret.into();
        }
        let run = r.agent.run.as_mut().unwrap();
        run.provider = secret.into();
        run.session_id = Some(secret.into());
        r.agent.pipeline.as_mut().unwrap().status = secret.into();
        r.push_protection.as_mut().unwrap().findings = vec![json!({"path": secret})];
        r.extra.insert(secret.into(), json!([secret]));
        let redactor = Redactor::new([secret]);
        let expected = redactor.redacted_json(&serde_json::to_value(&r).unwrap());
        let redacted = serde_json::to_value(r.redacted(&redactor)).unwrap();
        assert_eq!(redacted, expected);
        assert!(!redacted.to_string().contains(secret));
    }
}
