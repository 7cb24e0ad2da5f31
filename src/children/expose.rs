//! The stack on a public host: an Ingress, or a Gateway API HTTPRoute,
//! named like the stack. The frontend is served at `/` and the backend under
//! `apiPath`; without a frontend the backend is served at `/`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta::{Component, object_meta};
use super::workload::workload_name;
use crate::api::crd::GatewayRef;
use crate::api::stack::{Expose, Route, ValidatedStack};

/// API group of the Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The annotation cert-manager's ingress-shim reads to issue the certificate
/// of an Ingress's TLS entries.
pub const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";

/// Group, version and kind of HTTPRoute.
pub fn http_route_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "HTTPRoute")
}

/// The HTTPRoute API resource, as discovery would report it.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&http_route_gvk(), "httproutes")
}

/// What routes the public host to the stack.
#[derive(Clone, Debug)]
pub enum Exposure {
    Ingress(Ingress),
    /// Built whenever asked for; applied only while the Gateway API is served.
    HttpRoute(DynamicObject),
}

/// Name of the Ingress or HTTPRoute: the stack's name.
pub fn exposure_name(stack: &ValidatedStack) -> String {
    stack.name.clone()
}

/// Name of the Secret cert-manager keeps the certificate in, when the
/// certificate comes from a ClusterIssuer.
pub fn issued_tls_secret_name(stack: &ValidatedStack) -> String {
    format!("{}-tls", stack.name)
}

/// The Ingress or HTTPRoute, `None` without `spec.expose`.
pub fn exposure(stack: &ValidatedStack) -> Option<Exposure> {
    let expose = stack.expose.as_ref()?;
    Some(match &expose.route {
        Route::Ingress(settings) => Exposure::Ingress(ingress(stack, expose, settings)),
        Route::Gateway(gateway) => Exposure::HttpRoute(http_route(stack, expose, gateway)),
    })
}

/// A path prefix on the host and the Service port behind it.
struct Path {
    prefix: String,
    service: String,
    port: i32,
}

/// The paths in the order a reader (and a router) should see them: the
/// backend's prefix, then the frontend at `/`.
fn paths(stack: &ValidatedStack, expose: &Expose) -> Vec<Path> {
    let backend = workload_name(stack, Component::Backend);
    match &stack.frontend {
        Some(frontend) => vec![
            Path {
                prefix: expose.api_path.clone(),
                service: backend,
                port: stack.backend.port,
            },
            Path {
                prefix: "/".into(),
                service: workload_name(stack, Component::Frontend),
                port: frontend.port,
            },
        ],
        None => vec![Path {
            prefix: "/".into(),
            service: backend,
            port: stack.backend.port,
        }],
    }
}

fn ingress(
    stack: &ValidatedStack,
    expose: &Expose,
    settings: &crate::api::crd::IngressSpec,
) -> Ingress {
    let mut metadata = object_meta(stack, exposure_name(stack), Component::Expose);
    let mut annotations: BTreeMap<String, String> = settings.annotations.clone();
    let tls_secret = expose
        .tls
        .as_ref()
        .map(|tls| match (&tls.secret_name, &tls.cluster_issuer) {
            (Some(secret), _) => secret.clone(),
            (None, issuer) => {
                if let Some(issuer) = issuer {
                    annotations.insert(CLUSTER_ISSUER_ANNOTATION.into(), issuer.clone());
                }
                issued_tls_secret_name(stack)
            }
        });
    metadata.annotations = super::pod::non_empty(annotations);
    let paths = paths(stack, expose)
        .into_iter()
        .map(|path| HTTPIngressPath {
            path: Some(path.prefix),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: path.service,
                    port: Some(ServiceBackendPort {
                        number: Some(path.port),
                        ..ServiceBackendPort::default()
                    }),
                }),
                ..IngressBackend::default()
            },
        })
        .collect();
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            tls: tls_secret.map(|secret_name| {
                vec![IngressTLS {
                    hosts: Some(vec![expose.host.clone()]),
                    secret_name: Some(secret_name),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(expose.host.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// The `parentRefs` entry of the route for the Gateway.
pub fn parent_ref(gateway: &GatewayRef) -> serde_json::Value {
    let mut parent = json!({"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name});
    if let Some(namespace) = &gateway.namespace {
        parent["namespace"] = json!(namespace);
    }
    if let Some(section) = &gateway.section_name {
        parent["sectionName"] = json!(section);
    }
    parent
}

fn http_route(stack: &ValidatedStack, expose: &Expose, gateway: &GatewayRef) -> DynamicObject {
    let rules: Vec<serde_json::Value> = paths(stack, expose)
        .into_iter()
        .map(|path| {
            json!({
                "matches": [{"path": {"type": "PathPrefix", "value": path.prefix}}],
                "backendRefs": [{"name": path.service, "port": path.port}],
            })
        })
        .collect();
    let mut route = DynamicObject::new(&exposure_name(stack), &http_route_resource());
    route.metadata = object_meta(stack, exposure_name(stack), Component::Expose);
    route.data = json!({
        "spec": {
            "parentRefs": [parent_ref(gateway)],
            "hostnames": [expose.host],
            "rules": rules,
        }
    });
    route
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};

    fn with_expose(expose: &str, frontend: bool) -> ValidatedStack {
        let yaml = include_str!("../../deploy/examples/shop.yaml");
        let yaml = &yaml[..yaml.find("  expose:").unwrap()];
        let yaml = if frontend {
            yaml.to_string()
        } else {
            let start = yaml.find("  frontend:").unwrap();
            let end = yaml.find("  env:").unwrap();
            format!("{}{}", &yaml[..start], &yaml[end..])
        };
        from_yaml(&format!("{yaml}  expose: {expose}\n"))
    }

    #[test]
    fn the_example_gets_an_ingress_with_the_api_prefix_first_and_an_issued_certificate() {
        let stack = example();
        let Some(Exposure::Ingress(ingress)) = exposure(&stack) else {
            panic!("the example is exposed through an Ingress");
        };
        assert_eq!(ingress.metadata.name.as_deref(), Some("shop"));
        assert_eq!(
            ingress.metadata.annotations.as_ref().unwrap()[CLUSTER_ISSUER_ANNOTATION],
            "letsencrypt"
        );
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(
            tls.hosts.as_deref(),
            Some(&["shop.example.com".to_string()][..])
        );
        assert_eq!(tls.secret_name.as_deref(), Some("shop-tls"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
        let paths: Vec<_> = rule
            .http
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(|path| {
                let service = path.backend.service.as_ref().unwrap();
                (
                    path.path.clone().unwrap(),
                    path.path_type.clone(),
                    service.name.clone(),
                    service.port.as_ref().unwrap().number.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("/api".into(), "Prefix".into(), "shop-backend".into(), 8000),
                ("/".into(), "Prefix".into(), "shop-frontend".into(), 3000),
            ]
        );
    }

    #[test]
    fn a_given_certificate_secret_is_used_and_user_annotations_are_kept() {
        let stack = with_expose(
            "{host: shop.example.com, tls: {secretName: shop-cert}, ingress: {annotations: {a: b}}}",
            true,
        );
        let Some(Exposure::Ingress(ingress)) = exposure(&stack) else {
            panic!("an Ingress when neither ingress nor gateway is chosen");
        };
        assert_eq!(
            ingress.metadata.annotations.unwrap(),
            BTreeMap::from([("a".to_string(), "b".to_string())])
        );
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name, None, "the cluster's default class");
        assert_eq!(
            spec.tls.unwrap()[0].secret_name.as_deref(),
            Some("shop-cert")
        );

        let plain = with_expose("{host: shop.example.com}", true);
        let Some(Exposure::Ingress(ingress)) = exposure(&plain) else {
            panic!("an Ingress");
        };
        assert!(ingress.spec.unwrap().tls.is_none());
        assert!(ingress.metadata.annotations.is_none());
    }

    #[test]
    fn a_gateway_gets_an_http_route_attached_to_it() {
        let stack = with_expose(
            "{host: shop.example.com, apiPath: /v1, gateway: {name: public, namespace: gateways, sectionName: https}}",
            true,
        );
        let Some(Exposure::HttpRoute(route)) = exposure(&stack) else {
            panic!("an HTTPRoute for a gateway");
        };
        let value = serde_json::to_value(&route).unwrap();
        assert_eq!(value["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(value["kind"], "HTTPRoute");
        assert_eq!(value["metadata"]["name"], "shop");
        assert_eq!(
            value["metadata"]["labels"]["app.kubernetes.io/component"],
            "expose"
        );
        assert_eq!(
            value["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                    "namespace": "gateways", "sectionName": "https"}])
        );
        assert_eq!(value["spec"]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(
            value["spec"]["rules"],
            json!([
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                 "backendRefs": [{"name": "shop-backend", "port": 8000}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "shop-frontend", "port": 3000}]},
            ])
        );
    }

    #[test]
    fn without_a_frontend_the_backend_is_served_at_the_root() {
        let stack = with_expose("{host: api.example.com, gateway: {name: public}}", false);
        let Some(Exposure::HttpRoute(route)) = exposure(&stack) else {
            panic!("an HTTPRoute");
        };
        assert_eq!(
            route.data["spec"]["rules"],
            json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "shop-backend", "port": 8000}]}])
        );
        assert_eq!(
            route.data["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}])
        );
    }

    #[test]
    fn no_expose_nothing_built() {
        let mut stack = example();
        stack.expose = None;
        assert!(exposure(&stack).is_none());
    }
}
