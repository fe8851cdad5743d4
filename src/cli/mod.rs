//! Command-line types only (clap). Each doc comment is the command's help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// dbctl — declarative plan/apply for a fleet of databases.
///
/// HCL files declare servers, databases, users and roles, grants, secrets,
/// routers and backup policies; dbctl reads the live state of every server,
/// diffs it against the files and prints a plan, or applies it step by step.
#[derive(Debug, Parser)]
#[command(name = "dbctl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Change to DIR before doing anything.
    #[arg(short = 'C', long = "chdir", value_name = "DIR", global = true)]
    pub chdir: Option<PathBuf>,
    /// Load only these files instead of every *.hcl in the directory (repeatable).
    #[arg(long = "config", value_name = "FILE", global = true)]
    pub config: Vec<PathBuf>,
    /// Set a variable: --var NAME=VALUE (repeatable; wins over --var-file and DBCTL_VAR_NAME).
    #[arg(long = "var", value_name = "NAME=VALUE", global = true, value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Read variables from an HCL file of NAME = VALUE lines (repeatable).
    #[arg(long = "var-file", value_name = "FILE", global = true)]
    pub var_files: Vec<PathBuf>,
    /// Never use colour (also: NO_COLOR=1).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Give up on a connection to a server that does not answer within this time (e.g. 10s).
    #[arg(long, value_name = "DURATION", global = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration such as 30s or 5m: {e}"))
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, type-check and graph the configuration; no I/O to servers.
    ///
    /// Every problem is reported at once, each pointing at its file and line.
    /// Exit 1 if there is any error; warnings alone exit 0.
    Validate(ValidateArgs),
    /// Rewrite the configuration files in canonical form (comments are kept).
    Fmt(FmtArgs),
    /// Refresh live state, diff it against the configuration and print the plan.
    Plan(PlanArgs),
    /// Apply a saved plan, or plan and ask for yes/no first.
    Apply(ApplyArgs),
    /// Plan and apply the removal of everything dbctl manages.
    Destroy(DestroyArgs),
    /// Show the state, or a saved plan.
    Show(ShowArgs),
    /// Print the dependency graph in Graphviz DOT (`dbctl graph | dot -Tsvg > graph.svg`).
    Graph(GraphArgs),
    /// Inspect and edit the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Adopt an existing object into the state: dbctl import ADDR ID.
    Import {
        /// The resource's address in the configuration, e.g. database.users.
        addr: String,
        /// The object's name on its server; for a secret, its name or ARN in Secrets Manager.
        id: String,
    },
    /// Release a lock left by an apply that was killed.
    ForceUnlock {
        /// Postgres state backend: end the database session of a dbctl that still holds the
        /// lock (a stuck process, a lost machine). Local backend: changes nothing; its lock is a
        /// kernel file lock, released when its process ends, and never taken from a running one.
        #[arg(long)]
        force: bool,
    },
    /// Start, stop and inspect the embedded servers.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Run, list, restore, verify and prune backups.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Show and rotate secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Migrations: status per database, lint, and a new pair of files.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Print the JSON Schema of the configuration (kept in schema/config.schema.json).
    Schema,
    /// Print shell completions: dbctl completions bash > /etc/bash_completion.d/dbctl
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// human (default) or json (a list of diagnostics with file, line and column).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Change nothing; list the files that are not formatted and exit 1 if any.
    #[arg(long)]
    pub check: bool,
    /// Print a unified diff of the changes.
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan to FILE for `dbctl apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 0 when there are no changes, 2 when there are.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan only these addresses and what they depend on (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub target: Vec<String>,
    /// Only report drift between the state and the servers; change nothing.
    #[arg(long)]
    pub refresh_only: bool,
    /// --refresh=false: connect to no server; compare with the servers as the
    /// last apply read them (recorded in the state). For CI that cannot reach them.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub refresh: bool,
    /// The same as --refresh=false.
    #[arg(long)]
    pub no_refresh: bool,
    /// Show the SQL statement or API call behind each change.
    #[arg(long, short)]
    pub verbose: bool,
    /// Give this secret a new value (repeatable), e.g. when its store lost it.
    #[arg(long, value_name = "ADDR")]
    pub replace: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `dbctl plan --out`.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply a plan that drops databases holding data without asking
    /// (otherwise asked at a terminal even with --auto-approve, refused elsewhere).
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Independent steps on different servers run at most N at a time.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Apply only these addresses and what they depend on (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub target: Vec<String>,
    /// How long to wait for the state lock (e.g. 30s).
    #[arg(long, default_value = "0s")]
    pub lock_timeout: String,
    /// Give this secret a new value (repeatable), e.g. when its store lost it.
    #[arg(long, value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Each step gives up when it waits on a lock or runs longer than this
    /// (PostgreSQL lock_timeout and statement_timeout; MySQL lock_wait_timeout,
    /// MariaDB max_statement_time). 0 = no limit, for a long CREATE DATABASE or REASSIGN.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Destroy only these addresses and what depends on them (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub target: Vec<String>,
    /// Drop databases even with open connections.
    #[arg(long)]
    pub force: bool,
    /// Each step gives up when it waits on a lock or runs longer than this
    /// (PostgreSQL lock_timeout and statement_timeout; MySQL lock_wait_timeout,
    /// MariaDB max_statement_time). 0 = no limit, for a long CREATE DATABASE or REASSIGN.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub planfile: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Graph the steps of a plan instead of the resources.
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses in the state.
    List,
    /// Show one resource in the state.
    Show {
        /// Its address, e.g. user.app.
        addr: String,
    },
    /// Forget a resource without touching the server.
    Rm {
        /// Its address, e.g. user.app.
        addr: String,
    },
    /// Write the state from the configured backend to a file, or to standard output.
    Pull {
        /// The file to write (mode 0600); standard output without it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Copy a state file into the configured backend, e.g. .dbctl/state.json when moving to postgres.
    Push {
        /// The state file to push (default .dbctl/state.json).
        file: Option<PathBuf>,
        /// Replace a state of another lineage, or a newer one.
        #[arg(long)]
        force: bool,
        /// How long to wait for the state lock held by a running apply (e.g. 30s).
        #[arg(long, default_value = "0s")]
        lock_timeout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start the embedded servers (initialising them on first use).
    Up,
    /// Stop the embedded servers.
    Down {
        /// Also delete their data, passwords and ports (wherever the data lives).
        #[arg(long)]
        purge: bool,
    },
    /// Show each embedded server: running or not, port, data directory.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run backup policies now.
    Run {
        /// One policy (by label or address); default: every policy.
        policy: Option<String>,
        /// Only the policies whose cron schedule has come round since their last backup (for cron or CI).
        #[arg(long)]
        due: bool,
        /// Only this database, e.g. database.orders.
        #[arg(long, value_name = "ADDR")]
        database: Option<String>,
        /// Dump with this many parallel jobs: pg_dump's directory format, staged
        /// in a temporary directory ($TMPDIR) and uploaded file by file.
        #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
        jobs: u32,
    },
    /// List complete backups (those with a manifest) in every policy's storage.
    List {
        /// human or json.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Restore a backup into a new database.
    Restore {
        /// The backup's id (see `dbctl backup list`).
        id: String,
        /// The database to create and restore into.
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Drop and replace the database if it exists.
        #[arg(long)]
        replace: bool,
    },
    /// Restore into a scratch database and compare with what was recorded.
    Verify {
        /// The backup's id (see `dbctl backup list`).
        id: String,
    },
    /// Delete backups that the policies' keep rules no longer keep.
    Prune {
        /// Print what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// A secret's store, name, version and age; the value only with --reveal.
    Show {
        /// The secret's address, e.g. secret.app.
        addr: String,
        /// Print the value (a user's password) alone on the last line.
        #[arg(long)]
        reveal: bool,
    },
    /// Generate a new version now; users that use it get it at the next apply.
    Rotate {
        /// The secret's address, e.g. secret.app.
        addr: String,
        /// How long to wait for the state lock held by a running apply (e.g. 30s).
        #[arg(long, default_value = "0s")]
        lock_timeout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Applied (with checksums and times) and pending migrations per database.
    Status {
        /// human or json.
        #[arg(long, default_value = "human", value_parser = ["human", "json"])]
        format: String,
    },
    /// Lint every migration: squawk's rules and the backward-compatibility rules.
    Lint,
    /// On a throwaway embedded server: every migration from empty, and each
    /// down file must leave the schema as it was before its up file.
    Test,
    /// Write the next pair of files, NNNN_NAME.up.sql and NNNN_NAME.down.sql.
    New {
        /// The migration's name (letters, digits and _).
        name: String,
        /// Which migrations block, when there are several (migrations.NAME).
        #[arg(long = "block")]
        block: Option<String>,
    },
}
