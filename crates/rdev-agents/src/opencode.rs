//! OpenCode adapter: a client for `opencode serve` (sessions, messages, SSE events, abort).
