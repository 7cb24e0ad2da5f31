//! Schema-aware delivery on the real node, with the seed app's real
//! PostgreSQL and Alembic: a `pg_dump` taken before a migration and
//! restored into a fresh database with its rows; a rollback from `:2` to
//! `:1` blocked while the database holds the newer schema, then done with
//! `Downgrade` (the schema really goes back, release 1 serves it); and a
//! contract step that drops a column only once no container of the old
//! release runs.
//!
//! The tests print what they measured and what the database held. `scripts/test.sh`
//! runs them in its real-node phase: `cargo test --test suite -- --ignored
//! real_schema::`.

use std::time::Duration;

use appstack::api::crd::{AppStack, MigrationStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::real_node::{
    LIMIT, RealNamespace, Traffic, TrafficReport, http_get_from, psql, psql_in, unix_now,
};
use crate::common::{
    apply_stack, condition, condition_message, eventually, kubectl, plugin, wait_for,
};
use crate::real_stack::{
    STACK, alembic_version, backend, backend_image, backend_url, post_item, ready, seed_ready,
    seed_stack_without_frontend,
};

const STEP_LABEL: &str = "appstack.dev/step";

fn database_pod() -> String {
    format!("{STACK}-db-0")
}

fn migration(stack: &AppStack) -> MigrationStatus {
    stack
        .status
        .clone()
        .and_then(|status| status.migration)
        .expect("status.migration")
}

/// The columns of `items`, in order, in `database` of the stack's server.
async fn item_columns(ns: &str, database: &str) -> String {
    psql_in(
        ns,
        &database_pod(),
        database,
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = 'items'",
    )
    .await
    .expect("psql in the database pod")
}

/// The stack's Jobs of one step (`backup`, `migrate`, `downgrade`,
/// `post-deploy`).
async fn jobs(real: &RealNamespace, step: &str) -> Vec<Job> {
    Api::<Job>::namespaced(real.client.clone(), real.ns())
        .list(&ListParams::default().labels(&format!("{STEP_LABEL}={step}")))
        .await
        .unwrap()
        .items
}

fn unix(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    time.0.as_second() as f64
}

/// When the Job completed (whole seconds, as the API server keeps it).
fn completed_at(job: &Job) -> f64 {
    unix(
        job.status
            .as_ref()
            .and_then(|status| status.completion_time.as_ref())
            .unwrap_or_else(|| panic!("Job {} completed", job.name_any())),
    )
}

fn job_image(job: &Job) -> String {
    job.spec.clone().unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// Waits until Job `name` succeeded; on a failure, panics with its log.
async fn job_succeeded(real: &RealNamespace, name: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(real.client.clone(), real.ns());
    let job = eventually(&format!("Job {name} to finish"), LIMIT, || async {
        let job = jobs.get(name).await.ok()?;
        let status = job.status.as_ref()?;
        (status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0).then_some(job)
    })
    .await;
    if job.status.as_ref().and_then(|status| status.succeeded) != Some(1) {
        let log = kubectl()
            .args(["logs", "-n", real.ns(), &format!("job/{name}")])
            .output()
            .await
            .unwrap();
        panic!(
            "Job {name} failed: {}{}",
            String::from_utf8_lossy(&log.stdout),
            String::from_utf8_lossy(&log.stderr)
        );
    }
    job
}

#[tokio::test]
#[ignore = "needs the real node and the images: scripts/test.sh runs it"]
async fn a_dump_taken_before_the_migration_restores_into_a_fresh_database_with_its_rows() {
    let with_backups = |tag: &str| {
        let mut stack = seed_stack_without_frontend(&backend(tag));
        stack["spec"]["migrations"]["backup"] = json!({"enabled": true, "keep": 2});
        stack
    };
    let real = seed_ready("real-backup", &with_backups("1")).await;
    let ns = real.ns();
    for name in ["kept-1", "kept-2"] {
        post_item(ns, json!({"name": name, "note": "written by release 1"})).await;
    }
    let query = "SELECT id, name, note FROM items ORDER BY id";
    let rows = psql(ns, &database_pod(), query).await.unwrap();
    assert_eq!(
        rows,
        "1|kept-1|written by release 1\n2|kept-2|written by release 1"
    );

    // The upgrade: a dump, then the migration.
    apply_stack(&real.client, ns, &with_backups("2")).await;
    let (upgraded, took) = ready(&real).await;
    println!(
        "figure=backup_then_upgrade_ready_seconds {:.1}",
        took.as_secs_f64()
    );
    let status = migration(&upgraded);
    let target = status.target_revision.clone().unwrap();
    let last = status
        .last_backup
        .clone()
        .expect("status.migration.lastBackup");
    println!("status.migration.lastBackup: {last:?}");
    assert_eq!(last.method, "Dump");
    assert_eq!(last.revision, target, "taken before this revision");
    assert_eq!(last.schema_revision.as_deref(), Some("0001"));
    assert_eq!(alembic_version(ns).await, "0002");
    let backup = job_succeeded(&real, &format!("{STACK}-backup-{target}")).await;
    assert_eq!(job_image(&backup), "appstack.test/postgres:15");
    let migrate = Api::<Job>::namespaced(real.client.clone(), ns)
        .get(&format!("{STACK}-migrate-{target}"))
        .await
        .unwrap();
    let migration_created = unix(migrate.metadata.creation_timestamp.as_ref().unwrap());
    assert!(
        completed_at(&backup) <= migration_created,
        "the migration Job was created at {migration_created}, before the dump completed at {}",
        completed_at(&backup)
    );
    // A row written after the dump is not in it.
    post_item(
        ns,
        json!({"name": "later", "description": "written by release 2"}),
    )
    .await;

    // The dump, restored beside the live database.
    let output = plugin(&["restore", STACK, "-n", ns, "--into", "seed_restored"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    println!("{}", printed.trim());
    let job = printed
        .split_whitespace()
        .skip_while(|word| *word != "Job")
        .nth(1)
        .expect("the plugin names the restore Job");
    assert!(printed.contains(&last.name), "{printed}");
    job_succeeded(&real, job).await;
    let restored = psql_in(ns, &database_pod(), "seed_restored", query)
        .await
        .unwrap();
    println!("seed_restored after the restore:\n{restored}");
    assert_eq!(restored, rows, "the rows the dump held, and only those");
    assert_eq!(
        psql_in(
            ns,
            &database_pod(),
            "seed_restored",
            "SELECT version_num FROM alembic_version"
        )
        .await
        .unwrap(),
        "0001"
    );
    assert_eq!(item_columns(ns, "seed_restored").await, "id,name,note");
    // The live database is untouched: release 2's schema and all three rows.
    assert_eq!(alembic_version(ns).await, "0002");
    assert_eq!(
        item_columns(ns, "\"$POSTGRES_DB\"").await,
        "id,name,note,description"
    );
    assert_eq!(
        psql(ns, &database_pod(), "SELECT count(*) FROM items")
            .await
            .unwrap(),
        "3"
    );
}

/// The first unix time at which `/api/version` was answered by `version`,
/// from the traffic pod's log lines after `from`.
fn first_answer(report: &TrafficReport, version: &str) -> Option<f64> {
    report
        .answers
        .iter()
        .find(|(_, answered)| answered == version)
        .map(|(time, _)| *time)
}

#[tokio::test]
#[ignore = "needs the real node and the images: scripts/test.sh runs it"]
async fn a_rollback_behind_the_schema_is_blocked_then_downgraded_and_release_1_serves_schema_0001()
{
    let real = seed_ready("real-rollback", &seed_stack_without_frontend(&backend("1"))).await;
    let ns = real.ns();
    post_item(ns, json!({"name": "kept", "note": "written by release 1"})).await;
    apply_stack(
        &real.client,
        ns,
        &seed_stack_without_frontend(&backend("2")),
    )
    .await;
    ready(&real).await;
    assert_eq!(alembic_version(ns).await, "0002");
    let traffic = Traffic::start(&real, "traffic", &backend_url(ns)).await;

    // Back to :1, whose schema is behind the database's: blocked.
    let from = unix_now();
    let mut back = seed_stack_without_frontend(&backend("1"));
    apply_stack(&real.client, ns, &back).await;
    let blocked = wait_for(
        &real.client,
        ns,
        STACK,
        "MigrationsApplied",
        "False",
        Some("RollbackBlocked"),
    )
    .await;
    let blocked_at = unix_now();
    let message = condition_message(&blocked, "MigrationsApplied");
    println!("the blocked rollback, as the stack reports it:\n{message}");
    assert!(
        message.contains("0001") && message.contains("0002"),
        "the condition names both schema revisions: {message}"
    );
    assert_eq!(
        condition(&blocked, "Stalled").map(|(status, _)| status),
        Some("True".to_string())
    );
    traffic.wait_for_requests_after(blocked_at, 30).await;
    let while_blocked = traffic.report(from, unix_now()).await;
    println!("figure=rollback_blocked {while_blocked}");
    assert!(
        while_blocked.failures.is_empty(),
        "{:#?}",
        while_blocked.failures
    );
    assert_eq!(while_blocked.versions, ["2"], "release 2 keeps serving");
    assert_eq!(backend_image(&real).await, backend("2"));
    assert_eq!(alembic_version(ns).await, "0002");
    assert!(jobs(&real, "downgrade").await.is_empty());

    // Downgrade: release 2's image takes the schema back, then the backend
    // moves.
    back["spec"]["migrations"]["rollback"] = json!("Downgrade");
    let from = unix_now();
    apply_stack(&real.client, ns, &back).await;
    let (rolled_back, took) = ready(&real).await;
    traffic.wait_for_version("1", 20).await;
    let downgrade = traffic.report(from, unix_now()).await;
    println!(
        "figure=rollback_downgrade ready_seconds={:.1} {downgrade}",
        took.as_secs_f64()
    );
    let downgrades = jobs(&real, "downgrade").await;
    assert_eq!(downgrades.len(), 1, "one downgrade Job");
    let job = &downgrades[0];
    assert_eq!(job_image(job), backend("2"), "the newer revision's image");
    let downgraded_at = completed_at(job);
    let downgrade_started_at = unix(
        job.status
            .as_ref()
            .and_then(|status| status.start_time.as_ref())
            .expect("the downgrade Job started"),
    );
    let release_1_at = first_answer(&downgrade, "1").expect("release 1 answered");
    assert!(
        release_1_at >= downgraded_at,
        "release 1 answered at {release_1_at}, before the downgrade completed at {downgraded_at}"
    );
    assert_eq!(alembic_version(ns).await, "0001");
    assert_eq!(item_columns(ns, "\"$POSTGRES_DB\"").await, "id,name,note");
    assert_eq!(
        migration(&rolled_back).schema_revision.as_deref(),
        Some("0001")
    );
    assert_eq!(backend_image(&real).await, backend("1"));
    // Release 1 serves the schema it was written for, with the row it wrote.
    let release_2_last = downgrade
        .answers
        .iter()
        .filter(|(_, version)| version == "2")
        .map(|(time, _)| *time)
        .fold(from, f64::max);
    let failed_at: Vec<f64> = downgrade
        .failures
        .iter()
        .map(|failure| failure.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    println!(
        "figure=rollback_timeline downgrade_started={:.1} downgrade_completed={:.1} \
         first_failure={:.1} last_failure={:.1} release_1_first={:.1} release_2_last={:.1} \
         (seconds after the Downgrade was applied; Job times in whole seconds)",
        downgrade_started_at - from,
        downgraded_at - from,
        failed_at.iter().copied().fold(f64::NAN, f64::min) - from,
        failed_at.iter().copied().fold(f64::NAN, f64::max) - from,
        release_1_at - from,
        release_2_last - from,
    );
    let (status, items) = http_get_from(ns, "probe", &format!("{}/api/items", backend_url(ns)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{items}");
    assert!(items.contains("written by release 1"), "{items}");
    // Once only release 1 answers, nothing fails.
    let settled = traffic.report(release_2_last + 2.0, unix_now()).await;
    println!("figure=rollback_release_1_alone {settled}");
    assert!(settled.requests >= 20, "{settled}");
    assert!(settled.failures.is_empty(), "{:#?}", settled.failures);
    // Before that, requests failed only where release 2 still answered on
    // the schema the downgrade had taken back (its code reads
    // `description`): reads of items, never a version request, never
    // before the downgrade started.
    for (failure, time) in downgrade.failures.iter().zip(&failed_at) {
        assert!(
            failure.contains(" /api/items HTTPError: HTTP Error 500"),
            "{failure}"
        );
        assert!(
            *time >= downgrade_started_at && *time <= release_2_last + 2.0,
            "{failure}: outside the window in which release 2 ran on schema 0001"
        );
    }
}

/// Polls the stack's backend pods and post-deploy Jobs every 100 ms until
/// the post-deploy Job appears: which pods of `old_image` still ran a
/// container at that moment (terminating or not), and when the last one
/// stopped.
fn watch_contract(real: &RealNamespace, old_image: String) -> tokio::task::JoinHandle<Contract> {
    let client = real.client.clone();
    let ns = real.ns().to_string();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let started = unix_now();
        let mut seen = Contract::default();
        loop {
            // Jobs first: a pod listed after the Job appeared existed when
            // it appeared.
            let post = jobs
                .list(&ListParams::default().labels(&format!("{STEP_LABEL}=post-deploy")))
                .await
                .map(|list| !list.items.is_empty())
                .unwrap_or(false);
            // A pod whose containers all exited (its phase terminal) sends
            // no query, even while its object is still being deleted.
            let old: Vec<String> = pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=backend"))
                .await
                .map(|list| {
                    list.items
                        .iter()
                        .filter(|pod| {
                            pod.spec.as_ref().is_some_and(|spec| {
                                spec.containers[0].image.as_deref() == Some(old_image.as_str())
                            }) && !pod.status.as_ref().is_some_and(|status| {
                                matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
                            })
                        })
                        .map(|pod| {
                            let phase = pod.status.as_ref().and_then(|status| status.phase.clone());
                            let terminating = pod.metadata.deletion_timestamp.is_some();
                            format!("{} {phase:?} terminating={terminating}", pod.name_any())
                        })
                        .collect()
                })
                .unwrap_or_else(|error| vec![format!("pods unknown: {error}")]);
            let now = unix_now();
            if old.is_empty() && seen.old_gone_at.is_none() {
                seen.old_gone_at = Some(now);
            }
            if post {
                seen.post_deploy_seen_at = Some(now);
                seen.old_pods_then = old;
                return seen;
            }
            assert!(
                now - started < LIMIT.as_secs_f64(),
                "no post-deploy Job within {LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[derive(Clone, Debug, Default)]
struct Contract {
    old_gone_at: Option<f64>,
    post_deploy_seen_at: Option<f64>,
    /// Pods of the old release whose containers still ran then.
    old_pods_then: Vec<String>,
}

#[tokio::test]
#[ignore = "needs the real node and the images: scripts/test.sh runs it"]
async fn a_contract_step_drops_a_column_only_once_no_container_of_the_old_release_runs() {
    let real = seed_ready("real-contract", &seed_stack_without_frontend(&backend("1"))).await;
    let ns = real.ns();
    post_item(ns, json!({"name": "kept", "note": "written by release 1"})).await;
    let traffic = Traffic::start(&real, "traffic", &backend_url(ns)).await;

    // Expand (0002) before the rollout, contract (0003c, drops `note`)
    // after it.
    let mut stack = seed_stack_without_frontend(&backend("2-contract"));
    stack["spec"]["migrations"]["command"] = json!(["alembic", "upgrade", "0002"]);
    stack["spec"]["migrations"]["postDeploy"] = json!({"command": ["alembic", "upgrade", "head"]});
    let watch = watch_contract(&real, backend("1"));
    let from = unix_now();
    apply_stack(&real.client, ns, &stack).await;
    let seen = watch.await.unwrap();
    let (contracted, _) = ready(&real).await;
    let took = unix_now() - from;
    traffic.wait_for_version("2", 20).await;
    let report = traffic.report(from, unix_now()).await;
    println!(
        "figure=expand_contract ready_seconds={took:.1} {report} contract_after_old_gone_seconds={:.1}",
        seen.post_deploy_seen_at.unwrap() - seen.old_gone_at.unwrap_or(f64::NAN)
    );
    assert!(
        seen.old_pods_then.is_empty(),
        "the post-deploy Job appeared while pods of release 1 still ran: {:?}",
        seen.old_pods_then
    );
    let old_gone_at = seen.old_gone_at.expect("release 1's pods went");
    assert!(old_gone_at <= seen.post_deploy_seen_at.unwrap());
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.versions, ["1", "2"]);

    let posts = jobs(&real, "post-deploy").await;
    assert_eq!(posts.len(), 1, "one post-deploy Job");
    let post = job_succeeded(&real, &posts[0].name_any()).await;
    assert_eq!(job_image(&post), backend("2-contract"));
    // The expand Job had completed before the old release was gone.
    let target = migration(&contracted).target_revision.unwrap();
    let expand = job_succeeded(&real, &format!("{STACK}-migrate-{target}")).await;
    assert!(completed_at(&expand) <= old_gone_at);

    assert_eq!(alembic_version(ns).await, "0003c");
    assert_eq!(
        item_columns(ns, "\"$POSTGRES_DB\"").await,
        "id,name,description"
    );
    let status = migration(&contracted);
    assert_eq!(status.schema_revision.as_deref(), Some("0003c"));
    assert!(status.post_deploy_revision.is_some());
    assert_eq!(
        condition(&contracted, "PostDeployApplied").map(|(status, _)| status),
        Some("True".to_string())
    );
    let (status, items) = http_get_from(ns, "probe", &format!("{}/api/items", backend_url(ns)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{items}");
    assert!(
        items.contains("written by release 1"),
        "the note lives on as the description: {items}"
    );
}
