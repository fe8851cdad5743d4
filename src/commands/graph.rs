use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::GraphArgs;
use crate::graph::Graph;

pub fn run(ctx: &Ctx, args: &GraphArgs) -> u8 {
    if args.plan {
        eprintln!("error: `dbctl graph --plan` is not built yet; it arrives with issue [2] PostgreSQL engine.");
        return EXIT_ERROR;
    }
    let loaded = ctx.load();
    let Some(cfg) = loaded.config else { return EXIT_ERROR };
    print!("{}", Graph::build(&cfg).to_dot());
    EXIT_OK
}
