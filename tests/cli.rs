//! End-to-end tests of the `dbctl` binary that need no server: diagnostics,
//! validate, graph, fmt, schema and the examples. One test binary (as jj
//! does), snapshots with insta.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dbctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .arg("--no-color")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run dbctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `# expect: line N: text` at the top of each invalid fixture.
fn expectation(src: &str) -> (usize, String) {
    let first = src.lines().next().expect("fixture has a header");
    let rest = first.strip_prefix("# expect: line ").expect("header is `# expect: line N: text`");
    let (n, msg) = rest.split_once(": ").expect("header has a message");
    (n.parse().expect("line number"), msg.to_string())
}

#[test]
fn every_invalid_fixture_is_one_located_diagnostic() {
    let dir = root().join("tests/fixtures/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has a file per mistake");
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let src = std::fs::read_to_string(&path).unwrap();
        let (line, msg) = expectation(&src);
        let out = dbctl(&dir, &["--config", &name, "validate"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: exit 1\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: panicked\n{stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        let located = format!("[{name}:{line}:");
        assert!(stderr.contains(&located), "{name}: expected a diagnostic at {located}\n{stderr}");
        assert!(stderr.contains(&msg), "{name}: expected `{msg}`\n{stderr}");
        let errors = stderr.lines().filter(|l| l.trim_start().starts_with("× ")).count();
        assert_eq!(errors, 1, "{name}: exactly one error\n{stderr}");
        insta::with_settings!({ snapshot_suffix => name.trim_end_matches(".hcl").to_string(), prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("invalid", stderr);
        });
    }
}

#[test]
fn several_mistakes_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.hcl"),
        "server \"main\" {\n  engine = \"postgress\"\n  embedded = true\n}\n\nuser \"u\" {\n  server = server.mian\n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.hcl"), "databse \"x\" {}\n").unwrap();
    let out = dbctl(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for want in ["[a.hcl:2:12]", "[a.hcl:7:12]", "[b.hcl:1:1]", "3 error(s)"] {
        assert!(stderr.contains(want), "missing {want}\n{stderr}");
    }
}

#[test]
fn validate_json_lists_diagnostics() {
    let dir = root().join("tests/fixtures/invalid");
    let out = dbctl(&dir, &["--config", "missing_reference.hcl", "validate", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "missing_reference.hcl");
    assert_eq!(d["line"], 9);
    assert_eq!(d["column"], 12);
}

/// dbctl in an example directory, with the environment the CI example
/// (examples/ci) reads from its CI's secret store: placeholders, never used
/// to connect here.
fn example_dbctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .arg("--no-color")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .env("DBCTL_STATE_URL", "postgres://dbctl@state.example.com/dbctl?sslmode=verify-full")
        .env("DBCTL_SERVER_URL", "postgres://admin@db.example.com/postgres?sslmode=verify-full")
        .output()
        .expect("run dbctl")
}

fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<_> =
        std::fs::read_dir(root().join("examples")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_example_validates_without_errors() {
    let dirs = example_dirs();
    assert!(dirs.len() >= 2, "quickstart and at least one larger example");
    for dir in dirs {
        let out = example_dbctl(&dir, &["validate"]);
        assert_eq!(out.status.code(), Some(0), "{}: {}", dir.display(), text(&out.stderr));
        assert!(text(&out.stdout).starts_with("Success!"), "{}", dir.display());
        // Examples are formatted as `dbctl fmt` would write them.
        let out = dbctl(&dir, &["fmt", "--check"]);
        assert_eq!(out.status.code(), Some(0), "{} is not formatted: {}", dir.display(), text(&out.stdout));
    }
}

#[test]
fn graph_of_each_example() {
    for dir in example_dirs() {
        let out = example_dbctl(&dir, &["graph"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        insta::with_settings!({ snapshot_suffix => name, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("graph", text(&out.stdout));
        });
    }
}

#[test]
fn fmt_of_a_messy_file() {
    let dir = tempfile::tempdir().unwrap();
    let messy = std::fs::read_to_string(root().join("tests/fixtures/fmt/messy.hcl")).unwrap();
    std::fs::write(dir.path().join("main.hcl"), &messy).unwrap();

    let check = dbctl(dir.path(), &["fmt", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(text(&check.stdout), "main.hcl\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("main.hcl")).unwrap(), messy, "--check changes nothing");

    let out = dbctl(dir.path(), &["fmt"]);
    assert_eq!(out.status.code(), Some(0));
    let formatted = std::fs::read_to_string(dir.path().join("main.hcl")).unwrap();
    insta::assert_snapshot!("fmt_messy", formatted);

    let again = dbctl(dir.path(), &["fmt", "--check"]);
    assert_eq!(again.status.code(), Some(0), "fmt is idempotent: {}", text(&again.stdout));
}

#[test]
fn schema_in_repo_is_current() {
    let out = dbctl(&root(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let printed = text(&out.stdout);
    let kept = std::fs::read_to_string(root().join("schema/config.schema.json")).unwrap_or_default();
    assert!(
        printed.trim_end() == kept.trim_end(),
        "schema/config.schema.json is stale: run `cargo run -- schema > schema/config.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    for block in ["server", "user", "database", "router", "backup_policy", "rds_cluster", "migrations"] {
        assert!(v["properties"][block].is_object(), "schema has {block}");
    }
}

#[test]
fn variables_from_flag_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        r#"variable "prefix" {}
variable "limit" {
  default = 5
}
server "main" {
  engine   = "postgres"
  embedded = true
}
user "u" {
  server           = server.main
  name             = format("%s_user", var.prefix)
  connection_limit = var.limit
}
"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("vars.hcl.txt"), "prefix = \"fromfile\"\nlimit = 7\n").unwrap();
    let missing = dbctl(dir.path(), &["validate"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("variable \"prefix\" has no value"));

    let ok = dbctl(dir.path(), &["--var", "prefix=cli", "validate"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let ok = dbctl(dir.path(), &["--var-file", "vars.hcl.txt", "--var", "limit=9", "validate"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let env = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(dir.path())
        .arg("validate")
        .env("DBCTL_VAR_prefix", "env")
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(0), "{}", text(&env.stderr));
    let bad = dbctl(dir.path(), &["--var", "prefx=x", "validate"]);
    assert!(text(&bad.stderr).contains("did you mean `prefix`"), "{}", text(&bad.stderr));
    let bad = dbctl(dir.path(), &["--var", "prefix=x", "--var", "limit=many", "validate"]);
    assert!(text(&bad.stderr).contains("expected a whole number"), "{}", text(&bad.stderr));
}

#[test]
fn migrate_status_without_migrations_says_so() {
    let out = dbctl(&root().join("examples/quickstart"), &["migrate", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("No migrations block in the configuration"), "{}", text(&out.stdout));
}

#[test]
fn identical_warnings_print_once_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = String::from("server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n");
    for i in 0..50 {
        src.push_str(&format!("\nsecret \"s{i}\" {{\n  value = \"literal-{i}\"\n}}\n"));
    }
    std::fs::write(dir.path().join("main.hcl"), src).unwrap();
    let out = dbctl(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(text(&out.stdout).contains("50 warning(s)"));
    assert_eq!(stderr.matches("⚠").count(), 1, "one report for 50 identical warnings\n{stderr}");
    insta::assert_snapshot!("grouped_warnings", stderr);
}

#[test]
fn file_of_more_than_a_mebibyte_is_a_located_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.txt"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
    std::fs::write(dir.path().join("small.txt"), "ok").unwrap();
    let src = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\n\
               secret \"a\" {\n  value = file(\"big.txt\")\n}\n\n\
               secret \"b\" {\n  value = file(\"small.txt\")\n}\n";
    std::fs::write(dir.path().join("main.hcl"), src).unwrap();
    let out = dbctl(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("[main.hcl:7:11]"), "{stderr}");
    assert!(stderr.contains("1048577 bytes"), "{stderr}");
    assert_eq!(stderr.matches("× ").count(), 1, "the small file reads fine\n{stderr}");
}

#[test]
fn arithmetic_the_evaluator_cannot_do_is_a_diagnostic_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\n\
               locals {\n  limits = [for n in [0, 1]: 7 % n]\n}\n";
    std::fs::write(dir.path().join("main.hcl"), src).unwrap();
    let out = dbctl(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("[main.hcl:7:12]") && stderr.contains("division by zero"), "{stderr}");
}

#[test]
fn messages_never_mention_issue_numbers() {
    // Every string literal in the sources: none may point users at an issue.
    let mut files = vec![root().join("src")];
    let mut offending = Vec::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let quoted: String = code.split('"').skip(1).step_by(2).collect::<Vec<_>>().join(" ");
            if quoted.to_lowercase().contains("issue") {
                offending.push(format!("{}:{}: {code}", p.display(), i + 1));
            }
        }
    }
    assert!(offending.is_empty(), "user-facing text mentions an issue:\n{}", offending.join("\n"));
}

/// A configuration that reads its server url, its state url and a database
/// name from the environment, and warns (the database is not routed).
fn reads_the_environment(dir: &Path) {
    std::fs::write(
        dir.join("main.hcl"),
        r#"dbctl {
  state {
    backend = "postgres"
    url     = env("DBCTL_TEST_UNSET_STATE_URL")
  }
}

server "main" {
  engine = "postgres"
  url    = env("DBCTL_TEST_UNSET_DATABASE_URL")
}

database "app" {
  server           = server.main
  name             = env("DBCTL_TEST_UNSET_DB_NAME")
  connection_limit = env("DBCTL_TEST_UNSET_LIMIT")
}
"#,
    )
    .unwrap();
}

#[test]
fn validate_needs_no_environment() {
    let dir = tempfile::tempdir().unwrap();
    reads_the_environment(dir.path());
    let out = dbctl(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "an unset env() is unknown at validate time\n{stderr}");
    assert!(text(&out.stdout).starts_with("Success!"), "{}", text(&out.stdout));
    for var in [
        "DBCTL_TEST_UNSET_STATE_URL",
        "DBCTL_TEST_UNSET_DATABASE_URL",
        "DBCTL_TEST_UNSET_DB_NAME",
        "DBCTL_TEST_UNSET_LIMIT",
    ] {
        assert!(stderr.contains(&format!("environment variable {var} is not set")), "{var}\n{stderr}");
    }
    let out = dbctl(dir.path(), &["validate", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(out.status.code(), Some(0));
    // Real mistakes are still found next to unknown values.
    std::fs::write(dir.path().join("more.hcl"), "user \"u\" {\n  server = server.mian\n}\n").unwrap();
    let out = dbctl(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("[more.hcl:2:12]"), "{}", text(&out.stderr));
}

#[test]
fn plan_without_the_environment_names_what_is_missing_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    reads_the_environment(dir.path());
    let out = dbctl(dir.path(), &["plan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(stderr.contains("the environment variable DBCTL_TEST_UNSET_DATABASE_URL is not set"), "{stderr}");
    assert!(stderr.contains("[main.hcl:10:12]"), "{stderr}");
    assert!(!stderr.contains("error calling function"), "one sentence, not the evaluator's words\n{stderr}");

    // Markdown: a comment CI can post, on stdout, and exit 1.
    let out = dbctl(dir.path(), &["plan", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(1));
    let md = text(&out.stdout);
    assert!(md.starts_with("### :x: dbctl could not make the plan (4 errors)\n"), "{md}");
    assert!(
        md.contains(
            "- **Error:** the environment variable DBCTL_TEST_UNSET_DATABASE_URL is not set (`main.hcl:10:12`)"
        ),
        "{md}"
    );
    assert!(md.contains("```text\n"), "the diagnostics as the terminal shows them\n{md}");
    assert!(md.chars().count() <= 60_000);

    // JSON: `errors` with file and line, and exit 1.
    let out = dbctl(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_eq!(v["errored"], true);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4, "{v}");
    let url = errors.iter().find(|e| e["message"].as_str().unwrap().contains("DATABASE_URL")).unwrap();
    assert_eq!(
        (&url["file"], &url["line"], &url["column"]),
        (&serde_json::json!("main.hcl"), &serde_json::json!(10), &serde_json::json!(12))
    );
    assert_eq!(url["severity"], "error");
}

#[test]
fn plan_errors_that_point_nowhere_are_reported_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.hcl"), "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n")
        .unwrap();
    let out = dbctl(dir.path(), &["plan", "--target", "database.nope", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("--target database.nope"), "{v}");
    assert_eq!(v["errors"][0]["file"], serde_json::Value::Null);
    let out = dbctl(dir.path(), &["plan", "--target", "database.nope", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("**Error:** --target database.nope"), "{}", text(&out.stdout));
}

#[test]
fn plan_without_aws_credentials_says_so_in_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        "provider \"aws\" {\n  region   = \"us-east-1\"\n  endpoint = \"http://127.0.0.1:9\"\n}\n\n\
         server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\n\
         secret \"s\" {\n  store = \"aws\"\n  generate {\n    length = 20\n  }\n}\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["--no-color", "-C"])
        .arg(dir.path())
        .arg("plan")
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read \"secret.s\": no AWS credentials were found; set AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
    assert!(!stderr.contains("DispatchFailure") && !stderr.contains("CredentialsNotLoaded"), "no debug dump\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence\n{stderr}");
}

/// A plan of a new embedded server reads nothing (the server does not exist
/// yet), so it runs here: its JSON and markdown carry the configuration's
/// warnings, which the human plan leaves to stderr.
#[test]
fn plan_formats_carry_the_configuration_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\ndatabase \"lonely\" {\n  server = server.main\n}\n",
    )
    .unwrap();
    let out = dbctl(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &v["warnings"][0];
    assert!(w["message"].as_str().unwrap().contains("database.lonely is not routed"), "{v}");
    assert_eq!((w["file"].as_str(), w["line"].as_u64()), (Some("main.hcl"), Some(6)));
    let out = dbctl(dir.path(), &["plan", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0));
    let md = text(&out.stdout);
    let fold = md.find("<details>").unwrap();
    assert!(md[..fold].contains(":warning: database.lonely is not routed by any router"), "{md}");
    assert!(md[..fold].contains("(`main.hcl:6:1`)"), "{md}");
    let out = dbctl(dir.path(), &["plan"]);
    assert!(!text(&out.stdout).contains("is not routed"), "on stderr only in the human plan");
    assert!(text(&out.stderr).contains("is not routed"));
}
