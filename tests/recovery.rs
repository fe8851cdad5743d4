//! Recovery and saved plans under real use: intents left by an interrupted
//! create, a journal that cannot be written, a closed stdout, the first saved
//! plan of a new configuration, variables carried by the plan, and a plan
//! file edited by hand.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{text, Project, SERVER};

fn with_db(name: &str) -> String {
    format!(
        "{SERVER}\ndatabase \"{name}\" {{\n  server = server.main\n}}\n\nrole \"r\" {{\n  server = server.main\n}}\n"
    )
}

#[test]
fn the_first_saved_plan_of_a_new_configuration_applies() {
    let p = Project::new(&with_db("fresh"));
    assert!(!p.path().join(".dbctl/state.json").exists(), "never applied");
    let file = p.path().join("first.plan");
    p.ok(&["plan", "--out", file.to_str().unwrap()], 0);
    let out = p.ok(&["apply", file.to_str().unwrap()], 0);
    assert!(out.contains("Apply complete! Resources: 3 added"), "{out}");
    p.converged();
}

#[test]
fn an_intent_left_by_a_killed_create_is_adopted_not_refused() {
    let p = Project::new(&with_db("fresh"));
    p.apply();
    // What a kill during CREATE leaves: the object on the server, and in the
    // journal only the intent recorded before the statement ran.
    p.write(&format!("{}\ndatabase \"late\" {{\n  server = server.main\n}}\n", with_db("fresh")));
    p.sql("postgres", "CREATE DATABASE late");
    let intent = r#"{"put":{"address":"database.late","resource":{"type":"database","server":"server.main","name":"late","attributes":{"owner":"postgres"},"pending":true}}}"#;
    std::fs::write(p.path().join(".dbctl/state.journal"), format!("{intent}\n")).unwrap();
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("adopted: an interrupted apply created it"), "{plan}");
    assert!(!plan.contains("does not manage it"), "{plan}");
    assert!(!plan.contains("outside of dbctl"), "not drift: {plan}");
    p.apply();
    p.converged();
    // PUBLIC loses CONNECT, as on every database dbctl creates.
    assert_eq!(p.sql("postgres", "SELECT has_database_privilege('public', 'late', 'CONNECT')"), "f");
    assert!(!p.ok(&["state", "show", "database.late"], 0).contains("pending"));

    // An intent whose statement never ran is forgotten: a plain create.
    p.write(&format!(
        "{}\ndatabase \"late\" {{\n  server = server.main\n}}\n\nrole \"never\" {{\n  server = server.main\n}}\n",
        with_db("fresh")
    ));
    let intent = r#"{"put":{"address":"role.never","resource":{"type":"role","server":"server.main","name":"never","attributes":{},"pending":true}}}"#;
    std::fs::write(p.path().join(".dbctl/state.journal"), format!("{intent}\n")).unwrap();
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("# role.never will be created"), "{plan}");
    assert!(!plan.contains("outside of dbctl"), "{plan}");
    p.apply();
    p.converged();
}

/// A killed apply's `CREATE` goes on on the server after the client is gone;
/// the rerun waits for it rather than racing it to "already exists".
#[test]
fn a_create_still_running_for_a_killed_apply_is_waited_for_and_adopted() {
    let p = Project::new(&with_db("fresh"));
    p.apply();
    p.write(&format!("{}\nrole \"slow\" {{\n  server = server.main\n}}\n", with_db("fresh")));
    let intent = r#"{"put":{"address":"role.slow","resource":{"type":"role","server":"server.main","name":"slow","attributes":{},"pending":true}}}"#;
    std::fs::write(p.path().join(".dbctl/state.journal"), format!("{intent}\n")).unwrap();
    let psql = |app: &str, sql: &str| {
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-h", "127.0.0.1", "-p"])
            .arg(p.port().to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGPASSWORD", p.admin_password())
            .env("PGAPPNAME", app);
        c
    };
    // The killed apply's CREATE ROLE, still running: blocked behind another
    // transaction that creates the same role and commits 2 s later.
    let mut holder = psql("holder", "BEGIN; CREATE ROLE slow; SELECT pg_sleep(2); COMMIT;").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut orphan = psql("dbctl", "CREATE ROLE slow").stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let plan = p.ok(&["plan"], 0);
    assert!(plan.contains("adopted: an interrupted apply created it"), "{plan}");
    holder.wait().unwrap();
    let _ = orphan.wait();
    p.apply();
    p.converged();
}

#[test]
fn a_disk_that_fills_mid_apply_loses_nothing_and_the_messages_say_what_is_true() {
    use std::os::unix::process::CommandExt;
    let p = Project::new(&with_db("first"));
    p.apply();
    let mut hcl = with_db("first");
    for i in 0..6 {
        hcl.push_str(&format!("\ndatabase \"more{i}\" {{\n  server = server.main\n}}\n"));
    }
    p.write(&hcl);
    // The disk fills after about two journal lines: every later write fails
    // (RLIMIT_FSIZE, with SIGXFSZ ignored, makes writes past it fail with EFBIG).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    cmd.args(["--no-color", "-C"]).arg(p.path()).args(["apply", "--auto-approve"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 600, rlim_max: 600 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("File too large"), "{all}");
    assert!(all.contains("saving the state failed"), "{all}");
    assert!(all.contains("stopped recording earlier"), "{all}");
    assert!(!all.contains("holds every step of this apply"), "the journal does not hold every step: {all}");
    // Each database that a step created is on the server; the state loads and
    // the next apply goes on from there without `import`.
    let created: usize =
        p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'more%'").parse().unwrap();
    assert!(created >= 1 && created < 6, "the apply stopped mid-way ({created} created)");
    p.ok(&["state", "list"], 0);
    p.apply();
    p.converged();
}

/// Run dbctl with stdout read by a reader that stops after `lines` lines.
fn closed_after(p: &Project, args: &[&str], lines: usize) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .arg("--no-color")
        .arg("-C")
        .arg(p.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            break;
        }
    }
    drop(r);
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_closed_stdout_never_panics() {
    let p = Project::new(&with_db("d"));
    for args in [&["schema"][..], &["graph"], &["completions", "bash"], &["validate"]] {
        let (_, err) = closed_after(&p, args, 1);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    p.apply();
    let (_, err) = closed_after(&p, &["plan"], 0);
    assert!(!err.contains("panicked"), "{err}");

    // An apply whose reader goes away while steps run stops after the step
    // in flight, records it, and the rerun converges.
    let mut hcl = SERVER.to_string();
    for i in 0..40 {
        hcl.push_str(&format!("\nrole \"r{i}\" {{\n  server = server.main\n}}\n"));
    }
    p.write(&hcl);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .args(["apply", "--auto-approve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "the apply printed no step");
        if l.starts_with("[3/") {
            break;
        }
    }
    drop(r);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Apply interrupted."), "{err}");
    p.apply();
    p.converged();
}

fn with_vars() -> String {
    format!(
        "{SERVER}
variable \"limit\" {{
  default = 3
}}

variable \"app_password\" {{
  sensitive = true
}}

secret \"app\" {{
  value = var.app_password
}}

user \"app\" {{
  server           = server.main
  password         = secret.app
  connection_limit = var.limit
}}
"
    )
}

#[test]
fn a_saved_plan_carries_its_variables_and_asks_again_only_for_sensitive_ones() {
    let p = Project::new(&with_vars());
    let file = p.path().join("vars.plan");
    let f = file.to_str().unwrap();
    p.ok(&["--var", "limit=7", "--var", "app_password=s3cret-value", "plan", "--out", f], 0);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(!saved.contains("s3cret-value"), "the plan file never holds a sensitive value");
    assert!(saved.contains("\"limit\""), "{saved}");

    let out = p.ok(&["apply", f], 1);
    assert!(out.contains("app_password"), "{out}");
    let out = p.ok(&["--var", "app_password=wrong", "apply", f], 1);
    assert!(out.contains("different value than when the plan was made"), "{out}");
    let out = p.ok(&["--var", "app_password=s3cret-value", "--var", "limit=8", "apply", f], 1);
    assert!(out.contains("the variable \"limit\" has a different value"), "{out}");

    let out = p.dbctl_env(&["apply", f], &[("DBCTL_VAR_app_password", "s3cret-value")]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(p.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'"), "7");
    assert_eq!(p.psql_as("app", Some("s3cret-value"), "postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn a_plan_file_edited_by_hand_is_refused() {
    let p = Project::new(&with_db("d"));
    p.apply();
    p.write(&format!("{}\nrole \"extra\" {{\n  server = server.main\n}}\n", with_db("d")));
    let file = p.path().join("edit.plan");
    p.ok(&["plan", "--out", file.to_str().unwrap()], 0);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("CREATE ROLE \\\"extra\\\""), "{saved}");
    let tampered = saved.replace("CREATE ROLE \\\"extra\\\"", "CREATE ROLE \\\"extra\\\" SUPERUSER");
    std::fs::write(&file, &tampered).unwrap();
    let out = p.ok(&["apply", file.to_str().unwrap()], 1);
    assert!(out.contains("does not match its digest"), "{out}");
    let out = p.ok(&["show", file.to_str().unwrap()], 1);
    assert!(out.contains("does not match its digest"), "{out}");

    // Even with its digest made again, a plan whose steps are not what the
    // configuration calls for is refused.
    let mut plan: serde_json::Value = serde_json::from_str(&tampered).unwrap();
    plan["digest"] = "".into();
    let unsealed: dbctl::plan::Plan = serde_json::from_value(plan).unwrap();
    let mut resealed = unsealed.clone();
    resealed.seal();
    std::fs::write(&file, serde_json::to_vec_pretty(&resealed).unwrap()).unwrap();
    let out = p.ok(&["apply", file.to_str().unwrap()], 1);
    assert!(out.contains("stale plan: its steps differ"), "{out}");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'extra'"), "0");
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolsuper AND rolname = 'extra'"), "0");
}

fn server_with_users_and_databases() -> String {
    with_users_and_databases(SERVER)
}

fn with_users_and_databases(server: &str) -> String {
    let mut hcl = server.to_string();
    for i in 1..=2 {
        hcl.push_str(&format!(
            "\nsecret \"s{i}\" {{\n  generate {{\n    length = 20\n  }}\n}}\n\n\
             user \"u{i}\" {{\n  server   = server.main\n  password = secret.s{i}\n}}\n\n\
             database \"d{i}\" {{\n  server = server.main\n}}\n"
        ));
    }
    hcl
}

/// A kill while the embedded server is being initialised or started leaves
/// a half-made data directory, an initdb still running, or a server not yet
/// accepting connections: the plain rerun finishes the job, and the server
/// is in the state (so `destroy` stops it).
#[test]
fn a_kill_while_the_embedded_server_initialises_never_fails_the_rerun() {
    kill_during_server_start(&server_with_users_and_databases(), &[0.0, 0.1, 0.4, 0.8, 1.5], |p| {
        p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('d1', 'd2')")
    });
}

/// The same for an embedded MariaDB (mariadb-install-db killed, or mariadbd
/// not yet answering).
#[test]
fn a_kill_while_the_embedded_mariadb_initialises_never_fails_the_rerun() {
    let server = "server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n";
    kill_during_server_start(&with_users_and_databases(server), &[0.1, 0.8, 2.0], |p| {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e"])
            .arg("SELECT count(*) FROM information_schema.schemata WHERE schema_name IN ('d1', 'd2')")
            .arg(format!("--port={}", p.port()))
            .env("MYSQL_PWD", p.admin_password())
            .output()
            .unwrap();
        text(&out.stdout).trim().to_string()
    });
}

fn kill_during_server_start(hcl: &str, delays: &[f64], databases: impl Fn(&Project) -> String) {
    for &delay in delays {
        let p = Project::new(hcl);
        let mut child = Command::new(env!("CARGO_BIN_EXE_dbctl"))
            .arg("--no-color")
            .arg("-C")
            .arg(p.path())
            .args(["apply", "--auto-approve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 && !line.contains("initialise and start") {
            line.clear();
        }
        assert!(line.contains("initialise and start"), "the apply never reached the server's start");
        std::thread::sleep(std::time::Duration::from_secs_f64(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let out = p.dbctl(&["apply", "--auto-approve"]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "rerun after a kill at {delay} s:\n{all}");
        p.converged();
        let list = p.ok(&["state", "list"], 0);
        assert!(list.lines().any(|l| l == "server.main"), "killed at {delay} s:\n{list}");
        assert_eq!(databases(&p), "2", "killed at {delay} s");
    }
}

/// A server that exists but is missing from the state is recorded by the
/// next apply, not left out for good (a kill between its start and the
/// state write leaves this).
#[test]
fn an_embedded_server_missing_from_the_state_is_recorded_again() {
    let p = Project::new(&server_with_users_and_databases());
    p.apply();
    p.ok(&["state", "rm", "server.main"], 0);
    let plan = p.ok(&["plan"], 0);
    assert!(
        plan.contains("exists already (made by `dbctl dev up`, or by an apply interrupted before recording it)"),
        "{plan}"
    );
    p.apply();
    p.converged();
    assert!(p.ok(&["state", "list"], 0).lines().any(|l| l == "server.main"));
}

/// A server killed hard leaves its postmaster.pid behind: the next apply
/// starts it again (crash recovery included) and converges.
#[test]
fn a_stale_postmaster_pid_of_a_killed_server_does_not_block_the_next_apply() {
    let p = Project::new(&server_with_users_and_databases());
    p.apply();
    let pid_file = p.path().join(".dbctl/servers/main/data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().lines().next().unwrap().trim().parse().unwrap();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    // The postmaster is gone; its children follow it.
    let since = std::time::Instant::now();
    while Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().unwrap().success() {
        assert!(since.elapsed().as_secs() < 10, "the server did not die");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(pid_file.exists(), "a hard kill leaves postmaster.pid");
    let out = p.apply();
    assert!(out.contains("started embedded server main"), "{out}");
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname IN ('d1', 'd2')"), "2");
}
