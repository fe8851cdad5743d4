//! The executor: runs a plan's steps, writes the state after every step,
//! and on a failure stops starting steps and reports what was done, what
//! failed and what was not started.
//!
//! Steps that touch no server (secret generation) run first. Then each
//! server's steps run one at a time, in plan order (one catalog writer per
//! server), while different servers run in parallel, at most `parallelism`
//! at once. Resources only depend on resources of their own server (the
//! configuration checks that), so this respects every dependency.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine::dialect::Dialect;
use crate::model::{Address, Config};
use crate::plan::{Action, Op, Plan, ResourceChange, Step};
use crate::reach::Endpoint;
use crate::secrets::Stores;
use crate::state::{Journal, State, StateResource};

/// Runs one step against the outside world. The executor above it owns the
/// order, the parallelism, the state and the report, so it is tested with an
/// in-memory runner; `PgRunner` is the real one.
pub trait Runner: Sync {
    /// What one server's queue keeps between its steps (its connections).
    type Queue: Send + Default;
    /// Run `step`; return the secret version a password was set from, if any.
    fn run<'a>(
        &'a self,
        cfg: &'a Config,
        step: &'a Step,
        queue: &'a mut Self::Queue,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;
    /// Close what a queue opened.
    fn close(&self, _queue: Self::Queue) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

pub struct Executor<R: Runner> {
    pub runner: R,
    pub journal: Mutex<Journal>,
    pub state: Mutex<State>,
    pub parallelism: usize,
    /// Plain lines (CI) or live progress (terminal).
    pub progress: Progress,
    /// Set by a signal (Ctrl-C, SIGTERM, SIGHUP): the steps in flight finish
    /// and are recorded, nothing new starts.
    pub interrupt: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Report {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub not_started: Vec<String>,
    /// Stopped by a signal or a closed output, not by a failure.
    pub interrupted: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && !self.interrupted
    }
}

/// Prints one line as each step starts and ends; on a terminal, an
/// indicatif bar over them.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    n: std::sync::atomic::AtomicUsize,
    /// Standard output was closed (`apply | head`): stop starting steps.
    closed: AtomicBool,
}

impl Progress {
    pub fn new(total: usize, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress { bar, total, n: Default::default(), closed: AtomicBool::new(false) }
    }
    /// Whether standard output went away: the apply stops as if interrupted.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    fn line(&self, s: String) {
        use std::io::Write as _;
        match &self.bar {
            Some(b) => b.println(s),
            None if !self.closed() => {
                // Never panic on a closed pipe: a step may have run and not be recorded yet.
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{s}").and_then(|_| out.flush()).is_err() {
                    self.closed.store(true, Ordering::SeqCst);
                }
            }
            None => {}
        }
    }
    fn start(&self, step: &Step) {
        let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
        self.line(format!("[{n}/{}] {}: {} ...", self.total, step.address, step.describe()));
    }
    fn end(&self, step: &Step, elapsed: std::time::Duration, err: Option<&str>) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        match err {
            None => self.line(format!("      {}: done ({} ms)", step.address, elapsed.as_millis())),
            Some(e) => self.line(format!("      {}: FAILED: {e}", step.address)),
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn record(
    change: &ResourceChange,
    password_version: Option<String>,
    previous: Option<&StateResource>,
    pending: bool,
) -> StateResource {
    StateResource {
        kind: change.kind.clone(),
        server: change.server.clone(),
        name: change.name.clone(),
        attributes: change.after.clone().unwrap_or_default(),
        password_version: password_version.or_else(|| previous.and_then(|p| p.password_version.clone())),
        pending,
    }
}

/// Whether step `si` of `c` creates the object on its server: the first step
/// of a create, or the first one after a replacement's drop. An intent is
/// recorded before it runs (see `StateResource::pending`).
fn creates(c: &ResourceChange, si: usize) -> bool {
    if !matches!(c.kind.as_str(), "user" | "role" | "database") {
        return false;
    }
    match c.action {
        Action::Create => si == 0,
        Action::Replace => si > 0 && matches!(c.steps[si - 1].op, Op::DropDatabase { .. }),
        _ => false,
    }
}

impl<R: Runner> Executor<R> {
    fn put(&self, change: &ResourceChange, password_version: Option<String>) -> Result<(), String> {
        self.put_as(change, password_version, false)
    }

    fn put_as(&self, change: &ResourceChange, password_version: Option<String>, pending: bool) -> Result<(), String> {
        let mut st = self.state.lock().expect("state lock");
        let r = record(change, password_version, st.resources.get(&change.address), pending);
        let journaled = self.journal.lock().expect("journal lock").put(&change.address, &r).map_err(|e| e.to_string());
        // Kept in memory either way: the state saved at the end still learns it.
        st.resources.insert(change.address.clone(), r);
        journaled
    }

    fn stopping(&self, abort: &AtomicBool) -> bool {
        abort.load(Ordering::SeqCst) || self.interrupt.load(Ordering::SeqCst) || self.progress.closed()
    }

    fn remove(&self, address: &str) -> Result<(), String> {
        self.state.lock().expect("state lock").resources.remove(address);
        self.journal.lock().expect("journal lock").remove(address).map_err(|e| e.to_string())
    }

    /// Run the steps of `changes` (indices into the plan) in order on one server.
    async fn run_queue(
        &self,
        cfg: &Config,
        plan: &Plan,
        queue: Vec<usize>,
        abort: &AtomicBool,
        report: &Mutex<Report>,
    ) {
        let mut conns = R::Queue::default();
        for ci in queue {
            let c = &plan.changes[ci];
            if self.stopping(abort) {
                report.lock().expect("report").not_started.push(c.address.clone());
                continue;
            }
            let mut password_version = None;
            let mut failed = false;
            if c.steps.is_empty() {
                // Nothing to run, but the state learns (or forgets) the resource.
                let r = if c.action == Action::Delete { self.remove(&c.address) } else { self.put(c, None) };
                if let Err(e) = r {
                    report.lock().expect("report").failed.push((c.address.clone(), e));
                    abort.store(true, Ordering::SeqCst);
                } else {
                    report.lock().expect("report").done.push(c.address.clone());
                }
                continue;
            }
            let mut intent = false;
            for (si, step) in c.steps.iter().enumerate() {
                if self.stopping(abort) {
                    report.lock().expect("report").not_started.push(format!(
                        "{} (step {} of {})",
                        c.address,
                        si + 1,
                        c.steps.len()
                    ));
                    failed = true;
                    break;
                }
                if creates(c, si) {
                    // If this cannot be recorded, the statement does not run.
                    if let Err(e) = self.put_as(c, None, true) {
                        report
                            .lock()
                            .expect("report")
                            .failed
                            .push((c.address.clone(), format!("writing the state before {}: {e}", step.describe())));
                        abort.store(true, Ordering::SeqCst);
                        failed = true;
                        break;
                    }
                    intent = true;
                }
                self.progress.start(step);
                let t = Instant::now();
                let r = self.runner.run(cfg, step, &mut conns).await;
                self.progress.end(step, t.elapsed(), r.as_ref().err().map(String::as_str));
                match r {
                    Ok(v) => {
                        if v.is_some() {
                            password_version = v;
                        }
                        let last = si + 1 == c.steps.len();
                        let res = match (c.action, &step.op) {
                            (Action::Delete, _) if last => self.remove(&c.address),
                            (Action::Replace, Op::DropDatabase { .. }) => self.remove(&c.address),
                            (Action::Delete, _) => Ok(()),
                            // Recorded after its first step, so an interrupted create is managed, not orphaned.
                            _ if last || si == 0 || intent || password_version.is_some() => {
                                intent = false;
                                self.put(c, password_version.clone())
                            }
                            _ => Ok(()),
                        };
                        if let Err(e) = res {
                            report
                                .lock()
                                .expect("report")
                                .failed
                                .push((c.address.clone(), format!("writing the state: {e}")));
                            abort.store(true, Ordering::SeqCst);
                            failed = true;
                            break;
                        }
                    }
                    Err(e) => {
                        report
                            .lock()
                            .expect("report")
                            .failed
                            .push((c.address.clone(), format!("{}: {e}", step.describe())));
                        abort.store(true, Ordering::SeqCst);
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                report.lock().expect("report").done.push(c.address.clone());
            }
        }
        self.runner.close(conns).await;
    }

    pub async fn execute(&self, cfg: &Config, plan: &Plan) -> Report {
        let report = Mutex::new(Report::default());
        let abort = AtomicBool::new(false);
        let mut global = Vec::new();
        let mut per_server: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, c) in plan.changes.iter().enumerate() {
            if c.action == Action::NoOp {
                continue;
            }
            match c.steps.iter().find_map(|s| s.server.as_ref()).map(|s| s.to_string()).or_else(|| c.server.clone()) {
                Some(s) if c.kind != "secret" => per_server.entry(s).or_default().push(i),
                _ => global.push(i),
            }
        }
        self.run_queue(cfg, plan, global, &abort, &report).await;
        let queues: Vec<Vec<usize>> = per_server.into_values().collect();
        let sem = Arc::new(tokio::sync::Semaphore::new(self.parallelism.max(1)));
        let jobs = queues.into_iter().map(|q| {
            let sem = sem.clone();
            let (report, abort) = (&report, &abort);
            async move {
                let _permit = sem.acquire().await.expect("semaphore open");
                self.run_queue(cfg, plan, q, abort, report).await;
            }
        });
        futures::future::join_all(jobs).await;
        self.progress.finish();
        let mut report = report.into_inner().expect("report");
        report.interrupted = self.interrupt.load(Ordering::SeqCst) || self.progress.closed();
        report
    }
}

/// The real runner: PostgreSQL servers, embedded servers and the local secret store.
pub struct PgRunner {
    /// A server on a cluster this apply creates learns its endpoint when
    /// the cluster's step has run.
    pub endpoints: std::sync::RwLock<BTreeMap<Address, Endpoint>>,
    /// Hosts learned during this apply: the plan's "(known after apply: …)"
    /// placeholder → the cluster's endpoint, put into documents and secrets.
    pub learned: std::sync::RwLock<BTreeMap<String, String>>,
    pub stores: Stores,
    /// The configuration directory: published files are relative to it.
    pub base_dir: std::path::PathBuf,
}

/// One server queue's session with its engine (opened by the first step
/// that runs a statement there).
#[derive(Default)]
pub struct Conns(Option<Box<dyn crate::engine::EngineSession>>);

impl Runner for PgRunner {
    type Queue = Conns;

    fn run<'a>(
        &'a self,
        cfg: &'a Config,
        step: &'a Step,
        queue: &'a mut Self::Queue,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>> {
        Box::pin(self.run_step(cfg, step, queue))
    }

    fn close(&self, queue: Self::Queue) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(session) = queue.0 {
                session.close().await;
            }
        })
    }
}

impl PgRunner {
    fn ep(&self, server: &Address) -> Option<Endpoint> {
        self.endpoints.read().expect("endpoints lock").get(server).cloned()
    }

    /// An RDS step: the request, then the wait until its cluster is
    /// available (or gone); then the servers on the cluster learn its endpoint.
    async fn run_rds(&self, cfg: &Config, step: &Step) -> Result<Option<String>, String> {
        let aws = cfg.aws.as_ref().ok_or("an rds_cluster needs a provider \"aws\" block")?;
        let rds = crate::rds::Rds::new(aws).await;
        let read = |secret: &Address| {
            let secret = secret.clone();
            async move {
                let s = self.secret(cfg, &secret)?;
                let v = match &s.value {
                    Some(v) => v.clone(),
                    None => {
                        self.stores
                            .read(s.store, &s.name, s.external)
                            .await
                            .map_err(|e| e.for_secret(&secret).to_string())?
                            .ok_or_else(|| format!("{secret} has no value in its store yet"))?
                            .value
                    }
                };
                Ok::<_, String>(crate::secrets::password_of(&v))
            }
        };
        let (cluster, gone) = match &step.op {
            Op::RdsSetMasterPassword { identifier, secret } => {
                rds.set_master_password(identifier, &read(secret).await?).await?;
                (identifier.clone(), false)
            }
            Op::RdsCreateCluster { spec } => {
                let password = match &spec.master_password {
                    Some(secret) => Some(read(secret).await?),
                    None => None,
                };
                rds.create_cluster(spec, &step.address, password).await?;
                (spec.identifier.clone(), false)
            }
            Op::RdsModifyCluster { mods } => {
                rds.modify_cluster(mods).await?;
                (mods.identifier.clone(), false)
            }
            Op::RdsCreateInstance { identifier, cluster, engine, instance_class } => {
                rds.create_instance(identifier, cluster, engine, instance_class, &step.address).await?;
                (cluster.clone(), false)
            }
            Op::RdsModifyInstance { identifier, cluster, instance_class, apply_immediately } => {
                rds.modify_instance(identifier, instance_class, *apply_immediately).await?;
                (cluster.clone(), false)
            }
            Op::RdsDeleteInstance { identifier, cluster } => {
                rds.delete_instance(identifier).await?;
                (cluster.clone(), false)
            }
            Op::RdsDeleteCluster { identifier, final_snapshot } => {
                rds.delete_cluster(identifier, final_snapshot.as_deref()).await?;
                (identifier.clone(), true)
            }
            _ => return Err("not an RDS step".into()),
        };
        let Some(live) = rds.wait(&step.address, &cluster, gone).await? else { return Ok(None) };
        // Servers on this cluster: reached through its endpoint from now on.
        let me = Address::parse(&step.address).map_err(|e| e.to_string())?;
        let Some(crate::model::Body::RdsCluster(rc)) = cfg.get(&me).map(|r| &r.body) else { return Ok(None) };
        let dbctl = crate::reach::dbctl_dir(&self.base_dir);
        for r in cfg.of_kind(crate::model::Kind::Server) {
            let crate::model::Body::Server(s) = &r.body else { continue };
            if s.rds_cluster.as_ref() != Some(&me) || live.endpoint.is_none() {
                continue;
            }
            // Known already, unless its password has just changed.
            let known = self.ep(&r.addr).is_some_and(|e| e.pending_admin.is_none());
            if known && !matches!(step.op, Op::RdsSetMasterPassword { .. }) {
                continue;
            }
            let cred = crate::reach::cluster_cred(cfg, &self.stores, &r.addr, s, rc, &live).await?;
            let ep = crate::reach::rds_endpoint(&dbctl, &r.addr, s, &live.master_username, Some(&live), Some(&cred))
                .map_err(|e| e.to_string())?;
            if let Some(host) = &live.endpoint {
                self.learned.write().expect("learned lock").insert(crate::reach::unknown_host(&r.addr), host.clone());
            }
            self.endpoints.write().expect("endpoints lock").insert(r.addr.clone(), ep);
        }
        Ok(None)
    }

    /// `s` with every host learned during this apply in place of its placeholder.
    fn fill(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (placeholder, host) in self.learned.read().expect("learned lock").iter() {
            out = out.replace(placeholder, host);
        }
        out
    }

    fn secret<'c>(&self, cfg: &'c Config, secret: &Address) -> Result<&'c crate::model::Secret, String> {
        match cfg.get(secret).map(|r| &r.body) {
            Some(crate::model::Body::Secret(s)) => Ok(s),
            _ => Err(format!("{secret} is not in the configuration")),
        }
    }

    async fn run_step(&self, cfg: &Config, step: &Step, queue: &mut Conns) -> Result<Option<String>, String> {
        match &step.op {
            Op::RdsCreateCluster { .. }
            | Op::RdsModifyCluster { .. }
            | Op::RdsCreateInstance { .. }
            | Op::RdsModifyInstance { .. }
            | Op::RdsDeleteInstance { .. }
            | Op::RdsSetMasterPassword { .. }
            | Op::RdsDeleteCluster { .. } => self.run_rds(cfg, step).await,
            Op::WriteSecret { secret, rds, pending } => {
                let s = self.secret(cfg, secret)?;
                let value = match (&s.value, &s.generate) {
                    (Some(v), _) => v.clone(),
                    (None, Some(g)) => crate::secrets::generate(g),
                    (None, None) => crate::secrets::generate(&crate::model::Generate { length: 32, special: false }),
                };
                let mut rds = rds.clone();
                if let Some(r) = rds.as_mut() {
                    r.host = self.fill(&r.host);
                }
                let doc = crate::secrets::document(&value, rds.as_ref());
                if *pending {
                    self.stores
                        .put_pending(s.store, &s.name, &secret.to_string(), doc)
                        .await
                        .map_err(|e| e.for_secret(secret).to_string())?;
                } else {
                    self.stores.put(s.store, &s.name, &secret.to_string(), doc).await.map_err(|e| e.to_string())?;
                }
                Ok(None)
            }
            Op::Publish { path, content } => {
                let full = self.base_dir.join(path);
                if let Some(dir) = full.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                // Mode 0600: the document names hosts, users and where their passwords live.
                crate::state::write_private(&full, self.fill(content).as_bytes()).map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::Unpublish { path } => match std::fs::remove_file(self.base_dir.join(path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("cannot remove {path}: {e}")),
                _ => Ok(None),
            },
            Op::PublishSecret { secret, content } => {
                let s = self.secret(cfg, secret)?;
                self.stores
                    .put(s.store, &s.name, &secret.to_string(), crate::model::Sensitive::new(self.fill(content)))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::DeleteSecret { store, name } => {
                self.stores.delete(*store, name).await.map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::StartEmbedded => {
                let server = step.server.as_ref().ok_or("no server")?;
                let e = self.ep(server).and_then(|e| e.embedded.clone()).ok_or("not an embedded server")?;
                tokio::task::spawn_blocking(move || e.start())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::Sql { sql } => {
                self.session(step, queue)?
                    .execute(&step.address, step.database.as_deref(), sql.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::SetPassword { role, secret, .. } => {
                let dialect = self.dialect(step);
                let shown = planned_statement(dialect, step)?;
                let (password, version, pending) = self.password_to_set(cfg, secret).await?;
                // The statement the plan showed, with only the hash the engine
                // stores (SCRAM-SHA-256 verifier, native-password hash) in place
                // of (sensitive): the server's logs never see the password.
                let sql = dialect.with_password(&shown, password.expose())?;
                self.session(step, queue)?
                    .execute_secret(&step.address, sql)
                    .await
                    .map_err(|e| format!("setting the password of role \"{role}\" failed: {e}"))?;
                if pending {
                    self.promote(cfg, secret, &version).await?;
                }
                Ok(Some(version))
            }
            Op::Migrate(m) => {
                let database = step.database.as_deref().ok_or("a migration step without its database")?;
                self.session(step, queue)?.migrate(database, m).await.map_err(|e| e.to_string())?;
                Ok(None)
            }
            Op::DropDatabase { name, force, .. } => {
                let sql = planned_statement(self.dialect(step), step)?;
                self.session(step, queue)?
                    .drop_database(&step.address, name, *force, sql)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }

    /// The password to set from a secret, read only while the step runs:
    /// a staged rotation's pending version if there is one, else the current
    /// one; that version, and whether it is pending (to `promote` once set).
    async fn password_to_set(
        &self,
        cfg: &Config,
        secret: &Address,
    ) -> Result<(crate::model::Sensitive, String, bool), String> {
        let s = self.secret(cfg, secret)?;
        let pending = self.stores.pending(s.store, &s.name).await.map_err(|e| e.for_secret(secret).to_string())?;
        if let Some(p) = pending {
            return Ok((crate::secrets::password_of(&p.value), p.version, true));
        }
        let current = self
            .stores
            .current(s.store, &s.name)
            .await
            .map_err(|e| e.for_secret(secret).to_string())?
            .ok_or_else(|| format!("{secret} has no value in its store yet"))?;
        Ok((crate::secrets::password_of(&current.value), current.version, false))
    }

    /// The server accepted a rotation's pending version: make it the one
    /// services read. If this fails, the server already has the new password
    /// and the published modules fall back to the pending version; the next
    /// apply sets it again (the same value) and makes it current.
    async fn promote(&self, cfg: &Config, secret: &Address, version: &str) -> Result<(), String> {
        let s = self.secret(cfg, secret)?;
        self.stores.promote(s.store, &s.name, version).await.map_err(|e| {
            format!(
                "the server accepted the new version of {secret}, but making it current in its store failed: {}; \
                 run `dbctl apply` again to finish the rotation",
                e.for_secret(secret)
            )
        })
    }

    /// The dialect of the server a step runs on.
    fn dialect(&self, step: &Step) -> Dialect {
        Dialect::of(
            step.server.as_ref().and_then(|s| self.ep(s)).map_or(crate::model::EngineKind::Postgres, |e| e.engine),
        )
    }

    /// The step's server's session, opened on first use.
    fn session<'q>(
        &self,
        step: &Step,
        queue: &'q mut Conns,
    ) -> Result<&'q mut Box<dyn crate::engine::EngineSession>, String> {
        if queue.0.is_none() {
            let server = step.server.as_ref().ok_or("step has no server")?;
            let ep = self.ep(server).ok_or_else(|| format!("{server} is not in the configuration"))?;
            queue.0 = Some(crate::engine::of(ep.engine).session(&ep));
        }
        Ok(queue.0.as_mut().expect("opened"))
    }
}

/// The statement of a step whose text depends on the engine, as its plan
/// showed it: the text `dialect` (the server's, now) renders for the step,
/// which must be the one the plan stored. A step planned in another
/// dialect is refused, never run as something the plan did not show. A
/// password statement keeps `(sensitive)` (see `Dialect::with_password`).
fn planned_statement(dialect: Dialect, step: &Step) -> Result<String, String> {
    let (stored, rendered) = match &step.op {
        Op::DropDatabase { name, force, sql } => (sql, dialect.drop_database(name, *force)),
        Op::SetPassword { role, account, sql, .. } => {
            // The plan names the account ('user'@'host') of a MySQL user; a role is named by the dialect.
            let who = account.clone().unwrap_or_else(|| dialect.password_account(role, None));
            (sql, dialect.set_password(&who))
        }
        _ => return Err(format!("{}: not a statement step", step.address)),
    };
    if stored.is_empty() || *stored == rendered {
        return Ok(rendered);
    }
    Err(format!(
        "{}: the plan shows {stored} but this server's engine runs {rendered}; nothing of it ran: make the plan again",
        step.address
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AttrChange, Op};
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// An in-memory engine: records every step, sleeps a little so steps
    /// overlap when they may, fails the step whose SQL is `fail`.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<(String, String)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        per_server: Mutex<HashMap<String, usize>>,
        overlap_on_one_server: AtomicBool,
    }

    impl Runner for Fake {
        type Queue = ();
        fn run<'a>(
            &'a self,
            _: &'a Config,
            step: &'a Step,
            _: &'a mut (),
        ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>> {
            Box::pin(async move {
                let server = step.server.as_ref().map(|s| s.to_string()).unwrap_or_default();
                let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_running.fetch_max(n, Ordering::SeqCst);
                {
                    let mut per = self.per_server.lock().unwrap();
                    let c = per.entry(server.clone()).or_default();
                    *c += 1;
                    if *c > 1 && !server.is_empty() {
                        self.overlap_on_one_server.store(true, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                *self.per_server.lock().unwrap().get_mut(&server).unwrap() -= 1;
                self.running.fetch_sub(1, Ordering::SeqCst);
                self.log.lock().unwrap().push((step.address.clone(), step.describe()));
                match &step.op {
                    Op::Sql { sql } if sql == "fail" => Err("boom".into()),
                    _ => Ok(None),
                }
            })
        }
    }

    fn step(addr: &str, server: Option<&str>, sql: &str) -> Step {
        Step {
            address: addr.into(),
            server: server.map(|s| Address::parse(s).unwrap()),
            database: None,
            op: Op::Sql { sql: sql.into() },
        }
    }

    fn change(addr: &str, kind: &str, action: Action, server: Option<&str>, sqls: &[&str]) -> ResourceChange {
        ResourceChange {
            address: addr.into(),
            kind: kind.into(),
            name: addr.into(),
            action,
            before: None,
            after: Some(serde_json::json!({ "name": addr })),
            after_sensitive: serde_json::json!({}),
            attributes: Vec::<AttrChange>::new(),
            notes: vec![],
            steps: sqls.iter().map(|s| step(addr, server, s)).collect(),
            server: server.map(str::to_string),
            data_loss: None,
            after_unknown: serde_json::Value::Null,
        }
    }

    fn plan(changes: Vec<ResourceChange>) -> Plan {
        Plan {
            format_version: "1.0".into(),
            config_hash: String::new(),
            state_lineage: String::new(),
            state_serial: 0,
            fingerprints: Default::default(),
            drift: vec![],
            changes,
            notes: vec![],
            refresh_only: false,
            ..Default::default()
        }
    }

    fn executor(dir: &std::path::Path, parallelism: usize, state: State) -> Executor<Fake> {
        let st = crate::state::LocalState::new(dir);
        Executor {
            runner: Fake::default(),
            journal: Mutex::new(st.journal().unwrap()),
            state: Mutex::new(state),
            parallelism,
            progress: Progress::new(0, false),
            interrupt: Default::default(),
        }
    }

    fn servers_plan(fail: bool) -> Plan {
        let mut changes = vec![change("secret.s", "secret", Action::Create, None, &["secret"])];
        for s in ["a", "b", "c"] {
            let server = format!("server.{s}");
            changes.push(change(&format!("database.{s}1"), "database", Action::Create, Some(&server), &["1", "2"]));
            let second = if fail && s == "a" { "fail" } else { "3" };
            changes.push(change(&format!("database.{s}2"), "database", Action::Create, Some(&server), &[second, "4"]));
            changes.push(change(&format!("database.{s}3"), "database", Action::Create, Some(&server), &["5"]));
        }
        plan(changes)
    }

    fn run(exec: &Executor<Fake>, p: &Plan) -> Report {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(exec.execute(&Config::default(), p))
    }

    #[test]
    fn servers_run_in_parallel_and_each_server_one_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 10, State::new());
        let p = servers_plan(false);
        let report = run(&exec, &p);
        assert!(report.ok());
        assert_eq!(report.done.len(), 10);
        assert_eq!(exec.runner.max_running.load(Ordering::SeqCst), 3, "three servers at once");
        assert!(!exec.runner.overlap_on_one_server.load(Ordering::SeqCst), "one writer per server");
        let log = exec.runner.log.lock().unwrap().clone();
        assert_eq!(log[0].0, "secret.s", "steps without a server run first");
        for s in ["a", "b", "c"] {
            let mine: Vec<String> =
                log.iter().filter(|(a, _)| a.starts_with(&format!("database.{s}"))).map(|(_, d)| d.clone()).collect();
            assert_eq!(mine, ["1", "2", "3", "4", "5"], "plan order within server {s}");
        }
        // Every resource is in the state, through the journal.
        let state = crate::state::LocalState::new(dir.path()).load().unwrap();
        assert_eq!(state.resources.len(), 10);

        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 1, State::new());
        assert!(run(&exec, &p).ok());
        assert_eq!(exec.runner.max_running.load(Ordering::SeqCst), 1, "--parallelism 1");
    }

    #[test]
    fn a_failure_stops_new_steps_and_reports_done_failed_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 1, State::new());
        let report = run(&exec, &servers_plan(true));
        assert!(!report.ok());
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "database.a2");
        assert!(report.failed[0].1.contains("boom"));
        assert_eq!(report.done, ["secret.s", "database.a1"]);
        // Nothing after the failure started: a2's second step, a3, and servers b and c.
        let log: Vec<String> = exec.runner.log.lock().unwrap().iter().map(|(a, d)| format!("{a}:{d}")).collect();
        assert_eq!(log, ["secret.s:secret", "database.a1:1", "database.a1:2", "database.a2:fail"]);
        assert_eq!(
            report.not_started,
            ["database.a3", "database.b1", "database.b2", "database.b3", "database.c1", "database.c2", "database.c3"]
        );
        // The state holds exactly what was done, and the intent of the create that failed
        // (its statement may have committed before the error: the next plan looks).
        let state = crate::state::LocalState::new(dir.path()).load().unwrap();
        assert_eq!(state.resources.keys().collect::<Vec<_>>(), ["database.a1", "database.a2", "secret.s"]);
        let pending: Vec<&String> = state.resources.iter().filter(|(_, r)| r.pending).map(|(a, _)| a).collect();
        assert_eq!(pending, ["database.a2"]);
    }

    #[test]
    fn an_interrupt_finishes_the_step_in_flight_and_starts_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 1, State::new());
        exec.interrupt.store(true, Ordering::SeqCst);
        let report = run(&exec, &servers_plan(false));
        assert!(report.interrupted && !report.ok());
        assert!(report.failed.is_empty());
        assert!(report.done.is_empty());
        assert_eq!(report.not_started.len(), 10);
        assert!(exec.runner.log.lock().unwrap().is_empty());
    }

    #[test]
    fn an_intent_is_journaled_before_a_create_runs() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 1, State::new());
        let plan = plan(vec![change("database.x", "database", Action::Create, Some("server.a"), &["fail"])]);
        let report = run(&exec, &plan);
        assert!(!report.ok());
        // The failing statement ran after the intent was on disk.
        let journal = std::fs::read_to_string(dir.path().join("state.journal")).unwrap();
        assert!(journal.contains("\"pending\":true"), "{journal}");
    }

    #[test]
    fn creates_are_recorded_after_their_first_step_and_deletes_after_their_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut before = State::new();
        let gone = StateResource {
            kind: "role".into(),
            server: Some("server.a".into()),
            name: "gone".into(),
            attributes: serde_json::json!({}),
            password_version: None,
            pending: false,
        };
        before.resources.insert("role.gone".into(), gone);
        let exec = executor(dir.path(), 1, before.clone());
        let p = plan(vec![
            change("role.gone", "role", Action::Delete, Some("server.a"), &["drop", "fail"]),
            change("database.x", "database", Action::Create, Some("server.b"), &["create", "fail"]),
        ]);
        let report = run(&exec, &p);
        assert_eq!(report.failed.len(), 1);
        let state = exec.state.lock().unwrap().clone();
        assert!(state.resources.contains_key("role.gone"), "a delete that did not finish keeps the resource");
        assert!(!state.resources.contains_key("database.x"), "not started");

        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path(), 1, before);
        let p = plan(vec![
            change("role.gone", "role", Action::Delete, Some("server.a"), &["drop"]),
            change("database.x", "database", Action::Create, Some("server.b"), &["create", "fail"]),
        ]);
        let report = run(&exec, &p);
        assert_eq!(report.done, ["role.gone"]);
        let state = crate::state::LocalState::new(dir.path()).load().unwrap();
        assert!(!state.resources.contains_key("role.gone"));
        assert!(state.resources.contains_key("database.x"), "created by its first step, so managed");
    }

    #[test]
    fn a_statement_runs_only_as_its_plan_showed_it() {
        let drop = |sql: &str| Step {
            op: Op::DropDatabase { name: "o`ld".into(), force: true, sql: sql.into() },
            ..step("database.old", Some("server.main"), "")
        };
        // The text the plan stored is the text that runs.
        let planned = drop(&Dialect::Mysql.drop_database("o`ld", true));
        assert_eq!(planned_statement(Dialect::Mysql, &planned).unwrap(), "DROP DATABASE `o``ld`");
        assert_eq!(planned_statement(Dialect::Mysql, &planned).unwrap(), planned.describe());
        // Planned for another engine than the server's now: refused, never run in another spelling.
        let err = planned_statement(Dialect::Postgres, &planned).unwrap_err();
        assert!(err.contains("DROP DATABASE `o``ld`") && err.contains("make the plan again"), "{err}");
        // Saved before steps stored it: rendered in the server's dialect.
        assert_eq!(planned_statement(Dialect::Postgres, &drop("")).unwrap(), "DROP DATABASE \"o`ld\" WITH (FORCE)");

        let password = |account: Option<&str>, sql: String| Step {
            op: Op::SetPassword {
                role: "app".into(),
                secret: Address::parse("secret.pw").unwrap(),
                account: account.map(str::to_string),
                sql,
            },
            ..step("user.app", Some("server.main"), "")
        };
        let shown = Dialect::Mysql.set_password("'app'@'%'");
        let p = password(Some("'app'@'%'"), shown.clone());
        assert_eq!(planned_statement(Dialect::Mysql, &p).unwrap(), shown);
        assert!(planned_statement(Dialect::Postgres, &p).is_err());
        let shown = Dialect::Postgres.set_password("\"app\"");
        assert_eq!(planned_statement(Dialect::Postgres, &password(None, shown.clone())).unwrap(), shown);
        assert_eq!(planned_statement(Dialect::Postgres, &password(None, String::new())).unwrap(), shown);
    }
}
