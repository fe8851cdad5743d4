use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::session::{block_on, err, open, open_with, PlanOpts, Session};
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

/// A plan that drops databases holding data runs only with
/// `--allow-data-loss`, or after a yes typed at a terminal (even with
/// `--auto-approve`); elsewhere it is refused and nothing is applied.
fn data_loss_allowed(plan: &Plan, args: &ApplyArgs) -> bool {
    let lost: Vec<String> = plan.data_loss().map(|(c, d)| d.describe(&c.address)).collect();
    if lost.is_empty() || args.allow_data_loss {
        return true;
    }
    if std::io::stdin().is_terminal() {
        println!("\nThis plan drops databases that hold data:");
        for l in &lost {
            println!("  {l}");
        }
        if confirm("drop them and lose their data") {
            return true;
        }
        println!("\nApply cancelled.");
        return false;
    }
    eprintln!("Error: this plan drops databases that hold data, and their data would be lost:");
    for l in &lost {
        eprintln!("  {l}");
    }
    eprintln!("Nothing was applied. Run again with --allow-data-loss if that is intended.");
    false
}

fn lock_timeout(s: &str) -> Result<Duration, u8> {
    humantime::parse_duration(s).map_err(|e| err(format!("--lock-timeout {s}: {e}")))
}

/// Compare a saved plan with the world as it is now; `Err` says what moved.
/// Checks a saved plan against the configuration, the state and the servers
/// now; returns the warnings of the servers read now (a connection in clear).
async fn stale(session: &Session, plan: &Plan, state: &crate::state::State) -> Result<Vec<String>, String> {
    if plan.config_hash != session.config_hash() {
        return Err("the configuration has changed since the plan was made".into());
    }
    if plan.state_lineage != state.lineage || plan.state_serial != state.serial {
        return Err(if plan.state_lineage != state.lineage {
            "the plan was made against another state (its lineage differs)".to_string()
        } else {
            format!(
                "the state has changed since the plan was made (serial {} then, {} now)",
                plan.state_serial, state.serial
            )
        });
    }
    let opts = PlanOpts {
        refresh_only: plan.refresh_only,
        targets: plan.targets.clone(),
        replace: plan.replace.clone(),
        ..Default::default()
    };
    let now = session.plan(state, &opts).await.map_err(|_| "re-reading the servers failed".to_string())?;
    let moved: Vec<&String> =
        plan.fingerprints.iter().filter(|(k, v)| now.fingerprints.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    if !moved.is_empty() {
        let list: Vec<String> = moved.iter().take(5).map(|s| s.to_string()).collect();
        return Err(format!("live objects have changed since the plan was made: {}", list.join(", ")));
    }
    // The steps to run are exactly those a plan made now calls for.
    let steps = |p: &Plan| -> Vec<(String, crate::plan::Action, Vec<crate::plan::Step>)> {
        p.changes
            .iter()
            .filter(|c| c.action != crate::plan::Action::NoOp)
            .map(|c| (c.address.clone(), c.action, c.steps.iter().map(timeless).collect()))
            .collect()
    };
    let (saved, fresh) = (steps(plan), steps(&now));
    if saved != fresh {
        let at = saved
            .iter()
            .zip(fresh.iter())
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.0.clone())
            .or_else(|| saved.get(fresh.len()).or(fresh.get(saved.len())).map(|c| c.0.clone()))
            .unwrap_or_default();
        return Err(format!("its steps differ from what the configuration and the servers call for now (at {at})"));
    }
    Ok(now.notes.into_iter().filter(|n| crate::engine::tls::is_plaintext_warning(n)).collect())
}

/// A step as the stale check compares it: a final snapshot's name carries
/// the time the plan was made, so only its `<id>-final-` part is compared
/// (the saved plan's name is the one taken).
fn timeless(s: &crate::plan::Step) -> crate::plan::Step {
    let mut s = s.clone();
    if let crate::plan::Op::RdsDeleteCluster { final_snapshot: Some(name), .. } = &mut s.op {
        if let Some((stem, _)) = name.rsplit_once('-') {
            *name = stem.to_string();
        }
    }
    s
}

fn print_report(r: &Report, plan: &Plan) {
    if r.ok() {
        let (a, m, d) = plan.counts();
        let forgotten = match plan.forgotten() {
            0 => String::new(),
            f => format!(", {f} forgotten"),
        };
        // Never a panic on a closed stdout: the state is already saved, but say nothing more.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\nApply complete! Resources: {a} added, {m} changed, {d} destroyed{forgotten}.");
        return;
    }
    if r.interrupted {
        eprintln!("\nApply interrupted. The steps in flight finished and were recorded; nothing more was started.");
    } else {
        eprintln!("\nApply failed. Nothing more was started.");
    }
    eprintln!("  done ({}): {}", r.done.len(), r.done.join(", "));
    for (a, e) in &r.failed {
        eprintln!("  failed: {a}: {e}");
    }
    eprintln!("  not started ({}): {}", r.not_started.len(), r.not_started.join(", "));
    eprintln!("The state records what was done; run `dbctl plan` to see what is left.");
}

/// Ctrl-C, SIGTERM and SIGHUP stop an apply as Terraform does: the steps in
/// flight finish and are recorded, nothing new starts. A second one exits at
/// once (what was in flight shows in the next plan).
async fn watch_signals(interrupt: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        return;
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "Interrupt",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        if interrupt.swap(true, Ordering::SeqCst) {
            eprintln!("\n{name} again: stopping now. The next `dbctl plan` shows what is left.");
            std::process::exit(130);
        }
        eprintln!("\n{name}: finishing the steps in flight, starting nothing new. Interrupt again to stop at once.");
    }
}

/// Read the servers again and record what they hold in the state, for
/// `plan --refresh=false` where they cannot be reached. When they cannot be
/// read now, no record is better than an old one.
fn record_live(session: &Session, state: &mut crate::state::State) {
    let read_at = time::OffsetDateTime::now_utc();
    let t = std::time::Instant::now();
    match block_on(session.refresh(state)) {
        Ok(live) => {
            state.live = Some(crate::state::LiveSnapshot::new(&live, state.serial, read_at));
            tracing::debug!("recorded the live state of {} server(s) in {} ms", live.len(), t.elapsed().as_millis());
        }
        Err(_) => {
            state.live = None;
            eprintln!(
                "Warning: the servers could not be read after the apply, so the state records no live state: \
                 `dbctl plan --refresh=false` needs the next apply to record it."
            );
        }
    }
}

fn execute(session: &Session, plan: &Plan, state: crate::state::State, parallelism: usize) -> u8 {
    let journal = match session.state_store.journal() {
        Ok(j) => j,
        Err(e) => return err(format!("{e}; nothing was applied")),
    };
    let stores = match block_on(session.stores()) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let total = plan.steps().count();
    let interrupt = Arc::new(AtomicBool::new(false));
    let exec = Executor {
        runner: PgRunner {
            endpoints: std::sync::RwLock::new(session.endpoints.clone()),
            learned: Default::default(),
            stores,
            base_dir: session.config_dir.clone(),
        },
        journal: Mutex::new(journal),
        state: Mutex::new(state),
        parallelism,
        progress: Progress::new(total, std::io::stdout().is_terminal()),
        interrupt: interrupt.clone(),
    };
    let report = block_on(async {
        let watcher = tokio::spawn(watch_signals(interrupt));
        let report = exec.execute(&session.config, plan).await;
        watcher.abort();
        report
    });
    let journal = exec.journal.into_inner().expect("journal");
    let mut state = exec.state.into_inner().expect("state");
    state.serial += 1;
    if report.ok() {
        record_live(session, &mut state);
    } else {
        // What a failed or interrupted apply leaves is read by the next plan
        // that reaches the servers, not by one that compares with a record.
        state.live = None;
    }
    let saved = session.state_store.save(&state);
    print_report(&report, plan);
    match (saved, journal.broken()) {
        (Ok(()), None) => {}
        (Ok(()), Some(why)) => {
            eprintln!(
                "Error: the journal {} could not record a step ({why}); the state file was written \
                 afterwards and holds every step that ran.",
                journal.location()
            );
            return EXIT_ERROR;
        }
        (Err(e), None) => {
            eprintln!(
                "Error: saving the state failed: {e}. The journal {} holds every step of this apply; \
                 the next dbctl command reads it.",
                journal.location()
            );
            return EXIT_ERROR;
        }
        (Err(e), Some(why)) => {
            eprintln!(
                "Error: saving the state failed: {e}; the journal {} stopped recording earlier ({why}). \
                 It holds the steps before that failure. The steps reported as failed above may have run \
                 on their server without being recorded; the next `dbctl plan` reads the servers again \
                 and shows what is left.",
                journal.location()
            );
            return EXIT_ERROR;
        }
    }
    if report.ok() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

pub fn run(ctx: &Ctx, args: &ApplyArgs) -> u8 {
    let saved = match &args.planfile {
        Some(file) => {
            if !args.target.is_empty() {
                return err("--target cannot be given with a saved plan: the plan holds the targets it was made with");
            }
            if !args.replace.is_empty() {
                return err("--replace is for a new plan; a saved plan already holds what it replaces");
            }
            match Plan::read_file(file) {
                Ok(p) => Some(p),
                Err(e) => return err(e),
            }
        }
        None => None,
    };
    // A saved plan's variable values stand in for `--var`; given again, they must agree.
    let preset = saved
        .iter()
        .flat_map(|p| p.variables.iter())
        .filter_map(|(k, v)| serde_json::from_value::<hcl::Value>(v.clone()).ok().map(|v| (k.clone(), v)))
        .collect();
    let session = match open_with(ctx, preset) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    if let Some(plan) = &saved {
        if let Err(why) = session.check_variables(plan) {
            return err(format!("{why}. Nothing was applied."));
        }
    }
    let timeout = match lock_timeout(&args.lock_timeout) {
        Ok(t) => t,
        Err(rc) => return rc,
    };
    if let Err(rc) = session.check_left_behind() {
        return rc;
    }
    let _lock = match session.state_store.lock("apply", timeout) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let state = match session.state_store.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let plan = if let Some(plan) = saved {
        match block_on(stale(&session, &plan, &state)) {
            Err(why) => return err(format!("stale plan: {why}. Nothing was applied; run `dbctl plan` again.")),
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("{w}");
                }
            }
        }
        if !data_loss_allowed(&plan, args) {
            return EXIT_ERROR;
        }
        plan
    } else {
        let opts = PlanOpts { targets: args.target.clone(), replace: args.replace.clone(), ..Default::default() };
        let plan = match block_on(session.plan(&state, &opts)) {
            Ok(p) => p,
            Err(rc) => return rc,
        };
        print!("{}", render::human(&plan, false));
        if !plan.has_changes() {
            // Nothing to run, but the servers as read now are recorded (the
            // serial unchanged: plans saved meanwhile stay valid).
            let mut state = state;
            record_live(&session, &mut state);
            if let Err(e) = session.state_store.save(&state) {
                return err(format!("recording the live state failed: {e}"));
            }
            return EXIT_OK;
        }
        // Data loss is approved by the flag or a yes typed at a terminal, never by a pipe.
        let interactive = !args.auto_approve && std::io::stdin().is_terminal();
        if !interactive && !data_loss_allowed(&plan, args) {
            return EXIT_ERROR;
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
    if let Err(rc) = session.check_left_behind() {
        return rc;
    }
    let _lock = match session.state_store.lock("destroy", Duration::ZERO) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let state = match session.state_store.load() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let opts = PlanOpts { destroy: true, force: args.force, targets: args.target.clone(), ..Default::default() };
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
