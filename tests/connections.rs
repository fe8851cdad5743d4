//! Connections to servers dbctl does not run: the admin password from a
//! secret (local store, and an AWS secret dbctl only reads), time limits on
//! every step with the session that blocks one named, and `connect { }`
//! dialing through a tunnel while documents keep the server's endpoint.
//!
//! The "remote" server is an embedded PostgreSQL of another project, started
//! with `dbctl dev up`, that the project under test reaches by url only.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, Moto, Project, SERVER};

/// A running PostgreSQL server (an embedded one of its own project).
fn remote() -> Project {
    let r = Project::new(SERVER);
    r.ok(&["dev", "up"], 0);
    r
}

/// Everything a command printed.
fn all(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn run(p: &Project, args: &[&str], env: &[(&str, &str)], rc: i32) -> String {
    let out = p.dbctl_env(args, env);
    let s = all(&out);
    assert_eq!(out.status.code(), Some(rc), "dbctl {args:?} should exit {rc}:\n{s}");
    s
}

/// Every file under `.dbctl` of a project, as text.
fn dbctl_files(p: &Project) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(p.path().join(".dbctl")).into_iter().flatten().flatten() {
        if e.path().is_file() {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
        }
    }
    out
}

const APP: &str = r#"
database "app" {
  server = server.main
}

secret "app" {}

user "app" {
  server   = server.main
  password = secret.app
  grant {
    database   = database.app
    privileges = ["CONNECT"]
  }
}
"#;

#[test]
fn admin_password_from_the_local_store_plans_applies_and_never_shows() {
    let r = remote();
    let port = r.port();
    let pw = r.admin_password();
    let p = Project::new(&format!(
        r#"
variable "admin_pw" {{
  sensitive = true
}}

secret "admin" {{
  value = var.admin_pw
}}

server "main" {{
  engine         = "postgres"
  url            = "postgres://postgres@127.0.0.1:{port}/postgres"
  admin_password = secret.admin
}}
{APP}"#
    ));
    let env = [("DBCTL_VAR_admin_pw", pw.as_str())];
    let plan = run(&p, &["plan", "--verbose"], &env, 0);
    assert!(plan.contains("database.app will be created"), "{plan}");
    // The admin secret is read, never written: no step for it.
    let json: serde_json::Value =
        serde_json::from_str(&text(&p.dbctl_env(&["plan", "--format", "json"], &env).stdout)).unwrap();
    let admin = json["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "secret.admin");
    assert_eq!(admin.map(|c| c["change"]["actions"].clone()), Some(serde_json::json!(["no-op"])), "{json}");
    let mut outputs = vec![plan, run(&p, &["apply", "--auto-approve"], &env, 0)];
    outputs.push(run(&p, &["plan", "--detailed-exitcode"], &env, 0));
    assert_eq!(r.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'app'"), "1");
    let app_pw = p.secret("secret.app");
    assert_eq!(r.psql_as("app", Some(&app_pw), "app", "SELECT current_user").unwrap(), "app");
    // Never in the store, the state, or anything printed.
    let files = dbctl_files(&p);
    assert!(!files.contains("secret.admin"), "the admin secret is never written to the store:\n{files}");
    for o in outputs.iter().chain([&files]) {
        assert!(!o.contains(&pw), "the admin password leaked:\n{o}");
    }

    let out = run(&p, &["secret", "show", "secret.admin", "--reveal"], &env, 1);
    assert!(out.contains("never stores it") && !out.contains(&pw), "{out}");

    // The value may be an RDS-shaped document; its username stands in for the url's missing user.
    let doc = serde_json::json!({ "username": "postgres", "password": pw, "engine": "postgres" }).to_string();
    let main = std::fs::read_to_string(p.path().join("main.hcl")).unwrap();
    p.write(&main.replace("postgres://postgres@127.0.0.1", "postgres://127.0.0.1"));
    let out = run(&p, &["plan", "--detailed-exitcode"], &[("DBCTL_VAR_admin_pw", doc.as_str())], 0);
    assert!(out.contains("No changes."), "{out}");

    // A wrong password is the server's refusal, and does not show the password either.
    let out = run(&p, &["plan"], &[("DBCTL_VAR_admin_pw", "not-the-Password-42")], 1);
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("not-the-Password-42"), "{out}");
}

#[test]
fn a_missing_or_generated_admin_secret_is_a_clear_error() {
    let p = Project::new(
        r#"
secret "admin" {
  name     = "prod/main/admin"
  external = true
}

server "main" {
  engine         = "postgres"
  url            = "postgres://postgres@127.0.0.1:1/postgres"
  admin_password = secret.admin
}
"#,
    );
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("server.main: its admin password, secret.admin, is not in the local secret store"), "{out}");
    assert!(out.contains("prod/main/admin") && out.contains("never creates it"), "{out}");
    // Nothing was created for it.
    assert!(!p.path().join(".dbctl/secrets.json").exists());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn the_rds_managed_master_secret_is_read_and_never_written() {
    let moto = Moto::start();
    let r = remote();
    let port = r.port();
    let pw = r.admin_password();
    // What RDS creates for a cluster with ManageMasterUserPassword: no dbctl tag.
    let name = "rds!cluster-0a1b2c3d";
    let sm = moto.secrets_client();
    let doc = serde_json::json!({ "username": "postgres", "password": pw }).to_string();
    block_on(sm.create_secret().name(name).secret_string(&doc).send()).expect("create in moto");
    let versions = || {
        let v = block_on(sm.list_secret_version_ids().secret_id(name).send()).unwrap();
        v.versions().iter().map(|x| x.version_id().unwrap_or_default().to_string()).collect::<Vec<_>>()
    };
    let before = versions();

    let p = Project::new(&format!(
        r#"
provider "aws" {{
  region   = "us-east-1"
  endpoint = "{}"
}}

secret "master" {{
  store    = "aws"
  name     = "{name}"
  external = true
}}

server "main" {{
  engine         = "postgres"
  url            = "postgres://127.0.0.1:{port}/postgres"
  admin_password = secret.master
}}
{APP}"#,
        moto.endpoint
    ));
    let mut outputs = vec![p.ok(&["plan", "--verbose"], 0), p.apply()];
    p.converged();
    outputs.push(p.ok(&["secret", "show", "secret.master"], 0));
    // `secret rotate` refuses a secret dbctl only reads.
    let out = p.ok(&["secret", "rotate", "secret.master"], 1);
    assert!(out.contains("only read by dbctl"), "{out}");
    // Nor does import make it dbctl's (it would tag it).
    let out = p.ok(&["import", "secret.master", name], 1);
    assert!(out.contains("only read by dbctl"), "{out}");
    assert_eq!(r.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'app'"), "1");
    // Untouched: the same single version, the same value, still no dbctl tag.
    assert_eq!(versions(), before);
    let v = block_on(sm.get_secret_value().secret_id(name).send()).unwrap();
    assert_eq!(v.secret_string(), Some(doc.as_str()));
    let d = block_on(sm.describe_secret().secret_id(name).send()).unwrap();
    assert!(d.tags().iter().all(|t| t.key() != Some("managed-by")), "{:?}", d.tags());
    for o in &outputs {
        assert!(!o.contains(&pw), "the master password leaked:\n{o}");
    }
    // A destroy removes what dbctl made and leaves the master secret alone.
    p.ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(versions(), before);
    assert!(block_on(sm.describe_secret().secret_id(name).send()).unwrap().deleted_date().is_none());
}

/// A psql session that holds a transaction open until dropped (or `end`).
struct Holder {
    child: std::process::Child,
}

impl Holder {
    fn start(p: &Project, sql: &str) -> Holder {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &p.port().to_string(), "-d", "postgres"])
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", p.admin_password())
            .env("PGAPPNAME", "holder")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql");
        writeln!(child.stdin.as_mut().unwrap(), "{sql}").unwrap();
        child.stdin.as_mut().unwrap().flush().unwrap();
        let start = Instant::now();
        while p.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'holder' AND state = 'idle in transaction'",
        ) != "1"
        {
            assert!(start.elapsed() < Duration::from_secs(10), "the holding session did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Holder { child }
    }

    fn end(mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "ROLLBACK;").unwrap();
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_blocked_step_says_who_blocks_it_gives_up_in_time_and_the_rerun_converges() {
    let config = |limit: i32| {
        format!("{SERVER}\nuser \"app\" {{\n  server           = server.main\n  connection_limit = {limit}\n}}\n")
    };
    let p = Project::new(&config(5));
    p.apply();
    // Another session changed the role and has not committed: its row is locked.
    // Its statement holds a password, which must never be shown.
    let holder = Holder::start(&p, "BEGIN; ALTER ROLE app PASSWORD 'Leak-Me-Not-9';");
    p.write(&config(10));
    let t = Instant::now();
    let out = p.dbctl(&["apply", "--auto-approve", "--statement-timeout", "3s"]);
    let took = t.elapsed();
    let s = all(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15), "gave up after {took:?}:\n{s}");
    // While it waited: a line naming the blocker.
    let waiting =
        s.lines().find(|l| l.contains("user.app: waiting")).unwrap_or_else(|| panic!("no waiting line:\n{s}"));
    assert!(waiting.contains("for a lock held by pid"), "{waiting}");
    assert!(waiting.contains("application \"holder\"") && waiting.contains("idle in transaction"), "{waiting}");
    assert!(waiting.contains("statement ALTER"), "{waiting}");
    assert_eq!(s.matches("user.app: waiting").count(), 1, "one line per blocker, not per look:\n{s}");
    // The error: which step, who, what to do.
    assert!(s.contains("ALTER ROLE"), "names the step:\n{s}");
    assert!(s.contains("gave up after waiting 3s for a lock held by pid"), "{s}");
    assert!(s.contains("run `dbctl apply` again") && s.contains("--statement-timeout"), "{s}");
    assert!(!s.contains("Leak-Me-Not-9"), "the blocker's statement leaked:\n{s}");
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "5");

    holder.end();
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "10");
}

#[test]
fn statement_timeout_zero_waits_as_long_as_it_takes() {
    let config = |limit: i32| {
        format!("{SERVER}\nuser \"app\" {{\n  server           = server.main\n  connection_limit = {limit}\n}}\n")
    };
    let p = Project::new(&config(5));
    p.apply();
    let holder = Holder::start(&p, "BEGIN; ALTER ROLE app CONNECTION LIMIT 7;");
    p.write(&config(10));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .args(["apply", "--auto-approve", "--statement-timeout", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Well past the default of a few seconds' notice, it still waits.
    std::thread::sleep(Duration::from_secs(4));
    assert!(child.try_wait().unwrap().is_none(), "no limit: still waiting");
    holder.end();
    let out = child.wait_with_output().unwrap();
    let s = all(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("user.app: waiting"), "it said what it waited on:\n{s}");
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "10");
}

#[test]
fn connect_dials_the_tunnel_while_documents_and_secrets_keep_the_servers_endpoint() {
    let r = remote();
    let port = r.port();
    let pw = r.admin_password();
    let config = |connect: &str| {
        format!(
            r#"
server "main" {{
  engine = "postgres"
  url    = "postgres://postgres:{pw}@db.internal.example:5432/postgres"
  {connect}
}}

database "app" {{
  server = server.main
}}

secret "app" {{}}

user "app" {{
  server   = server.main
  password = secret.app
}}

router "app" {{
  user = user.app
  route "app" {{ database = database.app }}
  publish {{
    file = "out/app.json"
  }}
}}

backup_policy "nightly" {{
  databases = [database.app]
  schedule  = "0 3 * * *"
  storage   = "file://.dbctl/backups"
}}
"#
        )
    };
    // Without the tunnel the name does not resolve: the connect block is what makes it work.
    let p = Project::new(&config(""));
    let out = p.ok(&["plan", "--connect-timeout", "5s"], 1);
    assert!(out.contains("cannot connect to server.main (db.internal.example:5432"), "{out}");
    assert!(!out.contains(&pw), "{out}");

    p.write(&config(&format!("connect {{\n    host = \"127.0.0.1\"\n    port = {port}\n  }}")));
    p.apply();
    p.converged();
    assert_eq!(r.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'app'"), "1");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("out/app.json")).unwrap()).unwrap();
    let db = &doc["databases"]["default"];
    assert_eq!((db["host"].as_str(), db["port"].as_u64()), (Some("db.internal.example"), Some(5432)), "{doc}");
    let secret: serde_json::Value = serde_json::from_str(&p.secret_document("secret.app")).unwrap();
    assert_eq!((secret["host"].as_str(), secret["port"].as_u64()), (Some("db.internal.example"), Some(5432)));
    // The user's password works on the real server.
    let app_pw = p.secret("secret.app");
    assert_eq!(r.psql_as("app", Some(&app_pw), "app", "SELECT current_user").unwrap(), "app");
    // The client programs dbctl runs (pg_dump) go through the tunnel too.
    r.sql("app", "CREATE TABLE t (id int); INSERT INTO t VALUES (42)");
    let out = p.ok(&["backup", "run"], 0);
    assert!(out.contains("backup_policy.nightly: database.app -> "), "{out}");
    assert!(!out.contains(&pw), "{out}");
}

const MYSQL: &str = "server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n";

#[test]
fn mysql_connect_dials_the_tunnel_while_secrets_keep_the_servers_endpoint() {
    let r = Project::new(MYSQL);
    r.ok(&["dev", "up"], 0);
    let port = r.port();
    let pw = r.admin_password();
    let p = Project::new(&format!(
        r#"
server "main" {{
  engine = "mysql"
  url    = "mysql://root:{pw}@db.internal.example:3306"
  connect {{
    host = "127.0.0.1"
    port = {port}
  }}
}}
{}"#,
        APP.replace("\"CONNECT\"", "\"SELECT\"")
    ));
    let mut outputs = vec![p.apply()];
    p.converged();
    outputs.push(p.ok(&["plan", "--verbose"], 0));
    let secret: serde_json::Value = serde_json::from_str(&p.secret_document("secret.app")).unwrap();
    assert_eq!((secret["host"].as_str(), secret["port"].as_u64()), (Some("db.internal.example"), Some(3306)));
    for o in &outputs {
        assert!(!o.contains(&pw), "{o}");
    }
}

/// A mariadb client session that holds what `sql` takes until `end`.
struct MyHolder {
    child: std::process::Child,
}

impl MyHolder {
    fn start(p: &Project, sql: &str) -> MyHolder {
        let mut child = Command::new("mariadb")
            .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root"])
            .arg(format!("--port={}", p.port()))
            .arg(format!("--password={}", p.admin_password()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadb client");
        writeln!(child.stdin.as_mut().unwrap(), "{sql}").unwrap();
        child.stdin.as_mut().unwrap().flush().unwrap();
        // Give the client time to connect and take its lock.
        std::thread::sleep(Duration::from_millis(1500));
        MyHolder { child }
    }

    fn end(mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "UNLOCK TABLES;").unwrap();
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for MyHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mysql_a_blocked_step_gives_up_in_time_and_the_rerun_converges() {
    let config = |limit: i32| {
        format!("{MYSQL}\nuser \"app\" {{\n  server           = server.main\n  connection_limit = {limit}\n}}\n")
    };
    let p = Project::new(&config(5));
    p.apply();
    // Account changes write the grant tables: a session holding them read-locked blocks them.
    let holder = MyHolder::start(&p, "LOCK TABLES mysql.global_priv READ;");
    p.write(&config(10));
    let t = Instant::now();
    let out = p.dbctl(&["apply", "--auto-approve", "--statement-timeout", "4s"]);
    let took = t.elapsed();
    let s = all(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(15), "gave up after {took:?}:\n{s}");
    assert!(s.contains("user.app") && s.contains("gave up after waiting 4s for a lock"), "{s}");
    // While it waited, it said on what (MariaDB does not tell who holds a table lock).
    let waiting =
        s.lines().find(|l| l.contains("user.app: waiting")).unwrap_or_else(|| panic!("no waiting line:\n{s}"));
    assert!(waiting.contains("(Waiting for table"), "{waiting}");
    assert!(s.contains("--statement-timeout"), "{s}");
    holder.end();
    p.apply();
    p.converged();
}

#[test]
fn a_tunnel_with_a_name_checking_url_is_a_warning() {
    let p = Project::new(
        r#"
server "main" {
  engine = "postgres"
  url    = "postgres://admin@db.internal.example/postgres?sslmode=verify-full"
  connect {
    host = "127.0.0.1"
    port = 15432
  }
}
"#,
    );
    let out = p.ok(&["validate"], 0);
    assert!(out.contains("the server's certificate is checked against \"127.0.0.1\""), "{out}");
    assert!(out.contains("sslmode=verify-ca"), "{out}");
    // Only the port through the tunnel: the name is checked as the url gives it, no warning.
    p.write(&std::fs::read_to_string(p.path().join("main.hcl")).unwrap().replace("    host = \"127.0.0.1\"\n", ""));
    let out = p.ok(&["validate"], 0);
    assert!(!out.contains("certificate"), "{out}");
}
