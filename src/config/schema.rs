//! The configuration language as data: every block type, its labels,
//! attributes (type, required, documentation) and nested blocks.
//!
//! This one table drives decoding and type checking (`decode.rs`), the
//! "unknown attribute — did you mean" diagnostics, and the JSON Schema printed
//! by `dbctl schema` (`jsonschema.rs`), so the three can never disagree.

use crate::model::Kind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Bool,
    /// A whole number.
    Int,
    StringList,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// A reference to one resource of one of these kinds.
    Ref(&'static [Kind]),
    /// A list of references.
    RefList(&'static [Kind]),
    /// A server's admin password: a reference to a secret, or
    /// `rds_cluster.NAME.master_secret` (the secret RDS manages).
    AdminSecret,
    /// A duration such as `90d` or `12h`.
    Duration,
    /// A five-field cron expression (UTC).
    Cron,
    /// An RFC 3339 timestamp.
    Timestamp,
    /// Anything (variable defaults).
    Any,
    /// `for_each`: a list/set of strings or a map.
    ForEach,
}

impl Ty {
    pub fn describe(&self) -> String {
        match self {
            Ty::String => "a string".into(),
            Ty::Bool => "a bool".into(),
            Ty::Int => "a whole number".into(),
            Ty::StringList => "a list of strings".into(),
            Ty::Enum(v) => format!("one of {}", quoted_list(v)),
            Ty::Ref(k) => format!("a reference to a {}", kinds(k)),
            Ty::RefList(k) => format!("a list of references to {}", kinds(k)),
            Ty::AdminSecret => "a reference to a secret, or rds_cluster.NAME.master_secret".into(),
            Ty::Duration => "a duration such as \"90d\" or \"12h\"".into(),
            Ty::Cron => "a cron expression such as \"0 3 * * *\"".into(),
            Ty::Timestamp => "an RFC 3339 timestamp such as \"2027-01-01T00:00:00Z\"".into(),
            Ty::Any => "any value".into(),
            Ty::ForEach => "a set or list of strings (toset([...])) or a map".into(),
        }
    }
}

fn kinds(k: &[Kind]) -> String {
    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or ")
}

pub fn quoted_list(v: &[&str]) -> String {
    v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

#[derive(Debug)]
pub struct Nested {
    pub schema: &'static BlockSchema,
    /// May appear more than once.
    pub multiple: bool,
}

#[derive(Debug)]
pub struct BlockSchema {
    pub name: &'static str,
    /// Names of the labels, e.g. `["name"]`; empty for unlabelled blocks.
    pub labels: &'static [&'static str],
    pub doc: &'static str,
    pub attrs: &'static [Attr],
    pub blocks: &'static [Nested],
    /// `locals`: any attribute name is allowed.
    pub open: bool,
}

impl BlockSchema {
    pub fn attr(&self, name: &str) -> Option<&'static Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }
    pub fn nested(&self, name: &str) -> Option<&'static Nested> {
        self.blocks.iter().find(|b| b.schema.name == name)
    }
}

const fn a(name: &'static str, ty: Ty, doc: &'static str) -> Attr {
    Attr { name, ty, required: false, doc }
}
const fn req(name: &'static str, ty: Ty, doc: &'static str) -> Attr {
    Attr { name, ty, required: true, doc }
}

pub const ENGINES: &[&str] = &["postgres", "mysql", "redis"];
pub const ACCESS: &[&str] = &["readonly", "readwrite", "owner"];
pub const COMPRESSION: &[&str] = &["zstd", "gzip", "none"];
pub const STORES: &[&str] = &["local", "aws"];
pub const PUBLISH_FORMATS: &[&str] = &["json", "django", "env"];
pub const LINT: &[&str] = &["error", "warn", "off"];
pub const STATE_BACKENDS: &[&str] = &["local", "postgres"];
pub const RDS_ENGINES: &[&str] = &["aurora-postgresql", "aurora-mysql", "postgres", "mysql"];

const SERVER: &[Kind] = &[Kind::Server];
const USER: &[Kind] = &[Kind::User];
const ROLE_OR_USER: &[Kind] = &[Kind::Role, Kind::User];
const DATABASE: &[Kind] = &[Kind::Database];
const SECRET: &[Kind] = &[Kind::Secret];
const ROUTER_K: &[Kind] = &[Kind::Router];

pub static LIFECYCLE: BlockSchema = BlockSchema {
    name: "lifecycle",
    labels: &[],
    doc: "How dbctl treats the resource's lifetime.",
    attrs: &[
        a("prevent_destroy", Ty::Bool, "A plan that would destroy this resource is an error."),
        a("ignore_changes", Ty::StringList, "Attributes whose drift is ignored after create."),
    ],
    blocks: &[],
    open: false,
};

const LIFECYCLE_N: Nested = Nested { schema: &LIFECYCLE, multiple: false };

pub static STATE: BlockSchema = BlockSchema {
    name: "state",
    labels: &[],
    doc: "Where dbctl keeps its state.",
    attrs: &[
        a("backend", Ty::Enum(STATE_BACKENDS), "local (default: .dbctl/state.json) or postgres."),
        a("url", Ty::String, "Connection URL of the postgres state backend, e.g. env(\"DBCTL_STATE_URL\")."),
        a("schema", Ty::String, "postgres backend: the schema of dbctl's tables (default dbctl)."),
        a(
            "key",
            Ty::String,
            "postgres backend: which state in that database (default \"default\"); one per configuration.",
        ),
    ],
    blocks: &[],
    open: false,
};

pub static DBCTL: BlockSchema = BlockSchema {
    name: "dbctl",
    labels: &[],
    doc: "Settings of dbctl itself.",
    attrs: &[],
    blocks: &[Nested { schema: &STATE, multiple: false }],
    open: false,
};

pub static PROVIDER: BlockSchema = BlockSchema {
    name: "provider",
    labels: &["name"],
    doc: "A cloud provider (only \"aws\"): used by secret stores, rds_cluster and s3 backups.",
    attrs: &[
        a("region", Ty::String, "AWS region."),
        a("endpoint", Ty::String, "Endpoint override (empty = the real AWS endpoints)."),
        a("profile", Ty::String, "Named profile; the standard credential chain otherwise."),
    ],
    blocks: &[],
    open: false,
};

pub static VARIABLE: BlockSchema = BlockSchema {
    name: "variable",
    labels: &["name"],
    doc: "An input variable, set with --var, --var-file or DBCTL_VAR_<NAME>.",
    attrs: &[
        a("default", Ty::Any, "Value when none is given."),
        a("description", Ty::String, "What the variable is for."),
        a("sensitive", Ty::Bool, "Never shown in plans or logs."),
    ],
    blocks: &[],
    open: false,
};

pub static LOCALS: BlockSchema = BlockSchema {
    name: "locals",
    labels: &[],
    doc: "Named values, referenced as local.NAME.",
    attrs: &[],
    blocks: &[],
    open: true,
};

pub static CONNECT: BlockSchema = BlockSchema {
    name: "connect",
    labels: &[],
    doc: "Where dbctl dials instead of the url's host and port (an SSH or SSM tunnel); published documents and secrets keep the url's endpoint.",
    attrs: &[
        a("host", Ty::String, "Host dbctl connects to (default: the url's host)."),
        a("port", Ty::Int, "Port dbctl connects to (default: the url's port)."),
    ],
    blocks: &[],
    open: false,
};

pub static SERVER_B: BlockSchema = BlockSchema {
    name: "server",
    labels: &["name"],
    doc: "A database server: an embedded local one, one reached by URL, or an RDS cluster's.",
    attrs: &[
        req("engine", Ty::Enum(ENGINES), "postgres or mysql (mysql also covers MariaDB)."),
        a("embedded", Ty::Bool, "dbctl initialises and starts a local server under .dbctl/servers/NAME."),
        a("url", Ty::String, "Admin connection URL when not embedded."),
        a("rds_cluster", Ty::Ref(&[Kind::RdsCluster]), "Endpoint and master credentials from a managed cluster."),
        a(
            "admin_password",
            Ty::AdminSecret,
            "Admin password when the URL carries none: a secret, or rds_cluster.NAME.master_secret.",
        ),
        a("port", Ty::Int, "Port of an embedded server (default: a free port chosen once and kept)."),
        a("allow_superuser", Ty::Bool, "PostgreSQL: users of this server may set superuser = true (default false)."),
        a(
            "sslrootcert",
            Ty::String,
            "A server on an RDS cluster: the CA bundle (RDS global-bundle.pem) its certificate is verified against.",
        ),
    ],
    blocks: &[Nested { schema: &CONNECT, multiple: false }, LIFECYCLE_N],
    open: false,
};

pub static GRANT: BlockSchema = BlockSchema {
    name: "grant",
    labels: &[],
    doc: "Privileges on one target; authoritative: exactly these privileges.",
    attrs: &[
        req("database", Ty::Ref(DATABASE), "The database the privileges are on (or in)."),
        a("schema", Ty::String, "A schema in the database; without it the grant is on the database."),
        a("tables", Ty::String, "\"*\": all tables in the schema, now and in future."),
        a("sequences", Ty::String, "\"*\": all sequences in the schema, now and in future."),
        req("privileges", Ty::StringList, "Privilege names, e.g. [\"CONNECT\"] or [\"SELECT\", \"INSERT\"]."),
    ],
    blocks: &[],
    open: false,
};

const GRANT_N: Nested = Nested { schema: &GRANT, multiple: true };

const FOR_EACH: Attr = a("for_each", Ty::ForEach, "One resource per key: toset([...]) or a map.");

pub static ROLE: BlockSchema = BlockSchema {
    name: "role",
    labels: &["name"],
    doc: "A group role: cannot log in.",
    attrs: &[
        req("server", Ty::Ref(SERVER), "The server the role lives on."),
        a("name", Ty::String, "Name on the server (default: the label, or each.key)."),
        a("member_of", Ty::RefList(ROLE_OR_USER), "Roles this role is a member of."),
        FOR_EACH,
    ],
    blocks: &[GRANT_N, LIFECYCLE_N],
    open: false,
};

pub static USER_B: BlockSchema = BlockSchema {
    name: "user",
    labels: &["name"],
    doc: "A role that can log in.",
    attrs: &[
        req("server", Ty::Ref(SERVER), "The server the user lives on."),
        a("name", Ty::String, "Name on the server (default: the label, or each.key)."),
        a("password", Ty::Ref(SECRET), "Secret holding the password (omitted: no password)."),
        a("member_of", Ty::RefList(ROLE_OR_USER), "Roles the user is a member of."),
        a("connection_limit", Ty::Int, "Maximum concurrent connections; -1 = unlimited (default)."),
        a("host", Ty::String, "MySQL only: the user's host part (default \"%\")."),
        a("valid_until", Ty::Timestamp, "Password expiry (Postgres)."),
        a("createdb", Ty::Bool, "PostgreSQL: may create databases (Django's test runner needs it)."),
        a("superuser", Ty::Bool, "PostgreSQL: superuser; only where the server has allow_superuser = true."),
        a("createrole", Ty::Bool, "PostgreSQL: may create roles."),
        a("bypassrls", Ty::Bool, "PostgreSQL: bypasses row-level security."),
        a("replication", Ty::Bool, "PostgreSQL: may connect for replication."),
        a("inherit", Ty::Bool, "PostgreSQL: uses the privileges of its roles without SET ROLE (default true)."),
        FOR_EACH,
    ],
    blocks: &[GRANT_N, LIFECYCLE_N],
    open: false,
};

pub static DATABASE_B: BlockSchema = BlockSchema {
    name: "database",
    labels: &["name"],
    doc: "A logical database.",
    attrs: &[
        req("server", Ty::Ref(SERVER), "The server the database lives on."),
        a("name", Ty::String, "Name on the server (default: the label, or each.key)."),
        a("owner", Ty::Ref(ROLE_OR_USER), "Owner (default: the server's admin user)."),
        a("encoding", Ty::String, "Postgres encoding; MySQL character set."),
        a("collation", Ty::String, "Collation."),
        a("extensions", Ty::StringList, "Postgres only: extensions to create."),
        a("connection_limit", Ty::Int, "Maximum concurrent connections; -1 = unlimited (default)."),
        FOR_EACH,
    ],
    blocks: &[LIFECYCLE_N],
    open: false,
};

pub static GENERATE: BlockSchema = BlockSchema {
    name: "generate",
    labels: &[],
    doc: "dbctl generates the value once, then keeps it.",
    attrs: &[
        a("length", Ty::Int, "Number of characters (default 32)."),
        a("special", Ty::Bool, "Include punctuation (default false)."),
    ],
    blocks: &[],
    open: false,
};

pub static SECRET_B: BlockSchema = BlockSchema {
    name: "secret",
    labels: &["name"],
    doc: "A value dbctl generates or is given, kept in a secret store.",
    attrs: &[
        a("store", Ty::Enum(STORES), "local (default: .dbctl/secrets.json) or aws (Secrets Manager)."),
        a("name", Ty::String, "Name in the store (default: the address)."),
        a("value", Ty::String, "A given value (must come from a sensitive variable)."),
        a("rotate_every", Ty::Duration, "Plan shows a rotation once the value is older."),
        a(
            "external",
            Ty::Bool,
            "Someone else owns the value (e.g. the RDS-managed master secret): dbctl reads it, never writes, rotates or deletes it.",
        ),
        FOR_EACH,
    ],
    blocks: &[Nested { schema: &GENERATE, multiple: false }, LIFECYCLE_N],
    open: false,
};

pub static ROUTE: BlockSchema = BlockSchema {
    name: "route",
    labels: &["app"],
    doc: "An app label and the database it uses.",
    attrs: &[
        req("database", Ty::Ref(DATABASE), "The database this app label uses."),
        a("access", Ty::Enum(ACCESS), "Overrides the router's access for this route."),
    ],
    blocks: &[],
    open: false,
};

pub static PUBLISH: BlockSchema = BlockSchema {
    name: "publish",
    labels: &[],
    doc: "Where the rendered routing document goes.",
    attrs: &[
        a("file", Ty::String, "Path of the rendered document."),
        a("secret", Ty::Ref(SECRET), "A secret that receives the same document."),
        a("format", Ty::Enum(PUBLISH_FORMATS), "json (default), django or env."),
    ],
    blocks: &[],
    open: false,
};

pub static ROUTER: BlockSchema = BlockSchema {
    name: "router",
    labels: &["name"],
    doc: "Which logical database each app of a service uses.",
    attrs: &[
        a("service", Ty::String, "Service name (default: the label)."),
        req("user", Ty::Ref(USER), "The service's database user."),
        a("access", Ty::Enum(ACCESS), "Default access for routes (default readwrite)."),
        a("default", Ty::String, "Route used for unlisted apps."),
        a(
            "migrates",
            Ty::RefList(ROUTER_K),
            "Routers whose databases this router's user owns and migrates (the admin service).",
        ),
    ],
    blocks: &[Nested { schema: &ROUTE, multiple: true }, Nested { schema: &PUBLISH, multiple: false }, LIFECYCLE_N],
    open: false,
};

pub static KEEP: BlockSchema = BlockSchema {
    name: "keep",
    labels: &[],
    doc: "Retention: how many backups to keep.",
    attrs: &[
        a("last", Ty::Int, "The newest N backups."),
        a("daily", Ty::Int, "One per day for N days."),
        a("weekly", Ty::Int, "One per week for N weeks."),
        a("monthly", Ty::Int, "One per month for N months."),
    ],
    blocks: &[],
    open: false,
};

pub static BACKUP_POLICY: BlockSchema = BlockSchema {
    name: "backup_policy",
    labels: &["name"],
    doc: "When and where databases are backed up, and how long backups are kept.",
    attrs: &[
        a("databases", Ty::RefList(DATABASE), "Databases this policy backs up."),
        req("schedule", Ty::Cron, "Cron schedule, UTC."),
        a("storage", Ty::String, "file://DIR (default .dbctl/backups), s3://bucket/prefix, gs://, az://."),
        a("compression", Ty::Enum(COMPRESSION), "zstd (default), gzip or none."),
        a("verify", Ty::Bool, "Restore each new backup into a scratch database and compare."),
    ],
    blocks: &[Nested { schema: &KEEP, multiple: false }, LIFECYCLE_N],
    open: false,
};

pub static RDS_CLUSTER: BlockSchema = BlockSchema {
    name: "rds_cluster",
    labels: &["name"],
    doc: "An AWS RDS / Aurora cluster.",
    attrs: &[
        req("engine", Ty::Enum(RDS_ENGINES), "aurora-postgresql, aurora-mysql, postgres or mysql."),
        a("engine_version", Ty::String, "Engine version."),
        a("instance_class", Ty::String, "Instance class, e.g. db.r6g.large."),
        a("instances", Ty::Int, "Number of instances."),
        a("master_username", Ty::String, "Master user name."),
        a("master_password", Ty::Ref(SECRET), "Secret holding the master password."),
        a(
            "manage_master_user_password",
            Ty::Bool,
            "RDS generates the master password and keeps it in Secrets Manager.",
        ),
        a("backup_policy", Ty::Ref(&[Kind::BackupPolicy]), "Sets retention period and backup window."),
        a("deletion_protection", Ty::Bool, "Refuse deletion."),
        a("final_snapshot", Ty::Bool, "Destroy takes a final snapshot unless false."),
        a("apply_immediately", Ty::Bool, "Apply modifications now rather than in the maintenance window."),
    ],
    blocks: &[LIFECYCLE_N],
    open: false,
};

pub static MIGRATIONS: BlockSchema = BlockSchema {
    name: "migrations",
    labels: &["name"],
    doc: "Ordered SQL migrations for one database.",
    attrs: &[
        req("database", Ty::Ref(DATABASE), "The database the migrations run in."),
        req("dir", Ty::String, "Directory of NNNN_name.up.sql (+ optional .down.sql) files."),
        a("lint", Ty::Enum(LINT), "Backward-compatibility rules: error (default), warn or off."),
        a("out_of_order", Ty::Bool, "Apply a new migration older than the newest applied one (default false)."),
    ],
    blocks: &[LIFECYCLE_N],
    open: false,
};

/// Every top-level block type, in the order the documentation lists them.
pub static TOP_LEVEL: &[&BlockSchema] = &[
    &DBCTL,
    &PROVIDER,
    &VARIABLE,
    &LOCALS,
    &SERVER_B,
    &ROLE,
    &USER_B,
    &DATABASE_B,
    &SECRET_B,
    &ROUTER,
    &BACKUP_POLICY,
    &RDS_CLUSTER,
    &MIGRATIONS,
];

pub fn top_level(name: &str) -> Option<&'static BlockSchema> {
    TOP_LEVEL.iter().copied().find(|b| b.name == name)
}

/// The schema of a resource kind.
pub fn of_kind(kind: Kind) -> &'static BlockSchema {
    top_level(kind.as_str()).expect("every kind has a schema")
}
