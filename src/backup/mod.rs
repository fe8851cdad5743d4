//! Backups: run a policy now (pg_dump streamed through zstd or gzip to
//! storage, never staged on disk), list, restore into a new database,
//! verify by a real restore, and prune by the policy's keep rules.
//!
//! Each backup is `<policy>/<database>/<id>.dump[.zst|.gz]` plus
//! `<id>.manifest.json`, written last: a backup without a manifest is
//! incomplete and never listed. A verified backup gets `<id>.verified.json`.
//! The dump runs on an exported snapshot, and the per-table row counts and
//! checksums recorded in the manifest are read in that same snapshot, so
//! `verify` compares a restore with exactly what was dumped.

pub mod keep;
pub mod mysql;
pub mod pgdump;
pub mod redis;
pub mod storage;
pub mod stream;

use std::collections::BTreeMap;
use std::process::Stdio;

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use self::storage::Storage;
use crate::engine::endpoint::Endpoint;
use crate::engine::postgres::server_message as pg_msg;
use crate::engine::sql::pg_ident;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableStat {
    pub rows: i64,
    /// Independent of row order; prefixed by how it was computed: `copy:`
    /// (xxh3 of each COPY line, read from the dump stream, see
    /// [`pgdump`]), `record:` or `text:` (read from the server, see
    /// [`checksum_sql`]; older backups and archives the stream reader does
    /// not know).
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStat {
    /// Bytes pg_dump wrote.
    pub size: u64,
    /// Bytes stored.
    pub stored: u64,
    /// sha256 of the stored object.
    pub sha256: String,
}

impl Manifest {
    /// What a job knows before its dump: where it goes and what it is of.
    /// The runs fill in the rest; an unfinished one is deleted through it.
    fn base(job: &Job<'_>, id: &str, format: &str, object: &str) -> Manifest {
        Manifest {
            format_version: 1,
            id: id.to_string(),
            policy: job.policy.to_string(),
            database: job.database_addr.clone(),
            database_name: job.database.clone(),
            server: job.endpoint.address.to_string(),
            engine: job.endpoint.engine.as_str().to_string(),
            server_version: String::new(),
            started: String::new(),
            finished: String::new(),
            size: 0,
            compressed_size: 0,
            sha256: String::new(),
            compression: job.compression.to_string(),
            format: format.to_string(),
            object: object.to_string(),
            files: BTreeMap::new(),
            tools: BTreeMap::new(),
            tables: BTreeMap::new(),
            verified: false,
            storage: job.storage.url.clone(),
        }
    }

    /// What an unfinished PostgreSQL backup has stored so far, for deleting it.
    fn partial(job: &Job<'_>, id: &str, object: &str, files: &BTreeMap<String, FileStat>) -> Manifest {
        let format = if object.ends_with(".dir") { "directory" } else { "custom" };
        Manifest { files: files.clone(), ..Manifest::base(job, id, format, object) }
    }
}

fn custom_format() -> String {
    "custom".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub policy: String,
    pub database: String,
    pub database_name: String,
    pub server: String,
    pub engine: String,
    pub server_version: String,
    pub started: String,
    pub finished: String,
    /// Bytes pg_dump wrote.
    pub size: u64,
    /// Bytes stored.
    pub compressed_size: u64,
    /// sha256 of the stored object.
    pub sha256: String,
    pub compression: String,
    /// pg_dump's format: `custom` (one object) or `directory` (`backup run --jobs`).
    #[serde(default = "custom_format")]
    pub format: String,
    /// The dump object (or, for the directory format, the folder of objects),
    /// next to the manifest.
    pub object: String,
    /// Directory format: every stored file with its sizes and sha256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileStat>,
    pub tools: BTreeMap<String, String>,
    pub tables: BTreeMap<String, TableStat>,
    /// Set when listed: a verification marker exists.
    #[serde(default, skip_serializing)]
    pub verified: bool,
    /// Set when listed: the storage URL it came from.
    #[serde(default, skip_serializing)]
    pub storage: String,
}

fn now() -> String {
    crate::secrets::now_rfc3339()
}

/// A URL's user or password part, `%XX` escapes decoded.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq environment for an endpoint: the password goes in PGPASSWORD, never on a command line.
pub fn pg_env(ep: &Endpoint, database: &str) -> Vec<(String, String)> {
    let rest = ep.url.split_once("://").map(|x| x.1).unwrap_or(&ep.url);
    let auth = rest.rsplit_once('@').map(|x| x.0).unwrap_or("");
    let (user, password) = auth.split_once(':').map(|(u, p)| (u, Some(p))).unwrap_or((auth, None));
    // Where dbctl dials (a tunnel's end when `connect { }` is set).
    let (host, port) = crate::engine::endpoint::dial_host_port(ep);
    let mut env = vec![
        ("PGHOST".to_string(), host),
        ("PGPORT".to_string(), port.to_string()),
        ("PGUSER".to_string(), if user.is_empty() { "postgres".into() } else { percent_decode(user) }),
        ("PGDATABASE".to_string(), database.to_string()),
        ("PGCONNECT_TIMEOUT".to_string(), crate::engine::limits::connect_timeout().as_secs().max(2).to_string()),
        // The COPY text that is checksummed must not depend on the caller's locale
        // settings; `verify` reads the restore back with the same ones (`COPY_SETTINGS`).
        ("PGCLIENTENCODING".to_string(), "UTF8".to_string()),
        ("PGTZ".to_string(), "UTC".to_string()),
    ];
    if let Some(p) = password {
        env.push(("PGPASSWORD".to_string(), percent_decode(p)));
    }
    // TLS as the url asks (PGSSLMODE, PGSSLROOTCERT), never the caller's environment's.
    env.extend(crate::engine::tls::pg_env(&ep.url));
    env
}

fn tool_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

const TABLES: &str = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1";

/// How a table's checksum is computed, recorded as the checksum's prefix.
/// `record`: `sum(hash_record_extended(row, 0))` (PostgreSQL 14+, about four
/// times faster); `text`: `sum(hashtext(row::text))`, for older servers and
/// column types without a hash function. Both are independent of row order.
fn checksum_sql(method: &str, table: &str) -> String {
    match method {
        "record" => {
            format!("SELECT count(*)::bigint, COALESCE(sum(hash_record_extended(x, 0)), 0)::text FROM {table} x")
        }
        _ => format!("SELECT count(*)::bigint, COALESCE(sum(hashtext(x::text)::bigint), 0)::text FROM {table} x"),
    }
}

/// Row counts and checksums of every table, in the current transaction.
/// With `recorded`, each table uses the method its recorded checksum used.
async fn table_stats(
    conn: &mut sqlx::PgConnection,
    recorded: Option<&BTreeMap<String, TableStat>>,
) -> Result<BTreeMap<String, TableStat>, String> {
    let tables: Vec<String> = sqlx::query_scalar(TABLES).fetch_all(&mut *conn).await.map_err(|e| pg_msg(&e))?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg_msg(&e))?;
    let mut out = BTreeMap::new();
    for t in tables {
        let methods: Vec<&str> = match recorded.and_then(|r| r.get(&t)).and_then(|s| s.checksum.split_once(':')) {
            Some((m, _)) => vec![if m == "record" { "record" } else { "text" }],
            None if version >= 140000 => vec!["record", "text"],
            None => vec!["text"],
        };
        let mut last_err = String::new();
        let mut done = None;
        // With a fallback, a failed first try must not abort the snapshot's transaction.
        let guarded = methods.len() > 1;
        let exec = |sql: &'static str| sqlx::raw_sql(sql);
        for m in methods {
            if guarded {
                exec("SAVEPOINT dbctl_stat").execute(&mut *conn).await.map_err(|e| pg_msg(&e))?;
            }
            let r = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(checksum_sql(m, &t)))
                .fetch_one(&mut *conn)
                .await;
            let end = match &r {
                Ok(_) => "RELEASE SAVEPOINT dbctl_stat",
                Err(_) => "ROLLBACK TO SAVEPOINT dbctl_stat",
            };
            if guarded {
                exec(end).execute(&mut *conn).await.map_err(|e| pg_msg(&e))?;
            }
            match r {
                Ok((rows, sum)) => {
                    done = Some(TableStat { rows, checksum: format!("{m}:{sum}") });
                    break;
                }
                Err(e) => last_err = pg_msg(&e),
            }
        }
        out.insert(t.clone(), done.ok_or_else(|| format!("{t}: {last_err}"))?);
    }
    Ok(out)
}

/// What pg_dump sets for its session (pg_dump.c `setup_connection`), plus
/// what `pg_env` sets: the COPY text read back matches the dump's byte for byte.
const COPY_SETTINGS: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; \
     SET synchronize_seqscans = off; SET row_security = off; SET TimeZone = 'UTC'; SET client_encoding = 'UTF8'";

/// `COPY <table> (<columns pg_dump copies>) TO STDOUT` for a table name as recorded, or NULL when it is missing.
const COPY_OUT: &str =
    "SELECT format('COPY %s %s TO STDOUT', r, COALESCE('(' || (SELECT string_agg(quote_ident(attname), ', ' \
     ORDER BY attnum) FROM pg_attribute WHERE attrelid = r AND attnum > 0 AND NOT attisdropped AND attgenerated = '') \
     || ')', '')) FROM to_regclass($1) r WHERE r IS NOT NULL";

/// Row counts and `copy:` checksums of the restored tables, read the way pg_dump read them.
async fn copy_stats(
    conn: &mut sqlx::PgConnection,
    tables: &BTreeMap<String, TableStat>,
) -> Result<BTreeMap<String, TableStat>, String> {
    sqlx::raw_sql(COPY_SETTINGS).execute(&mut *conn).await.map_err(|e| pg_msg(&e))?;
    let mut out = BTreeMap::new();
    for name in tables.keys() {
        // The statement is built by the server from the restored table, never taken from
        // the manifest (which anyone with write access to the storage could edit).
        let statement: Option<String> = sqlx::query_scalar(COPY_OUT)
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("{name}: {}", pg_msg(&e)))?;
        let Some(statement) = statement else { continue };
        let mut hasher = pgdump::LineHasher::default();
        let mut rows = conn.copy_out_raw(&statement).await.map_err(|e| format!("{name}: {}", pg_msg(&e)))?;
        while let Some(chunk) = rows.next().await {
            hasher.feed(&chunk.map_err(|e| format!("{name}: {}", pg_msg(&e)))?);
        }
        drop(rows);
        out.insert(name.clone(), hasher.finish());
    }
    Ok(out)
}

pub struct Job<'a> {
    /// More than 1: pg_dump's directory format with this many parallel jobs.
    pub jobs: u32,
    pub policy: &'a str,
    pub database_addr: String,
    pub database: String,
    pub compression: &'a str,
    pub endpoint: &'a Endpoint,
    pub storage: &'a Storage,
}

fn extension(compression: &str) -> &'static str {
    match compression {
        "zstd" => "dump.zst",
        "gzip" => "dump.gz",
        _ => "dump",
    }
}

/// Take one backup. The manifest is written only after the dump is
/// complete in storage; on any failure the partial upload is aborted.
pub async fn run(job: &Job<'_>, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<Manifest, String> {
    let started = now();
    let id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let ep = job.endpoint;
    match ep.engine {
        crate::model::EngineKind::Mysql => return mysql::run(job, &id, progress).await,
        crate::model::EngineKind::Redis => return redis::run(job, &id, progress).await,
        crate::model::EngineKind::Postgres => {}
    }
    let mut conn = crate::engine::postgres::connect(&ep.address.to_string(), &ep.url, Some(&job.database))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let snapshot: String =
        sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut conn).await.map_err(|e| e.to_string())?;
    let server_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;

    let bindir = crate::engine::embedded::find_bindir().map_err(|e| e.to_string())?;
    let pg_dump = bindir.join("pg_dump");
    let mut cmd = std::process::Command::new(&pg_dump);
    cmd.args(["--compress=0", "--no-password"])
        .arg(format!("--snapshot={snapshot}"))
        .envs(pg_env(ep, &job.database))
        .stdin(Stdio::null());
    let dumped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dumped_now = || dumped.load(std::sync::atomic::Ordering::Relaxed);
    let dumped_files = if job.jobs > 1 {
        cmd.args(["--format=directory", &format!("--jobs={}", job.jobs)]);
        dump_directory(job, &id, cmd, &dumped, progress).await.map(|(o, f, t)| (o, f, Ok(t)))
    } else {
        cmd.arg("--format=custom");
        dump_custom(job, &id, cmd, &dumped, progress).await
    };
    let (object_name, files, scanned) = dumped_files?;
    // Row counts and checksums come from the COPY data that streamed past; an
    // archive the reader does not know is counted on the server, in the same snapshot.
    let scanned = match std::env::var("DBCTL_BACKUP_CHECKSUMS").as_deref() {
        Ok("server") => Err("DBCTL_BACKUP_CHECKSUMS=server".to_string()),
        _ => scanned,
    };
    let tables = match scanned {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!("reading the dump stream: {why}; counting rows on the server instead");
            match table_stats(&mut conn, None).await {
                Ok(t) => t,
                Err(e) => {
                    let partial = Manifest::partial(job, &id, &object_name, &files);
                    let _ = delete(job.storage, &partial).await;
                    return Err(format!("reading row counts: {e}"));
                }
            }
        }
    };
    let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    let mut tools = BTreeMap::new();
    tools.insert("pg_dump".to_string(), tool_version(&pg_dump));
    tools.insert("dbctl".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let stored: u64 = files.values().map(|f| f.stored).sum();
    let format = if job.jobs > 1 { "directory" } else { "custom" };
    let manifest = Manifest {
        server_version,
        started,
        finished: now(),
        size: dumped_now(),
        compressed_size: stored,
        sha256: files_digest(&object_name, &files),
        files: if job.jobs > 1 { files } else { BTreeMap::new() },
        tools,
        tables,
        ..Manifest::base(job, &id, format, &object_name)
    };
    progress(manifest.size, stored);
    put_json(job.storage, &[job.policy, &job.database, &format!("{id}.manifest.json")], &manifest).await?;
    Ok(manifest)
}

/// The sha256 a manifest records: the object's own for a single-object
/// backup; for a directory, that of its `<sha256>  <file>` lines (sorted).
fn files_digest(object: &str, files: &BTreeMap<String, FileStat>) -> String {
    match files.get(object) {
        Some(f) if files.len() == 1 => f.sha256.clone(),
        _ => {
            let mut sha = Sha256::new();
            for (name, f) in files {
                sha.update(format!("{}  {name}\n", f.sha256));
            }
            hex::encode(sha.finalize())
        }
    }
}

type Dumped = (String, BTreeMap<String, FileStat>, Result<BTreeMap<String, TableStat>, String>);

/// pg_dump's custom format, streamed from its stdout: nothing staged on disk.
async fn dump_custom(
    job: &Job<'_>,
    id: &str,
    cmd: std::process::Command,
    dumped: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Dumped, String> {
    let object_name = format!("{id}.{}", extension(job.compression));
    let object = job.storage.path(&[job.policy, &job.database, &object_name]);
    let scanner = pgdump::Scanner::default();
    let (stored, sha256, scanner) =
        stream::dump_to(job.storage, &object, job.compression, cmd, "pg_dump", scanner, dumped, progress).await?;
    let size = dumped.load(std::sync::atomic::Ordering::Relaxed);
    let files = BTreeMap::from([(object_name.clone(), FileStat { size, stored, sha256 })]);
    Ok((object_name, files, scanner.finish()))
}

/// pg_dump's directory format with `--jobs`: pg_dump writes its files into a
/// temporary directory (parallel dumps need files), then each is compressed
/// into `<id>.dir/` in storage, its COPY rows counted on the way.
async fn dump_directory(
    job: &Job<'_>,
    id: &str,
    mut cmd: std::process::Command,
    dumped: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(String, BTreeMap<String, FileStat>, BTreeMap<String, TableStat>), String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let dir = tmp.path().join("dump");
    cmd.arg(format!("--file={}", dir.display()));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.map_err(|e| e.to_string())?;
    let out = out.map_err(|e| format!("cannot run pg_dump: {e}"))?;
    if !out.status.success() {
        return Err(format!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let toc = std::fs::read(dir.join("toc.dat")).map_err(|e| format!("pg_dump's toc.dat: {e}"))?;
    let data_files = pgdump::directory_tables(&toc)?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let object_name = format!("{id}.dir");
    let mut files = BTreeMap::new();
    let mut tables = BTreeMap::new();
    let mut stored_before = 0u64;
    for name in names {
        let stored_name = match extension(job.compression) {
            "dump" => name.clone(),
            ext => format!("{name}.{}", ext.trim_start_matches("dump.")),
        };
        let object = job.storage.path(&[job.policy, &job.database, &object_name, &stored_name]);
        let file = std::fs::File::open(dir.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        let before = dumped.load(std::sync::atomic::Ordering::Relaxed);
        let hasher = data_files.get(&name).map(|_| pgdump::LineHasher::default());
        let base = stored_before;
        let mut on_piece = |stored: u64| progress(dumped.load(std::sync::atomic::Ordering::Relaxed), base + stored);
        let r = stream::upload(job.storage, &object, job.compression, file, hasher, dumped, &mut on_piece).await;
        let up = match r {
            Ok(up) => up,
            Err(e) => {
                let _ = delete(job.storage, &Manifest::partial(job, id, &object_name, &files)).await;
                return Err(e);
            }
        };
        up.writer.finish().await.map_err(|e| format!("{}: {e}", job.storage.url))?;
        let size = dumped.load(std::sync::atomic::Ordering::Relaxed) - before;
        stored_before += up.stored;
        if let (Some(table), Some(h)) = (data_files.get(&name), up.inspect) {
            tables.insert(table.clone(), h.finish());
        }
        files.insert(stored_name, FileStat { size, stored: up.stored, sha256: up.sha256 });
    }
    Ok((object_name, files, tables))
}

async fn put_json(storage: &Storage, parts: &[&str], v: &impl Serialize) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(v).expect("json");
    storage
        .store
        .put(&storage.path(parts), PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", storage.url))
}

/// Every complete backup (those with a manifest) in a storage.
pub async fn list(storage: &Storage) -> Result<Vec<Manifest>, String> {
    let mut objects = storage.store.list(Some(&storage.prefix));
    let mut manifests = Vec::new();
    let mut verified = std::collections::HashSet::new();
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| format!("{}: {e}", storage.url))?;
        let name = meta.location.filename().unwrap_or_default().to_string();
        if let Some(id) = name.strip_suffix(".verified.json") {
            verified.insert(id.to_string());
        } else if name.ends_with(".manifest.json") {
            manifests.push(meta.location.clone());
        }
    }
    let mut out = Vec::new();
    for loc in manifests {
        let bytes =
            storage.store.get(&loc).await.map_err(|e| e.to_string())?.bytes().await.map_err(|e| e.to_string())?;
        if let Ok(mut m) = serde_json::from_slice::<Manifest>(&bytes) {
            m.verified = verified.contains(&m.id);
            m.storage = storage.url.clone();
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Restore a backup into database `target` with pg_restore; checks every
/// stored object against the sha256 the manifest recorded.
pub async fn restore_into(
    storage: &Storage,
    m: &Manifest,
    ep: &Endpoint,
    target: &str,
    keep_owners: bool,
) -> Result<(), String> {
    let bindir = crate::engine::embedded::find_bindir().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(bindir.join("pg_restore"));
    cmd.args(["--exit-on-error", "--no-password"]).arg(format!("--dbname={target}"));
    if !keep_owners {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    cmd.envs(pg_env(ep, target)).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = if m.format == "directory" {
        // pg_restore --jobs needs the files: fetch them into a temporary directory.
        let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        for (name, f) in &m.files {
            let object = storage.path(&[&m.policy, &m.database_name, &m.object, name]);
            let local = tmp.path().join(name.trim_end_matches(".zst").trim_end_matches(".gz"));
            let mut file = tokio::fs::File::create(&local).await.map_err(|e| format!("{}: {e}", local.display()))?;
            stream::download(storage, &object, &m.compression, &mut file).await?.check(&m.id, name, &f.sha256)?;
        }
        let jobs = std::thread::available_parallelism().map(|n| n.get().min(4)).unwrap_or(2);
        cmd.arg(format!("--jobs={jobs}")).arg(tmp.path()).stdin(Stdio::null());
        cmd.output().await.map_err(|e| format!("cannot run pg_restore: {e}"))?
    } else {
        let child = cmd.stdin(Stdio::piped()).spawn().map_err(|e| format!("cannot run pg_restore: {e}"))?;
        let object = storage.path(&[&m.policy, &m.database_name, &m.object]);
        stream::into_child(storage, &object, &m.compression, (&m.id, &m.object, &m.sha256), child).await?
    };
    if !out.status.success() {
        return Err(format!("pg_restore failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

async fn admin(ep: &Endpoint) -> Result<sqlx::PgConnection, String> {
    crate::engine::postgres::connect(&ep.address.to_string(), &ep.url, None).await.map_err(|e| e.to_string())
}

/// `backup restore ID --to NAME [--replace]`: a new database, never over an
/// existing one unless asked.
pub async fn restore(storage: &Storage, m: &Manifest, ep: &Endpoint, to: &str, replace: bool) -> Result<(), String> {
    if m.engine == "mysql" {
        return mysql::restore(storage, m, ep, to, replace).await;
    }
    if m.engine == "redis" {
        return Err(format!(
            "restoring a Redis backup into a namespace is not built yet; the backup is an RDB file of the whole \
             server ({}): start a redis-server with it (--dbfilename) to read it",
            m.object
        ));
    }
    let mut c = admin(ep).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(to)
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    if exists && !replace {
        return Err(format!("database \"{to}\" exists; restore into a new name, or add --replace"));
    }
    if exists {
        crate::engine::postgres::execute(&mut c, format!("DROP DATABASE {} WITH (FORCE)", pg_ident(to)))
            .await
            .map_err(|e| e.to_string())?;
    }
    crate::engine::postgres::execute(&mut c, format!("CREATE DATABASE {} TEMPLATE template0", pg_ident(to)))
        .await
        .map_err(|e| e.to_string())?;
    let r = restore_into(storage, m, ep, to, true).await;
    if r.is_err() {
        let _ = crate::engine::postgres::execute(&mut c, format!("DROP DATABASE IF EXISTS {}", pg_ident(to))).await;
    }
    r
}

/// Restore into a scratch database, compare every table's rows and checksum
/// with the manifest, drop the scratch database, and mark the backup verified.
pub async fn verify(storage: &Storage, m: &Manifest, ep: &Endpoint) -> Result<(), String> {
    if m.engine == "mysql" {
        mysql::verify(storage, m, ep).await?;
    } else if m.engine == "redis" {
        redis::verify_stored(storage, m).await?;
    } else {
        verify_postgres(storage, m, ep).await?;
    }
    put_json(
        storage,
        &[&m.policy, &m.database_name, &format!("{}.verified.json", m.id)],
        &serde_json::json!({ "id": m.id, "verified": now(), "tables": m.tables.len() }),
    )
    .await
}

/// Every recorded table must be there with the recorded rows and checksum.
fn compare(m: &Manifest, stats: &BTreeMap<String, TableStat>) -> Result<(), String> {
    let mut problems = Vec::new();
    for (t, want) in &m.tables {
        match stats.get(t) {
            None => problems.push(format!("{t} is missing")),
            Some(got) if got != want => problems.push(format!(
                "{t}: {} rows (checksum {}), recorded {} rows (checksum {})",
                got.rows, got.checksum, want.rows, want.checksum
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("backup {} does not match what was recorded: {}", m.id, problems.join("; ")))
    }
}

async fn verify_postgres(storage: &Storage, m: &Manifest, ep: &Endpoint) -> Result<(), String> {
    let scratch = format!("dbctl_verify_{}", &m.id.replace(['-', '.'], "_").to_lowercase());
    let mut c = admin(ep).await?;
    crate::engine::postgres::execute(&mut c, format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg_ident(&scratch)))
        .await
        .map_err(|e| e.to_string())?;
    crate::engine::postgres::execute(&mut c, format!("CREATE DATABASE {} TEMPLATE template0", pg_ident(&scratch)))
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        restore_into(storage, m, ep, &scratch, false).await?;
        let mut sc = crate::engine::postgres::connect(&ep.address.to_string(), &ep.url, Some(&scratch))
            .await
            .map_err(|e| e.to_string())?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut sc)
            .await
            .map_err(|e| e.to_string())?;
        let (copied, server): (BTreeMap<_, _>, BTreeMap<_, _>) =
            m.tables.clone().into_iter().partition(|(_, t)| t.checksum.starts_with("copy:"));
        let mut stats = if server.is_empty() { BTreeMap::new() } else { table_stats(&mut sc, Some(&server)).await? };
        stats.extend(copy_stats(&mut sc, &copied).await?);
        let _ = sc.close().await;
        compare(m, &stats)
    }
    .await;
    let _ = crate::engine::postgres::execute(
        &mut c,
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg_ident(&scratch)),
    )
    .await;
    result
}

/// Delete a backup: its manifest (first, so it stops being listed), its
/// object or directory of objects, and its verification marker.
pub async fn delete(storage: &Storage, m: &Manifest) -> Result<(), String> {
    let dir = |name: &String| format!("{}/{name}", m.object);
    let mut names = vec![format!("{}.manifest.json", m.id)];
    if m.format == "directory" {
        names.extend(m.files.keys().map(dir));
    } else {
        names.push(m.object.clone());
    }
    names.push(format!("{}.verified.json", m.id));
    for name in names {
        let parts: Vec<&str> =
            [m.policy.as_str(), m.database_name.as_str()].into_iter().chain(name.split('/')).collect();
        match storage.store.delete(&storage.path(&parts)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("{}: {e}", storage.url)),
        }
    }
    Ok(())
}

/// Whether a policy is due: no backup yet, or none since the schedule's last occurrence.
pub fn due(schedule: &str, last_finished: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(last) = last_finished.and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok()) else { return true };
    let Ok(cron) = schedule.parse::<croner::Cron>() else { return false };
    match cron.find_previous_occurrence(&now, true) {
        Ok(prev) => last.with_timezone(&chrono::Utc) < prev,
        Err(_) => false,
    }
}
