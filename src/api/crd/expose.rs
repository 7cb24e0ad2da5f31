//! `spec.expose`: how the stack is reached from outside the cluster.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::schema::{DNS_SUBDOMAIN, annotation_map, empty_if_null};

/// The stack on a public host name: the frontend at `/` and the backend under
/// `apiPath` (without a frontend, the backend at `/`), through an Ingress or a
/// Gateway API HTTPRoute named like the stack.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.ingress) && has(self.gateway))").message("set at most one of expose.ingress or expose.gateway (an Ingress when neither is set)"))]
#[serde(rename_all = "camelCase")]
pub struct ExposeSpec {
    /// The public host name, e.g. shop.example.com: a DNS name, not an IP
    /// address or a wildcard.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$') && !self.matches('^[0-9.]+$')").message("expose.host must be a DNS name such as shop.example.com: lowercase letters, digits, '-' and '.', not an IP address"))]
    pub host: String,
    /// Path prefix of the backend on the host, e.g. /api: absolute, segments
    /// of letters, digits, '-', '_', '.' and '~' (not starting with '.'), no
    /// trailing '/'. The frontend is served at '/'; without a frontend the
    /// backend is served at '/' and this is not used.
    #[serde(default = "default_api_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*)?$')").message("expose.apiPath must be an absolute path such as /api: it starts with '/', its segments are letters, digits, '-', '_', '.' or '~' and do not start with '.', and it does not end with '/'"))]
    pub api_path: String,
    /// HTTPS: the URL is https://<host> with it, http://<host> without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Expose through a networking.k8s.io/v1 Ingress `<stack>` (the default
    /// when neither ingress nor gateway is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Expose through a gateway.networking.k8s.io/v1 HTTPRoute `<stack>`
    /// attached to this Gateway, while the Gateway API is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

fn default_api_path() -> String {
    "/api".to_owned()
}

/// Where the TLS certificate of the host comes from: exactly one of
/// `secretName` or `clusterIssuer`. With a gateway, TLS is terminated by the
/// Gateway's listener, which holds the certificate; this then only makes the
/// stack's URL https.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.clusterIssuer)").message("set exactly one of expose.tls.secretName or expose.tls.clusterIssuer"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A kubernetes.io/tls Secret in the stack's namespace holding the
    /// certificate for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret_name: Option<String>,
    /// A cert-manager ClusterIssuer: the Ingress carries the
    /// cert-manager.io/cluster-issuer annotation and cert-manager keeps the
    /// certificate in Secret `<stack>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub cluster_issuer: Option<String>,
}

/// The Ingress `<stack>`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass of the Ingress, e.g. nginx; the cluster's default class
    /// when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub class_name: Option<String>,
    /// Extra annotations on the Ingress, for the ingress controller (for
    /// example nginx.ingress.kubernetes.io/proxy-body-size).
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "annotation_map")]
    pub annotations: BTreeMap<String, String>,
}

/// The Gateway an HTTPRoute attaches to (its `parentRefs` entry).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Namespace of the Gateway; the stack's namespace when omitted. The
    /// Gateway's listener must allow routes from the stack's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
    /// The Gateway listener to attach to, e.g. https; every listener that
    /// accepts the route when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub section_name: Option<String>,
}
