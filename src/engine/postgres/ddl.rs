//! Statements for PostgreSQL servers: roles with their attributes and
//! memberships, and databases made from template0.

use crate::engine::sql::{pg_ident, pg_literal};
use crate::engine::{LiveRole, Stmt};
use crate::model::{DesiredDb, DesiredRole};

pub fn create_role(d: &DesiredRole) -> Vec<Stmt> {
    let mut opts = vec![if d.login { "LOGIN" } else { "NOLOGIN" }.to_string()];
    if d.connection_limit != -1 {
        opts.push(format!("CONNECTION LIMIT {}", d.connection_limit));
    }
    if let Some(v) = &d.valid_until {
        opts.push(format!("VALID UNTIL {}", pg_literal(v)));
    }
    // Only what differs from PostgreSQL's defaults (all off but INHERIT).
    for (f, on, off) in crate::engine::ROLE_FLAGS {
        match (d.flags.get(*f), *f == "inherit") {
            (Some(true), false) => opts.push(on.to_string()),
            (Some(false), true) => opts.push(off.to_string()),
            _ => {}
        }
    }
    let name = pg_ident(&d.name);
    let mut steps = vec![Stmt::admin(format!("CREATE ROLE {name} WITH {}", opts.join(" ")))];
    for m in &d.member_of {
        steps.push(Stmt::admin(format!("GRANT {} TO {name}", pg_ident(m))));
    }
    steps
}

pub fn update_role(d: &DesiredRole, l: &LiveRole, changed: &[&str], members: bool) -> Vec<Stmt> {
    if changed.is_empty() && (!members || d.member_of == l.member_of) {
        return Vec::new(); // Most roles of a plan: nothing to write, not even the name.
    }
    let name = pg_ident(&d.name);
    let mut steps = Vec::new();
    let mut alter = Vec::new();
    for ch in changed {
        match *ch {
            "login" => alter.push(if d.login { "LOGIN".to_string() } else { "NOLOGIN".to_string() }),
            "connection_limit" => alter.push(format!("CONNECTION LIMIT {}", d.connection_limit)),
            "valid_until" => {
                alter.push(format!("VALID UNTIL {}", pg_literal(d.valid_until.as_deref().unwrap_or("infinity"))))
            }
            f => {
                if let Some((_, on, off)) = crate::engine::ROLE_FLAGS.iter().find(|x| x.0 == f) {
                    alter.push(if d.flags.get(f) == Some(&true) { on } else { off }.to_string());
                }
            }
        }
    }
    if !alter.is_empty() {
        steps.push(Stmt::admin(format!("ALTER ROLE {name} WITH {}", alter.join(" "))));
    }
    if members {
        for m in d.member_of.difference(&l.member_of) {
            steps.push(Stmt::admin(format!("GRANT {} TO {name}", pg_ident(m))));
        }
        for m in l.member_of.difference(&d.member_of) {
            steps.push(Stmt::admin(format!("REVOKE {} FROM {name}", pg_ident(m))));
        }
    }
    steps
}

/// `CREATE DATABASE` from template0 (so the encoding and collation can be
/// any), closed to PUBLIC, with its extensions.
pub fn create_database(d: &DesiredDb) -> Vec<Stmt> {
    let mut steps = Vec::new();
    let mut opts = vec![format!("OWNER {}", pg_ident(&d.owner))];
    if let Some(e) = &d.encoding {
        opts.push(format!("ENCODING {}", pg_literal(e)));
    }
    if let Some(col) = &d.collation {
        opts.push(format!("LC_COLLATE {} LC_CTYPE {}", pg_literal(col), pg_literal(col)));
    }
    opts.push("TEMPLATE template0".into());
    if d.connection_limit != -1 {
        opts.push(format!("CONNECTION LIMIT {}", d.connection_limit));
    }
    steps.push(Stmt::admin(format!("CREATE DATABASE {} {}", pg_ident(&d.name), opts.join(" "))));
    steps.push(Stmt::admin(format!("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC", pg_ident(&d.name))));
    for e in &d.extensions {
        steps.push(Stmt::on(&d.name, format!("CREATE EXTENSION IF NOT EXISTS {}", pg_ident(e))));
    }
    steps
}
