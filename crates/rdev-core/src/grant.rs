//! [`ModelGrant`]: what an agent run gets instead of a model API key. rdev's gateway mints
//! one per attempt; the adapter hands its token to the agent as the API key (the gateway
//! swaps it for the real key) and, when one agent server serves several runs, tells the
//! gateway which of the server's sessions belongs to this run ([`SessionAttribution`]).
//! Nothing here talks to the gateway; the server implements the trait.

use std::{fmt, sync::Arc};

use crate::SecretString;

/// Attributes the model calls of a shared agent server's session to one run.
pub trait SessionAttribution: Send + Sync + fmt::Debug {
    /// From now until the run's grant ends, calls that name `session_id` (OpenCode sends it
    /// as `X-Session-Id` on every model call) are this run's.
    fn attribute(&self, session_id: &str);
}

/// A run's access to the model through rdev's gateway.
#[derive(Clone)]
pub struct ModelGrant {
    /// The per-attempt token the agent presents as its API key; valid only while the
    /// attempt runs.
    pub token: SecretString,
    /// How a shared server's sessions are attributed to this run.
    pub sessions: Arc<dyn SessionAttribution>,
}

impl fmt::Debug for ModelGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelGrant")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}
