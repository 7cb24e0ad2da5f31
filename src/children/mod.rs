//! Builders: pure functions from a [`ValidatedStack`] (and resolved secret
//! values) to the child objects, one file per component. Nothing here talks
//! to the API server.

pub mod backend;
pub mod backup;
pub mod config;
pub mod database;
pub mod expose;
pub mod frontend;
pub mod meta;
pub mod migration;
pub mod monitoring;
pub mod network;
pub mod pod;
pub mod security;
pub mod workload;

pub use self::database::DatabaseChildren;
pub use self::meta::*;
pub use self::workload::Workload;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DynamicObject;
use sha2::{Digest, Sha256};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use crate::api::crd::RevisionRecord;
use crate::api::stack::{Database, DatabaseIdentity, ValidatedStack};
use crate::secrets::SecretValues;

/// Every child of a stack. The applier destructures this without `..`, so a
/// child added here and never applied does not compile.
#[derive(Clone, Debug)]
pub struct Children {
    /// `<stack>-db`, managed database only; created once, never re-applied.
    pub database_secret: Option<Secret>,
    pub env_secret: Secret,
    pub env_config: ConfigMap,
    pub database: Option<DatabaseChildren>,
    /// PersistentVolumeClaim `<stack>-backups`, with backups by dump.
    pub backups_volume: Option<PersistentVolumeClaim>,
    /// The backup before this pass's schema change, when backups are asked
    /// for and the schema changes.
    pub backup: Option<backup::Backup>,
    /// The target revision's migration, when it runs.
    pub migration_job: Option<Job>,
    /// The downgrade of a rollback, when one runs.
    pub downgrade_job: Option<Job>,
    /// The target revision's post-deploy step, with `postDeploy`.
    pub post_deploy_job: Option<Job>,
    pub backend: Workload,
    pub frontend: Option<Workload>,
    /// Built whenever enabled; applied only while the API is served.
    pub service_monitor: Option<DynamicObject>,
    /// The Ingress or HTTPRoute, with `spec.expose`.
    pub exposure: Option<expose::Exposure>,
    /// Empty when `networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
}

/// What takes the database to the target revision's schema on this pass,
/// as the rollback guard decided (`reconcile::guard`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SchemaChange {
    /// The target revision's migration Job (what `appstack render` shows).
    #[default]
    Migrate,
    /// A downgrade (`id`: the name suffix of its Jobs) from `from`'s schema
    /// `current` back to `target`.
    Downgrade {
        id: String,
        from: RevisionRecord,
        target: String,
        current: String,
    },
    /// Nothing: the schema stays as it is.
    None,
}

/// Builds every child of a stack. The migration Job needs the identity of
/// the database it migrates (see [`migration::migration_job`]), the
/// NetworkPolicies where it is and whether the operator's pods connect to
/// it (`operator`); the backend's pod template carries `config_checksum`
/// (see [`ConfigVersions::checksum`]); `change` says which Jobs take the
/// schema where the target revision needs it.
pub fn build(
    stack: &ValidatedStack,
    secrets: &SecretValues,
    database: Option<&DatabaseIdentity>,
    operator: Option<&network::OperatorPods>,
    config_checksum: &str,
    change: &SchemaChange,
) -> Children {
    let revision = database.and_then(|identity| stack.migration_revision(identity));
    let (migration_job, downgrade_job, step_id) = match (change, &revision) {
        (_, None) | (SchemaChange::None, _) => (None, None, None),
        (SchemaChange::Migrate, Some(revision)) => (
            migration::migration_job(stack, database),
            None,
            Some(revision.clone()),
        ),
        (
            SchemaChange::Downgrade {
                id,
                from,
                target,
                current,
            },
            Some(revision),
        ) => (
            None,
            migration::downgrade_job(stack, revision, id, from, target, current),
            Some(id.clone()),
        ),
    };
    Children {
        database_secret: config::database_secret(stack, secrets),
        env_secret: config::env_secret(stack, secrets),
        env_config: config::env_config_map(stack),
        database: database::database(stack),
        backups_volume: backup::backups_volume(stack),
        backup: step_id
            .zip(revision.as_ref())
            .and_then(|(id, revision)| backup::backup(stack, &id, revision)),
        migration_job,
        downgrade_job,
        post_deploy_job: revision
            .as_ref()
            .and_then(|revision| migration::post_deploy_job(stack, revision)),
        backend: backend::backend(stack, config_checksum),
        frontend: frontend::frontend(stack),
        service_monitor: monitoring::service_monitor(stack),
        exposure: expose::exposure(stack),
        network_policies: network::network_policies(stack, database, operator),
    }
}

/// The kinds of object the backend's environment is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    ConfigMap,
    Secret,
}

/// What the backend's environment is read from: ConfigMap and Secret
/// `<stack>-env` and the Secret holding `DATABASE_URL` (`<stack>-db`, or
/// the user's Secret of an external database).
pub fn config_sources(stack: &ValidatedStack) -> Vec<(ConfigSource, String)> {
    let database_url = match &stack.database {
        Database::Managed(_) => database_name(stack),
        Database::External { url_secret_ref } => url_secret_ref.name.clone(),
    };
    vec![
        (ConfigSource::ConfigMap, env_name(stack)),
        (ConfigSource::Secret, env_name(stack)),
        (ConfigSource::Secret, database_url),
    ]
}

/// One configuration source as observed: `None` while it does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceVersion {
    pub source: ConfigSource,
    pub name: String,
    pub version: Option<ObjectVersion>,
}

/// What the API server versions an object by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    pub uid: String,
    pub resource_version: String,
}

/// The versions of the backend's configuration sources as observed, one
/// for each of [`config_sources`]. The API server gives an object a new
/// resourceVersion on every change (and a recreated one a new uid), so the
/// versions change exactly when a value may have, and say nothing about the
/// values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigVersions(pub Vec<SourceVersion>);

impl ConfigVersions {
    /// The [`CONFIG_CHECKSUM_ANNOTATION`] value: a short hash of the
    /// versions.
    pub fn checksum(&self) -> String {
        let mut hasher = Sha256::new();
        for SourceVersion {
            source,
            name,
            version,
        } in &self.0
        {
            let (uid, resource_version) = version.as_ref().map_or(("", ""), |version| {
                (version.uid.as_str(), version.resource_version.as_str())
            });
            for part in [format!("{source:?}").as_str(), name, uid, resource_version] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
        }
        crate::api::stack::hex(&hasher.finalize()[..8])
    }
}

/// Every child of `stack` as `appstack render` shows it: placeholder
/// secret values, the managed database's identity, no operator pods.
#[cfg(test)]
pub(crate) fn build_for_test(stack: &ValidatedStack) -> Children {
    build(
        stack,
        &crate::secrets::placeholders(stack),
        stack.managed_database_identity().as_ref(),
        None,
        "checksum",
        &SchemaChange::Migrate,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;
    use crate::secrets::{SecretValue, placeholders};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn every_child_is_labelled_and_owned() {
        let stack = example();
        let children = build_for_test(&stack);
        let metas: Vec<&ObjectMeta> = vec![
            &children.database_secret.as_ref().unwrap().metadata,
            &children.env_secret.metadata,
            &children.env_config.metadata,
            &children.database.as_ref().unwrap().statefulset.metadata,
            &children.database.as_ref().unwrap().service.metadata,
            &children.migration_job.as_ref().unwrap().metadata,
            &children.backend.deployment.metadata,
            &children.backend.service.metadata,
            &children.frontend.as_ref().unwrap().deployment.metadata,
            &children.frontend.as_ref().unwrap().service.metadata,
            &children.service_monitor.as_ref().unwrap().metadata,
            &children
                .backend
                .disruption_budget
                .as_ref()
                .unwrap()
                .metadata,
            &children
                .frontend
                .as_ref()
                .unwrap()
                .disruption_budget
                .as_ref()
                .unwrap()
                .metadata,
        ];
        let exposure = match children.exposure.as_ref().unwrap() {
            expose::Exposure::Ingress(ingress) => &ingress.metadata,
            expose::Exposure::HttpRoute(route) => &route.metadata,
        };
        let metas: Vec<&ObjectMeta> = metas
            .into_iter()
            .chain([exposure])
            .chain(
                children
                    .network_policies
                    .iter()
                    .map(|policy| &policy.metadata),
            )
            .collect();
        assert_eq!(metas.len(), 19);
        for meta in metas {
            let labels = meta.labels.as_ref().unwrap();
            for key in [
                LABEL_NAME,
                LABEL_INSTANCE,
                LABEL_COMPONENT,
                LABEL_MANAGED_BY,
                LABEL_PART_OF,
            ] {
                assert!(labels.contains_key(key), "{:?} lacks {key}", meta.name);
            }
            assert_eq!(labels[LABEL_INSTANCE], "shop");
            assert_eq!(meta.namespace.as_deref(), Some("prod"));
            if meta.name.as_deref() != Some("shop-db") || meta.owner_references.is_some() {
                let owner = &meta.owner_references.as_ref().unwrap()[0];
                assert_eq!(
                    (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                    ("AppStack", stack.uid.as_str(), Some(true))
                );
            }
        }
    }

    #[test]
    fn the_checksum_follows_versions_and_never_values() {
        let stack = example();
        let sources = config_sources(&stack);
        assert_eq!(
            sources,
            [
                (ConfigSource::ConfigMap, "shop-env".to_string()),
                (ConfigSource::Secret, "shop-env".to_string()),
                (ConfigSource::Secret, "shop-db".to_string()),
            ]
        );
        let observed = |versions: [&str; 3]| {
            ConfigVersions(
                sources
                    .iter()
                    .zip(versions)
                    .map(|((source, name), version)| SourceVersion {
                        source: *source,
                        name: name.clone(),
                        version: (!version.is_empty()).then(|| ObjectVersion {
                            uid: "uid".into(),
                            resource_version: version.into(),
                        }),
                    })
                    .collect(),
            )
        };
        let base = observed(["10", "11", "12"]).checksum();
        assert_eq!(base.len(), 16);
        assert_eq!(
            base,
            observed(["10", "11", "12"]).checksum(),
            "deterministic"
        );
        for changed in [["10", "13", "12"], ["14", "11", "12"], ["10", "11", ""]] {
            assert_ne!(base, observed(changed).checksum(), "{changed:?}");
        }
        let mut recreated = observed(["10", "11", "12"]);
        recreated.0[1].version = Some(ObjectVersion {
            uid: "another-uid".into(),
            resource_version: "11".into(),
        });
        assert_ne!(base, recreated.checksum(), "a recreated Secret");

        // Only the versions go in: the same versions over other values
        // give the same checksum, so the annotation reveals nothing of them.
        let values = placeholders(&stack);
        let mut rotated = values.clone();
        rotated.env.insert(
            "SENDGRID_API_KEY".into(),
            SecretValue::new(b"rotated".to_vec()),
        );
        let annotation = |values: &SecretValues| {
            build(&stack, values, None, None, &base, &SchemaChange::Migrate)
                .backend
                .deployment
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_eq!(annotation(&values), annotation(&rotated));
        assert_eq!(annotation(&values), base);
    }

    #[test]
    fn an_external_database_url_is_read_from_the_users_secret() {
        let stack = crate::api::stack::tests::from_yaml(
            &include_str!("../../deploy/examples/shop.yaml").replace(
                "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
                "    external:\n      urlSecretRef: {name: prod-db, key: DATABASE_URL}\n",
            ),
        );
        assert_eq!(
            config_sources(&stack)[2],
            (ConfigSource::Secret, "prod-db".to_string())
        );
    }
}
