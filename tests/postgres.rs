//! PostgreSQL engine, end to end against real servers that each test starts
//! itself (`embedded = true` in a throwaway directory).

mod common;

use common::{steps, Project, SERVER};

#[test]
fn quickstart_applies_converges_and_enforces_access() {
    let p = Project::example("quickstart");
    let out = p.apply();
    assert!(out.contains("Apply complete! Resources: 7 added, 0 changed, 0 destroyed."), "{out}");
    p.converged();

    let pw = p.secret("secret.shop");
    assert_eq!(pw.len(), 32);
    // Stored in the RDS credentials shape, so rotation tooling can read it.
    let doc: serde_json::Value = serde_json::from_str(&p.secret_document("secret.shop")).unwrap();
    assert_eq!(doc["username"], "shop");
    assert_eq!(doc["engine"], "postgres");
    assert_eq!(doc["host"], "127.0.0.1");
    assert_eq!(doc["port"], p.port());
    assert_eq!(doc["dbname"], "orders", "the router's default route");
    // The password really logs in; a wrong one does not.
    assert_eq!(p.psql_as("shop", Some(&pw), "orders", "SELECT current_user").unwrap(), "shop");
    assert!(p.psql_as("shop", Some("wrong"), "orders", "SELECT 1").is_err());

    // Tables created after apply are covered by the default privileges...
    p.sql("orders", "CREATE TABLE o (id serial PRIMARY KEY, v text)");
    p.sql("catalog", "CREATE TABLE c (id int)");
    p.psql_as("shop", Some(&pw), "orders", "INSERT INTO o (v) VALUES ('x')").expect("readwrite route can insert");
    p.psql_as("shop", Some(&pw), "catalog", "SELECT count(*) FROM c").expect("readonly route can select");
    let denied = p.psql_as("shop", Some(&pw), "catalog", "INSERT INTO c VALUES (1)").unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    // ...and cause no drift.
    p.converged();

    // PUBLIC cannot connect to databases dbctl created.
    p.sql("postgres", "CREATE ROLE outsider LOGIN PASSWORD 'outsider'");
    let denied = p.psql_as("outsider", Some("outsider"), "orders", "SELECT 1").unwrap_err();
    assert!(denied.contains("permission denied for database"), "{denied}");

    // destroy needs no --force when nobody else is connected (dbctl's own connections do not count).
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("Apply complete! Resources: 0 added, 0 changed, 6 destroyed, 1 forgotten."), "{out}");
    assert!(!p.path().join("deploy/shop/databases.json").exists(), "the published document is removed with its router");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('orders', 'catalog')"), "0");
}

const BASE: &str = r#"
secret "app" {}

role "readers" {
  server = server.main
}

role "writers" {
  server = server.main
}

user "app" {
  server           = server.main
  password         = secret.app
  member_of        = [role.readers]
  connection_limit = 5

  grant {
    database   = database.app
    privileges = ["CONNECT", "TEMPORARY"]
  }
  grant {
    database   = database.app
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT", "INSERT"]
  }
}

database "app" {
  server = server.main
}
"#;

fn cfg(extra: &str) -> String {
    format!("{SERVER}{BASE}{extra}")
}

#[test]
fn every_attribute_changes_in_place_with_the_right_statements() {
    let p = Project::new(&cfg(""));
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "5");

    // connection_limit, member_of, valid_until on a user.
    let changed = cfg("")
        .replace("connection_limit = 5", "connection_limit = 7\n  valid_until = \"2031-01-01T00:00:00Z\"")
        .replace("member_of        = [role.readers]", "member_of        = [role.writers]");
    p.write(&changed);
    let plan = p.plan_json();
    let s = steps(&plan);
    assert!(
        s.contains(&"ALTER ROLE \"app\" WITH CONNECTION LIMIT 7 VALID UNTIL '2031-01-01T00:00:00Z'".to_string()),
        "{s:?}"
    );
    assert!(s.contains(&"GRANT \"writers\" TO \"app\"".to_string()), "{s:?}");
    assert!(s.contains(&"REVOKE \"readers\" FROM \"app\"".to_string()), "{s:?}");
    p.apply();
    p.converged();
    assert_eq!(
        p.sql("postgres", "SELECT rolconnlimit, to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY') FROM pg_roles WHERE rolname = 'app'"),
        "7|2031"
    );
    assert_eq!(
        p.sql("postgres", "SELECT string_agg(g.rolname, ',') FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'app'"),
        "writers"
    );

    // Grants change by delta: one GRANT for the missing, one REVOKE for the extra, never REVOKE ALL.
    let grants = changed
        .replace("[\"CONNECT\", \"TEMPORARY\"]", "[\"CONNECT\", \"CREATE\"]")
        .replace("[\"SELECT\", \"INSERT\"]", "[\"SELECT\", \"UPDATE\"]");
    p.write(&grants);
    let s = steps(&p.plan_json());
    assert!(s.contains(&"GRANT CREATE ON DATABASE \"app\" TO \"app\"".to_string()), "{s:?}");
    assert!(s.contains(&"REVOKE TEMPORARY ON DATABASE \"app\" FROM \"app\"".to_string()), "{s:?}");
    assert!(
        s.iter().any(|x| x
            .starts_with("ALTER DEFAULT PRIVILEGES FOR ROLE \"postgres\" IN SCHEMA \"public\" GRANT UPDATE ON TABLES")),
        "{s:?}"
    );
    assert!(
        s.iter().any(|x| x.starts_with(
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"postgres\" IN SCHEMA \"public\" REVOKE INSERT ON TABLES"
        )),
        "{s:?}"
    );
    assert!(!s.iter().any(|x| x.contains("REVOKE ALL")), "{s:?}");
    p.apply();
    p.converged();
    let privs = p.sql(
        "postgres",
        "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = 'app' AND a.grantee = 'app'::regrole",
    );
    assert_eq!(privs, "CONNECT,CREATE");

    // Database owner, connection limit and extensions.
    let db = grants.replace(
        "database \"app\" {\n  server = server.main\n}",
        "database \"app\" {\n  server           = server.main\n  owner            = role.writers\n  connection_limit = 3\n  extensions       = [\"pgcrypto\"]\n}",
    );
    p.write(&db);
    p.apply();
    p.converged();
    assert_eq!(
        p.sql("postgres", "SELECT pg_get_userbyid(datdba), datconnlimit FROM pg_database WHERE datname = 'app'"),
        "writers|3"
    );
    assert_eq!(p.sql("app", "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'"), "pgcrypto");
    // Removing the extension from the list drops it.
    p.write(&db.replace("\n  extensions       = [\"pgcrypto\"]", ""));
    p.apply();
    p.converged();
    assert_eq!(p.sql("app", "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'"), "0");

    // A new collation forces replacement, and prevent_destroy stops it.
    let replace = db.replace("connection_limit = 3\n", "connection_limit = 3\n  collation        = \"POSIX\"\n");
    p.write(&replace);
    let out = p.ok(&["plan"], 0);
    assert!(out.contains("-/+ database \"app\""), "{out}");
    assert!(out.contains("# forces replacement"), "{out}");
    p.write(&replace.replace(
        "collation        = \"POSIX\"\n",
        "collation        = \"POSIX\"\n  lifecycle {\n    prevent_destroy = true\n  }\n",
    ));
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("prevent_destroy"), "{out}");
}

#[test]
fn drift_is_reported_and_repaired() {
    let p = Project::new(&cfg(""));
    p.apply();
    p.sql("postgres", "ALTER ROLE app CONNECTION LIMIT 99");
    p.sql("postgres", "REVOKE TEMPORARY ON DATABASE app FROM app");
    let out = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(out.contains("Objects have changed outside of dbctl"), "{out}");
    assert!(out.contains("user.app: connection_limit changed from 5 to 99"), "{out}");
    assert!(out.contains("connection_limit = 99 -> 5"), "{out}");
    let refresh = p.ok(&["plan", "--refresh-only", "--detailed-exitcode"], 2);
    assert!(refresh.contains("Refresh only: nothing will be changed."), "{refresh}");
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "5");
}

#[test]
fn stale_saved_plan_is_refused_and_a_fresh_one_applies() {
    let p = Project::new(&cfg(""));
    p.apply();
    p.write(&cfg("").replace("connection_limit = 5", "connection_limit = 6"));
    let plan_file = p.path().join("change.plan");
    p.ok(&["plan", "--out", plan_file.to_str().unwrap()], 0);
    // The server changes under the saved plan.
    p.sql("postgres", "ALTER ROLE app CONNECTION LIMIT 42");
    let out = p.ok(&["apply", plan_file.to_str().unwrap()], 1);
    assert!(out.contains("stale plan: live objects have changed"), "{out}");
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "42", "nothing applied");
    // The configuration changes under the saved plan.
    p.ok(&["plan", "--out", plan_file.to_str().unwrap()], 0);
    p.write(&cfg("").replace("connection_limit = 5", "connection_limit = 8"));
    let out = p.ok(&["apply", plan_file.to_str().unwrap()], 1);
    assert!(out.contains("stale plan: the configuration has changed"), "{out}");
    // A plan that still matches applies exactly.
    p.ok(&["plan", "--out", plan_file.to_str().unwrap()], 0);
    let shown = p.ok(&["show", plan_file.to_str().unwrap()], 0);
    assert!(shown.contains("connection_limit = 42 -> 8"), "{shown}");
    p.ok(&["apply", plan_file.to_str().unwrap()], 0);
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "8");
    p.converged();
}

#[test]
fn a_failure_mid_apply_reports_progress_and_the_rerun_converges() {
    let p = Project::new(&cfg("").replace(
        "database \"app\" {\n  server = server.main\n}",
        "database \"app\" {\n  server     = server.main\n  extensions = [\"no_such_extension\"]\n}",
    ));
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("Apply failed. Nothing more was started."), "{out}");
    assert!(out.contains("failed: database.app: CREATE EXTENSION IF NOT EXISTS \"no_such_extension\""), "{out}");
    assert!(out.contains("not started ("), "{out}");
    // What was done is in the state: the database exists and is managed.
    assert!(p.ok(&["state", "list"], 0).contains("database.app"));
    p.write(&cfg(""));
    let plan = p.ok(&["plan"], 0);
    assert!(!plan.contains("database \"app\" will be created"), "{plan}");
    p.apply();
    p.converged();
}

#[test]
fn unmanaged_objects_are_untouched_and_destroy_restores_the_server() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    p.sql("postgres", "CREATE ROLE bystander LOGIN");
    p.sql("postgres", "CREATE DATABASE bystander_db OWNER bystander");
    let roles = "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'";
    let dbs = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database";
    let before = (p.sql("postgres", roles), p.sql("postgres", dbs));

    p.write(&cfg(""));
    p.apply();
    p.converged();
    assert!(p.sql("postgres", roles).contains("app"));

    // A role that owns objects is reassigned before it is dropped (in the
    // databases dbctl manages; `postgres` is not one of them).
    let pw = p.secret("secret.app");
    p.sql("app", "GRANT CREATE ON SCHEMA public TO app");
    p.psql_as("app", Some(&pw), "app", "CREATE TABLE owned_by_app (id int)").unwrap();

    // Open connections stop a database drop unless --force.
    let mut holder = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &p.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "app",
            "-c",
            "SELECT pg_sleep(30)",
        ])
        .env("PGPASSWORD", p.admin_password())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = p.ok(&["destroy", "--auto-approve"], 1);
    assert!(out.contains("open connection(s); close them, or run again with --force"), "{out}");
    let out = p.ok(&["destroy", "--auto-approve", "--force"], 0);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.contains("destroyed"), "{out}");
    assert_eq!((p.sql("postgres", roles), p.sql("postgres", dbs)), before, "the server is as it was");
    assert_eq!(p.ok(&["state", "list"], 0).trim(), "", "nothing is managed any more");
}

#[test]
fn existing_objects_must_be_imported_and_then_converge() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    p.sql("postgres", "CREATE DATABASE legacy");
    p.write(&format!("{SERVER}\ndatabase \"legacy\" {{\n  server = server.main\n}}\n"));
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("dbctl import database.legacy legacy"), "{out}");
    p.ok(&["import", "database.legacy", "legacy"], 0);
    // state rm forgets it again, without touching it.
    p.ok(&["state", "rm", "database.legacy"], 0);
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'legacy'"), "1");
    assert!(p.ok(&["plan"], 1).contains("dbctl import database.legacy legacy"));
    p.ok(&["import", "database.legacy", "legacy"], 0);
    let out = p.ok(&["plan", "--verbose"], 0);
    assert!(out.contains("REVOKE CONNECT, TEMPORARY ON DATABASE \"legacy\" FROM PUBLIC"), "{out}");
    p.apply();
    p.converged();
}

#[test]
fn hostile_names_round_trip() {
    let names = [
        ("quote", "it's \"quoted\""),
        ("semi", "x; DROP TABLE y; --"),
        ("uni", "Ünïcødé データ"),
        ("long", "a_name_of_exactly_sixty_three_bytes_which_is_postgres_limit_xyz"),
        // What the text form of an ACL quotes: braces, commas, backslash, `=` and `/`.
        ("acl", "{a,b}\\c=d/e f"),
    ];
    assert_eq!(names[3].1.len(), 63);
    let mut hcl = String::from(SERVER);
    for (label, name) in names {
        let n = dbctl::model::escape_hcl_string(name);
        hcl.push_str(&format!(
            "\nsecret \"{label}\" {{}}\n\nuser \"{label}\" {{\n  server   = server.main\n  name     = \"{n}\"\n  password = secret.{label}\n  grant {{\n    database   = database.{label}\n    privileges = [\"CONNECT\"]\n  }}\n  grant {{\n    database   = database.{label}\n    schema     = \"public\"\n    tables     = \"*\"\n    privileges = [\"SELECT\", \"INSERT\"]\n  }}\n}}\n\ndatabase \"{label}\" {{\n  server = server.main\n  name   = \"{n}\"\n}}\n"
        ));
    }
    let p = Project::new(&hcl);
    p.apply();
    p.converged();
    for (label, name) in names {
        let lit = name.replace('\'', "''");
        assert_eq!(p.sql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{lit}'")), "1");
        let pw = p.secret(&format!("secret.{label}"));
        assert_eq!(p.psql_as(name, Some(&pw), name, "SELECT current_user").unwrap(), name);
        // A table created later gets the grant through the default privileges, so nothing drifts.
        p.sql(name, "CREATE TABLE later (x int)");
        p.psql_as(name, Some(&pw), name, "INSERT INTO later VALUES (1)").unwrap();
        assert_eq!(p.psql_as(name, Some(&pw), name, "SELECT count(*) FROM later").unwrap(), "1");
    }
    p.converged();
    // A revoked privilege on one table is drift, and only for that user.
    let quote = names[0].1.replace('"', "\"\"");
    p.sql(names[0].1, &format!("REVOKE INSERT ON later FROM \"{quote}\""));
    let plan = p.ok(&["plan", "--verbose", "--detailed-exitcode"], 2);
    assert!(plan.contains(&format!("GRANT INSERT ON ALL TABLES IN SCHEMA \"public\" TO \"{quote}\"")), "{plan}");
    p.apply();
    p.converged();
    p.ok(&["destroy", "--auto-approve"], 0);
    for (_, name) in names {
        let lit = name.replace('\'', "''");
        assert_eq!(p.sql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{lit}'")), "0");
    }
}

#[test]
fn acls_read_as_text_match_aclexplode() {
    // The per-database read parses ACLs itself; the server's own aclexplode is the reference.
    let p = Project::new(&format!("{SERVER}\ndatabase \"app\" {{\n  server = server.main\n}}\n"));
    p.apply();
    let roles = ["plain", "it's \"q\"", "{a,b}\\c=d/e f", "Zürich データ", "x; DROP TABLE y; --", ""];
    let mut sql = String::from("CREATE TABLE t (x int); CREATE SEQUENCE s;");
    for (i, r) in roles.iter().enumerate() {
        let r = if r.is_empty() { "PUBLIC".to_string() } else { format!("\"{}\"", r.replace('"', "\"\"")) };
        if r != "PUBLIC" {
            sql.push_str(&format!("CREATE ROLE {r};"));
        }
        let privs = ["SELECT", "INSERT, UPDATE", "ALL", "DELETE, TRUNCATE, REFERENCES, TRIGGER", "SELECT", "UPDATE"][i];
        let option = if r == "PUBLIC" { "" } else { " WITH GRANT OPTION" };
        sql.push_str(&format!("GRANT {privs} ON t TO {r}{option};"));
        sql.push_str(&format!("GRANT USAGE ON SCHEMA public TO {r}; GRANT USAGE ON s TO {r};"));
        sql.push_str(&format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {r};"));
    }
    p.sql("app", &sql);
    for (what, text_sql, explode_sql) in [
        (
            "table",
            "SELECT relacl::text FROM pg_class WHERE relname = 't'",
            "SELECT relacl FROM pg_class WHERE relname = 't'",
        ),
        (
            "sequence",
            "SELECT relacl::text FROM pg_class WHERE relname = 's'",
            "SELECT relacl FROM pg_class WHERE relname = 's'",
        ),
        (
            "schema",
            "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
            "SELECT nspacl FROM pg_namespace WHERE nspname = 'public'",
        ),
        ("default", "SELECT defaclacl::text FROM pg_default_acl", "SELECT defaclacl FROM pg_default_acl"),
    ] {
        let text = p.sql("app", text_sql);
        let mut ours: Vec<String> = dbctl::engine::postgres::acl::parse(&text)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .into_iter()
            .flat_map(|e| e.privileges.into_iter().map(move |p| format!("{}|{p}", e.grantee)))
            .collect();
        ours.sort();
        ours.dedup();
        let reference = p.sql(
            "app",
            &format!(
                "SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || '|' || a.privilege_type, E'\\n') FROM ({explode_sql}) x(acl), aclexplode(x.acl) a"
            ),
        );
        let mut reference: Vec<String> = reference.lines().map(str::to_string).collect();
        reference.sort();
        reference.dedup();
        assert_eq!(ours, reference, "{what}: {text}");
        assert!(ours.len() >= roles.len(), "{what}: every role appears: {ours:?}");
    }
}

#[test]
fn secrets_never_leak_into_outputs_or_files() {
    let p = Project::example("quickstart");
    // A known value, given through a sensitive variable from a var file.
    let known = "Kn0wn-Secret-Value-4711";
    std::fs::write(
        p.path().join("given.hcl"),
        "variable \"ops_password\" {\n  sensitive = true\n}\n\nsecret \"ops\" {\n  value = var.ops_password\n}\n\nuser \"ops\" {\n  server   = server.main\n  password = secret.ops\n}\n",
    )
    .unwrap();
    std::fs::write(p.path().join("prod.vars"), format!("ops_password = \"{known}\"\n")).unwrap();
    let with_vars = |args: &[&str]| -> Vec<String> {
        [&["--var-file", "prod.vars"], args].concat().iter().map(|s| s.to_string()).collect()
    };
    let run = |args: &[&str], rc: i32| -> String {
        let a = with_vars(args);
        p.ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), rc)
    };
    let mut outputs = vec![run(&["apply", "--auto-approve"], 0)];
    assert_eq!(
        p.psql_as("ops", Some(known), "postgres", "SELECT current_user").unwrap(),
        "ops",
        "the given value is the password"
    );
    let pw = p.secret("secret.shop");
    p.sql("postgres", "ALTER ROLE shop CONNECTION LIMIT 1");
    outputs.push(run(&["plan", "--verbose"], 0));
    outputs.push(run(&["plan", "--format", "json"], 0));
    outputs.push(run(&["plan", "--format", "markdown", "--verbose"], 0));
    let plan_file = p.path().join("x.plan");
    run(&["plan", "--out", plan_file.to_str().unwrap()], 0);
    outputs.push(std::fs::read_to_string(&plan_file).unwrap());
    outputs.push(run(&["show", plan_file.to_str().unwrap()], 0));
    outputs.push(run(&["show", "--format", "json"], 0));
    outputs.push(run(&["secret", "show", "secret.ops"], 0));
    outputs.push(run(&["validate"], 0));
    outputs.push(run(&["apply", "--auto-approve"], 0));
    outputs.push(std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap());
    outputs.push(std::fs::read_to_string(p.path().join(".dbctl/servers/main/server.log")).unwrap_or_default());
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(&pw), "output {i} contains the password");
        assert!(!o.contains(known), "output {i} contains the given value");
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["state.json", "secrets.json"] {
        let mode = std::fs::metadata(p.path().join(".dbctl").join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

fn spawn_apply(p: &Project, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .arg("apply")
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn answer(mut child: std::process::Child, reply: &str) -> (Option<i32>, String) {
    use std::io::Write;
    child.stdin.take().unwrap().write_all(reply.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), format!("{}{}", common::text(&out.stdout), common::text(&out.stderr)))
}

#[test]
fn confirmation_targets_and_one_apply_at_a_time() {
    let p = Project::new(&cfg(""));
    // Anything but "yes" cancels and applies nothing.
    let (rc, out) = answer(spawn_apply(&p, &[]), "no\n");
    assert_eq!(rc, Some(1), "{out}");
    assert!(out.contains("Apply cancelled."), "{out}");
    assert_eq!(p.ok(&["state", "list"], 0).trim(), "");

    // --target plans only the target and what it depends on.
    let plan: serde_json::Value =
        serde_json::from_slice(&p.dbctl(&["plan", "--format", "json", "--target", "database.app"]).stdout).unwrap();
    let mut addrs: Vec<&str> =
        plan["resource_changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap()).collect();
    addrs.sort();
    assert_eq!(addrs, ["database.app", "server.main"]);
    p.ok(&["apply", "--auto-approve", "--target", "database.app"], 0);
    assert_eq!(p.ok(&["state", "list"], 0).trim(), "database.app\nserver.main");

    // A second apply while one holds the lock fails and names it...
    let first = spawn_apply(&p, &[]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("the state is locked by another dbctl"), "{out}");
    assert!(out.contains("\"operation\":\"apply\""), "{out}");
    // ...or waits for it with --lock-timeout, then runs.
    let second = spawn_apply(&p, &["--auto-approve", "--lock-timeout", "30s"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (rc, out) = answer(first, "no\n");
    assert_eq!(rc, Some(1), "{out}");
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
    p.converged();
}

#[test]
fn routes_publish_documents_and_a_removed_route_revokes_exactly_its_grants() {
    let p = Project::example("quickstart");
    p.apply();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("deploy/shop/databases.json")).unwrap()).unwrap();
    assert_eq!(doc["apps"]["orders"], "default", "the default route's database is the alias default");
    assert_eq!(doc["apps"]["catalog"], "catalog");
    assert_eq!(doc["databases"]["default"]["port"], p.port());
    assert_eq!(doc["databases"]["catalog"]["access"], "readonly");
    assert!(!doc.to_string().contains(&p.secret("secret.shop")));
    p.converged();

    // The catalog app becomes read-write: the plan shows the document as a diff.
    let main = std::fs::read_to_string(p.path().join("main.hcl")).unwrap();
    let readonly = "    database = database.catalog\n    access   = \"readonly\"\n";
    assert!(main.contains(readonly));
    p.write(&main.replace(readonly, "    database = database.catalog\n"));
    let plan = p.ok(&["plan"], 0);
    insta::with_settings!({ filters => vec![(r#""port": \d+"#, "\"port\": [PORT]")] }, {
        insta::assert_snapshot!("route_access_changed_plan", plan);
    });
    p.apply();
    p.converged();
    let pw = p.secret("secret.shop");
    p.sql("catalog", "CREATE TABLE items (id int)");
    p.psql_as("shop", Some(&pw), "catalog", "INSERT INTO items VALUES (1)").expect("readwrite now");

    // The catalog route goes away: exactly its grants are revoked.
    let without =
        main.replace("  route \"catalog\" {\n    database = database.catalog\n    access   = \"readonly\"\n  }\n", "");
    assert_ne!(without, main);
    p.write(&without);
    let plan = p.ok(&["plan", "--verbose"], 0);
    assert!(plan.contains("service \"shop\" app \"catalog\" loses access to database \"catalog\""), "{plan}");
    assert!(!plan.contains("REVOKE ALL"), "{plan}");
    p.apply();
    p.converged();
    let on_catalog = p.sql(
        "postgres",
        "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = 'catalog' AND a.grantee = 'shop'::regrole",
    );
    assert_eq!(on_catalog, "0");
    assert_eq!(
        p.sql(
            "catalog",
            "SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE a.grantee = 'shop'::regrole"
        ),
        "0"
    );
    let denied = p.psql_as("shop", Some(&pw), "catalog", "SELECT 1").unwrap_err();
    assert!(denied.contains("permission denied for database"), "{denied}");
    p.psql_as("shop", Some(&pw), "orders", "SELECT 1").expect("the orders route is untouched");
    let doc = std::fs::read_to_string(p.path().join("deploy/shop/databases.json")).unwrap();
    assert!(!doc.contains("\"catalog\""), "{doc}");

    // The same document can also go to a secret, which the router writes (not generates).
    let with_secret =
        without.replace("    format = \"json\"\n", "    format = \"json\"\n    secret = secret.routing\n");
    p.write(&format!("{with_secret}\nsecret \"routing\" {{}}\n"));
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("the routing document goes to secret.routing"), "{plan}");
    p.apply();
    p.converged();
    assert_eq!(p.secret_document("secret.routing"), doc);
}

#[test]
fn targets_are_checked_and_destroy_touches_only_what_it_targets() {
    let guarded = "database \"keep\" {\n  server = server.main\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n";
    let config = |keep: &str| {
        format!(
            "{SERVER}\ndatabase \"app\" {{\n  for_each = toset([\"a\", \"b\"])\n  server   = server.main\n}}\n\n\
             user \"svc\" {{\n  server = server.main\n  grant {{\n    database   = database.app[\"a\"]\n    \
             privileges = [\"CONNECT\"]\n  }}\n}}\n\n{keep}"
        )
    };
    let p = Project::new(&config(guarded));

    // A mistyped target is an error that names it, not "No changes"; nothing is reached.
    let out = p.ok(&["plan", "--target", "database.kepe"], 1);
    assert!(out.contains("--target database.kepe") && out.contains("did you mean `database.keep`?"), "{out}");
    assert!(!out.contains("No changes"), "{out}");
    p.ok(&["plan", "--target", "database.app[\"c\"]"], 1);

    // A for_each resource named without a key is all its instances.
    let plan: serde_json::Value =
        serde_json::from_slice(&p.dbctl(&["plan", "--format", "json", "--target", "database.app"]).stdout).unwrap();
    let mut addrs: Vec<&str> =
        plan["resource_changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap()).collect();
    addrs.sort();
    assert_eq!(addrs, ["database.app[\"a\"]", "database.app[\"b\"]", "server.main"]);
    p.apply();

    // destroy --target checks prevent_destroy only on what it destroys: the
    // instances and the grants that depend on them, never their server.
    let out = p.ok(&["destroy", "--auto-approve", "--target", "database.app"], 0);
    assert!(out.contains("user.svc.grant will be destroyed"), "{out}");
    assert!(out.contains("Resources: 0 added, 0 changed, 3 destroyed."), "{out}");
    assert!(!out.contains("server.main will"), "{out}");
    // The addresses on stdout (configuration warnings go to stderr).
    let left = common::text(&p.dbctl(&["state", "list"]).stdout);
    assert_eq!(left.trim(), "database.keep\nserver.main\nuser.svc", "{left}");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('a', 'b')"), "0");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'keep'"), "1");
    let out = p.ok(&["destroy", "--auto-approve", "--target", "database.keep"], 1);
    assert!(out.contains("database.keep has lifecycle.prevent_destroy"), "{out}");

    // A server is forgotten, not reported as destroyed: it is left as it is.
    p.write(&config("database \"keep\" {\n  server = server.main\n}\n"));
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("server.main will be forgotten"), "{out}");
    assert!(!out.contains("server.main will be destroyed"), "{out}");
    assert!(out.contains("Resources: 0 added, 0 changed, 2 destroyed, 1 forgotten."), "{out}");
    assert_eq!(common::text(&p.dbctl(&["state", "list"]).stdout).trim(), "");
}

#[test]
fn server_errors_keep_the_servers_words_and_never_the_statement() {
    // The server's message (and its detail and hint), without PostgreSQL's source line.
    let p = Project::new(&format!(
        "{SERVER}\ndatabase \"app\" {{\n  server     = server.main\n  extensions = [\"no_such_extension\"]\n}}\n"
    ));
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("no_such_extension.control\": No such file or directory"), "{out}");
    assert!(!out.contains(" at line "), "{out}");
    assert!(!out.contains("error returned from database"), "{out}");

    // A password-check hook's reason is kept; the password and the statement are not shown.
    // The server gets a SCRAM verifier, never the password: passwordcheck can still
    // tell that it was made from the user's own name (not its length).
    p.sql("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'passwordcheck'");
    p.ok(&["dev", "down"], 0);
    p.ok(&["dev", "up"], 0);
    p.write(&format!(
        "{SERVER}\nvariable \"pw\" {{\n  default   = \"svc\"\n  sensitive = true\n}}\n\n\
         secret \"pw\" {{\n  value = var.pw\n}}\n\nuser \"svc\" {{\n  server   = server.main\n  password = secret.pw\n}}\n"
    ));
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains("setting the password of role \"svc\" failed: password must not equal user name"), "{out}");
    assert!(!out.contains("SCRAM-SHA-256$"), "the statement is never shown: {out}");
}

#[test]
fn a_grant_on_a_schema_a_new_database_lacks_is_refused_at_plan() {
    let config = |schema: &str| {
        format!(
            "{SERVER}\ndatabase \"app\" {{\n  server = server.main\n}}\n\nuser \"svc\" {{\n  server = server.main\n  \
             grant {{\n    database   = database.app\n    schema     = \"{schema}\"\n    privileges = [\"USAGE\"]\n  }}\n}}\n"
        )
    };
    let p = Project::new(&config("sales"));
    for cmd in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = p.ok(cmd, 1);
        assert!(out.contains("user.svc: schema \"sales\" does not exist in database \"app\", which this plan creates"));
        assert!(out.contains("[main.hcl:13:18]"), "points at the grant\n{out}");
    }
    assert_eq!(p.ok(&["state", "list"], 0).trim(), "", "nothing was created");
    // The public schema every new database has is fine.
    p.write(&config("public"));
    p.apply();
    p.converged();
}

/// A plan starts reading the servers while the rest of its configuration
/// loads, and uses that read only where it is the read the plan would make:
/// what changed on the server meanwhile is seen; what a configuration asks to
/// read inside a database is read after it; a stopped embedded server is not
/// started by it.
#[test]
fn a_plan_reads_the_server_catalogs_while_the_configuration_loads() {
    let base = r#"
server "main" {
  engine   = "postgres"
  embedded = true
}
database "app" {
  server = server.main
}
user "u" {
  server = server.main
  grant {
    database   = database.app
    privileges = ["CONNECT"]
  }
}
"#;
    let p = Project::new(base);
    p.apply();
    let plan = |rc: i32| {
        let out = p.dbctl_env(&["plan", "--detailed-exitcode"], &[("DBCTL_LOG", "dbctl=debug")]);
        let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
        assert_eq!(out.status.code(), Some(rc), "{all}");
        all
    };
    const EARLY: &str = "read while the configuration loaded";

    let out = plan(0);
    assert!(out.contains(EARLY), "{out}");
    // A change on the server after the last apply: the early read is this plan's own read.
    p.sql("postgres", "REVOKE CONNECT ON DATABASE app FROM u");
    let out = plan(2);
    assert!(out.contains(EARLY), "{out}");
    assert!(out.contains("+ database \"app\" = [\"CONNECT\"]"), "{out}");
    p.apply();

    // Grants on tables are read inside the database: that read follows the early one.
    p.write(&base.replace(
        "privileges = [\"CONNECT\"]\n  }",
        "privileges = [\"CONNECT\"]\n  }\n  grant {\n    database   = database.app\n    schema     = \"public\"\n    tables     = \"*\"\n    privileges = [\"SELECT\"]\n  }",
    ));
    let out = plan(2);
    assert!(out.contains(EARLY), "{out}");
    assert!(out.contains("1 database(s) read inside after"), "{out}");
    assert!(out.contains("SELECT"), "{out}");
    p.apply();
    p.write(base);
    p.apply();

    // A stopped embedded server is not started by the early read: the plan starts it, and says so.
    p.ok(&["dev", "down"], 0);
    let out = plan(0);
    assert!(!out.contains(EARLY), "{out}");
    assert!(out.contains("started embedded server"), "{out}");
}
