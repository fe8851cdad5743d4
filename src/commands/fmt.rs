use super::{Ctx, EXIT_ERROR, EXIT_OK};
use crate::cli::FmtArgs;
use crate::config::config_files;
use crate::diag::{Diagnostic, Loc, SourceFile};

pub fn run(ctx: &Ctx, args: &FmtArgs) -> u8 {
    let files = match config_files(&ctx.load_options()) {
        Ok(f) => f,
        Err(d) => {
            ctx.print_diags(&[d]);
            return EXIT_ERROR;
        }
    };
    let mut rc = EXIT_OK;
    for path in files {
        let name = path.strip_prefix(&ctx.dir).unwrap_or(&path).display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                rc = EXIT_ERROR;
                continue;
            }
        };
        let formatted = match crate::fmt::format_source(&text) {
            Ok(f) => f,
            Err(e) => {
                let file = std::sync::Arc::new(SourceFile { name: name.clone(), text });
                let span = file.error_span(e.location().offset());
                ctx.print_diags(&[
                    Diagnostic::error(format!("syntax error: {}", e.message())).at(&Loc::new(&file, span), "here")
                ]);
                rc = EXIT_ERROR;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.diff {
            let diff = similar::TextDiff::from_lines(&text, &formatted);
            print!("{}", diff.unified_diff().header(&name, &name));
        }
        if args.check {
            println!("{name}");
            rc = EXIT_ERROR;
            continue;
        }
        if let Err(e) = write_atomic(&path, &formatted) {
            eprintln!("error: cannot write {name}: {e}");
            rc = EXIT_ERROR;
            continue;
        }
        if !args.diff {
            println!("{name}");
        }
    }
    rc
}

/// Write through a temporary file in the same directory, then rename, so a
/// crash never leaves a half-written configuration file.
fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
