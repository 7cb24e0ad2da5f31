//! The local control plane the benchmark runs against, started by the
//! project's own `scripts/cluster.sh` in a state directory of its own, and
//! the operator as a separate process on it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The project's checkout.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The environment the operator's image sets (the Dockerfile's `ENV`
/// lines), so the operator measured runs as it would in a pod.
fn image_env() -> anyhow::Result<Vec<(String, String)>> {
    let path = root().join("Dockerfile");
    let dockerfile =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .flat_map(str::split_whitespace)
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .with_context(|| format!("{}: ENV {pair} is not KEY=VALUE", path.display()))
        })
        .collect()
}

/// The ServiceAccount (and release) name the chart gives the operator.
const OPERATOR_ACCOUNT: &str = "appstack-operator";

/// One local control plane.
pub struct Cluster {
    pub dir: PathBuf,
    nodes: usize,
}

impl Cluster {
    /// Starts a fresh control plane in `dir` (stopping one already there).
    /// A new control plane with enough fake nodes for `stacks` stacks:
    /// each KWOK node offers 64 CPUs, and a stack's backend requests 200m,
    /// so 1,000 stacks would not fit on the default 3 nodes.
    pub fn fresh(dir: &Path, stacks: usize) -> anyhow::Result<Self> {
        let cluster = Self {
            dir: dir.to_path_buf(),
            nodes: 3 + stacks / 300,
        };
        let _ = cluster.script(&["down"]);
        cluster.script(&["up"])?;
        Ok(cluster)
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = std::process::Command::new(root().join("scripts/cluster.sh"))
            .args(args)
            .env("APPSTACK_CLUSTER_DIR", &self.dir)
            .env("APPSTACK_CLUSTER_NODES", self.nodes.to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/cluster.sh")?;
        if !output.status.success() {
            bail!("scripts/cluster.sh {} failed", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub fn kubectl(&self) -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(self.script(&["bin"])?).join("kubectl"))
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Installs the chart's ServiceAccount and cluster-wide RBAC into
    /// `namespace` and returns a kubeconfig authenticating as that
    /// ServiceAccount, and the user name the audit log records for it.
    pub fn operator_identity(&self, namespace: &str) -> anyhow::Result<(PathBuf, String)> {
        let tools = std::process::Command::new(root().join("scripts/build-tools.sh"))
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/build-tools.sh")?;
        let helm = PathBuf::from(String::from_utf8_lossy(&tools.stdout).trim()).join("helm");
        let rendered = std::process::Command::new(helm)
            .args(["template", OPERATOR_ACCOUNT])
            .arg(root().join("charts/appstack-operator"))
            .args(["--namespace", namespace])
            .args(["--show-only", "templates/serviceaccount.yaml"])
            .args(["--show-only", "templates/rbac.yaml"])
            .output()
            .context("rendering the chart's RBAC")?;
        if !rendered.status.success() {
            bail!(
                "helm template: {}",
                String::from_utf8_lossy(&rendered.stderr)
            );
        }
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
        ))?;
        self.apply(&String::from_utf8(rendered.stdout)?)?;
        let kubeconfig = self.script(&["sa-kubeconfig", namespace, OPERATOR_ACCOUNT])?;
        Ok((
            PathBuf::from(kubeconfig),
            format!("system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"),
        ))
    }

    /// CPU seconds each control-plane process has used so far, and the
    /// machine's CPU time from /proc/stat.
    pub fn cpu(&self) -> CpuSample {
        let components = COMPONENTS
            .iter()
            .map(|name| {
                let seconds = std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
                    .ok()
                    .and_then(|pid| usage(pid.trim().parse().ok()?).ok())
                    .map_or(0.0, |usage| usage.cpu_seconds);
                (*name, seconds)
            })
            .collect();
        CpuSample {
            components,
            machine: MachineCpu::read(),
        }
    }

    /// Where the audit log stands now, to count writes from.
    pub fn audit_mark(&self) -> AuditMark {
        AuditMark {
            offset: file_len(&self.audit_log()),
            rotated: self.rotated_audit_logs(),
        }
    }

    /// Mutating requests by `user` since `mark`, across the files the API
    /// server rotated out in between (it renames a full log to
    /// `audit-<time>.log` and starts a new one).
    pub fn writes_since(&self, mark: &AuditMark, user: &str) -> anyhow::Result<Vec<String>> {
        let rotated: Vec<PathBuf> = self
            .rotated_audit_logs()
            .into_iter()
            .filter(|path| !mark.rotated.contains(path))
            .collect();
        // The file written at the mark is the first one rotated out since,
        // or still the current one.
        let mut files = rotated.into_iter().chain([self.audit_log()]);
        let mut writes = files
            .next()
            .map_or(Ok(Vec::new()), |first| writes_in(&first, mark.offset, user))?;
        for file in files {
            writes.extend(writes_in(&file, 0, user)?);
        }
        Ok(writes)
    }

    /// The audit logs rotated out so far, oldest first.
    fn rotated_audit_logs(&self) -> Vec<PathBuf> {
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| {
                                name.starts_with("audit-") && name.ends_with(".log")
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The names carry the time of rotation, so they sort by it.
        rotated.sort();
        rotated
    }

    /// Seconds the API server has spent evaluating CEL rules since it
    /// started (validation rules of CRDs, mostly the AppStack's).
    pub async fn cel_seconds(&self, client: &Client) -> anyhow::Result<f64> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let metrics = client.request_text(request).await?;
        Ok(sample(&metrics, "apiserver_cel_evaluation_duration_seconds_sum").unwrap_or(0.0))
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.admin_kubeconfig())?;
        let mut config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.read_timeout = Some(Duration::from_secs(300));
        Ok(Client::try_from(config)?)
    }

    /// `kubectl apply --server-side -f -` of `manifest` as the admin.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = std::process::Command::new(self.kubectl()?)
            .args(["--kubeconfig"])
            .arg(self.admin_kubeconfig())
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(manifest.as_bytes())?;
        if !child.wait()?.success() {
            bail!("kubectl apply failed");
        }
        Ok(())
    }

    pub fn down(&self) {
        let _ = self.script(&["down"]);
    }
}

/// The operator, a release build, as a child process of the benchmark.
pub struct Operator {
    child: std::process::Child,
    pub metrics_port: u16,
    pub health_port: u16,
    pub started: Instant,
}

impl Operator {
    pub fn start(binary: &Path, kubeconfig: &Path, log: &Path) -> anyhow::Result<Self> {
        let metrics_port = free_port()?;
        let health_port = free_port()?;
        let log = std::fs::File::create(log)?;
        let started = Instant::now();
        let child = std::process::Command::new(binary)
            .arg("run")
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("APPSTACK_DATABASE_CHECKS", "external")
            .env("LOG_FORMAT", "json")
            .env(
                "LOG_LEVEL",
                std::env::var("APPSTACK_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("RUST_LOG")
            .envs(image_env()?)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            metrics_port,
            health_port,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200: the caches have listed.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((200, _)) = http_get(self.health_port, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                bail!("the operator was not ready within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.metrics_port, "/metrics").await {
            Some((200, body)) => Ok(body),
            _ => bail!("the operator's /metrics did not answer"),
        }
    }

    /// Passes run so far, failed or not.
    pub async fn passes(&self) -> anyhow::Result<f64> {
        let metrics = self.metrics().await?;
        Ok(["success", "error"]
            .iter()
            .filter_map(|result| {
                sample(
                    &metrics,
                    &format!(
                        r#"controller_runtime_reconcile_total{{controller="appstack",result="{result}"}}"#
                    ),
                )
            })
            .sum())
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.0 GET on a loopback port: status and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of the sample `series` in a metrics text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Resident memory and CPU time of a process, from /proc.
pub struct Usage {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ")".
    Ok(Usage {
        rss_bytes: kib("VmRSS:") * 1024,
        peak_rss_bytes: kib("VmHWM:") * 1024,
        cpu_seconds: (ticks(11) + ticks(12)) / clock_ticks(),
    })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A point in the audit log: the current file's length and the files
/// rotated out before it.
pub struct AuditMark {
    offset: u64,
    rotated: Vec<PathBuf>,
}

/// Mutating requests by `user` in one audit log file after byte `offset`,
/// each as `<verb> <resource>[/<subresource>] <name>`.
fn writes_in(log: &Path, offset: u64, user: &str) -> anyhow::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file =
        std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["user"]["username"] == user && entry["stage"] == "ResponseComplete")
        .map(|entry| {
            let object = &entry["objectRef"];
            let resource = object["resource"].as_str().unwrap_or_default();
            let resource = match object["subresource"].as_str() {
                Some(subresource) => format!("{resource}/{subresource}"),
                None => resource.to_string(),
            };
            format!(
                "{} {resource} {}",
                entry["verb"].as_str().unwrap_or_default(),
                object["name"].as_str().unwrap_or_default()
            )
        })
        .collect())
}

/// The processes of the control plane, as `scripts/cluster.sh` names their
/// pid files.
const COMPONENTS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// CPU seconds used so far by each control-plane process, and by the
/// machine.
pub struct CpuSample {
    components: Vec<(&'static str, f64)>,
    machine: MachineCpu,
}

impl CpuSample {
    /// kube-apiserver and etcd.
    pub fn control_plane(&self) -> f64 {
        self.components
            .iter()
            .filter(|(name, _)| matches!(*name, "kube-apiserver" | "etcd"))
            .map(|(_, seconds)| seconds)
            .sum()
    }

    /// Cores used between `earlier` and this sample: per component, then
    /// the whole machine (every process, the operator and the bench
    /// included) and what it has.
    pub fn cores_since(&self, earlier: &CpuSample, seconds: f64) -> Vec<(String, f64)> {
        let mut cores: Vec<(String, f64)> = self
            .components
            .iter()
            .zip(&earlier.components)
            .map(|((name, now), (_, then))| (name.replace('-', "_"), (now - then) / seconds))
            .collect();
        let ticks = (self.machine.total - earlier.machine.total).max(1) as f64;
        let busy = (self.machine.busy - earlier.machine.busy) as f64;
        cores.push((
            "machine_busy".into(),
            busy / ticks * self.machine.cores as f64,
        ));
        cores
    }
}

/// The machine's CPU time from the first line of /proc/stat, in ticks.
struct MachineCpu {
    busy: u64,
    total: u64,
    cores: usize,
}

impl MachineCpu {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is
        // already counted in user).
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|value| value.parse().ok())
            .collect();
        let total: u64 = ticks.iter().sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let cores = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        MachineCpu {
            busy: total - idle,
            total,
            cores,
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}
