//! What one request of each kind the operator sends costs the control plane:
//! kube-apiserver and etcd CPU per request, measured over converged stacks
//! with the operator stopped, one request at a time.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::cluster::Cluster;
use super::load::{self, Layout};
use super::{figure, progress};
use appstack::api::crd::AppStack;

/// Requests of each kind timed.
const REQUESTS: usize = 200;

/// A namespace of its own for the stacks this phase creates: the operator
/// is stopped, and nothing else reads them.
const NAMESPACE: &str = "bench-requests";

/// Prints `request_cpu_ms_<kind>` for an AppStack status patch, an Event, a
/// read of an AppStack and an AppStack created by server-side apply.
pub async fn costs(cluster: &Cluster, client: &Client, layout: &Layout) -> anyhow::Result<()> {
    progress("timing single requests against the control plane");
    let n = layout.stacks;
    let stacks: Vec<(String, String)> = layout.all().take(REQUESTS).collect();
    let stack_in = |index: usize| &stacks[index % stacks.len()];

    measure(cluster, n, "status_patch", |index| {
        let (namespace, name) = stack_in(index).clone();
        let api: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
        async move {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"url": format!("https://r{index}.example.com")}})),
            )
            .await
            .map(drop)
        }
    })
    .await?;

    let events = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        "events",
    );
    measure(cluster, n, "event", |index| {
        let (namespace, name) = stack_in(index).clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &events);
        async move {
            let event: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": format!("{name}.request-{index}")},
                "regarding": {"apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
                              "namespace": namespace, "name": name},
                "reason": "MigrationSucceeded",
                "note": "Job shop-migrate-ef02651411 applied revision ef02651411",
                "type": "Normal",
                "action": "Reconcile",
                "reportingController": "appstack.dev/operator",
                "reportingInstance": "appstack-bench",
                "eventTime": "2026-01-01T00:00:00.000000Z"
            }))
            .expect("an Event");
            api.create(&PostParams::default(), &event).await.map(drop)
        }
    })
    .await?;

    measure(cluster, n, "get", |index| {
        let (namespace, name) = stack_in(index).clone();
        let api: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
        async move { api.get(&name).await.map(drop) }
    })
    .await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let created: Api<AppStack> = Api::namespaced(client.clone(), NAMESPACE);
    measure(cluster, n, "appstack_create", |index| {
        let api = created.clone();
        async move {
            let name = format!("r{index:05}");
            api.patch(
                &name,
                &PatchParams::apply("appstack-bench").force(),
                &Patch::Apply(load::example(&name)),
            )
            .await
            .map(|stack| drop(stack.name_any()))
        }
    })
    .await?;
    Ok(())
}

/// Sends `REQUESTS` requests made by `request`, one at a time, and prints the
/// control plane's CPU per request.
async fn measure<F, Fut>(
    cluster: &Cluster,
    stacks: usize,
    kind: &str,
    request: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = kube::Result<()>>,
{
    // What the control plane still does of earlier phases settles first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cluster.cpu();
    for index in 0..REQUESTS {
        request(index).await?;
    }
    let after = cluster.cpu();
    let per_request = (after.control_plane() - before.control_plane()) / REQUESTS as f64;
    figure(
        &format!("request_cpu_ms_{kind}"),
        stacks,
        1000.0 * per_request,
        "ms",
    );
    Ok(())
}
