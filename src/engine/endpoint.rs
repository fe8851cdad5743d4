//! How dbctl reaches one server: its engine, admin URL and, for an
//! embedded one, the server dbctl runs.

use std::collections::BTreeMap;

use crate::engine::embedded::Embedded;
use crate::model::{Address, EngineKind};

/// How dbctl reaches one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: Address,
    pub engine: EngineKind,
    /// Admin URL (may carry a password: never printed).
    pub url: String,
    pub embedded: Option<Embedded>,
    /// MySQL: the host part the configuration gives each user name.
    pub user_hosts: BTreeMap<String, String>,
    /// The url's own host and port when `connect { }` makes dbctl dial
    /// elsewhere (a tunnel): what clients, documents and secrets are given.
    pub advertised: Option<(String, u16)>,
    /// A server on an RDS cluster that does not exist yet: its endpoint is
    /// known after apply. Holds the admin (master) user name; the plan
    /// reads the server as empty and creates everything on it.
    pub pending_admin: Option<String>,
}

/// Host and port of a server as clients reach it.
pub fn host_port(ep: &Endpoint) -> (String, u16) {
    match &ep.advertised {
        Some(a) => a.clone(),
        None => dial_host_port(ep),
    }
}

/// Host and port dbctl itself dials: those of `connect { }` when set (a
/// tunnel), for the client programs dbctl runs (pg_dump, mariadb-dump).
pub fn dial_host_port(ep: &Endpoint) -> (String, u16) {
    match &ep.embedded {
        Some(e) => ("127.0.0.1".into(), e.port),
        None => super::of(ep.engine).dial_host_port(&ep.url),
    }
}
