//! Secret stores. The local store keeps `.dbctl/secrets.json` (mode 0600,
//! written atomically): per secret name, its versions with values. Values
//! are held as `Sensitive` and never printed. (The AWS store arrives with
//! issue [3].)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, TryRngCore};
use serde::{Deserialize, Serialize};

use crate::model::{Generate, Sensitive};
use crate::state::{write_private, StateError};

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

/// The current version of a secret, without its value unless asked.
#[derive(Debug, Clone)]
pub struct Current {
    pub version: String,
    pub created: String,
    pub value: Sensitive,
}

pub struct LocalStore {
    path: PathBuf,
    file: StoreFile,
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

    /// Add a version (generated, or the given value) and save.
    pub fn put(&mut self, name: &str, address: &str, value: Sensitive) -> Result<String, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        let created =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let e = self
            .file
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| Entry { address: address.to_string(), versions: Vec::new() });
        e.versions.push(Version { id: id.clone(), created, value: value.expose().to_string() });
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
    }

    #[test]
    fn store_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::open(dir.path()).unwrap();
        assert!(s.current("x").is_none());
        let v1 = s.put("x", "secret.x", Sensitive::new("one".into())).unwrap();
        let v2 = s.put("x", "secret.x", Sensitive::new("two".into())).unwrap();
        assert_ne!(v1, v2);
        let s = LocalStore::open(dir.path()).unwrap();
        let c = s.current("x").unwrap();
        assert_eq!((c.version.as_str(), c.value.expose()), (v2.as_str(), "two"));
        let mode = std::fs::metadata(dir.path().join("secrets.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
