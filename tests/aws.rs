//! Secrets in AWS Secrets Manager, against moto (started by the test) and a
//! real PostgreSQL server (embedded, started by dbctl).

mod common;

use common::{Moto, Project, SERVER};

fn config(endpoint: &str) -> String {
    format!(
        r#"{SERVER}
provider "aws" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

secret "shop" {{
  store = "aws"
  name  = "test/shop/db"
  generate {{
    length = 24
  }}
}}

user "shop" {{
  server   = server.main
  password = secret.shop
  grant {{
    database   = database.orders
    privileges = ["CONNECT"]
  }}
}}

database "orders" {{
  server = server.main
}}
"#
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn stored(moto: &Moto, name: &str) -> (String, serde_json::Value) {
    let c = moto.secrets_client();
    let v = block_on(c.get_secret_value().secret_id(name).version_stage("AWSCURRENT").send()).expect("secret exists");
    (v.version_id().unwrap().to_string(), serde_json::from_str(v.secret_string().unwrap()).unwrap())
}

/// The version staged AWSPENDING and its labels, sorted.
fn pending_version(moto: &Moto, name: &str) -> (String, Vec<String>) {
    let d = block_on(moto.secrets_client().describe_secret().secret_id(name).send()).unwrap();
    let (id, stages) = d
        .version_ids_to_stages()
        .unwrap()
        .iter()
        .find(|(_, s)| s.iter().any(|x| x == "AWSPENDING"))
        .expect("a pending version");
    let mut stages = stages.clone();
    stages.sort();
    (id.clone(), stages)
}

#[test]
fn passwords_in_secrets_manager_log_in_rotate_and_never_leak() {
    let moto = Moto::start();
    let p = Project::new(&config(&moto.endpoint));
    let mut outputs = vec![p.ok(&["plan", "--verbose"], 0), p.apply()];
    p.converged();

    // Written in the RDS credentials shape, tagged as dbctl's.
    let (v1, doc) = stored(&moto, "test/shop/db");
    assert_eq!(doc["username"], "shop");
    assert_eq!(doc["engine"], "postgres");
    assert_eq!(doc["port"], p.port());
    assert_eq!(doc["dbname"], "orders");
    let pw1 = doc["password"].as_str().unwrap().to_string();
    assert_eq!(pw1.len(), 24);
    let d = block_on(moto.secrets_client().describe_secret().secret_id("test/shop/db").send()).unwrap();
    let tags: Vec<(String, String)> = d
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect();
    assert!(tags.contains(&("managed-by".into(), "dbctl".into())), "{tags:?}");
    // The password logs in to the real server.
    assert_eq!(p.psql_as("shop", Some(&pw1), "orders", "SELECT current_user").unwrap(), "shop");

    // show: metadata, and the value only with --reveal, alone on the last line.
    let shown = p.ok(&["secret", "show", "secret.shop"], 0);
    assert!(shown.contains(&v1) && !shown.contains(&pw1), "{shown}");
    let revealed = p.ok(&["secret", "show", "secret.shop", "--reveal"], 0);
    assert_eq!(revealed.lines().last(), Some(pw1.as_str()));

    // rotate: a new version staged AWSPENDING; AWSCURRENT stays until the
    // apply has set it on the server; the old password then stops working.
    let rotated = p.ok(&["secret", "rotate", "secret.shop"], 0);
    assert!(rotated.contains("pending"), "{rotated}");
    outputs.push(rotated);
    assert_eq!(stored(&moto, "test/shop/db").0, v1, "AWSCURRENT has not moved");
    let (v2, stages) = pending_version(&moto, "test/shop/db");
    assert_eq!(stages, ["AWSPENDING", "DBCTLPENDING"]);
    let pw2 = serde_json::from_str::<serde_json::Value>(
        block_on(moto.secrets_client().get_secret_value().secret_id("test/shop/db").version_stage("AWSPENDING").send())
            .unwrap()
            .secret_string()
            .unwrap(),
    )
    .unwrap()["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(pw1, pw2);
    // A second rotation before the apply: refused, the staged one is kept.
    let again = p.ok(&["secret", "rotate", "secret.shop"], 1);
    assert!(again.contains("a rotation is already pending"), "{again}");
    let shown = p.ok(&["secret", "show", "secret.shop"], 0);
    assert!(shown.contains(&format!("pending: version {v2}")), "{shown}");
    outputs.push(shown);
    let plan = p.ok(&["plan", "--verbose"], 0);
    assert!(plan.contains("ALTER ROLE \"shop\" PASSWORD (sensitive)"), "{plan}");
    assert!(plan.contains("rotation pending"), "{plan}");
    assert!(!plan.contains("a rotation is in progress in AWS Secrets Manager"), "dbctl's own rotation: {plan}");
    outputs.push(plan);
    outputs.push(p.apply());
    p.converged();
    // AWSCURRENT moved to the new version, the old one is AWSPREVIOUS, no pending label is left.
    assert_eq!(stored(&moto, "test/shop/db").0, v2);
    let d = block_on(moto.secrets_client().describe_secret().secret_id("test/shop/db").send()).unwrap();
    let stages = d.version_ids_to_stages().unwrap();
    assert_eq!(stages[&v2], ["AWSCURRENT"]);
    assert_eq!(stages[&v1], ["AWSPREVIOUS"]);
    assert!(p.psql_as("shop", Some(&pw1), "orders", "SELECT 1").is_err(), "old password fails");
    assert_eq!(p.psql_as("shop", Some(&pw2), "orders", "SELECT current_user").unwrap(), "shop");

    // A rotation in progress in Secrets Manager is left alone and reported.
    block_on(
        moto.secrets_client()
            .put_secret_value()
            .secret_id("test/shop/db")
            .secret_string("{\"pending\": true}")
            .version_stages("AWSPENDING")
            .send(),
    )
    .unwrap();
    let plan = p.ok(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.contains("a rotation is in progress in AWS Secrets Manager (AWSPENDING)"), "{plan}");
    outputs.push(plan);

    // Destroy schedules deletion; the name is then refused with a clear message.
    outputs.push(p.ok(&["destroy", "--auto-approve"], 0));
    let d = block_on(moto.secrets_client().describe_secret().secret_id("test/shop/db").send()).unwrap();
    assert!(d.deleted_date().is_some(), "deletion scheduled, not immediate");
    let again = p.ok(&["plan"], 1);
    assert!(again.contains("is scheduled for deletion"), "{again}");

    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(&pw1) && !o.contains(&pw2), "output {i} shows a password");
    }
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains(&pw1) && !state.contains(&pw2));
}

#[test]
fn an_unreachable_aws_endpoint_is_a_clear_error_and_nothing_is_applied() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let p = Project::new(&config(&endpoint));
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(out.contains(&format!("AWS Secrets Manager at {endpoint}")), "{out}");
    assert!(!p.path().join(".dbctl/servers/main/data").exists(), "nothing was applied");
}

/// A user's password and a routing document in Secrets Manager, under the names of `config`.
fn config_with_routing(endpoint: &str) -> String {
    format!(
        r#"{SERVER}
provider "aws" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

secret "shop" {{
  store = "aws"
  name  = "test/shop/db"
  generate {{
    length = 24
  }}
}}

secret "routing" {{
  store = "aws"
  name  = "test/shop/routing"
}}

user "shop" {{
  server   = server.main
  password = secret.shop
}}

database "orders" {{
  server = server.main
}}

router "shop" {{
  user   = user.shop
  access = "readwrite"
  route "orders" {{
    database = database.orders
  }}
  publish {{
    secret = secret.routing
    format = "json"
  }}
}}
"#
    )
}

/// Every version id and the current value of a secret.
fn versions(moto: &Moto, name: &str) -> (Vec<String>, String) {
    let c = moto.secrets_client();
    let d = block_on(c.describe_secret().secret_id(name).send()).unwrap();
    let mut ids: Vec<String> = d.version_ids_to_stages().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    ids.sort();
    let v = block_on(c.get_secret_value().secret_id(name).send()).unwrap();
    (ids, v.secret_string().unwrap().to_string())
}

fn tags(moto: &Moto, name: &str) -> Vec<(String, String)> {
    let d = block_on(moto.secrets_client().describe_secret().secret_id(name).send()).unwrap();
    d.tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect()
}

#[test]
fn an_untagged_secret_is_never_overwritten_or_used_until_imported() {
    let moto = Moto::start();
    // Another team's secrets, under the names the configuration uses, without dbctl's tag.
    let c = moto.secrets_client();
    let theirs = "another-teams-password-1";
    let arn = block_on(c.create_secret().name("test/shop/db").secret_string(theirs).send())
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    block_on(c.create_secret().name("test/shop/routing").secret_string("their document").send()).unwrap();
    let before = (versions(&moto, "test/shop/db"), versions(&moto, "test/shop/routing"));

    let p = Project::new(&config_with_routing(&moto.endpoint));
    // The plan refuses, naming the secret and the command that adopts it.
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("secret.shop: AWS Secrets Manager at"), "{out}");
    assert!(out.contains("`dbctl import secret.shop 'test/shop/db'`"), "{out}");
    assert!(out.contains("secret.routing: AWS Secrets Manager at"), "{out}");
    assert!(out.contains("already holds a secret named \"test/shop/routing\" that is not managed by dbctl"), "{out}");
    assert!(out.contains("`dbctl import secret.routing 'test/shop/routing'`"), "{out}");
    assert!(!out.contains("Plan:"), "{out}");
    // Apply neither writes them nor sets a password from them.
    let out = p.ok(&["apply", "--auto-approve"], 1);
    assert!(!out.contains("Apply complete"), "{out}");
    assert_eq!((versions(&moto, "test/shop/db"), versions(&moto, "test/shop/routing")), before);
    assert!(!out.contains(theirs), "{out}");

    // Import by name: tagged and recorded; the other one is still refused.
    let out = p.ok(&["import", "secret.routing", "test/shop/routing"], 0);
    assert!(out.contains("Imported secret.routing"), "{out}");
    assert!(tags(&moto, "test/shop/routing").contains(&("managed-by".into(), "dbctl".into())));
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("`dbctl import secret.shop 'test/shop/db'`") && !out.contains("secret.routing:"), "{out}");
    // An import names the configured secret, not another one.
    let out = p.ok(&["import", "secret.shop", "test/shop/routing"], 1);
    assert!(out.contains("is the secret \"test/shop/routing\", but secret.shop is named \"test/shop/db\""), "{out}");
    assert!(!tags(&moto, "test/shop/db").iter().any(|(k, _)| k == "managed-by"));

    // Import by ARN; then the adopted value is the user's password and the document is written.
    p.ok(&["import", "secret.shop", &arn], 0);
    let t = tags(&moto, "test/shop/db");
    assert!(
        t.contains(&("managed-by".into(), "dbctl".into()))
            && t.contains(&("dbctl:address".into(), "secret.shop".into()))
    );
    let out = p.ok(&["import", "secret.shop", &arn], 1);
    assert!(out.contains("secret.shop is already managed"), "{out}");
    let state = p.ok(&["state", "list"], 0);
    assert!(state.contains("secret.routing") && state.contains("secret.shop"), "{state}");
    p.apply();
    p.converged();
    assert_eq!(versions(&moto, "test/shop/db").0, before.0 .0, "the adopted password is kept, not regenerated");
    assert_eq!(p.psql_as("shop", Some(theirs), "orders", "SELECT current_user").unwrap(), "shop");
    let doc: serde_json::Value = serde_json::from_str(&versions(&moto, "test/shop/routing").1).unwrap();
    assert!(doc.to_string().contains("orders"), "{doc}");
}
