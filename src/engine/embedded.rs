//! Embedded PostgreSQL servers: `server { embedded = true }`.
//!
//! Layout under `.dbctl/servers/NAME/`: `port` (chosen once, then kept),
//! `password` (the admin's, generated at init, mode 0600), and `data/` (the
//! cluster) with `server.log` beside it. The server listens on 127.0.0.1 only
//! and every role, the admin included, logs in with its password
//! (SCRAM-SHA-256); there is no Unix socket (socket paths have a 107-byte
//! limit that deep project directories exceed).
//!
//! initdb and postgres refuse to run as root, so when dbctl runs as root they
//! run as the `postgres` system user. That user must reach the data
//! directory: when it cannot search the project directory (a checkout under
//! /root, a `mktemp -d`), the server's files live in
//! `/var/lib/dbctl/<project>-<hash>/NAME/`, owned by that user, mode 0700, and
//! `.dbctl/servers/NAME/data` is a symbolic link to its `data/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub name: String,
    pub root: PathBuf,
    pub port: u16,
    pub engine: crate::model::EngineKind,
    bindir: PathBuf,
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where the PostgreSQL server binaries are: `initdb` on PATH, `pg_config
/// --bindir`, or the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Result<PathBuf, EngineError> {
    if let Ok(dir) = std::env::var("DBCTL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() { Ok(dir) } else { Err(missing()) };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Follow Debian's symlinks so pg_ctl and postgres come from the same version.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                return Ok(real.parent().unwrap_or(&dir).to_path_buf());
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(missing)
}

fn missing() -> EngineError {
    EngineError::Setup(
        "no PostgreSQL server binaries found (looked for initdb on PATH, pg_config --bindir and \
         /usr/lib/postgresql/*/bin). Install them: `apt-get install postgresql` on Debian/Ubuntu, \
         `brew install postgresql` on macOS; or set DBCTL_PG_BINDIR to the directory that holds initdb."
            .into(),
    )
}

fn free_port() -> Result<u16, EngineError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| EngineError::Setup(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| EngineError::Setup(e.to_string()))?.port())
}

/// Where servers keep their files when dbctl runs as root and the server's
/// system user cannot reach the project directory.
pub const SHARED_ROOT: &str = "/var/lib/dbctl";

/// pg_hba.conf of an embedded PostgreSQL.
const HBA: &str = "# Written by dbctl for an embedded server: loopback only, passwords only.\n\
                   local all all scram-sha-256\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";

/// How long a server that runs may take to accept connections (crash
/// recovery after a kill included).
const READY_TIMEOUT_SECS: u64 = 120;

/// The line dbctl adds before its settings in postgresql.conf.
const CONF_MARK: &str = "# Added by dbctl for the embedded server";

/// SCRAM iterations of the admin's verifier. PostgreSQL's default, 4096, is
/// there to slow down guessing a person's password from a stolen verifier;
/// the admin's password is 32 random letters and digits (190 bits), which no
/// guessing reaches, while 4096 rounds cost every connection dbctl opens
/// tens of milliseconds of CPU in a debug build.
const ADMIN_SCRAM_ITERATIONS: u32 = 64;

/// The admin's password as a SCRAM-SHA-256 verifier: PostgreSQL stores a
/// password given in this form as it is, so the clear value never reaches
/// the server.
fn admin_verifier(password: &str) -> String {
    use rand::TryRngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut salt).expect("the OS's random source");
    scram_verifier(password, &salt, ADMIN_SCRAM_ITERATIONS)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802 / 7677).
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use sha2::{Digest, Sha256};
    // Hi(): PBKDF2-HMAC-SHA-256 with one block.
    let mut u = hmac_sha256(password.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac_sha256(password.as_bytes(), &[&u]);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let client_key = hmac_sha256(&salted, &[b"Client Key"]);
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, &[b"Server Key"]);
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", base64(salt), base64(&stored_key), base64(&server_key))
}

/// A new admin password: 32 letters and digits from the OS's CSPRNG.
fn new_password() -> String {
    crate::model::generate(&crate::model::Generate { length: 32, special: false }).expose().to_string()
}

impl Embedded {
    /// The embedded server `name` under `dbctl_dir` (`.dbctl`). The port is
    /// the configured one, or the one chosen before, or a free one (then kept).
    pub fn new(dbctl_dir: &Path, name: &str, port: Option<u16>) -> Result<Embedded, EngineError> {
        Embedded::for_engine(dbctl_dir, name, port, crate::model::EngineKind::Postgres)
    }

    /// An embedded server of either engine: PostgreSQL (initdb, pg_ctl) or
    /// MariaDB (mariadb-install-db, mariadbd) for `engine = "mysql"`.
    pub fn for_engine(
        dbctl_dir: &Path,
        name: &str,
        port: Option<u16>,
        engine: crate::model::EngineKind,
    ) -> Result<Embedded, EngineError> {
        let root = dbctl_dir.join("servers").join(name);
        // Absolute, so servers never depend on the directory they were started from.
        std::fs::create_dir_all(&root).map_err(|e| io("create", &root, e))?;
        let root = root.canonicalize().map_err(|e| io("resolve", &root, e))?;
        let port_file = root.join("port");
        let port = match port {
            Some(p) => p,
            None => match std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok()) {
                Some(p) => p,
                None => {
                    let p = free_port()?;
                    std::fs::create_dir_all(&root).map_err(|e| io("create", &root, e))?;
                    std::fs::write(&port_file, p.to_string()).map_err(|e| io("write", &port_file, e))?;
                    p
                }
            },
        };
        let bindir = match engine {
            crate::model::EngineKind::Postgres => find_bindir()?,
            crate::model::EngineKind::Mysql => super::mysql::embedded::find_bindir()?,
            crate::model::EngineKind::Redis => {
                super::redis::embedded::server_binary()?.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        };
        let e = Embedded { name: name.to_string(), root, port, engine, bindir };
        // Known before the server exists, so the admin URL of a plan made now carries it.
        let had_password = e.password().is_some();
        e.ensure_password()?;
        // A running MariaDB made by an earlier dbctl: its root gets the password now
        // (a stopped one gets it when it starts; PostgreSQL's admin was trusted, see `start`).
        if !had_password && engine == crate::model::EngineKind::Mysql && e.is_initialised() && e.is_running() {
            super::mysql::embedded::require_password(&e)?;
        }
        Ok(e)
    }

    /// A server found under `.dbctl/servers/NAME` whatever the configuration
    /// says now: its engine is read from its data directory. None when it
    /// was never initialised.
    pub fn existing(dbctl_dir: &Path, name: &str) -> Option<Embedded> {
        let data = dbctl_dir.join("servers").join(name).join("data");
        let engine = if data.join("PG_VERSION").is_file() {
            crate::model::EngineKind::Postgres
        } else if data.join("mysql").is_dir() {
            crate::model::EngineKind::Mysql
        } else if data.parent().is_some_and(|root| root.join("users.acl").is_file()) {
            crate::model::EngineKind::Redis
        } else {
            return None;
        };
        Embedded::for_engine(dbctl_dir, name, None, engine).ok()
    }

    /// The directory that holds the data directory, the log and the
    /// server's other files: `.dbctl/servers/NAME`, or the directory
    /// under /var/lib/dbctl that `data` links to.
    pub fn home(&self) -> PathBuf {
        match std::fs::read_link(self.root.join("data")) {
            Ok(target) => target.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone()),
            Err(_) => self.root.clone(),
        }
    }

    /// True when the server's files live outside the project directory.
    pub fn is_shared(&self) -> bool {
        self.root.join("data").is_symlink()
    }

    pub fn data_dir(&self) -> PathBuf {
        match std::fs::read_link(self.root.join("data")) {
            Ok(target) => target,
            Err(_) => self.root.join("data"),
        }
    }

    pub fn log_file(&self) -> PathBuf {
        self.home().join("server.log")
    }

    /// The file that holds the admin's password (mode 0600).
    pub fn password_file(&self) -> PathBuf {
        self.root.join("password")
    }

    /// The admin's password, once the server was initialised with one.
    pub fn password(&self) -> Option<String> {
        std::fs::read_to_string(self.password_file()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The admin password, generated and stored (0600) when there is none yet.
    pub(crate) fn ensure_password(&self) -> Result<String, EngineError> {
        if let Some(p) = self.password() {
            return Ok(p);
        }
        let p = new_password();
        let path = self.password_file();
        let tmp = self.root.join("password.tmp");
        write_private(&tmp, &p, None)?;
        std::fs::rename(&tmp, &path).map_err(|e| io("write", &path, e))?;
        Ok(p)
    }

    /// The admin connection URL; it carries the admin's password, so it is
    /// never printed.
    pub fn url(&self) -> String {
        let auth = |user: &str| match self.password() {
            Some(p) => format!("{user}:{p}"),
            None => user.to_string(),
        };
        match self.engine {
            crate::model::EngineKind::Postgres => {
                format!("postgres://{}@127.0.0.1:{}/postgres", auth("postgres"), self.port)
            }
            crate::model::EngineKind::Mysql => format!("mysql://{}@127.0.0.1:{}/", auth("root"), self.port),
            crate::model::EngineKind::Redis => self.redis().url(),
        }
    }

    pub fn is_initialised(&self) -> bool {
        match self.engine {
            crate::model::EngineKind::Postgres => self.data_dir().join("PG_VERSION").is_file(),
            crate::model::EngineKind::Mysql => self.data_dir().join("mysql").is_dir(),
            crate::model::EngineKind::Redis => self.redis().is_initialised(),
        }
    }

    /// The Redis server in the same directory (for `engine = "redis"`).
    fn redis(&self) -> super::redis::embedded::RedisEmbedded {
        super::redis::embedded::RedisEmbedded { name: self.name.clone(), root: self.root.clone(), port: self.port }
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The system user the server runs as when dbctl runs as root.
    pub(crate) fn os_user(&self) -> &'static str {
        match self.engine {
            crate::model::EngineKind::Postgres => "postgres",
            crate::model::EngineKind::Mysql => "mysql",
            // redis-server runs as the caller, root included.
            crate::model::EngineKind::Redis => "root",
        }
    }

    fn package(&self) -> &'static str {
        match self.engine {
            crate::model::EngineKind::Postgres => "postgresql",
            crate::model::EngineKind::Mysql => "mariadb-server",
            crate::model::EngineKind::Redis => "redis-server",
        }
    }

    /// As root: a directory the server's system user owns (mode 0700) to
    /// hold the data directory. `.dbctl/servers/NAME` itself when that user
    /// can reach it; otherwise one under /var/lib/dbctl, linked from
    /// `.dbctl/servers/NAME/data`. Not root: `.dbctl/servers/NAME`.
    pub(crate) fn prepare_home(&self) -> Result<PathBuf, EngineError> {
        if !is_root() {
            return Ok(self.root.clone());
        }
        let user = self.os_user();
        let owner = nix_user(user).ok_or_else(|| {
            EngineError::Setup(format!(
                "dbctl runs as root, so the embedded server runs as the `{user}` system user, which does not \
                 exist here: install the server package (Debian/Ubuntu: `apt-get install {}`), or run dbctl \
                 as a normal user",
                self.package()
            ))
        })?;
        if self.is_shared() {
            let home = self.home();
            make_private_dir(&home, owner)?;
            return Ok(home);
        }
        let reachable = Command::new("runuser")
            .args(["-u", user, "--", "test", "-x"])
            .arg(self.root.parent().unwrap_or(&self.root))
            .current_dir("/")
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            chown(&self.root, owner)?;
            return Ok(self.root.clone());
        }
        let home = self.shared_home();
        let project = home.parent().expect("shared home has a parent");
        for dir in [Path::new(SHARED_ROOT), project] {
            std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
            set_mode(dir, 0o755)?;
        }
        // Whose directory this is, for a person who finds it later.
        let note = project.join("project");
        std::fs::write(
            &note,
            format!("{}\n", self.root.parent().and_then(Path::parent).unwrap_or(&self.root).display()),
        )
        .map_err(|e| io("write", &note, e))?;
        make_private_dir(&home, owner)?;
        let link = self.root.join("data");
        if link.exists() || link.is_symlink() {
            std::fs::remove_dir(&link).map_err(|e| io("replace", &link, e))?;
        }
        std::os::unix::fs::symlink(home.join("data"), &link).map_err(|e| io("link", &link, e))?;
        Ok(home)
    }

    /// `/var/lib/dbctl/<project directory name>-<hash of its path>/NAME`.
    fn shared_home(&self) -> PathBuf {
        use sha2::Digest;
        // root = <project>/.dbctl/servers/NAME
        let project = self.root.ancestors().nth(3).unwrap_or(&self.root);
        // One directory per project (its `.dbctl`), one below it per server.
        let dbctl = self.root.ancestors().nth(2).unwrap_or(&self.root);
        let digest = hex::encode(sha2::Sha256::digest(dbctl.as_os_str().as_encoded_bytes()));
        let base: String = project
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                    .take(40)
                    .collect()
            })
            .unwrap_or_default();
        PathBuf::from(SHARED_ROOT).join(format!("{base}-{}", &digest[..12])).join(&self.name)
    }

    /// Stop the server if it runs, then delete its files: the data directory
    /// (wherever it lives), the password and the port.
    pub fn purge(&self) -> Result<(), EngineError> {
        self.stop()?;
        if self.is_shared() {
            let home = self.home();
            if home.exists() {
                std::fs::remove_dir_all(&home).map_err(|e| io("remove", &home, e))?;
            }
            // The project's directory under /var/lib/dbctl, once its last server is gone.
            if let Some(project) = home.parent() {
                let _ = std::fs::remove_file(project.join("project"));
                let _ = std::fs::remove_dir(project);
            }
        }
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root).map_err(|e| io("remove", &self.root, e))?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bindir.join(program);
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(self.os_user()).arg("--").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        // The server's user may not be able to enter the caller's directory.
        c.current_dir(if is_root() { self.home() } else { self.root.clone() });
        c
    }

    fn run(&self, mut c: Command, what: &str) -> Result<String, EngineError> {
        let out = c.output().map_err(|e| EngineError::Setup(format!("{what}: cannot run: {e}")))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(EngineError::Setup(format!("{what} failed for embedded server {}:\n{}", self.name, text.trim())))
        }
    }

    /// Create the cluster (once), with a generated admin password.
    ///
    /// initdb writes into `data.init` beside the data directory, which is
    /// configured and then renamed to `data`: a data directory exists only
    /// once it is complete. A `data.init` left by a killed dbctl is not a
    /// server (no server ever ran on it, so it holds no data) and is made
    /// again; an initdb that a killed dbctl left running is waited for
    /// first (it holds `init.lock`).
    pub fn init(&self) -> Result<(), EngineError> {
        if self.is_initialised() {
            return Ok(());
        }
        if self.engine == crate::model::EngineKind::Redis {
            // Its first start writes the ACL file (the admin's hash, `default` off).
            return Ok(());
        }
        std::fs::create_dir_all(&self.root).map_err(|e| io("create", &self.root, e))?;
        let home = self.prepare_home()?;
        let lock = self.init_lock(&home)?;
        if self.is_initialised() {
            return Ok(());
        }
        let staging = home.join("data.init");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io("remove the half-made", &staging, e))?;
        }
        // A `data` that is not a cluster (no PG_VERSION / no `mysql`): an older dbctl's
        // initialisation killed early. No server ever ran on it.
        let data = home.join("data");
        if data.is_dir() {
            std::fs::remove_dir_all(&data).map_err(|e| io("remove the half-made", &data, e))?;
        }
        if self.engine == crate::model::EngineKind::Mysql {
            super::mysql::embedded::init(self, &home, &staging, &lock)?;
        } else {
            self.initdb(&home, &staging, &lock)?;
        }
        std::fs::rename(&staging, &data).map_err(|e| io("rename", &staging, e))?;
        Ok(())
    }

    /// Wait for (then hold) `init.lock` in the server's home: a killed
    /// dbctl's initdb or mariadb-install-db holds it until it ends.
    fn init_lock(&self, home: &Path) -> Result<std::fs::File, EngineError> {
        use std::os::fd::AsRawFd;
        let path = home.join("init.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let since = std::time::Instant::now();
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(f);
            }
            if since.elapsed() > std::time::Duration::from_secs(300) {
                return Err(EngineError::Setup(format!(
                    "the embedded server {} is still being initialised by another process after 5 minutes \
                     (it holds {}); wait for it to end, or stop it, and run dbctl again",
                    self.name,
                    path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn initdb(&self, home: &Path, staging: &Path, lock: &std::fs::File) -> Result<(), EngineError> {
        let password = self.ensure_password()?;
        // initdb reads the password from a file: one only the server's user can read, removed at once.
        let pwfile = home.join("initdb.pw");
        write_private(&pwfile, &admin_verifier(&password), is_root().then(|| nix_user(self.os_user())).flatten())?;
        let mut c = self.command("initdb");
        c.arg("-D").arg(staging).arg(format!("--pwfile={}", pwfile.display())).args([
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        inherit_lock(&mut c, lock);
        let done = self.run(c, "initdb");
        let _ = std::fs::remove_file(&pwfile);
        done?;
        self.configure(staging)
    }

    /// dbctl's settings in a PostgreSQL data directory: loopback only on
    /// the server's port, no Unix socket, passwords for every login.
    fn configure(&self, data: &Path) -> Result<(), EngineError> {
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| io("read", &conf, e))?;
        text.push_str(&format!(
            "\n{CONF_MARK} `{}`.\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = ''\nmax_connections = 200\npassword_encryption = 'scram-sha-256'\n",
            self.name, self.port
        ));
        std::fs::write(&conf, text).map_err(|e| io("write", &conf, e))?;
        // Every role, the admin included, logs in with its password: other
        // users of this machine reach the loopback port too.
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, HBA).map_err(|e| io("write", &hba, e))?;
        Ok(())
    }

    /// A server made by an earlier dbctl let its admin in without a
    /// password (`trust`): before it starts, give the admin the stored
    /// password (single-user mode: no connection is opened) and require
    /// passwords for every login.
    fn require_passwords(&self) -> Result<(), EngineError> {
        let hba = self.data_dir().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).map_err(|e| io("read", &hba, e))?;
        if !text.lines().any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().any(|w| w == "trust")) {
            return Ok(());
        }
        let password = self.ensure_password()?;
        let mut c = self.command("postgres");
        c.arg("--single").arg("-D").arg(self.data_dir()).arg("postgres");
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().map_err(|e| EngineError::Setup(format!("postgres --single: cannot run: {e}")))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let sql = format!(
                "ALTER ROLE postgres PASSWORD {};\n",
                crate::engine::sql::pg_literal(&admin_verifier(&password))
            );
            stdin
                .write_all(sql.as_bytes())
                .map_err(|e| EngineError::Setup(format!("postgres --single: cannot write: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| EngineError::Setup(format!("postgres --single: {e}")))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || log.contains("ERROR:") {
            return Err(EngineError::Setup(format!(
                "cannot set the admin password of the embedded server {}:\n{}",
                self.name,
                log.lines().filter(|l| l.contains("ERROR") || l.contains("FATAL")).collect::<Vec<_>>().join("\n")
            )));
        }
        std::fs::write(&hba, HBA).map_err(|e| io("write", &hba, e))?;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        if !self.is_initialised() {
            return false;
        }
        if self.engine == crate::model::EngineKind::Mysql {
            return super::mysql::embedded::is_running(self);
        }
        if self.engine == crate::model::EngineKind::Redis {
            return self.redis().is_running();
        }
        // What `pg_ctl status` decides, without starting `runuser` and
        // `pg_ctl` (50 ms each, twice per plan): the pid in postmaster.pid is
        // alive, and is a postgres process (not a stale file's pid reused).
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .filter(|p| *p > 0);
        let Some(pid) = pid else { return false };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive
            && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end().starts_with("postgres"))
    }

    /// Initialise if needed, then start if not running. Idempotent.
    pub fn start(&self) -> Result<(), EngineError> {
        if self.engine == crate::model::EngineKind::Redis {
            return self.redis().start();
        }
        self.init()?;
        if self.is_running() {
            // Perhaps started by a dbctl killed before the server was ready.
            return self.wait_ready();
        }
        if self.engine == crate::model::EngineKind::Mysql {
            return super::mysql::embedded::start(self);
        }
        // A cluster an older dbctl made and was killed before configuring.
        let conf = self.data_dir().join("postgresql.conf");
        if std::fs::read_to_string(&conf).is_ok_and(|t| !t.contains(CONF_MARK)) {
            self.configure(&self.data_dir())?;
        }
        self.require_passwords()?;
        // The port may have been configured differently since initdb.
        let mut c = self.command("pg_ctl");
        c.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port));
        let started = self.run(c, "pg_ctl start");
        if started.is_err() && self.is_running() {
            // A postmaster that a killed dbctl's `pg_ctl` had launched took
            // the data directory between the check above and this start (it
            // had not written postmaster.pid yet): it is the server, and this
            // start failed only on its lock file.
            return self.wait_ready();
        }
        started.map_err(|e| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            EngineError::Setup(format!(
                "{e}\nlast lines of {}:\n{}",
                self.log_file().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        })?;
        self.wait_ready()
    }

    /// Wait until a running server accepts connections: one that a killed
    /// dbctl started may still be recovering or starting up.
    pub fn wait_ready(&self) -> Result<(), EngineError> {
        if self.engine != crate::model::EngineKind::Postgres {
            // Running means it answered a ping.
            return Ok(());
        }
        let limit = std::time::Duration::from_secs(READY_TIMEOUT_SECS);
        let since = std::time::Instant::now();
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            // Line 8 of postmaster.pid is the server's status: "starting", then "ready".
            let status =
                std::fs::read_to_string(&pid_file).ok().and_then(|t| t.lines().nth(7).map(|l| l.trim().to_string()));
            let ready = status.as_deref() == Some("ready")
                && std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
                    std::time::Duration::from_secs(1),
                )
                .is_ok();
            if ready {
                return Ok(());
            }
            if since.elapsed() > limit {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(EngineError::Setup(format!(
                    "the embedded server {} is running but does not accept connections on 127.0.0.1:{} \
                     after {READY_TIMEOUT_SECS} s (status: {}); last lines of {}:\n{}",
                    self.name,
                    self.port,
                    status.as_deref().unwrap_or("stopped"),
                    self.log_file().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn stop(&self) -> Result<(), EngineError> {
        if !self.is_running() {
            return Ok(());
        }
        if self.engine == crate::model::EngineKind::Mysql {
            return super::mysql::embedded::stop(self);
        }
        if self.engine == crate::model::EngineKind::Redis {
            return self.redis().stop();
        }
        let mut c = self.command("pg_ctl");
        c.arg("stop").arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "-t", "60"]);
        self.run(c, "pg_ctl stop").map(|_| ())
    }
}

/// uid and gid of a system user.
pub(crate) fn nix_user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam takes a NUL-terminated string; the result is read at once, before any other call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to libc's static passwd entry.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(p: &Path, (uid, gid): (u32, u32)) -> Result<(), EngineError> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| io("change the owner of", p, e))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", p, e))
}

/// A directory owned by `owner`, mode 0700.
pub(crate) fn make_private_dir(p: &Path, owner: (u32, u32)) -> Result<(), EngineError> {
    std::fs::create_dir_all(p).map_err(|e| io("create", p, e))?;
    chown(p, owner)?;
    set_mode(p, 0o700)
}

/// A new file with mode 0600 (owned by `owner` when given).
pub(crate) fn write_private(p: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<(), EngineError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(p);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).map_err(|e| io("write", p, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", p, e))?;
    if let Some(o) = owner {
        chown(p, o)?;
    }
    Ok(())
}

/// Let `c`'s process inherit `lock` (Rust opens files close-on-exec), so
/// the lock is held for as long as that process runs, even when dbctl dies.
pub(crate) fn inherit_lock(c: &mut Command, lock: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = lock.as_raw_fd();
    // SAFETY: fcntl is async-signal-safe; it changes only the child's descriptor table.
    unsafe {
        c.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) fn io(what: &str, p: &Path, e: std::io::Error) -> EngineError {
    EngineError::Setup(format!("cannot {what} {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_matches_an_independent_implementation() {
        // Python: hashlib.pbkdf2_hmac('sha256', b'pencil', b'0123456789abcdef', 64), then
        // StoredKey = sha256(hmac(salted, 'Client Key')), ServerKey = hmac(salted, 'Server Key').
        assert_eq!(
            scram_verifier("pencil", b"0123456789abcdef", 64),
            "SCRAM-SHA-256$64:MDEyMzQ1Njc4OWFiY2RlZg==$Q0CMOH8j8ff+wmLJX7NbTDeLXAw3iG5iGPzo+FN+rus=:\
             dJQ84Mh95j1pqi/ldpmvX8xRO2DHg47sQpJIFDX99Sg="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
