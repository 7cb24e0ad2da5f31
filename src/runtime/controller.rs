//! The controller loop: per scope (all namespaces, or each namespace given),
//! caches fed by watches, and a kube-runtime controller that runs a pass
//! for every stack a watch event concerns, a bounded number at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{Instrument, debug, warn};

use super::cache::{Caches, StackKey};
use super::metrics::Metrics;
use super::server::ProcessState;
use super::telemetry::error_chain;
use super::watches;
use crate::children;
use crate::children::network::OperatorPods;
use crate::database::{DatabaseChecks, Databases};
use crate::reconcile::{self, Context};

/// Longest wait before retrying a failed pass.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Passes running at once, per scope.
    pub concurrency: u16,
    /// Upper bound of one pass; its API calls share the bound.
    pub pass_timeout: Duration,
    /// Which databases the operator connects to.
    pub database_checks: DatabaseChecks,
    /// The namespace of the operator's pod (`POD_NAMESPACE`), when it runs
    /// in the cluster.
    pub pod_namespace: Option<String>,
}

impl RunOptions {
    /// The operator's pods as the stacks' NetworkPolicies see them: only an
    /// operator in the cluster that connects to managed databases needs in.
    fn operator_pods(&self) -> Option<OperatorPods> {
        let namespace = self.pod_namespace.clone()?;
        (self.database_checks == DatabaseChecks::All).then_some(OperatorPods { namespace })
    }
}

/// What the controller of one scope shares between its passes.
struct Scope {
    context: Context,
    timeout: Duration,
    failures: Arc<Failures>,
}

/// Consecutive failed passes per stack UID, for the retry backoff. A
/// stack's entry goes when a pass succeeds or the stack is deleted (see
/// [`watches::start`]'s `forget`), so failing stacks that are deleted leave
/// nothing behind.
#[derive(Debug, Default)]
struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts a failure; the delay before the retry: doubling from 1 s,
    /// capped at [`MAX_RETRY_DELAY`].
    fn retry_delay(&self, uid: &str) -> Duration {
        let mut failures = self.0.lock().expect("failures lock");
        let count = failures.entry(uid.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(6)).min(MAX_RETRY_DELAY)
    }

    /// A pass succeeded, or the stack is gone: start over.
    fn forget(&self, uid: &str) {
        self.0.lock().expect("failures lock").remove(uid);
    }

    fn len(&self) -> usize {
        self.0.lock().expect("failures lock").len()
    }
}

/// Runs the controller until `shutdown` completes and in-flight passes have
/// finished. Each scope's caches are filled before its first pass, and are
/// handed to `state` for readiness and metrics.
pub async fn run(
    client: Client,
    metrics: Metrics,
    options: RunOptions,
    state: Arc<ProcessState>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    metrics.set_max_concurrent_reconciles(options.concurrency);
    let reporter = Reporter {
        controller: children::FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let databases = Arc::new(Databases::new(options.database_checks, metrics.clone()));
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let mut watches = Vec::new();
    let mut all_caches = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let (caches, stacks_writer) = Caches::new();
        let (triggers, woken) = futures::channel::mpsc::unbounded();
        let failures = Arc::new(Failures::default());
        let forget = {
            let failures = failures.clone();
            let databases = databases.clone();
            let caches = caches.clone();
            move |uid: &str| {
                failures.forget(uid);
                databases.forget(uid);
                caches.deferred.forget(uid);
                debug!(uid, failing = failures.len(), "forgot a deleted stack");
            }
        };
        watches.push(
            watches::start(
                client.clone(),
                scope.clone(),
                caches.clone(),
                stacks_writer,
                triggers,
                forget,
                metrics.clone(),
            )
            .await,
        );
        all_caches.push(caches.clone());
        let scope = Arc::new(Scope {
            context: Context {
                client: client.clone(),
                reporter: reporter.clone(),
                metrics: metrics.clone(),
                caches: caches.clone(),
                databases: databases.clone(),
                operator_pods: options.operator_pods(),
            },
            timeout: options.pass_timeout,
            failures,
        });
        let no_stream = futures::stream::pending::<Result<StackKey, watcher::Error>>();
        controllers.push(
            Controller::for_stream(no_stream, caches.keys.clone())
                .with_config(kube::runtime::Config::default().concurrency(options.concurrency))
                .reconcile_on(woken)
                .graceful_shutdown_on(shutdown.clone())
                .run(reconcile, error_policy, scope)
                .for_each(|result| async move {
                    match result {
                        Ok((stack, _)) => debug!(stack = %stack, "reconciled"),
                        Err(error) => debug!(error = %error_chain(&error), "reconcile failed"),
                    }
                }),
        );
    }
    state.set_caches(all_caches);
    futures::future::join_all(controllers).await;
    drop(watches);
}

fn error_policy(stack: Arc<StackKey>, error: &reconcile::Error, scope: Arc<Scope>) -> Action {
    let delay = scope.failures.retry_delay(&stack.uid().unwrap_or_default());
    warn!(
        namespace = stack.namespace().unwrap_or_default(),
        stack = stack.name_any(),
        step = error.step(),
        error = %error_chain(error),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// One pass within the timeout, timed and counted, in a span naming the
/// stack and this pass.
async fn reconcile(stack: Arc<StackKey>, scope: Arc<Scope>) -> Result<Action, reconcile::Error> {
    let metrics = &scope.context.metrics;
    let timer = metrics.reconcile_started();
    let span = tracing::info_span!(
        "reconcile",
        namespace = %stack.namespace().unwrap_or_default(),
        stack = %stack.name_any(),
        reconcile_id = %reconcile_id(),
    );
    let result = tokio::time::timeout(scope.timeout, reconcile::pass(&scope.context, &stack))
        .instrument(span)
        .await
        .unwrap_or(Err(reconcile::Error::Timeout(scope.timeout)));
    timer.finish(result.as_ref().err().map(reconcile::Error::step));
    if result.is_ok() {
        scope.failures.forget(&stack.uid().unwrap_or_default());
    }
    result
}

/// A short random id tying one pass's log lines together.
fn reconcile_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    crate::api::stack::hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_per_stack_and_a_forgotten_stack_leaves_nothing() {
        let failures = Failures::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| failures.retry_delay("a").as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(failures.retry_delay("b").as_secs(), 1, "per stack");
        failures.forget("a");
        assert_eq!(failures.len(), 1);
        failures.forget("b");
        assert_eq!(failures.len(), 0, "deleted while failing: no entry left");
        assert_eq!(failures.retry_delay("a").as_secs(), 1, "starts over");
    }
}
