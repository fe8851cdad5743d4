//! Splitting a migration file into its statements, with the byte offset
//! each starts at (for `file:line` in errors).

/// The statements of a PostgreSQL file with the byte offset each starts at.
/// A file squawk's parser cannot split cleanly runs as one piece.
pub fn statements(sql: &str) -> Vec<(usize, &str)> {
    use squawk_syntax::ast::AstNode;
    let parse = squawk_syntax::SourceFile::parse(sql);
    if !parse.errors().is_empty() {
        return vec![(0, sql)];
    }
    let starts: Vec<usize> = parse.tree().stmts().map(|s| usize::from(s.syntax().text_range().start())).collect();
    if starts.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(sql.len());
        out.push((s, &sql[s..end]));
    }
    out
}

/// Statements of a MySQL file: split at `;` outside quotes and comments.
pub fn split_mysql(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                out.push((start, &sql[start..=i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, &sql[start.min(sql.len())..]));
    out.retain(|(_, s)| !only_comments(s));
    out
}

fn only_comments(s: &str) -> bool {
    s.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with("--") || l.starts_with('#') || l == ";"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::line_col;

    #[test]
    fn statements_keep_their_offsets() {
        let sql = "-- a\nCREATE TABLE t (a text);\n\nINSERT INTO t VALUES ('x;y');\n";
        let s = statements(sql);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(line_col(sql, s[1].0).0, 4);
        let m = split_mysql(sql);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].1.contains("'x;y'"));
    }
}
