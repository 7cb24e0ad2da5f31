//! The metrics reference, read from the operator's registry: every metric
//! with its type, labels and help, whether or not it has a sample yet.

use std::fmt::Write;

use prometheus::proto::MetricType;

use super::markdown::{code, prose};
use crate::runtime::metrics::Metrics;

/// The page listing what `/metrics` serves.
pub fn page(metrics: &Metrics) -> String {
    let mut page = super::generated_notice("the registry in src/runtime/metrics.rs");
    page.push_str("# Metrics\n\n");
    page.push_str(
        "`appstack run` serves these on `/metrics` (`--metrics-addr`, default `:8080`) in \
         Prometheus' text format. Names follow controller-runtime where one exists, so \
         dashboards and alerts written for Go operators work unchanged; no label carries a \
         per-object value, and no value is ever a secret.\n\n",
    );
    page.push_str("| metric | type | labels | description |\n|---|---|---|---|\n");
    let mut rows: Vec<(String, String)> = Vec::new();
    for collector in metrics.collectors() {
        for description in collector.desc() {
            let family = collector
                .collect()
                .into_iter()
                .find(|family| family.name() == description.fq_name)
                .expect("a collector collects what it describes");
            let labels = description
                .variable_labels
                .iter()
                .map(|label| code(label))
                .collect::<Vec<_>>()
                .join(", ");
            let help = prose(&description.help).join(" ");
            rows.push((
                description.fq_name.clone(),
                format!(
                    "| {} | {} | {} | {} |",
                    code(&description.fq_name),
                    kind(family.get_field_type()),
                    labels,
                    help.replace('|', "\\|")
                ),
            ));
        }
    }
    rows.sort();
    for (_, row) in rows {
        let _ = writeln!(page, "{row}");
    }
    page.push_str(
        "\nA histogram is served as `<name>_bucket{le}`, `<name>_sum` and `<name>_count`. \
         The process also serves `/healthz` (while it lives) and `/readyz` (once the \
         AppStack caches have synced, or while a standby reaches its Lease) on \
         `--health-addr`.\n",
    );
    page
}

fn kind(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_metric_is_listed_with_its_labels() {
        let metrics = Metrics::new();
        let page = page(&metrics);
        let mut listed = 0;
        for collector in metrics.collectors() {
            for description in collector.desc() {
                assert!(
                    page.contains(&format!("| `{}` |", description.fq_name)),
                    "{} is missing",
                    description.fq_name
                );
                listed += 1;
            }
        }
        assert!(listed >= 14, "only {listed} metrics");
        assert!(page.contains(
            "| `controller_runtime_reconcile_errors_total` | counter | `controller`, `step` |"
        ));
        assert!(page.contains("| `controller_runtime_reconcile_time_seconds` | histogram |"));
    }
}
