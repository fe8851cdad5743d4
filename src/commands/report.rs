//! What a command reported while it ran, kept so that `plan --format
//! json|markdown` can print it on stdout as a document (a JSON object, a
//! pull-request comment) when no plan could be made. Everything is still
//! printed to stderr as it happens.

use std::sync::Mutex;

use crate::diag::Diagnostic;

static SEEN: Mutex<Option<Vec<Diagnostic>>> = Mutex::new(None);

/// Start keeping what is reported (from now until `take`).
pub fn start() {
    *SEEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
}

/// Keep diagnostics (configuration errors and warnings), if keeping.
pub fn diags(ds: &[Diagnostic]) {
    if let Some(v) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        v.extend(ds.iter().cloned());
    }
}

/// Keep an error that points nowhere in the configuration.
pub fn error(msg: impl std::fmt::Display) {
    diags(&[Diagnostic::error(msg.to_string())]);
}

/// What was kept, and stop keeping.
pub fn take() -> Vec<Diagnostic> {
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default()
}
