//! [`ProviderRegistry`]: the code agents this process can run, keyed by provider id. The
//! first one registered is the default. It holds adapters; it never constructs them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use crate::{AgentProvider, CodeAgent, ErrorCode};

/// Registry errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {0} is already registered")]
    Duplicate(AgentProvider),
    #[error("unknown provider {0}")]
    Unknown(String),
    #[error("no agent provider is registered")]
    Empty,
}

impl ErrorCode for RegistryError {
    fn code(&self) -> &'static str {
        match self {
            Self::Duplicate(_) => "provider_already_registered",
            Self::Unknown(_) => "unknown_provider",
            Self::Empty => "no_provider",
        }
    }
}

#[derive(Default)]
struct Inner {
    order: Vec<AgentProvider>,
    agents: HashMap<AgentProvider, Arc<dyn CodeAgent>>,
}

/// Thread-safe map from provider id to adapter. Reads (every build) vastly outnumber writes
/// (start-up), hence a `RwLock`; no lock is held across an `.await`.
#[derive(Default)]
pub struct ProviderRegistry {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.list())
            .finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an adapter under its own provider id. The first one added becomes the default.
    pub fn register(&self, agent: Arc<dyn CodeAgent>) -> Result<(), RegistryError> {
        let id = agent.provider();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.agents.contains_key(&id) {
            return Err(RegistryError::Duplicate(id));
        }
        inner.order.push(id.clone());
        inner.agents.insert(id, agent);
        Ok(())
    }

    /// The adapter for `id`.
    pub fn get(&self, id: &str) -> Result<Arc<dyn CodeAgent>, RegistryError> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .agents
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .map(|(_, v)| Arc::clone(v))
            .ok_or_else(|| RegistryError::Unknown(id.to_owned()))
    }

    /// The first registered adapter.
    pub fn default_agent(&self) -> Result<Arc<dyn CodeAgent>, RegistryError> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .order
            .first()
            .and_then(|id| inner.agents.get(id))
            .map(Arc::clone)
            .ok_or(RegistryError::Empty)
    }

    /// The adapter for `id`, or the default when `id` is `None`.
    pub fn resolve(&self, id: Option<&str>) -> Result<Arc<dyn CodeAgent>, RegistryError> {
        match id {
            Some(id) => self.get(id),
            None => self.default_agent(),
        }
    }

    /// Registered provider ids, in registration order (the default first).
    pub fn list(&self) -> Vec<AgentProvider> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.order.clone()
    }

    /// Every registered agent's state directories for runs in `workdir`
    /// ([`CodeAgent::workdir_state`]), without duplicates: what goes or stays with a
    /// workspace, whichever agent ran in it.
    pub fn workdir_state(&self, workdir: &Path) -> Vec<PathBuf> {
        self.collect(|agent| agent.workdir_state(workdir))
    }

    /// Every registered agent's orphaned state under `root` ([`CodeAgent::orphaned_state`]).
    pub fn orphaned_state(&self, root: &Path) -> Vec<PathBuf> {
        self.collect(|agent| agent.orphaned_state(root))
    }

    /// What `each` returns for every agent, sorted and without duplicates; the adapters are
    /// asked outside the lock (they may touch the filesystem).
    fn collect(&self, each: impl Fn(&dyn CodeAgent) -> Vec<PathBuf>) -> Vec<PathBuf> {
        let agents: Vec<Arc<dyn CodeAgent>> = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            inner.agents.values().cloned().collect()
        };
        let mut dirs: Vec<PathBuf> = agents.iter().flat_map(|a| each(a.as_ref())).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

#[cfg(test)]
mod tests {
    use std::{thread, time::Duration};

    use super::*;
    use crate::{
        AgentError, AgentRequest, AgentResult, AgentStatus, Capabilities, EventSink, RunId, Usage,
    };

    #[derive(Debug)]
    struct Fixed(AgentProvider);

    #[async_trait::async_trait]
    impl CodeAgent for Fixed {
        fn provider(&self) -> AgentProvider {
            self.0.clone()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn execute(
            &self,
            _request: AgentRequest,
            _events: EventSink,
        ) -> Result<AgentResult, AgentError> {
            Ok(AgentResult {
                status: AgentStatus::Success,
                output: self.0.to_string(),
                session_id: None,
                cost_usd: None,
                usage: Usage::default(),
                num_turns: 0,
                duration: Duration::ZERO,
            })
        }
        async fn cancel(&self, _run: RunId) -> Result<(), AgentError> {
            Ok(())
        }
    }

    fn agent(id: &str) -> Arc<dyn CodeAgent> {
        Arc::new(Fixed(AgentProvider::parse(id).unwrap()))
    }

    #[test]
    fn first_registered_is_default_and_list_keeps_order() {
        let r = ProviderRegistry::new();
        assert_eq!(r.default_agent().unwrap_err(), RegistryError::Empty);
        r.register(agent("opencode")).unwrap();
        r.register(agent("claude-code")).unwrap();
        assert_eq!(r.default_agent().unwrap().provider().as_str(), "opencode");
        assert_eq!(r.resolve(None).unwrap().provider().as_str(), "opencode");
        assert_eq!(
            r.resolve(Some("claude-code")).unwrap().provider().as_str(),
            "claude-code"
        );
        let ids: Vec<_> = r.list().iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["opencode", "claude-code"]);
    }

    #[test]
    fn duplicate_id_is_an_error_and_keeps_the_first() {
        let r = ProviderRegistry::new();
        r.register(agent("claude-code")).unwrap();
        let err = r.register(agent("claude-code")).unwrap_err();
        assert_eq!(err, RegistryError::Duplicate(AgentProvider::claude_code()));
        assert_eq!(err.code(), "provider_already_registered");
        assert_eq!(r.list().len(), 1);
    }

    #[test]
    fn unknown_id_is_an_error() {
        let r = ProviderRegistry::new();
        r.register(agent("claude-code")).unwrap();
        assert_eq!(
            r.get("nope").unwrap_err(),
            RegistryError::Unknown("nope".into())
        );
    }

    #[test]
    fn concurrent_register_and_get_are_consistent() {
        let r = Arc::new(ProviderRegistry::new());
        let ids: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let r = Arc::clone(&r);
                let ids = ids.clone();
                thread::spawn(move || {
                    let mut won = 0;
                    for (i, id) in ids.iter().enumerate() {
                        // Every thread tries every id: exactly one registration may win.
                        if r.register(agent(id)).is_ok() {
                            won += 1;
                        }
                        // Readers interleave with writers and never see a torn state.
                        let listed = r.list();
                        assert!(listed.iter().all(|p| r.get(p.as_str()).is_ok()));
                        if (i + t) % 3 == 0 {
                            let _ = r.default_agent().unwrap();
                        }
                    }
                    won
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, ids.len(), "each id registered exactly once");
        let listed = r.list();
        assert_eq!(listed.len(), ids.len());
        let default = r.default_agent().unwrap().provider();
        assert_eq!(default, listed[0]);
    }
}
