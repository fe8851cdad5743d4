//! Redis statements as a plan shows them, and the ACL read back.
//!
//! A statement is one command line: fixed keywords bare, every value (user,
//! namespace, key pattern, selector) double-quoted with backslash escapes as
//! redis-cli writes them. `tokenize` turns the same text back into argv, so the
//! engine runs exactly what the plan shows. A database is a key namespace
//! `NAME:*`, listed in the SET `REGISTRY`. A user's permissions are root
//! rules (connection commands only) plus one ACL selector per namespace.
//!
//! Redis 7.0 rewrites command rules when it describes them (`+@read
//! -@dangerous` reads back as `-@all +@read -sort_ro -keys`), 7.2 keeps them
//! as written; so a rule string is read by evaluating it over the server's
//! categories (`Categories`) into a set of commands, and compared with the
//! sets dbctl's privileges denote. Written permissions then read back equal
//! on either version.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::Privs;

/// The SET of managed namespace names (Redis has no namespace registry).
pub const REGISTRY: &str = "__dbctl__:databases";
pub const SENSITIVE: &str = "(sensitive)";
/// dbctl privilege → the ACL category it grants on a namespace's keys.
pub const PRIVILEGES: &[(&str, &str)] = &[("read", "read"), ("write", "write"), ("keyspace", "keyspace")];
/// Taken away in every selector: FLUSHALL, FLUSHDB, KEYS, CONFIG, DEBUG,
/// SHUTDOWN, ACL, MIGRATE, RESTORE, SORT… act beyond a namespace's keys or
/// on the server itself.
pub const DENIED_CATEGORY: &str = "dangerous";
/// What every user may run outside its namespaces: log in (AUTH, HELLO for
/// RESP3 clients), name its connection (client libraries send CLIENT
/// SETNAME), PING (pools' health checks), RESET and QUIT. Not SELECT:
/// namespaces and their counts and backups live in database 0, and clients
/// configured for database 0 do not send it. Nothing that reads or writes keys.
pub const ROOT_COMMANDS: &[&str] = &["auth", "hello", "ping", "quit", "reset", "client|setname"];
/// The pseudo-command that deletes a namespace's keys: SCAN MATCH pattern,
/// UNLINK in batches (Redis has no single command for it).
pub const UNLINK_MATCHING: &str = "UNLINK-MATCHING";
/// Put in LiveRole::flags when a user's ACL holds rules dbctl does not write
/// (other key patterns, commands, channels): rewriting its permissions changes it.
pub const CUSTOM_ACL: &str = "custom-acl";

/// One argument as a statement shows it: always double-quoted; `"` and `\`
/// escaped, control characters as `\n` `\r` `\t` `\xHH`; other Unicode as is.
pub fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A statement's argv: whitespace-separated tokens, each bare (no quotes or
/// backslashes) or one double-quoted string with `quote`'s escapes.
pub fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { return Ok(argv) };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted argument in `{text}`")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"') => arg.push('"'),
                        Some('\\') => arg.push('\\'),
                        Some('n') => arg.push('\n'),
                        Some('r') => arg.push('\r'),
                        Some('t') => arg.push('\t'),
                        Some('x') => {
                            let hex: String = chars.by_ref().take(2).collect();
                            let b = u8::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|b| *b < 0x80)
                                .ok_or_else(|| format!("bad \\x escape in `{text}`"))?;
                            arg.push(b as char);
                        }
                        _ => return Err(format!("bad escape in `{text}`")),
                    },
                    Some(c) => arg.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!("a closing quote must end its argument in `{text}`"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '"' || c == '\\' {
                    return Err(format!("a quote or backslash inside an unquoted argument in `{text}`"));
                }
                arg.push(c);
            }
        }
        argv.push(arg);
    }
}

/// `name` with the glob specials (`* ? [ ] \`) escaped: matches only itself.
pub fn escape_glob(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key pattern of a namespace's keys: `escaped(NAME):*`.
pub fn key_pattern(namespace: &str) -> String {
    format!("{}:*", escape_glob(namespace))
}

/// The namespace whose `key_pattern` this is; None for any other pattern.
pub fn namespace_of(pattern: &str) -> Option<String> {
    let body = pattern.strip_suffix(":*")?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().filter(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))?),
            '*' | '?' | '[' | ']' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The key prefixes (`NAME:`) of the namespaces in `all` nested in
/// `namespace` (`app:cache` in `app`): `app`'s pattern matches their keys,
/// which are theirs, not `app`'s, when counting and dropping. A grant on
/// `app` covers them all the same (ACL patterns have no exceptions).
pub fn nested_in(namespace: &str, all: &[String]) -> Vec<String> {
    let prefix = format!("{namespace}:");
    all.iter().filter(|n| n.starts_with(&prefix)).map(|n| format!("{n}:")).collect()
}

/// Why a name cannot be a Redis database, if so: dbctl's own keys live
/// under `__dbctl__:` (the registry), which no namespace may cover.
pub fn namespace_problem(name: &str) -> Option<String> {
    (name.is_empty() || name == "__dbctl__" || name.starts_with("__dbctl__:"))
        .then(|| format!("Redis database name {} is empty or reserved for dbctl's own keys", quote(name)))
}

/// Why a namespace cannot carry grants, if so. Redis refuses key patterns
/// with whitespace, and parses a selector's text again with quote handling,
/// where a `"` or `'` would change the pattern (`~a"b:*"` means `~ab:*`).
pub fn grant_problem(namespace: &str) -> Option<String> {
    if namespace.is_empty() {
        return Some("a Redis database name cannot be empty".into());
    }
    namespace.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '"' || *c == '\'').map(|c| {
        format!(
            "Redis cannot grant on database {}: its ACL key patterns cannot hold {:?} (spaces, control \
             characters and quotes)",
            quote(namespace),
            c
        )
    })
}

/// Why a name cannot be a Redis ACL user, if so (the server refuses these).
pub fn user_problem(name: &str) -> Option<String> {
    (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '\0'))
        .then(|| format!("Redis user names cannot be empty or hold spaces or NUL: {}", quote(name)))
}

fn line(words: &[&str], args: &[&str]) -> String {
    words.iter().map(|w| w.to_string()).chain(args.iter().map(|a| quote(a))).collect::<Vec<_>>().join(" ")
}

/// `SADD "__dbctl__:databases" "NAME"`: the namespace is managed from now on.
pub fn create_namespace(name: &str) -> String {
    line(&["SADD"], &[REGISTRY, name])
}

/// Dropping a namespace: its keys go first (`UNLINK-MATCHING` pattern), then
/// its registry entry, so an interrupted drop is still listed and planned again.
pub fn drop_namespace(name: &str) -> Vec<String> {
    vec![line(&[UNLINK_MATCHING], &[&key_pattern(name)]), line(&["SREM"], &[REGISTRY, name])]
}

fn root_rules() -> String {
    let mut r = vec!["resetchannels".to_string(), "-@all".into()];
    r.extend(ROOT_COMMANDS.iter().map(|c| format!("+{c}")));
    r.join(" ")
}

/// The one writer of a password statement (`create`: a new user, on or off).
pub(crate) fn password_statement(name: &str, credential: &str, create: Option<bool>) -> String {
    match create {
        // `reset`: whatever a user of that name had before is gone.
        Some(login) => format!(
            "ACL SETUSER {} reset {} {} {}",
            quote(name),
            if login { "on" } else { "off" },
            quote(&format!("#{credential}")),
            root_rules()
        ),
        None => format!("ACL SETUSER {} resetpass {}", quote(name), quote(&format!("#{credential}"))),
    }
}

/// A new user without a password (its own statement sets one: an account
/// that is on cannot log in without one), no other permissions than
/// `ROOT_COMMANDS` until `set_grants`.
pub fn create_account(name: &str, login: bool) -> String {
    format!("ACL SETUSER {} reset {} {}", quote(name), if login { "on" } else { "off" }, root_rules())
}

/// A new user: no other permissions than `ROOT_COMMANDS` until `set_grants`;
/// `(sensitive)` where the password's hash goes (`with_password`).
pub fn create_user(name: &str, login: bool) -> String {
    password_statement(name, SENSITIVE, Some(login))
}

/// A user's new password (its other passwords are removed).
pub fn set_password(name: &str) -> String {
    password_statement(name, SENSITIVE, None)
}

/// `create_user`'s or `set_password`'s text with the SHA-256 of `password`
/// in place of `(sensitive)`: what runs. Only the hash reaches the server.
/// Text those functions did not write is refused (the error never holds the password).
pub fn with_password(shown: &str, password: &str) -> Result<String, String> {
    let refuse = || format!("the plan's password statement `{shown}` is not one dbctl writes: make the plan again");
    let argv = tokenize(shown).map_err(|_| refuse())?;
    let name = argv.get(2).ok_or_else(refuse)?;
    let hash = sha256_hex(password);
    for create in [None, Some(true), Some(false)] {
        if shown == password_statement(name, SENSITIVE, create) {
            return Ok(password_statement(name, &hash, create));
        }
    }
    Err(refuse())
}

pub fn sha256_hex(password: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(password.as_bytes()))
}

/// `ACL SETUSER "NAME" on|off`: may log in or not.
pub fn set_login(name: &str, login: bool) -> String {
    format!("ACL SETUSER {} {}", quote(name), if login { "on" } else { "off" })
}

/// `ACL DELUSER "NAME"`; Redis also closes its connections.
pub fn delete_user(name: &str) -> String {
    line(&["ACL", "DELUSER"], &[name])
}

/// The selector for privileges on one namespace: `(~ns:* -@all +@read -@dangerous)`.
pub fn selector(namespace: &str, privileges: &Privs) -> Result<String, String> {
    if let Some(p) = grant_problem(namespace) {
        return Err(p);
    }
    let mut rules = vec![format!("~{}", key_pattern(namespace)), "-@all".into()];
    for p in privileges {
        let (_, cat) = PRIVILEGES
            .iter()
            .find(|(n, _)| n == p)
            .ok_or_else(|| format!("Redis has no privilege {p:?}: use read, write or keyspace"))?;
        rules.push(format!("+@{cat}"));
    }
    rules.push(format!("-@{DENIED_CATEGORY}"));
    Ok(format!("({})", rules.join(" ")))
}

/// A user's whole permission set in one statement (selectors cannot be
/// removed one at a time): root rules, no key patterns of its own, one
/// selector per namespace with privileges (namespaces with none are left out).
pub fn set_grants(name: &str, grants: &BTreeMap<String, Privs>) -> Result<String, String> {
    let mut out = format!("ACL SETUSER {} resetkeys {} clearselectors", quote(name), root_rules());
    for (ns, privs) in grants.iter().filter(|(_, p)| !p.is_empty()) {
        out.push(' ');
        out.push_str(&quote(&selector(ns, privs)?));
    }
    Ok(out)
}

/// A reply as far as `ACL GETUSER` needs it (the client maps its values to this).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Str(String),
    List(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Str(s) => s.clone(),
            _ => String::new(),
        }
    }
    fn list(&self) -> &[Reply] {
        match self {
            Reply::List(l) => l,
            _ => &[],
        }
    }
}

/// Root permissions or one selector, as ACL GETUSER describes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub commands: String,
    /// Key patterns with their `~` / `%R~` / `%W~` prefix.
    pub keys: Vec<String>,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclUser {
    pub flags: BTreeSet<String>,
    /// SHA-256 hex of each password.
    pub passwords: Vec<String>,
    pub root: Selector,
    pub selectors: Vec<Selector>,
}

fn pairs(list: &[Reply]) -> impl Iterator<Item = (String, &Reply)> {
    list.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].text(), &c[1]))
}

fn words(r: &Reply) -> Vec<String> {
    match r {
        Reply::Str(s) => s.split_whitespace().map(String::from).collect(),
        Reply::List(l) => l.iter().map(Reply::text).collect(),
        Reply::Nil => Vec::new(),
    }
}

fn parse_selector(fields: &[Reply]) -> Selector {
    let mut s = Selector::default();
    for (k, v) in pairs(fields) {
        match k.as_str() {
            "commands" => s.commands = v.text(),
            // Patterns cannot hold spaces, so splitting is exact.
            "keys" => s.keys = words(v),
            "channels" => s.channels = words(v),
            _ => {}
        }
    }
    s
}

/// An `ACL GETUSER` reply (RESP2 flat list or RESP3 map, as a flat list); None for Nil (no such user).
pub fn parse_getuser(reply: &Reply) -> Option<AclUser> {
    if *reply == Reply::Nil {
        return None;
    }
    let fields = reply.list();
    let mut u = AclUser { root: parse_selector(fields), ..AclUser::default() };
    for (k, v) in pairs(fields) {
        match k.as_str() {
            "flags" => u.flags = words(v).into_iter().collect(),
            "passwords" => u.passwords = words(v),
            "selectors" => u.selectors = v.list().iter().map(|s| parse_selector(s.list())).collect(),
            _ => {}
        }
    }
    Some(u)
}

/// The server's command categories (`ACL CAT c` for each c): category →
/// commands, subcommands as `container|sub`.
#[derive(Debug, Clone, Default)]
pub struct Categories(pub BTreeMap<String, BTreeSet<String>>);

impl Categories {
    fn get(&self, cat: &str) -> BTreeSet<String> {
        self.0.get(cat).cloned().unwrap_or_default()
    }

    fn all(&self) -> BTreeSet<String> {
        self.0.values().flatten().cloned().collect()
    }

    /// The commands `+@cat` for each privilege grants minus the denied ones.
    fn privilege(&self, privilege: &str) -> BTreeSet<String> {
        let cat = PRIVILEGES.iter().find(|(n, _)| *n == privilege).map(|(_, c)| *c).unwrap_or(privilege);
        &self.get(cat) - &self.get(DENIED_CATEGORY)
    }

    /// The commands (leaves) a rule string allows, evaluated left to right.
    pub fn allowed(&self, rules: &str) -> BTreeSet<String> {
        let all = self.all();
        let mut set = BTreeSet::new();
        for rule in rules.split_whitespace() {
            let (add, name) = match rule {
                "allcommands" => (true, "@all"),
                "nocommands" => (false, "@all"),
                r if r.starts_with('+') || r.starts_with('-') => (r.starts_with('+'), &r[1..]),
                _ => continue,
            };
            let items: BTreeSet<String> = if name == "@all" {
                all.clone()
            } else if let Some(cat) = name.strip_prefix('@') {
                self.get(cat)
            } else {
                // A container names all its subcommands.
                let prefix = format!("{name}|");
                let subs: BTreeSet<String> = all.iter().filter(|c| c.starts_with(&prefix)).cloned().collect();
                if subs.is_empty() {
                    BTreeSet::from([name.to_string()])
                } else {
                    subs
                }
            };
            if add {
                set.extend(items);
            } else {
                set.retain(|c| !items.contains(c));
            }
        }
        set
    }

    /// The privileges whose union is exactly `allowed`; None when no set is.
    pub fn privileges_of(&self, allowed: &BTreeSet<String>) -> Option<Privs> {
        let mut privs = Privs::new();
        let mut union = BTreeSet::new();
        for (p, _) in PRIVILEGES {
            let cmds = self.privilege(p);
            if !cmds.is_empty() && cmds.is_subset(allowed) {
                union.extend(cmds);
                privs.insert(p.to_string());
            }
        }
        (union == *allowed).then_some(privs)
    }

    /// True when every privilege grants a command no other one does, so any
    /// set of privileges reads back as itself.
    pub fn distinguishes_privileges(&self) -> bool {
        PRIVILEGES.iter().all(|(p, _)| {
            let others: BTreeSet<String> =
                PRIVILEGES.iter().filter(|(o, _)| o != p).flat_map(|(o, _)| self.privilege(o)).collect();
            !self.privilege(p).is_subset(&others)
        })
    }
}

/// A user as dbctl sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserAccess {
    pub login: bool,
    pub password_hashes: Vec<String>,
    /// Namespace → privileges, from the selectors dbctl's form.
    pub grants: BTreeMap<String, Privs>,
    /// False when the ACL holds anything `set_grants` does not write.
    pub exact: bool,
}

/// What a user's ACL means in dbctl's terms.
pub fn interpret(u: &AclUser, cats: &Categories) -> UserAccess {
    let root_expected: BTreeSet<String> = cats.allowed(&root_rules());
    let mut exact = u.root.keys.is_empty()
        && u.root.channels.is_empty()
        && cats.allowed(&u.root.commands) == root_expected
        && !u.flags.contains("nopass")
        && !u.flags.contains("allkeys")
        && !u.flags.contains("allchannels")
        && !u.flags.contains("allcommands");
    let mut grants = BTreeMap::new();
    for s in &u.selectors {
        let ns = match s.keys.as_slice() {
            [k] => k.strip_prefix('~').and_then(namespace_of),
            _ => None,
        };
        let privs = cats.privileges_of(&cats.allowed(&s.commands));
        match (ns, privs) {
            (Some(ns), Some(p)) if s.channels.is_empty() && !p.is_empty() && !grants.contains_key(&ns) => {
                grants.insert(ns, p);
            }
            _ => exact = false,
        }
    }
    UserAccess { login: u.flags.contains("on"), password_hashes: u.passwords.clone(), grants, exact }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "plain",
        "a\"b",
        "back\\slash",
        "semi;colon",
        "sp ace",
        "new\nline\r\ttab",
        "ünï ✓ 名前",
        "*?[]",
        "",
        "\u{1}",
    ];

    #[test]
    fn quoted_arguments_tokenize_back() {
        for name in HOSTILE {
            for s in [create_namespace(name), set_login(name, true), delete_user(name), create_user(name, false)] {
                let argv = tokenize(&s).unwrap();
                assert!(argv.contains(&name.to_string()), "{s} -> {argv:?}");
                assert!(!s.contains('\n'), "one line: {s:?}");
            }
            assert_eq!(tokenize(&drop_namespace(name)[0]).unwrap()[1], key_pattern(name));
        }
        assert_eq!(tokenize("ACL  SETUSER \"a b\" on").unwrap(), ["ACL", "SETUSER", "a b", "on"]);
        for bad in ["\"open", "\"a\"b", "a\"b", "\"\\q\"", "\"\\xzz\""] {
            assert!(tokenize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_specials_are_escaped_and_read_back() {
        assert_eq!(key_pattern("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d:*");
        for name in HOSTILE {
            assert_eq!(namespace_of(&key_pattern(name)).as_deref(), Some(*name));
        }
        assert_eq!(namespace_of("*"), None);
        assert_eq!(namespace_of("a*:*"), None);
        assert_eq!(namespace_of("a:b"), None);
    }

    #[test]
    fn password_placeholder_is_substituted_only_in_dbctl_text() {
        let shown = create_user("u\";x", true);
        assert!(shown.contains("\"#(sensitive)\""), "{shown}");
        let real = with_password(&shown, "s3cret").unwrap();
        assert!(!real.contains("s3cret") && real.contains(&sha256_hex("s3cret")), "{real}");
        assert_eq!(tokenize(&real).unwrap()[2], "u\";x");
        assert!(with_password(&set_password("ü"), "p").unwrap().ends_with(&format!("\"#{}\"", sha256_hex("p"))));
        for forged in [
            "ACL SETUSER \"u\" reset on \"#(sensitive)\" +@all".to_string(),
            format!("{} \"~*\"", set_password("u")),
            "CONFIG SET requirepass \"(sensitive)\"".into(),
        ] {
            let e = with_password(&forged, "s3cret").unwrap_err();
            assert!(!e.contains("s3cret"));
        }
        assert_eq!(sha256_hex("password"), "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8");
    }

    #[test]
    fn grants_render_one_selector_per_namespace() {
        let grants = BTreeMap::from([
            ("app".to_string(), Privs::from(["read".into(), "write".into()])),
            ("r*o".to_string(), Privs::from(["read".into()])),
            ("none".to_string(), Privs::new()),
        ]);
        let s = set_grants("u", &grants).unwrap();
        assert_eq!(
            s,
            "ACL SETUSER \"u\" resetkeys resetchannels -@all +auth +hello +ping +quit +reset +client|setname \
             clearselectors \"(~app:* -@all +@read +@write -@dangerous)\" \"(~r\\\\*o:* -@all +@read -@dangerous)\""
        );
        assert_eq!(tokenize(&s).unwrap()[14], "(~r\\*o:* -@all +@read -@dangerous)");
        for refused in ["a b", "a\"b", "a'b", "a\nb", ""] {
            let e = set_grants("u", &BTreeMap::from([(refused.into(), Privs::from(["read".into()]))])).unwrap_err();
            assert!(e.contains("Redis"), "{e}");
        }
        assert!(namespace_problem("__dbctl__").is_some() && namespace_problem("app").is_none());
        assert_eq!(nested_in("a", &["a".into(), "a:b".into(), "ab".into(), "a:b:c".into()]), ["a:b:", "a:b:c:"]);
        assert!(set_grants("u", &BTreeMap::from([("a".into(), Privs::from(["all".into()]))])).is_err());
    }

    fn cats() -> Categories {
        let set = |s: &str| s.split_whitespace().map(String::from).collect::<BTreeSet<_>>();
        Categories(BTreeMap::from([
            ("read".into(), set("get exists scan keys object|freq")),
            ("write".into(), set("set del flushall")),
            ("keyspace".into(), set("del exists scan keys object|help object|freq")),
            ("dangerous".into(), set("keys flushall")),
            ("connection".into(), set("auth hello ping quit reset client|setname client|kill")),
        ]))
    }

    #[test]
    fn rewritten_rules_read_back_as_written() {
        let c = cats();
        assert!(c.distinguishes_privileges());
        // What Redis 7.0 describes `-@all +@read -@dangerous` as, and what 7.2 keeps.
        for rules in ["-@all +@read -keys", "-@all +@read -@dangerous"] {
            assert_eq!(c.privileges_of(&c.allowed(rules)), Some(Privs::from(["read".into()])));
        }
        let owner = c.allowed("-@all +@read +@write +@keyspace -@dangerous");
        assert_eq!(c.privileges_of(&owner).unwrap().len(), 3);
        assert_eq!(c.privileges_of(&c.allowed("-@all +@read")), None, "keys is more than read");
        assert_eq!(c.allowed("-@all +object -object|help"), BTreeSet::from(["object|freq".to_string()]));
        let reply = Reply::List(vec![
            Reply::Str("flags".into()),
            Reply::List(vec![Reply::Str("on".into()), Reply::Str("sanitize-payload".into())]),
            Reply::Str("passwords".into()),
            Reply::List(vec![Reply::Str("ab".into())]),
            Reply::Str("commands".into()),
            Reply::Str("-@all +hello +ping +auth +client|setname +quit +reset".into()),
            Reply::Str("keys".into()),
            Reply::Str("".into()),
            Reply::Str("channels".into()),
            Reply::Str("".into()),
            Reply::Str("selectors".into()),
            Reply::List(vec![Reply::List(vec![
                Reply::Str("commands".into()),
                Reply::Str("-@all +@read -keys".into()),
                Reply::Str("keys".into()),
                Reply::Str("~a\\*;\"b:*".into()),
                Reply::Str("channels".into()),
                Reply::Str("".into()),
            ])]),
        ]);
        let a = interpret(&parse_getuser(&reply).unwrap(), &c);
        assert!(a.login && a.exact, "{a:?}");
        assert_eq!(a.grants, BTreeMap::from([("a*;\"b".to_string(), Privs::from(["read".into()]))]));
        assert_eq!(parse_getuser(&Reply::Nil), None);
    }
}
