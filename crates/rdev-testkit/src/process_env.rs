//! [`ProcessEnv`]: a variable set in the test process's own environment for as long as a
//! test holds the guard. Every crate's integration tests share one process, so such a test
//! must not overlap another that sets one, nor leave its value behind: the guard holds a
//! process-wide lock and restores the previous value when dropped (also on panic). Use it
//! only where the code under test reads the process environment itself; pass values
//! explicitly everywhere else.

use std::ffi::{OsStr, OsString};

use tokio::sync::{Mutex, MutexGuard};

/// Serialises every test that changes the process environment.
static LOCK: Mutex<()> = Mutex::const_new(());

/// One variable set in the process environment until this is dropped.
#[derive(Debug)]
pub struct ProcessEnv {
    key: OsString,
    previous: Option<OsString>,
    _lock: MutexGuard<'static, ()>,
}

impl ProcessEnv {
    /// Waits for any other test's variable to be restored, then sets `key` to `value`.
    pub async fn set(key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let lock = LOCK.lock().await;
        let key = key.as_ref().to_owned();
        let previous = std::env::var_os(&key);
        std::env::set_var(&key, value);
        Self {
            key,
            previous,
            _lock: lock,
        }
    }
}

impl Drop for ProcessEnv {
    fn drop(&mut self) {
        match self.previous.take() {
            Some(v) => std::env::set_var(&self.key, v),
            None => std::env::remove_var(&self.key),
        }
    }
}
