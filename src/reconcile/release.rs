//! Release: a stack being deleted gets no more writes; it only lets go of
//! the database finalizer, after disowning what its spec says to keep.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{Api, ResourceExt};
use tracing::info;

use super::apply::{self, ApplyError};
use super::context::Context;
use super::plan::{self, Kind, Write};
use crate::api::crd::AppStack;
use crate::api::stack::{Database, ValidatedStack};
use crate::children::{self, database_name};

/// Lets a stack that is being deleted go. If it holds the database
/// finalizer but its spec now says `Retain` (switched just before the
/// deletion, before a pass caught up), the credentials and the volume are
/// disowned first, so the deletion honours the policy the user last asked
/// for. What is disowned is read fresh: a cache that has not shown the
/// StatefulSet controller's latest reference must not cost the volume.
pub async fn release(context: &Context, stack: &AppStack) -> Result<(), ApplyError> {
    if !plan::holds_finalizer(stack.finalizers()) {
        return Ok(());
    }
    if let Ok(validated) = ValidatedStack::new(stack)
        && let Database::Managed(_) = validated.database
        && !validated.deletes_database_with_stack()
    {
        let namespace = validated.namespace.as_str();
        let read_failed = |kind: Kind, name: String| {
            move |source| ApplyError::Object {
                verb: "reading",
                kind: kind.as_str(),
                name,
                source,
            }
        };
        let mut writes = Vec::new();
        let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
        let secret_name = database_name(&validated);
        if let Some(secret) = secrets
            .get_metadata_opt(&secret_name)
            .await
            .map_err(read_failed(Kind::Secret, secret_name.clone()))?
            && secret
                .owner_references()
                .iter()
                .any(|owner| owner.uid == validated.uid)
        {
            writes.push(Write::Owners {
                kind: Kind::Secret,
                name: secret_name,
                resource_version: secret.resource_version(),
                owners: secret
                    .owner_references()
                    .iter()
                    .filter(|owner| owner.uid != validated.uid)
                    .cloned()
                    .collect(),
            });
        }
        let volumes: Api<PersistentVolumeClaim> =
            Api::namespaced(context.client.clone(), namespace);
        let volume_name = children::database::volume_claim_name(&validated);
        if let Some(volume) = volumes
            .get_metadata_opt(&volume_name)
            .await
            .map_err(read_failed(
                Kind::PersistentVolumeClaim,
                volume_name.clone(),
            ))?
            && let Some(owners) =
                children::database::volume_owner_references(&validated, volume.owner_references())
        {
            writes.push(Write::Owners {
                kind: Kind::PersistentVolumeClaim,
                name: volume_name,
                resource_version: volume.resource_version(),
                owners,
            });
        }
        apply::writes(context, stack, writes).await?;
    }
    apply::set_finalizer(context, stack, false).await?;
    info!("stack deleted; its children go with it");
    Ok(())
}
