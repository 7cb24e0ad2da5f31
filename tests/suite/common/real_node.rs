//! Helpers for tests on the real node of `scripts/cluster.sh up --real-node`,
//! where pods really run: the operator installed by its chart into a
//! namespace that enforces Pod Security `restricted`, small client pods
//! that talk to the stack from inside the cluster, `kubectl exec` and logs,
//! and an image that runs as root, derived from the seed backend's.
//!
//! Images are the project's own (`scripts/images.sh --import`), named under
//! `appstack.test/`; `scripts/test.sh` imports them before the real-node
//! phase.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::{
    RELEASE, TestNamespace, chart_dir, cluster_dir, create_secret, eventually, install_crd,
    kubectl, restricted_namespace, run_helm,
};

/// The node `scripts/cluster.sh` registers.
pub const NODE: &str = "appstack-real-node";

/// How long a real pod may take to start, or a stack of them to converge,
/// on a loaded two-core machine; only a broken stack gets near it.
pub const LIMIT: Duration = Duration::from_secs(300);

/// The operator image `scripts/images.sh` builds from this checkout.
pub const OPERATOR_IMAGE: &str = "appstack.test/operator";
pub const OPERATOR_TAG: &str = "dev";

/// An image of the project's with python3, for the tests' own pods (only the
/// standard library is used).
pub const CLIENT_IMAGE: &str = "appstack.test/seed-backend:1";

/// Label of the tests' client pods, which a NetworkPolicy of the test lets
/// into the stack's backend and frontend.
pub const CLIENT_LABEL: (&str, &str) = ("appstack-tests/role", "client");

/// A namespace enforcing Pod Security `restricted`, with the operator
/// installed into it by its chart (scoped to it, from
/// `appstack.test/operator:dev`), the Secret the seed stack references, and
/// a NetworkPolicy letting the tests' client pods reach the stack's web
/// ports as a user's own policy would. The namespace goes when it drops; on
/// a failed test the operator's log is printed first.
pub struct RealNamespace {
    pub client: Client,
    pub namespace: TestNamespace,
}

impl RealNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = super::client().await;
        let namespace = restricted_namespace(&client, prefix).await;
        let real = Self { client, namespace };
        install_crd(&real.client).await;
        install_operator(real.ns()).await;
        create_secret(&real.client, real.ns(), "mail", "api-key", "mail-test-key").await;
        super::apply_yaml(&real.client, &clients_may_reach_the_stack(real.ns())).await;
        real
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// The operator's pod that is Ready and holds the leader Lease.
    pub async fn leader_pod(&self) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), self.ns());
        let selector = format!("app.kubernetes.io/name={RELEASE}");
        eventually("the operator's pod Ready and leading", LIMIT, || async {
            let holder = leases.get(RELEASE).await.ok()?.spec?.holder_identity?;
            pods.list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .into_iter()
                .find(|pod| pod.name_any() == holder && is_ready(pod))
        })
        .await
    }

    /// A client pod `name` (labelled as a client) idling until the test
    /// execs into it, Ready.
    pub async fn client_pod(&self, name: &str) -> Pod {
        self.python_pod(name, IDLE, &[]).await
    }

    /// A client pod `name` running `script` with `args`, Ready once started.
    pub async fn python_pod(&self, name: &str, script: &str, args: &[&str]) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns());
        let pod: Pod = serde_json::from_value(restricted_python_pod(name, script, args)).unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|error| panic!("create pod {name}: {error}"));
        ready_pod(&pods, name).await
    }
}

impl Drop for RealNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ns = self.ns().to_string();
            for what in [
                vec!["get", "pods,jobs,appstacks", "-o", "wide"],
                vec![
                    "logs",
                    "--tail=120",
                    "-l",
                    "app.kubernetes.io/name=appstack-operator",
                ],
            ] {
                let output = std::process::Command::new(
                    std::env::var("APPSTACK_TEST_KUBECTL").unwrap_or_default(),
                )
                .arg("--kubeconfig")
                .arg(std::env::var("APPSTACK_TEST_KUBECONFIG").unwrap_or_default())
                .args(["-n", &ns])
                .args(&what)
                .output();
                if let Ok(output) = output {
                    eprintln!(
                        "--- kubectl {} ---\n{}{}",
                        what.join(" "),
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
    }
}

/// `helm install` of the chart into `namespace`, watching it alone, running
/// `appstack.test/operator:dev` from the node's image store (never pulled).
/// The CRD is installed once for every test (`install_crd`), not by the
/// release: a second release could not own it.
pub async fn install_operator(namespace: &str) {
    let chart = chart_dir();
    let settings = [
        format!("image.repository={OPERATOR_IMAGE}"),
        format!("image.tag={OPERATOR_TAG}"),
        "image.pullPolicy=Never".to_string(),
        format!("watchNamespaces={{{namespace}}}"),
        "replicaCount=1".to_string(),
        "crds.install=false".to_string(),
        "aggregatedRoles.create=false".to_string(),
        "logFormat=text".to_string(),
    ];
    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for setting in &settings {
        args.extend(["--set", setting.as_str()]);
    }
    let (installed, stdout, stderr) = run_helm(&args).await;
    assert!(installed, "helm install: {stdout}{stderr}");
}

/// A NetworkPolicy of the user's, beside the stack's own: the tests' client
/// pods may reach the backend's and the frontend's ports.
fn clients_may_reach_the_stack(namespace: &str) -> String {
    let (key, value) = CLIENT_LABEL;
    serde_json::to_string(&json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "tests-clients", "namespace": namespace},
        "spec": {
            "podSelector": {"matchExpressions": [{
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": ["backend", "frontend"]
            }]},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {key: value}}}]}]
        }
    }))
    .unwrap()
}

const IDLE: &str = "import time\ntime.sleep(1e9)";

/// A pod Pod Security `restricted` admits, running a python3 program in
/// the client image as an arbitrary non-root user on a read-only root.
fn restricted_python_pod(name: &str, script: &str, args: &[&str]) -> Value {
    let (key, value) = CLIENT_LABEL;
    let mut command = vec!["python3", "-u", "-c", script];
    command.extend(args);
    json!({
        "metadata": {"name": name, "labels": {key: value}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "main",
                "image": CLIENT_IMAGE,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    })
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

pub async fn ready_pod(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} Ready"), LIMIT, || async {
        pods.get(name).await.ok().filter(is_ready)
    })
    .await
}

/// `kubectl exec` of `command` in the pod's first container: its standard
/// output when it exits 0, else what it printed.
pub async fn exec(namespace: &str, pod: &str, command: &[&str]) -> Result<String, String> {
    let output = kubectl()
        .args(["exec", "-n", namespace, pod, "--"])
        .args(command)
        .output()
        .await
        .expect("run kubectl exec");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A python3 program run with `kubectl exec` in a pod of the client image.
pub async fn exec_python(namespace: &str, pod: &str, script: &str) -> Result<String, String> {
    exec(namespace, pod, &["python3", "-c", script]).await
}

/// `GET url` from inside `pod` (a client pod): the status and body, or why
/// no answer came.
pub async fn http_get_from(namespace: &str, pod: &str, url: &str) -> Result<(u16, String), String> {
    let script = format!(
        "import sys, urllib.request, urllib.error\n\
         try:\n    r = urllib.request.urlopen({url:?}, timeout=5)\n    status, body = r.status, r.read()\n\
         except urllib.error.HTTPError as e:\n    status, body = e.code, e.read()\n\
         print(status)\nsys.stdout.write(body.decode())"
    );
    let output = exec_python(namespace, pod, &script).await?;
    let (status, body) = output.split_once('\n').ok_or(output.clone())?;
    Ok((
        status.parse().map_err(|_| output.clone())?,
        body.to_string(),
    ))
}

/// `POST url` with a JSON body from inside `pod`: the status and body.
pub async fn http_post_from(
    namespace: &str,
    pod: &str,
    url: &str,
    body: &Value,
) -> Result<(u16, String), String> {
    let script = format!(
        "import sys, urllib.request, urllib.error\n\
         request = urllib.request.Request({url:?}, data={body:?}.encode(), \
         headers={{'Content-Type': 'application/json'}}, method='POST')\n\
         try:\n    r = urllib.request.urlopen(request, timeout=5)\n    status, body = r.status, r.read()\n\
         except urllib.error.HTTPError as e:\n    status, body = e.code, e.read()\n\
         print(status)\nsys.stdout.write(body.decode())",
        body = body.to_string()
    );
    let output = exec_python(namespace, pod, &script).await?;
    let (status, body) = output.split_once('\n').ok_or(output.clone())?;
    Ok((
        status.parse().map_err(|_| output.clone())?,
        body.to_string(),
    ))
}

/// One SQL query through `psql` in the stack's database pod, over the
/// pod's local socket (which the image trusts): the rows, `|`-separated.
pub async fn psql(namespace: &str, pod: &str, query: &str) -> Result<String, String> {
    psql_in(namespace, pod, "\"$POSTGRES_DB\"", query).await
}

/// [`psql`] in `database` (a shell word: a name, or `"$POSTGRES_DB"`) of
/// the same server.
pub async fn psql_in(
    namespace: &str,
    pod: &str,
    database: &str,
    query: &str,
) -> Result<String, String> {
    let script = format!(
        "exec psql -X -q -t -A -v ON_ERROR_STOP=1 -h /var/run/postgresql \
         -U \"$POSTGRES_USER\" -d {database} -c {}",
        shell_quote(query)
    );
    exec(namespace, pod, &["sh", "-c", &script])
        .await
        .map(|rows| rows.trim().to_string())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

// Traffic

/// A program that sends one request every 100 ms to `base` (a URL without
/// a path), alternating `GET /api/items` (which reads the database) and
/// `GET /api/version` (which names the release that answered), each on a
/// new connection with a 2 s timeout, and prints one line per request:
/// `ok <unix time> <path> <status> <version or ->`, or `fail <unix time>
/// <path> <why>`. Any answer but 200 is a failure.
const TRAFFIC: &str = r#"
import json, sys, time, urllib.request
base = sys.argv[1]
paths = ["/api/items", "/api/version"]
count = 0
next_at = time.monotonic()
while True:
    path = paths[count % 2]
    try:
        with urllib.request.urlopen(base + path, timeout=2) as response:
            body = response.read()
            status = response.status
        version = json.loads(body)["version"] if path == "/api/version" else "-"
        print(f"ok {time.time():.3f} {path} {status} {version}", flush=True)
    except Exception as error:
        print(f"fail {time.time():.3f} {path} {type(error).__name__}: {error}", flush=True)
    count += 1
    next_at += 0.1
    time.sleep(max(0.0, next_at - time.monotonic()))
"#;

/// A client pod sending requests to a Service every 100 ms ([`TRAFFIC`]);
/// what it saw is read from its log.
pub struct Traffic {
    namespace: String,
    pod: String,
}

/// What the traffic pod saw in a window.
#[derive(Debug)]
pub struct TrafficReport {
    pub requests: usize,
    pub failures: Vec<String>,
    pub seconds: f64,
    /// Releases that answered `/api/version`, in the order first seen.
    pub versions: Vec<String>,
    /// The release of the last `/api/version` answer.
    pub last_version: Option<String>,
    /// Each `/api/version` answer: when, and the release that gave it.
    pub answers: Vec<(f64, String)>,
}

impl TrafficReport {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

impl std::fmt::Display for TrafficReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} seconds={:.1} rate_per_second={:.1} failed={} releases={:?}",
            self.requests,
            self.seconds,
            self.rate(),
            self.failures.len(),
            self.versions
        )
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Traffic {
    /// Starts the pod `name` sending to `base`, and waits until its
    /// requests get through (its NetworkPolicy admitted, the Service routed).
    pub async fn start(real: &RealNamespace, name: &str, base: &str) -> Self {
        real.python_pod(name, TRAFFIC, &[base]).await;
        let traffic = Self {
            namespace: real.ns().to_string(),
            pod: name.to_string(),
        };
        eventually("the traffic to get through", LIMIT, || async {
            let lines = traffic.lines().await;
            let tail = &lines[lines.len().saturating_sub(10)..];
            (tail.len() == 10 && tail.iter().all(|line| line.starts_with("ok "))).then_some(())
        })
        .await;
        traffic
    }

    async fn lines(&self) -> Vec<String> {
        let output = kubectl()
            .args(["logs", "-n", &self.namespace, &self.pod])
            .output()
            .await
            .expect("run kubectl logs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The requests sent between the unix times `from` and `to`.
    pub async fn report(&self, from: f64, to: f64) -> TrafficReport {
        let mut report = TrafficReport {
            requests: 0,
            failures: Vec::new(),
            seconds: to - from,
            versions: Vec::new(),
            last_version: None,
            answers: Vec::new(),
        };
        for line in self.lines().await {
            let mut words = line.split_whitespace();
            let (Some(outcome), Some(time)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(time) = time.parse::<f64>() else {
                continue;
            };
            if time < from || time > to {
                continue;
            }
            report.requests += 1;
            if outcome != "ok" {
                report.failures.push(line.clone());
                continue;
            }
            let path = words.next();
            let version = words.nth(1);
            if let (Some("/api/version"), Some(version)) = (path, version) {
                if !report.versions.iter().any(|seen| seen == version) {
                    report.versions.push(version.to_string());
                }
                report.last_version = Some(version.to_string());
                report.answers.push((time, version.to_string()));
            }
        }
        report
    }

    /// Waits until `count` requests were sent after the unix time `after`.
    pub async fn wait_for_requests_after(&self, after: f64, count: usize) {
        eventually(&format!("{count} more requests"), LIMIT, || async {
            let sent = self
                .lines()
                .await
                .iter()
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
                .filter(|time| *time > after)
                .count();
            (sent >= count).then_some(())
        })
        .await;
    }

    /// Waits until `/api/version` answers `version` from now on: the last
    /// `answers` version answers all name it.
    pub async fn wait_for_version(&self, version: &str, answers: usize) {
        eventually(
            &format!("only release {version} to answer"),
            LIMIT,
            || async {
                let lines = self.lines().await;
                let versions: Vec<&str> = lines
                    .iter()
                    .filter(|line| line.contains(" /api/version "))
                    .filter_map(|line| line.split_whitespace().nth(4))
                    .collect();
                let tail = &versions[versions.len().saturating_sub(answers)..];
                (tail.len() == answers && tail.iter().all(|seen| *seen == version)).then_some(())
            },
        )
        .await;
    }
}

// An image that runs as root

/// The seed backend's release 1 as an image without a user, so it runs as
/// root unless the pod says otherwise, as `python:3.11-slim` and most
/// Dockerfiles do: derived from `appstack.test/seed-backend:1` (same layers,
/// a config without `User`) and imported into the node as
/// `appstack.test/seed-backend:1-root`.
pub const ROOT_IMAGE: &str = "appstack.test/seed-backend:1-root";

pub async fn import_root_image() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(root.join("scripts/images.sh"))
        .arg("seed-backend")
        .output()
        .await
        .expect("run scripts/images.sh");
    assert!(
        output.status.success(),
        "scripts/images.sh seed-backend: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("seed-backend-1."))
        })
        .expect("scripts/images.sh names the seed-backend:1 archive");
    let work = std::env::temp_dir().join(format!("appstack-root-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    run(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            work.to_str().unwrap(),
        ],
    );
    let read = |path: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).expect("an OCI JSON document")
    };
    let blob = |digest: &str| {
        work.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let mut index = read(&work.join("index.json"));
    let mut manifest = read(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut config = read(&blob(manifest["config"]["digest"].as_str().unwrap()));
    config["config"]
        .as_object_mut()
        .expect("an image config")
        .remove("User");
    let write_blob = |value: &Value| -> (String, usize) {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(value).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        std::fs::write(blob(&digest), &bytes).unwrap();
        (digest, bytes.len())
    };
    let (digest, size) = write_blob(&config);
    manifest["config"]["digest"] = json!(digest);
    manifest["config"]["size"] = json!(size);
    let (digest, size) = write_blob(&manifest);
    let entry = &mut index["manifests"][0];
    entry["digest"] = json!(digest);
    entry["size"] = json!(size);
    entry["annotations"]["io.containerd.image.name"] = json!(ROOT_IMAGE);
    entry["annotations"]["org.opencontainers.image.ref.name"] = json!("1-root");
    std::fs::write(work.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let derived = work.join("root.tar");
    run(
        "tar",
        &[
            "-cf",
            derived.to_str().unwrap(),
            "-C",
            work.to_str().unwrap(),
            "oci-layout",
            "index.json",
            "blobs",
        ],
    );
    let socket = cluster_dir().join("node/containerd.sock");
    run(
        "ctr",
        &[
            "--address",
            socket.to_str().unwrap(),
            "-n",
            "k8s.io",
            "images",
            "import",
            derived.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&work);
}

fn run(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
