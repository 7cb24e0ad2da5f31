//! Schema-aware delivery on the local control plane: approval before a
//! migration, a backup before it (and a failed one holding it back), the
//! post-deploy (contract) step once the new release is the only one, and
//! the rollback guard against a real PostgreSQL server holding the schema
//! revision. KWOK's Job pods run nothing: the tests write what a migration
//! or a downgrade would leave in `alembic_version`, and hold a Job's pod
//! running (label `appstack.test/not-ready`) until they have.

use std::collections::BTreeMap;

use crate::common::postgres::Postgres;
use crate::common::{
    KWOK_FAIL_LABEL, LIMIT, Operator, TestNamespace, apply_crds_served, apply_stack, client,
    condition, condition_message, dry_run_create, eventually, example, install_crd, plugin, setup,
    wait_for, wait_ready,
};
use appstack::api::crd::{AppStack, MigrationStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

/// The label that keeps a KWOK pod running (and never ready) while set.
const HOLD_LABEL: &str = "appstack.test/not-ready";

/// The stack's Jobs of one step (`appstack.dev/step`), oldest first.
async fn jobs(client: &Client, namespace: &str, step: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut jobs = api
        .list(&ListParams::default().labels(&format!("appstack.dev/step={step}")))
        .await
        .unwrap()
        .items;
    jobs.sort_by_key(|job| job.creation_timestamp());
    jobs
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(ResourceExt::name_any).collect()
}

fn migration(stack: &AppStack) -> MigrationStatus {
    stack
        .status
        .as_ref()
        .and_then(|status| status.migration.clone())
        .expect("status.migration")
}

async fn backend_image(client: &Client, namespace: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get("shop-backend").await.unwrap();
    deployment.spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// Waits until the stack's current generation is Ready and `check` holds
/// of it.
async fn ready_when(
    client: &Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&AppStack) -> bool,
) -> AppStack {
    eventually(what, LIMIT, || async {
        let stack = wait_ready(client, namespace, "shop").await;
        check(&stack).then_some(stack)
    })
    .await
}

/// When Deployment `name` last completed a rollout, in whole seconds of
/// the API server's clock.
async fn rolled_out_at(client: &Client, namespace: &str, name: &str) -> i64 {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|condition| condition.reason.as_deref() == Some("NewReplicaSetAvailable"))
        .and_then(|condition| condition.last_update_time)
        .expect("rolled out")
        .0
        .as_second()
}

/// The stack once its first post-deploy step applied, and when that step's
/// only Job was created.
async fn contracted(client: &Client, namespace: &str) -> (AppStack, i64) {
    let ready = ready_when(client, namespace, "the post-deploy step applied", |stack| {
        condition(stack, "PostDeployApplied") == Some(("True".into(), "PostDeploySucceeded".into()))
    })
    .await;
    let contracts = jobs(client, namespace, "post-deploy").await;
    assert_eq!(contracts.len(), 1);
    let (started, _) = job_times(&contracts[0]);
    (ready, started)
}

/// The creation time of `job` and the time it completed.
fn job_times(job: &Job) -> (i64, Option<i64>) {
    let created = job.creation_timestamp().unwrap().0.as_second();
    let completed = job
        .status
        .as_ref()
        .and_then(|status| status.completion_time.as_ref())
        .map(|time| time.0.as_second());
    (created, completed)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_new_revision_migrates_only_once_approved() {
    let (client, namespace) = setup("schema-approve").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["migrations"]["approval"] = json!("Manual");
    apply_stack(&client, ns, &stack).await;

    let waiting = wait_for(
        &client,
        ns,
        "shop",
        "MigrationsApplied",
        "False",
        Some("AwaitingApproval"),
    )
    .await;
    assert_eq!(
        condition(&waiting, "MigrationApproved").unwrap(),
        ("False".into(), "AwaitingApproval".into())
    );
    let first = migration(&waiting).target_revision.unwrap();
    let message = condition_message(&waiting, "MigrationApproved");
    assert!(
        message.contains(&first) && message.contains("kubectl appstack approve shop"),
        "{message}"
    );
    assert!(
        jobs(&client, ns, "migrate").await.is_empty(),
        "nothing runs"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(deployments.get_opt("shop-backend").await.unwrap().is_none());

    // The approval as a commit would make it: the revision in the spec.
    stack["spec"]["migrations"]["approvedRevision"] = json!(first);
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "MigrationApproved").unwrap(),
        ("True".into(), "Approved".into())
    );
    assert_eq!(
        names(&jobs(&client, ns, "migrate").await),
        [format!("shop-migrate-{first}")]
    );

    // A new image is a new revision: the approval of the old one does not
    // carry over, and the backend stays where it is.
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    apply_stack(&client, ns, &stack).await;
    let waiting = wait_for(
        &client,
        ns,
        "shop",
        "MigrationsApplied",
        "False",
        Some("AwaitingApproval"),
    )
    .await;
    let second = migration(&waiting).target_revision.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        migration(&waiting).applied_revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        backend_image(&client, ns).await,
        "ghcr.io/acme/shop-backend:1.4.2"
    );
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 1);

    // The plugin approves only the revision the stack waits for.
    let wrong = plugin(&["approve", "shop", "-n", ns, "--revision", &first]).await;
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains(&format!("waits for revision {second}")),
        "{said}"
    );
    let approved = plugin(&["approve", "shop", "-n", ns]).await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    assert!(String::from_utf8_lossy(&approved.stdout).contains(&second));
    let ready = ready_when(&client, ns, "the approved revision applied", |stack| {
        migration(stack).applied_revision.as_deref() == Some(second.as_str())
    })
    .await;
    assert_eq!(
        condition(&ready, "MigrationApproved").unwrap(),
        ("True".into(), "Approved".into())
    );
    assert_eq!(
        backend_image(&client, ns).await,
        "ghcr.io/acme/shop-backend:2.0.0"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_backup_precedes_each_migration_and_a_failed_one_holds_it_back() {
    let (client, namespace) = setup("schema-backup").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["migrations"]["backup"] = json!({"enabled": true, "keep": 2});
    apply_stack(&client, ns, &stack).await;

    let ready = wait_ready(&client, ns, "shop").await;
    let target = migration(&ready).target_revision.unwrap();
    let backups = jobs(&client, ns, "backup").await;
    let migrations = jobs(&client, ns, "migrate").await;
    assert_eq!(names(&backups), [format!("shop-backup-{target}")]);
    assert_eq!(names(&migrations), [format!("shop-migrate-{target}")]);
    let (_, backed_up) = job_times(&backups[0]);
    let (migration_started, _) = job_times(&migrations[0]);
    assert!(
        backed_up.is_some_and(|done| done <= migration_started),
        "the migration starts after the backup completed"
    );
    let container = &backups[0]
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0];
    assert_eq!(container.image.as_deref(), Some("postgres:16-alpine"));
    let last = migration(&ready)
        .last_backup
        .expect("status.migration.lastBackup");
    let generation = ready.metadata.generation.unwrap();
    assert_eq!(
        last.name,
        format!("shop-backup-{target}-g{generation}.dump")
    );
    assert_eq!(
        (last.method.as_str(), last.revision.as_str()),
        ("Dump", target.as_str())
    );
    assert_eq!(
        condition(&ready, "BackupReady").unwrap(),
        ("True".into(), "BackupSucceeded".into())
    );
    let volumes: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    assert!(volumes.get_opt("shop-backups").await.unwrap().is_some());

    // A backup that fails: the new revision's migration never starts, and
    // the backend keeps the last migrated image.
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    stack["spec"]["migrations"]["backoffLimit"] = json!(0);
    stack["spec"]["migrations"]["podLabels"] = json!({KWOK_FAIL_LABEL: "true"});
    apply_stack(&client, ns, &stack).await;
    let stalled = wait_for(&client, ns, "shop", "Stalled", "True", Some("BackupFailed")).await;
    assert_eq!(
        condition(&stalled, "BackupReady").unwrap(),
        ("False".into(), "BackupFailed".into())
    );
    assert_eq!(
        condition(&stalled, "MigrationsApplied").unwrap().1,
        "BackupFailed"
    );
    let message = condition_message(&stalled, "BackupReady");
    assert!(message.contains("retryToken"), "{message}");
    let new_target = migration(&stalled).target_revision.unwrap();
    assert_ne!(new_target, target);
    assert_eq!(
        names(&jobs(&client, ns, "migrate").await),
        [format!("shop-migrate-{target}")],
        "no migration without its backup"
    );
    assert_eq!(
        backend_image(&client, ns).await,
        "ghcr.io/acme/shop-backend:1.4.2"
    );

    // The backup taken again (a new retryToken) lets it through.
    stack["spec"]["migrations"]["podLabels"] = json!({});
    stack["spec"]["migrations"]["retryToken"] = json!("again");
    apply_stack(&client, ns, &stack).await;
    let ready = ready_when(&client, ns, "the new image migrated", |stack| {
        migration(stack).applied_revision != Some(target.clone())
    })
    .await;
    let applied = migration(&ready).applied_revision.unwrap();
    let last = migration(&ready).last_backup.unwrap();
    assert_eq!(
        last.revision, applied,
        "lastBackup names the backup before the applied revision"
    );
    assert_eq!(
        backend_image(&client, ns).await,
        "ghcr.io/acme/shop-backend:2.0.0"
    );

    // The plugin restores the last backup, here beside the database.
    let restored = plugin(&["restore", "shop", "-n", ns, "--into", "shop_restored"]).await;
    let said = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        said.contains(&last.name) && said.contains("new database shop_restored"),
        "{said}"
    );
    let restores = jobs(&client, ns, "restore").await;
    assert_eq!(restores.len(), 1);
    let pod = restores[0].spec.clone().unwrap().template.spec.unwrap();
    let env: BTreeMap<String, String> = pod.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|var| Some((var.name, var.value?)))
        .collect();
    assert_eq!(env["BACKUP_FILE"], last.name);
    assert_eq!(env["PGDATABASE"], "shop_restored");
    assert_eq!(
        pod.containers[0].volume_mounts.as_ref().unwrap()[0].read_only,
        Some(true),
        "a restore never writes the dumps"
    );
    let refused = plugin(&["restore", "shop", "-n", ns, "--backup", "../etc/passwd"]).await;
    assert!(!refused.status.success());
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_contract_step_runs_only_once_the_new_release_is_the_only_one() {
    let (client, namespace) = setup("schema-contract").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["migrations"]["postDeploy"] =
        json!({"command": ["alembic", "-x", "contract=true", "upgrade", "head"]});
    apply_stack(&client, ns, &stack).await;

    let (ready, contract_started) = contracted(&client, ns).await;
    for name in ["shop-backend", "shop-frontend"] {
        assert!(
            rolled_out_at(&client, ns, name).await <= contract_started,
            "{name} was rolled out before the contract started"
        );
    }
    assert!(migration(&ready).post_deploy_revision.is_some());

    // A rollout that does not complete: the new revision migrates, its
    // backend cannot pull its image, and its contract never runs.
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    stack["spec"]["backend"]["podLabels"] =
        json!({"appstack.test/waiting-reason": "ImagePullBackOff"});
    apply_stack(&client, ns, &stack).await;
    let stuck = wait_for(
        &client,
        ns,
        "shop",
        "BackendAvailable",
        "False",
        Some("ImagePullBackOff"),
    )
    .await;
    let status = migration(&stuck);
    assert_eq!(status.applied_revision, status.target_revision);
    assert_ne!(
        condition(&stuck, "PostDeployApplied").unwrap().0,
        "True",
        "the new revision's contract has not run"
    );
    assert_eq!(
        jobs(&client, ns, "post-deploy").await.len(),
        1,
        "no contract while pods of the previous release serve"
    );

    // Once it rolls out, the contract runs.
    stack["spec"]["backend"]["podLabels"] = json!({});
    apply_stack(&client, ns, &stack).await;
    ready_when(&client, ns, "the new contract applied", |stack| {
        condition(stack, "PostDeployApplied") == Some(("True".into(), "PostDeploySucceeded".into()))
            && migration(stack).post_deploy_revision != migration(&ready).post_deploy_revision
    })
    .await;
    assert_eq!(jobs(&client, ns, "post-deploy").await.len(), 2);

    // A contract that fails leaves the new release serving and says so.
    stack["spec"]["migrations"]["postDeploy"]["command"] =
        json!(["sh", "-c", "alembic -x contract=true upgrade head"]);
    stack["spec"]["migrations"]["backoffLimit"] = json!(0);
    stack["spec"]["migrations"]["podLabels"] = json!({KWOK_FAIL_LABEL: "true"});
    apply_stack(&client, ns, &stack).await;
    let stalled = wait_for(
        &client,
        ns,
        "shop",
        "Stalled",
        "True",
        Some("PostDeployFailed"),
    )
    .await;
    assert_eq!(
        condition(&stalled, "PostDeployApplied").unwrap(),
        ("False".into(), "PostDeployFailed".into())
    );
    assert_eq!(
        condition(&stalled, "BackendAvailable").unwrap(),
        ("True".into(), "Available".into()),
        "the new release keeps serving"
    );
    assert_eq!(
        backend_image(&client, ns).await,
        "ghcr.io/acme/shop-backend:2.0.0"
    );
}

const PASSWORD: &str = "app-password-Zr4";
const URL_SECRET: &str = "shop-database";

/// Holds the schema revision, as the migrations would leave it.
struct Schema {
    connection: sqlx::PgConnection,
}

impl Schema {
    async fn set(&mut self, revision: &str) {
        self.connection
            .execute(sqlx::raw_sql(&format!(
                "UPDATE alembic_version SET version_num = '{revision}'"
            )))
            .await
            .unwrap();
    }

    async fn get(&mut self) -> String {
        let (revision,): (String,) = sqlx::query_as("SELECT version_num FROM alembic_version")
            .fetch_one(&mut self.connection)
            .await
            .unwrap();
        revision
    }
}

/// Lets the pods of Job `name` complete: KWOK completes a Job pod once
/// [`HOLD_LABEL`] is gone.
async fn release(client: &Client, namespace: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let held = eventually(&format!("a pod of Job {name}"), LIMIT, || async {
        let pods = pods
            .list(&ListParams::default().labels(&format!("job-name={name},{HOLD_LABEL}")))
            .await
            .ok()?
            .items;
        (!pods.is_empty()).then_some(pods)
    })
    .await;
    for pod in held {
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {HOLD_LABEL: null}}})),
        )
        .await
        .unwrap();
    }
}

/// The Job of `step` of the current generation, once it exists.
async fn current_job(client: &Client, namespace: &str, step: &str) -> Job {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let generation = stacks
        .get("shop")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
        .to_string();
    eventually(
        &format!("a {step} Job of generation {generation}"),
        LIMIT,
        || async {
            jobs(client, namespace, step).await.into_iter().find(|job| {
                job.labels().get("appstack.dev/generation") == Some(&generation)
                    && job.metadata.deletion_timestamp.is_none()
            })
        },
    )
    .await
}

fn history(stack: &AppStack) -> BTreeMap<String, String> {
    migration(stack)
        .history
        .into_iter()
        .map(|record| (record.image, record.schema_revision.unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_contract_step_waits_after_the_rollout_for_as_long_as_it_is_told() {
    let (client, namespace) = setup("schema-soak").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["migrations"]["postDeploy"] =
        json!({"command": ["alembic", "-x", "contract=true", "upgrade", "head"], "after": "8s"});
    apply_stack(&client, ns, &stack).await;

    let (_, contract_started) = contracted(&client, ns).await;
    let rolled_out = std::cmp::max(
        rolled_out_at(&client, ns, "shop-backend").await,
        rolled_out_at(&client, ns, "shop-frontend").await,
    );
    assert!(
        contract_started >= rolled_out + 8,
        "the contract started {}s after the later rollout, not 8s",
        contract_started - rolled_out
    );
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn a_rollback_behind_the_schema_is_blocked_until_the_stack_says_how() {
    let (client, namespace) = setup("schema-guard").await;
    let ns = namespace.name.as_str();
    let server = Postgres::start();
    server
        .create_user_and_database("app", PASSWORD, "shop")
        .await;
    let url = server.url("app", PASSWORD, "shop", "sslmode=require");
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    connection
        .execute(sqlx::raw_sql(
            "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
             INSERT INTO alembic_version VALUES ('0001')",
        ))
        .await
        .unwrap();
    let mut schema = Schema { connection };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": URL_SECRET}})).unwrap();
    secret.data = Some(BTreeMap::from([(
        "DATABASE_URL".to_string(),
        ByteString(url.into_bytes()),
    )]));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _operator = Operator::start(ns).await;
    let (one, two) = ("ghcr.io/acme/shop-backend:1", "ghcr.io/acme/shop-backend:2");
    let mut stack: Value = example("shop");
    stack["spec"]["database"] =
        json!({"external": {"urlSecretRef": {"name": URL_SECRET, "key": "DATABASE_URL"}}});
    stack["spec"]["backend"]["image"] = json!(one);
    apply_stack(&client, ns, &stack).await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        history(&ready),
        BTreeMap::from([(one.into(), "0001".into())])
    );

    // Forward: :2's migration leaves 0002.
    schema.set("0002").await;
    stack["spec"]["backend"]["image"] = json!(two);
    apply_stack(&client, ns, &stack).await;
    let ready = ready_when(&client, ns, ":2 applied with schema 0002", |stack| {
        history(stack).get(two).map(String::as_str) == Some("0002")
    })
    .await;
    assert_eq!(migration(&ready).schema_revision.as_deref(), Some("0002"));
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 2);

    // Backward to :1, whose schema is behind: blocked by default.
    stack["spec"]["backend"]["image"] = json!(one);
    apply_stack(&client, ns, &stack).await;
    let blocked = wait_for(
        &client,
        ns,
        "shop",
        "Stalled",
        "True",
        Some("RollbackBlocked"),
    )
    .await;
    assert_eq!(
        condition(&blocked, "BackendAvailable").unwrap(),
        ("False".into(), "RollbackBlocked".into())
    );
    assert_eq!(
        condition(&blocked, "MigrationsApplied").unwrap(),
        ("False".into(), "RollbackBlocked".into())
    );
    let message = condition_message(&blocked, "BackendAvailable");
    assert!(
        message.contains("0001") && message.contains("0002") && message.contains("Downgrade"),
        "{message}"
    );
    assert_eq!(backend_image(&client, ns).await, two, "the backend stays");
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 2, "nothing runs");
    assert_eq!(schema.get().await, "0002");

    // AllowSchemaAhead: the backend moves back, the schema stays.
    stack["spec"]["migrations"]["rollback"] = json!("AllowSchemaAhead");
    apply_stack(&client, ns, &stack).await;
    let ahead = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ahead, "MigrationsApplied").unwrap(),
        ("True".into(), "SchemaAhead".into())
    );
    assert_eq!(backend_image(&client, ns).await, one);
    assert_eq!(schema.get().await, "0002");
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 2);

    // Forward to :2 again: the database holds its schema; nothing runs.
    stack["spec"]["backend"]["image"] = json!(two);
    apply_stack(&client, ns, &stack).await;
    let current = ready_when(&client, ns, ":2 back on schema 0002", |stack| {
        migration(stack).applied_revision == migration(&ready).applied_revision
    })
    .await;
    assert_eq!(
        condition(&current, "MigrationsApplied").unwrap(),
        ("True".into(), "MigrationSucceeded".into())
    );
    assert_eq!(migration(&current).schema_revision.as_deref(), Some("0002"));
    assert_eq!(backend_image(&client, ns).await, two);
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 2);

    // Downgrade: :2's image takes the schema back before :1 serves. The
    // test plays the downgrade while its pod is held.
    stack["spec"]["migrations"]["rollback"] = json!("Downgrade");
    stack["spec"]["migrations"]["podLabels"] = json!({HOLD_LABEL: "true"});
    stack["spec"]["backend"]["image"] = json!(one);
    apply_stack(&client, ns, &stack).await;
    let downgrade = current_job(&client, ns, "downgrade").await;
    let container = downgrade
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .clone();
    assert_eq!(container.image.as_deref(), Some(two), "the newer image");
    assert_eq!(
        container.command.unwrap(),
        ["alembic", "downgrade", "$(APPSTACK_TARGET_SCHEMA_REVISION)"]
    );
    let env: BTreeMap<String, String> = container
        .env
        .unwrap()
        .into_iter()
        .filter_map(|var| Some((var.name, var.value?)))
        .collect();
    assert_eq!(env["APPSTACK_TARGET_SCHEMA_REVISION"], "0001");
    assert_eq!(env["APPSTACK_CURRENT_SCHEMA_REVISION"], "0002");
    let running = wait_for(
        &client,
        ns,
        "shop",
        "MigrationsApplied",
        "False",
        Some("DowngradeRunning"),
    )
    .await;
    assert_eq!(
        condition(&running, "BackendAvailable").unwrap().0,
        "True",
        ":2 serves while the schema goes back"
    );
    assert_eq!(backend_image(&client, ns).await, two);
    schema.set("0001").await;
    release(&client, ns, &downgrade.name_any()).await;
    let back = ready_when(&client, ns, ":1 on schema 0001", |stack| {
        migration(stack).schema_revision.as_deref() == Some("0001")
    })
    .await;
    assert_eq!(
        condition(&back, "MigrationsApplied").unwrap(),
        ("True".into(), "MigrationSucceeded".into())
    );
    assert_eq!(backend_image(&client, ns).await, one);

    // Forward again: :2's migration runs again, since its schema was taken
    // back, and :2 serves once it has.
    stack["spec"]["backend"]["image"] = json!(two);
    apply_stack(&client, ns, &stack).await;
    let again = current_job(&client, ns, "migrate").await;
    assert_eq!(
        again.name_any(),
        format!(
            "shop-migrate-{}",
            migration(&ready).applied_revision.unwrap()
        ),
        "the same revision's Job, made again"
    );
    assert_eq!(backend_image(&client, ns).await, one);
    schema.set("0002").await;
    release(&client, ns, &again.name_any()).await;
    ready_when(&client, ns, ":2 on schema 0002 again", |stack| {
        migration(stack).schema_revision.as_deref() == Some("0002")
    })
    .await;
    assert_eq!(backend_image(&client, ns).await, two);

    // A downgrade that succeeds without taking the schema back is a
    // failure: :2 keeps serving.
    stack["spec"]["backend"]["image"] = json!(one);
    apply_stack(&client, ns, &stack).await;
    let downgrade = current_job(&client, ns, "downgrade").await;
    release(&client, ns, &downgrade.name_any()).await;
    let failed = wait_for(
        &client,
        ns,
        "shop",
        "Stalled",
        "True",
        Some("DowngradeFailed"),
    )
    .await;
    let message = condition_message(&failed, "MigrationsApplied");
    assert!(
        message.contains("still holds schema 0002, not 0001"),
        "{message}"
    );
    assert_eq!(backend_image(&client, ns).await, two);
    assert_eq!(schema.get().await, "0002");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_backup_of_an_external_database_is_refused_with_a_reason() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "schema-refused").await;
    let mut stack = example("shop");
    stack["metadata"]["namespace"] = json!(namespace.name);
    stack["spec"]["migrations"]["backup"] = json!({"enabled": true});
    assert!(dry_run_create(&client, &stack).await.accepted());
    stack["spec"]["database"] =
        json!({"external": {"urlSecretRef": {"name": URL_SECRET, "key": "DATABASE_URL"}}});
    let refused = dry_run_create(&client, &stack).await;
    assert!(!refused.accepted());
    assert!(
        refused.message.contains("spec.migrations.backup")
            && refused
                .message
                .contains("migrations.backup needs database.managed"),
        "{}",
        refused.message
    );
    stack["spec"]["migrations"]["backup"] = json!({"enabled": false});
    assert!(
        dry_run_create(&client, &stack).await.accepted(),
        "switched off, it says nothing"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_snapshot_backup_waits_for_its_api_and_for_the_snapshot_to_be_ready() {
    let (client, namespace) = setup("schema-snapshot").await;
    let ns = namespace.name.as_str();
    // A cluster without the snapshot API, as most are; an earlier run of
    // this test may have installed it.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = "volumesnapshots.snapshot.storage.k8s.io";
    if crds.get_opt(crd_name).await.unwrap().is_some() {
        crds.delete(crd_name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("VolumeSnapshot CRD removed", LIMIT, || async {
            crds.get_opt(crd_name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }
    let _operator = Operator::start(ns).await;
    let mut stack = example("shop");
    stack["spec"]["migrations"]["backup"] = json!({"enabled": true, "method": "Snapshot"});
    apply_stack(&client, ns, &stack).await;
    // Without the API the migration waits, and says why.
    let waiting = wait_for(
        &client,
        ns,
        "shop",
        "BackupReady",
        "False",
        Some("CRDNotInstalled"),
    )
    .await;
    assert!(condition_message(&waiting, "BackupReady").contains("method: Dump"));
    assert!(jobs(&client, ns, "migrate").await.is_empty());

    apply_crds_served(
        &client,
        &[include_str!(
            "../fixtures/crds-snapshot/snapshot.storage.k8s.io_volumesnapshots.yaml"
        )],
    )
    .await;
    let resource = appstack::children::backup::volume_snapshot_resource();
    let snapshots: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &resource);
    let snapshot = eventually("the VolumeSnapshot", LIMIT, || async {
        snapshots
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        snapshot.data["spec"]["source"]["persistentVolumeClaimName"],
        "data-shop-db-0"
    );
    let running = wait_for(
        &client,
        ns,
        "shop",
        "BackupReady",
        "False",
        Some("BackupRunning"),
    )
    .await;
    assert_eq!(condition(&running, "Ready").unwrap().0, "False");
    assert!(
        jobs(&client, ns, "migrate").await.is_empty(),
        "the migration waits"
    );
    // What a snapshot controller would write once the snapshot is cut.
    snapshots
        .patch_status(
            &snapshot.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true}})),
        )
        .await
        .unwrap();
    let ready = wait_ready(&client, ns, "shop").await;
    let last = migration(&ready).last_backup.unwrap();
    assert_eq!(
        (last.name.as_str(), last.method.as_str()),
        (snapshot.name_any().as_str(), "Snapshot")
    );
    assert_eq!(jobs(&client, ns, "migrate").await.len(), 1);
}
