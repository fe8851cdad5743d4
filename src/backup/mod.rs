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
pub mod pgdump;
pub mod storage;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use self::storage::Storage;
use crate::engine::sql::pg_ident;
use crate::runtime::Endpoint;

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
    /// The dump object, relative to the storage prefix.
    pub object: String,
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

/// libpq environment for an endpoint: the password goes in PGPASSWORD, never on a command line.
pub fn pg_env(ep: &Endpoint, database: &str) -> Vec<(String, String)> {
    let rest = ep.url.split_once("://").map(|x| x.1).unwrap_or(&ep.url);
    let auth = rest.rsplit_once('@').map(|x| x.0).unwrap_or("");
    let (user, password) = auth.split_once(':').map(|(u, p)| (u, Some(p))).unwrap_or((auth, None));
    let (host, port) = crate::runtime::host_port(ep);
    let decode = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
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
    };
    let mut env = vec![
        ("PGHOST".to_string(), host),
        ("PGPORT".to_string(), port.to_string()),
        ("PGUSER".to_string(), if user.is_empty() { "postgres".into() } else { decode(user) }),
        ("PGDATABASE".to_string(), database.to_string()),
        ("PGCONNECT_TIMEOUT".to_string(), "10".to_string()),
        // The COPY text that is checksummed must not depend on the caller's locale
        // settings; `verify` reads the restore back with the same ones (`COPY_SETTINGS`).
        ("PGCLIENTENCODING".to_string(), "UTF8".to_string()),
        ("PGTZ".to_string(), "UTC".to_string()),
    ];
    if let Some(p) = password {
        env.push(("PGPASSWORD".to_string(), decode(p)));
    }
    env
}

fn tool_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Counts and hashes what passes through a reader.
struct Tap<R> {
    inner: R,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sha: Option<Sha256>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            this.bytes.fetch_add(new.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(s) = this.sha.as_mut() {
                s.update(new);
            }
        }
        r
    }
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
    let tables: Vec<String> = sqlx::query_scalar(TABLES).fetch_all(&mut *conn).await.map_err(|e| e.to_string())?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
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
                exec("SAVEPOINT dbctl_stat").execute(&mut *conn).await.map_err(|e| e.to_string())?;
            }
            let r = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(checksum_sql(m, &t)))
                .fetch_one(&mut *conn)
                .await;
            let end = match &r {
                Ok(_) => "RELEASE SAVEPOINT dbctl_stat",
                Err(_) => "ROLLBACK TO SAVEPOINT dbctl_stat",
            };
            if guarded {
                exec(end).execute(&mut *conn).await.map_err(|e| e.to_string())?;
            }
            match r {
                Ok((rows, sum)) => {
                    done = Some(TableStat { rows, checksum: format!("{m}:{sum}") });
                    break;
                }
                Err(e) => last_err = e.to_string(),
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
    sqlx::raw_sql(COPY_SETTINGS).execute(&mut *conn).await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for name in tables.keys() {
        // The statement is built by the server from the restored table, never taken from
        // the manifest (which anyone with write access to the storage could edit).
        let statement: Option<String> =
            sqlx::query_scalar(COPY_OUT).bind(name).fetch_one(&mut *conn).await.map_err(|e| format!("{name}: {e}"))?;
        let Some(statement) = statement else { continue };
        let mut hasher = pgdump::LineHasher::default();
        let mut rows = conn.copy_out_raw(&statement).await.map_err(|e| format!("{name}: {e}"))?;
        while let Some(chunk) = rows.next().await {
            hasher.feed(&chunk.map_err(|e| format!("{name}: {e}"))?);
        }
        drop(rows);
        out.insert(name.clone(), hasher.finish());
    }
    Ok(out)
}

/// Sends what is written to it in pieces of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx.blocking_send(piece).map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

const PIECE: usize = 1 << 20;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Run pg_dump, hash its COPY rows and compress its output into `tx`. Returns
/// the per-table statistics read from the stream (or why they could not be).
fn dump_thread(
    mut cmd: std::process::Command,
    compression: &str,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    dumped: &std::sync::atomic::AtomicU64,
) -> Result<Result<BTreeMap<String, TableStat>, String>, String> {
    use std::io::{Read, Write};
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut scanner = pgdump::Scanner::default();
    let sink = ChannelWriter { tx, buf: Vec::with_capacity(PIECE) };
    let streamed = (|| -> std::io::Result<ChannelWriter> {
        let mut out: Box<dyn Compressor> = match compression {
            "zstd" => {
                let mut e = zstd::stream::Encoder::new(sink, 3)?;
                // One worker: compression overlaps reading pg_dump and hashing its rows.
                e.multithread(1)?;
                Box::new(e)
            }
            "gzip" => Box::new(flate2::write::GzEncoder::new(sink, flate2::Compression::default())),
            _ => Box::new(sink),
        };
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            scanner.feed(&buf[..n]);
            dumped.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            out.write_all(&buf[..n])?;
        }
        out.done()
    })();
    let streamed = streamed.and_then(|mut sink| sink.flush());
    if streamed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let err_text = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("pg_dump failed: {}", err_text.trim()));
    }
    streamed.map_err(|e| format!("streaming pg_dump: {e}"))?;
    Ok(scanner.finish())
}

/// A compressing writer that can be finished, handing back the channel.
trait Compressor: std::io::Write {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter>;
}

impl Compressor for zstd::stream::Encoder<'static, ChannelWriter> {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        self.finish()
    }
}

impl Compressor for flate2::write::GzEncoder<ChannelWriter> {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        self.finish()
    }
}

impl Compressor for ChannelWriter {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        Ok(*self)
    }
}

pub struct Job<'a> {
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

/// Take one backup. The manifest is written only after the object is
/// complete; on any failure the partial upload is aborted.
pub async fn run(job: &Job<'_>, progress: &dyn Fn(u64, u64)) -> Result<Manifest, String> {
    let started = now();
    let id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let ep = job.endpoint;
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
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--snapshot={snapshot}"))
        .envs(pg_env(ep, &job.database));
    let object_name = format!("{id}.{}", extension(job.compression));
    let object = job.storage.path(&[job.policy, &job.database, &object_name]);
    let upload = job.storage.store.put_multipart(&object).await.map_err(|e| format!("{}: {e}", job.storage.url))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
    let dumped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // pg_dump, the row hashing and the compressor run on a thread of their own;
    // compressed pieces come back over a channel to be hashed and uploaded.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let dump = {
        let (dumped, compression) = (dumped.clone(), job.compression.to_string());
        tokio::task::spawn_blocking(move || dump_thread(cmd, &compression, tx, &dumped))
    };
    let mut sha = Sha256::new();
    let mut stored: u64 = 0;
    let uploaded = async {
        while let Some(piece) = rx.recv().await {
            sha.update(&piece);
            stored += piece.len() as u64;
            writer.wait_for_capacity(4).await.map_err(|e| format!("{}: {e}", job.storage.url))?;
            writer.write(&piece);
            progress(dumped.load(std::sync::atomic::Ordering::Relaxed), stored);
        }
        Ok::<(), String>(())
    }
    .await;
    // On an upload error the receiver is gone, which stops the dump thread.
    drop(rx);
    let dumped_result = dump.await.map_err(|e| e.to_string()).and_then(|r| r);
    let checked = match uploaded.and(dumped_result) {
        Ok(scanned) => {
            // Row counts and checksums come from the COPY data that streamed past; an
            // archive the reader does not know is counted on the server, in the same snapshot.
            let scanned = match std::env::var("DBCTL_BACKUP_CHECKSUMS").as_deref() {
                Ok("server") => Err("DBCTL_BACKUP_CHECKSUMS=server".to_string()),
                _ => scanned,
            };
            match scanned {
                Ok(t) => Ok(t),
                Err(why) => {
                    tracing::warn!("reading the dump stream: {why}; counting rows on the server instead");
                    table_stats(&mut conn, None).await.map_err(|e| format!("reading row counts: {e}"))
                }
            }
        }
        Err(e) => Err(e),
    };
    let tables = match checked {
        Ok(t) => t,
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    writer.finish().await.map_err(|e| format!("{}: {e}", job.storage.url))?;
    let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    let mut tools = BTreeMap::new();
    tools.insert("pg_dump".to_string(), tool_version(&pg_dump));
    tools.insert("dbctl".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let manifest = Manifest {
        format_version: 1,
        id: id.clone(),
        policy: job.policy.to_string(),
        database: job.database_addr.clone(),
        database_name: job.database.clone(),
        server: ep.address.to_string(),
        engine: "postgres".into(),
        server_version,
        started,
        finished: now(),
        size: dumped.load(std::sync::atomic::Ordering::Relaxed),
        compressed_size: stored,
        sha256: hex::encode(sha.finalize()),
        compression: job.compression.to_string(),
        object: object_name,
        tools,
        tables,
        verified: false,
        storage: job.storage.url.clone(),
    };
    progress(manifest.size, stored);
    put_json(job.storage, &[job.policy, &job.database, &format!("{id}.manifest.json")], &manifest).await?;
    Ok(manifest)
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

/// Stream a backup into pg_restore for database `target`; checks the sha256.
pub async fn restore_into(
    storage: &Storage,
    m: &Manifest,
    ep: &Endpoint,
    target: &str,
    keep_owners: bool,
) -> Result<(), String> {
    let object = storage.path(&[&m.policy, &m.database_name, &m.object]);
    let stream = storage.store.get(&object).await.map_err(|e| format!("{}: {e}", storage.url))?.into_stream();
    let reader = tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut tap = Tap { inner: reader, bytes: Default::default(), sha: Some(Sha256::new()) };
    let bindir = crate::engine::embedded::find_bindir().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(bindir.join("pg_restore"));
    cmd.args(["--exit-on-error", "--no-password"]).arg(format!("--dbname={target}"));
    if !keep_owners {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    let mut child = cmd
        .envs(pg_env(ep, target))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run pg_restore: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let copied: Result<(), String> = async {
        let mut buf = vec![0u8; 1 << 20];
        let mut decoded: Pin<Box<dyn AsyncRead + Send + '_>> = match m.compression.as_str() {
            "zstd" => {
                Box::pin(async_compression::tokio::bufread::ZstdDecoder::new(tokio::io::BufReader::new(&mut tap)))
            }
            "gzip" => {
                Box::pin(async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(&mut tap)))
            }
            _ => Box::pin(&mut tap),
        };
        loop {
            let n = decoded.read(&mut buf).await.map_err(|e| format!("the backup object is damaged: {e}"))?;
            if n == 0 {
                break;
            }
            if stdin.write_all(&buf[..n]).await.is_err() {
                break; // pg_restore stopped: its status says why.
            }
        }
        Ok(())
    }
    .await;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let digest = hex::encode(tap.sha.take().expect("hashing").finalize());
    if digest != m.sha256 {
        return Err(format!(
            "backup {} is corrupted: its sha256 is {digest}, the manifest recorded {}",
            m.id, m.sha256
        ));
    }
    copied?;
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
        if !problems.is_empty() {
            return Err(format!("backup {} does not match what was recorded: {}", m.id, problems.join("; ")));
        }
        Ok(())
    }
    .await;
    let _ = crate::engine::postgres::execute(
        &mut c,
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg_ident(&scratch)),
    )
    .await;
    result?;
    put_json(
        storage,
        &[&m.policy, &m.database_name, &format!("{}.verified.json", m.id)],
        &serde_json::json!({ "id": m.id, "verified": now(), "tables": m.tables.len() }),
    )
    .await
}

/// Delete a backup: its object, manifest (first, so it stops being listed) and marker.
pub async fn delete(storage: &Storage, m: &Manifest) -> Result<(), String> {
    for name in [format!("{}.manifest.json", m.id), m.object.clone(), format!("{}.verified.json", m.id)] {
        match storage.store.delete(&storage.path(&[&m.policy, &m.database_name, &name])).await {
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
