//! TLS on dbctl's connections, against real servers the tests start with
//! their own CA (made here with the openssl CLI): a PostgreSQL server that
//! accepts only TLS (`hostssl` lines only in pg_hba.conf), one whose
//! certificate names another host, servers in clear reached by a
//! non-loopback address, and a MariaDB with `require_secure_transport=ON`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{MariaServer, PgServer, PgTls, Project, TlsFiles, MY_ADMIN_PASSWORD, PG_ADMIN_PASSWORD};

fn pg_config(url: &str, extra: &str) -> String {
    format!(
        r#"server "main" {{
  engine = "postgres"
  url    = "{url}"
}}

database "shop" {{
  server = server.main
}}

secret "app" {{}}

user "app" {{
  server   = server.main
  password = secret.app
  grant {{
    database   = database.shop
    privileges = ["CONNECT"]
  }}
}}
{extra}"#
    )
}

const TLS_ONLY: &str = "hostssl all all 127.0.0.1/32 scram-sha-256";

fn all(out: &std::process::Output) -> String {
    format!("{}{}", common::text(&out.stdout), common::text(&out.stderr))
}

/// Per backend pid, the log lines of TCP connections (local socket ones, the
/// test's own psql, are left out).
fn tcp_connections(log: &str) -> BTreeMap<String, Vec<String>> {
    let pid = |l: &str| l.split_once(" [").and_then(|(_, r)| r.split_once(']')).map(|(p, _)| p.to_string());
    let tcp: BTreeSet<String> = log
        .lines()
        .filter(|l| l.contains("connection received: host=") && !l.contains("host=[local]"))
        .filter_map(pid)
        .collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in log.lines() {
        if let Some(p) = pid(l).filter(|p| tcp.contains(p)) {
            out.entry(p).or_default().push(l.to_string());
        }
    }
    out
}

/// Every TCP connection the server saw was authorised with TLS; returns how many there were.
fn every_connection_encrypted(log: &str) -> usize {
    let conns = tcp_connections(log);
    for (pid, lines) in &conns {
        assert!(
            lines.iter().any(|l| l.contains("connection authorized") && l.contains("SSL enabled")),
            "connection {pid} was not encrypted:\n{}",
            lines.join("\n")
        );
    }
    conns.len()
}

#[test]
fn verify_full_against_a_tls_only_server_applies_and_every_connection_is_encrypted() {
    let files = TlsFiles::create();
    let server = PgServer::start(PgTls { cert: Some((&files, "server")), hba: TLS_ONLY, listen: "127.0.0.1" });
    let ca = files.path("ca.crt");
    let url = server.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let storage = "file://.dbctl/backups";
    let policy = format!(
        "\nbackup_policy \"nightly\" {{\n  databases = [database.shop]\n  schedule  = \"0 3 * * *\"\n  storage   = \"{storage}\"\n  keep {{\n    last = 3\n  }}\n}}\n"
    );
    let p = Project::new(&pg_config(&url, &policy));
    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(!out.contains("not encrypted"), "{out}");
    p.converged();
    assert_eq!(server.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop'"), "1");
    assert_eq!(server.sql("postgres", "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app'"), "t");

    // Backups: pg_dump (and verify's restore) go through TLS as well.
    server.sql("shop", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)");
    let out = p.ok(&["backup", "run"], 0);
    assert!(out.contains("database.shop -> "), "{out}");
    let list = p.dbctl(&["backup", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = list[0]["id"].as_str().expect("a backup").to_string();
    let out = p.ok(&["backup", "verify", &id], 0);
    assert!(!out.to_lowercase().contains("error"), "{out}");

    let log = server.log();
    let n = every_connection_encrypted(&log);
    // apply's reads and steps, the plans, the backup's pg_dump and verify: many connections, all TLS.
    assert!(n >= 8, "only {n} TCP connections in the log:\n{log}");
    assert!(
        log.contains("application_name=pg_dump") || log.contains("pg_dump"),
        "the backup's pg_dump connected:\n{log}"
    );
    assert!(!log.contains("no encryption"), "no plaintext attempt at all:\n{log}");
    assert!(!log.contains(PG_ADMIN_PASSWORD), "the admin password is not in the server log");
    assert!(!log.contains(&p.secret("secret.app")), "the user's password is not in the server log");
}

#[test]
fn a_wrong_ca_or_a_plaintext_attempt_fails_with_a_message_that_says_tls() {
    let files = TlsFiles::create();
    let server = PgServer::start(PgTls { cert: Some((&files, "server")), hba: TLS_ONLY, listen: "127.0.0.1" });
    let other = files.path("other-ca.crt");

    // A CA that did not sign the server's certificate.
    let p = Project::new(&pg_config(
        &server.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", other.display())),
        "",
    ));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("Error: cannot connect to server.main (127.0.0.1:"), "{out}");
    assert!(out.contains("hint: TLS: the server's certificate is not signed by a CA dbctl trusts"), "{out}");
    assert!(out.contains("sslrootcert="), "{out}");
    assert!(!out.contains(PG_ADMIN_PASSWORD), "{out}");
    assert_eq!(p.dbctl(&["plan"]).status.code(), Some(1));

    // libpq: `require` with a root certificate checks the certificate against it.
    p.write(&pg_config(&server.url("127.0.0.1", &format!("sslmode=require&sslrootcert={}", other.display())), ""));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("hint: TLS: the server's certificate is not signed by a CA dbctl trusts"), "{out}");

    // Plaintext against a server that takes TLS only.
    p.write(&pg_config(&server.url("127.0.0.1", "sslmode=disable"), ""));
    let r = p.dbctl(&["plan"]);
    let out = all(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.contains("no encryption"), "{out}");
    assert!(out.contains("hint: TLS: the server accepts only encrypted (TLS) connections"), "{out}");
    assert!(!out.contains(PG_ADMIN_PASSWORD), "{out}");

    // `sslrootcert=system` is the public CAs (libpq 16), which did not sign this test CA's certificate.
    p.write(&pg_config(&server.url("127.0.0.1", "sslmode=verify-full&sslrootcert=system"), ""));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("hint: TLS: the server's certificate is not signed by a CA dbctl trusts"), "{out}");

    // `require` without a root certificate encrypts without checking who signed; the default
    // `prefer` encrypts too, since the server offers TLS; `allow` tries in clear, is refused, then uses TLS.
    for q in ["sslmode=require", "", "sslmode=allow"] {
        p.write(&pg_config(&server.url("127.0.0.1", q), ""));
        let out = p.ok(&["plan"], 0);
        assert!(out.contains("to add"), "{out}");
    }
    // Nothing but the refused attempts above went in clear.
    let log = server.log();
    let conns = tcp_connections(&log);
    let failed: Vec<_> = conns.values().filter(|l| !l.iter().any(|x| x.contains("SSL enabled"))).collect();
    let (refused_tls, clear): (Vec<_>, Vec<_>) =
        failed.into_iter().partition(|l| l.iter().any(|x| x.contains("could not accept SSL connection")));
    // Four wrong-CA attempts (two plans with verify-full, one with require, one with the public CAs):
    // TLS that dbctl gave up on.
    assert_eq!(refused_tls.len(), 4, "{refused_tls:?}");
    assert_eq!(clear.len(), 2, "only the sslmode=disable and allow attempts went in clear: {clear:?}");
    assert!(clear.iter().all(|c| c.iter().any(|x| x.contains("no encryption"))), "{clear:?}");
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let files = TlsFiles::create();
    // The certificate names db.example.com; dbctl dials 127.0.0.1.
    let server = PgServer::start(PgTls { cert: Some((&files, "wronghost")), hba: TLS_ONLY, listen: "127.0.0.1" });
    let ca = files.path("ca.crt");
    let p = Project::new(&pg_config(
        &server.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        "",
    ));
    let r = p.dbctl(&["plan"]);
    let out = all(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.contains("hint: TLS: the server's certificate does not name the host in the url"), "{out}");
    assert!(out.contains("sslmode=verify-ca"), "{out}");

    p.write(&pg_config(&server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", ca.display())), ""));
    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    // verify-ca still checks the CA.
    let other = files.path("other-ca.crt");
    p.write(&pg_config(&server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", other.display())), ""));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("not signed by a CA dbctl trusts"), "{out}");
}

/// A non-loopback IPv4 address of this machine, if it has one.
fn remote_address() -> Option<String> {
    let out = std::process::Command::new("hostname").arg("-I").output().ok()?;
    common::text(&out.stdout)
        .split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(str::to_string)
}

#[test]
fn a_connection_in_clear_to_a_remote_host_is_a_warning_in_plan_and_apply() {
    let Some(remote) = remote_address() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address");
        return;
    };
    let files = TlsFiles::create();
    let listen = format!("127.0.0.1,{remote}");
    // TLS offered, but refused for every host (`hostnossl`): libpq's `prefer` then goes on in clear.
    let clear = PgServer::start(PgTls {
        cert: Some((&files, "server")),
        hba: "hostnossl all all 0.0.0.0/0 scram-sha-256",
        listen: &listen,
    });
    let p = Project::new(&pg_config(&clear.url(&remote, ""), ""));
    let out = p.ok(&["plan"], 0);
    let warning = format!(
        "Warning: server.main: the connection to {remote}:{} is not encrypted (the server did not offer TLS, or refused it from here)",
        clear.port
    );
    assert!(out.contains(&warning), "{out}");
    assert!(out.contains("sslmode=verify-full"), "it says what to do:\n{out}");
    assert!(!out.contains(PG_ADMIN_PASSWORD), "{out}");
    let json = p.plan_json();
    assert!(json["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with(&warning)), "{json}");
    // apply (which plans first) and apply of a saved plan both say it.
    let saved = p.path().join("saved.plan");
    let saved = saved.to_str().unwrap();
    p.ok(&["plan", "--out", saved], 0);
    let out = p.ok(&["apply", "--auto-approve", saved], 0);
    assert!(out.contains(&warning), "{out}");
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(out.contains(&warning), "{out}");
    assert!(clear.log().contains("SSL encryption"), "the TLS attempt came first and was refused");

    // The same server in clear over loopback: no warning.
    p.write(&pg_config(&clear.url("127.0.0.1", ""), ""));
    let out = p.ok(&["plan"], 0);
    assert!(!out.contains("not encrypted"), "{out}");

    // A remote server that takes TLS: `prefer` ends up encrypted, no warning.
    let tls = PgServer::start(PgTls {
        cert: Some((&files, "server")),
        hba: "host all all 0.0.0.0/0 scram-sha-256",
        listen: &listen,
    });
    p.write(&pg_config(&tls.url(&remote, ""), ""));
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(!out.contains("not encrypted"), "{out}");
    every_connection_encrypted(&tls.log());

    // sslmode=disable to a remote host: a warning, not an error.
    p.write(&pg_config(&tls.url(&remote, "sslmode=disable"), ""));
    let out = p.ok(&["plan"], 0);
    assert!(out.contains("is not encrypted (its url turns TLS off)"), "{out}");
}

fn my_config(url: &str) -> String {
    format!(
        r#"server "main" {{
  engine = "mysql"
  url    = "{url}"
}}

database "shop" {{
  server = server.main
}}

secret "app" {{}}

user "app" {{
  server   = server.main
  password = secret.app
  grant {{
    database   = database.shop
    privileges = ["SELECT"]
  }}
}}
"#
    )
}

#[test]
fn mariadb_with_require_secure_transport() {
    let files = TlsFiles::create();
    let server = MariaServer::start(&files, true);
    let ca = files.path("ca.crt");

    // Plaintext is refused, and the message says TLS.
    let p = Project::new(&my_config(&server.url("ssl-mode=DISABLED")));
    let r = p.dbctl(&["plan"]);
    let out = all(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.contains("hint: TLS: this connection was made in clear (ssl-mode=DISABLED)"), "{out}");
    assert!(out.contains("require_secure_transport=ON"), "{out}");
    assert!(!out.contains(MY_ADMIN_PASSWORD), "{out}");

    // A CA that did not sign the server's certificate.
    p.write(&my_config(&server.url(&format!("ssl-mode=VERIFY_CA&ssl-ca={}", files.path("other-ca.crt").display()))));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("hint: TLS: the server's certificate is not signed by a CA dbctl trusts"), "{out}");
    assert!(out.contains("ssl-ca="), "{out}");
    // ssl-ca alone means VERIFY_CA, as the mysql client reads it.
    p.write(&my_config(&server.url(&format!("ssl-ca={}", files.path("other-ca.crt").display()))));
    let out = all(&p.dbctl(&["plan"]));
    assert!(out.contains("not signed by a CA dbctl trusts"), "{out}");

    // VERIFY_IDENTITY with the right CA: apply works and converges.
    p.write(&my_config(&server.url(&format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display()))));
    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(!out.contains("not encrypted"), "{out}");
    p.converged();
    assert_eq!(
        server.root_sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop'").unwrap(),
        "1"
    );
    assert_eq!(server.root_sql("SELECT COUNT(*) FROM mysql.user WHERE User = 'app'").unwrap(), "1");

    // Backups through the client tools carry the url's TLS settings.
    p.write(&format!(
        "{}\nbackup_policy \"nightly\" {{\n  databases = [database.shop]\n  schedule  = \"0 3 * * *\"\n  storage   = \"file://.dbctl/backups\"\n  keep {{\n    last = 3\n  }}\n}}\n",
        my_config(&server.url(&format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display())))
    ));
    p.apply();
    server.root_sql("CREATE TABLE shop.t (id int); INSERT INTO shop.t VALUES (1), (2)").unwrap();
    let out = p.ok(&["backup", "run"], 0);
    assert!(out.contains("database.shop -> "), "{out}");
}

#[test]
fn a_bad_tls_parameter_is_a_diagnostic_at_validate() {
    let p = Project::new(&pg_config(
        "postgres://admin:pw@db.example.com/postgres?sslmode=verify_full&sslrootcert=/nonexistent/ca.pem",
        "",
    ));
    let r = p.dbctl(&["validate"]);
    let out = all(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.contains("server.main: sslmode \"verify_full\" is not a TLS mode"), "{out}");
    assert!(out.contains("use one of disable, allow, prefer, require, verify-ca, verify-full"), "{out}");
    assert!(out.contains("server.main: sslrootcert /nonexistent/ca.pem cannot be read here"), "{out}");
    assert!(out.contains("main.hcl:3"), "points at the url's line:\n{out}");
    let p = Project::new(&my_config("mysql://admin:pw@db.example.com/?ssl-mode=verify-full"));
    let out = all(&p.dbctl(&["validate"]));
    assert!(out.contains("server.main: ssl-mode \"verify-full\" is not a TLS mode"), "{out}");
    assert!(out.contains("VERIFY_IDENTITY"), "{out}");
}

#[test]
fn a_mariadb_connection_in_clear_to_a_remote_host_is_a_warning() {
    let Some(remote) = remote_address() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address");
        return;
    };
    let files = TlsFiles::create();
    let server = MariaServer::start_on(&files, false, &remote);
    // PREFERRED (the default): the server offers TLS, the session is encrypted, no warning.
    let p = Project::new(&my_config(&server.url_at(&remote, "")));
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(!out.contains("not encrypted"), "{out}");
    // DISABLED: in clear, a warning in plan (human and JSON) and apply.
    p.write(&my_config(&server.url_at(&remote, "ssl-mode=DISABLED")));
    let warning = format!(
        "Warning: server.main: the connection to {remote}:{} is not encrypted (its url turns TLS off)",
        server.port
    );
    let out = p.ok(&["plan"], 0);
    assert!(out.contains(&warning), "{out}");
    assert!(out.contains("ssl-mode=VERIFY_IDENTITY"), "{out}");
    assert!(!out.contains(MY_ADMIN_PASSWORD), "{out}");
    let json = p.plan_json();
    assert!(json["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with(&warning)), "{json}");
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(out.contains(&warning), "{out}");
}

#[test]
fn require_against_a_server_without_tls_fails_with_a_message_that_says_tls() {
    let server =
        PgServer::start(PgTls { cert: None, hba: "host all all 127.0.0.1/32 scram-sha-256", listen: "127.0.0.1" });
    let p = Project::new(&pg_config(&server.url("127.0.0.1", "sslmode=require"), ""));
    let r = p.dbctl(&["plan"]);
    let out = all(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.contains("hint: TLS: the url asks for TLS (sslmode) but the server does not offer it"), "{out}");
    assert!(!out.contains(PG_ADMIN_PASSWORD), "{out}");
    // prefer goes on in clear; to this machine that is no warning.
    p.write(&pg_config(&server.url("127.0.0.1", ""), ""));
    let out = p.ok(&["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete!") && !out.contains("not encrypted"), "{out}");
    assert!(!server.log().contains("SSL enabled"), "in clear indeed");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The production path on one machine: a TLS-only server reached with
/// `verify-full`, an admin like an RDS master user (CREATEROLE CREATEDB, no
/// superuser) whose password dbctl reads from a Secrets Manager secret it does
/// not own (moto), and the Django example's databases, users and routers:
/// apply, a clean plan, a rotation, a removed user, destroy. Every connection
/// is encrypted, and no password reaches the server's statement log.
#[test]
fn the_rds_path_verify_full_a_non_superuser_admin_and_its_password_from_secrets_manager() {
    let files = TlsFiles::create();
    let server = PgServer::start(PgTls { cert: Some((&files, "server")), hba: TLS_ONLY, listen: "127.0.0.1" });
    let master_pw = "Ma5ter-only-in-secrets-manager";
    // Made before statements are logged: this psql is the test's, not dbctl's.
    server.sql("postgres", &format!("CREATE ROLE master LOGIN CREATEROLE CREATEDB PASSWORD '{master_pw}'"));
    server.sql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    server.sql("postgres", "SELECT pg_reload_conf()");
    let moto = common::Moto::start();
    let name = "rds!cluster-5e1f";
    let doc = serde_json::json!({ "username": "master", "password": master_pw }).to_string();
    block_on(moto.secrets_client().create_secret().name(name).secret_string(&doc).send()).expect("create in moto");

    let ca = files.path("ca.crt");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/django/main.hcl")).unwrap();
    let embedded = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n";
    assert!(example.contains(embedded));
    let head = format!(
        r#"provider "aws" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

secret "master" {{
  store    = "aws"
  name     = "{name}"
  external = true
}}

server "main" {{
  engine         = "postgres"
  url            = "postgres://localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
  admin_password = secret.master
}}
"#,
        endpoint = moto.endpoint,
        port = server.port,
        ca = ca.display()
    );
    let config = example.replace(embedded, &head);
    let p = Project::new(&config);
    let mut outputs = vec![p.ok(&["plan"], 0)];
    let out = p.apply();
    println!("--- apply through verify-full as master ---\n{out}");
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(out.contains("GRANT \"toolshed\" TO \"master\""), "the admin is made a member of the owner: {out}");
    outputs.push(out);
    p.converged();
    assert_eq!(
        server.sql("postgres", "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database WHERE datname IN ('buildsense', 'maven')"),
        "buildsense:toolshed,maven:toolshed"
    );
    let users: Vec<String> =
        ["secret.buildsense", "secret.maven", "secret.toolshed"].iter().map(|s| p.secret(s)).collect();

    // A rotation whose password statement fails (another session holds the
    // role's row: the step gives up), then succeeds; then destroy.
    outputs.push(p.ok(&["secret", "rotate", "secret.maven"], 0));
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-U", "postgres", "-h"])
        .arg(server.dir.path())
        .args(["-p", &server.port.to_string(), "-d", "postgres"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().unwrap();
        stdin.write_all(b"BEGIN; ALTER ROLE maven CONNECTION LIMIT 3;\n").unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let failed = p.dbctl(&["apply", "--auto-approve", "--statement-timeout", "2s"]);
    let failed_out = all(&failed);
    assert_eq!(failed.status.code(), Some(1), "{failed_out}");
    assert!(failed_out.contains("ALTER ROLE \"maven\" PASSWORD (sensitive)"), "{failed_out}");
    outputs.push(failed_out);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let log = server.log();
    assert!(
        log.contains("canceling statement due to"),
        "the password statement failed:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    outputs.push(p.apply());
    let rotated = p.secret("secret.maven");
    assert_ne!(rotated, users[1]);
    p.converged();
    outputs.push(p.ok(&["destroy", "--auto-approve"], 0));
    assert_eq!(
        server.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('buildsense', 'maven')"),
        "0"
    );

    let log = server.log();
    let n = every_connection_encrypted(&log);
    assert!(n >= 10, "only {n} TCP connections in the log:\n{log}");
    assert!(log.contains("ALTER ROLE"), "log_statement = all is on:\n{log}");
    for pw in users.iter().chain([&rotated, &master_pw.to_string()]) {
        assert!(!log.contains(pw.as_str()), "a password reached the server's log:\n{log}");
        for o in &outputs {
            assert!(!o.contains(pw.as_str()), "a password was printed:\n{o}");
        }
    }
    assert!(log.contains("SCRAM-SHA-256$4096:"), "passwords arrive as SCRAM verifiers");
    // The failed statement is in the error log too (log_min_error_statement), as a verifier.
    assert!(log.lines().any(|l| l.contains("STATEMENT:") && l.contains("PASSWORD 'SCRAM-SHA-256$4096:")), "{log}");
}
