//! `appstack import compose` on four compose projects written the way real
//! ones are (tests/fixtures/compose): the AppStack it prints passes a
//! server-side dry run on the local control plane, is applied with its
//! Secret in a fresh namespace, reaches Ready under the operator, and holds
//! no secret value of the project's .env.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{Operator, TestNamespace, setup, wait_ready};
use appstack::api::crd::AppStack;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

fn fixture(project: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(project)
}

/// A file path in a directory of the test's own.
fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "appstack-import-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    directory.join("secret.yaml")
}

/// What one `appstack import compose` run printed.
struct Imported {
    output: Output,
    stack: String,
    report: String,
}

/// Runs `appstack import compose ARGS` in the project's directory with an
/// empty environment, so only the project's .env feeds interpolation.
fn import_compose(project: &str, args: &[&str]) -> Imported {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appstack"))
        .args(["import", "compose"])
        .args(args)
        .current_dir(fixture(project))
        .env_clear()
        .output()
        .expect("run appstack import compose");
    Imported {
        stack: String::from_utf8(output.stdout.clone()).unwrap(),
        report: String::from_utf8(output.stderr.clone()).unwrap(),
        output,
    }
}

/// `kubectl ARGS` with `input` on standard input.
async fn kubectl(args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = crate::common::kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubectl apply --server-side --dry-run=server`: what the API server
/// says of `yaml` without storing it.
async fn dry_run(namespace: &str, yaml: &str) -> Output {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        yaml,
    )
    .await
}

async fn apply(namespace: &str, yaml: &str) {
    let output = kubectl(
        &["apply", "--server-side", "-n", namespace, "-f", "-"],
        yaml,
    )
    .await;
    assert!(output.status.success(), "kubectl apply: {}", text(&output));
}

/// A project imported into a namespace of its own and Ready there.
struct Deployed {
    client: Client,
    namespace: TestNamespace,
    imported: Imported,
    stack: AppStack,
}

/// Imports `project` with `args` plus `--secrets-out`, dry-runs the
/// AppStack on the API server, applies the Secret and the AppStack in a
/// fresh namespace and waits for Ready under an operator scoped to it.
/// Checks that none of `secrets` (values of the project's .env) reaches
/// the AppStack: as printed, as stored, or in the messages.
async fn import_and_deploy(project: &str, args: &[&str], secrets: &[&str]) -> Deployed {
    let dotenv = std::fs::read_to_string(fixture(project).join(".env")).unwrap();
    for secret in secrets {
        assert!(
            dotenv.contains(secret),
            "{secret} is not a value of {project}/.env"
        );
    }
    let (client, namespace) = setup(&format!("import-{project}")).await;
    let ns = namespace.name.as_str();
    let secret_file = scratch(project);
    let secrets_out = ["--secrets-out", secret_file.to_str().unwrap()];
    let imported = import_compose(project, &[args, &secrets_out].concat());
    assert!(imported.output.status.success(), "{}", imported.report);
    let dry = dry_run(ns, &imported.stack).await;
    assert!(
        dry.status.success(),
        "server-side dry run rejected the AppStack: {}\n{}",
        text(&dry),
        imported.stack
    );
    let secret = std::fs::read_to_string(&secret_file).expect("the Secret manifest was written");
    apply(ns, &secret).await;
    apply(ns, &imported.stack).await;
    let name = serde_yaml::from_str::<AppStack>(&imported.stack)
        .unwrap()
        .metadata
        .name
        .unwrap();
    // The import is what is tested: the operator parses an external URL but
    // does not connect (the projects' database hosts do not exist here).
    let operator = Operator::start_with(
        &["--namespace", ns],
        &[("APPSTACK_DATABASE_CHECKS", "none")],
    )
    .await;
    let stack = wait_ready(&client, ns, &name).await;
    operator.stop().await;
    let stored = serde_json::to_string(&stack).unwrap();
    for secret in secrets {
        assert!(
            !imported.stack.contains(secret),
            "{secret} printed in the AppStack"
        );
        assert!(!stored.contains(secret), "{secret} stored in the AppStack");
        assert!(
            !imported.report.contains(secret),
            "{secret} printed on stderr"
        );
    }
    Deployed {
        client,
        namespace,
        imported,
        stack,
    }
}

async fn secret_value(client: &Client, namespace: &str, name: &str, key: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let data = secrets.get(name).await.unwrap().data.unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

async fn backend_image(client: &Client, namespace: &str, stack: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get(&format!("{stack}-backend")).await.unwrap();
    deployment.spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn fastapi_react_with_a_migration_service_reaches_ready() {
    let Deployed {
        client,
        namespace,
        imported,
        stack,
    } = import_and_deploy(
        "fastapi-react",
        &["--generate-secrets"],
        &["pg-Kq8v3Lx2Rt", "SG.live-9fJ2kLmN3pQ"],
    )
    .await;
    let ns = namespace.name.as_str();
    assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
    assert_eq!(
        backend_image(&client, ns, "shop").await,
        "ghcr.io/acme/shop-api:1.4.2"
    );
    // The referenced value reached the operator's env Secret; the
    // placeholder was replaced by a generated value.
    assert_eq!(
        secret_value(&client, ns, "shop-env", "SENDGRID_API_KEY").await,
        "SG.live-9fJ2kLmN3pQ"
    );
    let generated = secret_value(&client, ns, "shop-env", "SECRET_KEY").await;
    assert_eq!(generated.len(), 48);
    assert_ne!(generated, "change-me");
    assert!(
        imported
            .report
            .contains("migrations: service migrate (Alembic)"),
        "{}",
        imported.report
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn django_celery_reaches_ready_and_reports_worker_and_redis() {
    let Deployed {
        imported, stack, ..
    } = import_and_deploy(
        "django-celery",
        &["--name", "blog"],
        &[
            "Xu8-blog-db-pass",
            "app-mail-Pw-77",
            "django-insecure-7h#q2v@x9-dev-only",
        ],
    )
    .await;
    let migration = stack.status.unwrap().migration.unwrap();
    assert_eq!(migration.applied_revision, migration.target_revision);
    let not_carried = imported
        .report
        .split_once("not carried over:\n")
        .map(|(_, list)| list)
        .unwrap_or_default();
    for line in [
        "  redis: service (image redis:7-alpine): a cache or broker",
        "  celery: service (image registry.example.com/acme/blog:2.3.0): a background worker",
        "  celery-beat: service (image registry.example.com/acme/blog:2.3.0): a background worker",
    ] {
        assert!(
            not_carried
                .lines()
                .any(|reported| reported.starts_with(line)),
            "{line:?} not in\n{}",
            imported.report
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn node_api_built_from_source_needs_images_then_reaches_ready() {
    let Deployed {
        client, namespace, ..
    } = import_and_deploy(
        "node-api",
        &[
            "--name",
            "notes",
            "--image",
            "api=ghcr.io/acme/notes-api:0.9.1",
            "--image",
            "web=ghcr.io/acme/notes-web:0.9.1",
            "--generate-secrets",
        ],
        &[
            "n0tes-Pg!pass",
            "m4il-S3cret",
            "whsec_8dJ2kq0LmZ",
            "MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAq7BFUpkGp3+LQmlQ",
        ],
    )
    .await;
    let ns = namespace.name.as_str();
    // The multi-line, double-quoted key went through .env parsing, the
    // Secret manifest and the operator unchanged.
    assert_eq!(
        secret_value(&client, ns, "notes-env", "JWT_PRIVATE_KEY").await,
        "-----BEGIN PRIVATE KEY-----\n\
         MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAq7BFUpkGp3+LQmlQ\n\
         Yx2eqzDV+xeG8kx/sQFV18S5JhzGeIJNA72wSeukEPojtqUyX2J0CciPBh7eqclQ\n\
         -----END PRIVATE KEY-----"
    );
    assert_eq!(
        backend_image(&client, ns, "notes").await,
        "ghcr.io/acme/notes-api:0.9.1"
    );

    // Without --image the command says so, and the API server refuses the
    // placeholder: nothing half-made is applied.
    let placeholder = import_compose("node-api", &[]);
    assert!(
        placeholder.output.status.success(),
        "{}",
        placeholder.report
    );
    assert!(
        placeholder
            .report
            .contains("pass --image api=REGISTRY/IMAGE:TAG"),
        "{}",
        placeholder.report
    );
    let refused = dry_run(ns, &placeholder.stack).await;
    assert!(!refused.status.success(), "the placeholder was accepted");
    let message = text(&refused);
    assert!(
        message.contains("spec.backend.image") && message.contains("pass --image api=IMAGE"),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn external_database_project_reaches_ready_with_the_url_in_a_secret() {
    let Deployed {
        client,
        namespace,
        stack,
        ..
    } = import_and_deploy(
        "external-db",
        &["--name", "ledger"],
        &["L3dger-db-Pw", "tok_live_5Gh8sK2pQ"],
    )
    .await;
    let ns = namespace.name.as_str();
    let external = stack.spec.database.external.unwrap();
    assert_eq!(
        (
            external.url_secret_ref.name.as_str(),
            external.url_secret_ref.key.as_str()
        ),
        ("ledger-dotenv", "DATABASE_URL")
    );
    assert_eq!(
        secret_value(&client, ns, "ledger-dotenv", "DATABASE_URL").await,
        "postgres://ledger:L3dger-db-Pw@db.internal.example.com:5432/ledger?sslmode=require"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let spec = deployments.get("ledger-backend").await.unwrap().spec;
    assert_eq!(spec.replicas, Some(3));
    let container = &spec.template.spec.unwrap().containers[0];
    let url = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|var| var.name == "DATABASE_URL")
        .unwrap();
    let reference = url
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("ledger-dotenv", "DATABASE_URL")
    );
}

/// Runs `appstack import ARGS` in `directory` with an empty environment.
fn appstack_import(directory: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_appstack"))
        .arg("import")
        .args(args)
        .current_dir(directory)
        .env_clear()
        .output()
        .expect("run appstack import")
}

#[test]
fn exits_non_zero_only_when_no_appstack_can_be_made() {
    let directory = scratch("required").parent().unwrap().to_path_buf();
    std::fs::write(
        directory.join("compose.yaml"),
        "services:\n  api:\n    image: \"api:${TAG:?set TAG first}\"\n",
    )
    .unwrap();
    let failed = appstack_import(&directory, &["compose"]);
    assert!(!failed.status.success());
    assert!(failed.stdout.is_empty(), "no AppStack on failure");
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("required variable TAG is missing a value: set TAG first"),
        "{}",
        text(&failed)
    );

    // Warnings (a Secret not written, an unset variable) still make one.
    let warned = appstack_import(&fixture("fastapi-react"), &["compose"]);
    assert!(warned.status.success(), "{}", text(&warned));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains(
            "warning: the AppStack references Secret shop-dotenv (SECRET_KEY, SENDGRID_API_KEY); rerun with --secrets-out FILE to write it"
        ),
        "{stderr}"
    );
    let stack: AppStack = serde_yaml::from_slice(&warned.stdout).unwrap();
    assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
}

#[test]
fn dotenv_prints_the_typed_env_list() {
    let secret_file = scratch("dotenv");
    let output = appstack_import(
        &fixture("node-api"),
        &[
            "dotenv",
            ".env",
            "--name",
            "notes",
            "--generate-secrets",
            "--secrets-out",
            secret_file.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let env: Vec<appstack::api::crd::EnvEntry> = serde_yaml::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = env.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "NODE_ENV",
            "PORT",
            "PGPASSWORD",
            "JWT_PRIVATE_KEY",
            "JWT_EXPIRES_IN",
            "GREETING",
            "CORS_ORIGINS",
            "LOG_FORMAT",
            "FEATURE_FLAGS",
            "SMTP_URL",
            "SESSION_SECRET",
            "STRIPE_WEBHOOK_SECRET",
            "ANALYTICS_ID"
        ],
        "DATABASE_URL is the operator's"
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    for secret in [
        "n0tes-Pg!pass",
        "m4il-S3cret",
        "whsec_8dJ2kq0LmZ",
        "MIIBVgIB",
    ] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
    let manifest: Secret =
        serde_yaml::from_str(&std::fs::read_to_string(&secret_file).unwrap()).unwrap();
    let data = manifest.string_data.unwrap();
    assert_eq!(manifest.metadata.name.as_deref(), Some("notes-dotenv"));
    assert_eq!(data["PGPASSWORD"], "n0tes-Pg!pass");
    assert_eq!(
        data["DATABASE_URL"],
        "postgresql://notes:n0tes-Pg!pass@postgres:5432/notes?schema=public"
    );
    assert!(
        !data.contains_key("SESSION_SECRET"),
        "generated by the operator"
    );
}
