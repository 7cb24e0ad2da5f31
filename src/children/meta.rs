//! What every child carries: the operator's labels and field manager, the
//! names derived from the stack's, and the metadata (labels, controller
//! ownerReference) each builder starts from.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::stack::ValidatedStack;

/// The field manager of every server-side apply the operator sends.
pub const FIELD_MANAGER: &str = "appstack-operator";
/// `app.kubernetes.io/managed-by` value; child watches select on it.
pub const MANAGED_BY: &str = "appstack-operator";
/// `app.kubernetes.io/name` value of every child.
pub const APP_NAME: &str = "appstack";
/// Pod-template annotation that rolls the backend's pods when their
/// configuration changes: a checksum of the versions (uid and
/// resourceVersion) of the objects their environment is read from, never of
/// the values, which anyone allowed to read Deployments could otherwise test
/// guesses against.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "appstack.dev/config-checksum";
/// Label on migration Jobs carrying their revision.
pub const MIGRATION_REVISION_LABEL: &str = "appstack.dev/migration-revision";
/// Label on the Jobs of the migrations saying which step they are
/// ([`JobStep`]).
pub const STEP_LABEL: &str = "appstack.dev/step";
/// Label on the Jobs of the migrations carrying the stack's generation they
/// were made for: a finished Job made for an earlier generation is no
/// evidence that the database holds what it did then (a downgrade may have
/// undone it since).
pub const GENERATION_LABEL: &str = "appstack.dev/generation";

/// The Jobs the migrations run, as [`STEP_LABEL`] values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStep {
    /// The backup before a migration (`pg_dump`).
    Backup,
    /// The migration of a revision (expand).
    Migrate,
    /// The schema taken back under `rollback: Downgrade`.
    Downgrade,
    /// The post-deploy step (contract).
    PostDeploy,
    /// A restore `kubectl appstack restore` started.
    Restore,
}

impl JobStep {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStep::Backup => "backup",
            JobStep::Migrate => "migrate",
            JobStep::Downgrade => "downgrade",
            JobStep::PostDeploy => "post-deploy",
            JobStep::Restore => "restore",
        }
    }

    /// The step an object's labels name, if any.
    pub fn of(labels: &BTreeMap<String, String>) -> Option<Self> {
        labels
            .get(STEP_LABEL)
            .and_then(|value| Self::from_label(value))
    }

    pub fn from_label(value: &str) -> Option<Self> {
        [
            JobStep::Backup,
            JobStep::Migrate,
            JobStep::Downgrade,
            JobStep::PostDeploy,
            JobStep::Restore,
        ]
        .into_iter()
        .find(|step| step.as_str() == value)
    }
}

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Label selector matching every object the operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// Label selector matching the pods of every stack's workloads: their
/// templates carry the selector labels, not the managed-by label (adding it
/// would roll every workload).
pub fn pod_selector() -> String {
    format!(
        "{LABEL_NAME}={APP_NAME},{LABEL_INSTANCE},{LABEL_COMPONENT} in ({},{},{},{},{})",
        Component::Database.as_str(),
        Component::Backup.as_str(),
        Component::Migration.as_str(),
        Component::Backend.as_str(),
        Component::Frontend.as_str()
    )
}

/// The parts of a stack, as `app.kubernetes.io/component` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Config,
    Database,
    /// The backups of the database and their restores.
    Backup,
    /// The migration, downgrade and post-deploy Jobs.
    Migration,
    Backend,
    Frontend,
    /// The Ingress or HTTPRoute.
    Expose,
    NetworkPolicy,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Config => "config",
            Component::Database => "database",
            Component::Backup => "backup",
            Component::Migration => "migration",
            Component::Backend => "backend",
            Component::Frontend => "frontend",
            Component::Expose => "expose",
            Component::NetworkPolicy => "network-policy",
        }
    }
}

/// Labels that select a component's pods; never versioned, so a selector
/// never has to change.
pub fn selector_labels(stack: &ValidatedStack, component: Component) -> BTreeMap<String, String> {
    [
        (LABEL_NAME, APP_NAME),
        (LABEL_INSTANCE, stack.name.as_str()),
        (LABEL_COMPONENT, component.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// Every label a child carries.
pub fn labels(stack: &ValidatedStack, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(stack, component);
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_PART_OF.into(), stack.name.clone());
    labels
}

/// The controller ownerReference to the stack.
pub fn owner_reference(stack: &ValidatedStack) -> OwnerReference {
    OwnerReference {
        api_version: "appstack.dev/v1alpha1".into(),
        kind: "AppStack".into(),
        name: stack.name.clone(),
        uid: stack.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child: name, namespace, labels and the controller
/// ownerReference. Every builder starts from this.
pub fn object_meta(stack: &ValidatedStack, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(stack.namespace.clone()),
        labels: Some(labels(stack, component)),
        owner_references: Some(vec![owner_reference(stack)]),
        ..ObjectMeta::default()
    }
}

/// Name of the `<stack>-env` Secret and ConfigMap.
pub fn env_name(stack: &ValidatedStack) -> String {
    format!("{}-env", stack.name)
}

/// Name of the `<stack>-db` Secret, StatefulSet and Service.
pub fn database_name(stack: &ValidatedStack) -> String {
    format!("{}-db", stack.name)
}
