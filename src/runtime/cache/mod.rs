//! Caches: what the controller knows of the cluster, kept current by
//! watches (see [`crate::runtime::watches`]) so a reconcile reads memory
//! instead of sending requests.
//!
//! One [`KindCache`] per kind of child, declared by the table of kinds
//! ([`crate::kinds`]): label-filtered to this operator's children and
//! slimmed to what the comparison and the status read (see [`slim`]). Every
//! object is kept packed (see [`packed`]) on a shelf (see [`shelf`]: the
//! store of one kind, sharing what objects hold alike) and decoded when a
//! pass reads it. The controller's own store holds only each stack's key.
//! Secrets are watched whole, because users' Secrets that stacks reference
//! carry no label of ours: the data of a Secret is kept only while it is
//! ours or a stack references it (see [`secret_index`]).

pub mod deferred;
pub mod kind;
pub mod packed;
pub mod secret_index;
pub mod shelf;
pub mod slim;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Deserializer};

pub use self::deferred::Deferred;
pub use self::kind::{Footprint, KindCache};
use self::packed::Packed;
use self::secret_index::SecretIndex;
use self::shelf::{Change, Sharing};
use self::slim::Slim;
use crate::api::conditions;
use crate::api::crd::AppStack;
use crate::children;
use crate::kinds::{self, ChildKind, for_each_kind};

/// Marks a cached Secret whose data was not kept: no stack referenced it
/// when it was last seen. Never sent to the API server.
const WITHOUT_DATA: &str = "appstack.dev/cached-without-data";

/// A kind of child with its cache in [`Caches`].
pub trait Cached: ChildKind {
    fn cache(caches: &Caches) -> &KindCache<Self::Object>;
}

/// What one AppStack watch event changed.
pub struct StackChange {
    /// The stacks it shows gone: the deleted one, or, when a relist
    /// completes, every stack cached before that the new list lacks
    /// (deleted while the watch was away, so no delete event ever came).
    pub gone: Vec<Arc<Packed<AppStack>>>,
    /// Whether a stack now holds what this process did not know of it: not
    /// the event of its own status write.
    pub news: bool,
}

macro_rules! define_caches {
    (() $(
        $kind:ident: $object:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        /// Every cache of one scope (all namespaces, or one namespace).
        pub struct Caches {
            /// AppStacks, with what this process last wrote of each (status,
            /// finalizers), so a pass never starts from an older status than
            /// the one it wrote and never repeats a transition or an Event.
            pub stacks: KindCache<AppStack>,
            /// Each stack's key, for the controller: its passes read the
            /// stack from [`Self::stacks`].
            pub keys: Store<StackKey>,
            /// The condition each stack holds, as last seen, for the
            /// metrics: the stacks are packed, and reading each one back per
            /// scrape would cost more than the scrape.
            holding: Mutex<HashMap<(String, String), &'static str>>,
            $(
                #[doc = concat!("The operator's ", $name, "s.")]
                pub $field: KindCache<$object>,
            )*
            index: RwLock<SecretIndex>,
            /// Stacks whose status write waits (see [`Deferred`]).
            pub deferred: Deferred,
        }

        $(
            impl Cached for kinds::markers::$kind {
                fn cache(caches: &Caches) -> &KindCache<$object> {
                    &caches.$field
                }
            }
        )*

        impl Caches {
            /// Empty caches, and the writer of the controller's keys.
            pub fn new() -> (Arc<Self>, StackWriter) {
                let (keys, writer) = reflector::store();
                let sharing = Sharing::default();
                let caches = Arc::new(Self {
                    stacks: KindCache::new((), true, &sharing),
                    keys,
                    holding: Mutex::new(HashMap::new()),
                    $(
                        $field: KindCache::new(
                            <kinds::markers::$kind as ChildKind>::dynamic_type(),
                            !<kinds::markers::$kind as ChildKind>::DISCOVERED,
                            &sharing,
                        ),
                    )*
                    index: RwLock::new(SecretIndex::default()),
                    deferred: Deferred::default(),
                });
                (caches, writer)
            }

            /// What each kind's cache holds, for the metrics.
            pub fn footprints(&self) -> Vec<Footprint> {
                vec![self.stacks.footprint(), $(self.$field.footprint(),)*]
            }
        }
    };
}
for_each_kind!(define_caches);

/// The writing half of [`Caches::keys`], fed by the AppStack watch.
pub type StackWriter = reflector::store::Writer<StackKey>;

/// What the controller keeps of a stack: its namespace, name and UID.
#[derive(Clone, Debug)]
pub struct StackKey {
    metadata: ObjectMeta,
}

impl StackKey {
    pub fn of(stack: &impl Resource) -> Self {
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
    /// The cache of kind `C`.
    pub fn of<C: Cached>(&self) -> &KindCache<C::Object> {
        C::cache(self)
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
    /// says what it changed (see [`StackChange`]).
    pub fn apply_stack_event(
        &self,
        writer: &mut StackWriter,
        event: &Event<AppStack>,
    ) -> StackChange {
        let before = matches!(event, Event::InitDone).then(|| self.stacks.state());
        let change = self.stacks.apply_event(event.clone());
        let news = matches!(change, Change::Applied(_));
        writer.apply_watcher_event(&kind::map_event(event, StackKey::of));
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
                conditions::holding(stack),
            );
        }
        for stack in &gone {
            let namespace = stack.namespace().to_string();
            index.remove(&namespace, stack.name());
            holding.remove(&(namespace, stack.name().to_string()));
            // What this process last wrote of it no longer stands for it.
            self.stacks.seen(stack, true);
        }
        StackChange { gone, news }
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
    pub fn slim_secret(&self, mut secret: Secret) -> Secret {
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
    fn unreferenced_secrets_are_cached_without_their_data() {
        let (caches, _) = Caches::new();
        let slim = caches.slim_secret(secret("a", "other", "1", "v"));
        assert!(slim.data.is_none() && Caches::without_data(&slim));
    }
}
