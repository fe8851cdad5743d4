//! What plan, apply and destroy share: where `.dbctl` is, how to reach each
//! server, and refreshing live state from all of them at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::check::GrantClass;
use crate::engine::embedded::Embedded;
use crate::engine::{postgres, DetailScope, EngineError, LiveServer};
use crate::model::{Address, Body, Config, Engine, Server};

/// `.dbctl/` beside the configuration files.
pub fn dbctl_dir(config_dir: &Path) -> PathBuf {
    config_dir.join(".dbctl")
}

/// How dbctl reaches one server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: Address,
    pub engine: Engine,
    /// Admin URL (may carry a password: never printed).
    pub url: String,
    pub embedded: Option<Embedded>,
    /// MySQL: the host part the configuration gives each user name.
    pub user_hosts: BTreeMap<String, String>,
}

pub fn endpoint(dbctl: &Path, addr: &Address, s: &Server) -> Result<Endpoint, EngineError> {
    if s.rds_cluster.is_some() {
        return Err(EngineError::Setup(format!("{addr}: servers on RDS clusters are not built yet")));
    }
    if s.admin_password.is_some() {
        return Err(EngineError::Setup(format!(
            "{addr}: admin_password is not supported yet; put the admin password in url, for example url = env(\"DB_URL\")"
        )));
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
        });
    }
    let url = s.url.clone().unwrap_or_default();
    Ok(Endpoint { address: addr.clone(), engine: s.engine, url, embedded: None, user_hosts: BTreeMap::new() })
}

pub fn endpoints(cfg: &Config, dbctl: &Path) -> Result<BTreeMap<Address, Endpoint>, EngineError> {
    let mut out = BTreeMap::new();
    for r in cfg.resources.values() {
        if let Body::Server(s) = &r.body {
            out.insert(r.addr.clone(), endpoint(dbctl, &r.addr, s)?);
        }
    }
    for r in cfg.resources.values() {
        if let Body::User(u) = &r.body {
            if let Some(ep) = out.get_mut(&u.server).filter(|e| e.engine == Engine::Mysql) {
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
    let want = crate::diff::desired(cfg, &BTreeMap::new(), None);
    let mut out: BTreeMap<Address, DetailScope> = BTreeMap::new();
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
    for (addr, ep) in endpoints {
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
        let name = addr.to_string();
        jobs.push(async move {
            let live = match ep.engine {
                Engine::Postgres => postgres::read(&name, &ep.url, sc).await,
                Engine::Mysql => crate::engine::mysql::read(&name, &ep.url, &ep.user_hosts).await,
            };
            (addr.clone(), live)
        });
    }
    let mut out = BTreeMap::new();
    for (addr, r) in futures::future::join_all(jobs).await {
        out.insert(addr, r?);
    }
    Ok(out)
}

/// Host and port of a server as clients reach it.
pub fn host_port(ep: &Endpoint) -> (String, u16) {
    match &ep.embedded {
        Some(e) => ("127.0.0.1".into(), e.port),
        None if ep.engine == Engine::Mysql => {
            use std::str::FromStr;
            match sqlx::mysql::MySqlConnectOptions::from_str(&ep.url) {
                Ok(o) => (o.get_host().to_string(), o.get_port()),
                Err(_) => (String::new(), 3306),
            }
        }
        None => match crate::engine::postgres::options(&ep.url, None) {
            Ok(o) => (o.get_host().to_string(), o.get_port()),
            Err(_) => (String::new(), 5432),
        },
    }
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
        let counted = match ep.engine {
            Engine::Postgres => postgres::count_tables(&server.to_string(), &ep.url, &name).await,
            Engine::Mysql => crate::engine::mysql::count_tables(&server.to_string(), &ep.url, &name).await,
        };
        let tables = counted.ok();
        if tables != Some(0) {
            c.data_loss = Some(crate::plan::DataLoss { database: name, tables });
        }
    }
}
