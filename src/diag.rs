//! One diagnostic type for every problem dbctl reports about a configuration.
//!
//! Diagnostics are collected (never thrown at the first error) and rendered by
//! miette only at the edge (`render`). Each carries the file it points into, a
//! primary span with a label, optional secondary labels in the same file, and
//! an optional help line ("did you mean ...").

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use std::collections::HashMap;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, Severity, SourceCode,
    SourceSpan, SpanContents,
};

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

/// Kept at 128 bytes (clippy's `result_large_err`): rarely used text is boxed.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub loc: Option<Loc>,
    pub label: Box<str>,
    pub secondary: Vec<(Range<usize>, String)>,
    pub help: Option<Box<str>>,
    /// The address the diagnostic is about, when it is about one resource:
    /// identical warnings about different resources are shown as one.
    pub subject: Option<Box<str>>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            loc: None,
            label: "".into(),
            secondary: Vec::new(),
            help: None,
            subject: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message) }
    }

    pub fn at(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        self.loc = Some(loc.clone());
        self.label = label.into().into_boxed_str();
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
                    Some(h) => format!("{h}\n{note}").into(),
                    None => note.into(),
                });
            }
        }
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        let help = help.into();
        self.help = Some(match self.help.take() {
            Some(h) => format!("{help}\n{h}").into(),
            None => help.into(),
        });
        self
    }

    /// Name the resource this diagnostic is about (see `subject`).
    pub fn about(mut self, subject: impl ToString) -> Self {
        self.subject = Some(subject.to_string().into());
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

/// Where each line of a file starts: built once per file and rendering, so
/// showing a diagnostic reads only the few lines around it (miette's own
/// `SourceCode` for strings scans the text from its start every time, which
/// makes thousands of diagnostics in one large file quadratic).
struct Lines {
    file: Arc<SourceFile>,
    starts: Vec<usize>,
}

impl Lines {
    fn new(file: &Arc<SourceFile>) -> Self {
        let bytes = file.text.as_bytes();
        let mut starts = vec![0];
        for (i, b) in bytes.iter().enumerate() {
            // miette counts a lone `\r` as a line break too.
            if *b == b'\n' || (*b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                starts.push(i + 1);
            }
        }
        Lines { file: file.clone(), starts }
    }

    /// 0-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset).saturating_sub(1)
    }
}

/// `file`, 1-based line and column of each diagnostic's primary label, with
/// one line index per file (asking each `Loc` would rescan the file every time).
pub fn locate(diags: &[Diagnostic]) -> Vec<Option<(String, usize, usize)>> {
    let mut files: HashMap<*const SourceFile, Lines> = HashMap::new();
    diags
        .iter()
        .map(|d| {
            let l = d.loc.as_ref()?;
            let lines = files.entry(Arc::as_ptr(&l.file)).or_insert_with(|| Lines::new(&l.file));
            let offset = char_floor(&l.file.text, l.span.start);
            let line = lines.line_of(offset);
            let col = l.file.text[lines.starts[line]..offset].chars().count() + 1;
            Some((l.file.name.clone(), line + 1, col))
        })
        .collect()
}

/// Lines of margin around the context miette asks for, so the window always
/// holds every line it looks at.
const WINDOW_MARGIN: usize = 2;

impl SourceCode for Lines {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let text = self.file.text.as_str();
        if span.offset() + span.len() > text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let first = self.line_of(span.offset()).saturating_sub(before + WINDOW_MARGIN);
        let last = self.line_of(span.offset() + span.len()) + after + WINDOW_MARGIN + 1;
        let from = self.starts[first];
        let to = self.starts.get(last).copied().unwrap_or(text.len());
        let window = &text[from..to];
        let local = SourceSpan::new((span.offset() - from).into(), span.len());
        let inner = window.read_span(&local, before, after)?;
        let data: &'a [u8] = inner.data();
        Ok(Box::new(MietteSpanContents::new_named(
            self.file.name.clone(),
            data,
            SourceSpan::new((inner.span().offset() + from).into(), inner.span().len()),
            inner.line() + first,
            inner.column(),
            inner.line_count() + first,
        )))
    }
}

/// What miette renders: one diagnostic, its file's line index, and a note
/// naming the other places the same warning applies to.
struct Rendered<'a> {
    d: &'a Diagnostic,
    source: Option<&'a Lines>,
    help: Option<String>,
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
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let loc = self.d.loc.as_ref()?;
        let len = loc.span.end.saturating_sub(loc.span.start);
        let primary = LabeledSpan::new_primary_with_span(
            (!self.d.label.is_empty()).then(|| self.d.label.to_string()),
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

/// How many other places a grouped warning names before counting the rest.
const GROUP_NAMES: usize = 3;

/// Warnings that say the same thing about different resources, as groups
/// in the order their first member appears; errors stay one per group.
fn group(diags: &[Diagnostic]) -> Vec<Vec<&Diagnostic>> {
    let mut groups: Vec<Vec<&Diagnostic>> = Vec::new();
    let mut index: HashMap<(String, &str, Option<&str>), usize> = HashMap::new();
    for d in diags {
        if d.is_error() {
            groups.push(vec![d]);
            continue;
        }
        // The message with its own subject taken out: "database.a is not
        // routed" and "database.b is not routed" are the same warning.
        let message = match &d.subject {
            Some(s) => d.message.replace(&**s, "\u{0}"),
            None => d.message.clone(),
        };
        let key = (message, &*d.label, d.help.as_deref());
        match index.get(&key) {
            Some(&i) => groups[i].push(d),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![d]);
            }
        }
    }
    groups
}

/// One place of a grouped warning: its address and where it is written.
fn place(d: &Diagnostic) -> String {
    let at = d.loc.as_ref().map(Loc::describe);
    match (&d.subject, at) {
        (Some(s), Some(at)) => format!("{s} ({at})"),
        (Some(s), None) => s.to_string(),
        (None, Some(at)) => at,
        (None, None) => "elsewhere".into(),
    }
}

/// The note under a grouped warning: a few of the other places, and how
/// many more there are.
fn group_note(rest: &[&Diagnostic]) -> String {
    let named: Vec<String> = rest.iter().take(GROUP_NAMES).map(|d| place(d)).collect();
    let mut note = format!(
        "the same warning applies to {} more place{}: {}",
        rest.len(),
        if rest.len() == 1 { "" } else { "s" },
        named.join(", ")
    );
    if rest.len() > GROUP_NAMES {
        note.push_str(&format!(" … and {} more", rest.len() - GROUP_NAMES));
    }
    note
}

/// Render diagnostics as text. `color` only on a terminal; tests and CI get
/// plain unicode so snapshots are stable. Identical warnings about different
/// resources are shown once, with a note naming a few of the others.
pub fn render(diags: &[Diagnostic], color: bool) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut files: HashMap<*const SourceFile, Lines> = HashMap::new();
    for l in diags.iter().filter_map(|d| d.loc.as_ref()) {
        files.entry(Arc::as_ptr(&l.file)).or_insert_with(|| Lines::new(&l.file));
    }
    let mut out = String::new();
    for g in group(diags) {
        let d = g[0];
        let mut help = d.help.as_deref().map(str::to_string);
        if g.len() > 1 {
            let note = group_note(&g[1..]);
            help = Some(match help {
                Some(h) => format!("{h}\n{note}"),
                None => note,
            });
        }
        let source = d.loc.as_ref().and_then(|l| files.get(&Arc::as_ptr(&l.file)));
        let r = Rendered { d, source, help };
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

#[cfg(test)]
mod tests {
    use super::*;
    use miette::NamedSource;

    /// What miette shows with its own `SourceCode` for the whole text.
    fn with_miette_source(d: &Diagnostic) -> String {
        struct Plain<'a>(&'a Diagnostic, NamedSource<String>);
        impl fmt::Debug for Plain<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0.message)
            }
        }
        impl fmt::Display for Plain<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0.message)
            }
        }
        impl std::error::Error for Plain<'_> {}
        impl miette::Diagnostic for Plain<'_> {
            fn source_code(&self) -> Option<&dyn SourceCode> {
                Some(&self.1)
            }
            fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
                let r = Rendered { d: self.0, source: None, help: None };
                let labels: Vec<LabeledSpan> = miette::Diagnostic::labels(&r)?.collect();
                Some(Box::new(labels.into_iter()))
            }
            fn severity(&self) -> Option<Severity> {
                Some(self.0.severity)
            }
        }
        let l = d.loc.as_ref().unwrap();
        let p = Plain(d, NamedSource::new(l.file.name.clone(), l.file.text.clone()));
        let mut out = String::new();
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .render_report(&mut out, &p)
            .unwrap();
        out + "\n"
    }

    #[test]
    fn the_line_index_shows_what_miette_shows() {
        let texts = [
            "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\n",
            "only = \"one line, no newline\"",
            "a = 1\r\nb = 2\r\nc = 3\r\nd = 4\r\n",
            "x {\n  y = [\n    1,\n    2,\n  ]\n}\n\n\nz = \"é€😀\"\n",
        ];
        let mut compared = 0;
        for text in texts {
            let file = Arc::new(SourceFile { name: "t.hcl".into(), text: text.into() });
            let ends: Vec<usize> = (0..=text.len()).filter(|i| text.is_char_boundary(*i)).collect();
            for (i, &start) in ends.iter().enumerate() {
                for &end in &ends[i..] {
                    if end > start + 12 {
                        break;
                    }
                    let mut d = Diagnostic::warning("w").at(&Loc::new(&file, start..end), "here");
                    if start > 2 {
                        d = d.also(&Loc::new(&file, 0..1), "first");
                    }
                    let ours = render(std::slice::from_ref(&d), false);
                    assert_eq!(ours, with_miette_source(&d), "span {start}..{end} of {text:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 200);
    }

    fn warning_about(file: &Arc<SourceFile>, i: usize) -> Diagnostic {
        Diagnostic::warning(format!("database.d{i} is not routed"))
            .at(&Loc::new(file, i * 5..i * 5 + 2), "here")
            .about(format!("database.d{i}"))
    }

    #[test]
    fn identical_warnings_about_different_resources_are_one_group() {
        let text: String = (0..10).map(|i| format!("d{i} {{\n")).collect();
        let file = Arc::new(SourceFile { name: "t.hcl".into(), text });
        let mut diags: Vec<Diagnostic> = (0..6).map(|i| warning_about(&file, i)).collect();
        diags.insert(2, Diagnostic::error("an error").at(&Loc::new(&file, 0..1), "x"));
        diags.push(Diagnostic::warning("database.d7 is not routed").at(&Loc::new(&file, 35..37), "elsewhere"));
        let groups = group(&diags);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![6, 1, 1], "same message and label group; an error and another label do not");
        let out = render(&diags, false);
        assert_eq!(out.matches("is not routed").count(), 2, "{out}");
        assert!(out.contains("applies to 5 more"), "{out}");
        assert_eq!(
            group_note(&groups[0][1..]),
            "the same warning applies to 5 more places: database.d1 (t.hcl:2:1), database.d2 (t.hcl:3:1), \
             database.d3 (t.hcl:4:1) … and 2 more"
        );
    }
}
