//! Each stack's least privilege on the real local control plane: pods
//! without a ServiceAccount token unless a ServiceAccount is named,
//! NetworkPolicies that select every pod of the stack, and
//! PodDisruptionBudgets. No CNI runs here, so the policies are checked as
//! the API shows them, against the live pods' labels.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{LIMIT, apply_stack, eventually, ready_shop, wait_ready};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Whether a selector (the operator writes matchLabels only) selects `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "{selector:?}");
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn component(pod: &Pod) -> String {
    pod.labels()["app.kubernetes.io/component"].clone()
}

async fn stack_pods(client: &Client, namespace: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
        .await
        .unwrap()
        .items
}

async fn policies(client: &Client, namespace: &str) -> BTreeMap<String, NetworkPolicy> {
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|policy| (policy.name_any(), policy))
        .collect()
}

/// The components whose live pods a list of peers selects (pod selectors
/// of the policy's own namespace).
fn selected_components(peers: &[NetworkPolicyPeer], pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|pod| {
            peers.iter().any(|peer| {
                peer.namespace_selector.is_none()
                    && peer
                        .pod_selector
                        .as_ref()
                        .is_some_and(|selector| selects(selector, pod.labels()))
            })
        })
        .map(component)
        .collect()
}

/// No pod mounts an API token: the pod spec says so, and the API server's
/// ServiceAccount admission added no token volume.
fn assert_tokenless(what: &str, pod: &PodSpec) {
    assert_eq!(pod.automount_service_account_token, Some(false), "{what}");
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .all(|volume| volume.projected.is_none()),
        "{what} mounts a token: {:?}",
        pod.volumes
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_pod_runs_tokenless_behind_network_policies_that_select_it() {
    let (client, namespace, _operator, mut stack) = ready_shop("privilege").await;
    let ns = namespace.name.as_str();

    // Every pod template, and every live pod, goes without a token.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["shop-backend", "shop-frontend"] {
        let deployment = deployments.get(name).await.unwrap();
        assert_tokenless(name, deployment.spec.template.spec.as_ref().unwrap());
    }
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("shop-db")
        .await
        .unwrap();
    assert_tokenless("shop-db", statefulset.spec.template.spec.as_ref().unwrap());
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = &jobs
        .list(&ListParams::default().labels("app.kubernetes.io/component=migration"))
        .await
        .unwrap()
        .items[0];
    assert_tokenless(
        &job.name_any(),
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
    );
    let pods = stack_pods(&client, ns).await;
    let components: BTreeSet<String> = pods.iter().map(component).collect();
    assert_eq!(
        components,
        BTreeSet::from(["backend", "database", "frontend", "migration"].map(String::from)),
        "a live pod of every component"
    );
    for pod in &pods {
        assert_tokenless(&pod.name_any(), pod.spec.as_ref().unwrap());
    }

    // The default deny and exactly one policy of its component select each pod.
    let policies = policies(&client, ns).await;
    assert_eq!(
        policies.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(
            [
                "shop-default-deny",
                "shop-database",
                "shop-migration",
                "shop-backend",
                "shop-frontend"
            ]
            .map(String::from)
        )
    );
    for policy in policies.values() {
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        assert_eq!(policy.owner_references()[0].kind, "AppStack");
    }
    let spec = |name: &str| policies[name].spec.clone().unwrap();
    for pod in &pods {
        let selecting: BTreeSet<String> = policies
            .iter()
            .filter(|(_, policy)| {
                selects(
                    policy.spec.as_ref().unwrap().pod_selector.as_ref().unwrap(),
                    pod.labels(),
                )
            })
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            selecting,
            BTreeSet::from([
                format!("shop-{}", component(pod)),
                "shop-default-deny".to_string()
            ]),
            "policies selecting {}",
            pod.name_any()
        );
    }

    // The flows, in terms of the live pods they let through.
    let database_in = spec("shop-database").ingress.unwrap();
    assert_eq!(
        selected_components(database_in[0].from.as_ref().unwrap(), &pods),
        BTreeSet::from(["backend".to_string(), "migration".to_string()])
    );
    let backend_in = spec("shop-backend").ingress.unwrap();
    assert_eq!(
        selected_components(backend_in[0].from.as_ref().unwrap(), &pods),
        BTreeSet::from(["frontend".to_string()])
    );
    assert_eq!(
        backend_in[0].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(8000))
    );
    for egress in [
        &spec("shop-backend").egress.unwrap()[1],
        &spec("shop-migration").egress.unwrap()[1],
    ] {
        assert_eq!(
            selected_components(egress.to.as_ref().unwrap(), &pods),
            BTreeSet::from(["database".to_string()])
        );
    }
    let frontend_out = spec("shop-frontend").egress.unwrap();
    assert_eq!(
        selected_components(frontend_out[1].to.as_ref().unwrap(), &pods),
        BTreeSet::from(["backend".to_string()])
    );

    // A budget per multi-replica workload, covering its pods.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    for name in ["shop-backend", "shop-frontend"] {
        let budget = budgets.get(name).await.unwrap();
        let spec = budget.spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        let covered: Vec<&Pod> = pods
            .iter()
            .filter(|pod| selects(spec.selector.as_ref().unwrap(), pod.labels()))
            .collect();
        assert_eq!(covered.len(), 2, "{name} covers its two replicas");
        assert!(
            covered
                .iter()
                .all(|pod| format!("shop-{}", component(pod)) == name)
        );
        eventually(
            "the disruption controller counts the pods",
            LIMIT,
            || async {
                let status = budgets.get(name).await.ok()?.status?;
                (status.expected_pods == Some(2) && status.disruptions_allowed == Some(1))
                    .then_some(())
            },
        )
        .await;
    }

    // A ServiceAccount named by the user is used, with its token.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop-api"}})).unwrap(),
        )
        .await
        .unwrap();
    stack["spec"]["backend"]["serviceAccountName"] = json!("shop-api");
    stack["spec"]["frontend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    let backend_pods: Vec<Pod> = eventually("backend pods run as shop-api", LIMIT, || async {
        let pods: Vec<Pod> = stack_pods(&client, ns)
            .await
            .into_iter()
            .filter(|pod| component(pod) == "backend" && pod.metadata.deletion_timestamp.is_none())
            .collect();
        (pods.len() == 2
            && pods.iter().all(|pod| {
                pod.spec.as_ref().unwrap().service_account_name.as_deref() == Some("shop-api")
            }))
        .then_some(pods)
    })
    .await;
    for pod in backend_pods {
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(true));
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|volume| volume.projected.is_some()),
            "the named ServiceAccount's token is mounted"
        );
    }
    eventually("one frontend replica needs no budget", LIMIT, || async {
        budgets
            .get_opt("shop-frontend")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // Switched off, the policies go.
    stack["spec"]["networkPolicy"]["enabled"] = json!(false);
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    eventually("the NetworkPolicies are deleted", LIMIT, || async {
        let left = self::policies(&client, ns).await;
        left.is_empty().then_some(())
    })
    .await;
}
