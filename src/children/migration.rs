//! The Jobs of the migrations, each named after what it runs and never
//! patched: the migration of a revision (the expand step, before the
//! backend moves), the downgrade that takes the schema back for a rollback,
//! and the post-deploy step (contract, once the new release is the only
//! one). They share the migration's image settings, environment and pod
//! settings.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{
    Component, GENERATION_LABEL, JobStep, MIGRATION_REVISION_LABEL, STEP_LABEL, object_meta,
};
use super::pod::{application_env, plain_var, pod_labels};
use crate::api::crd::RevisionRecord;
use crate::api::stack::{DatabaseIdentity, Migration, ValidatedStack};

/// Name of the Job for a migration revision.
pub fn job_name(stack: &ValidatedStack, revision: &str) -> String {
    format!("{}-migrate-{revision}", stack.name)
}

/// Name of the Job of a downgrade (`id`: [`crate::reconcile::guard::Step::id`]).
pub fn downgrade_job_name(stack: &ValidatedStack, id: &str) -> String {
    format!("{}-down-{id}", stack.name)
}

/// Name of the Job of a post-deploy revision.
pub fn post_deploy_job_name(stack: &ValidatedStack, revision: &str) -> String {
    format!("{}-post-{revision}", stack.name)
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
    Some(step_job(
        stack,
        migration,
        StepJob {
            name: job_name(stack, &revision),
            step: JobStep::Migrate,
            revision: &revision,
            image: &migration.image,
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: Vec::new(),
        },
    ))
}

/// The Job taking the schema back from `current` to `target` for a
/// rollback to revision `revision`: `from`'s image (which knows both
/// schemas) running `downgradeCommand`.
pub fn downgrade_job(
    stack: &ValidatedStack,
    revision: &str,
    id: &str,
    from: &RevisionRecord,
    target: &str,
    current: &str,
) -> Option<Job> {
    let migration = stack.migration.as_ref()?;
    Some(step_job(
        stack,
        migration,
        StepJob {
            name: downgrade_job_name(stack, id),
            step: JobStep::Downgrade,
            revision,
            image: &from.image,
            command: Some(migration.downgrade_command()),
            args: None,
            env: vec![
                plain_var("APPSTACK_TARGET_SCHEMA_REVISION", target.to_string()),
                plain_var("APPSTACK_CURRENT_SCHEMA_REVISION", current.to_string()),
            ],
        },
    ))
}

/// The post-deploy Job of migration revision `revision`, `None` without
/// `postDeploy`.
pub fn post_deploy_job(stack: &ValidatedStack, revision: &str) -> Option<Job> {
    let migration = stack.migration.as_ref()?;
    let post_deploy = migration.post_deploy()?;
    let post_revision = migration.post_deploy_revision(revision)?;
    Some(step_job(
        stack,
        migration,
        StepJob {
            name: post_deploy_job_name(stack, &post_revision),
            step: JobStep::PostDeploy,
            revision,
            image: &migration.image,
            command: Some(post_deploy.command),
            args: post_deploy.args,
            env: Vec::new(),
        },
    ))
}

/// What distinguishes one Job of the migrations from another.
struct StepJob<'a> {
    name: String,
    step: JobStep,
    /// The migration revision it serves.
    revision: &'a str,
    image: &'a str,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    /// Set before the application's environment.
    env: Vec<EnvVar>,
}

fn step_job(stack: &ValidatedStack, migration: &Migration, job: StepJob<'_>) -> Job {
    let spec = &migration.spec;
    let mut metadata = object_meta(stack, job.name, Component::Migration);
    let extra = [
        (MIGRATION_REVISION_LABEL, job.revision.to_string()),
        (STEP_LABEL, job.step.as_str().to_string()),
        (GENERATION_LABEL, stack.generation.to_string()),
    ];
    let labels = metadata.labels.get_or_insert_default();
    for (key, value) in &extra {
        labels.insert(key.to_string(), value.clone());
    }
    let mut pod_labels = pod_labels(stack, Component::Migration, &spec.pod_labels);
    pod_labels.insert(MIGRATION_REVISION_LABEL.into(), job.revision.to_string());
    pod_labels.insert(STEP_LABEL.into(), job.step.as_str().into());
    let (application, env_from) = application_env(stack);
    let mut env = job.env;
    env.extend(application);
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.backoff_limit),
            active_deadline_seconds: Some(spec.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: super::pod::non_empty(spec.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "migrate".into(),
                        image: Some(job.image.to_string()),
                        command: job.command,
                        args: job.args,
                        env: Some(env),
                        env_from: Some(env_from),
                        resources: super::pod::resources(spec.resources.as_ref()),
                        security_context: Some(super::security::container()),
                        // A failed Job's status carries the tail of what it
                        // printed: the kubelet keeps it in the container's
                        // terminated state.
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, example_with_migrations, from_yaml};

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
        let stack = example_with_migrations(
            "    podLabels: {team: data, app.kubernetes.io/component: hijack}\n    podAnnotations: {sidecar.istio.io/inject: \"false\"}\n",
        );
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

    #[test]
    fn every_job_says_its_step_revision_and_generation() {
        let stack = example();
        let job = managed_job(&stack).unwrap();
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[STEP_LABEL], "migrate");
        assert_eq!(labels[GENERATION_LABEL], "3");
        assert_eq!(
            job.spec.unwrap().template.metadata.unwrap().labels.unwrap()[STEP_LABEL],
            "migrate"
        );
    }

    #[test]
    fn a_downgrade_runs_the_newer_image_with_the_target_schema_in_its_environment() {
        let stack = example();
        let from = RevisionRecord {
            revision: "abcdef0123".into(),
            schema_revision: Some("0002".into()),
            image: "ghcr.io/acme/shop-backend:2".into(),
        };
        let job = downgrade_job(&stack, "0123456789", "fedcba9876", &from, "0001", "0002").unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("shop-down-fedcba9876"));
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[STEP_LABEL], "downgrade");
        assert_eq!(labels[MIGRATION_REVISION_LABEL], "0123456789");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/acme/shop-backend:2")
        );
        assert_eq!(
            container.command.as_deref(),
            Some(
                ["alembic", "downgrade", "$(APPSTACK_TARGET_SCHEMA_REVISION)"]
                    .map(String::from)
                    .as_slice()
            )
        );
        let env = container.env.as_ref().unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("APPSTACK_TARGET_SCHEMA_REVISION", Some("0001")),
            "defined before the command names it"
        );
        assert!(env.iter().any(|var| var.name == "DATABASE_URL"));
    }

    #[test]
    fn the_post_deploy_job_follows_its_command_and_the_revision() {
        let with = |command: &str| {
            example_with_migrations(&format!(
                "    postDeploy: {{command: [{command}], after: 10m}}\n"
            ))
        };
        let stack = with("alembic, upgrade, head");
        assert!(post_deploy_job(&example(), "r1").is_none());
        let job = post_deploy_job(&stack, "r1").unwrap();
        let name = job.metadata.name.clone().unwrap();
        assert!(name.starts_with("shop-post-") && name.len() == "shop-post-".len() + 10);
        assert_eq!(job.metadata.labels.unwrap()[STEP_LABEL], "post-deploy");
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(["alembic", "upgrade", "head"].map(String::from).as_slice())
        );
        assert_eq!(
            stack
                .migration
                .as_ref()
                .unwrap()
                .post_deploy()
                .unwrap()
                .after,
            std::time::Duration::from_secs(600)
        );
        let other = post_deploy_job(&with("sh, -c, true"), "r1").unwrap();
        assert_ne!(other.metadata.name.unwrap(), name, "another command");
        let later = post_deploy_job(&stack, "r2").unwrap();
        assert_ne!(later.metadata.name.unwrap(), name, "another revision");
    }
}
