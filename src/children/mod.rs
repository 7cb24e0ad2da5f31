//! Builders: pure functions from a [`ValidatedStack`] (and resolved secret
//! values) to the child objects, one file per component. Nothing here talks
//! to the API server.

pub mod backend;
pub mod config;
pub mod database;
pub mod expose;
pub mod frontend;
pub mod migration;
pub mod monitoring;
pub mod network;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
    ResourceRequirements, Secret, SecretEnvSource, SecretKeySelector, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use sha2::{Digest, Sha256};

use crate::crd::Resources;
use crate::secrets::{SecretValues, db_keys};
use crate::stack::{Database, DatabaseIdentity, ValidatedStack};

/// The field manager of every server-side apply the operator sends.
pub const FIELD_MANAGER: &str = "appstack-operator";
/// `app.kubernetes.io/managed-by` value; child watches select on it.
pub const MANAGED_BY: &str = "appstack-operator";
/// `app.kubernetes.io/name` value of every child.
pub const APP_NAME: &str = "appstack";
/// Pod-template annotation holding a checksum of the env data, so pods roll
/// when configuration changes.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "appstack.dev/config-checksum";
/// Label on migration Jobs carrying their revision.
pub const MIGRATION_REVISION_LABEL: &str = "appstack.dev/migration-revision";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Label selector matching every object the operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// Label selector matching every child of one stack.
pub fn stack_selector(stack_name: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}={stack_name}")
}

/// The parts of a stack, as `app.kubernetes.io/component` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Config,
    Database,
    Migration,
    Backend,
    Frontend,
    /// The Ingress or HTTPRoute.
    Expose,
    NetworkPolicy,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Config => "config",
            Component::Database => "database",
            Component::Migration => "migration",
            Component::Backend => "backend",
            Component::Frontend => "frontend",
            Component::Expose => "expose",
            Component::NetworkPolicy => "network-policy",
        }
    }
}

/// Labels that select a component's pods; never versioned, so a selector
/// never has to change.
pub fn selector_labels(stack: &ValidatedStack, component: Component) -> BTreeMap<String, String> {
    [
        (LABEL_NAME, APP_NAME),
        (LABEL_INSTANCE, stack.name.as_str()),
        (LABEL_COMPONENT, component.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// Every label a child carries.
pub fn labels(stack: &ValidatedStack, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(stack, component);
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_PART_OF.into(), stack.name.clone());
    labels
}

/// The controller ownerReference to the stack.
pub fn owner_reference(stack: &ValidatedStack) -> OwnerReference {
    OwnerReference {
        api_version: "appstack.dev/v1alpha1".into(),
        kind: "AppStack".into(),
        name: stack.name.clone(),
        uid: stack.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child: name, namespace, labels and the controller
/// ownerReference. Every builder starts from this.
pub fn object_meta(stack: &ValidatedStack, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(stack.namespace.clone()),
        labels: Some(labels(stack, component)),
        owner_references: Some(vec![owner_reference(stack)]),
        ..ObjectMeta::default()
    }
}

/// Name of the `<stack>-env` Secret and ConfigMap.
pub fn env_name(stack: &ValidatedStack) -> String {
    format!("{}-env", stack.name)
}

/// Name of the `<stack>-db` Secret, StatefulSet and Service.
pub fn database_name(stack: &ValidatedStack) -> String {
    format!("{}-db", stack.name)
}

/// A backend or frontend: its Deployment and Service, and a
/// PodDisruptionBudget when it runs more than one replica.
#[derive(Clone, Debug)]
pub struct Workload {
    pub deployment: Deployment,
    pub service: Service,
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// The managed database: its StatefulSet and headless Service.
#[derive(Clone, Debug)]
pub struct DatabaseChildren {
    pub statefulset: StatefulSet,
    pub service: Service,
}

/// Every child of a stack. The applier destructures this without `..`, so a
/// child added here and never applied does not compile.
#[derive(Clone, Debug)]
pub struct Children {
    /// `<stack>-db`, managed database only; created once, never re-applied.
    pub database_secret: Option<Secret>,
    pub env_secret: Secret,
    pub env_config: ConfigMap,
    pub database: Option<DatabaseChildren>,
    pub migration_job: Option<Job>,
    pub backend: Workload,
    pub frontend: Option<Workload>,
    /// Built whenever enabled; applied only while the API is served.
    pub service_monitor: Option<DynamicObject>,
    /// The Ingress or HTTPRoute, with `spec.expose`.
    pub exposure: Option<expose::Exposure>,
    /// Empty when `networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
}

/// Builds every child of a stack. The migration Job needs the identity of
/// the database it migrates (see [`migration::migration_job`]), the
/// NetworkPolicies where it is and whether the operator's pods connect to
/// it (`operator`).
pub fn build(
    stack: &ValidatedStack,
    secrets: &SecretValues,
    database: Option<&DatabaseIdentity>,
    operator: Option<&network::OperatorPods>,
) -> Children {
    let checksum = config_checksum(stack, secrets);
    Children {
        database_secret: config::database_secret(stack, secrets),
        env_secret: config::env_secret(stack, secrets),
        env_config: config::env_config_map(stack),
        database: database::database(stack),
        migration_job: migration::migration_job(stack, database),
        backend: backend::backend(stack, &checksum),
        frontend: frontend::frontend(stack),
        service_monitor: monitoring::service_monitor(stack),
        exposure: expose::exposure(stack),
        network_policies: network::network_policies(stack, database, operator),
    }
}

/// A checksum of everything the backend and migrations read from their
/// environment, so a change of any value rolls the pods.
pub fn config_checksum(stack: &ValidatedStack, secrets: &SecretValues) -> String {
    let mut hasher = Sha256::new();
    let mut section = |label: &str, entries: &mut dyn Iterator<Item = (&String, &[u8])>| {
        hasher.update(label.as_bytes());
        for (key, value) in entries {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value);
        }
    };
    let plain = config::plain_env(stack);
    section(
        "config",
        &mut plain.iter().map(|(key, value)| (key, value.as_bytes())),
    );
    section(
        "env",
        &mut secrets.env.iter().map(|(key, value)| (key, value.expose())),
    );
    section(
        "database",
        &mut secrets
            .database
            .iter()
            .map(|(key, value)| (key, value.expose())),
    );
    let external_key = String::from("url");
    section(
        "external",
        &mut secrets
            .external_database_url
            .iter()
            .map(|value| (&external_key, value.expose())),
    );
    crate::stack::hex(&hasher.finalize())
}

/// The environment of backend and migration containers: the env ConfigMap
/// and Secret by reference, `DATABASE_URL` by reference, and the pool size.
pub fn application_env(stack: &ValidatedStack) -> (Vec<EnvVar>, Vec<EnvFromSource>) {
    let database_url = match &stack.database {
        Database::Managed(_) => SecretKeySelector {
            name: database_name(stack),
            key: db_keys::DATABASE_URL.into(),
            optional: None,
        },
        Database::External { url_secret_ref } => SecretKeySelector {
            name: url_secret_ref.name.clone(),
            key: url_secret_ref.key.clone(),
            optional: None,
        },
    };
    let env = vec![
        EnvVar {
            name: "DATABASE_URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(database_url),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        plain_var("DB_POOL_SIZE", stack.pool_size.to_string()),
        plain_var("DB_POOL_TIMEOUT", stack.pool_timeout_seconds.to_string()),
    ];
    let env_from = vec![
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: env_name(stack),
                optional: None,
            }),
            ..EnvFromSource::default()
        },
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: env_name(stack),
                optional: None,
            }),
            ..EnvFromSource::default()
        },
    ];
    (env, env_from)
}

/// A plain `name=value` container env var.
pub fn plain_var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// Container resources from the spec, `None` when nothing is asked.
pub fn resources(resources: Option<&Resources>) -> Option<ResourceRequirements> {
    let resources = resources?;
    let convert = |map: &BTreeMap<String, crate::crd::Quantity>| {
        (!map.is_empty()).then(|| {
            map.iter()
                .map(|(name, quantity)| (name.clone(), K8sQuantity(quantity.0.clone())))
                .collect()
        })
    };
    let requirements = ResourceRequirements {
        requests: convert(&resources.requests),
        limits: convert(&resources.limits),
        ..ResourceRequirements::default()
    };
    (requirements.requests.is_some() || requirements.limits.is_some()).then_some(requirements)
}

/// Pod-template labels: the selector labels plus the user's pod labels
/// (which cannot override the selector).
pub fn pod_labels(
    stack: &ValidatedStack,
    component: Component,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(selector_labels(stack, component));
    labels
}

/// The ServiceAccount part of a pod spec: the API token is mounted only
/// into pods of a ServiceAccount the user named; every other pod runs as the
/// namespace's default ServiceAccount without a token it never uses.
pub fn pod_service_account(service_account: Option<&String>) -> PodSpec {
    PodSpec {
        service_account_name: service_account.cloned(),
        automount_service_account_token: Some(service_account.is_some()),
        ..PodSpec::default()
    }
}

/// `Some(map)` unless the map is empty, which the API server would drop.
pub fn non_empty<K: Ord, V>(map: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{SecretValue, placeholders};
    use crate::stack::tests::example;

    #[test]
    fn every_child_is_labelled_and_owned() {
        let stack = example();
        let children = build(
            &stack,
            &placeholders(&stack),
            stack.managed_database_identity().as_ref(),
            None,
        );
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
    fn checksum_follows_every_env_value() {
        let stack = example();
        let values = placeholders(&stack);
        let base = config_checksum(&stack, &values);
        assert_eq!(base, config_checksum(&stack, &values), "deterministic");
        let mut changed = values.clone();
        changed.env.insert(
            "SENDGRID_API_KEY".into(),
            SecretValue::new(b"rotated".to_vec()),
        );
        assert_ne!(base, config_checksum(&stack, &changed));
        let mut plain_changed = stack.clone();
        plain_changed.env[0].source = crate::stack::EnvSource::Plain("DEBUG".into());
        assert_ne!(base, config_checksum(&plain_changed, &values));
    }
}
