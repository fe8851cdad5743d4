//! `dbctl fmt`: canonical formatting that keeps every comment.
//!
//! Rules (those of `terraform fmt`): two-space indentation; one space around
//! `=`, aligned within a run of consecutive attributes; at most one blank
//! line in a row and none at the start or end of a block; one space between
//! a block's type, labels and `{`; comments kept where they were, re-indented;
//! multi-line expressions re-indented by bracket depth (heredocs untouched);
//! a single newline at the end of the file.

use hcl::edit::expr::Expression;
use hcl::edit::structure::{Block, BlockLabel, Body, Structure};
use hcl::edit::{Decorate, RawString};

const INDENT: &str = "  ";

/// Format HCL source. Errors are the parser's message.
pub fn format_source(src: &str) -> Result<String, hcl::edit::parser::Error> {
    let body = hcl::edit::parser::parse_body(src)?;
    let mut out = String::new();
    fmt_body(&body, 0, &mut out);
    let had = !out.is_empty();
    emit_trivia(&raw(body.decor().suffix()), 0, &mut out, !had, true);
    let trimmed = out.trim_end_matches('\n');
    Ok(if trimmed.is_empty() { String::new() } else { format!("{trimmed}\n") })
}

fn raw(s: Option<&RawString>) -> String {
    s.map(|r| r.to_string()).unwrap_or_default()
}

/// Comment lines in a piece of trivia, trimmed (block comments kept whole).
fn comments(trivia: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_block_comment = false;
    for line in trivia.split('\n') {
        let t = line.trim();
        if in_block_comment {
            lines.push(line.trim_end().to_string());
            in_block_comment = !t.contains("*/");
            continue;
        }
        if t.is_empty() {
            continue;
        }
        in_block_comment = t.starts_with("/*") && !t.contains("*/");
        lines.push(t.to_string());
    }
    lines
}

/// Whether trivia holds an empty line. Trivia starts at the beginning of a
/// line, so every segment but the last is a whole line.
fn has_blank_line(trivia: &str) -> bool {
    let segs: Vec<&str> = trivia.split('\n').collect();
    segs[..segs.len() - 1].iter().any(|l| l.trim().is_empty())
}

/// Emit the comments of a piece of trivia, keeping blank lines between
/// them (at most one in a row). `first` drops blank lines before the first
/// comment (start of a body); `last` drops the one after the last (end of a body).
fn emit_trivia(trivia: &str, depth: usize, out: &mut String, first: bool, last: bool) {
    let segs: Vec<&str> = trivia.split('\n').collect();
    let whole = &segs[..segs.len() - 1];
    let mut emitted = !first;
    let mut pending_blank = false;
    let mut in_block = false;
    for line in whole {
        let t = line.trim();
        if in_block {
            out.push_str(line.trim_end());
            out.push('\n');
            in_block = !t.contains("*/");
            continue;
        }
        if t.is_empty() {
            pending_blank = true;
            continue;
        }
        if pending_blank && emitted {
            out.push('\n');
        }
        pending_blank = false;
        out.push_str(&INDENT.repeat(depth));
        out.push_str(t);
        out.push('\n');
        emitted = true;
        in_block = t.starts_with("/*") && !t.contains("*/");
    }
    // A comment at the very end without a newline after it.
    let tail = segs[segs.len() - 1].trim();
    if !tail.is_empty() {
        if pending_blank && emitted {
            out.push('\n');
        }
        out.push_str(&INDENT.repeat(depth));
        out.push_str(tail);
        out.push('\n');
        return;
    }
    if pending_blank && emitted && !last {
        out.push('\n');
    }
}

fn is_multiline_attr(s: &Structure) -> bool {
    match s {
        Structure::Attribute(a) => expr_text(&a.value).contains('\n'),
        Structure::Block(_) => false,
    }
}

fn fmt_body(body: &Body, depth: usize, out: &mut String) {
    let items: Vec<&Structure> = body.iter().collect();
    let ind = INDENT.repeat(depth);
    // Width of the key column for each run of consecutive attributes.
    let mut widths = vec![0usize; items.len()];
    let mut i = 0;
    while i < items.len() {
        if !items[i].is_attribute() {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut w = 0;
        while j < items.len() && items[j].is_attribute() {
            if j > i {
                let prefix = raw(items[j].decor().prefix());
                if has_blank_line(&prefix) || !comments(&prefix).is_empty() || is_multiline_attr(items[j - 1]) {
                    break;
                }
            }
            if let Structure::Attribute(a) = items[j] {
                w = w.max(a.key.as_str().chars().count());
            }
            j += 1;
        }
        for slot in widths.iter_mut().take(j).skip(i) {
            *slot = w;
        }
        i = j;
    }

    for (idx, s) in items.iter().enumerate() {
        emit_trivia(&raw(s.decor().prefix()), depth, out, idx == 0, false);
        out.push_str(&ind);
        match s {
            Structure::Attribute(a) => {
                let key = a.key.as_str();
                out.push_str(key);
                out.push_str(&" ".repeat(widths[idx].saturating_sub(key.chars().count())));
                out.push_str(" = ");
                out.push_str(&reindent(&expr_text(&a.value), depth));
            }
            Structure::Block(b) => fmt_block(b, depth, out),
        }
        let suffix = raw(s.decor().suffix());
        let t = suffix.trim();
        if !t.is_empty() {
            out.push(' ');
            out.push_str(t);
        }
        out.push('\n');
    }
}

fn label_text(l: &BlockLabel) -> String {
    match l {
        BlockLabel::Ident(i) => i.as_str().to_string(),
        BlockLabel::String(s) => format!("\"{}\"", crate::model::escape_hcl_string(s.as_str())),
    }
}

fn fmt_block(b: &Block, depth: usize, out: &mut String) {
    out.push_str(b.ident.as_str());
    for l in &b.labels {
        out.push(' ');
        out.push_str(&label_text(l));
    }
    let body_items = b.body.iter().count();
    let inner_trivia = raw(b.body.decor().suffix());
    let has_inner_comments = !comments(&inner_trivia).is_empty();
    if body_items == 0 && !has_inner_comments {
        out.push_str(" {}");
        return;
    }
    // Keep `lifecycle { prevent_destroy = true }` on one line when written so.
    if b.body.prefer_oneline() && body_items == 1 && !has_inner_comments {
        if let Some(Structure::Attribute(a)) = b.body.iter().next() {
            let v = expr_text(&a.value);
            if !v.contains('\n') {
                out.push_str(&format!(" {{ {} = {} }}", a.key.as_str(), v));
                return;
            }
        }
    }
    out.push_str(" {\n");
    fmt_body(&b.body, depth + 1, out);
    emit_trivia(&raw(b.body.decor().suffix()), depth + 1, out, body_items == 0, true);
    out.push_str(&INDENT.repeat(depth));
    out.push('}');
}

fn expr_text(e: &Expression) -> String {
    let mut e = e.clone();
    e.decor_mut().clear();
    e.to_string().trim().to_string()
}

/// Re-indent the continuation lines of a multi-line expression by bracket depth.
fn reindent(text: &str, depth: usize) -> String {
    if !text.contains('\n') || text.contains("<<") {
        return text.to_string();
    }
    let mut out = String::new();
    let mut level: i64 = 0;
    for (n, line) in text.split('\n').enumerate() {
        let t = line.trim();
        if n > 0 {
            out.push('\n');
            if t.is_empty() {
                continue;
            }
            let closes_first = t.starts_with([']', '}', ')']);
            let l = (level - i64::from(closes_first)).max(0) as usize;
            out.push_str(&INDENT.repeat(depth + l));
        }
        out.push_str(if n == 0 { line.trim_end() } else { t });
        level += bracket_delta(t);
    }
    out
}

fn bracket_delta(line: &str) -> i64 {
    let mut d = 0;
    let mut in_str = false;
    let mut esc = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '#' => break,
            '/' if chars.peek() == Some(&'/') => break,
            '[' | '{' | '(' => d += 1,
            ']' | '}' | ')' => d -= 1,
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::format_source;

    #[test]
    fn idempotent_and_keeps_comments() {
        let src = "# top\nserver  \"main\"{\nengine=\"postgres\" # inline\n   embedded  =   true\n\n\n\n  # about port\nport = 5\n  lifecycle { prevent_destroy = true }\n}\n\n\n\nlocals {\n  list = [\n\"a\",\n      \"b\",\n  ]\n  # trailing\n}\n";
        let once = format_source(src).unwrap();
        let twice = format_source(&once).unwrap();
        assert_eq!(once, twice);
        assert!(once.contains("# inline"));
        assert!(once.contains("# about port"));
        assert!(once.contains("# trailing"));
        assert!(once.contains("  engine   = \"postgres\" # inline\n  embedded = true\n"));
        assert!(once.contains("  list = [\n    \"a\",\n    \"b\",\n  ]\n"));
        assert!(!once.contains("\n\n\n"));
    }
}
