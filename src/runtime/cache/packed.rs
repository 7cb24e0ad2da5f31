//! Packed objects: how the caches keep stacks and their children. An
//! object's JSON is a fraction of the decoded object, compressed JSON a
//! fraction of that, and compressed against the objects of its kind before
//! it (see [`Dictionary`]) a small fraction again (sizes on the benchmark
//! page, docs/src/performance/history.md). A packed object keeps what a
//! pass looks up without reading the object (name, namespace, UID,
//! version, owners, instance label) in a compact form, and the rest of the
//! object as compressed JSON, decoded when a pass reads it.
//!
//! Once a pass finds that a cached child holds what the stack desires, the
//! child is *settled*: its packed body shrinks to what passes still read of
//! it (see [`Settle`]), and the desired hash it held stands in for the
//! comparison until the object changes. A change arrives from the watch as
//! a new, whole object, compared again field by field.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::LABEL_INSTANCE;

/// An object as a cache keeps it.
pub struct Packed<K> {
    name: Arc<str>,
    /// Empty for none. Shared by every cached object of the namespace, of
    /// every kind (see [`super::shelf::Sharing`]).
    namespace: Arc<str>,
    uid: Uid,
    version: Version,
    /// Shared by the cached children of one stack, of every kind.
    owners: Option<Arc<[OwnerReference]>>,
    /// The instance label: the stack the object belongs to. Shared like
    /// the owners.
    instance: Option<Arc<str>>,
    /// A hash of the body as packed whole: two versions of an object that
    /// hash alike (and have the same UID and owners) hold the same.
    content: u64,
    body: Mutex<Body>,
    kind: PhantomData<fn() -> K>,
}

/// A UID: the 16 bytes of a UUID, as the API server makes them, or the
/// text of any other.
#[derive(Clone, Debug, PartialEq)]
enum Uid {
    None,
    Uuid(uuid::Uuid),
    Text(Box<str>),
}

impl Uid {
    fn parse(uid: Option<&str>) -> Self {
        match uid {
            None => Uid::None,
            Some(text) => match uuid::Uuid::try_parse(text) {
                // Only the form that reads back the same.
                Ok(uuid) if uuid.hyphenated().to_string() == text => Uid::Uuid(uuid),
                _ => Uid::Text(text.into()),
            },
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Uid::None => None,
            Uid::Uuid(uuid) => Some(uuid.hyphenated().to_string()),
            Uid::Text(text) => Some(text.to_string()),
        }
    }
}

/// A resourceVersion: an etcd revision as a number, or the text of any
/// other.
#[derive(Clone, Debug, PartialEq)]
pub enum Version {
    None,
    Revision(u64),
    Text(Box<str>),
}

impl Version {
    pub fn of(object: &impl Resource) -> Self {
        Self::parse(object.meta().resource_version.as_deref())
    }

    fn parse(version: Option<&str>) -> Self {
        match version {
            None => Version::None,
            Some(text) => match text.parse::<u64>() {
                Ok(revision) if revision.to_string() == text => Version::Revision(revision),
                _ => Version::Text(text.into()),
            },
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Version::None => None,
            Version::Revision(revision) => Some(revision.to_string()),
            Version::Text(text) => Some(text.to_string()),
        }
    }

    /// How two versions compare. Revisions are ordered; of any other, only
    /// equality is known.
    pub fn order(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Revision(this), Version::Revision(other)) => Some(this.cmp(other)),
            _ if self == other => Some(Ordering::Equal),
            _ => None,
        }
    }
}

/// The object without what [`Packed`] keeps beside it, as JSON compressed
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

/// What LZ4 refers back to when it packs an object of one kind: the JSON
/// of earlier objects unlike those before them. A kind comes in a few
/// shapes (a backend's Deployment and a frontend's, whole and settled), and
/// one stack's objects differ from another's in little more than names,
/// UIDs and hashes: once the dictionary holds an object of each shape, the
/// next packs to a fraction of what it would alone.
///
/// An object is learnt when it packs to more than a third of its JSON. The
/// dictionary only grows, at the front, up to [`Dictionary::LIMIT`], so
/// what was packed before finds what it refers to at the same distance
/// from the end.
#[derive(Default)]
pub struct Dictionary {
    text: RwLock<Arc<[u8]>>,
}

impl Dictionary {
    /// Half LZ4's window: every byte of it can be referred to, and hashing
    /// it for each object packed stays cheap.
    const LIMIT: usize = 32 * 1024;

    fn current(&self) -> Arc<[u8]> {
        self.text.read().expect("dictionary lock").clone()
    }

    fn compress(&self, json: &[u8]) -> Box<[u8]> {
        let text = self.current();
        let packed = lz4_flex::block::compress_prepend_size_with_dict(json, &text);
        if packed.len() * 3 <= json.len() || text.len() + json.len() > Self::LIMIT {
            return packed.into_boxed_slice();
        }
        let text = self.learn(json);
        lz4_flex::block::compress_prepend_size_with_dict(json, &text).into_boxed_slice()
    }

    /// Puts `json` in front of the dictionary, if it fits, and returns the
    /// dictionary.
    fn learn(&self, json: &[u8]) -> Arc<[u8]> {
        let mut text = self.text.write().expect("dictionary lock");
        if text.len() + json.len() <= Self::LIMIT {
            *text = json.iter().chain(text.iter()).copied().collect();
        }
        text.clone()
    }

    /// Of bytes packed with this dictionary: read after the bytes, so that
    /// it holds at least what they were packed with.
    fn decompress(&self, bytes: &[u8]) -> Vec<u8> {
        lz4_flex::block::decompress_size_prepended_with_dict(bytes, &self.current())
            .expect("packed by this process")
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.text.read().expect("dictionary lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Resource + Serialize + DeserializeOwned> Packed<K> {
    /// `object`, compressed against `dictionary`: only that dictionary
    /// reads it back.
    pub fn pack(object: &K, dictionary: &Dictionary) -> Self
    where
        K: Clone,
    {
        Self::pack_owned(object.clone(), dictionary)
    }

    /// [`Self::pack`] of an object the caller gives up: what is kept
    /// beside the body is moved out of its metadata, not copied.
    pub fn pack_owned(mut object: K, dictionary: &Dictionary) -> Self {
        let meta = object.meta_mut();
        let instance = meta
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_INSTANCE))
            .map(|instance| instance.as_str().into());
        let name = meta.name.take().unwrap_or_default().into();
        let namespace = meta.namespace.take().unwrap_or_default().into();
        let uid = Uid::parse(meta.uid.take().as_deref());
        let version = Version::parse(meta.resource_version.take().as_deref());
        let owners = meta
            .owner_references
            .take()
            .filter(|owners| !owners.is_empty())
            .map(Arc::from);
        let json = body_json(object);
        Self {
            name,
            namespace,
            uid,
            version,
            owners,
            instance,
            content: hash(&json),
            body: Mutex::new(Body::Whole(dictionary.compress(&json))),
            kind: PhantomData,
        }
    }

    /// The object as it was packed, or its residue once settled.
    pub fn unpack(&self, dictionary: &Dictionary) -> K {
        let body = self.body.lock().expect("packed lock");
        let (Body::Whole(bytes) | Body::Settled { residue: bytes, .. }) = &*body;
        self.decompress(bytes, dictionary)
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
        dictionary: &Dictionary,
    ) -> bool
    where
        K: Settle,
    {
        let mut body = self.body.lock().expect("packed lock");
        let bytes = match &*body {
            Body::Settled { hash: settled, .. } => return hash == Some(*settled),
            Body::Whole(bytes) => bytes,
        };
        let observed = self.decompress(bytes, dictionary);
        if !matches(desired, &observed) {
            return false;
        }
        if let (Some(hash), Some(residue)) = (hash, observed.residue()) {
            *body = Body::Settled {
                residue: compress(residue, dictionary),
                hash,
            };
        }
        true
    }

    fn decompress(&self, bytes: &[u8], dictionary: &Dictionary) -> K {
        let json = dictionary.decompress(bytes);
        let mut object: K = serde_json::from_slice(&json).expect("packed from a valid object");
        self.restore(object.meta_mut());
        object
    }
}

/// `object` as JSON compressed with LZ4 against `dictionary`, without the
/// metadata kept beside it (its UID alone does not compress).
fn compress<K: Resource + Serialize>(object: K, dictionary: &Dictionary) -> Box<[u8]> {
    dictionary.compress(&body_json(object))
}

/// `object` as JSON, without the metadata kept beside it.
fn body_json<K: Resource + Serialize>(mut object: K) -> Vec<u8> {
    let meta = object.meta_mut();
    meta.name = None;
    meta.namespace = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.owner_references = None;
    serde_json::to_vec(&object).expect("a Kubernetes object serializes")
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, bytes);
    std::hash::Hasher::finish(&hasher)
}

impl<K> Packed<K> {
    /// Puts back into `meta` what [`Packed`] keeps beside the body.
    fn restore(&self, meta: &mut ObjectMeta) {
        meta.name = (!self.name.is_empty()).then(|| self.name.to_string());
        meta.namespace = (!self.namespace.is_empty()).then(|| self.namespace.to_string());
        meta.uid = self.uid.text();
        meta.resource_version = self.version.text();
        meta.owner_references = self.owners.as_deref().map(<[_]>::to_vec);
    }

    /// The metadata kept beside the body, with the instance label: what a
    /// pass reads of an object without decoding it.
    pub fn metadata(&self) -> ObjectMeta {
        let mut meta = ObjectMeta::default();
        self.restore(&mut meta);
        if let Some(instance) = &self.instance {
            meta.labels = Some([(LABEL_INSTANCE.to_string(), instance.to_string())].into());
        }
        meta
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The namespace, empty for none.
    pub fn namespace(&self) -> &Arc<str> {
        &self.namespace
    }

    pub fn uid(&self) -> Option<String> {
        self.uid.text()
    }

    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The stack the object belongs to, by its instance label.
    pub fn instance(&self) -> Option<&Arc<str>> {
        self.instance.as_ref()
    }

    pub fn owners(&self) -> Option<&Arc<[OwnerReference]>> {
        self.owners.as_ref()
    }

    /// Shares the namespace, instance and owners with objects that have
    /// the same: `share` returns the copy to keep.
    pub fn share_with(&mut self, share: &mut impl Share) {
        self.namespace = share.text(&self.namespace);
        if let Some(instance) = &mut self.instance {
            *instance = share.text(instance);
        }
        if let Some(owners) = &mut self.owners {
            *owners = share.owners(owners);
        }
    }

    /// Whether `self`, a newer version of `previous`, holds what it held:
    /// only its resourceVersion moved, or what changed is not kept (a
    /// status the caches slim away). Then `self` takes over `previous`'s
    /// body, settled or not, and nothing needs to look at it again.
    pub fn holds_as_before(&mut self, previous: &Packed<K>) -> bool {
        let same = self.content == previous.content
            && self.uid == previous.uid
            && self.owners == previous.owners;
        if same {
            let body = previous.body.lock().expect("packed lock").clone();
            *self.body.get_mut().expect("packed lock") = body;
        }
        same
    }

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
}

/// Where packed objects find the shared copy of what many of them hold.
pub trait Share {
    fn text(&mut self, text: &Arc<str>) -> Arc<str>;
    fn owners(&mut self, owners: &Arc<[OwnerReference]>) -> Arc<[OwnerReference]>;
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            version: self.version.clone(),
            owners: self.owners.clone(),
            instance: self.instance.clone(),
            content: self.content,
            body: Mutex::new(self.body.lock().expect("packed lock").clone()),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Packed<K> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Packed")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("settled", &self.is_settled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;

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
        let dictionary = Dictionary::default();
        let packed = Packed::pack(&deployment, &dictionary);
        assert_eq!(packed.unpack(&dictionary), deployment);
        assert_eq!(&**packed.name(), "shop-backend");
        assert_eq!(packed.uid().as_deref(), Some("u1"));
        assert_eq!(packed.version(), &Version::Revision(7));
        assert_eq!(packed.owners().unwrap()[0].uid, "s1");
        assert_eq!(packed.instance().map(|instance| &**instance), Some("shop"));
        let meta = packed.metadata();
        assert_eq!(meta.name.as_deref(), Some("shop-backend"));
        assert_eq!(meta.labels.unwrap().len(), 1, "of the labels, the instance");
    }

    #[test]
    fn uids_and_versions_read_back_as_they_were_written() {
        let dictionary = Dictionary::default();
        for (uid, version) in [
            ("0b7c3a9e-2f41-4d6a-9c1e-5a8f0e2d4b61", "12"),
            ("0B7C3A9E-2F41-4D6A-9C1E-5A8F0E2D4B61", "007"),
            ("u1", "v3"),
        ] {
            let config: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "a", "name": "c", "uid": uid, "resourceVersion": version},
            }))
            .unwrap();
            let packed = Packed::pack(&config, &dictionary);
            assert_eq!(packed.unpack(&dictionary), config);
            assert_eq!(packed.uid().as_deref(), Some(uid));
            assert_eq!(packed.metadata().resource_version.as_deref(), Some(version));
        }
        let packed = Packed::pack(&ConfigMap::default(), &dictionary);
        assert_eq!(packed.unpack(&dictionary), ConfigMap::default());
        assert_eq!(
            Version::Revision(9).order(&Version::Revision(10)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Version::parse(Some("x")).order(&Version::parse(Some("x"))),
            Some(Ordering::Equal)
        );
        assert_eq!(Version::parse(Some("x")).order(&Version::Revision(1)), None);
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
        let dictionary = &Dictionary::default();
        let packed = Packed::pack(&object, dictionary);
        let json_len = |object: &Deployment| serde_json::to_vec(object).unwrap().len();
        let whole = json_len(&packed.unpack(dictionary));
        assert!(!packed.holds(&object, Some(1), |_, _| false, dictionary));
        assert!(!packed.is_settled(), "an object that differs stays whole");
        assert!(packed.holds(&object, None, |_, _| true, dictionary));
        assert!(
            !packed.is_settled(),
            "without a desired hash nothing stands in for the comparison"
        );

        assert!(packed.holds(&object, Some(1), |_, _| true, dictionary));
        assert!(packed.is_settled());
        let settled = json_len(&packed.unpack(dictionary));
        assert!(settled < whole / 2, "{settled} of {whole} bytes");
        let compared_again = |_: &Deployment, _: &Deployment| -> bool { panic!("compared again") };
        assert!(packed.holds(&object, Some(1), compared_again, dictionary));
        assert!(!packed.holds(&object, Some(2), compared_again, dictionary));
        let residue = packed.unpack(dictionary);
        assert_eq!(residue.metadata, object.metadata);
        assert_eq!(
            residue.spec.template.spec.unwrap().containers[0]
                .image
                .as_deref(),
            Some("shop:1")
        );
    }

    fn backend(stack: &str, image: &str) -> Deployment {
        let env: Vec<_> = (0..30)
            .map(|n| serde_json::json!({"name": format!("SETTING_{n}"), "value": format!("value {n}")}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "a", "name": format!("{stack}-backend"),
                         "labels": {LABEL_INSTANCE: stack},
                         "annotations": {"appstack.dev/desired-hash": format!("{:x}", stack.len() * 7919)}},
            "spec": {"selector": {"matchLabels": {LABEL_INSTANCE: stack}},
                     "template": {"spec": {"containers": [
                         {"name": "backend", "image": image, "env": env}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn objects_pack_small_once_the_dictionary_knows_their_shape() {
        let json = serde_json::to_vec(&backend("blog", "blog:1")).unwrap();
        let alone = lz4_flex::block::compress_prepend_size(&json).len();
        let dictionary = Dictionary::default();
        let first = Packed::pack(&backend("shop", "shop:1"), &dictionary);
        assert!(!dictionary.is_empty(), "the first of its shape is learnt");
        let learnt = dictionary.len();
        let second = Packed::pack(&backend("blog", "blog:1"), &dictionary);
        assert!(
            second.packed_len() * 5 < alone,
            "{} bytes against {alone} alone",
            second.packed_len()
        );
        assert_eq!(
            dictionary.len(),
            learnt,
            "a known shape is not learnt again"
        );

        // Another shape grows the dictionary; what was packed before still
        // reads back.
        let mut other = ConfigMap::default();
        other.metadata.name = Some("other".into());
        other.data = Some(
            (0..40)
                .map(|n| (format!("key{n}"), format!("{n:x}{n}")))
                .collect(),
        );
        let other: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "other"},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": other.data}}},
        }))
        .unwrap();
        let third = Packed::pack(&other, &dictionary);
        assert!(dictionary.len() > learnt);
        assert_eq!(first.unpack(&dictionary), backend("shop", "shop:1"));
        assert_eq!(second.unpack(&dictionary), backend("blog", "blog:1"));
        assert_eq!(third.unpack(&dictionary), other);
    }
}
