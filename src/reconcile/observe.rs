//! Observe: what each stage's children say about the stage, read from the
//! caches, and in their pods' words when they cannot run. Pure: no request
//! is sent.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::DynamicObject;

mod migrations;

pub use self::migrations::{
    PostDeployGate, View, post_deploy_gate, stale, step_job_name, step_job_started,
};

use super::pods;
use super::status::Report;
use crate::api::conditions::{self, Check, reasons, types};
use crate::api::crd::{AppStackStatus, GatewayRef, MigrationStatus};
use crate::api::stack::{Database, Route, ValidatedStack};
use crate::children::expose::exposure_name;
use crate::children::{
    self, Component, ConfigSource, ConfigVersions, LABEL_COMPONENT, ObjectVersion, SourceVersion,
    database_name, workload::workload_name,
};
use crate::runtime::cache::Caches;
use crate::runtime::cache::slim::PROGRESS_DEADLINE_EXCEEDED;
use crate::stages::Stage;

/// The report of a stage the pass reached, after its writes, from the
/// caches. `view` is what the stages of the migrations read besides: the
/// target revision, what the rollback guard decided, the migration status
/// so far. The pass completes some reports beyond the caches (see
/// [`super::report`]).
pub fn check(stage: Stage, stack: &ValidatedStack, caches: &Caches, view: &View<'_>) -> Report {
    let namespace = stack.namespace.as_str();
    let check = match stage {
        Stage::Secrets => match &stack.database {
            // Written or found by this stage, unless deleted since it was
            // read: the pass the deletion wakes decides what that means.
            Database::Managed(_)
                if caches
                    .secrets
                    .metadata(namespace, &database_name(stack))
                    .is_none() =>
            {
                let name = database_name(stack);
                Check::pending(
                    reasons::WAITING_FOR_SECRETS,
                    format!("Secret {name:?} was deleted while this pass read it; looking again"),
                )
            }
            _ => Check::ok(
                reasons::SECRETS_RESOLVED,
                "env and database credentials are in place",
            ),
        },
        Stage::Database => match &stack.database {
            Database::Managed(_) => {
                let name = database_name(stack);
                match caches.statefulsets.get(namespace, &name) {
                    None => Check::pending(
                        reasons::DATABASE_STARTING,
                        format!("StatefulSet {name} is being created"),
                    ),
                    Some(statefulset) => match statefulset_check(&statefulset) {
                        check if check.ok && !volume_in_line(stack, caches) => Check::pending(
                            reasons::DATABASE_STARTING,
                            format!(
                                "waiting for volume {} to be owned by the stack (deletionPolicy: Delete)",
                                children::database::volume_claim_name(stack)
                            ),
                        ),
                        check => with_pod_trouble(
                            check,
                            &component_pods(stack, caches, Component::Database),
                        ),
                    },
                }
            }
            Database::External { url_secret_ref } => Check::ok(
                reasons::EXTERNAL_DATABASE,
                format!("using the database URL in Secret {:?}", url_secret_ref.name),
            ),
        },
        Stage::Approval => return migrations::approval(stack, view),
        Stage::Backup => return migrations::backup(stack, caches, view),
        Stage::Migrations => return migrations::migrations(stack, caches, view),
        Stage::PostDeploy => return migrations::post_deploy(stack, caches, view),
        Stage::Backend => workload_check(stack, caches, Component::Backend),
        Stage::Frontend => match &stack.frontend {
            Some(_) => workload_check(stack, caches, Component::Frontend),
            None => Check::ok(reasons::NOT_CONFIGURED, "no frontend in the spec"),
        },
        Stage::Expose => expose_check(stack, caches),
        Stage::Monitoring => match (
            &stack.service_monitor_labels,
            caches.service_monitors.served(),
        ) {
            (None, _) => Check::ok(reasons::DISABLED, "no ServiceMonitor asked for"),
            (Some(_), false) => Check::pending(
                reasons::CRD_NOT_INSTALLED,
                "the monitoring.coreos.com/v1 ServiceMonitor API is not served; install the Prometheus Operator CRDs",
            ),
            (Some(_), true) => Check::ok(
                reasons::SERVICE_MONITOR_READY,
                "ServiceMonitor for the backend is applied",
            ),
        },
    };
    check.into()
}

/// The Ingress once written; the HTTPRoute by what the Gateway says of it.
fn expose_check(stack: &ValidatedStack, caches: &Caches) -> Check {
    let Some(expose) = &stack.expose else {
        return Check::ok(reasons::NOT_CONFIGURED, "no expose in the spec");
    };
    let name = exposure_name(stack);
    match &expose.route {
        Route::Ingress(_) => match caches.ingresses.get(&stack.namespace, &name) {
            Some(ingress) => ingress_check(&ingress, &expose.url()),
            None => Check::pending(
                reasons::INGRESS_PENDING,
                format!("Ingress {name} is being created"),
            ),
        },
        Route::Gateway(gateway) => {
            if !caches.http_routes.served() {
                return Check::pending(
                    reasons::CRD_NOT_INSTALLED,
                    "the gateway.networking.k8s.io/v1 HTTPRoute API is not served; install the Gateway API CRDs",
                );
            }
            match caches.http_routes.get(&stack.namespace, &name) {
                Some(route) => route_check(&route, gateway, &expose.url()),
                None => Check::pending(
                    reasons::WAITING_FOR_GATEWAY,
                    format!("HTTPRoute {name} is being created"),
                ),
            }
        }
    }
}

/// An Ingress routes as soon as it is written; the address its controller
/// reports, if any, is worth a mention.
pub fn ingress_check(ingress: &Ingress, url: &str) -> Check {
    let addresses: Vec<String> = ingress
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
        .collect();
    let address = if addresses.is_empty() {
        "no ingress controller has reported an address yet".to_string()
    } else {
        format!("the ingress controller reports {}", addresses.join(", "))
    };
    Check::ok(
        reasons::INGRESS_READY,
        format!("Ingress {} routes {url}; {address}", ingress.name_any()),
    )
}

/// An HTTPRoute is ready when the Gateway it attaches to has accepted it
/// and resolved its Services, as the gateway controller reports in the
/// route's `status.parents` for the route's current generation.
pub fn route_check(route: &DynamicObject, gateway: &GatewayRef, url: &str) -> Check {
    let route_namespace = route.namespace().unwrap_or_default();
    let gateway_namespace = gateway.namespace.as_deref().unwrap_or(&route_namespace);
    let generation = route.metadata.generation;
    let parents = route.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ours = parents.iter().find(|parent| {
        let reference = &parent["parentRef"];
        reference["name"].as_str() == Some(gateway.name.as_str())
            && reference["namespace"].as_str().unwrap_or(&route_namespace) == gateway_namespace
            && reference["sectionName"].as_str() == gateway.section_name.as_deref()
    });
    let gateway_name = format!("Gateway {gateway_namespace}/{}", gateway.name);
    let Some(parent) = ours else {
        return Check::pending(
            reasons::WAITING_FOR_GATEWAY,
            format!(
                "no gateway controller has reported on HTTPRoute {} for {gateway_name} yet",
                route.name_any()
            ),
        );
    };
    let conditions = parent["conditions"].as_array().cloned().unwrap_or_default();
    let condition = |type_: &str| {
        conditions
            .iter()
            .find(|condition| condition["type"] == type_)
            .filter(|condition| {
                condition["observedGeneration"]
                    .as_i64()
                    .is_none_or(|observed| Some(observed) >= generation)
            })
    };
    let said = |condition: &serde_json::Value| {
        format!(
            "{}: {}",
            condition["reason"].as_str().unwrap_or("no reason"),
            condition["message"].as_str().unwrap_or("")
        )
    };
    match (condition("Accepted"), condition("ResolvedRefs")) {
        (Some(accepted), _) if accepted["status"] == "False" => Check::pending(
            reasons::ROUTE_NOT_ACCEPTED,
            format!(
                "{gateway_name} does not accept HTTPRoute {}: {}",
                route.name_any(),
                said(accepted)
            ),
        ),
        (_, Some(resolved)) if resolved["status"] == "False" => Check::pending(
            reasons::ROUTE_REFS_UNRESOLVED,
            format!(
                "{gateway_name} cannot resolve the Services of HTTPRoute {}: {}",
                route.name_any(),
                said(resolved)
            ),
        ),
        (Some(accepted), Some(resolved))
            if accepted["status"] == "True" && resolved["status"] == "True" =>
        {
            Check::ok(
                reasons::ROUTE_ACCEPTED,
                format!(
                    "{gateway_name} accepted HTTPRoute {} for {url}",
                    route.name_any()
                ),
            )
        }
        _ => Check::pending(
            reasons::WAITING_FOR_GATEWAY,
            format!(
                "{gateway_name} has not reported Accepted and ResolvedRefs for generation {} of HTTPRoute {}",
                generation.unwrap_or_default(),
                route.name_any()
            ),
        ),
    }
}

/// The secrets stage's check when generated values were lost: `lost` now
/// (generated anew on this pass), or earlier for the same generation, as
/// the previous status says: the loss stays in `SecretsReady`'s message
/// until the spec changes, so it is not gone with the next pass.
pub fn generated_lost(
    check: Check,
    stack: &ValidatedStack,
    lost: &[String],
    previous: Option<&AppStackStatus>,
) -> Check {
    if !check.ok {
        return check;
    }
    if !lost.is_empty() {
        return Check::ok(
            reasons::GENERATED_SECRET_LOST,
            format!(
                "{}; Secret {} had lost the generated {}, which were generated anew (the \
                 backend rolled onto the new values)",
                check.message,
                children::env_name(stack),
                lost.join(", ")
            ),
        );
    }
    match conditions::condition(previous, types::SECRETS_READY) {
        Some(before)
            if before.reason == reasons::GENERATED_SECRET_LOST
                && before.observed_generation == Some(stack.generation) =>
        {
            Check::ok(reasons::GENERATED_SECRET_LOST, before.message.clone())
        }
        _ => check,
    }
}

/// The versions of the backend's configuration sources, as cached: what
/// its pods roll on ([`children::CONFIG_CHECKSUM_ANNOTATION`]).
pub fn config_versions(stack: &ValidatedStack, caches: &Caches) -> ConfigVersions {
    let namespace = stack.namespace.as_str();
    fn version_of<K: kube::Resource>(object: &K) -> ObjectVersion {
        ObjectVersion {
            uid: object.meta().uid.clone().unwrap_or_default(),
            resource_version: object.meta().resource_version.clone().unwrap_or_default(),
        }
    }
    ConfigVersions(
        children::config_sources(stack)
            .into_iter()
            .map(|(source, name)| {
                let version = match source {
                    ConfigSource::ConfigMap => caches
                        .config_maps
                        .get(namespace, &name)
                        .map(|object| version_of(object.as_ref())),
                    ConfigSource::Secret => caches
                        .secrets
                        .get(namespace, &name)
                        .map(|object| version_of(object.as_ref())),
                };
                SourceVersion {
                    source,
                    name,
                    version,
                }
            })
            .collect(),
    )
}

/// What the children of a stage the pass did not reach are observed to
/// be, if they exist: the workloads keep serving what they last ran.
pub fn unreached(stage: Stage, stack: &ValidatedStack, caches: &Caches) -> Option<Check> {
    let component = match stage {
        Stage::Backend => Component::Backend,
        Stage::Frontend if stack.frontend.is_some() => Component::Frontend,
        _ => return None,
    };
    let name = workload_name(stack, component);
    let deployment = caches.deployments.get(&stack.namespace, &name)?;
    Some(deployment_check(&deployment))
}

/// Under `deletionPolicy: Delete` the volume must exist and be owned by the
/// stack before the stack is ready, so it goes with the stack.
fn volume_in_line(stack: &ValidatedStack, caches: &Caches) -> bool {
    if !stack.deletes_database_with_stack() {
        return true;
    }
    let name = children::database::volume_claim_name(stack);
    caches
        .volumes
        .get(&stack.namespace, &name)
        .is_some_and(|volume| {
            children::database::volume_owner_references(stack, volume.owner_references()).is_none()
        })
}

fn workload_check(stack: &ValidatedStack, caches: &Caches, component: Component) -> Check {
    let name = workload_name(stack, component);
    match caches.deployments.get(&stack.namespace, &name) {
        Some(deployment) => with_pod_trouble(
            deployment_check(&deployment),
            &component_pods(stack, caches, component),
        ),
        None => Check::pending(
            reasons::ROLLING_OUT,
            format!("Deployment {name} is being created"),
        ),
    }
}

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The cached pods of one component of the stack.
fn component_pods(stack: &ValidatedStack, caches: &Caches, component: Component) -> Vec<Arc<Pod>> {
    caches
        .pods
        .of_stack(&stack.namespace, &stack.name)
        .into_iter()
        .filter(|pod| {
            pod.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(component.as_str())
        })
        .collect()
}

/// A component not done yet, said in the words of whatever keeps one of
/// its pods from running: the kubelet's reason and message, naming the
/// pod. A rollout already failed for good stays failed, with that cause.
fn with_pod_trouble(check: Check, pods: &[Arc<Pod>]) -> Check {
    if check.ok {
        return check;
    }
    match pods::first_trouble(pods.iter().map(AsRef::as_ref)) {
        None => check,
        Some(trouble) if check.terminal => Check::failed(
            trouble.reason,
            format!("{}; {}", check.message, trouble.message),
        ),
        Some(trouble) => trouble,
    }
}

/// The tail of what the newest failed migration pod printed.
fn migration_output(pods: &[Arc<Pod>]) -> Option<String> {
    let mut failed: Vec<&Arc<Pod>> = pods.iter().collect();
    failed.sort_by_key(|pod| std::cmp::Reverse(pod.creation_timestamp()));
    failed.into_iter().find_map(|pod| pods::failure_output(pod))
}

/// The migration stage: done when the target revision was applied before
/// (its Job may be gone) or its Job succeeded. The schema revision read
/// after the applied revision is kept; a newly applied one is read again.
pub fn migration_check(
    revision: &str,
    job_name: &str,
    job: Option<&Job>,
    previous: Option<&MigrationStatus>,
    output: Option<&str>,
) -> (Check, MigrationStatus) {
    let previous = previous.cloned().unwrap_or_default();
    let mut status = MigrationStatus {
        target_revision: Some(revision.into()),
        job_name: Some(job_name.into()),
        attempts: job.map(job_attempts).or(previous.attempts),
        ..previous.clone()
    };
    let applied = || {
        Check::ok(
            reasons::MIGRATION_SUCCEEDED,
            format!("revision {revision} applied"),
        )
    };
    if previous.applied_revision.as_deref() == Some(revision) {
        return (applied(), status);
    }
    let check = match job.map(job_state) {
        None => Check::pending(
            reasons::MIGRATION_RUNNING,
            format!("starting Job {job_name} for revision {revision}"),
        ),
        Some(JobState::Succeeded) => {
            status.applied_revision = Some(revision.into());
            status.schema_revision = None;
            applied()
        }
        Some(JobState::Failed(why)) => Check::failed(
            reasons::MIGRATION_FAILED,
            format!(
                "Job {job_name} failed: {why}; the backend keeps running the last migrated revision; change the image or retryToken to run again{}",
                output
                    .map(|output| format!("; the migration printed:\n{output}"))
                    .unwrap_or_default()
            ),
        ),
        Some(JobState::Running) => Check::pending(
            reasons::MIGRATION_RUNNING,
            format!("Job {job_name} is running revision {revision}"),
        ),
    };
    (check, status)
}

/// The name of a Job of the migrations (a migration, a downgrade, a
/// post-deploy step) of the stack other than `current` that is still
/// running: the next one waits for it.
pub fn earlier_migration_running(
    stack: &ValidatedStack,
    caches: &Caches,
    current: &str,
) -> Option<String> {
    caches
        .jobs
        .of_stack(&stack.namespace, &stack.name)
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|owner| owner.uid == stack.uid)
                && job.labels().get(LABEL_COMPONENT).map(String::as_str)
                    == Some(Component::Migration.as_str())
        })
        .find(|job| job.name_any() != current && !job_finished(job))
        .map(|job| job.name_any())
}

/// Where a Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for condition in conditions
        .iter()
        .filter(|condition| condition.status == "True")
    {
        match condition.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let why = condition.reason.clone().unwrap_or_else(|| "failed".into());
                return JobState::Failed(why);
            }
            _ => {}
        }
    }
    JobState::Running
}

pub fn job_finished(job: &Job) -> bool {
    !matches!(job_state(job), JobState::Running)
}

fn job_attempts(job: &Job) -> i32 {
    job.status.as_ref().map_or(0, |status| {
        status.failed.unwrap_or(0) + status.succeeded.unwrap_or(0) + status.active.unwrap_or(0)
    })
}

pub fn statefulset_check(statefulset: &StatefulSet) -> Check {
    let wanted = statefulset.spec.replicas.unwrap_or(1);
    let status = statefulset.status.clone().unwrap_or_default();
    let current = status.observed_generation >= statefulset.metadata.generation;
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if current && ready >= wanted && updated >= wanted {
        Check::ok(
            reasons::DATABASE_READY,
            "PostgreSQL is accepting connections (the pod's pg_isready probe passes)",
        )
    } else {
        Check::pending(
            reasons::DATABASE_STARTING,
            format!("{ready} of {wanted} database replicas ready"),
        )
    }
}

pub fn deployment_check(deployment: &Deployment) -> Check {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions.iter().any(|condition| {
        condition.type_.as_deref() == Some("Progressing")
            && condition.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
    }) {
        return Check::failed(
            reasons::ROLLOUT_FAILED,
            format!(
                "Deployment {} exceeded its progress deadline",
                deployment.name_any()
            ),
        );
    }
    let current = status.observed_generation >= deployment.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if current && updated == wanted && available == wanted && total == wanted {
        let image = deployment
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.containers.first())
            .and_then(|container| container.image.clone())
            .unwrap_or_default();
        Check::ok(
            reasons::AVAILABLE,
            format!("{available} of {wanted} replicas of {image} available"),
        )
    } else {
        Check::pending(
            reasons::ROLLING_OUT,
            format!("{updated} of {wanted} replicas updated, {available} available"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-migrate-1"},
            "status": {"conditions": conditions, "succeeded": 1}
        }))
        .unwrap()
    }

    fn route(generation: i64, parents: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop", "namespace": "prod", "generation": generation},
            "spec": {},
            "status": {"parents": parents}
        }))
        .unwrap()
    }

    fn parent(
        gateway: serde_json::Value,
        accepted: &str,
        resolved: &str,
        generation: i64,
    ) -> serde_json::Value {
        serde_json::json!({
            "parentRef": gateway,
            "controllerName": "example.com/gateway",
            "conditions": [
                {"type": "Accepted", "status": accepted, "reason": if accepted == "True" {"Accepted"} else {"NotAllowedByListeners"},
                 "message": "", "observedGeneration": generation, "lastTransitionTime": "2024-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": resolved, "reason": if resolved == "True" {"ResolvedRefs"} else {"BackendNotFound"},
                 "message": "service missing", "observedGeneration": generation, "lastTransitionTime": "2024-01-01T00:00:00Z"},
            ]
        })
    }

    #[test]
    fn a_route_is_ready_once_its_gateway_accepted_it_at_its_generation() {
        let gateway = GatewayRef {
            name: "public".into(),
            namespace: Some("gateways".into()),
            section_name: Some("https".into()),
        };
        let ours = serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                       "name": "public", "namespace": "gateways", "sectionName": "https"});
        let url = "https://shop.example.com";
        let check = |route: DynamicObject| route_check(&route, &gateway, url);

        let waiting = check(route(1, serde_json::json!([])));
        assert_eq!(
            (waiting.ok, waiting.reason),
            (false, reasons::WAITING_FOR_GATEWAY)
        );

        let accepted = check(route(
            2,
            serde_json::json!([parent(ours.clone(), "True", "True", 2)]),
        ));
        assert_eq!(
            (accepted.ok, accepted.reason),
            (true, reasons::ROUTE_ACCEPTED)
        );
        assert!(
            accepted.message.contains("Gateway gateways/public"),
            "{}",
            accepted.message
        );

        let stale = check(route(
            3,
            serde_json::json!([parent(ours.clone(), "True", "True", 2)]),
        ));
        assert_eq!(
            (stale.ok, stale.reason),
            (false, reasons::WAITING_FOR_GATEWAY)
        );

        let refused = check(route(
            2,
            serde_json::json!([parent(ours.clone(), "False", "True", 2)]),
        ));
        assert_eq!(
            (refused.ok, refused.reason),
            (false, reasons::ROUTE_NOT_ACCEPTED)
        );
        assert!(refused.message.contains("NotAllowedByListeners"));

        let unresolved = check(route(
            2,
            serde_json::json!([parent(ours.clone(), "True", "False", 2)]),
        ));
        assert_eq!(
            (unresolved.ok, unresolved.reason),
            (false, reasons::ROUTE_REFS_UNRESOLVED)
        );
        assert!(unresolved.message.contains("service missing"));

        let other = serde_json::json!({"name": "internal", "namespace": "gateways", "sectionName": "https"});
        let elsewhere = check(route(
            2,
            serde_json::json!([parent(other, "True", "True", 2)]),
        ));
        assert_eq!(
            (elsewhere.ok, elsewhere.reason),
            (false, reasons::WAITING_FOR_GATEWAY),
            "another Gateway's acceptance is not ours"
        );
    }

    #[test]
    fn an_ingress_is_ready_once_written_and_names_its_address() {
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }))
        .unwrap();
        let check = ingress_check(&ingress, "https://shop.example.com");
        assert!(check.ok);
        assert!(check.message.contains("203.0.113.7"), "{}", check.message);
    }

    #[test]
    fn an_applied_revision_is_never_run_again_and_a_failure_is_terminal() {
        let applied = MigrationStatus {
            applied_revision: Some("r1".into()),
            ..MigrationStatus::default()
        };
        let (check, status) = migration_check("r1", "shop-migrate-r1", None, Some(&applied), None);
        assert!(check.ok, "a cleaned-up Job of an applied revision is fine");
        assert_eq!(status.applied_revision.as_deref(), Some("r1"));

        let complete = job(serde_json::json!([{"type": "Complete", "status": "True"}]));
        let (check, status) = migration_check("r2", "j", Some(&complete), Some(&applied), None);
        assert!(check.ok);
        assert_eq!(status.applied_revision.as_deref(), Some("r2"));

        let failed = job(
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
        );
        let (check, status) = migration_check("r2", "j", Some(&failed), Some(&applied), None);
        assert!(!check.ok && check.terminal);
        assert_eq!(check.reason, reasons::MIGRATION_FAILED);
        assert_eq!(
            status.applied_revision.as_deref(),
            Some("r1"),
            "the backend keeps r1"
        );
    }

    #[test]
    fn a_loss_stays_in_secrets_ready_until_the_spec_changes() {
        use crate::api::stack::tests::example;
        use crate::reconcile::status::{Observation, desired_status};
        use k8s_openapi::jiff::Timestamp;
        let stack = example();
        let resolved = || Check::ok(reasons::SECRETS_RESOLVED, "in place");
        let lost = generated_lost(resolved(), &stack, &["SECRET_KEY".into()], None);
        assert_eq!(lost.reason, reasons::GENERATED_SECRET_LOST);
        assert!(lost.ok);
        assert!(
            lost.message
                .contains("shop-env had lost the generated SECRET_KEY"),
            "{}",
            lost.message
        );
        let status_with = |check: Check, generation: i64| {
            let mut observation = Observation::default();
            observation.record(crate::stages::Stage::Secrets, check);
            desired_status(&observation, generation, None, Timestamp::now())
        };
        let after = status_with(lost.clone(), stack.generation);
        let kept = generated_lost(resolved(), &stack, &[], Some(&after));
        assert_eq!(kept, lost, "the next pass keeps saying it");
        let earlier = status_with(lost, stack.generation - 1);
        assert_eq!(
            generated_lost(resolved(), &stack, &[], Some(&earlier)),
            resolved(),
            "a spec change clears it"
        );
    }
}

#[cfg(test)]
mod post_deploy_tests {
    use std::time::Duration;

    use kube::runtime::watcher::Event;

    use super::*;
    use crate::api::stack::tests::example_with_migrations;
    use crate::runtime::cache::slim::slimmed;

    /// A Deployment of `replicas` rolled out at `completed`, as its watch
    /// shows it.
    fn rolled_out(name: &str, replicas: i32, completed: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "prod", "generation": 1},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": replicas,
                       "updatedReplicas": replicas, "availableReplicas": replicas,
                       "readyReplicas": replicas,
                       "conditions": [
                           {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                            "lastUpdateTime": completed, "lastTransitionTime": completed},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                            "lastUpdateTime": completed, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_post_deploy_step_soaks_from_when_the_cached_rollouts_completed() {
        let stack = example_with_migrations(
            "    postDeploy:\n      command: [\"alembic\", \"upgrade\", \"head\"]\n      after: 10m\n",
        );
        assert!(stack.migration.as_ref().unwrap().post_deploy().is_some());
        let (caches, _) = Caches::new();
        for deployment in [
            rolled_out("shop-backend", 2, "2026-01-01T00:05:00Z"),
            rolled_out("shop-frontend", 2, "2026-01-01T00:03:00Z"),
        ] {
            caches
                .deployments
                .apply_event(Event::Apply(slimmed(deployment)));
        }
        let at = |time: &str| post_deploy_gate(&stack, &caches, time.parse().unwrap());
        assert_eq!(
            at("2026-01-01T00:10:00Z"),
            Some(PostDeployGate::Soak(Duration::from_secs(300))),
            "10 minutes after the later rollout completed"
        );
        assert_eq!(at("2026-01-01T00:15:00Z"), Some(PostDeployGate::Due));
    }
}
