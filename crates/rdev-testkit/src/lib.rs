//! Test-only building blocks: a scripted model server speaking the Anthropic Messages API,
//! a fake Woodpecker, a callback receiver, git fixtures, and the fixtures every crate's
//! integration tests share (a test database on both backends, an API client, the agent
//! CLIs' environments, a guarded process environment). Never a dependency of production
//! code.

pub mod agent_env;
pub mod callback;
pub mod client;
pub mod clis;
pub mod db;
pub mod git;
pub mod model;
pub mod pg;
pub mod process_env;
pub mod stub;
pub mod woodpecker;

pub use agent_env::{claude_env, TEST_API_KEY};
pub use callback::{callback_schema_errors, CallbackReceiver, ReceivedCallback};
pub use client::TestClient;
pub use clis::{claude_bin, opencode_bin, workspace_root};
pub use db::TestDb;
pub use model::{RecordedMessage, RecordedRequest, ScriptedModel};
pub use process_env::ProcessEnv;
pub use stub::{StubAnswer, StubUpstream};
