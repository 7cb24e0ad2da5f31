//! Status: conditions and reasons in one place, computed from what the
//! reconcile observed, compared with the current status, written only when
//! different.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{Check, condition, reasons, types};
use crate::api::crd::{AppStackStatus, MigrationStatus};
use crate::api::stack::ValidatedStack;
use crate::stages::{self, Stage};

/// Overall outcome of a reconcile, in kstatus terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    /// Work is in progress; the check says what is awaited.
    Reconciling(Check),
    /// Nothing will change until the spec does.
    Stalled(Check),
}

/// What one stage reports once its writes are sent: its check, and, of the
/// stages of the migrations, the migration as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub check: Check,
    pub migration: Option<MigrationStatus>,
    /// A later stage this one holds back, and what its condition says of
    /// it: a migration awaiting approval or a failed backup in
    /// `MigrationsApplied`, a blocked rollback in `BackendAvailable`.
    pub holds: Option<(Stage, Check)>,
    /// Look again this soon without a watch event (a soak running out).
    pub recheck: Option<Duration>,
}

impl From<Check> for Report {
    fn from(check: Check) -> Self {
        Self {
            check,
            migration: None,
            holds: None,
            recheck: None,
        }
    }
}

/// What a pass found, stage by stage. A stage the pass did not reach says
/// what its children are observed to be (the backend still serving the last
/// migrated revision is available), waiting on the stage that held the pass;
/// one with no children yet is `Unknown`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The check of every stage the pass reached.
    pub checks: BTreeMap<Stage, Check>,
    /// What is observed of the children of stages the pass did not reach
    /// (for example the backend still running the last migrated revision).
    pub unreached: BTreeMap<Stage, Check>,
    /// What a reached stage says of a later one it holds back (see
    /// [`Report::holds`]); it wins over what is observed of that stage.
    pub held: BTreeMap<Stage, Check>,
    /// Look again this soon without a watch event.
    pub recheck: Option<Duration>,
    /// The optional stages the stack does not have (see
    /// [`Stage::optional`]): no condition reports them.
    pub unused: BTreeSet<Stage>,
    /// Set when the spec is invalid; overrides everything.
    pub invalid: Option<String>,
    /// Set when a step failed for good (a migration out of retries, a rollout
    /// past its deadline): the stack is Stalled with this reason.
    pub terminal: Option<Check>,
    pub migration: Option<MigrationStatus>,
    /// The stack's public URL, with `spec.expose`.
    pub url: Option<String>,
    /// The generated env entries now in Secret `<stack>-env`, once the pass
    /// wrote it; `None` keeps what the status said.
    pub generated_env: Option<Vec<String>>,
}

impl Observation {
    /// An observation of `stack` (`None`: its spec is invalid), before any
    /// stage reports. An invalid spec has only the stages every stack has.
    pub fn of(stack: Option<&ValidatedStack>) -> Self {
        let unused = stages::ORDER
            .into_iter()
            .filter(|stage| stage.optional() && !stack.is_some_and(|stack| stage.used_by(stack)))
            .collect();
        Self {
            unused,
            ..Self::default()
        }
    }

    /// Records a reached stage's report; a terminal failure stalls the
    /// stack.
    pub fn record(&mut self, stage: Stage, report: impl Into<Report>) {
        let Report {
            check,
            migration,
            holds,
            recheck,
        } = report.into();
        if migration.is_some() {
            self.migration = migration;
        }
        if let Some((held, says)) = holds {
            self.held.insert(held, says);
        }
        self.recheck = match (self.recheck, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if check.terminal {
            self.terminal = Some(check.clone());
        }
        self.checks.insert(stage, check);
    }

    /// Every message rewritten by `redact`.
    pub fn redact(&mut self, redact: impl Fn(&str) -> String) {
        let checks = self
            .checks
            .values_mut()
            .chain(self.unreached.values_mut())
            .chain(self.held.values_mut())
            .chain(self.terminal.as_mut());
        for check in checks {
            check.message = redact(&check.message);
        }
    }

    pub fn check(&self, stage: Stage) -> Option<&Check> {
        self.checks.get(&stage)
    }

    /// The first blocking stage before `stage` that is not done: what a
    /// stage the pass did not reach waits for.
    fn blocker(&self, stage: Stage) -> Stage {
        stages::ORDER
            .iter()
            .copied()
            .take_while(|earlier| *earlier < stage)
            .find(|earlier| earlier.blocks() && !self.check(*earlier).is_some_and(|check| check.ok))
            .unwrap_or(stage)
    }

    /// The check of a stage the pass did not reach, waiting on the stage
    /// that held it: what its children are observed to be, if any.
    fn waiting(&self, stage: Stage) -> (Option<bool>, Check) {
        let blocker = self.blocker(stage);
        let waiting = format!("waiting for {}", blocker.noun());
        match self.unreached.get(&stage) {
            Some(seen) => (
                Some(seen.ok),
                Check {
                    message: format!("{waiting}; {}", seen.message),
                    ..seen.clone()
                },
            ),
            None => (None, Check::pending(blocker.waiting_reason(), waiting)),
        }
    }

    /// The kstatus outcome: Stalled when invalid or terminal, Ready when
    /// every blocking stage is done, otherwise Reconciling on the first that
    /// is not.
    pub fn outcome(&self) -> Outcome {
        if let Some(message) = &self.invalid {
            return Outcome::Stalled(Check::pending(reasons::INVALID_SPEC, message.clone()));
        }
        if let Some(terminal) = &self.terminal {
            return Outcome::Stalled(terminal.clone());
        }
        for stage in stages::ORDER.into_iter().filter(|stage| stage.blocks()) {
            match self.check(stage) {
                Some(check) if check.ok => continue,
                Some(check) => return Outcome::Reconciling(check.clone()),
                None => {
                    let blocker = self.blocker(stage);
                    return Outcome::Reconciling(Check::pending(
                        blocker.waiting_reason(),
                        format!("waiting for {}", blocker.noun()),
                    ));
                }
            }
        }
        Outcome::Ready
    }
}

/// The status a stack should have after this observation. `previous` keeps
/// `lastTransitionTime` of conditions whose status did not change.
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
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
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
    let truth = |holds: bool| if holds { "True" } else { "False" };
    let outcome = observation.outcome();
    let (summary_reason, summary_message) = match &outcome {
        Outcome::Ready => (reasons::READY, "every component is ready".to_string()),
        Outcome::Reconciling(check) | Outcome::Stalled(check) => {
            (check.reason, check.message.clone())
        }
    };
    // Ready always; Reconciling and Stalled only while True, as kstatus
    // reads them (abnormal-true: absent means False).
    let mut conditions = vec![condition(
        types::READY,
        truth(outcome == Outcome::Ready),
        summary_reason,
        &summary_message,
    )];
    match &outcome {
        Outcome::Ready => {}
        Outcome::Reconciling(_) => conditions.push(condition(
            types::RECONCILING,
            "True",
            summary_reason,
            &summary_message,
        )),
        Outcome::Stalled(_) => conditions.push(condition(
            types::STALLED,
            "True",
            summary_reason,
            &summary_message,
        )),
    }
    for stage in stages::ORDER
        .into_iter()
        .filter(|stage| !observation.unused.contains(stage))
    {
        let (status, check) = match observation.check(stage) {
            Some(check) => (truth(check.ok), check.clone()),
            None if let Some(held) = observation.held.get(&stage) => (truth(held.ok), held.clone()),
            None => match observation.waiting(stage) {
                (Some(observed), check) => (truth(observed), check),
                (None, check) => ("Unknown", check),
            },
        };
        conditions.push(condition(
            stage.condition(),
            status,
            check.reason,
            &check.message,
        ));
    }
    AppStackStatus {
        observed_generation: generation,
        conditions,
        migration: observation.migration.clone(),
        url: observation.url.clone(),
        generated_env: observation.generated_env.clone().unwrap_or_else(|| {
            previous
                .map(|status| status.generated_env.clone())
                .unwrap_or_default()
        }),
    }
}

/// How the desired status differs from the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The current status already says it.
    None,
    /// What a user or a tool acts on: a new observed generation, `Ready` or
    /// `Stalled` changing, a condition taking a reason that is not plain
    /// progress (a failure, a pod that cannot run, a database that cannot
    /// be used, a migration that failed or was blocked), what a migration
    /// left that later passes read back (the schema revision read after it,
    /// the revision history, the last backup, the post-deploy step), the
    /// URL or the generated env. Written at once.
    Transition,
    /// The stack moving forward on its own: a stage done and the next one
    /// started, a migration Job started or its revision applied, a rollout
    /// begun (every changed condition holds a reason of
    /// [`reasons::PROGRESS`]). Written with the next transition, or once
    /// [`COALESCE`] has passed.
    Progress,
    /// Only messages (a rollout's replica counts, a Job's attempts): written
    /// like progress.
    Messages,
}

/// How long progress and a change of messages wait to be written.
pub const COALESCE: Duration = Duration::from_secs(3);

/// How `desired` differs from `current`.
pub fn difference(current: Option<&AppStackStatus>, desired: &AppStackStatus) -> Difference {
    let Some(current) = current else {
        return Difference::Transition;
    };
    if current == desired {
        return Difference::None;
    }

    let state = |status: &AppStackStatus, type_: &str| {
        condition(Some(status), type_).map(|condition| {
            (
                condition.status.clone(),
                condition.reason.clone(),
                condition.observed_generation,
            )
        })
    };
    // What later passes read back from the status: written at once. A
    // revision applied without them (no schema read) is progress.
    let remembered = |status: &AppStackStatus| {
        let migration = status.migration.clone().unwrap_or_default();
        (
            migration.schema_revision,
            migration.history,
            migration.last_backup,
            migration.post_deploy_revision,
        )
    };
    let changed: Vec<&Condition> = desired
        .conditions
        .iter()
        .filter(|condition| state(current, &condition.type_) != state(desired, &condition.type_))
        .collect();
    let removed = current
        .conditions
        .iter()
        .any(|old| condition(Some(desired), &old.type_).is_none());
    let acted_on = current.observed_generation != desired.observed_generation
        || current.url != desired.url
        || current.generated_env != desired.generated_env
        || remembered(current) != remembered(desired)
        || removed
        || changed.iter().any(|new| {
            let status_of = |status: &AppStackStatus| {
                condition(Some(status), &new.type_).map(|old| old.status.clone())
            };
            ((new.type_ == types::READY || new.type_ == types::STALLED)
                && status_of(current) != status_of(desired))
                || !reasons::PROGRESS.contains(&new.reason.as_str())
        });
    if acted_on {
        Difference::Transition
    } else if !changed.is_empty() || current.migration != desired.migration {
        Difference::Progress
    } else {
        Difference::Messages
    }
}

/// The message of condition `type_` when it newly holds `reason` in
/// `desired` (its reason, status or message changed since `previous`).
pub fn became(
    previous: Option<&AppStackStatus>,
    desired: &AppStackStatus,
    type_: &str,
    reason: &str,
) -> Option<String> {
    let now = condition(Some(desired), type_).filter(|condition| condition.reason == reason)?;
    let before = condition(previous, type_);
    let changed = before.is_none_or(|before| {
        before.reason != now.reason || before.status != now.status || before.message != now.message
    });
    changed.then(|| now.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example stack, Ready: it has no approval gate, backup or
    /// post-deploy step.
    fn ready_observation() -> Observation {
        let mut observation = Observation::of(Some(&crate::api::stack::tests::example()));
        for (stage, reason) in [
            (Stage::Secrets, reasons::SECRETS_RESOLVED),
            (Stage::Database, reasons::DATABASE_READY),
            (Stage::Approval, reasons::APPROVAL_NOT_REQUIRED),
            (Stage::Backup, reasons::BACKUP_NOT_REQUIRED),
            (Stage::Migrations, reasons::MIGRATION_SUCCEEDED),
            (Stage::Backend, reasons::AVAILABLE),
            (Stage::Frontend, reasons::AVAILABLE),
            (Stage::PostDeploy, reasons::POST_DEPLOY_NOT_CONFIGURED),
        ] {
            observation.record(stage, Check::ok(reason, "fine"));
        }
        observation.record(
            Stage::Monitoring,
            Check::pending(reasons::CRD_NOT_INSTALLED, "no CRD"),
        );
        observation
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
    fn exactly_one_summary_condition_holds_and_only_while_true() {
        let types_of = |status: &AppStackStatus| -> Vec<String> {
            status
                .conditions
                .iter()
                .map(|condition| condition.type_.clone())
                .collect()
        };
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
        assert_eq!(
            types_of(&ready),
            [
                types::READY,
                types::SECRETS_READY,
                types::DATABASE_READY,
                types::MIGRATIONS_APPLIED,
                types::BACKEND_AVAILABLE,
                types::FRONTEND_AVAILABLE,
                types::EXPOSE_READY,
                types::MONITORING_READY,
            ],
            "no Reconciling or Stalled while False, and no condition of a stage the stack does not have"
        );

        let mut running = ready_observation();
        running.record(
            Stage::Migrations,
            Check::pending(reasons::MIGRATION_RUNNING, "job running"),
        );
        let status = desired_status(&running, 4, None, at(100));
        assert_eq!(true_of(&status)[0], types::RECONCILING);
        assert_eq!(
            condition(Some(&status), types::READY).unwrap().reason,
            reasons::MIGRATION_RUNNING
        );
        assert!(condition(Some(&status), types::STALLED).is_none());

        let mut failed = running.clone();
        failed.record(
            Stage::Migrations,
            Check::failed(reasons::MIGRATION_FAILED, "job failed"),
        );
        let status = desired_status(&failed, 4, None, at(100));
        assert_eq!(true_of(&status)[0], types::STALLED);
        assert!(
            !true_of(&status).contains(&types::READY)
                && condition(Some(&status), types::RECONCILING).is_none()
        );
        assert_eq!(
            difference(Some(&desired_status(&running, 4, None, at(100))), &status),
            Difference::Transition,
            "Stalled appearing is written at once"
        );
        assert_eq!(
            difference(Some(&status), &desired_status(&running, 4, None, at(101))),
            Difference::Transition,
            "and so is Stalled going"
        );

        let invalid = Observation {
            invalid: Some("spec.backend.image: required".into()),
            ..Observation::of(None)
        };
        let status = desired_status(&invalid, 4, None, at(100));
        assert!(
            [
                types::MIGRATION_APPROVED,
                types::BACKUP_READY,
                types::POST_DEPLOY_APPLIED
            ]
            .iter()
            .all(|type_| condition(Some(&status), type_).is_none()),
            "an invalid spec has only the stages every stack has"
        );
    }

    #[test]
    fn transition_time_moves_only_on_a_transition_and_equal_status_is_not_written() {
        let first = desired_status(&ready_observation(), 1, None, at(100));
        let again = desired_status(&ready_observation(), 1, Some(&first), at(500));
        assert_eq!(again, first, "nothing time-based changes on a repeat");
        assert_eq!(difference(Some(&first), &again), Difference::None);

        let mut changed = ready_observation();
        changed.record(
            Stage::Backend,
            Check::pending(reasons::ROLLING_OUT, "1 of 2 updated"),
        );
        let later = desired_status(&changed, 2, Some(&first), at(900));
        let ready = condition(Some(&later), types::READY).unwrap();
        assert_eq!(ready.last_transition_time.0, at(900));
        let secrets = condition(Some(&later), types::SECRETS_READY).unwrap();
        assert_eq!(
            secrets.last_transition_time.0,
            at(100),
            "unchanged condition keeps its time"
        );
        assert_eq!(difference(Some(&first), &later), Difference::Transition);
    }

    #[test]
    fn a_change_of_messages_alone_is_not_a_transition() {
        let mut rolling = ready_observation();
        rolling.record(
            Stage::Backend,
            Check::pending(reasons::ROLLING_OUT, "1 of 2 replicas updated, 0 available"),
        );
        let first = desired_status(&rolling, 1, None, at(100));
        let mut further = ready_observation();
        further.record(
            Stage::Backend,
            Check::pending(reasons::ROLLING_OUT, "2 of 2 replicas updated, 1 available"),
        );
        let later = desired_status(&further, 1, Some(&first), at(200));
        assert_eq!(difference(Some(&first), &later), Difference::Messages);
        let with_migration = |migration: MigrationStatus| {
            let mut observation = further.clone();
            observation.migration = Some(migration);
            desired_status(&observation, 1, Some(&first), at(200))
        };
        let applied = with_migration(MigrationStatus {
            applied_revision: Some("r1".into()),
            ..MigrationStatus::default()
        });
        assert_eq!(
            difference(Some(&first), &applied),
            Difference::Progress,
            "a revision applied waits with the stage it moves the stack to"
        );
        let migrated = with_migration(MigrationStatus {
            applied_revision: Some("r1".into()),
            schema_revision: Some("a1b2".into()),
            ..MigrationStatus::default()
        });
        assert_eq!(
            difference(Some(&first), &migrated),
            Difference::Transition,
            "the schema a migration left is read back by later passes"
        );
        let next_generation = desired_status(&further, 2, Some(&first), at(200));
        assert_eq!(
            difference(Some(&first), &next_generation),
            Difference::Transition
        );
    }

    #[test]
    fn progress_waits_and_what_users_act_on_does_not() {
        let mut database_up = Observation::default();
        database_up.record(Stage::Secrets, Check::ok(reasons::SECRETS_RESOLVED, "ok"));
        database_up.record(
            Stage::Database,
            Check::pending(reasons::DATABASE_STARTING, "0 of 1 ready"),
        );
        let first = desired_status(&database_up, 1, None, at(100));
        let status_with = |stage: Stage, check: Check| {
            let mut observation = database_up.clone();
            observation.record(Stage::Database, Check::ok(reasons::DATABASE_READY, "ok"));
            observation.record(stage, check);
            desired_status(&observation, 1, Some(&first), at(200))
        };
        let migrating = status_with(
            Stage::Migrations,
            Check::pending(reasons::MIGRATION_RUNNING, "Job x is running"),
        );
        assert_eq!(difference(Some(&first), &migrating), Difference::Progress);
        let failed = status_with(
            Stage::Migrations,
            Check::failed(reasons::MIGRATION_FAILED, "Job x failed"),
        );
        assert_eq!(difference(Some(&first), &failed), Difference::Transition);
        let pulling = status_with(
            Stage::Migrations,
            Check::pending(
                reasons::IMAGE_PULL_BACK_OFF,
                "pod x: Back-off pulling image",
            ),
        );
        assert_eq!(
            difference(Some(&first), &pulling),
            Difference::Transition,
            "a pod that cannot run is named at once"
        );
        let ready = desired_status(&ready_observation(), 1, Some(&first), at(300));
        assert_eq!(difference(Some(&first), &ready), Difference::Transition);
    }

    #[tokio::test(start_paused = true)]
    async fn deferred_messages_wait_at_most_the_coalescing_window() {
        let deferred = crate::runtime::cache::Deferred::default();
        assert_eq!(deferred.wait("a", COALESCE), Some(COALESCE));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            deferred.wait("a", COALESCE),
            Some(COALESCE - Duration::from_secs(1))
        );
        assert_eq!(
            deferred.wait("b", COALESCE),
            Some(COALESCE),
            "each stack on its own"
        );
        tokio::time::advance(COALESCE).await;
        assert_eq!(deferred.wait("a", COALESCE), None, "due");
        deferred.forget("a");
        deferred.forget("b");
        assert!(deferred.is_empty());
    }

    #[test]
    fn a_stage_the_pass_did_not_reach_says_what_is_observed_or_is_unknown() {
        let mut observation = Observation::default();
        observation.record(Stage::Secrets, Check::ok(reasons::SECRETS_RESOLVED, "ok"));
        observation.record(Stage::Database, Check::ok(reasons::DATABASE_READY, "ok"));
        observation.record(Stage::Approval, Check::ok(reasons::APPROVED, "ok"));
        observation.record(Stage::Backup, Check::ok(reasons::BACKUP_SUCCEEDED, "ok"));
        observation.record(
            Stage::Migrations,
            Check::pending(reasons::MIGRATION_RUNNING, "Job shop-migrate-1 is running"),
        );
        observation.unreached.insert(
            Stage::Backend,
            Check::ok(reasons::AVAILABLE, "2 of 2 replicas of shop:1 available"),
        );
        let status = desired_status(&observation, 3, None, at(100));
        let backend = condition(Some(&status), types::BACKEND_AVAILABLE).unwrap();
        assert_eq!(
            (backend.status.as_str(), backend.reason.as_str()),
            ("True", reasons::AVAILABLE),
            "the last migrated revision keeps serving"
        );
        assert_eq!(
            backend.message,
            "waiting for migrations; 2 of 2 replicas of shop:1 available"
        );
        let frontend = condition(Some(&status), types::FRONTEND_AVAILABLE).unwrap();
        assert_eq!(
            (frontend.status.as_str(), frontend.reason.as_str()),
            ("Unknown", reasons::WAITING_FOR_MIGRATION)
        );
        let ready = condition(Some(&status), types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::MIGRATION_RUNNING)
        );
    }
}
