//! The state: which objects dbctl manages, as last applied.
//!
//! Local backend: `.dbctl/state.json` (mode 0600, written atomically) plus
//! `.dbctl/state.journal`, to which apply appends one line per completed
//! step. Loading replays the journal, so an apply killed at any point loses
//! nothing; a finished apply folds the journal into state.json. Writing the
//! whole state after each of 10,000 steps would cost gigabytes of I/O; a
//! journal line costs microseconds.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub server: Option<String>,
    /// The object's name where it lives.
    pub name: String,
    /// Attributes as last applied (never a secret value).
    pub attributes: Value,
    /// For users: the secret version their password was last set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub lineage: String,
    pub serial: u64,
    pub resources: BTreeMap<String, StateResource>,
}

impl State {
    pub fn new() -> State {
        State { version: 1, lineage: uuid::Uuid::new_v4().to_string(), serial: 0, resources: BTreeMap::new() }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Put { address: String, resource: StateResource },
    Remove { address: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {0} {1}: {2}")]
    Io(&'static str, PathBuf, std::io::Error),
    #[error("{0} is not a dbctl state file: {1}")]
    Corrupt(PathBuf, String),
    #[error(
        "the state is locked by another dbctl ({0}); it runs one apply at a time. Wait for it, or use --lock-timeout. \
         If that process is gone, the lock is released with it; `dbctl force-unlock` clears what it left behind"
    )]
    Locked(String),
}

fn io<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |e| StateError::Io(what, p.to_path_buf(), e)
}

/// The local state backend rooted at `.dbctl/`.
#[derive(Debug, Clone)]
pub struct LocalState {
    pub dir: PathBuf,
}

/// Write `bytes` to `path` through a temporary file and a rename; mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    Ok(())
}

impl LocalState {
    pub fn new(dbctl_dir: &Path) -> LocalState {
        LocalState { dir: dbctl_dir.to_path_buf() }
    }
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn journal_path(&self) -> PathBuf {
        self.dir.join("state.journal")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("state.lock")
    }

    /// The state with any journal of an unfinished apply replayed.
    pub fn load(&self) -> Result<State, StateError> {
        let p = self.state_path();
        let mut state = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt(p.clone(), e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
            Err(e) => return Err(StateError::Io("read", p, e)),
        };
        let jp = self.journal_path();
        if let Ok(f) = File::open(&jp) {
            let mut replayed = false;
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // A line cut short by a kill is the last one; ignore it.
                let Ok(entry) = serde_json::from_str::<Entry>(&line) else { break };
                replayed = true;
                match entry {
                    Entry::Put { address, resource } => {
                        state.resources.insert(address, resource);
                    }
                    Entry::Remove { address } => {
                        state.resources.remove(&address);
                    }
                }
            }
            if replayed {
                state.serial += 1;
            }
        }
        Ok(state)
    }

    /// Fold the journal into state.json (serial + 1) and remove it.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        write_private(&self.state_path(), &bytes)?;
        match std::fs::remove_file(self.journal_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io("remove", self.journal_path(), e)),
        }
    }

    pub fn journal(&self) -> Result<Journal, StateError> {
        let p = self.journal_path();
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let f = OpenOptions::new().create(true).append(true).mode(0o600).open(&p).map_err(io("open", &p))?;
        Ok(Journal { file: f, path: p })
    }

    /// Take the state lock, waiting up to `timeout`.
    pub fn lock(&self, operation: &str, timeout: Duration) -> Result<StateLock, StateError> {
        use fs4::fs_std::FileExt;
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let p = self.lock_path();
        let start = Instant::now();
        loop {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&p)
                .map_err(io("open", &p))?;
            match f.try_lock_exclusive() {
                Ok(true) => {
                    let info = serde_json::json!({
                        "pid": std::process::id(),
                        "operation": operation,
                        "created": time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    });
                    f.set_len(0).map_err(io("write", &p))?;
                    (&f).write_all(info.to_string().as_bytes()).map_err(io("write", &p))?;
                    return Ok(StateLock { file: f });
                }
                Ok(false) | Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(100)),
                _ => {
                    let holder = std::fs::read_to_string(&p).unwrap_or_default();
                    return Err(StateError::Locked(if holder.is_empty() { "unknown holder".into() } else { holder }));
                }
            }
        }
    }
}

/// Held while applying; released (with its info cleared) on drop, and by the
/// kernel if the process dies.
pub struct StateLock {
    file: File,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = fs4::fs_std::FileExt::unlock(&self.file);
    }
}

pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    pub fn put(&mut self, address: &str, resource: &StateResource) -> Result<(), StateError> {
        self.append(&Entry::Put { address: address.to_string(), resource: resource.clone() })
    }
    pub fn remove(&mut self, address: &str) -> Result<(), StateError> {
        self.append(&Entry::Remove { address: address.to_string() })
    }
    fn append(&mut self, e: &Entry) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(e).expect("journal entry serialises");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io("append to", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn res(name: &str) -> StateResource {
        StateResource {
            kind: "database".into(),
            server: Some("server.main".into()),
            name: name.into(),
            attributes: serde_json::json!({}),
            password_version: None,
        }
    }

    #[test]
    fn journal_replays_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalState::new(dir.path());
        let mut s = st.load().unwrap();
        s.resources.insert("database.a".into(), res("a"));
        st.save(&s).unwrap();
        let mode = std::fs::metadata(dir.path().join("state.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut j = st.journal().unwrap();
        j.put("database.b", &res("b")).unwrap();
        j.remove("database.a").unwrap();
        drop(j);
        // A kill in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("state.journal")).unwrap();
        f.write_all(b"{\"put\":{\"address\":\"database.c\"").unwrap();

        let s2 = st.load().unwrap();
        assert_eq!(s2.resources.keys().collect::<Vec<_>>(), vec!["database.b"]);
        assert_eq!(s2.serial, s.serial + 1);
        assert_eq!(s2.lineage, s.lineage);
        st.save(&s2).unwrap();
        assert!(!dir.path().join("state.journal").exists());
        assert_eq!(st.load().unwrap(), s2);
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalState::new(dir.path());
        let held = st.lock("apply", Duration::ZERO).unwrap();
        let err = st.lock("apply", Duration::from_millis(200)).err().expect("second lock fails");
        assert!(err.to_string().contains("\"operation\":\"apply\""), "{err}");
        drop(held);
        st.lock("apply", Duration::ZERO).expect("free again");
    }
}
