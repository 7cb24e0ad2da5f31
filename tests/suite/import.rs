//! `appstack import compose` on the local control plane: four compose
//! projects written the way real ones are (tests/fixtures/compose) and
//! eleven public projects (tests/fixtures/import-corpus, with
//! expectations.yaml). What the command prints is read back through
//! kubectl's own decoder (YAML 1.1 rules) and must keep every value; the
//! API server accepts it in a server-side dry run; applied with its Secret
//! in a fresh namespace it reaches Ready under the operator; the variables
//! wired to the operator's database hold its values; no secret value of
//! the project is printed or stored.
//!
//! Projects that build their images on the developer's machine get a
//! placeholder image the API server refuses (tested once below); for the
//! Ready test each such service is given a stand-in reference with
//! `--image` (listed in expectations.yaml): KWOK runs no image, so any
//! valid reference is as good as the real one there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{Operator, TestNamespace, setup, wait_ready};
use appstack::api::crd::AppStack;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

fn fixture(project: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(project)
}

fn corpus_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import-corpus")
}

/// A directory of the test's own, removed when the returned guard is
/// dropped.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("appstack-import-{name}-"))
        .tempdir()
        .unwrap()
}

/// What one `appstack import compose` run printed.
struct Imported {
    output: Output,
    stack: String,
    report: String,
}

/// Runs `appstack import compose ARGS` in `directory` with only `env` as
/// its environment, so only the project's .env feeds interpolation.
fn import_in(directory: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Imported {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appstack"))
        .args(["import", "compose"])
        .args(args)
        .current_dir(directory)
        .env_clear()
        .envs(env)
        .output()
        .expect("run appstack import compose");
    Imported {
        stack: String::from_utf8(output.stdout.clone()).unwrap(),
        report: String::from_utf8(output.stderr.clone()).unwrap(),
        output,
    }
}

fn import_compose(project: &str, args: &[&str]) -> Imported {
    import_in(&fixture(project), args, &BTreeMap::new())
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

/// `kubectl apply --server-side --dry-run=server -o json`: what the API
/// server says of `yaml`, read by kubectl's decoder, without storing it.
async fn dry_run(namespace: &str, yaml: &str) -> Output {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-o",
            "json",
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

/// Every leaf of `ours` (as a YAML 1.2 reader reads the printed file)
/// equals the same leaf of `theirs` (as kubectl read it and the API
/// server stored it): no value turned into a boolean or a number.
fn assert_kept(ours: &Value, theirs: &Value, path: &str) {
    match ours {
        Value::Object(fields) => {
            for (key, value) in fields {
                assert_kept(value, &theirs[key], &format!("{path}.{key}"));
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                assert_kept(item, &theirs[index], &format!("{path}[{index}]"));
            }
        }
        leaf => assert_eq!(leaf, theirs, "{path} changed on its way through kubectl"),
    }
}

/// Dry-runs `yaml` through kubectl and the API server and checks that
/// every value came through as written; returns the stored object.
async fn round_trip(namespace: &str, yaml: &str) -> Value {
    let dry = dry_run(namespace, yaml).await;
    assert!(
        dry.status.success(),
        "server-side dry run rejected it: {}\n{yaml}",
        text(&dry)
    );
    let stored: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let ours: Value = serde_yaml::from_str(yaml).unwrap();
    let (ours, stored) = match ours["kind"].as_str() {
        // The API server keeps stringData as base64 data.
        Some("Secret") => {
            let data: BTreeMap<String, String> = stored["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| (key.clone(), decode_base64(value.as_str().unwrap())))
                .collect();
            (
                ours["stringData"].clone(),
                serde_json::to_value(data).unwrap(),
            )
        }
        _ => (ours, stored),
    };
    assert_kept(&ours, &stored, "");
    stored
}

fn decode_base64(text: &str) -> String {
    let secret: Secret = serde_json::from_value(serde_json::json!({"data": {"k": text}})).unwrap();
    String::from_utf8(secret.data.unwrap()["k"].0.clone()).unwrap()
}

/// A project imported into a namespace of its own and Ready there.
struct Deployed {
    client: Client,
    namespace: TestNamespace,
    imported: Imported,
    stack: AppStack,
}

/// Imports the project in `directory` with `args` plus `--secrets-out`,
/// reads the AppStack and the Secret back through kubectl and a dry run,
/// applies both in a fresh namespace and waits for Ready under an operator
/// scoped to it. Checks that none of `secrets` reaches the AppStack: as
/// printed, as stored, or in the messages.
async fn deploy(
    label: &str,
    directory: &Path,
    args: &[&str],
    env: &BTreeMap<String, String>,
    secrets: &[&str],
) -> Deployed {
    let (client, namespace) = setup(&format!("import-{label}")).await;
    let ns = namespace.name.as_str();
    let secret_directory = scratch(label);
    let secret_file = secret_directory.path().join("secret.yaml");
    let secrets_out = ["--secrets-out", secret_file.to_str().unwrap()];
    let imported = import_in(directory, &[args, &secrets_out].concat(), env);
    assert!(imported.output.status.success(), "{}", imported.report);
    round_trip(ns, &imported.stack).await;
    if let Ok(secret) = std::fs::read_to_string(&secret_file) {
        round_trip(ns, &secret).await;
        apply(ns, &secret).await;
    }
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
        let whole = |text: &str| {
            text.split(|c: char| c.is_whitespace() || "\"',:@=".contains(c))
                .any(|word| word == *secret)
        };
        assert!(!whole(&imported.stack), "{secret} printed in the AppStack");
        assert!(!whole(&stored), "{secret} stored in the AppStack");
        assert!(!whole(&imported.report), "{secret} printed on stderr");
    }
    Deployed {
        client,
        namespace,
        imported,
        stack,
    }
}

async fn import_and_deploy(project: &str, args: &[&str], secrets: &[&str]) -> Deployed {
    let dotenv = std::fs::read_to_string(fixture(project).join(".env")).unwrap();
    for secret in secrets {
        assert!(
            dotenv.contains(secret),
            "{secret} is not a value of {project}/.env"
        );
    }
    deploy(project, &fixture(project), args, &BTreeMap::new(), secrets).await
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
    // The shared .env gave the backend POSTGRES_PASSWORD: it holds the
    // operator's password now, not the compose one.
    assert_eq!(
        secret_value(&client, ns, "shop-env", "POSTGRES_PASSWORD").await,
        secret_value(&client, ns, "shop-db", "password").await
    );
    assert!(
        imported
            .report
            .contains("migrate → migrations: the migration Job (Alembic)"),
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
    assert!(
        imported.report.contains(
            "left out: redis (a cache or broker), celery (a background worker), celery-beat (a background worker)\n"
        ),
        "{}",
        imported.report
    );
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

    // Without --image the command says so, and the API server and
    // `appstack render` refuse the placeholder: nothing half-made is
    // applied.
    let placeholder = import_compose("node-api", &[]);
    assert!(
        placeholder.output.status.success(),
        "{}",
        placeholder.report
    );
    assert!(
        placeholder
            .report
            .contains("rerun with --image api=REGISTRY/IMAGE:TAG"),
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
    let stack_directory = scratch("node-api-placeholder");
    let file = stack_directory.path().join("stack.yaml");
    std::fs::write(&file, &placeholder.stack).unwrap();
    let rendered = std::process::Command::new(env!("CARGO_BIN_EXE_appstack"))
        .args(["render", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!rendered.status.success());
    assert!(
        String::from_utf8_lossy(&rendered.stderr).contains(
            "spec.backend.image is \"<built from ./api: pass --image api=IMAGE>\", a placeholder"
        ),
        "{}",
        text(&rendered)
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

/// One corpus project's expectations (tests/fixtures/import-corpus/
/// expectations.yaml, where each field is explained); the fields the
/// cluster test reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Expected {
    copy: BTreeMap<String, String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    database: BTreeMap<String, String>,
    plain: BTreeMap<String, String>,
    generated: Vec<String>,
    referenced: Vec<String>,
    secrets: Vec<String>,
    images: BTreeMap<String, String>,
}

fn expected(project: &str) -> Expected {
    let text = std::fs::read_to_string(corpus_directory().join("expectations.yaml")).unwrap();
    let mut all: BTreeMap<String, Expected> = serde_yaml::from_str(&text).unwrap();
    all.remove(project)
        .unwrap_or_else(|| panic!("{project} has no expectations"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Imports a corpus project as its docs run it, with a stand-in for each
/// image it builds, and checks it on the cluster: the AppStack and its
/// Secret come back from kubectl and the API server as printed, the stack
/// reaches Ready, the variables wired to the operator's database hold the
/// values of its `<stack>-db` Secret, and the other variables are where
/// the expectations say.
async fn corpus_project_reaches_ready(project: &str) {
    let expected = expected(project);
    let scratch_directory = scratch(&format!("corpus-{project}"));
    // Under its own name: a project that names no stack is named after its directory.
    let directory = scratch_directory.path().join(project);
    copy_tree(&corpus_directory().join(project), &directory);
    for (from, to) in &expected.copy {
        std::fs::copy(directory.join(from), directory.join(to)).unwrap();
    }
    let images: Vec<String> = expected
        .images
        .iter()
        .map(|(service, image)| format!("{service}={image}"))
        .collect();
    let mut args: Vec<&str> = expected.args.iter().map(String::as_str).collect();
    for image in &images {
        args.extend(["--image", image]);
    }
    let secrets: Vec<&str> = expected.secrets.iter().map(String::as_str).collect();
    let label = project.replace('.', "-");
    let Deployed {
        client,
        namespace,
        imported,
        stack,
    } = deploy(&label, &directory, &args, &expected.env, &secrets).await;
    let ns = namespace.name.as_str();
    let name = stack.metadata.name.clone().unwrap();
    let lines = imported.report.lines().count();
    assert!(lines < 30, "{project}: {lines} lines\n{}", imported.report);
    // The backend runs what the AppStack names: the project's image, or
    // the stand-in given for one it builds.
    assert_eq!(
        backend_image(&client, ns, &name).await,
        stack.spec.backend.image
    );
    let env_secret = format!("{name}-env");
    let database_secret = format!("{name}-db");
    for (variable, key) in &expected.database {
        assert_eq!(
            secret_value(&client, ns, &env_secret, variable).await,
            secret_value(&client, ns, &database_secret, key).await,
            "{project}: {variable} holds the operator's {key}"
        );
    }
    for variable in &expected.generated {
        let value = secret_value(&client, ns, &env_secret, variable).await;
        assert_eq!(value.len(), 48, "{project}: {variable}");
    }
    for variable in &expected.referenced {
        // Present, copied from the user's Secret (empty ones too).
        secret_value(&client, ns, &env_secret, variable).await;
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let plain = config_maps
        .get(&env_secret)
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    for (variable, value) in &expected.plain {
        assert_eq!(
            plain.get(variable),
            Some(value),
            "{project}: {variable} in ConfigMap {env_secret}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_fastapi_template_0_8_reaches_ready() {
    corpus_project_reaches_ready("fastapi-template-0.8").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_fastapi_template_0_12_reaches_ready() {
    corpus_project_reaches_ready("fastapi-template-0.12").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_django_on_docker_reaches_ready() {
    corpus_project_reaches_ready("django-on-docker").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_saleor_platform_reaches_ready() {
    corpus_project_reaches_ready("saleor-platform").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_listmonk_reaches_ready() {
    corpus_project_reaches_ready("listmonk").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_awesome_compose_gitea_reaches_ready() {
    corpus_project_reaches_ready("awesome-compose-gitea").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_awesome_compose_react_rust_reaches_ready() {
    corpus_project_reaches_ready("awesome-compose-react-rust").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_maybe_reaches_ready() {
    corpus_project_reaches_ready("maybe").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_jhipster_sample_app_reaches_ready() {
    corpus_project_reaches_ready("jhipster-sample-app").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_umami_reaches_ready() {
    corpus_project_reaches_ready("umami").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn corpus_hoppscotch_reaches_ready() {
    corpus_project_reaches_ready("hoppscotch").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn values_yaml_1_1_would_misread_come_through_kubectl_as_written() {
    // Compose reads these as strings; kubectl's YAML 1.1 decoder would read
    // them bare as booleans and numbers, and an env named N as false.
    let directory = scratch("yaml-1-1");
    std::fs::write(
        directory.path().join("compose.yaml"),
        "services:\n  api:\n    image: api:1\n    environment:\n\
         \x20     N: \"no\"\n      FLAG: \"on\"\n      OFF: \"Off\"\n      SHORT: \"y\"\n\
         \x20     COUNT: \"1_000\"\n      OCTAL: \"0777\"\n      TIME: \"12:30\"\n\
         \x20     DATE: \"2024-01-31\"\n      API_PASSWORD: \"yes\"\n",
    )
    .unwrap();
    let (_client, namespace) = setup("import-yaml11").await;
    let secret_file = directory.path().join("secret.yaml");
    let imported = import_in(
        directory.path(),
        &[
            "--name",
            "quoting",
            "--secrets-out",
            secret_file.to_str().unwrap(),
        ],
        &BTreeMap::new(),
    );
    assert!(imported.output.status.success(), "{}", imported.report);
    let stored = round_trip(&namespace.name, &imported.stack).await;
    let env = stored["spec"]["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|entry| entry["name"] == name)
            .and_then(|entry| entry["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(value("N").as_deref(), Some("no"));
    assert_eq!(value("COUNT").as_deref(), Some("1_000"));
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    round_trip(&namespace.name, &secret).await;
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
    let directory = scratch("required");
    std::fs::write(
        directory.path().join("compose.yaml"),
        "services:\n  api:\n    image: \"api:${TAG:?set TAG first}\"\n",
    )
    .unwrap();
    let failed = appstack_import(directory.path(), &["compose"]);
    assert!(!failed.status.success());
    assert!(failed.stdout.is_empty(), "no AppStack on failure");
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("required variable TAG is missing a value: set TAG first"),
        "{}",
        text(&failed)
    );

    // What is left to do (a Secret not written) still makes one.
    let warned = appstack_import(&fixture("fastapi-react"), &["compose"]);
    assert!(warned.status.success(), "{}", text(&warned));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains(
            "create Secret shop-dotenv (SECRET_KEY, SENDGRID_API_KEY) before the AppStack: rerun with --secrets-out FILE to have it written"
        ),
        "{stderr}"
    );
    let stack: AppStack = serde_yaml::from_slice(&warned.stdout).unwrap();
    assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
}

#[test]
fn verbose_says_why_each_setting_was_not_carried_over() {
    let brief = appstack_import(&fixture("fastapi-react"), &["compose"]);
    let verbose = appstack_import(&fixture("fastapi-react"), &["compose", "--verbose"]);
    let (brief, verbose) = (
        String::from_utf8_lossy(&brief.stderr),
        String::from_utf8_lossy(&verbose.stderr),
    );
    assert!(brief.contains("--verbose says why"), "{brief}");
    assert!(
        verbose.contains("not carried over:\n")
            && verbose.contains("db: ports \"5432:5432\": no host port"),
        "{verbose}"
    );
    assert!(verbose.lines().count() > brief.lines().count());
}

#[test]
fn dotenv_prints_the_typed_env_list() {
    let secret_directory = scratch("dotenv");
    let secret_file = secret_directory.path().join("secret.yaml");
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
