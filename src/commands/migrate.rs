//! `dbctl migrate new|lint|status`, and what a plan reads of each
//! `migrations` block: its files, its lint, and its database's tracking table.

use std::collections::BTreeMap;

use serde_json::json;

use super::session::{block_on, err, open, Session};
use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::MigrateCommand;
use crate::engine::LiveServer;
use crate::migrate::{self, lint, File, Status};
use crate::model::{Address, Body, Config, EngineKind, Migrations};

fn block<'c>(cfg: &'c Config, addr: &Address) -> Option<(&'c Migrations, String, Address)> {
    let Body::Migrations(m) = &cfg.get(addr)?.body else { return None };
    let Body::Database(d) = &cfg.get(&m.database)?.body else { return None };
    Some((m, d.name.clone(), d.server.clone()))
}

/// Lint every up file of a block (PostgreSQL's grammar; MySQL files are not linted).
pub fn lint_files(files: &[File]) -> Vec<lint::Finding> {
    files.iter().flat_map(|f| lint::lint(&f.up_path, &f.up_sql, !f.no_transaction)).collect()
}

impl Session {
    /// Per `migrations` block: files, lint and the tracking table (one query
    /// per database; a database that does not exist yet has nothing applied).
    pub async fn migration_status(
        &self,
        live: Option<&BTreeMap<Address, LiveServer>>,
    ) -> BTreeMap<Address, Result<Status, Vec<String>>> {
        let mut out = BTreeMap::new();
        for r in self.config.of_kind(crate::model::Kind::Migrations) {
            let t = std::time::Instant::now();
            let Some((m, database, server)) = block(&self.config, &r.addr) else { continue };
            let files = match migrate::scan(&self.config_dir.join(&m.dir), &m.dir) {
                Ok(f) => f,
                Err(e) => {
                    out.insert(r.addr.clone(), Err(e));
                    continue;
                }
            };
            tracing::debug!("{}: {} file(s) read in {} ms", r.addr, files.len(), t.elapsed().as_millis());
            let Some(ep) = self.endpoints.get(&server) else { continue };
            let exists = live.map(|l| l.get(&server).is_some_and(|s| s.databases.contains_key(&database)));
            let applied = match exists {
                Some(false) => Ok(Vec::new()),
                _ => crate::engine::of(ep.engine).applied_migrations(ep, &database).await,
            };
            tracing::debug!("{}: tracking table read after {} ms", r.addr, t.elapsed().as_millis());
            let applied = match applied {
                Ok(a) => a,
                Err(e) => {
                    out.insert(r.addr.clone(), Err(vec![format!("{}: cannot read {}: {e}", r.addr, migrate::TABLE)]));
                    continue;
                }
            };
            let pending = migrate::pending(&files, &applied, m.out_of_order, &m.dir)
                .map(|p| p.into_iter().map(migrate::MigrationStep::from).collect::<Vec<_>>());
            // The plan lints what it would run: an applied file cannot change any more.
            let findings = match &pending {
                Ok(p) if m.lint != "off" && crate::engine::dialect::Dialect::of(ep.engine).checks_migrations() => {
                    let todo: Vec<File> =
                        files.iter().filter(|f| p.iter().any(|x| x.version == f.version)).cloned().collect();
                    lint_files(&todo)
                }
                _ => Vec::new(),
            };
            out.insert(
                r.addr.clone(),
                Ok(Status { database, server, engine: ep.engine, files, applied, pending, findings }),
            );
        }
        out
    }
}

pub fn run(ctx: &Ctx, cmd: &MigrateCommand) -> u8 {
    match cmd {
        MigrateCommand::New { name, block: which } => new(ctx, name, which.as_deref()),
        MigrateCommand::Lint => lint_cmd(ctx),
        MigrateCommand::Status { format } => status(ctx, format),
        MigrateCommand::Test => test_cmd(ctx),
    }
}

fn new(ctx: &Ctx, name: &str, which: Option<&str>) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return err(format!("\"{name}\" is not a migration name; use letters, digits and _"));
    }
    let blocks: Vec<_> = session
        .config
        .of_kind(crate::model::Kind::Migrations)
        .filter(|r| which.is_none_or(|w| r.addr.to_string() == w || r.addr.name == w))
        .collect();
    let r = match blocks.as_slice() {
        [r] => r,
        [] => return err("no migrations block matches; add migrations \"NAME\" { database = …, dir = … }"),
        _ => return err("several migrations blocks: name one with --block migrations.NAME"),
    };
    let Body::Migrations(m) = &r.body else { return EXIT_ERROR };
    let dir = session.config_dir.join(&m.dir);
    let files = match migrate::scan(&dir, &m.dir) {
        Ok(f) => f,
        Err(e) => return err(e.join("\n")),
    };
    let next = files.last().map_or(1, |f| f.version + 1);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return err(format!("cannot create {}: {e}", m.dir));
    }
    for (suffix, text) in [("up", "-- The change.\n"), ("down", "-- What undoes the up file exactly.\n")] {
        let f = format!("{next:04}_{name}.{suffix}.sql");
        if let Err(e) = std::fs::write(dir.join(&f), text) {
            return err(format!("cannot write {}/{f}: {e}", m.dir));
        }
        println!("{}/{f}", m.dir.trim_end_matches('/'));
    }
    EXIT_OK
}

fn lint_cmd(ctx: &Ctx) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let mut errors = 0;
    let mut total = 0;
    let mut files = 0;
    for r in session.config.of_kind(crate::model::Kind::Migrations) {
        let Body::Migrations(m) = &r.body else { continue };
        let scanned = match migrate::scan(&session.config_dir.join(&m.dir), &m.dir) {
            Ok(f) => f,
            Err(e) => {
                for x in e {
                    eprintln!("Error: {x}");
                }
                errors += 1;
                continue;
            }
        };
        files += scanned.len();
        let severity = if m.lint == "error" { "error" } else { "warning" };
        for f in lint_files(&scanned) {
            total += 1;
            if m.lint == "error" {
                errors += 1;
            }
            print!("{}", f.render(severity));
        }
    }
    println!("{files} file(s) checked, {total} finding(s)");
    if errors > 0 {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// The JSON of `migrate status --format json` (documented in docs/migrations.md).
pub fn status_json(all: &BTreeMap<Address, Result<Status, Vec<String>>>) -> serde_json::Value {
    let mut blocks = Vec::new();
    for (addr, st) in all {
        blocks.push(match st {
            Err(e) => json!({ "address": addr.to_string(), "errors": e }),
            Ok(s) => {
                let pending: Vec<i64> = match &s.pending {
                    Ok(p) => p.iter().map(|m| m.version).collect(),
                    Err(_) => Vec::new(),
                };
                json!({
                    "address": addr.to_string(),
                    "server": s.server.to_string(),
                    "database": s.database,
                    "applied": s.applied.iter().map(|a| json!({
                        "version": a.version,
                        "name": a.name,
                        "checksum": a.checksum,
                        "applied_at": a.applied_at,
                        "duration_ms": a.duration_ns as f64 / 1e6,
                    })).collect::<Vec<_>>(),
                    "pending": s.files.iter().filter(|f| pending.contains(&f.version)).map(|f| json!({
                        "version": f.version,
                        "name": f.name,
                        "file": f.up_path,
                        "checksum": f.checksum,
                        "transaction": !f.no_transaction,
                        "down": f.down_path,
                    })).collect::<Vec<_>>(),
                    "errors": s.pending.as_ref().err().cloned().unwrap_or_default(),
                })
            }
        });
    }
    json!({ "format_version": "1.0", "migrations": blocks })
}

fn status(ctx: &Ctx, format: &str) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let all = block_on(session.migration_status(None));
    let failed = all.values().any(|s| s.as_ref().map_or(true, |s| s.pending.is_err()));
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&status_json(&all)).expect("serialises"));
    } else if all.is_empty() {
        println!("No migrations block in the configuration.");
    } else {
        for (addr, st) in &all {
            match st {
                Err(e) => {
                    println!("{addr}:");
                    for x in e {
                        println!("  error: {x}");
                    }
                }
                Ok(s) => {
                    println!("{addr} (database \"{}\" on {}):", s.database, s.server);
                    for a in &s.applied {
                        println!(
                            "  applied  {:04}_{}  {}  {:.1} ms  sha384:{}…",
                            a.version,
                            a.name,
                            a.applied_at,
                            a.duration_ns as f64 / 1e6,
                            &a.checksum[..a.checksum.len().min(12)]
                        );
                    }
                    match &s.pending {
                        Ok(p) => {
                            for m in p {
                                println!("  pending  {:04}_{}  {}", m.version, m.name, m.file);
                            }
                            if p.is_empty() {
                                println!("  up to date");
                            }
                        }
                        Err(e) => {
                            for x in e {
                                println!("  error: {x}");
                            }
                        }
                    }
                }
            }
        }
    }
    if failed {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// `dbctl migrate test`: every block's migrations on a throwaway embedded
/// PostgreSQL: all of them from empty, and for each with a down file, up
/// then down must leave the schema as it was (pg_dump --schema-only), then
/// up again.
fn test_cmd(ctx: &Ctx) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let mut blocks = Vec::new();
    for r in session.config.of_kind(crate::model::Kind::Migrations) {
        let Some((m, database, server)) = block(&session.config, &r.addr) else { continue };
        if session
            .endpoints
            .get(&server)
            .is_some_and(|e| !crate::engine::dialect::Dialect::of(e.engine).checks_migrations())
        {
            println!("skip {}: migrate test runs PostgreSQL migrations only", r.addr);
            continue;
        }
        match migrate::scan(&session.config_dir.join(&m.dir), &m.dir) {
            Ok(f) => blocks.push((r.addr.clone(), database, f)),
            Err(e) => return err(e.join("\n")),
        }
    }
    let scratch = session.dbctl.join("migrate-test");
    let name = format!("t{}", std::process::id());
    let e = match crate::engine::embedded::Embedded::new(&scratch, &name, None) {
        Ok(e) => e,
        Err(x) => return err(x),
    };
    let started = e.init().and_then(|_| e.start());
    let result = match started {
        Err(x) => Err(x.to_string()),
        Ok(()) => {
            let ep = crate::reach::Endpoint {
                address: Address::parse("server.migrate_test").expect("address"),
                engine: EngineKind::Postgres,
                url: e.url(),
                embedded: None,
                user_hosts: Default::default(),
                advertised: None,
                pending_admin: None,
            };
            block_on(run_tests(&ep, &blocks))
        }
    };
    let _ = e.purge();
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(0) => {
            println!("migrate test: every migration applies from empty, and every down file undoes its up");
            EXIT_OK
        }
        Ok(n) => {
            println!("migrate test: {n} failure(s)");
            EXIT_ERROR
        }
        Err(x) => err(format!("the throwaway server could not run: {x}")),
    }
}

async fn run_tests(ep: &crate::reach::Endpoint, blocks: &[(Address, String, Vec<File>)]) -> Result<usize, String> {
    use crate::engine::postgres;
    let mut failures = 0;
    for (addr, database, files) in blocks {
        let mut admin = postgres::connect("server.migrate_test", &ep.url, None).await.map_err(|e| e.to_string())?;
        postgres::execute(&mut admin, format!("CREATE DATABASE {}", crate::engine::sql::pg_ident(database)))
            .await
            .map_err(|e| e.to_string())?;
        let _ = sqlx::Connection::close(admin).await;
        let mut c =
            postgres::connect("server.migrate_test", &ep.url, Some(database)).await.map_err(|e| e.to_string())?;
        println!("{addr} (database \"{database}\"):");
        for f in files {
            let step = migrate::MigrationStep::from(f);
            let label = f.label();
            let Some(down) = &f.down_sql else {
                match crate::engine::postgres::migrate::run(&mut c, &step).await {
                    Ok(_) => println!("  ok    {label}  up (no down file)"),
                    Err(e) => {
                        println!("  FAIL  {label}  up: {e}");
                        failures += 1;
                        break;
                    }
                }
                continue;
            };
            let before = schema(ep, database).await?;
            if let Err(e) = crate::engine::postgres::migrate::run(&mut c, &step).await {
                println!("  FAIL  {label}  up: {e}");
                failures += 1;
                break;
            }
            let down_step = migrate::MigrationStep {
                file: f.down_path.clone().unwrap_or_default(),
                sql: down.clone(),
                no_transaction: true,
                ..step.clone()
            };
            if let Err(e) = run_down(&mut c, &down_step, migrate::is_no_transaction(down)).await {
                println!("  FAIL  {label}  down: {e}");
                failures += 1;
                break;
            }
            let after = schema(ep, database).await?;
            if after != before {
                println!(
                    "  FAIL  {label}  {} does not undo its up file; the schema differs (- before the up file, + after the down file):",
                    f.down_path.as_deref().unwrap_or("")
                );
                let d = similar::TextDiff::from_lines(&before, &after);
                for ch in d.iter_all_changes().filter(|c| c.tag() != similar::ChangeTag::Equal).take(20) {
                    let sign = if ch.tag() == similar::ChangeTag::Delete { "-" } else { "+" };
                    print!("          {sign} {}", ch.value());
                }
                failures += 1;
                break;
            }
            if let Err(e) = crate::engine::postgres::migrate::run(&mut c, &step).await {
                println!("  FAIL  {label}  up again after down: {e}");
                failures += 1;
                break;
            }
            println!("  ok    {label}  up, down (schema as before), up");
        }
        let _ = sqlx::Connection::close(c).await;
    }
    Ok(failures)
}

/// A down file: its statements, and its version's row deleted, in one
/// transaction unless it opts out.
async fn run_down(c: &mut sqlx::PgConnection, m: &migrate::MigrationStep, no_tx: bool) -> Result<(), String> {
    use crate::engine::postgres::execute;
    let forget = format!("DELETE FROM {} WHERE version = {}", migrate::TABLE, m.version);
    if no_tx {
        for (_, s) in migrate::split::statements(&m.sql) {
            execute(c, s.to_string()).await.map_err(|e| format!("{}: {e}", m.file))?;
        }
        return execute(c, forget).await.map_err(|e| e.to_string());
    }
    let ran = execute(c, format!("BEGIN;\n{}\n;{forget};\nCOMMIT", m.sql)).await;
    if let Err(e) = ran {
        let _ = execute(c, "ROLLBACK".into()).await;
        return Err(format!("{}: {e}", m.file));
    }
    Ok(())
}

/// The database's schema as `pg_dump --schema-only` writes it, without the tracking table.
async fn schema(ep: &crate::reach::Endpoint, database: &str) -> Result<String, String> {
    let bindir = crate::engine::embedded::find_bindir().map_err(|e| e.to_string())?;
    let out = tokio::process::Command::new(bindir.join("pg_dump"))
        .args(["--schema-only", "--no-owner", "--no-privileges", "--exclude-table", migrate::TABLE])
        .envs(crate::backup::pg_env(ep, database))
        .output()
        .await
        .map_err(|e| format!("pg_dump: {e}"))?;
    if !out.status.success() {
        return Err(format!("pg_dump: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // Lines that name the dump's own run (version banners, restrict keys) are not schema.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("-- Dumped") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect())
}
