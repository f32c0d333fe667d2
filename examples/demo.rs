//! `cargo run --example demo`: the same as `layers-gateway demo` (options
//! too: `cargo run --example demo -- --config FILE`).
//!
//! The README's first command. As an example it is built with the
//! dev-dependency features `cargo test` uses, so `cargo test` afterwards
//! compiles no dependency again (`cargo run -- demo` would build tokio,
//! serde and what depends on them twice: once without, once with them).

fn main() -> std::process::ExitCode {
    let args = std::iter::once("layers-gateway".into())
        .chain(std::iter::once("demo".into()))
        .chain(std::env::args_os().skip(1));
    layers_gateway::cli::run(args.collect::<Vec<std::ffi::OsString>>())
}
