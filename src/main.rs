//! The `appstack` binary: wiring only.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    appstack::cli::main(appstack::cli::Cli::parse())
}
