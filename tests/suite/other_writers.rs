//! Other writers on the real local control plane: what the operator owns
//! and someone else changes or deletes comes back within seconds, through
//! the watch of that kind (a Ready stack's periodic resync is 5 minutes
//! away); lost generated values are replaced loudly, lost database
//! credentials are never replaced by ones that cannot connect; fields other
//! controllers own are left to them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{
    AuditLog, LIMIT, Operator, apply_stack, condition, condition_message, eventually, example,
    ready_shop, setup, wait_for, wait_ready,
};
use appstack::api::conditions::reasons;
use appstack::api::crd::AppStack;
use appstack::children::CONFIG_CHECKSUM_ANNOTATION;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// How soon a change by someone else is undone. Far below the resync of a
/// Ready stack (5 minutes), so only the watch can have done it; generous
/// for a loaded machine.
const BY_THE_WATCH: Duration = Duration::from_secs(60);

async fn data(client: &Client, namespace: &str, secret: &str) -> BTreeMap<String, Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets
        .get(secret)
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect()
}

fn checksum(deployment: &Deployment) -> String {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
        .clone()
}

/// Warning Events with `reason` about the stack so far.
async fn warnings(client: &Client, namespace: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .filter(|event| event.type_.as_deref() == Some("Warning"))
        .filter_map(|event| event.note)
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn drift_on_owned_objects_is_reverted_by_the_watch() {
    let (client, namespace, operator, _stack) = ready_shop("drift").await;
    let ns = namespace.name.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let by_hand = PatchParams::default();

    // A Deployment scaled by hand.
    deployments
        .patch_scale(
            "shop-backend",
            &by_hand,
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually("the backend scaled back to 2", BY_THE_WATCH, || async {
        let replicas = deployments.get("shop-backend").await.ok()?.spec.replicas;
        (replicas == Some(2)).then_some(())
    })
    .await;

    // A plain and a referenced env value edited in `<stack>-env`.
    config_maps
        .patch(
            "shop-env",
            &by_hand,
            &Patch::Merge(json!({"data": {"LOG_LEVEL": "DEBUG"}})),
        )
        .await
        .unwrap();
    secrets
        .patch(
            "shop-env",
            &by_hand,
            &Patch::Merge(json!({"stringData": {"SENDGRID_API_KEY": "tampered"}})),
        )
        .await
        .unwrap();
    eventually("the env values restored", BY_THE_WATCH, || async {
        let plain = config_maps.get("shop-env").await.ok()?.data?;
        let secret = data(&client, ns, "shop-env").await;
        (plain["LOG_LEVEL"] == "INFO" && secret["SENDGRID_API_KEY"] == b"SG.test-key").then_some(())
    })
    .await;

    // A deleted Service.
    let before = services.get("shop-backend").await.unwrap().uid();
    services
        .delete("shop-backend", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Service recreated", BY_THE_WATCH, || async {
        let now = services.get_opt("shop-backend").await.ok()??.uid();
        (now != before).then_some(())
    })
    .await;
    wait_ready(&client, ns, "shop").await;

    // The current revision's migration Job deleted: it succeeded once, the
    // status remembers it, and it never runs again.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let job = stacks
        .get("shop")
        .await
        .unwrap()
        .status
        .unwrap()
        .migration
        .unwrap();
    let job_name = job.job_name.unwrap();
    let audit = AuditLog::open();
    let mark = audit.mark();
    let seen = operator.passes("shop", ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.delete(&job_name, &DeleteParams::background())
        .await
        .unwrap();
    eventually("a pass after the Job's deletion", BY_THE_WATCH, || async {
        (operator.passes("shop", ns) > seen).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let creations: Vec<String> = audit
        .writes_since(mark, &operator.user, ns)
        .into_iter()
        .filter(|write| write.starts_with("create jobs/"))
        .collect();
    assert!(
        creations.is_empty(),
        "the migration ran again: {creations:?}"
    );
    assert!(jobs.get_opt(&job_name).await.unwrap().is_none());
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "MigrationsApplied").unwrap(),
        ("True".into(), reasons::MIGRATION_SUCCEEDED.into())
    );

    // A deleted `<stack>-env`: referenced values are copied again, the
    // generated one is generated anew, loudly, and the backend rolls.
    let old_env = data(&client, ns, "shop-env").await;
    let old_checksum = checksum(&deployments.get("shop-backend").await.unwrap());
    secrets
        .delete("shop-env", &DeleteParams::default())
        .await
        .unwrap();
    let new_env = eventually("shop-env recreated", BY_THE_WATCH, || async {
        let secret = secrets.get_opt("shop-env").await.ok()??;
        let data: BTreeMap<String, Vec<u8>> = secret
            .data?
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect();
        (data.len() == 2).then_some(data)
    })
    .await;
    assert_eq!(new_env["SENDGRID_API_KEY"], b"SG.test-key");
    assert_ne!(new_env["SECRET_KEY"], old_env["SECRET_KEY"]);
    assert_eq!(new_env["SECRET_KEY"].len(), old_env["SECRET_KEY"].len());
    let lost = eventually("a GeneratedSecretLost warning", BY_THE_WATCH, || async {
        warnings(&client, ns, reasons::GENERATED_SECRET_LOST)
            .await
            .pop()
    })
    .await;
    assert_eq!(
        lost,
        "Secret shop-env lost the generated SECRET_KEY: new values were generated, and the \
         backend rolls onto them"
    );
    eventually(
        "the backend rolls onto the new values",
        BY_THE_WATCH,
        || async {
            let now = checksum(&deployments.get("shop-backend").await.ok()?);
            (now != old_checksum).then_some(())
        },
    )
    .await;
    let ready = wait_ready(&client, ns, "shop").await;
    let secrets_ready = ready
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|condition| condition.type_ == "SecretsReady")
        .unwrap()
        .clone();
    assert_eq!(
        (secrets_ready.status.as_str(), secrets_ready.reason.as_str()),
        ("True", reasons::GENERATED_SECRET_LOST)
    );
    assert!(
        secrets_ready
            .message
            .contains("Secret shop-env had lost the generated SECRET_KEY"),
        "{}",
        secrets_ready.message
    );
    assert_eq!(ready.status.unwrap().generated_env, ["SECRET_KEY"]);
    assert!(operator.logged("reconciled"));
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn lost_database_credentials_are_never_replaced_by_ones_that_cannot_connect() {
    let (client, namespace, _operator, _stack) = ready_shop("credentials").await;
    let ns = namespace.name.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let credentials = secrets.get("shop-db").await.unwrap().data.unwrap();
    let backend = deployments.get("shop-backend").await.unwrap();

    secrets
        .delete("shop-db", &DeleteParams::default())
        .await
        .unwrap();
    let stalled = wait_for(
        &client,
        ns,
        "shop",
        "DatabaseReady",
        "False",
        Some(reasons::CREDENTIALS_LOST),
    )
    .await;
    assert_eq!(
        condition(&stalled, "Stalled").unwrap(),
        ("True".into(), reasons::CREDENTIALS_LOST.into()),
        "nothing changes until someone acts"
    );
    let message = &condition_message(&stalled, "DatabaseReady");
    assert!(
        message.contains("volume \"data-shop-db-0\" still holds the database")
            && message.contains("Restore Secret \"shop-db\""),
        "{message}"
    );
    let warning = eventually("a CredentialsLost warning", BY_THE_WATCH, || async {
        warnings(&client, ns, reasons::CREDENTIALS_LOST).await.pop()
    })
    .await;
    assert_eq!(&warning, message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt("shop-db").await.unwrap().is_none(),
        "no new credentials generated"
    );
    let untouched = deployments.get("shop-backend").await.unwrap();
    assert_eq!(
        untouched.metadata.generation, backend.metadata.generation,
        "the backend did not roll"
    );
    assert_eq!(checksum(&untouched), checksum(&backend));

    // Restored from a backup, as `kubectl create secret` would: data only.
    let restored = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("shop-db".into()),
            ..Default::default()
        },
        data: Some(credentials.clone()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "DatabaseReady").unwrap().1,
        reasons::DATABASE_READY
    );
    let now: BTreeMap<String, ByteString> = secrets.get("shop-db").await.unwrap().data.unwrap();
    assert_eq!(now["password"], credentials["password"]);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn fields_other_controllers_own_are_not_fought_over() {
    let (client, namespace) = setup("others").await;
    let ns = namespace.name.as_str();
    let operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["backend"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let created = deployments.get("shop-backend").await.unwrap();
    assert_eq!(created.spec.replicas, Some(1), "the API server's default");

    // An autoscaler sets the replicas through the scale subresource; other
    // tools annotate the Deployment, its pod template and the Service.
    let audit = AuditLog::open();
    let mark = audit.mark();
    deployments
        .patch_scale(
            "shop-backend",
            &PatchParams {
                field_manager: Some("horizontal-pod-autoscaler".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let tool = PatchParams {
        field_manager: Some("other-tool".into()),
        ..PatchParams::default()
    };
    let note = json!({"metadata": {"annotations": {"example.com/owner": "team-a"}}});
    deployments
        .patch("shop-backend", &tool, &Patch::Merge(&note))
        .await
        .unwrap();
    services
        .patch("shop-backend", &tool, &Patch::Merge(&note))
        .await
        .unwrap();
    deployments
        .patch(
            "shop-backend",
            &tool,
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})),
        )
        .await
        .unwrap();
    // The stack follows the scaled Deployment rather than undoing it.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    eventually("Ready with 3 of 3 backend replicas", LIMIT, || async {
        let stack = stacks.get("shop").await.ok()?;
        let status = stack.status?;
        let backend = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "BackendAvailable")?;
        let ready = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Ready")?;
        (ready.status == "True" && backend.message.starts_with("3 of 3 replicas")).then_some(())
    })
    .await;
    let writes: Vec<String> = audit
        .writes_since(mark, &operator.user, ns)
        .into_iter()
        .filter(|write| write.contains("deployments/") || write.contains("services/"))
        .collect();
    assert!(writes.is_empty(), "the operator fought back: {writes:?}");

    // A spec change makes the operator apply the Deployment again: what the
    // others own stays theirs.
    stack["spec"]["env"][0]["value"] = json!("DEBUG");
    apply_stack(&client, ns, &stack).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually("the new env reaches the ConfigMap", LIMIT, || async {
        (config_maps.get("shop-env").await.ok()?.data?["LOG_LEVEL"] == "DEBUG").then_some(())
    })
    .await;
    wait_ready(&client, ns, "shop").await;
    let applied: Vec<String> = audit
        .writes_since(mark, &operator.user, ns)
        .into_iter()
        .filter(|write| write.starts_with("patch deployments/ shop-backend"))
        .collect();
    assert!(!applied.is_empty(), "the Deployment was applied again");
    let deployment = deployments.get("shop-backend").await.unwrap();
    assert_eq!(deployment.spec.replicas, Some(3));
    assert_eq!(deployment.annotations()["example.com/owner"], "team-a");
    let template = deployment.spec.template.metadata.unwrap();
    assert_eq!(
        template.annotations.unwrap()["kubectl.kubernetes.io/restartedAt"],
        "2026-01-01T00:00:00Z"
    );
    let service = services.get("shop-backend").await.unwrap();
    assert_eq!(service.annotations()["example.com/owner"], "team-a");
}
