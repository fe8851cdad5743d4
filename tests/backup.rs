//! Backups against a real PostgreSQL server (embedded, started by dbctl),
//! to a local folder and to S3 on moto.

mod common;

use common::{Moto, Project, SERVER};

fn config(storage: &str, keep: &str, extra: &str) -> String {
    format!(
        r#"{SERVER}
{extra}
database "shop" {{
  server = server.main
  name   = "shop db"
}}

user "svc" {{
  server = server.main
  grant {{
    database   = database.shop
    privileges = ["CONNECT"]
  }}
}}

backup_policy "nightly" {{
  databases   = [database.shop]
  schedule    = "0 3 * * *"
  storage     = "{storage}"
  compression = "zstd"
  keep {{
{keep}
  }}
}}
"#
    )
}

fn list(p: &Project) -> Vec<serde_json::Value> {
    let out = p.dbctl(&["backup", "list", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn seed(p: &Project) {
    p.sql("shop db", "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    p.sql("shop db", "CREATE SCHEMA \"odd; name\"; CREATE TABLE \"odd; name\".\"t'x\" AS SELECT 1 AS a");
    // point has no hash function: a server-side checksum falls back to the text form.
    p.sql("shop db", "CREATE TABLE geo (p point); INSERT INTO geo VALUES ('(1,2)'), ('(3,4)')");
    // Values whose text depends on session settings, a generated column, a large object,
    // a table without columns, a keyword and unicode as names, an empty table.
    p.sql(
        "shop db",
        "CREATE TABLE \"user\" (t timestamptz, f float8, i interval, b bytea, n numeric, \
         g int GENERATED ALWAYS AS (length(b)) STORED); \
         INSERT INTO \"user\" VALUES ('2024-02-29 12:34:56.789+05', 0.1, '1 day 02:03', '\\x00ff0a', 1e-20); \
         SELECT lo_from_bytea(0, 'large object'); \
         CREATE TABLE nocols (); INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES; \
         CREATE TABLE \"Zürich\" (x text); INSERT INTO \"Zürich\" VALUES (E'tab\\there'), (NULL); \
         CREATE TABLE empty (x int)",
    );
}

const TABLES: usize = 7;

#[test]
fn run_list_restore_verify_and_a_corrupted_backup_fails() {
    let p = Project::new(&config("file://.dbctl/backups", "    last = 5", ""));
    p.apply();
    seed(&p);
    // A registered policy whose database has no backup: the plan warns.
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("Warning: backup_policy.nightly: database.shop has no backup yet"), "{plan}");
    let out = p.ok(&["backup", "run"], 0);
    let plan = p.ok(&["plan", "--detailed-exitcode"], 0);
    assert!(!plan.contains("Warning"), "{plan}");
    assert!(out.contains("backup_policy.nightly: database.shop -> "), "{out}");
    // --due: the schedule's last occurrence is before this backup.
    let out = p.ok(&["backup", "run", "--due"], 0);
    assert!(out.contains("not due"), "{out}");

    let all = list(&p);
    assert_eq!(all.len(), 1);
    let m = &all[0];
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["tables"]["public.orders"]["rows"], 5000);
    assert_eq!(m["tables"]["public.nocols"]["rows"], 2);
    assert_eq!(m["tables"]["public.\"Zürich\""]["rows"], 2);
    assert_eq!(m["tables"]["public.empty"]["rows"], 0);
    assert_eq!(m["tables"].as_object().unwrap().len(), TABLES, "{m}");
    // Counted from the dump stream itself, not by a second scan on the server.
    for (t, stat) in m["tables"].as_object().unwrap() {
        assert!(stat["checksum"].as_str().unwrap().starts_with("copy:"), "{t}: {stat}");
    }
    assert_eq!(m["server_version"].as_str().unwrap().split('.').next().unwrap().len(), 2);
    assert!(m["compressed_size"].as_u64().unwrap() < m["size"].as_u64().unwrap(), "zstd compresses");
    assert_eq!(m["verified"], false);

    // Restore into a new database: the same rows. Never over an existing one without --replace.
    p.ok(&["backup", "restore", &id, "--to", "shop restored"], 0);
    let sum = "SELECT count(*), sum(hashtext(o::text)) FROM orders o";
    assert_eq!(p.sql("shop restored", sum), p.sql("shop db", sum));
    assert_eq!(p.sql("shop restored", "SELECT a FROM \"odd; name\".\"t'x\""), "1");
    let refused = p.ok(&["backup", "restore", &id, "--to", "shop restored"], 1);
    assert!(refused.contains("exists; restore into a new name, or add --replace"), "{refused}");
    p.ok(&["backup", "restore", &id, "--to", "shop restored", "--replace"], 0);

    // Verify restores into a scratch database, compares, drops it, and marks the backup.
    let out = p.ok(&["backup", "verify", &id], 0);
    assert!(out.contains(&format!("{TABLES} tables match")), "{out}");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'dbctl_verify_%'"), "0");
    assert_eq!(list(&p)[0]["verified"], true);

    // The comparison is real: a manifest that recorded other rows fails verify, naming the table.
    let dir = p.path().join(".dbctl/backups/nightly/shop db");
    let manifest_path = dir.join(format!("{id}.manifest.json"));
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["tables"]["public.user"]["checksum"] = "copy:0000000000000001".into();
    std::fs::write(&manifest_path, edited.to_string()).unwrap();
    let out = p.ok(&["backup", "verify", &id], 1);
    assert!(out.contains("does not match what was recorded") && out.contains("public.user:"), "{out}");
    std::fs::write(&manifest_path, original).unwrap();

    // Checksums counted on the server (archives the stream reader does not know): record,
    // or text for types without a hash function; verify compares them the same way.
    let out = p.dbctl_env(&["backup", "run"], &[("DBCTL_BACKUP_CHECKSUMS", "server")]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
    let server = list(&p).pop().unwrap();
    assert!(server["tables"]["public.orders"]["checksum"].as_str().unwrap().starts_with("record:"), "{server}");
    assert!(server["tables"]["public.geo"]["checksum"].as_str().unwrap().starts_with("text:"), "{server}");
    assert_eq!(server["tables"]["public.orders"]["rows"], 5000);
    let out = p.ok(&["backup", "verify", server["id"].as_str().unwrap()], 0);
    assert!(out.contains("tables match"), "{out}");

    // One byte changed in the stored object: verify fails, clearly.
    let object = dir.join(m["object"].as_str().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let out = p.ok(&["backup", "verify", &id], 1);
    assert!(out.contains("is corrupted") || out.contains("damaged"), "{out}");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'dbctl_verify_%'"), "0");
}

#[test]
fn directory_format_with_jobs_restores_verifies_and_prunes() {
    let p = Project::new(&config("file://.dbctl/backups", "    last = 1", ""));
    p.apply();
    seed(&p);
    let out = p.ok(&["backup", "run", "--jobs", "2"], 0);
    assert!(out.contains(&format!("{TABLES} tables")), "{out}");
    let m = list(&p).pop().unwrap();
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["format"], "directory");
    let files = m["files"].as_object().unwrap();
    assert!(files.contains_key("toc.dat.zst"), "{m}");
    assert!(files.len() >= TABLES + 1, "a file per table plus the TOC: {m}");
    assert_eq!(m["tables"]["public.orders"]["rows"], 5000);
    for (t, stat) in m["tables"].as_object().unwrap() {
        assert!(stat["checksum"].as_str().unwrap().starts_with("copy:"), "{t}: {stat}");
    }
    let dir = p.path().join(".dbctl/backups/nightly/shop db").join(m["object"].as_str().unwrap());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files.len());

    p.ok(&["backup", "restore", &id, "--to", "shop copy"], 0);
    let sum = "SELECT count(*), sum(hashtext(o::text)) FROM orders o";
    assert_eq!(p.sql("shop copy", sum), p.sql("shop db", sum));
    let out = p.ok(&["backup", "verify", &id], 0);
    assert!(out.contains(&format!("{TABLES} tables match")), "{out}");

    // One byte changed in one table's file: verify names the file.
    let (name, _) = files.iter().find(|(n, _)| n.as_str() != "toc.dat.zst" && !n.starts_with("blob")).unwrap();
    let path = dir.join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let out = p.ok(&["backup", "verify", &id], 1);
    assert!(out.contains("is corrupted") && out.contains(name.as_str()), "{out}");

    // Prune deletes every file of a directory backup (once a newer one is verified).
    p.ok(&["backup", "run"], 0);
    let newest = list(&p).pop().unwrap();
    p.ok(&["backup", "verify", newest["id"].as_str().unwrap()], 0);
    p.ok(&["backup", "prune"], 0);
    assert_eq!(list(&p).len(), 1);
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().count() == 0, "files left in {}", dir.display());
}

#[test]
fn prune_keeps_exactly_what_keep_says_and_a_killed_backup_is_never_listed() {
    let p = Project::new(&config("file://.dbctl/backups", "    last = 2", ""));
    p.apply();
    seed(&p);
    for _ in 0..4 {
        p.ok(&["backup", "run"], 0);
    }
    let ids: Vec<String> = list(&p).iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 4);
    // The oldest is verified: prune never deletes the newest verified backup.
    p.ok(&["backup", "verify", &ids[0]], 0);
    let dry = p.ok(&["backup", "prune", "--dry-run"], 0);
    assert!(dry.contains(&format!("would delete {}", ids[1])), "{dry}");
    assert_eq!(list(&p).len(), 4, "--dry-run deletes nothing");
    p.ok(&["backup", "prune"], 0);
    let left: Vec<String> = list(&p).iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, [ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    let files = std::fs::read_dir(p.path().join(".dbctl/backups/nightly/shop db")).unwrap().count();
    assert_eq!(files, 3 * 2 + 1, "object + manifest per backup, and one verified marker");

    // A backup killed while it runs leaves no manifest, so it is never listed.
    p.sql(
        "shop db",
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g+1)::text) AS v FROM generate_series(1, 1500000) g",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .args(["backup", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "still running when killed");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(list(&p).len(), 3, "the killed backup is not listed");
}

fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let hostport = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn unreachable_backup_storage_is_a_warning_in_the_plan() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let provider =
        format!("provider \"aws\" {{\n  region   = \"us-east-1\"\n  endpoint = \"http://127.0.0.1:{port}\"\n}}\n");
    let p = Project::new(&config("s3://nowhere/x", "    last = 1", &provider));
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("Warning: backup_policy.nightly: its storage s3://nowhere/x cannot be read"), "{plan}");
}

#[test]
fn backups_to_s3_list_restore_and_verify() {
    let moto = Moto::start();
    create_bucket(&moto.endpoint, "dbctl-backups");
    let provider = format!("provider \"aws\" {{\n  region   = \"us-east-1\"\n  endpoint = \"{}\"\n}}\n", moto.endpoint);
    let p = Project::new(&config("s3://dbctl-backups/team/prod", "    last = 3", &provider));
    p.apply();
    seed(&p);
    p.ok(&["backup", "run"], 0);
    let all = list(&p);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["storage"], "s3://dbctl-backups/team/prod");
    let id = all[0]["id"].as_str().unwrap().to_string();
    p.ok(&["backup", "verify", &id], 0);
    p.ok(&["backup", "restore", &id, "--to", "from s3"], 0);
    assert_eq!(p.sql("from s3", "SELECT count(*) FROM orders"), "5000");
}
