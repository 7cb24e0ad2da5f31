//! `kubectl-appstack`, the kubectl plugin (`kubectl appstack ...`): wiring
//! only; see [`appstack::plugin`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    appstack::plugin::main(appstack::plugin::Plugin::parse())
}
