//! MySQL / MariaDB backups: `mariadb-dump` (or `mysqldump`)
//! `--single-transaction`, one row per INSERT line, streamed through the
//! same compression and upload as PostgreSQL dumps.
//!
//! Row counts and checksums come from the dump stream: for each table, the
//! number of INSERT lines and the wrapping sum of the xxh3 hashes of their
//! VALUES. `verify` restores into a scratch database, dumps that with the
//! same options and compares the same figures.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::stream::{self, Inspect};
use super::{Job, Manifest, TableStat};
use crate::engine::endpoint::Endpoint;
use crate::engine::sql::mysql_ident;

/// The dump tool: MariaDB's name, else MySQL's.
pub fn dump_tool() -> Result<std::path::PathBuf, String> {
    tool(&["mariadb-dump", "mysqldump"])
}

fn client_tool() -> Result<std::path::PathBuf, String> {
    tool(&["mariadb", "mysql"])
}

fn tool(names: &[&str]) -> Result<std::path::PathBuf, String> {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
            let p = std::path::Path::new(dir).join(n);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!("{} not found: install the MariaDB or MySQL client (`apt-get install mariadb-client`)", names[0]))
}

/// Client arguments and environment for an endpoint; the password goes in
/// MYSQL_PWD, never on a command line.
fn client(program: &std::path::Path, ep: &Endpoint) -> std::process::Command {
    use std::str::FromStr;
    // Where dbctl dials (a tunnel's end when `connect { }` is set).
    let (host, port) = crate::engine::endpoint::dial_host_port(ep);
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(&ep.url).ok();
    let user = opts.as_ref().map(|o| o.get_username().to_string()).unwrap_or_else(|| "root".into());
    let mut c = std::process::Command::new(program);
    c.arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--user={user}"))
        .arg("--default-character-set=utf8mb4")
        .env_remove("MYSQL_PWD");
    // TLS as the url asks (ssl-mode, ssl-ca), in the client's own flags.
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    let mariadb = real.file_name().is_some_and(|n| n.to_string_lossy().starts_with("mariadb"));
    c.args(crate::engine::tls::mysql_args(&ep.url, mariadb));
    // The URL's password, if any (percent-decoded).
    if let Some(pw) = ep
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(auth, _)| auth.split_once(':').map(|(_, p)| super::percent_decode(p)))
    {
        c.env("MYSQL_PWD", pw);
    }
    c
}

fn dump_command(ep: &Endpoint, database: &str) -> Result<std::process::Command, String> {
    let mut c = client(&dump_tool()?, ep);
    c.args([
        "--single-transaction",
        "--skip-extended-insert",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--skip-dump-date",
        "--skip-comments",
        "--tz-utc",
    ])
    .arg("--")
    .arg(database)
    .stdin(Stdio::null());
    Ok(c)
}

/// A backtick-quoted identifier at the start of `s`: (name, rest).
fn ident(s: &[u8]) -> Option<(String, &[u8])> {
    if s.first() != Some(&b'`') {
        return None;
    }
    let mut name = Vec::new();
    let mut i = 1;
    while i < s.len() {
        if s[i] == b'`' {
            if s.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            return Some((String::from_utf8_lossy(&name).into_owned(), &s[i + 1..]));
        }
        name.push(s[i]);
        i += 1;
    }
    None
}

/// Counts and hashes the INSERT lines of a dump, per table.
#[derive(Default)]
pub struct DumpScanner {
    /// The start of a line that continues in the next piece.
    partial: Vec<u8>,
    tables: BTreeMap<String, (i64, u64)>,
}

impl DumpScanner {
    fn line(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"CREATE TABLE ") {
            if let Some((t, _)) = ident(rest) {
                self.tables.entry(t).or_default();
            }
        } else if let Some(rest) = line.strip_prefix(b"INSERT INTO ") {
            if let Some((t, values)) = ident(rest) {
                let e = self.tables.entry(t).or_default();
                e.0 += 1;
                e.1 = e.1.wrapping_add(xxh3_64(values));
            }
        }
    }

    pub fn finish(self) -> BTreeMap<String, TableStat> {
        self.tables
            .into_iter()
            .map(|(t, (rows, sum))| (mysql_ident(&t), TableStat { rows, checksum: format!("insert:{sum:016x}") }))
            .collect()
    }
}

impl Inspect for DumpScanner {
    fn feed(&mut self, data: &[u8]) {
        let mut partial = std::mem::take(&mut self.partial);
        super::pgdump::lines(&mut partial, data, |l| self.line(l));
        self.partial = partial;
    }
}

/// Take one backup of a MySQL/MariaDB database.
pub async fn run(job: &Job<'_>, id: &str, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<Manifest, String> {
    let started = super::now();
    let ep = job.endpoint;
    let tool = dump_tool()?;
    let object_name = format!("{id}.{}", super::extension(job.compression).replace("dump", "sql"));
    let object = job.storage.path(&[job.policy, &job.database, &object_name]);
    let dumped = Arc::new(AtomicU64::new(0));
    let cmd = dump_command(ep, &job.database)?;
    let (stored, sha256, scanner) = stream::dump_to(
        job.storage,
        &object,
        job.compression,
        cmd,
        "mariadb-dump",
        DumpScanner::default(),
        &dumped,
        progress,
    )
    .await?;
    let size = dumped.load(std::sync::atomic::Ordering::Relaxed);
    let version = server_version(ep).await.unwrap_or_default();
    let mut tools = BTreeMap::new();
    tools.insert(tool.file_name().unwrap_or_default().to_string_lossy().into_owned(), super::tool_version(&tool));
    tools.insert("dbctl".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let manifest = Manifest {
        server_version: version,
        started,
        finished: super::now(),
        size,
        compressed_size: stored,
        sha256,
        tools,
        tables: scanner.finish(),
        ..Manifest::base(job, id, "sql", &object_name)
    };
    progress(manifest.size, manifest.compressed_size);
    super::put_json(job.storage, &[job.policy, &job.database, &format!("{id}.manifest.json")], &manifest).await?;
    Ok(manifest)
}

async fn server_version(ep: &Endpoint) -> Result<String, String> {
    let mut c = crate::engine::mysql::connect(&ep.address.to_string(), &ep.url).await.map_err(|e| e.to_string())?;
    let v: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut c).await.map_err(|e| e.to_string())?;
    let _ = sqlx::Connection::close(c).await;
    Ok(v)
}

async fn admin_sql(ep: &Endpoint, sql: String) -> Result<(), String> {
    let mut c = crate::engine::mysql::connect(&ep.address.to_string(), &ep.url).await.map_err(|e| e.to_string())?;
    let r = crate::engine::mysql::execute(&mut c, sql).await.map_err(|e| e.to_string());
    let _ = sqlx::Connection::close(c).await;
    r
}

async fn exists(ep: &Endpoint, name: &str) -> Result<bool, String> {
    let mut c = crate::engine::mysql::connect(&ep.address.to_string(), &ep.url).await.map_err(|e| e.to_string())?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let _ = sqlx::Connection::close(c).await;
    Ok(n > 0)
}

/// Load a backup into the existing database `target`; checks the sha256.
async fn load(storage: &super::storage::Storage, m: &Manifest, ep: &Endpoint, target: &str) -> Result<(), String> {
    let mut c = client(&client_tool()?, ep);
    c.arg(format!("--database={target}"));
    let child = tokio::process::Command::from(c)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
    let object = storage.path(&[&m.policy, &m.database_name, &m.object]);
    let out = stream::into_child(storage, &object, &m.compression, (&m.id, &m.object, &m.sha256), child).await?;
    if !out.status.success() {
        return Err(format!("loading the dump failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

pub async fn restore(
    storage: &super::storage::Storage,
    m: &Manifest,
    ep: &Endpoint,
    to: &str,
    replace: bool,
) -> Result<(), String> {
    if exists(ep, to).await? {
        if !replace {
            return Err(format!("database \"{to}\" exists; restore into a new name, or add --replace"));
        }
        admin_sql(ep, format!("DROP DATABASE {}", mysql_ident(to))).await?;
    }
    admin_sql(ep, format!("CREATE DATABASE {}", mysql_ident(to))).await?;
    let r = load(storage, m, ep, to).await;
    if r.is_err() {
        let _ = admin_sql(ep, format!("DROP DATABASE IF EXISTS {}", mysql_ident(to))).await;
    }
    r
}

/// Restore into a scratch database and dump it again: the same rows give the same counts and checksums.
pub async fn verify(storage: &super::storage::Storage, m: &Manifest, ep: &Endpoint) -> Result<(), String> {
    let scratch = format!("dbctl_verify_{}", &m.id.replace(['-', '.'], "_").to_lowercase());
    admin_sql(ep, format!("DROP DATABASE IF EXISTS {}", mysql_ident(&scratch))).await?;
    admin_sql(ep, format!("CREATE DATABASE {}", mysql_ident(&scratch))).await?;
    let result = async {
        load(storage, m, ep, &scratch).await?;
        let (mut child, errors) = stream::spawn(dump_command(ep, &scratch)?, "mariadb-dump")?;
        let mut stdout = child.stdout.take().expect("piped");
        let scanned = tokio::task::spawn_blocking(move || {
            let mut s = DumpScanner::default();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => break Ok(s),
                    Ok(n) => s.feed(&buf[..n]),
                    Err(e) => break Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        stream::finish(child, errors, "mariadb-dump").await?;
        Ok::<_, String>(scanned.finish())
    }
    .await;
    let _ = admin_sql(ep, format!("DROP DATABASE IF EXISTS {}", mysql_ident(&scratch))).await;
    super::compare(m, &result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lines_are_counted_per_table() {
        let mut s = DumpScanner::default();
        s.feed(b"CREATE TABLE `a``b` (\n  `x` int\n);\nCREATE TABLE `empty` (x int);\nINSERT INTO `a``b` VALUES (1,'x\\n');\nINSERT INTO `a``b` VAL");
        s.feed(b"UES (2,'y');\n");
        let t = s.finish();
        assert_eq!(t["`a``b`"].rows, 2);
        assert_eq!(t["`empty`"].rows, 0);
        let mut r = DumpScanner::default();
        r.feed(b"INSERT INTO `a``b` VALUES (2,'y');\nINSERT INTO `a``b` VALUES (1,'x\\n');\n");
        assert_eq!(r.finish()["`a``b`"], t["`a``b`"], "order does not matter");
    }
}
