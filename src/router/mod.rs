//! A router's published document: per logical database, where it is and
//! where the password lives — never the password — and which database each
//! app label uses. Pure: rendered from the configuration and the servers'
//! host and port.
//!
//! One service (one router) has **one alias per logical database**: the
//! database of the router's `default` route is the alias `default` (with no
//! `default`, the first route's database is); every other database's alias is
//! its name on the server (`db_default` if that name is `default`). An admin
//! router (`migrates = [router...]`) has an alias per database those routers
//! route, and migrates each app exactly into the databases they route it to.
//!
//! Formats: `json`; `env` (`DATABASE_URL_<ALIAS>` without a password,
//! `DATABASE_PASSWORD_SECRET_<ALIAS>` naming the secret, `DATABASE_APP_<APP>`
//! naming the alias); `django` (a settings module defining `DATABASES`, whose
//! passwords are read from their store whenever Django opens a connection,
//! and `DATABASE_ROUTERS`).
//!
//! Rotation: a new password is pending in its store until the server accepts
//! it, then current. Between the two, the server refuses the current one: the
//! Django module retries a refused connection with the pending, then the
//! previous version (docs/django.md); readers of `json` and `env` are told to.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde_json::json;

use crate::model::{Access, Address, Body, Config, Router, Store};

/// One logical database of a service, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct DbAlias {
    pub alias: String,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub access: String,
    /// Connection options carried from the server's url (`sslmode`,
    /// `sslrootcert`; MySQL: `ssl-mode`, `ssl-ca`).
    pub options: Vec<(String, String)>,
}

/// A service's published model.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub service: String,
    pub user: String,
    /// (store, name in the store) of the password's secret.
    pub password: Option<(Store, String)>,
    /// The `default` alias first.
    pub databases: Vec<DbAlias>,
    /// App label → alias, for reads and writes (the router's own routes).
    pub apps: Vec<(String, String)>,
    /// Whether apps not in `apps` use the `default` alias (the router has a `default`).
    pub default_for_unrouted: bool,
    /// App label → the aliases it is migrated into.
    pub migrations: Vec<(String, Vec<String>)>,
    /// Region and endpoint of the AWS provider (for an `aws` store).
    pub aws_region: Option<String>,
    pub aws_endpoint: Option<String>,
}

fn name_of(cfg: &Config, a: &Address) -> Option<String> {
    cfg.get(a).and_then(|r| r.object_name()).map(str::to_string)
}

/// Connection options worth carrying from a server url's query: the TLS
/// settings, under the names the engine's own clients read (libpq's
/// `sslmode`/`sslrootcert`, MySQL's `ssl-mode`/`ssl-ca`), whichever of the
/// spellings dbctl accepts the url used.
fn url_options(url: Option<&str>) -> Vec<(String, String)> {
    let Some(u) = url else { return Vec::new() };
    let Some(q) = u.split_once('?').map(|(_, q)| q) else { return Vec::new() };
    let mysql = u.starts_with("mysql:") || u.starts_with("mariadb:");
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| {
            let k = match (mysql, k) {
                (false, "sslmode" | "ssl-mode") => "sslmode",
                (false, "sslrootcert" | "ssl-root-cert" | "ssl-ca") => "sslrootcert",
                (true, "ssl-mode" | "sslmode") => "ssl-mode",
                (true, "ssl-ca" | "sslca") => "ssl-ca",
                _ => return None,
            };
            Some((k.to_string(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The alias of a database that is not the service's default.
fn alias_for(database: &str) -> String {
    if database == "default" {
        "db_default".to_string()
    } else {
        database.to_string()
    }
}

/// The routes (app, database address, access) of a router and, for an admin
/// router, of the routers it migrates: (own routes, migrated routes).
#[allow(clippy::type_complexity)]
fn routes_of(cfg: &Config, rt: &Router) -> (Vec<(String, Address, Access)>, Vec<(String, Address)>) {
    let own = rt.routes.iter().map(|r| (r.app.clone(), r.database.clone(), r.access)).collect();
    let mut migrated = Vec::new();
    for m in &rt.migrates {
        if let Some(Body::Router(other)) = cfg.get(m).map(|r| &r.body) {
            migrated.extend(other.routes.iter().map(|r| (r.app.clone(), r.database.clone())));
        }
    }
    (own, migrated)
}

/// The service a router publishes.
pub fn service(cfg: &Config, rt: &Router, hosts: &BTreeMap<Address, (String, u16)>) -> Option<Service> {
    let user = cfg.get(&rt.user)?;
    let Body::User(u) = &user.body else { return None };
    let (engine, options) = match cfg.get(&u.server).map(|s| &s.body) {
        Some(Body::Server(s)) => (s.engine.as_str().to_string(), url_options(s.url.as_deref())),
        _ => (String::new(), Vec::new()),
    };
    let (host, port) = hosts.get(&u.server).cloned().unwrap_or_default();
    let password = u.password.as_ref().and_then(|s| match cfg.get(s).map(|r| &r.body) {
        Some(Body::Secret(x)) => Some((x.store, x.name.clone())),
        _ => None,
    });
    let (own, migrated) = routes_of(cfg, rt);
    // Databases in order: the default route's first, then as routed.
    let mut order: Vec<(Address, Access)> = Vec::new();
    let mut push = |a: &Address, access: Access| {
        if !order.iter().any(|(x, _)| x == a) {
            order.push((a.clone(), access));
        }
    };
    if let Some(d) = rt.default.as_ref().and_then(|d| own.iter().find(|r| &r.0 == d)) {
        push(&d.1, d.2);
    }
    for r in &own {
        push(&r.1, r.2);
    }
    for r in &migrated {
        push(&r.1, Access::Owner);
    }
    let mut aliases: BTreeMap<Address, String> = BTreeMap::new();
    let mut databases = Vec::new();
    for (i, (addr, access)) in order.iter().enumerate() {
        let Some(database) = name_of(cfg, addr) else { continue };
        let alias = if i == 0 { "default".to_string() } else { alias_for(&database) };
        // An admin router owns every database it migrates.
        let access = if migrated.iter().any(|m| &m.1 == addr) { Access::Owner } else { *access };
        aliases.insert(addr.clone(), alias.clone());
        databases.push(DbAlias {
            alias,
            engine: engine.clone(),
            host: host.clone(),
            port,
            database,
            access: format!("{access:?}").to_lowercase(),
            options: options.clone(),
        });
    }
    let apps: Vec<(String, String)> =
        own.iter().filter_map(|r| Some((r.0.clone(), aliases.get(&r.1)?.clone()))).collect();
    let mut migrations: Vec<(String, Vec<String>)> = Vec::new();
    for (app, alias) in
        apps.iter().cloned().chain(migrated.iter().filter_map(|m| Some((m.0.clone(), aliases.get(&m.1)?.clone()))))
    {
        match migrations.iter_mut().find(|(a, _)| *a == app) {
            Some((_, v)) if !v.contains(&alias) => v.push(alias),
            Some(_) => {}
            None => migrations.push((app, vec![alias])),
        }
    }
    let aws = cfg.aws.as_ref();
    Some(Service {
        service: rt.service.clone(),
        user: u.name.clone(),
        password,
        databases,
        apps,
        default_for_unrouted: rt.default.is_some(),
        migrations,
        aws_region: aws.and_then(|a| a.region.clone()),
        aws_endpoint: aws.and_then(|a| a.endpoint.clone()),
    })
}

fn store_name(s: Store) -> &'static str {
    match s {
        Store::Local => "local",
        Store::Aws => "aws",
    }
}

/// The document in the router's `publish.format`.
pub fn render(cfg: &Config, addr: &Address, hosts: &BTreeMap<Address, (String, u16)>) -> Option<String> {
    let Some(Body::Router(rt)) = cfg.get(addr).map(|r| &r.body) else { return None };
    let publish = rt.publish.as_ref()?;
    let svc = service(cfg, rt, hosts)?;
    Some(match publish.format.as_str() {
        "env" => env(&svc),
        "django" => django(&svc, publish.file.as_deref()),
        _ => json_doc(&svc),
    })
}

fn password_json(svc: &Service) -> serde_json::Value {
    match &svc.password {
        None => serde_json::Value::Null,
        Some((s, n)) => {
            let mut v = json!({ "store": store_name(*s), "secret": n, "key": "password" });
            if *s == Store::Aws {
                v["region"] = json!(svc.aws_region);
                v["endpoint"] = json!(svc.aws_endpoint);
            }
            v
        }
    }
}

fn json_doc(svc: &Service) -> String {
    let mut dbs = serde_json::Map::new();
    for d in &svc.databases {
        let mut entry = json!({
            "engine": d.engine,
            "host": d.host,
            "port": d.port,
            "database": d.database,
            "user": svc.user,
            "access": d.access,
            "options": d.options.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "password": password_json(svc),
        });
        if d.engine == "redis" {
            // A Redis database is a key namespace: the service's keys must start with this.
            entry["key_prefix"] = json!(format!("{}:", d.database));
        }
        dbs.insert(d.alias.clone(), entry);
    }
    let apps: serde_json::Map<_, _> = svc.apps.iter().map(|(a, al)| (a.clone(), json!(al))).collect();
    let mut doc = json!({
        "generated_by": "dbctl",
        "service": svc.service,
        "default": if svc.default_for_unrouted { json!("default") } else { serde_json::Value::Null },
        "databases": dbs,
        "apps": apps,
    });
    if svc.migrations.iter().any(|(a, v)| v.len() > 1 || !svc.apps.iter().any(|(x, _)| x == a)) {
        doc["migrates"] =
            svc.migrations.iter().map(|(a, v)| (a.clone(), json!(v))).collect::<serde_json::Map<_, _>>().into();
    }
    let mut s = serde_json::to_string_pretty(&doc).expect("json");
    s.push('\n');
    s
}

/// `orders-v2` → `ORDERS_V2`.
fn env_name(app: &str) -> String {
    app.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url(user: &str, d: &DbAlias) -> String {
    let mut u = format!("{}://{}@{}:{}/{}", d.engine, enc(user), d.host, d.port, enc(&d.database));
    for (i, (k, v)) in d.options.iter().enumerate() {
        u.push(if i == 0 { '?' } else { '&' });
        u.push_str(&format!("{k}={}", enc(v)));
    }
    u
}

fn env(svc: &Service) -> String {
    let mut out = format!(
        "# Generated by dbctl for service \"{}\"; do not edit.\n# One DATABASE_URL_<ALIAS> per logical database; DATABASE_APP_<APP> names the alias an app uses.\n# Passwords are not here: the password is in the secret named by DATABASE_PASSWORD_SECRET_<ALIAS> (store:name).\n# Read it when a connection opens; if the server refuses it, retry with the secret's pending version, then its previous one (a rotation in progress).\n",
        svc.service
    );
    let secret = svc.password.as_ref().map(|(s, n)| format!("{}:{n}", store_name(*s)));
    for d in &svc.databases {
        let suffix = if d.alias == "default" { String::new() } else { format!("_{}", env_name(&d.alias)) };
        out.push_str(&format!("DATABASE_URL{suffix}={}\n", url(&svc.user, d)));
        if let Some(s) = &secret {
            out.push_str(&format!("DATABASE_PASSWORD_SECRET{suffix}={s}\n"));
        }
        out.push_str(&format!("DATABASE_ACCESS{suffix}={}\n", d.access));
    }
    for (app, alias) in &svc.apps {
        out.push_str(&format!(
            "DATABASE_APP_{}={}\n",
            env_name(app),
            if alias == "default" { "DEFAULT".to_string() } else { env_name(alias) }
        ));
    }
    if matches!(svc.password, Some((Store::Aws, _))) {
        if let Some(r) = &svc.aws_region {
            out.push_str(&format!("DBCTL_AWS_REGION={r}\n"));
        }
        if let Some(e) = &svc.aws_endpoint {
            out.push_str(&format!("DBCTL_AWS_ENDPOINT={e}\n"));
        }
    }
    out
}

fn py(s: &str) -> String {
    // A Python string literal (JSON's escapes are valid Python).
    serde_json::to_string(s).expect("string")
}

fn py_opt(s: Option<&str>) -> String {
    s.map(py).unwrap_or_else(|| "None".into())
}

/// The local store's path relative to the published module's directory,
/// when the publish file is a plain relative path (the configuration
/// directory is then known from the module's own location).
fn store_from_module(file: Option<&str>) -> Option<String> {
    let parent = Path::new(file?).parent()?;
    let mut ups = Vec::new();
    for c in parent.components() {
        match c {
            Component::Normal(_) => ups.push(".."),
            Component::CurDir => {}
            _ => return None,
        }
    }
    ups.extend([".dbctl", "secrets.json"]);
    Some(ups.join("/"))
}

fn django(svc: &Service, file: Option<&str>) -> String {
    let engine = |e: &str| if e == "mysql" { "django.db.backends.mysql" } else { "django.db.backends.postgresql" };
    let (store, secret) = match &svc.password {
        Some((s, n)) => (py(store_name(*s)), py(n)),
        None => ("None".into(), "None".into()),
    };
    let mut out = format!(
        r#"# Generated by dbctl for service {service}; do not edit.
# In settings.py:  from <this module> import DATABASES, DATABASE_ROUTERS
# One alias per logical database; APP_DATABASES maps each app label to its
# alias. Passwords are read from their secret store whenever Django opens a
# connection, never written here.
#
# Rotation (`dbctl secret rotate`, then `dbctl apply`): the new password is
# staged pending in the store; the apply sets it on the server, then makes it
# current. For the moment in between (or an apply stopped in between), a
# connection the server refuses for its password is retried, once per
# version, with the secret's other versions: the pending one, then the
# previous one. Only authentication failures of this module's databases are
# retried (PostgreSQL: "password authentication failed"; MySQL/MariaDB: error
# 1045); the retry wraps the backend's DatabaseWrapper.get_new_connection
# when the first connection of one of them opens.
import json
import os
import sys

SERVICE = {service}
# The local secret store, relative to this file (DBCTL_SECRETS_FILE overrides).
_LOCAL_STORE = {local}
_AWS = {{"region_name": {region}, "endpoint_url": {endpoint}}}
_HERE = os.path.dirname(os.path.abspath(__file__))
_USER = {user}
_SECRET = ({store}, {secret})


def _secrets_file():
    path = os.environ.get("DBCTL_SECRETS_FILE")
    if path:
        return path
    if _LOCAL_STORE is None:
        return os.path.join(".dbctl", "secrets.json")
    return os.path.normpath(os.path.join(_HERE, _LOCAL_STORE))


_CLIENT = []


def _aws_client():
    # One client per process: making one costs more than the read itself.
    if not _CLIENT:
        import boto3

        _CLIENT.append(boto3.client("secretsmanager", **{{k: v for k, v in _AWS.items() if v}}))
    return _CLIENT[0]


def _stored(store, name, fallbacks=False):
    """The secret's stored strings: the current version; with `fallbacks`,
    then the versions that may be the password during a rotation (pending,
    then previous)."""
    if store == "aws":
        client = _aws_client()
        out = []
        for stage in ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS") if fallbacks else ("AWSCURRENT",):
            try:
                out.append(client.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"])
            except client.exceptions.ResourceNotFoundException:
                if stage == "AWSCURRENT":
                    raise
        return out
    with open(_secrets_file()) as f:
        versions = json.load(f)["secrets"][name]["versions"]
    # The version services use: one marked current, else the newest that is
    # not pending (a rotation the server has not accepted yet).
    usable = [v for v in versions if v.get("current")] or [v for v in versions if not v.get("pending")]
    current = (usable or versions)[-1]
    if not fallbacks:
        return [current["value"]]
    newest = list(reversed(versions))
    others = [v for v in newest if v.get("pending")] + [v for v in newest if not v.get("pending")]
    return [current["value"]] + [v["value"] for v in others if v is not current]


def _password_in(value):
    try:
        return json.loads(value)["password"]
    except (ValueError, KeyError, TypeError):
        return value


def _password(store, name):
    return _password_in(_stored(store, name)[0])


def _auth_failed(error):
    """Whether a connection error is the server refusing the password."""
    if getattr(error, "sqlstate", None) == "28P01" or getattr(error, "pgcode", None) == "28P01":
        return True
    args = getattr(error, "args", ())
    if args and args[0] == 1045:
        return True
    text = str(error)
    return "password authentication failed" in text or "Access denied for user" in text


def _ours(settings_dict):
    """Whether a connection's settings are one of this module's databases
    (or a copy Django made of one, e.g. for its test database)."""
    if isinstance(settings_dict, _Database):
        return bool(settings_dict._secret)
    if _SECRET[1] is None or settings_dict.get("USER") != _USER:
        return False
    return any(
        settings_dict.get("HOST") == dict.get(d, "HOST") and str(settings_dict.get("PORT")) == dict.get(d, "PORT")
        for d in DATABASES.values()
    )


_RETRYING = set()


def _retry_on_rotation(engine):
    """Wrap the backend's get_new_connection (once): an authentication
    failure of one of this module's databases is retried with the secret's
    other versions. The backend is loaded by then (Django loads it before it
    reads the password); nothing is imported here."""
    base = sys.modules.get(engine + ".base")
    if engine in _RETRYING or base is None:
        return
    _RETRYING.add(engine)
    wrapper = base.DatabaseWrapper
    original = wrapper.get_new_connection

    def get_new_connection(self, conn_params):
        try:
            return original(self, conn_params)
        except Exception as error:
            if not _ours(self.settings_dict) or not _auth_failed(error):
                raise
            tried = {{conn_params.get("password")}}
            for value in _stored(*_SECRET, fallbacks=True):
                password = _password_in(value)
                if password in tried:
                    continue
                tried.add(password)
                try:
                    return original(self, {{**conn_params, "password": password}})
                except Exception as again:
                    if not _auth_failed(again):
                        raise
            raise

    get_new_connection.__wrapped__ = original
    get_new_connection.__doc__ = original.__doc__
    wrapper.get_new_connection = get_new_connection


class _Database(dict):
    """A DATABASES entry whose PASSWORD is read from the secret store each
    time it is looked up (Django looks it up when it opens a connection),
    and kept in the entry so copies of it see the latest value."""

    def __init__(self, store, secret, **settings):
        super().__init__(settings)
        self._store = store
        self._secret = secret
        try:
            dict.__setitem__(self, "PASSWORD", self._read() if secret else "")
        except Exception:
            # Unreadable now: the lookup when a connection opens says why.
            dict.__setitem__(self, "PASSWORD", "")

    def _read(self):
        return _password(self._store, self._secret)

    def __getitem__(self, key):
        if key == "PASSWORD" and self._secret:
            # A connection is opening: its backend retries during a rotation.
            _retry_on_rotation(dict.__getitem__(self, "ENGINE"))
            value = self._read()
            dict.__setitem__(self, "PASSWORD", value)
            return value
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __iter__(self):
        # Copies ({{**entry}}, dict(entry)) then go through __getitem__.
        return iter(list(dict.keys(self)))

    def copy(self):
        return {{k: self[k] for k in self}}

    def __deepcopy__(self, memo):
        import copy

        clone = _Database.__new__(_Database)
        dict.update(clone, copy.deepcopy(dict(self), memo))
        clone._store = self._store
        clone._secret = self._secret
        return clone


def _database(engine, name, host, port, options):
    return _Database(
        *_SECRET,
        ENGINE=engine,
        NAME=name,
        USER=_USER,
        HOST=host,
        PORT=port,
        OPTIONS=options,
    )


DATABASES = {{
"#,
        service = py(&svc.service),
        local = py_opt(store_from_module(file).as_deref()),
        region = py_opt(svc.aws_region.as_deref()),
        endpoint = py_opt(svc.aws_endpoint.as_deref()),
        user = py(&svc.user),
    );
    for d in &svc.databases {
        let options: Vec<String> = d
            .options
            .iter()
            .map(|(k, v)| match (d.engine.as_str(), k.as_str()) {
                ("mysql", "ssl-mode") => format!("\"ssl_mode\": {}", py(v)),
                ("mysql", "ssl-ca") => format!("\"ssl\": {{\"ca\": {}}}", py(v)),
                _ => format!("{}: {}", py(k), py(v)),
            })
            .collect();
        out.push_str(&format!(
            "    {}: _database({}, {}, {}, {}, {{{}}}),  # {}\n",
            py(&d.alias),
            py(engine(&d.engine)),
            py(&d.database),
            py(&d.host),
            py(&d.port.to_string()),
            options.join(", "),
            d.access
        ));
    }
    out.push_str("}\n\n# App label -> database alias (reads and writes).\nAPP_DATABASES = {\n");
    for (app, alias) in &svc.apps {
        out.push_str(&format!("    {}: {},\n", py(app), py(alias)));
    }
    out.push_str("}\n# App label -> the aliases its migrations run in.\nMIGRATIONS = {\n");
    for (app, aliases) in &svc.migrations {
        let list: Vec<String> = aliases.iter().map(|a| py(a)).collect();
        out.push_str(&format!("    {}: [{}],\n", py(app), list.join(", ")));
    }
    out.push_str(&format!(
        r#"}}
# Apps not in APP_DATABASES use this alias; None: they are an error.
DEFAULT_DATABASE = {default}
DATABASE_ROUTERS = [f"{{__name__}}.DatabaseRouter"]


def _unrouted(app_label):
    try:
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        ImproperlyConfigured = RuntimeError
    return ImproperlyConfigured(
        f"app {{app_label!r}} is not routed by service {{SERVICE!r}}: add a route for it "
        "to the service's router in the dbctl configuration, or give the router a default"
    )


class DatabaseRouter:
    """Send each app's models to its database (settings: DATABASE_ROUTERS)."""

    def _alias(self, app_label):
        alias = APP_DATABASES.get(app_label, DEFAULT_DATABASE)
        if alias is None:
            raise _unrouted(app_label)
        return alias

    def db_for_read(self, model, **hints):
        return self._alias(model._meta.app_label)

    def db_for_write(self, model, **hints):
        return self._alias(model._meta.app_label)

    def allow_relation(self, obj1, obj2, **hints):
        a = APP_DATABASES.get(obj1._meta.app_label, DEFAULT_DATABASE)
        b = APP_DATABASES.get(obj2._meta.app_label, DEFAULT_DATABASE)
        return a is not None and a == b

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label in MIGRATIONS:
            return db in MIGRATIONS[app_label]
        return DEFAULT_DATABASE is not None and db == DEFAULT_DATABASE


def migrate_all(**options):
    """Run every migration, each app into its databases: `migrate --database`
    for every alias, default first."""
    from django.core.management import call_command

    for alias in DATABASES:
        call_command("migrate", database=alias, **options)
"#,
        default = if svc.default_for_unrouted { "\"default\"" } else { "None" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_found_from_the_module_location() {
        assert_eq!(store_from_module(Some("out/toolshed.py")).as_deref(), Some("../.dbctl/secrets.json"));
        assert_eq!(store_from_module(Some("./a/b/m.py")).as_deref(), Some("../../.dbctl/secrets.json"));
        assert_eq!(store_from_module(Some("m.py")).as_deref(), Some(".dbctl/secrets.json"));
        assert_eq!(store_from_module(Some("../m.py")), None);
        assert_eq!(store_from_module(Some("/etc/m.py")), None);
    }

    #[test]
    fn connection_options_come_from_the_url_query() {
        let o = url_options(Some(
            "postgres://a:b@db.example.com/postgres?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&x=1",
        ));
        assert_eq!(o, vec![("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/etc/ca.pem".into())]);
        assert!(url_options(Some("postgres://db/postgres")).is_empty());
        // Either spelling sqlx accepts, under the name the engine's clients read.
        assert_eq!(
            url_options(Some("postgres://db/postgres?ssl-mode=require&ssl-root-cert=/ca.pem")),
            vec![("sslmode".into(), "require".into()), ("sslrootcert".into(), "/ca.pem".into())]
        );
        assert_eq!(
            url_options(Some("mysql://db/?sslmode=VERIFY_IDENTITY&sslca=/ca.pem&x=1")),
            vec![("ssl-mode".into(), "VERIFY_IDENTITY".into()), ("ssl-ca".into(), "/ca.pem".into())]
        );
        assert!(url_options(None).is_empty());
    }
}
