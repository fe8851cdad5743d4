//! The MySQL / MariaDB engine: read accounts, role grants, schemata and
//! database-level privileges (one query per catalog, on one connection), and
//! execute steps.
//!
//! Accounts are `'user'@'host'`; roles have no host. The live state keys a
//! user by name; when a name exists with several hosts, the one the
//! configuration asks for is kept under the plain name (see `read`) and the
//! others under `name@host`, so they are never mistaken for it.

pub mod ddl;
pub mod embedded;
pub mod migrate;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow, MySqlSslMode};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Row};

use super::{EngineError, LiveDatabase, LiveRole, LiveServer};

/// Schemas every server has; never managed.
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// MariaDB or MySQL 8: where roles live differs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

pub async fn connect(server: &str, url: &str) -> Result<MySqlConnection, EngineError> {
    super::tls::init();
    let o = MySqlConnectOptions::from_str(url)
        .map_err(|_| EngineError::Setup(format!("{server}: invalid MySQL url (mysql://user:password@host:port)")))?
        // Statements may carry an IDENTIFIED BY literal: they are never logged.
        .disable_statement_logging();
    // The mysql client: `ssl-ca` without `ssl-mode` verifies the server's certificate against it.
    let o = if super::tls::url_param(url, super::tls::MY_CA).is_some()
        && super::tls::url_param(url, super::tls::MY_MODE).is_none()
    {
        o.ssl_mode(MySqlSslMode::VerifyCa)
    } else {
        o
    };
    let dialed = match tokio::time::timeout(super::limits::connect_timeout(), o.connect()).await {
        Ok(r) => r,
        Err(_) => {
            return Err(EngineError::Connect {
                server: format!("{server} ({}:{})", o.get_host(), o.get_port()),
                message: super::limits::no_answer(),
            })
        }
    };
    let mut conn = dialed.map_err(|e| {
        // MariaDB refuses a connection in clear under require_secure_transport
        // with the same "Access denied" as a wrong password: say so when this one was in clear.
        let denied = matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("28000") || d.message().starts_with("Access denied"));
        let mut message = super::tls::explain(true, query_err(e).to_string());
        if denied && matches!(o.get_ssl_mode(), MySqlSslMode::Disabled) {
            message.push_str(&format!("\n  hint: {}", super::tls::MY_DENIED_IN_CLEAR));
        }
        EngineError::Connect { server: format!("{server} ({}:{})", o.get_host(), o.get_port()), message }
    })?;
    // String literals are escaped for the default mode; make sure the session has it.
    sqlx::raw_sql(
        "SET SESSION sql_mode = REPLACE(REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', ''), 'ANSI_QUOTES', '')",
    )
    .execute(&mut conn)
    .await
    .map_err(query_err)?;
    Ok(conn)
}

/// The error of a failed password statement: the server's reason (a
/// validation plugin's "does not satisfy the current policy requirements"),
/// except when it quotes the statement, which holds the password (a syntax
/// error's "near '...'").
pub fn password_error(address: &str, server: &str) -> String {
    if server.contains("near '") || server.contains("IDENTIFIED") {
        format!("setting the password of {address} failed (the server's message quotes the statement and is not shown)")
    } else {
        format!("setting the password of {address} failed: {server}")
    }
}

fn query_err(e: sqlx::Error) -> EngineError {
    EngineError::Query(match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    })
}

fn text(row: &MySqlRow, i: usize) -> String {
    row.try_get::<String, _>(i)
        .or_else(|_| row.try_get::<Vec<u8>, _>(i).map(|b| String::from_utf8_lossy(&b).into_owned()))
        .unwrap_or_default()
}

async fn rows(conn: &mut MySqlConnection, sql: &str) -> Result<Vec<MySqlRow>, EngineError> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string())).fetch_all(conn).await.map_err(query_err)
}

/// A database name as the grant tables store it: `_`, `%` and `\` escaped.
pub fn unescape_db(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The database a `mysql.db` row names, when it names exactly one: every
/// `_` and `%` escaped. A pattern (an unescaped wildcard) is `None`.
pub fn exact_db(s: &str) -> Option<String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '_' | '%' => return None,
            _ => {}
        }
    }
    Some(unescape_db(s))
}

/// A character set or collation as current servers name it: in lower case,
/// and `utf8` by its real name `utf8mb3` (what MariaDB 10.6+ and MySQL 8
/// report for it), so either spelling compares equal on any server.
pub fn canonical_charset(name: &str) -> String {
    let lower = name.to_lowercase();
    match lower.strip_prefix("utf8") {
        Some("") => "utf8mb3".to_string(),
        Some(rest) if rest.starts_with('_') => format!("utf8mb3{rest}"),
        _ => lower,
    }
}

/// `Create_tmp_table_priv` → `CREATE TEMPORARY TABLES`, as GRANT spells them.
fn privilege_of_column(col: &str) -> Option<String> {
    let base = col.strip_suffix("_priv")?;
    Some(match base {
        "Grant" => return None,
        "Create_tmp_table" => "CREATE TEMPORARY TABLES".into(),
        other => other.replace('_', " ").to_uppercase(),
    })
}

/// Read one server. `hosts`: the host the configuration wants for each user name.
pub async fn read(server: &str, url: &str, hosts: &BTreeMap<String, String>) -> Result<LiveServer, EngineError> {
    let mut conn = connect(server, url).await?;
    let r = read_with(&mut conn, hosts).await;
    conn.close().await.ok();
    r
}

async fn read_with(conn: &mut MySqlConnection, hosts: &BTreeMap<String, String>) -> Result<LiveServer, EngineError> {
    // One message: the server and admin, and whether this session is encrypted (its TLS cipher).
    let head = rows(conn, "SELECT VERSION(), CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_cipher'").await?;
    let encrypted = head.get(1).map(|r| !text(r, 1).is_empty());
    let version = head.first().map(|r| text(r, 0)).unwrap_or_default();
    let admin = head.first().map(|r| text(r, 1)).unwrap_or_default();
    let admin = admin.split('@').next().unwrap_or_default().to_string();
    let flavor = if version.contains("MariaDB") { Flavor::MariaDb } else { Flavor::MySql };

    // Accounts: (user, host, is role, max connections).
    let accounts = match flavor {
        Flavor::MariaDb => {
            rows(conn, "SELECT User, Host, is_role, CAST(max_user_connections AS SIGNED) FROM mysql.user").await?
        }
        // MySQL 8 has no role flag: a role is an account that is locked, has no password and is granted to someone.
        Flavor::MySql => {
            rows(
                conn,
                "SELECT u.User, u.Host, IF(u.account_locked = 'Y' AND u.authentication_string = '' AND \
                 EXISTS (SELECT 1 FROM mysql.role_edges e WHERE e.FROM_USER = u.User AND e.FROM_HOST = u.Host), 'Y', 'N'), \
                 CAST(u.max_user_connections AS SIGNED) FROM mysql.user u",
            )
            .await?
        }
    };
    let edges = match flavor {
        // (grantee user, grantee host, role)
        Flavor::MariaDb => rows(conn, "SELECT User, Host, Role FROM mysql.roles_mapping").await?,
        Flavor::MySql => rows(conn, "SELECT TO_USER, TO_HOST, FROM_USER FROM mysql.role_edges").await?,
    };
    let schemata = rows(
        conn,
        "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA",
    )
    .await?;
    let db_grants = rows(conn, "SELECT * FROM mysql.db").await?;

    let mut live = LiveServer { exists: true, version, admin, encrypted, ..Default::default() };
    // The key an account is known by: its name when it is a role, or the host the configuration wants
    // (or '%', or the only host there is); `name@host` otherwise.
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &accounts {
        by_name.entry(text(a, 0)).or_default().push(text(a, 1));
    }
    let key_of = |user: &str, host: &str| -> String {
        let hs = by_name.get(user).map(Vec::as_slice).unwrap_or_default();
        // Host names compare as the server stores them: in lower case.
        let chosen = hosts
            .get(user)
            .map(|h| h.to_lowercase())
            .filter(|h| hs.contains(h))
            .or_else(|| hs.iter().find(|h| *h == "%").cloned())
            .or_else(|| (hs.len() == 1).then(|| hs[0].clone()))
            .unwrap_or_default();
        if host == chosen || host.is_empty() {
            user.to_string()
        } else {
            format!("{user}@{host}")
        }
    };
    for a in &accounts {
        let (user, host) = (text(a, 0), text(a, 1));
        let is_role = text(a, 2) == "Y";
        let max: i64 = a.try_get(3).unwrap_or(0);
        let role = LiveRole {
            login: !is_role,
            superuser: false,
            connection_limit: if max == 0 { -1 } else { max },
            valid_until: None,
            member_of: BTreeSet::new(),
            flags: BTreeSet::new(),
            host: if is_role { String::new() } else { host.clone() },
            depends_in: BTreeSet::new(),
        };
        live.roles.insert(key_of(&user, if is_role { "" } else { &host }), role);
    }
    for e in &edges {
        let (user, host, role) = (text(e, 0), text(e, 1), text(e, 2));
        let key = key_of(&user, &host);
        if let Some(r) = live.roles.get_mut(&key) {
            r.member_of.insert(role);
        }
    }
    for s in &schemata {
        let name = text(s, 0);
        if SYSTEM_SCHEMAS.contains(&name.as_str()) {
            continue;
        }
        live.databases.insert(
            name,
            LiveDatabase {
                encoding: canonical_charset(&text(s, 1)),
                collation: canonical_charset(&text(s, 2)),
                connection_limit: -1,
                ..Default::default()
            },
        );
    }
    for g in &db_grants {
        let cols = g.columns();
        let col = |name: &str| cols.iter().position(|c| c.name().eq_ignore_ascii_case(name));
        let (Some(ui), Some(hi), Some(di)) = (col("User"), col("Host"), col("Db")) else { continue };
        // Only a row that names exactly one database is that database's grant;
        // a hand-made pattern (`app\_%`, or `app_db` whose `_` matches any
        // character) is someone else's, and never taken for it.
        let Some(db) = exact_db(&text(g, di)) else { continue };
        let (user, host) = (text(g, ui), text(g, hi));
        let Some(d) = live.databases.get_mut(&db) else { continue };
        let privs: BTreeSet<String> = cols
            .iter()
            .enumerate()
            .filter(|(i, _)| text(g, *i) == "Y")
            .filter_map(|(_, c)| privilege_of_column(c.name()))
            .collect();
        if !privs.is_empty() {
            d.privileges.entry(key_of(&user, &host)).or_default().extend(privs);
        }
    }
    Ok(live)
}

/// Tables in a database: what a plan that drops it would lose.
pub async fn count_tables(server: &str, url: &str, database: &str) -> Result<u64, EngineError> {
    let mut conn = connect(server, url).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
    )
    .bind(database)
    .fetch_one(&mut conn)
    .await
    .map_err(query_err)?;
    conn.close().await.ok();
    Ok(n.max(0) as u64)
}

/// Bound a step session: lock waits, and on MariaDB statement time (see
/// `limits`). Returns the session's CONNECTION_ID().
pub async fn limit(conn: &mut MySqlConnection) -> Result<u64, EngineError> {
    let (sql, mariadb) = super::limits::mysql_session_sql();
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(query_err)?;
    if let Some(sql) = mariadb {
        // MySQL has no max_statement_time (its max_execution_time bounds only SELECT).
        let _ = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await;
    }
    sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut *conn).await.map_err(query_err)
}

/// Run a step's statement (on the session `id`), saying what it waits on
/// while it waits; a lock wait or statement time limit reached is told as
/// such (`limits::timed_out_message`).
pub async fn execute_step(
    server: &str,
    url: &str,
    address: &str,
    id: u64,
    conn: &mut MySqlConnection,
    sql: String,
) -> Result<(), EngineError> {
    let run = sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn);
    let (r, blockers) = super::limits::mysql_watched(server, url, address, id, run).await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if super::limits::mysql_timed_out(&e) => {
            Err(EngineError::Query(super::limits::timed_out_message(&blockers)))
        }
        Err(e) => Err(query_err(e)),
    }
}

pub async fn execute(conn: &mut MySqlConnection, sql: String) -> Result<(), EngineError> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()).map_err(query_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_table_names_and_columns() {
        assert_eq!(unescape_db("my\\_db\\%x\\\\y"), "my_db%x\\y");
        assert_eq!(exact_db("my\\_db\\%x\\\\y").as_deref(), Some("my_db%x\\y"));
        assert_eq!(exact_db("app"), Some("app".to_string()));
        assert_eq!(canonical_charset("UTF8"), "utf8mb3");
        assert_eq!(canonical_charset("utf8_General_CI"), "utf8mb3_general_ci");
        assert_eq!(canonical_charset("utf8mb4"), "utf8mb4");
        assert_eq!(canonical_charset("UTF8MB4_bin"), "utf8mb4_bin");
        assert_eq!(canonical_charset("latin1_swedish_ci"), "latin1_swedish_ci");
        assert_eq!(exact_db("app\\_%"), None);
        assert_eq!(exact_db("app_db"), None);
        assert_eq!(exact_db("app%"), None);
        assert_eq!(privilege_of_column("Create_tmp_table_priv").as_deref(), Some("CREATE TEMPORARY TABLES"));
        assert_eq!(privilege_of_column("Show_view_priv").as_deref(), Some("SHOW VIEW"));
        assert_eq!(privilege_of_column("Grant_priv"), None);
        assert_eq!(privilege_of_column("Db"), None);
    }
}
