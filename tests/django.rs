//! The published Django modules, used by a real Django project
//! (tests/django) against an embedded PostgreSQL: two services and the admin
//! service that migrates both. Needs Django and psycopg: the `.venv` of the
//! checkout (what .ci/run installs), or DBCTL_PYTHON naming a python that has
//! them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{text, Project};

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
