//! `shoal-template SRC`: renders the template file SRC with the JSON context on stdin (what
//! `shoal agent --template` sends) and prints the result. Errors go to stderr with the file and
//! line, exit status 1. The agent runs this once per change; it is not meant to be run by hand,
//! though it can be, to try a template: `shoal-template t.tmpl < context.json`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use shoal::templates::render::{Context, render};

fn main() -> ExitCode {
    let Some(src) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: shoal-template SRC < context.json");
        return ExitCode::from(64);
    };
    let result = std::fs::read_to_string(&src)
        .map_err(|e| format!("cannot read template {}: {e}", src.display()))
        .and_then(|source| {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("cannot read the context: {e}"))?;
            let ctx: Context =
                serde_json::from_str(&input).map_err(|e| format!("invalid context JSON: {e}"))?;
            render(&src, &source, &ctx).map_err(|e| e.to_string())
        });
    match result {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
