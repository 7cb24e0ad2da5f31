//! Apply: sends a stage's writes, all at once, and a pass's deletions. Each
//! result is recorded in the caches, so the rest of the pass (and the next,
//! should it start before the watch shows the write) reads what was written.

use futures::future::try_join_all;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::{debug, info};

use super::context::Context;
use super::plan::{self, Deletion, Kind, Write};
use crate::api::crd::AppStack;
use crate::children::{FIELD_MANAGER, JobStep};
use crate::kinds::{match_kind, match_object};
use crate::runtime::cache::Cached;
use crate::runtime::cache::slim::slimmed;

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
        /// Which step of the migrations a created Job (or VolumeSnapshot)
        /// is.
        step: Option<JobStep>,
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
    match write {
        Write::Apply(object) => {
            match_object!(&object, K, desired => {
                server_side_apply::<K>(context, &namespace, desired).await
            })?;
            Ok(None)
        }
        Write::Create(object) => {
            let created = match_object!(&object, K, desired => {
                create::<K>(context, &namespace, desired).await
            })?;
            Ok(created.then(|| Done::Created {
                kind: object.kind(),
                name: object.name(),
                step: object.step(),
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
            match_kind!(kind, K => patch_owners::<K>(context, &namespace, &name, &patch).await)?;
            Ok(None)
        }
        Write::Finalizer(held) => {
            set_finalizer(context, stack, held).await?;
            Ok(None)
        }
        Write::Delete(Deletion { kind, name, uid }) => {
            // Run again by a later pass, which tells of it.
            match_kind!(kind, K => delete::<K>(context, &namespace, &name, uid).await)?;
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
    let done = try_join_all(deletions.into_iter().map(|deletion| {
        let namespace = namespace.clone();
        async move {
            let Deletion { kind, name, uid } = deletion;
            match_kind!(kind, K => delete::<K>(context, &namespace, &name, uid).await)?;
            Ok::<_, ApplyError>(Done::Deleted { kind, name })
        }
    }))
    .await?;
    Ok(done)
}

/// The error of a request about `name`, of kind `kind`, the API server
/// refused.
fn refused(verb: &'static str, kind: Kind, name: &str) -> impl FnOnce(kube::Error) -> ApplyError {
    let name = name.to_string();
    move |source| ApplyError::Object {
        verb,
        kind: kind.as_str(),
        name,
        source,
    }
}

/// The API of kind `K` in `namespace`, while it is served.
fn api<K: Cached>(context: &Context, namespace: &str) -> Option<Api<K::Object>> {
    let cache = K::cache(&context.caches);
    cache
        .served()
        .then(|| K::api(context.client.clone(), namespace, cache.dyntype()))
}

/// The API of kind `K` for a write: one the server no longer serves is an
/// error, retried (discovery looks for the API again meanwhile).
fn writable<K: Cached>(context: &Context, namespace: &str) -> Result<Api<K::Object>, ApplyError> {
    api::<K>(context, namespace).ok_or(ApplyError::NotServed(K::KIND.as_str()))
}

async fn server_side_apply<K: Cached>(
    context: &Context,
    namespace: &str,
    desired: &K::Object,
) -> Result<(), ApplyError> {
    let name = desired.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let object = writable::<K>(context, namespace)?
        .patch(&name, &params, &Patch::Apply(desired))
        .await
        .map_err(refused("applying", K::KIND, &name))?;
    K::cache(&context.caches).record_written(slimmed(object));
    debug!(kind = K::KIND.as_str(), %name, "applied");
    Ok(())
}

/// Creates `desired`; when an object of that name exists already (a race
/// with another writer, or a cache that has not shown it yet), that one
/// wins and is read into the cache. Returns whether it was created.
async fn create<K: Cached>(
    context: &Context,
    namespace: &str,
    desired: &K::Object,
) -> Result<bool, ApplyError> {
    let name = desired.name_any();
    let api = writable::<K>(context, namespace)?;
    let cache = K::cache(&context.caches);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(object) => {
            cache.record_written(slimmed(object));
            debug!(kind = K::KIND.as_str(), %name, "created");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let found = api
                .get(&name)
                .await
                .map_err(refused("reading", K::KIND, &name))?;
            cache.record(slimmed(found));
            debug!(kind = K::KIND.as_str(), %name, "found created already");
            Ok(false)
        }
        Err(error) => Err(refused("creating", K::KIND, &name)(error)),
    }
}

/// Replaces an object's ownerReferences with a merge patch.
async fn patch_owners<K: Cached>(
    context: &Context,
    namespace: &str,
    name: &str,
    patch: &Patch<serde_json::Value>,
) -> Result<(), ApplyError> {
    let object = writable::<K>(context, namespace)?
        .patch(name, &PatchParams::default(), patch)
        .await
        .map_err(refused("updating the ownerReferences of", K::KIND, name))?;
    K::cache(&context.caches).record_written(slimmed(object));
    info!(kind = K::KIND.as_str(), %name, "ownerReferences updated");
    Ok(())
}

/// Deletes an object; one already gone, or of a kind whose API is no
/// longer served, counts as deleted.
async fn delete<K: Cached>(
    context: &Context,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), ApplyError> {
    if let Some(api) = api::<K>(context, namespace) {
        ignore_gone(api.delete(name, &DeleteParams::background()).await).map_err(refused(
            "deleting",
            K::KIND,
            name,
        ))?;
    }
    K::cache(&context.caches).record_deleted(namespace, name, uid);
    info!(kind = K::KIND.as_str(), %name, "deleted");
    Ok(())
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
