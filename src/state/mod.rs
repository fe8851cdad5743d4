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

pub mod postgres;

/// Where a state lives: the local file under `.dbctl/`, or a row of a
/// PostgreSQL table shared by a team. The commands see only this trait.
///
/// Every backend gives the same guarantees: `load` replays the journal of
/// an apply that did not finish; a journal entry is durable when `put`
/// returns (so an intent is recorded before the statement it announces
/// runs); `lock` excludes every other holder and is released when its
/// process dies, however it dies.
pub trait StateBackend: Send + Sync {
    /// Where the state is, for messages (never a password).
    fn describe(&self) -> String;
    /// Whether a state has been written here yet.
    fn exists(&self) -> Result<bool, StateError>;
    /// The state with any journal of an unfinished apply replayed.
    fn load(&self) -> Result<State, StateError>;
    /// Write a brand-new state unless one exists (its lineage is then fixed).
    fn init(&self, state: &State) -> Result<(), StateError>;
    /// Replace the state and clear the journal. A shared backend refuses
    /// when the state changed since this process loaded it.
    fn save(&self, state: &State) -> Result<(), StateError>;
    /// The journal to which an apply appends one entry per step.
    fn journal(&self) -> Result<Journal, StateError>;
    /// Take the state lock, waiting up to `timeout`.
    fn lock(&self, operation: &str, timeout: Duration) -> Result<StateLock, StateError>;
    /// Clear a lock left behind; `terminate`: also end a live holder where the
    /// backend can (the postgres backend ends the holder's database session).
    fn force_unlock(&self, terminate: bool) -> Result<Unlock, StateError>;
}

/// What `force-unlock` found.
#[derive(Debug, PartialEq)]
pub enum Unlock {
    NotLocked,
    /// No live holder; what the last one left (its description) was cleared.
    Cleared(String),
    /// A live holder, left alone.
    Held(String),
    /// A live holder whose session was ended.
    Terminated(String),
}

/// The backend a configuration's `dbctl { state { ... } }` block names.
pub fn open_backend(
    settings: &crate::model::StateSettings,
    dbctl_dir: &Path,
) -> Result<std::sync::Arc<dyn StateBackend>, StateError> {
    match settings.backend.as_str() {
        "postgres" => {
            let url = settings.url.clone().unwrap_or_default();
            Ok(std::sync::Arc::new(postgres::PgState::new(
                &url,
                settings.schema.as_deref().unwrap_or(postgres::DEFAULT_SCHEMA),
                settings.key.as_deref().unwrap_or(postgres::DEFAULT_KEY),
            )?))
        }
        _ => Ok(std::sync::Arc::new(LocalState::new(dbctl_dir))),
    }
}

/// Replay journal entries (one JSON document each) onto `state`; returns
/// whether any entry counted, and how many were torn.
fn replay<'a>(state: &mut State, lines: impl Iterator<Item = &'a [u8]>) -> (bool, usize) {
    let mut replayed = false;
    let mut torn = 0;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        // A line cut short by a kill or a full disk is skipped; the
        // lines after it (appended on a fresh line) still count.
        let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
            torn += 1;
            continue;
        };
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
    (replayed, torn)
}

/// A state document; one of a newer format is named as such rather than
/// "not a state file".
pub fn parse_state(bytes: &[u8], origin: &Path) -> Result<State, StateError> {
    parse_versioned(bytes, origin, |s: &State| s.version)
}

/// `parse_state` without the recorded live state (`State::live` is None;
/// its JSON is skipped, not parsed): for a plan that reads the servers, which
/// never looks at it. At thousands of objects it is a third of the state.
pub fn parse_state_without_live(bytes: &[u8], origin: &Path) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct WithoutLive {
        version: u32,
        lineage: String,
        serial: u64,
        resources: BTreeMap<String, StateResource>,
    }
    let s = parse_versioned(bytes, origin, |s: &WithoutLive| s.version)?;
    Ok(State { version: s.version, lineage: s.lineage, serial: s.serial, resources: s.resources, live: None })
}

/// Parse a state file once; a file of another version is reported as such,
/// whether or not it parses as this one (its version is read on its own
/// only when the whole does not parse: at thousands of objects a second
/// pass over the file cost a tenth of its parse).
fn parse_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    origin: &Path,
    version_of: impl Fn(&T) -> u32,
) -> Result<T, StateError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(s) if version_of(&s) == STATE_VERSION => Ok(s),
        Ok(s) => Err(StateError::Version(origin.to_path_buf(), version_of(&s))),
        Err(e) => match serde_json::from_slice::<Version>(bytes) {
            Ok(v) if v.version != STATE_VERSION => Err(StateError::Version(origin.to_path_buf(), v.version)),
            _ => Err(StateError::Corrupt(origin.to_path_buf(), e.to_string())),
        },
    }
}

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
    /// An intent: recorded just before the statement that creates the object
    /// runs, because the server may finish it even when dbctl dies. The next
    /// plan adopts the object if it exists, and forgets the intent if not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub lineage: String,
    pub serial: u64,
    pub resources: BTreeMap<String, StateResource>,
    /// The servers as the last apply (or destroy) read them after it ran:
    /// what `plan --refresh=false` compares with, where the servers cannot
    /// be reached. Never a password: a live server holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSnapshot>,
}

/// Every server as one apply read it, and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSnapshot {
    /// When the servers were read (RFC 3339, UTC).
    pub read_at: String,
    /// The state serial these reads go with: a state changed since (an
    /// interrupted apply, `state rm`, `state push`) is not described by them.
    pub serial: u64,
    /// Server address → what was read there.
    pub servers: BTreeMap<String, crate::engine::LiveServer>,
    /// Server → role → databases holding its objects (not part of a live
    /// role's serialised form, which fingerprints hash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_in: BTreeMap<String, BTreeMap<String, std::collections::BTreeSet<String>>>,
}

impl LiveSnapshot {
    pub fn new(
        live: &BTreeMap<crate::model::Address, crate::engine::LiveServer>,
        serial: u64,
        read_at: time::OffsetDateTime,
    ) -> LiveSnapshot {
        let mut depends_in = BTreeMap::new();
        for (addr, l) in live {
            let deps: BTreeMap<String, std::collections::BTreeSet<String>> = l
                .roles
                .iter()
                .filter(|(_, r)| !r.depends_in.is_empty())
                .map(|(n, r)| (n.clone(), r.depends_in.clone()))
                .collect();
            if !deps.is_empty() {
                depends_in.insert(addr.to_string(), deps);
            }
        }
        LiveSnapshot {
            read_at: read_at
                .replace_nanosecond(0)
                .unwrap_or(read_at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            serial,
            servers: live.iter().map(|(a, l)| (a.to_string(), l.clone())).collect(),
            depends_in,
        }
    }

    /// One server as it was read, with what its serialised form leaves out.
    pub fn server(&self, addr: &str) -> Option<crate::engine::LiveServer> {
        let mut l = self.servers.get(addr)?.clone();
        for (role, dbs) in self.depends_in.get(addr).into_iter().flatten() {
            if let Some(r) = l.roles.get_mut(role) {
                r.depends_in = dbs.clone();
            }
        }
        Some(l)
    }
}

/// The state file format this build reads and writes.
pub const STATE_VERSION: u32 = 1;

impl State {
    pub fn new() -> State {
        State {
            version: STATE_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            resources: BTreeMap::new(),
            live: None,
        }
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
        "{0} has state format version {1}, but this dbctl reads version {STATE_VERSION}; \
         it was written by another dbctl release. Use that release, or a newer one"
    )]
    Version(PathBuf, u32),
    #[error(
        "the state is locked by another dbctl ({0}); it runs one apply at a time. Wait for it, or use --lock-timeout. \
         If that process is gone, the lock is released with it; `dbctl force-unlock` clears what it left behind"
    )]
    Locked(String),
    /// The shared state backend failed (connection, query).
    #[error("{0}")]
    Backend(String),
    #[error(
        "{0} changed while this dbctl was working (serial {1} when read, {2} now): another dbctl wrote it in \
         between, without the state lock. This write was refused so as not to undo theirs; run `dbctl plan` to see \
         where things stand"
    )]
    Conflict(String, u64, String),
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

    /// Whether a state has been written here yet.
    pub fn exists(&self) -> bool {
        self.state_path().exists() || self.journal_path().exists()
    }

    /// The state with any journal of an unfinished apply replayed.
    pub fn load(&self) -> Result<State, StateError> {
        self.load_with(true)
    }

    /// `load`, without the recorded live state (see `parse_state_without_live`).
    pub fn load_without_live(&self) -> Result<State, StateError> {
        self.load_with(false)
    }

    fn load_with(&self, live: bool) -> Result<State, StateError> {
        let p = self.state_path();
        let mut state: State = match std::fs::read(&p) {
            Ok(b) if live => parse_state(&b, &p)?,
            Ok(b) => parse_state_without_live(&b, &p)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
            Err(e) => return Err(StateError::Io("read", p, e)),
        };
        let jp = self.journal_path();
        let f = match File::open(&jp) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(StateError::Io("read", jp, e)),
        };
        if !f.metadata().map_err(io("read", &jp))?.is_file() {
            return Err(StateError::Corrupt(jp, "not a regular file".into()));
        }
        let mut lines = Vec::new();
        for line in BufReader::new(f).split(b'\n') {
            lines.push(line.map_err(io("read", &jp))?);
        }
        let (replayed, torn) = replay(&mut state, lines.iter().map(Vec::as_slice));
        if torn > 0 {
            tracing::warn!("{}: skipped {torn} incomplete line(s) left by an interrupted write", jp.display());
        }
        if replayed {
            state.serial += 1;
        }
        Ok(state)
    }

    /// Write a brand-new state (no resources) unless one exists: its lineage
    /// is then fixed, so a plan saved before the first apply still applies.
    pub fn init(&self, state: &State) -> Result<(), StateError> {
        if self.exists() {
            return Ok(());
        }
        let p = self.state_path();
        let tmp = p.with_extension(format!("init{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        write_private(&tmp, &bytes)?;
        // A hard link never replaces: if another process initialised it first, theirs stands.
        let r = std::fs::hard_link(&tmp, &p);
        let _ = std::fs::remove_file(&tmp);
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(StateError::Io("create", p, e)),
        }
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
        let mut f = f;
        // A journal whose last line was cut short gets a fresh line first,
        // so the next entry is not glued onto the torn one.
        let len = f.metadata().map_err(io("read", &p))?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut r = File::open(&p).map_err(io("read", &p))?;
            r.seek(SeekFrom::Start(len - 1)).map_err(io("read", &p))?;
            let mut last = [0u8];
            r.read_exact(&mut last).map_err(io("read", &p))?;
            if last[0] != b'\n' {
                f.write_all(b"\n").map_err(io("append to", &p))?;
            }
        }
        Ok(Journal::new(Box::new(f), p.display().to_string()))
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
                    return Ok(StateLock::new(FileLock(f)));
                }
                Ok(false) | Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(100)),
                _ => {
                    let holder = std::fs::read_to_string(&p).unwrap_or_default();
                    return Err(StateError::Locked(if holder.is_empty() { "unknown holder".into() } else { holder }));
                }
            }
        }
    }

    /// Force-unlock of the local backend: the lock is a kernel file lock, so
    /// a lock that can be taken has no holder; one that cannot is held by a
    /// running dbctl, which is never unlocked under it.
    pub fn force_unlock_local(&self) -> Result<Unlock, StateError> {
        let holder = std::fs::read_to_string(self.lock_path()).unwrap_or_default().trim().to_string();
        match self.lock("force-unlock", Duration::ZERO) {
            Ok(lock) => {
                drop(lock);
                Ok(if holder.is_empty() { Unlock::NotLocked } else { Unlock::Cleared(holder) })
            }
            Err(_) => Ok(Unlock::Held(holder)),
        }
    }
}

impl StateBackend for LocalState {
    fn describe(&self) -> String {
        self.state_path().display().to_string()
    }
    fn exists(&self) -> Result<bool, StateError> {
        Ok(LocalState::exists(self))
    }
    fn load(&self) -> Result<State, StateError> {
        LocalState::load(self)
    }
    fn init(&self, state: &State) -> Result<(), StateError> {
        LocalState::init(self, state)
    }
    fn save(&self, state: &State) -> Result<(), StateError> {
        LocalState::save(self, state)
    }
    fn journal(&self) -> Result<Journal, StateError> {
        LocalState::journal(self)
    }
    fn lock(&self, operation: &str, timeout: Duration) -> Result<StateLock, StateError> {
        LocalState::lock(self, operation, timeout)
    }
    fn force_unlock(&self, _terminate: bool) -> Result<Unlock, StateError> {
        self.force_unlock_local()
    }
}

/// Held while applying; released on drop, and by the kernel (local file
/// lock) or the database server (advisory lock of a session) if the process
/// dies.
pub struct StateLock {
    _guard: Box<dyn Send>,
}

impl StateLock {
    pub fn new(guard: impl Send + 'static) -> StateLock {
        StateLock { _guard: Box::new(guard) }
    }
}

struct FileLock(File);

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
        let _ = fs4::fs_std::FileExt::unlock(&self.0);
    }
}

/// Where journal entries go: an append-only file, or rows of a table.
pub trait JournalSink: Send {
    /// Append one entry (a JSON line ending in a newline); durable when it returns.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()>;
}

impl JournalSink for File {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.write_all(line)
    }
}

pub struct Journal {
    sink: Box<dyn JournalSink>,
    /// Where it is, for messages.
    location: String,
    /// Entries written (and synced to the file) so far.
    written: usize,
    /// The first write that failed: nothing after it was recorded.
    broken: Option<String>,
}

impl Journal {
    pub fn new(sink: Box<dyn JournalSink>, location: String) -> Journal {
        Journal { sink, location, written: 0, broken: None }
    }
    /// The first failed write, if any: the journal holds every step up to it and none after.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }
    /// How many entries this apply wrote.
    pub fn written(&self) -> usize {
        self.written
    }
    /// Where the journal is (a file, or a table of the state database).
    pub fn location(&self) -> &str {
        &self.location
    }
    pub fn put(&mut self, address: &str, resource: &StateResource) -> Result<(), StateError> {
        self.append(&Entry::Put { address: address.to_string(), resource: resource.clone() })
    }
    pub fn remove(&mut self, address: &str) -> Result<(), StateError> {
        self.append(&Entry::Remove { address: address.to_string() })
    }
    fn append(&mut self, e: &Entry) -> Result<(), StateError> {
        if let Some(first) = &self.broken {
            // Once a write failed, later lines could land after a torn one: refuse them all.
            return Err(StateError::Io(
                "append to",
                PathBuf::from(&self.location),
                std::io::Error::other(format!("an earlier write failed ({first})")),
            ));
        }
        let mut line = serde_json::to_vec(e).expect("journal entry serialises");
        line.push(b'\n');
        match self.sink.append(&line) {
            Ok(()) => {
                self.written += 1;
                Ok(())
            }
            Err(err) => {
                self.broken = Some(err.to_string());
                Err(StateError::Io("append to", PathBuf::from(&self.location), err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The recorded live state survives the state file whole, including what
    /// a live role's serialised form leaves out (where its objects are).
    #[test]
    fn the_recorded_live_state_round_trips() {
        let mut live = crate::engine::LiveServer { exists: true, admin: "postgres".into(), ..Default::default() };
        let role = crate::engine::LiveRole {
            login: true,
            depends_in: ["app".to_string()].into(),
            connection_limit: -1,
            ..Default::default()
        };
        live.roles.insert("owner".into(), role);
        let addr = crate::model::Address::parse("server.main").unwrap();
        let at = time::macros::datetime!(2026-12-02 00:41:07.123 UTC);
        let mut state = State::new();
        state.serial = 4;
        state.live = Some(LiveSnapshot::new(&BTreeMap::from([(addr, live.clone())]), 4, at));
        let back = parse_state(&serde_json::to_vec(&state).unwrap(), Path::new("state.json")).unwrap();
        let snap = back.live.as_ref().unwrap();
        assert_eq!(snap.read_at, "2026-12-02T00:41:07Z");
        assert_eq!(snap.serial, 4);
        assert_eq!(snap.server("server.main"), Some(live));
        assert_eq!(snap.server("server.other"), None);
        // A state written before the record existed reads as having none.
        let old = r#"{"version":1,"lineage":"x","serial":1,"resources":{}}"#;
        assert_eq!(parse_state(old.as_bytes(), Path::new("state.json")).unwrap().live, None);
    }

    fn res(name: &str) -> StateResource {
        StateResource {
            kind: "database".into(),
            server: Some("server.main".into()),
            name: name.into(),
            attributes: serde_json::json!({}),
            password_version: None,
            pending: false,
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
    fn lines_after_a_torn_line_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalState::new(dir.path());
        let mut j = st.journal().unwrap();
        j.put("database.a", &res("a")).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(dir.path().join("state.journal")).unwrap();
        f.write_all(b"{\"put\":{\"address\":\"database.torn\"").unwrap();
        drop(f);
        // The next apply appends after the torn line.
        let mut j = st.journal().unwrap();
        j.put("database.b", &res("b")).unwrap();
        drop(j);
        let s = st.load().unwrap();
        assert_eq!(s.resources.keys().collect::<Vec<_>>(), vec!["database.a", "database.b"]);
    }

    #[test]
    fn a_failed_write_is_reported_and_nothing_after_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("state.journal")).unwrap();
        let st = LocalState::new(dir.path());
        // A device is never read as a journal (reading /dev/full never ends).
        assert!(matches!(st.load(), Err(StateError::Corrupt(..))));
        let mut j = st.journal().unwrap();
        let e = j.put("database.a", &res("a")).unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert!(j.broken().is_some());
        assert_eq!(j.written(), 0);
        assert!(j.put("database.b", &res("b")).is_err());
    }

    #[test]
    fn a_state_of_another_version_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("state.json"),
            r#"{"version": 7, "lineage": "x", "serial": 1, "resources": {}}"#,
        )
        .unwrap();
        let e = LocalState::new(dir.path()).load().unwrap_err();
        assert!(matches!(e, StateError::Version(_, 7)), "{e}");
        assert!(e.to_string().contains("format version 7"), "{e}");
    }

    #[test]
    fn init_fixes_the_lineage_once() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalState::new(dir.path());
        assert!(!st.exists());
        let first = State::new();
        st.init(&first).unwrap();
        st.init(&State::new()).unwrap();
        assert_eq!(st.load().unwrap().lineage, first.lineage);
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
