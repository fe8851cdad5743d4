use super::session::{block_on, err, open_with_state, PlanOpts};
use super::{Ctx, EXIT_OK};
use crate::cli::{Format, PlanArgs};
use crate::plan::{render, Plan};

pub const EXIT_CHANGES: u8 = 2;

pub fn print(plan: &Plan, format: Format, verbose: bool) {
    match format {
        Format::Human => print!("{}", render::human(plan, verbose)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&render::json(plan)).expect("json")),
        Format::Markdown => print!("{}", render::markdown(plan, verbose)),
    }
}

/// When no plan could be made: with `--format json` or `markdown`, what went
/// wrong as a document on stdout (a JSON object with `errors`, a comment CI
/// can post), besides the messages already on stderr. The exit code stays 1.
fn failed(format: Format, rc: u8) -> u8 {
    let mut diags = super::report::take();
    if !diags.iter().any(|d| d.is_error()) {
        diags.push(crate::diag::Diagnostic::error("the plan could not be made; the messages above say why"));
    }
    match format {
        Format::Human => {}
        Format::Json => println!("{}", serde_json::to_string_pretty(&render::json_errors(&diags)).expect("json")),
        Format::Markdown => print!("{}", render::markdown_errors(&diags)),
    }
    rc
}

pub fn run(ctx: &Ctx, args: &PlanArgs) -> u8 {
    super::report::start();
    let rc = plan(ctx, args);
    super::report::take();
    rc
}

fn plan(ctx: &Ctx, args: &PlanArgs) -> u8 {
    let no_refresh = args.no_refresh || !args.refresh;
    if no_refresh && args.refresh_only {
        return failed(
            args.format,
            err("--refresh=false and --refresh-only cannot be given together: a refresh-only plan is one that reads the servers"),
        );
    }
    let (mut session, state) = match open_with_state(ctx, !no_refresh) {
        Ok(x) => x,
        Err(rc) => return failed(args.format, rc),
    };
    let opts = PlanOpts {
        refresh_only: args.refresh_only,
        no_refresh,
        targets: args.target.clone(),
        replace: args.replace.clone(),
        shown_only: args.out.is_none() && args.format != Format::Json,
        ..Default::default()
    };
    if args.out.is_some() {
        // The first saved plan of a new configuration fixes the state's
        // lineage, so `apply PLANFILE` finds the same one.
        if let Err(e) = session.state_store.init(&state) {
            return failed(args.format, err(e));
        }
    }
    let mut plan = match block_on(session.plan(&state, &opts)) {
        Ok(p) => p,
        Err(rc) => return failed(args.format, rc),
    };
    // The configuration's warnings (already on stderr) go in the plan, so
    // its JSON and markdown carry them.
    let warnings: Vec<_> = super::report::take().into_iter().filter(|d| !d.is_error()).collect();
    super::report::start();
    plan.config_warnings = crate::plan::ConfigWarning::from_diags(&warnings);
    // Saved before printing: a reader that stops early (`| head`) cannot lose it.
    if let Some(out) = &args.out {
        session.seal(&mut plan);
        let bytes = serde_json::to_vec_pretty(&plan).expect("plan serialises");
        if let Err(e) = crate::state::write_private(out, &bytes) {
            return failed(args.format, err(e));
        }
    }
    print(&plan, args.format, args.verbose);
    if let Some(out) = &args.out {
        if args.format == Format::Human {
            println!(
                "\nSaved the plan to {}. Apply exactly this plan with: dbctl apply {}",
                out.display(),
                out.display()
            );
        }
    }
    let rc = if args.detailed_exitcode && (plan.has_changes() || (args.refresh_only && !plan.drift.is_empty())) {
        EXIT_CHANGES
    } else {
        EXIT_OK
    };
    // The process exits next: freeing a plan and a state of thousands of
    // resources one allocation at a time would only delay it (about a tenth
    // of a large plan's CPU time). Both are plain data, with nothing to close;
    // so is the session's configuration (the rest of the session, which may
    // hold connections, is closed as usual).
    std::mem::forget(plan);
    std::mem::forget(state);
    std::mem::forget(std::mem::take(&mut session.config));
    rc
}
