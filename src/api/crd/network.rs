//! `spec.networkPolicy`: the NetworkPolicies that confine the stack's pods.

use k8s_openapi::api::networking::v1::NetworkPolicyEgressRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::schema::label_selector;

/// NetworkPolicies for the stack's pods: everything is denied, then exactly
/// the flows the stack needs are allowed (frontend to backend, backend and
/// migrations to the database, the ingress controller or gateway to the
/// exposed ports, Prometheus to the metrics port, DNS, and the external
/// database). Another NetworkPolicy selecting the stack's pods adds to what
/// is allowed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies (default true). false deletes them.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Who may reach the frontend and backend ports when `expose` is set:
    /// the ingress controller's or gateway's pods. Any pod in any namespace
    /// when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_from: Option<PeerSpec>,
    /// Who may scrape the backend's metrics port when the ServiceMonitor is
    /// enabled: Prometheus' pods. Any pod in any namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_from: Option<PeerSpec>,
    /// Addresses of an external database, e.g. 10.20.0.0/24, for the backend's
    /// and migrations' egress. Without them the database URL's host is used
    /// when it is an IP address; a host name cannot be written into a
    /// NetworkPolicy, so then the database port is allowed to any address.
    #[serde(
        default,
        rename = "databaseCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 32), inner(length(min = 1, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(cidr, isCIDR(cidr))").message("networkPolicy.databaseCIDRs must be CIDRs such as 10.20.0.0/24 or fd00::/64"))]
    pub database_cidrs: Vec<String>,
    /// More egress the backend needs, as NetworkPolicy egress rules: for
    /// example HTTPS to a mail API, `[{ports: [{port: 443, protocol: TCP}]}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub backend_egress: Vec<NetworkPolicyEgressRule>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            expose_from: None,
            metrics_from: None,
            database_cidrs: Vec::new(),
            backend_egress: Vec::new(),
        }
    }
}

fn enabled() -> bool {
    true
}

/// Pods allowed in, as a NetworkPolicy peer: with only `namespaceSelector`,
/// every pod of the selected namespaces; with only `podSelector`, the
/// selected pods of the stack's namespace; with both, the selected pods of
/// the selected namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.podSelector)").message("set namespaceSelector, podSelector or both"))]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// Namespaces by label, e.g. {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods by label, e.g. {matchLabels: {app.kubernetes.io/name: ingress-nginx}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub pod_selector: Option<LabelSelector>,
}
