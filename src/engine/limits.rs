//! Time limits on what dbctl runs against servers, and telling what a
//! blocked step waits on.
//!
//! - Every connection dbctl opens gives up after `connect_timeout` (default
//!   10 s, `--connect-timeout`).
//! - Every step of an apply runs under `lock_timeout` and `statement_timeout`
//!   (PostgreSQL) or `lock_wait_timeout`, `innodb_lock_wait_timeout` and,
//!   on MariaDB, `max_statement_time` (MySQL), all set to the statement
//!   timeout: default 30 s, `--statement-timeout`, `0` for no limit.
//! - While a PostgreSQL step waits longer than [`NOTICE_AFTER`], a second
//!   connection asks `pg_blocking_pids` who holds it up, and a line on
//!   standard error names them (pid, user, application, state, and only the
//!   first word of their statement: a statement may hold a password).
//!
//! The limits are process-wide: one command sets them once, from its flags.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A step that waits longer than this says on what.
pub const NOTICE_AFTER: Duration = Duration::from_secs(2);
/// How often a waiting step looks again, and prints again at most.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
const PRINT_EVERY: Duration = Duration::from_secs(5);

static STATEMENT_MS: AtomicU64 = AtomicU64::new(30_000);
static CONNECT_MS: AtomicU64 = AtomicU64::new(10_000);

/// `--statement-timeout`: zero means no limit.
pub fn set_statement_timeout(d: Duration) {
    STATEMENT_MS.store(d.as_millis() as u64, Ordering::SeqCst);
}

/// The statement timeout, or None for no limit.
pub fn statement_timeout() -> Option<Duration> {
    match STATEMENT_MS.load(Ordering::SeqCst) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// `--connect-timeout`: zero means no limit (a day).
pub fn set_connect_timeout(d: Duration) {
    let d = if d.is_zero() { Duration::from_secs(86_400) } else { d };
    CONNECT_MS.store(d.as_millis() as u64, Ordering::SeqCst);
}

pub fn connect_timeout() -> Duration {
    Duration::from_millis(CONNECT_MS.load(Ordering::SeqCst))
}

/// A duration as a user writes it back: `3s`, `1m 30s`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// The message of a connection that did not answer in time.
pub fn no_answer() -> String {
    format!(
        "no answer within {} (connect timeout); check the host, the port and any tunnel, or allow longer with \
         --connect-timeout",
        human(connect_timeout())
    )
}

/// The statements that bound a PostgreSQL step session, then its backend pid.
pub fn pg_session_sql() -> String {
    let ms = statement_timeout().map(|d| d.as_millis().max(1)).unwrap_or(0);
    format!("SET lock_timeout = {ms}; SET statement_timeout = {ms}")
}

/// Bound a step session and return its backend pid.
pub async fn pg_limit(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    use sqlx::Row;
    // One round trip: the settings, then the pid.
    let sql = format!("{}; SELECT pg_backend_pid()", pg_session_sql());
    let row = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
    row.try_get(0)
}

/// The statements that bound a MySQL/MariaDB step session. Seconds, at
/// least one (the variables take whole seconds). `max_statement_time` is
/// MariaDB's (MySQL's `max_execution_time` bounds only SELECT): set apart,
/// its error on MySQL ignored.
pub fn mysql_session_sql() -> (String, Option<String>) {
    match statement_timeout() {
        None => ("SET SESSION lock_wait_timeout = 31536000, innodb_lock_wait_timeout = 1073741824".into(), None),
        Some(d) => {
            let s = d.as_secs().max(1);
            (
                format!("SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}"),
                Some(format!("SET SESSION max_statement_time = {s}")),
            )
        }
    }
}

/// One session that holds up a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocker {
    pub pid: i32,
    pub user: String,
    pub application: String,
    pub state: String,
    /// Seconds in its present state.
    pub for_secs: i64,
    /// The first word of its current or last statement, upper case.
    pub command: String,
}

/// The first word of a statement: its command, never its literals. The
/// server hides other users' statements from an admin that is not a
/// superuser: shown as hidden.
pub fn command_tag(query: &str) -> String {
    let q = query.trim_start();
    if q.starts_with('<') {
        return "(hidden)".into();
    }
    let word: String = q.chars().take_while(|c| c.is_ascii_alphabetic()).take(20).collect();
    if word.is_empty() {
        "(none)".into()
    } else {
        word.to_ascii_uppercase()
    }
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (user {}", self.pid, if self.user.is_empty() { "?" } else { &self.user })?;
        if !self.application.is_empty() {
            write!(f, ", application \"{}\"", self.application.replace(['"', '\n'], ""))?;
        }
        if !self.state.is_empty() {
            write!(f, ", {} for {} s", self.state, self.for_secs.max(0))?;
        }
        write!(f, ", statement {})", self.command)
    }
}

pub fn describe(b: &[Blocker]) -> String {
    b.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
}

/// Who holds up the backend `pid`, from another connection.
pub async fn pg_blockers(conn: &mut PgConnection, pid: i32) -> Result<Vec<Blocker>, sqlx::Error> {
    let rows: Vec<(i32, String, String, String, i64, String)> = sqlx::query_as(
        "SELECT a.pid, COALESCE(a.usename::text, ''), COALESCE(a.application_name, ''), COALESCE(a.state, ''), \
         COALESCE(EXTRACT(EPOCH FROM now() - a.state_change)::bigint, 0), \
         COALESCE(a.query, '') \
         FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids($1)) ORDER BY a.pid",
    )
    .bind(pid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pid, user, application, state, for_secs, query)| Blocker {
            pid,
            user,
            application,
            state,
            for_secs,
            command: command_tag(&query),
        })
        .collect())
}

/// Run a PostgreSQL step's statement (on the session with backend `pid`);
/// while it waits longer than [`NOTICE_AFTER`], print who blocks it. Returns
/// the statement's result and the blockers last seen.
pub async fn pg_watched<T>(
    server: &str,
    url: &str,
    address: &str,
    pid: i32,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> (Result<T, sqlx::Error>, Vec<Blocker>) {
    tokio::pin!(fut);
    let start = Instant::now();
    let mut monitor: Option<PgConnection> = None;
    let mut tried = false;
    let mut printed: Option<Instant> = None;
    let mut last: Vec<Blocker> = Vec::new();
    let r = loop {
        tokio::select! {
            r = &mut fut => break r,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {
                if monitor.is_none() && !tried {
                    tried = true;
                    monitor = crate::engine::postgres::connect(server, url, None).await.ok();
                }
                let Some(m) = monitor.as_mut() else { continue };
                let Ok(b) = pg_blockers(m, pid).await else { continue };
                if b.is_empty() {
                    continue;
                }
                let waited = start.elapsed();
                let others = |x: &[Blocker]| x.iter().map(|b| b.pid).collect::<Vec<_>>();
                if waited >= NOTICE_AFTER
                    && printed.is_none_or(|p| p.elapsed() >= PRINT_EVERY || others(&b) != others(&last))
                {
                    eprintln!(
                        "      {address}: waiting {} s for a lock held by {}",
                        waited.as_secs(),
                        describe(&b)
                    );
                    printed = Some(Instant::now());
                }
                last = b;
            }
        }
    };
    if let Some(m) = monitor {
        let _ = m.close().await;
    }
    (r, last)
}

/// What a MySQL/MariaDB step session (`id`, its CONNECTION_ID()) waits on:
/// its processlist state, and the sessions whose InnoDB transactions hold
/// the row locks it waits for. A metadata lock's holder is not in the
/// default catalogs: then only the state is told.
pub async fn mysql_waits(conn: &mut sqlx::MySqlConnection, id: u64) -> Result<(String, Vec<Blocker>), sqlx::Error> {
    let state: Option<Option<String>> =
        sqlx::query_scalar("SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let rows: Vec<(u64, String, String, i64, String)> = sqlx::query_as(
        "SELECT p.ID, COALESCE(p.USER, ''), COALESCE(p.COMMAND, ''), COALESCE(p.TIME, 0), COALESCE(p.INFO, '') \
         FROM information_schema.INNODB_TRX w \
         JOIN information_schema.INNODB_LOCK_WAITS l ON l.requesting_trx_id = w.trx_id \
         JOIN information_schema.INNODB_TRX b ON b.trx_id = l.blocking_trx_id \
         JOIN information_schema.PROCESSLIST p ON p.ID = b.trx_mysql_thread_id \
         WHERE w.trx_mysql_thread_id = ? ORDER BY p.ID",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let blockers = rows
        .into_iter()
        .map(|(pid, user, command, secs, info)| Blocker {
            pid: pid as i32,
            user,
            application: String::new(),
            state: command.to_lowercase(),
            for_secs: secs,
            command: command_tag(&info),
        })
        .collect();
    Ok((state.flatten().unwrap_or_default(), blockers))
}

/// Run a MySQL/MariaDB step's statement (on the session `id`); while it
/// waits longer than [`NOTICE_AFTER`], print on what.
pub async fn mysql_watched<T>(
    server: &str,
    url: &str,
    address: &str,
    id: u64,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> (Result<T, sqlx::Error>, Vec<Blocker>) {
    tokio::pin!(fut);
    let start = Instant::now();
    let mut monitor: Option<sqlx::MySqlConnection> = None;
    let mut tried = false;
    let mut printed: Option<Instant> = None;
    let mut last: (String, Vec<Blocker>) = Default::default();
    let r = loop {
        tokio::select! {
            r = &mut fut => break r,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {
                if start.elapsed() < NOTICE_AFTER {
                    continue;
                }
                if monitor.is_none() && !tried {
                    tried = true;
                    monitor = crate::engine::mysql::connect(server, url).await.ok();
                }
                let Some(m) = monitor.as_mut() else { continue };
                let Ok(w) = mysql_waits(m, id).await else { continue };
                let waiting = w.0.to_lowercase().contains("lock") || !w.1.is_empty();
                let pids = |x: &[Blocker]| x.iter().map(|b| b.pid).collect::<Vec<_>>();
                if waiting && printed.is_none_or(|p| p.elapsed() >= PRINT_EVERY || w.0 != last.0 || pids(&w.1) != pids(&last.1)) {
                    let on = if w.1.is_empty() {
                        "a lock another session holds".to_string()
                    } else {
                        format!("a lock held by {}", describe(&w.1))
                    };
                    eprintln!("      {address}: waiting {} s for {on} ({})", start.elapsed().as_secs(), w.0);
                    printed = Some(Instant::now());
                }
                last = w;
            }
        }
    };
    if let Some(m) = monitor {
        let _ = m.close().await;
    }
    (r, last.1)
}

/// Whether a PostgreSQL error is one of the timeouts dbctl set: lock_timeout
/// (55P03) or statement_timeout (57014).
pub fn pg_timed_out(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("55P03") | Some("57014")),
        _ => false,
    }
}

/// Whether a MySQL/MariaDB error is a lock wait or statement time limit:
/// 1205 (lock wait timeout), 1969 (MariaDB max_statement_time), 3024 (MySQL
/// max_execution_time).
pub fn mysql_timed_out(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| matches!(m.number(), 1205 | 1969 | 3024)),
        _ => false,
    }
}

/// The error of a step that gave up waiting: which step, who blocked it,
/// what to do.
pub fn timed_out_message(blockers: &[Blocker]) -> String {
    let limit = statement_timeout().map(human).unwrap_or_else(|| "its limit".into());
    let who = if blockers.is_empty() {
        "for a lock another session holds".to_string()
    } else {
        format!("for a lock held by {}", describe(blockers))
    };
    format!(
        "gave up after waiting {limit} {who} (lock and statement timeout). The step was rolled back; the steps \
         before it are applied and recorded. Finish or end that session, then run `dbctl apply` again, or allow a \
         longer wait with --statement-timeout (e.g. 5m; 0 for no limit)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_command_of_a_blocking_statement_is_shown() {
        assert_eq!(command_tag("ALTER ROLE app PASSWORD 'hunter2'"), "ALTER");
        assert_eq!(command_tag("  lock table t in access exclusive mode"), "LOCK");
        assert_eq!(command_tag("<insufficient privilege>"), "(hidden)");
        assert_eq!(command_tag("'hunter2'"), "(none)");
        let b = Blocker {
            pid: 7,
            user: "alice".into(),
            application: "psql".into(),
            state: "idle in transaction".into(),
            for_secs: 12,
            command: command_tag("ALTER ROLE app PASSWORD 'hunter2'"),
        };
        let s = b.to_string();
        assert_eq!(s, "pid 7 (user alice, application \"psql\", idle in transaction for 12 s, statement ALTER)");
        assert!(!timed_out_message(&[b]).contains("hunter2"));
    }

    #[test]
    fn zero_is_no_limit() {
        set_statement_timeout(Duration::ZERO);
        assert_eq!(statement_timeout(), None);
        assert_eq!(pg_session_sql(), "SET lock_timeout = 0; SET statement_timeout = 0");
        assert_eq!(mysql_session_sql().1, None);
        set_statement_timeout(Duration::from_millis(2500));
        assert_eq!(pg_session_sql(), "SET lock_timeout = 2500; SET statement_timeout = 2500");
        assert_eq!(mysql_session_sql().0, "SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2");
        set_statement_timeout(DEFAULT_STATEMENT_TIMEOUT);
    }
}
