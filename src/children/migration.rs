//! The migration Job: one per revision, never patched.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{Component, MIGRATION_REVISION_LABEL, object_meta};
use super::pod::{application_env, pod_labels};
use crate::api::stack::{DatabaseIdentity, ValidatedStack};

/// Name of the Job for a migration revision.
pub fn job_name(stack: &ValidatedStack, revision: &str) -> String {
    format!("{}-migrate-{revision}", stack.name)
}

/// The Job running the target revision's migration against `database`,
/// `None` without `spec.migrations` or while the database is not known yet
/// (an external URL not read). Its name carries the revision, so a changed
/// spec or another database makes a new Job instead of patching one that
/// may have run.
pub fn migration_job(stack: &ValidatedStack, database: Option<&DatabaseIdentity>) -> Option<Job> {
    let migration = stack.migration.as_ref()?;
    let revision = migration.revision(database?);
    let spec = &migration.spec;
    let mut metadata = object_meta(stack, job_name(stack, &revision), Component::Migration);
    metadata
        .labels
        .get_or_insert_default()
        .insert(MIGRATION_REVISION_LABEL.into(), revision.clone());
    let mut labels = pod_labels(stack, Component::Migration, &spec.pod_labels);
    labels.insert(MIGRATION_REVISION_LABEL.into(), revision);
    let (env, env_from) = application_env(stack);
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.backoff_limit),
            active_deadline_seconds: Some(spec.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: super::pod::non_empty(spec.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "migrate".into(),
                        image: Some(migration.image.clone()),
                        command: spec.command.clone(),
                        args: spec.args.clone(),
                        env: Some(env),
                        env_from: Some(env_from),
                        resources: super::pod::resources(spec.resources.as_ref()),
                        security_context: Some(super::security::container()),
                        // A failed migration's status carries the tail of
                        // what it printed: the kubelet keeps it in the
                        // container's terminated state.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Container::default()
                    }],
                    security_context: Some(super::security::pod(
                        spec.run_as_user.or(stack.backend.run_as_user),
                    )),
                    ..super::pod::pod_service_account(spec.service_account_name.as_ref())
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};

    fn managed_job(stack: &ValidatedStack) -> Option<Job> {
        migration_job(stack, stack.managed_database_identity().as_ref())
    }

    #[test]
    fn job_runs_the_migration_command_with_the_application_env() {
        let stack = example();
        let identity = stack.managed_database_identity().unwrap();
        let revision = stack.migration_revision(&identity).unwrap();
        let job = migration_job(&stack, Some(&identity)).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(format!("shop-migrate-{revision}").as_str())
        );
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(2), Some(900))
        );
        let template = spec.template;
        assert_eq!(
            template.metadata.unwrap().labels.unwrap()[MIGRATION_REVISION_LABEL],
            revision
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/acme/shop-backend:1.4.2")
        );
        assert_eq!(
            container.command.as_deref(),
            Some(["alembic", "upgrade", "head"].map(String::from).as_slice())
        );
        let env = container.env.as_ref().unwrap();
        assert_eq!(env[0].name, "DATABASE_URL");
        assert!(
            env[0].value.is_none(),
            "secret values are referenced, never inline"
        );
        assert_eq!(container.env_from.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn pod_labels_and_annotations_reach_the_pod_but_not_the_selector() {
        let stack = from_yaml(&include_str!("../../deploy/examples/shop.yaml").replace(
            "    retryToken: \"\"\n",
            "    retryToken: \"\"\n    podLabels: {team: data, app.kubernetes.io/component: hijack}\n    podAnnotations: {sidecar.istio.io/inject: \"false\"}\n",
        ));
        let template = managed_job(&stack).unwrap().spec.unwrap().template;
        let metadata = template.metadata.unwrap();
        let labels = metadata.labels.unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels["app.kubernetes.io/component"], "migration");
        assert_eq!(
            metadata.annotations.unwrap()["sidecar.istio.io/inject"],
            "false"
        );
    }

    #[test]
    fn no_migrations_no_job() {
        let stack = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace("  migrations:\n", "  unused:\n")
                .replace("  unused:\n    command: [\"alembic\", \"upgrade\", \"head\"]\n    backoffLimit: 2\n    activeDeadlineSeconds: 900\n    retryToken: \"\"\n", ""),
        );
        assert!(managed_job(&stack).is_none());
    }

    #[test]
    fn no_job_before_the_database_is_known() {
        assert!(migration_job(&example(), None).is_none());
    }
}
