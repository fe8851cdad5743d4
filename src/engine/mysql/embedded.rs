//! Embedded MariaDB for `server { engine = "mysql"  embedded = true }`.
//!
//! `.dbctl/servers/NAME/data` is created by `mariadb-install-db`; `mariadbd`
//! listens on 127.0.0.1 only and runs in its own process group, so it
//! outlives dbctl and a Ctrl-C in the terminal. When dbctl runs as root the
//! server runs as the `mysql` system user (mariadbd refuses root otherwise).
//! The Unix socket goes under /tmp, keyed by port: socket paths are limited
//! to 107 bytes. Every `root` account has the password generated at init
//! (`.dbctl/servers/NAME/password`, mode 0600), so other users of this
//! machine cannot log in as root. As root, the server's files live where the
//! `mysql` user can reach them (see `Embedded::prepare_home`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::embedded::{io, is_root, make_private_dir, nix_user, write_private, Embedded};
use crate::engine::EngineError;

pub fn find_bindir() -> Result<PathBuf, EngineError> {
    if let Ok(dir) = std::env::var("DBCTL_MARIADB_BINDIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("mariadbd").is_file() { Ok(dir) } else { Err(missing()) };
    }
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        if PathBuf::from(dir).join("mariadbd").is_file() {
            return Ok(PathBuf::from(dir));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("mariadbd").is_file() {
                return Ok(dir);
            }
        }
    }
    Err(missing())
}

fn missing() -> EngineError {
    EngineError::Setup(
        "no MariaDB server binaries found (mariadbd). Install them: `apt-get install mariadb-server` on \
         Debian/Ubuntu; or set DBCTL_MARIADB_BINDIR to the directory that holds mariadbd"
            .into(),
    )
}

fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn socket(e: &Embedded) -> PathBuf {
    std::env::temp_dir().join(format!("dbctl-mariadb-{}.sock", e.port))
}

/// The server's own temporary directory.
fn tmpdir(e: &Embedded) -> PathBuf {
    e.home().join("tmp")
}

fn run(mut c: Command, what: &str) -> Result<String, EngineError> {
    let out = c.output().map_err(|x| EngineError::Setup(format!("{what}: cannot run: {x}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(EngineError::Setup(format!("{what} failed:\n{}", text.trim())))
    }
}

/// mariadb-install-db into `data` (the staging directory `Embedded::init`
/// renames once complete), holding `lock` while it runs.
pub fn init(e: &Embedded, home: &Path, data: &Path, lock: &std::fs::File) -> Result<(), EngineError> {
    let owner = if is_root() { nix_user("mysql") } else { None };
    for dir in [data, &home.join("tmp")] {
        match owner {
            Some(o) => make_private_dir(dir, o)?,
            None => std::fs::create_dir_all(dir).map_err(|x| io("create", dir, x))?,
        }
    }
    let password = e.ensure_password()?;
    // Run by mariadb-install-db after the system tables exist: every root
    // account gets the password (the server hashes it; this file is removed).
    let extra = home.join("dbctl-init.sql");
    write_private(
        &extra,
        &format!(
            "UPDATE mysql.global_priv SET priv = JSON_SET(priv, '$.plugin', 'mysql_native_password', \
             '$.authentication_string', PASSWORD('{password}')) WHERE User = 'root';\n\
             DELETE FROM mysql.global_priv WHERE User = '';\n"
        ),
        None,
    )?;
    let mut c = Command::new(tool("mariadb-install-db"));
    c.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        // Temporary tables get pid-based names: servers bootstrapping at once must not share a directory.
        .arg(format!("--tmpdir={}", home.join("tmp").display()))
        .arg(format!("--extra-file={}", extra.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .current_dir(home);
    if is_root() {
        c.arg("--user=mysql");
    }
    crate::engine::embedded::inherit_lock(&mut c, lock);
    let done = run(c, "mariadb-install-db").map(|_| ());
    let _ = std::fs::remove_file(&extra);
    done
}

fn admin(e: &Embedded) -> Command {
    let mut c = Command::new(tool("mariadb-admin"));
    c.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root"])
        .arg(format!("--port={}", e.port))
        .env_remove("MYSQL_PWD");
    // Through the environment, never on a command line other users can read.
    if let Some(p) = e.password() {
        c.env("MYSQL_PWD", p);
    }
    c
}

pub fn is_running(e: &Embedded) -> bool {
    let mut c = admin(e);
    c.args(["--connect-timeout=2", "ping"]).stdout(Stdio::null()).stderr(Stdio::null());
    c.status().is_ok_and(|s| s.success())
}

pub fn start(e: &Embedded) -> Result<(), EngineError> {
    let log = e.log_file();
    // Servers initialised before the private tmpdir existed get it now.
    if !tmpdir(e).is_dir() {
        match nix_user("mysql").filter(|_| is_root()) {
            Some(o) => make_private_dir(&tmpdir(e), o)?,
            None => std::fs::create_dir_all(tmpdir(e)).map_err(|x| io("create", &tmpdir(e), x))?,
        }
    }
    let mut c = Command::new(e.bindir().join("mariadbd"));
    c.arg("--no-defaults")
        .arg(format!("--datadir={}", e.data_dir().display()))
        .arg(format!("--port={}", e.port))
        .arg(format!("--tmpdir={}", tmpdir(e).display()))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket(e).display()))
        .arg(format!("--pid-file={}", e.home().join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(e.home())
        .process_group(0);
    if is_root() {
        c.arg("--user=mysql");
    }
    c.spawn().map_err(|x| EngineError::Setup(format!("cannot start mariadbd: {x}")))?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if is_running(e) {
            return require_password(e);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail: String =
        std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(5).collect::<Vec<_>>().join("\n");
    Err(EngineError::Setup(format!(
        "the embedded MariaDB {} did not start within 60 s; {}:\n{tail}",
        e.name,
        log.display()
    )))
}

/// A server made by an earlier dbctl let `root` in without a password: give
/// every root account the stored one (and drop anonymous accounts). Nothing
/// to do when a login without a password is refused.
pub fn require_password(e: &Embedded) -> Result<(), EngineError> {
    use std::io::Write;
    let client = |sql: &str| -> std::io::Result<std::process::Output> {
        let mut c = Command::new(tool("mariadb"));
        c.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-N", "-B"])
            .arg(format!("--port={}", e.port))
            .env_remove("MYSQL_PWD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        // The statement goes through stdin: a command line is visible to every user.
        child.stdin.take().expect("piped stdin").write_all(sql.as_bytes())?;
        child.wait_with_output()
    };
    let open = client("SELECT 1;\n").is_ok_and(|o| o.status.success());
    if !open {
        return Ok(());
    }
    let password = e.ensure_password()?;
    let out = client(&format!(
        "UPDATE mysql.global_priv SET priv = JSON_SET(priv, '$.plugin', 'mysql_native_password', \
         '$.authentication_string', PASSWORD('{password}')) WHERE User = 'root';\n\
         DELETE FROM mysql.global_priv WHERE User = '';\nFLUSH PRIVILEGES;\n"
    ))
    .map_err(|x| EngineError::Setup(format!("mariadb: cannot run: {x}")))?;
    if !out.status.success() {
        return Err(EngineError::Setup(format!(
            "cannot set the root password of the embedded MariaDB {}: {}",
            e.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub fn stop(e: &Embedded) -> Result<(), EngineError> {
    let mut c = admin(e);
    c.arg("shutdown");
    run(c, "mariadb-admin shutdown")?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) && e.home().join("mariadbd.pid").exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
