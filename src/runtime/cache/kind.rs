//! One kind's cache: its store of packed objects, and what this process
//! wrote or deleted that the kind's watch has not shown yet, so a pass that
//! runs before the watch event of its own write reads the written object.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::packed::{Dictionary, Packed, Settle, Version};
use super::shelf::{Change, Sharing, Shelf};
use crate::children::LABEL_INSTANCE;

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
    /// Whether the kind's API is served: always for built-in kinds; for a
    /// discovered kind, once its watch has listed.
    served: AtomicBool,
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
    pub fn new(dyntype: K::DynamicType, served: bool, sharing: &Sharing) -> Self {
        Self {
            shelf: Shelf::sharing(sharing),
            dictionary: Dictionary::default(),
            dyntype,
            served: AtomicBool::new(served),
            recent: Mutex::new(HashMap::new()),
            gone: Mutex::new(VecDeque::new()),
        }
    }

    /// The dynamic type of the kind's API.
    pub fn dyntype(&self) -> &K::DynamicType {
        &self.dyntype
    }

    /// Whether the kind's API is served (see [`Self::set_served`]).
    pub fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    /// Marks a discovered kind's API served, once its watch has listed.
    pub fn set_served(&self) {
        self.served.store(true, Ordering::Release);
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
    /// Whether the object is the one this process wrote (or read fresh):
    /// its own write's event.
    pub(super) fn seen(&self, object: &Packed<K>, deleted: bool) -> bool {
        let key = (object.namespace().to_string(), object.name().to_string());
        let mut recent = self.recent.lock().expect("cache lock");
        if deleted && let Some(uid) = object.uid() {
            let mut gone = self.gone.lock().expect("cache lock");
            if gone.len() == GONE_REMEMBERED {
                gone.pop_front();
            }
            gone.push_back(uid);
        }
        let mut own = false;
        let shown = match recent.get(&key) {
            None => false,
            Some(Recent::Written(written)) => {
                let version = Version::of(written.as_ref());
                own = !deleted && version != Version::None && *object.version() == version;
                deleted || caught_up(object.version(), &version)
            }
            Some(Recent::Deleted(uid)) => deleted || object.uid() != *uid,
        };
        if shown {
            recent.remove(&key);
        }
        own
    }

    /// Applies one watch event to the store, and settles what this process
    /// wrote or deleted that the event shows.
    pub fn apply_event(&self, event: Event<K>) -> Change<K> {
        match self.shelf.apply(self.pack(event)) {
            Change::Applied(object) => {
                if self.seen(&object, false) {
                    Change::Known(object)
                } else {
                    Change::Applied(object)
                }
            }
            Change::Known(object) => {
                self.seen(&object, false);
                Change::Known(object)
            }
            Change::Deleted(object) => {
                self.seen(&object, true);
                Change::Deleted(object)
            }
            Change::Listed => {
                for object in self.shelf.state() {
                    self.seen(&object, false);
                }
                Change::Listed
            }
            Change::Listing => Change::Listing,
        }
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

/// The event with `map` of its object, which it gives up.
pub fn map_owned<K, T>(event: Event<K>, map: impl Fn(K) -> T) -> Event<T> {
    match event {
        Event::Apply(object) => Event::Apply(map(object)),
        Event::Delete(object) => Event::Delete(map(object)),
        Event::InitApply(object) => Event::InitApply(map(object)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// The event with `map` of its object.
pub fn map_event<K, T>(event: &Event<K>, map: impl Fn(&K) -> T) -> Event<T> {
    match event {
        Event::Apply(object) => Event::Apply(map(object)),
        Event::Delete(object) => Event::Delete(map(object)),
        Event::InitApply(object) => Event::InitApply(map(object)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Secret, Service};

    use super::*;
    use crate::runtime::cache::Caches;

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
    fn only_news_is_applied_not_a_new_version_of_the_same_or_the_event_of_a_write() {
        let (caches, _) = Caches::new();
        let news = |change: Change<Secret>| match change {
            Change::Applied(_) => true,
            Change::Known(_) => false,
            _ => unreachable!("an object applied"),
        };
        let apply = |secret: Secret| news(caches.secrets.apply_event(Event::Apply(secret)));
        assert!(apply(secret("a", "s", "5", "one")), "a new object");
        assert!(
            !apply(secret("a", "s", "6", "one")),
            "only its version moved"
        );
        assert!(apply(secret("a", "s", "7", "two")), "its value changed");
        let mut adopted = secret("a", "s", "8", "two");
        adopted.metadata.owner_references = Some(vec![Default::default()]);
        assert!(apply(adopted), "its owners changed");
        let mut recreated = secret("a", "s", "9", "two");
        recreated.metadata.uid = Some("u2".into());
        assert!(apply(recreated), "another object of the same name");

        // This process writes it: the event of the write tells it nothing.
        let mut written = secret("a", "s", "10", "three");
        written.metadata.uid = Some("u2".into());
        caches.secrets.record_written(written.clone());
        assert!(!apply(written.clone()), "the event of its own write");
        assert_eq!(caches.secrets.unseen_writes(), 0);
        caches
            .secrets
            .record_written(secret("a", "s", "11", "four"));
        let mut changed_since = secret("a", "s", "12", "five");
        changed_since.metadata.uid = Some("u2".into());
        assert!(
            apply(changed_since),
            "someone else's change after the write"
        );
    }

    #[test]
    fn an_object_that_holds_what_it_held_stays_settled() {
        let (caches, _) = Caches::new();
        let service = |version: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "a", "name": "shop", "resourceVersion": version},
                "spec": {"ports": [{"port": 80}]}
            }))
            .unwrap()
        };
        caches.services.apply_event(Event::Apply(service("1")));
        let matched = std::cell::Cell::new(0);
        let holds = || {
            caches.services.holds("a", &service("1"), Some(7), |_, _| {
                matched.set(matched.get() + 1);
                true
            })
        };
        assert_eq!(holds(), Some(true));
        caches.services.apply_event(Event::Apply(service("2")));
        assert_eq!(holds(), Some(true));
        assert_eq!(
            matched.get(),
            1,
            "settled at its desired hash, not compared again"
        );
        assert_eq!(
            caches
                .services
                .get("a", "shop")
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("2")
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
}
