//! What the operator's objects and identity are allowed: every workload it
//! generates passes Pod Security `restricted` (no warning on a server-side
//! dry run into a namespace that enforces it, and its pods admitted), and
//! its ServiceAccount can do exactly what the chart's commented rules say.

use std::collections::BTreeSet;

use crate::common::{
    RELEASE, TestNamespace, client, documents, dry_run_apply, dry_run_create,
    install_operator_prerequisites, render_operator_rbac, restricted_namespace,
    service_account_identity,
};
use k8s_openapi::api::authorization::v1::SelfSubjectRulesReview;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

const EXAMPLES: [&str; 3] = [
    include_str!("../../deploy/examples/shop.yaml"),
    include_str!("../../deploy/examples/backend-only.yaml"),
    include_str!("../../deploy/examples/external-database.yaml"),
];

const WORKLOADS: [&str; 3] = ["StatefulSet", "Job", "Deployment"];

/// A bare Pod from a workload's pod template, as its controller would
/// create it (the claim templates of a StatefulSet become volumes).
fn pod_of(workload: &Value) -> Value {
    let namespace = &workload["metadata"]["namespace"];
    let name = workload["metadata"]["name"].as_str().unwrap();
    let template = &workload["spec"]["template"];
    let mut spec = template["spec"].clone();
    for claim in workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let volume = claim["metadata"]["name"].as_str().unwrap();
        spec["volumes"].as_array_mut().unwrap().push(json!({
            "name": volume,
            "persistentVolumeClaim": {"claimName": format!("{volume}-{name}-0")},
        }));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{name}-pod"),
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    })
}

/// Every workload `appstack render` shows for the examples, in `namespace`.
fn example_workloads(namespace: &str) -> Vec<Value> {
    let mut workloads = Vec::new();
    for example in EXAMPLES {
        for document in documents(example) {
            if document["kind"] != "AppStack" {
                continue;
            }
            let yaml = serde_yaml::to_string(&document).unwrap();
            let rendered = appstack::cli::render::render(&yaml, namespace).unwrap();
            workloads.extend(
                documents(&rendered)
                    .into_iter()
                    .filter(|object| WORKLOADS.contains(&object["kind"].as_str().unwrap())),
            );
        }
    }
    workloads
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn generated_workloads_pass_pod_security_restricted() {
    let client = client().await;
    let namespace = restricted_namespace(&client, "restricted").await;
    let workloads = example_workloads(&namespace.name);
    let kinds: BTreeSet<&str> = workloads
        .iter()
        .map(|workload| workload["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(WORKLOADS),
        "database, migration, backend, frontend"
    );
    assert!(workloads.len() >= 7, "{} workloads", workloads.len());

    // The namespace enforces restricted and its warnings reach this test: a
    // pod template without the operator's security settings is warned
    // about, and its Pod refused.
    let mut bare = workloads
        .iter()
        .find(|workload| workload["kind"] == "Deployment")
        .unwrap()
        .clone();
    bare["metadata"]["name"] = json!("without-security-settings");
    let pod = &mut bare["spec"]["template"]["spec"];
    pod.as_object_mut().unwrap().remove("securityContext");
    pod["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let warned = dry_run_apply(&client, &bare).await;
    assert!(warned.accepted(), "{}", warned.message);
    assert!(
        warned
            .warnings
            .iter()
            .any(|warning| warning.contains("would violate PodSecurity \\\"restricted:latest\\\"")),
        "{:?}",
        warned.warnings
    );
    let refused = dry_run_create(&client, &pod_of(&bare)).await;
    assert!(
        !refused.accepted() && refused.message.contains("violates PodSecurity"),
        "{refused:?}"
    );

    let mut problems = Vec::new();
    for workload in &workloads {
        let what = format!("{} {}", workload["kind"], workload["metadata"]["name"]);
        let applied = dry_run_apply(&client, workload).await;
        if !applied.accepted() || !applied.warnings.is_empty() {
            problems.push(format!(
                "{what}: {} {:?}",
                applied.message, applied.warnings
            ));
        }
        let pod = dry_run_create(&client, &pod_of(workload)).await;
        if !pod.accepted() || !pod.warnings.is_empty() {
            problems.push(format!("{what}'s pod: {} {:?}", pod.message, pod.warnings));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One permission: (API group, resource, verb).
type Permission = (String, String, String);

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

fn permissions(rules: impl IntoIterator<Item = Rule>) -> BTreeSet<Permission> {
    let mut permissions = BTreeSet::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    permissions.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    permissions
}

/// The rules in `_helpers.tpl`'s `appstack-operator.rules`, each of which
/// must follow a comment saying why.
fn commented_rules() -> Vec<Rule> {
    let helpers = include_str!("../../charts/appstack-operator/templates/_helpers.tpl");
    let start = helpers
        .find(r#"{{- define "appstack-operator.rules" -}}"#)
        .expect("the rules are defined");
    let block = &helpers[start..];
    let block = &block[block.find('\n').unwrap() + 1..block.find("{{- end -}}").unwrap()];
    let lines: Vec<&str> = block.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.starts_with("- ") {
            assert!(
                index > 0 && lines[index - 1].starts_with('#'),
                "the rule at {line:?} has no comment saying why"
            );
        }
    }
    serde_yaml::from_str(block).expect("the rules are YAML")
}

/// A client authenticated as ServiceAccount `account` of `namespace`.
async fn client_as(namespace: &str, account: &str) -> Client {
    let (kubeconfig, _) = service_account_identity(namespace, account).await;
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// What `client` may do in `namespace`, as a SelfSubjectRulesReview says.
async fn allowed(client: Client, namespace: &str) -> BTreeSet<Permission> {
    let reviews: Api<SelfSubjectRulesReview> = Api::all(client);
    let review: SelfSubjectRulesReview =
        serde_json::from_value(json!({"spec": {"namespace": namespace}})).unwrap();
    let status = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("a rules review")
        .status
        .expect("a review status");
    assert!(!status.incomplete, "{:?}", status.evaluation_error);
    permissions(status.resource_rules.into_iter().map(|rule| {
        assert!(
            rule.resource_names.is_none(),
            "no rule is narrowed to names: {rule:?}"
        );
        Rule {
            api_groups: rule.api_groups.unwrap_or_default(),
            resources: rule.resources.unwrap_or_default(),
            verbs: rule.verbs,
        }
    }))
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_service_account_can_do_exactly_what_the_commented_rules_say() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "rbac").await;
    let ns = namespace.name.as_str();
    install_operator_prerequisites(&client, ns).await;
    // What every ServiceAccount may do (reviews of itself, discovery), bound
    // to nothing: the baseline the chart's rules add to.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let bystander: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "bystander"}})).unwrap();
    accounts
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();
    let baseline = allowed(client_as(ns, "bystander").await, ns).await;
    let operator = allowed(client_as(ns, RELEASE).await, ns).await;
    let granted: BTreeSet<Permission> = operator.difference(&baseline).cloned().collect();

    let leader_election = render_operator_rbac(ns, &["templates/leader-election-rbac.yaml"]).await;
    let leader_rules = documents(&leader_election)
        .into_iter()
        .filter(|document| document["kind"] == "Role")
        .flat_map(|role| serde_json::from_value::<Vec<Rule>>(role["rules"].clone()).unwrap());
    let mut expected = permissions(commented_rules());
    expected.extend(permissions(leader_rules));

    let extra: Vec<_> = granted.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "the ServiceAccount may also {extra:?} and may not {missing:?}"
    );
    // Nothing the operator does not do: never `update` (server-side apply
    // and patches only) but the finalizers the admission plugin asks for
    // and the Lease; Pods only listed and watched (to say why they cannot
    // run), never read one by one, written, exec'd into or read for logs;
    // and nothing cluster-wide in namespaced mode.
    for (group, resource, verb) in &granted {
        assert!(
            verb != "update" || resource == "appstacks/finalizers" || resource == "leases",
            "{verb} {group}/{resource}"
        );
        assert!(!["nodes", "namespaces"].contains(&resource.as_str()));
        assert!(
            !resource.starts_with("pods")
                || (resource == "pods" && ["list", "watch"].contains(&verb.as_str())),
            "{verb} {group}/{resource}"
        );
    }
    assert!(granted.len() >= 30, "{granted:?}");
}
