//! Events: what a pass tells users, published after its status is written:
//! the transitions between the status before and after, and what the pass
//! did (generated credentials, started a migration, deleted a child).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType};

use super::apply::Done;
use super::plan::Kind;
use super::status;
use crate::api::conditions::{self, reasons, types};
use crate::api::crd::AppStackStatus;
use crate::children::JobStep;

/// Events for the transitions between two statuses.
pub fn transitions(previous: Option<&AppStackStatus>, desired: &AppStackStatus) -> Vec<Event> {
    let became = |type_: &str, reason: &str| status::became(previous, desired, type_, reason);
    let mut events = Vec::new();
    if let Some(condition) = conditions::condition(Some(desired), types::DATABASE_READY)
        .filter(|condition| reasons::DATABASE_UNUSABLE.contains(&condition.reason.as_str()))
        && let Some(note) = became(types::DATABASE_READY, &condition.reason)
    {
        events.push(event(EventType::Warning, &condition.reason, note));
    }
    // A new cause keeping a component's pods from running: one Warning per
    // cause, in the kubelet's words, when it appears (not on every pass).
    for type_ in [
        types::DATABASE_READY,
        types::BACKUP_READY,
        types::MIGRATIONS_APPLIED,
        types::BACKEND_AVAILABLE,
        types::FRONTEND_AVAILABLE,
        types::POST_DEPLOY_APPLIED,
    ] {
        if let Some(condition) = conditions::condition(Some(desired), type_)
            .filter(|condition| reasons::POD_TROUBLE.contains(&condition.reason.as_str()))
            && conditions::condition(previous, type_)
                .is_none_or(|before| before.reason != condition.reason)
        {
            events.push(event(
                EventType::Warning,
                &condition.reason,
                condition.message.clone(),
            ));
        }
    }
    if let Some(note) = became(types::MIGRATIONS_APPLIED, reasons::MIGRATION_SUCCEEDED) {
        events.push(event(EventType::Normal, reasons::MIGRATION_SUCCEEDED, note));
    }
    if let Some(note) = became(types::MIGRATIONS_APPLIED, reasons::MIGRATION_FAILED) {
        events.push(event(EventType::Warning, reasons::MIGRATION_FAILED, note));
    }
    // The schema's steps: what a user approves, restores or acts on.
    for (type_, reason, kind) in [
        (
            types::MIGRATION_APPROVED,
            reasons::AWAITING_APPROVAL,
            EventType::Normal,
        ),
        (
            types::BACKUP_READY,
            reasons::BACKUP_SUCCEEDED,
            EventType::Normal,
        ),
        (
            types::BACKUP_READY,
            reasons::BACKUP_FAILED,
            EventType::Warning,
        ),
        (
            types::MIGRATIONS_APPLIED,
            reasons::ROLLBACK_BLOCKED,
            EventType::Warning,
        ),
        (
            types::MIGRATIONS_APPLIED,
            reasons::DOWNGRADE_FAILED,
            EventType::Warning,
        ),
        (
            types::MIGRATIONS_APPLIED,
            reasons::SCHEMA_AHEAD,
            EventType::Normal,
        ),
        (
            types::POST_DEPLOY_APPLIED,
            reasons::POST_DEPLOY_SUCCEEDED,
            EventType::Normal,
        ),
        (
            types::POST_DEPLOY_APPLIED,
            reasons::POST_DEPLOY_FAILED,
            EventType::Warning,
        ),
    ] {
        if let Some(note) = became(type_, reason) {
            events.push(event(kind, reason, note));
        }
    }
    // A rollout is told on its own once the stack is Ready, an exposure
    // when the route serves; the `StackReady` Event of a stack that becomes
    // Ready tells every one of them.
    let ready = conditions::condition(Some(desired), types::READY)
        .is_some_and(|condition| condition.status == "True");
    if let Some(note) = became(types::READY, reasons::READY) {
        let mut steps: Vec<String> = ready_steps(desired).collect();
        steps.push(note);
        events.push(event(
            EventType::Normal,
            reasons::STACK_READY,
            steps.join("; "),
        ));
    } else {
        for (type_, reason, step) in STEPS {
            let told = ready || matches!(step, Step::Exposed);
            if told
                && done(desired, type_, reason).is_some()
                && let Some(note) = became(type_, reason)
            {
                events.push(event(EventType::Normal, step.reason(), step.note(note)));
            }
        }
    }
    for reason in [reasons::ROUTE_NOT_ACCEPTED, reasons::ROUTE_REFS_UNRESOLVED] {
        if let Some(note) = became(types::EXPOSE_READY, reason) {
            events.push(event(EventType::Warning, reason, note));
        }
    }
    // A failed migration (or backup, downgrade, post-deploy step), a
    // blocked rollback, a database that cannot be used and pods that cannot
    // run have their Warning above already.
    if let Some(condition) =
        conditions::condition(Some(desired), types::STALLED).filter(|condition| {
            condition.status == "True"
                && ![
                    reasons::MIGRATION_FAILED,
                    reasons::BACKUP_FAILED,
                    reasons::ROLLBACK_BLOCKED,
                    reasons::DOWNGRADE_FAILED,
                    reasons::POST_DEPLOY_FAILED,
                ]
                .contains(&condition.reason.as_str())
                && !reasons::DATABASE_UNUSABLE.contains(&condition.reason.as_str())
                && !reasons::POD_TROUBLE.contains(&condition.reason.as_str())
        })
        && became(types::STALLED, &condition.reason).is_some()
    {
        events.push(event(
            EventType::Warning,
            &condition.reason,
            condition.message.clone(),
        ));
    }
    events
}

/// A step a Ready stack tells of: a component rolled out, or exposed.
#[derive(Clone, Copy)]
enum Step {
    Rollout(&'static str),
    Exposed,
}

impl Step {
    fn reason(self) -> &'static str {
        match self {
            Step::Rollout(_) => reasons::ROLLOUT_COMPLETE,
            Step::Exposed => reasons::EXPOSED,
        }
    }

    fn note(self, message: String) -> String {
        match self {
            Step::Rollout(component) => format!("{component}: {message}"),
            Step::Exposed => message,
        }
    }
}

/// The conditions whose reason tells a step done.
const STEPS: [(&str, &str, Step); 4] = [
    (
        types::BACKEND_AVAILABLE,
        reasons::AVAILABLE,
        Step::Rollout("backend"),
    ),
    (
        types::FRONTEND_AVAILABLE,
        reasons::AVAILABLE,
        Step::Rollout("frontend"),
    ),
    (types::EXPOSE_READY, reasons::INGRESS_READY, Step::Exposed),
    (types::EXPOSE_READY, reasons::ROUTE_ACCEPTED, Step::Exposed),
];

/// Condition `type_` of `desired`, when it holds with `reason`: a step done.
fn done<'a>(desired: &'a AppStackStatus, type_: &str, reason: &str) -> Option<&'a Condition> {
    conditions::condition(Some(desired), type_)
        .filter(|condition| condition.reason == reason && condition.status == "True")
}

/// What a stack that became Ready tells of its rollouts and exposure.
fn ready_steps(desired: &AppStackStatus) -> impl Iterator<Item = String> + '_ {
    STEPS.into_iter().filter_map(|(type_, reason, step)| {
        done(desired, type_, reason).map(|condition| step.note(condition.message.clone()))
    })
}

/// The Event for something a pass did, if users hear of it.
pub fn of_done(done: &Done) -> Option<Event> {
    if let Done::GeneratedLost { secret, keys } = done {
        return Some(event(
            EventType::Warning,
            reasons::GENERATED_SECRET_LOST,
            format!(
                "Secret {secret} lost the generated {}: new values were generated, and the \
                 backend rolls onto them",
                keys.join(", ")
            ),
        ));
    }
    let (reason, note) = match done {
        Done::Created {
            kind: Kind::Secret,
            name,
            ..
        } => (
            reasons::SECRET_GENERATED,
            format!("generated database credentials in Secret {name}"),
        ),
        Done::Created {
            kind: Kind::Job | Kind::VolumeSnapshot,
            name,
            step: Some(step),
        } => match step {
            JobStep::Migrate => (
                reasons::MIGRATION_STARTED,
                format!("started migration Job {name}"),
            ),
            JobStep::Backup => (
                reasons::BACKUP_STARTED,
                format!("started backup {name} before the migration"),
            ),
            JobStep::Downgrade => (
                reasons::DOWNGRADE_STARTED,
                format!("started Job {name} to take the schema back for a rollback"),
            ),
            JobStep::PostDeploy => (
                reasons::POST_DEPLOY_STARTED,
                format!("started post-deploy Job {name}: no pod of the previous release is left"),
            ),
            JobStep::Restore => return None,
        },
        Done::Generated { secret, keys } => (
            reasons::SECRET_GENERATED,
            format!("generated {} in Secret {secret}", keys.join(", ")),
        ),
        Done::Deleted { kind, name } => (
            reasons::DELETED,
            format!("deleted {} {name}: no longer in the spec", kind.as_str()),
        ),
        Done::Created { .. } | Done::GeneratedLost { .. } => return None,
    };
    Some(event(EventType::Normal, reason, note))
}

/// One Event per type and reason: a recorder counts a second Event of the
/// same reason about the same stack as a repeat of the first and drops its
/// note, so two Secrets generated in one pass would be told as one. Their
/// notes are joined instead.
pub fn merged(events: impl IntoIterator<Item = Event>) -> Vec<Event> {
    let mut merged: Vec<Event> = Vec::new();
    for event in events {
        match merged
            .iter_mut()
            .find(|kept| kept.type_ == event.type_ && kept.reason == event.reason)
        {
            Some(kept) => {
                let note = [kept.note.take(), event.note]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                kept.note = Some(note);
            }
            None => merged.push(event),
        }
    }
    merged
}

fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::Check;
    use crate::reconcile::status::{Observation, desired_status};
    use crate::stages::Stage;
    use k8s_openapi::jiff::Timestamp;

    fn observation(migrations: Check) -> Observation {
        let mut observation = Observation::default();
        observation.record(Stage::Secrets, Check::ok(reasons::SECRETS_RESOLVED, "ok"));
        observation.record(Stage::Database, Check::ok(reasons::DATABASE_READY, "ok"));
        observation.record(
            Stage::Approval,
            Check::ok(reasons::APPROVAL_NOT_REQUIRED, "ok"),
        );
        observation.record(Stage::Backup, Check::ok(reasons::BACKUP_NOT_REQUIRED, "ok"));
        observation.record(Stage::Migrations, migrations);
        observation.record(
            Stage::PostDeploy,
            Check::ok(reasons::POST_DEPLOY_NOT_CONFIGURED, "ok"),
        );
        observation
    }

    #[test]
    fn events_fire_on_transitions_only() {
        let at = Timestamp::from_second(1000).unwrap();
        let running = desired_status(
            &observation(Check::pending(reasons::MIGRATION_RUNNING, "running")),
            1,
            None,
            at,
        );
        let failed = desired_status(
            &observation(Check::failed(reasons::MIGRATION_FAILED, "Job x failed")),
            1,
            Some(&running),
            at,
        );
        let reasons_of = |events: Vec<Event>| {
            events
                .into_iter()
                .map(|event| event.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons_of(transitions(Some(&running), &failed)),
            [reasons::MIGRATION_FAILED]
        );
        assert!(
            transitions(Some(&failed), &failed).is_empty(),
            "no repeat on a converged pass"
        );
    }

    #[test]
    fn a_stack_becoming_ready_tells_its_rollouts_in_one_event() {
        let at = Timestamp::from_second(1000).unwrap();
        let with_components = |backend: Check, frontend: Check| {
            let mut observation = observation(Check::ok(reasons::MIGRATION_SUCCEEDED, "ok"));
            observation.record(Stage::Backend, backend);
            observation.record(Stage::Frontend, frontend);
            desired_status(&observation, 1, None, at)
        };
        let with_backend = |backend: Check| {
            with_components(backend, Check::ok(reasons::AVAILABLE, "1 of 1 available"))
        };
        let rolling = with_backend(Check::pending(reasons::ROLLING_OUT, "1 of 2 available"));
        let available = with_backend(Check::ok(reasons::AVAILABLE, "2 of 2 available"));
        assert!(
            conditions::condition(Some(&available), types::READY)
                .is_some_and(|ready| ready.status == "True")
        );
        let events = transitions(Some(&rolling), &available);
        let told: Vec<_> = events
            .iter()
            .map(|event| {
                (
                    event.reason.as_str(),
                    event.note.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].0, reasons::STACK_READY);
        assert!(
            told[0].1.starts_with("backend: 2 of 2 available"),
            "{told:?}"
        );

        // A component rolled out while another still rolls is told when
        // the stack becomes Ready, with the others.
        let frontend_rolling = with_components(
            Check::ok(reasons::AVAILABLE, "2 of 2 available"),
            Check::pending(reasons::ROLLING_OUT, "0 of 1 available"),
        );
        assert!(transitions(Some(&rolling), &frontend_rolling).is_empty());
        let events = transitions(Some(&frontend_rolling), &available);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].note.as_deref(),
            Some("backend: 2 of 2 available; frontend: 1 of 1 available; every component is ready")
        );

        // A rollout of a stack that stays Ready (a scale change) is its own
        // Event.
        let scaled = with_backend(Check::ok(reasons::AVAILABLE, "3 of 3 available"));
        let events = transitions(Some(&available), &scaled);
        assert!(
            events
                .iter()
                .any(|event| event.reason == reasons::ROLLOUT_COMPLETE),
            "{:?}",
            events.iter().map(|event| &event.reason).collect::<Vec<_>>()
        );
    }

    #[test]
    fn events_of_one_reason_in_a_pass_are_one_event_with_every_note() {
        let events = merged([
            event(
                EventType::Normal,
                reasons::SECRET_GENERATED,
                "in Secret a".into(),
            ),
            event(
                EventType::Normal,
                reasons::MIGRATION_STARTED,
                "Job j".into(),
            ),
            event(
                EventType::Normal,
                reasons::SECRET_GENERATED,
                "in Secret b".into(),
            ),
        ]);
        let told: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|event| (event.reason.as_str(), event.note.as_deref()))
            .collect();
        assert_eq!(
            told,
            [
                (reasons::SECRET_GENERATED, Some("in Secret a; in Secret b")),
                (reasons::MIGRATION_STARTED, Some("Job j")),
            ]
        );
    }

    #[test]
    fn a_database_that_cannot_be_used_is_a_warning_once() {
        let at = Timestamp::from_second(1000).unwrap();
        let mut refused = Observation::default();
        refused.record(Stage::Secrets, Check::ok(reasons::SECRETS_RESOLVED, "ok"));
        refused.record(
            Stage::Database,
            Check::pending(
                reasons::CONNECTION_REFUSED,
                "127.0.0.1:5432 refused the connection",
            ),
        );
        let status = desired_status(&refused, 1, None, at);
        let events = transitions(None, &status);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, reasons::CONNECTION_REFUSED);
        assert!(matches!(events[0].type_, EventType::Warning));
        assert!(transitions(Some(&status), &status).is_empty());
    }

    #[test]
    fn exposure_events_follow_the_route_and_do_not_repeat() {
        let at = Timestamp::from_second(1000).unwrap();
        let with_expose = |check: Check| {
            let mut observation = observation(Check::ok(reasons::MIGRATION_SUCCEEDED, "ok"));
            observation.record(Stage::Expose, check);
            desired_status(&observation, 1, None, at)
        };
        let waiting = with_expose(Check::pending(reasons::WAITING_FOR_GATEWAY, "waiting"));
        let accepted = with_expose(Check::ok(reasons::ROUTE_ACCEPTED, "accepted"));
        let refused = with_expose(Check::pending(reasons::ROUTE_NOT_ACCEPTED, "refused"));
        let reasons_of = |events: Vec<Event>| {
            events
                .into_iter()
                .map(|event| (event.type_, event.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons_of(transitions(Some(&waiting), &accepted)),
            [(EventType::Normal, reasons::EXPOSED.to_string())]
        );
        assert_eq!(
            reasons_of(transitions(Some(&accepted), &refused)),
            [(EventType::Warning, reasons::ROUTE_NOT_ACCEPTED.to_string())]
        );
        assert!(transitions(Some(&refused), &refused).is_empty());
        assert!(transitions(Some(&accepted), &waiting).is_empty());
    }

    #[test]
    fn lost_credentials_are_one_warning() {
        let at = Timestamp::from_second(1000).unwrap();
        let mut lost = Observation::default();
        lost.record(
            Stage::Secrets,
            Check::pending(reasons::CREDENTIALS_LOST, "see DatabaseReady"),
        );
        lost.record(
            Stage::Database,
            Check::failed(reasons::CREDENTIALS_LOST, "Secret shop-db is gone"),
        );
        let status = desired_status(&lost, 1, None, at);
        let events = transitions(None, &status);
        assert_eq!(events.len(), 1, "one Warning, not a second for Stalled");
        assert_eq!(events[0].reason, reasons::CREDENTIALS_LOST);
        assert!(matches!(events[0].type_, EventType::Warning));
    }
}
