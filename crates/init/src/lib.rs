//! `quiesce-init`: PID 1 for containers that must stop without dropping requests.
//!
//! tini and dumb-init forward signals and reap zombies. quiesce-init also drains: on SIGTERM
//! readiness goes false at once, the app keeps serving while endpoint removal propagates
//! (EndpointSlice → kube-proxy, load balancers, client-side caches), then it gets its stop
//! signal and a deadline. `quiesce-init prestop` gives shell-less images a preStop hook.
//!
//! A library as well as the `quiesce-init` binary, so that another binary can run the very same
//! supervisor: `quiesce lab` starts each pod's first process as `quiesce __init`, which is
//! [`run`], and a test of the lab is then a test of this code, not of a copy.

mod child;
mod config;
mod control;
mod drain;
mod http;
mod log;
mod quiet;
mod readiness;
mod server;
mod sockdiag;
mod supervisor;
mod wake;

use std::process::ExitCode;

use config::{HELP, Invocation};

/// Runs `quiesce-init` with these arguments (without the program name) and the process's
/// environment, as the binary does: the supervisor, `prestop`, `--help` or `--version`.
pub fn run(args: &[String]) -> ExitCode {
    let invocation = match config::parse(args, &|k| std::env::var(k).ok()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("quiesce-init: {}", e.0);
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Invocation::Version => {
            println!("quiesce-init {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Invocation::Prestop(p) => prestop(&p),
        Invocation::Run(config) => match supervisor::run(*config) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
            Err(e) => {
                eprintln!("quiesce-init: {e}");
                ExitCode::from(e.exit_code())
            }
        },
    }
}

fn prestop(p: &config::Prestop) -> ExitCode {
    if let Some(d) = p.sleep {
        std::thread::sleep(d);
        return ExitCode::SUCCESS;
    }
    match control::request_drain(&p.control_socket, p.timeout) {
        Ok(waited) => {
            log::phase(&format!("prestop: drain delay passed after {waited:?}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quiesce-init prestop: {e}");
            ExitCode::from(1)
        }
    }
}
