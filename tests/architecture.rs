//! The allowed imports between dbctl's top-level modules.
//!
//! Data flows one way: the configuration and the live servers are read,
//! the diff (pure) turns them into a plan, and the executor applies it.
//! Each module sits in a layer and may use only modules of lower layers, so
//! no two modules import each other, directly or around a circle. A new
//! `crate::x` reference that points up fails here with its file and line;
//! either the code belongs lower, or the type it needs does.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. A module may use the modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    // Diagnostics; the CLI's argument types.
    &["diag", "cli"],
    // The types every part shares: addresses, resources, the configuration.
    &["model"],
    // Pure helpers on the model: the HCL formatter, AWS configuration, routing documents.
    &["fmt", "aws", "router"],
    // Migration files: reading, checksums, lint, splitting into statements.
    &["migrate"],
    // Each engine: its dialect (statement text, names, privileges) and its I/O.
    &["engine"],
    // Where dbctl keeps what it applied.
    &["state"],
    // Secret stores.
    &["secrets"],
    // The RDS client.
    &["rds"],
    // The plan: its steps and how they are shown.
    &["plan"],
    // The dependency graph and the backup runner.
    &["graph", "backup"],
    // The diff: configuration + live state → plan. Pure.
    &["diff"],
    // Reaching servers: endpoints, credentials, the refresh.
    &["reach"],
    // Loading and checking the configuration.
    &["config"],
    // The executor.
    &["apply"],
    // The commands: the one place that orchestrates and prints.
    &["commands"],
    &["lib", "main"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The file's text without its `#[cfg(test)]` module (tests may reach anywhere).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Every `crate::x` (and `use crate::{x, …}`) a file names, with its line.
fn references(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        out.push((name, n + 1));
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push((name, n + 1));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing: Vec<String> =
        files.iter().map(|f| top_module(&src, f)).filter(|m| layer_of(m).is_none()).collect();
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "modules with no layer in tests/architecture.rs: {missing:?}");
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut edges = 0;
    for f in &files {
        let from = top_module(&src, f);
        let Some(from_layer) = layer_of(&from) else { continue };
        let text = std::fs::read_to_string(f).expect("read");
        for (to, line) in references(without_tests(&text)) {
            if to == from {
                continue;
            }
            let Some(to_layer) = layer_of(&to) else { continue };
            edges += 1;
            if to_layer >= from_layer {
                let at = format!("{}:{line}", f.strip_prefix(&src).unwrap().display());
                wrong.entry((from.clone(), to)).or_default().push(at);
            }
        }
    }
    assert!(edges > 100, "the scan found only {edges} references between modules: is it still reading src/?");
    let report: Vec<String> =
        wrong.iter().map(|((a, b), at)| format!("{a} → {b} (a layer not below it): {}", at.join(", "))).collect();
    assert!(report.is_empty(), "imports that point up or sideways:\n{}", report.join("\n"));
}

#[test]
fn the_scan_reads_grouped_imports_and_skips_comments() {
    let refs = references("use crate::{engine::x, model};\n// crate::commands\nlet a = crate::diff::y;");
    let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["engine", "model", "diff"]);
    assert_eq!(refs[2].1, 3);
}
