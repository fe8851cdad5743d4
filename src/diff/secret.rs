//! Secrets in the plan: what dbctl may write into a store, and what it must
//! not regenerate on its own.

use serde_json::json;

use super::Inputs;
use crate::model::{Address, Body, Kind, Secret, Store};
use crate::plan::Drift;

fn store_place(s: &Secret) -> String {
    match s.store {
        Store::Local => "the local secret store (.dbctl/secrets.json)".into(),
        Store::Aws => format!("AWS Secrets Manager (\"{}\")", s.name),
    }
}

/// A secret the state records as created, whose value is gone from its store
/// while users' passwords were set from it. Generating a new value would lock
/// out every client holding the current password, so the plan refuses unless
/// the secret is named with `--replace`. Returns the drift entry and, when not
/// replaced, the error. A given `value` is written again as it was: no error.
pub fn lost(inp: &Inputs, addr: &Address, s: &Secret) -> Option<(Drift, Option<String>)> {
    let recorded = inp.state.resources.get(&addr.to_string())?;
    // Another name or store in the configuration is another secret, not a lost one.
    let recorded_store = recorded.attributes.get("store").and_then(|v| v.as_str());
    if recorded.name != s.name || recorded_store.is_some_and(|st| json!(s.store) != json!(st)) {
        return None;
    }
    let drift =
        Drift { address: addr.to_string(), attribute: "(exists)".into(), recorded: json!(true), live: json!(false) };
    if s.value.is_some() || inp.replace.contains(addr) {
        return Some((drift, None));
    }
    let users: Vec<String> = inp
        .config
        .of_kind(Kind::User)
        .filter(|u| matches!(&u.body, Body::User(x) if x.password.as_ref() == Some(addr)))
        .filter(|u| inp.state.resources.get(&u.addr.to_string()).is_some_and(|r| r.password_version.is_some()))
        .map(|u| u.addr.to_string())
        .collect();
    if users.is_empty() {
        return Some((drift, None));
    }
    let error = format!(
        "{addr}: its value is gone from {}, but it is the current password of {}. A new value would lock out \
         every client that holds the current password. Restore the store from a backup, or generate a new \
         password on purpose with `dbctl plan --replace {addr}` and `dbctl apply --replace {addr}`",
        store_place(s),
        users.join(", ")
    );
    Some((drift, Some(error)))
}

/// The user whose password the secret is (at most one: the configuration checks it).
pub fn user_of(cfg: &crate::model::Config, secret: &Address) -> Option<Address> {
    cfg.of_kind(Kind::User)
        .find(|u| matches!(&u.body, Body::User(x) if x.password.as_ref() == Some(secret)))
        .map(|u| u.addr.clone())
}

/// The `--replace` addresses, checked against the configuration: only secrets.
pub fn replace_set(
    cfg: &crate::model::Config,
    given: &[String],
) -> Result<std::collections::BTreeSet<Address>, String> {
    let mut out = std::collections::BTreeSet::new();
    for g in given {
        let a = Address::parse(g).map_err(|e| format!("--replace {g}: {e}"))?;
        if a.kind != Kind::Secret {
            return Err(format!("--replace {g}: only a secret can be replaced (secret.NAME); it gets a new value"));
        }
        if cfg.get(&a).is_none() {
            return Err(format!("--replace {g}: there is no {g} in the configuration"));
        }
        out.insert(a);
    }
    Ok(out)
}
