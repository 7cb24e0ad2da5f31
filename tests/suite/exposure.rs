//! A stack reached from outside: `spec.expose` through an Ingress, or a
//! Gateway API HTTPRoute once its CRDs are installed, against the real local
//! control plane. No ingress or gateway controller runs here: the tests
//! report on the Ingress and the route as such a controller would.

use crate::common::{
    AuditLog, LIMIT, Operator, apply_stack, condition, condition_message, eventually, example,
    ready_shop, setup, wait_for, wait_ready,
};
use appstack::api::crd::AppStack;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const ROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    matches!(api.get_opt(name).await, Ok(None))
}

/// The value of the frontend's API URL variable in its pod template.
async fn frontend_api_url(client: &Client, namespace: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let frontend = deployments.get("shop-frontend").await.unwrap();
    let container = &frontend.spec.template.spec.unwrap().containers[0];
    let var = container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "REACT_APP_API_URL")
        .expect("the frontend gets REACT_APP_API_URL");
    var.value.clone().unwrap()
}

/// The operator's writes to `resource` in `namespace` since `mark`.
fn writes_to(
    audit: &AuditLog,
    mark: u64,
    operator: &Operator,
    namespace: &str,
    resource: &str,
) -> Vec<String> {
    audit
        .writes_since(mark, &operator.user, namespace)
        .into_iter()
        .filter(|write| {
            write
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .starts_with(&format!("{resource}/"))
        })
        .collect()
}

fn url(stack: &AppStack) -> Option<String> {
    stack.status.as_ref()?.url.clone()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_exposed_stack_gets_an_ingress_its_url_and_a_public_api_url() {
    let audit = AuditLog::open();
    let start = audit.mark();
    let (client, namespace, operator, mut stack) = ready_shop("ingress").await;
    let ns = namespace.name.as_str();
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let ready = wait_for(
        &client,
        ns,
        "shop",
        "ExposeReady",
        "True",
        Some("IngressReady"),
    )
    .await;
    assert_eq!(url(&ready).as_deref(), Some("https://shop.example.com"));
    assert!(
        condition_message(&ready, "ExposeReady")
            .contains("no ingress controller has reported an address"),
        "{}",
        condition_message(&ready, "ExposeReady")
    );

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let ingress = ingresses.get("shop").await.unwrap();
    assert_eq!(
        ingress.owner_references()[0].uid,
        ready.uid().unwrap(),
        "owned by the stack"
    );
    assert_eq!(
        ingress.annotations()["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let spec = ingress.spec.clone().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(
        (tls.hosts.clone().unwrap(), tls.secret_name.clone()),
        (
            vec!["shop.example.com".to_string()],
            Some("shop-tls".into())
        )
    );
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
    let routes: Vec<(String, String, i32)> = rule
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|path| {
            let service = path.backend.service.clone().unwrap();
            (
                path.path.clone().unwrap(),
                service.name,
                service.port.unwrap().number.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/api".to_string(), "shop-backend".to_string(), 8000),
            ("/".to_string(), "shop-frontend".to_string(), 3000),
        ]
    );
    assert_eq!(
        frontend_api_url(&client, ns).await,
        "https://shop.example.com/api",
        "the browser reads the public URL"
    );

    // kubectl shows the URL.
    let listed = crate::common::kubectl()
        .args(["get", "appstacks", "-n", ns])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let header = listed.lines().next().unwrap();
    assert!(header.contains("URL"), "{listed}");
    assert!(listed.contains("https://shop.example.com"), "{listed}");

    // An ingress controller reports the address it serves the host on; the
    // operator reads it and writes nothing to the Ingress.
    assert_eq!(
        writes_to(&audit, start, &operator, ns, "ingresses"),
        ["patch ingresses/ shop"],
        "the Ingress was applied once"
    );
    let mark = audit.mark();
    ingresses
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
            ),
        )
        .await
        .unwrap();
    eventually("ExposeReady names the address", LIMIT, || async {
        let stack = stacks.get("shop").await.ok()?;
        condition_message(&stack, "ExposeReady")
            .contains("203.0.113.7")
            .then_some(())
    })
    .await;
    let written = writes_to(&audit, mark, &operator, ns, "ingresses");
    assert!(written.is_empty(), "{written:?}");

    // Without TLS the URLs are http.
    stack["spec"]["expose"]
        .as_object_mut()
        .unwrap()
        .remove("tls");
    apply_stack(&client, ns, &stack).await;
    let plain = wait_ready(&client, ns, "shop").await;
    assert_eq!(url(&plain).as_deref(), Some("http://shop.example.com"));
    eventually("the frontend reads the http URL", LIMIT, || async {
        (frontend_api_url(&client, ns).await == "http://shop.example.com/api").then_some(())
    })
    .await;
    let ingress = ingresses.get("shop").await.unwrap();
    assert!(ingress.spec.as_ref().unwrap().tls.is_none());
    assert!(
        !ingress
            .annotations()
            .contains_key("cert-manager.io/cluster-issuer")
    );

    // Removing expose removes the Ingress and the URL.
    stack["spec"].as_object_mut().unwrap().remove("expose");
    apply_stack(&client, ns, &stack).await;
    let unexposed = wait_ready(&client, ns, "shop").await;
    assert_eq!(url(&unexposed), None);
    assert_eq!(
        condition(&unexposed, "ExposeReady").unwrap(),
        ("True".into(), "NotConfigured".into())
    );
    eventually("the Ingress is deleted", LIMIT, || async {
        gone(&ingresses, "shop").await.then_some(())
    })
    .await;
    assert_eq!(
        frontend_api_url(&client, ns).await,
        format!("http://shop-backend.{ns}.svc:8000"),
        "inside the cluster again"
    );
}

fn gateway_api(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Sets the route's status as the gateway controller of Gateway `public`
/// would: Accepted and ResolvedRefs for the route's current generation.
async fn report_on_route(routes: &Api<DynamicObject>, accepted: bool) {
    let route = routes.get("shop").await.unwrap();
    let generation = route.metadata.generation.unwrap();
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        json!({
            "type": type_, "status": if status {"True"} else {"False"}, "reason": reason,
            "message": message, "observedGeneration": generation,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        })
    };
    let accepted = if accepted {
        condition("Accepted", true, "Accepted", "Route is accepted")
    } else {
        condition(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "no listener allows routes from this namespace",
        )
    };
    let status = json!({"status": {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": "public", "sectionName": "https"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [accepted, condition("ResolvedRefs", true, "ResolvedRefs", "Resolved all the Object references")],
    }]}});
    routes
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_http_route_follows_the_gateway_api_and_its_gateway() {
    let (client, namespace) = setup("gateway").await;
    let ns = namespace.name.as_str();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if !gone(&crds, ROUTE_CRD).await {
        crds.delete(ROUTE_CRD, &DeleteParams::default())
            .await
            .unwrap();
        eventually("HTTPRoute CRD removed", LIMIT, || async {
            gone(&crds, ROUTE_CRD).await.then_some(())
        })
        .await;
    }
    let audit = AuditLog::open();
    let start = audit.mark();
    let operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["expose"] = json!({
        "host": "shop.example.com",
        "tls": {"secretName": "shop-tls"},
        "gateway": {"name": "public", "sectionName": "https"},
    });
    apply_stack(&client, ns, &stack).await;

    // Without the Gateway API the stack is Ready and says what is missing.
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "ExposeReady").unwrap(),
        ("False".into(), "CRDNotInstalled".into())
    );
    assert_eq!(url(&ready).as_deref(), Some("https://shop.example.com"));
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    assert!(gone(&ingresses, "shop").await, "a gateway, not an Ingress");

    // Installing the CRDs later works without a restart.
    crate::common::apply_crds_served(
        &client,
        &[
            include_str!("../fixtures/crds-gateway-api/gateway.networking.k8s.io_gateways.yaml"),
            include_str!("../fixtures/crds-gateway-api/gateway.networking.k8s.io_httproutes.yaml"),
        ],
    )
    .await;
    let gateways = gateway_api(&client, ns, "Gateway", "gateways");
    let routes = gateway_api(&client, ns, "HTTPRoute", "httproutes");
    let gateway: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public", "namespace": ns},
        "spec": {"gatewayClassName": "example", "listeners": [{
            "name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.example.com",
            "tls": {"certificateRefs": [{"name": "shop-tls"}]},
        }]},
    }))
    .unwrap();
    eventually("the Gateway API is served", LIMIT, || async {
        gateways
            .patch(
                "public",
                &PatchParams::apply(crate::common::TEST_MANAGER),
                &Patch::Apply(&gateway),
            )
            .await
            .ok()
    })
    .await;
    let route = eventually("the HTTPRoute is created", LIMIT, || async {
        routes.get_opt("shop").await.ok().flatten()
    })
    .await;
    assert_eq!(route.owner_references()[0].kind, "AppStack");
    let spec = &route.data["spec"];
    assert_eq!(spec["hostnames"], json!(["shop.example.com"]));
    let parent = &spec["parentRefs"][0];
    assert_eq!(
        (&parent["name"], &parent["sectionName"], &parent["kind"]),
        (&json!("public"), &json!("https"), &json!("Gateway"))
    );
    let rules: Vec<(Value, Value, Value)> = spec["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            (
                rule["matches"][0]["path"]["value"].clone(),
                rule["backendRefs"][0]["name"].clone(),
                rule["backendRefs"][0]["port"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (json!("/api"), json!("shop-backend"), json!(8000)),
            (json!("/"), json!("shop-frontend"), json!(3000)),
        ]
    );
    wait_for(
        &client,
        ns,
        "shop",
        "ExposeReady",
        "False",
        Some("WaitingForGateway"),
    )
    .await;
    assert_eq!(
        frontend_api_url(&client, ns).await,
        "https://shop.example.com/api"
    );

    // The gateway controller accepts the route, then stops accepting it;
    // the operator reads its status and writes nothing to the route.
    assert_eq!(
        writes_to(&audit, start, &operator, ns, "httproutes"),
        ["patch httproutes/ shop"],
        "the HTTPRoute was applied once"
    );
    let mark = audit.mark();
    report_on_route(&routes, true).await;
    let accepted = wait_for(
        &client,
        ns,
        "shop",
        "ExposeReady",
        "True",
        Some("RouteAccepted"),
    )
    .await;
    assert!(
        condition_message(&accepted, "ExposeReady").contains("Gateway"),
        "{}",
        condition_message(&accepted, "ExposeReady")
    );
    report_on_route(&routes, false).await;
    let refused = wait_for(
        &client,
        ns,
        "shop",
        "ExposeReady",
        "False",
        Some("RouteNotAccepted"),
    )
    .await;
    assert!(condition_message(&refused, "ExposeReady").contains("no listener allows routes"));
    let written = writes_to(&audit, mark, &operator, ns, "httproutes");
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(
        condition(&refused, "Ready").unwrap().0,
        "True",
        "exposure never holds the stack back"
    );

    // Moving to an Ingress sweeps the route; removing expose sweeps the Ingress.
    stack["spec"]["expose"]
        .as_object_mut()
        .unwrap()
        .remove("gateway");
    apply_stack(&client, ns, &stack).await;
    wait_for(
        &client,
        ns,
        "shop",
        "ExposeReady",
        "True",
        Some("IngressReady"),
    )
    .await;
    eventually("the HTTPRoute is deleted", LIMIT, || async {
        gone(&routes, "shop").await.then_some(())
    })
    .await;
    stack["spec"].as_object_mut().unwrap().remove("expose");
    apply_stack(&client, ns, &stack).await;
    eventually("the Ingress is deleted", LIMIT, || async {
        gone(&ingresses, "shop").await.then_some(())
    })
    .await;
    let unexposed = wait_ready(&client, ns, "shop").await;
    assert_eq!(url(&unexposed), None);
}
