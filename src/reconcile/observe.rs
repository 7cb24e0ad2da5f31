//! Observe: what each stage's children say about the stage, read from the
//! caches. Pure: no request is sent.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;

use super::status::{Check, reasons};
use crate::children::{
    self, Component, ConfigSource, ConfigVersions, ObjectVersion, SourceVersion, database_name,
    workload::workload_name,
};
use crate::crd::MigrationStatus;
use crate::runtime::cache::Caches;
use crate::stack::{Database, ValidatedStack};
use crate::stages::Stage;

/// The check of a stage the pass reached, after its writes, from the
/// caches. `target` is the migration revision the spec asks for against the
/// located database; `migration` receives the migration status when the
/// stage is [`Stage::Migrations`]. The database stage's check is completed
/// by connecting to the database (see [`super::probe`]).
pub fn check(
    stage: Stage,
    stack: &ValidatedStack,
    caches: &Caches,
    target: Option<&str>,
    previous: Option<&MigrationStatus>,
    migration: &mut Option<MigrationStatus>,
) -> Check {
    let namespace = stack.namespace.as_str();
    match stage {
        Stage::Secrets => Check::ok(
            reasons::SECRETS_RESOLVED,
            "env and database credentials are in place",
        ),
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
                        check => check,
                    },
                }
            }
            Database::External { url_secret_ref } => Check::ok(
                reasons::EXTERNAL_DATABASE,
                format!("using the database URL in Secret {:?}", url_secret_ref.name),
            ),
        },
        Stage::Migrations => {
            if stack.migration.is_none() {
                return Check::ok(reasons::NO_MIGRATIONS, "no migrations configured");
            }
            let Some(target) = target else {
                return Check::pending(
                    reasons::WAITING_FOR_DATABASE,
                    "the database the migrations run against is not known yet",
                );
            };
            let job_name = children::migration::job_name(stack, target);
            let job = caches.jobs.get(namespace, &job_name);
            let (check, status) = migration_check(target, &job_name, job.as_deref(), previous);
            *migration = Some(status);
            check
        }
        Stage::Backend => workload_check(stack, caches, Component::Backend),
        Stage::Frontend => match &stack.frontend {
            Some(_) => workload_check(stack, caches, Component::Frontend),
            None => Check::ok(reasons::NOT_CONFIGURED, "no frontend in the spec"),
        },
        Stage::Monitoring => match (&stack.service_monitor_labels, caches.service_monitor_api()) {
            (None, _) => Check::ok(reasons::DISABLED, "no ServiceMonitor asked for"),
            (Some(_), None) => Check::pending(
                reasons::CRD_NOT_INSTALLED,
                "the monitoring.coreos.com/v1 ServiceMonitor API is not served; install the Prometheus Operator CRDs",
            ),
            (Some(_), Some(_)) => Check::ok(
                reasons::SERVICE_MONITOR_READY,
                "ServiceMonitor for the backend is applied",
            ),
        },
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
        Some(deployment) => deployment_check(&deployment),
        None => Check::pending(
            reasons::ROLLING_OUT,
            format!("Deployment {name} is being created"),
        ),
    }
}

/// The migration stage: done when the target revision was applied before
/// (its Job may be gone) or its Job succeeded. The schema revision read
/// after the applied revision is kept; a newly applied one is read again.
pub fn migration_check(
    revision: &str,
    job_name: &str,
    job: Option<&Job>,
    previous: Option<&MigrationStatus>,
) -> (Check, MigrationStatus) {
    let previous = previous.cloned().unwrap_or_default();
    let mut status = MigrationStatus {
        target_revision: Some(revision.into()),
        applied_revision: previous.applied_revision.clone(),
        job_name: Some(job_name.into()),
        attempts: job.map(job_attempts).or(previous.attempts),
        schema_revision: previous.schema_revision.clone(),
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
                "Job {job_name} failed: {why}; the backend keeps running the last migrated revision; change the image or retryToken to run again"
            ),
        ),
        Some(JobState::Running) => Check::pending(
            reasons::MIGRATION_RUNNING,
            format!("Job {job_name} is running revision {revision}"),
        ),
    };
    (check, status)
}

/// Where a Job is.
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
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
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

    #[test]
    fn an_applied_revision_is_never_run_again_and_a_failure_is_terminal() {
        let applied = MigrationStatus {
            applied_revision: Some("r1".into()),
            ..MigrationStatus::default()
        };
        let (check, status) = migration_check("r1", "shop-migrate-r1", None, Some(&applied));
        assert!(check.ok, "a cleaned-up Job of an applied revision is fine");
        assert_eq!(status.applied_revision.as_deref(), Some("r1"));

        let complete = job(serde_json::json!([{"type": "Complete", "status": "True"}]));
        let (check, status) = migration_check("r2", "j", Some(&complete), Some(&applied));
        assert!(check.ok);
        assert_eq!(status.applied_revision.as_deref(), Some("r2"));

        let failed = job(
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
        );
        let (check, status) = migration_check("r2", "j", Some(&failed), Some(&applied));
        assert!(!check.ok && check.terminal);
        assert_eq!(check.reason, reasons::MIGRATION_FAILED);
        assert_eq!(
            status.applied_revision.as_deref(),
            Some("r1"),
            "the backend keeps r1"
        );
    }
}
