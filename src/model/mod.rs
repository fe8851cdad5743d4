//! The typed configuration: resources with their addresses. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The hasher of the maps a plan looks names up in hundreds of thousands of
/// times at 10,000 objects (resources by address, a block's attributes, graph
/// nodes): foldhash, several times cheaper than the standard SipHash on short
/// keys. Their keys come from the user's own files, so the standard hasher's
/// resistance to chosen collisions buys nothing here.
pub type FastHash = foldhash::fast::RandomState;
/// An insertion-ordered map with [`FastHash`].
pub type FastIndexMap<K, V> = IndexMap<K, V, FastHash>;
/// A hash map with [`FastHash`].
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, FastHash>;
/// A hash set with [`FastHash`].
pub type FastHashSet<K> = std::collections::HashSet<K, FastHash>;

use crate::diag::Loc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Server,
    Role,
    User,
    Database,
    Secret,
    Router,
    BackupPolicy,
    RdsCluster,
    Migrations,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Server,
        Kind::Role,
        Kind::User,
        Kind::Database,
        Kind::Secret,
        Kind::Router,
        Kind::BackupPolicy,
        Kind::RdsCluster,
        Kind::Migrations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Role => "role",
            Kind::User => "user",
            Kind::Database => "database",
            Kind::Secret => "secret",
            Kind::Router => "router",
            Kind::BackupPolicy => "backup_policy",
            Kind::RdsCluster => "rds_cluster",
            Kind::Migrations => "migrations",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds that accept `for_each` (SPEC: database, user, role; dbctl adds
    /// secret so each instance of a user can have its own password).
    pub fn has_for_each(self) -> bool {
        matches!(self, Kind::Database | Kind::User | Kind::Role | Kind::Secret)
    }
}

/// `TYPE.NAME` or `TYPE.NAME["key"]` under for_each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Address {
    pub kind: Kind,
    pub name: String,
    pub key: Option<String>,
}

/// What the dependency graph and the plan order: a resource, or the grants
/// of a user or role (`user.app.grant`), apart from the user itself so that
/// a user who owns a database and is granted on it is no false cycle. A
/// change's address is a node's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Resource(Address),
    /// The grants of a user or role.
    Grants(Address),
}

/// What a grants node's text ends with.
const GRANTS_SUFFIX: &str = ".grant";

impl Node {
    /// `user.app.grant` → the grants of `user.app`; anything else → a resource.
    pub fn parse(s: &str) -> Result<Node, String> {
        match s.strip_suffix(GRANTS_SUFFIX) {
            Some(base) => Address::parse(base).map(Node::Grants),
            None => Address::parse(s).map(Node::Resource),
        }
    }

    /// The resource the node belongs to (a user or role, for its grants).
    pub fn address(&self) -> &Address {
        match self {
            Node::Resource(a) | Node::Grants(a) => a,
        }
    }

    /// The text of the resource a node's text belongs to (`user.app.grant` → `user.app`).
    pub fn base(s: &str) -> &str {
        s.strip_suffix(GRANTS_SUFFIX).unwrap_or(s)
    }

    /// Whether a node's text names the grants of a user or role.
    pub fn is_grants(s: &str) -> bool {
        s.ends_with(GRANTS_SUFFIX)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Resource(a) => write!(f, "{a}"),
            Node::Grants(a) => write!(f, "{a}{GRANTS_SUFFIX}"),
        }
    }
}

impl Address {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Address { kind, name: name.into(), key: None }
    }
    pub fn keyed(kind: Kind, name: impl Into<String>, key: impl Into<String>) -> Self {
        Address { kind, name: name.into(), key: Some(key.into()) }
    }

    /// Parse `database.app` or `database.app["users"]`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let (kind, rest) = s.split_once('.').ok_or_else(|| format!("`{s}` is not an address: expected TYPE.NAME"))?;
        let kind = Kind::parse(kind).ok_or_else(|| format!("`{kind}` is not a resource type"))?;
        let (name, key) = match rest.find('[') {
            None => (rest, None),
            Some(i) => {
                let inner = rest[i..]
                    .strip_prefix("[\"")
                    .and_then(|r| r.strip_suffix("\"]"))
                    .ok_or_else(|| format!("`{s}`: a key is written [\"key\"]"))?;
                (&rest[..i], Some(unescape(inner)))
            }
        };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("`{s}`: `{name}` is not a resource name"));
        }
        Ok(Address { kind, name: name.to_string(), key })
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn escape_hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.as_str(), self.name)?;
        if let Some(k) = &self.key {
            write!(f, "[\"{}\"]", escape_hcl_string(k))?;
        }
        Ok(())
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Address::parse(&s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Postgres,
    Mysql,
    Redis,
}

impl EngineKind {
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "postgres" => Some(EngineKind::Postgres),
            "mysql" => Some(EngineKind::Mysql),
            "redis" => Some(EngineKind::Redis),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
            EngineKind::Mysql => "mysql",
            EngineKind::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lifecycle {
    pub prevent_destroy: bool,
    pub ignore_changes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    pub engine: EngineKind,
    pub embedded: bool,
    /// May carry a password: treated as sensitive everywhere it is shown.
    pub url: Option<String>,
    pub rds_cluster: Option<Address>,
    pub admin_password: Option<Address>,
    /// `admin_password = rds_cluster.NAME.master_secret`: the cluster whose
    /// RDS-managed master secret holds the admin credentials.
    pub admin_master_secret: Option<Address>,
    pub port: Option<u16>,
    /// PostgreSQL: users may be superusers (`superuser = true`).
    pub allow_superuser: bool,
    /// `connect { host port }`: where dbctl dials instead of the url's host
    /// and port (an SSH or SSM tunnel). Published documents and RDS-shaped
    /// secrets keep the url's endpoint.
    pub connect: Option<Connect>,
    /// A server on an RDS cluster: the CA bundle its certificate is
    /// verified against (`sslmode=verify-full`).
    pub sslrootcert: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connect {
    pub host: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    pub database: Address,
    pub schema: Option<String>,
    pub tables: Option<String>,
    pub sequences: Option<String>,
    /// Upper-case, sorted, without duplicates.
    pub privileges: Vec<String>,
}

/// A role or user as the configuration wants it on its server (what the
/// diff compares and each engine's dialect writes statements for).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRole {
    pub addr: Address,
    pub name: String,
    pub login: bool,
    pub connection_limit: i64,
    pub valid_until: Option<String>,
    pub member_of: BTreeSet<String>,
    pub password: Option<Address>,
    /// MySQL/MariaDB users: the account's host part (default `%`).
    pub host: Option<String>,
    /// PostgreSQL role attributes the configuration sets (of ROLE_FLAGS).
    pub flags: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredDb {
    pub addr: Address,
    pub name: String,
    pub owner: String,
    pub encoding: Option<String>,
    pub collation: Option<String>,
    pub connection_limit: i64,
    pub extensions: BTreeSet<String>,
}

/// What a grant is on: a database, a schema in it, or all tables or
/// sequences of a schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub database: String,
    pub schema: Option<String>,
    pub class: GrantClass,
}

/// What a grant is on, in the engine's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantClass {
    Database,
    Schema,
    Tables,
    Sequences,
}

impl GrantClass {
    pub fn of(g: &Grant) -> GrantClass {
        match (&g.schema, &g.tables, &g.sequences) {
            (_, Some(_), _) => GrantClass::Tables,
            (_, _, Some(_)) => GrantClass::Sequences,
            (Some(_), None, None) => GrantClass::Schema,
            (None, None, None) => GrantClass::Database,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GrantClass::Database => "database",
            GrantClass::Schema => "schema",
            GrantClass::Tables => "tables",
            GrantClass::Sequences => "sequences",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Role {
    pub name: String,
    pub server: Address,
    pub member_of: Vec<Address>,
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: String,
    pub server: Address,
    pub password: Option<Address>,
    pub member_of: Vec<Address>,
    pub connection_limit: i64,
    pub host: Option<String>,
    pub valid_until: Option<String>,
    pub grants: Vec<Grant>,
    /// PostgreSQL role attributes the configuration sets (`superuser`,
    /// `createdb`, `createrole`, `bypassrls`, `replication`) and their
    /// values; one not written is left as the server has it.
    pub flags: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Database {
    pub name: String,
    pub server: Address,
    pub owner: Option<Address>,
    pub encoding: Option<String>,
    pub collation: Option<String>,
    pub extensions: Vec<String>,
    pub connection_limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    Local,
    Aws,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generate {
    pub length: u32,
    pub special: bool,
}

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Punctuation that survives URLs, shells and connection strings unquoted.
pub const SPECIAL: &[u8] = b"!#%*+-.:=?@^_~";

/// A new value from the operating system's CSPRNG.
pub fn generate(g: &Generate) -> Sensitive {
    use rand::{Rng, TryRngCore};
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let alphabet: Vec<u8> = if g.special { [ALNUM, SPECIAL].concat() } else { ALNUM.to_vec() };
    let s: String = (0..g.length).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
    Sensitive::new(s)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Secret {
    pub store: Store,
    /// Name in the store.
    pub name: String,
    pub generate: Option<Generate>,
    /// A given value. Never serialised, never printed.
    #[serde(skip)]
    pub value: Option<Sensitive>,
    pub rotate_every: Option<String>,
    /// `external = true`: a secret someone else owns (the RDS-managed master
    /// secret): dbctl reads it and never creates, writes, rotates or deletes it.
    pub external: bool,
}

/// A value that must never be shown: `Debug` and `Display` print
/// `(sensitive)`, it has no `Serialize`, and its memory is zeroed on drop.
#[derive(Clone)]
pub struct Sensitive(secrecy::SecretString);

impl Sensitive {
    pub fn new(s: String) -> Self {
        Sensitive(secrecy::SecretString::from(s))
    }
    /// The value itself, for the few places that must use it (a store write, a password).
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl PartialEq for Sensitive {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}
impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Readonly,
    Readwrite,
    Owner,
}

impl Access {
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "readonly" => Some(Access::Readonly),
            "readwrite" => Some(Access::Readwrite),
            "owner" => Some(Access::Owner),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub app: String,
    pub database: Address,
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publish {
    pub file: Option<String>,
    pub secret: Option<Address>,
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Router {
    pub service: String,
    pub user: Address,
    pub access: Access,
    pub routes: Vec<Route>,
    pub default: Option<String>,
    pub publish: Option<Publish>,
    /// The admin service: routers whose databases this router's user owns
    /// and whose apps it migrates.
    pub migrates: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Keep {
    pub last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupPolicy {
    pub databases: Vec<Address>,
    pub schedule: String,
    pub storage: String,
    pub compression: String,
    pub keep: Keep,
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RdsCluster {
    pub engine: String,
    pub engine_version: Option<String>,
    pub instance_class: Option<String>,
    pub instances: u32,
    pub master_username: Option<String>,
    pub master_password: Option<Address>,
    /// RDS keeps the master password in Secrets Manager.
    pub manage_master_user_password: bool,
    pub backup_policy: Option<Address>,
    pub deletion_protection: bool,
    pub final_snapshot: bool,
    pub apply_immediately: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migrations {
    pub database: Address,
    pub dir: String,
    pub lint: String,
    /// Accept a new migration older than the newest applied one.
    #[serde(default)]
    pub out_of_order: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Server(Server),
    Role(Role),
    User(User),
    Database(Database),
    Secret(Secret),
    Router(Router),
    BackupPolicy(BackupPolicy),
    RdsCluster(RdsCluster),
    Migrations(Migrations),
}

/// Where a resource and each of its attributes were written.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The block header (type and labels).
    pub header: Loc,
    /// Each attribute written, by its schema name, in order.
    pub attrs: Vec<(&'static str, Loc)>,
}

impl Origin {
    /// The attribute's place, or the block header when it was not written.
    pub fn attr(&self, name: &str) -> &Loc {
        self.attrs.iter().find(|(k, _)| *k == name).map_or(&self.header, |(_, l)| l)
    }

    /// Whether the attribute was written.
    pub fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|(k, _)| *k == name)
    }
}

/// A reference from one resource to another, as written.
#[derive(Debug, Clone)]
pub struct Reference {
    pub to: Address,
    /// The attribute path it was written in, e.g. `member_of` or `grant.database`.
    pub attr: String,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub addr: Address,
    pub body: Body,
    pub lifecycle: Lifecycle,
    pub origin: Origin,
    pub refs: Vec<Reference>,
}

impl Resource {
    /// The server a resource lives on, if it lives on one.
    pub fn server(&self) -> Option<&Address> {
        match &self.body {
            Body::Role(r) => Some(&r.server),
            Body::User(u) => Some(&u.server),
            Body::Database(d) => Some(&d.server),
            _ => None,
        }
    }

    /// The object's name where it lives, for kinds that have one.
    pub fn object_name(&self) -> Option<&str> {
        match &self.body {
            Body::Role(r) => Some(&r.name),
            Body::User(u) => Some(&u.name),
            Body::Database(d) => Some(&d.name),
            Body::Secret(s) => Some(&s.name),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AwsProvider {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct StateSettings {
    pub backend: String,
    pub url: Option<String>,
    /// postgres backend: the schema of its tables (default `dbctl`).
    pub schema: Option<String>,
    /// postgres backend: the row's key, for several states in one database (default `default`).
    pub key: Option<String>,
}

/// A whole configuration after loading and checking.
#[derive(Debug, Default)]
pub struct Config {
    pub resources: FastIndexMap<Address, Resource>,
    pub aws: Option<AwsProvider>,
    pub state: StateSettings,
    /// The dependency order the load's cycle check found (what depends on
    /// nothing first); empty when not worked out. The diff orders its
    /// changes by it instead of building the graph again.
    pub order: Vec<Node>,
}

impl Config {
    /// Secrets dbctl only reads: `external = true`, and every server's admin
    /// password. A plan never creates, writes, rotates or deletes them.
    pub fn read_only_secrets(&self) -> BTreeSet<Address> {
        let mut out = BTreeSet::new();
        for r in self.resources.values() {
            match &r.body {
                Body::Secret(s) if s.external => {
                    out.insert(r.addr.clone());
                }
                Body::Server(s) => out.extend(s.admin_password.clone()),
                _ => {}
            }
        }
        out
    }

    pub fn get(&self, a: &Address) -> Option<&Resource> {
        self.resources.get(a)
    }
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.resources.values().filter(move |r| r.addr.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips() {
        for s in ["database.users", "database.app[\"users\"]", "user.x[\"a \\\"q\\\" b\"]"] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a.to_string(), s);
        }
        let a = Address::parse("database.app[\"users\"]").unwrap();
        assert_eq!(a.key.as_deref(), Some("users"));
        assert!(Address::parse("nope.x").is_err());
        assert!(Address::parse("database").is_err());
        assert!(Address::parse("database.a[users]").is_err());
    }

    #[test]
    fn sensitive_never_prints() {
        let s = Sensitive::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "(sensitive) (sensitive)");
    }
}
