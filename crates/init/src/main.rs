//! The `quiesce-init` binary: see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    quiesce_init::run(&args)
}
