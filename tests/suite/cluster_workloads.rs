//! The local control plane runs workloads the way later tests rely on:
//! Deployments become Available, Jobs complete or fail, StatefulSets get
//! their volumes bound.

use std::time::Duration;

use crate::common::{TestNamespace, client, eventually};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

async fn create<K>(client: &Client, namespace: &str, object: serde_json::Value) -> K
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
    api.create(&PostParams::default(), &object).await.unwrap()
}

fn condition_true(
    conditions: Option<&Vec<k8s_openapi::api::batch::v1::JobCondition>>,
    kind: &str,
) -> bool {
    conditions.is_some_and(|all| all.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn job(name: &str, pod_labels: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}
            }
        }
    })
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn deployment_becomes_available() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "workload-deploy").await;
    let _: Deployment = create(
        &client,
        &namespace.name,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                }
            }
        }),
    )
    .await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace.name);
    eventually(
        "Deployment Available with 2 ready replicas",
        LIMIT,
        || async {
            let status = api.get("web").await.ok()?.status?;
            let available = status.conditions?.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
            (available && status.ready_replicas == Some(2)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn job_completes_and_a_job_with_failing_pods_fails() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "workload-job").await;
    let _: Job = create(&client, &namespace.name, job("succeeds", json!({}))).await;
    let _: Job = create(
        &client,
        &namespace.name,
        job(
            "fails",
            json!({"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}),
        ),
    )
    .await;
    let api: Api<Job> = Api::namespaced(client.clone(), &namespace.name);
    eventually("Job Complete", LIMIT, || async {
        let status = api.get("succeeds").await.ok()?.status?;
        condition_true(status.conditions.as_ref(), "Complete").then_some(())
    })
    .await;
    let status = eventually("Job Failed", LIMIT, || async {
        let status = api.get("fails").await.ok()?.status?;
        condition_true(status.conditions.as_ref(), "Failed").then_some(status)
    })
    .await;
    // backoffLimit 1: the first pod and one retry both failed.
    assert_eq!(status.failed, Some(2));
    assert!(!condition_true(status.conditions.as_ref(), "Complete"));
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn statefulset_rolls_out_with_its_volume_bound() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "workload-sts").await;
    let _: StatefulSet = create(&client, &namespace.name, json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{
                    "name": "postgres", "image": "postgres:16-alpine",
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]
                }]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace.name);
    eventually("StatefulSet ready", LIMIT, || async {
        let status = statefulsets.get("db").await.ok()?.status?;
        (status.ready_replicas == Some(1) && status.updated_replicas == Some(1)).then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace.name);
    eventually("PVC data-db-0 Bound", LIMIT, || async {
        let claim = claims.get("data-db-0").await.ok()?;
        (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
}
