//! Embedded PostgreSQL servers: `server { embedded = true }`.
//!
//! Layout under `.dbctl/servers/NAME/`: `data/` (the cluster), `port` (chosen
//! once, then kept), `server.log`. The server listens on 127.0.0.1 only, with
//! trust authentication for the admin role only (every other role needs its
//! password), and no Unix socket (socket paths have a 107-byte
//! limit that deep project directories exceed). initdb and postgres refuse to
//! run as root, so when dbctl runs as root they run as the `postgres` system
//! user, which then owns the server directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::EngineError;

#[derive(Debug, Clone)]
pub struct Embedded {
    pub name: String,
    pub root: PathBuf,
    pub port: u16,
    pub engine: crate::model::Engine,
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
        return Ok(PathBuf::from(dir));
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
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        EngineError::Setup(
            "no PostgreSQL server binaries found (looked for initdb on PATH, pg_config --bindir and \
             /usr/lib/postgresql/*/bin). Install them: `apt-get install postgresql` on Debian/Ubuntu, \
             `brew install postgresql` on macOS; or set DBCTL_PG_BINDIR."
                .into(),
        )
    })
}

fn free_port() -> Result<u16, EngineError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| EngineError::Setup(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| EngineError::Setup(e.to_string()))?.port())
}

impl Embedded {
    /// The embedded server `name` under `dbctl_dir` (`.dbctl`). The port is
    /// the configured one, or the one chosen before, or a free one (then kept).
    pub fn new(dbctl_dir: &Path, name: &str, port: Option<u16>) -> Result<Embedded, EngineError> {
        Embedded::for_engine(dbctl_dir, name, port, crate::model::Engine::Postgres)
    }

    /// An embedded server of either engine: PostgreSQL (initdb, pg_ctl) or
    /// MariaDB (mariadb-install-db, mariadbd) for `engine = "mysql"`.
    pub fn for_engine(
        dbctl_dir: &Path,
        name: &str,
        port: Option<u16>,
        engine: crate::model::Engine,
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
            crate::model::Engine::Postgres => find_bindir()?,
            crate::model::Engine::Mysql => super::embedded_mysql::find_bindir()?,
        };
        Ok(Embedded { name: name.to_string(), root, port, engine, bindir })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The admin connection URL.
    pub fn url(&self) -> String {
        match self.engine {
            crate::model::Engine::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            crate::model::Engine::Mysql => format!("mysql://root@127.0.0.1:{}/", self.port),
        }
    }

    pub fn is_initialised(&self) -> bool {
        match self.engine {
            crate::model::Engine::Postgres => self.data_dir().join("PG_VERSION").is_file(),
            crate::model::Engine::Mysql => self.data_dir().join("mysql").is_dir(),
        }
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bindir.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(bin);
            c
        } else {
            Command::new(bin)
        }
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

    /// Create the cluster (once).
    pub fn init(&self) -> Result<(), EngineError> {
        if self.is_initialised() {
            return Ok(());
        }
        if self.engine == crate::model::Engine::Mysql {
            return super::embedded_mysql::init(self);
        }
        std::fs::create_dir_all(&self.root).map_err(|e| io("create", &self.root, e))?;
        if is_root() {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&self.root)
                .status()
                .map_err(|e| EngineError::Setup(format!("chown: {e}")))?;
            if !ok.success() {
                return Err(EngineError::Setup(
                    "dbctl runs as root, so the embedded server runs as the `postgres` system user, \
                     which does not exist here: install the PostgreSQL server package or create that user"
                        .into(),
                ));
            }
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-w"])
                .arg(&self.root)
                .status()
                .is_ok_and(|s| s.success());
            if !reachable {
                return Err(EngineError::Setup(format!(
                    "the `postgres` system user cannot reach {} (a parent directory is not searchable by it); \
                     put the configuration where that user can reach it",
                    self.root.display()
                )));
            }
        }
        let mut c = self.command("initdb");
        c.arg("-D").arg(self.data_dir()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        self.run(c, "initdb")?;
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| io("read", &conf, e))?;
        text.push_str(&format!(
            "\n# Added by dbctl for the embedded server `{}`.\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = ''\nmax_connections = 200\n",
            self.name, self.port
        ));
        std::fs::write(&conf, text).map_err(|e| io("write", &conf, e))?;
        // The admin connects without a password from this machine; every other
        // role logs in with its password, as it would on a real server.
        let hba = self.data_dir().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# Written by dbctl for an embedded server: loopback only.\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(|e| io("write", &hba, e))?;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        if !self.is_initialised() {
            return false;
        }
        if self.engine == crate::model::Engine::Mysql {
            return super::embedded_mysql::is_running(self);
        }
        let mut c = self.command("pg_ctl");
        c.arg("status").arg("-D").arg(self.data_dir());
        c.output().is_ok_and(|o| o.status.success())
    }

    /// Initialise if needed, then start if not running. Idempotent.
    pub fn start(&self) -> Result<(), EngineError> {
        self.init()?;
        if self.is_running() {
            return Ok(());
        }
        if self.engine == crate::model::Engine::Mysql {
            return super::embedded_mysql::start(self);
        }
        // The port may have been configured differently since initdb.
        let mut c = self.command("pg_ctl");
        c.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port));
        self.run(c, "pg_ctl start").map_err(|e| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            EngineError::Setup(format!(
                "{e}\nlast lines of {}:\n{}",
                self.log_file().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        })?;
        Ok(())
    }

    pub fn stop(&self) -> Result<(), EngineError> {
        if !self.is_running() {
            return Ok(());
        }
        if self.engine == crate::model::Engine::Mysql {
            return super::embedded_mysql::stop(self);
        }
        let mut c = self.command("pg_ctl");
        c.arg("stop").arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "-t", "60"]);
        self.run(c, "pg_ctl stop").map(|_| ())
    }
}

pub(crate) fn io(what: &str, p: &Path, e: std::io::Error) -> EngineError {
    EngineError::Setup(format!("cannot {what} {}: {e}", p.display()))
}
