//! The `appstack` command line: `run` (the controller), `crd`, `render`.

pub mod render;
pub mod run;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The AppStack operator.
#[derive(Parser, Debug)]
#[command(name = "appstack", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig
    /// (or the in-cluster service account). Logging: LOG_FORMAT=json|text
    /// (json when standard output is not a terminal), LOG_LEVEL (default
    /// info) and RUST_LOG filters.
    Run(run::RunArgs),
    /// Print the AppStack CustomResourceDefinition as YAML
    /// (install it with `appstack crd | kubectl apply -f -`).
    Crd,
    /// Print the objects an AppStack would create, without a cluster.
    /// Generated and referenced secret values are shown as placeholders.
    Render(RenderArgs),
    /// Make an AppStack from a docker-compose project (`import compose`) or
    /// its env list from a .env file (`import dotenv`), secrets kept out.
    #[command(subcommand)]
    Import(crate::import::cli::ImportCommand),
    /// Print a generated page of the book (scripts/generate.sh).
    #[command(hide = true)]
    Docs { page: crate::docs::Page },
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// AppStack YAML file (`-` for standard input); may hold several documents.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace for stacks whose metadata does not name one.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
}

/// Runs the command the user asked for.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crd::definition_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => render_command(&args),
        Command::Import(command) => crate::import::cli::run(command),
        Command::Docs { page } => {
            print!("{}", page.generate());
            ExitCode::SUCCESS
        }
        Command::Run(args) => run::main(args),
    }
}

/// `render`: prints what the AppStacks of `args.file` would create.
pub fn render_command(args: &RenderArgs) -> ExitCode {
    let input = if args.file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map(|_| input)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let result = input
        .map_err(|error| format!("reading {}: {error}", args.file.display()))
        .and_then(|input| {
            render::render_documents(&input, &args.namespace).map_err(|error| error.to_string())
        });
    match result {
        Ok(rendered) => {
            // A file of several documents: say which were used.
            if rendered.documents.len() > 1 {
                for document in &rendered.documents {
                    eprintln!("appstack render: {document}");
                }
            }
            print!("{}", rendered.output);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("appstack render: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::DatabaseChecks;
    use clap::CommandFactory;

    #[test]
    fn database_checks_default_to_all_and_take_the_documented_values() {
        let checks = |args: &[&str]| match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Run(run)) => Ok(run.database_checks),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(checks(&["appstack", "run"]), Ok(DatabaseChecks::All));
        for (value, expected) in [
            ("all", DatabaseChecks::All),
            ("external", DatabaseChecks::External),
            ("none", DatabaseChecks::None),
        ] {
            assert_eq!(
                checks(&["appstack", "run", "--database-checks", value]),
                Ok(expected)
            );
        }
        assert_eq!(
            checks(&["appstack", "run", "--database-checks", "some"]),
            Err(clap::error::ErrorKind::InvalidValue)
        );
    }

    #[test]
    fn every_run_flag_reads_a_variable_the_cli_reference_documents() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("a run subcommand");
        let readme = include_str!("../../docs/src/reference/cli.md");
        let mut flags = 0;
        for argument in run.get_arguments() {
            let Some(flag) = argument.get_long() else {
                continue;
            };
            if flag == "help" {
                continue;
            }
            flags += 1;
            let variable = argument
                .get_env()
                .unwrap_or_else(|| panic!("--{flag} reads no environment variable"))
                .to_string_lossy();
            assert!(
                variable.starts_with("APPSTACK_"),
                "--{flag} reads {variable}"
            );
            let row = format!("| `--{flag}`");
            let documented = readme
                .lines()
                .find(|line| line.starts_with(&row))
                .unwrap_or_else(|| panic!("the CLI reference has no row for --{flag}"));
            assert!(
                documented.contains(&format!("`{variable}`")),
                "the CLI reference's row for --{flag} names {variable}: {documented}"
            );
        }
        assert!(flags >= 12, "found {flags} flags");
    }
}
