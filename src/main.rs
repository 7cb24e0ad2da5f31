//! The `appstack` binary: wiring only.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use appstack::controller::{self, Context, RunOptions};
use appstack::leader::{self, LeaderState, LeaseSettings};
use appstack::metrics::{Metrics, RequestCounterLayer};
use appstack::server::{self, ProcessState};
use appstack::telemetry::{self, error_chain};
use clap::{Args, Parser, Subcommand};
use futures::FutureExt;
use kube::api::GroupVersionKind;
use tokio::sync::watch;
use tracing::{error, info, warn};

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
    Import(appstack::import::cli::ImportCommand),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch AppStacks in this namespace only; repeat (or comma-separate in
    /// the variable) for several. Without it, all namespaces are watched.
    #[arg(long = "namespace", env = "APPSTACK_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "APPSTACK_METRICS_ADDR", default_value = ":8080", value_parser = parse_addr)]
    metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "APPSTACK_HEALTH_ADDR", default_value = ":8081", value_parser = parse_addr)]
    health_addr: SocketAddr,
    /// Stacks reconciled at the same time.
    #[arg(long, env = "APPSTACK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Upper bound, in seconds, of one reconcile and of connecting to the
    /// API server.
    #[arg(long, env = "APPSTACK_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// Seconds in-flight reconciles get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "APPSTACK_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 25)]
    shutdown_timeout_seconds: u64,
    /// Elect a leader on a Lease so only one replica reconciles.
    #[arg(long, env = "APPSTACK_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace from
    /// POD_NAMESPACE, else `default`).
    #[arg(long, env = "APPSTACK_LEADER_ELECT_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_LEASE_NAME",
        default_value = "appstack-operator"
    )]
    leader_elect_lease_name: String,
    /// Seconds a Lease stays valid after its last renewal.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    leader_elect_lease_duration_seconds: u64,
    /// Seconds between renewals by the leader and retries by a standby.
    #[arg(
        long,
        env = "APPSTACK_LEADER_ELECT_RETRY_PERIOD_SECONDS",
        default_value_t = 2
    )]
    leader_elect_retry_period_seconds: u64,
    /// This replica's identity in the Lease (default: POD_NAME, else
    /// hostname and process id).
    #[arg(long, env = "APPSTACK_LEADER_ELECT_IDENTITY")]
    leader_elect_identity: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", appstack::crd::definition_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => render(&args),
        Command::Import(command) => appstack::import::cli::run(command),
        Command::Run(args) => {
            telemetry::init();
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(run(args))
        }
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

async fn run(args: RunArgs) -> ExitCode {
    let metrics = Metrics::new();
    let listeners = match server::bind(args.metrics_addr, args.health_addr).await {
        Ok(listeners) => listeners,
        Err(error) => {
            error!(%error, "cannot serve the metrics and health endpoints");
            return ExitCode::FAILURE;
        }
    };
    let request_timeout = Duration::from_secs(args.request_timeout_seconds.max(1));
    let client = match client(&metrics, request_timeout).await {
        Ok(client) => client,
        Err(error) => {
            error!(error = %error_chain(error.as_ref()), "no Kubernetes client configuration");
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = check_crd(&client).await {
        error!("{message}");
        eprintln!("appstack: {message}");
        return ExitCode::from(2);
    }

    // SIGTERM or SIGINT: stop taking work, finish in flight, release, exit 0.
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight reconciles");
        stop_sender.send_replace(true);
    });
    let stopped = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
        .shared()
    };

    let (election, leadership) = if args.leader_elect {
        let settings = LeaseSettings {
            namespace: args
                .leader_elect_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            name: args.leader_elect_lease_name.clone(),
            identity: args.leader_elect_identity.clone().unwrap_or_else(identity),
            lease_duration: Duration::from_secs(args.leader_elect_lease_duration_seconds.max(2)),
            retry_period: Duration::from_secs(args.leader_elect_retry_period_seconds.max(1)),
        };
        let (state_sender, state) = watch::channel(LeaderState::default());
        let (election_stop_sender, election_stop) = watch::channel(false);
        let gauge = metrics.leader_gauge(&settings.name);
        let task = tokio::spawn(leader::run(
            client.clone(),
            settings,
            state_sender,
            gauge,
            election_stop,
        ));
        (Some((task, election_stop_sender)), Some(state))
    } else {
        (None, None)
    };

    let state = Arc::new(ProcessState::new(metrics.clone(), leadership.clone()));
    let servers = tokio::spawn(server::serve(state.clone(), listeners, stopped.clone()));

    // Reconcile while leading (always, without election). A leader that
    // loses its lease stops at once and stands by again.
    let lead = Lead {
        context: Arc::new(Context::new(
            client.clone(),
            metrics.clone(),
            request_timeout,
        )),
        options: RunOptions {
            namespaces: args.namespaces.clone(),
            concurrency: args.concurrency,
        },
        state: state.clone(),
        grace: Duration::from_secs(args.shutdown_timeout_seconds),
    };
    let mut exit = ExitCode::SUCCESS;
    loop {
        if let Some(leadership) = &leadership {
            let mut leadership = leadership.clone();
            info!("waiting to become the leader");
            let leading = tokio::select! {
                result = leadership.wait_for(|state| state.leading) => result.is_ok(),
                _ = stopped.clone() => false,
            };
            if !leading {
                break;
            }
        }
        match lead.term(stopped.clone(), leadership.clone()).await {
            Ok(Ended::Stopped) => break,
            Ok(Ended::LostLease) => {
                warn!("lost the leader lease: stopped reconciling, standing by");
            }
            Err(error) => {
                error!(error = %error_chain(&error), "controller failed");
                exit = ExitCode::FAILURE;
                break;
            }
        }
    }

    if let Some((task, election_stop)) = election {
        election_stop.send_replace(true);
        let _ = task.await;
    }
    let _ = servers.await;
    info!("stopped");
    exit
}

/// How a term of reconciling ended.
enum Ended {
    /// Shutdown was asked for.
    Stopped,
    /// Another process may lead now.
    LostLease,
}

/// What reconciling needs, for each term of leading.
struct Lead {
    context: Arc<Context>,
    options: RunOptions,
    state: Arc<ProcessState>,
    /// How long in-flight reconciles may take to finish on shutdown.
    grace: Duration,
}

impl Lead {
    /// Reconciles until `stopped` (in-flight reconciles get the grace
    /// period) or until `leadership` says the lease is lost (in-flight
    /// reconciles are dropped at once: another process may lead soon).
    async fn term(
        &self,
        stopped: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
        leadership: Option<watch::Receiver<LeaderState>>,
    ) -> Result<Ended, controller::Error> {
        let controller = controller::run(
            self.context.clone(),
            self.options.clone(),
            self.state.clone(),
            stopped.clone(),
        );
        let lost = async move {
            match leadership {
                Some(mut leadership) => {
                    let _ = leadership.wait_for(|state| !state.leading).await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        tokio::pin!(controller);
        let ended = tokio::select! {
            result = &mut controller => result.map(|()| Ended::Stopped),
            _ = stopped => match tokio::time::timeout(self.grace, &mut controller).await {
                Ok(result) => result.map(|()| Ended::Stopped),
                Err(_) => {
                    warn!(grace = ?self.grace, "in-flight reconciles did not finish in time");
                    Ok(Ended::Stopped)
                }
            },
            _ = lost => Ok(Ended::LostLease),
        };
        self.state.forget_caches();
        ended
    }
}

/// A client that counts its requests and gives up connecting quickly, so a
/// restarted API server is found again soon.
async fn client(
    metrics: &Metrics,
    timeout: Duration,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = kube::Config::infer().await?;
    config.connect_timeout = Some(timeout.min(Duration::from_secs(5)));
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RequestCounterLayer::new(metrics))
        .build();
    Ok(client)
}

/// Fails with instructions when the AppStack CRD is not installed.
async fn check_crd(client: &kube::Client) -> Result<(), String> {
    let gvk = GroupVersionKind::gvk("appstack.dev", "v1alpha1", "AppStack");
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(crd_missing()),
        Err(kube::Error::Discovery(_)) => Err(crd_missing()),
        Err(error) => Err(format!(
            "cannot check for the AppStack CRD: {}",
            error_chain(&error)
        )),
    }
}

fn crd_missing() -> String {
    "the AppStack CRD (appstacks.appstack.dev, v1alpha1) is not installed; \
     install it with `appstack crd | kubectl apply -f -`"
        .into()
}

fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "appstack".into());
        format!("{host}-{}", std::process::id())
    })
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_run_flag_reads_a_variable_the_readme_documents() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("a run subcommand");
        let readme = include_str!("../README.md");
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
