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
    /// Variable values as loaded: the non-sensitive ones are recorded in a
    /// saved plan, the sensitive ones only as a salted digest.
    pub variables: indexmap::IndexMap<String, crate::config::VarInfo>,
}

#[derive(Default)]
pub struct PlanOpts {
    pub destroy: bool,
    pub force: bool,
    pub refresh_only: bool,
    pub targets: Vec<String>,
    /// `--replace ADDR`: secrets to give a new value.
    pub replace: Vec<String>,
}

pub fn err(msg: impl std::fmt::Display) -> u8 {
    super::report::error(&msg);
    eprintln!("Error: {msg}");
    EXIT_ERROR
}

pub fn open(ctx: &Ctx) -> Result<Session, u8> {
    open_with(ctx, Default::default())
}

/// A session whose variables default to `preset` (a saved plan's values).
pub fn open_with(ctx: &Ctx, preset: indexmap::IndexMap<String, hcl::Value>) -> Result<Session, u8> {
    let t = std::time::Instant::now();
    let loaded = ctx.load_with(crate::config::LoadOptions { preset, ..ctx.load_options() });
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
        variables: loaded.variables,
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
        // Every secret that cannot be used is named, not only the first.
        let mut failed = None;
        for r in self.config.of_kind(crate::model::Kind::Secret) {
            let Body::Secret(s) = &r.body else { continue };
            match stores.meta(s.store, &s.name).await {
                Ok(Some(m)) => {
                    out.insert(r.addr.clone(), m);
                }
                Ok(None) => {}
                Err(e @ crate::secrets::StoreError::Foreign { .. }) => failed = Some(err(e.for_secret(&r.addr))),
                Err(e) => return Err(err(e)),
            }
        }
        match failed {
            Some(rc) => Err(rc),
            None => Ok(out),
        }
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

    /// A warning for each server outside this machine whose connection
    /// ended up unencrypted (no TLS): said in every plan and apply.
    pub fn plaintext_warnings(&self, live: &BTreeMap<Address, LiveServer>) -> Vec<String> {
        let mut out = Vec::new();
        for (addr, l) in live {
            let Some(ep) = self.endpoints.get(addr) else { continue };
            if l.encrypted != Some(false) || ep.embedded.is_some() {
                continue;
            }
            let (host, port) = runtime::host_port(ep);
            if !crate::engine::tls::is_loopback(&host) {
                out.push(crate::engine::tls::plaintext_warning(
                    &addr.to_string(),
                    &ep.url,
                    &host,
                    port,
                    ep.engine == crate::model::Engine::Mysql,
                ));
            }
        }
        out
    }

    /// Before reading a server on which an interrupted apply left intents:
    /// let a create still running for that apply (its statement outlives the
    /// killed client) finish, so the plan sees the object it leaves.
    async fn settle_intents(&self, state: &State) {
        let servers: BTreeSet<&str> =
            state.resources.values().filter(|r| r.pending).filter_map(|r| r.server.as_deref()).collect();
        for s in servers {
            let Some(ep) = Address::parse(s).ok().and_then(|a| self.endpoints.get(&a)) else { continue };
            if ep.engine != crate::model::Engine::Postgres {
                continue;
            }
            let Ok(mut conn) = crate::engine::postgres::connect(s, &ep.url, None).await else { continue };
            let limit = std::time::Duration::from_secs(30);
            if let Ok(n) = crate::engine::postgres::wait_for_creates(&mut conn, limit).await {
                if n > 0 {
                    tracing::warn!("{s}: {n} create statement(s) of another dbctl session still running after 30 s");
                }
            }
            let _ = sqlx::Connection::close(conn).await;
        }
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
        self.settle_intents(state).await;
        let live = self.refresh(state).await?;
        let tls_warnings = self.plaintext_warnings(&live);
        let (adopted, view) = resolve_intents(state, &live);
        let state = view.as_ref().unwrap_or(state);
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
        let replace = crate::diff::secret::replace_set(&self.config, &opts.replace).map_err(err)?;
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
            migrations: &self.migration_status(Some(&live)).await,
            destroy: opts.destroy,
            force: opts.force,
            replace: &replace,
        };
        let t = std::time::Instant::now();
        let d = diff(&inputs);
        tracing::debug!("diff: {} ms", t.elapsed().as_millis());
        let d = d.map_err(|errors| {
            for e in &errors {
                super::report::error(e);
                eprintln!("Error: {e}");
            }
            EXIT_ERROR
        })?;
        let mut changes = d.changes;
        for c in changes.iter_mut().filter(|c| adopted.contains(&c.address)) {
            // The object is on the server and the state must learn it: a change, if only to the state.
            if c.action == crate::plan::Action::NoOp {
                c.action = crate::plan::Action::Update;
            }
            c.notes.push(
                "adopted: an interrupted apply created it and stopped before recording it; dbctl manages it now".into(),
            );
        }
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
            super::report::diags(&missing);
            eprint!("{}", crate::diag::render(&missing, false));
            return Err(EXIT_ERROR);
        }
        if opts.refresh_only {
            changes.clear();
        }
        runtime::mark_data_loss(&self.endpoints, &mut changes).await;
        Ok(Plan {
            format_version: FORMAT_VERSION.into(),
            config_hash: self.config_hash.clone(),
            state_lineage: state.lineage.clone(),
            state_serial: state.serial,
            fingerprints: d.fingerprints,
            drift: d.drift,
            changes,
            notes: tls_warnings.into_iter().chain(d.notes).collect(),
            refresh_only: opts.refresh_only,
            targets: opts.targets.clone(),
            replace: opts.replace.clone(),
            variables: self
                .variables
                .iter()
                .filter(|(_, v)| !v.sensitive && !v.unset)
                .map(|(k, v)| (k.clone(), serde_json::to_value(&v.value).unwrap_or_default()))
                .collect(),
            ..Default::default()
        })
    }

    /// Seal a plan for `--out`: digests of the sensitive variables, then of the whole plan.
    pub fn seal(&self, plan: &mut Plan) {
        plan.sensitive_variables = self
            .variables
            .iter()
            .filter(|(_, v)| v.sensitive && !v.unset)
            .map(|(k, v)| (k.clone(), crate::plan::sensitive_digest(&var_text(&v.value), None)))
            .collect();
        plan.seal();
    }

    /// Check the variables this session loaded against a saved plan's.
    pub fn check_variables(&self, plan: &Plan) -> Result<(), String> {
        for (name, v) in &self.variables {
            if v.unset {
                continue;
            }
            if v.sensitive {
                match plan.sensitive_variables.get(name) {
                    Some(d) if crate::plan::sensitive_matches(&var_text(&v.value), d) => {}
                    Some(_) => {
                        return Err(format!(
                            "the sensitive variable \"{name}\" has a different value than when the plan was made"
                        ))
                    }
                    None => {
                        return Err(format!("the sensitive variable \"{name}\" had no value when the plan was made"))
                    }
                }
            } else if plan.variables.get(name) != Some(&serde_json::to_value(&v.value).unwrap_or_default()) {
                return Err(format!("the variable \"{name}\" has a different value than when the plan was made"));
            }
        }
        for name in plan.sensitive_variables.keys() {
            if self.variables.get(name).is_none_or(|v| v.unset) {
                return Err(format!(
                    "the sensitive variable \"{name}\" is not stored in the plan: give it again \
                     (--var {name}=..., --var-file, or DBCTL_VAR_{name})"
                ));
            }
        }
        Ok(())
    }
}

/// A variable's value as text, for its digest.
fn var_text(v: &hcl::Value) -> String {
    match v {
        hcl::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Intents left by an interrupted apply (`StateResource::pending`), resolved
/// against what the servers hold: an object that exists is dbctl's own and is
/// adopted (its recorded attributes unknown, so nothing reads as drift); one
/// that does not exist was never created and is forgotten. Returns the
/// adopted addresses, and the state the diff should see when any intent was
/// found.
fn resolve_intents(state: &State, live: &BTreeMap<Address, LiveServer>) -> (BTreeSet<String>, Option<State>) {
    if !state.resources.values().any(|r| r.pending) {
        return (BTreeSet::new(), None);
    }
    let mut view = state.clone();
    let mut adopted = BTreeSet::new();
    view.resources.retain(|addr, r| {
        if !r.pending {
            return true;
        }
        let server = r.server.as_deref().and_then(|s| Address::parse(s).ok());
        let l = server.as_ref().and_then(|s| live.get(s));
        let exists = l.is_some_and(|l| match r.kind.as_str() {
            "database" => l.databases.contains_key(&r.name),
            _ => l.roles.contains_key(&r.name),
        });
        if exists {
            if let Some(o) = r.attributes.as_object_mut() {
                o.values_mut().for_each(|v| *v = serde_json::Value::Null);
            }
            adopted.insert(addr.clone());
        }
        exists
    });
    (adopted, Some(view))
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
