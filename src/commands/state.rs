use std::time::Duration;

use serde_json::json;

use super::session::{block_on, err, open};
use super::{Ctx, EXIT_OK};
use crate::cli::{Format, ShowArgs, StateCommand};
use crate::model::{Address, Body};
use crate::plan::Plan;
use crate::state::{StateBackend, StateResource, Unlock};

/// The backend the configuration names (the local one by default).
fn store(ctx: &Ctx) -> Result<std::sync::Arc<dyn StateBackend>, u8> {
    open(ctx).map(|s| s.state_store)
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
    let st = match store(ctx) {
        Ok(st) => st,
        Err(rc) => return rc,
    };
    let state = match st.load() {
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
    let st = match store(ctx) {
        Ok(st) => st,
        Err(rc) => return rc,
    };
    match cmd {
        StateCommand::Pull { out } => pull(st.as_ref(), out.as_deref()),
        StateCommand::Push { file, force, lock_timeout } => {
            let file = file.clone().unwrap_or_else(|| crate::reach::dbctl_dir(&ctx.dir).join("state.json"));
            push(st.as_ref(), &file, *force, lock_timeout)
        }
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
    let (_lock, mut st) = match locked_unmanaged(session, a) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
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
    if session.config.read_only_secrets().contains(a) {
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
    let (_lock, mut st) = match locked_unmanaged(session, a) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
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

/// `dbctl state pull`: the backend's state (with the journal of an
/// unfinished apply replayed) to a file (mode 0600) or standard output.
fn pull(st: &dyn StateBackend, out: Option<&std::path::Path>) -> u8 {
    if !matches!(st.exists(), Ok(true)) {
        if let Err(e) = st.exists() {
            return err(e);
        }
        return err(format!("{} holds no state yet: there is nothing to pull", st.describe()));
    }
    let state = match st.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let bytes = serde_json::to_vec_pretty(&state).expect("state serialises");
    match out {
        Some(path) => {
            if let Err(e) = crate::state::write_private(path, &bytes) {
                return err(e);
            }
            eprintln!(
                "Wrote the state of {} (serial {}, {} resources) to {}.",
                st.describe(),
                state.serial,
                state.resources.len(),
                path.display()
            );
        }
        None => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    EXIT_OK
}

/// `dbctl state push FILE`: write a state file into the configured backend,
/// under its lock. Refused when the backend holds a state of another
/// lineage (another configuration's), or a newer one of the same lineage,
/// unless `--force`. The pushed state gets a serial above the backend's, so
/// plans saved against what was there before are stale.
fn push(st: &dyn StateBackend, file: &std::path::Path, force: bool, lock_timeout: &str) -> u8 {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return err(format!("cannot read {}: {e}", file.display())),
    };
    let mut state = match crate::state::parse_state(&bytes, file) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let timeout = match humantime::parse_duration(lock_timeout) {
        Ok(t) => t,
        Err(e) => return err(format!("--lock-timeout {lock_timeout}: {e}")),
    };
    let _lock = match st.lock("state push", timeout) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let exists = match st.exists() {
        Ok(x) => x,
        Err(e) => return err(e),
    };
    let there = match st.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    if exists {
        if there.lineage == state.lineage && there.serial == state.serial && there.resources == state.resources {
            println!("{} already holds this state (serial {}); nothing to push.", st.describe(), state.serial);
            return EXIT_OK;
        }
        if there.lineage != state.lineage && !force {
            return err(format!(
                "{} holds another state (lineage {}, {} resources) than {} (lineage {}): it belongs to another \
                 configuration, or was started afresh. Nothing was pushed. Pull it first to keep a copy \
                 (dbctl state pull --out FILE), then push with --force to replace it",
                st.describe(),
                there.lineage,
                there.resources.len(),
                file.display(),
                state.lineage
            ));
        }
        if there.lineage == state.lineage && there.serial > state.serial && !force {
            return err(format!(
                "{} holds a newer state (serial {}) than {} (serial {}): pushing would undo what was applied \
                 since. Nothing was pushed; use --force to replace it anyway",
                st.describe(),
                there.serial,
                file.display(),
                state.serial
            ));
        }
        state.serial = state.serial.max(there.serial + 1);
    }
    if let Err(e) = st.save(&state) {
        return err(e);
    }
    println!(
        "Pushed {} ({} resources, lineage {}) to {}; its serial is now {}.",
        file.display(),
        state.resources.len(),
        state.lineage,
        st.describe(),
        state.serial
    );
    EXIT_OK
}

/// `dbctl force-unlock`: clear what a killed apply left. A live holder is
/// never unlocked under it, except that `--force` with the postgres backend
/// ends the holder's database session (which releases its lock; the apply
/// behind it can then write no more state, and stops at its next step).
pub fn force_unlock(ctx: &Ctx, force: bool) -> u8 {
    let st = match store(ctx) {
        Ok(st) => st,
        Err(rc) => return rc,
    };
    match st.force_unlock(force) {
        Ok(Unlock::NotLocked) => {
            println!("The state is not locked.");
            EXIT_OK
        }
        Ok(Unlock::Cleared(holder)) => {
            println!(
                "No running dbctl holds the state lock: the one that took it ({holder}) is gone, and the lock went with it. Cleared what it left behind."
            );
            println!("Run `dbctl plan` to see what that apply left undone.");
            EXIT_OK
        }
        Ok(Unlock::Terminated(holder)) => {
            println!(
                "Ended the database session that held the state lock ({holder}). The dbctl behind it can record nothing more and stops at its next step; \
                 steps it ran were recorded, and an object it was creating is adopted by the next plan."
            );
            println!("Run `dbctl plan` to see what that apply left undone.");
            EXIT_OK
        }
        Ok(Unlock::Held(holder)) if st.describe().starts_with("the postgres") => err(format!(
            "a running dbctl holds the state lock ({holder}). It is released when that process ends, or when its \
             database session does. If that process is stuck or its machine is gone, end its session with \
             `dbctl force-unlock --force`"
        )),
        Ok(Unlock::Held(holder)) => err(format!(
            "a running dbctl holds the state lock ({holder}). It is released when that process ends; stop it (it saves what it did after every step) rather than unlocking under it"
        )),
        Err(e) => err(e),
    }
}

/// For an import: the state lock, and the state, where `a` is not managed yet.
fn locked_unmanaged(
    session: &super::session::Session,
    a: &Address,
) -> Result<(crate::state::StateLock, crate::state::State), u8> {
    let lock = session.state_store.lock("import", Duration::ZERO).map_err(err)?;
    let st = session.state_store.load().map_err(err)?;
    if st.resources.contains_key(&a.to_string()) {
        return Err(err(format!("{a} is already managed")));
    }
    Ok((lock, st))
}
