//! Per-attempt tokens and what they may spend. The worker mints a [`Grant`] when an
//! attempt starts (its token is the agent's API key) and drops it when the attempt ends,
//! which revokes the token. The gateway finds the caller of a model call by the token's
//! SHA-256 ([`Grants::authenticate`]); a shared agent server (OpenCode) presents the one
//! server token instead, and its calls are attributed by their session header to the grant
//! the session was attributed to.
//!
//! Budgets are reserve-then-settle ([`GrantState::reserve`], [`Reservation::settle`]): a
//! call is admitted only while what is settled plus what is reserved by calls in flight is
//! below every limit, and it reserves its worst case first, so N parallel calls at the cap
//! cannot all pass it. Once settled spending reaches a limit the grant is exhausted: every
//! further call is refused and the worker is woken to stop the agent. This module counts;
//! it does no I/O.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use rand::{distr::Alphanumeric, Rng};
use rdev_core::{Budget, MeteredUsage, ModelGrant, SecretString, SessionAttribution, TaskId};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Every gateway token starts with this; the rest is 40 random base62 characters.
pub const TOKEN_PREFIX: &str = "rdev-gw-";

/// The header OpenCode sends its session id in on every model call.
pub const SESSION_HEADER: &str = "x-session-id";

/// Who a grant is for: the attempt its usage is recorded under, and the labels of its
/// events and metrics.
#[derive(Debug, Clone, Default)]
pub struct GrantSpec {
    /// The task; `None` for a run outside the queue (`rdev agent run`).
    pub task: Option<TaskId>,
    pub attempt: u32,
    /// The project's name, for metrics.
    pub project: String,
    /// The agent provider, for metrics and stored usage.
    pub provider: String,
    /// The smallest of the build's, the project's and the server's limits.
    pub budget: Budget,
    /// What earlier attempts of the task already spent (the budget is the task's).
    pub prior: Spend,
    /// `host:port` pairs the egress proxy lets this attempt reach.
    pub network_allow: Vec<(String, u16)>,
}

/// Dollars and tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub cost_usd: f64,
    pub tokens: u64,
}

impl Spend {
    fn add(&mut self, other: Spend) {
        self.cost_usd += other.cost_usd;
        self.tokens = self.tokens.saturating_add(other.tokens);
    }

    fn sub(&mut self, other: Spend) {
        self.cost_usd = (self.cost_usd - other.cost_usd).max(0.0);
        self.tokens = self.tokens.saturating_sub(other.tokens);
    }
}

/// One model's usage within an attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelSpend {
    pub usage: MeteredUsage,
    pub cost_usd: f64,
    pub calls: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    settled: Spend,
    reserved: Spend,
    /// Calls admitted and not yet settled or released.
    in_flight: u32,
    by_model: BTreeMap<String, ModelSpend>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The attempt has ended; its token is no longer valid.
    Revoked,
    /// The budget is used up (`limit` names which).
    Exhausted { spent: Spend, limit: String },
    /// What is left of the budget is reserved by calls in flight; once they settle there
    /// may be room again.
    Held { committed: Spend, limit: String },
}

/// A live grant's state, shared by the handle the worker holds and the calls in flight.
#[derive(Debug)]
pub struct GrantState {
    pub spec: GrantSpec,
    ledger: Mutex<Ledger>,
    exhausted: CancellationToken,
    revoked: CancellationToken,
    /// Woken whenever a call is settled or released.
    idle: tokio::sync::Notify,
}

impl GrantState {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit `spend` has reached, if any.
    fn reached(&self, spend: Spend) -> Option<String> {
        let b = &self.spec.budget;
        if let Some(max) = b.max_cost_usd {
            if spend.cost_usd >= max {
                return Some(format!("max_cost_usd {max}"));
            }
        }
        if let Some(max) = b.max_tokens {
            if spend.tokens >= max {
                return Some(format!("max_tokens {max}"));
            }
        }
        None
    }

    /// Admits a call that may cost up to `worst`: only while settled plus reserved spending
    /// is below every limit. The reservation is released when the returned value is
    /// settled or dropped.
    pub fn reserve(self: &Arc<Self>, worst: Spend) -> Result<Reservation, Refusal> {
        if self.revoked.is_cancelled() {
            return Err(Refusal::Revoked);
        }
        let mut ledger = self.ledger();
        let spent = ledger.settled;
        if let Some(limit) = self.reached(spent) {
            drop(ledger);
            self.exhausted.cancel();
            return Err(Refusal::Exhausted { spent, limit });
        }
        let mut committed = spent;
        committed.add(ledger.reserved);
        if let Some(limit) = self.reached(committed) {
            return Err(Refusal::Held { committed, limit });
        }
        ledger.reserved.add(worst);
        ledger.in_flight += 1;
        Ok(Reservation {
            grant: Arc::clone(self),
            worst,
            done: false,
        })
    }

    /// What this attempt and earlier ones have spent, settled calls only.
    pub fn spent(&self) -> Spend {
        self.ledger().settled
    }

    /// Usage per model of this attempt's settled calls.
    pub fn by_model(&self) -> BTreeMap<String, ModelSpend> {
        self.ledger().by_model.clone()
    }

    /// Whether the budget is used up.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted.is_cancelled()
    }

    /// Whether the attempt has ended.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }

    /// Waits until no admitted call is still unsettled, or `timeout` passes: the agent may
    /// have ended a moment before its last call's usage was read. Returns whether it got
    /// there.
    pub async fn wait_settled(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.ledger().in_flight == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return false;
            }
        }
    }

    fn finish_call(&self, ledger: &mut Ledger, worst: Spend) {
        ledger.reserved.sub(worst);
        ledger.in_flight = ledger.in_flight.saturating_sub(1);
    }
}

/// A call's reserved worst case, to be settled with what it actually used.
#[derive(Debug)]
pub struct Reservation {
    grant: Arc<GrantState>,
    worst: Spend,
    done: bool,
}

impl Reservation {
    /// The grant this reservation belongs to.
    pub fn grant(&self) -> &Arc<GrantState> {
        &self.grant
    }

    /// Replaces the reservation with what the call used. Returns whether this call made
    /// the grant exhausted (it was not before).
    pub fn settle(mut self, model: &str, usage: &MeteredUsage, cost_usd: f64) -> bool {
        self.done = true;
        let grant = Arc::clone(&self.grant);
        let mut ledger = grant.ledger();
        grant.finish_call(&mut ledger, self.worst);
        ledger.settled.add(Spend {
            cost_usd,
            tokens: usage.total_tokens(),
        });
        let entry = ledger.by_model.entry(model.to_owned()).or_default();
        entry.usage.add(usage);
        entry.cost_usd += cost_usd;
        entry.calls += 1;
        let reached = grant.reached(ledger.settled).is_some();
        drop(ledger);
        let newly = reached && !grant.exhausted.is_cancelled();
        if reached {
            grant.exhausted.cancel();
        }
        grant.idle.notify_waiters();
        newly
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let mut ledger = self.grant.ledger();
            self.grant.finish_call(&mut ledger, self.worst);
            drop(ledger);
            self.grant.idle.notify_waiters();
        }
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn mint() -> SecretString {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    SecretString::new(format!("{TOKEN_PREFIX}{random}"))
}

#[derive(Debug, Default)]
struct Tables {
    by_hash: HashMap<[u8; 32], Arc<GrantState>>,
    sessions: HashMap<String, Weak<GrantState>>,
}

/// The live grants of one gateway.
#[derive(Debug)]
pub struct Grants {
    tables: Mutex<Tables>,
    server_token: SecretString,
    server_hash: [u8; 32],
}

impl Default for Grants {
    fn default() -> Self {
        let server_token = mint();
        Self {
            server_hash: hash(server_token.expose()),
            server_token,
            tables: Mutex::default(),
        }
    }
}

/// Why a caller was not recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token in `x-api-key` or `Authorization: Bearer`.
    Missing,
    /// A token no live attempt holds (unknown, or its attempt has ended).
    Unknown,
    /// The shared server's token with a session no live attempt owns.
    UnknownSession,
}

impl Grants {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token a shared agent server presents; valid for as long as the gateway runs, but
    /// only together with a session attributed to a live grant.
    pub fn server_token(&self) -> &SecretString {
        &self.server_token
    }

    /// Mints a grant for `spec`; it is valid until the returned handle is dropped.
    pub fn mint(self: &Arc<Self>, spec: GrantSpec) -> Grant {
        let token = mint();
        let ledger = Ledger {
            settled: spec.prior,
            ..Ledger::default()
        };
        let state = Arc::new(GrantState {
            spec,
            ledger: Mutex::new(ledger),
            exhausted: CancellationToken::new(),
            revoked: CancellationToken::new(),
            idle: tokio::sync::Notify::new(),
        });
        if state.reached(state.spent()).is_some() {
            state.exhausted.cancel();
        }
        self.tables()
            .by_hash
            .insert(hash(token.expose()), Arc::clone(&state));
        Grant {
            grants: Arc::clone(self),
            state,
            token,
        }
    }

    /// The grant a model call belongs to: the one whose token it carries, or, for the
    /// server token, the one its session was attributed to.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        session: Option<&str>,
    ) -> Result<Arc<GrantState>, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let h = hash(token);
        let tables = self.tables();
        if let Some(state) = tables.by_hash.get(&h) {
            return Ok(Arc::clone(state));
        }
        if h != self.server_hash {
            return Err(AuthError::Unknown);
        }
        session
            .and_then(|s| tables.sessions.get(s))
            .and_then(Weak::upgrade)
            .filter(|s| !s.is_revoked())
            .ok_or(AuthError::UnknownSession)
    }

    fn revoke(&self, token: &SecretString, state: &Arc<GrantState>) {
        state.revoked.cancel();
        let mut tables = self.tables();
        tables.by_hash.remove(&hash(token.expose()));
        tables
            .sessions
            .retain(|_, s| s.upgrade().is_some_and(|s| !Arc::ptr_eq(&s, state)));
    }

    /// How many grants are live (tests, metrics).
    pub fn live(&self) -> usize {
        self.tables().by_hash.len()
    }
}

/// An attempt's grant. Dropping it revokes the token.
#[derive(Debug)]
pub struct Grant {
    grants: Arc<Grants>,
    state: Arc<GrantState>,
    token: SecretString,
}

/// Attributes a shared server's sessions to one grant.
#[derive(Debug)]
struct SessionLink {
    grants: Weak<Grants>,
    state: Weak<GrantState>,
}

impl SessionAttribution for SessionLink {
    fn attribute(&self, session_id: &str) {
        let (Some(grants), Some(state)) = (self.grants.upgrade(), self.state.upgrade()) else {
            return;
        };
        if !state.is_revoked() {
            grants
                .tables()
                .sessions
                .insert(session_id.to_owned(), Arc::downgrade(&state));
        }
    }
}

impl Grant {
    /// The token (the agent's API key).
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// What the agent run gets: the token and the session attribution hook.
    pub fn model_grant(&self) -> ModelGrant {
        ModelGrant {
            token: self.token.clone(),
            sessions: Arc::new(SessionLink {
                grants: Arc::downgrade(&self.grants),
                state: Arc::downgrade(&self.state),
            }),
        }
    }

    /// The shared state (ledger, spec).
    pub fn state(&self) -> &Arc<GrantState> {
        &self.state
    }

    /// Resolves once the budget is used up (at once when it already is).
    pub async fn exhausted(&self) {
        self.state.exhausted.cancelled().await
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.grants.revoke(&self.token, &self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Arc<Grants> {
        Arc::new(Grants::default())
    }

    fn limited(cost: f64) -> GrantSpec {
        GrantSpec {
            budget: Budget {
                max_cost_usd: Some(cost),
                max_tokens: None,
            },
            ..GrantSpec::default()
        }
    }

    fn usage(tokens: u64) -> MeteredUsage {
        MeteredUsage {
            input_tokens: tokens,
            ..MeteredUsage::default()
        }
    }

    #[test]
    fn tokens_are_valid_until_the_grant_is_dropped_and_unknown_ones_never() {
        let g = grants();
        let grant = g.mint(GrantSpec::default());
        let token = grant.token().expose().to_owned();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 40);
        assert!(g.authenticate(Some(&token), None).is_ok());
        assert_eq!(
            g.authenticate(Some("rdev-gw-guess"), None).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(g.authenticate(None, None).unwrap_err(), AuthError::Missing);
        let state = Arc::clone(grant.state());
        drop(grant);
        assert_eq!(
            g.authenticate(Some(&token), None).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            state.reserve(Spend::default()).unwrap_err(),
            Refusal::Revoked,
            "a call in flight when the attempt ended cannot start another"
        );
        assert_eq!(g.live(), 0);
    }

    #[test]
    fn the_server_token_works_only_with_a_session_of_a_live_grant() {
        let g = grants();
        let server = g.server_token().expose().to_owned();
        assert_eq!(
            g.authenticate(Some(&server), Some("ses_1")).unwrap_err(),
            AuthError::UnknownSession
        );
        let grant = g.mint(GrantSpec {
            attempt: 7,
            ..GrantSpec::default()
        });
        grant.model_grant().sessions.attribute("ses_1");
        let found = g.authenticate(Some(&server), Some("ses_1")).unwrap();
        assert_eq!(found.spec.attempt, 7);
        assert!(g.authenticate(Some(&server), None).is_err());
        assert!(g.authenticate(Some(&server), Some("ses_2")).is_err());
        let link = grant.model_grant();
        drop(grant);
        assert!(g.authenticate(Some(&server), Some("ses_1")).is_err());
        link.sessions.attribute("ses_3");
        assert!(g.authenticate(Some(&server), Some("ses_3")).is_err());
    }

    #[test]
    fn parallel_calls_at_the_cap_cannot_all_pass_it() {
        let g = grants();
        let grant = g.mint(limited(1.0));
        let state = grant.state();
        let worst = Spend {
            cost_usd: 0.4,
            tokens: 10,
        };
        // Three calls in flight reserve 1.2 >= 1.0: the fourth is refused before any
        // of them settled.
        let held: Vec<Reservation> = (0..3).map(|_| state.reserve(worst).unwrap()).collect();
        assert!(matches!(state.reserve(worst), Err(Refusal::Held { .. })));
        // The refused call does not make the grant exhausted while spending is below it...
        for r in held {
            r.settle("m", &usage(10), 0.1);
        }
        assert!(!grant.state().is_exhausted());
        assert!((state.spent().cost_usd - 0.3).abs() < 1e-9);
        // ...and settling releases the reservations.
        let r = state.reserve(worst).unwrap();
        assert!(r.settle("m", &usage(10), 0.75), "this call reached the cap");
        assert!(state.is_exhausted());
        assert!(matches!(
            state.reserve(Spend::default()),
            Err(Refusal::Exhausted { .. })
        ));
        let by_model = state.by_model();
        assert_eq!(by_model["m"].calls, 4);
        assert_eq!(by_model["m"].usage.input_tokens, 40);
    }

    #[test]
    fn many_threads_at_the_cap_overshoot_by_at_most_the_reserved_calls() {
        let g = grants();
        let grant = g.mint(limited(1.0));
        let state = Arc::clone(grant.state());
        let worst = Spend {
            cost_usd: 0.3,
            tokens: 0,
        };
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    let mut admitted = 0;
                    loop {
                        match state.reserve(worst) {
                            Ok(r) => {
                                admitted += 1;
                                r.settle("m", &usage(1), 0.3);
                            }
                            Err(Refusal::Held { .. }) => std::thread::yield_now(),
                            Err(_) => break,
                        }
                    }
                    admitted
                })
            })
            .collect();
        let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // Each admitted call saw settled + reserved below 1.0 and reserved 0.3 first, so
        // at most four calls (3 x 0.3 < 1.0, the fourth reaching 1.2) ever pass.
        assert!(
            admitted <= 4,
            "{admitted} calls passed a 1.0 cap at 0.3 each"
        );
        assert!(state.spent().cost_usd < 1.0 + 0.3 + 1e-9);
        assert!(state.is_exhausted());
    }

    #[test]
    fn earlier_attempts_count_against_the_task_budget() {
        let g = grants();
        let mut spec = limited(1.0);
        spec.prior = Spend {
            cost_usd: 1.5,
            tokens: 0,
        };
        let grant = g.mint(spec);
        assert!(grant.state().is_exhausted());
        assert!(grant.state().reserve(Spend::default()).is_err());
        let dropped = g.mint(limited(1.0));
        let r = dropped.state().reserve(Spend {
            cost_usd: 5.0,
            tokens: 0,
        });
        drop(r);
        assert!(
            dropped.state().reserve(Spend::default()).is_ok(),
            "a dropped reservation is released"
        );
    }
}
