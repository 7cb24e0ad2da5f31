//! The stack's NetworkPolicies: every pod of the stack is denied all
//! traffic, then each component's policy allows exactly the flows it needs.
//! Policies add up, so a pod is allowed what any policy selecting it allows.
//!
//! | policy | pods | allows |
//! |---|---|---|
//! | `<stack>-default-deny` | every pod of the stack | nothing |
//! | `<stack>-database` | managed database | in: backend and migrations, PostgreSQL port |
//! | `<stack>-migration` | migration Job | out: DNS, the database |
//! | `<stack>-backend` | backend | in: frontend, exposure, Prometheus, backend port; out: DNS, the database, `backendEgress` |
//! | `<stack>-frontend` | frontend | in: exposure, frontend port; out: DNS, backend port |

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{APP_NAME, Component, LABEL_INSTANCE, LABEL_NAME, object_meta, selector_labels};
use crate::api::crd::PeerSpec;
use crate::api::stack::{Database, DatabaseIdentity, POSTGRES_PORT, ValidatedStack};

/// Port of DNS, which every pod that connects anywhere needs.
const DNS_PORT: i32 = 53;

/// `app.kubernetes.io/name` of the operator's own pods, as the Helm chart
/// labels them.
pub const OPERATOR_APP_NAME: &str = "appstack-operator";

/// The operator's own pods, when they connect to managed databases to check
/// them (`--database-checks=all` in a cluster): the database's policy lets
/// them in, from their namespace only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
}

/// Name of the policy denying everything to every pod of the stack.
pub fn default_deny_name(stack: &ValidatedStack) -> String {
    format!("{}-default-deny", stack.name)
}

/// Name of the policy of one component's pods.
pub fn policy_name(stack: &ValidatedStack, component: Component) -> String {
    format!("{}-{}", stack.name, component.as_str())
}

/// Labels every pod of the stack carries, whatever its component.
pub fn stack_pod_labels(stack: &ValidatedStack) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_NAME, APP_NAME),
        (LABEL_INSTANCE, stack.name.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// Every NetworkPolicy of the stack; none when `networkPolicy.enabled` is
/// false. `database` is the database located from the stack's Secrets
/// (an external one's host and port are what the backend and migrations
/// may reach); `operator` the operator's pods when they check the managed
/// database.
pub fn network_policies(
    stack: &ValidatedStack,
    database: Option<&DatabaseIdentity>,
    operator: Option<&OperatorPods>,
) -> Vec<NetworkPolicy> {
    let Some(settings) = &stack.network_policy else {
        return Vec::new();
    };
    let database = database_egress(stack, database);
    let dns = NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port(DNS_PORT, "UDP"), port(DNS_PORT, "TCP")]),
    };
    let exposed = stack
        .expose
        .as_ref()
        .map(|_| peer(settings.expose_from.as_ref()));
    let mut policies = vec![policy(
        stack,
        default_deny_name(stack),
        stack_pod_labels(stack),
        Vec::new(),
        Vec::new(),
    )];
    if matches!(stack.database, Database::Managed(_)) {
        let mut clients = vec![
            pods(stack, Component::Backend),
            pods(stack, Component::Migration),
        ];
        if stack.backups().is_some() {
            // The backups before migrations, and their restores.
            clients.push(pods(stack, Component::Backup));
        }
        clients.extend(operator.map(operator_pods));
        policies.push(component_policy(
            stack,
            Component::Database,
            vec![allow_in(clients, POSTGRES_PORT)],
            Vec::new(),
        ));
    }
    if stack.migration.is_some() {
        policies.push(component_policy(
            stack,
            Component::Migration,
            Vec::new(),
            vec![dns.clone(), database.clone()],
        ));
    }
    if stack.backups().is_some() {
        policies.push(component_policy(
            stack,
            Component::Backup,
            Vec::new(),
            vec![dns.clone(), database.clone()],
        ));
    }
    let backend_port = stack.backend.port;
    let mut backend_in = Vec::new();
    if stack.frontend.is_some() {
        backend_in.push(allow_in(
            vec![pods(stack, Component::Frontend)],
            backend_port,
        ));
    }
    if let Some(exposed) = &exposed {
        backend_in.push(allow_in(vec![exposed.clone()], backend_port));
    }
    if stack.service_monitor_labels.is_some() {
        backend_in.push(allow_in(
            vec![peer(settings.metrics_from.as_ref())],
            backend_port,
        ));
    }
    let mut backend_out = vec![dns.clone(), database];
    backend_out.extend(settings.backend_egress.iter().cloned());
    policies.push(component_policy(
        stack,
        Component::Backend,
        backend_in,
        backend_out,
    ));
    if let Some(frontend) = &stack.frontend {
        let frontend_in = exposed
            .map(|exposed| allow_in(vec![exposed], frontend.port))
            .into_iter()
            .collect();
        let to_backend = NetworkPolicyEgressRule {
            to: Some(vec![pods(stack, Component::Backend)]),
            ports: Some(vec![port(backend_port, "TCP")]),
        };
        policies.push(component_policy(
            stack,
            Component::Frontend,
            frontend_in,
            vec![dns, to_backend],
        ));
    }
    policies
}

fn component_policy(
    stack: &ValidatedStack,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    policy(
        stack,
        policy_name(stack, component),
        selector_labels(stack, component),
        ingress,
        egress,
    )
}

/// A policy for the pods with `pod_labels`, allowing `ingress` and `egress`
/// and denying the rest in both directions.
fn policy(
    stack: &ValidatedStack,
    name: String,
    pod_labels: std::collections::BTreeMap<String, String>,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(stack, name, Component::NetworkPolicy),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(pod_labels),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}

fn allow_in(from: Vec<NetworkPolicyPeer>, number: i32) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![port(number, "TCP")]),
    }
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// The pods of one component of the stack.
fn pods(stack: &ValidatedStack, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(stack, component)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The operator's pods, in their namespace.
fn operator_pods(operator: &OperatorPods) -> NetworkPolicyPeer {
    let labels = |key: &str, value: &str| LabelSelector {
        match_labels: Some([(key.to_string(), value.to_string())].into()),
        ..LabelSelector::default()
    };
    NetworkPolicyPeer {
        namespace_selector: Some(labels("kubernetes.io/metadata.name", &operator.namespace)),
        pod_selector: Some(labels(LABEL_NAME, OPERATOR_APP_NAME)),
        ip_block: None,
    }
}

/// The user's peer, or every pod of every namespace.
fn peer(spec: Option<&PeerSpec>) -> NetworkPolicyPeer {
    match spec {
        Some(spec) => NetworkPolicyPeer {
            namespace_selector: spec.namespace_selector.clone(),
            pod_selector: spec.pod_selector.clone(),
            ip_block: None,
        },
        None => NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        },
    }
}

/// Where the backend and migrations reach the database: the managed
/// database's pods, or the external database located from its URL (its
/// host when that is an IP address, else any address) on its port, or the
/// CIDRs the user listed. `database` is `None` while the URL is unknown.
fn database_egress(
    stack: &ValidatedStack,
    database: Option<&DatabaseIdentity>,
) -> NetworkPolicyEgressRule {
    if matches!(stack.database, Database::Managed(_)) {
        return NetworkPolicyEgressRule {
            to: Some(vec![pods(stack, Component::Database)]),
            ports: Some(vec![port(POSTGRES_PORT, "TCP")]),
        };
    }
    let (address, database_port) = match database {
        Some(DatabaseIdentity::External { host, port, .. }) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok(),
            // Port 0 is no port: the URL is not known (`appstack render`
            // without the Secret).
            (*port != 0).then(|| i32::from(*port)),
        ),
        _ => (None, None),
    };
    let cidrs: Vec<String> = match &stack.network_policy {
        Some(settings) if !settings.database_cidrs.is_empty() => settings.database_cidrs.clone(),
        _ => address
            .map(|ip| match ip {
                IpAddr::V4(_) => format!("{ip}/32"),
                IpAddr::V6(_) => format!("{ip}/128"),
            })
            .into_iter()
            .collect(),
    };
    NetworkPolicyEgressRule {
        // A host name cannot be written into a policy: any address then.
        to: (!cidrs.is_empty()).then(|| {
            cidrs
                .into_iter()
                .map(|cidr| NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr, except: None }),
                    ..NetworkPolicyPeer::default()
                })
                .collect()
        }),
        ports: Some(vec![port(database_port.unwrap_or(POSTGRES_PORT), "TCP")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};
    use serde_json::json;

    fn by_name(
        policies: &[NetworkPolicy],
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        policies
            .iter()
            .map(|policy| {
                (
                    policy.metadata.name.clone().unwrap(),
                    serde_json::to_value(policy.spec.as_ref().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn pods_of(component: &str) -> serde_json::Value {
        json!({"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "appstack",
            "app.kubernetes.io/instance": "shop",
            "app.kubernetes.io/component": component,
        }}})
    }

    #[test]
    fn the_example_denies_everything_then_allows_exactly_its_flows() {
        let stack = example();
        let policies = by_name(&network_policies(&stack, None, None));
        assert_eq!(
            policies.keys().collect::<Vec<_>>(),
            [
                "shop-backend",
                "shop-database",
                "shop-default-deny",
                "shop-frontend",
                "shop-migration"
            ]
        );
        for policy in policies.values() {
            assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
        }
        assert_eq!(
            policies["shop-default-deny"],
            json!({"podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "appstack", "app.kubernetes.io/instance": "shop"}},
                "policyTypes": ["Ingress", "Egress"]})
        );
        let dns =
            json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]});
        let to_database =
            json!({"to": [pods_of("database")], "ports": [{"port": 5432, "protocol": "TCP"}]});
        let anywhere = json!({"namespaceSelector": {}});
        assert_eq!(
            policies["shop-database"]["ingress"],
            json!([{"from": [pods_of("backend"), pods_of("migration")],
                    "ports": [{"port": 5432, "protocol": "TCP"}]}])
        );
        assert_eq!(policies["shop-database"].get("egress"), None);
        assert_eq!(policies["shop-migration"].get("ingress"), None);
        assert_eq!(
            policies["shop-migration"]["egress"],
            json!([dns, to_database])
        );
        let backend_port = json!([{"port": 8000, "protocol": "TCP"}]);
        assert_eq!(
            policies["shop-backend"]["ingress"],
            json!([
                {"from": [pods_of("frontend")], "ports": backend_port},
                {"from": [anywhere], "ports": backend_port},
                {"from": [anywhere], "ports": backend_port},
            ]),
            "frontend, the ingress controller, Prometheus"
        );
        assert_eq!(
            policies["shop-backend"]["egress"],
            json!([dns, to_database, {"ports": [{"port": 443, "protocol": "TCP"}]}]),
            "DNS, the database, and the example's backendEgress"
        );
        assert_eq!(
            policies["shop-frontend"]["ingress"],
            json!([{"from": [anywhere], "ports": [{"port": 3000, "protocol": "TCP"}]}])
        );
        assert_eq!(
            policies["shop-frontend"]["egress"],
            json!([dns, {"to": [pods_of("backend")], "ports": backend_port}])
        );
        for policy in network_policies(&stack, None, None) {
            assert_eq!(
                policy.metadata.labels.unwrap()["app.kubernetes.io/component"],
                "network-policy"
            );
        }
    }

    #[test]
    fn unexposed_and_unmonitored_pods_take_traffic_only_from_the_stack() {
        let mut stack = example();
        stack.expose = None;
        stack.service_monitor_labels = None;
        let policies = by_name(&network_policies(&stack, None, None));
        assert_eq!(
            policies["shop-backend"]["ingress"],
            json!([{"from": [pods_of("frontend")], "ports": [{"port": 8000, "protocol": "TCP"}]}])
        );
        assert_eq!(policies["shop-frontend"].get("ingress"), None);
    }

    #[test]
    fn chosen_peers_replace_any_namespace() {
        let yaml = include_str!("../../deploy/examples/shop.yaml").replace(
            "  networkPolicy:\n",
            "  networkPolicy:\n    exposeFrom: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}\n    metricsFrom: {podSelector: {matchLabels: {app: prometheus}}}\n",
        );
        let policies = by_name(&network_policies(&from_yaml(&yaml), None, None));
        let ingress = policies["shop-backend"]["ingress"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(
            ingress[1]["from"],
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}])
        );
        assert_eq!(
            ingress[2]["from"],
            json!([{"podSelector": {"matchLabels": {"app": "prometheus"}}}])
        );
    }

    #[test]
    fn disabled_builds_none() {
        let yaml = include_str!("../../deploy/examples/shop.yaml").replace(
            "  networkPolicy:\n",
            "  networkPolicy:\n    enabled: false\n",
        );
        assert!(network_policies(&from_yaml(&yaml), None, None).is_empty());
    }

    fn external(cidrs: &str) -> ValidatedStack {
        let yaml = include_str!("../../deploy/examples/shop.yaml")
            .replace(
                "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
                "    external: {urlSecretRef: {name: prod-db, key: url}}\n",
            )
            .replace("  networkPolicy:\n", &format!("  networkPolicy:\n{cidrs}"));
        let stack = from_yaml(&yaml);
        assert!(matches!(stack.database, Database::External { .. }));
        stack
    }

    fn backend_database_egress(stack: &ValidatedStack, host: &str, port: u16) -> serde_json::Value {
        let identity = DatabaseIdentity::External {
            host: host.into(),
            port,
            database: "shop".into(),
        };
        let policies = by_name(&network_policies(stack, Some(&identity), None));
        assert!(
            !policies.contains_key("shop-database"),
            "no managed database"
        );
        assert_eq!(
            policies["shop-migration"]["egress"][1], policies["shop-backend"]["egress"][1],
            "migrations reach the database as the backend does"
        );
        policies["shop-backend"]["egress"][1].clone()
    }

    #[test]
    fn an_external_database_is_reached_at_its_ip_or_the_listed_cidrs_or_its_port() {
        let stack = external("");
        assert_eq!(
            backend_database_egress(&stack, "10.1.2.3", 6432),
            json!({"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 6432, "protocol": "TCP"}]})
        );
        assert_eq!(
            backend_database_egress(&stack, "[fd00::5]", 5432),
            json!({"to": [{"ipBlock": {"cidr": "fd00::5/128"}}], "ports": [{"port": 5432, "protocol": "TCP"}]})
        );
        assert_eq!(
            backend_database_egress(&stack, "db.example.com", 5432),
            json!({"ports": [{"port": 5432, "protocol": "TCP"}]}),
            "a host name: the port, to any address"
        );
        let listed = external("    databaseCIDRs: [10.20.0.0/24, fd00::/64]\n");
        assert_eq!(
            backend_database_egress(&listed, "db.example.com", 5433),
            json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}, {"ipBlock": {"cidr": "fd00::/64"}}],
                   "ports": [{"port": 5433, "protocol": "TCP"}]})
        );
        assert_eq!(
            backend_database_egress(&listed, "10.1.2.3", 5432)["to"],
            json!([{"ipBlock": {"cidr": "10.20.0.0/24"}}, {"ipBlock": {"cidr": "fd00::/64"}}]),
            "listed CIDRs replace the URL's address"
        );
        let unknown = by_name(&network_policies(&stack, None, None));
        assert_eq!(
            unknown["shop-backend"]["egress"][1],
            json!({"ports": [{"port": 5432, "protocol": "TCP"}]}),
            "an unknown URL: PostgreSQL's port, to any address"
        );
    }

    #[test]
    fn the_operator_checking_the_managed_database_is_let_in_from_its_namespace() {
        let stack = example();
        let operator = OperatorPods {
            namespace: "appstack-system".into(),
        };
        let policies = by_name(&network_policies(&stack, None, Some(&operator)));
        assert_eq!(
            policies["shop-database"]["ingress"][0]["from"][2],
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "appstack-system"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "appstack-operator"}}})
        );
        let chart = include_str!("../../charts/appstack-operator/Chart.yaml");
        assert!(
            chart
                .lines()
                .any(|line| line == format!("name: {OPERATOR_APP_NAME}")),
            "the chart labels the operator's pods app.kubernetes.io/name: <chart name>"
        );
        let helpers = include_str!("../../charts/appstack-operator/templates/_helpers.tpl");
        assert!(helpers.contains("app.kubernetes.io/name: {{ .Chart.Name }}"));
    }
}
