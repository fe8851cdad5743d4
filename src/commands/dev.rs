use super::session::err;
use super::{Ctx, EXIT_OK};
use crate::cli::DevCommand;
use crate::engine::embedded::Embedded;
use crate::model::Body;
use crate::reach::dbctl_dir;

pub fn run(ctx: &Ctx, cmd: &DevCommand) -> u8 {
    let loaded = ctx.load();
    let Some(cfg) = loaded.config else { return super::EXIT_ERROR };
    let dbctl = dbctl_dir(&ctx.dir);
    let mut any = false;
    let mut configured = std::collections::BTreeSet::new();
    for r in cfg.resources.values() {
        let Body::Server(s) = &r.body else { continue };
        if !s.embedded {
            continue;
        }
        any = true;
        configured.insert(r.addr.name.clone());
        let e = match Embedded::for_engine(&dbctl, &r.addr.name, s.port, s.engine) {
            Ok(e) => e,
            Err(e) => return err(e),
        };
        match cmd {
            DevCommand::Up => {
                if let Err(x) = e.start() {
                    return err(x);
                }
                println!(
                    "{}: {} running on 127.0.0.1:{} (data in {})",
                    r.addr,
                    crate::engine::dialect::Dialect::of(s.engine).product(),
                    e.port,
                    e.data_dir().display()
                );
            }
            DevCommand::Down { purge } => {
                if let Err(x) = down(&e, *purge) {
                    return err(x);
                }
                println!("{}: {}", r.addr, if *purge { "stopped; its data is deleted" } else { "stopped" });
            }
            DevCommand::Status => {
                let state = if !e.is_initialised() {
                    "not created yet (dbctl dev up, or dbctl apply, creates it)"
                } else if e.is_running() {
                    "running"
                } else {
                    "stopped"
                };
                println!("{}: {state}; port {}; data {}", r.addr, e.port, e.data_dir().display());
            }
        }
    }
    // Servers under .dbctl/servers that the configuration no longer names
    // still run and hold data: `down` stops them too, `--purge` deletes them.
    if let DevCommand::Down { purge } = cmd {
        let names: Vec<String> = std::fs::read_dir(dbctl.join("servers"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !configured.contains(n))
            .collect();
        for name in names {
            let Some(e) = Embedded::existing(&dbctl, &name) else { continue };
            any = true;
            if let Err(x) = down(&e, *purge) {
                return err(x);
            }
            println!(
                "{name} (no longer in the configuration): {}",
                if *purge { "stopped; its data is deleted" } else { "stopped" }
            );
        }
    }
    if !any {
        println!("No embedded servers in this configuration.");
    }
    EXIT_OK
}

fn down(e: &Embedded, purge: bool) -> Result<(), crate::engine::EngineError> {
    if purge {
        e.purge()
    } else {
        e.stop()
    }
}
