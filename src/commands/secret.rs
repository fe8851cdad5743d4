use super::session::{block_on, err, open};
use super::{Ctx, EXIT_OK};
use crate::cli::SecretCommand;
use crate::model::{Address, Body, Kind, Store};

fn age(created: &str) -> String {
    let Ok(t) = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339) else {
        return String::new();
    };
    let d = time::OffsetDateTime::now_utc() - t;
    match (d.whole_days(), d.whole_hours(), d.whole_minutes()) {
        (days, _, _) if days >= 1 => format!("{days} day(s) ago"),
        (_, h, _) if h >= 1 => format!("{h} hour(s) ago"),
        (_, _, m) => format!("{m} minute(s) ago"),
    }
}

pub fn run(ctx: &Ctx, cmd: &SecretCommand) -> u8 {
    let (addr, reveal, rotate) = match cmd {
        SecretCommand::Show { addr, reveal } => (addr, *reveal, None),
        SecretCommand::Rotate { addr, lock_timeout } => (addr, false, Some(lock_timeout)),
    };
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    // A rotation takes the state lock, as apply does: never in the middle of an apply.
    let _lock = match rotate {
        Some(timeout) => {
            let timeout = match humantime::parse_duration(timeout) {
                Ok(t) => t,
                Err(e) => return err(format!("--lock-timeout {timeout}: {e}")),
            };
            match session.state_store.lock("secret rotate", timeout) {
                Ok(l) => Some(l),
                Err(e) => return err(e),
            }
        }
        None => None,
    };
    let a = match Address::parse(addr) {
        Ok(a) if a.kind == Kind::Secret => a,
        Ok(_) => return err(format!("{addr} is not a secret")),
        Err(e) => return err(e),
    };
    let Some(Body::Secret(s)) = session.config.get(&a).map(|r| &r.body) else {
        return err(format!("{addr} is not in the configuration"));
    };
    let users: Vec<String> = session
        .config
        .of_kind(Kind::User)
        .filter(|u| matches!(&u.body, Body::User(x) if x.password.as_ref() == Some(&a)))
        .map(|u| u.addr.to_string())
        .collect();
    let stores = match block_on(session.stores()) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let read_only = session.config.read_only_secrets().contains(&a);
    if rotate.is_some() {
        if read_only {
            return err(format!(
                "{addr} is only read by dbctl (external, or a server's admin password): rotate it where it is \
                 managed (for the RDS-managed master secret, in RDS)"
            ));
        }
        let Some(g) = &s.generate else {
            return err(format!("{addr} has a given value; dbctl rotates only values it generates"));
        };
        let rds = crate::reach::rds_shapes(&session.config, &session.endpoints);
        let doc = crate::secrets::document(&crate::secrets::generate(g), rds.get(&a));
        let meta = match block_on(stores.meta(s.store, &s.name)) {
            Ok(m) => m,
            Err(e) => return err(e.for_secret(&a)),
        };
        // A user's password that is already set: the new version is staged
        // pending, so services keep reading the password the server accepts
        // until `dbctl apply` has set the new one.
        if let (false, Some(meta)) = (users.is_empty(), &meta) {
            if let Some(v) = &meta.rotation {
                return err(format!(
                    "{addr}: a rotation is already pending (version {v}); run `dbctl apply` to set it as the \
                     password of {}, then rotate again if you need another value",
                    users.join(", ")
                ));
            }
            if meta.pending {
                return err(format!(
                    "{addr}: a rotation is in progress in AWS Secrets Manager (AWSPENDING) that dbctl did not \
                     start; let it finish first"
                ));
            }
            return match block_on(stores.put_pending(s.store, &s.name, addr, doc)) {
                Ok(version) => {
                    println!("{addr}: new version {version} in its store, pending.");
                    println!(
                        "Services keep reading the current version until `dbctl apply` sets the new one as the \
                         password of {} on its server; then it becomes current.",
                        users.join(", ")
                    );
                    EXIT_OK
                }
                Err(e) => err(e.for_secret(&a)),
            };
        }
        return match block_on(stores.put(s.store, &s.name, addr, doc)) {
            Ok(version) => {
                println!("{addr}: new version {version} in its store.");
                if !users.is_empty() {
                    println!("The next `dbctl apply` sets it as the password of {}.", users.join(", "));
                }
                EXIT_OK
            }
            Err(e) => err(e),
        };
    }
    if read_only && !s.external && s.value.is_some() {
        return err(format!(
            "{addr} is a server's admin password with a given value: dbctl uses it as given and never stores it"
        ));
    }
    let current = match block_on(stores.read(s.store, &s.name, s.external)) {
        Ok(Some(c)) => c,
        Ok(None) if read_only => return err(format!("{addr} is not in its store; dbctl only reads it")),
        Ok(None) => return err(format!("{addr} has no value yet: `dbctl apply` creates it")),
        Err(e) => return err(e.for_secret(&a)),
    };
    let store = match s.store {
        Store::Local => "local (.dbctl/secrets.json)".to_string(),
        Store::Aws => "aws (Secrets Manager)".to_string(),
    };
    println!("{addr}");
    println!("  store:   {store}");
    println!("  name:    {}", s.name);
    println!("  version: {}", current.version);
    println!("  created: {} ({})", current.created, age(&current.created));
    // A secret dbctl only reads has no rotation of dbctl's: whoever owns it rotates it.
    let pending = if read_only || s.external { Ok(None) } else { block_on(stores.pending(s.store, &s.name)) };
    match pending {
        Ok(Some(p)) => println!(
            "  pending: version {} created {} ({}): a rotation `dbctl apply` sets on the server, then makes current",
            p.version,
            p.created,
            age(&p.created)
        ),
        Ok(None) => {}
        Err(e) => return err(e.for_secret(&a)),
    }
    println!(
        "  rotate:  {}",
        s.rotate_every.as_deref().map(|r| format!("every {r}")).unwrap_or_else(|| "not on a schedule".into())
    );
    if !users.is_empty() {
        println!("  users:   {} (stored in the RDS credentials shape)", users.join(", "));
    }
    if reveal {
        // The value alone on the last line, so `| tail -1` gives it.
        println!("{}", crate::secrets::password_of(&current.value).expose());
    }
    EXIT_OK
}
