//! Starting the watches that keep the caches current: the AppStacks first,
//! then one watch per kind of child as the table of kinds says
//! ([`crate::kinds`]): the operator's children by label, every Secret in
//! scope (stacks reference users' Secrets), and kinds whose API may be
//! missing once discovery finds it served. Every event wakes the stacks it
//! concerns, through one trigger channel, after the cache holds it: a pass
//! woken by a Job's completion reads the completed Job. The changes of a
//! child on its way (see [`Moving`]) wake its stack a moment later, once
//! for all of them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, GroupVersionKind};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::cache::kind::map_owned;
use super::cache::packed::Packed;
use super::cache::shelf::Change;
use super::cache::slim::{Slim, slimmed};
use super::cache::{Cached, Caches, KindCache, StackKey, StackWriter};
use super::metrics::Metrics;
use super::resilient;
use crate::api::conditions::reasons;
use crate::api::crd::AppStack;
use crate::children;
use crate::kinds::{self, for_each_kind};
use crate::reconcile::observe::{deployment_check, job_finished, statefulset_check};

/// How often an optional API (ServiceMonitor, HTTPRoute) is looked for (and
/// looked for again), so installing the Prometheus Operator or the Gateway
/// API later needs no restart.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// Wakes the reconcile of stacks.
pub type Triggers = UnboundedSender<ObjectRef<StackKey>>;

fn wake(triggers: &Triggers, namespace: &str, stack: &str) {
    let _ = triggers.unbounded_send(ObjectRef::new(stack).within(namespace));
}

/// The namespace and name of the stack a child belongs to (by its
/// instance label).
fn owner<K>(object: &Packed<K>) -> Option<(&str, &str)> {
    let stack = object.instance()?;
    let namespace = object.namespace();
    (!namespace.is_empty()).then_some((namespace, &**stack))
}

/// Wakes the stack a child belongs to.
fn wake_owner<K>(triggers: &Triggers, object: &Packed<K>) {
    if let Some((namespace, stack)) = owner(object) {
        wake(triggers, namespace, stack);
    }
}

/// How long the wake of a child on its way waits (see [`Moving`]).
pub const PROGRESS_WAKE: Duration = Duration::from_secs(1);

/// Whether a child is on its way somewhere by itself: a Deployment rolling
/// out, a StatefulSet whose pod is not ready yet, a Job running. A change
/// of one is progress (a replica more available, a Job's pod started),
/// which the status tells within a few seconds anyway
/// ([`crate::reconcile::status::COALESCE`]): it wakes its stack after
/// [`PROGRESS_WAKE`], once for all such changes meanwhile. A child that
/// arrived (rolled out, ready, finished, failed, past its deadline) wakes
/// its stack at once, and so does a pod that cannot run.
pub trait Moving {
    fn moving(&self) -> bool {
        false
    }
}

impl Moving for Deployment {
    fn moving(&self) -> bool {
        deployment_check(self).reason == reasons::ROLLING_OUT
    }
}

impl Moving for StatefulSet {
    fn moving(&self) -> bool {
        !statefulset_check(self).ok
    }
}

impl Moving for Job {
    fn moving(&self) -> bool {
        !job_finished(self)
    }
}

impl Moving for Secret {}
impl Moving for ConfigMap {}
impl Moving for Service {}
impl Moving for PersistentVolumeClaim {}
impl Moving for NetworkPolicy {}
impl Moving for PodDisruptionBudget {}
impl Moving for Ingress {}
impl Moving for DynamicObject {}

/// The stacks a moving child woke, whose pass waits for [`PROGRESS_WAKE`].
#[derive(Clone, Default)]
struct Soon(Arc<Mutex<HashSet<(String, String)>>>);

impl Soon {
    /// Wakes the stack of `object`: at once, or, when it is `moving`, after
    /// [`PROGRESS_WAKE`] unless a wake waits already. A wake at once makes
    /// the waiting one moot.
    fn wake<K>(&self, triggers: &Triggers, object: &Packed<K>, moving: bool) {
        let Some((namespace, stack)) = owner(object) else {
            return;
        };
        let key = (namespace.to_string(), stack.to_string());
        if !moving {
            self.0.lock().expect("wake lock").remove(&key);
            wake(triggers, namespace, stack);
            return;
        }
        if !self.0.lock().expect("wake lock").insert(key.clone()) {
            return;
        }
        let (soon, triggers) = (self.clone(), triggers.clone());
        tokio::spawn(async move {
            tokio::time::sleep(PROGRESS_WAKE).await;
            if soon.0.lock().expect("wake lock").remove(&key) {
                wake(&triggers, &key.0, &key.1);
            }
        });
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

/// What starting one kind's watch needs.
struct Scope<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    caches: &'a Arc<Caches>,
    triggers: &'a Triggers,
    /// The wakes of children on their way, shared by this scope's watches.
    soon: Soon,
    metrics: &'a Metrics,
}

macro_rules! start_watches {
    (($scope:expr, $tasks:ident) $(
        $kind:ident: $object:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        $($tasks.push($watch::<kinds::markers::$kind>($scope));)*
    };
}

macro_rules! wait_for_watches {
    (($caches:expr, $ready:ident) $(
        $kind:ident: $object:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        $($ready &= listed::<kinds::markers::$kind>($caches).await;)*
    };
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
    let namespace = scope.as_deref();
    let mut tasks = Vec::new();
    let stack_events = resilient::watch(
        "AppStack",
        watcher::watcher(
            scoped::<AppStack>(client.clone(), namespace),
            resilient::config(),
        ),
    );
    tasks.push(tokio::spawn(feed_stacks(
        stack_events,
        caches.clone(),
        stacks_writer,
        triggers.clone(),
        forget,
    )));
    let _ = caches.stacks.wait_until_ready().await;

    let scope = Scope {
        client: &client,
        namespace,
        caches: &caches,
        triggers: &triggers,
        soon: Soon::default(),
        metrics: &metrics,
    };
    for_each_kind!(start_watches, &scope, tasks);
    let mut ready = true;
    for_each_kind!(wait_for_watches, &caches, ready);
    debug_assert!(ready, "a cache's watch ended before it listed");
    info!(stacks = caches.stacks.len(), "caches synced");
    Watches { tasks }
}

/// Whether kind `C`'s cache has listed; a discovered kind's API may never
/// be served, so nothing waits for it.
async fn listed<C: Cached>(caches: &Caches) -> bool {
    C::DISCOVERED || C::cache(caches).wait_until_ready().await
}

/// Watches the operator's children of kind `C`, by the managed-by label.
fn labelled<C: Cached>(scope: &Scope<'_>) -> JoinHandle<()>
where
    C::Object: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Moving,
{
    let events = resilient::watch(
        C::KIND.as_str(),
        watcher::watcher(
            scoped::<C::Object>(scope.client.clone(), scope.namespace),
            children_config(),
        ),
    );
    let triggers = scope.triggers.clone();
    let soon = scope.soon.clone();
    spawn_cache(
        events,
        scope.caches.clone(),
        C::cache,
        slimmed,
        move |object: &Packed<C::Object>, moving| soon.wake(&triggers, object, moving),
    )
}

/// Watches every Secret in scope, so the Secrets stacks reference are seen
/// too; the data of one neither ours nor referenced is not kept.
fn everything<C: Cached<Object = Secret>>(scope: &Scope<'_>) -> JoinHandle<()> {
    let events = resilient::watch(
        C::KIND.as_str(),
        watcher::watcher(
            scoped::<Secret>(scope.client.clone(), scope.namespace),
            resilient::config(),
        ),
    );
    let slim_caches = scope.caches.clone();
    let caches = scope.caches.clone();
    let triggers = scope.triggers.clone();
    spawn_cache(
        events,
        scope.caches.clone(),
        C::cache,
        move |secret| slim_caches.slim_secret(secret),
        move |secret: &Packed<Secret>, _| {
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
        },
    )
}

/// The troubled pods, by namespace and name, with their trouble's reason and
/// the stack they belong to.
type Troubled = HashMap<(String, String), (&'static str, String)>;

/// Watches the pods of the operator's workloads. A pod changes many times on
/// its way to running; a pass is woken only when what keeps it from
/// running changes (see [`crate::reconcile::pods::trouble`]): the workload's
/// own status wakes the stack for everything else.
fn pods<C: Cached<Object = Pod>>(scope: &Scope<'_>) -> JoinHandle<()> {
    let events = resilient::watch(
        C::KIND.as_str(),
        watcher::watcher(
            scoped::<Pod>(scope.client.clone(), scope.namespace),
            resilient::config().labels(&children::pod_selector()),
        ),
    );
    let caches = scope.caches.clone();
    let triggers = scope.triggers.clone();
    tokio::spawn(async move {
        let mut troubled = Troubled::new();
        let mut listing: Option<Troubled> = None;
        let mut events = std::pin::pin!(events);
        while let Some(Ok(event)) = events.next().await {
            let mut woken = BTreeSet::new();
            let mut note = |map: &mut Troubled, pod: &Pod, deleted: bool| {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                let stack = pod.labels().get(children::LABEL_INSTANCE).cloned();
                let now = (!deleted)
                    .then(|| crate::reconcile::pods::trouble(pod))
                    .flatten()
                    .zip(stack.clone())
                    .map(|(trouble, stack)| (trouble.reason, stack));
                let before = match &now {
                    Some(now) => map.insert(key.clone(), now.clone()),
                    None => map.remove(&key),
                };
                if before.as_ref().map(|(reason, _)| *reason)
                    != now.as_ref().map(|(reason, _)| *reason)
                {
                    woken.extend(stack.map(|stack| (key.0, stack)));
                }
            };
            match &event {
                Event::Apply(pod) => note(&mut troubled, pod, false),
                Event::Delete(pod) => note(&mut troubled, pod, true),
                Event::Init => listing = Some(HashMap::new()),
                Event::InitApply(pod) => {
                    if let Some(listed) = listing.as_mut() {
                        note(listed, pod, false);
                    }
                }
                Event::InitDone => {
                    // Wake what the list changed: troubles gone while away,
                    // and troubles new or different.
                    let listed = listing.take().unwrap_or_default();
                    for (key, (reason, stack)) in &troubled {
                        if listed.get(key).map(|(now, _)| now) != Some(reason) {
                            woken.insert((key.0.clone(), stack.clone()));
                        }
                    }
                    for (key, (reason, stack)) in &listed {
                        if troubled.get(key).map(|(before, _)| before) != Some(reason) {
                            woken.insert((key.0.clone(), stack.clone()));
                        }
                    }
                    troubled = listed;
                }
            }
            C::cache(&caches).apply_event(map_owned(event, slimmed));
            for (namespace, stack) in woken {
                wake(&triggers, &namespace, &stack);
            }
        }
    })
}

/// Looks for kind `C`'s API every [`DISCOVERY_INTERVAL`]; once it is served,
/// watches the kind, and marks it served when that cache has listed, waking
/// every stack so waiting children are written.
fn discovered<C: Cached<Object = DynamicObject>>(scope: &Scope<'_>) -> JoinHandle<()> {
    let client = scope.client.clone();
    let namespace = scope.namespace.map(String::from);
    let caches = scope.caches.clone();
    let triggers = scope.triggers.clone();
    let metrics = scope.metrics.clone();
    tokio::spawn(async move {
        let cache = C::cache(&caches);
        let resource = cache.dyntype().clone();
        let gvk = GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
        loop {
            let discovered = kube::discovery::pinned_kind(&client, &gvk).await;
            metrics.api_discovery(&gvk.kind);
            match discovered {
                Ok(_) => {
                    let api = match &namespace {
                        Some(namespace) => Api::<DynamicObject>::namespaced_with(
                            client.clone(),
                            namespace,
                            &resource,
                        ),
                        None => Api::all_with(client.clone(), &resource),
                    };
                    let events = resilient::watch(
                        gvk.kind.clone(),
                        watcher::watcher(api, children_config()),
                    );
                    let watch_triggers = triggers.clone();
                    // Lives as long as this discovery task.
                    let _watch = AbortOnDrop(spawn_cache(
                        events,
                        caches.clone(),
                        C::cache,
                        slimmed,
                        move |object: &Packed<DynamicObject>, _| {
                            wake_owner(&watch_triggers, object)
                        },
                    ));
                    cache.wait_until_ready().await;
                    cache.set_served();
                    info!(kind = %gvk.kind, "the API is served; its objects are written");
                    for stack in caches.stacks.state() {
                        wake_packed(&triggers, &stack);
                    }
                    // Keep the watch for the rest of this term.
                    std::future::pending::<()>().await;
                }
                Err(error) => debug!(kind = %gvk.kind, %error, "the API is not served"),
            }
            tokio::time::sleep(DISCOVERY_INTERVAL).await;
        }
    })
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
        let change = caches.apply_stack_event(&mut writer, &event);
        for stack in &change.gone {
            forget(&stack.uid().unwrap_or_default());
        }
        match &event {
            Event::Apply(stack) if change.news => wake_stack(&triggers, stack),
            Event::InitDone => {
                for stack in caches.stacks.state() {
                    wake_packed(&triggers, &stack);
                }
            }
            Event::Apply(_) | Event::Delete(_) | Event::Init | Event::InitApply(_) => {}
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
    resilient::config().labels(&children::managed_selector())
}

/// Feeds one kind's cache from its watch, slimming each object, and calls
/// `wake` with every object applied or deleted (and, after a relist, every
/// object listed) once the cache holds it, and whether it is a change of an
/// object on its way (see [`Moving`]).
fn spawn_cache<K>(
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    caches: Arc<Caches>,
    cache: fn(&Caches) -> &KindCache<K>,
    slim: impl Fn(K) -> K + Send + 'static,
    wake: impl Fn(&Packed<K>, bool) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource
        + Slim
        + Moving
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Send + Sync,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(Ok(event)) = events.next().await {
            let cache = cache(&caches);
            let event = map_owned(event, &slim);
            let moving = matches!(&event, Event::Apply(object) if object.moving());
            match cache.apply_event(event) {
                Change::Applied(object) => wake(&object, moving),
                Change::Deleted(object) => wake(&object, false),
                // Nothing a pass reads changed.
                Change::Known(_) => {}
                Change::Listed => {
                    for object in cache.state() {
                        wake(&object, false);
                    }
                }
                Change::Listing => {}
            }
        }
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn a_rollout_wakes_its_stack_a_moment_later_once_and_at_once_when_it_arrives() {
        let deployment = |version: &str, available: i32| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "a", "name": "shop-backend", "uid": "d1",
                             "resourceVersion": version, "generation": 1,
                             "labels": {children::LABEL_INSTANCE: "shop"}},
                "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                           "availableReplicas": available}
            }))
            .unwrap()
        };
        let (caches, _) = Caches::new();
        let (triggers, mut woken) = futures::channel::mpsc::unbounded();
        let (events, stream) = futures::channel::mpsc::unbounded::<Event<Deployment>>();
        let soon = Soon::default();
        let _task = AbortOnDrop(spawn_cache(
            stream.map(Ok),
            caches.clone(),
            |caches| &caches.deployments,
            slimmed,
            move |object: &Packed<Deployment>, moving| soon.wake(&triggers, object, moving),
        ));
        let settle = || async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        };
        let mut count = || {
            let mut count = 0;
            while let Ok(key) = woken.try_recv() {
                assert_eq!(key, ObjectRef::new("shop").within("a"));
                count += 1;
            }
            count
        };

        for (version, available) in [("1", 0), ("2", 1), ("3", 2)] {
            events
                .unbounded_send(Event::Apply(deployment(version, available)))
                .unwrap();
        }
        settle().await;
        assert_eq!(count(), 0, "a rollout on its way waits");
        tokio::time::advance(PROGRESS_WAKE).await;
        settle().await;
        assert_eq!(count(), 1, "then wakes its stack once for all its changes");

        events
            .unbounded_send(Event::Apply(deployment("4", 1)))
            .unwrap();
        settle().await;
        events
            .unbounded_send(Event::Apply(deployment("5", 3)))
            .unwrap();
        settle().await;
        assert_eq!(count(), 1, "rolled out: at once");
        tokio::time::advance(PROGRESS_WAKE).await;
        settle().await;
        assert_eq!(count(), 0, "and the wake that waited is moot");
    }
}
