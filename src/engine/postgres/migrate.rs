//! Migrations on PostgreSQL: one migration's statements and its row in the
//! tracking table, in one transaction (unless the file opts out). The
//! tracking table is the truth: a migration whose transaction committed is
//! applied, one whose transaction did not is pending, so an interrupted
//! apply converges on the next run.

use sqlx::{Connection, PgConnection};

use crate::engine::sql::{pg_ident, pg_literal};
use crate::migrate::split::statements;
use crate::migrate::{line_col, Applied, MigrationStep, TABLE};

/// The tracking table's DDL (sqlx's layout).
fn create_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, \
         execution_time BIGINT NOT NULL)"
    )
}

/// The row a successful migration leaves (run in the migration's own transaction).
fn record_sql(f: &MigrationStep, duration_ns: i64) -> String {
    format!(
        "INSERT INTO {TABLE} (version, description, success, checksum, execution_time) VALUES ({}, {}, TRUE, '\\x{}'::bytea, {duration_ns})",
        f.version,
        pg_literal(&f.name),
        f.checksum
    )
}

async fn pg_exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *conn).await.map(|_| ())
}

/// `file:line: message`: the line of the failing statement (or, when the
/// server gives a position inside it, of that position).
fn pg_failure(m: &MigrationStep, start: usize, stmt: &str, e: &sqlx::Error) -> String {
    let msg = super::server_message(e);
    let mut offset = start + stmt.len() - stmt.trim_start().len();
    if let sqlx::Error::Database(d) = e {
        if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            if let Some(sqlx::postgres::PgErrorPosition::Original(p)) = pg.position() {
                offset = start + stmt.char_indices().nth(p.saturating_sub(1)).map_or(0, |(i, _)| i);
            }
        }
    }
    let (line, _) = line_col(&m.sql, offset);
    format!("{}:{line}: {msg}", m.file)
}

/// Run one migration on PostgreSQL. Already recorded with the same checksum
/// (a saved plan applied twice, an interrupted apply): nothing to do.
pub async fn run(conn: &mut PgConnection, m: &MigrationStep) -> Result<(), String> {
    let server = |e: sqlx::Error| super::server_message(&e);
    pg_exec(conn, &create_table_sql()).await.map_err(server)?;
    let started = std::time::Instant::now();
    if m.no_transaction {
        if recorded_pg(conn, m).await? {
            return Ok(());
        }
        if let Some(r) = &m.role {
            pg_exec(conn, &format!("SET ROLE {}", pg_ident(r))).await.map_err(server)?;
        }
        for (start, stmt) in statements(&m.sql) {
            let ran = pg_exec(conn, stmt).await;
            if ran.is_err() && m.role.is_some() {
                let _ = pg_exec(conn, "RESET ROLE").await;
            }
            ran.map_err(|e| {
                format!(
                    "{}; it does not run in a transaction: the statements before this one stay applied",
                    pg_failure(m, start, stmt, &e)
                )
            })?;
        }
        if m.role.is_some() {
            pg_exec(conn, "RESET ROLE").await.map_err(server)?;
        }
        let ns = started.elapsed().as_nanos() as i64;
        pg_exec(conn, &record_sql(m, ns)).await.map_err(server)?;
        return Ok(());
    }
    let mut tx = conn.begin().await.map_err(server)?;
    // One migration at a time per database: a second apply waits here, then sees the row.
    pg_exec(&mut tx, &format!("LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")).await.map_err(server)?;
    if recorded_pg(&mut tx, m).await? {
        tx.rollback().await.map_err(server)?;
        return Ok(());
    }
    if let Some(r) = &m.role {
        pg_exec(&mut tx, &format!("SET LOCAL ROLE {}", pg_ident(r))).await.map_err(server)?;
    }
    for (start, stmt) in statements(&m.sql) {
        if let Err(e) = pg_exec(&mut tx, stmt).await {
            let why = pg_failure(m, start, stmt, &e);
            let _ = tx.rollback().await;
            return Err(format!("{why}; the migration was rolled back: none of it is applied"));
        }
    }
    if m.role.is_some() {
        pg_exec(&mut tx, "RESET ROLE").await.map_err(server)?;
    }
    let ns = started.elapsed().as_nanos() as i64;
    pg_exec(&mut tx, &record_sql(m, ns)).await.map_err(server)?;
    tx.commit().await.map_err(server)?;
    Ok(())
}

async fn recorded_pg(conn: &mut PgConnection, m: &MigrationStep) -> Result<bool, String> {
    let sum: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT encode(checksum, 'hex') FROM {TABLE} WHERE version = $1"
    )))
    .bind(m.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| super::server_message(&e))?;
    match sum {
        None => Ok(false),
        Some(s) if s == m.checksum => Ok(true),
        Some(_) => {
            Err(format!("{}: version {} is already recorded with another checksum; make a new plan", m.file, m.version))
        }
    }
}

/// Read a database's tracking table: one query; no table means nothing applied.
pub async fn applied(conn: &mut sqlx::PgConnection) -> Result<Vec<Applied>, String> {
    use sqlx::Row;
    let sql = format!(
        "SELECT version, description, encode(checksum, 'hex') AS checksum, \
         to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS applied_at, \
         execution_time, success FROM {TABLE} ORDER BY version"
    );
    match sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *conn).await {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| Applied {
                version: r.get(0),
                name: r.get(1),
                checksum: r.get(2),
                applied_at: r.get(3),
                duration_ns: r.get(4),
                success: r.get(5),
            })
            .collect()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}
