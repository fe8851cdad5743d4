//! The configuration as the objects each server should hold.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::FastHashSet as HashSet;

use crate::engine::dialect::Dialect;
use crate::engine::LiveServer;
use crate::model::GrantClass;
use crate::model::{Access, Address, Body, Config, DesiredDb, DesiredRole, EngineKind, Grant, Target};
use crate::state::State;

/// The grants of one grantee that one resource manages: a user's or role's
/// grant blocks (`user.x.grant`), or what a router derives (`router.x`).
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSet {
    pub node: String,
    pub kind: &'static str,
    pub server: Address,
    pub grantee: String,
    pub targets: BTreeMap<Target, BTreeSet<String>>,
    /// Routers: service and (app label, database name, access) per route.
    pub service: Option<String>,
    pub routes: Vec<(String, String, Access)>,
}

#[derive(Debug, Default)]
pub struct Desired {
    pub roles: BTreeMap<Address, BTreeMap<String, DesiredRole>>,
    pub databases: BTreeMap<Address, BTreeMap<String, DesiredDb>>,
    pub grants: Vec<GrantSet>,
    pub engines: BTreeMap<Address, EngineKind>,
}

impl Desired {
    pub fn engine(&self, server: &Address) -> EngineKind {
        self.engines.get(server).copied().unwrap_or(EngineKind::Postgres)
    }

    /// The rules and spelling of `server`'s engine.
    pub fn dialect(&self, server: &Address) -> Dialect {
        Dialect::of(self.engine(server))
    }

    /// How a grantee is written in GRANT and REVOKE on `server`.
    pub fn grantee(&self, server: &Address, name: &str, live: &LiveServer) -> String {
        let dialect = self.dialect(server);
        let host = match self.roles.get(server).and_then(|r| r.get(name)) {
            Some(r) => r.host.clone(),
            None => live.roles.get(name).filter(|r| r.login).map(|r| r.host.clone()),
        };
        dialect.account(name, host.as_deref().filter(|_| dialect.has_hosts()))
    }

    pub fn db_owner(&self, server: &Address, db: &str) -> Option<&str> {
        self.databases.get(server)?.get(db).map(|d| d.owner.as_str())
    }
}

fn utc(ts: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(ts, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => ts.to_string(),
    }
}

fn name_of(cfg: &Config, a: &Address) -> Option<String> {
    cfg.get(a).and_then(|r| r.object_name()).map(str::to_string)
}

fn targets_of(cfg: &Config, dialect: Dialect, grants: &[Grant]) -> BTreeMap<Target, BTreeSet<String>> {
    let mut out: BTreeMap<Target, BTreeSet<String>> = BTreeMap::new();
    for g in grants {
        let Some(db) = name_of(cfg, &g.database) else { continue };
        // MySQL: `tables = "*"` and a plain database grant are both `db.*`.
        let class = dialect.grant_class(g);
        let schema = if class == GrantClass::Database { None } else { g.schema.clone() };
        let t = Target { database: db, schema, class };
        out.entry(t).or_default().extend(g.privileges.iter().cloned());
    }
    out
}

/// The owner the state recorded for a managed PostgreSQL database whose
/// owner was left to dbctl: the admin that created it. Not a role dbctl
/// manages (a configured `owner` that was removed falls back to the admin),
/// nor one the server no longer has. `managed`: the (server, name) of every
/// user and role in the state, gathered once (a scan of the whole state per
/// database was quadratic).
fn recorded_owner(
    state: Option<&State>,
    managed: &HashSet<(&str, &str)>,
    live: Option<&LiveServer>,
    server: &Address,
    addr: &Address,
) -> Option<String> {
    let state = state?;
    let st = state.resources.get(&addr.to_string())?;
    if st.kind != "database" {
        return None;
    }
    let owner = st.attributes.get("owner").and_then(|o| o.as_str()).filter(|o| !o.is_empty())?;
    let on = server.to_string();
    let managed = managed.contains(&(on.as_str(), owner));
    let gone = live.is_some_and(|l| l.exists && !l.roles.contains_key(owner));
    (!managed && !gone).then(|| owner.to_string())
}

/// A role or user, and its grant blocks as one grant set (`ADDR.grant`).
fn add_role(d: &mut Desired, cfg: &Config, server: &Address, role: DesiredRole, grants: &[Grant]) {
    if !grants.is_empty() {
        d.grants.push(GrantSet {
            node: crate::model::Node::Grants(role.addr.clone()).to_string(),
            kind: "grant",
            server: server.clone(),
            grantee: role.name.clone(),
            targets: targets_of(cfg, d.dialect(server), grants),
            service: None,
            routes: vec![],
        });
    }
    d.roles.entry(server.clone()).or_default().insert(role.name.clone(), role);
}

/// Each configured server's engine.
pub fn engines(cfg: &Config) -> BTreeMap<Address, EngineKind> {
    cfg.resources
        .values()
        .filter_map(|r| match &r.body {
            Body::Server(s) => Some((r.addr.clone(), s.engine)),
            _ => None,
        })
        .collect()
}

/// `state`: a database whose owner the configuration leaves to dbctl keeps
/// the owner recorded when it was created (the admin who created it), so the
/// plan does not depend on which login makes it.
pub fn desired(cfg: &Config, live: &BTreeMap<Address, LiveServer>, state: Option<&State>) -> Desired {
    let mut d = without_databases(cfg);
    add_databases(&mut d, cfg, live, state);
    d
}

/// What the configuration wants that does not depend on what the servers
/// hold: every role and user, and every grant set. A plan works it out while
/// the servers are read; [`add_databases`] completes it once they are.
pub fn without_databases(cfg: &Config) -> Desired {
    let mut d = Desired { engines: engines(cfg), ..Desired::default() };
    for r in cfg.resources.values() {
        match &r.body {
            Body::Role(ro) => {
                let role = DesiredRole {
                    addr: r.addr.clone(),
                    name: ro.name.clone(),
                    login: false,
                    connection_limit: -1,
                    valid_until: None,
                    member_of: ro.member_of.iter().filter_map(|m| name_of(cfg, m)).collect(),
                    password: None,
                    host: None,
                    flags: BTreeMap::new(),
                };
                add_role(&mut d, cfg, &ro.server, role, &ro.grants);
            }
            Body::User(u) => {
                let role = DesiredRole {
                    addr: r.addr.clone(),
                    name: u.name.clone(),
                    login: true,
                    connection_limit: u.connection_limit,
                    valid_until: u.valid_until.as_deref().map(utc),
                    member_of: u.member_of.iter().filter_map(|m| name_of(cfg, m)).collect(),
                    password: u.password.clone(),
                    // The server stores a host in lower case.
                    host: d.dialect(&u.server).has_hosts().then(|| u.host.as_deref().unwrap_or("%").to_lowercase()),
                    flags: u.flags.iter().cloned().collect(),
                };
                add_role(&mut d, cfg, &u.server, role, &u.grants);
            }
            Body::Router(rt) => {
                let (Some(user), Some(server)) =
                    (name_of(cfg, &rt.user), cfg.get(&rt.user).and_then(|u| u.server()).cloned())
                else {
                    continue;
                };
                let mut targets: BTreeMap<Target, BTreeSet<String>> = BTreeMap::new();
                let mut grant = |db: &str, access: Access| {
                    for (class, privs) in d.dialect(&server).access_privileges(access) {
                        let schema = (class != GrantClass::Database).then(|| "public".to_string());
                        targets
                            .entry(Target { database: db.to_string(), schema, class })
                            .or_default()
                            .extend(privs.iter().map(|p| p.to_string()));
                    }
                };
                let mut routes = Vec::new();
                for route in &rt.routes {
                    let Some(db) = name_of(cfg, &route.database) else { continue };
                    grant(&db, route.access);
                    routes.push((route.app.clone(), db, route.access));
                }
                // An admin router has owner access to every database the
                // routers it migrates route: on PostgreSQL by owning them, on
                // MySQL/MariaDB (no owners) by every database privilege.
                for m in &rt.migrates {
                    let Some(Body::Router(other)) = cfg.get(m).map(|x| &x.body) else { continue };
                    for db in other.routes.iter().filter_map(|route| name_of(cfg, &route.database)) {
                        grant(&db, Access::Owner);
                    }
                }
                d.grants.push(GrantSet {
                    node: r.addr.to_string(),
                    kind: "router",
                    server,
                    grantee: user,
                    targets,
                    service: Some(rt.service.clone()),
                    routes,
                });
            }
            _ => {}
        }
    }
    d
}

/// The databases `d` wants on each server (their owners can depend on the
/// server's admin and on the state).
pub fn add_databases(d: &mut Desired, cfg: &Config, live: &BTreeMap<Address, LiveServer>, state: Option<&State>) {
    let admin = |server: &Address| {
        live.get(server).filter(|l| l.exists).map(|l| l.admin.clone()).unwrap_or_else(|| "postgres".to_string())
    };
    // Users and roles the state manages, by (server, name): what a
    // database's recorded owner is checked against.
    let managed_roles: HashSet<(&str, &str)> = state
        .into_iter()
        .flat_map(|s| s.resources.values())
        .filter(|r| matches!(r.kind.as_str(), "user" | "role"))
        .filter_map(|r| Some((r.server.as_deref()?, r.name.as_str())))
        .collect();
    // Routers with access = "owner" make their user the database's owner.
    let mut router_owner: BTreeMap<Address, String> = BTreeMap::new();
    for r in cfg.resources.values() {
        if let Body::Router(rt) = &r.body {
            for route in rt.routes.iter().filter(|x| x.access == Access::Owner) {
                if let Some(u) = name_of(cfg, &rt.user) {
                    router_owner.entry(route.database.clone()).or_insert(u);
                }
            }
            // An admin router's user owns every database the routers it migrates route.
            for m in &rt.migrates {
                let (Some(Body::Router(other)), Some(u)) = (cfg.get(m).map(|x| &x.body), name_of(cfg, &rt.user)) else {
                    continue;
                };
                for route in &other.routes {
                    router_owner.entry(route.database.clone()).or_insert_with(|| u.clone());
                }
            }
        }
    }
    for r in cfg.resources.values() {
        match &r.body {
            Body::Database(db) if !d.dialect(&db.server).database_owners() => {
                // MySQL/MariaDB databases have no owner and no connection limit.
                let want = DesiredDb {
                    addr: r.addr.clone(),
                    name: db.name.clone(),
                    owner: String::new(),
                    // The server stores character sets and collations in lower case (and utf8 as utf8mb3).
                    encoding: db.encoding.as_deref().map(crate::engine::mysql::canonical_charset),
                    collation: db.collation.as_deref().map(crate::engine::mysql::canonical_charset),
                    connection_limit: -1,
                    extensions: BTreeSet::new(),
                };
                d.databases.entry(db.server.clone()).or_default().insert(db.name.clone(), want);
            }
            Body::Database(db) => {
                let owner = db
                    .owner
                    .as_ref()
                    .and_then(|o| name_of(cfg, o))
                    .or_else(|| router_owner.get(&r.addr).cloned())
                    .or_else(|| recorded_owner(state, &managed_roles, live.get(&db.server), &db.server, &r.addr))
                    .unwrap_or_else(|| admin(&db.server));
                let want = DesiredDb {
                    addr: r.addr.clone(),
                    name: db.name.clone(),
                    owner,
                    // As the server names it, so another spelling is no change.
                    encoding: db
                        .encoding
                        .as_deref()
                        .map(|e| crate::engine::postgres::pg_encoding(e).map_or_else(|| e.to_string(), str::to_string)),
                    collation: db.collation.clone(),
                    connection_limit: db.connection_limit,
                    extensions: db.extensions.iter().cloned().collect(),
                };
                d.databases.entry(db.server.clone()).or_default().insert(db.name.clone(), want);
            }
            _ => {}
        }
    }
}
