//! Embedded servers on a fresh machine: the quickstart from a private
//! directory (a `mktemp -d`, mode 0700, as root and not), servers closed to
//! the machine's other users, files that hold data readable by their owner
//! only, and a missing server package named.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{text, Project};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Run a command as the `nobody` user (tests that run as root only).
fn as_nobody(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "nobody", "--", program]).current_dir("/");
    c
}

#[test]
fn quickstart_applies_from_a_private_directory_and_keeps_its_files_private() {
    let p = Project::example("quickstart");
    assert_eq!(mode(p.path()), 0o700, "the harness gives each test a plain mktemp -d");
    let out = p.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    p.converged();

    let link = p.path().join(".dbctl/servers/main/data");
    let data = std::fs::read_link(&link);
    if is_root() {
        // The server runs as `postgres`, which cannot enter the project: its data lives elsewhere.
        let data = data.expect("data is a link to where the server keeps it");
        assert!(data.starts_with("/var/lib/dbctl/"), "{}", data.display());
        assert_eq!(mode(data.parent().unwrap()), 0o700);
        let owner = Command::new("stat").args(["-c", "%U"]).arg(data.parent().unwrap()).output().unwrap();
        assert_eq!(text(&owner.stdout).trim(), "postgres");
    } else {
        assert!(data.is_err(), "a normal user's server keeps its data in the project");
    }
    assert_eq!(mode(&p.path().join(".dbctl/servers/main/password")), 0o600);

    // A published routing document and every backup file: 0600.
    assert_eq!(mode(&p.path().join("deploy/shop/databases.json")), 0o600);
    p.ok(&["backup", "run"], 0);
    let backups = files(&p.path().join(".dbctl/backups"));
    assert!(backups.iter().any(|f| f.to_string_lossy().ends_with(".dump.zst")), "{backups:?}");
    for f in &backups {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    if is_root() {
        let dump = backups.iter().find(|f| f.to_string_lossy().ends_with(".dump.zst")).unwrap();
        // nobody cannot even reach it: the project directory is private too.
        let out = as_nobody("cat").arg(dump).output().unwrap();
        assert!(!out.status.success(), "nobody read a dump");
    }

    // dev down --purge removes the data wherever it lives.
    let home = std::fs::read_link(&link).ok().and_then(|d| d.parent().map(Path::to_path_buf));
    let out = p.ok(&["dev", "down", "--purge"], 0);
    assert!(out.contains("server.main: stopped; its data is deleted"), "{out}");
    assert!(!p.path().join(".dbctl/servers/main").exists());
    if let Some(home) = home {
        assert!(!home.exists(), "{} is left behind", home.display());
        assert!(!home.parent().unwrap().exists(), "the project's directory under /var/lib/dbctl is left behind");
    }
}

#[test]
fn quickstart_applies_as_a_normal_user() {
    if !is_root() {
        // Already a normal user: the other tests cover it.
        return;
    }
    // A directory and a built binary the `nobody` user can use; dbctl then runs as nobody.
    let p = Project::example("quickstart");
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = tempfile::Builder::new().prefix("dbctl-bin-").tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_dbctl"), bin.path().join("dbctl")).unwrap();
    let dbctl = bin.path().join("dbctl");
    let run = |args: &[&str]| {
        let out =
            as_nobody(dbctl.to_str().unwrap()).arg("--no-color").arg("-C").arg(p.path()).args(args).output().unwrap();
        (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    };
    let (rc, out) = run(&["apply", "--auto-approve"]);
    assert_eq!(rc, Some(0), "{out}");
    let (rc, out) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(!p.path().join(".dbctl/servers/main/data").is_symlink(), "a normal user's data stays in the project");
    let (rc, out) = run(&["dev", "down", "--purge"]);
    assert_eq!(rc, Some(0), "{out}");
}

#[test]
fn other_users_cannot_log_in_to_the_embedded_postgres_as_the_admin() {
    let p = Project::new(&format!("{}\ndatabase \"app\" {{\n  server = server.main\n}}\n", common::SERVER));
    p.apply();
    // dbctl and the harness log in with the stored password...
    assert_eq!(p.sql("postgres", "SELECT current_user"), "postgres");
    // ...and without it nobody does, whoever they are on this machine.
    let err = p.psql_as("postgres", None, "postgres", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    if is_root() {
        for password in ["", "postgres"] {
            let out = as_nobody("psql")
                .args(["-X", "-w", "-h", "127.0.0.1", "-p", &p.port().to_string(), "-U", "postgres", "-c", "SELECT 1"])
                .env("PGPASSWORD", password)
                .output()
                .unwrap();
            assert!(!out.status.success(), "nobody connected as postgres: {}", text(&out.stdout));
        }
    }
    // The password is in no plan, state or output.
    let password = p.admin_password();
    assert_eq!(password.len(), 32);
    let plan = p.ok(&["plan", "--format", "json"], 0);
    let state = std::fs::read_to_string(p.path().join(".dbctl/state.json")).unwrap();
    let status = p.ok(&["dev", "status"], 0);
    for (what, s) in [("plan", &plan), ("state", &state), ("dev status", &status)] {
        assert!(!s.contains(&password), "the admin password is in the {what}");
    }
}

#[test]
fn other_users_cannot_log_in_to_the_embedded_mariadb_as_root() {
    let p = Project::new(
        "server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n\ndatabase \"app\" {\n  server = server.main\n}\n",
    );
    p.apply();
    p.converged();
    let mariadb = |c: &mut Command, password: &str| {
        c.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-N", "-B"])
            .arg(format!("--port={}", p.port()))
            .args(["-e", "SELECT CURRENT_USER()"])
            .env("MYSQL_PWD", password)
            .output()
            .unwrap()
    };
    let ok = mariadb(&mut Command::new("mariadb"), &p.admin_password());
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let denied = mariadb(&mut Command::new("mariadb"), "");
    assert!(text(&denied.stderr).contains("Access denied"), "{}", text(&denied.stderr));
    if is_root() {
        let out = mariadb(&mut as_nobody("mariadb"), "");
        assert!(!out.status.success(), "nobody connected as root: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("Access denied"), "{}", text(&out.stderr));
    }
}

#[test]
fn missing_server_binaries_name_the_package_to_install() {
    let p = Project::new(common::SERVER);
    let out = p.dbctl_env(&["apply", "--auto-approve"], &[("DBCTL_PG_BINDIR", "/nonexistent")]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("apt-get install postgresql"), "{all}");

    p.write("server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n");
    let out = p.dbctl_env(&["apply", "--auto-approve"], &[("DBCTL_MARIADB_BINDIR", "/nonexistent")]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("apt-get install mariadb-server"), "{all}");
}

/// Two `dev up` at once on a stopped server (two terminals, or a rerun
/// beside the `pg_ctl` of a killed apply): the one whose postmaster loses the
/// data directory's lock file finds the other's server and waits for it.
#[test]
fn two_starts_at_once_both_end_with_the_server_running() {
    let p = Project::new(common::SERVER);
    p.ok(&["dev", "up"], 0);
    for round in 0..3 {
        p.ok(&["dev", "down"], 0);
        let both: Vec<_> = (0..2)
            .map(|_| {
                let dir = p.path().to_path_buf();
                std::thread::spawn(move || {
                    Command::new(env!("CARGO_BIN_EXE_dbctl"))
                        .arg("--no-color")
                        .arg("-C")
                        .arg(dir)
                        .args(["dev", "up"])
                        .output()
                        .unwrap()
                })
            })
            .collect();
        for out in both.into_iter().map(|t| t.join().unwrap()) {
            assert!(out.status.success(), "round {round}:\n{}{}", text(&out.stdout), text(&out.stderr));
        }
        assert_eq!(p.sql("postgres", "SELECT 1"), "1", "round {round}");
    }
}

#[test]
fn a_server_made_by_an_earlier_dbctl_requires_the_password_from_its_next_start() {
    let p = Project::new(&format!("{}\ndatabase \"app\" {{\n  server = server.main\n}}\n", common::SERVER));
    p.apply();
    p.ok(&["dev", "down"], 0);
    // What earlier versions left: the admin trusted on loopback, and no stored password.
    let data = p.path().join(".dbctl/servers/main/data");
    std::fs::write(
        data.join("pg_hba.conf"),
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    std::fs::remove_file(p.path().join(".dbctl/servers/main/password")).unwrap();

    p.ok(&["dev", "up"], 0);
    let err = p.psql_as("postgres", None, "postgres", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    assert_eq!(p.sql("postgres", "SELECT current_user"), "postgres");
    assert_eq!(mode(&p.path().join(".dbctl/servers/main/password")), 0o600);
    p.converged();
}

#[test]
fn a_mariadb_made_by_an_earlier_dbctl_gets_a_root_password_running_or_not() {
    let p = Project::new(
        "server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n\ndatabase \"app\" {\n  server = server.main\n}\n",
    );
    p.apply();
    let client = |program: &str, password: &str, args: &[&str]| {
        Command::new(program)
            .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root"])
            .arg(format!("--port={}", p.port()))
            .args(args)
            .env("MYSQL_PWD", password)
            .output()
            .unwrap()
    };
    // What earlier versions left: root without a password, and no stored password.
    let legacy = || {
        let out = client(
            "mariadb",
            &p.admin_password(),
            &["-e", "UPDATE mysql.global_priv SET priv = JSON_REMOVE(priv, '$.authentication_string', '$.plugin') WHERE User = 'root'; FLUSH PRIVILEGES"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::remove_file(p.path().join(".dbctl/servers/main/password")).unwrap();
        assert!(client("mariadb", "", &["-e", "SELECT 1"]).status.success(), "root is open again");
    };
    let closed = || {
        let out = client("mariadb", "", &["-e", "SELECT 1"]);
        assert!(text(&out.stderr).contains("Access denied"), "root logs in without a password");
        assert!(client("mariadb", &p.admin_password(), &["-e", "SELECT 1"]).status.success());
    };

    // Running when the new dbctl first sees it.
    legacy();
    p.converged();
    closed();

    // Stopped when the new dbctl first sees it.
    legacy();
    assert!(client("mariadb-admin", "", &["shutdown"]).status.success());
    while p.ok(&["dev", "status"], 0).contains("running") {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    p.ok(&["dev", "up"], 0);
    closed();
    p.converged();
}
