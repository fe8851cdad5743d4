//! The one home of plan, apply, destroy and import orchestration: a loaded
//! configuration, its `.dbctl` directory and state, the servers reached
//! (`reach`), the refresh, the diff, and the process's one async runtime
//! (`block_on`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Ctx, EXIT_ERROR};
use crate::diff::{diff_prepared, Inputs};
use crate::engine::LiveServer;
use crate::model::{Address, Body, Config, Node};
use crate::plan::{Action, Plan, FORMAT_VERSION};
use crate::reach::{self, Endpoint};
use crate::secrets::{SecretMeta, Stores};
use crate::state::{State, StateBackend};

pub struct Session {
    pub config: Config,
    /// The configuration directory (published files are relative to it).
    pub config_dir: PathBuf,
    pub dbctl: PathBuf,
    pub endpoints: BTreeMap<Address, Endpoint>,
    pub state_store: std::sync::Arc<dyn StateBackend>,
    /// The configuration's files as loaded (see `config_hash`).
    files: Vec<std::sync::Arc<crate::diag::SourceFile>>,
    config_hash: std::sync::OnceLock<String>,
    /// Variable values as loaded: the non-sensitive ones are recorded in a
    /// saved plan, the sensitive ones only as a salted digest.
    pub variables: indexmap::IndexMap<String, crate::config::VarInfo>,
    /// RDS clusters as AWS describes them (by identifier): those the
    /// configuration or the state names, and those tagged `managed-by = dbctl`.
    pub clusters: BTreeMap<String, crate::rds::LiveCluster>,
    /// The state as read while opening (to find recorded clusters): the
    /// commands that plan take it rather than parse it a second time. Its
    /// recorded live state is read only for a session that does not connect.
    recorded: Option<State>,
    /// The servers' read started while the configuration loaded (see
    /// `reach::early_read`): taken by the first refresh that can use it.
    early: std::sync::Mutex<Option<EarlyRead>>,
}

/// A read of the servers running since the configuration's servers were known.
struct EarlyRead {
    endpoints: BTreeMap<Address, Endpoint>,
    task: tokio::task::JoinHandle<Result<(BTreeMap<Address, LiveServer>, Vec<String>), crate::engine::EngineError>>,
}

#[derive(Default)]
pub struct PlanOpts {
    pub destroy: bool,
    pub force: bool,
    pub refresh_only: bool,
    /// `--refresh=false`: plan against the live state the last apply recorded.
    pub no_refresh: bool,
    pub targets: Vec<String>,
    /// `--replace ADDR`: secrets to give a new value.
    pub replace: Vec<String>,
    /// The plan is only shown to a reader (as text or markdown): never saved,
    /// applied or printed as JSON. What only those read is left out: the
    /// live objects' fingerprints, and the before and after values of the
    /// grant sets it leaves alone (see `diff::diff_with`).
    pub shown_only: bool,
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
    open_opts(ctx, preset, true, false)
}

/// `connect`: false for a plan that reaches no server (`--refresh=false`):
/// no admin password is read from its store. `read_early`: the session
/// will refresh (it plans), so the servers' read starts as soon as the
/// servers are decoded, while the other blocks are.
fn open_opts(
    ctx: &Ctx,
    preset: indexmap::IndexMap<String, hcl::Value>,
    connect: bool,
    read_early: bool,
) -> Result<Session, u8> {
    let dbctl = reach::dbctl_dir(&ctx.dir);
    // A local state is read and parsed on another core (it takes tens of
    // milliseconds at thousands of resources); it is used once the
    // configuration says the state is local. Without the live state the
    // last apply recorded, unless the plan compares with it
    // (`--refresh=false`, which connects to no server): a session that
    // connects reads the servers themselves, and the commands that change
    // the state load it again under its lock.
    //
    // When the servers' read starts while the configuration loads, the
    // state is parsed after the load, beside that read: parsed during the
    // load, it took the core that the load's second thread and the server's
    // query needed. Otherwise it is parsed beside the load.
    let start_state = || {
        let local = crate::state::LocalState::new(&dbctl);
        local
            .exists()
            .then(|| std::thread::spawn(move || if connect { local.load_without_live() } else { local.load() }))
    };
    let reads_early = connect && read_early;
    let mut early_state = (!reads_early).then(start_state);
    let t = std::time::Instant::now();
    let mut early = None;
    let loaded = ctx.load_seeing_servers(crate::config::LoadOptions { preset, ..ctx.load_options() }, &mut |servers| {
        if reads_early {
            early = reach::early_read(servers, &dbctl)
                .map(|(endpoints, read)| EarlyRead { endpoints, task: runtime().spawn(read) });
            if early.is_none() {
                early_state = Some(start_state());
            }
        }
    });
    let early_state = early_state.unwrap_or_else(start_state);
    tracing::debug!("configuration loaded in {} ms", t.elapsed().as_millis());
    let Some(config) = loaded.config else {
        eprintln!("Error: the configuration is invalid; nothing was run.");
        return Err(EXIT_ERROR);
    };
    // The secret stores are opened only when some server reads its admin password from one.
    let admin = if connect && reach::needs_admin_creds(&config) {
        block_on(reach::admin_creds(&config, &dbctl)).map_err(err)?
    } else {
        BTreeMap::new()
    };
    let mut admin = admin;
    let state_store = crate::state::open_backend(&config.state, &dbctl).map_err(err)?;
    // Clusters the configuration or the state names: the state is read only when there may be some.
    let clusters_anywhere =
        config.of_kind(crate::model::Kind::RdsCluster).next().is_some() || state_store.exists().unwrap_or(false);
    let loaded_state = match early_state {
        Some(early) if config.state.backend == "local" => early.join().ok().and_then(Result::ok),
        _ if clusters_anywhere => state_store.load().ok(),
        _ => None,
    };
    // A state that cannot be read is reported by the commands that need it.
    let empty = State::new();
    let recorded = loaded_state.as_ref().unwrap_or(&empty);
    // RDS clusters are read from the AWS API even for a plan that does not
    // connect to the servers: without them it would plan to create them.
    let (clusters, by_addr) = block_on(read_clusters(&config, &dbctl, recorded, &mut admin)).map_err(err)?;
    let endpoints = if connect {
        reach::endpoints(&config, &dbctl, &admin, &by_addr).map_err(err)?
    } else {
        // Never dialled: the endpoints name the servers (their host and
        // port, in what the plan shows), without their admin passwords.
        let mut unread = Config {
            resources: config.resources.clone(),
            aws: config.aws.clone(),
            state: config.state.clone(),
            order: Vec::new(),
        };
        for r in unread.resources.values_mut() {
            if let Body::Server(s) = &mut r.body {
                s.admin_password = None;
                s.admin_master_secret = None;
            }
        }
        reach::endpoints(&unread, &dbctl, &admin, &by_addr).map_err(err)?
    };
    Ok(Session {
        clusters,
        state_store,
        config,
        config_dir: ctx.dir.clone(),
        dbctl,
        endpoints,
        files: loaded.files,
        config_hash: std::sync::OnceLock::new(),
        variables: loaded.variables,
        recorded: loaded_state,
        early: std::sync::Mutex::new(early),
    })
}

/// The RDS clusters the configuration or the state names (one batched read),
/// and the master credentials of each server on a cluster that exists
/// (added to `admin`). Nothing is asked of AWS without an rds_cluster.
async fn read_clusters(
    config: &Config,
    dbctl: &std::path::Path,
    state: &State,
    admin: &mut BTreeMap<Address, reach::AdminCred>,
) -> Result<(BTreeMap<String, crate::rds::LiveCluster>, BTreeMap<Address, Option<crate::rds::LiveCluster>>), String> {
    let wanted = crate::rds::wanted(config, state);
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    let Some(aws) = config.aws.as_ref() else {
        return Err("an rds_cluster needs a provider \"aws\" block (region, and endpoint for a stand-in)".into());
    };
    let rds = crate::rds::Rds::new(aws).await;
    let live = rds.read(&wanted).await?;
    let mut by_addr = BTreeMap::new();
    let mut stores: Option<Stores> = None;
    for r in config.of_kind(crate::model::Kind::RdsCluster) {
        let id = crate::rds::identifier(state, &r.addr);
        by_addr.insert(r.addr.clone(), live.get(&id).cloned());
    }
    for r in config.of_kind(crate::model::Kind::Server) {
        let Body::Server(s) = &r.body else { continue };
        let Some(c) = &s.rds_cluster else { continue };
        let (Some(Some(l)), Some(Body::RdsCluster(rc))) = (by_addr.get(c), config.get(c).map(|x| &x.body)) else {
            continue;
        };
        if l.endpoint.is_none() {
            continue;
        }
        if stores.is_none() {
            stores = Some(Stores::open(dbctl, config.aws.as_ref()).await.map_err(|e| e.to_string())?);
        }
        let cred = reach::cluster_cred(config, stores.as_ref().expect("opened"), &r.addr, s, rc, l).await?;
        admin.insert(r.addr.clone(), cred);
    }
    // `admin_password = rds_cluster.NAME.master_secret` on a server reached by its url.
    for r in config.of_kind(crate::model::Kind::Server) {
        let Body::Server(s) = &r.body else { continue };
        let (None, Some(c)) = (&s.rds_cluster, &s.admin_master_secret) else { continue };
        let Some(Some(l)) = by_addr.get(c) else { continue };
        if stores.is_none() {
            stores = Some(Stores::open(dbctl, config.aws.as_ref()).await.map_err(|e| e.to_string())?);
        }
        let cred = reach::master_secret_cred(stores.as_ref().expect("opened"), &r.addr, l).await?;
        admin.insert(r.addr.clone(), cred);
    }
    Ok((live, by_addr))
}

/// A session and the state, for the commands that plan.
pub fn open_with_state(ctx: &Ctx, connect: bool) -> Result<(Session, State), u8> {
    let mut session = open_opts(ctx, Default::default(), connect, true)?;
    session.check_left_behind()?;
    let state = match session.recorded.take() {
        Some(s) => s,
        None => session.state_store.load().map_err(err)?,
    };
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
        .chain(state.resources.keys().map(|a| Node::base(a).to_string()))
        .collect();
    let mut out = Vec::new();
    for t in targets {
        let (base, grant) = (Node::base(t), Node::is_grants(t));
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
            out.insert(Node::Grants(a.clone()).to_string());
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
        out.insert(Node::Grants(a.clone()).to_string());
        if destroy {
            for (d, through_grant) in dependents.get(&a).into_iter().flatten() {
                if *through_grant {
                    out.insert(Node::Grants((*d).clone()).to_string());
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
    Config { resources, aws: cfg.aws.clone(), state: cfg.state.clone(), order: cfg.order.clone() }
}

impl Session {
    /// A digest of the configuration's files and its non-sensitive
    /// variables: a saved plan records it, and applying the plan checks that
    /// the configuration did not change since.
    pub fn config_hash(&self) -> &str {
        self.config_hash.get_or_init(|| {
            let mut h = Sha256::new();
            for f in &self.files {
                h.update(f.name.as_bytes());
                h.update([0]);
                h.update(f.text.as_bytes());
                h.update([0]);
            }
            for (k, v) in &self.variables {
                if !v.sensitive {
                    h.update(k.as_bytes());
                    h.update(v.value.to_string().as_bytes());
                }
            }
            hex::encode(h.finalize())
        })
    }

    /// With a shared backend configured, a state still in `.dbctl/` is
    /// either not moved yet (an error: planning without it would plan to
    /// create everything again) or left over (a warning).
    pub fn check_left_behind(&self) -> Result<(), u8> {
        if self.config.state.backend == "local" {
            return Ok(());
        }
        let local = crate::state::LocalState::new(&self.dbctl);
        if !local.exists() {
            return Ok(());
        }
        if self.state_store.exists().map_err(err)? {
            eprintln!(
                "Warning: {} is not read: this configuration keeps its state in {}. Remove the file once you no longer need it.",
                local.dir.join("state.json").display(),
                self.state_store.describe()
            );
            return Ok(());
        }
        Err(err(format!(
            "this configuration keeps its state in {}, which has none yet, but {} holds one. \
             Move it there first: dbctl state push",
            self.state_store.describe(),
            local.dir.join("state.json").display()
        )))
    }

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
        // Secrets dbctl only reads (external ones, admin passwords) are never planned.
        let read_only = self.config.read_only_secrets();
        for r in self.config.of_kind(crate::model::Kind::Secret) {
            let Body::Secret(s) = &r.body else { continue };
            if read_only.contains(&r.addr) {
                continue;
            }
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
        let scope = reach::detail_scope(&self.config, state);
        let mut started = Vec::new();
        let t = std::time::Instant::now();
        let early = self.early.lock().expect("not poisoned").take();
        if let Some(early) = early {
            // Usable when it dialled what this read would, and no interrupted
            // apply left intents to settle first: then its failure is this
            // read's failure (not tried twice: a wrong password would count
            // twice against the login), and what it read is completed by the
            // reads inside databases. Otherwise the servers are read again.
            let pending = state.resources.values().any(|r| r.pending);
            if early.endpoints == self.endpoints && !pending {
                if let Ok(read) = early.task.await {
                    let (mut live, started) = read.map_err(err)?;
                    reach::read_inside(&self.endpoints, &scope, &mut live).await.map_err(err)?;
                    tracing::debug!(
                        "refresh: {} server(s), read while the configuration loaded, {} database(s) read inside \
                         after; waited {} ms",
                        live.len(),
                        scope.values().map(|s| s.len()).sum::<usize>(),
                        t.elapsed().as_millis()
                    );
                    for s in started {
                        eprintln!("{s}");
                    }
                    return Ok(live);
                }
            } else {
                early.task.abort();
            }
        }
        let live = reach::refresh(&self.endpoints, &scope, &mut started).await.map_err(err)?;
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

    /// The servers as the last apply read them (`plan --refresh=false`):
    /// nothing is dialled. A server that has never been read is an error,
    /// unless it does not exist yet (an embedded server before its first
    /// apply), whose objects are rightly planned as creates.
    pub fn recorded_live(&self, state: &State) -> Result<BTreeMap<Address, LiveServer>, u8> {
        let needed: Vec<&Address> = self
            .endpoints
            .iter()
            .filter(|(_, ep)| ep.embedded.as_ref().is_none_or(|e| e.is_initialised()))
            .map(|(a, _)| a)
            .collect();
        if needed.is_empty() {
            return Ok(BTreeMap::new());
        }
        let how = "run `dbctl apply` once from a machine that reaches it (an apply records what it reads, even with nothing to do)";
        let Some(snap) = &state.live else {
            let names: Vec<String> = needed.iter().map(|a| a.to_string()).collect();
            return Err(err(format!(
                "no recorded live state for {}: the state holds none (no apply has recorded one yet, or the last apply did not finish without errors). To plan \
                 with --refresh=false, {how}",
                names.join(", ")
            )));
        };
        if snap.serial != state.serial {
            return Err(err(format!(
                "the recorded live state (read at {}, with state serial {}) does not describe the state now \
                 (serial {}): the state changed since without the servers being read (an interrupted apply, \
                 `state rm`, `state push`, `import`). To plan with --refresh=false, {how}",
                snap.read_at, snap.serial, state.serial
            )));
        }
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for a in needed {
            match snap.server(&a.to_string()) {
                Some(l) => {
                    out.insert(a.clone(), l);
                }
                None => missing.push(a.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(err(format!(
                "no recorded live state for {} (the last apply, at {}, did not read it). To plan with \
                 --refresh=false, {how}",
                missing.join(", "),
                snap.read_at
            )));
        }
        Ok(out)
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
            let (host, port) = reach::host_port(ep);
            if !crate::engine::tls::is_loopback(&host) {
                out.push(crate::engine::tls::plaintext_warning(
                    &addr.to_string(),
                    &ep.url,
                    &host,
                    port,
                    crate::engine::dialect::Dialect::of(ep.engine),
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
            if let Some(n) = crate::engine::of(ep.engine).settle(ep, std::time::Duration::from_secs(30)).await {
                tracing::warn!("{s}: {n} create statement(s) of another dbctl session still running after 30 s");
            }
        }
    }

    /// A server whose admin password is the master secret of a cluster that
    /// does not exist yet cannot be read: a plan that needs it refuses and
    /// says to create the cluster first.
    fn check_master_secrets(&self, keep: Option<&BTreeSet<String>>) -> Result<(), u8> {
        for r in self.config.of_kind(crate::model::Kind::Server) {
            let Body::Server(s) = &r.body else { continue };
            let (None, Some(cluster)) = (&s.rds_cluster, &s.admin_master_secret) else { continue };
            let pending = self.endpoints.get(&r.addr).is_some_and(|e| e.pending_admin.is_some());
            if pending && keep.is_none_or(|k| k.contains(&r.addr.to_string())) {
                return Err(err(format!(
                    "{}: its admin password is the master secret of {cluster}, which does not exist yet: create \
                     the cluster first (dbctl apply --target {cluster}), then plan the server",
                    r.addr
                )));
            }
        }
        Ok(())
    }

    pub async fn plan(&self, state: &State, opts: &PlanOpts) -> Result<Plan, u8> {
        // Targets are checked before any server is reached.
        let keep = if opts.targets.is_empty() {
            None
        } else {
            let targets = resolve_targets(&self.config, state, &opts.targets).map_err(err)?;
            Some(target_closure(&self.config, &targets, opts.destroy))
        };
        self.check_master_secrets(keep.as_ref())?;
        let guarded = keep.as_ref().map(|k| guard_only(&self.config, k));
        // While the servers' read that started as the configuration loaded
        // is under way, what the configuration wants that does not depend on
        // the servers is worked out; the diff adds the databases.
        let reading = self.early.lock().expect("not poisoned").is_some();
        let prepared = (reading && !opts.destroy && !opts.no_refresh)
            .then(|| crate::diff::without_databases(guarded.as_ref().unwrap_or(&self.config)));
        let (live, tls_warnings) = if opts.no_refresh {
            (self.recorded_live(state)?, Vec::new())
        } else {
            self.settle_intents(state).await;
            let live = self.refresh(state).await?;
            let warnings = self.plaintext_warnings(&live);
            (live, warnings)
        };
        let (adopted, view) = resolve_intents(state, &live);
        let state = view.as_ref().unwrap_or(state);
        let stores = self.stores().await?;
        let secrets = self.secret_meta(&stores).await?;
        let rds = reach::rds_shapes(&self.config, &self.endpoints);
        let hosts: BTreeMap<Address, (String, u16)> =
            self.endpoints.iter().map(|(a, e)| (a.clone(), reach::host_port(e))).collect();
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
            keep: keep.as_ref(),
        };
        let t = std::time::Instant::now();
        // Adopted objects become updates below, which record their values.
        let d = diff_prepared(&inputs, !(opts.shown_only && adopted.is_empty()), prepared);
        tracing::debug!("diff: {} ms", t.elapsed().as_millis());
        let d = d.map_err(|errors| {
            for e in &errors {
                err(e);
            }
            EXIT_ERROR
        })?;
        let mut changes = d.changes;
        let mut notes = d.notes;
        self.plan_clusters(state, opts, &mut changes, &mut notes)?;
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
        let planned: std::collections::HashSet<&str> =
            changes.iter().filter(|c| c.action != Action::NoOp).map(|c| c.address.as_str()).collect();
        let planned = |a: &str| planned.contains(a);
        let missing = crate::config::check::grants_on_missing_schemas(&self.config, &created, &planned);
        if !missing.is_empty() {
            super::report::diags(&missing);
            eprint!("{}", crate::diag::render(&missing, false));
            return Err(EXIT_ERROR);
        }
        if opts.refresh_only {
            changes.clear();
        }
        // What the admin of each server may run: memberships it needs are
        // planned, a step it cannot run is an error now, before anything runs.
        let engines = crate::diff::engines(&self.config);
        let mut admin_warnings = Vec::new();
        let reviewers = plan_only_logins(&live, &engines);
        if !reviewers.is_empty() {
            // A login that can change no role and no database (a CI login
            // that plans for review): what it could not run is said, and the
            // plan is left as the admin that applies it would see it; that
            // apply checks its own privileges again.
            if let Err(errors) = crate::diff::admin::check(&mut changes.clone(), &live, &engines) {
                admin_warnings.extend(errors.into_iter().map(|e| {
                    format!(
                        "Warning: planned as {} (no CREATEROLE, CREATEDB or SUPERUSER), which could not apply it: {e}",
                        reviewers.join(", ")
                    )
                }));
            }
        } else if let Err(errors) = crate::diff::admin::check(&mut changes, &live, &engines) {
            for e in &errors {
                err(e);
            }
            return Err(EXIT_ERROR);
        }
        if opts.no_refresh {
            // Its tables cannot be counted without the server: a dropped
            // database may hold data, and is marked so.
            reach::mark_data_loss_uncounted(&mut changes);
        } else {
            reach::mark_data_loss(&self.endpoints, &mut changes).await;
        }
        Ok(Plan {
            format_version: FORMAT_VERSION.into(),
            // Only a saved plan is checked against it: at thousands of
            // blocks its digest was a twentieth of a shown plan's CPU.
            config_hash: if opts.shown_only { String::new() } else { self.config_hash().to_string() },
            state_lineage: state.lineage.clone(),
            state_serial: state.serial,
            fingerprints: d.fingerprints,
            drift: d.drift,
            changes,
            notes: tls_warnings.into_iter().chain(admin_warnings).chain(notes).collect(),
            refresh_only: opts.refresh_only,
            live_read_at: if opts.no_refresh { state.live.as_ref().map(|l| l.read_at.clone()) } else { None },
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

    /// The RDS cluster changes, placed after the secrets (a master password
    /// is written before its cluster is created) and before every server's
    /// steps; servers on a cluster this plan creates get an endpoint known
    /// after apply, and what lives on a cluster this plan deletes goes with it.
    fn plan_clusters(
        &self,
        state: &State,
        opts: &PlanOpts,
        changes: &mut Vec<crate::plan::ResourceChange>,
        notes: &mut Vec<String>,
    ) -> Result<(), u8> {
        let now = time::OffsetDateTime::now_utc();
        let clusters =
            crate::diff::rds::plan(&self.config, state, &self.clusters, opts.destroy, now).map_err(|errors| {
                for e in &errors {
                    err(e);
                }
                EXIT_ERROR
            })?;
        let mut clusters = clusters;
        // A master password secret that gets a new value: the cluster takes it too.
        for c in clusters.iter_mut().filter(|c| matches!(c.action, Action::NoOp | Action::Update)) {
            let Some(Body::RdsCluster(rc)) =
                Address::parse(&c.address).ok().and_then(|a| self.config.get(&a)).map(|r| &r.body)
            else {
                continue;
            };
            let Some(secret) = &rc.master_password else { continue };
            let written = changes.iter().any(|x| {
                x.steps.iter().any(|s| matches!(&s.op, crate::plan::Op::WriteSecret { secret: w, .. } if w == secret))
            });
            if written {
                c.steps.push(crate::plan::Step {
                    address: c.address.clone(),
                    server: None,
                    database: None,
                    op: crate::plan::Op::RdsSetMasterPassword { identifier: c.name.clone(), secret: secret.clone() },
                });
                c.action = Action::Update;
                c.notes.push(format!("master password: set from the new value of {secret}"));
            }
        }
        let deleted: BTreeSet<String> =
            clusters.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.clone()).collect();
        // After the secrets that are master passwords, before the others
        // (a user's secret names its server's host, known once the cluster is).
        let masters: BTreeSet<String> = self
            .config
            .of_kind(crate::model::Kind::RdsCluster)
            .filter_map(|r| match &r.body {
                Body::RdsCluster(c) => c.master_password.as_ref().map(|a| a.to_string()),
                _ => None,
            })
            .collect();
        let at = changes.iter().rposition(|c| masters.contains(&c.address)).map_or(0, |i| i + 1);
        changes.splice(at..at, clusters);
        for r in self.config.of_kind(crate::model::Kind::Server) {
            let Body::Server(s) = &r.body else { continue };
            let Some(cluster) = &s.rds_cluster else { continue };
            let Some(ep) = self.endpoints.get(&r.addr) else { continue };
            let addr = r.addr.to_string();
            let pending = ep.pending_admin.is_some();
            if let Some(c) = changes.iter_mut().find(|c| c.address == addr) {
                let (host, port) = reach::host_port(ep);
                if let Some(after) = c.after.as_mut().and_then(|a| a.as_object_mut()) {
                    after.insert("rds_cluster".into(), serde_json::json!(cluster.to_string()));
                    after.insert(
                        "endpoint".into(),
                        if pending { serde_json::Value::Null } else { serde_json::json!(format!("{host}:{port}")) },
                    );
                }
                if pending {
                    c.after_unknown = serde_json::json!({ "endpoint": true });
                    c.notes.push(format!("{cluster} is created by this plan"));
                    if !state.resources.contains_key(&addr) {
                        c.action = Action::Create;
                    }
                }
            }
            if pending && !opts.destroy {
                notes.push(format!(
                    "{addr} is on {cluster}, which this plan creates: its endpoint is known after apply, so the \
                     databases, users and grants on it are planned as creates; the apply connects once the cluster is available."
                ));
            }
            if deleted.contains(&cluster.to_string()) {
                for c in changes.iter_mut().filter(|c| c.server.as_deref() == Some(addr.as_str()) && c.kind != "server")
                {
                    if c.action == Action::Delete {
                        c.steps.clear();
                        c.notes.push(format!("goes with {cluster}: nothing to run on the server"));
                    }
                }
            }
        }
        Ok(())
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

/// Run a future on the process's one async runtime (built on first use).
/// A runtime per call started and stopped four worker threads each time,
/// several times per command.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("tokio runtime")
    })
}

/// The logins of PostgreSQL servers that can change no role and no database
/// (no SUPERUSER, CREATEROLE or CREATEDB): logins that make plans for review,
/// never apply them. Empty unless every PostgreSQL server read is such.
fn plan_only_logins(
    live: &BTreeMap<Address, LiveServer>,
    engines: &BTreeMap<Address, crate::model::EngineKind>,
) -> Vec<String> {
    let pg: Vec<&LiveServer> = live
        .iter()
        .filter(|(a, l)| {
            l.exists && engines.get(*a).is_some_and(|e| crate::engine::dialect::Dialect::of(*e).role_flags())
        })
        .map(|(_, l)| l)
        .collect();
    let reviewer = |l: &LiveServer| {
        l.roles
            .get(&l.admin)
            .is_some_and(|r| !r.superuser && !r.flags.contains("createrole") && !r.flags.contains("createdb"))
    };
    if pg.is_empty() || !pg.iter().all(|l| reviewer(l)) {
        return Vec::new();
    }
    let mut names: Vec<String> = pg.iter().map(|l| l.admin.clone()).collect();
    names.dedup();
    names
}
