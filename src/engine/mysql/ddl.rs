//! Statements for MySQL / MariaDB servers: accounts are `'user'@'host'`,
//! roles are granted and made the default role, databases have a character
//! set and collation but no owner, and grants are at database level.

use crate::engine::sql::{mysql_account, mysql_ident, mysql_literal};
use crate::engine::{LiveRole, Stmt};
use crate::model::{DesiredDb, DesiredRole};

fn account(d: &DesiredRole) -> String {
    mysql_account(&d.name, if d.login { d.host.as_deref() } else { None })
}

fn max_connections(limit: i64) -> i64 {
    // MySQL: 0 is unlimited.
    limit.max(0)
}

/// MySQL 8 rather than MariaDB (whose version string says so); a server
/// not read yet is an embedded MariaDB.
pub fn is_mysql8(live: &crate::engine::LiveServer) -> bool {
    !live.version.is_empty() && !live.version.contains("MariaDB")
}

/// The roles to activate at login. MariaDB has one default role (the first
/// `member_of`); MySQL 8 takes them all. With none, NONE.
fn default_role(d: &DesiredRole, mysql8: bool) -> String {
    match (d.member_of.iter().next(), mysql8) {
        (None, false) => format!("SET DEFAULT ROLE NONE FOR {}", account(d)),
        (None, true) => format!("SET DEFAULT ROLE NONE TO {}", account(d)),
        (Some(r), false) => format!("SET DEFAULT ROLE {} FOR {}", mysql_literal(r), account(d)),
        (Some(_), true) => format!("SET DEFAULT ROLE ALL TO {}", account(d)),
    }
}

/// A user is created locked: it is unlocked when its password is set, so
/// there is never an account that logs in with an empty password.
pub fn create_role(d: &DesiredRole, mysql8: bool) -> Vec<Stmt> {
    let mut steps = Vec::new();
    if d.login {
        steps.push(Stmt::admin(format!(
            "CREATE USER {} WITH MAX_USER_CONNECTIONS {} ACCOUNT LOCK",
            account(d),
            max_connections(d.connection_limit)
        )));
    } else {
        steps.push(Stmt::admin(format!("CREATE ROLE {}", account(d))));
    }
    for m in &d.member_of {
        steps.push(Stmt::admin(format!("GRANT {} TO {}", mysql_literal(m), account(d))));
    }
    if d.login && !d.member_of.is_empty() {
        steps.push(Stmt::admin(default_role(d, mysql8)));
    }
    steps
}

#[allow(clippy::too_many_arguments)]
pub fn update_role(d: &DesiredRole, live: &LiveRole, changed: &[&str], members: bool, mysql8: bool) -> Vec<Stmt> {
    let mut steps = Vec::new();
    for ch in changed {
        match *ch {
            "host" if d.login => steps.insert(
                0,
                Stmt::admin(format!("RENAME USER {} TO {}", mysql_account(&d.name, Some(&live.host)), account(d))),
            ),
            "connection_limit" if d.login => steps.push(Stmt::admin(format!(
                "ALTER USER {} WITH MAX_USER_CONNECTIONS {}",
                account(d),
                max_connections(d.connection_limit)
            ))),
            _ => {}
        }
    }
    if members && d.member_of != live.member_of {
        for m in d.member_of.difference(&live.member_of) {
            steps.push(Stmt::admin(format!("GRANT {} TO {}", mysql_literal(m), account(d))));
        }
        for m in live.member_of.difference(&d.member_of) {
            steps.push(Stmt::admin(format!("REVOKE {} FROM {}", mysql_literal(m), account(d))));
        }
        if d.login {
            steps.push(Stmt::admin(default_role(d, mysql8)));
        }
    }
    steps
}

pub fn drop_role(name: &str, live: &LiveRole) -> Stmt {
    if live.login {
        Stmt::admin(format!("DROP USER {}", mysql_account(name, Some(&live.host))))
    } else {
        Stmt::admin(format!("DROP ROLE {}", mysql_literal(name)))
    }
}

fn charset(d: &DesiredDb) -> String {
    let mut s = String::new();
    if let Some(e) = &d.encoding {
        s.push_str(&format!(" CHARACTER SET {}", mysql_literal(e)));
    }
    if let Some(c) = &d.collation {
        s.push_str(&format!(" COLLATE {}", mysql_literal(c)));
    }
    s
}

pub fn create_database(d: &DesiredDb) -> Stmt {
    Stmt::admin(format!("CREATE DATABASE {}{}", mysql_ident(&d.name), charset(d)))
}

/// Character set and collation change in place.
pub fn alter_database(d: &DesiredDb, changed: &[&str]) -> Option<Stmt> {
    let relevant = changed.iter().any(|c| *c == "encoding" || *c == "collation");
    (relevant && !charset(d).is_empty())
        .then(|| Stmt::admin(format!("ALTER DATABASE {}{}", mysql_ident(&d.name), charset(d))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Address;

    #[test]
    fn default_roles_in_each_dialect() {
        let d = DesiredRole {
            addr: Address::parse("user.u").unwrap(),
            name: "u".into(),
            login: true,
            connection_limit: -1,
            valid_until: None,
            member_of: ["b".to_string(), "a".to_string()].into_iter().collect(),
            password: None,
            host: Some("%".into()),
            flags: Default::default(),
        };
        assert_eq!(default_role(&d, false), "SET DEFAULT ROLE 'a' FOR 'u'@'%'");
        assert_eq!(default_role(&d, true), "SET DEFAULT ROLE ALL TO 'u'@'%'");
        let none = DesiredRole { member_of: Default::default(), ..d };
        assert_eq!(default_role(&none, true), "SET DEFAULT ROLE NONE TO 'u'@'%'");
    }
}
