//! Code-agent adapters behind `rdev_core::CodeAgent`: Claude Code (a CLI run locally or
//! through `kubectl exec`) and OpenCode (an HTTP/SSE client for `opencode serve`). Each
//! adapter owns its process or HTTP handling and maps its provider's stream to
//! `rdev_core::AgentEvent`. Locally run agents start inside [`sandbox`].

pub mod claude_code;
mod common;
pub mod env;
pub mod opencode;
pub mod process;
pub mod redact;
pub mod run_table;
pub mod sandbox;
pub mod session_files;
pub mod settings;
