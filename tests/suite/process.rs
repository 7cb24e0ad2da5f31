//! The operator as a production process, against the real local control
//! plane: metrics, health and readiness, logs that never carry secrets, and
//! leader election between two processes.

use std::time::{Duration, Instant};

use crate::common::postgres::Postgres;
use crate::common::{
    LIMIT, Operator, TestNamespace, apply_stack, base64, client, eventually, example, free_port,
    http_get, ready_shop, render_operator_rbac, sample, setup, wait_for, wait_ready,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The leader gauge of the default Lease.
const MASTER_STATUS: &str = r#"leader_election_master_status{name="appstack-operator"}"#;

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .as_ref()
        .and_then(holder)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn metrics_count_reconciles_requests_and_stacks() {
    let (client, namespace, operator, _stack) = ready_shop("metrics").await;
    let ns = namespace.name.as_str();
    let metrics = eventually("the Ready stack counted", LIMIT, || async {
        let metrics = operator.metrics().await;
        (sample(&metrics, r#"appstack_stacks{condition="Ready"}"#) == Some(1.0)).then_some(metrics)
    })
    .await;

    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
    };
    assert!(
        value(r#"controller_runtime_reconcile_total{controller="appstack",result="success"}"#)
            >= 3.0
    );
    assert!(
        value(r#"controller_runtime_reconcile_time_seconds_count{controller="appstack"}"#) >= 3.0
    );
    assert!(
        value(
            r#"controller_runtime_reconcile_time_seconds_bucket{controller="appstack",le="+Inf"}"#
        ) >= 3.0
    );
    assert_eq!(
        value(r#"controller_runtime_max_concurrent_reconciles{controller="appstack"}"#),
        16.0
    );
    // Every worker a pass took is given back: with the stack Ready and
    // nothing changing, none stays busy.
    eventually(
        "no reconcile in progress on a converged stack",
        LIMIT,
        || async {
            let metrics = operator.metrics().await;
            (sample(
                &metrics,
                r#"controller_runtime_active_workers{controller="appstack"}"#,
            ) == Some(0.0))
            .then_some(())
        },
    )
    .await;
    for step in ["dereference", "apply", "status"] {
        assert_eq!(
            value(&format!(
                r#"controller_runtime_reconcile_errors_total{{controller="appstack",step="{step}"}}"#
            )),
            0.0,
            "errors are counted by the step that failed"
        );
    }
    assert!(value(r#"rest_client_requests_total{code="200",method="GET"}"#) > 0.0);
    assert!(value(r#"rest_client_requests_total{code="200",method="PATCH"}"#) > 0.0);
    assert!(value(r#"rest_client_requests_total{code="201",method="POST"}"#) > 0.0);
    assert_eq!(value(r#"appstack_stacks{condition="Stalled"}"#), 0.0);
    assert_eq!(value(r#"appstack_migrations_total{result="started"}"#), 1.0);
    assert_eq!(
        value(r#"appstack_migrations_total{result="succeeded"}"#),
        1.0
    );
    assert_eq!(value(r#"appstack_migrations_total{result="failed"}"#), 0.0);
    assert_eq!(
        value("appstack_secrets_generated_total"),
        2.0,
        "shop-db and shop-env"
    );
    // No per-object label values: the stack and its namespace appear nowhere.
    assert!(
        !metrics.contains(ns) && !metrics.contains("shop"),
        "per-object labels:\n{metrics}"
    );

    // The counters move with more work.
    let before =
        value(r#"controller_runtime_reconcile_total{controller="appstack",result="success"}"#);
    let mut stack = example("shop");
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:1.5.0");
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    let after = operator.metrics().await;
    assert_eq!(
        sample(&after, r#"appstack_migrations_total{result="succeeded"}"#),
        Some(2.0)
    );
    assert!(
        sample(
            &after,
            r#"controller_runtime_reconcile_total{controller="appstack",result="success"}"#
        )
        .unwrap()
            > before
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn readiness_follows_caches_and_the_leader_lease() {
    let client = client().await;
    let namespace = TestNamespace::new(&client, "readiness").await;
    let ns = namespace.name.as_str();
    crate::common::install_crd(&client).await;
    // The chart's ServiceAccount and Role, but not yet its leader-election
    // Role: the election cannot reach its Lease, so the process is alive
    // but not ready.
    let [account, role, lease_role] = crate::common::OPERATOR_RBAC_TEMPLATES;
    crate::common::apply_yaml(&client, &render_operator_rbac(ns, &[account, role]).await).await;
    let operator = Operator::start_with(
        &[
            "--namespace",
            ns,
            "--leader-elect",
            "--leader-elect-namespace",
            ns,
        ],
        &[],
    )
    .await;
    operator.wait_for_health("/healthz", 200).await;
    // Refused while the lease is unreachable.
    operator.wait_for_health("/readyz", 503).await;
    let metrics = operator.metrics().await;
    assert_eq!(sample(&metrics, MASTER_STATUS), Some(0.0));

    crate::common::apply_yaml(&client, &render_operator_rbac(ns, &[lease_role]).await).await;
    // Ready once leading with synced caches.
    operator.wait_for_health("/readyz", 200).await;
    let metrics = operator.metrics().await;
    assert_eq!(sample(&metrics, MASTER_STATUS), Some(1.0));

    // Shutting down: the endpoints go away and the process exits 0.
    let mut operator = operator;
    operator.terminate();
    assert!(
        operator
            .exit_status(Duration::from_secs(30))
            .await
            .success()
    );
    assert_eq!(operator.health("/healthz").await, None);
}

/// A ValidatingAdmissionPolicy (and its binding) refusing every update of
/// Secret `name` in `namespace`, so the operator's apply of it fails.
fn freeze_secret(namespace: &str, name: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: freeze-{namespace}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [secrets]}}
  validations:
  - expression: "object.metadata.name != '{name}'"
    message: "{name} is frozen"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: freeze-{namespace}}}
spec:
  policyName: freeze-{namespace}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"#
    )
}

async fn unfreeze(client: &Client, namespace: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("freeze-{namespace}");
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let _ = bindings.delete(&name, &Default::default()).await;
    let _ = policies.delete(&name, &Default::default()).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn secret_values_never_reach_logs_events_status_metrics_render_or_errors() {
    let (client, namespace) = setup("canary").await;
    let ns = namespace.name.as_str();
    let canary = format!("canary-{}-{}", free_port(), std::process::id());
    let rotated = format!("rotated-{}-{}", free_port(), std::process::id());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    crate::common::create_secret(&client, ns, "canary", "token", &canary).await;
    let mut stack = example("shop");
    stack["spec"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "CANARY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "canary", "key": "token"}}}));

    let operator = Operator::start_with(
        &["--namespace", ns],
        &[("LOG_LEVEL", "trace"), ("LOG_FORMAT", "json")],
    )
    .await;
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    // Another pass over everything: a spec change that rolls the pods.
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;

    // An error whose request carried a secret value: the API server refuses
    // the operator's apply of <stack>-env holding the rotated value.
    crate::common::apply_yaml(&client, &freeze_secret(ns, "shop-env")).await;
    eventually("the policy refuses updates of shop-env", LIMIT, || async {
        let refused = secrets
            .patch(
                "shop-env",
                &PatchParams::default().dry_run(),
                &Patch::Merge(json!({"metadata": {"labels": {"probe": "x"}}})),
            )
            .await
            .is_err();
        refused.then_some(())
    })
    .await;
    secrets
        .patch(
            "canary",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": rotated}})),
        )
        .await
        .unwrap();
    eventually("the refused apply is reported", LIMIT, || async {
        operator
            .lines()
            .iter()
            .any(|line| line.contains("reconcile failed") && line.contains("shop-env is frozen"))
            .then_some(())
    })
    .await;
    unfreeze(&client, ns).await;
    eventually("the rotated value reaches shop-env", LIMIT, || async {
        let env = secrets.get("shop-env").await.ok()?.data?;
        (env["CANARY_TOKEN"].0 == rotated.as_bytes()).then_some(())
    })
    .await;
    let ready = wait_ready(&client, ns, "shop").await;

    let env = secrets.get("shop-env").await.unwrap().data.unwrap();
    let database = secrets.get("shop-db").await.unwrap().data.unwrap();
    let mut forbidden: Vec<Vec<u8>> = vec![
        canary.clone().into_bytes(),
        env["CANARY_TOKEN"].0.clone(),
        env["SECRET_KEY"].0.clone(),
        database["password"].0.clone(),
    ];
    let encoded: Vec<Vec<u8>> = forbidden
        .iter()
        .map(|value| base64(value).into_bytes())
        .collect();
    forbidden.extend(encoded);

    let lines = operator.lines();
    assert!(
        lines.len() > 100,
        "trace logging is on ({} lines)",
        lines.len()
    );
    let mut places = reported(&client, ns, &lines).await;
    places.push(("the status", serde_json::to_string(&ready.status).unwrap()));
    places.push(("the metrics", operator.metrics().await));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    places.push((
        "the backend Deployment",
        serde_json::to_string(&deployments.get("shop-backend").await.unwrap()).unwrap(),
    ));
    let render = crate::common::output_with_stdin(
        {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_appstack"));
            command.args(["render", "-f", "-"]);
            command
        },
        serde_json::to_string(&stack).unwrap().as_bytes(),
    )
    .await;
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    places.push((
        "appstack render",
        String::from_utf8_lossy(&render.stdout).into_owned(),
    ));
    for (place, text) in &places {
        for value in &forbidden {
            let value = String::from_utf8_lossy(value);
            assert!(
                !text.contains(value.as_ref()),
                "{place} contain a secret value"
            );
        }
    }

    // JSON lines with the fields operators filter on.
    let parsed: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(parsed.len(), lines.len(), "every line is JSON");
    for line in &parsed {
        for field in ["timestamp", "level", "target"] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let status_update = parsed
        .iter()
        .find(|line| line["message"] == "status updated")
        .expect("a status update was logged");
    let span = &status_update["span"];
    assert_eq!(span["namespace"], ns);
    assert_eq!(span["stack"], "shop");
    assert!(
        span["reconcile_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test]
#[ignore = "needs the local control plane and PostgreSQL: run scripts/test.sh"]
async fn a_database_password_never_reaches_logs_events_status_or_metrics() {
    let (client, namespace) = setup("db-canary").await;
    let ns = namespace.name.as_str();
    // Characters a URL must percent-encode, so both forms are looked for.
    let canary = format!("Canary/{}:{}@pw", free_port(), std::process::id());
    let wrong = format!("Wrong/{}:{}@pw", free_port(), std::process::id());
    let server = Postgres::start();
    server
        .create_user_and_database("app", &canary, "shop")
        .await;
    let operator = Operator::start_with(
        &["--namespace", ns],
        &[("LOG_LEVEL", "trace"), ("LOG_FORMAT", "json")],
    )
    .await;
    let mut stack = example("shop");
    stack["spec"]["database"] =
        json!({"external": {"urlSecretRef": {"name": "shop-database", "key": "DATABASE_URL"}}});
    apply_stack(&client, ns, &stack).await;

    // Through failures whose driver and server errors are logged and
    // reported, then to Ready.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut statuses = Vec::new();
    for (url, reason) in [
        (
            server.url("app", &wrong, "shop", "sslmode=require"),
            "AuthenticationFailed",
        ),
        (
            server.url("app", &canary, "orders", "sslmode=require"),
            "DatabaseMissing",
        ),
        (
            server.url("app", &canary, "shop", "sslmode=verify-full"),
            "TLSFailed",
        ),
    ] {
        let _ = secrets.delete("shop-database", &Default::default()).await;
        crate::common::create_secret(&client, ns, "shop-database", "DATABASE_URL", &url).await;
        let stack = wait_for(&client, ns, "shop", "DatabaseReady", "False", Some(reason)).await;
        statuses.push(serde_json::to_string(&stack.status).unwrap());
    }
    let _ = secrets.delete("shop-database", &Default::default()).await;
    crate::common::create_secret(
        &client,
        ns,
        "shop-database",
        "DATABASE_URL",
        &server.url("app", &canary, "shop", "sslmode=require"),
    )
    .await;
    let ready = wait_ready(&client, ns, "shop").await;
    statuses.push(serde_json::to_string(&ready.status).unwrap());

    let mut forbidden = Vec::new();
    for password in [&canary, &wrong] {
        let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        forbidden.push(base64(password.as_bytes()));
        forbidden.push(encoded);
        forbidden.push(password.clone());
    }
    let lines = operator.lines();
    assert!(
        lines.len() > 100,
        "trace logging is on ({} lines)",
        lines.len()
    );
    let mut places = reported(&client, ns, &lines).await;
    places.push(("the status", statuses.join("\n")));
    places.push(("the metrics", operator.metrics().await));
    for (place, text) in &places {
        for value in &forbidden {
            assert!(!text.contains(value.as_str()), "{place} contain a password");
        }
    }
    assert!(
        places[0].1.contains("AuthenticationFailed") && places[1].1.contains("DatabaseMissing"),
        "the failures were logged and reported"
    );
}

/// Where the operator reports what it does, each as one text to search:
/// its output (`lines`) and the Events in `namespace`, through both APIs.
async fn reported(
    client: &Client,
    namespace: &str,
    lines: &[String],
) -> Vec<(&'static str, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let core_events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    let all = ListParams::default();
    vec![
        ("the operator's output", lines.join("\n")),
        (
            "the Events",
            serde_json::to_string(&events.list(&all).await.unwrap().items).unwrap(),
        ),
        (
            "the core Events",
            serde_json::to_string(&core_events.list(&all).await.unwrap().items).unwrap(),
        ),
    ]
}

/// Two operators on one Lease: returns (leader, standby) once the first
/// leads and the second runs.
async fn two_candidates(ns: &str, lease_seconds: &str) -> (Operator, Operator) {
    let args = |identity: &'static str| {
        vec![
            "--namespace".to_string(),
            ns.to_string(),
            "--leader-elect".into(),
            "--leader-elect-namespace".into(),
            ns.to_string(),
            "--leader-elect-identity".into(),
            identity.into(),
            "--leader-elect-lease-duration-seconds".into(),
            lease_seconds.into(),
            "--leader-elect-retry-period-seconds".into(),
            "1".into(),
        ]
    };
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client, ns);
    let first_args = args("first");
    let first = Operator::start_with(
        &first_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    eventually("first leads", LIMIT, || async {
        (lease_holder(&leases, "appstack-operator").await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let second_args = args("second");
    let second = Operator::start_with(
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    // The second stands by, ready.
    second.wait_for_health("/readyz", 200).await;
    assert_eq!(
        lease_holder(&leases, "appstack-operator").await.as_deref(),
        Some("first")
    );
    (first, second)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_standby_takes_over_when_the_leader_is_killed() {
    let (client, namespace) = setup("failover").await;
    let ns = namespace.name.as_str();
    let lease_duration = 6;
    let retry_period = 1;
    let (leader, standby) = two_candidates(ns, &lease_duration.to_string()).await;
    apply_stack(&client, ns, &example("shop")).await;
    wait_ready(&client, ns, "shop").await;
    let standby_metrics = standby.metrics().await;
    assert_eq!(
        sample(
            &standby_metrics,
            r#"controller_runtime_reconcile_total{controller="appstack",result="success"}"#
        ),
        Some(0.0),
        "only the leader reconciles"
    );

    let killed = Instant::now();
    leader.stop().await;
    let mut stack = example("shop");
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;
    let elapsed = killed.elapsed();
    println!(
        "standby reconciled {elapsed:.1?} after SIGKILL of the leader (lease {lease_duration} s, retry {retry_period} s)"
    );
    assert!(standby.logged("became the leader"));
    // The bound: the lease expires, the next retry takes it; the reconcile
    // itself gets the retry period's worth of slack again.
    assert!(
        elapsed <= Duration::from_secs(lease_duration + 2 * retry_period + 2),
        "took over after {elapsed:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_leader_stopping_gracefully_hands_over_at_once() {
    let (client, namespace) = setup("handover").await;
    let ns = namespace.name.as_str();
    let (mut leader, standby) = two_candidates(ns, "15").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    let terminated = Instant::now();
    leader.terminate();
    eventually("the standby holds the lease", LIMIT, || async {
        (lease_holder(&leases, "appstack-operator").await.as_deref() == Some("second"))
            .then_some(())
    })
    .await;
    let elapsed = terminated.elapsed();
    println!("lease handed over {elapsed:.2?} after SIGTERM (lease duration 15 s)");
    assert!(
        elapsed <= Duration::from_secs(2),
        "handover took {elapsed:?}"
    );
    assert!(
        leader.exit_status(Duration::from_secs(30)).await.success(),
        "the leader exits 0"
    );
    assert!(leader.logged("released the leader lease"));

    apply_stack(&client, ns, &example("shop")).await;
    wait_ready(&client, ns, "shop").await;
    let metrics = standby.metrics().await;
    assert_eq!(sample(&metrics, MASTER_STATUS), Some(1.0));
    let _ = http_get(standby.health_port, "/healthz")
        .await
        .expect("still serving");
}
