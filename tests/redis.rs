//! The Redis engine against real redis-servers the tests start (a free
//! port, a temporary directory, stopped at the end): ACL users confined to
//! their namespaces, what is written reads back the same, hostile names,
//! no password anywhere it should not be, dropping a namespace, restarts,
//! and RDB backups that verify (and tampered ones that do not).

use std::collections::BTreeMap;

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
