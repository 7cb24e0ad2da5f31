//! The plugin's commands about the schema: `approve` a revision waiting
//! under `approval: Manual`, and `restore` a backup taken before a
//! migration.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::api::conditions::{self, reasons, types};
use crate::api::crd::AppStack;
use crate::api::stack::ValidatedStack;
use crate::children::backup::restore_job;

async fn stack(client: &Client, namespace: &str, name: &str) -> anyhow::Result<AppStack> {
    Api::<AppStack>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no AppStack {name:?} in namespace {namespace:?}"))
}

/// The revision stack `name` waits to have approved, checked against
/// `expected` when given.
pub fn revision_to_approve(stack: &AppStack, expected: Option<&str>) -> anyhow::Result<String> {
    let name = stack.name_any();
    let manual =
        stack.spec.migrations.as_ref().is_some_and(|migrations| {
            migrations.approval == crate::api::crd::ApprovalPolicy::Manual
        });
    if !manual {
        anyhow::bail!(
            "AppStack {name:?} does not ask for approval (spec.migrations.approval is not Manual)"
        );
    }
    let status = stack.status.as_ref();
    let current =
        status.is_some_and(|status| Some(status.observed_generation) == stack.metadata.generation);
    let waiting = conditions::condition(status, types::MIGRATION_APPROVED)
        .is_some_and(|condition| condition.reason == reasons::AWAITING_APPROVAL);
    let target = status
        .and_then(|status| status.migration.as_ref())
        .and_then(|migration| migration.target_revision.clone());
    let (true, true, Some(target)) = (current, waiting, target) else {
        anyhow::bail!(
            "AppStack {name:?} has no revision waiting for approval now (see kubectl appstack status {name})"
        );
    };
    if let Some(expected) = expected.filter(|expected| *expected != target) {
        anyhow::bail!(
            "AppStack {name:?} waits for revision {target}, not {expected}: the spec changed since; look again with kubectl appstack status {name}"
        );
    }
    Ok(target)
}

/// Sets `spec.migrations.approvedRevision` of stack `name` to the revision
/// it waits for (`expected`, when given, must be it); returns it.
pub async fn approve(
    client: &Client,
    namespace: &str,
    name: &str,
    expected: Option<&str>,
) -> anyhow::Result<String> {
    let stack = stack(client, namespace, name).await?;
    let revision = revision_to_approve(&stack, expected)?;
    // The resourceVersion makes the patch fail if the spec changed since it
    // was read: a revision is approved only as it was shown.
    Api::<AppStack>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"resourceVersion": stack.resource_version()},
                "spec": {"migrations": {"approvedRevision": revision}},
            })),
        )
        .await?;
    Ok(revision)
}

/// Starts a Job restoring dump `backup` (default: `status.migration.lastBackup`)
/// of stack `name` into its database, or into a new database `into`;
/// returns the Job's name and the dump's.
pub async fn restore(
    client: &Client,
    namespace: &str,
    name: &str,
    backup: Option<&str>,
    into: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let stack = stack(client, namespace, name).await?;
    let validated = ValidatedStack::new(&stack)
        .map_err(|error| anyhow::anyhow!("AppStack {name:?} is invalid: {error}"))?;
    let backups = validated.backups().ok_or_else(|| {
        anyhow::anyhow!(
            "AppStack {name:?} takes no backups (spec.migrations.backup.enabled with a managed database)"
        )
    })?;
    if backups.method != crate::api::crd::BackupMethod::Dump {
        anyhow::bail!(
            "AppStack {name:?} backs up by VolumeSnapshot: restore one by creating a PersistentVolumeClaim from it (see the backups how-to)"
        );
    }
    let file = match backup {
        Some(file) => file.to_string(),
        None => stack
            .status
            .as_ref()
            .and_then(|status| status.migration.as_ref())
            .and_then(|migration| migration.last_backup.as_ref())
            .map(|record| record.name.clone())
            .ok_or_else(|| anyhow::anyhow!("AppStack {name:?} has taken no backup yet"))?,
    };
    if file.contains('/') || !file.ends_with(".dump") {
        anyhow::bail!(
            "{file:?} is not the name of a dump (status.migration.lastBackup.name, e.g. {name}-backup-<hash>-g<generation>.dump)"
        );
    }
    let suffix = format!("{}", k8s_openapi::jiff::Timestamp::now().as_second());
    let job = restore_job(&validated, &file, into, &suffix)
        .ok_or_else(|| anyhow::anyhow!("AppStack {name:?} has no managed database to restore"))?;
    let created = Api::<Job>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &job)
        .await?;
    Ok((created.name_any(), file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::crd::{AppStackStatus, MigrationStatus};
    use crate::api::stack::tests::example_yaml_with_migrations;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn waiting(generation: i64, observed: i64, reason: &str) -> AppStack {
        let mut stack: AppStack =
            serde_yaml::from_str(&example_yaml_with_migrations("    approval: Manual\n")).unwrap();
        stack.metadata.generation = Some(generation);
        stack.status = Some(AppStackStatus {
            observed_generation: observed,
            conditions: vec![Condition {
                type_: types::MIGRATION_APPROVED.into(),
                status: "False".into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: Some(observed),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            migration: Some(MigrationStatus {
                target_revision: Some("0123456789".into()),
                ..MigrationStatus::default()
            }),
            ..AppStackStatus::default()
        });
        stack
    }

    #[test]
    fn only_the_revision_the_stack_waits_for_now_is_approved() {
        let stack = waiting(2, 2, reasons::AWAITING_APPROVAL);
        assert_eq!(revision_to_approve(&stack, None).unwrap(), "0123456789");
        assert_eq!(
            revision_to_approve(&stack, Some("0123456789")).unwrap(),
            "0123456789"
        );
        let other = revision_to_approve(&stack, Some("aaaaaaaaaa")).unwrap_err();
        assert!(other.to_string().contains("not aaaaaaaaaa"), "{other}");
        let stale = revision_to_approve(&waiting(3, 2, reasons::AWAITING_APPROVAL), None);
        assert!(stale.is_err(), "a status of an older generation");
        let approved = revision_to_approve(&waiting(2, 2, reasons::APPROVED), None);
        assert!(approved.is_err(), "nothing waits");
    }
}
