//! layers-gateway command line: serve, demo, check-config, hash-key.
//! The commands live in the library ([`layers_gateway::cli`]) so that
//! `examples/demo.rs` runs the same demo.

fn main() -> std::process::ExitCode {
    layers_gateway::cli::main()
}
