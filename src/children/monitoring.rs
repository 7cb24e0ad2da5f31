//! The backend's ServiceMonitor, for the Prometheus Operator.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta::{Component, object_meta, selector_labels};
use super::workload::{HTTP_PORT_NAME, workload_name};
use crate::api::stack::{DEFAULT_METRICS_INTERVAL, DEFAULT_METRICS_PATH, ValidatedStack};

/// API group of the Prometheus Operator.
pub const MONITORING_GROUP: &str = "monitoring.coreos.com";

/// Group, version and kind of ServiceMonitor.
pub fn service_monitor_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk(MONITORING_GROUP, "v1", "ServiceMonitor")
}

/// The ServiceMonitor API resource, as discovery would report it.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&service_monitor_gvk(), "servicemonitors")
}

/// A ServiceMonitor scraping the backend Service, `None` unless
/// `monitoring.serviceMonitor.enabled`.
pub fn service_monitor(stack: &ValidatedStack) -> Option<DynamicObject> {
    let extra_labels = stack.service_monitor_labels.as_ref()?;
    let (path, interval) = stack.backend.metrics.as_ref().map_or(
        (DEFAULT_METRICS_PATH, DEFAULT_METRICS_INTERVAL),
        |metrics| (metrics.path.as_str(), metrics.interval.as_str()),
    );
    let mut metadata = object_meta(
        stack,
        workload_name(stack, Component::Backend),
        Component::Backend,
    );
    let labels = metadata.labels.get_or_insert_default();
    for (key, value) in extra_labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let mut monitor = DynamicObject::new(
        &workload_name(stack, Component::Backend),
        &service_monitor_resource(),
    );
    monitor.metadata = metadata;
    monitor.data = json!({
        "spec": {
            "selector": {"matchLabels": selector_labels(stack, Component::Backend)},
            "endpoints": [{"port": HTTP_PORT_NAME, "path": path, "interval": interval}],
        }
    });
    Some(monitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;

    #[test]
    fn service_monitor_scrapes_the_backend_service_with_the_user_labels() {
        let stack = example();
        let monitor = service_monitor(&stack).unwrap();
        let value = serde_json::to_value(&monitor).unwrap();
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(value["kind"], "ServiceMonitor");
        assert_eq!(value["metadata"]["name"], "shop-backend");
        assert_eq!(value["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(
            value["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "backend"
        );
        assert_eq!(
            value["spec"]["endpoints"],
            json!([{"port": "http", "path": "/metrics", "interval": "30s"}])
        );
    }

    #[test]
    fn disabled_monitoring_builds_nothing() {
        let mut stack = example();
        stack.service_monitor_labels = None;
        assert!(service_monitor(&stack).is_none());
    }
}
