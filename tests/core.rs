//! The core (configuration → diff → plan) against a fake engine: no server,
//! no I/O. A [`Fake`] holds a hand-made `dbctl::engine::LiveServer` and
//! "applies" a plan by giving each changed object the attributes the plan
//! says it will have (`after`), and records the state as `dbctl apply`
//! does. The real engines' statements are checked against real servers in
//! tests/conformance.rs; here the diff's planning is checked on its own: a
//! create converges, a change is a delta, drift is found, destroy empties
//! the state, unmanaged objects are left alone, and names are quoted for
//! the engine.
//!
//! `--target` is resolved in `src/commands/session.rs` (`resolve_targets`,
//! `target_closure`), which are private: the diff only learns the closure
//! (`Inputs::keep`) and the caller drops the other changes. Here: the diff's
//! part of a targeted destroy, and an unknown target (refused before any
//! server is reached, through the binary). The closure itself is checked
//! on real servers in tests/conformance.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dbctl::config::{load, LoadOptions};
use dbctl::diff::{diff, Diffed, Inputs};
use dbctl::engine::{LiveDatabase, LiveRole, LiveServer};
use dbctl::model::{Address, Config, Kind};
use dbctl::plan::{Action, ResourceChange};
use dbctl::secrets::SecretMeta;
use dbctl::state::{State, StateResource};
use serde_json::Value;

/// One engine as the fake sees it.
#[derive(Clone, Copy)]
struct Kindly {
    engine: &'static str,
    url: &'static str,
    version: &'static str,
    admin: &'static str,
    encoding: &'static str,
    collation: &'static str,
    /// Database-level privileges: a first set and a second one.
    privs: (&'static [&'static str], &'static [&'static str]),
    /// How a plan quotes a database name in `CREATE DATABASE`.
    quote: fn(&str) -> String,
}

const POSTGRES: Kindly = Kindly {
    engine: "postgres",
    url: "postgres://admin@db.invalid/postgres",
    version: "16.4",
    admin: "postgres",
    encoding: "UTF8",
    collation: "C.UTF-8",
    privs: (&["CONNECT", "TEMPORARY"], &["CONNECT", "CREATE"]),
    quote: |s| format!("\"{}\"", s.replace('"', "\"\"")),
};

const MYSQL: Kindly = Kindly {
    engine: "mysql",
    url: "mysql://root@db.invalid/",
    version: "10.11.6-MariaDB",
    admin: "root",
    encoding: "utf8mb4",
    collation: "utf8mb4_general_ci",
    privs: (&["INSERT", "SELECT"], &["SELECT", "UPDATE"]),
    quote: |s| format!("`{}`", s.replace('`', "``")),
};

fn server() -> Address {
    Address::new(Kind::Server, "main")
}

fn list(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", q.join(", "))
}

/// A configuration: a database, a group role granted on it, a user with a
/// password from a secret, member of the role, granted `privs`.
fn hcl(k: Kindly, db: &str, user: &str, limit: i64, privs: &[&str]) -> String {
    let db = dbctl::model::escape_hcl_string(db);
    let user = dbctl::model::escape_hcl_string(user);
    format!(
        r#"server "main" {{
  engine = "{engine}"
  url    = "{url}"
}}

secret "app" {{}}

database "shop" {{
  server = server.main
  name   = "{db}"
}}

role "readers" {{
  server = server.main
  grant {{
    database   = database.shop
    privileges = {first}
  }}
}}

user "app" {{
  server           = server.main
  name             = "{user}"
  password         = secret.app
  member_of        = [role.readers]
  connection_limit = {limit}
  grant {{
    database   = database.shop
    privileges = {privs}
  }}
}}
"#,
        engine = k.engine,
        url = k.url,
        first = list(&k.privs.0[..1]),
        privs = list(privs),
    )
}

fn config(dir: &Path, text: &str) -> Config {
    std::fs::write(dir.join("main.hcl"), text).unwrap();
    let loaded = load(&LoadOptions { dir: dir.to_path_buf(), ..Default::default() });
    let errors: Vec<String> = loaded.diags.0.iter().map(|d| format!("{d:?}")).collect();
    loaded.config.unwrap_or_else(|| panic!("configuration does not load: {errors:?}"))
}

/// A server of one engine, in memory.
struct Fake {
    k: Kindly,
    live: LiveServer,
    state: State,
    secrets: BTreeMap<Address, SecretMeta>,
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
}

impl Fake {
    fn new(k: Kindly) -> Fake {
        let mut live =
            LiveServer { exists: true, version: k.version.into(), admin: k.admin.into(), ..Default::default() };
        live.roles.insert(
            k.admin.into(),
            LiveRole { login: true, superuser: true, connection_limit: -1, ..Default::default() },
        );
        Fake { k, live, state: State::new(), secrets: BTreeMap::new() }
    }

    fn plan(&self, cfg: &Config, destroy: bool) -> Diffed {
        self.plan_keeping(cfg, destroy, None)
    }

    /// A plan as `--target` makes it: `keep` is the targets' closure.
    fn plan_keeping(&self, cfg: &Config, destroy: bool, keep: Option<&BTreeSet<String>>) -> Diffed {
        let live = BTreeMap::from([(server(), self.live.clone())]);
        let hosts = BTreeMap::from([(server(), ("db.invalid".to_string(), 5432))]);
        diff(&Inputs {
            config: cfg,
            live: &live,
            state: &self.state,
            secrets: &self.secrets,
            rds: &BTreeMap::new(),
            now: time::OffsetDateTime::now_utc(),
            hosts: &hosts,
            published: &BTreeMap::new(),
            backups: &BTreeMap::new(),
            migrations: &BTreeMap::new(),
            destroy,
            force: false,
            replace: &BTreeSet::new(),
            keep,
        })
        .unwrap_or_else(|e| panic!("the diff refused: {e:?}"))
    }

    /// What the engine's statements would leave behind, and the state apply records.
    fn apply(&mut self, changes: &[ResourceChange]) {
        for c in changes.iter().filter(|c| c.action != Action::NoOp) {
            let after = c.after.clone().unwrap_or(Value::Null);
            let before = c.before.clone().unwrap_or(Value::Null);
            let gone = c.action == Action::Delete;
            match c.kind.as_str() {
                "secret" if gone => {
                    self.secrets.remove(&Address::parse(&c.address).unwrap());
                }
                "secret" => {
                    let meta = SecretMeta {
                        version: "v1".into(),
                        created: "2026-01-01T00:00:00Z".into(),
                        pending: false,
                        rotation: None,
                        value_hash: String::new(),
                    };
                    self.secrets.insert(Address::parse(&c.address).unwrap(), meta);
                }
                "database" => {
                    if let Some(old) = before["name"].as_str() {
                        if gone || c.action == Action::Replace {
                            self.live.databases.remove(old);
                        }
                    }
                    if !gone {
                        let name = after["name"].as_str().unwrap().to_string();
                        let kept = self.live.databases.remove(&name).unwrap_or_default();
                        let text = |key: &str, default: &str| after[key].as_str().unwrap_or(default).to_string();
                        self.live.databases.insert(
                            name,
                            LiveDatabase {
                                owner: text("owner", self.k.admin),
                                encoding: text("encoding", self.k.encoding),
                                collation: text("collation", self.k.collation),
                                connection_limit: after["connection_limit"].as_i64().unwrap_or(-1),
                                ..kept
                            },
                        );
                    }
                }
                "user" | "role" => {
                    if let Some(old) = before["name"].as_str() {
                        self.live.roles.remove(old);
                    }
                    if !gone {
                        self.live.roles.insert(
                            after["name"].as_str().unwrap().to_string(),
                            LiveRole {
                                login: after["login"].as_bool().unwrap(),
                                connection_limit: after["connection_limit"].as_i64().unwrap(),
                                member_of: strings(&after["member_of"]),
                                host: after["host"].as_str().unwrap_or_default().to_string(),
                                ..Default::default()
                            },
                        );
                    }
                }
                "grant" => {
                    for (v, keep) in [(&before, false), (&after, true)] {
                        let grantee = v["grantee"].as_str().unwrap_or_default();
                        for g in v["grants"].as_array().into_iter().flatten() {
                            assert_eq!(g["on"], "database", "the fake grants on databases only");
                            let Some(db) = self.live.databases.get_mut(g["database"].as_str().unwrap()) else {
                                continue;
                            };
                            if keep && !gone {
                                db.privileges.insert(grantee.to_string(), strings(&g["privileges"]));
                            } else {
                                db.privileges.remove(grantee);
                            }
                        }
                    }
                }
                "server" => {}
                other => panic!("the fake does not apply {other}"),
            }
            if gone {
                self.state.resources.remove(&c.address);
            } else {
                let password_version = (c.kind == "user").then(|| "v1".to_string());
                self.state.resources.insert(
                    c.address.clone(),
                    StateResource {
                        kind: c.kind.clone(),
                        server: c.server.clone(),
                        name: c.name.clone(),
                        attributes: after,
                        password_version,
                        pending: false,
                    },
                );
            }
        }
        self.state.serial += 1;
    }
}

fn changed(d: &Diffed) -> Vec<(String, Action)> {
    d.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| (c.address.clone(), c.action.clone())).collect()
}

fn statements(d: &Diffed) -> Vec<String> {
    d.changes.iter().flat_map(|c| c.steps.iter().map(|s| s.describe())).collect()
}

fn assert_converged(f: &Fake, cfg: &Config) {
    let d = f.plan(cfg, false);
    assert_eq!(changed(&d), [], "expected no changes: {:?}", statements(&d));
    assert!(d.drift.is_empty(), "{:?}", d.drift);
}

fn create_converge_change_drift_destroy(k: Kindly) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fake::new(k);
    let cfg = config(dir.path(), &hcl(k, "shop", "app", 5, k.privs.0));

    // From nothing: every object is created, in dependency order.
    let d = f.plan(&cfg, false);
    let created: Vec<&str> =
        d.changes.iter().filter(|c| c.action == Action::Create).map(|c| c.address.as_str()).collect();
    for a in ["secret.app", "database.shop", "role.readers", "role.readers.grant", "user.app", "user.app.grant"] {
        assert!(created.contains(&a), "{a} not created: {created:?}");
    }
    let pos = |a: &str| created.iter().position(|x| *x == a).unwrap();
    assert!(pos("secret.app") < pos("user.app"), "{created:?}");
    assert!(pos("role.readers") < pos("user.app"), "{created:?}");
    assert!(pos("database.shop") < pos("user.app.grant"), "{created:?}");
    let create = format!("CREATE DATABASE {}", (k.quote)("shop"));
    assert!(
        statements(&d).iter().any(|s| s == &create || s.starts_with(&format!("{create} "))),
        "{:?}",
        statements(&d)
    );
    assert!(!statements(&d).iter().any(|s| s.contains("REVOKE ALL")), "{:?}", statements(&d));
    f.apply(&d.changes);
    assert_converged(&f, &cfg);

    // A change is a delta: one statement per changed attribute and privilege.
    let cfg = config(dir.path(), &hcl(k, "shop", "app", 7, k.privs.1));
    let d = f.plan(&cfg, false);
    assert_eq!(
        changed(&d),
        [("user.app".to_string(), Action::Update), ("user.app.grant".to_string(), Action::Update)],
        "{:?}",
        statements(&d)
    );
    let s = statements(&d);
    let added: Vec<&&str> = k.privs.1.iter().filter(|p| !k.privs.0.contains(p)).collect();
    let removed: Vec<&&str> = k.privs.0.iter().filter(|p| !k.privs.1.contains(p)).collect();
    assert_eq!(s.iter().filter(|x| x.starts_with("GRANT ")).count(), 1, "{s:?}");
    assert_eq!(s.iter().filter(|x| x.starts_with("REVOKE ")).count(), 1, "{s:?}");
    assert!(s.iter().any(|x| x.starts_with(&format!("GRANT {} ", added[0]))), "{s:?}");
    assert!(s.iter().any(|x| x.starts_with(&format!("REVOKE {} ", removed[0]))), "{s:?}");
    assert!(s.iter().any(|x| x.contains('7')), "the new connection limit: {s:?}");
    f.apply(&d.changes);
    assert_converged(&f, &cfg);

    // Drift: a changed live object is reported against the state, and planned back.
    f.live.roles.get_mut("app").unwrap().connection_limit = 99;
    let d = f.plan(&cfg, false);
    assert_eq!(d.drift.len(), 1, "{:?}", d.drift);
    assert_eq!((d.drift[0].address.as_str(), d.drift[0].attribute.as_str()), ("user.app", "connection_limit"));
    assert_eq!(changed(&d), [("user.app".to_string(), Action::Update)]);
    f.apply(&d.changes);
    assert_eq!(f.live.roles["app"].connection_limit, 7);
    assert_converged(&f, &cfg);

    // Unmanaged objects (on the server, not in the state or configuration) are never touched.
    f.live.databases.insert("unmanaged".into(), LiveDatabase { owner: k.admin.into(), ..Default::default() });
    f.live.roles.insert("stranger".into(), LiveRole { login: true, connection_limit: -1, ..Default::default() });
    assert_converged(&f, &cfg);

    // Destroy: everything managed is deleted, secrets too; the state keeps nothing but the server.
    let d = f.plan(&cfg, true);
    let deleted: BTreeSet<String> =
        d.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.clone()).collect();
    for a in ["database.shop", "role.readers", "user.app"] {
        assert!(deleted.contains(a), "{a} not deleted: {deleted:?}");
    }
    assert!(!statements(&d).iter().any(|s| s.contains("unmanaged") || s.contains("stranger")), "{:?}", statements(&d));
    f.apply(&d.changes);
    let left: Vec<&String> = f.state.resources.keys().filter(|a| !a.starts_with("server.")).collect();
    assert!(left.is_empty(), "the state still holds {left:?}");
    assert!(f.live.databases.contains_key("unmanaged") && f.live.roles.contains_key("stranger"));
    assert!(!f.live.databases.contains_key("shop") && !f.live.roles.contains_key("app"));
}

fn hostile_names_are_quoted(k: Kindly) {
    let dir = tempfile::tempdir().unwrap();
    let (db, user) = ("we`ird\"; DROP DATABASE x; -- ü", "o'k; `x` \"y\" データ");
    let cfg = config(dir.path(), &hcl(k, db, user, 5, k.privs.0));
    let mut f = Fake::new(k);
    let d = f.plan(&cfg, false);
    let s = statements(&d);
    let create = format!("CREATE DATABASE {}", (k.quote)(db));
    assert!(s.iter().any(|x| x == &create || x.starts_with(&format!("{create} "))), "{s:?}");
    // Every statement that names the user quotes it whole: no bare fragment of it.
    for x in &s {
        assert!(!x.contains("DROP DATABASE x;") || x.contains(&(k.quote)(db)), "unquoted: {x}");
    }
    f.apply(&d.changes);
    assert!(f.live.roles.contains_key(user) && f.live.databases.contains_key(db));
    assert_converged(&f, &cfg);
    let d = f.plan(&cfg, true);
    assert!(statements(&d).contains(&format!("DROP DATABASE {}", (k.quote)(db))), "{:?}", statements(&d));
}

/// A targeted destroy of a PostgreSQL user cleans up (REASSIGN/DROP OWNED)
/// in the databases it does not drop; a whole destroy, which drops them,
/// does not. (A targeted destroy once skipped the clean-up as if every
/// managed database were dropped, and the plan was refused.)
#[test]
fn postgres_targeted_destroy_of_a_user_cleans_up_in_the_databases_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fake::new(POSTGRES);
    let cfg = config(dir.path(), &hcl(POSTGRES, "shop", "app", 5, POSTGRES.privs.0));
    let d = f.plan(&cfg, false);
    f.apply(&d.changes);
    let reassign = "REASSIGN OWNED BY \"app\" TO \"postgres\"; DROP OWNED BY \"app\"";
    let user_steps = |d: &Diffed| -> Vec<(Option<String>, String)> {
        d.changes
            .iter()
            .filter(|c| c.address == "user.app")
            .flat_map(|c| c.steps.iter().map(|s| (s.database.clone(), s.describe())))
            .collect()
    };

    let keep: BTreeSet<String> = ["user.app", "user.app.grant"].iter().map(|s| s.to_string()).collect();
    let d = f.plan_keeping(&cfg, true, Some(&keep));
    assert_eq!(
        user_steps(&d),
        [
            (Some("shop".to_string()), format!("{reassign} -- in database shop")),
            (None, "DROP ROLE \"app\"".to_string())
        ]
    );

    let d = f.plan(&cfg, true);
    assert_eq!(user_steps(&d), [(None, "DROP ROLE \"app\"".to_string())], "shop is dropped: nothing to clean there");
}

/// A grant moved from one database to another: the one no longer
/// configured (but recorded) is revoked and named in a note, the new one
/// granted, each target in name order, and the next plan changes nothing.
fn grant_moved_to_another_database(k: Kindly) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fake::new(k);
    let text = |on: &str| {
        format!(
            r#"server "main" {{
  engine = "{engine}"
  url    = "{url}"
}}

database "a" {{
  server = server.main
  name   = "a \"é\";"
}}

database "z" {{
  server = server.main
}}

user "app" {{
  server = server.main
  grant {{
    database   = database.{on}
    privileges = ["CONNECT"]
  }}
}}
"#,
            engine = k.engine,
            url = k.url,
        )
    };
    let cfg = config(dir.path(), &text("a"));
    let d = f.plan(&cfg, false);
    f.apply(&d.changes);
    assert_converged(&f, &cfg);

    let cfg = config(dir.path(), &text("z"));
    let d = f.plan(&cfg, false);
    assert_eq!(changed(&d), [("user.app.grant".to_string(), Action::Update)], "{:?}", statements(&d));
    let s = statements(&d);
    assert_eq!(
        s,
        [
            format!("REVOKE CONNECT ON DATABASE {} FROM \"app\"", (k.quote)("a \"é\";")),
            format!("GRANT CONNECT ON DATABASE {} TO \"app\"", (k.quote)("z")),
        ],
        "the recorded target first (name order), then the new one"
    );
    let c = d.changes.iter().find(|c| c.address == "user.app.grant").unwrap();
    assert_eq!(c.notes, ["no longer managed: database on a \"é\";"], "{:?}", c.notes);
    f.apply(&d.changes);
    assert_converged(&f, &cfg);
}

#[test]
fn postgres_grant_moved_to_another_database() {
    grant_moved_to_another_database(POSTGRES);
}

#[test]
fn postgres_create_converge_change_drift_destroy() {
    create_converge_change_drift_destroy(POSTGRES);
}

#[test]
fn mysql_create_converge_change_drift_destroy() {
    create_converge_change_drift_destroy(MYSQL);
}

#[test]
fn postgres_hostile_names_are_quoted() {
    hostile_names_are_quoted(POSTGRES);
}

#[test]
fn mysql_hostile_names_are_quoted() {
    hostile_names_are_quoted(MYSQL);
}

/// A plan never reaches a server for a target that names nothing: the
/// server's url here resolves nowhere (`.invalid`).
#[test]
fn an_unknown_target_is_refused_before_any_server_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.hcl"), hcl(POSTGRES, "shop", "app", 5, POSTGRES.privs.0)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .arg("--no-color")
        .arg("-C")
        .arg(dir.path())
        .args(["plan", "--target", "database.shpo"])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("--target database.shpo: no resource in the configuration or the state has this address"),
        "{all}"
    );
    assert!(all.contains("database.shop"), "a suggestion: {all}");
    assert!(!all.contains("cannot connect"), "no server was reached: {all}");
}
