//! Prometheus metrics. Names follow controller-runtime where one exists, so
//! dashboards and alerts written for Go operators work unchanged. No label
//! carries a per-object value, and no value is ever a secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::conditions::STACK_CONDITIONS;
use crate::runtime::cache::Footprint;

/// The `controller` label value of every controller-runtime metric.
pub const CONTROLLER: &str = "appstack";

/// Every metric the operator serves, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_time: HistogramVec,
    active_workers: IntGaugeVec,
    max_concurrent: IntGaugeVec,
    pub rest_requests: IntCounterVec,
    pub leader: IntGaugeVec,
    stacks: IntGaugeVec,
    cached_objects: IntGaugeVec,
    cached_bytes: IntGaugeVec,
    migrations: IntCounterVec,
    secrets_generated: IntCounter,
    status_deferred: IntGauge,
    database_checks: IntCounterVec,
    api_discovery: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let controller = [CONTROLLER];
        let metrics = Self {
            reconcile_total: IntCounterVec::new(
                Opts::new(
                    "controller_runtime_reconcile_total",
                    "Total number of reconciliations per controller",
                ),
                &["controller", "result"],
            )
            .unwrap(),
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "controller_runtime_reconcile_errors_total",
                    "Total number of reconciliation errors per controller, by the step of the pass that failed",
                ),
                &["controller", "step"],
            )
            .unwrap(),
            reconcile_time: HistogramVec::new(
                HistogramOpts::new(
                    "controller_runtime_reconcile_time_seconds",
                    "Length of time per reconciliation per controller",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["controller"],
            )
            .unwrap(),
            active_workers: IntGaugeVec::new(
                Opts::new(
                    "controller_runtime_active_workers",
                    "Number of currently used workers per controller",
                ),
                &["controller"],
            )
            .unwrap(),
            max_concurrent: IntGaugeVec::new(
                Opts::new(
                    "controller_runtime_max_concurrent_reconciles",
                    "Maximum number of concurrent reconciles per controller",
                ),
                &["controller"],
            )
            .unwrap(),
            rest_requests: IntCounterVec::new(
                Opts::new(
                    "rest_client_requests_total",
                    "Number of HTTP requests to the Kubernetes API, partitioned by status code and method",
                ),
                &["code", "method"],
            )
            .unwrap(),
            leader: IntGaugeVec::new(
                Opts::new(
                    "leader_election_master_status",
                    "1 while this process holds the leader lease, 0 otherwise",
                ),
                &["name"],
            )
            .unwrap(),
            stacks: IntGaugeVec::new(
                Opts::new(
                    "appstack_stacks",
                    "AppStacks by kstatus condition (Ready, Reconciling, Stalled, or Unknown before the first reconcile)",
                ),
                &["condition"],
            )
            .unwrap(),
            cached_objects: IntGaugeVec::new(
                Opts::new(
                    "appstack_cached_objects",
                    "Objects in the operator's caches by kind, whole or settled (found to hold what their stack desires, only what the status reads kept)",
                ),
                &["kind", "body"],
            )
            .unwrap(),
            cached_bytes: IntGaugeVec::new(
                Opts::new(
                    "appstack_cached_packed_bytes",
                    "Bytes of the compressed objects in the operator's caches and of the dictionaries they are compressed against, by kind",
                ),
                &["kind"],
            )
            .unwrap(),
            migrations: IntCounterVec::new(
                Opts::new(
                    "appstack_migrations_total",
                    "Migration Jobs started, succeeded and failed",
                ),
                &["result"],
            )
            .unwrap(),
            status_deferred: IntGauge::new(
                "appstack_status_writes_deferred",
                "AppStacks whose status differs from what the operator found only in messages, held back until the next transition or a few seconds",
            )
            .unwrap(),
            secrets_generated: IntCounter::new(
                "appstack_secrets_generated_total",
                "Secrets into which the operator generated values",
            )
            .unwrap(),
            database_checks: IntCounterVec::new(
                Opts::new(
                    "appstack_database_checks_total",
                    "Connections to stacks' databases (SELECT 1), by result: ok or the DatabaseReady reason",
                ),
                &["result"],
            )
            .unwrap(),
            api_discovery: IntCounterVec::new(
                Opts::new(
                    "appstack_api_discovery_requests_total",
                    "Requests looking for an optional API (ServiceMonitor, HTTPRoute) until it is served, one every 10 s, by kind",
                ),
                &["kind"],
            )
            .unwrap(),
            registry,
        };
        for collector in metrics.collectors() {
            metrics.registry.register(collector).unwrap();
        }
        // Series that exist from the start, so rate() and alerts see zeros.
        for result in ["success", "error"] {
            metrics
                .reconcile_total
                .with_label_values(&[CONTROLLER, result]);
        }
        for step in ["dereference", "apply", "release", "status", "timeout"] {
            metrics
                .reconcile_errors
                .with_label_values(&[CONTROLLER, step]);
        }
        metrics.active_workers.with_label_values(&controller);
        for result in ["started", "succeeded", "failed"] {
            metrics.migrations.with_label_values(&[result]);
        }
        metrics.database_checks.with_label_values(&["ok"]);
        for condition in STACK_CONDITIONS {
            metrics.stacks.with_label_values(&[condition]);
        }
        metrics
    }

    /// Every metric of the registry, as the registry and the metrics
    /// reference (`docs/src/reference/metrics.md`) see them.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.reconcile_total.clone()),
            Box::new(self.reconcile_errors.clone()),
            Box::new(self.reconcile_time.clone()),
            Box::new(self.active_workers.clone()),
            Box::new(self.max_concurrent.clone()),
            Box::new(self.rest_requests.clone()),
            Box::new(self.leader.clone()),
            Box::new(self.stacks.clone()),
            Box::new(self.cached_objects.clone()),
            Box::new(self.cached_bytes.clone()),
            Box::new(self.migrations.clone()),
            Box::new(self.secrets_generated.clone()),
            Box::new(self.status_deferred.clone()),
            Box::new(self.database_checks.clone()),
            Box::new(self.api_discovery.clone()),
        ]
    }

    pub fn set_max_concurrent_reconciles(&self, concurrency: u16) {
        self.max_concurrent
            .with_label_values(&[CONTROLLER])
            .set(i64::from(concurrency));
    }

    /// Starts timing a reconcile; the guard records it when finished.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.active_workers.with_label_values(&[CONTROLLER]).inc();
        ReconcileTimer {
            metrics: self.clone(),
            started: Instant::now(),
            histogram: self.reconcile_time.with_label_values(&[CONTROLLER]),
        }
    }

    /// Counts a migration Job started, or a revision observed to have
    /// succeeded or failed (`result`).
    pub fn migration(&self, result: &str) {
        self.migrations.with_label_values(&[result]).inc();
    }

    /// Counts a Secret written with newly generated values.
    pub fn secrets_generated(&self) {
        self.secrets_generated.inc();
    }

    /// Counts a connection check of a database: `ok`, or the reason it
    /// failed (a constant from [`crate::api::conditions::reasons`]).
    pub fn count_database_check(&self, result: &str) {
        self.database_checks.with_label_values(&[result]).inc();
    }

    /// Counts a request for an optional API's discovery document.
    pub fn api_discovery(&self, kind: &str) {
        self.api_discovery.with_label_values(&[kind]).inc();
    }

    /// Recounts stacks by the condition each holds (see [`crate::api::conditions::holding`]).
    pub fn count_stacks(&self, holding: impl Iterator<Item = &'static str>) {
        let mut counts = [0i64; 4];
        for condition in holding {
            let at = STACK_CONDITIONS
                .iter()
                .position(|known| *known == condition)
                .unwrap_or(3);
            counts[at] += 1;
        }
        for (condition, count) in STACK_CONDITIONS.iter().zip(counts) {
            self.stacks.with_label_values(&[condition]).set(count);
        }
    }

    /// Sets how many stacks' status writes are held back.
    pub fn count_deferred(&self, deferred: usize) {
        self.status_deferred.set(to_gauge(deferred));
    }

    /// Sets what the caches (of every watched scope) hold, kind by kind.
    pub fn count_cached(&self, footprints: &[Footprint]) {
        let mut totals: BTreeMap<&str, Footprint> = BTreeMap::new();
        for footprint in footprints {
            let total = totals.entry(&footprint.kind).or_default();
            total.whole += footprint.whole;
            total.settled += footprint.settled;
            total.packed_bytes += footprint.packed_bytes;
        }
        for (kind, total) in totals {
            let gauge = |body: &str| self.cached_objects.with_label_values(&[kind, body]);
            gauge("whole").set(to_gauge(total.whole));
            gauge("settled").set(to_gauge(total.settled));
            self.cached_bytes
                .with_label_values(&[kind])
                .set(to_gauge(total.packed_bytes));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding to memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    pub fn leader_gauge(&self, lease_name: &str) -> IntGauge {
        self.leader.with_label_values(&[lease_name])
    }
}

/// Records one reconcile's duration and result when dropped through
/// [`ReconcileTimer::finish`].
pub struct ReconcileTimer {
    metrics: Metrics,
    started: Instant,
    histogram: Histogram,
}

impl ReconcileTimer {
    /// Records the pass: a success, or an error in `failed_step`.
    pub fn finish(self, failed_step: Option<&str>) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
        let result = if failed_step.is_none() {
            "success"
        } else {
            "error"
        };
        self.metrics
            .reconcile_total
            .with_label_values(&[CONTROLLER, result])
            .inc();
        if let Some(step) = failed_step {
            self.metrics
                .reconcile_errors
                .with_label_values(&[CONTROLLER, step])
                .inc();
        }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .active_workers
            .with_label_values(&[CONTROLLER])
            .dec();
    }
}

/// A client layer counting every API request by method and status code
/// (`rest_client_requests_total`); `<error>` when no response came.
#[derive(Clone)]
pub struct RequestCounterLayer {
    counter: IntCounterVec,
}

impl RequestCounterLayer {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            counter: metrics.rest_requests.clone(),
        }
    }
}

impl<S> tower::Layer<S> for RequestCounterLayer {
    type Service = RequestCounter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestCounter {
            inner,
            counter: self.counter.clone(),
        }
    }
}

/// The service [`RequestCounterLayer`] wraps around the client.
#[derive(Clone)]
pub struct RequestCounter<S> {
    inner: S,
    counter: IntCounterVec,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RequestCounter<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = request.method().as_str().to_string();
        let counter = self.counter.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            counter.with_label_values(&[&code, &method]).inc();
            result
        })
    }
}

fn to_gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_and_timed() {
        let metrics = Metrics::new();
        metrics.set_max_concurrent_reconciles(16);
        metrics.reconcile_started().finish(None);
        metrics.reconcile_started().finish(Some("apply"));
        let text = metrics.render();
        assert!(text.contains(
            r#"controller_runtime_reconcile_total{controller="appstack",result="success"} 1"#
        ));
        assert!(text.contains(
            r#"controller_runtime_reconcile_total{controller="appstack",result="error"} 1"#
        ));
        assert!(text.contains(
            r#"controller_runtime_reconcile_errors_total{controller="appstack",step="apply"} 1"#
        ));
        assert!(text.contains(
            r#"controller_runtime_reconcile_errors_total{controller="appstack",step="status"} 0"#
        ));
        assert!(text.contains(
            r#"controller_runtime_reconcile_time_seconds_count{controller="appstack"} 2"#
        ));
        assert!(text.contains(r#"controller_runtime_active_workers{controller="appstack"} 0"#));
        assert!(
            text.contains(
                r#"controller_runtime_max_concurrent_reconciles{controller="appstack"} 16"#
            )
        );
    }

    #[test]
    fn observations_feed_the_operator_counters() {
        let metrics = Metrics::new();
        metrics.migration("started");
        metrics.migration("succeeded");
        metrics.secrets_generated();
        let text = metrics.render();
        assert!(text.contains(r#"appstack_migrations_total{result="started"} 1"#));
        assert!(text.contains(r#"appstack_migrations_total{result="succeeded"} 1"#));
        assert!(text.contains(r#"appstack_migrations_total{result="failed"} 0"#));
        assert!(text.contains("appstack_secrets_generated_total 1"));
    }
}
