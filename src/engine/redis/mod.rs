//! Redis: a database is a key namespace (`NAME:*`) listed in the registry
//! SET, a user an ACL user with one selector per namespace (see `acl`).
//!
//! `read` takes two round trips: the server, its admin, its users, the
//! registry and its category names; then every category's commands and every
//! user's `ACL GETUSER`, pipelined. URLs are `redis://user:password@host:port`
//! with URL-encoded parts; errors never hold the password.

pub mod acl;
pub mod embedded;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::Value;

use super::{EngineError, LiveDatabase, LiveRole, LiveServer};
use acl::{Categories, Reply, REGISTRY};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys asked for per SCAN call and unlinked per UNLINK.
const BATCH: usize = 500;

/// The URL's password, URL-decoded, to scrub from messages.
fn url_password(url: &str) -> Option<String> {
    let info: ::redis::ConnectionInfo = ::redis::IntoConnectionInfo::into_connection_info(url).ok()?;
    info.redis_settings().password().map(str::to_string).filter(|p| !p.is_empty())
}

/// A message with the password (and any `#<sha256>` credential) taken out.
fn scrub(message: String, password: Option<&str>) -> String {
    let mut m = match password {
        Some(p) => message.replace(p, "(sensitive)"),
        None => message,
    };
    // A refused `ACL SETUSER` echoes its rule, which can be a password hash.
    let mut from = 0;
    while let Some(i) = m[from..].find('#').map(|i| i + from) {
        let rest = m.as_bytes()[i + 1..].iter().take(64);
        if rest.len() == 64 && rest.clone().all(u8::is_ascii_hexdigit) {
            m.replace_range(i + 1..i + 65, "(sensitive)");
        }
        from = i + 1;
    }
    m
}

fn query_error(e: ::redis::RedisError, password: Option<&str>) -> EngineError {
    EngineError::Query(scrub(e.to_string(), password))
}

pub async fn connect(server: &str, url: &str) -> Result<MultiplexedConnection, EngineError> {
    let password = url_password(url);
    let fail = |message: String| EngineError::Connect { server: server.to_string(), message };
    let client = ::redis::Client::open(url).map_err(|e| fail(scrub(e.to_string(), password.as_deref())))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(fail(scrub(e.to_string(), password.as_deref()))),
        Err(_) => Err(fail(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
}

fn reply(v: &Value) -> Reply {
    match v {
        Value::Nil => Reply::Nil,
        Value::Int(n) => Reply::Str(n.to_string()),
        Value::BulkString(b) => Reply::Str(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Reply::Str(s.clone()),
        Value::VerbatimString { text, .. } => Reply::Str(text.clone()),
        Value::Okay => Reply::Str("OK".into()),
        Value::Array(l) | Value::Set(l) => Reply::List(l.iter().map(reply).collect()),
        Value::Map(m) => Reply::List(m.iter().flat_map(|(k, v)| [reply(k), reply(v)]).collect()),
        _ => Reply::Nil,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match reply(v) {
        Reply::List(l) => l.into_iter().filter_map(|r| if let Reply::Str(s) = r { Some(s) } else { None }).collect(),
        Reply::Str(s) => vec![s],
        Reply::Nil => vec![],
    }
}

/// Every user dbctl may manage (all but the admin), with its access in
/// dbctl's terms, and the server's categories.
pub struct Catalog {
    pub version: String,
    pub admin: String,
    pub namespaces: BTreeSet<String>,
    pub users: BTreeMap<String, acl::UserAccess>,
    pub categories: Categories,
}

pub async fn read_catalog(conn: &mut MultiplexedConnection, password: Option<&str>) -> Result<Catalog, EngineError> {
    let mut p = ::redis::pipe();
    p.cmd("INFO").arg("server");
    p.cmd("ACL").arg("WHOAMI");
    p.cmd("ACL").arg("USERS");
    p.cmd("SMEMBERS").arg(REGISTRY);
    p.cmd("ACL").arg("CAT");
    let head: Vec<Value> = p.query_async(conn).await.map_err(|e| query_error(e, password))?;
    let info = strings(&head[0]).concat();
    let version =
        info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(|v| v.trim().to_string()).unwrap_or_default();
    let admin = strings(&head[1]).concat();
    let users: Vec<String> = strings(&head[2]).into_iter().filter(|u| *u != admin).collect();
    let namespaces: BTreeSet<String> = strings(&head[3]).into_iter().collect();
    let cats = strings(&head[4]);

    let mut p = ::redis::pipe();
    for c in &cats {
        p.cmd("ACL").arg("CAT").arg(c);
    }
    for u in &users {
        p.cmd("ACL").arg("GETUSER").arg(u);
    }
    let rest: Vec<Value> = if cats.is_empty() && users.is_empty() {
        Vec::new()
    } else {
        p.query_async(conn).await.map_err(|e| query_error(e, password))?
    };
    let categories =
        Categories(cats.iter().zip(&rest).map(|(c, v)| (c.clone(), strings(v).into_iter().collect())).collect());
    let mut out = BTreeMap::new();
    for (u, v) in users.iter().zip(&rest[cats.len()..]) {
        // A user deleted between the two round trips reads as Nil.
        if let Some(a) = acl::parse_getuser(&reply(v)) {
            out.insert(u.clone(), acl::interpret(&a, &categories));
        }
    }
    Ok(Catalog { version, admin, namespaces, users: out, categories })
}

/// Read one server: roles are the ACL users but the admin and a `default`
/// user that is off (`login`: on or
/// off; `flags` holds `acl::CUSTOM_ACL` when its ACL has rules dbctl does
/// not write); databases are the registry's namespaces, with
/// `privileges[user]` the privilege names of its selector there. A
/// selector on an unregistered namespace shows as that database with
/// `owner` empty and `encoding` "unregistered", so the diff sees it.
pub async fn read(server: &str, url: &str) -> Result<LiveServer, EngineError> {
    let mut conn = connect(server, url).await?;
    let c = read_catalog(&mut conn, url_password(url).as_deref()).await?;
    let mut databases: BTreeMap<String, LiveDatabase> = c
        .namespaces
        .iter()
        .map(|n| (n.clone(), LiveDatabase { connection_limit: -1, ..LiveDatabase::default() }))
        .collect();
    let mut roles = BTreeMap::new();
    for (name, u) in &c.users {
        // Redis's built-in user cannot be deleted; switched off it is no account.
        if name == "default" && !u.login {
            continue;
        }
        let mut role = LiveRole { login: u.login, connection_limit: -1, ..LiveRole::default() };
        if !u.exact {
            role.flags.insert(acl::CUSTOM_ACL.to_string());
        }
        roles.insert(name.clone(), role);
        for (ns, privs) in &u.grants {
            match databases.get_mut(ns) {
                Some(db) => {
                    db.privileges.insert(name.clone(), privs.clone());
                }
                // A selector on a namespace dbctl does not manage: rewriting the
                // user's permissions would drop it, so the user reads as custom.
                None => {
                    roles.get_mut(name).map(|r: &mut LiveRole| r.flags.insert(acl::CUSTOM_ACL.to_string()));
                }
            }
        }
    }
    Ok(LiveServer { exists: true, version: c.version, admin: c.admin, roles, databases, ..LiveServer::default() })
}

/// Run one statement as the plan shows it (with the real credential put in
/// by `acl::with_password`). ACL changes are saved to the server's aclfile
/// when it has one, so a restart keeps them.
pub async fn run(server: &str, url: &str, statement: &str) -> Result<(), EngineError> {
    let mut conn = connect(server, url).await?;
    run_on(&mut conn, statement, url_password(url).as_deref()).await
}

pub async fn run_on(
    conn: &mut MultiplexedConnection,
    statement: &str,
    password: Option<&str>,
) -> Result<(), EngineError> {
    // The statement may hold a password hash: errors about it are scrubbed, not quoted.
    let argv = acl::tokenize(statement).map_err(|e| EngineError::Query(scrub(e, password)))?;
    let Some(command) = argv.first() else { return Ok(()) };
    if command == acl::UNLINK_MATCHING {
        let namespace = match argv.as_slice() {
            [_, pattern] => acl::namespace_of(pattern),
            _ => None,
        };
        let namespace = namespace
            .ok_or_else(|| EngineError::Query(format!("{} takes one namespace's key pattern", acl::UNLINK_MATCHING)))?;
        scan_namespace(conn, &namespace, Unlink).await.map_err(|e| query_error(e, password))?;
        return Ok(());
    }
    let mut cmd = ::redis::cmd(command);
    cmd.arg(&argv[1..]);
    let _: Value = cmd.query_async(conn).await.map_err(|e| query_error(e, password))?;
    if command.eq_ignore_ascii_case("ACL") {
        let file: Vec<String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async(conn)
            .await
            .map_err(|e| query_error(e, password))?;
        if file.get(1).is_some_and(|f| !f.is_empty()) {
            let _: Value =
                ::redis::cmd("ACL").arg("SAVE").query_async(conn).await.map_err(|e| query_error(e, password))?;
        }
    }
    Ok(())
}

/// A namespace's own keys, batch by batch: those matching its pattern but
/// not a registered namespace nested in it (`app:cache` in `app`), whose keys
/// `app:*` matches too. `each` gets every batch (SCAN may repeat a key).
async fn scan_namespace(
    conn: &mut MultiplexedConnection,
    namespace: &str,
    mut each: impl AsyncBatch,
) -> ::redis::RedisResult<u64> {
    let registry: Vec<String> = ::redis::cmd("SMEMBERS").arg(REGISTRY).query_async(conn).await?;
    let nested = acl::nested_in(namespace, &registry);
    let pattern = acl::key_pattern(namespace);
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, mut keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?;
        keys.retain(|k| !nested.iter().any(|p| k.starts_with(p.as_bytes())));
        if !keys.is_empty() {
            n += keys.len() as u64;
            each.batch(conn, keys).await?;
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

/// What `scan_namespace` does with each batch.
trait AsyncBatch {
    async fn batch(&mut self, conn: &mut MultiplexedConnection, keys: Vec<Vec<u8>>) -> ::redis::RedisResult<()>;
}

struct Count;
impl AsyncBatch for Count {
    async fn batch(&mut self, _: &mut MultiplexedConnection, _: Vec<Vec<u8>>) -> ::redis::RedisResult<()> {
        Ok(())
    }
}

/// UNLINK frees the values' memory in the background.
struct Unlink;
impl AsyncBatch for Unlink {
    async fn batch(&mut self, conn: &mut MultiplexedConnection, keys: Vec<Vec<u8>>) -> ::redis::RedisResult<()> {
        ::redis::cmd("UNLINK").arg(&keys).query_async::<Value>(conn).await.map(|_| ())
    }
}

/// How many keys the namespace holds (SCAN MATCH its escaped pattern; see `scan_namespace`).
pub async fn count_keys(server: &str, url: &str, namespace: &str) -> Result<u64, EngineError> {
    let mut conn = connect(server, url).await?;
    count_keys_on(&mut conn, namespace).await.map_err(|e| query_error(e, url_password(url).as_deref()))
}

pub async fn count_keys_on(conn: &mut MultiplexedConnection, namespace: &str) -> ::redis::RedisResult<u64> {
    scan_namespace(conn, namespace, Count).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn scrub_takes_out_passwords_and_hashes() {
        let h = super::acl::sha256_hex("x");
        let m = super::scrub(format!("ERR bad 'p@ss' near '#{h}'"), Some("p@ss"));
        assert_eq!(m, "ERR bad '(sensitive)' near '#(sensitive)'");
    }
}
