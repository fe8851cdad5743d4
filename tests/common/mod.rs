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
            // The request recorder (tests/rds.rs) writes here, not into the checkout.
            .env("MOTO_RECORDER_FILEPATH", std::env::temp_dir().join(format!("dbctl-moto-recording-{port}")))
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
// TLS test servers: a CA made in the test with the openssl CLI, and
// PostgreSQL / MariaDB servers that the test itself starts (not dbctl), with
// whatever TLS settings the test asks for.
// ---------------------------------------------------------------------------

fn tls_run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(out.status.success(), "{c:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A free TCP port on this machine.
fn tls_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test CA, a second unrelated CA, and server certificates (EC P-256).
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
}

impl TlsFiles {
    /// `ca.crt`; `server.crt`/`server.key` for `localhost` and 127.0.0.1
    /// signed by it; `wronghost.crt`/`.key` for db.example.com only, signed by
    /// it; `other-ca.crt`, a CA that signed nothing here.
    pub fn create() -> TlsFiles {
        let dir = tempfile::Builder::new().prefix("dbctl-tls-").tempdir().unwrap();
        // The servers' users read the certificates (their keys are copied to them, 0600).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = TlsFiles { dir };
        f.ca("ca");
        f.ca("other-ca");
        f.leaf("server", "DNS:localhost,IP:127.0.0.1");
        f.leaf("wronghost", "DNS:db.example.com");
        for e in std::fs::read_dir(f.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "crt") {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        f
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str) {
        tls_run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-days", "3", "-subj", &format!("/CN=dbctl test {name}")])
                .arg("-keyout")
                .arg(self.path(&format!("{name}.key")))
                .arg("-out")
                .arg(self.path(&format!("{name}.crt"))),
        );
    }

    fn leaf(&self, name: &str, san: &str) {
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        tls_run_ok(
            Command::new("openssl")
                .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(self.path(&format!("{name}.key")))
                .arg("-out")
                .arg(self.path(&format!("{name}.csr"))),
        );
        tls_run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "3", "-CAcreateserial"])
                .arg("-in")
                .arg(self.path(&format!("{name}.csr")))
                .arg("-CA")
                .arg(self.path("ca.crt"))
                .arg("-CAkey")
                .arg(self.path("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(self.path(&format!("{name}.crt"))),
        );
    }

    /// A copy of `name.key` (and `name.crt`) in `dir`, owned by `user`, mode 0600, as servers require.
    fn key_for(&self, name: &str, dir: &Path, user: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::copy(self.path(&format!("{name}.crt")), &crt).unwrap();
        std::fs::copy(self.path(&format!("{name}.key")), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        tls_run_ok(Command::new("chown").arg(format!("{user}:")).arg(&crt).arg(&key));
        (crt, key)
    }
}

/// The directory of the PostgreSQL server binaries (the newest installed).
pub fn tls_pg_bindir() -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    v.sort();
    v.pop().expect("initdb")
}

/// How a test PostgreSQL server takes connections.
pub struct PgTls<'a> {
    /// `Some(cert name)`: `ssl = on` with that certificate of `files`.
    pub cert: Option<(&'a TlsFiles, &'a str)>,
    /// pg_hba.conf lines for TCP (local socket connections are always trusted).
    pub hba: &'a str,
    /// listen_addresses.
    pub listen: &'a str,
}

/// A PostgreSQL server the test starts as the `postgres` user, with
/// `log_connections` on; stopped and removed on drop. Admin: `postgres`
/// with password [`PG_ADMIN_PASSWORD`].
pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

pub const PG_ADMIN_PASSWORD: &str = "adm1n-s3cret";

impl PgServer {
    pub fn start(how: PgTls) -> PgServer {
        let dir = tempfile::Builder::new().prefix("dbctl-pgtls-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        tls_run_ok(Command::new("chown").arg("postgres:").arg(dir.path()));
        let bin = tls_pg_bindir();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PG_ADMIN_PASSWORD).unwrap();
        tls_run_ok(Command::new("chown").arg("postgres:").arg(&pw));
        let data = dir.path().join("data");
        tls_run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args(["--no-sync", "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pw.display()))
                .arg("-D")
                .arg(&data),
        );
        std::fs::write(data.join("pg_hba.conf"), format!("local all all trust\n{}\n", how.hba)).unwrap();
        let port = tls_free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses='{}' -c log_connections=on -c log_line_prefix='%m [%p] '",
            dir.path().display(),
            how.listen
        );
        if let Some((files, name)) = how.cert {
            let (crt, key) = files.key_for(name, dir.path(), "postgres");
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", crt.display(), key.display()));
        }
        tls_run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .arg("-o")
                .arg(opts),
        );
        PgServer { dir, port }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Run SQL as `postgres` over the local socket (never TCP, so never in the TCP connection counts).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        tls_run_ok(
            Command::new("psql")
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-d")
                .arg(db)
                .args(["-c", sql]),
        )
        .trim()
        .to_string()
    }

    /// The admin url for `host`, with `query` appended (`sslmode=...`).
    pub fn url(&self, host: &str, query: &str) -> String {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("postgres://postgres:{PG_ADMIN_PASSWORD}@{host}:{}/postgres{q}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(tls_pg_bindir().join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .output();
    }
}

/// A MariaDB server the test starts (as the `mysql` user when root) with
/// TLS from `files` (`server` certificate) and `require_secure_transport`
/// as asked. Admin: `admin`@`%` with password [`MY_ADMIN_PASSWORD`].
pub struct MariaServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

pub const MY_ADMIN_PASSWORD: &str = "my-adm1n-s3cret";

impl MariaServer {
    pub fn start(files: &TlsFiles, require_secure_transport: bool) -> MariaServer {
        Self::start_on(files, require_secure_transport, "127.0.0.1")
    }

    /// The same, listening on `bind` (`--bind-address`).
    pub fn start_on(files: &TlsFiles, require_secure_transport: bool, bind: &str) -> MariaServer {
        let dir = tempfile::Builder::new().prefix("dbctl-mytls-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        tls_run_ok(Command::new("chown").arg("mysql:").arg(dir.path()));
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        tls_run_ok(Command::new("chown").arg("mysql:").arg(&tmp));
        tls_run_ok(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--user=mysql"])
                .current_dir(dir.path()),
        );
        let (crt, key) = files.key_for("server", dir.path(), "mysql");
        let port = tls_free_port();
        let socket = dir.path().join("mysqld.sock");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--bind-address={bind}"))
            .arg("--skip-name-resolve")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", dir.path().join("error.log").display()))
            .arg(format!("--ssl-cert={}", crt.display()))
            .arg(format!("--ssl-key={}", key.display()))
            .arg(format!("--ssl-ca={}", files.path("ca.crt").display()))
            .arg(format!("--require-secure-transport={}", if require_secure_transport { "ON" } else { "OFF" }))
            .arg("--user=mysql")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd");
        let s = MariaServer { dir, port, child };
        let t = std::time::Instant::now();
        while s.root_sql("SELECT 1").is_err() {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "mariadbd did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        s.root_sql(&format!(
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER admin@'%' IDENTIFIED BY '{MY_ADMIN_PASSWORD}'; GRANT ALL ON *.* TO admin@'%' WITH GRANT OPTION"
        ))
        .unwrap();
        s
    }

    /// SQL as root over the local socket (which counts as secure transport).
    pub fn root_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-N", "-B", "-u", "root"])
            .arg(format!("--socket={}", self.dir.path().join("mysqld.sock").display()))
            .args(["-e", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(text(&out.stdout).trim().to_string())
        } else {
            Err(text(&out.stderr))
        }
    }

    pub fn url(&self, query: &str) -> String {
        self.url_at("127.0.0.1", query)
    }

    pub fn url_at(&self, host: &str, query: &str) -> String {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("mysql://admin:{MY_ADMIN_PASSWORD}@{host}:{}/{q}", self.port)
    }
}

impl Drop for MariaServer {
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

// ---------------------------------------------------------------------------
// Team state: a shared postgres state backend and checkouts that use it.
// ---------------------------------------------------------------------------

/// A throwaway PostgreSQL server for team-state tests, reachable over TCP on
/// 127.0.0.1 with a password (no TLS), holding an empty database
/// `dbctl_state` for the state. The same server is the managed server of the
/// configurations (its url is external, so every checkout reaches it).
pub fn team_server() -> PgServer {
    let s = PgServer::start(PgTls { cert: None, hba: "host all all 127.0.0.1/32 scram-sha-256", listen: "127.0.0.1" });
    s.sql("postgres", "CREATE DATABASE dbctl_state");
    s
}

/// The state url and the managed server's url of a [`team_server`], as the
/// environment variables the team configurations read.
pub fn team_env(s: &PgServer) -> Vec<(String, String)> {
    vec![
        ("DBCTL_STATE_URL".into(), format!("postgres://postgres:{PG_ADMIN_PASSWORD}@127.0.0.1:{}/dbctl_state", s.port)),
        ("TEAM_SERVER_URL".into(), s.url("127.0.0.1", "")),
    ]
}

impl Project {
    /// Run dbctl with the team environment; returns stdout + stderr and the exit code.
    pub fn team(&self, s: &PgServer, args: &[&str]) -> (i32, String) {
        let env = team_env(s);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = self.dbctl_env(args, &env);
        (out.status.code().unwrap_or(-1), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    }

    /// [`Project::team`], requiring exit code `rc`.
    pub fn team_ok(&self, s: &PgServer, args: &[&str], rc: i32) -> String {
        let (code, all) = self.team(s, args);
        assert_eq!(code, rc, "dbctl {args:?} should exit {rc}:\n{all}");
        all
    }

    /// A dbctl command with the team environment, not yet started.
    pub fn team_command(&self, s: &PgServer, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
        c.arg("--no-color").arg("-C").arg(self.path()).args(args).env_remove("NO_COLOR");
        for (k, v) in team_env(s) {
            c.env(k, v);
        }
        c
    }
}
