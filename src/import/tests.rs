//! The four compose projects under tests/fixtures/compose, imported without
//! a cluster, and the mapping rules one at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

mod corpus;

use super::names::sanitize_name;
use super::workload::{command_port, kubernetes_literal, memory_quantity};
use super::*;
use crate::api::crd::{
    AppStack, DeletionPolicy, EnvEntry, MAX_STACK_NAME_LENGTH, ManagedDatabase, Quantity,
    SecretKeyRef,
};

fn fixture(project: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(project)
}

fn request(project: &str) -> ComposeRequest {
    ComposeRequest {
        working_directory: fixture(project),
        ..ComposeRequest::default()
    }
}

fn import(request: ComposeRequest) -> (Imported, String) {
    let imported = import_compose(&request).unwrap_or_else(|error| panic!("{error}"));
    let yaml = serde_yaml::to_string(&imported.stack).unwrap();
    (imported, yaml)
}

fn env_names(stack: &AppStack) -> Vec<&str> {
    stack
        .spec
        .env
        .iter()
        .map(|entry| entry.name.as_str())
        .collect()
}

fn entry<'a>(stack: &'a AppStack, name: &str) -> &'a EnvEntry {
    stack
        .spec
        .env
        .iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("no env entry {name}"))
}

fn strings(words: &[&str]) -> Option<Vec<String>> {
    Some(words.iter().map(|word| word.to_string()).collect())
}

/// A compose project of one file in a fresh directory, removed when the
/// returned guard is dropped.
fn project_dir(compose: &str, dotenv: Option<&str>) -> TempDir {
    let directory = super::compose::tests::tempdir();
    std::fs::write(directory.path().join("compose.yaml"), compose).unwrap();
    if let Some(dotenv) = dotenv {
        std::fs::write(directory.path().join(".env"), dotenv).unwrap();
    }
    directory
}

fn skipped_services(report: &Report) -> Vec<(&str, &str)> {
    report
        .skipped()
        .iter()
        .filter(|skipped| skipped.what.starts_with("service"))
        .map(|skipped| (skipped.service.as_str(), skipped.reason.as_str()))
        .collect()
}

#[test]
fn fastapi_react_becomes_a_managed_stack_with_a_migration_job() {
    let (imported, yaml) = import(ComposeRequest {
        generate_secrets: true,
        ..request("fastapi-react")
    });
    let stack = &imported.stack;
    let spec = &stack.spec;
    assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
    let managed = spec.database.managed.as_ref().unwrap();
    assert_eq!(managed.image, "postgres:16-alpine");
    assert_eq!(managed.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(spec.database.name.as_deref(), Some("shop"));
    assert_eq!(spec.database.pool.as_ref().map(|pool| pool.size), Some(10));
    let migrations = spec.migrations.as_ref().unwrap();
    assert_eq!(
        migrations.image, None,
        "the migration service runs the backend's image"
    );
    assert_eq!(migrations.args, strings(&["alembic", "upgrade", "head"]));
    assert_eq!(spec.backend.image, "ghcr.io/acme/shop-api:1.4.2");
    assert_eq!(spec.backend.port, 8000);
    assert_eq!(spec.backend.health.as_ref().unwrap().path, "/api/health");
    assert_eq!(
        spec.backend.args.as_ref().unwrap()[..2],
        ["uvicorn".to_string(), "app.main:app".to_string()]
    );
    let frontend = spec.frontend.as_ref().unwrap();
    assert_eq!(frontend.image, "ghcr.io/acme/shop-web:1.4.2");
    assert_eq!(frontend.port, 80, "the container port of 3000:80");
    assert_eq!(frontend.api_url_env, "REACT_APP_API_URL");
    assert_eq!(
        env_names(stack),
        [
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
            "POSTGRES_DB",
            "API_TAG",
            "WEB_TAG",
            "LOG_LEVEL",
            "SECRET_KEY",
            "SENDGRID_API_KEY",
            "SENTRY_DSN",
            "CORS_ORIGINS"
        ]
    );
    // The shared .env gave the backend the database's variables: they
    // read the operator's database now.
    for (name, key) in [
        ("POSTGRES_USER", "username"),
        ("POSTGRES_PASSWORD", "password"),
        ("POSTGRES_DB", "database"),
    ] {
        assert_eq!(
            entry(stack, name)
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref,
            SecretKeyRef {
                name: "shop-db".into(),
                key: key.into()
            }
        );
    }
    assert_eq!(entry(stack, "LOG_LEVEL").value.as_deref(), Some("debug"));
    assert!(
        entry(stack, "SECRET_KEY").generate.is_some(),
        "change-me is a placeholder"
    );
    assert_eq!(
        entry(stack, "SENDGRID_API_KEY")
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref,
        SecretKeyRef {
            name: "shop-dotenv".into(),
            key: "SENDGRID_API_KEY".into()
        }
    );
    assert_eq!(
        imported.secret_values,
        BTreeMap::from([(
            "SENDGRID_API_KEY".to_string(),
            "SG.live-9fJ2kLmN3pQ".to_string()
        )])
    );
    for secret in ["pg-Kq8v3Lx2Rt", "SG.live-9fJ2kLmN3pQ", "change-me"] {
        assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
    }
    let report = imported.report.render(true);
    assert!(
        report.contains("read DATABASE_URL as postgresql+asyncpg://"),
        "{report}"
    );
    assert!(
        report.contains("depends_on migrate (service_completed_successfully)"),
        "{report}"
    );
    assert!(report.contains("db: ports \"5432:5432\""), "{report}");
    assert!(
        report.contains("api: volume ./backend/app:/app/app: a bind mount"),
        "{report}"
    );
}

#[test]
fn the_process_environment_wins_over_dotenv_when_interpolating() {
    // Compose: "Values present in the environment at runtime will always
    // override those defined inside the .env file."
    let (imported, _) = import(ComposeRequest {
        process_env: BTreeMap::from([
            ("API_TAG".to_string(), "2.0.0".to_string()),
            ("LOG_LEVEL".to_string(), "warning".to_string()),
        ]),
        ..request("fastapi-react")
    });
    assert_eq!(
        imported.stack.spec.backend.image,
        "ghcr.io/acme/shop-api:2.0.0"
    );
    assert_eq!(
        entry(&imported.stack, "LOG_LEVEL").value.as_deref(),
        Some("warning")
    );
}

#[test]
fn django_celery_takes_migrations_out_of_the_web_command_and_leaves_the_workers() {
    let (imported, yaml) = import(ComposeRequest {
        secrets_out: Some("secret.yaml".into()),
        ..request("django-celery")
    });
    let spec = &imported.stack.spec;
    assert_eq!(
        imported.stack.metadata.name.as_deref(),
        Some("django-celery")
    );
    assert_eq!(spec.database.name.as_deref(), Some("blog"));
    assert_eq!(spec.backend.image, "registry.example.com/acme/blog:2.3.0");
    assert_eq!(
        spec.backend.args,
        strings(&[
            "gunicorn",
            "blog.wsgi:application",
            "--bind",
            "0.0.0.0:8000",
            "--workers",
            "3"
        ])
    );
    assert_eq!(
        spec.migrations.as_ref().unwrap().args,
        strings(&["python", "manage.py", "migrate", "--noinput"])
    );
    assert!(spec.frontend.is_none());
    for (name, key) in [
        ("DB_NAME", "database"),
        ("DB_USER", "username"),
        ("DB_PASSWORD", "password"),
    ] {
        assert_eq!(
            entry(&imported.stack, name)
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref,
            SecretKeyRef {
                name: "django-celery-db".into(),
                key: key.into()
            },
            "{name} reads the operator's database"
        );
    }
    assert_eq!(
        imported.secret_values.keys().collect::<Vec<_>>(),
        ["EMAIL_HOST_PASSWORD", "SECRET_KEY"]
    );
    for secret in [
        "Xu8-blog-db-pass",
        "app-mail-Pw-77",
        "django-insecure-7h#q2v@x9-dev-only",
    ] {
        assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
    }
    let skipped = skipped_services(&imported.report);
    let names: Vec<&str> = skipped.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["redis", "celery", "celery-beat"]);
    assert!(skipped[0].1.starts_with("a cache or broker"));
    assert!(skipped[1].1.starts_with("a background worker"));
    let report = imported.report.render(true);
    assert!(
        report.contains("CELERY_BROKER_URL names redis, a compose service the stack does not run"),
        "{report}"
    );
    assert!(report.contains("`version` is obsolete"), "{report}");
}

#[test]
fn node_api_without_images_holds_placeholders_and_with_them_is_complete() {
    let (imported, yaml) = import(ComposeRequest {
        generate_secrets: true,
        ..request("node-api")
    });
    let spec = &imported.stack.spec;
    assert_eq!(
        spec.backend.image,
        "<built from ./api: pass --image api=IMAGE>"
    );
    assert_eq!(
        spec.frontend.as_ref().unwrap().image,
        "<built from ./web: pass --image web=IMAGE>"
    );
    assert!(
        imported
            .report
            .todos()
            .iter()
            .any(|todo| todo.contains("--image api=")),
        "{}",
        imported.report
    );
    for secret in [
        "n0tes-Pg!pass",
        "m4il-S3cret",
        "whsec_8dJ2kq0LmZ",
        "MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAw",
    ] {
        assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
    }

    let (imported, _) = import(ComposeRequest {
        images: vec![
            ("api".into(), "ghcr.io/acme/notes-api:0.9.1".into()),
            ("web".into(), "ghcr.io/acme/notes-web:0.9.1".into()),
        ],
        generate_secrets: true,
        ..request("node-api")
    });
    let stack = &imported.stack;
    let spec = &stack.spec;
    assert_eq!(spec.backend.image, "ghcr.io/acme/notes-api:0.9.1");
    assert_eq!(spec.backend.port, 4000);
    assert_eq!(spec.backend.health.as_ref().unwrap().path, "/healthz");
    let migrations = spec.migrations.as_ref().unwrap();
    assert_eq!(
        migrations.image, None,
        "migrate builds the same context as api"
    );
    assert_eq!(
        migrations.args,
        strings(&["npx", "prisma", "migrate", "deploy"])
    );
    let frontend = spec.frontend.as_ref().unwrap();
    assert_eq!(
        (frontend.api_url_env.as_str(), frontend.port),
        ("VITE_API_URL", 80)
    );
    assert_eq!(spec.database.name.as_deref(), Some("notes"));
    // The .env's quoting and escapes, as Compose reads them.
    assert_eq!(
        entry(stack, "GREETING").value.as_deref(),
        Some("Hello, \"world\"\tand welcome")
    );
    assert_eq!(
        entry(stack, "FEATURE_FLAGS").value.as_deref(),
        Some(r#"{"search": true, "beta": false}"#)
    );
    assert_eq!(entry(stack, "JWT_EXPIRES_IN").value.as_deref(), Some("15m"));
    assert_eq!(entry(stack, "LOG_FORMAT").value.as_deref(), Some("json"));
    assert_eq!(entry(stack, "ANALYTICS_ID").value.as_deref(), Some(""));
    assert!(entry(stack, "SESSION_SECRET").generate.is_some());
    assert_eq!(
        entry(stack, "PGPASSWORD")
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .key,
        "password",
        "libpq's PGPASSWORD reads the operator's database"
    );
    let key = &imported.secret_values["JWT_PRIVATE_KEY"];
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----\nMIIB")
            && key.ends_with("\n-----END PRIVATE KEY-----")
    );
    assert_eq!(
        imported.secret_values["SMTP_URL"],
        "smtps://notes:m4il-S3cret@smtp.example.com:465"
    );
    assert_eq!(
        imported.secret_values["STRIPE_WEBHOOK_SECRET"],
        "whsec_8dJ2kq0LmZ"
    );
    assert!(
        imported
            .report
            .render(true)
            .contains("web: variable VITE_APP_TITLE")
    );
}

#[test]
fn external_db_references_the_url_and_keeps_it_out() {
    let (imported, yaml) = import(ComposeRequest {
        name: Some("ledger".into()),
        ..request("external-db")
    });
    let spec = &imported.stack.spec;
    assert!(spec.database.managed.is_none());
    assert_eq!(
        spec.database.external.as_ref().unwrap().url_secret_ref,
        SecretKeyRef {
            name: "ledger-dotenv".into(),
            key: "DATABASE_URL".into()
        }
    );
    let pool = spec.database.pool.as_ref().unwrap();
    assert_eq!((pool.size, pool.timeout_seconds), (15, 15));
    assert_eq!(
        imported.secret_values["DATABASE_URL"],
        "postgres://ledger:L3dger-db-Pw@db.internal.example.com:5432/ledger?sslmode=require"
    );
    let migrations = spec.migrations.as_ref().unwrap();
    assert_eq!(
        migrations.image.as_deref(),
        Some("ghcr.io/acme/ledger-migrations:3.1.0")
    );
    assert_eq!(
        migrations.args,
        strings(&[
            "goose",
            "-dir",
            "/migrations",
            "postgres",
            "$(DATABASE_URL)",
            "up"
        ]),
        "the URL interpolated into the command becomes a reference to the container's DATABASE_URL"
    );
    assert_eq!((spec.backend.port, spec.backend.replicas), (9090, Some(3)));
    assert_eq!(spec.backend.health.as_ref().unwrap().path, "/readyz");
    let resources = spec.backend.resources.as_ref().unwrap();
    assert_eq!(resources.limits["memory"], Quantity("512Mi".into()));
    assert_eq!(resources.requests["cpu"], Quantity("0.25".into()));
    assert_eq!(
        env_names(&imported.stack),
        ["LOG_LEVEL", "LEDGER_API_TOKEN", "REGION"]
    );
    for secret in ["L3dger-db-Pw", "tok_live_5Gh8sK2pQ"] {
        assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
    }
}

#[test]
fn backend_and_frontend_can_be_named() {
    let (imported, _) = import(ComposeRequest {
        backend: Some("celery".into()),
        ..request("django-celery")
    });
    assert_eq!(
        imported.stack.spec.backend.args.as_ref().unwrap()[0],
        "celery"
    );
    let skipped = skipped_services(&imported.report);
    assert!(
        skipped.iter().any(|(name, _)| *name == "web"),
        "web talks to the database: not a frontend, whatever its name: {skipped:?}"
    );

    let error = import_compose(&ComposeRequest {
        frontend: Some("nope".into()),
        ..request("django-celery")
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "--frontend nope: the compose project has no service nope (services: db, redis, web, celery, celery-beat)"
    );
}

#[test]
fn a_project_without_a_possible_backend_is_an_error() {
    let directory = project_dir(
        "services:\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n",
        None,
    );
    let error = import_compose(&ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no service can be the backend: db is the database, cache is a cache or broker; name the backend with --backend SERVICE"
    );
}

#[test]
fn a_missing_compose_file_is_an_error_naming_the_defaults() {
    let directory = super::compose::tests::tempdir();
    let error = import_compose(&ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    })
    .unwrap_err();
    assert!(error.to_string().contains("docker-compose.yml"), "{error}");
}

#[test]
fn without_a_database_service_or_url_the_stack_gets_a_managed_one() {
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    ports: ['8080:8080']\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(
        imported.stack.spec.database.managed,
        Some(ManagedDatabase::default())
    );
    assert_eq!(imported.stack.spec.backend.port, 8080);
    assert!(imported.report.warnings()[0].contains("no PostgreSQL service"));
}

#[test]
fn unset_variables_are_warned_about_by_name() {
    let directory = project_dir(
        "services:\n  api:\n    image: \"api:${TAG}\"\n    environment:\n      SENTRY_ENV: ${SENTRY_ENV}\n",
        Some("OTHER=1\n"),
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(imported.stack.spec.backend.image, "api:");
    let warnings = imported.report.warnings().join("\n");
    assert!(
        warnings.contains("variable SENTRY_ENV is not set"),
        "{warnings}"
    );
    assert!(warnings.contains("variable TAG is not set"), "{warnings}");
}

#[test]
fn a_secret_in_a_command_the_env_does_not_hold_leaves_the_command_out() {
    let directory = project_dir(
        "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${PW}\n\
         \x20 api:\n    image: api:1\n    command: [\"serve\", \"--db-password\", \"${PW}\"]\n    depends_on: [db]\n",
        Some("PW=Sup3r-s3cret-pw\n"),
    );
    let (imported, yaml) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(imported.stack.spec.backend.args, None);
    assert!(!yaml.contains("Sup3r-s3cret-pw"));
    assert!(
        imported
            .report
            .warnings()
            .iter()
            .any(|warning| warning.contains("held the value of POSTGRES_PASSWORD"))
    );
}

#[test]
fn connection_strings_with_a_password_become_secrets() {
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    environment:\n      DATABASE_URL: ${DATABASE_URL}\n      \
         LIBPQ_OPTIONS: host=db password=${DB_PASS}\n      DB_PASS: ${DB_PASS}\n",
        Some("DATABASE_URL=postgres://a:b@pg.example.com/app\nDB_PASS=Zq81-long-pass\n"),
    );
    let (imported, yaml) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert!(entry(&imported.stack, "LIBPQ_OPTIONS").value_from.is_some());
    assert!(!yaml.contains("Zq81-long-pass"));
}

#[test]
fn dollar_signs_survive_kubernetes_variable_expansion() {
    // Compose turns `$$` into `$`; Kubernetes would read `$(x)` as a
    // variable reference, so it is escaped as `$$(x)`.
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    command: [\"sh\", \"-c\", \"echo $$HOME $$(date) && exec serve\"]\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(
        imported.stack.spec.backend.args,
        strings(&["sh", "-c", "echo $HOME $$(date) && exec serve"])
    );
    assert_eq!(kubernetes_literal("a $$ b"), "a $$$ b");
}

#[test]
fn stack_names_are_made_valid() {
    assert_eq!(sanitize_name("My_Shop"), "my-shop");
    assert_eq!(sanitize_name("2048-game"), "app-2048-game");
    assert_eq!(sanitize_name("--"), "app");
    assert_eq!(sanitize_name(&"a".repeat(80)).len(), MAX_STACK_NAME_LENGTH);
}

#[test]
fn compose_memory_units_are_powers_of_1024() {
    assert_eq!(memory_quantity("512M").as_deref(), Some("512Mi"));
    assert_eq!(memory_quantity("1gb").as_deref(), Some("1Gi"));
    assert_eq!(memory_quantity("2048").as_deref(), Some("2048"));
    assert_eq!(memory_quantity("lots"), None);
}

#[test]
fn ports_are_read_from_command_flags() {
    let words = |text: &str| shlex::split(text).unwrap();
    assert_eq!(
        command_port(&words("uvicorn main:app --port 8001")),
        Some(8001)
    );
    assert_eq!(
        command_port(&words("gunicorn -b 0.0.0.0:5000 app:app")),
        Some(5000)
    );
    assert_eq!(
        command_port(&words("python manage.py runserver 0.0.0.0:8002")),
        Some(8002)
    );
    assert_eq!(command_port(&words("serve --port=9000")), Some(9000));
    assert_eq!(command_port(&words("node server.js")), None);
}

#[test]
fn dotenv_alone_becomes_an_env_list() {
    let directory = super::compose::tests::tempdir();
    let file = directory.path().join(".env");
    std::fs::write(
        &file,
        "LOG_LEVEL=info\nAPI_KEY=\"k-123456789\"\nSECRET_KEY=change-me\nDATABASE_URL=postgres://u:p@h/db\nDB_POOL_SIZE=5\n",
    )
    .unwrap();
    let imported = import_dotenv(&DotenvRequest {
        file,
        name: Some("shop".into()),
        generate_secrets: true,
        ..DotenvRequest::default()
    })
    .unwrap();
    let yaml = serde_yaml::to_string(&imported.env).unwrap();
    assert_eq!(
        yaml,
        "- name: LOG_LEVEL\n  value: info\n\
         - name: API_KEY\n  valueFrom:\n    secretKeyRef:\n      name: shop-dotenv\n      key: API_KEY\n\
         - name: SECRET_KEY\n  generate:\n    length: 48\n"
    );
    assert_eq!(
        imported.secret_values.keys().collect::<Vec<_>>(),
        ["API_KEY", "DATABASE_URL"]
    );
}

#[test]
fn services_behind_a_profile_are_left_out_unless_named() {
    // Compose starts a service with `profiles` only when a profile is
    // active, so it is not part of the default project.
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    ports: ['8000:8000']\n\
         \x20 adminer:\n    image: adminer\n    profiles: [tools]\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(
        skipped_services(&imported.report),
        [(
            "adminer",
            "only with profile tools: not started unless that profile is active (--profile)"
        )]
    );
}

#[test]
fn an_override_file_is_merged_over_the_default_file() {
    // Compose reads compose.override.yaml after compose.yaml when no -f is
    // given; the later file's image wins.
    let directory = project_dir("services:\n  api:\n    image: api:1\n", None);
    std::fs::write(
        directory.path().join("compose.override.yaml"),
        "services:\n  api:\n    image: api:2\n    environment: [DEBUG=1]\n",
    )
    .unwrap();
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(imported.stack.spec.backend.image, "api:2");
    assert_eq!(entry(&imported.stack, "DEBUG").value.as_deref(), Some("1"));
}

#[test]
fn messages_never_quote_a_secret() {
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    environment: {REDIS_PASSWORD: \"${REDIS_PASSWORD}\"}\n\
         \x20   healthcheck:\n      test: [\"CMD-SHELL\", \"redis-cli -a ${REDIS_PASSWORD} ping\"]\n",
        Some("REDIS_PASSWORD=r3dis-Hunter22\n"),
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    let report = imported.report.render(true);
    assert!(!report.contains("r3dis-Hunter22"), "{report}");
    assert!(
        report.contains(
            "api: healthcheck \"CMD-SHELL redis-cli -a <redacted> ping\": not an HTTP check"
        ),
        "{report}"
    );
}

#[test]
fn only_the_migration_commands_of_a_chain_move_to_the_job() {
    let directory = project_dir(
        "services:\n  db:\n    image: postgres:16\n  app:\n    image: app:1\n    depends_on: [db]\n\
         \x20   command: sh -c \"python manage.py collectstatic --noinput && python manage.py migrate && exec gunicorn app.wsgi\"\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    let spec = &imported.stack.spec;
    assert_eq!(
        spec.migrations.as_ref().unwrap().args,
        strings(&["python", "manage.py", "migrate"])
    );
    assert_eq!(
        spec.backend.args,
        strings(&[
            "sh",
            "-c",
            "python manage.py collectstatic --noinput && exec gunicorn app.wsgi"
        ])
    );
}

#[test]
fn a_dictionary_word_password_does_not_mangle_commands_or_messages() {
    // POSTGRES_PASSWORD=postgres is the most common development setting;
    // the word must not be taken for a secret inside "postgres" commands.
    let directory = project_dir(
        "services:\n  db:\n    image: postgres:16\n    environment: {POSTGRES_PASSWORD: postgres}\n\
         \x20 api:\n    image: api:1\n    command: [\"serve\", \"--driver\", \"postgres\"]\n    depends_on: [db]\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(
        imported.stack.spec.backend.args,
        strings(&["serve", "--driver", "postgres"])
    );
    assert!(imported.report.to_string().contains("postgres:16"));
}

#[test]
fn a_value_equal_to_the_database_password_is_the_password_only_where_the_name_says_so() {
    // Sample .env files reuse one placeholder everywhere.
    let directory = project_dir(
        "services:\n  db:\n    image: postgres:16\n    env_file: .env\n\
         \x20 api:\n    image: api:1\n    env_file: .env\n    depends_on: [db]\n",
        Some(
            "POSTGRES_PASSWORD=changethis\nSECRET_KEY=changethis\nADMIN_PASSWORD=changethis\n\
             DB_PASSWORD=changethis\nGREETING=changethis\n",
        ),
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        generate_secrets: true,
        ..ComposeRequest::default()
    });
    let stack = &imported.stack;
    let database = format!("{}-db", stack.metadata.name.as_deref().unwrap());
    for name in ["POSTGRES_PASSWORD", "DB_PASSWORD"] {
        let reference = &entry(stack, name)
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref;
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            (database.as_str(), "password")
        );
    }
    for name in ["SECRET_KEY", "ADMIN_PASSWORD"] {
        assert!(entry(stack, name).generate.is_some(), "{name}");
    }
    assert_eq!(
        entry(stack, "GREETING").value.as_deref(),
        Some("changethis")
    );
}

#[test]
fn values_yaml_1_1_reads_as_anything_but_a_string_are_quoted() {
    let directory = project_dir(
        "services:\n  api:\n    image: api:1\n    environment:\n      N: \"no\"\n      FLAG: \"on\"\n\
         \x20     SHORT: \"y\"\n      COUNT: \"1_000\"\n      OCTAL: \"0777\"\n      TIME: \"12:30\"\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    let printed = super::yaml::to_string(&imported.stack);
    for line in [
        "- name: \"N\"\n    value: \"no\"\n",
        "- name: FLAG\n    value: \"on\"\n",
        "- name: SHORT\n    value: \"y\"\n",
        "- name: COUNT\n    value: \"1_000\"\n",
        "- name: OCTAL\n    value: \"0777\"\n",
        "- name: TIME\n    value: \"12:30\"\n",
    ] {
        assert!(printed.contains(line), "{line:?} not in\n{printed}");
    }
    let read: AppStack = serde_yaml::from_str(&printed).unwrap();
    assert_eq!(read.spec, imported.stack.spec);
}

#[test]
fn zero_resources_are_no_limit_and_a_local_tag_beside_build_is_a_placeholder() {
    // Compose reads a limit of 0 as no limit; `docker compose build` tags
    // `api:latest` on this machine only.
    let directory = project_dir(
        "services:\n  api:\n    build: ./api\n    image: api:latest\n    deploy:\n      resources:\n\
         \x20       limits: {cpus: \"0\", memory: \"0\"}\n        reservations: {cpus: \"0.25\", memory: 128M}\n\
         \x20 worker:\n    build: ./api\n    image: ghcr.io/acme/api:1.0\n    command: celery -A app worker\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    let backend = &imported.stack.spec.backend;
    let resources = backend.resources.as_ref().unwrap();
    assert!(resources.limits.is_empty(), "{resources:?}");
    assert_eq!(resources.requests["memory"], Quantity("128Mi".into()));
    assert_eq!(backend.image, "<built from ./api: pass --image api=IMAGE>");
    assert!(
        imported
            .report
            .todos()
            .iter()
            .any(|todo| todo.starts_with("build api from ./api, push it")),
        "{}",
        imported.report
    );
}

#[test]
fn a_test_runner_is_never_the_frontend_and_a_name_is_no_url() {
    let directory = project_dir(
        "services:\n  backend:\n    image: ghcr.io/acme/api:1\n    ports: ['8000:8000']\n\
         \x20 playwright:\n    image: ghcr.io/acme/e2e:1\n    environment: {DOCKER_IMAGE_BACKEND: backend, BASE: \"http://backend:8000\"}\n\
         \x20   depends_on: [backend]\n\
         \x20 frontend:\n    image: ghcr.io/acme/web:1\n    build: {context: ./frontend, args: {VITE_API_URL: \"https://api.example.com\"}}\n",
        None,
    );
    let (imported, _) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    let frontend = imported.stack.spec.frontend.as_ref().unwrap();
    assert_eq!(frontend.image, "ghcr.io/acme/web:1");
    assert_eq!(frontend.api_url_env, "VITE_API_URL");
    assert!(
        skipped_services(&imported.report)
            .iter()
            .any(|(name, reason)| *name == "playwright" && reason.starts_with("end-to-end tests"))
    );
}

#[test]
fn a_database_built_locally_beside_a_shared_env_file_is_still_the_database() {
    // The cookiecutter-django layout: PostgreSQL built from a Dockerfile of
    // its own, its variables in an env file the application reads too.
    let directory = project_dir(
        "services:\n  django: &django\n    build: {context: ., dockerfile: ./compose/production/django/Dockerfile}\n\
         \x20   image: shop_production_django\n    depends_on: [postgres, redis]\n\
         \x20   env_file: [./.envs/.production/.django, ./.envs/.production/.postgres]\n    command: /start\n\
         \x20 postgres:\n    build: {context: ., dockerfile: ./compose/production/postgres/Dockerfile}\n\
         \x20   image: shop_production_postgres\n    env_file: [./.envs/.production/.postgres]\n\
         \x20 redis:\n    image: docker.io/redis:7.2\n\
         \x20 celeryworker:\n    <<: *django\n    image: shop_production_celeryworker\n    command: /start-celeryworker\n",
        None,
    );
    std::fs::create_dir_all(directory.path().join(".envs/.production")).unwrap();
    std::fs::write(
        directory.path().join(".envs/.production/.django"),
        "DJANGO_SECRET_KEY=Xk2-generated-9QbLm\nREDIS_URL=redis://redis:6379/0\n",
    )
    .unwrap();
    std::fs::write(
        directory.path().join(".envs/.production/.postgres"),
        "POSTGRES_HOST=postgres\nPOSTGRES_PORT=5432\nPOSTGRES_DB=shop\n\
         POSTGRES_USER=Vq9debugUser\nPOSTGRES_PASSWORD=Zr8-generated-Pw4\n",
    )
    .unwrap();
    let (imported, yaml) = import(ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    });
    assert_eq!(
        imported.report.parts(),
        [("django", "backend"), ("postgres", "database")]
    );
    let stack = &imported.stack;
    assert_eq!(stack.spec.database.name.as_deref(), Some("shop"));
    for (name, key) in [
        ("POSTGRES_HOST", "host"),
        ("POSTGRES_PORT", "port"),
        ("POSTGRES_DB", "database"),
        ("POSTGRES_USER", "username"),
        ("POSTGRES_PASSWORD", "password"),
    ] {
        assert_eq!(
            entry(stack, name)
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .key,
            key,
            "{name}"
        );
    }
    assert!(entry(stack, "DJANGO_SECRET_KEY").value_from.is_some());
    assert!(!yaml.contains("Zr8-generated-Pw4") && !yaml.contains("Xk2-generated-9QbLm"));
    assert!(
        imported
            .report
            .todos()
            .iter()
            .any(|todo| todo.starts_with("postgres is built from .: the managed database runs")),
        "{}",
        imported.report
    );
}
