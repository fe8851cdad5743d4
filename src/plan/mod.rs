//! The plan: one structure that the human, JSON and markdown renderers read,
//! that `--out` saves, and that `apply` executes.

pub mod render;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::dialect::Dialect;
use crate::model::Address;

pub const FORMAT_VERSION: &str = "1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Delete,
    /// Delete, then create.
    Replace,
}

impl Action {
    /// Terraform's `change.actions`.
    pub fn actions(self) -> Vec<&'static str> {
        match self {
            Action::NoOp => vec!["no-op"],
            Action::Create => vec!["create"],
            Action::Update => vec!["update"],
            Action::Delete => vec!["delete"],
            Action::Replace => vec!["delete", "create"],
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Replace => "-/+",
        }
    }
}

/// What a step does. SQL never carries a secret value: passwords are set by
/// `SetPassword`, resolved from the secret store only while executing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Initialise (if needed) and start an embedded server.
    StartEmbedded,
    /// Write a new version of a secret to its store: its given `value`, or a
    /// generated one; in the RDS credentials shape when it is a user's password.
    WriteSecret {
        secret: Address,
        rds: Option<crate::secrets::RdsShape>,
        /// A rotation of a user's password: the version is staged pending,
        /// and the user's password step sets it on the server, then makes it
        /// current, so services never read a password the server refuses.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pending: bool,
    },
    /// Write a router's published document to a file (relative to the configuration).
    Publish {
        path: String,
        content: String,
    },
    /// Write a router's published document to a secret.
    PublishSecret {
        secret: Address,
        content: String,
    },
    /// Remove a published file (its router was destroyed).
    Unpublish {
        path: String,
    },
    /// Remove a secret from its store (AWS: scheduled deletion).
    DeleteSecret {
        store: crate::model::Store,
        name: String,
    },
    /// `ALTER ROLE name PASSWORD <verifier of secret>`; on MySQL/MariaDB
    /// `ALTER USER <account> IDENTIFIED WITH mysql_native_password AS <hash> ACCOUNT UNLOCK`.
    SetPassword {
        role: String,
        secret: Address,
        /// MySQL/MariaDB: the account, `'user'@'host'`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// The statement in the server's dialect, `(sensitive)` where the
        /// credential goes (`engine::dialect`): what the plan shows, and what
        /// apply runs with the credential put there. Empty in a plan saved
        /// before steps stored it (then rendered as before; never serialised
        /// empty, so such a plan keeps its digest).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        sql: String,
    },
    Sql {
        sql: String,
    },
    /// Run one migration's up file in its database and record it in the
    /// tracking table, in one transaction unless the file opts out.
    Migrate(crate::migrate::MigrationStep),
    /// Refuse if the database has open connections (unless forced).
    DropDatabase {
        name: String,
        force: bool,
        /// The statement in the server's dialect (`engine::dialect`): what the
        /// plan shows, and what apply runs. Empty in a plan saved before
        /// steps stored it (then rendered by the server's dialect at apply).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        sql: String,
    },
    /// Create an RDS cluster and wait until it is available.
    RdsCreateCluster {
        spec: crate::rds::ClusterSpec,
    },
    /// Modify an RDS cluster and wait until it is available.
    RdsModifyCluster {
        mods: crate::rds::ClusterMods,
    },
    /// Add an instance to a cluster and wait until it is available.
    RdsCreateInstance {
        identifier: String,
        cluster: String,
        engine: String,
        instance_class: String,
    },
    /// Change an instance's class (it restarts).
    RdsModifyInstance {
        identifier: String,
        cluster: String,
        instance_class: String,
        apply_immediately: bool,
    },
    /// Remove an instance from its cluster and wait until it is gone.
    RdsDeleteInstance {
        identifier: String,
        cluster: String,
    },
    /// Set a cluster's master password from its secret (after the secret
    /// got a new value) and wait until the cluster is available.
    RdsSetMasterPassword {
        identifier: String,
        secret: Address,
    },
    /// Delete a cluster (after its final snapshot, when named) and wait until it is gone.
    RdsDeleteCluster {
        identifier: String,
        final_snapshot: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The resource this step belongs to.
    pub address: String,
    /// The server it runs on (none for secret-store steps).
    pub server: Option<Address>,
    /// The database to connect to (none: the server's admin database).
    pub database: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

impl Step {
    /// What the step does, as shown in a plan: the SQL, or a description.
    pub fn describe(&self) -> String {
        let on = self.database.as_ref().map(|d| format!(" -- in database {d}")).unwrap_or_default();
        match &self.op {
            Op::StartEmbedded => "initialise and start the embedded server".to_string(),
            Op::Publish { path, .. } => format!("write the routing document to {path}"),
            Op::PublishSecret { secret, .. } => format!("write the routing document to {secret}"),
            Op::Unpublish { path } => format!("remove {path}"),
            Op::WriteSecret { secret, rds, pending } => format!(
                "write a new version of {secret} to its store{}{}",
                if rds.is_some() { " (RDS credentials shape)" } else { "" },
                if *pending { ", pending until its user's server accepts it" } else { "" }
            ),
            Op::DeleteSecret { store: crate::model::Store::Aws, name } => {
                format!("schedule deletion of \"{name}\" in AWS Secrets Manager (default recovery window)")
            }
            Op::DeleteSecret { name, .. } => format!("forget \"{name}\" (the local store keeps its value)"),
            Op::SetPassword { sql, .. } if !sql.is_empty() => format!("{sql}{on}"),
            // Saved before steps stored their statement: only MySQL steps named an account.
            Op::SetPassword { account: Some(account), .. } => format!("{}{on}", Dialect::Mysql.set_password(account)),
            Op::SetPassword { role, .. } => {
                format!("{}{on}", Dialect::Postgres.set_password(&Dialect::Postgres.password_account(role, None)))
            }
            Op::Sql { sql } => format!("{sql}{on}"),
            Op::RdsCreateCluster { spec } => format!(
                "create RDS cluster {} ({}{}), master user {}{}, wait until available",
                spec.identifier,
                spec.engine,
                spec.engine_version.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
                spec.master_username,
                match (&spec.master_password, spec.manage_master_user_password) {
                    (Some(s), _) => format!(", password from {s}"),
                    (None, true) => ", password kept by RDS in Secrets Manager".into(),
                    _ => String::new(),
                }
            ),
            Op::RdsModifyCluster { mods } => format!(
                "modify RDS cluster {}{}, wait until available",
                mods.identifier,
                if mods.apply_immediately {
                    " (apply immediately)"
                } else {
                    " (engine version in the maintenance window)"
                }
            ),
            Op::RdsCreateInstance { identifier, cluster, instance_class, .. } => {
                format!("create instance {identifier} ({instance_class}) in cluster {cluster}, wait until available")
            }
            Op::RdsModifyInstance { identifier, instance_class, apply_immediately, .. } => format!(
                "change instance {identifier} to {instance_class} ({})",
                if *apply_immediately { "now: it restarts" } else { "in the maintenance window: it restarts then" }
            ),
            Op::RdsDeleteInstance { identifier, cluster } => {
                format!("delete instance {identifier} of cluster {cluster}, wait until gone")
            }
            Op::RdsSetMasterPassword { identifier, secret } => {
                format!("set the master password of cluster {identifier} to the new value of {secret} (sensitive)")
            }
            Op::RdsDeleteCluster { identifier, final_snapshot: Some(s) } => {
                format!("take final snapshot {s}, delete RDS cluster {identifier}, wait until gone")
            }
            Op::RdsDeleteCluster { identifier, final_snapshot: None } => {
                format!("delete RDS cluster {identifier} WITHOUT a final snapshot, wait until gone")
            }
            Op::Migrate(m) => format!(
                "-- {} ({}){on}\n{}",
                m.file,
                if m.no_transaction { "not in a transaction" } else { "in one transaction" },
                m.sql.trim_end()
            ),
            Op::DropDatabase { sql, .. } if !sql.is_empty() => sql.clone(),
            // Saved before steps stored their statement, which the server's dialect renders at apply.
            Op::DropDatabase { name, force, .. } => {
                format!("drop database \"{name}\"{}", if *force { ", ending its sessions" } else { "" })
            }
        }
    }
}

/// One attribute that changes, for the human plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    pub before: Value,
    pub after: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub action: Action,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Attributes (by name) whose value is sensitive: shown as (sensitive).
    pub after_sensitive: Value,
    pub attributes: Vec<AttrChange>,
    /// Lines shown under the resource (e.g. which service loses access).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
    /// The server the object lives on (the state records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// This change drops a database that holds data (read from the server
    /// when the plan was made): `apply` asks even with `--auto-approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss: Option<DataLoss>,
    /// Attributes (by name, `true`) whose value is known only after apply
    /// (a cluster's endpoint before the cluster exists): Terraform's
    /// `after_unknown`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub after_unknown: Value,
}

/// A database a change drops, and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataLoss {
    pub database: String,
    /// User tables in it; `None` when they could not be counted (then it is
    /// taken to hold data).
    pub tables: Option<u64>,
    /// What `tables` counts when not tables (Redis: keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl DataLoss {
    pub fn describe(&self, address: &str) -> String {
        let unit = self.unit.as_deref().unwrap_or("table");
        match self.tables {
            Some(1) => format!("{address} drops database \"{}\", which holds 1 {unit}", self.database),
            Some(n) => format!("{address} drops database \"{}\", which holds {n} {unit}s", self.database),
            None => format!("{address} drops database \"{}\", whose {unit}s could not be counted", self.database),
        }
    }
}

impl Plan {
    /// For a plan made with `--refresh=false`: what it was compared with.
    pub fn not_refreshed_note(&self) -> Option<String> {
        self.live_read_at.as_ref().map(|at| {
            format!(
                "not refreshed: compared with the servers as the last apply read them at {at}; changes made \
                 outside dbctl since then are not shown, and a database it drops counts as holding data"
            )
        })
    }
}

impl ResourceChange {
    /// A server leaving the configuration: dbctl stops managing it and
    /// removes nothing on it (an embedded server keeps its data directory),
    /// so it is forgotten, not destroyed.
    pub fn only_forgets(&self) -> bool {
        self.action == Action::Delete && self.kind == "server" && self.steps.is_empty()
    }
}

/// A difference between the state and the live server found on refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub address: String,
    pub attribute: String,
    pub recorded: Value,
    pub live: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    /// sha256 of the configuration files and non-sensitive variable values.
    pub config_hash: String,
    pub state_lineage: String,
    pub state_serial: u64,
    /// `server/kind/name` → sha256 of every live object the plan read.
    pub fingerprints: BTreeMap<String, String>,
    pub drift: Vec<Drift>,
    pub changes: Vec<ResourceChange>,
    /// Things the plan does not cover yet, said plainly.
    pub notes: Vec<String>,
    #[serde(default)]
    pub refresh_only: bool,
    /// Made with `--refresh=false`: compared with the servers as the last
    /// apply read them, at this time (RFC 3339), not as they are now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_read_at: Option<String>,
    /// `--target` addresses the plan was made with (a stale check re-plans with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `--replace` addresses the plan was made with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    /// Non-sensitive variable values the plan was made with: `apply PLANFILE`
    /// uses them without `--var` again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, Value>,
    /// Sensitive variables: only a salted, slow digest of each value, so
    /// apply can refuse a different value without the plan holding it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive_variables: BTreeMap<String, String>,
    /// Warnings about the configuration (the ones `validate` prints), so the
    /// JSON and markdown plans carry them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_warnings: Vec<ConfigWarning>,
    /// sha256 of everything above (a saved plan file): a plan edited by hand is refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// A configuration diagnostic as plans carry it: the message, where it
/// points (`file`, 1-based `line` and `column`) and its help line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigWarning {
    pub message: String,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub line: Option<usize>,
    #[serde(default)]
    pub column: Option<usize>,
    #[serde(default)]
    pub help: Option<String>,
    /// The address the warning is about, if one: the same warning about
    /// many resources is shown once in markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl ConfigWarning {
    /// One per diagnostic, located.
    pub fn from_diags(diags: &[crate::diag::Diagnostic]) -> Vec<ConfigWarning> {
        diags
            .iter()
            .zip(crate::diag::locate(diags))
            .map(|(d, place)| {
                let (file, line, column) = match place {
                    Some((f, l, c)) => (Some(f), Some(l), Some(c)),
                    None => (None, None, None),
                };
                ConfigWarning {
                    message: d.message.clone(),
                    file,
                    line,
                    column,
                    help: d.help.as_deref().map(str::to_string),
                    subject: d.subject.as_deref().map(str::to_string),
                }
            })
            .collect()
    }

    /// `file:line:col`, when it points somewhere.
    pub fn place(&self) -> Option<String> {
        let f = self.file.as_ref()?;
        Some(match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{f}:{l}:{c}"),
            (Some(l), None) => format!("{f}:{l}"),
            _ => f.clone(),
        })
    }
}

/// A sensitive variable's value as a saved plan records it:
/// `salt$hex(sha256^N(salt ‖ value))`, iterated so that guessing is slow.
pub fn sensitive_digest(value: &str, salt: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let salt = salt.map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut h: [u8; 32] = Sha256::new().chain_update(salt.as_bytes()).chain_update(value.as_bytes()).finalize().into();
    for _ in 0..100_000 {
        h = Sha256::digest(h).into();
    }
    format!("{salt}${}", hex::encode(h))
}

/// Whether `value` is the one `recorded` (from `sensitive_digest`) was made from.
pub fn sensitive_matches(value: &str, recorded: &str) -> bool {
    let Some((salt, _)) = recorded.split_once('$') else { return false };
    sensitive_digest(value, Some(salt)) == recorded
}

/// Whether a note is a warning: by convention it starts with "Warning".
pub fn is_warning(note: &str) -> bool {
    note.starts_with("Warning")
}

impl Plan {
    fn content_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let unsealed = Plan { digest: String::new(), ..self.clone() };
        hex::encode(Sha256::digest(serde_json::to_vec(&unsealed).expect("plan serialises")))
    }

    /// Record the digest of the plan's content, before saving it to a file.
    pub fn seal(&mut self) {
        self.digest = self.content_digest();
    }

    /// Read a saved plan file and check that it is as `plan --out` wrote it.
    pub fn read_file(path: &std::path::Path) -> Result<Plan, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read the plan {}: {e}", path.display()))?;
        let plan: Plan =
            serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a dbctl plan file: {e}", path.display()))?;
        if plan.format_version != FORMAT_VERSION {
            return Err(format!(
                "{} was saved by a dbctl with plan format {}; this one reads {FORMAT_VERSION}. Make the plan again",
                path.display(),
                plan.format_version
            ));
        }
        if plan.digest.is_empty() || plan.digest != plan.content_digest() {
            return Err(format!(
                "{} does not match its digest: the plan was changed after `dbctl plan --out` wrote it. \
                 Nothing was applied; make the plan again",
                path.display()
            ));
        }
        Ok(plan)
    }

    /// Added, changed and destroyed; a forgotten server is none of them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in self.changes.iter().filter(|ch| !ch.only_forgets()) {
            match ch.action {
                Action::Create => c.0 += 1,
                Action::Update => c.1 += 1,
                Action::Delete => c.2 += 1,
                Action::Replace => {
                    c.0 += 1;
                    c.2 += 1;
                }
                Action::NoOp => {}
            }
        }
        c
    }

    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    pub fn summary(&self) -> String {
        if !self.has_changes() {
            return "No changes. Live state matches the configuration.".to_string();
        }
        let (a, m, d) = self.counts();
        match self.forgotten() {
            0 => format!("Plan: {a} to add, {m} to change, {d} to destroy."),
            f => format!("Plan: {a} to add, {m} to change, {d} to destroy, {f} to forget."),
        }
    }

    /// Servers the plan stops managing without touching them.
    pub fn forgotten(&self) -> usize {
        self.changes.iter().filter(|c| c.only_forgets()).count()
    }

    /// The changes that drop a database holding data.
    pub fn data_loss(&self) -> impl Iterator<Item = (&ResourceChange, &DataLoss)> {
        self.changes.iter().filter_map(|c| c.data_loss.as_ref().map(|d| (c, d)))
    }

    /// Plan-level notes that are warnings (they start with "Warning"), in order.
    pub fn warning_notes(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().map(String::as_str).filter(|n| is_warning(n))
    }

    /// Plan-level notes that are not warnings (what is not planned, and why).
    pub fn plain_notes(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().map(String::as_str).filter(|n| !is_warning(n))
    }

    /// Every step in apply order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.changes.iter().flat_map(|c| c.steps.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps as a dbctl that did not store their statement saved them: they
    /// load, keep their bytes (so a saved plan keeps its digest), and are
    /// shown as before; apply renders their statement in the server's dialect.
    #[test]
    fn steps_saved_before_they_stored_their_statement_still_load() {
        let old = [
            r#"{"address":"database.old","server":"server.main","database":null,"op":"drop_database","name":"old","force":false}"#,
            r#"{"address":"user.app","server":"server.main","database":null,"op":"set_password","role":"app","secret":"secret.pw","account":"'app'@'%'"}"#,
            r#"{"address":"user.app","server":"server.main","database":null,"op":"set_password","role":"app","secret":"secret.pw"}"#,
        ];
        let steps: Vec<Step> = old.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
        for (s, text) in steps.iter().zip(old) {
            assert_eq!(serde_json::to_string(s).unwrap(), text);
        }
        assert_eq!(steps[0].describe(), "drop database \"old\"");
        assert_eq!(
            steps[1].describe(),
            "ALTER USER 'app'@'%' IDENTIFIED WITH mysql_native_password AS (sensitive) ACCOUNT UNLOCK"
        );
        assert_eq!(steps[2].describe(), "ALTER ROLE \"app\" PASSWORD (sensitive)");

        // A step made now carries its statement, and shows exactly it.
        let now = Step {
            op: Op::DropDatabase { name: "old".into(), force: false, sql: "DROP DATABASE `old`".into() },
            ..steps[0].clone()
        };
        assert_eq!(now.describe(), "DROP DATABASE `old`");
        let back: Step = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
        assert_eq!(back, now);
    }
}
