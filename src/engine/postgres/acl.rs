//! PostgreSQL's text form of `aclitem[]`, read without asking the server.
//!
//! The per-database read returns ACL columns as they are stored
//! (`{=U/postgres,"a b"=r*/postgres}`) instead of exploding them with
//! `aclexplode`: every function and sub-query a fresh backend must plan costs
//! catalog lookups, and the read runs once per managed database.
//!
//! Two levels of quoting: `array_out` wraps an element in `"` when it holds a
//! space, comma, brace, quote or backslash, escaping `"` and `\` with `\`;
//! inside, `aclitemout` wraps a role name in `"` unless it is only
//! alphanumerics and `_`, doubling any `"`. An empty grantee is PUBLIC.

/// Privilege letters (`ACL_*_CHR` in PostgreSQL's `acl.h`) and the names
/// `aclexplode` gives them.
const LETTERS: [(char, &str); 15] = [
    ('a', "INSERT"),
    ('r', "SELECT"),
    ('w', "UPDATE"),
    ('d', "DELETE"),
    ('D', "TRUNCATE"),
    ('x', "REFERENCES"),
    ('t', "TRIGGER"),
    ('X', "EXECUTE"),
    ('U', "USAGE"),
    ('C', "CREATE"),
    ('T', "TEMPORARY"),
    ('c', "CONNECT"),
    ('s', "SET"),
    ('A', "ALTER SYSTEM"),
    ('m', "MAINTAIN"),
];

/// One ACL entry: the grantee (`PUBLIC` for everyone) and its privileges
/// (grant options are not tracked, as with `aclexplode`'s `privilege_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub grantee: String,
    pub privileges: Vec<&'static str>,
}

/// Parse an `aclitem[]` in its text form.
pub fn parse(text: &str) -> Result<Vec<AclEntry>, String> {
    elements(text)?.iter().map(|item| entry(item)).collect()
}

/// The elements of a one-dimensional array literal, unquoted.
fn elements(text: &str) -> Result<Vec<String>, String> {
    let bad = |why: &str| format!("cannot read ACL {text:?}: {why}");
    let inner = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or_else(|| bad("not an array"))?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or_else(|| bad("dangling escape"))?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(bad("unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(_) => return Err(bad("text after a quoted element")),
        }
    }
}

/// `grantee=privileges/grantor`, as `aclitemout` writes it.
fn entry(item: &str) -> Result<AclEntry, String> {
    let bad = |why: &str| format!("cannot read ACL item {item:?}: {why}");
    let (grantee, rest) = name(item).ok_or_else(|| bad("unterminated role name"))?;
    let rest = rest.strip_prefix('=').ok_or_else(|| bad("no '=' after the grantee"))?;
    let (letters, _grantor) = rest.split_once('/').ok_or_else(|| bad("no '/' before the grantor"))?;
    let mut privileges = Vec::new();
    for c in letters.chars().filter(|&c| c != '*') {
        let (_, p) = LETTERS.iter().find(|(l, _)| *l == c).ok_or_else(|| {
            bad(&format!("unknown privilege letter '{c}' (a PostgreSQL newer than this dbctl knows?)"))
        })?;
        privileges.push(*p);
    }
    Ok(AclEntry { grantee: if grantee.is_empty() { "PUBLIC".into() } else { grantee }, privileges })
}

/// A role name at the start of `s` (quoted or bare) and what follows it.
fn name(s: &str) -> Option<(String, &str)> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find('=').unwrap_or(s.len());
        return Some((s[..end].to_string(), &s[end..]));
    };
    let mut out = String::new();
    let mut rest = quoted;
    loop {
        let i = rest.find('"')?;
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                out.push('"');
                rest = after;
            }
            None => return Some((out, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Vec<(String, Vec<&'static str>)> {
        parse(text).unwrap().into_iter().map(|e| (e.grantee, e.privileges)).collect()
    }

    #[test]
    fn plain_entries_public_and_grant_options() {
        assert_eq!(
            flat("{postgres=UC/postgres,=U/postgres,app=r*w/postgres}"),
            vec![
                ("postgres".into(), vec!["USAGE", "CREATE"]),
                ("PUBLIC".into(), vec!["USAGE"]),
                ("app".into(), vec!["SELECT", "UPDATE"]),
            ]
        );
        assert_eq!(flat("{}"), vec![]);
        assert_eq!(
            flat("{a=arwdDxtm/a}")[0].1,
            vec!["INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"]
        );
    }

    #[test]
    fn quoted_names_at_both_levels() {
        // Role `it's "q", {x}\y = z/w` granted SELECT by `Zürich`.
        let text = r#"{"\"it's \"\"q\"\", {x}\\y = z/w\"=r/\"Zürich\"",plain=U/x}"#;
        assert_eq!(
            flat(text),
            vec![("it's \"q\", {x}\\y = z/w".into(), vec!["SELECT"]), ("plain".into(), vec!["USAGE"])]
        );
        assert_eq!(flat(r#"{"\"a;b\"=c/postgres"}"#), vec![("a;b".into(), vec!["CONNECT"])]);
    }

    #[test]
    fn malformed_text_is_an_error_not_a_guess() {
        for bad in ["", "x=r/y", "{x=r}", "{x=q/y}", r#"{"x=r/y}"#, r#"{"\"x=r/y"}"#, r#"{"a"b}"#] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
