use super::session::{block_on, err, open, PlanOpts};
use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::GraphArgs;
use crate::graph::{plan_dot, Graph};

pub fn run(ctx: &Ctx, args: &GraphArgs) -> u8 {
    if args.plan {
        let session = match open(ctx) {
            Ok(s) => s,
            Err(rc) => return rc,
        };
        let state = match session.state_store.load() {
            Ok(s) => s,
            Err(e) => return err(e),
        };
        let opts = PlanOpts { destroy: false, force: false, refresh_only: false, targets: vec![] };
        return match block_on(session.plan(&state, &opts)) {
            Ok(plan) => {
                print!("{}", plan_dot(&session.config, &plan));
                EXIT_OK
            }
            Err(rc) => rc,
        };
    }
    let loaded = ctx.load();
    let Some(cfg) = loaded.config else { return EXIT_ERROR };
    print!("{}", Graph::build(&cfg).to_dot());
    EXIT_OK
}
