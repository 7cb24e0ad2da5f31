//! The operator against the real local control plane: each test runs the
//! `appstack` binary as a child process, scoped to a fresh namespace, as the
//! chart's ServiceAccount with the chart's RBAC rendered for that namespace.

use std::time::Duration;

use crate::common::postgres::Postgres;
use crate::common::{
    AuditLog, LIMIT, Operator, apply_stack, condition, eventually, example, ready_shop, setup,
    wait_for, wait_ready,
};
use appstack::api::crd::AppStack;
use appstack::children::CONFIG_CHECKSUM_ANNOTATION;
use appstack::reconcile::plan::DATABASE_FINALIZER;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, PodSpec, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

async fn migration_jobs(client: &Client, namespace: &str, stack: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let selector =
        format!("app.kubernetes.io/instance={stack},app.kubernetes.io/component=migration");
    jobs.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

/// When a finished Job completed.
fn completed_at(job: &Job) -> Time {
    job.status
        .as_ref()
        .and_then(|status| status.completion_time.clone())
        .expect("Job completed")
}

/// When the backend's ReplicaSet whose pod spec `matches` was created.
async fn backend_rolled_at(
    client: &Client,
    namespace: &str,
    matches: impl Fn(&PodSpec) -> bool,
) -> Time {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let selector = "app.kubernetes.io/instance=shop,app.kubernetes.io/component=backend";
    replica_sets
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|set| {
            set.spec
                .template
                .as_ref()
                .and_then(|template| template.spec.as_ref())
                .is_some_and(&matches)
        })
        .and_then(|set| set.metadata.creation_timestamp)
        .expect("a backend ReplicaSet for the new pod spec")
}

fn backend_image(deployment: &Deployment) -> String {
    deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

async fn secret_value(client: &Client, namespace: &str, name: &str, key: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets.get(name).await.unwrap().data.unwrap()[key]
        .0
        .clone()
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    matches!(api.get_opt(name).await, Ok(None))
}

/// Whether object `name` exists and is not being deleted (a volume in use
/// lingers, terminating, behind its protection finalizer).
async fn kept<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    matches!(api.get_opt(name).await, Ok(Some(object)) if object.meta().deletion_timestamp.is_none())
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_new_stack_becomes_ready_in_order() {
    let (client, namespace) = setup("ready").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    apply_stack(&client, ns, &example("shop")).await;

    let wait = crate::common::kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "appstack/shop",
            "-n",
            ns,
            "--timeout=120s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        wait.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let stack = wait_ready(&client, ns, "shop").await;
    let status = stack.status.clone().unwrap();
    let true_summaries: Vec<_> = ["Ready", "Reconciling", "Stalled"]
        .into_iter()
        .filter(|type_| condition(&stack, type_).is_some_and(|(status, _)| status == "True"))
        .collect();
    assert_eq!(true_summaries, ["Ready"]);
    // kstatus reads Reconciling and Stalled as abnormal-true: absent while
    // False. So are the conditions of stages the stack does not have.
    for absent in [
        "Reconciling",
        "Stalled",
        "MigrationApproved",
        "BackupReady",
        "PostDeployApplied",
    ] {
        assert_eq!(condition(&stack, absent), None, "{absent}");
    }
    for type_ in [
        "SecretsReady",
        "DatabaseReady",
        "MigrationsApplied",
        "BackendAvailable",
        "FrontendAvailable",
    ] {
        assert_eq!(condition(&stack, type_).unwrap().0, "True", "{type_}");
    }
    assert!(
        status
            .conditions
            .iter()
            .all(|condition| condition.observed_generation == stack.metadata.generation)
    );
    let migration = status.migration.unwrap();
    assert_eq!(migration.applied_revision, migration.target_revision);

    // Every child exists, labelled and owned.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let backend = deployments.get("shop-backend").await.unwrap();
    let owner = &backend.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AppStack", Some(true))
    );
    assert_eq!(
        backend.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "appstack-operator"
    );
    let container = &backend.spec.template.spec.as_ref().unwrap().containers[0];
    assert!(
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .all(|var| var.name != "DATABASE_URL" || var.value.is_none()),
        "DATABASE_URL by reference only"
    );
    deployments.get("shop-frontend").await.unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("shop-db")
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("shop-env")
        .await
        .unwrap();
    assert_eq!(
        secret_value(&client, ns, "shop-env", "SENDGRID_API_KEY").await,
        b"SG.test-key"
    );
    assert_eq!(
        secret_value(&client, ns, "shop-env", "SECRET_KEY")
            .await
            .len(),
        48
    );
    let url =
        String::from_utf8(secret_value(&client, ns, "shop-db", "DATABASE_URL").await).unwrap();
    assert!(
        url.ends_with(&format!("@shop-db.{ns}.svc:5432/shop")),
        "{url}"
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs.get("data-shop-db-0").await.unwrap();
    assert_eq!(
        pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_image_bump_migrates_once_then_rolls_the_backend() {
    let (client, namespace, _operator, mut stack) = ready_shop("bump").await;
    let ns = namespace.name.as_str();
    let before = wait_ready(&client, ns, "shop").await;
    let old_revision = before
        .status
        .unwrap()
        .migration
        .unwrap()
        .applied_revision
        .unwrap();
    assert_eq!(migration_jobs(&client, ns, "shop").await.len(), 1);

    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:1.5.0");
    apply_stack(&client, ns, &stack).await;
    let after = wait_ready(&client, ns, "shop").await;
    let migration = after.status.unwrap().migration.unwrap();
    let new_revision = migration.applied_revision.clone().unwrap();
    assert_ne!(new_revision, old_revision);
    assert_eq!(
        migration.target_revision.as_deref(),
        Some(new_revision.as_str())
    );

    let jobs = migration_jobs(&client, ns, "shop").await;
    let mut names: Vec<_> = jobs
        .iter()
        .map(|job| job.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        format!("shop-migrate-{old_revision}"),
        format!("shop-migrate-{new_revision}"),
    ];
    expected.sort();
    assert_eq!(names, expected, "exactly one new migration Job");
    let new_job = jobs
        .iter()
        .find(|job| job.metadata.name.as_deref() == Some(&format!("shop-migrate-{new_revision}")))
        .unwrap();
    let job_image = new_job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(
        job_image.as_deref(),
        Some("ghcr.io/acme/shop-backend:1.5.0")
    );
    let completed = completed_at(new_job);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert_eq!(
        backend_image(&deployments.get("shop-backend").await.unwrap()),
        "ghcr.io/acme/shop-backend:1.5.0"
    );
    // The backend's new ReplicaSet was created only after the Job completed.
    let created = backend_rolled_at(&client, ns, |pod| {
        pod.containers[0].image.as_deref() == Some("ghcr.io/acme/shop-backend:1.5.0")
    })
    .await;
    assert!(
        created.0 >= completed.0,
        "backend rolled at {created:?}, before the migration completed at {completed:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_failed_migration_keeps_the_backend_and_a_retry_token_recovers() {
    let (client, namespace, _operator, mut stack) = ready_shop("failing").await;
    let ns = namespace.name.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let serving = deployments.get("shop-backend").await.unwrap();
    let serving_template = serde_json::to_string(&serving.spec.template).unwrap();

    crate::common::fail_next_migration(&mut stack);
    apply_stack(&client, ns, &stack).await;
    let stalled = crate::common::wait_stalled_by_migration(&client, ns, "shop").await;
    assert_eq!(
        condition(&stalled, "Ready").unwrap(),
        ("False".into(), "MigrationFailed".into())
    );
    assert_eq!(condition(&stalled, "Reconciling"), None);
    let migration = stalled.status.clone().unwrap().migration.unwrap();
    assert_ne!(migration.target_revision, migration.applied_revision);

    let still = deployments.get("shop-backend").await.unwrap();
    assert_eq!(
        serde_json::to_string(&still.spec.template).unwrap(),
        serving_template,
        "pod template untouched"
    );
    assert_eq!(still.metadata.generation, serving.metadata.generation);
    assert_eq!(
        condition(&stalled, "BackendAvailable").unwrap().0,
        "True",
        "the old revision keeps serving"
    );

    stack["spec"]["migrations"]
        .as_object_mut()
        .unwrap()
        .remove("podLabels");
    stack["spec"]["migrations"]["retryToken"] = json!("retry-1");
    apply_stack(&client, ns, &stack).await;
    let recovered = wait_ready(&client, ns, "shop").await;
    let migration = recovered.status.unwrap().migration.unwrap();
    assert_eq!(migration.applied_revision, migration.target_revision);
    assert_eq!(
        backend_image(&deployments.get("shop-backend").await.unwrap()),
        "ghcr.io/acme/shop-backend:2.0.0"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn generated_secrets_survive_restarts_and_spec_changes() {
    let (client, namespace, operator, mut stack) = ready_shop("secrets").await;
    let ns = namespace.name.as_str();
    let read_all = || async {
        (
            secret_value(&client, ns, "shop-env", "SECRET_KEY").await,
            secret_value(&client, ns, "shop-db", "password").await,
            secret_value(&client, ns, "shop-db", "DATABASE_URL").await,
        )
    };
    let generated = read_all().await;

    operator.stop().await;
    let operator = Operator::start(ns).await;
    stack["spec"]["frontend"]["replicas"] = json!(1);
    stack["spec"]["env"][0]["value"] = json!("DEBUG");
    stack["spec"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "SESSION_KEY", "generate": {"length": 24}}));
    apply_stack(&client, ns, &stack).await;
    let changed = wait_ready(&client, ns, "shop").await;
    assert!(changed.metadata.generation.unwrap() > 1);
    assert_eq!(
        read_all().await,
        generated,
        "after a restart and a spec change"
    );
    assert_eq!(
        secret_value(&client, ns, "shop-env", "SESSION_KEY")
            .await
            .len(),
        24,
        "a new key is generated"
    );

    operator.stop().await;
    let _operator = Operator::start(ns).await;
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    assert_eq!(read_all().await, generated, "after a second restart");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_changed_referenced_secret_reaches_the_backend() {
    let (client, namespace, _operator, _stack) = ready_shop("referenced").await;
    let ns = namespace.name.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let checksum = |deployment: Deployment| {
        deployment
            .spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    };
    let before = checksum(deployments.get("shop-backend").await.unwrap());
    assert_eq!(
        secret_value(&client, ns, "shop-env", "SENDGRID_API_KEY").await,
        b"SG.test-key"
    );

    // The user rotates the key in their own Secret, which the stack only
    // references; the operator watches it (no wait for a resync).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .patch(
            "sendgrid",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"api-key": "SG.rotated"}})),
        )
        .await
        .unwrap();
    eventually("the rotated key reaches <stack>-env", LIMIT, || async {
        (secret_value(&client, ns, "shop-env", "SENDGRID_API_KEY").await == b"SG.rotated")
            .then_some(())
    })
    .await;
    eventually("the backend rolls with the new env", LIMIT, || async {
        let now = checksum(deployments.get("shop-backend").await.ok()?);
        (now != before).then_some(())
    })
    .await;
    wait_ready(&client, ns, "shop").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn switched_off_and_deleted_children_go_and_the_database_is_kept_by_default() {
    let (client, namespace, _operator, mut stack) = ready_shop("cleanup").await;
    let ns = namespace.name.as_str();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    stack["spec"].as_object_mut().unwrap().remove("frontend");
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "FrontendAvailable").unwrap(),
        ("True".into(), "NotConfigured".into())
    );
    eventually("frontend Deployment and Service deleted", LIMIT, || async {
        (gone(&deployments, "shop-frontend").await && gone(&services, "shop-frontend").await)
            .then_some(())
    })
    .await;
    assert!(!gone(&deployments, "shop-backend").await);

    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    assert!(
        ready.finalizers().is_empty(),
        "Retain needs no finalizer: {:?}",
        ready.finalizers()
    );
    stacks
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    eventually("children garbage-collected", LIMIT, || async {
        (gone(&deployments, "shop-backend").await
            && gone(&statefulsets, "shop-db").await
            && gone(&secrets, "shop-env").await
            && migration_jobs(&client, ns, "shop").await.is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        kept(&pvcs, "data-shop-db-0").await,
        "Retain keeps the volume"
    );
    assert!(
        kept(&secrets, "shop-db").await,
        "Retain keeps the credentials"
    );

    let mut deleting = example("temp");
    deleting["spec"]["database"]["managed"]["deletionPolicy"] = json!("Delete");
    apply_stack(&client, ns, &deleting).await;
    let ready = wait_ready(&client, ns, "temp").await;
    assert_eq!(ready.finalizers(), [DATABASE_FINALIZER]);
    // Ready means the volume already goes with the stack: deleting it at
    // once must not race the StatefulSet controller.
    let volume = pvcs.get("data-temp-db-0").await.unwrap();
    assert!(
        volume
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "AppStack" && Some(&owner.uid) == ready.uid().as_ref()),
        "under Delete the stack owns its volume: {:?}",
        volume.owner_references()
    );
    stacks
        .delete("temp", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "volume and credentials deleted with deletionPolicy: Delete",
        LIMIT,
        || async {
            (gone(&pvcs, "data-temp-db-0").await && gone(&secrets, "temp-db").await).then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn switching_back_to_retain_keeps_the_database_even_when_deleted_at_once() {
    let (client, namespace) = setup("retain-again").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["database"]["managed"]["deletionPolicy"] = json!("Delete");
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(ready.finalizers(), [DATABASE_FINALIZER]);

    // The user changes their mind and deletes the stack in the same breath,
    // before the operator has reconciled the change.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    stack["spec"]["database"]["managed"]["deletionPolicy"] = json!("Retain");
    apply_stack(&client, ns, &stack).await;
    stacks
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the stack and its StatefulSet deleted", LIMIT, || async {
        (gone(&stacks, "shop").await && gone(&statefulsets, "shop-db").await).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let volume = pvcs
        .get_opt("data-shop-db-0")
        .await
        .unwrap()
        .expect("Retain, asked for last, keeps the volume");
    assert!(
        volume.metadata.deletion_timestamp.is_none() && volume.owner_references().is_empty(),
        "Retain, asked for last, keeps the volume unowned: {:?}",
        volume.metadata
    );
    assert!(
        kept(&secrets, "shop-db").await,
        "Retain keeps the credentials"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn service_monitor_follows_the_prometheus_operator_api() {
    let (client, namespace) = setup("monitoring").await;
    let ns = namespace.name.as_str();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = "servicemonitors.monitoring.coreos.com";
    if !gone(&crds, crd_name).await {
        crds.delete(crd_name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("ServiceMonitor CRD removed", LIMIT, || async {
            gone(&crds, crd_name).await.then_some(())
        })
        .await;
    }
    let _operator = Operator::start(ns).await;
    apply_stack(&client, ns, &example("shop")).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "MonitoringReady").unwrap(),
        ("False".into(), "CRDNotInstalled".into())
    );

    crate::common::apply_crds_served(
        &client,
        &[include_str!(
            "../fixtures/crds/monitoring.coreos.com_servicemonitors.yaml"
        )],
    )
    .await;
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let monitors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "servicemonitors"),
    );
    let monitor = eventually(
        "ServiceMonitor created without a restart",
        LIMIT,
        || async { monitors.get_opt("shop-backend").await.ok().flatten() },
    )
    .await;
    assert_eq!(
        monitor.metadata.labels.as_ref().unwrap()["release"],
        "prometheus"
    );
    assert_eq!(monitor.data["spec"]["endpoints"][0]["path"], "/metrics");
    wait_for(&client, ns, "shop", "MonitoringReady", "True", None).await;
    wait_ready(&client, ns, "shop").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_converged_stack_costs_no_writes_and_no_requests() {
    let (client, namespace) = setup("nowrites").await;
    let ns = namespace.name.as_str();
    let audit = AuditLog::open();
    let start = audit.mark();
    let operator = Operator::start(ns).await;
    // beta's quantities are ones the API server rewrites: 0.5 CPU is stored
    // as 500m and 0.5Gi as 512Mi, which must not read as drift.
    let mut beta = example("beta");
    beta["spec"]["backend"]["resources"]["requests"]["cpu"] = json!("0.5");
    beta["spec"]["database"]["managed"]["storage"]["size"] = json!("0.5Gi");
    for stack in [example("alpha"), beta] {
        apply_stack(&client, ns, &stack).await;
    }
    for name in ["alpha", "beta"] {
        wait_ready(&client, ns, name).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let stored = deployments.get("beta-backend").await.unwrap();
    let stored_cpu = &stored.spec.template.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["cpu"];
    assert_eq!(stored_cpu.0, "500m", "the API server canonicalizes 0.5");
    // Before stopping: no status write held back (a later process would
    // send it, and count as writing to a converged stack).
    eventually("no status write held back", LIMIT, || async {
        let metrics = operator.metrics().await;
        (crate::common::sample(&metrics, "appstack_status_writes_deferred") == Some(0.0))
            .then_some(())
    })
    .await;
    let user = operator.user.clone();
    operator.stop().await;
    assert!(
        !audit.writes_since(start, &user, ns).is_empty(),
        "the audit log sees the operator's writes"
    );

    // A new process reconciles every stack it finds, and writes nothing.
    let mark = audit.mark();
    let operator = Operator::start(ns).await;
    eventually("both stacks reconciled again", LIMIT, || async {
        let lines = operator.lines();
        ["alpha", "beta"]
            .iter()
            .all(|name| {
                lines.iter().any(|line| {
                    line.contains("reconciled") && line.contains(&format!("/{name}.{ns}"))
                })
            })
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = audit.writes_since(mark, &operator.user, ns);
    assert!(
        writes.is_empty(),
        "a converged re-reconcile wrote: {writes:#?}"
    );

    // A pass over a converged stack reads the caches only: annotating the
    // stacks (no spec change) wakes a pass each, which sends no request.
    // The only requests the process may send meanwhile look for optional
    // APIs not served yet (one every 10 s, counted on their own).
    let count = |metrics: &str, prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let requests = |metrics: &str| count(metrics, "rest_client_requests_total{");
    let discovery = |metrics: &str| count(metrics, "appstack_api_discovery_requests_total{");
    let passes = |metrics: &str| {
        crate::common::sample(
            metrics,
            r#"controller_runtime_reconcile_total{controller="appstack",result="success"}"#,
        )
        .unwrap_or(0.0)
    };
    let before = operator.metrics().await;
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    for name in ["alpha", "beta"] {
        stacks
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "yes"}}})),
            )
            .await
            .unwrap();
    }
    eventually("a pass over each touched stack", LIMIT, || async {
        let metrics = operator.metrics().await;
        (passes(&metrics) >= passes(&before) + 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = operator.metrics().await;
    assert!(
        requests(&after) - requests(&before) <= discovery(&after) - discovery(&before),
        "passes over converged stacks sent requests: {} requests, {} of them discovery",
        requests(&after) - requests(&before),
        discovery(&after) - discovery(&before)
    );
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn moving_to_an_external_database_migrates_it_before_the_backend_follows() {
    let (client, namespace, operator, mut stack) = ready_shop("external").await;
    let ns = namespace.name.as_str();
    let managed = wait_ready(&client, ns, "shop").await;
    let managed_revision = managed.status.unwrap().migration.unwrap().applied_revision;

    // The new database, with the revision its (real) migration would leave.
    let server = Postgres::start();
    server
        .create_user_and_database("app", "app-password", "shop")
        .await;
    server
        .execute(
            "shop",
            "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
             INSERT INTO alembic_version VALUES ('4b1d0c8e9f2a');
             GRANT SELECT ON alembic_version TO app",
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    crate::common::create_secret(
        &client,
        ns,
        "prod-db",
        "DATABASE_URL",
        &server.url("app", "app-password", "shop", "sslmode=require"),
    )
    .await;
    let audit = AuditLog::open();
    let mark = audit.mark();
    stack["spec"]["database"] =
        json!({"external": {"urlSecretRef": {"name": "prod-db", "key": "DATABASE_URL"}}});
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "DatabaseReady").unwrap(),
        ("True".into(), "ExternalDatabase".into())
    );

    // Another database is another revision: a new Job migrated it...
    let migration = ready.status.clone().unwrap().migration.unwrap();
    let external_revision = migration.applied_revision.clone().unwrap();
    assert_ne!(Some(&external_revision), managed_revision.as_ref());
    assert_eq!(migration.target_revision, migration.applied_revision);
    assert_eq!(migration.schema_revision.as_deref(), Some("4b1d0c8e9f2a"));
    let job_name = format!("shop-migrate-{external_revision}");
    let jobs = migration_jobs(&client, ns, "shop").await;
    let job = jobs
        .iter()
        .find(|job| job.metadata.name.as_deref() == Some(job_name.as_str()))
        .expect("a migration Job for the external database");
    let completed = completed_at(job);

    // ...before the backend's pod template moved to the new database.
    let writes = audit.writes_since(mark, &operator.user, ns);
    let position = |write: &str| writes.iter().position(|line| line == write);
    let created = position(&format!("create jobs/ {job_name}")).expect("the Job was created");
    let moved = position("patch deployments/ shop-backend").expect("the backend was patched");
    assert!(
        created < moved,
        "backend patched before the migration: {writes:#?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let backend = deployments.get("shop-backend").await.unwrap();
    let env = backend.spec.template.spec.clone().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let url = env.iter().find(|var| var.name == "DATABASE_URL").unwrap();
    let reference = url.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("prod-db", "DATABASE_URL")
    );
    let rolled = backend_rolled_at(&client, ns, |pod| {
        serde_json::to_string(pod)
            .unwrap()
            .contains(r#""name":"prod-db""#)
    })
    .await;
    assert!(
        rolled.0 >= completed.0,
        "backend rolled at {rolled:?}, before the migration completed at {completed:?}"
    );

    // The managed database goes; its credentials stay (Retain).
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually("managed database removed", LIMIT, || async {
        (gone(&statefulsets, "shop-db").await && gone(&services, "shop-db").await).then_some(())
    })
    .await;
    assert!(
        !gone(&secrets, "shop-db").await,
        "Retain keeps the old credentials"
    );
}
