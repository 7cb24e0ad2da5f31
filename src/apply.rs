//! Writing children: server-side apply under one field manager, skipped when
//! the observed object already holds everything the desired one says.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::children::FIELD_MANAGER;

/// What applying a child did.
#[derive(Clone, Debug)]
pub struct Applied<K> {
    /// The object as the API server now has it.
    pub object: K,
    /// Whether a write was sent.
    pub written: bool,
}

/// Server-side applies `desired` unless `observed` already matches it.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<Applied<K>, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let desired = &with_desired_hash(desired);
    let name = desired.name_any();
    if let Some(observed) = api.get_opt(&name).await?
        && matches(desired, &observed)
    {
        return Ok(Applied {
            object: observed,
            written: false,
        });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let object = api.patch(&name, &params, &Patch::Apply(desired)).await?;
    Ok(Applied {
        object,
        written: true,
    })
}

/// Annotation holding a hash of the desired object as last applied. Field
/// comparison alone cannot see a field the spec stopped setting (a removed
/// pod label stays on the observed object); the hash changes then.
pub const DESIRED_HASH_ANNOTATION: &str = "appstack.dev/desired-hash";

/// `desired` with [`DESIRED_HASH_ANNOTATION`] set.
pub fn with_desired_hash<K: Resource + Clone + Serialize>(desired: &K) -> K {
    use sha2::{Digest, Sha256};
    let mut annotated = desired.clone();
    let serialized = serde_json::to_vec(desired).unwrap_or_default();
    let digest = Sha256::digest(&serialized);
    let hash = crate::stack::hex(&digest[..8]);
    annotated
        .annotations_mut()
        .insert(DESIRED_HASH_ANNOTATION.into(), hash);
    annotated
}

/// Creates `desired` unless an object of that name exists; never changes an
/// existing one. For objects that must not be rewritten: generated secrets
/// and Jobs.
pub async fn create_if_absent<K>(api: &Api<K>, desired: &K) -> Result<Applied<K>, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    if let Some(observed) = api.get_opt(&desired.name_any()).await? {
        return Ok(Applied {
            object: observed,
            written: false,
        });
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(object) => Ok(Applied {
            object,
            written: true,
        }),
        // Lost a race with another writer: the existing object wins.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Applied {
            object: api.get(&desired.name_any()).await?,
            written: false,
        }),
        Err(error) => Err(error),
    }
}

/// Whether `observed` already holds every field `desired` sets.
pub fn matches<K: Serialize>(desired: &K, observed: &K) -> bool {
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(desired), Ok(observed)) => contains(&observed, &desired),
        _ => false,
    }
}

/// Whether `observed` contains `desired`: every key of a desired object is
/// in the observed one with a contained value, lists match element by
/// element, and scalars are equal. Fields the API server fills in (defaults,
/// status, managedFields) are ignored because only desired keys are visited.
/// A desired empty value matches an absent one, as the server drops them.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(desired), Value::Object(observed)) => {
            desired.iter().all(|(key, value)| match observed.get(key) {
                Some(observed) => contains(observed, value),
                None => is_empty(value),
            })
        }
        (Value::Array(desired), Value::Array(observed)) => {
            desired.len() == observed.len()
                && desired
                    .iter()
                    .zip(observed)
                    .all(|(desired, observed)| contains(observed, desired))
        }
        (desired, Value::Null) => is_empty(desired),
        (desired, observed) => desired == observed,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_status_do_not_count_as_drift() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}, "metadata": {"annotations": {}}});
        let observed = json!({
            "metadata": {"resourceVersion": "7", "managedFields": []},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10,
                     "template": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}},
            "status": {"readyReplicas": 2}
        });
        assert!(contains(&observed, &desired));
    }

    #[test]
    fn a_changed_or_missing_desired_field_is_drift() {
        let observed = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}});
        assert!(!contains(&observed, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(&observed, &json!({"spec": {"paused": true}})));
        assert!(!contains(
            &observed,
            &json!({"spec": {"template": {"containers": [{"name": "a", "image": "y"}]}}})
        ));
        assert!(!contains(
            &observed,
            &json!({"spec": {"template": {"containers": [{"name": "a"}, {"name": "b"}]}}})
        ));
    }
}
