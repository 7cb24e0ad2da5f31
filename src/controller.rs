//! The controller: watches AppStacks and their children and runs the
//! reconcile pipeline — fetch what is referenced, validate, build every
//! child, apply in order, write status from what was observed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::{Instrument, debug, info, warn};

use crate::apply::{self, Applied};
use crate::children::{self, Children, DatabaseChildren, Workload, database_name, env_name};
use crate::crd::{AppStack, AppStackStatus, MigrationStatus};
use crate::database::{self, DatabaseChecks, Databases, Located};
use crate::metrics::Metrics;
use crate::secrets::{self, ObservedSecrets, SecretValue};
use crate::server::ProcessState;
use crate::stack::{Database, ValidatedStack};
use crate::status::{self, Check, Observation, reasons, types};
use crate::telemetry::error_chain;
use crate::watch;

/// How long an API discovery answer for ServiceMonitor is trusted; installing
/// the Prometheus Operator CRDs is noticed within this time.
const DISCOVERY_TTL: Duration = Duration::from_secs(10);
/// Finished migration Jobs of older revisions kept for inspection.
pub const KEEP_FINISHED_JOBS: usize = 3;
/// Resync of a converged stack: a safety net for missed watch events.
const RESYNC: Duration = Duration::from_secs(300);
/// Re-check while waiting for something not watched (the ServiceMonitor
/// CRD), or a referenced Secret (watched; this covers a missed event).
const POLL: Duration = Duration::from_secs(10);
/// Held by a stack with `deletionPolicy: Delete` until the operator has seen
/// it being deleted. No reconcile runs after the operator releases it, so
/// none can recreate the StatefulSet (and with it a new, unowned volume)
/// once the garbage collector has started deleting the stack's children.
pub const DATABASE_FINALIZER: &str = "appstack.dev/delete-database";
/// Re-check while children progress; their watches usually wake us sooner.
const PROGRESS: Duration = Duration::from_secs(30);

/// A failed reconcile step. Transient: the stack is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Fetch {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Sweep {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("updating the AppStack's finalizers: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("discovering the ServiceMonitor API: {0}")]
    Discovery(#[source] kube::Error),
    #[error("generating secrets: {0}")]
    Secrets(#[source] secrets::ResolveError),
    #[error("reconcile did not finish within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// A stable, low-cardinality name for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Fetch { .. } => "fetch",
            Error::Apply { .. } => "apply",
            Error::Sweep { .. } => "sweep",
            Error::Status(_) => "status",
            Error::Finalizer(_) => "finalizer",
            Error::Discovery(_) => "discovery",
            Error::Secrets(_) => "secrets",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Upper bound of one reconcile; API calls inside it share the bound.
    pub reconcile_timeout: Duration,
    service_monitor_api: Mutex<Option<(Instant, Option<ApiResource>)>>,
    /// Consecutive failures per stack UID, for the retry backoff.
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// Connection checks of the stacks' databases and their retry pace.
    pub databases: Databases,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, reconcile_timeout: Duration) -> Self {
        let reporter = Reporter {
            controller: children::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            databases: Databases::new(DatabaseChecks::default(), metrics.clone()),
            metrics,
            reconcile_timeout,
            service_monitor_api: Mutex::new(None),
            failures: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Which databases the operator connects to (`--database-checks`).
    pub fn with_database_checks(mut self, checks: DatabaseChecks) -> Self {
        self.databases = Databases::new(checks, self.metrics.clone());
        self
    }

    /// The retry delay after a failure: doubling from 1 s, capped at
    /// [`MAX_RETRY_DELAY`].
    fn retry_delay(&self, stack: &AppStack) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(stack.uid().unwrap_or_default()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(6)).min(MAX_RETRY_DELAY)
    }

    fn succeeded(&self, stack: &AppStack) {
        if let Some(uid) = stack.uid() {
            self.failures.lock().expect("failures lock").remove(&uid);
        }
    }

    /// The ServiceMonitor API when `monitoring.coreos.com/v1` serves it,
    /// from a discovery answer at most [`DISCOVERY_TTL`] old.
    pub async fn service_monitor_api(&self) -> Result<Option<ApiResource>, Error> {
        let mut cached = self.service_monitor_api.lock().await;
        if let Some((at, resource)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(resource.clone());
        }
        let gvk = children::monitoring::service_monitor_gvk();
        let resource = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, _)) => Some(resource),
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(kube::Error::Discovery(_)) => None,
            Err(error) => return Err(Error::Discovery(error)),
        };
        *cached = Some((Instant::now(), resource.clone()));
        Ok(resource)
    }

    async fn publish(&self, stack: &AppStack, event: Event) {
        self.metrics.count_event(&event.reason);
        if let Err(error) = self.recorder.publish(&event, &stack.object_ref(&())).await {
            warn!(reason = %event.reason, %error, "could not publish event");
        }
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// Longest wait before retrying a failed reconcile.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Runs the controller until `shutdown` completes and in-flight reconciles
/// have finished: one watch of AppStacks per namespace given (all
/// namespaces when none), each owning every child kind through
/// label-filtered metadata watches. Every watch retries on its own (see
/// [`watch::resilient`]), so an API server restart is rejoined within
/// seconds and never stops the process. The AppStack caches are handed to
/// `state` for readiness and metrics.
pub async fn run(
    context: Arc<Context>,
    options: RunOptions,
    state: Arc<ProcessState>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let client = context.client.clone();
    let service_monitors = context.service_monitor_api().await?;
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    context
        .metrics
        .set_max_concurrent_reconciles(options.concurrency);
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let (reader, writer) = kube::runtime::reflector::store();
        let stacks = watch::resilient(
            "AppStack",
            watcher::watcher(scoped::<AppStack>(client.clone(), &scope), watch::config()),
        )
        .reflect(writer)
        .applied_objects();
        let referenced = watch::resilient(
            "Secret (referenced)",
            watcher::watcher(
                scoped::<PartialObjectMeta<Secret>>(client.clone(), &scope),
                watch::config(),
            ),
        )
        .touched_objects();
        let mut controller = Controller::for_stream(stacks, reader.clone())
            .with_config(kube::runtime::Config::default().concurrency(options.concurrency))
            .watches_stream(referenced, move |secret| readers_of(&reader, &secret))
            .owns_stream(owned::<Secret>(&client, &scope))
            .owns_stream(owned::<ConfigMap>(&client, &scope))
            .owns_stream(owned::<StatefulSet>(&client, &scope))
            .owns_stream(owned::<Service>(&client, &scope))
            .owns_stream(owned::<Job>(&client, &scope))
            .owns_stream(owned::<Deployment>(&client, &scope));
        if let Some(resource) = &service_monitors {
            let api = match &scope {
                Some(namespace) => Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(
                    client.clone(),
                    namespace,
                    resource,
                ),
                None => Api::all_with(client.clone(), resource),
            };
            let monitors =
                watch::resilient("ServiceMonitor", watcher::watcher(api, children_config()))
                    .touched_objects();
            controller = controller.owns_stream_with(monitors, resource.clone());
        }
        stores.push(controller.store());
        controllers.push(
            controller
                .graceful_shutdown_on(shutdown.clone())
                .run(reconcile, error_policy, context.clone())
                .for_each(|result| async move {
                    match result {
                        Ok((stack, _)) => debug!(stack = %stack, "reconciled"),
                        Err(error) => debug!(error = %error_chain(&error), "reconcile failed"),
                    }
                }),
        );
    }
    state.watch_caches(stores);
    futures::future::join_all(controllers).await;
    Ok(())
}

/// The stacks in `secret`'s namespace that read a value from it.
fn readers_of(
    stacks: &Store<AppStack>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<AppStack>> {
    let name = secret.name_any();
    stacks
        .state()
        .iter()
        .filter(|stack| stack.namespace() == secret.namespace())
        .filter(|stack| stack.spec.referenced_secrets().contains(name.as_str()))
        .map(|stack| ObjectRef::from_obj(stack.as_ref()))
        .collect()
}

/// Children are watched by the managed-by label, metadata only.
fn children_config() -> watcher::Config {
    watch::config().labels(&children::managed_selector())
}

/// The metadata of every managed child of one kind in `scope`, on its own
/// resilient watch.
fn owned<K>(
    client: &Client,
    scope: &Option<String>,
) -> impl futures::Stream<Item = watcher::Result<PartialObjectMeta<K>>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let api = scoped::<PartialObjectMeta<K>>(client.clone(), scope);
    watch::resilient(kind, watcher::watcher(api, children_config())).touched_objects()
}

fn scoped<K>(client: Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

fn error_policy(stack: Arc<AppStack>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context.retry_delay(&stack);
    warn!(
        namespace = stack.namespace().unwrap_or_default(),
        stack = stack.name_any(),
        category = error.category(),
        error = %error_chain(error),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Reconciles one stack within the timeout, timed and counted, in a span
/// naming the stack and this reconcile.
pub async fn reconcile(stack: Arc<AppStack>, context: Arc<Context>) -> Result<Action, Error> {
    let timer = context.metrics.reconcile_started();
    let span = tracing::info_span!(
        "reconcile",
        namespace = %stack.namespace().unwrap_or_default(),
        stack = %stack.name_any(),
        reconcile_id = %reconcile_id(),
    );
    let timeout = context.reconcile_timeout;
    let result = tokio::time::timeout(timeout, reconcile_stack(stack.clone(), context.clone()))
        .instrument(span)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)));
    timer.finish(result.is_ok());
    if result.is_ok() {
        context.succeeded(&stack);
    }
    result
}

/// A short random id tying one reconcile's log lines together.
fn reconcile_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    crate::stack::hex(&bytes)
}

/// Reconciles one stack and writes its status.
async fn reconcile_stack(cached: Arc<AppStack>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    // The cache may not hold our last status write yet; the status and the
    // Events derived from it must start from what the server has.
    let stacks: Api<AppStack> = Api::namespaced(context.client.clone(), &namespace);
    let Some(stack) = stacks
        .get_opt(&name)
        .await
        .map_err(fetch_error(format!("AppStack {name}")))?
    else {
        return Ok(Action::await_change());
    };
    if stack.metadata.deletion_timestamp.is_some() {
        // Being deleted: create nothing more, and let the deletion finish.
        release(&context.client, &stacks, &stack).await?;
        return Ok(Action::await_change());
    }
    let generation = stack.metadata.generation.unwrap_or(0);
    let mut observation = Observation::default();
    match ValidatedStack::new(&stack) {
        Ok(validated) => pipeline(&context, &stack, &validated, &mut observation).await?,
        Err(invalid) => observation.invalid = Some(invalid.to_string()),
    }
    let previous = stack.status.as_ref();
    let desired = status::desired_status(&observation, generation, previous, Timestamp::now());
    for event in transition_events(previous, &desired) {
        context.publish(&stack, event).await;
    }
    if let Some(status) = status::status_patch(previous, &desired) {
        write_status(&context.client, &namespace, &name, &status).await?;
        info!(%namespace, %name, outcome = ?observation.outcome(), "status updated");
    }
    let uid = stack.uid().unwrap_or_default();
    if let Some(delay) = context
        .databases
        .retry_after(&uid, observation.database.as_ref())
    {
        // The database cannot be used: look again later and later.
        return Ok(Action::requeue(delay));
    }
    Ok(next_check(&observation))
}

/// When to look again without a watch event.
fn next_check(observation: &Observation) -> Action {
    let waiting_on_unwatched = [&observation.secrets, &observation.monitoring]
        .into_iter()
        .flatten()
        .any(|check| {
            !check.ok
                && [reasons::SECRET_NOT_FOUND, reasons::CRD_NOT_INSTALLED].contains(&check.reason)
        });
    if waiting_on_unwatched {
        return Action::requeue(POLL);
    }
    match observation.outcome() {
        status::Outcome::Reconciling(_) => Action::requeue(PROGRESS),
        _ => Action::requeue(RESYNC),
    }
}

async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &AppStackStatus,
) -> Result<(), Error> {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let mut value = serde_json::to_value(status).unwrap_or_default();
    // A merge patch keeps keys it does not mention: clear a dropped migration.
    value["migration"] = serde_json::to_value(&status.migration).unwrap_or_default();
    stacks
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": value })),
        )
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// Events for the transitions between two statuses.
pub fn transition_events(
    previous: Option<&AppStackStatus>,
    desired: &AppStackStatus,
) -> Vec<Event> {
    let became = |type_: &str, reason: &str| {
        let now = status::condition(Some(desired), type_)
            .filter(|condition| condition.reason == reason)?;
        let before = status::condition(previous, type_);
        let changed = before.is_none_or(|before| {
            before.reason != now.reason
                || before.status != now.status
                || before.message != now.message
        });
        changed.then(|| now.message.clone())
    };
    let event = |type_: EventType, reason: &str, note: String| Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    let mut events = Vec::new();
    if let Some(condition) = status::condition(Some(desired), types::DATABASE_READY)
        .filter(|condition| reasons::DATABASE_UNUSABLE.contains(&condition.reason.as_str()))
        && let Some(note) = became(types::DATABASE_READY, &condition.reason)
    {
        events.push(event(EventType::Warning, &condition.reason, note));
    }
    if let Some(note) = became(types::MIGRATIONS_APPLIED, reasons::MIGRATION_SUCCEEDED) {
        events.push(event(EventType::Normal, reasons::MIGRATION_SUCCEEDED, note));
    }
    if let Some(note) = became(types::MIGRATIONS_APPLIED, reasons::MIGRATION_FAILED) {
        events.push(event(EventType::Warning, reasons::MIGRATION_FAILED, note));
    }
    if let Some(note) = became(types::BACKEND_AVAILABLE, reasons::AVAILABLE) {
        events.push(event(
            EventType::Normal,
            reasons::ROLLOUT_COMPLETE,
            format!("backend: {note}"),
        ));
    }
    if let Some(note) = became(types::FRONTEND_AVAILABLE, reasons::AVAILABLE) {
        events.push(event(
            EventType::Normal,
            reasons::ROLLOUT_COMPLETE,
            format!("frontend: {note}"),
        ));
    }
    if let Some(note) = became(types::READY, reasons::READY) {
        events.push(event(EventType::Normal, reasons::STACK_READY, note));
    }
    if let Some(condition) = status::condition(Some(desired), types::STALLED).filter(|condition| {
        condition.status == "True" && condition.reason != reasons::MIGRATION_FAILED
    }) && became(types::STALLED, &condition.reason).is_some()
    {
        events.push(event(
            EventType::Warning,
            &condition.reason,
            condition.message.clone(),
        ));
    }
    events
}

/// Fetch, build, apply in order; records what it finds in `observation`.
async fn pipeline(
    context: &Context,
    stack: &AppStack,
    validated: &ValidatedStack,
    observation: &mut Observation,
) -> Result<(), Error> {
    let client = &context.client;
    let namespace = validated.namespace.as_str();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    if validated.deletes_database_with_stack() {
        set_finalizer(&stacks, stack, true).await?;
    }
    let previous_migration = stack
        .status
        .as_ref()
        .and_then(|status| status.migration.clone());
    if validated.migration.is_some() {
        // Until the migration step reports, the status keeps what it said.
        observation.migration = previous_migration.clone();
    }

    // Fetch what is referenced and what was generated before.
    let referenced = stack.spec.referenced_secrets();
    let observed = observe_secrets(&secrets_api, validated, referenced).await?;
    let resolved = match secrets::resolve(validated, &observed) {
        Ok(resolved) => resolved,
        Err(secrets::ResolveError::MissingReference { name, key }) => {
            observation.secrets = Some(Check::pending(
                reasons::SECRET_NOT_FOUND,
                format!("key {key:?} of Secret {name:?} does not exist"),
            ));
            return Ok(());
        }
        Err(error) => return Err(Error::Secrets(error)),
    };

    // Build every child.
    let service_monitor_api = if validated.service_monitor_labels.is_some() {
        context.service_monitor_api().await?
    } else {
        None
    };
    let located = database::locate(validated, &observed, &resolved.values);
    let identity = located.as_ref().ok().map(|located| &located.identity);
    let target_revision = identity.and_then(|identity| validated.migration_revision(identity));
    let built = children::build(validated, &resolved.values, identity);
    sweep(
        context,
        stack,
        validated,
        &built,
        service_monitor_api.as_ref(),
    )
    .await?;
    let Children {
        database_secret,
        env_secret,
        env_config,
        database,
        migration_job,
        backend,
        frontend,
        service_monitor,
    } = built;

    // 1. Secrets and configuration.
    if let Some(secret) = &database_secret {
        let applied = apply::create_if_absent(&secrets_api, secret)
            .await
            .map_err(apply_error(secret))?;
        if applied.written {
            context
                .publish(
                    stack,
                    action_event(
                        reasons::SECRET_GENERATED,
                        format!(
                            "generated database credentials in Secret {}",
                            database_name(validated)
                        ),
                    ),
                )
                .await;
        } else {
            align_owner(&secrets_api, secret, &applied.object).await?;
        }
    }
    apply_child(&secrets_api, &env_secret).await?;
    if !resolved.generated_env.is_empty() {
        let note = format!(
            "generated {} in Secret {}",
            resolved.generated_env.join(", "),
            env_name(validated)
        );
        context
            .publish(stack, action_event(reasons::SECRET_GENERATED, note))
            .await;
    }
    apply_child(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &env_config,
    )
    .await?;
    observation.secrets = Some(Check::ok(
        reasons::SECRETS_RESOLVED,
        "env and database credentials are in place",
    ));

    // 2. The database: ready, and answering where the operator reaches it.
    let migration_pending = target_revision.is_some()
        && target_revision
            != previous_migration
                .as_ref()
                .and_then(|migration| migration.applied_revision.clone());
    let settled = database::settled(
        stack.status.as_ref(),
        validated.generation,
        migration_pending,
    );
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let database_check = match (database, &validated.database) {
        (
            Some(DatabaseChildren {
                statefulset,
                service,
            }),
            _,
        ) => {
            apply_child(&services, &service).await?;
            let applied = apply_child(
                &Api::<StatefulSet>::namespaced(client.clone(), namespace),
                &statefulset,
            )
            .await?;
            let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
            let volume_in_line = align_volume_owner(&pvcs, validated).await?;
            match statefulset_check(&applied.object) {
                check if check.ok && !volume_in_line => Check::pending(
                    reasons::DATABASE_STARTING,
                    format!(
                        "waiting for volume {} to exist",
                        children::database::volume_claim_name(validated)
                    ),
                ),
                check if check.ok => context.databases.readiness(&located, settled).await,
                check => check,
            }
        }
        (None, Database::External { .. }) => context.databases.readiness(&located, settled).await,
        (None, Database::Managed(_)) => unreachable!("a managed database always has children"),
    };
    if !validated.deletes_database_with_stack() {
        // The credentials and the volume no longer go with the stack (both
        // were aligned above): it need not wait for the operator to go.
        set_finalizer(&stacks, stack, false).await?;
    }
    let database_ready = database_check.ok;
    observation.database = Some(database_check);
    let (true, Ok(located)) = (database_ready, &located) else {
        return Ok(());
    };

    // 3. Migrations: the target revision's Job must succeed first.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let migrations_check = match (&migration_job, &validated.migration, &target_revision) {
        (Some(job), Some(migration), Some(revision)) => {
            let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
            let schema = SchemaSource {
                located,
                query: migration.spec.revision_query.as_deref(),
            };
            let (check, migration_status) = migrate(
                context,
                stack,
                &jobs,
                job,
                revision,
                previous_migration,
                schema,
            )
            .await?;
            observation.migration = Some(migration_status);
            check
        }
        _ => Check::ok(reasons::NO_MIGRATIONS, "no migrations configured"),
    };
    let migrated = migrations_check.ok;
    if !migrated && migrations_check.reason == reasons::MIGRATION_FAILED {
        observation.terminal = Some(migrations_check.clone());
    }
    observation.migrations = Some(migrations_check);
    if !migrated {
        // The backend keeps its last migrated revision; report on it as is.
        let current = deployments
            .get_opt(&backend.deployment.name_any())
            .await
            .map_err(fetch_error("the backend Deployment"))?;
        observation.backend = current.as_ref().map(deployment_check);
        return Ok(());
    }

    // 4. The backend moves to the new revision.
    let Workload {
        deployment,
        service,
    } = backend;
    apply_child(&services, &service).await?;
    let applied = apply_child(&deployments, &deployment).await?;
    let backend_check = deployment_check(&applied.object);
    let backend_ready = backend_check.ok;
    if backend_check.reason == reasons::ROLLOUT_FAILED {
        observation.terminal = Some(backend_check.clone());
    }
    observation.backend = Some(backend_check);
    if !backend_ready {
        return Ok(());
    }

    // 5. The frontend, then monitoring.
    let frontend_check = match frontend {
        Some(Workload {
            deployment,
            service,
        }) => {
            apply_child(&services, &service).await?;
            let applied = apply_child(&deployments, &deployment).await?;
            deployment_check(&applied.object)
        }
        None => Check::ok(reasons::NOT_CONFIGURED, "no frontend in the spec"),
    };
    if frontend_check.reason == reasons::ROLLOUT_FAILED {
        observation.terminal = Some(frontend_check.clone());
    }
    let frontend_ready = frontend_check.ok;
    observation.frontend = Some(frontend_check);
    if !frontend_ready {
        return Ok(());
    }
    observation.monitoring = Some(match (service_monitor, service_monitor_api) {
        (None, _) => Check::ok(reasons::DISABLED, "no ServiceMonitor asked for"),
        (Some(_), None) => Check::pending(
            reasons::CRD_NOT_INSTALLED,
            "the monitoring.coreos.com/v1 ServiceMonitor API is not served; install the Prometheus Operator CRDs",
        ),
        (Some(monitor), Some(resource)) => {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
            apply::apply(&api, &monitor)
                .await
                .map_err(|source| Error::Apply {
                    kind: "ServiceMonitor".into(),
                    name: monitor.name_any(),
                    source,
                })?;
            Check::ok(
                reasons::SERVICE_MONITOR_READY,
                "ServiceMonitor for the backend is applied",
            )
        }
    });
    Ok(())
}

/// Where the schema revision is read after a migration succeeded.
struct SchemaSource<'a> {
    located: &'a Located,
    /// `spec.migrations.revisionQuery`; Alembic's table when `None`.
    query: Option<&'a str>,
}

impl SchemaSource<'_> {
    async fn read(&self, context: &Context) -> (Option<String>, String) {
        context
            .databases
            .schema_revision(self.located, self.query)
            .await
    }
}

/// Runs (or follows) the migration Job of `revision`, and reads the schema
/// revision it left once it succeeded (again on later passes while unknown).
async fn migrate(
    context: &Context,
    stack: &AppStack,
    jobs: &Api<Job>,
    job: &Job,
    revision: &str,
    previous: Option<MigrationStatus>,
    schema: SchemaSource<'_>,
) -> Result<(Check, MigrationStatus), Error> {
    let job_name = job.name_any();
    let previous = previous.unwrap_or_default();
    let applied_before = previous.applied_revision.clone();
    let mut status = MigrationStatus {
        target_revision: Some(revision.into()),
        applied_revision: applied_before.clone(),
        job_name: Some(job_name.clone()),
        attempts: None,
        schema_revision: previous.schema_revision.clone(),
    };
    if applied_before.as_deref() == Some(revision) {
        // Already applied: the Job may have been cleaned up; never re-run it.
        let existing = jobs
            .get_opt(&job_name)
            .await
            .map_err(fetch_error("the migration Job"))?;
        status.attempts = existing.as_ref().map(job_attempts).or(previous.attempts);
        let note = match &status.schema_revision {
            Some(known) => database::schema_note(known),
            None => {
                let (read, note) = schema.read(context).await;
                status.schema_revision = read;
                note
            }
        };
        let check = Check::ok(
            reasons::MIGRATION_SUCCEEDED,
            format!("revision {revision} applied; {note}"),
        );
        return Ok((check, status));
    }
    let applied = apply::create_if_absent(jobs, job)
        .await
        .map_err(apply_error(job))?;
    if applied.written {
        let note = format!("started Job {job_name} for revision {revision}");
        context
            .publish(stack, action_event(reasons::MIGRATION_STARTED, note))
            .await;
    }
    status.attempts = Some(job_attempts(&applied.object));
    let check = match job_state(&applied.object) {
        JobState::Succeeded => {
            status.applied_revision = Some(revision.into());
            let (read, note) = schema.read(context).await;
            status.schema_revision = read;
            Check::ok(
                reasons::MIGRATION_SUCCEEDED,
                format!("revision {revision} applied; {note}"),
            )
        }
        JobState::Failed(why) => Check::pending(
            reasons::MIGRATION_FAILED,
            format!(
                "Job {job_name} failed: {why}; the backend keeps running the last migrated revision; change the image or retryToken to run again"
            ),
        ),
        JobState::Running => Check::pending(
            reasons::MIGRATION_RUNNING,
            format!("Job {job_name} is running revision {revision}"),
        ),
    };
    Ok((check, status))
}

enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for condition in conditions
        .iter()
        .filter(|condition| condition.status == "True")
    {
        match condition.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let why = condition.reason.clone().unwrap_or_else(|| "failed".into());
                return JobState::Failed(why);
            }
            _ => {}
        }
    }
    JobState::Running
}

fn job_finished(job: &Job) -> bool {
    !matches!(job_state(job), JobState::Running)
}

fn job_attempts(job: &Job) -> i32 {
    job.status.as_ref().map_or(0, |status| {
        status.failed.unwrap_or(0) + status.succeeded.unwrap_or(0) + status.active.unwrap_or(0)
    })
}

fn statefulset_check(statefulset: &StatefulSet) -> Check {
    let wanted = statefulset.spec.replicas.unwrap_or(1);
    let status = statefulset.status.clone().unwrap_or_default();
    let current = status.observed_generation >= statefulset.metadata.generation;
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if current && ready >= wanted && updated >= wanted {
        Check::ok(
            reasons::DATABASE_READY,
            "PostgreSQL is accepting connections",
        )
    } else {
        Check::pending(
            reasons::DATABASE_STARTING,
            format!("{ready} of {wanted} database replicas ready"),
        )
    }
}

fn deployment_check(deployment: &Deployment) -> Check {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions.iter().any(|condition| {
        condition.type_.as_deref() == Some("Progressing")
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Check::pending(
            reasons::ROLLOUT_FAILED,
            format!(
                "Deployment {} exceeded its progress deadline",
                deployment.name_any()
            ),
        );
    }
    let current = status.observed_generation >= deployment.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if current && updated == wanted && available == wanted && total == wanted {
        let image = deployment
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.containers.first())
            .and_then(|container| container.image.clone())
            .unwrap_or_default();
        Check::ok(
            reasons::AVAILABLE,
            format!("{available} of {wanted} replicas of {image} available"),
        )
    } else {
        Check::pending(
            reasons::ROLLING_OUT,
            format!("{updated} of {wanted} replicas updated, {available} available"),
        )
    }
}

/// Reads the stack's generated Secrets and every key of the `referenced`
/// Secrets (names from [`AppStackSpec::referenced_secrets`], which the
/// Secret watch maps by too).
///
/// [`AppStackSpec::referenced_secrets`]: crate::crd::AppStackSpec::referenced_secrets
async fn observe_secrets(
    secrets_api: &Api<Secret>,
    stack: &ValidatedStack,
    referenced: BTreeSet<&str>,
) -> Result<ObservedSecrets, Error> {
    let data_of = |secret: Option<Secret>| {
        secret.map(|secret| {
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, SecretValue::new(value.0)))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let get = |name: String| async move {
        secrets_api
            .get_opt(&name)
            .await
            .map_err(fetch_error(format!("Secret {name}")))
    };
    let mut observed = ObservedSecrets::default();
    if let Database::Managed(_) = stack.database {
        observed.database = data_of(get(database_name(stack)).await?);
    }
    observed.env = data_of(get(env_name(stack)).await?).unwrap_or_default();
    for name in referenced {
        let Some(data) = data_of(get(name.to_string()).await?) else {
            continue;
        };
        observed.present.insert(name.to_string());
        for (key, value) in data {
            observed.referenced.insert((name.to_string(), key), value);
        }
    }
    Ok(observed)
}

/// Keeps the `<stack>-db` Secret's ownerReference in line with the deletion
/// policy without touching its data.
async fn align_owner(
    secrets_api: &Api<Secret>,
    desired: &Secret,
    observed: &Secret,
) -> Result<(), Error> {
    let desired_owners = desired
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    if desired_owners.as_slice() == observed.owner_references() {
        return Ok(());
    }
    write_owners(secrets_api, observed, desired_owners).await
}

/// Lets a stack that is being deleted go. If it holds [`DATABASE_FINALIZER`]
/// but its spec now says `Retain` (switched just before the deletion, before
/// a reconcile caught up), the credentials and the volume are disowned
/// first, so the deletion honours the policy the user last asked for.
async fn release(client: &Client, stacks: &Api<AppStack>, stack: &AppStack) -> Result<(), Error> {
    if !holds_database_finalizer(stack.finalizers()) {
        return Ok(());
    }
    if let Ok(validated) = ValidatedStack::new(stack)
        && let Database::Managed(_) = validated.database
        && !validated.deletes_database_with_stack()
    {
        let namespace = validated.namespace.as_str();
        disown(
            &Api::<Secret>::namespaced(client.clone(), namespace),
            &database_name(&validated),
            &validated.uid,
        )
        .await?;
        align_volume_owner(
            &Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace),
            &validated,
        )
        .await?;
    }
    set_finalizer(stacks, stack, false).await?;
    info!("stack deleted; its children go with it");
    Ok(())
}

/// Removes the ownerReference to `owner` from object `name`, if it has one.
async fn disown<K>(api: &Api<K>, name: &str, owner: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    realign_owners(api, name, |observed| {
        observed
            .iter()
            .any(|reference| reference.uid == owner)
            .then(|| {
                observed
                    .iter()
                    .filter(|reference| reference.uid != owner)
                    .cloned()
                    .collect()
            })
    })
    .await?;
    Ok(())
}

/// Sets object `name`'s ownerReferences to what `desired` makes of the
/// observed ones (`None`: leave them), through [`write_owners`]. Returns
/// whether the object exists.
async fn realign_owners<K>(
    api: &Api<K>,
    name: &str,
    desired: impl FnOnce(&[OwnerReference]) -> Option<Vec<OwnerReference>>,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(object) = api
        .get_metadata_opt(name)
        .await
        .map_err(fetch_error(format!("{} {name}", K::kind(&()))))?
    else {
        return Ok(false);
    };
    if let Some(owners) = desired(object.owner_references()) {
        write_owners(api, &object, owners).await?;
    }
    Ok(true)
}

/// Replaces `observed`'s ownerReferences with `owners`. Controllers edit
/// these lists concurrently (the StatefulSet controller does, on its
/// volumes): the patch carries the resourceVersion `observed` was read at,
/// so a concurrent change makes it fail and the reconcile retry rather than
/// overwrite.
async fn write_owners<K, O>(
    api: &Api<K>,
    observed: &O,
    owners: Vec<OwnerReference>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    O: Resource<DynamicType = ()>,
{
    let name = observed.name_any();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": observed.resource_version(),
        "ownerReferences": owners,
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(apply_error(observed))?;
    info!(kind = %O::kind(&()), %name, "ownerReferences updated");
    Ok(())
}

/// Adds or removes [`DATABASE_FINALIZER`] so the stack holds it exactly
/// when `wanted`. A JSON patch tested against the resourceVersion replaces
/// the list, so a finalizer someone else adds meanwhile is never lost: the
/// patch fails and the reconcile is retried.
async fn set_finalizer(
    stacks: &Api<AppStack>,
    stack: &AppStack,
    wanted: bool,
) -> Result<(), Error> {
    let Some(finalizers) = desired_finalizers(stack.finalizers(), wanted) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": stack.resource_version()},
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ]))
    .expect("a well-formed JSON patch");
    stacks
        .patch(
            &stack.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(Error::Finalizer)?;
    info!(
        finalizer = DATABASE_FINALIZER,
        held = wanted,
        "finalizer updated"
    );
    Ok(())
}

/// The stack's finalizers with [`DATABASE_FINALIZER`] held exactly when
/// `wanted`, or `None` when `current` already is that.
fn desired_finalizers(current: &[String], wanted: bool) -> Option<Vec<String>> {
    match (holds_database_finalizer(current), wanted) {
        (false, true) => Some(
            current
                .iter()
                .cloned()
                .chain([DATABASE_FINALIZER.to_string()])
                .collect(),
        ),
        (true, false) => Some(
            current
                .iter()
                .filter(|name| *name != DATABASE_FINALIZER)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

fn holds_database_finalizer(finalizers: &[String]) -> bool {
    finalizers.iter().any(|name| name == DATABASE_FINALIZER)
}

/// Keeps the database volume's ownerReferences in line with the deletion
/// policy (see [`children::database::volume_owner_references`]). Returns
/// whether the volume follows the policy: under `Delete` it must exist to be
/// owned, so a stack is not reported ready before its volume would go with it.
async fn align_volume_owner(
    pvcs: &Api<PersistentVolumeClaim>,
    stack: &ValidatedStack,
) -> Result<bool, Error> {
    let name = children::database::volume_claim_name(stack);
    let exists = realign_owners(pvcs, &name, |observed| {
        children::database::volume_owner_references(stack, observed)
    })
    .await?;
    Ok(exists || !stack.deletes_database_with_stack())
}

/// Deletes children of switched-off components: objects labelled as this
/// stack's, owned by its UID, and not among the children just built. Old
/// finished migration Jobs beyond the last few go too.
async fn sweep(
    context: &Context,
    stack: &AppStack,
    validated: &ValidatedStack,
    built: &Children,
    service_monitor_api: Option<&ApiResource>,
) -> Result<(), Error> {
    let client = &context.client;
    let namespace = validated.namespace.as_str();
    let names = |objects: Vec<Option<String>>| -> BTreeSet<String> {
        objects.into_iter().flatten().collect()
    };
    let workloads = [Some(&built.backend), built.frontend.as_ref()];
    let deployments = names(
        workloads
            .iter()
            .flatten()
            .map(|workload| workload.deployment.metadata.name.clone())
            .collect(),
    );
    let mut services = names(
        workloads
            .iter()
            .flatten()
            .map(|workload| workload.service.metadata.name.clone())
            .collect(),
    );
    services.extend(
        built
            .database
            .as_ref()
            .and_then(|database| database.service.metadata.name.clone()),
    );
    let statefulsets =
        names(vec![built.database.as_ref().and_then(|database| {
            database.statefulset.metadata.name.clone()
        })]);
    let secrets_kept = names(vec![
        built.env_secret.metadata.name.clone(),
        built
            .database_secret
            .as_ref()
            .and_then(|secret| secret.metadata.name.clone()),
    ]);
    let config_maps = names(vec![built.env_config.metadata.name.clone()]);

    let mut removed = Vec::new();
    removed.extend(sweep_kind::<Deployment>(client, namespace, validated, &deployments).await?);
    removed.extend(sweep_kind::<Service>(client, namespace, validated, &services).await?);
    removed.extend(sweep_kind::<StatefulSet>(client, namespace, validated, &statefulsets).await?);
    removed.extend(sweep_kind::<Secret>(client, namespace, validated, &secrets_kept).await?);
    removed.extend(sweep_kind::<ConfigMap>(client, namespace, validated, &config_maps).await?);
    removed.extend(sweep_jobs(client, namespace, validated, built.migration_job.as_ref()).await?);
    if let Some(resource) = service_monitor_api {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource);
        let keep = names(vec![
            built
                .service_monitor
                .as_ref()
                .and_then(|monitor| monitor.metadata.name.clone()),
        ]);
        removed.extend(sweep_api(&api, "ServiceMonitor", validated, &keep).await?);
    }
    for object in removed {
        info!(namespace, stack = %validated.name, %object, "deleted child no longer in the spec");
        context
            .publish(
                stack,
                action_event(
                    reasons::DELETED,
                    format!("deleted {object}: no longer in the spec"),
                ),
            )
            .await;
    }
    Ok(())
}

async fn sweep_kind<K>(
    client: &Client,
    namespace: &str,
    stack: &ValidatedStack,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    sweep_api(&api, &K::kind(&()), stack, keep).await
}

async fn sweep_api<K>(
    api: &Api<K>,
    kind: &str,
    stack: &ValidatedStack,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let listed = api
        .list_metadata(&ListParams::default().labels(&children::stack_selector(&stack.name)))
        .await
        .map_err(fetch_error(format!("{kind} list")))?;
    let mut removed = Vec::new();
    for object in listed.items {
        let name = object.name_any();
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == stack.uid);
        if !owned || keep.contains(&name) {
            continue;
        }
        delete(api, kind, &name).await?;
        removed.push(format!("{kind} {name}"));
    }
    Ok(removed)
}

async fn sweep_jobs(
    client: &Client,
    namespace: &str,
    stack: &ValidatedStack,
    current: Option<&Job>,
) -> Result<Vec<String>, Error> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list(&ListParams::default().labels(&children::stack_selector(&stack.name)))
        .await
        .map_err(fetch_error("Job list"))?;
    let current = current.map(ResourceExt::name_any);
    let mut finished: Vec<Job> = listed
        .items
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|owner| owner.uid == stack.uid)
        })
        .filter(|job| Some(job.name_any()) != current && job_finished(job))
        .collect();
    // Newest first; everything after the first few goes.
    finished.sort_by_key(|job| std::cmp::Reverse(job.creation_timestamp()));
    let mut removed = Vec::new();
    for job in finished.into_iter().skip(KEEP_FINISHED_JOBS) {
        delete(&api, "Job", &job.name_any()).await?;
        removed.push(format!("Job {}", job.name_any()));
    }
    Ok(removed)
}

async fn delete<K>(api: &Api<K>, kind: &str, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Sweep {
            kind: kind.into(),
            name: name.into(),
            source,
        }),
    }
}

async fn apply_child<K>(api: &Api<K>, desired: &K) -> Result<Applied<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let applied = apply::apply(api, desired)
        .await
        .map_err(apply_error(desired))?;
    if applied.written {
        debug!(kind = %K::kind(&()), name = %desired.name_any(), "applied");
    }
    Ok(applied)
}

fn apply_error<K: Resource<DynamicType = ()>>(
    desired: &K,
) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::Apply {
        kind: K::kind(&()).into_owned(),
        name: desired.name_any(),
        source,
    }
}

fn fetch_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Fetch { what, source }
}

fn action_event(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Check, desired_status};

    #[test]
    fn the_database_finalizer_is_added_and_released_beside_others() {
        let others = vec!["example.com/keep".to_string()];
        let held = desired_finalizers(&others, true).unwrap();
        assert_eq!(held, ["example.com/keep", DATABASE_FINALIZER]);
        assert_eq!(desired_finalizers(&held, true), None);
        assert_eq!(desired_finalizers(&held, false).unwrap(), others);
        assert_eq!(desired_finalizers(&others, false), None);
        assert_eq!(desired_finalizers(&[], false), None);
    }

    fn observation(migrations: Check) -> Observation {
        Observation {
            secrets: Some(Check::ok(reasons::SECRETS_RESOLVED, "ok")),
            database: Some(Check::ok(reasons::DATABASE_READY, "ok")),
            migrations: Some(migrations),
            ..Observation::default()
        }
    }

    #[test]
    fn events_fire_on_transitions_only() {
        let at = Timestamp::from_second(1000).unwrap();
        let running = desired_status(
            &observation(Check::pending(reasons::MIGRATION_RUNNING, "running")),
            1,
            None,
            at,
        );
        let mut failed_observation =
            observation(Check::pending(reasons::MIGRATION_FAILED, "Job x failed"));
        failed_observation.terminal = failed_observation.migrations.clone();
        let failed = desired_status(&failed_observation, 1, Some(&running), at);
        let reasons_of = |events: Vec<Event>| {
            events
                .into_iter()
                .map(|event| event.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons_of(transition_events(Some(&running), &failed)),
            [reasons::MIGRATION_FAILED]
        );
        assert!(
            transition_events(Some(&failed), &failed).is_empty(),
            "no repeat on a converged pass"
        );
    }

    #[test]
    fn a_database_that_cannot_be_used_is_a_warning_once() {
        let at = Timestamp::from_second(1000).unwrap();
        let mut refused = observation(Check::pending(reasons::WAITING_FOR_DATABASE, "waiting"));
        refused.database = Some(Check::pending(
            reasons::CONNECTION_REFUSED,
            "127.0.0.1:5432 refused the connection",
        ));
        let status = desired_status(&refused, 1, None, at);
        let events = transition_events(None, &status);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, reasons::CONNECTION_REFUSED);
        assert!(matches!(events[0].type_, EventType::Warning));
        assert!(transition_events(Some(&status), &status).is_empty());
    }
}
