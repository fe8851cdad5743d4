use super::session::{block_on, open_with_state, PlanOpts};
use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::GraphArgs;
use crate::graph::{plan_dot, Graph};

pub fn run(ctx: &Ctx, args: &GraphArgs) -> u8 {
    if args.plan {
        let (session, state) = match open_with_state(ctx, true) {
            Ok(x) => x,
            Err(rc) => return rc,
        };
        let opts = PlanOpts::default();
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
