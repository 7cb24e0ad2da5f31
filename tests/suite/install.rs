//! Installing the operator the way platform teams do, on the local control
//! plane: `helm install --wait` of the chart (KWOK makes its pods Ready),
//! then the real operator process on this machine as the chart's
//! ServiceAccount, with a token from the TokenRequest API and the arguments
//! of the installed Deployment. Tests named `cluster_wide_` run an operator
//! that watches every namespace, so `scripts/test.sh` runs them alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::common::{
    LIMIT, Operator, TestNamespace, apply_stack, chart_dir, condition, create_secret,
    deployment_args, documents, eventually, example, run_helm, service_account_identity, setup,
    wait_ready,
};
use appstack::api::crd::AppStack;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const CRD: &str = include_str!("../../crds/appstack.dev_appstacks.yaml");
const CRD_NAME: &str = "appstacks.appstack.dev";

/// `helm install|upgrade` of the operator chart as `release` into
/// `namespace`, waiting (kstatus) for every object; panics with Helm's
/// output when it fails.
async fn helm_operator(verb: &str, release: &str, namespace: &str, extra: &[&str]) {
    let chart = chart_dir();
    let mut args = vec![
        verb,
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "3m",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run_helm(&args).await;
    assert!(ok, "helm {args:?}:\n{stdout}{stderr}");
}

/// The chart's operator Deployment as installed in `namespace`, run as its
/// ServiceAccount with the Deployment's own arguments and downward-API
/// environment.
async fn start_installed_operator(client: &Client, namespace: &str, release: &str) -> Operator {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get(release)
        .await
        .expect("the chart's Deployment");
    let available = deployment
        .status
        .as_ref()
        .and_then(|status| status.available_replicas)
        .unwrap_or(0);
    assert_eq!(
        Some(available),
        deployment.spec.replicas,
        "helm --wait returned before the Deployment was available"
    );
    let pod = deployment.spec.template.spec.as_ref().unwrap();
    let account = pod.service_account_name.clone().unwrap();
    let args = deployment_args(&serde_json::to_value(&deployment).unwrap());
    let identity = service_account_identity(namespace, &account).await;
    Operator::start_as(
        identity,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("POD_NAMESPACE", namespace),
            ("POD_NAME", &format!("{release}-host")),
        ],
    )
    .await
}

/// What a chart upgrade or reinstall must never touch: the stack's identity
/// and spec, and its generated Secrets' values.
async fn snapshot(client: &Client, namespace: &str, stack: &str) -> Value {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let live = stacks.get(stack).await.unwrap();
    let mut generated = BTreeMap::new();
    for name in [format!("{stack}-db"), format!("{stack}-env")] {
        let secret = secrets.get(&name).await.unwrap();
        generated.insert(name, json!({"uid": secret.uid(), "data": secret.data}));
    }
    json!({
        "uid": live.uid(),
        "generation": live.metadata.generation,
        "spec": live.spec,
        "secrets": generated,
    })
}

/// Every field of `generated` is in `served` with the same value; lists
/// have the same length. Fields the API server adds are ignored.
fn assert_served_as(generated: &Value, served: &Value, path: &str) {
    match (generated, served) {
        (Value::Object(generated), Value::Object(served)) => {
            for (key, value) in generated {
                let served = served
                    .get(key)
                    .unwrap_or_else(|| panic!("the installed CRD lacks {path}.{key}"));
                assert_served_as(value, served, &format!("{path}.{key}"));
            }
        }
        (Value::Array(generated), Value::Array(served)) => {
            assert_eq!(generated.len(), served.len(), "{path}");
            for (index, (generated, served)) in generated.iter().zip(served).enumerate() {
                assert_served_as(generated, served, &format!("{path}[{index}]"));
            }
        }
        _ => assert_eq!(generated, served, "the installed CRD's {path}"),
    }
}

/// The Prometheus Operator CRDs the chart's optional objects need.
const MONITORING_CRDS: [&str; 2] = [
    include_str!("../fixtures/crds/monitoring.coreos.com_servicemonitors.yaml"),
    include_str!("../fixtures/crds/monitoring.coreos.com_prometheusrules.yaml"),
];

/// The kinds of the monitoring objects in `namespace`, sorted.
async fn monitoring_objects(client: &Client, namespace: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for (kind, plural) in [
        ("PrometheusRule", "prometheusrules"),
        ("ServiceMonitor", "servicemonitors"),
    ] {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind);
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        if api
            .list(&Default::default())
            .await
            .is_ok_and(|list| !list.items.is_empty())
        {
            kinds.push(kind.to_string());
        }
    }
    kinds
}

/// `kubectl auth can-i` as `user`.
async fn can(user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let output = crate::common::kubectl()
        .args([
            "auth", "can-i", verb, resource, "-n", namespace, "--as", user,
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

#[tokio::test]
#[ignore = "watches every namespace: scripts/test.sh runs it alone"]
async fn cluster_wide_install_upgrade_uninstall_and_reinstall_keep_every_stack() {
    let client = crate::common::client().await;
    let system = TestNamespace::new(&client, "appstack-system").await;
    let release_ns = system.name.as_str();
    let (_, app) = setup("clusterwide").await;
    let ns = app.name.as_str();
    let release = "appstack-operator";

    // Other tests installed the CRD with kubectl-style server-side apply,
    // as a platform team moving to the chart would have: Helm takes it
    // over.
    // Without the Prometheus Operator's CRDs, enabling its objects installs
    // fine and renders none of them.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in MONITORING_CRDS {
        let name = documents(crd)[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let _ = crds.delete(&name, &Default::default()).await;
        eventually("the monitoring CRD gone", LIMIT, || async {
            matches!(crds.get_opt(&name).await, Ok(None)).then_some(())
        })
        .await;
    }
    let monitoring = "serviceMonitor.enabled=true,prometheusRule.enabled=true";
    helm_operator(
        "install",
        release,
        release_ns,
        &["--take-ownership", "--set", monitoring],
    )
    .await;
    assert!(monitoring_objects(&client, release_ns).await.is_empty());
    let installed = serde_json::to_value(crds.get(CRD_NAME).await.unwrap()).unwrap();
    let generated: Value = serde_yaml::from_str(CRD).unwrap();
    // Equal up to what the API server defaults (names.listKind,
    // conversion): every generated field is installed as generated.
    assert_served_as(&generated["spec"], &installed["spec"], "spec");
    assert_eq!(
        installed["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    let operator = start_installed_operator(&client, release_ns, release).await;
    apply_stack(&client, ns, &example("shop")).await;
    wait_ready(&client, ns, "shop").await;
    assert!(
        operator.logged("became the leader"),
        "the chart's arguments elect a leader"
    );

    // The aggregated roles: edit may write AppStacks, view only read them.
    for (role, user) in [("edit", "dev"), ("view", "auditor")] {
        let output = crate::common::kubectl()
            .args(["create", "rolebinding", user, "-n", ns])
            .args([&format!("--clusterrole={role}"), &format!("--user={user}")])
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
    }
    eventually("edit aggregates appstack-edit", LIMIT, || async {
        can("dev", "create", "appstacks.appstack.dev", ns)
            .await
            .then_some(())
    })
    .await;
    assert!(can("auditor", "get", "appstacks.appstack.dev", ns).await);
    assert!(can("auditor", "watch", "appstacks.appstack.dev", ns).await);
    assert!(!can("auditor", "create", "appstacks.appstack.dev", ns).await);

    // An upgrade with changed values rolls the operator, not the stacks;
    // with the Prometheus Operator's CRDs installed since, it adds the
    // ServiceMonitor and PrometheusRule, and the optional parts install.
    let before = snapshot(&client, ns, "shop").await;
    crate::common::apply_crds_served(&client, &MONITORING_CRDS).await;
    helm_operator(
        "upgrade",
        release,
        release_ns,
        &[
            "--set",
            monitoring,
            "--set",
            "grafanaDashboard.enabled=true,networkPolicy.enabled=true",
            "--set",
            "concurrency=4,logLevel=debug",
        ],
    )
    .await;
    assert_eq!(
        monitoring_objects(&client, release_ns).await,
        ["PrometheusRule", "ServiceMonitor"]
    );
    let dashboards: Api<ConfigMap> = Api::namespaced(client.clone(), release_ns);
    let dashboard = dashboards
        .get(&format!("{release}-dashboard"))
        .await
        .unwrap();
    assert!(
        dashboard
            .data
            .unwrap()
            .contains_key("appstack-operator.json")
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), release_ns);
    assert!(policies.get_opt(release).await.unwrap().is_some());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), release_ns);
    let upgraded = serde_json::to_value(deployments.get(release).await.unwrap()).unwrap();
    assert!(
        deployment_args(&upgraded).contains(&"4".to_string()),
        "the upgrade reached the Deployment"
    );
    assert_eq!(snapshot(&client, ns, "shop").await, before);

    // Uninstalling leaves the CRD, the stacks and their secrets.
    operator.stop().await;
    let (ok, stdout, stderr) =
        run_helm(&["uninstall", release, "--namespace", release_ns, "--wait"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("kept due to the resource policy"),
        "{stdout}"
    );
    let kept = crds.get(CRD_NAME).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the CRD is kept"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles.get_opt(release).await.unwrap().is_none(),
        "RBAC removed"
    );
    assert_eq!(snapshot(&client, ns, "shop").await, before);

    // Installing again takes the kept CRD back without any flag, and the new
    // operator takes the stack over.
    helm_operator("install", release, release_ns, &[]).await;
    let operator = start_installed_operator(&client, release_ns, release).await;
    let mut stack = example("shop");
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(ready.metadata.generation, Some(2));
    let after = snapshot(&client, ns, "shop").await;
    assert_eq!(
        after["secrets"], before["secrets"],
        "generated secrets kept"
    );
    assert_eq!(after["uid"], before["uid"]);
    operator.stop().await;
    let (ok, _, stderr) = run_helm(&["uninstall", release, "--namespace", release_ns]).await;
    assert!(ok, "{stderr}");
}

/// kubectl authenticated by `kubeconfig` (not the admin's).
fn kubectl_as(kubeconfig: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(
        std::env::var("APPSTACK_TEST_KUBECTL").expect("APPSTACK_TEST_KUBECTL is set"),
    );
    command.arg("--kubeconfig").arg(kubeconfig);
    command
}

#[tokio::test]
#[ignore = "needs helm and the local control plane: run scripts/test.sh"]
async fn a_namespaced_install_manages_its_namespace_and_cannot_read_others() {
    let client = crate::common::client().await;
    crate::common::install_crd(&client).await;
    let ops = TestNamespace::new(&client, "ops").await;
    let team = TestNamespace::new(&client, "team-a").await;
    let other = TestNamespace::new(&client, "other").await;
    let release = "appstack-operator";
    create_secret(&client, &team.name, "sendgrid", "api-key", "SG.team-a").await;
    create_secret(&client, &other.name, "payroll", "token", "not-for-team-a").await;

    // A second release in the cluster: the CRD and the aggregated roles
    // belong to the first.
    let watch = format!("watchNamespaces={{{}}}", team.name);
    helm_operator(
        "install",
        release,
        &ops.name,
        &[
            "--set",
            &watch,
            "--set",
            "crds.install=false,aggregatedRoles.create=false",
        ],
    )
    .await;
    let _operator = start_installed_operator(&client, &ops.name, release).await;
    apply_stack(&client, &team.name, &example("shop")).await;
    wait_ready(&client, &team.name, "shop").await;

    // The same token is refused outside team-a.
    let (kubeconfig, user) = service_account_identity(&ops.name, release).await;
    let allowed = kubectl_as(&kubeconfig)
        .args(["get", "secrets", "-n", &team.name, "-o", "name"])
        .output()
        .await
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    for args in [
        vec!["get", "secrets", "-n", other.name.as_str()],
        vec!["get", "secrets", "--all-namespaces"],
        vec!["get", "appstacks", "-n", other.name.as_str()],
        vec!["get", "deployments", "-n", other.name.as_str()],
    ] {
        let refused = kubectl_as(&kubeconfig).args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("forbidden") && stderr.contains(&user),
            "{user} {args:?}: {stderr}"
        );
    }
}

#[tokio::test]
#[ignore = "needs helm and the local control plane: run scripts/test.sh"]
async fn helm_install_of_an_app_chart_waits_for_the_stack_and_fails_on_a_failed_migration() {
    let (client, namespace) = setup("helmapp").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let app_chart = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/helm-app");

    let started = Instant::now();
    let (ok, stdout, stderr) = run_helm(&[
        "install",
        "shop",
        app_chart,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "3m",
    ])
    .await;
    assert!(ok, "{stdout}{stderr}");
    // Read once, right after Helm returned: it waited for Ready.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let stack = stacks.get("shop").await.unwrap();
    assert_eq!(
        Some(stack.status.as_ref().unwrap().observed_generation),
        stack.metadata.generation
    );
    assert_eq!(condition(&stack, "Ready").unwrap().0, "True");
    assert_eq!(condition(&stack, "MigrationsApplied").unwrap().0, "True");
    println!(
        "helm install --wait returned with the stack Ready after {:.1?}",
        started.elapsed()
    );

    // A release whose migration fails: Helm reports the failure.
    let values = std::env::temp_dir().join(format!("appstack-broken-{ns}.yaml"));
    std::fs::write(
        &values,
        format!(
            "migrations:\n  backoffLimit: 0\n  podLabels:\n    {}: \"true\"\n",
            crate::common::KWOK_FAIL_LABEL
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (ok, stdout, stderr) = run_helm(&[
        "install",
        "broken",
        app_chart,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "90s",
        "--values",
        values.to_str().unwrap(),
    ])
    .await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&values);
    assert!(
        !ok,
        "helm install succeeded on a failed migration:\n{stdout}"
    );
    println!(
        "helm install --wait failed after {elapsed:.1?}: {}",
        stderr.trim()
    );
    let stalled = crate::common::wait_stalled_by_migration(&client, ns, "broken").await;
    assert_eq!(condition(&stalled, "Ready").unwrap().0, "False");
    assert!(stderr.contains("broken"), "Helm names the stack: {stderr}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_example_stack_becomes_ready() {
    let (client, namespace) = setup("examples").await;
    let ns = namespace.name.as_str();
    // The external-database example's host does not exist here: the
    // operator parses its URL without connecting (tests/external_database.rs
    // connects to a real server).
    let _operator = Operator::start_with(
        &["--namespace", ns],
        &[("APPSTACK_DATABASE_CHECKS", "none")],
    )
    .await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    for (file, stack) in [
        ("shop.yaml", "shop"),
        ("external-database.yaml", "billing"),
        ("backend-only.yaml", "api"),
    ] {
        let output = crate::common::kubectl()
            .args(["apply", "--server-side", "-n", ns, "-f"])
            .arg(Path::new(examples).join(file))
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ready = wait_ready(&client, ns, stack).await;
        assert_eq!(condition(&ready, "Ready").unwrap().0, "True", "{file}");
    }
    // The minimal stack has no frontend and no migrations.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let api = stacks.get("api").await.unwrap();
    assert_eq!(
        condition(&api, "MigrationsApplied").unwrap(),
        ("True".into(), "NoMigrations".into())
    );
    assert_eq!(
        condition(&api, "FrontendAvailable").unwrap().1,
        "NotConfigured"
    );
}
