//! Desired (configuration) vs live (what the engine read) vs state (what
//! dbctl manages) → the plan's changes, each with its exact steps. Pure: no
//! I/O, so it is tested with plain values.

pub mod admin;
mod desired;
mod grants;
pub mod rds;
pub mod secret;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use self::desired::{desired, engines, without_databases, Desired, GrantSet};
pub use self::grants::recorded_targets;
use crate::engine::dialect::Dialect;
use crate::engine::sql::pg_ident;
use crate::engine::{LiveDatabase, LiveServer};
use crate::graph::Graph;
use crate::model::{Address, Body, Config, EngineKind, FastHashMap, FastHashSet, Kind};
pub use crate::model::{DesiredDb, DesiredRole, Target};
use crate::plan::{Action, AttrChange, Drift, Op, ResourceChange, Step};
use crate::state::State;

/// Everything the diff looks at.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub live: &'a BTreeMap<Address, LiveServer>,
    pub state: &'a State,
    /// What the stores hold for each configured secret that exists (never values).
    pub secrets: &'a BTreeMap<Address, crate::secrets::SecretMeta>,
    /// The RDS credentials shape of secrets that are a user's password.
    pub rds: &'a BTreeMap<Address, crate::secrets::RdsShape>,
    /// For `rotate_every`.
    pub now: time::OffsetDateTime,
    /// Host and port of each server, for published routing documents.
    pub hosts: &'a BTreeMap<Address, (String, u16)>,
    /// The current content of each router's publish file (None: missing).
    pub published: &'a BTreeMap<Address, Option<String>>,
    /// Per backup policy: database name → when its newest complete backup
    /// finished (RFC 3339), or why the storage could not be read.
    pub backups: &'a BTreeMap<Address, Result<BTreeMap<String, String>, String>>,
    /// Per `migrations` block: its files, lint and tracking table, or why
    /// they could not be read (the plan then fails, naming the file).
    pub migrations: &'a BTreeMap<Address, Result<crate::migrate::Status, Vec<String>>>,
    /// Plan the removal of everything managed (`dbctl destroy`).
    pub destroy: bool,
    /// Drop databases even with open connections.
    pub force: bool,
    /// Secrets to give a new value (`--replace secret.NAME`).
    pub replace: &'a BTreeSet<Address>,
    /// With `--target`: the addresses the plan keeps (the caller drops the
    /// other changes). `None`: every change is kept.
    pub keep: Option<&'a BTreeSet<String>>,
}

impl Inputs<'_> {
    /// What was read from `server`; an empty server when nothing was.
    fn live_of(&self, server: &Address) -> &LiveServer {
        static EMPTY: std::sync::LazyLock<LiveServer> = std::sync::LazyLock::new(LiveServer::default);
        self.live.get(server).unwrap_or(&EMPTY)
    }
}

pub struct Diffed {
    pub changes: Vec<ResourceChange>,
    pub drift: Vec<Drift>,
    pub notes: Vec<String>,
    pub fingerprints: BTreeMap<String, String>,
}

pub(crate) fn change(addr: &str, kind: &str, name: &str, action: Action) -> ResourceChange {
    ResourceChange {
        address: addr.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        action,
        before: None,
        after: None,
        after_sensitive: json!({}),
        attributes: Vec::new(),
        notes: Vec::new(),
        steps: Vec::new(),
        server: None,
        data_loss: None,
        after_unknown: Value::Null,
    }
}

/// The steps of resource `addr` that run an engine's statements on `server`.
fn steps<'a>(addr: &str, server: &'a Address, stmts: Vec<crate::engine::Stmt>) -> impl Iterator<Item = Step> + 'a {
    let addr = addr.to_string();
    stmts.into_iter().map(move |s| Step {
        address: addr.clone(),
        server: Some(server.clone()),
        database: s.database,
        op: Op::Sql { sql: s.sql },
    })
}

pub(crate) fn sql(addr: &str, server: &Address, database: Option<&str>, sql: String) -> Step {
    Step {
        address: addr.to_string(),
        server: Some(server.clone()),
        database: database.map(str::to_string),
        op: Op::Sql { sql },
    }
}

/// Drift: attributes whose recorded value differs from the live one. A value
/// recorded as null was unknown when applied (a server default): not drift.
fn drift_of(addr: &str, recorded: &Value, live: &Value, out: &mut Vec<Drift>) {
    for ch in attr_changes(recorded, live, &[], &[]) {
        if !ch.before.is_null() {
            out.push(Drift { address: addr.to_string(), attribute: ch.name, recorded: ch.before, live: ch.after });
        }
    }
}

/// Roles and databases (old name, new name) a plan renames on one server.
#[derive(Clone, Debug, Default)]
struct Renames {
    roles: Vec<(String, String)>,
    databases: Vec<(String, String)>,
}

impl Renames {
    fn role<'a>(&'a self, name: &'a str) -> &'a str {
        self.roles.iter().find(|(o, _)| o == name).map_or(name, |(_, n)| n.as_str())
    }
    fn database<'a>(&'a self, name: &'a str) -> &'a str {
        self.databases.iter().find(|(o, _)| o == name).map_or(name, |(_, n)| n.as_str())
    }

    /// The server as it is once the renames ran: what grants are planned against.
    fn apply(&self, live: &LiveServer) -> LiveServer {
        let roles_in = |m: &BTreeMap<String, crate::engine::Privs>| -> BTreeMap<String, crate::engine::Privs> {
            m.iter().map(|(k, v)| (self.role(k).to_string(), v.clone())).collect()
        };
        let mut out = live.clone();
        out.roles = live
            .roles
            .iter()
            .map(|(k, r)| {
                let mut r = r.clone();
                r.member_of = r.member_of.iter().map(|m| self.role(m).to_string()).collect();
                (self.role(k).to_string(), r)
            })
            .collect();
        out.databases = live
            .databases
            .iter()
            .map(|(k, d)| {
                let mut d = d.clone();
                d.owner = self.role(&d.owner).to_string();
                d.privileges = roles_in(&d.privileges);
                for sc in d.detail.iter_mut().flat_map(|x| x.schemas.values_mut()) {
                    sc.owner = self.role(&sc.owner).to_string();
                    sc.privileges = roles_in(&sc.privileges);
                    for cp in [&mut sc.tables, &mut sc.sequences] {
                        cp.any = roles_in(&cp.any);
                        cp.all = roles_in(&cp.all);
                        cp.owners = cp.owners.iter().map(|o| self.role(o).to_string()).collect();
                    }
                    for defs in [&mut sc.default_tables, &mut sc.default_sequences] {
                        *defs = defs.iter().map(|(r, m)| (self.role(r).to_string(), roles_in(m))).collect();
                    }
                }
                (self.database(k).to_string(), d)
            })
            .collect();
        out
    }
}

/// The old name a role is renamed from: the state holds it for this address,
/// the server has it and not the new name, and no resource keeps it.
fn role_renamed_from(
    in_state: Option<&crate::state::StateResource>,
    live: &LiveServer,
    roles: &BTreeMap<String, DesiredRole>,
    name: &str,
) -> Option<String> {
    in_state
        .map(|st| &st.name)
        .filter(|old| {
            *old != name && !live.roles.contains_key(name) && live.roles.contains_key(*old) && !roles.contains_key(*old)
        })
        .cloned()
}

/// Drift of a role or database: what the state recorded (as the server spells
/// it, and after this plan's renames) against what the server holds now,
/// both without the `ignore_changes` attributes.
fn drift_since_applied(
    addr: &str,
    recorded: &Value,
    engine: EngineKind,
    rn: Option<&Renames>,
    live: &Value,
    ignore: &[String],
    out: &mut Vec<Drift>,
) {
    let spelled = recorded_spelling(recorded, engine);
    let recorded = recorded_renamed(&spelled, rn);
    drift_of(addr, &without(&recorded, ignore), &without(live, ignore), out);
}

/// Recorded role names (`owner`, `member_of`) as they are after this plan's
/// renames (borrowed when the plan renames nothing on the server).
fn recorded_renamed<'a>(recorded: &'a Value, rn: Option<&Renames>) -> std::borrow::Cow<'a, Value> {
    let Some(rn) = rn else { return std::borrow::Cow::Borrowed(recorded) };
    let mut v = recorded.clone();
    if let Some(o) = v.get("owner").and_then(Value::as_str).map(|o| rn.role(o).to_string()) {
        v["owner"] = json!(o);
    }
    if let Some(m) = v.get("member_of").and_then(Value::as_array).cloned() {
        v["member_of"] = m.iter().map(|x| x.as_str().map_or(x.clone(), |s| json!(rn.role(s)))).collect();
    }
    std::borrow::Cow::Owned(v)
}

/// Recorded attributes as the server spells them (what older versions
/// recorded as written: `utf8`, a host in capitals), so a spelling is not drift.
/// Borrowed when every spelling is already the server's (the common case: a
/// copy of each recorded resource showed in large plans' profiles).
fn recorded_spelling(recorded: &Value, engine: EngineKind) -> std::borrow::Cow<'_, Value> {
    let Some(o) = recorded.as_object() else { return std::borrow::Cow::Borrowed(recorded) };
    let respelled: Vec<(&str, String)> = ["encoding", "collation", "host"]
        .into_iter()
        .filter_map(|key| match o.get(key) {
            Some(Value::String(x)) => {
                Dialect::of(engine).canonical_spelling(key, x).filter(|c| c != x).map(|c| (key, c))
            }
            _ => None,
        })
        .collect();
    if respelled.is_empty() {
        return std::borrow::Cow::Borrowed(recorded);
    }
    let mut v = recorded.clone();
    if let Some(o) = v.as_object_mut() {
        for (key, c) in respelled {
            o.insert(key.to_string(), Value::String(c));
        }
    }
    std::borrow::Cow::Owned(v)
}

/// A router's published document: to its file and/or secret when it differs.
fn publish(inp: &Inputs, addr: &Address, managed: bool, c: &mut ResourceChange) {
    let Some(Body::Router(rt)) = inp.config.get(addr).map(|r| &r.body) else { return };
    let Some(p) = &rt.publish else { return };
    let Some(doc) = crate::router::render(inp.config, addr, inp.hosts) else { return };
    if let Some(a) = c.after.as_mut() {
        a["format"] = json!(p.format);
        a["publish_file"] = json!(p.file);
        a["publish_secret"] = json!(p.secret.as_ref().map(|s| s.to_string()));
    }
    let step = |op: Op| Step { address: addr.to_string(), server: None, database: None, op };
    if let Some(file) = &p.file {
        let current = inp.published.get(addr).cloned().flatten();
        if current.as_deref() != Some(doc.as_str()) {
            c.attributes.push(AttrChange {
                name: format!("document {file}"),
                before: json!(current),
                after: json!(doc),
                forces_replacement: false,
                sensitive: false,
            });
            c.steps.push(step(Op::Publish { path: file.clone(), content: doc.clone() }));
        }
    }
    if let Some(secret) = &p.secret {
        let current = inp.secrets.get(secret).map(|m| m.value_hash.clone());
        if current.as_deref() != Some(crate::secrets::sha(&doc).as_str()) {
            c.notes.push(format!("the routing document goes to {secret}"));
            c.steps.push(step(Op::PublishSecret { secret: secret.clone(), content: doc }));
        }
    }
    if c.action == Action::NoOp && !c.steps.is_empty() {
        c.action = if managed { Action::Update } else { Action::Create };
    }
}

/// A `migrations` block's change: its pending migrations as steps; refusals
/// and lint errors as plan errors, each naming the file.
#[allow(clippy::too_many_arguments)]
fn migrations(
    inp: &Inputs,
    want: &Desired,
    addr: &Address,
    m: &crate::model::Migrations,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
    by_addr: &mut ByAddr,
) {
    let Some(st) = inp.migrations.get(addr) else { return };
    let st = match st {
        Ok(st) => st,
        Err(e) => {
            errors.extend(e.iter().map(|x| format!("{addr}: {x}")));
            return;
        }
    };
    let pending = match &st.pending {
        Ok(p) => p,
        Err(e) => {
            errors.extend(e.iter().map(|x| format!("{addr}: {x}")));
            return;
        }
    };
    for f in &st.findings {
        let where_ = format!("{}:{}:{}", f.file, f.line, f.column);
        if m.lint == "error" {
            errors.push(format!(
                "{addr}: {where_}: [{}] {} (help: {}; or put -- dbctl:allow {} on the line before)",
                f.rule, f.message, f.help, f.rule
            ));
        } else if m.lint == "warn" {
            notes.push(format!("Warning: {addr}: {where_}: [{}] {}", f.rule, f.message));
        }
    }
    let key = addr.to_string();
    let in_state = inp.state.resources.get(&key);
    let after = json!({
        "database": st.database,
        "dir": m.dir,
        "lint": m.lint,
        "applied": st.applied.len(),
        "pending": pending.iter().map(|p| format!("{:04}_{}", p.version, p.name)).collect::<Vec<_>>(),
    });
    let mut c = change(&key, "migrations", &addr.name, Action::NoOp);
    c.server = Some(st.server.to_string());
    c.before = in_state.map(|s| s.attributes.clone());
    c.action = match (in_state.is_some(), pending.is_empty()) {
        (false, _) => Action::Create,
        (true, false) => Action::Update,
        (true, true) => Action::NoOp,
    };
    if c.action == Action::Update {
        c.attributes.push(AttrChange {
            name: "pending".into(),
            before: json!([]),
            after: after["pending"].clone(),
            forces_replacement: false,
            sensitive: false,
        });
    }
    let admin = inp.live.get(&st.server).map(|l| l.admin.as_str()).unwrap_or("");
    let dialect = Dialect::of(st.engine);
    let role = want.db_owner(&st.server, &st.database).filter(|o| *o != admin && dialect.database_owners());
    for p in pending {
        let mut p = p.clone();
        p.role = role.map(str::to_string);
        if !dialect.transactional_ddl() {
            c.notes.push(format!(
                "{}: MySQL/MariaDB commit DDL as it runs: if it fails, the statements before the failing one stay applied",
                p.file
            ));
        } else if p.no_transaction {
            c.notes.push(format!(
                "{}: not in a transaction (-- dbctl:no-transaction): if it fails, what ran before stays",
                p.file
            ));
        }
        c.steps.push(Step {
            address: key.clone(),
            server: Some(st.server.clone()),
            database: Some(st.database.clone()),
            op: Op::Migrate(p),
        });
    }
    c.after = Some(after);
    by_addr.insert(key, c);
}

/// A grant's new default privileges cover tables created after it; the
/// migrations of this plan run before it, so their tables get the grant too.
fn grant_what_migrations_create(by_addr: &mut ByAddr) {
    let migrating: BTreeSet<(Option<Address>, Option<String>)> = by_addr
        .values()
        .flat_map(|c| &c.steps)
        .filter(|s| matches!(s.op, Op::Migrate(_)))
        .map(|s| (s.server.clone(), s.database.clone()))
        .collect();
    if migrating.is_empty() {
        return;
    }
    for c in by_addr.values_mut().filter(|c| c.kind == "grant" || c.kind == "router") {
        let mut out = Vec::new();
        for s in std::mem::take(&mut c.steps) {
            let extra = match &s.op {
                Op::Sql { sql } if migrating.contains(&(s.server.clone(), s.database.clone())) => {
                    existing_objects_grant(sql)
                }
                _ => None,
            };
            out.push(s.clone());
            if let Some(sql) = extra {
                out.push(Step { op: Op::Sql { sql }, ..s });
            }
        }
        c.steps = out;
    }
}

/// `ALTER DEFAULT PRIVILEGES FOR ROLE o IN SCHEMA s GRANT p ON TABLES TO g`
/// → `GRANT p ON ALL TABLES IN SCHEMA s TO g` (sequences alike).
fn existing_objects_grant(sql: &str) -> Option<String> {
    let rest = sql.strip_prefix("ALTER DEFAULT PRIVILEGES FOR ROLE ")?;
    let (_, rest) = rest.split_once(" IN SCHEMA ")?;
    let (schema, rest) = rest.split_once(" GRANT ")?;
    for objects in ["TABLES", "SEQUENCES"] {
        if let Some((privs, grantee)) = rest.split_once(&format!(" ON {objects} TO ")) {
            return Some(format!("GRANT {privs} ON ALL {objects} IN SCHEMA {schema} TO {grantee}"));
        }
    }
    None
}

/// Set a role's password from a secret: the step (which reads the store only
/// while it runs) and the plan line, always `(sensitive)`.
/// The statement is rendered here, in the server's dialect, and stored in the
/// step: apply runs that text with the credential in place of `(sensitive)`.
fn set_password(
    c: &mut ResourceChange,
    server: &Address,
    dialect: Dialect,
    role: &DesiredRole,
    secret: &Address,
    before: Value,
) {
    c.steps.push(Step {
        address: c.address.clone(),
        server: Some(server.clone()),
        database: None,
        op: Op::SetPassword {
            role: role.name.clone(),
            secret: secret.clone(),
            account: role.host.as_ref().map(|h| crate::engine::sql::mysql_account(&role.name, Some(h))),
            sql: dialect.set_password(&dialect.password_account(&role.name, role.host.as_deref())),
        },
    });
    c.attributes.push(AttrChange {
        name: "password".into(),
        before,
        after: json!("(sensitive)"),
        forces_replacement: false,
        sensitive: true,
    });
}

/// Drop a database: the statement in the server's dialect, stored in the step
/// (what the plan shows is what apply runs).
fn drop_database(addr: &str, server: &Address, dialect: Dialect, name: &str, force: bool) -> Step {
    Step {
        address: addr.to_string(),
        server: Some(server.clone()),
        database: None,
        op: Op::DropDatabase { name: name.to_string(), force, sql: dialect.drop_database(name, force) },
    }
}

/// A managed object that no longer exists on its server.
fn deleted_outside(addr: &str) -> Drift {
    Drift { address: addr.to_string(), attribute: "(exists)".into(), recorded: json!(true), live: json!(false) }
}

/// Attribute-level differences between two JSON objects.
fn attr_changes(before: &Value, after: &Value, replace: &[&str], sensitive: &[&str]) -> Vec<AttrChange> {
    let mut out = Vec::new();
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else { return out };
    for (k, av) in a {
        let bv = b.get(k).cloned().unwrap_or(Value::Null);
        if &bv != av {
            out.push(AttrChange {
                name: k.clone(),
                before: bv,
                after: av.clone(),
                forces_replacement: replace.contains(&k.as_str()),
                sensitive: sensitive.contains(&k.as_str()),
            });
        }
    }
    out
}

fn hash(v: &impl serde::Serialize) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).expect("serialises")))
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "router" => 0,
        "grant" => 1,
        "database" => 2,
        "user" => 3,
        "role" => 4,
        "secret" => 5,
        _ => 6,
    }
}

pub fn role_json(r: &DesiredRole) -> Value {
    let mut v = json!({
        "name": r.name,
        "login": r.login,
        "connection_limit": r.connection_limit,
        "valid_until": r.valid_until,
        "member_of": r.member_of,
    });
    for (f, on) in &r.flags {
        v[f.as_str()] = json!(on);
    }
    if let Some(h) = &r.host {
        v["host"] = json!(h);
    }
    v
}

/// Role attributes the configuration does not set are left as the server
/// has them (an admin's own CREATEROLE is never taken away): the live side
/// shows only the ones `after` sets.
fn managed_flags(before: &mut Value, after: &Value) {
    for (f, _, _) in crate::engine::ROLE_FLAGS {
        match (after.get(*f).is_some(), before.as_object_mut()) {
            (true, Some(b)) => {
                let on = b.get(*f).and_then(Value::as_bool).unwrap_or(false);
                b.insert(f.to_string(), json!(on));
            }
            (false, Some(b)) => {
                b.remove(*f);
            }
            _ => {}
        }
    }
}

/// Whether a managed PostgreSQL role is exactly as configured and as the
/// state recorded it: what comparing `role_json`, `live_role_json` (with
/// `managed_flags`) and the recorded attributes would find — no attribute to
/// change and no drift — worked out without building those values. False
/// whenever it cannot tell (then they are built and compared).
/// A field of an object the state recorded, found by a scan: such objects
/// hold a dozen fields at most, and serde_json's maps hash every key looked
/// up (SipHash), which at thousands of objects costs more than comparing them.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn role_unchanged(recorded: &Value, name: &str, d: &DesiredRole, l: &crate::engine::LiveRole) -> bool {
    let is_flag = |f: &str| crate::engine::ROLE_FLAGS.iter().any(|x| x.0 == f);
    // The configuration against the server.
    if d.name != name
        || d.login != l.login
        || d.connection_limit != l.connection_limit
        || d.valid_until != l.valid_until
        || d.member_of != l.member_of
        || d.host.is_some()
        || !l.host.is_empty()
        || d.flags.iter().any(|(f, on)| !is_flag(f) || l.flags.contains(f) != *on)
    {
        return false;
    }
    // The server against what was recorded: a recorded null is not drift.
    let Some(r) = recorded.as_object() else { return false };
    let same = |key: &str, eq: &dyn Fn(&Value) -> bool| field(r, key).is_none_or(|v| v.is_null() || eq(v));
    same("name", &|v| v.as_str() == Some(name))
        && same("login", &|v| v.as_bool() == Some(l.login))
        && same("connection_limit", &|v| v.as_i64() == Some(l.connection_limit))
        && same("valid_until", &|v| l.valid_until.as_deref().is_some_and(|x| v.as_str() == Some(x)))
        && same("member_of", &|v| {
            v.as_array().is_some_and(|a| a.len() == l.member_of.len() && a.iter().zip(&l.member_of).all(|(x, m)| x.as_str() == Some(m)))
        })
        // The flags the configuration sets, as the server has them; any
        // other flag the server reports stays in the live value, as true.
        && d.flags.keys().all(|f| same(f, &|v| v.as_bool() == Some(l.flags.contains(f))))
        && l.flags.iter().filter(|f| !d.flags.contains_key(*f) && !is_flag(f)).all(|f| same(f, &|v| v.as_bool() == Some(true)))
}

fn live_role_json(name: &str, r: &crate::engine::LiveRole) -> Value {
    let mut v = json!({
        "name": name,
        "login": r.login,
        "connection_limit": r.connection_limit,
        "valid_until": r.valid_until,
        "member_of": r.member_of,
    });
    for f in &r.flags {
        v[f.as_str()] = json!(true);
    }
    if !r.host.is_empty() {
        v["host"] = json!(r.host);
    }
    v
}

pub fn db_json(d: &DesiredDb, live: Option<&LiveDatabase>) -> Value {
    // Unset encoding/collation take what the server gave (not compared).
    let v = json!({
        "name": d.name,
        "owner": d.owner,
        "encoding": d.encoding.clone().or_else(|| live.map(|l| l.encoding.clone())),
        "collation": d.collation.clone().or_else(|| live.map(|l| l.collation.clone())),
        "connection_limit": d.connection_limit,
        "extensions": d.extensions,
    });
    ownerless(v)
}

/// MySQL/MariaDB databases (no owner) have no owner, connection limit or extensions either.
fn ownerless(v: Value) -> Value {
    if v["owner"] == "" {
        without(&v, &["owner".into(), "connection_limit".into(), "extensions".into()]).into_owned()
    } else {
        v
    }
}

fn live_db_json(name: &str, l: &LiveDatabase, managed_ext: &BTreeSet<String>) -> Value {
    let ext: BTreeSet<&String> = l
        .detail
        .as_ref()
        .map(|d| d.extensions.iter().filter(|e| managed_ext.contains(*e)).collect())
        .unwrap_or_default();
    ownerless(json!({
        "name": name,
        "owner": l.owner,
        "encoding": l.encoding,
        "collation": l.collation,
        "connection_limit": l.connection_limit,
        "extensions": ext,
    }))
}

/// `v` without `keys`: borrowed when there is nothing to leave out (the
/// common case, which at thousands of resources made a copy of each).
/// `v` without the attributes its engine does not have.
fn drop_keys(v: &mut Value, keys: &[&str]) {
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
}

fn without<'a>(v: &'a Value, keys: &[String]) -> std::borrow::Cow<'a, Value> {
    if keys.is_empty() || !v.as_object().is_some_and(|o| keys.iter().any(|k| o.contains_key(k))) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(k);
        }
    }
    std::borrow::Cow::Owned(v)
}

/// The databases of `server` that dbctl manages: in the state or in the configuration.
fn managed_databases(inp: &Inputs, want: &Desired, server: &Address) -> BTreeSet<String> {
    let on = server.to_string();
    inp.state
        .resources
        .values()
        .filter(|st| st.kind == "database" && st.server.as_deref() == Some(on.as_str()))
        .map(|st| st.name.clone())
        .chain(want.databases.get(server).into_iter().flat_map(|dbs| dbs.keys().cloned()))
        .collect()
}

/// Whether dbctl's admin can open a connection to a database: it admits
/// connections, and the admin is a superuser, its owner, or holds CONNECT
/// (itself, through PUBLIC or a role it is a member of).
fn admin_can_connect(live: &LiveServer, db: &LiveDatabase) -> bool {
    if db.closed {
        return false;
    }
    let admin = live.roles.get(&live.admin);
    if admin.is_some_and(|a| a.superuser) || db.owner == live.admin {
        return true;
    }
    // An admin with CREATEROLE (an RDS master user) is made a member of the
    // owner first (see `admin::check`), unless the owner is a superuser.
    let owner_super = live.roles.get(&db.owner).is_none_or(|o| o.superuser);
    if admin.is_some_and(|a| a.flags.contains("createrole") && a.flags.contains("inherit")) && !owner_super {
        return true;
    }
    let mut who: Vec<&str> = vec![live.admin.as_str(), "PUBLIC"];
    who.extend(admin.into_iter().flat_map(|a| a.member_of.iter().map(String::as_str)));
    who.iter().any(|w| db.privileges.get(*w).is_some_and(|p| p.contains("CONNECT")))
}

pub fn diff(inp: &Inputs) -> Result<Diffed, Vec<String>> {
    diff_with(inp, true)
}

/// `full`: the plan is saved, applied or printed as JSON, and needs what
/// only those read: the fingerprint of every live role and database it looks
/// at (a saved plan records them, for `apply PLANFILE` to see whether the
/// servers moved since), and the before and after values of grant sets and
/// roles it leaves alone (the JSON plan lists every resource). A plan that is
/// only shown to a reader leaves both out: at 10,000 objects they were 5,000
/// serialisations and digests, and 10,000 JSON values, no one looked at.
pub fn diff_with(inp: &Inputs, full: bool) -> Result<Diffed, Vec<String>> {
    diff_prepared(inp, full, None)
}

/// `diff_with`, given what [`desired::without_databases`] made of
/// `inp.config` (worked out while the servers were read).
pub fn diff_prepared(inp: &Inputs, full: bool, prepared: Option<Desired>) -> Result<Diffed, Vec<String>> {
    let mut p = Planner::new(inp, full, prepared);
    p.servers();
    p.secrets();
    p.backup_policies();
    p.migrations();
    p.role_renames();
    p.roles_beside_databases_and_grants();
    p.removed();
    p.finish()
}

/// What a step of the plan adds when it is made apart from the planner.
#[derive(Default)]
struct Part {
    errors: Vec<String>,
    drift: Vec<Drift>,
    fingerprints: BTreeMap<String, String>,
    by_addr: ByAddr,
}

/// The error for an object that is on the server but not in the state:
/// the plan would otherwise take it over silently.
fn unmanaged(kind: &str, name: &str, server: &Address, addr: &str) -> String {
    format!(
        "{kind} \"{name}\" already exists on {server} but dbctl does not manage it: adopt it with `dbctl import {addr} {name}`, or give the resource another name"
    )
}

/// Roles and users: created, changed in place, renamed, their passwords set.
/// `pending`: the addresses of the changes planned before them that do
/// something (a secret's new version, which its users' passwords follow).
fn roles(
    inp: &Inputs,
    full: bool,
    want: &Desired,
    renames: &BTreeMap<Address, Renames>,
    pending: &FastHashSet<String>,
) -> Part {
    let fingerprinted = full;
    let cfg = inp.config;
    let mut part = Part {
        by_addr: ByAddr::with_capacity_and_hasher(want.roles.values().map(|r| r.len()).sum(), Default::default()),
        ..Part::default()
    };
    let Part { ref mut errors, ref mut drift, ref mut fingerprints, ref mut by_addr } = part;
    for (server, roles) in &want.roles {
        let live = inp.live_of(server);
        let server_name = server.to_string();
        let absent = want.dialect(server).absent_attributes(Kind::User);
        for (name, d) in roles {
            let addr = d.addr.to_string();
            let kind = if d.login { "user" } else { "role" };
            let res = cfg.get(&d.addr).expect("desired comes from config");
            let mut c = change(&addr, kind, name, Action::NoOp);
            c.server = Some(server_name.clone());
            let role_value = || {
                let mut v = role_json(d);
                drop_keys(&mut v, absent);
                v
            };
            // Its JSON value, built where it is compared (below) or kept.
            let mut after: Option<Value> = None;
            // Managed, as configured and as recorded: its values are worked
            // out only if it changes after all, or the plan needs them.
            let mut quiet = false;
            let in_state = inp.state.resources.get(&addr);
            let password_version = d.password.as_ref().and_then(|s| inp.secrets.get(s)).map(|m| m.version.clone());
            // The secret gets a new version in this plan: the password follows.
            let password_pending = d.password.as_ref().is_some_and(|s| pending.contains(&s.to_string()));
            // A rotation staged in the store (`dbctl secret rotate`): set, then made current.
            let rotation = d.password.as_ref().and_then(|s| inp.secrets.get(s)).and_then(|m| m.rotation.clone());
            if fingerprinted {
                fingerprints.insert(format!("{server}/role/{name}"), hash(&live.roles.get(name)));
            }
            // `name` changed: the managed object still holds the old one. Renamed
            // in place, so its password, memberships and grants go with it.
            let renamed_from = role_renamed_from(in_state, live, roles, name);
            if let Some(old) = &renamed_from {
                if fingerprinted {
                    fingerprints.insert(format!("{server}/role/{old}"), hash(&live.roles.get(old)));
                }
                if !want.dialect(server).renames_role(d.login) {
                    errors.push(format!(
                        "{addr}: role \"{old}\" cannot be renamed to \"{name}\" on MySQL/MariaDB; keep its name, or remove it and add a new role"
                    ));
                    continue;
                }
            }
            match live.roles.get(name).or_else(|| renamed_from.as_ref().and_then(|o| live.roles.get(o))) {
                None => {
                    if in_state.is_some() {
                        drift.push(deleted_outside(&addr));
                    }
                    c.action = Action::Create;
                    c.steps.extend(steps(&addr, server, want.dialect(server).create_role(d, live)));
                    if let Some(secret) = &d.password {
                        set_password(&mut c, server, Dialect::of(want.engine(server)), d, secret, Value::Null);
                    }
                }
                Some(l) => {
                    if in_state.is_none() {
                        errors.push(unmanaged(kind, name, server, &addr));
                        continue;
                    }
                    let ignore = &res.lifecycle.ignore_changes;
                    let rn = renames.get(server);
                    // Memberships in renamed roles, as they are once the renames ran.
                    let mapped;
                    let l = match rn {
                        Some(rn) => {
                            mapped = crate::engine::LiveRole {
                                member_of: l.member_of.iter().map(|m| rn.role(m).to_string()).collect(),
                                ..l.clone()
                            };
                            &mapped
                        }
                        None => l,
                    };
                    quiet = !full
                        && rn.is_none()
                        && renamed_from.is_none()
                        && ignore.is_empty()
                        && want.engine(server) == EngineKind::Postgres
                        && in_state.is_some_and(|st| role_unchanged(&st.attributes, name, d, l));
                    if !quiet {
                        let a = role_value();
                        let mut before = live_role_json(renamed_from.as_deref().unwrap_or(name), l);
                        drop_keys(&mut before, absent);
                        managed_flags(&mut before, &a);
                        if let Some(st) = in_state {
                            drift_since_applied(&addr, &st.attributes, want.engine(server), rn, &before, ignore, drift);
                        }
                        c.attributes = attr_changes(&without(&before, ignore), &without(&a, ignore), &[], &[]);
                        c.before = Some(before);
                        after = Some(a);
                    }
                    let members = !ignore.iter().any(|i| i == "member_of");
                    let mut renamed_l = None;
                    if let Some(old) = &renamed_from {
                        let dialect = want.dialect(server);
                        // An account moves to its new name and host at once.
                        if dialect.has_hosts() {
                            renamed_l =
                                Some(crate::engine::LiveRole { host: d.host.clone().unwrap_or_default(), ..l.clone() });
                        }
                        let rename = dialect.rename_role(old, Some(&l.host), name, d.host.as_deref());
                        c.steps.push(sql(&addr, server, None, rename));
                        c.notes
                            .push(format!("renamed from \"{old}\": its password, memberships and grants go with it"));
                    }
                    let l = renamed_l.as_ref().unwrap_or(l);
                    let changed: Vec<AttrChange> =
                        c.attributes.iter().filter(|a| renamed_l.is_none() || a.name != "host").cloned().collect();
                    let changed: Vec<&str> = changed.iter().map(|a| a.name.as_str()).collect();
                    c.steps.extend(steps(
                        &addr,
                        server,
                        want.dialect(server).update_role(d, l, &changed, members, live),
                    ));
                    let recorded = in_state.and_then(|s| s.password_version.clone());
                    if let Some(secret) = &d.password {
                        // PostgreSQL clears an MD5 password on a rename (a SCRAM one survives):
                        // set it again from its secret, so the login works either way.
                        let md5_cleared = renamed_from.is_some() && want.dialect(server).rename_clears_md5();
                        let new_version =
                            password_pending || (password_version.is_some() && recorded != password_version);
                        let why = match (&rotation, password_pending) {
                            (Some(v), false) => Some(format!(
                                "rotation pending: password set from version {v} of {secret}, which then becomes current"
                            )),
                            _ if new_version => Some(format!("password set from a new version of {secret}")),
                            _ if md5_cleared => Some(format!("password set again from {secret} after the rename")),
                            _ => None,
                        };
                        if let Some(why) = why {
                            let dialect = Dialect::of(want.engine(server));
                            set_password(&mut c, server, dialect, d, secret, json!("(sensitive)"));
                            c.notes.push(why);
                        }
                    }
                    if !c.steps.is_empty() {
                        c.action = Action::Update;
                    }
                    if quiet && c.action != Action::NoOp {
                        // A new password, say: shown with its values after all.
                        let mut before = live_role_json(name, l);
                        drop_keys(&mut before, absent);
                        managed_flags(&mut before, &role_value());
                        c.before = Some(before);
                    }
                }
            }
            if quiet && c.action == Action::NoOp {
                by_addr.insert(addr, c);
                continue;
            }
            c.after = Some(after.unwrap_or_else(role_value));
            c.after_sensitive = json!({ "password": d.password.is_some() });
            by_addr.insert(addr, c);
        }
    }
    part
}

/// The addresses in the order the load worked out (a configuration made
/// otherwise: its graph is built here).
fn config_order(cfg: &Config) -> Vec<String> {
    if cfg.order.is_empty() {
        Graph::build(cfg).order().unwrap_or_default().iter().map(|n| n.to_string()).collect()
    } else {
        cfg.order.iter().map(|n| n.to_string()).collect()
    }
}

/// The changes planned so far, by address (their order is the
/// configuration's, set when the plan is finished).
type ByAddr = FastHashMap<String, ResourceChange>;

/// One plan being made: what every step of `diff` reads (the inputs and
/// the desired objects) and what they add to (changes, drift, notes).
struct Planner<'a> {
    inp: &'a Inputs<'a>,
    /// See `diff_with`.
    full: bool,
    want: std::sync::Arc<Desired>,
    errors: Vec<String>,
    notes: Vec<String>,
    drift: Vec<Drift>,
    fingerprints: BTreeMap<String, String>,
    by_addr: ByAddr,
    deletes: Vec<ResourceChange>,
    /// Roles and databases this plan renames, per server: grants are
    /// planned against the server as it is after the renames.
    renames: BTreeMap<Address, Renames>,
    /// Configuration graph order for creates and updates.
    order: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(inp: &'a Inputs<'a>, full: bool, prepared: Option<Desired>) -> Planner<'a> {
        let cfg = inp.config;
        let want = if inp.destroy {
            // Nothing is wanted, but how each server speaks still matters.
            Desired { engines: desired::engines(cfg), ..Desired::default() }
        } else if let Some(mut want) = prepared {
            desired::add_databases(&mut want, cfg, inp.live, Some(inp.state));
            want
        } else {
            desired(cfg, inp.live, Some(inp.state))
        };
        let changes = cfg.resources.len() + want.grants.len();
        Planner {
            inp,
            full,
            want: want.into(),
            errors: Vec::new(),
            notes: Vec::new(),
            drift: Vec::new(),
            fingerprints: BTreeMap::new(),
            // Every resource and grant set has its change: made at its size,
            // the map of thousands of large values is never grown and copied.
            by_addr: ByAddr::with_capacity_and_hasher(changes, Default::default()),
            deletes: Vec::new(),
            renames: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// Servers: an embedded one not made yet is started by the plan.
    fn servers(&mut self) {
        let inp = self.inp;
        let cfg = inp.config;
        let Planner { ref mut by_addr, .. } = *self;
        // Servers.
        for r in cfg.of_kind(Kind::Server) {
            let Body::Server(s) = &r.body else { continue };
            if inp.destroy {
                continue;
            }
            let live = inp.live_of(&r.addr);
            let addr = r.addr.to_string();
            let after = json!({ "engine": s.engine.as_str(), "embedded": s.embedded });
            let mut c = change(&addr, "server", &r.addr.name, Action::NoOp);
            c.server = Some(addr.clone());
            // An embedded server that exists but is not in the state (an apply killed while it
            // started it): the idempotent start records it.
            let unrecorded = live.exists && !inp.state.resources.contains_key(&addr);
            if s.embedded && (!live.exists || unrecorded) {
                if unrecorded {
                    c.notes.push("exists already (made by `dbctl dev up`, or by an apply interrupted before recording it): dbctl records it".into());
                }
                c.action = Action::Create;
                c.steps.push(Step {
                    address: addr.clone(),
                    server: Some(r.addr.clone()),
                    database: None,
                    op: Op::StartEmbedded,
                });
                c.before = None;
            } else {
                c.before = Some(after.clone());
            }
            c.after = Some(after);
            by_addr.insert(addr, c);
        }
    }

    /// Secrets: created once, rotated when due, rewritten when a given value changes.
    fn secrets(&mut self) {
        let inp = self.inp;
        let cfg = inp.config;
        let Planner { ref mut errors, ref mut notes, ref mut drift, ref mut by_addr, .. } = *self;
        // Secrets a router publishes its document into: the router writes them.
        let publish_targets: BTreeMap<&Address, &Address> = cfg
            .of_kind(Kind::Router)
            .filter_map(|r| match &r.body {
                Body::Router(rt) => rt.publish.as_ref().and_then(|p| p.secret.as_ref()).map(|s| (s, &r.addr)),
                _ => None,
            })
            .collect();

        // Secrets: created once, rotated when due, rewritten when a given value changes.
        let read_only = cfg.read_only_secrets();
        for r in cfg.of_kind(Kind::Secret) {
            let Body::Secret(s) = &r.body else { continue };
            if inp.destroy {
                continue;
            }
            if read_only.contains(&r.addr) {
                // Read where it is needed (a server's admin password); never written, rotated or deleted.
                let mut c = change(&r.addr.to_string(), "secret", &s.name, Action::NoOp);
                c.after = Some(json!({ "store": s.store, "name": s.name, "value": "(sensitive)" }));
                c.after_sensitive = json!({ "value": true });
                c.notes.push("read only: dbctl never writes, rotates or deletes it".into());
                by_addr.insert(r.addr.to_string(), c);
                continue;
            }
            if let Some(router) = publish_targets.get(&r.addr) {
                let mut c = change(&r.addr.to_string(), "secret", &s.name, Action::NoOp);
                c.after = Some(json!({ "store": s.store, "name": s.name, "value": "(sensitive)" }));
                c.notes.push(format!("holds the routing document of {router}, which writes it"));
                by_addr.insert(r.addr.to_string(), c);
                continue;
            }
            let addr = r.addr.to_string();
            let after = json!({ "store": s.store, "name": s.name, "value": "(sensitive)" });
            let mut c = change(&addr, "secret", &s.name, Action::NoOp);
            c.after_sensitive = json!({ "value": true });
            // A new value of a user's password is staged pending: the user's
            // password step sets it on the server, then makes it current.
            let user = secret::user_of(cfg, &r.addr);
            let write = |pending: bool| Step {
                address: addr.clone(),
                server: None,
                database: None,
                op: Op::WriteSecret { secret: r.addr.clone(), rds: inp.rds.get(&r.addr).cloned(), pending },
            };
            match inp.secrets.get(&r.addr) {
                None => {
                    if let Some((d, error)) = secret::lost(inp, &r.addr, s) {
                        drift.push(d);
                        errors.extend(error);
                        c.notes.push("its value is gone from the store: a new value is generated".into());
                    }
                    c.action = Action::Create;
                    c.steps.push(write(false));
                }
                Some(meta) if inp.replace.contains(&r.addr) && !meta.pending => {
                    c.before = Some(after.clone());
                    c.action = Action::Update;
                    c.attributes.push(AttrChange {
                        name: "value".into(),
                        before: json!("(sensitive)"),
                        after: json!("(sensitive)"),
                        forces_replacement: false,
                        sensitive: true,
                    });
                    c.notes.push("a new value, as asked with --replace".into());
                    if let Some(u) = &user {
                        c.notes.push(format!(
                            "pending until {u}'s server accepts it; services read the current one until then"
                        ));
                    }
                    c.steps.push(write(user.is_some()));
                }
                Some(meta) => {
                    c.before = Some(after.clone());
                    let rotation_due = s.rotate_every.as_deref().and_then(|every| {
                        let every = humantime::parse_duration(every).ok()?;
                        let created =
                            time::OffsetDateTime::parse(&meta.created, &time::format_description::well_known::Rfc3339)
                                .ok()?;
                        let age = inp.now - created;
                        (age.whole_seconds() >= 0 && age.unsigned_abs() >= every).then(|| {
                            format!(
                                "rotation due: the value is {} days old (rotate_every = \"{}\")",
                                age.whole_days(),
                                s.rotate_every.as_deref().unwrap_or("")
                            )
                        })
                    });
                    let value_changed =
                        s.value.as_ref().is_some_and(|v| crate::secrets::sha(v.expose()) != meta.value_hash);
                    if let Some(version) = &meta.rotation {
                        c.notes.push(match &user {
                            Some(u) => format!(
                                "rotation pending: version {version} becomes current once {u}'s password is set from it"
                            ),
                            None => format!("rotation pending: version {version} has no user to set it on"),
                        });
                    } else if meta.pending {
                        c.notes.push("a rotation is in progress in the store (AWSPENDING): left alone".into());
                        notes.push(format!(
                            "{addr}: a rotation is in progress in AWS Secrets Manager (AWSPENDING); dbctl leaves it alone."
                        ));
                    } else if value_changed || rotation_due.is_some() {
                        c.action = Action::Update;
                        c.attributes.push(AttrChange {
                            name: "value".into(),
                            before: json!("(sensitive)"),
                            after: json!("(sensitive)"),
                            forces_replacement: false,
                            sensitive: true,
                        });
                        let pending = user.is_some() && rotation_due.is_some();
                        c.notes.push(rotation_due.unwrap_or_else(|| "the given value changed".into()));
                        if let (true, Some(u)) = (pending, &user) {
                            c.notes.push(format!(
                                "pending until {u}'s server accepts it; services read the current one until then"
                            ));
                        }
                        c.steps.push(write(pending));
                    }
                }
            }
            c.after = Some(after);
            by_addr.insert(addr, c);
        }
    }

    /// Backup policies: their registration, and warnings about the backups themselves.
    fn backup_policies(&mut self) {
        let inp = self.inp;
        let cfg = inp.config;
        let Planner { ref mut notes, ref mut by_addr, .. } = *self;
        // Backup policies: their registration, and warnings about the backups themselves.
        for r in cfg.of_kind(Kind::BackupPolicy) {
            let Body::BackupPolicy(bp) = &r.body else { continue };
            if inp.destroy {
                continue;
            }
            let addr = r.addr.to_string();
            let after = json!({
                "databases": bp.databases.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "schedule": bp.schedule,
                "storage": bp.storage,
                "compression": bp.compression,
                "keep": bp.keep,
                "verify": bp.verify,
            });
            let mut c = change(&addr, "backup_policy", &r.addr.name, Action::NoOp);
            let in_state = inp.state.resources.get(&addr);
            match in_state {
                None => {
                    c.action = Action::Create;
                    let clusters: Vec<String> = cfg
                        .of_kind(Kind::RdsCluster)
                        .filter(
                            |x| matches!(&x.body, Body::RdsCluster(rc) if rc.backup_policy.as_ref() == Some(&r.addr)),
                        )
                        .map(|x| x.addr.to_string())
                        .collect();
                    if !clusters.is_empty() {
                        c.notes.push(format!("sets the backup retention and window of {}", clusters.join(", ")));
                    }
                    if !bp.databases.is_empty() || clusters.is_empty() {
                        c.notes.push("registered; `dbctl backup run --due` (from cron or CI) takes its backups".into());
                    }
                }
                Some(st) => {
                    c.before = Some(st.attributes.clone());
                    c.attributes = attr_changes(&st.attributes, &after, &[], &[]);
                    if !c.attributes.is_empty() {
                        c.action = Action::Update;
                    }
                }
            }
            c.after = Some(after);
            match inp.backups.get(&r.addr) {
                Some(Err(e)) => notes.push(format!("Warning: {addr}: its storage {} cannot be read: {e}", bp.storage)),
                Some(Ok(newest)) if in_state.is_some() => {
                    for db in &bp.databases {
                        let Some(name) = cfg.get(db).and_then(|d| d.object_name()) else { continue };
                        let last = newest.get(name).map(String::as_str);
                        let now = chrono::DateTime::<chrono::Utc>::from_timestamp(inp.now.unix_timestamp(), 0)
                            .unwrap_or_default();
                        if crate::backup::due(&bp.schedule, last, now) {
                            notes.push(match last {
                                Some(l) => format!("Warning: {addr}: the newest backup of {db} is from {l}, older than its schedule \"{}\" allows", bp.schedule),
                                None => format!("Warning: {addr}: {db} has no backup yet (schedule \"{}\")", bp.schedule),
                            });
                        }
                    }
                }
                _ => {}
            }
            by_addr.insert(addr, c);
        }
    }

    /// Migrations: the pending ones, one step each, in their database.
    fn migrations(&mut self) {
        let inp = self.inp;
        let cfg = inp.config;
        let Planner { ref want, ref mut errors, ref mut notes, ref mut by_addr, .. } = *self;
        // Migrations: the pending ones, one step each, in their database.
        for r in cfg.of_kind(Kind::Migrations) {
            let Body::Migrations(m) = &r.body else { continue };
            if inp.destroy {
                continue;
            }
            migrations(inp, &want, &r.addr, m, errors, notes, by_addr);
        }
    }

    /// Roles renamed by this plan, first: memberships in them follow the new names.
    fn role_renames(&mut self) {
        let inp = self.inp;
        let Planner { ref want, ref mut renames, .. } = *self;
        // Roles renamed by this plan, first: memberships in them follow the new names.
        for (server, roles) in &want.roles {
            let live = inp.live_of(server);
            for (name, d) in roles {
                let in_state = inp.state.resources.get(&d.addr.to_string());
                if let Some(old) = role_renamed_from(in_state, live, roles, name) {
                    if want.dialect(server).renames_role(d.login) {
                        renames.entry(server.clone()).or_default().roles.push((old, name.clone()));
                    }
                }
            }
        }
    }

    /// Roles and users on another thread, while this one plans the
    /// databases and grants: at thousands of each the two halves cost about
    /// the same. Neither reads what the other adds; the roles see the role
    /// renames as `role_renames` found them, before `databases` adds its own.
    fn roles_beside_databases_and_grants(&mut self) {
        let (inp, full) = (self.inp, self.full);
        let want = std::sync::Arc::clone(&self.want);
        let renames = self.renames.clone();
        // Secrets that get a new version in this plan: their users' passwords follow.
        let pending: FastHashSet<String> =
            self.by_addr.iter().filter(|(_, c)| c.action != Action::NoOp).map(|(a, _)| a.clone()).collect();
        let (errors_at, drift_at) = (self.errors.len(), self.drift.len());
        let done = std::thread::scope(|s| {
            // With the configuration's order, which only `finish` needs.
            let roles = s.spawn(|| (roles(inp, full, &want, &renames, &pending), config_order(inp.config)));
            self.databases();
            self.grants();
            roles.join()
        });
        let (part, order) = match done {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.order = order;
        // In the order a plan made on one thread has them: the roles' first.
        self.errors.splice(errors_at..errors_at, part.errors);
        self.drift.splice(drift_at..drift_at, part.drift);
        self.fingerprints.extend(part.fingerprints);
        self.by_addr.extend(part.by_addr);
    }

    /// Databases: created, changed, renamed or replaced.
    fn databases(&mut self) {
        let inp = self.inp;
        let fingerprinted = self.full;
        let cfg = inp.config;
        let Planner {
            ref want,
            ref mut errors,
            ref mut drift,
            ref mut fingerprints,
            ref mut by_addr,
            ref mut renames,
            ..
        } = *self;
        // Databases.
        for (server, dbs) in &want.databases {
            let live = inp.live_of(server);
            for (name, d) in dbs {
                let addr = d.addr.to_string();
                let res = cfg.get(&d.addr).expect("desired comes from config");
                let in_state = inp.state.resources.get(&addr);
                // `name` changed: the managed database still has the old one.
                let renamed_from = in_state
                    .map(|st| &st.name)
                    .filter(|old| {
                        *old != name
                            && !live.databases.contains_key(name)
                            && live.databases.contains_key(*old)
                            && !dbs.contains_key(*old)
                    })
                    .cloned();
                if let Some(old) = &renamed_from {
                    if fingerprinted {
                        fingerprints.insert(format!("{server}/database/{old}"), hash(&live.databases.get(old)));
                    }
                }
                let l = live.databases.get(name).or_else(|| renamed_from.as_ref().and_then(|o| live.databases.get(o)));
                if fingerprinted {
                    fingerprints.insert(format!("{server}/database/{name}"), hash(&live.databases.get(name)));
                }
                let mut after = db_json(d, l);
                drop_keys(&mut after, want.dialect(server).absent_attributes(Kind::Database));
                let mut c = change(&addr, "database", name, Action::NoOp);
                c.server = Some(server.to_string());
                c.after = Some(after.clone());
                let dialect = want.dialect(server);
                let ownerless = !dialect.database_owners();
                if let Some(e) = d.encoding.as_deref().filter(|e| !dialect.known_encoding(e)) {
                    errors.push(format!(
                        "{addr}: encoding \"{e}\" is not a PostgreSQL database encoding (for example UTF8, LATIN1, WIN1252, EUC_JP)"
                    ));
                    continue;
                }
                let create_steps = |c: &mut ResourceChange| {
                    c.steps.extend(steps(&addr, server, want.dialect(server).create_database(d)));
                };
                match l {
                    None => {
                        if in_state.is_some() {
                            drift.push(deleted_outside(&addr));
                        }
                        c.action = Action::Create;
                        create_steps(&mut c);
                    }
                    Some(l) => {
                        if in_state.is_none() {
                            errors.push(unmanaged("database", name, server, &addr));
                            continue;
                        }
                        let ignore = &res.lifecycle.ignore_changes;
                        let managed_ext: BTreeSet<String> = d
                            .extensions
                            .iter()
                            .cloned()
                            .chain(
                                in_state
                                    .and_then(|s| s.attributes["extensions"].as_array().cloned())
                                    .unwrap_or_default()
                                    .into_iter()
                                    .filter_map(|v| v.as_str().map(str::to_string)),
                            )
                            .collect();
                        let mut before = live_db_json(renamed_from.as_deref().unwrap_or(name), l, &managed_ext);
                        drop_keys(&mut before, dialect.absent_attributes(Kind::Database));
                        // Its owner, as it is once this plan's role renames ran.
                        let rn = renames.get(server);
                        if let (Some(rn), Some(owner)) = (rn, before["owner"].as_str()) {
                            before["owner"] = json!(rn.role(owner));
                        }
                        if let Some(st) = in_state {
                            drift_since_applied(&addr, &st.attributes, want.engine(server), rn, &before, ignore, drift);
                        }
                        c.before = Some(before.clone());
                        c.attributes = attr_changes(
                            &without(&before, ignore),
                            &without(&after, ignore),
                            dialect.database_replaced_by(),
                            &[],
                        );
                        if ownerless && !c.attributes.iter().any(|a| a.forces_replacement) {
                            let changed: Vec<&str> = c.attributes.iter().map(|a| a.name.as_str()).collect();
                            if let Some(stmt) = dialect.alter_database(d, &changed) {
                                c.steps.extend(steps(&addr, server, vec![stmt]));
                                c.action = Action::Update;
                            }
                            by_addr.insert(addr, c);
                            continue;
                        }
                        if c.attributes.iter().any(|a| a.forces_replacement) {
                            c.action = Action::Replace;
                            if res.lifecycle.prevent_destroy {
                                errors.push(format!(
                                    "{addr} has lifecycle.prevent_destroy, but this plan replaces it ({} changed)",
                                    c.attributes
                                        .iter()
                                        .filter(|a| a.forces_replacement)
                                        .map(|a| a.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ));
                            }
                            c.steps.push(drop_database(
                                &addr,
                                server,
                                Dialect::of(want.engine(server)),
                                renamed_from.as_deref().unwrap_or(name),
                                inp.force,
                            ));
                            create_steps(&mut c);
                            if let (Some(old), false) = (&renamed_from, dialect.renames_databases()) {
                                c.notes.push(format!(
                                    "MySQL and MariaDB cannot rename a database: \"{old}\" is dropped and \"{name}\" created empty"
                                ));
                            }
                        } else {
                            if let Some(old) = &renamed_from {
                                c.steps.push(sql(
                                    &addr,
                                    server,
                                    None,
                                    format!("ALTER DATABASE {} RENAME TO {}", pg_ident(old), pg_ident(name)),
                                ));
                                c.notes.push(format!("renamed from \"{old}\": its data, owner and grants go with it"));
                                renames.entry(server.clone()).or_default().databases.push((old.clone(), name.clone()));
                            }
                            for ch in &c.attributes {
                                match ch.name.as_str() {
                                    "owner" => c.steps.push(sql(
                                        &addr,
                                        server,
                                        None,
                                        format!("ALTER DATABASE {} OWNER TO {}", pg_ident(name), pg_ident(&d.owner)),
                                    )),
                                    "connection_limit" => c.steps.push(sql(
                                        &addr,
                                        server,
                                        None,
                                        format!(
                                            "ALTER DATABASE {} WITH CONNECTION LIMIT {}",
                                            pg_ident(name),
                                            d.connection_limit
                                        ),
                                    )),
                                    _ => {}
                                }
                            }
                            if let Some(det) = &l.detail {
                                for e in d.extensions.iter().filter(|e| !det.extensions.contains(*e)) {
                                    c.steps.push(sql(
                                        &addr,
                                        server,
                                        Some(name),
                                        format!("CREATE EXTENSION IF NOT EXISTS {}", pg_ident(e)),
                                    ));
                                }
                                for e in managed_ext
                                    .iter()
                                    .filter(|e| !d.extensions.contains(*e) && det.extensions.contains(*e))
                                {
                                    c.steps.push(sql(
                                        &addr,
                                        server,
                                        Some(name),
                                        format!("DROP EXTENSION IF EXISTS {}", pg_ident(e)),
                                    ));
                                }
                            }
                            if let Some(p) = l
                                .privileges
                                .get("PUBLIC")
                                .filter(|p| !p.is_empty() && !ignore.iter().any(|i| i == "public"))
                            {
                                let privs: Vec<&str> = p.iter().map(String::as_str).collect();
                                c.steps.push(sql(
                                    &addr,
                                    server,
                                    None,
                                    format!("REVOKE {} ON DATABASE {} FROM PUBLIC", privs.join(", "), pg_ident(name)),
                                ));
                                c.notes.push(format!("PUBLIC can {} on this database; dbctl-managed databases admit only their owner and granted roles", privs.join(", ")));
                            }
                            if !c.steps.is_empty() {
                                c.action = Action::Update;
                            }
                        }
                    }
                }
                by_addr.insert(addr, c);
            }
        }
    }

    /// Grants, explicit and router-derived, against each server as it is after this plan's renames.
    fn grants(&mut self) {
        let inp = self.inp;
        let full = self.full;
        let Planner { ref want, ref mut by_addr, ref mut renames, .. } = *self;
        // Grants: explicit (user.x.grant / role.x.grant) and router-derived,
        // against each server as it is after this plan's renames.
        let renamed: BTreeMap<&Address, (&Renames, LiveServer)> =
            renames.iter().map(|(server, r)| (server, (r, r.apply(inp.live_of(server))))).collect();
        // A database this plan replaces comes back empty: its grants are planned
        // as on a new database, not read from the one that is dropped.
        let mut replaced: BTreeMap<Address, LiveServer> = BTreeMap::new();
        for c in by_addr.values().filter(|c| c.kind == "database" && c.action == Action::Replace) {
            let Some(server) = c.server.as_deref().and_then(|s| Address::parse(s).ok()) else { continue };
            let base = renamed.get(&server).map(|(_, l)| l.clone()).unwrap_or_else(|| inp.live_of(&server).clone());
            replaced.entry(server).or_insert(base).databases.remove(&c.name);
        }
        // The last grant set's server, written out (one format per server, not per set).
        let mut server_name: Option<(&Address, String)> = None;
        for gs in &want.grants {
            let (live, rn) = match (replaced.get(&gs.server), renamed.get(&gs.server)) {
                (Some(l), r) => (l, r.map(|(rn, _)| *rn)),
                (None, Some((rn, l))) => (l, Some(*rn)),
                (None, None) => (inp.live_of(&gs.server), None),
            };
            let addr = gs.node.clone();
            let in_state = inp.state.resources.get(&addr);
            let mut recorded = in_state.map(|s| grants::recorded_targets(&s.attributes)).unwrap_or_default();
            let mut renamed_here = false;
            if let Some(rn) = rn {
                let was = recorded.clone();
                recorded.0 = rn.role(&recorded.0).to_string();
                recorded.1 = recorded
                    .1
                    .into_iter()
                    .map(|t| Target { database: rn.database(&t.database).to_string(), ..t })
                    .collect();
                renamed_here = in_state.is_some() && recorded != was;
            }
            // A managed grant set left alone needs its before and after values
            // only in a full plan; when it does change, it is diffed again with them.
            let lean = !full && in_state.is_some() && !renamed_here && gs.kind == "grant";
            let mut c = grants::diff_grant_set(gs, live, &recorded, want, !lean);
            if lean && c.action != Action::NoOp {
                c = grants::diff_grant_set(gs, live, &recorded, want, true);
            }
            if renamed_here && c.action == Action::NoOp {
                // Nothing to run, but the state must learn the new names.
                c.action = Action::Update;
                c.notes.push("follows the rename; recorded under the new names".into());
            }
            c.server = Some(match &server_name {
                Some((a, n)) if *a == &gs.server => n.clone(),
                _ => server_name.insert((&gs.server, gs.server.to_string())).1.clone(),
            });
            if gs.kind == "router" {
                for (app, db) in in_state.map(|s| grants::recorded_routes(&s.attributes)).unwrap_or_default() {
                    if !gs.routes.iter().any(|(a, d, _)| *a == app && *d == db) {
                        c.notes.push(format!(
                            "service \"{}\" app \"{app}\" loses access to database \"{db}\"",
                            gs.service.as_deref().unwrap_or_default()
                        ));
                    }
                }
                if let Ok(a) = Address::parse(&gs.node) {
                    publish(inp, &a, in_state.is_some(), &mut c);
                }
            }
            if in_state.is_none() && c.action == Action::NoOp && !gs.targets.is_empty() {
                // First time dbctl manages these grants, and they already hold: record them.
                c.action = Action::Update;
                c.notes.push("already in place; recorded as managed".into());
            }
            by_addr.insert(addr, c);
        }
    }

    /// What the state holds and the configuration no longer does: deleted, in reverse order of kind.
    fn removed(&mut self) {
        let inp = self.inp;
        let cfg = inp.config;
        let Planner { ref want, ref mut errors, ref mut by_addr, ref mut deletes, .. } = *self;
        // Resources in the state but not (any more) in the configuration.
        grant_what_migrations_create(by_addr);
        let desired_addrs = &*by_addr;
        // Databases this plan drops: roles dropped with them need no reassignment there.
        // A targeted plan drops only the databases it keeps.
        let dropping: BTreeSet<(Option<String>, String)> = inp
            .state
            .resources
            .iter()
            .filter(|(a, st)| st.kind == "database" && !desired_addrs.contains_key(*a))
            .filter(|(a, _)| inp.keep.is_none_or(|k| k.contains(*a)))
            .map(|(_, st)| (st.server.clone(), st.name.clone()))
            .collect();
        for (addr, st) in &inp.state.resources {
            if desired_addrs.contains_key(addr) || st.kind == "rds_cluster" {
                // RDS clusters are planned by crate::rds::plan.
                continue;
            }
            if let Ok(a) = Address::parse(addr) {
                if let Some(r) = cfg.get(&a) {
                    if r.lifecycle.prevent_destroy {
                        errors.push(format!("{addr} has lifecycle.prevent_destroy and cannot be destroyed"));
                        continue;
                    }
                }
            }
            let server = st.server.as_deref().and_then(|s| Address::parse(s).ok());
            let live = server.as_ref().map(|s| inp.live_of(s));
            let mut c = change(addr, &st.kind, &st.name, Action::Delete);
            c.server = st.server.clone();
            c.before = Some(st.attributes.clone());
            match (st.kind.as_str(), &server, live) {
                ("user" | "role", Some(server), Some(live)) if !want.dialect(server).roles_own_objects() => {
                    if let Some(stmt) =
                        live.roles.get(&st.name).and_then(|l| want.dialect(server).drop_account(&st.name, l))
                    {
                        c.steps.extend(steps(addr, server, vec![stmt]));
                    }
                }
                ("user" | "role", Some(server), Some(live)) => {
                    if live.roles.contains_key(&st.name) {
                        // Clean up only where dbctl manages the database and can connect:
                        // other databases are not its business, and one that refuses
                        // connections must never block the removal.
                        let managed = managed_databases(inp, &want, server);
                        let mut cleaned = Vec::new();
                        for (db, ldb) in live.databases.iter().filter(|(db, _)| managed.contains(*db)) {
                            if !live.exists {
                                break;
                            }
                            if dropping.contains(&(st.server.clone(), db.clone())) {
                                continue;
                            }
                            if !admin_can_connect(live, ldb) {
                                c.notes.push(format!(
                                    "database \"{db}\" does not admit {} connections: what {} owns there is not reassigned",
                                    live.admin, st.name
                                ));
                                continue;
                            }
                            cleaned.push(format!("\"{db}\""));
                            let to = if ldb.owner == st.name { live.admin.clone() } else { ldb.owner.clone() };
                            c.steps.push(sql(
                                addr,
                                server,
                                Some(db),
                                format!(
                                    "REASSIGN OWNED BY {} TO {}; DROP OWNED BY {}",
                                    pg_ident(&st.name),
                                    pg_ident(&to),
                                    pg_ident(&st.name)
                                ),
                            ));
                        }
                        if !cleaned.is_empty() {
                            c.notes.push(format!(
                                "what it owns is reassigned, and its privileges dropped, in the databases dbctl manages: {}",
                                cleaned.join(", ")
                            ));
                        }
                        c.steps.push(sql(addr, server, None, format!("DROP ROLE {}", pg_ident(&st.name))));
                    }
                }
                ("database", Some(server), Some(live)) => {
                    if live.databases.contains_key(&st.name) {
                        c.steps.push(drop_database(
                            addr,
                            server,
                            Dialect::of(want.engine(server)),
                            &st.name,
                            inp.force,
                        ));
                    }
                }
                ("grant" | "router", Some(server), Some(live)) => {
                    let targets = grants::recorded_targets(&st.attributes);
                    c.steps = grants::revoke_all(addr, server, live, &targets, &want);
                    if let Some(path) = st.attributes["publish_file"].as_str() {
                        c.steps.push(Step {
                            address: addr.clone(),
                            server: None,
                            database: None,
                            op: Op::Unpublish { path: path.to_string() },
                        });
                    }
                    if st.kind == "router" {
                        for (app, db) in grants::recorded_routes(&st.attributes) {
                            c.notes.push(format!(
                                "service \"{}\" app \"{app}\" loses access to database \"{db}\"",
                                st.attributes["service"].as_str().unwrap_or(&st.name)
                            ));
                        }
                    }
                }
                ("secret", _, _) => {
                    let store = if st.attributes["store"] == "aws" {
                        crate::model::Store::Aws
                    } else {
                        crate::model::Store::Local
                    };
                    c.steps.push(Step {
                        address: addr.clone(),
                        server: None,
                        database: None,
                        op: Op::DeleteSecret { store, name: st.name.clone() },
                    });
                }
                ("server", _, _) => {
                    c.notes.push("an embedded server keeps its data directory; `dbctl dev down` stops it".into())
                }
                _ => {}
            }
            deletes.push(c);
        }
        deletes.sort_by(|a, b| kind_rank(&a.kind).cmp(&kind_rank(&b.kind)).then(a.address.cmp(&b.address)));
    }

    /// The changes in order: deletes first, then the configuration's graph order.
    fn finish(self) -> Result<Diffed, Vec<String>> {
        let Planner { errors, notes, drift, fingerprints, mut by_addr, deletes, order, want, .. } = self;
        // Freeing thousands of desired objects is left to another thread.
        if want.grants.len() + want.roles.values().map(BTreeMap::len).sum::<usize>() >= 1000 {
            std::thread::spawn(move || drop(want));
        } else {
            drop(want);
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut changes = deletes;
        changes.reserve(by_addr.len());
        for a in &order {
            if let Some(c) = by_addr.remove(a) {
                changes.push(c);
            }
        }
        // What the order does not name, by address.
        let mut rest: Vec<(String, ResourceChange)> = by_addr.into_iter().collect();
        rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        changes.extend(rest.into_iter().map(|(_, c)| c));
        Ok(Diffed { changes, drift, notes, fingerprints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LiveRole;

    /// What `role_unchanged` stands in for: the attributes and drift found
    /// by building and comparing the JSON values.
    fn slow(recorded: &Value, name: &str, d: &DesiredRole, l: &LiveRole) -> bool {
        let after = role_json(d);
        let mut before = live_role_json(name, l);
        managed_flags(&mut before, &after);
        let mut drift = Vec::new();
        drift_since_applied("user.a", recorded, EngineKind::Postgres, None, &before, &[], &mut drift);
        attr_changes(&before, &after, &[], &[]).is_empty() && drift.is_empty()
    }

    #[test]
    fn role_unchanged_agrees_with_comparing_the_json_values() {
        let d = DesiredRole {
            addr: Address::new(Kind::User, "a"),
            name: "a b;\"é".into(),
            login: true,
            connection_limit: -1,
            valid_until: None,
            member_of: BTreeSet::from(["r1".to_string(), "r 2".to_string()]),
            password: None,
            host: None,
            flags: BTreeMap::new(),
        };
        let l = LiveRole { login: true, connection_limit: -1, member_of: d.member_of.clone(), ..Default::default() };
        let name = d.name.clone();
        let recorded = live_role_json(&name, &l);
        let mut cases: Vec<(Value, DesiredRole, LiveRole)> = vec![(recorded.clone(), d.clone(), l.clone())];
        // Each a change or drift the slow path finds, or a recorded null that is none.
        let mut v = recorded.clone();
        v["connection_limit"] = json!(5);
        cases.push((v, d.clone(), l.clone()));
        let mut v = recorded.clone();
        v["connection_limit"] = Value::Null;
        cases.push((v, d.clone(), l.clone()));
        let mut v = recorded.clone();
        v["member_of"] = json!(["r1"]);
        cases.push((v, d.clone(), l.clone()));
        let mut v = recorded.clone();
        v["valid_until"] = json!("2030-01-01T00:00:00Z");
        cases.push((v, d.clone(), l.clone()));
        let mut v = recorded.clone();
        v["connection_limit"] = json!(-1.0);
        cases.push((v, d.clone(), l.clone()));
        let mut v = recorded.clone();
        v["createdb"] = json!(true);
        cases.push((v, d.clone(), l.clone()));
        cases.push((json!({}), d.clone(), l.clone()));
        cases.push((recorded.clone(), DesiredRole { connection_limit: 3, ..d.clone() }, l.clone()));
        cases.push((recorded.clone(), DesiredRole { login: false, ..d.clone() }, l.clone()));
        cases.push((recorded.clone(), DesiredRole { member_of: BTreeSet::new(), ..d.clone() }, l.clone()));
        cases.push((
            recorded.clone(),
            DesiredRole { valid_until: Some("2030-01-01T00:00:00Z".into()), ..d.clone() },
            l.clone(),
        ));
        let createdb = DesiredRole { flags: BTreeMap::from([("createdb".to_string(), true)]), ..d.clone() };
        let live_createdb = LiveRole { flags: BTreeSet::from(["createdb".to_string()]), ..l.clone() };
        cases.push((recorded.clone(), createdb.clone(), l.clone()));
        cases.push((recorded.clone(), createdb.clone(), live_createdb.clone()));
        let mut v = recorded.clone();
        v["createdb"] = json!(false);
        cases.push((v.clone(), createdb.clone(), live_createdb.clone()));
        cases.push((v, d.clone(), live_createdb.clone()));
        let no_createdb = DesiredRole { flags: BTreeMap::from([("createdb".to_string(), false)]), ..d.clone() };
        cases.push((recorded.clone(), no_createdb.clone(), l.clone()));
        cases.push((recorded.clone(), no_createdb, live_createdb));
        // A flag outside ROLE_FLAGS the server reports stays in the live value.
        let odd = LiveRole { flags: BTreeSet::from(["odd".to_string()]), ..l.clone() };
        cases.push((recorded.clone(), d.clone(), odd.clone()));
        let mut v = recorded.clone();
        v["odd"] = json!(false);
        cases.push((v, d.clone(), odd));
        let mut v = recorded.clone();
        v["valid_until"] = json!("2030-01-01T00:00:00Z");
        let until = Some("2030-01-01T00:00:00Z".to_string());
        cases.push((
            v,
            DesiredRole { valid_until: until.clone(), ..d.clone() },
            LiveRole { valid_until: until, ..l.clone() },
        ));
        let mut unchanged = 0;
        for (i, (recorded, d, l)) in cases.iter().enumerate() {
            let fast = role_unchanged(recorded, &name, d, l);
            // Never unchanged where the values differ; unchanged wherever they
            // agree (so the fast path is taken in the common case).
            assert_eq!(fast, slow(recorded, &name, d, l), "case {i}");
            unchanged += usize::from(fast);
        }
        assert!(unchanged >= 5, "{unchanged}");
    }
}
