//! AWS Secrets Manager as a secret store.
//!
//! Secrets dbctl creates carry the tags `managed-by = dbctl` and
//! `dbctl:address`. A secret without `managed-by = dbctl` belongs to someone
//! else: dbctl never writes, reads as a password, or deletes it until
//! `dbctl import secret.NAME <name-or-arn>` adopts it (and tags it). A plan
//! reads versions and dates only
//! (`DescribeSecret`); the value is read when a step needs it. Deleting
//! schedules deletion with the default recovery window.
//!
//! Rotation follows Secrets Manager's protocol: `dbctl secret rotate` (or a
//! due `rotate_every`) puts the new value staged `AWSPENDING` (and
//! `DBCTLPENDING`, to tell dbctl's rotation from a rotation Lambda's); the
//! apply sets it on the server, then moves `AWSCURRENT` to it (the old
//! version becomes `AWSPREVIOUS`) and removes the pending labels. A version
//! staged `AWSPENDING` without `DBCTLPENDING` is someone else's rotation in
//! progress: reported and left alone.

use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::primitives::DateTimeFormat;
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;

use super::{password_of, sha, Current, SecretMeta, StoreError};
use crate::model::{AwsProvider, Sensitive};

pub struct AwsStore {
    client: Client,
    /// Where requests go, for error messages.
    place: String,
}

/// Whether a request failed because the credential chain found nothing
/// (no keys, no profile, no role): said in one sentence, not as the SDK's dump.
pub(crate) fn missing_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(c) = x.downcast_ref::<CredentialsError>() {
            return matches!(c, CredentialsError::CredentialsNotLoaded(_));
        }
        cur = x.source();
    }
    false
}

fn when(d: Option<&aws_sdk_secretsmanager::primitives::DateTime>) -> String {
    d.and_then(|d| d.fmt(DateTimeFormat::DateTime).ok()).unwrap_or_default()
}

impl AwsStore {
    pub async fn new(p: &AwsProvider) -> AwsStore {
        let (conf, place) = crate::aws::sdk_config(p, "AWS Secrets Manager", Duration::from_secs(30)).await;
        AwsStore { client: Client::new(&conf), place }
    }

    fn err(&self, what: &str, name: &str, e: impl std::error::Error + 'static) -> StoreError {
        if missing_credentials(&e) {
            return StoreError::Aws(format!(
                "{}: {what} \"{name}\": no AWS credentials were found; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or `profile` in provider \"aws\"), or run where a role provides them",
                self.place
            ));
        }
        StoreError::Aws(format!("{}: {what} \"{name}\": {}", self.place, DisplayErrorContext(e)))
    }

    /// The secret's state: None if it does not exist; an error if its name is
    /// scheduled for deletion.
    async fn describe(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput>, StoreError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => {
                if let Some(deleted) = d.deleted_date() {
                    return Err(StoreError::Aws(format!(
                        "{}: the secret \"{name}\" is scheduled for deletion (since {}); restore it \
                         (aws secretsmanager restore-secret --secret-id '{name}') or give the secret another name",
                        self.place,
                        when(Some(deleted))
                    )));
                }
                Ok(Some(d))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(self.err("cannot read", name, e)),
        }
    }

    /// The secret's state if it exists and is dbctl's; an error if it exists
    /// and belongs to someone else.
    async fn owned(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput>, StoreError> {
        match self.describe(name).await? {
            Some(d) if !is_dbctls(d.tags()) => {
                Err(StoreError::Foreign { place: self.place.clone(), name: name.to_string() })
            }
            d => Ok(d),
        }
    }

    /// Adopt an existing secret (`dbctl import`): by name or ARN; it must be
    /// the secret named `name`. Tags it as dbctl's. Returns its ARN.
    pub async fn adopt(&self, id: &str, name: &str, address: &str) -> Result<String, StoreError> {
        let Some(d) = self.describe(id).await? else {
            return Err(StoreError::Aws(format!("{}: there is no secret \"{id}\"", self.place)));
        };
        let found = d.name().unwrap_or_default();
        if found != name {
            return Err(StoreError::Aws(format!(
                "{}: \"{id}\" is the secret \"{found}\", but {address} is named \"{name}\" in the configuration: \
                 set name = \"{found}\" first",
                self.place
            )));
        }
        let arn = d.arn().unwrap_or(id).to_string();
        self.client
            .tag_resource()
            .secret_id(&arn)
            .tags(tag("managed-by", "dbctl"))
            .tags(tag("dbctl:address", address))
            .send()
            .await
            .map_err(|e| self.err("cannot tag", name, e))?;
        Ok(arn)
    }

    pub async fn meta(&self, name: &str) -> Result<Option<SecretMeta>, StoreError> {
        let Some(d) = self.owned(name).await? else { return Ok(None) };
        let (rotation, foreign) = pending_in(&d);
        let Some(current) = self.read_current(name).await? else { return Ok(None) };
        Ok(Some(SecretMeta { pending: foreign, rotation, ..current.meta() }))
    }

    /// The version of a rotation dbctl staged, with its value.
    pub async fn pending(&self, name: &str) -> Result<Option<Current>, StoreError> {
        let Some(d) = self.owned(name).await? else { return Ok(None) };
        let Some(version) = pending_in(&d).0 else { return Ok(None) };
        match self.client.get_secret_value().secret_id(name).version_id(&version).send().await {
            Ok(v) => Ok(Some(Current {
                version: v.version_id().unwrap_or_default().to_string(),
                created: when(v.created_date()),
                value: Sensitive::new(v.secret_string().unwrap_or_default().to_string()),
            })),
            Err(e) => Err(self.err("cannot read the pending version of", name, e)),
        }
    }

    /// Stage a rotation: a new version labelled AWSPENDING and DBCTLPENDING;
    /// AWSCURRENT stays where it is, so readers keep the current value.
    pub async fn put_pending(&self, name: &str, value: Sensitive) -> Result<String, StoreError> {
        if self.owned(name).await?.is_none() {
            return Err(StoreError::Aws(format!("{}: there is no secret \"{name}\" to rotate", self.place)));
        }
        let out = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.expose())
            .version_stages(AWSPENDING)
            .version_stages(DBCTLPENDING)
            .send()
            .await
            .map_err(|e| self.err("cannot write", name, e))?;
        Ok(out.version_id().unwrap_or_default().to_string())
    }

    /// Finish a rotation: AWSCURRENT moves to `version` (the old current
    /// becomes AWSPREVIOUS), then the pending labels go. Each step checks
    /// where the labels are, so a rerun after an interruption converges.
    pub async fn promote(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let Some(d) = self.owned(name).await? else {
            return Err(StoreError::Aws(format!("{}: there is no secret \"{name}\" to finish rotating", self.place)));
        };
        let stages = d.version_ids_to_stages().cloned().unwrap_or_default();
        let has = |id: &str, label: &str| stages.get(id).is_some_and(|s| s.iter().any(|x| x == label));
        if !stages.contains_key(version) {
            return Err(StoreError::Aws(format!(
                "{}: the secret \"{name}\" has no version {version} to make current",
                self.place
            )));
        }
        if !has(version, "AWSCURRENT") {
            let mut req = self.client.update_secret_version_stage().secret_id(name).version_stage("AWSCURRENT");
            req = req.move_to_version_id(version);
            if let Some(old) = stages.keys().find(|id| has(id, "AWSCURRENT")) {
                req = req.remove_from_version_id(old);
            }
            req.send().await.map_err(|e| self.err("cannot make the new version current of", name, e))?;
        }
        for label in [AWSPENDING, DBCTLPENDING] {
            if has(version, label) {
                self.client
                    .update_secret_version_stage()
                    .secret_id(name)
                    .version_stage(label)
                    .remove_from_version_id(version)
                    .send()
                    .await
                    .map_err(|e| self.err("cannot finish the rotation of", name, e))?;
            }
        }
        Ok(())
    }

    /// The current value, if the secret exists and is dbctl's.
    pub async fn current(&self, name: &str) -> Result<Option<Current>, StoreError> {
        if self.owned(name).await?.is_none() {
            return Ok(None);
        }
        self.read_current(name).await
    }

    /// The current value of a secret dbctl does not own (`external = true`):
    /// read, whoever manages it; never written.
    pub async fn read_external(&self, name: &str) -> Result<Option<Current>, StoreError> {
        if self.describe(name).await?.is_none() {
            return Ok(None);
        }
        self.read_current(name).await
    }

    async fn read_current(&self, name: &str) -> Result<Option<Current>, StoreError> {
        match self.client.get_secret_value().secret_id(name).version_stage("AWSCURRENT").send().await {
            Ok(v) => Ok(Some(Current {
                version: v.version_id().unwrap_or_default().to_string(),
                created: when(v.created_date()),
                value: Sensitive::new(v.secret_string().unwrap_or_default().to_string()),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(self.err("cannot read", name, e)),
        }
    }

    /// Create the secret, or add a version (AWSCURRENT) to it.
    pub async fn put(&self, name: &str, address: &str, value: Sensitive) -> Result<String, StoreError> {
        if self.owned(name).await?.is_some() {
            let out = self
                .client
                .put_secret_value()
                .secret_id(name)
                .secret_string(value.expose())
                .send()
                .await
                .map_err(|e| self.err("cannot write", name, e))?;
            return Ok(out.version_id().unwrap_or_default().to_string());
        }
        let out = self
            .client
            .create_secret()
            .name(name)
            .description(format!("Managed by dbctl ({address})"))
            .secret_string(value.expose())
            .tags(tag("managed-by", "dbctl"))
            .tags(tag("dbctl:address", address))
            .send()
            .await
            .map_err(|e| self.err("cannot create", name, e))?;
        Ok(out.version_id().unwrap_or_default().to_string())
    }

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if self.owned(name).await?.is_none() {
            return Ok(());
        }
        match self.client.delete_secret().secret_id(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(self.err("cannot delete", name, e)),
        }
    }
}

const AWSPENDING: &str = "AWSPENDING";
/// Marks a pending version as staged by dbctl (not by a rotation Lambda).
const DBCTLPENDING: &str = "DBCTLPENDING";

/// The pending version of the secret, if any: (dbctl's rotation, whether
/// someone else's rotation is in progress). A pending label on the current
/// version is a finished rotation.
fn pending_in(d: &aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput) -> (Option<String>, bool) {
    let stages = d.version_ids_to_stages().cloned().unwrap_or_default();
    let has = |s: &Vec<String>, label: &str| s.iter().any(|x| x == label);
    match stages.iter().find(|(_, s)| has(s, AWSPENDING) && !has(s, "AWSCURRENT")) {
        Some((id, s)) if has(s, DBCTLPENDING) => (Some(id.clone()), false),
        Some(_) => (None, true),
        None => (None, false),
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// Whether the tags mark a secret as dbctl's.
fn is_dbctls(tags: &[Tag]) -> bool {
    tags.iter().any(|t| t.key() == Some("managed-by") && t.value() == Some("dbctl"))
}

/// sha256 of a password as stored, for comparing without holding it.
pub fn hash_of(value: &Sensitive) -> String {
    sha(password_of(value).expose())
}
