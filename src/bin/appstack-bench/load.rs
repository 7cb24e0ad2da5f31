//! Load: the stacks the benchmark creates, and the floor — the same child
//! objects the operator would write, server-side applied by a plain loader
//! with no ordering, until every one has converged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::cluster::Cluster;
use super::progress;
use appstack::api::crd::AppStack;
use appstack::api::stack::ValidatedStack;
use appstack::children;
use appstack::reconcile::plan::{self, Object};
use appstack::secrets::{self, ObservedSecrets, SecretValue};

const MANAGER: &str = "appstack-bench";
const EXAMPLE: &str = include_str!("../../../deploy/examples/shop.yaml");

/// Where the benchmark's stacks live: `stacks` of them, dealt in turn over
/// `namespaces` namespaces (`bench` when there is one, else `bench-00`,
/// `bench-01`, ...).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub stacks: usize,
    pub namespaces: usize,
}

impl Layout {
    pub fn namespaces(&self) -> Vec<String> {
        (0..self.namespaces.max(1))
            .map(|index| self.namespace_name(index))
            .collect()
    }

    fn namespace_name(&self, index: usize) -> String {
        if self.namespaces <= 1 {
            super::NAMESPACE.to_string()
        } else {
            format!("{}-{index:02}", super::NAMESPACE)
        }
    }

    /// The namespace and name of stack `index`.
    pub fn stack(&self, index: usize) -> (String, String) {
        (
            self.namespace_name(index % self.namespaces.max(1)),
            format!("s{index:05}"),
        )
    }

    pub fn all(&self) -> impl Iterator<Item = (String, String)> + '_ {
        (0..self.stacks).map(|index| self.stack(index))
    }
}

/// The example stack named `name`, with a 1Gi volume and no ServiceMonitor
/// (the benchmark's cluster serves no Prometheus Operator API).
pub fn example(name: &str) -> Value {
    let mut stack: Value = serde_yaml::from_str(EXAMPLE).expect("the example parses");
    stack["metadata"]["name"] = json!(name);
    stack["spec"]["database"]["managed"]["storage"]["size"] = json!("1Gi");
    stack["spec"]["monitoring"]["serviceMonitor"]["enabled"] = json!(false);
    stack
}

/// Creates the layout's namespaces, each with the Secret the example
/// references.
pub async fn namespaces(client: &Client, layout: &Layout) -> anyhow::Result<()> {
    for name in layout.namespaces() {
        namespace(client, &name).await?;
    }
    Ok(())
}

async fn namespace(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}}))?,
        )
        .await
        .context("creating the benchmark namespace")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "sendgrid"},
                "stringData": {"api-key": "SG.bench"}
            }))?,
        )
        .await
        .context("creating the referenced Secret")?;
    Ok(())
}

/// Server-side applies the layout's AppStacks, `in_flight` requests at a
/// time.
pub async fn create_stacks(
    client: &Client,
    layout: &Layout,
    in_flight: usize,
) -> anyhow::Result<()> {
    patch_stacks(client, layout, in_flight, "applying", |name| {
        (
            PatchParams::apply(MANAGER).force(),
            Patch::Apply(example(name)),
        )
    })
    .await
}

/// Annotates every stack (no spec change), which wakes a pass each.
pub async fn touch_stacks(
    client: &Client,
    layout: &Layout,
    in_flight: usize,
) -> anyhow::Result<()> {
    let stamp = format!("{:?}", Instant::now());
    patch_stacks(client, layout, in_flight, "touching", |_| {
        (
            PatchParams::default(),
            Patch::Merge(
                json!({"metadata": {"annotations": {"bench.appstack.dev/touched": stamp}}}),
            ),
        )
    })
    .await
}

/// Patches each of the layout's stacks with what `patch` gives for its
/// name, `in_flight` requests at a time.
async fn patch_stacks(
    client: &Client,
    layout: &Layout,
    in_flight: usize,
    verb: &str,
    patch: impl Fn(&str) -> (PatchParams, Patch<Value>),
) -> anyhow::Result<()> {
    futures::stream::iter(layout.all())
        .map(|(namespace, name)| {
            let stacks: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
            let (params, body) = patch(&name);
            async move {
                stacks
                    .patch(&name, &params, &body)
                    .await
                    .with_context(|| format!("{verb} AppStack {name}"))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The children the operator would give stack `name`, built by the same
/// functions, with generated values and no owner (no AppStack exists for
/// the garbage collector to follow).
fn children_of(name: &str, namespace: &str) -> anyhow::Result<Vec<Value>> {
    let stack: AppStack = serde_json::from_value(example(name))?;
    let validated = ValidatedStack::from_parts(
        name.to_string(),
        namespace.to_string(),
        format!("bench-{name}"),
        1,
        &stack.spec,
    )?;
    let mut observed = ObservedSecrets::default();
    observed.referenced.insert(
        ("sendgrid".into(), "api-key".into()),
        SecretValue::new(b"SG.bench".to_vec()),
    );
    let resolved = secrets::resolve(&validated, &observed)?;
    let by_stage = plan::by_stage(children::build(
        &validated,
        &resolved.values,
        validated.managed_database_identity().as_ref(),
        None,
        "bench",
        &children::SchemaChange::Migrate,
    ));
    Ok(by_stage
        .into_values()
        .flatten()
        .filter(|desired| !matches!(desired.object, Object::ServiceMonitor(_)))
        .map(|desired| {
            let mut value = desired.object.to_value();
            if let Some(metadata) = value["metadata"].as_object_mut() {
                metadata.remove("ownerReferences");
            }
            value
        })
        .collect())
}

fn resource_of(kind: &str) -> anyhow::Result<ApiResource> {
    Ok(match kind {
        "Secret" => ApiResource::erase::<Secret>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "NetworkPolicy" => ApiResource::erase::<NetworkPolicy>(&()),
        "PodDisruptionBudget" => ApiResource::erase::<PodDisruptionBudget>(&()),
        "Ingress" => ApiResource::erase::<Ingress>(&()),
        other => anyhow::bail!("the loader does not write {other}"),
    })
}

/// The floor: the children of the layout's stacks applied by a plain loader,
/// `in_flight` at a time, until every Deployment is Available, every Job
/// Complete and every StatefulSet ready. Returns the seconds it took.
pub async fn floor(
    cluster: &Cluster,
    layout: &Layout,
    in_flight: usize,
    limit: Duration,
) -> anyhow::Result<f64> {
    let client = cluster.client().await?;
    let n = layout.stacks;
    namespaces(&client, layout).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut objects = Vec::new();
    for (namespace, name) in layout.all() {
        objects.extend(children_of(&name, &namespace)?);
    }
    progress(format!(
        "floor: applying {} objects of {n} stacks",
        objects.len()
    ));
    let converged = tokio::spawn(wait_converged(client.clone(), n, limit));
    let cpu = cluster.cpu();
    let started = Instant::now();
    futures::stream::iter(objects)
        .map(|object| {
            let client = client.clone();
            async move {
                let kind = object["kind"].as_str().unwrap_or_default().to_string();
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let namespace = object["metadata"]["namespace"]
                    .as_str()
                    .context("a child without a namespace")?
                    .to_string();
                let api =
                    Api::<DynamicObject>::namespaced_with(client, &namespace, &resource_of(&kind)?);
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .with_context(|| format!("applying {kind} {name}"))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    progress(format!(
        "floor: applied in {:.1} s; waiting for convergence",
        started.elapsed().as_secs_f64()
    ));
    converged.await??;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cluster.cpu();
    super::figure(
        "floor_control_plane_cpu_seconds",
        n,
        cpu_after.control_plane() - cpu.control_plane(),
        "s",
    );
    super::cpu_figures("floor", n, &cpu, &cpu_after, seconds);
    Ok(seconds)
}

/// Waits until 2n Deployments are Available, n Jobs Complete and n
/// StatefulSets ready, following each kind's watch.
async fn wait_converged(client: Client, n: usize, limit: Duration) -> anyhow::Result<()> {
    let selector = children::managed_selector();
    let config = || watcher::Config::default().labels(&selector);
    let deployments = watch_done(
        Api::<Deployment>::all(client.clone()),
        config(),
        |deployment: &Deployment| {
            let status = deployment.status.clone().unwrap_or_default();
            let wanted = deployment.spec.replicas.unwrap_or(1);
            status.observed_generation >= deployment.metadata.generation
                && status.available_replicas.unwrap_or(0) == wanted
                && status.updated_replicas.unwrap_or(0) == wanted
        },
    );
    let jobs = watch_done(Api::<Job>::all(client.clone()), config(), |job: &Job| {
        job.status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Complete" && condition.status == "True")
            })
    });
    let statefulsets = watch_done(
        Api::<StatefulSet>::all(client),
        config(),
        |statefulset: &StatefulSet| {
            let status = statefulset.status.clone().unwrap_or_default();
            status.observed_generation >= statefulset.metadata.generation
                && status.ready_replicas.unwrap_or(0) >= statefulset.spec.replicas.unwrap_or(1)
        },
    );
    let mut deployments = std::pin::pin!(deployments);
    let mut jobs = std::pin::pin!(jobs);
    let mut statefulsets = std::pin::pin!(statefulsets);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let (kind, count) = tokio::select! {
            count = deployments.next() => ("Deployment", count),
            count = jobs.next() => ("Job", count),
            count = statefulsets.next() => ("StatefulSet", count),
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!("the floor did not converge in time"),
        };
        counts.insert(kind, count.context("a watch ended")??);
        if last_report.elapsed() > Duration::from_secs(10) {
            progress(format!("floor: converged {counts:?}"));
            last_report = Instant::now();
        }
        if counts.get("Deployment").copied().unwrap_or(0) >= 2 * n
            && counts.get("Job").copied().unwrap_or(0) >= n
            && counts.get("StatefulSet").copied().unwrap_or(0) >= n
        {
            return Ok(());
        }
    }
}

/// A stream of how many objects of a kind are done, after each event.
fn watch_done<K>(
    api: Api<K>,
    config: watcher::Config,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> impl futures::Stream<Item = anyhow::Result<usize>> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut state: HashMap<(String, String), bool> = HashMap::new();
    let key = |object: &K| (object.namespace().unwrap_or_default(), object.name_any());
    watcher::watcher(api, config).map(move |event| {
        match event? {
            Event::Apply(object) | Event::InitApply(object) => {
                state.insert(key(&object), done(&object));
            }
            Event::Delete(object) => {
                state.remove(&key(&object));
            }
            Event::Init | Event::InitDone => {}
        }
        Ok(state.values().filter(|done| **done).count())
    })
}
