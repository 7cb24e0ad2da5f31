//! The `appstack` command line: `run` (the controller), `crd`, `render`.

pub mod render;
pub mod run;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::database::DatabaseChecks;

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
    Run(RunArgs),
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
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch AppStacks in this namespace only; repeat (or comma-separate in
    /// the variable) for several. Without it, all namespaces are watched.
    #[arg(long = "namespace", env = "APPSTACK_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "APPSTACK_METRICS_ADDR", default_value = ":8080", value_parser = parse_addr)]
    pub metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "APPSTACK_HEALTH_ADDR", default_value = ":8081", value_parser = parse_addr)]
    pub health_addr: SocketAddr,
    /// Stacks reconciled at the same time.
    #[arg(long, env = "APPSTACK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Threads that run the operator's work. With 1, everything runs on
    /// one thread: a reconcile mostly waits on the API server, and threads
    /// sharing the allocator spend CPU waiting for each other.
    #[arg(long, env = "APPSTACK_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: u16,
    /// Upper bound, in seconds, of one reconcile and of connecting to the
    /// API server.
    #[arg(long, env = "APPSTACK_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Seconds in-flight reconciles get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "APPSTACK_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 25)]
    pub shutdown_timeout_seconds: u64,
    /// Elect a leader on a Lease so only one replica reconciles.
    #[arg(long, env = "APPSTACK_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace from
    /// POD_NAMESPACE, else `default`).
    #[arg(long, env = "APPSTACK_LEADER_ELECT_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_LEASE_NAME",
        default_value = "appstack-operator"
    )]
    pub leader_elect_lease_name: String,
    /// Seconds a Lease stays valid after its last renewal.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    pub leader_elect_lease_duration_seconds: u64,
    /// Seconds between renewals by the leader and retries by a standby.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_RETRY_PERIOD_SECONDS",
        default_value_t = 2
    )]
    pub leader_elect_retry_period_seconds: u64,
    /// This replica's identity in the Lease (default: POD_NAME, else
    /// hostname and process id).
    #[arg(long, env = "APPSTACK_LEADER_ELECT_IDENTITY")]
    pub leader_elect_identity: Option<String>,
    /// Which databases the operator connects to (SELECT 1 before
    /// migrating, then the schema revision): `all` in the cluster;
    /// `external` when the operator cannot reach pod IPs (outside the
    /// cluster, a local control plane); `none` to never connect.
    #[arg(
        long,
        env = "APPSTACK_DATABASE_CHECKS",
        value_enum,
        default_value_t = DatabaseChecks::All
    )]
    pub database_checks: DatabaseChecks,
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

/// Accepts `host:port` or Go-style `:port` (all interfaces).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    text.parse()
        .map_err(|error| format!("{text:?} is not host:port ({error})"))
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
        Command::Run(args) => run::main(args),
    }
}

fn render_command(args: &RenderArgs) -> ExitCode {
    let input = if args.file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map(|_| input)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let result = input
        .map_err(|error| format!("reading {}: {error}", args.file.display()))
        .and_then(|input| {
            render::render(&input, &args.namespace).map_err(|error| error.to_string())
        });
    match result {
        Ok(output) => {
            print!("{output}");
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
    fn every_run_flag_reads_a_variable_the_readme_documents() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("a run subcommand");
        let readme = include_str!("../../README.md");
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
                .unwrap_or_else(|| panic!("README has no row for --{flag}"));
            assert!(
                documented.contains(&format!("`{variable}`")),
                "README's row for --{flag} names {variable}: {documented}"
            );
        }
        assert!(flags >= 12, "found {flags} flags");
    }
}
