use std::io::IsTerminal;

use serde_json::json;

use super::session::{block_on, err, open, Session};
use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::backup::storage::Storage;
use crate::backup::{self, Manifest};
use crate::cli::{BackupCommand, Format};
use crate::model::{Address, BackupPolicy, Body, Kind};

struct Policy<'a> {
    addr: Address,
    p: &'a BackupPolicy,
}

fn policies(s: &Session) -> Vec<Policy<'_>> {
    s.config
        .of_kind(Kind::BackupPolicy)
        .filter_map(|r| match &r.body {
            Body::BackupPolicy(p) => Some(Policy { addr: r.addr.clone(), p }),
            _ => None,
        })
        .collect()
}

async fn storage(s: &Session, url: &str) -> Result<Storage, String> {
    Storage::open(url, &s.config_dir, s.config.aws.as_ref()).await
}

fn mib(b: u64) -> f64 {
    b as f64 / 1024.0 / 1024.0
}

/// Every complete backup in every policy's storage.
async fn all_backups(s: &Session) -> Result<Vec<Manifest>, String> {
    let mut urls: Vec<&str> = policies(s).iter().map(|p| p.p.storage.as_str()).collect();
    urls.sort();
    urls.dedup();
    let mut out = Vec::new();
    for u in urls {
        out.extend(backup::list(&storage(s, u).await?).await?);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

async fn find(s: &Session, id: &str) -> Result<(Storage, Manifest), String> {
    let all = all_backups(s).await?;
    let m = all
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| format!("no complete backup with id {id} (see `dbctl backup list`)"))?;
    Ok((storage(s, &m.storage).await?, m))
}

fn endpoint<'a>(s: &'a Session, server: &str) -> Result<&'a crate::reach::Endpoint, String> {
    let a = Address::parse(server)?;
    let ep = s.endpoints.get(&a).ok_or_else(|| format!("{server} is not in the configuration"))?;
    if let Some(e) = &ep.embedded {
        e.start().map_err(|x| x.to_string())?;
    }
    Ok(ep)
}

async fn run_policies(
    s: &Session,
    only: Option<&str>,
    due: bool,
    database: Option<&str>,
    jobs: u32,
) -> Result<bool, String> {
    let mut ok = true;
    let mut matched = false;
    let terminal = std::io::stderr().is_terminal();
    for pol in policies(s) {
        if only.is_some_and(|o| o != pol.addr.name && o != pol.addr.to_string()) {
            continue;
        }
        matched = true;
        let st = storage(s, &pol.p.storage).await?;
        let existing = if due { backup::list(&st).await? } else { Vec::new() };
        for db_addr in &pol.p.databases {
            if database.is_some_and(|d| d != db_addr.to_string()) {
                continue;
            }
            let Some(r) = s.config.get(db_addr) else { continue };
            let (Some(name), Some(server)) = (r.object_name(), r.server()) else { continue };
            let ep = endpoint(s, &server.to_string())?;
            if due {
                let last = existing
                    .iter()
                    .filter(|m| m.policy == pol.addr.name && m.database_name == name)
                    .map(|m| m.finished.as_str())
                    .max();
                if !backup::due(&pol.p.schedule, last, chrono::Utc::now()) {
                    println!("{}: {db_addr}: not due (last backup {})", pol.addr, last.unwrap_or("never"));
                    continue;
                }
            }
            if jobs > 1 && !crate::engine::dialect::Dialect::of(ep.engine).parallel_dump() {
                eprintln!("{}: {db_addr}: --jobs applies to PostgreSQL; mariadb-dump runs as one job", pol.addr);
            }
            let job = backup::Job {
                jobs,
                policy: &pol.addr.name,
                database_addr: db_addr.to_string(),
                database: name.to_string(),
                compression: &pol.p.compression,
                endpoint: ep,
                storage: &st,
            };
            let t = std::time::Instant::now();
            let bar = terminal.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_message(format!("{db_addr}"));
                b
            });
            let progress = |dumped: u64, stored: u64| {
                if let Some(b) = &bar {
                    let secs = t.elapsed().as_secs_f64().max(0.001);
                    b.set_message(format!(
                        "{db_addr}: {:.1} MiB dumped, {:.1} MiB stored, {:.1} MiB/s",
                        mib(dumped),
                        mib(stored),
                        mib(dumped) / secs
                    ));
                    b.tick();
                }
            };
            let result = backup::run(&job, &progress).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Ok(m) => {
                    let secs = t.elapsed().as_secs_f64();
                    println!(
                        "{}: {db_addr} -> {} ({:.1} MiB dumped, {:.1} MiB stored, {} tables, {:.1} s, {:.1} MiB/s)",
                        pol.addr,
                        m.id,
                        mib(m.size),
                        mib(m.compressed_size),
                        m.tables.len(),
                        secs,
                        mib(m.size) / secs.max(0.001)
                    );
                    if pol.p.verify {
                        match backup::verify(&st, &m, ep).await {
                            Ok(()) => println!("{}: {} verified by a restore", pol.addr, m.id),
                            Err(e) => {
                                eprintln!("Error: {}: {e}", pol.addr);
                                ok = false;
                            }
                        }
                    }
                }
                Err(e) => {
                    eprintln!("Error: {}: {db_addr}: {e}", pol.addr);
                    ok = false;
                }
            }
        }
    }
    if let (Some(o), false) = (only, matched) {
        return Err(format!("no backup_policy named {o}"));
    }
    Ok(ok)
}

async fn prune(s: &Session, dry_run: bool) -> Result<(), String> {
    for pol in policies(s) {
        let st = storage(s, &pol.p.storage).await?;
        let mine: Vec<Manifest> = backup::list(&st).await?.into_iter().filter(|m| m.policy == pol.addr.name).collect();
        let mut by_db: std::collections::BTreeMap<&str, Vec<&Manifest>> = Default::default();
        for m in &mine {
            by_db.entry(m.database_name.as_str()).or_default().push(m);
        }
        for (db, ms) in by_db {
            let times: Vec<(chrono::DateTime<chrono::Utc>, bool)> = ms
                .iter()
                .map(|m| {
                    let t = chrono::DateTime::parse_from_rfc3339(&m.finished)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .unwrap_or_default();
                    (t, m.verified)
                })
                .collect();
            let keep = backup::keep::keep(&times, &pol.p.keep);
            for (i, m) in ms.iter().enumerate() {
                if keep.contains(&i) {
                    continue;
                }
                if dry_run {
                    println!("would delete {} ({}, {db})", m.id, pol.addr);
                } else {
                    backup::delete(&st, m).await?;
                    println!("deleted {} ({}, {db})", m.id, pol.addr);
                }
            }
            println!("{}: {db}: keeping {} of {} backups", pol.addr, keep.len(), ms.len());
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, cmd: &BackupCommand) -> u8 {
    let s = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let result: Result<u8, String> = block_on(async {
        match cmd {
            BackupCommand::Run { policy, due, database, jobs } => {
                Ok(if run_policies(&s, policy.as_deref(), *due, database.as_deref(), *jobs).await? {
                    EXIT_OK
                } else {
                    EXIT_ERROR
                })
            }
            BackupCommand::List { format } => {
                let all = all_backups(&s).await?;
                if *format == Format::Json {
                    let v: Vec<_> = all
                        .iter()
                        .map(|m| {
                            let mut v = serde_json::to_value(m).expect("json");
                            v["verified"] = json!(m.verified);
                            v["storage"] = json!(m.storage);
                            v
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                } else if all.is_empty() {
                    println!("No backups yet: `dbctl backup run` takes them.");
                } else {
                    println!(
                        "{:<30} {:<16} {:<20} {:<22} {:>10} {:>10} verified",
                        "ID", "POLICY", "DATABASE", "FINISHED", "MiB", "STORED"
                    );
                    for m in &all {
                        println!(
                            "{:<30} {:<16} {:<20} {:<22} {:>10.1} {:>10.1} {}",
                            m.id,
                            m.policy,
                            m.database_name,
                            m.finished,
                            mib(m.size),
                            mib(m.compressed_size),
                            if m.verified { "yes" } else { "no" }
                        );
                    }
                }
                Ok(EXIT_OK)
            }
            BackupCommand::Restore { id, to, replace } => {
                let (st, m) = find(&s, id).await?;
                backup::restore(&st, &m, endpoint(&s, &m.server)?, to, *replace).await?;
                println!("Restored {id} ({} of {}) into database \"{to}\".", m.database, m.finished);
                Ok(EXIT_OK)
            }
            BackupCommand::Verify { id } => {
                let (st, m) = find(&s, id).await?;
                backup::verify(&st, &m, endpoint(&s, &m.server)?).await?;
                println!("Backup {id} is good: restored into a scratch database, {} tables match their recorded rows and checksums.", m.tables.len());
                Ok(EXIT_OK)
            }
            BackupCommand::Prune { dry_run } => {
                prune(&s, *dry_run).await?;
                Ok(EXIT_OK)
            }
        }
    });
    match result {
        Ok(rc) => rc,
        Err(e) => err(e),
    }
}
