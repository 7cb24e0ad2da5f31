//! Apply: sends a stage's writes, all at once, and a pass's deletions. Each
//! result is recorded in the caches, so the rest of the pass (and the next,
//! should it start before the watch shows the write) reads what was written.

use std::fmt::Debug;

use futures::future::try_join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use super::Context;
use super::plan::{self, Deletion, Kind, Object, Write};
use crate::children::FIELD_MANAGER;
use crate::crd::AppStack;
use crate::runtime::cache::{KindCache, Slim};

/// A write or deletion the API server refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{verb} {kind} {name}: {source}")]
    Object {
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the AppStack's finalizers: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("the {0} API is no longer served")]
    NotServed(&'static str),
}

/// What a pass did that users hear about in Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    Created {
        kind: Kind,
        name: String,
    },
    /// Values generated into a Secret that was then written.
    Generated {
        secret: String,
        keys: Vec<String>,
    },
    /// Values generated before were missing from their Secret (deleted or
    /// edited by someone else): generated anew into it.
    GeneratedLost {
        secret: String,
        keys: Vec<String>,
    },
    Deleted {
        kind: Kind,
        name: String,
    },
}

/// Sends every write at once; the caches record each result.
pub async fn writes(
    context: &Context,
    stack: &AppStack,
    writes: Vec<Write>,
) -> Result<Vec<Done>, ApplyError> {
    let done = try_join_all(writes.into_iter().map(|write| one(context, stack, write))).await?;
    Ok(done.into_iter().flatten().collect())
}

async fn one(
    context: &Context,
    stack: &AppStack,
    write: Write,
) -> Result<Option<Done>, ApplyError> {
    let namespace = stack.namespace().unwrap_or_default();
    let client = &context.client;
    let caches = &context.caches;
    match write {
        Write::Apply(object) => {
            match &object {
                Object::Secret(desired) => {
                    server_side_apply(&namespaced(context, &namespace), &caches.secrets, desired)
                        .await
                }
                Object::ConfigMap(desired) => {
                    server_side_apply(
                        &namespaced(context, &namespace),
                        &caches.config_maps,
                        desired,
                    )
                    .await
                }
                Object::Service(desired) => {
                    server_side_apply(&namespaced(context, &namespace), &caches.services, desired)
                        .await
                }
                Object::StatefulSet(desired) => {
                    server_side_apply(
                        &namespaced(context, &namespace),
                        &caches.statefulsets,
                        desired,
                    )
                    .await
                }
                Object::Job(desired) => {
                    server_side_apply(&namespaced(context, &namespace), &caches.jobs, desired).await
                }
                Object::Deployment(desired) => {
                    server_side_apply(
                        &namespaced(context, &namespace),
                        &caches.deployments,
                        desired,
                    )
                    .await
                }
                Object::ServiceMonitor(desired) => {
                    let resource = caches
                        .service_monitor_api()
                        .ok_or(ApplyError::NotServed("ServiceMonitor"))?;
                    let api = Api::<DynamicObject>::namespaced_with(
                        client.clone(),
                        &namespace,
                        &resource,
                    );
                    server_side_apply(&api, &caches.service_monitors, desired).await
                }
                Object::NetworkPolicy(desired) => {
                    server_side_apply(
                        &namespaced(context, &namespace),
                        &caches.network_policies,
                        desired,
                    )
                    .await
                }
                Object::PodDisruptionBudget(desired) => {
                    server_side_apply(
                        &namespaced(context, &namespace),
                        &caches.disruption_budgets,
                        desired,
                    )
                    .await
                }
                Object::Ingress(desired) => {
                    server_side_apply(&namespaced(context, &namespace), &caches.ingresses, desired)
                        .await
                }
                Object::HttpRoute(desired) => {
                    let resource = caches
                        .http_route_api()
                        .ok_or(ApplyError::NotServed("HTTPRoute"))?;
                    let api = Api::<DynamicObject>::namespaced_with(
                        client.clone(),
                        &namespace,
                        &resource,
                    );
                    server_side_apply(&api, &caches.http_routes, desired).await
                }
            }
            .map_err(refused("applying", &object))?;
            debug!(kind = object.kind().as_str(), name = %object.name(), "applied");
            Ok(None)
        }
        Write::Create(object) => {
            let created = match &object {
                Object::Secret(desired) => {
                    create(&namespaced(context, &namespace), &caches.secrets, desired).await
                }
                Object::Job(desired) => {
                    create(&namespaced(context, &namespace), &caches.jobs, desired).await
                }
                other => unreachable!("{:?} is never created once", other.kind()),
            }
            .map_err(refused("creating", &object))?;
            if created {
                debug!(kind = object.kind().as_str(), name = %object.name(), "created");
            } else {
                debug!(kind = object.kind().as_str(), name = %object.name(), "found created already");
            }
            Ok(created.then(|| Done::Created {
                kind: object.kind(),
                name: object.name(),
            }))
        }
        Write::Owners {
            kind,
            name,
            resource_version,
            owners,
        } => {
            let patch = Patch::Merge(serde_json::json!({"metadata": {
                "resourceVersion": resource_version,
                "ownerReferences": owners,
            }}));
            let refused = |source| ApplyError::Object {
                verb: "updating the ownerReferences of",
                kind: kind.as_str(),
                name: name.clone(),
                source,
            };
            match kind {
                Kind::Secret => {
                    let api: Api<Secret> = namespaced(context, &namespace);
                    let secret = api
                        .patch(&name, &PatchParams::default(), &patch)
                        .await
                        .map_err(refused)?;
                    caches.secrets.record_written(slimmed(secret));
                }
                Kind::PersistentVolumeClaim => {
                    let api: Api<PersistentVolumeClaim> = namespaced(context, &namespace);
                    let volume = api
                        .patch(&name, &PatchParams::default(), &patch)
                        .await
                        .map_err(refused)?;
                    caches.volumes.record_written(slimmed(volume));
                }
                other => unreachable!("ownerReferences of {other:?} are applied whole"),
            }
            info!(kind = kind.as_str(), %name, "ownerReferences updated");
            Ok(None)
        }
        Write::Finalizer(held) => {
            set_finalizer(context, stack, held).await?;
            Ok(None)
        }
    }
}

/// Deletes every object in `deletions`; one already gone counts as deleted.
pub async fn deletions(
    context: &Context,
    stack: &AppStack,
    deletions: Vec<Deletion>,
) -> Result<Vec<Done>, ApplyError> {
    let namespace = stack.namespace().unwrap_or_default();
    let caches = &context.caches;
    let done = try_join_all(deletions.into_iter().map(|deletion| {
        let namespace = namespace.clone();
        async move {
            let Deletion { kind, name, uid } = deletion;
            let result = match kind {
                Kind::Secret => delete::<Secret>(context, &namespace, &name).await,
                Kind::ConfigMap => {
                    delete::<k8s_openapi::api::core::v1::ConfigMap>(context, &namespace, &name)
                        .await
                }
                Kind::Service => {
                    delete::<k8s_openapi::api::core::v1::Service>(context, &namespace, &name).await
                }
                Kind::StatefulSet => {
                    delete::<k8s_openapi::api::apps::v1::StatefulSet>(context, &namespace, &name)
                        .await
                }
                Kind::Job => {
                    delete::<k8s_openapi::api::batch::v1::Job>(context, &namespace, &name).await
                }
                Kind::Deployment => {
                    delete::<k8s_openapi::api::apps::v1::Deployment>(context, &namespace, &name)
                        .await
                }
                Kind::ServiceMonitor => {
                    delete_dynamic(context, &namespace, &name, caches.service_monitor_api()).await
                }
                Kind::HttpRoute => {
                    delete_dynamic(context, &namespace, &name, caches.http_route_api()).await
                }
                Kind::NetworkPolicy => delete::<NetworkPolicy>(context, &namespace, &name).await,
                Kind::PodDisruptionBudget => {
                    delete::<PodDisruptionBudget>(context, &namespace, &name).await
                }
                Kind::Ingress => delete::<Ingress>(context, &namespace, &name).await,
                Kind::PersistentVolumeClaim => unreachable!("volumes are never swept"),
            };
            result.map_err(|source| ApplyError::Object {
                verb: "deleting",
                kind: kind.as_str(),
                name: name.clone(),
                source,
            })?;
            match kind {
                Kind::Secret => caches.secrets.record_deleted(&namespace, &name, uid),
                Kind::ConfigMap => caches.config_maps.record_deleted(&namespace, &name, uid),
                Kind::Service => caches.services.record_deleted(&namespace, &name, uid),
                Kind::StatefulSet => caches.statefulsets.record_deleted(&namespace, &name, uid),
                Kind::Job => caches.jobs.record_deleted(&namespace, &name, uid),
                Kind::Deployment => caches.deployments.record_deleted(&namespace, &name, uid),
                Kind::ServiceMonitor => caches
                    .service_monitors
                    .record_deleted(&namespace, &name, uid),
                Kind::HttpRoute => caches.http_routes.record_deleted(&namespace, &name, uid),
                Kind::NetworkPolicy => caches
                    .network_policies
                    .record_deleted(&namespace, &name, uid),
                Kind::PodDisruptionBudget => caches
                    .disruption_budgets
                    .record_deleted(&namespace, &name, uid),
                Kind::Ingress => caches.ingresses.record_deleted(&namespace, &name, uid),
                Kind::PersistentVolumeClaim => {}
            }
            info!(kind = kind.as_str(), %name, "deleted child no longer in the spec");
            Ok::<_, ApplyError>(Done::Deleted { kind, name })
        }
    }))
    .await?;
    Ok(done)
}

fn namespaced<K>(context: &Context, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(context.client.clone(), namespace)
}

fn refused<'a>(
    verb: &'static str,
    object: &'a Object,
) -> impl FnOnce(kube::Error) -> ApplyError + 'a {
    move |source| ApplyError::Object {
        verb,
        kind: object.kind().as_str(),
        name: object.name(),
        source,
    }
}

fn slimmed<K: Slim>(mut object: K) -> K {
    object.slim();
    object
}

async fn server_side_apply<K>(
    api: &Api<K>,
    cache: &KindCache<K>,
    desired: &K,
) -> Result<(), kube::Error>
where
    K: Resource + Slim + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let object = api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await?;
    cache.record_written(slimmed(object));
    Ok(())
}

/// Creates `desired`; when an object of that name exists already (a race
/// with another writer, or a cache that has not shown it yet), that one
/// wins and is read into the cache. Returns whether it was created.
async fn create<K>(api: &Api<K>, cache: &KindCache<K>, desired: &K) -> Result<bool, kube::Error>
where
    K: Resource + Slim + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(object) => {
            cache.record_written(slimmed(object));
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            cache.record(slimmed(api.get(&desired.name_any()).await?));
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

async fn delete<K>(context: &Context, namespace: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = namespaced(context, namespace);
    ignore_gone(api.delete(name, &DeleteParams::background()).await)
}

/// Deletes an object of a discovered kind; while its API is not served
/// there is nothing to delete.
async fn delete_dynamic(
    context: &Context,
    namespace: &str,
    name: &str,
    resource: Option<ApiResource>,
) -> Result<(), kube::Error> {
    let Some(resource) = resource else {
        return Ok(());
    };
    let api = Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &resource);
    ignore_gone(api.delete(name, &DeleteParams::background()).await)
}

fn ignore_gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Adds or removes [`plan::DATABASE_FINALIZER`] so the stack holds it
/// exactly when `wanted`. A JSON patch tested against the resourceVersion
/// replaces the list, so a finalizer someone else adds meanwhile is never
/// lost: the patch fails and the pass is retried.
pub async fn set_finalizer(
    context: &Context,
    stack: &AppStack,
    wanted: bool,
) -> Result<(), ApplyError> {
    let Some(finalizers) = plan::desired_finalizers(stack.finalizers(), wanted) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": stack.resource_version()},
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ]))
    .expect("a well-formed JSON patch");
    let stacks: Api<AppStack> = Api::namespaced(
        context.client.clone(),
        &stack.namespace().unwrap_or_default(),
    );
    let updated = stacks
        .patch(
            &stack.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(ApplyError::Finalizer)?;
    context.caches.stacks.record_written(slimmed(updated));
    info!(
        finalizer = plan::DATABASE_FINALIZER,
        held = wanted,
        "finalizer updated"
    );
    Ok(())
}
