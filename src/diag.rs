//! One diagnostic type for every problem dbctl reports about a configuration.
//!
//! Diagnostics are collected (never thrown at the first error) and rendered by
//! miette only at the edge (`render`). Each carries the file it points into, a
//! primary span with a label, optional secondary labels in the same file, and
//! an optional help line ("did you mean ...").

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, Severity, SourceCode};

/// A loaded configuration file: its display name (relative to the working
/// directory when possible) and its text.
#[derive(Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// The largest char boundary at or before `offset` (parsers may report a
/// byte inside a multi-byte character).
pub fn char_floor(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

impl SourceFile {
    /// A one-character span at a parser's error offset.
    pub fn error_span(&self, offset: usize) -> std::ops::Range<usize> {
        let off = char_floor(&self.text, offset);
        let end = self.text[off..].chars().next().map_or(off, |c| off + c.len_utf8());
        off..end
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = char_floor(&self.text, offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// A place in a configuration file.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl Loc {
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Self {
        Loc { file: file.clone(), span }
    }

    /// `file:line:col`, used inside messages that refer to another place.
    pub fn describe(&self) -> String {
        let (l, c) = self.file.line_col(self.span.start);
        format!("{}:{}:{}", self.file.name, l, c)
    }

    pub fn line(&self) -> usize {
        self.file.line_col(self.span.start).0
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub loc: Option<Loc>,
    pub label: String,
    pub secondary: Vec<(Range<usize>, String)>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            loc: None,
            label: String::new(),
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message) }
    }

    pub fn at(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        self.loc = Some(loc.clone());
        self.label = label.into();
        self
    }

    /// A second label in the same file as the primary one.
    pub fn also(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        match &self.loc {
            Some(primary) if Arc::ptr_eq(&primary.file, &loc.file) => {
                self.secondary.push((loc.span.clone(), label.into()));
            }
            _ => {
                let note = format!("{} ({})", label.into(), loc.describe());
                self.help = Some(match self.help.take() {
                    Some(h) => format!("{h}\n{note}"),
                    None => note,
                });
            }
        }
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        let help = help.into();
        self.help = Some(match self.help.take() {
            Some(h) => format!("{help}\n{h}"),
            None => help,
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line` of the primary label, if any (used by tests and JSON output).
    pub fn line(&self) -> Option<usize> {
        self.loc.as_ref().map(Loc::line)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// miette needs the source as `SourceCode`; we hand it a named copy.
struct Rendered<'a> {
    d: &'a Diagnostic,
    source: Option<NamedSource<String>>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn severity(&self) -> Option<Severity> {
        Some(self.d.severity)
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let loc = self.d.loc.as_ref()?;
        let len = loc.span.end.saturating_sub(loc.span.start);
        let primary = LabeledSpan::new_primary_with_span(
            (!self.d.label.is_empty()).then(|| self.d.label.clone()),
            (loc.span.start, len),
        );
        let rest = self
            .d
            .secondary
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), (s.start, s.end.saturating_sub(s.start))));
        Some(Box::new(std::iter::once(primary).chain(rest)))
    }
}

/// Render diagnostics as text. `color` only on a terminal; tests and CI get
/// plain unicode so snapshots are stable.
pub fn render(diags: &[Diagnostic], color: bool) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let source = d.loc.as_ref().map(|l| NamedSource::new(l.file.name.clone(), l.file.text.clone()));
        let r = Rendered { d, source };
        let _ = handler.render_report(&mut out, &r);
        out.push('\n');
    }
    out
}

/// Suggest the closest of `candidates` to `input`, if it is close enough.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Collected diagnostics; `has_errors` decides whether anything may run.
#[derive(Debug, Default)]
pub struct Diags(pub Vec<Diagnostic>);

impl Diags {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn extend(&mut self, other: Diags) {
        self.0.extend(other.0);
    }
}
