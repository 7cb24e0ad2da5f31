//! Validation: an `AppStack` as read from the API becomes a [`ValidatedStack`],
//! a typed value with every default resolved, which the builders consume.
//!
//! The API server already rejects invalid specs (schema and CEL rules); what
//! is checked here is what the builders rely on and the server cannot know,
//! such as the object having a namespace and a UID.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api::crd::{
    AppStack, AppStackSpec, ApprovalPolicy, BackendSpec, BackupMethod, DeletionPolicy, EnvEntry,
    ExposeSpec, FrontendSpec, GatewayRef, IngressSpec, MIGRATION_HASH_LENGTH, ManagedDatabase,
    MigrationsSpec, NetworkPolicySpec, SecretKeyRef, StorageSpec, TlsSpec,
};

/// Port PostgreSQL listens on in the managed database.
pub const POSTGRES_PORT: i32 = 5432;
/// Pool size when `database.pool` is not given.
pub const DEFAULT_POOL_SIZE: i32 = 20;
/// Pool timeout when `database.pool` is not given.
pub const DEFAULT_POOL_TIMEOUT_SECONDS: i32 = 30;
/// Metrics path when a ServiceMonitor is enabled without `backend.metrics`.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
/// Scrape interval when a ServiceMonitor is enabled without `backend.metrics`.
pub const DEFAULT_METRICS_INTERVAL: &str = "30s";

/// Why an AppStack cannot be built. The spec has to change before it can.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSpec {
    #[error("the AppStack has no {0}")]
    MissingMetadata(&'static str),
    #[error("spec.database must set exactly one of managed or external")]
    DatabaseChoice,
    #[error("spec.env[{name}] must set exactly one of value, generate or valueFrom")]
    EnvChoice { name: String },
    #[error(
        "spec.env[{name}].generate.length must be between {min} and {max} characters, not {length}",
        min = GENERATE_LENGTH.start(),
        max = GENERATE_LENGTH.end()
    )]
    GenerateLength { name: String, length: i32 },
}

/// Lengths a generated value may have, as the CRD schema says
/// (`spec.env[].generate.length`). Checked here too, for `appstack render`,
/// which reads stacks no API server has validated.
pub const GENERATE_LENGTH: std::ops::RangeInclusive<i32> = 16..=256;

/// Where the stack's database lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Database {
    /// A PostgreSQL StatefulSet the operator runs.
    Managed(ManagedDatabase),
    /// A database outside the cluster; its URL is in a Secret the user owns.
    External { url_secret_ref: SecretKeyRef },
}

/// How one env entry gets its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvSource {
    /// A plain value, kept in the `<stack>-env` ConfigMap.
    Plain(String),
    /// A random value of this many characters, generated once into the
    /// `<stack>-env` Secret.
    Generated { length: usize },
    /// A value copied from a Secret the user owns into the `<stack>-env` Secret.
    Referenced(SecretKeyRef),
}

/// One env entry with its source decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub source: EnvSource,
}

/// The migration step with its defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Migration {
    pub spec: MigrationsSpec,
    /// `spec.migrations.image`, or the backend image when empty.
    pub image: String,
    /// What runs and what it is given (image, command, args, env spec,
    /// retry token), as hashed into the revision.
    recipe: serde_json::Value,
}

/// The Job of a step of the migrations: what runs and what it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostDeploy {
    pub command: Vec<String>,
    pub args: Option<Vec<String>>,
    /// How long the new release serves before the step runs.
    pub after: std::time::Duration,
}

/// The backups taken before migrations, with their defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Backups {
    pub keep: usize,
    pub method: BackupMethod,
    /// The dumps' volume (Dump).
    pub storage: StorageSpec,
    pub volume_snapshot_class_name: Option<String>,
}

/// The default `downgradeCommand`: Alembic, to the schema revision the
/// target revision left (`$(...)` is expanded by the kubelet from the
/// container's environment).
pub const DEFAULT_DOWNGRADE_COMMAND: [&str; 3] =
    ["alembic", "downgrade", "$(APPSTACK_TARGET_SCHEMA_REVISION)"];

impl Migration {
    /// The post-deploy step, when the spec has one.
    pub fn post_deploy(&self) -> Option<PostDeploy> {
        let spec = self.spec.post_deploy.as_ref()?;
        Some(PostDeploy {
            command: spec.command.clone(),
            args: spec.args.clone(),
            after: spec
                .after
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or_default(),
        })
    }

    /// The post-deploy revision for migration revision `revision`: a new
    /// one when either changes. The Job's name suffix.
    pub fn post_deploy_revision(&self, revision: &str) -> Option<String> {
        let spec = self.spec.post_deploy.as_ref()?;
        let input = serde_json::json!({
            "revision": revision,
            "command": spec.command,
            "args": spec.args,
        });
        let digest = Sha256::digest(input.to_string().as_bytes());
        Some(hex(&digest)[..MIGRATION_HASH_LENGTH].to_string())
    }

    /// The command taking the schema back under `rollback: Downgrade`.
    pub fn downgrade_command(&self) -> Vec<String> {
        self.spec.downgrade_command.clone().unwrap_or_else(|| {
            DEFAULT_DOWNGRADE_COMMAND
                .iter()
                .map(|part| part.to_string())
                .collect()
        })
    }

    /// Whether a new revision waits for `approvedRevision`.
    pub fn manual_approval(&self) -> bool {
        self.spec.approval == ApprovalPolicy::Manual
    }

    /// The revision of this migration against `database`: the Job's name
    /// suffix and `status.migration.targetRevision`. A new value means a new
    /// Job, so a stack moved to another database migrates it before the
    /// backend follows.
    pub fn revision(&self, database: &DatabaseIdentity) -> String {
        let input = serde_json::json!({
            "migration": self.recipe,
            "database": database,
        });
        let digest = Sha256::digest(input.to_string().as_bytes());
        hex(&digest)[..MIGRATION_HASH_LENGTH].to_string()
    }
}

/// Which database a migration runs against: part of its revision. It names
/// the database, never the credentials, so a rotated password does not run
/// migrations again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseIdentity {
    /// The stack's own managed database, by its database name.
    Managed { database: String },
    /// An external server: host, port and database name from the URL in
    /// the referenced Secret.
    External {
        host: String,
        port: u16,
        database: String,
    },
}

/// An AppStack the builders can turn into children without further checks.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedStack {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub database: Database,
    /// Database name and user.
    pub database_name: String,
    pub pool_size: i32,
    pub pool_timeout_seconds: i32,
    pub migration: Option<Migration>,
    pub backend: BackendSpec,
    pub frontend: Option<FrontendSpec>,
    pub env: Vec<EnvVar>,
    /// ServiceMonitor labels when `monitoring.serviceMonitor.enabled`.
    pub service_monitor_labels: Option<BTreeMap<String, String>>,
    /// The public host and how it is routed, when `spec.expose` is set.
    pub expose: Option<Expose>,
    /// The NetworkPolicy settings, `None` when `networkPolicy.enabled` is false.
    pub network_policy: Option<NetworkPolicySpec>,
}

/// The stack on a public host, with its defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Expose {
    pub host: String,
    /// The backend's path prefix when there is a frontend.
    pub api_path: String,
    pub tls: Option<TlsSpec>,
    pub route: Route,
}

/// What routes the public host to the stack's Services.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Ingress(IngressSpec),
    Gateway(GatewayRef),
}

impl Expose {
    fn new(spec: &ExposeSpec) -> Self {
        let route = match (&spec.ingress, &spec.gateway) {
            (_, Some(gateway)) => Route::Gateway(gateway.clone()),
            (ingress, None) => Route::Ingress(ingress.clone().unwrap_or_default()),
        };
        Self {
            host: spec.host.clone(),
            api_path: spec.api_path.clone(),
            tls: spec.tls.clone(),
            route,
        }
    }

    /// The stack's public URL: `https://<host>`, `http://` without TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The backend's public URL when the frontend is served at `/`.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.url(), self.api_path)
    }
}

impl ValidatedStack {
    /// Validates a stack read from the API server.
    pub fn new(stack: &AppStack) -> Result<Self, InvalidSpec> {
        let meta = &stack.metadata;
        let name = meta
            .name
            .clone()
            .ok_or(InvalidSpec::MissingMetadata("name"))?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or(InvalidSpec::MissingMetadata("namespace"))?;
        let uid = meta
            .uid
            .clone()
            .ok_or(InvalidSpec::MissingMetadata("uid"))?;
        Self::from_parts(
            name,
            namespace,
            uid,
            meta.generation.unwrap_or(0),
            &stack.spec,
        )
    }

    /// Validates a spec with identity given by the caller (`appstack render`
    /// has no API server to assign a UID).
    pub fn from_parts(
        name: String,
        namespace: String,
        uid: String,
        generation: i64,
        spec: &AppStackSpec,
    ) -> Result<Self, InvalidSpec> {
        let database = match (&spec.database.managed, &spec.database.external) {
            (Some(managed), None) => Database::Managed(managed.clone()),
            (None, Some(external)) => Database::External {
                url_secret_ref: external.url_secret_ref.clone(),
            },
            _ => return Err(InvalidSpec::DatabaseChoice),
        };
        let env = spec
            .env
            .iter()
            .map(env_var)
            .collect::<Result<Vec<_>, _>>()?;
        let database_name = spec
            .database
            .name
            .clone()
            .unwrap_or_else(|| name.replace('-', "_"));
        let (pool_size, pool_timeout_seconds) = spec
            .database
            .pool
            .as_ref()
            .map_or((DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT_SECONDS), |pool| {
                (pool.size, pool.timeout_seconds)
            });
        let migration = spec.migrations.as_ref().map(|migrations| {
            let image = migrations
                .image
                .clone()
                .filter(|image| !image.is_empty())
                .unwrap_or_else(|| spec.backend.image.clone());
            let run_as_user = migrations.run_as_user.or(spec.backend.run_as_user);
            let recipe = migration_recipe(&image, run_as_user, migrations, &spec.env);
            Migration {
                spec: migrations.clone(),
                image,
                recipe,
            }
        });
        let service_monitor_labels = spec
            .monitoring
            .as_ref()
            .and_then(|monitoring| monitoring.service_monitor.as_ref())
            .filter(|service_monitor| service_monitor.enabled)
            .map(|service_monitor| service_monitor.labels.clone());
        let network_policy =
            Some(spec.network_policy.clone().unwrap_or_default()).filter(|policy| policy.enabled);
        Ok(Self {
            name,
            namespace,
            uid,
            generation,
            database,
            database_name,
            pool_size,
            pool_timeout_seconds,
            migration,
            backend: spec.backend.clone(),
            frontend: spec.frontend.clone(),
            env,
            service_monitor_labels,
            expose: spec.expose.as_ref().map(Expose::new),
            network_policy,
        })
    }

    /// The identity of the managed database; `None` for an external one,
    /// whose identity comes from the URL in its Secret
    /// ([`crate::database::url::DatabaseUrl::identity`]).
    pub fn managed_database_identity(&self) -> Option<DatabaseIdentity> {
        match self.database {
            Database::Managed(_) => Some(DatabaseIdentity::Managed {
                database: self.database_name.clone(),
            }),
            Database::External { .. } => None,
        }
    }

    /// The migration revision against `database`; `None` without
    /// `spec.migrations`.
    pub fn migration_revision(&self, database: &DatabaseIdentity) -> Option<String> {
        self.migration
            .as_ref()
            .map(|migration| migration.revision(database))
    }

    /// The backups before migrations, when asked for (managed database
    /// only: the CRD refuses them for an external one).
    pub fn backups(&self) -> Option<Backups> {
        let Database::Managed(managed) = &self.database else {
            return None;
        };
        let spec = self
            .migration
            .as_ref()?
            .spec
            .backup
            .as_ref()
            .filter(|backup| backup.enabled)?;
        Some(Backups {
            keep: usize::try_from(spec.keep.max(1)).unwrap_or(1),
            method: spec.method,
            storage: spec
                .storage
                .clone()
                .unwrap_or_else(|| managed.storage.clone()),
            volume_snapshot_class_name: spec.volume_snapshot_class_name.clone(),
        })
    }

    /// Names of the env entries the operator generates, sorted.
    pub fn generated_env_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .env
            .iter()
            .filter(|var| matches!(var.source, EnvSource::Generated { .. }))
            .map(|var| var.name.clone())
            .collect();
        names.sort();
        names
    }

    /// The database PVC and `<stack>-db` Secret outlive the stack unless the
    /// user chose `deletionPolicy: Delete`.
    pub fn deletes_database_with_stack(&self) -> bool {
        matches!(
            &self.database,
            Database::Managed(managed) if managed.deletion_policy == DeletionPolicy::Delete
        )
    }
}

fn env_var(entry: &EnvEntry) -> Result<EnvVar, InvalidSpec> {
    let source = match (&entry.value, &entry.generate, &entry.value_from) {
        (Some(value), None, None) => EnvSource::Plain(value.clone()),
        (None, Some(generate), None) => EnvSource::Generated {
            length: GENERATE_LENGTH
                .contains(&generate.length)
                .then(|| usize::try_from(generate.length).ok())
                .flatten()
                .ok_or_else(|| InvalidSpec::GenerateLength {
                    name: entry.name.clone(),
                    length: generate.length,
                })?,
        },
        (None, None, Some(value_from)) => EnvSource::Referenced(value_from.secret_key_ref.clone()),
        _ => {
            return Err(InvalidSpec::EnvChoice {
                name: entry.name.clone(),
            });
        }
    };
    Ok(EnvVar {
        name: entry.name.clone(),
        source,
    })
}

/// What a migration revision covers besides the database: what can change
/// the outcome of a run — what runs (image, command, args), the environment
/// it is given (the env spec, not resolved secret values) — and the retry
/// token the user changes to re-run a failed revision.
fn migration_recipe(
    image: &str,
    run_as_user: Option<i64>,
    migrations: &MigrationsSpec,
    env: &[EnvEntry],
) -> serde_json::Value {
    let mut recipe = serde_json::json!({
        "image": image,
        "command": migrations.command,
        "args": migrations.args,
        "env": env,
        "retryToken": migrations.retry_token.clone().unwrap_or_default(),
    });
    // The user decides whether the Job's pod can start at all: an image that
    // runs as root under runAsNonRoot never does (the kubelet refuses it,
    // and the Job waits out its deadline). Setting the user must replace
    // that Job, and a Job is never patched: the user is part of the
    // revision. Only when set, so a stack without it keeps its revision.
    if let Some(user) = run_as_user {
        recipe["runAsUser"] = user.into();
    }
    recipe
}

/// A duration as `postDeploy.after` writes it (`30s`, `10m`, `1h30m`, as
/// Go and the CRD's CEL `duration()` read them), in jiff's friendly format.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let parsed: k8s_openapi::jiff::SignedDuration = text.parse().ok()?;
    std::time::Duration::try_from(parsed).ok()
}

/// Lower-case hex of a byte string (hashes, ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The design example with a namespace and UID, as the API server would
    /// return it.
    pub(crate) fn example() -> ValidatedStack {
        from_yaml(include_str!("../../deploy/examples/shop.yaml"))
    }

    /// The design example's YAML with `fields` (lines indented as fields
    /// of `spec.migrations`) added to its migrations.
    pub(crate) fn example_yaml_with_migrations(fields: &str) -> String {
        const LAST: &str = "    retryToken: \"\"\n";
        let yaml = include_str!("../../deploy/examples/shop.yaml");
        assert!(
            yaml.contains(LAST),
            "the example's migrations end with retryToken"
        );
        yaml.replace(LAST, &format!("{LAST}{fields}"))
    }

    /// The design example with `fields` added to its migrations.
    pub(crate) fn example_with_migrations(fields: &str) -> ValidatedStack {
        from_yaml(&example_yaml_with_migrations(fields))
    }

    pub(crate) fn from_yaml(yaml: &str) -> ValidatedStack {
        let stack: AppStack = serde_yaml::from_str(yaml).expect("example parses");
        ValidatedStack::from_parts(
            stack.metadata.name.clone().unwrap(),
            "prod".into(),
            "0b5c6f0e-8a7e-4b1e-9d3c-2f1a0c9e7d11".into(),
            3,
            &stack.spec,
        )
        .expect("example is valid")
    }

    #[test]
    fn defaults_are_resolved() {
        let stack = example();
        assert_eq!(stack.database_name, "shop");
        assert_eq!((stack.pool_size, stack.pool_timeout_seconds), (20, 30));
        let migration = stack.migration.clone().expect("example has migrations");
        assert_eq!(
            migration.image, stack.backend.image,
            "defaults to backend image"
        );
        let identity = stack.managed_database_identity().unwrap();
        assert_eq!(
            identity,
            DatabaseIdentity::Managed {
                database: "shop".into()
            }
        );
        assert_eq!(migration.revision(&identity).len(), MIGRATION_HASH_LENGTH);
        assert!(
            !stack.deletes_database_with_stack(),
            "Retain is the default"
        );
    }

    #[test]
    fn a_generate_length_outside_the_schema_is_rejected() {
        let with_length = |length: &str| {
            let yaml = include_str!("../../deploy/examples/shop.yaml").replace(
                "generate: {length: 48}",
                &format!("generate: {{length: {length}}}"),
            );
            let stack: AppStack = serde_yaml::from_str(&yaml).unwrap();
            ValidatedStack::from_parts("shop".into(), "prod".into(), "u".into(), 1, &stack.spec)
        };
        for length in ["-1", "0", "15", "257", "2147483647"] {
            assert_eq!(
                with_length(length).unwrap_err().to_string(),
                format!(
                    "spec.env[SECRET_KEY].generate.length must be between 16 and 256 characters, not {length}"
                )
            );
        }
        for length in ["16", "256"] {
            assert!(with_length(length).is_ok(), "{length}");
        }
        // The same bounds as the CRD schema, which the API server applies.
        let crd = serde_json::to_value(crate::api::crd::definition()).unwrap();
        let length = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["env"]["items"]["properties"]["generate"]["properties"]["length"];
        assert_eq!(
            (length["minimum"].as_f64(), length["maximum"].as_f64()),
            (
                Some(f64::from(*GENERATE_LENGTH.start())),
                Some(f64::from(*GENERATE_LENGTH.end()))
            )
        );
    }

    #[test]
    fn soak_durations_read_as_the_crd_writes_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        for bad in ["", "m", "10x", "-1m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn managed_revision(stack: &ValidatedStack) -> String {
        let identity = stack.managed_database_identity().unwrap();
        stack.migration_revision(&identity).unwrap()
    }

    #[test]
    fn revision_changes_with_what_a_migration_depends_on_only() {
        let base = example();
        let revision = managed_revision;
        let mut spec: AppStack =
            serde_yaml::from_str(include_str!("../../deploy/examples/shop.yaml")).unwrap();
        let rebuild = |spec: &AppStack| {
            ValidatedStack::from_parts("shop".into(), "prod".into(), "u".into(), 1, &spec.spec)
                .unwrap()
        };
        assert_eq!(
            revision(&rebuild(&spec)),
            revision(&base),
            "identity-independent"
        );

        spec.spec.backend.replicas = Some(7);
        spec.spec.frontend.as_mut().unwrap().image = "other:1".into();
        assert_eq!(
            revision(&rebuild(&spec)),
            revision(&base),
            "replicas, frontend"
        );

        let mut bumped = spec.clone();
        bumped.spec.backend.image = "ghcr.io/acme/shop-backend:1.5.0".into();
        assert_ne!(revision(&rebuild(&bumped)), revision(&base), "image");

        let mut retried = spec.clone();
        retried.spec.migrations.as_mut().unwrap().retry_token = Some("again".into());
        assert_ne!(revision(&rebuild(&retried)), revision(&base), "retry token");

        let mut env_changed = spec.clone();
        env_changed.spec.env[0].value = Some("DEBUG".into());
        assert_ne!(revision(&rebuild(&env_changed)), revision(&base), "env");

        // A Job whose pod the kubelet refused (a root image) is replaced
        // once the user is set, on the migration or the backend it
        // defaults to.
        let mut backend_user = spec.clone();
        backend_user.spec.backend.run_as_user = Some(10001);
        let with_user = revision(&rebuild(&backend_user));
        assert_ne!(with_user, revision(&base), "the backend's runAsUser");
        let mut migration_user = spec.clone();
        migration_user.spec.migrations.as_mut().unwrap().run_as_user = Some(10001);
        assert_eq!(
            revision(&rebuild(&migration_user)),
            with_user,
            "the migration runs as the same user either way"
        );
        let mut frontend_user = spec.clone();
        frontend_user.spec.frontend.as_mut().unwrap().run_as_user = Some(101);
        assert_eq!(
            revision(&rebuild(&frontend_user)),
            revision(&base),
            "the frontend's user"
        );
    }

    #[test]
    fn revision_follows_the_database_but_not_its_credentials() {
        let stack = example();
        let migration = stack.migration.as_ref().unwrap();
        let external = |host: &str, port: u16, database: &str| DatabaseIdentity::External {
            host: host.into(),
            port,
            database: database.into(),
        };
        let managed = managed_revision(&stack);
        let primary = migration.revision(&external("db.example.com", 5432, "shop"));
        assert_ne!(primary, managed, "managed -> external is a new revision");
        for other in [
            external("db2.example.com", 5432, "shop"),
            external("db.example.com", 6432, "shop"),
            external("db.example.com", 5432, "shop_v2"),
        ] {
            assert_ne!(migration.revision(&other), primary, "{other:?}");
        }
        assert_eq!(
            migration.revision(&external("db.example.com", 5432, "shop")),
            primary,
            "the identity holds no password, so a rotation keeps the revision"
        );
        let renamed = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace("    name: shop\n", "    name: shop_v2\n"),
        );
        assert_ne!(
            managed_revision(&renamed),
            managed,
            "another managed database name"
        );
    }
}
