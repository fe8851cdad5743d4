//! Reaching the servers: where `.dbctl` is, each server's endpoint and admin
//! credentials (from secrets, RDS clusters, tunnels), what to read inside
//! which databases, and reading every server at once through its engine.
//! The orchestration of plan, apply and destroy is `commands::session`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::engine::dialect::Dialect;
use crate::engine::embedded::Embedded;
pub use crate::engine::endpoint::{dial_host_port, host_port, Endpoint};
use crate::engine::{DetailScope, EngineError, LiveServer};
use crate::model::GrantClass;
use crate::model::{Address, Body, Config, Connect, Kind, Sensitive, Server, Store};
use crate::secrets::Stores;

/// `.dbctl/` beside the configuration files.
pub fn dbctl_dir(config_dir: &Path) -> PathBuf {
    config_dir.join(".dbctl")
}

/// The admin credentials a server's `admin_password` secret holds: the
/// password, and the user name of an RDS-shaped document.
#[derive(Debug, Clone)]
pub struct AdminCred {
    pub password: Sensitive,
    pub username: Option<String>,
}

/// The parts of `scheme://user:password@host:port/rest` (no decoding).
struct UrlParts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a), Some(b)),
            None => (Some(u), None),
        },
        None => (None, None),
    };
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(i) => (&hostport[..=i], hostport[i + 1..].strip_prefix(':')),
            None => (hostport, None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    Some(UrlParts { scheme, user, password, host, port, rest })
}

/// The password a url carries, if any (still percent-encoded).
pub fn url_password(url: &str) -> Option<&str> {
    split_url(url)?.password.filter(|p| !p.is_empty())
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The url dbctl dials: the admin password (and user) from `admin_password`
/// put in, and the host and port of `connect { }` in place of the url's.
fn dial_url(url: &str, cred: Option<&AdminCred>, connect: Option<&Connect>) -> Result<String, String> {
    let p = split_url(url).ok_or("the url is not of the form scheme://user@host:port/database")?;
    let user = match (p.user.filter(|u| !u.is_empty()), cred.and_then(|c| c.username.as_deref())) {
        (Some(u), _) => Some(u.to_string()),
        (None, Some(u)) => Some(encode(u)),
        (None, None) => None,
    };
    let password = match cred {
        Some(c) => Some(encode(c.password.expose())),
        None => p.password.map(str::to_string),
    };
    let host = match connect.and_then(|c| c.host.as_deref()) {
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.to_string(),
        None => p.host.to_string(),
    };
    let port = match connect.and_then(|c| c.port) {
        Some(port) => Some(port.to_string()),
        None => p.port.map(str::to_string),
    };
    let mut out = format!("{}://", p.scheme);
    if let Some(u) = &user {
        out.push_str(u);
        if let Some(pw) = &password {
            out.push(':');
            out.push_str(pw);
        }
        out.push('@');
    } else if let Some(pw) = &password {
        out.push(':');
        out.push_str(pw);
        out.push('@');
    }
    out.push_str(&host);
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port);
    }
    out.push_str(p.rest);
    Ok(out)
}

/// The admin url of a server on an RDS cluster: the cluster's endpoint and
/// port, its master user, TLS `verify-full` (against `sslrootcert` when
/// given, relative to the configuration).
fn rds_url(dbctl: &Path, s: &Server, user: &str, host: &str, port: u16) -> String {
    let ca = s.sslrootcert.as_ref().map(|c| {
        let p = Path::new(c);
        let full = if p.is_absolute() { p.to_path_buf() } else { dbctl.parent().unwrap_or(Path::new(".")).join(p) };
        full.display().to_string()
    });
    Dialect::of(s.engine).verified_tls_url(&encode(user), host, port, ca.map(|c| encode(&c)).as_deref())
}

/// The host a server on a cluster not created yet has in a plan; the apply
/// puts the cluster's endpoint in its place in documents and secrets.
pub fn unknown_host(server: &Address) -> String {
    format!("(known after apply: {server})")
}

/// How dbctl reaches a server on an RDS cluster: through the cluster's
/// endpoint when it exists (`live`), else an endpoint known after apply.
pub fn rds_endpoint(
    dbctl: &Path,
    addr: &Address,
    s: &Server,
    master: &str,
    live: Option<&crate::rds::LiveCluster>,
    admin: Option<&AdminCred>,
) -> Result<Endpoint, EngineError> {
    let default_port = Dialect::of(s.engine).default_port();
    let mut ep = Endpoint {
        address: addr.clone(),
        engine: s.engine,
        url: String::new(),
        embedded: None,
        user_hosts: BTreeMap::new(),
        advertised: None,
        pending_admin: None,
    };
    let Some((host, port)) = live.and_then(|l| Some((l.endpoint.clone()?, l.port.unwrap_or(default_port)))) else {
        ep.url = rds_url(dbctl, s, master, "known-after-apply.invalid", default_port);
        ep.advertised = Some((unknown_host(addr), default_port));
        ep.pending_admin = Some(master.to_string());
        return Ok(ep);
    };
    let user = admin.and_then(|a| a.username.clone()).unwrap_or_else(|| master.to_string());
    ep.url = rds_url(dbctl, s, &user, &host, port);
    ep.advertised = Some((host, port));
    ep.url = dial_url(&ep.url, admin, s.connect.as_ref()).map_err(|e| EngineError::Setup(format!("{addr}: {e}")))?;
    Ok(ep)
}

/// The master credentials of a cluster's server: its `admin_password`
/// secret when set, else the cluster's `master_password` secret, else the
/// master secret RDS keeps (`manage_master_user_password`).
pub async fn cluster_cred(
    cfg: &Config,
    stores: &Stores,
    server: &Address,
    s: &Server,
    cluster: &crate::model::RdsCluster,
    live: &crate::rds::LiveCluster,
) -> Result<AdminCred, String> {
    let read = |secret: &Address| {
        let secret = secret.clone();
        async move {
            let Some(Body::Secret(sec)) = cfg.get(&secret).map(|x| &x.body) else {
                return Err(format!("{server}: {secret} is not in the configuration"));
            };
            let v = match &sec.value {
                Some(v) => v.clone(),
                None => match stores.read(sec.store, &sec.name, sec.external).await {
                    Ok(Some(c)) => c.value,
                    Ok(None) => {
                        return Err(format!("{server}: its admin password, {secret}, has no value in its store"))
                    }
                    Err(e) => return Err(format!("{server}: reading {secret}: {}", e.for_secret(&secret))),
                },
            };
            Ok(v)
        }
    };
    if s.admin_master_secret.as_ref().is_some_and(|c| Some(c) != s.rds_cluster.as_ref()) {
        return Err(format!(
            "{server}: its admin_password is the master secret of another cluster than its rds_cluster; \
             remove admin_password (the cluster's own credentials are used)"
        ));
    }
    let stored = if let Some(secret) = s.admin_password.as_ref().or(cluster.master_password.as_ref()) {
        read(secret).await?
    } else if live.master_secret.is_some() {
        return master_secret_cred(stores, server, live).await;
    } else {
        return Err(format!(
            "{server}: its cluster has neither master_password nor manage_master_user_password, so dbctl has no admin password"
        ));
    };
    Ok(cred_of(stored))
}

/// The credentials in the master secret RDS keeps for a cluster
/// (`manage_master_user_password`, `rds_cluster.NAME.master_secret`).
pub async fn master_secret_cred(
    stores: &Stores,
    server: &Address,
    live: &crate::rds::LiveCluster,
) -> Result<AdminCred, String> {
    let Some(arn) = &live.master_secret else {
        return Err(format!("{server}: RDS keeps no master secret for cluster {}", live.identifier));
    };
    match stores.read(Store::Aws, arn, true).await {
        Ok(Some(c)) => Ok(cred_of(c.value)),
        Ok(None) => Err(format!("{server}: the master secret RDS keeps ({arn}) is not in Secrets Manager")),
        Err(e) => Err(format!("{server}: reading the cluster's master secret: {e}")),
    }
}

/// A stored admin secret: a JSON document with `username` and `password`
/// (RDS's shape), or the password alone.
fn cred_of(stored: Sensitive) -> AdminCred {
    let username = serde_json::from_str::<serde_json::Value>(stored.expose())
        .ok()
        .and_then(|v| v.get("username").and_then(|u| u.as_str()).map(str::to_string));
    AdminCred { password: crate::secrets::password_of(&stored), username }
}

pub fn endpoint(dbctl: &Path, addr: &Address, s: &Server, admin: Option<&AdminCred>) -> Result<Endpoint, EngineError> {
    if s.rds_cluster.is_some() {
        return Err(EngineError::Setup(format!("{addr}: a server on an RDS cluster is reached through the cluster")));
    }
    if s.admin_password.is_some() && admin.is_none() {
        return Err(EngineError::Setup(format!("{addr}: its admin_password secret was not read")));
    }
    if s.embedded {
        let e = Embedded::for_engine(dbctl, &addr.name, s.port, s.engine)?;
        let url = e.url();
        return Ok(Endpoint {
            address: addr.clone(),
            engine: s.engine,
            url,
            embedded: Some(e),
            user_hosts: BTreeMap::new(),
            advertised: None,
            pending_admin: None,
        });
    }
    let url = s.url.clone().unwrap_or_default();
    let mut ep = Endpoint {
        address: addr.clone(),
        engine: s.engine,
        url,
        embedded: None,
        user_hosts: BTreeMap::new(),
        advertised: None,
        pending_admin: None,
    };
    if s.admin_master_secret.is_some() && admin.is_none() {
        // The cluster does not exist yet: nothing can be read. A plan that
        // needs the server refuses (`Session::plan`); one targeting the
        // cluster alone goes on.
        ep.pending_admin = Some("(the cluster's master user)".into());
        return Ok(ep);
    }
    if admin.is_some() || s.connect.is_some() {
        if s.connect.is_some() {
            ep.advertised = Some(host_port(&ep));
        }
        ep.url =
            dial_url(&ep.url, admin, s.connect.as_ref()).map_err(|e| EngineError::Setup(format!("{addr}: {e}")))?;
    }
    Ok(ep)
}

/// The admin credentials of every server with `admin_password`, read from
/// their secrets (a given `value`, or the store). The store is opened only
/// when some server needs it.
pub async fn admin_creds(cfg: &Config, dbctl: &Path) -> Result<BTreeMap<Address, AdminCred>, String> {
    let mut out = BTreeMap::new();
    let mut stores: Option<Stores> = None;
    for r in cfg.of_kind(Kind::Server) {
        let Body::Server(s) = &r.body else { continue };
        if s.rds_cluster.is_some() {
            // Read with the cluster's credentials (`cluster_cred`), once the cluster is known.
            continue;
        }
        let Some(secret) = &s.admin_password else { continue };
        let Some(Body::Secret(sec)) = cfg.get(secret).map(|x| &x.body) else {
            return Err(format!("{}: {secret} is not in the configuration", r.addr));
        };
        let stored = match &sec.value {
            Some(v) => v.clone(),
            None => {
                if stores.is_none() {
                    stores = Some(Stores::open(dbctl, cfg.aws.as_ref()).await.map_err(|e| e.to_string())?);
                }
                let st = stores.as_ref().expect("opened");
                let place = match sec.store {
                    Store::Local => format!("the local secret store (\"{}\" in .dbctl/secrets.json)", sec.name),
                    Store::Aws => format!("AWS Secrets Manager (\"{}\")", sec.name),
                };
                match st.read(sec.store, &sec.name, sec.external).await {
                    Ok(Some(c)) => c.value,
                    Ok(None) => {
                        return Err(format!(
                            "{}: its admin password, {secret}, is not in {place}. dbctl reads the admin password \
                             and never creates it: store it there (for an RDS cluster, the master user secret \
                             RDS manages), or give {secret} the right store and name",
                            r.addr
                        ))
                    }
                    Err(e) => {
                        return Err(format!(
                            "{}: reading its admin password {secret}: {}",
                            r.addr,
                            e.for_secret(secret)
                        ))
                    }
                }
            }
        };
        let cred = cred_of(stored);
        if cred.password.expose().is_empty() {
            return Err(format!("{}: its admin password {secret} is empty", r.addr));
        }
        out.insert(r.addr.clone(), cred);
    }
    Ok(out)
}

/// Whether some server reads its admin password from a secret.
pub fn needs_admin_creds(cfg: &Config) -> bool {
    cfg.of_kind(Kind::Server)
        .any(|r| matches!(&r.body, Body::Server(s) if s.admin_password.is_some() && s.rds_cluster.is_none()))
}

/// Every server's endpoint. `clusters`: per rds_cluster address, the
/// cluster as AWS describes it (`None`: not created yet).
pub fn endpoints(
    cfg: &Config,
    dbctl: &Path,
    admin: &BTreeMap<Address, AdminCred>,
    clusters: &BTreeMap<Address, Option<crate::rds::LiveCluster>>,
) -> Result<BTreeMap<Address, Endpoint>, EngineError> {
    let mut out = BTreeMap::new();
    for r in cfg.resources.values() {
        if let Body::Server(s) = &r.body {
            let ep = match &s.rds_cluster {
                Some(c) => {
                    let master = match cfg.get(c).map(|x| &x.body) {
                        Some(Body::RdsCluster(rc)) => crate::rds::master_username(rc),
                        _ => "dbctl".into(),
                    };
                    let live = clusters.get(c).and_then(|l| l.as_ref());
                    let master = live.map(|l| l.master_username.clone()).filter(|m| !m.is_empty()).unwrap_or(master);
                    rds_endpoint(dbctl, &r.addr, s, &master, live, admin.get(&r.addr))?
                }
                None => endpoint(dbctl, &r.addr, s, admin.get(&r.addr))?,
            };
            out.insert(r.addr.clone(), ep);
        }
    }
    for r in cfg.resources.values() {
        if let Body::User(u) = &r.body {
            if let Some(ep) = out.get_mut(&u.server).filter(|e| Dialect::of(e.engine).has_hosts()) {
                ep.user_hosts.insert(u.name.clone(), u.host.clone().unwrap_or_else(|| "%".into()));
            }
        }
    }
    Ok(out)
}

/// Per server: the databases whose insides the diff compares (extensions
/// configured or recorded, or grants on schemas, tables or sequences), and
/// the schemas named. Other databases are read from the server catalog alone.
pub fn detail_scope(cfg: &Config, state: &crate::state::State) -> BTreeMap<Address, DetailScope> {
    // What the configuration asks to read inside databases: extensions,
    // routers (grants in schemas) and grants below the database level. With
    // none of them (thousands of database-level grants, say), the desired
    // objects need not be worked out twice per plan.
    let inside = |grants: &[crate::model::Grant]| grants.iter().any(|g| GrantClass::of(g) != GrantClass::Database);
    let configured = cfg.resources.values().any(|r| match &r.body {
        Body::Router(_) => true,
        Body::Database(d) => !d.extensions.is_empty(),
        Body::User(u) => inside(&u.grants),
        Body::Role(ro) => inside(&ro.grants),
        _ => false,
    });
    let want = if configured { crate::diff::desired(cfg, &BTreeMap::new(), None) } else { Default::default() };
    let mut out: BTreeMap<Address, DetailScope> = BTreeMap::new();
    // Databases whose extensions the state recorded (those the configuration
    // still names are in `want`; the others are dropped from the server).
    for st in state.resources.values().filter(|s| s.kind == "database") {
        if !configured && st.attributes["extensions"].as_array().is_some_and(|a| !a.is_empty()) {
            if let (Some(server), Some(name)) =
                (st.server.as_deref().and_then(|s| Address::parse(s).ok()), st.attributes["name"].as_str())
            {
                out.entry(server)
                    .or_default()
                    .entry(name.to_string())
                    .or_insert_with(|| BTreeSet::from(["public".to_string()]));
            }
        }
    }
    for (server, dbs) in &want.databases {
        for (name, d) in dbs {
            let recorded = state
                .resources
                .get(&d.addr.to_string())
                .and_then(|s| s.attributes["extensions"].as_array())
                .is_some_and(|a| !a.is_empty());
            if !d.extensions.is_empty() || recorded {
                out.entry(server.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_insert_with(|| BTreeSet::from(["public".to_string()]));
            }
        }
    }
    // Targets the configuration names, and those the state recorded: a grant
    // or route that was removed must be read to be revoked.
    for st in state.resources.values() {
        if st.kind != "grant" && st.kind != "router" {
            continue;
        }
        // Most recorded grant sets hold only database-level grants, which the
        // server read covers: those are not decoded (5,000 of them cost more
        // than the rest of this function).
        let below_database = st.attributes["grants"]
            .as_array()
            .is_some_and(|gs| gs.iter().any(|g| g["on"].as_str().is_some_and(|on| on != "database")));
        if !below_database {
            continue;
        }
        let Some(server) = st.server.as_deref().and_then(|s| Address::parse(s).ok()) else { continue };
        for t in crate::diff::recorded_targets(&st.attributes).1.into_iter().filter(|t| t.class != GrantClass::Database)
        {
            out.entry(server.clone())
                .or_default()
                .entry(t.database.clone())
                .or_default()
                .insert(t.schema.clone().unwrap_or_else(|| "public".into()));
        }
    }
    for g in &want.grants {
        for t in g.targets.keys().filter(|t| t.class != GrantClass::Database) {
            out.entry(g.server.clone())
                .or_default()
                .entry(t.database.clone())
                .or_default()
                .insert(t.schema.clone().unwrap_or_else(|| "public".into()));
        }
    }
    out
}

/// A read of the servers a plan starts while the rest of its configuration
/// loads: at thousands of blocks the load takes about as long as the read,
/// and the two overlap. `servers` is the configuration's servers alone.
///
/// Only when every server is reached without asking anything first — its
/// admin password not in a secret store, not on an RDS cluster, an engine
/// without per-user hosts (PostgreSQL, Redis) — and an embedded server only
/// when it already runs: this read starts nothing. It reads the server
/// catalogs only: the plan uses it if the loaded configuration reaches the
/// same endpoints, then reads inside the databases it names
/// ([`read_inside`]). The endpoints it dialled come with it, and the read
/// gives what it started, as [`refresh`] does (a server stopped meanwhile).
#[allow(clippy::type_complexity)]
pub fn early_read(
    servers: &Config,
    dbctl: &Path,
) -> Option<(
    BTreeMap<Address, Endpoint>,
    impl std::future::Future<Output = Result<(BTreeMap<Address, LiveServer>, Vec<String>), EngineError>> + Send + 'static,
)> {
    let plain = servers.of_kind(Kind::Server).all(|r| {
        matches!(&r.body, Body::Server(s) if s.rds_cluster.is_none() && s.admin_password.is_none() && s.admin_master_secret.is_none())
    });
    if !plain {
        return None;
    }
    let endpoints = endpoints(servers, dbctl, &BTreeMap::new(), &BTreeMap::new()).ok()?;
    let reachable = |ep: &Endpoint| {
        !Dialect::of(ep.engine).has_hosts()
            && ep.pending_admin.is_none()
            && ep.embedded.as_ref().is_none_or(|e| e.is_initialised() && e.is_running())
    };
    if endpoints.is_empty() || !endpoints.values().all(reachable) {
        return None;
    }
    let dialled = endpoints.clone();
    // What [`refresh`] reports it started: a server that stopped meanwhile.
    Some((endpoints, async move {
        let mut started = Vec::new();
        let live = refresh(&dialled, &BTreeMap::new(), &mut started).await?;
        Ok((live, started))
    }))
}

/// Inside the databases `scope` names, on servers whose catalogs `live`
/// already holds (read by [`early_read`]), every server at once.
pub async fn read_inside(
    endpoints: &BTreeMap<Address, Endpoint>,
    scope: &BTreeMap<Address, DetailScope>,
    live: &mut BTreeMap<Address, LiveServer>,
) -> Result<(), EngineError> {
    let jobs = live.iter_mut().filter_map(|(addr, l)| {
        let (ep, sc) = (endpoints.get(addr)?, scope.get(addr)?);
        Some(crate::engine::of(ep.engine).read_inside(ep, l, sc))
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    Ok(())
}

/// Read every server in parallel. An embedded server that exists is started
/// if it is stopped (reported in `started`); one that does not exist yet
/// reads as empty, and the plan creates it.
pub async fn refresh(
    endpoints: &BTreeMap<Address, Endpoint>,
    scope: &BTreeMap<Address, DetailScope>,
    started: &mut Vec<String>,
) -> Result<BTreeMap<Address, LiveServer>, EngineError> {
    let empty = DetailScope::new();
    let mut jobs = Vec::new();
    let mut pending = BTreeMap::new();
    for (addr, ep) in endpoints {
        if let Some(admin) = &ep.pending_admin {
            // On a cluster this plan creates: nothing to read yet.
            // Its admin is an RDS master user: CREATEROLE and CREATEDB, no superuser.
            let master = crate::engine::LiveRole {
                login: true,
                superuser: false,
                connection_limit: -1,
                flags: ["createrole", "createdb", "inherit"].into_iter().map(str::to_string).collect(),
                ..Default::default()
            };
            let roles = BTreeMap::from([(admin.clone(), master)]);
            pending
                .insert(addr.clone(), LiveServer { exists: false, admin: admin.clone(), roles, ..Default::default() });
            continue;
        }
        if let Some(e) = &ep.embedded {
            if !e.is_initialised() {
                continue;
            }
            // Started when stopped; waited for when a killed dbctl started it and it is not ready yet.
            let was_running = e.is_running();
            let e2 = e.clone();
            tokio::task::spawn_blocking(move || e2.start())
                .await
                .map_err(|err| EngineError::Setup(err.to_string()))??;
            if !was_running {
                started.push(format!("started embedded server {} on 127.0.0.1:{}", addr.name, e.port));
            }
        }
        let sc = scope.get(addr).unwrap_or(&empty);
        jobs.push(async move {
            let live = crate::engine::of(ep.engine).read(ep, sc).await;
            (addr.clone(), live)
        });
    }
    let mut out = pending;
    for (addr, r) in futures::future::join_all(jobs).await {
        out.insert(addr, r?);
    }
    Ok(out)
}

/// The RDS credentials shape of each secret that is a user's password: the
/// user, the server's engine, host and port, and the database the user uses
/// (its router's default route, else its first route, else its first grant).
pub fn rds_shapes(
    cfg: &Config,
    endpoints: &BTreeMap<Address, Endpoint>,
) -> BTreeMap<Address, crate::secrets::RdsShape> {
    let mut out = BTreeMap::new();
    for r in cfg.resources.values() {
        let Body::User(u) = &r.body else { continue };
        let (Some(secret), Some(ep)) = (&u.password, endpoints.get(&u.server)) else { continue };
        let db_name = |a: &Address| cfg.get(a).and_then(|d| d.object_name()).map(str::to_string);
        let routed = cfg.resources.values().find_map(|x| match &x.body {
            Body::Router(rt) if rt.user == r.addr => {
                let route =
                    rt.default.as_ref().and_then(|d| rt.routes.iter().find(|x| &x.app == d)).or(rt.routes.first());
                route.and_then(|x| db_name(&x.database))
            }
            _ => None,
        });
        let dbname =
            routed.or_else(|| u.grants.first().and_then(|g| db_name(&g.database))).unwrap_or_else(|| "postgres".into());
        let (host, port) = host_port(ep);
        out.insert(
            secret.clone(),
            crate::secrets::RdsShape {
                username: u.name.clone(),
                engine: ep.engine.as_str().into(),
                host,
                port,
                dbname,
            },
        );
    }
    out
}

/// Without the servers (`plan --refresh=false`): every dropped database is
/// marked as possibly holding data, its tables not counted.
pub fn mark_data_loss_uncounted(changes: &mut [crate::plan::ResourceChange]) {
    for c in changes.iter_mut() {
        let dropped = c.steps.iter().find_map(|s| match (&s.server, &s.op) {
            (Some(_), crate::plan::Op::DropDatabase { name, .. }) => Some(name.clone()),
            _ => None,
        });
        if let Some(name) = dropped {
            c.data_loss = Some(crate::plan::DataLoss { database: name, tables: None, unit: None });
        }
    }
}

/// Mark each change that drops a database holding data, with how many user
/// tables it holds (counted on its server now; uncountable counts as data).
pub async fn mark_data_loss(endpoints: &BTreeMap<Address, Endpoint>, changes: &mut [crate::plan::ResourceChange]) {
    for c in changes.iter_mut() {
        let Some((server, name)) = c.steps.iter().find_map(|s| match (&s.server, &s.op) {
            (Some(server), crate::plan::Op::DropDatabase { name, .. }) => Some((server.clone(), name.clone())),
            _ => None,
        }) else {
            continue;
        };
        let Some(ep) = endpoints.get(&server) else { continue };
        let counted = crate::engine::of(ep.engine).count_tables(ep, &name).await;
        let tables = counted.ok();
        if tables != Some(0) {
            let unit = Dialect::of(ep.engine).data_unit().map(str::to_string);
            c.data_loss = Some(crate::plan::DataLoss { database: name, tables, unit });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EngineKind;

    fn cred(pw: &str, user: Option<&str>) -> AdminCred {
        AdminCred { password: Sensitive::new(pw.into()), username: user.map(str::to_string) }
    }

    #[test]
    fn the_dial_url_carries_the_admin_password_and_the_tunnel() {
        let c = cred("p@ss:w/rd%", None);
        assert_eq!(
            dial_url("postgres://admin@db.internal.example/postgres?sslmode=require", Some(&c), None).unwrap(),
            "postgres://admin:p%40ss%3Aw%2Frd%25@db.internal.example/postgres?sslmode=require"
        );
        // The RDS document's user name when the url has none.
        assert_eq!(
            dial_url("postgres://db.internal.example:6432/postgres", Some(&cred("x", Some("master"))), None).unwrap(),
            "postgres://master:x@db.internal.example:6432/postgres"
        );
        let tunnel = Connect { host: Some("127.0.0.1".into()), port: Some(15432) };
        assert_eq!(
            dial_url("postgres://admin:pw@db.internal.example:5432/postgres", None, Some(&tunnel)).unwrap(),
            "postgres://admin:pw@127.0.0.1:15432/postgres"
        );
        let port_only = Connect { host: None, port: Some(3307) };
        assert_eq!(
            dial_url("mysql://root@[::1]:3306", Some(&cred("s", None)), Some(&port_only)).unwrap(),
            "mysql://root:s@[::1]:3307"
        );
        let v6 = Connect { host: Some("::1".into()), port: None };
        assert_eq!(dial_url("mysql://root@db:3306/x", None, Some(&v6)).unwrap(), "mysql://root@[::1]:3306/x");
        assert_eq!(url_password("postgres://a:b@h/d"), Some("b"));
        assert_eq!(url_password("postgres://a@h/d"), None);
        assert_eq!(url_password("postgres://a:@h/d"), None);
    }

    #[test]
    fn the_advertised_endpoint_is_the_urls() {
        let s = Server {
            engine: EngineKind::Postgres,
            embedded: false,
            url: Some("postgres://admin@db.internal.example/postgres".into()),
            rds_cluster: None,
            admin_password: None,
            admin_master_secret: None,
            port: None,
            allow_superuser: false,
            sslrootcert: None,
            connect: Some(Connect { host: Some("127.0.0.1".into()), port: Some(15432) }),
        };
        let ep = endpoint(Path::new("/nonexistent"), &Address::new(Kind::Server, "main"), &s, None).unwrap();
        assert_eq!(host_port(&ep), ("db.internal.example".to_string(), 5432));
        assert_eq!(ep.url, "postgres://admin@127.0.0.1:15432/postgres");
        assert_eq!(dial_host_port(&ep), ("127.0.0.1".to_string(), 15432));
    }
}
