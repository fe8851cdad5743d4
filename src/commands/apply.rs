use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use super::session::{block_on, err, open, PlanOpts, Session};
use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::apply::{Executor, PgRunner, Progress, Report};
use crate::cli::{ApplyArgs, DestroyArgs, Format};
use crate::plan::{render, Plan};

fn confirm(what: &str) -> bool {
    println!("\nDo you want to {what}? Only 'yes' will be accepted.");
    print!("  Enter a value: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let ok = std::io::stdin().lock().read_line(&mut line).is_ok();
    ok && line.trim() == "yes"
}

fn lock_timeout(s: &str) -> Result<Duration, u8> {
    humantime::parse_duration(s).map_err(|e| err(format!("--lock-timeout {s}: {e}")))
}

/// Compare a saved plan with the world as it is now; `Err` says what moved.
async fn stale(session: &Session, plan: &Plan, state: &crate::state::State) -> Result<(), String> {
    if plan.config_hash != session.config_hash {
        return Err("the configuration has changed since the plan was made".into());
    }
    if plan.state_lineage != state.lineage || plan.state_serial != state.serial {
        return Err(format!(
            "the state has changed since the plan was made (serial {} then, {} now)",
            plan.state_serial, state.serial
        ));
    }
    let opts = PlanOpts { destroy: false, force: false, refresh_only: false, targets: vec![] };
    let now = session.plan(state, &opts).await.map_err(|_| "re-reading the servers failed".to_string())?;
    let moved: Vec<&String> =
        plan.fingerprints.iter().filter(|(k, v)| now.fingerprints.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    if !moved.is_empty() {
        let list: Vec<String> = moved.iter().take(5).map(|s| s.to_string()).collect();
        return Err(format!("live objects have changed since the plan was made: {}", list.join(", ")));
    }
    Ok(())
}

fn print_report(r: &Report, plan: &Plan) {
    if r.ok() {
        let (a, m, d) = plan.counts();
        let forgotten = match plan.forgotten() {
            0 => String::new(),
            f => format!(", {f} forgotten"),
        };
        println!("\nApply complete! Resources: {a} added, {m} changed, {d} destroyed{forgotten}.");
        return;
    }
    eprintln!("\nApply failed. Nothing more was started.");
    eprintln!("  done ({}): {}", r.done.len(), r.done.join(", "));
    for (a, e) in &r.failed {
        eprintln!("  failed: {a}: {e}");
    }
    eprintln!("  not started ({}): {}", r.not_started.len(), r.not_started.join(", "));
    eprintln!("The state records what was done; run `dbctl plan` to see what is left.");
}

fn execute(session: &Session, plan: &Plan, state: crate::state::State, parallelism: usize) -> u8 {
    let journal = match session.state_store.journal() {
        Ok(j) => j,
        Err(e) => return err(e),
    };
    let stores = match block_on(session.stores()) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let total = plan.steps().count();
    let exec = Executor {
        runner: PgRunner { endpoints: session.endpoints.clone(), stores, base_dir: session.config_dir.clone() },
        journal: Mutex::new(journal),
        state: Mutex::new(state),
        parallelism,
        progress: Progress::new(total, std::io::stdout().is_terminal()),
    };
    let report = block_on(exec.execute(&session.config, plan));
    let mut state = exec.state.into_inner().expect("state");
    state.serial += 1;
    if let Err(e) = session.state_store.save(&state) {
        eprintln!("Error: saving the state: {e} (the journal beside it still holds every step)");
        return EXIT_ERROR;
    }
    print_report(&report, plan);
    if report.ok() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

pub fn run(ctx: &Ctx, args: &ApplyArgs) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let timeout = match lock_timeout(&args.lock_timeout) {
        Ok(t) => t,
        Err(rc) => return rc,
    };
    let _lock = match session.state_store.lock("apply", timeout) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let state = match session.state_store.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let plan = if let Some(file) = &args.planfile {
        let plan: Plan = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => return err(format!("cannot read the plan {}: {e}", file.display())),
        };
        if let Err(why) = block_on(stale(&session, &plan, &state)) {
            return err(format!("stale plan: {why}. Nothing was applied; run `dbctl plan` again."));
        }
        plan
    } else {
        let opts = PlanOpts { destroy: false, force: false, refresh_only: false, targets: args.target.clone() };
        let plan = match block_on(session.plan(&state, &opts)) {
            Ok(p) => p,
            Err(rc) => return rc,
        };
        print!("{}", render::human(&plan, false));
        if !plan.has_changes() {
            return EXIT_OK;
        }
        if !args.auto_approve && !confirm("perform these actions") {
            println!("\nApply cancelled.");
            return EXIT_ERROR;
        }
        plan
    };
    execute(&session, &plan, state, args.parallelism)
}

pub fn destroy(ctx: &Ctx, args: &DestroyArgs) -> u8 {
    let session = match open(ctx) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let _lock = match session.state_store.lock("destroy", Duration::ZERO) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let state = match session.state_store.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let opts = PlanOpts { destroy: true, force: args.force, refresh_only: false, targets: args.target.clone() };
    let plan = match block_on(session.plan(&state, &opts)) {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    super::plan::print(&plan, Format::Human, false);
    if !plan.has_changes() {
        return EXIT_OK;
    }
    if !args.auto_approve && !confirm("destroy all these objects") {
        println!("\nDestroy cancelled.");
        return EXIT_ERROR;
    }
    execute(&session, &plan, state, 10)
}
