//! Supervision of agent child processes, shared by every adapter that runs one (the
//! `claude` CLI, a supervised `opencode serve`): start a child in its own process group,
//! end it and everything it started, and capture its stderr within a size bound.
//!
//! "Everything it started" is more than the process group: agent CLIs run their tool shells
//! `detached` (a new session, so a new group), so a group kill alone leaves a tool's `sleep`
//! or dev server running. [`GroupChild`] therefore also walks `/proc` (Linux) for the
//! child's descendants, the groups and sessions they lead, stops them all with `SIGSTOP`
//! until no new one appears, then `SIGKILL`s them. This module never decides *when* to stop
//! a child (that is the adapter's cancel/timeout logic) and never reads its stdout.

use std::{
    collections::{BTreeMap, HashSet},
    io,
    process::ExitStatus,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// A process identity that survives pid reuse: the pid plus its start time in clock ticks.
type ProcKey = (i32, u64);

/// A child process that leads its own process group. Dropping it kills the group and every
/// descendant it can still find, so no early return or panic leaves an orphan behind.
#[derive(Debug)]
pub struct GroupChild {
    child: Child,
    pid: i32,
    /// Processes seen in the child's family; killed at the end even if they were reparented.
    remembered: HashSet<ProcKey>,
    /// Processes sent `SIGKILL` by the last [`Self::kill_family`], for [`Self::settled`].
    killed: Vec<ProcKey>,
    finished: bool,
}

/// Spawns `cmd` as the leader of a new process group (`setpgid(0, 0)` in the child).
pub fn spawn_in_group(cmd: &mut Command) -> io::Result<GroupChild> {
    cmd.process_group(0).kill_on_drop(true);
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    Ok(GroupChild {
        child,
        pid,
        remembered: HashSet::new(),
        killed: Vec::new(),
        finished: false,
    })
}

impl GroupChild {
    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// The underlying child, to take its stdin/stdout/stderr handles.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the leader to exit. Cancel-safe; other group members are not waited for.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Records the current family (descendants, group members) so that [`Self::cleanup`]
    /// still finds them after the leader exits and they are reparented. Call it while the
    /// leader is alive, e.g. when the agent reports its final result.
    pub fn remember_family(&mut self) {
        let procs = scan_procs();
        let family = family_of(&procs, self.pid, &self.remembered);
        self.remembered.extend(family);
    }

    /// Ends the run gracefully: `SIGTERM` to the whole family, up to `grace` for the leader
    /// to exit, then `SIGKILL` to whatever is left. Returns the leader's exit status.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.remember_family();
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGTERM);
        for &(pid, _) in &self.remembered {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let exited = tokio::time::timeout(grace, self.child.wait()).await;
        // One kill is enough on either path. After it nothing of the group can appear:
        // members are stopped before the SIGKILLs, and a fork racing a SIGKILL fails.
        // A rescan after the leader is reaped would find only its group (already
        // killed) — or an unrelated process that reused the leader's pid.
        self.kill_family();
        let status = match exited {
            Ok(status) => status,
            Err(_elapsed) => self.child.wait().await,
        };
        self.finished = true;
        status
    }

    /// Kills whatever the child left behind after it exited by itself (background jobs of
    /// its tools). Safe to call more than once.
    pub fn cleanup(&mut self) {
        self.kill_family();
        self.finished = true;
    }

    /// Stops every family member with `SIGSTOP` until a rescan finds no new one (so nothing
    /// can fork away between scan and kill), then `SIGKILL`s them and the group.
    fn kill_family(&mut self) {
        let mut stopped: HashSet<ProcKey> = HashSet::new();
        for _round in 0..16 {
            let procs = scan_procs();
            let mut known = self.remembered.clone();
            known.extend(stopped.iter().copied());
            let fresh: Vec<ProcKey> = family_of(&procs, self.pid, &known)
                .into_iter()
                .filter(|k| !stopped.contains(k))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for key in fresh {
                let _ = kill(Pid::from_raw(key.0), Signal::SIGSTOP);
                stopped.insert(key);
            }
        }
        for &(pid, _) in &stopped {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.remembered.clear();
        self.killed = stopped.into_iter().collect();
    }

    /// Waits (up to `timeout`) until every process the last kill hit has really exited.
    /// `SIGKILL` is delivered asynchronously: right after `kill(2)` returns, a target may
    /// still be running or stopped for a moment. A run that ends returns only after this,
    /// so nothing of it can still write into the checkout once the caller moves on.
    /// Returns the processes still alive at the deadline (empty when all are gone).
    pub async fn settled(&mut self, timeout: Duration) -> Vec<u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.killed.retain(|&(pid, start)| is_alive(pid, start));
            if self.killed.is_empty() || tokio::time::Instant::now() >= deadline {
                return self.killed.iter().map(|k| k.0.unsigned_abs()).collect();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Whether `pid` still runs as the process that started at `start` (a zombie has exited;
/// a reused pid is another process).
fn is_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    !zombie && parse_stat(&stat).is_some_and(|p| p.start == start)
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if !self.finished {
            self.kill_family();
        }
    }
}

/// One row of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    session: i32,
    start: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces or parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is the state (field 3); ppid is field 4, pgrp 5, session 6, starttime 22.
    Some(ProcInfo {
        pid,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// Every process on the machine (empty where `/proc` does not exist).
fn scan_procs() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .collect()
}

/// The family of `leader`: the leader, members of its group, `known` processes that still
/// run (same pid and start time), and, to a fixed point, their children and every process in
/// a group or session one of them leads. Never includes this process or pid 1.
fn family_of(procs: &[ProcInfo], leader: i32, known: &HashSet<ProcKey>) -> HashSet<ProcKey> {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let mut members: BTreeMap<i32, ProcInfo> = BTreeMap::new();
    for p in procs {
        if p.pid == leader || p.pgrp == leader || known.contains(&(p.pid, p.start)) {
            members.insert(p.pid, *p);
        }
    }
    loop {
        let before = members.len();
        for p in procs {
            if members.contains_key(&p.pid) {
                continue;
            }
            let led_by_member = |id: i32| members.get(&id).is_some_and(|m| m.pid == id);
            if members.contains_key(&p.ppid) || led_by_member(p.pgrp) || led_by_member(p.session) {
                members.insert(p.pid, *p);
            }
        }
        if members.len() == before {
            break;
        }
    }
    members
        .into_values()
        .filter(|p| p.pid != me && p.pid > 1)
        .map(|p| (p.pid, p.start))
        .collect()
}

/// Captures a stream (a child's stderr) keeping at most `limit` bytes: the first quarter
/// and the last three quarters, with a marker for what was dropped in between. Error
/// messages tend to sit at the end, the command that failed at the start.
#[derive(Debug)]
pub struct BoundedCapture {
    buf: Arc<Mutex<CaptureBuf>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct CaptureBuf {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
    head_limit: usize,
    tail_limit: usize,
}

impl CaptureBuf {
    fn push(&mut self, mut data: &[u8]) {
        let room = self.head_limit.saturating_sub(self.head.len());
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        self.tail.extend(data);
        let excess = self.tail.len().saturating_sub(self.tail_limit);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            out.push_str(&format!("\n[... {} bytes dropped ...]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

impl BoundedCapture {
    /// Starts reading `reader` in a background task until EOF or [`Self::finish`].
    pub fn start<R>(mut reader: R, limit: usize) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let buf = Arc::new(Mutex::new(CaptureBuf {
            head_limit: limit / 4,
            tail_limit: limit - limit / 4,
            ..CaptureBuf::default()
        }));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let buf = Arc::clone(&buf);
            let stop = stop.clone();
            async move {
                let mut chunk = vec![0u8; 8192];
                loop {
                    let n = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = reader.read(&mut chunk) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        },
                    };
                    buf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(&chunk[..n]);
                }
            }
        });
        Self { buf, stop, task }
    }

    /// Waits up to `drain` for EOF (a process that escaped the kill may hold the pipe open),
    /// then stops reading and returns what was captured, lossily decoded as UTF-8.
    pub async fn finish(self, drain: Duration) -> String {
        let Self { buf, stop, task } = self;
        let mut task = task;
        if tokio::time::timeout(drain, &mut task).await.is_err() {
            stop.cancel();
            let _ = task.await;
        }
        let out = buf.lock().unwrap_or_else(|p| p.into_inner()).render();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line =
            "4242 (my (odd) name) S 17 4242 4240 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let p = parse_stat(line).expect("parses");
        assert_eq!(
            p,
            ProcInfo {
                pid: 4242,
                ppid: 17,
                pgrp: 4242,
                session: 4240,
                start: 987_654
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn family_follows_children_groups_and_sessions_they_lead() {
        let p = |pid, ppid, pgrp, session| ProcInfo {
            pid,
            ppid,
            pgrp,
            session,
            start: 1,
        };
        let procs = vec![
            p(100, 50, 100, 50),   // leader
            p(101, 100, 100, 50),  // child in group
            p(102, 100, 102, 102), // detached shell: own session
            p(103, 1, 102, 102),   // reparented job in that session
            p(104, 1, 100, 50),    // reparented group member
            p(200, 50, 200, 50),   // unrelated sibling
        ];
        let fam = family_of(&procs, 100, &HashSet::new());
        let pids: HashSet<i32> = fam.iter().map(|k| k.0).collect();
        assert_eq!(pids, [100, 101, 102, 103, 104].into_iter().collect());
    }

    #[test]
    fn capture_keeps_head_and_tail_within_the_limit() {
        let mut b = CaptureBuf {
            head_limit: 4,
            tail_limit: 6,
            ..CaptureBuf::default()
        };
        b.push(b"HEAD");
        b.push(b"middle-stuff-");
        b.push(b"TAIL!!");
        let s = b.render();
        assert!(s.starts_with("HEAD"), "{s}");
        assert!(s.ends_with("TAIL!!"), "{s}");
        assert!(s.contains("13 bytes dropped"), "{s}");
    }
}
