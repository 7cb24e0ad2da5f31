//! One pass over one stack:
//!
//! dereference (read what the stack references) → validate → build (pure)
//! → for each stage in order: plan (pure) → apply → observe, stopping at the
//! first blocking stage that is not done → status, then Events.
//!
//! Everything is read from the caches; a converged stack costs no request.

pub mod apply;
pub mod compare;
pub mod context;
pub mod dereference;
pub mod events;
pub mod guard;
pub mod observe;
pub mod plan;
pub mod pods;
pub mod probe;
pub mod release;
pub mod report;
pub mod settle;
pub mod status;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use self::apply::{ApplyError, Done};
pub use self::context::Context;
use self::dereference::{DereferenceError, Dereferenced};
use self::plan::{Kind, StackFacts};
use self::status::{Difference, Observation, Outcome};
use crate::api::conditions::{Check, reasons, types};
use crate::api::crd::{AppStack, AppStackStatus};
use crate::api::stack::ValidatedStack;
use crate::children::{self, env_name};
use crate::runtime::cache::slim::Slim;
use crate::runtime::cache::{Caches, StackKey};
use crate::stages::{self, Stage};

/// Look again after this long without a watch event: a safety net, since
/// every stage's completion arrives by watch.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Look again this soon while the stack is still coming up.
pub const PROGRESS: Duration = Duration::from_secs(30);

/// A step of the pass failed; the stack is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("releasing the deleted stack: {0}")]
    Release(#[source] ApplyError),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("the pass did not finish within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// The step that failed: a stable, low-cardinality name for metrics.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Apply(_) => "apply",
            Error::Release(_) => "release",
            Error::Status(_) => "status",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// Brings one stack a pass closer to its spec and writes its status.
pub async fn pass(context: &Context, key: &StackKey) -> Result<Action, Error> {
    let namespace = key.namespace().unwrap_or_default();
    // The newest copy known: the cache, or what this process last wrote.
    let Some(stack) = context.caches.stacks.get(&namespace, &key.name_any()) else {
        // Deleted since it was queued.
        return Ok(Action::await_change());
    };
    if stack.meta().deletion_timestamp.is_some() {
        release::release(context, &stack)
            .await
            .map_err(Error::Release)?;
        return Ok(Action::await_change());
    }
    let mut done = Vec::new();
    let observation = match ValidatedStack::new(&stack) {
        Ok(validated) => {
            let mut observation = Observation::of(Some(&validated));
            observation.url = validated.expose.as_ref().map(|expose| expose.url());
            run_stages(context, &stack, &validated, &mut observation, &mut done).await?;
            observation
        }
        Err(invalid) => Observation {
            invalid: Some(invalid.to_string()),
            ..Observation::of(None)
        },
    };
    let previous = stack.status.as_ref();
    let generation = stack.meta().generation.unwrap_or(0);
    let desired = status::desired_status(&observation, generation, previous, Timestamp::now());
    let uid = stack.uid().unwrap_or_default();
    // What users and tools act on is written at once; progress and
    // messages wait for it, or a few seconds.
    let difference = status::difference(previous, &desired);
    let deferred = match difference {
        Difference::None => {
            context.caches.deferred.forget(&uid);
            None
        }
        Difference::Progress | Difference::Messages
            if let Some(left) = context.caches.deferred.wait(&uid, status::COALESCE) =>
        {
            Some(left)
        }
        Difference::Transition | Difference::Progress | Difference::Messages => {
            write_status(context, &stack, &desired).await?;
            context.caches.deferred.forget(&uid);
            info!(outcome = ?observation.outcome(), ?difference, "status updated");
            None
        }
    };
    // The transitions are told once the status that holds them is written.
    let told = if deferred.is_none() {
        Some(&desired)
    } else {
        None
    };
    publish(context, &stack, previous, told, &done).await;
    if let Some(delay) = context
        .databases
        .retry_after(&uid, observation.check(Stage::Database))
    {
        // The database cannot be used: look again later and later.
        return Ok(Action::requeue(delay));
    }
    Ok(match deferred {
        Some(left) => Action::requeue(left),
        None => next_check(&observation),
    })
}

/// Dereference, build, then each stage in order until one holds the pass:
/// its writes, then its report.
async fn run_stages(
    context: &Context,
    stack: &AppStack,
    validated: &ValidatedStack,
    observation: &mut Observation,
    done: &mut Vec<Done>,
) -> Result<(), Error> {
    let caches = context.caches.as_ref();
    let previous_status = stack.status.as_ref();
    let previous_migration = previous_status.and_then(|status| status.migration.as_ref());
    if validated.migration.is_some() {
        // Until the migration stage reports, the status keeps what it said.
        observation.migration = previous_migration.cloned();
    }
    let referenced = stack.spec.referenced_secrets();
    let (resolved, located, redactor) =
        match dereference::dereference(context, validated, &referenced).await? {
            Dereferenced::Resolved {
                resolved,
                located,
                redactor,
            } => (resolved, *located, redactor),
            Dereferenced::Unusable(check) => {
                observation.record(Stage::Secrets, check);
                return Ok(());
            }
            Dereferenced::CredentialsLost(check) => {
                observation.record(
                    Stage::Secrets,
                    Check::pending(
                        reasons::CREDENTIALS_LOST,
                        format!(
                            "Secret {:?} is gone; see DatabaseReady",
                            children::database_name(validated)
                        ),
                    ),
                );
                observation.record(Stage::Database, check);
                return Ok(());
            }
        };
    // Generated before (the status lists them) yet generated now: lost.
    let (lost, new): (Vec<String>, Vec<String>) =
        resolved.generated_env.iter().cloned().partition(|key| {
            previous_status.is_some_and(|status| status.generated_env.contains(key))
        });
    let secret = env_name(validated);
    if !new.is_empty() {
        done.push(Done::Generated {
            secret: secret.clone(),
            keys: new,
        });
    }
    if !lost.is_empty() {
        done.push(Done::GeneratedLost {
            secret,
            keys: lost.clone(),
        });
    }
    observation.generated_env = Some(validated.generated_env_names());
    let identity = located.as_ref().ok().map(|located| &located.identity);
    let target_revision = identity.and_then(|identity| validated.migration_revision(identity));
    // A schema read now reflects every Job that completed before this.
    let read_at = Timestamp::now();
    let (step, current_schema) = match (&target_revision, &validated.migration) {
        (Some(target), Some(_)) => {
            let (step, current) =
                rollback_guard(context, validated, &located, previous_migration, target).await;
            (Some(step), current)
        }
        _ => (None, None),
    };
    let schema_read_at = current_schema.is_some().then_some(read_at);
    let current_schema = current_schema
        .or_else(|| previous_migration.and_then(|migration| migration.schema_revision.clone()));
    let change = schema_change(step.as_ref(), target_revision.as_deref());
    let build = |caches: &Caches| {
        let checksum = observe::config_versions(validated, caches).checksum();
        plan::by_stage(children::build(
            validated,
            &resolved.values,
            identity,
            context.operator_pods.as_ref(),
            &checksum,
            &change,
        ))
    };
    let mut desired = build(caches);
    done.extend(
        apply::deletions(context, stack, plan::orphans(validated, &desired, caches)).await?,
    );
    let facts = StackFacts {
        finalizers: stack.finalizers(),
        migration: previous_migration,
        target_revision: target_revision.as_deref(),
        generated_credentials: resolved.generated_database,
        step: step.as_ref(),
        generation: validated.generation,
        post_deploy_gate: None,
    };
    let pass = report::Pass {
        context,
        stack,
        validated,
        located: &located,
        target_revision: target_revision.as_deref(),
        lost: &lost,
    };
    let mut reached = 0;
    for stage in stages::ORDER {
        // The post-deploy step waits on the rollout as the stages before it
        // in this pass left it.
        let gate = (stage == Stage::PostDeploy)
            .then(|| observe::post_deploy_gate(validated, caches, Timestamp::now()))
            .flatten();
        let facts = StackFacts {
            post_deploy_gate: gate.as_ref(),
            ..facts.clone()
        };
        let writes = plan::stage(stage, &desired[&stage], validated, caches, &facts);
        done.extend(apply::writes(context, stack, writes).await?);
        if stage == Stage::Secrets {
            // The backend's pods roll on the versions of the configuration
            // this stage has just written (or found in place).
            desired = build(caches);
        }
        let migration = observation.migration.clone();
        let view = observe::View {
            target: target_revision.as_deref(),
            step: step.as_ref(),
            status: migration.as_ref(),
            generation: validated.generation,
            gate: gate.as_ref(),
            current_schema: current_schema.as_deref(),
            schema_read_at,
        };
        let report = report::report(&pass, stage, &view).await;
        let go_on = report.check.ok || !stage.blocks();
        observation.record(stage, report);
        reached += 1;
        if !go_on {
            break;
        }
    }
    for stage in stages::ORDER.into_iter().skip(reached) {
        if let Some(seen) = observe::unreached(stage, validated, caches) {
            observation.unreached.insert(stage, seen);
        }
    }
    // What pods and migrations print may quote a secret value.
    observation.redact(|text| redactor.redact(text));
    Ok(())
}

/// The rollback guard's decision for `target` (see [`guard`]), reading the
/// database's schema revision when the decision depends on it; the schema
/// revision read, if any.
async fn rollback_guard(
    context: &Context,
    validated: &ValidatedStack,
    located: &Result<crate::database::Located, crate::database::Failure>,
    previous: Option<&crate::api::crd::MigrationStatus>,
    target: &str,
) -> (guard::Step, Option<String>) {
    let Some(migration) = &validated.migration else {
        return (guard::Step::Applied, None);
    };
    let applied = previous.and_then(|status| status.applied_revision.as_deref());
    let history = previous
        .map(|status| status.history.as_slice())
        .unwrap_or(&[]);
    let current = if !guard::needs_current(target, &migration.image, applied, history) {
        None
    } else if let Some(recorded) = previous
        .and_then(|status| status.schema_revision.clone())
        .filter(|_| downgrading(&context.caches, validated))
    {
        // A downgrade runs: the schema it takes back is in flux until its
        // Job finished. Decide on the schema it started from, so the
        // backend moves back once the Job succeeded, not when the
        // database first reads the older revision.
        Some(Ok(recorded))
    } else {
        Some(probe::current_schema(context, validated, located).await)
    };
    let (read, because) = match &current {
        Some(Ok(schema)) => (Some(schema.as_str()), String::new()),
        Some(Err(because)) => (None, because.clone()),
        None => (None, String::new()),
    };
    let step = guard::decide(
        target,
        &migration.image,
        applied,
        history,
        read,
        &because,
        migration.spec.rollback,
    );
    (step, current.and_then(Result::ok))
}

/// Whether a downgrade Job of the stack has not finished.
fn downgrading(caches: &Caches, validated: &ValidatedStack) -> bool {
    caches
        .jobs
        .of_stack(&validated.namespace, &validated.name)
        .iter()
        .any(|job| {
            children::JobStep::of(job.labels()) == Some(children::JobStep::Downgrade)
                && !observe::job_finished(job)
        })
}

/// Which Jobs take the schema where the guard's `step` needs it.
fn schema_change(step: Option<&guard::Step>, target: Option<&str>) -> children::SchemaChange {
    match (step, target) {
        (Some(guard::Step::Migrate { .. }), _) => children::SchemaChange::Migrate,
        (
            Some(
                step @ guard::Step::Downgrade {
                    from: Some(from),
                    target: schema,
                    current,
                },
            ),
            Some(target),
        ) => children::SchemaChange::Downgrade {
            id: step.id(target),
            from: from.clone(),
            target: schema.clone(),
            current: current.clone(),
        },
        _ => children::SchemaChange::None,
    }
}

/// When to look again without a watch event.
fn next_check(observation: &Observation) -> Action {
    let after = match observation.outcome() {
        Outcome::Reconciling(_) => PROGRESS,
        Outcome::Ready | Outcome::Stalled(_) => RESYNC,
    };
    Action::requeue(
        observation
            .recheck
            .map_or(after, |recheck| recheck.min(after)),
    )
}

async fn write_status(
    context: &Context,
    stack: &AppStack,
    status: &AppStackStatus,
) -> Result<(), Error> {
    let stacks: Api<AppStack> = Api::namespaced(
        context.client.clone(),
        &stack.namespace().unwrap_or_default(),
    );
    let mut value = serde_json::to_value(status).unwrap_or_default();
    // A merge patch keeps keys it does not mention: clear a dropped
    // migration, URL and an emptied list.
    value["migration"] = serde_json::to_value(&status.migration).unwrap_or_default();
    value["url"] = serde_json::to_value(&status.url).unwrap_or_default();
    value["generatedEnv"] = serde_json::to_value(&status.generated_env).unwrap_or_default();
    let mut written = stacks
        .patch_status(
            &stack.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": value })),
        )
        .await
        .map_err(Error::Status)?;
    written.slim();
    context.caches.stacks.record_written(written);
    Ok(())
}

/// Publishes the pass's Events and counts what it observed: what it did,
/// and the transitions from `previous` to `written`, the status it wrote.
async fn publish(
    context: &Context,
    stack: &AppStack,
    previous: Option<&AppStackStatus>,
    written: Option<&AppStackStatus>,
    done: &[Done],
) {
    let metrics = &context.metrics;
    for item in done {
        match item {
            Done::Created {
                kind: Kind::Job,
                step: Some(children::JobStep::Migrate),
                ..
            } => metrics.migration("started"),
            Done::Created {
                kind: Kind::Secret, ..
            }
            | Done::Generated { .. }
            | Done::GeneratedLost { .. } => metrics.secrets_generated(),
            Done::Created { .. } | Done::Deleted { .. } => {}
        }
    }
    let transitions = match written {
        Some(written) => {
            for (reason, result) in [
                (reasons::MIGRATION_SUCCEEDED, "succeeded"),
                (reasons::MIGRATION_FAILED, "failed"),
            ] {
                if status::became(previous, written, types::MIGRATIONS_APPLIED, reason).is_some() {
                    metrics.migration(result);
                }
            }
            events::transitions(previous, written)
        }
        None => Vec::new(),
    };
    let reference = stack.object_ref(&());
    // A recorder of this pass only: one shared by every pass keeps each
    // Event it sent for six minutes, to count repeats that transitions
    // never send, and so grows with the stacks created in that time (see
    // docs/src/performance/history.md).
    let recorder = Recorder::new(context.client.clone(), context.reporter.clone());
    for event in events::merged(done.iter().filter_map(events::of_done).chain(transitions)) {
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(reason = %event.reason, %error, "could not publish event");
        }
    }
}
