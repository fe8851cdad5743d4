//! Embedded Redis for `server { engine = "redis"  embedded = true }`.
//!
//! Layout under `.dbctl/servers/NAME/` (mode 0700): `port` (chosen once,
//! then kept), `password` (the admin `dbctl`'s, generated, mode 0600),
//! `users.acl` (the ACL: `dbctl` with every permission, `default` off, then
//! the users dbctl makes; only SHA-256 hashes), `data/` (the RDB and the
//! append-only files), `redis.pid` and `server.log`. redis-server listens on
//! 127.0.0.1 only, in its own process group, so it outlives dbctl. It runs
//! as whoever runs dbctl, root included (redis-server does not refuse it).
//!
//! Persistence: `--save ''` turns periodic RDB snapshots off (they fork the
//! server at unpredictable moments); instead the append-only file logs every
//! write (fsync each second: a killed server loses at most that), and `stop`
//! sends `SHUTDOWN SAVE`, which writes a complete RDB as well.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::embedded::{io, write_private};
use crate::engine::EngineError;

pub const ADMIN: &str = "dbctl";
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RedisEmbedded {
    pub name: String,
    /// `.dbctl/servers/NAME`, absolute.
    pub root: PathBuf,
    pub port: u16,
}

/// The redis-server binary: DBCTL_REDIS_SERVER, else the usual places.
pub fn server_binary() -> Result<PathBuf, EngineError> {
    tool("redis-server", "DBCTL_REDIS_SERVER")
}

pub fn cli_binary() -> Result<PathBuf, EngineError> {
    tool("redis-cli", "DBCTL_REDIS_CLI")
}

fn tool(name: &str, var: &str) -> Result<PathBuf, EngineError> {
    let mut candidates: Vec<PathBuf> = std::env::var_os(var).map(PathBuf::from).into_iter().collect();
    candidates.extend(["/usr/bin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(name)));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        EngineError::Setup(format!(
            "{name} not found: install Redis (`apt-get install redis-server` on Debian/Ubuntu), or set {var}"
        ))
    })
}

/// A port nobody listens on now (the kernel's choice).
pub fn free_port() -> Result<u16, EngineError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| EngineError::Setup(format!("cannot find a free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| EngineError::Setup(format!("cannot find a free port: {e}")))
}

/// One command over RESP, the reply's first line (`+PONG`, `-ERR …`, `:3`),
/// with bulk and array replies read whole and returned as their text lines.
pub fn call(stream: &mut (impl Read + Write), argv: &[&str]) -> std::io::Result<Vec<String>> {
    let mut msg = format!("*{}\r\n", argv.len()).into_bytes();
    for a in argv {
        msg.extend(format!("${}\r\n", a.len()).as_bytes());
        msg.extend(a.as_bytes());
        msg.extend(b"\r\n");
    }
    stream.write_all(&msg)?;
    let mut r = BufReader::new(stream);
    let mut out = Vec::new();
    read_reply(&mut r, &mut out)?;
    Ok(out)
}

fn read_reply(r: &mut impl BufRead, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    let n: i64 = line.get(1..).and_then(|n| n.parse().ok()).unwrap_or(-1);
    match line.as_bytes().first() {
        Some(b'$') if n >= 0 => {
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
        Some(b'*') => {
            for _ in 0..n.max(0) {
                read_reply(r, out)?;
            }
        }
        _ => out.push(line),
    }
    Ok(())
}

impl RedisEmbedded {
    /// The embedded server `name` under `dbctl_dir` (`.dbctl`). The port is
    /// the configured one, or the one chosen before, or a free one (then kept).
    pub fn new(dbctl_dir: &Path, name: &str, port: Option<u16>) -> Result<RedisEmbedded, EngineError> {
        Self::at(&dbctl_dir.join("servers").join(name), name, port)
    }

    /// The server whose files are in `root`.
    pub fn at(root: &Path, name: &str, port: Option<u16>) -> Result<RedisEmbedded, EngineError> {
        std::fs::create_dir_all(root).map_err(|e| io("create", root, e))?;
        let root = root.canonicalize().map_err(|e| io("resolve", root, e))?;
        let port_file = root.join("port");
        let port = match port.or_else(|| std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok())) {
            Some(p) => p,
            None => free_port()?,
        };
        std::fs::write(&port_file, port.to_string()).map_err(|e| io("write", &port_file, e))?;
        let e = RedisEmbedded { name: name.to_string(), root, port };
        e.ensure_password()?;
        Ok(e)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }
    pub fn acl_file(&self) -> PathBuf {
        self.root.join("users.acl")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("redis.pid")
    }
    pub fn password_file(&self) -> PathBuf {
        self.root.join("password")
    }

    pub fn password(&self) -> Option<String> {
        std::fs::read_to_string(self.password_file()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn ensure_password(&self) -> Result<String, EngineError> {
        if let Some(p) = self.password() {
            return Ok(p);
        }
        let p = crate::model::generate(&crate::model::Generate { length: 32, special: false }).expose().to_string();
        let tmp = self.root.join("password.tmp");
        write_private(&tmp, &p, None)?;
        std::fs::rename(&tmp, self.password_file()).map_err(|e| io("write", &self.password_file(), e))?;
        Ok(p)
    }

    /// The admin URL; it holds the password (letters and digits only), so it is never printed.
    pub fn url(&self) -> String {
        format!("redis://{ADMIN}:{}@127.0.0.1:{}", self.password().unwrap_or_default(), self.port)
    }

    pub fn is_initialised(&self) -> bool {
        self.acl_file().is_file()
    }

    /// The pid in the pidfile, when that process is a live redis-server.
    fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok().filter(|p| *p > 0)?;
        std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().filter(|c| c.starts_with("redis-server"))?;
        Some(pid)
    }

    /// The admin's answer to PING (AUTH first).
    fn ping(&self) -> bool {
        let Some(password) = self.password() else { return false };
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        call(&mut s, &["AUTH", ADMIN, &password]).is_ok_and(|r| r == ["+OK"])
            && call(&mut s, &["PING"]).is_ok_and(|r| r == ["+PONG"])
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some() && self.ping()
    }

    /// The first ACL: the admin with every permission (its password's hash
    /// only), the `default` user off, so nobody gets in without a password.
    fn init(&self) -> Result<(), EngineError> {
        use std::os::unix::fs::PermissionsExt;
        // The password file and the data are this user's alone.
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod", &self.root, e))?;
        std::fs::create_dir_all(self.data_dir()).map_err(|e| io("create", &self.data_dir(), e))?;
        if self.is_initialised() {
            return Ok(());
        }
        let hash = super::acl::sha256_hex(&self.ensure_password()?);
        let tmp = self.root.join("users.acl.tmp");
        write_private(
            &tmp,
            &format!("user {ADMIN} on #{hash} ~* &* +@all\nuser default off resetchannels -@all\n"),
            None,
        )?;
        std::fs::rename(&tmp, self.acl_file()).map_err(|e| io("write", &self.acl_file(), e))
    }

    /// Initialise if needed, then start if not running; returns once the admin gets PONG. Idempotent.
    pub fn start(&self) -> Result<(), EngineError> {
        self.init()?;
        if self.is_running() {
            return Ok(());
        }
        let mut c = Command::new(server_binary()?);
        c.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec", "--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(self.data_dir())
            .arg("--aclfile")
            .arg(self.acl_file())
            .arg("--pidfile")
            .arg(self.pid_file())
            .arg("--logfile")
            .arg(self.log_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(&self.root)
            .process_group(0);
        let mut child = c.spawn().map_err(|e| EngineError::Setup(format!("cannot start redis-server: {e}")))?;
        let t = Instant::now();
        while t.elapsed() < START_TIMEOUT {
            if self.ping() {
                // Reaped when it ends, so a `stop` from this process sees it gone.
                std::thread::spawn(move || child.wait());
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.failed(&format!("exited ({status})")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.failed(&format!("did not answer within {} s", START_TIMEOUT.as_secs())))
    }

    fn failed(&self, what: &str) -> EngineError {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        EngineError::Setup(format!(
            "the embedded Redis {} {what}; last lines of {}:\n{}",
            self.name,
            self.log_file().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// `SHUTDOWN SAVE` (a full RDB beside the append-only file), then wait for the process to end.
    pub fn stop(&self) -> Result<(), EngineError> {
        let Some(pid) = self.pid() else { return Ok(()) };
        let password = self.password().unwrap_or_default();
        let sent = std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            call(&mut s, &["AUTH", ADMIN, &password])?;
            // The server closes the connection once it has saved; an error reply says why it did not.
            match call(&mut s, &["SHUTDOWN", "SAVE"]) {
                Ok(r) if r.first().is_some_and(|l| l.starts_with('-')) => Err(std::io::Error::other(r.join(" "))),
                _ => Ok(()),
            }
        });
        sent.map_err(|e| EngineError::Setup(format!("cannot stop the embedded Redis {}: {e}", self.name)))?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if !alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EngineError::Setup(format!("the embedded Redis {} did not stop within 60 s", self.name)))
    }
}

/// The process exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}
