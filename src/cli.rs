//! The command line: `serve`, `demo`, `check-config`, `hash-key`.
//!
//! In the library (not in `main.rs`) so that `examples/demo.rs` runs the
//! very same demo: `cargo run --example demo` builds with the dev-dependency
//! features `cargo test` builds with, so the README's two commands share
//! every compiled dependency.
//!
//! Files: `cli/exit.rs` (exit codes), `cli/load.rs` (config + keys file,
//! every check `serve` makes before binding), `cli/logging.rs`,
//! `cli/signals.rs`, `cli/serve.rs`, `cli/demo.rs` (simulator + gateway),
//! `cli/demo_script.rs` (the commands the demo prints), `cli/hash_key.rs`.

mod demo;
pub mod demo_script;
pub mod exit;
mod hash_key;
pub mod load;
mod logging;
mod serve;
mod signals;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// `--config` of `serve` when none is given (relative to the working directory).
pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";

#[derive(Parser)]
#[command(
    name = "layers-gateway",
    version,
    about = "A caching gateway in front of the Layers Partner API",
    after_help = exit::HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve partner traffic with a config file.
    #[command(after_help = exit::HELP)]
    Serve {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Accept the published demo keys (config/keys.toml) for a local trial.
        #[arg(long)]
        allow_demo_keys: bool,
    },
    /// Start the origin simulator and a gateway in front of it, and print curl commands.
    #[command(after_help = exit::HELP)]
    Demo {
        /// Config to use instead of the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a config file and its keys file as `serve` would: exit 0 (warnings
    /// may be printed), or 64 naming the bad field.
    #[command(after_help = exit::HELP)]
    CheckConfig {
        file: PathBuf,
        /// Accept the published demo keys, as `serve --allow-demo-keys` does.
        #[arg(long)]
        allow_demo_keys: bool,
    },
    /// Read an API key on stdin and print its keys-file entry.
    #[command(after_help = exit::HELP)]
    HashKey {
        /// The organization the key belongs to (must not be empty).
        #[arg(long, default_value = "org_example")]
        org: String,
        /// Comma-separated scopes, `*` for all.
        #[arg(long, default_value = "content:read")]
        scopes: String,
        /// Rate-limit tier: standard, pilot, partner, or one the --config file defines.
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Config whose [shaping.tiers] define more tiers.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs a command line (`args[0]` is the program name).
pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and exit 0; a usage error exits 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let code = match cli.cmd {
        Cmd::CheckConfig {
            file,
            allow_demo_keys,
        } => load::check_config(&file, allow_demo_keys),
        Cmd::HashKey {
            org,
            scopes,
            tier,
            config,
        } => hash_key::run(&org, &scopes, &tier, config.as_deref()),
        Cmd::Serve {
            config,
            allow_demo_keys,
        } => serve::run(&config, allow_demo_keys),
        Cmd::Demo { config } => demo::run(config.as_deref()),
    };
    // The last log lines (a drain's, a failed start's) before the exit.
    logging::flush(std::time::Duration::from_secs(2));
    code
}

/// A multi-threaded tokio runtime running `f`; exit 1 if it cannot start.
fn runtime<F: std::future::Future<Output = ExitCode>>(f: impl FnOnce() -> F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
