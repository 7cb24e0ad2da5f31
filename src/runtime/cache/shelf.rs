//! The store behind one kind's cache: packed objects by namespace and
//! name, and the names of each stack's objects, as its watch shows them.
//!
//! Each object is keyed once, by the name it holds. What many objects hold
//! alike is kept once and shared, by the shelves of every kind together
//! (see [`Sharing`]): the namespace, the stack's name (the instance label)
//! and the owner references, which the children of one stack all have in
//! common.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use super::packed::{Packed, Share};

/// Objects by namespace, then by name.
type ByName<K> = HashMap<Arc<str>, HashMap<Arc<str>, Arc<Packed<K>>>>;

/// Names of objects by namespace, then by stack.
type ByStack = HashMap<Arc<str>, HashMap<Arc<str>, Vec<Arc<str>>>>;

/// One kind's objects as its watch last showed them.
pub struct Shelf<K> {
    state: RwLock<State<K>>,
    /// Whether the watch has listed once.
    listed: watch::Sender<bool>,
    sharing: Sharing,
}

/// The one copy of each namespace, stack name and list of owners that the
/// shelves sharing it hold: one stack's children, of every kind, hold the
/// same.
#[derive(Clone, Default)]
pub struct Sharing(Arc<Mutex<Shared>>);

impl Sharing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().expect("sharing lock")
    }
}

struct State<K> {
    shown: Shelved<K>,
    /// The objects of a list in progress; they replace those shown once
    /// the list is complete.
    listing: Option<Shelved<K>>,
}

struct Shelved<K> {
    objects: ByName<K>,
    /// The names of each stack's objects, by its instance label.
    members: ByStack,
}

impl<K> Default for Shelved<K> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

/// What one watch event changed on a [`Shelf`].
pub enum Change<K> {
    /// The object, as now kept.
    Applied(Arc<Packed<K>>),
    /// The object at a newer version that holds what this process knew of
    /// it: all that changed is its resourceVersion or what the cache does
    /// not keep, or the event is that of this process's own write.
    Known(Arc<Packed<K>>),
    /// The object as it was kept (or as the event has it, if it was not).
    Deleted(Arc<Packed<K>>),
    /// A list is in progress: nothing changed yet.
    Listing,
    /// A list completed and replaced every object.
    Listed,
}

impl<K> Default for Shelf<K> {
    /// A shelf sharing with no other.
    fn default() -> Self {
        Self::sharing(&Sharing::default())
    }
}

impl<K> Shelf<K> {
    /// An empty shelf that shares what its objects hold alike through
    /// `sharing`.
    pub fn sharing(sharing: &Sharing) -> Self {
        Self {
            state: RwLock::new(State {
                shown: Shelved::default(),
                listing: None,
            }),
            listed: watch::Sender::new(false),
            sharing: sharing.clone(),
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Packed<K>>> {
        let state = self.state.read().expect("shelf lock");
        state.shown.objects.get(namespace)?.get(name).cloned()
    }

    /// Every object.
    pub fn state(&self) -> Vec<Arc<Packed<K>>> {
        let state = self.state.read().expect("shelf lock");
        state
            .shown
            .objects
            .values()
            .flat_map(|names| names.values().cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        let state = self.state.read().expect("shelf lock");
        state.shown.objects.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        let state = self.state.read().expect("shelf lock");
        state.shown.objects.is_empty()
    }

    /// The names of the objects labelled with `stack` as their instance.
    pub fn names_of(&self, namespace: &str, stack: &str) -> Vec<Arc<str>> {
        let state = self.state.read().expect("shelf lock");
        state
            .shown
            .members
            .get(namespace)
            .and_then(|stacks| stacks.get(stack))
            .cloned()
            .unwrap_or_default()
    }

    /// Applies one watch event. A list replaces every object once it is
    /// complete; until then its objects are shelved apart, already shared
    /// and indexed, so completing it only swaps them in.
    pub fn apply(&self, event: Event<Packed<K>>) -> Change<K> {
        let mut state = self.state.write().expect("shelf lock");
        match event {
            Event::Apply(object) => match state.shown.insert(object, &self.sharing) {
                (object, true) => Change::Known(object),
                (object, false) => Change::Applied(object),
            },
            Event::Delete(object) => {
                // Found by name and dropped: nothing of it is worth sharing.
                let object = state
                    .shown
                    .remove(&object)
                    .unwrap_or_else(|| Arc::new(object));
                Change::Deleted(object)
            }
            Event::Init => {
                state.listing = Some(Shelved::default());
                Change::Listing
            }
            Event::InitApply(object) => {
                state
                    .listing
                    .get_or_insert_default()
                    .insert(object, &self.sharing);
                Change::Listing
            }
            Event::InitDone => {
                let listed = state.listing.take().unwrap_or_default();
                // What only the replaced objects held goes in the sweep.
                drop(std::mem::replace(&mut state.shown, listed));
                self.sharing.lock().sweep();
                drop(state);
                self.listed.send_replace(true);
                Change::Listed
            }
        }
    }

    /// Returns once the watch has listed; `false` if the shelf went first.
    pub async fn wait_until_ready(&self) -> bool {
        self.listed
            .subscribe()
            .wait_for(|listed| *listed)
            .await
            .is_ok()
    }
}

impl<K> Shelved<K> {
    /// Keeps `object` in place of the one of its name; and whether it holds
    /// what that one held (see [`Packed::holds_as_before`]).
    fn insert(&mut self, mut object: Packed<K>, sharing: &Sharing) -> (Arc<Packed<K>>, bool) {
        object.share_with(&mut *sharing.lock());
        let namespace = object.namespace().clone();
        let previous = self
            .objects
            .get_mut(&*namespace)
            .and_then(|names| names.remove(&**object.name()));
        let mut as_before = false;
        if let Some(previous) = previous {
            as_before = object.holds_as_before(&previous);
            self.unlist(&namespace, &previous);
        }
        let object = Arc::new(object);
        self.objects
            .entry(namespace.clone())
            .or_default()
            .insert(object.name().clone(), object.clone());
        if let Some(instance) = object.instance() {
            self.members
                .entry(namespace)
                .or_default()
                .entry(instance.clone())
                .or_default()
                .push(object.name().clone());
        }
        (object, as_before)
    }

    fn remove(&mut self, object: &Packed<K>) -> Option<Arc<Packed<K>>> {
        let namespace = object.namespace().clone();
        let names = self.objects.get_mut(&*namespace)?;
        let removed = names.remove(&**object.name())?;
        if names.is_empty() {
            self.objects.remove(&*namespace);
        }
        self.unlist(&namespace, &removed);
        Some(removed)
    }

    /// Takes `object` off its stack's list of names.
    fn unlist(&mut self, namespace: &str, object: &Packed<K>) {
        let Some(instance) = object.instance() else {
            return;
        };
        let Some(stacks) = self.members.get_mut(namespace) else {
            return;
        };
        if let Some(names) = stacks.get_mut(&**instance) {
            names.retain(|name| name != object.name());
            if names.is_empty() {
                stacks.remove(&**instance);
            }
        }
        if stacks.is_empty() {
            self.members.remove(namespace);
        }
    }
}

/// The table behind [`Sharing`]. Copies no object holds any more are
/// dropped once the table has doubled since it was last swept, and after
/// every list.
#[derive(Default)]
struct Shared {
    texts: HashSet<Arc<str>>,
    /// By the UID of the first owner.
    owners: HashMap<Box<str>, Arc<[OwnerReference]>>,
    swept_at: usize,
}

impl Shared {
    fn sweep(&mut self) {
        self.texts.retain(|text| Arc::strong_count(text) > 1);
        self.owners
            .retain(|_, owners| Arc::strong_count(owners) > 1);
        self.swept_at = self.texts.len() + self.owners.len();
    }

    fn grown(&mut self) {
        const SMALL: usize = 64;
        if self.texts.len() + self.owners.len() > 2 * self.swept_at.max(SMALL) {
            self.sweep();
        }
    }
}

impl Share for Shared {
    fn text(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.texts.get(&**text) {
            return shared.clone();
        }
        self.texts.insert(text.clone());
        self.grown();
        text.clone()
    }

    fn owners(&mut self, owners: &Arc<[OwnerReference]>) -> Arc<[OwnerReference]> {
        let Some(first) = owners.first() else {
            return owners.clone();
        };
        if let Some(shared) = self.owners.get(first.uid.as_str())
            && **shared == **owners
        {
            return shared.clone();
        }
        self.owners
            .insert(first.uid.as_str().into(), owners.clone());
        self.grown();
        owners.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};

    fn config(name: &str, stack: &str, version: &str) -> Packed<ConfigMap> {
        Packed::pack(
            &serde_json::from_value(serde_json::json!({
                "metadata": {
                    "namespace": "a", "name": name, "resourceVersion": version,
                    "labels": {crate::children::LABEL_INSTANCE: stack},
                    "ownerReferences": [{"apiVersion": "appstack.dev/v1alpha1",
                        "kind": "AppStack", "name": stack, "uid": format!("uid-{stack}")}]
                }
            }))
            .unwrap(),
            &Default::default(),
        )
    }

    fn names(shelf: &Shelf<ConfigMap>, stack: &str) -> Vec<String> {
        let mut names: Vec<String> = shelf
            .names_of("a", stack)
            .iter()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_stacks_objects_share_their_namespace_instance_and_owners() {
        let shelf = Shelf::default();
        let Change::Applied(first) = shelf.apply(Event::Apply(config("shop-env", "shop", "1")))
        else {
            unreachable!()
        };
        let Change::Applied(second) = shelf.apply(Event::Apply(config("shop-web", "shop", "2")))
        else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(first.namespace(), second.namespace()));
        assert!(Arc::ptr_eq(
            first.instance().unwrap(),
            second.instance().unwrap()
        ));
        assert!(Arc::ptr_eq(
            first.owners().unwrap(),
            second.owners().unwrap()
        ));
        shelf.apply(Event::Apply(config("blog-env", "blog", "3")));
        assert_eq!(names(&shelf, "shop"), ["shop-env", "shop-web"]);
        assert_eq!(shelf.len(), 3);
    }

    #[test]
    fn shelves_of_different_kinds_share_one_copy() {
        let sharing = Sharing::default();
        let configs = Shelf::sharing(&sharing);
        let services: Shelf<Service> = Shelf::sharing(&sharing);
        let Change::Applied(env) = configs.apply(Event::Apply(config("shop-env", "shop", "1")))
        else {
            unreachable!()
        };
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "a", "name": "shop-web", "resourceVersion": "2",
                "labels": {crate::children::LABEL_INSTANCE: "shop"},
                "ownerReferences": [{"apiVersion": "appstack.dev/v1alpha1",
                    "kind": "AppStack", "name": "shop", "uid": "uid-shop"}]
            }
        }))
        .unwrap();
        let Change::Applied(service) =
            services.apply(Event::Apply(Packed::pack(&service, &Default::default())))
        else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(env.namespace(), service.namespace()));
        assert!(Arc::ptr_eq(
            env.instance().unwrap(),
            service.instance().unwrap()
        ));
        assert!(Arc::ptr_eq(
            env.owners().unwrap(),
            service.owners().unwrap()
        ));
        // A shelf of its own shares nothing with them.
        let alone = Shelf::default();
        let Change::Applied(other) = alone.apply(Event::Apply(config("shop-env", "shop", "1")))
        else {
            unreachable!()
        };
        assert!(!Arc::ptr_eq(env.owners().unwrap(), other.owners().unwrap()));
    }

    #[test]
    fn updates_deletions_and_lists_keep_the_names_of_each_stack_exact() {
        let shelf = Shelf::default();
        shelf.apply(Event::Apply(config("shop-env", "shop", "1")));
        shelf.apply(Event::Apply(config("shop-web", "shop", "2")));
        // Relabelled to another stack, then updated in place.
        shelf.apply(Event::Apply(config("shop-web", "blog", "3")));
        shelf.apply(Event::Apply(config("shop-env", "shop", "4")));
        assert_eq!(names(&shelf, "shop"), ["shop-env"]);
        assert_eq!(names(&shelf, "blog"), ["shop-web"]);
        assert_eq!(
            shelf.get("a", "shop-env").unwrap().version(),
            &crate::runtime::cache::packed::Version::Revision(4)
        );

        shelf.apply(Event::Delete(config("shop-env", "shop", "5")));
        assert!(shelf.get("a", "shop-env").is_none());
        assert!(names(&shelf, "shop").is_empty());

        // A list replaces everything once complete, not before.
        shelf.apply(Event::Init);
        shelf.apply(Event::InitApply(config("blog-api", "blog", "6")));
        assert!(shelf.get("a", "blog-api").is_none());
        assert!(shelf.get("a", "shop-web").is_some());
        shelf.apply(Event::InitDone);
        assert!(shelf.get("a", "shop-web").is_none());
        assert_eq!(names(&shelf, "blog"), ["blog-api"]);
        assert_eq!(shelf.len(), 1);
    }

    #[tokio::test]
    async fn the_shelf_is_ready_once_listed() {
        let shelf = Arc::new(Shelf::<ConfigMap>::default());
        let waiting = tokio::spawn({
            let shelf = shelf.clone();
            async move { shelf.wait_until_ready().await }
        });
        shelf.apply(Event::Init);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        shelf.apply(Event::InitDone);
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn copies_nothing_holds_any_more_are_swept() {
        let mut shared = Shared::default();
        for stack in 0..1000 {
            let text: Arc<str> = Arc::from(format!("stack-{stack}").as_str());
            let kept = shared.text(&text);
            drop((text, kept));
        }
        assert!(
            shared.texts.len() <= 2 * 64 + 1,
            "{} texts kept",
            shared.texts.len()
        );
    }
}
