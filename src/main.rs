//! The `stockroom` binary: `stockroom [--config <file>]`.

use std::path::PathBuf;
use std::process::ExitCode;

use stockroom::config::Settings;

/// mimalloc: the request path allocates small objects on several threads; measured faster
/// than the system allocator here (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use stockroom::startup::Application;

const USAGE: &str = "usage: stockroom [--config <file>]

Runs the stockroom server. Settings come from <file> (default: config.toml in the working
directory, if present) and STOCKROOM_<SECTION>__<KEY> environment variables. With no
configuration it listens on 127.0.0.1:8080 and keeps its data in ./data.";

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("stockroom: {error:#}");
            return ExitCode::from(2);
        }
    };
    stockroom::telemetry::init(&settings.log);
    let outcome = actix_web::rt::System::new()
        .block_on(async move { Application::build(settings).await?.run_until_stopped().await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stockroom stopped");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(Some(config))` to run, `Ok(None)` after printing help or version.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Option<PathBuf>>, String> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("stockroom {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--config" => config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?)),
            other => match other.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(Some(config))
}
