//! Statements for MySQL / MariaDB servers: accounts are `'user'@'host'`,
//! roles are granted and made the default role, databases have a character
//! set and collation but no owner, and grants are at database level.

use crate::diff::sql;
use crate::diff::{DesiredDb, DesiredRole};
use crate::engine::sql::{mysql_account, mysql_ident, mysql_literal};
use crate::engine::LiveRole;
use crate::model::Address;
use crate::plan::{AttrChange, Step};

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
pub fn create_role(addr: &str, server: &Address, d: &DesiredRole, mysql8: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if d.login {
        steps.push(sql(
            addr,
            server,
            None,
            format!(
                "CREATE USER {} WITH MAX_USER_CONNECTIONS {} ACCOUNT LOCK",
                account(d),
                max_connections(d.connection_limit)
            ),
        ));
    } else {
        steps.push(sql(addr, server, None, format!("CREATE ROLE {}", account(d))));
    }
    for m in &d.member_of {
        steps.push(sql(addr, server, None, format!("GRANT {} TO {}", mysql_literal(m), account(d))));
    }
    if d.login && !d.member_of.is_empty() {
        steps.push(sql(addr, server, None, default_role(d, mysql8)));
    }
    steps
}

#[allow(clippy::too_many_arguments)]
pub fn update_role(
    addr: &str,
    server: &Address,
    d: &DesiredRole,
    live: &LiveRole,
    changed: &[AttrChange],
    members: bool,
    mysql8: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for ch in changed {
        match ch.name.as_str() {
            "host" if d.login => steps.insert(
                0,
                sql(
                    addr,
                    server,
                    None,
                    format!("RENAME USER {} TO {}", mysql_account(&d.name, Some(&live.host)), account(d)),
                ),
            ),
            "connection_limit" if d.login => steps.push(sql(
                addr,
                server,
                None,
                format!("ALTER USER {} WITH MAX_USER_CONNECTIONS {}", account(d), max_connections(d.connection_limit)),
            )),
            _ => {}
        }
    }
    if members && d.member_of != live.member_of {
        for m in d.member_of.difference(&live.member_of) {
            steps.push(sql(addr, server, None, format!("GRANT {} TO {}", mysql_literal(m), account(d))));
        }
        for m in live.member_of.difference(&d.member_of) {
            steps.push(sql(addr, server, None, format!("REVOKE {} FROM {}", mysql_literal(m), account(d))));
        }
        if d.login {
            steps.push(sql(addr, server, None, default_role(d, mysql8)));
        }
    }
    steps
}

pub fn drop_role(addr: &str, server: &Address, name: &str, live: &LiveRole) -> Step {
    if live.login {
        sql(addr, server, None, format!("DROP USER {}", mysql_account(name, Some(&live.host))))
    } else {
        sql(addr, server, None, format!("DROP ROLE {}", mysql_literal(name)))
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

pub fn create_database(addr: &str, server: &Address, d: &DesiredDb) -> Step {
    sql(addr, server, None, format!("CREATE DATABASE {}{}", mysql_ident(&d.name), charset(d)))
}

/// Character set and collation change in place.
pub fn alter_database(addr: &str, server: &Address, d: &DesiredDb, changed: &[AttrChange]) -> Option<Step> {
    let relevant = changed.iter().any(|c| c.name == "encoding" || c.name == "collation");
    (relevant && !charset(d).is_empty())
        .then(|| sql(addr, server, None, format!("ALTER DATABASE {}{}", mysql_ident(&d.name), charset(d))))
}

#[cfg(test)]
mod tests {
    use super::*;

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
