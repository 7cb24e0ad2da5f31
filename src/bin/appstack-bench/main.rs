//! `appstack-bench`: how the operator compares with the floor of the same
//! work done by a plain loader, on a local control plane of its own.
//!
//! Every figure is one line on standard output,
//! `figure=<name> stacks=<n> value=<number> unit=<unit>`; progress goes to
//! standard error. Build both binaries in release mode first:
//!
//! ```sh
//! cargo build --release --bins
//! target/release/appstack-bench --stacks 100
//! ```

mod cluster;
mod load;
mod requests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use serde_json::json;

use appstack::api::crd::AppStack;
use cluster::{Cluster, CpuSample, Operator, usage};

/// Benchmarks the operator against a plain loader on a local control plane.
#[derive(Parser, Debug)]
#[command(name = "appstack-bench")]
struct Args {
    /// Stacks to create (the full example: managed database, migrations,
    /// backend, frontend).
    #[arg(long, default_value_t = 100)]
    stacks: usize,
    /// Spec changes timed at 5 per second over the converged stacks.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Which parts to run: floor, operator (cold create, no-op passes, change
    /// latency, restart, memory and CPU), requests (after the operator
    /// phase, with the operator stopped: the control plane's CPU for one
    /// status patch, Event, read and AppStack create).
    #[arg(long, value_delimiter = ',', default_values_t = ["floor".to_string(), "operator".to_string(), "requests".to_string()])]
    phases: Vec<String>,
    /// The operator binary (a release build).
    #[arg(long, default_value = "target/release/appstack")]
    operator: PathBuf,
    /// State directory of the benchmark's control plane.
    #[arg(long, default_value = ".cluster-bench")]
    dir: PathBuf,
    /// Namespaces the stacks are dealt over, in turn (`bench`, or
    /// `bench-00`, `bench-01`, ...). Kubernetes' own controllers look up a
    /// pod's owners, Services and PodDisruptionBudgets among everything in
    /// its namespace, so one crowded namespace costs them more per event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    namespaces: u16,
    /// Requests in flight for the loader and for creating stacks.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 1800)]
    limit_seconds: u64,
    /// Leave the operator phase's control plane running at the end, with
    /// its stacks, to look into it (`scripts/cluster.sh down` with
    /// APPSTACK_CLUSTER_DIR set to `--dir` stops it).
    #[arg(long)]
    keep_cluster: bool,
}

const NAMESPACE: &str = "bench";

fn figure(name: &str, stacks: usize, value: f64, unit: &str) {
    println!("figure={name} stacks={stacks} value={value:.3} unit={unit}");
}

/// One figure per control-plane process, and the machine's busy cores,
/// over `seconds` of a phase.
fn cpu_figures(phase: &str, stacks: usize, before: &CpuSample, after: &CpuSample, seconds: f64) {
    for (name, cores) in after.cores_since(before, seconds) {
        figure(&format!("{phase}_cores_{name}"), stacks, cores, "cores");
    }
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = cluster::root();
    let dir = root.join(&args.dir);
    let operator_binary = root.join(&args.operator);
    let limit = Duration::from_secs(args.limit_seconds);
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.matches("processor\t:").count())
        .unwrap_or(0);
    let layout = load::Layout {
        stacks: args.stacks,
        namespaces: args.namespaces.into(),
    };
    progress(format!(
        "{} stacks in {} namespaces on a machine with {machine} cores",
        layout.stacks, layout.namespaces
    ));
    let mut floor = None;
    if args.phases.iter().any(|phase| phase == "floor") {
        let cluster = Cluster::fresh(&dir, args.stacks)?;
        let seconds = load::floor(&cluster, &layout, args.in_flight, limit).await?;
        figure("floor_seconds", args.stacks, seconds, "s");
        floor = Some(seconds);
        cluster.down();
    }
    if args.phases.iter().any(|phase| phase == "operator") {
        let cluster = Cluster::fresh(&dir, args.stacks)?;
        let result = operator(&cluster, &operator_binary, &args, &layout, floor, limit).await;
        if args.keep_cluster {
            progress(format!(
                "the control plane keeps running; kubeconfig: {}",
                cluster.admin_kubeconfig().display()
            ));
        } else {
            cluster.down();
        }
        result?;
    }
    Ok(())
}

/// Everything measured with the operator running, on one fresh cluster.
async fn operator(
    cluster: &Cluster,
    binary: &std::path::Path,
    args: &Args,
    layout: &load::Layout,
    floor: Option<f64>,
    limit: Duration,
) -> anyhow::Result<()> {
    let n = args.stacks;
    let client = cluster.client().await?;
    let crd = std::process::Command::new(binary).arg("crd").output()?;
    cluster.apply(&String::from_utf8(crd.stdout)?)?;
    let (kubeconfig, operator_user) = cluster.operator_identity("appstack-system")?;
    load::namespaces(&client, layout).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let operator = Operator::start(binary, &kubeconfig, &cluster.dir.join("logs/operator.log"))?;
    operator.wait_ready(limit).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = usage(operator.pid())?;
    figure(
        "rss_empty_mib",
        0,
        baseline.rss_bytes as f64 / 1048576.0,
        "MiB",
    );

    // Cold create: every stack at once, until each is Ready.
    progress(format!("creating {n} AppStacks"));
    let stacks: Api<AppStack> = Api::all(client.clone());
    let watcher = tokio::spawn(wait_all_ready(stacks.clone(), n, limit));
    let passes_before = operator.passes().await?;
    let cpu_before = usage(operator.pid())?.cpu_seconds;
    let cpu = cluster.cpu();
    let mark = cluster.audit_mark();
    let cel_before = cluster.cel_seconds(&client).await?;
    let started = Instant::now();
    load::create_stacks(&client, layout, args.in_flight).await?;
    watcher.await??;
    let cold = started.elapsed().as_secs_f64();
    let cpu_after = cluster.cpu();
    figure(
        "cold_create_control_plane_cpu_seconds",
        n,
        cpu_after.control_plane() - cpu.control_plane(),
        "s",
    );
    cpu_figures("cold_create", n, &cpu, &cpu_after, cold);
    let writes = cluster.writes_since(&mark, &operator_user)?;
    figure(
        "cold_create_operator_writes",
        n,
        writes.len() as f64,
        "requests",
    );
    let per_stack = |resource: &str| {
        let count = writes
            .iter()
            .filter(|write| write.split(' ').nth(1) == Some(resource))
            .count();
        count as f64 / n as f64
    };
    figure(
        "cold_create_status_writes_per_stack",
        n,
        per_stack("appstacks/status"),
        "requests",
    );
    figure(
        "cold_create_event_writes_per_stack",
        n,
        per_stack("events"),
        "requests",
    );
    let cel = cluster.cel_seconds(&client).await? - cel_before;
    figure("cold_create_cel_seconds", n, cel, "s");
    let converging = usage(operator.pid())?;
    let converging_passes = operator.passes().await? - passes_before;
    figure("cold_create_seconds", n, cold, "s");
    if let Some(floor) = floor {
        figure("cold_create_over_floor", n, cold / floor, "ratio");
    }
    figure("converging_passes", n, converging_passes, "passes");
    figure(
        "cpu_per_converging_pass_ms",
        n,
        1000.0 * (converging.cpu_seconds - cpu_before) / converging_passes.max(1.0),
        "ms",
    );

    // Steady state: converged stacks, nothing changing.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let steady = usage(operator.pid())?;
    figure(
        "rss_steady_mib",
        n,
        steady.rss_bytes as f64 / 1048576.0,
        "MiB",
    );
    figure(
        "rss_per_stack_kib",
        n,
        (steady.rss_bytes.saturating_sub(baseline.rss_bytes)) as f64 / 1024.0 / n as f64,
        "KiB",
    );

    // No-op passes: touching each stack's metadata wakes a pass that finds
    // nothing to do.
    progress("touching every stack: no-op passes");
    let passes_before = operator.passes().await?;
    let cpu_before = usage(operator.pid())?.cpu_seconds;
    load::touch_stacks(&client, layout, args.in_flight).await?;
    let deadline = Instant::now() + limit;
    while operator.passes().await? < passes_before + n as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noop_passes = operator.passes().await? - passes_before;
    let cpu = usage(operator.pid())?.cpu_seconds - cpu_before;
    figure(
        "cpu_per_noop_pass_ms",
        n,
        1000.0 * cpu / noop_passes.max(1.0),
        "ms",
    );

    // Change latency under 5 changes per second.
    progress(format!("{} spec changes at 5 per second", args.changes));
    let cpu = cluster.cpu();
    let cpu_before = usage(operator.pid())?.cpu_seconds;
    let started = Instant::now();
    let latencies = change_latency(&client, layout, args.changes, limit).await?;
    // Outside the cluster's directory, which goes with the cluster.
    let timeline = cluster::root().join("target/appstack-bench");
    std::fs::create_dir_all(&timeline)?;
    std::fs::write(
        timeline.join(format!("changes-{n}.tsv")),
        latencies.timeline.join("\n") + "\n",
    )?;
    let seconds = started.elapsed().as_secs_f64();
    for (name, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        figure(
            &format!("change_latency_{name}_ms"),
            n,
            percentile(&latencies.observed, quantile) * 1000.0,
            "ms",
        );
    }
    for (name, quantile) in [("p50", 0.5), ("p99", 0.99)] {
        figure(
            &format!("change_applied_{name}_ms"),
            n,
            percentile(&latencies.applied, quantile) * 1000.0,
            "ms",
        );
    }
    let cpu_after = cluster.cpu();
    figure(
        "changes_control_plane_cpu_cores",
        n,
        (cpu_after.control_plane() - cpu.control_plane()) / seconds,
        "cores",
    );
    cpu_figures("changes", n, &cpu, &cpu_after, seconds);
    figure(
        "changes_operator_cpu_cores",
        n,
        (usage(operator.pid())?.cpu_seconds - cpu_before) / seconds,
        "cores",
    );
    let peak = usage(operator.pid())?;
    figure(
        "rss_peak_mib",
        n,
        peak.peak_rss_bytes as f64 / 1048576.0,
        "MiB",
    );

    // Restart over converged stacks.
    wait_all_ready(stacks.clone(), n, limit).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress("restarting the operator");
    operator.stop()?;
    let mark = cluster.audit_mark();
    let operator = Operator::start(
        binary,
        &kubeconfig,
        &cluster.dir.join("logs/operator-restarted.log"),
    )?;
    let synced = operator.wait_ready(limit).await?;
    let deadline = Instant::now() + limit;
    while operator.passes().await? < n as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reverified = operator.started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = cluster.writes_since(&mark, &operator_user)?;
    figure("restart_synced_seconds", n, synced.as_secs_f64(), "s");
    figure(
        "restart_reverified_seconds",
        n,
        reverified.as_secs_f64(),
        "s",
    );
    figure(
        "restart_mutating_requests",
        n,
        writes.len() as f64,
        "requests",
    );
    if !writes.is_empty() {
        progress(format!("writes after the restart: {writes:?}"));
    }
    let restarted = usage(operator.pid())?;
    figure(
        "rss_after_restart_mib",
        n,
        restarted.rss_bytes as f64 / 1048576.0,
        "MiB",
    );
    operator.stop()?;
    if args.phases.iter().any(|phase| phase == "requests") {
        requests::costs(cluster, &client, layout).await?;
    }
    Ok(())
}

/// Waits until `n` stacks are Ready with their current generation observed.
async fn wait_all_ready(stacks: Api<AppStack>, n: usize, limit: Duration) -> anyhow::Result<()> {
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut events = std::pin::pin!(watcher::watcher(stacks, watcher::Config::default()));
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let event = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .context("stacks did not become Ready in time")??;
        match event {
            Some(Event::Apply(stack) | Event::InitApply(stack)) => {
                ready.insert(stack.name_any(), is_ready(&stack));
            }
            Some(Event::Delete(stack)) => {
                ready.remove(&stack.name_any());
            }
            Some(Event::Init | Event::InitDone) => {}
            None => anyhow::bail!("the AppStack watch ended"),
        }
        let count = ready.values().filter(|ready| **ready).count();
        if last_report.elapsed() > Duration::from_secs(10) {
            progress(format!("{count} of {n} stacks Ready"));
            last_report = Instant::now();
        }
        if count >= n {
            return Ok(());
        }
    }
}

fn is_ready(stack: &AppStack) -> bool {
    let Some(status) = &stack.status else {
        return false;
    };
    status.observed_generation == stack.metadata.generation.unwrap_or(0)
        && status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// One timed change: the stack, the generation the change made, the
/// backend replicas it asks for, and when it was sent.
struct Change {
    generation: i64,
    replicas: i32,
    sent: Instant,
    /// When the watcher saw the backend Deployment with the new replicas.
    applied: Option<Instant>,
}

/// Seconds from each change to its children applied, and to its status at
/// the new generation as well.
#[derive(Default)]
struct Latencies {
    applied: Vec<f64>,
    observed: Vec<f64>,
    /// Per change: the stack, and when (Unix seconds) the change was sent,
    /// its children seen applied, and its status seen; to lay next to the
    /// operator's log.
    timeline: Vec<String>,
}

/// Changes `changes` stacks' backend replicas, 5 per second, and times each
/// until an outside watcher sees both the backend Deployment with the new
/// replicas and the stack's status at the new generation.
async fn change_latency(
    client: &kube::Client,
    layout: &load::Layout,
    changes: usize,
    limit: Duration,
) -> anyhow::Result<Latencies> {
    let n = layout.stacks;
    let stacks: Api<AppStack> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    enum Seen {
        Stack(String, i64),
        Deployment(String, i32),
        /// A watch has listed what exists: changes sent before both have
        /// would be seen only when the list ends (about 25 s at 1,000 stacks
        /// on 2 cores), which times the list, not the operator.
        Listed,
    }
    let stack_events = watcher::watcher(stacks.clone(), watcher::Config::default())
        .filter_map(|event| async move {
            match event.ok()? {
                Event::Apply(stack) | Event::InitApply(stack) => Some(Seen::Stack(
                    stack.name_any(),
                    stack
                        .status
                        .as_ref()
                        .map_or(-1, |status| status.observed_generation),
                )),
                Event::InitDone => Some(Seen::Listed),
                _ => None,
            }
        })
        .boxed();
    let deployment_events = watcher::watcher(
        deployments,
        watcher::Config::default().labels("app.kubernetes.io/component=backend"),
    )
    .filter_map(|event| async move {
        match event.ok()? {
            Event::Apply(deployment) | Event::InitApply(deployment) => {
                let stack = deployment
                    .labels()
                    .get("app.kubernetes.io/instance")?
                    .clone();
                Some(Seen::Deployment(
                    stack,
                    deployment.spec.replicas.unwrap_or(1),
                ))
            }
            Event::InitDone => Some(Seen::Listed),
            _ => None,
        }
    })
    .boxed();
    let mut seen = futures::stream::select(stack_events, deployment_events);
    let mut observed_generation: HashMap<String, i64> = HashMap::new();
    let mut replicas: HashMap<String, i32> = HashMap::new();
    let mut pending: BTreeMap<String, Change> = BTreeMap::new();
    let mut latencies = Latencies::default();
    let mut sent = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    // Ticks missed while the watches list are not made up in a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::Instant::now() + limit;
    let mut current_replicas: HashMap<String, i32> = HashMap::new();
    let mut listed = 0;
    while latencies.observed.len() < changes {
        tokio::select! {
            _ = ticks.tick(), if sent < changes && listed == 2 => {
                // A stack with no change in flight, in turn.
                // Stack names are unique across the namespaces.
                let (namespace, name) = (0..n)
                    .map(|offset| layout.stack((sent * 7 + offset) % n))
                    .find(|(_, name)| !pending.contains_key(name))
                    .context("every stack has a change in flight")?;
                let next = if current_replicas.get(&name).copied().unwrap_or(2) == 2 { 3 } else { 2 };
                let at = Instant::now();
                let changed = Api::<AppStack>::namespaced(client.clone(), &namespace)
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"backend": {"replicas": next}}})),
                    )
                    .await?;
                current_replicas.insert(name.clone(), next);
                pending.insert(
                    name,
                    Change {
                        generation: changed.metadata.generation.unwrap_or(0),
                        replicas: next,
                        sent: at,
                        applied: None,
                    },
                );
                sent += 1;
            }
            item = seen.next() => {
                let name = match item.context("a watch ended")? {
                    Seen::Stack(name, generation) => {
                        observed_generation.insert(name.clone(), generation);
                        name
                    }
                    Seen::Deployment(name, count) => {
                        replicas.insert(name.clone(), count);
                        name
                    }
                    Seen::Listed => {
                        listed += 1;
                        continue;
                    }
                };
                if let Some(change) = pending.get_mut(&name)
                    && replicas.get(&name) == Some(&change.replicas)
                {
                    let applied = *change.applied.get_or_insert_with(Instant::now);
                    if observed_generation.get(&name).copied().unwrap_or(-1) >= change.generation {
                        latencies.applied.push((applied - change.sent).as_secs_f64());
                        let unix = |at: Instant| {
                            let ago = at.elapsed().as_secs_f64();
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0.0, |now| now.as_secs_f64() - ago)
                        };
                        latencies.timeline.push(format!(
                            "{name}\t{:.3}\t{:.3}\t{:.3}",
                            unix(change.sent),
                            unix(applied),
                            unix(Instant::now())
                        ));
                        latencies.observed.push(change.sent.elapsed().as_secs_f64());
                        pending.remove(&name);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!("changes were not applied in time"),
        }
    }
    Ok(latencies)
}

fn percentile(values: &[f64], quantile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
