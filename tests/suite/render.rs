//! `appstack render` on files as users keep them: AppStacks next to the
//! Secrets they reference, in one multi-document file.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

const SECRETS: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: sendgrid}
stringData: {api-key: SG.kept-out-of-the-output}
---
apiVersion: v1
kind: Secret
metadata: {name: api-db}
stringData: {url: 'postgresql://api:s3cret-password@10.20.30.40:5432/api'}
";

/// An AppStack `api`: backend only, an external database, exposed at the
/// root of api.example.com.
const API_STACK: &str = "\
apiVersion: appstack.dev/v1alpha1
kind: AppStack
metadata: {name: api}
spec:
  database:
    external: {urlSecretRef: {name: api-db, key: url}}
  backend: {image: ghcr.io/acme/api:2.0.0, replicas: 1}
  env:
    - {name: SENDGRID_API_KEY, valueFrom: {secretKeyRef: {name: sendgrid, key: api-key}}}
  expose: {host: api.example.com}
";

fn file_with_every_stack() -> String {
    format!(
        "{SECRETS}---\n{}---\n{API_STACK}",
        include_str!("../../deploy/examples/shop.yaml")
    )
}

fn render(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_appstack"))
        .arg("render")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run appstack render");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn documents(output: &[u8]) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(std::str::from_utf8(output).unwrap())
        .map(|document| serde_yaml::Value::deserialize(document).unwrap())
        .collect()
}

fn named(documents: &[serde_yaml::Value]) -> Vec<String> {
    documents
        .iter()
        .map(|value| {
            format!(
                "{} {}",
                value["kind"].as_str().unwrap(),
                value["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_multi_document_file_renders_every_stack_and_no_secret_value() {
    let path = std::env::temp_dir().join(format!("appstack-render-{}.yaml", std::process::id()));
    std::fs::write(&path, file_with_every_stack()).unwrap();
    let from_file = render(&["-f", path.to_str().unwrap(), "-n", "prod"], "");
    std::fs::remove_file(&path).unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let from_stdin = render(&["-f", "-", "-n", "prod"], &file_with_every_stack());
    assert_eq!(
        from_stdin.stdout, from_file.stdout,
        "a file and stdin read alike"
    );

    let text = String::from_utf8(from_file.stdout.clone()).unwrap();
    for secret in ["SG.kept-out-of-the-output", "s3cret-password"] {
        assert!(!text.contains(secret), "the output shows {secret}");
    }
    let documents = documents(&from_file.stdout);
    let names = named(&documents);
    for expected in [
        "Deployment shop-backend",
        "Ingress shop",
        "Deployment api-backend",
        "Ingress api",
        "NetworkPolicy api-backend",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|name| name.starts_with("Secret sendgrid")),
        "the user's own Secrets are not the operator's to create"
    );
    let api_env = documents
        .iter()
        .find(|value| value["kind"] == "Secret" && value["metadata"]["name"] == "api-env")
        .unwrap();
    assert_eq!(
        api_env["stringData"]["SENDGRID_API_KEY"],
        "<from Secret sendgrid/api-key>"
    );
    let api_policy = documents
        .iter()
        .find(|value| {
            value["kind"] == "NetworkPolicy" && value["metadata"]["name"] == "api-backend"
        })
        .unwrap();
    assert_eq!(
        api_policy["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"], "10.20.30.40/32",
        "the database URL in the file locates the external database"
    );
    assert_eq!(
        api_policy["metadata"]["namespace"], "prod",
        "-n applies to stacks that name no namespace"
    );
}

#[test]
fn a_referenced_key_missing_from_the_file_fails_naming_it() {
    let file = file_with_every_stack().replace("{api-key: SG", "{apikey: SG");
    let output = render(&["-f", "-"], &file);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "AppStack shop reads key \"api-key\" of Secret \"sendgrid\", which the Secret in this file does not have"
        ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing half-rendered");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn what_render_prints_the_api_server_accepts() {
    let client = crate::common::client().await;
    let namespace = crate::common::TestNamespace::new(&client, "render").await;
    // The ServiceMonitor's CRD comes and goes with other tests; leave it out.
    let file = file_with_every_stack().replace(
        "serviceMonitor: {enabled: true,",
        "serviceMonitor: {enabled: false,",
    );
    let rendered = render(&["-f", "-", "-n", &namespace.name], &file);
    assert!(rendered.status.success());
    let mut apply = crate::common::kubectl()
        .args(["apply", "--server-side", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = apply.stdin.take().unwrap();
        stdin.write_all(&rendered.stdout).await.unwrap();
    }
    let applied = apply.wait_with_output().await.unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let accepted = String::from_utf8(applied.stdout).unwrap();
    for kind in [
        "networkpolicy.networking.k8s.io/api-backend serverside-applied (server dry run)",
        "ingress.networking.k8s.io/shop serverside-applied (server dry run)",
        "poddisruptionbudget.policy/shop-frontend serverside-applied (server dry run)",
    ] {
        assert!(accepted.contains(kind), "{accepted}");
    }
}
