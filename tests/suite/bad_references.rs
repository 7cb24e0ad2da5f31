//! Malformed references on the real local control plane: a stack whose
//! env names a missing Secret, a missing key, a value that is not text, a
//! cluster token, or whose own Secret's name is taken by another type of
//! Secret. Each gives a condition naming the problem and waits: a pass
//! every half minute at most, never an error loop, never a crash; fixing the
//! reference brings the stack up at once.

use std::time::Duration;

use crate::common::{
    LIMIT, Operator, apply_stack, condition, eventually, example, setup, wait_for, wait_ready,
};
use appstack::api::conditions::reasons;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The observation window for counting passes.
const WINDOW: Duration = Duration::from_secs(60);
/// Passes over one waiting stack within [`WINDOW`] that are still "slow":
/// the safety net looks every 30 s; anything near this is a loop.
const MAX_PASSES_PER_MINUTE: usize = 6;

/// The example stack named `name` whose `SENDGRID_API_KEY` comes from
/// `secret`/`key`.
fn referencing(name: &str, secret: &str, key: &str) -> Value {
    let mut stack = example(name);
    stack["spec"]["env"][2]["valueFrom"]["secretKeyRef"] = json!({"name": secret, "key": key});
    stack
}

async fn create(client: &Client, namespace: &str, secret: Value) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(secret).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn malformed_references_get_a_condition_and_a_slow_retry() {
    let (client, namespace) = setup("badrefs").await;
    let ns = namespace.name.as_str();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    eventually("the default ServiceAccount", LIMIT, || async {
        accounts.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;
    create(
        &client,
        ns,
        json!({"metadata": {"name": "binary"}, "data": {"blob": "//4AAQ=="}}),
    )
    .await;
    create(
        &client,
        ns,
        json!({"metadata": {"name": "token", "annotations": {"kubernetes.io/service-account.name": "default"}},
               "type": "kubernetes.io/service-account-token"}),
    )
    .await;
    create(
        &client,
        ns,
        json!({"metadata": {"name": "taken-env"}, "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": "not a certificate", "tls.key": "not a key"}}),
    )
    .await;
    let cases = [
        (
            referencing("missing", "nope", "api-key"),
            reasons::SECRET_NOT_FOUND,
            r#"Secret "nope" (spec.env[SENDGRID_API_KEY]) does not exist"#,
        ),
        (
            referencing("nokey", "sendgrid", "other"),
            reasons::SECRET_KEY_NOT_FOUND,
            r#"Secret "sendgrid" has no key "other" (spec.env[SENDGRID_API_KEY]); its keys: api-key"#,
        ),
        (
            referencing("binary", "binary", "blob"),
            reasons::SECRET_VALUE_NOT_TEXT,
            r#"the value of key "blob" of Secret "binary" (spec.env[SENDGRID_API_KEY]) is not text"#,
        ),
        (
            referencing("token", "token", "token"),
            reasons::SECRET_TYPE_NOT_ALLOWED,
            r#"Secret "token" (spec.env[SENDGRID_API_KEY]) is of type kubernetes.io/service-account-token"#,
        ),
        (
            example("taken"),
            reasons::SECRET_CONFLICT,
            r#"Secret "taken-env" exists with type kubernetes.io/tls"#,
        ),
    ];
    let operator = Operator::start(ns).await;
    for (stack, _, _) in &cases {
        apply_stack(&client, ns, stack).await;
    }
    for (stack, reason, message) in &cases {
        let name = stack["metadata"]["name"].as_str().unwrap();
        let waiting = wait_for(&client, ns, name, "SecretsReady", "False", Some(reason)).await;
        assert_eq!(
            condition(&waiting, "Reconciling").unwrap(),
            ("True".into(), reason.to_string()),
            "{name} waits, it is not stalled"
        );
        let said = &waiting
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Ready")
            .unwrap()
            .message;
        assert!(said.starts_with(message), "{name}: {said}");
    }

    // A minute of waiting: each stack is looked at now and then, the
    // operator neither fails a pass nor exits.
    let errors = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("controller_runtime_reconcile_errors_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let names: Vec<&str> = cases
        .iter()
        .map(|(stack, _, _)| stack["metadata"]["name"].as_str().unwrap())
        .collect();
    let errors_before = errors(&operator.metrics().await);
    let before: Vec<usize> = names.iter().map(|name| operator.passes(name, ns)).collect();
    tokio::time::sleep(WINDOW).await;
    let counts: Vec<(&str, usize)> = names
        .iter()
        .zip(before)
        .map(|(name, before)| (*name, operator.passes(name, ns) - before))
        .collect();
    println!("passes per stack in {WINDOW:?}: {counts:?}");
    for (name, count) in &counts {
        assert!(
            (1..=MAX_PASSES_PER_MINUTE).contains(count),
            "{name}: {count} passes in {WINDOW:?}"
        );
    }
    assert_eq!(
        errors(&operator.metrics().await),
        errors_before,
        "no failed pass"
    );
    assert!(
        operator.health("/healthz").await == Some(200),
        "still running"
    );

    // Fixed references are picked up at once, through the Secret watch.
    crate::common::create_secret(&client, ns, "nope", "api-key", "SG.now-there").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .patch(
            "sendgrid",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"other": "SG.other"}})),
        )
        .await
        .unwrap();
    for name in ["missing", "nokey"] {
        wait_ready(&client, ns, name).await;
    }
}
