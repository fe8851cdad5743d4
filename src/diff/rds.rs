//! Planning RDS clusters: the configuration against what AWS describes and
//! what the state records. Safe destroys are decided here, before anything
//! runs: a cluster with deletion protection is an error in the plan, and a
//! final snapshot is named in it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::{Address, Body, Config, Kind, RdsCluster};
use crate::plan::{Action, AttrChange, Op, ResourceChange, Step};
use crate::rds::{
    backup_settings, identifier, is_major_upgrade, master_username, ClusterMods, ClusterSpec, LiveCluster,
};
use crate::state::State;

fn after_of(id: &str, c: &RdsCluster, retention: i32, window: &Option<String>, live: Option<&LiveCluster>) -> Value {
    json!({
        "identifier": id,
        "engine": c.engine,
        "engine_version": c.engine_version,
        "instance_class": c.instance_class,
        "instances": c.instances,
        "master_username": master_username(c),
        "master_password": c.master_password.as_ref().map(|a| a.to_string()),
        "manage_master_user_password": c.manage_master_user_password,
        "deletion_protection": c.deletion_protection,
        "backup_retention_period": retention,
        "preferred_backup_window": window,
        "final_snapshot": c.final_snapshot,
        "apply_immediately": c.apply_immediately,
        "endpoint": live.and_then(|l| l.endpoint.clone()),
        "port": live.and_then(|l| l.port),
        "master_secret": live.and_then(|l| l.master_secret.clone()),
    })
}

fn before_of(l: &LiveCluster, c: Option<&RdsCluster>) -> Value {
    let class =
        l.instances.first().map(|i| i.pending_instance_class.clone().unwrap_or_else(|| i.instance_class.clone()));
    json!({
        "identifier": l.identifier,
        "engine": l.engine,
        "engine_version": l.pending_engine_version.clone().unwrap_or_else(|| l.engine_version.clone()),
        "instance_class": class,
        "instances": l.instances.len(),
        "master_username": l.master_username,
        "master_password": c.and_then(|c| c.master_password.as_ref()).map(|a| a.to_string()),
        "manage_master_user_password": l.master_secret.is_some(),
        "deletion_protection": l.deletion_protection,
        "backup_retention_period": l.backup_retention_period,
        "preferred_backup_window": l.preferred_backup_window,
        "final_snapshot": c.map(|c| c.final_snapshot),
        "apply_immediately": c.map(|c| c.apply_immediately),
        "endpoint": l.endpoint,
        "port": l.port,
        "master_secret": l.master_secret,
    })
}

fn step(addr: &str, op: Op) -> Step {
    Step { address: addr.to_string(), server: None, database: None, op }
}

/// `<id>-final-<YYYYMMDDHHMMSS>` (UTC).
pub fn final_snapshot_name(id: &str, now: time::OffsetDateTime) -> String {
    format!(
        "{id}-final-{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The lowest free `<id>-N` instance identifiers.
fn new_instance_ids(id: &str, live: &[crate::rds::LiveInstance], n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut k = 1;
    while out.len() < n {
        let cand = format!("{id}-{k}");
        if !live.iter().any(|i| i.identifier == cand) {
            out.push(cand);
        }
        k += 1;
    }
    out
}

/// The cluster changes of a plan (`destroy`: every recorded cluster goes),
/// or why it cannot be made.
pub fn plan(
    cfg: &Config,
    state: &State,
    live: &BTreeMap<String, LiveCluster>,
    destroy: bool,
    now: time::OffsetDateTime,
) -> Result<Vec<ResourceChange>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in cfg.of_kind(Kind::RdsCluster) {
        if destroy {
            break;
        }
        let Body::RdsCluster(c) = &r.body else { continue };
        let addr = r.addr.to_string();
        let id = identifier(state, &r.addr);
        let policy = c.backup_policy.as_ref().and_then(|p| match cfg.get(p).map(|x| &x.body) {
            Some(Body::BackupPolicy(b)) => Some(b),
            _ => None,
        });
        let (retention, window) = match backup_settings(policy) {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let recorded = state.resources.contains_key(&addr);
        let class = c.instance_class.clone().unwrap_or_default();
        let mut ch = crate::diff::change(&addr, "rds_cluster", &id, Action::NoOp);
        let l = live.get(&id);
        ch.after = Some(after_of(&id, c, retention, &window, l));
        let Some(l) = l else {
            ch.action = Action::Create;
            if recorded {
                ch.notes.push(format!("recorded in the state but cluster {id} is not in AWS: it is created again"));
            }
            ch.after_unknown =
                json!({ "endpoint": true, "port": true, "master_secret": c.manage_master_user_password });
            ch.steps.push(step(
                &addr,
                Op::RdsCreateCluster {
                    spec: ClusterSpec {
                        identifier: id.clone(),
                        engine: c.engine.clone(),
                        engine_version: c.engine_version.clone(),
                        master_username: master_username(c),
                        master_password: c.master_password.clone(),
                        manage_master_user_password: c.manage_master_user_password,
                        deletion_protection: c.deletion_protection,
                        backup_retention_period: retention,
                        preferred_backup_window: window.clone(),
                    },
                },
            ));
            for i in new_instance_ids(&id, &[], c.instances as usize) {
                ch.steps.push(step(
                    &addr,
                    Op::RdsCreateInstance {
                        identifier: i,
                        cluster: id.clone(),
                        engine: c.engine.clone(),
                        instance_class: class.clone(),
                    },
                ));
            }
            out.push(ch);
            continue;
        };
        if !l.tagged && !recorded {
            errors.push(format!(
                "{addr}: cluster {id} already exists in AWS but dbctl does not manage it: adopt it with \
                 `dbctl import {addr} {id}`, or give the resource another name"
            ));
            continue;
        }
        if l.engine != c.engine {
            errors.push(format!(
                "{addr}: cluster {id} runs {} and the configuration says {}: RDS cannot change a cluster's engine; \
                 create a new cluster and move the data",
                l.engine, c.engine
            ));
            continue;
        }
        let before = before_of(l, Some(c));
        ch.before = Some(before.clone());
        let after = ch.after.clone().unwrap_or_default();
        for name in [
            "engine_version",
            "instance_class",
            "instances",
            "deletion_protection",
            "backup_retention_period",
            "preferred_backup_window",
        ] {
            let (b, a) = (&before[name], &after[name]);
            if !a.is_null() && a != b {
                ch.attributes.push(AttrChange {
                    name: name.into(),
                    before: b.clone(),
                    after: a.clone(),
                    forces_replacement: false,
                    sensitive: false,
                });
            }
        }
        if l.master_username != master_username(c) {
            ch.notes.push(format!(
                "master_username: the cluster's is \"{}\"; RDS cannot rename it, so it stays",
                l.master_username
            ));
        }
        let mut mods =
            ClusterMods { identifier: id.clone(), apply_immediately: c.apply_immediately, ..Default::default() };
        let mut touched = false;
        let live_version = l.pending_engine_version.clone().unwrap_or_else(|| l.engine_version.clone());
        if let Some(v) = c.engine_version.as_ref().filter(|v| **v != live_version) {
            let major = is_major_upgrade(&c.engine, &live_version, v);
            ch.notes.push(format!(
                "engine version upgrade {live_version} -> {v}{}: {}",
                if major {
                    " (a MAJOR version: AllowMajorVersionUpgrade is set; check extensions and parameter groups first)"
                } else {
                    ""
                },
                if c.apply_immediately {
                    "applied now; the cluster's instances restart"
                } else {
                    "waits for the maintenance window (apply_immediately = false); the instances restart then"
                }
            ));
            mods.engine_version = Some(v.clone());
            mods.allow_major_version_upgrade = major;
            touched = true;
        }
        if l.deletion_protection != c.deletion_protection {
            mods.deletion_protection = Some(c.deletion_protection);
            touched = true;
        }
        if l.backup_retention_period != retention {
            mods.backup_retention_period = Some(retention);
            touched = true;
        }
        if window.is_some() && l.preferred_backup_window != window {
            mods.preferred_backup_window = window.clone();
            touched = true;
        }
        if mods.deletion_protection.is_some()
            || mods.backup_retention_period.is_some()
            || mods.preferred_backup_window.is_some()
        {
            ch.notes.push("deletion protection and backups: take effect now, no restart".into());
        }
        if touched {
            ch.steps.push(step(&addr, Op::RdsModifyCluster { mods }));
        }
        let have = l.instances.len();
        let want = c.instances as usize;
        if want > have {
            for i in new_instance_ids(&id, &l.instances, want - have) {
                ch.steps.push(step(
                    &addr,
                    Op::RdsCreateInstance {
                        identifier: i,
                        cluster: id.clone(),
                        engine: c.engine.clone(),
                        instance_class: class.clone(),
                    },
                ));
            }
        }
        let kept: Vec<&crate::rds::LiveInstance> = l.instances.iter().take(want).collect();
        if !class.is_empty() {
            for i in &kept {
                let current = i.pending_instance_class.as_deref().unwrap_or(&i.instance_class);
                if current != class {
                    ch.steps.push(step(
                        &addr,
                        Op::RdsModifyInstance {
                            identifier: i.identifier.clone(),
                            cluster: id.clone(),
                            instance_class: class.clone(),
                            apply_immediately: c.apply_immediately,
                        },
                    ));
                }
            }
            if kept.iter().any(|i| i.pending_instance_class.as_deref().unwrap_or(&i.instance_class) != class) {
                ch.notes.push(format!(
                    "instance_class: each instance restarts (a reboot){}",
                    if c.apply_immediately {
                        ", now"
                    } else {
                        " in the maintenance window (apply_immediately = false)"
                    }
                ));
            }
        }
        for i in l.instances.iter().skip(want).rev() {
            ch.steps.push(step(&addr, Op::RdsDeleteInstance { identifier: i.identifier.clone(), cluster: id.clone() }));
        }
        if !ch.steps.is_empty() || !recorded {
            ch.action = Action::Update;
        }
        if !recorded && ch.steps.is_empty() {
            ch.notes.push("exists and is tagged managed-by = dbctl: the state records it".into());
        }
        out.push(ch);
    }
    // Recorded clusters that leave the configuration (or every one, destroying).
    for (addr, st) in &state.resources {
        if st.kind != "rds_cluster" {
            continue;
        }
        let a = Address::parse(addr).ok();
        let cfg_c = a.as_ref().and_then(|a| cfg.get(a)).and_then(|r| match &r.body {
            Body::RdsCluster(c) => Some(c),
            _ => None,
        });
        if cfg_c.is_some() && !destroy {
            continue;
        }
        let id = st.name.clone();
        let mut ch = crate::diff::change(addr, "rds_cluster", &id, Action::Delete);
        let Some(l) = live.get(&id) else {
            ch.notes.push(format!("cluster {id} is no longer in AWS: the state forgets it"));
            ch.before = Some(st.attributes.clone());
            out.push(ch);
            continue;
        };
        let protected = l.deletion_protection || cfg_c.is_some_and(|c| c.deletion_protection);
        if protected {
            errors.push(format!(
                "{addr}: cluster {id} has deletion protection, so it cannot be destroyed. To destroy it, set \
                 deletion_protection = false, run `dbctl apply`, then destroy it"
            ));
            continue;
        }
        if a.as_ref().and_then(|a| cfg.get(a)).is_some_and(|r| r.lifecycle.prevent_destroy) {
            errors.push(format!(
                "{addr}: lifecycle.prevent_destroy is set, so cluster {id} cannot be destroyed; remove it first"
            ));
            continue;
        }
        let final_snapshot =
            cfg_c.map(|c| c.final_snapshot).or_else(|| st.attributes["final_snapshot"].as_bool()).unwrap_or(true);
        ch.before = Some(before_of(l, cfg_c));
        for i in l.instances.iter().rev() {
            ch.steps.push(step(addr, Op::RdsDeleteInstance { identifier: i.identifier.clone(), cluster: id.clone() }));
        }
        let snap = final_snapshot.then(|| final_snapshot_name(&id, now));
        match &snap {
            Some(s) => ch.notes.push(format!("final snapshot: {s}")),
            None => {
                ch.notes.push("final_snapshot = false: NO final snapshot; the cluster's data is gone for good".into())
            }
        }
        ch.steps.push(step(addr, Op::RdsDeleteCluster { identifier: id.clone(), final_snapshot: snap }));
        out.push(ch);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rds::LiveInstance;
    use crate::state::StateResource;

    const HCL: &str = r#"
provider "aws" {
  region = "us-east-1"
}
secret "m" {
  generate {
    length = 20
  }
}
rds_cluster "prod" {
  engine              = "aurora-postgresql"
  engine_version      = "15.4"
  instance_class      = "db.r6g.large"
  instances           = 2
  master_password     = secret.m
  deletion_protection = false
}
"#;

    fn load(hcl: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.hcl"), hcl).unwrap();
        let loaded = crate::config::load(&crate::config::LoadOptions { dir: dir.path().into(), ..Default::default() });
        loaded.config.expect("valid configuration")
    }

    fn live(version: &str, pending: Option<&str>, protected: bool, tagged: bool) -> LiveCluster {
        let inst = |i: u32| LiveInstance {
            identifier: format!("prod-{i}"),
            instance_class: "db.r6g.large".into(),
            pending_instance_class: None,
            status: "available".into(),
        };
        LiveCluster {
            identifier: "prod".into(),
            status: "available".into(),
            engine: "aurora-postgresql".into(),
            engine_version: version.into(),
            pending_engine_version: pending.map(str::to_string),
            endpoint: Some("prod.cluster-x.us-east-1.rds.amazonaws.com".into()),
            port: Some(5432),
            master_username: "dbctl".into(),
            deletion_protection: protected,
            backup_retention_period: 1,
            tagged,
            instances: vec![inst(1), inst(2)],
            ..Default::default()
        }
    }

    fn recorded() -> State {
        let mut st = State::new();
        st.resources.insert(
            "rds_cluster.prod".into(),
            StateResource {
                kind: "rds_cluster".into(),
                server: None,
                name: "prod".into(),
                attributes: json!({ "final_snapshot": true }),
                password_version: None,
                pending: false,
            },
        );
        st
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-12-02 01:02:03 UTC)
    }

    #[test]
    fn a_version_pending_for_the_maintenance_window_is_not_planned_again() {
        let cfg = load(&HCL.replace("\"15.4\"", "\"16.1\""));
        let state = recorded();
        let changes =
            plan(&cfg, &state, &[("prod".into(), live("15.4", None, false, true))].into(), false, now()).unwrap();
        assert!(changes[0].notes.iter().any(|n| n.contains("MAJOR")), "{:?}", changes[0].notes);
        assert_eq!(changes[0].action, Action::Update);
        let pending = [("prod".into(), live("15.4", Some("16.1"), false, true))].into();
        let changes = plan(&cfg, &state, &pending, false, now()).unwrap();
        assert_eq!(changes[0].action, Action::NoOp, "{:?}", changes[0].steps);
    }

    #[test]
    fn an_untagged_cluster_is_not_taken_over() {
        let cfg = load(HCL);
        let live = [("prod".into(), live("15.4", None, false, false))].into();
        let errors = plan(&cfg, &State::new(), &live, false, now()).unwrap_err();
        assert!(errors[0].contains("dbctl import rds_cluster.prod prod"), "{errors:?}");
        // Recorded (imported): managed, nothing to do.
        assert_eq!(plan(&cfg, &recorded(), &live, false, now()).unwrap()[0].action, Action::NoOp);
    }

    #[test]
    fn destroys_check_protection_and_name_the_snapshot() {
        let cfg = load(HCL);
        let protected = [("prod".into(), live("15.4", None, true, true))].into();
        let errors = plan(&cfg, &recorded(), &protected, true, now()).unwrap_err();
        assert!(errors[0].contains("deletion protection"), "{errors:?}");
        let open = [("prod".into(), live("15.4", None, false, true))].into();
        let changes = plan(&cfg, &recorded(), &open, true, now()).unwrap();
        let last = changes[0].steps.last().unwrap();
        assert_eq!(
            last.op,
            Op::RdsDeleteCluster {
                identifier: "prod".into(),
                final_snapshot: Some("prod-final-20261202010203".into())
            }
        );
        assert_eq!(changes[0].steps.len(), 3, "two instances, then the cluster");
        // final_snapshot = false: none.
        let cfg =
            load(&HCL.replace("deletion_protection = false", "deletion_protection = false\n  final_snapshot = false"));
        let changes = plan(&cfg, &recorded(), &open, true, now()).unwrap();
        assert_eq!(
            changes[0].steps.last().unwrap().op,
            Op::RdsDeleteCluster { identifier: "prod".into(), final_snapshot: None }
        );
        // Removed from the configuration: the state's final_snapshot decides.
        let cfg = load("provider \"aws\" {\n  region = \"us-east-1\"\n}\n");
        let changes = plan(&cfg, &recorded(), &open, false, now()).unwrap();
        assert!(matches!(&changes[0].steps.last().unwrap().op, Op::RdsDeleteCluster { final_snapshot: Some(_), .. }));
    }
}
