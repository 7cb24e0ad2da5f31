//! The `appstack` binary: wiring only.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The AppStack operator.
#[derive(Parser, Debug)]
#[command(name = "appstack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig
    /// (or the in-cluster service account).
    Run(RunArgs),
    /// Print the AppStack CustomResourceDefinition as YAML
    /// (install it with `appstack crd | kubectl apply -f -`).
    Crd,
    /// Print the objects an AppStack would create, without a cluster.
    /// Generated and referenced secret values are shown as placeholders.
    Render(RenderArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch AppStacks in this namespace only; repeat for several. Without
    /// it, all namespaces are watched.
    #[arg(long = "namespace", env = "APPSTACK_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// AppStack YAML file (`-` for standard input); may hold several documents.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Namespace for stacks whose metadata does not name one.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", appstack::crd::definition_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => render(&args),
        Command::Run(args) => run(args),
    }
}

fn render(args: &RenderArgs) -> ExitCode {
    let input = if args.file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map(|_| input)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let result = input
        .map_err(|error| format!("reading {}: {error}", args.file.display()))
        .and_then(|input| {
            appstack::render::render(&input, &args.namespace).map_err(|error| error.to_string())
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

fn run(args: RunArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LOG_LEVEL")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "no Kubernetes client configuration");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match appstack::controller::run(client, args.namespaces, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "controller failed");
                ExitCode::FAILURE
            }
        }
    })
}
