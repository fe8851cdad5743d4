//! Plans that are right the first time and never lose data or access by
//! accident, end to end against real servers each test starts itself.

mod common;

use common::{steps, text, Project, SERVER};

/// A database owned through a router's owner route, and one owned with
/// `owner = user.x`, both declared before their owners: the owners are
/// created first, so the very first apply succeeds.
#[test]
fn owners_created_in_the_same_apply_exist_before_their_databases() {
    let p = Project::new(&format!(
        r#"{SERVER}
database "routed" {{
  server = server.main
}}
database "owned" {{
  server = server.main
  owner  = user.owner
}}
router "svc" {{
  user   = user.svc
  access = "owner"
  route "app" {{ database = database.routed }}
}}
user "svc" {{
  server = server.main
}}
user "owner" {{
  server = server.main
}}
"#
    ));
    let s = steps(&p.plan_json());
    let pos = |needle: &str| s.iter().position(|x| x.starts_with(needle)).unwrap_or_else(|| panic!("{needle}: {s:?}"));
    assert!(pos("CREATE ROLE \"svc\"") < pos("CREATE DATABASE \"routed\""), "{s:?}");
    assert!(pos("CREATE ROLE \"owner\"") < pos("CREATE DATABASE \"owned\""), "{s:?}");
    p.apply();
    p.converged();
    assert_eq!(
        p.sql("postgres", "SELECT string_agg(datname || '=' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database WHERE datname IN ('routed', 'owned')"),
        "owned=owner,routed=svc"
    );
}

/// Removing a user cleans up only in the databases dbctl manages, says so,
/// and a database that refuses connections (not managed) never blocks it.
#[test]
fn a_departed_user_is_dropped_even_when_a_database_refuses_connections() {
    let base = format!(
        r#"{SERVER}
database "app" {{
  server = server.main
}}
"#
    );
    let with_user = format!(
        r#"{base}
user "gone" {{
  server = server.main
  grant {{
    database   = database.app
    privileges = ["CONNECT"]
  }}
}}
"#
    );
    let p = Project::new(&with_user);
    p.apply();
    p.sql("app", "CREATE TABLE t (x int); ALTER TABLE t OWNER TO gone");
    p.sql("postgres", "CREATE DATABASE locked");
    p.sql("postgres", "ALTER DATABASE locked WITH ALLOW_CONNECTIONS false");

    p.write(&base);
    let out = p.ok(&["plan"], 0);
    assert!(
        out.contains("what it owns is reassigned, and its privileges dropped, in the databases dbctl manages: \"app\""),
        "{out}"
    );
    let s = steps(&p.plan_json());
    assert!(!s.iter().any(|x| x.contains("locked") || x.contains("in database postgres")), "{s:?}");
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'gone'"), "0");
    assert_eq!(p.sql("app", "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't'"), "postgres");
}

/// Every spelling of an encoding that `pg_encoding` knows is the one the
/// server itself resolves it to.
#[test]
fn encoding_spellings_match_the_server_and_converge() {
    let spellings = [
        "utf8",
        "UTF-8",
        "utf_8",
        "Unicode",
        "sql_ascii",
        "SQL-ASCII",
        "latin1",
        "ISO-8859-1",
        "iso8859_1",
        "latin2",
        "iso88592",
        "latin3",
        "iso-8859-3",
        "latin4",
        "iso8859-4",
        "latin5",
        "iso-8859-9",
        "latin6",
        "ISO_8859_10",
        "latin7",
        "iso885913",
        "latin8",
        "iso885914",
        "latin9",
        "iso-8859-15",
        "latin10",
        "iso885916",
        "iso_8859_5",
        "iso88596",
        "ISO-8859-7",
        "iso88598",
        "koi8",
        "KOI8-R",
        "koi8u",
        "alt",
        "win866",
        "windows-866",
        "win874",
        "windows874",
        "win",
        "win1250",
        "windows-1250",
        "win1251",
        "win1252",
        "Windows-1252",
        "win1253",
        "win1254",
        "win1255",
        "win1256",
        "win1257",
        "win1258",
        "abc",
        "tcvn",
        "tcvn5712",
        "vscii",
        "windows-1258",
        "euc_jp",
        "EUC-CN",
        "euckr",
        "euc_tw",
        "euc_jis_2004",
        "mule_internal",
    ];
    let p = Project::new(&format!(
        r#"{SERVER}
database "app" {{
  server   = server.main
  encoding = "utf8"
}}
database "other" {{
  server    = server.main
  encoding  = "iso-8859-1"
  collation = "C"
}}
"#
    ));
    p.apply();
    p.converged();
    assert_eq!(
        p.sql("postgres", "SELECT string_agg(pg_encoding_to_char(encoding), ',' ORDER BY datname) FROM pg_database WHERE datname IN ('app', 'other')"),
        "UTF8,LATIN1"
    );
    for s in spellings {
        let server = p.sql("postgres", &format!("SELECT pg_encoding_to_char(pg_char_to_encoding('{s}'))"));
        assert_eq!(dbctl::engine::postgres::pg_encoding(s), Some(server.as_str()), "{s}");
    }
    assert_eq!(dbctl::engine::postgres::pg_encoding("no-such-encoding"), None);

    // An encoding the server would refuse (unknown, or client-only) stops the plan, before anything runs.
    for bad in ["klingon", "SJIS"] {
        p.write(&format!("{SERVER}\ndatabase \"x\" {{\n  server   = server.main\n  encoding = \"{bad}\"\n}}\n"));
        let out = p.ok(&["plan"], 1);
        assert!(
            out.contains(&format!("database.x: encoding \"{bad}\" is not a PostgreSQL database encoding")),
            "{out}"
        );
    }
}

/// A plan that drops a database holding tables says so first, and apply
/// refuses it under --auto-approve (no terminal) until --allow-data-loss.
#[test]
fn dropping_a_database_that_holds_tables_needs_allow_data_loss() {
    let v1 = format!(
        r#"{SERVER}
database "app" {{
  server   = server.main
  encoding = "UTF8"
}}
database "old" {{
  server = server.main
}}
database "empty" {{
  server = server.main
}}
"#
    );
    let p = Project::new(&v1);
    p.apply();
    p.sql("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    p.sql("old", "CREATE TABLE a (x int); CREATE SCHEMA s; CREATE TABLE s.b (x int)");

    // The encoding changes (a replace) and "old" and "empty" go away.
    let v2 = format!(
        r#"{SERVER}
database "app" {{
  server    = server.main
  encoding  = "LATIN1"
  collation = "C"
}}
"#
    );
    p.write(&v2);
    let out = p.ok(&["plan"], 0);
    assert!(
        out.starts_with(
            "Warning: this plan drops databases that hold data, and their data is lost:\n\n  \
             # database.old drops database \"old\", which holds 2 tables\n  \
             # database.app drops database \"app\", which holds 1 table\n"
        ),
        "{out}"
    );
    assert!(!out.contains("drops database \"empty\""), "{out}");
    let md = p.ok(&["plan", "--format", "markdown"], 0);
    assert!(md.contains("- database.old drops database \"old\", which holds 2 tables"), "{md}");
    let json = p.plan_json();
    assert_eq!(
        json["data_loss"],
        serde_json::json!([
            { "address": "database.old", "database": "old", "tables": 2 },
            { "address": "database.app", "database": "app", "tables": 1 },
        ])
    );

    let out = p.dbctl(&["apply", "--auto-approve"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("Nothing was applied. Run again with --allow-data-loss"), "{all}");
    assert_eq!(p.sql("app", "SELECT count(*) FROM t"), "1");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('old', 'empty')"), "2");

    // A saved plan is held to the same rule.
    let saved = p.path().join("saved.plan");
    p.ok(&["plan", "--out", saved.to_str().unwrap()], 0);
    let out = p.dbctl(&["apply", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(p.sql("app", "SELECT count(*) FROM t"), "1");

    // At a terminal, --auto-approve still asks: "no" applies nothing.
    let (rc, out) = at_terminal(&p, "apply --auto-approve", "no\n");
    assert_eq!(rc, Some(1), "{out}");
    assert!(out.contains("Do you want to drop them and lose their data?") && out.contains("Apply cancelled."), "{out}");
    assert_eq!(p.sql("app", "SELECT count(*) FROM t"), "1");

    let out = p.ok(&["apply", "--auto-approve", "--allow-data-loss"], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    p.converged();
    assert_eq!(
        p.sql("app", "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"),
        "LATIN1"
    );
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('old', 'empty')"), "0");
}

/// Changing `name` renames: the old login is gone (not left alive and
/// forgotten), the new one logs in with the same password, keeps its grants,
/// and the database keeps its data.
#[test]
fn changing_name_renames_the_user_and_the_database() {
    let v1 = format!(
        r#"{SERVER}
secret "app" {{}}
role "readers" {{
  server = server.main
}}
user "app" {{
  server   = server.main
  password = secret.app
  member_of = [role.readers]
  grant {{
    database   = database.app
    privileges = ["CONNECT"]
  }}
  grant {{
    database   = database.app
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }}
  grant {{
    database   = database.app
    schema     = "public"
    privileges = ["USAGE"]
  }}
}}
database "app" {{
  server = server.main
}}
database "owned" {{
  server = server.main
  owner  = user.app
}}
"#
    );
    let p = Project::new(&v1);
    p.apply();
    p.sql("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (42)");
    let pw = p.secret("secret.app");
    assert_eq!(p.psql_as("app", Some(&pw), "app", "SELECT x FROM t").unwrap(), "42");

    let v2 = v1
        .replace(
            "user \"app\" {\n  server   = server.main",
            "user \"app\" {\n  name     = \"app_v2\"\n  server   = server.main",
        )
        .replace(
            "database \"app\" {\n  server = server.main",
            "database \"app\" {\n  name   = \"app_db\"\n  server = server.main",
        )
        .replace("role \"readers\" {\n", "role \"readers\" {\n  name   = \"readers_v2\"\n");
    assert_ne!(v1, v2);
    p.write(&v2);
    let out = p.ok(&["plan"], 0);
    assert!(!out.contains("outside of dbctl") && !out.contains("holds"), "{out}");
    assert!(out.contains("renamed from \"app\""), "{out}");
    let s = steps(&p.plan_json());
    // The password is set again: a rename clears an MD5 one (dbctl's SCRAM one survives).
    assert_eq!(
        s,
        [
            "ALTER ROLE \"readers\" RENAME TO \"readers_v2\"",
            "ALTER ROLE \"app\" RENAME TO \"app_v2\"",
            "ALTER ROLE \"app_v2\" PASSWORD (sensitive)",
            "ALTER DATABASE \"app\" RENAME TO \"app_db\"",
        ]
    );
    p.apply();
    p.converged();

    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'app'"), "0");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'app'"), "0");
    assert_eq!(p.psql_as("app_v2", Some(&pw), "app_db", "SELECT x FROM t").unwrap(), "42");
    assert!(p.psql_as("app", Some(&pw), "app_db", "SELECT 1").is_err());
    assert_eq!(
        p.sql("postgres", "SELECT pg_get_userbyid(datdba) || ' ' || pg_has_role('app_v2', 'readers_v2', 'MEMBER') FROM pg_database WHERE datname = 'owned'"),
        "app_v2 true"
    );
    assert_eq!(
        p.sql("postgres", "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app_v2'"),
        "t"
    );
}

/// Run dbctl with a terminal as its stdin (through `script`), typing `input`.
fn at_terminal(p: &Project, args: &str, input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let cmd = format!("{} --no-color -C {} {args}", env!("CARGO_BIN_EXE_dbctl"), p.path().display());
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

/// Users removed and databases renamed in one apply: the rename runs after
/// the departed users' REASSIGN OWNED inside those databases, whose session
/// dbctl must have closed first.
#[test]
fn removing_users_and_renaming_their_databases_in_one_apply() {
    let gen = |n: usize, suffix: &str| {
        let mut s = SERVER.to_string();
        for i in 0..n {
            s.push_str(&format!(
                "\nsecret \"s{i}\" {{\n}}\n\nuser \"u{i}\" {{\n  server   = server.main\n  name     = \"u{i}{suffix}\"\n  password = secret.s{i}\n  grant {{\n    database   = database.d{i}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n\ndatabase \"d{i}\" {{\n  server = server.main\n  name   = \"d{i}{suffix}\"\n}}\n"
            ));
        }
        s
    };
    let p = Project::new(&gen(5, "x"));
    p.apply();
    p.write(&gen(3, ""));
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(out.contains("RENAME TO \"d2\""), "{out}");
    p.converged();
    assert_eq!(
        p.sql("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname ~ '^d'"),
        "d0,d1,d2"
    );
}

/// A `DROP DATABASE` whose client was killed leaves the database invalid
/// (PostgreSQL 15.4+): it cannot be entered, so its tables cannot be
/// counted, but it holds nothing anyone can read. The rerun drops it without
/// asking for --allow-data-loss.
#[test]
fn a_database_left_invalid_by_a_killed_drop_is_dropped_on_the_rerun() {
    let two = format!("{SERVER}\ndatabase \"keep\" {{\n  server = server.main\n}}\n\ndatabase \"gone\" {{\n  server = server.main\n}}\n");
    let p = Project::new(&two);
    p.apply();
    p.sql("gone", "CREATE TABLE t (id int)");
    // What the killed DROP DATABASE leaves behind.
    p.sql("postgres", "UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'gone'");
    p.write(&format!("{SERVER}\ndatabase \"keep\" {{\n  server = server.main\n}}\n"));
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(!out.contains("hold data"), "{out}");
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'gone'"), "0");
}
