//! The queue's SQL text, built once from [`TaskStatus::transition`] so a transition the
//! domain forbids can never be written: the claim (per backend), the lease-guarded writes,
//! the reaper's scan, cancelling, and the batched heartbeat. [`super::queue`] runs it; this
//! module must not run anything.

use std::sync::LazyLock;

use rdev_core::{Project, TaskStatus};

use crate::{sql::TASK_COLS, sql_store::SqlStore};

use TaskStatus::{Cancelled, Completed, Failed, Queued, Running};

/// `to` as reached from `from`, or the state machine's refusal. Used to build SQL, so a
/// transition the domain forbids can never be written.
fn to(from: TaskStatus, to: TaskStatus) -> &'static str {
    from.transition(to)
        .map(TaskStatus::as_str)
        .unwrap_or_else(|e| panic!("queue SQL uses a forbidden transition: {e}"))
}

/// The lease guard every worker write carries: `$g1` id, `$g2` token, `$g3` now.
fn guard(id: usize, token: usize, now: usize) -> String {
    format!(
        "id = ${id} AND lease_token = ${token} AND status = '{}' AND lease_expires_at > ${now}",
        Running.as_str()
    )
}

const CLEAR_LEASE: &str = "lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL";

/// `max_parallel_builds` of the candidate `t`'s project; a task whose project has no row
/// (a store used without projects, as the queue bench does) gets the default.
fn project_limit() -> String {
    format!(
        "COALESCE((SELECT p.max_parallel_builds FROM projects p WHERE p.name = t.project), {})",
        Project::DEFAULT_MAX_PARALLEL_BUILDS
    )
}

/// The claim's pick: runnable tasks `t` (`$4` now, read `from`) in claim order, at most
/// `$5`, selecting `cols`, skipping every task that is not among the first
/// `limit - running` queued tasks of its project in submission order. `probe_limit` bounds
/// each count: the project's limit itself on PostgreSQL; SQLite cannot refer to `t` in a
/// `LIMIT`, so it counts up to the largest limit there is.
///
/// Why this holds the limit with several claimers at once (PostgreSQL, READ COMMITTED,
/// any number of nodes): take the tasks of one project running at some moment and `m`,
/// the last of them in submission order `(created_at, id)`. The statement that claimed
/// `m` saw, in its snapshot, every other one of them either `running` or `queued` and
/// ahead of `m` (none can be finished or unborn there: tasks never become runnable again
/// once finished, and a task submitted later is behind `m`), and counted it; it claimed `m`
/// only because that count was below the limit, so at most `limit` run. A task another
/// claimer moved from `queued` to `running` after the snapshot is thus counted either way
/// (queued ahead in the old snapshot, running in a new one); within one statement, a task
/// picked is still queued ahead of the next one of its project. `status = 'queued' AND
/// run_at <= $4` stay in this outer, locked query, so after a lock wait PostgreSQL
/// re-checks the row's latest version (EvalPlanQual) and drops one another claimer just
/// took; `SKIP LOCKED` only spares the wait. SQLite's `BEGIN IMMEDIATE` has one writer.
///
/// Strict submission order: a queued task whose `run_at` is still ahead (a retry's
/// backoff) keeps its place and holds back the tasks behind it, and neither `priority`
/// nor `run_at` lets a later task of the project pass an earlier one. Each count is an
/// index probe of `tasks_project_active` (migration 0010) bounded by `probe_limit`.
fn pick(cols: &str, from: &str, probe_limit: &str) -> String {
    let (queued, running) = (Queued.as_str(), Running.as_str());
    let active = format!("r.project = t.project AND r.status IN ('{queued}', '{running}')");
    let running_of = format!("FROM tasks r WHERE {active} AND r.status = '{running}'");
    let ahead_of = format!(
        "FROM tasks r WHERE {active} AND r.status = '{queued}' \
         AND (r.created_at, r.id) < (t.created_at, t.id)"
    );
    // The first test is both counts at zero, which every limit allows: the usual case (a
    // project's next task, nothing of it running) is settled without counting or looking
    // up the limit (PostgreSQL hashes the running projects once per claim; `t` at the head
    // is an ordered index probe, which the planner keeps to where `NOT EXISTS` over the
    // queued tasks ahead was planned as a sequential scan on a skewed table).
    let head = format!(
        "SELECT r.id FROM tasks r WHERE {active} AND r.status = '{queued}' \
         ORDER BY r.created_at, r.id LIMIT 1"
    );
    format!(
        "SELECT {cols} FROM {from} WHERE t.status = '{queued}' AND t.run_at <= $4 \
         AND ((NOT EXISTS (SELECT 1 {running_of}) AND t.id = ({head})) \
         OR (SELECT count(*) FROM (SELECT 1 {running_of} LIMIT {probe_limit}) running) \
         + (SELECT count(*) FROM (SELECT 1 {ahead_of} LIMIT {probe_limit}) ahead) < {limit}) \
         ORDER BY t.priority, t.run_at, t.id LIMIT $5",
        limit = project_limit()
    )
}

pub(crate) struct Sql {
    pub(crate) claim_pg: String,
    pub(crate) claim_sqlite: String,
    pub(crate) record_attempts: String,
    pub(crate) complete: String,
    pub(crate) finish_attempt: String,
    pub(crate) insert_outbox: String,
    pub(crate) fail_lookup: String,
    pub(crate) record_result: String,
    pub(crate) retry: String,
    pub(crate) dead: String,
    pub(crate) reap_scan: String,
    pub(crate) cancel_lookup: String,
    pub(crate) cancel: String,
}

pub(crate) static SQL: LazyLock<Sql> = LazyLock::new(|| {
    let running = to(Queued, Running);
    let set_claimed = format!(
        "status = '{running}', attempt = attempt + 1, lease_token = $1, lease_owner = $2, \
         lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4"
    );
    Sql {
        // A CTE so the locked subquery runs exactly once (an IN-subquery with LIMIT may be
        // re-evaluated by the planner and claim more rows than asked for).
        claim_pg: format!(
            "WITH next AS ({} FOR UPDATE SKIP LOCKED) UPDATE tasks SET {set_claimed} \
             FROM next WHERE id = next.picked_id RETURNING {TASK_COLS}",
            pick("t.id AS picked_id", "tasks t", &project_limit())
        ),
        // SQLite runs this inside BEGIN IMMEDIATE: no other writer exists meanwhile.
        // Without statistics its planner reads every queued row by `tasks_status`, runs
        // the per-project counts on each and sorts (0.18 s a claim over 20,000 queued
        // rows, measured); the claim index yields them in order and stops at the limit.
        claim_sqlite: format!(
            "UPDATE tasks SET {set_claimed} WHERE id IN ({}) RETURNING {TASK_COLS}",
            pick(
                "t.id",
                "tasks t INDEXED BY tasks_claim",
                &Project::MAX_PARALLEL_BUILDS.to_string()
            )
        ),
        record_attempts: format!(
            "INSERT INTO task_attempts (task_id, attempt, worker, lease_token, started_at, outcome) \
             SELECT id, attempt, $2, $1, $3, '{running}' FROM tasks WHERE lease_token = $1"
        ),
        complete: format!(
            "UPDATE tasks SET status = '{}', result = $4, finished_at = $3, updated_at = $3, \
             {CLEAR_LEASE} WHERE {} RETURNING {TASK_COLS}",
            to(Running, Completed),
            guard(1, 2, 3)
        ),
        finish_attempt: "UPDATE task_attempts SET finished_at = $3, outcome = $4, error = $5 \
                         WHERE task_id = $1 AND attempt = $2"
            .to_owned(),
        insert_outbox: "INSERT INTO callback_outbox (task_id, url, payload, created_at, \
                        next_attempt_at) VALUES ($1, $2, $3, $4, $4)"
            .to_owned(),
        fail_lookup: format!(
            "SELECT attempt, max_attempts FROM tasks WHERE {}",
            guard(1, 2, 3)
        ),
        record_result: format!(
            "UPDATE tasks SET result = $4 WHERE {} RETURNING attempt, max_attempts",
            guard(1, 2, 3)
        ),
        // Guarded by (id, token, running) only: the reaper uses it on expired leases.
        retry: format!(
            "UPDATE tasks SET status = '{}', run_at = $4, error = $5, updated_at = $3, \
             {CLEAR_LEASE} WHERE id = $1 AND lease_token = $2 AND status = '{}'",
            to(Running, Queued),
            Running.as_str()
        ),
        dead: format!(
            "UPDATE tasks SET status = '{}', error = $4, finished_at = $3, updated_at = $3, \
             {CLEAR_LEASE} WHERE id = $1 AND lease_token = $2 AND status = '{}' \
             RETURNING {TASK_COLS}",
            to(Running, Failed),
            Running.as_str()
        ),
        reap_scan: format!(
            "SELECT id, lease_token, attempt, max_attempts FROM tasks \
             WHERE status = '{}' AND lease_expires_at <= $1 ORDER BY lease_expires_at LIMIT $2",
            Running.as_str()
        ),
        cancel_lookup: "SELECT status, attempt FROM tasks WHERE id = $1".to_owned(),
        cancel: format!(
            "UPDATE tasks SET status = '{}', finished_at = $2, updated_at = $2, {CLEAR_LEASE} \
             WHERE id = $1 AND status = $3 RETURNING {TASK_COLS}",
            Cancelled.as_str()
        ),
    }
});

/// `FOR UPDATE` (PostgreSQL) or nothing (SQLite, where the transaction holds the lock).
pub(crate) fn lock_suffix(store: &SqlStore, skip_locked: bool) -> &'static str {
    match (store.is_postgres(), skip_locked) {
        (true, true) => " FOR UPDATE SKIP LOCKED",
        (true, false) => " FOR UPDATE",
        (false, _) => "",
    }
}

/// Leases extended by one heartbeat statement (two bind parameters each).
pub(crate) const HEARTBEAT_CHUNK: usize = 500;

/// Extends the held leases among `n` `(id, token)` pairs bound from `$3` on, with `$1` now
/// and `$2` the new expiry; returns the `(id, lease_token)` pairs it extended.
pub(crate) fn heartbeat_sql(n: usize) -> String {
    let pairs: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", 3 + 2 * i, 4 + 2 * i))
        .collect();
    format!(
        "UPDATE tasks SET lease_expires_at = $2, updated_at = $1 \
         WHERE status = '{}' AND lease_expires_at > $1 AND (id, lease_token) IN (VALUES {}) \
         RETURNING id, lease_token",
        Running.as_str(),
        pairs.join(", ")
    )
}
