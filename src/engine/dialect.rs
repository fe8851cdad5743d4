//! The statements whose text depends on the engine, in one place.
//!
//! The diff renders them with the server's dialect when the plan is made and
//! stores the text in the step; apply renders them again with the dialect of
//! the server it runs on and refuses a step whose stored text differs, so the
//! text a plan shows is the text that runs. A password statement is shown
//! with `(sensitive)` where its credential goes; apply puts the credential
//! there (see `with_password`), nothing else changes.
//!
//! Text in, text out: no connection, no configuration (only a SCRAM
//! verifier's salt is random).

use crate::engine::sql::{mysql_account, mysql_ident, mysql_literal, pg_ident, pg_literal};
use crate::model::Engine;

/// What a plan shows in place of a secret.
pub const SENSITIVE: &str = "(sensitive)";

/// The SQL spelling of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MySQL and MariaDB (they spell these statements alike).
    Mysql,
}

impl Dialect {
    pub fn of(engine: Engine) -> Dialect {
        match engine {
            Engine::Postgres => Dialect::Postgres,
            Engine::Mysql => Dialect::Mysql,
        }
    }

    /// An identifier, always quoted (case, unicode and hostile characters survive).
    pub fn quote_ident(self, name: &str) -> String {
        match self {
            Dialect::Postgres => pg_ident(name),
            Dialect::Mysql => mysql_ident(name),
        }
    }

    /// `DROP DATABASE`. `force`: PostgreSQL ends the database's sessions
    /// (`WITH (FORCE)`); MySQL has no such clause (nor refuses a database in
    /// use), so there it changes nothing.
    pub fn drop_database(self, name: &str, force: bool) -> String {
        match self {
            Dialect::Postgres => {
                format!("DROP DATABASE {}{}", self.quote_ident(name), if force { " WITH (FORCE)" } else { "" })
            }
            Dialect::Mysql => format!("DROP DATABASE {}", self.quote_ident(name)),
        }
    }

    /// Whom a password statement names: the role on PostgreSQL; the account
    /// `'user'@'host'` on MySQL (`'name'` without a host).
    pub fn password_account(self, name: &str, host: Option<&str>) -> String {
        match self {
            Dialect::Postgres => pg_ident(name),
            Dialect::Mysql => mysql_account(name, host),
        }
    }

    /// The statement that sets `account`'s password (and on MySQL unlocks the
    /// account), as a plan shows and stores it: `(sensitive)` where the
    /// credential goes.
    pub fn set_password(self, account: &str) -> String {
        self.password_statement(account, SENSITIVE)
    }

    /// The statement `set_password` rendered (`shown`, from a plan) with the
    /// credential of `password` in place of `(sensitive)`: the text that runs.
    /// Only a verifier or hash of the password reaches the server (SCRAM-SHA-256
    /// on PostgreSQL, what psql's \password sends; the mysql_native_password
    /// hash on MySQL, which MariaDB and MySQL 8 both read), so its statement
    /// and error logs never see the password. A `shown` that is not this
    /// dialect's statement is refused (the error never holds the password).
    pub fn with_password(self, shown: &str, password: &str) -> Result<String, String> {
        let account = self.account_in(shown).ok_or_else(|| {
            format!("the plan's password statement `{shown}` is not a {} one: make the plan again", self.name())
        })?;
        let credential = match self {
            Dialect::Postgres => pg_literal(&postgres_protocol::password::scram_sha_256(password.as_bytes())),
            Dialect::Mysql => mysql_literal(&mysql_native_hash(password)),
        };
        Ok(self.password_statement(account, &credential))
    }

    /// The account of a statement `set_password` rendered.
    fn account_in(self, shown: &str) -> Option<&str> {
        // The statement's fixed text around its account, from the one function that writes it.
        let marker = "\u{0}";
        let template = self.password_statement(marker, SENSITIVE);
        let (head, tail) = template.split_once(marker)?;
        shown.strip_prefix(head)?.strip_suffix(tail).filter(|a| !a.is_empty())
    }

    fn password_statement(self, account: &str, credential: &str) -> String {
        match self {
            Dialect::Postgres => format!("ALTER ROLE {account} PASSWORD {credential}"),
            Dialect::Mysql => {
                format!("ALTER USER {account} IDENTIFIED WITH mysql_native_password AS {credential} ACCOUNT UNLOCK")
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL/MariaDB",
        }
    }
}

/// The mysql_native_password hash: `*` and the hex of SHA1(SHA1(password)),
/// as MySQL's PASSWORD() computes it.
fn mysql_native_hash(password: &str) -> String {
    use sha1::{Digest, Sha1};
    format!("*{}", hex::encode_upper(Sha1::digest(Sha1::digest(password.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "we`ird\"'; db ü名";

    #[test]
    fn drop_database_in_each_dialect_with_a_hostile_name() {
        assert_eq!(Dialect::Postgres.drop_database(HOSTILE, false), "DROP DATABASE \"we`ird\"\"'; db ü名\"");
        assert_eq!(Dialect::Postgres.drop_database("app", true), "DROP DATABASE \"app\" WITH (FORCE)");
        assert_eq!(Dialect::Mysql.drop_database(HOSTILE, false), "DROP DATABASE `we``ird\"'; db ü名`");
        assert_eq!(Dialect::Mysql.drop_database("app", true), "DROP DATABASE `app`", "MySQL has no FORCE");
        assert_eq!(Dialect::of(Engine::Mysql).quote_ident("a`b"), "`a``b`");
        assert_eq!(Dialect::of(Engine::Postgres).quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn the_password_statement_that_runs_is_the_one_shown_with_its_credential() {
        let my = Dialect::Mysql.password_account("o'k; `x` ü", Some("%"));
        let shown = Dialect::Mysql.set_password(&my);
        assert_eq!(
            shown,
            "ALTER USER 'o''k; `x` ü'@'%' IDENTIFIED WITH mysql_native_password AS (sensitive) ACCOUNT UNLOCK"
        );
        let run = Dialect::Mysql.with_password(&shown, "pencil").unwrap();
        // SHA1(SHA1("pencil")), as MySQL's PASSWORD() computes it (checked with Python's hashlib).
        let hash = "'*7614BE58636C810A9D8970A50B3B2A78450413E4'";
        assert_eq!(run, shown.replace(SENSITIVE, hash));
        assert!(!run.contains("pencil"));

        let pg = Dialect::Postgres.password_account("Ro\"le (sensitive)", Some("ignored"));
        let shown = Dialect::Postgres.set_password(&pg);
        assert_eq!(shown, "ALTER ROLE \"Ro\"\"le (sensitive)\" PASSWORD (sensitive)");
        let run = Dialect::Postgres.with_password(&shown, "pencil").unwrap();
        let credential = run.strip_prefix("ALTER ROLE \"Ro\"\"le (sensitive)\" PASSWORD ").unwrap();
        assert!(credential.starts_with("'SCRAM-SHA-256$4096:") && credential.ends_with('\''), "{run}");
        assert!(!run.contains("pencil"));

        // A statement of the other dialect (or no password statement) is refused, and says no password.
        let err = Dialect::Postgres.with_password(&Dialect::Mysql.set_password(&my), "pencil").unwrap_err();
        assert!(err.contains("make the plan again") && !err.contains("pencil"), "{err}");
        assert!(Dialect::Mysql.with_password("DROP DATABASE `x`", "pencil").is_err());
    }
}
