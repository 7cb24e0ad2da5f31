//! The `appstack` binary: wiring only.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// The AppStack operator.
#[derive(Parser, Debug)]
#[command(name = "appstack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the AppStack CustomResourceDefinition as YAML
    /// (install it with `appstack crd | kubectl apply -f -`).
    Crd,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", appstack::crd::definition_yaml()),
    }
}
