//! A decoded block → a typed resource. Checks that need only the block itself.

use indexmap::IndexMap;

use super::decode::{DBlock, V};
use crate::diag::{Diagnostic, Diags};
use crate::model::*;

pub struct Decoded {
    pub addr: Address,
    pub block: DBlock,
    /// `value` of a secret comes from a sensitive variable.
    pub value_from_sensitive_var: bool,
}

fn collect_refs(prefix: &str, b: &DBlock, out: &mut Vec<Reference>) {
    // The attribute's path is written out only for references (most attributes are not).
    let path = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
    for (name, (v, loc)) in &b.attrs {
        match v {
            V::Ref(a) => out.push(Reference { to: a.clone(), attr: path(name), loc: loc.clone() }),
            V::Refs(list) if !list.is_empty() => {
                let attr = path(name);
                out.extend(list.iter().map(|a| Reference { to: a.clone(), attr: attr.clone(), loc: loc.clone() }))
            }
            _ => {}
        }
    }
    for (name, inner) in &b.blocks {
        collect_refs(&path(name), inner, out);
    }
}

fn grants(b: &DBlock) -> Vec<Grant> {
    b.blocks("grant")
        .filter_map(|g| {
            let mut privileges: Vec<String> = g.list("privileges").iter().map(|p| p.trim().to_uppercase()).collect();
            privileges.sort();
            privileges.dedup();
            Some(Grant {
                database: g.reference("database")?,
                schema: g.str("schema"),
                tables: g.str("tables"),
                sequences: g.str("sequences"),
                privileges,
            })
        })
        .collect()
}

pub fn build(d: Decoded, diags: &mut Diags) -> Option<Resource> {
    let Decoded { addr, block: b, value_from_sensitive_var } = d;
    let default_name = addr.key.clone().unwrap_or_else(|| addr.name.clone());
    let name = b.str("name").unwrap_or(default_name);

    let body = match addr.kind {
        Kind::Server => {
            let engine = EngineKind::parse(&b.str("engine")?)?;
            let port = match b.int("port") {
                Some(p) if !(1..=65535).contains(&p) => {
                    diags.push(
                        Diagnostic::error(format!("port {p} is out of range"))
                            .at(b.loc("port").unwrap_or(&b.header), "1 to 65535"),
                    );
                    None
                }
                p => p.map(|p| p as u16),
            };
            let connect = b.block("connect").map(|c| {
                let port = match c.int("port") {
                    Some(p) if !(1..=65535).contains(&p) => {
                        diags.push(
                            Diagnostic::error(format!("port {p} is out of range"))
                                .at(c.loc("port").unwrap_or(&c.header), "1 to 65535"),
                        );
                        None
                    }
                    p => p.map(|p| p as u16),
                };
                Connect { host: c.str("host"), port }
            });
            Body::Server(Server {
                engine,
                connect,
                embedded: b.bool("embedded").unwrap_or(false),
                url: b.str("url"),
                rds_cluster: b.reference("rds_cluster"),
                admin_password: b.reference("admin_password").filter(|a| a.kind == Kind::Secret),
                admin_master_secret: b.reference("admin_password").filter(|a| a.kind == Kind::RdsCluster),
                port,
                allow_superuser: b.bool("allow_superuser").unwrap_or(false),
                sslrootcert: b.str("sslrootcert"),
            })
        }
        Kind::Role => Body::Role(Role {
            name,
            server: b.reference("server")?,
            member_of: b.refs("member_of"),
            grants: grants(&b),
        }),
        Kind::User => Body::User(User {
            name,
            server: b.reference("server")?,
            password: b.reference("password"),
            member_of: b.refs("member_of"),
            connection_limit: b.int("connection_limit").unwrap_or(-1),
            host: b.str("host"),
            valid_until: b.str("valid_until"),
            grants: grants(&b),
            flags: crate::engine::ROLE_FLAGS.iter().filter_map(|(f, _, _)| Some((f.to_string(), b.bool(f)?))).collect(),
        }),
        Kind::Database => Body::Database(Database {
            name,
            server: b.reference("server")?,
            owner: b.reference("owner"),
            encoding: b.str("encoding"),
            collation: b.str("collation"),
            extensions: b.list("extensions"),
            connection_limit: b.int("connection_limit").unwrap_or(-1),
        }),
        Kind::Secret => {
            let value = b.str("value").map(Sensitive::new);
            let gen = b.block("generate");
            let external = b.bool("external").unwrap_or(false);
            if external {
                // Someone else's value: nothing of it is dbctl's to give or make.
                for (attr, loc) in [
                    ("value", b.loc("value")),
                    ("rotate_every", b.loc("rotate_every")),
                    ("generate", gen.map(|g| &g.header)),
                ] {
                    if let Some(loc) = loc {
                        diags.push(
                            Diagnostic::error(format!("{addr} is external and has `{attr}`"))
                                .at(loc, "dbctl never writes an external secret")
                                .also(b.loc("external").unwrap_or(&b.header), "external")
                                .help("remove it: an external secret's value is read from its store as it is"),
                        );
                    }
                }
            }
            if value.is_some() && gen.is_some() {
                diags.push(
                    Diagnostic::error("a secret has either `value` or a `generate` block, not both")
                        .at(b.loc("value").unwrap_or(&b.header), "a given value")
                        .also(&gen.unwrap().header, "and a generated one"),
                );
            }
            if value.is_some() && !value_from_sensitive_var {
                diags.push(
                    Diagnostic::warning("this secret's value does not come from a sensitive variable")
                        .at(b.loc("value").unwrap_or(&b.header), "may be shown or committed in plain text")
                        .help("declare variable \"...\" { sensitive = true } and write value = var.NAME")
                        .about(&addr),
                );
            }
            let generate = if value.is_some() || external {
                None
            } else {
                let g = gen;
                let length = g.and_then(|g| g.int("length")).unwrap_or(32);
                if !(8..=4096).contains(&length) {
                    let loc = g.and_then(|g| g.loc("length")).unwrap_or(&b.header);
                    diags.push(
                        Diagnostic::error(format!("a generated secret of length {length}"))
                            .at(loc, "between 8 and 4096 characters"),
                    );
                }
                Some(Generate {
                    length: length.clamp(8, 4096) as u32,
                    special: g.and_then(|g| g.bool("special")).unwrap_or(false),
                })
            };
            let store = match b.str("store").as_deref() {
                Some("aws") => Store::Aws,
                _ => Store::Local,
            };
            Body::Secret(Secret {
                store,
                name: b.str("name").unwrap_or_else(|| addr.to_string()),
                generate,
                value,
                rotate_every: b.str("rotate_every"),
                external,
            })
        }
        Kind::Router => {
            let access = b.str("access").and_then(|a| Access::parse(&a)).unwrap_or(Access::Readwrite);
            let mut seen: IndexMap<String, &DBlock> = IndexMap::new();
            let mut routes = Vec::new();
            for r in b.blocks("route") {
                let app = r.label().to_string();
                if let Some(first) = seen.get(&app) {
                    diags.push(
                        Diagnostic::error(format!("duplicate route \"{app}\" in {addr}"))
                            .at(&r.header, "routed again here")
                            .also(&first.header, "first routed here")
                            .help("an app label maps to exactly one database within a service"),
                    );
                    continue;
                }
                seen.insert(app.clone(), r);
                let Some(database) = r.reference("database") else { continue };
                routes.push(Route {
                    app,
                    database,
                    access: r.str("access").and_then(|a| Access::parse(&a)).unwrap_or(access),
                });
            }
            let migrates = b.refs("migrates");
            if routes.is_empty() && seen.is_empty() && migrates.is_empty() {
                diags.push(
                    Diagnostic::error(format!("{addr} has no route"))
                        .at(&b.header, "routes nothing")
                        .help("add route \"APP\" { database = database.NAME }, or migrates = [router.NAME]"),
                );
            }
            let default = b.str("default");
            if let Some(def) = &default {
                if !seen.contains_key(def) {
                    let mut d = Diagnostic::error(format!("default route \"{def}\" is not a route of {addr}"))
                        .at(b.loc("default").unwrap_or(&b.header), "no route block has this label");
                    if let Some(h) = crate::diag::did_you_mean(def, seen.keys().map(String::as_str)) {
                        d = d.help(h);
                    }
                    diags.push(d);
                }
            }
            let publish = b.block("publish").map(|p| Publish {
                file: p.str("file"),
                secret: p.reference("secret"),
                format: p.str("format").unwrap_or_else(|| "json".into()),
            });
            if let Some(p) = b.block("publish") {
                if p.str("file").is_none() && p.reference("secret").is_none() {
                    diags.push(
                        Diagnostic::error("publish needs a file, a secret, or both").at(&p.header, "publishes nowhere"),
                    );
                }
            }
            Body::Router(Router {
                service: b.str("service").unwrap_or_else(|| addr.name.clone()),
                user: b.reference("user")?,
                access,
                routes,
                default,
                publish,
                migrates,
            })
        }
        Kind::BackupPolicy => {
            let storage = b.str("storage").unwrap_or_else(|| "file://.dbctl/backups".into());
            let scheme_ok = ["file://", "s3://", "gs://", "az://"].iter().any(|s| storage.starts_with(s));
            if !scheme_ok {
                diags.push(
                    Diagnostic::error(format!("unsupported storage \"{storage}\""))
                        .at(b.loc("storage").unwrap_or(&b.header), "not a storage URL dbctl knows")
                        .help("file://DIR, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"),
                );
            }
            let keep_block = b.block("keep");
            let mut keep = Keep::default();
            if let Some(k) = keep_block {
                for (field, slot) in [
                    ("last", &mut keep.last),
                    ("daily", &mut keep.daily),
                    ("weekly", &mut keep.weekly),
                    ("monthly", &mut keep.monthly),
                ] {
                    if let Some(n) = k.int(field) {
                        if n < 0 {
                            diags.push(
                                Diagnostic::error(format!("keep.{field} cannot be negative"))
                                    .at(k.loc(field).unwrap_or(&k.header), "0 or more"),
                            );
                        } else {
                            *slot = Some(n as u32);
                        }
                    }
                }
            }
            Body::BackupPolicy(BackupPolicy {
                databases: b.refs("databases"),
                schedule: b.str("schedule")?,
                storage,
                compression: b.str("compression").unwrap_or_else(|| "zstd".into()),
                keep,
                verify: b.bool("verify").unwrap_or(false),
            })
        }
        Kind::RdsCluster => {
            let instances = b.int("instances").unwrap_or(1);
            if !(1..=16).contains(&instances) {
                diags.push(
                    Diagnostic::error(format!("an RDS cluster with {instances} instances"))
                        .at(b.loc("instances").unwrap_or(&b.header), "between 1 and 16"),
                );
            }
            Body::RdsCluster(RdsCluster {
                engine: b.str("engine")?,
                engine_version: b.str("engine_version"),
                instance_class: b.str("instance_class"),
                instances: instances.clamp(1, 16) as u32,
                master_username: b.str("master_username"),
                master_password: b.reference("master_password"),
                manage_master_user_password: b.bool("manage_master_user_password").unwrap_or(false),
                backup_policy: b.reference("backup_policy"),
                deletion_protection: b.bool("deletion_protection").unwrap_or(false),
                final_snapshot: b.bool("final_snapshot").unwrap_or(true),
                apply_immediately: b.bool("apply_immediately").unwrap_or(false),
            })
        }
        Kind::Migrations => Body::Migrations(Migrations {
            database: b.reference("database")?,
            dir: b.str("dir")?,
            lint: b.str("lint").unwrap_or_else(|| "error".into()),
            out_of_order: b.bool("out_of_order").unwrap_or(false),
        }),
    };

    let lifecycle = match b.block("lifecycle") {
        None => Lifecycle::default(),
        Some(l) => {
            let schema = super::schema::of_kind(addr.kind);
            let ignore = l.list("ignore_changes");
            for name in &ignore {
                if schema.attr(name).is_none() || name == "for_each" {
                    let mut d = Diagnostic::error(format!(
                        "ignore_changes names `{name}`, which is not an attribute of {}",
                        addr.kind.as_str()
                    ))
                    .at(l.loc("ignore_changes").unwrap_or(&l.header), "unknown attribute");
                    if let Some(h) = crate::diag::did_you_mean(name, schema.attrs.iter().map(|a| a.name)) {
                        d = d.help(h);
                    }
                    diags.push(d);
                }
            }
            Lifecycle { prevent_destroy: l.bool("prevent_destroy").unwrap_or(false), ignore_changes: ignore }
        }
    };

    let mut refs = Vec::new();
    collect_refs("", &b, &mut refs);
    // The block is not needed past here: its places move into the origin.
    let origin = Origin { header: b.header, attrs: b.attrs.into_iter().map(|(k, (_, l))| (k, l)).collect() };
    Some(Resource { addr, body, lifecycle, origin, refs })
}
