//! The `AppStack` custom resource (`appstack.dev/v1alpha1`).
//!
//! Every doc comment here becomes a schema description, so it is what
//! `kubectl explain appstack.spec...` prints: write them for users. Validation
//! lives in the schema (OpenAPI keywords and CEL `x-kubernetes-validations`)
//! so the API server rejects bad input with a message naming the field.

mod expose;
mod network;
mod schema;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub use self::expose::{ExposeSpec, GatewayRef, IngressSpec, TlsSpec};
pub use self::network::{NetworkPolicySpec, PeerSpec};
pub use self::schema::MAX_POD_ANNOTATION_CHARACTERS;
use self::schema::{APPLICABLE_TEXT, DNS_SUBDOMAIN, empty_if_null, label_map, pod_annotation_map};

/// Environment variable names the operator sets itself; users may not set them.
pub const RESERVED_ENV_NAMES: [&str; 3] = ["DATABASE_URL", "DB_POOL_SIZE", "DB_POOL_TIMEOUT"];

/// The longest stack name whose derived child names all fit in 63 characters:
/// `<stack>-migrate-<10-character hash>` is the longest of them.
pub const MAX_STACK_NAME_LENGTH: usize = 63 - "-migrate-".len() - MIGRATION_HASH_LENGTH;

/// Length of the revision hash in migration Job names.
pub const MIGRATION_HASH_LENGTH: usize = 10;

/// An image reference is printable ASCII without spaces (the distribution
/// spec's grammar is ASCII); the pattern also rejects the placeholder
/// `appstack import` writes for an image still to be built.
const IMAGE_PATTERN: &str = r"^[!-~]+$";

/// Kubernetes' quantity grammar (as in `resource.Quantity`), without a
/// sign: no quantity of a stack can be negative.
const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// The most characters the plain env values may hold together: they are
/// ConfigMap `<stack>-env`, which holds at most 1 MiB (a character takes
/// up to 4 bytes in UTF-8).
pub const MAX_PLAIN_ENV_CHARACTERS: usize = 250_000;

/// An AppStack is one application: a PostgreSQL database, its migrations, a
/// backend, an optional frontend, their environment and secrets, and their
/// Prometheus monitoring, brought up in order with one status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "appstack.dev",
    version = "v1alpha1",
    kind = "AppStack",
    doc = "An AppStack turns one resource into a running application stack: a PostgreSQL database, its migrations, a backend, an optional frontend, their environment and secrets, and Prometheus monitoring, applied in order with one truthful status.",
    plural = "appstacks",
    singular = "appstack",
    shortname = "stack",
    namespaced,
    status = "AppStackStatus",
    category = "all",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Migration","type":"string","jsonPath":".status.migration.appliedRevision"}"#,
    printcolumn = r#"{"name":"Schema","type":"string","jsonPath":".status.migration.schemaRevision"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    validation = Rule::new("self.metadata.name.size() <= 44").message("metadata.name must be at most 44 characters, so that every child name (<name>-migrate-<hash>) fits in 63")
)]
#[x_kube(validation = Rule::new("!has(self.expose) || !has(self.frontend) || self.expose.apiPath != '/'").message("expose.apiPath must not be '/' while there is a frontend: the frontend is served at '/'").field_path(".expose.apiPath"))]
#[x_kube(validation = Rule::new("!has(self.migrations) || !has(self.migrations.backup) || !self.migrations.backup.enabled || has(self.database.managed)").message("migrations.backup needs database.managed: the operator backs up the database it runs; back up an external database where it is hosted").field_path(".migrations.backup"))]
#[serde(rename_all = "camelCase")]
pub struct AppStackSpec {
    /// The PostgreSQL database: exactly one of `managed` (the operator runs it
    /// in a StatefulSet) or `external` (a connection URL from a Secret).
    pub database: DatabaseSpec,
    /// The database migration Job, run to success before the backend moves to
    /// a new revision. Defaults apply when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<MigrationsSpec>,
    /// The backend Deployment and Service. It receives DATABASE_URL,
    /// DB_POOL_SIZE, DB_POOL_TIMEOUT and every entry of `env`.
    pub backend: BackendSpec,
    /// The frontend Deployment and Service, optional. Removing it deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendSpec>,
    /// The application's environment (its .env file, typed): plain values go to
    /// ConfigMap `<stack>-env`, generated and referenced secrets to Secret
    /// `<stack>-env`. Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{
            "rule": format!("self.map(e, has(e.value) ? e.value.size() : 0).sum() <= {MAX_PLAIN_ENV_CHARACTERS}"),
            "message": format!("the plain values of env may hold at most {MAX_PLAIN_ENV_CHARACTERS} characters together (they are ConfigMap <stack>-env)"),
        }],
    ))]
    pub env: Vec<EnvEntry>,
    /// Prometheus Operator monitoring of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// The stack on a public host name, through an Ingress or a Gateway API
    /// HTTPRoute `<stack>`. The frontend's apiUrlEnv then holds the public
    /// URL of the backend, and status.url the stack's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<ExposeSpec>,
    /// NetworkPolicies confining the stack's pods to the flows it needs;
    /// enabled when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// Where the stack's PostgreSQL database comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("exactly one of database.managed or database.external must be set"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// A PostgreSQL server run by the operator: StatefulSet and headless
    /// Service `<stack>-db`, with a persistent volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedDatabase>,
    /// An existing PostgreSQL server, reached through a connection URL kept in
    /// a Secret in the stack's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
    /// Database and user name. Defaults to the stack name with '-' replaced by
    /// '_'. A PostgreSQL identifier: lowercase letters, digits and '_', not
    /// starting with a digit, at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub name: Option<String>,
    /// Connection pool settings handed to the backend as DB_POOL_SIZE and
    /// DB_POOL_TIMEOUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,
}

/// A PostgreSQL server managed by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDatabase {
    /// PostgreSQL container image.
    #[serde(default = "default_postgres_image")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,
    /// The data volume.
    #[serde(default)]
    pub storage: StorageSpec,
    /// What happens to the data volume and the `<stack>-db` credentials when
    /// the AppStack is deleted: Retain (default) keeps them, Delete removes
    /// them. Under Delete the AppStack holds the finalizer
    /// appstack.dev/delete-database, which the operator releases once it has
    /// seen the deletion.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Compute resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Default for ManagedDatabase {
    fn default() -> Self {
        Self {
            image: default_postgres_image(),
            storage: StorageSpec::default(),
            deletion_policy: DeletionPolicy::default(),
            resources: None,
        }
    }
}

fn default_postgres_image() -> String {
    "postgres:16-alpine".to_owned()
}

/// The managed database's persistent volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": format!("quantity(string(self.size)).isGreaterThan(quantity('0')) && {}", whole_bytes("self.size")),
    "message": "storage.size must be a whole number of bytes, more than 0 and less than 8Pi",
    "fieldPath": ".size",
}]))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested volume size, a Kubernetes quantity such as 10Gi: whole
    /// bytes, more than 0 and less than 8Pi.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the volume; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}

/// What deleting the AppStack does to the database volume and credentials.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the PersistentVolumeClaim and the `<stack>-db` Secret.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim and the `<stack>-db` Secret too.
    Delete,
}

/// An external PostgreSQL server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// The Secret key holding the connection URL (postgres://...).
    pub url_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the stack's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.key != '.' && !self.key.startsWith('..')").message("key must not be '.' or start with '..'").field_path(".key"))]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Connection pool settings for the backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Maximum connections per backend process (DB_POOL_SIZE).
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub size: i32,
    /// Seconds to wait for a free connection (DB_POOL_TIMEOUT).
    #[serde(default = "default_pool_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            size: default_pool_size(),
            timeout_seconds: default_pool_timeout(),
        }
    }
}

fn default_pool_size() -> i32 {
    20
}

fn default_pool_timeout() -> i32 {
    30
}

/// The migration Job. A new revision (image, command, args, env or
/// retryToken changed, or another database: the managed one, or the host,
/// port and database name of the external URL) runs a new Job
/// `<stack>-migrate-<hash>`; the backend only moves once that Job has
/// succeeded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.revisionQuery) || self.revisionQuery.matches('^[[:space:]]*(?i:select|with)[[:space:]][^;]*$')").message("migrations.revisionQuery must be a single SELECT (or WITH ... SELECT) statement without ';'").field_path(".revisionQuery"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSpec {
    /// Migration image; the backend image when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,
    /// Migration command, e.g. ["alembic", "upgrade", "head"]; the image's
    /// entrypoint when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub command: Option<Vec<String>>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub args: Option<Vec<String>>,
    /// Retries before the migration counts as failed (Job backoffLimit).
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub backoff_limit: i32,
    /// Longest a migration may run, in seconds, before it counts as failed.
    #[serde(default = "default_active_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub active_deadline_seconds: i64,
    /// Any string; change it to run a failed revision again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub retry_token: Option<String>,
    /// Compute resources of the migration container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// ServiceAccount the migration pod runs as, with its API token mounted.
    /// Without it the pod runs as the namespace's default ServiceAccount and
    /// no token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account_name: Option<String>,
    /// Extra labels on the migration pod (sidecar injection, policy labels).
    /// At most 64, with keys and values Kubernetes allows on a label.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "label_map")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra annotations on the migration pod.
    /// At most 64, with qualified-name keys and 64,000 characters of keys
    /// and values together; seccomp and AppArmor profiles cannot be set
    /// here (pods run with the RuntimeDefault seccomp profile, as Pod
    /// Security `restricted` asks).
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "pod_annotation_map")]
    pub pod_annotations: BTreeMap<String, String>,
    /// The query that reads the schema revision the migrations left in the
    /// database, published as status.migration.schemaRevision after each
    /// successful migration Job. One SELECT (or WITH) statement without ';';
    /// its first column is the revision, of any type (several rows are
    /// joined with ', '). It runs as the stack's database user in a
    /// read-only transaction. Default (Alembic): SELECT version_num FROM
    /// alembic_version. Django: SELECT app || '.' || name FROM
    /// django_migrations ORDER BY id DESC LIMIT 1. Flyway: SELECT version
    /// FROM flyway_schema_history WHERE success ORDER BY installed_rank DESC
    /// LIMIT 1. golang-migrate: SELECT version FROM schema_migrations WHERE
    /// NOT dirty. sqlx: SELECT max(version) FROM _sqlx_migrations WHERE
    /// success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub revision_query: Option<String>,
    /// The UID the container runs as. Pods always run as a non-root user
    /// (Pod Security `restricted`): set this when the image's user is root
    /// or a name the kubelet cannot check as non-root, e.g. 1000.
    /// Defaults to backend.runAsUser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 1", "message": "must be at least 1: the operator's pods pass Pod Security restricted, which forbids running as root (UID 0)"}]))]
    pub run_as_user: Option<i64>,
    /// The contract step of an expand/contract change: a command run as its
    /// own Job `<stack>-post-<hash>` (same image, environment and pod
    /// settings as the migration) once every replica of the new backend and
    /// frontend is available and no pod of the previous release is left,
    /// plus `after`. The migration above is the expand step, run before the
    /// backend moves. A post-deploy step that fails leaves the new release
    /// serving and says so (PostDeployApplied=False, the stack Stalled); a
    /// rollout that does not complete never runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy: Option<PostDeploySpec>,
    /// What to do when the backend goes back to a revision whose schema is
    /// behind the database's (a rollback after the schema moved forward),
    /// as the schema revisions the operator recorded per migration revision
    /// (status.migration.history) tell. Block (default): the backend stays
    /// where it is (BackendAvailable=False, reason RollbackBlocked) until
    /// the spec says how. Downgrade: the image of the revision that
    /// migrated the database forward runs downgradeCommand first, then the
    /// backend moves back. AllowSchemaAhead: the backend moves back and the
    /// schema stays (for changes that only added to it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub rollback: RollbackPolicy,
    /// The command that takes the schema back under rollback: Downgrade,
    /// run with the image of the newer revision. The environment holds
    /// APPSTACK_TARGET_SCHEMA_REVISION (the schema revision to go back to)
    /// and APPSTACK_CURRENT_SCHEMA_REVISION, which the command may name as
    /// $(APPSTACK_TARGET_SCHEMA_REVISION). Default: ["alembic",
    /// "downgrade", "$(APPSTACK_TARGET_SCHEMA_REVISION)"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub downgrade_command: Option<Vec<String>>,
    /// A backup of the managed database before each migration (and each
    /// downgrade): the migration waits for it, and a failed backup holds it
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Automatic (default): a new revision migrates at once. Manual: it
    /// waits (MigrationApproved=False, reason AwaitingApproval, the revision
    /// in status.migration.targetRevision) until approvedRevision names it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub approval: ApprovalPolicy,
    /// Under approval: Manual, the revision whose migration may run: set it
    /// to status.migration.targetRevision (a commit in Git, or `kubectl
    /// appstack approve`). A spec change that makes another revision leaves
    /// that one unapproved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{10}$"))]
    pub approved_revision: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The contract step, run after the new release is fully rolled out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PostDeploySpec {
    /// The command, e.g. ["alembic", "upgrade", "head"].
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub command: Vec<String>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub args: Option<Vec<String>>,
    /// How long the new release serves, fully rolled out, before the step
    /// runs (a soak), as hours, minutes and seconds: 30s, 10m, 1h30m; at
    /// most 168h. Immediately when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) <= duration('168h')", "message": "postDeploy.after must be at most 168h"}]))]
    pub after: Option<String>,
}

/// What a rollback to a revision whose schema is behind the database's does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RollbackPolicy {
    /// Keep the backend where it is and say why.
    #[default]
    Block,
    /// Run downgradeCommand with the newer revision's image, then move back.
    Downgrade,
    /// Move back and keep the newer schema.
    AllowSchemaAhead,
}

/// Whether a new revision's migration waits for approval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApprovalPolicy {
    #[default]
    Automatic,
    Manual,
}

/// Backups of the managed database before migrations.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Take a backup before each migration.
    #[serde(default)]
    pub enabled: bool,
    /// How many backups are kept; older ones are deleted.
    #[serde(default = "default_backup_keep")]
    #[schemars(range(min = 1, max = 100))]
    pub keep: i32,
    /// Dump (default): `pg_dump --format=custom` from the database image,
    /// run as Job `<stack>-backup-<hash>`, into PersistentVolumeClaim
    /// `<stack>-backups`. Snapshot: a VolumeSnapshot of the database's
    /// volume, for clusters whose CSI driver takes snapshots; written while
    /// the snapshot.storage.k8s.io/v1 API is served.
    #[serde(default, skip_serializing_if = "is_default")]
    pub method: BackupMethod,
    /// The volume the dumps are kept on (Dump). It follows the database's
    /// deletionPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// The VolumeSnapshotClass of the snapshots (Snapshot); the cluster's
    /// default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub volume_snapshot_class_name: Option<String>,
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            keep: default_backup_keep(),
            method: BackupMethod::default(),
            storage: None,
            volume_snapshot_class_name: None,
        }
    }
}

fn default_backup_keep() -> i32 {
    3
}

/// How a backup is taken.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackupMethod {
    #[default]
    Dump,
    Snapshot,
}

fn default_backoff_limit() -> i32 {
    2
}

fn default_active_deadline() -> i64 {
    900
}

/// The backend: a Deployment and a Service `<stack>-backend`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Backend container image, e.g. ghcr.io/acme/shop-backend:1.4.2.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,
    /// Container command; the image's entrypoint when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub command: Option<Vec<String>>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub args: Option<Vec<String>>,
    /// Number of pods, 0 to 100. Leave it unset to let something else own
    /// the count, such as a HorizontalPodAutoscaler: the operator then never
    /// sets the Deployment's replicas (a new Deployment starts with 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Port the backend listens on.
    #[serde(default = "default_backend_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Compute resources of the backend container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// ServiceAccount the backend pods run as, with its API token mounted.
    /// Without it the pods run as the namespace's default ServiceAccount and
    /// no token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account_name: Option<String>,
    /// Extra labels on backend pods (sidecar injection, policy labels).
    /// At most 64, with keys and values Kubernetes allows on a label.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "label_map")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra annotations on backend pods.
    /// At most 64, with qualified-name keys and 64,000 characters of keys
    /// and values together; seccomp and AppArmor profiles cannot be set
    /// here (pods run with the RuntimeDefault seccomp profile, as Pod
    /// Security `restricted` asks).
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "pod_annotation_map")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Probes: readiness GETs the health path; liveness, set with it, only
    /// checks that the port accepts connections, so a pod whose health
    /// depends on the database leaves its Service while the database is
    /// away instead of being restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// The UID the container runs as. Pods always run as a non-root user
    /// (Pod Security `restricted`): set this when the image's user is root
    /// or a name the kubelet cannot check as non-root, e.g. 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 1", "message": "must be at least 1: the operator's pods pass Pod Security restricted, which forbids running as root (UID 0)"}]))]
    pub run_as_user: Option<i64>,
    /// The Prometheus metrics endpoint scraped by the ServiceMonitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
}

fn default_backend_port() -> i32 {
    8000
}

/// The frontend: a Deployment and a Service `<stack>-frontend`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(self.apiUrlEnv in ['DATABASE_URL', 'DB_POOL_SIZE', 'DB_POOL_TIMEOUT'])").message("frontend.apiUrlEnv must not be DATABASE_URL, DB_POOL_SIZE or DB_POOL_TIMEOUT, which the operator sets itself").field_path(".apiUrlEnv"))]
#[serde(rename_all = "camelCase")]
pub struct FrontendSpec {
    /// Frontend container image.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,
    /// Container command; the image's entrypoint when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub command: Option<Vec<String>>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = APPLICABLE_TEXT)))]
    pub args: Option<Vec<String>>,
    /// Number of pods, 0 to 100. Leave it unset to let something else own
    /// the count, such as a HorizontalPodAutoscaler: the operator then never
    /// sets the Deployment's replicas (a new Deployment starts with 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Port the frontend listens on.
    #[serde(default = "default_frontend_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Environment variable that receives the backend's URL: its public URL
    /// (https://<host><apiPath>) when the stack is exposed, for the user's
    /// browser, otherwise the backend Service's URL inside the cluster.
    #[serde(default = "default_api_url_env")]
    #[schemars(length(min = 1, max = 128))]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub api_url_env: String,
    /// Compute resources of the frontend container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Extra labels on frontend pods.
    /// At most 64, with keys and values Kubernetes allows on a label.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "label_map")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra annotations on frontend pods.
    /// At most 64, with qualified-name keys and 64,000 characters of keys
    /// and values together; seccomp and AppArmor profiles cannot be set
    /// here (pods run with the RuntimeDefault seccomp profile, as Pod
    /// Security `restricted` asks).
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "pod_annotation_map")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Probes: readiness GETs the health path; liveness, set with it, only
    /// checks that the port accepts connections, so a pod whose health
    /// depends on the database leaves its Service while the database is
    /// away instead of being restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// The UID the container runs as. Pods always run as a non-root user
    /// (Pod Security `restricted`): set this when the image's user is root
    /// or a name the kubelet cannot check as non-root, e.g. 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 1", "message": "must be at least 1: the operator's pods pass Pod Security restricted, which forbids running as root (UID 0)"}]))]
    pub run_as_user: Option<i64>,
}

fn default_frontend_port() -> i32 {
    3000
}

fn default_api_url_env() -> String {
    "REACT_APP_API_URL".to_owned()
}

/// Compute resources of a container: cpu, memory and ephemeral-storage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(!has(self.requests) || self.requests.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])) && (!has(self.limits) || self.limits.all(k, k in ['cpu', 'memory', 'ephemeral-storage']))",
        "message": "resources may set cpu, memory and ephemeral-storage",
    },
    {
        "rule": format!(
            "(!has(self.requests) || self.requests.all(k, k == 'cpu' || {})) && (!has(self.limits) || self.limits.all(k, k == 'cpu' || {}))",
            whole_bytes("self.requests[k]"),
            whole_bytes("self.limits[k]"),
        ),
        "message": "memory and ephemeral-storage must be whole numbers of bytes, less than 8Pi",
    },
    {
        "rule": "(!has(self.requests) || self.requests.all(k, !quantity(string(self.requests[k])).isLessThan(quantity('0')))) && (!has(self.limits) || self.limits.all(k, !quantity(string(self.limits[k])).isLessThan(quantity('0'))))",
        "message": "resources must not be negative",
    },
    {
        "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
        "message": "resources.requests must not exceed resources.limits",
    },
]))]
pub struct Resources {
    /// Minimum resources, e.g. {cpu: 100m, memory: 256Mi}: cpu, memory and
    /// ephemeral-storage, each at most its limit; memory and
    /// ephemeral-storage in whole bytes.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("nullable" = true, "maxProperties" = 3))]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum resources, e.g. {memory: 512Mi}: cpu, memory and
    /// ephemeral-storage; memory and ephemeral-storage in whole bytes.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("nullable" = true, "maxProperties" = 3))]
    pub limits: BTreeMap<String, Quantity>,
}

/// The HTTP health check of the readiness probe (liveness checks the port).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HealthSpec {
    /// Absolute HTTP path answering 200 when healthy, e.g. /health.
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(regex(pattern = r"^/[^\s?#\x7f-\x84\x86-\x9f\x{fffe}\x{ffff}]*$"))]
    pub path: String,
}

/// The backend's Prometheus metrics endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricsSpec {
    /// Absolute HTTP path of the metrics endpoint.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(regex(pattern = r"^/[^\s?#\x7f-\x84\x86-\x9f\x{fffe}\x{ffff}]*$"))]
    pub path: String,
    /// Scrape interval, a Prometheus duration such as 30s or 1m.
    #[serde(default = "default_metrics_interval")]
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    #[schemars(length(min = 1, max = 32))]
    pub interval: String,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn default_metrics_interval() -> String {
    "30s".to_owned()
}

/// One environment variable: exactly one of `value`, `generate` or `valueFrom`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.value), has(self.generate), has(self.valueFrom)].filter(x, x).size() == 1").message("exactly one of value, generate or valueFrom must be set"))]
#[x_kube(validation = Rule::new("!(self.name in ['DATABASE_URL', 'DB_POOL_SIZE', 'DB_POOL_TIMEOUT'])").message("name must not be DATABASE_URL, DB_POOL_SIZE or DB_POOL_TIMEOUT, which the operator sets itself").field_path(".name"))]
#[serde(rename_all = "camelCase")]
pub struct EnvEntry {
    /// Variable name: letters, digits and '_', not starting with a digit.
    #[schemars(length(min = 1, max = 128))]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// A plain value, stored in ConfigMap `<stack>-env` (all plain values
    /// together hold at most 250,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 250000), regex(pattern = APPLICABLE_TEXT))]
    pub value: Option<String>,
    /// A random secret generated once, stored in Secret `<stack>-env` and
    /// never regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,
    /// A value copied from another Secret into Secret `<stack>-env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvValueFrom>,
}

/// How to generate a secret value: characters drawn uniformly from A-Z,
/// a-z and 0-9 (safe in URLs, shells and YAML) by the operating system's
/// cryptographic random number generator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GenerateSpec {
    /// Number of characters, 16 to 256. The default, 43, carries 256 bits
    /// of entropy (each character about 5.95 bits).
    #[serde(default = "default_generate_length")]
    #[schemars(range(min = 16, max = 256))]
    pub length: i32,
}

/// Length of a generated value when the spec does not say: 43 characters
/// of the generated values' alphabet (62 characters) carry 256 bits of
/// entropy.
pub const DEFAULT_GENERATED_LENGTH: usize = 43;

fn default_generate_length() -> i32 {
    DEFAULT_GENERATED_LENGTH as i32
}

/// Where a referenced value comes from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvValueFrom {
    /// A key of a Secret in the stack's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// Prometheus Operator monitoring.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor `<stack>-backend` for the backend's metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

/// The backend ServiceMonitor.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor (when the monitoring.coreos.com API is served).
    #[serde(default)]
    pub enabled: bool,
    /// Labels on the ServiceMonitor, e.g. {release: prometheus} to match a
    /// Prometheus serviceMonitorSelector.
    /// At most 64, with keys and values Kubernetes allows on a label.
    #[serde(
        default,
        deserialize_with = "empty_if_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "label_map")]
    pub labels: BTreeMap<String, String>,
}

/// A Kubernetes quantity such as 100m, 256Mi or 10Gi (numbers are accepted too).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Quantity(#[serde(deserialize_with = "quantity_from_string_or_number")] pub String);

fn quantity_from_string_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Integer(i64),
        Float(f64),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Text(text) => text,
        Raw::Integer(number) => number.to_string(),
        Raw::Float(number) => number.to_string(),
    })
}

/// A CEL check that the quantity `value` (an expression) is a whole number
/// of bytes below 8Pi (2^53). `isInteger` alone refuses integers written
/// with a fraction and a binary suffix (0.5Gi), so those are compared
/// exactly with the whole numbers next to their approximate value: the
/// approximation alone holds no fraction past 2^52 (6578.347Ti would pass),
/// while the API server counts bytes in thousandths and warns of any
/// fraction.
fn whole_bytes(value: &str) -> String {
    let quantity = format!("quantity(string({value}))");
    format!(
        "{quantity}.isLessThan(quantity('8Pi')) && ({quantity}.isInteger() || [-1, 0, 1].exists(d, {quantity}.compareTo(quantity('0').add(int({quantity}.asApproximateFloat()) + d)) == 0))"
    )
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A Kubernetes quantity such as 100m, 256Mi or 10Gi.",
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-int-or-string": true
        })
    }
}

/// What the operator observed and did, in the kstatus convention: exactly one
/// of Ready, Reconciling or Stalled is True.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppStackStatus {
    /// The metadata.generation this status describes; -1 until the operator
    /// has seen the stack.
    #[serde(default)]
    pub observed_generation: i64,
    /// Ready; Reconciling or Stalled while True (absent means False, as
    /// kstatus reads them); the component conditions SecretsReady,
    /// DatabaseReady, MigrationsApplied, BackendAvailable, FrontendAvailable,
    /// ExposeReady and MonitoringReady; and MigrationApproved, BackupReady
    /// and PostDeployApplied when the spec asks for approval, a backup or a
    /// post-deploy step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The migration revision the spec asks for and the last one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// The stack's public URL when spec.expose is set: https://<host>, or
    /// http://<host> without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the env entries whose values the operator generated into
    /// Secret `<stack>-env`. One listed here but missing from the Secret was
    /// lost (the Secret deleted, or the key removed, by someone else): it is
    /// generated anew, with a Warning Event GeneratedSecretLost naming it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated_env: Vec<String>,
}

/// Migration progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// Revision hash the current spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Last revision whose migration succeeded; the backend runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// Name of the Job running or last run for the target revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Pods the target revision's Job has started so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// The schema revision read from the database after the applied
    /// revision's Job succeeded: Alembic's alembic_version.version_num, or
    /// what spec.migrations.revisionQuery returns. Absent while unknown; the
    /// MigrationsApplied condition then says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_revision: Option<String>,
    /// The schema revision each applied migration revision left (after its
    /// post-deploy step, if any), oldest first, at most 10: what the
    /// rollback guard compares with the database's current schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<RevisionRecord>,
    /// The newest backup taken before a migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// The post-deploy revision (a hash of the migration revision and
    /// spec.migrations.postDeploy) whose Job succeeded for the applied
    /// revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy_revision: Option<String>,
}

/// The schema a migration revision left in the database.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// The migration revision.
    pub revision: String,
    /// The schema revision read after it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_revision: Option<String>,
    /// The migration image, which knows that schema: a downgrade from it
    /// runs this image.
    pub image: String,
}

/// A backup the operator took.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The dump's file name in PersistentVolumeClaim `<stack>-backups`, or
    /// the VolumeSnapshot's name: what `kubectl appstack restore --backup`
    /// takes.
    pub name: String,
    /// Dump or Snapshot.
    pub method: String,
    /// The migration revision it was taken before.
    pub revision: String,
    /// The schema revision it holds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_revision: Option<String>,
}

/// The AppStack CustomResourceDefinition as installed in a cluster.
///
/// The derived definition is completed with what the derive cannot say: the
/// status defaults to `{observedGeneration: -1}` so kstatus reads a stack the
/// operator has not seen as in progress.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = AppStack::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|validation| validation.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(status) = schema
            .properties
            .as_mut()
            .and_then(|properties| properties.get_mut("status"))
        {
            status.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({"observedGeneration": -1}),
                ),
            );
        }
        rules_on_the_name_run_on_create_only(schema);
    }
    crd
}

/// The guard before a rule that runs when the stack is created.
const ON_CREATE: &str = "oldSelf.hasValue() || ";

/// A rule as it was written, without the guard that runs it on create only.
pub fn unguarded(rule: &str) -> &str {
    rule.strip_prefix(ON_CREATE)
        .and_then(|rule| rule.strip_prefix('(')?.strip_suffix(')'))
        .unwrap_or(rule)
}

/// The rules of the root, about the stack's name, which no update can
/// change, run on create only: each reads `oldSelf.hasValue() || (rule)`
/// with `optionalOldSelf`. Every other rule runs on every write, status
/// writes included: guarding those with `oldSelf == self` cost the API
/// server more than the rules themselves (the comparison walks the whole
/// value at every level that has a rule; see the performance pages).
fn rules_on_the_name_run_on_create_only(schema: &mut JSONSchemaProps) {
    for rule in schema.x_kubernetes_validations.iter_mut().flatten() {
        if rule.rule.contains("oldSelf") {
            continue;
        }
        rule.rule = format!("{ON_CREATE}({})", rule.rule);
        rule.optional_old_self = Some(true);
    }
}

impl AppStackSpec {
    /// Every key of a Secret in the stack's namespace whose value the stack
    /// reads: the external database URL and every `valueFrom` env entry.
    pub fn referenced_keys(&self) -> impl Iterator<Item = &SecretKeyRef> {
        let database = self
            .database
            .external
            .iter()
            .map(|external| &external.url_secret_ref);
        let env = self
            .env
            .iter()
            .filter_map(|entry| entry.value_from.as_ref())
            .map(|from| &from.secret_key_ref);
        database.chain(env)
    }

    /// The Secrets of [`Self::referenced_keys`].
    pub fn referenced_secrets(&self) -> BTreeSet<&str> {
        self.referenced_keys()
            .map(|reference| reference.name.as_str())
            .collect()
    }
}

/// The CRD as YAML, exactly as `appstack crd` prints it and `crds/` holds it.
pub fn definition_yaml() -> String {
    serde_yaml::to_string(&definition()).expect("the CRD always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/examples/shop.yaml");

    #[test]
    fn committed_crd_matches_the_generated_one() {
        let committed = include_str!("../../crds/appstack.dev_appstacks.yaml");
        assert!(
            committed == definition_yaml(),
            "crds/appstack.dev_appstacks.yaml is stale: run scripts/generate.sh and commit the result"
        );
    }

    #[test]
    fn name_length_rule_matches_the_longest_child_name() {
        let crd = definition_yaml();
        let rule = format!("self.metadata.name.size() <= {MAX_STACK_NAME_LENGTH}");
        assert!(crd.contains(&rule), "the CRD must carry `{rule}`");
        let longest = format!(
            "{}-migrate-{}",
            "a".repeat(MAX_STACK_NAME_LENGTH),
            "0".repeat(MIGRATION_HASH_LENGTH)
        );
        assert_eq!(longest.len(), 63);
    }

    #[test]
    fn referenced_secrets_are_the_external_url_and_value_from_entries() {
        let example: AppStack = serde_yaml::from_str(EXAMPLE).unwrap();
        assert_eq!(
            example.spec.referenced_secrets(),
            BTreeSet::from(["sendgrid"])
        );
        let mut external = example.spec.clone();
        external.database.managed = None;
        external.database.external = Some(ExternalDatabase {
            url_secret_ref: SecretKeyRef {
                name: "db-url".into(),
                key: "url".into(),
            },
        });
        external.env.retain(|entry| entry.value_from.is_none());
        assert_eq!(external.referenced_secrets(), BTreeSet::from(["db-url"]));
    }

    #[test]
    fn null_maps_read_as_empty() {
        let mut stack: serde_json::Value = serde_yaml::from_str(EXAMPLE).unwrap();
        stack["spec"]["backend"]["podLabels"] = serde_json::Value::Null;
        stack["spec"]["backend"]["resources"]["limits"] = serde_json::Value::Null;
        let stack: AppStack = serde_json::from_value(stack).unwrap();
        assert!(stack.spec.backend.pod_labels.is_empty());
        assert!(stack.spec.backend.resources.unwrap().limits.is_empty());
    }

    #[test]
    fn example_parses_with_every_design_field() {
        let stack: AppStack = serde_yaml::from_str(EXAMPLE).unwrap();
        let spec = &stack.spec;
        let managed = spec.database.managed.as_ref().unwrap();
        assert_eq!(managed.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(managed.storage.size, Quantity("10Gi".into()));
        assert_eq!(spec.database.pool.as_ref().unwrap().size, 20);
        assert_eq!(spec.backend.port, 8000);
        assert_eq!(
            spec.backend.resources.as_ref().unwrap().requests["cpu"],
            Quantity("100m".into())
        );
        assert_eq!(
            spec.frontend.as_ref().unwrap().api_url_env,
            "REACT_APP_API_URL"
        );
        assert_eq!(spec.env.len(), 4);
        assert_eq!(spec.env[1].generate.as_ref().unwrap().length, 48);
        assert!(
            spec.monitoring
                .as_ref()
                .unwrap()
                .service_monitor
                .as_ref()
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn omitted_fields_take_their_documented_defaults() {
        let stack: AppStack = serde_yaml::from_str(
            "apiVersion: appstack.dev/v1alpha1\nkind: AppStack\nmetadata: {name: tiny}\n\
             spec: {database: {managed: {}}, backend: {image: app:1}}",
        )
        .unwrap();
        let managed = stack.spec.database.managed.unwrap();
        assert_eq!(managed.image, "postgres:16-alpine");
        assert_eq!(managed.storage.size.0, "10Gi");
        assert_eq!(managed.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(stack.spec.backend.replicas, None, "left to others");
        assert_eq!(stack.spec.backend.port, 8000);
        assert!(stack.spec.frontend.is_none());
    }

    #[test]
    fn numeric_quantities_are_accepted() {
        let resources: Resources =
            serde_yaml::from_str("{requests: {cpu: 1, memory: 0.5}}").unwrap();
        assert_eq!(resources.requests["cpu"].0, "1");
        assert_eq!(resources.requests["memory"].0, "0.5");
    }

    #[test]
    fn status_defaults_to_unobserved_generation() {
        let crd = definition();
        let schema = crd.spec.versions[0].schema.as_ref().unwrap();
        let status = &schema
            .open_api_v3_schema
            .as_ref()
            .unwrap()
            .properties
            .as_ref()
            .unwrap()["status"];
        assert_eq!(
            status.default.as_ref().unwrap().0,
            serde_json::json!({"observedGeneration": -1})
        );
    }
}
