//! Plans that are right the first time and never lose data or access by
//! accident, end to end against real servers each test starts itself.

mod common;

use common::{steps, Project, SERVER};

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
