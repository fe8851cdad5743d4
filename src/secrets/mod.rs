//! Secret stores. `local`: `.dbctl/secrets.json` (mode 0600, written
//! atomically; every write re-reads the file under a lock on
//! `.dbctl/secrets.lock`), per secret name its versions with values. `aws`: AWS Secrets
//! Manager, configured by `provider "aws"`. Values travel as `Sensitive` and
//! are never printed; a plan reads only versions and dates.
//!
//! A secret that is a user's password is stored in the AWS RDS credentials
//! shape (`username`, `password`, `engine`, `host`, `port`, `dbname`), so
//! rotation tooling that knows RDS secrets can read it, in either store.

pub mod aws;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Address, Sensitive, Store};
use crate::state::{write_private, StateError};

/// What a plan may know of a secret: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    pub version: String,
    /// RFC 3339.
    pub created: String,
    /// A rotation is in progress in the store that dbctl did not stage
    /// (AWSPENDING from a rotation Lambda): left alone.
    pub pending: bool,
    /// A rotation dbctl staged (`dbctl secret rotate`, a due `rotate_every`):
    /// the pending version, which becomes current once the server of the
    /// secret's user accepts it. Services keep reading the current version.
    pub rotation: Option<String>,
    /// sha256 of the current password (or plain value), to notice a changed `value`.
    pub value_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Local(#[from] StateError),
    #[error("{0}")]
    Aws(String),
    /// A secret that exists in the store and is not dbctl's.
    #[error(
        "{place}: the secret \"{name}\" exists and is not managed by dbctl (it has no managed-by = dbctl tag): \
         dbctl neither overwrites it nor uses its value. Adopt it with `dbctl import secret.NAME '{name}'`, \
         or give the secret another name"
    )]
    Foreign { place: String, name: String },
}

impl StoreError {
    /// The error, naming the secret's address (and so the exact import command).
    pub fn for_secret(self, addr: &crate::model::Address) -> StoreError {
        match self {
            StoreError::Foreign { place, name } => StoreError::Aws(format!(
                "{addr}: {place} already holds a secret named \"{name}\" that is not managed by dbctl (it has no \
                 managed-by = dbctl tag): dbctl neither overwrites it nor uses its value as a password. Adopt it with \
                 `dbctl import {addr} '{name}'`, or give {addr} another name"
            )),
            e => e,
        }
    }
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
    /// A rotation's new value that its server has not accepted yet: readers
    /// (dbctl, the published modules) use the newest version without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
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
            rotation: None,
            value_hash: sha(password_of(&self.value).expose()),
        }
    }
}

/// The local store, `.dbctl/secrets.json`. Several processes may write it at
/// once (an apply generating passwords, a `secret rotate`): every write is a
/// read-modify-write of the file on disk under an exclusive lock on
/// `.dbctl/secrets.lock`, so no writer loses another's versions. Reads use the
/// last copy read, re-read whenever the file on disk has changed.
pub struct LocalStore {
    path: PathBuf,
    lock_path: PathBuf,
    file: StoreFile,
    /// What `file` was read from, to notice another process's write.
    seen: Option<FileId>,
}

/// Identity of a version of the file: a write replaces it (rename), so the
/// inode changes with every write.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl LocalStore {
    pub fn open(dbctl_dir: &Path) -> Result<LocalStore, StateError> {
        let mut s = LocalStore {
            path: dbctl_dir.join("secrets.json"),
            lock_path: dbctl_dir.join("secrets.lock"),
            file: StoreFile::default(),
            seen: None,
        };
        s.reload()?;
        Ok(s)
    }

    /// Read the file from disk (a missing file is an empty store).
    fn reload(&mut self) -> Result<(), StateError> {
        let path = &self.path;
        let (file, seen) = match std::fs::File::open(path) {
            Ok(mut f) => {
                use std::io::Read;
                let id = f.metadata().map(|m| file_id(&m)).map_err(|e| StateError::Io("read", path.clone(), e))?;
                let mut b = Vec::new();
                f.read_to_end(&mut b).map_err(|e| StateError::Io("read", path.clone(), e))?;
                let file = serde_json::from_slice(&b)
                    .map_err(|e| StateError::Corrupt(path.clone(), format!("secret store: {}", e.classify_only())))?;
                (file, Some(id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (StoreFile::default(), None),
            Err(e) => return Err(StateError::Io("read", path.clone(), e)),
        };
        self.file = file;
        self.seen = seen;
        Ok(())
    }

    /// Re-read the file if another process (or handle) has written it since.
    fn refresh(&mut self) -> Result<(), StateError> {
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Some(file_id(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StateError::Io("read", self.path.clone(), e)),
        };
        if now != self.seen {
            self.reload()?;
        }
        Ok(())
    }

    /// The version services use: the newest that is not pending.
    pub fn current(&mut self, name: &str) -> Result<Option<Current>, StateError> {
        self.refresh()?;
        let Some(e) = self.file.secrets.get(name) else { return Ok(None) };
        Ok(current_of(e).map(as_current))
    }

    /// A rotation's new version, newer than the current one and not yet
    /// accepted by its server (`put_pending`), if there is one.
    pub fn pending(&mut self, name: &str) -> Result<Option<Current>, StateError> {
        self.refresh()?;
        let Some(e) = self.file.secrets.get(name) else { return Ok(None) };
        Ok(pending_of(e).map(as_current))
    }

    /// Add a version and save: under the store's lock, read the file as it is
    /// on disk now, add to it, write it back. The new version is current.
    pub fn put(&mut self, name: &str, address: &str, value: Sensitive) -> Result<String, StateError> {
        self.add(name, address, value, false)
    }

    /// Add a rotation's new version, pending: readers keep the current one
    /// until `promote`. A pending version already there is replaced (it was
    /// never made current; the caller checks that no server holds it).
    pub fn put_pending(&mut self, name: &str, address: &str, value: Sensitive) -> Result<String, StateError> {
        self.add(name, address, value, true)
    }

    /// Make a pending version the current one (its server accepted it).
    /// Promoting the current version again is a no-op, so a rerun converges.
    pub fn promote(&mut self, name: &str, version: &str) -> Result<(), StateError> {
        let path = self.path.clone();
        self.locked(|file| {
            let e = file.secrets.get_mut(name).ok_or_else(|| {
                StateError::Corrupt(path.clone(), format!("secret store: no secret \"{name}\" to make current"))
            })?;
            let Some(i) = e.versions.iter().position(|v| v.id == version) else {
                return Err(StateError::Corrupt(
                    path.clone(),
                    format!("secret store: \"{name}\" has no version {version} to make current"),
                ));
            };
            if !e.versions[i].pending {
                return Ok(false);
            }
            // The promoted version goes last: it is the newest non-pending one.
            let mut v = e.versions.remove(i);
            v.pending = false;
            e.versions.push(v);
            trim(&mut e.versions);
            Ok(true)
        })
    }

    fn add(&mut self, name: &str, address: &str, value: Sensitive, pending: bool) -> Result<String, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        let v = Version { id: id.clone(), created: now_rfc3339(), value: value.expose().to_string(), pending };
        self.locked(|file| {
            let e = file
                .secrets
                .entry(name.to_string())
                .or_insert_with(|| Entry { address: address.to_string(), versions: Vec::new() });
            if pending {
                e.versions.retain(|x| !x.pending);
            }
            e.versions.push(v);
            trim(&mut e.versions);
            Ok(true)
        })?;
        Ok(id)
    }

    /// Read-modify-write under the store's lock; `change` says whether it
    /// changed anything to write.
    fn locked(&mut self, change: impl FnOnce(&mut StoreFile) -> Result<bool, StateError>) -> Result<(), StateError> {
        use fs4::fs_std::FileExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io("create", dir.to_path_buf(), e))?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| StateError::Io("open", self.lock_path.clone(), e))?;
        lock.lock_exclusive().map_err(|e| StateError::Io("lock", self.lock_path.clone(), e))?;
        self.reload()?;
        if change(&mut self.file)? {
            let bytes = serde_json::to_vec_pretty(&self.file).expect("store serialises");
            write_private(&self.path, &bytes)?;
            self.seen = std::fs::metadata(&self.path).ok().map(|m| file_id(&m));
        }
        // Dropping the file releases the lock.
        drop(lock);
        Ok(())
    }
}

fn as_current(v: &Version) -> Current {
    Current { version: v.id.clone(), created: v.created.clone(), value: Sensitive::new(v.value.clone()) }
}

fn current_of(e: &Entry) -> Option<&Version> {
    e.versions.iter().rev().find(|v| !v.pending)
}

fn pending_of(e: &Entry) -> Option<&Version> {
    let last = e.versions.last()?;
    last.pending.then_some(last)
}

/// Keep what Secrets Manager keeps: the current version, the previous one,
/// and a pending rotation (never dropping the current one while a rotation is
/// pending). A pending version older than the current one is a rotation
/// that was overtaken: dropped.
fn trim(versions: &mut Vec<Version>) {
    let pending = versions.last().filter(|v| v.pending).cloned();
    let mut kept: Vec<Version> = versions.iter().filter(|v| !v.pending).cloned().collect();
    let n = kept.len();
    if n > 2 {
        kept.drain(..n - 2);
    }
    kept.extend(pending);
    *versions = kept;
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
            Store::Local => Ok(self.local.lock().expect("store lock").current(name)?),
            Store::Aws => self.aws()?.current(name).await,
        }
    }

    /// The current value of a secret dbctl only reads: an external one may
    /// belong to someone else (no managed-by = dbctl tag), such as the master
    /// user secret RDS manages.
    pub async fn read(&self, store: Store, name: &str, external: bool) -> Result<Option<Current>, StoreError> {
        match store {
            Store::Aws if external => self.aws()?.read_external(name).await,
            _ => self.current(store, name).await,
        }
    }

    /// Metadata only (and whether a rotation is pending, for AWS).
    pub async fn meta(&self, store: Store, name: &str) -> Result<Option<SecretMeta>, StoreError> {
        match store {
            Store::Local => {
                let mut local = self.local.lock().expect("store lock");
                let rotation = local.pending(name)?.map(|p| p.version);
                Ok(local.current(name)?.map(|c| SecretMeta { rotation, ..c.meta() }))
            }
            Store::Aws => self.aws()?.meta(name).await,
        }
    }

    /// The pending version of a rotation dbctl staged, with its value.
    pub async fn pending(&self, store: Store, name: &str) -> Result<Option<Current>, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").pending(name)?),
            Store::Aws => self.aws()?.pending(name).await,
        }
    }

    /// Stage a rotation: a new version that readers see only once `promote`d.
    pub async fn put_pending(
        &self,
        store: Store,
        name: &str,
        address: &str,
        value: Sensitive,
    ) -> Result<String, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").put_pending(name, address, value)?),
            Store::Aws => self.aws()?.put_pending(name, value).await,
        }
    }

    /// Make a staged version current (its user's server accepted it).
    pub async fn promote(&self, store: Store, name: &str, version: &str) -> Result<(), StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").promote(name, version)?),
            Store::Aws => self.aws()?.promote(name, version).await,
        }
    }

    pub async fn put(&self, store: Store, name: &str, address: &str, value: Sensitive) -> Result<String, StoreError> {
        match store {
            Store::Local => Ok(self.local.lock().expect("store lock").put(name, address, value)?),
            Store::Aws => match Address::parse(address) {
                Ok(a) => self.aws()?.put(name, address, value).await.map_err(|e| e.for_secret(&a)),
                Err(_) => self.aws()?.put(name, address, value).await,
            },
        }
    }

    /// Adopt an existing secret of the AWS store (`dbctl import`); its ARN.
    pub async fn adopt(&self, id: &str, name: &str, address: &Address) -> Result<String, StoreError> {
        self.aws()?.adopt(id, name, &address.to_string()).await
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

pub use crate::model::{generate, ALNUM, SPECIAL};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Generate;
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
        assert!(s.current("x").unwrap().is_none());
        let v1 = s.put("x", "secret.x", Sensitive::new("one".into())).unwrap();
        let v2 = s.put("x", "secret.x", Sensitive::new("two".into())).unwrap();
        s.put("x", "secret.x", Sensitive::new("three".into())).unwrap();
        assert_ne!(v1, v2);
        let mut s = LocalStore::open(dir.path()).unwrap();
        let c = s.current("x").unwrap().unwrap();
        assert_eq!(c.value.expose(), "three");
        assert_eq!(s.file.secrets["x"].versions.len(), 2);
        let mode = std::fs::metadata(dir.path().join("secrets.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn value(s: &mut LocalStore, name: &str) -> Option<String> {
        s.current(name).unwrap().map(|c| c.value.expose().to_string())
    }

    #[test]
    fn two_handles_writing_interleaved_keys_lose_nothing() {
        // Two processes' views of one store: an apply generating passwords and a rotation.
        let dir = tempfile::tempdir().unwrap();
        let mut apply = LocalStore::open(dir.path()).unwrap();
        let mut rotate = LocalStore::open(dir.path()).unwrap();
        apply.put("a", "secret.a", Sensitive::new("a1".into())).unwrap();
        rotate.put("b", "secret.b", Sensitive::new("b1".into())).unwrap();
        apply.put("c", "secret.c", Sensitive::new("c1".into())).unwrap();
        rotate.put("a", "secret.a", Sensitive::new("a2".into())).unwrap();
        apply.put("d", "secret.d", Sensitive::new("d1".into())).unwrap();
        // Each handle sees the other's writes, and so does a fresh reader.
        for s in [&mut apply, &mut rotate, &mut LocalStore::open(dir.path()).unwrap()] {
            assert_eq!(value(s, "a").as_deref(), Some("a2"));
            assert_eq!(value(s, "b").as_deref(), Some("b1"));
            assert_eq!(value(s, "c").as_deref(), Some("c1"));
            assert_eq!(value(s, "d").as_deref(), Some("d1"));
        }
        // The rotation kept the apply's version as the previous one.
        assert_eq!(LocalStore::open(dir.path()).unwrap().file.secrets["a"].versions[0].value, "a1");
    }

    #[test]
    fn concurrent_writers_lose_no_version() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut s = LocalStore::open(&path).unwrap();
                    for i in 0..25 {
                        s.put(&format!("w{w}-{i}"), "secret.x", Sensitive::new(format!("{w}/{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in writers {
            t.join().unwrap();
        }
        let mut s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.file.secrets.len(), 100);
        for w in 0..4 {
            for i in 0..25 {
                assert_eq!(value(&mut s, &format!("w{w}-{i}")), Some(format!("{w}/{i}")));
            }
        }
    }

    #[test]
    fn a_pending_version_is_read_only_once_promoted_and_the_current_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::open(dir.path()).unwrap();
        s.put("x", "secret.x", Sensitive::new("one".into())).unwrap();
        let v2 = s.put("x", "secret.x", Sensitive::new("two".into())).unwrap();
        let v3 = s.put_pending("x", "secret.x", Sensitive::new("three".into())).unwrap();
        // Readers (another process too) keep the current version.
        let mut other = LocalStore::open(dir.path()).unwrap();
        assert_eq!(other.current("x").unwrap().unwrap().version, v2);
        assert_eq!(other.pending("x").unwrap().unwrap().value.expose(), "three");
        // current, previous and pending are all kept.
        let values: Vec<&str> = other.file.secrets["x"].versions.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(values, ["one", "two", "three"]);
        // A second staged rotation replaces the first (never made current).
        let v4 = s.put_pending("x", "secret.x", Sensitive::new("four".into())).unwrap();
        assert_eq!(other.pending("x").unwrap().unwrap().version, v4);
        assert!(s.promote("x", &v3).is_err(), "the replaced pending version is gone");
        s.promote("x", &v4).unwrap();
        assert_eq!(other.current("x").unwrap().unwrap().value.expose(), "four");
        assert!(other.pending("x").unwrap().is_none());
        // Promoting again is a no-op (a rerun after an interrupted apply).
        s.promote("x", &v4).unwrap();
        let values: Vec<&str> = other.file.secrets["x"].versions.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(values, ["two", "four"], "current and previous");
        // A current write overtakes a pending one: the pending one is dropped.
        s.put_pending("x", "secret.x", Sensitive::new("five".into())).unwrap();
        s.put("x", "secret.x", Sensitive::new("six".into())).unwrap();
        assert!(other.pending("x").unwrap().is_none());
        let values: Vec<&str> = other.file.secrets["x"].versions.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(values, ["four", "six"]);
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
