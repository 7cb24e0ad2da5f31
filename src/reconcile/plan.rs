//! Plan: from the desired children and the observed (cached) ones, the
//! writes of one stage and the deletions of one pass. Pure: nothing here
//! talks to the API server, so every decision is testable on its own.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use super::compare;
use super::guard::Step;
use super::observe::{self, PostDeployGate, earlier_migration_running};
use crate::api::crd::MigrationStatus;
use crate::api::stack::ValidatedStack;
use crate::children::backup::Backup;
use crate::children::expose::Exposure;
use crate::children::{self, Children, DatabaseChildren, JobStep, Workload};
pub use crate::kinds::{Kind, Object};
use crate::kinds::{for_each_kind, markers, match_object};
use crate::runtime::cache::{Cached, Caches};
use crate::stages::Stage;

/// Finished migration Jobs of older revisions kept for inspection.
pub const KEEP_FINISHED_JOBS: usize = 3;

/// Held by a stack with `deletionPolicy: Delete` until the operator has seen
/// it being deleted. No reconcile runs after the operator releases it, so
/// none can recreate the StatefulSet (and with it a new, unowned volume)
/// once the garbage collector has started deleting the stack's children.
pub const DATABASE_FINALIZER: &str = "appstack.dev/delete-database";

/// How a desired child is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Server-side applied whenever the observed object differs.
    Apply,
    /// Created when absent, never changed: generated credentials and Jobs.
    CreateOnce,
}

/// One desired child and how it is written.
#[derive(Clone, Debug)]
pub struct Desired {
    pub object: Object,
    pub mode: Mode,
}

/// Every child, grouped by the stage that writes it, in the order each
/// stage writes them (a reader of `appstack render` sees Services before
/// the workloads they front). Destructured without `..`: a child kind added
/// to [`Children`] and given no stage does not compile.
pub fn by_stage(children: Children) -> BTreeMap<Stage, Vec<Desired>> {
    let Children {
        database_secret,
        env_secret,
        env_config,
        database,
        backups_volume,
        backup,
        migration_job,
        downgrade_job,
        post_deploy_job,
        backend,
        frontend,
        service_monitor,
        exposure,
        network_policies,
    } = children;
    let apply = |object: Object| Desired {
        object: object.with_desired_hash(),
        mode: Mode::Apply,
    };
    let once = |object| Desired {
        object,
        mode: Mode::CreateOnce,
    };
    let workload = |workload: Option<Workload>| {
        workload.map_or_else(
            Vec::new,
            |Workload {
                 deployment,
                 service,
                 disruption_budget,
             }| {
                let mut objects = vec![
                    apply(Object::Service(service)),
                    apply(Object::Deployment(deployment)),
                ];
                objects.extend(
                    disruption_budget.map(|budget| apply(Object::PodDisruptionBudget(budget))),
                );
                objects
            },
        )
    };
    let mut secrets: Vec<Desired> = database_secret
        .map(|secret| once(Object::Secret(secret)))
        .into_iter()
        .collect();
    secrets.push(apply(Object::Secret(env_secret)));
    secrets.push(apply(Object::ConfigMap(env_config)));
    // Before any pod of the stack exists, so none ever runs unconfined.
    secrets.extend(
        network_policies
            .into_iter()
            .map(|policy| apply(Object::NetworkPolicy(policy))),
    );
    let database = database.map_or_else(
        Vec::new,
        |DatabaseChildren {
             statefulset,
             service,
         }| {
            vec![
                apply(Object::Service(service)),
                apply(Object::StatefulSet(statefulset)),
            ]
        },
    );
    let mut backups: Vec<Desired> = backups_volume
        .map(|volume| once(Object::PersistentVolumeClaim(volume)))
        .into_iter()
        .collect();
    backups.extend(backup.map(|backup| match backup {
        Backup::Dump(job) => once(Object::Job(*job)),
        Backup::Snapshot(snapshot) => once(Object::VolumeSnapshot(*snapshot)),
    }));
    BTreeMap::from([
        (Stage::Secrets, secrets),
        (Stage::Database, database),
        // The gate has nothing to write: it holds the pass.
        (Stage::Approval, Vec::new()),
        (Stage::Backup, backups),
        (
            Stage::Migrations,
            migration_job
                .into_iter()
                .chain(downgrade_job)
                .map(|job| once(Object::Job(job)))
                .collect(),
        ),
        (Stage::Backend, workload(Some(backend))),
        (Stage::Frontend, workload(frontend)),
        (
            Stage::Expose,
            exposure
                .map(|exposure| match exposure {
                    Exposure::Ingress(ingress) => apply(Object::Ingress(ingress)),
                    Exposure::HttpRoute(route) => apply(Object::HttpRoute(route)),
                })
                .into_iter()
                .collect(),
        ),
        (
            Stage::Monitoring,
            service_monitor
                .map(|monitor| apply(Object::ServiceMonitor(monitor)))
                .into_iter()
                .collect(),
        ),
        (
            Stage::PostDeploy,
            post_deploy_job
                .map(|job| once(Object::Job(job)))
                .into_iter()
                .collect(),
        ),
    ])
}

/// One write of a pass.
#[derive(Clone, Debug)]
pub enum Write {
    /// Server-side apply under the operator's field manager.
    Apply(Object),
    /// Create; an existing object of that name wins.
    Create(Object),
    /// Replace an object's ownerReferences, guarded by the resourceVersion
    /// they were observed at (a concurrent change fails and is retried).
    Owners {
        kind: Kind,
        name: String,
        resource_version: Option<String>,
        owners: Vec<OwnerReference>,
    },
    /// Hold (`true`) or release the database finalizer on the stack.
    Finalizer(bool),
    /// Delete a finished Job whose result no longer holds (a downgrade
    /// undid it since), so the next pass runs it again.
    Delete(Deletion),
}

/// What the stack itself looks like to the plan.
#[derive(Clone, Debug, Default)]
pub struct StackFacts<'a> {
    /// The stack's current finalizers.
    pub finalizers: &'a [String],
    /// The last migration status written.
    pub migration: Option<&'a MigrationStatus>,
    /// The migration revision the spec asks for against the located
    /// database, if both are known.
    pub target_revision: Option<&'a str>,
    /// Whether this pass generated the database credentials. Only then is
    /// their Secret created: credentials read from a Secret deleted since
    /// are never written back (the pass the deletion wakes finds them lost).
    pub generated_credentials: bool,
    /// What the target revision needs of the database (the rollback
    /// guard's decision), once the target is known.
    pub step: Option<&'a Step>,
    /// The stack's generation: Jobs carry the one they were made for.
    pub generation: i64,
    /// Whether the post-deploy step may start: the new release is the only
    /// one and `postDeploy.after` has passed.
    pub post_deploy_gate: Option<&'a PostDeployGate>,
}

/// The writes of one stage: every desired child that is absent or differs
/// from the observed one, plus the stage's own bookkeeping (the database
/// finalizer, ownership of the credentials and the volume).
pub fn stage(
    stage: Stage,
    desired: &[Desired],
    stack: &ValidatedStack,
    caches: &Caches,
    facts: &StackFacts<'_>,
) -> Vec<Write> {
    let namespace = stack.namespace.as_str();
    let mut writes = Vec::new();
    if stage == Stage::Secrets
        && stack.deletes_database_with_stack()
        && !holds_finalizer(facts.finalizers)
    {
        // Before any database object exists, so a deletion racing a pass
        // cannot leave a volume behind.
        writes.push(Write::Finalizer(true));
    }
    for Desired { object, mode } in desired {
        let write = match object {
            Object::Secret(secret) if *mode == Mode::CreateOnce && !facts.generated_credentials => {
                owners_write::<markers::Secret>(caches, namespace, secret)
            }
            Object::Secret(secret) => {
                child_write::<markers::Secret>(caches, namespace, secret, *mode, object)
                    .or_else(|| owners_write::<markers::Secret>(caches, namespace, secret))
            }
            Object::Job(job) => job_write(job, *mode, object, stack, caches, facts),
            Object::VolumeSnapshot(snapshot) => {
                if step_job_started(stack, caches, facts) {
                    // Taken already: the migration it precedes runs.
                    None
                } else {
                    child_write::<markers::VolumeSnapshot>(
                        caches, namespace, snapshot, *mode, object,
                    )
                }
            }
            Object::PersistentVolumeClaim(volume) => child_write::<markers::PersistentVolumeClaim>(
                caches, namespace, volume, *mode, object,
            )
            .or_else(|| owners_write::<markers::PersistentVolumeClaim>(caches, namespace, volume)),
            other => match_object!(other, K, desired => {
                child_write::<K>(caches, namespace, desired, *mode, object)
            }),
        };
        writes.extend(write);
    }
    if stage == Stage::Database
        && desired
            .iter()
            .any(|child| child.object.kind() == Kind::StatefulSet)
    {
        let volume = children::database::volume_claim_name(stack);
        let owners_pending = if let Some(observed) = caches.volumes.get(namespace, &volume) {
            match children::database::volume_owner_references(stack, observed.owner_references()) {
                Some(owners) => {
                    writes.push(Write::Owners {
                        kind: Kind::PersistentVolumeClaim,
                        name: volume,
                        resource_version: observed.resource_version(),
                        owners,
                    });
                    true
                }
                None => false,
            }
        } else {
            false
        };
        let credentials_owned = caches
            .secrets
            .get(namespace, &children::database_name(stack))
            .is_some_and(|secret| {
                secret
                    .owner_references()
                    .iter()
                    .any(|owner| owner.uid == stack.uid)
            });
        if !stack.deletes_database_with_stack()
            && holds_finalizer(facts.finalizers)
            && !owners_pending
            && !credentials_owned
        {
            // Released only once the volume and the credentials no longer
            // go with the stack, as observed.
            writes.push(Write::Finalizer(false));
        }
    } else if stage == Stage::Database
        && holds_finalizer(facts.finalizers)
        && !stack.deletes_database_with_stack()
    {
        // No managed database (any more): nothing for the finalizer to guard.
        writes.push(Write::Finalizer(false));
    }
    writes
}

/// The write of a Job of the migrations: created when its step is due and
/// no other Job of the migrations runs; deleted when it finished for an
/// earlier generation and what it did no longer holds.
fn job_write(
    job: &k8s_openapi::api::batch::v1::Job,
    mode: Mode,
    object: &Object,
    stack: &ValidatedStack,
    caches: &Caches,
    facts: &StackFacts<'_>,
) -> Option<Write> {
    let namespace = stack.namespace.as_str();
    let name = job.name_any();
    let step = JobStep::of(job.labels());
    let observed = caches.jobs.get(namespace, &name);
    let stale = observed
        .as_deref()
        .is_some_and(|observed| observe::stale(observed, facts.generation));
    let applied = facts
        .migration
        .and_then(|migration| migration.applied_revision.as_deref());
    let due = match step {
        Some(JobStep::Migrate) => {
            if applied.is_some() && applied == facts.target_revision {
                // Applied before: its Job may be gone; never run it again.
                return None;
            }
            // A first run's finished Job stands; one run again after a
            // downgrade must be fresh.
            if stale && matches!(facts.step, Some(Step::Migrate { again: true })) {
                return Some(delete(job));
            }
            true
        }
        Some(JobStep::Downgrade) => {
            if stale {
                return Some(delete(job));
            }
            true
        }
        Some(JobStep::Backup) => {
            if step_job_started(stack, caches, facts) {
                // The migration it precedes runs (or ran): done.
                return None;
            }
            if stale {
                return Some(delete(job));
            }
            true
        }
        Some(JobStep::PostDeploy) => {
            let wanted = facts.target_revision.and_then(|target| {
                stack
                    .migration
                    .as_ref()
                    .and_then(|migration| migration.post_deploy_revision(target))
            });
            let done = facts
                .migration
                .and_then(|migration| migration.post_deploy_revision.as_deref())
                .is_some_and(|done| Some(done) == wanted.as_deref());
            if done || applied.is_none() || applied != facts.target_revision {
                return None;
            }
            if stale {
                return Some(delete(job));
            }
            matches!(facts.post_deploy_gate, Some(PostDeployGate::Due))
        }
        Some(JobStep::Restore) | None => true,
    };
    if !due || observed.is_some() {
        return None;
    }
    if earlier_migration_running(stack, caches, &name).is_some() {
        // The spec moved on while an earlier revision migrates: two Jobs
        // of the migrations never run against one database at once.
        return None;
    }
    child_write::<markers::Job>(caches, namespace, job, mode, object)
}

fn delete(job: &k8s_openapi::api::batch::v1::Job) -> Write {
    Write::Delete(Deletion {
        kind: Kind::Job,
        name: job.name_any(),
        uid: job.uid(),
    })
}

/// Whether the Job of this pass's schema change (the migration or the
/// downgrade a backup precedes) exists and still counts.
fn step_job_started(stack: &ValidatedStack, caches: &Caches, facts: &StackFacts<'_>) -> bool {
    let (Some(step), Some(target)) = (facts.step, facts.target_revision) else {
        return false;
    };
    let name = match step {
        Step::Migrate { .. } => children::migration::job_name(stack, target),
        Step::Downgrade { .. } => children::migration::downgrade_job_name(stack, &step.id(target)),
        _ => return false,
    };
    let again = matches!(step, Step::Migrate { again: true } | Step::Downgrade { .. });
    caches
        .jobs
        .get(&stack.namespace, &name)
        .is_some_and(|job| !(again && observe::stale(&job, facts.generation)))
}

/// The write `desired` needs given what the cache of its kind holds, if
/// any: `object` (`desired` as the write carries it) created or applied.
/// Nothing while the kind's API is not served.
fn child_write<C: Cached>(
    caches: &Caches,
    namespace: &str,
    desired: &C::Object,
    mode: Mode,
    object: &Object,
) -> Option<Write> {
    let cache = C::cache(caches);
    if !cache.served() {
        return None;
    }
    match mode {
        Mode::CreateOnce => cache
            .metadata(namespace, &desired.name_any())
            .is_none()
            .then(|| Write::Create(object.clone())),
        Mode::Apply => {
            let hash = compare::desired_hash(desired);
            match cache.holds(namespace, desired, hash, compare::matches) {
                Some(true) => None,
                Some(false) | None => Some(Write::Apply(object.clone())),
            }
        }
    }
}

/// A create-once object's ownerReferences follow the deletion policy
/// without its data ever being rewritten.
fn owners_write<C: Cached>(caches: &Caches, namespace: &str, desired: &C::Object) -> Option<Write> {
    let observed = C::cache(caches).metadata(namespace, &desired.name_any())?;
    let owners = desired.meta().owner_references.clone().unwrap_or_default();
    let observed_owners = observed.owner_references.as_deref().unwrap_or_default();
    (owners.as_slice() != observed_owners).then(|| Write::Owners {
        kind: C::KIND,
        name: desired.name_any(),
        resource_version: observed.resource_version,
        owners,
    })
}

pub fn holds_finalizer(finalizers: &[String]) -> bool {
    finalizers.iter().any(|name| name == DATABASE_FINALIZER)
}

/// The stack's finalizers with [`DATABASE_FINALIZER`] held exactly when
/// `wanted`, or `None` when `current` already is that.
pub fn desired_finalizers(current: &[String], wanted: bool) -> Option<Vec<String>> {
    match (holds_finalizer(current), wanted) {
        (false, true) => Some(
            current
                .iter()
                .cloned()
                .chain([DATABASE_FINALIZER.to_string()])
                .collect(),
        ),
        (true, false) => Some(
            current
                .iter()
                .filter(|name| *name != DATABASE_FINALIZER)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

/// An object a pass deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub kind: Kind,
    pub name: String,
    pub uid: Option<String>,
}

macro_rules! sweep_kinds {
    (($stack:expr, $wanted:expr, $caches:expr, $current_job:expr, $deletions:ident) $(
        $kind:ident: $object:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        $($deletions.extend(sweep::$sweep::<markers::$kind>(
            $stack, $wanted, $caches, $current_job,
        ));)*
    };
}

/// Children of switched-off components: objects labelled as this stack's,
/// owned by its UID, that are not desired. Finished migration Jobs of older
/// revisions beyond the last few go too, and older ones whose pods were
/// held before they ever ran. Each kind is swept as the table of
/// kinds says ([`crate::kinds`]); volumes are never deleted here.
pub fn orphans(
    stack: &ValidatedStack,
    desired: &BTreeMap<Stage, Vec<Desired>>,
    caches: &Caches,
) -> Vec<Deletion> {
    let wanted: BTreeSet<(Kind, String)> = desired
        .values()
        .flatten()
        .map(|child| (child.object.kind(), child.object.name()))
        .collect();
    let current_job = desired
        .get(&Stage::Migrations)
        .and_then(|jobs| jobs.first())
        .map(|job| job.object.name());
    let mut deletions = Vec::new();
    for_each_kind!(
        sweep_kinds,
        stack,
        &wanted,
        caches,
        current_job.as_deref(),
        deletions
    );
    deletions
}

/// How the orphan sweep treats each kind, by the name the table of kinds
/// gives it.
mod sweep {
    use std::collections::{BTreeMap, BTreeSet};

    use k8s_openapi::api::batch::v1::Job;
    use kube::ResourceExt;
    use kube::api::DynamicObject;

    use super::{Deletion, KEEP_FINISHED_JOBS, Kind};
    use crate::api::stack::ValidatedStack;
    use crate::children::{JobStep, LABEL_COMPONENT, STEP_LABEL};
    use crate::kinds::ChildKind;
    use crate::reconcile::observe::{JOB_NAME_LABEL, job_finished};
    use crate::reconcile::pods::held_before_starting;
    use crate::runtime::cache::{Cached, Caches};

    /// Objects the stack owns and no longer desires, while the kind's API
    /// is served.
    pub fn owned<C: Cached>(
        stack: &ValidatedStack,
        wanted: &BTreeSet<(Kind, String)>,
        caches: &Caches,
        _current_job: Option<&str>,
    ) -> Vec<Deletion> {
        let cache = C::cache(caches);
        if !cache.served() {
            return Vec::new();
        }
        cache
            .metadata_of_stack(&stack.namespace, &stack.name)
            .into_iter()
            .filter(|meta| {
                let owned = meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| owner.uid == stack.uid);
                let name = meta.name.clone().unwrap_or_default();
                owned && !wanted.contains(&(C::KIND, name))
            })
            .map(|meta| Deletion {
                kind: C::KIND,
                name: meta.name.unwrap_or_default(),
                uid: meta.uid,
            })
            .collect()
    }

    /// Jobs of the migrations and backups that no pass desires any more:
    /// finished ones of each component beyond the newest
    /// [`KEEP_FINISHED_JOBS`], and unfinished ones whose pods were all held
    /// before their container ever ran (a root image under `runAsNonRoot`,
    /// an image that cannot be pulled). Such a Job did nothing and never
    /// will by itself, yet the target revision's Job waits for every
    /// earlier one to finish: left alone, the spec's fix (a `runAsUser`,
    /// another image) would wait out its deadline.
    pub fn superseded_jobs<C: Cached<Object = Job>>(
        stack: &ValidatedStack,
        wanted: &BTreeSet<(Kind, String)>,
        caches: &Caches,
        _current_job: Option<&str>,
    ) -> Vec<Deletion> {
        let older: Vec<_> = C::cache(caches)
            .of_stack(&stack.namespace, &stack.name)
            .into_iter()
            .filter(|job| {
                job.owner_references()
                    .iter()
                    .any(|owner| owner.uid == stack.uid)
            })
            .filter(|job| !wanted.contains(&(C::KIND, job.name_any())))
            .collect();
        let deletion = |job: &Job| Deletion {
            kind: C::KIND,
            name: job.name_any(),
            uid: job.uid(),
        };
        let held: Vec<Deletion> = older
            .iter()
            .filter(|job| !job_finished(job) && never_ran(job, caches, stack))
            .map(|job| deletion(job))
            .collect();
        let mut finished: Vec<_> = older.into_iter().filter(|job| job_finished(job)).collect();
        // Newest first; everything after the first few of a component goes.
        finished.sort_by_key(|job| std::cmp::Reverse(job.creation_timestamp()));
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        finished
            .into_iter()
            .filter(|job| {
                let component = job
                    .labels()
                    .get(LABEL_COMPONENT)
                    .cloned()
                    .unwrap_or_default();
                let count = seen.entry(component).or_default();
                *count += 1;
                *count > KEEP_FINISHED_JOBS
            })
            .map(|job| deletion(&job))
            .chain(held)
            .collect()
    }

    /// Whether the Job has pods, none has ever run its container, and the
    /// Job counts no pod that succeeded or failed.
    fn never_ran(job: &Job, caches: &Caches, stack: &ValidatedStack) -> bool {
        let counted = job
            .status
            .as_ref()
            .is_some_and(|status| status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0);
        let name = job.name_any();
        let pods: Vec<_> = caches
            .pods
            .of_stack(&stack.namespace, &stack.name)
            .into_iter()
            .filter(|pod| pod.labels().get(JOB_NAME_LABEL) == Some(&name))
            .collect();
        !counted && !pods.is_empty() && pods.iter().all(|pod| held_before_starting(pod))
    }

    /// The stack's backup VolumeSnapshots beyond the `keep` newest, while
    /// backups are asked for (never when they are switched off: a backup is
    /// not deleted by accident), and never one this pass desires.
    pub fn snapshots<C: Cached<Object = DynamicObject>>(
        stack: &ValidatedStack,
        wanted: &BTreeSet<(Kind, String)>,
        caches: &Caches,
        _current_job: Option<&str>,
    ) -> Vec<Deletion> {
        let cache = C::cache(caches);
        let Some(backups) = stack.backups() else {
            return Vec::new();
        };
        if !cache.served() {
            return Vec::new();
        }
        let mut snapshots: Vec<_> = cache
            .of_stack(&stack.namespace, &stack.name)
            .into_iter()
            .filter(|snapshot| {
                snapshot.labels().get(STEP_LABEL).map(String::as_str)
                    == Some(JobStep::Backup.as_str())
            })
            .collect();
        snapshots.sort_by_key(|snapshot| std::cmp::Reverse(snapshot.creation_timestamp()));
        snapshots
            .into_iter()
            .skip(backups.keep)
            .filter(|snapshot| !wanted.contains(&(C::KIND, snapshot.name_any())))
            .map(|snapshot| Deletion {
                kind: C::KIND,
                name: snapshot.name_any(),
                uid: snapshot.uid(),
            })
            .collect()
    }

    /// Never deleted by the sweep (volumes outlive the stack's children).
    // Called, like every sweep, with the kind the table names.
    #[allow(clippy::extra_unused_type_parameters)]
    pub fn kept<C: ChildKind>(
        _stack: &ValidatedStack,
        _wanted: &BTreeSet<(Kind, String)>,
        _caches: &Caches,
        _current_job: Option<&str>,
    ) -> Vec<Deletion> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;
    use kube::runtime::watcher::Event;

    fn desired_of(stack: &ValidatedStack) -> BTreeMap<Stage, Vec<Desired>> {
        by_stage(children::build_for_test(stack))
    }

    #[test]
    fn an_empty_cache_plans_every_child_and_the_finalizer_comes_first_under_delete() {
        let mut stack = example();
        if let crate::api::stack::Database::Managed(managed) = &mut stack.database {
            managed.deletion_policy = crate::api::crd::DeletionPolicy::Delete;
        }
        let (caches, _) = Caches::new();
        let desired = desired_of(&stack);
        let facts = StackFacts {
            generated_credentials: true,
            ..StackFacts::default()
        };
        let writes = super::stage(
            Stage::Secrets,
            &desired[&Stage::Secrets],
            &stack,
            &caches,
            &facts,
        );
        assert_eq!(
            write_names(&writes),
            [
                "finalizer true",
                "create shop-db",
                "apply shop-env",
                "apply shop-env",
                "apply shop-default-deny",
                "apply shop-database",
                "apply shop-migration",
                "apply shop-backend",
                "apply shop-frontend",
            ]
        );
    }

    fn write_names(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .map(|write| match write {
                Write::Apply(object) => format!("apply {}", object.name()),
                Write::Create(object) => format!("create {}", object.name()),
                Write::Finalizer(held) => format!("finalizer {held}"),
                Write::Owners { name, .. } => format!("owners {name}"),
                Write::Delete(deletion) => format!("delete {}", deletion.name),
            })
            .collect()
    }

    #[test]
    fn credentials_read_from_a_secret_deleted_since_are_not_written_back() {
        let stack = example();
        let (caches, _) = Caches::new();
        let desired = desired_of(&stack);
        // The pass resolved the credentials from Secret shop-db; by the
        // time it plans, the watch has shown the Secret deleted.
        let writes = super::stage(
            Stage::Secrets,
            &desired[&Stage::Secrets],
            &stack,
            &caches,
            &StackFacts::default(),
        );
        let names = write_names(&writes);
        assert!(
            !names.iter().any(|name| name.contains("shop-db")),
            "{names:?}"
        );
        assert!(names.contains(&"apply shop-env".to_string()), "{names:?}");
    }

    #[test]
    fn an_observed_child_that_matches_is_not_written_and_quantities_compare_as_quantities() {
        let stack = crate::api::stack::tests::from_yaml(
            "apiVersion: appstack.dev/v1alpha1\nkind: AppStack\nmetadata: {name: shop}\nspec:\n  backend: {image: x, resources: {requests: {cpu: \"0.5\"}}}\n  database: {managed: {storage: {size: 0.5Gi}}}\n",
        );
        let desired = desired_of(&stack);
        let (caches, _) = Caches::new();
        for child in &desired[&Stage::Backend] {
            if let Object::Deployment(deployment) = &child.object {
                let mut observed = serde_json::to_value(deployment).unwrap();
                let requests = &mut observed["spec"]["template"]["spec"]["containers"][0]["resources"]
                    ["requests"];
                assert_eq!(requests["cpu"], "0.5");
                requests["cpu"] = "500m".into();
                observed["spec"]["revisionHistoryLimit"] = 10.into();
                caches
                    .deployments
                    .apply_event(Event::Apply(serde_json::from_value(observed).unwrap()));
            }
        }
        for child in &desired[&Stage::Database] {
            if let Object::StatefulSet(statefulset) = &child.object {
                let mut observed = serde_json::to_value(statefulset).unwrap();
                observed["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
                    "512Mi".into();
                caches
                    .statefulsets
                    .apply_event(Event::Apply(serde_json::from_value(observed).unwrap()));
            }
        }
        let facts = StackFacts::default();
        let backend = super::stage(
            Stage::Backend,
            &desired[&Stage::Backend],
            &stack,
            &caches,
            &facts,
        );
        assert!(
            backend
                .iter()
                .all(|write| !matches!(write, Write::Apply(Object::Deployment(_)))),
            "0.5 CPU is 500m: {backend:?}"
        );
        let database = super::stage(
            Stage::Database,
            &desired[&Stage::Database],
            &stack,
            &caches,
            &facts,
        );
        assert!(
            database
                .iter()
                .all(|write| !matches!(write, Write::Apply(Object::StatefulSet(_)))),
            "0.5Gi is 512Mi: {database:?}"
        );
    }

    #[test]
    fn a_settled_child_is_not_written_until_the_watch_or_the_spec_changes_it() {
        let stack = example();
        let desired = desired_of(&stack);
        let deployment = desired[&Stage::Backend]
            .iter()
            .find_map(|child| match &child.object {
                Object::Deployment(deployment) => Some(deployment.clone()),
                _ => None,
            })
            .unwrap();
        let (caches, _) = Caches::new();
        let observe = |version: &str, replicas: i32| {
            let mut observed = serde_json::to_value(&deployment).unwrap();
            observed["metadata"]["resourceVersion"] = version.into();
            observed["spec"]["replicas"] = replicas.into();
            observed["status"] =
                serde_json::json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
            caches
                .deployments
                .apply_event(Event::Apply(serde_json::from_value(observed).unwrap()));
        };
        let writes_deployment = |desired: &[Desired]| {
            super::stage(
                Stage::Backend,
                desired,
                &stack,
                &caches,
                &StackFacts::default(),
            )
            .iter()
            .any(|write| matches!(write, Write::Apply(Object::Deployment(_))))
        };
        let settled = || {
            caches
                .deployments
                .state()
                .iter()
                .all(|packed| packed.is_settled())
        };
        let wanted = deployment.spec.replicas.unwrap();
        observe("1", wanted);
        let whole = caches
            .deployments
            .get(&stack.namespace, &deployment.name_any())
            .unwrap();
        assert!(!writes_deployment(&desired[&Stage::Backend]));
        assert!(
            settled(),
            "found to hold the desired Deployment, it is settled"
        );
        let residue = caches
            .deployments
            .get(&stack.namespace, &deployment.name_any())
            .unwrap();
        assert_eq!(
            super::super::observe::deployment_check(&residue),
            super::super::observe::deployment_check(&whole),
            "the status reads the same of it"
        );
        assert!(
            !writes_deployment(&desired[&Stage::Backend]),
            "and it is not written on the next pass"
        );

        observe("2", wanted + 3);
        assert!(!settled());
        assert!(
            writes_deployment(&desired[&Stage::Backend]),
            "a change another writer made is undone"
        );

        observe("3", wanted);
        assert!(!writes_deployment(&desired[&Stage::Backend]));
        assert!(settled());
        let mut changed = example();
        changed.backend.image = "shop:2".into();
        assert!(
            writes_deployment(&desired_of(&changed)[&Stage::Backend]),
            "a change of the spec is applied to a settled child"
        );
    }

    #[test]
    fn the_database_finalizer_is_added_and_released_beside_others() {
        let others = vec!["example.com/keep".to_string()];
        let held = desired_finalizers(&others, true).unwrap();
        assert_eq!(held, ["example.com/keep", DATABASE_FINALIZER]);
        assert_eq!(desired_finalizers(&held, true), None);
        assert_eq!(desired_finalizers(&held, false).unwrap(), others);
        assert_eq!(desired_finalizers(&others, false), None);
        assert_eq!(desired_finalizers(&[], false), None);
    }

    #[test]
    fn a_switched_off_child_owned_by_the_stack_is_an_orphan_and_others_are_not() {
        let stack = example();
        let mut without_frontend = stack.clone();
        without_frontend.frontend = None;
        let (caches, _) = Caches::new();
        for child in desired_of(&stack).values().flatten() {
            if let Object::Deployment(deployment) = &child.object {
                caches
                    .deployments
                    .apply_event(Event::Apply(deployment.clone()));
            }
        }
        let mut foreign = desired_of(&stack)[&Stage::Frontend][1].clone();
        if let Object::Deployment(deployment) = &mut foreign.object {
            deployment.metadata.name = Some("shop-other".into());
            deployment.metadata.owner_references = None;
            caches
                .deployments
                .apply_event(Event::Apply(deployment.clone()));
        }
        let deletions = orphans(&without_frontend, &desired_of(&without_frontend), &caches);
        assert_eq!(
            deletions,
            [Deletion {
                kind: Kind::Deployment,
                name: "shop-frontend".into(),
                uid: None
            }]
        );
    }

    #[test]
    fn a_new_revision_waits_for_an_earlier_one_still_running() {
        let stack = example();
        let desired = desired_of(&stack);
        let Object::Job(target) = &desired[&Stage::Migrations][0].object else {
            panic!("the migration stage writes a Job");
        };
        let (caches, _) = Caches::new();
        let mut earlier = target.clone();
        earlier.metadata.name = Some("shop-migrate-earlier".into());
        caches.jobs.apply_event(Event::Apply(earlier.clone()));
        let revision = target.labels()[children::MIGRATION_REVISION_LABEL].clone();
        let facts = StackFacts {
            target_revision: Some(&revision),
            ..StackFacts::default()
        };
        let plan = || {
            super::stage(
                Stage::Migrations,
                &desired[&Stage::Migrations],
                &stack,
                &caches,
                &facts,
            )
        };
        assert!(plan().is_empty(), "the earlier Job runs: wait");
        earlier.status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [{"type": "Complete", "status": "True"}]
            }))
            .unwrap(),
        );
        caches.jobs.apply_event(Event::Apply(earlier));
        assert!(
            matches!(plan().as_slice(), [Write::Create(Object::Job(job))] if job.name_any() == target.name_any()),
            "the earlier Job finished: start"
        );
    }

    #[test]
    fn an_earlier_job_whose_pod_never_ran_is_swept_so_the_fixed_revision_can_start() {
        let stack = example();
        let desired = desired_of(&stack);
        let Object::Job(target) = &desired[&Stage::Migrations][0].object else {
            panic!("the migration stage writes a Job");
        };
        let (caches, _) = Caches::new();
        let mut earlier = target.clone();
        earlier.metadata.name = Some("shop-migrate-earlier".into());
        caches.jobs.apply_event(Event::Apply(earlier.clone()));
        let pod_in = |state: serde_json::Value| {
            let mut labels = target.labels().clone();
            labels.insert(
                crate::reconcile::observe::JOB_NAME_LABEL.into(),
                "shop-migrate-earlier".into(),
            );
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "shop-migrate-earlier-abcde", "namespace": stack.namespace,
                    "labels": labels},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "migrate",
                    "ready": false, "restartCount": 0, "state": state}]}
            }))
            .unwrap();
            caches.pods.apply_event(Event::Apply(pod));
        };
        let swept = || {
            orphans(&stack, &desired, &caches)
                .into_iter()
                .any(|deletion| deletion.name == "shop-migrate-earlier")
        };
        assert!(!swept(), "no pod seen yet: it may be about to run");
        pod_in(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}));
        assert!(!swept(), "being created: it may be about to run");
        pod_in(serde_json::json!({"running": {}}));
        assert!(!swept(), "it migrates: the new revision waits for it");
        pod_in(
            serde_json::json!({"waiting": {"reason": "CreateContainerConfigError",
            "message": "container has runAsNonRoot and image will run as root"}}),
        );
        assert!(swept(), "refused by the kubelet before it ran: it goes");
    }
}
