//! The condition vocabulary: the types and reasons the status, Events,
//! metrics and docs speak, and [`Check`], one part of a stack as a
//! condition will say it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::crd::{AppStack, AppStackStatus};

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const SECRETS_READY: &str = "SecretsReady";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const MIGRATION_APPROVED: &str = "MigrationApproved";
    pub const BACKUP_READY: &str = "BackupReady";
    pub const MIGRATIONS_APPLIED: &str = "MigrationsApplied";
    pub const BACKEND_AVAILABLE: &str = "BackendAvailable";
    pub const FRONTEND_AVAILABLE: &str = "FrontendAvailable";
    pub const EXPOSE_READY: &str = "ExposeReady";
    pub const MONITORING_READY: &str = "MonitoringReady";
    pub const POST_DEPLOY_APPLIED: &str = "PostDeployApplied";
}

/// Condition reasons.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRETS_RESOLVED: &str = "SecretsResolved";
    /// A Secret an env entry's `valueFrom` names does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The Secret exists but lacks the key.
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    /// The value is not UTF-8 text (or holds a NUL byte), which an
    /// environment variable must be.
    pub const SECRET_VALUE_NOT_TEXT: &str = "SecretValueNotText";
    /// The Secret holds a token of the cluster (a ServiceAccount or
    /// bootstrap token), which is never copied.
    pub const SECRET_TYPE_NOT_ALLOWED: &str = "SecretTypeNotAllowed";
    /// A Secret of the stack's own name (`<stack>-env`, `<stack>-db`) is of
    /// another type, so it is someone else's.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// Generated values were lost (their Secret deleted or edited) and
    /// generated anew; `SecretsReady` says so until the spec changes.
    pub const GENERATED_SECRET_LOST: &str = "GeneratedSecretLost";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const DATABASE_STARTING: &str = "DatabaseStarting";
    pub const EXTERNAL_DATABASE: &str = "ExternalDatabase";
    pub const WAITING_FOR_SECRETS: &str = "WaitingForSecrets";
    pub const WAITING_FOR_DATABASE: &str = "WaitingForDatabase";
    pub const MIGRATION_SUCCEEDED: &str = "MigrationSucceeded";
    pub const MIGRATION_RUNNING: &str = "MigrationRunning";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const NO_MIGRATIONS: &str = "NoMigrations";
    pub const WAITING_FOR_MIGRATION: &str = "WaitingForMigration";

    // Approval (MigrationApproved).
    /// `approval: Automatic`, or nothing to migrate.
    pub const APPROVAL_NOT_REQUIRED: &str = "ApprovalNotRequired";
    /// `approvedRevision` names the target revision.
    pub const APPROVED: &str = "Approved";
    /// `approval: Manual` and the target revision is not approved.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";

    // Backups (BackupReady).
    /// No backup asked for, or none needed (nothing migrates).
    pub const BACKUP_NOT_REQUIRED: &str = "BackupNotRequired";
    pub const BACKUP_RUNNING: &str = "BackupRunning";
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    pub const BACKUP_FAILED: &str = "BackupFailed";
    pub const WAITING_FOR_BACKUP: &str = "WaitingForBackup";

    // The rollback guard (MigrationsApplied, BackendAvailable).
    /// The target revision's schema is behind the database's and
    /// `rollback` is Block.
    pub const ROLLBACK_BLOCKED: &str = "RollbackBlocked";
    /// The schema goes back (`rollback: Downgrade`).
    pub const DOWNGRADE_RUNNING: &str = "DowngradeRunning";
    pub const DOWNGRADE_FAILED: &str = "DowngradeFailed";
    /// The backend moved back and the schema stayed ahead
    /// (`rollback: AllowSchemaAhead`).
    pub const SCHEMA_AHEAD: &str = "SchemaAhead";
    /// The database's schema revision could not be read, and the guard
    /// needs it to decide.
    pub const SCHEMA_UNKNOWN: &str = "SchemaUnknown";

    // The post-deploy (contract) step (PostDeployApplied).
    pub const POST_DEPLOY_NOT_CONFIGURED: &str = "NoPostDeploy";
    /// Waiting for every replica of the new release and no old pod.
    pub const WAITING_FOR_ROLLOUT: &str = "WaitingForRollout";
    /// The new release is fully rolled out; `postDeploy.after` runs out.
    pub const SOAKING: &str = "Soaking";
    pub const POST_DEPLOY_RUNNING: &str = "PostDeployRunning";
    pub const POST_DEPLOY_SUCCEEDED: &str = "PostDeploySucceeded";
    pub const POST_DEPLOY_FAILED: &str = "PostDeployFailed";
    pub const WAITING_FOR_POST_DEPLOY: &str = "WaitingForPostDeploy";
    pub const AVAILABLE: &str = "Available";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    pub const WAITING_FOR_BACKEND: &str = "WaitingForBackend";
    pub const WAITING_FOR_FRONTEND: &str = "WaitingForFrontend";
    pub const WAITING_FOR_EXPOSURE: &str = "WaitingForExposure";
    pub const WAITING_FOR_MONITORING: &str = "WaitingForMonitoring";
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    pub const SERVICE_MONITOR_READY: &str = "ServiceMonitorReady";
    pub const CRD_NOT_INSTALLED: &str = "CRDNotInstalled";
    pub const DISABLED: &str = "Disabled";
    pub const INGRESS_READY: &str = "IngressReady";
    pub const INGRESS_PENDING: &str = "IngressPending";
    pub const ROUTE_ACCEPTED: &str = "RouteAccepted";
    pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
    pub const ROUTE_REFS_UNRESOLVED: &str = "RouteRefsUnresolved";
    pub const WAITING_FOR_GATEWAY: &str = "WaitingForGateway";

    // DatabaseReady reasons for a database the operator cannot use. The
    // reconcile retries them with a growing delay; a change of the
    // referenced Secret retries at once.
    /// The Secret named by `database.external.urlSecretRef` does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// The Secret exists but lacks the key.
    pub const KEY_MISSING: &str = "KeyMissing";
    /// The value is not a PostgreSQL URL the operator can use.
    pub const INVALID_URL: &str = "InvalidURL";
    /// The URL's host name does not resolve.
    pub const HOST_NOT_FOUND: &str = "HostNotFound";
    /// Nothing listens on the URL's host and port.
    pub const CONNECTION_REFUSED: &str = "ConnectionRefused";
    /// The server rejected the user or password.
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    /// The server has no database of the URL's name.
    pub const DATABASE_MISSING: &str = "DatabaseMissing";
    /// TLS could not be set up as the URL's `sslmode` asks.
    pub const TLS_FAILED: &str = "TLSFailed";
    /// No answer within the connect or statement timeout.
    pub const TIMEOUT: &str = "Timeout";
    /// Any other failure to connect or to run `SELECT 1`.
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
    /// Secret `<stack>-db` is gone but the database volume made with its
    /// credentials is not: the operator generates none (they would not be
    /// accepted) and waits for the Secret to be restored or the volume
    /// deleted.
    pub const CREDENTIALS_LOST: &str = "CredentialsLost";

    /// Every reason above: the database cannot be used.
    pub const DATABASE_UNUSABLE: [&str; 11] = [
        SECRET_MISSING,
        KEY_MISSING,
        INVALID_URL,
        HOST_NOT_FOUND,
        CONNECTION_REFUSED,
        AUTHENTICATION_FAILED,
        DATABASE_MISSING,
        TLS_FAILED,
        TIMEOUT,
        CONNECTION_FAILED,
        CREDENTIALS_LOST,
    ];

    /// The reasons a condition passes through while the stack moves
    /// forward on its own. A status whose conditions change only among
    /// these is progress, written at most every few seconds
    /// (`reconcile::status::Difference`); any other reason is written at
    /// once.
    pub const PROGRESS: [&str; 37] = [
        READY,
        SECRETS_RESOLVED,
        WAITING_FOR_SECRETS,
        DATABASE_READY,
        DATABASE_STARTING,
        EXTERNAL_DATABASE,
        WAITING_FOR_DATABASE,
        MIGRATION_SUCCEEDED,
        MIGRATION_RUNNING,
        NO_MIGRATIONS,
        WAITING_FOR_MIGRATION,
        AVAILABLE,
        ROLLING_OUT,
        WAITING_FOR_BACKEND,
        WAITING_FOR_FRONTEND,
        WAITING_FOR_EXPOSURE,
        WAITING_FOR_MONITORING,
        NOT_CONFIGURED,
        SERVICE_MONITOR_READY,
        DISABLED,
        INGRESS_PENDING,
        INGRESS_READY,
        WAITING_FOR_GATEWAY,
        APPROVAL_NOT_REQUIRED,
        APPROVED,
        WAITING_FOR_APPROVAL,
        BACKUP_NOT_REQUIRED,
        BACKUP_RUNNING,
        BACKUP_SUCCEEDED,
        WAITING_FOR_BACKUP,
        DOWNGRADE_RUNNING,
        POST_DEPLOY_NOT_CONFIGURED,
        WAITING_FOR_ROLLOUT,
        SOAKING,
        POST_DEPLOY_RUNNING,
        POST_DEPLOY_SUCCEEDED,
        WAITING_FOR_POST_DEPLOY,
    ];

    // Why a component's pods cannot run, in the kubelet's and the
    // scheduler's words (see `reconcile::pods`).
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// A container runs but its readiness probe fails.
    pub const NOT_READY: &str = "NotReady";

    /// Every reason above: a pod of the component cannot run.
    pub const POD_TROUBLE: [&str; 11] = [
        INVALID_IMAGE_NAME,
        ERR_IMAGE_NEVER_PULL,
        ERR_IMAGE_PULL,
        IMAGE_PULL_BACK_OFF,
        CREATE_CONTAINER_CONFIG_ERROR,
        CREATE_CONTAINER_ERROR,
        RUN_CONTAINER_ERROR,
        CRASH_LOOP_BACK_OFF,
        OOM_KILLED,
        UNSCHEDULABLE,
        NOT_READY,
    ];

    // Reasons of Events that are not condition reasons.
    pub const SECRET_GENERATED: &str = "SecretGenerated";
    pub const MIGRATION_STARTED: &str = "MigrationStarted";
    pub const BACKUP_STARTED: &str = "BackupStarted";
    pub const DOWNGRADE_STARTED: &str = "DowngradeStarted";
    pub const POST_DEPLOY_STARTED: &str = "PostDeployStarted";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const STACK_READY: &str = "StackReady";
    pub const EXPOSED: &str = "Exposed";
    pub const DELETED: &str = "Deleted";
}

/// The state of one part of the stack, as a condition will say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
    /// Failed for good: nothing changes until the spec does (the stack is
    /// Stalled).
    pub terminal: bool,
}

impl Check {
    pub fn ok(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
            terminal: false,
        }
    }

    pub fn pending(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
            terminal: false,
        }
    }

    /// A failure that only a spec change can end.
    pub fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            terminal: true,
            ..Self::pending(reason, message)
        }
    }
}

/// The condition of a type in a status.
pub fn condition<'a>(status: Option<&'a AppStackStatus>, type_: &str) -> Option<&'a Condition> {
    status?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// The conditions stacks are counted by.
pub const STACK_CONDITIONS: [&str; 4] =
    [types::READY, types::RECONCILING, types::STALLED, "Unknown"];

/// Which of `Ready`, `Reconciling`, `Stalled` the stack holds `True`, or
/// `Unknown`.
pub fn holding(stack: &AppStack) -> &'static str {
    let current = stack.status.as_ref();
    STACK_CONDITIONS[..3]
        .iter()
        .find(|type_| condition(current, type_).is_some_and(|c| c.status == "True"))
        .copied()
        .unwrap_or(STACK_CONDITIONS[3])
}
