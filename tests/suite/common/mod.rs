//! Shared helpers for tests against the real local control plane started by
//! `scripts/cluster.sh` (`scripts/test.sh` starts it and runs these tests).
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use appstack::api::crd::AppStack;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub mod faults;
pub mod postgres;
pub mod real_node;

/// Field manager the tests write with.
pub const TEST_MANAGER: &str = "appstack-tests";

/// A client for the local control plane named by `APPSTACK_TEST_KUBECONFIG`.
pub async fn client() -> Client {
    let path = std::env::var("APPSTACK_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .expect(
            "APPSTACK_TEST_KUBECONFIG is not set: run these tests with scripts/test.sh, \
         which starts the local control plane",
        );
    let kubeconfig = Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

/// A namespace of its own for one test, deleted when the guard drops.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "{prefix}-{}-{:x}",
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos ^ std::process::id()
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create test namespace");
        Self {
            name,
            client: client.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Delete the namespace so its pods stop loading the shared cluster.
        // The test's runtime may be shutting down, so this uses a runtime
        // and client of its own on a separate thread.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let namespaces: Api<Namespace> = Api::all(client().await);
                let _ = namespaces.delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
        let _ = &self.client;
    }
}

/// Installs (server-side applies) the AppStack CRD and waits until it is
/// Established.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition = appstack::api::crd::definition();
    let name = definition.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&definition),
    )
    .await
    .expect("apply CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds.clone(), &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within 30 s")
    .expect("watch CRD");
    crds.get(&name).await.unwrap()
}

/// Server-side applies CustomResourceDefinitions and waits until the API
/// server serves each of their kinds: Established, and listed by discovery,
/// which is what Helm's `.Capabilities` and the operator's own discovery
/// read. Discovery lags a CRD's creation; a test that goes on before it
/// lists the kind sees the API as missing.
pub async fn apply_crds_served(client: &Client, yamls: &[&str]) {
    use kube::api::GroupVersionKind;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for yaml in yamls {
        apply_yaml(client, yaml).await;
        let crd: CustomResourceDefinition = serde_yaml::from_str(yaml).expect("a CRD");
        let name = crd.metadata.name.clone().expect("a named CRD");
        tokio::time::timeout(
            LIMIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} established within {LIMIT:?}"))
        .expect("watch CRD");
        for version in crd.spec.versions.iter().filter(|version| version.served) {
            let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
            eventually(
                &format!("{name} {} served", version.name),
                LIMIT,
                || async { kube::discovery::pinned_kind(client, &gvk).await.ok() },
            )
            .await;
        }
    }
}

/// Polls `check` every 200 ms until it yields a value or `limit` passes; the
/// limit only keeps a broken cluster from hanging the suite.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The local control plane's state directory (`APPSTACK_TEST_CLUSTER_DIR`).
pub fn cluster_dir() -> PathBuf {
    std::env::var("APPSTACK_TEST_CLUSTER_DIR")
        .map(PathBuf::from)
        .expect("APPSTACK_TEST_CLUSTER_DIR is not set: run these tests with scripts/test.sh")
}

/// The kubectl built with the control plane (`APPSTACK_TEST_KUBECTL`).
pub fn kubectl() -> tokio::process::Command {
    let path = std::env::var("APPSTACK_TEST_KUBECTL")
        .expect("APPSTACK_TEST_KUBECTL is not set: run these tests with scripts/test.sh");
    let mut command = tokio::process::Command::new(path);
    command
        .arg("--kubeconfig")
        .arg(std::env::var("APPSTACK_TEST_KUBECONFIG").expect("APPSTACK_TEST_KUBECONFIG is set"));
    command
}

/// Server-side applies every document of a YAML stream (cluster-scoped
/// objects, such as RBAC and CRDs) as the test manager.
pub async fn apply_yaml(client: &Client, yaml: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    use serde::Deserialize;
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value).expect("a Kubernetes object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("valid apiVersion");
        let (resource, capabilities): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .expect("served kind");
        let api: Api<DynamicObject> = match (&object.metadata.namespace, capabilities.scope) {
            (Some(namespace), kube::discovery::Scope::Namespaced) => {
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("named object");
        api.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|error| panic!("apply {name}: {error}"));
    }
}

/// Installs the CRD, and the operator's RBAC for an operator scoped to
/// `namespace`: the chart's ServiceAccount, Role and RoleBinding and leader
/// election Role, rendered by `helm template` in namespaced mode with
/// `namespace` as both the release namespace and the one watched. Nothing
/// cluster-wide, so tests in other namespaces never share an identity.
pub async fn install_operator_prerequisites(client: &Client, namespace: &str) {
    install_crd(client).await;
    apply_yaml(
        client,
        &render_operator_rbac(namespace, &OPERATOR_RBAC_TEMPLATES).await,
    )
    .await;
}

/// The chart's templates that give the operator its identity and rights.
pub const OPERATOR_RBAC_TEMPLATES: [&str; 3] = [
    "templates/serviceaccount.yaml",
    "templates/rbac.yaml",
    "templates/leader-election-rbac.yaml",
];

/// The release name the tests render the chart with; the chart names the
/// ServiceAccount, Roles and Lease after it.
pub const RELEASE: &str = "appstack-operator";

/// Chart `templates` rendered into `namespace` in namespaced mode, watching
/// `namespace`.
pub async fn render_operator_rbac(namespace: &str, templates: &[&str]) -> String {
    let mut command = helm();
    command
        .args(["template", RELEASE, chart_dir().to_str().unwrap()])
        .args(["--namespace", namespace])
        .args(["--set", &format!("watchNamespaces={{{namespace}}}")]);
    for template in templates {
        command.args(["--show-only", template]);
    }
    let output = command.output().await.expect("run helm");
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The `appstack run` arguments of a rendered operator Deployment, without
/// `run` and the endpoint addresses ([`Operator`] picks free ports), so a
/// test runs the process as the chart's pods would.
pub fn deployment_args(deployment: &Value) -> Vec<String> {
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the Deployment's container has args");
    let args: Vec<String> = args
        .iter()
        .map(|arg| arg.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "run");
    args[1..]
        .iter()
        .filter(|arg| !arg.starts_with("--metrics-addr") && !arg.starts_with("--health-addr"))
        .flat_map(|arg| match arg.split_once('=') {
            Some((flag, value)) => vec![flag.to_string(), value.to_string()],
            None => vec![arg.clone()],
        })
        .collect()
}

/// The operator chart's directory.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/appstack-operator"
    ))
}

/// A pinned upstream tool built by scripts/build-tools.sh (helm, actionlint,
/// kstatus), from the directory in `APPSTACK_TEST_TOOLS`.
pub fn tool(name: &str) -> PathBuf {
    std::env::var("APPSTACK_TEST_TOOLS")
        .map(|dir| PathBuf::from(dir).join(name))
        .expect("APPSTACK_TEST_TOOLS is not set: run these tests with scripts/test.sh")
}

/// helm, talking to the local control plane as its admin.
pub fn helm() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tool("helm"));
    command
        .env(
            "KUBECONFIG",
            std::env::var("APPSTACK_TEST_KUBECONFIG").unwrap_or_default(),
        )
        // Helm keeps its cache and config out of the user's home.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("appstack-tests-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("appstack-tests-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("appstack-tests-helm/data"),
        );
    command
}

/// `helm args` run to completion: (success, stdout, stderr).
pub async fn run_helm(args: &[&str]) -> (bool, String, String) {
    let output = helm().args(args).output().await.expect("run helm");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The documents of a YAML stream, as JSON values (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

/// A kubeconfig authenticating as ServiceAccount `account` of `namespace`,
/// with a token from the TokenRequest API (`scripts/cluster.sh
/// sa-kubeconfig`), and the user name the API server's audit log records.
pub async fn service_account_identity(namespace: &str, account: &str) -> (PathBuf, String) {
    let output =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(["sa-kubeconfig", namespace, account])
            .env("APPSTACK_CLUSTER_DIR", cluster_dir())
            .output()
            .await
            .expect("run cluster.sh sa-kubeconfig");
    assert!(
        output.status.success(),
        "cluster.sh sa-kubeconfig: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = String::from_utf8(output.stdout).unwrap().trim().to_string();
    (
        PathBuf::from(path),
        format!("system:serviceaccount:{namespace}:{account}"),
    )
}

/// The port of the address `field` (such as `metrics_addr`) in a log line,
/// in text (`field=address`) or JSON (`"field":"address"`).
fn logged_port(line: &str, field: &str) -> Option<u16> {
    let (_, rest) = line.split_once(field)?;
    let address: String = rest
        .trim_start_matches(['=', '"', ':'])
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|address| address.port())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator binary running as a child process as a ServiceAccount (by
/// default the chart's, in the namespace it is scoped to), with its
/// endpoints on ports it binds itself (port 0) and names in its first line.
/// Its output is kept for assertions; it is killed when dropped.
pub struct Operator {
    child: tokio::process::Child,
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub metrics_port: u16,
    pub health_port: u16,
    /// The user name the API server knows the process by.
    pub user: String,
}

impl Operator {
    /// The operator scoped to `namespace`.
    pub async fn start(namespace: &str) -> Self {
        Self::start_with(&["--namespace", namespace], &[]).await
    }

    /// The operator with these arguments after `run` and this environment,
    /// as the chart's ServiceAccount of the first `--namespace` argument
    /// (installed there by [`install_operator_prerequisites`]).
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let namespace = args
            .iter()
            .position(|arg| *arg == "--namespace")
            .and_then(|index| args.get(index + 1))
            .expect("the tests scope each operator with --namespace");
        let identity = service_account_identity(namespace, RELEASE).await;
        Self::start_as(identity, args, env).await
    }

    /// The operator authenticated by `(kubeconfig, user)`, with these
    /// arguments after `run` and this environment.
    pub async fn start_as(
        (kubeconfig, user): (PathBuf, String),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_appstack"));
        command
            .arg("run")
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("LOG_LEVEL", "info,appstack=debug")
            .env("LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            // The operator runs on the host: the managed databases' pods are
            // not reachable (nor real), external ones are on loopback.
            .env("APPSTACK_DATABASE_CHECKS", "external")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the operator");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pipes: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let output = output.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let mut operator = Self {
            child,
            output,
            metrics_port: 0,
            health_port: 0,
            user,
        };
        // A port picked here and bound by the process later can be taken in
        // between (by another test's connection): the process binds port 0
        // and says which ports it got. One that exits first binds none.
        let ports = eventually(
            "the operator to bind its endpoints or exit",
            Duration::from_secs(30),
            || {
                let ports = operator.lines().iter().find_map(|line| {
                    Some((
                        logged_port(line, "metrics_addr")?,
                        logged_port(line, "health_addr")?,
                    ))
                });
                std::future::ready(match ports {
                    Some(ports) => Some(Some(ports)),
                    None if !operator.running() => Some(None),
                    None => None,
                })
            },
        )
        .await;
        if let Some((metrics_port, health_port)) = ports {
            operator.metrics_port = metrics_port;
            operator.health_port = health_port;
        }
        operator
    }

    /// Lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// How many passes the operator logged over stack `name` in
    /// `namespace`.
    pub fn passes(&self, name: &str, namespace: &str) -> usize {
        let stack = format!("/{name}.{namespace}");
        self.output
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("reconciled") && line.contains(&stack))
            .count()
    }

    /// Whether any line printed so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.output
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    /// Whether the process still runs (it has not exited on its own).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the operator is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the operator exits in time")
            .expect("wait for the operator")
    }

    /// `GET /metrics`, the body.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics_port, "/metrics")
            .await
            .expect("metrics endpoint answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `GET path` on the health port answers `code`.
    pub async fn wait_for_health(&self, path: &str, code: u16) {
        eventually(&format!("{path} answers {code}"), LIMIT, || async {
            (self.health(path).await == Some(code)).then_some(())
        })
        .await;
    }

    /// The status code of `GET path` on the health port, `None` when
    /// nothing answers.
    pub async fn health(&self, path: &str) -> Option<u16> {
        http_get(self.health_port, path)
            .await
            .map(|(status, _)| status)
    }
}

/// When a test fails, the operator's output is what explains it: it is
/// written in full under the target directory's `tmp/operator-logs`, and its
/// last lines go to the test's output.
impl Drop for Operator {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let lines = self
            .output
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default();
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        let path = dir.join(format!("{test}-{}.log", self.user.replace(':', "-")));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, lines.join("\n") + "\n"));
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "--- the operator's last {} of {} lines ({}) ---\n{}\n---",
            tail.len(),
            lines.len(),
            match written {
                Ok(()) => format!("all in {}", path.display()),
                Err(error) => format!("not written to {}: {error}", path.display()),
            },
            tail.join("\n")
        );
    }
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
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())?;
    Some((status, body))
}

/// The value of the sample `name{labels}` in a metrics text (`name` alone
/// for a metric without labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The API server's audit log: mutating requests, one JSON line each.
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn open() -> Self {
        Self {
            path: cluster_dir().join("logs/audit.log"),
        }
    }

    /// Current end of the log, to count from.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path)
            .map(|meta| meta.len())
            .unwrap_or(0)
    }

    /// Mutating requests by `user` in `namespace` logged after `mark`, as
    /// "verb resource/subresource name" lines.
    pub fn writes_since(&self, mark: u64, user: &str, namespace: &str) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path).expect("audit log exists");
        file.seek(SeekFrom::Start(mark)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                entry["user"]["username"] == user
                    && entry["objectRef"]["namespace"] == namespace
                    && entry["stage"] == "ResponseComplete"
            })
            .map(|entry| {
                let object = &entry["objectRef"];
                format!(
                    "{} {}/{} {}",
                    entry["verb"].as_str().unwrap_or_default(),
                    object["resource"].as_str().unwrap_or_default(),
                    object["subresource"].as_str().unwrap_or_default(),
                    object["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

// Stacks

/// The label KWOK's stages read to fail a pod's container.
pub const KWOK_FAIL_LABEL: &str = "pod-container-running-failed.stage.kwok.x-k8s.io";

/// Makes `stack`'s next migration revision fail at once: a new backend
/// image (a new revision), no retries, and pods KWOK fails.
pub fn fail_next_migration(stack: &mut Value) {
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    stack["spec"]["migrations"]["backoffLimit"] = json!(0);
    stack["spec"]["migrations"]["podLabels"] = json!({KWOK_FAIL_LABEL: "true"});
}

/// Waits until the stack is Stalled by a failed migration.
pub async fn wait_stalled_by_migration(client: &Client, namespace: &str, name: &str) -> AppStack {
    wait_for(
        client,
        namespace,
        name,
        "Stalled",
        "True",
        Some("MigrationFailed"),
    )
    .await
}

/// Runs `command` with `input` on its standard input; its output.
pub async fn output_with_stdin(
    mut command: tokio::process::Command,
    input: &[u8],
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// How long a stack may take to converge before a test gives up.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The design example as JSON, named `name`, with a 1Gi volume.
pub fn example(name: &str) -> Value {
    let mut stack: Value =
        serde_yaml::from_str(include_str!("../../../deploy/examples/shop.yaml")).unwrap();
    stack["metadata"]["name"] = json!(name);
    stack["spec"]["database"]["managed"]["storage"]["size"] = json!("1Gi");
    stack
}

pub async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = client().await;
    let namespace = TestNamespace::new(&client, prefix).await;
    install_operator_prerequisites(&client, &namespace.name).await;
    create_secret(
        &client,
        &namespace.name,
        "sendgrid",
        "api-key",
        "SG.test-key",
    )
    .await;
    (client, namespace)
}

/// A fresh namespace (as `setup`) with the operator running in it and the
/// example stack `shop` applied and Ready. Keep the operator bound: dropping
/// it stops the process.
pub async fn ready_shop(prefix: &str) -> (Client, TestNamespace, Operator, Value) {
    let (client, namespace) = setup(prefix).await;
    let operator = Operator::start(&namespace.name).await;
    let stack = example("shop");
    apply_stack(&client, &namespace.name, &stack).await;
    wait_ready(&client, &namespace.name, "shop").await;
    (client, namespace, operator, stack)
}

pub async fn apply_stack(client: &Client, namespace: &str, stack: &Value) {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let name = stack["metadata"]["name"].as_str().unwrap();
    stacks
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(stack),
        )
        .await
        .unwrap_or_else(|error| panic!("apply AppStack {name}: {error}"));
}

pub fn condition(stack: &AppStack, type_: &str) -> Option<(String, String)> {
    let condition = stack
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)?;
    Some((condition.status.clone(), condition.reason.clone()))
}

/// The message of condition `type_`; empty when the stack has none.
pub fn condition_message(stack: &AppStack, type_: &str) -> String {
    stack
        .status
        .iter()
        .flat_map(|status| &status.conditions)
        .find(|condition| condition.type_ == type_)
        .map(|condition| condition.message.clone())
        .unwrap_or_default()
}

/// Waits until the stack's current generation has `type_` with `status`
/// (and `reason`, when given); returns the stack.
pub async fn wait_for(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> AppStack {
    wait_for_within(client, namespace, name, (type_, status, reason), LIMIT).await
}

async fn wait_for_within(
    client: &Client,
    namespace: &str,
    name: &str,
    (type_, status, reason): (&str, &str, Option<&str>),
    limit: Duration,
) -> AppStack {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("{name} {type_}={status} {reason:?}"),
        limit,
        || async {
            let stack = stacks.get(name).await.ok()?;
            let current = stack.status.as_ref()?.observed_generation == stack.metadata.generation?;
            let (actual, actual_reason) = condition(&stack, type_)?;
            (current && actual == status && reason.is_none_or(|reason| reason == actual_reason))
                .then_some(stack)
        },
    )
    .await
}

pub async fn wait_ready(client: &Client, namespace: &str, name: &str) -> AppStack {
    wait_ready_within(client, namespace, name, LIMIT).await
}

/// [`wait_ready`] with a limit of its own, for waits that depend on more
/// than the operator (kube-controller-manager recovering from an outage).
pub async fn wait_ready_within(
    client: &Client,
    namespace: &str,
    name: &str,
    limit: Duration,
) -> AppStack {
    wait_for_within(client, namespace, name, ("Ready", "True", None), limit).await
}

/// Creates a Secret `name` holding one `key: value`, as a user would.
pub async fn create_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {key: value}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|error| panic!("create Secret {name}: {error}"));
}

/// What the API server answered to a server-side dry run of one object.
#[derive(Debug)]
pub struct DryRun {
    /// The HTTP status: 200 or 201 when accepted.
    pub status: u16,
    /// The API server's message when refused.
    pub message: String,
    /// `Warning` headers (Pod Security admission warns through them).
    pub warnings: Vec<String>,
    /// The object as it would be stored (defaults applied), when accepted.
    pub object: Value,
}

impl DryRun {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Server-side applies `object` (its `metadata.namespace` set) with
/// `dryRun=All` and strict field validation, as `kubectl apply
/// --server-side --dry-run=server` does and as the operator writes,
/// keeping the warnings kube's typed API drops. Knows the kinds a stack is
/// made of, plus Pod and AppStack.
pub async fn dry_run_apply(client: &Client, object: &Value) -> DryRun {
    dry_run(client, object, true).await
}

/// Creates `object` with `dryRun=All`, as `kubectl create --dry-run=server`
/// does: a JSON body, so any text a user can send reaches the API server.
pub async fn dry_run_create(client: &Client, object: &Value) -> DryRun {
    dry_run(client, object, false).await
}

async fn dry_run(client: &Client, object: &Value, apply: bool) -> DryRun {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let plural = match kind {
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "StatefulSet" => "statefulsets",
        "Job" => "jobs",
        "Deployment" => "deployments",
        "ServiceMonitor" => "servicemonitors",
        "NetworkPolicy" => "networkpolicies",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "Ingress" => "ingresses",
        "HTTPRoute" => "httproutes",
        "Pod" => "pods",
        "AppStack" => "appstacks",
        other => panic!("dry_run does not know {other}"),
    };
    let group = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .expect("metadata.namespace");
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    let resource = kube::core::Request::new(format!("{group}/namespaces/{namespace}/{plural}"));
    let request = if apply {
        resource.patch(
            name,
            &PatchParams::apply(TEST_MANAGER)
                .force()
                .dry_run()
                .validation_strict(),
            &Patch::Apply(object),
        )
    } else {
        let params = PostParams {
            dry_run: true,
            field_manager: Some(TEST_MANAGER.into()),
        };
        resource.create(&params, serde_json::to_vec(object).unwrap())
    }
    .expect("a well-formed request")
    .map(kube::client::Body::from);
    let response = client.send(request).await.expect("the API server answers");
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_default();
    let object = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let message = object["message"].as_str().unwrap_or_default().to_string();
    DryRun {
        status,
        message,
        warnings,
        object,
    }
}

/// A namespace whose Pod Security admission enforces `restricted` (and so,
/// by default, warns about workloads that would violate it).
pub async fn restricted_namespace(client: &Client, prefix: &str) -> TestNamespace {
    let namespace = TestNamespace::new(client, prefix).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &namespace.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .expect("label the namespace");
    namespace
}

/// Base64 as Secret data carries it (k8s-openapi's `ByteString` encoding).
pub fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// `kubectl appstack ARGS`: the plugin binary of this crate, run with the
/// local control plane's kubeconfig.
pub async fn plugin(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-appstack"))
        .args(args)
        .env(
            "KUBECONFIG",
            std::env::var("APPSTACK_TEST_KUBECONFIG").expect("APPSTACK_TEST_KUBECONFIG is set"),
        )
        .output()
        .await
        .expect("run kubectl-appstack")
}
