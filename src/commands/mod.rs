//! One function per command; each returns the process exit code.

mod apply;
mod backup;
mod dev;
mod fmt;
mod graph;
mod migrate;
mod plan;
mod report;
mod secret;
mod session;
mod state;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::{Cli, Command, Global};
use crate::config::{self, LoadOptions, Loaded};
use crate::diag::{render, Diagnostic};

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;

/// What every command gets: the global options, resolved.
pub struct Ctx {
    pub global: Global,
    pub dir: PathBuf,
    pub color: bool,
}

impl Ctx {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            dir: self.dir.clone(),
            files: self.global.config.clone(),
            vars: self.global.vars.clone(),
            var_files: self.global.var_files.clone(),
            preset: Default::default(),
            env_unknown: false,
        }
    }

    /// Load the configuration and print its diagnostics (warnings too) to stderr.
    pub fn load(&self) -> Loaded {
        self.load_with(self.load_options())
    }

    pub fn load_with(&self, opts: LoadOptions) -> Loaded {
        self.load_seeing_servers(opts, &mut |_| {})
    }

    /// [`Ctx::load_with`], showing `servers` the servers as soon as they are
    /// known (see [`config::load_seeing_servers`]).
    pub fn load_seeing_servers(&self, opts: LoadOptions, servers: &mut dyn FnMut(&crate::model::Config)) -> Loaded {
        let loaded = config::load_seeing_servers(&opts, servers);
        self.print_diags(&loaded.diags.0);
        loaded
    }

    pub fn print_diags(&self, diags: &[Diagnostic]) {
        report::diags(diags);
        if !diags.is_empty() {
            eprint!("{}", render(diags, self.color));
        }
    }
}

pub fn run(cli: Cli) -> u8 {
    let color = !cli.global.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let dir = cli.global.chdir.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        eprintln!("error: -C {}: not a directory", dir.display());
        return EXIT_ERROR;
    }
    crate::engine::limits::set_connect_timeout(cli.global.connect_timeout);
    match &cli.command {
        Command::Apply(a) => crate::engine::limits::set_statement_timeout(a.statement_timeout),
        Command::Destroy(a) => crate::engine::limits::set_statement_timeout(a.statement_timeout),
        _ => {}
    }
    let ctx = Ctx { global: cli.global, dir, color };
    match cli.command {
        Command::Validate(a) => validate::run(&ctx, &a),
        Command::Fmt(a) => fmt::run(&ctx, &a),
        Command::Graph(a) => graph::run(&ctx, &a),
        Command::Schema => {
            println!("{}", schema_text());
            EXIT_OK
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "dbctl", &mut out);
            // A reader that stops early is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
            EXIT_OK
        }
        Command::Plan(a) => plan::run(&ctx, &a),
        Command::Apply(a) => apply::run(&ctx, &a),
        Command::Destroy(a) => apply::destroy(&ctx, &a),
        Command::Show(a) => state::show(&ctx, &a),
        Command::State(c) => state::run(&ctx, &c),
        Command::Import { addr, id } => state::import(&ctx, &addr, &id),
        Command::ForceUnlock { force } => state::force_unlock(&ctx, force),
        Command::Dev(c) => dev::run(&ctx, &c),
        Command::Backup(c) => backup::run(&ctx, &c),
        Command::Secret(c) => secret::run(&ctx, &c),
        Command::Migrate(c) => migrate::run(&ctx, &c),
    }
}

/// The configuration's JSON Schema, as checked in under schema/.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&config::jsonschema::config_schema()).expect("schema serialises")
}

#[allow(dead_code)]
fn not_built(what: &str) -> u8 {
    eprintln!("error: `dbctl {what}` is not available in this version of dbctl.");
    eprintln!("       See the README, \"Status\", for what works today.");
    EXIT_ERROR
}
