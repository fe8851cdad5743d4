//! The PostgreSQL engine: read the catalogs in one round trip per server
//! (plus one per managed database for schema, table and default ACLs and
//! extensions), and execute steps.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use super::{ClassPrivs, DetailScope, EngineError, LiveDbDetail, LiveSchema, LiveServer};

pub fn options(url: &str, database: Option<&str>) -> Result<PgConnectOptions, EngineError> {
    let mut o = PgConnectOptions::from_str(url)
        .map_err(|e| EngineError::Setup(format!("invalid PostgreSQL url: {}", redact_url_error(&e.to_string()))))?
        .application_name("dbctl")
        // Statements may carry a PASSWORD literal: they are never logged.
        .disable_statement_logging();
    if let Some(db) = database {
        o = o.database(db);
    }
    Ok(o)
}

fn redact_url_error(msg: &str) -> String {
    // sqlx errors never include the password, but be sure nothing after `:` before `@` survives.
    match (msg.find("://"), msg.find('@')) {
        (Some(a), Some(b)) if a < b => format!("{}://(redacted){}", &msg[..a], &msg[b..]),
        _ => msg.to_string(),
    }
}

pub async fn connect(server: &str, url: &str, database: Option<&str>) -> Result<PgConnection, EngineError> {
    let o = options(url, database)?;
    let host = o.get_host().to_string();
    let port = o.get_port();
    o.connect().await.map_err(|e| EngineError::Connect {
        server: format!("{server} ({host}:{port}{})", database.map(|d| format!(", database {d}")).unwrap_or_default()),
        message: e.to_string(),
    })
}

/// The server-level catalog read (public so benchmarks can run the same query through psql).
pub const SERVER_QUERY: &str = r#"
SELECT json_build_object(
  'version', current_setting('server_version'),
  'admin', current_user,
  'roles', COALESCE((
    SELECT json_object_agg(r.rolname, json_build_object(
      'login', r.rolcanlogin,
      'superuser', r.rolsuper,
      'connection_limit', r.rolconnlimit,
      'valid_until', CASE WHEN r.rolvaliduntil IS NULL OR r.rolvaliduntil = 'infinity' THEN NULL
                     ELSE to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
      'member_of', COALESCE((SELECT json_agg(g.rolname ORDER BY g.rolname)
                             FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                             WHERE m.member = r.oid), '[]'::json)))
    FROM pg_roles r WHERE r.rolname !~ '^pg_'), '{}'::json),
  'databases', COALESCE((
    SELECT json_object_agg(d.datname, json_build_object(
      'owner', pg_get_userbyid(d.datdba),
      'encoding', pg_encoding_to_char(d.encoding),
      'collation', d.datcollate,
      'connection_limit', d.datconnlimit,
      'privileges', COALESCE((
        SELECT json_object_agg(g, p) FROM (
          SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS g,
                 json_agg(a.privilege_type ORDER BY a.privilege_type) AS p
          FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a GROUP BY 1) x), '{}'::json)))
    FROM pg_database d WHERE NOT d.datistemplate), '{}'::json)
)::text
"#;

/// The per-database read; `$1` is the array of schema names.
pub const DB_QUERY: &str = r#"
WITH sch AS (SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_namespace n WHERE n.nspname = ANY($1)),
rel AS (
  SELECT s.nspname, CASE WHEN c.relkind = 'S' THEN 'sequences' ELSE 'tables' END AS cls,
         COALESCE(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)) AS acl
  FROM pg_class c JOIN sch s ON s.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))
SELECT json_build_object(
  'extensions', COALESCE((SELECT json_agg(extname) FROM pg_extension), '[]'::json),
  'schemas', COALESCE((SELECT json_agg(json_build_array(nspname, pg_get_userbyid(nspowner))) FROM sch), '[]'::json),
  'schema_acl', COALESCE((
     SELECT json_agg(json_build_array(s.nspname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type))
     FROM sch s, aclexplode(COALESCE(s.nspacl, acldefault('n', s.nspowner))) a), '[]'::json),
  'counts', COALESCE((SELECT json_agg(json_build_array(nspname, cls, n)) FROM (
     SELECT nspname, cls, count(*) AS n FROM rel GROUP BY 1, 2) x), '[]'::json),
  'privs', COALESCE((SELECT json_agg(json_build_array(nspname, cls, g, p, n)) FROM (
     SELECT rel.nspname, rel.cls, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS g,
            a.privilege_type AS p, count(*) AS n
     FROM rel, aclexplode(rel.acl) a GROUP BY 1, 2, 3, 4) x), '[]'::json),
  'defaults', COALESCE((
     SELECT json_agg(json_build_array(s.nspname, CASE WHEN d.defaclobjtype = 'S' THEN 'sequences' ELSE 'tables' END,
                     pg_get_userbyid(d.defaclrole), CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                     a.privilege_type))
     FROM pg_default_acl d JOIN sch s ON s.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
     WHERE d.defaclobjtype IN ('r', 'S')), '[]'::json)
)::text
"#;

#[derive(serde::Deserialize)]
struct DbRows {
    extensions: BTreeSet<String>,
    schemas: Vec<(String, String)>,
    schema_acl: Vec<(String, String, String)>,
    counts: Vec<(String, String, u64)>,
    privs: Vec<(String, String, String, String, u64)>,
    defaults: Vec<(String, String, String, String, String)>,
}

fn query_err(e: sqlx::Error) -> EngineError {
    EngineError::Query(e.to_string())
}

/// Read one server: its roles and databases, then (in parallel, a few at a
/// time) the details of the databases in `scope` that exist.
pub async fn read(server: &str, url: &str, scope: &DetailScope) -> Result<LiveServer, EngineError> {
    let t = std::time::Instant::now();
    let mut conn = connect(server, url, None).await?;
    let text: String = sqlx::query_scalar(SERVER_QUERY).fetch_one(&mut conn).await.map_err(query_err)?;
    conn.close().await.ok();
    tracing::debug!("{server}: server catalog read in {} ms ({} bytes)", t.elapsed().as_millis(), text.len());
    let mut live: LiveServer = serde_json::from_str(&text).map_err(|e| EngineError::Query(format!("catalog: {e}")))?;
    live.exists = true;

    let wanted: Vec<(String, Vec<String>)> = scope
        .iter()
        .filter(|(db, _)| live.databases.contains_key(*db))
        .map(|(db, schemas)| (db.clone(), schemas.iter().cloned().collect()))
        .collect();
    use futures::stream::{self, StreamExt};
    let details: Vec<Result<(String, LiveDbDetail), EngineError>> = stream::iter(wanted)
        .map(|(db, schemas)| async move {
            let mut c = connect(server, url, Some(&db)).await?;
            // One simple-protocol round trip: a fresh backend pays for every extra message.
            let array = format!(
                "ARRAY[{}]::text[]",
                schemas.iter().map(|s| super::sql::pg_literal(s)).collect::<Vec<_>>().join(", ")
            );
            let row = sqlx::raw_sql(AssertSqlSafe(DB_QUERY.replace("$1", &array)))
                .fetch_one(&mut c)
                .await
                .map_err(query_err)?;
            let text: String = sqlx::Row::try_get(&row, 0).map_err(query_err)?;
            c.close().await.ok();
            let rows: DbRows =
                serde_json::from_str(&text).map_err(|e| EngineError::Query(format!("catalog of {db}: {e}")))?;
            Ok((db, detail(rows)))
        })
        .buffer_unordered(8)
        .collect()
        .await;
    tracing::debug!("{server}: server and database catalogs read in {} ms", t.elapsed().as_millis());
    for d in details {
        let (db, detail) = d?;
        if let Some(l) = live.databases.get_mut(&db) {
            l.detail = Some(detail);
        }
    }
    Ok(live)
}

fn detail(rows: DbRows) -> LiveDbDetail {
    let mut schemas: BTreeMap<String, LiveSchema> =
        rows.schemas.into_iter().map(|(n, owner)| (n, LiveSchema { owner, ..Default::default() })).collect();
    for (s, g, p) in rows.schema_acl {
        if let Some(sc) = schemas.get_mut(&s) {
            sc.privileges.entry(g).or_default().insert(p);
        }
    }
    for (s, cls, n) in rows.counts {
        if let Some(sc) = schemas.get_mut(&s) {
            class_mut(sc, &cls).count = n;
        }
    }
    for (s, cls, g, p, n) in rows.privs {
        if let Some(sc) = schemas.get_mut(&s) {
            let cp = class_mut(sc, &cls);
            cp.any.entry(g.clone()).or_default().insert(p.clone());
            if n == cp.count {
                cp.all.entry(g).or_default().insert(p);
            }
        }
    }
    for (s, cls, role, g, p) in rows.defaults {
        if let Some(sc) = schemas.get_mut(&s) {
            let d = if cls == "sequences" { &mut sc.default_sequences } else { &mut sc.default_tables };
            d.entry(role).or_default().entry(g).or_default().insert(p);
        }
    }
    LiveDbDetail { extensions: rows.extensions, schemas }
}

fn class_mut<'a>(sc: &'a mut LiveSchema, cls: &str) -> &'a mut ClassPrivs {
    if cls == "sequences" {
        &mut sc.sequences
    } else {
        &mut sc.tables
    }
}

/// Run one statement (or several separated by `;`, as a simple query).
pub async fn execute(conn: &mut PgConnection, sql: String) -> Result<(), EngineError> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()).map_err(query_err)
}

/// Connections open to a database other than dbctl's own.
pub async fn open_connections(conn: &mut PgConnection, database: &str) -> Result<i64, EngineError> {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(database)
        .fetch_one(conn)
        .await
        .map_err(query_err)
}
