//! The real node of `scripts/cluster.sh up --real-node` does what KWOK only
//! reports: containers run under the pod's security context, kubelet serves
//! logs and exec, Service names resolve through CoreDNS and route through
//! kube-proxy, NetworkPolicies are enforced, a StatefulSet's volume binds and
//! keeps its data, and nothing on the node reaches beyond loopback and
//! 198.18.0.0/15.
//!
//! `scripts/test.sh` runs these in its real-node phase, with the project's
//! images imported into the node (`scripts/images.sh --import`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{TestNamespace, client, cluster_dir, eventually, kubectl};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An image of the project's with python3: the tests' pods run small Python
/// programs in it (only the standard library's socket and os).
const IMAGE: &str = "appstack.test/seed-backend:1";

/// The node `scripts/cluster.sh` registers.
const NODE: &str = "appstack-real-node";

/// Long enough for a first container start on a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);

/// A TCP server on 8080 that greets each connection with a line.
const GREETER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from the greeter\n")
    c.close()
"#;

const IDLE: &str = "import time\ntime.sleep(1e9)";

/// The node's settings as `scripts/cluster.sh` wrote them.
fn node_settings() -> BTreeMap<String, String> {
    let path = cluster_dir().join("real-node.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}: is the real node up?", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Whether `address` is loopback or in 198.18.0.0/15.
fn allowed_address(address: std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback() || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
        }
        std::net::IpAddr::V6(v6) => v6.is_loopback(),
    }
}

async fn create<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|error| panic!("create: {error}"))
}

/// A pod spec that Pod Security `restricted` admits: non-root (uid 10001),
/// read-only root, no capabilities, RuntimeDefault seccomp, running `script`
/// with python3, ready once it listens on `port` if one is given.
fn pod_spec(script: &str, port: Option<i32>) -> Value {
    let mut container = json!({
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-u", "-c", script],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        }
    });
    if let Some(port) = port {
        container["ports"] = json!([{"containerPort": port}]);
        container["readinessProbe"] = json!({"tcpSocket": {"port": port}, "periodSeconds": 1});
    }
    json!({
        "terminationGracePeriodSeconds": 1,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [container]
    })
}

fn pod(name: &str, labels: Value, script: &str, port: Option<i32>) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": pod_spec(script, port)
    })
}

async fn ready_pod(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} Ready"), LIMIT, || async {
        let pod = pods.get(name).await.ok()?;
        let ready = pod
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(pod)
    })
    .await
}

/// `kubectl exec` of a python3 program in the pod's container: its output
/// when it exits 0, else what it printed on stderr.
async fn exec_python(namespace: &str, pod: &str, script: &str) -> Result<String, String> {
    let output = kubectl()
        .args(["exec", "-n", namespace, pod, "--", "python3", "-c", script])
        .output()
        .await
        .expect("run kubectl exec");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A python3 program that connects to `host`:`port` (2 s at most) and
/// prints the first line it reads.
fn connect(host: &str, port: u16) -> String {
    format!(
        "import socket\n\
         c = socket.create_connection(({host:?}, {port}), timeout=2)\n\
         print(c.makefile().readline().strip())"
    )
}

/// A python3 program that prints the IPv4 addresses `name` resolves to.
fn resolve(name: &str) -> String {
    format!(
        "import socket\n\
         print(' '.join(sorted({{a[4][0] for a in socket.getaddrinfo({name:?}, 80, socket.AF_INET)}})))"
    )
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn a_pod_runs_on_the_real_node_and_kubelet_serves_its_logs_and_exec() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "real-pod").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    let script = format!("import os\nprint('started as', os.getuid(), flush=True)\n{GREETER}");
    let _: Pod = create(
        &client,
        &namespace.name,
        pod("greeter", json!({"app": "greeter"}), &script, Some(8080)),
    )
    .await;
    // Ready comes from kubelet's TCP probe reaching the pod's own address.
    let pod = ready_pod(&pods, "greeter").await;
    let spec = pod.spec.unwrap();
    let status = pod.status.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE));
    let pod_ip: std::net::IpAddr = status.pod_ip.unwrap().parse().unwrap();
    assert!(allowed_address(pod_ip), "pod address {pod_ip}");
    assert_eq!(
        status.host_ip.as_deref(),
        Some(node_settings()["NODE_IP"].as_str())
    );

    let logs = kubectl()
        .args(["logs", "-n", &namespace.name, "greeter"])
        .output()
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("started as 10001"),
        "kubectl logs through kubelet: {logs:?}"
    );
    let uid = exec_python(
        &namespace.name,
        "greeter",
        "import os\nprint(os.getuid(), os.getgid())",
    )
    .await
    .expect("kubectl exec through kubelet");
    assert_eq!(uid.trim(), "10001 10001");
    let greeting = exec_python(&namespace.name, "greeter", &connect("127.0.0.1", 8080))
        .await
        .unwrap();
    assert_eq!(greeting.trim(), "hello from the greeter");
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn a_missing_image_is_reported_and_never_pulled_or_faked_running() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "real-missing-image").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    let mut object = pod("missing", json!({}), IDLE, None);
    object["spec"]["containers"][0]["image"] = json!("appstack.test/no-such-image:1");
    let _: Pod = create(&client, &namespace.name, object).await;
    let pod = eventually("kubelet to report the missing image", LIMIT, || async {
        let pod = pods.get("missing").await.ok()?;
        let waiting = pod
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .waiting
            .as_ref()?
            .reason
            .clone()?;
        (waiting == "ErrImageNeverPull").then_some(pod)
    })
    .await;
    // KWOK manages no real node: nothing marks this pod Running.
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn service_names_resolve_in_pods_and_route_to_their_endpoints() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "real-dns").await;
    let ns = namespace.name.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _: Pod = create(
        &client,
        ns,
        pod("greeter", json!({"app": "greeter"}), GREETER, Some(8080)),
    )
    .await;
    let _: Pod = create(&client, ns, pod("client", json!({}), IDLE, None)).await;
    let service: Service = create(
        &client,
        ns,
        json!({
            "metadata": {"name": "greeter"},
            "spec": {"selector": {"app": "greeter"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
    )
    .await;
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    assert!(allowed_address(cluster_ip.parse().unwrap()), "{cluster_ip}");
    ready_pod(&pods, "greeter").await;
    ready_pod(&pods, "client").await;

    for name in [
        format!("greeter.{ns}.svc"),
        format!("greeter.{ns}.svc.cluster.local"),
    ] {
        let resolved = eventually(&format!("{name} to resolve"), LIMIT, || async {
            exec_python(ns, "client", &resolve(&name)).await.ok()
        })
        .await;
        assert_eq!(resolved.trim(), cluster_ip, "{name}");
    }
    let greeting = eventually("the greeter through its Service", LIMIT, || async {
        exec_python(ns, "client", &connect(&format!("greeter.{ns}.svc"), 80))
            .await
            .ok()
    })
    .await;
    assert_eq!(greeting.trim(), "hello from the greeter");

    // CoreDNS answers the cluster domain only: a name outside it is refused,
    // never forwarded.
    let outside = exec_python(ns, "client", &resolve("appstack.test")).await;
    assert!(
        outside.as_ref().is_err_and(|e| e.contains("gaierror")),
        "appstack.test resolved: {outside:?}"
    );
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn network_policies_deny_by_default_and_admit_what_a_rule_allows() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "real-netpol").await;
    let ns = namespace.name.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _: Pod = create(
        &client,
        ns,
        pod("greeter", json!({"app": "greeter"}), GREETER, Some(8080)),
    )
    .await;
    let _: Pod = create(
        &client,
        ns,
        pod("friend", json!({"role": "friend"}), IDLE, None),
    )
    .await;
    let _: Pod = create(
        &client,
        ns,
        pod("stranger", json!({"role": "stranger"}), IDLE, None),
    )
    .await;
    let greeter_ip = ready_pod(&pods, "greeter")
        .await
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    ready_pod(&pods, "friend").await;
    ready_pod(&pods, "stranger").await;
    let to_greeter = connect(&greeter_ip, 8080);

    // Without a policy both reach the greeter.
    for client_pod in ["friend", "stranger"] {
        let greeting = exec_python(ns, client_pod, &to_greeter).await;
        assert_eq!(
            greeting.as_deref().map(str::trim),
            Ok("hello from the greeter"),
            "{client_pod} before any policy"
        );
    }

    let _: NetworkPolicy = create(
        &client,
        ns,
        json!({
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }),
    )
    .await;
    for client_pod in ["friend", "stranger"] {
        eventually(
            &format!("default deny to stop {client_pod}"),
            LIMIT,
            || async { exec_python(ns, client_pod, &to_greeter).await.err() },
        )
        .await;
    }

    let _: NetworkPolicy = create(
        &client,
        ns,
        json!({
            "metadata": {"name": "friends-may-greet"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "greeter"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
                    "ports": [{"port": 8080, "protocol": "TCP"}]
                }]
            }
        }),
    )
    .await;
    let greeting = eventually("the allow rule to admit the friend", LIMIT, || async {
        exec_python(ns, "friend", &to_greeter).await.ok()
    })
    .await;
    assert_eq!(greeting.trim(), "hello from the greeter");
    let stranger = exec_python(ns, "stranger", &to_greeter).await;
    assert!(stranger.is_err(), "the stranger got through: {stranger:?}");
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn a_statefulset_claim_binds_and_its_data_outlives_the_pod() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "real-volume").await;
    let ns = namespace.name.as_str();
    // The first start writes a random token; every start prints what the
    // volume holds.
    let script = "import os\n\
                  path = '/data/token'\n\
                  if not os.path.exists(path):\n    open(path, 'w').write(os.urandom(8).hex())\n\
                  print('token', open(path).read(), flush=True)\n\
                  import time\ntime.sleep(1e9)";
    let mut spec = pod_spec(script, None);
    // fsGroup makes the volume (root's, 0755, as a fresh disk) writable by
    // the pod's non-root user.
    spec["securityContext"]["fsGroup"] = json!(10001);
    spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    let _: StatefulSet = create(
        &client,
        ns,
        json!({
            "metadata": {"name": "keeper"},
            "spec": {
                "serviceName": "keeper",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "keeper"}},
                "template": {"metadata": {"labels": {"app": "keeper"}}, "spec": spec},
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                }]
            }
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let first = ready_pod(&pods, "keeper-0").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = claims.get("data-keeper-0").await.unwrap();
    assert_eq!(claim.status.unwrap().phase.as_deref(), Some("Bound"));
    let volume_name = claim.spec.unwrap().volume_name.unwrap();
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .unwrap();
    let path = volume.spec.unwrap().local.unwrap().path;
    assert!(
        path.starts_with(cluster_dir().to_str().unwrap()),
        "the volume lives under the cluster's state: {path}"
    );
    let read = "print(open('/data/token').read())";
    let token = exec_python(ns, "keeper-0", read).await.unwrap();
    assert_eq!(token.trim().len(), 16, "token {token:?}");

    pods.delete("keeper-0", &DeleteParams::default())
        .await
        .unwrap();
    let first_uid = first.metadata.uid.unwrap();
    let second = eventually("a new keeper-0 Ready", LIMIT, || async {
        let pod = pods.get("keeper-0").await.ok()?;
        let ready = pod
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && pod.metadata.uid.as_deref() != Some(first_uid.as_str())).then_some(pod)
    })
    .await;
    assert_eq!(second.spec.unwrap().node_name.as_deref(), Some(NODE));
    let again = exec_python(ns, "keeper-0", read).await.unwrap();
    assert_eq!(again, token, "the new pod reads what the first one wrote");
}

#[tokio::test]
#[ignore = "needs the real node: scripts/test.sh runs it after scripts/cluster.sh up --real-node"]
async fn nothing_on_the_node_listens_or_routes_beyond_loopback_and_its_range() {
    let settings = node_settings();
    // The process holding the node's namespaces.
    let holder = std::fs::read_to_string(cluster_dir().join("node-namespace.pid")).unwrap();
    let in_node = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .args(["--target", holder.trim(), "--net", "--"])
            .args(args)
            .output()
            .expect("run nsenter")
    };
    // Every listening socket in the node's network namespace.
    let output = in_node(&["ss", "-Hltun"]);
    assert!(output.status.success(), "{output:?}");
    let listening = String::from_utf8(output.stdout).unwrap();
    let mut seen = 0;
    for line in listening.lines() {
        let local = line.split_whitespace().nth(4).expect("ss local address");
        let (host, _port) = local.rsplit_once(':').unwrap();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.split('%').next().unwrap();
        let address: std::net::IpAddr = host
            .parse()
            .unwrap_or_else(|_| panic!("a wildcard or unnamed listener: {line}"));
        assert!(allowed_address(address), "listening on {line}");
        seen += 1;
    }
    // kubelet, kube-proxy, CoreDNS and containerd's stream server at least.
    assert!(seen >= 5, "listeners: {listening}");

    // The node routes to its link, its pods and its Services, and nowhere
    // else: asking for a route (no packet is sent) fails.
    for outside in ["192.0.2.1", "10.0.0.1", "203.0.113.1"] {
        let route = in_node(&["ip", "route", "get", outside]);
        assert!(
            !route.status.success(),
            "the node has a route to {outside}: {}",
            String::from_utf8_lossy(&route.stdout)
        );
    }
    for inside in [&settings["POD_GATEWAY"], &settings["FIRST_SERVICE_IP"]] {
        let route = in_node(&["ip", "route", "get", inside]);
        assert!(route.status.success(), "no route to {inside}");
    }
}
