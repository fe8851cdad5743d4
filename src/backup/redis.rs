//! Redis backups: an RDB snapshot of the whole server (`redis-cli --rdb`,
//! which asks the server for the same file a replica gets), with the key
//! count of each namespace read just before it. `verify` loads the file into
//! a throwaway redis-server (Unix socket only, in a private temporary
//! directory, no TCP port) and compares its counts.
//!
//! The counts are read on the live server right before the snapshot starts:
//! on a server written to meanwhile they may differ from the file's, and
//! verification then says so rather than passing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::engine::redis::embedded::{call, cli_binary, server_binary};
use crate::engine::redis::{acl, connect, count_keys_on};

#[derive(Debug, Clone, PartialEq)]
pub struct RdbBackup {
    pub path: PathBuf,
    pub bytes: u64,
    /// sha256 of the file.
    pub sha256: String,
    /// Namespace → keys, on the server when the snapshot was taken.
    pub counts: BTreeMap<String, u64>,
    /// True once `verify` found the same counts in the file.
    pub verified: bool,
}

/// Snapshot the server at `url` into `to`, with the key counts of `namespaces`.
/// The password reaches redis-cli through REDISCLI_AUTH, never its command line.
pub async fn snapshot(server: &str, url: &str, namespaces: &[String], to: &Path) -> Result<RdbBackup, String> {
    let info: ::redis::ConnectionInfo =
        ::redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| format!("{server}: not a redis:// URL"))?;
    let ::redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
        return Err(format!("{server}: an RDB backup needs a plain TCP redis:// URL"));
    };
    let password = info.redis_settings().password().map(str::to_string);
    let mut conn = connect(server, url).await.map_err(|e| e.to_string())?;
    let mut counts = BTreeMap::new();
    for ns in namespaces {
        let n = count_keys_on(&mut conn, ns).await.map_err(|e| scrub(e.to_string(), password.as_deref()))?;
        counts.insert(ns.clone(), n);
    }
    let mut c = tokio::process::Command::new(cli_binary().map_err(|e| e.to_string())?);
    c.arg("-h").arg(&host).arg("-p").arg(port.to_string()).arg("--no-auth-warning");
    c.env_remove("REDISCLI_AUTH");
    if let Some(user) = info.redis_settings().username() {
        c.arg("--user").arg(user);
    }
    if let Some(p) = &password {
        c.env("REDISCLI_AUTH", p);
    }
    c.arg("--rdb").arg(to).stdin(Stdio::null()).kill_on_drop(true);
    let out = c.output().await.map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !out.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return Err(format!("redis-cli --rdb failed: {}", scrub(text.trim().to_string(), password.as_deref())));
    }
    let (bytes, sha256) = file_sha256(to)?;
    Ok(RdbBackup { path: to.to_path_buf(), bytes, sha256, counts, verified: false })
}

/// The size and sha256 of a file, read in pieces (an RDB can be larger than memory).
fn file_sha256(path: &Path) -> Result<(u64, String), String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut sha = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut sha).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((bytes, hex::encode(sha.finalize())))
}

fn scrub(m: String, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => m.replace(p, "(sensitive)"),
        _ => m,
    }
}

/// Load `rdb` into a throwaway server and compare each namespace's key count
/// with `expected`; sets `verified` when they are equal.
pub async fn verify(backup: &mut RdbBackup) -> Result<(), String> {
    let rdb = backup.path.clone();
    let names: Vec<String> = backup.counts.keys().cloned().collect();
    let found = tokio::task::spawn_blocking(move || count_in_rdb(&rdb, &names)).await.map_err(|e| e.to_string())??;
    let wrong: Vec<String> = backup
        .counts
        .iter()
        .filter(|(ns, n)| found.get(*ns) != Some(n))
        .map(|(ns, n)| {
            format!("{}: {n} keys at the snapshot, {} in the file", acl::quote(ns), found.get(ns).unwrap_or(&0))
        })
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "the RDB file {} does not hold what was snapshot:\n{}",
            backup.path.display(),
            wrong.join("\n")
        ));
    }
    backup.verified = true;
    Ok(())
}

/// Key counts per namespace in an RDB file, read by a throwaway redis-server
/// that loads it. Fails when the server cannot load the file (truncated, altered).
pub fn count_in_rdb(rdb: &Path, namespaces: &[String]) -> Result<BTreeMap<String, u64>, String> {
    let dir =
        tempfile::Builder::new().prefix("dbctl-rdb-").tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    std::fs::copy(rdb, dir.path().join("dump.rdb")).map_err(|e| format!("cannot copy {}: {e}", rdb.display()))?;
    let socket = dir.path().join("redis.sock");
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(server_binary().map_err(|e| e.to_string())?)
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dbfilename", "dump.rdb"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--unixsocket")
        .arg(&socket)
        .args(["--unixsocketperm", "700"])
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let result = (|| {
        let t = Instant::now();
        let mut s = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(format!(
                    "the RDB file {} does not load (redis-server {status}):\n{}",
                    rdb.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            // Ready once it answers PING; before it has loaded the file it answers -LOADING.
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
                s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
                if call(&mut s, &["PING"]).is_ok_and(|r| r == ["+PONG"]) {
                    break s;
                }
            }
            if t.elapsed() > Duration::from_secs(120) {
                return Err(format!("the RDB file {} did not load within 120 s", rdb.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let registry = call(&mut s, &["SMEMBERS", acl::REGISTRY]).map_err(|e| e.to_string())?;
        let mut counts = BTreeMap::new();
        for ns in namespaces {
            // Counted as the live server counts them (`engine::redis::count_keys`).
            let nested = acl::nested_in(ns, &registry);
            let pattern = acl::key_pattern(ns);
            let (mut cursor, mut n) = ("0".to_string(), 0u64);
            loop {
                let r =
                    call(&mut s, &["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]).map_err(|e| e.to_string())?;
                // The cursor, then the keys.
                let Some((next, keys)) = r.split_first().filter(|(c, _)| !c.starts_with('-')) else {
                    return Err(format!("SCAN failed on the loaded RDB: {}", r.join(" ")));
                };
                n += keys.iter().filter(|k| !nested.iter().any(|p| k.starts_with(p.as_str()))).count() as u64;
                cursor = next.clone();
                if cursor == "0" {
                    break;
                }
            }
            counts.insert(ns.clone(), n);
        }
        Ok(counts)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Nothing to look at in an RDB stream while it is stored.
struct Plain;

impl super::stream::Inspect for Plain {
    fn feed(&mut self, _data: &[u8]) {}
}

/// The manifest's one "table" for a Redis database: its namespace's keys,
/// and the sha256 of the RDB file they were counted in.
fn keys_stat(keys: u64, rdb_sha256: &str) -> super::TableStat {
    super::TableStat { rows: keys as i64, checksum: format!("rdb:{rdb_sha256}") }
}

/// A backup job on a Redis server: an RDB snapshot of the server (Redis
/// has one keyspace), stored with the policy's compression, and the keys of
/// the job's namespace counted when it was taken.
pub async fn run(
    job: &super::Job<'_>,
    id: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<super::Manifest, String> {
    let started = super::now();
    let ep = job.endpoint;
    let dir =
        tempfile::Builder::new().prefix("dbctl-rdb-").tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let rdb = dir.path().join("dump.rdb");
    let server = ep.address.to_string();
    let snap = snapshot(&server, &ep.url, std::slice::from_ref(&job.database), &rdb).await?;
    let object_name = format!("{id}.{}", super::extension(job.compression).replace("dump", "rdb"));
    let object = job.storage.path(&[job.policy, &job.database, &object_name]);
    let raw = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let file = std::fs::File::open(&rdb).map_err(|e| format!("cannot read {}: {e}", rdb.display()))?;
    let mut on_piece = |stored: u64| progress(raw.load(std::sync::atomic::Ordering::Relaxed), stored);
    let up = super::stream::upload(job.storage, &object, job.compression, file, Plain, &raw, &mut on_piece).await?;
    up.writer.finish().await.map_err(|e| format!("{}: {e}", job.storage.url))?;
    let mut conn = connect(&server, &ep.url).await.map_err(|e| e.to_string())?;
    let info: String = ::redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or_default().trim().to_string();
    let keys = snap.counts.get(&job.database).copied().unwrap_or_default();
    let mut tools = BTreeMap::new();
    tools.insert("redis-cli".to_string(), "--rdb".to_string());
    tools.insert("dbctl".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let manifest = super::Manifest {
        server_version: version,
        started,
        finished: super::now(),
        size: snap.bytes,
        compressed_size: up.stored,
        sha256: up.sha256,
        tools,
        tables: BTreeMap::from([("keys".to_string(), keys_stat(keys, &snap.sha256))]),
        ..super::Manifest::base(job, id, "rdb", &object_name)
    };
    progress(manifest.size, manifest.compressed_size);
    super::put_json(job.storage, &[job.policy, &job.database, &format!("{id}.manifest.json")], &manifest).await?;
    Ok(manifest)
}

/// Fetch a stored RDB (its sha256 checked), load it into a throwaway
/// redis-server and count the namespace's keys: they must be the recorded ones.
pub async fn verify_stored(storage: &super::storage::Storage, m: &super::Manifest) -> Result<(), String> {
    let dir =
        tempfile::Builder::new().prefix("dbctl-rdb-").tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let rdb = dir.path().join("dump.rdb");
    let mut file = tokio::fs::File::create(&rdb).await.map_err(|e| format!("cannot write {}: {e}", rdb.display()))?;
    let object = storage.path(&[&m.policy, &m.database_name, &m.object]);
    let got = super::stream::download(storage, &object, &m.compression, &mut file).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| e.to_string())?;
    drop(file);
    got.check(&m.id, &m.object, &m.sha256)?;
    let (_, raw_sha) = file_sha256(&rdb)?;
    let names = vec![m.database_name.clone()];
    let path = rdb.clone();
    let found = tokio::task::spawn_blocking(move || count_in_rdb(&path, &names)).await.map_err(|e| e.to_string())??;
    let keys = found.get(&m.database_name).copied().unwrap_or_default();
    let stats = BTreeMap::from([("keys".to_string(), keys_stat(keys, &raw_sha))]);
    super::compare(m, &stats)
}
