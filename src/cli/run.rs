//! `appstack run`: wiring of the operator process — telemetry, the HTTP
//! endpoints, the client, the CRD check, leader election, then terms of
//! leading until a signal asks to stop.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::FutureExt;
use kube::api::GroupVersionKind;
use tokio::sync::watch;
use tracing::{error, info};

use crate::database::DatabaseChecks;
use crate::runtime::controller::RunOptions;
use crate::runtime::lead::Lead;
use crate::runtime::leader::{self, LeaderState, LeaseSettings};
use crate::runtime::metrics::{Metrics, RequestCounterLayer};
use crate::runtime::server::{self, ProcessState};
use crate::runtime::telemetry::{self, error_chain};

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

/// Runs the operator until SIGTERM or SIGINT.
pub fn main(args: RunArgs) -> ExitCode {
    telemetry::init();
    let mut builder = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.into());
            builder
        }
    };
    let runtime = builder.enable_all().build().expect("tokio runtime");
    runtime.block_on(run(args))
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

    // Reconcile while leading (always, without election).
    Lead {
        client: client.clone(),
        metrics: metrics.clone(),
        options: RunOptions {
            namespaces: args.namespaces.clone(),
            concurrency: args.concurrency,
            pass_timeout: request_timeout,
            database_checks: args.database_checks,
            pod_namespace: std::env::var("POD_NAMESPACE").ok(),
        },
        state: state.clone(),
        grace: Duration::from_secs(args.shutdown_timeout_seconds),
    }
    .run(stopped.clone(), leadership)
    .await;

    if let Some((task, election_stop)) = election {
        election_stop.send_replace(true);
        let _ = task.await;
    }
    let _ = servers.await;
    info!("stopped");
    ExitCode::SUCCESS
}

/// A client that counts its requests and gives up connecting quickly, so a
/// restarted API server is found again soon.
async fn client(
    metrics: &Metrics,
    timeout: Duration,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    use kube::client::ConfigExt;

    let mut config = kube::Config::infer().await?;
    config.connect_timeout = Some(timeout.min(Duration::from_secs(5)));
    let counter = RequestCounterLayer::new(metrics);
    if config.proxy_url.is_some() {
        // kube's own stack knows which proxies it can reach.
        return Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&counter)
            .build());
    }
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(config.connect_timeout);
    let connector = config.rustls_https_connector_with_connector(connector)?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http1_max_buf_size(READ_BUFFER)
        .build(connector);
    // kube's stack (see `ClientBuilder::try_from`), less its debug spans.
    let service = tower::ServiceBuilder::new()
        .layer(counter)
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// The most each connection to the API server buffers of what it reads: one
/// TLS record. Without a bound, a connection keeps the largest buffer a list
/// page ever needed for as long as it lives, and each watch has a
/// connection of its own (measured in docs/src/performance/history.md).
const READ_BUFFER: usize = 16 * 1024;

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
