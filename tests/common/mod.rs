//! Test harness: a throwaway configuration directory whose embedded
//! PostgreSQL server dbctl itself starts (free port, temporary data
//! directory) and that is stopped and deleted when the test ends.
//!
//! The directory is a plain `mktemp -d` (mode 0700), as a user's would be:
//! when the tests run as root, the server's `postgres` or `mysql` user cannot
//! enter it, and dbctl keeps the server's data under /var/lib/dbctl instead.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub const SERVER: &str = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n";

impl Project {
    pub fn new(hcl: &str) -> Project {
        let dir = tempfile::Builder::new().prefix("dbctl-test-").tempdir().expect("tempdir");
        // Private, like `mktemp -d`: as root, the server's system user cannot enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let p = Project { dir };
        p.write(hcl);
        p
    }

    /// A copy of an example directory.
    pub fn example(name: &str) -> Project {
        let p = Project::new("");
        std::fs::remove_file(p.path().join("main.hcl")).ok();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            if e.path().extension().is_some_and(|x| x == "hcl") {
                std::fs::copy(e.path(), p.path().join(e.file_name())).unwrap();
            }
        }
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, hcl: &str) {
        std::fs::write(self.path().join("main.hcl"), hcl).expect("write config");
    }

    pub fn dbctl(&self, args: &[&str]) -> Output {
        self.dbctl_env(args, &[])
    }

    pub fn dbctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dbctl"))
            .arg("--no-color")
            .arg("-C")
            .arg(self.path())
            .args(args)
            .env_remove("NO_COLOR")
            // Credentials for moto; nothing here reaches real AWS.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().copied())
            .output()
            .expect("run dbctl")
    }

    /// Run dbctl and require exit code `rc`; returns stdout + stderr.
    pub fn ok(&self, args: &[&str], rc: i32) -> String {
        let out = self.dbctl(args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(rc), "dbctl {args:?} should exit {rc}:\n{all}");
        all
    }

    pub fn apply(&self) -> String {
        self.ok(&["apply", "--auto-approve"], 0)
    }

    /// A plan with no changes.
    pub fn converged(&self) {
        let out = self.dbctl(&["plan", "--detailed-exitcode"]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "expected no changes:\n{all}");
        assert!(all.contains("No changes. Live state matches the configuration."), "{all}");
    }

    pub fn port(&self) -> u16 {
        std::fs::read_to_string(self.path().join(".dbctl/servers/main/port")).unwrap().trim().parse().unwrap()
    }

    /// The admin password dbctl generated for the embedded server `name`.
    pub fn admin_password_of(&self, name: &str) -> String {
        let file = self.path().join(".dbctl/servers").join(name).join("password");
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).trim().to_string()
    }

    /// The admin password of the embedded server `main`.
    pub fn admin_password(&self) -> String {
        self.admin_password_of("main")
    }

    /// Run SQL as the admin with psql; rows as `a|b` lines.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_as("postgres", Some(&self.admin_password()), db, sql)
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.psql(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn psql_as(&self, user: &str, password: Option<&str>, db: &str, sql: &str) -> Result<String, String> {
        let mut c = Command::new("psql");
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port().to_string())
            .args(["-c", sql])
            // Through the environment, a name with `=` is not read as a connection string.
            .env("PGUSER", user)
            .env("PGDATABASE", db)
            .env_remove("PGPASSWORD");
        match password {
            Some(p) => c.env("PGPASSWORD", p),
            None => c.env("PGPASSWORD", "not-the-password"),
        };
        let out = c.output().expect("psql");
        if out.status.success() {
            Ok(text(&out.stdout).trim().to_string())
        } else {
            Err(text(&out.stderr))
        }
    }

    /// The current stored string of a secret in the local store.
    pub fn secret_document(&self, name: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path().join(".dbctl/secrets.json")).unwrap()).unwrap();
        v["secrets"][name]["versions"].as_array().unwrap().last().unwrap()["value"].as_str().unwrap().to_string()
    }

    /// The password in a secret: the `password` of its RDS credentials document.
    pub fn secret(&self, name: &str) -> String {
        let doc: serde_json::Value = serde_json::from_str(&self.secret_document(name)).expect("RDS-shaped secret");
        doc["password"].as_str().unwrap().to_string()
    }

    pub fn plan_json(&self) -> serde_json::Value {
        let out = self.dbctl(&["plan", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let servers = self.path().join(".dbctl/servers");
        if servers.exists() {
            // Stops every server, configured or not, and deletes its data
            // wherever it lives (under /var/lib/dbctl when the tests run as root).
            let _ = self.dbctl(&["dev", "down", "--purge"]);
        }
        // A server whose initialisation never finished: its directory outside the project.
        for e in std::fs::read_dir(&servers).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::read_link(e.path().join("data")) {
                if let Some(home) = target.parent() {
                    let _ = std::fs::remove_dir_all(home);
                    if let Some(project) = home.parent() {
                        let _ = std::fs::remove_file(project.join("project"));
                        let _ = std::fs::remove_dir(project);
                    }
                }
            }
        }
    }
}

/// SQL statements of a JSON plan, in order.
pub fn steps(plan: &serde_json::Value) -> Vec<String> {
    plan["steps"].as_array().unwrap().iter().map(|s| s["description"].as_str().unwrap().to_string()).collect()
}

/// A moto server (AWS API stand-in) on a free port, stopped on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = std::env::var("DBCTL_MOTO_SERVER")
            .map(PathBuf::from)
            .ok()
            .or_else(|| Some(root.join(".venv/bin/moto_server")).filter(|p| p.exists()))
            .unwrap_or_else(|| PathBuf::from("moto_server"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} ({e}): run the tests with scripts/test, which installs moto into .venv, or set DBCTL_MOTO_SERVER", bin.display())
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }

    /// A Secrets Manager client of the AWS SDK itself, to check what dbctl wrote.
    pub fn secrets_client(&self) -> aws_sdk_secretsmanager::Client {
        let conf = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "static"))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// A PostgreSQL admin like an RDS master user (CREATEROLE CREATEDB, no
// superuser), on a throwaway server. Used by tests/nonsuper.rs.
// ---------------------------------------------------------------------------

/// A throwaway PostgreSQL server (an embedded server of its own project,
/// stopped and deleted on drop) with a `master` login that has CREATEROLE and
/// CREATEDB only, as an RDS master user.
pub struct MasterServer {
    /// The project that runs the server; its `sql` is the real superuser.
    pub host: Project,
    pub port: u16,
    pub password: String,
}

impl MasterServer {
    pub fn start() -> MasterServer {
        let host = Project::new(SERVER);
        host.apply();
        let password = format!("Mst{}", uuid::Uuid::new_v4().simple());
        host.sql("postgres", &format!("CREATE ROLE master LOGIN PASSWORD '{password}' CREATEROLE CREATEDB"));
        let port = host.port();
        MasterServer { host, port, password }
    }

    /// A url for `user` with `password`, on this server.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// The url of the master login (what a configuration reads through `env("DBCTL_TEST_URL")`).
    pub fn master_url(&self) -> String {
        self.url("master", &self.password)
    }

    /// SQL as the real superuser.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.host.sql(db, sql)
    }

    pub fn psql_as(&self, user: &str, password: Option<&str>, db: &str, sql: &str) -> Result<String, String> {
        self.host.psql_as(user, password, db, sql)
    }
}

/// The `server "main"` block of a configuration whose admin url comes from `DBCTL_TEST_URL`.
pub const URL_SERVER: &str = "server \"main\" {\n  engine = \"postgres\"\n  url    = env(\"DBCTL_TEST_URL\")\n}\n";

impl Project {
    /// Run dbctl with `DBCTL_TEST_URL` set, and require exit code `rc`; returns stdout + stderr.
    pub fn ok_with_url(&self, url: &str, args: &[&str], rc: i32) -> String {
        let out = self.dbctl_env(args, &[("DBCTL_TEST_URL", url)]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(rc), "dbctl {args:?} should exit {rc}:\n{all}");
        all
    }
}
