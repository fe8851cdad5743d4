use super::session::err;
use super::{Ctx, EXIT_OK};
use crate::cli::DevCommand;
use crate::engine::embedded::Embedded;
use crate::model::Body;
use crate::runtime::dbctl_dir;

pub fn run(ctx: &Ctx, cmd: &DevCommand) -> u8 {
    let loaded = ctx.load();
    let Some(cfg) = loaded.config else { return super::EXIT_ERROR };
    let dbctl = dbctl_dir(&ctx.dir);
    let mut any = false;
    for r in cfg.resources.values() {
        let Body::Server(s) = &r.body else { continue };
        if !s.embedded {
            continue;
        }
        any = true;
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
                    if s.engine == crate::model::Engine::Mysql { "MariaDB" } else { "PostgreSQL" },
                    e.port,
                    e.data_dir().display()
                );
            }
            DevCommand::Down => {
                if let Err(x) = e.stop() {
                    return err(x);
                }
                println!("{}: stopped", r.addr);
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
    if !any {
        println!("No embedded servers in this configuration.");
    }
    EXIT_OK
}
