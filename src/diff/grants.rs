//! Grants are authoritative per target (grantee, database, schema, object
//! class): GRANT the missing privileges and REVOKE the extra ones, one
//! statement each — never REVOKE ALL then GRANT. `tables = "*"` covers the
//! tables that exist (ON ALL TABLES IN SCHEMA) and those created later by the
//! database's owner (ALTER DEFAULT PRIVILEGES FOR ROLE owner).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::desired::{Desired, GrantSet};
use super::{change, sql};
use crate::engine::dialect::Dialect;
use crate::engine::sql::pg_ident;
use crate::engine::{LiveServer, Privs};
use crate::model::GrantClass;
use crate::model::Target;
use crate::model::{Address, EngineKind};
use crate::plan::{Action, ResourceChange, Step};

fn list(p: &BTreeSet<String>) -> String {
    p.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Nothing held (what a grantee absent from a catalog holds).
static NONE: Privs = Privs::new();

/// What `grantee` holds on a target now, borrowed from the server's catalog.
struct Held<'a> {
    /// On every existing object (None: there are no objects, so nothing to grant on them).
    all: Option<&'a Privs>,
    /// On at least one existing object (what must be revoked if unwanted).
    any: &'a Privs,
    /// Default privileges for future objects (tables and sequences only).
    default: Option<&'a Privs>,
}

impl Held<'_> {
    /// What a reader should see as the current privileges: for tables and
    /// sequences, what existing and future objects both have.
    fn shown(&self) -> Privs {
        match (self.all, self.default) {
            (Some(a), Some(d)) => a.intersection(d).cloned().collect(),
            (None, Some(d)) => d.clone(),
            (Some(a), None) => a.clone(),
            (None, None) => self.any.clone(),
        }
    }
}

fn live_privs<'a>(live: &'a LiveServer, grantee: &str, t: &Target, for_role: &str) -> Held<'a> {
    let held = |p: Option<&'a Privs>| {
        let p = p.unwrap_or(&NONE);
        Held { all: Some(p), any: p, default: None }
    };
    let Some(db) = live.databases.get(&t.database) else {
        return match t.class {
            GrantClass::Tables | GrantClass::Sequences => Held { all: None, any: &NONE, default: Some(&NONE) },
            _ => held(None),
        };
    };
    if t.class == GrantClass::Database {
        return held(db.privileges.get(grantee));
    }
    let sc = db.detail.as_ref().and_then(|d| d.schemas.get(t.schema.as_deref().unwrap_or("public")));
    match (t.class, sc) {
        (GrantClass::Schema, Some(sc)) => held(sc.privileges.get(grantee)),
        (GrantClass::Schema, None) => held(None),
        (_, None) => Held { all: None, any: &NONE, default: Some(&NONE) },
        (_, Some(sc)) => {
            let (cp, defs) = if t.class == GrantClass::Tables {
                (&sc.tables, &sc.default_tables)
            } else {
                (&sc.sequences, &sc.default_sequences)
            };
            let all = (cp.count > 0).then(|| cp.all.get(grantee).unwrap_or(&NONE));
            let any = cp.any.get(grantee).unwrap_or(&NONE);
            let def = defs.get(for_role).and_then(|m| m.get(grantee)).unwrap_or(&NONE);
            Held { all, any, default: Some(def) }
        }
    }
}

fn on(engine: EngineKind, t: &Target) -> String {
    Dialect::of(engine).grant_on(t)
}

fn in_db(t: &Target) -> Option<&str> {
    (t.class != GrantClass::Database).then_some(t.database.as_str())
}

/// Statements that take `grantee` on `t` from (all, any, default) to `want`.
/// `who`: the engine and how the grantee is written, worked out only when
/// there is a statement to write (at thousands of unchanged grant sets,
/// quoting each grantee was a sixth of their diff).
#[allow(clippy::too_many_arguments)]
fn delta(
    addr: &str,
    server: &Address,
    who: &dyn Fn() -> (EngineKind, String),
    t: &Target,
    want: &Privs,
    held: &Held,
    for_role: &str,
    owner_is_grantee: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if owner_is_grantee && t.class == GrantClass::Database {
        return steps; // The owner holds every privilege on its database.
    }
    // Compared before anything is collected: most grant sets change nothing.
    let unchanged = held.all.is_none_or(|all| want.is_subset(all)) && held.any.is_subset(want);
    if unchanged && held.default.is_none_or(|def| def == want) {
        return steps;
    }
    let add: Privs = held.all.map(|all| want.difference(all).cloned().collect()).unwrap_or_default();
    let extra: Privs = held.any.difference(want).cloned().collect();
    let (engine, g) = who();
    if !add.is_empty() {
        steps.push(sql(addr, server, in_db(t), format!("GRANT {} ON {} TO {g}", list(&add), on(engine, t))));
    }
    if !extra.is_empty() {
        steps.push(sql(addr, server, in_db(t), format!("REVOKE {} ON {} FROM {g}", list(&extra), on(engine, t))));
    }
    if let Some(def) = held.default {
        let objects = if t.class == GrantClass::Tables { "TABLES" } else { "SEQUENCES" };
        let head = format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {}",
            pg_ident(for_role),
            pg_ident(t.schema.as_deref().unwrap_or("public"))
        );
        let dadd: Privs = want.difference(def).cloned().collect();
        let dextra: Privs = def.difference(want).cloned().collect();
        if !dadd.is_empty() {
            steps.push(sql(addr, server, in_db(t), format!("{head} GRANT {} ON {objects} TO {g}", list(&dadd))));
        }
        if !dextra.is_empty() {
            steps.push(sql(addr, server, in_db(t), format!("{head} REVOKE {} ON {objects} FROM {g}", list(&dextra))));
        }
    }
    steps
}

fn target_json(t: &Target, p: &Privs) -> Value {
    json!({ "database": t.database, "schema": t.schema, "on": t.class.as_str(), "privileges": p })
}

/// A field of an object recorded in the state, `Null` when absent.
fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    static ABSENT: Value = Value::Null;
    v.as_object().and_then(|m| super::field(m, key)).unwrap_or(&ABSENT)
}

/// The grantee and targets a state entry recorded.
pub fn recorded_targets(attrs: &Value) -> (String, BTreeSet<Target>) {
    let grantee = field(attrs, "grantee").as_str().unwrap_or_default().to_string();
    let targets = field(attrs, "grants")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let class = match field(g, "on").as_str()? {
                "database" => GrantClass::Database,
                "schema" => GrantClass::Schema,
                "tables" => GrantClass::Tables,
                "sequences" => GrantClass::Sequences,
                _ => return None,
            };
            Some(Target {
                database: field(g, "database").as_str()?.to_string(),
                schema: field(g, "schema").as_str().map(str::to_string),
                class,
            })
        })
        .collect();
    (grantee, targets)
}

pub fn recorded_routes(attrs: &Value) -> Vec<(String, String)> {
    attrs["routes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(app, r)| (app.clone(), r["database"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Everything the configuration grants `grantee` on `server`, per database:
/// what an engine that writes grants per account (Redis) is given at once.
fn account_grants(want: &Desired, server: &Address, grantee: &str) -> BTreeMap<String, Privs> {
    let mut out: BTreeMap<String, Privs> = BTreeMap::new();
    for g in want.grants.iter().filter(|g| &g.server == server && g.grantee == grantee) {
        for (t, p) in g.targets.iter().filter(|(_, p)| !p.is_empty()) {
            out.entry(t.database.clone()).or_default().extend(p.iter().cloned());
        }
    }
    out
}

/// What `grantee` holds on `server` now, per database (database-level grants).
fn live_account_grants(live: &LiveServer, grantee: &str) -> BTreeMap<String, Privs> {
    live.databases
        .iter()
        .filter_map(|(n, d)| d.privileges.get(grantee).filter(|p| !p.is_empty()).map(|p| (n.clone(), p.clone())))
        .collect()
}

/// Whether `grantee`'s permissions hold rules dbctl does not write.
fn has_custom_acl(live: &LiveServer, grantee: &str) -> bool {
    live.roles.get(grantee).is_some_and(|r| r.flags.contains(crate::engine::redis::acl::CUSTOM_ACL))
}

/// On an engine that writes a user's grants as a whole: the one statement
/// that gives `grantee` all the configuration grants it, when that differs
/// from what it holds.
fn account_step(addr: &str, server: &Address, grantee: &str, live: &LiveServer, want: &Desired) -> Vec<Step> {
    let full = account_grants(want, server, grantee);
    // Rules dbctl does not write (added by hand) make the user's permissions differ too.
    if full == live_account_grants(live, grantee) && !has_custom_acl(live, grantee) {
        return Vec::new();
    }
    match want.dialect(server).set_account_grants(grantee, &full) {
        Ok(stmt) => vec![sql(addr, server, None, stmt)],
        // The configuration checks refuse what the engine cannot grant on.
        Err(e) => unreachable!("validated: {e}"),
    }
}

/// `values`: whether to give the change its before and after values (what
/// the JSON plan, a saved plan and the state read; the steps never depend on them).
pub fn diff_grant_set(
    gs: &GrantSet,
    live: &LiveServer,
    recorded: &(String, BTreeSet<Target>),
    want: &Desired,
    values: bool,
) -> ResourceChange {
    let mut c = change(&gs.node, gs.kind, &gs.grantee, Action::NoOp);
    let mut before = Vec::new();
    let mut after = Vec::new();
    // The configured targets, and those recorded that are no longer (their
    // privileges revoked), in one order; borrowed, as most sets have one.
    let dropped: Vec<&Target> = if recorded.0 == gs.grantee {
        recorded.1.iter().filter(|t| !gs.targets.contains_key(*t)).collect()
    } else {
        Vec::new()
    };
    let mut all_targets: Vec<&Target> = gs.targets.keys().chain(dropped.iter().copied()).collect();
    if !dropped.is_empty() {
        all_targets.sort();
    }
    let per_account = want.dialect(&gs.server).grants_per_account();
    for t in all_targets {
        let configured = gs.targets.get(t);
        let want_p = configured.unwrap_or(&NONE);
        let owner: &str = want
            .db_owner(&gs.server, &t.database)
            .or_else(|| live.databases.get(&t.database).map(|d| d.owner.as_str()))
            .unwrap_or(&live.admin);
        let held = live_privs(live, &gs.grantee, t, owner);
        if values && (t.class != GrantClass::Database || owner != gs.grantee) {
            before.push(target_json(t, &held.shown()));
        }
        if values && configured.is_some() {
            after.push(target_json(t, want_p));
        }
        if !per_account {
            let who = || (want.engine(&gs.server), want.grantee(&gs.server, &gs.grantee, live));
            c.steps.extend(delta(&gs.node, &gs.server, &who, t, want_p, &held, owner, owner == gs.grantee));
        }
        if configured.is_none() {
            c.notes.push(format!("no longer managed: {} on {}", t.class.as_str(), t.database));
        }
    }
    if per_account {
        c.steps = account_step(&gs.node, &gs.server, &gs.grantee, live, want);
        if has_custom_acl(live, &gs.grantee) {
            c.notes.push(format!(
                "\"{}\" has permissions dbctl did not write (changed on the server): they are written again",
                gs.grantee
            ));
        }
    }
    if values {
        let mut b = json!({ "grantee": gs.grantee, "grants": before });
        let mut a = json!({ "grantee": gs.grantee, "grants": after });
        if let Some(service) = &gs.service {
            let routes: serde_json::Map<String, Value> = gs
                .routes
                .iter()
                .map(|(app, db, access)| (app.clone(), json!({ "database": db, "access": access })))
                .collect();
            a["service"] = json!(service);
            a["routes"] = Value::Object(routes);
            b["service"] = json!(service);
        }
        c.before = Some(b);
        c.after = Some(a);
    }
    if !c.steps.is_empty() {
        c.action = if live.exists && live.roles.contains_key(&gs.grantee) { Action::Update } else { Action::Create };
    }
    c
}

/// Revoke everything a removed grant set or router had granted.
pub fn revoke_all(
    addr: &str,
    server: &Address,
    live: &LiveServer,
    recorded: &(String, BTreeSet<Target>),
    want: &Desired,
) -> Vec<Step> {
    let (grantee, targets) = recorded;
    let who = (want.engine(server), want.grantee(server, grantee, live));
    if !live.roles.contains_key(grantee) {
        return Vec::new();
    }
    if want.dialect(server).grants_per_account() {
        return account_step(addr, server, grantee, live, want);
    }
    let mut steps = Vec::new();
    for t in targets {
        let owner = live.databases.get(&t.database).map(|d| d.owner.clone()).unwrap_or_else(|| live.admin.clone());
        if !live.databases.contains_key(&t.database) {
            continue;
        }
        let held = live_privs(live, grantee, t, &owner);
        steps.extend(delta(addr, server, &|| who.clone(), t, &NONE, &held, &owner, &owner == grantee));
    }
    steps
}
