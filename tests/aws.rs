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
    let v = block_on(c.get_secret_value().secret_id(name).send()).expect("secret exists");
    (v.version_id().unwrap().to_string(), serde_json::from_str(v.secret_string().unwrap()).unwrap())
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

    // rotate: a new version now; the next apply sets it; the old password stops working.
    outputs.push(p.ok(&["secret", "rotate", "secret.shop"], 0));
    let (v2, doc2) = stored(&moto, "test/shop/db");
    assert_ne!(v1, v2);
    let pw2 = doc2["password"].as_str().unwrap().to_string();
    let plan = p.ok(&["plan", "--verbose"], 0);
    assert!(plan.contains("ALTER ROLE \"shop\" PASSWORD (sensitive)"), "{plan}");
    outputs.push(plan);
    outputs.push(p.apply());
    p.converged();
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
