//! RDS and Aurora clusters through aws-sdk-rds: the batched read a plan
//! makes (one DescribeDBClusters and one DescribeDBInstances per region,
//! kept to what carries the tag `managed-by = dbctl` or what the
//! configuration names), the rules dbctl checks itself (AWS checks them too,
//! but stand-ins such as moto do not), and the steps an apply runs, each
//! waiting until its resource is available or gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_rds::error::DisplayErrorContext;
use aws_sdk_rds::types::Tag;
use aws_sdk_rds::Client;
use serde::{Deserialize, Serialize};

use crate::model::{Address, AwsProvider, BackupPolicy, Config, Kind, RdsCluster, Sensitive};
use crate::state::State;

/// One cluster as AWS describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveCluster {
    pub identifier: String,
    pub arn: String,
    pub status: String,
    pub engine: String,
    pub engine_version: String,
    /// A version waiting for the maintenance window.
    pub pending_engine_version: Option<String>,
    pub endpoint: Option<String>,
    pub port: Option<u16>,
    pub master_username: String,
    pub deletion_protection: bool,
    pub backup_retention_period: i32,
    pub preferred_backup_window: Option<String>,
    /// The ARN of the master password RDS keeps in Secrets Manager.
    pub master_secret: Option<String>,
    /// Carries `managed-by = dbctl`.
    pub tagged: bool,
    pub instances: Vec<LiveInstance>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveInstance {
    pub identifier: String,
    pub instance_class: String,
    /// A class waiting for the maintenance window.
    pub pending_instance_class: Option<String>,
    pub status: String,
}

/// What a new cluster is created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub identifier: String,
    pub engine: String,
    pub engine_version: Option<String>,
    pub master_username: String,
    /// The secret whose value is the master password (read while the step runs).
    pub master_password: Option<crate::model::Address>,
    pub manage_master_user_password: bool,
    pub deletion_protection: bool,
    pub backup_retention_period: i32,
    pub preferred_backup_window: Option<String>,
}

/// What a modification changes; `None` leaves the attribute as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMods {
    pub identifier: String,
    pub engine_version: Option<String>,
    pub allow_major_version_upgrade: bool,
    pub deletion_protection: Option<bool>,
    pub backup_retention_period: Option<i32>,
    pub preferred_backup_window: Option<String>,
    pub apply_immediately: bool,
}

/// The backup retention (days) and window an rds_cluster takes from its
/// backup_policy: `keep.daily` days (7 when not set) and a 30-minute window
/// starting at the schedule's time of day. Without a policy: RDS's default
/// of one day, and the window left to RDS.
pub fn backup_settings(policy: Option<&BackupPolicy>) -> Result<(i32, Option<String>), String> {
    let Some(p) = policy else { return Ok((1, None)) };
    let days = p.keep.daily.map(i64::from).unwrap_or(7);
    if !(1..=35).contains(&days) {
        return Err(format!("keep.daily = {days}: RDS keeps automated backups for 1 to 35 days"));
    }
    Ok((days as i32, Some(window_of(&p.schedule)?)))
}

/// `M H * * *` → `HH:MM-HH:MM` (30 minutes, UTC).
pub fn window_of(schedule: &str) -> Result<String, String> {
    let f: Vec<&str> = schedule.split_whitespace().collect();
    let daily = f.len() == 5 && f[2..].iter().all(|x| *x == "*");
    let (m, h) =
        match (daily, f.first().and_then(|m| m.parse::<u32>().ok()), f.get(1).and_then(|h| h.parse::<u32>().ok())) {
            (true, Some(m), Some(h)) if m < 60 && h < 24 => (m, h),
            _ => {
                return Err(format!(
                    "schedule \"{schedule}\": an RDS cluster's backup window is daily, so the schedule must be \
                 \"MINUTE HOUR * * *\" (for example \"0 3 * * *\")"
                ))
            }
        };
    let end = (h * 60 + m + 30) % (24 * 60);
    Ok(format!("{h:02}:{m:02}-{:02}:{:02}", end / 60, end % 60))
}

/// RDS's rule for cluster, instance and snapshot identifiers: 1 to `max`
/// letters, digits and hyphens, starting with a letter, no two hyphens in a
/// row, not ending with a hyphen.
pub fn identifier_problem(id: &str, max: usize) -> Option<String> {
    if id.is_empty() || id.len() > max {
        return Some(format!("\"{id}\" has {} characters; RDS allows 1 to {max}", id.len()));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some(format!("\"{id}\" must start with a letter"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Some(format!("\"{id}\" may hold only letters, digits and hyphens"));
    }
    if id.contains("--") || id.ends_with('-') {
        return Some(format!("\"{id}\" may not end with a hyphen or hold two in a row"));
    }
    None
}

/// The engine version's shape: `15.4`, `8.0.mysql_aurora.3.05.2`.
pub fn engine_version_problem(engine: &str, v: &str) -> Option<String> {
    let ok_chars = v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
    if v.is_empty() || !v.starts_with(|c: char| c.is_ascii_digit()) || !ok_chars {
        return Some(format!("\"{v}\" is not an engine version (for example \"15.4\" or \"8.0.mysql_aurora.3.05.2\")"));
    }
    if engine == "aurora-mysql" && !v.contains("mysql_aurora") {
        return Some(format!("aurora-mysql versions look like \"8.0.mysql_aurora.3.05.2\", not \"{v}\""));
    }
    if engine == "aurora-postgresql" && !v.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        return Some(format!("aurora-postgresql versions look like \"15.4\", not \"{v}\""));
    }
    None
}

/// `db.<family>.<size>` or Aurora Serverless v2's `db.serverless`.
pub fn instance_class_problem(c: &str) -> Option<String> {
    if c == "db.serverless" {
        return None;
    }
    let parts: Vec<&str> = c.split('.').collect();
    let ok = parts.len() == 3
        && parts[0] == "db"
        && parts[1..].iter().all(|p| !p.is_empty() && p.chars().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit()));
    (!ok).then(|| format!("\"{c}\" is not an instance class (db.FAMILY.SIZE, e.g. db.r6g.large, or db.serverless)"))
}

/// RDS's master user name rules.
pub fn master_username_problem(engine: &str, u: &str) -> Option<String> {
    let max = if engine.contains("mysql") { 16 } else { 63 };
    if u.is_empty() || u.len() > max {
        return Some(format!("\"{u}\" has {} characters; {engine} allows 1 to {max}", u.len()));
    }
    if !u.starts_with(|c: char| c.is_ascii_alphabetic()) || !u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(format!("\"{u}\" must start with a letter and hold only letters, digits and underscores"));
    }
    let reserved: &[&str] = if engine.contains("postgres") {
        &["rdsadmin", "postgres", "rds_superuser"]
    } else {
        &["rdsadmin", "admin_root", "root"]
    };
    if reserved.contains(&u.to_ascii_lowercase().as_str()) {
        return Some(format!("\"{u}\" is reserved by RDS for {engine}"));
    }
    None
}

/// Whether going from `from` to `to` changes the major version.
pub fn is_major_upgrade(engine: &str, from: &str, to: &str) -> bool {
    let major = |v: &str| -> String {
        let p: Vec<&str> = v.split('.').collect();
        if engine.contains("mysql") {
            // 8.0.mysql_aurora.3.05.2: MySQL 8.0, Aurora 3.
            p.iter().take(2).copied().collect::<Vec<_>>().join(".")
        } else {
            p.first().copied().unwrap_or_default().to_string()
        }
    };
    major(from) != major(to)
}

pub struct Rds {
    client: Client,
    place: String,
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// What AWS said (its error code and message), or, when no answer came,
/// why (the SDK's chain of causes); never the raw response.
fn error<E: std::error::Error + aws_sdk_rds::error::ProvideErrorMetadata + 'static>(
    what: &str,
    place: &str,
    e: E,
) -> String {
    if crate::secrets::aws::missing_credentials(&e) {
        return format!(
            "{what} ({place}): no AWS credentials were found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_PROFILE (or `profile` in provider \"aws\"), or run where a role provides them"
        );
    }
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{what} ({place}): {code}: {msg}"),
        (Some(code), None) => format!("{what} ({place}): {code}"),
        _ => format!("{what} ({place}): {}", DisplayErrorContext(e)),
    }
}

/// How long an apply waits for one resource (`DBCTL_RDS_TIMEOUT`, seconds; default an hour).
pub fn timeout() -> Duration {
    std::env::var("DBCTL_RDS_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600))
}

impl Rds {
    pub async fn new(p: &AwsProvider) -> Rds {
        let (conf, place) = crate::aws::sdk_config(p, "RDS", Duration::from_secs(60)).await;
        Rds { client: Client::new(&conf), place }
    }

    /// Every cluster tagged `managed-by = dbctl` or named in `wanted`, with
    /// its instances: one DescribeDBClusters and one DescribeDBInstances.
    pub async fn read(&self, wanted: &[String]) -> Result<BTreeMap<String, LiveCluster>, String> {
        let mut out = BTreeMap::new();
        let mut pages = self.client.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("cannot list the RDS clusters", &self.place, e))?;
            for c in page.db_clusters() {
                let id = c.db_cluster_identifier().unwrap_or_default().to_string();
                let tagged = c.tag_list().iter().any(|t| t.key() == Some("managed-by") && t.value() == Some("dbctl"));
                if !tagged && !wanted.contains(&id) {
                    continue;
                }
                out.insert(
                    id.clone(),
                    LiveCluster {
                        identifier: id,
                        arn: c.db_cluster_arn().unwrap_or_default().into(),
                        status: c.status().unwrap_or_default().into(),
                        engine: c.engine().unwrap_or_default().into(),
                        engine_version: c.engine_version().unwrap_or_default().into(),
                        pending_engine_version: c
                            .pending_modified_values()
                            .and_then(|p| p.engine_version())
                            .map(str::to_string),
                        endpoint: c.endpoint().map(str::to_string),
                        port: c.port().and_then(|p| u16::try_from(p).ok()),
                        master_username: c.master_username().unwrap_or_default().into(),
                        deletion_protection: c.deletion_protection().unwrap_or(false),
                        backup_retention_period: c.backup_retention_period().unwrap_or(1),
                        preferred_backup_window: c.preferred_backup_window().map(str::to_string),
                        master_secret: c.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_string),
                        tagged,
                        instances: Vec::new(),
                    },
                );
            }
        }
        if out.is_empty() {
            return Ok(out);
        }
        let mut pages = self.client.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("cannot list the RDS instances", &self.place, e))?;
            for i in page.db_instances() {
                let Some(c) = i.db_cluster_identifier().and_then(|c| out.get_mut(c)) else { continue };
                c.instances.push(LiveInstance {
                    identifier: i.db_instance_identifier().unwrap_or_default().into(),
                    instance_class: i.db_instance_class().unwrap_or_default().into(),
                    pending_instance_class: i
                        .pending_modified_values()
                        .and_then(|p| p.db_instance_class())
                        .map(str::to_string),
                    status: i.db_instance_status().unwrap_or_default().into(),
                });
            }
        }
        for c in out.values_mut() {
            c.instances.sort_by(|a, b| natural(&a.identifier).cmp(&natural(&b.identifier)));
        }
        Ok(out)
    }

    /// One cluster, or `None` when it does not exist.
    pub async fn cluster(&self, id: &str) -> Result<Option<LiveCluster>, String> {
        let all = self.read(&[id.to_string()]).await?;
        Ok(all.get(id).cloned())
    }

    pub async fn create_cluster(
        &self,
        s: &ClusterSpec,
        address: &str,
        password: Option<Sensitive>,
    ) -> Result<(), String> {
        let mut req = self
            .client
            .create_db_cluster()
            .db_cluster_identifier(&s.identifier)
            .engine(&s.engine)
            .set_engine_version(s.engine_version.clone())
            .master_username(&s.master_username)
            .deletion_protection(s.deletion_protection)
            .backup_retention_period(s.backup_retention_period)
            .set_preferred_backup_window(s.preferred_backup_window.clone())
            .tags(tag("managed-by", "dbctl"))
            .tags(tag("dbctl:address", address));
        if s.manage_master_user_password {
            req = req.manage_master_user_password(true);
        }
        if let Some(p) = &password {
            req = req.master_user_password(p.expose());
        }
        // The request holds the password: the error says only what AWS said.
        req.send().await.map_err(|e| error(&format!("cannot create cluster {}", s.identifier), &self.place, e))?;
        Ok(())
    }

    pub async fn modify_cluster(&self, m: &ClusterMods) -> Result<(), String> {
        self.client
            .modify_db_cluster()
            .db_cluster_identifier(&m.identifier)
            .set_engine_version(m.engine_version.clone())
            .set_allow_major_version_upgrade(m.allow_major_version_upgrade.then_some(true))
            .set_deletion_protection(m.deletion_protection)
            .set_backup_retention_period(m.backup_retention_period)
            .set_preferred_backup_window(m.preferred_backup_window.clone())
            .apply_immediately(m.apply_immediately)
            .send()
            .await
            .map_err(|e| error(&format!("cannot modify cluster {}", m.identifier), &self.place, e))?;
        Ok(())
    }

    pub async fn set_master_password(&self, id: &str, password: &Sensitive) -> Result<(), String> {
        self.client
            .modify_db_cluster()
            .db_cluster_identifier(id)
            .master_user_password(password.expose())
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| error(&format!("cannot set the master password of cluster {id}"), &self.place, e))?;
        Ok(())
    }

    pub async fn create_instance(
        &self,
        id: &str,
        cluster: &str,
        engine: &str,
        class: &str,
        address: &str,
    ) -> Result<(), String> {
        self.client
            .create_db_instance()
            .db_instance_identifier(id)
            .db_cluster_identifier(cluster)
            .engine(engine)
            .db_instance_class(class)
            .tags(tag("managed-by", "dbctl"))
            .tags(tag("dbctl:address", address))
            .send()
            .await
            .map_err(|e| error(&format!("cannot create instance {id}"), &self.place, e))?;
        Ok(())
    }

    pub async fn modify_instance(&self, id: &str, class: &str, apply_immediately: bool) -> Result<(), String> {
        self.client
            .modify_db_instance()
            .db_instance_identifier(id)
            .db_instance_class(class)
            .apply_immediately(apply_immediately)
            .send()
            .await
            .map_err(|e| error(&format!("cannot modify instance {id}"), &self.place, e))?;
        Ok(())
    }

    pub async fn delete_instance(&self, id: &str) -> Result<(), String> {
        match self.client.delete_db_instance().db_instance_identifier(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => Ok(()),
            Err(e) => Err(error(&format!("cannot delete instance {id}"), &self.place, e)),
        }
    }

    pub async fn delete_cluster(&self, id: &str, final_snapshot: Option<&str>) -> Result<(), String> {
        let req = self.client.delete_db_cluster().db_cluster_identifier(id);
        let req = match final_snapshot {
            Some(s) => req.skip_final_snapshot(false).final_db_snapshot_identifier(s),
            None => req.skip_final_snapshot(true),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => Ok(()),
            Err(e) => Err(error(&format!("cannot delete cluster {id}"), &self.place, e)),
        }
    }

    /// Tag an existing cluster and its instances as dbctl's (`dbctl import`).
    pub async fn adopt(&self, c: &LiveCluster, address: &str) -> Result<(), String> {
        self.client
            .add_tags_to_resource()
            .resource_name(&c.arn)
            .tags(tag("managed-by", "dbctl"))
            .tags(tag("dbctl:address", address))
            .send()
            .await
            .map_err(|e| error(&format!("cannot tag cluster {}", c.identifier), &self.place, e))?;
        Ok(())
    }

    /// Wait until the cluster and its instances are available (or, with
    /// `gone`, until the cluster no longer exists), saying every minute
    /// what it waits on; give up after `timeout()`.
    pub async fn wait(&self, address: &str, id: &str, gone: bool) -> Result<Option<LiveCluster>, String> {
        let since = Instant::now();
        let limit = timeout();
        let mut said = Instant::now();
        loop {
            let c = self.cluster(id).await?;
            let waiting_on = match &c {
                None if gone => return Ok(None),
                None => Some("the cluster to appear".to_string()),
                Some(c) if gone => Some(format!("the cluster (status {}) to be deleted", c.status)),
                Some(c) if c.status != "available" => Some(format!("the cluster (status {})", c.status)),
                Some(c) => c
                    .instances
                    .iter()
                    .find(|i| i.status != "available")
                    .map(|i| format!("instance {} (status {})", i.identifier, i.status)),
            };
            let Some(what) = waiting_on else { return Ok(c) };
            if since.elapsed() > limit {
                return Err(format!(
                    "{address}: gave up after {} s waiting for {what}; it carries on in AWS: run `dbctl plan` \
                     later (DBCTL_RDS_TIMEOUT sets the wait, in seconds)",
                    limit.as_secs()
                ));
            }
            if said.elapsed() >= Duration::from_secs(60) {
                eprintln!("      {address}: still waiting for {what} ({} s)", since.elapsed().as_secs());
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(if std::env::var_os("DBCTL_RDS_FAST_POLL").is_some() {
                1
            } else {
                10
            }))
            .await;
        }
    }
}

/// `prod-10` after `prod-9`.
fn natural(id: &str) -> (String, u64) {
    match id.rsplit_once('-') {
        Some((p, n)) if n.parse::<u64>().is_ok() => (p.to_string(), n.parse().unwrap_or(0)),
        _ => (id.to_string(), 0),
    }
}

/// The identifier of a configured cluster: the one `dbctl import` recorded,
/// else its label.
pub fn identifier(state: &State, addr: &Address) -> String {
    state
        .resources
        .get(&addr.to_string())
        .filter(|r| r.kind == "rds_cluster")
        .map(|r| r.name.clone())
        .unwrap_or_else(|| addr.name.clone())
}

/// The identifiers of the clusters a plan reads: configured and recorded.
pub fn wanted(cfg: &Config, state: &State) -> Vec<String> {
    let mut out: Vec<String> = cfg.of_kind(Kind::RdsCluster).map(|r| identifier(state, &r.addr)).collect();
    out.extend(state.resources.values().filter(|r| r.kind == "rds_cluster").map(|r| r.name.clone()));
    out.sort();
    out.dedup();
    out
}

pub fn master_username(c: &RdsCluster) -> String {
    c.master_username.clone().unwrap_or_else(|| "dbctl".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_moto_does_not_check() {
        assert!(identifier_problem("prod", 63).is_none());
        assert!(identifier_problem("prod-1", 63).is_none());
        assert!(identifier_problem("1prod", 63).is_some());
        assert!(identifier_problem("prod_db", 63).is_some());
        assert!(identifier_problem("prod--db", 63).is_some());
        assert!(identifier_problem("prod-", 63).is_some());
        assert!(identifier_problem(&"a".repeat(64), 63).is_some());
        assert!(engine_version_problem("aurora-postgresql", "15.4").is_none());
        assert!(engine_version_problem("aurora-postgresql", "fifteen").is_some());
        assert!(engine_version_problem("aurora-mysql", "8.0.mysql_aurora.3.05.2").is_none());
        assert!(engine_version_problem("aurora-mysql", "8.0.35").is_some());
        assert!(instance_class_problem("db.r6g.large").is_none());
        assert!(instance_class_problem("db.serverless").is_none());
        assert!(instance_class_problem("r6g.large").is_some());
        assert!(instance_class_problem("db.R6G.large").is_some());
        assert!(master_username_problem("aurora-postgresql", "dbctl").is_none());
        assert!(master_username_problem("aurora-postgresql", "rdsadmin").is_some());
        assert!(master_username_problem("aurora-mysql", "a_very_long_master_name").is_some());
        assert!(master_username_problem("aurora-postgresql", "9lives").is_some());
        assert!(is_major_upgrade("aurora-postgresql", "15.4", "16.1"));
        assert!(!is_major_upgrade("aurora-postgresql", "15.4", "15.6"));
        assert!(!is_major_upgrade("aurora-mysql", "8.0.mysql_aurora.3.05.2", "8.0.mysql_aurora.3.06.0"));
        assert_eq!(window_of("0 3 * * *").unwrap(), "03:00-03:30");
        assert_eq!(window_of("45 23 * * *").unwrap(), "23:45-00:15");
        assert!(window_of("0 3 * * 1").is_err());
        assert!(window_of("*/5 * * * *").is_err());
    }
}
