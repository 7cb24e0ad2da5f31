//! Caches: what the controller knows of the cluster, kept current by
//! watches so a reconcile reads memory instead of sending requests.
//!
//! One store per child kind, label-filtered to this operator's children and
//! stripped of what neither the comparison nor the status reads
//! (`managedFields`, a Job's pod template, a volume's spec). Every object is
//! kept packed (see [`super::packed`]), on a shelf of our own (see
//! [`super::shelf`]), and decoded when a pass reads it. The controller's
//! own store holds only each stack's key.
//! Secrets are
//! watched whole, because users' Secrets that stacks reference carry no
//! label of ours: the data of a Secret is kept only while it is ours or a
//! stack references it (an index maps (namespace, name) to those stacks).
//!
//! Every watch event wakes the stacks it concerns, through one trigger
//! channel, after the store holds the event: a reconcile woken by a Job's
//! completion reads the completed Job.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::children::{self, LABEL_INSTANCE};
use crate::crd::AppStack;
use crate::runtime::metrics::{self, Metrics};
use crate::runtime::packed::{Dictionary, Packed, Settle, Version};
use crate::runtime::shelf::{Change, Sharing, Shelf};
use crate::runtime::watch;

/// How often the ServiceMonitor and HTTPRoute APIs are looked for (and
/// looked for again), so installing the Prometheus Operator or the Gateway
/// API later needs no restart.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// Marks a cached Secret whose data was not kept: no stack referenced it
/// when it was last seen. Never sent to the API server.
const WITHOUT_DATA: &str = "appstack.dev/cached-without-data";

/// How many deletions a [`KindCache`] remembers the UIDs of: enough for
/// every deletion shown while one request is in flight.
const GONE_REMEMBERED: usize = 256;

/// What a [`KindCache`] knows that its watch has not shown yet.
enum Recent<K> {
    /// This process wrote (or freshly read) the object.
    Written(Arc<K>),
    /// This process deleted the object with this UID.
    Deleted(Option<String>),
}

/// One kind's store, plus what this process wrote since its watch last
/// spoke: a reconcile that runs before the watch event of its own write
/// reads the written object, not the older cached one.
pub struct KindCache<K: Resource + 'static> {
    shelf: Shelf<K>,
    /// What this kind's objects are packed against.
    dictionary: Dictionary,
    dyntype: K::DynamicType,
    recent: Mutex<HashMap<(String, String), Recent<K>>>,
    /// The UIDs of the objects the watch last showed deleted, newest last:
    /// a copy read or written before its deletion and recorded after it is
    /// not kept. Locked after `recent`.
    gone: Mutex<VecDeque<String>>,
}

/// What one kind's cache holds (see [`KindCache::footprint`]).
#[derive(Clone, Debug, Default)]
pub struct Footprint {
    pub kind: String,
    /// Objects kept whole.
    pub whole: usize,
    /// Objects settled: found to hold what their stack desires.
    pub settled: usize,
    /// Bytes of the packed bodies.
    pub packed_bytes: usize,
}

/// An object a [`KindCache`] finds: the cached one, or the one this
/// process wrote since.
enum Found<K> {
    Cached(Arc<Packed<K>>),
    Written(Arc<K>),
}

impl<K> KindCache<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + 'static,
{
    fn new(dyntype: K::DynamicType, sharing: &Sharing) -> Self {
        Self {
            shelf: Shelf::sharing(sharing),
            dictionary: Dictionary::default(),
            dyntype,
            recent: Mutex::new(HashMap::new()),
            gone: Mutex::new(VecDeque::new()),
        }
    }

    /// Where the object as last seen or written is.
    fn find(&self, namespace: &str, name: &str) -> Option<Found<K>> {
        let cached = self.shelf.get(namespace, name);
        let recent = self.recent.lock().expect("cache lock");
        match recent.get(&(namespace.to_string(), name.to_string())) {
            None => cached.map(Found::Cached),
            Some(Recent::Written(written)) => match cached {
                Some(cached) if newer(cached.version(), &Version::of(written.as_ref())) => {
                    Some(Found::Cached(cached))
                }
                _ => Some(Found::Written(written.clone())),
            },
            Some(Recent::Deleted(uid)) => cached
                .filter(|cached| cached.uid() != *uid)
                .map(Found::Cached),
        }
    }

    /// The object as last seen or written. Of a settled one (see
    /// [`Self::holds`]), what [`Settle::residue`] keeps.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.find(namespace, name).map(|found| match found {
            Found::Cached(cached) => Arc::new(cached.unpack(&self.dictionary)),
            Found::Written(written) => written,
        })
    }

    /// Whether the object as last seen or written holds `desired` (`None`
    /// when there is none), by `matches` or, for a cached object settled at
    /// `hash`, by its desired hash (see [`Packed::holds`]).
    pub fn holds(
        &self,
        namespace: &str,
        desired: &K,
        hash: Option<u64>,
        matches: impl FnOnce(&K, &K) -> bool,
    ) -> Option<bool>
    where
        K: Settle,
    {
        Some(match self.find(namespace, &desired.name_any())? {
            Found::Cached(cached) => cached.holds(desired, hash, matches, &self.dictionary),
            Found::Written(written) => matches(desired, &written),
        })
    }

    /// The metadata of the object as last seen or written, read without
    /// decoding the object (of a cached one, what [`Packed`] keeps).
    pub fn metadata(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.find(namespace, name).map(|found| match found {
            Found::Cached(cached) => cached.metadata(),
            Found::Written(written) => written.meta().clone(),
        })
    }

    /// The metadata of one stack's objects (name, UID, owners, labels the
    /// cache looks up), without decoding them.
    pub fn metadata_of_stack(&self, namespace: &str, stack: &str) -> Vec<ObjectMeta> {
        self.names_of_stack(namespace, stack)
            .iter()
            .filter_map(|name| self.metadata(namespace, name))
            .filter(|meta| {
                meta.labels
                    .as_ref()
                    .and_then(|labels| labels.get(LABEL_INSTANCE))
                    .map(String::as_str)
                    == Some(stack)
            })
            .collect()
    }

    /// The names of the objects the store or this process's writes label
    /// with `stack` as their instance.
    fn names_of_stack(&self, namespace: &str, stack: &str) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .shelf
            .names_of(namespace, stack)
            .iter()
            .map(|name| name.to_string())
            .collect();
        let recent = self.recent.lock().expect("cache lock");
        for ((written_namespace, name), recent) in recent.iter() {
            if let Recent::Written(written) = recent
                && written_namespace == namespace
                && written.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(stack)
            {
                names.insert(name.clone());
            }
        }
        names
    }

    /// The objects of one stack: labelled with its name as instance, in its
    /// namespace.
    pub fn of_stack(&self, namespace: &str, stack: &str) -> Vec<Arc<K>> {
        self.names_of_stack(namespace, stack)
            .iter()
            .filter_map(|name| self.get(namespace, name))
            .filter(|object| object.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(stack))
            .collect()
    }

    /// Remembers an object this process read fresh: kept even at the
    /// version the store holds, which may lack what the fresh copy carries
    /// (a referenced Secret's data).
    pub fn record(&self, object: K) {
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let mut recent = self.recent.lock().expect("cache lock");
        if self.shown_gone(&object) {
            return;
        }
        recent.insert(key, Recent::Written(Arc::new(object)));
    }

    /// Whether the watch has shown `object` deleted (checked under the
    /// `recent` lock, which [`Self::seen`] holds while it remembers one).
    fn shown_gone(&self, object: &K) -> bool {
        let Some(uid) = object.meta().uid.as_deref() else {
            return false;
        };
        self.gone
            .lock()
            .expect("cache lock")
            .iter()
            .any(|gone| gone == uid)
    }

    /// Remembers an object as this process's write returned it, unless the
    /// watch showed it (or something newer) first: then the store is read,
    /// and nothing is kept twice. Checked under the lock that
    /// [`Self::seen`] takes after the store is written, so an event racing
    /// the write is either in the store or clears what is kept here.
    pub fn record_written(&self, object: K) {
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let mut recent = self.recent.lock().expect("cache lock");
        if self.shown_gone(&object) {
            return;
        }
        let stored = self.shelf.get(&key.0, &key.1);
        if stored.is_some_and(|stored| caught_up(stored.version(), &Version::of(&object))) {
            recent.remove(&key);
            return;
        }
        recent.insert(key, Recent::Written(Arc::new(object)));
    }

    /// Remembers that this process deleted an object, unless the watch
    /// showed the deletion first.
    pub fn record_deleted(&self, namespace: &str, name: &str, uid: Option<String>) {
        let key = (namespace.to_string(), name.to_string());
        let mut recent = self.recent.lock().expect("cache lock");
        let shown = match self.shelf.get(namespace, name) {
            Some(stored) => stored.uid() != uid,
            // Unless this process's create of it is not shown either.
            None => !recent.contains_key(&key),
        };
        if shown {
            recent.remove(&key);
            return;
        }
        recent.insert(key, Recent::Deleted(uid));
    }

    /// How many objects the store holds, whole and settled, and the bytes
    /// of their packed bodies and of the dictionary they are packed
    /// against.
    pub fn footprint(&self) -> Footprint {
        let mut footprint = Footprint {
            kind: K::kind(&self.dyntype).into_owned(),
            packed_bytes: self.dictionary.len(),
            ..Footprint::default()
        };
        for object in self.shelf.state() {
            if object.is_settled() {
                footprint.settled += 1;
            } else {
                footprint.whole += 1;
            }
            footprint.packed_bytes += object.packed_len();
        }
        footprint
    }

    /// How many writes and deletions of this process the watch has not
    /// shown yet.
    pub fn unseen_writes(&self) -> usize {
        self.recent.lock().expect("cache lock").len()
    }

    /// Forgets what the watch has now shown: the object's own event
    /// arrived, so the store is at least as new.
    fn seen(&self, object: &Packed<K>, deleted: bool) {
        let key = (object.namespace().to_string(), object.name().to_string());
        let mut recent = self.recent.lock().expect("cache lock");
        if deleted && let Some(uid) = object.uid() {
            let mut gone = self.gone.lock().expect("cache lock");
            if gone.len() == GONE_REMEMBERED {
                gone.pop_front();
            }
            gone.push_back(uid);
        }
        let shown = match recent.get(&key) {
            None => false,
            Some(Recent::Written(written)) => {
                deleted || caught_up(object.version(), &Version::of(written.as_ref()))
            }
            Some(Recent::Deleted(uid)) => deleted || object.uid() != *uid,
        };
        if shown {
            recent.remove(&key);
        }
    }

    /// Applies one watch event to the store, and settles what this process
    /// wrote or deleted that the event shows.
    pub fn apply_event(&self, event: Event<K>) -> Change<K> {
        let change = self.shelf.apply(self.pack(event));
        match &change {
            Change::Applied(object) => self.seen(object, false),
            Change::Deleted(object) => self.seen(object, true),
            Change::Listed => {
                for object in self.shelf.state() {
                    self.seen(&object, false);
                }
            }
            Change::Listing => {}
        }
        change
    }

    /// The event with its object packed against this kind's dictionary.
    fn pack(&self, event: Event<K>) -> Event<Packed<K>> {
        map_owned(event, |object| Packed::pack_owned(object, &self.dictionary))
    }

    pub async fn wait_until_ready(&self) -> bool {
        self.shelf.wait_until_ready().await
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<Packed<K>>> {
        self.shelf.state()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.shelf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shelf.is_empty()
    }
}

/// The watch has shown `written` (or something after it).
fn caught_up(cached: &Version, written: &Version) -> bool {
    cached.order(written).is_none_or(|order| order.is_ge())
}

/// The cache holds something after `written`. At the same version the
/// written copy is preferred: it may carry what the cache strips (a
/// referenced Secret's data, read fresh).
fn newer(cached: &Version, written: &Version) -> bool {
    cached.order(written).is_none_or(|order| order.is_gt())
}

/// Which stacks read which user Secrets: (namespace, Secret name) → stack
/// names, and each stack's current list, so an update replaces it.
#[derive(Default)]
pub struct SecretIndex {
    readers: HashMap<(String, String), BTreeSet<String>>,
    read_by: HashMap<(String, String), Vec<String>>,
}

impl SecretIndex {
    /// Records the Secrets `stack` reads now.
    pub fn update(&mut self, stack: &AppStack) {
        let namespace = stack.namespace().unwrap_or_default();
        let name = stack.name_any();
        self.remove(&namespace, &name);
        let secrets: Vec<String> = stack
            .spec
            .referenced_secrets()
            .into_iter()
            .map(String::from)
            .collect();
        for secret in &secrets {
            self.readers
                .entry((namespace.clone(), secret.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.read_by.insert((namespace, name), secrets);
    }

    /// Forgets a deleted stack.
    pub fn remove(&mut self, namespace: &str, stack: &str) {
        let key = (namespace.to_string(), stack.to_string());
        for secret in self.read_by.remove(&key).unwrap_or_default() {
            let secret_key = (namespace.to_string(), secret);
            if let Some(readers) = self.readers.get_mut(&secret_key) {
                readers.remove(stack);
                if readers.is_empty() {
                    self.readers.remove(&secret_key);
                }
            }
        }
    }

    /// The stacks reading Secret `name` in `namespace`.
    pub fn readers(&self, namespace: &str, name: &str) -> Vec<String> {
        self.readers
            .get(&(namespace.to_string(), name.to_string()))
            .map(|readers| readers.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Every cache of one scope (all namespaces, or one namespace).
pub struct Caches {
    /// AppStacks, with what this process last wrote of each (status,
    /// finalizers), so a pass never starts from an older status than the
    /// one it wrote and never repeats a transition or an Event.
    pub stacks: KindCache<AppStack>,
    /// Each stack's key, for the controller: its passes read the stack
    /// from [`Self::stacks`].
    pub keys: Store<StackKey>,
    /// The condition each stack holds, as last seen, for the metrics: the
    /// stacks are packed, and reading each one back per scrape would cost
    /// more than the scrape.
    holding: Mutex<HashMap<(String, String), &'static str>>,
    pub secrets: KindCache<Secret>,
    pub config_maps: KindCache<ConfigMap>,
    pub services: KindCache<Service>,
    pub statefulsets: KindCache<StatefulSet>,
    pub jobs: KindCache<Job>,
    pub deployments: KindCache<Deployment>,
    pub volumes: KindCache<PersistentVolumeClaim>,
    pub network_policies: KindCache<NetworkPolicy>,
    pub disruption_budgets: KindCache<PodDisruptionBudget>,
    pub ingresses: KindCache<Ingress>,
    /// ServiceMonitors; its watch runs only while the API is served.
    pub service_monitors: KindCache<DynamicObject>,
    /// The ServiceMonitor API, once discovered and its cache synced.
    service_monitor_api: RwLock<Option<ApiResource>>,
    /// HTTPRoutes; its watch runs only while the API is served.
    pub http_routes: KindCache<DynamicObject>,
    /// The HTTPRoute API, once discovered and its cache synced.
    http_route_api: RwLock<Option<ApiResource>>,
    index: RwLock<SecretIndex>,
}

/// The writing half of [`Caches::keys`], fed by the AppStack watch.
pub type StackWriter = reflector::store::Writer<StackKey>;

/// What the controller keeps of a stack: its namespace, name and UID.
#[derive(Clone, Debug)]
pub struct StackKey {
    metadata: ObjectMeta,
}

impl StackKey {
    fn of(stack: &impl Resource) -> Self {
        let meta = stack.meta();
        Self {
            metadata: ObjectMeta {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                ..ObjectMeta::default()
            },
        }
    }
}

impl Resource for StackKey {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dynamic: &()) -> Cow<'_, str> {
        AppStack::kind(dynamic)
    }

    fn group(dynamic: &()) -> Cow<'_, str> {
        AppStack::group(dynamic)
    }

    fn version(dynamic: &()) -> Cow<'_, str> {
        AppStack::version(dynamic)
    }

    fn plural(dynamic: &()) -> Cow<'_, str> {
        AppStack::plural(dynamic)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Read as the AppStack it stands for: the controller's store needs a kind
/// the API could send.
impl<'de> Deserialize<'de> for StackKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AppStack::deserialize(deserializer).map(|stack| StackKey::of(&stack))
    }
}

impl Caches {
    /// Empty caches, and the writer of the controller's keys.
    pub fn new() -> (Arc<Self>, StackWriter) {
        let (keys, writer) = reflector::store();
        let sharing = Sharing::default();
        let caches = Arc::new(Self {
            stacks: KindCache::new((), &sharing),
            keys,
            holding: Mutex::new(HashMap::new()),
            secrets: KindCache::new((), &sharing),
            config_maps: KindCache::new((), &sharing),
            services: KindCache::new((), &sharing),
            statefulsets: KindCache::new((), &sharing),
            jobs: KindCache::new((), &sharing),
            deployments: KindCache::new((), &sharing),
            volumes: KindCache::new((), &sharing),
            network_policies: KindCache::new((), &sharing),
            disruption_budgets: KindCache::new((), &sharing),
            ingresses: KindCache::new((), &sharing),
            service_monitors: KindCache::new(
                children::monitoring::service_monitor_resource(),
                &sharing,
            ),
            service_monitor_api: RwLock::new(None),
            http_routes: KindCache::new(children::expose::http_route_resource(), &sharing),
            http_route_api: RwLock::new(None),
            index: RwLock::new(SecretIndex::default()),
        });
        (caches, writer)
    }

    /// The ServiceMonitor API while it is served and its cache synced.
    pub fn service_monitor_api(&self) -> Option<ApiResource> {
        self.service_monitor_api.read().expect("api lock").clone()
    }

    /// The HTTPRoute API while it is served and its cache synced.
    pub fn http_route_api(&self) -> Option<ApiResource> {
        self.http_route_api.read().expect("api lock").clone()
    }

    /// The stacks that read Secret `name` in `namespace`.
    pub fn readers_of(&self, namespace: &str, name: &str) -> Vec<String> {
        self.index
            .read()
            .expect("index lock")
            .readers(namespace, name)
    }

    fn references(&self, namespace: &str, name: &str) -> bool {
        !self.readers_of(namespace, name).is_empty()
    }

    /// Whether the cached Secret lacks its data (no stack read it when it
    /// was last seen); the reader must fetch it.
    pub fn without_data(secret: &Secret) -> bool {
        secret.annotations().contains_key(WITHOUT_DATA)
    }

    /// Applies one AppStack watch event to the store and the index, and
    /// returns the stacks it shows gone: the deleted one, or, when a relist
    /// completes, every stack cached before that the new list lacks (deleted
    /// while the watch was away, so no delete event ever came).
    pub fn apply_stack_event(
        &self,
        writer: &mut StackWriter,
        event: &Event<AppStack>,
    ) -> Vec<Arc<Packed<AppStack>>> {
        let before = matches!(event, Event::InitDone).then(|| self.stacks.state());
        let change = self.stacks.apply_event(event.clone());
        writer.apply_watcher_event(&map_event(event, StackKey::of));
        let gone = match (change, before) {
            (Change::Deleted(stack), _) => vec![stack],
            (Change::Listed, Some(before)) => {
                let listed: BTreeSet<Option<String>> = self
                    .stacks
                    .state()
                    .iter()
                    .map(|stack| stack.uid())
                    .collect();
                before
                    .into_iter()
                    .filter(|stack| !listed.contains(&stack.uid()))
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut index = self.index.write().expect("index lock");
        let mut holding = self.holding.lock().expect("holding lock");
        if let Event::Apply(stack) | Event::InitApply(stack) = event {
            index.update(stack);
            holding.insert(
                (stack.namespace().unwrap_or_default(), stack.name_any()),
                metrics::holding(stack),
            );
        }
        for stack in &gone {
            let namespace = stack.namespace().to_string();
            index.remove(&namespace, stack.name());
            holding.remove(&(namespace, stack.name().to_string()));
            // What this process last wrote of it no longer stands for it.
            self.stacks.seen(stack, true);
        }
        gone
    }

    /// What each kind's cache holds, for the metrics.
    pub fn footprints(&self) -> Vec<Footprint> {
        vec![
            self.stacks.footprint(),
            self.secrets.footprint(),
            self.config_maps.footprint(),
            self.services.footprint(),
            self.statefulsets.footprint(),
            self.jobs.footprint(),
            self.deployments.footprint(),
            self.volumes.footprint(),
            self.network_policies.footprint(),
            self.disruption_budgets.footprint(),
            self.ingresses.footprint(),
            self.service_monitors.footprint(),
            self.http_routes.footprint(),
        ]
    }

    /// The condition each cached stack holds (see [`metrics::holding`]).
    pub fn stacks_holding(&self) -> Vec<&'static str> {
        self.holding
            .lock()
            .expect("holding lock")
            .values()
            .copied()
            .collect()
    }

    /// A Secret as the cache keeps it: ours or referenced with its data,
    /// any other without.
    fn slim_secret(&self, mut secret: Secret) -> Secret {
        secret.slim();
        let ours = secret
            .labels()
            .get(children::LABEL_MANAGED_BY)
            .is_some_and(|value| value == children::MANAGED_BY);
        let namespace = secret.namespace().unwrap_or_default();
        if !ours && !self.references(&namespace, &secret.name_any()) {
            secret.data = None;
            secret.string_data = None;
            secret
                .annotations_mut()
                .insert(WITHOUT_DATA.into(), "true".into());
        }
        secret
    }
}

/// Cached objects keep what the comparison and the status read.
pub trait Slim {
    fn slim(&mut self);
}

fn slim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

macro_rules! slim_metadata_only {
    ($($kind:ty),*) => {$(
        impl Slim for $kind {
            fn slim(&mut self) {
                slim_meta(&mut self.metadata);
            }
        }
    )*};
}
slim_metadata_only!(
    Secret,
    ConfigMap,
    Service,
    StatefulSet,
    Deployment,
    DynamicObject,
    AppStack,
    NetworkPolicy,
    PodDisruptionBudget,
    Ingress
);

impl Slim for Job {
    /// A Job is never patched: its status and labels matter, not its pods.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
        }
    }
}

impl Slim for PersistentVolumeClaim {
    /// Only the volume's ownerReferences are ever read.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

/// Children kept whole: a Secret's values are not in its desired hash, and
/// a Job is small once slimmed.
macro_rules! kept_whole {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                None
            }
        }
    )*};
}
kept_whole!(Secret, Job);

/// Children nothing reads but their metadata and status once settled.
macro_rules! settle_to_status {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                Some(Self {
                    metadata: self.metadata.clone(),
                    status: self.status.clone(),
                    ..Self::default()
                })
            }
        }
    )*};
}
settle_to_status!(Service, PodDisruptionBudget, Ingress);

/// Children nothing reads but their metadata once settled (a ConfigMap's
/// version: the backend's pods roll on it).
macro_rules! settle_to_metadata {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                Some(Self {
                    metadata: self.metadata.clone(),
                    ..Self::default()
                })
            }
        }
    )*};
}
settle_to_metadata!(ConfigMap, NetworkPolicy);

impl Settle for StatefulSet {
    /// The status reports ready replicas against the wanted ones.
    fn residue(&self) -> Option<Self> {
        Some(Self {
            metadata: self.metadata.clone(),
            spec: StatefulSetSpec {
                replicas: self.spec.replicas,
                ..StatefulSetSpec::default()
            },
            status: self.status.clone(),
        })
    }
}

impl Settle for Deployment {
    /// The status reports available replicas against the wanted ones, and
    /// the image they run.
    fn residue(&self) -> Option<Self> {
        Some(Self {
            metadata: self.metadata.clone(),
            spec: DeploymentSpec {
                replicas: self.spec.replicas,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: self.spec.template.spec.as_ref().map(|pod| PodSpec {
                        containers: pod
                            .containers
                            .iter()
                            .take(1)
                            .map(|container| Container {
                                name: container.name.clone(),
                                image: container.image.clone(),
                                ..Container::default()
                            })
                            .collect(),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            status: self.status.clone(),
        })
    }
}

impl Settle for DynamicObject {
    /// A ServiceMonitor or HTTPRoute: the route's status is read.
    fn residue(&self) -> Option<Self> {
        let mut residue = DynamicObject {
            types: self.types.clone(),
            metadata: self.metadata.clone(),
            data: serde_json::Value::Object(Default::default()),
        };
        if let Some(status) = self.data.get("status") {
            residue.data["status"] = status.clone();
        }
        Some(residue)
    }
}

/// The event with `map` of its object, which it gives up.
fn map_owned<K, T>(event: Event<K>, map: impl Fn(K) -> T) -> Event<T> {
    match event {
        Event::Apply(object) => Event::Apply(map(object)),
        Event::Delete(object) => Event::Delete(map(object)),
        Event::InitApply(object) => Event::InitApply(map(object)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// The event with `map` of its object.
fn map_event<K, T>(event: &Event<K>, map: impl Fn(&K) -> T) -> Event<T> {
    match event {
        Event::Apply(object) => Event::Apply(map(object)),
        Event::Delete(object) => Event::Delete(map(object)),
        Event::InitApply(object) => Event::InitApply(map(object)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

fn slimmed<K: Slim>(mut object: K) -> K {
    object.slim();
    object
}

/// Wakes the reconcile of stacks.
pub type Triggers = UnboundedSender<ObjectRef<StackKey>>;

fn wake(triggers: &Triggers, namespace: &str, stack: &str) {
    let _ = triggers.unbounded_send(ObjectRef::new(stack).within(namespace));
}

/// Wakes the stack a child belongs to (by its instance label).
fn wake_owner<K>(triggers: &Triggers, object: &Packed<K>) {
    if let Some(stack) = object.instance()
        && !object.namespace().is_empty()
    {
        wake(triggers, object.namespace(), stack);
    }
}

/// The watch tasks of one scope's caches; dropping this stops them.
pub struct Watches {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Namespaced API of `K` in `scope` (all namespaces when `None`).
pub fn scoped<K>(client: Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match scope {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

/// Starts every watch of one scope and returns once every cache has
/// listed. AppStacks are listed first, so the Secret watch already knows
/// which Secrets stacks reference and keeps their data. `forget` is called
/// with the UID of each deleted stack.
pub async fn start(
    client: Client,
    scope: Option<String>,
    caches: Arc<Caches>,
    stacks_writer: StackWriter,
    triggers: Triggers,
    forget: impl Fn(&str) + Send + Sync + 'static,
    metrics: Metrics,
) -> Watches {
    let scope = scope.as_deref();
    let mut tasks = Vec::new();

    let stack_events = watch::resilient(
        "AppStack",
        watcher::watcher(scoped::<AppStack>(client.clone(), scope), watch::config()),
    );
    tasks.push(tokio::spawn(feed_stacks(
        stack_events,
        caches.clone(),
        stacks_writer,
        triggers.clone(),
        forget,
    )));
    let _ = caches.stacks.wait_until_ready().await;

    // Secrets: every Secret in scope, so referenced ones are seen too.
    let secret_events = watch::resilient(
        "Secret",
        watcher::watcher(scoped::<Secret>(client.clone(), scope), watch::config()),
    );
    let secret_caches = caches.clone();
    tasks.push(spawn_cache(
        secret_events,
        caches.clone(),
        |caches| &caches.secrets,
        move |secret| secret_caches.slim_secret(secret),
        {
            let caches = caches.clone();
            let triggers = triggers.clone();
            move |secret: &Packed<Secret>| {
                let namespace = secret.namespace();
                let name = secret.name();
                wake_owner(&triggers, secret);
                for stack in caches.readers_of(namespace, name) {
                    wake(&triggers, namespace, &stack);
                }
                // A Secret of a stack's own name that carries no label of
                // ours: `<stack>-db` restored by hand from a backup.
                for suffix in ["-db", "-env"] {
                    if let Some(stack) = name.strip_suffix(suffix)
                        && caches.stacks.metadata(namespace, stack).is_some()
                    {
                        wake(&triggers, namespace, stack);
                    }
                }
            }
        },
    ));
    macro_rules! child_watch {
        ($kind:ty, $field:ident) => {{
            let events = watch::resilient(
                <$kind as Resource>::kind(&()).into_owned(),
                watcher::watcher(scoped::<$kind>(client.clone(), scope), children_config()),
            );
            let triggers = triggers.clone();
            tasks.push(spawn_cache(
                events,
                caches.clone(),
                |caches| &caches.$field,
                slimmed,
                move |object: &Packed<$kind>| wake_owner(&triggers, object),
            ));
        }};
    }
    child_watch!(ConfigMap, config_maps);
    child_watch!(Service, services);
    child_watch!(StatefulSet, statefulsets);
    child_watch!(Job, jobs);
    child_watch!(Deployment, deployments);
    child_watch!(PersistentVolumeClaim, volumes);
    child_watch!(NetworkPolicy, network_policies);
    child_watch!(PodDisruptionBudget, disruption_budgets);
    child_watch!(Ingress, ingresses);

    tasks.push(tokio::spawn(discover(
        Discovered {
            gvk: children::monitoring::service_monitor_gvk(),
            cache: |caches| &caches.service_monitors,
            api: |caches| &caches.service_monitor_api,
        },
        client.clone(),
        scope.map(String::from),
        caches.clone(),
        triggers.clone(),
        metrics.clone(),
    )));
    tasks.push(tokio::spawn(discover(
        Discovered {
            gvk: children::expose::http_route_gvk(),
            cache: |caches| &caches.http_routes,
            api: |caches| &caches.http_route_api,
        },
        client,
        scope.map(String::from),
        caches.clone(),
        triggers,
        metrics,
    )));

    for ready in [
        caches.secrets.wait_until_ready().await,
        caches.config_maps.wait_until_ready().await,
        caches.services.wait_until_ready().await,
        caches.statefulsets.wait_until_ready().await,
        caches.jobs.wait_until_ready().await,
        caches.deployments.wait_until_ready().await,
        caches.volumes.wait_until_ready().await,
        caches.network_policies.wait_until_ready().await,
        caches.disruption_budgets.wait_until_ready().await,
        caches.ingresses.wait_until_ready().await,
    ] {
        debug_assert!(ready, "a cache's watch ended before it listed");
    }
    info!(stacks = caches.stacks.len(), "caches synced");
    Watches { tasks }
}

/// Feeds the AppStack cache from its watch: wakes each stack applied (all
/// of them after a relist) and calls `forget` with the UID of each stack
/// gone, whether a delete event said so or a relist no longer lists it.
async fn feed_stacks(
    events: impl Stream<Item = watcher::Result<Event<AppStack>>>,
    caches: Arc<Caches>,
    mut writer: StackWriter,
    triggers: Triggers,
    forget: impl Fn(&str),
) {
    let mut events = std::pin::pin!(events);
    while let Some(Ok(event)) = events.next().await {
        let event = map_owned(event, slimmed);
        for stack in caches.apply_stack_event(&mut writer, &event) {
            forget(&stack.uid().unwrap_or_default());
        }
        match &event {
            Event::Apply(stack) => wake_stack(&triggers, stack),
            Event::InitDone => {
                for stack in caches.stacks.state() {
                    wake_packed(&triggers, &stack);
                }
            }
            Event::Delete(_) | Event::Init | Event::InitApply(_) => {}
        }
    }
}

fn wake_stack(triggers: &Triggers, stack: &impl Resource) {
    wake(
        triggers,
        &stack.namespace().unwrap_or_default(),
        &stack.name_any(),
    );
}

fn wake_packed(triggers: &Triggers, stack: &Packed<AppStack>) {
    wake(triggers, stack.namespace(), stack.name());
}

/// Children are watched by the managed-by label.
fn children_config() -> watcher::Config {
    watch::config().labels(&children::managed_selector())
}

/// Feeds one kind's cache from its watch, slimming each object, and calls
/// `wake` with every object applied or deleted (and, after a relist, every
/// object listed) once the cache holds it.
fn spawn_cache<K>(
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    caches: Arc<Caches>,
    cache: fn(&Caches) -> &KindCache<K>,
    slim: impl Fn(K) -> K + Send + 'static,
    wake: impl Fn(&Packed<K>) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Slim + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Send + Sync,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(Ok(event)) = events.next().await {
            let cache = cache(&caches);
            match cache.apply_event(map_owned(event, &slim)) {
                Change::Applied(object) | Change::Deleted(object) => wake(&object),
                Change::Listed => {
                    for object in cache.state() {
                        wake(&object);
                    }
                }
                Change::Listing => {}
            }
        }
    })
}

/// A kind whose API may or may not be served: its cache, and where the
/// discovered API is published once that cache has listed.
struct Discovered {
    gvk: GroupVersionKind,
    cache: fn(&Caches) -> &KindCache<DynamicObject>,
    api: fn(&Caches) -> &RwLock<Option<ApiResource>>,
}

/// Looks for the kind's API every [`DISCOVERY_INTERVAL`]; once it is
/// served, watches the kind, and publishes the API when that cache has
/// listed, waking every stack so waiting children are written.
async fn discover(
    kind: Discovered,
    client: Client,
    scope: Option<String>,
    caches: Arc<Caches>,
    triggers: Triggers,
    metrics: Metrics,
) {
    let mut watching = false;
    loop {
        let discovered = kube::discovery::pinned_kind(&client, &kind.gvk).await;
        metrics.api_discovery(&kind.gvk.kind);
        match discovered {
            Ok((resource, _)) => {
                if !std::mem::replace(&mut watching, true) {
                    let api = match &scope {
                        Some(namespace) => Api::<DynamicObject>::namespaced_with(
                            client.clone(),
                            namespace,
                            &resource,
                        ),
                        None => Api::all_with(client.clone(), &resource),
                    };
                    let events = watch::resilient(
                        kind.gvk.kind.clone(),
                        watcher::watcher(api, children_config()),
                    );
                    let watch_triggers = triggers.clone();
                    // Lives as long as this discovery task.
                    let _watch = AbortOnDrop(spawn_cache(
                        events,
                        caches.clone(),
                        kind.cache,
                        slimmed,
                        move |object: &Packed<DynamicObject>| wake_owner(&watch_triggers, object),
                    ));
                    (kind.cache)(&caches).wait_until_ready().await;
                    *(kind.api)(&caches).write().expect("api lock") = Some(resource);
                    info!(kind = %kind.gvk.kind, "the API is served; its objects are written");
                    for stack in caches.stacks.state() {
                        wake_packed(&triggers, &stack);
                    }
                    // Keep the watch for the rest of this term.
                    std::future::pending::<()>().await;
                }
            }
            Err(error) => debug!(kind = %kind.gvk.kind, %error, "the API is not served"),
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(namespace: &str, name: &str, version: &str, value: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": name, "resourceVersion": version, "uid": "u1"},
            "data": {"key": k8s_openapi::ByteString(value.as_bytes().to_vec())}
        }))
        .unwrap()
    }

    #[test]
    fn a_write_is_read_back_until_the_watch_catches_up() {
        let (caches, _) = Caches::new();
        caches
            .secrets
            .apply_event(Event::Apply(secret("a", "s", "5", "old")));
        caches.secrets.record(secret("a", "s", "7", "new"));
        let read = |caches: &Caches| {
            caches.secrets.get("a", "s").unwrap().data.clone().unwrap()["key"]
                .0
                .clone()
        };
        assert_eq!(read(&caches), b"new", "the store is older than the write");
        caches
            .secrets
            .apply_event(Event::Apply(secret("a", "s", "8", "newer")));
        assert_eq!(read(&caches), b"newer", "the store caught up");
        caches.secrets.record_deleted("a", "s", Some("u1".into()));
        assert!(
            caches.secrets.get("a", "s").is_none(),
            "deleted here, not yet by the watch"
        );
    }

    #[test]
    fn a_copy_read_before_its_deletion_and_recorded_after_it_is_not_kept() {
        let (caches, _) = Caches::new();
        let shown = secret("a", "s", "5", "old");
        caches.secrets.apply_event(Event::Apply(shown.clone()));
        // A pass reads the Secret fresh; before it records the copy, the
        // Secret is deleted and the watch shows it.
        let read = secret("a", "s", "5", "read");
        caches.secrets.apply_event(Event::Delete(shown));
        caches.secrets.record(read.clone());
        assert!(
            caches.secrets.get("a", "s").is_none(),
            "recorded after it was shown gone"
        );
        caches.secrets.record_written(read);
        assert!(
            caches.secrets.get("a", "s").is_none(),
            "written before it was shown gone"
        );
        assert_eq!(caches.secrets.unseen_writes(), 0);

        // The same name recreated is another object.
        let mut recreated = secret("a", "s", "9", "recreated");
        recreated.metadata.uid = Some("u2".into());
        caches.secrets.record(recreated);
        assert!(caches.secrets.get("a", "s").is_some());
    }

    #[test]
    fn a_write_the_watch_showed_first_is_not_kept_twice() {
        let (caches, _) = Caches::new();
        caches
            .secrets
            .apply_event(Event::Apply(secret("a", "s", "5", "shown")));
        caches
            .secrets
            .record_written(secret("a", "s", "5", "shown"));
        assert_eq!(
            caches.secrets.unseen_writes(),
            0,
            "the store holds it already"
        );
        caches
            .secrets
            .record_written(secret("a", "s", "6", "written"));
        assert_eq!(caches.secrets.unseen_writes(), 1);
        caches
            .secrets
            .apply_event(Event::Apply(secret("a", "s", "6", "written")));
        assert_eq!(caches.secrets.unseen_writes(), 0);

        caches
            .secrets
            .apply_event(Event::Delete(secret("a", "s", "7", "written")));
        caches.secrets.record_deleted("a", "s", Some("u1".into()));
        assert_eq!(
            caches.secrets.unseen_writes(),
            0,
            "the watch showed the deletion"
        );

        let mut created = secret("a", "t", "8", "created");
        created.metadata.uid = Some("u2".into());
        caches.secrets.record_written(created.clone());
        caches.secrets.record_deleted("a", "t", Some("u2".into()));
        assert!(
            caches.secrets.get("a", "t").is_none(),
            "created and deleted before the watch showed either"
        );
        caches.secrets.apply_event(Event::Apply(created));
        assert!(
            caches.secrets.get("a", "t").is_none(),
            "its creation shown late"
        );
    }

    #[test]
    fn a_footprint_counts_whole_and_settled_objects_of_its_kind() {
        let (caches, _) = Caches::new();
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "a", "name": "shop", "resourceVersion": "1"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        caches.services.apply_event(Event::Apply(service.clone()));
        let whole = caches.services.footprint();
        assert_eq!(
            (whole.kind.as_str(), whole.whole, whole.settled),
            ("Service", 1, 0)
        );
        assert_eq!(
            caches.services.holds("a", &service, Some(7), |_, _| true),
            Some(true)
        );
        let settled = caches.services.footprint();
        assert_eq!((settled.whole, settled.settled), (0, 1));
        let body = caches.services.state()[0].packed_len();
        assert_eq!(
            settled.packed_bytes,
            body + caches.services.dictionary.len(),
            "the bodies and the dictionary they are packed against"
        );
    }

    #[test]
    fn the_index_follows_each_stacks_references() {
        let stack = |secret: &str| -> AppStack {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
                "metadata": {"namespace": "a", "name": "shop"},
                "spec": {"database": {"external": {"urlSecretRef": {"name": secret, "key": "url"}}},
                         "backend": {"image": "x"}}
            }))
            .unwrap()
        };
        let mut index = SecretIndex::default();
        index.update(&stack("one"));
        assert_eq!(index.readers("a", "one"), ["shop"]);
        index.update(&stack("two"));
        assert!(
            index.readers("a", "one").is_empty(),
            "the old reference is gone"
        );
        assert_eq!(index.readers("a", "two"), ["shop"]);
        index.remove("a", "shop");
        assert!(index.readers("a", "two").is_empty());
    }

    #[tokio::test]
    async fn a_stack_deleted_while_the_watch_was_away_is_forgotten_too() {
        let stack = |name: &str, uid: &str| -> AppStack {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
                "metadata": {"namespace": "a", "name": name, "uid": uid, "resourceVersion": "1"},
                "spec": {"database": {"external": {"urlSecretRef": {"name": format!("{name}-url"), "key": "url"}}},
                         "backend": {"image": "x"}}
            }))
            .unwrap()
        };
        let events = vec![
            Event::Init,
            Event::InitApply(stack("one", "u1")),
            Event::InitApply(stack("two", "u2")),
            Event::InitApply(stack("three", "u3")),
            Event::InitDone,
            Event::Delete(stack("one", "u1")),
            // The watch was away while "two" was deleted: the relist lacks it.
            Event::Init,
            Event::InitApply(stack("three", "u3")),
            Event::InitDone,
        ];
        let (caches, writer) = Caches::new();
        let (triggers, _woken) = futures::channel::mpsc::unbounded();
        // This process wrote "two"'s status, and the watch never showed it.
        let mut written = stack("two", "u2");
        written.metadata.resource_version = Some("9".into());
        caches.stacks.record(written);
        let forgotten = Arc::new(Mutex::new(Vec::new()));
        let record = forgotten.clone();
        feed_stacks(
            futures::stream::iter(events.into_iter().map(Ok)),
            caches.clone(),
            writer,
            triggers,
            move |uid: &str| record.lock().unwrap().push(uid.to_string()),
        )
        .await;
        assert_eq!(*forgotten.lock().unwrap(), ["u1", "u2"]);
        assert!(caches.stacks.get("a", "two").is_none());
        let key = |name: &str| caches.keys.get(&ObjectRef::new(name).within("a"));
        assert!(key("two").is_none(), "nor queued for passes");
        assert_eq!(key("three").unwrap().uid().as_deref(), Some("u3"));
        assert!(caches.readers_of("a", "two-url").is_empty(), "index pruned");
        assert_eq!(caches.readers_of("a", "three-url"), ["three"]);
    }

    #[test]
    fn unreferenced_secrets_are_cached_without_their_data() {
        let (caches, _) = Caches::new();
        let slim = caches.slim_secret(secret("a", "other", "1", "v"));
        assert!(slim.data.is_none() && Caches::without_data(&slim));
    }

    #[test]
    fn a_residue_keeps_what_the_status_reads() {
        use crate::reconcile::observe::{deployment_check, ingress_check, statefulset_check};
        let statefulset: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-db", "generation": 3},
            "spec": {"replicas": 2, "serviceName": "shop-db", "selector": {},
                     "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "observedGeneration": 3}
        }))
        .unwrap();
        let residue = statefulset.residue().unwrap();
        assert_eq!(statefulset_check(&residue), statefulset_check(&statefulset));
        assert!(residue.spec.template.spec.is_none());

        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-backend", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [
                {"name": "backend", "image": "shop:1", "env": [{"name": "A", "value": "b"}]},
                {"name": "sidecar", "image": "proxy:1"}]}}},
            "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "observedGeneration": 2}
        }))
        .unwrap();
        let residue = deployment.residue().unwrap();
        assert_eq!(deployment_check(&residue), deployment_check(&deployment));
        assert!(deployment_check(&residue).message.contains("shop:1"));

        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop"},
            "spec": {"rules": [{"host": "shop.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
        }))
        .unwrap();
        let url = "https://shop.example.com";
        assert_eq!(
            ingress_check(&ingress.residue().unwrap(), url),
            ingress_check(&ingress, url)
        );

        let route = DynamicObject {
            types: None,
            metadata: ObjectMeta::default(),
            data: serde_json::json!({"spec": {"hostnames": ["shop"]}, "status": {"parents": []}}),
        };
        assert_eq!(
            route.residue().unwrap().data,
            serde_json::json!({"status": {"parents": []}})
        );
        assert!(
            secret("a", "s", "1", "v").residue().is_none(),
            "a Secret's values are not in its desired hash"
        );
    }
}
