//! Migrations against a real PostgreSQL (dbctl's embedded server): plan,
//! apply, the tracking table, the refusals, a failure that leaves nothing,
//! the lint, `migrate status` and `migrate test`.

mod common;

use common::{text, Project};

const CONFIG: &str = r#"
server "main" {
  engine   = "postgres"
  embedded = true
}

database "loans" {
  server = server.main
}

migrations "loans" {
  database = database.loans
  dir      = "migrations/loans"
  lint     = "error"
  OUT_OF_ORDER
}

role "reader" {
  server = server.main
  grant {
    database   = database.loans
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }
}
"#;

fn project(out_of_order: bool) -> Project {
    let p = Project::new(&CONFIG.replace("OUT_OF_ORDER", if out_of_order { "out_of_order = true" } else { "" }));
    std::fs::create_dir_all(p.path().join("migrations/loans")).unwrap();
    p
}

fn file(p: &Project, name: &str, sql: &str) {
    std::fs::write(p.path().join("migrations/loans").join(name), sql).unwrap();
}

fn applied(p: &Project) -> String {
    p.sql("loans", "SELECT string_agg(version || ':' || description, ',' ORDER BY version) FROM _sqlx_migrations")
}

#[test]
fn pending_migrations_apply_in_order_before_grants_then_the_plan_is_empty() {
    let p = project(false);
    // Written out of order: the numbers order them. A new table's index needs
    // no CONCURRENTLY (squawk knows the table is new).
    file(&p, "0002_more.up.sql", "CREATE TABLE fees (id bigint PRIMARY KEY, loan bigint);\n");
    file(
        &p,
        "0001_create.up.sql",
        "CREATE TABLE loans (id bigint PRIMARY KEY, borrower text);\nCREATE INDEX loans_b ON loans (borrower);\n",
    );

    let plan = p.plan_json();
    let steps = common::steps(&plan);
    let m1 = steps.iter().position(|s| s.contains("0001_create.up.sql")).expect("0001 planned");
    let m2 = steps.iter().position(|s| s.contains("0002_more.up.sql")).expect("0002 planned");
    let grant = steps.iter().position(|s| s.contains("GRANT SELECT ON ALL TABLES")).expect("the grant");
    let create = steps.iter().position(|s| s.contains("CREATE DATABASE")).expect("the database");
    assert!(create < m1 && m1 < m2 && m2 < grant, "{steps:#?}");

    let verbose = p.ok(&["plan", "--verbose"], 0);
    assert!(verbose.contains("CREATE TABLE fees (id bigint PRIMARY KEY, loan bigint);"), "{verbose}");

    p.apply();
    assert_eq!(applied(&p), "1:create,2:more");
    // The grant covers the tables the migrations created.
    assert_eq!(p.sql("loans", "SELECT has_table_privilege('reader', 'fees', 'SELECT')"), "t");
    p.converged();

    // A new one is the only change; --target picks it.
    file(&p, "0003_col.up.sql", "ALTER TABLE fees ADD COLUMN amount numeric;\n");
    let out = p.ok(&["plan", "--target", "migrations.loans"], 0);
    assert!(out.contains("0003_col"), "{out}");
    p.ok(&["apply", "--auto-approve", "--target", "migrations.loans"], 0);
    assert_eq!(applied(&p), "1:create,2:more,3:col");
    p.converged();
}

#[test]
fn an_edited_applied_migration_and_an_older_newcomer_are_refused_naming_the_file() {
    let p = project(false);
    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY);\n");
    file(&p, "0003_fees.up.sql", "CREATE TABLE fees (id bigint PRIMARY KEY);\n");
    p.apply();

    file(&p, "0002_late.up.sql", "CREATE TABLE late (id bigint PRIMARY KEY);\n");
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("migrations/loans/0002_late.up.sql is older than version 3"), "{out}");
    assert!(out.contains("out_of_order = true"), "{out}");
    std::fs::remove_file(p.path().join("migrations/loans/0002_late.up.sql")).unwrap();

    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY, x int);\n");
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("migrations/loans/0001_create.up.sql was changed after it was applied"), "{out}");
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("0001_create.up.sql was changed"), "{out}");

    std::fs::remove_file(p.path().join("migrations/loans/0001_create.up.sql")).unwrap();
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("migrations/loans/0001_create.up.sql was applied (version 1) and is gone"), "{out}");
}

#[test]
fn out_of_order_true_applies_an_older_newcomer() {
    let p = project(true);
    file(&p, "0001_a.up.sql", "CREATE TABLE a (id bigint PRIMARY KEY);\n");
    file(&p, "0003_c.up.sql", "CREATE TABLE c (id bigint PRIMARY KEY);\n");
    p.apply();
    file(&p, "0002_b.up.sql", "CREATE TABLE b (id bigint PRIMARY KEY);\n");
    p.apply();
    assert_eq!(applied(&p), "1:a,2:b,3:c");
}

#[test]
fn a_failing_migration_leaves_nothing_and_the_next_apply_resumes() {
    let p = project(false);
    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY);\n");
    file(
        &p,
        "0002_broken.up.sql",
        "CREATE TABLE fees (id bigint PRIMARY KEY);\nINSERT INTO fees VALUES (1);\n\nINSERT INTO nowhere VALUES (1);\n",
    );
    file(&p, "0003_after.up.sql", "CREATE TABLE after (id bigint PRIMARY KEY);\n");
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("migrations/loans/0002_broken.up.sql:4: relation \"nowhere\" does not exist"), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(applied(&p), "1:create");
    assert_eq!(p.sql("loans", "SELECT to_regclass('fees') IS NULL AND to_regclass('after') IS NULL"), "t");

    file(&p, "0002_broken.up.sql", "CREATE TABLE fees (id bigint PRIMARY KEY);\nINSERT INTO fees VALUES (1);\n");
    p.apply();
    assert_eq!(applied(&p), "1:create,2:broken,3:after");
    assert_eq!(p.sql("loans", "SELECT count(*) FROM fees"), "1");
    p.converged();
}

#[test]
fn lint_findings_stop_the_plan_at_their_line_and_an_allow_comment_silences_one() {
    let p = project(false);
    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY, amount int, note text);\n");
    file(
        &p,
        "0002_bad.up.sql",
        "ALTER TABLE loans RENAME COLUMN amount TO principal;\n\
         ALTER TABLE loans DROP COLUMN note;\n\
         -- dbctl:allow ban-drop-table\n\
         DROP TABLE loans;\n\
         ALTER TABLE loans RENAME TO credits;\n\
         ALTER TABLE credits ADD COLUMN region text NOT NULL;\n\
         ALTER TABLE credits ALTER COLUMN principal TYPE bigint;\n\
         DROP TABLE credits;\n",
    );
    let out = p.ok(&["migrate", "lint"], 1);
    for (line, rule) in [
        (1, "renaming-column"),
        (2, "ban-drop-column"),
        (5, "renaming-table"),
        (6, "adding-required-field"),
        (7, "changing-column-type"),
        (8, "ban-drop-table"),
    ] {
        let at = format!("migrations/loans/0002_bad.up.sql:{line}:");
        assert!(
            out.lines().any(|l| l.starts_with(&at) && l.contains(&format!("[{rule}]"))),
            "{rule} at {line}:\n{out}"
        );
    }
    assert!(!out.contains("0002_bad.up.sql:4:"), "allowed on the line before:\n{out}");
    assert!(out.contains("help: "), "{out}");

    let plan = p.ok(&["plan"], 1);
    assert!(plan.contains("0002_bad.up.sql:1:19: [renaming-column]"), "{plan}");
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("[ban-drop-column]"), "{out}");
    let listed = p.ok(&["state", "list"], 0);
    assert!(!listed.contains("database.loans"), "nothing ran:\n{listed}");

    // lint = "warn": the plan goes on, with warnings.
    let cfg = std::fs::read_to_string(p.path().join("main.hcl")).unwrap();
    p.write(&cfg.replace("lint     = \"error\"", "lint     = \"warn\""));
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("Warning: migrations.loans: migrations/loans/0002_bad.up.sql:2:"), "{plan}");
}

#[test]
fn migrate_status_json_lists_applied_and_pending() {
    let p = project(false);
    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY);\n");
    p.apply();
    file(&p, "0002_more.up.sql", "CREATE TABLE fees (id bigint PRIMARY KEY);\n");
    file(&p, "0002_more.down.sql", "DROP TABLE fees;\n");
    let out = p.dbctl(&["migrate", "status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["migrations"][0];
    assert_eq!(m["address"], "migrations.loans");
    assert_eq!(m["database"], "loans");
    assert_eq!(m["applied"][0]["version"], 1);
    assert_eq!(m["applied"][0]["checksum"].as_str().unwrap().len(), 96, "SHA-384 in hex");
    assert!(m["applied"][0]["applied_at"].as_str().unwrap().ends_with('Z'));
    assert!(m["applied"][0]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(m["pending"][0]["version"], 2);
    assert_eq!(m["pending"][0]["file"], "migrations/loans/0002_more.up.sql");
    assert_eq!(m["pending"][0]["down"], "migrations/loans/0002_more.down.sql");
    assert_eq!(m["pending"][0]["transaction"], true);
    assert_eq!(m["errors"], serde_json::json!([]));
    check_status_schema(&v);

    let human = p.ok(&["migrate", "status"], 0);
    assert!(human.contains("applied  0001_create") && human.contains("pending  0002_more"), "{human}");
}

/// The documented shape (docs/migrations.md), checked with jsonschema.
fn check_status_schema(v: &serde_json::Value) {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/migrate-status.schema.json");
    let python = std::env::var("DBCTL_PYTHON").unwrap_or_else(|_| "python3".into());
    let doc = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(doc.path(), v.to_string()).unwrap();
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
        ])
        .arg(&schema)
        .arg(doc.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn migrate_new_writes_the_next_pair() {
    let p = project(false);
    file(&p, "0007_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY);\n");
    let out = p.ok(&["migrate", "new", "add_fees"], 0);
    assert!(out.contains("migrations/loans/0008_add_fees.up.sql"), "{out}");
    assert!(p.path().join("migrations/loans/0008_add_fees.down.sql").exists());
    let out = p.ok(&["migrate", "new", "bad-name"], 1);
    assert!(out.contains("not a migration name"), "{out}");
}

#[test]
fn the_example_lints_clean_and_applies() {
    let p = Project::example("migrations");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations/migrations/loans");
    std::fs::create_dir_all(p.path().join("migrations/loans")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), p.path().join("migrations/loans").join(e.file_name())).unwrap();
    }
    let out = p.ok(&["migrate", "lint"], 0);
    assert!(out.contains("3 file(s) checked, 0 finding(s)"), "{out}");
    p.apply();
    assert_eq!(applied(&p), "1:create_loans,2:add_status,3:index_borrower");
    p.converged();
}

#[test]
fn migrate_test_catches_a_down_file_that_does_not_undo_its_up() {
    let p = project(false);
    file(&p, "0001_create.up.sql", "CREATE TABLE loans (id bigint PRIMARY KEY, borrower text);\n");
    file(&p, "0001_create.down.sql", "DROP TABLE loans;\n");
    file(
        &p,
        "0002_fees.up.sql",
        "CREATE TABLE fees (id bigint PRIMARY KEY);\nALTER TABLE loans ADD COLUMN fee bigint;\n",
    );
    file(&p, "0002_fees.down.sql", "DROP TABLE fees;\n");
    file(&p, "0003_more.up.sql", "CREATE TABLE more (id bigint PRIMARY KEY);\n");
    let out = p.ok(&["migrate", "test"], 1);
    assert!(out.contains("ok    0001_create  up, down (schema as before), up"), "{out}");
    assert!(out.contains("FAIL  0002_fees  migrations/loans/0002_fees.down.sql does not undo its up file"), "{out}");
    assert!(out.contains("fee bigint"), "the difference is shown:\n{out}");
    assert!(!out.contains("0003_more"), "stops at the failure:\n{out}");

    file(&p, "0002_fees.down.sql", "ALTER TABLE loans DROP COLUMN fee;\nDROP TABLE fees;\n");
    let out = p.ok(&["migrate", "test"], 0);
    assert!(out.contains("ok    0002_fees  up, down (schema as before), up"), "{out}");
    assert!(out.contains("ok    0003_more  up (no down file)"), "{out}");
    // The throwaway server is gone; the project's own server was never started.
    assert!(!p.path().join(".dbctl/migrate-test").exists());

    // A file that fails on a fresh install fails the gate too.
    file(&p, "0004_broken.up.sql", "ALTER TABLE nowhere ADD COLUMN x int;\n");
    let out = p.ok(&["migrate", "test"], 1);
    assert!(
        out.contains(
            "FAIL  0004_broken  up: migrations/loans/0004_broken.up.sql:1: relation \"nowhere\" does not exist"
        ),
        "{out}"
    );
}

fn mariadb(p: &Project, sql: &str) -> String {
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-N", "-B", "-u", "root"])
        .arg(format!("--port={}", p.port()))
        .arg(format!("--password={}", p.admin_password()))
        .args(["-e", sql])
        .output()
        .expect("mariadb client");
    assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn mariadb_runs_the_same_files_and_tracking_and_the_plan_says_ddl_is_not_rolled_back() {
    let p = Project::new(
        r#"
server "main" {
  engine   = "mysql"
  embedded = true
}
database "shop" {
  server = server.main
  name   = "shop-db"
}
migrations "shop" {
  database = database.shop
  dir      = "migrations/shop"
}
"#,
    );
    let dir = p.path().join("migrations/shop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0001_orders.up.sql"), "CREATE TABLE orders (id BIGINT PRIMARY KEY, note TEXT);\n")
        .unwrap();
    std::fs::write(
        dir.join("0002_items.up.sql"),
        "CREATE TABLE items (id BIGINT PRIMARY KEY);\n-- a ; in a comment\nINSERT INTO items VALUES (1);\n",
    )
    .unwrap();
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("0002_items.up.sql: MySQL/MariaDB commit DDL as it runs"), "{plan}");
    p.apply();
    assert_eq!(mariadb(&p, "SELECT GROUP_CONCAT(version ORDER BY version) FROM `shop-db`._sqlx_migrations"), "1,2");
    assert_eq!(mariadb(&p, "SELECT COUNT(*) FROM `shop-db`.items"), "1");
    p.converged();

    // A failure names file and line; DDL before it stays (the plan said so); the
    // migration is not recorded, so the fixed file runs whole on the next apply.
    std::fs::write(
        dir.join("0003_broken.up.sql"),
        "CREATE TABLE IF NOT EXISTS refunds (id BIGINT PRIMARY KEY);\nINSERT INTO nowhere VALUES (1);\n",
    )
    .unwrap();
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("migrations/shop/0003_broken.up.sql:2:"), "{out}");
    assert_eq!(mariadb(&p, "SELECT COUNT(*) FROM `shop-db`._sqlx_migrations"), "2");
    std::fs::write(dir.join("0003_broken.up.sql"), "CREATE TABLE IF NOT EXISTS refunds (id BIGINT PRIMARY KEY);\n")
        .unwrap();
    p.apply();
    assert_eq!(mariadb(&p, "SELECT GROUP_CONCAT(version ORDER BY version) FROM `shop-db`._sqlx_migrations"), "1,2,3");

    std::fs::write(dir.join("0001_orders.up.sql"), "CREATE TABLE orders (id BIGINT PRIMARY KEY);\n").unwrap();
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("migrations/shop/0001_orders.up.sql was changed after it was applied"), "{out}");
}

#[test]
fn migrations_run_as_the_database_owner_so_its_default_privileges_cover_their_tables() {
    let p = Project::new(
        r#"
server "main" {
  engine   = "postgres"
  embedded = true
}
user "app" {
  server   = server.main
  password = secret.app
}
secret "app" {
  generate {
    length = 24
  }
}
database "loans" {
  server = server.main
  owner  = user.app
}
migrations "loans" {
  database = database.loans
  dir      = "m"
}
role "reader" {
  server = server.main
  grant {
    database   = database.loans
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }
}
"#,
    );
    std::fs::create_dir_all(p.path().join("m")).unwrap();
    std::fs::write(p.path().join("m/0001_create.up.sql"), "CREATE TABLE loans (id bigint PRIMARY KEY);\n").unwrap();
    p.apply();
    assert_eq!(p.sql("loans", "SELECT tableowner FROM pg_tables WHERE tablename = 'loans'"), "app");
    assert_eq!(p.sql("loans", "SELECT tableowner FROM pg_tables WHERE tablename = '_sqlx_migrations'"), "postgres");
    assert_eq!(p.sql("loans", "SELECT has_table_privilege('reader', 'loans', 'SELECT')"), "t");
    p.converged();
    std::fs::write(p.path().join("m/0002_more.up.sql"), "CREATE TABLE fees (id bigint PRIMARY KEY);\n").unwrap();
    p.apply();
    assert_eq!(p.sql("loans", "SELECT has_table_privilege('reader', 'fees', 'SELECT')"), "t");
    p.converged();
}

#[test]
fn an_apply_killed_inside_a_migration_converges_on_the_next_run() {
    let p = project(false);
    file(&p, "0001_a.up.sql", "CREATE TABLE a (id bigint PRIMARY KEY);\n");
    file(
        &p,
        "0002_slow.up.sql",
        "CREATE TABLE b (id bigint PRIMARY KEY);\nSELECT pg_sleep(3);\nCREATE TABLE c (id bigint PRIMARY KEY);\n",
    );
    file(&p, "0003_d.up.sql", "CREATE TABLE d (id bigint PRIMARY KEY);\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .arg("-C")
        .arg(p.path())
        .args(["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until 0002 runs (its table b exists inside its transaction: visible
    // only as a lock), then kill dbctl without letting it clean up.
    let t = std::time::Instant::now();
    loop {
        let ready = ["password", "port"].iter().all(|f| p.path().join(".dbctl/servers/main").join(f).exists());
        let running = if !ready {
            String::new()
        } else {
            p.psql(
                "loans",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()",
            )
            .unwrap_or_default()
        };
        if running == "1" {
            break;
        }
        assert!(t.elapsed().as_secs() < 60, "0002 never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(applied(&p), "1:a", "0001 committed, 0002 did not");

    p.apply();
    assert_eq!(applied(&p), "1:a,2:slow,3:d");
    assert_eq!(p.sql("loans", "SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b', 'c', 'd')"), "4");
    p.converged();
}
