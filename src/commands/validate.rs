use serde_json::json;

use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::{Format, ValidateArgs};
use crate::config;

pub fn run(ctx: &Ctx, args: &ValidateArgs) -> u8 {
    if args.format == Format::Json {
        let loaded = config::load(&config::LoadOptions { env_unknown: true, ..ctx.load_options() });
        let places = crate::diag::locate(&loaded.diags.0);
        let diags: Vec<_> = loaded
            .diags
            .0
            .iter()
            .zip(places)
            .map(|(d, place)| {
                let (file, line, column) = match place {
                    Some((file, line, col)) => (Some(file), Some(line), Some(col)),
                    None => (None, None, None),
                };
                json!({
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "message": d.message,
                    "file": file, "line": line, "column": column,
                    "label": d.label, "help": d.help,
                })
            })
            .collect();
        let valid = !loaded.diags.has_errors();
        let out = json!({ "format_version": "1.0", "valid": valid, "diagnostics": diags });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return if valid { EXIT_OK } else { EXIT_ERROR };
    }
    // No environment needed: an unset env() is unknown here, not an error.
    let loaded = ctx.load_with(config::LoadOptions { env_unknown: true, ..ctx.load_options() });
    match loaded.config {
        Some(cfg) => {
            let warnings = loaded.diags.0.len();
            let extra = if warnings > 0 { format!(", {warnings} warning(s)") } else { String::new() };
            println!(
                "Success! The configuration is valid: {} resource(s) in {} file(s){extra}.",
                cfg.resources.len(),
                loaded.files.len()
            );
            EXIT_OK
        }
        None => {
            let errors = loaded.diags.0.iter().filter(|d| d.is_error()).count();
            eprintln!("Error: the configuration is invalid ({errors} error(s)); nothing was run.");
            EXIT_ERROR
        }
    }
}
