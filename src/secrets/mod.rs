//! Secret stores. `local`: `.dbctl/secrets.json` (mode 0600, written
//! atomically), per secret name its versions with values. `aws`: AWS Secrets
//! Manager, configured by `provider "aws"`. Values travel as `Sensitive` and
//! are never printed; a plan reads only versions and dates.
//!
//! A secret that is a user's password is stored in the AWS RDS credentials
//! shape (`username`, `password`, `engine`, `host`, `port`, `dbname`), so
//! rotation tooling that knows RDS secrets can read it, in either store.

pub mod aws;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, TryRngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Generate, Sensitive, Store};
use crate::state::{write_private, StateError};

/// What a plan may know of a secret: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    pub version: String,
    /// RFC 3339.
    pub created: String,
    /// A rotation is in progress in the store (AWSPENDING): left alone.
    pub pending: bool,
    /// sha256 of the current password (or plain value), to notice a changed `value`.
    pub value_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Local(#[from] StateError),
    #[error("{0}")]
    Aws(String),
}

pub fn sha(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

/// The RDS credentials document of a secret that is a user's password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdsShape {
    pub username: String,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

/// The string to store: the RDS document around the password, or the value.
pub fn document(value: &Sensitive, rds: Option<&RdsShape>) -> Sensitive {
    match rds {
        None => value.clone(),
        Some(r) => Sensitive::new(
            serde_json::json!({
                "username": r.username,
                "password": value.expose(),
                "engine": r.engine,
                "host": r.host,
                "port": r.port,
                "dbname": r.dbname,
            })
            .to_string(),
        ),
    }
}

/// The password inside a stored string (the RDS document's `password`, or the whole string).
pub fn password_of(stored: &Sensitive) -> Sensitive {
    match serde_json::from_str::<serde_json::Value>(stored.expose()) {
        Ok(v) if v.get("password").and_then(|p| p.as_str()).is_some() => {
            Sensitive::new(v["password"].as_str().unwrap_or_default().to_string())
        }
        _ => stored.clone(),
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Version {
    id: String,
    created: String,
    value: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    address: String,
    versions: Vec<Version>,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct StoreFile {
    secrets: BTreeMap<String, Entry>,
}

/// The current version of a secret, with its value.
#[derive(Debug, Clone)]
pub struct Current {
    pub version: String,
    pub created: String,
    pub value: Sensitive,
}

impl Current {
    pub fn meta(&self) -> SecretMeta {
        SecretMeta {
            version: self.version.clone(),
            created: self.created.clone(),
            pending: false,
            value_hash: sha(password_of(&self.value).expose()),
        }
    }
}

pub struct LocalStore {
    path: PathBuf,
    file: StoreFile,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl LocalStore {
    pub fn open(dbctl_dir: &Path) -> Result<LocalStore, StateError> {
        let path = dbctl_dir.join("secrets.json");
        let file = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StateError::Corrupt(path.clone(), format!("secret store: {}", e.classify_only())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile::default(),
            Err(e) => return Err(StateError::Io("read", path, e)),
        };
        Ok(LocalStore { path, file })
    }

    pub fn current(&self, name: &str) -> Option<Current> {
        let v = self.file.secrets.get(name)?.versions.last()?;
        Some(Current { version: v.id.clone(), created: v.created.clone(), value: Sensitive::new(v.value.clone()) })
    }

    /// Add a version and save.
    pub fn put(&mut self, name: &str, address: &str, value: Sensitive) -> Result<String, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        let e = self
            .file
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| Entry { address: address.to_string(), versions: Vec::new() });
        e.versions.push(Version { id: id.clone(), created: now_rfc3339(), value: value.expose().to_string() });
        // Keep the current and the previous version, as Secrets Manager does.
        let n = e.versions.len();
        if n > 2 {
            e.versions.drain(..n - 2);
        }
        let bytes = serde_json::to_vec_pretty(&self.file).expect("store serialises");
        write_private(&self.path, &bytes)?;
        Ok(id)
    }
}

/// Errors from serde_json can quote input; keep only the category and place.
trait Classify {
    fn classify_only(&self) -> String;
}
impl Classify for serde_json::Error {
    fn classify_only(&self) -> String {
        format!("{:?} error at line {} column {}", self.classify(), self.line(), self.column())
    }
}

/// Both stores behind one front; the AWS one only when configured.
pub struct Stores {
    pub local: std::sync::Mutex<LocalStore>,
    pub aws: Option<aws::AwsStore>,
}

impl Stores {
    pub async fn open(dbctl_dir: &Path, provider: Option<&crate::model::AwsProvider>) -> Result<Stores, StoreError> {
        let local = std::sync::Mutex::new(LocalStore::open(dbctl_dir)?);
        let aws = match provider {
            Some(p) => Some(aws::AwsStore::new(p).await),
            None => None,
        };
        Ok(Stores { local, aws })
    }

    fn aws(&self) -> Result<&aws::AwsStore, StoreError> {
        self.aws.as_ref().ok_or_else(|| StoreError::Aws("store = \"aws\" needs a provider \"aws\" block".into()))
    }

    pub async fn current(&self, store: Store, name: &str) -> Result<Option<Current>, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").current(name)),
            Store::Aws => self.aws()?.current(name).await,
        }
    }

    /// Metadata only (and whether a rotation is pending, for AWS).
    pub async fn meta(&self, store: Store, name: &str) -> Result<Option<SecretMeta>, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").current(name).map(|c| c.meta())),
            Store::Aws => self.aws()?.meta(name).await,
        }
    }

    pub async fn put(&self, store: Store, name: &str, address: &str, value: Sensitive) -> Result<String, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").put(name, address, value)?),
            Store::Aws => self.aws()?.put(name, address, value).await,
        }
    }

    /// Remove a secret: AWS schedules deletion with its default recovery
    /// window; the local store keeps the value (it is only on this machine).
    pub async fn delete(&self, store: Store, name: &str) -> Result<(), StoreError> {
        match store {
            Store::Local => Ok(()),
            Store::Aws => self.aws()?.delete(name).await,
        }
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Punctuation that survives URLs, shells and connection strings unquoted.
const SPECIAL: &[u8] = b"!#%*+-.:=?@^_~";

/// A new value from the operating system's CSPRNG.
pub fn generate(g: &Generate) -> Sensitive {
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let alphabet: Vec<u8> = if g.special { [ALNUM, SPECIAL].concat() } else { ALNUM.to_vec() };
    let s: String = (0..g.length).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
    Sensitive::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_values_have_the_asked_shape() {
        let a = generate(&Generate { length: 40, special: false });
        assert_eq!(a.expose().len(), 40);
        assert!(a.expose().bytes().all(|b| ALNUM.contains(&b)));
        let b = generate(&Generate { length: 40, special: false });
        assert_ne!(a.expose(), b.expose());
        let c = generate(&Generate { length: 200, special: true });
        assert!(c.expose().bytes().any(|b| SPECIAL.contains(&b)));
    }

    #[test]
    fn store_round_trip_is_private_and_keeps_two_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::open(dir.path()).unwrap();
        assert!(s.current("x").is_none());
        let v1 = s.put("x", "secret.x", Sensitive::new("one".into())).unwrap();
        let v2 = s.put("x", "secret.x", Sensitive::new("two".into())).unwrap();
        s.put("x", "secret.x", Sensitive::new("three".into())).unwrap();
        assert_ne!(v1, v2);
        let s = LocalStore::open(dir.path()).unwrap();
        let c = s.current("x").unwrap();
        assert_eq!(c.value.expose(), "three");
        assert_eq!(s.file.secrets["x"].versions.len(), 2);
        let mode = std::fs::metadata(dir.path().join("secrets.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rds_document_round_trips_the_password() {
        let rds = RdsShape {
            username: "u".into(),
            engine: "postgres".into(),
            host: "h".into(),
            port: 5432,
            dbname: "d".into(),
        };
        let doc = document(&Sensitive::new("p\"w".into()), Some(&rds));
        let v: serde_json::Value = serde_json::from_str(doc.expose()).unwrap();
        assert_eq!(
            (v["username"].as_str(), v["port"].as_u64(), v["engine"].as_str()),
            (Some("u"), Some(5432), Some("postgres"))
        );
        assert_eq!(password_of(&doc).expose(), "p\"w");
        assert_eq!(password_of(&Sensitive::new("plain".into())).expose(), "plain");
    }
}
