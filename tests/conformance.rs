//! The engine conformance suite: the same scenarios against every engine
//! (PostgreSQL, MariaDB as `mysql`, Redis), through the real `dbctl`
//! binary, on real throwaway servers that dbctl itself starts
//! (`embedded = true`), checked with the engine's own client (psql,
//! mariadb, redis-cli).
//!
//! Each engine is one entry: a type implementing [`Conformance`] (its
//! server block, how to run statements as the admin and as a user, how to
//! read back what the scenarios change, and what the engine lacks — group
//! roles, connection limits) and one line in the `conformance!` invocation
//! at the bottom, which generates a module of `#[test]`s for it
//! (`postgres::hostile_names_converge_and_destroy`, ...). Adding an
//! engine is: implement the trait, add the line (docs/adding-an-engine.md).
//!
//! Scenarios:
//! - `create_converge_change_drift_destroy`: databases, users whose
//!   passwords come from secrets, a group role (where the engine has
//!   roles), grants and a router are created; the next plan has no changes;
//!   every attribute the configuration can change (connection_limit,
//!   member_of, grant privileges, router access) is changed and converges;
//!   a change made on the server by hand is reported as drift and repaired;
//!   destroy removes everything and leaves the state empty and unmanaged
//!   objects alone.
//! - `hostile_names_converge_and_destroy`: quotes, backticks, semicolons,
//!   spaces and unicode in database, user and role names (what the engine
//!   can hold).
//! - `targets_plan_apply_and_destroy_only_their_closure`: `--target` on
//!   plan, apply and destroy.
//! - `plan_text_is_what_apply_runs`: a dropped database's statement is
//!   quoted for the engine in the plan (MySQL: DROP DATABASE `x`), and a
//!   saved plan applies exactly that text.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{steps, text, Project};

/// What the suite needs to know about one engine.
trait Conformance {
    /// The `engine = "..."` value.
    const ENGINE: &'static str;

    /// The `server "main"` block.
    fn server_hcl(&self) -> String {
        format!("server \"main\" {{\n  engine   = \"{}\"\n  embedded = true\n}}\n", Self::ENGINE)
    }

    /// Database-level privileges for a user's grant: a first set, and a
    /// second set that adds one and removes one.
    fn grant_privileges(&self) -> (&'static [&'static str], &'static [&'static str]);

    /// What the group role is granted on the database.
    fn role_privileges(&self) -> &'static [&'static str];

    /// Run SQL as the server's admin in `db` (`None`: the admin database);
    /// rows as lines, columns separated by `|`.
    fn admin(&self, p: &Project, db: Option<&str>, sql: &str) -> String;

    /// Run SQL as `user` with `password`, connected to `db`.
    fn as_user(&self, p: &Project, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String>;

    /// A string literal.
    fn lit(&self, s: &str) -> String;

    /// A quoted identifier (a database or table name).
    fn ident(&self, s: &str) -> String;

    fn database_exists(&self, p: &Project, name: &str) -> bool;

    fn account_exists(&self, p: &Project, name: &str) -> bool;

    fn connection_limit(&self, p: &Project, user: &str) -> i64;

    /// Change a user's connection limit by hand (drift).
    fn set_connection_limit(&self, p: &Project, user: &str, limit: i64);

    /// The roles `user` is a member of.
    fn memberships(&self, p: &Project, user: &str) -> BTreeSet<String>;

    /// The database-level privileges `grantee` holds on `db`.
    fn database_privileges(&self, p: &Project, grantee: &str, db: &str) -> BTreeSet<String>;

    /// The statement the plan shows to drop database `name`.
    fn drop_database_sql(&self, name: &str) -> String;

    /// A table in `db` the router's user reads and writes (created by the admin).
    fn create_table(&self, p: &Project, db: &str, table: &str) {
        self.admin(p, Some(db), &format!("CREATE TABLE {} (x int)", self.ident(table)));
    }

    /// Group roles and `member_of` (`Dialect::has_roles`).
    fn has_roles(&self) -> bool {
        true
    }

    /// Per-user connection limits (`Dialect::connection_limits`).
    fn has_connection_limits(&self) -> bool {
        true
    }

    /// Log in as `user` to `db` and run a trivial statement.
    fn login(&self, p: &Project, user: &str, password: &str, db: &str) -> Result<(), String> {
        let got = self.as_user(p, user, password, db, "SELECT 40 + 2")?;
        if got == "42" {
            Ok(())
        } else {
            Err(got)
        }
    }

    /// The name of the database the plan-text scenario drops.
    fn drop_name(&self) -> &'static str {
        "old`db; x"
    }

    /// What the read and write probes below need in `db`.
    fn seed(&self, p: &Project, db: &str) {
        self.create_table(p, db, "t");
    }

    /// Write one row (or key) in `db` as `user`.
    fn write_probe(&self, p: &Project, user: &str, password: &str, db: &str) -> Result<String, String> {
        self.as_user(p, user, password, db, "INSERT INTO t VALUES (1)")
    }

    /// Read in `db` as `user`: how many rows (or keys) the writes made.
    fn read_probe(&self, p: &Project, user: &str, password: &str, db: &str) -> Result<String, String> {
        self.as_user(p, user, password, db, "SELECT count(*) FROM t")
    }

    /// Whether a refusal says the privilege is missing.
    fn denied(&self, message: &str) -> bool {
        message.contains("denied")
    }

    /// Change `user` on the server by hand; returns what the plan must say about it.
    fn make_drift(&self, p: &Project, user: &str) -> String {
        self.set_connection_limit(p, user, 99);
        "connection_limit changed from 7 to 99".into()
    }

    /// Whether the hand-made change of `make_drift` is undone.
    fn drift_repaired(&self, p: &Project, user: &str) -> bool {
        self.connection_limit(p, user) == 7
    }

    /// Hostile names: (label, database name, user name).
    fn hostile(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        HOSTILE
    }

    /// A database (or namespace) dbctl does not manage.
    fn make_unmanaged(&self, p: &Project) {
        self.admin(p, None, "CREATE DATABASE unmanaged");
    }

    fn unmanaged_is_there(&self, p: &Project) -> bool {
        self.database_exists(p, "unmanaged")
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn hcl_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn run(c: &mut Command) -> Result<String, String> {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

struct Postgres;

impl Conformance for Postgres {
    const ENGINE: &'static str = "postgres";

    fn grant_privileges(&self) -> (&'static [&'static str], &'static [&'static str]) {
        (&["CONNECT", "TEMPORARY"], &["CONNECT", "CREATE"])
    }

    fn role_privileges(&self) -> &'static [&'static str] {
        &["CONNECT"]
    }

    fn admin(&self, p: &Project, db: Option<&str>, sql: &str) -> String {
        p.sql(db.unwrap_or("postgres"), sql)
    }

    fn as_user(&self, p: &Project, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        p.psql_as(user, Some(password), db, sql)
    }

    fn lit(&self, s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    fn ident(&self, s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    fn database_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(p, None, &format!("SELECT count(*) FROM pg_database WHERE datname = {}", self.lit(name))) == "1"
    }

    fn account_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(p, None, &format!("SELECT count(*) FROM pg_roles WHERE rolname = {}", self.lit(name))) == "1"
    }

    fn connection_limit(&self, p: &Project, user: &str) -> i64 {
        self.admin(p, None, &format!("SELECT rolconnlimit FROM pg_roles WHERE rolname = {}", self.lit(user)))
            .parse()
            .unwrap()
    }

    fn set_connection_limit(&self, p: &Project, user: &str, limit: i64) {
        self.admin(p, None, &format!("ALTER ROLE {} CONNECTION LIMIT {limit}", self.ident(user)));
    }

    fn memberships(&self, p: &Project, user: &str) -> BTreeSet<String> {
        let rows = self.admin(
            p,
            None,
            &format!(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = {}",
                self.lit(user)
            ),
        );
        rows.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    fn database_privileges(&self, p: &Project, grantee: &str, db: &str) -> BTreeSet<String> {
        let rows = self.admin(
            p,
            None,
            &format!(
                "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a \
                 WHERE d.datname = {} AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = {})",
                self.lit(db),
                self.lit(grantee)
            ),
        );
        rows.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    fn drop_database_sql(&self, name: &str) -> String {
        format!("DROP DATABASE {}", self.ident(name))
    }
}

// ---------------------------------------------------------------------------
// MariaDB (engine = "mysql")
// ---------------------------------------------------------------------------

struct Mariadb;

impl Mariadb {
    fn client(p: &Project, user: &str, password: &str, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut c = Command::new("mariadb");
        c.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-N", "-B", "-u", user])
            .arg(format!("--port={}", p.port()))
            .arg(format!("--password={password}"));
        if let Some(db) = db {
            c.arg(format!("--database={db}"));
        }
        c.args(["-e", sql]);
        run(&mut c).map(|s| s.replace('\t', "|"))
    }
}

impl Conformance for Mariadb {
    const ENGINE: &'static str = "mysql";

    fn grant_privileges(&self) -> (&'static [&'static str], &'static [&'static str]) {
        (&["INSERT", "SELECT"], &["SELECT", "UPDATE"])
    }

    fn role_privileges(&self) -> &'static [&'static str] {
        &["SELECT"]
    }

    fn admin(&self, p: &Project, db: Option<&str>, sql: &str) -> String {
        Self::client(p, "root", &p.admin_password(), db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn as_user(&self, p: &Project, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        Self::client(p, user, password, Some(db), sql)
    }

    fn lit(&self, s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    }

    fn ident(&self, s: &str) -> String {
        format!("`{}`", s.replace('`', "``"))
    }

    fn database_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(
            p,
            None,
            &format!("SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}", self.lit(name)),
        ) == "1"
    }

    fn account_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(p, None, &format!("SELECT count(*) FROM mysql.user WHERE User = {}", self.lit(name))) != "0"
    }

    fn connection_limit(&self, p: &Project, user: &str) -> i64 {
        self.admin(p, None, &format!("SELECT max_user_connections FROM mysql.user WHERE User = {}", self.lit(user)))
            .parse()
            .unwrap()
    }

    fn set_connection_limit(&self, p: &Project, user: &str, limit: i64) {
        self.admin(p, None, &format!("ALTER USER {}@'%' WITH MAX_USER_CONNECTIONS {limit}", self.lit(user)));
    }

    fn memberships(&self, p: &Project, user: &str) -> BTreeSet<String> {
        let rows = self.admin(
            p,
            None,
            &format!("SELECT Role FROM mysql.roles_mapping WHERE User = {} AND Host = '%'", self.lit(user)),
        );
        rows.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    /// Names without `_` or `%` only (a grant's database name escapes them).
    fn database_privileges(&self, p: &Project, grantee: &str, db: &str) -> BTreeSet<String> {
        // GRANTEE is the name between quotes as it is, not escaped.
        let rows = self.admin(
            p,
            None,
            &format!(
                "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE GRANTEE IN ({}, {}, {}) AND TABLE_SCHEMA = {}",
                self.lit(&format!("'{grantee}'@'%'")),
                // A role's grantee has an empty host part, or none.
                self.lit(&format!("'{grantee}'@''")),
                self.lit(&format!("'{grantee}'")),
                self.lit(db)
            ),
        );
        rows.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    fn drop_database_sql(&self, name: &str) -> String {
        format!("DROP DATABASE {}", self.ident(name))
    }
}

// ---------------------------------------------------------------------------
// Redis: a database is a key namespace, a user an ACL user; no group roles,
// no connection limits (docs/redis.md). Checked with redis-cli, commands on
// its standard input (its own quoting), passwords in REDISCLI_AUTH.
// ---------------------------------------------------------------------------

struct Redis;

/// Names Redis can hold: no spaces or quotes in a namespace, no spaces in
/// a user name (refused by validate); quotes, semicolons, backticks, globs
/// and unicode otherwise.
const REDIS_HOSTILE: &[(&str, &str, &str)] =
    &[("semi", "x;DROP✓", "o'k;\"x\"ü"), ("uni", "Ünïcødé_データ", "ユーザー;`x`"), ("glob", "a*b?[c]\\d", "g\\lob*")];

impl Redis {
    fn cli(p: &Project, user: &str, password: &str, command: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &p.port().to_string(), "--no-auth-warning", "--user", user])
            .env("REDISCLI_AUTH", password)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli");
        child.stdin.take().unwrap().write_all(format!("{command}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (text(&out.stdout).trim().to_string(), text(&out.stderr));
        let refused = ["ERR", "NOPERM", "WRONGPASS", "NOAUTH", "WRONGTYPE"];
        if !out.status.success() || stderr.contains("AUTH failed") || refused.iter().any(|r| stdout.starts_with(r)) {
            Err(format!("{stdout}{stderr}"))
        } else {
            Ok(stdout)
        }
    }

    /// Whether `user` may run `command` (`ACL DRYRUN`, as the admin).
    fn may(&self, p: &Project, user: &str, command: &str) -> bool {
        self.admin(p, None, &format!("ACL DRYRUN {} {command}", self.lit(user))) == "OK"
    }
}

impl Conformance for Redis {
    const ENGINE: &'static str = "redis";

    /// Told apart by what the user may run: `GET` needs read, `SET` write.
    fn grant_privileges(&self) -> (&'static [&'static str], &'static [&'static str]) {
        (&["read"], &["write"])
    }

    fn role_privileges(&self) -> &'static [&'static str] {
        &[]
    }

    fn admin(&self, p: &Project, _db: Option<&str>, command: &str) -> String {
        Self::cli(p, "dbctl", &p.admin_password(), command).unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    fn as_user(&self, p: &Project, user: &str, password: &str, _db: &str, command: &str) -> Result<String, String> {
        Self::cli(p, user, password, command)
    }

    fn lit(&self, s: &str) -> String {
        dbctl::engine::redis::acl::quote(s)
    }

    fn ident(&self, s: &str) -> String {
        self.lit(s)
    }

    fn database_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(p, None, &format!("SISMEMBER \"__dbctl__:databases\" {}", self.lit(name))) == "1"
    }

    fn account_exists(&self, p: &Project, name: &str) -> bool {
        self.admin(p, None, "ACL USERS").lines().any(|l| l == name)
    }

    fn connection_limit(&self, _: &Project, _: &str) -> i64 {
        unreachable!("Redis has no connection limits")
    }

    fn set_connection_limit(&self, _: &Project, _: &str, _: i64) {
        unreachable!("Redis has no connection limits")
    }

    fn memberships(&self, _: &Project, _: &str) -> BTreeSet<String> {
        unreachable!("Redis has no group roles")
    }

    fn database_privileges(&self, p: &Project, grantee: &str, db: &str) -> BTreeSet<String> {
        let key = self.lit(&format!("{db}:k"));
        let mut out = BTreeSet::new();
        if self.may(p, grantee, &format!("GET {key}")) {
            out.insert("read".to_string());
        }
        if self.may(p, grantee, &format!("SET {key} v")) {
            out.insert("write".to_string());
        }
        out
    }

    fn drop_database_sql(&self, name: &str) -> String {
        use dbctl::engine::redis::acl::{key_pattern, quote};
        format!("UNLINK-MATCHING {}\nSREM \"__dbctl__:databases\" {}", quote(&key_pattern(name)), quote(name))
    }

    fn has_roles(&self) -> bool {
        false
    }

    fn has_connection_limits(&self) -> bool {
        false
    }

    fn login(&self, p: &Project, user: &str, password: &str, _db: &str) -> Result<(), String> {
        let got = Self::cli(p, user, password, "PING")?;
        if got == "PONG" {
            Ok(())
        } else {
            Err(got)
        }
    }

    fn drop_name(&self) -> &'static str {
        "old;db✓*"
    }

    fn seed(&self, _: &Project, _: &str) {}

    fn write_probe(&self, p: &Project, user: &str, password: &str, db: &str) -> Result<String, String> {
        Self::cli(p, user, password, &format!("SET {} 1", self.lit(&format!("{db}:k"))))
    }

    fn read_probe(&self, p: &Project, user: &str, password: &str, db: &str) -> Result<String, String> {
        Self::cli(p, user, password, &format!("EXISTS {}", self.lit(&format!("{db}:k"))))
    }

    fn denied(&self, message: &str) -> bool {
        message.contains("NOPERM")
    }

    fn make_drift(&self, p: &Project, user: &str) -> String {
        self.admin(p, None, &format!("ACL SETUSER {} +@all", self.lit(user)));
        assert!(self.may(p, user, "FLUSHALL"));
        "permissions dbctl did not write".into()
    }

    fn drift_repaired(&self, p: &Project, user: &str) -> bool {
        !self.may(p, user, "FLUSHALL")
    }

    fn hostile(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        REDIS_HOSTILE
    }

    fn make_unmanaged(&self, p: &Project) {
        self.admin(p, None, "SET unmanaged:k 1");
    }

    fn unmanaged_is_there(&self, p: &Project) -> bool {
        self.admin(p, None, "EXISTS unmanaged:k") == "1"
    }
}

// ---------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------

/// What the main scenario configures, and what it changes.
struct Knobs<'a> {
    limit: i64,
    member_of: &'a str,
    privileges: &'a [&'a str],
    access: &'a str,
}

fn main_config<E: Conformance>(e: &E, k: &Knobs) -> String {
    // What the engine has: group roles, memberships, connection limits.
    let roles = if e.has_roles() {
        format!(
            "\nrole \"readers\" {{\n  server = server.main\n  grant {{\n    database   = database.shop\n    privileges = {}\n  }}\n}}\n\nrole \"auditors\" {{\n  server = server.main\n}}\n",
            hcl_list(e.role_privileges())
        )
    } else {
        String::new()
    };
    let member_of = if e.has_roles() { format!("\n  member_of        = [{}]", k.member_of) } else { String::new() };
    let limit = if e.has_connection_limits() { format!("\n  connection_limit = {}", k.limit) } else { String::new() };
    format!(
        r#"{server}
secret "app" {{}}

secret "svc" {{}}

database "shop" {{
  server = server.main
  name   = "shop"
}}

database "reports" {{
  server = server.main
  name   = "reports"
}}
{roles}
user "app" {{
  server           = server.main
  name             = "app"
  password         = secret.app{member_of}{limit}
  grant {{
    database   = database.shop
    privileges = {privs}
  }}
}}

user "svc" {{
  server   = server.main
  name     = "svc"
  password = secret.svc
}}

router "svc" {{
  user   = user.svc
  access = "{access}"
  route "reports" {{
    database = database.reports
  }}
  default = "reports"
  publish {{
    file   = "out/svc.json"
    format = "json"
  }}
}}
"#,
        server = e.server_hcl(),
        privs = hcl_list(k.privileges),
        access = k.access,
    )
}

/// The plan's exit code with `--detailed-exitcode` and its output.
fn detailed(p: &Project) -> (i32, String) {
    let out = p.dbctl(&["plan", "--detailed-exitcode"]);
    (out.status.code().unwrap_or(-1), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn assert_changes(p: &Project) -> String {
    let (rc, out) = detailed(p);
    assert_eq!(rc, 2, "expected changes (exit 2):\n{out}");
    out
}

fn state_addresses(p: &Project) -> Vec<String> {
    let out = p.ok(&["state", "list"], 0);
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The accounts the main scenario creates on this engine.
fn accounts<E: Conformance>(e: &E) -> Vec<&'static str> {
    if e.has_roles() {
        vec!["app", "svc", "readers", "auditors"]
    } else {
        vec!["app", "svc"]
    }
}

fn create_converge_change_drift_destroy<E: Conformance>(e: E) {
    let (privs1, privs2) = e.grant_privileges();
    let v1 = Knobs { limit: 5, member_of: "role.readers", privileges: privs1, access: "readwrite" };
    let p = Project::new(&main_config(&e, &v1));

    // Create: a plan with changes, then apply, then no changes.
    assert_changes(&p);
    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    p.converged();

    for db in ["shop", "reports"] {
        assert!(e.database_exists(&p, db), "database {db}");
    }
    for account in accounts(&e) {
        assert!(e.account_exists(&p, account), "account {account}");
    }
    if e.has_connection_limits() {
        assert_eq!(e.connection_limit(&p, "app"), 5);
    }
    if e.has_roles() {
        assert_eq!(e.memberships(&p, "app"), set(&["readers"]));
        assert_eq!(e.database_privileges(&p, "readers", "shop"), set(e.role_privileges()));
    }
    assert_eq!(e.database_privileges(&p, "app", "shop"), set(privs1));

    // The passwords from the secrets log in; a wrong one does not.
    let app_pw = p.secret("secret.app");
    let svc_pw = p.secret("secret.svc");
    e.login(&p, "app", &app_pw, "shop").unwrap();
    assert!(e.login(&p, "app", "not-the-password", "shop").is_err());

    // The router's user reads and writes its routed database; the document names it.
    e.seed(&p, "reports");
    e.write_probe(&p, "svc", &svc_pw, "reports").unwrap();
    assert_eq!(e.read_probe(&p, "svc", &svc_pw, "reports").unwrap(), "1");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("out/svc.json")).unwrap()).unwrap();
    assert!(doc.to_string().contains("reports"), "{doc}");
    assert!(!doc.to_string().contains(&svc_pw), "the published document never holds the password");
    p.converged();

    // Change every attribute the configuration can change.
    let v2 = Knobs { limit: 7, member_of: "role.auditors", privileges: privs2, access: "readonly" };
    p.write(&main_config(&e, &v2));
    let out = assert_changes(&p);
    if e.has_connection_limits() {
        assert!(out.contains("connection_limit"), "{out}");
    }
    let plan = p.plan_json();
    let s = steps(&plan);
    assert!(!s.iter().any(|x| x.contains("REVOKE ALL")), "grants change by delta: {s:?}");
    p.apply();
    p.converged();
    if e.has_connection_limits() {
        assert_eq!(e.connection_limit(&p, "app"), 7);
    }
    if e.has_roles() {
        assert_eq!(e.memberships(&p, "app"), set(&["auditors"]));
    }
    assert_eq!(e.database_privileges(&p, "app", "shop"), set(privs2));
    // Readonly now: the router's user still reads and no longer writes.
    assert_eq!(e.read_probe(&p, "svc", &svc_pw, "reports").unwrap(), "1");
    let denied = e.write_probe(&p, "svc", &svc_pw, "reports");
    assert!(denied.as_ref().is_err_and(|m| e.denied(m)), "{denied:?}");

    // Drift: a change by hand is reported, and apply puts it back.
    let said = e.make_drift(&p, "app");
    let out = assert_changes(&p);
    assert!(out.contains("Objects have changed outside of dbctl") || out.contains("did not write"), "{out}");
    assert!(out.contains(&said), "{out}");
    p.apply();
    p.converged();
    assert!(e.drift_repaired(&p, "app"), "drift left in place");

    // Destroy: everything dbctl created is gone, nothing else, and the state is empty.
    e.make_unmanaged(&p);
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("destroyed"), "{out}");
    for db in ["shop", "reports"] {
        assert!(!e.database_exists(&p, db), "database {db} left behind");
    }
    for account in accounts(&e) {
        assert!(!e.account_exists(&p, account), "account {account} left behind");
    }
    assert!(e.unmanaged_is_there(&p), "an unmanaged database is never touched");
    let left: Vec<String> = state_addresses(&p).into_iter().filter(|a| !a.starts_with("server.")).collect();
    assert!(left.is_empty(), "the state still holds {left:?}");
    assert!(!p.path().join("out/svc.json").exists(), "the published document goes with its router");
}

/// Names with quotes, a backtick, semicolons, spaces and unicode.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("quote", "it's \"quoted\"", "it's \"quoted\""),
    ("semi", "x; DROP DATABASE y; --", "x; DROP DATABASE y; --"),
    ("tick", "back`tick` and spaces", "back`tick` and spaces"),
    ("uni", "Ünïcødé データ", "Ünïcødé データ"),
];

const HOSTILE_ROLE: &str = "gr'oup; \"x\" `y` ü";

fn hostile_names_converge_and_destroy<E: Conformance>(e: E) {
    let (privs, _) = e.grant_privileges();
    let mut hcl = e.server_hcl();
    // A group role with a hostile name too, that every user is a member of.
    if e.has_roles() {
        hcl.push_str(&format!(
            "\nrole \"group\" {{\n  server = server.main\n  name   = \"{}\"\n}}\n",
            dbctl::model::escape_hcl_string(HOSTILE_ROLE)
        ));
    }
    let member_of = if e.has_roles() { "\n  member_of = [role.group]" } else { "" };
    for (label, db, user) in e.hostile() {
        let (db, user) = (dbctl::model::escape_hcl_string(db), dbctl::model::escape_hcl_string(user));
        hcl.push_str(&format!(
            r#"
secret "{label}" {{}}

database "{label}" {{
  server = server.main
  name   = "{db}"
}}

user "{label}" {{
  server    = server.main
  name      = "{user}"
  password  = secret.{label}{member_of}
  grant {{
    database   = database.{label}
    privileges = {privs}
  }}
}}
"#,
            privs = hcl_list(privs),
        ));
    }
    let p = Project::new(&hcl);
    let out = p.apply();
    p.converged();
    for (label, db, user) in e.hostile() {
        assert!(e.database_exists(&p, db), "database {db:?}");
        assert!(e.account_exists(&p, user), "account {user:?}");
        let pw = p.secret(&format!("secret.{label}"));
        assert!(!out.contains(&pw), "a password is never printed");
        // The user logs in to its own database with the password from its secret.
        e.login(&p, user, &pw, db).unwrap_or_else(|m| panic!("{user:?} cannot log in: {m}"));
        assert_eq!(e.database_privileges(&p, user, db), set(privs), "{user:?} on {db:?}");
        if e.has_roles() {
            assert_eq!(e.memberships(&p, user), set(&[HOSTILE_ROLE]), "{user:?}");
        }
    }
    // Drift on a hostile name is read back under the same name.
    let user = e.hostile()[0].2;
    if e.has_connection_limits() {
        e.set_connection_limit(&p, user, 3);
        let out = assert_changes(&p);
        assert!(out.contains("connection_limit changed from -1 to 3"), "{out}");
        p.apply();
        p.converged();
    }
    p.ok(&["destroy", "--auto-approve"], 0);
    for (_, db, user) in e.hostile() {
        assert!(!e.database_exists(&p, db), "database {db:?} left behind");
        assert!(!e.account_exists(&p, user), "account {user:?} left behind");
    }
    if e.has_roles() {
        assert!(!e.account_exists(&p, HOSTILE_ROLE), "the group role is left behind");
    }
}

/// `--target`: a targeted plan and apply touch the target and what it
/// depends on; a targeted destroy removes the target and what depends on it.
fn targets_plan_apply_and_destroy_only_their_closure<E: Conformance>(e: E) {
    let (privs1, _) = e.grant_privileges();
    let k = Knobs { limit: 5, member_of: "role.readers", privileges: privs1, access: "readwrite" };
    let p = Project::new(&main_config(&e, &k));
    // The server first: an embedded server is started by an apply.
    p.ok(&["apply", "--auto-approve", "--target", "server.main"], 0);

    let out = p.dbctl(&["plan", "--format", "json", "--target", "database.reports"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: BTreeSet<String> = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"]["actions"] != serde_json::json!(["no-op"]))
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, set(&["database.reports"]), "{plan}");
    p.ok(&["apply", "--auto-approve", "--target", "database.reports"], 0);
    assert!(e.database_exists(&p, "reports"));
    assert!(!e.database_exists(&p, "shop"), "an untargeted database was created");
    assert!(!e.account_exists(&p, "app"), "an untargeted user was created");

    // A target takes what it depends on: the user's secret, role and database.
    p.ok(&["apply", "--auto-approve", "--target", "user.app"], 0);
    assert!(e.account_exists(&p, "app") && e.database_exists(&p, "shop"));
    if e.has_roles() {
        assert!(e.account_exists(&p, "readers"), "the role the target is a member of");
    }
    assert!(!e.account_exists(&p, "svc"), "the router's user was not targeted");
    p.apply();
    p.converged();

    // A targeted destroy takes what depends on the target (the router goes
    // with its user), never what the target depends on.
    p.ok(&["destroy", "--auto-approve", "--target", "user.svc"], 0);
    assert!(!e.account_exists(&p, "svc"));
    let left = state_addresses(&p);
    assert!(!left.iter().any(|a| a.starts_with("router.svc") || a.starts_with("user.svc")), "{left:?}");
    assert!(e.database_exists(&p, "reports") && e.account_exists(&p, "app"), "only the target's dependents go");
    assert!(!p.path().join("out/svc.json").exists(), "the router's document goes with it");

    // An unknown target is an error, not "No changes".
    let out = p.ok(&["plan", "--target", "user.nobody"], 1);
    assert!(out.contains("--target user.nobody: no resource"), "{out}");
}

fn plan_text_is_what_apply_runs<E: Conformance>(e: E) {
    let name = e.drop_name();
    let n = dbctl::model::escape_hcl_string(name);
    let with = format!("{}\ndatabase \"old\" {{\n  server = server.main\n  name   = \"{n}\"\n}}\n", e.server_hcl());
    let p = Project::new(&with);
    p.apply();
    p.converged();
    assert!(e.database_exists(&p, name));

    p.write(&e.server_hcl());
    let expected = e.drop_database_sql(name);
    let plan = p.plan_json();
    assert_eq!(steps(&plan), [expected.clone()], "{plan}");
    let human = p.ok(&["plan", "--verbose"], 0);
    // (A statement of several lines, as Redis's, is shown one line under the other.)
    assert!(expected.lines().all(|l| human.contains(l)), "the human plan shows the statement:\n{human}");
    // A saved plan stores the text; apply re-renders it and refuses a difference, so this runs it as shown.
    let file = p.path().join("drop.plan");
    p.ok(&["plan", "--out", file.to_str().unwrap()], 0);
    let saved = p.ok(&["show", "--format", "json", file.to_str().unwrap()], 0);
    assert!(saved.contains(&serde_json::to_string(&expected).unwrap()), "{saved}");
    p.ok(&["apply", "--auto-approve", file.to_str().unwrap()], 0);
    assert!(!e.database_exists(&p, name), "apply dropped the database the plan named");
    p.converged();
}

/// One `#[test]` per scenario per engine, in a module named after the
/// engine: `postgres::create_converge_change_drift_destroy`, ...
macro_rules! conformance {
    ($($engine:ident => $ty:expr;)*) => {
        $(
            mod $engine {
                use super::*;

                #[test]
                fn create_converge_change_drift_destroy() {
                    super::create_converge_change_drift_destroy($ty);
                }

                #[test]
                fn hostile_names_converge_and_destroy() {
                    super::hostile_names_converge_and_destroy($ty);
                }

                #[test]
                fn targets_plan_apply_and_destroy_only_their_closure() {
                    super::targets_plan_apply_and_destroy_only_their_closure($ty);
                }

                #[test]
                fn plan_text_is_what_apply_runs() {
                    super::plan_text_is_what_apply_runs($ty);
                }
            }
        )*
    };
}

conformance! {
    postgres => Postgres;
    mariadb => Mariadb;
    redis => Redis;
}
