//! A property test for the configuration loader: mutated configurations
//! (seeded, so a failure is reproducible) must give diagnostics, never a
//! panic. The corpus is every file under tests/fixtures/ and examples/.
//!
//! CI runs a fixed number of cases; a longer run:
//!     DBCTL_FUZZ_ITERATIONS=200000 cargo test --release --test fuzz_config

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![root.join("tests/fixtures"), root.join("examples")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "hcl") {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out.sort();
    out
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    "\"",
    "${",
    "%{",
    "\n",
    ".",
    ",",
    ":",
    "?",
    "for_each",
    "each.key",
    "each.value",
    "server.main",
    "database.x[\"k\"]",
    "var.x",
    "local.x",
    "toset([])",
    "env(\"HOME\")",
    "format(\"%d\", \"x\")",
    "join(\",\", [1])",
    "<<EOT\nx\nEOT\n",
    "null",
    "true",
    "-1",
    "99999999999999999999",
    "\u{0}",
    "ü",
    "\\u0000",
    "lifecycle {}",
    "grant {}",
    "route \"a\" {}",
    "[for x in [1] : x]",
    "1 / 0",
    "\"a\" + 1",
    "!true",
];

fn mutate(src: &str, rng: &mut StdRng) -> String {
    let mut s: Vec<char> = src.chars().collect();
    for _ in 0..rng.random_range(1..4) {
        let at = if s.is_empty() { 0 } else { rng.random_range(0..=s.len()) };
        match rng.random_range(0..5) {
            0 if !s.is_empty() => {
                let end = (at + rng.random_range(1..20)).min(s.len());
                s.drain(at.min(end)..end);
            }
            1 => s.splice(at..at, TOKENS[rng.random_range(0..TOKENS.len())].chars()).for_each(drop),
            2 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = char::from_u32(rng.random_range(0..0x80)).unwrap_or('x');
            }
            3 if !s.is_empty() => {
                // Duplicate a slice (duplicate blocks, labels, attributes).
                let a = rng.random_range(0..s.len());
                let b = (a + rng.random_range(1..200)).min(s.len());
                let piece: Vec<char> = s[a..b].to_vec();
                s.splice(at..at, piece).for_each(drop);
            }
            _ => s.truncate(at),
        }
    }
    s.into_iter().collect()
}

#[test]
fn mutated_configurations_never_panic() {
    let n: usize = std::env::var("DBCTL_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let corpus = corpus();
    assert!(corpus.len() > 40);
    let mut rng = StdRng::seed_from_u64(0xdbc7);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.hcl");
    let opts = dbctl::config::LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() };
    let start: usize = std::env::var("DBCTL_FUZZ_START").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    if std::env::var_os("DBCTL_FUZZ_VERBOSE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut errors = 0;
    for i in 0..n {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let text = mutate(base, &mut rng);
        if i < start {
            continue;
        }
        std::fs::write(&file, &text).unwrap();
        let r = std::panic::catch_unwind(|| {
            let loaded = dbctl::config::load(&opts);
            // Rendering the diagnostics must not panic either.
            let _ = dbctl::diag::render(&loaded.diags.0, false);
            loaded.diags.has_errors()
        });
        match r {
            Ok(e) => errors += usize::from(e),
            Err(_) => {
                let _ = std::panic::take_hook();
                panic!("case {i} panicked; its input:\n{text}");
            }
        }
        let fmt = std::panic::catch_unwind(|| {
            dbctl::fmt::format_source(&text).map(|f| (dbctl::fmt::format_source(&f).ok(), f))
        });
        match fmt {
            Ok(Ok((Some(again), once))) => assert_eq!(again, once, "fmt is not idempotent on case {i}:\n{text}"),
            Ok(Ok((None, once))) => panic!("fmt produced unparsable output on case {i}:\n{text}\n---\n{once}"),
            Ok(Err(_)) => {}
            Err(_) => {
                let _ = std::panic::take_hook();
                panic!("fmt panicked on case {i}; its input:\n{text}");
            }
        }
    }
    let _ = std::panic::take_hook();
    let ran = n.saturating_sub(start);
    assert!(errors > ran / 2, "most mutations are invalid: {errors} of {ran}");
}
