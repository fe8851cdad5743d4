//! The boundary every engine implements, and the live state it reads.
//!
//! `read` returns a `LiveServer` (engine-agnostic), in as few round trips as
//! the catalog allows; the diff never asks the server anything; `execute`
//! runs one step. The MySQL engine and RDS are further modules behind the
//! same boundary.

pub mod dialect;
pub mod embedded;
pub mod limits;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{0}")]
    Query(String),
}

pub type Privs = BTreeSet<String>;

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
