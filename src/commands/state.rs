use std::time::Duration;

use serde_json::json;

use super::session::{block_on, err, open};
use super::{Ctx, EXIT_OK};
use crate::cli::{Format, ShowArgs, StateCommand};
use crate::model::{Address, Body};
use crate::plan::Plan;
use crate::state::{LocalState, StateResource};

fn store(ctx: &Ctx) -> LocalState {
    LocalState::new(&crate::runtime::dbctl_dir(&ctx.dir))
}

fn show_resource(addr: &str, r: &StateResource) -> String {
    let mut out = format!("# {addr}\n{} \"{}\" {{\n", r.kind, r.name);
    if let Some(s) = &r.server {
        out.push_str(&format!("  server = {s}\n"));
    }
    if let Some(m) = r.attributes.as_object() {
        for (k, v) in m {
            out.push_str(&format!("  {k} = {v}\n"));
        }
    }
    if r.password_version.is_some() {
        out.push_str("  password = (sensitive)\n");
    }
    out.push_str("}\n");
    out
}

pub fn show(ctx: &Ctx, args: &ShowArgs) -> u8 {
    if let Some(file) = &args.planfile {
        let plan = match Plan::read_file(file) {
            Ok(p) => p,
            Err(e) => return err(e),
        };
        super::plan::print(&plan, args.format, true);
        return EXIT_OK;
    }
    let state = match store(ctx).load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "format_version": "1.0", "serial": state.serial, "lineage": state.lineage, "resources": state.resources })).expect("json")
        ),
        _ => {
            if state.resources.is_empty() {
                println!("The state is empty: dbctl manages nothing here yet.");
            }
            for (a, r) in &state.resources {
                println!("{}", show_resource(a, r));
            }
        }
    }
    EXIT_OK
}

pub fn run(ctx: &Ctx, cmd: &StateCommand) -> u8 {
    let st = store(ctx);
    match cmd {
        StateCommand::List => match st.load() {
            Ok(s) => {
                for a in s.resources.keys() {
                    println!("{a}");
                }
                EXIT_OK
            }
            Err(e) => err(e),
        },
        StateCommand::Show { addr } => match st.load() {
            Ok(s) => match s.resources.get(addr) {
                Some(r) => {
                    print!("{}", show_resource(addr, r));
                    EXIT_OK
                }
                None => err(format!("{addr} is not in the state (see `dbctl state list`)")),
            },
            Err(e) => err(e),
        },
        StateCommand::Rm { addr } => {
            let _lock = match st.lock("state rm", Duration::ZERO) {
                Ok(l) => l,
                Err(e) => return err(e),
            };
            let mut s = match st.load() {
                Ok(s) => s,
                Err(e) => return err(e),
            };
            if s.resources.remove(addr).is_none() {
                return err(format!("{addr} is not in the state (see `dbctl state list`)"));
            }
            s.serial += 1;
            if let Err(e) = st.save(&s) {
                return err(e);
            }
            println!("Removed {addr} from the state. The object itself is untouched; dbctl no longer manages it.");
            EXIT_OK
        }
    }
}

/// `dbctl import ADDR ID`: adopt an existing object.
pub fn import(ctx: &Ctx, addr: &str, id: &str) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let a = match Address::parse(addr) {
        Ok(a) => a,
        Err(e) => return err(e),
    };
    let Some(r) = session.config.get(&a) else {
        return err(format!("{addr} is not in the configuration: declare it first, then import it"));
    };
    if let Body::Secret(secret) = &r.body {
        return import_secret(&session, &a, secret, id);
    }
    if let Body::RdsCluster(_) = &r.body {
        return import_cluster(&session, &a, id);
    }
    let (kind, server) = match (&r.body, r.server()) {
        (Body::Role(_), Some(s)) => ("role", s.clone()),
        (Body::User(_), Some(s)) => ("user", s.clone()),
        (Body::Database(_), Some(s)) => ("database", s.clone()),
        _ => return err(format!("{addr}: only databases, users, roles, secrets and RDS clusters can be imported")),
    };
    if r.object_name() != Some(id) {
        return err(format!(
            "{addr} is named \"{}\" in the configuration, not \"{id}\": set name = \"{id}\" first",
            r.object_name().unwrap_or_default()
        ));
    }
    let _lock = match session.state_store.lock("import", Duration::ZERO) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let live = match block_on(session.refresh(&crate::state::State::new())) {
        Ok(l) => l,
        Err(rc) => return rc,
    };
    let Some(l) = live.get(&server) else { return err(format!("{server} could not be read")) };
    let attributes = match kind {
        "database" => match l.databases.get(id) {
            Some(d) => {
                json!({ "name": id, "owner": d.owner, "encoding": d.encoding, "collation": d.collation, "connection_limit": d.connection_limit, "extensions": [] })
            }
            None => return err(format!("there is no database \"{id}\" on {server}")),
        },
        _ => match l.roles.get(id) {
            Some(ro) => {
                json!({ "name": id, "login": ro.login, "connection_limit": ro.connection_limit, "valid_until": ro.valid_until, "member_of": ro.member_of })
            }
            None => return err(format!("there is no role \"{id}\" on {server}")),
        },
    };
    let mut s = match session.state_store.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    if s.resources.contains_key(addr) {
        return err(format!("{addr} is already managed"));
    }
    s.resources.insert(
        addr.to_string(),
        StateResource {
            kind: kind.into(),
            server: Some(server.to_string()),
            name: id.into(),
            attributes,
            password_version: None,
            pending: false,
        },
    );
    s.serial += 1;
    if let Err(e) = session.state_store.save(&s) {
        return err(e);
    }
    println!(
        "Imported {addr} ({kind} \"{id}\" on {server}). Run `dbctl plan` to see how it differs from the configuration."
    );
    EXIT_OK
}

/// `dbctl import rds_cluster.NAME <cluster identifier>`: adopt an existing
/// cluster. It is tagged `managed-by = dbctl` and recorded under its own
/// identifier; the next plan shows how it differs from the configuration.
fn import_cluster(session: &super::session::Session, a: &Address, id: &str) -> u8 {
    if let Some(p) = crate::rds::identifier_problem(id, 63) {
        return err(format!("{id} is not an RDS cluster identifier: {p}"));
    }
    let Some(aws) = session.config.aws.as_ref() else {
        return err("an rds_cluster needs a provider \"aws\" block (region, and endpoint for a stand-in)");
    };
    let _lock = match session.state_store.lock("import", Duration::ZERO) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let mut st = match session.state_store.load() {
        Ok(st) => st,
        Err(e) => return err(e),
    };
    if st.resources.contains_key(&a.to_string()) {
        return err(format!("{a} is already managed"));
    }
    let found = block_on(async {
        let rds = crate::rds::Rds::new(aws).await;
        let c = rds.cluster(id).await?;
        if let Some(c) = &c {
            rds.adopt(c, &a.to_string()).await?;
        }
        Ok::<_, String>(c)
    });
    let c = match found {
        Ok(Some(c)) => c,
        Ok(None) => {
            return err(format!(
                "there is no RDS cluster \"{id}\" (looked with the provider \"aws\" block's region and endpoint)"
            ))
        }
        Err(e) => return err(e),
    };
    st.resources.insert(
        a.to_string(),
        StateResource {
            kind: "rds_cluster".into(),
            server: None,
            name: id.into(),
            attributes: json!({
                "identifier": id,
                "engine": c.engine,
                "engine_version": c.engine_version,
                "instances": c.instances.len(),
                "master_username": c.master_username,
                "deletion_protection": c.deletion_protection,
                "backup_retention_period": c.backup_retention_period,
                "preferred_backup_window": c.preferred_backup_window,
                "endpoint": c.endpoint,
                "port": c.port,
                "master_secret": c.master_secret,
            }),
            password_version: None,
            pending: false,
        },
    );
    st.serial += 1;
    if let Err(e) = session.state_store.save(&st) {
        return err(e);
    }
    println!(
        "Imported {a} (RDS cluster \"{id}\", {} {}, {} instance(s)); it is tagged managed-by = dbctl. \
         Run `dbctl plan` to see how it differs from the configuration.",
        c.engine,
        c.engine_version,
        c.instances.len()
    );
    EXIT_OK
}

/// `dbctl import secret.NAME <name-or-arn>`: adopt a secret that exists in
/// AWS Secrets Manager without dbctl's tag. It is tagged `managed-by = dbctl`
/// and recorded in the state; its current value is kept.
fn import_secret(session: &super::session::Session, a: &Address, s: &crate::model::Secret, id: &str) -> u8 {
    if crate::runtime::read_only_secrets(&session.config).contains(a) {
        return err(format!(
            "{a} is only read by dbctl (external, or a server's admin password): it stays its owner's, \
             untagged and unmanaged; there is nothing to import"
        ));
    }
    if s.store != crate::model::Store::Aws {
        return err(format!(
            "{a} is in the local store (.dbctl/secrets.json), which only dbctl writes: there is nothing to import"
        ));
    }
    let _lock = match session.state_store.lock("import", Duration::ZERO) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let mut st = match session.state_store.load() {
        Ok(st) => st,
        Err(e) => return err(e),
    };
    if st.resources.contains_key(&a.to_string()) {
        return err(format!("{a} is already managed"));
    }
    let adopted = block_on(async {
        let stores = session.stores().await.map_err(|_| None)?;
        stores.adopt(id, &s.name, a).await.map_err(Some)
    });
    let arn = match adopted {
        Ok(arn) => arn,
        Err(Some(e)) => return err(e),
        Err(None) => return super::EXIT_ERROR,
    };
    st.resources.insert(
        a.to_string(),
        StateResource {
            kind: "secret".into(),
            server: None,
            name: s.name.clone(),
            attributes: json!({ "store": s.store, "name": s.name, "value": "(sensitive)" }),
            password_version: None,
            pending: false,
        },
    );
    st.serial += 1;
    if let Err(e) = session.state_store.save(&st) {
        return err(e);
    }
    println!(
        "Imported {a} (the secret \"{}\" in AWS Secrets Manager, {arn}), tagged managed-by = dbctl. Its current value \
         is kept; users whose password is {a} get it at the next apply.",
        s.name
    );
    EXIT_OK
}

pub fn force_unlock(ctx: &Ctx) -> u8 {
    let st = store(ctx);
    let holder = std::fs::read_to_string(st.lock_path()).unwrap_or_default();
    match st.lock("force-unlock", Duration::ZERO) {
        Ok(lock) => {
            drop(lock);
            if holder.trim().is_empty() {
                println!("The state is not locked.");
            } else {
                println!(
                    "No running dbctl holds the state lock: the one that took it ({}) is gone, and the lock went with it. Cleared what it left behind.",
                    holder.trim()
                );
                println!("Run `dbctl plan` to see what that apply left undone.");
            }
            EXIT_OK
        }
        Err(_) => {
            err(format!(
                "a running dbctl holds the state lock ({}). It is released when that process ends; stop it (it saves what it did after every step) rather than unlocking under it",
                holder.trim()
            ))
        }
    }
}
