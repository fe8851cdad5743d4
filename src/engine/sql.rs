//! Quoting for SQL text. DDL takes no bind parameters, so every identifier
//! and literal that reaches a statement goes through these functions, tested
//! with hostile names.

/// A PostgreSQL identifier: `"..."` with `"` doubled. Names are never left
/// unquoted, so case and unicode survive.
pub fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal: `'...'` with `'` doubled; an `E''` literal
/// when it holds a backslash, so the result never depends on
/// standard_conforming_strings.
pub fn pg_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// A MySQL/MariaDB identifier: `` `...` `` with `` ` `` doubled.
pub fn mysql_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MySQL/MariaDB string literal, escaping what the server's default
/// sql_mode treats specially.
pub fn mysql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A MySQL/MariaDB account: `'user'@'host'`, or `'role'` for a role (no host).
pub fn mysql_account(name: &str, host: Option<&str>) -> String {
    match host {
        Some(h) => format!("{}@{}", mysql_literal(name), mysql_literal(h)),
        None => mysql_literal(name),
    }
}

/// The `` `db`.* `` of a database-level GRANT or REVOKE. `_` and `%` are
/// wildcards there, so they (and `\`) are escaped to name exactly one database.
pub fn mysql_grant_on(database: &str) -> String {
    let escaped = database.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%");
    format!("{}.*", mysql_ident(&escaped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names() {
        assert_eq!(pg_ident("a\"b; DROP TABLE x; --"), "\"a\"\"b; DROP TABLE x; --\"");
        assert_eq!(pg_ident("Ünïcødé 名前"), "\"Ünïcødé 名前\"");
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(pg_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(mysql_ident("a`b"), "`a``b`");
        assert_eq!(mysql_literal("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(mysql_account("o'k", Some("%")), "'o''k'@'%'");
        assert_eq!(mysql_account("r", None), "'r'");
        assert_eq!(mysql_grant_on("my_db%`x"), "`my\\_db\\%``x`.*");
    }
}
