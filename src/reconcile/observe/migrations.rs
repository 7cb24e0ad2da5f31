//! The stages around the schema, as the caches show them: the approval
//! gate, the backup before a migration, the migration itself (or what the
//! rollback guard decided instead), and the post-deploy step once the new
//! release is the only one left.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    JOB_NAME_LABEL, JobState, component_pods, deployment_check, job_attempts, job_state,
    migration_check, migration_output, with_pod_trouble,
};
use crate::api::conditions::{Check, reasons};
use crate::api::crd::{BackupMethod, BackupRecord, MigrationStatus, RevisionRecord};
use crate::api::stack::ValidatedStack;
use crate::children::backup::{backup_name, dump_file, snapshot_name};
use crate::children::migration::{downgrade_job_name, job_name, post_deploy_job_name};
use crate::children::{Component, GENERATION_LABEL, workload::workload_name};
use crate::reconcile::guard::Step;
use crate::reconcile::status::Report;
use crate::runtime::cache::Caches;
use crate::runtime::cache::slim::ROLLED_OUT;
use crate::stages::Stage;

/// What the stages of the migrations read besides the caches.
#[derive(Clone, Copy, Debug, Default)]
pub struct View<'a> {
    /// The migration revision the spec asks for against the located
    /// database.
    pub target: Option<&'a str>,
    /// What the target needs of the database (the rollback guard).
    pub step: Option<&'a Step>,
    /// The migration status as this pass has it so far.
    pub status: Option<&'a MigrationStatus>,
    /// The stack's generation.
    pub generation: i64,
    /// Whether the post-deploy step may run.
    pub gate: Option<&'a PostDeployGate>,
    /// The database's schema revision, as the guard read it or the status
    /// last said.
    pub current_schema: Option<&'a str>,
    /// When the guard began reading it, if it did on this pass.
    pub schema_read_at: Option<Timestamp>,
}

impl<'a> View<'a> {
    /// The target revision and what it needs of the database, or the check
    /// of a stage that waits until the database is located.
    fn target_and_step(&self) -> Result<(&'a str, &'a Step), Check> {
        match (self.target, self.step) {
            (Some(target), Some(step)) => Ok((target, step)),
            _ => Err(Check::pending(
                reasons::WAITING_FOR_DATABASE,
                "the database the migrations run against is not known yet",
            )),
        }
    }

    /// Whether the schema revision was read after `job` completed: then a
    /// Job that was to change it and left it as it was did not do its work.
    fn read_after(&self, job: &Job) -> bool {
        let completed = job
            .status
            .as_ref()
            .and_then(|status| status.completion_time.as_ref())
            .map(|time| time.0);
        match (completed, self.schema_read_at) {
            // Completion times are whole seconds: the next second is surely
            // after it.
            (Some(completed), Some(read)) => completed
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .is_ok_and(|after| after <= read),
            _ => false,
        }
    }
}

/// Whether a finished Job made for an earlier generation than `generation`
/// (or for none) succeeded: then what it did may have been undone since (a
/// downgrade), and it is no evidence for this generation.
pub fn stale(job: &Job, generation: i64) -> bool {
    job_state(job) == JobState::Succeeded
        && job.labels().get(GENERATION_LABEL) != Some(&generation.to_string())
}

/// The name of the Job of `step` towards revision `target`: the migration
/// or the downgrade, `None` when the step runs none.
pub fn step_job_name(stack: &ValidatedStack, step: &Step, target: &str) -> Option<String> {
    match step {
        Step::Migrate { .. } => Some(job_name(stack, target)),
        Step::Downgrade { from: Some(_), .. } => Some(downgrade_job_name(stack, &step.id(target))),
        _ => None,
    }
}

/// Whether the Job of this pass's schema change exists and still counts: a
/// backup before it was taken already.
pub fn step_job_started(
    stack: &ValidatedStack,
    caches: &Caches,
    step: &Step,
    target: &str,
    generation: i64,
) -> bool {
    let Some(name) = step_job_name(stack, step, target) else {
        return false;
    };
    let again = matches!(step, Step::Migrate { again: true } | Step::Downgrade { .. });
    caches
        .jobs
        .get(&stack.namespace, &name)
        .is_some_and(|job| !(again && stale(&job, generation)))
}

/// Whether the post-deploy step may start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostDeployGate {
    /// The new release is not the only one yet: why.
    Rollout(String),
    /// Fully rolled out; `after` runs out in this long.
    Soak(Duration),
    Due,
}

/// The post-deploy gate at `now`, `None` without `postDeploy`: every
/// replica of the current backend and frontend available, no other pod of
/// theirs whose containers still run (not even one terminating, which may
/// still serve a request of the previous release; one whose containers all
/// exited, its phase terminal, sends no query), and `postDeploy.after`
/// passed since the later of the two rollouts completed.
pub fn post_deploy_gate(
    stack: &ValidatedStack,
    caches: &Caches,
    now: Timestamp,
) -> Option<PostDeployGate> {
    let post_deploy = stack.migration.as_ref()?.post_deploy()?;
    let mut components = vec![Component::Backend];
    if stack.frontend.is_some() {
        components.push(Component::Frontend);
    }
    let mut completed: Option<Timestamp> = None;
    for component in components {
        let name = workload_name(stack, component);
        let Some(deployment) = caches.deployments.get(&stack.namespace, &name) else {
            return Some(PostDeployGate::Rollout(format!(
                "Deployment {name} is being created"
            )));
        };
        let check = deployment_check(&deployment);
        if !check.ok {
            return Some(PostDeployGate::Rollout(format!(
                "Deployment {name}: {}",
                check.message
            )));
        }
        let wanted = deployment.spec.replicas.unwrap_or(1);
        let pods: Vec<_> = component_pods(stack, caches, component)
            .into_iter()
            .filter(|pod| {
                !matches!(
                    pod.status
                        .as_ref()
                        .and_then(|status| status.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        if let Some(leaving) = pods
            .iter()
            .find(|pod| pod.metadata.deletion_timestamp.is_some())
        {
            return Some(PostDeployGate::Rollout(format!(
                "pod {} of Deployment {name} is still terminating",
                leaving.name_any()
            )));
        }
        if pods.len() > usize::try_from(wanted).unwrap_or_default() {
            return Some(PostDeployGate::Rollout(format!(
                "Deployment {name} has {} pods, {wanted} wanted",
                pods.len()
            )));
        }
        let finished = deployment
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|condition| {
                condition.type_.as_deref() == Some("Progressing")
                    && condition.reason.as_deref() == Some(ROLLED_OUT)
            })
            .and_then(|condition| condition.last_update_time.as_ref())
            .map(|time| time.0);
        completed = completed.max(finished);
    }
    let since = completed.unwrap_or(now);
    let due = since
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(post_deploy.after).ok()?)
        .ok()?;
    Some(if now >= due {
        PostDeployGate::Due
    } else {
        let left = due.duration_since(now);
        PostDeployGate::Soak(Duration::try_from(left).unwrap_or_default())
    })
}

/// `MigrationApproved`: open unless `approval: Manual` holds back a schema
/// change of a revision `approvedRevision` does not name.
pub fn approval(stack: &ValidatedStack, view: &View<'_>) -> Report {
    let Some(migration) = &stack.migration else {
        return Check::ok(reasons::APPROVAL_NOT_REQUIRED, "no migrations configured").into();
    };
    let (target, step) = match view.target_and_step() {
        Ok(known) => known,
        Err(waiting) => return waiting.into(),
    };
    let status = MigrationStatus {
        target_revision: Some(target.into()),
        ..view.status.cloned().unwrap_or_default()
    };
    let report = |check: Check| Report {
        check,
        migration: Some(status.clone()),
        holds: None,
        recheck: None,
    };
    if !migration.manual_approval() {
        return report(Check::ok(
            reasons::APPROVAL_NOT_REQUIRED,
            "approval: Automatic",
        ));
    }
    let approved = migration.spec.approved_revision.as_deref();
    if approved == Some(target) {
        return report(Check::ok(
            reasons::APPROVED,
            format!("revision {target} approved (spec.migrations.approvedRevision)"),
        ));
    }
    if !step.migrates() {
        return report(Check::ok(
            reasons::APPROVAL_NOT_REQUIRED,
            format!("nothing to migrate for revision {target}"),
        ));
    }
    let what = match step {
        Step::Downgrade {
            from: Some(from),
            target: schema,
            current,
        } => format!(
            "its rollback takes the schema from {current} back to {schema} with image {}",
            from.image
        ),
        _ => format!("its migration runs image {}", migration.image),
    };
    let other = approved
        .map(|approved| format!(" (approvedRevision {approved} is another revision)"))
        .unwrap_or_default();
    let message = format!(
        "revision {target} waits for approval ({what}): set spec.migrations.approvedRevision \
         to {target}, or run kubectl appstack approve {}{other}",
        stack.name
    );
    let check = Check::pending(reasons::AWAITING_APPROVAL, message);
    Report {
        holds: Some((Stage::Migrations, check.clone())),
        ..report(check)
    }
}

/// `BackupReady`: the backup before this pass's schema change, taken or
/// not needed.
pub fn backup(stack: &ValidatedStack, caches: &Caches, view: &View<'_>) -> Report {
    let backups = stack.backups();
    let (Some(target), Some(step)) = (view.target, view.step) else {
        return Check::ok(reasons::BACKUP_NOT_REQUIRED, "nothing to migrate").into();
    };
    let mut status = view.status.cloned().unwrap_or_default();
    let last = status.last_backup.clone();
    let taken = |record: &BackupRecord| {
        Check::ok(
            reasons::BACKUP_SUCCEEDED,
            format!(
                "backup {} ({}) taken before revision {}{}",
                record.name,
                record.method,
                record.revision,
                record
                    .schema_revision
                    .as_deref()
                    .map(|schema| format!(", holding schema {schema}"))
                    .unwrap_or_default()
            ),
        )
    };
    let Some(backups) = backups.clone().filter(|_| step.migrates()) else {
        let check = match (&backups, &last) {
            (None, _) => Check::ok(reasons::BACKUP_NOT_REQUIRED, "no backup asked for"),
            (Some(_), Some(record)) if record.revision == target => taken(record),
            (Some(_), _) => Check::ok(
                reasons::BACKUP_NOT_REQUIRED,
                format!("nothing to migrate for revision {target}"),
            ),
        };
        return check.into();
    };
    let id = step.id(target);
    let started = step_job_started(stack, caches, step, target, view.generation);
    let report = |check: Check, status: MigrationStatus| {
        // A backup that cannot be taken holds the migration, in its words.
        let holds = (!check.ok && check.reason != reasons::BACKUP_RUNNING).then(|| {
            (
                Stage::Migrations,
                Check::pending(check.reason, check.message.clone()),
            )
        });
        Report {
            check,
            migration: Some(status),
            holds,
            recheck: None,
        }
    };
    if started {
        let check = match last.as_ref().filter(|record| record.revision == target) {
            Some(record) => taken(record),
            None => Check::ok(
                reasons::BACKUP_SUCCEEDED,
                format!("the backup before revision {target} was taken"),
            ),
        };
        return report(check, status);
    }
    let record = |name: String, method: BackupMethod| BackupRecord {
        name,
        method: format!("{method:?}"),
        revision: target.to_string(),
        schema_revision: view.current_schema.map(str::to_string),
    };
    match backups.method {
        BackupMethod::Dump => {
            let name = backup_name(stack, &id);
            let job = caches.jobs.get(&stack.namespace, &name);
            let Some(job) = job else {
                return report(
                    Check::pending(
                        reasons::BACKUP_RUNNING,
                        format!(
                            "starting Job {name} to back up the database before revision {target}"
                        ),
                    ),
                    status,
                );
            };
            if stale(&job, view.generation) {
                return report(
                    Check::pending(
                        reasons::BACKUP_RUNNING,
                        format!("Job {name} was made for an earlier generation: backing up again"),
                    ),
                    status,
                );
            }
            let pods = job_pods(stack, caches, Component::Backup, &name);
            match job_state(&job) {
                JobState::Running => {
                    let check = with_pod_trouble(
                        Check::pending(
                            reasons::BACKUP_RUNNING,
                            format!("Job {name} dumps the database before revision {target}"),
                        ),
                        &pods,
                    );
                    report(check, status)
                }
                JobState::Failed(why) => report(
                    Check::failed(
                        reasons::BACKUP_FAILED,
                        format!(
                            "Job {name} failed: {why}; the migration of revision {target} waits \
                             for a backup: change retryToken to try again, or switch \
                             migrations.backup off{}",
                            printed(migration_output(&pods).as_deref())
                        ),
                    ),
                    status,
                ),
                JobState::Succeeded => {
                    let generation = job
                        .labels()
                        .get(GENERATION_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    let record = record(dump_file(&name, &generation), BackupMethod::Dump);
                    let check = taken(&record);
                    status.last_backup = Some(record);
                    report(check, status)
                }
            }
        }
        BackupMethod::Snapshot => {
            if !caches.volume_snapshots.served() {
                return report(
                    Check::pending(
                        reasons::CRD_NOT_INSTALLED,
                        "the snapshot.storage.k8s.io/v1 VolumeSnapshot API is not served: install \
                         a CSI snapshot controller and its CRDs, or set migrations.backup.method: \
                         Dump",
                    ),
                    status,
                );
            }
            let name = snapshot_name(stack, &id, view.generation);
            let Some(snapshot) = caches.volume_snapshots.get(&stack.namespace, &name) else {
                return report(
                    Check::pending(
                        reasons::BACKUP_RUNNING,
                        format!("creating VolumeSnapshot {name} before revision {target}"),
                    ),
                    status,
                );
            };
            let snapshot_status = &snapshot.data["status"];
            if snapshot_status["readyToUse"] == serde_json::Value::Bool(true) {
                let record = record(name, BackupMethod::Snapshot);
                let check = taken(&record);
                status.last_backup = Some(record);
                return report(check, status);
            }
            match snapshot_status["error"]["message"].as_str() {
                // The snapshot controller retries: not terminal.
                Some(error) => report(
                    Check::pending(
                        reasons::BACKUP_FAILED,
                        format!(
                            "VolumeSnapshot {name}: {error}; the migration of revision {target} \
                             waits for it"
                        ),
                    ),
                    status,
                ),
                None => report(
                    Check::pending(
                        reasons::BACKUP_RUNNING,
                        format!("VolumeSnapshot {name} is not ready to use yet"),
                    ),
                    status,
                ),
            }
        }
    }
}

/// `MigrationsApplied` with the rollback guard: the target revision's
/// migration as before, or what the guard decided instead of it.
pub fn migrations(stack: &ValidatedStack, caches: &Caches, view: &View<'_>) -> Report {
    let Some(migration) = &stack.migration else {
        return Check::ok(reasons::NO_MIGRATIONS, "no migrations configured").into();
    };
    let (target, step) = match view.target_and_step() {
        Ok(known) => known,
        Err(waiting) => return waiting.into(),
    };
    let previous = view.status.cloned().unwrap_or_default();
    let history = previous.history.clone();
    let applied = previous.applied_revision.clone();
    let mut status = MigrationStatus {
        target_revision: Some(target.into()),
        ..previous.clone()
    };
    let image_of = |schema: &str| {
        history
            .iter()
            .rev()
            .find(|record| record.schema_revision.as_deref() == Some(schema))
            .map(|record| record.image.clone())
    };
    let on_applied = applied
        .as_deref()
        .map(|applied| format!("revision {applied}"))
        .unwrap_or_else(|| "the last applied revision".into());
    let report = |check: Check, mut status: MigrationStatus| {
        if status.applied_revision != applied {
            // A post-deploy step ran for the revision applied before.
            status.post_deploy_revision = None;
        }
        Report {
            check,
            migration: Some(status),
            holds: None,
            recheck: None,
        }
    };
    match step {
        Step::Applied | Step::Migrate { again: false } => {
            let name = job_name(stack, target);
            let job = caches.jobs.get(&stack.namespace, &name);
            let pods = job_pods(stack, caches, Component::Migration, &name);
            let (mut check, status) = migration_check(
                target,
                &name,
                job.as_deref(),
                Some(&previous),
                migration_output(&pods).as_deref(),
            );
            if job
                .as_deref()
                .is_some_and(|job| job_state(job) == JobState::Running)
            {
                check = with_pod_trouble(check, &pods);
            }
            // Moved back under AllowSchemaAhead: it stays so while the
            // database holds a schema other than the one the revision left.
            let left = history
                .iter()
                .rev()
                .find(|record| record.revision == target)
                .and_then(|record| record.schema_revision.clone());
            if check.ok
                && let (Some(left), Some(current)) = (left, status.schema_revision.clone())
                && left != current
            {
                check = Check::ok(
                    reasons::SCHEMA_AHEAD,
                    format!(
                        "revision {target} left schema {left}; the database holds {current} \
                         (rollback: AllowSchemaAhead)"
                    ),
                );
            }
            if job.is_none()
                && !check.ok
                && let Some(earlier) = super::earlier_migration_running(stack, caches, &name)
            {
                check.message = format!(
                    "waiting for Job {earlier} to finish before starting revision {target}: two \
                     Jobs of the migrations never run at once"
                );
            }
            report(check, status)
        }
        Step::Migrate { again: true } => {
            let name = job_name(stack, target);
            let job = caches
                .jobs
                .get(&stack.namespace, &name)
                .filter(|job| !stale(job, view.generation));
            let pods = job_pods(stack, caches, Component::Migration, &name);
            status.job_name = Some(name.clone());
            status.attempts = job.as_deref().map(job_attempts).or(status.attempts);
            let check = match job.as_deref().map(job_state) {
                None => Check::pending(
                    reasons::MIGRATION_RUNNING,
                    format!(
                        "starting Job {name} to migrate revision {target} again: the schema \
                         it left was taken back since"
                    ),
                ),
                Some(JobState::Running) => with_pod_trouble(
                    Check::pending(
                        reasons::MIGRATION_RUNNING,
                        format!("Job {name} is running revision {target} again"),
                    ),
                    &pods,
                ),
                Some(JobState::Failed(why)) => Check::failed(
                    reasons::MIGRATION_FAILED,
                    format!(
                        "Job {name} failed: {why}; the backend keeps running {on_applied}; \
                         change the image or retryToken to run again{}",
                        printed(migration_output(&pods).as_deref())
                    ),
                ),
                Some(JobState::Succeeded)
                    if job.as_deref().is_some_and(|job| view.read_after(job)) =>
                {
                    Check::failed(
                        reasons::MIGRATION_FAILED,
                        format!(
                            "Job {name} succeeded, yet the database still holds schema {}: \
                             revision {target} was to take it forward again; the backend keeps \
                             running {on_applied}",
                            view.current_schema.unwrap_or("(unknown)")
                        ),
                    )
                }
                Some(JobState::Succeeded) => Check::pending(
                    reasons::MIGRATION_RUNNING,
                    format!(
                        "Job {name} succeeded; the database's schema revision is read again \
                         before the backend moves"
                    ),
                ),
            };
            report(check, status)
        }
        Step::Current { schema } => {
            status.applied_revision = Some(target.into());
            status.schema_revision = Some(schema.clone());
            report(
                Check::ok(
                    reasons::MIGRATION_SUCCEEDED,
                    format!(
                        "the database holds schema {schema}, which revision {target} left: \
                         nothing to run"
                    ),
                ),
                status,
            )
        }
        Step::Ahead {
            target: schema,
            current,
        } => {
            status.applied_revision = Some(target.into());
            status.schema_revision = Some(current.clone());
            report(
                Check::ok(
                    reasons::SCHEMA_AHEAD,
                    format!(
                        "revision {target} left schema {schema}, behind the database's \
                         {current}: the backend moves back and the schema stays \
                         (rollback: AllowSchemaAhead)"
                    ),
                ),
                status,
            )
        }
        Step::Blocked {
            target: schema,
            current,
        } => {
            let knows = image_of(current)
                .map(|image| format!(" (image {image}, which knows it)"))
                .unwrap_or_default();
            let why = format!(
                "revision {target} (image {}) left schema {schema}, behind the database's \
                 {current}",
                migration.image
            );
            let how = format!(
                "set spec.migrations.rollback to Downgrade to take the schema back to {schema} \
                 first{knows}, or to AllowSchemaAhead to move back and keep schema {current}"
            );
            let check = Check::failed(
                reasons::ROLLBACK_BLOCKED,
                format!("{why}: nothing runs; {how}"),
            );
            let backend = Check::pending(
                reasons::ROLLBACK_BLOCKED,
                format!("the backend stays on {on_applied}: {why}; {how}"),
            );
            Report {
                holds: Some((Stage::Backend, backend)),
                ..report(check, status)
            }
        }
        Step::Downgrade {
            from: None,
            target: schema,
            current,
        } => report(
            Check::failed(
                reasons::DOWNGRADE_FAILED,
                format!(
                    "no applied revision of this stack is known to have left schema {current}, \
                     so no image is known to take it back to {schema} (revision {target}'s): \
                     take it back by hand, or set spec.migrations.rollback: AllowSchemaAhead"
                ),
            ),
            status,
        ),
        Step::Downgrade {
            from: Some(from),
            target: schema,
            current,
        } => {
            let name = downgrade_job_name(stack, &step.id(target));
            let job = caches
                .jobs
                .get(&stack.namespace, &name)
                .filter(|job| !stale(job, view.generation));
            let pods = job_pods(stack, caches, Component::Migration, &name);
            status.job_name = Some(name.clone());
            status.attempts = job.as_deref().map(job_attempts).or(status.attempts);
            let RevisionRecord { image, .. } = from;
            let what = format!(
                "the schema from {current} back to {schema} for revision {target}, with image \
                 {image}"
            );
            let check = match job.as_deref().map(job_state) {
                None => Check::pending(
                    reasons::DOWNGRADE_RUNNING,
                    format!("starting Job {name} to take {what}"),
                ),
                Some(JobState::Running) => with_pod_trouble(
                    Check::pending(
                        reasons::DOWNGRADE_RUNNING,
                        format!("Job {name} takes {what}"),
                    ),
                    &pods,
                ),
                Some(JobState::Failed(why)) => Check::failed(
                    reasons::DOWNGRADE_FAILED,
                    format!(
                        "Job {name} failed: {why}; it was to take {what}; the backend keeps \
                         running {on_applied}{}",
                        printed(migration_output(&pods).as_deref())
                    ),
                ),
                Some(JobState::Succeeded)
                    if job.as_deref().is_some_and(|job| view.read_after(job)) =>
                {
                    Check::failed(
                        reasons::DOWNGRADE_FAILED,
                        format!(
                            "Job {name} succeeded, yet the database still holds schema {current}, \
                             not {schema}: check migrations.downgradeCommand; the backend keeps \
                             running {on_applied}"
                        ),
                    )
                }
                Some(JobState::Succeeded) => Check::pending(
                    reasons::DOWNGRADE_RUNNING,
                    format!(
                        "Job {name} succeeded; the database's schema revision is read again \
                         before the backend moves back"
                    ),
                ),
            };
            report(check, status)
        }
        Step::Unknown { because } => report(
            Check::pending(
                reasons::SCHEMA_UNKNOWN,
                format!(
                    "revision {target} was applied before: whether its schema is behind the \
                     database's decides what runs, and the schema revision is unknown: {because}"
                ),
            ),
            status,
        ),
    }
}

/// `PostDeployApplied`: the post-deploy step of the applied revision.
pub fn post_deploy(stack: &ValidatedStack, caches: &Caches, view: &View<'_>) -> Report {
    let Some(migration) = &stack.migration else {
        return Check::ok(
            reasons::POST_DEPLOY_NOT_CONFIGURED,
            "no migrations configured",
        )
        .into();
    };
    let Some(target) = view.target else {
        return Check::ok(reasons::POST_DEPLOY_NOT_CONFIGURED, "no post-deploy step").into();
    };
    let Some(revision) = migration.post_deploy_revision(target) else {
        return Check::ok(
            reasons::POST_DEPLOY_NOT_CONFIGURED,
            "no post-deploy step configured",
        )
        .into();
    };
    let mut status = view.status.cloned().unwrap_or_default();
    let name = post_deploy_job_name(stack, &revision);
    let done = || {
        Check::ok(
            reasons::POST_DEPLOY_SUCCEEDED,
            format!("Job {name} ran the post-deploy step of revision {target}"),
        )
    };
    if status.post_deploy_revision.as_deref() == Some(revision.as_str()) {
        return Report {
            check: done(),
            migration: Some(status),
            holds: None,
            recheck: None,
        };
    }
    let report = |check: Check, status: MigrationStatus, recheck: Option<Duration>| Report {
        check,
        migration: Some(status),
        holds: None,
        recheck,
    };
    let job = caches
        .jobs
        .get(&stack.namespace, &name)
        .filter(|job| !stale(job, view.generation));
    let pods = job_pods(stack, caches, Component::Migration, &name);
    match job.as_deref().map(job_state) {
        Some(JobState::Running) => report(
            with_pod_trouble(
                Check::pending(
                    reasons::POST_DEPLOY_RUNNING,
                    format!("Job {name} runs the post-deploy step of revision {target}"),
                ),
                &pods,
            ),
            status,
            None,
        ),
        Some(JobState::Failed(why)) => report(
            Check::failed(
                reasons::POST_DEPLOY_FAILED,
                format!(
                    "Job {name} failed: {why}; the new release keeps serving, and the \
                     post-deploy step of revision {target} waits for a change of \
                     postDeploy or retryToken{}",
                    printed(migration_output(&pods).as_deref())
                ),
            ),
            status,
            None,
        ),
        Some(JobState::Succeeded) => {
            status.post_deploy_revision = Some(revision.clone());
            // The step changed the schema: read again.
            status.schema_revision = None;
            report(done(), status, None)
        }
        None => match view.gate {
            Some(PostDeployGate::Rollout(why)) => report(
                Check::pending(
                    reasons::WAITING_FOR_ROLLOUT,
                    format!(
                        "the post-deploy step of revision {target} runs once no pod of the \
                         previous release is left: {why}"
                    ),
                ),
                status,
                None,
            ),
            Some(PostDeployGate::Soak(left)) => report(
                Check::pending(
                    reasons::SOAKING,
                    format!(
                        "revision {target} is fully rolled out; its post-deploy step runs in \
                         {} s (postDeploy.after)",
                        left.as_secs().max(1)
                    ),
                ),
                status,
                Some(*left),
            ),
            Some(PostDeployGate::Due) | None => report(
                Check::pending(
                    reasons::POST_DEPLOY_RUNNING,
                    format!("starting Job {name} for the post-deploy step of revision {target}"),
                ),
                status,
                None,
            ),
        },
    }
}

/// The cached pods of Job `name`, of `component`.
fn job_pods(
    stack: &ValidatedStack,
    caches: &Caches,
    component: Component,
    name: &str,
) -> Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>> {
    component_pods(stack, caches, component)
        .into_iter()
        .filter(|pod| pod.labels().get(JOB_NAME_LABEL).map(String::as_str) == Some(name))
        .collect()
}

fn printed(output: Option<&str>) -> String {
    output
        .map(|output| format!("; it printed:\n{output}"))
        .unwrap_or_default()
}
