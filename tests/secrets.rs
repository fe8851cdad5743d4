//! The local secret store under concurrent use, and a store that lost a
//! value while users' passwords were set from it: a plain diff first, then
//! against a real PostgreSQL server (embedded, started by dbctl).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{text, Project, SERVER};
use dbctl::config::{load, LoadOptions};
use dbctl::diff::{diff, Inputs};
use dbctl::engine::{LiveRole, LiveServer};
use dbctl::model::{Address, Kind, Sensitive};
use dbctl::plan::Op;
use dbctl::secrets::LocalStore;
use dbctl::state::{LocalState, State, StateResource};
use serde_json::json;

const TWO_USERS: &str = r#"
secret "app" {
  generate {
    length = 20
  }
}

secret "ops" {}

user "app" {
  server   = server.main
  password = secret.app
}

user "ops" {
  server   = server.main
  password = secret.ops
}
"#;

/// The diff of TWO_USERS, both users applied from secrets that the store no
/// longer holds, except `present`.
fn diff_lost(extra: &str, present: &[&str], replace: &[&str]) -> Result<dbctl::diff::Diffed, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let hcl = format!(
        "server \"main\" {{\n  engine = \"postgres\"\n  url    = \"postgres://admin@db.internal/postgres\"\n}}\n{TWO_USERS}{extra}"
    );
    std::fs::write(dir.path().join("main.hcl"), hcl).unwrap();
    let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
    let mut live = LiveServer { exists: true, version: "15.4".into(), admin: "admin".into(), ..Default::default() };
    let mut state = State::new();
    for name in ["app", "ops"] {
        live.roles.insert(name.into(), LiveRole { login: true, connection_limit: -1, ..Default::default() });
        state.resources.insert(
            format!("user.{name}"),
            StateResource {
                kind: "user".into(),
                server: Some("server.main".into()),
                name: name.into(),
                attributes: json!({"name": name, "login": true, "connection_limit": -1, "valid_until": null, "member_of": []}),
                password_version: Some("v1".into()),
                pending: false,
            },
        );
        state.resources.insert(
            format!("secret.{name}"),
            StateResource {
                kind: "secret".into(),
                server: None,
                name: format!("secret.{name}"),
                attributes: json!({"store": "local", "name": format!("secret.{name}"), "value": "(sensitive)"}),
                password_version: None,
                pending: false,
            },
        );
    }
    let secrets = present
        .iter()
        .map(|n| {
            let meta = dbctl::secrets::SecretMeta {
                version: "v1".into(),
                created: "2026-01-01T00:00:00Z".into(),
                pending: false,
                rotation: None,
                value_hash: String::new(),
            };
            (Address::new(Kind::Secret, *n), meta)
        })
        .collect();
    let replace: BTreeSet<Address> = replace.iter().map(|n| Address::new(Kind::Secret, *n)).collect();
    let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    diff(&Inputs {
        config: &cfg,
        live: &live,
        state: &state,
        secrets: &secrets,
        rds: &BTreeMap::new(),
        now: time::OffsetDateTime::now_utc(),
        hosts: &BTreeMap::new(),
        published: &BTreeMap::new(),
        backups: &BTreeMap::new(),
        migrations: &BTreeMap::new(),
        destroy: false,
        force: false,
        replace: &replace,
        keep: None,
    })
}

#[test]
fn a_generated_secret_gone_from_its_store_is_an_error_unless_replaced() {
    // Both gone: one error per secret, each naming the user whose password it is.
    let errors = diff_lost("", &[], &[]).err().expect("refused");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("secret.app: its value is gone from the local secret store"), "{errors:?}");
    assert!(errors[0].contains("user.app") && errors[0].contains("--replace secret.app"), "{errors:?}");
    assert!(errors[1].starts_with("secret.ops:") && errors[1].contains("user.ops"), "{errors:?}");

    // Only the missing one is refused.
    let errors = diff_lost("", &["ops"], &[]).err().expect("refused");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("secret.app:"), "{errors:?}");

    // Replaced: a new value and the users' passwords follow; the loss is drift.
    let d = diff_lost("", &[], &["app", "ops"]).expect("replaced");
    let drifted: Vec<&str> = d.drift.iter().map(|x| x.address.as_str()).collect();
    assert_eq!(drifted, ["secret.app", "secret.ops"]);
    let ops: Vec<(&str, &Op)> =
        d.changes.iter().flat_map(|c| c.steps.iter()).map(|s| (s.address.as_str(), &s.op)).collect();
    for name in ["app", "ops"] {
        assert!(ops.iter().any(|(a, o)| *a == format!("secret.{name}") && matches!(o, Op::WriteSecret { .. })));
        assert!(ops.iter().any(|(a, o)| *a == format!("user.{name}") && matches!(o, Op::SetPassword { .. })));
    }

    // --replace of a secret the store holds: a new version, the password follows.
    let d = diff_lost("", &["app", "ops"], &["ops"]).expect("plans");
    let changed: Vec<&str> = d.changes.iter().filter(|c| !c.steps.is_empty()).map(|c| c.address.as_str()).collect();
    assert_eq!(changed, ["secret.ops", "user.ops"]);
    assert!(d.drift.is_empty());
}

#[test]
fn a_lost_secret_that_nothing_set_a_password_from_is_recreated() {
    // A secret no user's password comes from (it may be a new reference) is simply created.
    let d = diff_lost("\nsecret \"spare\" {}\n", &["app", "ops"], &[]).expect("plans");
    let spare = d.changes.iter().find(|c| c.address == "secret.spare").unwrap();
    assert!(matches!(spare.steps[0].op, Op::WriteSecret { .. }));
}

fn dbctl(p: &Project) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    c.arg("--no-color").arg("-C").arg(p.path()).env_remove("NO_COLOR");
    c
}

fn stored(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.path().join(".dbctl/secrets.json")).unwrap()).unwrap()
}

#[test]
fn secret_rotate_waits_for_the_state_lock_and_loses_no_version() {
    let p = Project::new("secret \"app\" {\n  generate {\n    length = 20\n  }\n}\n");
    let dbctl_dir = p.path().join(".dbctl");
    // An apply is running: it holds the state lock.
    let apply = LocalState::new(&dbctl_dir).lock("apply", Duration::ZERO).unwrap();

    let out = p.ok(&["secret", "rotate", "secret.app"], 1);
    assert!(out.contains("the state is locked by another dbctl") && out.contains("\"operation\":\"apply\""), "{out}");
    assert!(!dbctl_dir.join("secrets.json").exists(), "nothing written");

    // With --lock-timeout it waits for the apply...
    let mut rotate = dbctl(&p)
        .args(["secret", "rotate", "secret.app", "--lock-timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rotate.try_wait().unwrap().is_none(), "rotate waits while the apply holds the lock");
    // ...which meanwhile generates a password into the store, as an apply does.
    let mut mine = LocalStore::open(&dbctl_dir).unwrap();
    mine.put("secret.generated", "secret.generated", Sensitive::new("by-the-apply".into())).unwrap();
    drop(apply);
    let out = rotate.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));

    // Both are kept: the apply's password and the rotation.
    let s = stored(&p);
    assert_eq!(s["secrets"]["secret.generated"]["versions"][0]["value"], "by-the-apply");
    assert_eq!(s["secrets"]["secret.app"]["versions"].as_array().unwrap().len(), 1);
    // And the apply's handle sees the rotation too, without reopening.
    assert!(mine.current("secret.app").unwrap().is_some());
}

#[test]
fn a_deleted_local_store_is_drift_and_only_replace_regenerates() {
    let p = Project::new(&format!("{SERVER}{TWO_USERS}\ndatabase \"app\" {{\n  server = server.main\n}}\n"));
    p.apply();
    p.converged();
    let (app1, ops1) = (p.secret("secret.app"), p.secret("secret.ops"));
    assert_eq!(p.psql_as("app", Some(&app1), "postgres", "SELECT current_user").unwrap(), "app");

    std::fs::remove_file(p.path().join(".dbctl/secrets.json")).unwrap();

    // The plan refuses, naming each secret and its user; nothing is planned or applied.
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("secret.app: its value is gone from the local secret store (.dbctl/secrets.json)"), "{out}");
    assert!(out.contains("user.app") && out.contains("secret.ops:") && out.contains("user.ops"), "{out}");
    assert!(out.contains("dbctl plan --replace secret.app"), "{out}");
    assert!(!out.contains("Plan:") && !out.contains("ALTER ROLE"), "{out}");
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(!out.contains("Apply complete"), "{out}");
    assert!(!p.path().join(".dbctl/secrets.json").exists(), "no new values were generated");
    assert_eq!(p.psql_as("app", Some(&app1), "postgres", "SELECT current_user").unwrap(), "app", "still logs in");

    // Replacing one is not enough while the other is still lost.
    let out = p.ok(&["plan", "--replace", "secret.app"], 1);
    assert!(out.contains("secret.ops:") && !out.contains("secret.app:"), "{out}");
    // Only secrets can be replaced, and only configured ones.
    let out = p.ok(&["plan", "--replace", "user.app"], 1);
    assert!(out.contains("only a secret can be replaced"), "{out}");
    let out = p.ok(&["plan", "--replace", "secret.nope"], 1);
    assert!(out.contains("there is no secret.nope in the configuration"), "{out}");

    // Replaced on purpose, through a saved plan: new passwords, set and working.
    let saved = p.path().join("p.json");
    let saved = saved.to_str().unwrap();
    let plan = p.ok(&["plan", "--replace", "secret.app", "--replace", "secret.ops", "--out", saved], 0);
    assert!(plan.contains("Plan: 2 to add, 2 to change, 0 to destroy."), "{plan}");
    let out = p.ok(&["apply", "--replace", "secret.app", saved], 1);
    assert!(out.contains("--replace is for a new plan"), "{out}");
    let out = p.ok(&["apply", saved], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    p.converged();
    let (app2, ops2) = (p.secret("secret.app"), p.secret("secret.ops"));
    assert_ne!(app1, app2);
    assert_ne!(ops1, ops2);
    assert_eq!(p.psql_as("app", Some(&app2), "postgres", "SELECT current_user").unwrap(), "app");
    assert_eq!(p.psql_as("ops", Some(&ops2), "postgres", "SELECT current_user").unwrap(), "ops");
    assert!(p.psql_as("app", Some(&app1), "postgres", "SELECT 1").is_err(), "the old password is gone");

    // --replace on a secret the store holds rotates it, like `secret rotate` then apply.
    let out = p.ok(&["apply", "--auto-approve", "--replace", "secret.app"], 0);
    assert!(out.contains("Apply complete! Resources: 0 added, 2 changed, 0 destroyed."), "{out}");
    let app3 = p.secret("secret.app");
    assert_ne!(app2, app3);
    assert_eq!(p.psql_as("app", Some(&app3), "postgres", "SELECT current_user").unwrap(), "app");
    assert_eq!(p.secret("secret.ops"), ops2, "the other secret is untouched");
    p.converged();
}

#[test]
fn a_rotation_started_during_an_apply_waits_and_both_are_kept() {
    let users: String = (0..8)
        .map(|i| {
            format!("secret \"u{i}\" {{}}\nuser \"u{i}\" {{\n  server   = server.main\n  password = secret.u{i}\n}}\n")
        })
        .collect();
    let p = Project::new(&format!("{SERVER}{users}"));
    let mut apply =
        dbctl(&p).args(["apply", "--auto-approve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Once the apply holds the state lock (it then starts the server and generates the passwords)...
    let lock = p.path().join(".dbctl/state.lock");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains("\"operation\":\"apply\"") {
        assert!(apply.try_wait().unwrap().is_none(), "the apply ended before it was seen holding the lock");
        assert!(start.elapsed() < Duration::from_secs(60), "the apply never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...a rotation waits for it, then runs.
    let rotated = p.ok(&["secret", "rotate", "secret.u0", "--lock-timeout", "120s"], 0);
    let out = apply.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(rotated.contains("until `dbctl apply` sets the new one as the password of user.u0"), "{rotated}");

    // The store keeps every password the apply set, and the rotation on top of u0's.
    let store = stored(&p);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".dbctl/state.json")).unwrap()).unwrap();
    let u0 = store["secrets"]["secret.u0"]["versions"].as_array().unwrap();
    assert_eq!(u0.len(), 2, "the apply's version and the rotation");
    assert_eq!((u0[0].get("pending"), u0[1]["pending"].as_bool()), (None, Some(true)), "the rotation is staged");
    assert_eq!(state["resources"]["user.u0"]["password_version"], u0[0]["id"]);
    for i in 1..8 {
        let (user, secret) = (format!("u{i}"), format!("secret.u{i}"));
        assert_eq!(
            state["resources"][&format!("user.{user}")]["password_version"],
            store["secrets"][&secret]["versions"][0]["id"]
        );
        assert_eq!(p.psql_as(&user, Some(&p.secret(&secret)), "postgres", "SELECT current_user").unwrap(), user);
    }
    // The next apply sets the rotated password, and only that one.
    let plan = p.plan_json();
    assert_eq!(common::steps(&plan), ["ALTER ROLE \"u0\" PASSWORD (sensitive)"]);
    p.apply();
    assert_eq!(p.psql_as("u0", Some(&p.secret("secret.u0")), "postgres", "SELECT current_user").unwrap(), "u0");
    p.converged();
}

/// Every statement logged (`log_statement = 'all'`, and every duration):
/// after a create and a rotation, the server's log holds no password, only
/// SCRAM verifiers; the users still log in with their passwords.
#[test]
fn passwords_reach_the_server_only_as_scram_verifiers() {
    let p = Project::example("quickstart");
    p.ok(&["dev", "up"], 0);
    p.sql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    p.sql("postgres", "ALTER SYSTEM SET log_min_duration_statement = 0");
    p.sql("postgres", "SELECT pg_reload_conf()");
    p.apply();
    let first = p.secret("secret.shop");
    assert_eq!(p.psql_as("shop", Some(&first), "orders", "SELECT current_user").unwrap(), "shop");
    p.ok(&["secret", "rotate", "secret.shop"], 0);
    p.apply();
    let second = p.secret("secret.shop");
    assert_ne!(first, second);
    assert_eq!(p.psql_as("shop", Some(&second), "orders", "SELECT current_user").unwrap(), "shop");
    let status = p.ok(&["dev", "status"], 0);
    let data =
        status.split("data ").nth(1).and_then(|s| s.split_whitespace().next()).expect("dev status names the data");
    let log = std::fs::read_to_string(std::path::Path::new(data).parent().unwrap().join("server.log")).unwrap();
    assert!(log.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "the statement is logged, with a verifier");
    for pw in [&first, &second] {
        assert!(!log.contains(pw.as_str()), "a password reached the server's log");
    }
}
