//! Running one migration: its statements, then its row in the tracking
//! table, in one transaction (unless the file opts out). The tracking table
//! is the truth: a migration whose transaction committed is applied, one
//! whose transaction did not is pending, so an interrupted apply converges
//! on the next run.

use sqlx::{Connection, MySqlConnection, PgConnection};

use super::{create_table_sql, line_col, record_sql, MigrationStep, TABLE};
use crate::model::Engine;

/// The statements of a PostgreSQL file with the byte offset each starts at.
/// A file squawk's parser cannot split cleanly runs as one piece.
pub fn statements(sql: &str) -> Vec<(usize, &str)> {
    use squawk_syntax::ast::AstNode;
    let parse = squawk_syntax::SourceFile::parse(sql);
    if !parse.errors().is_empty() {
        return vec![(0, sql)];
    }
    let starts: Vec<usize> = parse.tree().stmts().map(|s| usize::from(s.syntax().text_range().start())).collect();
    if starts.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(sql.len());
        out.push((s, &sql[s..end]));
    }
    out
}

async fn pg_exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *conn).await.map(|_| ())
}

/// `file:line: message`: the line of the failing statement (or, when the
/// server gives a position inside it, of that position).
fn pg_failure(m: &MigrationStep, start: usize, stmt: &str, e: &sqlx::Error) -> String {
    let msg = crate::engine::postgres::server_message(e);
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
pub async fn postgres(conn: &mut PgConnection, m: &MigrationStep) -> Result<Option<String>, String> {
    let server = |e: sqlx::Error| crate::engine::postgres::server_message(&e);
    pg_exec(conn, &create_table_sql(Engine::Postgres)).await.map_err(server)?;
    let started = std::time::Instant::now();
    if m.no_transaction {
        if recorded_pg(conn, m).await? {
            return Ok(None);
        }
        if let Some(r) = &m.role {
            pg_exec(conn, &format!("SET ROLE {}", crate::engine::sql::pg_ident(r))).await.map_err(server)?;
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
        pg_exec(conn, &record_sql(Engine::Postgres, m, ns)).await.map_err(server)?;
        return Ok(None);
    }
    let mut tx = conn.begin().await.map_err(server)?;
    // One migration at a time per database: a second apply waits here, then sees the row.
    pg_exec(&mut tx, &format!("LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")).await.map_err(server)?;
    if recorded_pg(&mut tx, m).await? {
        tx.rollback().await.map_err(server)?;
        return Ok(None);
    }
    if let Some(r) = &m.role {
        pg_exec(&mut tx, &format!("SET LOCAL ROLE {}", crate::engine::sql::pg_ident(r))).await.map_err(server)?;
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
    pg_exec(&mut tx, &record_sql(Engine::Postgres, m, ns)).await.map_err(server)?;
    tx.commit().await.map_err(server)?;
    Ok(None)
}

async fn recorded_pg(conn: &mut PgConnection, m: &MigrationStep) -> Result<bool, String> {
    let sum: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT encode(checksum, 'hex') FROM {TABLE} WHERE version = $1"
    )))
    .bind(m.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| crate::engine::postgres::server_message(&e))?;
    match sum {
        None => Ok(false),
        Some(s) if s == m.checksum => Ok(true),
        Some(_) => {
            Err(format!("{}: version {} is already recorded with another checksum; make a new plan", m.file, m.version))
        }
    }
}

/// Run one migration on MySQL/MariaDB, in `database`. DDL commits as it
/// runs there: a failure leaves the statements before it applied.
pub async fn mysql(conn: &mut MySqlConnection, database: &str, m: &MigrationStep) -> Result<Option<String>, String> {
    let err = |e: sqlx::Error| match &e {
        sqlx::Error::Database(d) => d.message().to_string(),
        _ => e.to_string(),
    };
    exec(conn, format!("USE {}", crate::engine::sql::mysql_ident(database))).await.map_err(err)?;
    exec(conn, create_table_sql(Engine::Mysql)).await.map_err(err)?;
    let done: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT LOWER(HEX(checksum)) FROM {TABLE} WHERE version = ?")))
            .bind(m.version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(err)?;
    if done.as_deref() == Some(m.checksum.as_str()) {
        return Ok(None);
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
    exec(conn, record_sql(Engine::Mysql, m, ns)).await.map_err(err)?;
    exec(conn, "COMMIT".into()).await.map_err(err)?;
    Ok(None)
}

async fn exec(c: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ())
}

/// Statements of a MySQL file: split at `;` outside quotes and comments.
pub fn split_mysql(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                out.push((start, &sql[start..=i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, &sql[start.min(sql.len())..]));
    out.retain(|(_, s)| !only_comments(s));
    out
}

fn only_comments(s: &str) -> bool {
    s.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with("--") || l.starts_with('#') || l == ";"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_keep_their_offsets() {
        let sql = "-- a\nCREATE TABLE t (a text);\n\nINSERT INTO t VALUES ('x;y');\n";
        let s = statements(sql);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(line_col(sql, s[1].0).0, 4);
        let m = split_mysql(sql);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].1.contains("'x;y'"));
    }
}
