//! Checks across resources: engines, names the engine can hold, same-server
//! rules, grant targets and privileges, duplicate objects, reference cycles,
//! and the warnings a reviewer wants to see.

use std::collections::BTreeMap;

use crate::diag::{did_you_mean, Diagnostic, Diags, Loc};
use crate::engine::dialect::{Dialect, EngineAttr, Unsupported};
use crate::model::FastHashMap as HashMap;
use crate::model::*;

/// The shortest `rotate_every`: a shorter one rotates on nearly every apply.
pub const MIN_ROTATION: std::time::Duration = std::time::Duration::from_secs(3600);

fn engine_of(cfg: &Config, server: &Address) -> Option<EngineKind> {
    match cfg.get(server).map(|r| &r.body) {
        Some(Body::Server(s)) => Some(s.engine),
        _ => None,
    }
}

fn ref_loc<'a>(r: &'a Resource, attr: &str) -> &'a Loc {
    r.refs.iter().find(|x| x.attr == attr).map(|x| &x.loc).unwrap_or_else(|| r.origin.attr(attr))
}

pub fn check(cfg: &mut Config, diags: &mut Diags) {
    normalize_privileges(cfg);
    let order = {
        let cfg: &Config = cfg;
        // The cycle check (it builds the whole dependency graph, and orders
        // it for the diff) runs on the other core while the checks below
        // run; its findings come last, as when it ran after them.
        std::thread::scope(|scope| {
            let cycles = scope.spawn(|| {
                let mut found = Diags::default();
                let order = crate::graph::check_cycles(cfg, &mut found);
                (found, order)
            });
            check_resources(cfg, diags);
            match cycles.join() {
                Ok((found, order)) => {
                    diags.extend(found);
                    order
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    };
    cfg.order = order;
}

/// Every check but the cycle check, in order.
fn check_resources(cfg: &Config, diags: &mut Diags) {
    // One namespace per server, engine and kind of object: (server, namespace, name, host).
    let mut objects: HashMap<(&Address, &'static str, &str, String), &Resource> = HashMap::default();
    // The last server's engine: blocks on one server mostly come together.
    let mut last: Option<(&Address, Option<EngineKind>)> = None;
    for r in cfg.resources.values() {
        match &r.body {
            Body::Server(s) => {
                check_server(cfg, r, s, diags);
                check_server_tls(r, s, diags);
                if s.embedded && cfg.state.backend != "local" {
                    diags.push(
                        Diagnostic::warning(format!(
                            "{} is embedded: it lives in this checkout's .dbctl/, while the state is shared",
                            r.addr
                        ))
                        .at(&r.origin.header, "another checkout would start a server of its own")
                        .help("with a shared state, give the server a url that every checkout and CI can reach")
                        .about(&r.addr),
                    );
                }
            }
            Body::Secret(s) => {
                if s.store == Store::Local && cfg.state.backend != "local" {
                    diags.push(
                        Diagnostic::warning(format!(
                            "{} is kept in this checkout's .dbctl/secrets.json, while the state is shared",
                            r.addr
                        ))
                        .at(&r.origin.header, "another checkout, or CI, has no such value")
                        .help("with a shared state, keep secrets in AWS Secrets Manager: store = \"aws\"")
                        .about(&r.addr),
                    );
                }
                if s.store == Store::Aws && cfg.aws.is_none() {
                    diags.push(
                        Diagnostic::error(format!(
                            "{} uses store = \"aws\" but there is no provider \"aws\" block",
                            r.addr
                        ))
                        .at(r.origin.attr("store"), "needs the aws provider")
                        .help("add provider \"aws\" { region = \"us-east-1\" }"),
                    );
                }
            }
            Body::RdsCluster(c) => check_cluster(cfg, r, c, diags),
            Body::BackupPolicy(b) => {
                if b.storage.starts_with("s3://") && cfg.aws.is_none() {
                    diags.push(
                        Diagnostic::error(format!(
                            "{} stores backups in S3 but there is no provider \"aws\" block",
                            r.addr
                        ))
                        .at(r.origin.attr("storage"), "needs the aws provider")
                        .help("add provider \"aws\" { region = \"us-east-1\" }"),
                    );
                }
            }
            _ => {}
        }
        let (Some(server), Some(name)) = (r.server(), r.object_name()) else { continue };
        let engine = match last {
            Some((at, engine)) if at == server => engine,
            _ => last.insert((server, engine_of(cfg, server))).1,
        };
        let Some(engine) = engine else { continue };
        let dialect = Dialect::of(engine);
        if let Some(problem) = dialect.check_name(r.addr.kind, name) {
            let at = r.origin.attr("name");
            diags.push(
                Diagnostic::error(format!("{}: {} cannot hold this name", r.addr, engine.as_str())).at(at, problem),
            );
        } else if let Some(problem) = dialect.reserved_name(r.addr.kind, name) {
            let at = r.origin.attr("name");
            diags.push(
                Diagnostic::error(format!("{}: the name \"{name}\" is reserved", r.addr))
                    .at(at, problem)
                    .help("choose another name (set name = \"...\" to keep this label)"),
            );
        }
        let limit = match &r.body {
            Body::User(u) => Some(u.connection_limit),
            Body::Database(d) => Some(d.connection_limit),
            _ => None,
        };
        if let Some(limit) = limit.filter(|l| *l < -1) {
            diags.push(
                Diagnostic::error(format!("{}: connection_limit = {limit} is not a limit", r.addr))
                    .at(r.origin.attr("connection_limit"), "-1 (unlimited), 0 or more")
                    .help(dialect.negative_limit_help()),
            );
        }
        // Users and roles share one namespace on both engines.
        let ns = if r.addr.kind == Kind::Database { "database" } else { "role" };
        let host = match &r.body {
            Body::User(u) => dialect.account_host(u.host.as_deref()),
            _ => String::new(),
        };
        let key = (server, ns, name, host);
        if let Some(first) = objects.get(&key) {
            diags.push(
                Diagnostic::error(format!("{} and {} manage the same {ns} \"{name}\" on {server}", first.addr, r.addr))
                    .at(&r.origin.header, "second declaration of the object")
                    .also(&first.origin.header, "first declaration"),
            );
        } else {
            objects.insert(key, r);
        }
        match &r.body {
            Body::User(u) => {
                if u.host.is_some() {
                    unsupported(r, "host", dialect.unsupported(EngineAttr::Host), diags);
                }
                if let (Some(host), Some(max)) = (&u.host, dialect.host_max()) {
                    let chars = host.chars().count();
                    if chars > max {
                        diags.push(
                            Diagnostic::error(format!("{}: the host is {chars} characters long", r.addr))
                                .at(r.origin.attr("host"), format!("{} hosts hold at most {max}", dialect.name())),
                        );
                    }
                }
                if u.valid_until.is_some() {
                    unsupported(r, "valid_until", dialect.unsupported(EngineAttr::ValidUntil), diags);
                }
                if !u.member_of.is_empty() {
                    unsupported(r, "member_of", dialect.unsupported(EngineAttr::MemberOf), diags);
                }
                if r.origin.has("connection_limit") {
                    unsupported(r, "connection_limit", dialect.unsupported(EngineAttr::ConnectionLimit), diags);
                }
                check_members(cfg, r, server, &u.member_of, diags);
                check_grants(cfg, r, server, engine, &u.grants, diags);
            }
            Body::Role(ro) => {
                if let Some(u) = dialect.unsupported(EngineAttr::Role) {
                    diags.push(Diagnostic::error(u.message).at(&r.origin.header, u.label).help(u.help.unwrap_or("")));
                }
                check_members(cfg, r, server, &ro.member_of, diags);
                check_grants(cfg, r, server, engine, &ro.grants, diags);
            }
            Body::Database(d) => {
                if !d.extensions.is_empty() {
                    unsupported(r, "extensions", dialect.unsupported(EngineAttr::Extensions), diags);
                }
                if d.owner.is_some() {
                    unsupported(r, "owner", dialect.unsupported(EngineAttr::Owner), diags);
                }
                for a in ["encoding", "collation"] {
                    if r.origin.has(a) {
                        unsupported(r, a, dialect.unsupported(EngineAttr::Charset(a)), diags);
                    }
                }
                if r.origin.has("connection_limit") {
                    unsupported(r, "connection_limit", dialect.unsupported(EngineAttr::ConnectionLimit), diags);
                }
                if let Some(owner) = &d.owner {
                    same_server(cfg, r, "owner", owner, server, diags);
                }
            }
            _ => {}
        }
    }
    check_secrets(cfg, diags);
    check_routers(cfg, diags);
    check_role_flags(cfg, diags);
    warn_unused_databases(cfg, diags);
}

/// An error at `attr` of `r` when the engine has no such attribute.
fn unsupported(r: &Resource, attr: &str, problem: Option<Unsupported>, diags: &mut Diags) {
    let Some(u) = problem else { return };
    let mut d = Diagnostic::error(u.message).at(r.origin.attr(attr), u.label);
    if let Some(help) = u.help {
        d = d.help(help);
    }
    diags.push(d);
}

fn normalize_privileges(cfg: &mut Config) {
    let engines: HashMap<Address, EngineKind> = cfg
        .resources
        .values()
        .filter_map(|r| match &r.body {
            Body::Server(s) => Some((r.addr.clone(), s.engine)),
            _ => None,
        })
        .collect();
    for r in cfg.resources.values_mut() {
        let (server, grants) = match &mut r.body {
            Body::User(u) => (u.server.clone(), &mut u.grants),
            Body::Role(ro) => (ro.server.clone(), &mut ro.grants),
            _ => continue,
        };
        let Some(&engine) = engines.get(&server) else { continue };
        let dialect = Dialect::of(engine);
        for g in grants.iter_mut() {
            let all = dialect.privileges(GrantClass::of(g));
            let mut out: Vec<String> = Vec::new();
            for p in &g.privileges {
                let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
                match p.as_str() {
                    "ALL" | "ALL PRIVILEGES" => out.extend(all.iter().map(|s| s.to_string())),
                    _ => out.push(dialect.privilege_alias(&p).map(str::to_string).unwrap_or(p)),
                }
            }
            out.sort();
            out.dedup();
            g.privileges = out;
        }
    }
}

/// The url's TLS parameters (`sslmode`, `sslrootcert`; `ssl-mode`, `ssl-ca`).
fn check_server_tls(r: &Resource, s: &Server, diags: &mut Diags) {
    let Some(url) = &s.url else { return };
    for (error, message, help) in crate::engine::tls::check_url(url, Dialect::of(s.engine)) {
        let message = format!("{}: {message}", r.addr);
        let d = if error { Diagnostic::error(message) } else { Diagnostic::warning(message) };
        diags.push(d.at(r.origin.attr("url"), "in this url").help(help));
    }
}

/// The rules AWS applies to a cluster, checked here because stand-ins
/// (moto) do not: identifiers, engine versions, instance classes, master
/// user names, backup retention and window, and how the master password is
/// given.
fn check_cluster(cfg: &Config, r: &Resource, c: &crate::model::RdsCluster, diags: &mut Diags) {
    use crate::rds;
    let at = |a: &str| r.origin.attr(a);
    if cfg.aws.is_none() {
        diags.push(
            Diagnostic::error(format!("{} needs a provider \"aws\" block", r.addr))
                .at(&r.origin.header, "created and read with the AWS API")
                .help("add provider \"aws\" { region = \"us-east-1\" }"),
        );
    }
    let last = format!("{}-{}", r.addr.name, c.instances);
    if let Some(p) = rds::identifier_problem(&r.addr.name, 63).or_else(|| rds::identifier_problem(&last, 63)) {
        diags.push(
            Diagnostic::error(format!("{}: not a valid RDS identifier", r.addr))
                .at(&r.origin.header, p)
                .help("the label is the cluster's identifier and its instances are LABEL-1..N: use letters, digits and single hyphens"),
        );
    }
    if !c.engine.starts_with("aurora-") {
        diags.push(
            Diagnostic::error(format!(
                "{}: engine = \"{}\" (a Multi-AZ DB cluster) is not supported",
                r.addr, c.engine
            ))
            .at(at("engine"), "only Aurora clusters")
            .help("use engine = \"aurora-postgresql\" or \"aurora-mysql\""),
        );
    }
    if let Some(p) = c.engine_version.as_deref().and_then(|v| rds::engine_version_problem(&c.engine, v)) {
        diags.push(Diagnostic::error(format!("{}: engine_version", r.addr)).at(at("engine_version"), p));
    }
    match c.instance_class.as_deref() {
        None => diags.push(
            Diagnostic::error(format!("{} has no instance_class", r.addr))
                .at(&r.origin.header, "its instances need one")
                .help("set instance_class = \"db.r6g.large\" (or db.serverless)"),
        ),
        Some(k) => {
            if let Some(p) = rds::instance_class_problem(k) {
                diags.push(Diagnostic::error(format!("{}: instance_class", r.addr)).at(at("instance_class"), p));
            }
        }
    }
    let user = crate::rds::master_username(c);
    if let Some(p) = rds::master_username_problem(&c.engine, &user) {
        diags.push(Diagnostic::error(format!("{}: master_username", r.addr)).at(at("master_username"), p));
    }
    match (&c.master_password, c.manage_master_user_password) {
        (Some(_), true) => diags.push(
            Diagnostic::error(format!("{} sets master_password and manage_master_user_password", r.addr))
                .at(ref_loc(r, "master_password"), "two sources for the master password")
                .help("keep one: a secret dbctl keeps (master_password) or one RDS keeps (manage_master_user_password = true)"),
        ),
        (None, false) => diags.push(
            Diagnostic::error(format!("{} has no master password", r.addr))
                .at(&r.origin.header, "neither master_password nor manage_master_user_password")
                .help("set master_password = secret.NAME, or manage_master_user_password = true"),
        ),
        _ => {}
    }
    if let Some(p) = &c.backup_policy {
        if let Some(Body::BackupPolicy(b)) = cfg.get(p).map(|x| &x.body) {
            if let Err(e) = rds::backup_settings(Some(b)) {
                diags.push(
                    Diagnostic::error(format!("{}: its backup policy {p} cannot be an RDS backup setting", r.addr))
                        .at(ref_loc(r, "backup_policy"), e),
                );
            }
        }
    }
}

fn check_server(cfg: &Config, r: &Resource, s: &Server, diags: &mut Diags) {
    let modes = [s.embedded, s.url.is_some(), s.rds_cluster.is_some()];
    match modes.iter().filter(|m| **m).count() {
        0 => diags.push(
            Diagnostic::error(format!("{} does not say how to reach the server", r.addr))
                .at(&r.origin.header, "no embedded, url or rds_cluster")
                .help("set embedded = true for a local server dbctl runs, url = ... for an existing one, or rds_cluster = rds_cluster.NAME"),
        ),
        1 => {}
        _ => diags.push(
            Diagnostic::error(format!("{} sets more than one of embedded, url and rds_cluster", r.addr))
                .at(&r.origin.header, "choose one way to reach the server"),
        ),
    }
    if let Some(secret) = &s.admin_password {
        if let Some(Body::Secret(sec)) = cfg.get(secret).map(|x| &x.body) {
            if !sec.external && sec.value.is_none() {
                diags.push(
                    Diagnostic::error(format!("{}: admin_password = {secret}, a secret dbctl would generate", r.addr))
                        .at(ref_loc(r, "admin_password"), "the server already has an admin password")
                        .help(format!(
                            "dbctl reads the admin password and never sets it: mark {secret} external = true when its \
                         store already holds it (for example the RDS-managed master secret), or give it \
                         value = var.NAME from a sensitive variable"
                        )),
                );
            }
        }
    }
    if let Some(cluster) = &s.admin_master_secret {
        if let Some(Body::RdsCluster(c)) = cfg.get(cluster).map(|x| &x.body) {
            if !c.manage_master_user_password {
                diags.push(
                    Diagnostic::error(format!(
                        "{}: admin_password = {cluster}.master_secret, but RDS does not manage that cluster's password",
                        r.addr
                    ))
                    .at(ref_loc(r, "admin_password"), "there is no master secret to read")
                    .help(format!(
                        "set manage_master_user_password = true on {cluster}, or refer to the secret of its \
                         master_password"
                    )),
                );
            }
        }
    }
    if s.admin_password.is_some() || s.admin_master_secret.is_some() {
        if s.url.as_deref().and_then(crate::reach::url_password).is_some() {
            diags.push(
                Diagnostic::error(format!("{} has a password in url and admin_password", r.addr))
                    .at(ref_loc(r, "admin_password"), "a second admin password")
                    .help("keep one: remove the password from url, or remove admin_password"),
            );
        }
        if s.embedded {
            diags.push(
                Diagnostic::error(format!("{}: admin_password on an embedded server", r.addr))
                    .at(ref_loc(r, "admin_password"), "dbctl makes the admin password of an embedded server")
                    .help("remove admin_password"),
            );
        }
    }
    let verifies_name = s.url.as_deref().is_some_and(|u| {
        let u = u.to_ascii_lowercase();
        u.contains("sslmode=verify-full") || u.contains("ssl-mode=verify_identity")
    });
    if let (Some(host), true) = (s.connect.as_ref().and_then(|c| c.host.as_deref()), verifies_name) {
        diags.push(
            Diagnostic::warning(format!(
                "{}: the server's certificate is checked against \"{host}\", the host dbctl dials, not the url's",
                r.addr
            ))
            .at(&r.origin.header, "connect.host with a url that verifies the server's name")
            .help(
                "through a tunnel, use sslmode=verify-ca (the certificate chain is still checked), or make the \
                 url's host name point at the tunnel (an /etc/hosts entry) and set only connect.port",
            )
            .about(&r.addr),
        );
    }
    if s.connect.is_some() && s.embedded {
        diags.push(
            Diagnostic::error(format!("{}: a connect block on an embedded server", r.addr))
                .at(&r.origin.header, "an embedded server listens on 127.0.0.1 where dbctl runs it")
                .help("remove the connect block, or set url = ... for a server reached through a tunnel"),
        );
    }
    if s.sslrootcert.is_some() && s.rds_cluster.is_none() {
        diags.push(
            Diagnostic::error(format!("{}: sslrootcert applies only to a server on an rds_cluster", r.addr))
                .at(r.origin.attr("sslrootcert"), "put it in the url")
                .help("write ?sslmode=verify-full&sslrootcert=FILE in the url"),
        );
    }
    if s.rds_cluster.is_some() {
        if let Some(host) = s.connect.as_ref().and_then(|c| c.host.as_deref()) {
            diags.push(
                Diagnostic::warning(format!(
                    "{}: the cluster's certificate is checked against \"{host}\", the host dbctl dials, not the cluster's endpoint",
                    r.addr
                ))
                .at(&r.origin.header, "connect.host on a server on an RDS cluster (TLS verify-full)")
                .help("make the cluster's endpoint name point at the tunnel (an /etc/hosts entry) and set only connect.port")
                .about(&r.addr),
            );
        }
    }
    if s.port.is_some() && !s.embedded {
        diags.push(
            Diagnostic::error("`port` applies only to embedded servers")
                .at(r.origin.attr("port"), "put the port in the url instead"),
        );
    }
    if let Some(rds) = &s.rds_cluster {
        if let Some(Body::RdsCluster(c)) = cfg.get(rds).map(|x| &x.body) {
            if !Dialect::of(s.engine).runs_on_rds(&c.engine) {
                diags.push(
                    Diagnostic::error(format!("{} is {} but {rds} runs {}", r.addr, s.engine.as_str(), c.engine))
                        .at(r.origin.attr("engine"), "engines disagree"),
                );
            }
        }
    }
}

fn same_server(cfg: &Config, r: &Resource, attr: &str, other: &Address, server: &Address, diags: &mut Diags) {
    let Some(o) = cfg.get(other) else { return };
    if let Some(os) = o.server() {
        if os != server {
            diags.push(
                Diagnostic::error(format!("{} is on {server} but {attr} {other} is on {os}", r.addr))
                    .at(ref_loc(r, attr), "must be on the same server"),
            );
        }
    }
}

fn check_members(cfg: &Config, r: &Resource, server: &Address, member_of: &[Address], diags: &mut Diags) {
    for m in member_of {
        if m == &r.addr {
            diags.push(
                Diagnostic::error(format!("{} cannot be a member of itself", r.addr))
                    .at(ref_loc(r, "member_of"), "here"),
            );
            continue;
        }
        same_server(cfg, r, "member_of", m, server, diags);
    }
}

fn check_grants(cfg: &Config, r: &Resource, server: &Address, engine: EngineKind, grants: &[Grant], diags: &mut Diags) {
    let grant_locs: Vec<&Loc> = r.refs.iter().filter(|x| x.attr == "grant.database").map(|x| &x.loc).collect();
    let dialect = Dialect::of(engine);
    let mut targets: BTreeMap<(Address, Option<String>, GrantClass), usize> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate() {
        let loc = grant_locs.get(i).copied().unwrap_or(&r.origin.header);
        same_server(cfg, r, "grant.database", &g.database, server, diags);
        for (attr, v) in [("tables", &g.tables), ("sequences", &g.sequences)] {
            if let Some(v) = v {
                if v != "*" {
                    diags.push(
                        Diagnostic::error(format!(
                            "{attr} = \"{v}\": only \"*\" (all, now and in future) is supported"
                        ))
                        .at(loc, "in this grant"),
                    );
                }
            }
        }
        if g.tables.is_some() && g.sequences.is_some() {
            diags.push(
                Diagnostic::error("a grant is on tables or on sequences, not both")
                    .at(loc, "split it into two grant blocks"),
            );
        }
        if let Some((message, label, help)) = dialect.grant_shape_problem(g) {
            let mut d = Diagnostic::error(message).at(loc, label);
            if let Some(help) = help {
                d = d.help(help);
            }
            diags.push(d);
        }
        let class = GrantClass::of(g);
        let allowed = dialect.privileges(class);
        for p in &g.privileges {
            if !allowed.contains(&p.as_str()) {
                let mut d = Diagnostic::error(
                    format!(
                        "{p} is not a {} privilege on {} {}",
                        engine.as_str(),
                        class.as_str(),
                        if class == GrantClass::Database { "" } else { "in a schema" }
                    )
                    .trim_end()
                    .to_string(),
                )
                .at(loc, "in this grant")
                .help(format!("privileges here: {}", allowed.join(", ")));
                if let Some(h) = did_you_mean(p, allowed.iter().copied()) {
                    d = d.help(h);
                }
                diags.push(d);
            }
        }
        let key = (g.database.clone(), g.schema.clone(), class);
        if let Some(first) = targets.get(&key) {
            diags.push(
                Diagnostic::error(format!("two grant blocks of {} have the same target", r.addr))
                    .at(loc, "same database, schema and object class")
                    .also(grant_locs.get(*first).copied().unwrap_or(&r.origin.header), "as this one")
                    .help("a grant is authoritative for its target: merge the privileges into one block"),
            );
        } else {
            targets.insert(key, i);
        }
    }
}

/// A secret is the password of at most one user (its RDS document names the
/// user), and a given value cannot be rotated by dbctl.
fn check_secrets(cfg: &Config, diags: &mut Diags) {
    let mut owner: HashMap<&Address, &Resource> = HashMap::default();
    for r in cfg.of_kind(Kind::User) {
        let Body::User(u) = &r.body else { continue };
        let Some(secret) = &u.password else { continue };
        if let Some(first) = owner.get(secret) {
            diags.push(
                Diagnostic::error(format!("{secret} is the password of both {} and {}", first.addr, r.addr))
                    .at(ref_loc(r, "password"), "a second user")
                    .also(ref_loc(first, "password"), "first user")
                    .help("give each user its own secret: the stored document names its user, and rotating it must not change another user's password"),
            );
        } else {
            owner.insert(secret, r);
        }
    }
    // An external secret, or an admin password, is only read: never a value dbctl writes.
    let admin: FastHashSet<&Address> = cfg
        .resources
        .values()
        .flat_map(|r| r.refs.iter().filter(|x| x.attr == "admin_password").map(|x| &x.to))
        .collect();
    for r in cfg.resources.values() {
        for x in &r.refs {
            let Some(Body::Secret(sec)) = cfg.get(&x.to).map(|t| &t.body) else { continue };
            if x.attr == "admin_password" {
                continue;
            }
            if admin.contains(&x.to) && !sec.external {
                diags.push(
                    Diagnostic::error(format!("{}: {} = {}, a server's admin password", r.addr, x.attr, x.to))
                        .at(&x.loc, "dbctl writes this secret")
                        .help("an admin password is only read; give this its own secret"),
                );
                continue;
            }
            if !sec.external {
                continue;
            }
            diags.push(
                Diagnostic::error(format!("{}: {} = {}, an external secret", r.addr, x.attr, x.to))
                    .at(&x.loc, "dbctl writes this secret")
                    .help(format!(
                        "an external secret is only read, as a server's admin_password; {} needs a secret dbctl \
                         writes (generate, or value = var.NAME)",
                        x.attr
                    )),
            );
        }
    }
    for r in cfg.of_kind(Kind::Secret) {
        if let Body::Secret(s) = &r.body {
            let every = s.rotate_every.as_deref().and_then(|e| humantime::parse_duration(e).ok());
            if let Some(every) = every.filter(|e| *e < MIN_ROTATION) {
                diags.push(
                    Diagnostic::error(format!(
                        "{}: rotate_every = \"{}\" would rotate the password on nearly every apply",
                        r.addr,
                        s.rotate_every.as_deref().unwrap_or_default()
                    ))
                    .at(r.origin.attr("rotate_every"), "at least \"1h\"")
                    .help(format!(
                        "a rotation changes the password every client holds; {} is shorter than an hour",
                        humantime::format_duration(every)
                    )),
                );
            }
            if s.value.is_some() && s.rotate_every.is_some() {
                diags.push(
                    Diagnostic::error(format!("{} has a given value and rotate_every", r.addr))
                        .at(r.origin.attr("rotate_every"), "dbctl can only rotate values it generates")
                        .help("remove rotate_every, or replace value with a generate block"),
                );
            }
        }
    }
}

fn check_routers(cfg: &Config, diags: &mut Diags) {
    let mut labels: HashMap<(String, String), &Resource> = HashMap::default();
    check_migrates(cfg, diags);
    for r in cfg.of_kind(Kind::Router) {
        let Body::Router(rt) = &r.body else { continue };
        check_route_access(r, rt, diags);
        // Derived grants and the user's own grant blocks must not share a target:
        // both are authoritative, and would undo each other on every apply.
        if let Some(user) = cfg.get(&rt.user) {
            if let Body::User(u) = &user.body {
                let grant_locs: Vec<&Loc> =
                    user.refs.iter().filter(|x| x.attr == "grant.database").map(|x| &x.loc).collect();
                let dialect = Dialect::of(engine_of(cfg, &u.server).unwrap_or(EngineKind::Postgres));
                for route in &rt.routes {
                    let derived: Vec<GrantClass> =
                        dialect.access_privileges(route.access).into_iter().map(|(c, _)| c).collect();
                    for (i, g) in u.grants.iter().enumerate() {
                        // MySQL grants are all at database level.
                        let class = dialect.grant_class(g);
                        let same_schema = class == GrantClass::Database || g.schema.as_deref() == Some("public");
                        if g.database == route.database && same_schema && derived.contains(&class) {
                            diags.push(
                                Diagnostic::error(format!(
                                    "{}: grant on {} ({}) overlaps route \"{}\" of {}",
                                    user.addr,
                                    route.database,
                                    class.as_str(),
                                    route.app,
                                    r.addr
                                ))
                                .at(grant_locs.get(i).copied().unwrap_or(&user.origin.header), "explicit grant")
                                .also(&r.origin.header, "the router")
                                .help("a target has one source of truth: drop this grant block, or change the route's access"),
                            );
                        }
                    }
                }
            }
        }
        for route in rt.routes.iter().filter(|x| x.access == crate::model::Access::Owner) {
            if let Some(Body::Database(d)) = cfg.get(&route.database).map(|x| &x.body) {
                if let Some(owner) = d.owner.as_ref().filter(|o| **o != rt.user) {
                    diags.push(
                        Diagnostic::error(format!(
                            "route \"{}\" of {} would own {}, whose owner is {owner}",
                            route.app, r.addr, route.database
                        ))
                        .at(&r.origin.header, "access = \"owner\"")
                        .help("remove the database's owner, or give the route readwrite access"),
                    );
                }
            }
        }
        let user_server = cfg.get(&rt.user).and_then(|u| u.server()).cloned();
        let route_locs: Vec<&Loc> = r.refs.iter().filter(|x| x.attr == "route.database").map(|x| &x.loc).collect();
        for (i, route) in rt.routes.iter().enumerate() {
            if let (Some(us), Some(db)) = (&user_server, cfg.get(&route.database)) {
                if let Some(ds) = db.server() {
                    if ds != us {
                        diags.push(
                            Diagnostic::error(format!(
                                "route \"{}\" uses a database on {ds}, but {} is on {us}",
                                route.app, rt.user
                            ))
                            .at(
                                route_locs.get(i).copied().unwrap_or(&r.origin.header),
                                format!("{} is on {ds}", route.database),
                            )
                            .help("a router's user must live on the server of every database it routes"),
                        );
                    }
                }
            }
            let key = (rt.service.clone(), route.app.clone());
            if let Some(first) = labels.get(&key) {
                if first.addr != r.addr {
                    diags.push(
                        Diagnostic::error(format!(
                            "app \"{}\" of service \"{}\" is routed by both {} and {}",
                            route.app, rt.service, first.addr, r.addr
                        ))
                        .at(&r.origin.header, "second route for the same app")
                        .also(&first.origin.header, "first route")
                        .help("an app label maps to exactly one database within a service"),
                    );
                }
            } else {
                labels.insert(key, r);
            }
        }
    }
}

/// `createdb` and its peers are PostgreSQL role attributes.
fn check_role_flags(cfg: &Config, diags: &mut Diags) {
    for r in cfg.of_kind(Kind::User) {
        let Body::User(u) = &r.body else { continue };
        let server = match cfg.get(&u.server).map(|s| &s.body) {
            Some(Body::Server(s)) => s,
            _ => continue,
        };
        let dialect = Dialect::of(server.engine);
        if dialect.role_flags() {
            if u.flags.iter().any(|(f, on)| f == "superuser" && *on) && !server.allow_superuser {
                diags.push(
                    Diagnostic::error(format!("{} would be a superuser, which {} does not allow", r.addr, u.server))
                        .at(r.origin.attr("superuser"), "superuser = true")
                        .help(format!("a superuser bypasses every grant: set allow_superuser = true on {} if this is intended, or use createdb/createrole", u.server)),
                );
            }
            continue;
        }
        for (f, _) in &u.flags {
            unsupported(r, f, dialect.unsupported(EngineAttr::Flag(f)), diags);
        }
    }
}

/// Within one service, a database is reached with one access: one login
/// cannot be both readonly and readwrite on it.
fn check_route_access(r: &Resource, rt: &crate::model::Router, diags: &mut Diags) {
    let route_locs: Vec<&Loc> = r.refs.iter().filter(|x| x.attr == "route.database").map(|x| &x.loc).collect();
    let loc = |i: usize| route_locs.get(i).copied().unwrap_or(&r.origin.header);
    let mut reported: Vec<&Address> = Vec::new();
    for (i, a) in rt.routes.iter().enumerate() {
        for (j, b) in rt.routes.iter().enumerate().skip(i + 1) {
            if a.database == b.database && a.access != b.access && !reported.contains(&&a.database) {
                reported.push(&a.database);
                let acc = |x: crate::model::Access| format!("{x:?}").to_lowercase();
                diags.push(
                    Diagnostic::error(format!(
                        "routes \"{}\" and \"{}\" of {} reach {} with different access ({} and {})",
                        a.app,
                        b.app,
                        r.addr,
                        a.database,
                        acc(a.access),
                        acc(b.access)
                    ))
                    .at(loc(j), format!("{} here", acc(b.access)))
                    .also(loc(i), format!("{} here", acc(a.access)))
                    .help("one login has one access to a database: give both routes the same access, or use another router (and user) for the other access"),
                );
            }
        }
    }
}

/// `migrates`: routers only, on the admin's server, and the admin's user is
/// the only owner of every database they route.
fn check_migrates(cfg: &Config, diags: &mut Diags) {
    // Database → (owning user, the router that makes it the owner).
    let mut owners: HashMap<&Address, (&Address, &Resource)> = HashMap::default();
    for r in cfg.of_kind(Kind::Router) {
        let Body::Router(rt) = &r.body else { continue };
        let locs: Vec<&Loc> = r.refs.iter().filter(|x| x.attr == "migrates").map(|x| &x.loc).collect();
        let admin_server = cfg.get(&rt.user).and_then(|u| u.server()).cloned();
        for (i, m) in rt.migrates.iter().enumerate() {
            let loc = locs.get(i).copied().unwrap_or(&r.origin.header);
            if *m == r.addr {
                diags.push(
                    Diagnostic::error(format!("{} migrates itself", r.addr))
                        .at(loc, "this router")
                        .help("list the routers of the services whose databases this one migrates"),
                );
                continue;
            }
            let Some(Body::Router(other)) = cfg.get(m).map(|x| &x.body) else { continue };
            for route in &other.routes {
                let Some(db) = cfg.get(&route.database) else { continue };
                if let (Some(us), Some(ds)) = (&admin_server, db.server()) {
                    if us != ds {
                        diags.push(
                            Diagnostic::error(format!(
                                "{} migrates {m}, whose route \"{}\" uses a database on {ds}, but {} is on {us}",
                                r.addr, route.app, rt.user
                            ))
                            .at(loc, format!("{} is on {ds}", route.database))
                            .help("an admin router migrates the databases of its own server only"),
                        );
                        continue;
                    }
                }
                if let Body::Database(d) = &db.body {
                    if let Some(owner) = d.owner.as_ref().filter(|o| **o != rt.user) {
                        diags.push(
                            Diagnostic::error(format!(
                                "{} would own {} (routed by {m}), whose owner is {owner}",
                                r.addr, route.database
                            ))
                            .at(loc, "migrates makes its user the owner")
                            .help("remove the database's owner: the admin router's user owns what it migrates"),
                        );
                        continue;
                    }
                }
                match owners.get(&route.database) {
                    Some((u, first)) if **u != rt.user => diags.push(
                        Diagnostic::error(format!(
                            "{} is owned through both {} and {}, by different users",
                            route.database, first.addr, r.addr
                        ))
                        .at(loc, format!("{} would own it", rt.user))
                        .also(&first.origin.header, format!("{u} would own it"))
                        .help("one admin router migrates a database"),
                    ),
                    Some(_) => {}
                    None => {
                        owners.insert(&route.database, (&rt.user, r));
                    }
                }
            }
        }
    }
    // Routes with access = "owner" must agree with the admin routers.
    for r in cfg.of_kind(Kind::Router) {
        let Body::Router(rt) = &r.body else { continue };
        for route in rt.routes.iter().filter(|x| x.access == crate::model::Access::Owner) {
            if let Some((u, admin)) = owners.get(&route.database) {
                if **u != rt.user {
                    diags.push(
                        Diagnostic::error(format!(
                            "route \"{}\" of {} would own {}, which {} migrates as {u}",
                            route.app, r.addr, route.database, admin.addr
                        ))
                        .at(&r.origin.header, "access = \"owner\"")
                        .also(&admin.origin.header, "the admin router")
                        .help("give the route readwrite access: the admin router's user owns the database"),
                    );
                }
            }
        }
    }
}

fn warn_unused_databases(cfg: &Config, diags: &mut Diags) {
    let mut used: FastHashSet<&Address> = FastHashSet::default();
    for r in cfg.resources.values() {
        match &r.body {
            Body::Router(rt) => used.extend(rt.routes.iter().map(|x| &x.database)),
            Body::User(u) => used.extend(u.grants.iter().map(|g| &g.database)),
            Body::Role(ro) => used.extend(ro.grants.iter().map(|g| &g.database)),
            _ => {}
        }
    }
    for r in cfg.of_kind(Kind::Database) {
        let owned_by_user =
            matches!(&r.body, Body::Database(d) if d.owner.as_ref().is_some_and(|o| o.kind == Kind::User));
        if !used.contains(&r.addr) && !owned_by_user {
            diags.push(
                Diagnostic::warning(format!("{} is not routed by any router and no user is granted it", r.addr))
                    .at(&r.origin.header, "only the server's admin can use it")
                    .help("route it from a router, or grant it to a user or role")
                    .about(&r.addr),
            );
        }
    }
}

/// Grants on a schema other than `public` in databases a plan creates: a new
/// database has only the schemas of its template (`public`), so the grant
/// would fail halfway through the apply, after the database was created.
/// Known only at plan time (validate does not read the servers).
pub fn grants_on_missing_schemas(
    cfg: &Config,
    created: &std::collections::BTreeSet<Address>,
    planned: &dyn Fn(&str) -> bool,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in cfg.resources.values() {
        let grants = match &r.body {
            Body::User(u) => &u.grants,
            Body::Role(ro) => &ro.grants,
            _ => continue,
        };
        let on_new_schema =
            |g: &Grant| g.schema.as_deref().is_some_and(|s| s != "public") && created.contains(&g.database);
        if !grants.iter().any(on_new_schema) || !planned(&crate::model::Node::Grants(r.addr.clone()).to_string()) {
            continue;
        }
        let grant_locs: Vec<&Loc> = r.refs.iter().filter(|x| x.attr == "grant.database").map(|x| &x.loc).collect();
        for (i, g) in grants.iter().enumerate() {
            let Some(schema) = g.schema.as_deref().filter(|s| *s != "public") else { continue };
            if !created.contains(&g.database) {
                continue;
            }
            let db_name = cfg.get(&g.database).and_then(|d| d.object_name()).unwrap_or(&g.database.name);
            out.push(
                Diagnostic::error(format!(
                    "{}: schema \"{schema}\" does not exist in database \"{db_name}\", which this plan creates",
                    r.addr
                ))
                .at(grant_locs.get(i).copied().unwrap_or(&r.origin.header), format!("a grant on schema \"{schema}\""))
                .help(format!(
                    "a new database has only the schema \"public\": create the database first \
                     (dbctl apply --target {}), then the schema, then grant on it",
                    g.database
                )),
            );
        }
    }
    out
}
