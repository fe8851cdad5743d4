//! Plans from plain values (no server): configuration + a hand-made live
//! snapshot + a state → diff → the three renderers, snapshotted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dbctl::config::{load, LoadOptions};
use dbctl::diff::{diff, Inputs};
use dbctl::engine::{LiveDatabase, LiveRole, LiveServer};
use dbctl::model::{Address, Config, Kind};
use dbctl::plan::{render, Plan};
use dbctl::secrets::SecretMeta;
use dbctl::state::{State, StateResource};
use serde_json::json;

fn config(dir: &str) -> Config {
    let loaded = load(&LoadOptions { dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir), ..Default::default() });
    loaded.config.expect("example is valid")
}

fn plan(cfg: &Config, live: &BTreeMap<Address, LiveServer>, state: &State, has_secret: bool) -> Plan {
    plan_at(cfg, live, state, has_secret, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
}

/// A plan where every configured secret (if `has_secret`) was created at `created`, seen at `now`.
fn plan_at(
    cfg: &Config,
    live: &BTreeMap<Address, LiveServer>,
    state: &State,
    has_secret: bool,
    created: &str,
    now: &str,
) -> Plan {
    use time::format_description::well_known::Rfc3339;
    let secrets: BTreeMap<Address, SecretMeta> = if has_secret {
        cfg.of_kind(Kind::Secret)
            .map(|r| {
                (
                    r.addr.clone(),
                    SecretMeta {
                        version: "v1".into(),
                        created: created.into(),
                        pending: false,
                        rotation: None,
                        value_hash: String::new(),
                    },
                )
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let now = time::OffsetDateTime::parse(now, &Rfc3339).unwrap();
    let d = diff_of(cfg, live, state, &secrets, now).expect("plans");
    Plan {
        format_version: "1.0".into(),
        config_hash: "test".into(),
        state_lineage: state.lineage.clone(),
        state_serial: state.serial,
        fingerprints: d.fingerprints,
        drift: d.drift,
        changes: d.changes,
        notes: d.notes,
        refresh_only: false,
        ..Default::default()
    }
}

/// The diff of `cfg` against `live` and `state`, with these secrets and no
/// RDS cluster, backup or migration; the server at 127.0.0.1:5432.
fn diff_of(
    cfg: &Config,
    live: &BTreeMap<Address, LiveServer>,
    state: &State,
    secrets: &BTreeMap<Address, SecretMeta>,
    now: time::OffsetDateTime,
) -> Result<dbctl::diff::Diffed, Vec<String>> {
    let hosts = BTreeMap::from([(Address::new(Kind::Server, "main"), ("127.0.0.1".to_string(), 5432))]);
    diff(&Inputs {
        config: cfg,
        live,
        state,
        secrets,
        rds: &BTreeMap::new(),
        now,
        hosts: &hosts,
        published: &BTreeMap::new(),
        backups: &BTreeMap::new(),
        migrations: &BTreeMap::new(),
        destroy: false,
        force: false,
        replace: &BTreeSet::new(),
        keep: None,
    })
}

fn snapshot_all(name: &str, p: &Plan) {
    insta::assert_snapshot!(format!("{name}_human"), render::human(p, true));
    insta::assert_snapshot!(format!("{name}_markdown"), render::markdown(p, false));
    // The state's lineage is random: a placeholder keeps the snapshot stable.
    let mut v = render::json(p);
    assert_eq!(v["prior_state"]["lineage"], json!(p.state_lineage));
    v["prior_state"]["lineage"] = json!("[lineage]");
    insta::assert_json_snapshot!(format!("{name}_json"), v);
}

#[test]
fn quickstart_from_nothing() {
    let cfg = config("examples/quickstart");
    let p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    assert_eq!(p.summary(), "Plan: 7 to add, 0 to change, 0 to destroy.");
    // Steps run in dependency order: the server, the secret, the user, then what uses them.
    let order: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
    let pos = |a: &str| order.iter().position(|x| *x == a).unwrap();
    assert!(pos("server.main") < pos("user.shop"));
    assert!(pos("secret.shop") < pos("user.shop"));
    assert!(pos("user.shop") < pos("router.shop"));
    assert!(pos("database.orders") < pos("router.shop"));
    snapshot_all("quickstart_create", &p);
    insta::assert_snapshot!("quickstart_plan_graph", dbctl::graph::plan_dot(&cfg, &p));
}

fn managed(state: &mut State, addr: &str, kind: &str, name: &str, attributes: serde_json::Value) {
    state.resources.insert(
        addr.into(),
        StateResource {
            kind: kind.into(),
            server: Some("server.main".into()),
            name: name.into(),
            attributes,
            password_version: Some("v1".into()),
            pending: false,
        },
    );
}

/// `user.app` as applied with connection_limit 10.
fn managed_app_user(state: &mut State) {
    managed(
        state,
        "user.app",
        "user",
        "app",
        json!({"name": "app", "login": true, "connection_limit": 10, "valid_until": null, "member_of": []}),
    );
}

#[test]
fn updates_replacements_deletions_and_drift() {
    let p = mixed_plan();
    snapshot_all("mixed", &p);
}

/// A plan with a create, an update, a replacement, two deletions and drift.
fn mixed_plan() -> Plan {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        r#"
server "main" {
  engine = "postgres"
  url    = "postgres://admin@db.internal/postgres"
}

user "app" {
  server           = server.main
  connection_limit = 10
  grant {
    database   = database.app
    privileges = ["CONNECT"]
  }
}

database "app" {
  server    = server.main
  collation = "C"
}
"#,
    )
    .unwrap();
    let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
    let mut live = LiveServer { exists: true, version: "15.4".into(), admin: "admin".into(), ..Default::default() };
    live.roles
        .insert("admin".into(), LiveRole { login: true, superuser: true, connection_limit: -1, ..Default::default() });
    live.roles.insert("app".into(), LiveRole { login: true, connection_limit: 3, ..Default::default() });
    live.roles.insert("gone".into(), LiveRole { login: true, connection_limit: -1, ..Default::default() });
    let privs = |p: &[&str]| -> BTreeSet<String> { p.iter().map(|s| s.to_string()).collect() };
    live.databases.insert(
        "app".into(),
        LiveDatabase {
            owner: "admin".into(),
            encoding: "UTF8".into(),
            collation: "en_US.UTF-8".into(),
            connection_limit: -1,
            privileges: BTreeMap::from([("app".into(), privs(&["CONNECT", "TEMPORARY"]))]),
            detail: None,
            closed: false,
        },
    );
    let mut state = State::new();
    managed_app_user(&mut state);
    managed(
        &mut state,
        "database.app",
        "database",
        "app",
        json!({"name": "app", "owner": "admin", "encoding": "UTF8", "collation": "en_US.UTF-8", "connection_limit": -1, "extensions": []}),
    );
    managed(
        &mut state,
        "user.gone",
        "user",
        "gone",
        json!({"name": "gone", "login": true, "connection_limit": -1, "valid_until": null, "member_of": []}),
    );
    managed(
        &mut state,
        "user.app.grant",
        "grant",
        "app",
        json!({"grantee": "app", "grants": [{"database": "app", "schema": null, "on": "database", "privileges": ["CONNECT", "TEMPORARY"]}]}),
    );
    let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    let p = plan(&cfg, &live, &state, true);
    assert_eq!(p.summary(), "Plan: 1 to add, 2 to change, 2 to destroy.");
    assert_eq!(p.drift.len(), 1, "connection_limit changed outside dbctl");
    let steps: Vec<String> = p.steps().map(|s| s.describe()).collect();
    // "app" is replaced (its collation): the new database gets the grant, as a new one would.
    assert!(steps.contains(&"GRANT CONNECT ON DATABASE \"app\" TO \"app\"".to_string()), "{steps:?}");
    assert!(!steps.iter().any(|s| s.starts_with("REVOKE TEMPORARY")), "{steps:?}");
    assert!(
        steps.iter().position(|s| s.starts_with("DROP ROLE \"gone\""))
            < steps.iter().position(|s| s.starts_with("CREATE DATABASE"))
    );
    p
}

/// Check `v` against the subset of JSON Schema that schema/plan.schema.json
/// uses: type, required, additionalProperties: false, properties, items, enum.
fn conforms(v: &serde_json::Value, schema: &serde_json::Value, path: &str) {
    conforms_in(v, schema, schema, path)
}

/// `conforms` for a part of `root`, resolving `{"$ref": "#/$defs/NAME"}`.
fn conforms_in(v: &serde_json::Value, schema: &serde_json::Value, root: &serde_json::Value, path: &str) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("{path}: unsupported $ref {r}"));
        let target = root["$defs"].get(name).unwrap_or_else(|| panic!("{path}: no $defs/{name}"));
        return conforms_in(v, target, root, path);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert!(
            types.contains(&actual) || (actual == "integer" && types.contains(&"number")),
            "{path}: {actual} is not {types:?}"
        );
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        assert!(e.contains(v), "{path}: {v} is not one of {e:?}");
    }
    if let Value::Object(o) = v {
        let none = serde_json::Map::new();
        let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&none);
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            assert!(o.contains_key(r.as_str().unwrap()), "{path}: missing {r}");
        }
        for (k, val) in o {
            match props.get(k) {
                Some(s) => conforms_in(val, s, root, &format!("{path}.{k}")),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => panic!("{path}: {k} is not in the schema"),
                    Some(extra @ Value::Object(_)) => conforms_in(val, extra, root, &format!("{path}.{k}")),
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            conforms_in(x, items, root, &format!("{path}[{i}]"));
        }
    }
}

fn plan_schema() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json")).unwrap(),
    )
    .unwrap()
}

/// A Python with the `jsonschema` package: DBCTL_PYTHON, or the checkout's .venv.
fn python() -> PathBuf {
    std::env::var_os("DBCTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Validate `docs` with the `jsonschema` package (a full Draft 2020-12
/// validator) against schema/plan.schema.json, or against one of its
/// `$defs` when `def` is given. Returns the validator's complaints.
fn python_validate(docs: &[serde_json::Value], def: Option<&str>) -> String {
    use std::io::Write;
    let script = r##"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
if len(sys.argv) > 2:
    schema = {"$defs": schema["$defs"], "$ref": "#/$defs/" + sys.argv[2]}
v = Draft202012Validator(schema)
bad = 0
for i, doc in enumerate(json.load(sys.stdin)):
    for e in v.iter_errors(doc):
        bad += 1
        print(f"document {i}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if bad else 0)
"##;
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json");
    let mut cmd = std::process::Command::new(python());
    cmd.arg("-c").arg(script).arg(&schema);
    if let Some(d) = def {
        cmd.arg(d);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; set DBCTL_PYTHON to a python with jsonschema", python().display()));
    child.stdin.take().unwrap().write_all(serde_json::to_string(docs).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "{} has no jsonschema: `pip install jsonschema`, or set DBCTL_PYTHON",
        python().display()
    );
    if out.status.success() {
        String::new()
    } else {
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
    }
}

#[test]
fn json_plans_conform_to_the_schema_in_the_repo() {
    let schema = plan_schema();
    let cfg = config("examples/platform");
    let p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    let v = render::json(&p);
    assert!(v["resource_changes"].as_array().unwrap().len() > 10);
    conforms(&v, &schema, "plan");
    // Drift, a replacement, deletions and configuration warnings.
    let mut mixed = mixed_plan();
    mixed.config_warnings = vec![dbctl::plan::ConfigWarning {
        message: "database.app is not routed by any router and no user is granted it".into(),
        file: Some("main.hcl".into()),
        line: Some(20),
        column: Some(1),
        help: Some("route it from a router, or grant it to a user or role".into()),
        subject: Some("database.app".into()),
    }];
    mixed.notes.push("Warning: server.main: the connection to db.internal is not encrypted".into());
    mixed.targets = vec!["database.app".into()];
    // Planned with --refresh=false.
    mixed.live_read_at = Some("2026-12-02T00:41:07Z".into());
    let m = render::json(&mixed);
    assert_eq!(m["refreshed"], json!(false));
    assert_eq!(m["live_read_at"], json!("2026-12-02T00:41:07Z"));
    conforms(&m, &schema, "plan");
    assert_eq!(m["complete"], json!(false), "a targeted plan is not complete");
    assert_eq!(m["warnings"].as_array().unwrap().len(), 2, "{}", m["warnings"]);
    assert_eq!(m["warnings"][0]["line"], json!(20));
    assert_eq!(m["resource_drift"][0]["change"]["actions"], json!(["update"]));
    assert_eq!(m["resource_drift"][0]["change"]["before"], json!({"connection_limit": 10}));
    assert_eq!(m["resource_drift"][0]["change"]["after"], json!({"connection_limit": 3}));
    // A real Draft 2020-12 validator agrees, and rejects what breaks the schema.
    let complaints = python_validate(&[v.clone(), m.clone()], None);
    assert!(complaints.is_empty(), "{complaints}");
    let mut broken = m.clone();
    broken["resource_changes"][0]["change"]["actions"] = json!(["destroy"]);
    broken["resource_changes"][1]["mode"] = json!("data");
    let complaints = python_validate(&[broken], None);
    assert!(complaints.contains("'destroy' is not one of"), "{complaints}");
    assert!(complaints.contains("'data' is not one of"), "{complaints}");
}

/// What a policy written for Terraform plans (conftest/OPA style) looks for
/// finds the same things in dbctl's JSON plan: deletions are
/// `change.actions == ["delete"]`, replacements `["delete", "create"]`,
/// every entry is `mode == "managed"` with `type`, `name` and `index`, and
/// secrets are marked in `after_sensitive`, never present.
#[test]
fn terraform_plan_policies_read_the_json_plan() {
    let v = render::json(&mixed_plan());
    let changes = v["resource_changes"].as_array().unwrap();
    let with = |actions: serde_json::Value| -> Vec<&str> {
        changes.iter().filter(|c| c["change"]["actions"] == actions).map(|c| c["address"].as_str().unwrap()).collect()
    };
    assert_eq!(with(json!(["delete"])), ["user.gone"]);
    assert_eq!(with(json!(["delete", "create"])), ["database.app"]);
    assert_eq!(with(json!(["create"])), [] as [&str; 0]);
    assert!(with(json!(["update"])).contains(&"user.app"));
    assert_eq!(with(json!(["no-op"])), ["server.main"]);
    for c in changes {
        assert_eq!(c["mode"], "managed", "{c}");
        let address = c["address"].as_str().unwrap();
        let name = c["name"].as_str().unwrap();
        assert!(address.starts_with(&format!("{}.{name}", c["type"].as_str().unwrap())) || c["type"] == "grant", "{c}");
        let ch = &c["change"];
        for (value, marks) in [("before", "before_sensitive"), ("after", "after_sensitive")] {
            if ch[value].is_null() {
                assert_eq!(ch[marks], json!(false), "{c}");
            } else {
                assert!(ch[marks].is_object(), "{c}");
            }
        }
    }
    let replaced = changes.iter().find(|c| c["address"] == "database.app").unwrap();
    assert_eq!(replaced["change"]["replace_paths"], json!([["collation"]]));
    assert_eq!(replaced["action_reason"], "replace_because_cannot_update");
    // Terraform's `index` is the for_each key; `name` is the block label.
    let cfg = config("examples/platform");
    let v = render::json(&plan(&cfg, &BTreeMap::new(), &State::new(), true));
    let keyed: Vec<&serde_json::Value> =
        v["resource_changes"].as_array().unwrap().iter().filter(|c| c.get("index").is_some()).collect();
    assert!(!keyed.is_empty(), "the platform example uses for_each");
    for c in keyed {
        let expected = format!(
            "{}.{}[\"{}\"]",
            c["type"].as_str().unwrap(),
            c["name"].as_str().unwrap(),
            c["index"].as_str().unwrap()
        );
        assert_eq!(c["address"], json!(expected));
    }
}

/// No format shows a secret; the JSON marks where one would be.
#[test]
fn secrets_are_marked_sensitive_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        r#"
variable "pw" {
  sensitive = true
}
server "main" {
  engine   = "postgres"
  embedded = true
}
secret "given" {
  value = var.pw
}
user "app" {
  server   = server.main
  password = secret.given
}
"#,
    )
    .unwrap();
    let secret = "s3cr3t-VALUE-never-shown";
    let loaded = load(&LoadOptions {
        dir: dir.path().to_path_buf(),
        vars: vec![("pw".into(), secret.into())],
        ..Default::default()
    });
    let cfg = loaded.config.expect("valid");
    let p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    let v = render::json(&p);
    let text = serde_json::to_string(&v).unwrap();
    for out in [text.as_str(), &render::markdown(&p, true), &render::human(&p, true)] {
        assert!(!out.contains(secret), "{out}");
    }
    let by = |a: &str| v["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == a).unwrap().clone();
    assert_eq!(by("secret.given")["change"]["after_sensitive"], json!({"value": true}));
    assert_eq!(by("secret.given")["change"]["after"]["value"], json!("(sensitive)"));
    assert_eq!(by("user.app")["change"]["after_sensitive"]["password"], json!(true));
}

/// A configuration of `n` databases (for_each), none routed: `n` changes
/// and `n` identical configuration warnings.
fn many_databases(n: usize) -> (Config, Vec<dbctl::plan::ConfigWarning>) {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("\"tenant_{i:05}\"")).collect();
    std::fs::write(
        dir.path().join("main.hcl"),
        format!(
            "server \"main\" {{\n  engine = \"postgres\"\n  url = \"postgres://admin@127.0.0.1/postgres\"\n}}\n\
             database \"tenant\" {{\n  for_each = toset([{}])\n  server = server.main\n  extensions = [\"pg_trgm\"]\n}}\n",
            names.join(", ")
        ),
    )
    .unwrap();
    let loaded = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() });
    let warnings: Vec<_> = loaded.diags.0.iter().filter(|d| !d.is_error()).cloned().collect();
    (loaded.config.expect("valid"), dbctl::plan::ConfigWarning::from_diags(&warnings))
}

#[test]
fn a_markdown_plan_of_more_than_3000_changes_stays_under_60000_characters_and_keeps_the_warnings() {
    let (cfg, warnings) = many_databases(3100);
    assert!(warnings.len() >= 3100, "each unrouted database is a warning: {}", warnings.len());
    let mut state = State::new();
    for i in 0..40 {
        let name = format!("old_{i:02}");
        managed(
            &mut state,
            &format!("database.{name}"),
            "database",
            &name,
            json!({"name": name, "owner": "admin", "encoding": "UTF8", "collation": "C", "connection_limit": -1, "extensions": []}),
        );
    }
    let mut live = LiveServer { exists: true, version: "16.2".into(), admin: "admin".into(), ..Default::default() };
    live.roles
        .insert("admin".into(), LiveRole { login: true, superuser: true, connection_limit: -1, ..Default::default() });
    for i in 0..40 {
        live.databases.insert(
            format!("old_{i:02}"),
            LiveDatabase {
                owner: "admin".into(),
                encoding: "UTF8".into(),
                collation: "C".into(),
                connection_limit: -1,
                privileges: BTreeMap::new(),
                detail: None,
                closed: false,
            },
        );
    }
    let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    let mut p = plan(&cfg, &live, &state, false);
    p.config_warnings = warnings;
    // Warnings and notes of the kinds the plan carries, written as the diff writes them.
    let plan_warnings = [
        "Warning: server.main: the connection to db.example.com:5432 is not encrypted (sslmode=disable)",
        "Warning: server.main: the admin \"admin\" lacks CREATEROLE; a preparatory GRANT runs first",
    ];
    for w in plan_warnings {
        p.notes.push(w.into());
    }
    p.notes.push("rds_cluster.main is not planned: RDS clusters are not built yet.".into());
    let changes = p.changes.iter().filter(|c| c.action != dbctl::plan::Action::NoOp).count();
    assert!(changes > 3000, "{changes} changes");
    let md = render::markdown(&p, false);
    let size = md.chars().count();
    eprintln!(
        "markdown of {changes} changes: {size} characters; human plan: {} characters",
        render::human(&p, true).chars().count()
    );
    assert!(size <= 60_000, "{size} characters");
    assert!(md.starts_with(&format!("### {}\n", p.summary())), "the summary first");
    let fold = md.find("<details>").expect("a collapsed section");
    let above = &md[..fold];
    for w in plan_warnings {
        assert!(
            above.contains(&w["Warning: ".len()..].replace('"', "\"")) || above.contains(&w["Warning: ".len()..]),
            "{w} above the fold:\n{above}"
        );
    }
    assert!(above.contains("rds_cluster.main is not planned"), "{above}");
    assert!(above.contains("is not routed by any router"), "{above}");
    assert!(above.contains("the same warning applies to 3099 more"), "{above}");
    assert_eq!(above.matches("will be destroyed").count(), 40, "every destroy above the fold");
    assert!(md.contains("```diff\n"), "changes in a diff block");
    assert!(md.contains("\n+   database \"tenant_00000\" {\n"), "+ in the first column, so GitHub colours it");
    assert!(md.contains("<summary>SQL and steps, in apply order</summary>"));
    assert!(md.contains("CREATE DATABASE \"tenant_00000\""), "SQL without --verbose");
    assert!(md.contains("more resource(s) not shown"), "says what is left out");
    assert!(md.contains("This comment is shortened to fit a pull-request comment: run `dbctl plan`"));
    assert_eq!(md.matches("```").count() % 2, 0, "every fence is closed");
}

#[test]
fn a_small_markdown_plan_is_whole_and_colours_its_changes() {
    let mut p = mixed_plan();
    p.notes.push("Warning: server.main: the connection to db.internal is not encrypted".into());
    let md = render::markdown(&p, false);
    assert!(!md.contains("shortened"), "{md}");
    let fold = md.find("<details>").unwrap();
    assert!(md[..fold].contains("- `user.gone` will be destroyed\n"), "{md}");
    assert!(md[..fold].contains("- `database.app` must be replaced (collation forces replacement)\n"), "{md}");
    assert!(md[..fold].contains(":warning: server.main: the connection to db.internal is not encrypted"), "{md}");
    assert!(md.contains("\n!       connection_limit = 3 -> 10\n"), "{md}");
    assert!(md.contains("\n-/+ database \"app\" {\n"), "{md}");
    assert!(md.contains("DROP ROLE \"gone\";"), "{md}");
}

#[test]
fn a_secret_is_rotated_once_rotate_every_has_passed_and_its_users_follow() {
    let cfg = config("examples/platform");
    let live = BTreeMap::new();
    let state = State::new();
    let fresh = plan_at(&cfg, &live, &state, true, "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z");
    let rotated = |p: &Plan| -> Vec<String> {
        p.changes
            .iter()
            .filter(|c| c.kind == "secret" && c.action != dbctl::plan::Action::NoOp)
            .map(|c| c.address.clone())
            .collect()
    };
    assert!(rotated(&fresh).is_empty(), "59 days < 90d");
    let due = plan_at(&cfg, &live, &state, true, "2026-01-01T00:00:00Z", "2026-04-02T00:00:00Z");
    assert_eq!(rotated(&due), ["secret.analyst[\"ada\"]", "secret.analyst[\"grace\"]", "secret.buildsense"]);
    let c = due.changes.iter().find(|c| c.address == "secret.buildsense").unwrap();
    assert_eq!(
        c.notes,
        [
            "rotation due: the value is 91 days old (rotate_every = \"90d\")",
            "pending until user.buildsense's server accepts it; services read the current one until then"
        ]
    );
    // Staged pending: the user's password step sets it, then makes it current.
    assert!(
        c.steps.iter().all(|s| matches!(s.op, dbctl::plan::Op::WriteSecret { pending: true, .. })),
        "{:?}",
        c.steps
    );
    let user = due.changes.iter().find(|c| c.address == "user.buildsense").unwrap();
    assert!(
        user.steps.iter().any(|s| matches!(s.op, dbctl::plan::Op::SetPassword { .. })),
        "the user gets the new password"
    );
}

fn hosts() -> BTreeMap<Address, (String, u16)> {
    BTreeMap::from([(Address::new(Kind::Server, "main"), ("127.0.0.1".to_string(), 5432))])
}

#[test]
fn published_documents_in_each_format() {
    let cfg = config("examples/platform");
    let json_doc = dbctl::router::render(&cfg, &Address::new(Kind::Router, "buildsense"), &hosts()).unwrap();
    insta::assert_snapshot!("publish_json", json_doc);
    let v: serde_json::Value = serde_json::from_str(&json_doc).unwrap();
    // One entry per logical database; apps name their database's alias.
    assert_eq!(v["apps"]["accounts"], "app_users");
    assert_eq!(v["apps"]["workflow"], "default");
    assert_eq!(v["databases"]["app_users"]["database"], "app_users");
    assert_eq!(v["databases"]["app_users"]["access"], "readonly");
    assert_eq!(v["databases"]["default"]["database"], "app_workflow");
    assert!(!json_doc.contains("\"password\": \""), "a reference to the secret, never a value");
    let django = dbctl::router::render(&cfg, &Address::new(Kind::Router, "billing"), &hosts()).unwrap();
    insta::assert_snapshot!("publish_django", django);

    // env: the same router, another format.
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/platform")).unwrap() {
        let f = f.unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap().replace("format = \"json\"", "format = \"env\"");
        std::fs::write(dir.path().join(f.file_name()), text).unwrap();
    }
    let env_cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
    let env_doc = dbctl::router::render(&env_cfg, &Address::new(Kind::Router, "buildsense"), &hosts()).unwrap();
    insta::assert_snapshot!("publish_env", env_doc);
    assert!(env_doc.contains("DATABASE_URL_APP_USERS=postgres://buildsense@127.0.0.1:5432/app_users\n"));
    assert!(env_doc.contains("DATABASE_URL=postgres://buildsense@127.0.0.1:5432/app_workflow\n"));
    assert!(env_doc.contains("DATABASE_APP_ACCOUNTS=APP_USERS\n"));
}

#[test]
fn the_django_module_compiles_and_routes_each_app_to_its_database() {
    let cfg = config("examples/platform");
    let module = dbctl::router::render(&cfg, &Address::new(Kind::Router, "billing"), &hosts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("billing_databases.py"), &module).unwrap();
    let secrets = json!({ "secrets": { "dev/billing/db": { "address": "secret.billing", "versions": [
        { "id": "v1", "created": "2026-01-01T00:00:00Z", "value": json!({ "username": "billing", "password": "s3cret" }).to_string() },
        // A rotation the server has not accepted yet: services keep the current password.
        { "id": "v2", "created": "2026-01-02T00:00:00Z", "pending": true, "value": json!({ "username": "billing", "password": "next" }).to_string() }
    ]}}});
    std::fs::write(dir.path().join("secrets.json"), secrets.to_string()).unwrap();
    let compile = std::process::Command::new("python3")
        .args(["-m", "py_compile", "billing_databases.py"])
        .current_dir(dir.path())
        .output()
        .expect("python3");
    assert!(compile.status.success(), "{}", String::from_utf8_lossy(&compile.stderr));
    let check = r#"
import billing_databases as m

class Meta:
    def __init__(self, label):
        self.app_label = label

class Model:
    def __init__(self, label):
        self._meta = Meta(label)

r = m.DatabaseRouter()
# billing has no default: its first route's database is the alias "default".
assert r.db_for_read(Model("accounts")) == "default", r.db_for_read(Model("accounts"))
assert r.db_for_write(Model("search")) == "app_search"
try:
    r.db_for_read(Model("unlisted"))
    raise AssertionError("an unrouted app must be an error")
except Exception as e:
    assert "'unlisted'" in str(e) and "'billing'" in str(e), e
assert r.allow_relation(Model("accounts"), Model("accounts"))
assert not r.allow_relation(Model("accounts"), Model("search"))
assert r.allow_migrate("default", "accounts") is True
assert r.allow_migrate("app_search", "accounts") is False
assert r.allow_migrate("default", "unlisted") is False
assert m.DATABASES["default"]["NAME"] == "app_billing"
assert m.DATABASES["app_search"]["NAME"] == "app_search"
assert m.DATABASES["default"]["PASSWORD"] == "s3cret"
assert m.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
assert m.DATABASE_ROUTERS == ["billing_databases.DatabaseRouter"]
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check])
        .current_dir(dir.path())
        .env("DBCTL_SECRETS_FILE", dir.path().join("secrets.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn ignore_changes_leaves_an_attribute_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let hcl = |ignore: &str| {
        format!(
            "server \"main\" {{\n  engine = \"postgres\"\n  url    = \"postgres://admin@db/postgres\"\n}}\n\nuser \"app\" {{\n  server           = server.main\n  connection_limit = 10\n{ignore}}}\n"
        )
    };
    let mut live = LiveServer { exists: true, admin: "admin".into(), ..Default::default() };
    live.roles.insert("app".into(), LiveRole { login: true, connection_limit: 3, ..Default::default() });
    let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    let mut state = State::new();
    managed_app_user(&mut state);
    for (ignore, changes) in [("", 1), ("  lifecycle {\n    ignore_changes = [\"connection_limit\"]\n  }\n", 0)] {
        std::fs::write(dir.path().join("main.hcl"), hcl(ignore)).unwrap();
        let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
        let p = plan(&cfg, &live, &state, false);
        assert_eq!(p.counts().1, changes, "ignore_changes = {ignore:?}: {}", p.summary());
        assert_eq!(p.drift.len(), changes, "ignored attributes are not drift either");
    }
}

#[test]
fn mysql_from_nothing() {
    let cfg = config("examples/mysql");
    let p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    assert_eq!(p.summary(), "Plan: 9 to add, 0 to change, 0 to destroy.");
    let sql: Vec<String> = p.changes.iter().flat_map(|c| c.steps.iter().map(|s| s.describe())).collect();
    // Accounts with hosts, created locked until the password is set; grants at database level.
    assert!(sql.contains(&"CREATE USER 'shop'@'%' WITH MAX_USER_CONNECTIONS 20 ACCOUNT LOCK".to_string()), "{sql:?}");
    assert!(
        sql.contains(
            &"ALTER USER 'shop'@'%' IDENTIFIED WITH mysql_native_password AS (sensitive) ACCOUNT UNLOCK".to_string()
        ),
        "{sql:?}"
    );
    assert!(
        sql.contains(&"GRANT CREATE TEMPORARY TABLES, DELETE, INSERT, LOCK TABLES, SELECT, SHOW VIEW, UPDATE ON `orders`.* TO 'shop'@'%'".to_string()),
        "{sql:?}"
    );
    snapshot_all("mysql_create", &p);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json")).unwrap(),
    )
    .unwrap();
    conforms(&render::json(&p), &schema, "plan");
}

#[test]
fn a_plan_that_drops_data_says_so_first_in_every_format() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let cfg = config("examples/quickstart");
    let mut p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    assert!(!render::human(&p, false).contains("drops databases"));
    assert!(render::json(&p).get("data_loss").is_none());
    let at = |p: &Plan, a: &str| p.changes.iter().position(|c| c.address == a).unwrap();
    let (orders, catalog) = (at(&p, "database.orders"), at(&p, "database.catalog"));
    p.changes[orders].data_loss =
        Some(dbctl::plan::DataLoss { database: "orders".into(), tables: Some(3), unit: None });
    p.changes[catalog].data_loss = Some(dbctl::plan::DataLoss { database: "catalog".into(), tables: None, unit: None });

    let human = render::human(&p, false);
    let head = "Warning: this plan drops databases that hold data, and their data is lost:\n\n";
    assert!(human.starts_with(head), "{human}");
    assert!(human.contains("  # database.orders drops database \"orders\", which holds 3 tables\n"), "{human}");
    assert!(
        human.contains("  # database.catalog drops database \"catalog\", whose tables could not be counted\n"),
        "{human}"
    );
    let md = render::markdown(&p, false);
    let caution = "> **This plan drops databases that hold data, and their data is lost:**\n\n";
    assert!(md.starts_with(&format!("### {}\n\n> [!CAUTION]\n{caution}", p.summary())), "{md}");
    assert!(md.contains("- database.orders drops database \"orders\", which holds 3 tables\n"), "{md}");
    let v = render::json(&p);
    conforms(&v, &schema, "plan");
    let mut lost: Vec<serde_json::Value> = v["data_loss"].as_array().unwrap().clone();
    lost.sort_by_key(|x| x["address"].to_string());
    assert_eq!(
        lost,
        [
            json!({ "address": "database.catalog", "database": "catalog", "tables": null }),
            json!({ "address": "database.orders", "database": "orders", "tables": 3 }),
        ]
    );
}

#[test]
fn an_admin_router_owns_what_it_migrates_and_users_take_role_attributes() {
    let cfg = config("examples/django");
    let p = plan(&cfg, &BTreeMap::new(), &State::new(), false);
    let all = steps_of(&p);
    for want in [
        r#"CREATE DATABASE "buildsense" OWNER "toolshed""#,
        r#"CREATE DATABASE "maven" OWNER "toolshed""#,
        r#"CREATE ROLE "buildsense" WITH LOGIN CREATEDB"#,
    ] {
        assert!(all.iter().any(|s| s.starts_with(want)), "missing {want}:\n{all:#?}");
    }
    assert!(all.iter().any(|s| s == r#"CREATE ROLE "maven" WITH LOGIN NOINHERIT"#), "{all:#?}");
    assert!(all.iter().any(|s| s == r#"CREATE ROLE "toolshed" WITH LOGIN"#), "{all:#?}");
    // The owner exists before its databases are created.
    let order: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
    let pos = |a: &str| order.iter().position(|x| *x == a).unwrap();
    assert!(pos("user.toolshed") < pos("database.buildsense"), "{order:?}");
    assert!(pos("user.toolshed") < pos("database.maven"), "{order:?}");

    // A user created without createdb is altered; read back with it, it converges.
    let mut state = State::new();
    let attrs =
        json!({"name": "buildsense", "login": true, "connection_limit": -1, "valid_until": null, "member_of": []});
    managed(&mut state, "user.buildsense", "user", "buildsense", attrs);
    let mut live = LiveServer { exists: true, version: "16.4".into(), admin: "postgres".into(), ..Default::default() };
    live.roles.insert("buildsense".into(), LiveRole { login: true, connection_limit: -1, ..Default::default() });
    let lives = BTreeMap::from([(Address::new(Kind::Server, "main"), live.clone())]);
    let p = plan(&cfg, &lives, &state, true);
    let user = p.changes.iter().find(|c| c.address == "user.buildsense").unwrap();
    let sql = steps_of_change(user);
    assert_eq!(sql, vec![r#"ALTER ROLE "buildsense" WITH CREATEDB"#.to_string()]);
    live.roles.get_mut("buildsense").unwrap().flags.insert("createdb".into());
    // An attribute the configuration does not set is left as the server has it.
    live.roles.get_mut("buildsense").unwrap().flags.insert("createrole".into());
    let lives = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    let p = plan(&cfg, &lives, &state, true);
    let user = p.changes.iter().find(|c| c.address == "user.buildsense").unwrap();
    assert!(steps_of_change(user).is_empty(), "{:?}", steps_of_change(user));
}

fn steps_of_change(c: &dbctl::plan::ResourceChange) -> Vec<String> {
    c.steps
        .iter()
        .filter_map(|s| match &s.op {
            dbctl::plan::Op::Sql { sql } => Some(sql.clone()),
            _ => None,
        })
        .collect()
}

fn steps_of(p: &Plan) -> Vec<String> {
    p.changes.iter().flat_map(steps_of_change).collect()
}

#[test]
fn every_format_is_per_database_and_carries_connection_options_and_the_aws_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        r#"
provider "aws" {
  region   = "eu-west-1"
  endpoint = "http://127.0.0.1:5000"
}

server "main" {
  engine = "postgres"
  url    = "postgres://admin@db.example.com/postgres?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Frds.pem"
}

database "orders" {
  server = server.main
}

secret "svc" {
  store = "aws"
  name  = "prod/svc/db"
  generate {
    length = 32
  }
}

user "svc" {
  server   = server.main
  password = secret.svc
}

router "svc" {
  user = user.svc
  route "orders" {
    database = database.orders
  }
  route "invoices" {
    database = database.orders
  }
  publish {
    file   = "svc.json"
    format = "json"
  }
}
"#,
    )
    .unwrap();
    let load_as = |format: &str| {
        let text = std::fs::read_to_string(dir.path().join("main.hcl")).unwrap();
        std::fs::write(
            dir.path().join("main.hcl"),
            text.replace("\"json\"", &format!("\"{format}\""))
                .replace("\"env\"", &format!("\"{format}\""))
                .replace("\"django\"", &format!("\"{format}\"")),
        )
        .unwrap();
        let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
        dbctl::router::render(&cfg, &Address::new(Kind::Router, "svc"), &hosts()).unwrap()
    };
    let doc: serde_json::Value = serde_json::from_str(&load_as("json")).unwrap();
    // Two apps, one database: one entry, both apps on it.
    assert_eq!(doc["databases"].as_object().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["apps"], json!({ "orders": "default", "invoices": "default" }));
    let db = &doc["databases"]["default"];
    assert_eq!(db["options"], json!({ "sslmode": "verify-full", "sslrootcert": "/etc/ssl/rds.pem" }));
    assert_eq!(
        db["password"],
        json!({ "store": "aws", "secret": "prod/svc/db", "key": "password", "region": "eu-west-1", "endpoint": "http://127.0.0.1:5000" })
    );
    assert_eq!(doc["default"], serde_json::Value::Null, "no default route: unrouted apps are an error");

    let env = load_as("env");
    assert!(
        env.contains("DATABASE_URL=postgres://svc@127.0.0.1:5432/orders?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Frds.pem\n"),
        "{env}"
    );
    assert!(env.contains("DATABASE_APP_ORDERS=DEFAULT\nDATABASE_APP_INVOICES=DEFAULT\n"), "{env}");
    assert!(env.contains("DBCTL_AWS_REGION=eu-west-1\nDBCTL_AWS_ENDPOINT=http://127.0.0.1:5000\n"), "{env}");

    let module = load_as("django");
    assert!(module.contains(r#"{"sslmode": "verify-full", "sslrootcert": "/etc/ssl/rds.pem"}"#), "{module}");
    assert!(
        module.contains(r#"_AWS = {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:5000"}"#),
        "{module}"
    );
    assert_eq!(module.matches("_database(\"django.db.backends.postgresql\"").count(), 1, "one alias per database");
}

/// A database dbctl manages leaves the configuration: its `DROP DATABASE`
/// is written in its server's dialect when the plan is made, and every
/// format shows that text (the one apply runs): backquoted on MySQL,
/// double-quoted on PostgreSQL, with a name that quotes, backquotes,
/// ends a statement and is not ASCII.
#[test]
fn a_dropped_database_is_shown_in_its_servers_dialect() {
    let name = "old`db\"'; x ü名";
    for (engine, url, version, want) in [
        ("mysql", "mysql://root@db.internal:3306", "10.11.6-MariaDB", "DROP DATABASE `old``db\"'; x ü名`"),
        ("postgres", "postgres://admin@db.internal/postgres", "15.4", "DROP DATABASE \"old`db\"\"'; x ü名\""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.hcl"),
            format!("server \"main\" {{\n  engine = \"{engine}\"\n  url    = \"{url}\"\n}}\n"),
        )
        .unwrap();
        let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
        let mut live =
            LiveServer { exists: true, version: version.into(), admin: "admin".into(), ..Default::default() };
        live.roles.insert(
            "admin".into(),
            LiveRole { login: true, superuser: true, connection_limit: -1, ..Default::default() },
        );
        live.databases.insert(name.into(), LiveDatabase { owner: "admin".into(), ..Default::default() });
        let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
        let mut state = State::new();
        managed(&mut state, "database.old", "database", name, json!({ "name": name }));
        let p = plan(&cfg, &live, &state, false);
        assert_eq!(p.summary(), "Plan: 0 to add, 0 to change, 1 to destroy.", "{engine}");

        let described: Vec<String> = p.steps().map(|s| s.describe()).collect();
        assert_eq!(described, [want], "{engine}");
        let human = render::human(&p, true);
        assert!(human.contains(&format!("#   {want}\n")), "{engine}: {human}");
        let j = render::json(&p);
        let shown: Vec<&str> =
            j["steps"].as_array().unwrap().iter().map(|s| s["description"].as_str().unwrap()).collect();
        assert_eq!(shown, [want], "{engine}");
        assert_eq!(j["steps"][0]["op"], "drop_database");
        let md = render::markdown(&p, false);
        assert!(md.contains(&format!("{want};\n")), "{engine}: {md}");
        // A saved plan holds the statement apply runs.
        let saved = serde_json::to_value(&p).unwrap();
        assert_eq!(saved["changes"][0]["steps"][0]["sql"], want, "{engine}");
        if engine == "mysql" {
            assert!(!human.contains("DROP DATABASE \"") && !md.contains("DROP DATABASE \""), "{human}\n{md}");
        }
    }
}

/// Roles are planned on another thread than databases and grants: the
/// plan's errors still come in the order of one thread (every user or role
/// first, then every database), and each is reported once.
#[test]
fn errors_keep_their_order_when_roles_are_planned_beside_databases() {
    let dir = tempfile::tempdir().unwrap();
    let mut hcl = String::from(
        "server \"main\" {\n  engine = \"postgres\"\n  url    = \"postgres://admin@127.0.0.1/postgres\"\n}\n",
    );
    for i in 0..40 {
        hcl.push_str(&format!("\nuser \"u{i}\" {{\n  server = server.main\n}}\n"));
        hcl.push_str(&format!("\ndatabase \"d{i}\" {{\n  server = server.main\n}}\n"));
    }
    std::fs::write(dir.path().join("main.hcl"), hcl).unwrap();
    let cfg = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() }).config.unwrap();
    // Every user and database is already there, and none is in the state.
    let mut live = LiveServer { exists: true, version: "16.2".into(), admin: "admin".into(), ..Default::default() };
    for i in 0..40 {
        live.roles.insert(format!("u{i}"), LiveRole { login: true, connection_limit: -1, ..Default::default() });
        live.databases.insert(format!("d{i}"), LiveDatabase { owner: "admin".into(), ..Default::default() });
    }
    let live = BTreeMap::from([(Address::new(Kind::Server, "main"), live)]);
    let errors = diff_of(&cfg, &live, &State::new(), &BTreeMap::new(), time::OffsetDateTime::now_utc())
        .err()
        .expect("objects dbctl does not manage are errors");
    assert_eq!(errors.len(), 80, "{errors:#?}");
    let (users, databases) = errors.split_at(40);
    assert!(users.iter().all(|e| e.starts_with("user \"u")), "{users:#?}");
    assert!(databases.iter().all(|e| e.starts_with("database \"d")), "{databases:#?}");
    // Within each, the order of their names (as one thread plans them).
    let mut sorted = users.to_vec();
    sorted.sort();
    assert_eq!(users, sorted.as_slice());
}
