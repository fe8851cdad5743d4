//! dbctl: parse arguments, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: a plan at scale allocates and frees hundreds of thousands of
/// small strings and maps; glibc's allocator spent about a quarter of the
/// CPU time there (malloc_consolidate, page faults on fresh pages).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `mi_option_set` (the library is linked by the allocator crate).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() -> ExitCode {
    // Freed memory is kept for the process's next allocations, not given
    // back to the system (mimalloc 3 gives it back after a second; this
    // was 50 ms): a page given back is zeroed again by the kernel when it is
    // touched next, and on these VMs zeroing pages took half of a plan's
    // main-thread time at 10,000 objects. Kept, a no-change plan there is
    // about 10 ms faster, at a peak RSS of 113–131 MiB (107–118 MiB with
    // 50 ms; 130 MiB before the state was parsed after the configuration).
    // `MIMALLOC_PURGE_DELAY` in the environment is left to decide.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option of the allocator linked in; no memory is touched.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    // A reader that stops early (`dbctl plan | head`) ends the command
    // quietly, as with any Unix tool, instead of a panic in `println!`.
    // SIGPIPE itself stays ignored: a child's pipe that closes (pg_restore
    // refusing a corrupt backup) must be an error to report, not a death.
    // `apply` never prints with `println!` while steps run (a closed stdout
    // stops it after the steps in flight).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe (os error 32)") || msg.contains("kind: BrokenPipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
    // Warnings by default; `DBCTL_LOG=debug` shows where a command spends its time.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DBCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    let cli = dbctl::cli::Cli::parse();
    ExitCode::from(dbctl::commands::run(cli))
}
