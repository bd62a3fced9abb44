//! Test-only building blocks: a scripted model server speaking the Anthropic Messages API,
//! a fake Woodpecker, a callback receiver and git fixtures. Never a dependency of
//! production code.

pub mod callback;
pub mod clis;
pub mod git;
pub mod model;
pub mod pg;
pub mod stub;
pub mod woodpecker;

pub use callback::{CallbackReceiver, ReceivedCallback};
pub use clis::{claude_bin, opencode_bin, workspace_root};
pub use model::{RecordedRequest, ScriptedModel};
pub use stub::{StubAnswer, StubUpstream};
