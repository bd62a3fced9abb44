//! Claude Code adapter: runs `claude -p --output-format stream-json` and maps its stream.
