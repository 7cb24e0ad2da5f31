//! Status: conditions and reasons in one place, computed from what the
//! reconcile observed, compared with the current status, written only when
//! different.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{AppStackStatus, MigrationStatus};

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const SECRETS_READY: &str = "SecretsReady";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const MIGRATIONS_APPLIED: &str = "MigrationsApplied";
    pub const BACKEND_AVAILABLE: &str = "BackendAvailable";
    pub const FRONTEND_AVAILABLE: &str = "FrontendAvailable";
    pub const MONITORING_READY: &str = "MonitoringReady";
}

/// Condition reasons.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRETS_RESOLVED: &str = "SecretsResolved";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
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
    pub const AVAILABLE: &str = "Available";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    pub const WAITING_FOR_BACKEND: &str = "WaitingForBackend";
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    pub const SERVICE_MONITOR_READY: &str = "ServiceMonitorReady";
    pub const CRD_NOT_INSTALLED: &str = "CRDNotInstalled";
    pub const DISABLED: &str = "Disabled";

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

    /// Every reason above: the database cannot be used.
    pub const DATABASE_UNUSABLE: [&str; 10] = [
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
    ];

    // Reasons of Events that are not condition reasons.
    pub const SECRET_GENERATED: &str = "SecretGenerated";
    pub const MIGRATION_STARTED: &str = "MigrationStarted";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const STACK_READY: &str = "StackReady";
    pub const DELETED: &str = "Deleted";
}

/// The state of one part of the stack, as a condition will say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Check {
    pub fn ok(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    pub fn pending(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// Overall outcome of a reconcile, in kstatus terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    /// Work is in progress; the check says what is awaited.
    Reconciling(Check),
    /// Nothing will change until the spec does.
    Stalled(Check),
}

/// What a reconcile found, component by component, in pipeline order.
/// A component not reached is `None` and reads as waiting on the one before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub secrets: Option<Check>,
    pub database: Option<Check>,
    pub migrations: Option<Check>,
    pub backend: Option<Check>,
    pub frontend: Option<Check>,
    pub monitoring: Option<Check>,
    /// Set when the spec is invalid; overrides everything.
    pub invalid: Option<String>,
    /// Set when a step failed for good (a migration out of retries, a rollout
    /// past its deadline): the stack is Stalled with this reason.
    pub terminal: Option<Check>,
    pub migration: Option<MigrationStatus>,
}

impl Observation {
    /// The kstatus outcome: Stalled when terminal, Ready when every blocking
    /// component is ok, otherwise Reconciling on the first that is not.
    pub fn outcome(&self) -> Outcome {
        if let Some(message) = &self.invalid {
            return Outcome::Stalled(Check::pending(reasons::INVALID_SPEC, message.clone()));
        }
        if let Some(terminal) = &self.terminal {
            return Outcome::Stalled(terminal.clone());
        }
        let blocking = [
            (&self.secrets, "secrets"),
            (&self.database, "the database"),
            (&self.migrations, "migrations"),
            (&self.backend, "the backend"),
            (&self.frontend, "the frontend"),
        ];
        for (check, what) in blocking {
            match check {
                Some(check) if check.ok => continue,
                Some(check) => return Outcome::Reconciling(check.clone()),
                None => {
                    return Outcome::Reconciling(Check::pending(
                        reasons::WAITING_FOR_SECRETS,
                        format!("waiting to reconcile {what}"),
                    ));
                }
            }
        }
        Outcome::Ready
    }
}

/// The status a stack should have after this observation. `previous` keeps
/// `lastTransitionTime` of conditions whose status did not change and the
/// last applied migration revision.
pub fn desired_status(
    observation: &Observation,
    generation: i64,
    previous: Option<&AppStackStatus>,
    now: Timestamp,
) -> AppStackStatus {
    let previous_conditions = previous
        .map(|status| status.conditions.as_slice())
        .unwrap_or(&[]);
    // Second precision: what the API server stores, so a re-read compares equal.
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous_conditions
            .iter()
            .find(|condition| condition.type_ == type_ && condition.status == status)
            .map_or_else(
                || now.clone(),
                |condition| condition.last_transition_time.clone(),
            );
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(generation),
            last_transition_time,
        }
    };
    let outcome = observation.outcome();
    let (summary_reason, summary_message) = match &outcome {
        Outcome::Ready => (reasons::READY, "every component is ready".to_string()),
        Outcome::Reconciling(check) | Outcome::Stalled(check) => {
            (check.reason, check.message.clone())
        }
    };
    let mut conditions = vec![
        condition(
            types::READY,
            outcome == Outcome::Ready,
            summary_reason,
            &summary_message,
        ),
        condition(
            types::RECONCILING,
            matches!(outcome, Outcome::Reconciling(_)),
            summary_reason,
            &summary_message,
        ),
        condition(
            types::STALLED,
            matches!(outcome, Outcome::Stalled(_)),
            summary_reason,
            &summary_message,
        ),
    ];
    let waiting = |reason: &'static str, message: &str| Check::pending(reason, message);
    let components = [
        (
            types::SECRETS_READY,
            &observation.secrets,
            waiting(reasons::WAITING_FOR_SECRETS, "secrets not resolved yet"),
        ),
        (
            types::DATABASE_READY,
            &observation.database,
            waiting(reasons::WAITING_FOR_SECRETS, "waiting for secrets"),
        ),
        (
            types::MIGRATIONS_APPLIED,
            &observation.migrations,
            waiting(reasons::WAITING_FOR_DATABASE, "waiting for the database"),
        ),
        (
            types::BACKEND_AVAILABLE,
            &observation.backend,
            waiting(reasons::WAITING_FOR_MIGRATION, "waiting for migrations"),
        ),
        (
            types::FRONTEND_AVAILABLE,
            &observation.frontend,
            waiting(reasons::WAITING_FOR_BACKEND, "waiting for the backend"),
        ),
        (
            types::MONITORING_READY,
            &observation.monitoring,
            waiting(reasons::WAITING_FOR_BACKEND, "waiting for the backend"),
        ),
    ];
    for (type_, check, fallback) in components {
        let check = check.as_ref().unwrap_or(&fallback);
        conditions.push(condition(type_, check.ok, check.reason, &check.message));
    }
    AppStackStatus {
        observed_generation: generation,
        conditions,
        migration: observation.migration.clone(),
    }
}

/// The status to write, or `None` when the current one already says it.
pub fn status_patch(
    current: Option<&AppStackStatus>,
    desired: &AppStackStatus,
) -> Option<AppStackStatus> {
    (current != Some(desired)).then(|| desired.clone())
}

/// The condition of a type in a status.
pub fn condition<'a>(status: Option<&'a AppStackStatus>, type_: &str) -> Option<&'a Condition> {
    status?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_observation() -> Observation {
        let ok = |reason| Some(Check::ok(reason, "fine"));
        Observation {
            secrets: ok(reasons::SECRETS_RESOLVED),
            database: ok(reasons::DATABASE_READY),
            migrations: ok(reasons::MIGRATION_SUCCEEDED),
            backend: ok(reasons::AVAILABLE),
            frontend: ok(reasons::AVAILABLE),
            monitoring: Some(Check::pending(reasons::CRD_NOT_INSTALLED, "no CRD")),
            ..Observation::default()
        }
    }

    fn true_of(status: &AppStackStatus) -> Vec<&str> {
        status
            .conditions
            .iter()
            .filter(|condition| condition.status == "True")
            .map(|condition| condition.type_.as_str())
            .collect()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn exactly_one_summary_condition_holds() {
        let ready = desired_status(&ready_observation(), 4, None, at(100));
        assert_eq!(
            true_of(&ready)[..1],
            [types::READY],
            "monitoring without its CRD does not block Ready"
        );
        assert!(
            ready
                .conditions
                .iter()
                .all(|condition| condition.observed_generation == Some(4))
        );

        let mut running = ready_observation();
        running.migrations = Some(Check::pending(reasons::MIGRATION_RUNNING, "job running"));
        let status = desired_status(&running, 4, None, at(100));
        assert_eq!(true_of(&status)[0], types::RECONCILING);
        assert_eq!(
            condition(Some(&status), types::READY).unwrap().reason,
            reasons::MIGRATION_RUNNING
        );

        let mut failed = running.clone();
        failed.terminal = Some(Check::pending(reasons::MIGRATION_FAILED, "job failed"));
        let status = desired_status(&failed, 4, None, at(100));
        assert_eq!(true_of(&status)[0], types::STALLED);
        assert!(
            !true_of(&status).contains(&types::READY)
                && !true_of(&status).contains(&types::RECONCILING)
        );
    }

    #[test]
    fn transition_time_moves_only_on_a_transition_and_equal_status_is_not_written() {
        let first = desired_status(&ready_observation(), 1, None, at(100));
        let again = desired_status(&ready_observation(), 1, Some(&first), at(500));
        assert_eq!(again, first, "nothing time-based changes on a repeat");
        assert!(status_patch(Some(&first), &again).is_none());

        let mut changed = ready_observation();
        changed.backend = Some(Check::pending(reasons::ROLLING_OUT, "1 of 2 updated"));
        let later = desired_status(&changed, 2, Some(&first), at(900));
        let ready = condition(Some(&later), types::READY).unwrap();
        assert_eq!(ready.last_transition_time.0, at(900));
        let secrets = condition(Some(&later), types::SECRETS_READY).unwrap();
        assert_eq!(
            secrets.last_transition_time.0,
            at(100),
            "unchanged condition keeps its time"
        );
        assert!(status_patch(Some(&first), &later).is_some());
    }
}
