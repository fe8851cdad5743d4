//! The CI examples in examples/ci: their YAML parses (PyYAML from the test
//! virtualenv: no YAML crate is a dependency), has the shape the README
//! promises, every shell script in it is valid bash, and the scripts of the
//! plan and apply steps really run: against a shared postgres state, a real
//! server and moto (for Secrets Manager), from two checkouts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{team_server, text, Moto, PgServer, Project};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var("DBCTL_PYTHON")
        .map(PathBuf::from)
        .ok()
        .or_else(|| Some(root().join(".venv/bin/python")).filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// A YAML file as JSON, through PyYAML.
fn yaml(path: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), default=str))"])
        .arg(path)
        .output()
        .expect("python with PyYAML (scripts/test installs it into .venv)");
    assert!(out.status.success(), "{} does not parse: {}", path.display(), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `${{ expr }}` replaced by a word, as GitHub does before the shell sees it.
fn without_expressions(script: &str) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("}}").expect("closed expression") + i + 2;
        out.push_str("EXPR");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn bash_n(name: &str, script: &str) {
    let out = Command::new("bash").args(["-n", "-c", script]).output().unwrap();
    assert!(out.status.success(), "{name}: not valid bash: {}\n{script}", text(&out.stderr));
}

fn github() -> serde_json::Value {
    yaml(&root().join("examples/ci/github-actions.yml"))
}

/// The `run` script of the GitHub step named `name` in job `job`.
fn step_script(wf: &serde_json::Value, job: &str, name: &str) -> String {
    wf["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job}"))["run"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_github_workflow_has_the_promised_shape() {
    let wf = github();
    // PyYAML reads a bare `on:` key as the boolean true (YAML 1.1).
    let on = if wf["on"].is_null() { &wf["true"] } else { &wf["on"] };
    assert!(on["pull_request"].is_object(), "plans on pull requests: {on}");
    assert_eq!(on["push"]["branches"], serde_json::json!(["main"]), "applies on merge to main");
    // Credentials come from the secret store, never from the file.
    assert_eq!(wf["env"]["DBCTL_STATE_URL"], "${{ secrets.DBCTL_STATE_URL }}");
    assert_eq!(wf["env"]["DBCTL_SERVER_URL"], "${{ secrets.DBCTL_SERVER_URL }}");
    let raw = std::fs::read_to_string(root().join("examples/ci/github-actions.yml")).unwrap();
    for line in raw.lines().filter(|l| l.contains("://")) {
        assert!(line.trim_start().starts_with('#') || line.contains("${{"), "no literal url or credential: {line}");
    }

    let plan = &wf["jobs"]["plan"];
    let uses: Vec<&str> = plan["steps"].as_array().unwrap().iter().filter_map(|s| s["uses"].as_str()).collect();
    assert!(uses.iter().any(|u| u.starts_with("actions/upload-artifact@")), "uploads the plan: {uses:?}");
    let comment = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/github-script@")))
        .expect("a comment step");
    let js = comment["with"]["script"].as_str().unwrap();
    assert!(
        js.contains("<!-- dbctl-plan -->") && js.contains("updateComment") && js.contains("createComment"),
        "one comment, updated: {js}"
    );
    assert_eq!(plan["permissions"]["pull-requests"], "write");
    let fail = step_script(&wf, "plan", "Fail on errors");
    assert!(fail.contains("exit 1"), "{fail}");
    assert!(
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "Fail on errors" && s["if"].as_str().unwrap().contains("exitcode != '2'")),
        "fails on errors, not on changes"
    );

    let apply = &wf["jobs"]["apply"];
    assert_eq!(apply["if"], "github.event_name == 'push'");
    assert_eq!(apply["concurrency"]["cancel-in-progress"], false, "an apply is never cancelled midway");
    assert!(step_script(&wf, "apply", "Apply the saved plan").contains("apply --lock-timeout"));

    // Every shell script is valid bash.
    for (job, j) in wf["jobs"].as_object().unwrap() {
        for s in j["steps"].as_array().unwrap() {
            if let Some(run) = s["run"].as_str() {
                bash_n(&format!("{job}: {}", s["name"]), &without_expressions(run));
            }
        }
    }
}

#[test]
fn the_gitlab_pipeline_has_the_promised_shape() {
    let ci = yaml(&root().join("examples/ci/gitlab-ci.yml"));
    assert_eq!(ci["stages"], serde_json::json!(["plan", "apply"]));
    let plan = &ci["dbctl-plan"];
    assert_eq!(plan["rules"][0]["if"], "$CI_PIPELINE_SOURCE == \"merge_request_event\"");
    assert_eq!(plan["artifacts"]["paths"], serde_json::json!(["plan/dbctl.plan"]));
    let apply = &ci["dbctl-apply"];
    assert!(apply["rules"][0]["if"].as_str().unwrap().contains("$CI_DEFAULT_BRANCH"));
    assert_eq!(apply["resource_group"], "dbctl-apply", "one apply at a time");
    for job in ["dbctl-plan", "dbctl-apply"] {
        for (i, s) in ci[job]["script"].as_array().unwrap().iter().enumerate() {
            bash_n(&format!("{job} script {i}"), s.as_str().unwrap());
        }
    }
    for s in ci["default"]["before_script"].as_array().unwrap() {
        bash_n("before_script", s.as_str().unwrap());
    }
}

/// The environment a CI job gives the steps: urls from the secret store,
/// moto for Secrets Manager, dbctl on the PATH, GITHUB_OUTPUT.
fn ci_env(c: &mut Command, s: &PgServer, moto: &Moto, state_url: Option<&str>, output: &Path) {
    let env = common::team_env(s);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dbctl"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    c.env("PATH", path)
        .env("DBCTL_STATE_URL", state_url.unwrap_or(&env[0].1))
        .env("DBCTL_SERVER_URL", &env[1].1)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env("GITHUB_OUTPUT", output);
}

/// Run a step's script as GitHub would (bash -e), in `checkout`.
fn run_step(
    script: &str,
    checkout: &Project,
    s: &PgServer,
    moto: &Moto,
    state_url: Option<&str>,
) -> (bool, String, String) {
    let output = checkout.path().join("github_output");
    std::fs::write(&output, "").unwrap();
    let mut c = Command::new("bash");
    c.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(checkout.path())
        .env("DBCTL_DIR", checkout.path());
    ci_env(&mut c, s, moto, state_url, &output);
    let out = c.output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.success(), all, std::fs::read_to_string(&output).unwrap())
}

/// The plan step of one checkout and the apply step of another, as in a
/// pull request and its merge: the saved plan travels between them.
#[test]
fn the_workflow_steps_plan_in_one_checkout_and_apply_in_another() {
    let s = team_server();
    let moto = Moto::start();
    let wf = github();
    let plan_step = step_script(&wf, "plan", "Plan");
    let apply_step = step_script(&wf, "apply", "Apply the saved plan");
    let pr = Project::example("ci");
    let main = Project::example("ci");

    // The pull request: changes are planned, saved, and described for the comment.
    let (ok, log, outputs) = run_step(&plan_step, &pr, &s, &moto, None);
    assert!(ok, "{log}");
    assert_eq!(outputs.trim(), "exitcode=2", "{log}");
    let comment = std::fs::read_to_string(pr.path().join("plan/comment.md")).unwrap();
    assert!(comment.starts_with("<!-- dbctl-plan -->"), "{comment}");
    assert!(comment.contains("user.shop") && comment.contains("applied when this pull request is merged"), "{comment}");
    assert!(!comment.contains(common::PG_ADMIN_PASSWORD), "{comment}");

    // The merge: another checkout applies the uploaded plan.
    std::fs::create_dir_all(main.path().join("plan")).unwrap();
    std::fs::copy(pr.path().join("plan/dbctl.plan"), main.path().join("plan/dbctl.plan")).unwrap();
    let (ok, log, _) = run_step(&apply_step, &main, &s, &moto, None);
    assert!(ok, "{log}");
    assert!(log.contains("Apply complete! Resources: 5 added"), "{log}");
    assert_eq!(s.sql("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'shop'"), "20");
    assert!(!log.contains(common::PG_ADMIN_PASSWORD), "{log}");

    // The next pull request's plan, in the first checkout: nothing to do.
    let (ok, log, outputs) = run_step(&plan_step, &pr, &s, &moto, None);
    assert!(ok, "{log}");
    assert_eq!(outputs.trim(), "exitcode=0", "{log}");

    // Applying the same plan again is refused: the state moved on.
    let (ok, log, _) = run_step(&apply_step, &main, &s, &moto, None);
    assert!(!ok, "{log}");
    assert!(log.contains("stale plan"), "{log}");

    // An error (a wrong state password) is reported in the comment, and the job fails, without the password.
    let bad = format!("postgres://postgres:N0t-The-Pw@127.0.0.1:{}/dbctl_state", s.port);
    let (ok, log, outputs) = run_step(&plan_step, &pr, &s, &moto, Some(&bad));
    assert!(ok, "the step records the exit code; a later step fails the job: {log}");
    assert_eq!(outputs.trim(), "exitcode=1", "{log}");
    let comment = std::fs::read_to_string(pr.path().join("plan/comment.md")).unwrap();
    assert!(
        comment.contains("**The plan failed.**") && comment.contains("password authentication failed"),
        "{comment}"
    );
    assert!(!comment.contains("N0t-The-Pw") && !log.contains("N0t-The-Pw"), "{comment}");
    let (ok, _, _) = run_step(&without_expressions(&step_script(&wf, "plan", "Fail on errors")), &pr, &s, &moto, None);
    assert!(!ok, "the job fails on errors");
}
