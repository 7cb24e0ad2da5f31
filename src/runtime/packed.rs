//! Packed objects: how the caches keep stacks and their children. Decoded,
//! a Deployment takes about 9 KiB of memory and its JSON less than 3;
//! compressed, about 1. A packed object keeps the metadata a pass looks up
//! without reading the object (name, UID, version, instance label, owners)
//! and the whole object as compressed JSON, decoded when a pass reads it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::children::LABEL_INSTANCE;

/// An object as a cache keeps it.
pub struct Packed<K> {
    /// Name, namespace, UID, version, creation time and owners: no labels,
    /// as one label map costs half a KiB.
    metadata: ObjectMeta,
    /// The instance label: the stack the object belongs to.
    instance: Option<Box<str>>,
    /// The whole object, JSON compressed with LZ4.
    bytes: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource + Serialize + DeserializeOwned> Packed<K> {
    pub fn pack(object: &K) -> Self {
        let meta = object.meta();
        let metadata = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            creation_timestamp: meta.creation_timestamp.clone(),
            owner_references: meta.owner_references.clone(),
            ..ObjectMeta::default()
        };
        let json = serde_json::to_vec(object).expect("a Kubernetes object serializes");
        Self {
            metadata,
            instance: meta
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_INSTANCE))
                .map(|instance| instance.as_str().into()),
            bytes: lz4_flex::block::compress_prepend_size(&json).into_boxed_slice(),
            kind: PhantomData,
        }
    }

    /// The object as it was packed.
    pub fn unpack(&self) -> K {
        let json = lz4_flex::block::decompress_size_prepended(&self.bytes)
            .expect("packed by this process");
        serde_json::from_slice(&json).expect("packed from a valid object")
    }
}

impl<K> Packed<K> {
    /// The stack the object belongs to, by its instance label.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            instance: self.instance.clone(),
            bytes: self.bytes.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Packed<K> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Packed")
            .field("metadata", &self.metadata)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<K: Resource> Resource for Packed<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dynamic: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dynamic)
    }

    fn group(dynamic: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dynamic)
    }

    fn version(dynamic: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dynamic)
    }

    fn plural(dynamic: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dynamic)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Read as the object it packs: the controller's store needs its kind to
/// be one the API could send.
impl<'de, K> Deserialize<'de> for Packed<K>
where
    K: Resource + Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(|object| Packed::pack(&object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;

    #[test]
    fn a_packed_object_reads_back_whole_and_keeps_its_identity_at_hand() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "a", "name": "shop-backend", "uid": "u1", "resourceVersion": "7",
                "labels": {LABEL_INSTANCE: "shop", "team": "x"},
                "ownerReferences": [{"apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
                                     "name": "shop", "uid": "s1"}]
            },
            "spec": {
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {"spec": {"containers": [{"name": "backend", "image": "shop:1",
                    "resources": {"requests": {"cpu": "500m"}}}]}}
            },
            "status": {"availableReplicas": 2}
        }))
        .unwrap();
        let packed = Packed::pack(&deployment);
        assert_eq!(packed.unpack(), deployment);
        assert_eq!(packed.name_any(), "shop-backend");
        assert_eq!(packed.uid().as_deref(), Some("u1"));
        assert_eq!(packed.resource_version().as_deref(), Some("7"));
        assert_eq!(packed.owner_references()[0].uid, "s1");
        assert_eq!(packed.instance(), Some("shop"));
        assert!(
            packed.labels().is_empty(),
            "the instance is kept on its own"
        );
    }
}
