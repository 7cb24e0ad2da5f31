//! Compare: whether an observed object already holds what the desired one
//! says. Semantic, not textual: fields the API server adds are not drift,
//! and quantities compare as quantities (`"0.5"` CPU is `500m`, `0.5Gi` is
//! `512Mi`).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

/// Annotation holding a hash of the desired object as last applied. Field
/// comparison alone cannot see a field the spec stopped setting (a removed
/// pod label stays on the observed object); the hash changes then. Of a
/// Secret it covers the keys, never the values: anyone allowed to read the
/// annotation could test guesses of a value against a hash of it. A changed
/// value is seen by the field comparison instead.
pub const DESIRED_HASH_ANNOTATION: &str = "appstack.dev/desired-hash";

/// `desired` with [`DESIRED_HASH_ANNOTATION`] set, hashed over all of it.
pub fn with_desired_hash<K: Resource + Clone + Serialize>(desired: &K) -> K {
    annotated(desired, desired)
}

/// A Secret with [`DESIRED_HASH_ANNOTATION`] set, hashed over everything
/// but its values: the keys of `data` and `stringData` are in the hash,
/// their values are not.
pub fn secret_with_desired_hash(desired: &Secret) -> Secret {
    let mut shape = desired.clone();
    for value in shape.data.iter_mut().flat_map(|data| data.values_mut()) {
        *value = ByteString(Vec::new());
    }
    for value in shape
        .string_data
        .iter_mut()
        .flat_map(|data| data.values_mut())
    {
        value.clear();
    }
    annotated(desired, &shape)
}

/// How a desired child carries its desired hash: over all of it, or, of a
/// Secret, over all but its values.
pub trait Hashed: Sized {
    fn with_desired_hash(&self) -> Self;
}

macro_rules! hashed_whole {
    ($($kind:ty),*) => {$(
        impl Hashed for $kind {
            fn with_desired_hash(&self) -> Self {
                with_desired_hash(self)
            }
        }
    )*};
}
hashed_whole!(
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::networking::v1::Ingress,
    k8s_openapi::api::core::v1::Pod,
    kube::api::DynamicObject
);

impl Hashed for Secret {
    fn with_desired_hash(&self) -> Self {
        secret_with_desired_hash(self)
    }
}

fn annotated<K: Resource + Clone, H: Serialize>(desired: &K, hashed: &H) -> K {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(hashed).unwrap_or_default());
    let mut annotated = desired.clone();
    annotated.annotations_mut().insert(
        DESIRED_HASH_ANNOTATION.into(),
        crate::api::stack::hex(&digest[..8]),
    );
    annotated
}

/// The [`DESIRED_HASH_ANNOTATION`] an object carries, as a number.
pub fn desired_hash(object: &impl Resource) -> Option<u64> {
    let hash = object
        .meta()
        .annotations
        .as_ref()?
        .get(DESIRED_HASH_ANNOTATION)?;
    u64::from_str_radix(hash, 16).ok()
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
/// Values of `requests` and `limits` maps are quantities, which the server
/// rewrites in canonical form.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    contains_at(observed, desired, Place::Any)
}

/// Where in an object a value sits, for how it compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Any,
    /// A `requests` or `limits` map: its values are quantities.
    Quantities,
    Quantity,
}

fn contains_at(observed: &Value, desired: &Value, place: Place) -> bool {
    match (desired, observed) {
        (Value::Object(desired), Value::Object(observed)) => {
            desired.iter().all(|(key, value)| match observed.get(key) {
                Some(observed) => {
                    let inner = match (place, key.as_str()) {
                        (Place::Quantities, _) => Place::Quantity,
                        (_, "requests" | "limits") => Place::Quantities,
                        _ => Place::Any,
                    };
                    contains_at(observed, value, inner)
                }
                None => is_empty(value),
            })
        }
        (Value::Array(desired), Value::Array(observed)) => {
            desired.len() == observed.len()
                && desired
                    .iter()
                    .zip(observed)
                    .all(|(desired, observed)| contains_at(observed, desired, Place::Any))
        }
        (desired, Value::Null) => is_empty(desired),
        (Value::String(desired), Value::String(observed)) if place == Place::Quantity => {
            desired == observed
                || matches!(
                    (quantity_nanos(desired), quantity_nanos(observed)),
                    (Some(desired), Some(observed)) if desired == observed
                )
        }
        (desired, observed) => desired == observed,
    }
}

/// A Kubernetes quantity (`500m`, `0.5`, `512Mi`, `1e3`) in billionths of
/// its unit, or `None` when the text is not one (or too large to compare).
/// Fractions below a billionth round up, as the API server rounds them.
pub fn quantity_nanos(text: &str) -> Option<i128> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let (exponent, binary) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exponent if exponent.starts_with(['e', 'E']) => (exponent[1..].parse::<i32>().ok()?, 0),
        _ => return None,
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || whole.len() + fraction.len() > 30
    {
        return None;
    }
    let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut value = mantissa.checked_mul(1i128.checked_shl(binary)?)?;
    let scale = exponent + 9 - i32::try_from(fraction.len()).ok()?;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
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
    fn a_secrets_desired_hash_follows_its_keys_but_not_its_values() {
        let secret = |data: serde_json::Value| -> Secret {
            serde_json::from_value(json!({"metadata": {"name": "shop-env"}, "data": data})).unwrap()
        };
        let hash = |secret: &Secret| {
            secret_with_desired_hash(secret).annotations()[DESIRED_HASH_ANNOTATION].clone()
        };
        let base = secret(json!({"A": "aHVudGVyMg==", "B": "eA=="}));
        let rotated = secret(json!({"A": "c3dvcmRmaXNo", "B": "eQ=="}));
        assert_eq!(hash(&base), hash(&rotated), "values are not hashed");
        assert_ne!(hash(&base), hash(&secret(json!({"A": "aHVudGVyMg=="}))));
        assert_ne!(hash(&base), hash(&secret(json!({"A": "", "C": ""}))));
        let annotated = secret_with_desired_hash(&base);
        assert_eq!(annotated.data, base.data, "the data itself is kept");
        assert!(
            !matches(&annotated, &secret_with_desired_hash(&rotated)),
            "a changed value is still a difference to apply"
        );
    }

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
    fn quantities_compare_by_value_only_where_quantities_live() {
        assert_eq!(quantity_nanos("0.5"), quantity_nanos("500m"));
        assert_eq!(quantity_nanos("0.5Gi"), quantity_nanos("512Mi"));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(
            quantity_nanos("1E"),
            Some(1_000_000_000_000_000_000_000_000_000)
        );
        assert_ne!(quantity_nanos("1Gi"), quantity_nanos("1G"));
        assert_eq!(quantity_nanos("ten"), None);
        let desired = json!({"resources": {"requests": {"cpu": "0.5", "memory": "0.5Gi"}}});
        let observed = json!({"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}});
        assert!(contains(&observed, &desired));
        assert!(!contains(
            &json!({"resources": {"requests": {"cpu": "600m"}}}),
            &desired
        ));
        assert!(
            !contains(
                &json!({"env": [{"name": "A", "value": "500m"}]}),
                &json!({"env": [{"name": "A", "value": "0.5"}]})
            ),
            "an env value is text"
        );
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
