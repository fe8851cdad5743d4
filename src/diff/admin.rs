//! What dbctl's admin may run. An admin that is not a superuser (an RDS
//! master user has CREATEROLE and CREATEDB only) can run most of a plan on
//! PostgreSQL 15 once it is a member of the roles that own what a step
//! touches: those memberships are planned (`GRANT owner TO admin`, shown in
//! the plan, just before the first step that needs one). A step it cannot run
//! at all is an error of the plan, naming the privilege, before anything runs.
//!
//! The check reads the statements dbctl itself generated (every identifier
//! quoted, every literal a string), after `--target` selected the changes,
//! and simulates what each step changes (owners, memberships) in plan order.
//!
//! A superuser admin needs none of this; one check holds for every admin: a
//! `DROP ROLE` of a role that still owns objects or holds privileges in a
//! database the plan does not clean fails on the server, so it is an error here.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::sql::pg_ident;
use crate::engine::LiveServer;
use crate::model::{Address, EngineKind};
use crate::plan::{Op, ResourceChange, Step};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A quoted identifier, unquoted.
    Ident(String),
    /// A keyword or number, as written.
    Word(String),
    /// A string literal's value.
    Lit(String),
    Semi,
    Comma,
}

/// The tokens of a statement dbctl generated.
fn lex(sql: &str) -> Vec<Tok> {
    let c: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            ch if ch.is_whitespace() => i += 1,
            ';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < c.len() {
                    if c[i] == '"' {
                        if c.get(i + 1) == Some(&'"') {
                            s.push('"');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    s.push(c[i]);
                    i += 1;
                }
                out.push(Tok::Ident(s));
            }
            q @ ('\'' | 'E') if q == '\'' || c.get(i + 1) == Some(&'\'') => {
                let escapes = q == 'E';
                i += if escapes { 2 } else { 1 };
                let mut s = String::new();
                while i < c.len() {
                    match c[i] {
                        '\\' if escapes && i + 1 < c.len() => {
                            s.push(c[i + 1]);
                            i += 2;
                        }
                        '\'' if c.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        '\'' => {
                            i += 1;
                            break;
                        }
                        ch => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(s));
            }
            _ => {
                let start = i;
                while i < c.len() && !c[i].is_whitespace() && !matches!(c[i], ';' | ',' | '"' | '\'') {
                    i += 1;
                }
                out.push(Tok::Word(c[start..i].iter().collect()));
            }
        }
    }
    out
}

/// A statement's tokens as a pattern-friendly form: keywords as themselves,
/// identifiers as `"`, literals as `'`; and the identifiers in order.
fn shape(toks: &[Tok]) -> (Vec<&str>, Vec<&str>) {
    let mut words = Vec::new();
    let mut idents = Vec::new();
    for t in toks {
        match t {
            Tok::Ident(s) => {
                words.push("\"");
                idents.push(s.as_str());
            }
            Tok::Word(w) => words.push(w.as_str()),
            Tok::Lit(_) => words.push("'"),
            Tok::Comma => words.push(","),
            Tok::Semi => {}
        }
    }
    (words, idents)
}

/// Role attributes only a superuser may give or change on PostgreSQL 15,
/// and what to do instead.
const SUPERUSER_ONLY: &[(&str, &str, &str)] = &[
    (
        "SUPERUSER",
        "NOSUPERUSER",
        "no role but a superuser can make one (RDS has none: use membership in rds_superuser)",
    ),
    (
        "REPLICATION",
        "NOREPLICATION",
        "on PostgreSQL 15 only a superuser can give it (on RDS, make the user a member of rds_replication instead)",
    ),
    ("BYPASSRLS", "NOBYPASSRLS", "on PostgreSQL 15 only a superuser can give or take it"),
];

/// The admin as the plan goes: what it is a member of, who owns what.
struct Sim<'a> {
    live: &'a LiveServer,
    admin: String,
    createrole: bool,
    createdb: bool,
    inherit: bool,
    /// Direct memberships of every role, as this plan leaves them so far.
    member_of: BTreeMap<String, BTreeSet<String>>,
    superusers: BTreeSet<String>,
    replication: BTreeSet<String>,
    /// Database → owner, as this plan leaves them so far.
    owners: BTreeMap<String, String>,
    /// Databases this plan creates (no tables, no grants to anyone yet).
    created: BTreeSet<String>,
    /// Whether the admin sits in `rds_superuser` (RDS lets it create the extensions it supports).
    rds: bool,
}

/// What a step needs that the admin does not have, and what to do.
struct Missing {
    privilege: String,
    todo: String,
}

impl<'a> Sim<'a> {
    fn new(live: &'a LiveServer) -> Sim<'a> {
        let me = live.roles.get(&live.admin);
        let flag = |f: &str| me.is_some_and(|r| r.flags.contains(f));
        let mut member_of: BTreeMap<String, BTreeSet<String>> =
            live.roles.iter().map(|(n, r)| (n.clone(), r.member_of.clone())).collect();
        member_of.entry(live.admin.clone()).or_default();
        let sim = Sim {
            live,
            admin: live.admin.clone(),
            createrole: flag("createrole"),
            createdb: flag("createdb"),
            inherit: flag("inherit"),
            member_of,
            superusers: live.roles.iter().filter(|(_, r)| r.superuser).map(|(n, _)| n.clone()).collect(),
            replication: live
                .roles
                .iter()
                .filter(|(_, r)| r.flags.contains("replication"))
                .map(|(n, _)| n.clone())
                .collect(),
            owners: live.databases.iter().map(|(n, d)| (n.clone(), d.owner.clone())).collect(),
            created: BTreeSet::new(),
            rds: false,
        };
        let rds = sim.closure(&sim.admin).contains("rds_superuser");
        Sim { rds, ..sim }
    }

    /// Every role `role` is a member of, directly or not, itself included.
    fn closure(&self, role: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([role.to_string()]);
        let mut todo = vec![role.to_string()];
        while let Some(r) = todo.pop() {
            for m in self.member_of.get(&r).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    }

    fn is_member(&self, role: &str) -> bool {
        self.closure(&self.admin).contains(role)
    }

    /// The admin acts with `role`'s privileges (owner checks, grant authority).
    fn has_privs(&self, role: &str) -> bool {
        role == self.admin || (self.inherit && self.is_member(role))
    }

    fn owner(&self, db: &str) -> Option<&str> {
        self.owners.get(db).map(String::as_str)
    }

    /// Make the admin a member of `role` (for `why`), with a step before the
    /// one at `at` and a note, or say why it cannot be.
    fn ensure_member(&mut self, role: &str, privs: bool, why: &str, prep: &mut Prep) -> Result<(), Missing> {
        if role == "pg_database_owner" {
            return Ok(());
        }
        let ok = if privs { self.has_privs(role) } else { self.is_member(role) };
        if ok {
            return Ok(());
        }
        if privs && !self.inherit && self.is_member(role) {
            return Err(Missing {
                privilege: format!("the privileges of role \"{role}\""),
                todo: format!(
                    "dbctl's admin \"{}\" is a member of it but NOINHERIT; make it INHERIT (ALTER ROLE {} INHERIT), or connect as a superuser",
                    self.admin,
                    pg_ident(&self.admin)
                ),
            });
        }
        let who = format!("membership in role \"{role}\"");
        if self.superusers.contains(role) {
            return Err(Missing {
                privilege: who,
                todo: format!(
                    "\"{role}\" is a superuser: only a superuser can {why}; connect as one, or let a role that is not a superuser own it"
                ),
            });
        }
        if !self.createrole {
            return Err(Missing {
                privilege: who,
                todo: format!(
                    "to {why}, dbctl's admin must be a member of \"{role}\"; grant it (GRANT {} TO {}), or give the admin CREATEROLE so dbctl can",
                    pg_ident(role),
                    pg_ident(&self.admin)
                ),
            });
        }
        if self.closure(role).contains(&self.admin) {
            return Err(Missing {
                privilege: who,
                todo: format!(
                    "\"{role}\" is itself a member of dbctl's admin \"{}\", so the admin cannot be made a member of it; connect as a superuser or as \"{role}\"",
                    self.admin
                ),
            });
        }
        if !privs || self.inherit {
            self.member_of.entry(self.admin.clone()).or_default().insert(role.to_string());
            prep.grants.push((role.to_string(), why.to_string()));
            return Ok(());
        }
        Err(Missing {
            privilege: format!("the privileges of role \"{role}\""),
            todo: format!(
                "dbctl's admin \"{}\" is NOINHERIT, so membership would not give them; make it INHERIT, or connect as a superuser",
                self.admin
            ),
        })
    }

    fn need_attr(&self, has: bool, attr: &str, todo: &str) -> Result<(), Missing> {
        if has {
            Ok(())
        } else {
            Err(Missing { privilege: attr.to_string(), todo: todo.to_string() })
        }
    }

    fn need_createrole(&self) -> Result<(), Missing> {
        self.need_attr(self.createrole, "CREATEROLE", "connect as a role with CREATEROLE (an RDS master user has it)")
    }

    fn need_createdb(&self) -> Result<(), Missing> {
        self.need_attr(self.createdb, "CREATEDB", "connect as a role with CREATEDB (an RDS master user has it)")
    }

    /// Change a role that must not be a superuser (nor, for ALTER, have REPLICATION).
    fn alterable(&self, role: &str, what: &str, replication_too: bool) -> Result<(), Missing> {
        if self.superusers.contains(role) {
            return Err(Missing {
                privilege: "SUPERUSER".into(),
                todo: format!("\"{role}\" is a superuser: only a superuser can {what} it"),
            });
        }
        if replication_too && self.replication.contains(role) {
            return Err(Missing {
                privilege: "SUPERUSER".into(),
                todo: format!(
                    "\"{role}\" has REPLICATION: on PostgreSQL 15 only a superuser can {what} such a role; connect as a superuser"
                ),
            });
        }
        Ok(())
    }

    /// The admin can open a connection to `db` (for a step that runs in it).
    fn connect(&mut self, db: &str, prep: &mut Prep) -> Result<(), Missing> {
        if let Some(l) = self.live.databases.get(db).filter(|_| !self.created.contains(db)) {
            if l.closed {
                return Err(Missing {
                    privilege: "a connection to the database".into(),
                    todo: format!("database \"{db}\" does not allow connections (ALLOW_CONNECTIONS false)"),
                });
            }
            let who = self.closure(&self.admin);
            let granted = l.privileges.iter().any(|(g, p)| {
                p.contains("CONNECT") && (g == "PUBLIC" || (who.contains(g) && (self.inherit || *g == self.admin)))
            });
            if granted {
                return Ok(());
            }
        }
        match self.owner(db).map(str::to_string) {
            Some(o) => self.ensure_member(&o, true, &format!("connect to database \"{db}\""), prep),
            None => Ok(()),
        }
    }

    fn owner_privs(&mut self, db: &str, why: &str, prep: &mut Prep) -> Result<(), Missing> {
        match self.owner(db).map(str::to_string) {
            Some(o) => self.ensure_member(&o, true, why, prep),
            None => Ok(()),
        }
    }

    /// Check one statement (of `step`), planning what it needs.
    fn statement(&mut self, step: &Step, toks: &[Tok], prep: &mut Prep) -> Result<(), Missing> {
        let (w, id) = shape(toks);
        let db = step.database.as_deref();
        if let Some(d) = db {
            self.connect(d, prep)?;
        }
        let up: Vec<String> = w.iter().map(|x| x.to_ascii_uppercase()).collect();
        let w: Vec<&str> = up.iter().map(String::as_str).collect();
        match (w.as_slice(), id.as_slice()) {
            (["CREATE", "ROLE", "\"", "WITH", attrs @ ..], [name, ..]) => {
                self.need_createrole()?;
                for (on, _, why) in SUPERUSER_ONLY {
                    if attrs.contains(on) {
                        return Err(Missing {
                            privilege: "SUPERUSER".into(),
                            todo: format!("{on}: {why}; leave it out of the configuration, or connect as a superuser"),
                        });
                    }
                }
                self.member_of.insert(name.to_string(), BTreeSet::new());
            }
            (["ALTER", "ROLE", "\"", "RENAME", "TO", "\""], [old, new]) => {
                self.need_createrole()?;
                self.alterable(old, "rename", false)?;
                self.rename_role(old, new);
            }
            (["ALTER", "ROLE", "\"", "WITH", attrs @ ..], [name, ..]) => {
                self.need_createrole()?;
                for (on, off, why) in SUPERUSER_ONLY {
                    if attrs.contains(on) || attrs.contains(off) {
                        return Err(Missing {
                            privilege: "SUPERUSER".into(),
                            todo: format!("{on}: {why}; leave it out of the configuration, or connect as a superuser"),
                        });
                    }
                }
                self.alterable(name, "alter", true)?;
            }
            (["GRANT", "\"", "TO", "\""], [role, member]) => {
                self.need_createrole()?;
                self.alterable(role, "grant membership in", false)?;
                self.member_of.entry(member.to_string()).or_default().insert(role.to_string());
            }
            (["REVOKE", "\"", "FROM", "\""], [role, member]) => {
                self.need_createrole()?;
                self.alterable(role, "revoke membership in", false)?;
                if let Some(m) = self.member_of.get_mut(*member) {
                    m.remove(*role);
                }
            }
            (["DROP", "ROLE", "\""], [name]) => {
                self.need_createrole()?;
                self.alterable(name, "drop", false)?;
                self.member_of.remove(*name);
                for m in self.member_of.values_mut() {
                    m.remove(*name);
                }
            }
            (["CREATE", "DATABASE", "\"", "OWNER", "\"", ..], [name, owner, ..]) => {
                self.need_createdb()?;
                self.ensure_member(owner, false, &format!("create database \"{name}\" owned by \"{owner}\""), prep)?;
                self.owners.insert(name.to_string(), owner.to_string());
                self.created.insert(name.to_string());
            }
            (["ALTER", "DATABASE", "\"", "OWNER", "TO", "\""], [name, owner]) => {
                self.need_createdb()?;
                self.owner_privs(name, &format!("change the owner of database \"{name}\""), prep)?;
                self.ensure_member(owner, false, &format!("give database \"{name}\" to \"{owner}\""), prep)?;
                self.owners.insert(name.to_string(), owner.to_string());
            }
            (["ALTER", "DATABASE", "\"", "RENAME", "TO", "\""], [old, new]) => {
                self.need_createdb()?;
                self.owner_privs(old, &format!("rename database \"{old}\""), prep)?;
                if let Some(o) = self.owners.remove(*old) {
                    self.owners.insert(new.to_string(), o);
                }
            }
            (["ALTER", "DATABASE", "\"", ..], [name, ..]) => {
                self.owner_privs(name, &format!("alter database \"{name}\""), prep)?;
            }
            (["ALTER", "DEFAULT", "PRIVILEGES", "FOR", "ROLE", "\"", ..], [role, ..]) => {
                let d = db.unwrap_or_default();
                self.ensure_member(role, false, &format!("set the default privileges of \"{role}\" in \"{d}\""), prep)?;
            }
            ([_, .., "ON", "DATABASE", "\"", _, _], [.., name, _])
            | ([_, .., "ON", "DATABASE", "\"", _, "PUBLIC"], [.., name]) => {
                self.owner_privs(name, &format!("grant or revoke privileges on database \"{name}\""), prep)?;
            }
            ([_, .., "ON", "SCHEMA", "\"", _, _], [.., schema, _])
            | ([_, .., "ON", "SCHEMA", "\"", _, "PUBLIC"], [.., schema]) => {
                let d = db.unwrap_or_default();
                if let Some(o) = self.schema_owner(d, schema) {
                    self.ensure_member(
                        &o,
                        true,
                        &format!("grant or revoke privileges on schema \"{schema}\" in \"{d}\""),
                        prep,
                    )?;
                }
            }
            ([_, .., "ON", "ALL", class @ ("TABLES" | "SEQUENCES"), "IN", "SCHEMA", "\"", _, _], [.., schema, _])
            | (
                [_, .., "ON", "ALL", class @ ("TABLES" | "SEQUENCES"), "IN", "SCHEMA", "\"", _, "PUBLIC"],
                [.., schema],
            ) => {
                let d = db.unwrap_or_default().to_string();
                let what = class.to_ascii_lowercase();
                for o in self.object_owners(&d, schema, *class == "SEQUENCES") {
                    self.ensure_member(
                        &o,
                        true,
                        &format!(
                            "grant or revoke privileges on {what} owned by \"{o}\" in schema \"{schema}\" of \"{d}\""
                        ),
                        prep,
                    )?;
                }
            }
            (["CREATE", "EXTENSION", ..], [.., ext]) => {
                let d = db.unwrap_or_default().to_string();
                let trusted = self.live.trusted_extensions.as_ref().is_none_or(|t| t.contains(*ext));
                if !trusted && !self.rds {
                    return Err(Missing {
                        privilege: "SUPERUSER".into(),
                        todo: format!("extension \"{ext}\" is not trusted: only a superuser can create it; create it once as a superuser, or leave it out"),
                    });
                }
                self.owner_privs(&d, &format!("create extensions in database \"{d}\""), prep)?;
            }
            (["REASSIGN", "OWNED", "BY", "\"", "TO", "\""], [from, to]) => {
                self.ensure_member(from, true, &format!("reassign what \"{from}\" owns"), prep)?;
                self.ensure_member(to, true, &format!("reassign objects to \"{to}\""), prep)?;
                for o in self.owners.values_mut().filter(|o| o == from) {
                    *o = to.to_string();
                }
            }
            (["DROP", "OWNED", "BY", "\""], [role]) => {
                self.ensure_member(role, true, &format!("drop what \"{role}\" owns"), prep)?;
                // Its privileges are revoked with the grant authority of the objects' owners.
                let d = db.unwrap_or_default().to_string();
                self.owner_privs(&d, &format!("revoke the privileges of \"{role}\" in \"{d}\""), prep)?;
                // ... and on databases (shared objects), wherever it holds some.
                let on: Vec<String> = self
                    .live
                    .databases
                    .iter()
                    .filter(|(n, l)| l.privileges.contains_key(*role) && self.owners.contains_key(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in on {
                    self.owner_privs(&n, &format!("revoke the privileges of \"{role}\" on database \"{n}\""), prep)?;
                }
            }
            (["DROP", "EXTENSION", ..], [.., ext]) => {
                let d = db.unwrap_or_default().to_string();
                let owner = self
                    .live
                    .databases
                    .get(&d)
                    .and_then(|l| l.detail.as_ref())
                    .and_then(|x| x.extension_owners.get(*ext))
                    .cloned();
                if let Some(o) = owner.filter(|_| !self.created.contains(&d)) {
                    self.ensure_member(&o, true, &format!("drop extension \"{ext}\", which \"{o}\" owns"), prep)?;
                }
            }
            // Anything else: no extra need known.
            _ => {}
        }
        Ok(())
    }

    fn schema_owner(&self, db: &str, schema: &str) -> Option<String> {
        if self.created.contains(db) {
            return self.owner(db).map(str::to_string);
        }
        let owner = self.live.databases.get(db)?.detail.as_ref()?.schemas.get(schema)?.owner.clone();
        // PostgreSQL 15's `public` belongs to pg_database_owner: whoever owns the database.
        if owner == "pg_database_owner" {
            return self.owner(db).map(str::to_string);
        }
        Some(owner)
    }

    fn object_owners(&self, db: &str, schema: &str, sequences: bool) -> BTreeSet<String> {
        if self.created.contains(db) {
            return BTreeSet::new();
        }
        let Some(sc) = self.live.databases.get(db).and_then(|d| d.detail.as_ref()).and_then(|d| d.schemas.get(schema))
        else {
            return BTreeSet::new();
        };
        if sequences {
            sc.sequences.owners.clone()
        } else {
            sc.tables.owners.clone()
        }
    }

    fn rename_role(&mut self, old: &str, new: &str) {
        if let Some(m) = self.member_of.remove(old) {
            self.member_of.insert(new.to_string(), m);
        }
        for m in self.member_of.values_mut() {
            if m.remove(old) {
                m.insert(new.to_string());
            }
        }
        for o in self.owners.values_mut().filter(|o| *o == old) {
            *o = new.to_string();
        }
        for set in [&mut self.superusers, &mut self.replication] {
            if set.remove(old) {
                set.insert(new.to_string());
            }
        }
    }
}

/// Memberships the admin needs before a step: (role, what for).
#[derive(Default)]
struct Prep {
    grants: Vec<(String, String)>,
}

/// Plan what the admin of each PostgreSQL server needs before the steps that
/// need it, or return an error per step it cannot run. `changes` are in apply
/// order.
pub fn check(
    changes: &mut [ResourceChange],
    live: &BTreeMap<Address, LiveServer>,
    engines: &BTreeMap<Address, EngineKind>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (server, l) in live {
        // A server not created yet is checked when its admin is known (an
        // RDS cluster's master user, before the cluster exists).
        let known = l.exists || l.roles.contains_key(&l.admin);
        if !crate::engine::dialect::Dialect::of(engines.get(server).copied().unwrap_or(EngineKind::Postgres))
            .role_flags()
            || !known
        {
            continue;
        }
        check_drops(changes, server, l, &mut errors);
        let superuser = l.roles.get(&l.admin).is_some_and(|a| a.superuser);
        if superuser || l.admin.is_empty() {
            continue;
        }
        let mut sim = Sim::new(l);
        for c in changes.iter_mut() {
            let mut steps = Vec::with_capacity(c.steps.len());
            let mut noted: BTreeSet<String> = BTreeSet::new();
            for step in std::mem::take(&mut c.steps) {
                if step.server.as_ref() != Some(server) {
                    steps.push(step);
                    continue;
                }
                let mut prep = Prep::default();
                let statements: Vec<Vec<Tok>> = match &step.op {
                    Op::Sql { sql } => lex(sql).split(|t| *t == Tok::Semi).map(<[Tok]>::to_vec).collect(),
                    Op::SetPassword { account: None, role, .. } => {
                        if let Err(m) =
                            sim.need_createrole().and_then(|_| sim.alterable(role, "set the password of", true))
                        {
                            errors.push(message(&c.address, &step.describe(), &sim.admin, m));
                        }
                        Vec::new()
                    }
                    Op::DropDatabase { name, .. } => {
                        if let Err(m) = sim.owner_privs(name, &format!("drop database \"{name}\""), &mut prep) {
                            errors.push(message(&c.address, &step.describe(), &sim.admin, m));
                        }
                        sim.owners.remove(name);
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                for toks in statements.iter().filter(|t| !t.is_empty()) {
                    if let Err(m) = sim.statement(&step, toks, &mut prep) {
                        errors.push(message(&c.address, &step.describe(), &sim.admin, m));
                    }
                }
                for (role, why) in prep.grants {
                    let sql = format!("GRANT {} TO {}", pg_ident(&role), pg_ident(&sim.admin));
                    if noted.insert(role.clone()) {
                        c.notes.push(format!(
                            "dbctl's admin \"{}\" is not a superuser: it is made a member of \"{role}\" first, to {why}",
                            sim.admin
                        ));
                    }
                    steps.push(Step {
                        address: step.address.clone(),
                        server: step.server.clone(),
                        database: None,
                        op: Op::Sql { sql },
                    });
                }
                steps.push(step);
            }
            c.steps = steps;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn message(addr: &str, statement: &str, admin: &str, m: Missing) -> String {
    format!(
        "{addr}: `{statement}` needs {}, which dbctl's admin \"{admin}\" does not have: {}. Nothing was applied",
        m.privilege, m.todo
    )
}

/// A `DROP ROLE` whose role still owns objects, or holds privileges, in a
/// database this plan neither cleans (REASSIGN/DROP OWNED there) nor drops,
/// would fail on the server after the plan's earlier steps ran.
fn check_drops(changes: &[ResourceChange], server: &Address, live: &LiveServer, errors: &mut Vec<String>) {
    let dropped: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| &c.steps)
        .filter(|s| s.server.as_ref() == Some(server))
        .filter_map(|s| match &s.op {
            Op::DropDatabase { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for c in changes {
        for s in c.steps.iter().filter(|s| s.server.as_ref() == Some(server)) {
            let Op::Sql { sql } = &s.op else { continue };
            let toks = lex(sql);
            let (w, id) = shape(&toks);
            let (["DROP", "ROLE", "\""], [role]) = (w.as_slice(), id.as_slice()) else { continue };
            let Some(l) = live.roles.get(*role) else { continue };
            let cleaned: BTreeSet<&str> = c
                .steps
                .iter()
                .filter(|x| x.server.as_ref() == Some(server))
                .filter(|x| matches!(&x.op, Op::Sql { sql } if sql.starts_with("REASSIGN OWNED BY")))
                .filter_map(|x| x.database.as_deref())
                .collect();
            let left: Vec<String> = l
                .depends_in
                .iter()
                .filter(|d| !cleaned.contains(d.as_str()) && !dropped.contains(d.as_str()))
                .map(|d| format!("\"{d}\""))
                .collect();
            if !left.is_empty() {
                let r = pg_ident(role);
                errors.push(format!(
                    "{}: `DROP ROLE {r}` would fail: \"{role}\" still owns objects or holds privileges in database(s) {}, which this plan does not clean up (dbctl does not manage them, or its admin \"{}\" cannot connect to them). Connect to each as a role that may and run `REASSIGN OWNED BY {r} TO <another role>; DROP OWNED BY {r}`, or keep the {} in the configuration; then plan again. Nothing was applied",
                    c.address,
                    left.join(", "),
                    live.admin,
                    c.kind
                ));
            }
            let owned: Vec<String> = live
                .databases
                .iter()
                .filter(|(d, ldb)| ldb.owner == *role && !dropped.contains(d.as_str()))
                .map(|(d, _)| format!("\"{d}\""))
                .collect();
            // Privileges on databases (shared objects): DROP OWNED anywhere
            // revokes them; without it, only the plan's own REVOKEs do.
            let revoked = |d: &str| {
                changes.iter().flat_map(|c| &c.steps).filter(|x| x.server.as_ref() == Some(server)).any(|x| {
                    let Op::Sql { sql } = &x.op else { return false };
                    let toks = lex(sql);
                    let (w, id) = shape(&toks);
                    w.first() == Some(&"REVOKE") && w.contains(&"DATABASE") && id == [d, *role]
                })
            };
            let privileged: Vec<String> = live
                .databases
                .iter()
                .filter(|(_, ldb)| ldb.privileges.contains_key(*role) && ldb.owner != *role)
                .filter(|(d, _)| !dropped.contains(d.as_str()) && !revoked(d))
                .map(|(d, _)| format!("\"{d}\""))
                .collect();
            if !privileged.is_empty() && cleaned.is_empty() {
                errors.push(format!(
                    "{}: `DROP ROLE {}` would fail: \"{role}\" holds privileges on database(s) {}; revoke them first, or keep the {} in the configuration. Nothing was applied",
                    c.address,
                    pg_ident(role),
                    privileged.join(", "),
                    c.kind
                ));
            }
            if !owned.is_empty() && cleaned.is_empty() {
                errors.push(format!(
                    "{}: `DROP ROLE {}` would fail: \"{role}\" owns database(s) {}; give them another owner first, or keep the {} in the configuration. Nothing was applied",
                    c.address,
                    pg_ident(role),
                    owned.join(", "),
                    c.kind
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_what_dbctl_generates() {
        let t = lex("CREATE DATABASE \"a\"\"b; x\" OWNER \"o\" ENCODING 'UTF8' LC_COLLATE E'c\\\\''d' TEMPLATE template0; DROP OWNED BY \"r\"");
        assert_eq!(
            t,
            vec![
                Tok::Word("CREATE".into()),
                Tok::Word("DATABASE".into()),
                Tok::Ident("a\"b; x".into()),
                Tok::Word("OWNER".into()),
                Tok::Ident("o".into()),
                Tok::Word("ENCODING".into()),
                Tok::Lit("UTF8".into()),
                Tok::Word("LC_COLLATE".into()),
                Tok::Lit("c\\'d".into()),
                Tok::Word("TEMPLATE".into()),
                Tok::Word("template0".into()),
                Tok::Semi,
                Tok::Word("DROP".into()),
                Tok::Word("OWNED".into()),
                Tok::Word("BY".into()),
                Tok::Ident("r".into()),
            ]
        );
        let toks = lex("GRANT CONNECT, TEMPORARY ON DATABASE \"d\" TO \"u\"");
        let (w, id) = shape(&toks);
        assert_eq!(w, vec!["GRANT", "CONNECT", ",", "TEMPORARY", "ON", "DATABASE", "\"", "TO", "\""]);
        assert_eq!(id, vec!["d", "u"]);
    }

    fn server(admin_flags: &[&str]) -> (Address, LiveServer) {
        let mut live = LiveServer { exists: true, admin: "master".into(), ..Default::default() };
        let role = |flags: &[&str]| crate::engine::LiveRole {
            login: true,
            connection_limit: -1,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        live.roles.insert("master".into(), role(admin_flags));
        live.roles.insert("postgres".into(), crate::engine::LiveRole { superuser: true, ..role(&["superuser"]) });
        live.roles.insert("owner".into(), role(&["inherit"]));
        live.trusted_extensions = Some(["pgcrypto".to_string()].into());
        (Address::parse("server.main").unwrap(), live)
    }

    fn change_with(server: &Address, steps: &[(Option<&str>, &str)]) -> ResourceChange {
        let mut c = crate::diff::change("database.app", "database", "app", crate::plan::Action::Create);
        c.steps = steps.iter().map(|(db, q)| crate::diff::sql("database.app", server, *db, q.to_string())).collect();
        c
    }

    fn run(admin_flags: &[&str], steps: &[(Option<&str>, &str)]) -> Result<Vec<String>, Vec<String>> {
        let (a, live) = server(admin_flags);
        let mut changes = vec![change_with(&a, steps)];
        let engines = BTreeMap::from([(a.clone(), EngineKind::Postgres)]);
        check(&mut changes, &BTreeMap::from([(a, live)]), &engines)?;
        Ok(changes[0].steps.iter().map(Step::describe).collect())
    }

    const RDS: &[&str] = &["createrole", "createdb", "inherit"];

    #[test]
    fn a_database_owned_by_another_role_is_preceded_by_the_admin_membership() {
        let steps = run(
            RDS,
            &[
                (None, "CREATE DATABASE \"app\" OWNER \"owner\" TEMPLATE template0"),
                (None, "REVOKE CONNECT, TEMPORARY ON DATABASE \"app\" FROM PUBLIC"),
                (Some("app"), "CREATE EXTENSION IF NOT EXISTS \"pgcrypto\""),
            ],
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                "GRANT \"owner\" TO \"master\"",
                "CREATE DATABASE \"app\" OWNER \"owner\" TEMPLATE template0",
                "REVOKE CONNECT, TEMPORARY ON DATABASE \"app\" FROM PUBLIC",
                "CREATE EXTENSION IF NOT EXISTS \"pgcrypto\" -- in database app",
            ]
        );
    }

    #[test]
    fn a_superuser_admin_needs_nothing() {
        let (a, mut live) = server(RDS);
        live.roles.get_mut("master").unwrap().superuser = true;
        let mut changes = vec![change_with(
            &a,
            &[(None, "CREATE DATABASE \"app\" OWNER \"owner\""), (None, "CREATE ROLE \"r\" WITH LOGIN SUPERUSER")],
        )];
        check(&mut changes, &BTreeMap::from([(a.clone(), live)]), &BTreeMap::new()).unwrap();
        assert_eq!(changes[0].steps.len(), 2);
    }

    #[test]
    fn what_the_admin_cannot_run_is_named() {
        for (flags, sql, needs) in [
            (RDS, "CREATE ROLE \"r\" WITH LOGIN SUPERUSER", "needs SUPERUSER"),
            (RDS, "CREATE ROLE \"r\" WITH LOGIN REPLICATION", "rds_replication"),
            (RDS, "ALTER ROLE \"owner\" WITH BYPASSRLS", "BYPASSRLS"),
            (RDS, "ALTER ROLE \"postgres\" WITH CONNECTION LIMIT 3", "\"postgres\" is a superuser"),
            (RDS, "CREATE DATABASE \"app\" OWNER \"postgres\"", "membership in role \"postgres\""),
            (&["createrole", "inherit"], "CREATE DATABASE \"app\" OWNER \"master\"", "needs CREATEDB"),
            (&["createdb", "inherit"], "CREATE DATABASE \"app\" OWNER \"owner\"", "GRANT \"owner\" TO \"master\""),
            (&["createdb"], "CREATE ROLE \"r\" WITH LOGIN", "needs CREATEROLE"),
        ] {
            let errors = run(flags, &[(None, sql)]).unwrap_err();
            assert_eq!(errors.len(), 1, "{sql}: {errors:?}");
            assert!(errors[0].contains(needs) && errors[0].starts_with("database.app: `"), "{sql}: {}", errors[0]);
        }
        let errors = run(RDS, &[(Some("postgres"), "CREATE EXTENSION IF NOT EXISTS \"plpython3u\"")]).unwrap_err();
        assert!(errors[0].contains("extension \"plpython3u\" is not trusted"), "{errors:?}");
    }

    #[test]
    fn an_extension_is_dropped_with_its_owners_privileges() {
        let (a, mut live) = server(RDS);
        let mut detail = crate::engine::LiveDbDetail::default();
        detail.extensions.insert("hstore".into());
        detail.extension_owners.insert("hstore".into(), "postgres".into());
        detail.extensions.insert("citext".into());
        detail.extension_owners.insert("citext".into(), "owner".into());
        let mut privileges = BTreeMap::new();
        privileges.insert("PUBLIC".to_string(), crate::engine::Privs::from(["CONNECT".to_string()]));
        live.databases.insert(
            "app".into(),
            crate::engine::LiveDatabase {
                owner: "owner".into(),
                privileges,
                detail: Some(detail),
                ..Default::default()
            },
        );
        let world = BTreeMap::from([(a.clone(), live)]);
        let mut ok = [change_with(&a, &[(Some("app"), "DROP EXTENSION IF EXISTS \"citext\"")])];
        check(&mut ok, &world, &BTreeMap::new()).unwrap();
        assert_eq!(ok[0].steps[0].describe(), "GRANT \"owner\" TO \"master\"");
        let mut refused = [change_with(&a, &[(Some("app"), "DROP EXTENSION IF EXISTS \"hstore\"")])];
        let errors = check(&mut refused, &world, &BTreeMap::new()).unwrap_err();
        assert!(errors[0].contains("only a superuser can drop extension \"hstore\""), "{errors:?}");
    }

    #[test]
    fn a_role_left_with_objects_where_the_plan_does_not_clean_cannot_be_dropped() {
        let (a, mut live) = server(&["superuser", "createrole", "createdb", "inherit"]);
        live.roles.get_mut("owner").unwrap().depends_in = ["other".to_string(), "app".to_string()].into();
        let mut c = crate::diff::change("user.owner", "user", "owner", crate::plan::Action::Delete);
        c.steps = vec![
            crate::diff::sql(
                "user.owner",
                &a,
                Some("app"),
                "REASSIGN OWNED BY \"owner\" TO \"master\"; DROP OWNED BY \"owner\"".into(),
            ),
            crate::diff::sql("user.owner", &a, None, "DROP ROLE \"owner\"".into()),
        ];
        let errors =
            check(&mut [c.clone()], &BTreeMap::from([(a.clone(), live.clone())]), &BTreeMap::new()).unwrap_err();
        assert!(errors[0].contains("database(s) \"other\", which this plan does not clean up"), "{errors:?}");
        live.roles.get_mut("owner").unwrap().depends_in = ["app".to_string()].into();
        check(&mut [c], &BTreeMap::from([(a, live)]), &BTreeMap::new()).unwrap();
    }
}
