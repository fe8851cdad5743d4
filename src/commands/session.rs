//! What plan, apply, destroy and import share: a loaded configuration, its
//! `.dbctl` directory, its servers, and making a plan from live state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Ctx, EXIT_ERROR};
use crate::diff::{diff, Inputs};
use crate::engine::LiveServer;
use crate::model::{Address, Body, Config};
use crate::plan::{Action, Plan, FORMAT_VERSION};
use crate::runtime::{self, Endpoint};
use crate::secrets::{SecretMeta, Stores};
use crate::state::{LocalState, State};

pub struct Session {
    pub config: Config,
    /// The configuration directory (published files are relative to it).
    pub config_dir: PathBuf,
    pub dbctl: PathBuf,
    pub endpoints: BTreeMap<Address, Endpoint>,
    pub state_store: LocalState,
    pub config_hash: String,
}

pub struct PlanOpts {
    pub destroy: bool,
    pub force: bool,
    pub refresh_only: bool,
    pub targets: Vec<String>,
}

pub fn err(msg: impl std::fmt::Display) -> u8 {
    eprintln!("Error: {msg}");
    EXIT_ERROR
}

pub fn open(ctx: &Ctx) -> Result<Session, u8> {
    let t = std::time::Instant::now();
    let loaded = ctx.load();
    tracing::debug!("configuration loaded in {} ms", t.elapsed().as_millis());
    let Some(config) = loaded.config else {
        eprintln!("Error: the configuration is invalid; nothing was run.");
        return Err(EXIT_ERROR);
    };
    if config.state.backend != "local" {
        return Err(err("the postgres state backend is not built yet; use the default local backend"));
    }
    let mut h = Sha256::new();
    for f in &loaded.files {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    for (k, v) in &loaded.variables {
        if !v.sensitive {
            h.update(k.as_bytes());
            h.update(v.value.to_string().as_bytes());
        }
    }
    let dbctl = runtime::dbctl_dir(&ctx.dir);
    let endpoints = runtime::endpoints(&config, &dbctl).map_err(err)?;
    Ok(Session {
        state_store: LocalState::new(&dbctl),
        config,
        config_dir: ctx.dir.clone(),
        dbctl,
        endpoints,
        config_hash: hex::encode(h.finalize()),
    })
}

/// A session and the state, for the commands that plan.
pub fn open_with_state(ctx: &Ctx) -> Result<(Session, State), u8> {
    let session = open(ctx)?;
    let state = session.state_store.load().map_err(err)?;
    Ok((session, state))
}

/// The addresses `--target` names, each checked against the configuration
/// and the state: an unknown address is an error (a typo must not plan "No
/// changes"), and `database.app` without a key names every instance of a
/// resource with `for_each`. A trailing `.grant` names a grant set.
fn resolve_targets(cfg: &Config, state: &State, targets: &[String]) -> Result<Vec<(Address, bool)>, String> {
    let known: BTreeSet<String> = cfg
        .resources
        .keys()
        .map(|a| a.to_string())
        .chain(state.resources.keys().map(|a| a.strip_suffix(".grant").unwrap_or(a).to_string()))
        .collect();
    let mut out = Vec::new();
    for t in targets {
        let (base, grant) = match t.strip_suffix(".grant") {
            Some(b) => (b, true),
            None => (t.as_str(), false),
        };
        let a = Address::parse(base).map_err(|e| format!("--target {e}"))?;
        if known.contains(&a.to_string()) {
            out.push((a, grant));
            continue;
        }
        let instances: Vec<Address> = if a.key.is_none() {
            known
                .iter()
                .filter_map(|k| Address::parse(k).ok())
                .filter(|k| k.kind == a.kind && k.name == a.name && k.key.is_some())
                .collect()
        } else {
            Vec::new()
        };
        if instances.is_empty() {
            let mut msg = format!("--target {t}: no resource in the configuration or the state has this address");
            if let Some(h) = crate::diag::did_you_mean(base, known.iter().map(String::as_str)) {
                msg.push_str(&format!("; {h}"));
            }
            return Err(msg);
        }
        out.extend(instances.into_iter().map(|i| (i, grant)));
    }
    Ok(out)
}

/// Addresses of the changes a targeted plan keeps. Planning: the targets and
/// everything they depend on. Destroying: the targets and everything that
/// depends on them (a router goes with its user, a grant set with the
/// database it grants on), never what they depend on (their server).
fn target_closure(cfg: &Config, targets: &[(Address, bool)], destroy: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<Address> = Vec::new();
    for (a, grant) in targets {
        if *grant {
            out.insert(format!("{a}.grant"));
            if !destroy {
                todo.extend(cfg.get(a).into_iter().flat_map(|r| r.refs.iter()).map(|x| x.to.clone()));
            }
        } else {
            todo.push(a.clone());
        }
    }
    let mut seen: BTreeSet<Address> = BTreeSet::new();
    // Who refers to whom, for walking towards dependents.
    let mut dependents: BTreeMap<&Address, Vec<(&Address, bool)>> = BTreeMap::new();
    if destroy {
        for r in cfg.resources.values() {
            for x in &r.refs {
                dependents.entry(&x.to).or_default().push((&r.addr, x.attr.starts_with("grant.")));
            }
        }
    }
    while let Some(a) = todo.pop() {
        if !seen.insert(a.clone()) {
            continue;
        }
        out.insert(a.to_string());
        out.insert(format!("{a}.grant"));
        if destroy {
            for (d, through_grant) in dependents.get(&a).into_iter().flatten() {
                if *through_grant {
                    out.insert(format!("{d}.grant"));
                } else {
                    todo.push((*d).clone());
                }
            }
        } else if let Some(r) = cfg.get(&a) {
            todo.extend(r.refs.iter().map(|x| x.to.clone()));
        }
    }
    out
}

/// A copy of the configuration in which only the resources a targeted plan
/// touches keep `prevent_destroy`: it guards what the plan would destroy or
/// replace, and must not refuse a plan for a resource it leaves alone.
fn guard_only(cfg: &Config, keep: &BTreeSet<String>) -> Config {
    let mut resources = cfg.resources.clone();
    for r in resources.values_mut() {
        if !keep.contains(&r.addr.to_string()) {
            r.lifecycle.prevent_destroy = false;
        }
    }
    Config { resources, aws: cfg.aws.clone(), state: cfg.state.clone() }
}

impl Session {
    /// Per backup policy: the newest complete backup of each database, or why
    /// its storage could not be read (a warning in the plan, not an error).
    pub async fn backup_status(&self) -> BTreeMap<Address, Result<BTreeMap<String, String>, String>> {
        let mut out = BTreeMap::new();
        for r in self.config.of_kind(crate::model::Kind::BackupPolicy) {
            let Body::BackupPolicy(bp) = &r.body else { continue };
            let status = async {
                let st = crate::backup::storage::Storage::open(&bp.storage, &self.config_dir, self.config.aws.as_ref())
                    .await?;
                let mut newest: BTreeMap<String, String> = BTreeMap::new();
                for m in crate::backup::list(&st).await?.into_iter().filter(|m| m.policy == r.addr.name) {
                    let e = newest.entry(m.database_name.clone()).or_default();
                    if m.finished > *e {
                        *e = m.finished;
                    }
                }
                Ok::<_, String>(newest)
            }
            .await;
            out.insert(r.addr.clone(), status);
        }
        out
    }

    pub async fn stores(&self) -> Result<Stores, u8> {
        Stores::open(&self.dbctl, self.config.aws.as_ref()).await.map_err(err)
    }

    /// What the stores hold for each configured secret (versions, dates; never shown).
    pub async fn secret_meta(&self, stores: &Stores) -> Result<BTreeMap<Address, SecretMeta>, u8> {
        let mut out = BTreeMap::new();
        for r in self.config.of_kind(crate::model::Kind::Secret) {
            let Body::Secret(s) = &r.body else { continue };
            if let Some(m) = stores.meta(s.store, &s.name).await.map_err(err)? {
                out.insert(r.addr.clone(), m);
            }
        }
        Ok(out)
    }

    pub async fn refresh(&self, state: &State) -> Result<BTreeMap<Address, LiveServer>, u8> {
        let scope = runtime::detail_scope(&self.config, state);
        let mut started = Vec::new();
        let t = std::time::Instant::now();
        let live = runtime::refresh(&self.endpoints, &scope, &mut started).await.map_err(err)?;
        tracing::debug!(
            "refresh: {} server(s), {} database(s) read inside, {} ms",
            live.len(),
            scope.values().map(|s| s.len()).sum::<usize>(),
            t.elapsed().as_millis()
        );
        for s in started {
            eprintln!("{s}");
        }
        Ok(live)
    }

    pub async fn plan(&self, state: &State, opts: &PlanOpts) -> Result<Plan, u8> {
        // Targets are checked before any server is reached.
        let keep = if opts.targets.is_empty() {
            None
        } else {
            let targets = resolve_targets(&self.config, state, &opts.targets).map_err(err)?;
            Some(target_closure(&self.config, &targets, opts.destroy))
        };
        let guarded = keep.as_ref().map(|k| guard_only(&self.config, k));
        let live = self.refresh(state).await?;
        let stores = self.stores().await?;
        let secrets = self.secret_meta(&stores).await?;
        let rds = runtime::rds_shapes(&self.config, &self.endpoints);
        let hosts: BTreeMap<Address, (String, u16)> =
            self.endpoints.iter().map(|(a, e)| (a.clone(), runtime::host_port(e))).collect();
        let published: BTreeMap<Address, Option<String>> = self
            .config
            .of_kind(crate::model::Kind::Router)
            .filter_map(|r| match &r.body {
                Body::Router(rt) => rt
                    .publish
                    .as_ref()
                    .and_then(|p| p.file.as_ref())
                    .map(|f| (r.addr.clone(), std::fs::read_to_string(self.config_dir.join(f)).ok())),
                _ => None,
            })
            .collect();
        let inputs = Inputs {
            config: guarded.as_ref().unwrap_or(&self.config),
            live: &live,
            state,
            secrets: &secrets,
            rds: &rds,
            now: time::OffsetDateTime::now_utc(),
            hosts: &hosts,
            published: &published,
            backups: &self.backup_status().await,
            destroy: opts.destroy,
            force: opts.force,
        };
        let t = std::time::Instant::now();
        let d = diff(&inputs);
        tracing::debug!("diff: {} ms", t.elapsed().as_millis());
        let d = d.map_err(|errors| {
            for e in &errors {
                eprintln!("Error: {e}");
            }
            EXIT_ERROR
        })?;
        let mut changes = d.changes;
        if let Some(keep) = &keep {
            changes.retain(|c| keep.contains(&c.address));
        }
        let created: BTreeSet<Address> = changes
            .iter()
            .filter(|c| c.kind == "database" && matches!(c.action, Action::Create | Action::Replace))
            .filter_map(|c| Address::parse(&c.address).ok())
            .collect();
        let planned = |a: &str| changes.iter().any(|c| c.address == a && c.action != Action::NoOp);
        let missing = crate::config::check::grants_on_missing_schemas(&self.config, &created, &planned);
        if !missing.is_empty() {
            eprint!("{}", crate::diag::render(&missing, false));
            return Err(EXIT_ERROR);
        }
        if opts.refresh_only {
            changes.clear();
        }
        Ok(Plan {
            format_version: FORMAT_VERSION.into(),
            config_hash: self.config_hash.clone(),
            state_lineage: state.lineage.clone(),
            state_serial: state.serial,
            fingerprints: d.fingerprints,
            drift: d.drift,
            changes,
            notes: d.notes,
            refresh_only: opts.refresh_only,
        })
    }
}

/// Build the async runtime for commands that talk to servers.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}
