//! `kubectl appstack`: a kubectl plugin for reading and steering AppStacks
//! from a terminal, in the manner of `kubectl cnpg`. `status` shows the
//! stages in order, the pods of each component and why any cannot run, the
//! migration history and the last failure; `retry` runs a failed migration
//! again; `render` prints what a file's stacks would create.

mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use self::report::{StackReport, gather, text};

/// The plugin's command line: `kubectl appstack <command>`.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-appstack",
    bin_name = "kubectl appstack",
    version,
    about = "Read and steer AppStacks: their stages, pods, migrations and last failure"
)]
pub struct Plugin {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// The stack's stages in order with their state, the pods of each
    /// component with their phase and why any cannot run, the migration
    /// history, the last failure and the URL.
    Status(StatusArgs),
    /// Run a failed migration again: sets `spec.migrations.retryToken` to a
    /// new value. A stack synced from Git is synced back: there, change the
    /// token in Git instead.
    Retry(TargetArgs),
    /// Print the objects the AppStacks of a file would create, without a
    /// cluster (as `appstack render`).
    Render(crate::cli::RenderArgs),
}

/// Which cluster and namespace, as kubectl names them.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The stack's namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Path of the kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// The AppStack's name.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output format: `text` for a terminal, `json` for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Runs the command the user asked for.
pub fn main(plugin: Plugin) -> ExitCode {
    if let PluginCommand::Render(args) = &plugin.command {
        return crate::cli::render_command(args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubectl appstack: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plugin.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubectl appstack: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Status(args) => {
            let (client, namespace) = connect(&args.target.cluster).await?;
            let report = gather(&client, &namespace, &args.target.name).await?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => print!("{}", text(&report)),
            }
            Ok(())
        }
        PluginCommand::Retry(args) => {
            let (client, namespace) = connect(&args.cluster).await?;
            let token = report::retry(&client, &namespace, &args.name).await?;
            println!(
                "appstack {namespace}/{} retries its migration: retryToken is now {token:?}",
                args.name
            );
            Ok(())
        }
        PluginCommand::Render(_) => unreachable!("rendered without a cluster"),
    }
}

/// A client for the cluster `args` name, and the namespace to use.
async fn connect(args: &ClusterArgs) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => Config::from_kubeconfig(&options).await?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Plugin::command().debug_assert();
    }

    #[test]
    fn the_krew_manifest_installs_this_binary_from_the_release() {
        let manifest: serde_json::Value =
            serde_yaml::from_str(include_str!("../../deploy/krew/appstack.yaml")).unwrap();
        assert_eq!(
            manifest["apiVersion"],
            "krew.googlecontainertools.github.com/v1alpha2"
        );
        assert_eq!(manifest["kind"], "Plugin");
        assert_eq!(manifest["metadata"]["name"], "appstack");
        let platforms = manifest["spec"]["platforms"].as_array().unwrap();
        assert!(!platforms.is_empty());
        for platform in platforms {
            assert_eq!(platform["bin"], Plugin::command().get_name());
            let uri = platform["uri"].as_str().unwrap();
            assert!(
                uri.contains("/releases/download/v0.0.0/kubectl-appstack-"),
                "the release workflow fills in the version: {uri}"
            );
            assert_eq!(platform["sha256"].as_str().unwrap().len(), 64);
        }
    }
}
