//! The statements whose text depends on the engine, in one place.
//!
//! The diff renders them with the server's dialect when the plan is made and
//! stores the text in the step; apply renders them again with the dialect of
//! the server it runs on and refuses a step whose stored text differs, so the
//! text a plan shows is the text that runs. A password statement is shown
//! with `(sensitive)` where its credential goes; apply puts the credential
//! there (see `with_password`), nothing else changes.
//!
//! It is also the one home of each engine's pure rules: the names it can
//! hold or keeps for itself, the privileges of each grant class, what a
//! router's access gives, and the attributes only one engine has. The
//! configuration checks and the diff ask the dialect instead of matching on
//! the engine.
//!
//! Text in, text out: no connection, no configuration (only a SCRAM
//! verifier's salt is random).

use crate::engine::redis::acl;
use crate::engine::sql::{mysql_account, mysql_grant_on, mysql_ident, mysql_literal, pg_ident, pg_literal};
use crate::engine::{mysql, postgres, LiveRole, LiveServer, Privs, Stmt};
use crate::model::{Access, DesiredDb, DesiredRole, EngineKind, Grant, GrantClass, Kind, Target};

pub const PG_DATABASE_PRIVS: &[&str] = &["CONNECT", "CREATE", "TEMPORARY"];
pub const PG_SCHEMA_PRIVS: &[&str] = &["CREATE", "USAGE"];
pub const PG_TABLE_PRIVS: &[&str] = &["DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"];
pub const PG_SEQUENCE_PRIVS: &[&str] = &["SELECT", "UPDATE", "USAGE"];
pub const MYSQL_DATABASE_PRIVS: &[&str] = &[
    "ALTER",
    "ALTER ROUTINE",
    "CREATE",
    "CREATE ROUTINE",
    "CREATE TEMPORARY TABLES",
    "CREATE VIEW",
    "DELETE",
    "DELETE HISTORY",
    "DROP",
    "EVENT",
    "EXECUTE",
    "INDEX",
    "INSERT",
    "LOCK TABLES",
    "REFERENCES",
    "SELECT",
    "SHOW VIEW",
    "TRIGGER",
    "UPDATE",
];

/// The longest MySQL/MariaDB host part (`mysql.user.Host` is 255 characters).
pub const MYSQL_HOST_MAX: usize = 255;

/// An attribute of the configuration that only some engines have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineAttr<'a> {
    /// A user's `host` (MySQL's `'user'@'host'`).
    Host,
    /// A user's `valid_until`.
    ValidUntil,
    /// A database's `extensions`.
    Extensions,
    /// A role attribute such as `createdb` or `superuser`.
    Flag(&'a str),
    /// A user's or role's `member_of`.
    MemberOf,
    /// A user's or database's `connection_limit`.
    ConnectionLimit,
    /// A database's `owner`.
    Owner,
    /// A database's `encoding` or `collation`.
    Charset(&'a str),
    /// A `role` block (a group role).
    Role,
}

/// Why an engine has no such attribute: the label at the attribute, and a help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub message: String,
    pub label: &'static str,
    pub help: Option<&'static str>,
}

/// What a plan shows in place of a secret.
pub const SENSITIVE: &str = "(sensitive)";

/// The SQL spelling of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MySQL and MariaDB (they spell these statements alike).
    Mysql,
    /// Redis: a database is a key namespace, a user an ACL user; statements
    /// are command lines (`engine::redis::acl`).
    Redis,
}

/// Redis privileges on a namespace (each an ACL command category on its keys).
pub const REDIS_PRIVS: &[&str] = &["keyspace", "read", "write"];

impl Dialect {
    pub fn of(engine: EngineKind) -> Dialect {
        match engine {
            EngineKind::Postgres => Dialect::Postgres,
            EngineKind::Mysql => Dialect::Mysql,
            EngineKind::Redis => Dialect::Redis,
        }
    }

    /// An identifier, always quoted (case, unicode and hostile characters survive).
    pub fn quote_ident(self, name: &str) -> String {
        match self {
            Dialect::Postgres => pg_ident(name),
            Dialect::Mysql => mysql_ident(name),
            Dialect::Redis => acl::quote(name),
        }
    }

    /// `DROP DATABASE`. `force`: PostgreSQL ends the database's sessions
    /// (`WITH (FORCE)`); MySQL has no such clause (nor refuses a database in
    /// use), so there it changes nothing.
    pub fn drop_database(self, name: &str, force: bool) -> String {
        match self {
            Dialect::Postgres => {
                format!("DROP DATABASE {}{}", self.quote_ident(name), if force { " WITH (FORCE)" } else { "" })
            }
            Dialect::Mysql => format!("DROP DATABASE {}", self.quote_ident(name)),
            // Its keys, then its registry entry: one command per line.
            Dialect::Redis => acl::drop_namespace(name).join("\n"),
        }
    }

    /// Whom a password statement names: the role on PostgreSQL; the account
    /// `'user'@'host'` on MySQL (`'name'` without a host); the user name on
    /// Redis (its statement quotes it).
    pub fn password_account(self, name: &str, host: Option<&str>) -> String {
        match self {
            Dialect::Redis => name.to_string(),
            _ => self.account(name, host),
        }
    }

    /// How a role is named in GRANT, REVOKE and password statements: the
    /// role on PostgreSQL (`host` is ignored); the account `'user'@'host'`
    /// on MySQL (`'name'` without a host).
    pub fn account(self, name: &str, host: Option<&str>) -> String {
        match self {
            Dialect::Postgres => pg_ident(name),
            Dialect::Mysql => mysql_account(name, host),
            Dialect::Redis => acl::quote(name),
        }
    }

    /// The statement that sets `account`'s password (and on MySQL unlocks the
    /// account), as a plan shows and stores it: `(sensitive)` where the
    /// credential goes.
    pub fn set_password(self, account: &str) -> String {
        self.password_statement(account, SENSITIVE)
    }

    /// The statement `set_password` rendered (`shown`, from a plan) with the
    /// credential of `password` in place of `(sensitive)`: the text that runs.
    /// Only a verifier or hash of the password reaches the server (SCRAM-SHA-256
    /// on PostgreSQL, what psql's \password sends; the mysql_native_password
    /// hash on MySQL, which MariaDB and MySQL 8 both read), so its statement
    /// and error logs never see the password. A `shown` that is not this
    /// dialect's statement is refused (the error never holds the password).
    pub fn with_password(self, shown: &str, password: &str) -> Result<String, String> {
        if self == Dialect::Redis {
            // `#<sha256 hex>`: Redis stores and compares the hash.
            return acl::with_password(shown, password);
        }
        let account = self.account_in(shown).ok_or_else(|| {
            format!("the plan's password statement `{shown}` is not a {} one: make the plan again", self.name())
        })?;
        let credential = match self {
            Dialect::Postgres => pg_literal(&postgres_protocol::password::scram_sha_256(password.as_bytes())),
            Dialect::Mysql => mysql_literal(&mysql_native_hash(password)),
            Dialect::Redis => unreachable!("returned above"),
        };
        Ok(self.password_statement(account, &credential))
    }

    /// The account of a statement `set_password` rendered.
    fn account_in(self, shown: &str) -> Option<&str> {
        // The statement's fixed text around its account, from the one function that writes it.
        let marker = "\u{0}";
        let template = self.password_statement(marker, SENSITIVE);
        let (head, tail) = template.split_once(marker)?;
        shown.strip_prefix(head)?.strip_suffix(tail).filter(|a| !a.is_empty())
    }

    fn password_statement(self, account: &str, credential: &str) -> String {
        match self {
            Dialect::Redis => acl::password_statement(account, credential, None),
            Dialect::Postgres => format!("ALTER ROLE {account} PASSWORD {credential}"),
            Dialect::Mysql => {
                format!("ALTER USER {account} IDENTIFIED WITH mysql_native_password AS {credential} ACCOUNT UNLOCK")
            }
        }
    }

    /// The engine's name in messages: `PostgreSQL`, `MySQL/MariaDB`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL/MariaDB",
            Dialect::Redis => "Redis",
        }
    }

    /// Why `name` cannot be the name of a `kind` object on this engine, if it cannot.
    pub fn check_name(self, kind: Kind, name: &str) -> Option<String> {
        if name.is_empty() {
            return Some("a name cannot be empty".into());
        }
        if name.contains('\0') {
            return Some("a name cannot contain a NUL byte".into());
        }
        match self {
            Dialect::Postgres if name.len() > 63 => Some(format!(
                "\"{}\" is {} bytes; PostgreSQL names hold at most 63 bytes (it would silently cut it)",
                name.escape_debug(),
                name.len()
            )),
            Dialect::Postgres => None,
            Dialect::Redis if kind == Kind::Database => {
                acl::namespace_problem(name).or_else(|| acl::grant_problem(name))
            }
            Dialect::Redis => acl::user_problem(name),
            Dialect::Mysql => {
                let max = if kind == Kind::Database { 64 } else { 80 };
                let chars = name.chars().count();
                if chars > max {
                    Some(format!(
                        "\"{}\" is {chars} characters; MySQL/MariaDB {} names hold at most {max}",
                        name.escape_debug(),
                        kind.as_str()
                    ))
                } else if name.chars().any(|c| c as u32 > 0xFFFF) {
                    Some(
                        "MySQL/MariaDB names cannot hold characters outside the Basic Multilingual Plane (such as emoji)"
                            .into(),
                    )
                } else if kind == Kind::Database && name.ends_with(' ') {
                    Some("MySQL/MariaDB database names cannot end with a space".into())
                } else {
                    None
                }
            }
        }
    }

    /// Why `name` is a name the engine keeps for itself, if it is one. Names are
    /// compared as the server compares them: PostgreSQL role names as written
    /// (dbctl quotes them), MySQL/MariaDB role and database names without case.
    pub fn reserved_name(self, kind: Kind, name: &str) -> Option<String> {
        match (self, kind) {
            (Dialect::Postgres, Kind::User | Kind::Role) => {
                if ["public", "none"].contains(&name) {
                    Some(format!("\"{name}\" is reserved by PostgreSQL and cannot name a role"))
                } else if name.starts_with("pg_") {
                    Some("role names starting with \"pg_\" are reserved for PostgreSQL's own roles".into())
                } else if ["current_user", "session_user", "current_role"].contains(&name.to_lowercase().as_str()) {
                    Some(format!(
                        "\"{name}\" reads as the SQL keyword {} in grants and ownership: it cannot name a role",
                        name.to_uppercase()
                    ))
                } else {
                    None
                }
            }
            (Dialect::Postgres, Kind::Database) if ["template0", "template1"].contains(&name) => Some(format!(
                "\"{name}\" is a template database PostgreSQL copies every new database from; dbctl does not manage it"
            )),
            (Dialect::Redis, Kind::User | Kind::Role) if name == "default" => {
                Some(format!("\"{name}\" is Redis's built-in user; it cannot be managed"))
            }
            (Dialect::Mysql, Kind::Role) if ["none", "public"].contains(&name.to_lowercase().as_str()) => {
                Some(format!("\"{name}\" is reserved by MySQL/MariaDB and cannot name a role"))
            }
            (Dialect::Mysql, Kind::Database)
                if ["mysql", "information_schema", "performance_schema", "sys"]
                    .contains(&name.to_lowercase().as_str()) =>
            {
                Some(format!("\"{name}\" is a system database of MySQL/MariaDB; dbctl does not manage it"))
            }
            _ => None,
        }
    }

    /// The classes of object a grant can be on: MySQL/MariaDB grant at
    /// database level (`db.*`) only.
    pub fn grant_classes(self) -> &'static [GrantClass] {
        match self {
            Dialect::Postgres => &[GrantClass::Database, GrantClass::Schema, GrantClass::Tables, GrantClass::Sequences],
            Dialect::Mysql | Dialect::Redis => &[GrantClass::Database],
        }
    }

    /// The class a grant block is on in this engine: on MySQL/MariaDB,
    /// `tables = "*"` and a plain database grant are both `db.*`.
    pub fn grant_class(self, g: &Grant) -> GrantClass {
        let class = GrantClass::of(g);
        if self.grant_classes().contains(&class) {
            class
        } else {
            GrantClass::Database
        }
    }

    /// What is wrong with where a grant block points, if anything: the
    /// message, the label at the grant, and a help line.
    pub fn grant_shape_problem(self, g: &Grant) -> Option<(&'static str, &'static str, Option<&'static str>)> {
        match self {
            Dialect::Postgres if (g.tables.is_some() || g.sequences.is_some()) && g.schema.is_none() => Some((
                "tables and sequences are granted within a schema",
                "this grant has no schema",
                Some("add schema = \"public\""),
            )),
            Dialect::Mysql if g.schema.is_some() => {
                Some(("MySQL/MariaDB databases have no schemas", "remove schema from this grant", None))
            }
            Dialect::Redis if g.schema.is_some() || g.tables.is_some() || g.sequences.is_some() => Some((
                "a Redis database is a key namespace: grants are on the whole namespace",
                "remove schema, tables and sequences from this grant",
                None,
            )),
            _ => None,
        }
    }

    /// Every privilege a grant on `class` can hold (what `ALL` means there).
    pub fn privileges(self, class: GrantClass) -> &'static [&'static str] {
        match (self, class) {
            (Dialect::Mysql, _) => MYSQL_DATABASE_PRIVS,
            (Dialect::Redis, _) => REDIS_PRIVS,
            (Dialect::Postgres, GrantClass::Database) => PG_DATABASE_PRIVS,
            (Dialect::Postgres, GrantClass::Schema) => PG_SCHEMA_PRIVS,
            (Dialect::Postgres, GrantClass::Tables) => PG_TABLE_PRIVS,
            (Dialect::Postgres, GrantClass::Sequences) => PG_SEQUENCE_PRIVS,
        }
    }

    /// The privilege another spelling stands for (`TEMP` is PostgreSQL's
    /// `TEMPORARY`; Redis's privileges are lower-case, and the configuration
    /// upper-cases every privilege it reads).
    pub fn privilege_alias(self, privilege: &str) -> Option<&'static str> {
        match (self, privilege) {
            (Dialect::Postgres, "TEMP") => Some("TEMPORARY"),
            (Dialect::Redis, p) => REDIS_PRIVS.iter().copied().find(|r| r.eq_ignore_ascii_case(p) && *r != p),
            _ => None,
        }
    }

    /// Privileges a router's access level gives, per object class (schema public).
    /// MySQL/MariaDB grant at database level (`db.*`) only.
    pub fn access_privileges(self, access: Access) -> Vec<(GrantClass, &'static [&'static str])> {
        match self {
            Dialect::Redis => vec![(
                GrantClass::Database,
                match access {
                    Access::Readonly => &["read"],
                    Access::Readwrite => &["read", "write"],
                    Access::Owner => REDIS_PRIVS,
                },
            )],
            Dialect::Mysql => vec![(
                GrantClass::Database,
                match access {
                    Access::Readonly => &["SELECT", "SHOW VIEW"],
                    Access::Readwrite => {
                        &["CREATE TEMPORARY TABLES", "DELETE", "INSERT", "LOCK TABLES", "SELECT", "SHOW VIEW", "UPDATE"]
                    }
                    Access::Owner => MYSQL_DATABASE_PRIVS,
                },
            )],
            Dialect::Postgres => match access {
                Access::Readonly => vec![
                    (GrantClass::Database, &["CONNECT"]),
                    (GrantClass::Schema, &["USAGE"]),
                    (GrantClass::Tables, &["SELECT"]),
                    (GrantClass::Sequences, &["SELECT"]),
                ],
                Access::Readwrite => vec![
                    (GrantClass::Database, &["CONNECT", "TEMPORARY"]),
                    (GrantClass::Schema, &["USAGE"]),
                    (GrantClass::Tables, &["DELETE", "INSERT", "SELECT", "UPDATE"]),
                    (GrantClass::Sequences, &["SELECT", "USAGE"]),
                ],
                Access::Owner => vec![],
            },
        }
    }

    /// Why this engine has no `attr`, if it has none.
    pub fn unsupported(self, attr: EngineAttr) -> Option<Unsupported> {
        let (name, label, help) = match (self, attr) {
            (Dialect::Postgres, EngineAttr::Host) => (
                "host",
                "PostgreSQL users have no host part",
                Some("control where a Postgres user may connect from in pg_hba.conf"),
            ),
            (Dialect::Mysql, EngineAttr::ValidUntil) => ("valid_until", "not supported on MySQL/MariaDB", None),
            (Dialect::Mysql, EngineAttr::Extensions) => ("extensions", "MySQL/MariaDB have no extensions", None),
            (Dialect::Redis, EngineAttr::Host) => ("host", "Redis users have no host part", None),
            (Dialect::Redis, EngineAttr::ValidUntil) => ("valid_until", "Redis users do not expire", None),
            (Dialect::Redis, EngineAttr::Extensions) => ("extensions", "Redis has no extensions", None),
            (Dialect::Redis, EngineAttr::Flag(f)) => (f, "Redis users have no such attribute", None),
            (Dialect::Redis, EngineAttr::MemberOf) => {
                ("member_of", "Redis has no group roles", Some("grant each user its databases instead"))
            }
            (Dialect::Redis, EngineAttr::ConnectionLimit) => {
                ("connection_limit", "Redis has no connection limits", None)
            }
            (Dialect::Redis, EngineAttr::Owner) => (
                "owner",
                "a Redis database (a key namespace) has no owner",
                Some("give a user owner access in a router"),
            ),
            (Dialect::Redis, EngineAttr::Charset(a)) => {
                (a, "a Redis database (a key namespace) has no character set", None)
            }
            (Dialect::Redis, EngineAttr::Role) => (
                "role",
                "Redis has no group roles: only users (ACL users)",
                Some("declare a user, and grant it its databases"),
            ),
            (Dialect::Mysql, EngineAttr::Flag(f)) => (
                f,
                "MySQL/MariaDB users have no such attribute",
                Some("grant the matching global privilege (e.g. CREATE) from a role instead, or remove it"),
            ),
            _ => return None,
        };
        let message = match self {
            Dialect::Postgres => format!("`{name}` is MySQL-only"),
            Dialect::Mysql => format!("`{name}` is PostgreSQL-only"),
            Dialect::Redis => format!("`{name}` does not apply to Redis"),
        };
        Some(Unsupported { message, label, help })
    }

    /// The statements that create role `d` (`live`: the server as read,
    /// which tells MySQL 8 from MariaDB).
    pub fn create_role(self, d: &DesiredRole, live: &LiveServer) -> Vec<Stmt> {
        match self {
            Dialect::Postgres => postgres::ddl::create_role(d),
            Dialect::Mysql => mysql::ddl::create_role(d, mysql::ddl::is_mysql8(live)),
            // No password yet (its own step sets it): an account that is on cannot log in without one.
            Dialect::Redis => vec![Stmt::admin(acl::create_account(&d.name, d.login))],
        }
    }

    /// The statements that make role `l` (as read) what `d` asks:
    /// `changed` attributes, and its memberships when `members`.
    pub fn update_role(
        self,
        d: &DesiredRole,
        l: &LiveRole,
        changed: &[&str],
        members: bool,
        live: &LiveServer,
    ) -> Vec<Stmt> {
        match self {
            Dialect::Postgres => postgres::ddl::update_role(d, l, changed, members),
            Dialect::Mysql => mysql::ddl::update_role(d, l, changed, members, mysql::ddl::is_mysql8(live)),
            Dialect::Redis => {
                changed.contains(&"login").then(|| Stmt::admin(acl::set_login(&d.name, d.login))).into_iter().collect()
            }
        }
    }

    /// The statements that create database `d`.
    pub fn create_database(self, d: &DesiredDb) -> Vec<Stmt> {
        match self {
            Dialect::Postgres => postgres::ddl::create_database(d),
            Dialect::Mysql => vec![mysql::ddl::create_database(d)],
            Dialect::Redis => vec![Stmt::admin(acl::create_namespace(&d.name))],
        }
    }

    /// Whether a role can be renamed in place (`login`: a user): MySQL and
    /// MariaDB rename accounts (`RENAME USER`), not roles.
    pub fn renames_role(self, login: bool) -> bool {
        match self {
            Dialect::Postgres => true,
            Dialect::Mysql => login,
            // Redis has no ACL rename: a renamed user is a new one.
            Dialect::Redis => false,
        }
    }

    /// The statement that renames role `old` to `new` (the hosts: their
    /// accounts' host parts, on an engine whose accounts have one).
    pub fn rename_role(self, old: &str, old_host: Option<&str>, new: &str, new_host: Option<&str>) -> String {
        let (old, new) = (self.account(old, old_host), self.account(new, new_host));
        match self {
            Dialect::Postgres => format!("ALTER ROLE {old} RENAME TO {new}"),
            Dialect::Mysql => format!("RENAME USER {old} TO {new}"),
            Dialect::Redis => unreachable!("Redis renames no user (renames_role)"),
        }
    }

    /// Whether renaming a role clears its password (PostgreSQL clears an
    /// MD5 one; a SCRAM one survives).
    pub fn rename_clears_md5(self) -> bool {
        self == Dialect::Postgres
    }

    /// The database attributes whose change replaces the database: MySQL
    /// and MariaDB cannot rename a database; PostgreSQL cannot change its
    /// encoding or collation.
    pub fn database_replaced_by(self) -> &'static [&'static str] {
        match self {
            Dialect::Postgres => &["encoding", "collation"],
            Dialect::Mysql | Dialect::Redis => &["name"],
        }
    }

    /// Whether `encoding` names a database encoding of this engine
    /// (MySQL/MariaDB character sets are left to the server to refuse).
    pub fn known_encoding(self, encoding: &str) -> bool {
        match self {
            Dialect::Postgres => postgres::pg_encoding(encoding).is_some(),
            Dialect::Mysql | Dialect::Redis => true,
        }
    }

    /// A recorded attribute (`encoding`, `collation`, `host`) as the server
    /// spells it, where the server spells it otherwise.
    pub fn canonical_spelling(self, key: &str, value: &str) -> Option<String> {
        match (self, key) {
            (Dialect::Postgres, "encoding") => postgres::pg_encoding(value).map(str::to_string),
            (Dialect::Mysql, "host") => Some(value.to_lowercase()),
            (Dialect::Mysql, _) => Some(mysql::canonical_charset(value)),
            _ => None,
        }
    }

    /// What GRANT and REVOKE name for target `t`: `db`.* on MySQL/MariaDB;
    /// the database, the schema (`public` by default), or all its tables or
    /// sequences on PostgreSQL.
    pub fn grant_on(self, t: &Target) -> String {
        match self {
            Dialect::Mysql => return mysql_grant_on(&t.database),
            Dialect::Redis => return acl::quote(&acl::key_pattern(&t.database)),
            Dialect::Postgres => {}
        }
        let s = pg_ident(t.schema.as_deref().unwrap_or("public"));
        match t.class {
            GrantClass::Database => format!("DATABASE {}", pg_ident(&t.database)),
            GrantClass::Schema => format!("SCHEMA {s}"),
            GrantClass::Tables => format!("ALL TABLES IN SCHEMA {s}"),
            GrantClass::Sequences => format!("ALL SEQUENCES IN SCHEMA {s}"),
        }
    }

    /// Whether a user's grants are written as a whole, one statement per
    /// user (Redis: ACL selectors cannot be removed one at a time), rather
    /// than GRANT and REVOKE per target.
    pub fn grants_per_account(self) -> bool {
        self == Dialect::Redis
    }

    /// The statement that gives `account` exactly `grants` (database →
    /// privileges), on an engine that writes grants per account.
    pub fn set_account_grants(
        self,
        account: &str,
        grants: &std::collections::BTreeMap<String, Privs>,
    ) -> Result<String, String> {
        match self {
            Dialect::Redis => acl::set_grants(account, grants),
            _ => Err(format!("{} grants per target, not per account", self.name())),
        }
    }

    /// The attributes a `kind` object does not have on this engine: left out
    /// of its plan and state rather than shown at their defaults.
    pub fn absent_attributes(self, kind: Kind) -> &'static [&'static str] {
        match (self, kind) {
            (Dialect::Redis, Kind::User | Kind::Role) => &["connection_limit", "valid_until", "member_of"],
            (Dialect::Redis, Kind::Database) => &["encoding", "collation"],
            _ => &[],
        }
    }

    /// What a database's data is counted in, when not tables (Redis: keys).
    pub fn data_unit(self) -> Option<&'static str> {
        (self == Dialect::Redis).then_some("key")
    }

    /// Whether the engine has group roles (Redis has users only).
    pub fn has_roles(self) -> bool {
        self != Dialect::Redis
    }

    /// Whether a user has a connection limit.
    pub fn connection_limits(self) -> bool {
        self != Dialect::Redis
    }

    /// Whether a database has an owner (and a connection limit): not on
    /// MySQL/MariaDB.
    pub fn database_owners(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether DDL runs inside a transaction (MySQL/MariaDB commit DDL as it runs).
    pub fn transactional_ddl(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether a database can be renamed in place (not on MySQL/MariaDB).
    pub fn renames_databases(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether users have role attributes (`superuser`, `createdb`, ...).
    pub fn role_flags(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether an account has a host part (`'user'@'host'`).
    pub fn has_hosts(self) -> bool {
        self == Dialect::Mysql
    }

    /// The longest host part of an account, on an engine whose accounts have one.
    pub fn host_max(self) -> Option<usize> {
        match self {
            Dialect::Postgres | Dialect::Redis => None,
            Dialect::Mysql => Some(MYSQL_HOST_MAX),
        }
    }

    /// The host part of a user's account (`%` when none is given), or ""
    /// on an engine whose accounts have none.
    pub fn account_host(self, host: Option<&str>) -> String {
        match self {
            Dialect::Postgres | Dialect::Redis => String::new(),
            Dialect::Mysql => host.unwrap_or("%").to_string(),
        }
    }

    /// Why a negative `connection_limit` other than -1 is refused here.
    pub fn negative_limit_help(self) -> &'static str {
        match self {
            Dialect::Mysql => "MySQL/MariaDB would take a negative limit as unlimited",
            Dialect::Postgres => "PostgreSQL refuses a negative limit other than -1",
            Dialect::Redis => "Redis has no connection limit per user",
        }
    }

    /// Whether roles own objects (and hold privileges) that must be handed
    /// over before the role is dropped; if not, one statement drops an
    /// account (`drop_account`).
    pub fn roles_own_objects(self) -> bool {
        self == Dialect::Postgres
    }

    /// The statement that drops account `name` (as read: `live`) on an
    /// engine whose roles own nothing.
    pub fn drop_account(self, name: &str, live: &LiveRole) -> Option<Stmt> {
        match self {
            Dialect::Postgres => None,
            Dialect::Mysql => Some(mysql::ddl::drop_role(name, live)),
            Dialect::Redis => Some(Stmt::admin(acl::delete_user(name))),
        }
    }

    /// The statement that changes database `d` in place (`changed`: the
    /// attributes that differ), on an engine whose databases have no owner.
    pub fn alter_database(self, d: &DesiredDb, changed: &[&str]) -> Option<Stmt> {
        match self {
            Dialect::Postgres | Dialect::Redis => None,
            Dialect::Mysql => mysql::ddl::alter_database(d, changed),
        }
    }

    /// The port a server listens on unless its url says otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Dialect::Postgres => 5432,
            Dialect::Mysql => 3306,
            Dialect::Redis => 6379,
        }
    }

    /// The admin url of a server reached over TLS that checks the server's
    /// certificate and name (`ca`: the CA bundle's path). `user` and `ca`
    /// are already percent-encoded.
    pub fn verified_tls_url(self, user: &str, host: &str, port: u16, ca: Option<&str>) -> String {
        match self {
            Dialect::Postgres => format!(
                "postgres://{user}@{host}:{port}/postgres?sslmode=verify-full{}",
                ca.map(|c| format!("&sslrootcert={c}")).unwrap_or_default()
            ),
            Dialect::Mysql => format!(
                "mysql://{user}@{host}:{port}/?ssl-mode=VERIFY_IDENTITY{}",
                ca.map(|c| format!("&ssl-ca={c}")).unwrap_or_default()
            ),
            // The redis crate checks the certificate and name of a rediss:// server against the system's roots.
            Dialect::Redis => format!("rediss://{user}@{host}:{port}"),
        }
    }

    /// The server program an embedded server of this engine runs, as users know it.
    pub fn product(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MariaDB",
            Dialect::Redis => "Redis",
        }
    }

    /// Whether migrations are linted (squawk parses PostgreSQL's SQL) and
    /// tested up and down on a throwaway server (`dbctl migrate test`).
    pub fn checks_migrations(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether a backup can dump one database with several jobs (`pg_dump -j`).
    pub fn parallel_dump(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether an RDS cluster engine (`aurora-postgresql`, `aurora-mysql`) runs this engine.
    pub fn runs_on_rds(self, rds_engine: &str) -> bool {
        rds_engine.contains("postgres") == (self == Dialect::Postgres)
    }
}

/// The mysql_native_password hash: `*` and the hex of SHA1(SHA1(password)),
/// as MySQL's PASSWORD() computes it.
fn mysql_native_hash(password: &str) -> String {
    use sha1::{Digest, Sha1};
    format!("*{}", hex::encode_upper(Sha1::digest(Sha1::digest(password.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "we`ird\"'; db ü名";

    #[test]
    fn drop_database_in_each_dialect_with_a_hostile_name() {
        assert_eq!(Dialect::Postgres.drop_database(HOSTILE, false), "DROP DATABASE \"we`ird\"\"'; db ü名\"");
        assert_eq!(Dialect::Postgres.drop_database("app", true), "DROP DATABASE \"app\" WITH (FORCE)");
        assert_eq!(Dialect::Mysql.drop_database(HOSTILE, false), "DROP DATABASE `we``ird\"'; db ü名`");
        assert_eq!(Dialect::Mysql.drop_database("app", true), "DROP DATABASE `app`", "MySQL has no FORCE");
        assert_eq!(Dialect::of(EngineKind::Mysql).quote_ident("a`b"), "`a``b`");
        assert_eq!(Dialect::of(EngineKind::Postgres).quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn the_password_statement_that_runs_is_the_one_shown_with_its_credential() {
        let my = Dialect::Mysql.password_account("o'k; `x` ü", Some("%"));
        let shown = Dialect::Mysql.set_password(&my);
        assert_eq!(
            shown,
            "ALTER USER 'o''k; `x` ü'@'%' IDENTIFIED WITH mysql_native_password AS (sensitive) ACCOUNT UNLOCK"
        );
        let run = Dialect::Mysql.with_password(&shown, "pencil").unwrap();
        // SHA1(SHA1("pencil")), as MySQL's PASSWORD() computes it (checked with Python's hashlib).
        let hash = "'*7614BE58636C810A9D8970A50B3B2A78450413E4'";
        assert_eq!(run, shown.replace(SENSITIVE, hash));
        assert!(!run.contains("pencil"));

        let pg = Dialect::Postgres.password_account("Ro\"le (sensitive)", Some("ignored"));
        let shown = Dialect::Postgres.set_password(&pg);
        assert_eq!(shown, "ALTER ROLE \"Ro\"\"le (sensitive)\" PASSWORD (sensitive)");
        let run = Dialect::Postgres.with_password(&shown, "pencil").unwrap();
        let credential = run.strip_prefix("ALTER ROLE \"Ro\"\"le (sensitive)\" PASSWORD ").unwrap();
        assert!(credential.starts_with("'SCRAM-SHA-256$4096:") && credential.ends_with('\''), "{run}");
        assert!(!run.contains("pencil"));

        // A statement of the other dialect (or no password statement) is refused, and says no password.
        let err = Dialect::Postgres.with_password(&Dialect::Mysql.set_password(&my), "pencil").unwrap_err();
        assert!(err.contains("make the plan again") && !err.contains("pencil"), "{err}");
        assert!(Dialect::Mysql.with_password("DROP DATABASE `x`", "pencil").is_err());
    }

    fn grant(schema: Option<&str>, tables: Option<&str>) -> Grant {
        Grant {
            database: crate::model::Address { kind: Kind::Database, name: "app".into(), key: None },
            schema: schema.map(str::to_string),
            tables: tables.map(str::to_string),
            sequences: None,
            privileges: vec![],
        }
    }

    #[test]
    fn each_engine_says_which_grants_and_attributes_it_has() {
        let (pg, my) = (Dialect::Postgres, Dialect::Mysql);
        assert_eq!(
            pg.grant_shape_problem(&grant(None, Some("*"))),
            Some((
                "tables and sequences are granted within a schema",
                "this grant has no schema",
                Some("add schema = \"public\"")
            ))
        );
        assert_eq!(
            my.grant_shape_problem(&grant(Some("public"), None)),
            Some(("MySQL/MariaDB databases have no schemas", "remove schema from this grant", None))
        );
        assert_eq!(pg.grant_class(&grant(Some("public"), Some("*"))), GrantClass::Tables);
        assert_eq!(my.grant_class(&grant(None, Some("*"))), GrantClass::Database, "db.* on MySQL");
        assert_eq!(pg.privileges(GrantClass::Sequences), PG_SEQUENCE_PRIVS);
        assert_eq!(my.privileges(GrantClass::Tables), MYSQL_DATABASE_PRIVS);
        assert_eq!(pg.privilege_alias("TEMP"), Some("TEMPORARY"));
        assert_eq!(my.privilege_alias("TEMP"), None);
        assert_eq!(Dialect::Redis.privilege_alias("READ"), Some("read"));
        assert_eq!(Dialect::Redis.privilege_alias("TEMP"), None);
        assert_eq!(my.access_privileges(Access::Owner), vec![(GrantClass::Database, MYSQL_DATABASE_PRIVS)]);
        assert!(pg.access_privileges(Access::Owner).is_empty());
        assert_eq!(my.unsupported(EngineAttr::Flag("createdb")).unwrap().message, "`createdb` is PostgreSQL-only");
        assert_eq!(pg.unsupported(EngineAttr::Host).unwrap().message, "`host` is MySQL-only");
        assert_eq!(pg.unsupported(EngineAttr::Extensions), None);
        assert_eq!(my.account_host(None), "%");
        assert_eq!(pg.account_host(Some("10.0.0.1")), "");
        assert!(pg.runs_on_rds("aurora-postgresql") && !pg.runs_on_rds("aurora-mysql"));
        assert!(my.runs_on_rds("aurora-mysql") && !my.runs_on_rds("aurora-postgresql"));
        assert_eq!(pg.rename_role("a\"b", Some("%"), "c", None), "ALTER ROLE \"a\"\"b\" RENAME TO \"c\"");
        assert_eq!(my.rename_role("a", Some("%"), "b", Some("10.%")), "RENAME USER 'a'@'%' TO 'b'@'10.%'");
        assert!(pg.renames_role(false) && my.renames_role(true) && !my.renames_role(false));
        assert_eq!(my.canonical_spelling("host", "LocalHost").as_deref(), Some("localhost"));
        assert_eq!(pg.canonical_spelling("host", "LocalHost"), None);
        assert_eq!(pg.database_replaced_by(), ["encoding", "collation"]);
        assert!(!pg.known_encoding("klingon") && my.known_encoding("klingon"));
    }
}
