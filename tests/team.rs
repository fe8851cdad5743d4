//! Team state: the postgres state backend shared by several checkouts of one
//! configuration, against a real PostgreSQL server (the state database and
//! the managed server are databases of one throwaway server, reached by url
//! from every checkout).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{team_server, PgServer, Project};

const STATE: &str = r#"dbctl {
  state {
    backend = "postgres"
    url     = env("DBCTL_STATE_URL")
  }
}
"#;

const SERVER: &str = r#"
server "main" {
  engine = "postgres"
  url    = env("TEAM_SERVER_URL")
}
"#;

/// A configuration with roles `names` (and a database owned by the first).
fn config(names: &[&str]) -> String {
    let mut s = format!("{STATE}{SERVER}");
    for n in names {
        s.push_str(&format!("\nrole \"{n}\" {{\n  server = server.main\n}}\n"));
    }
    s.push_str(&format!("\ndatabase \"app\" {{\n  server = server.main\n  owner  = role.{}\n}}\n", names[0]));
    s
}

fn roles(s: &PgServer, like: &str) -> String {
    s.sql(
        "postgres",
        &format!("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE '{like}'"),
    )
}

fn state_serial(s: &PgServer) -> String {
    s.sql("dbctl_state", "SELECT serial FROM dbctl.states WHERE key = 'default'")
}

/// Two checkouts, one state database: the first applies, the second (no
/// `.dbctl/`) plans no changes; a plan saved in the second applies in the
/// first; a plan saved before the state moved on is refused.
#[test]
fn two_checkouts_share_one_state() {
    let s = team_server();
    let a = Project::new(&config(&["team_app"]));
    let b = Project::new(&config(&["team_app"]));

    let out = a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete! Resources: 2 added"), "{out}");
    assert_eq!(roles(&s, "team_%"), "team_app");
    // The state is in the database, not in either checkout.
    assert!(!a.path().join(".dbctl/state.json").exists());
    assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.states"), "1");
    assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.journal"), "0", "the journal is folded at the end");

    // The second checkout has never run: it finds the state in the database.
    assert!(!b.path().join(".dbctl").exists());
    let out = b.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
    assert!(out.contains("No changes. Live state matches the configuration."), "{out}");
    let listed = b.team_ok(&s, &["state", "list"], 0);
    let addrs: Vec<&str> = listed.lines().filter(|l| !l.starts_with(' ') && !l.is_empty()).collect();
    assert_eq!(addrs, vec!["database.app", "role.team_app"], "{listed}");

    // A change planned and saved in the second checkout applies in the first.
    a.write(&config(&["team_app", "team_reports"]));
    b.write(&config(&["team_app", "team_reports"]));
    let (saved_b, saved_a) = (b.path().join("change.plan"), a.path().join("change.plan"));
    let out = b.team_ok(&s, &["plan", "--out", saved_b.to_str().unwrap()], 0);
    assert!(out.contains("role.team_reports"), "{out}");
    std::fs::copy(&saved_b, &saved_a).unwrap();
    let out = a.team_ok(&s, &["apply", saved_a.to_str().unwrap()], 0);
    assert!(out.contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed."), "{out}");
    assert_eq!(roles(&s, "team_%"), "team_app,team_reports");
    b.team_ok(&s, &["plan", "--detailed-exitcode"], 0);

    // A plan saved in one checkout is refused once the state moved on in the other.
    a.write(&config(&["team_app", "team_reports", "team_audit"]));
    b.write(&config(&["team_app", "team_reports", "team_audit"]));
    let late = b.path().join("late.plan");
    b.team_ok(&s, &["plan", "--out", late.to_str().unwrap()], 0);
    let serial = state_serial(&s);
    a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert_ne!(state_serial(&s), serial, "the apply in the first checkout moves the serial");
    let out = b.team_ok(&s, &["apply", late.to_str().unwrap()], 1);
    assert!(out.contains("stale plan: the state has changed since the plan was made"), "{out}");
    assert!(!out.contains("Apply complete"), "{out}");
}

/// A saved plan of a configuration that has never been applied (its first
/// plan creates the state row), applied from another checkout.
#[test]
fn the_first_saved_plan_of_a_new_configuration_travels() {
    let s = team_server();
    let a = Project::new(&config(&["first_app"]));
    let b = Project::new(&config(&["first_app"]));
    let (saved_a, saved_b) = (a.path().join("first.plan"), b.path().join("first.plan"));
    a.team_ok(&s, &["plan", "--out", saved_a.to_str().unwrap()], 0);
    assert_eq!(s.sql("dbctl_state", "SELECT serial FROM dbctl.states"), "0", "plan --out fixes the lineage");
    std::fs::copy(&saved_a, &saved_b).unwrap();
    let out = b.team_ok(&s, &["apply", saved_b.to_str().unwrap()], 0);
    assert!(out.contains("Apply complete! Resources: 2 added"), "{out}");
    a.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
}

/// Wait until `cond`, up to `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A psql session that holds `CREATE ROLE name` uncommitted for `secs`
/// seconds and then rolls it back: an apply creating that role waits behind it.
fn blocker(s: &PgServer, name: &str, secs: u32) -> std::process::Child {
    std::process::Command::new("psql")
        .args(["-X", "-q", "-U", "postgres", "-h"])
        .arg(s.dir.path())
        .arg("-p")
        .arg(s.port.to_string())
        .args(["-d", "postgres", "-c"])
        .arg(format!("BEGIN; CREATE ROLE {name}; SELECT pg_sleep({secs}); ROLLBACK;"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn blocked_creates(s: &PgServer, name: &str) -> usize {
    s.sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE ROLE \"{name}\"%' AND wait_event_type = 'Lock'"),
    )
    .parse()
    .unwrap()
}

/// Two applies at once never interleave: the second waits for the lock
/// (--lock-timeout) and then plans against what the first applied; a third
/// that does not wait is refused with the holder named.
#[test]
fn two_applies_at_once_never_interleave() {
    let s = team_server();
    let a = Project::new(&config(&["race_a", "race_b"]));
    let b = Project::new(&config(&["race_a", "race_b"]));
    let mut hold = blocker(&s, "race_b", 4);
    wait_for(Duration::from_secs(10), "the blocker", || {
        s.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; CREATE ROLE race_b%'") == "1"
    });
    let first =
        a.team_command(&s, &["apply", "--auto-approve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The first apply holds the lock and waits inside its CREATE ROLE.
    wait_for(Duration::from_secs(20), "the first apply to block", || blocked_creates(&s, "race_b") == 1);
    let second = b
        .team_command(&s, &["apply", "--auto-approve", "--lock-timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = b.team_ok(&s, &["apply", "--auto-approve"], 1);
    assert!(out.contains("the state is locked by another dbctl"), "{out}");
    assert!(out.contains("apply by "), "names the holder's operation and user: {out}");
    assert!(out.contains(&format!("pid {}", first.id())), "names the holder's pid: {out}");
    assert!(out.contains("since 20"), "says since when: {out}");
    assert!(out.contains("database session pid"), "{out}");
    assert!(!out.contains(common::PG_ADMIN_PASSWORD), "never the password: {out}");
    // force-unlock never takes a live lock without --force.
    let out = b.team_ok(&s, &["force-unlock"], 1);
    assert!(out.contains("a running dbctl holds the state lock"), "{out}");

    hold.wait().unwrap();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    let one = format!("{}{}", common::text(&first.stdout), common::text(&first.stderr));
    let two = format!("{}{}", common::text(&second.stdout), common::text(&second.stderr));
    assert_eq!(first.status.code(), Some(0), "{one}");
    assert_eq!(second.status.code(), Some(0), "{two}");
    assert!(one.contains("Apply complete! Resources: 3 added"), "{one}");
    // The second planned only after the first had finished: nothing left to do.
    assert!(two.contains("No changes."), "{two}");
    assert!(!two.contains("CREATE"), "{two}");
    assert_eq!(roles(&s, "race_%"), "race_a,race_b");
    a.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
}

/// `kill -9` of an apply leaves no lock (the server ends its session, and
/// the advisory lock with it), and the journal in the state database holds
/// the intent of the create it was running: the rerun adopts the object and
/// converges.
#[test]
fn kill_9_of_an_apply_leaves_no_lock_and_the_rerun_converges() {
    let s = team_server();
    let a = Project::new(&config(&["killed_app", "killed_b"]));
    let mut hold = blocker(&s, "killed_b", 3);
    wait_for(Duration::from_secs(10), "the blocker", || {
        s.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; CREATE ROLE killed_b%'")
            == "1"
    });
    let mut apply =
        a.team_command(&s, &["apply", "--auto-approve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(Duration::from_secs(20), "the apply to block", || blocked_creates(&s, "killed_b") == 1);
    assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.locks"), "1", "the lock's row while it is held");
    let journal = s.sql("dbctl_state", "SELECT string_agg(entry, E'\\n' ORDER BY seq) FROM dbctl.journal");
    assert!(
        journal.contains("\"role.killed_b\"") && journal.contains("\"pending\":true"),
        "the intent is durable before the CREATE runs: {journal}"
    );
    apply.kill().unwrap(); // SIGKILL
    apply.wait().unwrap();

    // No lock left: another dbctl takes it at once.
    wait_for(Duration::from_secs(5), "the killed session to end", || {
        s.sql("dbctl_state", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0"
    });
    let out = a.team_ok(&s, &["force-unlock"], 0);
    assert!(out.contains("No running dbctl holds the state lock") && out.contains("apply by"), "{out}");
    assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.locks"), "0");

    hold.wait().unwrap();
    let out = a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete!"), "{out}");
    assert_eq!(roles(&s, "killed_%"), "killed_app,killed_b");
    a.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
    assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.journal"), "0");
}

/// `force-unlock --force` ends the session of a live holder: the apply
/// behind it stops recording and fails, and the rerun converges.
#[test]
fn force_unlock_with_force_ends_a_live_holder() {
    let s = team_server();
    let a = Project::new(&config(&["stuck_app", "stuck_b"]));
    let mut hold = blocker(&s, "stuck_b", 4);
    wait_for(Duration::from_secs(10), "the blocker", || {
        s.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; CREATE ROLE stuck_b%'") == "1"
    });
    let apply =
        a.team_command(&s, &["apply", "--auto-approve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(Duration::from_secs(20), "the apply to block", || blocked_creates(&s, "stuck_b") == 1);
    let out = a.team_ok(&s, &["force-unlock", "--force"], 0);
    assert!(out.contains("Ended the database session that held the state lock"), "{out}");
    // The lock is free now, while the old apply still waits on the server.
    let out = a.team_ok(&s, &["force-unlock"], 0);
    assert!(out.contains("The state is not locked."), "{out}");
    hold.wait().unwrap();
    let old = apply.wait_with_output().unwrap();
    let all = format!("{}{}", common::text(&old.stdout), common::text(&old.stderr));
    assert_eq!(old.status.code(), Some(1), "the apply whose session was ended fails:\n{all}");
    let out = a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert!(out.contains("Apply complete!") || out.contains("No changes."), "{out}");
    a.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
    assert_eq!(roles(&s, "stuck_%"), "stuck_app,stuck_b");
}

/// A local state moves to the postgres backend with `state push`, and back
/// out with `state pull`; a state of another lineage is not overwritten
/// without --force.
#[test]
fn state_push_and_pull_move_a_state_between_backends() {
    let s = team_server();
    let local = format!("{SERVER}\nrole \"moved_app\" {{\n  server = server.main\n}}\n");
    let p = Project::new(&local);
    p.team_ok(&s, &["apply", "--auto-approve"], 0);
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".dbctl/state.json")).unwrap()).unwrap();

    // Switching the backend without moving the state is an error, not a plan to create everything.
    p.write(&format!("{STATE}{local}"));
    let out = p.team_ok(&s, &["plan"], 1);
    assert!(out.contains("Move it there first: dbctl state push"), "{out}");
    assert!(!out.contains(common::PG_ADMIN_PASSWORD), "{out}");

    let out = p.team_ok(&s, &["state", "push"], 0);
    assert!(out.contains("Pushed"), "{out}");
    let row = s.sql("dbctl_state", "SELECT lineage FROM dbctl.states WHERE key = 'default'");
    assert_eq!(row, before["lineage"].as_str().unwrap());
    let out = p.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
    assert!(out.contains("No changes."), "{out}");
    assert!(out.contains("is not read"), "the leftover local file is named: {out}");
    std::fs::remove_file(p.path().join(".dbctl/state.json")).unwrap();

    let pulled_file = p.path().join("pulled.json");
    let out = p.team_ok(&s, &["state", "pull", "--out", pulled_file.to_str().unwrap()], 0);
    assert!(out.contains("Wrote the state"), "{out}");
    let pulled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join("pulled.json")).unwrap()).unwrap();
    assert_eq!(pulled["lineage"], before["lineage"]);
    assert_eq!(pulled["resources"], before["resources"]);
    let stdout = p.team_ok(&s, &["state", "pull"], 0);
    assert!(stdout.contains("\"role.moved_app\""), "{stdout}");

    // Another configuration's state is not overwritten without --force.
    let mut other = pulled.clone();
    other["lineage"] = "another-lineage".into();
    let other_file = p.path().join("other.json");
    let other_file = other_file.to_str().unwrap();
    std::fs::write(other_file, other.to_string()).unwrap();
    let out = p.team_ok(&s, &["state", "push", other_file], 1);
    assert!(out.contains("holds another state"), "{out}");
    assert_eq!(s.sql("dbctl_state", "SELECT lineage FROM dbctl.states"), before["lineage"].as_str().unwrap());
    p.team_ok(&s, &["state", "push", other_file, "--force"], 0);
    assert_eq!(s.sql("dbctl_state", "SELECT lineage FROM dbctl.states"), "another-lineage");
}

/// Several states in one database (`key`), in a schema of one's choosing.
#[test]
fn keys_keep_states_apart_in_a_schema_of_ones_choice() {
    let s = team_server();
    let with_key = |key: &str, role: &str| {
        format!(
            "dbctl {{\n  state {{\n    backend = \"postgres\"\n    url     = env(\"DBCTL_STATE_URL\")\n    schema  = \"Team State\"\n    key     = \"{key}\"\n  }}\n}}\n{SERVER}\nrole \"{role}\" {{\n  server = server.main\n}}\n"
        )
    };
    let prod = Project::new(&with_key("prod", "keyed_prod"));
    let staging = Project::new(&with_key("staging", "keyed_staging"));
    prod.team_ok(&s, &["apply", "--auto-approve"], 0);
    staging.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert_eq!(
        s.sql("dbctl_state", "SELECT string_agg(key, ',' ORDER BY key) FROM \"Team State\".states"),
        "prod,staging"
    );
    assert_eq!(prod.team_ok(&s, &["state", "list"], 0).trim(), "role.keyed_prod");
    prod.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
}

/// A state url that cannot be used says which backend failed and never
/// prints its password.
#[test]
fn a_bad_state_url_is_named_without_its_password() {
    let s = team_server();
    let p = Project::new(&config(&["pw_app"]));
    let bad = format!("postgres://postgres:Wr0ng-Secret-pw@127.0.0.1:{}/dbctl_state", s.port);
    let server = s.url("127.0.0.1", "");
    let out = p.dbctl_env(&["plan"], &[("DBCTL_STATE_URL", &bad), ("TEAM_SERVER_URL", &server)]);
    let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("the postgres state backend"), "{all}");
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains("Wr0ng-Secret-pw"), "{all}");
    assert!(!s.log().contains("Wr0ng-Secret-pw"), "nor in the server's log");
    // Nothing reached the managed server either.
    assert_eq!(roles(&s, "pw_%"), "");
}

/// Writes are compare-and-set on the serial: a writer whose state was
/// changed under it (by a dbctl that did not take the lock, or an old
/// release) is refused, and the newer state stands.
#[test]
fn a_write_over_a_state_that_moved_on_is_refused() {
    use dbctl::state::{postgres::PgState, State, StateBackend, StateError};
    let s = team_server();
    let url = common::team_env(&s)[0].1.clone();
    let one = PgState::new(&url, "dbctl", "cas").unwrap();
    let two = PgState::new(&url, "dbctl", "cas").unwrap();
    let mut st = State::new();
    one.init(&st).unwrap();
    let a = one.load().unwrap();
    let b = two.load().unwrap();
    assert_eq!(a.lineage, st.lineage);
    st = a.clone();
    st.serial += 1;
    one.save(&st).unwrap();
    let mut late = b.clone();
    late.serial += 1;
    late.resources.clear();
    let e = two.save(&late).unwrap_err();
    assert!(matches!(e, StateError::Conflict(..)), "{e}");
    assert!(e.to_string().contains("serial 0 when read, 1 now"), "{e}");
    assert_eq!(s.sql("dbctl_state", "SELECT serial FROM dbctl.states WHERE key = 'cas'"), "1");
    // Read again, it writes.
    let mut fresh = two.load().unwrap();
    fresh.serial += 1;
    two.save(&fresh).unwrap();
    assert_eq!(s.sql("dbctl_state", "SELECT serial FROM dbctl.states WHERE key = 'cas'"), "2");
}

/// The state connection goes through the servers' connect code: `sslmode`
/// and `sslrootcert` work, a wrong CA is refused with the TLS hint, and a
/// connection in clear to another host is a warning.
#[test]
fn the_state_connection_takes_the_urls_tls_settings() {
    use common::{PgTls, TlsFiles, PG_ADMIN_PASSWORD};
    let files = TlsFiles::create();
    let tls = PgServer::start(PgTls {
        cert: Some((&files, "server")),
        hba: "hostssl all all 127.0.0.1/32 scram-sha-256",
        listen: "127.0.0.1",
    });
    tls.sql("postgres", "CREATE DATABASE dbctl_state");
    let managed = team_server();
    let p = Project::new(&config(&["tls_app"]));
    let server_url = managed.url("127.0.0.1", "");
    let state_url = |q: &str| format!("postgres://postgres:{PG_ADMIN_PASSWORD}@localhost:{}/dbctl_state?{q}", tls.port);
    let good = state_url(&format!("sslmode=verify-full&sslrootcert={}", files.path("ca.crt").display()));
    let out =
        p.dbctl_env(&["apply", "--auto-approve"], &[("DBCTL_STATE_URL", &good), ("TEAM_SERVER_URL", &server_url)]);
    let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(tls.sql("dbctl_state", "SELECT count(*) FROM dbctl.states"), "1");
    let log = tls.log();
    let authorized: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains("database=dbctl_state application_name=dbctl"))
        .collect();
    assert!(!authorized.is_empty(), "{log}");
    assert!(authorized.iter().all(|l| l.contains("SSL enabled")), "every state connection is encrypted:\n{log}");

    let wrong = state_url(&format!("sslmode=verify-full&sslrootcert={}", files.path("other-ca.crt").display()));
    let out = p.dbctl_env(&["plan"], &[("DBCTL_STATE_URL", &wrong), ("TEAM_SERVER_URL", &server_url)]);
    let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("the postgres state backend") && all.contains("TLS"), "{all}");
    assert!(!all.contains(PG_ADMIN_PASSWORD), "{all}");

    // In clear to a host that is not this machine's loopback: a warning.
    let remote = std::process::Command::new("hostname").arg("-I").output().ok().and_then(|o| {
        common::text(&o.stdout)
            .split_whitespace()
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
            .map(str::to_string)
    });
    let Some(remote) = remote else {
        eprintln!("skipped the warning: this machine has no non-loopback IPv4 address");
        return;
    };
    let clear = PgServer::start(PgTls {
        cert: None,
        hba: "host all all 0.0.0.0/0 scram-sha-256",
        listen: &format!("127.0.0.1,{remote}"),
    });
    clear.sql("postgres", "CREATE DATABASE dbctl_state");
    let in_clear = format!("postgres://postgres:{PG_ADMIN_PASSWORD}@{remote}:{}/dbctl_state", clear.port);
    let out = p.dbctl_env(&["plan"], &[("DBCTL_STATE_URL", &in_clear), ("TEAM_SERVER_URL", &server_url)]);
    let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    // (The plan itself then fails: this empty state does not know the objects applied above.)

    assert!(
        all.contains(&format!(
            "Warning: the postgres state backend: the connection to {remote}:{} is not encrypted",
            clear.port
        )),
        "{all}"
    );
    assert!(!all.contains(PG_ADMIN_PASSWORD), "{all}");
}

/// What lives in one checkout's `.dbctl/` does not travel with a shared
/// state: a local secret and an embedded server are warnings.
#[test]
fn what_stays_in_one_checkout_is_a_warning_with_a_shared_state() {
    let s = team_server();
    let p = Project::new(&format!(
        "{STATE}\nserver \"dev\" {{\n  engine   = \"postgres\"\n  embedded = true\n}}\n\nsecret \"app\" {{}}\n"
    ));
    let out = p.team_ok(&s, &["validate"], 0);
    assert!(
        out.contains("secret.app is kept in this checkout's .dbctl/secrets.json, while the state is shared"),
        "{out}"
    );
    assert!(out.contains("store = \"aws\""), "{out}");
    assert!(out.contains("server.dev is embedded"), "{out}");
    // The local backend: no such warning.
    p.write("server \"dev\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\nsecret \"app\" {}\n");
    let out = p.team_ok(&s, &["validate"], 0);
    assert!(!out.contains("while the state is shared"), "{out}");
}

/// `kill -9` at arbitrary points of an apply with the postgres backend:
/// every rerun, from another checkout, converges, and no lock is ever left.
#[test]
fn an_apply_killed_at_random_points_converges_from_another_checkout() {
    let s = team_server();
    let a = Project::new(&config(&["rnd_base"]));
    let b = Project::new(&config(&["rnd_base"]));
    let mut midway = 0;
    // Each round kills the apply once the server has a given number of its
    // 40 roles: kill points spread over the whole apply, whatever the machine's speed.
    for (round, at) in [1usize, 8, 19, 30, 39].into_iter().enumerate() {
        let names: Vec<String> = (0..40).map(|i| format!("rnd_{round}_{i}")).collect();
        let mut all = vec!["rnd_base"];
        all.extend(names.iter().map(String::as_str));
        a.write(&config(&all));
        b.write(&config(&all));
        let mut apply = a
            .team_command(&s, &["apply", "--auto-approve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let count = || -> usize {
            s.sql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'rnd\\_{round}\\_%'"))
                .parse()
                .unwrap()
        };
        let since = std::time::Instant::now();
        while count() < at && apply.try_wait().unwrap().is_none() {
            assert!(since.elapsed() < Duration::from_secs(120), "round {round}: the apply made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        apply.kill().unwrap();
        apply.wait().unwrap();
        let made = count();
        let delay = since.elapsed().as_secs_f64();
        let journal: usize = s.sql("dbctl_state", "SELECT count(*) FROM dbctl.journal").parse().unwrap();
        eprintln!("round {round}: killed after {delay} s with {made} of 40 roles made, {journal} journal entries");
        if made > 0 && made < 40 {
            midway += 1;
            assert!(journal > 0, "what a killed apply did is in the journal");
        }
        // The other checkout finishes the job, waiting for the killed session to go if it must.
        let out = b.team_ok(&s, &["apply", "--auto-approve", "--lock-timeout", "10s"], 0);
        assert!(out.contains("Apply complete!") || out.contains("No changes."), "round {round}:\n{out}");
        let out = a.team_ok(&s, &["plan", "--detailed-exitcode"], 0);
        assert!(out.contains("No changes."), "round {round}:\n{out}");
        assert_eq!(
            s.sql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'rnd\\_{round}\\_%'")),
            "40",
            "round {round}"
        );
        assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM dbctl.journal"), "0");
        assert_eq!(s.sql("dbctl_state", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), "0");
    }
    assert!(midway >= 3, "only {midway} of 5 kills landed in the middle of an apply");
}

/// The environment of a CI job that reaches the state database but not the
/// managed server: its url points at a port where nothing listens.
fn ci_env(s: &PgServer) -> Vec<(String, String)> {
    let mut env = common::team_env(s);
    env.retain(|(k, _)| k != "TEAM_SERVER_URL");
    env.push(("TEAM_SERVER_URL".into(), "postgres://postgres:not-the-password@127.0.0.1:1/postgres".into()));
    env
}

fn ci(p: &Project, s: &PgServer, args: &[&str]) -> (i32, String, String) {
    let env = ci_env(s);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = p.dbctl_env(args, &env);
    (out.status.code().unwrap_or(-1), common::text(&out.stdout), common::text(&out.stderr))
}

/// `plan --refresh=false` in a checkout that cannot reach the server: it
/// compares with the live state the last apply recorded in the shared state,
/// says so in every format, shows configuration changes but not drift; its
/// saved plan applies where the server still matches, and is refused as
/// stale where it does not.
#[test]
fn plan_without_refresh_compares_with_what_the_last_apply_read() {
    let s = team_server();
    let a = Project::new(&config(&["nr_app"]));
    let b = Project::new(&config(&["nr_app"]));
    a.team_ok(&s, &["apply", "--auto-approve"], 0);

    // The state records the servers as read after the apply, with no password.
    let doc = s.sql("dbctl_state", "SELECT state::text FROM dbctl.states WHERE key = 'default'");
    assert!(doc.contains("\"read_at\""), "{doc}");
    assert!(doc.contains("\"nr_app\""), "{doc}");
    assert!(!doc.contains(common::PG_ADMIN_PASSWORD), "the admin password is in the state: {doc}");
    assert!(!doc.to_lowercase().contains("scram-sha-256$"), "a password hash is in the state");

    // The CI checkout cannot reach the server: a normal plan fails there.
    let (rc, _, err) = ci(&b, &s, &["plan"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
    assert!(
        out.starts_with("Note: not refreshed: compared with the servers as the last apply read them at 20"),
        "{out}"
    );
    assert!(out.contains("changes made outside dbctl since then are not shown"), "{out}");
    let (rc, out, err) = ci(&b, &s, &["plan", "--no-refresh", "--format", "json"]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["refreshed"], false, "{out}");
    assert!(v["live_read_at"].as_str().unwrap().ends_with('Z'), "{out}");
    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--format", "markdown"]);
    assert_eq!(rc, 0, "{err}");
    let head: Vec<&str> = out.lines().take(4).collect();
    assert!(
        head.join("\n").contains("**Not refreshed:** compared with the servers as the last apply read them"),
        "{out}"
    );
    // A refreshed plan says nothing of the kind.
    let out = b.team_command(&s, &["plan", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["refreshed"], true);
    assert!(v.get("live_read_at").is_none());

    // Drift made on the server: not seen without refresh, seen with it.
    s.sql("postgres", "ALTER ROLE nr_app CONNECTION LIMIT 7");
    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
    let out = b.team_ok(&s, &["plan", "--detailed-exitcode"], 2);
    assert!(out.contains("connection_limit"), "{out}");

    // A change to the configuration is planned from the recorded state.
    a.write(&config(&["nr_app", "nr_reports"]));
    b.write(&config(&["nr_app", "nr_reports"]));
    let saved = b.path().join("ci.plan");
    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--out", saved.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("role.nr_reports will be created"), "{out}");
    assert!(out.contains("1 to add, 0 to change, 0 to destroy"), "{out}");
    let copy = a.path().join("ci.plan");
    std::fs::copy(&saved, &copy).unwrap();

    // Applied where the server drifted since: refused, nothing applied.
    let (rc, out) = a.team(&s, &["apply", copy.to_str().unwrap()]);
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("stale plan: live objects have changed since the plan was made: server.main/role/nr_app"),
        "{out}"
    );
    assert_eq!(roles(&s, "nr_%"), "nr_app");

    // The drift undone, the same plan applies.
    s.sql("postgres", "ALTER ROLE nr_app CONNECTION LIMIT -1");
    let out = a.team_ok(&s, &["apply", copy.to_str().unwrap()], 0);
    assert!(out.contains("Apply complete! Resources: 1 added"), "{out}");
    assert_eq!(roles(&s, "nr_%"), "nr_app,nr_reports");
    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");

    // Dropping a database: its tables cannot be counted, so it counts as data.
    s.sql("app", "CREATE TABLE t (x int)");
    let mut cfg = config(&["nr_app", "nr_reports"]);
    cfg.truncate(cfg.find("\ndatabase \"app\"").unwrap());
    b.write(&cfg);
    let (rc, out, err) = ci(&b, &s, &["plan", "--refresh=false", "--format", "json"]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data_loss"][0]["database"], "app", "{out}");
    assert_eq!(v["data_loss"][0]["tables"], serde_json::Value::Null, "{out}");
}

/// A server the shared state has no recorded live state for: planning
/// without refresh is an error naming it, not a plan to create everything.
#[test]
fn plan_without_refresh_needs_a_recorded_live_state() {
    let s = team_server();
    let a = Project::new(&config(&["nr_new"]));
    let (rc, out, err) = ci(&a, &s, &["plan", "--refresh=false"]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("no recorded live state for server.main"), "{err}");
    assert!(err.contains("run `dbctl apply`"), "{err}");
    assert!(!out.contains("will be created"), "{out}");

    // A state pushed (or changed by `state rm`) since the record: the record is not used.
    a.team_ok(&s, &["apply", "--auto-approve"], 0);
    a.team_ok(&s, &["state", "rm", "role.nr_new"], 0);
    let (rc, _, err) = ci(&a, &s, &["plan", "--refresh=false"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("does not describe the state now"), "{err}");
    // An apply with nothing to do records it again.
    a.team_ok(&s, &["import", "role.nr_new", "nr_new"], 0);
    let (rc, out, err) = ci(&a, &s, &["plan", "--refresh=false"]);
    assert_eq!(rc, 1, "{out}{err}");
    let out = a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert!(out.contains("No changes"), "{out}");
    let (rc, out, err) = ci(&a, &s, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");

    // An apply that fails clears the record: what it left is not in it.
    let mut blocker = blocker(&s, "nr_blocked", 30);
    wait_for(Duration::from_secs(10), "the blocker", || {
        s.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; CREATE ROLE nr_blocked%'")
            == "1"
    });
    a.write(&config(&["nr_new", "nr_blocked"]));
    let (rc, out) = a.team(&s, &["apply", "--auto-approve", "--statement-timeout", "1s"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("Apply failed."), "{out}");
    let _ = blocker.kill();
    let _ = blocker.wait();
    let (rc, out, err) = ci(&a, &s, &["plan", "--refresh=false"]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("no recorded live state for server.main"), "{err}");
    assert!(err.contains("the last apply did not finish without errors"), "{err}");

    // --refresh=false with --refresh-only makes no sense.
    let (rc, _, err) = ci(&a, &s, &["plan", "--refresh=false", "--refresh-only"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("cannot be given together"), "{err}");
}

/// Without refresh, a server's admin password is not read: a CI checkout
/// whose store does not hold it plans all the same, and the recorded live
/// state holds no password.
#[test]
fn plan_without_refresh_reads_no_admin_password() {
    use std::os::unix::fs::PermissionsExt;
    let s = team_server();
    let cfg = format!(
        r#"{STATE}
secret "admin" {{
  name     = "prod/main/admin"
  external = true
}}

server "main" {{
  engine         = "postgres"
  url            = "postgres://postgres@127.0.0.1:{}/postgres"
  admin_password = secret.admin
}}

role "nr_admin_app" {{
  server = server.main
}}
"#,
        s.port
    );
    let a = Project::new(&cfg);
    let b = Project::new(&cfg);
    // Only the applying checkout holds the admin password.
    std::fs::create_dir_all(a.path().join(".dbctl")).unwrap();
    let store = a.path().join(".dbctl/secrets.json");
    let doc = serde_json::json!({ "secrets": { "prod/main/admin": { "address": "secret.admin", "versions": [
        { "id": "v1", "created": "2026-12-01T00:00:00Z", "value": common::PG_ADMIN_PASSWORD } ] } } });
    std::fs::write(&store, doc.to_string()).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    a.team_ok(&s, &["apply", "--auto-approve"], 0);
    assert_eq!(roles(&s, "nr_admin%"), "nr_admin_app");

    // The CI checkout has no store: a refreshing plan cannot even start.
    let (rc, out) = b.team(&s, &["plan"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("its admin password, secret.admin, is not in the local secret store"), "{out}");
    let (rc, out) = b.team(&s, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("No changes.") && out.contains("not refreshed"), "{out}");
    assert!(!b.path().join(".dbctl/secrets.json").exists(), "nothing was written for it");
    let state = s.sql("dbctl_state", "SELECT state::text FROM dbctl.states WHERE key = 'default'");
    assert!(state.contains("\"read_at\"") && !state.contains(common::PG_ADMIN_PASSWORD), "{state}");
}
