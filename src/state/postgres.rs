//! The postgres state backend: a state shared by a team (and its CI) in a
//! PostgreSQL database.
//!
//! Three tables in one schema (`dbctl` by default), created on first use:
//!
//! - `states`: one row per state key with lineage, serial and the state
//!   document. Writes are compare-and-set on the serial this process read,
//!   so two writers never overwrite each other silently.
//! - `journal`: the journal of an unfinished apply, one row per entry,
//!   each committed before `put` returns (an intent is durable before the
//!   statement it announces runs). Loading replays it; saving the state
//!   deletes it in the same transaction.
//! - `locks`: who holds the lock (dbctl's pid, host, user, operation,
//!   since), for messages. The lock itself is a session-level advisory lock
//!   (`pg_try_advisory_lock`) of the connection this process keeps open: the
//!   server releases it when that session ends, so a killed apply (even
//!   `kill -9`) never leaves a lock behind. A row whose session is gone
//!   means nothing and is overwritten.
//!
//! The connection goes through the servers' connect code, so `sslmode` and
//! `sslrootcert` in the url work the same. Its password is never printed:
//! messages name the host, port, database and key only.
//!
//! The rest of dbctl is synchronous around the state (the executor appends
//! to the journal from inside its async tasks), so every call runs on a
//! runtime of this backend's own, from a short-lived thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::{parse_state, replay, Journal, JournalSink, State, StateBackend, StateError, StateLock, Unlock};
use crate::engine::sql::pg_ident;

pub const DEFAULT_SCHEMA: &str = "dbctl";
pub const DEFAULT_KEY: &str = "default";

pub struct PgState {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    schema: String,
    key: String,
    /// Where it is, for messages: host, port, database and key (no password).
    place: String,
    host: String,
    port: u16,
    conn: Mutex<Conn>,
}

struct Conn {
    rt: Option<tokio::runtime::Runtime>,
    conn: Option<PgConnection>,
    /// The serial of the row this process last read or wrote (`None`: no row).
    loaded: Option<i64>,
}

fn backend_err(what: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Backend(format!("the postgres state backend: {what}: {e}"))
}

/// The advisory lock's key: the same for every dbctl using this schema and key.
fn lock_key(schema: &str, key: &str) -> i64 {
    let d = Sha256::digest(format!("dbctl state lock\0{schema}\0{key}").as_bytes());
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

impl PgState {
    pub fn new(url: &str, schema: &str, key: &str) -> Result<PgState, StateError> {
        let o = crate::engine::postgres::options(url, None).map_err(|e| backend_err("url", e))?;
        let place = format!(
            "the postgres state backend ({}:{}/{}, key \"{key}\")",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| backend_err("starting its runtime", e))?;
        Ok(PgState {
            inner: Arc::new(Inner {
                url: url.to_string(),
                schema: schema.to_string(),
                key: key.to_string(),
                place,
                host: o.get_host().to_string(),
                port: o.get_port(),
                conn: Mutex::new(Conn { rt: Some(rt), conn: None, loaded: None }),
            }),
        })
    }
}

impl Inner {
    fn table(&self, name: &str) -> String {
        format!("{}.{}", pg_ident(&self.schema), pg_ident(name))
    }

    fn lock_id(&self) -> i64 {
        lock_key(&self.schema, &self.key)
    }

    /// Run `f` with this backend's connection (opened, and the tables
    /// created, on first use), on a thread of its own so that it works
    /// from inside another runtime too.
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&tokio::runtime::Runtime, &mut PgConnection, &mut Option<i64>) -> Result<T, StateError> + Send,
    ) -> Result<T, StateError> {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let c: &mut Conn = &mut g;
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = c.rt.as_ref().expect("runtime");
                if c.conn.is_none() {
                    let mut conn = rt
                        .block_on(crate::engine::postgres::connect("the postgres state backend", &self.url, None))
                        .map_err(|e| StateError::Backend(e.to_string()))?;
                    rt.block_on(self.setup(&mut conn))?;
                    if !crate::engine::tls::is_loopback(&self.host) && !rt.block_on(encrypted(&mut conn)) {
                        // Said as for a managed server: the state is no secret, but its password and the lock are.
                        eprintln!(
                            "{}",
                            crate::engine::tls::plaintext_warning(
                                "the postgres state backend",
                                &self.url,
                                &self.host,
                                self.port,
                                crate::engine::dialect::Dialect::Postgres
                            )
                        );
                    }
                    c.conn = Some(conn);
                }
                f(rt, c.conn.as_mut().expect("connection"), &mut c.loaded)
            })
            .join()
            .unwrap_or_else(|_| Err(StateError::Backend("the postgres state backend: its thread panicked".into())))
        })
    }

    /// Create the schema and tables unless they exist. Creation is
    /// serialised by a transaction-level advisory lock, so two first uses at
    /// once do not collide; when they exist, no CREATE privilege is needed.
    async fn setup(&self, conn: &mut PgConnection) -> Result<(), StateError> {
        let have: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename IN ('states', 'journal', 'locks')",
        )
        .bind(&self.schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| backend_err("reading its tables", e))?;
        if have == 3 {
            return Ok(());
        }
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {states} (
               key text PRIMARY KEY,
               version integer NOT NULL,
               lineage text NOT NULL,
               serial bigint NOT NULL,
               state jsonb NOT NULL,
               updated_at timestamptz NOT NULL DEFAULT now(),
               updated_by text NOT NULL DEFAULT current_user);
             CREATE TABLE IF NOT EXISTS {journal} (
               key text NOT NULL,
               seq bigserial,
               entry text NOT NULL,
               written_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (key, seq));
             CREATE TABLE IF NOT EXISTS {locks} (
               key text PRIMARY KEY,
               backend_pid integer NOT NULL,
               pid bigint NOT NULL,
               host text NOT NULL,
               os_user text NOT NULL,
               operation text NOT NULL,
               since timestamptz NOT NULL DEFAULT now());",
            schema = pg_ident(&self.schema),
            states = self.table("states"),
            journal = self.table("journal"),
            locks = self.table("locks"),
        );
        let mut tx = conn.begin().await.map_err(|e| backend_err("creating its tables", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(&self.schema, "\0setup"))
            .execute(&mut *tx)
            .await
            .map_err(|e| backend_err("creating its tables", e))?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(|e| {
            backend_err(
                &format!(
                    "creating the schema {} and its tables (create them once as a user allowed to, or give this one CREATE on the database)",
                    pg_ident(&self.schema)
                ),
                e,
            )
        })?;
        tx.commit().await.map_err(|e| backend_err("creating its tables", e))?;
        Ok(())
    }

    /// Who holds the advisory lock now, if anyone: the database session from
    /// pg_locks and pg_stat_activity, and what dbctl wrote when taking it.
    async fn holder(&self, conn: &mut PgConnection) -> Result<Option<(i32, String)>, StateError> {
        let id = self.lock_id() as u64;
        let sql = format!(
            "SELECT l.pid, coalesce(a.usename::text, ''), coalesce(host(a.client_addr), 'local socket'),
                    coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),
                    r.pid, r.host, r.os_user, r.operation,
                    to_char(r.since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM pg_catalog.pg_locks l
             LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
             LEFT JOIN {locks} r ON r.key = $3 AND r.backend_pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid::bigint = $1 AND l.objid::bigint = $2
               AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
            locks = self.table("locks")
        );
        type Row =
            (i32, String, String, String, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(sql))
            .bind((id >> 32) as i64)
            .bind((id & 0xffff_ffff) as i64)
            .bind(&self.key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| backend_err("reading who holds the lock", e))?;
        Ok(row.map(|(spid, suser, saddr, sstart, pid, host, user, op, since)| {
            let session = format!("database session pid {spid}, user {suser} from {saddr}, connected {sstart}");
            let text = match (pid, host, user, op, since) {
                (Some(pid), Some(host), Some(user), Some(op), Some(since)) => {
                    format!("{op} by {user}@{host}, pid {pid}, since {since}; {session}")
                }
                _ => session,
            };
            (spid, text)
        }))
    }
}

/// Whether this connection is encrypted (TLS).
async fn encrypted(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_optional(&mut *conn)
        .await
        .ok()
        .flatten()
        .unwrap_or(true)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let c = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let (Some(rt), conn) = (c.rt.take(), c.conn.take()) else { return };
        // Closed politely from a thread of its own (this may run inside another runtime).
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(conn) = conn {
                    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.close()).await });
                }
                drop(rt);
            });
        });
    }
}

/// The dbctl process and where it runs, written with the lock.
fn whoami() -> (i64, String, String) {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown host".into()
    };
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        let uid = unsafe { libc::getuid() };
        // SAFETY: getpwuid returns null or a pointer to a static record, read at once.
        let pw = unsafe { libc::getpwuid(uid) };
        if pw.is_null() || unsafe { (*pw).pw_name }.is_null() {
            format!("uid {uid}")
        } else {
            unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }.to_string_lossy().into_owned()
        }
    });
    (std::process::id() as i64, host, user)
}

/// Held while applying: the session's advisory lock, released (and the row
/// describing it deleted) on drop; released by the server if the process dies.
struct PgLock {
    inner: Arc<Inner>,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let (locks, key, id) = (self.inner.table("locks"), self.inner.key.clone(), self.inner.lock_id());
        let r = self.inner.with(|rt, conn, _| {
            rt.block_on(async {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {locks} WHERE key = $1 AND backend_pid = pg_backend_pid()"
                )))
                .bind(&key)
                .execute(&mut *conn)
                .await
                .map_err(|e| backend_err("releasing the lock", e))?;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| backend_err("releasing the lock", e))?;
                Ok(())
            })
        });
        if let Err(e) = r {
            // The session ending releases it anyway.
            tracing::warn!("{e}");
        }
    }
}

/// Journal entries as rows, each committed on its own.
struct PgJournal {
    inner: Arc<Inner>,
}

impl JournalSink for PgJournal {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let entry = String::from_utf8_lossy(line).trim_end().to_string();
        let (journal, key) = (self.inner.table("journal"), self.inner.key.clone());
        self.inner
            .with(|rt, conn, _| {
                rt.block_on(async {
                    sqlx::query(AssertSqlSafe(format!("INSERT INTO {journal} (key, entry) VALUES ($1, $2)")))
                        .bind(&key)
                        .bind(&entry)
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| backend_err("writing the journal", e))
                })
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl StateBackend for PgState {
    fn describe(&self) -> String {
        self.inner.place.clone()
    }

    fn exists(&self) -> Result<bool, StateError> {
        let i = &self.inner;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE key = $1) OR EXISTS (SELECT 1 FROM {} WHERE key = $1)",
            i.table("states"),
            i.table("journal")
        );
        i.with(|rt, conn, _| {
            rt.block_on(sqlx::query_scalar::<_, bool>(AssertSqlSafe(sql)).bind(&i.key).fetch_one(&mut *conn))
                .map_err(|e| backend_err("reading the state", e))
        })
    }

    fn load(&self) -> Result<State, StateError> {
        let i = &self.inner;
        let origin = PathBuf::from(&i.place);
        let (states, journal) = (i.table("states"), i.table("journal"));
        i.with(|rt, conn, loaded| {
            rt.block_on(async {
                let row: Option<(i64, String)> =
                    sqlx::query_as(AssertSqlSafe(format!("SELECT serial, state::text FROM {states} WHERE key = $1")))
                        .bind(&i.key)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(|e| backend_err("reading the state", e))?;
                let entries: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT entry FROM {journal} WHERE key = $1 ORDER BY seq"
                )))
                .bind(&i.key)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| backend_err("reading the journal", e))?;
                let mut state = match &row {
                    Some((_, doc)) => parse_state(doc.as_bytes(), &origin)?,
                    None => State::new(),
                };
                *loaded = row.map(|(serial, _)| serial);
                let (replayed, torn) = replay(&mut state, entries.iter().map(|e| e.as_bytes()));
                if torn > 0 {
                    tracing::warn!("{}: skipped {torn} unreadable journal entries", i.place);
                }
                if replayed {
                    state.serial += 1;
                }
                Ok(state)
            })
        })
    }

    fn init(&self, state: &State) -> Result<(), StateError> {
        let i = &self.inner;
        let doc = serde_json::to_string(state).expect("state serialises");
        let sql = format!(
            "INSERT INTO {} (key, version, lineage, serial, state) VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (key) DO NOTHING",
            i.table("states")
        );
        i.with(|rt, conn, _| {
            rt.block_on(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&i.key)
                    .bind(state.version as i32)
                    .bind(&state.lineage)
                    .bind(state.serial as i64)
                    .bind(&doc)
                    .execute(&mut *conn),
            )
            .map(|_| ())
            .map_err(|e| backend_err("writing the state", e))
        })
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        let i = &self.inner;
        let doc = serde_json::to_string(state).expect("state serialises");
        let (states, journal) = (i.table("states"), i.table("journal"));
        i.with(|rt, conn, loaded| {
            rt.block_on(async {
                let failed = |e: sqlx::Error| backend_err("writing the state", e);
                let mut tx = conn.begin().await.map_err(failed)?;
                let q = match *loaded {
                    Some(_) => format!(
                        "UPDATE {states} SET version = $2, lineage = $3, serial = $4, state = $5::jsonb,
                         updated_at = now(), updated_by = current_user WHERE key = $1 AND serial = $6"
                    ),
                    None => format!(
                        "INSERT INTO {states} (key, version, lineage, serial, state) VALUES ($1, $2, $3, $4, $5::jsonb)
                         ON CONFLICT (key) DO NOTHING"
                    ),
                };
                let n = sqlx::query(AssertSqlSafe(q))
                    .bind(&i.key)
                    .bind(state.version as i32)
                    .bind(&state.lineage)
                    .bind(state.serial as i64)
                    .bind(&doc)
                    .bind(loaded.unwrap_or(0))
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?
                    .rows_affected();
                if n != 1 {
                    let now: Option<i64> =
                        sqlx::query_scalar(AssertSqlSafe(format!("SELECT serial FROM {states} WHERE key = $1")))
                            .bind(&i.key)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(failed)?;
                    let _ = tx.rollback().await;
                    return Err(StateError::Conflict(
                        i.place.clone(),
                        loaded.unwrap_or(0) as u64,
                        now.map_or("a new state".into(), |s| s.to_string()),
                    ));
                }
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {journal} WHERE key = $1")))
                    .bind(&i.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                tx.commit().await.map_err(failed)?;
                *loaded = Some(state.serial as i64);
                Ok(())
            })
        })
    }

    fn journal(&self) -> Result<Journal, StateError> {
        // Connects now: an apply whose journal cannot be written starts nothing.
        self.exists()?;
        let location = format!("the journal table {} of {}", self.inner.table("journal"), self.inner.place);
        Ok(Journal::new(Box::new(PgJournal { inner: self.inner.clone() }), location))
    }

    fn lock(&self, operation: &str, timeout: Duration) -> Result<StateLock, StateError> {
        let i = &self.inner;
        let start = Instant::now();
        let (pid, host, user) = whoami();
        let locks = i.table("locks");
        loop {
            let got = i.with(|rt, conn, _| {
                rt.block_on(async {
                    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(i.lock_id())
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(|e| backend_err("taking the lock", e))?;
                    if !got {
                        return Ok(None);
                    }
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {locks} (key, backend_pid, pid, host, os_user, operation, since)
                         VALUES ($1, pg_backend_pid(), $2, $3, $4, $5, now())
                         ON CONFLICT (key) DO UPDATE SET backend_pid = excluded.backend_pid, pid = excluded.pid,
                           host = excluded.host, os_user = excluded.os_user, operation = excluded.operation,
                           since = excluded.since"
                    )))
                    .bind(&i.key)
                    .bind(pid)
                    .bind(&host)
                    .bind(&user)
                    .bind(operation)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| backend_err("taking the lock", e))?;
                    Ok(Some(()))
                })
            })?;
            if got.is_some() {
                return Ok(StateLock::new(PgLock { inner: i.clone() }));
            }
            if start.elapsed() >= timeout {
                let holder = i.with(|rt, conn, _| rt.block_on(i.holder(conn)))?;
                let text = holder.map_or_else(|| "a session that has just released it".to_string(), |(_, t)| t);
                return Err(StateError::Locked(format!("{}: {text}", i.place)));
            }
            std::thread::sleep(Duration::from_millis(200).min(timeout.saturating_sub(start.elapsed())));
        }
    }

    fn force_unlock(&self, terminate: bool) -> Result<Unlock, StateError> {
        let i = &self.inner;
        let locks = i.table("locks");
        let free = |rt: &tokio::runtime::Runtime, conn: &mut PgConnection| -> Result<Option<Unlock>, StateError> {
            rt.block_on(async {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(i.lock_id())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| backend_err("taking the lock", e))?;
                if !got {
                    return Ok(None);
                }
                let left: Option<(i64, String, String, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
                    "DELETE FROM {locks} WHERE key = $1 RETURNING pid, host, os_user, operation,
                       to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                )))
                .bind(&i.key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| backend_err("clearing the lock", e))?;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(i.lock_id())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| backend_err("releasing the lock", e))?;
                Ok(Some(match left {
                    Some((pid, host, user, op, since)) => {
                        Unlock::Cleared(format!("{op} by {user}@{host}, pid {pid}, since {since}"))
                    }
                    None => Unlock::NotLocked,
                }))
            })
        };
        if let Some(u) = i.with(|rt, conn, _| free(rt, conn))? {
            return Ok(u);
        }
        let Some((spid, text)) = i.with(|rt, conn, _| rt.block_on(i.holder(conn)))? else {
            // Released between the two looks.
            return i.with(|rt, conn, _| free(rt, conn)).map(|u| u.unwrap_or(Unlock::NotLocked));
        };
        if !terminate {
            return Ok(Unlock::Held(text));
        }
        i.with(|rt, conn, _| {
            rt.block_on(async {
                let failed = |e: sqlx::Error| backend_err("ending the holder's session", e);
                let sent: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                    .bind(spid)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(failed)?;
                if !sent {
                    return Err(StateError::Backend(format!(
                        "the postgres state backend: the holder's session ({text}) could not be ended"
                    )));
                }
                // pg_terminate_backend only signals (PostgreSQL 12 and 13 cannot wait): wait for it to go.
                let start = Instant::now();
                loop {
                    let alive: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1)")
                            .bind(spid)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(failed)?;
                    if !alive {
                        return Ok(());
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(StateError::Backend(format!(
                            "the postgres state backend: the holder's session ({text}) did not end within 10 s"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })?;
        // Its lock went with its session; clear the row it left.
        i.with(|rt, conn, _| free(rt, conn))?;
        Ok(Unlock::Terminated(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_depends_on_schema_and_key() {
        assert_eq!(lock_key("dbctl", "prod"), lock_key("dbctl", "prod"));
        assert_ne!(lock_key("dbctl", "prod"), lock_key("dbctl", "staging"));
        assert_ne!(lock_key("dbctl", "prod"), lock_key("other", "prod"));
    }

    #[test]
    fn the_place_never_holds_the_password() {
        let s = PgState::new("postgres://dbctl:s3cret-pw@db.example.com:6543/state?sslmode=require", "dbctl", "prod")
            .unwrap();
        let d = s.describe();
        assert_eq!(d, "the postgres state backend (db.example.com:6543/state, key \"prod\")");
        assert!(!d.contains("s3cret"));
    }
}
