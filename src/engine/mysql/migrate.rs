//! Migrations on MySQL/MariaDB: DDL commits as it runs there, so a failure
//! leaves the statements before it applied; the tracking table says which
//! migrations finished.

use sqlx::MySqlConnection;

use crate::engine::sql::{mysql_ident, mysql_literal};
use crate::migrate::split::split_mysql;
use crate::migrate::{line_col, Applied, MigrationStep, TABLE};

/// The tracking table's DDL (sqlx's layout).
fn create_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, checksum BLOB NOT NULL, \
         execution_time BIGINT NOT NULL)"
    )
}

/// The row a successful migration leaves (run in the migration's own transaction).
fn record_sql(f: &MigrationStep, duration_ns: i64) -> String {
    format!(
        "INSERT INTO {TABLE} (version, description, success, checksum, execution_time) VALUES ({}, {}, TRUE, X'{}', {duration_ns})",
        f.version,
        mysql_literal(&f.name),
        f.checksum
    )
}

/// Run one migration on MySQL/MariaDB, in `database`. DDL commits as it
/// runs there: a failure leaves the statements before it applied.
pub async fn run(conn: &mut MySqlConnection, database: &str, m: &MigrationStep) -> Result<(), String> {
    let err = |e: sqlx::Error| match &e {
        sqlx::Error::Database(d) => d.message().to_string(),
        _ => e.to_string(),
    };
    exec(conn, format!("USE {}", mysql_ident(database))).await.map_err(err)?;
    exec(conn, create_table_sql()).await.map_err(err)?;
    let done: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT LOWER(HEX(checksum)) FROM {TABLE} WHERE version = ?")))
            .bind(m.version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(err)?;
    if done.as_deref() == Some(m.checksum.as_str()) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    exec(conn, "START TRANSACTION".into()).await.map_err(err)?;
    for (start, stmt) in split_mysql(&m.sql) {
        if let Err(e) = exec(conn, stmt.to_string()).await {
            let _ = exec(conn, "ROLLBACK".into()).await;
            let (line, _) = line_col(&m.sql, start + stmt.len() - stmt.trim_start().len());
            return Err(format!(
                "{}:{line}: {}; MySQL/MariaDB commit DDL as it runs: the statements before this one stay applied",
                m.file,
                err(e)
            ));
        }
    }
    let ns = started.elapsed().as_nanos() as i64;
    exec(conn, record_sql(m, ns)).await.map_err(err)?;
    exec(conn, "COMMIT".into()).await.map_err(err)?;
    Ok(())
}

async fn exec(c: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ())
}

pub async fn applied(conn: &mut sqlx::MySqlConnection, database: &str) -> Result<Vec<Applied>, String> {
    use sqlx::Row;
    let sql = format!(
        "SELECT version, CAST(description AS CHAR), LOWER(HEX(checksum)), DATE_FORMAT(installed_on, '%Y-%m-%dT%H:%i:%sZ'), \
         execution_time, success FROM {}.{TABLE} ORDER BY version",
        mysql_ident(database)
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
                success: r.get::<bool, _>(5),
            })
            .collect()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42S02") => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}
