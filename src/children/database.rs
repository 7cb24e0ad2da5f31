//! The managed database: a one-replica PostgreSQL StatefulSet with a
//! persistent volume, and the headless Service that names it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Component, database_name, object_meta, owner_reference, selector_labels};
use crate::api::stack::{Database, POSTGRES_PORT, ValidatedStack};
use crate::secrets::db_keys;

/// The managed database: its StatefulSet and headless Service.
#[derive(Clone, Debug)]
pub struct DatabaseChildren {
    pub statefulset: StatefulSet,
    pub service: Service,
}

/// Name of the volumeClaimTemplate; PVCs are `data-<stack>-db-0`.
pub const DATA_VOLUME: &str = "data";
/// UID and GID of the `postgres` user in the official Alpine images.
const POSTGRES_UID: i64 = 70;
const DATA_PATH: &str = "/var/lib/postgresql/data";

/// The managed database's children, `None` for an external database.
pub fn database(stack: &ValidatedStack) -> Option<DatabaseChildren> {
    let Database::Managed(managed) = &stack.database else {
        return None;
    };
    let name = database_name(stack);
    let selector = selector_labels(stack, Component::Database);
    let secret_env = |env_name: &str, key: &str| EnvVar {
        name: env_name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // pg_isready against the local socket: ready means accepting connections.
    let probe = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "sh",
                    "-c",
                    "exec pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -h 127.0.0.1",
                ]
                .map(String::from)
                .to_vec(),
            ),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    };
    let mount = |volume: &str, path: &str| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    };
    let empty_dir = |volume: &str| Volume {
        name: volume.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(managed.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            secret_env("POSTGRES_USER", db_keys::USERNAME),
            secret_env("POSTGRES_PASSWORD", db_keys::PASSWORD),
            secret_env("POSTGRES_DB", db_keys::DATABASE),
            super::pod::plain_var("PGDATA", format!("{DATA_PATH}/pgdata")),
        ]),
        readiness_probe: Some(probe(5, 3)),
        liveness_probe: Some(probe(10, 6)),
        resources: super::pod::resources(managed.resources.as_ref()),
        // Postgres writes only to its data volume, its socket directory and
        // /tmp; everything else stays read-only.
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..super::security::container()
        }),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_PATH),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(super::meta::labels(stack, Component::Database)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: managed.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(managed.storage.size.0.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let retention = if stack.deletes_database_with_stack() {
        "Delete"
    } else {
        "Retain"
    };
    let statefulset = StatefulSet {
        metadata: object_meta(stack, name.clone(), Component::Database),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The volume's root belongs to root, as a fresh disk does:
                    // fsGroup makes it writable for PostgreSQL, which keeps
                    // its data one level down (PGDATA) with mode 0700. The
                    // kubelet would otherwise re-apply the group to every
                    // file on each mount, adding group permissions to that
                    // directory, and PostgreSQL refuses to start on a data
                    // directory with them: only a volume whose root does not
                    // match yet is changed.
                    security_context: Some(PodSecurityContext {
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        fs_group_change_policy: Some("OnRootMismatch".into()),
                        ..super::security::pod(Some(POSTGRES_UID))
                    }),
                    volumes: Some(vec![empty_dir("run"), empty_dir("tmp")]),
                    ..super::pod::pod_service_account(None)
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    };
    let service = Service {
        metadata: object_meta(stack, name, Component::Database),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: POSTGRES_PORT,
                target_port: Some(IntOrString::String("postgres".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Some(DatabaseChildren {
        statefulset,
        service,
    })
}

/// The PersistentVolumeClaim the StatefulSet creates for its one replica.
pub fn volume_claim_name(stack: &ValidatedStack) -> String {
    format!("{DATA_VOLUME}-{}-0", database_name(stack))
}

/// The ownerReferences the database volume should carry, or `None` when
/// `observed` already has them.
///
/// The StatefulSet's `whenDeleted` retention policy alone cannot be trusted
/// either way. Under `Delete`, the StatefulSet controller creates the claim
/// without an owner and adds its reference a sync later, so a stack deleted
/// before that sync would leave the volume behind: the stack owns the volume
/// itself (a plain, non-controller reference beside the StatefulSet's).
/// Under `Retain`, after a switch from `Delete`, the StatefulSet's reference
/// lingers until its controller next syncs, and a stack deleted before that
/// would take the volume with it: neither the stack nor its StatefulSet may
/// own the volume. Every other reference is kept as it is.
pub fn volume_owner_references(
    stack: &ValidatedStack,
    observed: &[OwnerReference],
) -> Option<Vec<OwnerReference>> {
    let deletes = stack.deletes_database_with_stack();
    let ours = OwnerReference {
        controller: None,
        ..owner_reference(stack)
    };
    let statefulset = database_name(stack);
    let mut desired: Vec<OwnerReference> = observed
        .iter()
        .filter(|reference| {
            if reference.uid == stack.uid {
                deletes && **reference == ours
            } else {
                let goes_with_stack = reference.api_version == "apps/v1"
                    && reference.kind == "StatefulSet"
                    && reference.name == statefulset;
                deletes || !goes_with_stack
            }
        })
        .cloned()
        .collect();
    if deletes && !desired.contains(&ours) {
        desired.push(ours);
    }
    (desired != observed).then_some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};

    #[test]
    fn statefulset_has_storage_probes_and_a_restricted_context() {
        let stack = example();
        let DatabaseChildren {
            statefulset,
            service,
        } = database(&stack).unwrap();
        let spec = statefulset.spec;
        assert_eq!(spec.service_name.as_deref(), Some("shop-db"));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let requests = claim.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(requests.requests.as_ref().unwrap()["storage"].0, "10Gi");
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("postgres:16-alpine"));
        let probe = container.readiness_probe.as_ref().unwrap();
        assert!(probe.exec.as_ref().unwrap().command.as_ref().unwrap()[2].contains("pg_isready"));
        assert!(container.liveness_probe.is_some());
        let context = container.security_context.as_ref().unwrap();
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|mount| mount.mount_path.as_str())
            .collect();
        assert_eq!(mounts, [DATA_PATH, "/var/run/postgresql", "/tmp"]);
        let context = pod.security_context.unwrap();
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        // A restarted pod keeps its data directory at 0700: the volume is
        // given to the group once, not on every mount.
        assert_eq!(context.fs_group, Some(POSTGRES_UID));
        assert_eq!(
            context.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch")
        );
        let service = service.spec.unwrap();
        assert_eq!(service.cluster_ip.as_deref(), Some("None"));
        assert_eq!(service.ports.unwrap()[0].port, 5432);
    }

    #[test]
    fn storage_class_resources_and_delete_policy_are_carried_over() {
        let stack = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace(
                    "storage: {size: 10Gi}",
                    "storage: {size: 1Gi, storageClassName: fast}\n      resources: {requests: {memory: 1Gi}}",
                )
                .replace("deletionPolicy: Retain", "deletionPolicy: Delete"),
        );
        let spec = database(&stack).unwrap().statefulset.spec;
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["memory"]
                .0,
            "1Gi"
        );
        let claim = spec.volume_claim_templates.unwrap()[0]
            .spec
            .clone()
            .unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
    }

    fn statefulset_reference() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "shop-db".into(),
            uid: "set-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn the_stack_owns_its_volume_only_under_delete() {
        let retained = example();
        let deleted = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace("deletionPolicy: Retain", "deletionPolicy: Delete"),
        );
        assert_eq!(volume_claim_name(&retained), "data-shop-db-0");

        let set_only = [statefulset_reference()];
        let owned = volume_owner_references(&deleted, &set_only).unwrap();
        assert_eq!(owned[0], statefulset_reference());
        assert_eq!(owned[1].uid, deleted.uid);
        assert_eq!(owned[1].kind, "AppStack");
        assert_eq!(
            owned[1].controller, None,
            "the StatefulSet stays the controller"
        );
        assert_eq!(volume_owner_references(&deleted, &owned), None);

        // Owned already, in any order: nothing to write.
        let reordered = [owned[1].clone(), owned[0].clone()];
        assert_eq!(volume_owner_references(&deleted, &reordered), None);

        // Back to Retain: the stack's reference goes, and so does the
        // StatefulSet's until its controller catches up; others stay.
        let other = OwnerReference {
            kind: "Backup".into(),
            uid: "backup-uid".into(),
            controller: None,
            ..statefulset_reference()
        };
        let mut observed = owned.clone();
        observed.push(other.clone());
        let released = volume_owner_references(&retained, &observed).unwrap();
        assert_eq!(released, std::slice::from_ref(&other));
        assert_eq!(volume_owner_references(&retained, &set_only).unwrap(), []);
        assert_eq!(volume_owner_references(&retained, &[other]), None);
        assert_eq!(volume_owner_references(&retained, &[]), None);
    }
}
