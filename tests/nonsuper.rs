//! The PostgreSQL engine under an admin that is not a superuser: a `master`
//! login with CREATEROLE and CREATEDB only, what an RDS master user has.
//! Every plan is made, and every apply runs, as that login; the real
//! superuser only sets the scene and checks the effects.

mod common;

use common::{MasterServer, Project, URL_SERVER};

const APP: &str = r#"
role "app_owner" {
  server = server.main
}

secret "app" {}

user "app" {
  server    = server.main
  password  = secret.app
  member_of = [role.app_owner]
}

database "app" {
  server     = server.main
  owner      = role.app_owner
  extensions = ["pgcrypto"]
}

# No owner: dbctl's admin owns it.
database "plain" {
  server = server.main
}

secret "reader" {}

user "reader" {
  server           = server.main
  password         = secret.reader
  connection_limit = 4

  grant {
    database   = database.app
    privileges = ["CONNECT"]
  }
  grant {
    database   = database.app
    schema     = "public"
    privileges = ["USAGE"]
  }
  grant {
    database   = database.app
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }
}

secret "toolshed" {}

user "toolshed" {
  server   = server.main
  password = secret.toolshed
}

database "orders" {
  server = server.main
}

secret "shop" {}

user "shop" {
  server   = server.main
  password = secret.shop
}

router "shop" {
  user   = user.shop
  access = "readwrite"

  route "orders" {
    database = database.orders
  }
  publish {
    file   = "out/shop.json"
    format = "json"
  }
}

# The admin service: its user owns every database the shop routes.
router "toolshed" {
  user     = user.toolshed
  access   = "owner"
  migrates = [router.shop]

  route "orders" {
    database = database.orders
  }
}
"#;

fn project(m: &MasterServer, extra: &str) -> Project {
    let p = Project::new(&format!("{URL_SERVER}{APP}{extra}"));
    // Not the superuser: every later step runs as master.
    assert_eq!(m.sql("postgres", "SELECT rolsuper::text FROM pg_roles WHERE rolname = 'master'"), "false");
    p
}

fn plan(p: &Project, m: &MasterServer, rc: i32) -> String {
    p.ok_with_url(&m.master_url(), &["plan", "--verbose"], rc)
}

fn apply(p: &Project, m: &MasterServer) -> String {
    let out = p.ok_with_url(&m.master_url(), &["apply", "--auto-approve"], 0);
    assert!(!out.contains(&m.password), "the admin's password leaked:\n{out}");
    out
}

/// The next plan as master has nothing to do.
fn converged(p: &Project, m: &MasterServer) {
    let out = p.ok_with_url(&m.master_url(), &["plan", "--detailed-exitcode"], 0);
    assert!(out.contains("No changes. Live state matches the configuration."), "{out}");
}

#[test]
fn an_rds_like_admin_creates_owned_databases_grants_routes_removes_and_destroys() {
    let m = MasterServer::start();
    let p = project(&m, "");

    // The plan says which memberships the admin is given, before the steps that need them.
    let out = plan(&p, &m, 0);
    for line in [
        "GRANT \"app_owner\" TO \"master\"",
        "GRANT \"toolshed\" TO \"master\"",
        "dbctl's admin \"master\" is not a superuser: it is made a member of \"app_owner\" first, to create database \"app\" owned by \"app_owner\"",
    ] {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
    let grant_at = out.find("GRANT \"app_owner\" TO \"master\"").unwrap();
    let create_at = out.find("CREATE DATABASE \"app\" OWNER \"app_owner\"").unwrap();
    assert!(grant_at < create_at, "the membership comes first:\n{out}");

    apply(&p, &m);
    converged(&p, &m);
    let owners = m.sql("postgres", "SELECT string_agg(datname || '=' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database WHERE datname IN ('app', 'plain', 'orders')");
    assert_eq!(owners, "app=app_owner,orders=toolshed,plain=master");
    assert_eq!(m.sql("app", "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'"), "pgcrypto");
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains(&m.password), "the admin's password is in the state");

    // Default privileges: a table the owner creates later is readable by reader.
    m.sql("app", "SET ROLE app_owner; CREATE TABLE items (id int); INSERT INTO items VALUES (1)");
    let reader = p.secret("secret.reader");
    assert_eq!(m.psql_as("reader", Some(&reader), "app", "SELECT count(*) FROM items").unwrap(), "1");
    // The router's owner creates a table; the shop (readwrite) writes to it.
    let toolshed = p.secret("secret.toolshed");
    m.psql_as("toolshed", Some(&toolshed), "orders", "CREATE TABLE orders (id serial, n int)").unwrap();
    let shop = p.secret("secret.shop");
    m.psql_as("shop", Some(&shop), "orders", "INSERT INTO orders (n) VALUES (1)").unwrap();
    converged(&p, &m);

    // A table owned by another role, made outside dbctl: granting on all
    // tables needs that role's privileges, which the plan gives the admin.
    m.sql("postgres", "CREATE ROLE legacy_owner NOLOGIN");
    m.sql("app", "CREATE TABLE legacy (id int); ALTER TABLE legacy OWNER TO legacy_owner");
    let out = plan(&p, &m, 0);
    assert!(out.contains("GRANT \"legacy_owner\" TO \"master\""), "{out}");
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(m.psql_as("reader", Some(&reader), "app", "SELECT count(*) FROM legacy").unwrap(), "0");

    // Changes in place: connection limits, a new owner, an extension dropped.
    let changed = format!("{URL_SERVER}{APP}")
        .replace("connection_limit = 4", "connection_limit = 6")
        .replace("extensions = [\"pgcrypto\"]", "extensions = []")
        .replace(
            "database \"plain\" {\n  server = server.main\n",
            "database \"plain\" {\n  server = server.main\n  owner  = role.app_owner\n  connection_limit = 3\n",
        );
    p.write(&changed);
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(
        m.sql("postgres", "SELECT pg_get_userbyid(datdba) || datconnlimit FROM pg_database WHERE datname = 'plain'"),
        "app_owner3"
    );
    assert_eq!(m.sql("app", "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'"), "0");

    // Its configured owner removed, "plain" goes back to the admin (not to the
    // owner recorded when it was configured).
    p.write(&changed.replace("  owner  = role.app_owner\n  connection_limit = 3\n", "  connection_limit = 3\n"));
    let out = plan(&p, &m, 0);
    assert!(out.contains("ALTER DATABASE \"plain\" OWNER TO \"master\""), "{out}");
    apply(&p, &m);
    converged(&p, &m);
    p.write(&changed);
    apply(&p, &m);
    converged(&p, &m);

    // The reader goes: its grants are revoked and it is dropped, as master.
    let without_reader = {
        let start = changed.find("secret \"reader\"").unwrap();
        let end = changed.find("secret \"toolshed\"").unwrap();
        format!("{}{}", &changed[..start], &changed[end..])
    };
    p.write(&without_reader);
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'reader'"), "0");

    // The user that owns a table goes: its objects are reassigned, as master.
    m.psql_as("app", Some(&p.secret("secret.app")), "app", "CREATE TABLE mine (id int)").unwrap();
    let without_app = without_reader.replace("secret \"app\" {}\n", "").replace(
        "user \"app\" {\n  server    = server.main\n  password  = secret.app\n  member_of = [role.app_owner]\n}\n",
        "",
    );
    assert_ne!(without_app, without_reader);
    p.write(&without_app);
    let out = plan(&p, &m, 0);
    assert!(out.contains("REASSIGN OWNED BY \"app\""), "{out}");
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(m.sql("app", "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'mine'"), "app_owner");

    // Destroy, as master: every database and role dbctl made is gone.
    let out = p.ok_with_url(&m.master_url(), &["destroy", "--auto-approve"], 0);
    assert!(!out.contains(&m.password), "{out}");
    assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('app', 'plain', 'orders')"), "0");
    assert_eq!(
        m.sql("postgres", "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'"),
        "legacy_owner,master,postgres"
    );
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains("\"user.") && !state.contains("\"database."), "{state}");
}

#[test]
fn a_step_the_admin_cannot_run_fails_the_plan_before_anything_runs() {
    let m = MasterServer::start();
    for (extra, needs) in [
        (
            "secret \"repl\" {}\nuser \"repl\" {\n  server      = server.main\n  password    = secret.repl\n  replication = true\n}\n",
            "`CREATE ROLE \"repl\" WITH LOGIN REPLICATION` needs SUPERUSER, which dbctl's admin \"master\" does not have: REPLICATION: on PostgreSQL 15 only a superuser can give it (on RDS, make the user a member of rds_replication instead)",
        ),
        (
            "database \"stats\" {\n  server     = server.main\n  extensions = [\"pg_stat_statements\"]\n}\n",
            "extension \"pg_stat_statements\" is not trusted: only a superuser can create it",
        ),
        (
            "user \"rls\" {\n  server    = server.main\n  bypassrls = true\n}\n",
            "`CREATE ROLE \"rls\" WITH LOGIN BYPASSRLS` needs SUPERUSER",
        ),
    ] {
        let p = project(&m, extra);
        let before = m.sql("postgres", "SELECT count(*) FROM pg_roles");
        let out = plan(&p, &m, 1);
        assert!(out.contains(needs), "missing {needs:?}:\n{out}");
        assert!(out.contains("Nothing was applied"), "{out}");
        let out = p.ok_with_url(&m.master_url(), &["apply", "--auto-approve"], 1);
        assert!(out.contains(needs), "{out}");
        assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_roles"), before, "nothing ran:\n{out}");
        assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('app', 'plain', 'orders', 'stats')"), "0");
    }

    // A superuser, where the server allows one: only a superuser can make it.
    let allowing =
        URL_SERVER.replace("  engine = \"postgres\"\n", "  engine = \"postgres\"\n  allow_superuser = true\n");
    let p = Project::new(&format!("{allowing}user \"root\" {{\n  server    = server.main\n  superuser = true\n}}\n"));
    let out = plan(&p, &m, 1);
    assert!(
        out.contains(
            "`CREATE ROLE \"root\" WITH LOGIN SUPERUSER` needs SUPERUSER, which dbctl's admin \"master\" does not have"
        ),
        "{out}"
    );
    assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'root'"), "0");

    // An existing replication role cannot even get a new password from a non-superuser.
    m.sql("postgres", "CREATE ROLE streamer LOGIN REPLICATION");
    let p = Project::new(&format!("{URL_SERVER}secret \"s\" {{}}\nuser \"streamer\" {{\n  server   = server.main\n  password = secret.s\n  replication = true\n}}\n"));
    p.ok_with_url(&m.master_url(), &["import", "user.streamer", "streamer"], 0);
    let out = plan(&p, &m, 1);
    assert!(
        out.contains(
            "\"streamer\" has REPLICATION: on PostgreSQL 15 only a superuser can set the password of such a role"
        ),
        "{out}"
    );
}

#[test]
fn removing_a_user_that_owns_objects_where_the_admin_cannot_enter_is_refused_at_plan_time() {
    let m = MasterServer::start();
    let p = project(&m, "");
    apply(&p, &m);
    // A database dbctl does not manage, which master may not enter, holds a table of "shop".
    m.sql("postgres", "CREATE DATABASE other");
    m.sql("postgres", "REVOKE CONNECT, TEMPORARY ON DATABASE other FROM PUBLIC");
    m.sql("other", "CREATE TABLE kept (id int); ALTER TABLE kept OWNER TO shop");
    assert!(m.psql_as("master", Some(&m.password), "other", "SELECT 1").unwrap_err().contains("permission denied"));

    let without_shop = format!("{URL_SERVER}{APP}");
    let start = without_shop.find("secret \"shop\"").unwrap();
    let end = without_shop.find("# The admin service").unwrap();
    let without_shop = format!("{}{}", &without_shop[..start], &without_shop[end..])
        .replace("migrates = [router.shop]", "migrates = []");
    p.write(&without_shop);
    let out = plan(&p, &m, 1);
    assert!(
        out.contains("user.shop: `DROP ROLE \"shop\"` would fail: \"shop\" still owns objects or holds privileges in database(s) \"other\", which this plan does not clean up"),
        "{out}"
    );
    assert!(out.contains("REASSIGN OWNED BY \"shop\" TO <another role>; DROP OWNED BY \"shop\""), "{out}");
    p.ok_with_url(&m.master_url(), &["apply", "--auto-approve"], 1);
    assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'shop'"), "1", "nothing ran");
    assert!(p.path().join("out/shop.json").exists(), "nothing ran");

    // Its owner moves the table away: now the removal plans and applies.
    m.sql("other", "ALTER TABLE kept OWNER TO postgres");
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(m.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'shop'"), "0");
}

#[test]
fn the_default_owner_is_the_one_recorded_whoever_plans() {
    let m = MasterServer::start();
    // Grants on the tables of a database whose owner dbctl chose: default
    // privileges FOR ROLE that owner.
    let p = project(
        &m,
        "user \"analyst\" {\n  server = server.main\n  grant {\n    database   = database.plain\n    schema     = \"public\"\n    tables     = \"*\"\n    privileges = [\"SELECT\"]\n  }\n}\n",
    );
    apply(&p, &m);
    converged(&p, &m);
    // A CI login that can read the catalogs (and enter the managed databases) but change nothing.
    m.sql("postgres", "CREATE ROLE ci_reader LOGIN PASSWORD 'ci-pass'");
    for db in ["app", "plain", "orders"] {
        m.sql("postgres", &format!("GRANT CONNECT ON DATABASE {db} TO ci_reader"));
    }
    let out = p.ok_with_url(&m.url("ci_reader", "ci-pass"), &["plan", "--detailed-exitcode"], 0);
    assert!(out.contains("No changes."), "{out}");
    assert!(!out.contains("ci_reader"), "{out}");

    // A change the CI login could not run itself is still planned for review
    // (exit 2), with a warning; the plan is what the admin will apply.
    let cfg = std::fs::read_to_string(p.path().join("main.hcl")).unwrap();
    std::fs::write(p.path().join("main.hcl"), format!("{cfg}\nrole \"auditors\" {{\n  server = server.main\n}}\n"))
        .unwrap();
    let out = p.ok_with_url(&m.url("ci_reader", "ci-pass"), &["plan", "--detailed-exitcode"], 2);
    assert!(out.contains("CREATE ROLE \"auditors\""), "{out}");
    assert!(out.contains("planned as ci_reader") && out.contains("could not apply it"), "{out}");
    let as_master = plan(&p, &m, 0);
    assert!(!as_master.contains("could not apply it"), "{as_master}");
    apply(&p, &m);
    converged(&p, &m);
}

/// The examples, each served by an RDS-like admin: apply, a clean plan, and
/// (where nothing prevents it) destroy.
#[test]
fn the_examples_apply_converge_and_destroy_under_an_rds_like_admin() {
    let m = MasterServer::start();
    for (name, destroy) in [("quickstart", true), ("django", true), ("platform", false)] {
        let p = Project::example(name);
        let mut found = false;
        for e in std::fs::read_dir(p.path()).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let embedded = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n";
            if text.contains(embedded) {
                std::fs::write(&path, text.replace(embedded, URL_SERVER)).unwrap();
                found = true;
            }
        }
        assert!(found, "{name}: no embedded server block to replace");
        apply(&p, &m);
        converged(&p, &m);
        if destroy {
            p.ok_with_url(&m.master_url(), &["destroy", "--auto-approve"], 0);
            let left = m.sql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')",
            );
            assert_eq!(left, "0", "{name}: destroy left databases");
        }
    }
}

/// Renames and a replacement, as master: the membership it was given when
/// the database was created carries over the rename of its owner.
#[test]
fn renames_and_a_replacement_run_under_an_rds_like_admin() {
    let m = MasterServer::start();
    let cfg = |role: &str, db: &str, encoding: &str| {
        format!(
            "{URL_SERVER}role \"owners\" {{\n  server = server.main\n  name   = \"{role}\"\n}}\n\
             database \"main\" {{\n  server   = server.main\n  name     = \"{db}\"\n  owner    = role.owners\n  encoding = \"{encoding}\"\n}}\n\
             user \"reader\" {{\n  server = server.main\n  grant {{\n    database   = database.main\n    privileges = [\"CONNECT\"]\n  }}\n}}\n"
        )
    };
    let p = Project::new(&cfg("owners_a", "db_a", "UTF8"));
    apply(&p, &m);
    converged(&p, &m);
    p.write(&cfg("owners_b", "db_b", "UTF8"));
    let out = plan(&p, &m, 0);
    assert!(out.contains("ALTER ROLE \"owners_a\" RENAME TO \"owners_b\""), "{out}");
    assert!(out.contains("ALTER DATABASE \"db_a\" RENAME TO \"db_b\""), "{out}");
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(m.sql("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'db_b'"), "owners_b");

    // Another encoding replaces the database: dropped and created again, as master.
    p.write(&cfg("owners_b", "db_b", "LATIN1"));
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(
        m.sql("postgres", "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'db_b'"),
        "LATIN1"
    );
    assert_eq!(m.sql("postgres", "SELECT has_database_privilege('reader', 'db_b', 'CONNECT')::text"), "true");

    // A database made by the superuser, owned by a role master is no member of,
    // adopted: changing it needs the membership, which the plan gives.
    m.sql("postgres", "CREATE ROLE outsider NOLOGIN");
    m.sql("postgres", "CREATE DATABASE adopted OWNER outsider");
    let with_adopted = format!(
        "{}database \"adopted\" {{\n  server           = server.main\n  owner            = role.owners\n  connection_limit = 9\n}}\n",
        cfg("owners_b", "db_b", "LATIN1")
    );
    p.write(&with_adopted);
    p.ok_with_url(&m.master_url(), &["import", "database.adopted", "adopted"], 0);
    let out = plan(&p, &m, 0);
    assert!(out.contains("GRANT \"outsider\" TO \"master\""), "{out}");
    apply(&p, &m);
    converged(&p, &m);
    assert_eq!(
        m.sql("postgres", "SELECT pg_get_userbyid(datdba) || datconnlimit FROM pg_database WHERE datname = 'adopted'"),
        "owners_b9"
    );
}
