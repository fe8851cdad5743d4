//! RDS and Aurora clusters against moto (started by the test). moto checks
//! the API's shape, not AWS's rules (engine versions, instance classes,
//! identifiers, retention ranges): dbctl checks those itself, and the
//! configuration tests at the end show it. The SQL half of
//! examples/aurora runs against a local TLS-only PostgreSQL through
//! `connect { }`, since moto's cluster endpoint is a name that leads nowhere.

mod common;

use common::{text, Moto, PgServer, PgTls, Project, TlsFiles};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn rds(moto: &Moto) -> aws_sdk_rds::Client {
    let conf = aws_sdk_rds::config::Builder::new()
        .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
        .region(aws_sdk_rds::config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "static"))
        .build();
    aws_sdk_rds::Client::from_conf(conf)
}

fn cluster(moto: &Moto, id: &str) -> Option<aws_sdk_rds::types::DbCluster> {
    let out = block_on(rds(moto).describe_db_clusters().send()).unwrap();
    out.db_clusters().iter().find(|c| c.db_cluster_identifier() == Some(id)).cloned()
}

/// (identifier, class) of the cluster's instances, sorted.
fn instances(moto: &Moto, id: &str) -> Vec<(String, String)> {
    let out = block_on(rds(moto).describe_db_instances().send()).unwrap();
    let mut v: Vec<(String, String)> = out
        .db_instances()
        .iter()
        .filter(|i| i.db_cluster_identifier() == Some(id))
        .map(|i| (i.db_instance_identifier().unwrap().to_string(), i.db_instance_class().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

struct Opts<'a> {
    instances: u32,
    daily: u32,
    protection: bool,
    final_snapshot: bool,
    version: &'a str,
    class: &'a str,
}

const BASE: Opts =
    Opts { instances: 2, daily: 7, protection: false, final_snapshot: true, version: "15.4", class: "db.r6g.large" };

fn config(moto: &Moto, o: &Opts) -> String {
    format!(
        r#"provider "aws" {{
  region   = "us-east-1"
  endpoint = "{}"
}}

secret "master" {{
  store = "aws"
  name  = "test/prod/master"
  generate {{
    length = 24
  }}
}}

backup_policy "rds" {{
  schedule = "30 4 * * *"
  keep {{
    daily = {}
  }}
}}

rds_cluster "prod" {{
  engine              = "aurora-postgresql"
  engine_version      = "{}"
  instance_class      = "{}"
  instances           = {}
  master_username     = "dbctl"
  master_password     = secret.master
  backup_policy       = backup_policy.rds
  deletion_protection = {}
  final_snapshot      = {}
}}
"#,
        moto.endpoint, o.daily, o.version, o.class, o.instances, o.protection, o.final_snapshot
    )
}

#[test]
fn a_cluster_is_planned_created_converges_grows_and_changes_retention() {
    let moto = Moto::start();
    let p = Project::new(&config(&moto, &BASE));
    let plan = p.ok(&["plan", "--detailed-exitcode", "--verbose"], 2);
    assert!(plan.contains("rds_cluster.prod will be created"), "{plan}");
    assert!(plan.contains("endpoint                    = (known after apply)"), "{plan}");
    assert!(plan.contains("create instance prod-2 (db.r6g.large) in cluster prod"), "{plan}");
    assert!(cluster(&moto, "prod").is_none(), "a plan creates nothing");

    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    let c = cluster(&moto, "prod").expect("created");
    assert_eq!(c.engine(), Some("aurora-postgresql"));
    assert_eq!(c.engine_version(), Some("15.4"));
    assert_eq!(c.master_username(), Some("dbctl"));
    assert_eq!(c.deletion_protection(), Some(false));
    assert_eq!(c.backup_retention_period(), Some(7));
    assert_eq!(c.preferred_backup_window(), Some("04:30-05:00"));
    assert!(c.tag_list().iter().any(|t| t.key() == Some("managed-by") && t.value() == Some("dbctl")));
    assert_eq!(
        instances(&moto, "prod"),
        [("prod-1".to_string(), "db.r6g.large".to_string()), ("prod-2".into(), "db.r6g.large".into())]
    );
    // The master password never shows.
    let master = block_on(moto.secrets_client().get_secret_value().secret_id("test/prod/master").send()).unwrap();
    let pw = master.secret_string().unwrap().to_string();
    assert!(!out.contains(&pw) && !plan.contains(&pw));
    p.converged();

    // A plan reads AWS in one batch: one DescribeDBClusters and one
    // DescribeDBInstances (moto's recorder lists the requests).
    let actions = recorded_rds_actions(&moto, || {
        p.converged();
    });
    assert_eq!(actions, ["DescribeDBClusters", "DescribeDBInstances"]);

    // A new master password (here --replace; also a due rotate_every) is set on the cluster too.
    let plan = p.ok(&["plan", "--replace", "secret.master", "--verbose", "--detailed-exitcode"], 2);
    assert!(plan.contains("set the master password of cluster prod to the new value of secret.master"), "{plan}");
    let out = p.ok(&["apply", "--replace", "secret.master", "--auto-approve"], 0);
    let master = block_on(moto.secrets_client().get_secret_value().secret_id("test/prod/master").send()).unwrap();
    let pw2 = master.secret_string().unwrap().to_string();
    assert_ne!(pw, pw2);
    assert!(!out.contains(&pw2) && !plan.contains(&pw2), "{out}");
    p.converged();

    // Growing `instances`: one more instance, named after the cluster.
    p.write(&config(&moto, &Opts { instances: 3, ..BASE }));
    let plan = p.ok(&["plan", "--detailed-exitcode", "--verbose"], 2);
    assert!(plan.contains("~ instances = 2 -> 3"), "{plan}");
    assert!(plan.contains("create instance prod-3"), "{plan}");
    p.apply();
    assert_eq!(instances(&moto, "prod").len(), 3);
    p.converged();

    // Retention from the backup policy: takes effect now, no restart.
    p.write(&config(&moto, &Opts { instances: 3, daily: 14, ..BASE }));
    let plan = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(plan.contains("~ backup_retention_period = 7 -> 14"), "{plan}");
    assert!(plan.contains("take effect now, no restart"), "{plan}");
    p.apply();
    assert_eq!(cluster(&moto, "prod").unwrap().backup_retention_period(), Some(14));
    p.converged();

    // An engine upgrade and a class change are flagged: major version,
    // maintenance window, restarts.
    p.write(&config(&moto, &Opts { instances: 3, daily: 14, version: "16.1", class: "db.r6g.xlarge", ..BASE }));
    let plan = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(plan.contains("engine version upgrade 15.4 -> 16.1 (a MAJOR version"), "{plan}");
    assert!(plan.contains("waits for the maintenance window (apply_immediately = false)"), "{plan}");
    assert!(plan.contains("instance_class: each instance restarts (a reboot) in the maintenance window"), "{plan}");
    // Shrinking removes the highest-numbered instance.
    p.write(&config(&moto, &Opts { instances: 2, daily: 14, ..BASE }));
    let plan = p.ok(&["plan", "--detailed-exitcode", "--verbose"], 2);
    assert!(plan.contains("delete instance prod-3 of cluster prod"), "{plan}");
    p.apply();
    assert_eq!(instances(&moto, "prod").len(), 2);
    p.converged();
}

#[test]
fn destroy_is_refused_with_deletion_protection_and_leaves_a_named_final_snapshot() {
    let moto = Moto::start();
    let p = Project::new(&config(&moto, &Opts { protection: true, ..BASE }));
    p.apply();
    assert_eq!(cluster(&moto, "prod").unwrap().deletion_protection(), Some(true));

    // Refused in the plan, before anything runs.
    let out = p.ok(&["destroy", "--auto-approve"], 1);
    assert!(out.contains("cluster prod has deletion protection, so it cannot be destroyed"), "{out}");
    assert!(out.contains("set deletion_protection = false"), "{out}");
    assert!(cluster(&moto, "prod").is_some());
    assert_eq!(instances(&moto, "prod").len(), 2, "nothing ran");

    // Protection off (applied), then destroy: the plan names the final snapshot.
    p.write(&config(&moto, &BASE));
    let plan = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(plan.contains("~ deletion_protection = true -> false"), "{plan}");
    p.apply();
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    let name = regex::Regex::new(r"final snapshot: (prod-final-\d{14})").unwrap();
    let snap = name.captures(&out).unwrap_or_else(|| panic!("the plan names the snapshot:\n{out}"))[1].to_string();
    assert!(cluster(&moto, "prod").is_none(), "deleted");
    assert!(instances(&moto, "prod").is_empty());
    let snaps = block_on(rds(&moto).describe_db_cluster_snapshots().send()).unwrap();
    let ids: Vec<&str> =
        snaps.db_cluster_snapshots().iter().filter_map(|s| s.db_cluster_snapshot_identifier()).collect();
    assert!(ids.contains(&snap.as_str()), "{ids:?} holds {snap}");
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains("rds_cluster.prod"), "{state}");

    // final_snapshot = false: the plan says there is none, and none is taken.
    // Other names: the first destroy scheduled its master secret for deletion,
    // and moto names automated snapshots by cluster and minute.
    let p = Project::new(
        &config(&moto, &Opts { final_snapshot: false, ..BASE })
            .replace("test/prod/master", "test/other/master")
            .replace("rds_cluster \"prod\"", "rds_cluster \"other\""),
    );
    p.apply();
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("NO final snapshot"), "{out}");
    let snaps = block_on(rds(&moto).describe_db_cluster_snapshots().send()).unwrap();
    let ids: Vec<&str> =
        snaps.db_cluster_snapshots().iter().filter_map(|s| s.db_cluster_snapshot_identifier()).collect();
    assert!(ids.iter().any(|i| i.starts_with("prod-final-")), "{ids:?}");
    assert!(!ids.iter().any(|i| i.starts_with("other-final")), "{ids:?}");
}

#[test]
fn import_adopts_an_existing_cluster() {
    let moto = Moto::start();
    let client = rds(&moto);
    block_on(
        client
            .create_db_cluster()
            .db_cluster_identifier("legacy")
            .engine("aurora-postgresql")
            .engine_version("15.4")
            .master_username("dbctl")
            .master_user_password("legacy-secret-pw")
            .backup_retention_period(1)
            .send(),
    )
    .unwrap();
    block_on(
        client
            .create_db_instance()
            .db_instance_identifier("legacy-1")
            .db_cluster_identifier("legacy")
            .engine("aurora-postgresql")
            .db_instance_class("db.r6g.large")
            .send(),
    )
    .unwrap();
    let hcl = format!(
        r#"provider "aws" {{
  region   = "us-east-1"
  endpoint = "{}"
}}
rds_cluster "legacy" {{
  engine                      = "aurora-postgresql"
  engine_version              = "15.4"
  instance_class              = "db.r6g.large"
  instances                   = 1
  master_username             = "dbctl"
  manage_master_user_password = true
}}
"#,
        moto.endpoint
    );
    let p = Project::new(&hcl);
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("already exists in AWS but dbctl does not manage it"), "{out}");
    assert!(out.contains("dbctl import rds_cluster.legacy legacy"), "{out}");

    let out = p.ok(&["import", "rds_cluster.legacy", "no-such"], 1);
    assert!(out.contains("there is no RDS cluster \"no-such\""), "{out}");
    let out = p.ok(&["import", "rds_cluster.legacy", "legacy"], 0);
    assert!(out.contains("Imported rds_cluster.legacy"), "{out}");
    let c = cluster(&moto, "legacy").unwrap();
    assert!(c.tag_list().iter().any(|t| t.key() == Some("managed-by") && t.value() == Some("dbctl")));
    p.converged();
    let out = p.ok(&["import", "rds_cluster.legacy", "legacy"], 1);
    assert!(out.contains("already managed"), "{out}");
}

#[test]
fn a_server_on_a_cluster_not_yet_created_plans_its_objects_known_after_apply() {
    let moto = Moto::start();
    let hcl = format!(
        "{}\nserver \"main\" {{\n  engine = \"postgres\"\n  rds_cluster = rds_cluster.prod\n}}\n\
         database \"app\" {{\n  server = server.main\n}}\n\
         user \"app\" {{\n  server = server.main\n  grant {{\n    database = database.app\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
        config(&moto, &BASE)
    );
    let p = Project::new(&hcl);
    let out = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(out.contains("+ endpoint    = (known after apply)"), "{out}");
    assert!(out.contains("database.app will be created"), "{out}");
    assert!(out.contains("user.app will be created"), "{out}");
    assert!(out.contains("its endpoint is known after apply"), "{out}");
    let json = p.plan_json();
    let server = json["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "server.main").unwrap();
    assert_eq!(server["change"]["after_unknown"]["endpoint"], true, "{server}");
    let cl = json["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "rds_cluster.prod").unwrap();
    assert_eq!(cl["change"]["after_unknown"]["endpoint"], true, "{cl}");
    // The JSON plan keeps to schema/plan.schema.json (a full Draft 2020-12 validator).
    let python = std::env::var_os("DBCTL_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let schema = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json");
    let doc = p.path().join("plan.json");
    std::fs::write(&doc, json.to_string()).unwrap();
    let check = std::process::Command::new(python)
        .args(["-c", "import json,sys; from jsonschema import Draft202012Validator as V; \
                      errs=[e.message for e in V(json.load(open(sys.argv[1]))).iter_errors(json.load(open(sys.argv[2])))]; \
                      print(errs); sys.exit(1 if errs else 0)"])
        .arg(&schema)
        .arg(&doc)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    let steps = common::steps(&json);
    let create_cluster = steps.iter().position(|s| s.starts_with("create RDS cluster prod")).unwrap();
    let create_db = steps.iter().position(|s| s.starts_with("CREATE DATABASE")).unwrap();
    assert!(create_cluster < create_db, "{steps:?}");
}

#[test]
fn validate_checks_the_rules_moto_skips() {
    let moto = Moto::start();
    let bad = config(&moto, &BASE)
        .replace("\"15.4\"", "\"fifteen\"")
        .replace("db.r6g.large", "r6g.large")
        .replace("master_username     = \"dbctl\"", "master_username     = \"rdsadmin\"")
        .replace("daily = 7", "daily = 40")
        .replace("rds_cluster \"prod\"", "rds_cluster \"prod--db\"");
    let p = Project::new(&bad);
    let out = p.ok(&["validate"], 1);
    for want in [
        "not an engine version",
        "is not an instance class",
        "is reserved by RDS",
        "RDS keeps automated backups for 1 to 35 days",
        "not a valid RDS identifier",
        "main.hcl:",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
    let both = config(&moto, &BASE).replace(
        "master_password     = secret.master",
        "master_password = secret.master\n  manage_master_user_password = true",
    );
    let out = Project::new(&both).ok(&["validate"], 1);
    assert!(out.contains("sets master_password and manage_master_user_password"), "{out}");
    let weekly = config(&moto, &BASE).replace("30 4 * * *", "0 3 * * 1");
    let out = Project::new(&weekly).ok(&["validate"], 1);
    assert!(out.contains("backup window is daily"), "{out}");
}

/// examples/aurora: the plan before anything exists, then one apply that
/// creates the cluster in moto and everything on it in a local TLS-only
/// PostgreSQL reached through `connect { }`, with verify-full against the
/// test CA given as `sslrootcert`.
#[test]
fn examples_aurora_plans_and_applies_through_a_tunnel_with_tls() {
    let moto = Moto::start();
    let files = TlsFiles::create();
    let pg = PgServer::start(PgTls {
        cert: Some((&files, "server")),
        hba: "hostssl all all 127.0.0.1/32 scram-sha-256",
        listen: "127.0.0.1",
    });
    let p = Project::example("aurora");
    let port = pg.port.to_string();
    let ca = files.path("ca.crt").display().to_string();
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("DBCTL_VAR_tunnel_port", port.as_str()),
        ("DBCTL_VAR_rds_ca", ca.as_str()),
    ];
    let run = |args: &[&str], rc: i32| {
        let out = p.dbctl_env(args, &env);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(rc), "dbctl {args:?}:\n{all}");
        all
    };
    let plan = run(&["plan", "--detailed-exitcode"], 2);
    println!("---- examples/aurora, plan before anything exists ----\n{plan}");
    assert!(plan.contains("rds_cluster.aurora will be created"), "{plan}");
    assert!(plan.contains("+ endpoint    = (known after apply)"), "{plan}");
    assert!(plan.contains("database.context[\"users\"] will be created"), "{plan}");

    // The master secret RDS keeps: moto makes it with a fixed user and
    // password; the RDS-like master (CREATEROLE, CREATEDB, no superuser)
    // exists on the local server with them.
    pg.sql("postgres", "CREATE ROLE admin LOGIN CREATEROLE CREATEDB PASSWORD 'P@55w0rd!'");
    let out = run(&["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    let c = cluster(&moto, "aurora").expect("created");
    let secret_arn =
        c.master_user_secret().and_then(|s| s.secret_arn()).expect("RDS keeps the master secret").to_string();
    let master = block_on(moto.secrets_client().get_secret_value().secret_id(&secret_arn).send()).unwrap();
    let m: serde_json::Value = serde_json::from_str(master.secret_string().unwrap()).unwrap();
    assert_eq!((m["username"].as_str(), m["password"].as_str()), (Some("admin"), Some("P@55w0rd!")));
    assert!(!out.contains("P@55w0rd!"), "{out}");
    assert_eq!(c.backup_retention_period(), Some(14));
    assert_eq!(c.preferred_backup_window(), Some("03:00-03:30"));
    assert_eq!(c.deletion_protection(), Some(true));
    assert_eq!(instances(&moto, "aurora").len(), 2);

    // The SQL half, on the local server, over TLS.
    let dbs = pg.sql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'app_%'",
    );
    assert_eq!(dbs, "app_billing,app_users,app_workflow");
    let roles = pg.sql("postgres", "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('buildsense','billing','owners')");
    assert_eq!(roles, "billing,buildsense,owners");
    assert!(pg.log().contains("SSL enabled"), "dbctl's connections are encrypted");
    // The routing document names the cluster's endpoint, not the tunnel or a placeholder.
    let doc = block_on(moto.secrets_client().get_secret_value().secret_id("prod/buildsense/routing").send()).unwrap();
    let doc = doc.secret_string().unwrap().to_string();
    let endpoint = c.endpoint().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let hosts: Vec<&serde_json::Value> =
        parsed["databases"].as_object().unwrap().values().map(|d| &d["host"]).collect();
    assert!(!hosts.is_empty() && hosts.iter().all(|h| *h == endpoint), "{doc}");
    assert!(!doc.contains("known after apply"), "{doc}");
    let user = block_on(moto.secrets_client().get_secret_value().secret_id("prod/buildsense/db").send()).unwrap();
    let user: serde_json::Value = serde_json::from_str(user.secret_string().unwrap()).unwrap();
    assert_eq!(user["host"], endpoint);

    let out = run(&["plan", "--detailed-exitcode"], 0);
    assert!(out.contains("No changes."), "{out}");
    // Deletion protection holds the cluster.
    let out = run(&["destroy", "--auto-approve"], 1);
    assert!(out.contains("deletion protection"), "{out}");
    assert!(cluster(&moto, "aurora").is_some());

    // Without it, the cluster goes with a final snapshot, and what lives on
    // its server goes with it: nothing runs on the server (the local one
    // stands in for the cluster, so it still holds them).
    let main = p.path().join("main.hcl");
    let hcl = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, hcl.replace("deletion_protection         = true", "deletion_protection         = false"))
        .unwrap();
    run(&["apply", "--auto-approve"], 0);
    let out = run(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("final snapshot: aurora-final-"), "{out}");
    assert!(out.contains("goes with rds_cluster.aurora: nothing to run on the server"), "{out}");
    assert!(!out.contains("DROP DATABASE"), "{out}");
    assert!(cluster(&moto, "aurora").is_none());
    let dbs = pg.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'app_%'");
    assert_eq!(dbs, "3");
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains("database.context") && !state.contains("rds_cluster.aurora"), "{state}");
}

/// `admin_password = rds_cluster.NAME.master_secret`: a server reached by
/// its own url (a reader endpoint, another host) logs in with the master
/// secret RDS keeps for a cluster. Before the cluster exists the plan says
/// to create it first; the validate rule refuses a cluster whose password
/// RDS does not manage.
#[test]
fn a_server_reads_the_master_secret_of_a_cluster_through_an_expression() {
    let moto = Moto::start();
    let pg = PgServer::start(PgTls { cert: None, hba: "host all all 127.0.0.1/32 scram-sha-256", listen: "127.0.0.1" });
    let hcl = format!(
        r#"provider "aws" {{
  region   = "us-east-1"
  endpoint = "{}"
}}

rds_cluster "prod" {{
  engine                      = "aurora-postgresql"
  engine_version              = "15.4"
  instance_class              = "db.r6g.large"
  instances                   = 1
  master_username             = "admin"
  manage_master_user_password = true
}}

server "reporting" {{
  engine         = "postgres"
  url            = "postgres://127.0.0.1:{}/postgres?sslmode=disable"
  admin_password = rds_cluster.prod.master_secret
}}

database "reports" {{
  server = server.reporting
  name   = "reports; \"x"
}}
"#,
        moto.endpoint, pg.port
    );
    let p = Project::new(&hcl);
    p.ok(&["validate"], 0);
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("the master secret of rds_cluster.prod, which does not exist yet"), "{out}");
    assert!(out.contains("dbctl apply --target rds_cluster.prod"), "{out}");
    let out = p.ok(&["apply", "--auto-approve", "--target", "rds_cluster.prod"], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(cluster(&moto, "prod").is_some());

    // moto keeps admin / P@55w0rd! as the managed master secret: that login
    // exists on the local server, as an RDS master (no superuser).
    pg.sql("postgres", "CREATE ROLE admin LOGIN CREATEROLE CREATEDB PASSWORD 'P@55w0rd!'");
    let out = p.ok(&["plan", "--detailed-exitcode"], 2);
    assert!(out.contains("database.reports will be created"), "{out}");
    let out = p.apply();
    assert!(!out.contains("P@55w0rd!"), "{out}");
    assert_eq!(
        pg.sql("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'reports; \"x'"),
        "admin"
    );
    p.converged();
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    assert!(!state.contains("P@55w0rd!"), "{state}");
    assert!(!pg.log().contains("P@55w0rd!"), "the password reached the server's log");

    // Without a managed master secret there is nothing to read.
    p.write(&hcl.replace("manage_master_user_password = true", "master_password = secret.master").replace(
        "server \"reporting\"",
        "secret \"master\" {\n  value = \"a-given-master-pw\"\n}\n\nserver \"reporting\"",
    ));
    let out = p.ok(&["validate"], 1);
    assert!(out.contains("admin_password = rds_cluster.prod.master_secret, but RDS does not manage"), "{out}");
    assert!(out.contains("there is no master secret to read"), "{out}");
}

/// A cluster removed from the configuration is destroyed by a saved plan
/// applied later: the snapshot taken is the one the plan named, although
/// the clock moved on.
#[test]
fn a_saved_plan_deletes_a_removed_cluster_with_the_snapshot_it_named() {
    let moto = Moto::start();
    let p = Project::new(&config(&moto, &BASE));
    p.apply();
    let provider_only =
        format!("provider \"aws\" {{\n  region   = \"us-east-1\"\n  endpoint = \"{}\"\n}}\n", moto.endpoint);
    p.write(&provider_only);
    let plan_file = p.path().join("remove.plan");
    let out = p.ok(&["plan", "--out", plan_file.to_str().unwrap()], 0);
    assert!(out.contains("rds_cluster.prod will be destroyed"), "{out}");
    let snap =
        regex::Regex::new(r"final snapshot: (prod-final-\d{14})").unwrap().captures(&out).unwrap()[1].to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = p.ok(&["apply", "--auto-approve", plan_file.to_str().unwrap()], 0);
    assert!(out.contains(&format!("take final snapshot {snap}")), "{out}");
    assert!(cluster(&moto, "prod").is_none());
    let snaps = block_on(rds(&moto).describe_db_cluster_snapshots().send()).unwrap();
    let ids: Vec<&str> =
        snaps.db_cluster_snapshots().iter().filter_map(|s| s.db_cluster_snapshot_identifier()).collect();
    assert!(ids.contains(&snap.as_str()), "{ids:?}");
}

/// The RDS actions (`Action=` of each request, in order) that `f` made moto
/// receive, from moto's request recorder.
fn recorded_rds_actions(moto: &Moto, f: impl FnOnce()) -> Vec<String> {
    let curl = |method: &str, path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-X", method, &format!("{}/moto-api/recorder/{path}", moto.endpoint)])
            .output()
            .unwrap();
        assert!(out.status.success());
        text(&out.stdout)
    };
    curl("POST", "reset-recording");
    curl("POST", "start-recording");
    f();
    curl("POST", "stop-recording");
    let recording = curl("GET", "download-recording");
    let port = moto.endpoint.rsplit(':').next().unwrap();
    std::fs::remove_file(std::env::temp_dir().join(format!("dbctl-moto-recording-{port}"))).ok();
    let mut out = Vec::new();
    for line in recording.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if !r["headers"]["User-Agent"].as_str().unwrap_or_default().contains("api/rds/") {
            continue;
        }
        let body = r["body"].as_str().unwrap_or_default();
        let body = if r["body_encoded"] == true { base64(body) } else { body.to_string() };
        let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("?").to_string();
        out.push(action);
    }
    out
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|x| *x == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
