//! Per-attempt tokens and who a model call belongs to. The worker mints a [`Grant`] when an
//! attempt starts (its token is the agent's API key) and drops it when the attempt ends,
//! which revokes the token. The gateway finds the caller of a model call by the token's
//! SHA-256 ([`Grants::authenticate`]); a shared agent server (OpenCode) presents the one
//! server token instead, and its calls are attributed by their session header to the grant
//! the session was attributed to.
//!
//! What a grant may spend is the `budget` child module's (reserve-then-settle); this
//! module only finds the grant. It does no I/O.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use rand::{distr::Alphanumeric, Rng};
use rdev_core::{Budget, ModelGrant, SecretString, SessionAttribution, TaskId};
use sha2::{Digest, Sha256};

mod budget;

pub use budget::{GrantState, ModelSpend, Refusal, Reservation, Spend};

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
        let state = Arc::new(GrantState::new(spec));
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
        state.revoke();
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
        self.state.exhausted().await
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
}
