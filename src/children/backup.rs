//! Backups of the managed database before migrations: a `pg_dump` Job
//! (the database image's own, custom format) writing into the stack's
//! PersistentVolumeClaim `<stack>-backups`, or a VolumeSnapshot of the
//! database's volume where CSI snapshots are served; and the Job that
//! restores a dump (`kubectl appstack restore`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, SecretKeySelector, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta::{
    Component, GENERATION_LABEL, JobStep, MIGRATION_REVISION_LABEL, STEP_LABEL, database_name,
    object_meta,
};
use super::pod::{plain_var, pod_labels};
use crate::api::crd::BackupMethod;
use crate::api::stack::{Database, ValidatedStack};
use crate::secrets::db_keys;

/// API group of CSI volume snapshots.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// Group, version and kind of VolumeSnapshot.
pub fn volume_snapshot_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", "VolumeSnapshot")
}

/// The VolumeSnapshot API resource, as discovery would report it.
pub fn volume_snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&volume_snapshot_gvk(), "volumesnapshots")
}

/// Where the backups volume is mounted in backup and restore pods.
pub const BACKUPS_PATH: &str = "/backups";
/// The UID (and fsGroup) backup pods run as: the managed database's, so a
/// dump's owner is the database's user, and the volume is writable.
const POSTGRES_UID: i64 = 70;

/// Name of the PersistentVolumeClaim holding the dumps.
pub fn backups_volume_name(stack: &ValidatedStack) -> String {
    format!("{}-backups", stack.name)
}

/// Name of the backup Job or VolumeSnapshot of a step (`id`:
/// [`crate::reconcile::guard::Step::id`]).
pub fn backup_name(stack: &ValidatedStack, id: &str) -> String {
    format!("{}-backup-{id}", stack.name)
}

/// The dump file a backup Job made for `generation` writes: the Job's name
/// and the generation, so a backup taken again for a later generation is a
/// file of its own.
pub fn dump_file(job_name: &str, generation: &str) -> String {
    format!("{job_name}-g{generation}.dump")
}

/// The VolumeSnapshot's name for `generation`: a snapshot is never
/// replaced, so one taken again for a later generation has a name of its
/// own.
pub fn snapshot_name(stack: &ValidatedStack, id: &str, generation: i64) -> String {
    format!("{}-g{generation}", backup_name(stack, id))
}

/// PersistentVolumeClaim `<stack>-backups` for dumps, `None` unless backups
/// by dump are asked for. It goes with the stack only under `deletionPolicy:
/// Delete`, as the database's volume does.
pub fn backups_volume(stack: &ValidatedStack) -> Option<PersistentVolumeClaim> {
    let backups = stack.backups().filter(|b| b.method == BackupMethod::Dump)?;
    let mut metadata = object_meta(stack, backups_volume_name(stack), Component::Backup);
    if !stack.deletes_database_with_stack() {
        metadata.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: backups.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(backups.storage.size.0.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// The backup before step `id` towards migration revision `revision`: a
/// dump Job or a VolumeSnapshot, `None` unless backups are asked for.
pub fn backup(stack: &ValidatedStack, id: &str, revision: &str) -> Option<Backup> {
    let backups = stack.backups()?;
    Some(match backups.method {
        BackupMethod::Dump => Backup::Dump(Box::new(dump_job(stack, id, revision, backups.keep)?)),
        BackupMethod::Snapshot => Backup::Snapshot(Box::new(volume_snapshot(
            stack,
            id,
            revision,
            backups.volume_snapshot_class_name.as_deref(),
        ))),
    })
}

/// A backup before a migration.
#[derive(Clone, Debug)]
pub enum Backup {
    Dump(Box<Job>),
    Snapshot(Box<DynamicObject>),
}

/// Waits up to a minute for the database to accept this pod's
/// connections. A new pod's address reaches the database's NetworkPolicy
/// a moment after the pod starts (the policy agent programs it
/// asynchronously), and `pg_dump`, unlike a migration's interpreter,
/// connects at once: without the wait it is refused.
macro_rules! wait_for_database {
    () => {
        r#"tries=0
until pg_isready --quiet --timeout=2; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then echo "the database at $PGHOST:$PGPORT does not accept connections from this pod"; break; fi
  sleep 2
done
"#
    };
}

/// `pg_dump` of the database into the backups volume, then the oldest
/// dumps beyond `keep` deleted. Written to a partial file first, so a dump
/// cut short is never taken for a backup.
const DUMP_SCRIPT: &str = concat!(
    "set -eu\n",
    wait_for_database!(),
    r#"cd "$BACKUPS_PATH"
pg_dump --format=custom --file="$BACKUP_FILE.partial"
mv -- "$BACKUP_FILE.partial" "$BACKUP_FILE"
ls -1t -- *.dump | tail -n +"$((BACKUP_KEEP + 1))" | while read -r old; do rm -f -- "$old"; done
echo "$BACKUP_FILE: $(wc -c <"$BACKUP_FILE") bytes; kept: $(ls -1t -- *.dump | tr '\n' ' ')"
"#
);

/// A restore of `$BACKUP_FILE` into `$PGDATABASE`, created first when
/// `$CREATE_DATABASE` is set, otherwise replacing what the dump holds.
const RESTORE_SCRIPT: &str = concat!(
    "set -eu\n",
    wait_for_database!(),
    r#"test -f "$BACKUPS_PATH/$BACKUP_FILE" || { echo "no backup $BACKUP_FILE in $BACKUPS_PATH; there are: $(ls -1 "$BACKUPS_PATH" | tr '\n' ' ')"; exit 1; }
if [ -n "${CREATE_DATABASE:-}" ]; then
  createdb --maintenance-db="$MAINTENANCE_DATABASE" -- "$PGDATABASE"
  pg_restore --no-owner --exit-on-error --dbname="$PGDATABASE" "$BACKUPS_PATH/$BACKUP_FILE"
else
  pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error --dbname="$PGDATABASE" "$BACKUPS_PATH/$BACKUP_FILE"
fi
echo "restored $BACKUP_FILE into database $PGDATABASE"
"#
);

fn dump_job(stack: &ValidatedStack, id: &str, revision: &str, keep: usize) -> Option<Job> {
    let name = backup_name(stack, id);
    let file = dump_file(&name, &stack.generation.to_string());
    let mut env = vec![
        plain_var("BACKUP_FILE", file),
        plain_var("BACKUP_KEEP", keep.to_string()),
    ];
    env.extend(connection_env(stack)?);
    let mut job = backup_pod_job(stack, name, JobStep::Backup, DUMP_SCRIPT, env, false)?;
    let labels = job.metadata.labels.get_or_insert_default();
    labels.insert(MIGRATION_REVISION_LABEL.into(), revision.into());
    labels.insert(GENERATION_LABEL.into(), stack.generation.to_string());
    Some(job)
}

/// A Job restoring dump `file` (a name `status.migration.lastBackup` gave)
/// into the stack's database, or into a new database `into` beside it.
/// `suffix` tells restores apart. Without an owner: it outlives nothing of
/// the stack's, and goes a day after it finished.
pub fn restore_job(
    stack: &ValidatedStack,
    file: &str,
    into: Option<&str>,
    suffix: &str,
) -> Option<Job> {
    let mut env = vec![plain_var("BACKUP_FILE", file.to_string())];
    let connection = connection_env(stack)?;
    match into {
        Some(database) => {
            // The new database instead of the stack's, which createdb
            // connects to.
            env.extend(
                connection
                    .into_iter()
                    .filter(|var| var.name != "PGDATABASE"),
            );
            env.push(plain_var(
                "MAINTENANCE_DATABASE",
                stack.database_name.clone(),
            ));
            env.push(plain_var("PGDATABASE", database.to_string()));
            env.push(plain_var("CREATE_DATABASE", "1".to_string()));
        }
        None => env.extend(connection),
    }
    let name = format!("{}-restore-{suffix}", stack.name);
    let mut job = backup_pod_job(stack, name, JobStep::Restore, RESTORE_SCRIPT, env, true)?;
    job.metadata.owner_references = None;
    let spec = job.spec.as_mut()?;
    spec.ttl_seconds_after_finished = Some(86_400);
    spec.backoff_limit = Some(0);
    Some(job)
}

/// The managed database's connection, as libpq reads it from the
/// environment, from Secret `<stack>-db`.
fn connection_env(stack: &ValidatedStack) -> Option<Vec<EnvVar>> {
    let Database::Managed(_) = stack.database else {
        return None;
    };
    let secret = database_name(stack);
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    Some(vec![
        from_secret("PGHOST", db_keys::HOST),
        from_secret("PGPORT", db_keys::PORT),
        from_secret("PGUSER", db_keys::USERNAME),
        from_secret("PGPASSWORD", db_keys::PASSWORD),
        from_secret("PGDATABASE", db_keys::DATABASE),
        plain_var("BACKUPS_PATH", BACKUPS_PATH.to_string()),
    ])
}

/// A Job of the database image running `script` with the backups volume
/// mounted (read-only for a restore), as the database's user.
fn backup_pod_job(
    stack: &ValidatedStack,
    name: String,
    step: JobStep,
    script: &str,
    env: Vec<EnvVar>,
    read_only: bool,
) -> Option<Job> {
    let Database::Managed(managed) = &stack.database else {
        return None;
    };
    let migration = stack.migration.as_ref()?;
    let spec = &migration.spec;
    let mut metadata = object_meta(stack, name, Component::Backup);
    metadata
        .labels
        .get_or_insert_default()
        .insert(STEP_LABEL.into(), step.as_str().into());
    let mut labels = pod_labels(stack, Component::Backup, &spec.pod_labels);
    labels.insert(STEP_LABEL.into(), step.as_str().into());
    let volumes = vec![
        Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: backups_volume_name(stack),
                read_only: Some(read_only),
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mount = |volume: &str, path: &str, read_only: bool| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
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
                        name: step.as_str().into(),
                        image: Some(managed.image.clone()),
                        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                        env: Some(env),
                        resources: super::pod::resources(managed.resources.as_ref()),
                        security_context: Some(SecurityContext {
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            ..super::security::container()
                        }),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        volume_mounts: Some(vec![
                            mount("backups", BACKUPS_PATH, read_only),
                            mount("tmp", "/tmp", false),
                        ]),
                        ..Container::default()
                    }],
                    security_context: Some(PodSecurityContext {
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        ..super::security::pod(Some(POSTGRES_UID))
                    }),
                    volumes: Some(volumes),
                    ..super::pod::pod_service_account(None)
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// A VolumeSnapshot of the database's volume.
fn volume_snapshot(
    stack: &ValidatedStack,
    id: &str,
    revision: &str,
    class: Option<&str>,
) -> DynamicObject {
    let name = snapshot_name(stack, id, stack.generation);
    let mut metadata = object_meta(stack, name.clone(), Component::Backup);
    if !stack.deletes_database_with_stack() {
        metadata.owner_references = None;
    }
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(MIGRATION_REVISION_LABEL.into(), revision.into());
    labels.insert(GENERATION_LABEL.into(), stack.generation.to_string());
    labels.insert(STEP_LABEL.into(), JobStep::Backup.as_str().into());
    let mut snapshot = DynamicObject::new(&name, &volume_snapshot_resource());
    snapshot.metadata = metadata;
    let mut spec = json!({
        "source": {"persistentVolumeClaimName": super::database::volume_claim_name(stack)},
    });
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    snapshot.data = json!({ "spec": spec });
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, example_with_migrations};

    fn with_backup(backup: &str) -> ValidatedStack {
        example_with_migrations(&format!("    backup: {backup}\n"))
    }

    #[test]
    fn no_backup_unless_enabled() {
        assert!(backup(&example(), "r1", "r1").is_none());
        assert!(backups_volume(&example()).is_none());
        assert!(backup(&with_backup("{enabled: false}"), "r1", "r1").is_none());
    }

    #[test]
    fn a_dump_runs_the_database_image_into_the_stacks_volume() {
        let stack = with_backup("{enabled: true, keep: 5}");
        let Some(Backup::Dump(job)) = backup(&stack, "abc0123456", "abc0123456") else {
            panic!("a dump Job");
        };
        assert_eq!(job.metadata.name.as_deref(), Some("shop-backup-abc0123456"));
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[STEP_LABEL], "backup");
        assert_eq!(labels["app.kubernetes.io/component"], "backup");
        assert_eq!(labels[GENERATION_LABEL], "3");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("postgres:16-alpine"));
        let script = &container.command.as_ref().unwrap()[2];
        assert!(script.contains("pg_dump --format=custom"), "{script}");
        let env: BTreeMap<&str, Option<&str>> = container
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.as_str(), var.value.as_deref()))
            .collect();
        assert_eq!(env["BACKUP_FILE"], Some("shop-backup-abc0123456-g3.dump"));
        assert_eq!(env["BACKUP_KEEP"], Some("5"));
        assert_eq!(env["PGPASSWORD"], None, "from the Secret, never inline");
        assert_eq!(
            pod.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "shop-backups"
        );
        assert_eq!(pod.security_context.unwrap().fs_group, Some(70));
        let volume = backups_volume(&stack).unwrap();
        assert_eq!(volume.metadata.name.as_deref(), Some("shop-backups"));
        assert!(
            volume.metadata.owner_references.is_none(),
            "kept with the database under Retain"
        );
        assert_eq!(
            volume.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
            "10Gi",
            "the database's size unless set"
        );
    }

    #[test]
    fn a_snapshot_names_the_database_volume_and_its_class() {
        let stack = with_backup(
            "{enabled: true, method: Snapshot, volumeSnapshotClassName: csi-snapclass}",
        );
        let Some(Backup::Snapshot(snapshot)) = backup(&stack, "abc0123456", "abc0123456") else {
            panic!("a VolumeSnapshot");
        };
        assert_eq!(
            snapshot.metadata.name.as_deref(),
            Some("shop-backup-abc0123456-g3")
        );
        assert_eq!(
            snapshot.data["spec"],
            json!({"source": {"persistentVolumeClaimName": "data-shop-db-0"},
                   "volumeSnapshotClassName": "csi-snapclass"})
        );
        assert!(backups_volume(&stack).is_none(), "no dump volume");
    }

    #[test]
    fn a_restore_reads_the_volume_and_creates_a_new_database_when_asked() {
        let stack = with_backup("{enabled: true}");
        let job = restore_job(&stack, "shop-backup-abc-g3.dump", Some("restored"), "x1").unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("shop-restore-x1"));
        assert!(job.metadata.owner_references.is_none());
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let env: Vec<(&str, Option<&str>)> = container
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.as_str(), var.value.as_deref()))
            .collect();
        let only = |name: &str| {
            let found: Vec<_> = env.iter().filter(|(key, _)| *key == name).collect();
            assert_eq!(found.len(), 1, "{name} once");
            found[0].1
        };
        assert_eq!(only("PGDATABASE"), Some("restored"));
        assert_eq!(only("MAINTENANCE_DATABASE"), Some("shop"));
        assert_eq!(
            container.volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        let in_place = restore_job(&stack, "f.dump", None, "x2").unwrap();
        let env = in_place.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(!env.iter().any(|var| var.name == "CREATE_DATABASE"));
    }
}
