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
