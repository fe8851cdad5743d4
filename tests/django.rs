//! The published Django modules, used by a real Django project
//! (tests/django) against an embedded PostgreSQL: two services and the admin
//! service that migrates both. Needs Django and psycopg: the `.venv` of the
//! checkout (what .ci/run installs), or DBCTL_PYTHON naming a python that has
//! them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{text, Moto, Project, SERVER};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let bin = std::env::var_os("DBCTL_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(root().join(".venv/bin/python")).filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let ok = Command::new(&bin).args(["-c", "import django, psycopg"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} has no Django or psycopg: `python3 -m venv .venv && .venv/bin/pip install django 'psycopg[binary]'` (what .ci/run does), or set DBCTL_PYTHON",
        bin.display()
    );
    bin
}

/// Runs in tests/django (not the configuration directory: the modules find
/// their secret store from their own location).
fn django(p: &Project, module: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .args(args)
        .current_dir(root().join("tests/django"))
        .env("PYTHONPATH", p.path().join("out"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("DBCTL_SERVICE_MODULE", module)
        .env("DJANGO_SETTINGS_MODULE", "proj.settings")
        .env_remove("DBCTL_SECRETS_FILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run python");
    (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn check(p: &Project, module: &str, name: &str) -> String {
    let (ok, out) = django(p, module, &["check.py", name]);
    assert!(ok && out.contains(&format!("ok {name}")), "{module}: check {name} failed:\n{out}");
    out
}

fn tables(p: &Project, db: &str) -> String {
    p.sql(db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
}

#[test]
fn a_django_project_runs_on_the_published_modules() {
    let _ = python();
    // The example is what is tested.
    let p = Project::example("django");
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database WHERE datname IN ('buildsense', 'maven') ORDER BY 1"), "buildsense:toolshed\nmaven:toolshed", "the admin service owns what it migrates");

    // The admin service migrates every database: each gets exactly the
    // tables of the apps routed to it (workflow in both).
    check(&p, "toolshed", "migrate_all");
    assert_eq!(tables(&p, "buildsense"), "builds_build,django_migrations,workflow_task");
    assert_eq!(tables(&p, "maven"), "crawler_page,django_migrations,reports_report,workflow_task");
    // The tables it created are covered by the services' grants: nothing to do.
    p.converged();

    // Two apps on one database: a foreign key, written in one transaction.
    check(&p, "buildsense", "foreign_key_in_one_transaction");
    // A readonly route: PostgreSQL refuses the INSERT.
    let out = check(&p, "buildsense", "readonly_refused");
    assert!(out.contains("permission denied for table reports_report"), "{out}");

    // The same app label on another database in another service.
    check(&p, "buildsense", "write_workflow");
    check(&p, "maven", "write_workflow");
    assert_eq!(
        p.sql("buildsense", "SELECT string_agg(name, ',' ORDER BY name) FROM workflow_task"),
        "buildsense,compile"
    );
    assert_eq!(p.sql("maven", "SELECT string_agg(name, ',' ORDER BY name) FROM workflow_task"), "maven");

    // An app the service does not route: an error that names app and service.
    let out = check(&p, "maven", "unrouted");
    assert!(out.contains("app 'builds' is not routed by service 'maven_crawler'"), "{out}");
    // ... and migrate never puts its tables into any of the service's databases.
    check(&p, "maven", "unrouted_never_migrated");

    // The password is read when a connection opens, not only at import.
    check(&p, "buildsense", "password_read_on_connect");

    // Django's test runner: the service's user creates its test database.
    let (ok, out) = django(&p, "buildsense", &["manage.py", "test", "builds", "--noinput"]);
    assert!(ok && out.contains("OK"), "manage.py test:\n{out}");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'test_%'"), "0");
    p.converged();
}

/// The local store's versions of a secret: (value's password, pending).
fn versions(p: &Project, name: &str) -> Vec<(String, bool)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".dbctl/secrets.json")).unwrap()).unwrap();
    v["secrets"][name]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let doc: serde_json::Value = serde_json::from_str(x["value"].as_str().unwrap()).unwrap();
            (doc["password"].as_str().unwrap().to_string(), x["pending"].as_bool().unwrap_or(false))
        })
        .collect()
}

/// A service opening a new connection every 50 ms, through `dbctl secret
/// rotate` and `dbctl apply`: the next `stop()` gives its counts.
struct Busy {
    child: std::process::Child,
    stop: PathBuf,
}

impl Busy {
    fn start(p: &Project, module: &str) -> Busy {
        let stop = p.path().join(format!("stop-{module}"));
        let child = Command::new(python())
            .arg("connect_loop.py")
            .arg(&stop)
            .current_dir(root().join("tests/django"))
            .env("PYTHONPATH", p.path().join("out"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("DBCTL_SERVICE_MODULE", module)
            .env("DJANGO_SETTINGS_MODULE", "proj.settings")
            .env_remove("DBCTL_SECRETS_FILE")
            // Credentials for moto (an `aws` store); nothing here reaches real AWS.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python");
        let ready = stop.with_file_name(format!("stop-{module}.ready"));
        let since = std::time::Instant::now();
        while !ready.exists() {
            assert!(since.elapsed() < std::time::Duration::from_secs(60), "the service never connected");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Busy { child, stop }
    }

    /// (connections made, failures, output).
    fn stop(self) -> (u64, u64, String) {
        std::fs::write(&self.stop, "").unwrap();
        let out = self.child.wait_with_output().unwrap();
        let text = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{text}");
        let counts: Vec<u64> = text
            .lines()
            .find(|l| l.starts_with("connections "))
            .unwrap_or_else(|| panic!("{text}"))
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (counts[0], counts[1], text)
    }
}

fn pause(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// A rotation never fails a connection: a service that opens one every 50 ms
/// through `secret rotate` and `apply` sees none refused, and afterwards the
/// server takes only the new password.
#[test]
fn a_rotation_fails_no_connection_of_a_running_service() {
    let _ = python();
    let p = Project::example("django");
    p.apply();
    let old = p.secret("secret.buildsense");
    let busy = Busy::start(&p, "buildsense");
    pause(500);

    let out = p.ok(&["secret", "rotate", "secret.buildsense"], 0);
    assert!(out.contains("pending") && out.contains("until `dbctl apply` sets the new one"), "{out}");
    // Staged, not current: the store still gives services the old password.
    let stored = versions(&p, "secret.buildsense");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], (old.clone(), false));
    let new = stored[1].0.clone();
    assert!(stored[1].1, "the new version is pending");
    assert_ne!(old, new);
    let shown = p.ok(&["secret", "show", "secret.buildsense"], 0);
    assert!(shown.contains("pending: version"), "{shown}");
    assert!(!shown.contains(&new) && !out.contains(&new), "no value shown");
    // The server still takes the old one.
    assert_eq!(p.psql_as("buildsense", Some(&old), "buildsense", "SELECT current_user").unwrap(), "buildsense");
    pause(500);

    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("rotation pending: password set from version"), "{plan}");
    assert!(!plan.contains(&new), "{plan}");
    let applied = p.apply();
    assert!(!applied.contains(&new), "{applied}");
    pause(500);
    let (made, failed, out) = busy.stop();
    println!("rotation under load (local store): {made} connections, {failed} failures");
    assert_eq!(failed, 0, "{out}");
    assert!(made >= 10, "the loop ran through the rotation: {out}");

    // Now current, the old one kept as previous; the server takes only the new one.
    assert_eq!(versions(&p, "secret.buildsense"), [(old.clone(), false), (new.clone(), false)]);
    assert!(p.psql_as("buildsense", Some(&old), "buildsense", "SELECT 1").is_err(), "the old password is refused");
    assert_eq!(p.psql_as("buildsense", Some(&new), "buildsense", "SELECT current_user").unwrap(), "buildsense");
    let out = check(&p, "buildsense", "connect");
    assert!(out.contains("user buildsense"), "{out}");
    p.converged();
}

/// An apply killed after the server took the new password but before the
/// store made it current: the store's current version is refused, the
/// module connects with the pending one, and the rerun finishes the rotation.
#[test]
fn an_apply_killed_between_server_and_store_still_connects_and_converges() {
    use fs4::fs_std::FileExt;
    let _ = python();
    let p = Project::example("django");
    p.apply();
    let old = p.secret("secret.buildsense");
    p.ok(&["secret", "rotate", "secret.buildsense"], 0);
    let new = versions(&p, "secret.buildsense")[1].0.clone();

    // Hold the store's lock: the apply reads the pending value (no lock),
    // sets it on the server, then waits for the lock to make it current.
    let lock = std::fs::OpenOptions::new().write(true).open(p.path().join(".dbctl/secrets.lock")).unwrap();
    lock.lock_exclusive().unwrap();
    let mut apply = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .args(["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let since = std::time::Instant::now();
    while p.psql_as("buildsense", Some(&new), "buildsense", "SELECT 1").is_err() {
        assert!(apply.try_wait().unwrap().is_none(), "the apply ended without setting the password");
        assert!(since.elapsed() < std::time::Duration::from_secs(60), "the server never got the new password");
        pause(20);
    }
    // The server has the new password; the apply waits to promote it: kill it there.
    pause(200);
    apply.kill().unwrap();
    apply.wait().unwrap();
    lock.unlock().unwrap();
    assert!(p.psql_as("buildsense", Some(&old), "buildsense", "SELECT 1").is_err());
    assert_eq!(versions(&p, "secret.buildsense"), [(old.clone(), false), (new.clone(), true)], "still pending");

    // The module's first try (the current version) is refused; it retries with the pending one.
    let out = check(&p, "buildsense", "connect");
    assert!(out.contains("user buildsense"), "{out}");
    // And through a steady stream of connections, until the rerun finished the rotation.
    let busy = Busy::start(&p, "buildsense");
    pause(500);
    let shown = p.ok(&["secret", "show", "secret.buildsense"], 0);
    assert!(shown.contains("pending: version"), "{shown}");

    // The rerun sets it again (the same password) and makes it current.
    let plan = p.plan_json();
    assert_eq!(common::steps(&plan), ["ALTER ROLE \"buildsense\" PASSWORD (sensitive)"]);
    p.apply();
    pause(300);
    let (made, failed, out) = busy.stop();
    println!("killed apply, then rerun: {made} connections, {failed} failures");
    assert_eq!(failed, 0, "{out}");
    assert_eq!(versions(&p, "secret.buildsense"), [(old.clone(), false), (new.clone(), false)]);
    assert_eq!(p.psql_as("buildsense", Some(&new), "buildsense", "SELECT current_user").unwrap(), "buildsense");
    assert!(p.psql_as("buildsense", Some(&old), "buildsense", "SELECT 1").is_err());
    p.converged();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The password in the version of `name` with `stage` in moto's Secrets Manager.
fn aws_password(moto: &Moto, name: &str, stage: &str) -> String {
    let v = block_on(moto.secrets_client().get_secret_value().secret_id(name).version_stage(stage).send()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
    doc["password"].as_str().unwrap().to_string()
}

/// The same through AWS Secrets Manager (moto): the module reads AWSCURRENT
/// when a connection opens, and AWSPENDING when the server refuses it.
#[test]
fn a_rotation_in_secrets_manager_fails_no_connection_of_a_running_service() {
    let _ = python();
    let moto = Moto::start();
    let endpoint = &moto.endpoint;
    let p = Project::new(&format!(
        r#"{SERVER}
provider "aws" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

secret "shop" {{
  store = "aws"
  name  = "test/shop/db"
  generate {{
    length = 24
  }}
}}

user "shop" {{
  server   = server.main
  password = secret.shop
}}

database "orders" {{
  server = server.main
}}

router "shop" {{
  user    = user.shop
  access  = "readwrite"
  default = "workflow"
  route "workflow" {{
    database = database.orders
  }}
  publish {{
    file   = "out/shop.py"
    format = "django"
  }}
}}
"#
    ));
    p.apply();
    let name = "test/shop/db";
    let old = aws_password(&moto, name, "AWSCURRENT");
    let busy = Busy::start(&p, "shop");
    pause(500);
    let out = p.ok(&["secret", "rotate", "secret.shop"], 0);
    assert!(out.contains("pending"), "{out}");
    let new = aws_password(&moto, name, "AWSPENDING");
    assert_eq!(aws_password(&moto, name, "AWSCURRENT"), old, "AWSCURRENT stays until the server has the new one");
    pause(500);
    p.apply();
    pause(500);
    let (made, failed, out) = busy.stop();
    println!("rotation under load (aws store, moto): {made} connections, {failed} failures");
    assert_eq!(failed, 0, "{out}");
    assert!(made >= 10, "the loop ran through the rotation: {out}");
    assert_eq!(aws_password(&moto, name, "AWSCURRENT"), new);
    assert_eq!(aws_password(&moto, name, "AWSPREVIOUS"), old);
    assert!(p.psql_as("shop", Some(&old), "orders", "SELECT 1").is_err(), "the old password is refused");
    assert_eq!(p.psql_as("shop", Some(&new), "orders", "SELECT current_user").unwrap(), "shop");

    // Stopped between server and store: AWSCURRENT is refused, AWSPENDING works.
    p.ok(&["secret", "rotate", "secret.shop"], 0);
    let third = aws_password(&moto, name, "AWSPENDING");
    p.sql("postgres", &format!("ALTER ROLE shop PASSWORD '{third}'"));
    let out = check(&p, "shop", "connect");
    assert!(out.contains("user shop"), "{out}");
    p.apply();
    assert_eq!(aws_password(&moto, name, "AWSCURRENT"), third);
    p.converged();
}

/// The same service contract on MariaDB, with Django's own MySQL backend
/// (mysqlclient): the admin service migrates, two apps share one alias, a
/// readonly route is refused by the server, and a rotation fails no
/// connection.
#[test]
fn a_django_project_runs_on_mariadb() {
    let py = python();
    let has_client = Command::new(&py).args(["-c", "import MySQLdb"]).output().is_ok_and(|o| o.status.success());
    assert!(
        has_client,
        "{} has no mysqlclient: `.venv/bin/pip install mysqlclient` (what scripts/test does)",
        py.display()
    );
    let p = Project::new(
        r#"server "main" {
  engine   = "mysql"
  embedded = true
}

database "buildsense" {
  server = server.main
}

database "maven" {
  server = server.main
}

secret "buildsense" {
  generate {
    length = 24
  }
}

user "buildsense" {
  server   = server.main
  password = secret.buildsense
}

router "buildsense" {
  user    = user.buildsense
  default = "workflow"
  route "workflow" {
    database = database.buildsense
  }
  route "builds" {
    database = database.buildsense
  }
  route "reports" {
    database = database.maven
    access   = "readonly"
  }
  publish {
    file   = "out/buildsense.py"
    format = "django"
  }
}

secret "toolshed" {
  generate {
    length = 24
  }
}

user "toolshed" {
  server   = server.main
  password = secret.toolshed
}

router "toolshed" {
  user     = user.toolshed
  access   = "owner"
  migrates = [router.buildsense]
  publish {
    file   = "out/toolshed.py"
    format = "django"
  }
}
"#,
    );
    p.apply();
    p.converged();
    let module = std::fs::read_to_string(p.path().join("out/buildsense.py")).unwrap();
    assert!(module.contains("django.db.backends.mysql"), "{module}");

    check(&p, "toolshed", "migrate_all");
    let (ok, out) = django(&p, "toolshed", &["check.py", "tables"]);
    assert!(ok, "{out}");
    assert!(out.contains("default=builds_build,django_migrations,workflow_task"), "{out}");
    assert!(out.contains("=django_migrations,reports_report"), "{out}");
    p.converged();
    check(&p, "buildsense", "foreign_key_in_one_transaction");
    let out = check(&p, "buildsense", "readonly_refused");
    assert!(out.contains("INSERT command denied"), "{out}");

    // Rotation through the MySQL backend: 0 failed connections.
    let busy = Busy::start(&p, "buildsense");
    pause(500);
    let out = p.ok(&["secret", "rotate", "secret.buildsense"], 0);
    assert!(out.contains("pending"), "{out}");
    pause(500);
    p.apply();
    pause(500);
    let (made, failed, out) = busy.stop();
    println!("rotation under load (mariadb, local store): {made} connections, {failed} failures");
    assert_eq!(failed, 0, "{out}");
    assert!(made >= 10, "the loop ran through the rotation: {out}");
    let stored = versions(&p, "secret.buildsense");
    assert!(stored.iter().all(|(_, pending)| !pending), "{stored:?}");
    let out = check(&p, "buildsense", "connect");
    assert!(out.contains("user buildsense@"), "{out}");
    p.converged();
}
