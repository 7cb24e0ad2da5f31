//! External databases on the real local control plane, against a real
//! PostgreSQL server on loopback: the operator (run with
//! `--database-checks=external`) reports each reason a database cannot be
//! used, starts no migration and leaves the backend alone until the database
//! answers, then migrates and publishes the schema revision it reads.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::postgres::Postgres;
use crate::common::{
    LIMIT, Operator, apply_stack, condition, condition_message, eventually, example, sample, setup,
    wait_for, wait_ready,
};
use appstack::api::conditions::reasons;
use appstack::api::crd::AppStack;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const PASSWORD: &str = "app-password-Xq7";
const URL_SECRET: &str = "shop-database";

/// The example stack on the external database in Secret [`URL_SECRET`].
fn external_stack(name: &str) -> Value {
    let mut stack = example(name);
    stack["spec"]["database"] =
        json!({"external": {"urlSecretRef": {"name": URL_SECRET, "key": "DATABASE_URL"}}});
    stack
}

/// Creates Secret `name` or replaces its data with exactly `key: value`.
async fn put_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([(key.to_string(), ByteString(value.as_bytes().to_vec()))]);
    match secrets.get_opt(name).await.unwrap() {
        Some(mut secret) => {
            secret.data = Some(data);
            secrets
                .replace(name, &PostParams::default(), &secret)
                .await
                .unwrap();
        }
        None => {
            let mut secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            secret.data = Some(data);
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
    }
}

async fn migration_jobs(client: &Client, namespace: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.list(&ListParams::default().labels("app.kubernetes.io/component=migration"))
        .await
        .unwrap()
        .items
}

/// Waits for `DatabaseReady=False` with `reason`, then checks that nothing
/// moved: no migration Job, no backend. Returns the condition's message.
async fn unusable(client: &Client, namespace: &str, reason: &str) -> String {
    let stack = wait_for(
        client,
        namespace,
        "shop",
        "DatabaseReady",
        "False",
        Some(reason),
    )
    .await;
    assert_eq!(
        condition(&stack, "Ready").unwrap(),
        ("False".into(), reason.into()),
        "Ready names the database's reason"
    );
    assert!(
        migration_jobs(client, namespace).await.is_empty(),
        "no migration Job while the database cannot be used ({reason})"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    assert!(
        deployments.get_opt("shop-backend").await.unwrap().is_none(),
        "the backend is not touched ({reason})"
    );
    let message = database_message(&stack);
    assert!(!message.contains(PASSWORD), "{message}");
    message
}

fn database_message(stack: &AppStack) -> String {
    let message = condition_message(stack, "DatabaseReady");
    assert!(!message.is_empty(), "DatabaseReady has a message");
    message
}

fn checks_counted(metrics: &str, result: &str) -> f64 {
    sample(
        metrics,
        &format!(r#"appstack_database_checks_total{{result="{result}"}}"#),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn each_reason_a_database_cannot_be_used_holds_the_stack_until_it_answers() {
    let (client, namespace) = setup("db-reasons").await;
    let ns = namespace.name.as_str();
    let server = Postgres::start();
    server
        .execute(
            "postgres",
            &format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"),
        )
        .await;
    let operator = Operator::start(ns).await;
    apply_stack(&client, ns, &external_stack("shop")).await;

    let message = unusable(&client, ns, reasons::SECRET_MISSING).await;
    assert!(
        message.contains(&format!("Secret {URL_SECRET:?}")),
        "{message}"
    );

    put_secret(&client, ns, URL_SECRET, "url", "irrelevant").await;
    let message = unusable(&client, ns, reasons::KEY_MISSING).await;
    assert!(message.ends_with("its keys: url"), "{message}");

    put_secret(
        &client,
        ns,
        URL_SECRET,
        "DATABASE_URL",
        &format!("app:{PASSWORD}@db/shop"),
    )
    .await;
    unusable(&client, ns, reasons::INVALID_URL).await;

    let closed = crate::common::free_port();
    put_secret(
        &client,
        ns,
        URL_SECRET,
        "DATABASE_URL",
        &format!("postgresql://app:{PASSWORD}@127.0.0.1:{closed}/shop"),
    )
    .await;
    let message = unusable(&client, ns, reasons::CONNECTION_REFUSED).await;
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );
    // Retries back off instead of hammering the database: a few checks in
    // a dozen seconds (the first retries come after 5 and 10 s), not one
    // per reconcile loop turn.
    let before = checks_counted(&operator.metrics().await, reasons::CONNECTION_REFUSED);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = checks_counted(&operator.metrics().await, reasons::CONNECTION_REFUSED);
    assert!(
        after - before <= 4.0,
        "{} checks in 12 s while the database refused",
        after - before
    );
    eventually("the refused database is checked again", LIMIT, || async {
        (checks_counted(&operator.metrics().await, reasons::CONNECTION_REFUSED) > after)
            .then_some(())
    })
    .await;

    put_secret(
        &client,
        ns,
        URL_SECRET,
        "DATABASE_URL",
        &server.url("app", "not-the-password", "shop", "sslmode=require"),
    )
    .await;
    unusable(&client, ns, reasons::AUTHENTICATION_FAILED).await;

    put_secret(
        &client,
        ns,
        URL_SECRET,
        "DATABASE_URL",
        &server.url("app", PASSWORD, "shop", "sslmode=verify-full"),
    )
    .await;
    let message = unusable(&client, ns, reasons::TLS_FAILED).await;
    assert!(message.contains("sslmode=verify-full"), "{message}");

    // The right URL, but the database does not exist yet.
    put_secret(
        &client,
        ns,
        URL_SECRET,
        "DATABASE_URL",
        &server.url("app", PASSWORD, "shop", "sslmode=require"),
    )
    .await;
    unusable(&client, ns, reasons::DATABASE_MISSING).await;

    // Creating it is noticed without any change in the cluster.
    server
        .execute("postgres", "CREATE DATABASE shop OWNER app")
        .await;
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(
        condition(&ready, "DatabaseReady").unwrap(),
        ("True".into(), reasons::EXTERNAL_DATABASE.into())
    );
    let message = database_message(&ready);
    assert!(
        message.starts_with(&format!(
            "SELECT 1 answered on 127.0.0.1:{}/shop",
            server.port
        )),
        "{message}"
    );
    let jobs = migration_jobs(&client, ns).await;
    assert_eq!(jobs.len(), 1, "one migration, once the database answered");
    let applied = ready
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|condition| condition.type_ == "MigrationsApplied")
        .unwrap();
    assert!(
        applied
            .message
            .ends_with("schema revision unknown: table alembic_version does not exist; set spec.migrations.revisionQuery if the migrations are not Alembic's"),
        "an absent table is said, not an error: {}",
        applied.message
    );
    assert!(
        ready
            .status
            .unwrap()
            .migration
            .unwrap()
            .schema_revision
            .is_none()
    );

    // Each reason was a Warning Event.
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let warned: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.type_.as_deref() == Some("Warning"))
        .filter_map(|event| event.reason)
        .collect();
    for reason in [
        reasons::SECRET_MISSING,
        reasons::CONNECTION_REFUSED,
        reasons::AUTHENTICATION_FAILED,
        reasons::DATABASE_MISSING,
    ] {
        assert!(
            warned.iter().any(|warned| warned == reason),
            "{reason}: {warned:?}"
        );
    }
    eventually("no session of the operator left open", LIMIT, || async {
        (server.operator_sessions().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn the_schema_revision_is_read_after_each_migration() {
    let (client, namespace) = setup("db-schema").await;
    let ns = namespace.name.as_str();
    let server = Postgres::start();
    server
        .create_user_and_database("app", PASSWORD, "shop")
        .await;
    let app_url = server.url("app", PASSWORD, "shop", "sslmode=require");
    // What `alembic upgrade head` would leave (KWOK's migration pods run
    // nothing).
    let mut app = sqlx::PgConnection::connect(&app_url).await.unwrap();
    app.execute(sqlx::raw_sql(
        "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
         INSERT INTO alembic_version VALUES ('ae1027a6acf0')",
    ))
    .await
    .unwrap();
    put_secret(&client, ns, URL_SECRET, "DATABASE_URL", &app_url).await;
    let _operator = Operator::start(ns).await;
    let mut stack = external_stack("shop");
    apply_stack(&client, ns, &stack).await;

    let schema_of = |stack: &AppStack| {
        stack
            .status
            .as_ref()
            .and_then(|status| status.migration.as_ref())
            .and_then(|migration| migration.schema_revision.clone())
    };
    let ready = wait_ready(&client, ns, "shop").await;
    assert_eq!(schema_of(&ready).as_deref(), Some("ae1027a6acf0"));
    let listed = crate::common::kubectl()
        .args(["get", "appstack", "shop", "-n", ns])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.lines().next().unwrap().contains("SCHEMA") && table.contains("ae1027a6acf0"),
        "printer column:\n{table}"
    );

    // A new image migrates to a new head.
    app.execute(sqlx::raw_sql(
        "UPDATE alembic_version SET version_num = '27c6a30d7c24'",
    ))
    .await
    .unwrap();
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:1.5.0");
    apply_stack(&client, ns, &stack).await;
    let migrated = eventually("the new head in status", LIMIT, || async {
        let stack = wait_ready(&client, ns, "shop").await;
        (schema_of(&stack).as_deref() == Some("27c6a30d7c24")).then_some(stack)
    })
    .await;
    let migration = migrated.status.clone().unwrap().migration.unwrap();
    assert_eq!(migration.applied_revision, migration.target_revision);
    assert_eq!(migration_jobs(&client, ns).await.len(), 2);

    // One whose migration changes nothing keeps the revision: fine.
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:1.5.1");
    apply_stack(&client, ns, &stack).await;
    let unchanged = eventually("the no-op migration applied", LIMIT, || async {
        let stack = wait_ready(&client, ns, "shop").await;
        let applied = stack.status.clone()?.migration?.applied_revision;
        (applied != migration.applied_revision).then_some(stack)
    })
    .await;
    assert_eq!(schema_of(&unchanged).as_deref(), Some("27c6a30d7c24"));

    // golang-migrate's table through spec.migrations.revisionQuery.
    app.execute(sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (20240501120000, false)",
    ))
    .await
    .unwrap();
    stack["spec"]["migrations"]["revisionQuery"] =
        json!("SELECT version FROM schema_migrations WHERE NOT dirty");
    stack["spec"]["migrations"]["retryToken"] = json!("golang-migrate");
    apply_stack(&client, ns, &stack).await;
    eventually("the revision query's answer in status", LIMIT, || async {
        let stack = wait_ready(&client, ns, "shop").await;
        (schema_of(&stack).as_deref() == Some("20240501120000")).then_some(())
    })
    .await;
    app.close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn stacks_on_an_external_server_hold_no_connections() {
    let (client, namespace) = setup("db-sessions").await;
    let ns = namespace.name.as_str();
    let server = Postgres::start();
    let names = ["alpha", "beta", "gamma"];
    for name in names {
        server.create_user_and_database(name, PASSWORD, name).await;
    }
    let _operator = Operator::start(ns).await;
    for name in names {
        let secret = format!("{name}-database");
        put_secret(
            &client,
            ns,
            &secret,
            "DATABASE_URL",
            &server.url(name, PASSWORD, name, "sslmode=require"),
        )
        .await;
        let mut stack = example(name);
        stack["spec"]["database"] =
            json!({"external": {"urlSecretRef": {"name": secret, "key": "DATABASE_URL"}}});
        apply_stack(&client, ns, &stack).await;
    }
    for name in names {
        wait_ready(&client, ns, name).await;
    }
    // Connect, check, close: once the stacks are Ready nothing stays open.
    eventually("the operator's sessions closed", LIMIT, || async {
        (server.operator_sessions().await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.operator_sessions().await, 0, "and none reopened");
}
