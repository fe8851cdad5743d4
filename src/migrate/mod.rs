//! SQL migrations: the files of a `migrations` block, the tracking table in
//! their database (sqlx's `_sqlx_migrations` layout, so `sqlx migrate info`
//! reads it too), the ordering and integrity rules, and the lint.
//! Everything here but `read_applied` is pure.

pub mod lint;
pub mod split;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::model::EngineKind;

/// The tracking table (sqlx's, so its own tools agree with dbctl).
pub const TABLE: &str = "_sqlx_migrations";
/// First line of an up file that must not run in a transaction.
pub const NO_TRANSACTION: &str = "-- dbctl:no-transaction";

/// One migration on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub version: i64,
    /// The part after `NNNN_`, e.g. `create_loans`.
    pub name: String,
    /// The up file's path as the user wrote it (the block's `dir` joined with the file name).
    pub up_path: String,
    pub up_sql: String,
    pub down_path: Option<String>,
    pub down_sql: Option<String>,
    /// SHA-384 of the up file, hex (what sqlx records).
    pub checksum: String,
    pub no_transaction: bool,
}

impl File {
    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha384::digest(sql.as_bytes()))
}

pub fn is_no_transaction(sql: &str) -> bool {
    sql.lines().next().is_some_and(|l| l.trim_end() == NO_TRANSACTION)
}

/// `NNNN_name.up.sql` → (NNNN, name, true); `.down.sql` → false.
fn parse_name(file: &str) -> Option<(i64, String, bool)> {
    let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, true)
    } else if let Some(s) = file.strip_suffix(".down.sql") {
        (s, false)
    } else {
        return None;
    };
    let (num, name) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some((num.parse().ok()?, name.to_string(), up))
}

/// The migrations of a directory, ordered by version. `shown` is the
/// directory as the configuration names it (for messages).
pub fn scan(dir: &Path, shown: &str) -> Result<Vec<File>, Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("cannot read {shown}: {e}")]),
    };
    let mut errors = Vec::new();
    let mut ups: BTreeMap<i64, File> = BTreeMap::new();
    let mut downs: Vec<(i64, String, String, String)> = Vec::new();
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let join = |f: &str| format!("{}/{f}", shown.trim_end_matches('/'));
    for f in names {
        if !f.ends_with(".sql") {
            continue;
        }
        let Some((version, name, up)) = parse_name(&f) else {
            errors.push(format!(
                "{}: not a migration file name; name it NNNN_name.up.sql (or .down.sql for its down file)",
                join(&f)
            ));
            continue;
        };
        let sql = match std::fs::read_to_string(dir.join(&f)) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("cannot read {}: {e}", join(&f)));
                continue;
            }
        };
        if !up {
            downs.push((version, name, join(&f), sql));
            continue;
        }
        if let Some(other) = ups.get(&version) {
            errors.push(format!(
                "{} and {} have the same version {version}; give each migration its own number",
                other.up_path,
                join(&f)
            ));
            continue;
        }
        ups.insert(
            version,
            File {
                version,
                name,
                up_path: join(&f),
                checksum: checksum(&sql),
                no_transaction: is_no_transaction(&sql),
                up_sql: sql,
                down_path: None,
                down_sql: None,
            },
        );
    }
    for (version, name, path, sql) in downs {
        match ups.get_mut(&version) {
            Some(u) if u.name == name => {
                u.down_path = Some(path);
                u.down_sql = Some(sql);
            }
            _ => errors.push(format!("{path} has no up file; add {:04}_{name}.up.sql or remove it", version)),
        }
    }
    if errors.is_empty() {
        Ok(ups.into_values().collect())
    } else {
        Err(errors)
    }
}

/// What the plan needs of one `migrations` block.
#[derive(Debug, Clone)]
pub struct Status {
    pub database: String,
    pub server: crate::model::Address,
    pub engine: EngineKind,
    pub files: Vec<File>,
    pub applied: Vec<Applied>,
    /// Pending migrations, in order; or the refusals.
    pub pending: Result<Vec<MigrationStep>, Vec<String>>,
    pub findings: Vec<lint::Finding>,
}

/// One row of the tracking table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
    /// Nanoseconds (sqlx's unit).
    pub duration_ns: i64,
    pub success: bool,
}

/// Pending migrations in the order they run, or the refusals (each naming its file).
pub fn pending<'a>(
    files: &'a [File],
    applied: &[Applied],
    out_of_order: bool,
    shown_dir: &str,
) -> Result<Vec<&'a File>, Vec<String>> {
    let mut errors = Vec::new();
    let by_version: BTreeMap<i64, &File> = files.iter().map(|f| (f.version, f)).collect();
    for a in applied {
        match by_version.get(&a.version) {
            None => errors.push(format!(
                "{}/{:04}_{}.up.sql was applied (version {}) and is gone; restore the file: an applied migration stays in the directory",
                shown_dir.trim_end_matches('/'),
                a.version,
                a.name,
                a.version
            )),
            Some(_) if !a.success => errors.push(format!(
                "version {} ({}) is recorded as failed in {TABLE}; repair the database by hand, then delete its row",
                a.version, a.name
            )),
            Some(f) if f.checksum != a.checksum => errors.push(format!(
                "{} was changed after it was applied (its checksum differs from the one recorded); restore it and put the change in a new migration",
                f.up_path
            )),
            _ => {}
        }
    }
    let newest = applied.iter().map(|a| a.version).max();
    let done: std::collections::BTreeSet<i64> = applied.iter().map(|a| a.version).collect();
    let todo: Vec<&File> = files.iter().filter(|f| !done.contains(&f.version)).collect();
    if let (Some(newest), false) = (newest, out_of_order) {
        for f in todo.iter().filter(|f| f.version < newest) {
            errors.push(format!(
                "{} is older than version {newest}, the newest applied; renumber it after {newest}, or set out_of_order = true",
                f.up_path
            ));
        }
    }
    if errors.is_empty() {
        Ok(todo)
    } else {
        Err(errors)
    }
}

/// What a plan step carries to run one migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStep {
    pub version: i64,
    pub name: String,
    pub file: String,
    pub checksum: String,
    pub sql: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_transaction: bool,
    /// PostgreSQL: the database's owner, when it is not the admin. The
    /// migration runs as it (SET ROLE), so what it creates is the owner's
    /// and the owner's default privileges (the grants' `tables = "*"`) cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl From<&File> for MigrationStep {
    fn from(f: &File) -> Self {
        MigrationStep {
            version: f.version,
            name: f.name.clone(),
            file: f.up_path.clone(),
            checksum: f.checksum.clone(),
            sql: f.up_sql.clone(),
            no_transaction: f.no_transaction,
            role: None,
        }
    }
}

/// Line and column (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The first statement of `sql` at or after a server error's 1-based character
/// position: the line it starts on, for "file:line" in a failure.
pub fn error_line(sql: &str, position: Option<usize>) -> Option<usize> {
    let p = position?;
    let offset = sql.char_indices().nth(p.saturating_sub(1)).map_or(sql.len(), |(i, _)| i);
    Some(line_col(sql, offset).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(v: i64, sql: &str) -> File {
        File {
            version: v,
            name: format!("m{v}"),
            up_path: format!("m/{v:04}_m{v}.up.sql"),
            up_sql: sql.into(),
            down_path: None,
            down_sql: None,
            checksum: checksum(sql),
            no_transaction: is_no_transaction(sql),
        }
    }
    fn applied(f: &File) -> Applied {
        Applied {
            version: f.version,
            name: f.name.clone(),
            checksum: f.checksum.clone(),
            applied_at: String::new(),
            duration_ns: 0,
            success: true,
        }
    }

    #[test]
    fn names_parse_and_order_by_number() {
        assert_eq!(parse_name("0002_add_x.up.sql"), Some((2, "add_x".into(), true)));
        assert_eq!(parse_name("10_add_x.down.sql"), Some((10, "add_x".into(), false)));
        assert_eq!(parse_name("add_x.up.sql"), None);
        assert_eq!(parse_name("0002.up.sql"), None);
        let dir = tempfile::tempdir().unwrap();
        for f in ["10_c.up.sql", "9_b.up.sql", "0001_a.up.sql", "0001_a.down.sql"] {
            std::fs::write(dir.path().join(f), "SELECT 1;").unwrap();
        }
        let files = scan(dir.path(), "m").unwrap();
        assert_eq!(files.iter().map(|f| f.version).collect::<Vec<_>>(), [1, 9, 10]);
        assert_eq!(files[0].down_path.as_deref(), Some("m/0001_a.down.sql"));
        std::fs::write(dir.path().join("bad.sql"), "").unwrap();
        let e = scan(dir.path(), "m").unwrap_err();
        assert!(e[0].contains("m/bad.sql"), "{e:?}");
    }

    #[test]
    fn refusals_name_the_file() {
        let files = vec![file(1, "a"), file(2, "b"), file(3, "c")];
        let mut a = vec![applied(&files[0]), applied(&files[2])];
        let e = pending(&files, &a, false, "m").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("m/0002_m2.up.sql is older than version 3"), "{e:?}");
        assert_eq!(pending(&files, &a, true, "m").unwrap()[0].version, 2);
        a[0].checksum = checksum("edited");
        let e = pending(&files, &a, true, "m").unwrap_err();
        assert!(e[0].starts_with("m/0001_m1.up.sql was changed"), "{e:?}");
        let e = pending(&files[1..], &[applied(&files[0])], false, "m").unwrap_err();
        assert!(e[0].starts_with("m/0001_m1.up.sql was applied"), "{e:?}");
        assert_eq!(pending(&files, &[applied(&files[0])], false, "m").unwrap().len(), 2);
    }

    #[test]
    fn no_transaction_is_the_first_line_only() {
        assert!(is_no_transaction("-- dbctl:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);"));
        assert!(!is_no_transaction("SELECT 1;\n-- dbctl:no-transaction"));
    }

    #[test]
    fn error_positions_become_lines() {
        assert_eq!(error_line("SELECT 1;\nSELEC 2;", Some(11)), Some(2));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
