//! The database checks against a real PostgreSQL server (no cluster): each
//! `DatabaseReady` reason from a real failure, TLS as `sslmode` asks, the
//! schema revision as migration tools leave it, and no connection left
//! behind.

use crate::common::postgres::Postgres;
use appstack::api::conditions::reasons;
use appstack::database::{DatabaseUrl, Limits, SchemaRevision, probe, schema};

const PASSWORD: &str = "s3cret-app-password";

fn url(text: &str) -> DatabaseUrl {
    DatabaseUrl::parse(text.as_bytes()).expect("a valid URL")
}

async fn reason_of(text: &str) -> Result<(), (&'static str, String)> {
    probe::check(&url(text), Limits::default())
        .await
        .map_err(|failure| (failure.reason, failure.message))
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries: run scripts/test.sh"]
async fn every_failure_has_its_reason_and_a_message_without_the_password() {
    let server = Postgres::start();
    server
        .create_user_and_database("app", PASSWORD, "shop")
        .await;
    let free_port = crate::common::free_port();

    assert_eq!(
        reason_of(&server.url("app", PASSWORD, "shop", "sslmode=disable")).await,
        Ok(())
    );
    assert_eq!(
        reason_of(&server.url("app", PASSWORD, "shop", "sslmode=require")).await,
        Ok(()),
        "TLS without verification"
    );
    assert_eq!(
        reason_of(&server.url("app", PASSWORD, "shop", "")).await,
        Ok(()),
        "sslmode=prefer by default"
    );

    let cases = [
        (
            format!("postgresql://app:{PASSWORD}@127.0.0.1:{free_port}/shop"),
            reasons::CONNECTION_REFUSED,
            format!("127.0.0.1:{free_port} refused the connection"),
        ),
        (
            server.url("app", "wrong-password", "shop", "sslmode=disable"),
            reasons::AUTHENTICATION_FAILED,
            "password authentication failed for user \"app\"".to_string(),
        ),
        (
            server.url("nobody", PASSWORD, "shop", "sslmode=disable"),
            reasons::AUTHENTICATION_FAILED,
            "rejected user \"nobody\"".to_string(),
        ),
        (
            server.url("app", PASSWORD, "orders", "sslmode=disable"),
            reasons::DATABASE_MISSING,
            "database \"orders\" does not exist".to_string(),
        ),
        (
            server.url("app", PASSWORD, "shop", "sslmode=verify-full"),
            reasons::TLS_FAILED,
            "sslmode=verify-full".to_string(),
        ),
        (
            server.url("app", PASSWORD, "shop", "sslmode=verify-ca"),
            reasons::TLS_FAILED,
            "invalid peer certificate: UnknownIssuer".to_string(),
        ),
    ];
    for (text, reason, says) in cases {
        let (actual, message) = reason_of(&text).await.expect_err(&text);
        assert_eq!(actual, reason, "{text}: {message}");
        assert!(
            message.contains(&says),
            "{text}: {message:?} lacks {says:?}"
        );
        assert!(!message.contains(PASSWORD), "{message}");
    }

    // A server without TLS and a URL that requires it.
    let plain = Postgres::start();
    plain
        .execute("postgres", "ALTER SYSTEM SET ssl = off")
        .await;
    plain.execute("postgres", "SELECT pg_reload_conf()").await;
    plain
        .create_user_and_database("app", PASSWORD, "shop")
        .await;
    let (reason, message) = reason_of(&plain.url("app", PASSWORD, "shop", "sslmode=require"))
        .await
        .unwrap_err();
    assert_eq!(reason, reasons::TLS_FAILED, "{message}");
    assert!(message.contains("does not offer TLS"), "{message}");

    assert_eq!(
        server.operator_sessions().await,
        0,
        "every check closed its connection"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries: run scripts/test.sh"]
async fn the_schema_revision_is_read_as_migration_tools_leave_it() {
    let server = Postgres::start();
    server
        .create_user_and_database("app", PASSWORD, "shop")
        .await;
    let shop = url(&server.url("app", PASSWORD, "shop", "sslmode=require"));
    let alembic = schema::DEFAULT_REVISION_QUERY;
    let read = |query: &'static str| {
        let shop = shop.clone();
        async move { schema::read(&shop, query, Limits::default()).await }
    };

    let missing = read(alembic).await.unwrap();
    assert!(matches!(missing, SchemaRevision::NoTable(_)), "{missing:?}");
    assert!(
        missing
            .unknown_because(alembic)
            .unwrap()
            .starts_with("table alembic_version does not exist")
    );

    // As Alembic creates and fills it, in the application's own database.
    let mut app = sqlx::PgConnection::connect_with(&shop.connect_options())
        .await
        .unwrap();
    use sqlx::{Connection, Executor};
    app.execute(sqlx::raw_sql(
        "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY)",
    ))
    .await
    .unwrap();
    assert_eq!(read(alembic).await.unwrap(), SchemaRevision::Empty);
    app.execute(sqlx::raw_sql(
        "INSERT INTO alembic_version VALUES ('1f2e3d4c5b6a')",
    ))
    .await
    .unwrap();
    assert_eq!(
        read(alembic).await.unwrap(),
        SchemaRevision::Found("1f2e3d4c5b6a".into())
    );
    app.execute(sqlx::raw_sql(
        "INSERT INTO alembic_version VALUES ('0a9b8c7d6e5f')",
    ))
    .await
    .unwrap();
    assert_eq!(
        read(alembic).await.unwrap(),
        SchemaRevision::Found("0a9b8c7d6e5f, 1f2e3d4c5b6a".into()),
        "branch heads, sorted"
    );

    // golang-migrate keeps a bigint; any type reads as text.
    app.execute(sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (20240501120000, false)",
    ))
    .await
    .unwrap();
    assert_eq!(
        read("SELECT version FROM schema_migrations WHERE NOT dirty -- golang-migrate")
            .await
            .unwrap(),
        SchemaRevision::Found("20240501120000".into())
    );
    assert_eq!(
        read(
            "with latest as (select max(version) as v from schema_migrations) select v from latest"
        )
        .await
        .unwrap(),
        SchemaRevision::Found("20240501120000".into())
    );

    // The query runs read-only: a query that writes fails, and writes nothing.
    app.execute(sqlx::raw_sql("CREATE SEQUENCE counter"))
        .await
        .unwrap();
    let writing = read("SELECT nextval('counter')").await.unwrap();
    assert!(
        matches!(&writing, SchemaRevision::QueryFailed(message) if message.contains("read-only")),
        "{writing:?}"
    );
    let untouched: Option<i64> =
        sqlx::query_scalar("SELECT last_value FROM counter WHERE is_called")
            .fetch_optional(&mut app)
            .await
            .unwrap();
    assert_eq!(untouched, None, "nextval never ran");
    app.close().await.unwrap();

    let unreachable = url(&format!(
        "postgresql://app:{PASSWORD}@127.0.0.1:{}/shop",
        crate::common::free_port()
    ));
    let failure = schema::read(&unreachable, alembic, Limits::default())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, reasons::CONNECTION_REFUSED);
    assert_eq!(server.operator_sessions().await, 0);
}
