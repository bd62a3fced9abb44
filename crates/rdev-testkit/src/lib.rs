//! Test-only building blocks: a scripted model server speaking the Anthropic Messages API,
//! a fake Woodpecker, a callback receiver and git fixtures. Never a dependency of
//! production code.
