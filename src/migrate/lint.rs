//! The lint: every up file is parsed with squawk's PostgreSQL parser and
//! checked with squawk's rule set, whose backward-compatibility rules
//! (renames, drops, a required column, a type change) are always on.
//! `-- dbctl:allow RULE` on the line before a finding silences it.

use serde::Serialize;
use squawk_linter::{Linter, Rule};

/// The rules a service running the previous release breaks on: always on.
pub const BACKWARD_COMPATIBILITY: &[&str] = &[
    "renaming-column",
    "renaming-table",
    "ban-drop-column",
    "ban-drop-table",
    "adding-required-field",
    "changing-column-type",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub rule: String,
    pub message: String,
    pub help: String,
}

impl Finding {
    pub fn render(&self, severity: &str) -> String {
        format!(
            "{}:{}:{}: {severity}[{}]: {}\n  help: {}\n",
            self.file, self.line, self.column, self.rule, self.message, self.help
        )
    }
}

fn help_for(rule: &str) -> &'static str {
    match rule {
        "renaming-column" => "add the new column, write both, move readers, then drop the old one in a later release",
        "renaming-table" => {
            "create the new table (or a view under the old name) and move readers before dropping the old one"
        }
        "ban-drop-column" => "stop reading the column in a release first, then drop it in a later migration",
        "ban-drop-table" => "stop using the table in a release first, then drop it in a later migration",
        "adding-required-field" => "give the column a DEFAULT, or add it nullable, backfill, then SET NOT NULL",
        "changing-column-type" => {
            "add a column of the new type, backfill it, and switch readers; a type change rewrites the table"
        }
        "syntax-error" => "fix the statement; PostgreSQL would refuse it too",
        _ => "see https://squawkhq.com/docs/rules for this rule",
    }
}

/// Lint one up file. `in_transaction`: dbctl runs it in one transaction.
pub fn lint(file: &str, sql: &str, in_transaction: bool) -> Vec<Finding> {
    let parse = squawk_syntax::SourceFile::parse(sql);
    let mut out = Vec::new();
    for e in parse.errors() {
        let (line, column) = super::line_col(sql, usize::from(e.range().start()));
        out.push(Finding {
            file: file.to_string(),
            line,
            column,
            rule: "syntax-error".into(),
            message: e.message().to_string(),
            help: help_for("syntax-error").into(),
        });
    }
    // Timeouts are the caller's session settings, not the migration's.
    let mut linter = Linter::with_rules(&[], &[Rule::RequireTimeoutSettings]);
    for r in BACKWARD_COMPATIBILITY {
        if let Ok(rule) = Rule::try_from(*r) {
            linter.rules.insert(rule);
        }
    }
    linter.settings.assume_in_transaction = in_transaction;
    for v in linter.lint(&parse, sql) {
        let rule = v.code.to_string();
        let (line, column) = super::line_col(sql, usize::from(v.text_range.start()));
        let help = v.help.clone().unwrap_or_else(|| help_for(&rule).to_string());
        let help = if BACKWARD_COMPATIBILITY.contains(&rule.as_str()) { help_for(&rule).to_string() } else { help };
        out.push(Finding { file: file.to_string(), line, column, rule, message: v.message, help });
    }
    let lines: Vec<&str> = sql.lines().collect();
    out.retain(|f| !allowed(&lines, f.line, &f.rule));
    out.sort_by(|a, b| (a.line, a.column, &a.rule).cmp(&(b.line, b.column, &b.rule)));
    out
}

/// `-- dbctl:allow RULE` (one or more rules, comma or space separated) on the line before.
fn allowed(lines: &[&str], line: usize, rule: &str) -> bool {
    let Some(prev) = line.checked_sub(2).and_then(|i| lines.get(i)) else { return false };
    let Some(rest) = prev.trim_start().strip_prefix("-- dbctl:allow") else { return false };
    rest.split(|c: char| c == ',' || c.is_whitespace()).any(|r| r == rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(sql: &str) -> Vec<(usize, String)> {
        lint("f.sql", sql, true).into_iter().map(|f| (f.line, f.rule)).collect()
    }

    #[test]
    fn each_backward_compatibility_rule_at_its_line() {
        let sql = "SELECT 1;\n\
                   ALTER TABLE t RENAME COLUMN a TO b;\n\
                   ALTER TABLE t RENAME TO u;\n\
                   ALTER TABLE t DROP COLUMN c;\n\
                   DROP TABLE v;\n\
                   ALTER TABLE t ADD COLUMN d text NOT NULL;\n\
                   ALTER TABLE t ALTER COLUMN e TYPE bigint;\n";
        let got = rules(sql);
        for (line, rule) in [
            (2, "renaming-column"),
            (3, "renaming-table"),
            (4, "ban-drop-column"),
            (5, "ban-drop-table"),
            (6, "adding-required-field"),
            (7, "changing-column-type"),
        ] {
            assert!(got.contains(&(line, rule.to_string())), "{rule} at line {line}: {got:?}");
        }
    }

    #[test]
    fn allow_on_the_line_before_silences_one() {
        let sql = "-- dbctl:allow ban-drop-table\nDROP TABLE v;\nDROP TABLE w;\n";
        assert_eq!(rules(sql), [(3, "ban-drop-table".to_string())]);
    }

    #[test]
    fn a_syntax_error_is_a_finding() {
        let got = lint("f.sql", "CREATE TABLE t (a int;\n", true);
        assert!(got.iter().any(|f| f.rule == "syntax-error" && f.line == 1), "{got:?}");
    }

    #[test]
    fn a_clean_file_has_no_finding() {
        let sql = "CREATE TABLE loans (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n";
        assert_eq!(rules(sql), []);
    }
}
