//! One OpenCode run from subscription to [`AgentResult`]: subscribe to `/event` (and see
//! `server.connected`) before anything else, create or resume the session, run the turn in
//! `POST /session/{id}/message` while forwarding the session's events, and finish when that
//! request answers — by itself, or after an abort for a cancel, timeout or cost/turn limit
//! — or when the server is lost. The final totals come from the stored messages,
//! not from the stream, so a slow consumer or a missed event never loses them. This module
//! owns no state across runs (the agent keeps the cancel table) and never starts servers.
//! Subscribing and reading the event stream is [`feed`]'s; a session kept in a session
//! directory is recreated and kept again through [`resume`].

use std::{path::PathBuf, time::Duration};

use rdev_core::{AgentError, AgentEvent, AgentRequest, AgentResult, AgentStatus, EventSink, Usage};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use super::{
    client::{ClientError, OpenCodeClient},
    config::{ModelRef, OpenCodeConfig},
    events::{summarize, EventMapper},
    resume,
};
use crate::{
    common::{end_early, invalid, sleep_opt},
    redact::EventRedactor,
};

mod feed;

use feed::{spawn_reader, subscribe, Feed};

/// OpenCode sends `server.heartbeat` about every 10 s; this much silence means the
/// connection is dead even if the socket has not noticed.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// How often a lost event stream is re-opened while the server still answers.
const MAX_RESUBSCRIBES: u32 = 3;

/// While a stopped turn has not ended, the abort is repeated this often (an abort that
/// lands before the server registered the turn does nothing).
const ABORT_REPEAT: Duration = Duration::from_millis(500);

/// After the prompt request answered, how long to wait for the session's idle report: the
/// last events travel on the other connection and, on a loaded server, lag the answer by
/// seconds. The report always comes; the bound only covers one that got lost.
const DRAIN: Duration = Duration::from_secs(15);

/// What one run needs from the agent.
#[derive(Debug)]
pub(super) struct RunContext<'a> {
    pub config: &'a OpenCodeConfig,
    pub client: OpenCodeClient,
    /// Secret values to scrub from everything the run emits.
    pub redactor: &'a EventRedactor,
}

/// Why the run loop stopped before the session went idle by itself.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    Cancelled,
    TimedOut,
    Limit(String),
}

/// Runs `request` to its end.
pub(super) async fn run(
    ctx: RunContext<'_>,
    request: AgentRequest,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<AgentResult, AgentError> {
    let started = Instant::now();
    let deadline = started + request.timeout;
    let workdir = resolve_workdir(&request.workdir)?;
    // A session kept in a session directory is recreated in this directory (see
    // `resume`); one it does not keep fails here, before the server is asked anything.
    let recap = resume::recap(&request, &workdir)?;
    let model = match request.model.as_ref().or(ctx.config.model.as_ref()) {
        Some(m) => Some(ModelRef::parse(m).map_err(|e| invalid("model", e.to_string()))?),
        None => None,
    };
    let mut run = Run {
        ctx: &ctx,
        workdir,
        events: &events,
        cancel: &cancel,
        deadline,
        started,
        // A resumed session is known from the start; a new one once it is created.
        session: request.session_id.clone().filter(|_| recap.is_none()),
        session_dir: request.session_dir.clone(),
        stop: None,
    };

    let avail = ctx.config.availability_timeout.min(request.timeout);
    let health = tokio::select! {
        r = ctx.client.wait_available(avail, &cancel) => r?,
        _ = tokio::time::sleep_until(deadline) => return run.finish_early(AgentStatus::TimedOut).await,
    };
    if health.is_none() {
        return run.finish_early(AgentStatus::Cancelled).await;
    }

    // Subscribe before the session or prompt exists, so no event of this run can be missed.
    let (session_tx, session_rx) = watch::channel(None::<String>);
    let reader_stop = CancellationToken::new();
    let _stop_reader = reader_stop.clone().drop_guard();
    let stream = tokio::select! {
        r = subscribe(&ctx.client, &run.workdir, avail) => r?,
        _ = cancel.cancelled() => return run.finish_early(AgentStatus::Cancelled).await,
    };
    let mut feed = spawn_reader(stream, session_rx.clone(), reader_stop.child_token());

    // Creating a session is harmless to abandon: a cancel here just drops the request.
    let session = match (&request.session_id, &recap) {
        (Some(id), None) => id.clone(),
        _ => tokio::select! {
            r = ctx.client.create_session(&run.workdir) => r?.id,
            _ = cancel.cancelled() => return run.finish_early(AgentStatus::Cancelled).await,
            _ = tokio::time::sleep_until(deadline) => return run.finish_early(AgentStatus::TimedOut).await,
        },
    };
    run.session = Some(session.clone());
    // The server's model calls carry the session id: from now on they are this run's.
    if let Some(grant) = &request.model_grant {
        grant.sessions.attribute(&session);
    }
    session_tx.send_replace(Some(session.clone()));
    if let Some(recap) = &recap {
        tokio::select! {
            r = ctx.client.note(&session, &run.workdir, recap) => r?,
            _ = cancel.cancelled() => return run.finish_early(AgentStatus::Cancelled).await,
        }
    }
    let mut mapper = EventMapper::new();
    if request.session_id.is_some() {
        let busy = ctx.client.busy_sessions(&run.workdir).await?;
        if busy.contains_key(&session) {
            return Err(AgentError::Protocol(format!(
                "opencode session {session} is busy with another prompt"
            )));
        }
        let earlier = ctx.client.messages(&session, &run.workdir).await?;
        mapper = EventMapper::with_earlier_prompts(user_message_ids(&earlier));
    }
    let tools = ctx.client.tool_ids(&run.workdir).await.unwrap_or_default();
    let model_name = model
        .as_ref()
        .map(|m| format!("{}/{}", m.provider_id, m.model_id));
    let started_event = AgentEvent::Started {
        session_id: Some(session.clone()),
        model: model_name,
        tools,
    };
    if !run.forward(vec![started_event]).await {
        return Err(AgentError::SinkClosed);
    }
    if cancel.is_cancelled() {
        return run.finish_early(AgentStatus::Cancelled).await;
    }

    // The turn runs inside `POST /session/{id}/message`, whose answer marks its end. The
    // request is never dropped while the turn may run: its answer is the only reliable
    // sign that a turn that an abort may have missed (the server stores the prompt before
    // it registers the turn for abort) is over. See `stream`.
    let mut prompt = {
        let (client, session, dir) = (ctx.client.clone(), session.clone(), run.workdir.clone());
        let (text, model) = (request.prompt.clone(), model.clone());
        AbortOnDropHandle::new(tokio::spawn(async move {
            client.prompt(&session, &dir, &text, model.as_ref()).await
        }))
    };

    let end = run
        .stream(
            &mut feed,
            &mut mapper,
            &request,
            &mut prompt,
            &session_rx,
            &reader_stop,
        )
        .await?;
    reader_stop.cancel();
    if run.stop.is_some() && matches!(end, TurnEnd::Done) {
        run.settle(&session).await;
    }
    let (lost, failed) = match end {
        TurnEnd::Done | TurnEnd::GaveUp => (None, None),
        TurnEnd::Lost(why) => (Some(why), None),
        TurnEnd::Failed(why) => (None, Some(why)),
        TurnEnd::Rejected(e) => return Err(e.into()),
    };
    run.complete(&mapper, lost, failed, request.timeout).await
}

/// State of one run shared by its phases.
struct Run<'a> {
    ctx: &'a RunContext<'a>,
    workdir: PathBuf,
    events: &'a EventSink,
    cancel: &'a CancellationToken,
    deadline: Instant,
    started: Instant,
    session: Option<String>,
    /// Where the session is kept when the run ends ([`AgentRequest::session_dir`]).
    session_dir: Option<PathBuf>,
    stop: Option<Stop>,
}

/// How the turn ended, seen from the stream loop.
#[derive(Debug)]
enum TurnEnd {
    /// The prompt request answered (done, failed or aborted).
    Done,
    /// The session did not settle within the abort grace; the run is closed anyway.
    GaveUp,
    /// The server stopped answering.
    Lost(String),
    /// The prompt request failed although the server still answers.
    Failed(String),
    /// The server refused the prompt before storing it.
    Rejected(ClientError),
}

impl Run<'_> {
    /// Forwards events to the consumer; `false` if the consumer is gone. A cancel or the
    /// deadline interrupts a wait on a slow consumer (the rest of the batch is offered
    /// without waiting: the run is ending and its result is sent separately).
    async fn forward(&mut self, batch: Vec<AgentEvent>) -> bool {
        for mut event in batch {
            self.ctx.redactor.event(&mut event);
            if self.stop.is_some() {
                if self.events.try_send(event).is_err() && self.events.is_closed() {
                    return false;
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => self.stop = Some(Stop::Cancelled),
                _ = tokio::time::sleep_until(self.deadline) => self.stop = Some(Stop::TimedOut),
                sent = self.events.send(event) => if sent.is_err() { return false },
            }
        }
        true
    }

    /// Forwards the session's events until its turn has ended: the prompt request has
    /// answered and the session reported idle (or [`DRAIN`] passed for trailing events).
    /// On a stop (cancel, timeout, limit) it aborts, again every [`ABORT_REPEAT`] and on
    /// every busy report, until the prompt request answers or the abort grace runs out.
    async fn stream(
        &mut self,
        feed: &mut mpsc::Receiver<Feed>,
        mapper: &mut EventMapper,
        request: &AgentRequest,
        prompt: &mut AbortOnDropHandle<Result<serde_json::Value, ClientError>>,
        session_rx: &watch::Receiver<Option<String>>,
        reader_stop: &CancellationToken,
    ) -> Result<TurnEnd, AgentError> {
        let session = self.session.clone().unwrap_or_default();
        let mut answered: Option<Result<serde_json::Value, ClientError>> = None;
        let mut idle_seen = false;
        let mut drain_until: Option<Instant> = None;
        let mut give_up_at: Option<Instant> = None;
        let mut next_abort: Option<Instant> = None;
        let mut resubscribes = 0u32;
        loop {
            if let Some(answer) = &answered {
                match answer {
                    Err(e) if self.stop.is_none() => {
                        return Ok(self.prompt_failed(e, mapper).await)
                    }
                    _ if idle_seen => return Ok(TurnEnd::Done),
                    _ => {
                        drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
                    }
                }
            } else if self.stop.is_some() && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + self.ctx.config.abort_grace);
                self.abort(&session).await;
                next_abort = Some(Instant::now() + ABORT_REPEAT);
            }
            let item = tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if self.stop.is_none() => {
                    self.stop = Some(Stop::Cancelled);
                    continue;
                }
                _ = tokio::time::sleep_until(self.deadline), if self.stop.is_none() => {
                    self.stop = Some(Stop::TimedOut);
                    continue;
                }
                r = &mut *prompt, if answered.is_none() => {
                    answered = Some(r.unwrap_or_else(|e| Err(ClientError::Unreachable {
                        method: "POST",
                        path: format!("/session/{session}/message"),
                        reason: e.to_string(),
                    })));
                    next_abort = None;
                    continue;
                }
                _ = sleep_opt(drain_until) => return Ok(TurnEnd::Done),
                _ = sleep_opt(give_up_at), if answered.is_none() => {
                    tracing::warn!(%session, "opencode turn did not end after abort; closing the run");
                    return Ok(TurnEnd::GaveUp);
                }
                _ = sleep_opt(next_abort) => {
                    self.abort(&session).await;
                    next_abort = Some(Instant::now() + ABORT_REPEAT);
                    continue;
                }
                item = feed.recv() => item.unwrap_or_else(|| Feed::Ended("event reader stopped".to_owned())),
                _ = tokio::time::sleep(STREAM_SILENCE) => {
                    Feed::Ended(format!("no event for {} s", STREAM_SILENCE.as_secs()))
                }
            };
            match item {
                Feed::Event(ev) if ev.is_server_level() => {}
                Feed::Event(ev) => {
                    let mapped = mapper.map(&ev);
                    if !self.forward(mapped.events).await {
                        return Err(AgentError::SinkClosed);
                    }
                    // An idle report counts only if no busy one came after it: an abort
                    // that lands before the server registered the turn idles the session,
                    // then the turn starts anyway (and is aborted again below). Ending on
                    // that earlier idle left the session busy after the run returned.
                    if mapped.busy {
                        idle_seen = false;
                    }
                    idle_seen |= mapped.idle && mapper.prompt_admitted();
                    if mapped.busy && self.stop.is_some() && answered.is_none() {
                        self.abort(&session).await;
                    }
                    if self.stop.is_none() {
                        self.stop = limit_reached(request, mapper).map(Stop::Limit);
                    }
                }
                Feed::Malformed(message) => {
                    if !self.forward(vec![AgentEvent::Error { message }]).await {
                        return Err(AgentError::SinkClosed);
                    }
                }
                Feed::Ended(reason) => {
                    if answered.is_some() {
                        return Ok(TurnEnd::Done);
                    }
                    match self
                        .resubscribe(&reason, resubscribes, session_rx, reader_stop)
                        .await
                    {
                        Ok(new_feed) => {
                            resubscribes += 1;
                            *feed = new_feed;
                        }
                        Err(why) => return Ok(TurnEnd::Lost(why)),
                    }
                }
            }
        }
    }

    /// The prompt request failed while no stop was asked for: refused before the prompt
    /// was stored (an `Err` for the caller), the server gone, or a failed turn.
    async fn prompt_failed(&self, e: &ClientError, mapper: &EventMapper) -> TurnEnd {
        if let ClientError::Http { .. } = e {
            if !mapper.prompt_admitted() {
                return TurnEnd::Rejected(e.clone());
            }
        }
        let url = self.ctx.client.base_url().to_string();
        match self.ctx.client.health().await {
            Err(h) => TurnEnd::Lost(format!(
                "opencode server at {url} stopped answering during the run ({e}); health check: {h}"
            )),
            Ok(_) => TurnEnd::Failed(format!("the prompt request failed: {e}")),
        }
    }

    /// After a stopped turn ended: waits until the server no longer lists the session as
    /// busy, aborting again every [`ABORT_REPEAT`], for at most the abort grace, so that a
    /// run resuming the session next does not find it busy. The idle report and the status
    /// the server answers can disagree for a moment on a loaded server.
    async fn settle(&self, session: &str) {
        let until = Instant::now() + self.ctx.config.abort_grace;
        loop {
            match self.ctx.client.busy_sessions(&self.workdir).await {
                Ok(busy) if !busy.contains_key(session) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%session, error = %e, "could not check that the stopped opencode session is idle");
                    return;
                }
            }
            let now = Instant::now();
            if now >= until {
                tracing::warn!(%session, "opencode session still busy after the abort grace");
                return;
            }
            self.abort(session).await;
            tokio::time::sleep(ABORT_REPEAT.min(until - now)).await;
        }
    }

    /// Sends an abort; errors are logged (the abort grace still bounds the wait).
    async fn abort(&self, session: &str) {
        if let Err(e) = self.ctx.client.abort(session, &self.workdir).await {
            tracing::warn!(%session, error = %e, "opencode abort failed");
        }
    }

    /// The event stream ended while the turn runs: if the server still answers, subscribe
    /// again; otherwise the server is lost (the reason says which server and why).
    async fn resubscribe(
        &self,
        reason: &str,
        resubscribes: u32,
        session_rx: &watch::Receiver<Option<String>>,
        reader_stop: &CancellationToken,
    ) -> Result<mpsc::Receiver<Feed>, String> {
        let client = &self.ctx.client;
        let url = client.base_url().to_string();
        if let Err(e) = client.health().await {
            return Err(format!(
                "opencode server at {url} stopped answering during the run ({reason}); health check: {e}"
            ));
        }
        if resubscribes >= MAX_RESUBSCRIBES {
            return Err(format!(
                "event stream from opencode server at {url} kept breaking ({reason})"
            ));
        }
        tracing::warn!(%reason, "opencode event stream ended; subscribing again");
        let avail = self.ctx.config.availability_timeout;
        let stream = subscribe(client, &self.workdir, avail)
            .await
            .map_err(|e| format!("re-subscribing to {url} failed: {e}"))?;
        Ok(spawn_reader(
            stream,
            session_rx.clone(),
            reader_stop.child_token(),
        ))
    }

    /// Ends a run that never sent its prompt.
    async fn finish_early(&self, status: AgentStatus) -> Result<AgentResult, AgentError> {
        let verb = match status {
            AgentStatus::Cancelled => "cancelled",
            _ => "timed out",
        };
        let stage = match self.session {
            None => "before the session was created",
            Some(_) => "before the prompt was sent",
        };
        let output = format!("{verb} {stage}");
        let (session, elapsed) = (self.session.clone(), self.started.elapsed());
        Ok(end_early(self.events, status, output, session, elapsed).await)
    }

    /// Builds the final result from the stored messages (falling back to what the stream
    /// showed if they cannot be read) and sends it.
    async fn complete(
        &self,
        mapper: &EventMapper,
        lost: Option<String>,
        prompt_failed: Option<String>,
        timeout: Duration,
    ) -> Result<AgentResult, AgentError> {
        let session = self.session.clone().unwrap_or_default();
        let messages = match &lost {
            Some(_) => None,
            None => match self.ctx.client.messages(&session, &self.workdir).await {
                Ok(messages) => Some(messages),
                Err(e) => {
                    tracing::warn!(%session, error = %e, "cannot read opencode messages");
                    None
                }
            },
        };
        if let (Some(dir), Some(messages)) = (&self.session_dir, &messages) {
            if let Err(e) = resume::save(dir, &session, &self.workdir, messages) {
                let message = format!("session {session} was not kept for a later resume: {e}");
                tracing::warn!(%message);
                let _ = self.events.send(AgentEvent::Error { message }).await;
            }
        }
        let summary = messages.as_deref().map(summarize);
        let failure = lost
            .clone()
            .or_else(|| match &self.stop {
                Some(Stop::Limit(why)) => Some(why.clone()),
                _ => None,
            })
            .or_else(|| mapper.session_error().map(str::to_owned))
            .or_else(|| summary.as_ref().and_then(|s| s.error.clone()))
            .or(prompt_failed);
        let (status, output) = match (&self.stop, failure) {
            (Some(Stop::Cancelled), _) => (AgentStatus::Cancelled, "cancelled".to_owned()),
            (Some(Stop::TimedOut), _) => (
                AgentStatus::TimedOut,
                format!("timed out after {} s", timeout.as_secs()),
            ),
            (_, Some(why)) => (AgentStatus::Failed, why),
            (_, None) => match &summary {
                Some(s) => (AgentStatus::Success, s.output.clone()),
                None => (AgentStatus::Success, mapper.last_text().to_owned()),
            },
        };
        let (cost_usd, usage, turns) = match &summary {
            Some(s) => (Some(s.cost_usd), s.usage, s.turns),
            None => (
                (mapper.turns() > 0).then(|| mapper.cost()),
                Usage::default(),
                u32::try_from(mapper.turns()).unwrap_or(u32::MAX),
            ),
        };
        let mut result = AgentResult {
            status,
            output,
            session_id: Some(session),
            cost_usd,
            usage,
            num_turns: turns,
            duration: self.started.elapsed(),
        };
        self.ctx.redactor.result(&mut result);
        let _ = self
            .events
            .send(AgentEvent::Completed(result.clone()))
            .await;
        Ok(result)
    }
}

/// The first limit of `request` the run has passed, as a failure reason.
fn limit_reached(request: &AgentRequest, mapper: &EventMapper) -> Option<String> {
    if let Some(max) = request.max_cost_usd {
        if mapper.cost() > max {
            return Some(format!(
                "stopped: cost {:.4} USD passed the limit of {max} USD",
                mapper.cost()
            ));
        }
    }
    if let Some(max) = request.max_turns {
        if mapper.turns() > max as usize {
            return Some(format!("stopped: more than {max} model turns"));
        }
    }
    None
}

/// Ids of the user messages in a `GET /session/{id}/message` list.
fn user_message_ids(messages: &[serde_json::Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.pointer("/info/role").and_then(|r| r.as_str()) == Some("user"))
        .filter_map(|m| m.pointer("/info/id").and_then(|i| i.as_str()))
        .map(str::to_owned)
        .collect()
}

/// The working directory as an absolute, existing directory (OpenCode keys its instances
/// by the exact path).
fn resolve_workdir(dir: &std::path::Path) -> Result<PathBuf, AgentError> {
    let abs = std::fs::canonicalize(dir)
        .map_err(|e| invalid("workdir", format!("{}: {e}", dir.display())))?;
    if !abs.is_dir() {
        return Err(invalid(
            "workdir",
            format!("{} is not a directory", abs.display()),
        ));
    }
    Ok(abs)
}
