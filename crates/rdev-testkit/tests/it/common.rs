//! Helpers shared by the agent CLI end-to-end tests: process-group cleanup. It must not
//! start processes itself; each test file owns how it runs its CLI.

use nix::{sys::signal::Signal, unistd::Pid};

/// Kills a child's whole process group (spawned with `process_group(0)`) when dropped:
/// on success, on a failed assertion and on a deadline alike.
pub struct GroupGuard(pub Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
