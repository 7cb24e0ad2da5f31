//! Objects decoded without what the caches throw away. A watched object's
//! `metadata.managedFields` (and a kubectl `last-applied-configuration`
//! annotation) are as large as the rest of it; decoded they are trees of
//! small allocations, made for a whole list page at once and dropped right
//! after. [`Lean`] skips them in the JSON itself, so they are never built.

use std::borrow::Cow;
use std::fmt;

use kube::api::ObjectMeta;
use kube::core::Resource;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};

/// `K` as decoded with [`OBJECT`]'s keys skipped: the same resource to the
/// API (same kind, group, version and paths).
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

impl<K> Lean<K> {
    pub fn into_inner(self) -> K {
        self.0
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(Skipping {
            inner: deserializer,
            keys: &OBJECT,
        })
        .map(Lean)
    }
}

impl<K: Resource> Resource for Lean<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn url_path(dt: &Self::DynamicType, namespace: Option<&str>) -> String {
        K::url_path(dt, namespace)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// Which keys of a JSON object are skipped, and which values are objects
/// with keys skipped in turn.
pub struct Keys {
    skip: &'static [&'static str],
    within: &'static [(&'static str, &'static Keys)],
}

/// A Kubernetes object: within its metadata, managedFields and kubectl's
/// copy of the last applied object.
pub const OBJECT: Keys = Keys {
    skip: &[],
    within: &[("metadata", &METADATA)],
};
const METADATA: Keys = Keys {
    skip: &["managedFields"],
    within: &[("annotations", &ANNOTATIONS)],
};
const ANNOTATIONS: Keys = Keys {
    skip: &["kubectl.kubernetes.io/last-applied-configuration"],
    within: &[],
};

/// A deserializer of a JSON object (or null) that leaves out `keys`.
struct Skipping<D> {
    inner: D,
    keys: &'static Keys,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(SkippingVisitor {
            inner: visitor,
            keys: self.keys,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_option(SkippingVisitor {
            inner: visitor,
            keys: self.keys,
        })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct SkippingVisitor<V> {
    inner: V,
    keys: &'static Keys,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkippingVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(SkippingMap {
            inner: map,
            keys: self.keys,
            within: None,
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: deserializer,
            keys: self.keys,
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
}

struct SkippingMap<A> {
    inner: A,
    keys: &'static Keys,
    /// The keys to skip within the value of the key just read.
    within: Option<&'static Keys>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkippingMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        while let Some(key) = self.inner.next_key::<String>()? {
            if self.keys.skip.contains(&key.as_str()) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.within = self
                .keys
                .within
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, keys)| *keys);
            let key: de::value::StringDeserializer<A::Error> = key.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        match self.within.take() {
            Some(keys) => self
                .inner
                .next_value_seed(SkippingSeed { inner: seed, keys }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct SkippingSeed<S> {
    inner: S,
    keys: &'static Keys,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for SkippingSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Skipping {
            inner: deserializer,
            keys: self.keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::DynamicObject;
    use serde_json::json;

    fn served() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "shop-backend",
                "namespace": "shop",
                "resourceVersion": "42",
                "labels": {"app.kubernetes.io/instance": "shop"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "appstack.dev/desired-hash": "abc"
                },
                "managedFields": [{
                    "manager": "appstack-operator",
                    "operation": "Apply",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "a pod's own"
                }}}
            }
        })
    }

    #[test]
    fn managed_fields_and_the_last_applied_copy_are_left_out_and_nothing_else() {
        let text = serde_json::to_vec(&served()).unwrap();
        let lean: Lean<Deployment> = serde_json::from_slice(&text).unwrap();
        let mut full: Deployment = serde_json::from_slice(&text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        full.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
        assert_eq!(lean.0, full, "only the metadata's own keys are skipped");
        assert_eq!(
            lean.0
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
                .len(),
            1,
            "a pod template's annotations are the workload's, not metadata"
        );
    }

    #[test]
    fn dynamic_objects_and_absent_or_null_metadata_maps_decode_too() {
        let text = serde_json::to_vec(&served()).unwrap();
        let lean: Lean<DynamicObject> = serde_json::from_slice(&text).unwrap();
        assert_eq!(lean.0.metadata.managed_fields, None);
        assert_eq!(lean.0.metadata.annotations.unwrap().len(), 1);
        assert_eq!(lean.0.data["spec"]["replicas"], 2);

        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "annotations": null}});
        let lean: Lean<DynamicObject> = serde_json::from_value(bare).unwrap();
        assert_eq!(lean.0.metadata.annotations, None);
    }

    #[test]
    fn a_malformed_object_still_names_what_is_wrong() {
        let wrong = json!({"metadata": {"name": 7}});
        let error = serde_json::from_value::<Lean<Deployment>>(wrong).unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
