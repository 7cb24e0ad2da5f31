//! Packed objects: how the caches keep stacks and their children. Decoded,
//! a Deployment takes about 9 KiB of memory and its JSON less than 3;
//! compressed, about 1. A packed object keeps the metadata a pass looks up
//! without reading the object (name, UID, version, instance label, owners)
//! and the rest of the object as compressed JSON, decoded when a pass reads
//! it.
//!
//! Once a pass finds that a cached child holds what the stack desires, the
//! child is *settled*: its packed body shrinks to what passes still read of
//! it (see [`Settle`]), and the desired hash it held stands in for the
//! comparison until the object changes. A change arrives from the watch as
//! a new, whole object, compared again field by field.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;

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
    body: Mutex<Body>,
    kind: PhantomData<fn() -> K>,
}

/// The object without what [`Packed::metadata`] holds, as JSON compressed
/// with LZ4.
#[derive(Clone)]
enum Body {
    /// All of it.
    Whole(Box<[u8]>),
    /// Its [`Settle::residue`], once it was found to hold the desired
    /// object hashed as `hash`.
    Settled { residue: Box<[u8]>, hash: u64 },
}

/// What passes still read of a child that holds what the stack desires:
/// its metadata and status, and what the status reports of its spec.
pub trait Settle: Sized {
    /// `None` keeps the object whole: its desired hash does not cover all
    /// that is compared (a Secret's values), or it is small already.
    fn residue(&self) -> Option<Self>;
}

impl<K: Resource + Serialize + DeserializeOwned> Packed<K> {
    pub fn pack(object: &K) -> Self {
        let meta = object.meta();
        let metadata = kept(meta);
        let body = Body::Whole(compress(object, &metadata));
        Self {
            metadata,
            instance: meta
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_INSTANCE))
                .map(|instance| instance.as_str().into()),
            body: Mutex::new(body),
            kind: PhantomData,
        }
    }

    /// The object as it was packed, or its residue once settled.
    pub fn unpack(&self) -> K {
        let body = self.body.lock().expect("packed lock");
        let (Body::Whole(bytes) | Body::Settled { residue: bytes, .. }) = &*body;
        self.decompress(bytes)
    }

    /// Whether the object holds `desired`, whose desired hash is `hash`.
    /// Settled at that hash, it does without a comparison. A whole object
    /// is compared by `matches`; when it holds `desired` it is settled at
    /// `hash`, so the next pass neither decodes nor compares it.
    pub fn holds(
        &self,
        desired: &K,
        hash: Option<u64>,
        matches: impl FnOnce(&K, &K) -> bool,
    ) -> bool
    where
        K: Settle,
    {
        let mut body = self.body.lock().expect("packed lock");
        let bytes = match &*body {
            Body::Settled { hash: settled, .. } => return hash == Some(*settled),
            Body::Whole(bytes) => bytes,
        };
        let observed = self.decompress(bytes);
        if !matches(desired, &observed) {
            return false;
        }
        if let (Some(hash), Some(residue)) = (hash, observed.residue()) {
            *body = Body::Settled {
                residue: compress(&residue, &self.metadata),
                hash,
            };
        }
        true
    }

    fn decompress(&self, bytes: &[u8]) -> K {
        let json =
            lz4_flex::block::decompress_size_prepended(bytes).expect("packed by this process");
        let mut object: K = serde_json::from_slice(&json).expect("packed from a valid object");
        restore(object.meta_mut(), &self.metadata);
        object
    }
}

/// The metadata a packed object keeps beside its body: name, namespace,
/// UID, version, creation time and owners.
fn kept(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        creation_timestamp: meta.creation_timestamp.clone(),
        owner_references: meta.owner_references.clone(),
        ..ObjectMeta::default()
    }
}

/// Puts back into `meta` what [`kept`] took of it.
fn restore(meta: &mut ObjectMeta, kept: &ObjectMeta) {
    meta.name.clone_from(&kept.name);
    meta.namespace.clone_from(&kept.namespace);
    meta.uid.clone_from(&kept.uid);
    meta.resource_version.clone_from(&kept.resource_version);
    meta.creation_timestamp.clone_from(&kept.creation_timestamp);
    meta.owner_references.clone_from(&kept.owner_references);
}

/// `object` as JSON compressed with LZ4, without the fields of `kept` (its
/// UID alone does not compress).
fn compress<K: Resource + Serialize>(object: &K, kept: &ObjectMeta) -> Box<[u8]> {
    let mut json = serde_json::to_value(object).expect("a Kubernetes object serializes");
    let kept = serde_json::to_value(kept).expect("metadata serializes");
    if let (Some(meta), Some(kept)) = (
        json.get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut),
        kept.as_object(),
    ) {
        for field in kept.keys() {
            meta.remove(field);
        }
    }
    let json = serde_json::to_vec(&json).expect("JSON serializes");
    lz4_flex::block::compress_prepend_size(&json).into_boxed_slice()
}

impl<K> Packed<K> {
    /// Whether the object was settled (see [`Self::holds`]).
    pub fn is_settled(&self) -> bool {
        matches!(
            &*self.body.lock().expect("packed lock"),
            Body::Settled { .. }
        )
    }

    /// Size of the packed body, in bytes.
    pub fn packed_len(&self) -> usize {
        let body = self.body.lock().expect("packed lock");
        let (Body::Whole(bytes) | Body::Settled { residue: bytes, .. }) = &*body;
        bytes.len()
    }

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
            body: Mutex::new(self.body.lock().expect("packed lock").clone()),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Packed<K> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Packed")
            .field("metadata", &self.metadata)
            .field("settled", &self.is_settled())
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

    #[test]
    fn a_settled_object_holds_its_desired_hash_without_being_compared() {
        let args: Vec<String> = (0..40).map(|flag| format!("--flag-{flag}")).collect();
        let object: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "a", "name": "shop-backend", "resourceVersion": "7"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "backend", "image": "shop:1", "args": args}]}}},
        }))
        .unwrap();
        let packed = Packed::pack(&object);
        let whole = packed.packed_len();
        assert!(!packed.holds(&object, Some(1), |_, _| false));
        assert!(!packed.is_settled(), "an object that differs stays whole");
        assert!(packed.holds(&object, None, |_, _| true));
        assert!(
            !packed.is_settled(),
            "without a desired hash nothing stands in for the comparison"
        );

        assert!(packed.holds(&object, Some(1), |_, _| true));
        assert!(packed.is_settled());
        assert!(
            packed.packed_len() < whole / 2,
            "{} of {whole} bytes",
            packed.packed_len()
        );
        assert!(packed.holds(&object, Some(1), |_, _| panic!("compared again")));
        assert!(!packed.holds(&object, Some(2), |_, _| panic!("compared again")));
        let residue = packed.unpack();
        assert_eq!(residue.metadata, object.metadata);
        assert_eq!(
            residue.spec.template.spec.unwrap().containers[0]
                .image
                .as_deref(),
            Some("shop:1")
        );
    }
}
