//! The Redis engine against real redis-servers the tests start (a free
//! port, a temporary directory, stopped at the end): ACL users confined to
//! their namespaces, what is written reads back the same, hostile names,
//! no password anywhere it should not be, dropping a namespace, restarts,
//! and RDB backups that verify (and tampered ones that do not).

use std::collections::BTreeMap;

mod common;
use common::{text, Project};

use dbctl::backup::redis as backup;
use dbctl::engine::redis::{self as engine, acl, embedded::RedisEmbedded};
use dbctl::engine::Privs;

/// A server in its own temporary directory, stopped when dropped.
struct Server {
    e: RedisEmbedded,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.e.stop();
    }
}

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let e = RedisEmbedded::at(&dir.path().join("servers").join("r"), "r", None).unwrap();
    e.start().unwrap();
    Server { e, _dir: dir }
}

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn user_url(port: u16, user: &str, password: &str) -> String {
    format!("redis://{}:{}@127.0.0.1:{port}", enc(user), enc(password))
}

fn privs(p: &[&str]) -> Privs {
    p.iter().map(|s| s.to_string()).collect()
}

async fn admin(s: &Server) -> redis::aio::MultiplexedConnection {
    engine::connect("r", &s.e.url()).await.unwrap()
}

async fn run(s: &Server, statement: &str) {
    engine::run("r", &s.e.url(), statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Create a user with a password and these grants, as an apply would: the shown text, then the secret put in.
async fn create_user(s: &Server, name: &str, password: &str, grants: &BTreeMap<String, Privs>) {
    let shown = acl::create_user(name, true);
    assert!(!shown.contains(password));
    run(s, &acl::with_password(&shown, password).unwrap()).await;
    run(s, &acl::set_grants(name, grants).unwrap()).await;
}

async fn set(c: &mut redis::aio::MultiplexedConnection, key: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(key).arg("v").query_async(c).await
}

fn noperm(r: redis::RedisResult<impl std::fmt::Debug>) -> bool {
    matches!(&r, Err(e) if e.code() == Some("NOPERM"))
}

const RW: &str = "app;x_é*?[";
const RO: &str = "ré(ad)\\only";
const OWNED: &str = "own]er✓";
const USER: &str = "u\"s;er✓'";
const PASSWORD: &str = "pa ss\"w;o\\rd✓";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_confined_to_their_namespaces_and_read_back_as_written() {
    let s = server();
    let spaced = "has space";
    for ns in [RW, RO, OWNED, spaced] {
        run(&s, &acl::create_namespace(ns)).await;
    }
    let grants = BTreeMap::from([
        (RW.to_string(), privs(&["read", "write"])),
        (RO.to_string(), privs(&["read"])),
        (OWNED.to_string(), privs(&["keyspace", "read", "write"])),
    ]);
    create_user(&s, USER, PASSWORD, &grants).await;
    // Every command logged, to check that no log holds the password.
    let mut a = admin(&s).await;
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(0).query_async(&mut a).await.unwrap();

    let mut u = engine::connect("r", &user_url(s.e.port, USER, PASSWORD)).await.unwrap();
    let _: String = redis::cmd("PING").query_async(&mut u).await.unwrap();
    set(&mut u, &format!("{RW}:k")).await.unwrap();
    let v: String = redis::cmd("GET").arg(format!("{RW}:k")).query_async(&mut u).await.unwrap();
    assert_eq!(v, "v");
    // The glob specials in the name are literal: `app;x_é*?[` does not cover `app;x_éZZZ`.
    assert!(noperm(set(&mut u, "app;x_éZZZ:k").await));
    assert!(noperm(set(&mut u, "elsewhere:k").await));
    assert!(noperm(set(&mut u, &format!("{RO}:k")).await), "readonly refuses SET");
    let none: Option<String> = redis::cmd("GET").arg(format!("{RO}:k")).query_async(&mut u).await.unwrap();
    assert_eq!(none, None);
    set(&mut u, &format!("{OWNED}:k")).await.unwrap();
    let _: i64 = redis::cmd("EXPIRE").arg(format!("{OWNED}:k")).arg(100).query_async(&mut u).await.unwrap();
    for cmd in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["ACL", "LIST"],
        &["KEYS", "*"],
        &["SWAPDB", "0", "1"],
        &["SAVE"],
    ] {
        let mut c = redis::cmd(cmd[0]);
        c.arg(&cmd[1..]);
        assert!(noperm(c.query_async::<redis::Value>(&mut u).await), "{cmd:?} must be refused");
    }
    // The same holds with the key inside its namespace.
    let r: redis::RedisResult<redis::Value> =
        redis::cmd("MIGRATE").arg("127.0.0.1").arg(1).arg(format!("{RW}:k")).arg(0).arg(1).query_async(&mut u).await;
    assert!(noperm(r));

    let cat = engine::read_catalog(&mut a, None).await.unwrap();
    assert!(cat.categories.distinguishes_privileges(), "each privilege must read back as itself");
    let live = engine::read("r", &s.e.url()).await.unwrap();
    assert!(live.exists && live.version.starts_with('7'), "{}", live.version);
    assert_eq!(live.admin, "dbctl");
    assert!(!live.roles.contains_key("dbctl"));
    let role = &live.roles[USER];
    assert!(role.login && role.flags.is_empty(), "{role:?}");
    assert!(!live.roles.contains_key("default"), "the built-in user, off, is no account");
    assert_eq!(live.databases.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![RW, RO, OWNED, spaced].into_iter().map(String::from).collect::<Vec<_>>();
        v.sort();
        v
    });
    for (ns, p) in &grants {
        assert_eq!(live.databases[ns].privileges, BTreeMap::from([(USER.to_string(), p.clone())]), "{ns}");
    }
    assert!(live.databases[spaced].privileges.is_empty());
    // Writing the same again changes nothing read (no flapping).
    run(&s, &acl::set_grants(USER, &grants).unwrap()).await;
    assert_eq!(engine::read("r", &s.e.url()).await.unwrap(), live);

    // A change by hand shows as a custom ACL.
    let _: () = redis::cmd("ACL").arg("SETUSER").arg(USER).arg("+info").query_async(&mut a).await.unwrap();
    assert!(engine::read("r", &s.e.url()).await.unwrap().roles[USER].flags.contains(acl::CUSTOM_ACL));
    run(&s, &acl::set_grants(USER, &grants).unwrap()).await;

    // Fewer grants: one statement replaces them all.
    let fewer = BTreeMap::from([(RO.to_string(), privs(&["read", "write"]))]);
    run(&s, &acl::set_grants(USER, &fewer).unwrap()).await;
    let live = engine::read("r", &s.e.url()).await.unwrap();
    assert!(live.databases[RW].privileges.is_empty());
    assert_eq!(live.databases[RO].privileges[USER], privs(&["read", "write"]));
    assert!(noperm(set(&mut u, &format!("{RW}:k2")).await));

    // Off: the user cannot log in.
    run(&s, &acl::set_login(USER, false)).await;
    assert!(!engine::read("r", &s.e.url()).await.unwrap().roles[USER].login);
    let e = engine::connect("r", &user_url(s.e.port, USER, PASSWORD)).await.unwrap_err().to_string();
    assert!(!e.contains(PASSWORD) && !e.contains(&enc(PASSWORD)), "{e}");
    // A statement the server refuses: its error holds no credential.
    let e = engine::run("r", &s.e.url(), &acl::with_password(&acl::set_password("no\0body"), PASSWORD).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains(PASSWORD) && !e.contains(&acl::sha256_hex(PASSWORD)), "{e}");

    run(&s, &acl::delete_user(USER)).await;
    assert!(!engine::read("r", &s.e.url()).await.unwrap().roles.contains_key(USER));

    // The password is in no log, no ACL file and no slow log entry.
    let slowlog: redis::Value = redis::cmd("SLOWLOG").arg("GET").arg(1000).query_async(&mut a).await.unwrap();
    for (what, text) in [
        ("log", std::fs::read_to_string(s.e.log_file()).unwrap()),
        ("acl file", std::fs::read_to_string(s.e.acl_file()).unwrap()),
        ("slowlog", format!("{slowlog:?}")),
    ] {
        assert!(!text.contains(PASSWORD) && !text.contains("pa ss"), "the password is in the {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_namespace_removes_only_its_keys() {
    let s = server();
    let mut a = admin(&s).await;
    for ns in ["a*", "ab", "has space", "a*:nested"] {
        run(&s, &acl::create_namespace(ns)).await;
    }
    for i in 0..1200 {
        set(&mut a, &format!("a*:{i}")).await.unwrap();
    }
    for k in ["ab:1", "a*x:1", "has space:1", "loose", "a*:nested:1"] {
        set(&mut a, k).await.unwrap();
    }
    // `a*:nested:1` matches `a*`'s pattern but is the nested namespace's key.
    assert_eq!(engine::count_keys("r", &s.e.url(), "a*").await.unwrap(), 1200);
    assert_eq!(engine::count_keys("r", &s.e.url(), "a*:nested").await.unwrap(), 1);
    assert_eq!(engine::count_keys("r", &s.e.url(), "has space").await.unwrap(), 1);
    for st in acl::drop_namespace("a*") {
        run(&s, &st).await;
    }
    assert_eq!(engine::count_keys("r", &s.e.url(), "a*").await.unwrap(), 0);
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut a).await.unwrap();
    assert_eq!(n, 5 + 1, "the other keys and the registry remain");
    let live = engine::read("r", &s.e.url()).await.unwrap();
    assert_eq!(live.databases.keys().map(String::as_str).collect::<Vec<_>>(), ["a*:nested", "ab", "has space"]);
    for st in acl::drop_namespace("has space") {
        run(&s, &st).await;
    }
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut a).await.unwrap();
    assert_eq!(n, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_embedded_server_keeps_users_and_data() {
    let s = server();
    // Private: the password file and data are only this user's.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&s.e.root).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(s.e.password_file()).unwrap().permissions().mode() & 0o777, 0o600);
    run(&s, &acl::create_namespace(RW)).await;
    create_user(&s, USER, PASSWORD, &BTreeMap::from([(RW.to_string(), privs(&["read", "write"]))])).await;
    set(&mut engine::connect("r", &user_url(s.e.port, USER, PASSWORD)).await.unwrap(), &format!("{RW}:kept"))
        .await
        .unwrap();
    let before = engine::read("r", &s.e.url()).await.unwrap();
    s.e.stop().unwrap();
    assert!(!s.e.is_running());
    // A new handle on the same directory keeps the port and the password.
    let again = RedisEmbedded::at(&s.e.root, "r", None).unwrap();
    assert_eq!(again.port, s.e.port);
    again.start().unwrap();
    again.start().unwrap();
    assert_eq!(engine::read("r", &again.url()).await.unwrap(), before);
    let mut u = engine::connect("r", &user_url(again.port, USER, PASSWORD)).await.unwrap();
    let v: String = redis::cmd("GET").arg(format!("{RW}:kept")).query_async(&mut u).await.unwrap();
    assert_eq!(v, "v");
    // The default user is off: no way in without a password.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", again.port)).unwrap();
    let r = dbctl::engine::redis::embedded::call(&mut c, &["GET", "x"]).unwrap();
    assert!(r[0].starts_with("-NOAUTH"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_verify_and_tampered_ones_do_not() {
    let s = server();
    let mut a = admin(&s).await;
    let nested = format!("{RW}:inner");
    let names = vec![RW.to_string(), RO.to_string(), "empty".to_string(), nested.clone()];
    for ns in &names {
        run(&s, &acl::create_namespace(ns)).await;
    }
    for i in 0..300 {
        set(&mut a, &format!("{RW}:{i}")).await.unwrap();
    }
    set(&mut a, &format!("{nested}:1")).await.unwrap();
    for i in 0..7 {
        let _: () = redis::cmd("HSET").arg(format!("{RO}:{i}")).arg("f").arg(i).query_async(&mut a).await.unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let mut b = backup::snapshot("r", &s.e.url(), &names, &out.path().join("snap.rdb")).await.unwrap();
    assert_eq!(b.counts, BTreeMap::from([(RW.into(), 300), (RO.into(), 7), ("empty".into(), 0), (nested, 1)]));
    assert!(b.bytes > 1000 && b.bytes == std::fs::metadata(&b.path).unwrap().len());
    assert!(!b.verified);
    backup::verify(&mut b).await.unwrap();
    assert!(b.verified);

    // Counts that differ from the file's.
    let mut wrong = b.clone();
    wrong.verified = false;
    wrong.counts.insert(RW.into(), 301);
    assert!(backup::verify(&mut wrong).await.is_err() && !wrong.verified);
    // A damaged file does not load; an empty one holds nothing.
    let mut bytes = std::fs::read(&b.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 1] ^= 0xff;
    for (name, content) in [("tampered.rdb", bytes), ("empty.rdb", Vec::new())] {
        let path = out.path().join(name);
        std::fs::write(&path, content).unwrap();
        let mut t = RdbBackup { path, verified: false, ..b.clone() };
        let e = backup::verify(&mut t).await.unwrap_err();
        assert!(!t.verified, "{name} verified");
        assert!(!e.contains(&s.e.password().unwrap()), "{e}");
    }
}

use backup::RdbBackup;

// ---------------------------------------------------------------------------
// Through the dbctl command: `engine = "redis"` on an embedded server.

/// A user and database names with semicolons, unicode and glob characters
/// (Redis refuses spaces and quotes in key patterns; validate says so).
const SHOP: &str = "sh;op✓";
const SESSIONS: &str = "sess;ions*✓";
const CATALOG: &str = "cat[alog]";

fn redis_config(catalog_access: &str) -> String {
    format!(
        r#"server "main" {{
  engine   = "redis"
  embedded = true
}}

secret "shop" {{
  generate {{
    length = 32
  }}
}}

user "shop" {{
  server   = server.main
  name     = "{SHOP}"
  password = secret.shop
}}

database "sessions" {{
  server = server.main
  name   = "{SESSIONS}"
}}

database "catalog" {{
  server = server.main
  name   = "{CATALOG}"
}}

router "shop" {{
  user   = user.shop
  access = "readwrite"

  route "sessions" {{
    database = database.sessions
  }}
  route "catalog" {{
    database = database.catalog
    access   = "{catalog_access}"
  }}
  default = "sessions"

  publish {{
    file   = "deploy/shop.json"
    format = "json"
  }}
}}

backup_policy "nightly" {{
  databases   = [database.sessions]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"
  verify      = true
}}
"#
    )
}

fn admin_url(p: &Project) -> String {
    format!("redis://dbctl:{}@127.0.0.1:{}", p.admin_password(), p.port())
}

async fn as_user(p: &Project) -> redis::aio::MultiplexedConnection {
    let url = user_url(p.port(), SHOP, &p.secret("secret.shop"));
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn as_admin(p: &Project) -> redis::aio::MultiplexedConnection {
    redis::Client::open(admin_url(p)).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_confines_a_service_to_its_namespaces_and_converges() {
    let p = Project::new(&redis_config("readonly"));
    let plan = p.ok(&["plan", "--verbose"], 0);
    // The statements are command lines with every value quoted; the password is not in them.
    assert!(plan.contains(&format!("ACL SETUSER {}", acl::quote(SHOP))), "{plan}");
    assert!(plan.contains(&format!("SADD \"__dbctl__:databases\" {}", acl::quote(SESSIONS))), "{plan}");
    assert!(plan.contains("resetpass \"#(sensitive)\""), "{plan}");
    p.apply();
    p.converged();

    let mut c = as_user(&p).await;
    let own = format!("{SESSIONS}:cart");
    let _: () = redis::cmd("SET").arg(&own).arg("1").query_async(&mut c).await.unwrap();
    let got: String = redis::cmd("GET").arg(&own).query_async(&mut c).await.unwrap();
    assert_eq!(got, "1");
    // Readonly on the catalog, nothing elsewhere, nothing server-wide.
    assert!(noperm(redis::cmd("SET").arg(format!("{CATALOG}:x")).arg("1").query_async::<()>(&mut c).await));
    let _: Option<String> = redis::cmd("GET").arg(format!("{CATALOG}:x")).query_async(&mut c).await.unwrap();
    assert!(noperm(redis::cmd("SET").arg("other:x").arg("1").query_async::<()>(&mut c).await));
    // `sess;ions*✓`'s pattern is escaped: a key that only the unescaped glob would match is refused.
    assert!(noperm(redis::cmd("SET").arg("sess;ionsXX✓:x").arg("1").query_async::<()>(&mut c).await));
    assert!(noperm(redis::cmd("FLUSHALL").query_async::<()>(&mut c).await));
    assert!(noperm(redis::cmd("CONFIG").arg("GET").arg("*").query_async::<()>(&mut c).await));

    // The routing document tells the service its key prefix.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("deploy/shop.json")).unwrap()).unwrap();
    assert_eq!(doc["databases"]["default"]["key_prefix"], format!("{SESSIONS}:"));
    let engines: Vec<&serde_json::Value> =
        doc["databases"].as_object().unwrap().values().map(|d| &d["engine"]).collect();
    assert!(engines.len() == 2 && engines.iter().all(|e| *e == "redis"), "{doc}");

    // Drift: a rule added by hand is shown and written over.
    let mut a = as_admin(&p).await;
    let _: () = redis::cmd("ACL").arg("SETUSER").arg(SHOP).arg("+@all").query_async(&mut a).await.unwrap();
    let drifted = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(drifted.contains("permissions dbctl did not write"), "{drifted}");
    p.apply();
    p.converged();
    assert!(noperm(redis::cmd("FLUSHALL").query_async::<()>(&mut as_user(&p).await).await));

    // A change of access: the catalog becomes writable, in one statement for the user.
    p.write(&redis_config("readwrite"));
    let changed = p.ok(&["plan", "--verbose", "--detailed-exitcode"], 2);
    assert!(changed.contains("clearselectors"), "{changed}");
    p.apply();
    p.converged();
    let _: () =
        redis::cmd("SET").arg(format!("{CATALOG}:x")).arg("1").query_async(&mut as_user(&p).await).await.unwrap();

    // A verified backup of the sessions namespace: the RDB holds its keys.
    let backup = p.ok(&["backup", "run"], 0);
    assert!(backup.contains("verified"), "{backup}");
    let listed = p.ok(&["backup", "list"], 0);
    assert!(listed.contains("yes"), "{listed}");

    // The password is in no output, state, plan, document, log or ACL file.
    let password = p.secret("secret.shop");
    let json = text(&p.dbctl(&["plan", "--format", "json"]).stdout);
    for (what, body) in [
        ("plan", changed.as_str()),
        ("json plan", json.as_str()),
        ("state", &std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap()),
        ("document", &std::fs::read_to_string(p.path().join("deploy/shop.json")).unwrap()),
        ("server log", &std::fs::read_to_string(p.path().join(".dbctl/servers/main/server.log")).unwrap()),
        ("ACL file", &std::fs::read_to_string(p.path().join(".dbctl/servers/main/users.acl")).unwrap()),
    ] {
        assert!(!body.contains(&password), "the password is in the {what}");
    }

    // Destroy: the namespaces' keys, the registry and the user are gone; other keys stay.
    let _: () = redis::cmd("SET").arg("unmanaged:k").arg("1").query_async(&mut a).await.unwrap();
    let destroyed = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(destroyed.contains("drops databases that hold data"), "the namespace's keys were counted:\n{destroyed}");
    assert!(destroyed.contains(&format!("drops database \"{CATALOG}\", which holds 1 key\n")), "{destroyed}");
    let mut a = as_admin(&p).await;
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query_async(&mut a).await.unwrap();
    assert!(!users.contains(&SHOP.to_string()), "{users:?}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut a).await.unwrap();
    assert_eq!(keys, vec!["unmanaged:k".to_string()]);
}

#[test]
fn validate_refuses_what_redis_does_not_have_at_its_line() {
    let p = Project::new(
        r#"server "main" {
  engine   = "redis"
  embedded = true
}

role "readers" {
  server = server.main
}

user "app" {
  server           = server.main
  connection_limit = 5
}

database "spaced" {
  server   = server.main
  name     = "a b"
  encoding = "UTF8"
}
"#,
    );
    let out = p.ok(&["validate"], 1);
    assert!(out.contains("Redis has no group roles"), "{out}");
    assert!(out.contains("main.hcl:6"), "the role's line:\n{out}");
    assert!(out.contains("Redis has no connection limits"), "{out}");
    assert!(out.contains("main.hcl:12"), "the connection_limit's line:\n{out}");
    assert!(out.contains("key patterns cannot hold"), "a space in a namespace:\n{out}");
    assert!(out.contains("no character set"), "{out}");
}

#[test]
fn the_redis_example_applies_converges_and_backs_up() {
    let p = Project::example("redis");
    p.ok(&["validate"], 0);
    p.apply();
    p.converged();
    let out = p.ok(&["backup", "run"], 0);
    assert!(out.contains("verified"), "{out}");
    let doc = std::fs::read_to_string(p.path().join("deploy/shop/redis.json")).unwrap();
    assert!(doc.contains("\"key_prefix\": \"sessions:\""), "{doc}");
}
