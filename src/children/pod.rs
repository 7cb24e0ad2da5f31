//! The parts of a pod template the builders share: the application's
//! environment, resources, pod labels and the ServiceAccount part.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource, PodSpec, ResourceRequirements,
    SecretEnvSource, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::meta::{Component, database_name, env_name, selector_labels};
use crate::api::crd::Resources;
use crate::api::stack::{Database, ValidatedStack};
use crate::secrets::db_keys;

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
    let convert = |map: &BTreeMap<String, crate::api::crd::Quantity>| {
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
