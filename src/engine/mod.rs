//! The boundary every engine implements, and the live state it reads.
//!
//! Two halves, one folder per engine (`postgres/`, `mysql/`):
//! - [`Dialect`](dialect::Dialect), pure: names and their limits, privileges
//!   per grant class, what a router's access means, and the text of every
//!   statement. The plan stores that text and apply runs it, so the two
//!   cannot disagree.
//! - [`Engine`], I/O: read a server's live state (a `LiveServer`, the same
//!   shape for every engine, in as few round trips as the catalog allows),
//!   count what a drop would lose, and open an [`EngineSession`] that runs a
//!   plan's statements in order.
//!
//! [`of`] is the one place that picks an engine by its kind; the diff never
//! asks a server anything.

pub mod dialect;
pub mod embedded;
pub mod endpoint;
mod engines;
pub mod limits;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use engines::of;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{0}")]
    Query(String),
    /// A step gave up: it waited on a lock or ran past the time limit (the message says on what).
    #[error("{0}")]
    TimedOut(String),
    /// A step the engine will not run as asked (open connections without
    /// `--force`, a migration on an engine without them).
    #[error("{0}")]
    Refused(String),
    /// A migration file failed (`file:line: message`, and what stays applied).
    #[error("{0}")]
    Migration(String),
}

pub type Privs = BTreeSet<String>;

/// One statement for a server, as the plan shows it and the engine runs it,
/// and the database it runs in (`None`: the server's admin database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub database: Option<String>,
    pub sql: String,
}

impl Stmt {
    pub fn admin(sql: String) -> Stmt {
        Stmt { database: None, sql }
    }

    pub fn on(database: &str, sql: String) -> Stmt {
        Stmt { database: Some(database.to_string()), sql }
    }
}

/// PostgreSQL role attributes a user may set: (attribute, on, off).
pub const ROLE_FLAGS: &[(&str, &str, &str)] = &[
    ("superuser", "SUPERUSER", "NOSUPERUSER"),
    ("createdb", "CREATEDB", "NOCREATEDB"),
    ("createrole", "CREATEROLE", "NOCREATEROLE"),
    ("bypassrls", "BYPASSRLS", "NOBYPASSRLS"),
    ("replication", "REPLICATION", "NOREPLICATION"),
    ("inherit", "INHERIT", "NOINHERIT"),
];

/// A role as the server has it (users are roles that can log in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveRole {
    pub login: bool,
    pub superuser: bool,
    pub connection_limit: i64,
    pub valid_until: Option<String>,
    pub member_of: BTreeSet<String>,
    /// PostgreSQL role attributes that are true (of ROLE_FLAGS).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub flags: BTreeSet<String>,
    /// MySQL/MariaDB users: the account's host part.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// PostgreSQL: the databases holding objects it owns or privileges
    /// granted to it (`pg_shdepend`), where a `DROP ROLE` needs them gone.
    /// Not serialised: a table created by the role is no change to the role.
    #[serde(skip_serializing)]
    pub depends_in: BTreeSet<String>,
}

/// Privileges on all objects of one class in a schema: the union and the
/// intersection over the objects, per grantee, and how many objects exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassPrivs {
    pub count: u64,
    /// The roles that own these objects (a GRANT on them needs their privileges).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub owners: BTreeSet<String>,
    pub any: BTreeMap<String, Privs>,
    pub all: BTreeMap<String, Privs>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSchema {
    pub owner: String,
    /// Grantee (or PUBLIC) → privileges on the schema.
    pub privileges: BTreeMap<String, Privs>,
    pub tables: ClassPrivs,
    pub sequences: ClassPrivs,
    /// (role whose new objects they apply to, grantee) → privileges.
    pub default_tables: BTreeMap<String, BTreeMap<String, Privs>>,
    pub default_sequences: BTreeMap<String, BTreeMap<String, Privs>>,
}

/// What dbctl reads inside one database (only for databases it manages).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveDbDetail {
    pub extensions: BTreeSet<String>,
    /// Extension → the role that owns it (only its owner may drop it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extension_owners: BTreeMap<String, String>,
    /// Only the schemas the configuration mentions; absent = does not exist.
    pub schemas: BTreeMap<String, LiveSchema>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveDatabase {
    pub owner: String,
    pub encoding: String,
    pub collation: String,
    pub connection_limit: i64,
    /// Grantee (or PUBLIC) → privileges on the database.
    pub privileges: BTreeMap<String, Privs>,
    pub detail: Option<LiveDbDetail>,
    /// PostgreSQL: the database refuses every connection (`ALLOW_CONNECTIONS false`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

/// Everything dbctl read from one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveServer {
    /// False when the server does not exist yet (an embedded server before
    /// its first apply): everything on it is planned as a create.
    pub exists: bool,
    pub version: String,
    /// The admin role dbctl connects as (default owner of databases).
    pub admin: String,
    pub roles: BTreeMap<String, LiveRole>,
    pub databases: BTreeMap<String, LiveDatabase>,
    /// Whether dbctl's connection for the catalog read was encrypted (TLS);
    /// `None` when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// PostgreSQL, when the admin is not a superuser: the extensions it may
    /// create (trusted ones). `None`: not read (a superuser may create any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_extensions: Option<BTreeSet<String>>,
}

/// What to read inside databases: database name → schemas the config mentions.
pub type DetailScope = BTreeMap<String, BTreeSet<String>>;

/// A future an engine returns (the trait is used as `dyn Engine`).
pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What dbctl does with a server of one engine. Pure knowledge (statement
/// text, names, privileges) is the engine's [`Dialect`](dialect::Dialect).
pub trait Engine: Send + Sync {
    fn kind(&self) -> crate::model::EngineKind;
    fn dialect(&self) -> dialect::Dialect;
    /// The server's live state: its roles and databases, and inside the
    /// databases `scope` names.
    fn read<'a>(
        &'a self,
        ep: &'a endpoint::Endpoint,
        scope: &'a DetailScope,
    ) -> BoxFut<'a, Result<LiveServer, EngineError>>;
    /// Inside the databases `scope` names, for a server read before with an
    /// empty scope (a plan reads the server catalog while its configuration
    /// loads, before it knows the scope). Nothing for an engine whose `read`
    /// does not look inside databases.
    fn read_inside<'a>(
        &'a self,
        _ep: &'a endpoint::Endpoint,
        _live: &'a mut LiveServer,
        _scope: &'a DetailScope,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }
    /// How many user tables (or keys) a database holds: what dropping it loses.
    fn count_tables<'a>(
        &'a self,
        ep: &'a endpoint::Endpoint,
        database: &'a str,
    ) -> BoxFut<'a, Result<u64, EngineError>>;
    /// The migrations a database's tracking table records.
    fn applied_migrations<'a>(
        &'a self,
        ep: &'a endpoint::Endpoint,
        database: &'a str,
    ) -> BoxFut<'a, Result<Vec<crate::migrate::Applied>, String>>;
    /// A session that runs a plan's statements on the server; it connects
    /// when its first statement runs.
    fn session(&self, ep: &endpoint::Endpoint) -> Box<dyn EngineSession>;
    /// The host and port an admin url dials, and the default port.
    fn dial_host_port(&self, url: &str) -> (String, u16);
    /// Wait (up to `limit`) for statements a killed dbctl left running on
    /// the server (a create outlives its client on PostgreSQL); how many
    /// still run after the wait. `None`: nothing to wait for, or not known.
    fn settle<'a>(&'a self, _ep: &'a endpoint::Endpoint, _limit: std::time::Duration) -> BoxFut<'a, Option<u64>> {
        Box::pin(async { None })
    }
}

/// One server's queue of statements during an apply: its connections are
/// kept between steps and closed at the end.
pub trait EngineSession: Send {
    /// Run one statement, as the plan showed it, in `database` (`None`: the
    /// admin database), under the step time limits.
    fn execute<'a>(
        &'a mut self,
        address: &'a str,
        database: Option<&'a str>,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>>;
    /// Run a statement that carries a secret (a password hash): an error
    /// never quotes the statement.
    fn execute_secret<'a>(&'a mut self, address: &'a str, sql: String) -> BoxFut<'a, Result<(), EngineError>>;
    /// Drop a database (`sql`, as planned); without `force`, refuse while
    /// clients are connected to it.
    fn drop_database<'a>(
        &'a mut self,
        address: &'a str,
        name: &'a str,
        force: bool,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>>;
    /// Run one migration in `database`, recording it in the tracking table.
    fn migrate<'a>(
        &'a mut self,
        database: &'a str,
        m: &'a crate::migrate::MigrationStep,
    ) -> BoxFut<'a, Result<(), EngineError>>;
    /// Close the session's connections.
    fn close(self: Box<Self>) -> BoxFut<'static, ()>;
}
