//! What the operator knows about a stack's database from talking to it.
//!
//! - [`url`]: a PostgreSQL URL parsed into the database's identity (which a
//!   migration revision covers), connect options and a redacted display.
//! - [`probe`]: connect with bounded timeouts, `SELECT 1`, close; failures
//!   classified into `DatabaseReady` reasons.
//! - [`schema`]: the schema revision a migration left behind.
//!
//! This module ties them to a stack: [`locate`] finds the database from the
//! spec and the Secrets a reconcile read, and [`Databases`] decides, per
//! `--database-checks`, whether to connect, and paces the retries of a
//! database that cannot be used.

pub mod probe;
pub mod schema;
pub mod url;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tracing::debug;

use crate::api::conditions::{self, Check, reasons, types};
use crate::api::crd::AppStackStatus;
use crate::api::stack::{Database, DatabaseIdentity, ValidatedStack};
use crate::children::database_name;
use crate::runtime::metrics::Metrics;
use crate::secrets::{ObservedSecrets, SecretValues, db_keys};
pub use probe::{Failure, Limits};
pub use schema::SchemaRevision;
pub use url::DatabaseUrl;

/// Which databases the operator connects to (`--database-checks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DatabaseChecks {
    /// The managed database through its `<stack>-db` Service, and external
    /// ones: for an operator running in the cluster.
    #[default]
    All,
    /// External databases only: for an operator that cannot reach the pod
    /// network, such as one on a workstation or a local control plane.
    External,
    /// None: readiness comes from the StatefulSet alone, and an external
    /// URL is only parsed.
    None,
}

impl DatabaseChecks {
    /// The flag as written, for messages.
    pub fn flag(self) -> &'static str {
        match self {
            Self::All => "--database-checks=all",
            Self::External => "--database-checks=external",
            Self::None => "--database-checks=none",
        }
    }
}

/// A stack's database as far as the operator can tell without connecting.
#[derive(Clone, Debug)]
pub struct Located {
    /// What the migration revision covers.
    pub identity: DatabaseIdentity,
    /// Whether the operator runs this database.
    pub managed: bool,
    /// Where the URL comes from, for messages: `Secret "prod-db" key
    /// "DATABASE_URL"`.
    pub source: String,
    /// The URL the operator connects with. For the managed database the
    /// generated `<stack>-db` Secret's, which fails to parse only when
    /// someone edited it.
    pub url: Result<DatabaseUrl, Failure>,
}

/// Finds a stack's database: the managed one, or the one the URL in the
/// referenced Secret names. An external database whose Secret, key or URL
/// is unusable is a [`Failure`] with `SecretMissing`, `KeyMissing` or
/// `InvalidURL`.
pub fn locate(
    stack: &ValidatedStack,
    observed: &ObservedSecrets,
    values: &SecretValues,
) -> Result<Located, Failure> {
    let invalid = |source: &str, error: url::UrlError| {
        Failure::new(
            reasons::INVALID_URL,
            format!(
                "the value of {source} is not a usable PostgreSQL URL: {error}; expected \
                 postgresql://user:password@host:5432/database?sslmode=require"
            ),
        )
    };
    match &stack.database {
        Database::Managed(_) => {
            let source = format!(
                "Secret {:?} key {:?}",
                database_name(stack),
                db_keys::DATABASE_URL
            );
            let url = match values.database.get(db_keys::DATABASE_URL) {
                Some(value) => {
                    DatabaseUrl::parse(value.expose()).map_err(|error| invalid(&source, error))
                }
                None => Err(Failure::new(
                    reasons::KEY_MISSING,
                    format!(
                        "{source} is missing: the generated credentials were edited; restore the key"
                    ),
                )),
            };
            Ok(Located {
                identity: DatabaseIdentity::Managed {
                    database: stack.database_name.clone(),
                },
                managed: true,
                source,
                url,
            })
        }
        Database::External { url_secret_ref } => {
            let name = &url_secret_ref.name;
            let key = &url_secret_ref.key;
            let source = format!("Secret {name:?} key {key:?}");
            if !observed.present.contains(name) {
                return Err(Failure::new(
                    reasons::SECRET_MISSING,
                    format!(
                        "Secret {name:?} (spec.database.external.urlSecretRef) does not exist \
                         in namespace {:?}; create it with the database URL under key {key:?}",
                        stack.namespace
                    ),
                ));
            }
            let Some(value) = observed.referenced.get(&(name.clone(), key.clone())) else {
                let keys: Vec<&str> = observed
                    .referenced
                    .keys()
                    .filter(|(secret, _)| secret == name)
                    .map(|(_, key)| key.as_str())
                    .collect();
                return Err(Failure::new(
                    reasons::KEY_MISSING,
                    format!(
                        "Secret {name:?} has no key {key:?} (spec.database.external.urlSecretRef); \
                         its keys: {}",
                        if keys.is_empty() {
                            "none".to_string()
                        } else {
                            keys.join(", ")
                        }
                    ),
                ));
            };
            let url =
                DatabaseUrl::parse(value.expose()).map_err(|error| invalid(&source, error))?;
            Ok(Located {
                identity: url.identity(),
                managed: false,
                source,
                url: Ok(url),
            })
        }
    }
}

/// The operator's side of every database: which ones it connects to, the
/// bounds of a check, and the pace of retries for databases that cannot be
/// used. One per process.
pub struct Databases {
    checks: DatabaseChecks,
    limits: Limits,
    retries: Backoff,
    metrics: Metrics,
}

/// The first retry of a database that cannot be used; doubling from here.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two checks of a database that cannot be used.
/// A change of the referenced Secret is watched and retries at once.
pub const MAX_RETRY: Duration = Duration::from_secs(120);

impl Databases {
    /// Checks as `checks` says, counted in `metrics`
    /// (`appstack_database_checks_total`).
    pub fn new(checks: DatabaseChecks, metrics: Metrics) -> Self {
        Self {
            checks,
            limits: Limits::default(),
            retries: Backoff::new(FIRST_RETRY, MAX_RETRY),
            metrics,
        }
    }

    /// Whether the operator connects to this database.
    pub fn reaches(&self, located: &Located) -> bool {
        match self.checks {
            DatabaseChecks::All => true,
            DatabaseChecks::External => !located.managed,
            DatabaseChecks::None => false,
        }
    }

    /// `DatabaseReady` for a located database (for the managed one, once its
    /// StatefulSet is ready): `SELECT 1` over its URL where the operator
    /// reaches it. `settled` is the last pass's condition when the stack was
    /// Ready for this generation with nothing to migrate (see [`settled`]):
    /// then a database last found ready is not connected to again.
    pub async fn readiness(
        &self,
        located: &Result<Located, Failure>,
        settled: Option<&Condition>,
    ) -> Check {
        let located = match located {
            Ok(located) => located,
            Err(failure) => return Check::pending(failure.reason, failure.message.clone()),
        };
        let ready_reason = if located.managed {
            reasons::DATABASE_READY
        } else {
            reasons::EXTERNAL_DATABASE
        };
        if let Some(last) =
            settled.filter(|last| last.status == "True" && last.reason == ready_reason)
        {
            return Check::ok(ready_reason, last.message.clone());
        }
        let described = located.url.as_ref().map_or_else(
            |_| located.source.clone(),
            |url| {
                format!(
                    "{}/{} as user {:?} (sslmode={})",
                    url.endpoint(),
                    url.database(),
                    url.user(),
                    url.ssl_mode().as_str()
                )
            },
        );
        let statefulset = if located.managed {
            "StatefulSet ready (pg_isready probe); "
        } else {
            ""
        };
        if !self.reaches(located) {
            return Check::ok(
                ready_reason,
                format!(
                    "{statefulset}not connecting to {described}: {}",
                    self.checks.flag()
                ),
            );
        }
        let url = match &located.url {
            Ok(url) => url,
            Err(failure) => return Check::pending(failure.reason, failure.message.clone()),
        };
        let checked = probe::check(url, self.limits).await;
        self.metrics.count_database_check(
            checked
                .as_ref()
                .map_or_else(|failure| failure.reason, |()| "ok"),
        );
        match checked {
            Ok(()) => Check::ok(
                ready_reason,
                format!("{statefulset}SELECT 1 answered on {described}"),
            ),
            Err(failure) => {
                debug!(reason = failure.reason, message = %failure.message, "database check failed");
                Check::pending(
                    failure.reason,
                    format!("{} (URL from {})", failure.message, located.source),
                )
            }
        }
    }

    /// The schema revision after a successful migration, and the note the
    /// `MigrationsApplied` message carries about it.
    pub async fn schema_revision(
        &self,
        located: &Located,
        revision_query: Option<&str>,
    ) -> (Option<String>, String) {
        if !self.reaches(located) {
            return (
                None,
                format!(
                    "schema revision not read: the operator does not connect to this \
                     database ({})",
                    self.checks.flag()
                ),
            );
        }
        let url = match &located.url {
            Ok(url) => url,
            Err(failure) => {
                return (
                    None,
                    format!("schema revision unknown: {}", failure.message),
                );
            }
        };
        let query = revision_query.unwrap_or(schema::DEFAULT_REVISION_QUERY);
        match schema::read(url, query, self.limits).await {
            Ok(SchemaRevision::Found(revision)) => {
                let note = schema_note(&revision);
                (Some(revision), note)
            }
            Ok(other) => (
                None,
                format!(
                    "schema revision unknown: {}",
                    other.unknown_because(query).unwrap_or_default()
                ),
            ),
            Err(failure) => (
                None,
                format!("schema revision unknown: {}", failure.message),
            ),
        }
    }

    /// When to check a database that cannot be used again: `Some` with a
    /// delay growing per stack while `database` (this pass's
    /// `DatabaseReady`) says it cannot be used for the same reason; `None`,
    /// and the delay starts over, otherwise.
    pub fn retry_after(&self, stack_uid: &str, database: Option<&Check>) -> Option<Duration> {
        match database {
            Some(check) if !check.ok && reasons::DATABASE_UNUSABLE.contains(&check.reason) => {
                Some(self.retries.next(stack_uid, check.reason))
            }
            _ => {
                self.retries.reset(stack_uid);
                None
            }
        }
    }

    /// Forgets a deleted stack's retry pace.
    pub fn forget(&self, stack_uid: &str) {
        self.retries.reset(stack_uid);
    }
}

/// The `MigrationsApplied` note for a known schema revision.
pub fn schema_note(revision: &str) -> String {
    format!("schema revision {revision}")
}

/// The last pass's `DatabaseReady` condition when the stack was Ready for
/// `generation` and no migration waits: the database need not be connected
/// to again on this pass. Otherwise `None`: connect.
pub fn settled(
    previous: Option<&AppStackStatus>,
    generation: i64,
    migration_pending: bool,
) -> Option<&Condition> {
    if migration_pending || previous?.observed_generation != generation {
        return None;
    }
    let ready = conditions::condition(previous, types::READY)?;
    if ready.status != "True" {
        return None;
    }
    conditions::condition(previous, types::DATABASE_READY)
}

/// Per-key delays doubling from `first` up to `max`, starting over when
/// the key fails for another reason.
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempts: Mutex<HashMap<String, (&'static str, u32)>>,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next attempt for `key`, which failed for
    /// `reason`, counting this failure.
    pub fn next(&self, key: &str, reason: &'static str) -> Duration {
        let mut attempts = self.attempts.lock().expect("backoff lock");
        let entry = attempts.entry(key.to_string()).or_insert((reason, 0));
        if entry.0 != reason {
            *entry = (reason, 0);
        }
        let delay = self
            .first
            .saturating_mul(1 << entry.1.min(16))
            .min(self.max);
        entry.1 = entry.1.saturating_add(1);
        delay
    }

    /// Starts `key` over.
    pub fn reset(&self, key: &str) {
        self.attempts.lock().expect("backoff lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::stack::tests::{example, from_yaml};
    use crate::reconcile::status::{Observation, desired_status};
    use crate::secrets::SecretValue;
    use crate::stages::Stage;

    fn external_stack() -> ValidatedStack {
        from_yaml(&include_str!("../../deploy/examples/shop.yaml").replace(
            "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
            "    external:\n      urlSecretRef: {name: prod-db, key: DATABASE_URL}\n",
        ))
    }

    fn observed(secrets: &[(&str, &str, &str)]) -> ObservedSecrets {
        ObservedSecrets {
            referenced: secrets
                .iter()
                .map(|(name, key, value)| {
                    (
                        (name.to_string(), key.to_string()),
                        SecretValue::new(value.as_bytes()),
                    )
                })
                .collect(),
            present: secrets
                .iter()
                .map(|(name, _, _)| name.to_string())
                .collect(),
            ..ObservedSecrets::default()
        }
    }

    fn failure(result: Result<Located, Failure>) -> Failure {
        result.expect_err("a failure")
    }

    #[test]
    fn an_external_database_is_located_from_its_secret() {
        let stack = external_stack();
        let values = SecretValues::default();
        let located = locate(
            &stack,
            &observed(&[(
                "prod-db",
                "DATABASE_URL",
                "postgresql://app:pw@db:5433/shop",
            )]),
            &values,
        )
        .unwrap();
        assert!(!located.managed);
        assert_eq!(
            located.identity,
            DatabaseIdentity::External {
                host: "db".into(),
                port: 5433,
                database: "shop".into()
            }
        );

        let missing = failure(locate(&stack, &observed(&[]), &values));
        assert_eq!(missing.reason, reasons::SECRET_MISSING);
        assert!(missing.message.contains("\"prod-db\""), "{missing:?}");

        let wrong_key = failure(locate(
            &stack,
            &observed(&[("prod-db", "url", "postgresql://app:pw@db/shop")]),
            &values,
        ));
        assert_eq!(wrong_key.reason, reasons::KEY_MISSING);
        assert!(
            wrong_key.message.ends_with("its keys: url"),
            "{wrong_key:?}"
        );

        let garbage = failure(locate(
            &stack,
            &observed(&[("prod-db", "DATABASE_URL", "app:hunter2@db/shop")]),
            &values,
        ));
        assert_eq!(garbage.reason, reasons::INVALID_URL);
        assert!(!garbage.message.contains("hunter2"), "{garbage:?}");
    }

    #[test]
    fn the_managed_database_is_located_by_its_name() {
        let stack = example();
        let values = SecretValues {
            database: crate::secrets::database_secret_data(&stack, &SecretValue::new(*b"pw")),
            ..SecretValues::default()
        };
        let located = locate(&stack, &ObservedSecrets::default(), &values).unwrap();
        assert!(located.managed);
        assert_eq!(located.identity, stack.managed_database_identity().unwrap());
        assert_eq!(
            located.url.unwrap().endpoint(),
            "shop-db.prod.svc:5432",
            "through the Service"
        );
    }

    #[tokio::test]
    async fn checks_follow_the_flag() {
        let stack = example();
        let values = SecretValues {
            database: crate::secrets::database_secret_data(&stack, &SecretValue::new(*b"pw")),
            ..SecretValues::default()
        };
        let managed = locate(&stack, &ObservedSecrets::default(), &values);
        let managed_ref = managed.as_ref().unwrap();
        assert!(Databases::new(DatabaseChecks::All, Metrics::new()).reaches(managed_ref));
        assert!(!Databases::new(DatabaseChecks::External, Metrics::new()).reaches(managed_ref));
        let external = locate(
            &external_stack(),
            &observed(&[("prod-db", "DATABASE_URL", "postgresql://app:pw@db/shop")]),
            &SecretValues::default(),
        )
        .unwrap();
        assert!(Databases::new(DatabaseChecks::External, Metrics::new()).reaches(&external));
        assert!(!Databases::new(DatabaseChecks::None, Metrics::new()).reaches(&external));

        let check = Databases::new(DatabaseChecks::External, Metrics::new())
            .readiness(&managed, None)
            .await;
        assert!(check.ok);
        assert_eq!(check.reason, reasons::DATABASE_READY);
        assert_eq!(
            check.message,
            "StatefulSet ready (pg_isready probe); not connecting to shop-db.prod.svc:5432/shop \
             as user \"shop\" (sslmode=prefer): --database-checks=external"
        );
        let (revision, note) = Databases::new(DatabaseChecks::External, Metrics::new())
            .schema_revision(managed_ref, None)
            .await;
        assert_eq!(revision, None);
        assert!(note.contains("--database-checks=external"), "{note}");
    }

    #[test]
    fn a_ready_stack_with_nothing_to_migrate_is_settled() {
        let mut observation = Observation::default();
        for (stage, reason) in [
            (Stage::Secrets, reasons::SECRETS_RESOLVED),
            (Stage::Database, reasons::EXTERNAL_DATABASE),
            (Stage::Approval, reasons::APPROVAL_NOT_REQUIRED),
            (Stage::Backup, reasons::BACKUP_NOT_REQUIRED),
            (Stage::Migrations, reasons::MIGRATION_SUCCEEDED),
            (Stage::Backend, reasons::AVAILABLE),
            (Stage::Frontend, reasons::AVAILABLE),
            (Stage::PostDeploy, reasons::POST_DEPLOY_NOT_CONFIGURED),
        ] {
            observation.record(stage, Check::ok(reason, "fine"));
        }
        let ready = desired_status(&observation, 3, None, Timestamp::from_second(1).unwrap());
        assert_eq!(settled(Some(&ready), 3, false).unwrap().message, "fine");
        assert!(
            settled(Some(&ready), 4, false).is_none(),
            "a new generation"
        );
        assert!(
            settled(Some(&ready), 3, true).is_none(),
            "a migration waits"
        );
        assert!(settled(None, 3, false).is_none());
        let mut rolling = observation.clone();
        rolling.record(
            Stage::Backend,
            Check::pending(reasons::ROLLING_OUT, "1 of 2"),
        );
        let rolling = desired_status(&rolling, 3, None, Timestamp::from_second(1).unwrap());
        assert!(settled(Some(&rolling), 3, false).is_none(), "not Ready");
    }

    #[test]
    fn retries_back_off_per_stack_and_start_over_once_usable() {
        let databases = Databases::new(DatabaseChecks::All, Metrics::new());
        let refused = Check::pending(reasons::CONNECTION_REFUSED, "refused");
        let delays: Vec<_> = (0..8)
            .map(|_| databases.retry_after("a", Some(&refused)).unwrap())
            .collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[1], FIRST_RETRY * 2);
        assert_eq!(*delays.last().unwrap(), MAX_RETRY);
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(
            databases.retry_after("b", Some(&refused)),
            Some(FIRST_RETRY),
            "per stack"
        );
        let denied = Check::pending(reasons::AUTHENTICATION_FAILED, "denied");
        assert_eq!(
            databases.retry_after("a", Some(&denied)),
            Some(FIRST_RETRY),
            "another reason starts over"
        );
        let starting = Check::pending(reasons::DATABASE_STARTING, "0 of 1 ready");
        assert_eq!(databases.retry_after("a", Some(&starting)), None);
        assert_eq!(
            databases.retry_after("a", Some(&refused)),
            Some(FIRST_RETRY),
            "started over"
        );
    }
}
