//! Exit codes, the same for every command (and in `--help`).

/// Success; `serve` and `demo` also exit 0 when they stop on SIGTERM or
/// SIGINT, after the drain (requests still running when
/// `server.shutdown_grace_ms` ends are cut, and a warning says so).
pub const OK: u8 = 0;
/// The gateway could not start or run: a listener cannot bind (the message
/// names it: `server.listen 127.0.0.1:8080: address in use`), the runtime
/// cannot start.
pub const FAILURE: u8 = 1;
/// Command-line usage error: unknown command or option, missing argument.
pub const USAGE: u8 = 2;
/// Bad config or input: the config file, its keys file or a `hash-key`
/// argument; the message names the field (sysexits' EX_USAGE).
pub const BAD_CONFIG: u8 = 64;

/// The exit codes as `--help` prints them.
pub const HELP: &str = "\
Exit codes:
  0   success (serve and demo: stopped on SIGTERM or SIGINT, after the drain)
  1   could not start or run (a listener cannot bind: the message names it)
  2   command-line usage error
  64  bad config or input (config file, keys file, hash-key arguments): the message names the field";
