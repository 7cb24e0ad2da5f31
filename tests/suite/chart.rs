//! The Helm chart in charts/appstack-operator: its metadata and generated
//! files, what its values render, and what the API server and Helm make of
//! it. Tests that run helm, actionlint, promtool or the operator need
//! `scripts/test.sh` (which builds the pinned tools and starts the local
//! control plane).

use std::collections::BTreeSet;

use crate::common::{
    Operator, TestNamespace, apply_stack, chart_dir, documents, eventually, example, run_helm,
    setup, wait_ready,
};
use serde_json::Value;

const CHART_YAML: &str = include_str!("../../charts/appstack-operator/Chart.yaml");
const CRD: &str = include_str!("../../crds/appstack.dev_appstacks.yaml");
const CRD_TEMPLATE: &str = include_str!("../../charts/appstack-operator/templates/crd.yaml");
const RENDERED: &str = include_str!("../../deploy/appstack-operator.yaml");
const VALUES: &str = include_str!("../../charts/appstack-operator/values.yaml");
const SCHEMA: &str = include_str!("../../charts/appstack-operator/values.schema.json");
const RUNBOOKS: &str = include_str!("../../docs/src/operations/runbooks.md");

/// The namespace deploy/appstack-operator.yaml is rendered into
/// (scripts/generate.sh).
const RENDERED_NAMESPACE: &str = "appstack-system";

#[test]
fn chart_version_and_app_version_are_the_crate_version() {
    let chart: Value = serde_yaml::from_str(CHART_YAML).unwrap();
    let crate_version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["appVersion"], crate_version, "Chart.yaml appVersion");
    assert_eq!(chart["version"], crate_version, "Chart.yaml version");
    assert_eq!(chart["apiVersion"], "v2");
}

#[test]
fn the_chart_crd_is_the_generated_crd_line_for_line() {
    // Every line the generator adds is a template action; without them the
    // template is crds/appstack.dev_appstacks.yaml byte for byte.
    let stripped: String = CRD_TEMPLATE
        .lines()
        .filter(|line| !line.trim_start().starts_with("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        stripped == CRD,
        "charts/appstack-operator/templates/crd.yaml drifted from crds/: run scripts/generate.sh"
    );
    assert!(
        !CRD.contains("{{"),
        "the CRD holds a template action Helm would execute"
    );
    let actions: Vec<_> = CRD_TEMPLATE
        .lines()
        .filter(|line| line.trim_start().starts_with("{{"))
        .collect();
    assert!(actions.contains(&"{{- if .Values.crds.install }}"));
}

/// Every key of `values` (nested objects included) is declared by `schema`,
/// and every object the schema declares forbids other keys.
fn assert_schema_covers(values: &Value, schema: &Value, path: &str) {
    if schema["type"] == "object" && schema.get("properties").is_some() {
        assert_eq!(
            schema["additionalProperties"],
            Value::Bool(false),
            "{path} accepts unknown keys"
        );
    }
    let Some(values) = values.as_object() else {
        return;
    };
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (key, value) in values {
        let child = properties
            .get(key)
            .unwrap_or_else(|| panic!("values.yaml's {path}.{key} is not in values.schema.json"));
        assert!(
            child["description"].is_string(),
            "{path}.{key} has no description"
        );
        assert_schema_covers(value, child, &format!("{path}.{key}"));
    }
}

#[test]
fn the_values_schema_declares_every_value_and_rejects_unknown_keys() {
    let values: Value = serde_yaml::from_str(VALUES).unwrap();
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    assert_schema_covers(&values, &schema, "");
    // The value names other tools and docs rely on.
    for name in [
        "replicaCount",
        "image.repository",
        "image.tag",
        "image.digest",
        "image.pullPolicy",
        "imagePullSecrets",
        "watchNamespaces",
        "crds.install",
        "crds.keep",
        "logLevel",
        "logFormat",
        "concurrency",
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
        "podAnnotations",
        "podLabels",
        "serviceMonitor.enabled",
        "prometheusRule.enabled",
        "grafanaDashboard.enabled",
        "networkPolicy.enabled",
        "podDisruptionBudget.enabled",
    ] {
        let pointer = format!("/{}", name.replace('.', "/"));
        assert!(
            values.pointer(&pointer).is_some(),
            "values.yaml lacks {name}"
        );
    }
    assert_eq!(values["replicaCount"], 2);
    assert_eq!(values["crds"]["install"], true);
    assert_eq!(values["crds"]["keep"], true);
    // Every value the schema declares is commented: the line before its key
    // is a comment, or the key of the object it opens.
    let lines: Vec<&str> = VALUES.lines().collect();
    let mut path: Vec<(usize, String)> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if trimmed.starts_with('#') || trimmed.starts_with('-') || key.contains(' ') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        path.retain(|(parent_indent, _)| *parent_indent < indent);
        path.push((indent, key.to_string()));
        let pointer: String = path
            .iter()
            .map(|(_, key)| format!("/properties/{key}"))
            .collect();
        if schema.pointer(&pointer).is_none() {
            continue;
        }
        let previous = lines[..index]
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or(&"");
        let previous_indent = previous.len() - previous.trim_start().len();
        let commented = previous.trim_start().starts_with('#')
            || (previous.trim_end().ends_with(':') && previous_indent < indent);
        assert!(
            commented,
            "values.yaml line {} has no comment: {line}",
            index + 1
        );
    }
}

/// The chart rendered with `args`, as JSON objects.
async fn render(args: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut all = vec!["template", "appstack-operator", chart.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run_helm(&all).await;
    assert!(ok, "helm template {args:?}: {stderr}");
    documents(&stdout)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

#[tokio::test]
#[ignore = "needs helm: run scripts/test.sh"]
async fn helm_lint_is_strictly_clean_and_the_rendered_manifest_is_committed() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for values in [
        vec![],
        vec!["--set", "watchNamespaces={team-a,team-b}"],
        vec![
            "--set",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true,networkPolicy.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(values.iter().copied());
        let (ok, stdout, stderr) = run_helm(&args).await;
        assert!(ok, "helm lint {values:?}:\n{stdout}{stderr}");
        assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
    }

    let (ok, rendered, stderr) = run_helm(&[
        "template",
        "appstack-operator",
        chart,
        "--namespace",
        RENDERED_NAMESPACE,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(
        RENDERED.ends_with(&rendered),
        "deploy/appstack-operator.yaml drifted from the chart: run scripts/generate.sh"
    );
    let objects = documents(RENDERED);
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(objects[0]["metadata"]["name"], RENDERED_NAMESPACE);
    let crd = the(&objects, "CustomResourceDefinition");
    let generated: Value = serde_yaml::from_str(CRD).unwrap();
    assert_eq!(
        crd["spec"], generated["spec"],
        "the CRD is included as generated"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_rendered_manifest_applies_server_side() {
    // The Namespace first, for real: a dry run creates nothing, and the
    // namespaced objects after it need it to exist.
    let namespace = documents(RENDERED).remove(0);
    let output = crate::common::output_with_stdin(
        {
            let mut command = crate::common::kubectl();
            command.args(["apply", "--server-side", "-f", "-"]);
            command
        },
        namespace.to_string().as_bytes(),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/appstack-operator.yaml");
    let output = crate::common::kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            path,
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/appstacks.appstack.dev",
        "deployment.apps/appstack-operator",
        "clusterrole.rbac.authorization.k8s.io/appstack-operator",
    ] {
        assert!(stdout.contains(object), "{object} not applied: {stdout}");
    }
}

#[tokio::test]
#[ignore = "needs helm: run scripts/test.sh"]
async fn values_shape_the_rendered_objects() {
    // Defaults: two replicas with leader election, a PDB, the CRD kept on
    // uninstall, cluster-wide RBAC, the image tag from appVersion.
    let objects = render(&[]).await;
    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        format!(
            "ghcr.io/appstack-dev/appstack-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(args.starts_with(&["run", "--leader-elect"]), "{args:?}");
    assert!(!args.iter().any(|arg| arg.starts_with("--namespace")));
    let env = container["env"].as_array().unwrap();
    let downward = |name: &str| {
        env.iter().find(|var| var["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(downward("POD_NAME"), "metadata.name");
    assert_eq!(downward("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert_eq!(
        the(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let crd = the(&objects, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        find(&objects, "ClusterRole").len(),
        3,
        "operator, view, edit"
    );
    assert!(find(&objects, "ServiceMonitor").is_empty());
    assert!(find(&objects, "NetworkPolicy").is_empty());
    assert!(find(&objects, "ConfigMap").is_empty());

    // A digest wins over the tag; pull secrets reach the pod spec, given as
    // names or as objects.
    let objects = render(&[
        "--set",
        "image.tag=9.9.9,image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "imagePullSecrets[0]=regcred,imagePullSecrets[1].name=mirror",
        "--set",
        "replicaCount=1,crds.keep=false",
    ])
    .await;
    let pod = &the(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/appstack-dev/appstack-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        pod["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}, {"name": "mirror"}])
    );
    assert!(
        find(&objects, "PodDisruptionBudget").is_empty(),
        "one replica"
    );
    assert!(
        the(&objects, "CustomResourceDefinition")["metadata"]["annotations"].is_null(),
        "crds.keep=false"
    );

    // Namespaced: a Role and RoleBinding per watched namespace, the Lease
    // Role in the release namespace, and nothing cluster-wide but the
    // CRD and the aggregated roles (which grant users, not the operator).
    let objects = render(&[
        "--namespace",
        "ops",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ])
    .await;
    let mut roles: Vec<(String, String)> = find(&objects, "Role")
        .iter()
        .map(|role| {
            (
                role["metadata"]["namespace"].as_str().unwrap().to_string(),
                role["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("ops".into(), "appstack-operator-leader-election".into()),
            ("team-a".into(), "appstack-operator".into()),
            ("team-b".into(), "appstack-operator".into()),
        ]
    );
    for binding in find(&objects, "RoleBinding") {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "appstack-operator", "namespace": "ops"}])
        );
    }
    assert!(find(&objects, "ClusterRoleBinding").is_empty());
    for role in find(&objects, "ClusterRole") {
        let name = role["metadata"]["name"].as_str().unwrap();
        assert!(["appstack-view", "appstack-edit"].contains(&name), "{name}");
    }
    let args = &the(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&"--namespace=team-a".into())
    );
    assert!(
        args.as_array()
            .unwrap()
            .contains(&"--namespace=team-b".into())
    );

    // Monitoring objects only where the cluster serves their API.
    let monitoring = [
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true",
    ];
    let without = render(&monitoring).await;
    assert!(find(&without, "ServiceMonitor").is_empty());
    assert!(find(&without, "PrometheusRule").is_empty());
    let mut served = monitoring.to_vec();
    // Each kind counts on its own: its CRD may be installed without the
    // other's.
    let mut only_monitors = monitoring.to_vec();
    only_monitors.extend(["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]);
    let partly = render(&only_monitors).await;
    assert_eq!(find(&partly, "ServiceMonitor").len(), 1);
    assert!(find(&partly, "PrometheusRule").is_empty());
    served.extend([
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ]);
    let with = render(&served).await;
    let monitor = the(&with, "ServiceMonitor");
    let service = the(&with, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "selects the Service"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        the(&with, "PrometheusRule")["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // The NetworkPolicy: egress to the API server and DNS only, ingress to
    // the metrics and health ports only.
    let objects = render(&[
        "--set",
        "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.1/32}",
    ])
    .await;
    let policy = &the(&objects, "NetworkPolicy")["spec"];
    assert_eq!(
        policy["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2);
    assert_eq!(egress[0]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert_eq!(egress[1]["ports"][0]["port"], 53);
    let ingress_ports: Vec<&Value> = policy["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| &rule["ports"][0]["port"])
        .collect();
    assert_eq!(ingress_ports, ["http-metrics", "http-health"]);
}

#[tokio::test]
#[ignore = "needs helm and the local control plane: run scripts/test.sh"]
async fn helm_install_rejects_unknown_and_mistyped_values_naming_the_key() {
    let client = crate::common::client().await;
    let namespace = TestNamespace::new(&client, "values").await;
    let chart = chart_dir();
    for (value, key, says) in [
        ("replicaz=2", "replicaz", "additional properties"),
        ("replicaCount=two", "/replicaCount", "want integer"),
        ("crds.kep=false", "kep", "additional properties"),
        ("logFormat=xml", "/logFormat", "must be one of"),
    ] {
        let (ok, _, stderr) = run_helm(&[
            "install",
            "rejected",
            chart.to_str().unwrap(),
            "--namespace",
            &namespace.name,
            "--set",
            value,
        ])
        .await;
        assert!(!ok, "helm install accepted --set {value}");
        assert!(
            stderr.contains(key) && stderr.contains(says),
            "--set {value}: {stderr}"
        );
    }
    let (_, releases, _) = run_helm(&["list", "--namespace", &namespace.name, "--short"]).await;
    assert!(
        releases.trim().is_empty(),
        "nothing was installed: {releases}"
    );
}

#[tokio::test]
#[ignore = "needs helm and the local control plane: run scripts/test.sh"]
async fn the_operator_deployment_passes_pod_security_restricted_without_a_warning() {
    let client = crate::common::client().await;
    let namespace = TestNamespace::new(&client, "restricted").await;
    let ns = namespace.name.as_str();
    for mode in ["enforce", "warn", "audit"] {
        let label = format!("pod-security.kubernetes.io/{mode}=restricted");
        let output = crate::common::kubectl()
            .args(["label", "namespace", ns, &label])
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
    }
    let chart = chart_dir();
    let show = |template: &'static str| {
        let chart = chart.clone();
        async move {
            let (ok, manifest, stderr) = run_helm(&[
                "template",
                "appstack-operator",
                chart.to_str().unwrap(),
                "--namespace",
                ns,
                "--show-only",
                template,
            ])
            .await;
            assert!(ok, "{stderr}");
            manifest
        }
    };
    let apply = |manifest: String, dry_run: bool| async move {
        let mut command = crate::common::kubectl();
        command.args(["apply", "--server-side", "-f", "-"]);
        if dry_run {
            command.arg("--dry-run=server");
        }
        let output = crate::common::output_with_stdin(command, manifest.as_bytes()).await;
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // The pod's ServiceAccount must exist for the Pod check below.
    let (ok, stderr) = apply(show("templates/serviceaccount.yaml").await, false).await;
    assert!(ok, "{stderr}");

    // Pod Security admission warns about a workload's pod template...
    let deployment = show("templates/deployment.yaml").await;
    let (ok, stderr) = apply(deployment.clone(), true).await;
    assert!(ok, "rejected: {stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
    // ...and enforces on the Pod itself.
    let template = &documents(&deployment)[0]["spec"]["template"];
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "appstack-operator-check", "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let (ok, stderr) = apply(pod.to_string(), true).await;
    assert!(
        ok,
        "a pod of the Deployment is rejected under restricted: {stderr}"
    );
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");

    // The same check notices a weaker securityContext.
    let weakened = deployment.replace(
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    );
    assert_ne!(weakened, deployment);
    let (_, stderr) = apply(weakened, true).await;
    assert!(
        stderr.contains("Warning") && stderr.contains("allowPrivilegeEscalation"),
        "{stderr}"
    );
}

/// A dashboard query as Prometheus would receive it: Grafana's
/// `$__rate_interval` becomes a range, every other variable (`$job`,
/// `$namespace`, only ever inside a label matcher) matches anything.
fn without_grafana_variables(query: &str) -> String {
    let query = query.replace("$__rate_interval", "5m");
    let mut plain = String::with_capacity(query.len());
    let mut characters = query.chars().peekable();
    while let Some(character) = characters.next() {
        if character != '$' {
            plain.push(character);
            continue;
        }
        while characters
            .peek()
            .is_some_and(|next| next.is_ascii_alphanumeric() || *next == '_')
        {
            characters.next();
        }
        plain.push_str(".+");
    }
    plain
}

/// Runs a pinned tool from `APPSTACK_TEST_TOOLS` with `input` on standard
/// input; its standard output, or a panic with what it said.
async fn run_tool(name: &str, args: &[&std::ffi::OsStr], input: &str) -> String {
    let mut command = tokio::process::Command::new(crate::common::tool(name));
    command.args(args);
    let output = crate::common::output_with_stdin(command, input.as_bytes()).await;
    assert!(
        output.status.success(),
        "{name} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `promtool check rules` on the chart's alerts as Prometheus loads them
/// (the PrometheusRule's `spec`) and on the dashboard's queries as
/// recording rules: every expression parses and type-checks in Prometheus'
/// own PromQL.
async fn promtool_check_rules(rule_spec: &Value, queries: &[(String, String)]) {
    let directory = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("promtool-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let alerts = directory.join("alerts.yaml");
    std::fs::write(&alerts, serde_yaml::to_string(rule_spec).unwrap()).unwrap();
    let dashboard = directory.join("dashboard.yaml");
    let rules: Vec<Value> = queries
        .iter()
        .filter(|(source, _)| !source.starts_with("alert "))
        .enumerate()
        .map(|(index, (_, expr))| serde_json::json!({"record": format!("dashboard:query_{index}"), "expr": expr}))
        .collect();
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&dashboard, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let output = run_tool(
        "promtool",
        &[
            "check".as_ref(),
            "rules".as_ref(),
            alerts.as_os_str(),
            dashboard.as_os_str(),
        ],
        "",
    )
    .await;
    assert!(output.contains("SUCCESS"), "{output}");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// The metric names each expression reads, by Prometheus' parser
/// (`promql-metrics`, built beside promtool).
async fn metric_names(queries: &[(String, String)]) -> Vec<BTreeSet<String>> {
    let input: String = queries
        .iter()
        .map(|(_, expr)| format!("{}\n", serde_json::to_string(expr).unwrap()))
        .collect();
    let output = run_tool("promql-metrics", &[], &input).await;
    let names: Vec<BTreeSet<String>> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(names.len(), queries.len(), "{output}");
    names
}

#[test]
fn grafana_variables_become_promql() {
    assert_eq!(
        without_grafana_variables(r#"rate(a{job=~"$job", ns=~"$namespace"}[$__rate_interval])"#),
        r#"rate(a{job=~".+", ns=~".+"}[5m])"#
    );
}

/// Metric names a `/metrics` text serves (samples, so histogram series
/// count with their suffixes).
fn served_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            line.split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs helm and the local control plane: run scripts/test.sh"]
async fn the_dashboard_and_alerts_read_only_metrics_the_operator_serves() {
    // The operator as the chart runs it: with the Deployment's arguments.
    let (client, namespace) = setup("dashboard").await;
    let ns = namespace.name.as_str();
    let rendered = render(&[
        "--namespace",
        ns,
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
    ])
    .await;
    let args = crate::common::deployment_args(the(&rendered, "Deployment"));
    let operator = Operator::start_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("POD_NAMESPACE", ns), ("POD_NAME", "appstack-operator-0")],
    )
    .await;
    apply_stack(&client, ns, &example("shop")).await;
    wait_ready(&client, ns, "shop").await;
    let served = eventually(
        "a Ready stack on /metrics",
        crate::common::LIMIT,
        || async {
            let metrics = operator.metrics().await;
            metrics
                .contains(r#"appstack_stacks{condition="Ready"} 1"#)
                .then(|| served_names(&metrics))
        },
    )
    .await;

    let objects = render(&[
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--set",
        "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ])
    .await;
    let rule = the(&objects, "PrometheusRule");
    let dashboard_map = the(&objects, "ConfigMap");
    assert_eq!(
        dashboard_map["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    let dashboard: Value = serde_json::from_str(
        dashboard_map["data"]["appstack-operator.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the dashboard is valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());

    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                format!("panel {:?}", panel["title"]),
                without_grafana_variables(target["expr"].as_str().unwrap()),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(selector, _)| selector.to_string())
                .unwrap_or_else(|| query.to_string());
            queries.push((
                format!("variable {:?}", variable["name"]),
                without_grafana_variables(&inner),
            ));
        }
    }
    let mut alerts = BTreeSet::new();
    for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let name = alert["alert"].as_str().unwrap().to_string();
        queries.push((
            format!("alert {name}"),
            alert["expr"].as_str().unwrap().into(),
        ));
        let runbook = alert["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = runbook.rsplit_once('#').unwrap().1;
        assert!(
            RUNBOOKS.lines().any(
                |line| line.strip_prefix("## ").map(str::to_lowercase).as_deref() == Some(anchor)
            ),
            "docs/src/operations/runbooks.md has no section for {runbook}"
        );
        alerts.insert(name);
    }
    assert_eq!(
        alerts,
        BTreeSet::from(
            [
                "AppStackReconcileErrors",
                "AppStackStalled",
                "AppStackMigrationFailed",
                "AppStackOperatorNoLeader"
            ]
            .map(String::from)
        )
    );

    promtool_check_rules(&rule["spec"], &queries).await;
    let mut used = BTreeSet::new();
    for ((source, expr), names) in queries.iter().zip(metric_names(&queries).await) {
        assert!(!names.is_empty(), "{source} reads no metric: {expr}");
        for name in names {
            assert!(
                served.contains(&name),
                "{source} reads {name}, which /metrics does not serve: {expr}"
            );
            used.insert(name);
        }
    }
    for needed in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "appstack_stacks",
        "appstack_migrations_total",
        "leader_election_master_status",
    ] {
        assert!(used.contains(needed), "nothing shows {needed}");
    }
}

#[tokio::test]
#[ignore = "needs actionlint: run scripts/test.sh"]
async fn the_workflows_pass_actionlint() {
    let workflows = concat!(env!("CARGO_MANIFEST_DIR"), "/.github/workflows");
    let files: Vec<_> = std::fs::read_dir(workflows)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "ci.yml and release.yml");
    let output = tokio::process::Command::new(crate::common::tool("actionlint"))
        .arg("-no-color")
        .args(&files)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
